//! `POST /v1/losses/triplet_margin_loss`: `nn.TripletMarginLoss` / `F.triplet_margin_loss`.

use lossd_kernels::LossOutput;
use lossd_kernels::ranking::triplet_margin::{TripletMarginOptions, triplet_margin_loss};
use serde_json::json;

use super::args::Float;
use super::{
    ArgShape, Category, Example, Info, Layout, Loss, REDUCTIONS, Reduction, TensorArg, sample,
    shape, triple,
};
use crate::error::ApiError;
use crate::wire::Tensor;
use crate::wire::ser::WireFloat;

fn one() -> f64 {
    1.0
}

fn two() -> Float {
    Float(2.0)
}

fn eps() -> f64 {
    1e-6
}

crate::loss_request! {
    /// Request body of `POST /v1/losses/triplet_margin_loss`: the anchor should be closer to
    /// the positive than to the negative by at least `margin`.
    pub struct TripletMarginLoss {
        /// Anchor embeddings `(N, D)` or `(D)`.
        pub anchor: Tensor,
        /// Positive embeddings, same number of dimensions as `anchor`.
        pub positive: Tensor,
        /// Negative embeddings, same number of dimensions as `anchor`.
        pub negative: Tensor,
        /// The margin; must be positive.
        #[serde(default = "one")]
        #[schema(default = 1.0, exclusive_minimum = 0.0)]
        pub margin: f64,
        /// The norm degree of the distance: any number, or `"Infinity"` for the max norm.
        #[serde(default = "two")]
        #[schema(default = 2.0)]
        pub p: Float,
        /// Added to every component of each difference before the norm, as PyTorch does.
        #[serde(default = "eps")]
        #[schema(default = 1e-6)]
        pub eps: f64,
        /// Use the distance between positive and negative when it is smaller (distance swap).
        #[serde(default)]
        #[schema(default = false)]
        pub swap: bool,
    }
    reduction: Reduction;
}

/// One loss per triplet: the broadcast shape of the distances, each over the last dimension
/// (`swap` adds the positive–negative distance). Shared with
/// `triplet_margin_with_distance_loss`.
pub(super) fn none_shape(
    args: &[ArgShape],
    options: &shape::Options,
) -> Result<Vec<usize>, String> {
    let (a, p, n) = (
        shape::shape(args, "anchor"),
        shape::shape(args, "positive"),
        shape::shape(args, "negative"),
    );
    if p.len() != a.len() || n.len() != a.len() {
        return Err(format!(
            "anchor, positive and negative must have the same number of dimensions, got {}, {} and {}",
            shape::fmt_shape(&a),
            shape::fmt_shape(&p),
            shape::fmt_shape(&n)
        ));
    }
    let mut pairs = vec![(&a, &p), (&a, &n)];
    if options.get("swap") == Some(&serde_json::Value::Bool(true)) {
        pairs.push((&p, &n));
    }
    let mut batch: Option<Vec<usize>> = None;
    for (u, v) in pairs {
        let full = shape::broadcast("the triplet's tensors", u, v)?;
        let b = full
            .split_last()
            .map(|(_, b)| b.to_vec())
            .unwrap_or_default();
        batch = Some(match batch {
            None => b,
            Some(prev) => shape::broadcast("the triplet's distances", &prev, &b)?,
        });
    }
    Ok(batch.unwrap_or_default())
}

/// The triplet's tensors (`triplet_margin_with_distance_loss` takes the same).
pub(super) const TENSORS: &[TensorArg] = &[
    TensorArg::float("anchor", "(N, D) or (D)"),
    TensorArg::float("positive", "same rank as anchor, broadcastable"),
    TensorArg::float("negative", "same rank as anchor, broadcastable"),
];

impl Loss for TripletMarginLoss {
    const INFO: Info = Info {
        name: "triplet_margin_loss",
        module: "TripletMarginLoss",
        category: Category::RankingAndEmbedding,
        summary: "Triplet loss with p-norm distances: anchor–positive closer than anchor–negative by a margin.",
        formula: "d(u, v) = ‖u − v + eps‖_p over the last dim; ℓ = max(0, margin + d(a, p) − d(a, n)) (swap: d(a, n) → min(d(a, n), d(p, n)))",
        notes: "margin must be > 0. eps is added to every component of the difference (so d(u, u) = eps·D^(1/p)). A hinge at exactly 0 has gradient 0; a tie in the swap gives each branch half.",
        unreduced: "One loss per triplet: the broadcast shape of the tensors without the last dimension; () for (D).",
        gradient: "anchor, positive and negative: the p-norm's gradient of each difference, +d(a, p) and −d(a, n) (or −d(p, n) when swapped), where the hinge is positive.",
        differences: "",
        tensors: TENSORS,
        reductions: REDUCTIONS,
        none_shape,
        layout: Layout::Rows(shape::last_dim_rows),
    };

    fn compute<T: WireFloat>(self, grad: bool) -> Result<LossOutput<T>, ApiError> {
        triple(self.anchor, self.positive, self.negative, |a, p, n| {
            let options = TripletMarginOptions {
                margin: self.margin,
                p: self.p.0,
                eps: self.eps,
                swap: self.swap,
                reduction: self.reduction.into(),
                grad,
            };
            triplet_margin_loss(a, p, n, options)
        })
    }

    fn examples() -> Vec<Example> {
        vec![
            Example::new(
                "embeddings",
                "The torch.nn.TripletMarginLoss example, shortened: 8 triplets of 16-d embeddings, with gradients",
                json!({"anchor": sample(&[8, 16], 25), "positive": sample(&[8, 16], 26), "negative": sample(&[8, 16], 27), "grad": true}),
            ),
            Example::new(
                "swap-l1",
                "L1 distance with the distance swap",
                json!({"anchor": sample(&[4, 3], 28), "positive": sample(&[4, 3], 29), "negative": sample(&[4, 3], 30), "p": 1, "swap": true, "margin": 0.5}),
            ),
        ]
    }
}
