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

use crate::admin::{ProvidersReloaded, Reload, ReloadBody, ReloadError, RevocationPolicy};
use crate::apikey::KeyRing;
use crate::config::{
    AdminConfig, ClusterBackend, ClusterConfig, Config, ConfigError, ProviderSpec,
    RevocationConfig, ServerConfig,
};
use crate::forward::ForwardSettings;
use crate::node::Node;
use crate::policy::SharedPolicy;

/// Everything a reload changes, and the configuration in force.
pub struct Reloader {
    targets: Targets,
    state: Mutex<State>,
}

/// The running server's state a reload replaces, each part behind its own swap.
pub(crate) struct Targets {
    /// The node: its verifier's providers are reconfigured, its counters count reloads.
    pub(crate) node: Arc<Node>,
    /// `/verify`'s settings.
    pub(crate) forward: Arc<ArcSwap<ForwardSettings>>,
    /// `/verify`'s policy.
    pub(crate) policy: SharedPolicy,
    /// The admin API's keys.
    pub(crate) keys: KeyRing,
    /// What the admin API checks a revocation against.
    pub(crate) revocations: Arc<ArcSwap<RevocationPolicy>>,
    /// The development issuer's provider as built at start-up (its address is only known
    /// then); it stays as long as `[dev_issuer]` does not change, which needs a restart.
    pub(crate) dev_provider: Option<ProviderSpec>,
}

struct State {
    /// The file to read again; `None` for the embedded default.
    file: Option<PathBuf>,
    /// The configuration in force.
    running: Config,
}

