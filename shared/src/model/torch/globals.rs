//! What the pickle machine does with the few globals a PyTorch checkpoint needs; nothing is ever
//! imported or executed. Recognised calls: `torch._utils._rebuild_tensor_v2` (and the older
//! `_rebuild_tensor`), `torch._utils._rebuild_parameter(_with_state)`,
//! `collections.OrderedDict`, NumPy scalars (`numpy.core.multiarray.scalar` or
//! `numpy._core.multiarray.scalar` of a `numpy.dtype`) and `_codecs.encode(str, 'latin1')`;
//! persistent ids `('storage', <torch.XStorage>, key, location, numel[, view])` become storage
//! references (the location, such as `cuda:0`, is ignored). Everything else stays inert.
use super::tensor::{StorageDtype, StorageRef, TensorRef};
use super::value::{Dict, Heap, Id, Obj, set_byteorder};

fn global_name(heap: &Heap, id: Id) -> Option<(&str, &str)> {
    match heap.get(id) {
        Obj::Global { module, name } => Some((module, name)),
        _ => None,
    }
}

/// The result of `callable(*args)`.
pub(crate) fn reduce(heap: &mut Heap, callable: Id, args: Id) -> Obj {
    let inert = Obj::Object { callable };
    let Some((module, name)) = global_name(heap, callable) else {
        return inert;
    };
    let Some(argv) = heap.as_seq(args).map(<[Id]>::to_vec) else {
        return inert;
    };
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => rebuild_tensor(heap, &argv),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match argv.first().map(|&d| heap.get(d)) {
                Some(t @ Obj::Tensor(_)) => t.clone(),
                _ => Obj::Broken("parameter without a tensor".into()),
            }
        }
        ("collections", "OrderedDict") => ordered_dict(heap, &argv),
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => numpy_scalar(heap, &argv),
        ("numpy", "dtype") => match argv.first().and_then(|&d| heap.as_str(d)) {
            Some(descr) => Obj::NumpyDtype {
                descr: descr.to_string(),
                byteorder: None,
            },
            None => inert,
        },
        ("_codecs", "encode") => encode(heap, &argv).unwrap_or(inert),
        _ => inert,
    }
}

/// The result of `cls.__new__(cls, *args)`.
pub(crate) fn new_object(heap: &Heap, cls: Id) -> Obj {
    if global_name(heap, cls) == Some(("collections", "OrderedDict")) {
        return Obj::Dict(Dict::default());
    }
    Obj::Object { callable: cls }
}

/// `BUILD`: a `numpy.dtype` takes its byte order from its state; every other object ignores it
/// (an `OrderedDict`'s `_metadata` attribute, the state of inert objects).
pub(crate) fn build(heap: &mut Heap, target: Id, state: Id) {
    if let Obj::NumpyDtype { .. } = heap.get(target) {
        let order = heap
            .as_seq(state)
            .and_then(|s| s.get(1).copied())
            .and_then(|o| heap.as_str(o))
            .map(str::to_string);
        if let Some(order) = order {
            set_byteorder(heap, target, order);
        }
    }
}

fn non_negative(heap: &Heap, id: Id) -> Option<u64> {
    heap.as_int(id).and_then(|v| u64::try_from(v).ok())
}

/// A storage reference from a persistent id.
pub(crate) fn persistent_load(heap: &Heap, pid: Id) -> Result<Obj, String> {
    let bad = || format!("unsupported persistent id (a {})", heap.get(pid).kind(heap));
    let t = heap.as_seq(pid).ok_or_else(bad)?;
    if t.len() < 5 || heap.as_str(t[0]) != Some("storage") {
        return Err(bad());
    }
    let dtype = match global_name(heap, t[1]) {
        Some((m, n)) => StorageDtype::from_class(m, n)
            .ok_or_else(|| format!("unknown storage class {m}.{n}"))?,
        None => return Err(format!("storage class is a {}", heap.get(t[1]).kind(heap))),
    };
    let key = match heap.get(t[2]) {
        Obj::Str(s) => s.clone(),
        Obj::Int(v) => v.to_string(),
        other => return Err(format!("storage key is a {}", other.kind(heap))),
    };
    let numel = non_negative(heap, t[4])
        .ok_or_else(|| format!("storage `{key}`: element count is not a non-negative integer"))?;
    let view = match t.get(5).map(|&v| heap.get(v)) {
        None | Some(Obj::None) => None,
        Some(Obj::Tuple(v)) if v.len() == 3 => {
            match (non_negative(heap, v[1]), non_negative(heap, v[2])) {
                (Some(off), Some(len)) => Some((off, len)),
                _ => return Err(format!("storage `{key}`: malformed view metadata")),
            }
        }
        Some(_) => return Err(format!("storage `{key}`: malformed view metadata")),
    };
    Ok(Obj::Storage(StorageRef {
        dtype,
        key,
        numel,
        view,
    }))
}

