//! Writes the seed corpora of every target into `corpus/<target>/`, from the fixtures (so the
//! tokens are signed by the committed keys and valid at the fixed `now`) and from `examples/`.
//!
//! ```sh
//! fuzz/run.sh --seeds
//! ```
//!
//! Seeds are small and named after what they show; rerunning overwrites them (ECDSA signatures
//! differ from run to run, nothing else does).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keygate::{FlushId, ProviderId, PublishedKeySet, Revocation};
use keygate_fuzz::{AUDIENCE, BETA_AUDIENCE, ISSUER, Keys, NOW_UNIX, OTHER_ISSUER, Signer, mint};
use keygate_server::bus::Event;
use keygate_server::bus::wire;

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let examples = fuzz.join("../examples");
    let corpus = fuzz.join("corpus");
    token_verify(&corpus.join("token_verify"), &examples);
    jwks_parse(&corpus.join("jwks_parse"), &examples);
    cache_headers(&corpus.join("cache_headers"));
    config_parse(&corpus.join("config_parse"), &examples);
    admin_bodies(&corpus.join("admin_bodies"));
    bus_entry(&corpus.join("bus_entry"));
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn claims(iss: &str, aud: &str, extra: &str) -> String {
    let (now, exp) = (NOW_UNIX - 60, NOW_UNIX + 3600);
    format!(
        r#"{{"iss":"{iss}","aud":"{aud}","sub":"alice","iat":{now},"nbf":{now},"exp":{exp},"jti":"3f1c9b2e"{extra}}}"#
    )
}

