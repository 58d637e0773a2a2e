//! DPoP (RFC 9449) through the verifier: tokens bound with `cnf.jkt`, proofs signed here, the
//! provider's mode deciding which presentations pass, and replays refused on one replica and
//! across two sharing a replay store.

use std::sync::Arc;
use std::time::Duration;

use keygate::dpop::{DpopMode, DpopRequest, MemoryReplayGuard};
use keygate::{
    Algorithm, ClaimsError, ProviderConfig, ProviderId, Scheme, VerifiedToken, Verifier,
    VerifyError,
};
use keygate_test_support::{ManualClock, TestKey, TokenBuilder, b64url, jwks, typical_claims};
use serde_json::{Value, json};

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://idp.acme.example/";
const AUD: &str = "https://api.acme.example";
const METHOD: &str = "GET";
const URL: &str = "https://api.acme.example/orders/17";

fn idp() -> &'static TestKey {
    TestKey::shared_p256("dpop-idp")
}

fn client() -> &'static TestKey {
    TestKey::shared_p256("dpop-client")
}

fn other_client() -> &'static TestKey {
    TestKey::shared_ed25519("dpop-other-client")
}

/// The RFC 7638 thumbprint of an EC or OKP test key, computed here rather than by keygate.
fn thumbprint(key: &TestKey) -> String {
    let jwk = key.jwk();
    let canonical = match jwk["kty"].as_str().unwrap() {
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            jwk["crv"], jwk["x"], jwk["y"]
        ),
        "OKP" => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, jwk["crv"], jwk["x"]),
        other => panic!("no thumbprint helper for {other}"),
    };
    sha256_b64(&canonical)
}

fn sha256_b64(text: &str) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

struct Setup {
    verifier: Verifier,
    clock: Arc<ManualClock>,
}

fn setup(mode: DpopMode) -> Setup {
    setup_with(mode, Arc::new(MemoryReplayGuard::default()), &[])
}

fn setup_with(mode: DpopMode, guard: Arc<MemoryReplayGuard>, algorithms: &[Algorithm]) -> Setup {
    let clock = Arc::new(ManualClock::at_unix(NOW.unsigned_abs()));
    let mut provider = ProviderConfig::builder("acme", "idp", ISS)
        .static_jwks(jwks(&[idp()]).to_string())
        .audiences([AUD])
        .dpop(mode);
    if !algorithms.is_empty() {
        provider = provider.algorithms(algorithms.iter().copied());
    }
    let verifier = Verifier::builder()
        .provider(provider.build().unwrap())
        .clock(clock.clone())
        .replay_guard(guard)
        .build()
        .unwrap();
    Setup { verifier, clock }
}

/// An access token of the IdP, bound to `jkt` when there is one.
fn access_token(jkt: Option<&str>) -> String {
    let builder = TokenBuilder::new(idp()).claims(typical_claims(ISS, AUD, NOW));
    match jkt {
        Some(jkt) => builder.claim("cnf", json!({ "jkt": jkt })).sign(),
        None => builder.sign(),
    }
}

/// The claims of a valid proof for [`METHOD`] [`URL`] covering `token`.
fn proof_claims(token: &str, jti: &str) -> Value {
    json!({"jti": jti, "htm": METHOD, "htu": URL, "iat": NOW, "ath": sha256_b64(token)})
}

/// A proof signed by `key`, carrying its public JWK, with these claims.
fn proof(key: &TestKey, claims: Value) -> String {
    proof_builder(key, claims).sign()
}

fn proof_builder(key: &TestKey, claims: Value) -> TokenBuilder<'_> {
    let Value::Object(claims) = claims else {
        panic!("claims must be an object")
    };
    TokenBuilder::new(key)
        .remove_header("kid")
        .header("typ", json!("dpop+jwt"))
        .header("jwk", key.jwk_without_alg())
        .claims(claims)
}

/// Verifies `token` then checks its DPoP presentation; `"ok"` or the reason code.
async fn present(
    verifier: &Verifier,
    token: &str,
    scheme: Scheme,
    proofs: &[&str],
) -> &'static str {
    let verified = match verifier.verify(token).await {
        Ok(v) => v,
        Err(e) => return e.reason().as_str(),
    };
    check(verifier, &verified, token, scheme, proofs).await
}

async fn check(
    verifier: &Verifier,
    verified: &VerifiedToken,
    token: &str,
    scheme: Scheme,
    proofs: &[&str],
) -> &'static str {
    let request = DpopRequest {
        method: METHOD,
        url: URL,
        proofs,
    };
    match verifier.check_dpop(verified, token, scheme, &request).await {
        Ok(()) => "ok",
        Err(e @ VerifyError::Dpop(_)) => e.reason().as_str(),
        Err(other) => panic!("check_dpop gave a non-DPoP error: {other:?}"),
    }
}

