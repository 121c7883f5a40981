//! Distributed training with the real binaries over real sockets: a coordinator process and
//! worker processes on this machine. Two workers with micro-batch B take, step for step, the
//! same steps as one worker with batch 2B, and every worker holds the same parameters after
//! every step; every training exam is used exactly once per epoch whatever the number of
//! workers, also when one joins a run under way; a run paused after a checkpoint and restarted ends
//! where an uninterrupted run ends; training lowers the validation loss; and workers with the
//! wrong token, protocol version or dataset are refused with the reason while the run goes on.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ecg_proto::v1;
use ecg_shared::model::state::TensorData;
use ecg_shared::train::resume::load_train_state;
use ecg_tests::cluster::{
    MICRO, cluster_section, dumped_states, http_get, run_cluster, run_config, start_coordinator,
    start_worker, synth_cohort,
};
use ecg_tests::{cmd, run_ok};

/// A network that learns within a few epochs (see tests/train_local.rs).
const TINY: &str = "[model]\nnet_filter_size = [8, 8, 16, 16]\nnet_seq_lengh = [1024, 1024, 256, 16]\n\
                    dropout_rate = 0.1\n";

fn cohort(dir: &Path, patients: u32, seed: u32) -> PathBuf {
    synth_cohort(dir, &format!("data{seed}"), patients, seed, 400)
}

/// Training exam ids of a run's split.csv, sorted.
fn train_ids(out: &Path) -> Vec<i64> {
    let mut ids = ecg_tests::faults::train_ids(out);
    ids.sort_unstable();
    ids
}

/// (epoch -> exam ids trained on) from workers' exam logs.
fn trained(logs: &[PathBuf]) -> BTreeMap<u64, Vec<i64>> {
    let mut by_epoch: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split(',').collect();
            by_epoch
                .entry(f[0].parse().unwrap())
                .or_default()
                .push(f[2].parse().unwrap());
        }
    }
    for ids in by_epoch.values_mut() {
        ids.sort_unstable();
    }
    by_epoch
}

