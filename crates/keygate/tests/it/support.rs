//! Helpers shared by the test modules.

use keygate::Reason;

/// Every reason code the verifier documents ([`Reason::ALL`] as strings).
pub(crate) fn reason_codes() -> [&'static str; Reason::ALL.len()] {
    Reason::ALL.map(Reason::as_str)
}
