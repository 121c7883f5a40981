//! A library of malformed messages sent to a running coordinator by a rogue client over a
//! real socket, to prove that each is refused with the right gRPC status and counted in
//! `/metrics` (`ecg_rejected_total{reason=...}`), and, run beside real training, that none
//! changes the run's parameters or stops the coordinator.
//!
//! [`run_all`] runs every case in turn. Around each, it reads the rejection counter of the
//! case's reason; [`CaseOutcome::counted`] says whether it went up by exactly one. Cases that
//! need work held join the run as a worker (with the right dataset fingerprint) and take it
//! with NextWork: a unit of a training step of two units (the other is a real worker's, which
//! the duplicate case names once it is done), then a prediction task; the rogue leaves when
//! done with each, so what it held goes back to the queue and the run goes on. A case whose
//! work could not be had is reported as not run (status `UNKNOWN`, not counted).
//!
//! The coordinator's run should have a token, a metrics endpoint, steps of two units
//! (`training.batch_size` = 2 x `cluster.micro_batch`), a few steps per epoch, prediction
//! tasks of one or two exams, a worker timeout and step deadline longer than the rogue's
//! turn (some seconds), and at least one real worker.
mod cases;
mod live;
mod rogue;
mod uploads;

pub use live::{LiveRun, TOKEN, live_run};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use ecg_proto::v1::work_assignment::Kind;
use tonic::{Code, Status};

use rogue::{Rogue, Want};

/// How one case went.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    /// The case.
    pub name: &'static str,
    /// The status it must get.
    pub want: tonic::Code,
    /// The status it got (`Ok` if the coordinator accepted the message).
    pub got: tonic::Code,
    /// The coordinator's message, or why the case could not run.
    pub message: String,
    /// Whether the `/metrics` rejection counter of the case's reason went up by one.
    pub counted: bool,
}

impl CaseOutcome {
    /// Whether it got the wanted status and was counted.
    pub fn passed(&self) -> bool {
        self.got == self.want && self.counted
    }
}

/// One case: its name, the status and `/metrics` reason it must get, and what it sends, given
/// the rogue and the work it holds (`C`).
pub(crate) struct Case<C> {
    name: &'static str,
    want: Code,
    label: &'static str,
    run: fn(&Rogue, &C) -> Result<(), Status>,
}

impl<C> Case<C> {
    pub(crate) fn new(
        name: &'static str,
        want: Code,
        label: &'static str,
        run: fn(&Rogue, &C) -> Result<(), Status>,
    ) -> Self {
        Case {
            name,
            want,
            label,
            run,
        }
    }
}

/// Runs cases and collects their outcomes.
struct Runner<'a> {
    metrics_addr: &'a str,
    out: Vec<CaseOutcome>,
}

impl Runner<'_> {
    fn run<C>(&mut self, rogue: &Rogue, ctx: &C, cases: Vec<Case<C>>) {
        for case in cases {
            let before = rejected_counts(self.metrics_addr);
            let result = (case.run)(rogue, ctx);
            let after = rejected_counts(self.metrics_addr);
            let counted = match (&before, &after) {
                (Ok(b), Ok(a)) => {
                    let n = |m: &BTreeMap<String, u64>| m.get(case.label).copied().unwrap_or(0);
                    n(a) == n(b) + 1
                }
                _ => false,
            };
            let (got, message) = match result {
                Ok(()) => (Code::Ok, "accepted".to_string()),
                Err(s) => (s.code(), s.message().to_string()),
            };
            let message = match (before, after) {
                (Err(e), _) | (_, Err(e)) => format!("{message} (metrics: {e})"),
                _ => message,
            };
            self.out.push(CaseOutcome {
                name: case.name,
                want: case.want,
                got,
                message,
                counted,
            });
        }
    }

    fn not_run<C>(&mut self, cases: Vec<Case<C>>, why: &str) {
        for case in cases {
            self.out.push(CaseOutcome {
                name: case.name,
                want: case.want,
                got: Code::Unknown,
                message: format!("not run: {why}"),
                counted: false,
            });
        }
    }
}

