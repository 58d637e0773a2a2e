//! Names in the file: tenant, provider and key ids, and the environment variables key ids
//! map to.

use std::collections::{BTreeMap, HashSet};

use super::ConfigError;

/// A tenant, provider or key name: it appears in URL paths, metric labels and environment
/// variable names. `key` names the setting (or flag) in the error.
///
/// # Errors
/// A [`ConfigError`] naming `key` when `value` is empty, longer than 64 bytes, or holds a
/// character other than A-Z, a-z, 0-9, `-`, `_` or `.`.
pub fn check_name(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'"),
        ))
    }
}

/// The ids of one list of keys (`admin.keys`, `cluster.keys`) seen so far.
#[derive(Default)]
pub(super) struct KeyIds {
    ids: HashSet<String>,
    /// Each environment variable read, with the entry and the id that read it first.
    vars: BTreeMap<String, (String, String)>,
}

impl KeyIds {
    /// Checks the id of entry `key` (`admin.keys[2]`): a valid name, not used twice, and an
    /// environment variable (`var_of(id)`) no other id of the list reads. Returns that variable.
    pub(super) fn check(
        &mut self,
        key: &str,
        id: &str,
        var_of: fn(&str) -> String,
    ) -> Result<String, ConfigError> {
        check_name(&format!("{key}.id"), id)?;
        if !self.ids.insert(id.to_owned()) {
            return Err(ConfigError::new(
                format!("{key}.id"),
                format!("key id {id:?} is used twice"),
            ));
        }
        one_env_var_each(&mut self.vars, key, id, var_of)?;
        Ok(var_of(id))
    }
}

/// A secret from the environment variable `var` when it is set, else from the file at
/// `file_key`; `missing` is the problem when neither has it. Returns where the value came
/// from (the variable or the file key, for errors about the value) and the value.
pub(super) fn env_or_file(
    env: &dyn Fn(&str) -> Option<String>,
    var: String,
    file_key: String,
    file: Option<String>,
    missing: impl FnOnce(&str) -> String,
) -> Result<(String, String), ConfigError> {
    if let Some(value) = env(&var) {
        return Ok((var, value));
    }
    match file {
        Some(value) => Ok((file_key, value)),
        None => Err(ConfigError::new(file_key, missing(&var))),
    }
}

/// Refuses a key id whose environment variable another id of the list already reads
/// (`a-b` and `a_b` both read `..._A_B_...`): the variable would silently set both keys.
/// `seen` maps each variable to the first id that reads it and where that id is.
pub(super) fn one_env_var_each(
    seen: &mut BTreeMap<String, (String, String)>,
    key: &str,
    id: &str,
    var_of: fn(&str) -> String,
) -> Result<(), ConfigError> {
    let var = var_of(id);
    if let Some((other_key, other_id)) = seen.get(&var) {
        return Err(ConfigError::new(
            format!("{key}.id"),
            format!(
                "key ids {id:?} and {other_id:?} ({other_key}.id) both read {var}; rename one of them"
            ),
        ));
    }
    seen.insert(var, (key.to_owned(), id.to_owned()));
    Ok(())
}

pub(super) fn env_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