fn int_tuple<T: TryFrom<i64>>(heap: &Heap, id: Id) -> Option<Vec<T>> {
    heap.as_seq(id)?
        .iter()
        .map(|&v| heap.as_int(v).and_then(|x| T::try_from(x).ok()))
        .collect()
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
fn rebuild_tensor(heap: &Heap, argv: &[Id]) -> Obj {
    if argv.len() < 4 {
        return Obj::Broken(format!("tensor rebuilt from {} arguments", argv.len()));
    }
    let storage = match heap.get(argv[0]) {
        Obj::Storage(s) => s.clone(),
        other => return Obj::Broken(format!("tensor rebuilt from a {}", other.kind(heap))),
    };
    let Some(offset) = non_negative(heap, argv[1]) else {
        return Obj::Broken("storage offset is not a non-negative integer".into());
    };
    let (Some(size), Some(stride)) = (
        int_tuple::<u64>(heap, argv[2]),
        int_tuple::<i64>(heap, argv[3]),
    ) else {
        return Obj::Broken("size or stride is not a tuple of non-negative integers".into());
    };
    Obj::Tensor(TensorRef {
        storage,
        offset,
        size,
        stride,
    })
}

/// `OrderedDict()` or `OrderedDict([(key, value), ...])`.
fn ordered_dict(heap: &mut Heap, argv: &[Id]) -> Obj {
    let pairs: Vec<(Id, Id)> = match argv.first() {
        None => Vec::new(),
        Some(&items) => match heap.as_seq(items) {
            Some(seq) => seq
                .iter()
                .filter_map(|&p| match heap.as_seq(p) {
                    Some([k, v]) => Some((*k, *v)),
                    _ => None,
                })
                .collect(),
            None => return Obj::Broken("OrderedDict from a non-sequence".into()),
        },
    };
    if pairs.is_empty() {
        return Obj::Dict(Dict::default());
    }
    let d = heap.alloc(Obj::Dict(Dict::default()));
    for (k, v) in pairs {
        heap.insert(d, k, v);
    }
    heap.get(d).clone()
}

/// `numpy.core.multiarray.scalar(dtype, bytes)`: a Python float or int for the 4- and 8-byte
/// float and integer dtypes; inert otherwise.
fn numpy_scalar(heap: &Heap, argv: &[Id]) -> Obj {
    let broken = |m: &str| Obj::Broken(format!("numpy scalar: {m}"));
    let (Some(&dt), Some(&raw)) = (argv.first(), argv.get(1)) else {
        return broken("needs a dtype and bytes");
    };
    let Obj::NumpyDtype { descr, byteorder } = heap.get(dt) else {
        return broken("first argument is not a numpy.dtype");
    };
    let bytes: &[u8] = match heap.get(raw) {
        Obj::Bytes(b) => b,
        Obj::Str(s) => s.as_bytes(),
        _ => return broken("second argument is not bytes"),
    };
    let big = byteorder.as_deref() == Some(">");
    let mut b = bytes.to_vec();
    if big {
        b.reverse();
    }
    let kind = descr.trim_start_matches(['<', '>', '=', '|']);
    match (kind, b.len()) {
        ("f8", 8) => Obj::Float(f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        ("f4", 4) => Obj::Float(f32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as f64),
        ("i8", 8) => Obj::Int(i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        ("i4", 4) => Obj::Int(i32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as i64),
        _ => broken(&format!(
            "dtype {descr} with {} bytes is not interpreted",
            bytes.len()
        )),
    }
}

/// `_codecs.encode(text, encoding)`: how protocol 2 writes `bytes`.
fn encode(heap: &Heap, argv: &[Id]) -> Option<Obj> {
    let text = heap.as_str(*argv.first()?)?;
    let enc = argv.get(1).and_then(|&e| heap.as_str(e)).unwrap_or("utf-8");
    match enc.to_ascii_lowercase().as_str() {
        "latin1" | "latin-1" | "iso-8859-1" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .map(Obj::Bytes),
        "utf-8" | "utf8" => Some(Obj::Bytes(text.as_bytes().to_vec())),
        _ => None,
    }
}
