//! The server half of keygate: for now the operator CLI, `keygate verify`.
//!
//! The library crate `keygate` knows nothing about command lines, exit codes or JSON
//! reports; this crate turns its typed results into those. The binary (`src/main.rs`) only
//! parses arguments, calls [`cli::run`] and exits with the code it returns. The sidecar
//! (`serve`) and its admin commands are future work and will live here too.

#![warn(missing_docs)]

pub mod cli;
