//! Tokens and keys made by an independent implementation: PyJWT and pyca/cryptography
//! (OpenSSL underneath), not keygate's fixtures. `interop_mint.py` mints the key sets and
//! tokens into a temporary folder; each case is then verified by a fresh `Verifier` over an
//! in-memory IdP serving the case's key set, which records every URL asked for.
//!
//! The test installs PyJWT and cryptography with pip when `python3` cannot import them, and
//! fails, saying why, when it cannot: it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use keygate::jwk::{KeySet, SkipReason};
use keygate::{Algorithm, CacheSettings, ProviderConfig, Verifier};
use keygate_test_support::ManualClock;
use serde_json::Value;

use crate::memidp::{AUD, ISSUER, JWKS_URI, MemoryIdp, T0};

/// What a case must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Verified, and `VerifiedToken::algorithm` is this.
    Valid(Algorithm),
    /// Refused with this reason code.
    Refused(&'static str),
}

use Expect::{Refused, Valid};

/// One verification of a minted case.
struct Row {
    case: &'static str,
    /// The provider's allow-list; empty is the library default (every algorithm).
    algorithms: &'static [Algorithm],
    refuse_embedded_keys: bool,
    expect: Expect,
}

fn row(case: &'static str, expect: Expect) -> Row {
    Row {
        case,
        algorithms: &[],
        refuse_embedded_keys: false,
        expect,
    }
}

impl Row {
    fn allow(mut self, algorithms: &'static [Algorithm]) -> Self {
        self.algorithms = algorithms;
        self
    }

    fn refusing_embedded_keys(mut self) -> Self {
        self.refuse_embedded_keys = true;
        self
    }
}

/// The minted cases (`{"<name>": {"token": ..., "jwks": {...}}}`), minted once per test run.
fn minted() -> &'static serde_json::Map<String, Value> {
    static MINTED: OnceLock<serde_json::Map<String, Value>> = OnceLock::new();
    MINTED.get_or_init(|| {
        ensure_python_packages();
        let dir = std::env::temp_dir().join(format!("keygate-interop-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/interop_mint.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .args([ISSUER, AUD, &T0.to_string()])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{}", String::from_utf8_lossy(&out.stdout).trim());
        let path: PathBuf = dir.join("cases.json");
        let text = std::fs::read_to_string(&path).expect("cases.json written");
        let _ = std::fs::remove_dir_all(&dir);
        match serde_json::from_str(&text).expect("cases.json is JSON") {
            Value::Object(map) => map,
            other => panic!("cases.json is not an object: {other}"),
        }
    })
}

/// Makes `import jwt, cryptography` work in `python3`, installing from PyPI when it does
/// not. Quick when they are already there: one interpreter start.
fn ensure_python_packages() {
    let importable = || {
        Command::new("python3")
            .args(["-c", "import jwt, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable() {
        return;
    }
    let install = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "PyJWT",
            "cryptography",
        ])
        .output()
        .expect("python3 -m pip runs (is python3 installed?)");
    assert!(
        install.status.success() && importable(),
        "could not install PyJWT and cryptography for the interop tests: {}",
        String::from_utf8_lossy(&install.stderr)
    );
}

