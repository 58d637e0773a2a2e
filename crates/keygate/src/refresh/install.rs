//! Installing a key set: a [`Candidate`] fetched from the IdP or adopted from a peer becomes
//! the snapshot readers load, under the lock that serialises installs and against any flush.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::background::refresh_ahead_of_expiry;
use super::sources;
use super::{Candidate, MIN_REFRESH_INTERVAL, State, lock};
use crate::error::{JwksError, KeysUnavailable};
use crate::exchange::PublishedKeySet;
use crate::fetch::DEFAULT_MAX_BODY_BYTES;
use crate::freshness::Freshness;
use crate::jwk::KeySet;
use crate::provider::{Counters, FlushId, Provider, Snapshot, next_generation};

/// Most withdrawn `kid`s a set carries (and an adopter remembers) per install.
const MAX_WITHDRAWN: usize = 64;

impl Provider {
    /// Installs a set another replica pushed, if its `fetched_at` is newer than the held set's
    /// and it is still usable under this provider's policy. `Ok(false)` when ignored.
    ///
    /// # Errors
    /// The set does not parse into a usable key set under this provider's limits.
    pub(crate) fn adopt(self: &Arc<Self>, set: &PublishedKeySet) -> Result<bool, JwksError> {
        // Checked first so that replaying old entries of a log costs no parse.
        if self.holds_published(set) || set.flush != self.refresher.flush_id() {
            return Ok(false);
        }
        let candidate = self.candidate_from(set)?;
        let usable_until = candidate.usable_until(self.config.cache.stale_window);
        if self.clock.now() > usable_until {
            return Ok(false);
        }
        let installed = self.install_if_newer(candidate).is_some();
        if installed {
            Counters::bump(&self.counters.adopted);
            tracing::debug!(provider = %self.id, "adopted a key set from another replica");
        }
        Ok(installed)
    }

    /// Asks the key exchange for a set a peer fetched and installs it if it is newer than the
    /// held one and still fresh. `None`: fetch from the IdP.
    pub(super) async fn from_exchange(
        self: &Arc<Self>,
        held: Option<SystemTime>,
        flush: Option<&FlushId>,
    ) -> Option<Arc<Snapshot>> {
        let exchange = self.exchange.as_ref()?;
        // A peer's fetch is worth waiting for about as long as one of our own attempts.
        let wait = self.config.retry.attempt_timeout;
        let asked = exchange.before_fetch(&self.id, held, flush);
        let set = match tokio::time::timeout(wait, asked).await {
            Ok(set) => set?,
            Err(_) => {
                tracing::debug!(provider = %self.id, "key exchange did not answer in time");
                return None;
            }
        };
        if held.is_some_and(|held| set.fetched_at <= held) {
            tracing::debug!(provider = %self.id, "key set from the exchange is not newer than ours");
            return None;
        }
        if set.flush.as_ref() != flush {
            tracing::debug!(provider = %self.id, "key set from the exchange predates a flush");
            return None;
        }
        let candidate = match self.candidate_from(&set) {
            Ok(candidate) => candidate,
            Err(e) => {
                tracing::warn!(
                    provider = %self.id,
                    error = %e,
                    "key set from the exchange refused; fetching from the issuer"
                );
                return None;
            }
        };
        if !candidate.freshness.is_fresh(self.clock.now()) {
            tracing::debug!(provider = %self.id, "key set from the exchange is no longer fresh");
            return None;
        }
        let Some(snap) = self.install_if_newer(candidate) else {
            // The same set arrived meanwhile by the push path (`Verifier::adopt`): use it
            // rather than asking the IdP for what we already hold.
            return self
                .snapshot
                .load_full()
                .filter(|held| held.fetched_at >= set.fetched_at && held.flush == set.flush);
        };
        Counters::bump(&self.counters.adopted);
        Some(snap)
    }

    /// Whether the held set was fetched at or after `at`.
    pub(super) fn holds_newer_than(&self, at: SystemTime) -> bool {
        self.snapshot
            .load()
            .as_ref()
            .is_some_and(|held| at <= held.fetched_at)
    }

