//! `POST /v1/losses/multilabel_soft_margin_loss`: `nn.MultiLabelSoftMarginLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::multilabel_soft_margin::multilabel_soft_margin_loss;
use serde_json::json;

use super::{Category, Example, Info, Loss, Reduction, TensorArg, TensorKind, float, sample};
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

impl Loss for MultilabelSoftMarginLoss {
    const INFO: Info = Info {
        name: "multilabel_soft_margin_loss",
        module: "MultiLabelSoftMarginLoss",
        category: Category::Classification,
        summary: "Multi-label one-vs-all logistic loss, averaged over classes.",
        formula: "ℓ_n = −(1/C) Σ_c weight[c] · [y·log σ(x) + (1 − y)·log σ(−x)]",
        notes: "Computed with a stable log σ. The unreduced loss has input's shape without its last dimension.",
        tensors: &[
            TensorArg {
                name: "input",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(N, C) or (C)",
            },
            TensorArg {
                name: "target",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "broadcastable with input",
            },
            TensorArg {
                name: "weight",
                kind: TensorKind::Float,
                required: false,
                differentiable: true,
                shapes: "(C), broadcastable",
            },
        ],
        reductions: &["none", "mean", "sum"],
    };

    fn common(&self) -> super::Common {
        self.common_fields()
    }

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let (x, y) = (float::<T>(self.input), float::<T>(self.target));
        let w = self.weight.map(float::<T>);
        let w = w.as_ref().map(|w| w.view());
        Ok(multilabel_soft_margin_loss(
            x.view(),
            y.view(),
            w,
            self.reduction.into(),
            grad,
        )?)
    }

    fn examples() -> Vec<Example> {
        vec![Example {
            name: "labels",
            summary: "A 3×4 multi-label batch with gradients",
            body: json!({"input": sample(&[3, 4], 14), "target": [[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]], "grad": true}),
        }]
    }
}
