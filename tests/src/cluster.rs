//! A run on this machine with the real binaries: a coordinator process listening on a port
//! the OS picks (it prints the address it listens on, and writes it to
//! `<out>/coordinator.addr`), worker processes started against it, and bounded waits for
//! both. Nothing sleeps: every wait blocks on an event (a line of output, the process's exit)
//! and fails the test past its bound.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{cmd, run_ok};

/// Longest wait for anything in these tests.
pub const BOUND: Duration = Duration::from_secs(240);

/// What a process has printed so far and how it ended, shared with the threads that watch it.
#[derive(Default)]
struct Seen {
    output: String,
    status: Option<ExitStatus>,
}

/// A process whose output goes to a log file (and is kept for the test), killed when dropped.
pub struct Proc {
    pid: u32,
    seen: Arc<(Mutex<Seen>, Condvar)>,
    name: String,
}

fn copy_lines(from: impl Read, log: Arc<Mutex<std::fs::File>>, seen: Arc<(Mutex<Seen>, Condvar)>) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
        let (m, cv) = &*seen;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        s.output.push_str(&line);
        s.output.push('\n');
        cv.notify_all();
    }
}

impl Proc {
    /// Starts `command` with its output in `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Proc {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let file = Arc::new(Mutex::new(std::fs::File::create(&log).expect("log file")));
        let readers = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|r| {
            let (file, seen) = (Arc::clone(&file), Arc::clone(&seen));
            std::thread::spawn(move || copy_lines(r, file, seen))
        })
        .collect::<Vec<_>>();
        let pid = child.id();
        let watch = Arc::clone(&seen);
        std::thread::spawn(move || {
            let status = child.wait().expect("wait");
            // All output first, so that an exited process's output is complete.
            for r in readers {
                let _ = r.join();
            }
            let (m, cv) = &*watch;
            m.lock().unwrap_or_else(|p| p.into_inner()).status = Some(status);
            cv.notify_all();
        });
        Proc {
            pid,
            seen,
            name: name.to_string(),
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until `f` holds for what the process printed and whether it ended, or panics
    /// after `BOUND`.
    fn wait_until<T>(&self, what: &str, mut f: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = Instant::now() + BOUND;
        let mut s = self.lock();
        loop {
            if let Some(t) = f(&s) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "gave up waiting for {what} of {} after {BOUND:?}:\n{}",
                self.name,
                s.output
            );
            s = self
                .seen
                .1
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        self.lock().output.clone()
    }

    /// The first line after the first `after` ones that contains one of `needles`.
    fn find_line(s: &Seen, needles: &[&str], after: usize) -> Option<String> {
        s.output
            .lines()
            .skip(after)
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .map(str::to_string)
    }

    /// Waits for a line containing one of `needles` among the lines after the first `after`
    /// ones; panics if the process ends first.
    fn wait_for_match(&self, needles: &[&str], after: usize) -> String {
        self.wait_until(&format!("a line with one of {needles:?}"), |s| {
            if let Some(l) = Self::find_line(s, needles, after) {
                return Some(l);
            }
            if let Some(status) = s.status {
                panic!(
                    "{} ended ({status}) before printing one of {needles:?}:\n{}",
                    self.name, s.output
                );
            }
            None
        })
    }

    /// Waits for a line of output containing `needle` (panics if the process ends first).
    pub fn wait_for_line(&self, needle: &str) -> String {
        self.wait_for_match(&[needle], 0)
    }

    /// Waits for a line of output containing `needle`, or for the process to end first
    /// (`None`).
    pub fn wait_for_line_or_end(&self, needle: &str) -> Option<String> {
        self.wait_until(
            &format!("a line with `{needle}` or the exit"),
            |s| match Self::find_line(s, &[needle], 0) {
                Some(l) => Some(Some(l)),
                None => s.status.map(|_| None),
            },
        )
    }

    /// Waits for a line containing any of `needles` (panics if the process ends first).
    pub fn wait_for_any_line(&self, needles: &[&str]) -> String {
        self.wait_for_match(needles, 0)
    }

    /// Lines printed so far.
    pub fn line_count(&self) -> usize {
        self.lock().output.lines().count()
    }

    /// Waits for a line containing `needle` among the lines after the first `after` ones
    /// (panics if the process ends first).
    pub fn wait_for_line_after(&self, needle: &str, after: usize) -> String {
        self.wait_for_match(&[needle], after)
    }

    /// Sends signal `sig` (`KILL`, `TERM`, ...) with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok || self.lock().status.is_some(),
            "cannot send SIG{sig} to {}",
            self.name
        );
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_until("the exit", |s| s.status)
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
        if self.lock().status.is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// Starts `coordinator --config cfg` and waits until it says where it listens.
