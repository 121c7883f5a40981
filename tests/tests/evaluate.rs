//! `worker evaluate` end to end, with the real binary: on a tiny HDF5 file and a tiny network
//! saved as our safetensors checkpoint, the output has one line per HDF5 row in file order with
//! the file's ids, and predictions equal to the same network's predictions computed in this
//! process; the metrics printed with `--csv` equal those recomputed here from the output file and
//! by numpy; ids default to `exam_id`, `--row-numbers` gives the seed's 0..N-1, and a chunked
//! float64 file without ids gives the same predictions. Bad inputs fail with a message naming the
//! flag or file, and leave no output file. Finally the authors' layout (a folder with `model.pth`
//! and `config.json`, from the committed PyTorch fixtures) reproduces PyTorch's eval outputs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use ecg_shared::data::h5write::TracingsWriter;
use ecg_shared::model::checkpoint::{load_checkpoint, save_model};
use ecg_shared::model::{ModelConfig, ResNet1d};
use ecg_tests::{cmd, python, run_err, run_ok, workspace_root};

const LEADS: usize = 12;
const SAMPLES: usize = 64;
/// HDF5 row order: 107 is not in the exams table, 106 has no age, 0 is padding.
const IDS: [i64; 8] = [105, 101, 107, 103, 104, 102, 106, 0];
const EXAMS_CSV: &str = "exam_id,age,patient_id\n\
    101,34,1\n102,47,2\n103,58,3\n104,61,4\n105,72,5\n106,,6\n200,50,7\n";

fn config(seq_length: usize) -> ModelConfig {
    ModelConfig {
        seq_length,
        net_filter_size: vec![8, 16],
        net_seq_lengh: vec![seq_length, seq_length / 4],
        kernel_size: 5,
        dropout_rate: 0.5,
    }
}

/// Stored value of exam `id` at (sample, lead): exact in f32 and f64.
fn value(id: i64, s: usize, c: usize) -> f32 {
    if id == 0 {
        return 0.0;
    }
    ((id as usize * 7 + s * 3 + c * 11) % 200) as f32 / 64.0 - 1.5
}

/// `(rows, samples, leads)` as stored.
fn stored(ids: &[i64]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| (0..SAMPLES).flat_map(move |s| (0..LEADS).map(move |c| value(id, s, c))))
        .collect()
}

/// `(rows, leads, samples)` as the network reads it.
fn channels_first(ids: &[i64]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| (0..LEADS).flat_map(move |c| (0..SAMPLES).map(move |s| value(id, s, c))))
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
    hdf5: PathBuf,
    model: PathBuf,
    csv: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hdf5 = dir.path().join("part.hdf5");
        let mut w = TracingsWriter::create(&hdf5, IDS.len(), SAMPLES, LEADS).unwrap();
        w.write_rows(0, &IDS, &stored(&IDS)).unwrap();
        w.finish().unwrap();
        let model = dir.path().join("model.safetensors");
        let net = ResNet1d::new(&config(SAMPLES), 7, &Device::Cpu).unwrap();
        save_model(&net, &model, &BTreeMap::new()).unwrap();
        let csv = dir.path().join("exams.csv");
        std::fs::write(&csv, EXAMS_CSV).unwrap();
        Setup {
            dir,
            hdf5,
            model,
            csv,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `worker evaluate --output OUT` plus `extra`, with this setup's `--model` and `--hdf5`
    /// where `extra` does not give them.
    fn evaluate<S: AsRef<std::ffi::OsStr>>(&self, out: &Path, extra: &[S]) -> Command {
        let has = |flag: &str| extra.iter().any(|a| a.as_ref() == flag);
        let mut c = cmd("worker");
        c.arg("evaluate").arg("--output").arg(out).args(extra);
        if !has("--model") {
            c.arg("--model").arg(&self.model);
        }
        if !has("--hdf5") {
            c.arg("--hdf5").arg(&self.hdf5);
        }
        c
    }

    /// The network's predictions computed here, in the given batch sizes.
    fn in_process(&self, ids: &[i64], batch: usize) -> Vec<f32> {
        let net = load_checkpoint(&self.model)
            .unwrap()
            .build(&Device::Cpu)
            .unwrap();
        let x = channels_first(ids);
        let per = LEADS * SAMPLES;
        x.chunks(batch * per)
            .flat_map(|b| net.predict(b, b.len() / per).unwrap())
            .collect()
    }
}

