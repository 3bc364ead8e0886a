//! Probabilistic losses.

pub mod ctc;
pub mod gaussian_nll;
pub mod kl_div;
pub mod poisson_nll;
