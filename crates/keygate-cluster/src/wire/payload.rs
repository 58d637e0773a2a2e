//! The JSON payload of each event type, and the conversions between events and payloads.
//! A revocation's payload has a module of its own ([`super::revocation`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate::{FlushId, ProviderId, PublishedDocument, PublishedKeySet, Revocation};
use serde::{Deserialize, Serialize};

use super::revocation::{RevokePayload, UnknownRevocation};
use super::{EntryError, MAX_FIELD_BYTES, check_field};
use crate::Event;

/// The payload of each event type.
#[derive(Debug, Serialize, Deserialize)]
struct ProviderPayload {
    tenant: String,
    provider: String,
    /// The flush's id (flush events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeySetPayload {
    tenant: String,
    provider: String,
    jwks: String,
    fetched_at_ms: u64,
    fresh_until_ms: u64,
    etag: Option<String>,
    /// The flush the set was fetched under (absent: never flushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush: Option<String>,
    /// `kid`s the IdP withdrew (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    withdrawn: Vec<String>,
    /// A provider with several JWKS URLs: each URL's document (then `jwks` is empty).
    /// Absent for a provider with one URL, whose entries are as they always were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    documents: Vec<DocumentPayload>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DocumentPayload {
    url: String,
    jwks: String,
    fetched_at_ms: u64,
    fresh_until_ms: u64,
    etag: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppPayload {
    namespace: String,
    key: String,
}

pub(super) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Most withdrawn `kid`s a key-set entry may name.
const MAX_WITHDRAWN: usize = 64;

/// The type name and JSON payload of `event`.
///
/// # Errors
/// [`UnknownRevocation`] for a revocation of a kind the wire format does not have.
pub fn payload(event: &Event) -> Result<(&'static str, String), UnknownRevocation> {
    let json = match event {
        Event::Flush { provider, flush } => serde_json::to_string(&ProviderPayload {
            tenant: provider.tenant().to_owned(),
            provider: provider.name().to_owned(),
            flush: Some(flush.to_string()),
        }),
        Event::Refresh(id) => serde_json::to_string(&ProviderPayload {
            tenant: id.tenant().to_owned(),
            provider: id.name().to_owned(),
            flush: None,
        }),
        Event::Revoke(r) => serde_json::to_string(&RevokePayload::try_from(r)?),
        Event::KeySet { provider, set } => serde_json::to_string(&KeySetPayload {
            tenant: provider.tenant().to_owned(),
            provider: provider.name().to_owned(),
            jwks: set.jwks.to_string(),
            fetched_at_ms: millis(set.fetched_at),
            fresh_until_ms: millis(set.fresh_until),
            etag: set.etag.as_deref().map(str::to_owned),
            flush: set.flush.as_ref().map(ToString::to_string),
            withdrawn: set.withdrawn.clone(),
            documents: set
                .documents
                .iter()
                .map(|d| DocumentPayload {
                    url: d.url.clone(),
                    jwks: d.jwks.to_string(),
                    fetched_at_ms: millis(d.fetched_at),
                    fresh_until_ms: millis(d.fresh_until),
                    etag: d.etag.as_deref().map(str::to_owned),
                })
                .collect(),
        }),
        Event::App { namespace, key } => serde_json::to_string(&AppPayload {
            namespace: namespace.clone(),
            key: key.clone(),
        }),
    };
    Ok((event.kind(), json.unwrap_or_default()))
}

pub(super) fn parse_event(kind: &str, payload: &str) -> Result<Event, EntryError> {
    fn json<'a, T: Deserialize<'a>>(payload: &'a str) -> Result<T, EntryError> {
        serde_json::from_str(payload).map_err(|_| EntryError::Malformed("payload"))
    }
    use check_field as field;
    fn flush_id(id: Option<&str>) -> Result<Option<FlushId>, EntryError> {
        id.map(|id| FlushId::new(id).ok_or(EntryError::Malformed("flush")))
            .transpose()
    }
    fn provider(p: &ProviderPayload) -> Result<ProviderId, EntryError> {
        field(&p.tenant)?;
        field(&p.provider)?;
        Ok(ProviderId::new(&p.tenant, &p.provider))
    }
    Ok(match kind {
        "flush" => {
            let p: ProviderPayload = json(payload)?;
            Event::Flush {
                provider: provider(&p)?,
                // An entry of a version that did not name its flushes is a flush all the same.
                flush: flush_id(p.flush.as_deref())?.unwrap_or_else(FlushId::random),
            }
        }
        "refresh" => Event::Refresh(provider(&json(payload)?)?),
        "revoke" => Event::Revoke(Revocation::try_from(json::<RevokePayload>(payload)?)?),
        "keyset" => {
            let p: KeySetPayload = json(payload)?;
            field(&p.tenant)?;
            field(&p.provider)?;
            if p.etag.as_ref().is_some_and(|e| e.len() > MAX_FIELD_BYTES) {
                return Err(EntryError::Malformed("etag"));
            }
            if p.withdrawn.len() > MAX_WITHDRAWN {
                return Err(EntryError::Malformed("withdrawn"));
            }
            for kid in &p.withdrawn {
                field(kid)?;
            }
            if p.documents.len() > keygate::MAX_JWKS_URIS {
                return Err(EntryError::Malformed("documents"));
            }
            for d in &p.documents {
                field(&d.url)?;
                if d.etag.as_ref().is_some_and(|e| e.len() > MAX_FIELD_BYTES) {
                    return Err(EntryError::Malformed("etag"));
                }
            }
            let set = if p.documents.is_empty() {
                PublishedKeySet::new(
                    p.jwks,
                    from_millis(p.fetched_at_ms),
                    from_millis(p.fresh_until_ms),
                    p.etag.map(Into::into),
                )
            } else {
                PublishedKeySet::from_documents(
                    p.documents
                        .into_iter()
                        .map(|d| {
                            PublishedDocument::new(
                                d.url,
                                d.jwks,
                                from_millis(d.fetched_at_ms),
                                from_millis(d.fresh_until_ms),
                                d.etag.map(Into::into),
                            )
                        })
                        .collect(),
                )
            };
            Event::KeySet {
                provider: ProviderId::new(&p.tenant, &p.provider),
                set: set
                    .after_flush(flush_id(p.flush.as_deref())?)
                    .withdrawing(p.withdrawn),
            }
        }
        "app" => {
            let p: AppPayload = json(payload)?;
            field(&p.namespace)?;
            field(&p.key)?;
            Event::App {
                namespace: p.namespace,
                key: p.key,
            }
        }
        _ => return Err(EntryError::UnknownType),
    })
}
