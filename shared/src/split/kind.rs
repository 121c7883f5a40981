//! The three splits (`train`, `valid`, `test`) and the fractions of patients that go to them.
//!
//! Fractions follow the seed's `--splits 0.15 0.05` convention: the first value is the test
//! fraction, the second the validation fraction, and training gets the rest.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One of the three patient-level splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Training patients.
    Train,
    /// Validation patients (model selection, learning-rate schedule).
    Valid,
    /// Held-out test patients.
    Test,
}

impl Split {
    /// All splits, in the order used for counts and reports.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// The name written in `split.csv`: `train`, `valid` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }

    /// Position in [`Split::ALL`] (0, 1, 2), for per-split arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;

    /// `train`, `valid` (also `val`, `validation`) or `test`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "valid" | "val" | "validation" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            _ => Err(Error::Config(format!(
                "`{s}` is not a split: use train, valid or test"
            ))),
        }
    }
}

/// Fractions of patients in the test and validation splits; training gets the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fractions {
    /// Fraction of patients in the test split.
    pub test: f64,
    /// Fraction of patients in the validation split.
    pub valid: f64,
}

impl Default for Fractions {
    /// The seed's defaults: 15 % test, 5 % validation, 80 % training.
    fn default() -> Self {
        Fractions {
            test: 0.15,
            valid: 0.05,
        }
    }
}

impl Fractions {
    /// Checked constructor: each fraction finite and non-negative, their sum at most 1 (summed
    /// left to right from 0, as the seed's `sum(splits) > 1` check does).
    pub fn new(test: f64, valid: f64) -> Result<Self> {
        for (name, v) in [("test", test), ("valid", valid)] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::Config(format!(
                    "fractions: the {name} fraction {v} must be a number in [0, 1]"
                )));
            }
        }
        if 0.0 + test + valid > 1.0 {
            return Err(Error::Config(format!(
                "fractions: test {test} + valid {valid} = {} is more than 1",
                test + valid
            )));
        }
        Ok(Fractions { test, valid })
    }

    /// Checks a value built without [`Fractions::new`] (e.g. deserialised).
    pub fn validate(&self) -> Result<()> {
        Fractions::new(self.test, self.valid).map(|_| ())
    }

    /// From a slice `[test, valid]` (the seed's `--splits` list; exactly two values).
    pub fn from_slice(v: &[f64]) -> Result<Self> {
        match v {
            [test, valid] => Fractions::new(*test, *valid),
            _ => Err(Error::Config(format!(
                "fractions: {v:?} must be two values, test and valid (train gets the rest)"
            ))),
        }
    }

    /// The fraction of training patients (what is left).
    pub fn train(&self) -> f64 {
        1.0 - self.test - self.valid
    }
}

impl FromStr for Fractions {
    type Err = Error;

    /// `"0.15,0.05"` (test, valid).
    fn from_str(s: &str) -> Result<Self> {
        let values = s
            .split(',')
            .map(|p| {
                p.trim().parse::<f64>().map_err(|_| {
                    Error::Config(format!(
                        "fractions: `{}` in `{s}` is not a number",
                        p.trim()
                    ))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        Fractions::from_slice(&values)
    }
}

impl fmt::Display for Fractions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.test, self.valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_round_trip() {
        for s in Split::ALL {
            assert_eq!(s.as_str().parse::<Split>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!("VAL".parse::<Split>().unwrap(), Split::Valid);
        assert!(
            "dev"
                .parse::<Split>()
                .unwrap_err()
                .to_string()
                .contains("`dev`")
        );
    }

    #[test]
    fn fractions_parse_and_validate() {
        let f: Fractions = "0.15, 0.05".parse().unwrap();
        assert_eq!((f.test, f.valid), (0.15, 0.05));
        assert!((f.train() - 0.8).abs() < 1e-12);
        for (bad, want) in [
            ("0.9,0.2", "more than 1"),
            ("-0.1,0.2", "-0.1"),
            ("0.1", "two values"),
            ("0.1,0.1,0.1", "two values"),
            ("0.1,x", "`x`"),
            ("NaN,0.1", "NaN"),
        ] {
            let err = bad.parse::<Fractions>().unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
        assert!("1,0".parse::<Fractions>().is_ok());
    }
}
