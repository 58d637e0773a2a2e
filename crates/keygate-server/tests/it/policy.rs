//! `[policy]` through the sidecar: routes decided on `/verify` from the proxy's headers or
//! the path after `/verify`, the answers (`X-Auth-Route`, 401/403 and their reasons, the
//! scope challenge), the token cookie, `resource_metadata`, the decision metrics, and the
//! `keygate policy check` dry run.

use keygate_test_support::{StubIdp, TestKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{keygate, temp_file};
use crate::support::{AUD, TestServer, admin_keys_toml, get_text, header, idp_with, token_for};

pub(crate) const METADATA: &str = "https://api.example.com/.well-known/oauth-protected-resource";

/// The policy the tests (and the nginx test) run under.
pub(crate) const POLICY: &str = r#"
[policy]
default = "deny"

[[policy.routes]]
name = "public"
paths = ["/public/**"]
methods = ["GET", "HEAD"]
anonymous = true

[[policy.routes]]
name = "orders-write"
paths = ["/api/orders/**"]
methods = ["POST", "PUT", "DELETE"]
providers = ["acme/main"]
scopes = ["write"]
claims = [{ claim = "/realm_access/roles", contains = "admin" }]

[[policy.routes]]
name = "orders-read"
paths = ["/api/orders/**"]
methods = ["GET"]
any_scopes = ["read", "write"]

[[policy.routes]]
name = "admin"
paths = ["/admin/**"]
hosts = ["admin.example.com"]
claims = [{ claim = "groups", contains = "ops" }]
"#;

/// A config trusting `idp` as `acme/main`, with `POLICY`, the token cookie and the metadata
/// URL.
pub(crate) fn policy_config(idp: &StubIdp) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         token_cookie = \"kg_session\"\nresource_metadata = \"{METADATA}\"\n\
         [[providers]]\ntenant = \"acme\"\nname = \"main\"\nissuer = \"{iss}\"\njwks_uri = \"{jwks}\"\n\
         audiences = [\"{AUD}\"]\nallow_insecure_http = true\n{keys}\n{POLICY}",
        iss = idp.issuer(),
        jwks = idp.jwks_url(),
        keys = admin_keys_toml(),
    )
}

/// A token of `idp` with `extra` claims merged in.
pub(crate) fn token(idp: &StubIdp, key: &TestKey, extra: &Value) -> String {
    token_for(idp, key, |c| {
        c.insert("sub".into(), json!("alice"));
        for (k, v) in extra.as_object().unwrap() {
            c.insert(k.clone(), v.clone());
        }
    })
}

/// A server under [`POLICY`] trusting a fresh IdP, an upstream echoing identity headers, and
/// two tokens of subject `alice`: `writer` may write orders, `reader` only read them.
pub(crate) struct Setup {
    pub(crate) server: TestServer,
    pub(crate) upstream: u16,
    pub(crate) writer: String,
    pub(crate) reader: String,
    /// Serves the keys for as long as the server needs them.
    pub(crate) _idp: StubIdp,
}

/// [`Setup`] with a key named `kid`.
pub(crate) async fn setup(kid: &'static str) -> Setup {
    let key = TestKey::shared_p256(kid);
    let idp = idp_with(&[key]).await;
    let server = TestServer::start(&policy_config(&idp)).await;
    let upstream = crate::nginx::start_upstream().await;
    let writer = token(
        &idp,
        key,
        &json!({"scope": "write", "realm_access": {"roles": ["admin"]}}),
    );
    let reader = token(&idp, key, &json!({"scope": "read"}));
    Setup {
        server,
        upstream,
        writer,
        reader,
        _idp: idp,
    }
}

