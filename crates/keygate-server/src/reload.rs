//! Reloading the configuration without a restart: `SIGHUP` and `POST /admin/v1/reload`.
//!
//! [`Reloader::reload`] re-reads the file the server was started with and validates it
//! completely, with the same [`Config::load`] as start-up, before anything changes. A bad file
//! changes nothing. A file that changes a setting only a restart can apply (the listeners,
//! the node id, the bus, the token cache, the development issuer, ...; see
//! [`restart_required`]) is refused whole, naming the setting. A good file is applied:
//! - the providers, through [`keygate::Verifier::reconfigure`]: unchanged ones keep their
//!   keys, refresher and verified tokens; added and changed ones are warmed up in the
//!   background; removed ones stop;
//! - `/verify`'s [`ForwardSettings`] (claim headers, tenants, tenant header), swapped whole;
//! - the admin keys and their scopes ([`KeyRing::replace_keys`]; lockouts stay);
//! - the revocation policy (tenants, `revocations.max_token_lifetime`).
//!
//! The verifier's providers are swapped before `/verify`'s settings: a request in between
//! may see a new provider without its `claims_to_headers` yet, never a removed provider's
//! tokens accepted. Reloads are serialized. Each one counts in
//! `keygate_config_reloads_total{result}` and is logged; the answer names the providers
//! added, removed, changed and unchanged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::RevocationPolicy;
use crate::apikey::KeyRing;
use crate::config::{ClusterBackend, Config, ConfigError, ProviderSpec};
use crate::forward::ForwardSettings;
use crate::node::Node;

/// Why a reload changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server runs the embedded default: there is no file to read again.
    #[error("no config file to reload: keygate was started without --config")]
    NoFile,
    /// The file does not validate (or its providers are refused); the key at fault is named
    /// as at start-up.
    #[error("{0}")]
    Config(ConfigError),
    /// The file changes a setting that only a restart applies.
    #[error("{setting} changed: a restart is needed to apply it; nothing was reloaded")]
    RestartRequired {
        /// The setting, as a key of the file (`server.listen`, `cluster`, ...).
        setting: &'static str,
    },
}

/// What a reload did to the providers, by id (`tenant/name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ProvidersReloaded {
    /// Newly configured: fetching their keys in the background.
    pub added: Vec<String>,
    /// No longer configured: stopped, their tokens refused.
    pub removed: Vec<String>,
    /// Configured differently: rebuilt, their keys fetched afresh.
    pub changed: Vec<String>,
    /// Configured as before: keys and verified tokens kept.
    pub unchanged: Vec<String>,
}

/// The answer of a reload that applied a new file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ReloadBody {
    /// Always `true`: a refused reload answers with an error instead.
    pub reloaded: bool,
    /// What became of each provider.
    pub providers: ProvidersReloaded,
}

/// Everything a reload changes, and the configuration in force.
pub struct Reloader {
    node: Arc<Node>,
    forward: Arc<ArcSwap<ForwardSettings>>,
    keys: KeyRing,
    revocations: Arc<ArcSwap<RevocationPolicy>>,
    /// The development issuer's provider as built at start-up (its address is only known
    /// then); it stays as long as `[dev_issuer]` does not change, which needs a restart.
    dev_provider: Option<ProviderSpec>,
    state: Mutex<State>,
}

struct State {
    /// The file to read again; `None` for the embedded default.
    file: Option<PathBuf>,
    /// The configuration in force.
    running: Config,
}

impl Reloader {
    /// A reloader for a server built from `running`, acting on the given shared state.
    #[must_use]
    pub(crate) fn new(
        running: Config,
        node: Arc<Node>,
        forward: Arc<ArcSwap<ForwardSettings>>,
        keys: KeyRing,
        revocations: Arc<ArcSwap<RevocationPolicy>>,
        dev_provider: Option<ProviderSpec>,
    ) -> Reloader {
        Reloader {
            node,
            forward,
            keys,
            revocations,
            dev_provider,
            state: Mutex::new(State {
                file: None,
                running,
            }),
        }
    }

    /// Names the file a reload reads: the one the server was started with (`--config`).
    pub fn set_file(&self, file: PathBuf) {
        self.lock().file = Some(file);
    }

