//! The work in progress: the step's units and uploads, and a prediction round's tasks.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use ecg_proto::v1;

use super::{Contribution, WorkerId};
use crate::reduce::Reduction;

/// The step in progress.
#[derive(Debug)]
pub struct StepWork {
    /// Its epoch.
    pub epoch: u64,
    /// Global step number; it needs state version `step`.
    pub step: u64,
    /// Its units, ready to send.
    pub units: Vec<v1::WorkUnit>,
    /// Units handed to one worker at a time.
    pub share: usize,
    pub(super) pending: VecDeque<u32>,
    pub(super) assigned: BTreeMap<u32, (WorkerId, Instant)>,
    pub(super) done: BTreeSet<u32>,
    /// Workers dropped from this step for missing its deadline.
    pub(super) excluded: BTreeSet<WorkerId>,
    /// Accepted contributions.
    pub contributions: Vec<Contribution>,
    /// The uploads' gradients and the new parameters reduced from them so far.
    pub reduction: Reduction,
}

impl StepWork {
    /// A step whose units are shared among `workers` workers, over gradients of `n_values`
    /// values that travel in chunks of `chunk_bytes`.
    pub fn new(
        epoch: u64,
        step: u64,
        units: Vec<v1::WorkUnit>,
        workers: usize,
        n_values: usize,
        chunk_bytes: usize,
    ) -> Self {
        let share = units.len().div_ceil(workers.max(1)).max(1);
        StepWork {
            reduction: Reduction::new(n_values, chunk_bytes, units.len()),
            epoch,
            step,
            pending: (0..units.len() as u32).collect(),
            units,
            share,
            assigned: BTreeMap::new(),
            done: BTreeSet::new(),
            excluded: BTreeSet::new(),
            contributions: Vec::new(),
        }
    }

    /// The exam ids of the units that `contributions` delivered, in unit order (what the
    /// step's summed gradient is made of).
    pub fn delivered_exams(&self) -> impl Iterator<Item = i64> + '_ {
        self.contributions
            .iter()
            .flat_map(|c| &c.units)
            .flat_map(|u| self.units[u.index as usize].exam_ids.iter().copied())
    }

    /// Whether every unit is done.
    pub fn complete(&self) -> bool {
        self.done.len() == self.units.len()
    }

    /// Whether units wait for a worker to take them.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether `w` holds units of the step (assigned, not yet delivered).
    pub fn holds(&self, w: WorkerId) -> bool {
        self.assigned.values().any(|(o, _)| *o == w)
    }

    pub(super) fn held_by(&self, w: WorkerId) -> Vec<u32> {
        self.assigned
            .iter()
            .filter(|(_, (o, _))| *o == w)
            .map(|(&u, _)| u)
            .collect()
    }

    /// Refuses the upload whose first unit is `first` after the fact (its data changed after
    /// it was checked): it leaves the reduction and, if it was accepted, its contribution goes
    /// and its units wait for a worker again. Its worker, if there was such an upload.
    pub fn reject(&mut self, first: u32) -> Option<WorkerId> {
        let w = self.reduction.remove(first)?;
        let first_unit = |c: &Contribution| c.units.iter().map(|u| u.index).min();
        if let Some(i) = self
            .contributions
            .iter()
            .position(|c| first_unit(c) == Some(first))
        {
            let c = self.contributions.remove(i);
            for u in c.units.iter().rev() {
                self.done.remove(&u.index);
                self.pending.push_front(u.index);
            }
        }
        Some(w)
    }

    pub(super) fn release(&mut self, w: WorkerId) -> usize {
        self.reduction.withdraw_worker(w);
        let held = self.held_by(w);
        for &u in held.iter().rev() {
            self.assigned.remove(&u);
            self.pending.push_front(u);
        }
        held.len()
    }
}

/// A prediction round (validation or test).
#[derive(Debug)]
pub struct PredictRound {
    /// Which split.
    pub phase: v1::PredictPhase,
    /// State version to predict with.
    pub version: u64,
    /// Exam ids of each task.
    pub tasks: Vec<Vec<i64>>,
    pub(super) pending: VecDeque<usize>,
    pub(super) assigned: BTreeMap<usize, WorkerId>,
    /// Predictions of the finished tasks.
    pub results: BTreeMap<usize, Vec<f32>>,
}

impl PredictRound {
    /// A round over `tasks`.
    pub fn new(phase: v1::PredictPhase, version: u64, tasks: Vec<Vec<i64>>) -> Self {
        PredictRound {
            phase,
            version,
            pending: (0..tasks.len()).collect(),
            tasks,
            assigned: BTreeMap::new(),
            results: BTreeMap::new(),
        }
    }

    /// Whether every task has its predictions.
    pub fn complete(&self) -> bool {
        self.results.len() == self.tasks.len()
    }
}
