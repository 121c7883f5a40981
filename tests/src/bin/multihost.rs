//! The multi-host benchmark (`bash bench/multihost.sh`, root: network namespaces): a
//! coordinator and 1, 2 or 3 workers on separate hosts (namespaces joined by a bridge), every
//! link capped at 1 and at 10 Gbit/s (`tc tbf`), configured as the Kubernetes manifests are
//! (cluster.toml from a file, the token from a file, the data mounted at a path given by
//! `--data-root`). Weak scaling: each worker computes the same batch per step whatever the
//! number of workers, so the scaling efficiency at N workers is the single worker's step time
//! over the N workers' step time; `compute / step` is the share of a step spent computing,
//! comparable with the peer's.
//!
//! Two parts:
//! - `tiny`: a tiny network trained to completion on a synthetic cohort with real computation
//!   (the workers share this machine's cores, which bounds their scaling here);
//! - `h100`: the full-size network (6,924,705 parameters), each worker replacing its computation
//!   by a fixed delay per step (`worker --simulate-ms`) and a random gradient of the real size,
//!   for several delays: the exchange of real-size gradients over capped links is what is
//!   measured.
//!
//! Step times are the medians of the intervals between consecutive commits within an epoch
//! (`commits.csv`); exchange time = step time - compute time (the workers' `--step-log`).
//! The peer, when `TORCH_PYTHON` names a Python with PyTorch: torch.distributed gloo
//! `all_reduce` of the same gradient between the same hosts over the same links
//! (`bench/multihost_gloo.py`), and the efficiency a data-parallel step of the same simulated
//! compute plus that all-reduce would have. Prints a table and writes it to
//! `<dir>/multihost.txt`.
//!
//! Usage: `multihost [--dir DIR] [--simulate-ms 50,200,500] [--steps N] [--links 1,10]
//! [--workers 1,2,3] [--no-tiny]` (`--links`: caps in Gbit/s; `--workers` must include 1, the
//! reference of the efficiencies; `--no-tiny` leaves the tiny network out).
use std::path::{Path, PathBuf};

use ecg_shared::train::audit;
use ecg_tests::faults::{Bench, Plan};
use ecg_tests::netns::Net;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (median step ms, median exams per step) from the run's commits, leaving out each epoch's
/// first step (its interval holds the validation).
fn step_figures(out: &Path) -> (f64, f64) {
    let commits = audit::read(out).expect("commits.csv");
    let mut steps = Vec::new();
    let mut exams = Vec::new();
    for w in commits.windows(2) {
        if w[1].epoch == w[0].epoch && w[1].step_in_epoch == w[0].step_in_epoch + 1 {
            steps.push(w[1].unix_ms.saturating_sub(w[0].unix_ms) as f64);
            exams.push(w[1].exams as f64);
        }
    }
    (median(steps), median(exams))
}

/// Median compute time per step of the workers' step logs (`step,units,exams,compute_ms,...`).
fn compute_ms(logs: &Path, workers: usize) -> f64 {
    let mut v = Vec::new();
    for k in 0..workers {
        let text = std::fs::read_to_string(logs.join(format!("steps{k}.csv"))).unwrap_or_default();
        v.extend(
            text.lines()
                .filter_map(|l| l.split(',').nth(3)?.parse::<f64>().ok()),
        );
    }
    median(v)
}

struct Row {
    part: String,
    gbit: u64,
    workers: usize,
    step_ms: f64,
    compute_ms: f64,
    exams_per_s: f64,
}

