//! Policy: which requests `/verify` lets through, decided per route from the request's method,
//! normalized path and host, and the verified token's provider, scopes and claims.
//!
//! The `[policy]` section is compiled once at config load (`config.rs`) into a [`Policy`]:
//! globs pre-split into segments (`glob.rs`), methods upper-cased, hosts lower-cased, claim
//! conditions parsed (`claims.rs`), challenge headers built. Evaluation is then a scan over
//! the routes in file order, first match wins, with no allocation but the path's own
//! normalization (`path.rs`). Counters per route and reason are allocated at compile time too,
//! so counting a decision is one relaxed atomic add.
//!
//! The running policy sits behind a [`SharedPolicy`] (an `ArcSwap`): a request loads it once
//! and sees one policy from start to end; a reload stores a new one.

mod claims;
mod config;
mod glob;
mod path;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::HeaderValue;
use serde_json::{Map, Value};

pub(crate) use config::FilePolicy;
pub use path::{NormalizedPath, PathError};

use claims::ClaimRule;
use glob::Glob;

/// What happens to a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DefaultAction {
    /// 403 `no_route`.
    Deny,
    /// Any valid token (what `/verify` does without a policy).
    Authenticate,
}

/// Why a request was allowed or refused under a policy: the `X-Auth-Reason` code and the
/// `reason` label of `keygate_policy_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyReason {
    /// A valid token met every condition.
    Ok,
    /// An anonymous route: no token asked for.
    Anonymous,
    /// No route matched and the default is `deny`.
    NoRoute,
    /// The path could not be normalized unambiguously.
    InvalidPath,
    /// The proxy's headers name two different methods or paths.
    AmbiguousRequest,
    /// A required scope is missing.
    InsufficientScope,
    /// A claim condition is not met.
    ClaimUnmet,
    /// The token's provider is not one the route accepts.
    ProviderNotAllowed,
    /// The route needs a token and there is none.
    MissingToken,
    /// The token was refused (the verification metrics have the detail).
    InvalidToken,
    /// The token could not be checked (keys or revocations unavailable).
    Unavailable,
}

impl PolicyReason {
    /// Every reason, in metric order.
    pub const ALL: [PolicyReason; 11] = [
        PolicyReason::Ok,
        PolicyReason::Anonymous,
        PolicyReason::NoRoute,
        PolicyReason::InvalidPath,
        PolicyReason::AmbiguousRequest,
        PolicyReason::InsufficientScope,
        PolicyReason::ClaimUnmet,
        PolicyReason::ProviderNotAllowed,
        PolicyReason::MissingToken,
        PolicyReason::InvalidToken,
        PolicyReason::Unavailable,
    ];

    /// The stable code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyReason::Ok => "ok",
            PolicyReason::Anonymous => "anonymous",
            PolicyReason::NoRoute => "no_route",
            PolicyReason::InvalidPath => "invalid_path",
            PolicyReason::AmbiguousRequest => "ambiguous_request",
            PolicyReason::InsufficientScope => "insufficient_scope",
            PolicyReason::ClaimUnmet => "claim_unmet",
            PolicyReason::ProviderNotAllowed => "provider_not_allowed",
            PolicyReason::MissingToken => "missing_token",
            PolicyReason::InvalidToken => "invalid_token",
            PolicyReason::Unavailable => "unavailable",
        }
    }

    /// `allow` or `deny`.
    #[must_use]
    pub const fn decision(self) -> &'static str {
        match self {
            PolicyReason::Ok | PolicyReason::Anonymous => "allow",
            _ => "deny",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The request being authorized, as the proxy described it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The method, in any case.
    pub method: &'a str,
    /// The normalized path.
    pub path: &'a NormalizedPath,
    /// The host, with or without a port, in any case.
    pub host: Option<&'a str>,
}

/// Which route a request falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// The route at this index.
    Route(usize),
    /// No route matched; any valid token will do.
    Default,
    /// No route matched; refused (`no_route`).
    NoRoute,
}

/// A compiled policy. Without a `[policy]` section it has no routes and the default
/// `authenticate`, and `/verify` behaves as it did before policies existed.
#[derive(Debug)]
pub struct Policy {
    default: DefaultAction,
    routes: Box<[Route]>,
    /// The routes whose every glob starts with a literal segment, by that segment, in file
    /// order: a request is tried only against the routes listed under its first segment
    /// and those in `wild`.
    index: HashMap<Box<str>, Box<[usize]>>,
    /// The routes with a glob starting with `*` or `**`, in file order.
    wild: Box<[usize]>,
    configured: bool,
    /// One row per route, then one for requests no route decided; one slot per reason.
    counters: Box<[[AtomicU64; PolicyReason::ALL.len()]]>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    name: Box<str>,
    header: HeaderValue,
    paths: Box<[Glob]>,
    methods: Option<Box<[Box<str>]>>,
    hosts: Option<Box<[HostPattern]>>,
    anonymous: bool,
    providers: Option<Box<[ProviderName]>>,
    scopes: Box<[Box<str>]>,
    any_scopes: Box<[Box<str>]>,
    claims: Box<[ClaimRule]>,
    /// The RFC 6750 section 3.1 challenge of a scope refusal.
    scope_challenge: Option<String>,
    /// The top-level claims the route's scopes and conditions read (`scope` and `scp` for
    /// scopes, the first step of each pointer): only these are parsed per request.
    claim_names: Box<[Box<str>]>,
}