/// Verifies one row with a fresh verifier; `Err` describes a mismatch.
async fn check(row: &Row) -> Result<(), String> {
    let case = minted()
        .get(row.case)
        .ok_or_else(|| format!("{}: the script minted no such case", row.case))?;
    let token = case["token"].as_str().expect("token is a string");
    let idp = MemoryIdp::new(&[]);
    idp.serve_document(case["jwks"].clone());
    let provider = ProviderConfig::builder("interop", "pyjwt", ISSUER)
        .jwks_uri(JWKS_URI)
        .audiences([AUD])
        .algorithms(row.algorithms.iter().copied())
        .refuse_embedded_keys(row.refuse_embedded_keys)
        .cache(CacheSettings::default())
        .build()
        .expect("provider");
    let verifier = Verifier::builder()
        .provider(provider)
        .clock(Arc::new(ManualClock::at_unix(T0)))
        .fetcher(idp.clone())
        .build()
        .expect("verifier");
    let got = match verifier.verify(token).await {
        Ok(verified) => Valid(verified.algorithm().expect("a JWS")),
        Err(e) => Refused(e.reason().as_str()),
    };
    let mut problems = Vec::new();
    if got != row.expect {
        problems.push(format!("expected {:?}, got {got:?}", row.expect));
    }
    // Nothing in a token (`jku`, `x5u`, ...) is ever fetched: only the provider's JWKS URL.
    let elsewhere: Vec<String> = idp.urls().into_iter().filter(|u| u != JWKS_URI).collect();
    if !elsewhere.is_empty() {
        problems.push(format!("fetched {elsewhere:?}"));
    }
    // A refusal for an embedded key comes before any fetch.
    if matches!(row.expect, Refused("untrusted_embedded_key")) && idp.requests() != 0 {
        problems.push(format!("{} fetches before refusing", idp.requests()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} (allow {:?}, refuse_embedded_keys {}): {}",
            row.case,
            row.algorithms,
            row.refuse_embedded_keys,
            problems.join("; ")
        ))
    }
}

async fn run(rows: &[Row]) {
    let mut failures = Vec::new();
    for row in rows {
        if let Err(failure) = check(row).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} interop rows failed:\n  {}",
        failures.len(),
        rows.len(),
        failures.join("\n  ")
    );
}

#[tokio::test]
async fn pyjwt_tokens_of_every_family_verify() {
    run(&[
        row("RS256", Valid(Algorithm::RS256)),
        row("PS256", Valid(Algorithm::PS256)),
        row("ES256", Valid(Algorithm::ES256)),
        row("ES384", Valid(Algorithm::ES384)),
        row("ES512", Valid(Algorithm::ES512)),
        row("EdDSA", Valid(Algorithm::EdDSA)),
        row("PS256", Refused("alg_not_allowed")).allow(&[Algorithm::RS256]),
    ])
    .await;
}

#[tokio::test]
async fn key_carrying_headers_from_pyjwt_are_ignored_or_refused_on_request() {
    let mut rows = Vec::new();
    for member in ["x5c", "x5t", "jku", "x5u", "jwk"] {
        rows.push(row(member, Valid(Algorithm::RS256)));
        // `x5t` is a thumbprint, not a key: even a refusing provider accepts it.
        let refused = if member == "x5t" {
            Valid(Algorithm::RS256)
        } else {
            Refused("untrusted_embedded_key")
        };
        rows.push(row(member, refused).refusing_embedded_keys());
    }
    for (case, reason) in [
        ("forged jwk, attacker kid", "unknown_kid"),
        ("forged jwk, real kid", "bad_signature"),
        ("forged jwk, no kid", "bad_signature"),
        ("forged jwk and jku, real kid", "bad_signature"),
    ] {
        rows.push(row(case, Refused(reason)));
        rows.push(row(case, Refused("untrusted_embedded_key")).refusing_embedded_keys());
    }
    run(&rows).await;
}

#[tokio::test]
async fn pyjwt_es512_verifies_and_only_under_its_p521_key() {
    run(&[
        row("ES512", Valid(Algorithm::ES512)),
        row("ES512", Valid(Algorithm::ES512)).allow(&[Algorithm::ES512]),
        row("ES512", Refused("alg_not_allowed")).allow(&[Algorithm::ES256, Algorithm::ES384]),
        row("ES512 tampered", Refused("bad_signature")),
        row("ES512 naming the P-256 key", Refused("key_alg_mismatch")),
        row("ES256 naming the P-521 key", Refused("key_alg_mismatch")),
    ])
    .await;
}

