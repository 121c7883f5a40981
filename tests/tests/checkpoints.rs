//! Loading the committed PyTorch and safetensors fixtures (tests/fixtures/model/, written by
//! scripts/py/make_model_fixtures.py with PyTorch): both `torch.save` containers give the same
//! state dict as `initial.safetensors`; a bare state dict with strided and shared storages
//! loads; our safetensors files round-trip and NumPy's `safetensors` reads them; damaged files
//! (truncated, random, edited zips, no `model` key) are errors that name the file, never panics.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ecg_shared::model::safetensors_io::{load_safetensors, save_safetensors};
use ecg_shared::model::state::{NamedTensor, StateDict, TensorData};
use ecg_shared::model::torch::{Container, load_pth};
use ecg_tests::{python, run_ok, workspace_root};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/model").join(name)
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Asserts that `a` and `b` hold the same names, shapes, dtypes and bit-identical values.
fn assert_same(a: &StateDict, b: &StateDict) {
    assert_eq!(a.len(), b.len());
    for t in a.tensors() {
        let u = b
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!(t.shape, u.shape, "{}", t.name);
        assert_eq!(t.data, u.data, "{}", t.name);
    }
}

fn small_config_keys() -> Vec<(String, Vec<usize>)> {
    let mut keys = vec![("conv1.weight".to_string(), vec![8, 12, 17])];
    let bn = |keys: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            keys.push((format!("{p}.{s}"), vec![c]));
        }
        keys.push((format!("{p}.num_batches_tracked"), vec![]));
    };
    bn(&mut keys, "bn1", 8);
    // (c_in, c_out, skip conv index): block 0 identity, 1 max-pool + conv, 2 conv only,
    // 3 max-pool only.
    let blocks = [
        (8, 8, None),
        (8, 16, Some(1)),
        (16, 24, Some(0)),
        (24, 24, None),
    ];
    for (i, (cin, cout, skip)) in blocks.into_iter().enumerate() {
        let b = format!("resblock1d_{i}");
        keys.push((format!("{b}.conv1.weight"), vec![cout, cin, 17]));
        bn(&mut keys, &format!("{b}.bn1"), cout);
        keys.push((format!("{b}.conv2.weight"), vec![cout, cout, 17]));
        bn(&mut keys, &format!("{b}.bn2"), cout);
        if let Some(k) = skip {
            keys.push((
                format!("{b}.skip_connection.{k}.weight"),
                vec![cout, cin, 1],
            ));
        }
    }
    keys.push(("lin.weight".into(), vec![1, 24 * 8]));
    keys.push(("lin.bias".into(), vec![1]));
    keys
}

#[test]
fn both_containers_load_the_initial_weights() {
    let (initial, meta) = load_safetensors(&fixture("initial.safetensors")).unwrap();
    assert!(meta.contains_key("config"));
    let exp = expected();
    let zip = load_pth(&fixture("model_zip.pth")).unwrap();
    let legacy = load_pth(&fixture("model_legacy.pth")).unwrap();
    assert_eq!(zip.container, Container::Zip);
    assert_eq!(legacy.container, Container::Legacy);
    for ck in [&zip, &legacy] {
        assert_eq!(ck.epoch, exp["epoch"].as_i64());
        // The exact float64 (JSON decimal parsing is not always correctly rounded).
        let bits = exp["valid_loss_bits"].as_u64().unwrap();
        assert_eq!(ck.valid_loss.map(f64::to_bits), Some(bits));
        assert!(ck.has_optimizer);
        // Registration order, names and shapes of the seed's network in the small configuration.
        let got: Vec<(String, Vec<usize>)> = ck
            .state_dict
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(got, small_config_keys());
        assert_same(&ck.state_dict, &initial);
    }
    assert_eq!(zip.state_dict, legacy.state_dict);
    // The batch-norm buffers were moved away from their defaults before saving.
    let nbt = zip
        .state_dict
        .get("resblock1d_2.bn1.num_batches_tracked")
        .unwrap();
    assert!(matches!(&nbt.data, TensorData::I64(v) if v.len() == 1 && v[0] > 0));
    let var = zip
        .state_dict
        .get("bn1.running_var")
        .unwrap()
        .to_f32()
        .unwrap();
    assert!(var.iter().all(|&v| v != 1.0));
}

