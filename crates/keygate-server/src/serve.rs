//! Running the sidecar: from a validated [`Config`] to bound listeners, a verifier and three
//! routers, until shutdown.
//!
//! [`Server::bind`] binds every listener (port 0 works: tests read the addresses back), starts
//! the development issuer when configured and builds the verifier. [`Server::run`] serves
//! until its shutdown future resolves, then stops accepting, gives in-flight requests
//! `shutdown_grace` to finish, stops the background tasks and drops the verifier, which stops
//! its refreshers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use keygate::dpop::ReplayGuard;
use keygate::{Clock as _, Revocations, SystemClock, Verifier};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, Admin, Reload, RevocationPolicy};
use crate::apikey::KeyRing;
use crate::config::{self, ClusterBackend, Config, ProviderSpec};
use crate::dev_issuer::DevIssuer;
use crate::forward::{self, Forward, ForwardSettings};
use crate::node::Node;
use crate::policy::SharedPolicy;
use crate::reload::{Reloader, Targets};
use keygate_cluster::redis::RedisBus;
use keygate_cluster::{Apply, Bus, LocalBus};

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
    /// The bus could not be set up (e.g. the state file is unusable).
    #[error("{0}")]
    Bus(String),
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
    node: Arc<Node>,
    forward: Forward,
    admin: Admin,
    listeners: Listeners,
    dev_issuer: Option<DevIssuer>,
    grace: Duration,
    header_timeout: Duration,
    stop: watch::Sender<bool>,
    reloader: Arc<Reloader>,
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
        let mut dev_provider = None;
        if let (Some(dev), Some(listener)) = (&config.dev_issuer, &listeners.dev_issuer) {
            let addr = local_addr(listener, "dev_issuer.listen")?;
            let issuer_url = format!("http://{addr}");
            let issuer = DevIssuer::new(&issuer_url, &dev.audience)
                .map_err(|e| ServeError::DevIssuer(e.to_string()))?;
            let spec = config::dev_provider(dev, &issuer_url)?;
            providers.push(spec.clone());
            dev_provider = Some(spec);
            dev_issuer = Some(issuer);
        }
        providers.extend(config.providers.iter().cloned());

        let node_id: Arc<str> = config.server.node_id.as_str().into();
        // Two processes configured with one node id must still tell their events apart.
        let origin: Arc<str> = format!("{node_id}#{:08x}", fastrand::u32(..)).into();
        // With Redis, DPoP proofs are remembered fleet-wide, so a proof replayed to another
        // replica is refused there too; a single node keeps the library's in-memory store.
        let (bus, exchange, replay_guard): (Arc<dyn Bus>, _, Option<Arc<dyn ReplayGuard>>) =
            match &config.cluster.backend {
                ClusterBackend::Local { state_file: None } => {
                    (Arc::new(LocalBus::new(Arc::clone(&origin))), None, None)
                }
                ClusterBackend::Local {
                    state_file: Some(path),
                } => {
                    let bus = LocalBus::with_state_file(
                        Arc::clone(&origin),
                        path.clone(),
                        SystemClock.now(),
                    )
                    .map_err(|e| ServeError::Bus(format!("cluster.state_file: {e}")))?;
                    (Arc::new(bus), None, None)
                }
                ClusterBackend::Redis(settings) => {
                    let key = if settings.sentinel.is_some() {
                        "cluster.sentinels"
                    } else {
                        "cluster.redis_url"
                    };
                    let bus = RedisBus::new(settings.clone(), Arc::clone(&origin))
                        .map_err(|e| ServeError::Bus(format!("{key}: {e}")))?;
                    let exchange = bus.key_exchange();
                    let guard = bus
                        .replay_guard()
                        .map_err(|e| ServeError::Bus(format!("{key}: {e}")))?;
                    let guard = Arc::new(guard);
                    // Connected now rather than on the first proof, in the background.
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        let guard = Arc::clone(&guard);
                        runtime.spawn(async move { guard.connect(SystemClock.now()).await });
                    }
                    (bus, Some(exchange), Some(guard as Arc<dyn ReplayGuard>))
                }
            };

        let revocations = Revocations::new();
        let mut builder = Verifier::builder()
            .revocations(Arc::new(revocations.clone()))
            .max_token_bytes(config.server.max_token_bytes);
        if config.server.token_cache > 0 {
            builder = builder.token_cache(config.server.token_cache);
        }
        if let Some(exchange) = exchange {
            builder = builder.key_exchange(exchange);
        }
        match replay_guard {
            Some(guard) => {
                tracing::info!(
                    store = "redis",
                    "DPoP replay store: the cluster's Redis, shared by every replica"
                );
                builder = builder.replay_guard(guard);
            }
            None => tracing::info!(
                store = "memory",
                "DPoP replay store: in memory, this node only"
            ),
        }
        let settings = ForwardSettings::new(&providers, &config.server);
        for spec in providers {
            builder = builder.provider(spec.config);
        }
        let verifier = builder.build().map_err(|e| config::ConfigError {
            key: e.field.to_owned(),
            problem: e.problem,
        })?;
        if config.admin.keys.is_empty() {
            tracing::warn!("no [[admin.keys]] configured: every admin API call will be refused");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let node = Arc::new(Node::new(
            verifier,
            revocations,
            bus,
            origin,
            config.cluster.accept_while_degraded,
        ));
        let revocation_policy = RevocationPolicy {
            tenants: settings.tenants.clone(),
            max_token_lifetime: config.revocations.max_token_lifetime,
        };
        // The policy `/verify` reads and the metrics render; the reloader swaps it.
        let policy = SharedPolicy::new(Arc::clone(&config.policy));
        node.metrics().attach_policy(policy.clone());
        let forward = Forward {
            node: Arc::clone(&node),
            settings: Arc::new(ArcSwap::from_pointee(settings)),
            policy,
        };
        let keys =
            KeyRing::with_failure_limit(config.admin.keys.clone(), config.admin.failure_limit);
        let mut admin = Admin::new(Arc::clone(&node), keys.clone(), revocation_policy, stop_rx);
        let grace = config.server.shutdown_grace;
        let header_timeout = config.server.header_read_timeout;
        let reloader = Arc::new(Reloader::new(
            config,
            Targets {
                node: Arc::clone(&node),
                forward: Arc::clone(&forward.settings),
                policy: forward.policy.clone(),
                keys,
                revocations: Arc::clone(&admin.revocations),
                dev_provider,
            },
        ));
        admin.reloader = Some(Arc::clone(&reloader) as Arc<dyn Reload>);
        Ok(Server {
            node,
            forward,
            admin,
            listeners,
            dev_issuer,
            grace,
            header_timeout,
            stop: stop_tx,
            reloader,
        })
    }

    /// What reloads the configuration (SIGHUP, `POST /admin/v1/reload`). Name the file it
    /// reads with [`Reloader::set_file`]; without one a reload is refused.
    #[must_use]
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// The running policy of `/verify`. A reload builds the new config's policy and calls
    /// [`SharedPolicy::replace`] with it: requests in flight finish under the policy they
    /// loaded, later ones see the new one, and the decision counters of routes that keep
    /// their name carry over.
    #[must_use]
    pub fn policy(&self) -> &SharedPolicy {
        &self.forward.policy
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

    /// The node: the verifier, the bus, the revocations and the counters.
    #[must_use]
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `shutdown` resolves, then drains for at most `shutdown_grace`.
    ///
    /// # Errors
    /// [`ServeError::Serve`] if a listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (grace, header_timeout, stop_tx) = (self.grace, self.header_timeout, self.stop);
        let (node, forward, admin) = (self.node, self.forward, self.admin);
        let (listeners, dev_issuer) = (self.listeners, self.dev_issuer);
        let stop_rx = admin.stopping.clone();
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let mut servers: JoinSet<Result<(), ServeError>> = JoinSet::new();
        let mut spawn = |what: &'static str, listener, router, connect_info| {
            let done = stopped();
            servers.spawn(async move {
                serve_http(listener, router, connect_info, header_timeout, done)
                    .await
                    .map_err(|source| ServeError::Serve { what, source })
            });
        };
        if let (Some(issuer), Some(listener)) = (dev_issuer, listeners.dev_issuer) {
            spawn("dev_issuer.listen", listener, issuer.router(), false);
        }
        spawn(
            "server.listen",
            listeners.verify,
            forward::router(forward),
            false,
        );
        spawn(
            "server.admin_listen",
            listeners.admin,
            admin::router(admin),
            true,
        );

        let mut background = JoinSet::new();
        // Load shared state (revocations, key sets) before fetching anything, so a replica
        // starting during an IdP outage verifies with the cluster's last good keys.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let applier: Arc<dyn Apply> = Arc::clone(&node) as Arc<dyn Apply>;
        background.spawn(Arc::clone(node.bus()).run(applier, ready_tx));
        let warm = Arc::clone(&node);
        background.spawn(async move {
            let _ = ready_rx.await;
            warm.warm_up().await;
        });
        let pruner = Arc::clone(&node);
        background.spawn(async move { pruner.prune_revocations().await });
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
        drop(node);
        tracing::info!("keygate stopped");
        result
    }
}

/// Serves `router` on `listener` until `stopped` resolves, then waits for the open
/// connections to finish their requests (the caller bounds that wait by `shutdown_grace`).
///
/// HTTP/1 with a header read timeout: `axum::serve` sets none, so a client dribbling its
/// headers, or an idle keep-alive connection, could hold a connection open forever. With
/// `connect_info`, handlers can extract `ConnectInfo<SocketAddr>` (the admin API keys its
/// brute-force limit on it).
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    connect_info: bool,
    header_timeout: Duration,
    stopped: impl Future<Output = ()>,
) -> io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::error!(error = %e, "accept failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let app = if connect_info {
            router.clone().layer(axum::Extension(ConnectInfo(remote)))
        } else {
            router.clone()
        };
        let service =
            TowerToHyperService::new(app.map_request(|r: http::Request<hyper::body::Incoming>| {
                r.map(axum::body::Body::new)
            }));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Bind {
        what,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