#[test]
fn two_workers_take_the_steps_of_one_with_twice_the_batch_and_agree_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path(), 40, 1);
    let training = "[training]\nepochs = 2\nbatch_size = 8\nlr = 0.01\n";
    // The two workers' run cuts gradients and parameters into 1 KiB chunks (the network has
    // thousands of parameters), so that it is summed, put through Adam and downloaded chunk by
    // chunk while the uploads arrive; the lone worker's run has one chunk. The two workers
    // pass their chunks through shared memory (they are on the coordinator's host), the lone
    // worker through gRPC; a third run, two workers again but through gRPC, must agree with
    // the first bit for bit.
    let (cfg2, out2) = run_config(
        tmp.path(),
        "two",
        &data,
        MICRO,
        &format!("{training}{}", cluster_section(2, 4, "chunk_kib = 1\n")),
    );
    let (cfg1, out1) = run_config(
        tmp.path(),
        "one",
        &data,
        MICRO,
        &format!(
            "{training}{}",
            cluster_section(1, 4, "shared_memory_dir = \"\"\n")
        ),
    );
    let (cfg_grpc, out_grpc) = run_config(
        tmp.path(),
        "two_grpc",
        &data,
        MICRO,
        &format!(
            "{training}{}",
            cluster_section(2, 4, "chunk_kib = 1\nshared_memory_dir = \"\"\n")
        ),
    );
    // A fourth: one worker through shared memory, the other (on the same host) over gRPC.
    let (cfg_mixed, out_mixed) = run_config(
        tmp.path(),
        "mixed",
        &data,
        MICRO,
        &format!("{training}{}", cluster_section(2, 4, "chunk_kib = 1\n")),
    );
    let dump = |out: &Path, i: usize| -> Vec<String> {
        vec![
            "--dump-states".into(),
            out.join(format!("states{i}")).display().to_string(),
        ]
    };
    let text = run_cluster(&cfg2, &out2, &[dump(&out2, 0), dump(&out2, 1)]);
    let mut grpc_worker = dump(&out_mixed, 1);
    grpc_worker.push("--no-shared-memory".into());
    let text_mixed = run_cluster(&cfg_mixed, &out_mixed, &[dump(&out_mixed, 0), grpc_worker]);
    let text1 = run_cluster(&cfg1, &out1, &[dump(&out1, 0)]);
    let text_grpc = run_cluster(
        &cfg_grpc,
        &out_grpc,
        &[dump(&out_grpc, 0), dump(&out_grpc, 1)],
    );
    let shared = |text: &str| -> Option<(u64, u64)> {
        let l = text
            .lines()
            .find_map(|l| l.strip_prefix("shared memory: "))?;
        let mut n = l
            .split(" bytes")
            .map(|w| w.rsplit(' ').next()?.parse::<u64>().ok());
        Some((n.next()??, n.next()??))
    };
    let (up, down) = shared(&text).unwrap_or_else(|| panic!("no shared memory in:\n{text}"));
    assert!(
        up > 0 && down > 0,
        "shared memory: {up} bytes up, {down} down"
    );
    assert!(
        shared(&text_mixed).is_some_and(|(up, down)| up > 0 && down > 0),
        "one worker used shared memory:\n{text_mixed}"
    );
    assert_eq!(shared(&text1), None, "shared memory was off:\n{text1}");
    assert_eq!(
        shared(&text_grpc),
        None,
        "shared memory was off:\n{text_grpc}"
    );
    let streamed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("state downloads: "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no download figures in:\n{text}"));

    let (a, b, one, grpc0, grpc1) = (
        dumped_states(&out2.join("states0")),
        dumped_states(&out2.join("states1")),
        dumped_states(&out1.join("states0")),
        dumped_states(&out_grpc.join("states0")),
        dumped_states(&out_grpc.join("states1")),
    );
    let steps = train_ids(&out1).len().div_ceil(8) as u64 * 2;
    assert!(
        streamed >= steps,
        "only {streamed} downloads of {steps} steps were streamed during their step:\n{text}"
    );
    // The lone worker held every version. Of two workers, a quick one may take both units
    // of a step (the other had not asked yet) and the other then skips that version; so the
    // two hold every version between them, and the same parameters wherever both hold one.
    let one_versions: Vec<u64> = (0..=steps).chain([u64::MAX]).collect();
    assert_eq!(one.keys().copied().collect::<Vec<_>>(), one_versions);
    assert!((0..steps).all(|v| a.contains_key(&v) || b.contains_key(&v)));
    let mut common = 0;
    for (v, pa) in &a {
        if let Some(pb) = b.get(v) {
            assert!(
                pa.iter().zip(pb).all(|(x, y)| x.to_bits() == y.to_bits()),
                "the two workers differ at version {v}"
            );
            common += 1;
        }
    }
    assert!(common >= 2, "only {common} versions held by both workers");
    let (mixed0, mixed1) = (
        dumped_states(&out_mixed.join("states0")),
        dumped_states(&out_mixed.join("states1")),
    );
    assert!(
        !mixed1.is_empty(),
        "the gRPC worker of the mixed run took part"
    );
    let mut same_as_grpc = 0;
    for (v, p) in a.iter().chain(&b).chain(&mixed0).chain(&mixed1) {
        if let Some(q) = grpc0.get(v).or(grpc1.get(v)) {
            assert!(
                p.iter().zip(q).all(|(x, y)| x.to_bits() == y.to_bits()),
                "version {v}: the shared memory, mixed and gRPC runs differ"
            );
            same_as_grpc += 1;
        }
    }
    assert!(
        same_as_grpc >= 2,
        "only {same_as_grpc} versions to compare with the gRPC run"
    );
    for (v, p) in a.iter().chain(&b) {
        let worst = p
            .iter()
            .zip(&one[v])
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "version {v}: 2 x 4 differs from 1 x 8 by {worst:e}"
        );
    }
    let last = a
        .get(&steps)
        .or(b.get(&steps))
        .expect("someone validated the last state");
    assert!(
        last != &a[&0],
        "the parameters must have moved, or the comparison proves nothing"
    );
}

