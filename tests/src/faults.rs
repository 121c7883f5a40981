//! The fault-injection harness: a training run of the real binaries on this machine, with
//! faults injected at named points (`ecg_shared::faults`): a process started with
//! `ECG_FAULT_AT=POINT@N` stops at the Nth pass of that point and says so on stderr; the
//! harness, waiting for that line, sends it a real signal there (SIGKILL, or SIGTERM for a
//! draining coordinator), damages the checkpoint when asked, and starts it again, armed with
//! the target's next fault. A straggler is a worker that pauses at its point instead.
//!
//! Afterwards the run is audited from its files alone: `commits.csv` (every committed step
//! with its exam count and digest) against `split.csv`, for exams lost or used twice in each
//! epoch; the largest pause between commits; and the final validation loss, beside an
//! undisturbed run of the same configuration and seed.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use ecg_shared::faults::FAULT_ENV;
use ecg_shared::train::audit;

use crate::cluster::Proc;
use crate::cmd;

/// Fault points of the worker, in the order a step passes them.
pub const WORKER_POINTS: [&str; 10] = [
    "worker.register",
    "worker.registered",
    "worker.download",
    "worker.compute",
    "worker.forward",
    "worker.backward",
    "worker.upload",
    "worker.uploaded",
    "worker.predict",
    "worker.reported",
];

/// Fault points of the coordinator.
pub const COORDINATOR_POINTS: [&str; 12] = [
    "coord.listening",
    "coord.step",
    "coord.contribution",
    "coord.reduce",
    "coord.commit",
    "coord.checkpoint_write",
    "coord.checkpoint_rename",
    "coord.checkpointed",
    "coord.predict",
    "coord.epoch_end",
    "coord.test",
    "coord.finish",
];

/// What the harness does when a process reaches its fault point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL it there, then start it again.
    Kill,
    /// SIGKILL it there, flip bytes in the middle of `train_state.safetensors`, start it again.
    KillCorrupt,
    /// SIGTERM it there (the coordinator drains and exits 0), then start it again.
    Term,
    /// Nothing: the process pauses this many milliseconds at the point (a straggler) and goes on.
    Straggle(u64),
    /// Cut the process's host link there (runs in network namespaces only) until the other side
    /// noticed (the coordinator dropped the worker, or the worker gave up on the coordinator),
    /// then restore it; the process goes on.
    CutLink,
}

/// One fault: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `POINT@N`.
    pub at: String,
    /// What happens there.
    pub action: Action,
}

impl Fault {
    /// A fault at the `nth` pass of `point`.
    pub fn new(point: &str, nth: u64, action: Action) -> Fault {
        Fault {
            at: format!("{point}@{nth}"),
            action,
        }
    }

    fn env(&self) -> String {
        match self.action {
            Action::Straggle(ms) => format!("{}:delay={ms}", self.at),
            Action::Term | Action::CutLink => format!("{}:delay=0", self.at),
            Action::Kill | Action::KillCorrupt => self.at.clone(),
        }
    }

    /// Its kind, for the report: `SIGKILL worker.upload` and the like.
    pub fn kind(&self) -> String {
        let point = self.at.split('@').next().unwrap_or_default();
        match self.action {
            Action::Kill => format!("SIGKILL {point}"),
            Action::KillCorrupt => format!("SIGKILL {point} + corrupt checkpoint"),
            Action::Term => format!("SIGTERM {point}"),
            Action::Straggle(ms) => format!("straggler {ms} ms at {point}"),
            Action::CutLink => format!("link cut at {point}"),
        }
    }
}

/// The faults of one run: a sequence per worker and one for the coordinator.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Name of the run (its folder).
    pub name: String,
    /// Faults of each worker, in order; the number of workers is this list's length.
    pub workers: Vec<Vec<Fault>>,
    /// Faults of the coordinator, in order.
    pub coordinator: Vec<Fault>,
}

