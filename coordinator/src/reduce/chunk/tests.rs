use std::sync::Arc;

use bytes::Bytes;
use ecg_shared::shm::{Segment, checksum};
use ecg_shared::train::adam::{Adam, AdamConfig};

use super::*;

/// Values in the test's chunk: more than a block, and not a whole number of blocks.
const N: usize = 10_000;

fn le(values: &[f32]) -> Bytes {
    Bytes::from(
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

/// Two workers' gradients of the chunk.
fn gradients() -> [Vec<f32>; 2] {
    [
        (0..N).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect(),
        (0..N).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.02).collect(),
    ]
}

/// A worker's upload segment holding `values` at byte 0, as checked on arrival.
fn shared(dir: &std::path::Path, values: &[f32]) -> Piece {
    let (segment, _) = Segment::create(dir, N * 4, 1).expect("segment");
    let sum = segment.write(0, 0, &le(values)).expect("write");
    assert_eq!(
        segment.check_f32(0, 0, N * 4, sum).expect("checked"),
        None,
        "finite"
    );
    Piece::Shared {
        segment: Arc::new(segment),
        offset: 0,
        len: N * 4,
        sum,
    }
}

/// The parameters, moments and outcome of reducing `parts` once.
fn reduce(
    parts: Vec<(u32, Piece)>,
    bytes: bool,
    sums: bool,
) -> (Result<ChunkOutcome>, [Vec<f32>; 3]) {
    let layout = ParamLayout::new([("w", vec![N])]).expect("layout");
    let adam = Adam::new(AdamConfig::default(), N).expect("adam");
    let k = adam.next_step();
    let params: Vec<f32> = (0..N).map(|i| (i as f32).sin()).collect();
    let r = ChunkReducer {
        adam: &adam,
        k: &k,
        params: &params,
        layout: &layout,
        step: 0,
        bytes,
        sums,
    };
    let job = Job {
        generation: 0,
        index: 0,
        at: 0,
        parts,
    };
    let mut out = [vec![0f32; N], vec![0f32; N], vec![0f32; N]];
    let [p, m, v] = &mut out;
    let outcome = r.reduce(&job, Outputs(p, m, v));
    (outcome, out)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn pieces_in_shared_memory_reduce_as_pieces_in_messages_bit_for_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [a, b] = gradients();
    let (grpc, want) = reduce(
        vec![(0, Piece::Bytes(le(&a))), (1, Piece::Bytes(le(&b)))],
        true,
        false,
    );
    let Ok(ChunkOutcome::Reduced(chunk)) = grpc else {
        panic!("reduced: {grpc:?}");
    };
    assert_eq!(chunk.data.as_deref(), Some(&le(&want[0])[..]));
    assert_eq!(chunk.shared_sum, None);
    assert_ne!(
        want[0],
        (0..N).map(|i| (i as f32).sin()).collect::<Vec<_>>(),
        "a step was taken"
    );
    // Both pieces in shared memory, or one of each: the same parameters and moments, and the
    // checksum of the new parameters (no bytes made when they are not asked for).
    for parts in [
        vec![(0, shared(dir.path(), &a)), (1, shared(dir.path(), &b))],
        vec![(0, Piece::Bytes(le(&a))), (1, shared(dir.path(), &b))],
    ] {
        let (outcome, got) = reduce(parts, false, true);
        let Ok(ChunkOutcome::Reduced(chunk)) = outcome else {
            panic!("reduced: {outcome:?}");
        };
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(bits(g), bits(w));
        }
        assert_eq!(chunk.data, None);
        assert_eq!(chunk.len, N * 4);
        assert_eq!(chunk.shared_sum, Some(checksum(&le(&want[0]))));
    }
}

#[test]
fn a_piece_turned_non_finite_after_its_check_refuses_its_upload_and_an_overflow_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [a, b] = gradients();
    let piece = shared(dir.path(), &b);
    let Piece::Shared { segment, .. } = &piece else {
        unreachable!()
    };
    // The worker writes to its region after the check: a NaN at value 9000.
    let mut rewritten = b.clone();
    rewritten[9000] = f32::NAN;
    segment.write(0, 0, &le(&rewritten)).expect("rewrite");
    let (outcome, _) = reduce(vec![(0, Piece::Bytes(le(&a))), (3, piece)], true, true);
    match outcome {
        Ok(ChunkOutcome::Rewritten { key, why }) => {
            assert_eq!(key, 3);
            assert!(why.contains("value 9000"), "{why}");
        }
        other => panic!("expected a rewritten piece, got {other:?}"),
    }
    // Two finite pieces whose sum overflows: the run cannot go on.
    let big = vec![f32::MAX; N];
    let (outcome, _) = reduce(
        vec![(0, Piece::Bytes(le(&big))), (1, Piece::Bytes(le(&big)))],
        true,
        false,
    );
    let err = outcome.expect_err("an overflow");
    assert!(err.to_string().contains("w[0]"), "{err}");
}
