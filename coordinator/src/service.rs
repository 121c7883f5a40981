//! The gRPC handlers of `ecg.v1.Coordinator`: each checks the run id and the worker, asks the
//! [`Core`](crate::core::Core) and answers; refusals become the status of their kind (see
//! [`Refusal`]) and are counted in `/metrics`. The token is checked before any handler runs,
//! by [`check_token`].
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecg_proto::v1::{self, coordinator_server::Coordinator, work_assignment::Kind};
use ecg_proto::{BEST_VERSION, PROTOCOL_VERSION};
use ecg_shared::model::batchnorm::BnBatchStats;
use ecg_shared::shm::Segment;
use tonic::{Request, Response, Status, Streaming};

use crate::core::{Contribution, UnitOutcome, WorkerId};
use crate::error::{Refusal, shown};
use crate::hub::Hub;
use crate::reduce::Piece;

mod download;
mod upload;

use download::{ChunkOut, StateStream};
use upload::{Upload, first_non_finite};

/// Longest a NextWork request is held without work.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Chunks an upload whose bytes come in its messages may run ahead of the slowest upload of the
/// step still in progress.
const MAX_LEAD: usize = 2;

/// Longest an upload is held back at a time for running ahead.
const PACE_PATIENCE: Duration = Duration::from_millis(200);

/// Longest host, device or build text a worker may register with, in bytes.
const MAX_LABEL_BYTES: usize = 256;

/// The service.
#[derive(Clone)]
pub struct CoordinatorService {
    hub: Arc<Hub>,
}

