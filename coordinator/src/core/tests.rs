//! The core's rules without a network: units are shared and handed to one worker at a time,
//! a repeated request gets the same units, a leaving worker's units go back to the queue,
//! stale or foreign uploads are refused, and predictions must match their task.
use super::*;
use ecg_proto::NO_VERSION;

fn unit(i: u32, n: usize) -> v1::WorkUnit {
    v1::WorkUnit {
        index: i,
        exam_ids: (0..n as i64).map(|e| e + 100 * i64::from(i)).collect(),
        weights: vec![1.0; n],
        mask_seed: u64::from(i),
    }
}

fn snapshot(version: u64) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        version,
        n_params: 0,
        chunks: Vec::new(),
        bn_running: Vec::new(),
        bn_tracked: Vec::new(),
    })
}

fn train_units(a: &v1::WorkAssignment) -> Vec<u32> {
    match &a.kind {
        Some(Kind::Train(t)) => t.units.iter().map(|u| u.index).collect(),
        other => panic!("expected training work, got {other:?}"),
    }
}

fn contribution(w: WorkerId, units: &[u32], exams: u64) -> Contribution {
    Contribution {
        worker: w,
        units: units
            .iter()
            .map(|&index| UnitOutcome {
                index,
                exams,
                loss_sum: 1.0,
                abs_error_sum: 1.0,
                bn: Vec::new(),
            })
            .collect(),
    }
}

#[test]
fn units_are_shared_resent_and_returned_when_a_worker_leaves() {
    let mut core = Core::new(snapshot(7));
    let (a, b) = (
        core.register("a".into(), "cpu".into()),
        core.register("b".into(), "cpu".into()),
    );
    core.step = Some(StepWork::new(
        0,
        7,
        (0..4).map(|i| unit(i, 2)).collect(),
        2,
        4,
        16,
    ));
    let ua = core.assign(a, NO_VERSION).expect("work for a");
    assert_eq!(ua.version, 7);
    assert_eq!(train_units(&ua), vec![0, 1]);
    assert_eq!(
        train_units(&core.assign(a, NO_VERSION).expect("again")),
        vec![0, 1],
        "a repeated request gets the same units"
    );
    assert_eq!(
        train_units(&core.assign(b, NO_VERSION).expect("work for b")),
        vec![2, 3]
    );
    let c = core.register("c".into(), "cpu".into());
    assert!(
        core.assign(c, NO_VERSION).is_none(),
        "nothing left for a third worker"
    );
    assert_eq!(core.remove(b), 2);
    assert_eq!(
        train_units(&core.assign(c, NO_VERSION).expect("b's units")),
        vec![2, 3]
    );
    assert!(!core.members.contains_key(&b));
}

#[test]
fn uploads_are_checked_against_step_and_assignment() {
    let mut core = Core::new(snapshot(3));
    let (a, b) = (
        core.register("a".into(), "cpu".into()),
        core.register("b".into(), "cpu".into()),
    );
    core.step = Some(StepWork::new(
        0,
        3,
        (0..2).map(|i| unit(i, 2)).collect(),
        2,
        4,
        16,
    ));
    core.assign(a, NO_VERSION);
    core.assign(b, NO_VERSION);
    assert_eq!(
        core.check_upload(a, 2, &[0]),
        Err(Refusal::StaleStep { got: 2, current: 3 })
    );
    assert_eq!(
        core.check_upload(a, 3, &[1]),
        Err(Refusal::NotAssigned { step: 3, unit: 1 })
    );
    assert!(matches!(
        core.check_upload(a, 3, &[0, 0]),
        Err(Refusal::BadUpload(_))
    ));
    assert!(matches!(
        core.accept(3, contribution(a, &[0], 5)),
        Err(Refusal::BadUpload(m)) if m.contains("claims 5")
    ));
    core.accept(3, contribution(a, &[0], 2)).expect("a's unit");
    assert!(!core.step.as_ref().unwrap().complete());
    assert!(
        matches!(
            core.accept(3, contribution(a, &[0], 2)),
            Err(Refusal::Duplicate { step: 3, unit: 0 })
        ),
        "a unit is done once"
    );
    core.accept(3, contribution(b, &[1], 2)).expect("b's unit");
    assert!(core.step.as_ref().unwrap().complete());
    assert_eq!(core.members[&a].exams, 2);
    assert_eq!(core.step.as_ref().unwrap().contributions.len(), 2);
}

