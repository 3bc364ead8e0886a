//! `POST /v1/losses/triplet_margin_with_distance_loss`: `nn.TripletMarginWithDistanceLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::ranking::triplet_margin_with_distance::{
    DistanceFunction, TripletMarginWithDistanceOptions, triplet_margin_with_distance_loss,
};
use serde::Deserialize;
use serde_json::json;

use super::{Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, sample, shape, triple};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

/// The distance functions offered (a callable cannot travel over HTTP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    /// `nn.PairwiseDistance()`: Euclidean, eps = 1e-6 (PyTorch's default).
    #[default]
    PairwiseDistance,
    /// `1 − F.cosine_similarity(x1, x2, dim=-1, eps=1e-8)`.
    CosineDistance,
}

fn one() -> f64 {
    1.0
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/triplet_margin_with_distance_loss`: the triplet loss
    /// with a chosen distance function.
    pub struct TripletMarginWithDistanceLoss {
        /// Anchor embeddings `(N, D)` or `(D)`.
        pub anchor: Tensor,
        /// Positive embeddings, same number of dimensions as `anchor`.
        pub positive: Tensor,
        /// Negative embeddings, same number of dimensions as `anchor`.
        pub negative: Tensor,
        /// The distance: `pairwise_distance` (Euclidean) or `cosine_distance`.
        #[serde(default)]
        #[schema(default = "pairwise_distance")]
        pub distance_function: Distance,
        /// The margin; must be positive.
        #[serde(default = "one")]
        #[schema(default = 1.0, exclusive_minimum = 0.0)]
        pub margin: f64,
        /// Use the distance between positive and negative when it is smaller.
        #[serde(default)]
        #[schema(default = false)]
        pub swap: bool,
    }
    reduction: Reduction;
}

impl Loss for TripletMarginWithDistanceLoss {
    const INFO: Info = Info {
        name: "triplet_margin_with_distance_loss",
        module: "TripletMarginWithDistanceLoss",
        category: Category::RankingAndEmbedding,
        summary: "Triplet loss with a chosen distance function (Euclidean or cosine).",
        formula: "ℓ = max(0, margin + D(a, p) − D(a, n)) (swap: D(a, n) → min(D(a, n), D(p, n)))",
        notes: "margin must be > 0. pairwise_distance (the default) is identical to triplet_margin_loss with p = 2 and eps = 1e-6.",
        unreduced: "One loss per triplet: the broadcast shape of the tensors without the last dimension; () for (D).",
        gradient: "anchor, positive and negative: the chosen distance's gradient, +D(a, p) and −D(a, n) (or −D(p, n) when swapped), where the hinge is positive.",
        differences: "distance_function is a fixed menu (pairwise_distance or cosine_distance) instead of PyTorch's callable, which cannot travel over HTTP.",
        tensors: super::triplet_margin_loss::TENSORS,
        reductions: REDUCTIONS,
        none_shape: super::triplet_margin_loss::none_shape,
        layout: Layout::Rows(shape::last_dim_rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let distance_function = match self.distance_function {
            Distance::PairwiseDistance => DistanceFunction::PairwiseDistance,
            Distance::CosineDistance => DistanceFunction::CosineDistance,
        };
        let options = TripletMarginWithDistanceOptions {
            distance_function,
            margin: self.margin,
            swap: self.swap,
            reduction: self.reduction.into(),
            grad,
        };
        triple(self.anchor, self.positive, self.negative, |a, p, n| {
            triplet_margin_with_distance_loss(a, p, n, options)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "cosine",
            "Cosine distance on 4 triplets of 8-d embeddings, with gradients",
            json!({"anchor": sample(&[4, 8], 31), "positive": sample(&[4, 8], 32), "negative": sample(&[4, 8], 33),
                   "distance_function": "cosine_distance", "margin": 0.5, "grad": true}),
        )]
    }
}
