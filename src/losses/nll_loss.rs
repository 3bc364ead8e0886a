//! `POST /v1/losses/nll_loss`: `nn.NLLLoss` / `F.nll_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::nll::nll_loss;
use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, classes, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

pub(super) fn minus_100() -> i64 {
    -100
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/nll_loss`: negative log-likelihood of class indices
    /// under log-probabilities.
    pub struct NllLoss {
        /// Log-probabilities `(N, C)`, `(N, C, d1, ..., dK)`, or `(C)` for one sample (used as
        /// given; usually the output of log_softmax).
        pub input: Tensor,
        /// Class indices (integers) in `[0, C)` or equal to `ignore_index`: `(N)`,
        /// `(N, d1, ..., dK)`, or a plain number for one sample.
        pub target: Tensor,
        /// Per-class weights `(C,)`; the mean divides by the summed weights of the targets.
        #[serde(default)]
        pub weight: Option<Tensor>,
        /// A target value that is ignored (contributes nothing, and nothing to the mean's
        /// denominator); may lie outside `[0, C)`.
        #[serde(default = "minus_100")]
        #[schema(default = -100)]
        pub ignore_index: i64,
    }
    reduction: Reduction;
}

impl Loss for NllLoss {
    const INFO: Info = Info {
        name: "nll_loss",
        module: "NLLLoss",
        category: Category::Classification,
        summary: "Negative log-likelihood of class indices under log-probabilities.",
        formula: "ℓ_n = −weight[y_n] · input[n, y_n] (0 where y_n = ignore_index); mean = Σ ℓ_n / Σ weight[y_n]",
        notes: "The mean is a weighted mean over the non-ignored targets; all targets ignored (or weights summing to 0) gives NaN, as in PyTorch. K-dimensional inputs (N, C, d1..dK) take targets (N, d1..dK).",
        unreduced: "One loss per position: the target's shape, (N) or (N, d1..dK); () for a (C) input.",
        gradient: "input: −weight[y] at each position's target class, 0 elsewhere and at ignored positions (divided by Σ weight of the non-ignored targets for the mean).",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(N, C), (N, C, d1..dK) or (C)"),
            TensorArg::integer("target", "(N), (N, d1..dK) or ()"),
            TensorArg::float("weight", "(C)").optional().no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::without_class_dim,
        layout: Layout::Rows(shape::input_class_rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        classes(self.input, self.target, self.weight, |x, y, w| {
            nll_loss(x, y, w, self.ignore_index, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        // A 2-D "image" batch: N = 1, C = 3 classes, 2×2 pixels of log-probabilities.
        let lp = |p: [f64; 3]| p.map(f64::ln);
        let px = [
            lp([0.7, 0.2, 0.1]),
            lp([0.1, 0.8, 0.1]),
            lp([0.3, 0.3, 0.4]),
            lp([0.25, 0.5, 0.25]),
        ];
        let input = json!([[
            [[px[0][0], px[1][0]], [px[2][0], px[3][0]]],
            [[px[0][1], px[1][1]], [px[2][1], px[3][1]]],
            [[px[0][2], px[1][2]], [px[2][2], px[3][2]]]
        ]]);
        vec![
            Example::new(
                "image",
                "Per-pixel classification of a 2×2 image with 3 classes (input (1, 3, 2, 2), target (1, 2, 2))",
                json!({"input": input, "target": [[[0, 1], [2, 1]]], "grad": true}),
            ),
            Example::new(
                "weighted",
                "Class weights and an ignored target",
                json!({"input": [[-0.5, -1.2, -2.0], [-1.5, -0.3, -2.2], [-0.9, -0.9, -1.6]],
                       "target": [0, 1, -100], "weight": [1.0, 2.0, 0.5]}),
            ),
        ]
    }
}
