//! `POST /v1/losses/multilabel_margin_loss`: `nn.MultiLabelMarginLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::multilabel_margin::multilabel_margin_loss;
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, classes,
    shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/multilabel_margin_loss`: multi-label hinge loss.
    pub struct MultilabelMarginLoss {
        /// Scores `(N, C)`, or `(C)` for one sample.
        pub input: Tensor,
        /// Integers of `input`'s shape: each row lists its target classes and ends at the
        /// first −1 (entries after it are ignored but must still lie in [−1, C)).
        pub target: Tensor,
    }
    reduction: Reduction;
}

/// One loss per sample: `(N)` for `(N, C)` scores, `()` for `(C)`.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    Ok(match shape::shape(args, "input").as_slice() {
        [n, _] => vec![*n],
        _ => vec![],
    })
}

impl Loss for MultilabelMarginLoss {
    const INFO: Info = Info {
        name: "multilabel_margin_loss",
        module: "MultiLabelMarginLoss",
        category: Category::Classification,
        summary: "Multi-label hinge loss: every target class should score at least 1 above every other class.",
        formula: "ℓ_n = (1/C) Σ_{j ∈ targets} Σ_{i ∉ targets} max(0, 1 − (x[j] − x[i]))",
        notes: "The target list of a row ends at its first −1; duplicates count with their multiplicity; entries after the −1 must still lie in [−1, C).",
        unreduced: "One loss per sample: (N) for (N, C) scores, () for (C).",
        gradient: "input: for each pair (target class j, other class i) with a positive hinge, +1/C at i and −1/C at j.",
        differences: "An empty batch gives NaN for mean and 0 for sum; PyTorch returns uninitialised memory.",
        tensors: &[
            TensorArg::float("input", "(N, C) or (C)"),
            TensorArg::integer("target", "same as input"),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(shape::input_class_rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        classes(self.input, self.target, None, |x, y, _| {
            multilabel_margin_loss(x, y, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "docs",
            "The torch.nn.MultiLabelMarginLoss docs example: classes 3 and 0 are targets (loss 0.85)",
            json!({"input": [[0.1, 0.2, 0.4, 0.8]], "target": [[3, 0, -1, 1]], "grad": true}),
        )]
    }
}
