//! The arithmetic of one chunk of a step's reduction: the sum of the uploads' pieces (in unit
//! order, so that it does not depend on who computed what), its check, and Adam, block by block
//! while each block is in the core's cache. The chunks of a step are disjoint, so several are
//! reduced at once, each on its own thread (see `Trainer::reduce_chunks`).
use ecg_shared::shm::Checksum;
use ecg_shared::train::ParamLayout;
use ecg_shared::train::adam::{Adam, NextStep};
use ecg_shared::wire::{add_le_f32, copy_le_f32, f32_bytes};

use super::{Job, Piece};
use crate::Result;
use crate::snapshot::ParamChunk;

/// Values per block of the reduction (16 KiB of gradient on the stack).
const REDUCE_BLOCK: usize = 4096;

/// What reducing one chunk came to.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// The new parameters of the chunk.
    Reduced(ParamChunk),
    /// The piece of the upload whose first unit is `key` in shared memory changed after it was
    /// checked (its worker wrote to its upload region again), into a value that is not finite:
    /// that upload cannot be used.
    Rewritten {
        /// The upload's first unit.
        key: u32,
        /// What was found.
        why: String,
    },
}

/// The outputs of one chunk's reduction: its new parameters and Adam moments.
pub struct Outputs<'a>(pub &'a mut [f32], pub &'a mut [f32], pub &'a mut [f32]);

/// What every chunk of a step's reduction reads.
pub struct ChunkReducer<'a> {
    /// The optimizer (its moments before the step).
    pub adam: &'a Adam,
    /// Adam's scalars for this step.
    pub k: &'a NextStep,
    /// The parameters before the step.
    pub params: &'a [f32],
    /// Their names, for errors.
    pub layout: &'a ParamLayout,
    /// The step's number, for errors.
    pub step: u64,
    /// Whether to make the chunks' bytes.
    pub bytes: bool,
    /// Whether to take the chunks' checksums.
    pub sums: bool,
}

impl ChunkReducer<'_> {
    /// Reduces one chunk into `out`.
    pub fn reduce(&self, job: &Job, out: Outputs<'_>) -> Result<ChunkOutcome> {
        let Outputs(out_p, out_m, out_v) = out;
        let (at, len) = (job.at, out_p.len());
        // Block by block, each small enough to stay in the core's cache: the sum of the pieces
        // in upload order (those in shared memory read from there, after their check), its
        // check, Adam (writing where the next version is kept: in the parameter segment, the
        // workers on this host read it there), and the checksum of the new values, one pass
        // over memory.
        let mut grad = [0f32; REDUCE_BLOCK];
        let mut scratch = [0f32; REDUCE_BLOCK];
        let mut out_sum = Checksum::new();
        for from in (0..len).step_by(REDUCE_BLOCK) {
            let to = (from + REDUCE_BLOCK).min(len);
            let grad = &mut grad[..to - from];
            for (i, (_, piece)) in job.parts.iter().enumerate() {
                let bytes = from * 4..to * 4;
                match piece {
                    Piece::Bytes(b) if i == 0 => copy_le_f32(grad, &b[bytes]),
                    Piece::Bytes(b) => add_le_f32(grad, &b[bytes]),
                    Piece::Shared {
                        segment, offset, ..
                    } => {
                        let offset = offset + bytes.start as u64;
                        if i == 0 {
                            segment.copy_f32(0, offset, grad)?;
                        } else {
                            let part = &mut scratch[..grad.len()];
                            segment.copy_f32(0, offset, part)?;
                            for (g, v) in grad.iter_mut().zip(part.iter()) {
                                *g += *v;
                            }
                        }
                    }
                }
            }
            // Branch-free over the block (the common case: all finite), then the position.
            if grad.iter().fold(false, |bad, v| bad | !v.is_finite())
                && let Some(i) = grad.iter().position(|v| !v.is_finite())
            {
                return self.non_finite(job, from + i, grad[i]);
            }
            let piece = from..to;
            self.adam.step_piece(
                self.k,
                at + from,
                &self.params[at + from..at + to],
                grad,
                &mut out_p[piece.clone()],
                &mut out_m[piece.clone()],
                &mut out_v[piece.clone()],
            )?;
            if self.sums {
                // While the block is in the core's cache.
                out_sum.update_f32(&out_p[piece]);
            }
        }
        Ok(ChunkOutcome::Reduced(ParamChunk {
            len: len * 4,
            data: self.bytes.then(|| f32_bytes(out_p.to_vec())),
            shared_sum: self.sums.then(|| out_sum.finish()),
        }))
    }

    /// The outcome of a sum that is not finite at value `i` of the chunk: every piece was
    /// finite when it arrived, so one that is not now was rewritten by its worker (its upload
    /// is refused); otherwise the sum overflowed, which stops the run.
    fn non_finite(&self, job: &Job, i: usize, value: f32) -> Result<ChunkOutcome> {
        for (key, piece) in &job.parts {
            if let Piece::Shared {
                segment, offset, ..
            } = piece
            {
                let mut v = [0f32];
                segment.copy_f32(0, offset + (i * 4) as u64, &mut v)?;
                if !v[0].is_finite() {
                    return Ok(ChunkOutcome::Rewritten {
                        key: *key,
                        why: format!(
                            "gradient value {} became {} after it was checked",
                            job.at + i,
                            v[0]
                        ),
                    });
                }
            }
        }
        let flat = job.at + i;
        let name = self.layout.entry_at(flat).map_or(String::new(), |e| {
            format!(" ({}[{}])", e.name, flat - e.offset)
        });
        Err(ecg_shared::Error::Training(format!(
            "step {}: summed gradient: value {value} at flat index {flat}{name} is not finite",
            self.step
        ))
        .into())
    }
}

#[cfg(test)]
mod tests;
