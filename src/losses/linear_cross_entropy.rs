//! `POST /v1/losses/linear_cross_entropy`: `nn.LinearCrossEntropyLoss` /
//! `F.linear_cross_entropy` (new in PyTorch 2.15).

use lossd_kernels::LossOutput;
use lossd_kernels::classification::linear_cross_entropy::linear_cross_entropy;
use serde_json::json;

use super::cross_entropy::ce_target;
use super::{Category, Example, Info, Loss, Reduction, TensorArg, TensorKind, float, sample};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/linear_cross_entropy`: a linear layer followed by
    /// cross-entropy, computed in chunks of rows so the full logits matrix is never held.
    pub struct LinearCrossEntropy {
        /// Features `(N, in_features)`, or `(in_features)` for one sample.
        pub input: Tensor,
        /// The linear layer's weight `(C, in_features)`.
        pub linear_weight: Tensor,
        /// Class indices (integers) `(N)` or a plain number, or class probabilities with the
        /// logits' shape `(N, C)` / `(C)`.
        pub target: Tensor,
        /// The linear layer's bias `(C,)`.
        #[serde(default)]
        #[schema(nullable = false)]
        pub linear_bias: Option<Tensor>,
        /// Per-class weights `(C,)`.
        #[serde(default)]
        #[schema(nullable = false)]
        pub weight: Option<Tensor>,
        /// A class-index target value that is ignored (default −100). Not allowed with
        /// probability targets, as in PyTorch.
        #[serde(default)]
        #[schema(nullable = false, default = -100)]
        pub ignore_index: Option<i64>,
        /// Label smoothing in [0, 1].
        #[serde(default)]
        #[schema(default = 0.0, minimum = 0.0, maximum = 1.0)]
        pub label_smoothing: f64,
    }
    reduction: Reduction;
}

impl Loss for LinearCrossEntropy {
    const INFO: Info = Info {
        name: "linear_cross_entropy",
        module: "LinearCrossEntropyLoss",
        category: Category::Classification,
        summary: "Cross-entropy of a linear layer's output, without materialising the logits: for large vocabularies.",
        formula: "logits = input · linear_weightᵀ + linear_bias; ℓ = cross_entropy(logits, target, weight, ignore_index, label_smoothing)",
        notes: "Computed in chunks of rows: memory stays O(chunk × C) whatever N is. Gradients for input, linear_weight and linear_bias.",
        tensors: &[
            TensorArg {
                name: "input",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(N, in_features) or (in_features)",
            },
            TensorArg {
                name: "linear_weight",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(C, in_features)",
            },
            TensorArg {
                name: "target",
                kind: TensorKind::FloatOrInteger,
                required: true,
                differentiable: false,
                shapes: "indices (N) or (); or probabilities (N, C) / (C)",
            },
            TensorArg {
                name: "linear_bias",
                kind: TensorKind::Float,
                required: false,
                differentiable: true,
                shapes: "(C)",
            },
            TensorArg {
                name: "weight",
                kind: TensorKind::Float,
                required: false,
                differentiable: false,
                shapes: "(C)",
            },
        ],
        reductions: &["none", "mean", "sum"],
    };

    fn common(&self) -> super::Common {
        self.common_fields()
    }

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let x = float::<T>(self.input);
        let lw = float::<T>(self.linear_weight);
        let mut logits = x.shape().to_vec();
        if let (Some(last), Some(&c)) = (logits.last_mut(), lw.shape().first()) {
            *last = c;
        }
        let target = ce_target::<T>(self.target, &logits)?;
        if self.ignore_index.is_some() && matches!(target, super::cross_entropy::Target::Probs(_)) {
            return Err(ApiError::option(
                "ignore_index",
                "ignore_index cannot be specified when target contains probabilities",
            ));
        }
        let bias = self.linear_bias.map(float::<T>);
        let w = self.weight.map(float::<T>);
        Ok(linear_cross_entropy(
            x.view(),
            lw.view(),
            target.view(),
            bias.as_ref().map(|b| b.view()),
            w.as_ref().map(|w| w.view()),
            self.ignore_index.unwrap_or(-100),
            self.label_smoothing,
            self.reduction.into(),
            grad,
        )?)
    }

    fn examples() -> Vec<Example> {
        vec![Example {
            name: "classifier",
            summary: "4 samples of 6 features through a 6→5 linear layer with bias, with gradients",
            body: json!({"input": sample(&[4, 6], 18), "linear_weight": sample(&[5, 6], 19),
                         "linear_bias": sample(&[5], 20), "target": [0, 3, 4, 1], "grad": true}),
        }]
    }
}
