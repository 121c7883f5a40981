//! The cases that need work held: gradient uploads for a training unit the rogue holds
//! (framing, step, units, chunks, values, unit results, size), predictions for a task it
//! holds, and calls after it left. Every upload is valid but for the one thing its case
//! breaks, so that a missing check shows as an accepted upload (and, in the end, as
//! parameters that differ from an undisturbed run's).
use std::time::{Duration, Instant};

use ecg_proto::MAX_MESSAGE_BYTES;
use ecg_proto::v1;
use tonic::{Code, Status};

use super::Case;
use super::rogue::{Rogue, bytes, chunk, chunks};

/// A training unit held by the rogue.
pub(crate) struct Held {
    /// The worker holding it.
    pub id: u64,
    /// Another of the rogue's workers, holding nothing.
    pub other: u64,
    /// Its step.
    pub step: u64,
    /// Its index in the step.
    pub unit: u32,
    /// Its exams.
    pub exams: u64,
    /// The step's other unit, a real worker's.
    pub theirs: u32,
}

impl Held {
    /// The header of a valid upload of the held unit, with `f` applied to its unit results.
    fn header(&self, r: &Rogue, f: impl FnOnce(&mut v1::UnitResult)) -> v1::GradientUpload {
        let mut u = r.unit_result(self.unit, self.exams);
        f(&mut u);
        r.header(self.id, self.step, vec![u])
    }

    /// Uploads the header (changed by `h`) and a zero gradient changed by `g`.
    fn send(
        &self,
        r: &Rogue,
        h: impl FnOnce(&mut v1::GradientHeader),
        g: impl FnOnce(&mut Vec<f32>),
    ) -> Result<(), Status> {
        let mut first = self.header(r, |_| {});
        if let Some(header) = &mut first.header {
            h(header);
        }
        let mut grad = r.zeros();
        g(&mut grad);
        let mut msgs = vec![first];
        msgs.extend(chunks(&grad));
        r.upload(msgs)
    }

    /// Uploads a valid header and then the data messages `data`.
    fn send_data(&self, r: &Rogue, data: Vec<v1::GradientUpload>) -> Result<(), Status> {
        let mut msgs = vec![self.header(r, |_| {})];
        msgs.extend(data);
        r.upload(msgs)
    }

    /// Uploads a valid gradient with the unit results changed by `f`.
    fn send_unit(&self, r: &Rogue, f: impl FnOnce(&mut v1::UnitResult)) -> Result<(), Status> {
        let mut msgs = vec![self.header(r, f)];
        msgs.extend(chunks(&r.zeros()));
        r.upload(msgs)
    }
}

/// Names the real worker's unit until it is done (no call tells that, so the rogue asks
/// again while the coordinator answers that the unit is someone else's).
fn duplicate(r: &Rogue, h: &Held) -> Result<(), Status> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut msgs = vec![r.header(h.id, h.step, vec![r.unit_result(h.theirs, h.exams)])];
        msgs.extend(chunks(&r.zeros()));
        let got = r.upload(msgs);
        let pending = matches!(&got, Err(s) if s.code() == Code::Aborted
            && s.message().contains("not assigned"));
        if !pending || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A data message naming `len` bytes at `offset` of the shared-memory upload region.
fn shared(offset: u64, len: u32, sum: u64) -> v1::GradientUpload {
    v1::GradientUpload {
        offset,
        shared_len: len,
        shared_sum: sum,
        ..Default::default()
    }
}

