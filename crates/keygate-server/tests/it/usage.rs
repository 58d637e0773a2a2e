//! Usage and configuration errors: exit 2, a message on stderr, nothing on stdout.

use crate::harness::{AUD, ISS, Output, jwks_file, keygate, temp_file, token, verify};

fn assert_usage_error(out: &Output, stderr_mentions: &str) {
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains(stderr_mentions), "{out:?}");
}

fn run(args: &[&str]) -> Output {
    keygate(args, None)
}

#[test]
fn argument_errors_exit_2() {
    let jwks = jwks_file();
    let jwks = jwks.to_str().unwrap();
    let (token, _) = token();
    let file = temp_file("token.jwt", &token);
    let file = file.to_str().unwrap();
    let base = ["verify", "--jwks", jwks];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    // The complete command line, then `extra`.
    let full = |extra: &[&str]| {
        with(&[&["--token-file", file, "--iss", ISS, "--aud", AUD], extra].concat())
    };

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "missing --iss",
            with(&["--token-file", file, "--aud", AUD]),
            "--iss",
        ),
        (
            "missing --aud",
            with(&["--token-file", file, "--iss", ISS]),
            "--aud",
        ),
        ("no token", with(&["--iss", ISS, "--aud", AUD]), "--token"),
        (
            "both token sources",
            with(&[
                "--token-file",
                file,
                "--token",
                &token,
                "--iss",
                ISS,
                "--aud",
                AUD,
            ]),
            "cannot be used with",
        ),
        ("unknown --alg", full(&["--alg", "HS256"]), "HS256"),
        (
            "--alg is case-sensitive",
            full(&["--alg", "rs256"]),
            "rs256",
        ),
        ("--now not a number", full(&["--now", "soon"]), "--now"),
        (
            "unreadable token file",
            with(&[
                "--token-file",
                "/nonexistent/token.jwt",
                "--iss",
                ISS,
                "--aud",
                AUD,
            ]),
            "/nonexistent/token.jwt",
        ),
        (
            "empty --iss",
            with(&["--token-file", file, "--iss", "", "--aud", AUD]),
            "issuer",
        ),
    ];
    for (name, args, mentions) in cases {
        eprintln!("case: {name}");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_usage_error(&out, mentions);
        assert!(
            !out.stderr.contains(&token) || name == "both token sources",
            "{out:?}"
        );
    }
}

#[test]
fn unreadable_jwks_file_exits_2() {
    let (token, _) = token();
    let out = verify("/nonexistent/jwks.json", &token, &[]);
    assert_usage_error(&out, "/nonexistent/jwks.json");
}

#[test]
fn unknown_subcommand_exits_2() {
    let out = run(&["frobnicate"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn an_hmac_alg_is_a_usage_error_that_says_why() {
    let jwks = jwks_file();
    let (token, _) = token();
    for alg in ["HS256", "HS384", "HS512"] {
        let out = verify(
            jwks.to_str().unwrap(),
            &token,
            &["--alg", "ES256", "--alg", alg],
        );
        assert_usage_error(&out, alg);
        for why in ["HMAC", "public-key signatures only", "key-confusion"] {
            assert!(out.stderr.contains(why), "{alg}: no {why:?} in {out:?}");
        }
        assert!(!out.stderr.contains(&token), "{out:?}");
    }
    // Other refused names still list what is accepted, the new ones included.
    let out = verify(jwks.to_str().unwrap(), &token, &["--alg", "Ed448"]);
    assert_usage_error(&out, "Ed25519 only");
    assert!(out.stderr.contains("ES512"), "{out:?}");
}

#[test]
fn es512_and_ed25519_are_accepted_alg_names() {
    let jwks = jwks_file();
    let (token, _) = token();
    for alg in ["ES512", "Ed25519", "EdDSA"] {
        let out = verify(jwks.to_str().unwrap(), &token, &["--alg", alg]);
        // The harness token is not signed with these, so it is refused, but as a verdict
        // (exit 1, a JSON line), not as a usage error.
        assert_eq!(out.code, 1, "{alg}: {out:?}");
        assert!(out.stdout.contains("\"valid\":false"), "{alg}: {out:?}");
    }
}
