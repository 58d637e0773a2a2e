//! An axum service behind keygate-tower: `GET /me` for any valid token, `POST /notes` for
//! tokens with the `write` scope.
//!
//! By default it trusts the development issuer that `keygate serve` starts without a config
//! (issuer `http://127.0.0.1:8082`, keys at `/jwks.json`, audience `keygate-dev`):
//!
//! ```sh
//! cargo run -p keygate-server --bin keygate -- serve          # terminal 1
//! cargo run -p keygate-tower --example axum_service           # terminal 2
//! TOKEN=$(curl -s -X POST http://127.0.0.1:8082/mint -H 'content-type: application/json' \
//!   -d '{"sub":"alice","scope":"read write"}' | jq -r .token)
//! curl -i http://127.0.0.1:3000/me -H "authorization: Bearer $TOKEN"
//! ```
//!
//! Environment: `KEYGATE_ISSUER`, `KEYGATE_JWKS_URI` (default `$KEYGATE_ISSUER/jwks.json`),
//! `KEYGATE_AUDIENCE` and `KEYGATE_LISTEN` (default `127.0.0.1:3000`).

use std::env;
use std::error::Error;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use keygate::{HttpFetcher, ProviderConfig, Verifier};
use keygate_tower::{Authenticated, Claims, JwtAuthLayer, Rejection};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The claims this service reads; everything else in the token is ignored.
#[derive(Deserialize)]
struct User {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
}

async fn me(Claims(user): Claims<User>) -> Json<Value> {
    Json(json!({ "sub": user.sub, "scope": user.scope }))
}

async fn create_note(auth: Authenticated, text: String) -> (StatusCode, Json<Value>) {
    let note = json!({ "author": auth.subject(), "issuer": auth.issuer(), "text": text });
    (StatusCode::CREATED, Json(note))
}

/// Rejections as JSON, with the RFC 6750 status and challenge kept.
fn json_rejection(rejection: Rejection) -> Response<Body> {
    let body = json!({ "error": rejection.reason() }).to_string();
    let mut response = rejection.response(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn setting(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let issuer = setting("KEYGATE_ISSUER", "http://127.0.0.1:8082");
    let jwks_uri = setting(
        "KEYGATE_JWKS_URI",
        &format!("{}/jwks.json", issuer.trim_end_matches('/')),
    );
    let audience = setting("KEYGATE_AUDIENCE", "keygate-dev");
    let listen = setting("KEYGATE_LISTEN", "127.0.0.1:3000");

    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("dev", "keygate", &issuer)
                .jwks_uri(&jwks_uri)
                .audiences([audience.as_str()])
                .build()?,
        )
        // The development issuer speaks plain HTTP on loopback. This allows exactly that:
        // plain HTTP to any other host is still refused.
        .fetcher(Arc::new(
            HttpFetcher::builder()
                .danger_allow_http_loopback(true)
                .build()?,
        ))
        .token_cache(10_000)
        .build()?;
    // Fetch the keys now so that a wrong URL shows at start-up; failures are not fatal; the
    // first request retries.
    verifier.warm_up().await;
    for status in verifier.status() {
        let problem = status.last_error.map(|e| format!(" ({})", e.reason));
        println!(
            "issuer {}: keys {}{}",
            status.issuer,
            status.state.as_str(),
            problem.unwrap_or_default()
        );
    }

    let auth = JwtAuthLayer::new(verifier)
        .realm("keygate-example".parse()?)
        .on_rejection(json_rejection);
    let app = Router::new()
        .route("/me", get(me))
        // Same realm and rejection handler as `auth`, which runs first.
        .route(
            "/notes",
            post(create_note).route_layer(auth.scopes_layer("write".parse()?)),
        )
        .layer(auth);

    let listener = TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // Ctrl-C ends the service after in-flight requests finish.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
