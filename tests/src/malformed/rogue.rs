//! The rogue client: a plain tonic client of the coordinator over a real socket that sets the
//! `authorization` metadata by hand (so that it can also send none, or a wrong one), joins the
//! run as a worker when a case needs one, takes work with NextWork and builds uploads that are
//! valid in every respect but the one a case breaks. It computes nothing: the gradient it
//! sends is zeros, and no case expects it to be accepted.
use std::cell::RefCell;
use std::time::{Duration, Instant};

use ecg_proto::v1::coordinator_client::CoordinatorClient;
use ecg_proto::v1::{self, work_assignment::Kind};
use ecg_proto::{AUTH_METADATA, CHUNK_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// How long the rogue waits for the work it needs (a training unit, a prediction task).
const ACQUIRE_BOUND: Duration = Duration::from_secs(180);

/// The kind of work a group of cases needs to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// One unit of a training step of two units (whose other unit a real worker computes).
    Train,
    /// A prediction task.
    Predict,
}

/// The rogue and what it learnt of the run.
pub(crate) struct Rogue {
    rt: tokio::runtime::Runtime,
    client: CoordinatorClient<Channel>,
    token: String,
    /// The run's identity and settings.
    pub info: v1::RunInfo,
    /// Number of parameters (gradient values).
    pub n_params: usize,
    /// Channels of each batch-norm layer, in model order.
    pub bn_channels: Vec<usize>,
    joined: RefCell<Vec<u64>>,
}