fn token_verify(dir: &Path, examples: &Path) {
    let main = claims(ISSUER, AUDIENCE, r#","scope":"read write""#);
    let raw = |name: &str, token: &str| write(dir, name, [b"\x00", token.as_bytes()].concat());
    raw(
        "raw-rs256",
        &mint(
            r#"{"alg":"RS256","kid":"rsa-1","typ":"JWT"}"#,
            &main,
            Signer::Rs256,
        ),
    );
    raw(
        "raw-es256",
        &mint(
            r#"{"alg":"ES256","kid":"p256-1","typ":"JWT"}"#,
            &main,
            Signer::Es256,
        ),
    );
    raw(
        "raw-eddsa",
        &mint(r#"{"alg":"EdDSA","kid":"ed-1"}"#, &main, Signer::EdDsa),
    );
    raw(
        "raw-beta-at-jwt",
        &mint(
            r#"{"alg":"ES256","kid":"p256-1","typ":"at+jwt"}"#,
            &claims(ISSUER, BETA_AUDIENCE, ""),
            Signer::Es256,
        ),
    );
    raw(
        "raw-nokid",
        &mint(
            r#"{"alg":"EdDSA"}"#,
            &claims(OTHER_ISSUER, "anyone", ""),
            Signer::EdDsa,
        ),
    );
    raw(
        "raw-expired",
        &mint(
            r#"{"alg":"ES256","kid":"p256-1"}"#,
            &format!(
                r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{}}}"#,
                NOW_UNIX - 3600
            ),
            Signer::Es256,
        ),
    );
    raw(
        "raw-alg-none",
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlLyJ9.",
    );
    raw("raw-two-segments", "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0");
    if let Ok(token) = fs::read_to_string(examples.join("token.jwt")) {
        raw("raw-example-token", token.trim());
    }
    // Tenant `acme` only (mode bit 1).
    let tenant = mint(r#"{"alg":"EdDSA","kid":"ed-1"}"#, &main, Signer::EdDsa);
    write(
        dir,
        "raw-tenant-acme",
        [b"\x02", tenant.as_bytes()].concat(),
    );

    // Structured: mode, signer, header JSON, newline, payload JSON.
    let structured = |name: &str, mode: u8, signer: u8, header: &str, payload: &str| {
        write(
            dir,
            name,
            format!("{}{}{header}\n{payload}", mode as char, signer as char),
        );
    };
    // Structured tokens with the main payload: name, mode, signer, header.
    for (name, mode, signer, header) in [
        ("st-rs256", 1, 0, r#"{"alg":"RS256","kid":"rsa-1","typ":"JWT"}"#),
        ("st-ps256-revoked-kid", 1, 1, r#"{"alg":"PS256","kid":"rsa-noalg"}"#),
        ("st-es256", 1, 2, r#"{"alg":"ES256","kid":"p256-1"}"#),
        ("st-eddsa-tenant", 3, 3, r#"{"alg":"EdDSA","kid":"ed-1"}"#),
        ("st-weak-key", 1, 0, r#"{"alg":"RS256","kid":"weak-1024"}"#),
        ("st-bad-sig", 1, 6, r#"{"alg":"ES256","kid":"p256-1"}"#),
        ("st-empty-sig", 1, 4, r#"{"alg":"ES256","kid":"p256-1"}"#),
        ("st-hostile-header", 1, 2, r#"{"alg":"ES256","kid":"p256-1","jku":"https://evil.example/jwks","crit":["exp"],"alg":"ES256"}"#),
    ] {
        structured(name, mode, signer, header, &main);
    }
    structured(
        "st-revoked-jti",
        1,
        2,
        r#"{"alg":"ES256","kid":"p256-1"}"#,
        &format!(
            r#"{{"iss":"{ISSUER}","aud":["x","{AUDIENCE}"],"exp":{},"jti":"revoked-jti"}}"#,
            NOW_UNIX + 60
        ),
    );
    structured(
        "st-revoked-sub",
        1,
        3,
        r#"{"alg":"EdDSA","kid":"ed-1"}"#,
        &format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":{},"iat":{},"sub":"revoked-sub"}}"#,
            NOW_UNIX + 60,
            NOW_UNIX - 60
        ),
    );
    structured(
        "st-fractional-dates",
        1,
        2,
        r#"{"alg":"ES256","kid":"p256-1","typ":"at+jwt"}"#,
        &format!(
            r#"{{"iss":"{ISSUER}","aud":"{BETA_AUDIENCE}","exp":{}.5,"nbf":{}.25,"iat":1e9}}"#,
            NOW_UNIX + 1,
            NOW_UNIX - 1
        ),
    );
    structured(
        "st-nested-claims",
        1,
        3,
        r#"{"alg":"EdDSA","kid":"ed-1"}"#,
        &claims(
            ISSUER,
            AUDIENCE,
            r#","roles":["a","b"],"org":{"id":7,"name":"\u00e9"}"#,
        ),
    );
}

fn jwks_parse(dir: &Path, examples: &Path) {
    let keys = Keys::get();
    write(dir, "fixture-main", keys.main_jwks());
    write(dir, "fixture-nokid", keys.nokid_jwks());
    if let Ok(doc) = fs::read(examples.join("jwks.json")) {
        write(dir, "example", doc);
    }
    write(dir, "empty", r#"{"keys":[]}"#);
    write(
        dir,
        "unusable-entries",
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"hmac"},{"kty":"RSA","kid":"broken","n":"!!","e":"AQAB"},{"kty":"EC","crv":"P-521","kid":"p521","x":"AA","y":"AA"},{"kty":"OKP","crv":"X25519","kid":"x","x":"AA"},{"kid":7},"not an object"]}"#,
    );
    write(
        dir,
        "enc-and-key-ops",
        format!(
            r#"{{"keys":[{},{{"kty":"EC","crv":"P-256","use":"enc","kid":"enc","x":"AA","y":"AA"}},{{"kty":"OKP","crv":"Ed25519","key_ops":["sign"],"kid":"ops","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}],"extra":true}}"#,
            keys.ed_jwk(Some("ed-1"))
        ),
    );
    write(
        dir,
        "duplicate-kids",
        format!(
            r#"{{"keys":[{},{}]}}"#,
            keys.rsa_jwk(Some("same"), Some("RS256")),
            keys.p256_jwk(Some("same"))
        ),
    );
}

fn cache_headers(dir: &Path) {
    let seeds: [(&str, &str); 9] = [
        (
            "auth0-style",
            "status=200 later=600\ncache-control: public, max-age=15, stale-while-revalidate=15, stale-if-error=86400\ndate: Thu, 01 Jan 2026 00:00:00 GMT\netag: W/\"a1b2\"\n--\ncache-control: max-age=600\n--\n",
        ),
        (
            "google-style",
            "ttl=300,86400,300\ncache-control: public, max-age=21865, must-revalidate, no-transform\nexpires: Thu, 01 Jan 2026 06:04:25 GMT\ndate: Thu, 01 Jan 2026 00:00:00 GMT\nage: 120\nvary: Origin, X-Origin, Referer\n",
        ),
        (
            "no-store",
            "later=30\ncache-control: no-store, no-cache\npragma: no-cache\nexpires: 0\n",
        ),
        (
            "s-maxage-private",
            "ttl=60,3600,120\ncache-control: Private, S-MaxAge=7200, Max-Age=10\nset-cookie: lb=1\n",
        ),
        (
            "expires-only",
            "peer=-30,900 etag=\"p1\"\nexpires: Thu, 01 Jan 2026 01:00:00 GMT\ndate: Wed, 31 Dec 2025 23:59:00 GMT\nlast-modified: Mon, 01 Dec 2025 00:00:00 GMT\n--\ndate: Thu, 01 Jan 2026 00:10:00 GMT\nage: 5\n",
        ),
        (
            "revalidate-etag",
            "later=86400\netag: \"v1\"\ncache-control: max-age=3600\n--\netag: \"v1\"\ncache-control: max-age=7200\n--\nif-none-match: \"stale\"\nauthorization: Bearer x\n",
        ),
        ("304-other-etag", "etag: \"v1\"\n--\netag: \"v2\"\n"),
        (
            "garbage",
            "status=999 ttl=0,0,0 later=-5\ncache-control: max-age=99999999999999999999999, max-age=5, ,, =x\nage: -1\nexpires: yesterday\nvary: *\n",
        ),
        (
            "retry-after",
            "status=503\nretry-after: Thu, 01 Jan 2026 00:30:00 GMT\ncache-control: max-age=60\n--\nretry-after: 120\n",
        ),
    ];
    for (name, text) in seeds {
        write(dir, name, text);
    }
}

fn config_parse(dir: &Path, examples: &Path) {
    if let Ok(text) = fs::read(examples.join("keygate.toml")) {
        write(dir, "example", text);
    }
    write(
        dir,
        "minimal",
        "[[providers]]\ntenant = \"acme\"\nname = \"auth0\"\nissuer = \"https://acme.eu.auth0.com/\"\naudiences = [\"https://api.acme.example\"]\n",
    );
    write(
        dir,
        "cluster-redis",
        "[server]\nlisten = \"0.0.0.0:8080\"\nnode_id = \"keygate-0\"\ntoken_cache = 0\n\n[[providers]]\ntenant = \"globex\"\nname = \"keycloak\"\nissuer = \"https://sso.globex.example/realms/main\"\naudiences = [\"account\"]\nalgorithms = [\"RS256\", \"PS256\"]\nrequired_typ = \"at+jwt\"\nleeway = \"500ms\"\n\n[cluster]\nbackend = \"redis\"\nredis_url = \"rediss://10.0.0.5:6379/0\"\nprefix = \"kg\"\naccept_while_degraded = false\n[[cluster.keys]]\nid = \"2026-11\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    write(
        dir,
        "dev-issuer",
        "[dev_issuer]\nlisten = \"127.0.0.1:8082\"\naudience = \"keygate-dev\"\ntenant = \"dev\"\nprovider = \"dev\"\n\n[revocations]\nmax_token_lifetime = \"1d\"\n",
    );
    write(
        dir,
        "loopback-http",
        "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://127.0.0.1:9000/\"\njwks_uri = \"http://127.0.0.1:9000/jwks\"\nallow_insecure_http = true\naudiences = [\"a\"]\nmin_ttl = 60\nmax_ttl = \"2h\"\ndefault_ttl = \"5m\"\nallowed_hosts = [\"127.0.0.1\"]\n[providers.claims_to_headers]\nemail = \"X-Auth-Email\"\n",
    );
}

fn admin_bodies(dir: &Path) {
    let seeds: [(&str, &str); 12] = [
        (
            "revoke-jti",
            r#"{"jti":"3f1c9b2e-8c1d-4c55-9d6b-0c1e2a7b9f10","exp":1767229200}"#,
        ),
        (
            "revoke-sub",
            r#"{"tenant":"acme","sub":"auth0|alice","before":1767225600}"#,
        ),
        (
            "revoke-sub-until",
            r#"{"tenant":"acme","sub":"alice","before":1767225600,"until":1767312000}"#,
        ),
        (
            "revoke-kid",
            r#"{"tenant":"acme","provider":"auth0","kid":"rsa-2025-11"}"#,
        ),
        ("revoke-two-kinds", r#"{"jti":"x","exp":1,"sub":"y"}"#),
        ("revoke-bad-number", r#"{"jti":"x","exp":1.5e300}"#),
        ("event", r#"{"namespace":"users","key":"42"}"#),
        (
            "event-unicode-key",
            r#"{"namespace":"orders:eu-1","key":"caf\u00e9 #7"}"#,
        ),
        ("namespace-filter", "users,orders:eu-1,a.b_c-d"),
        ("cursor", "3f9a1c2b:42:1767225600123-0"),
        (
            "state-file-subject",
            r#"{"kind":"subject","tenant":"acme","sub":"alice","before":1767225600,"until":1767312000}"#,
        ),
        (
            "state-file-kid",
            r#"{"kind":"kid","tenant":"acme","provider":"auth0","kid":"k1","until":null}"#,
        ),
    ];
    for (name, text) in seeds {
        write(dir, name, text);
    }
}

fn bus_entry(dir: &Path) {
    let keys = keygate_fuzz::bus::ring();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_UNIX * 1000 + 123);
    let acme = ProviderId::new("acme", "auth0");
    let events = [
        (
            "flush",
            Event::Flush {
                provider: acme.clone(),
                flush: FlushId::new("flush-1").expect("a valid flush id"),
            },
        ),
        ("refresh", Event::Refresh(acme.clone())),
        (
            "revoke-jti",
            Event::Revoke(Revocation::Jti {
                jti: "3f1c9b2e".into(),
                exp: 1_767_229_200,
            }),
        ),
        (
            "revoke-subject",
            Event::Revoke(Revocation::Subject {
                tenant: "acme".into(),
                sub: "alice".into(),
                before: 1_767_225_600,
                until: 1_767_312_000,
            }),
        ),
        (
            "revoke-kid",
            Event::Revoke(Revocation::Kid {
                tenant: "acme".into(),
                provider: "auth0".into(),
                kid: "rsa-2025-11".into(),
                until: None,
            }),
        ),
        (
            "keyset",
            Event::KeySet {
                provider: acme,
                set: PublishedKeySet::new(
                    Keys::get().nokid_jwks(),
                    at,
                    at + Duration::from_secs(600),
                    Some("\"v1\"".into()),
                ),
            },
        ),
        (
            "app",
            Event::App {
                namespace: "users".into(),
                key: "42".into(),
            },
        ),
    ];
    for (seq, (name, event)) in (1..).zip(&events) {
        let entry = wire::encode(&keys, event, seq, "3f9a1c2b", "keygate-0", at).unwrap();
        // Mode 0: as shared state stores it (valid MAC).
        write(
            dir,
            &format!("stored-{name}"),
            [b"\x00", entry.to_json().as_bytes()].concat(),
        );
        // Mode 2: the fields the harness signs.
        let lines = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}",
            entry.v, entry.kind, entry.seq, entry.epoch, entry.origin, entry.at, entry.payload
        );
        write(
            dir,
            &format!("signed-{name}"),
            [b"\x02", lines.as_bytes()].concat(),
        );
    }
    // Mode 1: stream fields, one with a valid MAC, one without.
    let entry = wire::encode(&keys, &events[2].1, 9, "3f9a1c2b", "keygate-1", at).unwrap();
    let fields: Vec<String> = entry
        .fields()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    write(
        dir,
        "stream-revoke-jti",
        [b"\x01", fields.join("\n").as_bytes()].concat(),
    );
    write(
        dir,
        "stream-bad-mac",
        "\x01v=1\ntype=app\nseq=3\nepoch=e\norigin=o\nat=0\npayload={\"namespace\":\"n\",\"key\":\"k\"}\nkey=k1\nmac=00",
    );
}
