//! `[policy]` in the file: the serde shapes and their compilation into a [`Policy`], naming
//! the key at fault (`policy.routes[2].paths`) when something is wrong.

use std::collections::HashSet;

use http::HeaderValue;
use serde::Deserialize;
use serde_json::Value;

use super::claims::{ClaimPath, ClaimRule, Test};
use super::glob::Glob;
use super::{DefaultAction, HostPattern, Policy, ProviderName, Route};
use crate::config::{ConfigError, check_name};

/// `[policy]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePolicy {
    default: Option<String>,
    #[serde(default)]
    routes: Vec<FileRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    name: String,
    paths: Vec<String>,
    methods: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    #[serde(default)]
    anonymous: bool,
    providers: Option<Vec<String>>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    any_scopes: Vec<String>,
    #[serde(default)]
    claims: Vec<FileClaim>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClaim {
    claim: String,
    equals: Option<Value>,
    one_of: Option<Vec<Value>>,
    contains: Option<Value>,
    contains_any: Option<Vec<Value>>,
    exists: Option<bool>,
    absent: Option<bool>,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

impl FilePolicy {
    /// Compiles the section. `providers` are the configured `(tenant, provider)` pairs a
    /// route may name.
    pub(crate) fn compile(self, providers: &[(String, String)]) -> Result<Policy, ConfigError> {
        let default = match self.default.as_deref() {
            None | Some("authenticate") => DefaultAction::Authenticate,
            Some("deny") => DefaultAction::Deny,
            Some(other) => {
                return Err(err(
                    "policy.default",
                    format!("{other:?} is not \"deny\" or \"authenticate\""),
                ));
            }
        };
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.into_iter().enumerate() {
            let key = format!("policy.routes[{i}]");
            let route = route.compile(&key, providers)?;
            if !names.insert(route.name.clone()) {
                return Err(err(
                    format!("{key}.name"),
                    format!("{:?} is already the name of an earlier route", route.name),
                ));
            }
            routes.push(route);
        }
        Ok(Policy::new(default, routes, true))
    }
}

impl FileRoute {
    fn compile(self, key: &str, providers: &[(String, String)]) -> Result<Route, ConfigError> {
        check_name(&format!("{key}.name"), &self.name)?;
        let header = HeaderValue::from_str(&self.name)
            .map_err(|_| err(format!("{key}.name"), "must be usable as a header value"))?;
        if self.paths.is_empty() {
            return Err(err(
                format!("{key}.paths"),
                "at least one path glob is required",
            ));
        }
        let paths = self
            .paths
            .iter()
            .map(|p| Glob::parse(p).map_err(|e| err(format!("{key}.paths"), e)))
            .collect::<Result<Box<[_]>, _>>()?;
        let methods = optional_list(&format!("{key}.methods"), self.methods, |m| {
            let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
            ok.then(|| m.to_ascii_uppercase().into_boxed_str())
                .ok_or_else(|| format!("{m:?} is not a method"))
        })?;
        let hosts = optional_list(&format!("{key}.hosts"), self.hosts, HostPattern::parse)?;
        let needs_token = self.providers.is_some()
            || !self.scopes.is_empty()
            || !self.any_scopes.is_empty()
            || !self.claims.is_empty();
        if self.anonymous && needs_token {
            return Err(err(
                format!("{key}.anonymous"),
                "an anonymous route takes no token, so it cannot also require providers, scopes or claims",
            ));
        }
        let providers = optional_list(&format!("{key}.providers"), self.providers, |p| {
            p.split_once('/')
                .filter(|&(t, n)| providers.iter().any(|(pt, pn)| pt == t && pn == n))
                .map(|(t, n)| ProviderName {
                    tenant: t.into(),
                    name: n.into(),
                })
                .ok_or_else(|| format!("{p:?} is not a configured \"tenant/provider\""))
        })?;
        let scopes = scope_list(&format!("{key}.scopes"), self.scopes)?;
        let any_scopes = scope_list(&format!("{key}.any_scopes"), self.any_scopes)?;
        let claims = self
            .claims
            .into_iter()
            .enumerate()
            .map(|(j, c)| c.compile(&format!("{key}.claims[{j}]")))
            .collect::<Result<Box<[_]>, _>>()?;
        let scope_challenge = (!scopes.is_empty() || !any_scopes.is_empty()).then(|| {
            let wanted: Vec<&str> = scopes.iter().chain(&any_scopes).map(|s| &**s).collect();
            format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                wanted.join(" ")
            )
        });
        let mut claim_names: Vec<Box<str>> = Vec::new();
        if !scopes.is_empty() || !any_scopes.is_empty() {
            claim_names.extend(["scope".into(), "scp".into()]);
        }
        for rule in &claims {
            let name = rule.path.top_level();
            if !claim_names.iter().any(|n| **n == *name) {
                claim_names.push(name.into());
            }
        }
        Ok(Route {
            claim_names: claim_names.into(),
            name: self.name.into(),
            header,
            paths,
            methods,
            hosts,
            anonymous: self.anonymous,
            providers,
            scopes,
            any_scopes,
            claims,
            scope_challenge,
        })
    }
}

/// An optional list whose entries `parse` checks: absent, it restricts nothing; present, it
/// must not be empty (an empty list would match nothing, which is never what was meant).
fn optional_list<T>(
    key: &str,
    list: Option<Vec<String>>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Box<[T]>>, ConfigError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() {
        return Err(err(
            key,
            "an empty list matches nothing; leave the key out to match any",
        ));
    }
    list.iter()
        .map(|v| parse(v).map_err(|e| err(key, e)))
        .collect::<Result<Box<[_]>, _>>()
        .map(Some)
}

/// Scope tokens as RFC 6749 section 3.3 allows them, and as a challenge can quote them.
fn scope_list(key: &str, scopes: Vec<String>) -> Result<Box<[Box<str>]>, ConfigError> {
    scopes
        .into_iter()
        .map(|s| {
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if ok {
                Ok(s.into_boxed_str())
            } else {
                Err(err(
                    key,
                    format!("{s:?} is not a scope (printable ASCII without space, '\"' or '\\')"),
                ))
            }
        })
        .collect()
}

impl FileClaim {
    fn compile(self, key: &str) -> Result<ClaimRule, ConfigError> {
        let path = ClaimPath::parse(&self.claim).map_err(|e| err(format!("{key}.claim"), e))?;
        let mut tests = Vec::new();
        if let Some(v) = self.equals {
            tests.push(Test::Equals(v));
        }
        if let Some(v) = self.one_of {
            tests.push(Test::OneOf(v));
        }
        if let Some(v) = self.contains {
            tests.push(Test::Contains(v));
        }
        if let Some(v) = self.contains_any {
            tests.push(Test::ContainsAny(v));
        }
        if let Some(v) = self.exists {
            tests.push(Test::Exists(v));
        }
        if let Some(v) = self.absent {
            tests.push(Test::Exists(!v));
        }
        if tests.len() != 1 {
            return Err(err(
                key,
                "exactly one of equals, one_of, contains, contains_any, exists or absent is required",
            ));
        }
        let test = tests.remove(0);
        if let Test::OneOf(v) | Test::ContainsAny(v) = &test
            && v.is_empty()
        {
            return Err(err(key, "an empty list can never be met"));
        }
        Ok(ClaimRule { path, test })
    }
}
