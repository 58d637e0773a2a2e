//! keygate-server's integration tests: the real `keygate` binary, one module per area.

mod harness;
mod jwks_url;
mod usage;
mod verify;
