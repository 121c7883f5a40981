//! A small pickle virtual machine for PyTorch checkpoints. It executes no code: every global
//! becomes an inert [`Obj::Global`], and `REDUCE`/`NEWOBJ` only give meaning to the few callables
//! that `torch.save` needs (see [`super::globals`]); anything else stays an inert
//! [`Obj::Object`]. Objects live in a [`Heap`] and the stack and memo hold their ids, so shared
//! references behave as in Python and no value is ever copied (no blow-up on hostile input).
//! Every read is bounds-checked; malformed input gives an `Err(String)`, never a panic.
use std::collections::HashMap;

use super::globals;
use super::value::{Dict, Heap, Id, Obj};

/// The result of one pickle: its objects, the root object and the byte after `STOP`.
#[derive(Debug)]
pub(crate) struct Unpickled {
    pub(crate) heap: Heap,
    pub(crate) root: Id,
    pub(crate) end: usize,
}

/// Runs the pickle that starts at `data[start]` up to its `STOP`.
pub(crate) fn unpickle(data: &[u8], start: usize) -> Result<Unpickled, String> {
    let mut vm = Vm {
        data,
        pos: start,
        heap: Heap::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = vm.run()?;
    Ok(Unpickled {
        heap: vm.heap,
        root,
        end: vm.pos,
    })
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    heap: Heap,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let left = self.data.len().saturating_sub(self.pos);
        if n > left {
            return Err(format!(
                "truncated pickle: needs {n} bytes at byte {}, only {left} left",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.arr::<1>()?[0])
    }

    fn len32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }

    fn len64(&mut self) -> Result<usize, String> {
        let n = u64::from_le_bytes(self.arr()?);
        usize::try_from(n).map_err(|_| format!("length {n} at byte {} is too large", self.pos))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("truncated pickle: unterminated line at byte {}", self.pos))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| format!("non-UTF-8 name at byte {}", self.pos))?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, o: Obj) {
        let id = self.heap.alloc(o);
        self.stack.push(id);
    }

    fn pop(&mut self) -> Result<Id, String> {
        self.stack
            .pop()
            .ok_or_else(|| format!("malformed pickle: stack underflow at byte {}", self.pos))
    }

    fn top(&self) -> Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| format!("malformed pickle: empty stack at byte {}", self.pos))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| format!("malformed pickle: no MARK before byte {}", self.pos))?;
        if m > self.stack.len() {
            return Err(format!("malformed pickle: MARK lost at byte {}", self.pos));
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let id = *self.memo.get(&key).ok_or_else(|| {
            format!(
                "malformed pickle: memo entry {key} missing at byte {}",
                self.pos
            )
        })?;
        self.stack.push(id);
        Ok(())
    }

    fn text(&self, b: &[u8]) -> Result<String, String> {
        String::from_utf8(b.to_vec())
            .map_err(|_| format!("invalid UTF-8 string before byte {}", self.pos))
    }

    /// Python 2 `str` payloads: text when UTF-8, bytes otherwise.
    fn py2_str(b: &[u8]) -> Obj {
        match std::str::from_utf8(b) {
            Ok(s) => Obj::Str(s.to_string()),
            Err(_) => Obj::Bytes(b.to_vec()),
        }
    }

    fn long(b: &[u8]) -> Obj {
        if b.is_empty() {
            return Obj::Int(0);
        }
        if b.len() <= 8 {
            let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
            let mut a = [fill; 8];
            a[..b.len()].copy_from_slice(b);
            Obj::Int(i64::from_le_bytes(a))
        } else {
            Obj::BigInt(b.to_vec())
        }
    }

    fn append(&mut self, list: Id, items: Vec<Id>) -> Result<(), String> {
        match self.heap.get_mut(list) {
            Obj::List(v) | Obj::Set(v) => {
                v.extend(items);
                Ok(())
            }
            Obj::Object { .. } => Ok(()), // an inert object that would take items: ignored
            _ => Err(format!(
                "malformed pickle: APPEND to a non-list at byte {}",
                self.pos
            )),
        }
    }

    fn set_items(&mut self, dict: Id, items: Vec<Id>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!(
                "malformed pickle: odd SETITEMS at byte {}",
                self.pos
            ));
        }
        if matches!(self.heap.get(dict), Obj::Object { .. }) {
            return Ok(()); // an inert object that would take items: ignored
        }
        for kv in items.chunks_exact(2) {
            if !self.heap.insert(dict, kv[0], kv[1]) {
                return Err(format!(
                    "malformed pickle: SETITEM on a non-dict at byte {}",
                    self.pos
                ));
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Id, String> {
        loop {
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| format!("truncated pickle: ends at byte {at} without STOP"))?;
            match op {
                0x80 => {
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(format!(
                            "pickle protocol {v} is not supported (at byte {at})"
                        ));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push(Obj::Dict(Dict::default())),
                b']' => self.push(Obj::List(Vec::new())),
                b')' => self.push(Obj::Tuple(Vec::new())),
                0x8f => self.push(Obj::Set(Vec::new())),
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(format!("malformed pickle: stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Obj::Tuple(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items));
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Set(items));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let l = self.top()?;
                    self.append(l, vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    let l = self.top()?;
                    self.append(l, items)?;
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.arr()?);
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k =
                        u32::try_from(self.memo.len()).map_err(|_| "memo too large".to_string())?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.arr()?);
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.heap.as_str(module), self.heap.as_str(name)) {
                        (Some(m), Some(n)) => {
                            let g = Obj::Global {
                                module: m.to_string(),
                                name: n.to_string(),
                            };
                            self.push(g);
                        }
                        _ => {
                            return Err(format!(
                                "malformed pickle: STACK_GLOBAL needs two strings at byte {at}"
                            ));
                        }
                    }
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.push(Obj::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.push(Obj::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.push(Self::long(b));
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n = usize::try_from(n)
                        .map_err(|_| format!("negative LONG4 length at byte {at}"))?;
                    let b = self.take(n)?;
                    self.push(Self::long(b));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.push(Obj::Float(v));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.len32()?,
                        0x8c => self.u8()? as usize,
                        _ => self.len64()?,
                    };
                    let b = self.take(n)?;
                    let s = self.text(b)?;
                    self.push(Obj::Str(s));
                }
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        let n = i32::from_le_bytes(self.arr()?);
                        usize::try_from(n)
                            .map_err(|_| format!("negative BINSTRING length at byte {at}"))?
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    self.push(Self::py2_str(b));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.len32()?,
                        b'C' => self.u8()? as usize,
                        _ => self.len64()?,
                    };
                    let b = self.take(n)?;
                    self.push(Obj::Bytes(b.to_vec()));
                }
                b'N' => self.push(Obj::None),
                0x88 => self.push(Obj::Bool(true)),
                0x89 => self.push(Obj::Bool(false)),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let t = self.top()?;
                    self.stack.push(t);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let o = globals::reduce(&mut self.heap, callable, args);
                    self.push(o);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let o = globals::new_object(&self.heap, cls);
                    self.push(o);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let o = globals::new_object(&self.heap, cls);
                    self.push(o);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    globals::build(&mut self.heap, target, state);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let o = globals::persistent_load(&self.heap, pid)
                        .map_err(|e| format!("{e} (persistent id at byte {at})"))?;
                    self.push(o);
                }
                b'.' => return self.pop(),
                other => {
                    return Err(format!(
                        "unknown or unsupported pickle opcode 0x{other:02x} at byte {at} \
                         (not a PyTorch checkpoint, or from a pickler this loader does not know)"
                    ));
                }
            }
        }
    }
}
