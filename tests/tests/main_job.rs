//! The coordinator's main job end to end, with the real binaries: a synthetic cohort, then
//! `coordinator --config cluster.toml` (index, report, fingerprint, split.csv), and
//! `worker check-data` agreeing on the fingerprint from another mount point.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use ecg_tests::{cmd, run_err, run_ok};

fn synth(dir: &Path, patients: u32) {
    run_ok(
        cmd("coordinator")
            .args(["synth", "--patients", &patients.to_string(), "--seed", "3"])
            .args(["--exams-per-part", "40", "--out", dir.to_str().unwrap()]),
    );
}

fn fingerprint(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("dataset fingerprint "))
        .expect("a fingerprint line");
    let fp = line
        .trim_start_matches("dataset fingerprint ")
        .trim()
        .to_string();
    assert_eq!(fp.len(), 64, "{line}");
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()), "{line}");
    fp
}

/// A tiny network and one epoch: these tests are about the data path, not the training.
const TINY: &str =
    "[model]\nnet_filter_size = [4, 4]\nnet_seq_lengh = [256, 16]\n[training]\nepochs = 1\n";

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("cluster.toml");
    std::fs::write(
        &p,
        format!("[data]\nroot = \"data\"\n[output]\ndir = \"out\"\n{TINY}{extra}"),
    )
    .unwrap();
    p
}

#[test]
fn coordinator_indexes_splits_and_writes_split_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 60);
    // One more CSV row whose exam has no tracing: it must be reported and left out.
    let mut csv = std::fs::read_to_string(data.join("exams.csv")).unwrap();
    let n_columns = csv.lines().next().unwrap().split(',').count();
    let orphan: Vec<String> = (0..n_columns)
        .map(|i| match i {
            0 => "999999999".to_string(),
            1 => "50".to_string(),
            10 => "424242".to_string(),
            _ => String::new(),
        })
        .collect();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        (header[0], header[1], header[10]),
        ("exam_id", "age", "patient_id")
    );
    csv.push_str(&orphan.join(","));
    csv.push('\n');
    std::fs::write(data.join("exams.csv"), &csv).unwrap();

    let cfg = config(
        tmp.path(),
        "[split]\nstrategy = \"age-balanced\"\nseed = 1\n",
    );
    let out = run_ok(cmd("coordinator").arg("--local").arg("--config").arg(&cfg));
    assert!(out.contains("excluded, no HDF5 row: 1"), "{out}");
    let fp = fingerprint(&out);

    // split.csv: every usable exam exactly once, each patient in one split.
    let split = std::fs::read_to_string(tmp.path().join("out/split.csv")).unwrap();
    let mut lines = split.lines();
    assert_eq!(lines.next(), Some("exam_id,patient_id,split"));
    let mut seen = HashSet::new();
    let mut patient_split: HashMap<String, String> = HashMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert!(seen.insert(f[0].to_string()), "exam {} twice", f[0]);
        assert!(["train", "valid", "test"].contains(&f[2]), "{l}");
        let prev = patient_split
            .entry(f[1].to_string())
            .or_insert_with(|| f[2].to_string());
        assert_eq!(prev, f[2], "patient {} in two splits", f[1]);
    }
    let csv_exams: HashSet<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert!(
        !seen.contains("999999999"),
        "the exam without a tracing must not be split"
    );
    assert_eq!(seen.len(), csv_exams.len() - 1);
    assert!(seen.is_subset(&csv_exams));

    // A worker that sees the same files under another root computes the same fingerprint.
    let elsewhere = tmp.path().join("mnt/code");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), elsewhere.join(e.file_name())).unwrap();
    }
    let check_data = || {
        let out = run_ok(
            cmd("worker")
                .args(["check-data", "--config"])
                .arg(&cfg)
                .arg("--data-root")
                .arg(&elsewhere),
        );
        fingerprint(&out)
    };
    assert_eq!(check_data(), fp);

    // Changing one age changes the fingerprint.
    let mut rows: Vec<String> = csv.lines().map(str::to_string).collect();
    let mut f: Vec<String> = rows[1].split(',').map(str::to_string).collect();
    f[1] = (f[1].parse::<i64>().unwrap() + 1).to_string();
    rows[1] = f.join(",");
    std::fs::write(elsewhere.join("exams.csv"), rows.join("\n") + "\n").unwrap();
    assert_ne!(check_data(), fp);
}

#[test]
fn bad_configurations_fail_with_a_message_that_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("data"), 10);

    let cfg = config(tmp.path(), "[split]\nseeed = 1\n");
    let err = run_err(cmd("coordinator").arg("--config").arg(&cfg));
    assert!(err.contains("unknown key `seeed` in [split]"), "{err}");

    let cfg = config(tmp.path(), "");
    let err = run_err(
        cmd("coordinator")
            .arg("--config")
            .arg(&cfg)
            .env("ECG__SPLIT__SEEED", "2"),
    );
    assert!(err.contains("ECG__SPLIT__SEEED"), "{err}");

    std::fs::write(
        tmp.path().join("cluster.toml"),
        "[data]\nroot = \"data\"\nhdf5 = [\"absent.hdf5\"]\n",
    )
    .unwrap();
    let err = run_err(
        cmd("coordinator")
            .arg("--config")
            .arg(tmp.path().join("cluster.toml")),
    );
    assert!(err.contains("absent.hdf5"), "{err}");

    let cfg = config(tmp.path(), "[data]\n");
    let err = run_err(cmd("coordinator").arg("--config").arg(&cfg));
    assert!(
        err.contains("cluster.toml"),
        "a duplicate [data] table is a TOML error naming the file: {err}"
    );

    let err = run_err(&mut cmd("coordinator"));
    assert!(err.contains("--config"), "{err}");

    let cfg = config(tmp.path(), "");
    let err = run_err(
        cmd("coordinator")
            .arg("--config")
            .arg(&cfg)
            .env("ECG__DATA__N_SAMPLES", "5000"),
    );
    assert!(
        err.contains("5000") && err.contains("4096"),
        "a shape mismatch names both shapes: {err}"
    );
}