#[test]
fn every_training_exam_is_used_once_per_epoch_with_one_two_three_and_a_late_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path(), 60, 2);
    let training = "[training]\nepochs = 2\nbatch_size = 6\n";
    for n in 1..=3usize {
        let name = format!("w{n}");
        let (cfg, out) = run_config(
            tmp.path(),
            &name,
            &data,
            MICRO,
            &format!("{training}{}", cluster_section(n, 2, "")),
        );
        let logs: Vec<PathBuf> = (0..n).map(|i| out.join(format!("exams{i}.csv"))).collect();
        let args: Vec<Vec<String>> = logs
            .iter()
            .map(|l| vec!["--exam-log".into(), l.display().to_string()])
            .collect();
        run_cluster(&cfg, &out, &args);
        let want = train_ids(&out);
        let got = trained(&logs);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        for (epoch, ids) in &got {
            assert_eq!(ids, &want, "{n} workers, epoch {epoch}");
        }
        for l in &logs {
            assert!(
                std::fs::metadata(l).is_ok(),
                "{n} workers: {} trained nothing",
                l.display()
            );
        }
    }

    // A second worker joins a run under way.
    let (cfg, out) = run_config(
        tmp.path(),
        "late",
        &data,
        MICRO,
        &format!(
            "[training]\nepochs = 3\nbatch_size = 2\n{}",
            cluster_section(1, 1, "")
        ),
    );
    std::fs::create_dir_all(&out).unwrap();
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    let logs = [out.join("exams0.csv"), out.join("exams1.csv")];
    let log_arg = |i: usize| ["--exam-log".to_string(), logs[i].display().to_string()];
    let a = log_arg(0);
    let mut first = start_worker(&addr, out.join("worker0.log"), &[&a[0], &a[1]]);
    // The second worker starts once the first has trained and validated epoch 0 alone.
    coord.wait_for_line("epoch   0  train loss");
    // It passes its chunks over gRPC: the versions made so far were made for the parameter
    // segment only, so it waits for one made with its bytes too.
    let b = log_arg(1);
    let mut second = start_worker(
        &addr,
        out.join("worker1.log"),
        &[&b[0], &b[1], "--no-shared-memory"],
    );
    coord.wait_ok();
    first.wait_ok();
    second.wait_ok();
    let want = train_ids(&out);
    for (epoch, ids) in trained(&logs) {
        assert_eq!(ids, want, "late joiner, epoch {epoch}");
    }
    let late = trained(&logs[1..]);
    assert!(!late.is_empty(), "the late worker took part");
    assert!(
        late.keys().all(|&e| e >= 1),
        "the late worker started after epoch 0: {:?}",
        late.keys()
    );
    let early_first_epoch = trained(&logs[..1]).into_keys().next();
    assert_eq!(early_first_epoch, Some(0));
}