#[tokio::test]
async fn ed25519_and_eddsa_admit_each_other_and_nothing_else() {
    const ED25519: &[Algorithm] = &[Algorithm::Ed25519];
    const EDDSA: &[Algorithm] = &[Algorithm::EdDSA];
    run(&[
        row("Ed25519", Valid(Algorithm::Ed25519)),
        row("Ed25519", Valid(Algorithm::Ed25519)).allow(ED25519),
        row("Ed25519", Valid(Algorithm::Ed25519)).allow(EDDSA),
        row("EdDSA", Valid(Algorithm::EdDSA)).allow(ED25519),
        row("EdDSA", Valid(Algorithm::EdDSA)).allow(EDDSA),
        row("EdDSA under an Ed25519-pinned key", Valid(Algorithm::EdDSA)),
        row(
            "Ed25519 under an Ed25519-pinned key",
            Valid(Algorithm::Ed25519),
        )
        .allow(EDDSA),
        row("Ed25519", Refused("alg_not_allowed")).allow(&[Algorithm::ES256]),
        row("Ed25519 tampered", Refused("bad_signature")),
        row("Ed25519 naming the P-256 key", Refused("key_alg_mismatch")),
        // The Ed448 key is skipped, so its `kid` is unknown.
        row("Ed448", Refused("unknown_kid")),
    ])
    .await;
}

#[test]
fn pyjwt_key_sets_parse_with_ed448_skipped_and_named() {
    let case = &minted()["Ed448"];
    let document = serde_json::to_vec(&case["jwks"]).expect("serialises");
    let set = KeySet::parse(&document, &Algorithm::ALL, 100).expect("a JWK set");
    assert_eq!(set.usable(), 5, "RSA, P-256, P-384, P-521, Ed25519");
    let skipped: Vec<_> = set
        .skipped_keys()
        .iter()
        .map(|s| (s.kid(), s.reason()))
        .collect();
    assert_eq!(skipped, [(Some("ed448"), SkipReason::Ed448Unsupported)]);
    assert_eq!(SkipReason::Ed448Unsupported.as_str(), "ed448_unsupported");
}

/// Two JWKS URLs of one issuer (`jwks_uris`), PyJWT keys sharing a `kid` across them: a token
/// signed by either verifies, one signed by neither does not; with one URL down, the other
/// URL's keys keep verifying.
#[tokio::test]
async fn pyjwt_keys_sharing_a_kid_across_two_jwks_urls_verify_and_survive_one_url_down() {
    use keygate::RetrySettings;
    use keygate::fetch::HttpFetcher;
    use keygate_test_support::{StubIdp, StubResponse};
    use std::time::Duration;

    let cases = minted();
    let token = |name: &str| cases[name]["token"].as_str().expect("token").to_owned();
    let (a, b) = (StubIdp::start().await, StubIdp::start().await);
    a.set_jwks(cases["shared kid, first document"]["jwks"].clone());
    b.set_jwks(cases["shared kid, second document"]["second_jwks"].clone());
    let mut retry = RetrySettings::default();
    retry.attempts = 1;
    retry.attempt_timeout = Duration::from_millis(300);
    retry.deadline = Duration::from_millis(500);
    let provider = ProviderConfig::builder("interop", "two", ISSUER)
        .audiences([AUD])
        .jwks_uris([a.jwks_url(), b.jwks_url()])
        .retry(retry)
        .build()
        .expect("provider");
    let verifier = Verifier::builder()
        .provider(provider)
        .clock(Arc::new(ManualClock::at_unix(T0)))
        .fetcher(Arc::new(
            HttpFetcher::builder()
                .danger_allow_http_loopback(true)
                .build()
                .expect("fetcher"),
        ))
        .build()
        .expect("verifier");
    let reason = |name: &'static str| {
        let verifier = verifier.clone();
        let token = token(name);
        async move {
            match verifier.verify(&token).await {
                Ok(_) => "valid",
                Err(e) => e.reason().as_str(),
            }
        }
    };
    assert_eq!(reason("shared kid, first document").await, "valid");
    assert_eq!(reason("shared kid, second document").await, "valid");
    assert_eq!(
        reason("shared kid, second document's other key").await,
        "valid"
    );
    assert_eq!(
        reason("shared kid, neither document").await,
        "bad_signature"
    );
    // The first URL goes down; an explicit refresh finds it failing: the second document's
    // keys (and the first's, still cached) keep verifying.
    a.set_response("/jwks", StubResponse::status(503));
    let _ = verifier
        .refresh(&keygate::ProviderId::new("interop", "two"))
        .await;
    assert_eq!(reason("shared kid, second document").await, "valid");
    assert_eq!(
        reason("shared kid, second document's other key").await,
        "valid"
    );
    assert_eq!(reason("shared kid, first document").await, "valid");
}
