//! A run on this machine with the real binaries: a coordinator process listening on a port
//! the OS picks (it writes the address to `<out>/coordinator.addr`), worker processes started
//! against it, and bounded waits for both. Nothing sleeps to wait for a server: every wait
//! polls a condition and fails the test past its bound.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;

/// Longest wait for anything in these tests.
pub const BOUND: Duration = Duration::from_secs(240);

/// Polls `f` every few milliseconds until it returns a value, or panics after `bound`.
pub fn poll<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            start.elapsed() < bound,
            "gave up waiting for {what} after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process whose output goes to a log file, killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
    name: String,
}

impl Proc {
    /// Starts `command` with its output in `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(Stdio::from(f.try_clone().expect("log handle")))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for it to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let name = self.name.clone();
        poll(&format!("{name} to exit"), BOUND, || {
            self.child.try_wait().expect("try_wait")
        })
    }

    /// Waits for it to exit and checks that it succeeded; returns its output.
    pub fn wait_ok(&mut self) -> String {
        let status = self.wait();
        let out = self.output();
        assert!(status.success(), "{} failed ({status}):\n{out}", self.name);
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `coordinator --config cfg` and waits for the address it listens on.
pub fn start_coordinator(cfg: &Path, out_dir: &Path, log: PathBuf) -> (Proc, String) {
    let addr_file = out_dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut c = cmd("coordinator");
    c.arg("--config").arg(cfg);
    let mut p = Proc::spawn("coordinator", c, log);
    let addr = poll("the coordinator's address", BOUND, || {
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("the coordinator exited ({status}):\n{}", p.output());
        }
        std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    (p, addr)
}

/// Starts a CPU worker on one thread against `addr`, with `extra` arguments.
pub fn start_worker(addr: &str, log: PathBuf, extra: &[&str]) -> Proc {
    let mut c = cmd("worker");
    c.args(["--coordinator", addr, "--cpu", "--threads", "1"])
        .args(extra);
    Proc::spawn("worker", c, log)
}
