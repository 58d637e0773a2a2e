//! What an admin key may do: its scopes, and their names in the file and the API.

use std::fmt;
use std::str::FromStr;

/// Something an admin key may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Drop a provider's cached key set and verified tokens.
    JwksFlush,
    /// Refetch a provider's key set now.
    JwksRefresh,
    /// Revoke tokens, subjects or signing keys.
    TokensRevoke,
    /// Read the status of providers and the bus.
    StatusRead,
    /// Publish application events (`POST /admin/v1/events`).
    EventsPublish,
    /// Follow application events (`GET /admin/v1/events/stream`).
    EventsRead,
    /// Re-read and apply the config file (`POST /admin/v1/reload`). Never granted by
    /// default: a key gets it only when named (`keygate admin new-key --scopes config:reload`).
    ConfigReload,
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{name}`; valid scopes: {}", valid_scopes())]
pub struct UnknownScope {
    name: String,
}

impl Scope {
    /// The operational scopes, in the order the documentation lists them: what a new key
    /// gets unless told otherwise. [`Scope::EVERY`] adds `config:reload`.
    pub const ALL: [Scope; 6] = [
        Scope::JwksFlush,
        Scope::JwksRefresh,
        Scope::TokensRevoke,
        Scope::StatusRead,
        Scope::EventsPublish,
        Scope::EventsRead,
    ];

    /// Every scope: [`Scope::ALL`], then `config:reload`.
    pub const EVERY: [Scope; 7] = {
        let mut every = [Scope::ConfigReload; 7];
        let mut i = 0;
        while i < Scope::ALL.len() {
            every[i] = Scope::ALL[i];
            i += 1;
        }
        every
    };

    /// The scope's name in config files and on the command line, e.g. `jwks:flush`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JwksFlush => "jwks:flush",
            Scope::JwksRefresh => "jwks:refresh",
            Scope::TokensRevoke => "tokens:revoke",
            Scope::StatusRead => "status:read",
            Scope::EventsPublish => "events:publish",
            Scope::EventsRead => "events:read",
            Scope::ConfigReload => "config:reload",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::EVERY
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope {
                // A scope name is not secret, but it may be arbitrary input: keep it short.
                name: s.chars().take(64).collect(),
            })
    }
}

fn valid_scopes() -> String {
    Scope::EVERY.map(Scope::as_str).join(", ")
}
