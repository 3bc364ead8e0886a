//! `POST /v1/losses/soft_margin_loss`: `nn.SoftMarginLoss` / `F.soft_margin_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::classification::soft_margin::soft_margin_loss;

use super::{Category, Info, Loss, Reduction, TensorArg, TensorKind, float};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

crate::loss_request! {
    /// Request body of `POST /v1/losses/soft_margin_loss`: two-class logistic loss with
    /// targets ±1. Computed stably: finite where PyTorch's literal formula overflows.
    #[schema(example = json!({"input": [[0.5, -1.5], [0.3, -0.5]], "target": [[1, 1], [-1, -1]], "grad": true}))]
    pub struct SoftMarginLoss {
        /// The scores, any shape.
        pub input: Tensor,
        /// Labels, usually ±1; must broadcast to `input`'s shape without enlarging it.
        pub target: Tensor,
    }
    reduction: Reduction;
}

impl Loss for SoftMarginLoss {
    const INFO: Info = Info {
        name: "soft_margin_loss",
        module: "SoftMarginLoss",
        category: Category::Classification,
        summary: "Two-class logistic loss on ±1 labels.",
        formula: "ℓ = log(1 + exp(−target · input)), computed as softplus(−target · input)",
        tensors: &[
            TensorArg {
                name: "input",
                kind: TensorKind::Float,
                required: true,
                differentiable: true,
                shapes: "(*)",
            },
            TensorArg {
                name: "target",
                kind: TensorKind::Float,
                required: true,
                differentiable: false,
                shapes: "broadcastable to input without enlarging it",
            },
        ],
        reductions: &["none", "mean", "sum"],
    };

    fn common(&self) -> super::Common {
        self.common_fields()
    }

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let (x, y) = (float::<T>(self.input), float::<T>(self.target));
        Ok(soft_margin_loss(
            x.view(),
            y.view(),
            self.reduction.into(),
            grad,
        )?)
    }
}