#[test]
fn predictions_must_match_their_task_and_silent_workers_are_dropped() {
    let mut core = Core::new(snapshot(1));
    let a = core.register("a".into(), "cpu".into());
    core.predict = Some(PredictRound::new(
        v1::PredictPhase::Valid,
        1,
        vec![vec![5, 6], vec![7]],
    ));
    let t0 = match core.assign(a, NO_VERSION).and_then(|x| x.kind) {
        Some(Kind::Predict(p)) => p,
        other => panic!("expected a prediction task, got {other:?}"),
    };
    assert_eq!(t0.exam_ids, vec![5, 6]);
    assert!(matches!(
        core.accept_predictions(a, 0, &[5], vec![1.0]),
        Err(Refusal::BadUpload(_))
    ));
    assert!(matches!(
        core.accept_predictions(a, 0, &[5, 6], vec![1.0, f32::NAN]),
        Err(Refusal::BadUpload(_))
    ));
    assert_eq!(
        core.accept_predictions(a, 1, &[7], vec![1.0]),
        Err(Refusal::NoTask(1))
    );
    core.accept_predictions(a, 0, &[5, 6], vec![40.0, 41.0])
        .expect("its own task");
    core.assign(a, NO_VERSION).expect("the second task");
    assert!(core.drop_silent(Duration::from_secs(3600)).is_empty());
    assert_eq!(core.drop_silent(Duration::ZERO), vec![a]);
    let b = core.register("b".into(), "cpu".into());
    match core.assign(b, NO_VERSION).and_then(|x| x.kind) {
        Some(Kind::Predict(p)) => {
            assert_eq!(p.task, 1, "the dropped worker's task is handed out again")
        }
        other => panic!("expected the returned task, got {other:?}"),
    }
    core.phase = Phase::Finished;
    assert!(!core.all_told());
    assert!(matches!(
        core.assign(b, NO_VERSION).and_then(|x| x.kind),
        Some(Kind::Finished(_))
    ));
    assert!(core.all_told());
}

#[test]
fn a_straggler_past_the_deadline_loses_its_units_to_another_worker() {
    let mut core = Core::new(snapshot(5));
    let (a, b) = (
        core.register("a".into(), "cpu".into()),
        core.register("b".into(), "cpu".into()),
    );
    core.step = Some(StepWork::new(
        0,
        5,
        (0..4).map(|i| unit(i, 2)).collect(),
        2,
        4,
        16,
    ));
    assert_eq!(
        train_units(&core.assign(a, NO_VERSION).unwrap()),
        vec![0, 1]
    );
    assert_eq!(
        train_units(&core.assign(b, NO_VERSION).unwrap()),
        vec![2, 3]
    );
    assert!(
        core.revoke_late(Duration::from_secs(3600)).is_empty(),
        "nobody is late yet"
    );
    core.accept(5, contribution(b, &[2, 3], 2)).unwrap();
    // With a zero deadline, a (still holding 0 and 1) is late; b can take over.
    assert_eq!(core.revoke_late(Duration::ZERO), vec![(a, 2)]);
    assert!(
        core.assign(a, NO_VERSION).is_none(),
        "a straggler gets no more units of the step"
    );
    assert_eq!(
        core.check_upload(a, 5, &[0, 1]),
        Err(Refusal::NotAssigned { step: 5, unit: 0 }),
        "its late upload is refused"
    );
    assert_eq!(
        train_units(&core.assign(b, NO_VERSION).unwrap()),
        vec![0, 1]
    );
    core.accept(5, contribution(b, &[0, 1], 2)).unwrap();
    let s = core.step.as_ref().unwrap();
    assert!(s.complete());
    let mut ids: Vec<i64> = s.delivered_exams().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 100, 101, 200, 201, 300, 301]);
}

