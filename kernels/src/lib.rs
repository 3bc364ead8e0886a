//! PyTorch's `torch.nn` losses as pure functions over [`ndarray`]: forward values, reductions
//! and the gradients PyTorch's autograd returns, in `f32` or `f64`.
//!
//! No HTTP, no async, no request types: the `lossd` service calls these, and so can any Rust
//! program. Semantics are PyTorch 2.15's (CPU), documented per loss in `docs/losses.md`; where
//! lossd deliberately differs, `docs/differences.md` says so and why.
//!
//! # Layout
//!
//! - [`real`]: the [`Real`] trait (`f32`, `f64`) kernels are generic over.
//! - [`reduction`]: [`Reduction`], the one place where sums and means are taken, the blocked
//!   pass of the element-wise kernels, and the loss a kernel returns for each reduction.
//! - [`broadcast`]: PyTorch's broadcasting rules, the unbroadcast of gradients, `unravel`.
//! - [`error`]: [`LossError`], naming the argument at fault.
//! - [`output`]: [`LossOutput`], a loss with its gradients and warnings.
//! - [`vmath`]: vectorisable `exp`/`ln`/`ln_1p` and the run-time AVX-512 / AVX2 dispatch of
//!   kernel loops (its accuracy tests in `vmath/tests.rs`).
//! - `softmax` (crate-private): the log-softmax row math of `cross_entropy` and
//!   `linear_cross_entropy`, and the transposition of K-dimensional inputs into rows.
//! - `matmul` (crate-private): the matrix products of `linear_cross_entropy`.
//! - [`cancel`]: cooperative cancellation checkpoints for long kernels.
//! - [`alloc`]: malloc settings under which freed output buffers are reused.
//! - [`regression`], [`classification`], [`probabilistic`], [`ranking`]: one module per loss;
//!   a kernel's long test module lives beside it as `<loss>/tests.rs`.
//! - `testing` (tests only): random tensors, finite-difference and bit-comparison helpers.
//!
//! # Conventions
//!
//! Every kernel takes its tensors as [`ndarray::ArrayViewD`], then its options: a kernel with
//! several options takes one options struct whose `Default` is PyTorch's (for example
//! [`classification::cross_entropy::CrossEntropyOptions`],
//! [`probabilistic::ctc::CtcOptions`]), the others take them as plain values followed by a
//! [`Reduction`] and `grad: bool`. Each validates everything PyTorch validates and returns a
//! [`LossOutput`]. Element-wise arithmetic is done in the element type, sums accumulate in
//! `f64` in a fixed order, so results are deterministic.

pub mod alloc;
pub mod broadcast;
pub mod cancel;
pub mod classification;
pub mod error;
pub(crate) mod matmul;
pub mod output;
pub mod probabilistic;
pub mod ranking;
pub mod real;
pub mod reduction;
pub mod regression;
pub(crate) mod softmax;
pub mod vmath;

#[cfg(test)]
#[allow(dead_code)]
pub(crate) mod testing;

pub use error::{ErrorKind, LossError};
pub use output::LossOutput;
pub use real::Real;
pub use reduction::Reduction;

/// `ndarray`, re-exported so callers use the same version.
pub use ndarray;
