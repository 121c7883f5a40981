//! The multi-host path on this machine: a coordinator and three workers on four hosts (network
//! namespaces joined by a bridge), every link capped at 1 Gbit/s with `tc tbf`, configured as
//! the Kubernetes manifests are (cluster.toml from a file, the cluster token from a file, the
//! workers' data mounted at another path and given with `--data-root`). A tiny network trains
//! to completion with the workers sharing every step and every training exam used once per
//! epoch. The timings over 1 and 10 Gbit/s links are `bash bench/multihost.sh`'s.
use ecg_tests::faults::{Bench, Plan};

#[test]
fn three_workers_on_other_hosts_over_capped_links_train_to_completion() {
    let net = match ecg_tests::netns::Net::new(4) {
        Ok(net) => net,
        Err(e) => {
            assert!(
                std::env::var_os("ECG_REQUIRE_NETNS").is_none(),
                "network namespaces: {e}"
            );
            println!("SKIPPED: cannot create network namespaces here ({e})");
            return;
        }
    };
    for host in 0..4 {
        net.cap(host, 1_000_000_000);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut bench = Bench::new(tmp.path(), 120);
    let token = tmp.path().join("token");
    std::fs::write(&token, "multi-host-token\n").unwrap();
    let mount = tmp.path().join("mnt");
    std::os::unix::fs::symlink(&bench.data, &mount).unwrap();
    bench.settings = format!(
        "[model]\nnet_filter_size = [4, 4]\nnet_seq_lengh = [256, 16]\ndropout_rate = 0.1\n\
         [training]\nepochs = 2\nbatch_size = 12\nlr = 0.003\n\
         [cluster]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"\"\nmin_workers = 3\n\
         micro_batch = 4\npredict_batch = 16\nheartbeat_ms = 100\nworker_timeout_ms = 5000\n\
         token_file = {token:?}\n"
    );
    bench.worker_args = vec![
        "--token-file".into(),
        token.display().to_string(),
        "--data-root".into(),
        mount.display().to_string(),
    ];
    bench.net = Some(net);
    let run = bench.run(&Plan {
        name: "hosts".into(),
        workers: vec![vec![]; 3],
        coordinator: vec![],
    });
    assert!(run.completed, "{}", run.coordinator_output);
    assert_eq!(run.worker_exits, vec![Some(0); 3]);
    let a = run.audit.unwrap();
    assert_eq!(
        (a.lost, a.duplicated, a.broken_epochs, a.epochs),
        (0, 0, 0, 2)
    );
    let commits = ecg_shared::train::audit::read(&run.out).unwrap();
    let full: Vec<_> = commits.iter().filter(|c| c.exams == 12).collect();
    assert!(!full.is_empty());
    assert!(
        full.iter().all(|c| c.contributions >= 2),
        "the workers share every full step (three units of four exams): {:?}",
        full.iter().map(|c| c.contributions).collect::<Vec<_>>()
    );
    assert!(
        run.coordinator_output.contains(" on 10."),
        "the coordinator listens on its namespace's address:\n{}",
        run.coordinator_output
    );
}
