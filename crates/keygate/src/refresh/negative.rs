//! The negative cache: `kid`s the IdP's own answers showed missing, refused without a
//! refetch for a while (see the module docs of [`refresh`](super), "Negative cache").

use std::time::{Duration, SystemTime};

use super::{Refresher, lock};

/// Longest `kid` remembered in the negative cache; real `kid`s are far shorter.
pub(super) const MAX_NEGATIVE_KID_LEN: usize = 256;

/// Most `kid`s remembered per provider; past it, expired entries go, then all of them.
const MAX_NEGATIVE_ENTRIES: usize = 1024;

/// How long a `kid` is first remembered as missing; each further miss doubles it, up to
/// `negative_ttl`. Withdrawn `kid`s get the whole `negative_ttl` at once.
const FIRST_NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// A `kid` remembered as missing: refused without a refetch until `until`. `period` is how
/// long it was remembered for, which the next miss of the same `kid` doubles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Negative {
    pub(super) until: SystemTime,
    pub(super) period: Duration,
}

impl Refresher {
    pub(super) fn is_negative(&self, kid: &str, now: SystemTime) -> bool {
        lock(&self.negative).get(kid).is_some_and(|n| now < n.until)
    }

    /// Remembers that the IdP's answer to a refetch begun after `kid` was asked for lacked it:
    /// for [`FIRST_NEGATIVE_TTL`] the first time, then twice as long as the last time at each
    /// miss that follows within `cap` of the last entry's end, up to `cap` (`negative_ttl`).
    ///
    /// A new key the IdP (or the CDN in front of it) publishes a moment after the first tokens
    /// it signed is then refused for about as long as the lag, not for the whole
    /// `negative_ttl`. A `kid` nobody will ever publish soon costs one refetch per period,
    /// paid from the bucket like any other, so the IdP's load stays within the budget.
    pub(super) fn remember_missing_growing(&self, kid: &str, now: SystemTime, cap: Duration) {
        let period = {
            let neg = lock(&self.negative);
            match neg.get(kid) {
                Some(last) if now <= last.until + cap => last.period.saturating_mul(2),
                _ => FIRST_NEGATIVE_TTL,
            }
        };
        self.remember_missing(kid, now, period.min(cap));
    }

    /// Remembers `kid` as missing for `ttl`.
    pub(super) fn remember_missing(&self, kid: &str, now: SystemTime, ttl: Duration) {
        if kid.len() > MAX_NEGATIVE_KID_LEN || ttl.is_zero() {
            return;
        }
        let mut neg = lock(&self.negative);
        if neg.len() >= MAX_NEGATIVE_ENTRIES {
            neg.retain(|_, n| now < n.until);
            if neg.len() >= MAX_NEGATIVE_ENTRIES {
                neg.clear();
            }
        }
        neg.insert(
            kid.into(),
            Negative {
                until: now + ttl,
                period: ttl,
            },
        );
    }
}
