//! `POST /v1/losses/l1_loss`: `nn.L1Loss` / `F.l1_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::regression::l1::l1_loss;

use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, sample, shape,
    weighted,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/l1_loss`: mean absolute error.
    pub struct L1Loss {
        /// The prediction, any shape.
        pub input: Tensor,
        /// The target; broadcast against `input` (with a warning when the sizes differ).
        pub target: Tensor,
        /// Per-element weights (`F.l1_loss(..., weight=)`), exactly the shape of `input`;
        /// the weighted mean divides by `Σ weight`.
        #[serde(default)]
        pub weight: Option<Tensor>,
    }
    reduction: Reduction;
}

/// The tensors of the point-wise regression losses with a `weight` (`mse_loss` and
/// `huber_loss` take the same).
pub(super) const TENSORS: &[TensorArg] = &[
    TensorArg::float("input", "(*)"),
    TensorArg::float("target", "(*), broadcastable with input"),
    TensorArg::float("weight", "same as input").optional(),
];

impl Loss for L1Loss {
    const INFO: Info = Info {
        name: "l1_loss",
        module: "L1Loss",
        category: Category::Regression,
        summary: "Mean absolute error between input and target.",
        formula: "ℓ = |input − target| (× weight); mean divides by Σ weight when weighted",
        notes: "The weighted mean divides by Σ weight; weight must have exactly the input's shape. A target of another size is broadcast, with PyTorch's warning in `warnings`.",
        unreduced: "Input and target broadcast together: one loss per element.",
        gradient: "input: sign(input − target) (× weight), 0 where the two are equal or NaN; target: the negative of that; weight: |input − target|.",
        differences: "",
        tensors: TENSORS,
        reductions: REDUCTIONS,
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        weighted(self.input, self.target, self.weight, |x, y, w| {
            l1_loss(x, y, w, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "tutorial",
                "L1 on 3×5 tensors with the gradient (the torch.nn.L1Loss example)",
                json!({"input": sample(&[3, 5], 1), "target": sample(&[3, 5], 2), "grad": true}),
            ),
            Example::new(
                "weighted",
                "Weighted, unreduced",
                json!({"input": [[1.0, -0.5], [0.25, 2.0]], "target": [[0.5, -0.5], [1.25, 0.0]],
                       "weight": [[1.0, 2.0], [0.5, 1.0]], "reduction": "none"}),
            ),
        ]
    }
}
