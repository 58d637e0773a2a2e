//! The policy behind a real nginx: `auth_request` to `/verify` with `X-Original-Method` and
//! `X-Original-URI`, exactly as the README's policy section shows, and what nginx's client
//! sees for allow, deny, `insufficient_scope`, `no_route` and `invalid_path`.

use std::path::Path;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::nginx::{Nginx, http_config};
use crate::policy::{assert_through_proxy, setup};
use crate::support::header;
use serde_json::Value;

/// The README's nginx configuration for a policy.
fn config(dir: &Path, port: u16, keygate: &str, upstream: u16) -> String {
    http_config(
        dir,
        &format!(
            r#"
    # keygate's challenge, on a 403 only: nginx passes a 401's on by itself.
    map $status $keygate_challenge {{
        403     $auth_challenge;
        default "";
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_keygate;
            auth_request_set $auth_subject $upstream_http_x_auth_subject;
            auth_request_set $auth_route $upstream_http_x_auth_route;
            auth_request_set $auth_reason $upstream_http_x_auth_reason;
            auth_request_set $auth_challenge $upstream_http_www_authenticate;
            proxy_set_header X-Auth-Subject $auth_subject;
            add_header X-Auth-Route $auth_route always;
            add_header X-Auth-Reason $auth_reason always;
            add_header WWW-Authenticate $keygate_challenge always;
            proxy_pass http://127.0.0.1:{upstream};
        }}
        location = /_keygate {{
            internal;
            proxy_pass {keygate}/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-Host $host;
            # A client must not name the request itself.
            proxy_set_header X-Forwarded-Method "";
            proxy_set_header X-Forwarded-Uri "";
        }}
    }}"#
        ),
    )
}

/// `method path` sent to nginx exactly as written (a client library would resolve dot
/// segments itself): the status line's code and the lower-cased answer.
async fn raw(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: app.test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let code = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out}"));
    (code, out.to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_enforces_the_policy() {
    let setup = setup("nginx-policy").await;
    let (keygate, upstream) = (setup.server.verify.clone(), setup.upstream);
    let nginx = tokio::task::spawn_blocking(move || {
        Nginx::start_with(|dir, port| config(dir, port, &keygate, upstream))
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    assert_through_proxy(&base, &setup.writer, &setup.reader).await;
    // nginx hands the route to its client and sends the upstream no identity when there is
    // none.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("{base}/public/x")).send().await.unwrap();
    assert_eq!(header(&resp, "x-auth-route"), Some("public"));
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["subject"], Value::Null);

    // Raw paths: an encoded slash is refused; dot segments (encoded or not) are resolved,
    // so "/public/.." reaches the write route, never the anonymous one.
    let (code, text) = raw(nginx.port, "GET", "/public/..%2fapi/orders/7", None).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("x-auth-reason: invalid_path"), "{text}");
    for path in ["/public/%2e%2e/api/orders/7", "/public/../api/orders/7"] {
        let (code, text) = raw(nginx.port, "POST", path, Some(&setup.reader)).await;
        assert_eq!(code, 403, "{path}: {text}");
        assert!(
            text.contains("x-auth-route: orders-write"),
            "{path}: {text}"
        );
        assert!(
            text.contains("x-auth-reason: insufficient_scope"),
            "{path}: {text}"
        );
        let (code, text) = raw(nginx.port, "POST", path, None).await;
        assert_eq!(code, 401, "{path}: {text}");
    }
    drop(nginx);
    setup.server.stop().await;
}
