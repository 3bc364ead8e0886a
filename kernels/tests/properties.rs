//! Property tests over all 22 loss kernels of `lossd-kernels` (docs/losses.md, docs/differences.md).
//!
//! For every loss a strategy generates random *valid* calls: shapes in each form the loss
//! accepts (unbatched, batched, K-dimensional, broadcast; sizes up to 4–6, occasionally
//! empty), every option the kernel takes in its valid range, and a reduction. Values are
//! rounded to `f32` when generated, so the `f32` and `f64` runs see the same numbers.
//!
//! Each loss gets five tests (one `mod` per loss, see [`loss_properties!`]):
//!
//! 1. `returns_ok_with_documented_shapes_for_valid_inputs`: `Ok` for every reduction in both
//!    dtypes, with and without gradients; the unreduced loss has the documented shape, the
//!    reduced one is 0-d; the gradients are exactly the differentiable arguments (docs/differences.md,
//!    Gradients), in argument order, each with its argument's shape; nothing is NaN or infinite
//!    except the mean of nothing.
//! 2. `gradients_match_finite_differences`: every returned gradient equals the central
//!    difference of the `f64` loss (of the sum of the output for `none`), at inputs kept away
//!    from kinks (hinges, `|d| = β`, ties) by filtering.
//! 3. `reductions_are_consistent`: `none` sums to `sum`; `sum = mean × count` where the mean is
//!    PyTorch's plain mean over the unreduced loss, and the documented denominator elsewhere
//!    (`Σ w` of the non-ignored targets for `nll`/`cross_entropy`, `Σ weight` for `l1`/`mse`
//!    with weight, `mean_b(loss_b / max(L_b, 1))` for CTC, `input.size(0)` for `batchmean`).
//! 4. `float32_agrees_with_float64`: relative 1e-4 plus a small absolute tolerance scaled by
//!    the size of the quantity (inputs are kept where `f32` is well conditioned).
//! 5. `is_deterministic`: the same call twice gives bit-identical losses, gradients and
//!    warnings, and the loss computed without gradients is bit-identical to the one with.
//!
//! Then relations between kernels and documented quirks: K-dimensional `cross_entropy` equals
//! its positions as rows (across tiles); class indices equal their one-hot probabilities;
//! `linear_cross_entropy` equals `cross_entropy` of the explicit logits (across chunks);
//! `smooth_l1(β = 0) = l1` and `huber_δ = δ·smooth_l1_{β=δ}`; the default distance of
//! `triplet_margin_with_distance_loss` equals `triplet_margin_loss(p = 2)`; `kl_div`'s warning
//! and NaN target gradient at zero targets; CTC's gradient minus `exp(log_probs)` is the true
//! partial derivative. A property that exposes a kernel bug is kept, `#[ignore]`d with the
//! bug's description, until the kernel is fixed.
//!
//! The runs are reproducible: a fixed seed, 64 cases per test (fewer for the large
//! relation cases), no failure persistence.

use lossd_kernels::classification::binary_cross_entropy::binary_cross_entropy;
use lossd_kernels::classification::binary_cross_entropy_with_logits::binary_cross_entropy_with_logits;
use lossd_kernels::classification::cross_entropy::{CeTarget, CrossEntropyOptions, cross_entropy};
use lossd_kernels::classification::linear_cross_entropy::linear_cross_entropy;
use lossd_kernels::classification::multi_margin::multi_margin_loss;
use lossd_kernels::classification::multilabel_margin::multilabel_margin_loss;
use lossd_kernels::classification::multilabel_soft_margin::multilabel_soft_margin_loss;
use lossd_kernels::classification::nll::nll_loss;
use lossd_kernels::classification::soft_margin::soft_margin_loss;
use lossd_kernels::ndarray::{ArrayD, IxDyn};
use lossd_kernels::probabilistic::ctc::{CtcOptions, ctc_loss};
use lossd_kernels::probabilistic::gaussian_nll::{Var, gaussian_nll_loss};
use lossd_kernels::probabilistic::kl_div::{KlReduction, MEAN_WARNING, kl_div};
use lossd_kernels::probabilistic::poisson_nll::poisson_nll_loss;
use lossd_kernels::ranking::cosine_embedding::cosine_embedding_loss;
use lossd_kernels::ranking::hinge_embedding::hinge_embedding_loss;
use lossd_kernels::ranking::margin_ranking::margin_ranking_loss;
use lossd_kernels::ranking::triplet_margin::{TripletMarginOptions, triplet_margin_loss};
use lossd_kernels::ranking::triplet_margin_with_distance::{
    DistanceFunction, TripletMarginWithDistanceOptions, triplet_margin_with_distance_loss,
};
use lossd_kernels::regression::{
    huber::huber_loss, l1::l1_loss, mse::mse_loss, smooth_l1::smooth_l1_loss,
};
use lossd_kernels::{LossError, LossOutput, Real, Reduction};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

// =================================================================================================
// Shared helpers: configuration, reductions, the call abstraction, the five checks.
// =================================================================================================

type A = ArrayD<f64>;
type I = ArrayD<i64>;

/// Reproducible runs: fixed seed, 64 cases, nothing written to disk.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x1055_D0D5),
        max_global_rejects: 4096,
        ..ProptestConfig::default()
    }
}

/// How far (in input units) a point must stay from a kink for the gradient checks.
const KINK: f64 = 1e-3;

/// The central-difference step.
const H: f64 = 1e-6;

/// PyTorch's reductions, plus `kl_div`'s `batchmean`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Red {
    None,
    Mean,
    Sum,
    BatchMean,
}

impl Red {
    fn plain(self) -> Reduction {
        match self {
            Red::None => Reduction::None,
            Red::Mean => Reduction::Mean,
            Red::Sum => Reduction::Sum,
            Red::BatchMean => unreachable!("batchmean belongs to kl_div alone"),
        }
    }

    fn kl(self) -> KlReduction {
        match self {
            Red::None => KlReduction::None,
            Red::Mean => KlReduction::Mean,
            Red::Sum => KlReduction::Sum,
            Red::BatchMean => KlReduction::BatchMean,
        }
    }
}

const PLAIN: [Red; 3] = [Red::None, Red::Mean, Red::Sum];

/// One loss with its non-float arguments and options bound: float tensors in, output out.
trait Call: Clone + std::fmt::Debug {
    fn call<T: Real>(
        &self,
        floats: &[ArrayD<T>],
        red: Red,
        grad: bool,
    ) -> Result<LossOutput<T>, LossError>;
}

/// What the loss's `mean` divides by.
#[derive(Clone, Debug)]
enum Mean {
    /// PyTorch's plain mean over the unreduced loss: `sum = mean × numel(none)`.
    Plain,
    /// A documented denominator `W`: `sum = mean × W` (NaN when `W = 0`).
    Over(f64),
    /// `mean = Σ c_i · none_i` (CTC: `c_b = 1 / (N · max(L_b, 1))`).
    Linear(Vec<f64>),
}

/// A generated call with everything the checks need to know about it.
#[derive(Clone, Debug)]
struct Spec<C> {
    call: C,
    /// The float arguments (rounded to f32 values).
    floats: Vec<A>,
    /// The gradients the kernel must return, in order, with the float argument each is of.
    grads: Vec<(&'static str, usize)>,
    /// The reductions the loss takes.
    reds: Vec<Red>,
    /// The shape of the unreduced loss.
    none_shape: Vec<usize>,
    mean: Mean,
    /// `batchmean`'s divisor (kl_div only).
    batch_div: Option<f64>,
    /// Whether the point is away from every kink (required by the gradient and f32 checks).
    smooth: bool,
    /// Whether the loss is finite (false where PyTorch's value is NaN, e.g. 0/0).
    finite: bool,
    /// Gradients not checked by finite differences (documented to differ from the
    /// derivative of the forward, e.g. through an autograd-invisible clamp).
    fd_skip: Vec<&'static str>,
    /// Finite-difference tolerance: relative, and absolute per unit of `1 + Σ|none|`.
    fd_tol: (f64, f64),
    /// f32-vs-f64 tolerance: relative, and absolute per unit of the quantity's scale.
    f32_tol: (f64, f64),
    /// Extra scale for the f32 comparison of a gradient that is a difference of larger
    /// terms (catastrophic cancellation is f32 precision, not an error).
    f32_grad_scale: Vec<(&'static str, f64)>,
}

impl<C: Call> Spec<C> {
    fn new(call: C, floats: Vec<A>, grads: Vec<(&'static str, usize)>) -> Self {
        Spec {
            call,
            floats,
            grads,
            reds: PLAIN.to_vec(),
            none_shape: Vec::new(),
            mean: Mean::Plain,
            batch_div: None,
            smooth: true,
            finite: true,
            fd_skip: Vec::new(),
            fd_tol: (1e-5, 1e-7),
            f32_tol: (1e-4, 1e-5),
            f32_grad_scale: Vec::new(),
        }
    }

    fn none_shape(mut self, shape: Vec<usize>) -> Self {
        self.none_shape = shape;
        self
    }

    fn mean(mut self, mean: Mean) -> Self {
        self.mean = mean;
        self
    }

    fn smooth(mut self, smooth: bool) -> Self {
        self.smooth = smooth;
        self
    }
}

fn run<C: Call, T: Real>(
    s: &Spec<C>,
    floats: &[ArrayD<T>],
    red: Red,
    grad: bool,
) -> Result<LossOutput<T>, TestCaseError> {
    s.call
        .call(floats, red, grad)
        .map_err(|e| TestCaseError::fail(format!("{red:?} ({}): unexpected error {e:?}", T::DTYPE)))
}

fn floats32<C>(s: &Spec<C>) -> Vec<ArrayD<f32>> {
    s.floats.iter().map(|a| a.mapv(|v| v as f32)).collect()
}

/// The value an `f64` rounds to in `f32`, as an `f64`.
fn r32(v: f64) -> f64 {
    v as f32 as f64
}

fn total<T: Real>(a: &ArrayD<T>) -> f64 {
    a.iter().map(|v| v.f64()).sum()
}

fn abs_total<T: Real>(a: &ArrayD<T>) -> f64 {
    a.iter().map(|v| v.f64().abs()).sum()
}

fn max_abs<T: Real>(a: &ArrayD<T>) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.f64().abs()))
}

fn scalar0<T: Real>(a: &ArrayD<T>) -> f64 {
    assert_eq!(a.ndim(), 0, "a reduced loss is 0-d");
    a.first().unwrap().f64()
}

/// `|got − want| <= atol + rtol·|want|`; NaN and infinities must match exactly.
fn close(got: f64, want: f64, rtol: f64, atol: f64) -> bool {
    if want.is_finite() && got.is_finite() {
        (got - want).abs() <= atol + rtol * want.abs()
    } else {
        got == want || (got.is_nan() && want.is_nan())
    }
}

fn all_close<T: Real>(
    what: &str,
    got: &ArrayD<T>,
    want: &A,
    rtol: f64,
    atol: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}: shape", what);
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        prop_assert!(
            close(g.f64(), *w, rtol, atol),
            "{}: element {}: got {} want {} (rtol {}, atol {})",
            what,
            i,
            g.f64(),
            w,
            rtol,
            atol
        );
    }
    Ok(())
}

fn bits<T: Real>(a: &ArrayD<T>) -> (Vec<usize>, Vec<u64>) {
    (
        a.shape().to_vec(),
        a.iter().map(|v| v.f64().to_bits()).collect(),
    )
}

/// The expected mean for the spec's rule, from the unreduced loss and the sum.
fn expected_mean<C>(s: &Spec<C>, none: &A, sum: f64) -> f64 {
    match &s.mean {
        Mean::Plain => sum / none.len() as f64,
        Mean::Over(w) => sum / w,
        Mean::Linear(c) => {
            assert_eq!(c.len(), none.len());
            c.iter().zip(none.iter()).map(|(c, l)| c * l).sum()
        }
    }
}

// ---- property 1 ---------------------------------------------------------------------------------

fn check_ok<C: Call>(s: &Spec<C>) -> Result<(), TestCaseError> {
    check_ok_in(s, &s.floats)?;
    check_ok_in(s, &floats32(s))
}

