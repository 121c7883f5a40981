//! The training arithmetic the coordinator applies to flat `f32` buffers, written without a
//! tensor library so that every worker and the coordinator agree bit for bit: the seed's sample
//! weights and weighted squared-error loss, the layout of the flat parameter vector, PyTorch's
//! Adam and ReduceLROnPlateau, and the seed's stop rule.
//!
//! Layout:
//! - [`weights`]: `compute_weights`, the age-balancing sample weights of the seed.
//! - [`loss`]: the weighted sum of squared errors, its gradient and the mean absolute error.
//! - [`flat`]: [`ParamLayout`] (named, name-sorted slices of one flat vector), gradient
//!   summation and the finiteness check.
//! - [`audit`]: the commit log `commits.csv` and the digest that checks exactly-once use.
//! - [`adam`]: [`Adam`] with `torch.optim.Adam` semantics and serialisable state.
//! - [`plan`]: the batches of an epoch (shuffled, or the seed's order).
//! - [`history`]: `history.csv` and atomic file writes.
//! - [`local`]: the single-process trainer.
//! - [`resume`]: the on-disk training state (`train_state.safetensors`) a restarted run
//!   continues from, mid-epoch, with a checksum and a fallback to the previous file.
//! - [`schedule`]: [`ReduceLrOnPlateau`] with PyTorch semantics and the seed's [`StopRule`].

pub mod adam;
pub mod audit;
pub mod flat;
pub mod history;
pub mod local;
pub mod loss;
pub mod metrics;
pub mod plan;
pub mod resume;
pub mod schedule;
pub mod weights;

pub use adam::{Adam, AdamConfig, AdamState};
pub use flat::{ParamEntry, ParamLayout, check_finite, first_non_finite, sum_into};
pub use loss::{abs_error_sum, mae, weighted_sse, weighted_sse_grad};
pub use schedule::{PlateauConfig, ReduceLrOnPlateau, StopRule};
pub use weights::compute_weights;
