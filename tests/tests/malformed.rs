//! Malformed messages over the network, sent by a rogue client (`ecg_tests::malformed`) while
//! a real worker trains: every one is refused with its status, logged (without the token) and
//! counted in `/metrics`; the coordinator goes on to the end of the run, and the run's final
//! and best parameters are those of an undisturbed run of the same configuration, bit for bit.
//! Steps have two units of one exam (one unit per forward and backward, and two terms per sum,
//! which add up the same in any grouping), so that who computes which unit changes nothing.
use std::collections::BTreeSet;
use std::path::Path;

use ecg_shared::model::safetensors_io::load_safetensors;
use ecg_shared::model::state::TensorData;
use ecg_tests::cluster::synth_cohort;
use ecg_tests::malformed::{TOKEN, live_run, table};

/// The bits of every tensor of a safetensors file, by name.
fn tensor_bits(path: &Path) -> Vec<(String, Vec<u64>)> {
    let (state, _) = load_safetensors(path).unwrap();
    state
        .tensors()
        .iter()
        .map(|t| {
            let bits = match &t.data {
                TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
                TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            };
            (t.name.clone(), bits)
        })
        .collect()
}

#[test]
fn malformed_messages_are_refused_counted_logged_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth_cohort(tmp.path(), "data", 14, 21, 400);
    let attacked = live_run(tmp.path(), &data, "attacked", true);
    let (outcomes, text, out) = (
        &attacked.outcomes,
        &attacked.coordinator_output,
        &attacked.out,
    );
    let shown = table(outcomes);
    println!("{shown}");

    let names: BTreeSet<&str> = outcomes.iter().map(|o| o.name).collect();
    assert_eq!(names.len(), outcomes.len(), "case names repeat:\n{shown}");
    assert!(outcomes.len() >= 25, "{} cases:\n{shown}", outcomes.len());
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.name)
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}\n{shown}");

    assert!(text.contains("run over"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let refused = text.lines().filter(|l| l.contains("refused")).count();
    assert!(
        refused >= outcomes.len(),
        "{refused} refusals logged for {} cases:\n{text}",
        outcomes.len()
    );
    assert!(!text.contains(TOKEN), "the token appears in the log");
    assert!(
        text.lines().all(|l| l.len() < 1000),
        "a client's value was echoed whole in the log"
    );

    let quiet_run = live_run(tmp.path(), &data, "quiet", false);
    let (quiet, out0) = (&quiet_run.coordinator_output, &quiet_run.out);
    // The comparison means something only if the runs trained.
    let steps = |text: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.contains("run over: "))
            .unwrap_or_else(|| panic!("no end of run in:\n{text}"));
        line.rsplit('(')
            .next()
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no step count in `{line}`"))
    };
    assert_eq!(steps(text), steps(quiet));
    assert!(steps(quiet) >= 8, "{quiet}");
    for file in ["model_last.safetensors", "model_best.safetensors"] {
        let (got, want) = (tensor_bits(&out.join(file)), tensor_bits(&out0.join(file)));
        assert_eq!(
            got.iter().map(|t| &t.0).collect::<Vec<_>>(),
            want.iter().map(|t| &t.0).collect::<Vec<_>>()
        );
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            assert!(g == w, "{file}: {name} differs from the undisturbed run's");
        }
    }
}
