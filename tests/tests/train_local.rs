//! The single-process trainer end to end with the real `coordinator` binary on a synthetic
//! cohort: the validation MAE falls well below that of predicting the training mean age,
//! `history.csv` has the seed's columns plus `mae`, the checkpoints load, training can start
//! from a checkpoint, and the seed's batch order replays identically.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ecg_shared::model::load_checkpoint;
use ecg_tests::{cmd, run_err, run_ok};

/// A network small enough to train in seconds on 4096-sample tracings: stem stride 4, an
/// identity block, a block down by 4 with a channel change, and one down by 16; with so few
/// channels the seed's dropout of 0.8 would leave too little signal to learn from in a few epochs.
const TINY: &str = "[model]\nnet_filter_size = [8, 8, 16, 16]\nnet_seq_lengh = [1024, 1024, 256, 16]\n\
                    dropout_rate = 0.1\n";

fn cohort(dir: &Path, patients: u32) {
    run_ok(
        cmd("coordinator")
            .args(["synth", "--patients", &patients.to_string(), "--seed", "5"])
            .args(["--exams-per-part", "500", "--out", dir.to_str().unwrap()]),
    );
}

fn config(dir: &Path, out: &str, training: &str) -> PathBuf {
    let p = dir.join(format!("{out}.toml"));
    std::fs::write(
        &p,
        format!(
            "[data]\nroot = \"data\"\n[output]\ndir = \"{out}\"\n[split]\nstrategy = \"hash\"\n\
             fractions = [0.1, 0.2]\n{TINY}[training]\n{training}"
        ),
    )
    .unwrap();
    p
}

fn history(path: &Path) -> Vec<HashMap<String, f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        [
            "epoch",
            "train_loss",
            "valid_loss",
            "lr",
            "weighted_rmse",
            "weighted_mae",
            "rmse",
            "mse",
            "mae"
        ]
    );
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(|v| v.parse::<f64>().unwrap()))
                .collect()
        })
        .collect()
}

/// Ages of the exams by id, and the split of each exam.
fn ages_and_splits(dir: &Path, out: &str) -> (HashMap<String, f64>, HashMap<String, String>) {
    let csv = std::fs::read_to_string(dir.join("data/exams.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (id_col, age_col) = (
        header.iter().position(|h| *h == "exam_id").unwrap(),
        header.iter().position(|h| *h == "age").unwrap(),
    );
    let ages = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[id_col].to_string(), f[age_col].parse::<f64>().unwrap())
        })
        .collect();
    let split = std::fs::read_to_string(dir.join(out).join("split.csv")).unwrap();
    let splits = split
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[2].to_string())
        })
        .collect();
    (ages, splits)
}

#[test]
fn training_learns_age_and_writes_history_and_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    cohort(&tmp.path().join("data"), 400);
    let cfg = config(
        tmp.path(),
        "run",
        "epochs = 12\nbatch_size = 16\nlr = 0.01\n",
    );
    let out = run_ok(cmd("coordinator").arg("--local").arg("--config").arg(&cfg));
    assert!(out.contains("training on this machine"), "{out}");

    let rows = history(&tmp.path().join("run/history.csv"));
    assert_eq!(rows.len(), 12, "{out}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["epoch"], i as f64);
        assert!(r["train_loss"].is_finite() && r["valid_loss"].is_finite());
    }

    // The baseline: predict the training exams' mean age for every validation exam.
    let (ages, splits) = ages_and_splits(tmp.path(), "run");
    let train: Vec<f64> = splits
        .iter()
        .filter(|(_, s)| *s == "train")
        .map(|(id, _)| ages[id])
        .collect();
    let valid: Vec<f64> = splits
        .iter()
        .filter(|(_, s)| *s == "valid")
        .map(|(id, _)| ages[id])
        .collect();
    assert!(valid.len() >= 100, "{} validation exams", valid.len());
    let mean = train.iter().sum::<f64>() / train.len() as f64;
    let baseline = valid.iter().map(|a| (a - mean).abs()).sum::<f64>() / valid.len() as f64;
    let best_mae = rows.iter().map(|r| r["mae"]).fold(f64::INFINITY, f64::min);
    assert!(
        best_mae < 0.75 * baseline,
        "validation MAE {best_mae:.2} y is not well below the mean predictor's {baseline:.2} y\n{out}"
    );

    // Best and last checkpoints load with their architecture and record their epoch.
    let best = load_checkpoint(&tmp.path().join("run/model_best.safetensors")).unwrap();
    assert_eq!(best.config.net_filter_size, vec![8, 8, 16, 16]);
    let best_epoch = rows
        .iter()
        .min_by(|a, b| a["valid_loss"].total_cmp(&b["valid_loss"]))
        .unwrap()["epoch"];
    assert_eq!(best.epoch, Some(best_epoch as i64));
    let last = load_checkpoint(&tmp.path().join("run/model_last.safetensors")).unwrap();
    assert_eq!(last.epoch, Some(rows.len() as i64 - 1));
    assert!(tmp.path().join("run/optimizer_last.safetensors").is_file());
    let config_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("run/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config_json["net_seq_lengh"],
        serde_json::json!([1024, 1024, 256, 16])
    );

    // Fine-tuning: start from the best checkpoint with a vanishing rate (the
    // stop rule's floor, so that the epoch is logged). The first epoch's
    // validation loss then stays near the checkpoint's, far below a fresh network's.
    let ft = config(
        tmp.path(),
        "ft",
        "epochs = 1\nbatch_size = 16\nlr = 1e-7\ninit_from = \"run/model_best.safetensors\"\n",
    );
    let out = run_ok(cmd("coordinator").arg("--local").arg("--config").arg(&ft));
    assert!(out.contains("starting from"), "{out}");
    let ft_loss = history(&tmp.path().join("ft/history.csv"))[0]["valid_loss"];
    let fresh = config(
        tmp.path(),
        "fresh",
        "epochs = 1\nbatch_size = 16\nlr = 1e-7\n",
    );
    run_ok(
        cmd("coordinator")
            .arg("--local")
            .arg("--config")
            .arg(&fresh),
    );
    let fresh_loss = history(&tmp.path().join("fresh/history.csv"))[0]["valid_loss"];
    let best_loss = rows[best_epoch as usize]["valid_loss"];
    assert!(
        (ft_loss - best_loss).abs() < 0.5 * best_loss && ft_loss < 0.5 * fresh_loss,
        "fine-tuned start {ft_loss}, checkpoint {best_loss}, fresh start {fresh_loss}"
    );
}

#[test]
fn seed_order_replays_identically_and_bad_init_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    cohort(&tmp.path().join("data"), 80);
    let run = |name: &str| {
        let cfg = config(
            tmp.path(),
            name,
            "epochs = 2\nbatch_size = 8\norder = \"seed\"\n",
        );
        run_ok(cmd("coordinator").arg("--local").arg("--config").arg(&cfg));
        std::fs::read_to_string(tmp.path().join(name).join("history.csv")).unwrap()
    };
    assert_eq!(run("a"), run("b"));

    let bad = config(tmp.path(), "bad", "init_from = \"nowhere/model.pth\"\n");
    let err = run_err(cmd("coordinator").arg("--local").arg("--config").arg(&bad));
    assert!(err.contains("nowhere/model.pth"), "{err}");
}