fn run_one(bench: &mut Bench, name: &str, workers: usize) -> (f64, f64, f64) {
    let plan = Plan {
        name: name.into(),
        workers: vec![vec![]; workers],
        coordinator: vec![],
    };
    let out = bench.run(&plan);
    assert!(
        out.coordinator_output.contains("run over"),
        "{name} did not end:\n{}",
        out.coordinator_output
    );
    let (step, exams) = step_figures(&out.out);
    (step, exams, compute_ms(&out.out.join("logs"), workers))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| "runs/multihost".into()));
    let delays: Vec<u64> = arg(&args, "--simulate-ms")
        .unwrap_or_else(|| "50,200,500".into())
        .split(',')
        .map(|d| d.parse().expect("--simulate-ms: milliseconds"))
        .collect();
    let steps: u64 = arg(&args, "--steps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let list = |name: &str, default: &str| -> Vec<u64> {
        arg(&args, name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: comma-separated numbers, got {v:?}"))
            })
            .collect()
    };
    let links = list("--links", "1,10");
    let worker_counts = list("--workers", "1,2,3");
    assert!(
        worker_counts.contains(&1) && worker_counts.iter().all(|&w| (1..=3).contains(&w)),
        "--workers: 1 to 3 workers, 1 among them (the reference)"
    );
    let tiny = !args.iter().any(|a| a == "--no-tiny");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear the folder");
    }
    std::fs::create_dir_all(&dir).expect("the folder");
    let dir = std::fs::canonicalize(&dir).expect("the folder");
    let token = dir.join("token");
    std::fs::write(&token, "multihost-bench-token\n").expect("token file");
    let mut bench = Bench::new(&dir, 160);
    let net = Net::new(4).unwrap_or_else(|e| {
        eprintln!("multihost: network namespaces are needed (run as root): {e}");
        std::process::exit(2)
    });
    // Workers find the data where "their node" mounts it, as in the manifests.
    let mount = dir.join("mnt-data");
    std::os::unix::fs::symlink(&bench.data, &mount).expect("data mount");
    bench.worker_args = vec![
        "--token-file".into(),
        token.display().to_string(),
        "--data-root".into(),
        mount.display().to_string(),
        "--step-log".into(),
        "{STEPLOG}".into(),
    ];
    bench.net = Some(net);
    let cluster = |workers: usize, batch: usize| {
        format!(
            "[cluster]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nmin_workers = {workers}\n\
             micro_batch = {batch}\npredict_batch = 32\nheartbeat_ms = 200\n\
             worker_timeout_ms = 20000\ncheckpoint_every_steps = 0\ntoken_file = {token:?}\n"
        )
    };
    let mut rows: Vec<Row> = Vec::new();
    for &gbit in &links {
        for k in 1..=4 {
            bench.net.as_ref().unwrap().cap(k - 1, gbit * 1_000_000_000);
        }
        for workers in worker_counts.iter().map(|&w| w as usize) {
            let batch = 16;
            bench.settings = format!(
                "[model]\nnet_filter_size = [8, 8, 16, 16]\nnet_seq_lengh = [1024, 1024, 256, 16]\n\
                 dropout_rate = 0.1\n[training]\nepochs = 3\nbatch_size = {}\nlr = 0.003\n{}",
                batch * workers,
                cluster(workers, batch)
            );
            let name = format!("tiny-{gbit}g-{workers}");
            if tiny {
                set_steplog(&mut bench, &dir, &name);
                println!("run {name}");
                let (step, exams, compute) = run_one(&mut bench, &name, workers);
                rows.push(Row {
                    part: "tiny".into(),
                    gbit,
                    workers,
                    step_ms: step,
                    compute_ms: compute,
                    exams_per_s: exams / step * 1e3,
                });
            }
            for &ms in &delays {
                let batch = 8;
                bench.settings = format!(
                    "[training]\nepochs = 100\nmax_steps = {steps}\nbatch_size = {}\n{}",
                    batch * workers,
                    cluster(workers, batch)
                );
                let name = format!("h100-{ms}ms-{gbit}g-{workers}");
                set_steplog(&mut bench, &dir, &name);
                bench.worker_args.push("--simulate-ms".into());
                bench.worker_args.push(ms.to_string());
                println!("run {name}");
                let (step, _, compute) = run_one(&mut bench, &name, workers);
                bench.worker_args.truncate(bench.worker_args.len() - 2);
                rows.push(Row {
                    part: format!("h100 {ms} ms"),
                    gbit,
                    workers,
                    step_ms: step,
                    compute_ms: compute,
                    exams_per_s: f64::NAN,
                });
            }
        }
    }
    let mut text = String::from(
        "part | link | workers | step ms | compute ms | exchange ms | exams/s | efficiency | compute / step\n",
    );
    let gloo = peer_rows(bench.net.as_ref().unwrap(), &links, &worker_counts);
    for r in &rows {
        let single = rows
            .iter()
            .find(|s| s.part == r.part && s.gbit == r.gbit && s.workers == 1)
            .map_or(f64::NAN, |s| s.step_ms);
        text.push_str(&format!(
            "{} | {} Gbit/s | {} | {:.0} | {:.0} | {:.0} | {} | {:.0}% | {:.0}%\n",
            r.part,
            r.gbit,
            r.workers,
            r.step_ms,
            r.compute_ms,
            r.step_ms - r.compute_ms,
            if r.exams_per_s.is_nan() {
                "-".to_string()
            } else {
                format!("{:.0}", r.exams_per_s)
            },
            100.0 * single / r.step_ms,
            100.0 * r.compute_ms / r.step_ms
        ));
    }
    if gloo.is_empty() {
        text.push_str("peer not run: set TORCH_PYTHON to a Python with PyTorch\n");
    } else {
        text.push_str(
            "\npeer: torch.distributed gloo all_reduce of 6,924,705 f32 between the worker hosts\n\
             link | workers | all_reduce ms | efficiency of a step of C ms + all_reduce (C = simulated delays)\n",
        );
        for (gbit, n, ms) in &gloo {
            let eff: Vec<String> = delays
                .iter()
                .map(|&c| format!("{c} ms: {:.0}%", 100.0 * c as f64 / (c as f64 + ms)))
                .collect();
            text.push_str(&format!(
                "{gbit} Gbit/s | {n} | {ms:.0} | {}\n",
                eff.join(", ")
            ));
        }
    }
    print!("{text}");
    std::fs::write(dir.join("multihost.txt"), &text).expect("write the table");
}

