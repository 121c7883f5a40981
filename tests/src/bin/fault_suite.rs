//! The full fault-injection suite (`bash scripts/faults.sh`): runs of the real binaries on this
//! machine with workers killed at every worker fault point three times over, the coordinator
//! killed (or stopped with SIGTERM, or its checkpoint corrupted) at every coordinator fault
//! point, stragglers, links cut between hosts in network namespaces (when this process may
//! create them), and the malformed-message cases against a live run. Prints the
//! report and writes it to `<dir>/report.txt`; exits 1 when any run did not finish, lost or
//! duplicated an exam, or any malformed message was not refused as it should be.
//!
//! Usage: `fault_suite [--dir DIR] [--patients N]` (default `runs/faults`, 160 patients).
use std::path::PathBuf;

use ecg_tests::faults::{
    Action, Bench, COORDINATOR_POINTS, Fault, Outcome, Plan, WORKER_POINTS, report,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Three runs of two workers; together they kill workers at every worker point three times,
/// at other occurrences and in other orders, and end two workers as stragglers.
fn worker_plans() -> Vec<Plan> {
    let once = |p: &str| p == "worker.register" || p == "worker.registered";
    let at = |p: &str, n: u64| Fault::new(p, if once(p) { 1 } else { n }, Action::Kill);
    let (first, second) = WORKER_POINTS.split_at(5);
    let mut plans = Vec::new();
    for (r, nth) in [(0usize, 1u64), (1, 2), (2, 3)] {
        let (mut a, mut b): (Vec<Fault>, Vec<Fault>) = match r {
            0 => (
                first.iter().map(|p| at(p, nth)).collect(),
                second.iter().map(|p| at(p, nth)).collect(),
            ),
            1 => (
                second.iter().map(|p| at(p, nth)).collect(),
                first.iter().rev().map(|p| at(p, nth)).collect(),
            ),
            _ => (
                WORKER_POINTS
                    .iter()
                    .step_by(2)
                    .map(|p| at(p, nth))
                    .collect(),
                WORKER_POINTS
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|p| at(p, nth))
                    .collect(),
            ),
        };
        // Predicting happens once per epoch: keep those occurrences low.
        for f in a.iter_mut().chain(b.iter_mut()) {
            if f.at.starts_with("worker.predict") || f.at.starts_with("worker.reported") {
                f.at = format!("{}@1", f.at.split('@').next().unwrap_or_default());
            }
        }
        if r < 2 {
            a.push(Fault::new("worker.compute", 3, Action::Straggle(4000)));
        }
        plans.push(Plan {
            name: format!("workers-{r}"),
            workers: vec![a, b],
            coordinator: vec![],
        });
    }
    plans
}

