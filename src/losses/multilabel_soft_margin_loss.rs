//! `POST /v1/losses/multilabel_soft_margin_loss`: `nn.MultiLabelSoftMarginLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::multilabel_soft_margin::multilabel_soft_margin_loss;
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, sample,
    shape, weighted,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/multilabel_soft_margin_loss`: one-vs-all logistic
    /// loss over classes.
    pub struct MultilabelSoftMarginLoss {
        /// Logits `(N, C)` or `(C)`; the class dimension is the last.
        pub input: Tensor,
        /// Labels (0 or 1), broadcast against `input`.
        pub target: Tensor,
        /// Per-class weights, typically `(C,)`.
        #[serde(default)]
        pub weight: Option<Tensor>,
    }
    reduction: Reduction;
}

/// The broadcast shape of the tensors without the class dimension (the last).
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    let x = shape::shape(args, "input");
    if x.is_empty() {
        return Err("input is 0-d but must have a class dimension".into());
    }
    let mut s = shape::broadcast("input and target", &x, &shape::shape(args, "target"))?;
    if let Some(w) = shape::get(args, "weight") {
        s = shape::broadcast("weight and the input", &s, &w.shape)?;
    }
    s.remove(x.len() - 1);
    Ok(s)
}

/// Every tensor in rows along the input's last dimension (the classes averaged over).
fn rows(_: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    shape::last_dim_rows("input", args)
}

impl Loss for MultilabelSoftMarginLoss {
    const INFO: Info = Info {
        name: "multilabel_soft_margin_loss",
        module: "MultiLabelSoftMarginLoss",
        category: Category::Classification,
        summary: "Multi-label one-vs-all logistic loss, averaged over classes.",
        formula: "ℓ_n = −(1/C) Σ_c weight[c] · [y·log σ(x) + (1 − y)·log σ(−x)]",
        notes: "Computed with a stable log σ. The class dimension is the last; the per-class losses are averaged over it before the reduction.",
        unreduced: "One loss per sample: the broadcast shape of the tensors without the class dimension (the last); () for a (C) input.",
        gradient: "input: weight·(σ(input) − target)/C; target: −weight·input/C; weight: the per-class loss / C.",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(N, C) or (C)"),
            TensorArg::float("target", "broadcastable with input"),
            TensorArg::float("weight", "(C), broadcastable").optional(),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        weighted(self.input, self.target, self.weight, |x, y, w| {
            multilabel_soft_margin_loss(x, y, w, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![Example::new(
            "labels",
            "A 3×4 multi-label batch with gradients",
            json!({"input": sample(&[3, 4], 14), "target": [[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]], "grad": true}),
        )]
    }
}