/// The outcome of [`Policy::evaluate`], the dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The route that decided, if any.
    pub route: Option<String>,
    /// Why.
    pub reason: PolicyReason,
    /// The status `/verify` would answer with (200, 401 or 403).
    pub status: u16,
}

impl Verdict {
    /// Whether the request would be let through.
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.reason.decision() == "allow"
    }
}

impl Policy {
    fn new(default: DefaultAction, routes: Vec<Route>, configured: bool) -> Policy {
        let rows = routes.len() + 1;
        let mut index: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut wild = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let firsts: Option<Vec<&str>> = route.paths.iter().map(Glob::first_literal).collect();
            match firsts {
                Some(firsts) => {
                    for first in firsts {
                        let list = index.entry(first.into()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                None => wild.push(i),
            }
        }
        Policy {
            default,
            index: index.into_iter().map(|(k, v)| (k, v.into())).collect(),
            wild: wild.into(),
            routes: routes.into(),
            configured,
            counters: (0..rows)
                .map(|_| [const { AtomicU64::new(0) }; PolicyReason::ALL.len()])
                .collect(),
        }
    }

    /// No `[policy]` section: today's behaviour.
    #[must_use]
    pub fn unconfigured() -> Policy {
        Policy::new(DefaultAction::Authenticate, Vec::new(), false)
    }

    /// Whether a `[policy]` section was configured. Without one, `/verify` does exactly
    /// what it did before policies existed.
    #[must_use]
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// The routes, in file order.
    #[must_use]
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route a request falls under: the first matching one in file order.
    #[must_use]
    pub fn select(&self, target: &Target<'_>) -> Selected {
        // Split once; a path deeper than this is matched from a heap copy.
        let mut stack: [&str; 32] = [""; 32];
        let mut heap = Vec::new();
        let mut n = 0;
        for seg in target.path.segments() {
            if n < stack.len() {
                stack[n] = seg;
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack);
                }
                heap.push(seg);
            }
            n += 1;
        }
        let segments = if heap.is_empty() {
            &stack[..n]
        } else {
            &heap[..]
        };
        let host = target.host.map(normalize_host);
        // The candidates in file order: the routes listed under the first segment merged
        // with those that start with a wildcard.
        let listed = self
            .index
            .get(segments.first().copied().unwrap_or(""))
            .map_or(&[][..], |l| &l[..]);
        let (mut a, mut b) = (listed.iter().peekable(), self.wild.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            let Some(&i) = next else { break };
            if self.routes[i].matches(target.method, segments, host.as_deref()) {
                return Selected::Route(i);
            }
        }
        match self.default {
            DefaultAction::Deny => Selected::NoRoute,
            DefaultAction::Authenticate => Selected::Default,
        }
    }

    /// Whether a verified token of `provider` (tenant, name) with `claims` may pass route
    /// `index`; the refusal's reason if not.
    ///
    /// # Errors
    /// The [`PolicyReason`] of the refusal.
    pub fn authorize(
        &self,
        index: usize,
        provider: Option<(&str, &str)>,
        claims: &Map<String, Value>,
    ) -> Result<(), PolicyReason> {
        let route = &self.routes[index];
        if let Some(allowed) = &route.providers {
            let ok = provider
                .is_some_and(|(t, n)| allowed.iter().any(|a| *a.tenant == *t && *a.name == *n));
            if !ok {
                return Err(PolicyReason::ProviderNotAllowed);
            }
        }
        if !route.scopes.is_empty() || !route.any_scopes.is_empty() {
            let has = |s: &str| claims::granted(claims).any(|g| g == s);
            let all = route.scopes.iter().all(|s| has(s));
            let any = route.any_scopes.is_empty() || route.any_scopes.iter().any(|s| has(s));
            if !(all && any) {
                return Err(PolicyReason::InsufficientScope);
            }
        }
        if route.claims.iter().all(|c| c.holds(claims)) {
            Ok(())
        } else {
            Err(PolicyReason::ClaimUnmet)
        }
    }

    /// The claims route `index` reads, parsed from a verified token's claims set (JSON
    /// text): only the top-level members its scopes and conditions look at, so a route that
    /// reads none costs nothing and one that reads a few does not build the whole set.
    #[must_use]
    pub fn claims_for(&self, index: usize, claims_json: &str) -> Map<String, Value> {
        let names = &self.routes[index].claim_names;
        if names.is_empty() {
            return Map::new();
        }
        claims::pick(claims_json, names)
    }

