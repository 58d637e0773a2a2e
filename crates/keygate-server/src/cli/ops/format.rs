//! How the operator's client shows the admin API's answers: tables, relative times, RFC
//! 3339 timestamps, each line safe for a terminal.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

use crate::admin::{RefreshBody, ReloadBody, RevocationView, RevokedBody};
use crate::cli::escape_text as esc;

/// `refreshed <tenant>/<provider>: <state>, kids <kids> (seq <n>)`.
/// `reloaded: 1 added (acme/new), 1 removed (acme/old), 0 changed, 2 unchanged`.
pub(super) fn reloaded_text(r: &ReloadBody) -> String {
    let p = &r.providers;
    let part = |what: &str, ids: &[String], list: bool| {
        if list && !ids.is_empty() {
            let ids: Vec<_> = ids.iter().map(|id| esc(id).into_owned()).collect();
            format!("{} {what} ({})", ids.len(), ids.join(", "))
        } else {
            format!("{} {what}", ids.len())
        }
    };
    format!(
        "reloaded: {}, {}, {}, {}",
        part("added", &p.added, true),
        part("removed", &p.removed, true),
        part("changed", &p.changed, true),
        part("unchanged", &p.unchanged, false)
    )
}

pub(super) fn refreshed_text(r: &RefreshBody) -> String {
    let kids = if r.kids.is_empty() {
        "no kids".to_owned()
    } else {
        format!("kids {}", esc(&r.kids.join(", ")))
    };
    format!(
        "refreshed {}/{}: {}, {kids} (seq {})",
        esc(&r.tenant),
        esc(&r.provider),
        esc(&r.state),
        r.seq
    )
}

/// `revoked <what> (seq <n>)`.
pub(super) fn revoked_text(r: &RevokedBody) -> String {
    let what = match &r.revoked {
        RevocationView::Jti { jti, exp } => format!("jti {} until {}", esc(jti), Unix(*exp)),
        RevocationView::Subject {
            tenant,
            sub,
            before,
            until,
        } => format!(
            "subject {} of tenant {}: tokens issued before {}{}",
            esc(sub),
            esc(tenant),
            Unix(*before),
            kept_until(Some(*until))
        ),
        RevocationView::Kid {
            tenant,
            provider,
            kid,
            until,
        } => format!(
            "key {} of {}/{}{}",
            esc(kid),
            esc(tenant),
            esc(provider),
            kept_until(*until)
        ),
        RevocationView::Token { token_sha256, exp } => {
            format!("token sha256 {} until {}", esc(token_sha256), Unix(*exp))
        }
        RevocationView::Other => "a revocation of a kind this client does not know".to_owned(),
    };
    format!("revoked {what} (seq {})", r.seq)
}

/// `, kept until <time>` when the server says when it drops the revocation.
fn kept_until(until: Option<i64>) -> String {
    until.map_or_else(String::new, |t| format!(", kept until {}", Unix(t)))
}

