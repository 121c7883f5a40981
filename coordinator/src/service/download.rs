//! State downloads: a published version, and the version the step under way makes, streamed
//! as it is reduced.
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ecg_proto::v1;
use tokio::sync::mpsc::Sender;
use tokio_stream::Stream;
use tonic::Status;

use super::{CoordinatorService, MAX_WAIT};
use crate::core::{Core, WorkerId};
use crate::error::Refusal;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::segments::parameter_region;
use crate::snapshot::{ParamChunk, Snapshot};

pub(super) type StateStream = Pin<Box<dyn Stream<Item = Result<v1::StateChunk, Status>> + Send>>;

/// What a download of the next state version finds on a look at the core.
enum NextState {
    /// Chunks reduced since the last look (perhaps none), at their byte offsets.
    Chunks(Vec<(u64, ParamChunk)>),
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
            match stream_next(&hub, w, version, &out, &tx).await {
                Ok(true) => hub.facts.metrics.state_download("during_step"),
                // The worker went away.
                Ok(false) => {}
                Err(status) => {
                    hub.facts.metrics.state_download("abandoned");
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Streams version `version` to `w` through `tx` as [`CoordinatorService::next_state`] says:
/// true once it was sent whole, false when the receiver went away, the status to end with when
/// the download cannot go on.
async fn stream_next(
    hub: &Hub,
    w: WorkerId,
    version: u64,
    out: &ChunkOut,
    tx: &Sender<Result<v1::StateChunk, Status>>,
) -> Result<bool, Status> {
    let n = hub.facts.n_params as u64;
    // A chunk made without the bytes this worker needs ends the download: the worker asks
    // NextWork, which gives it work whose state it can fetch.
    let message = |offset: u64, c: &ParamChunk| {
        out.chunk(version, n, offset, c)
            .ok_or_else(|| Status::from(Refusal::NoVersion(version)))
    };
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
            NextState::End(status) => return Err(status),
            NextState::Committed(snap) => {
                let from = sent.min(snap.chunks.len());
                let mut msgs = snap.chunks[from..]
                    .iter()
                    .map(|(offset, c)| message(*offset, c))
                    .collect::<Result<Vec<_>, Status>>()?;
                let mut last = out.empty(version, n);
                last.bn_running = snap.bn_running.clone();
                last.bn_batches_tracked = snap.bn_tracked.clone();
                msgs.push(last);
                for m in msgs {
                    if tx.send(Ok(m)).await.is_err() {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
        };
        if chunks.is_empty() {
            if tokio::time::timeout(MAX_WAIT, changed.changed())
                .await
                .is_err()
            {
                return Err(Status::aborted(format!(
                    "state version {version}: no progress for {MAX_WAIT:?}; ask NextWork"
                )));
            }
            continue;
        }
        for (offset, c) in chunks {
            let m = message(offset, &c)?;
            sent += 1;
            if tx.send(Ok(m)).await.is_err() {
                return Ok(false);
            }
        }
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

/// How a download's data chunks leave: in their messages, or through the parameter segment
/// when the worker asked for that, was given it, and the chunk is there.
pub(super) struct ChunkOut {
    /// Whether the worker reads the parameter segment.
    pub(super) shared: bool,
    pub(super) metrics: Arc<Metrics>,
}

impl ChunkOut {
    /// The message for chunk `c` at byte `offset` of version `version` (of `n_params`
    /// values): through the parameter segment where it lies there and the worker reads it,
    /// else its bytes; `None` when it has no bytes and the worker needs them.
    pub(super) fn chunk(
        &self,
        version: u64,
        n_params: u64,
        offset: u64,
        c: &ParamChunk,
    ) -> Option<v1::StateChunk> {
        match (c.shared_sum.filter(|_| self.shared), &c.data) {
            (Some(sum), _) => {
                self.metrics.shared_memory("down", c.len as u64);
                let mut m = state_chunk(version, n_params, offset, Bytes::new());
                m.shared_len = c.len as u32;
                m.shared_sum = sum;
                m.shared_region = parameter_region(version) as u32;
                Some(m)
            }
            (None, Some(data)) => Some(state_chunk(version, n_params, offset, data.clone())),
            (None, None) => None,
        }
    }

    /// A message with no parameters (for the batch-norm buffers).
    pub(super) fn empty(&self, version: u64, n_params: u64) -> v1::StateChunk {
        state_chunk(version, n_params, n_params * 4, Bytes::new())
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
        shared_region: 0,
    }
}