    /// Counts one decision. Lock-free and allocation-free.
    pub fn record(&self, route: Option<usize>, reason: PolicyReason) {
        let row = route.unwrap_or(self.routes.len()).min(self.routes.len());
        self.counters[row][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Every nonzero count as (route name or `None`, reason, count).
    pub fn counts(&self) -> impl Iterator<Item = (Option<&str>, PolicyReason, u64)> {
        self.counters
            .iter()
            .enumerate()
            .flat_map(move |(row, slots)| {
                let route = self.routes.get(row).map(|r| &*r.name);
                PolicyReason::ALL
                    .iter()
                    .zip(slots)
                    .filter_map(move |(&reason, c)| {
                        let n = c.load(Ordering::Relaxed);
                        (n > 0).then_some((route, reason, n))
                    })
            })
    }

    /// Takes over the counts of `old`'s routes of the same names (and of its undecided
    /// row), so that a reload does not reset `keygate_policy_decisions_total`.
    pub fn carry_counts_from(&self, old: &Policy) {
        for (row, slots) in old.counters.iter().enumerate() {
            let new_row = match old.routes.get(row) {
                Some(r) => self.routes.iter().position(|n| n.name == r.name),
                None => Some(self.routes.len()),
            };
            if let Some(new_row) = new_row {
                for (to, from) in self.counters[new_row].iter().zip(slots) {
                    to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
    }

    /// The dry run: what `/verify` would answer for `method`, `uri`, `host` and a valid token
    /// of `provider` carrying `claims` (or no token at all with `claims` = `None`).
    #[must_use]
    pub fn evaluate(
        &self,
        method: &str,
        uri: &str,
        host: Option<&str>,
        provider: Option<(&str, &str)>,
        claims: Option<&Map<String, Value>>,
    ) -> Verdict {
        let verdict = |route: Option<usize>, reason: PolicyReason, status: u16| Verdict {
            route: route.map(|i| self.routes[i].name.to_string()),
            reason,
            status,
        };
        let Ok(path) = NormalizedPath::new(uri.as_bytes()) else {
            return verdict(None, PolicyReason::InvalidPath, 403);
        };
        let target = Target {
            method,
            path: &path,
            host,
        };
        let route = match self.select(&target) {
            Selected::NoRoute => return verdict(None, PolicyReason::NoRoute, 403),
            Selected::Route(i) if self.routes[i].anonymous => {
                return verdict(Some(i), PolicyReason::Anonymous, 200);
            }
            Selected::Route(i) => Some(i),
            Selected::Default => None,
        };
        let Some(claims) = claims else {
            return verdict(route, PolicyReason::MissingToken, 401);
        };
        match route.map(|i| self.authorize(i, provider, claims)) {
            None | Some(Ok(())) => verdict(route, PolicyReason::Ok, 200),
            Some(Err(reason)) => verdict(route, reason, 403),
        }
    }
}

impl Route {
    /// The route's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as the `X-Auth-Route` value.
    #[must_use]
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether the route lets requests through without a token.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// The `WWW-Authenticate` challenge of a scope refusal on this route.
    #[must_use]
    pub fn scope_challenge(&self) -> Option<&str> {
        self.scope_challenge.as_deref()
    }

    fn matches(&self, method: &str, segments: &[&str], host: Option<&str>) -> bool {
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        {
            return false;
        }
        if let Some(hosts) = &self.hosts {
            match host {
                Some(h) if hosts.iter().any(|p| p.matches(h)) => {}
                _ => return false,
            }
        }
        self.paths.iter().any(|g| g.matches(segments))
    }
}

/// A `tenant/provider` pair a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderName {
    pub(crate) tenant: Box<str>,
    pub(crate) name: Box<str>,
}

/// A host a route accepts: a name (`api.example.com`) or every subdomain of one
/// (`*.example.com`, which does not match `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(Box<str>),
    /// The suffix, with its leading dot.
    Subdomains(Box<str>),
}

impl HostPattern {
    fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let ok = !name.is_empty()
            && !name.ends_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !ok {
            return Err(format!(
                "{text:?} is not a host name or \"*.\" and a host name (no port, no scheme)"
            ));
        }
        Ok(if wild {
            HostPattern::Subdomains(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(&**suffix)
            }
        }
    }
}

/// A request's host as routes compare it: lower case, without port or trailing dot.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The running policy, shared by `/verify`, the metrics and whoever reloads it. A request
/// loads it once ([`SharedPolicy::load`]) and sees that one policy to the end; [`replace`]
/// swaps in a new one atomically.
///
/// [`replace`]: SharedPolicy::replace
#[derive(Debug, Clone)]
pub struct SharedPolicy(Arc<ArcSwap<Policy>>);

impl SharedPolicy {
    /// Shares `policy`.
    #[must_use]
    pub fn new(policy: Arc<Policy>) -> SharedPolicy {
        SharedPolicy(Arc::new(ArcSwap::new(policy)))
    }

    /// The current policy, lock-free. An `Arc` rather than an `arc_swap` guard: a request
    /// holds it across the verifier's awaits, and guards are meant to be short-lived.
    #[must_use]
    pub fn load(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    /// Makes `policy` the running one, carrying the decision counts of routes that keep their
    /// name. Requests already evaluating finish under the policy they loaded.
    pub fn replace(&self, policy: Arc<Policy>) {
        let old = self.0.load();
        if !Arc::ptr_eq(&old, &policy) {
            policy.carry_counts_from(&old);
        }
        self.0.store(policy);
    }
}
