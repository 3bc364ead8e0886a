//! `POST /v1/losses/linear_cross_entropy`: `nn.LinearCrossEntropyLoss` /
//! `F.linear_cross_entropy` (new in PyTorch 2.15).

use lossd_kernels::LossOutput;
use lossd_kernels::classification::cross_entropy::CrossEntropyOptions;
use lossd_kernels::classification::linear_cross_entropy::linear_cross_entropy;
use serde_json::json;

use super::cross_entropy::ce_target;
use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, float,
    sample, shape,
};
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

/// The logits' shape without the class dimension: `(N, d1..dK)` for `input` `(N, H)` and
/// `linear_weight` `(C, d1..dK, H)`, `()` for `(H)`.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    let x = shape::shape(args, "input");
    let w = shape::shape(args, "linear_weight");
    let spatial = if w.len() >= 2 {
        &w[1..w.len() - 1]
    } else {
        &[][..]
    };
    match x.as_slice() {
        [_] => Ok(vec![]),
        [n, _] => Ok(std::iter::once(*n).chain(spatial.iter().copied()).collect()),
        _ => Err(format!(
            "input has shape {}: expected (in_features) or (N, in_features)",
            shape::fmt_shape(&x)
        )),
    }
}

/// The features in rows along their last dimension; the layer's weight and bias feed every
/// output element.
fn rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    (arg == "input").then(|| shape::last_dim_rows(arg, args))?
}

impl Loss for LinearCrossEntropy {
    const INFO: Info = Info {
        name: "linear_cross_entropy",
        module: "LinearCrossEntropyLoss",
        category: Category::Classification,
        summary: "Cross-entropy of a linear layer's output, without materialising the logits: for large vocabularies.",
        formula: "logits = (input · linear_weight.reshape(C·d1⋯dK, in_features)ᵀ + linear_bias.flatten()).reshape(N, C, d1..dK); ℓ = cross_entropy(logits, target, weight, ignore_index, label_smoothing)",
        notes: "Computed in chunks of rows: memory stays O(chunk × C·d1⋯dK) whatever N is. A K-dimensional linear_weight (C, d1..dK, in_features) gives K-dimensional logits (N, C, d1..dK) and needs a batched input. Gradients for input, linear_weight and linear_bias.",
        unreduced: "One loss per position of the logits without the class dimension: (N) or (N, d1..dK); () for a 1-d input.",
        gradient: "input: the cross-entropy gradient of the logits times linear_weight; linear_weight: its transpose times input; linear_bias: its sum over the batch. Never the logits themselves.",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(N, in_features) or (in_features); (N, in_features) with a K-dim linear_weight"),
            TensorArg::float("linear_weight", "(C, in_features) or (C, d1..dK, in_features)"),
            TensorArg::float_or_integer("target", "indices (N), (N, d1..dK) or (); or probabilities of the logits' shape (N, C), (N, C, d1..dK) or (C)").no_grad(),
            TensorArg::float("linear_bias", "(C) or (C, d1..dK): linear_weight's shape without in_features").optional(),
            TensorArg::float("weight", "(C)").optional().no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(rows),
    };

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
            Example::new(
                "classifier",
                "4 samples of 6 features through a 6→5 linear layer with bias, with gradients",
                json!({"input": sample(&[4, 6], 18), "linear_weight": sample(&[5, 6], 19),
                       "linear_bias": sample(&[5], 20), "target": [0, 3, 4, 1], "grad": true}),
            ),
            Example::new(
                "k_dimensional",
                "A K-dimensional loss: 2 samples of 4 features, 3 classes at each of 2 positions (linear_weight (3, 2, 4), logits (2, 3, 2)), class-index targets (2, 2)",
                json!({"input": sample(&[2, 4], 21), "linear_weight": sample(&[3, 2, 4], 22),
                       "linear_bias": sample(&[3, 2], 23), "target": [[0, 2], [1, 1]],
                       "reduction": "none", "grad": true}),
            ),
        ]
    }
}
