//! Tables: route selection (globs, methods, hosts), authorization (providers, scopes,
//! claims), the bypass list, and the config errors, all through `Config::parse`.

use serde_json::{Map, Value, json};

use super::*;
use crate::config::{Config, ConfigError};

const PROVIDERS: &str = r#"
[[providers]]
tenant = "acme"
name = "idp"
issuer = "https://idp.acme.test"
jwks_uri = "https://idp.acme.test/jwks"
audiences = ["api"]

[[providers]]
tenant = "other"
name = "idp"
issuer = "https://idp.other.test"
jwks_uri = "https://idp.other.test/jwks"
audiences = ["api"]
"#;

fn parse(policy: &str) -> Result<Policy, ConfigError> {
    let config = Config::parse(&format!("{PROVIDERS}\n{policy}"), &|_| None)?;
    Ok(Arc::try_unwrap(config.policy).expect("the only reference"))
}

/// The README's example policy, and a few more routes.
const POLICY: &str = r#"
[policy]
default = "deny"

[[policy.routes]]
name = "public"
paths = ["/public/**", "/healthz"]
methods = ["GET", "HEAD"]
anonymous = true

[[policy.routes]]
name = "orders-write"
paths = ["/api/orders/**"]
methods = ["POST", "PUT", "DELETE"]
providers = ["acme/idp"]
scopes = ["write"]
claims = [{ claim = "/realm_access/roles", contains = "admin" }]

[[policy.routes]]
name = "orders-read"
paths = ["/api/orders/**"]
any_scopes = ["read", "write"]

[[policy.routes]]
name = "admin"
paths = ["/admin/**"]
hosts = ["admin.example.com", "*.internal.example.com"]
claims = [
  { claim = "email_verified", equals = true },
  { claim = "/groups", contains_any = ["ops", "sre"] },
  { claim = "banned", absent = true },
]

[[policy.routes]]
name = "items"
paths = ["/api/*/items", "/api/v2/**/export"]
"#;

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn admin_claims() -> Map<String, Value> {
    claims(json!({
        "scope": "read write",
        "realm_access": {"roles": ["admin"]},
        "email_verified": true,
        "groups": ["sre"],
    }))
}

/// (method, uri, host) → the route name and reason of a valid `acme/idp` token with
/// `admin_claims()`.
fn check(
    policy: &Policy,
    method: &str,
    uri: &str,
    host: Option<&str>,
) -> (Option<String>, &'static str) {
    let c = admin_claims();
    let v = policy.evaluate(method, uri, host, Some(("acme", "idp")), Some(&c));
    (v.route, v.reason.as_str())
}

/// Method, URI, host; the route and reason expected.
type SelectionRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<String>,
    &'static str,
);

/// Method, URI, the token's provider and claims; the reason expected.
type AuthorizationRow = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    Map<String, Value>,
    &'static str,
);

#[test]
fn selection_table() {
    let p = parse(POLICY).unwrap();
    let r = |s: &str| Some(s.to_owned());
    let cases: &[SelectionRow] = &[
        ("GET", "/public/a.css", None, r("public"), "anonymous"),
        ("HEAD", "/public", None, r("public"), "anonymous"),
        ("get", "/public/x", None, r("public"), "anonymous"),
        ("POST", "/public/x", None, None, "no_route"),
        ("GET", "/healthz", None, r("public"), "anonymous"),
        ("GET", "/healthz/", None, None, "no_route"),
        ("GET", "/healthz?x=/admin/", None, r("public"), "anonymous"),
        (
            "GET",
            "/admin?x=/public/",
            Some("admin.example.com"),
            r("admin"),
            "ok",
        ),
        ("POST", "/api/orders/1", None, r("orders-write"), "ok"),
        ("GET", "/api/orders/1", None, r("orders-read"), "ok"),
        ("GET", "/api/orders", None, r("orders-read"), "ok"),
        ("GET", "/api/ordersx", None, None, "no_route"),
        (
            "GET",
            "/admin/x",
            Some("admin.example.com"),
            r("admin"),
            "ok",
        ),
        (
            "GET",
            "/admin/x",
            Some("ADMIN.example.com:8443"),
            r("admin"),
            "ok",
        ),
        (
            "GET",
            "/admin/x",
            Some("admin.example.com."),
            r("admin"),
            "ok",
        ),
        (
            "GET",
            "/admin/x",
            Some("a.internal.example.com"),
            r("admin"),
            "ok",
        ),
        (
            "GET",
            "/admin/x",
            Some("internal.example.com"),
            None,
            "no_route",
        ),
        (
            "GET",
            "/admin/x",
            Some("evil-admin.example.com"),
            None,
            "no_route",
        ),
        (
            "GET",
            "/admin/x",
            Some("admin.example.com.evil"),
            None,
            "no_route",
        ),
        ("GET", "/admin/x", None, None, "no_route"),
        ("GET", "/api/v1/items", None, r("items"), "ok"),
        ("GET", "/api/v1/x/items", None, None, "no_route"),
        ("GET", "/api/v2/a/b/export", None, r("items"), "ok"),
        ("GET", "/api/v2/export", None, r("items"), "ok"),
        ("GET", "/", None, None, "no_route"),
    ];
    for (method, uri, host, route, reason) in cases {
        assert_eq!(
            check(&p, method, uri, *host),
            (route.clone(), *reason),
            "{method} {uri} {host:?}"
        );
    }
}

