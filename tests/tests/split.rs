//! End-to-end tests of `coordinator split` and of the split library on the committed fixture
//! (`tests/fixtures/split/`, written by `scripts/py/make_split_fixture.py` from our Python port
//! of the seed's `get_splits` with NumPy's RandomState): exact patient lists per split, whole
//! patients, hash stability under added patients, pinned patients, and bad input.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ecg_shared::data::csv::{CsvColumns, ExamTable};
use ecg_shared::split::Split;
use ecg_shared::split::age_balanced::{AgeWindow, age_balanced};
use ecg_shared::split::groups::PatientGroups;
use ecg_shared::split::kind::Fractions;
use ecg_tests::{cmd, python, run_err, run_ok, workspace_root};

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/split").join(name)
}

/// One case of `cases.json`.
struct Case {
    name: String,
    seed: u32,
    fractions: (f64, f64),
    /// Per split: (patient, representative exam) in the seed's order.
    expected: BTreeMap<String, Vec<(i64, i64)>>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("cases.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    cases
        .iter()
        .map(|c| {
            let f = c["fractions"].as_array().unwrap();
            let mut expected: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
            let text = std::fs::read_to_string(fixture(c["file"].as_str().unwrap())).unwrap();
            for line in text.lines().skip(1) {
                let v: Vec<&str> = line.split(',').collect();
                let list = expected.entry(v[0].to_string()).or_default();
                assert_eq!(
                    v[1].parse::<usize>().unwrap(),
                    list.len(),
                    "positions are in order"
                );
                list.push((v[2].parse().unwrap(), v[3].parse().unwrap()));
            }
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                seed: c["seed"].as_u64().unwrap() as u32,
                fractions: (f[0].as_f64().unwrap(), f[1].as_f64().unwrap()),
                expected,
            }
        })
        .collect()
}

/// `(exam_id, patient_id, split)` rows of a split.csv.
fn read_split(path: &Path) -> Vec<(i64, i64, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("exam_id,patient_id,split"));
    lines
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            assert_eq!(v.len(), 3, "{l}");
            (
                v[0].parse().unwrap(),
                v[1].parse().unwrap(),
                v[2].to_string(),
            )
        })
        .collect()
}

/// Patients of each split; fails if a patient is in two splits.
fn patients_by_split(rows: &[(i64, i64, String)]) -> BTreeMap<String, BTreeSet<i64>> {
    let mut split_of: BTreeMap<i64, &str> = BTreeMap::new();
    let mut out: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (e, p, s) in rows {
        let first = *split_of.entry(*p).or_insert(s);
        assert_eq!(first, s, "patient {p} is in {first} and {s} (exam {e})");
        out.entry(s.clone()).or_default().insert(*p);
    }
    out
}

fn split_cmd(
    csv: &Path,
    out: &Path,
    strategy: &str,
    seed: u32,
    fractions: &str,
) -> std::process::Command {
    let mut c = cmd("coordinator");
    c.arg("split").arg("--csv").arg(csv).arg("--out").arg(out);
    c.args([
        "--strategy",
        strategy,
        "--seed",
        &seed.to_string(),
        "--fractions",
        fractions,
    ]);
    c
}

#[test]
fn binary_matches_the_seed_port_on_the_fixture() {
    let table = ExamTable::read(&fixture("exams.csv"), &CsvColumns::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let out = dir.path().join(format!("{}.csv", case.name));
        let fractions = format!("{},{}", case.fractions.0, case.fractions.1);
        let stdout = run_ok(&mut split_cmd(
            &fixture("exams.csv"),
            &out,
            "age-balanced",
            case.seed,
            &fractions,
        ));
        assert!(
            stdout.contains("train") && stdout.contains("age at exam"),
            "report printed: {stdout}"
        );
        let rows = read_split(&out);
        // One row per exam, in CSV order, with the CSV's patient.
        let ids: Vec<(i64, i64)> = rows.iter().map(|r| (r.0, r.1)).collect();
        let want: Vec<(i64, i64)> = table
            .exam_id
            .iter()
            .zip(&table.patient_id)
            .map(|(e, p)| (e.0, p.0))
            .collect();
        assert_eq!(ids, want, "{}", case.name);
        let got = patients_by_split(&rows);
        for split in ["test", "valid", "train"] {
            let want: BTreeSet<i64> = case
                .expected
                .get(split)
                .map(|l| l.iter().map(|x| x.0).collect())
                .unwrap_or_default();
            let got = got.get(split).cloned().unwrap_or_default();
            assert_eq!(got.len(), want.len(), "{}: size of {split}", case.name);
            assert!(
                got == want,
                "{}: patients of {split} differ from the fixture",
                case.name
            );
        }
    }
}

