//! `POST /v1/losses/linear_cross_entropy`: `nn.LinearCrossEntropyLoss` /
//! `F.linear_cross_entropy` (new in PyTorch 2.15).

use lossd_kernels::LossOutput;
use lossd_kernels::classification::cross_entropy::CrossEntropyOptions;
use lossd_kernels::classification::linear_cross_entropy::linear_cross_entropy;
use serde_json::json;

use super::cross_entropy::ce_target;
use super::{Category, Example, Info, Loss, Reduction, TensorArg, TensorKind, float, sample};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/linear_cross_entropy`: a linear layer followed by
    /// cross-entropy, computed in chunks of rows so the full logits are never held.
    pub struct LinearCrossEntropy {
        /// Features `(N, in_features)`, or `(in_features)` for one sample (only with a
        /// `(C, in_features)` `linear_weight`).
        pub input: Tensor,
        /// The linear layer's weight `(C, in_features)`, or `(C, d1, ..., dK, in_features)` for
        /// a K-dimensional loss: the logits are then `(N, C, d1, ..., dK)`.
        pub linear_weight: Tensor,
        /// Class indices (integers) `(N)`, `(N, d1, ..., dK)` or a plain number, or class
        /// probabilities with the logits' shape `(N, C)`, `(N, C, d1, ..., dK)` or `(C)`.
        pub target: Tensor,
        /// The linear layer's bias: `linear_weight`'s shape without `in_features`, `(C,)` or
        /// `(C, d1, ..., dK)`.
        #[serde(default)]
        pub linear_bias: Option<Tensor>,
        /// Per-class weights `(C,)`.
        #[serde(default)]
        pub weight: Option<Tensor>,
        /// A class-index target value that is ignored (default −100). Not allowed with
        /// probability targets, as in PyTorch.
        #[serde(default)]
        #[schema(default = -100)]
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
        formula: "logits = (input · linear_weight.reshape(C·d1⋯dK, in_features)ᵀ + linear_bias.flatten()).reshape(N, C, d1..dK); ℓ = cross_entropy(logits, target, weight, ignore_index, label_smoothing)",
        notes: "Computed in chunks of rows: memory stays O(chunk × C·d1⋯dK) whatever N is. A K-dimensional linear_weight (C, d1..dK, in_features) gives K-dimensional logits (N, C, d1..dK) and needs a batched input. Gradients for input, linear_weight and linear_bias.",
        tensors: &[
            TensorArg {
                name: "input",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(N, in_features) or (in_features); (N, in_features) with a K-dim linear_weight",
            },
            TensorArg {
                name: "linear_weight",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(C, in_features) or (C, d1..dK, in_features)",
            },
            TensorArg {
                name: "target",
                kind: TensorKind::FloatOrInteger,
                required: true,
                differentiable: false,
                shapes: "indices (N), (N, d1..dK) or (); or probabilities of the logits' shape (N, C), (N, C, d1..dK) or (C)",
            },
            TensorArg {
                name: "linear_bias",
                kind: TensorKind::Float,
                required: false,
                differentiable: true,
                shapes: "(C) or (C, d1..dK): linear_weight's shape without in_features",
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
        // The logits' shape, PyTorch's (*input.shape[:-1], C, d1..dK): a target of exactly this
        // shape holds probabilities.
        let logits: Vec<usize> = [
            &x.shape()[..x.ndim().saturating_sub(1)],
            &lw.shape()[..lw.ndim().saturating_sub(1)],
        ]
        .concat();
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
            CrossEntropyOptions {
                weight: w.as_ref().map(|w| w.view()),
                ignore_index: self.ignore_index.unwrap_or(-100),
                label_smoothing: self.label_smoothing,
                reduction: self.reduction.into(),
                grad,
            },
        )?)
    }

    fn examples() -> Vec<Example> {
        vec![
            Example {
                name: "classifier",
                summary: "4 samples of 6 features through a 6→5 linear layer with bias, with gradients",
                body: json!({"input": sample(&[4, 6], 18), "linear_weight": sample(&[5, 6], 19),
                             "linear_bias": sample(&[5], 20), "target": [0, 3, 4, 1], "grad": true}),
            },
            Example {
                name: "k_dimensional",
                summary: "A K-dimensional loss: 2 samples of 4 features, 3 classes at each of 2 positions (linear_weight (3, 2, 4), logits (2, 3, 2)), class-index targets (2, 2)",
                body: json!({"input": sample(&[2, 4], 21), "linear_weight": sample(&[3, 2, 4], 22),
                             "linear_bias": sample(&[3, 2], 23), "target": [[0, 2], [1, 1]],
                             "reduction": "none", "grad": true}),
            },
        ]
    }
}
