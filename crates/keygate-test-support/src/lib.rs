//! Test fixtures shared by every keygate crate's tests and benchmarks.
//!
//! - [`ManualClock`]: a clock that only moves when a test moves it.
//! - [`TestKey`]: freshly generated (or cached, shared) RSA, P-256, P-384 and Ed25519 keys
//!   that render their public JWK and sign JWS signing inputs.
//! - [`TokenBuilder`]: mints compact JWS tokens, including deliberately broken ones.
//! - [`StubIdp`]: a scriptable loopback HTTP(S) identity provider on port 0 that counts
//!   requests.
//! - [`loopback_fetcher`] and [`test_retry`]: fetch and retry settings fit for a stub IdP.
//! - [`RedisServer`]: a private `redis-server` on a free port that a test can stop, wipe and
//!   restart; [`TcpProxy`]: a loopback proxy a test can cut, to partition one client.
//! - [`RedisNode`] and [`Sentinel`]: highly available Redis (TLS, replicas, Sentinel) whose
//!   processes a test can kill and start again.
//! - [`OidcProvider`]: a real OpenID provider (`oidc-provider` on Node.js) on loopback, for
//!   introspection and DPoP tests, with a helper that obtains tokens and makes DPoP proofs.
//!
//! Everything here panics on failure: it is test code, and a panic with a clear message is
//! the most useful failure a test can report.

#![warn(missing_docs)]

pub mod bench;
pub mod clock;
pub mod fetch;
pub mod keys;
pub mod oidc;
pub mod proxy;
pub mod redis;
pub mod redis_ha;
pub mod stub;
pub mod token;

pub use clock::ManualClock;
pub use fetch::{loopback_fetcher, test_retry};
pub use keys::{TestKey, WEAK_RSA_1024_JWK, jwks, one_key_per_alg};
pub use oidc::OidcProvider;
pub use proxy::TcpProxy;
pub use redis::RedisServer;
pub use redis_ha::{RedisNode, Sentinel};
pub use stub::{StubBody, StubIdp, StubResponse};
pub use token::{TokenBuilder, b64url, hs256_token, typical_claims};
