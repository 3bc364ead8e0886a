//! `triplet_margin_with_distance_loss` (`nn.TripletMarginWithDistanceLoss`), docs/losses.md.
//!
//! PyTorch takes any callable as `distance_function`; lossd offers a fixed menu,
//! [`DistanceFunction`]: the default `nn.PairwiseDistance()` (numerically identical to
//! `triplet_margin_loss` with `p = 2`, `eps = 1e-6`) and the cosine distance
//! `1 − cosine_similarity(x1, x2, dim=-1, eps=1e-8)`. Margin, swap, reductions, shape rules and
//! sub-gradient conventions are those of `triplet_margin_loss` (the machinery is shared, see
//! [`super::triplet_margin`]).

use ndarray::ArrayViewD;

use super::triplet_margin::{Distance, Triplet, check_margin, triplet_loss};
use crate::{LossError, LossOutput, Real, Reduction};

/// The distance functions lossd offers for `distance_function`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DistanceFunction {
    /// `nn.PairwiseDistance()` (PyTorch's default): `‖x1 − x2 + 1e-6‖₂` over the last
    /// dimension.
    #[default]
    PairwiseDistance,
    /// `1 − F.cosine_similarity(x1, x2, dim=-1, eps=1e-8)`, with PyTorch 2.15's formula
    /// `Σ (x1 / max(‖x1‖, eps)) · (x2 / max(‖x2‖, eps))` (x1 and x2 broadcast first) and its
    /// autograd gradient (the clamp to eps is invisible to autograd).
    CosineDistance,
}

impl DistanceFunction {
    fn distance(self) -> Distance {
        match self {
            DistanceFunction::PairwiseDistance => Distance::PNorm { p: 2.0, eps: 1e-6 },
            DistanceFunction::CosineDistance => Distance::Cosine { eps: 1e-8 },
        }
    }
}

/// The options of [`triplet_margin_with_distance_loss`]; the defaults are
/// `nn.TripletMarginWithDistanceLoss()`'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TripletMarginWithDistanceOptions {
    /// The distance between two embeddings.
    pub distance_function: DistanceFunction,
    /// The margin (> 0).
    pub margin: f64,
    /// Compare with the nearer of the anchor and the positive to the negative.
    pub swap: bool,
    /// How the per-triplet losses are reduced.
    pub reduction: Reduction,
    /// Whether to return the gradients.
    pub grad: bool,
}

impl Default for TripletMarginWithDistanceOptions {
    fn default() -> Self {
        Self {
            distance_function: DistanceFunction::default(),
            margin: 1.0,
            swap: false,
            reduction: Reduction::Mean,
            grad: false,
        }
    }
}

/// `F.triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=...,
/// margin, swap, reduction)`.
///
/// `ℓ = max(0, margin + D(a, p) − D(a, n))`, with `swap` `D(a, n)` replaced by
/// `min(D(a, n), D(p, n))`. Shapes as `triplet_margin_loss`: same rank, pairwise broadcast,
/// distance over the last dimension (`(N, D)` → `(N)`, `(D)` → `()`). Gradients: `anchor`,
/// `positive`, `negative`.
///
/// Errors: [`LossError::option`] `margin` when `margin <= 0` or NaN (checked first, as
/// PyTorch does); [`LossError::shape`] naming `positive` or `negative` when the ranks differ
/// or the shapes do not broadcast.
pub fn triplet_margin_with_distance_loss<T: Real>(
    anchor: ArrayViewD<'_, T>,
    positive: ArrayViewD<'_, T>,
    negative: ArrayViewD<'_, T>,
    options: TripletMarginWithDistanceOptions,
) -> Result<LossOutput<T>, LossError> {
    check_margin(options.margin)?;
    let distance = options.distance_function.distance();
    let (margin, swap) = (options.margin, options.swap);
    let (reduction, grad) = (options.reduction, options.grad);
    let triplet = Triplet {
        margin,
        distance,
        swap,
        reduction,
        grad,
    };
    triplet_loss(anchor, positive, negative, triplet)
}

#[cfg(test)]
mod tests;
