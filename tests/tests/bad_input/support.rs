//! What the bad-input tests share: commands run to their end within a bound, the check that a
//! command was refused cleanly, the tiny cohort and the ways it is damaged (CSV edits, h5py
//! rewrites), and a `cluster.toml` written key by key.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ecg_tests::{cmd, python, run_ok};

/// Longest a refused command may take: the cohort is tiny, so this is only reached by a hang.
pub(crate) const LIMIT: Duration = Duration::from_secs(90);

/// A command's exit and output.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `c` to its end; fails the test (after killing it) if it outlives [`LIMIT`].
pub(crate) fn run_bounded(mut c: Command) -> Ended {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {c:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => {
            let out = out.expect("waiting for the command");
            Ended {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{c:?} was still running after {LIMIT:?}: it hangs on bad input");
        }
    }
}

/// Asserts that a command was refused cleanly: an error status (not a signal, not 101, the
/// status of a Rust panic), no panic message, and `text` (its stderr, or its whole output)
/// holding every one of `wants`.
pub(crate) fn assert_refused(
    what: &str,
    status: ExitStatus,
    text: &str,
    all: &str,
    wants: &[String],
) {
    // The case table, shown with `--nocapture`.
    let error = all.lines().find(|l| l.starts_with("error"));
    println!("{what} | {status} | {}", error.unwrap_or_default());
    let code = status.code();
    assert!(
        code.is_some(),
        "{what}: killed by a signal ({status}):\n{all}"
    );
    assert!(
        !matches!(code, Some(0) | Some(101)),
        "{what}: exit status {status}, expected an error status:\n{all}"
    );
    assert!(!all.contains("panicked"), "{what}: panicked:\n{all}");
    for w in wants {
        assert!(text.contains(w.as_str()), "{what}: no `{w}` in:\n{text}");
    }
}

/// A tiny CODE-15%-layout cohort: 12 patients, 17 exams, in two HDF5 parts.
pub(crate) fn cohort(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    run_ok(
        cmd("coordinator")
            .args(["synth", "--patients", "12", "--seed", "1"])
            .args(["--exams-per-part", "10", "--threads", "1", "--out"])
            .arg(&data),
    );
    data
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The exams table as header and rows (the synthetic table has no quoted fields).
pub(crate) fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect());
    (lines.next().unwrap(), lines.collect())
}

pub(crate) fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) {
    let mut text = header.join(",") + "\n";
    for r in rows {
        text += &(r.join(",") + "\n");
    }
    std::fs::write(path, text).unwrap();
}

pub(crate) fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap()
}

/// Rewrites HDF5 files with h5py: each `(kind, file)` keeps the file's values but breaks one
/// thing (as in tests/hdf5_roundtrip.rs, Python writes what our writer never would).
pub(crate) fn h5py_damage(files: &[(&str, PathBuf)]) {
    const SCRIPT: &str = r#"
import sys, h5py, numpy as np
for arg in sys.argv[1:]:
    kind, path = arg.split("=", 1)
    with h5py.File(path, "r") as f:
        t, e = f["tracings"][:], f["exam_id"][:]
    with h5py.File(path, "w") as f:
        if kind == "int16":
            f["tracings"], f["exam_id"] = t.astype(np.int16), e
        elif kind == "leads8":
            f["tracings"], f["exam_id"] = t[:, :, :8], e
        elif kind == "short_ids":
            f["tracings"], f["exam_id"] = t, e[:-2]
        elif kind == "half_ids":
            f["tracings"], f["exam_id"] = t, e + 0.5
        else:
            raise SystemExit("unknown damage " + kind)
"#;
    let mut c = Command::new(python());
    c.arg("-c").arg(SCRIPT);
    for (kind, file) in files {
        c.arg(format!("{kind}={}", file.display()));
    }
    run_ok(&mut c);
}

/// A `cluster.toml`, section by section and key by key, so that a case changes one value.
/// Values are TOML as written; `@OUT` in a value stands for the case's output folder.
#[derive(Clone, Default)]
pub(crate) struct Toml(Vec<(String, Vec<(String, String)>)>);

impl Toml {
    /// A run on `data` that works (tests/cluster.rs's smallest network, one short epoch).
    pub(crate) fn healthy(data: &Path) -> Toml {
        Toml::default()
            .set("data", "root", &quoted(data))
            .set("split", "strategy", "\"hash\"")
            .set("split", "fractions", "[0.2, 0.3]")
            .set("model", "net_filter_size", "[4, 4]")
            .set("model", "net_seq_lengh", "[256, 16]")
            .set("model", "dropout_rate", "0.1")
            .set("training", "epochs", "1")
            .set("training", "batch_size", "4")
            .set("cluster", "listen", "\"127.0.0.1:0\"")
            .set("cluster", "metrics_listen", "\"\"")
            .set("cluster", "min_workers", "1")
            .set("cluster", "heartbeat_ms", "100")
            .set("cluster", "worker_timeout_ms", "5000")
    }

    pub(crate) fn set(mut self, section: &str, key: &str, value: &str) -> Toml {
        let i = match self.0.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.0.push((section.to_string(), Vec::new()));
                self.0.len() - 1
            }
        };
        let keys = &mut self.0[i].1;
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.to_string(),
            None => keys.push((key.to_string(), value.to_string())),
        }
        self
    }

    pub(crate) fn has(&self, section: &str, key: &str) -> bool {
        self.0
            .iter()
            .any(|(s, keys)| s == section && keys.iter().any(|(k, _)| k == key))
    }

    pub(crate) fn text(&self, out: &Path) -> String {
        let mut t = String::new();
        for (section, keys) in &self.0 {
            t += &format!("[{section}]\n");
            for (k, v) in keys {
                t += &format!("{k} = {}\n", v.replace("@OUT", &out.display().to_string()));
            }
        }
        t
    }
}

/// `p` as a TOML string.
pub(crate) fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}
