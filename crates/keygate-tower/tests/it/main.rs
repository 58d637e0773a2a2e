//! keygate-tower's integration tests: one test binary, one module per area.

mod extract;
mod layer;
mod rotation;
mod scopes;
mod send;
mod server;
mod support;
