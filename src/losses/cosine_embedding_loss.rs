//! `POST /v1/losses/cosine_embedding_loss`: `nn.CosineEmbeddingLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::ranking::cosine_embedding::cosine_embedding_loss;
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, sample,
    shape, triple,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/cosine_embedding_loss`: similar pairs should point the
    /// same way, dissimilar pairs should not.
    pub struct CosineEmbeddingLoss {
        /// Embeddings `(N, D)`, or `(D)` for one pair.
        pub input1: Tensor,
        /// Embeddings, broadcast against `input1`.
        pub input2: Tensor,
        /// 1 (similar) or −1 (dissimilar): `(N)`, or a plain number for one pair.
        pub target: Tensor,
        /// The margin for dissimilar pairs (meaningful in [−1, 1]).
        #[serde(default)]
        #[schema(default = 0.0)]
        pub margin: f64,
    }
    reduction: Reduction;
}

/// One loss per pair: the cosines (one per row of the broadcast embeddings) broadcast with
/// `target`.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    let (a, b) = (shape::shape(args, "input1"), shape::shape(args, "input2"));
    let y = shape::shape(args, "target");
    let full = shape::broadcast("input1 and input2", &a, &b)?;
    let rows: Vec<usize> = if y.len() == 1 && full.len() == 2 {
        vec![full[0]]
    } else {
        vec![]
    };
    shape::broadcast("the cosines and target", &rows, &y)
}

/// The embeddings in rows along their last dimension.
fn rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    matches!(arg, "input1" | "input2").then(|| shape::last_dim_rows(arg, args))?
}

impl Loss for CosineEmbeddingLoss {
    const INFO: Info = Info {
        name: "cosine_embedding_loss",
        module: "CosineEmbeddingLoss",
        category: Category::RankingAndEmbedding,
        summary: "Cosine-similarity loss on pairs of embeddings.",
        formula: "cos = Σ a·b / sqrt((Σ a² + 1e-12)(Σ b² + 1e-12)); ℓ = 1 − cos if target = 1, max(0, cos − margin) if target = −1",
        notes: "The 1e-12 is ATen's float32 constant, added to each squared norm, so zero vectors give cos = 0. Targets other than ±1 give 0. No gradient for target.",
        unreduced: "One loss per pair: (N) for (N, D) embeddings, () for (D).",
        gradient: "input1 and input2: −∂cos where target = 1, +∂cos where target = −1 and cos > margin, 0 otherwise; ∂cos/∂input1 = input2/(|input1|·|input2|) − cos·input1/|input1|² (norms with the 1e-12).",
        differences: "",
        tensors: &[
            TensorArg::float("input1", "(N, D) or (D)"),
            TensorArg::float("input2", "(N, D) or (D), broadcastable with input1"),
            TensorArg::float("target", "(N) or ()").no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        triple(self.input1, self.input2, self.target, |a, b, y| {
            cosine_embedding_loss(a, b, y, self.margin, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "pairs",
            "Three pairs of 4-d embeddings, with gradients",
            json!({"input1": sample(&[3, 4], 23), "input2": sample(&[3, 4], 24), "target": [1, -1, 1], "margin": 0.2, "grad": true}),
        )]
    }
}
