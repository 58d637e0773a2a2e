//! keygate's integration tests: one test binary, one module per area.

mod alloc;
mod attacks;
mod budget;
mod cache;
mod dpop;
mod exchange;
mod faults;
mod fetch;
mod flush;
mod interop;
mod introspection;
mod issuers;
mod memidp;
mod oidc_introspection;
mod reconfigure;
mod support;
mod uris;
mod verify;
