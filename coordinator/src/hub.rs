//! What the gRPC handlers and the driver share: the [`Core`] behind a mutex, the two ways of
//! waking whoever waits on it (a condition variable for the driver's thread, a watch channel
//! for the async handlers), the run's fixed facts and the metrics.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ecg_proto::v1;

use crate::core::Core;
use crate::metrics::Metrics;

/// The run's fixed facts.
pub struct RunFacts {
    /// What GetRunInfo answers.
    pub info: v1::RunInfo,
    /// Hex dataset fingerprint.
    pub fingerprint: String,
    /// The cluster token, when one is configured.
    pub token: Option<String>,
    /// Channels of each batch-norm layer, in model order (to check uploads).
    pub bn_channels: Vec<usize>,
    /// Number of parameters.
    pub n_params: usize,
    /// Workers silent this long are dropped.
    pub worker_timeout: Duration,
    /// `cluster.step_deadline_ms` (zero: automatic, see [`Core::step_deadline`]).
    pub step_deadline: Duration,
    /// `cluster.linger_after_finish`.
    pub linger_after_finish: bool,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Shared-memory segments of the workers on this host.
    pub segments: crate::segments::Segments,
}

/// The shared state of one run.
pub struct Hub {
    core: Mutex<Core>,
    changed: Condvar,
    notify: tokio::sync::watch::Sender<u64>,
    stopping: AtomicBool,
    /// Wakes the uploads held back for being ahead of the others (see
    /// [`crate::reduce::Reduction::lead`]) whenever an upload receives a chunk.
    pub uploads_moved: tokio::sync::Notify,
    /// The run's fixed facts.
    pub facts: RunFacts,
}

impl Hub {
    /// A hub around `core`.
    pub fn new(core: Core, facts: RunFacts) -> Self {
        Hub {
            core: Mutex::new(core),
            changed: Condvar::new(),
            notify: tokio::sync::watch::Sender::new(0),
            stopping: AtomicBool::new(false),
            uploads_moved: tokio::sync::Notify::new(),
            facts,
        }
    }

    /// The core, locked. A panic elsewhere while it was held cannot leave it half changed
    /// (every method completes or refuses before changing anything), so a poisoned lock is
    /// taken over.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the run to stop (SIGTERM): the driver ends or abandons the step under way,
    /// checkpoints and returns.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.bump();
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Wakes everyone waiting for a change.
    pub fn bump(&self) {
        self.notify.send_modify(|v| *v = v.wrapping_add(1));
        self.changed.notify_all();
    }

    /// A receiver that resolves at the next [`Hub::bump`] (take it while holding the lock, then
    /// release the lock and wait, so no change is missed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Blocks the calling thread until `f` returns a value, re-checking it after every change
    /// and at least every `tick`; silent workers are dropped while waiting, and workers past
    /// the step deadline are dropped from the step.
    pub fn wait_for<T>(&self, tick: Duration, mut f: impl FnMut(&mut Core) -> Option<T>) -> T {
        let mut core = self.lock();
        loop {
            if let Some(t) = f(&mut core) {
                return t;
            }
            let dropped = core.drop_silent(self.facts.worker_timeout);
            if !dropped.is_empty() {
                for w in &dropped {
                    tracing::warn!(
                        "{w} fell silent for {:?}: dropped",
                        self.facts.worker_timeout
                    );
                    println!("{w} fell silent: dropped, its work goes back to the queue");
                    self.facts.metrics.worker_left(w.0);
                    self.facts.metrics.fault("silent_worker");
                }
                self.facts.metrics.set_workers(core.members.len());
                self.notify.send_modify(|v| *v = v.wrapping_add(1));
                continue;
            }
            let deadline = core.step_deadline(self.facts.step_deadline, self.facts.worker_timeout);
            let late = deadline.map(|d| core.revoke_late(d)).unwrap_or_default();
            if !late.is_empty() {
                for (w, units) in &late {
                    tracing::warn!(
                        "{w} missed the step deadline ({:?}): dropped from the step, its {units} units go to others",
                        deadline.unwrap_or_default()
                    );
                    println!("{w} missed the step deadline: its {units} units go to others");
                    self.facts.metrics.fault("straggler");
                }
                self.notify.send_modify(|v| *v = v.wrapping_add(1));
                continue;
            }
            core = self
                .changed
                .wait_timeout(core, tick)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}