fn check_ok_in<C: Call, T: Real>(s: &Spec<C>, fl: &[ArrayD<T>]) -> Result<(), TestCaseError> {
    let want_names: Vec<&str> = s.grads.iter().map(|g| g.0).collect();
    let none = run(s, &s.floats, Red::None, false)?.loss;
    for &r in &s.reds {
        let with = run(s, fl, r, true)?;
        let without = run(s, fl, r, false)?;
        let want_shape: &[usize] = if r == Red::None { &s.none_shape } else { &[] };
        prop_assert_eq!(with.loss.shape(), want_shape, "{:?}: loss shape", r);
        prop_assert_eq!(without.loss.shape(), want_shape, "{:?}: loss shape", r);
        prop_assert!(without.grads.is_empty(), "{:?}: gradients not asked for", r);
        let names: Vec<&str> = with.grads.iter().map(|g| g.0).collect();
        prop_assert_eq!(&names, &want_names, "{:?}: gradient names", r);
        for &(name, i) in &s.grads {
            let g = with.grad(name).unwrap();
            prop_assert_eq!(g.shape(), fl[i].shape(), "{:?}: shape of {}", r, name);
            prop_assert!(
                g.iter().all(|v| v.is_finite()),
                "{:?} ({}): non-finite gradient {}: {:?}",
                r,
                T::DTYPE,
                name,
                g
            );
        }
        // Only the mean of nothing may be NaN.
        // The mean of nothing is NaN (and so is batchmean over an empty batch).
        let nothing = match (r, &s.mean) {
            (Red::Mean, Mean::Plain) => none.is_empty(),
            (Red::Mean, Mean::Over(w)) => *w == 0.0,
            (Red::BatchMean, _) => s.batch_div == Some(0.0),
            _ => false,
        };
        if nothing {
            prop_assert!(
                with.loss.first().unwrap().is_nan(),
                "{:?}: mean of nothing",
                r
            );
        } else if s.finite {
            prop_assert!(
                with.loss.iter().all(|v| v.is_finite()),
                "{:?} ({}): non-finite loss {:?}",
                r,
                T::DTYPE,
                with.loss
            );
        }
    }
    Ok(())
}

// ---- property 2 ---------------------------------------------------------------------------------

fn check_gradients<C: Call>(s: &Spec<C>) -> Result<(), TestCaseError> {
    prop_assume!(s.smooth, "too close to a kink");
    for &r in &s.reds {
        check_gradients_of(s, r)?;
    }
    Ok(())
}

fn check_gradients_of<C: Call>(s: &Spec<C>, r: Red) -> Result<(), TestCaseError> {
    let out = run(s, &s.floats, r, true)?;
    let none = run(s, &s.floats, Red::None, false)?.loss;
    if none.is_empty() {
        // A loss of nothing (possibly NaN, the mean of nothing) does not depend on the inputs.
        for (name, g) in &out.grads {
            prop_assert!(
                g.iter().all(|v| *v == 0.0),
                "{:?}: d/d{} of nothing: {:?}",
                r,
                name,
                g
            );
        }
        return Ok(());
    }
    let mag = abs_total(&none);
    let (rtol, atol) = (s.fd_tol.0, s.fd_tol.1 * (1.0 + mag));
    let f = |fl: &[A]| -> Result<f64, TestCaseError> { Ok(total(&run(s, fl, r, false)?.loss)) };
    for &(name, idx) in &s.grads {
        let g = out.grad(name).unwrap();
        prop_assert_eq!(g.shape(), s.floats[idx].shape());
        if s.fd_skip.contains(&name) {
            continue;
        }
        for (i, &ana) in g.iter().enumerate() {
            let mut fl = s.floats.clone();
            let x0 = *fl[idx].iter().nth(i).unwrap();
            *fl[idx].iter_mut().nth(i).unwrap() = x0 + H;
            let fp = f(&fl)?;
            *fl[idx].iter_mut().nth(i).unwrap() = x0 - H;
            let fm = f(&fl)?;
            let num = (fp - fm) / (2.0 * H);
            prop_assert!(
                close(ana, num, rtol, atol),
                "{:?}: d/d{}[{}]: analytic {} but finite difference {} (diff {:e})",
                r,
                name,
                i,
                ana,
                num,
                ana - num
            );
        }
    }
    Ok(())
}

// ---- property 3 ---------------------------------------------------------------------------------

fn check_reductions<C: Call>(s: &Spec<C>) -> Result<(), TestCaseError> {
    let none = run(s, &s.floats, Red::None, false)?.loss;
    let sum = scalar0(&run(s, &s.floats, Red::Sum, false)?.loss);
    let mean = scalar0(&run(s, &s.floats, Red::Mean, false)?.loss);
    let tol = 1e-12 * (1.0 + abs_total(&none));
    prop_assert!(
        close(sum, total(&none), 0.0, tol),
        "none sums to {} but sum is {}",
        total(&none),
        sum
    );
    let want = expected_mean(s, &none, sum);
    let nothing = match &s.mean {
        Mean::Plain => none.is_empty(),
        Mean::Over(w) => *w == 0.0,
        Mean::Linear(_) => false,
    };
    if nothing {
        prop_assert!(
            mean.is_nan(),
            "mean {} but the mean of nothing is NaN",
            mean
        );
        prop_assert_eq!(sum, 0.0, "the sum of nothing");
    } else {
        match &s.mean {
            Mean::Plain => {
                let count = none.len() as f64;
                prop_assert!(
                    close(mean * count, sum, 1e-12, tol),
                    "mean {} × count {} != sum {}",
                    mean,
                    count,
                    sum
                );
            }
            Mean::Over(w) => prop_assert!(
                close(mean * w, sum, 1e-12, tol),
                "mean {} × denominator {} != sum {}",
                mean,
                w,
                sum
            ),
            Mean::Linear(_) => prop_assert!(
                close(mean, want, 1e-12, tol),
                "mean {} but Σ c·none = {}",
                mean,
                want
            ),
        }
    }
    if let Some(div) = s.batch_div {
        let bm = scalar0(&run(s, &s.floats, Red::BatchMean, false)?.loss);
        if div == 0.0 {
            prop_assert!(
                bm.is_nan(),
                "batchmean of an empty batch is NaN, got {}",
                bm
            );
        } else {
            prop_assert!(
                close(bm * div, sum, 1e-12, tol),
                "batchmean {} × input.size(0) {} != sum {}",
                bm,
                div,
                sum
            );
        }
    }
    Ok(())
}

// ---- property 4 ---------------------------------------------------------------------------------

fn check_f32<C: Call>(s: &Spec<C>) -> Result<(), TestCaseError> {
    prop_assume!(s.smooth, "too close to a kink");
    let f32s = floats32(s);
    let (rtol, atol) = s.f32_tol;
    let none = run(s, &s.floats, Red::None, false)?.loss;
    let mag = abs_total(&none);
    for &r in &s.reds {
        let a = run(s, &s.floats, r, true)?;
        let b = run(s, &f32s, r, true)?;
        let scale = match r {
            Red::None => 1.0 + max_abs(&a.loss),
            Red::Mean => 1.0 + mag / none.len().max(1) as f64,
            Red::Sum | Red::BatchMean => 1.0 + mag,
        };
        all_close(&format!("{r:?} loss"), &b.loss, &a.loss, rtol, atol * scale)?;
        for ((name, g64), (_, g32)) in a.grads.iter().zip(&b.grads) {
            let extra = s
                .f32_grad_scale
                .iter()
                .find(|e| e.0 == *name)
                .map_or(0.0, |e| e.1);
            let scale = 1.0 + max_abs(g64) + extra;
            all_close(&format!("{r:?} d/d{name}"), g32, g64, rtol, atol * scale)?;
        }
    }
    Ok(())
}

// ---- property 5 ---------------------------------------------------------------------------------

fn check_deterministic<C: Call>(s: &Spec<C>) -> Result<(), TestCaseError> {
    deterministic_in(s, &s.floats)?;
    deterministic_in(s, &floats32(s))
}

fn deterministic_in<C: Call, T: Real>(s: &Spec<C>, fl: &[ArrayD<T>]) -> Result<(), TestCaseError> {
    for &r in &s.reds {
        let a = run(s, fl, r, true)?;
        let b = run(s, fl, r, true)?;
        let c = run(s, fl, r, false)?;
        prop_assert_eq!(bits(&a.loss), bits(&b.loss), "{:?}: loss bits", r);
        prop_assert_eq!(
            bits(&a.loss),
            bits(&c.loss),
            "{:?}: the loss without gradients differs from the loss with",
            r
        );
        prop_assert_eq!(a.grads.len(), b.grads.len());
        for ((n1, g1), (n2, g2)) in a.grads.iter().zip(&b.grads) {
            prop_assert_eq!(n1, n2);
            prop_assert_eq!(bits(g1), bits(g2), "{:?}: bits of d/d{}", r, n1);
        }
        prop_assert_eq!(&a.warnings, &b.warnings);
        prop_assert_eq!(&a.warnings, &c.warnings);
    }
    Ok(())
}

