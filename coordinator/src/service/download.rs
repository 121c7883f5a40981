//! State downloads: a published version, and the version the step under way makes, streamed
//! as it is reduced.
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ecg_proto::v1;
use tokio_stream::Stream;
use tonic::Status;

use super::{CoordinatorService, MAX_WAIT};
use crate::core::{Core, WorkerId};
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::segments::WorkerSegment;
use crate::snapshot::Snapshot;

pub(super) type StateStream = Pin<Box<dyn Stream<Item = Result<v1::StateChunk, Status>> + Send>>;

/// What a download of the next state version finds on a look at the core.
enum NextState {
    /// Chunks reduced since the last look (perhaps none), at their byte offsets.
    Chunks(Vec<(u64, Bytes)>),
    /// The step committed: its snapshot.
    Committed(Arc<Snapshot>),
    /// The download cannot go on (the worker should ask NextWork).
    End(Status),
}

impl CoordinatorService {
    /// The download of version `version` by `w` while the step that makes it is under way:
    /// its parameters chunk by chunk as they are reduced, then the batch-norm buffers once the
    /// step has committed. It ends ABORTED when reduction starts over (an upload was
    /// withdrawn), when units of the step wait for a worker while `w` holds none (it can take
    /// them), or after `MAX_WAIT` without a new chunk; the worker then asks NextWork.
    pub(super) fn next_state(&self, w: WorkerId, version: u64, out: ChunkOut) -> StateStream {
        let hub = Arc::clone(&self.hub);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent = 0usize;
            let mut generation = None;
            loop {
                let (found, mut changed) = {
                    let core = hub.lock();
                    (
                        look(&core, w, version, sent, &mut generation),
                        hub.subscribe(),
                    )
                };
                let chunks = match found {
                    NextState::Chunks(c) => c,
                    NextState::End(status) => {
                        hub.facts.metrics.state_download("abandoned");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    NextState::Committed(snap) => {
                        let n = snap.n_params;
                        let mut msgs: Vec<Result<v1::StateChunk, Status>> = snap.chunks
                            [sent.min(snap.chunks.len())..]
                            .iter()
                            .map(|(offset, data)| out.chunk(version, n, *offset, data.clone()))
                            .collect();
                        let mut last = state_chunk(version, n, n * 4, Bytes::new());
                        last.bn_running = snap.bn_running.clone();
                        last.bn_batches_tracked = snap.bn_tracked.clone();
                        msgs.push(Ok(last));
                        for m in msgs {
                            let failed = m.is_err();
                            if tx.send(m).await.is_err() || failed {
                                return;
                            }
                        }
                        hub.facts.metrics.state_download("during_step");
                        return;
                    }
                };
                if chunks.is_empty() {
                    let waited = tokio::time::timeout(MAX_WAIT, changed.changed()).await;
                    if waited.is_err() {
                        hub.facts.metrics.state_download("abandoned");
                        let _ = tx
                            .send(Err(Status::aborted(format!(
                                "state version {version}: no progress for {MAX_WAIT:?}; ask NextWork"
                            ))))
                            .await;
                        return;
                    }
                    continue;
                }
                let n = hub.facts.n_params as u64;
                for (offset, data) in chunks {
                    sent += 1;
                    let msg = out.chunk(version, n, offset, data);
                    let failed = msg.is_err();
                    if tx.send(msg).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// One look at the core for a download of `version` by `w` that has sent `sent` chunks
/// reduced in `generation` (noted at the first look).
fn look(
    core: &Core,
    w: WorkerId,
    version: u64,
    sent: usize,
    generation: &mut Option<u64>,
) -> NextState {
    let restarted = || {
        NextState::End(Status::aborted(format!(
            "state version {version}: the reduction started over; ask NextWork"
        )))
    };
    if core.version() == version {
        if generation.is_some_and(|g| g != core.snapshot_generation) {
            return restarted();
        }
        return NextState::Committed(Arc::clone(&core.snapshot));
    }
    let Some(s) = core.step.as_ref().filter(|s| s.step + 1 == version) else {
        if core.step.is_none() && core.version() + 1 == version && generation.is_some() {
            // Taken by the driver, being committed: the version is published next.
            return NextState::Chunks(Vec::new());
        }
        return NextState::End(Refusal::NoVersion(version).into());
    };
    if s.has_pending() && !s.holds(w) {
        return NextState::End(Status::aborted(format!(
            "step {}: units wait for a worker; ask NextWork",
            s.step
        )));
    }
    let g = s.reduction.generation();
    if *generation.get_or_insert(g) != g {
        return restarted();
    }
    NextState::Chunks(
        s.reduction
            .reduced_from(sent)
            .iter()
            .enumerate()
            .map(|(i, c)| (s.reduction.offset(sent + i), c.clone()))
            .collect(),
    )
}

/// How a download's data chunks leave: in their messages, or through the worker's
/// shared-memory segment when it asked for that and has one.
pub(super) struct ChunkOut {
    /// The worker's segment and the download's number (see [`WorkerSegment`]).
    pub(super) segment: Option<(Arc<WorkerSegment>, u64)>,
    pub(super) metrics: Arc<Metrics>,
}

impl ChunkOut {
    /// The message for `data` at byte `offset` of version `version` (of `n_params` values).
    pub(super) fn chunk(
        &self,
        version: u64,
        n_params: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<v1::StateChunk, Status> {
        let Some((seg, download)) = self.segment.as_ref().filter(|_| !data.is_empty()) else {
            return Ok(state_chunk(version, n_params, offset, data));
        };
        let sum = seg
            .write_download(*download, offset, &data)
            .ok_or_else(|| Status::aborted("a newer state download of this worker began"))?
            .map_err(|e| Status::internal(e.to_string()))?;
        self.metrics.shared_memory("down", data.len() as u64);
        let mut c = state_chunk(version, n_params, offset, Bytes::new());
        c.shared_len = data.len() as u32;
        c.shared_sum = sum;
        Ok(c)
    }
}

fn state_chunk(version: u64, n_params: u64, offset: u64, data: Bytes) -> v1::StateChunk {
    v1::StateChunk {
        version,
        n_params,
        bn_running: Vec::new(),
        bn_batches_tracked: Vec::new(),
        offset,
        data,
        shared_len: 0,
        shared_sum: 0,
    }
}
