//! One coordinator case: `coordinator --config` run over an output folder that holds a
//! previous run's files, checked to be refused naming the problem, without serving, and
//! without touching the folder.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ecg_tests::cmd;

use crate::support::{Toml, assert_refused, copy_dir, quoted, run_bounded};

/// A run's outputs from before, which a refused run must leave as they are.
pub(crate) const SENTINELS: [(&str, &[u8]); 4] = [
    (
        "history.csv",
        b"epoch,train_loss,valid_loss,valid_mae,lr\n0,812.5,790.25,21.5,0.001\n",
    ),
    (
        "model_best.safetensors",
        b"\x10\0\0\0\0\0\0\0{\"sentinel\":\"1\"}",
    ),
    (
        "split.csv",
        b"exam_id,patient_id,split\n1,1,train\n2,2,valid\n",
    ),
    ("config.json", b"{\"sentinel\": true}\n"),
];

/// The coordinator cases: where they live and how each is run and checked.
pub(crate) struct Cases {
    pub(crate) root: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) done: Vec<String>,
}

impl Cases {
    fn dir(&self, name: &str) -> PathBuf {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.root.join(format!("{:02}-{slug}", self.done.len()))
    }

    /// A copy of the healthy cohort, damaged by `damage`.
    pub(crate) fn damaged(&self, name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
        let dir = self.root.join(format!("data-{name}"));
        copy_dir(&self.data, &dir);
        damage(&dir);
        dir
    }

    pub(crate) fn refused(&mut self, name: &str, cfg: Toml, wants: &[&str]) {
        self.refused_with(name, cfg, &[], &[], wants);
    }

    /// Runs `coordinator --config` on `cfg` (with the environment `env`) over an output folder
    /// holding a previous run's files (the [`SENTINELS`] and `extra`), and checks that it is
    /// refused naming every one of `wants` (`@OUT`: the output folder) and leaves the folder
    /// as it was.
    pub(crate) fn refused_with(
        &mut self,
        name: &str,
        mut cfg: Toml,
        env: &[(&str, &str)],
        extra: &[(&str, &[u8])],
        wants: &[&str],
    ) {
        let dir = self.dir(name);
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let before: BTreeMap<String, Vec<u8>> = SENTINELS
            .iter()
            .chain(extra)
            .map(|(f, bytes)| (f.to_string(), bytes.to_vec()))
            .collect();
        for (f, bytes) in &before {
            std::fs::write(out.join(f), bytes).unwrap();
        }
        if !cfg.has("output", "dir") {
            cfg = cfg.set("output", "dir", &quoted(&out));
        }
        let toml = dir.join("cluster.toml");
        std::fs::write(&toml, cfg.text(&out)).unwrap();
        let mut c = cmd("coordinator");
        c.arg("--config").arg(&toml).envs(env.iter().copied());
        let ended = run_bounded(c);
        let wants: Vec<String> = wants
            .iter()
            .map(|w| w.replace("@OUT", &out.display().to_string()))
            .collect();
        let all = format!("{}\n{}", ended.stdout, ended.stderr);
        assert_refused(name, ended.status, &ended.stderr, &all, &wants);
        assert!(
            !all.contains(" listening on "),
            "{name}: it started serving:\n{all}"
        );
        let after: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        assert!(
            !after.contains_key("coordinator.addr"),
            "{name}: coordinator.addr written"
        );
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{name}: files were added to or removed from the output folder"
        );
        for (f, bytes) in &before {
            assert!(after[f] == *bytes, "{name}: {f} was changed");
        }
        self.done.push(name.to_string());
    }
}
