//! The values the pickle machine ([`super::pickle`]) builds: Python objects kept in a [`Heap`]
//! and referred to by [`Id`], so that the stack, the memo and containers share them the way
//! Python does. Dicts keep insertion order with an index over their string and integer keys.
use std::collections::HashMap;

use super::tensor::{StorageRef, TensorRef};

/// Index of an object in a [`Heap`].
pub(crate) type Id = usize;

/// A dict key that can be looked up (string and integer keys; others are kept but not indexed).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum KeyRepr {
    Str(String),
    Int(i64),
}

/// A Python dict in insertion order, with an index over its string and integer keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dict {
    /// (key, value) pairs in insertion order.
    pub(crate) items: Vec<(Id, Id)>,
    index: HashMap<KeyRepr, usize>,
}

/// An unpickled value.
#[derive(Clone, Debug)]
pub(crate) enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Dict),
    Set(Vec<Id>),
    /// A reference to a module-level name (class or function), never resolved.
    Global {
        module: String,
        name: String,
    },
    /// The inert result of calling something we do not interpret.
    Object {
        callable: Id,
    },
    /// A `numpy.dtype` (descriptor such as `f8`; byte order from its `BUILD` state).
    NumpyDtype {
        descr: String,
        byteorder: Option<String>,
    },
    /// A storage named by a persistent id.
    Storage(StorageRef),
    /// A tensor view of a storage.
    Tensor(TensorRef),
    /// A recognised call with arguments we cannot use; the message says why.
    Broken(String),
}

impl Obj {
    /// A short description for error messages.
    pub(crate) fn kind(&self, heap: &Heap) -> String {
        match self {
            Obj::None => "None".into(),
            Obj::Bool(_) => "bool".into(),
            Obj::Int(_) | Obj::BigInt(_) => "int".into(),
            Obj::Float(_) => "float".into(),
            Obj::Str(_) => "str".into(),
            Obj::Bytes(_) => "bytes".into(),
            Obj::Tuple(_) => "tuple".into(),
            Obj::List(_) => "list".into(),
            Obj::Dict(_) => "dict".into(),
            Obj::Set(_) => "set".into(),
            Obj::Global { module, name } => format!("reference to {module}.{name}"),
            Obj::Object { callable, .. } => match heap.objs.get(*callable) {
                Some(Obj::Global { module, name }) => format!("{module}.{name} object"),
                _ => "object".into(),
            },
            Obj::NumpyDtype { .. } => "numpy.dtype".into(),
            Obj::Storage(_) => "storage".into(),
            Obj::Tensor(_) => "tensor".into(),
            Obj::Broken(msg) => format!("unusable value ({msg})"),
        }
    }
}

/// All objects of one pickle.
#[derive(Debug, Default)]
pub(crate) struct Heap {
    objs: Vec<Obj>,
}

impl Heap {
    /// Adds an object; returns its id.
    pub(crate) fn alloc(&mut self, o: Obj) -> Id {
        self.objs.push(o);
        self.objs.len() - 1
    }

    /// The object `id`, to change it in place (append to a list, set a dtype's byte order).
    pub(crate) fn get_mut(&mut self, id: Id) -> &mut Obj {
        &mut self.objs[id]
    }

    /// The object `id` (ids come from this heap, so they are always valid).
    pub(crate) fn get(&self, id: Id) -> &Obj {
        &self.objs[id]
    }

    /// Every object, for scans such as "which storages are referenced".
    pub(crate) fn objects(&self) -> &[Obj] {
        &self.objs
    }

    /// The string `id` holds, if it is a string.
    pub(crate) fn as_str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer `id` holds, if it is a (64-bit) integer or a bool.
    pub(crate) fn as_int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Obj::Int(v) => Some(*v),
            Obj::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The elements of a tuple or list.
    pub(crate) fn as_seq(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Obj::Tuple(v) | Obj::List(v) => Some(v),
            _ => None,
        }
    }

    /// The dict `id` holds, if it is a dict.
    pub(crate) fn as_dict(&self, id: Id) -> Option<&Dict> {
        match self.get(id) {
            Obj::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// `dict[key]` for a string key.
    pub(crate) fn dict_get(&self, dict: &Dict, key: &str) -> Option<Id> {
        dict.index
            .get(&KeyRepr::Str(key.to_string()))
            .map(|&i| dict.items[i].1)
    }

    fn key_repr(&self, id: Id) -> Option<KeyRepr> {
        match self.get(id) {
            Obj::Str(s) => Some(KeyRepr::Str(s.clone())),
            Obj::Int(v) => Some(KeyRepr::Int(*v)),
            _ => None,
        }
    }

    /// `dict[key] = value` on the dict `dict_id`, replacing an equal key; `false` when `dict_id`
    /// is not a dict.
    pub(crate) fn insert(&mut self, dict_id: Id, key: Id, value: Id) -> bool {
        let repr = self.key_repr(key);
        let Obj::Dict(d) = &mut self.objs[dict_id] else {
            return false;
        };
        match repr {
            Some(r) => match d.index.get(&r) {
                Some(&i) => d.items[i] = (key, value),
                None => {
                    d.index.insert(r, d.items.len());
                    d.items.push((key, value));
                }
            },
            None => d.items.push((key, value)),
        }
        true
    }
}

/// Sets the byte order of a `numpy.dtype` (used by [`super::globals::build`]).
pub(crate) fn set_byteorder(heap: &mut Heap, target: Id, order: String) {
    if let Obj::NumpyDtype { byteorder, .. } = heap.get_mut(target) {
        *byteorder = Some(order);
    }
}