#[test]
fn library_reproduces_order_and_representative_exams() {
    let table = ExamTable::read(&fixture("exams.csv"), &CsvColumns::default()).unwrap();
    let groups = PatientGroups::new(&table.patient_id);
    for case in cases() {
        let f = Fractions::new(case.fractions.0, case.fractions.1).unwrap();
        let r = age_balanced(&groups, &table.age, case.seed, f, AgeWindow::default()).unwrap();
        for (split, name) in [
            (Split::Test, "test"),
            (Split::Valid, "valid"),
            (Split::Train, "train"),
        ] {
            let got: Vec<(i64, i64)> = r
                .patients(split)
                .iter()
                .map(|&p| {
                    (
                        groups.patients[p as usize].0,
                        table.exam_id[r.representative[p as usize] as usize].0,
                    )
                })
                .collect();
            let want = case.expected.get(name).cloned().unwrap_or_default();
            assert_eq!(
                got, want,
                "{}: {name} in order, with representatives",
                case.name
            );
        }
    }
}

#[test]
fn python_port_cli_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours.csv"), dir.path().join("theirs.csv"));
    run_ok(&mut split_cmd(
        &fixture("exams.csv"),
        &ours,
        "age-balanced",
        7,
        "0.25,0.1",
    ));
    run_ok(
        std::process::Command::new(python())
            .arg(workspace_root().join("scripts/py/get_splits.py"))
            .arg(fixture("exams.csv"))
            .args(["--seed", "7", "--splits", "0.25", "0.1", "--out"])
            .arg(&theirs),
    );
    let (a, b) = (
        std::fs::read_to_string(&ours).unwrap(),
        std::fs::read_to_string(&theirs).unwrap(),
    );
    assert_eq!(a.lines().count(), b.lines().count());
    assert!(
        a == b,
        "split.csv differs between the binary and scripts/py/get_splits.py"
    );
}

