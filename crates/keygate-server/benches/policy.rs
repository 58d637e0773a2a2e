//! Policy evaluation per request, as `/verify` does it, for a policy of 100 routes: the path
//! normalized, the routes scanned in file order, the winner's providers, scopes and claims
//! checked. Target: under 1 µs per evaluation.
//!
//! - `policy/last_route`: the request matches only the 100th route (the whole scan), which
//!   checks a scope and a claim.
//! - `policy/first_route`: the first route matches.
//! - `policy/no_route`: nothing matches (every route tried, then `default = "deny"`).
//! - `policy/dotted_path`: the last route again, through a path with escapes and dot segments
//!   to normalize.
//! - `policy/claims_for_last_route`: what `/verify` parses of a verified token's claims set
//!   (twelve typical claims, as JSON text) for the last route: only the members it reads.
//!
//! `cargo bench -p keygate-server --bench policy`; BENCHMARKS.md records the figures.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_server::config::Config;
use serde_json::{Map, Value, json};

/// A config with `n` routes: `/svc{i}/**` per route, methods on half of them, hosts on a
/// tenth, the last one asking for a scope and a claim.
fn config(n: usize) -> String {
    let mut text = String::from(
        "[[providers]]\ntenant = \"acme\"\nname = \"idp\"\nissuer = \"https://idp.test\"\n\
         jwks_uri = \"https://idp.test/jwks\"\naudiences = [\"api\"]\n\
         [policy]\ndefault = \"deny\"\n",
    );
    for i in 0..n {
        write!(
            text,
            "[[policy.routes]]\nname = \"r{i}\"\npaths = [\"/svc{i}/**\", \"/v{i}/*/items\"]\n"
        )
        .unwrap();
        if i % 2 == 0 {
            text.push_str("methods = [\"GET\", \"POST\"]\n");
        }
        if i % 10 == 5 {
            text.push_str("hosts = [\"api.example.com\", \"*.internal.example.com\"]\n");
        }
        if i == n - 1 {
            text.push_str(
                "providers = [\"acme/idp\"]\nscopes = [\"write\"]\n\
                 claims = [{ claim = \"/realm_access/roles\", contains = \"admin\" }]\n",
            );
        }
    }
    text
}

fn bench(c: &mut Criterion) {
    let config = Config::parse(&config(100), &|_| None).expect("the bench config is valid");
    let policy = config.policy;
    let claims: Map<String, Value> = json!({
        "sub": "alice",
        "scope": "read write",
        "realm_access": {"roles": ["user", "admin"]},
    })
    .as_object()
    .cloned()
    .expect("an object");
    let provider = Some(("acme", "idp"));
    let mut group = c.benchmark_group("policy");
    for (name, uri) in [
        ("last_route", "/svc99/orders/17?page=2"),
        ("first_route", "/svc0/orders/17"),
        ("no_route", "/nowhere/orders/17"),
        ("dotted_path", "/svc1/%2e%2e/svc99/./orders//17"),
    ] {
        let expected = policy.evaluate(
            "POST",
            uri,
            Some("api.example.com"),
            provider,
            Some(&claims),
        );
        assert_ne!(
            expected.route.is_none(),
            name != "no_route",
            "{name}: {expected:?}"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                policy.evaluate(
                    black_box("POST"),
                    black_box(uri),
                    black_box(Some("api.example.com")),
                    provider,
                    Some(black_box(&claims)),
                )
            });
        });
    }
    // What `/verify` parses of a verified token's claims for the last route: only the
    // members it reads (`scope`, `scp`, `realm_access`), from the claims set's JSON text.
    let json = serde_json::to_string(&json!({
        "iss": "https://idp.test", "sub": "alice", "aud": "api", "exp": 1_900_000_000,
        "iat": 1_800_000_000, "nbf": 1_800_000_000, "jti": "0123456789abcdef",
        "azp": "web", "email": "alice@example.com", "email_verified": true,
        "scope": "openid profile read write",
        "realm_access": {"roles": ["user", "admin"]},
    }))
    .expect("serializable");
    group.bench_function("claims_for_last_route", |b| {
        b.iter(|| policy.claims_for(black_box(99), black_box(&json)));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
