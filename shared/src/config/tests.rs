//! Tests of the `cluster.toml` loader: layering, overrides, and refusal of typos.
use super::*;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("cluster.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn file_values_and_defaults_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "[data]\ncsv = \"cohort/exams.csv\"\nage_col = \"Idade\"\n[split]\nseed = 7\n",
    );
    let c = ClusterConfig::load_with_env(&p, env(&[])).unwrap();
    assert_eq!(c.data.age_col, "Idade");
    assert_eq!(c.split.seed, 7);
    assert_eq!(
        c.split.fractions,
        vec![0.15, 0.05],
        "unset keys keep their defaults"
    );
    assert_eq!(c.csv_path(), dir.path().join("cohort/exams.csv"));
    assert_eq!(c.output.dir, dir.path().join("run"));
}

#[test]
fn environment_overrides_win_and_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "[split]\nseed = 7\n");
    let c = ClusterConfig::load_with_env(
        &p,
        env(&[
            ("ECG__SPLIT__SEED", "11"),
            ("ECG__SPLIT__FRACTIONS", "0.2,0.1"),
            ("ECG__DATA__HDF5", "a.hdf5,b.hdf5"),
            ("ECG__SPLIT__STRATEGY", "hash"),
            ("PATH", "/bin"),
            ("ECG_PYTHON", "/usr/bin/python3"),
        ]),
    )
    .unwrap();
    assert_eq!(c.split.seed, 11);
    assert_eq!(c.split.fractions, vec![0.2, 0.1]);
    assert_eq!(c.data.hdf5, vec!["a.hdf5", "b.hdf5"]);
    assert_eq!(c.split.strategy, SplitStrategyName::Hash);
}

#[test]
fn typos_are_refused_with_the_name_and_the_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "[split]\nsede = 7\n");
    let e = ClusterConfig::load_with_env(&p, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `sede` in [split]") && e.contains("seed"),
        "{e}"
    );

    let p = write(&dir, "[splits]\nseed = 7\n");
    let e = ClusterConfig::load_with_env(&p, env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown section [splits]"), "{e}");

    let p = write(&dir, "[split]\nseed = 7\n");
    for bad in [
        "ECG__SPLIT__SEDE",
        "ECG_SPLIT__SEED",
        "ECG__SPLIT_SEED",
        "ECG__SPLIT__SEED__X",
    ] {
        let e = ClusterConfig::load_with_env(&p, env(&[(bad, "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad) && e.contains("split.seed"), "{bad}: {e}");
    }
    let e = ClusterConfig::load_with_env(&p, env(&[("ECG__SPLIT__SEED", "x1")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ECG__SPLIT__SEED=`x1`: expected an integer"),
        "{e}"
    );
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[split]\nfractions = [0.7, 0.5]\n", "split.fractions"),
        ("[split]\nfractions = [0.2]\n", "split.fractions"),
        ("[split]\npin_split = \"dev\"\n", "split.pin_split"),
        ("[split]\nstrategy = \"random\"\n", "random"),
        ("[split]\nseed = \"zero\"\n", "seed"),
        ("[split]\nstrategy = \"file\"\n", "split.pin_file"),
        ("[data]\nhdf5 = []\n", "data.hdf5"),
        ("[data]\nmin_age = 90.0\nmax_age = 10.0\n", "data.min_age"),
        ("[data\n", "cluster.toml"),
        (
            "[cluster]\nshared_memory_dir = \"no/such/dir\"\n",
            "cluster.shared_memory_dir",
        ),
    ];
    for (text, want) in cases {
        let p = write(&dir, text);
        let e = ClusterConfig::load_with_env(&p, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{text:?}: expected `{want}` in: {e}");
    }
}

#[test]
fn hdf5_patterns_expand_in_natural_order() {
    let dir = tempfile::tempdir().unwrap();
    for n in [
        "exams_part10.hdf5",
        "exams_part2.hdf5",
        "exams_part0.hdf5",
        "other.hdf5",
    ] {
        std::fs::write(dir.path().join(n), b"").unwrap();
    }
    let p = write(&dir, "[data]\nhdf5 = [\"exams_part*.hdf5\"]\n");
    let c = ClusterConfig::load_with_env(&p, env(&[])).unwrap();
    let names: Vec<String> = c
        .hdf5_files()
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["exams_part0.hdf5", "exams_part2.hdf5", "exams_part10.hdf5"]
    );

    let p = write(&dir, "[data]\nhdf5 = [\"nothing*.h5\"]\n");
    let e = ClusterConfig::load_with_env(&p, env(&[]))
        .unwrap()
        .hdf5_files()
        .unwrap_err()
        .to_string();
    assert!(e.contains("matches no file"), "{e}");
}

#[test]
fn the_documented_example_states_the_true_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster.toml");
    let loaded = ClusterConfig::load_with_env(&example, env(&[])).unwrap();
    let defaults = ClusterConfig::default().resolve_paths(example.parent().unwrap());
    assert_eq!(
        loaded, defaults,
        "deploy/cluster.toml must show every default as it is"
    );
    // And it names every field of the schema.
    let text = std::fs::read_to_string(&example).unwrap();
    for key in known_keys().keys() {
        let field = key.split('.').nth(1).unwrap();
        assert!(
            text.contains(&format!("\n{field} = ")),
            "deploy/cluster.toml does not document {key}"
        );
    }
}
