//! Unit tests of the PyTorch loader on pickles and legacy files built here byte by byte (the
//! real `torch.save` files are exercised by tests/tests/checkpoints.rs): opcodes and shared
//! references, tensor views (offset, stride, legacy views), NumPy scalars, and errors that name
//! the file and tensor instead of panicking.
use std::io::Write;

use super::pickle::unpickle;
use super::tensor::{StorageDtype, StorageRef, TensorRef, materialize};
use super::value::Obj;
use super::{Container, load_pth};
use crate::model::state::TensorData;

/// A tiny pickle writer (protocol 2 opcodes plus a few of protocol 4).
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn op(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }
    fn proto(&mut self) -> &mut Self {
        self.op(0x80).op(2)
    }
    fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.op(b'K').op(v as u8)
        } else if (0..65536).contains(&v) {
            self.op(b'M');
            self.0.extend((v as u16).to_le_bytes());
            self
        } else if i32::try_from(v).is_ok() {
            self.op(b'J');
            self.0.extend((v as i32).to_le_bytes());
            self
        } else {
            self.op(0x8a).op(8);
            self.0.extend(v.to_le_bytes());
            self
        }
    }
    fn s(&mut self, v: &str) -> &mut Self {
        self.op(b'X');
        self.0.extend((v.len() as u32).to_le_bytes());
        self.0.extend(v.as_bytes());
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(b'c');
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
        self
    }
    fn put(&mut self, k: u8) -> &mut Self {
        self.op(b'q').op(k)
    }
    fn get(&mut self, k: u8) -> &mut Self {
        self.op(b'h').op(k)
    }
    fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.op(b'(');
        for &x in v {
            self.int(x);
        }
        self.op(b't')
    }
    /// `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        class: &str,
        key: &str,
        numel: i64,
        off: i64,
        size: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        self.op(b'(')
            .s("storage")
            .global("torch", class)
            .s(key)
            .s("cuda:0")
            .int(numel);
        self.op(b't')
            .op(b'Q')
            .int(off)
            .ints(size)
            .ints(stride)
            .op(0x89);
        self.global("collections", "OrderedDict").op(b')').op(b'R');
        self.op(b't').op(b'R')
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b'.');
        std::mem::take(&mut self.0)
    }
}

fn storage(dtype: StorageDtype, numel: u64) -> StorageRef {
    StorageRef {
        dtype,
        key: "7".into(),
        numel,
        view: None,
    }
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

#[test]
fn memo_shares_containers_and_setitems_after_put_are_visible() {
    // d = {}; memo[0] = d; l = [d, d]; then d['a'] = -300 after l was built.
    let mut p = P::default();
    p.proto()
        .op(b'}')
        .put(0)
        .op(b']')
        .put(1)
        .op(b'(')
        .get(0)
        .get(0)
        .op(b'e');
    p.op(b'0'); // drop the list, keep the dict
    p.s("a").int(-300).op(b's').op(b'0').get(1).op(0x8a).op(10);
    p.0.extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    p.op(b'a').op(b'G');
    p.0.extend(1.5f64.to_be_bytes());
    p.op(b'a');
    let up = unpickle(&p.stop(), 0).unwrap();
    let h = &up.heap;
    let items = h.as_seq(up.root).unwrap().to_vec();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0], items[1], "both list items are the same dict");
    let d = h.as_dict(items[0]).unwrap();
    assert_eq!(h.dict_get(d, "a").and_then(|v| h.as_int(v)), Some(-300));
    assert!(matches!(h.get(items[2]), Obj::BigInt(b) if b.len() == 10));
    assert!(matches!(h.get(items[3]), Obj::Float(f) if *f == 1.5));
}

#[test]
fn protocol4_opcodes_and_numpy_scalar() {
    // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, SHORT_BINBYTES; a big-endian f8 scalar.
    let mut p = P::default();
    p.op(0x80).op(4).op(0x95);
    p.0.extend(0u64.to_le_bytes());
    p.op(0x8c).op(5);
    p.0.extend(b"numpy");
    p.op(0x94).op(0x8c).op(5);
    p.0.extend(b"dtype");
    p.op(0x93).op(0x94);
    p.op(0x8c).op(2);
    p.0.extend(b"f8");
    p.op(0x89).op(0x88).op(0x87).op(b'R');
    p.op(b'(')
        .int(3)
        .s(">")
        .op(b'N')
        .op(b'N')
        .op(b'N')
        .int(-1)
        .int(-1)
        .int(0)
        .op(b't')
        .op(b'b');
    p.op(0x94).op(b'0'); // memo 2 = the dtype instance; use it through BINGET below
    p.global("numpy._core.multiarray", "scalar")
        .op(b'h')
        .op(2)
        .op(b'C')
        .op(8);
    p.0.extend(2.25f64.to_be_bytes());
    p.op(0x86).op(b'R');
    let up = unpickle(&p.stop(), 0).unwrap();
    assert!(matches!(up.heap.get(up.root), Obj::Float(f) if *f == 2.25));
}

