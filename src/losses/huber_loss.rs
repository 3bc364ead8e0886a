//! `POST /v1/losses/huber_loss`: `nn.HuberLoss` / `F.huber_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::regression::huber::huber_loss;

use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, sample, shape, weighted,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn one() -> f64 {
    1.0
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/huber_loss`: quadratic below `delta`, linear above.
    pub struct HuberLoss {
        /// The prediction, any shape.
        pub input: Tensor,
        /// The target; broadcast against `input` (with a warning when the sizes differ).
        pub target: Tensor,
        /// Per-element weights (`F.huber_loss(..., weight=)`), exactly the shape of `input`;
        /// the weighted mean divides by the element count, as PyTorch 2.15 does.
        #[serde(default)]
        pub weight: Option<Tensor>,
        /// Where the loss turns from quadratic to linear; must be positive.
        #[serde(default = "one")]
        #[schema(default = 1.0, exclusive_minimum = 0.0)]
        pub delta: f64,
    }
    reduction: Reduction;
}

impl Loss for HuberLoss {
    const INFO: Info = Info {
        name: "huber_loss",
        module: "HuberLoss",
        category: Category::Regression,
        summary: "Squared error near zero, absolute error beyond delta; robust to outliers.",
        formula: "d = input − target; ℓ = 0.5 d² if |d| < delta, else delta (|d| − 0.5 delta) (× weight)",
        notes: "delta must be > 0. With weight, the mean divides by the element count, unlike l1_loss and mse_loss (as PyTorch 2.15 does). Equal to delta × smooth_l1_loss with beta = delta.",
        unreduced: "Input and target broadcast together: one loss per element.",
        gradient: "input: d clamped to [−delta, delta] (× weight), d = input − target; target: the negative of that; weight: the unweighted loss.",
        differences: "",
        tensors: super::l1_loss::TENSORS,
        reductions: REDUCTIONS,
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        weighted(self.input, self.target, self.weight, |x, y, w| {
            huber_loss(x, y, w, self.reduction.into(), self.delta, grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "tutorial",
            "Huber on 3×5 tensors with delta = 0.5 and the gradient",
            json!({"input": sample(&[3, 5], 1), "target": sample(&[3, 5], 2), "delta": 0.5, "grad": true}),
        )]
    }
}