/// Runs that stop the coordinator at every coordinator point, in the order a run passes them.
fn coordinator_plans() -> Vec<Plan> {
    use Action::*;
    let (a, b) = COORDINATOR_POINTS.split_at(6);
    let kill = |p: &&str, n: u64, action: Action| Fault::new(p, n, action);
    vec![
        Plan {
            name: "coordinator-0".into(),
            workers: vec![vec![], vec![]],
            coordinator: a
                .iter()
                .enumerate()
                .map(|(i, p)| kill(p, 1 + (i as u64 % 3), if i == 2 { Term } else { Kill }))
                .collect(),
        },
        Plan {
            name: "coordinator-1".into(),
            workers: vec![vec![], vec![]],
            coordinator: b
                .iter()
                .map(|p| {
                    kill(
                        p,
                        1,
                        if *p == "coord.checkpointed" {
                            KillCorrupt
                        } else {
                            Kill
                        },
                    )
                })
                .collect(),
        },
        Plan {
            name: "coordinator-2".into(),
            workers: vec![vec![], vec![]],
            coordinator: vec![
                Fault::new("coord.step", 5, Term),
                Fault::new("coord.checkpoint_rename", 1, Kill),
                Fault::new("coord.checkpointed", 2, KillCorrupt),
                Fault::new("coord.reduce", 6, Term),
            ],
        },
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| "runs/faults".into()));
    let patients: u32 = arg(&args, "--patients")
        .and_then(|p| p.parse().ok())
        .unwrap_or(160);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear the suite's folder");
    }
    std::fs::create_dir_all(&dir).expect("the suite's folder");
    let dir = std::fs::canonicalize(&dir).expect("the suite's folder");
    let mut bench = Bench::new(&dir, patients);
    println!("undisturbed run");
    let baseline = bench.run(&Plan {
        name: "undisturbed".into(),
        workers: vec![vec![], vec![]],
        coordinator: vec![],
    });
    let mut runs: Vec<Outcome> = Vec::new();
    for plan in worker_plans().into_iter().chain(coordinator_plans()) {
        println!("run {}", plan.name);
        runs.push(bench.run(&plan));
    }
    let mut notes = String::new();
    match ecg_tests::netns::Net::new(3) {
        Ok(net) => {
            bench.net = Some(net);
            for (name, w, c) in [
                (
                    "links-worker",
                    vec![Fault::new("worker.upload", 3, Action::CutLink)],
                    vec![],
                ),
                (
                    "links-coordinator",
                    vec![],
                    vec![Fault::new("coord.step", 10, Action::CutLink)],
                ),
            ] {
                println!("run {name} (network namespaces)");
                runs.push(bench.run(&Plan {
                    name: name.into(),
                    workers: vec![w, vec![]],
                    coordinator: c,
                }));
            }
            bench.net = None;
        }
        Err(e) => notes.push_str(&format!("link cuts not run: {e}\n")),
    }
    println!("malformed messages against a live run");
    let attacked = ecg_tests::malformed::live_run(&dir, &bench.data, "malformed", true);
    let cases = &attacked.outcomes;
    let cases_ok = cases.len() >= 25
        && cases.iter().all(|c| c.passed())
        && attacked.coordinator_output.contains("run over");
    let mut text = report(&runs, &baseline);
    text.push_str(&notes);
    text.push_str(&format!(
        "malformed messages: {} cases, {} refused with the wanted status and counted; the attacked run {}\n",
        cases.len(),
        cases.iter().filter(|c| c.passed()).count(),
        if attacked.coordinator_output.contains("run over") {
            "completed"
        } else {
            "did NOT complete"
        }
    ));
    for c in cases.iter().filter(|c| !c.passed()) {
        text.push_str(&format!(
            "  FAILED {}: wanted {:?}, got {:?} ({})\n",
            c.name, c.want, c.got, c.message
        ));
    }
    text.push_str("faults not reached:\n");
    for r in &runs {
        for i in r.injected.iter().filter(|i| !i.reached) {
            text.push_str(&format!("  {}: {} ({})\n", r.name, i.fault.at, i.note));
        }
    }
    let worker_kills: usize = runs
        .iter()
        .flat_map(|r| &r.injected)
        .filter(|i| {
            i.reached && i.fault.at.starts_with("worker.") && i.fault.action == Action::Kill
        })
        .count();
    let coordinator_stops: usize = runs
        .iter()
        .flat_map(|r| &r.injected)
        .filter(|i| {
            i.reached
                && i.fault.at.starts_with("coord.")
                && matches!(
                    i.fault.action,
                    Action::Kill | Action::KillCorrupt | Action::Term
                )
        })
        .count();
    text.push_str(&format!(
        "worker kill points reached: {worker_kills}; coordinator kill/stop points reached: {coordinator_stops}\n"
    ));
    let ok = cases_ok
        && baseline.completed
        && runs.iter().all(|r| {
            r.completed
                && r.audit
                    .as_ref()
                    .is_some_and(|a| a.lost == 0 && a.duplicated == 0 && a.broken_epochs == 0)
        });
    text.push_str(if ok {
        "RESULT: PASS\n"
    } else {
        "RESULT: FAIL\n"
    });
    print!("{text}");
    std::fs::write(dir.join("report.txt"), &text).expect("write the report");
    if !ok {
        std::process::exit(1);
    }
}
