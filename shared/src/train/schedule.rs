//! The learning-rate schedule and stop rule of the seed: PyTorch's `ReduceLROnPlateau` in mode
//! `min` with relative threshold (stepped once per epoch with the validation loss), and the
//! training loop's exit: stop when the rate used in an epoch is below `min_lr`, or after
//! `epochs` epochs.
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `ReduceLROnPlateau`'s settings (mode `min`, threshold mode `rel`); [`Default`] gives the
/// seed's: factor 0.1, patience 7, threshold 1e-4, cooldown 0, min_lr 1e-8, eps 1e-8.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlateauConfig {
    /// Multiplier applied to the rate on a plateau.
    pub factor: f64,
    /// Bad epochs tolerated; the rate is cut on the `patience + 1`-th in a row.
    pub patience: u32,
    /// Relative improvement needed: better means `value < best * (1 - threshold)`.
    pub threshold: f64,
    /// Epochs after a cut during which bad epochs are not counted.
    pub cooldown: u32,
    /// The rate never goes below this.
    pub min_lr: f64,
    /// A cut smaller than this is skipped.
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            factor: 0.1,
            patience: 7,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 1e-8,
            eps: 1e-8,
        }
    }
}

/// The scheduler: settings, the current rate and PyTorch's counters. Serialisable, so that a
/// resumed run continues the same schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    lr: f64,
    best: f64,
    num_bad_epochs: u32,
    cooldown_counter: u32,
    last_epoch: u64,
}

