//! keygate-server's integration tests: the real `keygate` binary, one module per area.

mod apikey_cli;
mod attacks;
mod caddy;
mod cluster;
mod dev_issuer;
mod events;
mod faults;
mod ha;
mod harness;
mod in_process;
mod jwks_url;
mod nginx;
mod nginx_policy;
mod oidc;
mod operator;
mod ops_cli;
mod policy;
mod reload;
mod serve_cli;
mod server;
mod support;
mod token_revocation;
mod trust;
mod uris;
mod usage;
mod verify;
