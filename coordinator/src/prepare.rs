//! What every run does before training: check the settings that need the file system or the
//! network stack (the output folder, the token file, the listen addresses), index the dataset,
//! split its usable exams' patients, and fingerprint the split so that a resumed run can check
//! it trains on the same one.
//!
//! Nothing here overwrites a file: `split.csv` is written by [`Prepared::write_split`] once the
//! run has also checked its checkpoints, so that a run refused for bad input leaves a previous
//! run's files in the output folder as they were.
use std::path::{Path, PathBuf};

use ecg_shared::config::ClusterConfig;
use ecg_shared::data::csv::ExamTable;
use ecg_shared::data::index::DatasetIndex;
use ecg_shared::split::{self, Split, SplitAssignment, SplitReport};

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
    /// Where split.csv goes.
    pub split_csv: PathBuf,
    /// The split of every exam of the index, in index order.
    assignment: SplitAssignment,
}

fn config_error(msg: String) -> crate::Error {
    ecg_shared::Error::Config(msg).into()
}

/// Creates the output folder if it is missing and checks that files can be written in it
/// (by creating and removing an empty file of its own), naming `output.dir` if not.
pub fn check_output_dir(cfg: &ClusterConfig) -> Result<()> {
    let dir = &cfg.output.dir;
    let refuse = |why: String| config_error(format!("output.dir {}: {why}", dir.display()));
    if dir.exists() && !dir.is_dir() {
        return Err(refuse("exists and is not a folder".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| refuse(e.to_string()))?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| refuse(format!("cannot write in it: {e}")))?;
    std::fs::remove_file(&probe).map_err(|e| refuse(format!("{}: {e}", probe.display())))?;
    Ok(())
}

/// Checks what serving the run needs, before the dataset is indexed: a readable, non-empty
/// `cluster.token_file` when one is set, and `cluster.listen` / `cluster.metrics_listen` that
/// are `host:port` addresses of this machine.
pub fn check_serving(cfg: &ClusterConfig) -> Result<()> {
    let c = &cfg.cluster;
    if !c.token_file.as_os_str().is_empty() {
        ecg_shared::cli::read_token_file(&c.token_file).map_err(|e| {
            let why = match e {
                ecg_shared::Error::Config(msg) => msg,
                other => other.to_string(),
            };
            config_error(format!("cluster.token_file: {why}"))
        })?;
    }
    for (key, addr) in [
        ("cluster.listen", &c.listen),
        ("cluster.metrics_listen", &c.metrics_listen),
    ] {
        if key == "cluster.metrics_listen" && addr.trim().is_empty() {
            continue;
        }
        check_listen(key, addr)?;
    }
    Ok(())
}

fn check_listen(key: &str, addr: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let refuse = |why: String| config_error(format!("{key} `{addr}`: {why}"));
    ecg_shared::cli::listen_host_port(addr).map_err(&refuse)?;
    match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(refuse("names no address of this machine".into())),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Indexes, reports and splits; prints what it did. Writes nothing.
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
    println!(
        "split: strategy {}, seed {}, fractions test {} valid {}",
        strategy.name(),
        cfg.split.seed,
        fractions.test,
        fractions.valid
    );
    println!("{}", SplitReport::new(&usable, &assignment));
    let patients = |s: Split| assignment.patients[s.index()];
    for (s, what) in [(Split::Train, "train on"), (Split::Valid, "validate on")] {
        if patients(s) == 0 {
            return Err(config_error(format!(
                "split.fractions: no patient in the {s} split, so the run has nothing to {what} \
                 (fractions test {} valid {}, {} patients with usable exams): lower the \
                 fractions, or use more data",
                fractions.test,
                fractions.valid,
                assignment.patients.iter().sum::<usize>()
            )));
        }
    }

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
        split_csv: cfg.output.dir.join("split.csv"),
        assignment,
    })
}

impl Prepared {
    /// Writes `split.csv` (atomically) to the output folder and says so.
    pub fn write_split(&self) -> Result<()> {
        write_split_of(&self.index, &self.assignment, &self.split_csv)?;
        println!("wrote {}", self.split_csv.display());
        Ok(())
    }
}

/// `split.csv` of the index's exams (in index order, which is the CSV's order).
fn write_split_of(index: &DatasetIndex, assignment: &SplitAssignment, path: &Path) -> Result<()> {
    let ids = ExamTable {
        exam_id: index.exams.iter().map(|e| e.exam_id).collect(),
        patient_id: index.exams.iter().map(|e| e.patient_id).collect(),
        ..ExamTable::default()
    };
    split::write_split_csv(path, &ids, assignment)?;
    Ok(())
}