/// `method url` with `token` as bearer, if any.
pub(crate) async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// What a client of the proxy at `base` in front of a [`Setup`] sees, whichever proxy it is
/// and however it tells keygate the method and path: allowed anonymously and with a token
/// (identity passed on; a 200's own headers stay with the proxy), `insufficient_scope` with
/// its challenge, 401 with the metadata URL, `no_route`, and a client's own `X-Forwarded-*`
/// overruled.
pub(crate) async fn assert_through_proxy(base: &str, writer: &str, reader: &str) {
    use reqwest::Method;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let at = |method, path: &str, token| send(&client, method, format!("{base}{path}"), token);

    // Allowed: anonymous (no identity passed on) and with a token (identity passed on).
    let resp = at(Method::GET, "/public/app.js", None).await;
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    // No identity from a token (how an absent header reaches the upstream is the proxy's
    // business: nginx leaves it out, Debian's Caddy 2.6 sends its unexpanded placeholder).
    assert_ne!(body["subject"], "alice");
    let resp = at(Method::POST, "/api/orders/7", Some(writer)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["subject"], "alice");

    // The method comes through X-Original-Method: a read token may GET but not POST.
    let resp = at(Method::GET, "/api/orders/7", Some(reader)).await;
    assert_eq!(resp.status(), 200);
    let resp = at(Method::POST, "/api/orders/7", Some(reader)).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "x-auth-reason"), Some("insufficient_scope"));
    assert_eq!(header(&resp, "x-auth-route"), Some("orders-write"));
    assert_eq!(
        header(&resp, "www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"write\"")
    );

    // No token on a route that needs one: 401, the metadata URL in the challenge.
    let resp = at(Method::POST, "/api/orders/7", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        header(&resp, "www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{METADATA}\"").as_str())
    );

    // No route: 403 no_route, token or not.
    let resp = at(Method::GET, "/elsewhere", Some(writer)).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "x-auth-reason"), Some("no_route"));
    assert_eq!(header(&resp, "x-auth-route"), None);

    // A client naming the request itself is overruled by the proxy's own headers (nginx
    // replaces or clears them all: 401 on the real route) or contradicts them (Caddy passes
    // on a client's X-Original-URI: 403 ambiguous_request); never the anonymous route.
    let resp = client
        .post(format!("{base}/api/orders/7"))
        .header("X-Forwarded-Uri", "/public/x")
        .header("X-Forwarded-Method", "GET")
        .header("X-Original-URI", "/public/x")
        .send()
        .await
        .unwrap();
    let answer = (resp.status().as_u16(), header(&resp, "x-auth-reason"));
    assert!(
        matches!(
            answer,
            (401, Some("missing_token")) | (403, Some("ambiguous_request"))
        ),
        "{answer:?}"
    );
}

