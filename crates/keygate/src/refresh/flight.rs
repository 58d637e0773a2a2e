//! Single flight: every refresh, whatever asked for it, runs once on its own task and every
//! caller joins it; a flush detaches the one in flight and starts the refetch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use futures_util::FutureExt as _;

use super::sources::Why;
use super::{Inflight, Outcome, lock, running};
use crate::error::KeysUnavailable;
use crate::fetch::{BoxFuture, FetchError};
use crate::provider::{Counters, FlushId, Provider};

impl Provider {
    /// Applies flush `id`: drops the cached keys and everything learnt from them (failures,
    /// remembered `kid`s, a deferred refetch, the IdP's `Retry-After`), detaches the refresh
    /// in flight (its keys, fetched before the flush, will not be installed) and starts the
    /// refetch at once, in the background, so that the provider is not left empty until
    /// some verification happens to ask. Returns `false`, changing nothing, when `id` is the
    /// flush already applied (a replayed or echoed flush).
    pub(crate) fn flush(self: &Arc<Self>, id: FlushId) -> bool {
        if self.is_static() {
            return false;
        }
        let now = self.clock.now();
        {
            // Under the lock that serialises installs: a set fetched before the flush either
            // landed before this (and is dropped here) or is refused after it.
            let mut s = lock(&self.refresher.state);
            if s.flush.as_ref() == Some(&id) {
                return false;
            }
            s.flush = Some(id);
            if let Some(dropped) = self.snapshot.swap(None) {
                s.flushed_kids = dropped.keys.kids().map(str::to_owned).collect();
            }
            s.last_failure = None;
            s.consecutive_failures = 0;
            s.next_attempt_at = now;
            s.quiet_until = None;
        }
        self.sources.reset();
        lock(&self.refresher.negative).clear();
        lock(&self.refresher.bucket).deferred = None;
        {
            let mut inflight = lock(&self.refresher.inflight);
            *inflight = None;
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(self.start(&mut inflight, Why::All));
            }
        }
        self.refresher.reschedule.notify_one();
        tracing::info!(provider = %self.id, "jwks flushed; refetching");
        true
    }

    /// Refetches now, joining a refresh already in flight.
    pub(crate) fn refresh(self: &Arc<Self>) -> Inflight {
        self.refresh_for(Why::Due)
    }

    /// Refetches now, joining a refresh already in flight; for a provider with several JWKS
    /// URLs, asks every one of them (an operator's explicit refresh).
    pub(crate) fn refresh_all(self: &Arc<Self>) -> Inflight {
        self.refresh_for(Why::All)
    }

    fn refresh_for(self: &Arc<Self>, why: Why) -> Inflight {
        let mut inflight = lock(&self.refresher.inflight);
        if let Some(running) = running(&inflight) {
            return running;
        }
        self.start(&mut inflight, why)
    }

    /// Starts a refresh on its own task, so it completes (and updates the cache) even if every
    /// caller gives up waiting. The caller holds the in-flight lock and found none running.
    pub(super) fn start(self: &Arc<Self>, inflight: &mut Option<Inflight>, why: Why) -> Inflight {
        let seq = self.refresher.started.fetch_add(1, Ordering::AcqRel) + 1;
        // This refresh begins after every unknown `kid` refused so far: it does the deferred
        // refetch's job, whatever started it.
        lock(&self.refresher.bucket).deferred = None;
        let provider = Arc::clone(self);
        // What the starter held: a set installed between now and the task running (adopted
        // from the log, say) is then found in the exchange and used, not fetched again.
        let held = self.snapshot.load().as_ref().map(|s| s.fetched_at);
        let task = tokio::spawn(async move { provider.run_refresh(seq, held, why).await });
        let fut: BoxFuture<'static, Outcome> = Box::pin(task.map(|joined| {
            joined.unwrap_or_else(|_| {
                Err(KeysUnavailable::Fetch(Some(Arc::new(
                    FetchError::Transport("refresh task failed".into()),
                ))))
            })
        }));
        let shared = fut.shared();
        // `running` asks the shared future whether it finished, which it only knows once
        // polled to the end: drive it here, so a refresh whose callers all gave up (or that
        // nobody awaited, like a flush's refetch) is never joined again after it finished.
        tokio::spawn(shared.clone().map(drop));
        *inflight = Some(shared.clone());
        shared
    }

    /// Keys for verification: the cached snapshot when usable, else a (single-flight) fetch,
    /// unless a recent failure says to wait.
    pub(crate) async fn usable_snapshot(self: &Arc<Self>) -> Outcome {
        let now = self.clock.now();
        if let Some(snap) = self.snapshot.load_full() {
            if snap.is_usable(now) {
                // Keys adopted outside a runtime (say, a warm start) had no background
                // refresher started; the first verification starts it.
                self.ensure_background();
                return Ok(snap);
            }
        }
        {
            let state = lock(&self.refresher.state);
            if let Some((_, err)) = &state.last_failure {
                if now < state.next_attempt_at {
                    return Err(err.clone());
                }
            }
        }
        let snap = self.refresh().await?;
        if snap.is_usable(self.clock.now()) {
            Ok(snap)
        } else {
            Err(KeysUnavailable::Fetch(None))
        }
    }

    async fn run_refresh(self: Arc<Self>, seq: u64, held: Option<SystemTime>, why: Why) -> Outcome {
        let flush = self.refresher.flush_id();
        if let Some(adopted) = self.from_exchange(held, flush.as_ref()).await {
            // With several URLs, a peer's set may bring some documents and not the one due.
            if !self.still_due(why) {
                return Ok(adopted);
            }
        }
        let fetched = if self.is_multi() {
            self.fetch_documents(seq, flush.clone(), why).await
        } else {
            self.fetch_and_parse(seq, flush.clone()).await
        };
        match fetched {
            Ok(candidate) => {
                Counters::bump(&self.counters.refreshes);
                let Some(snap) = self.install(candidate) else {
                    // Flushed while this fetch was under way: its keys predate the flush.
                    // The flush started a refresh of its own; wait for that one.
                    tracing::debug!(provider = %self.id, "fetch overtaken by a flush; joining the refetch");
                    return self.refresh().await;
                };
                if let Some(exchange) = &self.exchange
                    && let Some(set) = snap.published()
                {
                    exchange.fetched(&self.id, &set);
                }
                Ok(snap)
            }
            Err((err, retry_after)) => {
                if self.refresher.flush_id() != flush {
                    // A failure of a fetch a flush overtook says nothing about the refetch.
                    return self.refresh().await;
                }
                self.record_failure(&err, retry_after);
                // Nothing may be cached (a first fetch that failed) and so no refresher
                // running yet: start it, so the next attempt does not wait for traffic.
                self.ensure_background();
                Err(err)
            }
        }
    }
}
