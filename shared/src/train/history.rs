//! `history.csv`: one row per logged epoch with the seed's columns (`epoch, train_loss,
//! valid_loss, lr, weighted_rmse, weighted_mae, rmse, mse`) plus the `mae` the seed's plotting
//! script expects. The seed leaves its last four columns empty; we fill them, on the
//! validation split: `weighted_rmse = sqrt(sum w e^2 / sum w)`, `weighted_mae = sum w |e| /
//! sum w`, `rmse`, `mse` and `mae` unweighted, with `e` = predicted - true age. Rewritten
//! whole (temporary file + rename) after every epoch, as the seed does.
use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// The header line.
pub const HISTORY_HEADER: &str =
    "epoch,train_loss,valid_loss,lr,weighted_rmse,weighted_mae,rmse,mse,mae";

/// One epoch of the history.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryRow {
    /// 0-based epoch.
    pub epoch: u64,
    /// Training loss per exam (sum of weighted squared errors / exams).
    pub train_loss: f64,
    /// Validation loss per exam.
    pub valid_loss: f64,
    /// Learning rate used during the epoch.
    pub lr: f64,
    /// Validation errors.
    pub metrics: ValidMetrics,
}

/// Error summaries on the validation split.
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ValidMetrics {
    /// `sqrt(sum w e^2 / sum w)`.
    pub weighted_rmse: f64,
    /// `sum w |e| / sum w`.
    pub weighted_mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error, years.
    pub mae: f64,
}

impl ValidMetrics {
    /// The summaries of predictions `pred` of ages `age` with weights `w`.
    pub fn compute(age: &[f32], pred: &[f32], w: &[f32]) -> Self {
        let (mut sw, mut swe2, mut swae, mut se2, mut sae) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for ((&a, &p), &wi) in age.iter().zip(pred).zip(w) {
            let e = f64::from(p) - f64::from(a);
            let wi = f64::from(wi);
            sw += wi;
            swe2 += wi * e * e;
            swae += wi * e.abs();
            se2 += e * e;
            sae += e.abs();
        }
        let n = age.len().min(pred.len()).min(w.len()) as f64;
        Self {
            weighted_rmse: (swe2 / sw).sqrt(),
            weighted_mae: swae / sw,
            rmse: (se2 / n).sqrt(),
            mse: se2 / n,
            mae: sae / n,
        }
    }
}

/// Writes `rows` to `path` (replacing it atomically).
pub fn write_history(path: &Path, rows: &[HistoryRow]) -> Result<()> {
    let mut text = String::with_capacity(64 * (rows.len() + 1));
    text.push_str(HISTORY_HEADER);
    text.push('\n');
    for r in rows {
        let m = &r.metrics;
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.train_loss,
            r.valid_loss,
            r.lr,
            m.weighted_rmse,
            m.weighted_mae,
            m.rmse,
            m.mse,
            m.mae
        ));
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed,
/// so that a reader never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        // Errors +1, -3 with weights 1, 3.
        let m = ValidMetrics::compute(&[10.0, 20.0], &[11.0, 17.0], &[1.0, 3.0]);
        assert!((m.mae - 2.0).abs() < 1e-12);
        assert!((m.mse - 5.0).abs() < 1e-12);
        assert!((m.weighted_mae - 2.5).abs() < 1e-12);
        assert!((m.weighted_rmse - 7.0f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn history_file_has_the_seed_columns_and_mae() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("history.csv");
        let row = HistoryRow {
            epoch: 0,
            train_loss: 2.5,
            valid_loss: 3.0,
            lr: 1e-3,
            metrics: ValidMetrics {
                mae: 1.5,
                ..Default::default()
            },
        };
        write_history(&p, &[row.clone(), HistoryRow { epoch: 1, ..row }]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("epoch,train_loss,valid_loss,lr,weighted_rmse"));
        assert!(lines[0].ends_with(",mae"));
        assert_eq!(lines[2].split(',').next(), Some("1"));
        assert_eq!(lines[1].split(',').nth(8), Some("1.5"));
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "no temporary file left"
        );
    }
}