/// The upload cases, in the order they run (the duplicate last: it waits for the real
/// worker).
pub(crate) fn upload_cases() -> Vec<Case<Held>> {
    use Code::*;
    vec![
        Case::new(
            "upload_empty_stream",
            InvalidArgument,
            "bad_upload",
            |r, _| r.upload(Vec::new()),
        ),
        Case::new(
            "upload_no_header_first",
            InvalidArgument,
            "bad_upload",
            |r, _| r.upload(chunks(&r.zeros())),
        ),
        Case::new(
            "upload_second_header",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let grad = r.zeros();
                let half = grad.len() / 2;
                h.send_data(
                    r,
                    vec![
                        chunk(0, bytes(&grad[..half])),
                        h.header(r, |_| {}),
                        chunk(half as u64 * 4, bytes(&grad[half..])),
                    ],
                )
            },
        ),
        Case::new("upload_no_units", InvalidArgument, "bad_upload", |r, h| {
            h.send(r, |x| x.units.clear(), |_| {})
        }),
        Case::new(
            "upload_unit_named_twice",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send(r, |x| x.units.push(x.units[0].clone()), |_| {}),
        ),
        Case::new(
            "upload_unit_of_another_worker",
            Aborted,
            "not_assigned",
            |r, h| h.send(r, |x| x.worker_id = h.other, |_| {}),
        ),
        Case::new(
            "upload_unit_not_in_step",
            Aborted,
            "not_assigned",
            |r, h| h.send(r, |x| x.units[0].index = 999, |_| {}),
        ),
        Case::new("upload_stale_step", Aborted, "stale_step", |r, h| {
            h.send(r, |x| x.step -= 1, |_| {})
        }),
        Case::new("upload_future_step", Aborted, "stale_step", |r, h| {
            h.send(r, |x| x.step += 1, |_| {})
        }),
        Case::new(
            "upload_n_values_wrong",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send(r, |x| x.n_values += 1, |g| g.push(0.0)),
        ),
        Case::new(
            "upload_chunks_out_of_order",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let g = bytes(&r.zeros());
                h.send_data(
                    r,
                    vec![chunk(8, g[8..].to_vec()), chunk(0, g[..8].to_vec())],
                )
            },
        ),
        Case::new("upload_chunk_gap", InvalidArgument, "bad_upload", |r, h| {
            let g = bytes(&r.zeros());
            h.send_data(
                r,
                vec![chunk(0, g[..8].to_vec()), chunk(16, g[16..].to_vec())],
            )
        }),
        Case::new(
            "upload_overlapping_chunk",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let g = bytes(&r.zeros());
                h.send_data(
                    r,
                    vec![chunk(0, g[..16].to_vec()), chunk(8, g[8..].to_vec())],
                )
            },
        ),
        Case::new(
            "upload_chunk_not_multiple_of_4",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let g = bytes(&r.zeros());
                h.send_data(
                    r,
                    vec![chunk(0, g[..6].to_vec()), chunk(6, g[6..].to_vec())],
                )
            },
        ),
        Case::new(
            "upload_data_past_the_end",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let mut data = chunks(&r.zeros());
                data.push(chunk(r.n_params as u64 * 4, vec![0; 4]));
                h.send_data(r, data)
            },
        ),
        Case::new(
            "upload_missing_tail",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_data(r, chunks(&r.zeros()[1..])),
        ),
        // The rogue registered from the coordinator's host: it was offered a segment, whose
        // upload region holds zeros (it never wrote there).
        Case::new(
            "upload_shared_chunk_wrong_checksum",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let zeros = bytes(&r.zeros());
                let sum = ecg_shared::shm::checksum(&zeros) ^ 1;
                h.send_data(r, vec![shared(0, zeros.len() as u32, sum)])
            },
        ),
        Case::new(
            "upload_shared_chunk_with_data",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                let zeros = bytes(&r.zeros());
                let mut m = shared(0, zeros.len() as u32, ecg_shared::shm::checksum(&zeros));
                m.data = zeros.into();
                h.send_data(r, vec![m])
            },
        ),
        Case::new(
            "upload_shared_chunk_longer_than_a_chunk",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_data(r, vec![shared(0, u32::MAX, 0)]),
        ),
        Case::new(
            "upload_nan_gradient",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                h.send(
                    r,
                    |_| {},
                    |g| {
                        let mid = g.len() / 2;
                        g[mid] = f32::NAN;
                    },
                )
            },
        ),
        Case::new(
            "upload_infinite_gradient",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send(r, |_| {}, |g| g[0] = f32::INFINITY),
        ),
        Case::new("upload_nan_loss", InvalidArgument, "bad_upload", |r, h| {
            h.send_unit(r, |u| u.loss_sum = f64::NAN)
        }),
        Case::new(
            "upload_negative_loss",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.loss_sum = -1.0),
        ),
        Case::new(
            "upload_wrong_exam_count",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.exams += 1),
        ),
        Case::new(
            "upload_zero_exams",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.exams = 0),
        ),
        Case::new(
            "upload_missing_bn_layer",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.bn.truncate(r.bn_channels.len() - 1)),
        ),
        Case::new(
            "upload_wrong_bn_channels",
            InvalidArgument,
            "bad_upload",
            |r, h| {
                h.send_unit(r, |u| {
                    u.bn[0].mean.push(0.0);
                    u.bn[0].var_unbiased.push(1.0);
                })
            },
        ),
        Case::new(
            "upload_zero_bn_count",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.bn[0].count = 0),
        ),
        Case::new(
            "upload_nan_bn_mean",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.bn[0].mean[0] = f64::NAN),
        ),
        Case::new(
            "upload_negative_bn_variance",
            InvalidArgument,
            "bad_upload",
            |r, h| h.send_unit(r, |u| u.bn[0].var_unbiased[0] = -1.0),
        ),
        Case::new("upload_oversized_chunk", OutOfRange, "oversized", |r, h| {
            h.send_data(r, vec![chunk(0, vec![0; MAX_MESSAGE_BYTES + 8])])
        }),
        Case::new("upload_duplicate_unit", Aborted, "duplicate", duplicate),
    ]
}