#[test]
fn codecs_encode_gives_latin1_bytes() {
    let mut p = P::default();
    p.proto()
        .global("_codecs", "encode")
        .s("\u{98}L\u{fb}")
        .s("latin1")
        .op(0x86)
        .op(b'R');
    let up = unpickle(&p.stop(), 0).unwrap();
    assert!(matches!(up.heap.get(up.root), Obj::Bytes(b) if b == &[0x98, b'L', 0xfb]));
}

#[test]
fn unknown_globals_stay_inert_and_unknown_opcodes_are_named() {
    let mut p = P::default();
    p.proto()
        .global("os", "system")
        .s("rm -rf /")
        .op(0x85)
        .op(b'R');
    let up = unpickle(&p.stop(), 0).unwrap();
    assert_eq!(up.heap.get(up.root).kind(&up.heap), "os.system object");

    let mut p = P::default();
    p.proto().int(1).op(b'I'); // INT (text protocol 0) is not supported
    let err = unpickle(&p.stop(), 0).unwrap_err();
    assert!(
        err.contains("opcode 0x49") && err.contains("byte 4"),
        "{err}"
    );
}

#[test]
fn every_prefix_of_a_pickle_is_an_error() {
    let mut p = P::default();
    p.proto()
        .op(b'}')
        .put(0)
        .s("w")
        .tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]);
    p.op(b's');
    let full = p.stop();
    assert!(unpickle(&full, 0).is_ok());
    for n in 0..full.len() {
        assert!(unpickle(&full[..n], 0).is_err(), "prefix of {n} bytes");
    }
}

