//! `POST /v1/losses/ctc_loss`: `nn.CTCLoss` / `F.ctc_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::probabilistic::ctc::{CtcOptions, ctc_loss};
use serde_json::json;

use super::{Category, Example, Info, Loss, Reduction, TensorArg, TensorKind, float, index};
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

impl Loss for CtcLoss {
    const INFO: Info = Info {
        name: "ctc_loss",
        module: "CTCLoss",
        category: Category::Probabilistic,
        summary: "Negative log-likelihood of a label sequence summed over every alignment to the input frames.",
        formula: "ℓ_b = −log Σ_{alignments π of targets_b} Π_t exp(log_probs[t, b, π_t]); mean averages ℓ_b / max(target_length_b, 1)",
        notes: "The gradient returned for log_probs is PyTorch's: exp(log_probs) − γ (γ the occupation posterior), which is the gradient with respect to the logits when log_probs = log_softmax(logits), not the partial derivative with respect to log_probs (that is −γ); both give the same logits gradient through log_softmax. Frames past a sequence's input length get 0. An infeasible alignment gives +Infinity (NaN gradient) unless zero_infinity. Labels equal to blank or outside [0, C) are rejected with invalid_value (PyTorch reads garbage).",
        tensors: &[
            TensorArg {
                name: "log_probs",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(T, N, C) or (T, C)",
            },
            TensorArg {
                name: "targets",
                kind: TensorKind::Integer,
                required: true,
                differentiable: false,
                shapes: "(N, S) padded, (Σ target_lengths) concatenated, or (S)",
            },
            TensorArg {
                name: "input_lengths",
                kind: TensorKind::Integer,
                required: true,
                differentiable: false,
                shapes: "(N) or ()",
            },
            TensorArg {
                name: "target_lengths",
                kind: TensorKind::Integer,
                required: true,
                differentiable: false,
                shapes: "(N) or ()",
            },
        ],
        reductions: &["none", "mean", "sum"],
    };

    fn common(&self) -> super::Common {
        self.common_fields()
    }

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
        vec![Example {
            name: "padded",
            summary: "A small padded batch: 2 sequences of 4 frames, targets [1, 2] and [2]",
            body: json!({"log_probs": lp, "targets": [[1, 2], [2, 0]], "input_lengths": [4, 3],
                         "target_lengths": [2, 1], "grad": true}),
        }]
    }
}
