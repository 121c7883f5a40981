//! Storages and tensor views as a PyTorch checkpoint describes them (storage class, key,
//! element count; storage offset, size and stride of each tensor), and the conversion of one
//! view of raw little-endian storage bytes into a contiguous [`NamedTensor`]. Every index is
//! checked against the storage, so a damaged checkpoint gives an error naming the tensor.
use crate::model::state::{NamedTensor, TensorData};

/// Element type of a storage, from its class name (`torch.FloatStorage`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    C64,
    C128,
}

impl StorageDtype {
    /// The dtype of a storage class; `module` is `torch` (or `torch.cuda` in old files).
    pub(crate) fn from_class(module: &str, name: &str) -> Option<Self> {
        if module != "torch" && module != "torch.cuda" {
            return None;
        }
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            "ComplexFloatStorage" => Self::C64,
            "ComplexDoubleStorage" => Self::C128,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub(crate) fn elem_size(self) -> usize {
        match self {
            Self::F64 | Self::I64 | Self::C64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
            Self::C128 => 16,
        }
    }

    /// PyTorch's name of the dtype.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::Bool => "bool",
            Self::C64 => "complex64",
            Self::C128 => "complex128",
        }
    }
}

/// A storage named by a persistent id.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StorageRef {
    /// Element type.
    pub(crate) dtype: StorageDtype,
    /// Key of the storage's bytes in the container (`data/<key>` or the legacy key list).
    pub(crate) key: String,
    /// Element count the persistent id announces (of the whole storage in legacy files).
    pub(crate) numel: u64,
    /// Legacy view of the storage: (offset, length) in elements.
    pub(crate) view: Option<(u64, u64)>,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub(crate) storage: StorageRef,
    /// Offset of element 0 in the storage, in elements.
    pub(crate) offset: u64,
    pub(crate) size: Vec<u64>,
    pub(crate) stride: Vec<i64>,
}

/// Tensors whose element count exceeds their storage (zero strides) are refused above this.
const MAX_BROADCAST_NUMEL: usize = 1 << 24;

fn usize_of(v: u64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} {v} is too large"))
}

/// Element indices of a strided view, in row-major order.
fn strided_indices(offset: usize, size: &[usize], stride: &[usize], numel: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(numel);
    let mut pos = vec![0usize; size.len()];
    let mut idx = offset;
    for _ in 0..numel {
        out.push(idx);
        // Odometer step from the last dimension. The steps past the end of a dimension (and the
        // final one) may leave the storage, so they wrap; every pushed index was checked.
        for d in (0..size.len()).rev() {
            pos[d] += 1;
            idx = idx.wrapping_add(stride[d]);
            if pos[d] < size[d] {
                break;
            }
            idx = idx.wrapping_sub(stride[d].wrapping_mul(size[d]));
            pos[d] = 0;
        }
    }
    out
}

fn decode<T, const N: usize>(
    bytes: &[u8],
    contiguous: Option<(usize, usize)>,
    indices: &[usize],
    conv: fn([u8; N]) -> T,
) -> Vec<T> {
    let at = |i: usize| {
        let mut a = [0u8; N];
        a.copy_from_slice(&bytes[i * N..i * N + N]);
        conv(a)
    };
    match contiguous {
        Some((start, n)) => (start..start + n).map(at).collect(),
        None => indices.iter().map(|&i| at(i)).collect(),
    }
}

/// The tensor `t` called `name` as a contiguous [`NamedTensor`], from the raw bytes of its
/// (root) storage.
pub(crate) fn materialize(name: &str, t: &TensorRef, root: &[u8]) -> Result<NamedTensor, String> {
    let fail = |msg: String| Err(format!("tensor `{name}`: {msg}"));
    let dtype = t.storage.dtype;
    let es = dtype.elem_size();
    let root_elems = root.len() / es;
    let (base, avail) = match t.storage.view {
        None => (0usize, root_elems),
        Some((off, len)) => {
            let (off, len) = (usize_of(off, "view offset")?, usize_of(len, "view length")?);
            match off.checked_add(len) {
                Some(end) if end <= root_elems => (off, len),
                _ => {
                    return fail(format!(
                        "storage `{}` view [{off}, {off}+{len}) exceeds its {root_elems} elements",
                        t.storage.key
                    ));
                }
            }
        }
    };
    let bytes = &root[base * es..(base + avail) * es];
    if t.size.len() != t.stride.len() {
        return fail(format!(
            "size {:?} and stride {:?} have different lengths",
            t.size, t.stride
        ));
    }
    let shape: Vec<usize> = t
        .size
        .iter()
        .map(|&s| usize_of(s, "dimension"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tensor `{name}`: {e}"))?;
    let mut stride = Vec::with_capacity(shape.len());
    for &s in &t.stride {
        match usize::try_from(s) {
            Ok(s) => stride.push(s),
            Err(_) => return fail(format!("impossible stride {:?} (negative)", t.stride)),
        }
    }
    let numel = match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) => n,
        None => return fail(format!("shape {shape:?} overflows")),
    };
    let offset =
        usize_of(t.offset, "storage offset").map_err(|e| format!("tensor `{name}`: {e}"))?;
    let data_of = |contig: Option<(usize, usize)>, idx: &[usize]| -> Result<TensorData, String> {
        Ok(match dtype {
            StorageDtype::F32 => TensorData::F32(decode(bytes, contig, idx, f32::from_le_bytes)),
            StorageDtype::F64 => TensorData::F64(decode(bytes, contig, idx, f64::from_le_bytes)),
            StorageDtype::I64 => TensorData::I64(decode(bytes, contig, idx, i64::from_le_bytes)),
            other => {
                return Err(format!(
                    "tensor `{name}` has dtype {}; only float32, float64 and int64 are supported",
                    other.name()
                ));
            }
        })
    };
    let data = if numel == 0 {
        data_of(Some((0, 0)), &[])?
    } else {
        // Largest element index the view touches.
        let mut last = Some(offset);
        for (&d, &s) in shape.iter().zip(&stride) {
            last = last.and_then(|l| (d - 1).checked_mul(s).and_then(|x| l.checked_add(x)));
        }
        let Some(last) = last else {
            return fail(format!(
                "impossible strides {stride:?} for shape {shape:?} (overflow)"
            ));
        };
        if last >= avail {
            return fail(format!(
                "storage `{}` too short: the tensor (offset {offset}, shape {shape:?}, stride \
                 {stride:?}) reaches element {last}, the storage has {avail} elements",
                t.storage.key
            ));
        }
        if numel > avail.max(MAX_BROADCAST_NUMEL) {
            return fail(format!(
                "shape {shape:?} has {numel} elements from a storage of {avail} \
                 (impossible strides {stride:?})"
            ));
        }
        let mut expect = 1usize;
        let mut contiguous = true;
        for (&d, &s) in shape.iter().zip(&stride).rev() {
            if d != 1 && s != expect {
                contiguous = false;
            }
            expect *= d;
        }
        if contiguous {
            data_of(Some((offset, numel)), &[])?
        } else {
            data_of(None, &strided_indices(offset, &shape, &stride, numel))?
        }
    };
    NamedTensor::new(name, shape, data).map_err(|e| e.to_string())
}
