//! Helpers for the end-to-end tests and benchmark drivers: where the built binaries and the
//! project's Python (with numpy, h5py and pandas, installed by `scripts/setup.sh`) are.
use std::path::PathBuf;
use std::process::Command;

pub mod cluster;
pub mod faults;
pub mod malformed;
pub mod netns;
pub mod tls;

/// Root of the workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a binary built by this workspace (`coordinator`, `worker`) in the same profile as the
/// running test, next to the test executables' `deps/` (`scripts/test.sh` builds them first with
/// `cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `bash scripts/test.sh`, or `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// A `Command` for a workspace binary.
pub fn cmd(name: &str) -> Command {
    Command::new(bin(name))
}

/// The project's Python: `$ECG_PYTHON`, else `.venv/bin/python` made by `scripts/setup.sh`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ECG_PYTHON") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "no Python with numpy/h5py: run `bash scripts/test.sh` (it runs scripts/setup.sh) or set ECG_PYTHON"
    );
    p
}

/// Runs a command, returning stdout; panics with stdout and stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a command that must fail; returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed:\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.code().is_some(),
        "{cmd:?} died of a signal (a panic abort?): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{cmd:?} panicked:\n{stderr}");
    stderr
}