/// Runs every case against a running coordinator at `addr` (token `token`, metrics at
/// `metrics_addr`). Blocking, with a runtime of its own: call it from a plain thread, not
/// from within an async runtime.
pub fn run_all(addr: &str, token: &str, metrics_addr: &str) -> Vec<CaseOutcome> {
    let mut runner = Runner {
        metrics_addr,
        out: Vec::new(),
    };
    let rogue = match Rogue::connect(addr, token) {
        Ok(r) => r,
        Err(e) => {
            runner.not_run(cases::cases(), &e);
            runner.not_run(uploads::upload_cases(), &e);
            runner.not_run(uploads::after_leave_cases(), &e);
            runner.not_run(uploads::prediction_cases(), &e);
            return runner.out;
        }
    };
    let probe = rogue.join();
    match &probe {
        Ok(id) => runner.run(&rogue, &cases::Probe { id: *id }, cases::cases()),
        Err(s) => runner.not_run(cases::cases(), &format!("Register: {s:?}")),
    }
    let other = probe.as_ref().copied().unwrap_or(0);

    match rogue.acquire(Want::Train) {
        Ok((id, Kind::Train(t))) => {
            let unit = &t.units[0];
            let held = uploads::Held {
                id,
                other,
                step: t.step,
                unit: unit.index,
                exams: unit.exam_ids.len() as u64,
                theirs: 1 - unit.index.min(1),
            };
            runner.run(&rogue, &held, uploads::upload_cases());
            match rogue.leave(id) {
                Ok(()) => runner.run(&rogue, &held, uploads::after_leave_cases()),
                Err(s) => runner.not_run(uploads::after_leave_cases(), &format!("Leave: {s:?}")),
            }
        }
        Ok((id, _)) => {
            let _ = rogue.leave(id);
            let why = "NextWork gave other work than asked for";
            runner.not_run(uploads::upload_cases(), why);
            runner.not_run(uploads::after_leave_cases(), why);
        }
        Err(e) => {
            runner.not_run(uploads::upload_cases(), &e);
            runner.not_run(uploads::after_leave_cases(), &e);
        }
    }

    match rogue.acquire(Want::Predict) {
        Ok((id, Kind::Predict(p))) => {
            let task = uploads::Task {
                id,
                other,
                task: p.task,
                exam_ids: p.exam_ids,
            };
            runner.run(&rogue, &task, uploads::prediction_cases());
        }
        Ok((id, _)) => {
            let _ = rogue.leave(id);
            let why = "NextWork gave other work than asked for";
            runner.not_run(uploads::prediction_cases(), why);
        }
        Err(e) => runner.not_run(uploads::prediction_cases(), &e),
    }
    rogue.leave_all();
    runner.out
}

/// The outcomes as a text table, one case a line.
pub fn table(outcomes: &[CaseOutcome]) -> String {
    let mut t = format!(
        "{:<32} {:<20} {:<20} {:<7} {}\n",
        "case", "wanted", "got", "counted", "message"
    );
    for o in outcomes {
        let mut message: String = o.message.chars().take(90).collect();
        if message.len() < o.message.len() {
            message.push_str("...");
        }
        t.push_str(&format!(
            "{:<32} {:<20} {:<20} {:<7} {}\n",
            o.name,
            format!("{:?}", o.want),
            format!("{:?}", o.got),
            if o.counted { "yes" } else { "NO" },
            message
        ));
    }
    t
}

/// The refusals counted so far at `metrics_addr`, by reason.
pub fn rejected_counts(metrics_addr: &str) -> Result<BTreeMap<String, u64>, String> {
    let page = http_get(metrics_addr, "/metrics")?;
    let mut counts = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("ecg_rejected_total{reason=\"") else {
            continue;
        };
        let Some((reason, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let n: f64 = value.trim().parse().map_err(|e| format!("`{line}`: {e}"))?;
        counts.insert(reason.to_string(), n as u64);
    }
    Ok(counts)
}

/// The body of `GET path` from `addr` over plain HTTP/1.1.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let err = |e: std::io::Error| format!("GET http://{addr}{path}: {e}");
    let mut s = std::net::TcpStream::connect(addr).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(err)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(err)?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET http://{addr}{path}: {}",
            text.lines().next().unwrap_or("no answer")
        ));
    }
    Ok(text)
}
