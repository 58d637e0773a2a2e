//! The configuration error: the key at fault and what is wrong with it.

/// A configuration problem, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The key at fault, as a path into the file (`providers[0].issuer`), or the file name for
    /// a syntax error.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(super) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Turns a TOML error into a [`ConfigError`] naming `key` (empty for the document as a
/// whole) and saying where in the text it is.
pub(super) fn syntax_error(text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let location = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {col}: ")
    });
    ConfigError::new(
        key,
        format!("{}{}", location.unwrap_or_default(), e.message().trim()),
    )
}
