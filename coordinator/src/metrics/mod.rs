//! The coordinator's Prometheus metrics: a [`Metrics`] registry that the training loop and the
//! gRPC service feed (committed steps, gradient uploads, per-worker step latency, membership,
//! epoch, learning rate, validation, refused requests), rendered by hand in the text exposition
//! format 0.0.4, and [`serve_metrics`], the HTTP endpoint that serves it at `GET /metrics`.
//!
//! Every series name starts with `ecg_`. Only numbers, worker ids and fixed reason words are
//! exposed: no tokens, paths or addresses. Gauges whose value is not known yet (no step, no
//! validation) are left out of the document rather than shown as a misleading zero; counters
//! and histograms are always present.
//!
//! Throughput has two gauges: `ecg_exams_per_second` is the last committed step's exams over
//! its wall time; `ecg_exams_per_second_smoothed` is an exponentially weighted average with
//! weight [`SMOOTHING`] on the newest step, taken separately over exams and over seconds and
//! then divided, so that a short step (an epoch's last, partial batch) counts for its
//! duration rather than as one full vote.

mod server;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use server::{CONTENT_TYPE, serve_metrics};
use text::{Histogram, Kind, Writer, format_value};

/// Weight of the newest step in `ecg_exams_per_second_smoothed` (about the last ten steps).
pub const SMOOTHING: f64 = 0.1;

/// Bucket bounds (seconds) of `ecg_step_seconds`: one global step, every worker included.
const STEP_BOUNDS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
];
/// Bucket bounds (seconds) of `ecg_reduce_seconds`: averaging the gradients and the Adam step.
const REDUCE_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Bucket bounds (seconds) of `ecg_exchange_seconds`: receiving one worker's gradient.
const EXCHANGE_BOUNDS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Latency record of one worker's steps.
#[derive(Debug, Clone, Copy, Default)]
struct WorkerStep {
    last: f64,
    sum: f64,
    count: u64,
}

/// Exponentially weighted averages of a step's exams and seconds.
#[derive(Debug, Clone, Copy)]
struct Smoothed {
    exams: f64,
    seconds: f64,
}

/// Everything the registry holds, behind one lock.
#[derive(Debug)]
struct State {
    steps: u64,
    exams: u64,
    global_step: Option<u64>,
    rate_last: Option<f64>,
    rate_smoothed: Option<Smoothed>,
    train_loss: Option<f64>,
    step_seconds: Histogram,
    reduce_seconds: Histogram,
    exchange_seconds: Histogram,
    exchange_bytes: u64,
    worker_steps: BTreeMap<u64, WorkerStep>,
    workers: usize,
    epoch: Option<u64>,
    learning_rate: Option<f64>,
    /// (epoch, loss, MAE) of the latest validation.
    validation: Option<(u64, f64, f64)>,
    rejected: BTreeMap<&'static str, u64>,
    faults: BTreeMap<&'static str, u64>,
    downloads: BTreeMap<&'static str, u64>,
    shared_memory_bytes: BTreeMap<&'static str, u64>,
}