impl Reloader {
    /// A reloader for a server built from `running`, acting on `targets`.
    #[must_use]
    pub(crate) fn new(running: Config, targets: Targets) -> Reloader {
        Reloader {
            targets,
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
        self.targets.node.metrics().observe_reload(result.is_ok());
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
            .targets
            .dev_provider
            .iter()
            .cloned()
            .chain(new.providers.iter().cloned())
            .collect();
        let verifier = self.targets.node.verifier();
        let report = verifier
            .reconfigure(providers.iter().map(|spec| spec.config.clone()))
            .map_err(|e| {
                ReloadError::Config(ConfigError {
                    key: e.field.to_owned(),
                    problem: e.problem,
                })
            })?;
        let settings = ForwardSettings::new(&providers, &new.server);
        self.targets.revocations.store(Arc::new(RevocationPolicy {
            tenants: settings.tenants.clone(),
            max_token_lifetime: new.revocations.max_token_lifetime,
        }));
        self.targets.forward.store(Arc::new(settings));
        // The new policy, compiled and checked against the new providers when the file was
        // loaded; routes that keep their name keep their decision counters.
        self.targets.policy.replace(Arc::clone(&new.policy));
        self.targets.keys.replace_keys(new.admin.keys.clone());
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

impl Reload for Reloader {
    fn reload(&self, via: &'static str) -> Result<ReloadBody, ReloadError> {
        Reloader::reload(self, via)
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
///
/// Every field of the configuration is named below, either checked or marked as reloaded, so
/// a new setting does not compile until someone decides which it is: a setting that is
/// neither would be accepted by a reload and silently not applied.
#[must_use]
pub fn restart_required(running: &Config, new: &Config) -> Option<&'static str> {
    let Config {
        server,
        // Reloaded: the verifier's providers (introspection and DPoP settings included) and
        // `/verify`'s claim headers and tenants.
        providers: _,
        admin,
        // Reloaded: the revocation policy.
        revocations: RevocationConfig {
            max_token_lifetime: _,
        },
        dev_issuer,
        cluster,
        cluster_digest,
        // Reloaded: the policy of `/verify`, swapped whole.
        policy: _,
    } = running;
    let ServerConfig {
        listen,
        admin_listen,
        shutdown_grace,
        token_cache,
        max_token_bytes,
        // Reloaded with `/verify`'s settings.
        tenant_header: _,
        token_cookie: _,
        resource_metadata: _,
        // Reloaded with `/verify`'s settings: the base of a DPoP proof's `htu`.
        external_url: _,
        node_id,
        header_read_timeout,
    } = server;
    let AdminConfig {
        // Reloaded: the key ring's keys.
        keys: _,
        failure_limit,
    } = admin;
    let ClusterConfig {
        backend,
        accept_while_degraded,
    } = cluster;
    let (b, n) = (&new.server, &new.cluster);
    let local_state = |backend: &ClusterBackend| match backend {
        ClusterBackend::Local { state_file } => Some(state_file.clone()),
        ClusterBackend::Redis(_) => None,
    };
    let checks: [(&'static str, bool); 13] = [
        ("server.listen", *listen != b.listen),
        ("server.admin_listen", *admin_listen != b.admin_listen),
        ("server.node_id", *node_id != b.node_id),
        ("server.token_cache", *token_cache != b.token_cache),
        (
            "server.max_token_bytes",
            *max_token_bytes != b.max_token_bytes,
        ),
        ("server.shutdown_grace", *shutdown_grace != b.shutdown_grace),
        (
            "server.header_read_timeout",
            *header_read_timeout != b.header_read_timeout,
        ),
        (
            "admin.max_failures",
            failure_limit.max_failures != new.admin.failure_limit.max_failures,
        ),
        (
            "admin.failure_window",
            failure_limit.window != new.admin.failure_limit.window,
        ),
        ("dev_issuer", *dev_issuer != new.dev_issuer),
        (
            "cluster.accept_while_degraded",
            *accept_while_degraded != n.accept_while_degraded,
        ),
        (
            "cluster.state_file",
            local_state(backend) != local_state(&n.backend),
        ),
        ("cluster", *cluster_digest != new.cluster_digest),
    ];
    checks
        .into_iter()
        .find_map(|(setting, changed)| changed.then_some(setting))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: &str = "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\naudiences = [\"a\"]\n";
    const REDIS: &str = "[cluster]\nbackend = \"redis\"\nredis_url = \"redis://r.internal/\"\n[[cluster.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

    fn parse(text: &str) -> Config {
        Config::parse(text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn restart_only_settings_are_named_and_the_rest_reloads() {
        let base = parse(PROVIDER);
        let cases: [(String, Option<&str>); 19] = [
            (PROVIDER.to_owned(), None),
            // Reloadable: providers, claim headers, tenant header, keys, revocations.
            (
                format!("{PROVIDER}claims_to_headers = {{ email = \"X-Auth-Email\" }}\n"),
                None,
            ),
            (
                format!(
                    "{PROVIDER}[[providers]]\ntenant = \"u\"\nname = \"q\"\nissuer = \"https://j.example\"\naudiences = [\"b\"]\n"
                ),
                None,
            ),
            (
                format!("[server]\ntenant_header = \"x-tenant\"\n{PROVIDER}"),
                None,
            ),
            (
                format!("{PROVIDER}[revocations]\nmax_token_lifetime = \"2h\"\n"),
                None,
            ),
            // Written out as the default it already was: no change.
            (
                format!("{PROVIDER}[cluster]\nbackend = \"local\"\naccept_while_degraded = true\n"),
                None,
            ),
            (
                format!("[server]\nlisten = \"127.0.0.1:9\"\n{PROVIDER}"),
                Some("server.listen"),
            ),
            (
                format!("[server]\nadmin_listen = \"127.0.0.1:9\"\n{PROVIDER}"),
                Some("server.admin_listen"),
            ),
            (
                format!("[server]\nnode_id = \"other\"\n{PROVIDER}"),
                Some("server.node_id"),
            ),
            (
                format!("[server]\ntoken_cache = 7\n{PROVIDER}"),
                Some("server.token_cache"),
            ),
            (
                format!("[server]\nmax_token_bytes = 9000\n{PROVIDER}"),
                Some("server.max_token_bytes"),
            ),
            (
                format!("[server]\nshutdown_grace = \"1s\"\n{PROVIDER}"),
                Some("server.shutdown_grace"),
            ),
            (
                format!("[server]\nheader_read_timeout = \"1s\"\n{PROVIDER}"),
                Some("server.header_read_timeout"),
            ),
            (
                format!("{PROVIDER}[admin]\nmax_failures = 3\n"),
                Some("admin.max_failures"),
            ),
            (
                format!("{PROVIDER}[admin]\nfailure_window = \"5m\"\n"),
                Some("admin.failure_window"),
            ),
            (
                format!("{PROVIDER}[dev_issuer]\nlisten = \"127.0.0.1:0\"\n"),
                Some("dev_issuer"),
            ),
            (
                format!("{PROVIDER}[cluster]\naccept_while_degraded = false\n"),
                Some("cluster.accept_while_degraded"),
            ),
            (
                format!("{PROVIDER}[cluster]\nstate_file = \"/tmp/kg.jsonl\"\n"),
                Some("cluster.state_file"),
            ),
            (format!("{PROVIDER}{REDIS}"), Some("cluster.state_file")),
        ];
        for (text, expected) in cases {
            assert_eq!(restart_required(&base, &parse(&text)), expected, "{text}");
        }
        // Between two Redis configurations, any change of the section needs a restart.
        let redis = parse(&format!("{PROVIDER}{REDIS}"));
        assert_eq!(restart_required(&redis, &redis.clone()), None);
        for change in [
            REDIS.replace("r.internal", "s.internal"),
            REDIS.replace("[[cluster.keys]]", "prefix = \"other\"\n[[cluster.keys]]"),
            REDIS.replace("0123456789abcdef0123", "fedcba98765432100123"),
        ] {
            let text = format!("{PROVIDER}{change}");
            assert_eq!(
                restart_required(&redis, &parse(&text)),
                Some("cluster"),
                "{text}"
            );
        }
    }
}
