//! `POST /v1/losses/soft_margin_loss`: `nn.SoftMarginLoss` / `F.soft_margin_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::soft_margin::soft_margin_loss;

use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, pair, sample, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/soft_margin_loss`: two-class logistic loss with
    /// targets ±1. Computed stably: finite where PyTorch's literal formula overflows.
    pub struct SoftMarginLoss {
        /// The scores, any shape.
        pub input: Tensor,
        /// Labels, usually ±1; must broadcast to `input`'s shape without enlarging it.
        pub target: Tensor,
    }
    reduction: Reduction;
}

impl Loss for SoftMarginLoss {
    const INFO: Info = Info {
        name: "soft_margin_loss",
        module: "SoftMarginLoss",
        category: Category::Classification,
        summary: "Two-class logistic loss on ±1 labels.",
        formula: "ℓ = log(1 + exp(−target · input)), computed as softplus(−target · input)",
        notes: "The target must broadcast to the input's shape without enlarging it. No gradient for target (PyTorch refuses one).",
        unreduced: "The input's shape: one loss per element.",
        gradient: "input: −target·σ(−target·input).",
        differences: "Computed stably as softplus(−target·input): equal to PyTorch wherever PyTorch is finite, and finite where PyTorch's literal log(1 + exp(z)) overflows to infinity.",
        tensors: &[
            TensorArg::float("input", "(*)"),
            TensorArg::float("target", "broadcastable to input without enlarging it").no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::input_shape,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        pair(self.input, self.target, |x, y| {
            soft_margin_loss(x, y, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "labels",
            "Scores against ±1 labels, with the gradient",
            json!({"input": sample(&[4, 3], 1), "target": [[1, -1, 1], [-1, -1, 1], [1, 1, 1], [-1, 1, -1]], "grad": true}),
        )]
    }
}