/// The five property tests of one loss, in a module named after it. Each test can carry extra
/// attributes (e.g. `#[ignore = "..."]`) in the long form.
macro_rules! loss_properties {
    ($(#[$doc:meta])* $m:ident: $strategy:expr) => {
        loss_properties!($(#[$doc])* $m: $strategy;
            ok [] fd [] reductions [] f32 [] determinism []);
    };
    ($(#[$doc:meta])* $m:ident: $strategy:expr;
        ok [$(#[$ok:meta])*] fd [$(#[$fd:meta])*] reductions [$(#[$re:meta])*]
        f32 [$(#[$f3:meta])*] determinism [$(#[$de:meta])*]) => {
        $(#[$doc])*
        mod $m {
            #[allow(unused_imports)]
            use super::*;

            proptest! {
                #![proptest_config(config())]

                $(#[$ok])*
                #[test]
                fn returns_ok_with_documented_shapes_for_valid_inputs(spec in $strategy) {
                    check_ok(&spec)?;
                }

                $(#[$fd])*
                #[test]
                fn gradients_match_finite_differences(spec in $strategy) {
                    check_gradients(&spec)?;
                }

                $(#[$re])*
                #[test]
                fn reductions_are_consistent(spec in $strategy) {
                    check_reductions(&spec)?;
                }

                $(#[$f3])*
                #[test]
                fn float32_agrees_with_float64(spec in $strategy) {
                    check_f32(&spec)?;
                }

                $(#[$de])*
                #[test]
                fn is_deterministic(spec in $strategy) {
                    check_deterministic(&spec)?;
                }
            }
        }
    };
}

// ---- shapes and tensors ---------------------------------------------------------------------------

/// A dimension size in `1..=max`, occasionally 0.
fn size(max: usize) -> BoxedStrategy<usize> {
    prop_oneof![15 => 1..=max, 1 => Just(0usize)].boxed()
}

/// A dimension size in `1..=max`.
fn pos(max: usize) -> BoxedStrategy<usize> {
    (1..=max).boxed()
}

/// A shape of rank `lo..=hi`, sizes up to `max` (occasionally 0).
fn dims(lo: usize, hi: usize, max: usize) -> BoxedStrategy<Vec<usize>> {
    (lo..=hi)
        .prop_flat_map(move |r| prop::collection::vec(size(max), r))
        .boxed()
}

/// A shape that broadcasts to `full` without enlarging it: each size kept or 1, and (unless
/// `keep_rank`) sometimes fewer leading dimensions.
fn sub_shape(full: Vec<usize>, keep_rank: bool) -> BoxedStrategy<Vec<usize>> {
    let r = full.len();
    let drop = if keep_rank || r == 0 {
        Just(0usize).boxed()
    } else {
        prop_oneof![3 => Just(0usize), 1 => 0..=r].boxed()
    };
    (drop, prop::collection::vec(prop::bool::weighted(0.25), r))
        .prop_map(move |(k, ones)| {
            full.iter()
                .zip(&ones)
                .skip(k)
                .map(|(&d, &one)| if one { 1 } else { d })
                .collect()
        })
        .boxed()
}

/// A tensor of `shape` with values uniform in `[lo, hi)`, rounded to f32.
fn tensor(shape: Vec<usize>, lo: f64, hi: f64) -> BoxedStrategy<A> {
    let n: usize = shape.iter().product();
    prop::collection::vec(lo..hi, n)
        .prop_map(move |v| {
            A::from_shape_vec(IxDyn(&shape), v.into_iter().map(r32).collect()).unwrap()
        })
        .boxed()
}

/// Logits: uniform in `[−m, m]`, sometimes in `[−12m, 12m]` (the kernels claim stable
/// forms: large logits must neither overflow nor lose the gradient).
fn logits(shape: Vec<usize>, m: f64) -> BoxedStrategy<A> {
    prop_oneof![4 => tensor(shape.clone(), -m, m), 1 => tensor(shape, -12.0 * m, 12.0 * m)].boxed()
}

/// A tensor whose values are drawn from `choices`.
fn tensor_of(shape: Vec<usize>, choices: Vec<f64>) -> BoxedStrategy<A> {
    let n: usize = shape.iter().product();
    prop::collection::vec(prop::sample::select(choices), n)
        .prop_map(move |v| A::from_shape_vec(IxDyn(&shape), v).unwrap())
        .boxed()
}

/// NumPy's broadcast of shapes (the test's own, independent of the kernel's).
fn bshape(shapes: &[&[usize]]) -> Vec<usize> {
    let r = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..r)
        .map(|k| {
            let mut out = 1;
            for s in shapes {
                if k + s.len() >= r {
                    let d = s[k + s.len() - r];
                    if d != 1 {
                        assert!(out == 1 || out == d, "shapes {shapes:?} do not broadcast");
                        out = d;
                    }
                }
            }
            out
        })
        .collect()
}

/// `a` broadcast to `shape`, materialized in row-major order.
fn bcast<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let v = a.broadcast(IxDyn(shape)).expect("broadcastable");
    ArrayD::from_shape_vec(IxDyn(shape), v.iter().cloned().collect()).unwrap()
}

/// The rows (last dimension) of a row-major tensor.
fn rows(a: &A) -> Vec<Vec<f64>> {
    let v: Vec<f64> = a.iter().copied().collect();
    let Some(&d) = a.shape().last() else {
        return vec![v];
    };
    if d == 0 {
        return vec![Vec::new(); a.shape()[..a.ndim() - 1].iter().product()];
    }
    v.chunks(d).map(|c| c.to_vec()).collect()
}

fn far(v: f64, kink: f64) -> bool {
    (v - kink).abs() > KINK
}

// =================================================================================================
// Regression: l1, mse, smooth_l1, huber (docs/losses.md).
// =================================================================================================

#[derive(Clone, Copy, Debug)]
enum RegKind {
    L1,
    Mse,
    SmoothL1 { beta: f64 },
    Huber { delta: f64 },
}

impl Call for RegKind {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let (x, y, w) = (f[0].view(), f[1].view(), f.get(2).map(|w| w.view()));
        match *self {
            RegKind::L1 => l1_loss(x, y, w, r.plain(), g),
            RegKind::Mse => mse_loss(x, y, w, r.plain(), g),
            RegKind::SmoothL1 { beta } => smooth_l1_loss(x, y, r.plain(), beta, g),
            RegKind::Huber { delta } => huber_loss(x, y, w, r.plain(), delta, g),
        }
    }
}

/// Input and target broadcast both ways (any rank ≤ 3), weight (when the kernel takes one)
/// with the input's shape.
fn regression(kind: BoxedStrategy<RegKind>, weighted: bool) -> BoxedStrategy<Spec<RegKind>> {
    (dims(0, 3, 5), kind, any::<bool>())
        .prop_flat_map(move |(full, kind, use_w)| {
            (sub_shape(full.clone(), false), sub_shape(full, false)).prop_flat_map(
                move |(xs, ys)| {
                    let w = if weighted && use_w {
                        tensor(xs.clone(), 0.2, 2.0).prop_map(Some).boxed()
                    } else {
                        Just(None).boxed()
                    };
                    (tensor(xs, -3.0, 3.0), tensor(ys, -3.0, 3.0), w)
                        .prop_map(move |(x, y, w)| regression_spec(kind, x, y, w))
                },
            )
        })
        .boxed()
}

fn regression_spec(kind: RegKind, x: A, y: A, w: Option<A>) -> Spec<RegKind> {
    let shape = bshape(&[x.shape(), y.shape()]);
    let d = bcast(&x, &shape) - bcast(&y, &shape);
    let kinks = match kind {
        RegKind::L1 => vec![0.0],
        RegKind::Mse => vec![],
        RegKind::SmoothL1 { beta } => vec![0.0, beta, -beta],
        RegKind::Huber { delta } => vec![delta, -delta],
    };
    let smooth = d.iter().all(|&v| kinks.iter().all(|&k| far(v, k)));
    let mean = match (&kind, &w) {
        // l1_loss / mse_loss with weight: Σ w·ℓ / Σ w (huber divides by numel).
        (RegKind::L1 | RegKind::Mse, Some(w)) => Mean::Over(w.sum()),
        _ => Mean::Plain,
    };
    // The weighted mean's weight gradient is ℓ/Σw − L/Σw: a difference of terms up to
    // Σℓ/Σw (they cancel exactly for a 0-d weight).
    let cancel = match (&kind, &w) {
        (RegKind::L1, Some(w)) => d.iter().map(|v| v.abs()).sum::<f64>() / w.sum(),
        (RegKind::Mse, Some(w)) => d.iter().map(|v| v * v).sum::<f64>() / w.sum(),
        _ => 0.0,
    };
    let mut floats = vec![x, y];
    let mut grads = vec![("input", 0), ("target", 1)];
    if let Some(w) = w {
        floats.push(w);
        grads.push(("weight", 2));
    }
    let mut spec = Spec::new(kind, floats, grads)
        .none_shape(shape)
        .mean(mean)
        .smooth(smooth);
    spec.f32_grad_scale = vec![("weight", cancel)];
    spec
}

fn beta() -> BoxedStrategy<f64> {
    prop_oneof![
        1 => Just(0.0),
        1 => Just(1.0),
        // β = ∞: the loss is identically 0.
        1 => Just(f64::INFINITY),
        4 => (0.01..3.0).prop_map(r32),
    ]
    .boxed()
}

fn delta() -> BoxedStrategy<f64> {
    prop_oneof![1 => Just(1.0), 3 => (0.01..3.0).prop_map(r32)].boxed()
}

loss_properties! {
    /// `l1_loss`, with the functional `weight` (mean = Σ w·|d| / Σ w).
    l1: regression(Just(RegKind::L1).boxed(), true)
}

loss_properties! {
    /// `mse_loss`, with the functional `weight` (mean = Σ w·d² / Σ w).
    mse: regression(Just(RegKind::Mse).boxed(), true)
}

loss_properties! {
    /// `smooth_l1_loss` for β = 0 (L1), β = 1 and random β.
    smooth_l1: regression(beta().prop_map(|beta| RegKind::SmoothL1 { beta }).boxed(), false)
}

loss_properties! {
    /// `huber_loss` with random δ and the functional `weight` (mean divides by numel).
    huber: regression(delta().prop_map(|delta| RegKind::Huber { delta }).boxed(), true)
}

// =================================================================================================
// nll_loss and cross_entropy.
// =================================================================================================

/// `nll_loss` or `cross_entropy`, with the integer target (when in index mode) bound.
#[derive(Clone, Debug)]
struct ClassCall {
    nll: bool,
    /// Class indices; `None` means floats[1] holds probabilities.
    indices: Option<I>,
    weighted: bool,
    ignore_index: i64,
    label_smoothing: f64,
}

impl Call for ClassCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let x = f[0].view();
        let (target, w) = match &self.indices {
            Some(t) => (
                CeTarget::Indices(t.view()),
                self.weighted.then(|| f[1].view()),
            ),
            None => (
                CeTarget::Probs(f[1].view()),
                self.weighted.then(|| f[2].view()),
            ),
        };
        if self.nll {
            let CeTarget::Indices(t) = target else {
                unreachable!("nll takes indices")
            };
            nll_loss(x, t, w, self.ignore_index, r.plain(), g)
        } else {
            cross_entropy(
                x,
                target,
                CrossEntropyOptions {
                    weight: w,
                    ignore_index: self.ignore_index,
                    label_smoothing: self.label_smoothing,
                    reduction: r.plain(),
                    grad: g,
                },
            )
        }
    }
}

/// Input shapes `(C)`, `(N, C)` and `(N, C, d1[, d2])`, with `C ≥ 1`.
fn class_input_shape() -> BoxedStrategy<Vec<usize>> {
    prop_oneof![
        pos(6).prop_map(|c| vec![c]),
        (size(6), pos(6)).prop_map(|(n, c)| vec![n, c]),
        (size(3), pos(4), dims(1, 2, 3)).prop_map(|(n, c, ds)| {
            let mut s = vec![n, c];
            s.extend(ds);
            s
        }),
    ]
    .boxed()
}

/// The unreduced loss's (and the index target's) shape: the input's without the class dim.
fn positions_shape(xs: &[usize]) -> Vec<usize> {
    match xs {
        [_] => Vec::new(),
        [n, _, rest @ ..] => std::iter::once(*n).chain(rest.iter().copied()).collect(),
        _ => unreachable!(),
    }
}

/// Class-index targets for `positions` positions of `c` classes: each ignored with
/// probability 1/6, at least one not ignored (so the weighted mean is defined).
fn index_targets(positions: usize, c: usize, ignore: i64) -> BoxedStrategy<Vec<i64>> {
    prop::collection::vec((prop::bool::weighted(1.0 / 6.0), 0..c as i64), positions)
        .prop_map(move |v| {
            let mut t: Vec<i64> = v
                .into_iter()
                .map(|(ign, k)| if ign { ignore } else { k })
                .collect();
            if !t.is_empty() && t.iter().all(|&k| k == ignore) {
                t[0] = if ignore == 0 { 1 } else { 0 };
            }
            t
        })
        .boxed()
}

/// An `ignore_index` for `c` classes: −100, a class (not when `c = 1`, which would leave no
/// class to predict), or beyond the classes.
fn ignore_index(c: usize) -> BoxedStrategy<i64> {
    if c == 1 {
        prop_oneof![Just(-100i64), Just(3i64)].boxed()
    } else {
        prop_oneof![Just(-100i64), 0..c as i64, Just(c as i64 + 2)].boxed()
    }
}

fn label_smoothing() -> BoxedStrategy<f64> {
    prop_oneof![2 => Just(0.0), 1 => Just(1.0), 3 => 0.0..1.0f64].boxed()
}

/// `Σ w_t` over the non-ignored targets (their count when unweighted).
fn total_weight(t: &[i64], w: Option<&A>, ignore: i64) -> f64 {
    t.iter()
        .filter(|&&k| k != ignore)
        .map(|&k| w.map_or(1.0, |w| w[[k as usize]]))
        .sum()
}

/// `nll_loss` (`nll = true`) or `cross_entropy` in both target modes.
fn classification(nll: bool) -> BoxedStrategy<Spec<ClassCall>> {
    let modes = if nll {
        Just(true).boxed()
    } else {
        prop_oneof![2 => Just(true), 1 => Just(false)].boxed()
    };
    let no_classes = prop::bool::weighted(0.1);
    (
        class_input_shape(),
        modes,
        any::<bool>(),
        label_smoothing(),
        no_classes,
    )
        .prop_flat_map(move |(mut xs, index_mode, weighted, ls, no_classes)| {
            let cdim = if xs.len() == 1 { 0 } else { 1 };
            if no_classes && !index_mode {
                // Probabilities over zero classes: every loss is −0.
                xs[cdim] = 0;
            }
            let c = xs[cdim];
            let ps = positions_shape(&xs);
            let positions: usize = ps.iter().product();
            let x = if nll {
                tensor(xs.clone(), -4.0, 1.0)
            } else {
                logits(xs.clone(), 4.0)
            };
            let w = if weighted {
                tensor(vec![c], 0.2, 2.0).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            let ls = if nll { 0.0 } else { ls };
            if index_mode {
                // A (C) input takes a () target, or a (1,) one (for cross_entropy only when
                // C ≠ 1: a target with the input's shape holds probabilities).
                let tshape = prop_oneof![Just(ps.clone()), Just(vec![1usize])];
                let tshape = if xs.len() == 1 && (nll || c != 1) {
                    tshape.boxed()
                } else {
                    Just(ps.clone()).boxed()
                };
                (x, w, ignore_index(c), tshape)
                    .prop_flat_map(move |(x, w, ignore, tshape)| {
                        let ps = ps.clone();
                        index_targets(positions, c, ignore).prop_map(move |t| {
                            let mean = Mean::Over(total_weight(&t, w.as_ref(), ignore));
                            let t = I::from_shape_vec(IxDyn(&tshape), t).unwrap();
                            let call = ClassCall {
                                nll,
                                indices: Some(t),
                                weighted: w.is_some(),
                                ignore_index: ignore,
                                label_smoothing: ls,
                            };
                            let mut floats = vec![x.clone()];
                            floats.extend(w.clone());
                            Spec::new(call, floats, vec![("input", 0)])
                                .none_shape(ps.clone())
                                .mean(mean)
                        })
                    })
                    .boxed()
            } else {
                let ignore = prop_oneof![Just(-100i64), Just(-1i64)];
                (x, tensor(xs, 0.0, 1.0), w, ignore)
                    .prop_map(move |(x, p, w, ignore)| {
                        let call = ClassCall {
                            nll,
                            indices: None,
                            weighted: w.is_some(),
                            ignore_index: ignore,
                            label_smoothing: ls,
                        };
                        let mut grads = vec![("input", 0), ("target", 1)];
                        if w.is_some() {
                            grads.push(("weight", 2));
                        }
                        let mut floats = vec![x, p];
                        floats.extend(w);
                        // PyTorch's mean divides by numel(input) / C: 0/0 = NaN without
                        // classes, even when there are positions (their losses are −0).
                        let mean = if c == 0 { Mean::Over(0.0) } else { Mean::Plain };
                        Spec::new(call, floats, grads)
                            .none_shape(ps.clone())
                            .mean(mean)
                    })
                    .boxed()
            }
        })
        .boxed()
}

loss_properties! {
    /// `nll_loss`: `(C)`/`(N, C)`/`(N, C, d..)`, weights, every kind of `ignore_index`.
    nll: classification(true)
}

loss_properties! {
    /// `cross_entropy` with class indices (weights, `ignore_index`, label smoothing) and with
    /// class probabilities (weights, label smoothing; gradients for target and weight too).
    cross_entropy: classification(false)
}

// =================================================================================================
// linear_cross_entropy.
// =================================================================================================

#[derive(Clone, Debug)]
struct LinearCeCall {
    indices: Option<I>,
    bias: bool,
    weighted: bool,
    ignore_index: i64,
    label_smoothing: f64,
}

impl Call for LinearCeCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        // floats: input, linear_weight, [linear_bias], [probabilities], [weight]
        let mut k = 2;
        let mut next = |on: bool| {
            on.then(|| {
                k += 1;
                f[k - 1].view()
            })
        };
        let bias = next(self.bias);
        let probs = next(self.indices.is_none());
        let w = next(self.weighted);
        let target = match (&self.indices, probs) {
            (Some(t), _) => CeTarget::Indices(t.view()),
            (None, Some(p)) => CeTarget::Probs(p),
            (None, None) => unreachable!(),
        };
        linear_cross_entropy(
            f[0].view(),
            f[1].view(),
            target,
            bias,
            CrossEntropyOptions {
                weight: w,
                ignore_index: self.ignore_index,
                label_smoothing: self.label_smoothing,
                reduction: r.plain(),
                grad: g,
            },
        )
    }
}

fn linear_cross_entropy_case() -> BoxedStrategy<Spec<LinearCeCall>> {
    let batch = prop_oneof![Just(None), size(6).prop_map(Some)];
    (
        batch,
        pos(5),
        pos(6),
        any::<(bool, bool, bool)>(),
        label_smoothing(),
    )
        .prop_flat_map(|(n, feat, c, (index_mode, bias, weighted), ls)| {
            let xs: Vec<usize> = n.map_or(vec![feat], |n| vec![n, feat]);
            let logits: Vec<usize> = n.map_or(vec![c], |n| vec![n, c]);
            let ps: Vec<usize> = n.map_or(vec![], |n| vec![n]);
            let positions = n.unwrap_or(1);
            let b = if bias {
                tensor(vec![c], -1.0, 1.0).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            let w = if weighted {
                tensor(vec![c], 0.2, 2.0).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            let ignore = if index_mode {
                ignore_index(c)
            } else {
                Just(-100i64).boxed()
            };
            (
                tensor(xs, -2.0, 2.0),
                tensor(vec![c, feat], -1.0, 1.0),
                b,
                w,
                ignore,
                tensor(logits, 0.0, 1.0),
            )
                .prop_flat_map(move |(x, lw, b, w, ignore, p)| {
                    let ps = ps.clone();
                    index_targets(positions, c, ignore).prop_map(move |t| {
                        let mut floats = vec![x.clone(), lw.clone()];
                        let mut grads = vec![("input", 0), ("linear_weight", 1)];
                        if let Some(b) = &b {
                            floats.push(b.clone());
                            grads.push(("linear_bias", 2));
                        }
                        let (indices, mean) = if index_mode {
                            let mean = Mean::Over(total_weight(&t, w.as_ref(), ignore));
                            (Some(I::from_shape_vec(IxDyn(&ps), t).unwrap()), mean)
                        } else {
                            floats.push(p.clone());
                            (None, Mean::Plain)
                        };
                        floats.extend(w.clone());
                        let call = LinearCeCall {
                            indices,
                            bias: b.is_some(),
                            weighted: w.is_some(),
                            ignore_index: ignore,
                            label_smoothing: ls,
                        };
                        Spec::new(call, floats, grads)
                            .none_shape(ps.clone())
                            .mean(mean)
                    })
                })
        })
        .boxed()
}

loss_properties! {
    /// `linear_cross_entropy`: `(F)`/`(N, F)` input, `(C, F)` weight, optional bias, class
    /// indices or probabilities, class weights, `ignore_index`, label smoothing.
    linear_cross_entropy: linear_cross_entropy_case()
}

// =================================================================================================
// binary_cross_entropy, binary_cross_entropy_with_logits.
// =================================================================================================

#[derive(Clone, Debug)]
struct BceCall {
    logits: bool,
    weighted: bool,
    pos_weighted: bool,
}

impl Call for BceCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let w = self.weighted.then(|| f[2].view());
        if self.logits {
            let pw = self
                .pos_weighted
                .then(|| f[2 + self.weighted as usize].view());
            binary_cross_entropy_with_logits(f[0].view(), f[1].view(), w, pw, r.plain(), g)
        } else {
            binary_cross_entropy(f[0].view(), f[1].view(), w, r.plain(), g)
        }
    }
}

/// Input and target of one shape (rank ≤ 3); weight and pos_weight broadcast to it without
/// enlarging it. BCE inputs stay in [0.02, 0.98] (away from the clamps), logits in [−5, 5].
fn bce(logits: bool) -> BoxedStrategy<Spec<BceCall>> {
    (dims(0, 3, 5), any::<(bool, bool)>())
        .prop_flat_map(move |(xs, (weighted, pos_weighted))| {
            let pos_weighted = pos_weighted && logits;
            let (ylo, yhi) = if logits { (-0.25, 1.25) } else { (0.0, 1.0) };
            let opt = |on: bool, lo: f64, hi: f64| {
                if on {
                    sub_shape(xs.clone(), false)
                        .prop_flat_map(move |s| tensor(s, lo, hi))
                        .prop_map(Some)
                        .boxed()
                } else {
                    Just(None).boxed()
                }
            };
            let x = if logits {
                self::logits(xs.clone(), 5.0)
            } else {
                tensor(xs.clone(), 0.02, 0.98)
            };
            (
                x,
                tensor(xs.clone(), ylo, yhi),
                // Neither is validated: negative and zero values are accepted.
                opt(weighted, -1.0, 2.0),
                opt(pos_weighted, -0.5, 3.0),
            )
                .prop_map(move |(x, y, w, pw)| {
                    let call = BceCall {
                        logits,
                        weighted: w.is_some(),
                        pos_weighted: pw.is_some(),
                    };
                    let shape = x.shape().to_vec();
                    let mut floats = vec![x, y];
                    floats.extend(w);
                    floats.extend(pw);
                    Spec::new(call, floats, vec![("input", 0), ("target", 1)]).none_shape(shape)
                })
        })
        .boxed()
}

loss_properties! {
    /// `binary_cross_entropy` with optional broadcast weight (mean divides by numel).
    binary_cross_entropy: bce(false)
}

loss_properties! {
    /// `binary_cross_entropy_with_logits` with optional weight and pos_weight.
    binary_cross_entropy_with_logits: bce(true)
}

// =================================================================================================
// multi_margin, multilabel_margin.
// =================================================================================================

#[derive(Clone, Debug)]
struct MultiMarginCall {
    target: I,
    p: f64,
    margin: f64,
    weighted: bool,
}

impl Call for MultiMarginCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let w = self.weighted.then(|| f[1].view());
        multi_margin_loss(
            f[0].view(),
            self.target.view(),
            self.p,
            self.margin,
            w,
            r.plain(),
            g,
        )
    }
}

/// Margin-loss inputs: `()` (one sample, one class), `(C)`, `(N, C)`.
fn margin_input_shape() -> BoxedStrategy<Vec<usize>> {
    prop_oneof![
        1 => Just(vec![]),
        2 => pos(6).prop_map(|c| vec![c]),
        4 => (size(6), pos(6)).prop_map(|(n, c)| vec![n, c]),
    ]
    .boxed()
}

/// `(N, C)` of a margin-loss input shape.
fn samples_classes(xs: &[usize]) -> (usize, usize) {
    match xs {
        [] => (1, 1),
        [c] => (1, *c),
        [n, c] => (*n, *c),
        _ => unreachable!(),
    }
}

fn multi_margin_case() -> BoxedStrategy<Spec<MultiMarginCall>> {
    let p = prop_oneof![Just(1.0), Just(2.0)];
    let margin = prop_oneof![Just(1.0), (-0.5..2.0).prop_map(r32)];
    (margin_input_shape(), p, margin, any::<bool>())
        .prop_flat_map(|(xs, p, margin, weighted)| {
            let (n, c) = samples_classes(&xs);
            // Unbatched: a 0-d target, or a (1,) one.
            let tshape = if xs.len() == 2 {
                Just(vec![n]).boxed()
            } else {
                prop_oneof![Just(vec![]), Just(vec![1usize])].boxed()
            };
            let w = if weighted {
                tensor(vec![c], 0.2, 2.0).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (
                tensor(xs, -2.0, 2.0),
                prop::collection::vec(0..c as i64, n),
                tshape,
                w,
            )
                .prop_map(move |(x, t, tshape, w)| {
                    let rows = x.iter().copied().collect::<Vec<_>>();
                    let smooth = (0..n).all(|s| {
                        let row = &rows[s * c..(s + 1) * c];
                        let xt = row[t[s] as usize];
                        (0..c)
                            .filter(|&i| i != t[s] as usize)
                            .all(|i| far(margin - xt + row[i], 0.0))
                    });
                    let call = MultiMarginCall {
                        target: I::from_shape_vec(IxDyn(&tshape), t).unwrap(),
                        p,
                        margin,
                        weighted: w.is_some(),
                    };
                    let mut floats = vec![x];
                    floats.extend(w);
                    Spec::new(call, floats, vec![("input", 0)])
                        .none_shape(tshape)
                        .smooth(smooth)
                })
        })
        .boxed()
}

loss_properties! {
    /// `multi_margin_loss`: p ∈ {1, 2}, any margin, optional class weight; 0-d, `(C)`, `(N, C)`.
    multi_margin: multi_margin_case()
}

#[derive(Clone, Debug)]
struct MultiLabelMarginCall {
    target: I,
}

impl Call for MultiLabelMarginCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        multilabel_margin_loss(f[0].view(), self.target.view(), r.plain(), g)
    }
}

/// One target row of `c` entries: `k` labels (duplicates allowed), then −1, then anything in
/// `[−1, C − 1]` (checked but unused).
fn multilabel_row(c: usize) -> BoxedStrategy<Vec<i64>> {
    (
        0..=c,
        prop::collection::vec(0..c as i64, c),
        prop::collection::vec(-1..c as i64, c),
    )
        .prop_map(move |(k, labels, tail)| {
            (0..c)
                .map(|i| match i.cmp(&k) {
                    std::cmp::Ordering::Less => labels[i],
                    std::cmp::Ordering::Equal => -1,
                    std::cmp::Ordering::Greater => tail[i],
                })
                .collect()
        })
        .boxed()
}

fn multilabel_margin_case() -> BoxedStrategy<Spec<MultiLabelMarginCall>> {
    margin_input_shape()
        .prop_flat_map(|xs| {
            let (n, c) = samples_classes(&xs);
            let tshape = match xs.len() {
                2 => Just(xs.clone()).boxed(),
                // (C); for C = 1 (and a 0-d input) also () and (1,).
                _ if c == 1 => prop_oneof![Just(vec![]), Just(vec![1usize])].boxed(),
                _ => Just(vec![c]).boxed(),
            };
            let none_shape = if xs.len() == 2 { vec![n] } else { vec![] };
            (
                tensor(xs, -2.0, 2.0),
                prop::collection::vec(multilabel_row(c), n),
                tshape,
            )
                .prop_map(move |(x, t, tshape)| {
                    let xv: Vec<f64> = x.iter().copied().collect();
                    let smooth = t.iter().enumerate().all(|(s, row)| {
                        let j: Vec<usize> = row
                            .iter()
                            .take_while(|&&v| v >= 0)
                            .map(|&v| v as usize)
                            .collect();
                        let xr = &xv[s * c..(s + 1) * c];
                        j.iter().all(|&j| {
                            (0..c)
                                .filter(|i| !j_contains(row, *i))
                                .all(|i| far(1.0 - xr[j] + xr[i], 0.0))
                        })
                    });
                    let flat: Vec<i64> = t.into_iter().flatten().collect();
                    let call = MultiLabelMarginCall {
                        target: I::from_shape_vec(IxDyn(&tshape), flat).unwrap(),
                    };
                    Spec::new(call, vec![x], vec![("input", 0)])
                        .none_shape(none_shape.clone())
                        .smooth(smooth)
                })
        })
        .boxed()
}

/// Whether class `i` is among the row's labels (the prefix before the first negative entry).
fn j_contains(row: &[i64], i: usize) -> bool {
    row.iter()
        .take_while(|&&v| v >= 0)
        .any(|&v| v as usize == i)
}

loss_properties! {
    /// `multilabel_margin_loss`: 0-d, `(C)`, `(N, C)`; label prefixes with duplicates and
    /// checked-but-unused entries after the first −1.
    multilabel_margin: multilabel_margin_case()
}

// =================================================================================================
// multilabel_soft_margin, soft_margin.
// =================================================================================================

#[derive(Clone, Debug)]
struct SoftCall {
    multilabel: bool,
    weighted: bool,
}

impl Call for SoftCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        if self.multilabel {
            let w = self.weighted.then(|| f[2].view());
            multilabel_soft_margin_loss(f[0].view(), f[1].view(), w, r.plain(), g)
        } else {
            soft_margin_loss(f[0].view(), f[1].view(), r.plain(), g)
        }
    }
}

fn multilabel_soft_margin_case() -> BoxedStrategy<Spec<SoftCall>> {
    // A leading dimension that target or weight adds in front of the input's (PyTorch then
    // sums over dimension input.dim() − 1 of the broadcast loss, which lossd mirrors).
    let lead = prop_oneof![4 => Just(None), 1 => (1..=3usize).prop_map(Some)];
    (dims(0, 2, 5), size(6), any::<(bool, bool)>(), lead)
        .prop_flat_map(|(mut xs, c, (weighted, lead_on_weight), lead)| {
            xs.push(c);
            let lead_y = lead.filter(|_| !(weighted && lead_on_weight));
            let lead_w = lead.filter(|_| weighted && lead_on_weight);
            let with_lead = move |xs: Vec<usize>, lead: Option<usize>| match lead {
                None => sub_shape(xs, false),
                Some(k) => sub_shape(xs, true)
                    .prop_map(move |s| std::iter::once(k).chain(s).collect())
                    .boxed(),
            };
            let w = if weighted {
                with_lead(xs.clone(), lead_w)
                    .prop_flat_map(|s| tensor(s, 0.2, 2.0))
                    .prop_map(Some)
                    .boxed()
            } else {
                Just(None).boxed()
            };
            let y = with_lead(xs.clone(), lead_y).prop_flat_map(|s| tensor(s, 0.0, 1.0));
            (logits(xs, 4.0), y, w).prop_map(move |(x, y, w)| {
                let mut shapes = vec![x.shape(), y.shape()];
                if let Some(w) = &w {
                    shapes.push(w.shape());
                }
                let shape = bshape(&shapes);
                let axis = x.ndim() - 1;
                let none_shape: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != axis)
                    .map(|(_, &d)| d)
                    .collect();
                let c = x.shape()[axis];
                let call = SoftCall {
                    multilabel: true,
                    weighted: w.is_some(),
                };
                let mut grads = vec![("input", 0), ("target", 1)];
                if w.is_some() {
                    grads.push(("weight", 2));
                }
                let mut floats = vec![x, y];
                floats.extend(w);
                let mut spec = Spec::new(call, floats, grads)
                    .none_shape(none_shape)
                    // No classes: each loss is 0/0 = NaN, as in PyTorch.
                    .smooth(c > 0);
                spec.finite = c > 0;
                spec
            })
        })
        .boxed()
}

loss_properties! {
    /// `multilabel_soft_margin_loss`: `(…, C)` input, broadcast target and weight (`(C)`,
    /// `(N, 1)`, leading dimensions, …); gradients for all three; `C = 0` gives NaN.
    multilabel_soft_margin: multilabel_soft_margin_case()
}

fn soft_margin_case() -> BoxedStrategy<Spec<SoftCall>> {
    dims(0, 3, 5)
        .prop_flat_map(|xs| {
            let y = sub_shape(xs.clone(), false).prop_flat_map(|s| {
                prop_oneof![tensor_of(s.clone(), vec![-1.0, 1.0]), tensor(s, -1.5, 1.5),]
            });
            (logits(xs.clone(), 4.0), y).prop_map(move |(x, y)| {
                let call = SoftCall {
                    multilabel: false,
                    weighted: false,
                };
                Spec::new(call, vec![x, y], vec![("input", 0)]).none_shape(xs.clone())
            })
        })
        .boxed()
}

loss_properties! {
    /// `soft_margin_loss`: ±1 or arbitrary targets broadcast to the input.
    soft_margin: soft_margin_case()
}

// =================================================================================================
// kl_div, poisson_nll, gaussian_nll.
// =================================================================================================

#[derive(Clone, Debug)]
enum ProbCall {
    Kl {
        log_target: bool,
    },
    Poisson {
        log_input: bool,
        full: bool,
        eps: f64,
    },
    Gaussian {
        /// `Some(v)`: a scalar var; `None`: floats[2] is the var tensor.
        scalar: Option<f64>,
        full: bool,
        eps: f64,
    },
}

impl Call for ProbCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let (x, y) = (f[0].view(), f[1].view());
        match *self {
            ProbCall::Kl { log_target } => kl_div(x, y, log_target, r.kl(), g),
            ProbCall::Poisson {
                log_input,
                full,
                eps,
            } => poisson_nll_loss(x, y, log_input, full, eps, r.plain(), g),
            ProbCall::Gaussian { scalar, full, eps } => {
                let var = match scalar {
                    Some(v) => Var::Scalar(v),
                    None => Var::Tensor(f[2].view()),
                };
                gaussian_nll_loss(x, y, var, full, eps, r.plain(), g)
            }
        }
    }
}

