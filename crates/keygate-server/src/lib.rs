//! The server half of keygate: the sidecar (`keygate serve`) and the operator CLI.
//!
//! The library crate `keygate` knows nothing about command lines, config files, HTTP serving,
//! metrics or exit codes; this crate turns its typed results into those. The binary
//! (`src/main.rs`) only parses arguments, calls [`cli::run`] and exits with the code it
//! returns.
//!
//! - [`config`]: the TOML file, validated into a [`config::Config`] (loading never binds).
//! - [`serve`]: builds the node and the listeners from a `Config`, runs until shutdown.
//! - [`forward`]: the forward-auth endpoint `/verify` (nginx, Traefik, Envoy).
//! - [`policy`]: which requests `/verify` lets through: routes, path normalization, the
//!   dry run.
//! - [`node`]: one replica's state (verifier, revocations, bus handle, counters) and the one
//!   way to change it, `Node::invalidate`: apply here, publish to the others.
//! - [`admin`]: the admin API, `/metrics`, `/healthz`, `/readyz` on the admin listener;
//!   [`admin::events`]: application events, published and followed as server-sent events.
//! - [`reload`]: reloading the config file without a restart (SIGHUP, the admin API).
//! - [`apikey`]: hashed, scoped admin API keys.
//! - [`metrics`]: Prometheus counters and their text rendering.
//! - [`dev_issuer`]: the embedded development issuer of `keygate serve` with no config.

#![warn(missing_docs)]

pub mod admin;
pub mod apikey;
pub mod cli;
pub mod config;
pub mod dev_issuer;
pub mod forward;
mod json;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod reload;
pub mod serve;
