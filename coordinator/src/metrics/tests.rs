//! Tests of [`Metrics::render`]: exact lines after sequences of calls, cumulative histogram
//! buckets, label escaping, per-worker series removal and the document's overall shape.

use std::collections::{BTreeMap, HashSet};

use super::*;

/// The lines of family `name`: from its `# HELP` up to the next family's `# HELP`.
fn family<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let start = format!("# HELP {name} ");
    text.lines()
        .skip_while(|l| !l.starts_with(&start))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("# HELP "))
        .map(|(_, l)| l)
        .collect()
}

/// The value of the one sample line that starts with `series ` (name plus labels).
fn value(text: &str, series: &str) -> Option<String> {
    let prefix = format!("{series} ");
    let mut found = text.lines().filter_map(|l| l.strip_prefix(&prefix));
    let v = found.next()?.to_owned();
    assert!(found.next().is_none(), "{series} appears twice");
    Some(v)
}

/// Checks the exposition grammar this module relies on: every sample belongs to a family
/// declared before it with `# HELP` then `# TYPE`, each family is declared once, histograms
/// end with `+Inf`, `_sum`, `_count`, and no series repeats.
fn assert_well_formed(text: &str) {
    assert!(text.ends_with('\n'));
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut series = HashSet::new();
    let mut pending_help: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(pending_help.is_none(), "HELP without TYPE before {line}");
            pending_help = rest.split(' ').next();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a kind");
            assert_eq!(
                pending_help.take(),
                Some(name),
                "TYPE {name} not right after its HELP"
            );
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name, kind).is_none(), "{name} declared twice");
        } else {
            assert!(
                pending_help.is_none(),
                "sample between HELP and TYPE: {line}"
            );
            let (key, val) = line.rsplit_once(' ').expect("sample has a value");
            assert!(
                val.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&val),
                "{line}"
            );
            let name = key.split('{').next().unwrap_or(key);
            let declared = types.get(name).copied().or_else(|| {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))?;
                types.get(base).copied().filter(|k| *k == "histogram")
            });
            assert!(declared.is_some(), "sample of an undeclared family: {line}");
            assert!(name.starts_with("ecg_"), "{line}");
            assert!(series.insert(key.to_owned()), "series repeated: {line}");
        }
    }
}

#[test]
fn fresh_registry_has_zero_counters_and_no_unknown_gauges() {
    let text = Metrics::new().render();
    assert_well_formed(&text);
    assert_eq!(value(&text, "ecg_steps_total").as_deref(), Some("0"));
    assert_eq!(value(&text, "ecg_exams_total").as_deref(), Some("0"));
    assert_eq!(
        value(&text, "ecg_exchange_bytes_total").as_deref(),
        Some("0")
    );
    assert_eq!(value(&text, "ecg_workers").as_deref(), Some("0"));
    assert_eq!(value(&text, "ecg_step_seconds_count").as_deref(), Some("0"));
    for absent in [
        "ecg_global_step",
        "ecg_train_loss",
        "ecg_exams_per_second",
        "ecg_epoch",
        "ecg_learning_rate",
        "ecg_valid_loss",
        "ecg_valid_mae",
        "ecg_worker_step_seconds",
        "ecg_rejected_total",
    ] {
        assert!(
            family(&text, absent).is_empty(),
            "{absent} present before any value"
        );
    }
}