#[tokio::test]
async fn a_bound_token_with_its_proof_passes_once() {
    let s = setup(DpopMode::Allowed);
    let jkt = thumbprint(client());
    let token = access_token(Some(&jkt));
    let verified = s.verifier.verify(&token).await.unwrap();
    assert_eq!(verified.cnf_jkt(), Some(jkt.as_str()));
    let p = proof(client(), proof_claims(&token, "first"));
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[&p]).await,
        "dpop_replayed"
    );
    // A new proof for the same token is fine.
    let next = proof(client(), proof_claims(&token, "second"));
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[&next]).await,
        "ok"
    );
}

#[tokio::test]
async fn two_replicas_sharing_a_store_accept_a_proof_once() {
    let guard = Arc::new(MemoryReplayGuard::default());
    let a = setup_with(DpopMode::Required, Arc::clone(&guard), &[]);
    let b = setup_with(DpopMode::Required, guard, &[]);
    let jkt = thumbprint(client());
    let token = access_token(Some(&jkt));
    let p = proof(client(), proof_claims(&token, "shared"));
    assert_eq!(
        present(&a.verifier, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
    assert_eq!(
        present(&b.verifier, &token, Scheme::Dpop, &[&p]).await,
        "dpop_replayed"
    );

    // At the same time: exactly one of the two replicas accepts.
    let p = proof(client(), proof_claims(&token, "race"));
    let race = |s: &Setup| {
        let verifier = s.verifier.clone();
        let (token, p) = (token.clone(), p.clone());
        tokio::spawn(async move { present(&verifier, &token, Scheme::Dpop, &[&p]).await })
    };
    let (x, y) = (race(&a), race(&b));
    let mut outcomes = [x.await.unwrap(), y.await.unwrap()];
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["dpop_replayed", "ok"]);

    // Separate stores do not know each other's proofs: that is what sharing is for.
    let c = setup(DpopMode::Required);
    let p = proof(client(), proof_claims(&token, "unshared"));
    assert_eq!(
        present(&a.verifier, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
    assert_eq!(
        present(&c.verifier, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
}

#[tokio::test]
async fn proofs_that_do_not_fit_the_request_or_the_token() {
    let s = setup(DpopMode::Allowed);
    let jkt = thumbprint(client());
    let token = access_token(Some(&jkt));
    let with = |edit: fn(&mut Value)| {
        let mut claims = proof_claims(&token, "edited");
        edit(&mut claims);
        proof(client(), claims)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong htm",
            with(|c| c["htm"] = json!("POST")),
            "dpop_htm_mismatch",
        ),
        (
            "wrong htu",
            with(|c| c["htu"] = json!("https://api.acme.example/orders/18")),
            "dpop_htu_mismatch",
        ),
        (
            "proof for another token",
            with(|c| c["ath"] = json!(sha256_b64("another token"))),
            "dpop_ath_mismatch",
        ),
        (
            "stale iat",
            with(|c| c["iat"] = json!(NOW - 61)),
            "dpop_iat_out_of_window",
        ),
        (
            "future iat",
            with(|c| c["iat"] = json!(NOW + 61)),
            "dpop_iat_out_of_window",
        ),
        (
            "another client's key",
            proof(other_client(), proof_claims(&token, "other")),
            "dpop_jkt_mismatch",
        ),
        (
            "an Ed25519 key for ES256",
            proof_builder(client(), proof_claims(&token, "mismatch"))
                .header("jwk", other_client().jwk_without_alg())
                .sign(),
            "dpop_bad_jwk",
        ),
        (
            "another key's signature",
            proof_builder(client(), proof_claims(&token, "forged"))
                .header("jwk", TestKey::shared_p256("dpop-third").jwk_without_alg())
                .sign(),
            "dpop_bad_signature",
        ),
        (
            "alg none",
            proof_builder(client(), proof_claims(&token, "none"))
                .header_alg_str("none")
                .sign(),
            "dpop_alg_not_allowed",
        ),
        (
            "HS256",
            keygate_test_support::hs256_token(
                client().jwk_without_alg().to_string().as_bytes(),
                &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": client().jwk_without_alg()})
                    .to_string(),
                &proof_claims(&token, "hs").to_string(),
            ),
            "dpop_alg_not_allowed",
        ),
        (
            "private key in the jwk",
            proof_builder(client(), proof_claims(&token, "private"))
                .header("jwk", {
                    let mut jwk = client().jwk_without_alg();
                    jwk["d"] = json!(b64url(&[9; 32]));
                    jwk
                })
                .sign(),
            "dpop_bad_jwk",
        ),
        (
            "typ JWT",
            proof_builder(client(), proof_claims(&token, "typ"))
                .header("typ", json!("JWT"))
                .sign(),
            "dpop_proof_malformed",
        ),
        (
            "tampered claims",
            {
                let good = proof(client(), proof_claims(&token, "tampered"));
                let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
                let mut claims = proof_claims(&token, "tampered");
                claims["htm"] = json!("GET ");
                parts[1] = b64url(claims.to_string().as_bytes());
                parts.join(".")
            },
            "dpop_bad_signature",
        ),
    ];
    for (name, p, expected) in cases {
        assert_eq!(
            present(&s.verifier, &token, Scheme::Dpop, &[&p]).await,
            expected,
            "{name}"
        );
    }
    let p = proof(client(), proof_claims(&token, "twice"));
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[&p, &p]).await,
        "dpop_proof_missing"
    );
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[]).await,
        "dpop_proof_missing"
    );
    // None of the refused proofs was recorded: the valid one still passes.
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
}