/// A fault and whether its point was reached (a run can end before).
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// Whether the process reached the point and the action was taken.
    pub reached: bool,
    /// What the harness saw afterwards (a warning, an exit status), when noteworthy.
    pub note: String,
}

/// What a run did and what its audit found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run's name.
    pub name: String,
    /// Its output folder.
    pub out: PathBuf,
    /// Every fault, in order of injection per target.
    pub injected: Vec<Injected>,
    /// Whether the last coordinator process ended the run normally (exit 0, test figures).
    pub completed: bool,
    /// Exit statuses of the workers' last processes.
    pub worker_exits: Vec<Option<i32>>,
    /// The audit of its files (when it completed).
    pub audit: Option<Audit>,
    /// The last coordinator process's output, for diagnosis.
    pub coordinator_output: String,
}

/// The exactly-once audit of a finished run.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    /// Epochs found in the final lineage of commits.
    pub epochs: u64,
    /// Steps committed in the final lineage.
    pub steps: u64,
    /// Training exams missing from some epoch (lower bound when only the digest differs).
    pub lost: u64,
    /// Training exams used more than once in some epoch (lower bound likewise).
    pub duplicated: u64,
    /// Epochs whose steps are not exactly 0..S-1.
    pub broken_epochs: u64,
    /// Commits written in all, repeats after a coordinator restart included.
    pub commit_lines: u64,
    /// Largest time between two consecutive commits, milliseconds.
    pub largest_pause_ms: u64,
    /// Validation loss of the last epoch (history.csv).
    pub final_valid_loss: f64,
}

/// Where a campaign's files go and the configuration every run shares.
pub struct Bench {
    /// Scratch folder.
    pub dir: PathBuf,
    /// The synthetic cohort.
    pub data: PathBuf,
    /// The `[model]`, `[training]` and extra `[cluster]` lines of every run.
    pub settings: String,
    /// Hosts to run on (coordinator on host 0, worker k on host k + 1); `None`: this host.
    pub net: Option<crate::netns::Net>,
    /// More arguments for every worker; `{k}` is replaced by the worker's index.
    pub worker_args: Vec<String>,
}

/// The network and schedule of the fault runs: small enough that a run takes seconds, with
/// several units per step, a checkpoint every three steps, quick failure detection, and 1 KiB
/// chunks (a dozen per gradient), so that a fault can strike while a step is half reduced.
pub const SETTINGS: &str = "[model]\nnet_filter_size = [4, 4]\nnet_seq_lengh = [256, 16]\ndropout_rate = 0.1\n\
     [training]\nepochs = 3\nbatch_size = 16\nlr = 0.003\n\
     [cluster]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nmin_workers = 1\nmicro_batch = 4\n\
     predict_batch = 16\nheartbeat_ms = 100\nworker_timeout_ms = 1500\ncheckpoint_every_steps = 3\n\
     chunk_kib = 1\n";

impl Bench {
    /// A cohort of `patients` patients under `dir`.
    pub fn new(dir: &Path, patients: u32) -> Bench {
        // Absolute, since the configurations' paths are relative to their own folder.
        let dir = &std::path::absolute(dir).expect("an absolute path");
        let data = crate::cluster::synth_cohort(dir, "data", patients, 11, 200);
        Bench {
            dir: dir.to_path_buf(),
            data,
            settings: SETTINGS.to_string(),
            net: None,
            worker_args: Vec::new(),
        }
    }

    fn config(&self, name: &str) -> (PathBuf, PathBuf) {
        let (p, out) = crate::cluster::run_config(&self.dir, name, &self.data, "", &self.settings);
        std::fs::create_dir_all(&out).expect("output folder");
        (p, out)
    }

