//! `POST /v1/losses/hinge_embedding_loss`: `nn.HingeEmbeddingLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::ranking::hinge_embedding::hinge_embedding_loss;
use serde_json::json;

use super::{Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, pair, shape};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn one() -> f64 {
    1.0
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/hinge_embedding_loss`: similar pairs should be close,
    /// dissimilar pairs at least `margin` apart.
    pub struct HingeEmbeddingLoss {
        /// Distances (usually non-negative), any shape.
        pub input: Tensor,
        /// 1 (similar) or −1 (dissimilar); broadcast against `input`.
        pub target: Tensor,
        /// The margin for dissimilar pairs.
        #[serde(default = "one")]
        #[schema(default = 1.0)]
        pub margin: f64,
    }
    reduction: Reduction;
}

impl Loss for HingeEmbeddingLoss {
    const INFO: Info = Info {
        name: "hinge_embedding_loss",
        module: "HingeEmbeddingLoss",
        category: Category::RankingAndEmbedding,
        summary: "Hinge loss on distances: pull similar pairs together, push dissimilar pairs beyond the margin.",
        formula: "ℓ = input if target = 1; max(0, margin − input) if target = −1",
        notes: "Targets other than ±1 give input + max(0, margin − input), as PyTorch computes it. No gradient for target.",
        unreduced: "Input and target broadcast together: one loss per element.",
        gradient: "input: 1 where target = 1; −1 where target = −1 and margin − input > 0, else 0 (other targets: the sum of both).",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(*)"),
            TensorArg::float("target", "broadcastable with input").no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        pair(self.input, self.target, |x, y| {
            hinge_embedding_loss(x, y, self.margin, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "distances",
            "Distances of similar (1) and dissimilar (−1) pairs, with the gradient",
            json!({"input": [[0.3, 1.7, 0.2], [2.5, 0.9, 0.4]], "target": [[1, -1, -1], [-1, 1, 1]], "grad": true}),
        )]
    }
}