pub fn start_coordinator(cfg: &Path, log: PathBuf) -> (Proc, String) {
    start_coordinator_with(cfg, log, &[])
}

/// [`start_coordinator`] with environment variables `env` set.
pub fn start_coordinator_with(cfg: &Path, log: PathBuf, env: &[(&str, &str)]) -> (Proc, String) {
    let mut c = cmd("coordinator");
    c.arg("--config").arg(cfg).envs(env.iter().copied());
    let p = Proc::spawn("coordinator", c, log);
    let addr = listen_address(&p.wait_for_line(" listening on "));
    (p, addr)
}

/// The address in the coordinator's `... listening on ADDR ...` line.
pub fn listen_address(line: &str) -> String {
    line.split(" listening on ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .unwrap_or_else(|| panic!("no address in `{line}`"))
        .to_string()
}

/// A synthetic cohort of `patients` patients from `seed` in `dir/name`, HDF5 parts of
/// `per_part` exams.
pub fn synth_cohort(dir: &Path, name: &str, patients: u32, seed: u32, per_part: u32) -> PathBuf {
    let data = dir.join(name);
    run_ok(
        cmd("coordinator")
            .args(["synth", "--patients", &patients.to_string()])
            .args(["--seed", &seed.to_string()])
            .args(["--exams-per-part", &per_part.to_string()])
            .arg("--out")
            .arg(&data),
    );
    data
}

/// The body of `GET path` from `addr` over plain HTTP/1.1 (panics unless the status is 200).
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// Starts a CPU worker on one thread against `addr`, with `extra` arguments.
pub fn start_worker(addr: &str, log: PathBuf, extra: &[&str]) -> Proc {
    let mut c = cmd("worker");
    c.args(["--coordinator", addr, "--cpu", "--threads", "1"])
        .args(extra);
    Proc::spawn("worker", c, log)
}

/// The smallest network of the seed's shape, for tests about the exchange, not the learning.
pub const MICRO: &str =
    "[model]\nnet_filter_size = [4, 4]\nnet_seq_lengh = [256, 16]\ndropout_rate = 0.1\n";

/// A cluster.toml `dir/name.toml` for a run in `dir/name` on `data` (hash split, 10% test and
/// 20% validation), with the `[model]` lines `model` and then `extra`; returns it and the run's
/// output folder.
pub fn run_config(
    dir: &Path,
    name: &str,
    data: &Path,
    model: &str,
    extra: &str,
) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[data]\nroot = {data:?}\n[output]\ndir = {out:?}\n[split]\nstrategy = \"hash\"\n\
             fractions = [0.1, 0.2]\n{model}{extra}\n"
        ),
    )
    .expect("write the configuration");
    (p, out)
}

/// `[cluster]` on a free port, with quick heartbeats, then the lines `more`.
pub fn cluster_section(min_workers: usize, micro_batch: usize, more: &str) -> String {
    format!(
        "[cluster]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nmin_workers = {min_workers}\n\
         micro_batch = {micro_batch}\nheartbeat_ms = 100\nworker_timeout_ms = 5000\n{more}"
    )
}

/// Runs a coordinator and one worker per entry of `workers` (its extra arguments) to the end;
/// returns the coordinator's output.
pub fn run_cluster(cfg: &Path, out: &Path, workers: &[Vec<String>]) -> String {
    std::fs::create_dir_all(out).expect("output folder");
    let (mut coord, addr) = start_coordinator(cfg, out.with_extension("coordinator.log"));
    let mut ws: Vec<Proc> = workers
        .iter()
        .enumerate()
        .map(|(i, args)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            start_worker(&addr, out.with_extension(format!("worker{i}.log")), &args)
        })
        .collect();
    let text = coord.wait_ok();
    for w in &mut ws {
        w.wait_ok();
    }
    text
}

/// The parameters a worker wrote with `--dump-states DIR` (`DIR/v<version>.f32`, little-endian
/// f32), by version.
pub fn dumped_states(dir: &Path) -> BTreeMap<u64, Vec<f32>> {
    std::fs::read_dir(dir)
        .expect("the worker's --dump-states folder")
        .map(|e| e.expect("a dumped state").path())
        .map(|p| {
            let v = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("a v<version> name")[1..]
                .parse()
                .expect("a version");
            let values = std::fs::read(&p)
                .expect("a dumped state")
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (v, values)
        })
        .collect()
}
