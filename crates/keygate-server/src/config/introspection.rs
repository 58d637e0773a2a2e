//! The `introspection_*` and `dpop*` keys of a `[[providers]]` entry: opaque tokens checked
//! at the provider's RFC 7662 introspection endpoint, and DPoP (RFC 9449) sender-constrained
//! tokens.
//!
//! Introspection is on for a provider exactly when it sets `introspection_client_id`; every
//! other `introspection_*` key without it is an error rather than a setting silently ignored.
//! The client secret comes from `KEYGATE_PROVIDER_<TENANT>_<NAME>_INTROSPECTION_SECRET` when
//! that is set, else from `introspection_client_secret` in the file, like the admin keys'
//! hashes.

use std::collections::BTreeMap;
use std::time::Duration;

use keygate::dpop::{DEFAULT_IAT_WINDOW, DpopMode};
use keygate::introspect::{
    ClientAuth, ClientKey, ClientSecret, DEFAULT_CACHE_ENTRIES, DEFAULT_MAX_CONCURRENT,
    DEFAULT_NEGATIVE_TTL, DEFAULT_POSITIVE_TTL, DEFAULT_RATE_LIMIT, IntrospectionConfig,
    IntrospectionEndpoint,
};
use url::Url;

use super::ConfigError;
use super::file::FileProvider;
use super::names::{env_id, env_or_file};

/// The longest `dpop_iat_window`: a proof is remembered for twice the window, and a proof
/// minted an hour away from now is no proof of anything recent.
const MAX_IAT_WINDOW: Duration = Duration::from_secs(3600);

/// The environment variable that overrides the introspection client secret of provider
/// `tenant`/`name`: `KEYGATE_PROVIDER_<TENANT>_<NAME>_INTROSPECTION_SECRET`, each name
/// upper-cased with `-` and `.` turned into `_`.
#[must_use]
pub fn introspection_secret_env_var(tenant: &str, name: &str) -> String {
    format!(
        "KEYGATE_PROVIDER_{}_{}_INTROSPECTION_SECRET",
        env_id(tenant),
        env_id(name)
    )
}

/// The introspection secret variables read so far, each with the entry and the provider that
/// reads it: two providers may not read one (`a-b`/`c` and `a`/`b-c` both read
/// `KEYGATE_PROVIDER_A_B_C_...`), or setting it would silently set both secrets.
#[derive(Default)]
pub(super) struct SecretVars(BTreeMap<String, (String, String)>);

impl SecretVars {
    /// Records that entry `key` (`providers[1]`), provider `tenant`/`name`, reads its
    /// variable.
    pub(super) fn check(&mut self, key: &str, tenant: &str, name: &str) -> Result<(), ConfigError> {
        let var = introspection_secret_env_var(tenant, name);
        let id = format!("{tenant}/{name}");
        if let Some((other_key, other_id)) = self.0.get(&var) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!(
                    "providers {id} and {other_id} ({other_key}) both read {var} for their \
                     introspection secret; rename one of them"
                ),
            ));
        }
        self.0.insert(var, (key.to_owned(), id));
        Ok(())
    }
}