    /// Installs a set fetched from the IdP, since it is the IdP's latest word, unless a flush
    /// came after its fetch began (`None`).
    pub(super) fn install(self: &Arc<Self>, candidate: Candidate) -> Option<Arc<Snapshot>> {
        self.install_checked(candidate, false)
    }

    /// Installs a set from another replica if it is newer than the held one and was fetched
    /// under the flush in force, checked under the lock that serialises installs so that two
    /// adoptions cannot reorder and no flush slips in between.
    fn install_if_newer(self: &Arc<Self>, candidate: Candidate) -> Option<Arc<Snapshot>> {
        self.install_checked(candidate, true)
    }

    /// Installs `candidate` unless a flush came after its fetch began or, with `only_newer`,
    /// the held set is as new; both checked under the lock that serialises installs.
    fn install_checked(
        self: &Arc<Self>,
        candidate: Candidate,
        only_newer: bool,
    ) -> Option<Arc<Snapshot>> {
        let mut state = lock(&self.refresher.state);
        if state.flush != candidate.flush || (only_newer && self.holds_candidate(&candidate)) {
            return None;
        }
        let (snap, changed) = self.install_locked(&mut state, candidate);
        drop(state);
        self.installed(&snap, changed);
        Some(snap)
    }

    /// Swaps `candidate` in, keeping the generation (and so the verified tokens) when its keys
    /// are the ones held; records the success and schedules the next refresh ahead of the new
    /// expiry. Returns the snapshot and whether the keys changed.
    fn install_locked(&self, state: &mut State, candidate: Candidate) -> (Arc<Snapshot>, bool) {
        let now = self.clock.now();
        let cache = &self.config.cache;
        let current = self.snapshot.load_full();
        let candidate = self.merge_documents(candidate, current.as_deref(), now);
        let fetched_at = candidate.fetched_at();
        let usable_until = candidate.usable_until(cache.stale_window);
        let (keys, generation, changed) = match &current {
            Some(cur)
                if Arc::ptr_eq(&cur.keys, &candidate.keys)
                    || cur.keys.same_keys(&candidate.keys) =>
            {
                (Arc::clone(&cur.keys), cur.generation, false)
            }
            _ => (candidate.keys, next_generation(), true),
        };
        // What the keys before these had and these lack (or what the publisher says its set
        // withdrew): the IdP's answer, after those `kid`s were known, no longer has them.
        let before: Vec<String> = match &current {
            Some(cur) => cur.keys.kids().map(str::to_owned).collect(),
            None => std::mem::take(&mut state.flushed_kids),
        };
        let mut withdrawn: Vec<String> = before
            .into_iter()
            .chain(candidate.withdrawn)
            .filter(|kid| !keys.has_kid(kid))
            .collect();
        withdrawn.sort_unstable();
        withdrawn.dedup();
        withdrawn.truncate(MAX_WITHDRAWN);
        let expires = candidate.freshness.fetched_at() + candidate.freshness.ttl();
        state.last_failure = None;
        state.consecutive_failures = 0;
        if candidate.fetch_seq.is_some() {
            // The IdP answered again. (A peer's set says nothing about our own requests.)
            state.quiet_until = None;
        }
        let ttl = expires.duration_since(now).unwrap_or_default();
        let ahead = refresh_ahead_of_expiry(cache, ttl, fastrand::f64());
        // An adopted set already past its lifetime refreshes after the minimum interval.
        state.next_attempt_at = expires
            .checked_sub(ahead)
            .unwrap_or(now)
            .max(now + MIN_REFRESH_INTERVAL);
        if let Some(retry) = self.next_url_retry() {
            // A failing URL of several is asked again at its own time.
            state.next_attempt_at = state
                .next_attempt_at
                .min(retry.max(now + MIN_REFRESH_INTERVAL));
        }
        let snap = Arc::new(Snapshot {
            keys,
            generation,
            fetched_at,
            freshness: Some(candidate.freshness),
            usable_until: Some(usable_until),
            url: candidate.url,
            jwks: candidate.jwks,
            etag: candidate.etag,
            fetch_seq: candidate.fetch_seq,
            flush: candidate.flush,
            withdrawn,
            documents: candidate.documents,
        });
        // Before the keys are visible: a verification that sees them must also see the misses
        // judged against the old keys gone and the `kid`s these withdrew remembered, or it
        // could spend a refetch on a withdrawn `kid` in between.
        if changed {
            lock(&self.refresher.negative).clear();
        }
        for kid in &snap.withdrawn {
            self.refresher
                .remember_missing(kid, now, self.config.cache.negative_ttl);
        }
        self.snapshot.store(Some(Arc::clone(&snap)));
        (snap, changed)
    }

