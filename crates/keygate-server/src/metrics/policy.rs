//! `keygate_policy_decisions_total{route,decision,reason}`: the running policy's own counters,
//! read at scrape time. Requests no route decided (no route matched, a refused path) have
//! `route=""`. Nothing is rendered without a `[policy]` section.

use crate::policy::Policy;

use super::text::Out;

pub(super) fn render(out: &mut Out, policy: &Policy) {
    if !policy.is_configured() {
        return;
    }
    const TOTAL: &str = "keygate_policy_decisions_total";
    out.family(
        TOTAL,
        "Requests decided by the policy, by route (empty when no route decided), decision (allow, deny) and reason.",
        "counter",
    );
    for (route, reason, count) in policy.counts() {
        out.sample(
            TOTAL,
            &[
                ("route", route.unwrap_or("")),
                ("decision", reason.decision()),
                ("reason", reason.as_str()),
            ],
            count,
        );
    }
}