#[test]
fn committed_steps_add_up_and_fill_step_histograms() {
    let m = Metrics::new();
    m.step_committed(10, 32, 0.5, 2.0, 0.25);
    m.step_committed(11, 16, 0.25, 1.0, 0.0625);
    m.step_committed(12, 8, f64::NAN, 400.0, 0.001);
    let text = m.render();
    assert_well_formed(&text);
    assert_eq!(family(&text, "ecg_steps_total")[2], "ecg_steps_total 3");
    assert_eq!(family(&text, "ecg_exams_total")[2], "ecg_exams_total 56");
    assert_eq!(family(&text, "ecg_global_step")[2], "ecg_global_step 12");
    assert_eq!(family(&text, "ecg_train_loss")[2], "ecg_train_loss NaN");
    assert_eq!(
        family(&text, "ecg_exams_per_second")[2],
        "ecg_exams_per_second 0.02"
    );
    assert_eq!(
        family(&text, "ecg_step_seconds"),
        [
            "# HELP ecg_step_seconds Wall time of a global step, assignment to commit.",
            "# TYPE ecg_step_seconds histogram",
            "ecg_step_seconds_bucket{le=\"0.05\"} 0",
            "ecg_step_seconds_bucket{le=\"0.1\"} 0",
            "ecg_step_seconds_bucket{le=\"0.25\"} 0",
            "ecg_step_seconds_bucket{le=\"0.5\"} 0",
            "ecg_step_seconds_bucket{le=\"1\"} 1",
            "ecg_step_seconds_bucket{le=\"2.5\"} 2",
            "ecg_step_seconds_bucket{le=\"5\"} 2",
            "ecg_step_seconds_bucket{le=\"10\"} 2",
            "ecg_step_seconds_bucket{le=\"25\"} 2",
            "ecg_step_seconds_bucket{le=\"60\"} 2",
            "ecg_step_seconds_bucket{le=\"120\"} 2",
            "ecg_step_seconds_bucket{le=\"300\"} 2",
            "ecg_step_seconds_bucket{le=\"+Inf\"} 3",
            "ecg_step_seconds_sum 403",
            "ecg_step_seconds_count 3",
        ]
    );
    assert_eq!(
        value(&text, "ecg_reduce_seconds_bucket{le=\"0.001\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "ecg_reduce_seconds_bucket{le=\"0.05\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(&text, "ecg_reduce_seconds_bucket{le=\"0.1\"}").as_deref(),
        Some("2")
    );
    assert_eq!(
        value(&text, "ecg_reduce_seconds_bucket{le=\"0.25\"}").as_deref(),
        Some("3")
    );
    assert_eq!(
        value(&text, "ecg_reduce_seconds_bucket{le=\"+Inf\"}").as_deref(),
        Some("3")
    );
    assert_eq!(
        value(&text, "ecg_reduce_seconds_count").as_deref(),
        Some("3")
    );
}

#[test]
fn smoothed_rate_weights_steps_by_their_duration() {
    let m = Metrics::new();
    m.step_committed(1, 100, 1.0, 1.0, 0.0);
    let first = m.render();
    assert_eq!(
        value(&first, "ecg_exams_per_second_smoothed").as_deref(),
        Some("100")
    );
    // A short step with a higher rate moves the smoothed rate up, but less than a plain
    // average of rates with weight 0.1 would (the step is short).
    m.step_committed(2, 50, 1.0, 0.25, 0.0);
    let text = m.render();
    assert_eq!(value(&text, "ecg_exams_per_second").as_deref(), Some("200"));
    let smoothed: f64 = value(&text, "ecg_exams_per_second_smoothed")
        .and_then(|v| v.parse().ok())
        .expect("smoothed rate present");
    let expected = (0.1 * 50.0 + 0.9 * 100.0) / (0.1 * 0.25 + 0.9 * 1.0);
    assert!(
        (smoothed - expected).abs() < 1e-9,
        "{smoothed} vs {expected}"
    );
    assert!(smoothed > 100.0 && smoothed < 0.9 * 100.0 + 0.1 * 200.0);
    // A zero-length step cannot give a rate: both gauges keep their values.
    m.step_committed(3, 10, 1.0, 0.0, 0.0);
    let after = m.render();
    assert_eq!(
        value(&after, "ecg_exams_per_second").as_deref(),
        Some("200")
    );
    assert_eq!(value(&after, "ecg_steps_total").as_deref(), Some("3"));
}

#[test]
fn exchanges_count_bytes_and_fill_the_histogram() {
    let m = Metrics::new();
    m.exchange(1, 0.0625, 1000);
    m.exchange(2, 0.375, 2500);
    m.exchange(1, 45.0, 500);
    let text = m.render();
    assert_well_formed(&text);
    assert_eq!(
        value(&text, "ecg_exchange_bytes_total").as_deref(),
        Some("4000")
    );
    let buckets: Vec<u64> = family(&text, "ecg_exchange_seconds")
        .iter()
        .filter(|l| l.starts_with("ecg_exchange_seconds_bucket"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    assert_eq!(buckets, [0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 3]);
    assert_eq!(
        value(&text, "ecg_exchange_seconds_bucket{le=\"0.025\"}").as_deref(),
        Some("0")
    );
    assert_eq!(
        value(&text, "ecg_exchange_seconds_sum").as_deref(),
        Some("45.4375")
    );
    assert_eq!(
        value(&text, "ecg_exchange_seconds_count").as_deref(),
        Some("3")
    );
}

#[test]
fn worker_series_track_each_worker_and_leave_with_it() {
    let m = Metrics::new();
    m.worker_step(7, 1.5);
    m.worker_step(7, 0.5);
    m.worker_step(3, 2.0);
    m.worker_step(3, f64::INFINITY);
    m.set_workers(2);
    let text = m.render();
    assert_well_formed(&text);
    let w = |name: &str, id: u64| value(&text, &format!("{name}{{worker=\"{id}\"}}"));
    assert_eq!(w("ecg_worker_step_seconds", 7).as_deref(), Some("0.5"));
    assert_eq!(w("ecg_worker_step_seconds_sum", 7).as_deref(), Some("2"));
    assert_eq!(w("ecg_worker_step_seconds_count", 7).as_deref(), Some("2"));
    assert_eq!(w("ecg_worker_step_seconds", 3).as_deref(), Some("2"));
    assert_eq!(w("ecg_worker_step_seconds_count", 3).as_deref(), Some("1"));
    assert_eq!(value(&text, "ecg_workers").as_deref(), Some("2"));

    m.worker_left(7);
    m.set_workers(1);
    let text = m.render();
    assert_well_formed(&text);
    assert!(!text.contains("worker=\"7\""), "{text}");
    assert_eq!(
        family(&text, "ecg_worker_step_seconds_count"),
        [
            "# HELP ecg_worker_step_seconds_count Steps a worker contributed to.",
            "# TYPE ecg_worker_step_seconds_count counter",
            "ecg_worker_step_seconds_count{worker=\"3\"} 1",
        ]
    );
    m.worker_left(3);
    m.worker_left(99);
    let text = m.render();
    assert_well_formed(&text);
    assert!(!text.contains("ecg_worker_step_seconds"), "{text}");
    // A worker that comes back starts from scratch.
    m.worker_step(7, 4.0);
    assert_eq!(
        value(&m.render(), "ecg_worker_step_seconds_count{worker=\"7\"}").as_deref(),
        Some("1")
    );
}

#[test]
fn rejections_are_counted_by_escaped_reason() {
    let m = Metrics::new();
    m.rejected("bad_token");
    m.rejected("stale_step");
    m.rejected("bad_token");
    m.rejected("say \"no\"\\now\nplease");
    let text = m.render();
    assert_well_formed(&text);
    assert_eq!(
        family(&text, "ecg_rejected_total"),
        [
            "# HELP ecg_rejected_total Requests refused, by reason.",
            "# TYPE ecg_rejected_total counter",
            "ecg_rejected_total{reason=\"bad_token\"} 2",
            r#"ecg_rejected_total{reason="say \"no\"\\now\nplease"} 1"#,
            "ecg_rejected_total{reason=\"stale_step\"} 1",
        ]
    );
}

#[test]
fn epoch_learning_rate_and_validation_gauges_show_the_latest() {
    let m = Metrics::new();
    m.epoch_state(3, 0.001);
    m.validation(2, 150.0, 9.5);
    m.epoch_state(4, 0.0001);
    m.validation(3, 120.25, 8.75);
    let text = m.render();
    assert_well_formed(&text);
    assert_eq!(value(&text, "ecg_epoch").as_deref(), Some("4"));
    assert_eq!(value(&text, "ecg_learning_rate").as_deref(), Some("0.0001"));
    assert_eq!(value(&text, "ecg_valid_epoch").as_deref(), Some("3"));
    assert_eq!(value(&text, "ecg_valid_loss").as_deref(), Some("120.25"));
    assert_eq!(value(&text, "ecg_valid_mae").as_deref(), Some("8.75"));
    assert_eq!(family(&text, "ecg_epoch")[1], "# TYPE ecg_epoch gauge");
}

#[test]
fn updates_from_many_threads_all_count() {
    let m = Metrics::new();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let m = &m;
            scope.spawn(move || {
                for i in 0..50 {
                    m.step_committed(t * 100 + i, 2, 1.0, 0.5, 0.01);
                    m.exchange(t, 0.01, 10);
                    m.worker_step(t, 0.5);
                    m.rejected("busy");
                }
            });
        }
    });
    let text = m.render();
    assert_well_formed(&text);
    assert_eq!(value(&text, "ecg_steps_total").as_deref(), Some("200"));
    assert_eq!(value(&text, "ecg_exams_total").as_deref(), Some("400"));
    assert_eq!(
        value(&text, "ecg_exchange_bytes_total").as_deref(),
        Some("2000")
    );
    assert_eq!(
        value(&text, "ecg_step_seconds_count").as_deref(),
        Some("200")
    );
    assert_eq!(
        value(&text, "ecg_rejected_total{reason=\"busy\"}").as_deref(),
        Some("200")
    );
    for t in 0..4 {
        let series = format!("ecg_worker_step_seconds_count{{worker=\"{t}\"}}");
        assert_eq!(value(&text, &series).as_deref(), Some("50"));
    }
}
