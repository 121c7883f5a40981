//! Every malformed configuration, exams table, HDF5 file, checkpoint and run setting that the
//! data layer refuses is refused by `coordinator --config` too, before it serves, naming the
//! problem and leaving a previous run's files alone.
use std::os::unix::fs::FileExt;
use std::path::Path;

use ecg_tests::cmd;

use crate::cases::Cases;
use crate::support::{
    Toml, assert_refused, cohort, column, h5py_damage, quoted, read_csv, run_bounded, write_csv,
};

#[test]
fn the_coordinator_refuses_every_bad_input_before_serving_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path());
    let csv = data.join("exams.csv");
    let (header, rows) = read_csv(&csv);
    let (age, exam) = (column(&header, "age"), column(&header, "exam_id"));
    let mut t = Cases {
        root: tmp.path().to_path_buf(),
        data: data.clone(),
        done: Vec::new(),
    };
    let ok = || Toml::healthy(&data);
    let path = |d: &Path, f: &str| d.join(f).display().to_string();

    // The configuration.
    t.refused(
        "unknown key",
        ok().set("training", "bogus", "1"),
        &["cluster.toml", "unknown key `bogus` in [training]"],
    );
    t.refused(
        "wrong type",
        ok().set("training", "epochs", "\"one\""),
        &["training.epochs", "string \"one\""],
    );
    t.refused(
        "not TOML",
        ok().set("data", "root", "[broken"),
        &["cluster.toml", "TOML parse error"],
    );
    t.refused_with(
        "unknown environment override",
        ok(),
        &[("ECG__TRAINING__EPOCHZ", "3")],
        &[],
        &[
            "ECG__TRAINING__EPOCHZ",
            "not an override of a known setting",
        ],
    );
    t.refused_with(
        "environment override of the wrong type",
        ok(),
        &[("ECG__TRAINING__EPOCHS", "abc")],
        &[],
        &["ECG__TRAINING__EPOCHS=`abc`", "expected an integer"],
    );
    t.refused(
        "split fractions over 1",
        ok().set("split", "fractions", "[0.7, 0.5]"),
        &["split.fractions", "more than 1"],
    );
    t.refused(
        "split fractions that leave no one to train on",
        ok().set("split", "fractions", "[0.5, 0.5]"),
        &["split.fractions", "no patient in the train split"],
    );
    t.refused(
        "no validation patient",
        ok().set("split", "fractions", "[0.2, 0.0]"),
        &["split.fractions", "no patient in the valid split"],
    );
    t.refused(
        "model input and data lengths differ",
        ok().set("data", "n_samples", "2048"),
        &["model.seq_length", "data.n_samples = 2048"],
    );

    // The exams table.
    let d = t.damaged("csv-missing", |d| {
        std::fs::remove_file(d.join("exams.csv")).unwrap()
    });
    t.refused(
        "exams table missing",
        Toml::healthy(&d),
        &[&path(&d, "exams.csv"), "No such file"],
    );
    let d = t.damaged("csv-column", |d| {
        let (mut h, r) = read_csv(&d.join("exams.csv"));
        h[age] = "idade".into();
        write_csv(&d.join("exams.csv"), &h, &r);
    });
    t.refused(
        "age column missing",
        Toml::healthy(&d),
        &[&path(&d, "exams.csv"), "line 1", "missing column `age`"],
    );
    let d = t.damaged("csv-age", |d| {
        let (h, mut r) = read_csv(&d.join("exams.csv"));
        r[1][age] = "old".into();
        write_csv(&d.join("exams.csv"), &h, &r);
    });
    t.refused(
        "age not a number",
        Toml::healthy(&d),
        &[
            &path(&d, "exams.csv"),
            "line 3",
            "column `age`: `old` is not a number",
        ],
    );
    let bad_id = format!("{}x", rows[0][exam]);
    let d = t.damaged("csv-id", |d| {
        let (h, mut r) = read_csv(&d.join("exams.csv"));
        r[0][exam] = bad_id.clone();
        write_csv(&d.join("exams.csv"), &h, &r);
    });
    t.refused(
        "exam id not an integer",
        Toml::healthy(&d),
        &[
            &path(&d, "exams.csv"),
            "line 2",
            &format!("`{bad_id}` is not an integer id"),
        ],
    );
    let d = t.damaged("csv-no-ages", |d| {
        let (h, mut r) = read_csv(&d.join("exams.csv"));
        for row in &mut r {
            row[age].clear();
        }
        write_csv(&d.join("exams.csv"), &h, &r);
    });
    t.refused(
        "every age empty",
        Toml::healthy(&d),
        &["no usable exam", &path(&d, "exams.csv")],
    );
    let d = t.damaged("csv-dup", |d| {
        let (h, mut r) = read_csv(&d.join("exams.csv"));
        r.push(r[0].clone());
        write_csv(&d.join("exams.csv"), &h, &r);
    });
    t.refused(
        "duplicate exam id in the table",
        Toml::healthy(&d),
        &[
            &path(&d, "exams.csv"),
            &format!(
                "exam_id {} appears on data rows 1 and {}",
                rows[0][exam],
                rows.len() + 1
            ),
        ],
    );
    let d = t.damaged("csv-header-only", |d| {
        write_csv(&d.join("exams.csv"), &header, &[])
    });
    t.refused(
        "table without rows",
        Toml::healthy(&d),
        &[&path(&d, "exams.csv"), "no rows"],
    );

    // The HDF5 files.
    let d = t.damaged("h5-missing", |d| {
        std::fs::remove_file(d.join("exams_part1.hdf5")).unwrap()
    });
    t.refused(
        "listed HDF5 file missing",
        Toml::healthy(&d).set(
            "data",
            "hdf5",
            "[\"exams_part0.hdf5\", \"exams_part1.hdf5\"]",
        ),
        &["data.hdf5", &path(&d, "exams_part1.hdf5"), "does not exist"],
    );
    let d = t.damaged("h5-none", |d| {
        for p in ["exams_part0.hdf5", "exams_part1.hdf5"] {
            std::fs::remove_file(d.join(p)).unwrap();
        }
    });
    t.refused(
        "no HDF5 file matches",
        Toml::healthy(&d),
        &[
            "data.hdf5",
            &path(&d, "exams_part*.hdf5"),
            "matches no file",
        ],
    );
    let d = t.damaged("h5-text", |d| {
        std::fs::write(d.join("exams_part1.hdf5"), "exam_id,tracing\n").unwrap()
    });
    t.refused(
        "not an HDF5 file",
        Toml::healthy(&d),
        &[&path(&d, "exams_part1.hdf5"), "not an HDF5 file"],
    );
    let d = t.damaged("h5-cut", |d| {
        let p = d.join("exams_part0.hdf5");
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len / 2).unwrap();
    });
    t.refused(
        "truncated HDF5 file",
        Toml::healthy(&d),
        &[&path(&d, "exams_part0.hdf5"), "truncated"],
    );
    let d = t.damaged("h5-scribbled", |d| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("exams_part1.hdf5"))
            .unwrap();
        f.write_all_at(&[0xff; 1500], 100).unwrap();
    });
    t.refused(
        "HDF5 metadata overwritten",
        Toml::healthy(&d),
        &[&path(&d, "exams_part1.hdf5"), "damaged"],
    );
    t.refused(
        "tracings under another name",
        ok().set("data", "traces_dset", "\"signals\""),
        &[
            &path(&data, "exams_part0.hdf5"),
            "no dataset `signals`",
            "tracings",
        ],
    );
    t.refused(
        "exam id dataset under another name",
        ok().set("data", "ids_dset", "\"ids\""),
        &[
            &path(&data, "exams_part0.hdf5"),
            "no dataset `ids`",
            "exam_id",
        ],
    );
    let h5 = |kind: &str| t.damaged(&format!("h5-{kind}"), |_| {});
    let (ints, leads, short, halves) = (h5("int16"), h5("leads8"), h5("short_ids"), h5("half_ids"));
    h5py_damage(&[
        ("int16", ints.join("exams_part1.hdf5")),
        ("leads8", leads.join("exams_part1.hdf5")),
        ("short_ids", short.join("exams_part1.hdf5")),
        ("half_ids", halves.join("exams_part1.hdf5")),
    ]);
    t.refused(
        "tracings of integers",
        Toml::healthy(&ints),
        &[
            &path(&ints, "exams_part1.hdf5"),
            "type int16",
            "expected float32 or float64",
        ],
    );
    t.refused(
        "tracings of 8 leads",
        Toml::healthy(&leads),
        &[&path(&leads, "exams_part1.hdf5"), "expected (N, 4096, 12)"],
    );
    t.refused(
        "fewer exam ids than tracings",
        Toml::healthy(&short),
        &[
            &path(&short, "exams_part1.hdf5"),
            "`exam_id` has",
            "ids but the tracings have",
        ],
    );
    t.refused(
        "exam ids that are not integers",
        Toml::healthy(&halves),
        &[&path(&halves, "exams_part1.hdf5"), "is not an integer id"],
    );
    let d = t.damaged("h5-twice", |d| {
        std::fs::copy(d.join("exams_part0.hdf5"), d.join("exams_part1.hdf5")).unwrap();
    });
    t.refused(
        "exam ids in two HDF5 files",
        Toml::healthy(&d),
        &[
            "appears 2 times in the HDF5 files",
            &path(&d, "exams_part0.hdf5"),
            &path(&d, "exams_part1.hdf5"),
        ],
    );
    let d = t.damaged("h5-same-name", |d| {
        std::fs::create_dir(d.join("more")).unwrap();
        std::fs::copy(d.join("exams_part1.hdf5"), d.join("more/exams_part1.hdf5")).unwrap();
    });
    t.refused(
        "two HDF5 files of one name",
        Toml::healthy(&d).set(
            "data",
            "hdf5",
            "[\"exams_part1.hdf5\", \"more/exams_part1.hdf5\"]",
        ),
        &["two HDF5 files have the same name `exams_part1.hdf5`"],
    );
    t.refused(
        "rows by position whose numbers differ",
        ok().set("data", "ids_dset", "\"\""),
        &["by position", &csv.display().to_string()],
    );

    // The rest of what a run reads before it serves.
    let pins = tmp.path().join("absent-pins.csv");
    t.refused(
        "pin file missing",
        ok().set("split", "strategy", "\"file\"")
            .set("split", "pin_file", &quoted(&pins)),
        &[&pins.display().to_string()],
    );
    let token = tmp.path().join("absent-token");
    t.refused(
        "token file missing",
        ok().set("cluster", "token_file", &quoted(&token)),
        &["cluster.token_file", &token.display().to_string()],
    );
    let empty = tmp.path().join("empty-token");
    std::fs::write(&empty, " \n").unwrap();
    t.refused(
        "token file empty",
        ok().set("cluster", "token_file", &quoted(&empty)),
        &["cluster.token_file", &empty.display().to_string(), "empty"],
    );
    let absent = tmp.path().join("absent.safetensors");
    t.refused(
        "starting checkpoint missing",
        ok().set("training", "init_from", &quoted(&absent)),
        &[&absent.display().to_string()],
    );
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    t.refused(
        "starting checkpoint corrupt",
        ok().set("training", "init_from", &quoted(&junk)),
        &[
            &junk.display().to_string(),
            "not a readable safetensors file",
        ],
    );
    t.refused_with(
        "previous training state corrupt",
        ok(),
        &[],
        &[("train_state.safetensors", b"\x05\0\0\0\0\0\0\0{bad}")],
        &["@OUT/train_state.safetensors", "no usable training state"],
    );
    t.refused(
        "listen address not host:port",
        ok().set("cluster", "listen", "\"nohost\""),
        &["cluster.listen", "nohost", "expected host:port"],
    );
    t.refused(
        "output folder is a file",
        ok().set("output", "dir", "\"@OUT/history.csv\""),
        &["output.dir", "@OUT/history.csv", "not a folder"],
    );

    // A configuration file that is not there.
    let absent_cfg = tmp.path().join("absent.toml");
    let mut c = cmd("coordinator");
    c.arg("--config").arg(&absent_cfg);
    let e = run_bounded(c);
    let all = format!("{}\n{}", e.stdout, e.stderr);
    assert_refused(
        "configuration missing",
        e.status,
        &e.stderr,
        &all,
        &[absent_cfg.display().to_string()],
    );
    assert!(t.done.len() >= 30, "{} cases", t.done.len());
}
