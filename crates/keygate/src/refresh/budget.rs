//! The forced-refetch budget: the token bucket, the refetch deferred until its next token,
//! and the rules for when a refetch a token asked for settles the question (see the module
//! docs of [`refresh`](super), "Forced refetches").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::negative::MAX_NEGATIVE_KID_LEN;
use super::sources::Why;
use super::{Outcome, lock, running};
use crate::provider::{Provider, Snapshot};

/// A token counts as there once this close to whole, so that float rounding cannot make the
/// deferred refetch miss the very moment it was scheduled for.
const TOKEN_EPSILON: f64 = 1e-9;

/// The forced-refetch budget: a token bucket measured against the provider's clock, and the
/// one refetch deferred until its next token.
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) burst: f64,
    pub(super) refill: Duration,
    pub(super) last: SystemTime,
    /// When the deferred refetch is due, if one is scheduled.
    pub(super) deferred: Option<SystemTime>,
}

impl Bucket {
    fn top_up(&mut self, now: SystemTime) {
        let elapsed = now.duration_since(self.last).unwrap_or_default();
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(self.burst);
        self.last = self.last.max(now);
    }

    pub(super) fn try_take(&mut self, now: SystemTime) -> bool {
        self.top_up(now);
        if self.tokens >= 1.0 - TOKEN_EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// When the next whole token is there; `None` if never (a burst below one).
    pub(super) fn next_token_at(&mut self, now: SystemTime) -> Option<SystemTime> {
        if self.burst < 1.0 {
            return None;
        }
        self.top_up(now);
        let missing = (1.0 - self.tokens).max(0.0);
        Some(self.last + self.refill.mul_f64(missing))
    }
}

impl Provider {
    /// A refetch because a token named a `kid` we lack (`missing_kid`), or failed under a key
    /// of `seen` (`None`). See the module docs for the policy.
    ///
    /// Returns `None` without waiting when the `kid` is in the negative cache or the bucket
    /// is empty: the caller refuses the token at once rather than queueing behind a limit.
    /// A returned set may still lack the `kid`; the caller refuses the token then too.
    pub(crate) async fn forced_refresh(
        self: &Arc<Self>,
        missing_kid: Option<&str>,
        seen: &Snapshot,
    ) -> Option<Outcome> {
        if self.is_static() {
            return None;
        }
        // Refreshes numbered above this begin after the caller found its key missing: only
        // their answers can prove a `kid` absent.
        let asked = self.refresher.started.load(Ordering::Acquire);
        let now = self.clock.now();
        // Keys changed since the caller looked (another request's refetch finished in
        // between): retry on those rather than spend a refetch, so a burst of tokens signed by
        // a new key costs one fetch and none of them is refused for an empty bucket.
        if let Some(current) = self.snapshot.load_full()
            && current.generation != seen.generation
            && current.is_usable(now)
            && self.settles(&current, missing_kid, seen, asked)
        {
            return Some(Ok(current));
        }
        if let Some(kid) = missing_kid {
            if kid.len() > MAX_NEGATIVE_KID_LEN || self.refresher.is_negative(kid, now) {
                return None;
            }
        }
        // At most two rounds: a joined refetch may have begun before the caller asked, and
        // then a second, begun after, is needed to settle the question.
        let mut inconclusive = None;
        for _ in 0..2 {
            let now = self.clock.now();
            // Read before taking the in-flight lock: the state lock is never held under it.
            let quiet = self.refresher.quiet_until(now);
            let refresh = {
                let mut inflight = lock(&self.refresher.inflight);
                match running(&inflight) {
                    // Joining costs the IdP nothing, even while it asked for quiet.
                    Some(running) => running,
                    None => {
                        let mut bucket = lock(&self.refresher.bucket);
                        if quiet.is_none() && bucket.try_take(now) {
                            drop(bucket);
                            self.start(&mut inflight, Why::Forced)
                        } else {
                            if missing_kid.is_some() {
                                self.defer(&mut bucket, now, quiet);
                            }
                            return inconclusive;
                        }
                    }
                }
            };
            let outcome = refresh.await;
            match &outcome {
                Ok(snap) if !self.settles(snap, missing_kid, seen, asked) => {
                    inconclusive = Some(outcome);
                }
                _ => return Some(outcome),
            }
        }
        inconclusive
    }

    /// Whether `snap` settles a forced refetch: it has the missing `kid`, or (for a bad
    /// signature under `seen`) other keys; or it is the IdP's own answer to a refetch begun
    /// after the caller asked, which proves the `kid` absent. That proof, and only it, puts
    /// the `kid` in the negative cache.
    fn settles(
        &self,
        snap: &Snapshot,
        missing_kid: Option<&str>,
        seen: &Snapshot,
        asked: u64,
    ) -> bool {
        let answered_after = snap.fetch_seq.is_some_and(|seq| seq > asked);
        match missing_kid {
            None => answered_after || snap.generation != seen.generation,
            Some(kid) if snap.keys.has_kid(kid) => true,
            Some(kid) => {
                if answered_after {
                    self.refresher.remember_missing_growing(
                        kid,
                        self.clock.now(),
                        self.config.cache.negative_ttl,
                    );
                }
                answered_after
            }
        }
    }

    /// Schedules the deferred refetch for when the next token is due (and the IdP's quiet
    /// period, if any, is over), unless one is scheduled.
    fn defer(&self, bucket: &mut Bucket, now: SystemTime, quiet: Option<SystemTime>) {
        if bucket.deferred.is_some() {
            return;
        }
        if let Some(due) = bucket.next_token_at(now) {
            bucket.deferred = Some(quiet.map_or(due, |until| due.max(until)));
            tracing::debug!(provider = %self.id, "forced-refetch budget spent; one refetch deferred");
            self.refresher.reschedule.notify_one();
        }
    }
}
