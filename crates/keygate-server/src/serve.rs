//! Running the sidecar: from a validated [`Config`] to bound listeners, a verifier and three
//! routers, until shutdown.
//!
//! [`Server::bind`] binds every listener (port 0 works: tests read the addresses back), starts
//! the development issuer when configured and builds the verifier. [`Server::run`] serves
//! until its shutdown future resolves, then stops accepting, gives in-flight requests
//! `shutdown_grace` to finish, stops the background tasks and drops the verifier, which stops
//! its refreshers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::HeaderName;
use keygate::{ProviderId, Revocation, Revocations, Verifier};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, ApiError, RevocationRequest};
use crate::apikey::KeyRing;
use crate::bus::{Bus, Event, LocalBus};
use crate::config::{self, Config, ProviderSpec};
use crate::dev_issuer::DevIssuer;
use crate::forward;
use crate::metrics::Metrics;

/// How often expired revocations are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What every handler shares.
#[non_exhaustive]
pub struct Shared {
    /// The verifier (its clones share caches and refreshers).
    pub verifier: Verifier,
    /// The revocations the verifier consults.
    pub revocations: Revocations,
    /// The invalidation bus.
    pub bus: Arc<dyn Bus>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Admin API keys.
    pub keys: KeyRing,
    /// `claims_to_headers` per provider.
    pub claim_headers: HashMap<ProviderId, Vec<(String, HeaderName)>>,
    /// Every configured tenant.
    pub tenants: HashSet<String>,
    /// The request header that narrows `/verify` to a tenant.
    pub tenant_header: HeaderName,
    /// How long a subject revocation is kept after its `before` time by default.
    pub max_token_lifetime: Duration,
    /// This replica's name on the bus.
    pub node_id: Arc<str>,
}

