//! Security of the coordinator <-> worker link with the real binaries over real sockets: a
//! worker trains to the end over TLS, and over mutual TLS with a client certificate; workers
//! that cannot prove who they are (no client certificate, one from another CA), that do not
//! trust the coordinator (wrong CA, wrong name) or that do not speak TLS fail at once with the
//! reason and a non-zero exit while the run goes on; the cluster token appears in no log (at
//! `RUST_LOG=trace`), in no output file, not in `/metrics`, not in the configuration sent to
//! workers and not in `coordinator status`; the gRPC health service answers without the token
//! while the coordinator service refuses; and wrong TLS settings stop the coordinator at start
//! with the setting's name and the file.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ecg_proto::v1;
use ecg_tests::cluster::{
    MICRO, Proc, http_get, start_coordinator, start_coordinator_with, start_worker, synth_cohort,
};
use ecg_tests::tls::{Pki, make};
use ecg_tests::{cmd, run_err, run_ok};

/// One short epoch.
const TRAINING: &str = "[training]\nepochs = 1\nbatch_size = 4\n";
/// A refused worker must be told within this (it would otherwise retry for 600 s).
const FAST: Duration = Duration::from_secs(60);

fn cohort(dir: &Path) -> PathBuf {
    synth_cohort(dir, "data", 24, 3, 400)
}

/// A cluster.toml in `dir` for a run in `dir/out`, listening on a free port, with `cluster`
/// lines added to `[cluster]`.
fn config(dir: &Path, data: &Path, cluster: &str) -> (PathBuf, PathBuf) {
    let out = dir.join("out");
    let p = dir.join("cluster.toml");
    std::fs::write(
        &p,
        format!(
            "[data]\nroot = {data:?}\n[output]\ndir = {out:?}\n[split]\nstrategy = \"hash\"\n\
             fractions = [0.1, 0.2]\n{MICRO}{TRAINING}[cluster]\nlisten = \"127.0.0.1:0\"\n\
             metrics_listen = \"\"\nmin_workers = 1\nheartbeat_ms = 100\n\
             worker_timeout_ms = 5000\n{cluster}"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(&out).unwrap();
    (p, out)
}

/// `[cluster]` lines for TLS with the test's server certificate, as paths relative to the
/// TOML's folder (they must resolve against it).
fn tls_lines(dir: &Path, pki: &Pki) -> String {
    let rel = |p: &Path| p.strip_prefix(dir).unwrap().display().to_string();
    format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        rel(&pki.server.cert),
        rel(&pki.server.key)
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Starts a worker that must fail; returns its output once it has, checking that it took less
/// than `FAST`.
fn refused(addr: &str, log: PathBuf, args: &[&str]) -> String {
    let started = Instant::now();
    let mut w = start_worker(addr, log, args);
    let status = w.wait();
    let took = started.elapsed();
    let out = w.output();
    assert!(!status.success(), "the worker should have failed:\n{out}");
    assert!(took < FAST, "the worker took {took:?} to give up:\n{out}");
    assert!(!out.contains("panicked"), "{out}");
    out
}

#[test]
fn a_worker_trains_over_tls_and_wrong_ca_name_or_plain_text_fail_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make(&tmp.path().join("certs"));
    let data = cohort(tmp.path());
    let (cfg, out) = config(tmp.path(), &data, &tls_lines(tmp.path(), &pki));
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    assert!(
        coord
            .output()
            .contains(&format!("listening on {addr} with TLS")),
        "{}",
        coord.output()
    );
    let port = addr.rsplit(':').next().unwrap();

    let text = refused(
        &addr,
        out.join("w-other-ca.log"),
        &["--tls-ca", &s(&pki.other_ca)],
    );
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("--tls-ca"), "{text}");
    let text = refused(
        &addr,
        out.join("w-name.log"),
        &["--tls-ca", &s(&pki.ca), "--tls-domain", "elsewhere.test"],
    );
    assert!(
        text.contains("certificate") && text.contains("not valid for name"),
        "{text}"
    );
    let text = refused(&addr, out.join("w-plain.log"), &[]);
    assert!(text.contains("serves TLS; give --tls-ca"), "{text}");

    // The name checked is the host of --coordinator: `localhost` is in the certificate too.
    let mut w = start_worker(
        &format!("localhost:{port}"),
        out.join("w-good.log"),
        &["--tls-ca", &s(&pki.ca)],
    );
    let text = coord.wait_ok();
    w.wait_ok();
    assert!(text.contains("run over"), "{text}");
}

#[test]
fn a_worker_with_a_plain_text_coordinator_and_tls_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make(&tmp.path().join("certs"));
    let data = cohort(tmp.path());
    let (cfg, out) = config(tmp.path(), &data, "");
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    let text = refused(&addr, out.join("w-tls.log"), &["--tls-ca", &s(&pki.ca)]);
    assert!(text.contains("does not speak TLS"), "{text}");
    let mut w = start_worker(&addr, out.join("w-good.log"), &[]);
    coord.wait_ok();
    w.wait_ok();
}

