//! The cases that need no work held: the token, the protocol version, the registration (its
//! dataset fingerprint and its fields), the run id on every call that carries one, unknown
//! workers, state versions not held, and a message over the size limit. Each names the
//! status it must get and the `/metrics` reason it must be counted under.
use ecg_proto::v1;
use ecg_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use tonic::Code;

use super::Case;
use super::rogue::Rogue;

/// What these cases work with: a worker id the coordinator knows (the rogue's own).
pub(crate) struct Probe {
    /// A registered worker.
    pub id: u64,
}

const WRONG_RUN: &str = "not-this-run";

fn heartbeat(r: &Rogue, run_id: &str, id: u64) -> Result<(), tonic::Status> {
    let req = r.req(v1::HeartbeatRequest {
        run_id: run_id.to_string(),
        worker_id: id,
    });
    r.call(|mut c| async move { c.heartbeat(req).await })
        .map(drop)
}

fn get_state(r: &Rogue, run_id: &str, id: u64, version: u64) -> Result<(), tonic::Status> {
    let req = r.req(v1::StateRequest {
        run_id: run_id.to_string(),
        worker_id: id,
        version,
        shared_memory: false,
    });
    r.call(|mut c| async move { c.get_state(req).await })
        .map(drop)
}

fn status_with(r: &Rogue, auth: Option<&str>) -> Result<(), tonic::Status> {
    let req = Rogue::with_auth(v1::StatusRequest {}, auth);
    r.call(|mut c| async move { c.status(req).await }).map(drop)
}

fn register(r: &Rogue, f: impl FnOnce(&mut v1::RegisterRequest)) -> Result<(), tonic::Status> {
    let mut reg = r.registration();
    f(&mut reg);
    r.register_with(reg).map(drop)
}

/// The cases, in the order they run.
pub(crate) fn cases() -> Vec<Case<Probe>> {
    use Code::*;
    vec![
        Case::new(
            "missing_token",
            Unauthenticated,
            "unauthenticated",
            |r, _| status_with(r, None),
        ),
        Case::new("wrong_token", Unauthenticated, "unauthenticated", |r, _| {
            status_with(r, Some("Bearer not-the-token"))
        }),
        Case::new(
            "wrong_auth_scheme",
            Unauthenticated,
            "unauthenticated",
            |r, _| {
                let auth = r.bearer().replacen("Bearer ", "Basic ", 1);
                status_with(r, Some(&auth))
            },
        ),
        Case::new(
            "token_without_scheme",
            Unauthenticated,
            "unauthenticated",
            |r, _| {
                let auth = r.bearer().replacen("Bearer ", "", 1);
                status_with(r, Some(&auth))
            },
        ),
        Case::new(
            "token_with_suffix",
            Unauthenticated,
            "unauthenticated",
            |r, _| status_with(r, Some(&format!("{}x", r.bearer()))),
        ),
        Case::new(
            "run_info_protocol_version",
            FailedPrecondition,
            "protocol_version",
            |r, _| {
                r.run_info(PROTOCOL_VERSION + 1, Some(&r.bearer()))
                    .map(drop)
            },
        ),
        Case::new(
            "register_protocol_version",
            FailedPrecondition,
            "protocol_version",
            |r, _| register(r, |g| g.protocol_version = 0),
        ),
        Case::new(
            "wrong_fingerprint",
            FailedPrecondition,
            "fingerprint",
            |r, _| {
                register(r, |g| {
                    if let Some(f) = &mut g.fingerprint {
                        let mut d = f.digest.to_vec();
                        d[0] ^= 1;
                        f.digest = d.into();
                    }
                })
            },
        ),
        Case::new(
            "missing_fingerprint",
            FailedPrecondition,
            "fingerprint",
            |r, _| register(r, |g| g.fingerprint = None),
        ),
        Case::new(
            "register_control_characters",
            InvalidArgument,
            "bad_request",
            |r, _| register(r, |g| g.host = "rogue\nworker 1 joined".into()),
        ),
        Case::new(
            "register_long_device",
            InvalidArgument,
            "bad_request",
            |r, _| register(r, |g| g.device = "d".repeat(100_000)),
        ),
        Case::new("heartbeat_wrong_run", NotFound, "wrong_run", |r, p| {
            heartbeat(r, WRONG_RUN, p.id)
        }),
        Case::new("heartbeat_empty_run", NotFound, "wrong_run", |r, p| {
            heartbeat(r, "", p.id)
        }),
        Case::new("heartbeat_huge_run_id", NotFound, "wrong_run", |r, p| {
            // Within the size limit, far too long to be echoed whole in the refusal.
            heartbeat(r, &"r".repeat(1 << 20), p.id)
        }),
        Case::new("next_work_wrong_run", NotFound, "wrong_run", |r, p| {
            let req = r.req(v1::WorkRequest {
                run_id: WRONG_RUN.into(),
                worker_id: p.id,
                have_version: 0,
                wait_ms: 0,
            });
            r.call(|mut c| async move { c.next_work(req).await })
                .map(drop)
        }),
        Case::new("get_state_wrong_run", NotFound, "wrong_run", |r, p| {
            get_state(r, WRONG_RUN, p.id, 0)
        }),
        Case::new("push_wrong_run", NotFound, "wrong_run", |r, p| {
            let mut h = r.header(p.id, 0, vec![r.unit_result(0, 1)]);
            if let Some(h) = &mut h.header {
                h.run_id = WRONG_RUN.into();
            }
            r.upload(vec![h])
        }),
        Case::new("predictions_wrong_run", NotFound, "wrong_run", |r, p| {
            let req = r.req(v1::Predictions {
                run_id: WRONG_RUN.into(),
                worker_id: p.id,
                task: 0,
                exam_ids: vec![1],
                predicted_age: vec![50.0],
            });
            r.call(|mut c| async move { c.report_predictions(req).await })
                .map(drop)
        }),
        Case::new("leave_wrong_run", NotFound, "wrong_run", |r, p| {
            let req = r.req(v1::LeaveRequest {
                run_id: WRONG_RUN.into(),
                worker_id: p.id,
            });
            r.call(|mut c| async move { c.leave(req).await }).map(drop)
        }),
        Case::new("unknown_worker", NotFound, "unknown_worker", |r, p| {
            heartbeat(r, &r.info.run_id, p.id + 1_000_000)
        }),
        Case::new(
            "get_state_version_not_held",
            Aborted,
            "no_version",
            |r, p| get_state(r, &r.info.run_id, p.id, 1_000_000_000),
        ),
        Case::new("oversized_request", OutOfRange, "oversized", |r, _| {
            register(r, |g| g.host = "h".repeat(MAX_MESSAGE_BYTES + 1))
        }),
    ]
}