impl Rogue {
    /// Connects to `addr` and reads the run's settings with the right token.
    pub fn connect(addr: &str, token: &str) -> Result<Rogue, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let channel = rt.block_on(async {
            Endpoint::from_shared(url.clone())
                .map_err(|e| format!("{url}: {e}"))?
                .connect_timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| format!("{url}: {e}"))
        })?;
        // No encoding limit of our own: the oversized cases must reach the coordinator.
        let client = CoordinatorClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(usize::MAX);
        let mut rogue = Rogue {
            rt,
            client,
            token: token.to_string(),
            info: v1::RunInfo::default(),
            n_params: 0,
            bn_channels: Vec::new(),
            joined: RefCell::new(Vec::new()),
        };
        let info = rogue
            .run_info(PROTOCOL_VERSION, Some(&rogue.bearer()))
            .map_err(|s| format!("GetRunInfo: {s}"))?;
        let config: ecg_shared::model::ModelConfig = serde_json::from_str(&info.model_json)
            .map_err(|e| format!("the run's architecture: {e}"))?;
        let model = ecg_shared::model::ResNet1d::new(&config, 0, &ecg_shared::model::Device::Cpu)
            .map_err(|e| format!("the run's architecture: {e}"))?;
        rogue.n_params = model.layout().total_len();
        rogue.bn_channels = model.batch_norms().iter().map(|b| b.channels()).collect();
        rogue.info = info;
        Ok(rogue)
    }

    /// The right `authorization` value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `msg` with `auth` (when given) as its `authorization` metadata.
    pub fn with_auth<T>(msg: T, auth: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(a) = auth {
            match a.parse() {
                Ok(v) => {
                    req.metadata_mut().insert(AUTH_METADATA, v);
                }
                Err(_) => panic!("the authorization `{a}` is not valid ASCII metadata"),
            }
        }
        req
    }

    /// `msg` with the right token.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        Self::with_auth(msg, Some(&self.bearer()))
    }

    /// Runs one call of the client on the rogue's runtime.
    pub fn call<T, F>(&self, f: impl FnOnce(CoordinatorClient<Channel>) -> F) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.rt
            .block_on(f(self.client.clone()))
            .map(tonic::Response::into_inner)
    }

    /// GetRunInfo with `version` and `auth`.
    pub fn run_info(&self, version: u32, auth: Option<&str>) -> Result<v1::RunInfo, Status> {
        let req = Self::with_auth(
            v1::RunInfoRequest {
                protocol_version: version,
            },
            auth,
        );
        self.call(|mut c| async move { c.get_run_info(req).await })
    }

    /// A registration that the coordinator accepts.
    pub fn registration(&self) -> v1::RegisterRequest {
        v1::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            build: "malformed-message suite".into(),
            device: "none".into(),
            fingerprint: self.info.fingerprint.clone(),
            host: "rogue".into(),
        }
    }

    /// Registers `r`.
    pub fn register_with(&self, r: v1::RegisterRequest) -> Result<u64, Status> {
        let req = self.req(r);
        let id = self
            .call(|mut c| async move { c.register(req).await })?
            .worker_id;
        self.joined.borrow_mut().push(id);
        Ok(id)
    }

    /// Joins the run as a worker; returns the worker id.
    pub fn join(&self) -> Result<u64, Status> {
        self.register_with(self.registration())
    }

    /// Leaves the run as `id` (what it held goes back to the queue).
    pub fn leave(&self, id: u64) -> Result<(), Status> {
        self.joined.borrow_mut().retain(|&j| j != id);
        let req = self.req(v1::LeaveRequest {
            run_id: self.info.run_id.clone(),
            worker_id: id,
        });
        self.call(|mut c| async move { c.leave(req).await })
            .map(drop)
    }

    /// Leaves as every id still joined.
    pub fn leave_all(&self) {
        let ids = self.joined.borrow().clone();
        for id in ids {
            let _ = self.leave(id);
        }
    }

    /// NextWork as `id`, waiting up to a second for work.
    pub fn next_work(&self, id: u64) -> Result<v1::WorkAssignment, Status> {
        let req = self.req(v1::WorkRequest {
            run_id: self.info.run_id.clone(),
            worker_id: id,
            have_version: ecg_proto::NO_VERSION,
            wait_ms: 1000,
        });
        self.call(|mut c| async move { c.next_work(req).await })
    }

    /// The run's status.
    pub fn status(&self) -> Result<v1::StatusResponse, Status> {
        let req = self.req(v1::StatusRequest {});
        self.call(|mut c| async move { c.status(req).await })
    }

    /// PushGradients with the messages `msgs`, in order.
    pub fn upload(&self, msgs: Vec<v1::GradientUpload>) -> Result<(), Status> {
        let req = self.req(tonic::codegen::tokio_stream::iter(msgs));
        self.call(|mut c| async move { c.push_gradients(req).await })
            .map(drop)
    }

    /// Joins as a fresh worker and asks for work until it holds work of the kind `want`;
    /// work of another kind is given back by leaving (the id is then dropped) and the rogue
    /// joins again. A training unit is taken only at step 1 or later, alone, and from a step
    /// of two units, so that the other unit is a real worker's.
    pub fn acquire(&self, want: Want) -> Result<(u64, Kind), String> {
        let deadline = Instant::now() + ACQUIRE_BOUND;
        while Instant::now() < deadline {
            let id = self.join().map_err(|s| format!("Register: {s:?}"))?;
            loop {
                let a = self.next_work(id).map_err(|s| format!("NextWork: {s:?}"))?;
                match a.kind {
                    Some(Kind::Wait(_)) if Instant::now() < deadline => continue,
                    Some(Kind::Finished(f)) => {
                        let _ = self.leave(id);
                        return Err(format!("the run finished first ({})", f.reason));
                    }
                    Some(Kind::Train(t)) if want == Want::Train && self.two_units(&t)? => {
                        return Ok((id, Kind::Train(t)));
                    }
                    Some(Kind::Predict(p)) if want == Want::Predict && !p.exam_ids.is_empty() => {
                        return Ok((id, Kind::Predict(p)));
                    }
                    _ => {
                        self.leave(id).map_err(|s| format!("Leave: {s:?}"))?;
                        break;
                    }
                }
            }
        }
        Err(format!("no {want:?} work within {ACQUIRE_BOUND:?}"))
    }

    /// Whether `t` is one unit of a step (1 or later) that has two units.
    fn two_units(&self, t: &v1::TrainWork) -> Result<bool, String> {
        let [u] = t.units.as_slice() else {
            return Ok(false);
        };
        if t.step == 0 {
            return Ok(false);
        }
        if u.index == 1 {
            return Ok(true);
        }
        // Unit 0 of a full batch (any step but the epoch's last) has a second unit.
        let s = self.status().map_err(|s| format!("Status: {s:?}"))?;
        Ok(s.global_step == t.step && s.step_in_epoch + 1 < s.steps_in_epoch)
    }

    /// Results of unit `index` with `exams` exams that pass every check.
    pub fn unit_result(&self, index: u32, exams: u64) -> v1::UnitResult {
        v1::UnitResult {
            index,
            exams,
            loss_sum: 1.0,
            abs_error_sum: 1.0,
            bn: self
                .bn_channels
                .iter()
                .map(|&c| v1::BnUnitStats {
                    mean: vec![0.0; c],
                    var_unbiased: vec![1.0; c],
                    count: exams.max(1) * 16,
                })
                .collect(),
        }
    }

    /// A header of `id` for `step` with `units`, announcing every parameter.
    pub fn header(&self, id: u64, step: u64, units: Vec<v1::UnitResult>) -> v1::GradientUpload {
        v1::GradientUpload {
            header: Some(v1::GradientHeader {
                run_id: self.info.run_id.clone(),
                worker_id: id,
                step,
                n_values: self.n_params as u64,
                units,
            }),
            ..Default::default()
        }
    }

    /// A zero gradient of the right length.
    pub fn zeros(&self) -> Vec<f32> {
        vec![0.0; self.n_params]
    }
}

/// A data message with `bytes` at byte `offset`.
pub(crate) fn chunk(offset: u64, bytes: Vec<u8>) -> v1::GradientUpload {
    v1::GradientUpload {
        header: None,
        offset,
        data: bytes.into(),
        ..Default::default()
    }
}

/// Little-endian bytes of `values`.
pub(crate) fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `values` as data messages of at most `CHUNK_BYTES`, as a worker sends them.
pub(crate) fn chunks(values: &[f32]) -> Vec<v1::GradientUpload> {
    let per = CHUNK_BYTES / 4;
    values
        .chunks(per)
        .enumerate()
        .map(|(i, c)| chunk((i * per * 4) as u64, bytes(c)))
        .collect()
}
