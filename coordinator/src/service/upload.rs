//! A gradient upload under way: its place in the step's reduction, and the check of its
//! values.
use crate::core::{Core, StepWork, WorkerId};
use crate::error::Refusal;
use crate::hub::Hub;
use crate::reduce::Piece;

/// The step in progress, when it is step `step`.
fn step_of(core: &mut Core, step: u64) -> Result<&mut StepWork, Refusal> {
    core.step
        .as_mut()
        .filter(|s| s.step == step)
        .ok_or(Refusal::NoStep { got: step })
}

/// An upload under way in the step's [`Reduction`](crate::reduce::Reduction): withdrawn from
/// it when dropped before [`Upload::keep`] (refused, broken off, or its stream dropped), so that
/// nothing reduced with its chunks survives.
pub(super) struct Upload<'a> {
    hub: &'a Hub,
    step: u64,
    key: u32,
    serial: u64,
    worker: WorkerId,
    kept: bool,
}

impl<'a> Upload<'a> {
    /// Starts the upload of `worker` for `units` (checked again, under the same lock, so
    /// that the reduction only ever holds uploads of units their worker holds).
    pub(super) fn begin(
        hub: &'a Hub,
        step: u64,
        worker: WorkerId,
        units: &[u32],
    ) -> Result<Self, Refusal> {
        let mut core = hub.lock();
        core.check_upload(worker, step, units)?;
        let s = step_of(&mut core, step)?;
        let key = units.iter().copied().min().unwrap_or_default();
        let serial = s.reduction.begin(key, worker, units.len());
        Ok(Upload {
            hub,
            step,
            key,
            serial,
            worker,
            kept: false,
        })
    }

    /// Adds the next chunk; refused when misplaced, or when the worker was dropped from the
    /// step meanwhile. True when a chunk is now ready to reduce.
    pub(super) fn push(&self, offset: u64, data: Piece) -> Result<bool, Refusal> {
        let mut core = self.hub.lock();
        core.touch(self.worker)?;
        let s = step_of(&mut core, self.step)?;
        let pushed = s.reduction.push(self.key, self.serial, offset, data);
        self.hub.uploads_moved.notify_waiters();
        match pushed {
            Ok(true) => Ok(s.reduction.job().is_some()),
            Ok(false) => Err(Refusal::NotAssigned {
                step: self.step,
                unit: self.key,
            }),
            Err(e) => Err(Refusal::BadUpload(e)),
        }
    }

    /// Waits while this upload is more than `max_lead` chunks ahead of the slowest upload of
    /// the step still in progress (at most `patience` at a time). Over links that the uploads
    /// share, a worker whose upload runs ahead only delays the others', and every chunk is
    /// reduced, and sent back, only once the slowest upload has it.
    pub(super) async fn pace(&self, max_lead: usize, patience: std::time::Duration) {
        loop {
            let moved = self.hub.uploads_moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            {
                let mut core = self.hub.lock();
                match step_of(&mut core, self.step) {
                    Ok(s) if s.reduction.lead(self.key, self.serial) > max_lead => {}
                    _ => return,
                }
            }
            if tokio::time::timeout(patience, moved).await.is_err() {
                return;
            }
        }
    }

    /// Refused unless every chunk has arrived.
    pub(super) fn check_complete(&self, core: &mut Core) -> Result<(), Refusal> {
        let s = step_of(core, self.step)?;
        let want = s.reduction.n_chunks();
        match s.reduction.received(self.key, self.serial) {
            Some(got) if got == want => Ok(()),
            Some(got) => Err(Refusal::BadUpload(format!(
                "{got} of the gradient's {want} chunks arrived"
            ))),
            None => Err(Refusal::NotAssigned {
                step: self.step,
                unit: self.key,
            }),
        }
    }

    /// The upload was accepted: it stays in the reduction.
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        {
            let mut core = self.hub.lock();
            if let Ok(s) = step_of(&mut core, self.step) {
                s.reduction.withdraw(self.key, self.serial);
            }
        }
        self.hub.bump();
    }
}

/// Index of the first value of `data` (little-endian f32) that is NaN or infinite.
pub(super) fn first_non_finite(data: &[u8]) -> Option<usize> {
    const EXP: u32 = 0x7f80_0000;
    let bad = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & EXP == EXP;
    // Branch-free over blocks (the common case: all finite), then the position.
    let any = data
        .chunks(4096)
        .any(|block| block.chunks_exact(4).fold(false, |acc, b| acc | bad(b)));
    if !any {
        return None;
    }
    data.chunks_exact(4).position(bad)
}