    /// Runs `plan` to its end and audits it.
    pub fn run(&self, plan: &Plan) -> Outcome {
        let (cfg, out) = self.config(&plan.name);
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs).expect("logs folder");
        let net = self.net.as_ref();
        let first_listen = net.map(|n| format!("{}:0", n.addrs[0]));
        let start_coordinator = |attempt: usize, fault: Option<&Fault>, listen: Option<&str>| {
            let mut c = launcher(net, 0, "coordinator");
            c.arg("--config").arg(&cfg);
            if let Some(f) = fault {
                c.env(FAULT_ENV, f.env());
            }
            if let Some(l) = listen {
                c.env("ECG__CLUSTER__LISTEN", l);
            }
            Proc::spawn(
                "coordinator",
                c,
                logs.join(format!("coordinator.{attempt}.log")),
            )
        };
        let mut injected = Vec::new();
        let mut attempt = 0;
        let mut coordinator_faults = plan.coordinator.iter().peekable();
        let mut coord = start_coordinator(
            0,
            coordinator_faults.peek().copied(),
            first_listen.as_deref(),
        );
        // Faults before it listens (the checkpoint of a fresh run) restart it on a new port.
        let addr = loop {
            let line = coord.wait_for_any_line(&[" listening on ", "fault point "]);
            if line.contains(" listening on ") {
                break crate::cluster::listen_address(&line);
            }
            let Some(f) = coordinator_faults.next() else {
                panic!("a fault line without a fault: {line}")
            };
            injected.push(stop_coordinator(&mut coord, f, &out, net));
            attempt += 1;
            coord = start_coordinator(
                attempt,
                coordinator_faults.peek().copied(),
                first_listen.as_deref(),
            );
        };

        let outcome = std::thread::scope(|scope| {
            let workers: Vec<_> = plan
                .workers
                .iter()
                .enumerate()
                .map(|(k, faults)| {
                    let (addr, logs) = (addr.clone(), logs.clone());
                    let extra: Vec<String> = self
                        .worker_args
                        .iter()
                        .map(|a| a.replace("{k}", &k.to_string()))
                        .collect();
                    scope.spawn(move || run_worker(net, k, faults, &addr, &logs, &extra))
                })
                .collect();
            while let Some(f) = coordinator_faults.next() {
                if coord.wait_for_line_or_end("fault point ").is_none() {
                    injected.push(Injected {
                        fault: f.clone(),
                        reached: false,
                        note: "the run ended first".into(),
                    });
                    break;
                }
                injected.push(stop_coordinator(&mut coord, f, &out, net));
                if matches!(f.action, Action::Straggle(_) | Action::CutLink) {
                    break;
                }
                attempt += 1;
                coord = start_coordinator(attempt, coordinator_faults.peek().copied(), Some(&addr));
                if f.action == Action::KillCorrupt {
                    let l = coord.wait_for_any_line(&["warning:", " listening on "]);
                    if let Some(last) = injected.last_mut() {
                        last.note
                            .push_str(&format!("; restarted with `{}`", l.trim()));
                    }
                }
            }
            let status = coord.wait();
            let output = coord.output();
            let completed = status.success()
                && output.contains("run over")
                && output.contains("test split: MAE");
            let mut worker_exits = Vec::new();
            for w in workers {
                let (ws, exit) = w.join().expect("worker thread");
                injected.extend(ws);
                worker_exits.push(exit);
            }
            (completed, worker_exits, output)
        });
        let (completed, worker_exits, coordinator_output) = outcome;
        let audit = completed.then(|| audit_run(&out));
        Outcome {
            name: plan.name.clone(),
            out,
            injected,
            completed,
            worker_exits,
            audit,
            coordinator_output,
        }
    }
}

