//! keygate's integration tests: one test binary, one module per area.

mod cache;
mod fetch;
mod verify;
