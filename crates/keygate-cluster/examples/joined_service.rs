//! An axum service that verifies tokens in process with keygate-tower and joins the fleet's
//! invalidation log on Redis, so a revocation or flush made through any `keygate serve`
//! sidecar's admin API reaches it too. `GET /me` answers with the token's subject.
//!
//! ```sh
//! redis-server --port 6379                                    # terminal 1
//! # terminal 2: a sidecar on that Redis, e.g. with this in its config file:
//! #   [cluster]  backend = "redis"  redis_url = "redis://127.0.0.1:6379"
//! #   [[cluster.keys]]  id = "k1"  secret = "<the fleet's secret, 32 bytes or more>"
//! KEYGATE_CLUSTER_SECRET='<the same secret>' \
//!   cargo run -p keygate-cluster --example joined_service    # terminal 3
//! ```
//!
//! Environment: `KEYGATE_ISSUER` (default `http://127.0.0.1:8082`, the sidecar's development
//! issuer), `KEYGATE_JWKS_URI` (default `$KEYGATE_ISSUER/jwks.json`), `KEYGATE_AUDIENCE`
//! (default `keygate-dev`), `KEYGATE_LISTEN` (default `127.0.0.1:3000`), `KEYGATE_REDIS_URL`
//! (default `redis://127.0.0.1:6379`), `KEYGATE_CLUSTER_PREFIX` (default `keygate`, the
//! sidecar's default), `KEYGATE_CLUSTER_KEY_ID` (default `k1`) and `KEYGATE_CLUSTER_SECRET`.

use std::env;
use std::error::Error;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use keygate::{HttpFetcher, ProviderConfig, Revocations, SystemClock, Verifier};
use keygate_cluster::redis::RedisSettings;
use keygate_cluster::wire::{MacKey, MacKeys};
use keygate_cluster::{BusSettings, Fleet};
use keygate_tower::{Authenticated, JwtAuthLayer};
use tokio::net::TcpListener;

async fn me(auth: Authenticated) -> String {
    format!("hello, {}\n", auth.subject().unwrap_or("nobody"))
}

/// `$name`, or `default` when unset.
fn var_or(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The fleet's log, as the sidecars' `[cluster]` section names it.
fn fleet_settings() -> Result<BusSettings, Box<dyn Error>> {
    let secret = env::var("KEYGATE_CLUSTER_SECRET")
        .map_err(|_| "set KEYGATE_CLUSTER_SECRET to the fleet's MAC secret")?;
    let key = MacKey::new(&var_or("KEYGATE_CLUSTER_KEY_ID", "k1"), secret.as_bytes());
    let settings = RedisSettings::new(
        var_or("KEYGATE_REDIS_URL", "redis://127.0.0.1:6379"),
        var_or("KEYGATE_CLUSTER_PREFIX", "keygate"),
        MacKeys::new(vec![key]).ok_or("no MAC key")?,
    );
    Ok(BusSettings::Redis(Box::new(settings)))
}

/// A verifier that consults `revocations` and shares key fetches through `fleet`.
fn verifier(fleet: &Fleet, revocations: &Revocations) -> Result<Verifier, Box<dyn Error>> {
    let issuer = var_or("KEYGATE_ISSUER", "http://127.0.0.1:8082");
    let default_jwks = format!("{}/jwks.json", issuer.trim_end_matches('/'));
    let provider = ProviderConfig::builder("dev", "keygate", &issuer)
        .jwks_uri(var_or("KEYGATE_JWKS_URI", &default_jwks))
        .audiences([var_or("KEYGATE_AUDIENCE", "keygate-dev").as_str()])
        .build()?;
    // The development issuer speaks plain HTTP on loopback.
    let fetcher = HttpFetcher::builder()
        .danger_allow_http_loopback(true)
        .build()?;
    let mut builder = Verifier::builder()
        // The log's revocations are the ones the verifier consults.
        .revocations(Arc::new(revocations.clone()))
        .provider(provider)
        .fetcher(Arc::new(fetcher))
        .token_cache(10_000);
    if let Some(exchange) = fleet.key_exchange() {
        builder = builder.key_exchange(exchange);
    }
    Ok(builder.build()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Open the log first: its key exchange goes into the verifier, so that one replica's
    // fetch of a provider's keys serves the whole fleet.
    let fleet = Fleet::open("joined-service", fleet_settings()?, Arc::new(SystemClock))?;
    let revocations = Revocations::new();
    let verifier = verifier(&fleet, &revocations)?;
    // Loads the fleet's revocations, flushes and key sets, then follows the log.
    let joined = fleet.join(verifier.clone(), revocations).await;
    println!("bus: {}", joined.member().bus().status().state.as_str());

    let app = Router::new()
        .route("/me", get(me))
        .layer(JwtAuthLayer::new(verifier));
    let listener = TcpListener::bind(var_or("KEYGATE_LISTEN", "127.0.0.1:3000")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    joined.shutdown().await;
    Ok(())
}
