//! `POST /v1/losses/binary_cross_entropy`: `nn.BCELoss` / `F.binary_cross_entropy`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::binary_cross_entropy::binary_cross_entropy;
use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, shape, weighted,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/binary_cross_entropy`: cross-entropy of probabilities
    /// against binary (or soft) targets.
    pub struct BinaryCrossEntropy {
        /// Probabilities in [0, 1], any shape (outside [0, 1] or NaN: `invalid_value`).
        pub input: Tensor,
        /// Targets in [0, 1], exactly the shape of `input`.
        pub target: Tensor,
        /// Rescaling weights, broadcast to `input`'s shape (without enlarging it).
        #[serde(default)]
        pub weight: Option<Tensor>,
    }
    reduction: Reduction;
}

impl Loss for BinaryCrossEntropy {
    const INFO: Info = Info {
        name: "binary_cross_entropy",
        module: "BCELoss",
        category: Category::Classification,
        summary: "Binary cross-entropy between predicted probabilities and targets.",
        formula: "ℓ = −weight · [target · max(log input, −100) + (1 − target) · max(log(1 − input), −100)]",
        notes: "Each log is clamped at −100 as in PyTorch, so inputs of exactly 0 or 1 give finite losses. The weighted mean divides by the element count, not Σ weight. Input and target must have the same shape.",
        unreduced: "The input's shape: one loss per element.",
        gradient: "input: weight·(input − target) / max(input·(1 − input), 1e-12), as PyTorch computes it; target: weight·(log(1 − input) − log input), unclamped (infinite where input is 0 or 1).",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(*), values in [0, 1]"),
            TensorArg::float("target", "same as input, values in [0, 1]"),
            TensorArg::float("weight", "broadcastable to input")
                .optional()
                .no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::input_shape,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        weighted(self.input, self.target, self.weight, |x, y, w| {
            binary_cross_entropy(x, y, w, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "probabilities",
            "Sigmoid outputs of a 3×2 batch against binary labels, with gradients",
            json!({"input": [[0.9, 0.2], [0.35, 0.6], [0.05, 0.99]], "target": [[1, 0], [0, 1], [0, 1]], "grad": true}),
        )]
    }
}