#[test]
fn authorization_table() {
    let p = parse(POLICY).unwrap();
    let base = admin_claims();
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c.insert(k.to_owned(), v);
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.remove(k);
        c
    };
    let acme = Some(("acme", "idp"));
    let other = Some(("other", "idp"));
    // Rows by the request they authorize: (provider, claims, reason).
    let post_order = |p, c, r| ("POST", "/api/orders/1", p, c, r);
    let get_order = |p, c, r| ("GET", "/api/orders/1", p, c, r);
    let get_admin = |p, c, r| ("GET", "/admin/x", p, c, r);
    let cases: Vec<AuthorizationRow> = vec![
        post_order(acme, base.clone(), "ok"),
        post_order(other, base.clone(), "provider_not_allowed"),
        post_order(None, base.clone(), "provider_not_allowed"),
        post_order(acme, with("scope", json!("read")), "insufficient_scope"),
        post_order(acme, with("scope", json!("writes")), "insufficient_scope"),
        post_order(acme, with("scp", json!(["write"])), "ok"),
        post_order(acme, without("scope"), "insufficient_scope"),
        post_order(
            acme,
            with("realm_access", json!({"roles": ["user"]})),
            "claim_unmet",
        ),
        post_order(
            acme,
            with("realm_access", json!({"roles": "administrator"})),
            "claim_unmet",
        ),
        post_order(
            acme,
            with("realm_access", json!({"roles": "user admin"})),
            "ok",
        ),
        post_order(acme, without("realm_access"), "claim_unmet"),
        get_order(other, with("scope", json!("read")), "ok"),
        get_order(other, with("scope", json!("write")), "ok"),
        get_order(other, with("scope", json!("delete")), "insufficient_scope"),
        get_admin(acme, with("email_verified", json!("true")), "claim_unmet"),
        get_admin(acme, with("groups", json!(["dev"])), "claim_unmet"),
        get_admin(acme, with("groups", json!(["dev", "ops"])), "ok"),
        get_admin(acme, with("banned", json!(true)), "claim_unmet"),
        get_admin(acme, with("banned", Value::Null), "ok"),
    ];
    for (method, uri, provider, c, reason) in cases {
        let v = p.evaluate(method, uri, Some("admin.example.com"), provider, Some(&c));
        assert_eq!(
            v.reason.as_str(),
            reason,
            "{method} {uri} {provider:?} {c:?}"
        );
        assert_eq!(v.allowed(), reason == "ok");
        assert_eq!(v.status, if reason == "ok" { 200 } else { 403 });
    }
    // No token at all: 401 on a route that needs one, 200 on an anonymous one.
    let v = p.evaluate("GET", "/api/orders", None, None, None);
    assert_eq!((v.reason, v.status), (PolicyReason::MissingToken, 401));
    let v = p.evaluate("GET", "/public/x", None, None, None);
    assert_eq!((v.reason, v.status), (PolicyReason::Anonymous, 200));
}