/// Status, `X-Auth-Route`, `X-Auth-Reason`, `WWW-Authenticate` and `X-Auth-Subject`.
type Answer = (
    u16,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn ask(server: &TestServer, token: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let resp = server.verify("", token, headers).await;
    let h = |n: &str| header(&resp, n).map(str::to_owned);
    (
        resp.status().as_u16(),
        h("x-auth-route"),
        h("x-auth-reason"),
        h("www-authenticate"),
        h("x-auth-subject"),
    )
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[tokio::test]
async fn the_policy_decides_on_verify() {
    let key = TestKey::shared_p256("policy-a");
    let idp = idp_with(&[key]).await;
    let server = TestServer::start(&policy_config(&idp)).await;
    let writer = token(
        &idp,
        key,
        &json!({"scope": "read write", "realm_access": {"roles": ["admin"]}, "groups": ["ops"]}),
    );
    let reader = token(&idp, key, &json!({"scope": "read"}));
    let no_role = token(&idp, key, &json!({"scope": "write"}));
    let at = |method: &'static str, uri: &'static str| {
        vec![("x-forwarded-method", method), ("x-forwarded-uri", uri)]
    };
    let challenge_401 = format!("Bearer resource_metadata=\"{METADATA}\"");

    // Anonymous: 200 without identity, whatever token comes along (a bad one included).
    for t in [None, Some("not.a.token"), Some(writer.as_str())] {
        assert_eq!(
            ask(&server, t, &at("GET", "/public/app.css?v=1")).await,
            (200, s("public"), s("anonymous"), None, None),
            "{t:?}"
        );
    }
    // A route that needs a token, without one: 401 as before, with the metadata URL.
    assert_eq!(
        ask(&server, None, &at("POST", "/api/orders/1")).await,
        (
            401,
            s("orders-write"),
            s("missing_token"),
            Some(challenge_401.clone()),
            None
        )
    );
    // A refused token: 401 invalid_token, the metadata URL appended.
    let (status, route, reason, challenge, _) = ask(
        &server,
        Some("eyJhbGciOiJFUzI1NiJ9.e30.c2ln"),
        &at("POST", "/api/orders/1"),
    )
    .await;
    assert_eq!((status, route.as_deref()), (401, Some("orders-write")));
    assert_ne!(reason.as_deref(), Some("ok"));
    let challenge = challenge.unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert!(
        challenge.ends_with(&format!(", resource_metadata=\"{METADATA}\"")),
        "{challenge}"
    );
    // Everything met: 200 with identity and the route.
    assert_eq!(
        ask(&server, Some(&writer), &at("POST", "/api/orders/1")).await,
        (200, s("orders-write"), s("ok"), None, s("alice"))
    );
    // Scope missing: 403 and the RFC 6750 challenge naming the scope.
    assert_eq!(
        ask(&server, Some(&reader), &at("POST", "/api/orders/1")).await,
        (
            403,
            s("orders-write"),
            s("insufficient_scope"),
            s("Bearer error=\"insufficient_scope\", scope=\"write\""),
            None
        )
    );
    // A claim unmet: 403 with its own reason.
    assert_eq!(
        ask(&server, Some(&no_role), &at("DELETE", "/api/orders/1")).await,
        (403, s("orders-write"), s("claim_unmet"), None, None)
    );
    // The read route takes either scope.
    assert_eq!(
        ask(&server, Some(&reader), &at("GET", "/api/orders"))
            .await
            .0,
        200
    );
    // The host decides the admin route: X-Forwarded-Host, not keygate's own Host.
    let mut admin = at("GET", "/admin/users");
    admin.push(("x-forwarded-host", "admin.example.com"));
    assert_eq!(
        ask(&server, Some(&writer), &admin).await,
        (200, s("admin"), s("ok"), None, s("alice"))
    );
    assert_eq!(
        ask(&server, Some(&reader), &admin).await,
        (403, s("admin"), s("claim_unmet"), None, None)
    );
    // No route: 403 no_route, no route header, even with a good token.
    for (t, h) in [
        (Some(writer.as_str()), at("GET", "/admin/users")),
        (None, at("GET", "/elsewhere")),
        (Some(writer.as_str()), at("PATCH", "/api/orders/1")),
    ] {
        assert_eq!(
            ask(&server, t, &h).await,
            (403, None, s("no_route"), None, None),
            "{h:?}"
        );
    }
    // Paths that cannot be normalized: 403 invalid_path.
    for uri in [
        "/public/..%2fadmin/users",
        "/public/..;/admin",
        "/public/%252e%252e/admin",
    ] {
        assert_eq!(
            ask(&server, None, &[("x-original-uri", uri)]).await,
            (403, None, s("invalid_path"), None, None),
            "{uri}"
        );
    }
    // Dot segments resolve before matching: this is the admin route, not the public one.
    let mut dotted = vec![
        ("x-original-method", "GET"),
        ("x-original-uri", "/public/%2e%2e/admin/x"),
    ];
    assert_eq!(ask(&server, None, &dotted).await.0, 403);
    dotted.push(("x-forwarded-host", "admin.example.com"));
    assert_eq!(
        ask(&server, None, &dotted).await,
        (
            401,
            s("admin"),
            s("missing_token"),
            Some(challenge_401.clone()),
            None
        )
    );
    // A client's own X-Forwarded-Uri disagreeing with the proxy's X-Original-URI.
    assert_eq!(
        ask(
            &server,
            None,
            &[
                ("x-forwarded-uri", "/public/x"),
                ("x-original-uri", "/admin/x")
            ]
        )
        .await,
        (403, None, s("ambiguous_request"), None, None)
    );
    // The token cookie, when there is no Authorization header.
    let cookie = format!("theme=dark; kg_session={writer}");
    let mut with_cookie = at("POST", "/api/orders/1");
    with_cookie.push(("cookie", &cookie));
    assert_eq!(
        ask(&server, None, &with_cookie).await,
        (200, s("orders-write"), s("ok"), None, s("alice"))
    );
    // Authorization wins over the cookie.
    assert_eq!(
        ask(&server, Some(&reader), &with_cookie).await.2,
        s("insufficient_scope")
    );

    // The path after /verify, sent raw (an HTTP client would resolve the dots itself).
    let raw = raw_get(
        &server.verify,
        "/verify/public/%2e%2e/api/orders/1",
        &writer,
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("x-auth-route: orders-read"), "{raw}");
    let raw = raw_get(&server.verify, "/verify/public/x?next=/api/orders", "").await;
    assert!(raw.contains("x-auth-route: public"), "{raw}");

    // Decisions are counted per route and reason.
    let metrics = get_text(&server.client, format!("{}/metrics", server.admin)).await;
    for line in [
        r#"keygate_policy_decisions_total{route="public",decision="allow",reason="anonymous"} 4"#,
        r#"keygate_policy_decisions_total{route="orders-write",decision="deny",reason="insufficient_scope"} 2"#,
        r#"keygate_policy_decisions_total{route="",decision="deny",reason="no_route"} 4"#,
        r#"keygate_policy_decisions_total{route="",decision="deny",reason="invalid_path"} 3"#,
        r#"keygate_policy_decisions_total{route="admin",decision="allow",reason="ok"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    server.stop().await;
}

/// `GET path` over a plain TCP connection, exactly as written; the whole answer as text.
async fn raw_get(base: &str, path: &str, token: &str) -> String {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out.to_ascii_lowercase().replacen("http/1.1", "HTTP/1.1", 1)
}

#[tokio::test]
async fn without_a_policy_verify_is_unchanged() {
    let key = TestKey::shared_p256("policy-b");
    let idp = idp_with(&[key]).await;
    let server = TestServer::start(&crate::support::config_for(&idp, "")).await;
    let t = token(&idp, key, &json!({}));
    let resp = server
        .verify(
            "/anything/at/all",
            Some(&t),
            &[("x-original-uri", "/%2f..")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-route"), None);
    assert_eq!(header(&resp, "x-auth-reason"), Some("ok"));
    let resp = server
        .verify("", None, &[("cookie", &format!("kg_session={t}"))])
        .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "www-authenticate"), Some("Bearer"));
    let metrics = get_text(&server.client, format!("{}/metrics", server.admin)).await;
    assert!(
        !metrics.contains("keygate_policy_decisions_total"),
        "{metrics}"
    );
    server.stop().await;
}

#[test]
fn policy_check_is_a_dry_run() {
    let config = temp_file(
        "policy.toml",
        format!(
            "[[providers]]\ntenant = \"acme\"\nname = \"main\"\nissuer = \"https://idp.acme.test\"\n\
             jwks_uri = \"https://idp.acme.test/jwks\"\naudiences = [\"x\"]\n\
             [[providers]]\ntenant = \"other\"\nname = \"main\"\nissuer = \"https://idp.other.test\"\n\
             jwks_uri = \"https://idp.other.test/jwks\"\naudiences = [\"x\"]\n{POLICY}"
        ),
    );
    let config = config.to_str().unwrap();
    let writer =
        r#"{"iss":"https://idp.acme.test","scope":"write","realm_access":{"roles":["admin"]}}"#;
    // `keygate policy check --config FILE ...`, with `config` or another file.
    let check = |file: &str, extra: &[&str], stdin: Option<&[u8]>| {
        let mut args = vec!["policy", "check", "--config", file];
        args.extend_from_slice(extra);
        keygate(&args, stdin)
    };
    let run = |extra: &[&str], stdin: Option<&[u8]>| check(config, extra, stdin);
    let out = run(
        &[
            "--method",
            "POST",
            "--uri",
            "/api/orders/7?x=1",
            "--claims",
            writer,
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.line()
            .starts_with(r#"{"decision":"allow","route":"orders-write","reason":"ok","#),
        "{out:?}"
    );
    assert_eq!(
        Value::Object(out.verdict()),
        json!({"decision": "allow", "route": "orders-write", "reason": "ok", "status": 200,
               "path": "/api/orders/7", "provider": "acme/main"})
    );
    // Same claims, other provider (named, or found from iss): denied.
    let out = run(
        &[
            "--method",
            "POST",
            "--uri",
            "/api/orders/7",
            "--claims",
            writer,
            "--provider",
            "other/main",
        ],
        None,
    );
    assert_eq!(
        (out.code, out.verdict()["reason"].clone()),
        (1, json!("provider_not_allowed"))
    );
    let claims_file = temp_file(
        "claims.json",
        r#"{"iss": "https://idp.acme.test", "scope": "read"}"#,
    );
    let out = run(
        &[
            "--method",
            "POST",
            "--uri",
            "/api/orders/7",
            "--claims-file",
            claims_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.verdict()["reason"], "insufficient_scope");
    assert_eq!(out.verdict()["route"], "orders-write");
    let out = run(
        &[
            "--method",
            "GET",
            "--uri",
            "/public/%2e%2e/admin",
            "--claims-file",
            "-",
        ],
        Some(b"{}"),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        Value::Object(out.verdict()),
        json!({"decision": "deny", "route": null, "reason": "no_route", "status": 403,
               "path": "/admin", "provider": null})
    );
    for (uri, code, reason) in [("/public/a", 0, "anonymous"), ("/a%2fb", 1, "invalid_path")] {
        let out = run(&["--method", "GET", "--uri", uri, "--claims", "{}"], None);
        assert_eq!(
            (out.code, out.verdict()["reason"].clone()),
            (code, json!(reason))
        );
    }

    // The development issuer's provider can be named too.
    let dev = temp_file(
        "dev.toml",
        "[dev_issuer]\n[policy]\n[[policy.routes]]\nname = \"d\"\npaths = [\"/**\"]\nproviders = [\"dev/dev\"]\n",
    );
    let dev = dev.to_str().unwrap();
    let out = check(
        dev,
        &[
            "--method",
            "GET",
            "--uri",
            "/",
            "--claims",
            "{}",
            "--provider",
            "dev/dev",
        ],
        None,
    );
    assert_eq!(
        (out.code, out.verdict()["route"].clone()),
        (0, json!("d")),
        "{out:?}"
    );

    // Usage and config errors: 2, nothing on stdout. Each case is `GET /` and then:
    let get_root = |rest: &[&'static str]| [&["--method", "GET", "--uri", "/"][..], rest].concat();
    for (args, stderr) in [
        (get_root(&[]), "claims"),
        (get_root(&["--claims", "[1]"]), "JSON object"),
        (
            get_root(&["--claims", "{}", "--provider", "x/y"]),
            "--provider",
        ),
    ] {
        let out = run(&args, None);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.contains(stderr),
            "{out:?}"
        );
    }
    let bad = temp_file(
        "bad.toml",
        "[[providers]]\ntenant = \"a\"\nname = \"b\"\nissuer = \"https://i.test\"\naudiences = [\"x\"]\n\
         jwks_uri = \"https://i.test/j\"\n[policy]\n[[policy.routes]]\nname = \"r\"\npaths = [\"/x/*.png\"]\n",
    );
    let out = check(
        bad.to_str().unwrap(),
        &["--method", "GET", "--uri", "/", "--claims", "{}"],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("policy.routes[0].paths"), "{out:?}");
}