/// The coordinator's metrics registry; cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    /// An empty registry, shared between the services that feed it and the endpoint.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            state: Mutex::new(State {
                steps: 0,
                exams: 0,
                global_step: None,
                rate_last: None,
                rate_smoothed: None,
                train_loss: None,
                step_seconds: Histogram::new(&STEP_BOUNDS),
                reduce_seconds: Histogram::new(&REDUCE_BOUNDS),
                exchange_seconds: Histogram::new(&EXCHANGE_BOUNDS),
                exchange_bytes: 0,
                worker_steps: BTreeMap::new(),
                workers: 0,
                epoch: None,
                learning_rate: None,
                validation: None,
                rejected: BTreeMap::new(),
                faults: BTreeMap::new(),
                downloads: BTreeMap::new(),
                shared_memory_bytes: BTreeMap::new(),
            }),
        })
    }

    /// The state; a panic elsewhere while holding the lock leaves plain numbers behind, which
    /// are still worth reporting, so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One global step was committed: `exams` exams took part, their summed loss divided by
    /// `exams` is `loss_per_exam`, the step took `step_seconds` of wall time (assignment to
    /// commit) of which `reduce_seconds` were spent reducing and applying the update.
    pub fn step_committed(
        &self,
        global_step: u64,
        exams: u64,
        loss_per_exam: f64,
        step_seconds: f64,
        reduce_seconds: f64,
    ) {
        let mut s = self.lock();
        s.steps += 1;
        s.exams += exams;
        s.global_step = Some(global_step);
        s.train_loss = Some(loss_per_exam);
        s.step_seconds.observe(step_seconds);
        s.reduce_seconds.observe(reduce_seconds);
        if step_seconds.is_finite() && step_seconds > 0.0 {
            let exams = exams as f64;
            s.rate_last = Some(exams / step_seconds);
            s.rate_smoothed = Some(match s.rate_smoothed {
                None => Smoothed {
                    exams,
                    seconds: step_seconds,
                },
                Some(p) => Smoothed {
                    exams: SMOOTHING * exams + (1.0 - SMOOTHING) * p.exams,
                    seconds: SMOOTHING * step_seconds + (1.0 - SMOOTHING) * p.seconds,
                },
            });
        }
    }

    /// One gradient upload of `bytes` bytes from `worker` was received in `upload_seconds`.
    pub fn exchange(&self, worker: u64, upload_seconds: f64, bytes: u64) {
        tracing::trace!(worker, upload_seconds, bytes, "gradient upload");
        let mut s = self.lock();
        s.exchange_seconds.observe(upload_seconds);
        s.exchange_bytes += bytes;
    }

    /// `worker` delivered its contribution `seconds` after it was given its assignment.
    /// Non-finite values are ignored.
    pub fn worker_step(&self, worker: u64, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let mut s = self.lock();
        let w = s.worker_steps.entry(worker).or_default();
        w.last = seconds;
        w.sum += seconds;
        w.count += 1;
    }

    /// `n` workers are members now.
    pub fn set_workers(&self, n: usize) {
        self.lock().workers = n;
    }

    /// `worker` left: its per-worker series disappear from the document.
    pub fn worker_left(&self, worker: u64) {
        self.lock().worker_steps.remove(&worker);
    }

    /// Training is in `epoch` with learning rate `lr`.
    pub fn epoch_state(&self, epoch: u64, lr: f64) {
        let mut s = self.lock();
        s.epoch = Some(epoch);
        s.learning_rate = Some(lr);
    }

    /// The validation after `epoch` gave mean loss `valid_loss` and mean absolute error `mae`.
    pub fn validation(&self, epoch: u64, valid_loss: f64, mae: f64) {
        self.lock().validation = Some((epoch, valid_loss, mae));
    }

    /// A request was refused for `reason` (a fixed word such as `"bad_token"`).
    pub fn rejected(&self, reason: &'static str) {
        *self.lock().rejected.entry(reason).or_insert(0) += 1;
    }

    /// A fault the run went through: `kind` is a fixed word (`silent_worker`, `straggler`,
    /// `aborted_step`).
    pub fn fault(&self, kind: &'static str) {
        *self.lock().faults.entry(kind).or_insert(0) += 1;
    }

    /// A state download ended: `kind` is `during_step` (streamed while its step was reduced,
    /// and complete), `abandoned` (such a download ended early; the worker asks NextWork) or
    /// `published` (a committed version).
    pub fn state_download(&self, kind: &'static str) {
        *self.lock().downloads.entry(kind).or_insert(0) += 1;
    }

    /// State downloads of `kind` so far (see [`Metrics::state_download`]).
    pub fn state_downloads(&self, kind: &str) -> u64 {
        self.lock().downloads.get(kind).copied().unwrap_or(0)
    }

    /// `bytes` of chunks passed through shared memory in `direction` (`up`: gradients, `down`:
    /// parameters).
    pub fn shared_memory(&self, direction: &'static str, bytes: u64) {
        *self
            .lock()
            .shared_memory_bytes
            .entry(direction)
            .or_insert(0) += bytes;
    }

    /// Bytes passed through shared memory in `direction` so far.
    pub fn shared_memory_bytes(&self, direction: &str) -> u64 {
        self.lock()
            .shared_memory_bytes
            .get(direction)
            .copied()
            .unwrap_or(0)
    }

    /// The exposition document, text format 0.0.4.
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut w = Writer::default();
        let count = |n: u64| n.to_string();

        w.single(
            "ecg_steps_total",
            Kind::Counter,
            "Global steps committed.",
            &count(s.steps),
        );
        w.single(
            "ecg_exams_total",
            Kind::Counter,
            "Training exams in committed steps.",
            &count(s.exams),
        );
        if let Some(step) = s.global_step {
            w.single(
                "ecg_global_step",
                Kind::Gauge,
                "Last committed global step.",
                &count(step),
            );
        }
        if let Some(rate) = s.rate_last {
            let help = "Exams of the last committed step over its wall time.";
            w.single(
                "ecg_exams_per_second",
                Kind::Gauge,
                help,
                &format_value(rate),
            );
        }
        if let Some(sm) = s.rate_smoothed {
            let help =
                "Exams per second, exponentially smoothed over steps (weight 0.1 on the newest).";
            w.single(
                "ecg_exams_per_second_smoothed",
                Kind::Gauge,
                help,
                &format_value(sm.exams / sm.seconds),
            );
        }
        if let Some(loss) = s.train_loss {
            let help = "Training loss per exam of the last committed step.";
            w.single("ecg_train_loss", Kind::Gauge, help, &format_value(loss));
        }
        s.step_seconds.render(
            &mut w,
            "ecg_step_seconds",
            "Wall time of a global step, assignment to commit.",
        );
        s.reduce_seconds.render(
            &mut w,
            "ecg_reduce_seconds",
            "Time reducing gradients and applying the update.",
        );
        s.exchange_seconds.render(
            &mut w,
            "ecg_exchange_seconds",
            "Time receiving one worker's gradient upload.",
        );
        w.single(
            "ecg_exchange_bytes_total",
            Kind::Counter,
            "Gradient upload bytes received.",
            &count(s.exchange_bytes),
        );
        if !s.worker_steps.is_empty() {
            render_worker_steps(&mut w, &s.worker_steps);
        }
        w.single(
            "ecg_workers",
            Kind::Gauge,
            "Workers currently members.",
            &count(s.workers as u64),
        );
        if let Some(epoch) = s.epoch {
            w.single(
                "ecg_epoch",
                Kind::Gauge,
                "Current training epoch.",
                &count(epoch),
            );
        }
        if let Some(lr) = s.learning_rate {
            w.single(
                "ecg_learning_rate",
                Kind::Gauge,
                "Current learning rate.",
                &format_value(lr),
            );
        }
        if let Some((epoch, loss, mae)) = s.validation {
            w.single(
                "ecg_valid_epoch",
                Kind::Gauge,
                "Epoch of the latest validation.",
                &count(epoch),
            );
            w.single(
                "ecg_valid_loss",
                Kind::Gauge,
                "Validation loss per exam, latest validation.",
                &format_value(loss),
            );
            w.single(
                "ecg_valid_mae",
                Kind::Gauge,
                "Validation mean absolute error in years, latest validation.",
                &format_value(mae),
            );
        }
        let by_label: [(&str, &str, &str, &BTreeMap<&'static str, u64>); 4] = [
            (
                "ecg_rejected_total",
                "Requests refused, by reason.",
                "reason",
                &s.rejected,
            ),
            (
                "ecg_faults_total",
                "Faults the run went through, by kind.",
                "kind",
                &s.faults,
            ),
            (
                "ecg_state_downloads_total",
                "State downloads, by kind: during_step (streamed while the step was reduced), \
                 abandoned (such a download ended early), published (a committed version).",
                "kind",
                &s.downloads,
            ),
            (
                "ecg_shared_memory_bytes_total",
                "Bytes of chunks passed through shared memory by workers on the coordinator's \
                 host, by direction: up (gradients), down (parameters).",
                "direction",
                &s.shared_memory_bytes,
            ),
        ];
        for (name, help, label, counts) in by_label {
            if counts.is_empty() {
                continue;
            }
            w.header(name, Kind::Counter, help);
            for (value, n) in counts {
                w.sample(name, &[(label, value)], &count(*n));
            }
        }
        w.finish()
    }
}

/// `ecg_worker_step_seconds{worker}` (last value) and its `_sum` and `_count` counters.
fn render_worker_steps(w: &mut Writer, steps: &BTreeMap<u64, WorkerStep>) {
    let families: [(&str, Kind, &str); 3] = [
        (
            "ecg_worker_step_seconds",
            Kind::Gauge,
            "Last step latency of a worker, assignment to contribution.",
        ),
        (
            "ecg_worker_step_seconds_sum",
            Kind::Counter,
            "Summed step latency of a worker.",
        ),
        (
            "ecg_worker_step_seconds_count",
            Kind::Counter,
            "Steps a worker contributed to.",
        ),
    ];
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        w.header(name, kind, help);
        for (worker, rec) in steps {
            let value = match i {
                0 => format_value(rec.last),
                1 => format_value(rec.sum),
                _ => rec.count.to_string(),
            };
            w.sample(name, &[("worker", &worker.to_string())], &value);
        }
    }
}
