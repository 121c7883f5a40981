//! The `cluster.toml` schema: what the coordinator (and, through it, the workers) runs with.
//!
//! Loaded with the `config` crate from one TOML file, then environment overrides
//! `ECG__SECTION__KEY=value` (lists comma-separated). Unknown keys in the file and misspelled
//! `ECG_…` variables are refused with an error naming them and listing the valid keys: a typo
//! never silently falls back to a default. Relative paths are resolved against the directory of
//! the TOML file. `deploy/cluster.toml` documents every field. The `[training]` and `[cluster]`
//! sections have their own files (`config/training.rs`, `config/cluster.rs`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::csv::{CsvColumns, ExamTable};
use crate::data::index::{DatasetIndex, IndexOptions, IndexReport};
use crate::model::ModelConfig;
use crate::split::{Fractions, PinSpec, Split, SplitStrategy};
use crate::{Error, Result};

mod cluster;
mod pem;
mod training;
pub use cluster::{ClusterSection, TlsPem};
pub use pem::{ClientTlsPem, PemKind, read_pem};
pub use training::{EpochOrder, TrainingConfig};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "ECG";

/// The whole `cluster.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `[data]`: where the cohort is and how its tables are named.
    pub data: DataConfig,
    /// `[split]`: how patients are split into train / valid / test.
    pub split: SplitConfig,
    /// `[output]`: where results go.
    pub output: OutputConfig,
    /// `[model]`: the network's architecture (the seed's `config.json` keys).
    pub model: ModelConfig,
    /// `[training]`: optimiser, schedule, batches and where training starts from.
    pub training: TrainingConfig,
    /// `[cluster]`: how the coordinator serves its workers.
    pub cluster: ClusterSection,
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory that `csv` and `hdf5` are relative to; empty = the TOML file's directory.
    pub root: PathBuf,
    /// The exams table.
    pub csv: PathBuf,
    /// HDF5 files; a `*` in the file name matches any characters (`exams_part*.hdf5`).
    pub hdf5: Vec<String>,
    /// HDF5 dataset with the tracings, (N, n_samples, n_leads).
    pub traces_dset: String,
    /// HDF5 dataset with the exam ids; empty = HDF5 rows are in CSV order (SaMi-Trop).
    pub ids_dset: String,
    /// CSV column with the exam id.
    pub exam_id_col: String,
    /// CSV column with the age at the exam.
    pub age_col: String,
    /// CSV column with the patient id; empty = one patient per exam.
    pub patient_id_col: String,
    /// Samples per tracing.
    pub n_samples: usize,
    /// Leads per tracing.
    pub n_leads: usize,
    /// Exams with an age below this are excluded (and reported).
    pub min_age: f64,
    /// Exams with an age above this are excluded (and reported).
    pub max_age: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: PathBuf::new(),
            csv: PathBuf::from("exams.csv"),
            hdf5: vec!["exams_part*.hdf5".into()],
            traces_dset: "tracings".into(),
            ids_dset: "exam_id".into(),
            exam_id_col: "exam_id".into(),
            age_col: "age".into(),
            patient_id_col: "patient_id".into(),
            n_samples: 4096,
            n_leads: 12,
            min_age: 0.0,
            max_age: 130.0,
        }
    }
}

/// Name of a split strategy, as written in `cluster.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitStrategyName {
    /// The seed's age-balanced algorithm (formulate_problem.py), bit-exact.
    AgeBalanced,
    /// A keyed hash of the patient id: stable when patients are added.
    Hash,
    /// Patients listed in `pin_file` pinned to `pin_split`, the rest by `hash`.
    File,
}