#[test]
fn mutual_tls_admits_a_worker_with_a_client_certificate_and_refuses_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make(&tmp.path().join("certs"));
    let data = cohort(tmp.path());
    let (cfg, out) = config(
        tmp.path(),
        &data,
        &format!(
            "{}tls_client_ca = {:?}\n",
            tls_lines(tmp.path(), &pki),
            pki.ca
        ),
    );
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    assert!(
        coord.output().contains("with mutual TLS"),
        "{}",
        coord.output()
    );
    let ca = s(&pki.ca);

    let text = refused(&addr, out.join("w-none.log"), &["--tls-ca", &ca]);
    assert!(text.contains("client certificate"), "{text}");
    let text = refused(
        &addr,
        out.join("w-stranger.log"),
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &s(&pki.other_client.cert),
            "--tls-key",
            &s(&pki.other_client.key),
        ],
    );
    assert!(text.contains("certificate"), "{text}");
    // A certificate without its key is refused before connecting.
    let text = refused(
        &addr,
        out.join("w-half.log"),
        &["--tls-ca", &ca, "--tls-cert", &s(&pki.client.cert)],
    );
    assert!(text.contains("--tls-key"), "{text}");

    // `coordinator status` takes the same flags.
    let status = || {
        let mut c = cmd("coordinator");
        c.args(["status", "--coordinator", &addr, "--tls-ca", &ca]);
        c
    };
    run_err(&mut status());
    let text = run_ok(
        status()
            .arg("--tls-cert")
            .arg(&pki.client.cert)
            .arg("--tls-key")
            .arg(&pki.client.key),
    );
    assert!(text.contains("0 worker(s)"), "{text}");

    let mut w = start_worker(
        &addr,
        out.join("w-good.log"),
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &s(&pki.client.cert),
            "--tls-key",
            &s(&pki.client.key),
        ],
    );
    let text = coord.wait_ok();
    w.wait_ok();
    assert!(text.contains("run over"), "{text}");
}

/// Starts the coordinator with `RUST_LOG=trace` and waits for its address.
fn coordinator_traced(cfg: &Path, log: PathBuf) -> (Proc, String) {
    start_coordinator_with(cfg, log, &[("RUST_LOG", "trace")])
}