    /// Re-reads the file and applies it if it is good and needs no restart, counting the
    /// result in the metrics and logging it (`via` names what asked: `SIGHUP`, `admin`).
    ///
    /// # Errors
    /// A [`ReloadError`]; the running configuration is then unchanged.
    pub fn reload(&self, via: &'static str) -> Result<ReloadBody, ReloadError> {
        let result = self.reload_inner();
        self.node.metrics().observe_reload(result.is_ok());
        match &result {
            Ok(body) => tracing::info!(
                via,
                added = ?body.providers.added,
                removed = ?body.providers.removed,
                changed = ?body.providers.changed,
                unchanged = body.providers.unchanged.len(),
                "configuration reloaded"
            ),
            Err(e) => tracing::error!(via, error = %e, "configuration not reloaded"),
        }
        result
    }

    fn reload_inner(&self) -> Result<ReloadBody, ReloadError> {
        // Held throughout: two reloads never interleave.
        let mut state = self.lock();
        let file = state.file.clone().ok_or(ReloadError::NoFile)?;
        let new = Config::load(&file).map_err(ReloadError::Config)?;
        if let Some(setting) = restart_required(&state.running, &new) {
            return Err(ReloadError::RestartRequired { setting });
        }
        let providers: Vec<ProviderSpec> = self
            .dev_provider
            .iter()
            .cloned()
            .chain(new.providers.iter().cloned())
            .collect();
        let verifier = self.node.verifier();
        let report = verifier
            .reconfigure(providers.iter().map(|spec| spec.config.clone()))
            .map_err(|e| {
                ReloadError::Config(ConfigError {
                    key: e.field.to_owned(),
                    problem: e.problem,
                })
            })?;
        let settings = ForwardSettings::new(&providers, new.server.tenant_header.clone());
        self.revocations.store(Arc::new(RevocationPolicy {
            tenants: settings.tenants.clone(),
            max_token_lifetime: new.revocations.max_token_lifetime,
        }));
        self.forward.store(Arc::new(settings));
        self.keys.replace_keys(new.admin.keys.clone());
        if new.admin.keys.is_empty() {
            tracing::warn!("no [[admin.keys]] configured: every admin API call will be refused");
        }
        state.running = new;
        drop(state);
        if !report.added.is_empty() || !report.changed.is_empty() {
            let verifier = verifier.clone();
            tokio::spawn(async move { verifier.warm_up().await });
        }
        let names = |ids: &[keygate::ProviderId]| ids.iter().map(ToString::to_string).collect();
        Ok(ReloadBody {
            reloaded: true,
            providers: ProvidersReloaded {
                added: names(&report.added),
                removed: names(&report.removed),
                changed: names(&report.changed),
                unchanged: names(&report.unchanged),
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update of the state is one assignment: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("file", &self.lock().file)
            .finish_non_exhaustive()
    }
}

/// The first setting `new` changes that only a restart applies, if any: what was bound,
/// built or joined once at start-up.
#[must_use]
pub fn restart_required(running: &Config, new: &Config) -> Option<&'static str> {
    let (a, b) = (&running.server, &new.server);
    let local_state = |c: &Config| match &c.cluster.backend {
        ClusterBackend::Local { state_file } => Some(state_file.clone()),
        ClusterBackend::Redis(_) => None,
    };
    let checks: [(&'static str, bool); 12] = [
        ("server.listen", a.listen != b.listen),
        ("server.admin_listen", a.admin_listen != b.admin_listen),
        ("server.node_id", a.node_id != b.node_id),
        ("server.token_cache", a.token_cache != b.token_cache),
        (
            "server.max_token_bytes",
            a.max_token_bytes != b.max_token_bytes,
        ),
        (
            "server.shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        (
            "server.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "admin.failure_limit",
            running.admin.failure_limit != new.admin.failure_limit,
        ),
        ("dev_issuer", running.dev_issuer != new.dev_issuer),
        (
            "cluster.accept_while_degraded",
            running.cluster.accept_while_degraded != new.cluster.accept_while_degraded,
        ),
        (
            "cluster.state_file",
            local_state(running) != local_state(new),
        ),
        ("cluster", running.cluster_digest != new.cluster_digest),
    ];
    checks
        .into_iter()
        .find_map(|(setting, changed)| changed.then_some(setting))
}