/// `[split]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// `age-balanced`, `hash` or `file`.
    pub strategy: SplitStrategyName,
    /// Seed of the split (NumPy `RandomState` seed for `age-balanced`, hash key for the others).
    pub seed: u32,
    /// Fractions of patients: `[test, valid]`; train gets the rest.
    pub fractions: Vec<f64>,
    /// For `file`: the CSV listing the pinned patients.
    pub pin_file: PathBuf,
    /// For `file`: its patient id column.
    pub pin_col: String,
    /// For `file`: the split the listed patients go to (`train`, `valid` or `test`).
    pub pin_split: String,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            strategy: SplitStrategyName::AgeBalanced,
            seed: 0,
            fractions: vec![0.15, 0.05],
            pin_file: PathBuf::new(),
            pin_col: "patient_id".into(),
            pin_split: "test".into(),
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Directory for `split.csv`, checkpoints, `history.csv` and plots.
    pub dir: PathBuf,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("run"),
        }
    }
}

impl ClusterConfig {
    /// Loads `path` with the overrides found in the process environment.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads `path` with the given environment (tests pass their own).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let known = known_keys();
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(format!("{}: {e}", path.display())))?;
        check_file_keys(path, &table, &known)?;

        let mut builder = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml));
        for (key, value) in env_overrides(env, &known)? {
            builder = builder
                .set_override(key.as_str(), value)
                .map_err(|e| Error::Config(format!("environment override {key}: {e}")))?;
        }
        let cfg: ClusterConfig = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let cfg = cfg.resolve_paths(&base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes relative paths absolute against `base` (the TOML file's directory).
    pub fn resolve_paths(mut self, base: &Path) -> Self {
        let join = |p: &Path| {
            if p.as_os_str().is_empty() || p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.data.root = if self.data.root.as_os_str().is_empty() {
            base.to_path_buf()
        } else {
            join(&self.data.root)
        };
        self.split.pin_file = join(&self.split.pin_file);
        self.training.init_from = join(&self.training.init_from);
        self.output.dir = join(&self.output.dir);
        self.cluster.resolve_paths(join);
        self
    }

    /// Checks values that deserialize but cannot be used.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::Config(format!("{key}: {msg}")));
        let d = &self.data;
        if d.csv.as_os_str().is_empty() {
            return bad("data.csv", "must name the exams table".into());
        }
        if d.hdf5.is_empty() || d.hdf5.iter().any(|h| h.trim().is_empty()) {
            return bad(
                "data.hdf5",
                "must list at least one HDF5 file (no empty entries)".into(),
            );
        }
        for (key, v) in [
            ("data.traces_dset", &d.traces_dset),
            ("data.exam_id_col", &d.exam_id_col),
            ("data.age_col", &d.age_col),
        ] {
            if v.trim().is_empty() {
                return bad(key, "must not be empty".into());
            }
        }
        if d.n_samples == 0 || d.n_leads == 0 {
            return bad("data.n_samples/n_leads", "must be positive".into());
        }
        if !(d.min_age.is_finite() && d.max_age.is_finite() && d.min_age <= d.max_age) {
            return bad(
                "data.min_age/max_age",
                format!("[{}, {}] is not a range", d.min_age, d.max_age),
            );
        }
        let s = &self.split;
        let in_split = |e: Error| match e {
            Error::Config(msg) => Error::Config(format!("split.{msg}")),
            other => other,
        };
        Fractions::from_slice(&s.fractions).map_err(in_split)?;
        s.pin_split
            .parse::<Split>()
            .map_err(|e| Error::Config(format!("split.pin_split: {e}")))?;
        if s.strategy == SplitStrategyName::File && s.pin_file.as_os_str().is_empty() {
            return bad("split.pin_file", "strategy `file` needs a pin_file".into());
        }
        if self.output.dir.as_os_str().is_empty() {
            return bad("output.dir", "must not be empty".into());
        }
        self.model.validate()?;
        if self.model.seq_length != d.n_samples {
            return bad(
                "model.seq_length",
                format!(
                    "{} differs from data.n_samples = {}",
                    self.model.seq_length, d.n_samples
                ),
            );
        }
        let t = &self.training;
        if t.batch_size == 0 {
            return bad("training.batch_size", "must be at least 1".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad("training.lr", format!("{} is not a positive rate", t.lr));
        }
        if !(t.lr_factor > 0.0 && t.lr_factor < 1.0) {
            return bad(
                "training.lr_factor",
                format!("{} is not in (0, 1)", t.lr_factor),
            );
        }
        if !(t.min_lr.is_finite() && t.min_lr >= 0.0) {
            return bad("training.min_lr", format!("{} is not a rate", t.min_lr));
        }
        self.cluster.validate()?;
        Ok(())
    }

    /// The HDF5 files named by `data.hdf5`, relative to `data.root`, with `*` patterns expanded
    /// (sorted by name). A pattern that matches nothing, or a missing file, is an error.
    pub fn hdf5_files(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in &self.data.hdf5 {
            let p = self.data.root.join(entry);
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.contains('*') {
                if !p.is_file() {
                    return Err(Error::Config(format!(
                        "data.hdf5: {} does not exist",
                        p.display()
                    )));
                }
                out.push(p);
                continue;
            }
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            let mut hits: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect();
            if hits.is_empty() {
                return Err(Error::Config(format!(
                    "data.hdf5: `{}` matches no file",
                    p.display()
                )));
            }
            hits.sort_by_key(|p| natural_key(p));
            out.extend(hits);
        }
        Ok(out)
    }

    /// The exams table path.
    pub fn csv_path(&self) -> PathBuf {
        self.data.root.join(&self.data.csv)
    }

    /// The CSV column names of `[data]`.
    pub fn csv_columns(&self) -> CsvColumns {
        let d = &self.data;
        CsvColumns {
            exam_id: d.exam_id_col.clone(),
            age: d.age_col.clone(),
            patient_id: (!d.patient_id_col.trim().is_empty()).then(|| d.patient_id_col.clone()),
            ..CsvColumns::default()
        }
    }

    /// The options of the CSV/HDF5 join of `[data]`.
    pub fn index_options(&self) -> IndexOptions {
        let d = &self.data;
        IndexOptions {
            traces_dset: d.traces_dset.clone(),
            ids_dset: (!d.ids_dset.trim().is_empty()).then(|| d.ids_dset.clone()),
            n_samples: d.n_samples,
            n_leads: d.n_leads,
            min_age: d.min_age,
            max_age: d.max_age,
        }
    }

    /// Reads the exams table and joins it with the HDF5 files as `[data]` says. The coordinator
    /// and every worker go through here, so that they build the same index.
    pub fn build_index(&self) -> Result<(ExamTable, DatasetIndex, IndexReport)> {
        let table = ExamTable::read(&self.csv_path(), &self.csv_columns())?;
        let (index, report) =
            DatasetIndex::build(&table, &self.hdf5_files()?, &self.index_options())?;
        Ok((table, index, report))
    }

    /// The split strategy and fractions of `[split]` (already validated by `load`).
    pub fn split_strategy(&self) -> Result<(SplitStrategy, Fractions)> {
        let s = &self.split;
        let strategy = match s.strategy {
            SplitStrategyName::AgeBalanced => SplitStrategy::AgeBalanced,
            SplitStrategyName::Hash => SplitStrategy::Hash,
            SplitStrategyName::File => SplitStrategy::File(PinSpec {
                path: s.pin_file.clone(),
                column: s.pin_col.clone(),
                split: s.pin_split.parse()?,
                ..PinSpec::default()
            }),
        };
        Ok((strategy, Fractions::from_slice(&s.fractions)?))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Sorts `exams_part2` before `exams_part10`.
fn natural_key(p: &Path) -> (String, u64, String) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let start = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let end = name[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(name.len(), |i| start + i);
    (
        name[..start].to_string(),
        name[start..end].parse().unwrap_or(0),
        name[end..].to_string(),
    )
}

/// Every `section.key` of the schema, with the JSON shape of its default value.
fn known_keys() -> BTreeMap<String, serde_json::Value> {
    let v = serde_json::to_value(ClusterConfig::default()).expect("the default config serializes");
    let mut out = BTreeMap::new();
    if let serde_json::Value::Object(sections) = v {
        for (section, fields) in sections {
            if let serde_json::Value::Object(fields) = fields {
                for (k, def) in fields {
                    out.insert(format!("{section}.{k}"), def);
                }
            }
        }
    }
    out
}

fn keys_of(known: &BTreeMap<String, serde_json::Value>, section: &str) -> String {
    known
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{section}.")).map(str::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sections_of(known: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
    let mut s: Vec<String> = known
        .keys()
        .filter_map(|k| k.split('.').next().map(str::to_string))
        .collect();
    s.dedup();
    s
}

fn check_file_keys(
    path: &Path,
    table: &toml::Table,
    known: &BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    let sections = sections_of(known);
    for (section, value) in table {
        let Some(fields) = value.as_table() else {
            return Err(Error::Config(format!(
                "{}: `{section}` must be a [section] (sections: {})",
                path.display(),
                sections.join(", ")
            )));
        };
        if !sections.contains(section) {
            return Err(Error::Config(format!(
                "{}: unknown section [{section}] (sections: {})",
                path.display(),
                sections.join(", ")
            )));
        }
        for key in fields.keys() {
            if !known.contains_key(&format!("{section}.{key}")) {
                return Err(Error::Config(format!(
                    "{}: unknown key `{key}` in [{section}] (keys: {})",
                    path.display(),
                    keys_of(known, section)
                )));
            }
        }
    }
    Ok(())
}

/// The `ECG__SECTION__KEY` overrides, typed like the defaults. A variable that starts with
/// `ECG__`, or with `ECG_` and a section name, and is not a well-formed override of a known key
/// is an error (other `ECG_…` variables belong to someone else and are left alone).
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
    known: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(String, config::Value)>> {
    let mut out = Vec::new();
    let prefix = format!("{ENV_PREFIX}__");
    let sections = sections_of(known);
    for (name, raw) in env {
        // `ECG__anything` and `ECG_<section>…` are meant for us; other `ECG_` names are not.
        let upper = name.to_ascii_uppercase();
        let ours = upper.starts_with(&prefix)
            || upper
                .strip_prefix(&format!("{ENV_PREFIX}_"))
                .is_some_and(|rest| {
                    sections
                        .iter()
                        .any(|s| rest.starts_with(&s.to_ascii_uppercase()))
                });
        if !ours {
            continue;
        }
        let key = upper
            .strip_prefix(&prefix)
            .map(|rest| rest.to_ascii_lowercase().replacen("__", ".", 1))
            .filter(|k| known.contains_key(k) && !k.contains("__"));
        let Some(key) = key else {
            return Err(Error::Config(format!(
                "environment variable {name}: not an override of a known setting; write \
                 {prefix}SECTION__KEY, e.g. {prefix}SPLIT__SEED (settings: {})",
                known.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let bad = |want: &str| {
            Error::Config(format!(
                "environment variable {name}=`{raw}`: expected {want}"
            ))
        };
        let value: config::Value = match &known[&key] {
            serde_json::Value::Array(items) => {
                let float = items.first().is_some_and(|v| v.is_f64());
                let int = items.first().is_some_and(|v| v.is_u64() || v.is_i64());
                let parts = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
                if float {
                    parts
                        .map(|s| s.parse::<f64>().map(config::Value::from))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|_| bad("comma-separated numbers"))?
                        .into()
                } else if int {
                    parts
                        .map(|s| s.parse::<i64>().map(config::Value::from))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|_| bad("comma-separated integers"))?
                        .into()
                } else {
                    parts.map(config::Value::from).collect::<Vec<_>>().into()
                }
            }
            serde_json::Value::Bool(_) => raw
                .trim()
                .to_ascii_lowercase()
                .parse::<bool>()
                .map_err(|_| bad("true or false"))?
                .into(),
            serde_json::Value::Number(n) if n.is_f64() => raw
                .trim()
                .parse::<f64>()
                .map_err(|_| bad("a number"))?
                .into(),
            serde_json::Value::Number(_) => raw
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("an integer"))?
                .into(),
            _ => raw.clone().into(),
        };
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