impl FileProvider {
    /// The introspection settings, when `introspection_client_id` turns introspection on.
    pub(super) fn introspection(
        &self,
        k: &dyn Fn(&str) -> String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<IntrospectionConfig>, ConfigError> {
        let Some(client_id) = &self.introspection_client_id else {
            if let Some(set) = self.first_introspection_key() {
                return Err(ConfigError::new(
                    k(set),
                    "needs introspection_client_id: introspection is on only for a provider \
                     with a client id",
                ));
            }
            return Ok(None);
        };
        let auth = self.client_auth(k, env)?;
        let endpoint = self.introspection_endpoint(k)?;
        // Zero bounds and an empty client id are refused by the library's own check when the
        // provider is built, under these same key names.
        let rate = self.introspection_rate_limit.unwrap_or(DEFAULT_RATE_LIMIT);
        let config = IntrospectionConfig::authenticated(endpoint, client_id, auth)
            .positive_ttl(
                self.introspection_cache_ttl
                    .map_or(DEFAULT_POSITIVE_TTL, |d| d.0),
            )
            .negative_ttl(
                self.introspection_negative_ttl
                    .map_or(DEFAULT_NEGATIVE_TTL, |d| d.0),
            )
            .rate_limit(rate, self.introspection_burst.unwrap_or(rate))
            .max_concurrent(
                self.introspection_max_concurrent
                    .unwrap_or(DEFAULT_MAX_CONCURRENT),
            )
            .cache_entries(
                self.introspection_cache_entries
                    .unwrap_or(DEFAULT_CACHE_ENTRIES),
            );
        Ok(Some(config))
    }

    /// How the client authenticates: `private_key_jwt` with the key in
    /// `introspection_client_key_file`, else `client_secret_basic` with the secret from the
    /// environment or the file. Both at once is an error, not a choice made silently.
    fn client_auth(
        &self,
        k: &dyn Fn(&str) -> String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClientAuth, ConfigError> {
        let var = introspection_secret_env_var(&self.tenant, &self.name);
        if let Some(path) = &self.introspection_client_key_file {
            let at = k("introspection_client_key_file");
            if self.introspection_client_secret.is_some() || env(&var).is_some() {
                return Err(ConfigError::new(
                    &at,
                    format!(
                        "set either a key file (private_key_jwt) or a client secret \
                         (introspection_client_secret or {var}), not both"
                    ),
                ));
            }
            let pem = std::fs::read(path)
                .map_err(|e| ConfigError::new(&at, format!("{}: {e}", path.display())))?;
            let key = ClientKey::from_pem(&pem)
                .map_err(|e| ConfigError::new(&at, format!("{}: {e}", path.display())))?;
            return Ok(ClientAuth::PrivateKeyJwt(key));
        }
        let (secret_key, secret) = env_or_file(
            env,
            var,
            k("introspection_client_secret"),
            self.introspection_client_secret
                .as_ref()
                .map(|s| s.0.clone()),
            |var| format!("missing: set it here or in {var}, or use introspection_client_key_file"),
        )?;
        if secret.is_empty() {
            return Err(ConfigError::new(secret_key, "must not be empty"));
        }
        Ok(ClientAuth::SecretBasic(ClientSecret::new(secret)))
    }

    /// `dpop` and `dpop_iat_window`.
    pub(super) fn dpop(
        &self,
        k: &dyn Fn(&str) -> String,
    ) -> Result<(DpopMode, Duration), ConfigError> {
        let mode = match &self.dpop {
            None => DpopMode::Off,
            Some(text) => text
                .parse::<DpopMode>()
                .map_err(|e| ConfigError::new(k("dpop"), format!("{text:?}: {e}")))?,
        };
        let window = self.dpop_iat_window.map_or(DEFAULT_IAT_WINDOW, |d| d.0);
        if window.is_zero() || window > MAX_IAT_WINDOW {
            return Err(ConfigError::new(
                k("dpop_iat_window"),
                "must be between 1ms and 1h",
            ));
        }
        Ok((mode, window))
    }

    /// The endpoint: the URL given, checked as the JWKS URLs are (https, or http to loopback
    /// with `allow_insecure_http`); without one, the issuer's discovery document names it,
    /// so the issuer must pass the same check.
    fn introspection_endpoint(
        &self,
        k: &dyn Fn(&str) -> String,
    ) -> Result<IntrospectionEndpoint, ConfigError> {
        let at = k("introspection_endpoint");
        match &self.introspection_endpoint {
            Some(text) => {
                self.check_fetch_url(&at, text, k)?;
                let url = Url::parse(text)
                    .map_err(|e| ConfigError::new(&at, format!("{text:?} is not a URL: {e}")))?;
                if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
                    return Err(ConfigError::new(
                        &at,
                        "must be an absolute URL with a host and no credentials (the client \
                         authenticates with introspection_client_id and its secret)",
                    ));
                }
                Ok(IntrospectionEndpoint::Url(url))
            }
            None => {
                self.check_fetch_url(&at, &self.issuer, k).map_err(|e| {
                    if e.key == at {
                        ConfigError::new(
                            &at,
                            format!(
                                "not set, so it is discovered from the issuer {:?}, which is \
                                 not usable: {}",
                                self.issuer, e.problem
                            ),
                        )
                    } else {
                        e
                    }
                })?;
                Ok(IntrospectionEndpoint::Discovered)
            }
        }
    }

    /// The first `introspection_*` key set, other than the client id.
    fn first_introspection_key(&self) -> Option<&'static str> {
        [
            (
                "introspection_client_secret",
                self.introspection_client_secret.is_some(),
            ),
            (
                "introspection_client_key_file",
                self.introspection_client_key_file.is_some(),
            ),
            (
                "introspection_endpoint",
                self.introspection_endpoint.is_some(),
            ),
            (
                "introspection_cache_ttl",
                self.introspection_cache_ttl.is_some(),
            ),
            (
                "introspection_negative_ttl",
                self.introspection_negative_ttl.is_some(),
            ),
            (
                "introspection_rate_limit",
                self.introspection_rate_limit.is_some(),
            ),
            ("introspection_burst", self.introspection_burst.is_some()),
            (
                "introspection_max_concurrent",
                self.introspection_max_concurrent.is_some(),
            ),
            (
                "introspection_cache_entries",
                self.introspection_cache_entries.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }
}
