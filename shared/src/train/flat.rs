//! The flat parameter vector: every parameter tensor of the model concatenated, in byte order of
//! the parameter names, into one `f32` buffer. [`ParamLayout`] names its slices; [`sum_into`]
//! adds one worker's gradient into the running sum; [`first_non_finite`] finds a `NaN` or
//! infinity and names the parameter it lies in.
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One named tensor in the flat vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// The parameter's name (e.g. `conv1.weight`).
    pub name: String,
    /// Its shape; the number of values is the product (1 for an empty shape).
    pub shape: Vec<usize>,
    /// Index of its first value in the flat vector.
    pub offset: usize,
    /// Number of values.
    pub len: usize,
}

impl ParamEntry {
    /// The range of the flat vector that holds this parameter.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The fixed order and extent of every parameter in the flat vector, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

impl ParamLayout {
    /// A layout for `(name, shape)` pairs given in any order; they are sorted by name (byte
    /// order). Refuses duplicate or empty names.
    pub fn new<S: Into<String>>(params: impl IntoIterator<Item = (S, Vec<usize>)>) -> Result<Self> {
        let mut named: Vec<(String, Vec<usize>)> =
            params.into_iter().map(|(n, s)| (n.into(), s)).collect();
        named.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if let Some(p) = named.iter().find(|p| p.0.is_empty()) {
            return Err(Error::Config(format!(
                "parameter layout: a parameter of shape {:?} has an empty name",
                p.1
            )));
        }
        if let Some(w) = named.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Config(format!(
                "parameter layout: duplicate parameter name {:?}",
                w[0].0
            )));
        }
        let mut offset = 0usize;
        let mut entries = Vec::with_capacity(named.len());
        for (name, shape) in named {
            let len = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .and_then(|len| offset.checked_add(len).map(|_| len))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "parameter layout: {name:?} of shape {shape:?} is too large"
                    ))
                })?;
            entries.push(ParamEntry {
                name,
                shape,
                offset,
                len,
            });
            offset += len;
        }
        Ok(Self {
            entries,
            total: offset,
        })
    }

    /// The parameters in flat order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// The total number of values of the flat vector.
    pub fn total_len(&self) -> usize {
        self.total
    }

    /// The entry called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The entry that holds flat index `index`, if it is in range.
    pub fn entry_at(&self, index: usize) -> Option<&ParamEntry> {
        if index >= self.total {
            return None;
        }
        let i = self.entries.partition_point(|e| e.offset + e.len <= index);
        self.entries.get(i)
    }

    fn check_len(&self, what: &str, len: usize) -> Result<()> {
        if len != self.total {
            return Err(Error::Training(format!(
                "{what}: flat vector has {len} values, the parameter layout has {}",
                self.total
            )));
        }
        Ok(())
    }

    /// `flat` cut into its named parameters, in layout order. Refuses a wrong length.
    pub fn split<'a>(&'a self, flat: &'a [f32]) -> Result<Vec<(&'a str, &'a [f32])>> {
        self.check_len("split", flat.len())?;
        Ok(self
            .entries
            .iter()
            .map(|e| (e.name.as_str(), &flat[e.range()]))
            .collect())
    }

    /// `flat` cut into mutable named parameters, in layout order. Refuses a wrong length.
    pub fn split_mut<'a>(&'a self, flat: &'a mut [f32]) -> Result<Vec<(&'a str, &'a mut [f32])>> {
        self.check_len("split", flat.len())?;
        let mut out = Vec::with_capacity(self.entries.len());
        let mut rest = flat;
        for e in &self.entries {
            let (head, tail) = rest.split_at_mut(e.len);
            out.push((e.name.as_str(), head));
            rest = tail;
        }
        Ok(out)
    }

    /// The slice of `flat` holding parameter `name`.
    pub fn slice<'a>(&self, flat: &'a [f32], name: &str) -> Result<&'a [f32]> {
        self.check_len("slice", flat.len())?;
        let e = self.get(name).ok_or_else(|| {
            Error::Config(format!("parameter layout: no parameter named {name:?}"))
        })?;
        Ok(&flat[e.range()])
    }

    /// A flat vector built from named parts (each name exactly once, any order).
    pub fn join(&self, parts: &[(&str, &[f32])]) -> Result<Vec<f32>> {
        let mut flat = vec![0.0f32; self.total];
        let mut seen = vec![false; self.entries.len()];
        for (name, values) in parts {
            let i = self
                .entries
                .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
                .map_err(|_| {
                    Error::Config(format!("parameter layout: no parameter named {name:?}"))
                })?;
            let e = &self.entries[i];
            if seen[i] {
                return Err(Error::Config(format!(
                    "parameter layout: {name:?} given twice"
                )));
            }
            if values.len() != e.len {
                return Err(Error::Training(format!(
                    "parameter {name:?}: {} values, shape {:?} needs {}",
                    values.len(),
                    e.shape,
                    e.len
                )));
            }
            flat[e.range()].copy_from_slice(values);
            seen[i] = true;
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(Error::Config(format!(
                "parameter layout: {:?} missing",
                self.entries[i].name
            )));
        }
        Ok(flat)
    }
}