#[test]
fn a_worker_stopped_with_sigterm_finishes_its_step_leaves_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path(), 40, 7);
    let (cfg, out) = run_config(
        tmp.path(),
        "term",
        &data,
        MICRO,
        &format!(
            "[training]\nepochs = 3\nbatch_size = 2\n{}",
            cluster_section(2, 1, "")
        ),
    );
    std::fs::create_dir_all(&out).unwrap();
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    let logs = [out.join("exams0.csv"), out.join("exams1.csv")];
    let arg = |i: usize| ["--exam-log".to_string(), logs[i].display().to_string()];
    let (a, b) = (arg(0), arg(1));
    let mut stays = start_worker(&addr, out.join("worker0.log"), &[&a[0], &a[1]]);
    let mut leaves = start_worker(&addr, out.join("worker1.log"), &[&b[0], &b[1]]);
    coord.wait_for_line("epoch   0  train loss");
    let status = run_ok(cmd("coordinator").args(["status", "--coordinator", &addr]));
    assert!(status.contains("2 worker(s)"), "{status}");
    assert!(
        status.contains("worker   1") && status.contains("worker   2"),
        "{status}"
    );
    let pid = leaves.id().to_string();
    run_ok(std::process::Command::new("kill").args(["-TERM", &pid]));
    let status = leaves.wait();
    assert!(
        status.success(),
        "SIGTERM: exit {status}:\n{}",
        leaves.output()
    );
    assert!(
        leaves.output().contains("left the run"),
        "{}",
        leaves.output()
    );
    let text = coord.wait_ok();
    stays.wait_ok();
    assert!(text.contains("left (1 workers)"), "{text}");
    let want = train_ids(&out);
    let got = trained(&logs);
    assert_eq!(got.len(), 3);
    for (epoch, ids) in got {
        assert_eq!(ids, want, "epoch {epoch}");
    }
}

/// (name -> values) of the parameters in a run's training state.
fn saved_params(out: &Path) -> (u64, HashMap<String, Vec<f32>>) {
    let loaded = load_train_state(out, |c| {
        Ok(
            ecg_shared::model::ResNet1d::new(c, 0, &ecg_shared::model::Device::Cpu)?
                .layout()
                .clone(),
        )
    })
    .unwrap()
    .expect("a training state");
    let params = loaded
        .state
        .model
        .tensors()
        .iter()
        .filter_map(|t| match &t.data {
            TensorData::F32(v) => Some((t.name.clone(), v.clone())),
            _ => None,
        })
        .collect();
    (loaded.state.global_step, params)
}

#[test]
fn a_run_paused_after_a_checkpoint_and_restarted_ends_where_an_uninterrupted_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path(), 40, 3);
    // 8 steps an epoch: pause at step 5 (mid-epoch 0), go on to step 13 (mid-epoch 1, after a
    // validation), and compare with a run that goes to step 13 at once.
    let run = |name: &str, max_steps: u64| {
        let (cfg, out) = run_config(
            tmp.path(),
            name,
            &data,
            MICRO,
            &format!(
                "[training]\nepochs = 3\nbatch_size = 4\nmax_steps = {max_steps}\n{}",
                cluster_section(1, 0, "checkpoint_every_steps = 5\n")
            ),
        );
        run_cluster(&cfg, &out, &[vec![]]);
        out
    };
    let paused = run("paused", 5);
    let (step, at5) = saved_params(&paused);
    assert_eq!(step, 5);
    let text = std::fs::read_to_string(tmp.path().join("paused.toml"))
        .unwrap()
        .replace("max_steps = 5", "max_steps = 13");
    std::fs::write(tmp.path().join("paused.toml"), text).unwrap();
    let cfg = tmp.path().join("paused.toml");
    let out = run_cluster(&cfg, &paused, &[vec![]]);
    assert!(out.contains("resuming run"), "{out}");
    assert!(
        out.contains("epoch 0, step 5 of the epoch, 5 steps done"),
        "{out}"
    );
    let (step, resumed) = saved_params(&paused);
    assert_eq!(step, 13);
    let straight = run("straight", 13);
    let (step, direct) = saved_params(&straight);
    assert_eq!(step, 13);
    assert_eq!(resumed.len(), direct.len());
    for (name, v) in &direct {
        assert_eq!(&resumed[name], v, "{name} differs after the restart");
        assert_ne!(&at5[name], v, "{name} must have moved after step 5");
    }
}

