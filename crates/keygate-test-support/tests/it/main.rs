//! Integration tests for the test-support crate: the stub IdP over real sockets.

mod stub;