    pub(super) fn installed(self: &Arc<Self>, snap: &Snapshot, changed: bool) {
        if changed {
            tracing::info!(provider = %self.id, keys = ?snap.keys, "jwks updated");
        }
        self.refresher.reschedule.notify_one();
        self.ensure_background();
    }

    /// Parses a set from another replica exactly like a fetched body, under this provider's
    /// limits and TTL policy.
    fn candidate_from(&self, set: &PublishedKeySet) -> Result<Candidate, JwksError> {
        if self.is_multi() {
            return self.candidate_from_documents(set);
        }
        if set.jwks.len() > DEFAULT_MAX_BODY_BYTES {
            return Err(JwksError::TooLarge(DEFAULT_MAX_BODY_BYTES));
        }
        let keys = self.parse(set.jwks.as_bytes())?;
        let url = self.known_jwks_url();
        let freshness = Freshness::adopted(
            url.as_ref(),
            set.fetched_at,
            set.fresh_until,
            set.etag.as_deref(),
            &self.config.cache.ttl,
        );
        Ok(Candidate {
            keys: Arc::new(keys),
            freshness,
            url,
            jwks: Some(Arc::clone(&set.jwks)),
            etag: set.etag.clone(),
            fetch_seq: None,
            flush: set.flush.clone(),
            withdrawn: set.withdrawn.clone(),
            documents: Vec::new(),
        })
    }

    pub(super) fn parse(&self, document: &[u8]) -> Result<KeySet, JwksError> {
        let keys = KeySet::parse(
            document,
            &self.config.algorithms,
            self.config.cache.max_keys,
        )?;
        if keys.usable() == 0 {
            // An empty set never replaces a non-empty one, and is no use as a first set.
            return Err(JwksError::Empty);
        }
        Ok(keys)
    }

    /// Fetches and parses, as refresh number `seq`, begun under `flush`.
    pub(super) async fn fetch_and_parse(
        &self,
        seq: u64,
        flush: Option<FlushId>,
    ) -> Result<Candidate, (KeysUnavailable, Option<Duration>)> {
        let url = self
            .jwks_url()
            .await
            .map_err(|e| (KeysUnavailable::Fetch(Some(Arc::new(e))), None))?;
        // What we hold from that URL, to revalidate (`If-None-Match`, 304).
        let held = self
            .snapshot
            .load_full()
            .filter(|s| s.url.as_ref() == Some(&url))
            .and_then(|s| {
                Some(Arc::new(sources::Document {
                    url: url.clone(),
                    keys: Arc::clone(&s.keys),
                    jwks: Arc::clone(s.jwks.as_ref()?),
                    etag: s.etag.clone(),
                    freshness: s.freshness.clone()?,
                    fetch_seq: s.fetch_seq,
                }))
            });
        let document = self.fetch_document(&url, held.as_ref(), seq).await?;
        Ok(Candidate {
            keys: document.keys,
            freshness: document.freshness,
            url: Some(document.url),
            jwks: Some(document.jwks),
            etag: document.etag,
            fetch_seq: document.fetch_seq,
            flush,
            withdrawn: Vec::new(),
            documents: Vec::new(),
        })
    }
}