/// Every attempt to reach `/admin` (or `/api/orders` with a write method) through the
/// anonymous `/public/**` route: each must land on the protected route, on `no_route`, or be
/// refused as `invalid_path`, never on `public`.
#[test]
fn bypass_attempts_never_reach_a_more_permissive_route() {
    let p = parse(POLICY).unwrap();
    let attempts = [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/.%2e/admin/x",
        "/public/%2e./admin/x",
        "/public/./../admin/x",
        "/public/x/../../admin/x",
        "//admin/x",
        "///admin//x",
        "/public/..%2fadmin/x",
        "/public/..%2Fadmin/x",
        "/public%2f..%2fadmin/x",
        "/public/..%5cadmin/x",
        "/public\\..\\admin/x",
        "/public/..;/admin/x",
        "/public;/../admin/x",
        "/public/%2e%2e%3b/admin/x",
        "/public/%252e%252e/admin/x",
        "/public/%25%32%65%25%32%65/admin/x",
        "/public/..%00/admin/x",
        "/public/%00/../admin/x",
        "/public/%c0%ae%c0%ae/admin/x",
        "/public/%e0%80%ae%e0%80%ae/admin/x",
        "/public/..%c0%af/admin/x",
        "/public/...",
        "/public/x./../admin/x",
        "/public/..%20/admin/x",
        "/public/.. /admin/x",
        "/PUBLIC/x",
        "/Public/../admin/x",
        "/admin/x?/public/",
        "/admin/x#/public/",
        "/admin/%2e%2e%2fpublic/",
        "public/x",
        "/public/%",
        "/public/%2",
        "/public/%g0",
    ];
    for uri in attempts {
        for host in [Some("admin.example.com"), None] {
            let v = p.evaluate(
                "GET",
                uri,
                host,
                Some(("acme", "idp")),
                Some(&admin_claims()),
            );
            assert_ne!(
                v.route.as_deref(),
                Some("public"),
                "{uri} reached public: {v:?}"
            );
            assert!(
                matches!(
                    (v.route.as_deref(), v.reason),
                    (Some("admin"), _) | (None, PolicyReason::NoRoute | PolicyReason::InvalidPath)
                ),
                "{uri}: {v:?}"
            );
            let anon = p.evaluate("GET", uri, host, None, None);
            assert!(
                !anon.allowed(),
                "{uri} let an anonymous request through: {anon:?}"
            );
        }
    }
    // The write route is not reachable through a read method's spelling either.
    for method in ["post", "Post", "POST"] {
        let v = p.evaluate(method, "/public/x", None, None, None);
        assert_eq!(v.reason, PolicyReason::NoRoute, "{method}");
    }
}

#[test]
fn default_authenticate_lets_any_valid_token_through() {
    let p =
        parse("[policy]\n[[policy.routes]]\nname = \"p\"\npaths = [\"/p/**\"]\nanonymous = true")
            .unwrap();
    let c = claims(json!({}));
    let v = p.evaluate("GET", "/other", None, None, Some(&c));
    assert_eq!((v.route, v.reason, v.status), (None, PolicyReason::Ok, 200));
    let v = p.evaluate("GET", "/other", None, None, None);
    assert_eq!(v.status, 401);
    // Without [policy] nothing is configured.
    assert!(!parse("").unwrap().is_configured());
    assert!(parse("[policy]").unwrap().is_configured());
}