impl Shared {
    /// Applies an invalidation to this replica. A refresh runs in the background.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::Flush(id) => {
                // An unknown provider is a no-op here: the admin API checks before publishing,
                // and a replica with another config may not have it.
                let _ = self.verifier.flush(id);
            }
            Event::Refresh(id) => {
                let verifier = self.verifier.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let _ = verifier.refresh(&id).await;
                });
            }
            Event::Revoke(r) => self.add_revocation(r),
        }
    }

    fn add_revocation(&self, r: &Revocation) {
        match r {
            Revocation::Jti { jti, exp } => self.revocations.revoke_jti(jti, *exp),
            Revocation::Subject {
                tenant,
                sub,
                before,
                until,
            } => self
                .revocations
                .revoke_subject(tenant, sub, *before, *until),
            Revocation::Kid {
                tenant,
                provider,
                kid,
                until,
            } => self
                .revocations
                .revoke_kid(&ProviderId::new(tenant, provider), kid, *until),
            other => tracing::warn!(?other, "unknown revocation kind ignored"),
        }
    }

    /// Checks a revocation request against the configuration and fills in defaults.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for an unknown tenant or provider.
    pub fn resolve_revocation(&self, request: &RevocationRequest) -> Result<Revocation, ApiError> {
        Ok(match request {
            RevocationRequest::Jti(r) => Revocation::Jti {
                jti: r.jti.clone(),
                exp: r.exp,
            },
            RevocationRequest::Subject(r) => {
                if !self.tenants.contains(&r.tenant) {
                    return Err(ApiError::NotFound(format!("no tenant {}", r.tenant)));
                }
                let lifetime = i64::try_from(self.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
                Revocation::Subject {
                    tenant: r.tenant.clone(),
                    sub: r.sub.clone(),
                    before: r.before,
                    until: r.until.unwrap_or_else(|| r.before.saturating_add(lifetime)),
                }
            }
            RevocationRequest::Kid(r) => {
                let id = ProviderId::new(&r.tenant, &r.provider);
                if !self.verifier.providers().any(|p| *p == id) {
                    return Err(ApiError::NotFound(format!(
                        "no provider {}/{}",
                        r.tenant, r.provider
                    )));
                }
                Revocation::Kid {
                    tenant: r.tenant.clone(),
                    provider: r.provider.clone(),
                    kid: r.kid.clone(),
                    until: r.until,
                }
            }
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The configuration was refused while building the verifier.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The development issuer could not start.
    #[error("development issuer: {0}")]
    DevIssuer(String),
    /// Serving failed.
    #[error("serving {what}: {source}")]
    Serve {
        /// Which listener.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// The listeners of a server.
#[derive(Debug)]
pub struct Listeners {
    /// `/verify`.
    pub verify: TcpListener,
    /// Admin API and metrics.
    pub admin: TcpListener,
    /// The development issuer, when configured.
    pub dev_issuer: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`.
    ///
    /// # Errors
    /// [`ServeError::Bind`] naming the listener and address.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { what, addr, source })
        }
        Ok(Listeners {
            verify: bind("server.listen", config.server.listen).await?,
            admin: bind("server.admin_listen", config.server.admin_listen).await?,
            dev_issuer: match &config.dev_issuer {
                Some(d) => Some(bind("dev_issuer.listen", d.listen).await?),
                None => None,
            },
        })
    }
}

/// A bound server, ready to run.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Listeners,
    dev_issuer: Option<DevIssuer>,
    grace: Duration,
}

impl Server {
    /// Binds the listeners of `config` and builds everything.
    ///
    /// # Errors
    /// A [`ServeError`] if a listener cannot be bound or the configuration is refused.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        let listeners = Listeners::bind(&config).await?;
        Server::with_listeners(config, listeners)
    }

    /// Builds a server on listeners bound by the caller.
    ///
    /// # Errors
    /// A [`ServeError`] if the configuration is refused.
    pub fn with_listeners(config: Config, listeners: Listeners) -> Result<Server, ServeError> {
        let mut providers: Vec<ProviderSpec> = Vec::new();
        let mut dev_issuer = None;
        if let (Some(dev), Some(listener)) = (&config.dev_issuer, &listeners.dev_issuer) {
            let addr = local_addr(listener, "dev_issuer.listen")?;
            let issuer_url = format!("http://{addr}");
            let issuer = DevIssuer::new(&issuer_url, &dev.audience)
                .map_err(|e| ServeError::DevIssuer(e.to_string()))?;
            providers.push(config::dev_provider(dev, &issuer_url)?);
            dev_issuer = Some(issuer);
        }
        providers.extend(config.providers.iter().cloned());

        let revocations = Revocations::new();
        let mut builder = Verifier::builder()
            .revocations(Arc::new(revocations.clone()))
            .max_token_bytes(config.server.max_token_bytes);
        if config.server.token_cache > 0 {
            builder = builder.token_cache(config.server.token_cache);
        }
        let mut claim_headers = HashMap::new();
        let mut tenants = HashSet::new();
        for spec in providers {
            let id = ProviderId::new(spec.config.tenant(), spec.config.name());
            tenants.insert(id.tenant().to_owned());
            claim_headers.insert(id, spec.claims_to_headers);
            builder = builder.provider(spec.config);
        }
        let verifier = builder.build().map_err(|e| config::ConfigError {
            key: e.field.to_owned(),
            problem: e.problem,
        })?;
        if config.admin.keys.is_empty() {
            tracing::warn!("no [[admin.keys]] configured: every admin API call will be refused");
        }
        let node_id: Arc<str> = config.server.node_id.as_str().into();
        let shared = Arc::new(Shared {
            verifier,
            revocations,
            bus: Arc::new(LocalBus::new(Arc::clone(&node_id))),
            metrics: Metrics::new(),
            keys: KeyRing::new(config.admin.keys.clone()),
            claim_headers,
            tenants,
            tenant_header: config.server.tenant_header.clone(),
            max_token_lifetime: config.revocations.max_token_lifetime,
            node_id,
        });
        Ok(Server {
            shared,
            listeners,
            dev_issuer,
            grace: config.server.shutdown_grace,
        })
    }

    /// The address of `/verify`.
    ///
    /// # Errors
    /// If the socket cannot report its address.
    pub fn verify_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.verify.local_addr()
    }

    /// The address of the admin API.
    ///
    /// # Errors
    /// If the socket cannot report its address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.listeners.admin.local_addr()
    }

    /// The development issuer, when configured.
    #[must_use]
    pub fn dev_issuer(&self) -> Option<&DevIssuer> {
        self.dev_issuer.as_ref()
    }

    /// What the handlers share.
    #[must_use]
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` resolves, then drains for at most `shutdown_grace`.
    ///
    /// # Errors
    /// [`ServeError::Serve`] if a listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            shared,
            listeners,
            dev_issuer,
            grace,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let mut servers: JoinSet<Result<(), ServeError>> = JoinSet::new();
        if let (Some(issuer), Some(listener)) = (dev_issuer, listeners.dev_issuer) {
            let router = issuer.router();
            let done = stopped();
            servers.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(done)
                    .await
                    .map_err(|source| ServeError::Serve {
                        what: "dev_issuer.listen",
                        source,
                    })
            });
        }
        let done = stopped();
        let router = forward::router(Arc::clone(&shared));
        servers.spawn(async move {
            axum::serve(listeners.verify, router)
                .with_graceful_shutdown(done)
                .await
                .map_err(|source| ServeError::Serve {
                    what: "server.listen",
                    source,
                })
        });
        let done = stopped();
        let router = admin::router(Arc::clone(&shared));
        servers.spawn(async move {
            axum::serve(
                listeners.admin,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(done)
            .await
            .map_err(|source| ServeError::Serve {
                what: "server.admin_listen",
                source,
            })
        });

        let mut background = JoinSet::new();
        background.spawn(warm_up(Arc::clone(&shared)));
        background.spawn(apply_remote_events(Arc::clone(&shared)));
        background.spawn(prune_revocations(Arc::clone(&shared)));
        tracing::info!("keygate serving");

        let outcome = tokio::select! {
            () = shutdown => None,
            Some(joined) = servers.join_next() => Some(joined),
        };
        let _ = stop_tx.send(true);
        tracing::info!(
            grace_seconds = grace.as_secs_f64(),
            "shutting down: draining in-flight requests"
        );
        let drained = tokio::time::timeout(grace, async {
            let mut first_error = None;
            while let Some(joined) = servers.join_next().await {
                if let Ok(Err(e)) = joined {
                    first_error.get_or_insert(e);
                }
            }
            first_error
        })
        .await;
        background.shutdown().await;
        let result = match (outcome, drained) {
            (Some(Ok(Err(e))), _) | (_, Ok(Some(e))) => Err(e),
            (_, Err(_)) => {
                tracing::warn!("grace period over: closing the connections still open");
                servers.shutdown().await;
                Ok(())
            }
            _ => Ok(()),
        };
        // The last handle to the verifier goes here, which stops its background refreshers.
        drop(shared);
        tracing::info!("keygate stopped");
        result
    }
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind {
        what,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// Fetches every provider's keys once at start; failures show in `/readyz` and status.
async fn warm_up(shared: Arc<Shared>) {
    shared.verifier.warm_up().await;
    for s in shared.verifier.status() {
        if s.state.has_usable_keys() {
            tracing::info!(provider = %s.id, kids = s.kids.len(), "keys loaded");
        } else if let Some(e) = &s.last_error {
            tracing::warn!(provider = %s.id, reason = e.reason, error = %e.message, "keys not loaded yet");
        }
    }
}

/// Applies events other replicas published. This replica's own events were applied when the
/// admin API made them.
async fn apply_remote_events(shared: Arc<Shared>) {
    let mut rx = shared.bus.subscribe();
    loop {
        match rx.recv().await {
            Ok(envelope) if envelope.origin != shared.node_id => {
                tracing::info!(seq = envelope.seq, origin = %envelope.origin, kind = envelope.event.kind(), "applying bus event");
                shared.apply(&envelope.event);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    missed = n,
                    "bus subscriber fell behind; flushing every provider"
                );
                for id in shared.verifier.providers() {
                    let _ = shared.verifier.flush(id);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Drops revocations once no token they cover can still be valid.
async fn prune_revocations(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let now = shared.verifier.clock().now();
        shared.revocations.prune(now);
        tracing::debug!(
            now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            left = shared.revocations.len(),
            "revocations pruned"
        );
    }
}