#[derive(Debug, Deserialize)]
pub(super) struct StatusReply {
    now: i64,
    providers: Vec<ProviderRow>,
    bus: BusRow,
    revocations: u64,
    cached_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct ProviderRow {
    tenant: String,
    provider: String,
    #[serde(flatten)]
    keys: KeysRow,
    /// One row per JWKS URL of a provider with several.
    #[serde(default)]
    sources: Vec<SourceRow>,
}

#[derive(Debug, Deserialize)]
struct SourceRow {
    url: String,
    #[serde(flatten)]
    keys: KeysRow,
}

/// What a provider and each of its JWKS URLs show alike.
#[derive(Debug, Deserialize)]
struct KeysRow {
    state: String,
    #[serde(default)]
    kids: Vec<String>,
    fetched_at: Option<i64>,
    expires_at: Option<i64>,
    last_error: Option<LastErrorRow>,
}

impl KeysRow {
    /// The STATE, KEYS, FETCHED, EXPIRES and LAST ERROR cells, times relative to `now`.
    /// `expires` is the EXPIRES cell when there is no expiry.
    fn cells(&self, now: i64, expires: impl FnOnce(&KeysRow) -> String) -> [String; 5] {
        let at = |t: Option<i64>| t.map_or_else(|| "-".into(), |t| relative(t, now));
        [
            self.state.clone(),
            self.kids.len().to_string(),
            at(self.fetched_at),
            self.expires_at
                .map_or_else(|| expires(self), |t| relative(t, now)),
            self.last_error
                .as_ref()
                .map_or_else(|| "-".into(), |e| e.reason.clone()),
        ]
    }
}

#[derive(Debug, Deserialize)]
struct LastErrorRow {
    reason: String,
}

#[derive(Debug, Deserialize)]
struct BusRow {
    backend: String,
    state: String,
    last_seq: u64,
    lag_seconds: f64,
    #[serde(default)]
    primary: Option<String>,
    #[serde(default)]
    last_resync: Option<ResyncRow>,
}

#[derive(Debug, Deserialize)]
struct ResyncRow {
    at: i64,
    reason: String,
}

pub(super) fn status_text(r: &StatusReply) -> String {
    let mut rows = vec![
        [
            "TENANT",
            "PROVIDER",
            "STATE",
            "KEYS",
            "FETCHED",
            "EXPIRES",
            "LAST ERROR",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for p in &r.providers {
        let mut row = vec![p.tenant.clone(), p.provider.clone()];
        row.extend(p.keys.cells(r.now, |k| {
            // Keys are cached but have no expiry: a static key set.
            if k.fetched_at.is_some() { "never" } else { "-" }.to_owned()
        }));
        rows.push(row);
        // A provider with several JWKS URLs: one indented row per URL under it.
        for u in &p.sources {
            let mut row = vec![String::new(), format!("  {}", u.url)];
            row.extend(u.keys.cells(r.now, |_| "-".to_owned()));
            rows.push(row);
        }
    }
    let mut text = table(&rows);
    let mut extra = String::new();
    if let Some(node) = &r.bus.primary {
        extra.push_str(&format!(", primary {}", esc(node)));
    }
    if let Some(resync) = &r.bus.last_resync {
        extra.push_str(&format!(
            ", last resync {} ({})",
            relative(resync.at, r.now),
            esc(&resync.reason)
        ));
    }
    text.push_str(&format!(
        "bus: {} {} (seq {}, lag {:.1}s{extra})\nrevocations: {}, cached tokens: {}",
        esc(&r.bus.backend),
        esc(&r.bus.state),
        r.bus.last_seq,
        r.bus.lag_seconds,
        r.revocations,
        r.cached_tokens
    ));
    text
}

pub(super) fn revocation_table(revocations: &[RevocationView]) -> String {
    if revocations.is_empty() {
        return "no revocations".to_owned();
    }
    let mut rows = vec![
        ["TYPE", "TARGET", "BEFORE", "UNTIL"]
            .map(str::to_owned)
            .to_vec(),
    ];
    let until = |t: Option<i64>| t.map_or_else(|| "-".into(), |t| Unix(t).to_string());
    for r in revocations {
        rows.push(match r {
            RevocationView::Jti { jti, exp } => vec![
                "jti".into(),
                format!("jti={jti}"),
                "-".into(),
                Unix(*exp).to_string(),
            ],
            RevocationView::Subject {
                tenant,
                sub,
                before,
                until: t,
            } => vec![
                "subject".into(),
                format!("tenant={tenant} sub={sub}"),
                Unix(*before).to_string(),
                until(Some(*t)),
            ],
            RevocationView::Kid {
                tenant,
                provider,
                kid,
                until: t,
            } => vec![
                "kid".into(),
                format!("tenant={tenant} provider={provider} kid={kid}"),
                "-".into(),
                until(*t),
            ],
            RevocationView::Token { token_sha256, exp } => vec![
                "token".into(),
                format!("token_sha256={token_sha256}"),
                "-".into(),
                Unix(*exp).to_string(),
            ],
            RevocationView::Other => ["other", "-", "-", "-"].map(str::to_owned).to_vec(),
        });
    }
    let mut text = table(&rows);
    text.pop();
    text
}

/// Left-aligned columns two spaces apart, one line per row, no trailing spaces. Every cell
/// goes through [`esc`]: a cell can hold nothing that starts a new row or reorders one.
pub(super) fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| esc(cell).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `t` relative to `now`: `12s ago`, `in 4m58s`.
pub(super) fn relative(t: i64, now: i64) -> String {
    let span = Span(t.abs_diff(now));
    if t > now {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A number of seconds, shortly: `42s`, `4m58s`, `2h05m`, `3d04h`.
struct Span(u64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s {
            0..60 => write!(f, "{s}s"),
            60..3_600 => write!(f, "{}m{:02}s", s / 60, s % 60),
            3_600..86_400 => write!(f, "{}h{:02}m", s / 3_600, s % 3_600 / 60),
            _ => write!(f, "{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
        }
    }
}

/// Seconds since the Unix epoch, shown as an RFC 3339 UTC timestamp (by `humantime`, which
/// writes the years 1970 to 9999; an earlier time is moved by whole 400-year cycles, after
/// which the Gregorian calendar repeats, and its year moved back; a later one is shown as
/// unix seconds).
pub(super) struct Unix(pub(super) i64);

impl fmt::Display for Unix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// 400 Gregorian years, in seconds.
        const CYCLE: i64 = 146_097 * 86_400;
        /// The last second humantime writes: 9999-12-31T23:59:59Z.
        const LAST: i64 = 253_402_300_799;
        let cycles = if self.0 < 0 {
            self.0.div_euclid(CYCLE).unsigned_abs()
        } else {
            0
        };
        let shifted = i128::from(self.0) + i128::from(cycles) * i128::from(CYCLE);
        let Some(seconds) = u64::try_from(shifted).ok().filter(|s| *s <= LAST as u64) else {
            return write!(f, "{}", self.0);
        };
        let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds))
            .to_string();
        if cycles == 0 {
            return f.write_str(&text);
        }
        let (year, rest) = text.split_at(4);
        let year = year.parse::<i128>().unwrap_or(0) - 400 * i128::from(cycles);
        write!(f, "{year:04}{rest}")
    }
}
