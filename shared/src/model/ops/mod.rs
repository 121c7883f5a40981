//! The model's own Candle operations, each a `CustomOp` with forward and backward written here,
//! because Candle 0.11.1's stock `conv1d` returns wrong weight gradients for batch > 1 (and a slow
//! input gradient when padded) and its max gradient goes to every tied maximum where PyTorch's
//! `MaxPool1d` picks the first.
//!
//! - [`conv1d`]: 1-D cross-correlation without bias, any stride and symmetric zero padding
//!   (im2col tiles + gemm on the CPU, a plain gemm for 1x1 convolutions), with input and weight
//!   gradients.
//! - [`max_pool1d`]: non-overlapping max-pool (kernel = stride), gradient to the first maximum
//!   of each window, as PyTorch.
//!
//! Both accept `f32` and `f64` tensors of any layout, on the CPU or (feature `cuda`) a CUDA
//! device (`cuda`: kernels and cuDNN calls; `composed`: the same maths from Candle ops). Internals: `conv1d_cpu` (kernels),
//! `im2col` (geometry and column tiles), `gemm` (the one safe wrapper over the `gemm` crate),
//! `layout` (strided storages to dense slices), `scalar` (the element-type trait).
pub(crate) mod composed;
mod conv1d;
mod conv1d_cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod gemm;
mod im2col;
mod layout;
mod maxpool;
mod scalar;
#[cfg(test)]
mod tests;

pub use conv1d::{conv1d, conv1d_tf32};
pub(crate) use layout::dense as dense_view;
pub use maxpool::max_pool1d;
