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
    pub(super) fn next_state(&self, w: WorkerId, version: u64) -> StateStream {
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
                        let mut msgs: Vec<v1::StateChunk> = snap.chunks
                            [sent.min(snap.chunks.len())..]
                            .iter()
                            .map(|(offset, data)| state_chunk(version, n, *offset, data.clone()))
                            .collect();
                        let mut last = state_chunk(version, n, n * 4, Bytes::new());
                        last.bn_running = snap.bn_running.clone();
                        last.bn_batches_tracked = snap.bn_tracked.clone();
                        msgs.push(last);
                        for m in msgs {
                            if tx.send(Ok(m)).await.is_err() {
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
                    if tx
                        .send(Ok(state_chunk(version, n, offset, data)))
                        .await
                        .is_err()
                    {
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

pub(super) fn state_chunk(version: u64, n_params: u64, offset: u64, data: Bytes) -> v1::StateChunk {
    v1::StateChunk {
        version,
        n_params,
        bn_running: Vec::new(),
        bn_batches_tracked: Vec::new(),
        offset,
        data,
    }
}
