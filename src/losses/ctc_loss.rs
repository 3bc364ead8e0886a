//! `POST /v1/losses/ctc_loss`: `nn.CTCLoss` / `F.ctc_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::probabilistic::ctc::{CtcOptions, ctc_loss};
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, float,
    index, shape,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/ctc_loss`: Connectionist Temporal Classification.
    pub struct CtcLoss {
        /// Log-probabilities `(T, N, C)` (time, batch, classes including the blank), or
        /// `(T, C)` for one sequence; used as given (not renormalised).
        pub log_probs: Tensor,
        /// Target labels (integers): padded `(N, S)` with `S` at least the longest target,
        /// or all targets concatenated `(Σ target_lengths)`; `(S)` for one sequence. Labels
        /// must lie in `[0, C)` and differ from `blank`.
        pub targets: Tensor,
        /// Frames used per sequence (integers, each at most `T`): `(N)`, or a plain number for
        /// one sequence.
        pub input_lengths: Tensor,
        /// Target length per sequence (integers): `(N)`, or a plain number for one sequence.
        pub target_lengths: Tensor,
        /// The blank label.
        #[serde(default)]
        #[schema(default = 0, minimum = 0)]
        pub blank: i64,
        /// Replace infinite losses (infeasible alignments) and their gradients by zero.
        #[serde(default)]
        #[schema(default = false)]
        pub zero_infinity: bool,
    }
    reduction: Reduction;
}

/// One loss per sequence: `(N)` for `(T, N, C)` log-probabilities, `()` for `(T, C)`.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    match shape::shape(args, "log_probs").as_slice() {
        [_, n, _] => Ok(vec![*n]),
        [_, _] => Ok(vec![]),
        other => Err(format!(
            "log_probs has shape {}, but it must be (T, N, C), or (T, C) unbatched",
            shape::fmt_shape(other)
        )),
    }
}

/// Each sequence's frames and classes of `log_probs` (time and class dimensions) belong to
/// its own loss.
fn rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    match (arg, shape::rank(args, arg)?) {
        ("log_probs", 3) => Some(vec![0, 2]),
        ("log_probs", 2) => Some(vec![0, 1]),
        _ => None,
    }
}

impl Loss for CtcLoss {
    const INFO: Info = Info {
        name: "ctc_loss",
        module: "CTCLoss",
        category: Category::Probabilistic,
        summary: "Negative log-likelihood of a label sequence summed over every alignment to the input frames.",
        formula: "ℓ_b = −log Σ_{alignments π of targets_b} Π_t exp(log_probs[t, b, π_t]); mean averages ℓ_b / max(target_length_b, 1)",
        notes: "log_probs are used as given (not renormalised). Frames past a sequence's input length get gradient 0. An infeasible alignment gives +Infinity (NaN gradient) unless zero_infinity.",
        unreduced: "One loss per sequence: (N) for (T, N, C) log_probs, () for (T, C).",
        gradient: "log_probs: PyTorch's value exp(log_probs) − γ (γ the occupation posterior of each frame and class), which is the gradient with respect to the logits when log_probs = log_softmax(logits); the partial derivative with respect to log_probs itself is −γ, and both give the same logits gradient through log_softmax.",
        differences: "Labels equal to blank or outside [0, C) are rejected with invalid_value; PyTorch reads them unchecked.",
        tensors: &[
            TensorArg::float("log_probs", "(T, N, C) or (T, C)"),
            TensorArg::integer(
                "targets",
                "(N, S) padded, (Σ target_lengths) concatenated, or (S)",
            ),
            TensorArg::integer("input_lengths", "(N) or ()"),
            TensorArg::integer("target_lengths", "(N) or ()"),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let lp = float::<T>(self.log_probs);
        let targets = index(self.targets, "targets")?;
        let il = index(self.input_lengths, "input_lengths")?;
        let tl = index(self.target_lengths, "target_lengths")?;
        Ok(ctc_loss(
            lp.view(),
            targets.view(),
            il.view(),
            tl.view(),
            CtcOptions {
                blank: self.blank,
                zero_infinity: self.zero_infinity,
                reduction: self.reduction.into(),
                grad,
            },
        )?)
    }

    fn examples() -> Vec<Example> {
        // T = 4 frames, N = 2 sequences, C = 3 classes (0 is the blank): uniform log-probs.
        let frame = [-1.0986, -1.0986, -1.0986];
        let lp: Vec<Vec<[f64; 3]>> = (0..4).map(|_| vec![frame, frame]).collect();
        vec![Example::new(
            "padded",
            "A small padded batch: 2 sequences of 4 frames, targets [1, 2] and [2]",
            json!({"log_probs": lp, "targets": [[1, 2], [2, 0]], "input_lengths": [4, 3],
                   "target_lengths": [2, 1], "grad": true}),
        )]
    }
}
