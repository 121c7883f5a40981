//! Writing the Prometheus text exposition format (version 0.0.4) by hand: metric family headers
//! (`# HELP`, `# TYPE`), samples with escaped label values, numbers spelled the way Prometheus
//! reads them, and a fixed-bucket histogram that renders itself as `_bucket`/`_sum`/`_count`.

use std::fmt::Write as _;

/// The kind of a metric family, as written after `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only ever goes up (resets when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets with `_sum` and `_count`.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed get a backslash.
pub(crate) fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `# HELP` text: backslash and line feed get a backslash (quotes stay as they are).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Spells a float for Prometheus: `NaN`, `+Inf`, `-Inf`, whole numbers without a fraction
/// (`3`, not `3.0`), everything else as the shortest text that reads back to the same value.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Exact: every whole number below 2^53 fits an i64 without rounding.
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

/// Appends text to one exposition document.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    /// Writes the `# HELP` and `# TYPE` lines that open a family.
    pub(crate) fn header(&mut self, name: &str, kind: Kind, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// Writes one sample line; `labels` are (name, unescaped value) pairs.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label_value(val));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// A whole family holding one unlabelled sample.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: &str) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The document written so far.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// A histogram over fixed, increasing upper bounds (the `+Inf` bucket is implicit).
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not yet cumulative; one more entry than `bounds` (for `+Inf`).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram; `bounds` must be finite and strictly increasing.
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(bounds.iter().all(|b| b.is_finite()));
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation. Non-finite values (a broken clock, a division by zero
    /// upstream) are dropped rather than turning `_sum` into `NaN` for good.
    pub(crate) fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let slot = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Writes the whole family: header, cumulative `_bucket` lines, `_sum` and `_count`.
    pub(crate) fn render(&self, w: &mut Writer, name: &str, help: &str) {
        w.header(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |&b| format_value(b));
            w.sample(&bucket, &[("le", &le)], &cumulative.to_string());
        }
        w.sample(&format!("{name}_sum"), &[], &format_value(self.sum));
        w.sample(&format!("{name}_count"), &[], &self.count.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("plain-ok_1"), "plain-ok_1");
    }

    #[test]
    fn help_escapes_backslash_and_newline_only() {
        let mut w = Writer::default();
        w.header("m", Kind::Gauge, "a \"q\" \\ b\nc");
        assert_eq!(w.finish(), "# HELP m a \"q\" \\\\ b\\nc\n# TYPE m gauge\n");
    }

    #[test]
    fn values_use_prometheus_spelling() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(-2.0), "-2");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e-9), "1e-9");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(1e20), "1e20");
        // Every spelled value parses back to itself.
        for v in [0.1, 1.0 / 3.0, 12345.678, 5e-324] {
            assert_eq!(format_value(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        static B: [f64; 3] = [0.5, 1.0, 2.5];
        let mut h = Histogram::new(&B);
        for v in [0.25, 0.5, 0.75, 3.0, 1.0, f64::NAN, 10.0] {
            h.observe(v);
        }
        let mut w = Writer::default();
        h.render(&mut w, "x_seconds", "X.");
        let text = w.finish();
        let expected = "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
            x_seconds_bucket{le=\"0.5\"} 2\n\
            x_seconds_bucket{le=\"1\"} 4\n\
            x_seconds_bucket{le=\"2.5\"} 4\n\
            x_seconds_bucket{le=\"+Inf\"} 6\n\
            x_seconds_sum 15.5\n\
            x_seconds_count 6\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn samples_join_several_labels_with_commas() {
        let mut w = Writer::default();
        w.sample("m", &[("a", "1"), ("b", "q\"")], "7");
        assert_eq!(w.finish(), "m{a=\"1\",b=\"q\\\"\"} 7\n");
    }
}