/// `dst[i] += src[i]` for every `i`: adds one gradient into a running sum. Refuses slices of
/// different lengths.
pub fn sum_into(dst: &mut [f32], src: &[f32]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(Error::Training(format!(
            "gradient sum: adding {} values into {}",
            src.len(),
            dst.len()
        )));
    }
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += *s);
    Ok(())
}

/// The first value of `flat` that is `NaN` or infinite, with its index and the parameter it
/// belongs to (`None` when all are finite or `flat` does not fit the layout, see
/// [`check_finite`]).
pub fn first_non_finite<'a>(layout: &'a ParamLayout, flat: &[f32]) -> Option<(usize, &'a str)> {
    let i = flat.iter().position(|x| !x.is_finite())?;
    layout.entry_at(i).map(|e| (i, e.name.as_str()))
}

/// `Ok` when `flat` fits `layout` and every value is finite; otherwise an error naming the
/// first bad value (`what` says which vector, e.g. "gradient").
pub fn check_finite(what: &str, layout: &ParamLayout, flat: &[f32]) -> Result<()> {
    layout.check_len(what, flat.len())?;
    match first_non_finite(layout, flat) {
        None => Ok(()),
        Some((i, name)) => {
            let e = layout.get(name).map_or(0, |e| e.offset);
            Err(Error::Training(format!(
                "{what}: value {} at flat index {i} ({name}[{}]) is not finite",
                flat[i],
                i - e
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ParamLayout {
        ParamLayout::new([
            ("lin.weight", vec![2, 3]),
            ("bn.bias", vec![2]),
            ("lin.bias", vec![2]),
            ("Zeta", vec![]),
        ])
        .unwrap()
    }

    #[test]
    fn sorted_by_name_with_offsets() {
        let l = layout();
        let names: Vec<&str> = l.entries().iter().map(|e| e.name.as_str()).collect();
        // Byte order: upper case before lower case.
        assert_eq!(names, ["Zeta", "bn.bias", "lin.bias", "lin.weight"]);
        let offsets: Vec<usize> = l.entries().iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [0, 1, 3, 5]);
        assert_eq!(l.total_len(), 11);
        assert_eq!(l.get("lin.bias").unwrap().range(), 3..5);
        assert!(l.get("nope").is_none());
        assert_eq!(l.entry_at(0).unwrap().name, "Zeta");
        assert_eq!(l.entry_at(4).unwrap().name, "lin.bias");
        assert_eq!(l.entry_at(10).unwrap().name, "lin.weight");
        assert!(l.entry_at(11).is_none());
    }

    #[test]
    fn split_and_join_round_trip() {
        let l = layout();
        let flat: Vec<f32> = (0..11).map(|i| i as f32).collect();
        let parts = l.split(&flat).unwrap();
        assert_eq!(parts[1], ("bn.bias", &[1.0f32, 2.0][..]));
        assert_eq!(parts[3].1, &[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(l.slice(&flat, "lin.bias").unwrap(), &[3.0, 4.0]);
        let mut reversed = parts.clone();
        reversed.reverse();
        assert_eq!(l.join(&reversed).unwrap(), flat);
        assert!(l.join(&parts[1..]).is_err());
        let mut copy = flat.clone();
        for (name, s) in l.split_mut(&mut copy).unwrap() {
            if name == "bn.bias" {
                s.fill(-1.0);
            }
        }
        assert_eq!(&copy[..4], &[0.0, -1.0, -1.0, 3.0]);
        assert!(l.split(&flat[1..]).is_err());
    }

    #[test]
    fn refuses_bad_layouts() {
        let e = ParamLayout::new([("a", vec![1]), ("a", vec![2])]).unwrap_err();
        assert!(e.to_string().contains("\"a\""), "{e}");
        assert!(ParamLayout::new([("", vec![1])]).is_err());
        assert!(ParamLayout::new([("a", vec![usize::MAX, 2])]).is_err());
    }

    #[test]
    fn sums_gradients() {
        let mut acc = vec![1.0f32, 2.0, 3.0];
        sum_into(&mut acc, &[0.5, -2.0, 1.0]).unwrap();
        assert_eq!(acc, [1.5, 0.0, 4.0]);
        let e = sum_into(&mut acc, &[1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("2 values into 3"), "{e}");
        assert_eq!(acc, [1.5, 0.0, 4.0]);
    }

    #[test]
    fn finds_non_finite_values() {
        let l = layout();
        let mut flat = vec![0.5f32; 11];
        assert!(first_non_finite(&l, &flat).is_none());
        check_finite("gradient", &l, &flat).unwrap();
        flat[9] = f32::INFINITY;
        flat[7] = f32::NAN;
        assert_eq!(first_non_finite(&l, &flat), Some((7, "lin.weight")));
        let e = check_finite("gradient", &l, &flat).unwrap_err().to_string();
        assert!(e.contains("lin.weight[2]") && e.contains("index 7"), "{e}");
        assert!(check_finite("gradient", &l, &flat[..3]).is_err());
    }
}
