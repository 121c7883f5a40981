//! A coordinator started again on a run that had finished: it says so and trains or predicts
//! nothing, and exits; or, with `cluster.linger_after_finish` (as under Kubernetes, where an
//! exited container is started again), it keeps answering until SIGTERM, as does a worker with
//! `--linger-after-finish`.
use ecg_tests::cluster::{
    MICRO, cluster_section, run_cluster, run_config, start_coordinator, start_coordinator_with,
    start_worker, synth_cohort,
};
use ecg_tests::{cmd, run_ok};

#[test]
fn a_coordinator_started_again_on_a_finished_run_does_nothing_or_lingers_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth_cohort(tmp.path(), "data8", 30, 8, 400);
    let (cfg, out) = run_config(
        tmp.path(),
        "done",
        &data,
        MICRO,
        &format!(
            "[training]\nepochs = 1\nbatch_size = 8\n{}",
            cluster_section(1, 0, "")
        ),
    );
    run_cluster(&cfg, &out, &[vec![]]);
    let predictions = std::fs::read(out.join("test_predictions.csv")).unwrap();
    let history = std::fs::read(out.join("history.csv")).unwrap();

    // Started again: nothing to train or predict, it says so and exits 0 without a worker.
    let (mut again, _) = start_coordinator(&cfg, out.join("again.log"));
    let text = again.wait_ok();
    assert!(text.contains("had already finished"), "{text}");
    assert_eq!(
        std::fs::read(out.join("test_predictions.csv")).unwrap(),
        predictions
    );
    assert_eq!(std::fs::read(out.join("history.csv")).unwrap(), history);

    // Lingering (as under Kubernetes): it answers until SIGTERM, and so does the worker.
    let (mut coord, addr) = start_coordinator_with(
        &cfg,
        out.join("linger.log"),
        &[("ECG__CLUSTER__LINGER_AFTER_FINISH", "true")],
    );
    coord.wait_for_line("answering until stopped");
    let mut worker = start_worker(
        &addr,
        out.join("linger-worker.log"),
        &["--linger-after-finish"],
    );
    worker.wait_for_line("waiting for SIGTERM");
    let status = run_ok(cmd("coordinator").args(["status", "--coordinator", &addr]));
    assert!(status.to_lowercase().contains("finished"), "{status}");
    worker.signal("TERM");
    assert!(worker.wait().success());
    coord.signal("TERM");
    assert!(coord.wait().success(), "{}", coord.output());
    assert_eq!(
        std::fs::read(out.join("test_predictions.csv")).unwrap(),
        predictions
    );
}
