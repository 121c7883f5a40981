//! The epoch plan: the training exams of an epoch in the order of `training.order`, cut into
//! steps of `training.batch_size` exams, each step cut into units of `cluster.micro_batch`
//! exams. A unit is what one worker computes in one forward and backward pass; its dropout
//! masks are seeded by (run seed, epoch, step, unit), so a step's result does not depend on
//! which worker computes which unit, nor on how many workers there are.
use ecg_shared::config::ClusterConfig;
use ecg_shared::data::index::DatasetIndex;
use ecg_shared::train::plan::{epoch_batches, epoch_seed};

/// One unit of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Index of the unit in its step.
    pub index: u32,
    /// Index positions of its exams.
    pub positions: Vec<usize>,
    /// Seed of its dropout masks.
    pub mask_seed: u64,
}

/// The steps of one epoch.
#[derive(Debug, Clone)]
pub struct EpochPlan {
    /// The epoch.
    pub epoch: u64,
    batches: Vec<Vec<usize>>,
    unit_size: usize,
    seed: u64,
}

impl EpochPlan {
    /// The plan of `epoch` over the training exams `train` (index positions).
    pub fn new(cfg: &ClusterConfig, index: &DatasetIndex, train: &[usize], epoch: u64) -> Self {
        let t = &cfg.training;
        EpochPlan {
            epoch,
            batches: epoch_batches(t.order, index, train, t.batch_size, t.seed, epoch),
            unit_size: cfg.cluster.unit_size(t.batch_size).max(1),
            seed: t.seed,
        }
    }

    /// Steps in the epoch.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether the epoch has no step.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The units of step `step` (0-based within the epoch).
    pub fn units(&self, step: usize) -> Vec<Unit> {
        let Some(batch) = self.batches.get(step) else {
            return Vec::new();
        };
        let step_seed = epoch_seed(epoch_seed(self.seed, self.epoch), step as u64);
        batch
            .chunks(self.unit_size)
            .enumerate()
            .map(|(i, c)| Unit {
                index: i as u32,
                positions: c.to_vec(),
                mask_seed: epoch_seed(step_seed, i as u64),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecg_shared::config::EpochOrder;

    #[test]
    fn units_cover_each_step_once_and_do_not_depend_on_the_worker_count() {
        let mut cfg = ClusterConfig::default();
        cfg.training.batch_size = 10;
        cfg.training.order = EpochOrder::Shuffle;
        cfg.cluster.micro_batch = 4;
        let train: Vec<usize> = (0..23).collect();
        let plan = EpochPlan::new(&cfg, &DatasetIndex::default(), &train, 3);
        assert_eq!(plan.len(), 3);
        let mut all = Vec::new();
        for s in 0..plan.len() {
            let units = plan.units(s);
            let sizes: Vec<usize> = units.iter().map(|u| u.positions.len()).collect();
            assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
            assert_eq!(
                units.iter().map(|u| u.index).collect::<Vec<_>>(),
                (0..units.len() as u32).collect::<Vec<_>>()
            );
            all.extend(units.into_iter().flat_map(|u| u.positions));
        }
        all.sort_unstable();
        assert_eq!(all, train);
        // Same plan whatever min_workers is when micro_batch is set; distinct mask seeds.
        cfg.cluster.min_workers = 3;
        let again = EpochPlan::new(&cfg, &DatasetIndex::default(), &train, 3);
        assert_eq!(again.units(1), plan.units(1));
        let seeds: std::collections::BTreeSet<u64> = (0..3)
            .flat_map(|s| plan.units(s))
            .map(|u| u.mask_seed)
            .collect();
        assert_eq!(seeds.len(), 7);
    }
}