#[test]
fn bare_state_dict_with_strided_and_shared_storages_loads() {
    let (initial, _) = load_safetensors(&fixture("initial.safetensors")).unwrap();
    let bare = load_pth(&fixture("state_dict_only.pth")).unwrap();
    assert_eq!(
        (bare.epoch, bare.valid_loss, bare.has_optimizer),
        (None, None, false)
    );
    assert_same(&bare.state_dict, &initial);
}

#[test]
fn protocol4_checkpoint_with_float64_and_int64_tensors() {
    let ck = load_pth(&fixture("tiny_p4.pth")).unwrap();
    let exp = expected();
    assert_eq!(ck.epoch, exp["tiny_p4"]["epoch"].as_i64());
    assert_eq!(ck.valid_loss, exp["tiny_p4"]["valid_loss"].as_f64());
    assert!(!ck.has_optimizer, "its optimizer entry is None");
    let sd = &ck.state_dict;
    // torch.arange(6).reshape(2, 3).t(): a transposed (non-contiguous) float64 view.
    let a = sd.get("a.f64").unwrap();
    assert_eq!(a.shape, vec![3, 2]);
    assert_eq!(a.data, TensorData::F64(vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
    let b = sd.get("b.i64").unwrap();
    assert_eq!(b.data, TensorData::I64(vec![-3, 0, 1 << 40]));
    let c = sd.get("c.scalar").unwrap();
    assert_eq!((c.shape.len(), &c.data), (0, &TensorData::F32(vec![2.5])));
}

fn err_of(path: &Path) -> String {
    match load_pth(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_dtype_and_missing_model_key_are_named() {
    let err = err_of(&fixture("half_dtype.pth"));
    assert!(
        err.contains("half_dtype.pth") && err.contains("`w.half`") && err.contains("float16"),
        "{err}"
    );
    let err = err_of(&fixture("no_model_key.pth"));
    assert!(
        err.contains("no_model_key.pth") && err.contains("`model`"),
        "{err}"
    );
    assert!(err.contains("epoch, net, valid_loss"), "{err}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Offsets 0..64, then about 150 spread over the file, then the last 64.
fn cut_points(len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..64.min(len)).collect();
    v.extend((0..150).map(|i| i * len / 150));
    v.extend(len.saturating_sub(64)..len);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn truncated_pth_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "model_zip.pth",
        "model_legacy.pth",
        "state_dict_only.pth",
        "tiny_p4.pth",
    ] {
        let full = std::fs::read(fixture(name)).unwrap();
        for n in cut_points(full.len()) {
            let p = write(dir.path(), &format!("cut_{n}_{name}"), &full[..n]);
            let err = err_of(&p);
            assert!(
                err.contains(&format!("cut_{n}_{name}")),
                "{name} cut at {n}: {err}"
            );
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn random_and_mutated_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    for (i, head) in [&b""[..], b"PK\x03\x04", b"\x80\x02", b"\x80\x02\x8a\x0a"]
        .iter()
        .enumerate()
    {
        let mut bytes = head.to_vec();
        bytes.extend((0..4096).map(|_| rng.random::<u8>()));
        let p = write(dir.path(), &format!("random{i}.pth"), &bytes);
        assert!(err_of(&p).contains(&format!("random{i}.pth")));
    }
    // Random byte edits inside the pickles of the legacy file (its first ~12 KB) must give Ok or
    // an error naming the file.
    let full = std::fs::read(fixture("model_legacy.pth")).unwrap();
    let region = 12_000.min(full.len());
    for k in 0..300 {
        let mut bytes = full.clone();
        for _ in 0..1 + k % 4 {
            let at = rng.random_range(0..region);
            bytes[at] = rng.random::<u8>();
        }
        let p = write(dir.path(), "mutated.pth", &bytes);
        if let Err(e) = load_pth(&p) {
            assert!(e.to_string().contains("mutated.pth"), "{e}");
        }
    }
}

/// Replaces every occurrence of `from` not followed by an ASCII digit (entry names in the local
/// headers and the central directory) with `to` of the same length.
fn rename_entry(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        let next = bytes.get(i + from.len()).copied().unwrap_or(b'/');
        if &bytes[i..i + from.len()] == from && !next.is_ascii_digit() {
            bytes[i..i + from.len()].copy_from_slice(to);
            n += 1;
        }
        i += 1;
    }
    n
}

#[test]
fn edited_zip_archives_are_errors_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("model_zip.pth")).unwrap();

    let mut no_pkl = full.clone();
    assert_eq!(
        rename_entry(&mut no_pkl, b"model_zip/data.pkl", b"model_zip/data.pkX"),
        2
    );
    let err = err_of(&write(dir.path(), "no_pkl.pth", &no_pkl));
    assert!(
        err.contains("no_pkl.pth") && err.contains("data.pkl"),
        "{err}"
    );

    // Storage 5 is the sixth tensor torch.save met: bn1.num_batches_tracked.
    let mut no_storage = full.clone();
    assert_eq!(
        rename_entry(&mut no_storage, b"model_zip/data/5", b"model_zip/data/Z"),
        2
    );
    let err = err_of(&write(dir.path(), "no_storage.pth", &no_storage));
    assert!(
        err.contains("no_storage.pth") && err.contains("storage `5`"),
        "{err}"
    );
    assert!(err.contains("`bn1.num_batches_tracked`"), "{err}");

    // A flipped byte inside a storage entry: the zip CRC check catches it.
    let mut flipped = full.clone();
    let at = full
        .windows(16)
        .position(|w| w == b"model_zip/data/0")
        .unwrap();
    let data_at = at + 16 + 64; // past the name and its alignment padding, inside the data
    flipped[data_at] ^= 0xff;
    let p = write(dir.path(), "flipped.pth", &flipped);
    assert!(err_of(&p).contains("flipped.pth"));
}

fn sample_state_dict() -> StateDict {
    let mut sd = StateDict::new();
    let t = |n: &str, s: Vec<usize>, d| NamedTensor::new(n, s, d).unwrap();
    sd.push(t(
        "conv1.weight",
        vec![2, 1, 3],
        TensorData::F32(vec![0.5, -1.25, 3.0, 1e-7, -0.0, 7.5]),
    ))
    .unwrap();
    sd.push(t(
        "bn1.num_batches_tracked",
        vec![],
        TensorData::I64(vec![123_456_789_012]),
    ))
    .unwrap();
    sd.push(t("x.f64", vec![2], TensorData::F64(vec![0.1, -2.5e300])))
        .unwrap();
    sd.push(t("empty", vec![0, 4], TensorData::F32(vec![])))
        .unwrap();
    sd
}

#[test]
fn safetensors_round_trip_keeps_names_shapes_dtypes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let sd = sample_state_dict();
    let meta: BTreeMap<String, String> = [
        ("ecg.epoch".to_string(), "3".to_string()),
        ("format".into(), "pt".into()),
    ]
    .into();
    let p = dir.path().join("ck.safetensors");
    save_safetensors(&p, &sd, &meta).unwrap();
    let (back, meta_back) = load_safetensors(&p).unwrap();
    assert_same(&back, &sd);
    assert_eq!(meta_back, meta);
    // Overwriting goes through a temporary file that does not stay behind.
    save_safetensors(&p, &back, &BTreeMap::new()).unwrap();
    let (_, none) = load_safetensors(&p).unwrap();
    assert!(none.is_empty());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ck.safetensors")]);
}

/// Prints the file's metadata and, per tensor, dtype, shape and values (floats as their bits).
const READ_WITH_NUMPY: &str = r#"
import json, sys
from safetensors import safe_open
from safetensors.numpy import load_file
d = load_file(sys.argv[1])
meta = safe_open(sys.argv[1], framework="np").metadata()
def values(v):
    flat = v.flatten()
    if v.dtype.kind == "f":
        flat = flat.view("u%d" % v.itemsize)
    return [int(x) for x in flat]
tensors = {k: [str(v.dtype), list(v.shape), values(v)] for k, v in d.items()}
print(json.dumps({"meta": meta, "tensors": tensors}))
"#;

#[test]
fn numpy_safetensors_reads_our_files() {
    let dir = tempfile::tempdir().unwrap();
    let (initial, _) = load_safetensors(&fixture("initial.safetensors")).unwrap();
    let mut sd = sample_state_dict();
    let extra: Vec<NamedTensor> = initial
        .tensors()
        .iter()
        .filter(|t| sd.get(&t.name).is_none())
        .take(6)
        .cloned()
        .collect();
    for t in extra {
        sd.push(t).unwrap();
    }
    let p = dir.path().join("ours.safetensors");
    save_safetensors(
        &p,
        &sd,
        &BTreeMap::from([("k".to_string(), "v".to_string())]),
    )
    .unwrap();
    let out = run_ok(
        Command::new(python())
            .arg("-c")
            .arg(READ_WITH_NUMPY)
            .arg(&p),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["meta"]["k"], "v");
    let got = v["tensors"].as_object().unwrap();
    assert_eq!(got.len(), sd.len());
    for t in sd.tensors() {
        let g = &got[&t.name];
        assert_eq!(g[0], t.data.dtype_name(), "{}", t.name);
        let shape: Vec<usize> = g[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        let vals = g[2].as_array().unwrap();
        let ints: Vec<u64> = vals
            .iter()
            .map(|x| x.as_u64().unwrap_or_else(|| x.as_i64().unwrap() as u64))
            .collect();
        let ours: Vec<u64> = match &t.data {
            TensorData::F32(d) => d.iter().map(|x| x.to_bits() as u64).collect(),
            TensorData::F64(d) => d.iter().map(|x| x.to_bits()).collect(),
            TensorData::I64(d) => d.iter().map(|&x| x as u64).collect(),
        };
        assert_eq!(ints, ours, "{}", t.name);
    }
}
#[test]
fn damaged_safetensors_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(fixture("initial.safetensors")).unwrap();
    for n in cut_points(full.len()) {
        let p = write(dir.path(), &format!("cut{n}.safetensors"), &full[..n]);
        let err = load_safetensors(&p)
            .expect_err("truncated file loaded")
            .to_string();
        assert!(err.contains(&format!("cut{n}.safetensors")), "{n}: {err}");
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let junk: Vec<u8> = (0..2000).map(|_| rng.random::<u8>()).collect();
    let err = load_safetensors(&write(dir.path(), "junk.safetensors", &junk)).unwrap_err();
    assert!(err.to_string().contains("junk.safetensors"), "{err}");
    // A header that declares more bytes than the file has.
    let mut lie = full.clone();
    lie[..8].copy_from_slice(&(u32::MAX as u64).to_le_bytes());
    let err = load_safetensors(&write(dir.path(), "lie.safetensors", &lie)).unwrap_err();
    assert!(err.to_string().contains("lie.safetensors"), "{err}");
}

#[test]
fn parity_fixture_has_what_its_readme_lists() {
    let (p, meta) = load_safetensors(&fixture("parity.safetensors")).unwrap();
    assert!(meta.contains_key("config"));
    for (name, shape) in [
        ("input", vec![4, 12, 256]),
        ("age", vec![4]),
        ("weight", vec![4]),
        ("out_eval", vec![4, 1]),
        ("out_train", vec![4, 1]),
        ("loss", vec![]),
    ] {
        assert_eq!(
            p.get(name).unwrap_or_else(|| panic!("{name}")).shape,
            shape,
            "{name}"
        );
    }
    // Dropout masks (uint8, widened to int64 on load) are 0/1.
    let m = p.get("mask.train.resblock1d_1.dropout2").unwrap();
    assert_eq!(m.shape, vec![4, 16, 32]);
    assert!(matches!(&m.data, TensorData::I64(v) if v.iter().all(|&x| x == 0 || x == 1)));
    for (name, shape) in small_config_keys() {
        assert_eq!(
            p.get(&format!("adam3.{name}")).unwrap().shape,
            shape,
            "adam3.{name}"
        );
        let trainable = !name.contains("running_") && !name.contains("num_batches_tracked");
        assert_eq!(
            p.get(&format!("grad.{name}")).is_some(),
            trainable,
            "grad.{name}"
        );
    }
}
