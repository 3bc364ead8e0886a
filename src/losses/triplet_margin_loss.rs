//! `POST /v1/losses/triplet_margin_loss`: `nn.TripletMarginLoss` / `F.triplet_margin_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::ranking::triplet_margin::{TripletMarginOptions, triplet_margin_loss};
use serde_json::json;

use super::args::Float;
use super::{Category, Example, Info, Loss, Reduction, TensorArg, TensorKind, float, sample};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn one() -> f64 {
    1.0
}

fn two() -> Float {
    Float(2.0)
}

fn eps() -> f64 {
    1e-6
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/triplet_margin_loss`: the anchor should be closer to
    /// the positive than to the negative by at least `margin`.
    pub struct TripletMarginLoss {
        /// Anchor embeddings `(N, D)` or `(D)`.
        pub anchor: Tensor,
        /// Positive embeddings, same number of dimensions as `anchor`.
        pub positive: Tensor,
        /// Negative embeddings, same number of dimensions as `anchor`.
        pub negative: Tensor,
        /// The margin; must be positive.
        #[serde(default = "one")]
        #[schema(default = 1.0, exclusive_minimum = 0.0)]
        pub margin: f64,
        /// The norm degree of the distance: any number, or `"Infinity"` for the max norm.
        #[serde(default = "two")]
        #[schema(default = 2.0)]
        pub p: Float,
        /// Added to every component of each difference before the norm, as PyTorch does.
        #[serde(default = "eps")]
        #[schema(default = 1e-6)]
        pub eps: f64,
        /// Use the distance between positive and negative when it is smaller (distance swap).
        #[serde(default)]
        #[schema(default = false)]
        pub swap: bool,
    }
    reduction: Reduction;
}

impl Loss for TripletMarginLoss {
    const INFO: Info = Info {
        name: "triplet_margin_loss",
        module: "TripletMarginLoss",
        category: Category::RankingAndEmbedding,
        summary: "Triplet loss with p-norm distances: anchor–positive closer than anchor–negative by a margin.",
        formula: "d(u, v) = ‖u − v + eps‖_p over the last dim; ℓ = max(0, margin + d(a, p) − d(a, n)) (swap: d(a, n) → min(d(a, n), d(p, n)))",
        notes: "eps is added to every component of the difference (so d(u, u) = eps·D^(1/p)). A hinge at exactly 0 has gradient 0; a tie in the swap gives each branch half.",
        tensors: &[
            TensorArg {
                name: "anchor",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(N, D) or (D)",
            },
            TensorArg {
                name: "positive",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "same rank as anchor, broadcastable",
            },
            TensorArg {
                name: "negative",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "same rank as anchor, broadcastable",
            },
        ],
        reductions: &["none", "mean", "sum"],
    };

    fn common(&self) -> super::Common {
        self.common_fields()
    }

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let (a, p, n) = (
            float::<T>(self.anchor),
            float::<T>(self.positive),
            float::<T>(self.negative),
        );
        Ok(triplet_margin_loss(
            a.view(),
            p.view(),
            n.view(),
            TripletMarginOptions {
                margin: self.margin,
                p: self.p.0,
                eps: self.eps,
                swap: self.swap,
                reduction: self.reduction.into(),
                grad,
            },
        )?)
    }

    fn examples() -> Vec<Example> {
        vec![
            Example {
                name: "embeddings",
                summary: "The torch.nn.TripletMarginLoss example, shortened: 8 triplets of 16-d embeddings, with gradients",
                body: json!({"anchor": sample(&[8, 16], 25), "positive": sample(&[8, 16], 26), "negative": sample(&[8, 16], 27), "grad": true}),
            },
            Example {
                name: "swap-l1",
                summary: "L1 distance with the distance swap",
                body: json!({"anchor": sample(&[4, 3], 28), "positive": sample(&[4, 3], 29), "negative": sample(&[4, 3], 30), "p": 1, "swap": true, "margin": 0.5}),
            },
        ]
    }
}
