//! `[admin]`: the API keys and the lockout after wrong keys.

use std::time::Duration;

use super::file::{FileAdmin, FileApiKey};
use super::names::{KeyIds, env_id, env_or_file};
use super::{AdminConfig, ConfigError};
use crate::apikey::{ApiKey, FailureLimit, KeyHash, Scope};

/// The longest `admin.failure_window`.
const MAX_FAILURE_WINDOW: Duration = Duration::from_secs(86_400);

/// The environment variable that overrides the hash of admin key `id`:
/// `KEYGATE_ADMIN_KEY_<ID>_HASH`, with the id upper-cased and `-` and `.` turned into `_`.
#[must_use]
pub fn hash_env_var(id: &str) -> String {
    format!("KEYGATE_ADMIN_KEY_{}_HASH", env_id(id))
}

impl FileAdmin {
    pub(super) fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AdminConfig, ConfigError> {
        let mut keys = Vec::with_capacity(self.keys.len());
        let mut ids = KeyIds::default();
        for (i, k) in self.keys.into_iter().enumerate() {
            keys.push(k.validate(&format!("admin.keys[{i}]"), &mut ids, env)?);
        }
        let d = FailureLimit::default();
        let max_failures = self.max_failures.unwrap_or(d.max_failures);
        let window = self.failure_window.map_or(d.window, |w| w.0);
        FailureLimit::new(max_failures, d.window)
            .map_err(|problem| ConfigError::new("admin.max_failures", problem))?;
        if window > MAX_FAILURE_WINDOW {
            return Err(ConfigError::new(
                "admin.failure_window",
                "must be at most 1d: a longer lockout would shut operators out too",
            ));
        }
        let failure_limit = FailureLimit::new(max_failures, window)
            .map_err(|problem| ConfigError::new("admin.failure_window", problem))?;
        Ok(AdminConfig {
            keys,
            failure_limit,
        })
    }
}

impl FileApiKey {
    /// Checks entry `key` (`admin.keys[0]`), its hash taken from the environment when set.
    fn validate(
        self,
        key: &str,
        ids: &mut KeyIds,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ApiKey, ConfigError> {
        let var = ids.check(key, &self.id, hash_env_var)?;
        let (hash_key, hash) = env_or_file(env, var, format!("{key}.hash"), self.hash, |var| {
            format!("missing: paste the output of `keygate admin hash-key`, or set {var}")
        })?;
        let hash: KeyHash = hash
            .trim()
            .parse()
            .map_err(|e| ConfigError::new(hash_key, format!("{e}")))?;
        if self.scopes.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.scopes"),
                "at least one scope is required",
            ));
        }
        let scopes = self
            .scopes
            .iter()
            .enumerate()
            .map(|(j, s)| {
                s.parse::<Scope>()
                    .map_err(|e| ConfigError::new(format!("{key}.scopes[{j}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiKey {
            id: self.id,
            hash,
            scopes,
        })
    }
}
