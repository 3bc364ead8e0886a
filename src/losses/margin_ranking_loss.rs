//! `POST /v1/losses/margin_ranking_loss`: `nn.MarginRankingLoss` / `F.margin_ranking_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::ranking::margin_ranking::margin_ranking_loss;
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, sample,
    shape, triple,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/margin_ranking_loss`: which of two scores should rank
    /// higher.
    pub struct MarginRankingLoss {
        /// First scores `(N)` or `()`.
        pub input1: Tensor,
        /// Second scores, the same number of dimensions as `input1`.
        pub input2: Tensor,
        /// 1 where `input1` should rank higher, −1 where `input2` should; same number of
        /// dimensions.
        pub target: Tensor,
        /// The margin.
        #[serde(default)]
        #[schema(default = 0.0)]
        pub margin: f64,
    }
    reduction: Reduction;
}

/// The three tensors broadcast together.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    let (a, b) = (shape::shape(args, "input1"), shape::shape(args, "input2"));
    let s = shape::broadcast("input1 and input2", &a, &b)?;
    shape::broadcast(
        "input1, input2 and target",
        &s,
        &shape::shape(args, "target"),
    )
}

impl Loss for MarginRankingLoss {
    const INFO: Info = Info {
        name: "margin_ranking_loss",
        module: "MarginRankingLoss",
        category: Category::RankingAndEmbedding,
        summary: "Pairwise ranking loss: the score named by target should be higher by at least margin.",
        formula: "ℓ = max(0, −target · (input1 − input2) + margin)",
        notes: "All three tensors must have the same number of dimensions, then broadcast. A hinge exactly at 0 has gradient 0.",
        unreduced: "Input1, input2 and target broadcast together: one loss per pair.",
        gradient: "input1: −target where the hinge is positive, else 0; input2: target there; target: −(input1 − input2) there.",
        differences: "",
        tensors: &[
            TensorArg::float("input1", "(N) or ()"),
            TensorArg::float("input2", "same rank as input1"),
            TensorArg::float("target", "same rank as input1"),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        triple(self.input1, self.input2, self.target, |a, b, y| {
            margin_ranking_loss(a, b, y, self.margin, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "pairs",
            "Five pairs of scores with a margin of 0.5, with gradients",
            json!({"input1": sample(&[5], 21), "input2": sample(&[5], 22), "target": [1, -1, 1, 1, -1], "margin": 0.5, "grad": true}),
        )]
    }
}