/// Two shapes that broadcast together (both sub-shapes of one full shape, rank ≤ 3).
fn broadcast_pair_shapes() -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
    dims(0, 3, 5)
        .prop_flat_map(|full| (sub_shape(full.clone(), false), sub_shape(full, false)))
        .boxed()
}

fn kl_div_case() -> BoxedStrategy<Spec<ProbCall>> {
    (broadcast_pair_shapes(), any::<bool>())
        .prop_flat_map(|((xs, ys), log_target)| {
            let y = if log_target {
                tensor(ys.clone(), -4.0, 0.0)
            } else {
                tensor(ys.clone(), 0.05, 1.0)
            };
            (tensor(xs.clone(), -4.0, 0.0), y).prop_map(move |(x, y)| {
                let shape = bshape(&[&xs, &ys]);
                let mut s = Spec::new(
                    ProbCall::Kl { log_target },
                    vec![x, y],
                    vec![("input", 0), ("target", 1)],
                )
                .none_shape(shape);
                s.reds = vec![Red::None, Red::Mean, Red::Sum, Red::BatchMean];
                s.batch_div = Some(xs.first().map_or(1.0, |&n| n as f64));
                s
            })
        })
        .boxed()
}

loss_properties! {
    /// `kl_div`: probabilities or log-probabilities as target, broadcasting, all four
    /// reductions (`batchmean` divides by `input.size(0)`).
    kl_div: kl_div_case()
}

