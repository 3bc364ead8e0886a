//! `POST /v1/losses/cross_entropy`: `nn.CrossEntropyLoss` / `F.cross_entropy`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::cross_entropy::{CeTarget, CrossEntropyOptions, cross_entropy};
use serde_json::json;

use super::nll_loss::minus_100;
use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, float,
    index, sample, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/cross_entropy`: log-softmax and negative
    /// log-likelihood in one stable step, with class indices or class probabilities.
    pub struct CrossEntropy {
        /// Unnormalised logits `(N, C)`, `(N, C, d1, ..., dK)`, or `(C)` for one sample.
        pub input: Tensor,
        /// Either class indices (integers) of shape `(N)`, `(N, d1..dK)` or a plain number,
        /// or class probabilities with exactly `input`'s shape: the shape decides, as in
        /// PyTorch.
        pub target: Tensor,
        /// Per-class weights `(C,)`.
        #[serde(default)]
        pub weight: Option<Tensor>,
        /// A class-index target value that is ignored (probability targets: must be negative).
        #[serde(default = "minus_100")]
        #[schema(default = -100)]
        pub ignore_index: i64,
        /// Label smoothing in [0, 1]: mixes the target with the uniform distribution.
        #[serde(default)]
        #[schema(default = 0.0, minimum = 0.0, maximum = 1.0)]
        pub label_smoothing: f64,
    }
    reduction: Reduction;
}

/// Reads a target as probabilities when it has the logits' shape, else as class indices.
pub(super) fn ce_target<T: WireFloat>(
    target: Tensor,
    logits_shape: &[usize],
) -> Result<Target<T>, ApiError> {
    if target.shape == logits_shape {
        Ok(Target::Probs(float::<T>(target)))
    } else {
        Ok(Target::Indices(index(target, "target")?))
    }
}

/// An owned target, viewed as the kernel's [`CeTarget`].
pub(super) enum Target<T> {
    Indices(lossd_kernels::ndarray::ArrayD<i64>),
    Probs(lossd_kernels::ndarray::ArrayD<T>),
}

impl<T> Target<T> {
    pub(super) fn view(&self) -> CeTarget<'_, T> {
        match self {
            Target::Indices(a) => CeTarget::Indices(a.view()),
            Target::Probs(a) => CeTarget::Probs(a.view()),
        }
    }
}

/// The logits, and probability targets (which have their shape), in rows along the class
/// dimension; the class weights feed every output element.
fn rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    matches!(arg, "input" | "target").then(|| shape::class_rows(arg, args))?
}

impl Loss for CrossEntropy {
    const INFO: Info = Info {
        name: "cross_entropy",
        module: "CrossEntropyLoss",
        category: Category::Classification,
        summary: "Cross-entropy between logits and class indices or class probabilities.",
        formula: "indices: ℓ_n = −weight[y_n] · log_softmax(input)[n, y_n] (smoothed: (1−ε)·that + ε/C · Σ_c −weight[c] log_softmax[n, c]); probabilities: ℓ_n = −Σ_c weight[c] · p'[n, c] · log_softmax(input)[n, c]",
        notes: "The target is read as probabilities exactly when it has the input's shape, else as class indices (PyTorch's rule). With indices the mean is weighted (÷ Σ weight of non-ignored targets; all ignored gives NaN); with probabilities it divides by the number of positions. Computed with the max subtracted: finite for logits of any size wherever PyTorch is.",
        unreduced: "One loss per position: the input's shape without the class dimension, (N) or (N, d1..dK); () for a (C) input.",
        gradient: "input: weight[y]·(softmax(input) − one_hot(y)) along the class dimension (smoothed targets and probabilities mixed in likewise), 0 at ignored positions; target (probabilities only): −weight·log_softmax(input); weight (probabilities only): −p·log_softmax(input).",
        differences: "label_smoothing must lie in [0, 1]: lossd rejects a negative value, which PyTorch silently ignores.",
        tensors: &[
            TensorArg::float("input", "(N, C), (N, C, d1..dK) or (C)"),
            TensorArg::float_or_integer(
                "target",
                "indices (N), (N, d1..dK) or (); or probabilities with input's shape (differentiable then)",
            ),
            TensorArg::float("weight", "(C); differentiable with probability targets").optional(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::without_class_dim,
        layout: Layout::Rows(rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let x = float::<T>(self.input);
        let target = ce_target::<T>(self.target, x.shape())?;
        let w = self.weight.map(float::<T>);
        let w = w.as_ref().map(|w| w.view());
        Ok(cross_entropy(
            x.view(),
            target.view(),
            CrossEntropyOptions {
                weight: w,
                ignore_index: self.ignore_index,
                label_smoothing: self.label_smoothing,
                reduction: self.reduction.into(),
                grad,
            },
        )?)
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "indices",
                "A batch of 3 samples over 5 classes with class-index targets and the gradient (the torch.nn.CrossEntropyLoss example)",
                json!({"input": sample(&[3, 5], 15), "target": [1, 0, 4], "grad": true}),
            ),
            Example::new(
                "probabilities",
                "Class-probability targets with label smoothing",
                json!({"input": sample(&[2, 3], 16), "target": [[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]], "label_smoothing": 0.1}),
            ),
            Example::new(
                "ignore",
                "Class weights and an ignored target (ignore_index = -100)",
                json!({"input": sample(&[3, 3], 17), "target": [2, -100, 0], "weight": [1.0, 2.0, 0.5], "reduction": "none"}),
            ),
        ]
    }
}
