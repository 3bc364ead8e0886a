//! `POST /v1/losses/poisson_nll_loss`: `nn.PoissonNLLLoss` / `F.poisson_nll_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::probabilistic::poisson_nll::poisson_nll_loss;
use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, pair, sample, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn yes() -> bool {
    true
}

fn eps() -> f64 {
    1e-8
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/poisson_nll_loss`: negative log-likelihood of counts
    /// under a Poisson distribution.
    pub struct PoissonNllLoss {
        /// The predicted rate: its log with `log_input` (the default), else the rate itself.
        pub input: Tensor,
        /// The observed counts; broadcast against `input`.
        pub target: Tensor,
        /// Whether `input` is the log of the rate.
        #[serde(default = "yes")]
        #[schema(default = true)]
        pub log_input: bool,
        /// Add the Stirling approximation of `log(target!)` (where target > 1).
        #[serde(default)]
        #[schema(default = false)]
        pub full: bool,
        /// Added to the rate before its log when `log_input` is false.
        #[serde(default = "eps")]
        #[schema(default = 1e-8)]
        pub eps: f64,
    }
    reduction: Reduction;
}

impl Loss for PoissonNllLoss {
    const INFO: Info = Info {
        name: "poisson_nll_loss",
        module: "PoissonNLLLoss",
        category: Category::Probabilistic,
        summary: "Negative log-likelihood of counts under a Poisson distribution with the predicted rate.",
        formula: "log_input: ℓ = exp(input) − target · input; else ℓ = input − target · log(input + eps); full adds target·log(target) − target + ½ log(2π target) where target > 1",
        notes: "eps only enters when log_input is false. The Stirling term of full applies only where target > 1.",
        unreduced: "Input and target broadcast together: one loss per element.",
        gradient: "input: exp(input) − target with log_input, else 1 − target/(input + eps).",
        differences: "No gradient for target: PyTorch's is NaN at target ≤ 0 with full = true.",
        tensors: &[
            TensorArg::float("input", "(*)"),
            TensorArg::float("target", "(*), broadcastable with input").no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        pair(self.input, self.target, |x, y| {
            let (log_input, full, eps) = (self.log_input, self.full, self.eps);
            poisson_nll_loss(x, y, log_input, full, eps, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "counts",
                "Log-rates against observed counts, with the gradient",
                json!({"input": sample(&[2, 4], 7), "target": [[0, 1, 3, 2], [5, 0, 1, 4]], "grad": true}),
            ),
            Example::new(
                "full",
                "Rates (not logs) with the Stirling term",
                json!({"input": [[0.5, 1.0, 2.0, 4.0]], "target": [[0, 1, 3, 6]], "log_input": false, "full": true, "reduction": "none"}),
            ),
        ]
    }
}
