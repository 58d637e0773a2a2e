//! Brute-force protection for admin API keys: failed attempts are counted per client
//! address, and an address that fails too often is locked out for a while.
//!
//! The threat is an attacker who can reach the admin listener guessing secrets. A generated
//! secret has 256 bits, so guessing is hopeless; what the limiter really protects is the
//! server: every new wrong secret costs one PBKDF2 run per configured key, and without a limit
//! a flood of them would keep a core busy and the admin API slow for its operators. So the
//! lock is checked before any hashing, and a locked-out address is refused *whatever* it
//! presents, the right secret included: answering a valid key differently from an invalid one
//! while locked would turn the lockout into an oracle.
//!
//! Counting: the first failure of an address opens a window of `failure_window`; its
//! `max_failures`-th failure inside that window locks the address out for `failure_window`
//! from then on, and the count starts again after the lockout. (Windows start at a failure
//! rather than on a clock tick, so an address can spread at most `2 * (max_failures - 1)`
//! failures over a window's boundary without being locked; its sustained rate stays below
//! `max_failures` per window.) A success resets nothing: a holder of a low-scope key must not
//! be able to interleave it with guesses at a stronger one.
//!
//! Addresses are IPv4 addresses, or IPv6 /64 prefixes (one host usually owns a whole /64, so
//! counting single IPv6 addresses would let it rotate through 2^64 of them). Behind a reverse
//! proxy every client shares the proxy's address; keep the admin listener private instead.
//!
//! Memory is bounded: at most [`MAX_TRACKED_CLIENTS`] addresses are tracked. When the table is
//! full, expired entries are dropped first, then the oldest entry that is not locked out, so
//! that filling the table from many addresses cannot unlock the one under lockout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The default number of failures that locks an address out.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// The default window in which failures are counted, and the length of a lockout.
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The most client addresses tracked at once (about 50 bytes each).
pub const MAX_TRACKED_CLIENTS: usize = 10_000;

/// How many failed API-key attempts an address may make (`[admin] max_failures`) within
/// `failure_window` before it is locked out for `failure_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureLimit {
    /// Failures within [`window`](Self::window) that lock an address out; at least 1.
    pub max_failures: u32,
    /// How long failures are counted, and how long a lockout lasts; not zero.
    pub window: Duration,
}

impl FailureLimit {
    /// A limit of `max_failures` per `window`.
    ///
    /// # Errors
    /// A description of the problem when `max_failures` is 0 or `window` is zero.
    pub fn new(max_failures: u32, window: Duration) -> Result<Self, &'static str> {
        if max_failures == 0 {
            return Err("must be at least 1");
        }
        if window.is_zero() {
            return Err("must be longer than zero");
        }
        Ok(FailureLimit {
            max_failures,
            window,
        })
    }
}

impl Default for FailureLimit {
    fn default() -> Self {
        FailureLimit {
            max_failures: DEFAULT_MAX_FAILURES,
            window: DEFAULT_FAILURE_WINDOW,
        }
    }
}

/// The unit addresses are counted by: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Client(IpAddr);

