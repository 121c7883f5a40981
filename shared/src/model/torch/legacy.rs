//! The legacy container of `torch.save` (PyTorch < 1.6, or `_use_new_zipfile_serialization=
//! False`): pickles in sequence — the magic number 0x1950a86a20f9469cfc6c, the protocol version
//! 1001, a `sys_info` dict (`little_endian` must be true), the object (storages as persistent
//! ids `('storage', class, root_key, location, numel, view_metadata)`), the sorted list of
//! storage keys — then, per key in that order, an 8-byte little-endian element count followed by
//! the raw little-endian elements.
use std::borrow::Cow;
use std::collections::HashMap;

use super::StorageSource;
use super::pickle::{Unpickled, unpickle};
use super::tensor::StorageDtype;
use super::value::{Heap, Obj};

const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// A legacy checkpoint read into memory, with the byte range of each storage.
pub(crate) struct LegacySource {
    bytes: Vec<u8>,
    storages: HashMap<String, (usize, usize)>,
}

/// True when `bytes` starts with the legacy magic-number pickle.
pub(crate) fn has_magic(bytes: &[u8]) -> bool {
    match unpickle(bytes, 0) {
        Ok(up) => match up.heap.get(up.root) {
            Obj::BigInt(b) => {
                let mut b = b.as_slice();
                while b.len() > MAGIC.len() && b.last() == Some(&0) {
                    b = &b[..b.len() - 1];
                }
                b == MAGIC
            }
            _ => false,
        },
        Err(_) => false,
    }
}

/// Parses the whole file: returns the object's pickle and its storages.
pub(crate) fn open(bytes: Vec<u8>) -> Result<(Unpickled, LegacySource), String> {
    let magic = unpickle(&bytes, 0)?;
    let version = unpickle(&bytes, magic.end).map_err(|e| format!("protocol version: {e}"))?;
    match version.heap.get(version.root) {
        Obj::Int(PROTOCOL_VERSION) => {}
        other => {
            return Err(format!(
                "legacy protocol version is {}, expected {PROTOCOL_VERSION}",
                match other {
                    Obj::Int(v) => v.to_string(),
                    o => format!("a {}", o.kind(&version.heap)),
                }
            ));
        }
    }
    let sys = unpickle(&bytes, version.end).map_err(|e| format!("sys_info: {e}"))?;
    if let Some(d) = sys.heap.as_dict(sys.root) {
        let le = sys
            .heap
            .dict_get(d, "little_endian")
            .map(|v| sys.heap.get(v));
        if let Some(Obj::Bool(false)) = le {
            return Err("written on a big-endian machine; only little-endian is supported".into());
        }
    }
    let obj = unpickle(&bytes, sys.end).map_err(|e| format!("object pickle: {e}"))?;
    let keys_pickle = unpickle(&bytes, obj.end).map_err(|e| format!("storage key list: {e}"))?;
    let keys = storage_keys(&keys_pickle.heap, keys_pickle.root)?;
    let dtypes = referenced_dtypes(&obj.heap);
    let mut pos = keys_pickle.end;
    let mut storages = HashMap::new();
    for key in keys {
        let dtype = dtypes.get(&key).ok_or_else(|| {
            format!("storage `{key}` is listed but no tensor uses it; cannot size it")
        })?;
        let head = bytes.get(pos..pos + 8).ok_or_else(|| {
            format!("truncated: storage `{key}` header at byte {pos} is past the end")
        })?;
        let mut n = [0u8; 8];
        n.copy_from_slice(head);
        let count = u64::from_le_bytes(n);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(dtype.elem_size()))
            .ok_or_else(|| format!("storage `{key}`: impossible element count {count}"))?;
        let start = pos + 8;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: storage `{key}` needs {len} bytes at byte {start}, the file has {}",
                    bytes.len()
                )
            })?;
        storages.insert(key, (start, len));
        pos = end;
    }
    Ok((obj, LegacySource { bytes, storages }))
}

fn storage_keys(heap: &Heap, root: usize) -> Result<Vec<String>, String> {
    let seq = heap
        .as_seq(root)
        .ok_or_else(|| format!("storage key list is a {}", heap.get(root).kind(heap)))?;
    seq.iter()
        .map(|&k| match heap.get(k) {
            Obj::Str(s) => Ok(s.clone()),
            Obj::Int(v) => Ok(v.to_string()),
            other => Err(format!("storage key is a {}", other.kind(heap))),
        })
        .collect()
}

/// Element type of every storage the object references, by key.
fn referenced_dtypes(heap: &Heap) -> HashMap<String, StorageDtype> {
    let mut out = HashMap::new();
    for o in heap.objects() {
        let s = match o {
            Obj::Storage(s) => s,
            Obj::Tensor(t) => &t.storage,
            _ => continue,
        };
        out.entry(s.key.clone()).or_insert(s.dtype);
    }
    out
}

impl StorageSource for LegacySource {
    fn storage(&mut self, key: &str) -> Result<Cow<'_, [u8]>, String> {
        let &(start, len) = self
            .storages
            .get(key)
            .ok_or_else(|| format!("storage `{key}` is missing from the file's storage list"))?;
        Ok(Cow::Borrowed(&self.bytes[start..start + len]))
    }
}