/// A worker on one thread with `RUST_LOG=trace`.
fn worker_traced(addr: &str, log: PathBuf, args: &[&str]) -> Proc {
    let mut c = cmd("worker");
    c.args(["--coordinator", addr, "--cpu", "--threads", "1"])
        .args(args)
        .env("RUST_LOG", "trace");
    Proc::spawn("worker", c, log)
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

/// A gRPC channel to `addr` over TLS, trusting `ca`.
async fn tls_channel(addr: &str, ca: &Path) -> tonic::transport::Channel {
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap());
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[test]
fn the_token_shows_nowhere_and_health_answers_without_it() {
    const TOKEN: &str = "tok-5e1f0c9a2b7d4836-never-show";
    const WRONG: &str = "tok-wrong-93d1a8c7e6b2f504";
    let tmp = tempfile::tempdir().unwrap();
    let pki = make(&tmp.path().join("certs"));
    let data = cohort(tmp.path());
    let token = tmp.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, format!("{WRONG}\n")).unwrap();
    let (cfg, out) = config(
        tmp.path(),
        &data,
        &format!("{}token_file = \"token\"\n", tls_lines(tmp.path(), &pki)),
    );
    // The metrics endpoint on a free port too.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("metrics_listen = \"\"", "metrics_listen = \"127.0.0.1:0\"");
    std::fs::write(&cfg, text).unwrap();
    let (mut coord, addr) = coordinator_traced(&cfg, out.join("coordinator.log"));
    assert!(
        coord.output().contains("token required"),
        "{}",
        coord.output()
    );
    let ca = s(&pki.ca);

    let mut bad = worker_traced(
        &addr,
        out.join("w-wrong.log"),
        &["--tls-ca", &ca, "--token-file", &s(&wrong)],
    );
    assert!(!bad.wait().success());
    let bad_log = bad.output();
    assert!(bad_log.contains("token is missing or wrong"), "{bad_log}");

    // What the workers are sent, and the health service, straight over gRPC.
    let (config_toml, health, unauthenticated) =
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let channel = tls_channel(&addr, &pki.ca).await;
            let mut req = tonic::Request::new(v1::RunInfoRequest {
                protocol_version: ecg_proto::PROTOCOL_VERSION,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            let mut c = v1::coordinator_client::CoordinatorClient::new(channel.clone());
            let info = c.get_run_info(req).await.unwrap().into_inner();
            let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "ecg.v1.Coordinator".into(),
                })
                .await
                .unwrap()
                .into_inner();
            let refused = c
                .status(v1::StatusRequest {})
                .await
                .expect_err("the coordinator service needs the token");
            (info.config_toml, health, refused.code())
        });
    assert!(
        config_toml.contains("token_file"),
        "the resolved configuration is sent: {config_toml}"
    );
    assert!(!config_toml.contains(TOKEN), "{config_toml}");
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(unauthenticated, tonic::Code::Unauthenticated);

    let status = run_ok(
        cmd("coordinator")
            .args(["status", "--coordinator", &addr, "--tls-ca", &ca])
            .arg("--token-file")
            .arg(&token)
            .env("RUST_LOG", "trace"),
    );
    assert!(status.contains("worker(s)"), "{status}");
    assert!(!status.contains(TOKEN), "{status}");
    let status_err = run_err(
        cmd("coordinator")
            .args(["status", "--coordinator", &addr, "--tls-ca", &ca])
            .arg("--token-file")
            .arg(&wrong)
            .env("RUST_LOG", "trace"),
    );
    assert!(
        status_err.contains("token is missing or wrong"),
        "{status_err}"
    );
    assert!(!status_err.contains(WRONG), "{status_err}");

    let good = worker_traced(
        &addr,
        out.join("w-good.log"),
        &["--tls-ca", &ca, "--token-file", &s(&token)],
    );
    good.wait_for_line("joined run");
    let metrics_addr = coord
        .output()
        .split("metrics on http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .expect("the metrics address in the coordinator's output")
        .to_string();
    let page = http_get(&metrics_addr, "/metrics");
    assert!(page.contains("ecg_rejected_total"), "{page}");
    assert!(!page.contains(TOKEN) && !page.contains(WRONG), "{page}");

    let mut good = good;
    let coord_log = coord.wait_ok();
    let good_log = good.wait_ok();
    assert!(
        coord_log.contains("TRACE"),
        "the coordinator logged at trace level"
    );
    assert!(
        good_log.contains("TRACE"),
        "the worker logged at trace level"
    );
    for (name, log) in [
        ("coordinator", &coord_log),
        ("worker", &good_log),
        ("refused worker", &bad_log),
    ] {
        for t in [TOKEN, WRONG] {
            assert!(!log.contains(t), "the {name}'s log shows a token");
        }
    }
    assert!(out.join("config.json").exists());
    // Every output file (config.json, history, checkpoints, logs) is free of the token.
    for t in [TOKEN, WRONG] {
        assert_eq!(files_containing(&out, t), Vec::<PathBuf>::new());
    }
}

