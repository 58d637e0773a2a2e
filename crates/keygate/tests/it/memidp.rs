//! An in-memory identity provider and a verifier around it, for tests that pause tokio time:
//! answers come from memory at once, so no socket or timer stands between a refresh and its
//! answer, and only the test moves the clocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use keygate::fetch::{BoxFuture, FetchRequest, FetchResponse};
use keygate::{
    CacheSettings, Fetch, FetchError, KeyExchange, ProviderConfig, ProviderId, Verifier,
};
use keygate_test_support::{ManualClock, TestKey, jwks};
use serde_json::Value;
use tokio::sync::watch;

use crate::support::{self, Harness};

pub(crate) const T0: u64 = 1_800_000_000;
pub(crate) const ISSUER: &str = "https://idp.test";
pub(crate) const JWKS_URI: &str = "https://idp.test/jwks";
pub(crate) const AUD: &str = "api";

/// Serves a key set from memory and counts requests. An `ETag`, when set, makes it answer a
/// matching `If-None-Match` with a 304. While held, answers wait, with the key set as it was
/// when the request arrived.
#[derive(Debug)]
pub(crate) struct MemoryIdp {
    jwks: Mutex<Value>,
    etag: Mutex<Option<String>>,
    requests: AtomicUsize,
    /// Every URL asked for, in order: whatever a token says, only the JWKS URL may appear.
    urls: Mutex<Vec<String>>,
    gate: watch::Sender<bool>,
}

impl MemoryIdp {
    pub(crate) fn new(keys: &[&TestKey]) -> Arc<Self> {
        Arc::new(MemoryIdp {
            jwks: Mutex::new(jwks(keys)),
            etag: Mutex::new(None),
            requests: AtomicUsize::new(0),
            urls: Mutex::new(Vec::new()),
            gate: watch::channel(true).0,
        })
    }

    /// Serves these keys from now on.
    pub(crate) fn serve(&self, keys: &[&TestKey]) {
        *lock(&self.jwks) = jwks(keys);
    }

    /// Serves this document from now on.
    pub(crate) fn serve_document(&self, document: Value) {
        *lock(&self.jwks) = document;
    }

    /// Sends this `ETag` (and answers it with 304s) from now on.
    pub(crate) fn set_etag(&self, etag: &str) {
        *lock(&self.etag) = Some(etag.to_owned());
    }

    /// The document served now, as sent.
    pub(crate) fn document(&self) -> String {
        lock(&self.jwks).to_string()
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The URLs requested so far, in order.
    pub(crate) fn urls(&self) -> Vec<String> {
        lock(&self.urls).clone()
    }

    /// Holds answers back until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.gate.send_replace(false);
    }

    pub(crate) fn release(&self) {
        self.gate.send_replace(true);
    }
}

impl Fetch for MemoryIdp {
    fn fetch(
        &self,
        request: FetchRequest,
    ) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        lock(&self.urls).push(request.url.to_string());
        let etag = lock(&self.etag).clone();
        let mut headers = HeaderMap::new();
        if let Some(etag) = &etag {
            headers.insert(header::ETAG, HeaderValue::from_str(etag).unwrap());
        }
        let matched = etag.is_some_and(|etag| {
            request
                .headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        });
        let (status, body) = if matched {
            (StatusCode::NOT_MODIFIED, Vec::new())
        } else {
            (StatusCode::OK, self.document().into_bytes())
        };
        let mut gate = self.gate.subscribe();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(FetchResponse {
                status,
                headers,
                body: body.into(),
            })
        })
    }
}

/// A verifier of one provider (`acme/idp`) over a [`MemoryIdp`], judged by a manual clock.
pub(crate) type Rig = support::Rig<Arc<MemoryIdp>>;

impl Rig {
    pub(crate) fn new(
        keys: &[&TestKey],
        cache: CacheSettings,
        exchange: Option<Arc<dyn KeyExchange>>,
    ) -> Self {
        let idp = MemoryIdp::new(keys);
        let clock = Arc::new(ManualClock::at_unix(T0));
        let mut builder = Verifier::builder()
            .provider(provider(cache))
            .clock(clock.clone())
            .fetcher(idp.clone())
            .token_cache(1000);
        if let Some(exchange) = exchange {
            builder = builder.key_exchange(exchange);
        }
        Rig {
            idp,
            harness: Harness::new(clock, builder.build().unwrap(), "attacker"),
        }
    }

    pub(crate) fn id() -> ProviderId {
        ProviderId::new("acme", "idp")
    }
}

/// The provider of a [`Rig`].
pub(crate) fn provider(cache: CacheSettings) -> ProviderConfig {
    ProviderConfig::builder("acme", "idp", ISSUER)
        .jwks_uri(JWKS_URI)
        .audiences([AUD])
        .cache(cache)
        .build()
        .unwrap()
}

/// Cache settings without jitter, so that refresh times are exact.
pub(crate) fn exact_cache() -> CacheSettings {
    let mut cache = CacheSettings::default();
    cache.refresh_jitter = Duration::ZERO;
    cache
}

/// Lets spawned tasks run. Yielding keeps this task runnable, so paused time never jumps
/// ahead on its own while it waits.
pub(crate) async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
