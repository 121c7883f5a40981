//! Our checkpoints as safetensors files (the `safetensors` crate's format: a JSON header with
//! names, dtypes, shapes and string metadata, then raw little-endian data), readable by
//! `safetensors.torch.load_file` and `safetensors.numpy.load_file` with the same names, so that
//! PyTorch users can `load_state_dict` them. float32, float64 and int64 tensors are written as
//! F32, F64 and I64 (an int64 scalar such as `num_batches_tracked` keeps shape `[]`).
//!
//! Loading returns the tensors in file order (the format sorts them by dtype, then name; callers
//! that need the model's order look tensors up by name). Other dtypes are widened exactly:
//! F16/BF16 to float32, BOOL and the 8/16/32-bit and unsigned integers to int64 (so the uint8
//! dropout masks of the parity fixtures load); anything else is an error naming the tensor.
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::model::state::{NamedTensor, StateDict, TensorData};
use crate::{Error, Result};

fn le_bytes(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn dtype_of(data: &TensorData) -> Dtype {
    match data {
        TensorData::F32(_) => Dtype::F32,
        TensorData::F64(_) => Dtype::F64,
        TensorData::I64(_) => Dtype::I64,
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `sd` with string `metadata` (stored in the header's `__metadata__`; none when empty)
/// to `path`: into a temporary file in the same folder, synced, then renamed over `path`.
pub fn save_safetensors(
    path: &Path,
    sd: &StateDict,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let buffers: Vec<Vec<u8>> = sd.tensors().iter().map(|t| le_bytes(&t.data)).collect();
    let mut views = Vec::with_capacity(buffers.len());
    for (t, b) in sd.tensors().iter().zip(&buffers) {
        let view = TensorView::new(dtype_of(&t.data), t.shape.clone(), b)
            .map_err(|e| Error::checkpoint(path, format!("tensor `{}`: {e}", t.name)))?;
        views.push((t.name.as_str(), view));
    }
    let meta: Option<HashMap<String, String>> = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    let bytes = safetensors::serialize(views, meta).map_err(|e| Error::checkpoint(path, e))?;
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename itself durable; not every platform can sync a directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn widen<const N: usize, T>(bytes: &[u8], conv: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect()
}

fn convert(name: &str, dtype: Dtype, b: &[u8]) -> std::result::Result<TensorData, String> {
    Ok(match dtype {
        Dtype::F32 => TensorData::F32(widen(b, f32::from_le_bytes)),
        Dtype::F64 => TensorData::F64(widen(b, f64::from_le_bytes)),
        Dtype::I64 => TensorData::I64(widen(b, i64::from_le_bytes)),
        Dtype::F16 => TensorData::F32(widen(b, |a| half::f16::from_le_bytes(a).to_f32())),
        Dtype::BF16 => TensorData::F32(widen(b, |a| half::bf16::from_le_bytes(a).to_f32())),
        Dtype::BOOL | Dtype::U8 => TensorData::I64(widen(b, |a: [u8; 1]| a[0] as i64)),
        Dtype::I8 => TensorData::I64(widen(b, |a| i8::from_le_bytes(a) as i64)),
        Dtype::I16 => TensorData::I64(widen(b, |a| i16::from_le_bytes(a) as i64)),
        Dtype::U16 => TensorData::I64(widen(b, |a| u16::from_le_bytes(a) as i64)),
        Dtype::I32 => TensorData::I64(widen(b, |a| i32::from_le_bytes(a) as i64)),
        Dtype::U32 => TensorData::I64(widen(b, |a| u32::from_le_bytes(a) as i64)),
        Dtype::U64 => {
            let v: Vec<u64> = widen(b, u64::from_le_bytes);
            TensorData::I64(
                v.into_iter()
                    .map(i64::try_from)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| format!("tensor `{name}`: uint64 value exceeds int64"))?,
            )
        }
        other => {
            return Err(format!(
                "tensor `{name}` has dtype {other:?}, which is not supported"
            ));
        }
    })
}

/// Reads a safetensors file: its tensors (file order) and its string metadata.
pub fn load_safetensors(path: &Path) -> Result<(StateDict, BTreeMap<String, String>)> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: safetensors::SafeTensorError| {
        Error::checkpoint(
            path,
            format!("not a readable safetensors file (truncated or corrupt?): {e}"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(&bytes).map_err(bad)?;
    let mut sd = StateDict::new();
    for name in header.offset_keys() {
        let view = st.tensor(&name).map_err(bad)?;
        let data =
            convert(&name, view.dtype(), view.data()).map_err(|m| Error::checkpoint(path, m))?;
        let t = NamedTensor::new(name.as_str(), view.shape().to_vec(), data)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        sd.push(t)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    }
    let metadata = header
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((sd, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by the `safetensors` crate itself with dtypes we do not write.
    fn foreign(dir: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let p = dir.join("foreign.safetensors");
        fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
        p
    }

    #[test]
    fn narrower_dtypes_widen_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let h: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let p = foreign(
            dir.path(),
            &[
                ("mask", Dtype::U8, vec![3], vec![0, 1, 255]),
                ("flag", Dtype::BOOL, vec![2], vec![1, 0]),
                ("h", Dtype::F16, vec![2], h),
                ("i", Dtype::I32, vec![], (-7i32).to_le_bytes().to_vec()),
            ],
        );
        let (sd, meta) = load_safetensors(&p).unwrap();
        assert!(meta.is_empty());
        let data = |n: &str| sd.get(n).unwrap().data.clone();
        assert_eq!(data("mask"), TensorData::I64(vec![0, 1, 255]));
        assert_eq!(data("flag"), TensorData::I64(vec![1, 0]));
        assert_eq!(data("h"), TensorData::F32(vec![1.5, -0.25]));
        assert_eq!(data("i"), TensorData::I64(vec![-7]));
        assert!(sd.get("i").unwrap().shape.is_empty());
    }

    #[test]
    fn unsupported_dtype_is_an_error_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = foreign(dir.path(), &[("z.c", Dtype::C64, vec![1], vec![0; 8])]);
        let err = load_safetensors(&p).unwrap_err().to_string();
        assert!(
            err.contains("foreign.safetensors") && err.contains("`z.c`"),
            "{err}"
        );
    }
}
