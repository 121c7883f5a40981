//! What every run does before training: index the dataset, split its usable exams' patients,
//! write `split.csv`, and fingerprint the split so that a resumed run can check it trains on
//! the same one.
use std::path::PathBuf;

use ecg_shared::config::ClusterConfig;
use ecg_shared::data::index::DatasetIndex;
use ecg_shared::split::{self, Split, SplitReport};

use crate::Result;

/// The indexed, split dataset.
#[derive(Debug)]
pub struct Prepared {
    /// The index.
    pub index: DatasetIndex,
    /// Index positions of the training exams.
    pub train: Vec<usize>,
    /// Index positions of the validation exams.
    pub valid: Vec<usize>,
    /// Index positions of the test exams.
    pub test: Vec<usize>,
    /// Hex BLAKE3 of the split (exam ids of each split, in index order).
    pub split_fingerprint: String,
    /// Where split.csv is.
    pub split_csv: PathBuf,
}

/// Indexes, reports, splits and writes `split.csv`; prints what it did.
pub fn prepare(cfg: &ClusterConfig) -> Result<Prepared> {
    let (table, index, report) = cfg.build_index()?;
    println!("{report}");
    if index.is_empty() {
        return Err(ecg_shared::Error::Dataset(format!(
            "no usable exam: none of the {} rows of {} has a tracing and a valid age",
            table.len(),
            table.path.display()
        ))
        .into());
    }
    println!("dataset fingerprint {}", index.fingerprint());

    // The split covers the exams the run can use: those with a tracing and a valid age.
    let usable = table.select(
        &index
            .exams
            .iter()
            .map(|e| e.csv_row as usize)
            .collect::<Vec<_>>(),
    );
    let (strategy, fractions) = cfg.split_strategy()?;
    let assignment = split::assign(&usable, &strategy, cfg.split.seed, fractions)?;
    assignment.check(&usable)?;
    std::fs::create_dir_all(&cfg.output.dir)
        .map_err(|e| ecg_shared::Error::io(&cfg.output.dir, e))?;
    let split_csv = cfg.output.dir.join("split.csv");
    split::write_split_csv(&split_csv, &usable, &assignment)?;
    println!(
        "split: strategy {}, seed {}, fractions test {} valid {}",
        strategy.name(),
        cfg.split.seed,
        fractions.test,
        fractions.valid
    );
    println!("{}", SplitReport::new(&usable, &assignment));
    println!("wrote {}", split_csv.display());

    let train = assignment.rows(Split::Train);
    let valid = assignment.rows(Split::Valid);
    let test = assignment.rows(Split::Test);
    let mut h = blake3::Hasher::new();
    for (tag, rows) in [(0u8, &train), (1, &valid), (2, &test)] {
        h.update(&[tag]);
        for &p in rows {
            h.update(&index.exams[p].exam_id.0.to_le_bytes());
        }
    }
    Ok(Prepared {
        index,
        train,
        valid,
        test,
        split_fingerprint: h.finalize().to_hex().to_string(),
        split_csv,
    })
}
