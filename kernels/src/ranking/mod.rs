//! Ranking and embedding losses.

pub mod cosine_embedding;
pub mod hinge_embedding;
pub mod margin_ranking;
pub mod triplet_margin;
pub mod triplet_margin_with_distance;
