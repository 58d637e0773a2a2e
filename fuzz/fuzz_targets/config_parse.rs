//! The sidecar's TOML configuration: `keygate_server::config::Config::parse`, with no
//! environment and with one that answers every lookup (admin key hashes, cluster secrets).
//!
//! Checks besides "no panic": a refused file gets a message the CLI can print before it exits
//! 64.

#![no_main]

use keygate_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for env in [&|_: &str| None as Option<String>, &|_: &str| {
        Some("fuzz-0123456789abcdef0123456789abcdef".to_owned())
    }] as [&dyn Fn(&str) -> Option<String>; 2]
    {
        match Config::parse(text, env) {
            Ok(config) => {
                let _ = format!("{config:?}");
            }
            Err(e) => assert!(!e.problem.is_empty(), "a config error that says nothing"),
        }
    }
});