#[test]
fn strided_view_with_offset_is_made_contiguous() {
    // Storage 0..10; view offset 1, size [2, 3], stride [1, 2] (a transposed 3x2 block).
    let bytes = f32_bytes((0..10).map(|i| i as f32));
    let t = TensorRef {
        storage: storage(StorageDtype::F32, 10),
        offset: 1,
        size: vec![2, 3],
        stride: vec![1, 2],
    };
    let nt = materialize("x", &t, &bytes).unwrap();
    assert_eq!(nt.shape, vec![2, 3]);
    assert_eq!(nt.data, TensorData::F32(vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]));
    // A zero stride repeats; a scalar reads one element at the offset.
    let t0 = TensorRef {
        size: vec![3],
        stride: vec![0],
        offset: 9,
        ..t.clone()
    };
    assert_eq!(
        materialize("x", &t0, &bytes).unwrap().data,
        TensorData::F32(vec![9.0; 3])
    );
    let ts = TensorRef {
        size: vec![],
        stride: vec![],
        offset: 4,
        ..t.clone()
    };
    let s = materialize("x", &ts, &bytes).unwrap();
    assert_eq!((s.shape.len(), s.data), (0, TensorData::F32(vec![4.0])));
    // A huge stride on a dimension of size 1 is never followed.
    let th = TensorRef {
        offset: 0,
        size: vec![2, 1, 2],
        stride: vec![1, 1 << 62, 2],
        ..t.clone()
    };
    assert_eq!(
        materialize("x", &th, &bytes).unwrap().data,
        TensorData::F32(vec![0.0, 2.0, 1.0, 3.0])
    );
    // A legacy view: elements [5, 9) of the root storage.
    let mut tv = TensorRef {
        offset: 1,
        size: vec![3],
        stride: vec![1],
        ..t.clone()
    };
    tv.storage.view = Some((5, 4));
    assert_eq!(
        materialize("x", &tv, &bytes).unwrap().data,
        TensorData::F32(vec![6.0, 7.0, 8.0])
    );
    // int64 and float64 storages.
    let ib: Vec<u8> = [-5i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    let ti = TensorRef {
        storage: storage(StorageDtype::I64, 2),
        offset: 1,
        size: vec![],
        stride: vec![],
    };
    assert_eq!(
        materialize("n", &ti, &ib).unwrap().data,
        TensorData::I64(vec![7])
    );
    let fb: Vec<u8> = [0.25f64, -3.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tf = TensorRef {
        storage: storage(StorageDtype::F64, 2),
        offset: 0,
        size: vec![2],
        stride: vec![1],
    };
    assert_eq!(
        materialize("d", &tf, &fb).unwrap().data,
        TensorData::F64(vec![0.25, -3.0])
    );
}

#[test]
fn impossible_views_are_errors_naming_the_tensor() {
    let bytes = f32_bytes((0..6).map(|i| i as f32));
    let base = TensorRef {
        storage: storage(StorageDtype::F32, 6),
        offset: 0,
        size: vec![2, 3],
        stride: vec![3, 1],
    };
    let cases = [
        (
            TensorRef {
                offset: 1,
                ..base.clone()
            },
            "too short",
        ),
        (
            TensorRef {
                stride: vec![3, -1],
                ..base.clone()
            },
            "negative",
        ),
        (
            TensorRef {
                stride: vec![1],
                ..base.clone()
            },
            "different lengths",
        ),
        (
            TensorRef {
                size: vec![u64::MAX, 2],
                stride: vec![0, 1],
                ..base.clone()
            },
            "overflow",
        ),
        (
            TensorRef {
                size: vec![1 << 40],
                stride: vec![0],
                ..base.clone()
            },
            "impossible strides",
        ),
        (
            TensorRef {
                storage: storage(StorageDtype::F16, 12),
                ..base.clone()
            },
            "float16",
        ),
    ];
    for (t, want) in cases {
        let err = materialize("blk.w", &t, &bytes).unwrap_err();
        assert!(
            err.contains("`blk.w`") && err.contains(want),
            "{want}: {err}"
        );
    }
}

/// A legacy-format file: magic, version, sys_info, the object, key list, storages.
fn legacy_file(little_endian: bool, model_numel: i64, stored: &[f32]) -> Vec<u8> {
    let mut out = P::default();
    out.proto().op(0x8a).op(10);
    out.0
        .extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.op(b'.');
    out.proto().int(1001).op(b'.');
    out.proto()
        .op(b'}')
        .s("protocol_version")
        .int(1001)
        .op(b's')
        .s("little_endian");
    out.op(if little_endian { 0x88 } else { 0x89 })
        .op(b's')
        .op(b'.');
    out.proto()
        .op(b'}')
        .s("epoch")
        .int(3)
        .op(b's')
        .s("model")
        .global("collections", "OrderedDict");
    out.op(b')').op(b'R').s("lin.weight");
    out.tensor(
        "FloatStorage",
        "94011",
        model_numel,
        0,
        &[1, model_numel],
        &[model_numel, 1],
    );
    out.op(b's').op(b's').s("valid_loss").op(b'G');
    out.0.extend(0.5f64.to_be_bytes());
    out.op(b's').op(b'.');
    out.proto().op(b']').s("94011").op(b'a').op(b'.');
    out.0.extend((stored.len() as u64).to_le_bytes());
    out.0.extend(f32_bytes(stored.iter().copied()));
    out.0
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn handmade_legacy_file_loads_and_its_damage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write_tmp(&dir, "ok.pth", &legacy_file(true, 3, &[1.0, 2.0, 3.0]));
    let ck = load_pth(&ok).unwrap();
    assert_eq!(ck.container, Container::Legacy);
    assert_eq!(
        (ck.epoch, ck.valid_loss, ck.has_optimizer),
        (Some(3), Some(0.5), false)
    );
    let w = ck.state_dict.get("lin.weight").unwrap();
    assert_eq!(
        (w.shape.clone(), w.data.clone()),
        (vec![1, 3], TensorData::F32(vec![1.0, 2.0, 3.0]))
    );

    let short = write_tmp(&dir, "short.pth", &legacy_file(true, 4, &[1.0, 2.0, 3.0]));
    let err = load_pth(&short).unwrap_err().to_string();
    assert!(
        err.contains("short.pth") && err.contains("`lin.weight`") && err.contains("too short"),
        "{err}"
    );

    let big = write_tmp(&dir, "big.pth", &legacy_file(false, 3, &[1.0, 2.0, 3.0]));
    let err = load_pth(&big).unwrap_err().to_string();
    assert!(
        err.contains("big.pth") && err.contains("big-endian"),
        "{err}"
    );

    let full = legacy_file(true, 3, &[1.0, 2.0, 3.0]);
    for n in 0..full.len() {
        let p = write_tmp(&dir, "cut.pth", &full[..n]);
        let err = load_pth(&p)
            .expect_err("a truncated file must not load")
            .to_string();
        assert!(err.contains("cut.pth"), "{n}: {err}");
    }
}
