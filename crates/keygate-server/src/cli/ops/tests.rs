//! Unit tests of the operator's client: argument shapes, URLs, output formats.

use clap::Parser as _;

use serde_json::json;

use super::client::{
    ApiError, Reply, clean, compact_json, endpoint, parse_base_url, strip_one_newline,
};
use super::format::{StatusReply, Unix, relative, revocation_table, status_text, table};
use super::*;
use crate::admin::RevocationView as Revocation;
use crate::cli::{Cli, Command};
use reqwest::StatusCode;

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("keygate").chain(args.iter().copied()))
        .map(|cli| cli.command)
}

fn revoke_args(args: &[&str]) -> Result<RevokeArgs, clap::Error> {
    let mut full = vec!["revoke"];
    full.extend(args);
    match parse(&full)? {
        Command::Revoke(args) => Ok(args),
        other => panic!("{other:?}"),
    }
}

#[test]
fn provider_is_positional_or_flags_but_not_both() {
    for ok in [
        &["flush", "acme", "idp"][..],
        &["refresh", "--tenant", "acme", "--provider", "idp"],
    ] {
        match parse(ok).unwrap() {
            Command::Flush(a) | Command::Refresh(a) => {
                assert_eq!(a.provider_id().unwrap(), ("acme", "idp"));
            }
            other => panic!("{other:?}"),
        }
    }
    for bad in [
        &["flush"][..],
        &["flush", "acme"],
        &["flush", "--tenant", "acme"],
        &["flush", "--provider", "idp"],
        &["flush", "acme", "idp", "--tenant", "acme"],
        &["flush", "--tenant", "acme", "--provider", "idp", "extra"],
        &["flush", "acme", "idp", "--timeout", "0"],
    ] {
        let err = parse(bad).expect_err(&format!("{bad:?} parsed"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn revoke_accepts_exactly_one_shape() {
    let jti = revoke_args(&["--jti", "j1", "--exp", "1700000000"]).unwrap();
    assert_eq!(
        jti.request().unwrap(),
        Some(json!({"jti": "j1", "exp": 1_700_000_000}))
    );
    let sub = revoke_args(&["--tenant", "t", "--sub", "s", "--before", "5"]).unwrap();
    assert_eq!(
        sub.request().unwrap(),
        Some(json!({"tenant": "t", "sub": "s", "before": 5}))
    );
    let before = unix_now().unwrap();
    let sub_now = revoke_args(&["--tenant", "t", "--sub", "s"]).unwrap();
    let sent = sub_now.request().unwrap().unwrap()["before"]
        .as_u64()
        .unwrap();
    assert!(sent >= before && sent <= unix_now().unwrap(), "{sent}");
    let kid = revoke_args(&["--tenant", "t", "--provider", "p", "--kid", "k"]).unwrap();
    assert_eq!(
        kid.request().unwrap(),
        Some(json!({"tenant": "t", "provider": "p", "kid": "k"}))
    );
    assert_eq!(revoke_args(&["--list"]).unwrap().request().unwrap(), None);
    let kid_until: Vec<&str> = "--tenant t --provider p --kid k --until 9"
        .split(' ')
        .collect();
    assert_eq!(
        revoke_args(&kid_until).unwrap().request().unwrap(),
        Some(json!({"tenant": "t", "provider": "p", "kid": "k", "until": 9}))
    );

    for bad in [
        "",
        "--jti j",
        "--exp 1",
        "--tenant t",
        "--sub s",
        "--tenant t --provider p",
        "--jti j --exp 1 --tenant t --sub s",
        "--jti j --exp 1 --tenant t",
        "--tenant t --sub s --kid k",
        "--tenant t --sub s --provider p --kid k",
        "--tenant t --provider p --kid k --before 1",
        "--list --jti j --exp 1",
        "--list --tenant t",
        "--list --exp 1",
        "--exp 1 --tenant t --sub s",
        "--exp 1 --tenant t --provider p --kid k",
        "--before 1 --jti j --exp 2",
        "--before 1 --tenant t",
        "--provider p --tenant t --sub s",
        "--tenant t --kid k",
        "--jti j --exp 1 --until 2",
        "--until 2",
        "--list --until 2",
    ] {
        let bad: Vec<&str> = bad.split_whitespace().collect();
        let err = revoke_args(&bad).expect_err(&format!("{bad:?} parsed"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn revoke_by_token_hash_sends_only_the_digest() {
    let digest = keygate::token_sha256("opaque-token-1");
    let by_hex = revoke_args(&["--token-sha256", &digest, "--exp", "1700000000"]).unwrap();
    assert_eq!(
        by_hex.request().unwrap(),
        Some(json!({"token_sha256": digest, "exp": 1_700_000_000}))
    );
    // Uppercase or short digests are refused before anything is sent.
    for bad in [digest.to_uppercase(), digest[..10].to_owned()] {
        let args = revoke_args(&["--token-sha256", &bad, "--exp", "1"]).unwrap();
        let e = args.request().unwrap_err().to_string();
        assert!(e.contains("--token-sha256"), "{e}");
    }

    // `--token -` hashes what stdin holds, without its newline.
    let from_stdin = revoke_args(&["--token", "-", "--exp", "1700000000"]).unwrap();
    let body = from_stdin
        .request_reading(&mut &b"opaque-token-1\n"[..])
        .unwrap()
        .unwrap();
    assert_eq!(body, json!({"token_sha256": digest, "exp": 1_700_000_000}));
    assert!(!body.to_string().contains("opaque-token-1"));
    let e = from_stdin
        .request_reading(&mut &b"  \n"[..])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no token on stdin"), "{e}");
    let huge = vec![b'a'; 2 * 1024 * 1024];
    assert!(from_stdin.request_reading(&mut &huge[..]).is_err());
    // The token itself is never taken on the command line, and never echoed back.
    let inline = revoke_args(&["--token", "opaque-token-1", "--exp", "1"]).unwrap();
    let e = inline
        .request_reading(&mut &b""[..])
        .unwrap_err()
        .to_string();
    assert!(!e.contains("opaque-token-1"), "{e}");
    assert!(e.contains("standard input"), "{e}");

    for bad in [
        "--token-sha256 x",
        "--token -",
        "--token - --token-sha256 x --exp 1",
        "--token-sha256 x --jti j --exp 1",
        "--token - --exp 1 --tenant t",
        "--token - --exp 1 --list",
        "--token-sha256 x --exp 1 --until 2",
    ] {
        let bad: Vec<&str> = bad.split_whitespace().collect();
        let err = revoke_args(&bad).expect_err(&format!("{bad:?} parsed"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn endpoints_encode_each_segment_and_keep_a_base_path() {
    let base = parse_base_url("http://127.0.0.1:8081").unwrap();
    assert_eq!(
        endpoint(&base, &provider_path("a b", "x/y", "flush")).as_str(),
        "http://127.0.0.1:8081/admin/v1/providers/a%20b/x%2Fy/flush"
    );
    let prefixed = parse_base_url("https://ops.example/keygate/").unwrap();
    assert_eq!(
        endpoint(&prefixed, REVOCATIONS).as_str(),
        "https://ops.example/keygate/admin/v1/revocations"
    );
    for bad in [
        "ftp://host",
        "not a url",
        "http://h/?q=1",
        "http://user:pw@h/",
    ] {
        let err = parse_base_url(bad).unwrap_err();
        assert!(!format!("{err:#}").contains("pw"), "{err:#}");
    }
}

#[test]
fn times_are_shown_relative_and_in_rfc3339() {
    assert_eq!(relative(88, 100), "12s ago");
    assert_eq!(relative(100, 100), "0s ago");
    assert_eq!(relative(100 + 4 * 60 + 58, 100), "in 4m58s");
    assert_eq!(relative(100 + 2 * 3_600 + 5 * 60, 100), "in 2h05m");
    assert_eq!(relative(0, 3 * 86_400 + 4 * 3_600), "3d04h ago");
    assert_eq!(Unix(0).to_string(), "1970-01-01T00:00:00Z");
    assert_eq!(Unix(1_700_000_000).to_string(), "2023-11-14T22:13:20Z");
    assert_eq!(Unix(951_782_400).to_string(), "2000-02-29T00:00:00Z");
    assert_eq!(Unix(-1).to_string(), "1969-12-31T23:59:59Z");
}

#[test]
fn rfc3339_covers_every_year_humantime_writes_and_falls_back_beyond() {
    assert_eq!(Unix(253_402_300_799).to_string(), "9999-12-31T23:59:59Z");
    assert_eq!(Unix(253_402_300_800).to_string(), "253402300800");
    assert_eq!(Unix(-86_400 * 365).to_string(), "1969-01-01T00:00:00Z");
    assert_eq!(Unix(i64::MAX).to_string(), i64::MAX.to_string());
}

#[test]
fn tables_align_columns_without_trailing_spaces() {
    let rows = vec![
        vec!["A".to_owned(), "LONG HEADER".to_owned(), "Z".to_owned()],
        vec!["wide cell".to_owned(), "x".to_owned(), "-".to_owned()],
    ];
    assert_eq!(
        table(&rows),
        "A          LONG HEADER  Z\nwide cell  x            -\n"
    );
}

#[test]
fn json_is_compacted_but_otherwise_kept() {
    assert_eq!(
        compact_json("{\n  \"b\": \"x y\",\n  \"a\": [1, 2.50]\n}\n").as_deref(),
        Some(r#"{"b":"x y","a":[1,2.50]}"#)
    );
    assert_eq!(compact_json("<html>"), None);
}

#[test]
fn one_trailing_newline_is_stripped_from_the_admin_key_like_hash_key_does() {
    for (key, stripped) in [
        ("kg_x\n", "kg_x"),
        ("kg_x\r\n", "kg_x"),
        ("kg_x\n\n", "kg_x\n"),
        ("kg_x", "kg_x"),
    ] {
        assert_eq!(strip_one_newline(key), stripped);
    }
}

#[test]
fn a_jti_with_a_newline_or_bidi_override_cannot_add_or_reorder_rows() {
    let text = revocation_table(&[
        Revocation::Jti {
            jti: "real\njti  jti=forged".to_owned(),
            exp: 0,
        },
        Revocation::Jti {
            jti: "\u{202E}evil".to_owned(),
            exp: 0,
        },
    ]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("jti=real\\njti"), "{text}");
    assert!(
        text.contains("\\u{202e}evil") && !text.contains('\u{202E}'),
        "{text}"
    );
}

#[test]
fn token_revocations_are_shown_by_digest() {
    let digest = keygate::token_sha256("t");
    let view = Revocation::Token {
        token_sha256: digest.clone(),
        exp: 1_700_000_000,
    };
    let text = revocation_table(std::slice::from_ref(&view));
    let row = text.lines().nth(1).unwrap();
    assert!(row.starts_with("token"), "{text}");
    assert!(row.contains(&format!("token_sha256={digest}")), "{text}");
    assert!(row.contains("2023-11-14T22:13:20Z"), "{text}");
    let said = super::format::revoked_text(&crate::admin::RevokedBody {
        revoked: view,
        seq: 4,
    });
    assert_eq!(
        said,
        format!("revoked token sha256 {digest} until 2023-11-14T22:13:20Z (seq 4)")
    );
}

#[test]
fn control_characters_are_replaced() {
    assert_eq!(clean("ok"), "ok");
    assert_eq!(clean("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
}

#[test]
fn error_bodies_that_are_not_json_still_make_a_message() {
    let reply = Reply {
        status: StatusCode::BAD_GATEWAY,
        body: "<html>upstream down</html>".into(),
    };
    let error = ApiError::from_reply(&reply);
    assert_eq!(
        error.to_string(),
        "502 bad_gateway: <html>upstream down</html>"
    );
    let reply = Reply {
        status: StatusCode::BAD_REQUEST,
        body: r#"{"error":"bad_request","message":"exp is in the past","field":"exp"}"#.into(),
    };
    assert_eq!(
        ApiError::from_reply(&reply).to_string(),
        "400 bad_request: exp is in the past (field exp)"
    );
}

#[test]
fn status_shows_the_primary_and_the_last_resync_when_the_server_sends_them() {
    let reply: StatusReply = serde_json::from_value(serde_json::json!({
        "now": 1_000,
        "providers": [],
        "bus": {
            "backend": "redis", "state": "ok", "last_seq": 9, "lag_seconds": 0.0,
            "primary": "10.0.0.5:6380",
            "last_resync": {"at": 880, "reason": "epoch"}
        },
        "revocations": 1,
        "cached_tokens": 0
    }))
    .unwrap();
    let text = status_text(&reply);
    assert!(
        text.contains(
            "bus: redis ok (seq 9, lag 0.0s, primary 10.0.0.5:6380, last resync 2m00s ago (epoch))"
        ),
        "{text}"
    );
}
