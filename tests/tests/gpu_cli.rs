//! The GPU-facing commands of a worker built without CUDA (the build every test runs): `--gpu`,
//! `gpu-check` and a reduced precision are refused with a message saying why, and `worker bench`
//! times the training step on the CPU in the JSON format `bench/gpu_report.py` reads.
use ecg_tests::{cmd, run_err, run_ok};

#[test]
fn a_cpu_build_refuses_gpus_and_reduced_precision_by_name() {
    let err = run_err(cmd("worker").args(["--gpu", "0", "--coordinator", "127.0.0.1:9"]));
    assert!(
        err.contains("--gpu") && err.contains("without the `cuda` feature"),
        "{err}"
    );
    let err = run_err(cmd("worker").args(["gpu-check", "--gpu", "1"]));
    assert!(
        err.contains("CUDA device 1") && err.contains("without the `cuda` feature"),
        "{err}"
    );
    let err = run_err(cmd("worker").args(["bench", "--precision", "bf16", "--batches", "1"]));
    assert!(err.contains("bf16") && err.contains("CUDA"), "{err}");
    let err = run_err(cmd("worker").args(["bench", "--precision", "fp8"]));
    assert!(err.contains("fp8"), "{err}");
}

#[test]
fn bench_prints_one_timing_line_per_batch_size() {
    let out =
        run_ok(cmd("worker").args(["bench", "--batches", "1,2", "--reps", "2", "--warmup", "0"]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, batch) in lines.iter().zip([1, 2]) {
        assert_eq!(line["peer"], "ours");
        assert_eq!(line["device"], "cpu");
        assert_eq!(line["precision"], "f32");
        assert_eq!(line["batch"], batch);
        assert_eq!(line["what"], format!("train{batch}"));
        let secs = line["seconds"].as_array().expect("seconds");
        assert_eq!(secs.len(), 2);
        assert!(
            secs.iter().all(|s| s.as_f64().is_some_and(|v| v > 0.0)),
            "{line}"
        );
    }
}
