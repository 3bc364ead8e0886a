//! `POST /v1/losses/mse_loss`: `nn.MSELoss` / `F.mse_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::regression::mse::mse_loss;

use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, sample, shape, weighted,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/mse_loss`: mean squared error.
    pub struct MseLoss {
        /// The prediction, any shape.
        pub input: Tensor,
        /// The target; broadcast against `input` (with a warning when the sizes differ).
        pub target: Tensor,
        /// Per-element weights (`F.mse_loss(..., weight=)`), exactly the shape of `input`;
        /// the weighted mean divides by `Σ weight`.
        #[serde(default)]
        pub weight: Option<Tensor>,
    }
    reduction: Reduction;
}

impl Loss for MseLoss {
    const INFO: Info = Info {
        name: "mse_loss",
        module: "MSELoss",
        category: Category::Regression,
        summary: "Mean squared error between input and target.",
        formula: "ℓ = (input − target)² (× weight); mean divides by Σ weight when weighted",
        notes: "The weighted mean divides by Σ weight; weight must have exactly the input's shape. A target of another size is broadcast, with PyTorch's warning in `warnings`.",
        unreduced: "Input and target broadcast together: one loss per element.",
        gradient: "input: 2 (input − target) (× weight); target: the negative of that; weight: (input − target)².",
        differences: "",
        tensors: super::l1_loss::TENSORS,
        reductions: REDUCTIONS,
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        weighted(self.input, self.target, self.weight, |x, y, w| {
            mse_loss(x, y, w, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "tutorial",
                "MSE on 3×5 tensors with the gradient (the torch.nn.MSELoss example)",
                json!({"input": sample(&[3, 5], 1), "target": sample(&[3, 5], 2), "grad": true}),
            ),
            Example::new(
                "broadcast",
                "A target broadcast against the input, with PyTorch's warning",
                json!({"input": sample(&[3, 5], 3), "target": sample(&[5], 4)}),
            ),
        ]
    }
}