/// Runs `coordinator --config` with `[cluster]` lines `cluster` on data that does not exist, and
/// returns its error output: the TLS settings must be refused before the dataset is looked at.
fn config_error(dir: &Path, cluster: &str) -> String {
    let (cfg, _) = config(dir, &dir.join("no-data-here"), cluster);
    let err = run_err(cmd("coordinator").arg("--config").arg(&cfg));
    assert!(
        !err.contains("no-data-here"),
        "TLS is checked first:\n{err}"
    );
    err
}

#[test]
fn wrong_tls_settings_stop_the_coordinator_at_start_naming_the_setting_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make(&tmp.path().join("certs"));
    let d = tmp.path();

    let err = config_error(d, &format!("tls_key = {:?}\n", pki.server.key));
    assert!(
        err.contains("cluster.tls_key") && err.contains("tls_cert"),
        "{err}"
    );
    let err = config_error(d, &format!("tls_cert = {:?}\n", pki.server.cert));
    assert!(
        err.contains("cluster.tls_cert") && err.contains("tls_key"),
        "{err}"
    );
    let err = config_error(d, &format!("tls_client_ca = {:?}\n", pki.ca));
    assert!(err.contains("cluster.tls_client_ca"), "{err}");

    let err = config_error(
        d,
        &format!(
            "tls_cert = \"certs/missing.pem\"\ntls_key = {:?}\n",
            pki.server.key
        ),
    );
    assert!(err.contains("cluster.tls_cert"), "{err}");
    assert!(
        err.contains(&s(&d.join("certs/missing.pem"))),
        "the relative path resolved against the TOML's folder: {err}"
    );

    let notes = d.join("notes.txt");
    std::fs::write(&notes, "not a certificate\n").unwrap();
    let err = config_error(
        d,
        &format!("tls_cert = {notes:?}\ntls_key = {:?}\n", pki.server.key),
    );
    assert!(
        err.contains("cluster.tls_cert") && err.contains("notes.txt") && err.contains("not a PEM"),
        "{err}"
    );
    // A certificate where the key belongs.
    let err = config_error(
        d,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            pki.server.cert, pki.server.cert
        ),
    );
    assert!(
        err.contains("cluster.tls_key") && err.contains("coordinator.crt.pem"),
        "{err}"
    );
    let err = config_error(
        d,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {notes:?}\n",
            pki.server.cert, pki.server.key
        ),
    );
    assert!(
        err.contains("cluster.tls_client_ca") && err.contains("notes.txt"),
        "{err}"
    );
    // A key that is not the certificate's: found when the server is built, before it listens.
    let data = cohort(d);
    let (cfg, _) = config(
        d,
        &data,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            pki.server.cert, pki.client.key
        ),
    );
    let out = cmd("coordinator")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains("cluster.tls_key") && stderr.contains("worker.key.pem"),
        "{stderr}"
    );
    // The environment override of a setting is checked the same way.
    let (cfg, _) = config(d, &d.join("no-data-here"), "");
    let err = run_err(
        Command::new(ecg_tests::bin("coordinator"))
            .arg("--config")
            .arg(&cfg)
            .env("ECG__CLUSTER__TLS_CERT", &notes)
            .env("ECG__CLUSTER__TLS_KEY", &pki.server.key),
    );
    assert!(
        err.contains("cluster.tls_cert") && err.contains("notes.txt"),
        "{err}"
    );
}