impl ReduceLrOnPlateau {
    /// A scheduler starting at rate `lr`. Refuses a factor outside `[0, 1)`, or a negative or
    /// non-finite rate, threshold, floor or eps.
    pub fn new(config: PlateauConfig, lr: f64) -> Result<Self> {
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        let ok = (0.0..1.0).contains(&config.factor)
            && nonneg(lr)
            && nonneg(config.threshold)
            && nonneg(config.min_lr)
            && nonneg(config.eps);
        if !ok {
            return Err(Error::Config(format!(
                "ReduceLROnPlateau: factor {} must be in [0, 1); lr {lr}, threshold {}, \
                 min_lr {} and eps {} must be finite and >= 0",
                config.factor, config.threshold, config.min_lr, config.eps
            )));
        }
        Ok(Self {
            config,
            lr,
            best: f64::INFINITY,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            last_epoch: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &PlateauConfig {
        &self.config
    }

    /// The current learning rate (to give the optimiser).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The best metric so far (`inf` before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Bad epochs in a row since the last improvement or cut.
    pub fn num_bad_epochs(&self) -> u32 {
        self.num_bad_epochs
    }

    /// Number of [`step`](Self::step) calls so far.
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    fn is_better(&self, value: f64) -> bool {
        value < self.best * (1.0 - self.config.threshold)
    }

    /// One epoch's metric (the validation loss). Returns `true` when the rate was cut. A `NaN`
    /// metric counts as a bad epoch, as in PyTorch.
    pub fn step(&mut self, metric: f64) -> bool {
        self.last_epoch += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.config.patience {
            let cut = self.reduce();
            self.cooldown_counter = self.config.cooldown;
            self.num_bad_epochs = 0;
            return cut;
        }
        false
    }

    fn reduce(&mut self) -> bool {
        let new_lr = (self.lr * self.config.factor).max(self.config.min_lr);
        if self.lr - new_lr > self.config.eps {
            self.lr = new_lr;
            true
        } else {
            false
        }
    }
}

/// The seed's exit from the epoch loop.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopRule {
    /// Stop when the rate used in an epoch is below this (the seed: 1e-7).
    pub min_lr: f64,
    /// Maximum number of epochs (the seed: 70).
    pub epochs: u64,
}

impl Default for StopRule {
    fn default() -> Self {
        Self {
            min_lr: 1e-7,
            epochs: 70,
        }
    }
}

impl StopRule {
    /// Whether epoch `epoch` (0-based) is run at all: `epoch < epochs`.
    pub fn run_epoch(&self, epoch: u64) -> bool {
        epoch < self.epochs
    }

    /// Whether to leave the loop after an epoch trained and validated with rate `lr`. As in the
    /// seed, this is checked after checkpointing and before the epoch is logged or the scheduler
    /// is stepped, so that epoch is not written to the history.
    pub fn stop_after(&self, lr: f64) -> bool {
        lr < self.min_lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_after_patience_plus_one_bad_epochs() {
        let mut s = ReduceLrOnPlateau::new(PlateauConfig::default(), 1e-3).unwrap();
        // Epoch 1 improves on inf; then 8 epochs without a 1e-4 relative improvement: 10 *
        // (1 - 1e-4) = 9.999, so 9.9995 is not better.
        let losses = [10.0, 9.9995, 10.5, 11.0, 10.0, 9.9991, 10.0, 10.0, 10.0];
        let mut cuts = vec![];
        for (e, &l) in losses.iter().enumerate() {
            if s.step(l) {
                cuts.push(e + 1);
            }
        }
        assert_eq!(cuts, vec![9]);
        assert_eq!(s.lr(), 1e-3 * 0.1);
        assert_eq!(s.best(), 10.0);
        assert_eq!(s.num_bad_epochs(), 0);
    }

    #[test]
    fn improvement_resets_the_count() {
        let mut s = ReduceLrOnPlateau::new(PlateauConfig::default(), 1e-3).unwrap();
        // Improvement at epoch 8 (9.99 < 9.999) resets; then 8 bad epochs: cut at epoch 16.
        let mut losses = vec![10.0; 7];
        losses.push(9.99);
        losses.extend([f64::NAN, 12.0, 9.99, 9.99, 9.99, 9.99, 9.99, 9.99, 9.0]);
        let cuts: Vec<usize> = losses
            .iter()
            .enumerate()
            .filter_map(|(e, &l)| s.step(l).then_some(e + 1))
            .collect();
        assert_eq!(cuts, vec![16]);
        // Epoch 17 improved (9.0 < 9.99): the count is 0 again.
        assert_eq!(s.best(), 9.0);
        assert_eq!(s.num_bad_epochs(), 0);
        assert_eq!(s.last_epoch(), 17);
    }

    #[test]
    fn repeated_cuts_reach_the_floor_and_the_stop_rule() {
        let mut s = ReduceLrOnPlateau::new(PlateauConfig::default(), 1e-3).unwrap();
        let stop = StopRule::default();
        // A constant loss: a cut every 8 epochs after the first (epochs 9, 17, 25, ...).
        let mut lrs = vec![];
        let mut stopped_at = None;
        for epoch in 0.. {
            if !stop.run_epoch(epoch) {
                break;
            }
            let lr = s.lr(); // rate used in this epoch
            if stop.stop_after(lr) {
                stopped_at = Some(epoch);
                break;
            }
            lrs.push(lr);
            s.step(5.0);
        }
        let mut expect = vec![1e-3f64];
        for _ in 0..4 {
            expect.push(expect.last().unwrap() * 0.1);
        }
        let mut want = vec![expect[0]; 9];
        for &lr in &expect[1..] {
            want.extend(std::iter::repeat_n(lr, 8));
        }
        assert_eq!(lrs, want);
        // The fifth cut (after epoch index 40) gives 1e-8 (float arithmetic: slightly above),
        // below 1e-7: the 42nd epoch (index 41) is run but not logged.
        assert_eq!(stopped_at, Some(41));
        assert!(s.lr() < 1e-7 && s.lr() >= 1e-8, "{}", s.lr());
        // Further plateaus do not go below the floor; a cut smaller than eps is skipped.
        for _ in 0..40 {
            s.step(5.0);
        }
        assert_eq!(s.lr(), (expect[4] * 0.1).max(1e-8));
    }

    #[test]
    fn floor_and_eps() {
        let c = PlateauConfig {
            patience: 0,
            min_lr: 0.3,
            ..PlateauConfig::default()
        };
        let mut s = ReduceLrOnPlateau::new(c, 1.0).unwrap();
        s.step(1.0);
        assert!(s.step(1.0));
        assert_eq!(s.lr(), 0.3); // clipped to the floor
        assert!(!s.step(1.0));
        assert_eq!(s.lr(), 0.3);
        // A cut of less than eps is skipped.
        let c = PlateauConfig {
            patience: 0,
            eps: 1e-2,
            ..PlateauConfig::default()
        };
        let mut s = ReduceLrOnPlateau::new(c, 0.01).unwrap();
        s.step(1.0);
        assert!(!s.step(1.0));
        assert_eq!(s.lr(), 0.01);
    }

    #[test]
    fn cooldown_suppresses_counting() {
        let c = PlateauConfig {
            patience: 1,
            cooldown: 2,
            ..PlateauConfig::default()
        };
        let mut s = ReduceLrOnPlateau::new(c, 1.0).unwrap();
        let cuts: Vec<usize> = (0..10)
            .filter_map(|e| s.step(1.0).then_some(e + 1))
            .collect();
        // Cut at 3 (2 bad epochs), then 2 cooldown epochs, then 2 bad: cut at 7, then 11.
        assert_eq!(cuts, vec![3, 7]);
    }

    #[test]
    fn state_round_trips() {
        let mut a = ReduceLrOnPlateau::new(PlateauConfig::default(), 1e-3).unwrap();
        for l in [3.0, 2.0, 2.5, 2.5] {
            a.step(l);
        }
        let mut b: ReduceLrOnPlateau =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, b);
        for _ in 0..6 {
            assert_eq!(a.step(2.5), b.step(2.5));
        }
        assert_eq!(b.lr(), 1e-4);
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_bad_settings() {
        let bad = PlateauConfig {
            factor: 1.0,
            ..PlateauConfig::default()
        };
        assert!(ReduceLrOnPlateau::new(bad, 1e-3).is_err());
        assert!(ReduceLrOnPlateau::new(PlateauConfig::default(), f64::NAN).is_err());
    }
}