#[tokio::test]
async fn the_window_follows_the_verifiers_clock() {
    let s = setup(DpopMode::Allowed);
    let jkt = thumbprint(client());
    let token = access_token(Some(&jkt));
    let verified = s.verifier.verify(&token).await.unwrap();
    let p = proof(client(), proof_claims(&token, "late"));
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(
        check(&s.verifier, &verified, &token, Scheme::Dpop, &[&p]).await,
        "dpop_iat_out_of_window"
    );
    s.clock.advance(Duration::from_secs(1));
    let mut claims = proof_claims(&token, "on time");
    claims["iat"] = json!(NOW + 62);
    let p = proof(client(), claims);
    assert_eq!(
        check(&s.verifier, &verified, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
}

#[tokio::test]
async fn the_mode_decides_which_presentations_pass() {
    let jkt = thumbprint(client());
    let bound = access_token(Some(&jkt));
    let unbound = access_token(None);
    let p_bound = proof(client(), proof_claims(&bound, "bound"));
    let p_unbound = proof(client(), proof_claims(&unbound, "unbound"));
    // (mode, token, scheme, proofs, expected)
    let cases: [(DpopMode, &str, Scheme, &[&str], &str); 10] = [
        (DpopMode::Off, &bound, Scheme::Bearer, &[], "ok"),
        (DpopMode::Off, &bound, Scheme::Bearer, &[&p_bound], "ok"),
        (
            DpopMode::Off,
            &bound,
            Scheme::Dpop,
            &[&p_bound],
            "dpop_unbound_token",
        ),
        (
            DpopMode::Allowed,
            &bound,
            Scheme::Bearer,
            &[],
            "dpop_bound_token_as_bearer",
        ),
        (
            DpopMode::Allowed,
            &bound,
            Scheme::Bearer,
            &[&p_bound],
            "dpop_bound_token_as_bearer",
        ),
        (DpopMode::Allowed, &unbound, Scheme::Bearer, &[], "ok"),
        (
            DpopMode::Allowed,
            &unbound,
            Scheme::Dpop,
            &[&p_unbound],
            "dpop_unbound_token",
        ),
        (
            DpopMode::Required,
            &unbound,
            Scheme::Bearer,
            &[],
            "dpop_required",
        ),
        (
            DpopMode::Required,
            &unbound,
            Scheme::Dpop,
            &[&p_unbound],
            "dpop_required",
        ),
        (
            DpopMode::Required,
            &bound,
            Scheme::Bearer,
            &[&p_bound],
            "dpop_bound_token_as_bearer",
        ),
    ];
    for (mode, token, scheme, proofs, expected) in cases {
        let s = setup(mode);
        assert_eq!(
            present(&s.verifier, token, scheme, proofs).await,
            expected,
            "{mode} {scheme:?} bound={}",
            token == bound
        );
    }
    // With DPoP off the binding is not even read.
    let off = setup(DpopMode::Off);
    assert_eq!(off.verifier.verify(&bound).await.unwrap().cnf_jkt(), None);
    let required = setup(DpopMode::Required);
    assert_eq!(
        present(&required.verifier, &bound, Scheme::Dpop, &[&p_bound]).await,
        "ok"
    );
}

#[tokio::test]
async fn a_malformed_cnf_refuses_the_token_only_when_dpop_is_on() {
    for cnf in [json!("jkt"), json!({"jkt": 7}), json!(["a"])] {
        let token = TokenBuilder::new(idp())
            .claims(typical_claims(ISS, AUD, NOW))
            .claim("cnf", cnf.clone())
            .sign();
        let err = setup(DpopMode::Allowed)
            .verifier
            .verify(&token)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::Claims(ClaimsError::Invalid("cnf"))),
            "{cnf}: {err:?}"
        );
        assert!(setup(DpopMode::Off).verifier.verify(&token).await.is_ok());
    }
    // A `cnf` confirming another kind of key leaves the token unbound.
    let token = TokenBuilder::new(idp())
        .claims(typical_claims(ISS, AUD, NOW))
        .claim(
            "cnf",
            json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
        )
        .sign();
    let verified = setup(DpopMode::Allowed)
        .verifier
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(verified.cnf_jkt(), None);
}