/// The gloo peer (`bench/multihost_gloo.py`) for the numbers of worker hosts above 1 and the links, when
/// `TORCH_PYTHON` names a Python with PyTorch: (Gbit/s, hosts, median all_reduce ms).
fn peer_rows(net: &Net, links: &[u64], worker_counts: &[u64]) -> Vec<(u64, usize, f64)> {
    let Some(python) = std::env::var_os("TORCH_PYTHON") else {
        return Vec::new();
    };
    let script = ecg_tests::workspace_root().join("bench/multihost_gloo.py");
    let mut rows = Vec::new();
    for &gbit in links {
        for host in 0..4 {
            net.cap(host, gbit * 1_000_000_000);
        }
        for n in worker_counts.iter().map(|&w| w as usize).filter(|&w| w > 1) {
            let master = format!("{}:{}", net.addrs[1], 29_500 + n);
            let procs: Vec<_> = (0..n)
                .map(|r| {
                    net.command(r + 1, Path::new(&python))
                        .arg(&script)
                        .args(["--rank", &r.to_string(), "--world", &n.to_string()])
                        .args(["--master", &master, "--iface", &net.iface(r + 1)])
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("start the gloo peer")
                })
                .collect();
            let mut median = f64::NAN;
            for (r, p) in procs.into_iter().enumerate() {
                let out = p.wait_with_output().expect("gloo peer");
                assert!(
                    out.status.success(),
                    "gloo rank {r}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if r == 0 {
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).expect("the peer's JSON line");
                    median = v["median_ms"].as_f64().unwrap_or(f64::NAN);
                }
            }
            println!("gloo {gbit} Gbit/s, {n} hosts: {median:.1} ms");
            rows.push((gbit, n, median));
        }
    }
    rows
}

/// Points the workers' `--step-log` at `<dir>/<name>/logs/steps{k}.csv`.
fn set_steplog(bench: &mut Bench, dir: &Path, name: &str) {
    let path = dir.join(name).join("logs").join("steps{k}.csv");
    if let Some(i) = bench.worker_args.iter().position(|a| a == "--step-log") {
        bench.worker_args[i + 1] = path.display().to_string();
    }
}
