//! The text exposition format: family headers, samples with escaped labels, and floats as
//! the format spells them.

use std::fmt::{self, Write as _};

/// The output being built.
pub(super) struct Out(String);

impl Out {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        Out(String::with_capacity(bytes))
    }

    pub(super) fn into_string(self) -> String {
        self.0
    }

    /// A family of one unlabelled sample.
    pub(super) fn single(&mut self, name: &str, help: &str, kind: &str, value: impl fmt::Display) {
        self.family(name, help, kind);
        self.sample(name, &[], value);
    }

    pub(super) fn family(&mut self, name: &str, help: &str, kind: &str) {
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(label);
                self.0.push_str("=\"");
                escape_label_value(&mut self.0, value);
                self.0.push('"');
            }
            self.0.push('}');
        }
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.0, " {value}");
    }
}

/// Appends `value` escaped as the text format requires inside a quoted label value. Tenant
/// and provider names come from configuration and may hold anything.
pub(super) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as the text format spells floats: `+Inf`, `-Inf` and `NaN` included.
pub(super) struct Float(pub(super) f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}
