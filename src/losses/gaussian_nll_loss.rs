//! `POST /v1/losses/gaussian_nll_loss`: `nn.GaussianNLLLoss` / `F.gaussian_nll_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::probabilistic::gaussian_nll::{Var, gaussian_nll_loss};
use serde_json::json;

use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, float,
    sample, shape,
};
use crate::error::ApiError;
use crate::wire::ser::WireFloat;
use crate::wire::{Data, Form, Tensor};

fn eps() -> f64 {
    1e-6
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/gaussian_nll_loss`: negative log-likelihood under a
    /// Gaussian with predicted mean and variance.
    pub struct GaussianNllLoss {
        /// The predicted mean.
        pub input: Tensor,
        /// The observation; broadcast against `input`.
        pub target: Tensor,
        /// The predicted variance: a tensor of `input`'s shape, of `input`'s shape without its
        /// last dimension (one variance per row), or with exactly one dimension of size 1
        /// (shared along it); or a plain JSON number (one variance for all, as PyTorch's
        /// float `var`; no gradient then). Negative entries are rejected.
        pub var: Tensor,
        /// Add the constant ½·log(2π).
        #[serde(default)]
        #[schema(default = false)]
        pub full: bool,
        /// Variances are clamped to at least `eps` (the gradient passes through the clamp,
        /// as in PyTorch).
        #[serde(default = "eps")]
        #[schema(default = 1e-6)]
        pub eps: f64,
    }
    reduction: Reduction;
}

/// `input` and `target` broadcast together, and with `var` once viewed by its own rule.
fn none_shape(args: &[ArgShape], _: &shape::Options) -> Result<Vec<usize>, String> {
    let x = shape::shape(args, "input");
    let s = shape::broadcast("input and target", &x, &shape::shape(args, "target"))?;
    match shape::get(args, "var") {
        Some(v) if !v.literal => {
            let eff = lossd_kernels::probabilistic::gaussian_nll::effective_var_shape(&x, &v.shape)
                .ok_or_else(|| {
                    format!(
                        "var has shape {} but input has shape {}: var must have the input's shape, \
                     the input's shape without its last dimension, or one dimension of size 1",
                        shape::fmt_shape(&v.shape),
                        shape::fmt_shape(&x)
                    )
                })?;
            shape::broadcast("var and the input", &s, &eff)
        }
        _ => Ok(s),
    }
}

/// `var` as the kernel views it before broadcasting (the input's shape without its last
/// dimension gains a trailing 1); the other tensors as they are.
fn view(arg: &str, shape: &[usize], input: &[usize]) -> Option<Vec<usize>> {
    if arg == "var" {
        lossd_kernels::probabilistic::gaussian_nll::effective_var_shape(input, shape)
    } else {
        Some(shape.to_vec())
    }
}

impl Loss for GaussianNllLoss {
    const INFO: Info = Info {
        name: "gaussian_nll_loss",
        module: "GaussianNLLLoss",
        category: Category::Probabilistic,
        summary: "Negative log-likelihood of the target under a Gaussian with the predicted mean and variance.",
        formula: "v = max(var, eps); ℓ = ½ (log v + (input − target)² / v) (+ ½ log 2π with full)",
        notes: "A plain JSON number as var is PyTorch's Python-float var (any input shape, no gradient); a tensor var follows PyTorch's shape rule: the input's shape, the input's shape without its last dimension, or one dimension of size 1. Negative variances are rejected.",
        unreduced: "Input, target and var (viewed by its shape rule) broadcast together: one loss per element.",
        gradient: "input: (input − target)/v; target: the negative of that; var: ½(1/v − (input − target)²/v²) at the clamped v, passed through the clamp as PyTorch does, summed back to var's shape.",
        differences: "A whole-number var is accepted like any other number; PyTorch fails on a Python int.",
        tensors: &[
            TensorArg::float("input", "(N, *) or (*)"),
            TensorArg::float("target", "broadcastable with input"),
            TensorArg::float(
                "var",
                "input's shape, input's shape without the last dim, one dim of size 1, or a plain number",
            ),
        ],
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Elementwise { view: Some(view) },
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        let (x, y) = (float::<T>(self.input), float::<T>(self.target));
        // A bare JSON number is PyTorch's Python-float var.
        let scalar = match (&self.var.form, self.var.shape.is_empty(), &self.var.data) {
            (Form::Nested, true, Data::F64(v)) => v.first().copied(),
            (Form::Nested, true, Data::I64(v)) => v.first().map(|&i| i as f64),
            _ => None,
        };
        let var = match scalar {
            Some(s) => Err(s),
            None => Ok(float::<T>(self.var)),
        };
        let var = match &var {
            Err(s) => Var::Scalar(*s),
            Ok(t) => Var::Tensor(t.view()),
        };
        Ok(gaussian_nll_loss(
            x.view(),
            y.view(),
            var,
            self.full,
            self.eps,
            self.reduction.into(),
            grad,
        )?)
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "heteroscedastic",
                "One predicted variance per element, with gradients",
                json!({"input": sample(&[3, 2], 8), "target": sample(&[3, 2], 9),
                       "var": [[0.5, 1.0], [2.0, 0.25], [1.0, 1.0]], "grad": true}),
            ),
            Example::new(
                "homoscedastic",
                "One variance per row (var has input's shape without the last dimension)",
                json!({"input": sample(&[3, 2], 10), "target": sample(&[3, 2], 11), "var": [0.5, 1.0, 2.0], "full": true}),
            ),
        ]
    }
}
