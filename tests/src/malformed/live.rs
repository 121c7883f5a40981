//! A live run for the malformed-message cases: a coordinator with a token and a metrics
//! endpoint, steps of two one-exam units and prediction tasks of one exam, one real worker,
//! and (when asked) the rogue sending every case while it trains.
use std::path::{Path, PathBuf};

use super::{CaseOutcome, run_all};
use crate::cluster::{MICRO, start_coordinator, start_worker};

/// The token of these runs.
pub const TOKEN: &str = "s3cret-malformed-token";

/// What a live run left.
pub struct LiveRun {
    /// The cases' outcomes (empty for a quiet run).
    pub outcomes: Vec<CaseOutcome>,
    /// Everything the coordinator printed.
    pub coordinator_output: String,
    /// Its output folder.
    pub out: PathBuf,
}

/// Runs `dir/name` on the cohort `data` to its end, with every malformed case sent while it
/// trains when `attack`; panics when the coordinator or the worker fails.
pub fn live_run(dir: &Path, data: &Path, name: &str, attack: bool) -> LiveRun {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token file");
    let out = dir.join(name);
    std::fs::create_dir_all(&out).expect("output folder");
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[data]\nroot = {data:?}\n[output]\ndir = {out:?}\n[split]\nstrategy = \"hash\"\n\
             fractions = [0.1, 0.2]\n{MICRO}[training]\nepochs = 2\nbatch_size = 2\nlr = 0.01\n\
             [cluster]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             min_workers = 1\nmicro_batch = 1\npredict_batch = 1\nheartbeat_ms = 100\n\
             worker_timeout_ms = 60000\nstep_deadline_ms = 600000\ntoken_file = {token:?}\n"
        ),
    )
    .expect("config");
    let (mut coord, addr) = start_coordinator(&cfg, out.join("coordinator.log"));
    let line = coord.wait_for_line("metrics on http://");
    let metrics_addr = line
        .split("metrics on http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .expect("the metrics address")
        .to_string();
    let token_arg = token.display().to_string();
    let mut worker = start_worker(&addr, out.join("worker.log"), &["--token-file", &token_arg]);
    let outcomes = if attack {
        coord.wait_for_line("joined from");
        run_all(&addr, TOKEN, &metrics_addr)
    } else {
        Vec::new()
    };
    let coordinator_output = coord.wait_ok();
    worker.wait_ok();
    LiveRun {
        outcomes,
        coordinator_output,
        out,
    }
}
