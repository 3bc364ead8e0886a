//! `POST /v1/losses/kl_div`: `nn.KLDivLoss` / `F.kl_div`.

use lossd_kernels::LossOutput;
use lossd_kernels::probabilistic::kl_div::{KlReduction, kl_div};
use serde::Deserialize;
use serde_json::json;

use super::{Category, Example, Info, Layout, Loss, TensorArg, pair, sample, shape};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

/// `kl_div`'s `reduction`: PyTorch's three and `batchmean`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KlDivReduction {
    /// The unreduced loss (the broadcast shape of input and target).
    None,
    /// The mean over all elements; PyTorch warns that this is not the KL divergence, and so
    /// does the response's `warnings`.
    #[default]
    Mean,
    /// The sum over all elements.
    Sum,
    /// The sum divided by `input`'s first dimension: the KL divergence per sample.
    Batchmean,
}

impl From<KlDivReduction> for KlReduction {
    fn from(r: KlDivReduction) -> Self {
        match r {
            KlDivReduction::None => KlReduction::None,
            KlDivReduction::Mean => KlReduction::Mean,
            KlDivReduction::Sum => KlReduction::Sum,
            KlDivReduction::Batchmean => KlReduction::BatchMean,
        }
    }
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/kl_div`: Kullback–Leibler divergence of `target` from
    /// the model's log-probabilities `input`.
    pub struct KlDiv {
        /// The model's log-probabilities, any shape.
        pub input: Tensor,
        /// Probabilities (log-probabilities with `log_target`); broadcast against `input`.
        pub target: Tensor,
        /// Whether `target` holds log-probabilities.
        #[serde(default)]
        #[schema(default = false)]
        pub log_target: bool,
    }
    reduction: KlDivReduction;
}

impl Loss for KlDiv {
    const INFO: Info = Info {
        name: "kl_div",
        module: "KLDivLoss",
        category: Category::Probabilistic,
        summary: "Kullback–Leibler divergence between a target distribution and the model's log-probabilities.",
        formula: "ℓ = target · (log target − input) (0 where target = 0); with log_target: exp(target) · (target − input)",
        notes: "Use reduction \"batchmean\" (÷ the input's first dimension) for the KL divergence per sample; \"mean\" divides by every element and comes with PyTorch's warning in `warnings`. A negative target gives NaN, as in PyTorch.",
        unreduced: "Input and target broadcast together: one term per element.",
        gradient: "input: −target (−exp(target) with log_target); target: log target + 1 − input (NaN where target = 0, as PyTorch), with log_target exp(target)·(target − input + 1).",
        differences: "",
        tensors: &[
            TensorArg::float("input", "(*)"),
            TensorArg::float("target", "(*), broadcastable with input"),
        ],
        reductions: &["none", "mean", "sum", "batchmean"],
        none_shape: shape::input_and_target,
        layout: Layout::ELEMENTWISE,
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        pair(self.input, self.target, |x, y| {
            kl_div(x, y, self.log_target, self.reduction.into(), grad)
        })
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "batchmean",
                "The KL divergence per sample of a 3×5 batch (log-softmax input, probability target)",
                json!({
                    "input": [[-1.9, -1.2, -2.3, -1.4, -1.5], [-0.8, -2.4, -1.7, -2.1, -1.6], [-1.6, -1.6, -1.6, -1.6, -1.6]],
                    "target": [[0.1, 0.3, 0.1, 0.3, 0.2], [0.5, 0.1, 0.2, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]],
                    "reduction": "batchmean",
                    "grad": true
                }),
            ),
            Example::new(
                "log-target",
                "Target given as log-probabilities",
                json!({"input": sample(&[2, 3], 5), "target": sample(&[2, 3], 6), "log_target": true, "reduction": "sum"}),
            ),
        ]
    }
}
