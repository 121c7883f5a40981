//! Reading PyTorch checkpoints (`torch.save` files) without Python: our own pickle machine
//! (`pickle` over the values of `value`, no code execution; `globals` says what the few
//! recognised globals mean), the two containers, zip (`zipfmt`, PyTorch >= 1.6) and legacy
//! (`legacy`, older PyTorch such as the 1.2 the seed's authors used), and the conversion of
//! strided storage views into contiguous tensors (`tensor`).
//!
//! Two layouts of the saved object are accepted:
//! - the seed's training checkpoint: a dict whose `model` key holds the state dict, with
//!   optional `epoch` (int), `valid_loss` (a NumPy float64 scalar, a float or a one-element
//!   tensor) and `optimizer` (only its presence is reported; its tensors are never read);
//! - a bare state dict (`torch.save(model.state_dict())`): a non-empty dict whose values are all
//!   tensors. It has no epoch or validation loss.
//!
//! Tensors are rebuilt from their storage offset, size and stride into contiguous row-major
//! values; float32, float64 and int64 are supported. Storage location tags (`cuda:0`) are
//! ignored. Every error names the file, and the tensor or key where one is involved.
mod globals;
mod legacy;
mod pickle;
mod tensor;
mod value;
mod zipfmt;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use self::pickle::Unpickled;
use self::value::{Dict, Heap, Id, Obj};
use crate::model::state::{StateDict, TensorData};
use crate::{Error, Result};

/// Which container a checkpoint came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// A zip archive (`torch.save` since PyTorch 1.6).
    Zip,
    /// The older sequence of pickles followed by raw storages.
    Legacy,
}

/// What a `.pth` file holds, as far as this project needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchCheckpoint {
    /// The model's parameters and buffers, in the file's order.
    pub state_dict: StateDict,
    /// The `epoch` entry of a training checkpoint.
    pub epoch: Option<i64>,
    /// The `valid_loss` entry of a training checkpoint.
    pub valid_loss: Option<f64>,
    /// True when the checkpoint has a non-`None` `optimizer` entry (not read).
    pub has_optimizer: bool,
    /// The container the file used.
    pub container: Container,
}

/// Where a container keeps the raw bytes of each storage.
pub(crate) trait StorageSource {
    /// The bytes of the storage called `key`.
    fn storage(&mut self, key: &str) -> std::result::Result<Cow<'_, [u8]>, String>;
}

/// Reads the PyTorch checkpoint at `path` (zip or legacy container; see the module
/// documentation for the accepted layouts).
pub fn load_pth(path: &Path) -> Result<TorchCheckpoint> {
    let fail = |msg: String| Error::checkpoint(path, msg);
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(4);
    (&mut file)
        .take(4)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    if head.is_empty() {
        return Err(fail("empty file, not a PyTorch checkpoint".into()));
    }
    if head.starts_with(b"PK") {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        let (up, mut source) = zipfmt::open(file).map_err(fail)?;
        return interpret(&up, &mut source, Container::Zip).map_err(fail);
    }
    let mut bytes = head;
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if !legacy::has_magic(&bytes) {
        return Err(fail(
            "not a PyTorch checkpoint (or truncated): neither a zip archive nor a legacy file \
             starting with PyTorch's magic number"
                .into(),
        ));
    }
    let (up, mut source) =
        legacy::open(bytes).map_err(|e| fail(format!("legacy container: {e}")))?;
    interpret(&up, &mut source, Container::Legacy).map_err(fail)
}

fn key_list(heap: &Heap, d: &Dict) -> String {
    let mut shown: Vec<String> = d
        .items
        .iter()
        .take(20)
        .map(|&(k, _)| match heap.get(k) {
            Obj::Str(s) => s.clone(),
            Obj::Int(v) => v.to_string(),
            other => format!("<{}>", other.kind(heap)),
        })
        .collect();
    if d.items.len() > shown.len() {
        shown.push("...".into());
    }
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

fn is_bare_state_dict(heap: &Heap, d: &Dict) -> bool {
    !d.items.is_empty()
        && d.items
            .iter()
            .all(|&(k, v)| heap.as_str(k).is_some() && matches!(heap.get(v), Obj::Tensor(_)))
}

fn interpret(
    up: &Unpickled,
    source: &mut dyn StorageSource,
    container: Container,
) -> std::result::Result<TorchCheckpoint, String> {
    let heap = &up.heap;
    let root = heap.as_dict(up.root).ok_or_else(|| {
        format!(
            "the checkpoint holds a {}, not a dict (expected {{'model': state_dict, ...}} or a \
             state dict; a whole pickled model cannot be read, save `model.state_dict()`)",
            heap.get(up.root).kind(heap)
        )
    })?;
    let (sd_id, bare) = match heap.dict_get(root, "model") {
        Some(m) => (m, false),
        None if is_bare_state_dict(heap, root) => (up.root, true),
        None => {
            return Err(format!(
                "no `model` key holding the state dict, and not a bare state dict; the \
                 top-level keys are: {}",
                key_list(heap, root)
            ));
        }
    };
    let sd = heap.as_dict(sd_id).ok_or_else(|| {
        format!(
            "`model` holds a {}, not a state dict",
            heap.get(sd_id).kind(heap)
        )
    })?;
    let state_dict = read_state_dict(heap, sd, source)?;
    let (epoch, valid_loss, has_optimizer) = if bare {
        (None, None, false)
    } else {
        let epoch = heap.dict_get(root, "epoch").and_then(|e| heap.as_int(e));
        let valid_loss = match heap.dict_get(root, "valid_loss") {
            Some(v) => scalar_f64(heap, v, source)?,
            None => None,
        };
        let opt = heap
            .dict_get(root, "optimizer")
            .is_some_and(|o| !matches!(heap.get(o), Obj::None));
        (epoch, valid_loss, opt)
    };
    Ok(TorchCheckpoint {
        state_dict,
        epoch,
        valid_loss,
        has_optimizer,
        container,
    })
}

fn read_state_dict(
    heap: &Heap,
    sd: &Dict,
    source: &mut dyn StorageSource,
) -> std::result::Result<StateDict, String> {
    let mut out = StateDict::new();
    for &(k, v) in &sd.items {
        let name = heap.as_str(k).ok_or_else(|| {
            format!(
                "state dict key is a {}, not a string",
                heap.get(k).kind(heap)
            )
        })?;
        let t = match heap.get(v) {
            Obj::Tensor(t) => t,
            other => {
                return Err(format!(
                    "state dict entry `{name}` holds a {}, not a tensor",
                    other.kind(heap)
                ));
            }
        };
        let bytes = source
            .storage(&t.storage.key)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        let nt = tensor::materialize(name, t, &bytes)?;
        out.push(nt).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A float from a Python/NumPy number or a one-element float tensor; `None` for other values.
fn scalar_f64(
    heap: &Heap,
    id: Id,
    source: &mut dyn StorageSource,
) -> std::result::Result<Option<f64>, String> {
    Ok(match heap.get(id) {
        Obj::Float(f) => Some(*f),
        Obj::Int(v) => Some(*v as f64),
        Obj::Tensor(t) => {
            let bytes = source
                .storage(&t.storage.key)
                .map_err(|e| format!("valid_loss: {e}"))?;
            let nt = tensor::materialize("valid_loss", t, &bytes)?;
            match nt.data {
                TensorData::F32(v) if v.len() == 1 => Some(v[0] as f64),
                TensorData::F64(v) if v.len() == 1 => Some(v[0]),
                _ => None,
            }
        }
        _ => None,
    })
}
