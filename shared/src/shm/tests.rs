use std::sync::Arc;

use super::*;

fn f32_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn chunks_travel_between_two_mappings_and_the_path_goes_once_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = 10_000;
    let (coord, nonce) = Segment::create(dir.path(), region, 2).expect("create");
    assert!(coord.path().exists());
    let worker = Segment::claim(coord.path(), nonce, region, 2, Access::ReadWrite).expect("open");
    assert!(!coord.path().exists(), "the worker removes the path");
    let up: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sum = worker.write(0, 4096, &up).expect("write");
    let mut got = vec![0u8; up.len()];
    coord.read(0, 4096, &mut got, sum).expect("read");
    assert_eq!(got, up);
    // The regions are apart: region 1 at the same offset is still zero.
    let sum = coord.write(1, 0, &[9; 100]).expect("write region 1");
    let mut down = [0u8; 100];
    worker.read(1, 0, &mut down, sum).expect("read region 1");
    assert_eq!(down, [9; 100]);
    coord
        .read(0, 0, &mut [0u8; 100], checksum(&[9; 100]))
        .expect_err("the first bytes of region 0 were never written");
}

#[test]
fn a_rewritten_chunk_a_wrong_nonce_size_or_region_count_and_out_of_range_chunks_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coord, nonce) = Segment::create(dir.path(), 4096, 1).expect("create");
    let err = Segment::claim(coord.path(), nonce ^ 1, 4096, 1, Access::ReadWrite)
        .expect_err("wrong nonce");
    assert!(err.to_string().contains("not the segment"), "{err}");
    assert!(coord.path().exists(), "a refused open leaves the path");
    let err =
        Segment::open(coord.path(), nonce, 8192, 1, Access::ReadWrite).expect_err("wrong size");
    assert!(err.to_string().contains("bytes"), "{err}");
    let err = Segment::open(coord.path(), nonce, 4096, 2, Access::ReadWrite)
        .expect_err("wrong number of regions");
    assert!(err.to_string().contains("2 regions"), "{err}");
    let worker = Segment::claim(coord.path(), nonce, 4096, 1, Access::ReadWrite).expect("open");
    let sum = worker.write(0, 0, &[1u8; 64]).expect("write");
    worker.write(0, 32, &[2u8; 8]).expect("rewrite");
    let err = coord
        .read(0, 0, &mut [0u8; 64], sum)
        .expect_err("rewritten while read");
    assert!(err.to_string().contains("checksum"), "{err}");
    let err = coord.write(0, 4090, &[0u8; 7]).expect_err("past the end");
    assert!(err.to_string().contains("do not fit"), "{err}");
    let err = coord.write(1, 0, &[0u8; 7]).expect_err("no region 1");
    assert!(err.to_string().contains("region 1"), "{err}");
    coord
        .read(0, u64::MAX, &mut [0u8; 1], 0)
        .expect_err("offset overflow");
}

#[test]
fn the_creator_removes_a_path_nobody_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, _) = Segment::create(dir.path(), 100, 1).expect("create");
    let path = seg.path().to_path_buf();
    drop(seg);
    assert!(!path.exists());
    let err = Segment::create(&dir.path().join("missing"), 100, 1).expect_err("no dir");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn an_unnamed_segment_is_opened_through_proc_and_outlives_its_creator_for_its_readers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coord, nonce) = Segment::create_unnamed(dir.path(), 1000, 2).expect("create");
    let names = || std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(names(), 0, "no name in its folder");
    let path = coord.proc_path().expect("path");
    assert!(path.starts_with("/proc"), "{}", path.display());
    let ra = Segment::open(&path, nonce, 1000, 2, Access::ReadOnly).expect("open a");
    let rb = Segment::open(&path, nonce, 1000, 2, Access::ReadOnly).expect("open b");
    Segment::open(&path, nonce ^ 1, 1000, 2, Access::ReadOnly).expect_err("wrong nonce");
    // One write, seen by both readers.
    let sum = coord.write(1, 8, &[5u8; 40]).expect("write");
    for r in [&ra, &rb] {
        let mut got = [0u8; 40];
        r.read(1, 8, &mut got, sum).expect("read");
        assert_eq!(got, [5u8; 40]);
    }
    let err = ra.write(0, 0, &[1]).expect_err("read-only");
    assert!(err.to_string().contains("read-only"), "{err}");
    let (named, _) = Segment::create(dir.path(), 10, 1).expect("named");
    let err = named.proc_path().expect_err("a named segment");
    assert!(err.to_string().contains("without a name"), "{err}");
    drop(coord);
    // The readers' mappings outlive the creator.
    let mut got = [0u8; 40];
    rb.read(1, 8, &mut got, sum)
        .expect("read after the creator went");
}

#[test]
fn the_incremental_checksum_is_the_checksum_whatever_the_pieces() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 256) as u8).collect();
    for cuts in [
        vec![],
        vec![1],
        vec![31, 32, 33],
        vec![32, 64, 100, 999],
        vec![5, 6, 7, 500],
    ] {
        let mut sum = Checksum::new();
        let mut from = 0;
        for &c in cuts.iter().chain([data.len()].iter()) {
            sum.update(&data[from..c]);
            from = c;
        }
        assert_eq!(sum.finish(), checksum(&data), "cut at {cuts:?}");
    }
}

