use super::*;

fn header(json: &str) -> Result<Header<'_>, VerifyError> {
    Header::parse(json)
}

#[test]
fn header_checks_pick_the_right_reason() {
    let cases = [
        (r#"{"alg":"none"}"#, "alg_none"),
        (r#"{"alg":"nOnE"}"#, "alg_none"),
        (r#"{"alg":"HS256"}"#, "alg_not_allowed"),
        (r#"{"alg":"RS256","enc":"A128GCM"}"#, "unsupported_token"),
        (r#"{"alg":"RS256","cty":"JWT"}"#, "unsupported_token"),
        (r#"{"alg":"RS256","b64":false}"#, "unsupported_token"),
        (r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, "crit_header"),
        (r#"{"alg":"RS256","crit":[]}"#, "crit_header"),
        (r#"{"alg":"Ed448"}"#, "alg_not_allowed"),
        (r#"{"alg":"ES521"}"#, "alg_not_allowed"),
        (r#"{"alg":"RS256","alg":"RS256"}"#, "malformed"),
        (r#"{"alg":7}"#, "malformed"),
        (r#"{"kid":"a"}"#, "malformed"),
        (r#"{"alg":"RS256","kid":7}"#, "malformed"),
        (r#"["alg"]"#, "malformed"),
        (r#"{"alg":"RS256"} x"#, "malformed"),
    ];
    for (json, reason) in cases {
        assert_eq!(header(json).unwrap_err().reason(), reason, "{json}");
    }
    let ok = header(r#"{"alg":"ES256","kid":"k\u0031","typ":"JWT","x5t":"AA"}"#).unwrap();
    assert_eq!(ok.alg, Algorithm::ES256);
    assert_eq!(ok.kid.as_deref(), Some("k1"));
    assert!(!ok.embedded_key, "a thumbprint carries no key");
    assert_eq!(header(r#"{"alg":"ES512"}"#).unwrap().alg, Algorithm::ES512);
    assert_eq!(
        header(r#"{"alg":"Ed25519"}"#).unwrap().alg,
        Algorithm::Ed25519
    );
}

#[test]
fn key_carrying_members_are_noted_not_refused() {
    for json in [
        r#"{"alg":"RS256","jku":"https://evil"}"#,
        r#"{"alg":"RS256","jwk":{"kty":"RSA"}}"#,
        r#"{"alg":"RS256","jwk":null}"#,
        r#"{"alg":"RS256","x5c":["AA"]}"#,
        r#"{"alg":"RS256","x5u":"https://evil"}"#,
        r#"{"alg":"RS256","j\u0077k":{}}"#,
    ] {
        let parsed = header(json).unwrap();
        assert!(parsed.embedded_key, "{json}");
        assert_eq!(parsed.alg, Algorithm::RS256);
    }
    // Still one member each: a second `jwk` is a duplicate like any other.
    assert_eq!(
        header(r#"{"alg":"RS256","jwk":{},"jwk":{}}"#)
            .unwrap_err()
            .reason(),
        "malformed"
    );
    // The other vetting still comes first.
    assert_eq!(
        header(r#"{"alg":"none","jwk":{}}"#).unwrap_err().reason(),
        "alg_none"
    );
}

#[test]
fn claims_are_type_checked_and_duplicates_refused() {
    // Out of f64 range: the document cannot be shown as JSON values, so it is malformed
    // (see numbers_beyond_f64_are_malformed_so_claims_are_never_hidden).
    let c = RegisteredClaims::parse(r#"{"iss":"a","aud":["x","y"],"exp":1e400,"iat":-1e400}"#);
    assert_eq!(c.map(|_| ()).unwrap_err().reason(), "malformed");
    let c = RegisteredClaims::parse(r#"{"iss":"a","aud":["x",2],"exp":1.5,"nbf":"soon"}"#).unwrap();
    assert_eq!(c.iss, Some(Field::Str("a".into())));
    assert_eq!(c.aud, Some(Audience::Invalid));
    assert_eq!(c.exp, Some(NumericDate::Seconds(1.5)));
    assert_eq!(c.nbf, Some(NumericDate::Invalid));
    let dup = RegisteredClaims::parse(r#"{"role":"user","sub":"a","role":"admin"}"#);
    assert_eq!(dup.unwrap_err().reason(), "malformed");
}

#[test]
fn numbers_beyond_f64_are_malformed_so_claims_are_never_hidden() {
    // Regression (found by the token_verify fuzz target): the skipping parser let these
    // through, the token verified, and `VerifiedToken::claims()` then came out empty.
    let digits = "9".repeat(401);
    for payload in [
        r#"{"iss":"i","x":1e400}"#.to_owned(),
        r#"{"iss":"i","x":[1, {"y":-2.5E+999}]}"#.to_owned(),
        format!(r#"{{"iss":"i","x":{digits}}}"#),
    ] {
        let reason = RegisteredClaims::parse(&payload)
            .map(|_| ())
            .map_err(|e| e.reason().as_str());
        assert_eq!(reason, Err("malformed"), "{payload}");
        assert!(
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&payload).is_err()
        );
    }
    // Numbers that fit, and strings that only look like exponents, still parse.
    for payload in [
        r#"{"iss":"i","x":1e300,"y":12345678901234567890123,"exp":1767229200}"#.to_owned(),
        format!(r#"{{"iss":"i","s":"{}","v":"2e5"}}"#, "7".repeat(250)),
    ] {
        assert!(RegisteredClaims::parse(&payload).is_ok(), "{payload}");
    }
    // A typical payload takes the fast path.
    assert!(!needs_full_parse(
        br#"{"iss":"https://issuer.example/","sub":"248289761001","aud":"api","exp":1767229200,"scope":"read write"}"#
    ));
    assert!(has_long_digit_run("1".repeat(300).as_bytes()));
    assert!(!has_long_digit_run("1".repeat(250).as_bytes()));
    assert!(
        !has_long_digit_run(&[0xB1; 400]),
        "non-ASCII bytes are not digits"
    );
}

#[test]
fn deep_nesting_in_an_unread_header_member_is_refused() {
    // Regression: serde_json skips an unread member without a depth limit, so this
    // header used to parse (and the token verify) while the same nesting in the payload
    // was refused.
    for depth in [SAFE_DEPTH, 100, 200, 10_000] {
        let json = format!(
            r#"{{"alg":"RS256","x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let reason = header(&json).map(|_| ()).map_err(|e| e.reason().as_str());
        if depth < 127 {
            assert!(reason.is_ok(), "{depth}: {reason:?}");
        } else {
            assert_eq!(reason, Err("malformed"), "{depth}");
        }
    }
    assert_eq!(
        header(r#"{"alg":"RS256","x":"\ud800"}"#)
            .unwrap_err()
            .reason(),
        "malformed",
        "a lone surrogate fails the full parse too"
    );
}

#[test]
fn duplicates_among_many_names_are_found_in_linear_time() {
    // Regression: the duplicate check compared every unread name with every earlier one.
    let names = |n: usize| (0..n).map(|i| format!(r#""c{i}":0"#)).collect::<Vec<_>>();
    let many = format!("{{{}}}", names(50_000).join(","));
    let started = tokio::time::Instant::now();
    assert!(RegisteredClaims::parse(&many).is_ok());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for at in [3, LINEAR_NAMES, LINEAR_NAMES + 1, 40_000] {
        let mut list = names(50_000);
        list.push(format!(r#""c{at}":1"#));
        let dup = format!("{{{}}}", list.join(","));
        assert_eq!(
            RegisteredClaims::parse(&dup).unwrap_err().reason(),
            "malformed",
            "duplicate of member {at}"
        );
    }
}

#[test]
fn segments_split_and_classify() {
    assert!(Segments::split("a.b.c").is_ok());
    assert_eq!(Segments::split("a.b").err().unwrap().reason(), "malformed");
    assert_eq!(
        Segments::split("a.b.c.d").err().unwrap().reason(),
        "malformed"
    );
    assert_eq!(
        Segments::split("a.b.c.d.e").err().unwrap().reason(),
        "unsupported_token"
    );
    let mut buf = Vec::new();
    assert_eq!(
        decode_into(&mut buf, "AQ==").unwrap_err().reason(),
        "malformed"
    );
    assert_eq!(
        decode_into(&mut buf, "AR").unwrap_err().reason(),
        "malformed"
    );
    assert_eq!(decode_into(&mut buf, "AQ").unwrap(), 0..1);
    assert_eq!(decode_into(&mut buf, "AgM").unwrap(), 1..3);
    assert_eq!(buf, [1, 2, 3]);
}

proptest::proptest! {
    /// The SIMD decoder accepts exactly what a strict scalar decoder accepts.
    #[test]
    fn decoding_agrees_with_a_strict_reference(segment in "[A-Za-z0-9_=+/ -]{0,12}") {
        use base64::Engine as _;
        let reference = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&segment);
        let mut buf = vec![9];
        let ours = decode_into(&mut buf, &segment);
        match (reference, ours) {
            (Ok(bytes), Ok(range)) => proptest::prop_assert_eq!(&buf[range], &bytes[..]),
            (Err(_), Err(_)) => proptest::prop_assert_eq!(&buf, &vec![9]),
            (r, o) => proptest::prop_assert!(false, "reference {:?}, ours {:?}", r, o),
        }
    }

    /// Bracket counting flags every payload deeper than the safe depth.
    #[test]
    fn deep_payloads_are_fully_parsed(depth in 0usize..200) {
        let json = format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        proptest::prop_assert_eq!(needs_full_parse(json.as_bytes()), depth + 1 > SAFE_DEPTH);
    }
}