#[test]
fn a_lone_straggler_keeps_its_units_and_the_automatic_deadline_follows_latency() {
    let mut core = Core::new(snapshot(0));
    let a = core.register("a".into(), "cpu".into());
    let floor = Duration::from_millis(50);
    assert_eq!(core.step_deadline(Duration::ZERO, floor), None);
    assert_eq!(
        core.step_deadline(Duration::from_secs(2), floor),
        Some(Duration::from_secs(2))
    );
    core.step = Some(StepWork::new(0, 0, vec![unit(0, 2)], 1, 4, 16));
    assert_eq!(train_units(&core.assign(a, NO_VERSION).unwrap()), vec![0]);
    assert!(
        core.revoke_late(Duration::ZERO).is_empty(),
        "nobody else could take the units"
    );
    core.accept(0, contribution(a, &[0], 2)).unwrap();
    let d = core.step_deadline(Duration::ZERO, floor).unwrap();
    assert!(d >= floor, "{d:?}");
    let d = core.step_deadline(Duration::ZERO, Duration::ZERO).unwrap();
    assert!(
        d < Duration::from_secs(60),
        "ten times a latency measured in microseconds: {d:?}"
    );
}

#[test]
fn an_upload_refused_after_it_was_accepted_gives_its_units_back() {
    let mut core = Core::new(snapshot(4));
    let a = core.register("a".into(), "cpu".into());
    core.step = Some(StepWork::new(
        0,
        4,
        (0..2).map(|i| unit(i, 2)).collect(),
        1,
        4,
        16,
    ));
    assert_eq!(
        train_units(&core.assign(a, NO_VERSION).expect("work")),
        vec![0, 1]
    );
    let s = core.step.as_mut().unwrap();
    let serial = s.reduction.begin(0, a, 2);
    s.reduction
        .push(
            0,
            serial,
            0,
            crate::reduce::Piece::Bytes(vec![0u8; 16].into()),
        )
        .expect("chunk");
    core.accept(4, contribution(a, &[0, 1], 2))
        .expect("accepted");
    let s = core.step.as_mut().unwrap();
    assert!(s.complete());
    assert_eq!(s.reject(0), Some(a));
    assert!(!s.complete(), "its units are to be done again");
    assert!(s.contributions.is_empty());
    assert_eq!(s.reject(0), None, "once");
    assert_eq!(
        train_units(&core.assign(a, NO_VERSION).expect("again")),
        vec![0, 1]
    );
}

#[test]
fn a_worker_that_downloads_over_grpc_waits_for_a_version_made_with_bytes() {
    let mut core = Core::new(snapshot(5));
    let (shm, grpc) = (
        core.register("a".into(), "cpu".into()),
        core.register("b".into(), "cpu".into()),
    );
    core.members.get_mut(&shm).unwrap().needs_bytes = false;
    // Version 5 was made for the parameter segment only.
    core.snapshot = Arc::new(Snapshot {
        chunks: vec![(
            0,
            crate::snapshot::ParamChunk {
                len: 4,
                data: None,
                shared_sum: Some(1),
            },
        )],
        version: 5,
        n_params: 1,
        bn_running: Vec::new(),
        bn_tracked: Vec::new(),
    });
    core.step = Some(StepWork::new(
        0,
        5,
        (0..2).map(|i| unit(i, 2)).collect(),
        2,
        4,
        16,
    ));
    assert!(
        core.assign(grpc, NO_VERSION).is_none(),
        "it could not fetch version 5"
    );
    assert!(core.assign(grpc, 4).is_none());
    assert_eq!(
        train_units(&core.assign(grpc, 5).expect("it holds version 5")),
        vec![0]
    );
    assert_eq!(
        train_units(
            &core
                .assign(shm, NO_VERSION)
                .expect("it reads shared memory")
        ),
        vec![1]
    );
    // With the bytes made, anyone can fetch it.
    core.step = Some(StepWork::new(
        0,
        5,
        (0..2).map(|i| unit(i, 2)).collect(),
        2,
        4,
        16,
    ));
    core.snapshot = snapshot(5);
    assert!(core.assign(grpc, NO_VERSION).is_some());
}
