//! Bad input on disk surfaces cleanly through the binaries, before any training starts.
//!
//! For each malformed dataset or configuration case of the data layer (tests/index.rs,
//! tests/split.rs, tests/hdf5_roundtrip.rs, the config, CSV and HDF5 unit tests), built from a
//! tiny synthetic cohort copied and damaged, `coordinator --config` exits with an error status
//! (not a signal, not a panic's 101) within a bound, with a message on stderr naming the file,
//! field or value; it never starts serving (no `coordinator.addr`), and a previous run's files
//! in the output folder are byte for byte as they were, with nothing added. A worker that sees
//! a damaged copy of the dataset (`--data-root`), has an unreadable token file or is given an
//! address that is not host:port stops the same way before training anything, while the
//! coordinator goes on waiting for workers; `worker check-data` names the damage; then a
//! healthy worker completes the run.
//!
//! Layout: `support` (bounded runs, the cohort and its damage, `cluster.toml` by key),
//! `cases` (a coordinator case: its output folder of sentinels and the checks), `coordinator`
//! and `worker` (the two tests).
mod cases;
mod coordinator;
mod support;
mod worker;
