//! `POST /v1/losses/multi_margin_loss`: `nn.MultiMarginLoss` / `F.multi_margin_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::multi_margin::multi_margin_loss;
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, classes,
    sample, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn one() -> f64 {
    1.0
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/multi_margin_loss`: multi-class hinge loss.
    pub struct MultiMarginLoss {
        /// Scores `(N, C)`, or `(C)` for one sample.
        pub input: Tensor,
        /// Class indices in `[0, C)` (integers): `(N)`, or a plain number for one sample.
        pub target: Tensor,
        /// 1 (hinge) or 2 (squared hinge).
        #[serde(default = "one")]
        #[schema(default = 1, minimum = 1, maximum = 2)]
        pub p: f64,
        /// The margin.
        #[serde(default = "one")]
        #[schema(default = 1.0)]
        pub margin: f64,
        /// Per-class weights `(C,)`; each sample's terms are scaled by its target class's weight.
        #[serde(default)]
        pub weight: Option<Tensor>,
    }
    reduction: Reduction;
}

/// One loss per sample: `(N)` for `(N, C)` scores, `(1)` for `(C)` scores with a `(1)` target,
/// `()` with a 0-d target.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    let x = shape::shape(args, "input");
    let n = if x.len() == 2 { x[0] } else { 1 };
    Ok(if shape::shape(args, "target").is_empty() {
        vec![]
    } else {
        vec![n]
    })
}

impl Loss for MultiMarginLoss {
    const INFO: Info = Info {
        name: "multi_margin_loss",
        module: "MultiMarginLoss",
        category: Category::Classification,
        summary: "Multi-class hinge loss: every wrong class should score at least `margin` below the target class.",
        formula: "ℓ_n = (1/C) Σ_{i ≠ y_n} weight[y_n] · max(0, margin − x[y_n] + x[i])^p",
        notes: "p must be 1 or 2. Class weights scale every term of a sample by the weight of its target class. A hinge exactly at 0 has gradient 0.",
        unreduced: "One loss per sample: (N) for (N, C) scores; () for a (C) input with a 0-d target, (1) with a (1) target.",
        gradient: "input: for each wrong class i with a positive hinge, weight[y]·(1 or 2·hinge)/C at i and the negative of their sum at the target class.",
        differences: "An empty batch gives NaN for mean and 0 for sum; PyTorch returns uninitialised memory.",
        tensors: &[
            TensorArg::float("input", "(N, C) or (C)"),
            TensorArg::integer("target", "(N) or ()"),
            TensorArg::float("weight", "(C)").optional().no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(shape::input_class_rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        classes(self.input, self.target, self.weight, |x, y, w| {
            multi_margin_loss(x, y, self.p, self.margin, w, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "docs",
                "The torch.nn.MultiMarginLoss docs example: scores [0.1, 0.2, 0.4, 0.8], class 3 (loss 0.325)",
                json!({"input": [[0.1, 0.2, 0.4, 0.8]], "target": [3], "grad": true}),
            ),
            Example::new(
                "squared",
                "Squared hinge with class weights on a batch of 3",
                json!({"input": sample(&[3, 4], 13), "target": [0, 3, 1], "p": 2, "weight": [1.0, 2.0, 1.0, 0.5]}),
            ),
        ]
    }
}
