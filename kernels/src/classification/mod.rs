//! Classification losses.

pub mod binary_cross_entropy;
pub mod binary_cross_entropy_with_logits;
pub mod cross_entropy;
pub mod linear_cross_entropy;
pub mod multi_margin;
pub mod multilabel_margin;
pub mod multilabel_soft_margin;
pub mod nll;
pub mod soft_margin;