/// The cases of a worker that has left.
pub(crate) fn after_leave_cases() -> Vec<Case<Held>> {
    vec![
        Case::new(
            "heartbeat_after_leave",
            Code::NotFound,
            "unknown_worker",
            |r, h| {
                let req = r.req(v1::HeartbeatRequest {
                    run_id: r.info.run_id.clone(),
                    worker_id: h.id,
                });
                r.call(|mut c| async move { c.heartbeat(req).await })
                    .map(drop)
            },
        ),
        Case::new(
            "upload_after_leave",
            Code::NotFound,
            "unknown_worker",
            |r, h| h.send(r, |_| {}, |_| {}),
        ),
    ]
}

/// A prediction task held by the rogue.
pub(crate) struct Task {
    /// The worker holding it.
    pub id: u64,
    /// Another of the rogue's workers, holding nothing.
    pub other: u64,
    /// The task.
    pub task: u64,
    /// Its exams.
    pub exam_ids: Vec<i64>,
}

impl Task {
    /// Reports valid-looking predictions of the task as `id`, changed by `f`.
    fn report(&self, r: &Rogue, f: impl FnOnce(&mut v1::Predictions)) -> Result<(), Status> {
        let mut p = v1::Predictions {
            run_id: r.info.run_id.clone(),
            worker_id: self.id,
            task: self.task,
            exam_ids: self.exam_ids.clone(),
            predicted_age: vec![50.0; self.exam_ids.len()],
        };
        f(&mut p);
        let req = r.req(p);
        r.call(|mut c| async move { c.report_predictions(req).await })
            .map(drop)
    }
}

/// The prediction cases.
pub(crate) fn prediction_cases() -> Vec<Case<Task>> {
    use Code::*;
    vec![
        Case::new(
            "predictions_unassigned_task",
            Aborted,
            "not_assigned",
            |r, t| t.report(r, |p| p.worker_id = t.other),
        ),
        Case::new(
            "predictions_unknown_task",
            Aborted,
            "not_assigned",
            |r, t| t.report(r, |p| p.task = u64::MAX),
        ),
        Case::new(
            "predictions_wrong_length",
            InvalidArgument,
            "bad_upload",
            |r, t| t.report(r, |p| p.predicted_age.truncate(t.exam_ids.len() - 1)),
        ),
        Case::new(
            "predictions_other_exams",
            InvalidArgument,
            "bad_upload",
            |r, t| t.report(r, |p| p.exam_ids[0] = p.exam_ids[0].wrapping_add(1 << 40)),
        ),
        Case::new("predictions_nan", InvalidArgument, "bad_upload", |r, t| {
            t.report(r, |p| p.predicted_age[0] = f32::NAN)
        }),
        Case::new(
            "predictions_infinite",
            InvalidArgument,
            "bad_upload",
            |r, t| t.report(r, |p| p.predicted_age[0] = f32::NEG_INFINITY),
        ),
    ]
}
