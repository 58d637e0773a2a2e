//! The sidecar in process for the integration tests: a config trusting a stub IdP, admin
//! keys, a `Server` on port 0 with a client, tokens, and the HTTP calls the tests repeat.

use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use keygate::{Clock as _, SystemClock};
use keygate_server::apikey::hash_secret_with_iterations;
use keygate_server::config::Config;
use keygate_server::node::Node;
use keygate_server::serve::{ServeError, Server};
use keygate_test_support::{StubIdp, TestKey, TokenBuilder, jwks, typical_claims};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const AUD: &str = "keygate-server-it";
/// A key with every scope.
pub(crate) const ADMIN_SECRET: &str = "kg_test_admin_secret_with_all_scopes";
/// A key that may only read status.
pub(crate) const READER_SECRET: &str = "kg_test_reader_secret_status_only";
/// An application's key: may publish and follow application events, nothing else.
pub(crate) const APP_SECRET: &str = "kg_test_app_secret_events_only";

pub(crate) fn now() -> i64 {
    i64::try_from(
        SystemClock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The `[[admin.keys]]` of every test server (hashed once: PBKDF2 is slow on purpose).
pub(crate) fn admin_keys_toml() -> &'static str {
    static TOML: OnceLock<String> = OnceLock::new();
    TOML.get_or_init(|| {
        let hash = |s: &str| hash_secret_with_iterations(s.as_bytes(), 10_000).unwrap();
        format!(
            "[[admin.keys]]\nid = \"ops\"\nhash = \"{}\"\nscopes = [\"jwks:flush\", \"jwks:refresh\", \"tokens:revoke\", \"status:read\"]\n\
             [[admin.keys]]\nid = \"dashboard\"\nhash = \"{}\"\nscopes = [\"status:read\"]\n\
             [[admin.keys]]\nid = \"app\"\nhash = \"{}\"\nscopes = [\"events:publish\", \"events:read\"]\n",
            hash(ADMIN_SECRET),
            hash(READER_SECRET),
            hash(APP_SECRET)
        )
    })
}

/// A config trusting `idp` as tenant `acme`, provider `main`, on port 0.
pub(crate) fn config_for(idp: &StubIdp, extra_provider_toml: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[providers]]\ntenant = \"acme\"\nname = \"main\"\nissuer = \"{iss}\"\njwks_uri = \"{jwks}\"\n\
         audiences = [\"{AUD}\"]\nallow_insecure_http = true\n{extra_provider_toml}\n{keys}",
        iss = idp.issuer(),
        jwks = idp.jwks_url(),
        keys = admin_keys_toml(),
    )
}

/// A running server.
pub(crate) struct TestServer {
    pub(crate) verify: String,
    pub(crate) admin: String,
    pub(crate) node: Arc<Node>,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    pub(crate) async fn start(toml: &str) -> TestServer {
        let config = Config::parse(toml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        Self::start_config(config).await
    }

    pub(crate) async fn start_config(config: Config) -> TestServer {
        Self::start_server(Server::bind(config).await.unwrap())
    }

    /// A server started from the file at `path`, which reloads re-read.
    pub(crate) async fn start_file(path: &std::path::Path) -> TestServer {
        let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        let server = Server::bind(config).await.unwrap();
        server.reloader().set_file(path.to_owned());
        Self::start_server(server)
    }

    fn start_server(server: Server) -> TestServer {
        let verify = format!("http://{}", server.verify_addr().unwrap());
        let admin = format!("http://{}", server.admin_addr().unwrap());
        let node = Arc::clone(server.node());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            verify,
            admin,
            node,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `GET /verify{suffix}` with the token as bearer, if any, and extra headers.
    pub(crate) async fn verify(
        &self,
        suffix: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.get(format!("{}/verify{suffix}", self.verify));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// `GET /verify{suffix}` with `token` as bearer, narrowed to `tenant` by the default
    /// tenant header.
    pub(crate) async fn verify_in_tenant(
        &self,
        suffix: &str,
        token: &str,
        tenant: &str,
    ) -> reqwest::Response {
        self.verify(suffix, Some(token), &[("x-keygate-tenant", tenant)])
            .await
    }

    /// Asserts that `GET /verify` with `token` as bearer answers 200.
    pub(crate) async fn assert_verifies(&self, token: &str) {
        assert_eq!(self.verify("", Some(token), &[]).await.status(), 200);
    }

    /// An admin call; returns the status and the JSON body.
    pub(crate) async fn admin(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.admin);
        let mut req = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            other => panic!("{other}"),
        };
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// `GET path` with the all-scopes key.
    pub(crate) async fn get_as_ops(&self, path: &str) -> (StatusCode, Value) {
        self.admin("GET", path, Some(ADMIN_SECRET), None).await
    }

    /// `POST path` with the all-scopes key and no body.
    pub(crate) async fn post_as_ops(&self, path: &str) -> (StatusCode, Value) {
        self.admin("POST", path, Some(ADMIN_SECRET), None).await
    }

    /// `POST path` with the all-scopes key and `body` as JSON.
    pub(crate) async fn post_json_as_ops(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.admin("POST", path, Some(ADMIN_SECRET), Some(&body.to_string()))
            .await
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = self.task.take().unwrap().await.unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn idp_with(keys: &[&TestKey]) -> StubIdp {
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(keys));
    idp
}

/// A stub IdP publishing `keys`, and a server trusting it with [`config_for`].
pub(crate) async fn serve_idp(keys: &[&TestKey]) -> (StubIdp, TestServer) {
    serve_idp_with(keys, "").await
}

/// As [`serve_idp`], with `extra_provider_toml` added to the provider.
pub(crate) async fn serve_idp_with(
    keys: &[&TestKey],
    extra_provider_toml: &str,
) -> (StubIdp, TestServer) {
    let idp = idp_with(keys).await;
    let server = TestServer::start(&config_for(&idp, extra_provider_toml)).await;
    (idp, server)
}

pub(crate) fn token_for(
    idp: &StubIdp,
    key: &TestKey,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> String {
    let mut claims = typical_claims(&idp.issuer(), AUD, now());
    edit(&mut claims);
    TokenBuilder::new(key).claims(claims).sign()
}

pub(crate) fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// `GET url` with `client`.
pub(crate) async fn get(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

/// `GET url` with `client` and `token` as bearer.
pub(crate) async fn get_bearer(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: &str,
) -> reqwest::Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

/// `GET url` with `client`: the body.
pub(crate) async fn get_text(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    get(client, url).await.text().await.unwrap()
}

/// A client for loopback servers (no proxy) that gives up on a request after 10 s.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The string `field` of each object in the JSON array `array`.
pub(crate) fn field_of_each<'a>(array: &'a Value, field: &str) -> Vec<&'a str> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap())
        .collect()
}