/// Writes a CSV `exam_id,age,patient_id` from `(exam, patient, age)` rows.
fn write_table(path: &Path, rows: &[(i64, i64, f64)]) {
    let mut text = String::from("exam_id,age,patient_id\n");
    for (e, p, a) in rows {
        text.push_str(&format!("{e},{a},{p}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn split_of_patients(rows: &[(i64, i64, String)]) -> BTreeMap<i64, String> {
    patients_by_split(rows)
        .into_iter()
        .flat_map(|(s, ps)| ps.into_iter().map(move |p| (p, s.clone())))
        .collect()
}

#[test]
fn hash_split_is_stable_when_patients_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(i64, i64, f64)> = (0..900)
        .map(|i| (1000 + i, (i * 7919) % 400, (20 + i % 60) as f64))
        .collect();
    let mut grown = rows.clone();
    grown.extend((0..700).map(|i| (5000 + i, 400 + (i * 31) % 500, 50.0)));
    grown.extend((0..50).map(|i| (9000 + i, i, 70.0))); // new exams of existing patients
    grown.reverse();
    let (small, big) = (dir.path().join("small.csv"), dir.path().join("big.csv"));
    write_table(&small, &rows);
    write_table(&big, &grown);
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    run_ok(&mut split_cmd(&small, &a, "hash", 5, "0.2,0.1"));
    run_ok(&mut split_cmd(&big, &b, "hash", 5, "0.2,0.1"));
    let (before, after) = (
        split_of_patients(&read_split(&a)),
        split_of_patients(&read_split(&b)),
    );
    assert_eq!(before.len(), 400);
    assert_eq!(after.len(), 900);
    for (p, s) in &before {
        assert_eq!(&after[p], s, "patient {p} moved");
    }
    let n_test = before.values().filter(|s| *s == "test").count();
    assert!(
        (40..=120).contains(&n_test),
        "about 20% of 400 in test: {n_test}"
    );
}

#[test]
fn file_strategy_pins_listed_patients_and_hashes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(i64, i64, f64)> = (0..600).map(|i| (1 + i, i % 200, 40.0)).collect();
    let csv = dir.path().join("exams.csv");
    write_table(&csv, &rows);
    let pins = dir.path().join("pins.csv");
    std::fs::write(
        &pins,
        "patient_id,split\n3,\n5,train\n7,valid\n3,\n11,\n999,test\n",
    )
    .unwrap();
    let (pinned, hashed) = (dir.path().join("pinned.csv"), dir.path().join("hashed.csv"));
    let mut c = split_cmd(&csv, &pinned, "file", 2, "0.1,0.1");
    c.arg("--pin-file").arg(&pins).args(["--pin-split", "test"]);
    let stdout = run_ok(&mut c);
    assert!(
        stdout.contains("pinned patients without exams in the table: 1"),
        "{stdout}"
    );
    run_ok(&mut split_cmd(&csv, &hashed, "hash", 2, "0.1,0.1"));
    let (p, h) = (
        split_of_patients(&read_split(&pinned)),
        split_of_patients(&read_split(&hashed)),
    );
    assert_eq!(
        (
            p[&3].as_str(),
            p[&5].as_str(),
            p[&7].as_str(),
            p[&11].as_str()
        ),
        ("test", "train", "valid", "test")
    );
    for (patient, s) in &p {
        if ![3, 5, 7, 11].contains(patient) {
            assert_eq!(
                s, &h[patient],
                "unlisted patient {patient} follows the hash split"
            );
        }
    }

    // A pin file without a split column: everyone listed goes to --pin-split.
    let ids = dir.path().join("ids.csv");
    std::fs::write(&ids, "pid\n20\n21\n").unwrap();
    let mut c = split_cmd(&csv, &pinned, "file", 2, "0.1,0.1");
    c.arg("--pin-file")
        .arg(&ids)
        .args(["--pin-col", "pid", "--pin-split", "valid"]);
    run_ok(&mut c);
    let p = split_of_patients(&read_split(&pinned));
    assert_eq!((p[&20].as_str(), p[&21].as_str()), ("valid", "valid"));

    // One patient, two splits.
    std::fs::write(&pins, "patient_id,split\n3,test\n4,train\n3,valid\n").unwrap();
    let mut c = split_cmd(&csv, &pinned, "file", 2, "0.1,0.1");
    c.arg("--pin-file").arg(&pins);
    let err = run_err(&mut c);
    assert!(
        err.contains("pins.csv") && err.contains("patient 3 is pinned to test"),
        "{err}"
    );
}

#[test]
fn bad_input_fails_with_a_message_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture("exams.csv");
    let out = dir.path().join("split.csv");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec!["--age-col".into(), "idade".into()],
            vec!["exams.csv", "missing column `idade`"],
        ),
        (
            vec!["--fractions".into(), "0.9,0.2".into()],
            vec!["--fractions", "more than 1"],
        ),
        (
            vec!["--fractions=-0.1,0.2".into()],
            vec!["--fractions", "-0.1"],
        ),
        (
            vec!["--fractions".into(), "0.1".into()],
            vec!["--fractions", "two values"],
        ),
        (
            vec!["--strategy".into(), "random".into()],
            vec!["--strategy", "random"],
        ),
        (vec!["--strategy".into(), "file".into()], vec!["--pin-file"]),
        (
            vec!["--pin-file".into(), "pins.csv".into()],
            vec!["--pin-file", "only used with --strategy file"],
        ),
        (vec!["--seed=-3".into()], vec!["--seed", "-3"]),
    ];
    for (args, wants) in cases {
        let mut c = cmd("coordinator");
        c.arg("split")
            .arg("--csv")
            .arg(&csv)
            .arg("--out")
            .arg(&out)
            .args(&args);
        let err = run_err(&mut c);
        for want in wants {
            assert!(err.contains(want), "{args:?}: expected `{want}` in: {err}");
        }
    }
    let mut c = cmd("coordinator");
    c.arg("split")
        .arg("--csv")
        .arg(dir.path().join("absent.csv"))
        .arg("--out")
        .arg(&out);
    assert!(run_err(&mut c).contains("absent.csv"));
    assert!(!out.exists(), "no split.csv after a failure");
}