mod kl_div_warnings {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// `reduction='mean'` carries PyTorch's warning; no other reduction does.
        #[test]
        fn only_the_mean_reduction_warns(spec in kl_div_case()) {
            for &r in &spec.reds {
                let out = run(&spec, &spec.floats, r, false)?;
                if r == Red::Mean {
                    prop_assert_eq!(out.warnings, vec![MEAN_WARNING.to_string()]);
                } else {
                    prop_assert!(out.warnings.is_empty(), "{:?}: {:?}", r, out.warnings);
                }
            }
        }
    }
}

fn poisson_nll_case() -> BoxedStrategy<Spec<ProbCall>> {
    let eps = prop_oneof![Just(1e-8), Just(0.0), (1e-6..1e-2).prop_map(r32)];
    (broadcast_pair_shapes(), any::<(bool, bool)>(), eps)
        .prop_flat_map(|((xs, ys), (log_input, full), eps)| {
            let x = if log_input {
                tensor(xs.clone(), -2.0, 2.0)
            } else {
                tensor(xs.clone(), 0.1, 4.0)
            };
            // Counts and fractional targets, both sides of the Stirling threshold y = 1.
            let y = prop_oneof![
                tensor_of(ys.clone(), vec![0.0, 1.0, 2.0, 3.0, 5.0]),
                tensor(ys.clone(), 0.0, 6.0),
            ];
            (x, y).prop_map(move |(x, y)| {
                Spec::new(
                    ProbCall::Poisson {
                        log_input,
                        full,
                        eps,
                    },
                    vec![x, y],
                    vec![("input", 0)],
                )
                .none_shape(bshape(&[&xs, &ys]))
            })
        })
        .boxed()
}

loss_properties! {
    /// `poisson_nll_loss`: `log_input`, `full` (Stirling term where y > 1), `eps`, broadcasting.
    poisson_nll: poisson_nll_case()
}

/// The var shapes PyTorch accepts for an input of shape `xs`: `xs`; `xs` without its last
/// dim; `xs` with one dimension (of size ≠ 1) set to 1.
fn var_shapes(xs: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![xs.to_vec()];
    if let Some((_, lead)) = xs.split_last() {
        out.push(lead.to_vec());
    }
    for k in 0..xs.len() {
        if xs[k] != 1 {
            let mut s = xs.to_vec();
            s[k] = 1;
            out.push(s);
        }
    }
    out
}

/// The shape var broadcasts as (PyTorch's rule, docs/losses.md).
fn effective_var_shape(xs: &[usize], vs: &[usize]) -> Vec<usize> {
    if vs != xs && xs.split_last().is_some_and(|(_, lead)| lead == vs) {
        vs.iter().copied().chain([1]).collect()
    } else {
        vs.to_vec()
    }
}

fn gaussian_nll_case() -> BoxedStrategy<Spec<ProbCall>> {
    let eps = prop_oneof![Just(1e-6), (1e-8..1e-3).prop_map(r32)];
    (broadcast_pair_shapes(), any::<(bool, bool)>(), eps)
        .prop_flat_map(|((xs, ys), (scalar, full), eps)| {
            let var = if scalar {
                prop_oneof![9 => (0.05..3.0f64).prop_map(r32), 1 => Just(0.0)]
                    .prop_map(Err)
                    .boxed()
            } else {
                prop::sample::select(var_shapes(&xs))
                    .prop_flat_map(|s| {
                        prop_oneof![
                            9 => tensor(s.clone(), 0.05, 3.0),
                            // Variances below eps are clamped to it.
                            1 => tensor_of(s, vec![0.0, 0.5, 1.0]),
                        ]
                    })
                    .prop_map(Ok)
                    .boxed()
            };
            (
                tensor(xs.clone(), -3.0, 3.0),
                tensor(ys.clone(), -3.0, 3.0),
                var,
            )
                .prop_map(move |(x, y, var)| {
                    let mut grads = vec![("input", 0), ("target", 1)];
                    let mut floats = vec![x, y];
                    let mut fd_skip = Vec::new();
                    let (scalar, vshape) = match var {
                        Err(v) => (Some(v), vec![]),
                        Ok(v) => {
                            // The clamp at eps is invisible to the gradient: where it
                            // acts, ∂/∂var is not the derivative of the forward.
                            if v.iter().any(|&v| v < eps) {
                                fd_skip.push("var");
                            }
                            let vs = effective_var_shape(&xs, v.shape());
                            floats.push(v);
                            grads.push(("var", 2));
                            (None, vs)
                        }
                    };
                    let mut spec =
                        Spec::new(ProbCall::Gaussian { scalar, full, eps }, floats, grads)
                            .none_shape(bshape(&[&xs, &ys, &vshape]));
                    spec.fd_skip = fd_skip;
                    spec
                })
        })
        .boxed()
}

loss_properties! {
    /// `gaussian_nll_loss`: tensor var in every accepted shape (full, one per row, one dim of
    /// size 1) or a scalar var; `full`, `eps`; target broadcast both ways; variances below
    /// eps sometimes (their gradient is not checked by finite differences: the clamp is
    /// invisible to autograd).
    gaussian_nll: gaussian_nll_case()
}

// =================================================================================================
// ctc_loss.
// =================================================================================================

#[derive(Clone, Debug)]
struct CtcCall {
    targets: I,
    input_lengths: I,
    target_lengths: I,
    blank: i64,
    zero_infinity: bool,
}

/// `log_softmax` over the last dimension, in `T`.
fn log_softmax_last<T: Real>(z: &ArrayD<T>) -> ArrayD<T> {
    let c = *z.shape().last().unwrap();
    let v: Vec<T> = z.iter().copied().collect();
    let mut out = Vec::with_capacity(v.len());
    for row in v.chunks(c) {
        let m = row.iter().fold(T::neg_infinity(), |m, &x| m.max(x));
        let s = row.iter().fold(T::zero(), |s, &x| s + (x - m).exp());
        let lse = m + s.ln();
        out.extend(row.iter().map(|&x| x - lse));
    }
    ArrayD::from_shape_vec(z.raw_dim(), out).unwrap()
}

impl Call for CtcCall {
    /// floats[0] holds *logits*: the kernel's documented gradient is PyTorch's
    /// `exp(log_probs) − γ`, the gradient with respect to the logits when
    /// `log_probs = log_softmax(logits)` (docs/losses.md, docs/differences.md item 2).
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let lp = log_softmax_last(&f[0]);
        ctc_loss(
            lp.view(),
            self.targets.view(),
            self.input_lengths.view(),
            self.target_lengths.view(),
            CtcOptions {
                blank: self.blank,
                zero_infinity: self.zero_infinity,
                reduction: r.plain(),
                grad: g,
            },
        )
    }
}