/// Takes fault `f`'s action on the coordinator `coord`, which stands at its fault point.
fn stop_coordinator(
    coord: &mut Proc,
    f: &Fault,
    out: &Path,
    net: Option<&crate::netns::Net>,
) -> Injected {
    let mut note = String::new();
    match f.action {
        Action::Kill | Action::KillCorrupt => {
            coord.signal("KILL");
            coord.wait();
            if f.action == Action::KillCorrupt {
                note = corrupt(&out.join(ecg_shared::train::resume::STATE_FILE));
            }
        }
        Action::Term => {
            coord.signal("TERM");
            let status = coord.wait();
            note = format!("exit {}", code(status));
            if !coord.output().contains("stopped by a signal") {
                note.push_str(", no `stopped by a signal` line");
            }
        }
        Action::Straggle(_) => {}
        Action::CutLink => {
            let net = net.expect("link cuts need network namespaces");
            let seen = coord.line_count();
            net.cut(0);
            coord.wait_for_line_after("fell silent", seen);
            net.restore(0);
        }
    }
    Injected {
        fault: f.clone(),
        reached: true,
        note,
    }
}

/// A command running binary `name` on host `host` (this host without namespaces).
fn launcher(net: Option<&crate::netns::Net>, host: usize, name: &str) -> std::process::Command {
    match net {
        Some(n) => n.command(host, &crate::bin(name)),
        None => cmd(name),
    }
}

fn code(s: ExitStatus) -> String {
    s.code()
        .map_or_else(|| "by a signal".to_string(), |c| c.to_string())
}

/// Runs worker `k` through its faults, then a last time to the end of the run; returns the
/// faults and the last process's exit code.
fn run_worker(
    net: Option<&crate::netns::Net>,
    k: usize,
    faults: &[Fault],
    addr: &str,
    logs: &Path,
    extra: &[String],
) -> (Vec<Injected>, Option<i32>) {
    let start = |attempt: usize, fault: Option<&Fault>| {
        let mut c = launcher(net, k + 1, "worker");
        c.args(["--coordinator", addr, "--cpu", "--threads", "1"])
            .args(["--give-up-after", "15"])
            .args(extra);
        if let Some(f) = fault {
            c.env(FAULT_ENV, f.env());
        }
        Proc::spawn(
            &format!("worker {k}"),
            c,
            logs.join(format!("worker{k}.{attempt}.log")),
        )
    };
    let mut injected = Vec::new();
    let mut attempt = 0;
    let mut p = start(0, faults.first());
    for (i, f) in faults.iter().enumerate() {
        if p.wait_for_line_or_end("fault point ").is_none() {
            injected.push(Injected {
                fault: f.clone(),
                reached: false,
                note: "the run ended first".into(),
            });
            break;
        }
        injected.push(Injected {
            fault: f.clone(),
            reached: true,
            note: String::new(),
        });
        if f.action == Action::CutLink {
            let net = net.expect("link cuts need network namespaces");
            let seen = p.line_count();
            net.cut(k + 1);
            p.wait_for_line_after("retrying", seen);
            net.restore(k + 1);
        }
        if matches!(f.action, Action::Straggle(_) | Action::CutLink) {
            break;
        }
        p.signal(if f.action == Action::Term {
            "TERM"
        } else {
            "KILL"
        });
        p.wait();
        attempt += 1;
        p = start(attempt, faults.get(i + 1));
    }
    let status = p.wait();
    (injected, status.code())
}

/// Flips bytes in the middle of `path`; says what it did.
fn corrupt(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(mut bytes) if !bytes.is_empty() => {
            let (mid, len) = (bytes.len() / 2, bytes.len());
            for b in &mut bytes[mid..(mid + 64).min(len)] {
                *b ^= 0x5a;
            }
            std::fs::write(path, bytes).expect("write the damaged checkpoint");
            format!("corrupted {}", path.display())
        }
        _ => format!("no {} to corrupt yet", path.display()),
    }
}

/// Training exam ids of `split.csv`.
pub fn train_ids(out: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(out.join("split.csv")).expect("split.csv");
    text.lines()
        .skip(1)
        .filter(|l| l.ends_with(",train"))
        .map(|l| {
            l.split(',')
                .next()
                .unwrap_or_default()
                .parse()
                .expect("exam id")
        })
        .collect()
}

