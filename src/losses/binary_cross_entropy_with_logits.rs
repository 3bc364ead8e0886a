//! `POST /v1/losses/binary_cross_entropy_with_logits`: `nn.BCEWithLogitsLoss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::binary_cross_entropy_with_logits::binary_cross_entropy_with_logits;
use serde_json::json;

use super::{
    Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, float_opt, sample,
    shape, view, weighted,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/binary_cross_entropy_with_logits`: sigmoid and binary
    /// cross-entropy in one numerically stable step.
    pub struct BinaryCrossEntropyWithLogits {
        /// Logits, any shape.
        pub input: Tensor,
        /// Targets (usually in [0, 1]), exactly the shape of `input`.
        pub target: Tensor,
        /// Rescaling weights, broadcast to `input`'s shape (without enlarging it).
        #[serde(default)]
        pub weight: Option<Tensor>,
        /// Weights of the positive examples, broadcast along the last dimension (typically
        /// `(C,)` for `(N, C)` input): > 1 raises recall, < 1 precision.
        #[serde(default)]
        pub pos_weight: Option<Tensor>,
    }
    reduction: Reduction;
}

impl Loss for BinaryCrossEntropyWithLogits {
    const INFO: Info = Info {
        name: "binary_cross_entropy_with_logits",
        module: "BCEWithLogitsLoss",
        category: Category::Classification,
        summary: "Binary cross-entropy on logits, stable for logits of any size.",
        formula: "ℓ = −weight · [pos_weight · target · log σ(input) + (1 − target) · log(1 − σ(input))]",
        notes: "Computed as PyTorch does, (1 − target)·x − (1 + (pos_weight − 1)·target)·log σ(x) with a stable log σ: exact for logits of any magnitude in float32 and float64. The weighted mean divides by the element count. Input and target must have the same shape.",
        unreduced: "The input's shape: one loss per element.",
        gradient: "input: weight·((pos_weight·target + 1 − target)·σ(input) − pos_weight·target); target: weight·(log σ(−input) − pos_weight·log σ(input)).",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(*)"),
            TensorArg::float("target", "same as input"),
            TensorArg::float("weight", "broadcastable to input")
                .optional()
                .no_grad(),
            TensorArg::float("pos_weight", "broadcastable to input, typically (C,)")
                .optional()
                .no_grad(),
        ],
        reductions: REDUCTIONS,
        none_shape: shape::input_shape,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let pw = float_opt::<T>(self.pos_weight);
        weighted(self.input, self.target, self.weight, |x, y, w| {
            binary_cross_entropy_with_logits(x, y, w, view(&pw), self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        // The torch.nn.BCEWithLogitsLoss example: 64 classes, a batch of 10, all targets
        // positive, pos_weight 1.5 for every class.
        let target: Vec<Vec<f64>> = vec![vec![1.0; 64]; 10];
        vec![
            Example::new(
                "pos-weight",
                "The PyTorch docs example: a 10×64 multi-label batch with pos_weight = 1.5 for every class",
                json!({"input": sample(&[10, 64], 12), "target": target, "pos_weight": vec![1.5; 64]}),
            ),
            Example::new(
                "gradient",
                "Logits of any size stay exact; with gradients",
                json!({"input": [[-200.0, 0.5], [3.0, 200.0]], "target": [[1, 0], [0, 1]], "grad": true}),
            ),
        ]
    }
}