/// Frames a target needs: its length plus one blank between each pair of equal neighbours.
fn ctc_needed(labels: &[i64]) -> usize {
    labels.len() + labels.windows(2).filter(|w| w[0] == w[1]).count()
}

/// One sequence: up to 3 labels (not blank) and an input length, feasible unless
/// `zero_infinity` (then anything in `0..=T`).
fn ctc_sequence(
    frames: usize,
    classes: usize,
    blank: i64,
    zero_infinity: bool,
) -> BoxedStrategy<(Vec<i64>, usize)> {
    let label = (0..classes as i64 - 1).prop_map(move |k| if k >= blank { k + 1 } else { k });
    (prop::collection::vec(label, 0..=4), 0.0..=1.0f64)
        .prop_map(move |(mut labels, frac)| {
            while ctc_needed(&labels) > frames {
                labels.pop();
            }
            let lo = if zero_infinity {
                0
            } else {
                ctc_needed(&labels)
            };
            let len = lo + ((frames - lo) as f64 * frac).round() as usize;
            (labels, len)
        })
        .boxed()
}

fn ctc_case() -> BoxedStrategy<Spec<CtcCall>> {
    let batch = prop_oneof![1 => Just(None), 3 => (1..=4usize).prop_map(Some)];
    (batch, 1..=8usize, 2..=6usize, any::<(bool, bool, bool)>())
        .prop_flat_map(
            |(batch, frames, classes, (zero_infinity, padded, len_1d))| {
                let n = batch.unwrap_or(1);
                let blank = 0..classes as i64;
                let lp_shape: Vec<usize> = match batch {
                    Some(n) => vec![frames, n, classes],
                    None => vec![frames, classes],
                };
                (tensor(lp_shape, -3.0, 3.0), blank, 0..=2usize).prop_flat_map(
                    move |(z, blank, extra)| {
                        (
                            Just(z),
                            Just(blank),
                            prop::collection::vec(
                                ctc_sequence(frames, classes, blank, zero_infinity),
                                n,
                            ),
                            prop::collection::vec(0..classes as i64, 4 + extra),
                        )
                            .prop_map(move |(z, blank, seqs, pad)| {
                                let tl: Vec<i64> = seqs.iter().map(|s| s.0.len() as i64).collect();
                                let il: Vec<i64> = seqs.iter().map(|s| s.1 as i64).collect();
                                let targets = if batch.is_none() && !padded {
                                    I::from_shape_vec(IxDyn(&[tl[0] as usize]), seqs[0].0.clone())
                                        .unwrap()
                                } else if padded {
                                    let width = *tl.iter().max().unwrap() as usize + extra;
                                    let mut t = Vec::new();
                                    for (labels, _) in &seqs {
                                        t.extend(labels);
                                        // Padding: labels beyond the length are not read.
                                        t.extend(&pad[..width - labels.len()]);
                                    }
                                    I::from_shape_vec(IxDyn(&[n, width]), t).unwrap()
                                } else {
                                    let t: Vec<i64> =
                                        seqs.iter().flat_map(|s| s.0.iter().copied()).collect();
                                    I::from_shape_vec(IxDyn(&[t.len()]), t).unwrap()
                                };
                                let lens = |v: Vec<i64>| {
                                    if batch.is_none() && !len_1d {
                                        I::from_elem(IxDyn(&[]), v[0])
                                    } else {
                                        I::from_shape_vec(IxDyn(&[v.len()]), v).unwrap()
                                    }
                                };
                                let coef: Vec<f64> = tl
                                    .iter()
                                    .map(|&l| 1.0 / (n as f64 * (l.max(1) as f64)))
                                    .collect();
                                let call = CtcCall {
                                    targets,
                                    input_lengths: lens(il),
                                    target_lengths: lens(tl),
                                    blank,
                                    zero_infinity,
                                };
                                let none_shape = batch.map_or(vec![], |n| vec![n]);
                                Spec::new(call, vec![z], vec![("log_probs", 0)])
                                    .none_shape(none_shape)
                                    .mean(Mean::Linear(coef))
                            })
                    },
                )
            },
        )
        .boxed()
}

loss_properties! {
    /// `ctc_loss`: batched `(T, N, C)` with padded or concatenated targets, unbatched `(T, C)`
    /// with `(S)` or `(1, S)` targets and 0-d or `(1,)` lengths; any blank; empty targets; `input_lengths < T`;
    /// `zero_infinity` with infeasible alignments. The gradient is checked against the finite
    /// difference with respect to the logits (`log_probs = log_softmax(logits)`).
    ctc: ctc_case()
}

// =================================================================================================
// Ranking: margin_ranking, hinge_embedding, cosine_embedding.
// =================================================================================================

#[derive(Clone, Debug)]
enum RankCall {
    MarginRanking { margin: f64 },
    Hinge { margin: f64 },
    Cosine { margin: f64 },
}

impl Call for RankCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        match *self {
            RankCall::MarginRanking { margin } => {
                margin_ranking_loss(f[0].view(), f[1].view(), f[2].view(), margin, r.plain(), g)
            }
            RankCall::Hinge { margin } => {
                hinge_embedding_loss(f[0].view(), f[1].view(), margin, r.plain(), g)
            }
            RankCall::Cosine { margin } => {
                cosine_embedding_loss(f[0].view(), f[1].view(), f[2].view(), margin, r.plain(), g)
            }
        }
    }
}

fn margin_ranking_case() -> BoxedStrategy<Spec<RankCall>> {
    let margin = prop_oneof![Just(0.0), (-1.0..1.5).prop_map(r32)];
    (dims(0, 2, 6), margin)
        .prop_flat_map(|(full, margin)| {
            let t = |s: Vec<usize>| {
                prop_oneof![tensor_of(s.clone(), vec![-1.0, 1.0]), tensor(s, -1.5, 1.5)]
            };
            (
                sub_shape(full.clone(), true).prop_flat_map(|s| tensor(s, -3.0, 3.0)),
                sub_shape(full.clone(), true).prop_flat_map(|s| tensor(s, -3.0, 3.0)),
                sub_shape(full, true).prop_flat_map(t),
            )
                .prop_map(move |(x1, x2, y)| {
                    let shape = bshape(&[x1.shape(), x2.shape(), y.shape()]);
                    let (b1, b2, by) = (bcast(&x1, &shape), bcast(&x2, &shape), bcast(&y, &shape));
                    let smooth = b1
                        .iter()
                        .zip(&b2)
                        .zip(&by)
                        .all(|((a, b), y)| far(-y * (a - b) + margin, 0.0));
                    Spec::new(
                        RankCall::MarginRanking { margin },
                        vec![x1, x2, y],
                        vec![("input1", 0), ("input2", 1), ("target", 2)],
                    )
                    .none_shape(shape)
                    .smooth(smooth)
                })
        })
        .boxed()
}

loss_properties! {
    /// `margin_ranking_loss`: same-rank tensors broadcast, ±1 or arbitrary (differentiable)
    /// targets, any margin.
    margin_ranking: margin_ranking_case()
}

fn hinge_embedding_case() -> BoxedStrategy<Spec<RankCall>> {
    let margin = prop_oneof![Just(1.0), (-0.5..2.0).prop_map(r32)];
    (broadcast_pair_shapes(), margin)
        .prop_flat_map(|((xs, ys), margin)| {
            (
                tensor(xs.clone(), -1.0, 3.0),
                // ±1 mostly, and the values other than ±1 that give x + max(0, margin − x).
                tensor_of(ys.clone(), vec![1.0, 1.0, -1.0, -1.0, 0.0, 0.5, 2.0]),
            )
                .prop_map(move |(x, y)| {
                    let shape = bshape(&[&xs, &ys]);
                    let (bx, by) = (bcast(&x, &shape), bcast(&y, &shape));
                    let smooth = bx
                        .iter()
                        .zip(&by)
                        .all(|(&x, &y)| y == 1.0 || far(margin - x, 0.0));
                    Spec::new(RankCall::Hinge { margin }, vec![x, y], vec![("input", 0)])
                        .none_shape(shape)
                        .smooth(smooth)
                })
        })
        .boxed()
}

loss_properties! {
    /// `hinge_embedding_loss`: broadcasting both ways, targets ±1 and others, any margin.
    hinge_embedding: hinge_embedding_case()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cosine_embedding_case() -> BoxedStrategy<Spec<RankCall>> {
    let margin = prop_oneof![Just(0.0), (-1.0..1.0).prop_map(r32)];
    let batched = prop_oneof![1 => Just(None), 3 => size(6).prop_map(Some)];
    (batched, size(6), margin, any::<(bool, bool, bool)>())
        .prop_flat_map(|(n, d, margin, (row1, row2, rowt))| {
            // Batched: each of input1, input2 (and target) has N rows or 1.
            let (s1, s2, st) = match n {
                None => (vec![d], vec![d], vec![]),
                Some(n) => {
                    let k = |one: bool| if one { 1 } else { n };
                    (vec![k(row1), d], vec![k(row2), d], vec![k(rowt)])
                }
            };
            (
                tensor(s1, -2.0, 2.0),
                tensor(s2, -2.0, 2.0),
                tensor_of(st, vec![1.0, 1.0, -1.0, -1.0, 0.0]),
            )
                .prop_map(move |(a, b, y)| {
                    let rows_ab = bshape(&[a.shape(), b.shape()]);
                    let (ba, bb) = (bcast(&a, &rows_ab), bcast(&b, &rows_ab));
                    let cos: Vec<f64> = rows(&ba)
                        .iter()
                        .zip(rows(&bb))
                        .map(|(u, v)| dot(u, &v) / (norm(u) * norm(&v)))
                        .collect();
                    let cshape = rows_ab[..rows_ab.len() - 1].to_vec();
                    let cos = A::from_shape_vec(IxDyn(&cshape), cos).unwrap();
                    let shape = bshape(&[&cshape, y.shape()]);
                    let (bc, by) = (bcast(&cos, &shape), bcast(&y, &shape));
                    let smooth = rows(&a).iter().chain(&rows(&b)).all(|r| norm(r) > 0.1)
                        && bc
                            .iter()
                            .zip(&by)
                            .all(|(&c, &y)| y != -1.0 || far(c - margin, 0.0));
                    Spec::new(
                        RankCall::Cosine { margin },
                        vec![a, b, y],
                        vec![("input1", 0), ("input2", 1)],
                    )
                    .none_shape(shape)
                    .smooth(smooth)
                })
        })
        .boxed()
}

loss_properties! {
    /// `cosine_embedding_loss`: `(N, D)` with rows broadcast (`(1, D)`), `(N)` or `(1,)`
    /// targets; unbatched `(D), (D), ()`; targets ±1 and 0; occasionally `D = 0`.
    cosine_embedding: cosine_embedding_case()
}

// =================================================================================================
// triplet_margin, triplet_margin_with_distance.
// =================================================================================================

#[derive(Clone, Copy, Debug)]
enum TripletDistance {
    PNorm { p: f64, eps: f64 },
    Cosine,
}

#[derive(Clone, Debug)]
struct TripletCall {
    /// `None`: `triplet_margin_loss` with this p-norm; `Some`: the `_with_distance` kernel.
    with_distance: Option<DistanceFunction>,
    p: f64,
    eps: f64,
    margin: f64,
    swap: bool,
}

impl Call for TripletCall {
    fn call<T: Real>(&self, f: &[ArrayD<T>], r: Red, g: bool) -> Result<LossOutput<T>, LossError> {
        let (a, p, n) = (f[0].view(), f[1].view(), f[2].view());
        match self.with_distance {
            None => triplet_margin_loss(
                a,
                p,
                n,
                TripletMarginOptions {
                    margin: self.margin,
                    p: self.p,
                    eps: self.eps,
                    swap: self.swap,
                    reduction: r.plain(),
                    grad: g,
                },
            ),
            Some(d) => triplet_margin_with_distance_loss(
                a,
                p,
                n,
                TripletMarginWithDistanceOptions {
                    distance_function: d,
                    margin: self.margin,
                    swap: self.swap,
                    reduction: r.plain(),
                    grad: g,
                },
            ),
        }
    }
}

/// The test's own distance of two broadcast rows, and whether it is away from its kinks.
fn row_distance(x: &[f64], y: &[f64], d: TripletDistance) -> (f64, bool) {
    match d {
        TripletDistance::PNorm { p, eps } => {
            let u: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b + eps).collect();
            let mut smooth = u.iter().all(|&v| v.abs() > KINK);
            let mut abs: Vec<f64> = u.iter().map(|v| v.abs()).collect();
            abs.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let dist = if p == 0.0 {
                abs.iter().filter(|&&v| v != 0.0).count() as f64
            } else if p == f64::INFINITY {
                if abs.len() >= 2 {
                    smooth &= abs[0] - abs[1] > KINK;
                }
                abs.first().copied().unwrap_or(0.0)
            } else if p == f64::NEG_INFINITY {
                let k = abs.len();
                if k >= 2 {
                    smooth &= abs[k - 2] - abs[k - 1] > KINK;
                }
                abs.last().copied().unwrap_or(0.0)
            } else {
                abs.iter().map(|v| v.powf(p)).sum::<f64>().powf(1.0 / p)
            };
            (dist, smooth)
        }
        TripletDistance::Cosine => {
            let (nx, ny) = (norm(x), norm(y));
            (
                1.0 - dot(x, y) / (nx.max(1e-8) * ny.max(1e-8)),
                nx > 0.1 && ny > 0.1,
            )
        }
    }
}

