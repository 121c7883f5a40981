//! Faults injected into a real run (the reduced form of `scripts/faults.sh`): workers killed
//! with SIGKILL mid-upload, mid-forward, mid-download, after uploading and while predicting; a
//! straggler; the coordinator killed mid-step and during validation, killed after a checkpoint
//! that is then corrupted on disk, and stopped with SIGTERM. The run must finish, with every
//! training exam used exactly once per epoch (audited from `commits.csv` against `split.csv`),
//! and end near an undisturbed run of the same seed.
use ecg_tests::faults::{Action, Bench, Fault, Plan, report};

#[test]
fn a_run_survives_killed_workers_a_straggler_and_a_killed_and_stopped_coordinator() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = Bench::new(tmp.path(), 120);
    let baseline = bench.run(&Plan {
        name: "undisturbed".into(),
        workers: vec![vec![], vec![]],
        coordinator: vec![],
    });
    assert!(
        baseline.completed,
        "the undisturbed run failed:\n{}",
        baseline.coordinator_output
    );
    use Action::*;
    let plan = Plan {
        name: "faults".into(),
        workers: vec![
            vec![
                Fault::new("worker.upload", 2, Kill),
                Fault::new("worker.forward", 3, Kill),
                Fault::new("worker.download", 2, Kill),
                Fault::new("worker.compute", 4, Straggle(5000)),
            ],
            vec![
                Fault::new("worker.uploaded", 3, Kill),
                Fault::new("worker.predict", 1, Kill),
            ],
        ],
        coordinator: vec![
            Fault::new("coord.contribution", 5, Kill),
            Fault::new("coord.checkpointed", 2, KillCorrupt),
            Fault::new("coord.step", 4, Term),
            Fault::new("coord.predict", 1, Kill),
        ],
    };
    let run = bench.run(&plan);
    let text = report(std::slice::from_ref(&run), &baseline);
    println!("{text}");
    for i in &run.injected {
        println!(
            "  {} at {}: reached {} {}",
            i.fault.kind(),
            i.fault.at,
            i.reached,
            i.note
        );
    }
    assert!(
        run.completed,
        "the run with faults did not finish:\n{}",
        run.coordinator_output
    );
    for i in &run.injected {
        assert!(i.reached, "{} was never reached:\n{text}", i.fault.at);
    }
    let corrupt = run
        .injected
        .iter()
        .find(|i| i.fault.action == KillCorrupt)
        .unwrap();
    assert!(
        corrupt.note.contains("corrupted") && corrupt.note.contains("restarted with `warning:"),
        "the damaged checkpoint was not detected: {}",
        corrupt.note
    );
    let term = run
        .injected
        .iter()
        .find(|i| i.fault.action == Term)
        .unwrap();
    assert_eq!(term.note, "exit 0", "SIGTERM must drain and exit 0");
    let (a, b) = (run.audit.unwrap(), baseline.audit.unwrap());
    assert_eq!((a.lost, a.duplicated, a.broken_epochs), (0, 0, 0), "{text}");
    assert_eq!((b.lost, b.duplicated, b.broken_epochs), (0, 0, 0), "{text}");
    assert_eq!(a.epochs, 3, "{text}");
    assert_eq!(a.steps, b.steps, "the same plan, step for step: {text}");
    assert!(
        a.commit_lines > a.steps,
        "the killed coordinator's steps after its checkpoint were committed again: {text}"
    );
    let rel = (a.final_valid_loss - b.final_valid_loss).abs() / b.final_valid_loss;
    assert!(rel < 0.01, "final validation loss {rel:.3} away: {text}");
}

/// Hosts in network namespaces, or `None` (with the reason printed) where this process may not
/// create them; `ECG_REQUIRE_NETNS=1` turns that into a failure.
fn hosts(n: usize) -> Option<ecg_tests::netns::Net> {
    match ecg_tests::netns::Net::new(n) {
        Ok(net) => Some(net),
        Err(e) => {
            assert!(
                std::env::var_os("ECG_REQUIRE_NETNS").is_none(),
                "network namespaces: {e}"
            );
            println!("SKIPPED: cannot create network namespaces here ({e})");
            None
        }
    }
}

#[test]
fn cutting_a_worker_link_and_then_the_coordinator_link_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bench = Bench::new(tmp.path(), 120);
    let Some(net) = hosts(3) else { return };
    bench.net = Some(net);
    let plan = Plan {
        name: "links".into(),
        workers: vec![
            vec![Fault::new("worker.compute", 3, Action::CutLink)],
            vec![],
        ],
        coordinator: vec![Fault::new("coord.step", 12, Action::CutLink)],
    };
    let run = bench.run(&plan);
    for i in &run.injected {
        println!(
            "  {} at {}: reached {} {}",
            i.fault.kind(),
            i.fault.at,
            i.reached,
            i.note
        );
    }
    assert!(run.completed, "{}", run.coordinator_output);
    assert!(run.injected.iter().all(|i| i.reached), "{:?}", run.injected);
    let a = run.audit.unwrap();
    assert_eq!((a.lost, a.duplicated, a.broken_epochs), (0, 0, 0), "{a:?}");
    assert_eq!(a.epochs, 3);
    assert!(
        run.coordinator_output.contains("fell silent"),
        "the cut links were noticed"
    );
}
