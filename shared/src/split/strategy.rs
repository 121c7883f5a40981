//! How patients are assigned to splits: [`SplitStrategy`] (`age-balanced`, `hash`, `file`) and,
//! for `file`, the [`PinSpec`] that names the CSV of pinned patients.
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::kind::Split;
use crate::{Error, Result};

/// Where the pinned patients of the `file` strategy are listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PinSpec {
    /// The CSV listing the pinned patients (e.g. CODE-15%'s `exams.csv`). Empty means not set,
    /// which is an error when the strategy is used.
    pub path: PathBuf,
    /// Its patient id column.
    pub column: String,
    /// Its optional column giving each listed patient's split (`train`, `valid` or `test`);
    /// when the file has no such column, or a row's cell is empty, [`PinSpec::split`] is used.
    pub split_column: String,
    /// The split of listed patients without a split of their own.
    pub split: Split,
}

impl Default for PinSpec {
    fn default() -> Self {
        PinSpec {
            path: PathBuf::new(),
            column: "patient_id".into(),
            split_column: "split".into(),
            split: Split::Test,
        }
    }
}

/// A split strategy. In `cluster.toml` (kebab-case): `"age-balanced"`, `"hash"`, or
/// `{ file = { path = "...", column = "patient_id", split = "test" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitStrategy {
    /// The seed's age-balanced algorithm, bit-exact with NumPy's `RandomState(seed)`.
    AgeBalanced,
    /// A keyed hash of the patient id: a patient never moves when others are added.
    Hash,
    /// Listed patients pinned to their split; the others by [`SplitStrategy::Hash`].
    File(PinSpec),
}

impl SplitStrategy {
    /// The strategy's name: `age-balanced`, `hash` or `file`.
    pub fn name(&self) -> &'static str {
        match self {
            SplitStrategy::AgeBalanced => "age-balanced",
            SplitStrategy::Hash => "hash",
            SplitStrategy::File(_) => "file",
        }
    }
}

impl fmt::Display for SplitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SplitStrategy {
    type Err = Error;

    /// `age-balanced`, `hash` or `file` (the last with a default [`PinSpec`] whose path must
    /// still be set).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "age-balanced" => Ok(SplitStrategy::AgeBalanced),
            "hash" => Ok(SplitStrategy::Hash),
            "file" => Ok(SplitStrategy::File(PinSpec::default())),
            other => Err(Error::Config(format!(
                "`{other}` is not a split strategy: use age-balanced, hash or file"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_serde_is_kebab_case() {
        for s in ["age-balanced", "hash", "file"] {
            assert_eq!(s.parse::<SplitStrategy>().unwrap().name(), s);
        }
        let err = "random".parse::<SplitStrategy>().unwrap_err().to_string();
        assert!(err.contains("`random`"), "{err}");
        let json = serde_json::to_string(&SplitStrategy::AgeBalanced).unwrap();
        assert_eq!(json, "\"age-balanced\"");
        let pinned: SplitStrategy =
            serde_json::from_str(r#"{"file": {"path": "pins.csv", "split": "valid"}}"#).unwrap();
        let SplitStrategy::File(spec) = pinned else {
            panic!("not file: {pinned:?}")
        };
        assert_eq!(spec.path, PathBuf::from("pins.csv"));
        assert_eq!(spec.split, Split::Valid);
        assert_eq!(spec.column, "patient_id");
    }
}