#[test]
fn training_on_the_synthetic_cohort_lowers_the_validation_loss_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path(), 150, 4);
    let (cfg, out) = run_config(
        tmp.path(),
        "learn",
        &data,
        TINY,
        &format!(
            "[training]\nepochs = 3\nbatch_size = 8\nlr = 0.003\n{}",
            cluster_section(2, 0, "")
        ),
    );
    let text = run_cluster(&cfg, &out, &[vec![], vec![]]);
    assert!(text.contains("test split: MAE"), "{text}");
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let losses: Vec<f64> = history
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 3, "{history}");
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]),
        "validation loss per epoch: {losses:?}"
    );
    for f in [
        "model_best.safetensors",
        "model_last.safetensors",
        "test_predictions.csv",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
}

#[test]
fn workers_with_the_wrong_token_protocol_or_dataset_are_refused_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = cohort(tmp.path(), 30, 5);
    let other = cohort(tmp.path(), 31, 6);
    std::fs::write(tmp.path().join("token"), "right-token\n").unwrap();
    std::fs::write(tmp.path().join("wrong"), "wrong-token\n").unwrap();
    let (cfg, out) = run_config(
        tmp.path(),
        "guarded",
        &data,
        MICRO,
        &format!(
            "[training]\nepochs = 1\nbatch_size = 4\n{}",
            cluster_section(
                1,
                0,
                &format!("token_file = {:?}\n", tmp.path().join("token"))
            )
            .replace("metrics_listen = \"\"", "metrics_listen = \"127.0.0.1:0\"")
        ),
    );
    std::fs::create_dir_all(&out).unwrap();
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    let token = tmp.path().join("token").display().to_string();
    let wrong = tmp.path().join("wrong").display().to_string();

    let mut w = start_worker(&addr, out.join("w-wrong.log"), &["--token-file", &wrong]);
    assert!(!w.wait().success());
    assert!(
        w.output().contains("token is missing or wrong"),
        "{}",
        w.output()
    );
    let mut w = start_worker(&addr, out.join("w-none.log"), &[]);
    assert!(!w.wait().success());
    assert!(
        w.output().contains("token is missing or wrong"),
        "{}",
        w.output()
    );
    let root = other.display().to_string();
    let mut w = start_worker(
        &addr,
        out.join("w-data.log"),
        &["--token-file", &token, "--data-root", &root],
    );
    assert!(!w.wait().success());
    assert!(w.output().contains("dataset fingerprint"), "{}", w.output());

    // A client of another protocol version, straight over gRPC.
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = v1::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut req = tonic::Request::new(v1::RegisterRequest {
            protocol_version: 999,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", "Bearer right-token".parse().unwrap());
        c.register(req).await.expect_err("refused")
    });
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // The health service answers without the token (for probes); the status query needs it.
    let (health, unauthenticated) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut h = tonic_health::pb::health_client::HealthClient::new(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let health = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: "ecg.v1.Coordinator".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        let mut c = v1::coordinator_client::CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let refused = c
            .status(v1::StatusRequest {})
            .await
            .expect_err("needs the token");
        (health, refused.code())
    });
    assert_eq!(
        health,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(unauthenticated, tonic::Code::Unauthenticated);

    // /metrics counts the refusals by reason and shows no secret.
    let log = coord.output();
    let metrics_addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .expect("the metrics address in the coordinator's output");
    let page = http_get(metrics_addr, "/metrics");
    for (reason, at_least) in [
        ("unauthenticated", 3),
        ("fingerprint", 1),
        ("protocol_version", 1),
    ] {
        let line = page
            .lines()
            .find(|l| l.starts_with(&format!("ecg_rejected_total{{reason=\"{reason}\"}}")))
            .unwrap_or_else(|| panic!("no {reason} count in:\n{page}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= at_least as f64, "{line}");
    }
    assert!(!page.contains("right-token") && !page.contains("wrong-token"));
    assert!(
        status.message().contains("protocol version 999"),
        "{status:?}"
    );

    let mut good = start_worker(&addr, out.join("w-good.log"), &["--token-file", &token]);
    let text = coord.wait_ok();
    good.wait_ok();
    assert!(text.contains("run over"), "{text}");
}