/// The distances of a pair over its broadcast last dimension (shape: the pair's batch shape)
/// and whether all are away from kinks.
fn pair_distance(x: &A, y: &A, d: TripletDistance) -> (A, bool) {
    let shape = bshape(&[x.shape(), y.shape()]);
    let (bx, by) = (bcast(x, &shape), bcast(y, &shape));
    let mut smooth = true;
    let dist: Vec<f64> = rows(&bx)
        .iter()
        .zip(rows(&by))
        .map(|(u, v)| {
            let (dd, s) = row_distance(u, &v, d);
            smooth &= s;
            dd
        })
        .collect();
    let batch = shape[..shape.len().saturating_sub(1)].to_vec();
    (A::from_shape_vec(IxDyn(&batch), dist).unwrap(), smooth)
}

/// The triplet spec: kinks at the hinge, swap ties and the distances' own kinks.
fn triplet_spec(call: TripletCall, dist: TripletDistance, a: A, p: A, n: A) -> Spec<TripletCall> {
    let (dap, s1) = pair_distance(&a, &p, dist);
    let (dan, s2) = pair_distance(&a, &n, dist);
    let (dpn, s3) = pair_distance(&p, &n, dist);
    let mut shapes = vec![dap.shape().to_vec(), dan.shape().to_vec()];
    if call.swap {
        shapes.push(dpn.shape().to_vec());
    }
    let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    let shape = bshape(&refs);
    let (dap, dan) = (bcast(&dap, &shape), bcast(&dan, &shape));
    let mut smooth = s1 && s2;
    let dneg: Vec<f64> = if call.swap {
        smooth &= s3;
        let dpn = bcast(&dpn, &shape);
        dan.iter()
            .zip(&dpn)
            .map(|(&x, &y)| {
                smooth &= far(x, y);
                x.min(y)
            })
            .collect()
    } else {
        dan.iter().copied().collect()
    };
    smooth &= dap
        .iter()
        .zip(&dneg)
        .all(|(&ap, &neg)| far(call.margin + ap - neg, 0.0));
    Spec::new(
        call,
        vec![a, p, n],
        vec![("anchor", 0), ("positive", 1), ("negative", 2)],
    )
    .none_shape(shape)
    .smooth(smooth)
}

/// Anchor, positive, negative: same rank 1..=3 (`(D)`, `(N, D)`, `(B, N, D)`), each size
/// kept or 1 (the last dimension too: a size-1 last dim is repeated), `D ≥ 1`.
fn triplet_tensors() -> BoxedStrategy<(A, A, A)> {
    let full = prop_oneof![
        1 => Just(vec![]),
        8 => (dims(0, 2, 5), size(6)).prop_map(|(mut full, d)| {
            full.push(d);
            full
        }),
    ];
    full.prop_flat_map(|full| {
        let t = |full: Vec<usize>| sub_shape(full, true).prop_flat_map(|s| tensor(s, -2.0, 2.0));
        (t(full.clone()), t(full.clone()), t(full))
    })
    .boxed()
}

/// Whether some pair of the triplet has an empty last dimension (no value for `p < 0` or
/// `p = ±∞`, which the kernel rejects as documented).
fn empty_last_dim(a: &A, p: &A, n: &A) -> bool {
    [a, p, n].iter().any(|t| t.shape().last() == Some(&0))
}

fn triplet_margin_case() -> BoxedStrategy<Spec<TripletCall>> {
    let p = prop::sample::select(vec![
        2.0,
        2.0,
        1.0,
        3.0,
        1.5,
        0.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -1.0,
    ]);
    // eps is not validated: negative values too.
    let eps = prop_oneof![Just(1e-6), Just(0.0), (-1e-3..1e-3).prop_map(r32)];
    let margin = prop_oneof![Just(1.0), (0.05..2.0).prop_map(r32)];
    (triplet_tensors(), p, eps, margin, any::<bool>())
        .prop_map(|((a, pos_, n), p, eps, margin, swap)| {
            let p = if empty_last_dim(&a, &pos_, &n) && (p < 0.0 || p.is_infinite()) {
                2.0
            } else {
                p
            };
            let call = TripletCall {
                with_distance: None,
                p,
                eps,
                margin,
                swap,
            };
            triplet_spec(call, TripletDistance::PNorm { p, eps }, a, pos_, n)
        })
        .boxed()
}

loss_properties! {
    /// `triplet_margin_loss`: p ∈ {0, ½, 1, 1.5, 2, 3, ±∞, −1}, eps, margin, swap; same-rank
    /// tensors (0-d to 3-D, last dimension possibly 1 or empty) broadcast pairwise.
    triplet_margin: triplet_margin_case()
}

fn triplet_margin_with_distance_case() -> BoxedStrategy<Spec<TripletCall>> {
    let dist = prop_oneof![
        Just(DistanceFunction::PairwiseDistance),
        Just(DistanceFunction::CosineDistance)
    ];
    let margin = prop_oneof![Just(1.0), (0.05..2.0).prop_map(r32)];
    (triplet_tensors(), dist, margin, any::<bool>())
        .prop_map(|((a, p, n), dist, margin, swap)| {
            let call = TripletCall {
                with_distance: Some(dist),
                p: 2.0,
                eps: 1e-6,
                margin,
                swap,
            };
            let d = match dist {
                DistanceFunction::PairwiseDistance => TripletDistance::PNorm { p: 2.0, eps: 1e-6 },
                DistanceFunction::CosineDistance => TripletDistance::Cosine,
            };
            triplet_spec(call, d, a, p, n)
        })
        .boxed()
}

loss_properties! {
    /// `triplet_margin_with_distance_loss`: the pairwise (p = 2) and cosine distances, margin,
    /// swap.
    triplet_margin_with_distance: triplet_margin_with_distance_case()
}

// =================================================================================================
// Relations between kernels, and documented quirks (beyond the five properties above).
// =================================================================================================

/// The elements of `a` as a 1-D tensor, row-major.
fn flatten(a: &A) -> A {
    A::from_shape_vec(IxDyn(&[a.len()]), a.iter().copied().collect()).unwrap()
}

/// `(N, C, d1..dK)` → `(N·S, C)`: the rows of classes of each position, in position order.
fn positions_as_rows(x: &A) -> A {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    let v: Vec<f64> = x.iter().copied().collect();
    let mut out = Vec::with_capacity(v.len());
    for nn in 0..n {
        for ss in 0..s {
            out.extend((0..c).map(|cc| v[nn * c * s + cc * s + ss]));
        }
    }
    A::from_shape_vec(IxDyn(&[n * s, c]), out).unwrap()
}

/// A K-dimensional cross-entropy call large enough to span several of the kernel's tiles of
/// positions (256 positions for few classes, `16384 / C` for many).
#[derive(Clone, Debug)]
struct KdimCase {
    x: A,
    target: Result<I, A>,
    weight: Option<A>,
    ignore_index: i64,
    label_smoothing: f64,
}

fn kdim_case() -> BoxedStrategy<KdimCase> {
    let classes_spatial = prop_oneof![
        (1..=6usize, 1..=3usize, 90..=260usize),
        (100..=200usize, 1..=2usize, 60..=150usize),
    ];
    (
        classes_spatial,
        1..=2usize,
        any::<(bool, bool)>(),
        label_smoothing(),
    )
        .prop_flat_map(|((c, d1, d2), n, (index_mode, weighted), ls)| {
            let xs = vec![n, c, d1, d2];
            let w = if weighted {
                tensor(vec![c], 0.2, 2.0).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            let target = if index_mode {
                ignore_index(c)
                    .prop_flat_map(move |ig| {
                        index_targets(n * d1 * d2, c, ig).prop_map(move |t| {
                            (Ok(I::from_shape_vec(IxDyn(&[n, d1, d2]), t).unwrap()), ig)
                        })
                    })
                    .boxed()
            } else {
                tensor(xs.clone(), 0.0, 1.0)
                    .prop_map(|p| (Err(p), -100))
                    .boxed()
            };
            (tensor(xs, -4.0, 4.0), target, w).prop_map(move |(x, (target, ig), weight)| KdimCase {
                x,
                target,
                weight,
                ignore_index: ig,
                label_smoothing: ls,
            })
        })
        .boxed()
}

fn ce(
    x: &A,
    target: &Result<I, A>,
    w: &Option<A>,
    ig: i64,
    ls: f64,
    r: Reduction,
) -> LossOutput<f64> {
    let t = match target {
        Ok(t) => CeTarget::Indices(t.view()),
        Err(p) => CeTarget::Probs(p.view()),
    };
    cross_entropy(
        x.view(),
        t,
        CrossEntropyOptions {
            weight: w.as_ref().map(|w| w.view()),
            ignore_index: ig,
            label_smoothing: ls,
            reduction: r,
            grad: true,
        },
    )
    .unwrap()
}

mod cross_entropy_relations {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..config() })]

        /// A K-dimensional input gives, position by position, the losses and gradients of its
        /// positions laid out as `(N·S, C)` rows (across the kernel's tile boundaries).
        #[test]
        fn k_dimensional_input_equals_its_positions_as_rows(case in kdim_case()) {
            let KdimCase { x, target, weight, ignore_index, label_smoothing } = &case;
            let rows_x = positions_as_rows(x);
            let rows_t = match target {
                Ok(t) => Ok(I::from_shape_vec(IxDyn(&[t.len()]), t.iter().copied().collect()).unwrap()),
                Err(p) => Err(positions_as_rows(p)),
            };
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let k = ce(x, target, weight, *ignore_index, *label_smoothing, r);
                let flat = ce(&rows_x, &rows_t, weight, *ignore_index, *label_smoothing, r);
                all_close(&format!("{r:?} loss"), &flatten(&k.loss), &flatten(&flat.loss), 1e-12, 1e-13)?;
                for ((name, gk), (_, gf)) in k.grads.iter().zip(&flat.grads) {
                    let gk = if gk.ndim() == 4 { positions_as_rows(gk) } else { gk.clone() };
                    all_close(&format!("{r:?} d/d{name}"), &gk, gf, 1e-12, 1e-15)?;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// Class indices with label smoothing ε give the losses of the one-hot probability
        /// target with the same ε, and of the smoothed one-hot `(1 − ε)·onehot + ε/C` without
        /// smoothing (docs/losses.md consistency facts); the means agree when unweighted (the
        /// weighted means have different denominators).
        #[test]
        fn class_indices_equal_their_one_hot_probabilities(
            spec in classification(false).prop_filter("index mode", |s| s.call.indices.is_some())
        ) {
            let call = &spec.call;
            let t = call.indices.as_ref().unwrap();
            let x = &spec.floats[0];
            let w = call.weighted.then(|| spec.floats[1].clone());
            let ls = call.label_smoothing;
            // Nothing ignored: one-hot rows exist for every position.
            prop_assume!(t.iter().all(|&k| k != call.ignore_index));
            let c = if x.ndim() == 1 { x.shape()[0] } else { x.shape()[1] };
            let s: usize = if x.ndim() > 2 { x.shape()[2..].iter().product() } else { 1 };
            let mut onehot = A::zeros(x.raw_dim());
            let mut smoothed = A::from_elem(x.raw_dim(), ls / c as f64);
            for (pos, &k) in t.iter().enumerate() {
                let at = (pos / s) * c * s + k as usize * s + pos % s;
                *onehot.iter_mut().nth(at).unwrap() = 1.0;
                *smoothed.iter_mut().nth(at).unwrap() += 1.0 - ls;
            }
            let reds: &[Reduction] = if w.is_some() {
                &[Reduction::None, Reduction::Sum]
            } else {
                &[Reduction::None, Reduction::Sum, Reduction::Mean]
            };
            for &r in reds {
                let a = ce(x, &Ok(t.clone()), &w, call.ignore_index, ls, r);
                for (what, p, eps) in [("one-hot", &onehot, ls), ("smoothed one-hot", &smoothed, 0.0)] {
                    let b = ce(x, &Err(p.clone()), &w, -100, eps, r);
                    let want = b.loss.clone();
                    all_close(&format!("{r:?} {what} loss"), &a.loss, &want, 1e-12, 1e-13)?;
                    all_close(
                        &format!("{r:?} {what} d/dinput"),
                        a.grad("input").unwrap(),
                        b.grad("input").unwrap(),
                        1e-12,
                        1e-13,
                    )?;
                }
            }
        }
    }
}