/// Audits a finished run's files: every epoch of the final lineage of commits against the
/// training split, the largest pause between commits, the last validation loss.
pub fn audit_run(out: &Path) -> Audit {
    let commits = audit::read(out).expect("commits.csv");
    let run_id = commits.last().map(|c| c.run_id.clone()).unwrap_or_default();
    let lineage = audit::final_lineage(&commits, &run_id);
    let ids = train_ids(out);
    let (want_n, want_d) = (ids.len() as u64, audit::digest(ids.iter().copied()));
    let mut by_epoch: BTreeMap<u64, Vec<&audit::Commit>> = BTreeMap::new();
    for c in &lineage {
        by_epoch.entry(c.epoch).or_default().push(c);
    }
    let (mut lost, mut duplicated, mut broken) = (0, 0, 0);
    for steps in by_epoch.values() {
        let contiguous = steps
            .iter()
            .enumerate()
            .all(|(i, c)| c.step_in_epoch == i as u64);
        if !contiguous {
            broken += 1;
        }
        let n: u64 = steps.iter().map(|c| c.exams).sum();
        let d = steps
            .iter()
            .fold(0u64, |d, c| d.wrapping_add(c.exam_digest));
        lost += want_n.saturating_sub(n);
        duplicated += n.saturating_sub(want_n);
        if n == want_n && d != want_d {
            lost += 1;
            duplicated += 1;
        }
    }
    let largest_pause_ms = commits
        .windows(2)
        .map(|w| w[1].unix_ms.saturating_sub(w[0].unix_ms))
        .max()
        .unwrap_or(0);
    let history = std::fs::read_to_string(out.join("history.csv")).expect("history.csv");
    let final_valid_loss = history
        .lines()
        .last()
        .and_then(|l| l.split(',').nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Audit {
        epochs: by_epoch.len() as u64,
        steps: lineage.len() as u64,
        lost,
        duplicated,
        broken_epochs: broken,
        commit_lines: commits.len() as u64,
        largest_pause_ms,
        final_valid_loss,
    }
}

/// The report of a campaign: one line per run, then the faults by kind.
pub fn report(runs: &[Outcome], baseline: &Outcome) -> String {
    let mut s = String::new();
    let b = baseline.audit.as_ref();
    s.push_str(&format!(
        "undisturbed run: completed {}, {} epochs, {} steps, largest pause {} ms, final valid loss {:.6}\n",
        baseline.completed,
        b.map_or(0, |a| a.epochs),
        b.map_or(0, |a| a.steps),
        b.map_or(0, |a| a.largest_pause_ms),
        b.map_or(f64::NAN, |a| a.final_valid_loss),
    ));
    s.push_str("run | faults reached | completed | epochs | lost | duplicated | largest pause ms | final valid loss | vs undisturbed\n");
    let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in runs {
        let reached = r.injected.iter().filter(|i| i.reached).count();
        for i in &r.injected {
            let e = kinds.entry(i.fault.kind()).or_default();
            e.0 += 1;
            e.1 += usize::from(i.reached);
        }
        match &r.audit {
            Some(a) => s.push_str(&format!(
                "{} | {reached}/{} | yes | {} | {} | {} | {} | {:.6} | {:+.6}\n",
                r.name,
                r.injected.len(),
                a.epochs,
                a.lost,
                a.duplicated,
                a.largest_pause_ms,
                a.final_valid_loss,
                a.final_valid_loss - b.map_or(f64::NAN, |b| b.final_valid_loss),
            )),
            None => s.push_str(&format!(
                "{} | {reached}/{} | NO | - | - | - | - | - | -\n",
                r.name,
                r.injected.len()
            )),
        }
    }
    s.push_str("faults by kind (injected / reached):\n");
    for (k, (n, reached)) in kinds {
        s.push_str(&format!("  {k}: {n} / {reached}\n"));
    }
    s
}
