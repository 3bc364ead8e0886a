//! `POST /v1/losses/smooth_l1_loss`: `nn.SmoothL1Loss` / `F.smooth_l1_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::regression::smooth_l1::smooth_l1_loss;

use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, pair, sample, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn one() -> f64 {
    1.0
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/smooth_l1_loss`: quadratic below `beta`, linear above.
    pub struct SmoothL1Loss {
        /// The prediction, any shape.
        pub input: Tensor,
        /// The target; broadcast against `input` (with a warning when the sizes differ).
        pub target: Tensor,
        /// Where the loss turns from quadratic to linear; `0` gives `l1_loss`; negative is
        /// rejected.
        #[serde(default = "one")]
        #[schema(default = 1.0, minimum = 0.0)]
        pub beta: f64,
    }
    reduction: Reduction;
}

impl Loss for SmoothL1Loss {
    const INFO: Info = Info {
        name: "smooth_l1_loss",
        module: "SmoothL1Loss",
        category: Category::Regression,
        summary: "L1 loss smoothed to a quadratic near zero; robust to outliers.",
        formula: "d = input − target; ℓ = 0.5 d² / beta if |d| < beta, else |d| − 0.5 beta (beta = 0: |d|)",
        notes: "beta must be ≥ 0; beta = 0 is exactly l1_loss. A target of another size is broadcast, with PyTorch's warning in `warnings`.",
        unreduced: "Input and target broadcast together: one loss per element.",
        gradient: "input: d / beta inside the quadratic zone, sign(d) outside it (±1 exactly at |d| = beta; sign(d), 0 at d = 0, when beta = 0), d = input − target; target: the negative of that.",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(*)"),
            TensorArg::float("target", "(*), broadcastable with input"),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        pair(self.input, self.target, |x, y| {
            smooth_l1_loss(x, y, self.reduction.into(), self.beta, grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "tutorial",
            "Smooth L1 on 3×5 tensors with beta = 0.5 and the gradient",
            json!({"input": sample(&[3, 5], 1), "target": sample(&[3, 5], 2), "beta": 0.5, "grad": true}),
        )]
    }
}
