//! The coordinator's shared state, behind one mutex: the members, the step in progress (its
//! units: pending, assigned to a worker, done) and its contributions, the prediction round in
//! progress, and the published state versions. Handlers and the driver change it only through
//! these methods, which keep its rules: a unit is handed to one worker at a time, is done once,
//! and returns to the queue when its worker leaves or falls silent.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecg_proto::v1::{self, work_assignment::Kind};
use ecg_shared::model::batchnorm::BnBatchStats;

use crate::error::Refusal;
use crate::snapshot::Snapshot;

mod work;

pub use work::{PredictRound, StepWork};

/// A worker's id in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {}", self.0)
    }
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for `min_workers`.
    Waiting,
    /// Running optimizer steps.
    Training,
    /// Predicting the validation split.
    Validating,
    /// Predicting the test split with the best state.
    Testing,
    /// Over.
    Finished,
}

impl Phase {
    /// The wire value.
    pub fn to_proto(self) -> v1::RunPhase {
        match self {
            Phase::Waiting => v1::RunPhase::Waiting,
            Phase::Training => v1::RunPhase::Training,
            Phase::Validating => v1::RunPhase::Validating,
            Phase::Testing => v1::RunPhase::Testing,
            Phase::Finished => v1::RunPhase::Finished,
        }
    }
}

/// A registered worker.
#[derive(Debug, Clone)]
pub struct Member {
    /// Host name it gave.
    pub host: String,
    /// Device it computes on.
    pub device: String,
    /// When it was last heard from.
    pub last_seen: Instant,
    /// Contributions accepted from it.
    pub steps: u64,
    /// Exams in those contributions.
    pub exams: u64,
    /// Whether it has been told that the run is over.
    pub told_finished: bool,
    /// Whether it downloads states over gRPC (not from the parameter segment): the versions it
    /// needs must be made as bytes too.
    pub needs_bytes: bool,
}

/// What a worker computed for one unit.
#[derive(Debug, Clone)]
pub struct UnitOutcome {
    /// Unit index.
    pub index: u32,
    /// Exams in it.
    pub exams: u64,
    /// Its loss sum.
    pub loss_sum: f64,
    /// Its summed absolute error.
    pub abs_error_sum: f64,
    /// Its batch-norm statistics, one per layer.
    pub bn: Vec<BnBatchStats>,
}

/// One accepted upload: the results of some units (their summed gradient is in the step's
/// [`Reduction`](crate::reduce::Reduction)).
#[derive(Debug)]
pub struct Contribution {
    /// Who sent it.
    pub worker: WorkerId,
    /// Its units, in index order.
    pub units: Vec<UnitOutcome>,
}

/// Progress figures for status and logs.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Current epoch.
    pub epoch: u64,
    /// Next step of the epoch.
    pub step_in_epoch: u64,
    /// Steps in the epoch.
    pub steps_in_epoch: u64,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Training loss per exam of the last step.
    pub last_train_loss: f64,
    /// Best validation loss so far.
    pub best_valid_loss: f64,
}

/// The shared state.
#[derive(Debug)]
pub struct Core {
    /// Where the run is.
    pub phase: Phase,
    /// The newest state.
    pub snapshot: Arc<Snapshot>,
    /// The generation of its step's reduction (see
    /// [`Reduction::generation`](crate::reduce::Reduction::generation)).
    pub snapshot_generation: u64,
    /// The best state by validation loss, once there is one.
    pub best: Option<Arc<Snapshot>>,
    /// Registered workers.
    pub members: BTreeMap<WorkerId, Member>,
    next_id: u64,
    /// The step in progress.
    pub step: Option<StepWork>,
    /// The prediction round in progress.
    pub predict: Option<PredictRound>,
    /// Why the run ended.
    pub finish_reason: String,
    /// Progress figures.
    pub progress: Progress,
    /// Recent times from assignment to accepted upload (for the automatic step deadline).
    latencies: VecDeque<Duration>,
}

/// How many recent assignment latencies the automatic deadline looks at.
const LATENCY_WINDOW: usize = 32;
/// The automatic deadline is this many times the median latency.
const DEADLINE_FACTOR: u32 = 10;

