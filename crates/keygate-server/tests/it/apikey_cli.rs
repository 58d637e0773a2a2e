//! `keygate admin hash-key` and `keygate admin new-key`: what they print must be a hash
//! that verifies the secret, and usage errors exit 2.

use keygate_server::apikey::{KeyHash, Scope};
use serde_json::Value;

use crate::harness::{Output, keygate};

fn hash_key(args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["admin", "hash-key"];
    all.extend_from_slice(args);
    keygate(&all, Some(stdin))
}

fn new_key(args: &[&str]) -> Output {
    let mut all = vec!["admin", "new-key"];
    all.extend_from_slice(args);
    keygate(&all, None)
}

fn parse_hash(text: &str) -> KeyHash {
    text.parse()
        .unwrap_or_else(|e| panic!("not a key hash ({e}): {text:?}"))
}

#[test]
fn hash_key_prints_one_hash_that_verifies_the_secret() {
    let secret = "kg_0123456789abcdefghijklmnopqrstuv";
    let out = hash_key(&[], secret.as_bytes());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let hash = parse_hash(out.line());
    assert_eq!(hash.iterations(), 100_000);
    assert!(hash.verify(secret.as_bytes()));
    assert!(!hash.verify(b"kg_0123456789abcdefghijklmnopqrstuw"));
}

#[test]
fn hash_key_strips_one_trailing_line_ending_only() {
    let secret = "kg_a-secret-of-enough-length";
    for (input, hashed) in [
        (format!("{secret}\n"), secret.to_owned()),
        (format!("{secret}\r\n"), secret.to_owned()),
        (format!("{secret}\n\n"), format!("{secret}\n")),
        (format!(" {secret}"), format!(" {secret}")),
    ] {
        let out = hash_key(&["--iterations", "10000"], input.as_bytes());
        assert_eq!(out.code, 0, "{out:?}");
        let hash = parse_hash(out.line());
        assert_eq!(hash.iterations(), 10_000);
        assert!(hash.verify(hashed.as_bytes()), "{input:?}");
        if hashed != input {
            assert!(!hash.verify(input.as_bytes()), "{input:?}");
        }
    }
}

#[test]
fn hash_key_refuses_an_empty_secret() {
    for input in ["", "\n", "\r\n"] {
        let out = hash_key(&[], input.as_bytes());
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(out.stderr.contains("no secret"), "{out:?}");
    }
}

#[test]
fn hash_key_refuses_an_oversized_secret() {
    let out = hash_key(&[], "k".repeat(513).as_bytes());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("512 bytes"), "{out:?}");
}

#[test]
fn hash_key_warns_about_a_short_secret_but_hashes_it() {
    let out = hash_key(&["--iterations", "10000"], b"hunter2\n");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("warning"), "{out:?}");
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
    assert!(parse_hash(out.line()).verify(b"hunter2"));
}

#[test]
fn hash_key_refuses_iterations_out_of_range() {
    for n in ["9999", "10000001", "many"] {
        // No stdin: clap exits before reading it, and writing to it could race that exit.
        let out = keygate(&["admin", "hash-key", "--iterations", n], None);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(out.stderr.contains("--iterations"), "{out:?}");
    }
}

#[test]
fn new_key_prints_a_secret_its_hash_and_a_config_snippet() {
    let out = new_key(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let secret = lines[0].strip_prefix("secret: ").expect("secret line");
    let hash_text = lines[1].strip_prefix("hash: ").expect("hash line");
    assert!(secret.starts_with("kg_") && secret.len() == 46, "{secret}");
    let hash = parse_hash(hash_text);
    assert!(hash.verify(secret.as_bytes()));
    assert_eq!(
        lines[2..],
        [
            "",
            "# paste into keygate.toml; give the secret to the operator as KEYGATE_ADMIN_KEY",
            "[[admin.keys]]",
            r#"id = "admin""#,
            &format!(r#"hash = "{hash_text}""#),
            r#"scopes = ["jwks:flush", "jwks:refresh", "tokens:revoke", "status:read", "events:publish", "events:read"]"#,
        ]
    );
    // A second key is a different secret.
    let other = new_key(&[]);
    assert!(!other.stdout.contains(secret));
}

#[test]
fn new_key_json_has_the_four_members_in_order() {
    let out = new_key(&[
        "--json",
        "--id",
        "ci",
        "--scopes",
        "status:read,jwks:flush,status:read",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let line = out.line();
    let key: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
    let members: Vec<&str> = key.keys().map(String::as_str).collect();
    let mut sorted = members.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["hash", "id", "scopes", "secret"]);
    assert!(line.starts_with(r#"{"id":"ci","secret":"kg_"#), "{line}");
    assert_eq!(
        key["scopes"],
        serde_json::json!(["status:read", "jwks:flush"])
    );
    let secret = key["secret"].as_str().unwrap();
    let hash = parse_hash(key["hash"].as_str().unwrap());
    assert!(hash.verify(secret.as_bytes()));
    assert_eq!(
        key["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().parse::<Scope>().unwrap())
            .collect::<Vec<_>>(),
        [Scope::StatusRead, Scope::JwksFlush]
    );
}

#[test]
fn new_key_refuses_an_unknown_scope_and_lists_the_valid_ones() {
    for scopes in ["jwks:flush,admin", "", "JWKS:FLUSH"] {
        let out = new_key(&["--scopes", scopes]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(
            out.stderr
                .contains("jwks:flush, jwks:refresh, tokens:revoke, status:read"),
            "{out:?}"
        );
    }
}

#[test]
fn new_key_refuses_an_empty_id() {
    let out = new_key(&["--id", ""]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("--id"), "{out:?}");
}
