//! A worker that sees a damaged copy of the dataset, an unreadable token file or an address
//! that is not host:port stops naming the problem before it trains; `worker check-data` names
//! the same damage; the coordinator goes on waiting, and a healthy worker completes the run.
use std::path::Path;

use ecg_tests::cluster::{start_coordinator, start_worker};
use ecg_tests::{cmd, run_ok};

use crate::support::{
    Toml, assert_refused, cohort, column, copy_dir, quoted, read_csv, run_bounded, write_csv,
};

#[test]
fn a_worker_that_sees_bad_data_stops_naming_it_and_a_healthy_one_then_completes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path());
    let out = tmp.path().join("run");
    let cfg = tmp.path().join("cluster.toml");
    let toml = Toml::healthy(&data).set("output", "dir", &quoted(&out));
    std::fs::write(&cfg, toml.text(&out)).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    let fingerprint = coord.wait_for_line("dataset fingerprint");

    // Damaged copies of the dataset, as a worker's node may see it.
    let copy = |name: &str| {
        let d = tmp.path().join(name);
        copy_dir(&data, &d);
        d
    };
    let no_part = copy("no-part");
    std::fs::remove_file(no_part.join("exams_part1.hdf5")).unwrap();
    let cut = copy("cut");
    let part0 = cut.join("exams_part0.hdf5");
    let len = std::fs::metadata(&part0).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part0)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    let renamed = copy("renamed");
    let (mut header, rows) = read_csv(&renamed.join("exams.csv"));
    let age = column(&header, "age");
    header[age] = "Idade".into();
    write_csv(&renamed.join("exams.csv"), &header, &rows);
    // The exams that the missing part holds, by the table's own trace_file column.
    let trace = column(&header, "trace_file");
    let in_part1 = rows
        .iter()
        .filter(|r| r[trace] == "exams_part1.hdf5")
        .count();
    assert!(in_part1 > 0);

    let damaged: [(&str, &Path, Vec<String>); 3] = [
        (
            "missing part",
            &no_part,
            vec![
                format!("exams_part1.hdf5 ({in_part1} exams)"),
                "dataset fingerprint".into(),
            ],
        ),
        (
            "truncated part",
            &cut,
            vec![part0.display().to_string(), "truncated".into()],
        ),
        (
            "renamed column",
            &renamed,
            vec![
                renamed.join("exams.csv").display().to_string(),
                "missing column `age`".into(),
            ],
        ),
    ];
    for (what, root, wants) in &damaged {
        let root = root.display().to_string();
        let log = tmp
            .path()
            .join(format!("worker-{}.log", what.replace(' ', "-")));
        let mut w = start_worker(&addr, log, &["--data-root", &root]);
        let status = w.wait();
        let text = w.output();
        assert_refused(what, status, &text, &text, wants);
        assert!(!text.contains("joined run"), "{what}: it joined:\n{text}");
    }
    let absent = tmp.path().join("absent-token");
    let folder = tmp.path().to_path_buf();
    for (what, token) in [
        ("token file missing", &absent),
        ("token file a folder", &folder),
    ] {
        let token = token.display().to_string();
        let log = tmp
            .path()
            .join(format!("worker-{}.log", what.replace(' ', "-")));
        let mut w = start_worker(&addr, log, &["--token-file", &token]);
        let status = w.wait();
        let text = w.output();
        assert_refused(what, status, &text, &text, std::slice::from_ref(&token));
        assert!(!text.contains("joined run"), "{what}: it joined:\n{text}");
    }
    for (bad, want) in [
        ("localhost", "no port"),
        ("127.0.0.1:http", "`http` is not a port"),
        ("ftp://127.0.0.1:21", "`ftp://`"),
    ] {
        let mut c = cmd("worker");
        c.args(["--coordinator", bad, "--cpu"]);
        let e = run_bounded(c);
        let all = format!("{}\n{}", e.stdout, e.stderr);
        let wants = [
            "--coordinator".to_string(),
            bad.to_string(),
            want.to_string(),
        ];
        assert_refused(
            &format!("--coordinator {bad}"),
            e.status,
            &e.stderr,
            &all,
            &wants,
        );
    }

    // `worker check-data` names the same damage; the missing part is reported (a node may
    // hold a subset of the parts), with a fingerprint that is not the coordinator's.
    let check = |root: &Path| {
        let mut c = cmd("worker");
        c.args(["check-data", "--config"])
            .arg(&cfg)
            .arg("--data-root")
            .arg(root);
        run_bounded(c)
    };
    let e = check(&no_part);
    assert!(e.status.success(), "{e:?}");
    assert!(
        e.stdout
            .contains(&format!("not here: exams_part1.hdf5 ({in_part1} exams)")),
        "{}",
        e.stdout
    );
    assert!(e.stderr.contains("exams_part1.hdf5"), "{}", e.stderr);
    let theirs = e
        .stdout
        .lines()
        .find(|l| l.starts_with("dataset fingerprint"))
        .expect("a fingerprint");
    assert_ne!(theirs.trim(), fingerprint.trim());
    for (what, root, wants) in &damaged[1..] {
        let e = check(root);
        let all = format!("{}\n{}", e.stdout, e.stderr);
        assert_refused(
            &format!("check-data, {what}"),
            e.status,
            &e.stderr,
            &all,
            wants,
        );
    }
    let e = check(&data);
    assert!(e.status.success(), "{e:?}");
    assert!(e.stdout.contains(fingerprint.trim()), "{}", e.stdout);

    // The coordinator went on waiting, with no member; a healthy worker then runs it through.
    assert!(!coord.output().contains("run over"), "{}", coord.output());
    let status = run_ok(cmd("coordinator").args(["status", "--coordinator", &addr]));
    assert!(status.contains(": waiting"), "{status}");
    assert!(status.contains("0 worker(s)"), "{status}");
    let mut good = start_worker(&addr, tmp.path().join("worker-good.log"), &[]);
    let text = coord.wait_ok();
    good.wait_ok();
    assert!(text.contains("run over"), "{text}");
    assert!(out.join("history.csv").exists());
}