impl CoordinatorService {
    /// The service of `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        CoordinatorService { hub }
    }

    fn refuse(&self, r: Refusal) -> Status {
        self.hub.facts.metrics.rejected(r.label());
        tracing::info!("refused: {r}");
        r.into()
    }

    fn check_run(&self, run_id: &str) -> Result<(), Status> {
        if run_id != self.hub.facts.info.run_id {
            return Err(self.refuse(Refusal::WrongRun {
                got: shown(run_id),
                want: self.hub.facts.info.run_id.clone(),
            }));
        }
        Ok(())
    }

    fn check_version(&self, got: u32) -> Result<(), Status> {
        if got != PROTOCOL_VERSION {
            return Err(self.refuse(Refusal::ProtocolVersion {
                got,
                want: PROTOCOL_VERSION,
            }));
        }
        Ok(())
    }

    /// Drops the shared-memory segments of workers that are no longer members.
    fn forget_segments(&self) {
        let members: std::collections::HashSet<WorkerId> =
            self.hub.lock().members.keys().copied().collect();
        self.hub.facts.segments.retain(|w| members.contains(&w));
    }

    /// Checks run and membership, noting the worker alive.
    fn member(&self, run_id: &str, worker: u64) -> Result<WorkerId, Status> {
        self.check_run(run_id)?;
        let w = WorkerId(worker);
        self.hub
            .lock()
            .touch(w)
            .map(|_| w)
            .map_err(|r| self.refuse(r))
    }

    fn unit_outcome(&self, u: v1::UnitResult) -> Result<UnitOutcome, Refusal> {
        let want = &self.hub.facts.bn_channels;
        if u.bn.len() != want.len() {
            return Err(Refusal::BadUpload(format!(
                "unit {}: {} batch-norm statistics for {} layers",
                u.index,
                u.bn.len(),
                want.len()
            )));
        }
        let mut bn = Vec::with_capacity(want.len());
        for (l, (s, &c)) in u.bn.into_iter().zip(want).enumerate() {
            let finite = s.mean.iter().chain(&s.var_unbiased).all(|v| v.is_finite());
            if s.mean.len() != c || s.var_unbiased.len() != c || !finite || s.count == 0 {
                return Err(Refusal::BadUpload(format!(
                    "unit {}: batch-norm layer {l} statistics are not {c} finite values per channel \
                     over a positive count",
                    u.index
                )));
            }
            if let Some(v) = s.var_unbiased.iter().find(|v| **v < 0.0) {
                return Err(Refusal::BadUpload(format!(
                    "unit {}: batch-norm layer {l} has a negative variance {v}",
                    u.index
                )));
            }
            bn.push(BnBatchStats {
                mean: s.mean,
                var_unbiased: s.var_unbiased,
                count: s.count as usize,
            });
        }
        let sane = |v: f64| v.is_finite() && v >= 0.0;
        if !(sane(u.loss_sum) && sane(u.abs_error_sum)) {
            return Err(Refusal::BadUpload(format!(
                "unit {}: loss {} and absolute error {} must be finite and not negative",
                u.index, u.loss_sum, u.abs_error_sum
            )));
        }
        Ok(UnitOutcome {
            index: u.index,
            exams: u.exams,
            loss_sum: u.loss_sum,
            abs_error_sum: u.abs_error_sum,
            bn,
        })
    }

    /// An upload's chunk: its `data`, checked; or the piece of the worker's segment it names,
    /// checked where it lies (checksum and finiteness). Refused when malformed or not finite.
    fn upload_piece(
        &self,
        segment: Option<&Arc<Segment>>,
        msg: v1::GradientUpload,
    ) -> Result<Piece, Refusal> {
        let non_finite = |i: usize, v: f32| {
            let at = msg.offset / 4 + i as u64;
            Err(Refusal::BadUpload(format!("gradient value {at} is {v}")))
        };
        if msg.shared_len == 0 {
            if let Some(i) = first_non_finite(&msg.data) {
                let b = &msg.data[i * 4..i * 4 + 4];
                return non_finite(i, f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            return Ok(Piece::Bytes(msg.data));
        }
        let len = msg.shared_len as usize;
        let bad = |why: String| Err(Refusal::BadUpload(why));
        if !msg.data.is_empty() {
            return bad(format!(
                "the chunk at byte {} has both data and a shared length",
                msg.offset
            ));
        }
        let Some(segment) = segment else {
            return bad("a shared-memory chunk from a worker that was offered no segment".into());
        };
        if len > self.hub.facts.info.chunk_bytes as usize || !len.is_multiple_of(4) {
            return bad(format!(
                "a shared-memory chunk of {len} bytes, above the chunk size of {} or not whole \
                 values",
                self.hub.facts.info.chunk_bytes
            ));
        }
        match segment.check_f32(0, msg.offset, len, msg.shared_sum) {
            Err(e) => return bad(e.to_string()),
            Ok(Some((i, v))) => return non_finite(i, v),
            Ok(None) => {}
        }
        self.hub.facts.metrics.shared_memory("up", len as u64);
        Ok(Piece::Shared {
            segment: Arc::clone(segment),
            offset: msg.offset,
            len,
            sum: msg.shared_sum,
        })
    }

    async fn receive_upload(
        &self,
        mut stream: Streaming<v1::GradientUpload>,
    ) -> Result<u32, Status> {
        let started = Instant::now();
        let mut first = stream
            .message()
            .await?
            .ok_or_else(|| self.refuse(Refusal::BadUpload("an empty upload".into())))?;
        let header = first.header.take().ok_or_else(|| {
            self.refuse(Refusal::BadUpload("the first message has no header".into()))
        })?;
        let w = self.member(&header.run_id, header.worker_id)?;
        let units: Vec<u32> = header.units.iter().map(|u| u.index).collect();
        self.hub
            .lock()
            .check_upload(w, header.step, &units)
            .map_err(|r| self.refuse(r))?;
        let n = self.hub.facts.n_params;
        if header.n_values != n as u64 {
            return Err(self.refuse(Refusal::BadUpload(format!(
                "{} gradient values for {n} parameters",
                header.n_values
            ))));
        }
        let mut outcomes = Vec::with_capacity(header.units.len());
        for u in header.units {
            outcomes.push(self.unit_outcome(u).map_err(|r| self.refuse(r))?);
        }
        let upload =
            Upload::begin(&self.hub, header.step, w, &units).map_err(|r| self.refuse(r))?;
        let segment = self.hub.facts.segments.get(w);
        let has_chunk =
            |m: &v1::GradientUpload| !m.data.is_empty() || m.offset != 0 || m.shared_len != 0;
        let mut next = has_chunk(&first).then_some(first);
        let mut inline = false;
        loop {
            if inline {
                upload.pace(MAX_LEAD, PACE_PATIENCE).await;
            }
            let msg = match next.take() {
                Some(msg) => msg,
                None => match stream.message().await? {
                    None => break,
                    Some(msg) if msg.header.is_some() => {
                        return Err(self.refuse(Refusal::BadUpload("a second header".into())));
                    }
                    Some(msg) => msg,
                },
            };
            let offset = msg.offset;
            inline = !msg.data.is_empty();
            let piece = self
                .upload_piece(segment.as_ref(), msg)
                .map_err(|r| self.refuse(r))?;
            // The driver is woken only when the chunk completes one it can reduce.
            if upload.push(offset, piece).map_err(|r| self.refuse(r))? {
                self.hub.bump();
            }
        }
        let upload_time = started.elapsed();
        let accepted = outcomes.len() as u32;
        let latency = {
            let mut core = self.hub.lock();
            upload
                .check_complete(&mut core)
                .map_err(|r| self.refuse(r))?;
            core.accept(
                header.step,
                Contribution {
                    worker: w,
                    units: outcomes,
                },
            )
            .map_err(|r| self.refuse(r))?
        };
        upload.keep();
        self.hub.bump();
        let m = &self.hub.facts.metrics;
        m.exchange(w.0, upload_time.as_secs_f64(), (n * 4) as u64);
        m.worker_step(w.0, latency.as_secs_f64());
        Ok(accepted)
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn get_run_info(
        &self,
        request: Request<v1::RunInfoRequest>,
    ) -> Result<Response<v1::RunInfo>, Status> {
        self.check_version(request.get_ref().protocol_version)?;
        Ok(Response::new(self.hub.facts.info.clone()))
    }

    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let (local, remote) = (request.local_addr(), request.remote_addr());
        let r = request.into_inner();
        self.check_version(r.protocol_version)?;
        let got = r
            .fingerprint
            .as_ref()
            .map(|f| {
                f.digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        if got != self.hub.facts.fingerprint {
            return Err(self.refuse(Refusal::Fingerprint {
                got: shown(&got),
                want: self.hub.facts.fingerprint.clone(),
            }));
        }
        for (field, value) in [
            ("host", &r.host),
            ("device", &r.device),
            ("build", &r.build),
        ] {
            if value.len() > MAX_LABEL_BYTES || value.chars().any(char::is_control) {
                return Err(self.refuse(Refusal::BadRequest(format!(
                    "{field} `{}` must be at most {MAX_LABEL_BYTES} bytes without control characters",
                    shown(value)
                ))));
            }
        }
        let (id, n) = {
            let mut core = self.hub.lock();
            let id = core.register(r.host.clone(), r.device.clone());
            (id, core.members.len())
        };
        self.forget_segments();
        let shared_memory = self.hub.facts.segments.offer(id, local, remote);
        if shared_memory.is_some()
            && let Some(m) = self.hub.lock().members.get_mut(&id)
        {
            m.needs_bytes = false;
        }
        self.hub.facts.metrics.set_workers(n);
        self.hub.bump();
        tracing::debug!("{id} joined from {} on {} ({})", r.host, r.device, r.build);
        println!(
            "{id} joined from {} on {} ({n} workers){}",
            r.host,
            r.device,
            if shared_memory.is_some() {
                ", offered shared memory"
            } else {
                ""
            }
        );
        let (shared_memory, parameters) = shared_memory.unzip();
        Ok(Response::new(v1::RegisterResponse {
            run_id: self.hub.facts.info.run_id.clone(),
            worker_id: id.0,
            shared_memory,
            parameters,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        self.member(&r.run_id, r.worker_id)?;
        let version = self.hub.lock().version();
        Ok(Response::new(v1::HeartbeatResponse { version }))
    }

    type GetStateStream = StateStream;

    async fn get_state(
        &self,
        request: Request<v1::StateRequest>,
    ) -> Result<Response<Self::GetStateStream>, Status> {
        let r = request.into_inner();
        let w = self.member(&r.run_id, r.worker_id)?;
        let shared = r.shared_memory && self.hub.facts.segments.get(w).is_some();
        if !shared {
            // A worker offered shared memory that cannot use it: from now on the states are
            // made as bytes for it too.
            let mut core = self.hub.lock();
            if let Some(m) = core.members.get_mut(&w).filter(|m| !m.needs_bytes) {
                m.needs_bytes = true;
                drop(core);
                self.hub.facts.segments.retain(|o| o != w);
            }
        }
        let out = ChunkOut {
            shared,
            metrics: Arc::clone(&self.hub.facts.metrics),
        };
        let snap = {
            let core = self.hub.lock();
            let next = core.step.as_ref().is_some_and(|s| s.step + 1 == r.version);
            if next && r.version != BEST_VERSION {
                drop(core);
                return Ok(Response::new(self.next_state(w, r.version, out)));
            }
            if r.version == BEST_VERSION {
                core.best.clone()
            } else if r.version == core.version() {
                Some(core.snapshot.clone())
            } else {
                None
            }
        }
        .ok_or_else(|| self.refuse(Refusal::NoVersion(r.version)))?;
        self.hub.facts.metrics.state_download("published");
        let mut msgs = snap
            .chunks
            .iter()
            .map(|(offset, c)| out.chunk(snap.version, snap.n_params, *offset, c))
            .collect::<Option<Vec<v1::StateChunk>>>()
            .ok_or_else(|| self.refuse(Refusal::NoVersion(snap.version)))?;
        if msgs.is_empty() {
            msgs.push(out.empty(snap.version, snap.n_params));
        }
        msgs[0].bn_running = snap.bn_running.clone();
        msgs[0].bn_batches_tracked = snap.bn_tracked.clone();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            msgs.into_iter().map(Ok),
        ))))
    }

    async fn next_work(
        &self,
        request: Request<v1::WorkRequest>,
    ) -> Result<Response<v1::WorkAssignment>, Status> {
        let r = request.into_inner();
        let w = self.member(&r.run_id, r.worker_id)?;
        let deadline = Instant::now() + Duration::from_millis(u64::from(r.wait_ms)).min(MAX_WAIT);
        loop {
            let mut rx = {
                let mut core = self.hub.lock();
                core.touch(w).map_err(|e| self.refuse(e))?;
                if let Some(a) = core.assign(w, r.have_version) {
                    return Ok(Response::new(a));
                }
                self.hub.subscribe()
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                let version = self.hub.lock().version();
                return Ok(Response::new(v1::WorkAssignment {
                    version,
                    kind: Some(Kind::Wait(v1::WaitWork {})),
                }));
            }
        }
    }

    async fn push_gradients(
        &self,
        request: Request<Streaming<v1::GradientUpload>>,
    ) -> Result<Response<v1::PushAck>, Status> {
        let accepted = self.receive_upload(request.into_inner()).await?;
        Ok(Response::new(v1::PushAck { accepted }))
    }

    async fn report_predictions(
        &self,
        request: Request<v1::Predictions>,
    ) -> Result<Response<v1::PredictionsAck>, Status> {
        let r = request.into_inner();
        let w = self.member(&r.run_id, r.worker_id)?;
        self.hub
            .lock()
            .accept_predictions(w, r.task, &r.exam_ids, r.predicted_age)
            .map_err(|e| self.refuse(e))?;
        self.hub.bump();
        Ok(Response::new(v1::PredictionsAck {}))
    }

    async fn leave(
        &self,
        request: Request<v1::LeaveRequest>,
    ) -> Result<Response<v1::LeaveResponse>, Status> {
        let r = request.into_inner();
        let w = self.member(&r.run_id, r.worker_id)?;
        let (back, n) = {
            let mut core = self.hub.lock();
            let back = core.remove(w);
            (back, core.members.len())
        };
        self.forget_segments();
        let m = &self.hub.facts.metrics;
        m.worker_left(w.0);
        m.set_workers(n);
        self.hub.bump();
        tracing::debug!("{w} left ({back} units or tasks back in the queue)");
        println!("{w} left ({n} workers)");
        Ok(Response::new(v1::LeaveResponse {}))
    }

    async fn status(
        &self,
        _: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let core = self.hub.lock();
        let p = &core.progress;
        Ok(Response::new(v1::StatusResponse {
            run_id: self.hub.facts.info.run_id.clone(),
            phase: core.phase.to_proto() as i32,
            epoch: p.epoch,
            step_in_epoch: p.step_in_epoch,
            steps_in_epoch: p.steps_in_epoch,
            global_step: core.version(),
            lr: p.lr,
            last_train_loss: p.last_train_loss,
            best_valid_loss: p.best_valid_loss,
            workers: core
                .members
                .iter()
                .map(|(id, m)| v1::WorkerStatus {
                    worker_id: id.0,
                    host: m.host.clone(),
                    device: m.device.clone(),
                    steps: m.steps,
                    exams: m.exams,
                    last_seen_ms: m.last_seen.elapsed().as_millis().min(u128::from(u32::MAX))
                        as u32,
                })
                .collect(),
        }))
    }
}

/// The interceptor of every call: with a configured token, the `authorization` metadata must
/// be `Bearer <token>` (compared in constant time).
pub fn check_token(
    token: Option<Arc<str>>,
    metrics: Arc<crate::metrics::Metrics>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(token) = &token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get(ecg_proto::AUTH_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(req)
        } else {
            metrics.rejected(Refusal::Unauthenticated.label());
            let peer = req
                .remote_addr()
                .map_or_else(|| "an unknown peer".to_string(), |a| a.to_string());
            // Never the token given, nor ours.
            tracing::info!("refused a call from {peer}: {}", Refusal::Unauthenticated);
            Err(Refusal::Unauthenticated.into())
        }
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_every_byte_and_the_length() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