#[test]
fn config_errors_name_the_key() {
    let route = |body: &str| {
        format!(
            "[policy]\n[[policy.routes]]\nname = \"a\"\npaths = [\"/a\"]\n[[policy.routes]]\n{body}"
        )
    };
    let cases = [
        ("[policy]\ndefault = \"allow\"".to_owned(), "policy.default"),
        (
            route("name = \"a\"\npaths = [\"/b\"]"),
            "policy.routes[1].name",
        ),
        (
            route("name = \"a b\"\npaths = [\"/b\"]"),
            "policy.routes[1].name",
        ),
        (route("name = \"b\"\npaths = []"), "policy.routes[1].paths"),
        (
            route("name = \"b\"\npaths = [\"b\"]"),
            "policy.routes[1].paths",
        ),
        (
            route("name = \"b\"\npaths = [\"/a/*.png\"]"),
            "policy.routes[1].paths",
        ),
        (
            route("name = \"b\"\npaths = [\"/a/../b\"]"),
            "policy.routes[1].paths",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nmethods = []"),
            "policy.routes[1].methods",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nmethods = [\"GE T\"]"),
            "policy.routes[1].methods",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nhosts = [\"https://a\"]"),
            "policy.routes[1].hosts",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nhosts = [\"a:80\"]"),
            "policy.routes[1].hosts",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nproviders = [\"acme\"]"),
            "policy.routes[1].providers",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nproviders = [\"nobody/idp\"]"),
            "policy.routes[1].providers",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nscopes = [\"a b\"]"),
            "policy.routes[1].scopes",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nany_scopes = [\"a\\\"\"]"),
            "policy.routes[1].any_scopes",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nanonymous = true\nscopes = [\"x\"]"),
            "policy.routes[1].anonymous",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nclaims = [{ claim = \"x\" }]"),
            "policy.routes[1].claims[0]",
        ),
        (
            route(
                "name = \"b\"\npaths = [\"/b\"]\nclaims = [{ claim = \"x\", equals = 1, exists = true }]",
            ),
            "policy.routes[1].claims[0]",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nclaims = [{ claim = \"/a~2\", exists = true }]"),
            "policy.routes[1].claims[0].claim",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nclaims = [{ claim = \"\", exists = true }]"),
            "policy.routes[1].claims[0].claim",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nclaims = [{ claim = \"x\", one_of = [] }]"),
            "policy.routes[1].claims[0]",
        ),
        (
            route("name = \"b\"\npaths = [\"/b\"]\nscope = [\"typo\"]"),
            "policy.routes[1].scope",
        ),
    ];
    for (text, key) in cases {
        let e = parse(&text).expect_err(&text);
        assert_eq!(e.key, key, "{text}\n{e}");
    }
}

#[test]
fn counters_are_per_route_and_carry_over_a_swap() {
    let p = Arc::new(parse(POLICY).unwrap());
    p.record(Some(0), PolicyReason::Anonymous);
    p.record(Some(1), PolicyReason::InsufficientScope);
    p.record(None, PolicyReason::NoRoute);
    // What a policy counted, by route name.
    let counts = |p: &Policy| -> Vec<(Option<String>, PolicyReason, u64)> {
        p.counts()
            .map(|(r, reason, n)| (r.map(str::to_owned), reason, n))
            .collect()
    };
    assert_eq!(
        counts(&p),
        [
            (Some("public".to_owned()), PolicyReason::Anonymous, 1),
            (
                Some("orders-write".to_owned()),
                PolicyReason::InsufficientScope,
                1
            ),
            (None, PolicyReason::NoRoute, 1),
        ]
    );
    let shared = SharedPolicy::new(Arc::clone(&p));
    // The new policy drops orders-write and keeps public.
    let next = Arc::new(
        parse("[policy]\n[[policy.routes]]\nname = \"public\"\npaths = [\"/p\"]\nanonymous = true")
            .unwrap(),
    );
    shared.replace(Arc::clone(&next));
    assert!(Arc::ptr_eq(&shared.load(), &next));
    assert_eq!(
        counts(&next),
        [
            (Some("public".to_owned()), PolicyReason::Anonymous, 1),
            (None, PolicyReason::NoRoute, 1),
        ]
    );
    // Storing the same policy again does not count twice.
    shared.replace(Arc::clone(&next));
    assert_eq!(next.counts().count(), 2);
    assert_eq!(next.counts().map(|c| c.2).sum::<u64>(), 2);
}

#[test]
fn deep_paths_match_past_the_stack_buffer() {
    let p = parse(
        "[policy]\ndefault = \"deny\"\n[[policy.routes]]\nname = \"deep\"\npaths = [\"/a/**/z\"]",
    )
    .unwrap();
    let deep = format!("/a{}/z", "/x".repeat(100));
    let c = claims(json!({}));
    assert_eq!(
        p.evaluate("GET", &deep, None, None, Some(&c)).reason,
        PolicyReason::Ok
    );
    let deep = format!("/a{}/y", "/x".repeat(100));
    assert_eq!(
        p.evaluate("GET", &deep, None, None, Some(&c)).reason,
        PolicyReason::NoRoute
    );
}

/// The first-segment index keeps file order between literal and wildcard routes.
#[test]
fn first_match_wins_in_file_order_across_the_index() {
    let p = parse(
        "[policy]\ndefault = \"deny\"\n\
         [[policy.routes]]\nname = \"r0\"\npaths = [\"/**\"]\nmethods = [\"POST\"]\n\
         [[policy.routes]]\nname = \"r1\"\npaths = [\"/b/**\", \"/a/**\"]\nmethods = [\"GET\"]\n\
         [[policy.routes]]\nname = \"r2\"\npaths = [\"/*/x\"]\n\
         [[policy.routes]]\nname = \"r3\"\npaths = [\"/a/x\", \"/a/y\"]\n",
    )
    .unwrap();
    let c = claims(json!({}));
    for (method, uri, want) in [
        ("POST", "/a/x", Some("r0")),
        ("GET", "/a/x", Some("r1")),
        ("GET", "/b", Some("r1")),
        ("PUT", "/a/x", Some("r2")),
        ("PUT", "/c/x", Some("r2")),
        ("PUT", "/a/y", Some("r3")),
        ("PUT", "/c/y", None),
    ] {
        let v = p.evaluate(method, uri, None, None, Some(&c));
        assert_eq!(v.route.as_deref(), want, "{method} {uri}");
    }
}

#[test]
fn the_example_documents_the_policy_keys() {
    let example = include_str!("../../../../examples/keygate.toml");
    for key in [
        "[policy]",
        "[[policy.routes]]",
        "default =",
        "name =",
        "paths =",
        "methods =",
        "hosts =",
        "anonymous =",
        "providers =",
        "scopes =",
        "any_scopes =",
        "claims =",
        "claim =",
        "equals =",
        "one_of =",
        "contains =",
        "contains_any =",
        "exists =",
        "absent =",
        "token_cookie =",
        "resource_metadata =",
    ] {
        assert!(example.contains(key), "examples/keygate.toml lacks {key}");
    }
}

#[test]
fn no_claim_can_pose_as_the_route_header() {
    let e = Config::parse(
        &format!("{PROVIDERS}\n[providers.claims_to_headers]\nroute = \"X-Auth-Route\"\n"),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(e.key, "providers[1].claims_to_headers.route", "{e}");
}

#[test]
fn only_the_claims_a_route_reads_are_parsed() {
    let p = parse(POLICY).unwrap();
    let json = r#"{"sub":"alice","scope":"write","realm_access":{"roles":["admin"]},"big":[1,2,3],"email_verified":true}"#;
    // orders-write reads scope/scp and realm_access.
    let c = p.claims_for(1, json);
    let mut keys: Vec<&str> = c.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["realm_access", "scope"]);
    assert_eq!(p.authorize(1, Some(("acme", "idp")), &c), Ok(()));
    // The anonymous route reads nothing.
    assert!(p.claims_for(0, json).is_empty());
    // A member name with an escape is still found (the set is parsed whole).
    let escaped = r#"{"sc\u006fpe":"write","realm_access":{"roles":["admin"]}}"#;
    let c = p.claims_for(1, escaped);
    assert_eq!(c["scope"], json!("write"));
    assert_eq!(p.authorize(1, Some(("acme", "idp")), &c), Ok(()));
    // A pointer's first step is unescaped: `/a~1b/c` reads the claim "a/b".
    let p = parse(
        "[policy]\n[[policy.routes]]\nname = \"r\"\npaths = [\"/**\"]\n\
         claims = [{ claim = \"/a~1b/c\", equals = 1 }]",
    )
    .unwrap();
    let c = p.claims_for(0, r#"{"a/b":{"c":1},"x":2}"#);
    assert_eq!(c.keys().collect::<Vec<_>>(), ["a/b"]);
    assert_eq!(p.authorize(0, None, &c), Ok(()));
}