/// A linear cross-entropy call with `N` up to 2100 rows: several of the kernel's 1024-row
/// chunks.
fn linear_ce_chunked_case() -> BoxedStrategy<Spec<LinearCeCall>> {
    linear_cross_entropy_case()
        .prop_flat_map(|spec| {
            // Re-draw the batch size large, keeping options and features.
            let call = spec.call.clone();
            let (feat, c) = (spec.floats[1].shape()[1], spec.floats[1].shape()[0]);
            (
                prop_oneof![
                    Just(spec.floats[0].shape().first().copied().unwrap_or(0)),
                    1000..=2100usize
                ],
                Just(spec),
                Just(call),
                Just((feat, c)),
            )
        })
        .prop_flat_map(|(n, spec, call, (feat, c))| {
            let index_mode = call.indices.is_some();
            let ig = call.ignore_index;
            (
                tensor(vec![n, feat], -2.0, 2.0),
                tensor(vec![n, c], 0.0, 1.0),
                index_targets(n, c, ig),
                Just(spec),
            )
                .prop_map(move |(x, p, t, mut spec)| {
                    spec.floats[0] = x;
                    let mut call = spec.call.clone();
                    if index_mode {
                        call.indices = Some(I::from_shape_vec(IxDyn(&[n]), t).unwrap());
                    } else {
                        let k = 2 + call.bias as usize;
                        spec.floats[k] = p;
                    }
                    spec.call = call;
                    spec.none_shape = vec![n];
                    spec
                })
        })
        .boxed()
}

mod linear_cross_entropy_relations {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..config() })]

        /// `linear_cross_entropy(x, W, b, t)` is `cross_entropy(x·Wᵀ + b, t)`, with the
        /// logits' gradient `G` chained: `d/dx = G·W`, `d/dW = Gᵀ·x`, `d/db = Σ_rows G`
        /// (batched, up to three 1024-row chunks).
        #[test]
        fn equals_cross_entropy_of_the_explicit_logits(spec in linear_ce_chunked_case()) {
            let call = &spec.call;
            let x = &spec.floats[0];
            let lw = &spec.floats[1];
            prop_assume!(x.ndim() == 2);
            let (n, feat) = (x.shape()[0], x.shape()[1]);
            let c = lw.shape()[0];
            let mut k = 2;
            let bias = call.bias.then(|| { k += 1; spec.floats[k - 1].clone() });
            let probs = call.indices.is_none().then(|| { k += 1; spec.floats[k - 1].clone() });
            let w = call.weighted.then(|| spec.floats[k].clone());
            let mut logits = A::zeros(IxDyn(&[n, c]));
            for i in 0..n {
                for j in 0..c {
                    let mut v = bias.as_ref().map_or(0.0, |b| b[[j]]);
                    for f in 0..feat {
                        v += x[[i, f]] * lw[[j, f]];
                    }
                    logits[[i, j]] = v;
                }
            }
            let target = match (&call.indices, probs) {
                (Some(t), _) => Ok(t.clone()),
                (None, Some(p)) => Err(p),
                _ => unreachable!(),
            };
            for r in PLAIN {
                let got = call.call(&spec.floats, r, true).unwrap();
                let want = ce(&logits, &target, &w, call.ignore_index, call.label_smoothing, r.plain());
                let scale = 1e-11 * (1.0 + abs_total(&want.loss));
                all_close(&format!("{r:?} loss"), &got.loss, &want.loss, 1e-11, scale)?;
                let g = want.grad("input").unwrap();
                let mut dx = A::zeros(IxDyn(&[n, feat]));
                let mut dw = A::zeros(IxDyn(&[c, feat]));
                let mut db = A::zeros(IxDyn(&[c]));
                for i in 0..n {
                    for j in 0..c {
                        db[[j]] += g[[i, j]];
                        for f in 0..feat {
                            dx[[i, f]] += g[[i, j]] * lw[[j, f]];
                            dw[[j, f]] += g[[i, j]] * x[[i, f]];
                        }
                    }
                }
                let mut expected = vec![("input", dx), ("linear_weight", dw)];
                if bias.is_some() {
                    expected.push(("linear_bias", db));
                }
                for (name, want) in &expected {
                    let atol = 1e-11 * (1.0 + max_abs(want));
                    all_close(&format!("{r:?} d/d{name}"), got.grad(name).unwrap(), want, 1e-10, atol)?;
                }
            }
        }
    }
}

mod regression_relations {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// `smooth_l1_loss` with β = 0 is exactly `l1_loss`; `huber_loss` with δ is
        /// `δ · smooth_l1_loss` with β = δ (docs/losses.md), gradients included.
        #[test]
        fn smooth_l1_and_huber_relate_to_l1_and_each_other(
            spec in regression(delta().prop_map(|delta| RegKind::Huber { delta }).boxed(), false)
        ) {
            let RegKind::Huber { delta } = spec.call else { unreachable!() };
            for r in PLAIN {
                let l1 = RegKind::L1.call(&spec.floats, r, true).unwrap();
                let sl0 = RegKind::SmoothL1 { beta: 0.0 }.call(&spec.floats, r, true).unwrap();
                prop_assert_eq!(bits(&sl0.loss), bits(&l1.loss), "{:?}: smooth_l1(β=0) vs l1", r);
                for ((_, a), (_, b)) in sl0.grads.iter().zip(&l1.grads) {
                    prop_assert_eq!(bits(a), bits(b));
                }
                let hub = spec.call.call(&spec.floats, r, true).unwrap();
                let sl = RegKind::SmoothL1 { beta: delta }.call(&spec.floats, r, true).unwrap();
                let scaled = sl.loss.mapv(|v| v * delta);
                all_close(&format!("{r:?} huber vs δ·smooth_l1"), &hub.loss, &scaled, 1e-12, 1e-14)?;
                for ((name, a), (_, b)) in hub.grads.iter().zip(&sl.grads) {
                    all_close(&format!("{r:?} d/d{name}"), a, &b.mapv(|v| v * delta), 1e-12, 1e-14)?;
                }
            }
        }
    }
}

mod triplet_relations {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// `triplet_margin_with_distance_loss` with the default pairwise distance is
        /// numerically identical to `triplet_margin_loss` with p = 2, eps = 1e-6.
        #[test]
        fn default_distance_equals_triplet_margin_with_p2(
            spec in triplet_margin_with_distance_case()
                .prop_filter("pairwise", |s| s.call.with_distance == Some(DistanceFunction::PairwiseDistance))
        ) {
            let mut plain = spec.call.clone();
            plain.with_distance = None;
            for r in PLAIN {
                let a = spec.call.call(&spec.floats, r, true).unwrap();
                let b = plain.call(&spec.floats, r, true).unwrap();
                prop_assert_eq!(bits(&a.loss), bits(&b.loss), "{:?} loss", r);
                for ((name, ga), (_, gb)) in a.grads.iter().zip(&b.grads) {
                    prop_assert_eq!(bits(ga), bits(gb), "{:?} d/d{}", r, name);
                }
            }
        }
    }
}

mod kl_div_target_gradient {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// With probabilities as target, a zero target contributes 0 to the loss and its
        /// gradient is NaN (PyTorch's `xlogy` derivative); elsewhere it is finite.
        #[test]
        fn is_nan_exactly_where_the_target_is_zero(
            (x, y) in dims(0, 3, 5).prop_flat_map(|s| {
                (tensor(s.clone(), -4.0, 0.0), tensor_of(s, vec![0.0, 0.25, 0.5, 1.0]))
            })
        ) {
            let out = kl_div(x.view(), y.view(), false, KlReduction::None, true).unwrap();
            for (i, (&yi, &li)) in y.iter().zip(out.loss.iter()).enumerate() {
                if yi == 0.0 {
                    prop_assert_eq!(li, 0.0, "loss at a zero target [{}]", i);
                }
            }
            let gy = out.grad("target").unwrap();
            for (i, (&yi, &g)) in y.iter().zip(gy.iter()).enumerate() {
                prop_assert_eq!(g.is_nan(), yi == 0.0, "d/dtarget[{}] = {} at target {}", i, g, yi);
            }
            prop_assert!(out.grad("input").unwrap().iter().all(|g| g.is_finite()));
        }
    }
}

mod ctc_gradient_quirk {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// The returned gradient is PyTorch's `exp(log_probs) − γ` (times the upstream
        /// gradient) on the frames `t < T_b`: subtracting `exp(log_probs)·ĝ_b` there gives the
        /// finite-difference derivative with respect to `log_probs` itself (`−γ`).
        #[test]
        fn minus_exp_log_probs_is_the_true_partial_derivative(spec in ctc_case()) {
            let call = &spec.call;
            let lp = log_softmax_last(&spec.floats[0]);
            let lp_shape = lp.shape().to_vec();
            let (frames, n, c) = match lp_shape[..] {
                [t, n, c] => (t, n, c),
                [t, c] => (t, 1, c),
                _ => unreachable!(),
            };
            let il: Vec<usize> = call.input_lengths.iter().map(|&v| v as usize).collect();
            let tl: Vec<usize> = call.target_lengths.iter().map(|&v| v as usize).collect();
            let run = |lp: &A, r: Reduction, g: bool| {
                ctc_loss(lp.view(), call.targets.view(), call.input_lengths.view(), call.target_lengths.view(), CtcOptions { blank: call.blank, zero_infinity: call.zero_infinity, reduction: r, grad: g }).unwrap()
            };
            let none = run(&lp, Reduction::None, false).loss;
            // Infinite losses (zeroed or not) have no derivative to compare with.
            let unzeroed = ctc_loss(lp.view(), call.targets.view(), call.input_lengths.view(), call.target_lengths.view(), CtcOptions { blank: call.blank, zero_infinity: false, reduction: Reduction::None, grad: false }).unwrap();
            prop_assume!(unzeroed.loss.iter().all(|v| v.is_finite()));
            for r in [Reduction::None, Reduction::Mean, Reduction::Sum] {
                let out = run(&lp, r, true);
                let g = out.grad("log_probs").unwrap();
                let mut fl = lp.clone();
                for t in 0..frames {
                    for b in 0..n {
                        for k in 0..c {
                            let at = (t * n + b) * c + k;
                            let up = match r {
                                Reduction::Mean => 1.0 / (n as f64 * tl[b].max(1) as f64),
                                _ => 1.0,
                            };
                            let lp0 = *lp.iter().nth(at).unwrap();
                            let exp_part = if t < il[b] { lp0.exp() * up } else { 0.0 };
                            *fl.iter_mut().nth(at).unwrap() = lp0 + H;
                            let fp = total(&run(&fl, r, false).loss);
                            *fl.iter_mut().nth(at).unwrap() = lp0 - H;
                            let fm = total(&run(&fl, r, false).loss);
                            *fl.iter_mut().nth(at).unwrap() = lp0;
                            let num = (fp - fm) / (2.0 * H);
                            let ana = g.iter().nth(at).unwrap() - exp_part;
                            prop_assert!(
                                close(ana, num, 1e-5, 1e-7 * (1.0 + abs_total(&none))),
                                "{:?}: frame {} seq {} class {}: grad − exp(lp)·ĝ = {} but d/dlog_probs = {}",
                                r, t, b, k, ana, num
                            );
                        }
                    }
                }
            }
        }
    }
}

mod weighted_mean_of_an_empty_broadcast {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// `l1_loss`/`mse_loss` with `weight`: when input and target broadcast to an empty
        /// shape while the weight (the input's shape) is not empty, PyTorch's mean is
        /// `Σ w·ℓ / Σ w = 0 / Σ w = 0` and every gradient is 0 (torch 2.15:
        /// `F.l1_loss(zeros(2,3), zeros(0,2,3), weight=full((2,3), 0.2))` → `0.0`).
        #[test]
        fn is_zero_with_zero_gradients_like_pytorch(
            (kind, x, y, w) in (prop::sample::select(vec![RegKind::L1, RegKind::Mse]), dims(0, 2, 4))
                .prop_flat_map(|(kind, xs)| {
                    let xs: Vec<usize> = xs.into_iter().map(|d| d.max(1)).collect();
                    let ys: Vec<usize> = std::iter::once(0).chain(xs.iter().copied()).collect();
                    (Just(kind), tensor(xs.clone(), -3.0, 3.0), tensor(ys, -3.0, 3.0), tensor(xs, 0.2, 2.0))
                })
        ) {
            let out = kind.call(&[x, y, w], Red::Mean, true).unwrap();
            prop_assert_eq!(*out.loss.first().unwrap(), 0.0, "{:?}: mean {:?}", kind, out.loss);
            for (name, g) in &out.grads {
                prop_assert!(g.iter().all(|&v| v == 0.0), "{:?}: d/d{} = {:?}", kind, name, g);
            }
        }
    }
}