#[test]
fn copies_take_the_checksum_of_what_they_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, _) = Segment::create(dir.path(), 4096, 2).expect("create");
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 256) as u8).collect();
    for (start, len) in [(0, 0), (0, 31), (0, 32), (1, 64), (3, 997), (0, 1000)] {
        let src = &data[start..start + len];
        let sum = seg.write(0, 8, src).expect("write");
        assert_eq!(sum, checksum(src), "write of {len} bytes from {start}");
        let mut out = vec![0xaau8; len];
        seg.read(0, 8, &mut out, sum).expect("read");
        assert_eq!(out, src, "read of {len} bytes from {start}");
    }
    // 27 values: three whole 32-byte words and three values after them.
    let a: Vec<f32> = (0..27).map(|i| i as f32 * 0.5 - 3.0).collect();
    let b: Vec<f32> = (0..27).map(|i| 100.0 + i as f32).collect();
    let (sa, sb) = (
        seg.write(0, 64, &f32_le(&a)).expect("write a"),
        seg.write(1, 64, &f32_le(&b)).expect("write b"),
    );
    let (mut out, mut other) = (vec![0f32; 27], vec![0f32; 27]);
    seg.copy_f32(0, 64, &mut out).expect("copy a");
    seg.copy_f32(1, 64, &mut other).expect("copy b");
    assert_eq!((&out, &other), (&a, &b));
    seg.copy_f32(1, 4000, &mut other).expect_err("past the end");
    // Floats fed in two pieces, the second starting inside a word: the written bytes' checksum.
    let mut c = Checksum::new();
    c.update_f32(&a[..5]);
    c.update_f32(&a[5..]);
    assert_eq!(c.finish(), sa);
    assert_ne!(sa, sb);
    // Longer than a block of the copies: the same.
    let long: Vec<u8> = (0..40_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let (big, _) = Segment::create(dir.path(), long.len(), 1).expect("create");
    let sum = big.write(0, 0, &long).expect("write long");
    assert_eq!(sum, checksum(&long));
    let mut got = vec![0u8; long.len()];
    big.read(0, 0, &mut got, sum).expect("read long");
    assert_eq!(got, long);
}

#[test]
fn a_chunk_is_checked_where_it_lies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, _) = Segment::create(dir.path(), 4096, 1).expect("create");
    let mut values: Vec<f32> = (0..19).map(|i| i as f32).collect();
    let sum = seg.write(0, 0, &f32_le(&values)).expect("write");
    assert_eq!(seg.check_f32(0, 0, 76, sum).expect("check"), None);
    let err = seg
        .check_f32(0, 0, 76, sum ^ 1)
        .expect_err("another checksum");
    assert!(err.to_string().contains("checksum"), "{err}");
    // A NaN among the whole words, an infinity after them.
    for (at, bad) in [(3, f32::NAN), (17, f32::NEG_INFINITY)] {
        values[at] = bad;
        let sum = seg.write(0, 0, &f32_le(&values)).expect("write");
        let (i, v) = seg.check_f32(0, 0, 76, sum).expect("check").expect("found");
        assert_eq!(i, at.min(3));
        assert!(!v.is_finite());
    }
}

#[test]
fn the_checksum_sees_order_and_length() {
    let a: Vec<u8> = (0..64).collect();
    let mut b = a.clone();
    b.swap(0, 8);
    assert_ne!(checksum(&a), checksum(&b), "words swapped");
    assert_ne!(checksum(&a[..63]), checksum(&a[..64]));
    assert_ne!(checksum(&[0; 32]), checksum(&[0; 40]), "zero padding");
    assert_eq!(checksum(&a), checksum(&a.clone()));
}

#[test]
fn f32_regions_take_the_writes_of_a_segment_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, nonce) = Segment::create(dir.path(), 4000, 2).expect("create");
    let seg = Arc::new(seg);
    let reader = Segment::open(seg.path(), nonce, 4000, 2, Access::ReadOnly).expect("reader");
    let err = F32Regions::take(Arc::new(reader), 100).expect_err("read-only");
    assert!(err.to_string().contains("writable"), "{err}");
    F32Regions::take(Arc::clone(&seg), 1001).expect_err("no room");
    let mut regions = F32Regions::take(Arc::clone(&seg), 1000).expect("take");
    F32Regions::take(Arc::clone(&seg), 1000).expect_err("taken twice");
    let err = seg
        .write(0, 0, &[1])
        .expect_err("the segment's own writes are refused");
    assert!(err.to_string().contains("F32Regions"), "{err}");
    regions.region_mut(0).fill(1.5);
    {
        let (old, new) = regions.split(0, 1).expect("split");
        for (n, o) in new.iter_mut().zip(old) {
            *n = o * 2.0;
        }
    }
    regions.split(1, 3).expect_err("the same region");
    assert!(regions.region(1).iter().all(|&v| v == 3.0));
    assert_eq!(regions.region(3), regions.region(1), "modulo the regions");
    // What other processes read, checked.
    let sum = checksum(&f32_le(&[3.0; 1000]));
    let mut got = vec![0u8; 4000];
    seg.read(1, 0, &mut got, sum).expect("read region 1");
}
