//! The commit log (`commits.csv` in the output folder): one line per optimizer step the
//! coordinator committed, with the step's exams as a count and an order-independent digest, so
//! that anyone can check afterwards, from the files alone, that every epoch used each training
//! exam exactly once, also across worker and coordinator failures.
//!
//! The digest of a multiset of exam ids is the wrapping sum of a 64-bit hash of each id: adding
//! an exam twice or leaving one out changes it (but for a 2^-64 chance), and it does not depend
//! on the order in which workers delivered their units. A coordinator restarted from a
//! checkpoint commits the steps after that checkpoint again, with the same exams; the lines of
//! a run are appended, never rewritten, so a reader keeps the last line of each step
//! ([`final_lineage`]).
use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// File name in the output folder.
pub const COMMITS_FILE: &str = "commits.csv";

/// The CSV header.
pub const HEADER: &str =
    "run_id,global_step,epoch,step_in_epoch,exams,exam_digest,contributions,loss_sum,unix_ms";

/// The 64-bit hash of one exam id.
pub fn exam_hash(exam_id: i64) -> u64 {
    let h = blake3::hash(&exam_id.to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The digest of a multiset of exam ids.
pub fn digest(ids: impl IntoIterator<Item = i64>) -> u64 {
    ids.into_iter()
        .fold(0u64, |d, id| d.wrapping_add(exam_hash(id)))
}

/// One committed step.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// The run it belongs to.
    pub run_id: String,
    /// Global step number (the state before it is version `global_step`).
    pub global_step: u64,
    /// Epoch.
    pub epoch: u64,
    /// Step within the epoch.
    pub step_in_epoch: u64,
    /// Exams whose gradients were summed.
    pub exams: u64,
    /// [`digest`] of their ids.
    pub exam_digest: u64,
    /// Contributions (uploads) summed.
    pub contributions: u64,
    /// Loss summed over the exams.
    pub loss_sum: f64,
    /// Wall-clock time of the commit, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Commit {
    /// Its CSV line (without newline).
    pub fn to_line(&self) -> String {
        format!(
            "{},{},{},{},{},{:016x},{},{},{}",
            self.run_id,
            self.global_step,
            self.epoch,
            self.step_in_epoch,
            self.exams,
            self.exam_digest,
            self.contributions,
            self.loss_sum,
            self.unix_ms
        )
    }

    /// Parses a CSV line; the error says which field is wrong.
    pub fn parse(line: &str) -> std::result::Result<Commit, String> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 9 {
            return Err(format!("{} fields, expected 9", f.len()));
        }
        let int = |i: usize| -> std::result::Result<u64, String> {
            f[i].parse()
                .map_err(|_| format!("field {i} `{}` is not an integer", f[i]))
        };
        Ok(Commit {
            run_id: f[0].to_string(),
            global_step: int(1)?,
            epoch: int(2)?,
            step_in_epoch: int(3)?,
            exams: int(4)?,
            exam_digest: u64::from_str_radix(f[5], 16)
                .map_err(|_| format!("digest `{}` is not hexadecimal", f[5]))?,
            contributions: int(6)?,
            loss_sum: f[7]
                .parse()
                .map_err(|_| format!("loss `{}` is not a number", f[7]))?,
            unix_ms: int(8)?,
        })
    }
}

/// Appends `c` to `dir/`[`COMMITS_FILE`], writing the header first when the file is new.
pub fn append(dir: &Path, c: &Commit) -> Result<()> {
    let path = dir.join(COMMITS_FILE);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let new = f.metadata().map(|m| m.len() == 0).unwrap_or(false);
    let mut text = String::new();
    if new {
        text.push_str(HEADER);
        text.push('\n');
    }
    text.push_str(&c.to_line());
    text.push('\n');
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(&path, e))
}

/// Reads `dir/`[`COMMITS_FILE`]. A last line cut short by a crash is ignored; any other bad
/// line is an error naming its line number.
pub fn read(dir: &Path) -> Result<Vec<Commit>> {
    let path = dir.join(COMMITS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate().skip(1) {
        match Commit::parse(l) {
            Ok(c) => out.push(c),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(Error::Dataset(format!(
                    "{}: line {}: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}

/// The commits that made the final state of run `run_id`: the last line of each global step,
/// in step order (a restarted coordinator commits the steps after its checkpoint again).
pub fn final_lineage(commits: &[Commit], run_id: &str) -> Vec<Commit> {
    let mut by_step = std::collections::BTreeMap::new();
    for c in commits.iter().filter(|c| c.run_id == run_id) {
        by_step.insert(c.global_step, c.clone());
    }
    by_step.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(step: u64, ids: &[i64]) -> Commit {
        Commit {
            run_id: "r".into(),
            global_step: step,
            epoch: 0,
            step_in_epoch: step,
            exams: ids.len() as u64,
            exam_digest: digest(ids.iter().copied()),
            contributions: 2,
            loss_sum: 12.5,
            unix_ms: 1_700_000_000_000 + step,
        }
    }

    #[test]
    fn the_digest_ignores_order_and_sees_a_duplicate_or_a_loss() {
        let d = digest([1, 2, 3, 4]);
        assert_eq!(d, digest([4, 2, 1, 3]));
        assert_ne!(d, digest([1, 2, 3, 4, 4]));
        assert_ne!(d, digest([1, 2, 3]));
        assert_ne!(d, digest([1, 2, 3, 5]));
        assert_eq!(
            digest([1, 2]).wrapping_add(digest([3, 4])),
            d,
            "digests of parts add up to the digest of the whole"
        );
    }

    #[test]
    fn lines_round_trip_and_the_last_commit_of_a_step_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = commit(0, &[1, 2]);
        let b = commit(1, &[3]);
        let mut b2 = commit(1, &[3]);
        b2.unix_ms += 99;
        let mut other = commit(0, &[9]);
        other.run_id = "old".into();
        for c in [&other, &a, &b, &b2] {
            append(dir.path(), c).unwrap();
        }
        let all = read(dir.path()).unwrap();
        assert_eq!(all, vec![other.clone(), a.clone(), b, b2.clone()]);
        assert_eq!(final_lineage(&all, "r"), vec![a, b2]);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_middle_line_named() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &commit(0, &[1])).unwrap();
        let path = dir.path().join(COMMITS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("r,1,0,1,3,ab");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(dir.path()).unwrap().len(), 1);
        text.push_str("\nr,2,0,2,1,zz,1,0.5,7\n");
        std::fs::write(&path, &text).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }
}