impl Core {
    /// A run waiting for workers, publishing `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Core {
            phase: Phase::Waiting,
            snapshot,
            snapshot_generation: 0,
            best: None,
            members: BTreeMap::new(),
            next_id: 1,
            step: None,
            predict: None,
            finish_reason: String::new(),
            progress: Progress::default(),
            latencies: VecDeque::new(),
        }
    }

    /// The step deadline: `fixed` when it is not zero, otherwise ten times the median recent
    /// assignment latency, never less than `floor` (and `None` before any latency is known).
    pub fn step_deadline(&self, fixed: Duration, floor: Duration) -> Option<Duration> {
        if !fixed.is_zero() {
            return Some(fixed);
        }
        let mut l: Vec<Duration> = self.latencies.iter().copied().collect();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        Some((l[l.len() / 2] * DEADLINE_FACTOR).max(floor))
    }

    /// Drops from the current step every worker that has held units longer than `deadline`
    /// while another member, not itself dropped from the step, could take them: the units go
    /// back to the queue and the worker gets no more units of this step. Returns the dropped
    /// workers with how many units each held.
    pub fn revoke_late(&mut self, deadline: Duration) -> Vec<(WorkerId, usize)> {
        let Some(s) = &mut self.step else {
            return Vec::new();
        };
        let now = Instant::now();
        let late: BTreeSet<WorkerId> = s
            .assigned
            .values()
            .filter(|(_, at)| now.duration_since(*at) > deadline)
            .map(|(w, _)| *w)
            .collect();
        let mut out = Vec::new();
        for w in late {
            let others = self
                .members
                .keys()
                .any(|m| *m != w && !s.excluded.contains(m));
            if others {
                s.excluded.insert(w);
                out.push((w, s.release(w)));
            }
        }
        out
    }

    /// Admits a worker.
    pub fn register(&mut self, host: String, device: String) -> WorkerId {
        let id = WorkerId(self.next_id);
        self.next_id += 1;
        self.members.insert(
            id,
            Member {
                host,
                device,
                last_seen: Instant::now(),
                steps: 0,
                exams: 0,
                told_finished: false,
                needs_bytes: true,
            },
        );
        id
    }

    /// Notes that `w` is alive; refused when it is not a member.
    pub fn touch(&mut self, w: WorkerId) -> Result<&mut Member, Refusal> {
        let m = self.members.get_mut(&w).ok_or(Refusal::UnknownWorker(w))?;
        m.last_seen = Instant::now();
        Ok(m)
    }

    /// Removes `w`, putting its units and tasks back in the queue; returns how many went back.
    pub fn remove(&mut self, w: WorkerId) -> usize {
        self.members.remove(&w);
        let mut back = 0;
        if let Some(s) = &mut self.step {
            back += s.release(w);
        }
        if let Some(p) = &mut self.predict {
            let held: Vec<usize> = p
                .assigned
                .iter()
                .filter(|(_, o)| **o == w)
                .map(|(&t, _)| t)
                .collect();
            for t in held.into_iter().rev() {
                p.assigned.remove(&t);
                p.pending.push_front(t);
                back += 1;
            }
        }
        back
    }

    /// Removes the members silent for longer than `timeout`; returns them.
    pub fn drop_silent(&mut self, timeout: Duration) -> Vec<WorkerId> {
        let now = Instant::now();
        let silent: Vec<WorkerId> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > timeout)
            .map(|(&w, _)| w)
            .collect();
        for &w in &silent {
            self.remove(w);
        }
        silent
    }

    /// The newest state version.
    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// Whether `w`, holding state version `have`, could not download version `version`: it
    /// downloads over gRPC and the version was made without its bytes (see
    /// [`Member::needs_bytes`]; the steps begun after it joined make them).
    fn cannot_fetch(&self, w: WorkerId, have: u64, version: u64) -> bool {
        let needs_bytes = self.members.get(&w).is_some_and(|m| m.needs_bytes);
        needs_bytes
            && have != version
            && version == self.snapshot.version
            && !self.snapshot.has_bytes()
    }

    /// Work for `w`, which holds state version `have`, or `None` when there is none now (or
    /// none it could do: a gRPC worker and a version made without its bytes). A worker asking
    /// again while it holds units or a task gets the same ones back (its answer may have been
    /// lost).
    pub fn assign(&mut self, w: WorkerId, have: u64) -> Option<v1::WorkAssignment> {
        if self.phase == Phase::Finished {
            if let Some(m) = self.members.get_mut(&w) {
                m.told_finished = true;
            }
            return Some(v1::WorkAssignment {
                version: self.version(),
                kind: Some(Kind::Finished(v1::FinishedWork {
                    reason: self.finish_reason.clone(),
                })),
            });
        }
        if let Some(step) = self.step.as_ref().map(|s| s.step)
            && self.cannot_fetch(w, have, step)
        {
            return None;
        }
        if let Some(s) = &mut self.step {
            let mut held = s.held_by(w);
            let barred =
                s.excluded.contains(&w) && self.members.keys().any(|m| !s.excluded.contains(m));
            if held.is_empty() && !barred {
                let n = s.share.min(s.pending.len());
                let now = Instant::now();
                for _ in 0..n {
                    if let Some(u) = s.pending.pop_front() {
                        s.assigned.insert(u, (w, now));
                        held.push(u);
                    }
                }
                held.sort_unstable();
            }
            if !held.is_empty() {
                return Some(v1::WorkAssignment {
                    version: s.step,
                    kind: Some(Kind::Train(v1::TrainWork {
                        epoch: s.epoch,
                        step: s.step,
                        units: held.iter().map(|&u| s.units[u as usize].clone()).collect(),
                    })),
                });
            }
        }
        if let Some(version) = self.predict.as_ref().map(|p| p.version)
            && self.cannot_fetch(w, have, version)
        {
            return None;
        }
        if let Some(p) = &mut self.predict {
            let held = p.assigned.iter().find(|(_, o)| **o == w).map(|(&t, _)| t);
            let task = held.or_else(|| {
                let t = p.pending.pop_front()?;
                p.assigned.insert(t, w);
                Some(t)
            });
            if let Some(t) = task {
                return Some(v1::WorkAssignment {
                    version: p.version,
                    kind: Some(Kind::Predict(v1::PredictWork {
                        task: t as u64,
                        phase: p.phase as i32,
                        exam_ids: p.tasks[t].clone(),
                    })),
                });
            }
        }
        None
    }

    /// Checks that `w` may upload a contribution to `step` for `units` (before its data is
    /// read, so that a refused upload costs nothing).
    pub fn check_upload(&self, w: WorkerId, step: u64, units: &[u32]) -> Result<(), Refusal> {
        let s = self.step.as_ref().ok_or(Refusal::NoStep { got: step })?;
        if step != s.step {
            return Err(Refusal::StaleStep {
                got: step,
                current: s.step,
            });
        }
        if units.is_empty() {
            return Err(Refusal::BadUpload("a contribution without units".into()));
        }
        let mut seen = BTreeSet::new();
        for &u in units {
            if !seen.insert(u) {
                return Err(Refusal::BadUpload(format!("unit {u} named twice")));
            }
            if s.done.contains(&u) {
                return Err(Refusal::Duplicate { step, unit: u });
            }
            match s.assigned.get(&u) {
                Some((o, _)) if *o == w => {}
                _ => return Err(Refusal::NotAssigned { step, unit: u }),
            }
        }
        Ok(())
    }

    /// Accepts a contribution whose gradient has arrived whole: its units become done.
    pub fn accept(&mut self, step: u64, c: Contribution) -> Result<Duration, Refusal> {
        let units: Vec<u32> = c.units.iter().map(|u| u.index).collect();
        self.check_upload(c.worker, step, &units)?;
        let Some(s) = self.step.as_mut() else {
            return Err(Refusal::NoStep { got: step });
        };
        let mut first_assigned = Instant::now();
        for (u, outcome) in units.iter().zip(&c.units) {
            let want = s.units[*u as usize].exam_ids.len() as u64;
            if outcome.exams != want {
                return Err(Refusal::BadUpload(format!(
                    "unit {u} of step {step} has {want} exams, the upload claims {}",
                    outcome.exams
                )));
            }
        }
        for u in &units {
            if let Some((_, at)) = s.assigned.remove(u) {
                first_assigned = first_assigned.min(at);
            }
            s.done.insert(*u);
        }
        let exams: u64 = c.units.iter().map(|u| u.exams).sum();
        if let Some(m) = self.members.get_mut(&c.worker) {
            m.steps += 1;
            m.exams += exams;
        }
        if let Some(&first) = units.iter().min() {
            s.reduction.accept(first);
        }
        s.contributions.push(c);
        let latency = first_assigned.elapsed();
        if self.latencies.len() == LATENCY_WINDOW {
            self.latencies.pop_front();
        }
        self.latencies.push_back(latency);
        ecg_shared::faults::point("coord.contribution");
        Ok(latency)
    }

    /// Accepts the predictions of task `task` from `w`.
    pub fn accept_predictions(
        &mut self,
        w: WorkerId,
        task: u64,
        exam_ids: &[i64],
        predicted: Vec<f32>,
    ) -> Result<(), Refusal> {
        let p = self.predict.as_mut().ok_or(Refusal::NoTask(task))?;
        let t = usize::try_from(task).map_err(|_| Refusal::NoTask(task))?;
        if p.assigned.get(&t) != Some(&w) {
            return Err(Refusal::NoTask(task));
        }
        if p.tasks[t] != exam_ids || predicted.len() != exam_ids.len() {
            return Err(Refusal::BadUpload(format!(
                "predictions of task {task} do not match its {} exams",
                p.tasks[t].len()
            )));
        }
        if let Some(bad) = predicted.iter().find(|v| !v.is_finite()) {
            return Err(Refusal::BadUpload(format!(
                "task {task}: predicted age {bad} is not finite"
            )));
        }
        p.assigned.remove(&t);
        p.results.insert(t, predicted);
        Ok(())
    }

    /// Whether every live member has been told that the run is over.
    pub fn all_told(&self) -> bool {
        self.members.values().all(|m| m.told_finished)
    }
}

#[cfg(test)]
mod tests;
