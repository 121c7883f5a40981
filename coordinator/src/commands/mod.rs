//! The coordinator's commands. Each module holds its clap arguments and its `run`.
//!
//! - [`run`]: `coordinator --config cluster.toml`, the coordinator itself.
//! - [`synth`]: `coordinator synth`, the synthetic CODE-format cohort.
//! - [`split`]: `coordinator split`, a patient-level split written to `split.csv`.
//! - [`status`]: `coordinator status`, where a running coordinator's run is.

pub mod run;
pub mod split;
pub mod status;
pub mod synth;

/// A progress bar on stderr with `template` when stderr is a terminal; hidden otherwise (logs
/// and redirected output stay clean).
pub(crate) fn progress_bar(template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
