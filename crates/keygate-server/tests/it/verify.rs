//! Verdicts: valid tokens, each kind of refusal, the ways of passing a token, key sets.

use keygate_test_support::TokenBuilder;
use serde_json::json;

use crate::harness::{
    AUD, Expected, ISS, NOW, Spec, Via, check, claims, es256_key, keygate, rsa_key, temp_file,
    token,
};

#[test]
fn valid_token_prints_its_claims_and_exits_0() {
    let (token, claims) = token();
    for via in [Via::File, Via::Stdin, Via::Inline] {
        check(
            &Spec::new(token.clone()).via(via),
            &Expected::Valid(claims.clone()),
        );
    }
}

#[test]
fn rsa_token_verifies_under_an_explicit_alg_list() {
    let claims = claims();
    let token = TokenBuilder::new(rsa_key()).claims(claims.clone()).sign();
    let spec = Spec::new(token).arg("--alg", "ES256").arg("--alg", "RS256");
    check(&spec, &Expected::Valid(claims));
}

#[test]
fn refusals_exit_1_with_the_reason_code() {
    let (token, _) = token();
    let other_key_sig = TokenBuilder::new(es256_key())
        .claims(claims())
        .claim("sub", json!("someone else"))
        .sign();
    let (_, foreign_sig) = other_key_sig.rsplit_once('.').unwrap();
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let bad_signature = format!("{signing_input}.{foreign_sig}");
    let not_yet = TokenBuilder::new(es256_key())
        .claims(claims())
        .claim("nbf", json!(NOW + 600))
        .sign();
    let unknown_kid = TokenBuilder::new(es256_key())
        .claims(claims())
        .header("kid", json!("nobody"))
        .sign();
    let alg_none = TokenBuilder::new(es256_key())
        .claims(claims())
        .header_alg_str("none")
        .sign();

    let table: Vec<(&str, Spec, &str)> = vec![
        (
            "expired",
            Spec::new(token.clone()).now(NOW + 3601),
            "expired",
        ),
        ("not yet valid", Spec::new(not_yet), "not_yet_valid"),
        (
            "bad audience",
            Spec::new(token.clone()).aud("another-api"),
            "bad_audience",
        ),
        (
            "bad issuer",
            Spec::new(token.clone()).iss("https://other.test"),
            "bad_issuer",
        ),
        (
            "alg not allowed",
            Spec::new(token.clone()).arg("--alg", "RS256"),
            "alg_not_allowed",
        ),
        ("alg none", Spec::new(alg_none), "alg_none"),
        ("unknown kid", Spec::new(unknown_kid), "unknown_kid"),
        (
            "bad signature",
            Spec::new(bad_signature.clone()),
            "bad_signature",
        ),
        (
            "bad signature inline",
            Spec::new(bad_signature).via(Via::Inline),
            "bad_signature",
        ),
        (
            "malformed",
            Spec::new("definitely not a token"),
            "malformed",
        ),
        (
            "malformed inline",
            Spec::new("a.b").via(Via::Inline),
            "malformed",
        ),
        (
            "trailing newline",
            Spec::new(format!("{token}\n")),
            "malformed",
        ),
        (
            "trailing newline stdin",
            Spec::new(format!("{token}\n")).via(Via::Stdin),
            "malformed",
        ),
        ("leading space", Spec::new(format!(" {token}")), "malformed"),
        (
            "not utf-8",
            Spec::new(b"\xff\xfe.\xff.\xff".to_vec()),
            "malformed",
        ),
        ("empty stdin", Spec::new("").via(Via::Stdin), "malformed"),
        (
            "too large",
            Spec::new("a".repeat(64 * 1024)),
            "token_too_large",
        ),
    ];
    for (name, spec, class) in table {
        eprintln!("case: {name}");
        check(&spec, &Expected::Invalid(class));
    }
}

#[test]
fn leeway_is_zero_unless_given() {
    let (token, claims) = token();
    let one_second_late = NOW + 3600;
    check(
        &Spec::new(token.clone()).now(one_second_late),
        &Expected::Invalid("expired"),
    );
    check(
        &Spec::new(token).now(one_second_late).arg("--leeway", 5),
        &Expected::Valid(claims),
    );
}

#[test]
fn broken_key_sets_are_malformed_jwks() {
    let (token, _) = token();
    let cases = [
        ("not json", "this is not json"),
        ("not a set", r#"{"kids":[]}"#),
        ("keys not an array", r#"{"keys":{}}"#),
        ("empty set", r#"{"keys":[]}"#),
        // HMAC secrets are never verification keys (RFC 8725 section 2.1).
        (
            "only unusable keys",
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
        ),
    ];
    for (name, document) in cases {
        eprintln!("case: {name}");
        let jwks = temp_file("jwks.json", document);
        let spec = Spec::new(token.clone()).jwks(jwks.to_str().unwrap());
        let out = check(&spec, &Expected::Invalid("malformed_jwks"));
        assert!(
            out.verdict()["detail"]
                .as_str()
                .unwrap()
                .contains("key set")
        );
    }
}

#[test]
fn bundled_example_verifies() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let token = std::fs::read(format!("{root}/token.jwt")).unwrap();
    assert!(
        !token.ends_with(b"\n"),
        "examples/token.jwt must not end in a newline"
    );
    let out = keygate(
        &[
            "verify",
            "--jwks",
            &format!("{root}/jwks.json"),
            "--token-file",
            &format!("{root}/token.jwt"),
            "--iss",
            "https://issuer.example",
            "--aud",
            "keygate-example",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let verdict = out.verdict();
    assert_eq!(verdict["claims"]["iss"], "https://issuer.example");
    assert_eq!(verdict["claims"]["exp"], 4_102_444_800_i64);
}

#[test]
fn pretty_printed_claims_come_out_on_one_line_in_token_order() {
    let raw = format!(
        "{{\n  \"sub\": \"z\",\n  \"iss\": \"{}\",\n  \"aud\": \"{}\",\n  \"exp\": {},\n  \"n\": 12345678901234567890123\n}}",
        ISS,
        AUD,
        NOW + 60
    );
    let token = TokenBuilder::new(es256_key()).raw_claims(&raw).sign();
    let out = Spec::new(token).run();
    assert_eq!(out.code, 0, "{out:?}");
    let want = format!(
        r#"{{"valid":true,"error_class":null,"claims":{{"sub":"z","iss":"{}","aud":"{}","exp":{},"n":12345678901234567890123}}}}"#,
        ISS,
        AUD,
        NOW + 60
    );
    assert_eq!(out.line(), want);
}