#[tokio::test]
async fn proofs_obey_the_providers_algorithms() {
    let s = setup_with(
        DpopMode::Allowed,
        Arc::new(MemoryReplayGuard::default()),
        &[Algorithm::ES256],
    );
    assert_eq!(
        s.verifier.dpop_algorithms(&ProviderId::new("acme", "idp")),
        [Algorithm::ES256]
    );
    assert!(
        s.verifier
            .dpop_algorithms(&ProviderId::new("acme", "nobody"))
            .is_empty()
    );
    // An Ed25519 client where the provider allows ES256 only.
    let jkt = thumbprint(other_client());
    let token = access_token(Some(&jkt));
    let p = proof(other_client(), proof_claims(&token, "ed"));
    assert_eq!(
        present(&s.verifier, &token, Scheme::Dpop, &[&p]).await,
        "dpop_alg_not_allowed"
    );
    let everything = setup(DpopMode::Allowed);
    assert_eq!(
        present(&everything.verifier, &token, Scheme::Dpop, &[&p]).await,
        "ok"
    );
    assert_eq!(
        everything
            .verifier
            .dpop_algorithms(&ProviderId::new("acme", "idp")),
        Algorithm::ALL
    );
}

#[tokio::test]
async fn after_a_restart_a_proof_issued_before_it_is_refused_as_possibly_replayed() {
    let jkt = thumbprint(client());
    let token = access_token(Some(&jkt));
    let before = setup(DpopMode::Required);
    let used = proof(client(), proof_claims(&token, "before-the-restart"));
    assert_eq!(
        present(&before.verifier, &token, Scheme::Dpop, &[&used]).await,
        "ok"
    );
    // The process restarts five seconds later: its new store never saw `used`, which is
    // still inside its iat window. It must not be accepted a second time.
    let after = setup(DpopMode::Required);
    after.clock.advance(Duration::from_secs(5));
    assert_eq!(
        present(&after.verifier, &token, Scheme::Dpop, &[&used]).await,
        "dpop_replayed"
    );
    // A proof issued since is fine, as is one never used but issued before: the store
    // cannot tell the two apart, so both of those made before the restart are refused.
    let fresh = proof_builder(
        client(),
        json!({"jti": "after", "htm": METHOD, "htu": URL, "iat": NOW + 5,
               "ath": sha256_b64(&token)}),
    )
    .sign();
    assert_eq!(
        present(&after.verifier, &token, Scheme::Dpop, &[&fresh]).await,
        "ok"
    );
    let unused_but_old = proof(client(), proof_claims(&token, "never-used"));
    assert_eq!(
        present(&after.verifier, &token, Scheme::Dpop, &[&unused_but_old]).await,
        "dpop_replayed"
    );
}

#[tokio::test]
async fn a_single_nodes_store_vouches_from_its_start_not_from_its_first_proof() {
    // Built (started) a fifth of a second into second NOW, with its own in-memory store.
    let clock = Arc::new(ManualClock::at_unix(NOW.unsigned_abs()));
    clock.advance(Duration::from_millis(200));
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "idp", ISS)
                .static_jwks(jwks(&[idp()]).to_string())
                .audiences([AUD])
                .dpop(DpopMode::Required)
                .build()
                .unwrap(),
        )
        .clock(clock.clone())
        .build()
        .unwrap();
    let token = access_token(Some(&thumbprint(client())));
    // The first proof, made late in second NOW, is checked early in the next one: it was
    // made after the start, so it passes.
    clock.advance(Duration::from_millis(850));
    let made_after_start = proof(client(), proof_claims(&token, "first"));
    assert_eq!(
        present(&verifier, &token, Scheme::Dpop, &[&made_after_start]).await,
        "ok"
    );
    // One issued a second before the start may have been used by the process before.
    let before_start = proof_builder(
        client(),
        json!({"jti": "old", "htm": METHOD, "htu": URL, "iat": NOW - 1,
               "ath": sha256_b64(&token)}),
    )
    .sign();
    assert_eq!(
        present(&verifier, &token, Scheme::Dpop, &[&before_start]).await,
        "dpop_replayed"
    );
}