impl Client {
    pub(super) fn of(addr: IpAddr) -> Client {
        match addr {
            IpAddr::V4(v4) => Client(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
                Some(v4) => Client(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Client(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// The failure table.
pub(super) struct Limiter {
    limit: FailureLimit,
    clients: Mutex<HashMap<Client, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the current counting window began (at its first failure).
    window_start: Instant,
    /// Failures in the current window.
    failures: u32,
    /// Set while the address is locked out.
    locked_until: Option<Instant>,
}

impl Limiter {
    pub(super) fn new(limit: FailureLimit) -> Limiter {
        Limiter {
            limit,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn limit(&self) -> FailureLimit {
        self.limit
    }

    /// How long `client` remains locked out, if it is.
    pub(super) fn lockout(&self, client: Client, now: Instant) -> Option<Duration> {
        self.table()
            .get(&client)
            .and_then(|e| e.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Counts a failure of `client`; true when it locked the address out.
    pub(super) fn fail(&self, client: Client, now: Instant) -> bool {
        let window = self.limit.window;
        let mut table = self.table();
        if table.len() >= MAX_TRACKED_CLIENTS && !table.contains_key(&client) {
            make_room(&mut table, now, window);
        }
        let entry = table.entry(client).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        match entry.locked_until {
            // Another request of this address locked it while this one was being checked.
            Some(until) if until > now => return false,
            Some(_) => {
                *entry = Entry {
                    window_start: now,
                    failures: 0,
                    locked_until: None,
                };
            }
            None if now.duration_since(entry.window_start) >= window => {
                entry.window_start = now;
                entry.failures = 0;
            }
            None => {}
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.limit.max_failures {
            entry.locked_until = Some(now + window);
            entry.failures = 0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    pub(super) fn tracked(&self) -> usize {
        self.table().len()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<Client, Entry>> {
        // Every update is a whole-entry write; a panic elsewhere cannot leave one half-done.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entry {
    /// Whether the entry still matters: locked out, or inside its counting window.
    fn live(&self, now: Instant, window: Duration) -> bool {
        match self.locked_until {
            Some(until) => until > now,
            None => now.duration_since(self.window_start) < window,
        }
    }
}

/// Drops the entries that no longer matter; if none did, the oldest entry not locked out
/// (or, when every entry is locked out, the one whose lockout ends first).
fn make_room(table: &mut HashMap<Client, Entry>, now: Instant, window: Duration) {
    table.retain(|_, e| e.live(now, window));
    if table.len() < MAX_TRACKED_CLIENTS {
        return;
    }
    let victim = table
        .iter()
        .min_by_key(|(_, e)| match e.locked_until {
            None => (false, e.window_start),
            Some(until) => (true, until),
        })
        .map(|(client, _)| *client);
    if let Some(victim) = victim {
        table.remove(&victim);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn limiter(max: u32, secs: u64) -> Limiter {
        Limiter::new(FailureLimit::new(max, Duration::from_secs(secs)).unwrap())
    }

    fn v4(last: u8) -> Client {
        Client::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn limits_refuse_zero() {
        assert!(FailureLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(FailureLimit::new(1, Duration::ZERO).is_err());
        assert_eq!(
            FailureLimit::default(),
            FailureLimit::new(10, Duration::from_secs(60)).unwrap()
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(a.into()), Client::of(b.into()));
        assert_ne!(Client::of(a.into()), Client::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Client::of(mapped.into()), v4(7));
    }

    #[test]
    fn the_nth_failure_in_the_window_locks_out_for_the_window() {
        let l = limiter(3, 60);
        let t0 = Instant::now();
        assert!(!l.fail(v4(1), t0));
        assert!(!l.fail(v4(1), t0 + Duration::from_secs(10)));
        assert_eq!(l.lockout(v4(1), t0 + Duration::from_secs(10)), None);
        assert!(l.fail(v4(1), t0 + Duration::from_secs(20)));
        assert_eq!(
            l.lockout(v4(1), t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            l.lockout(v4(1), t0 + Duration::from_secs(79)),
            Some(Duration::from_secs(1))
        );
        // Other addresses are not affected.
        assert_eq!(l.lockout(v4(2), t0 + Duration::from_secs(20)), None);
        // After the lockout, the count starts again from zero.
        let after = t0 + Duration::from_secs(80);
        assert_eq!(l.lockout(v4(1), after), None);
        assert!(!l.fail(v4(1), after));
        assert!(!l.fail(v4(1), after));
        assert!(l.fail(v4(1), after));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_lock_out() {
        let l = limiter(3, 60);
        let t0 = Instant::now();
        for minute in 0..10u64 {
            let t = t0 + Duration::from_secs(61 * minute);
            assert!(!l.fail(v4(1), t));
            assert!(!l.fail(v4(1), t + Duration::from_secs(1)));
        }
        assert_eq!(l.lockout(v4(1), t0 + Duration::from_secs(700)), None);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_locked_out_addresses() {
        let l = limiter(2, 60);
        let t0 = Instant::now();
        assert!(!l.fail(v4(1), t0));
        assert!(l.fail(v4(1), t0));
        // A flood of failures from more addresses than the table holds...
        let flood = u32::try_from(MAX_TRACKED_CLIENTS).unwrap() + 500;
        for n in 0..flood {
            let client = Client::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
            assert!(!l.fail(client, t0 + Duration::from_millis(1)));
        }
        assert_eq!(l.tracked(), MAX_TRACKED_CLIENTS);
        // ... does not unlock the address under lockout.
        assert!(l.lockout(v4(1), t0 + Duration::from_secs(1)).is_some());
        // Once everything has expired, the next newcomer clears the table.
        assert!(!l.fail(v4(3), t0 + Duration::from_secs(200)));
        assert_eq!(l.tracked(), 1);
    }
}