/// The output file as (ids, predictions); checks the header and that every cell is an f32.
fn read_output(path: &Path) -> (Vec<i64>, Vec<f32>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ids,predicted_age"));
    lines
        .map(|l| {
            let (id, p) = l.split_once(',').unwrap();
            let p: f64 = p.parse().unwrap();
            assert_eq!(p as f32 as f64, p, "{p} is the f64 copy of an f32");
            (id.parse::<i64>().unwrap(), p as f32)
        })
        .unzip()
}

/// The value of the stdout line `key: value ...`.
fn reported(stdout: &str, key: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` line in\n{stdout}"));
    line[key.len() + 2..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// No file but `keep` in `dir` (no output, no temporary file left behind).
fn assert_only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn predictions_follow_the_file_and_metrics_match_a_recomputation() {
    let s = Setup::new();
    let out = s.path("pred.csv");
    let csv = s.csv.as_os_str();
    let stdout = run_ok(&mut s.evaluate(
        &out,
        &["--batch-size".as_ref(), "3".as_ref(), "--csv".as_ref(), csv],
    ));
    let (ids, preds) = read_output(&out);
    assert_eq!(ids, IDS, "ids of the HDF5 rows, in file order");
    let want = s.in_process(&IDS, 3);
    assert_eq!(
        preds.iter().map(|p| p.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|p| p.to_bits()).collect::<Vec<_>>(),
        "{preds:?} vs in-process {want:?}"
    );

    assert_eq!(reported(&stdout, "rows"), 8.0);
    assert_eq!(reported(&stdout, "compared"), 5.0);
    assert_eq!(reported(&stdout, "left out, padding (exam id 0)"), 1.0);
    assert_eq!(reported(&stdout, "left out, id not in csv"), 1.0);
    assert_eq!(reported(&stdout, "left out, missing age"), 1.0);

    // Recomputed from the output file and the table, with the textbook formulas.
    let ages: BTreeMap<i64, f64> = [
        (101, 34.0),
        (102, 47.0),
        (103, 58.0),
        (104, 61.0),
        (105, 72.0),
    ]
    .into_iter()
    .collect();
    let (p, t): (Vec<f64>, Vec<f64>) = ids
        .iter()
        .zip(&preds)
        .filter_map(|(id, &p)| ages.get(id).map(|&a| (p as f64, a)))
        .unzip();
    let n = p.len() as f64;
    let e: Vec<f64> = p.iter().zip(&t).map(|(p, t)| p - t).collect();
    let mae = e.iter().map(|e| e.abs()).sum::<f64>() / n;
    let rmse = (e.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
    let me = e.iter().sum::<f64>() / n;
    let (mp, mt) = (p.iter().sum::<f64>() / n, t.iter().sum::<f64>() / n);
    let cov: f64 = p.iter().zip(&t).map(|(p, t)| (p - mp) * (t - mt)).sum();
    let vp: f64 = p.iter().map(|p| (p - mp).powi(2)).sum();
    let vt: f64 = t.iter().map(|t| (t - mt).powi(2)).sum();
    let r = cov / (vp * vt).sqrt();
    let printed = [
        reported(&stdout, "MAE"),
        reported(&stdout, "RMSE"),
        reported(&stdout, "mean error (predicted - true)"),
        reported(&stdout, "Pearson r"),
    ];
    for (got, want) in printed.iter().zip([mae, rmse, me, r]) {
        assert!(
            (got - want).abs() <= 6e-7,
            "printed {got} vs {want}\n{stdout}"
        );
    }

    // The same four from numpy on the output file and the table (pandas-free).
    let np = run_ok(
        Command::new(python())
            .arg("-c")
            .arg(
                r#"
import sys, numpy as np
pred = np.genfromtxt(sys.argv[1], delimiter=",", names=True)
ages = {101: 34, 102: 47, 103: 58, 104: 61, 105: 72}
keep = [i for i, x in enumerate(pred["ids"]) if int(x) in ages]
p = pred["predicted_age"][keep]; t = np.array([ages[int(pred["ids"][i])] for i in keep], float)
e = p - t
print(*(repr(float(v)) for v in
        (np.mean(np.abs(e)), np.sqrt(np.mean(e**2)), np.mean(e), np.corrcoef(p, t)[0, 1])))
"#,
            )
            .arg(&out),
    );
    let numpy: Vec<f64> = np.split_whitespace().map(|v| v.parse().unwrap()).collect();
    for (i, (ours, theirs)) in [mae, rmse, me, r].iter().zip(&numpy).enumerate() {
        assert!(
            (ours - theirs).abs() <= 1e-12,
            "metric {i}: {ours} vs numpy {theirs}"
        );
    }
    assert_only(
        s.dir.path(),
        &["part.hdf5", "model.safetensors", "exams.csv", "pred.csv"],
    );
}

#[test]
fn ids_default_to_exam_id_and_a_chunked_float64_file_gives_the_same_predictions() {
    let s = Setup::new();
    let want = s.in_process(&IDS, 3);
    let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();

    let explicit = s.path("explicit.csv");
    run_ok(&mut s.evaluate(&explicit, &["--batch-size", "3", "--ids-dset", "exam_id"]));
    assert_eq!(read_output(&explicit), (IDS.to_vec(), want.clone()));

    // The batch size changes nothing: one exam per forward pass, and the default (8).
    for (name, bs) in [("bs1.csv", "1"), ("bs8.csv", "8")] {
        let out = s.path(name);
        run_ok(&mut s.evaluate(&out, &["--batch-size", bs]));
        assert_eq!(read_output(&out).0, IDS);
        assert_eq!(bits(&read_output(&out).1), bits(&want), "batch size {bs}");
    }

    let rows = s.path("rows.csv");
    run_ok(&mut s.evaluate(&rows, &["--batch-size", "3", "--row-numbers"]));
    let (ids, preds) = read_output(&rows);
    assert_eq!(
        ids,
        (0..IDS.len() as i64).collect::<Vec<_>>(),
        "the seed's row numbers"
    );
    assert_eq!(bits(&preds), bits(&want));

    // The same values as float64, chunked and compressed, without an id dataset.
    let other = s.path("other.hdf5");
    run_ok(
        Command::new(python())
            .arg("-c")
            .arg(
                r#"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    t = f["tracings"][()].astype(np.float64)
with h5py.File(sys.argv[2], "w") as g:
    g.create_dataset("signal", data=t, chunks=(2,) + t.shape[1:], compression="gzip")
"#,
            )
            .arg(&s.hdf5)
            .arg(&other),
    );
    let out = s.path("other.csv");
    let o = other.as_os_str();
    run_ok(&mut s.evaluate(
        &out,
        &[
            "--batch-size".as_ref(),
            "3".as_ref(),
            "--traces-dset".as_ref(),
            "signal".as_ref(),
            "--hdf5".as_ref(),
            o,
        ],
    ));
    let (ids, preds) = read_output(&out);
    assert_eq!(
        ids,
        (0..IDS.len() as i64).collect::<Vec<_>>(),
        "no exam_id: row numbers"
    );
    assert_eq!(bits(&preds), bits(&want));

    // --csv needs ids: refused before any work, nothing written.
    let refused = s.path("refused.csv");
    let e = run_err(&mut s.evaluate(
        &refused,
        &[
            "--traces-dset".as_ref(),
            "signal".as_ref(),
            "--csv".as_ref(),
            s.csv.as_os_str(),
            "--hdf5".as_ref(),
            o,
        ],
    ));
    assert!(e.contains("--ids-dset") && e.contains("other.hdf5"), "{e}");
    assert!(!refused.exists());
}

#[test]
fn bad_inputs_fail_naming_the_flag_or_file_and_leave_no_output() {
    let s = Setup::new();
    let out = s.path("pred.csv");
    let small = s.path("small.safetensors");
    let net = ResNet1d::new(&config(32), 1, &Device::Cpu).unwrap();
    save_model(&net, &small, &BTreeMap::new()).unwrap();
    let missing_model = s.path("no-model");
    let missing_hdf5 = s.path("none.hdf5");
    let missing_csv = s.path("none.csv");
    let cases: Vec<(Vec<&std::ffi::OsStr>, Vec<&str>)> = vec![
        (
            vec!["--traces-dset".as_ref(), "nope".as_ref()],
            vec!["part.hdf5", "no dataset `nope`"],
        ),
        (
            vec!["--ids-dset".as_ref(), "ids".as_ref()],
            vec!["part.hdf5", "no dataset `ids`"],
        ),
        (
            vec!["--batch-size".as_ref(), "0".as_ref()],
            vec!["--batch-size", "at least 1"],
        ),
        (
            vec!["--model".as_ref(), missing_model.as_os_str()],
            vec!["--model", "no-model"],
        ),
        (
            vec!["--hdf5".as_ref(), missing_hdf5.as_os_str()],
            vec!["--hdf5", "none.hdf5"],
        ),
        (
            vec!["--csv".as_ref(), missing_csv.as_os_str()],
            vec!["none.csv"],
        ),
        (
            vec!["--model".as_ref(), small.as_os_str()],
            vec!["part.hdf5", "(N, 32, 12)", "do not fit"],
        ),
        (
            vec!["--csv".as_ref(), s.hdf5.as_os_str()],
            vec!["part.hdf5"],
        ),
    ];
    for (args, words) in cases {
        let e = run_err(&mut s.evaluate(&out, &args));
        for w in words {
            assert!(e.contains(w), "{args:?}: `{w}` not in\n{e}");
        }
        assert_only(
            s.dir.path(),
            &[
                "part.hdf5",
                "model.safetensors",
                "exams.csv",
                "small.safetensors",
            ],
        );
    }
    let nested = s.path("no/such/dir/pred.csv");
    let e = run_err(&mut s.evaluate::<&str>(&nested, &[]));
    assert!(
        e.contains("--output") && e.contains("does not exist"),
        "{e}"
    );
    let e = run_err(&mut s.evaluate::<&str>(s.dir.path(), &[]));
    assert!(e.contains("--output") && e.contains("is a folder"), "{e}");
}

#[test]
fn the_authors_model_folder_reproduces_pytorch_eval_outputs() {
    let fixtures = workspace_root().join("tests/fixtures/model");
    let dir = tempfile::tempdir().unwrap();
    // The inputs of the PyTorch parity run, stored (exams, samples, leads) as in CODE-15%.
    let hdf5 = dir.path().join("parity.hdf5");
    let stdout = run_ok(
        Command::new(python())
            .arg("-c")
            .arg(
                r#"
import sys, h5py, numpy as np
from safetensors.numpy import load_file
d = load_file(sys.argv[1])
with h5py.File(sys.argv[2], "w") as f:
    f["tracings"] = np.ascontiguousarray(d["input"].transpose(0, 2, 1))
    f["exam_id"] = np.arange(1, d["input"].shape[0] + 1, dtype=np.int64)
print(" ".join(repr(float(v)) for v in d["out_eval"].ravel()))
"#,
            )
            .arg(fixtures.join("parity.safetensors"))
            .arg(&hdf5),
    );
    let torch_out: Vec<f64> = stdout
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(torch_out.len(), 4);

    for container in ["model_zip.pth", "model_legacy.pth"] {
        let folder = dir.path().join(format!("model-{container}"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::copy(fixtures.join(container), folder.join("model.pth")).unwrap();
        std::fs::copy(fixtures.join("config.json"), folder.join("config.json")).unwrap();
        let out = dir.path().join(format!("{container}.csv"));
        run_ok(
            cmd("worker")
                .args(["evaluate", "--batch-size", "3", "--model"])
                .arg(&folder)
                .arg("--hdf5")
                .arg(&hdf5)
                .arg("--output")
                .arg(&out),
        );
        let (ids, preds) = read_output(&out);
        assert_eq!(ids, vec![1, 2, 3, 4]);
        for (i, (&ours, &theirs)) in preds.iter().zip(&torch_out).enumerate() {
            let rel = (ours as f64 - theirs).abs() / theirs.abs().max(1e-3);
            assert!(
                rel <= 1e-5,
                "{container}, exam {i}: {ours} vs PyTorch {theirs}"
            );
        }
    }

    // A config.json that does not fit the weights: refused, naming the file and a tensor.
    let bad = dir.path().join("bad-model");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(fixtures.join("model_zip.pth"), bad.join("model.pth")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("config.json")).unwrap())
            .unwrap();
    cfg["net_filter_size"] = serde_json::json!([8, 16, 24, 32]);
    std::fs::write(bad.join("config.json"), cfg.to_string()).unwrap();
    let out = dir.path().join("bad.csv");
    let e = run_err(
        cmd("worker")
            .args(["evaluate", "--model"])
            .arg(&bad)
            .arg("--hdf5")
            .arg(&hdf5)
            .arg("--output")
            .arg(&out),
    );
    assert!(
        e.contains("bad-model/model.pth") && e.contains("resblock1d_3.conv1.weight"),
        "{e}"
    );
    assert!(!out.exists());
}
