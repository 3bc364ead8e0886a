//! Every loss of the crate at three sizes — about 1e3, 1e5 and 1e7 elements — forward alone
//! and forward with every gradient the kernel returns, in `f32` and `f64`, `reduction="mean"`
//! (`batchmean` for `kl_div`).
//!
//! ```sh
//! cargo bench -p lossd-kernels --bench losses                      # everything, a few minutes
//! cargo bench -p lossd-kernels --bench losses -- mse_loss         # one loss (divan filters are regexes)
//! cargo bench -p lossd-kernels --bench losses -- 'cross_entropy::forward::f32'
//! cargo bench -p lossd-kernels --bench losses -- --max-time 10 --sample-count 100   # a quiet machine
//! LOSSD_BENCH_SHAPES=1 cargo bench -p lossd-kernels --bench losses # print the shapes, run nothing
//! ```
//!
//! "Elements" is the size of the loss's main input tensor (`input`, `log_probs`, `input1`,
//! `anchor`); for `linear_cross_entropy` it is the number of logits `N × C` the fused kernel
//! computes (`input` is `N × 256`, `linear_weight` is `1000 × 256`). The exact shapes are in
//! [`shape`] and printed with `LOSSD_BENCH_SHAPES=1`; `bench/compare_torch.py` reads that list,
//! so PyTorch is timed on the same shapes.
//!
//! Each benchmark stops after `MAX_TIME` seconds (divan's `max_time`, strict), so the 1e7
//! cases take a handful of samples — one for the slowest — and the whole file runs in a few
//! minutes. Options given on the command line (`--max-time`, `--sample-count`, `--min-time`)
//! override the ones written here.
//!
//! Inputs are deterministic (SplitMix64), generated outside the timed region.

use std::fmt;

use divan::{Bencher, black_box};
use lossd_kernels::classification::{
    binary_cross_entropy::binary_cross_entropy,
    binary_cross_entropy_with_logits::binary_cross_entropy_with_logits,
    cross_entropy::{CeTarget, CrossEntropyOptions, cross_entropy},
    linear_cross_entropy::linear_cross_entropy,
    multi_margin::multi_margin_loss,
    multilabel_margin::multilabel_margin_loss,
    multilabel_soft_margin::multilabel_soft_margin_loss,
    nll::nll_loss,
    soft_margin::soft_margin_loss,
};
use lossd_kernels::ndarray::{ArrayD, IxDyn};
use lossd_kernels::probabilistic::{
    ctc::{CtcOptions, ctc_loss},
    gaussian_nll::{Var, gaussian_nll_loss},
    kl_div::{KlReduction, kl_div},
    poisson_nll::poisson_nll_loss,
};
use lossd_kernels::ranking::{
    cosine_embedding::cosine_embedding_loss,
    hinge_embedding::hinge_embedding_loss,
    margin_ranking::margin_ranking_loss,
    triplet_margin::{TripletMarginOptions, triplet_margin_loss},
    triplet_margin_with_distance::{
        DistanceFunction, TripletMarginWithDistanceOptions, triplet_margin_with_distance_loss,
    },
};
use lossd_kernels::regression::{
    huber::huber_loss, l1::l1_loss, mse::mse_loss, smooth_l1::smooth_l1_loss,
};
use lossd_kernels::{LossError, LossOutput, Real, Reduction};

/// Seconds of sampling per benchmark (divan stops at the first sample past it).
const MAX_TIME: f64 = 1.0;

fn main() {
    lossd_kernels::alloc::keep_freed_memory();
    if std::env::var_os("LOSSD_BENCH_SHAPES").is_some() {
        print_shapes();
        return;
    }
    divan::main();
}

/// The three sizes, named by their order of magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    K1,
    K100,
    M10,
}

impl Size {
    const ALL: [Size; 3] = [Size::K1, Size::K100, Size::M10];

    fn elements(self) -> usize {
        match self {
            Size::K1 => 1_000,
            Size::K100 => 100_000,
            Size::M10 => 10_000_000,
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Size::K1 => "1e3",
            Size::K100 => "1e5",
            Size::M10 => "1e7",
        })
    }
}

/// Classes of `cross_entropy` / `nll_loss`.
const C_CE: usize = 100;
/// Classes of the margin losses.
const C_MARGIN: usize = 10;
/// Embedding width of the ranking losses.
const D_EMB: usize = 128;
/// `linear_cross_entropy`: input features and classes.
const LCE_IN: usize = 256;
const LCE_C: usize = 1000;
/// `ctc_loss` classes (blank = 0).
const CTC_C: usize = 64;

/// How a loss's tensors are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `(N,)` for every tensor.
    Flat,
    /// `(N, C)` scores, with one class index (or one row of targets) per sample.
    Classes(usize),
    /// `(N, D)` embeddings.
    Embedding(usize),
    /// `(N, 256)` features, `(1000, 256)` weights.
    Linear,
    /// `(T, N, C)` log-probabilities, `(N, S)` targets.
    Ctc,
}

/// Every loss with its layout, in the order of the service's catalog.
const LOSSES: [(&str, Layout); 22] = [
    ("l1_loss", Layout::Flat),
    ("mse_loss", Layout::Flat),
    ("smooth_l1_loss", Layout::Flat),
    ("huber_loss", Layout::Flat),
    ("cross_entropy", Layout::Classes(C_CE)),
    ("nll_loss", Layout::Classes(C_CE)),
    ("binary_cross_entropy", Layout::Flat),
    ("binary_cross_entropy_with_logits", Layout::Flat),
    ("multi_margin_loss", Layout::Classes(C_MARGIN)),
    ("multilabel_margin_loss", Layout::Classes(C_MARGIN)),
    ("multilabel_soft_margin_loss", Layout::Classes(C_MARGIN)),
    ("soft_margin_loss", Layout::Flat),
    ("linear_cross_entropy", Layout::Linear),
    ("kl_div", Layout::Flat),
    ("poisson_nll_loss", Layout::Flat),
    ("gaussian_nll_loss", Layout::Flat),
    ("ctc_loss", Layout::Ctc),
    ("margin_ranking_loss", Layout::Flat),
    ("hinge_embedding_loss", Layout::Flat),
    ("cosine_embedding_loss", Layout::Embedding(D_EMB)),
    ("triplet_margin_loss", Layout::Embedding(D_EMB)),
    (
        "triplet_margin_with_distance_loss",
        Layout::Embedding(D_EMB),
    ),
];

/// The dimensions of one case: `n` samples and, per layout, `c` / `d` / `t`, `s`.
#[derive(Clone, Copy, Debug, Default)]
struct Dims {
    n: usize,
    c: usize,
    d: usize,
    t: usize,
    s: usize,
}

/// The dimensions of `layout` at `size`.
fn shape(layout: Layout, size: Size) -> Dims {
    let e = size.elements();
    match layout {
        Layout::Flat => Dims {
            n: e,
            ..Dims::default()
        },
        Layout::Classes(c) => Dims {
            n: e / c,
            c,
            ..Dims::default()
        },
        Layout::Embedding(d) => Dims {
            n: ((e + d / 2) / d).max(1),
            d,
            ..Dims::default()
        },
        Layout::Linear => Dims {
            n: (e / LCE_C).max(1),
            c: LCE_C,
            d: LCE_IN,
            ..Dims::default()
        },
        // T·N·C ≈ elements, S = T/3 (T·(2S+1) stays far below the kernel's per-sequence limit).
        Layout::Ctc => {
            let (t, n) = match size {
                Size::K1 => (8, 2),
                Size::K100 => (50, 32),
                Size::M10 => (500, 312),
            };
            Dims {
                n,
                c: CTC_C,
                t,
                s: t / 3,
                ..Dims::default()
            }
        }
    }
}

/// One line per loss and size: `name size key=value...`, the shapes' single source of truth
/// for `bench/compare_torch.py`.
fn print_shapes() {
    for (name, layout) in LOSSES {
        for size in Size::ALL {
            let d = shape(layout, size);
            let (kind, main) = match layout {
                Layout::Flat => ("flat", d.n),
                Layout::Classes(_) => ("classes", d.n * d.c),
                Layout::Embedding(_) => ("embedding", d.n * d.d),
                Layout::Linear => ("linear", d.n * d.c),
                Layout::Ctc => ("ctc", d.t * d.n * d.c),
            };
            println!(
                "{name} {size} layout={kind} elements={main} n={} c={} d={} t={} s={}",
                d.n, d.c, d.d, d.t, d.s
            );
        }
    }
}

/// SplitMix64: the same inputs on every run, no `rand` needed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tensor<T: Real>(shape: &[usize], mut f: impl FnMut() -> f64) -> ArrayD<T> {
    let len = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..len).map(|_| T::of(f())).collect()).expect("shape")
}

fn uniform<T: Real>(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> ArrayD<T> {
    tensor(shape, || rng.uniform(lo, hi))
}

fn signs<T: Real>(rng: &mut Rng, shape: &[usize]) -> ArrayD<T> {
    tensor(shape, || if rng.next() & 1 == 0 { -1.0 } else { 1.0 })
}

fn indices(rng: &mut Rng, n: usize, c: usize) -> ArrayD<i64> {
    ArrayD::from_shape_vec(IxDyn(&[n]), (0..n).map(|_| rng.below(c) as i64).collect())
        .expect("n indices")
}

/// The tensors of one case; each loss uses the ones it needs.
struct Inputs<T> {
    a: ArrayD<T>,
    b: ArrayD<T>,
    c: ArrayD<T>,
    idx: ArrayD<i64>,
    /// CTC input and target lengths.
    il: ArrayD<i64>,
    tl: ArrayD<i64>,
}

impl<T: Real> Inputs<T> {
    fn empty() -> Self {
        let none = || ArrayD::zeros(IxDyn(&[0]));
        Inputs {
            a: none(),
            b: none(),
            c: none(),
            idx: ArrayD::zeros(IxDyn(&[0])),
            il: ArrayD::zeros(IxDyn(&[0])),
            tl: ArrayD::zeros(IxDyn(&[0])),
        }
    }
}

/// Builds the inputs of `name` at `size` (the same distributions as `bench/compare_torch.py`).
fn inputs<T: Real>(name: &str, size: Size) -> Inputs<T> {
    let layout = LOSSES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known loss")
        .1;
    let dims = shape(layout, size);
    let Dims { n, c, d, t, s } = dims;
    let mut rng = Rng::new(0x5EED ^ size.elements() as u64);
    let mut x = Inputs::empty();
    match name {
        "l1_loss" | "mse_loss" | "smooth_l1_loss" | "huber_loss" => {
            x.a = uniform(&mut rng, &[n], -2.0, 2.0);
            x.b = uniform(&mut rng, &[n], -2.0, 2.0);
        }
        "cross_entropy" => {
            x.a = uniform(&mut rng, &[n, c], -4.0, 4.0);
            x.idx = indices(&mut rng, n, c);
        }
        "nll_loss" => {
            x.a = uniform(&mut rng, &[n, c], -8.0, 0.0);
            x.idx = indices(&mut rng, n, c);
        }
        "binary_cross_entropy" => {
            x.a = uniform(&mut rng, &[n], 0.01, 0.99);
            x.b = uniform(&mut rng, &[n], 0.0, 1.0);
        }
        "binary_cross_entropy_with_logits" => {
            x.a = uniform(&mut rng, &[n], -4.0, 4.0);
            x.b = uniform(&mut rng, &[n], 0.0, 1.0);
        }
        "multi_margin_loss" => {
            x.a = uniform(&mut rng, &[n, c], -2.0, 2.0);
            x.idx = indices(&mut rng, n, c);
        }
        "multilabel_margin_loss" => {
            x.a = uniform(&mut rng, &[n, c], -2.0, 2.0);
            // Three distinct labels per sample, then −1 (the end of the list).
            let mut rows = Vec::with_capacity(n * c);
            for _ in 0..n {
                let k = rng.below(c);
                rows.extend([k, (k + 3) % c, (k + 7) % c].map(|v| v as i64));
                rows.extend(std::iter::repeat_n(-1, c - 3));
            }
            x.idx = ArrayD::from_shape_vec(IxDyn(&[n, c]), rows).expect("n·c labels");
        }
        "multilabel_soft_margin_loss" => {
            x.a = uniform(&mut rng, &[n, c], -2.0, 2.0);
            x.b = tensor(&[n, c], || (rng.next() & 1) as f64);
        }
        "soft_margin_loss" | "hinge_embedding_loss" => {
            x.a = uniform(&mut rng, &[n], -2.0, 2.0);
            x.b = signs(&mut rng, &[n]);
        }
        "linear_cross_entropy" => {
            x.a = uniform(&mut rng, &[n, d], -1.0, 1.0);
            let bound = 1.0 / (d as f64).sqrt();
            x.b = uniform(&mut rng, &[c, d], -bound, bound);
            x.idx = indices(&mut rng, n, c);
        }
        "kl_div" => {
            x.a = tensor(&[n], || rng.uniform(0.01, 1.0).ln());
            x.b = uniform(&mut rng, &[n], 0.0, 1.0);
        }
        "poisson_nll_loss" => {
            x.a = uniform(&mut rng, &[n], -2.0, 2.0);
            x.b = tensor(&[n], || rng.below(10) as f64);
        }
        "gaussian_nll_loss" => {
            x.a = uniform(&mut rng, &[n], -2.0, 2.0);
            x.b = uniform(&mut rng, &[n], -2.0, 2.0);
            x.c = uniform(&mut rng, &[n], 0.1, 2.0);
        }
        "ctc_loss" => {
            // log_softmax over C of uniform logits in [−2, 2), computed in f64.
            let mut lp = Vec::with_capacity(t * n * c);
            let mut z = vec![0.0f64; c];
            for _ in 0..t * n {
                z.iter_mut().for_each(|v| *v = rng.uniform(-2.0, 2.0));
                let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
                lp.extend(z.iter().map(|v| T::of(v - lse)));
            }
            x.a = ArrayD::from_shape_vec(IxDyn(&[t, n, c]), lp).expect("T·N·C");
            let labels = (0..n * s).map(|_| 1 + rng.below(c - 1) as i64).collect();
            x.idx = ArrayD::from_shape_vec(IxDyn(&[n, s]), labels).expect("N·S");
            x.il = ArrayD::from_elem(IxDyn(&[n]), t as i64);
            x.tl = ArrayD::from_elem(IxDyn(&[n]), s as i64);
        }
        "margin_ranking_loss" => {
            x.a = uniform(&mut rng, &[n], -2.0, 2.0);
            x.b = uniform(&mut rng, &[n], -2.0, 2.0);
            x.c = signs(&mut rng, &[n]);
        }
        "cosine_embedding_loss" => {
            x.a = uniform(&mut rng, &[n, d], -2.0, 2.0);
            x.b = uniform(&mut rng, &[n, d], -2.0, 2.0);
            x.c = signs(&mut rng, &[n]);
        }
        "triplet_margin_loss" | "triplet_margin_with_distance_loss" => {
            x.a = uniform(&mut rng, &[n, d], -2.0, 2.0);
            x.b = uniform(&mut rng, &[n, d], -2.0, 2.0);
            x.c = uniform(&mut rng, &[n, d], -2.0, 2.0);
        }
        other => unreachable!("no inputs for {other}"),
    }
    x
}

/// A kernel call on prepared inputs.
type Kernel<T> = fn(&Inputs<T>, bool) -> Result<LossOutput<T>, LossError>;

/// `name`'s kernel with every option at PyTorch's default, chosen once, outside the timing.
fn kernel<T: Real>(name: &str) -> Kernel<T> {
    const M: Reduction = Reduction::Mean;
    match name {
        "l1_loss" => |x, g| l1_loss(x.a.view(), x.b.view(), None, M, g),
        "mse_loss" => |x, g| mse_loss(x.a.view(), x.b.view(), None, M, g),
        "smooth_l1_loss" => |x, g| smooth_l1_loss(x.a.view(), x.b.view(), M, 1.0, g),
        "huber_loss" => |x, g| huber_loss(x.a.view(), x.b.view(), None, M, 1.0, g),
        "cross_entropy" => |x, g| {
            let t = CeTarget::Indices(x.idx.view());
            cross_entropy(
                x.a.view(),
                t,
                CrossEntropyOptions {
                    weight: None,
                    ignore_index: -100,
                    label_smoothing: 0.0,
                    reduction: M,
                    grad: g,
                },
            )
        },
        "nll_loss" => |x, g| nll_loss(x.a.view(), x.idx.view(), None, -100, M, g),
        "binary_cross_entropy" => |x, g| binary_cross_entropy(x.a.view(), x.b.view(), None, M, g),
        "binary_cross_entropy_with_logits" => {
            |x, g| binary_cross_entropy_with_logits(x.a.view(), x.b.view(), None, None, M, g)
        }
        "multi_margin_loss" => {
            |x, g| multi_margin_loss(x.a.view(), x.idx.view(), 1.0, 1.0, None, M, g)
        }
        "multilabel_margin_loss" => |x, g| multilabel_margin_loss(x.a.view(), x.idx.view(), M, g),
        "multilabel_soft_margin_loss" => {
            |x, g| multilabel_soft_margin_loss(x.a.view(), x.b.view(), None, M, g)
        }
        "soft_margin_loss" => |x, g| soft_margin_loss(x.a.view(), x.b.view(), M, g),
        "linear_cross_entropy" => |x, g| {
            let t = CeTarget::Indices(x.idx.view());
            linear_cross_entropy(
                x.a.view(),
                x.b.view(),
                t,
                None,
                CrossEntropyOptions {
                    weight: None,
                    ignore_index: -100,
                    label_smoothing: 0.0,
                    reduction: M,
                    grad: g,
                },
            )
        },
        "kl_div" => |x, g| kl_div(x.a.view(), x.b.view(), false, KlReduction::BatchMean, g),
        "poisson_nll_loss" => {
            |x, g| poisson_nll_loss(x.a.view(), x.b.view(), true, false, 1e-8, M, g)
        }
        "gaussian_nll_loss" => |x, g| {
            let var = Var::Tensor(x.c.view());
            gaussian_nll_loss(x.a.view(), x.b.view(), var, false, 1e-6, M, g)
        },
        "ctc_loss" => |x, g| {
            let (t, il, tl) = (x.idx.view(), x.il.view(), x.tl.view());
            ctc_loss(
                x.a.view(),
                t,
                il,
                tl,
                CtcOptions {
                    blank: 0,
                    zero_infinity: false,
                    reduction: M,
                    grad: g,
                },
            )
        },
        "margin_ranking_loss" => {
            |x, g| margin_ranking_loss(x.a.view(), x.b.view(), x.c.view(), 0.0, M, g)
        }
        "hinge_embedding_loss" => |x, g| hinge_embedding_loss(x.a.view(), x.b.view(), 1.0, M, g),
        "cosine_embedding_loss" => {
            |x, g| cosine_embedding_loss(x.a.view(), x.b.view(), x.c.view(), 0.0, M, g)
        }
        "triplet_margin_loss" => |x, g| {
            let (a, p, n) = (x.a.view(), x.b.view(), x.c.view());
            triplet_margin_loss(
                a,
                p,
                n,
                TripletMarginOptions {
                    margin: 1.0,
                    p: 2.0,
                    eps: 1e-6,
                    swap: false,
                    reduction: M,
                    grad: g,
                },
            )
        },
        "triplet_margin_with_distance_loss" => |x, g| {
            let (a, p, n) = (x.a.view(), x.b.view(), x.c.view());
            let dist = DistanceFunction::PairwiseDistance;
            triplet_margin_with_distance_loss(
                a,
                p,
                n,
                TripletMarginWithDistanceOptions {
                    distance_function: dist,
                    margin: 1.0,
                    swap: false,
                    reduction: M,
                    grad: g,
                },
            )
        },
        other => unreachable!("no kernel {other}"),
    }
}

fn run<T: Real>(bencher: Bencher, name: &str, size: Size, grad: bool) {
    let x = inputs::<T>(name, size);
    let f = kernel::<T>(name);
    // A failing call would time an early return: check once, untimed.
    let out = f(&x, grad).unwrap_or_else(|e| panic!("{name} {size}: {e:?}"));
    assert!(
        out.loss.iter().all(|v| v.is_finite()),
        "{name} {size}: non-finite loss"
    );
    assert_eq!(out.grads.is_empty(), !grad, "{name} {size}: gradients");
    drop(out);
    bencher.bench_local(|| f(black_box(&x), black_box(grad)));
}

/// One module per loss, named as the service route, with `forward` and `forward_grad`
/// benchmarks over `f32`/`f64` and the three sizes: divan shows `loss::pass::dtype::size`.
macro_rules! losses {
    ($($name:ident)*) => {$(
        mod $name {
            use super::*;

            #[divan::bench(types = [f32, f64], args = Size::ALL, max_time = MAX_TIME)]
            fn forward<T: Real>(bencher: Bencher, size: Size) {
                run::<T>(bencher, stringify!($name), size, false);
            }

            #[divan::bench(types = [f32, f64], args = Size::ALL, max_time = MAX_TIME)]
            fn forward_grad<T: Real>(bencher: Bencher, size: Size) {
                run::<T>(bencher, stringify!($name), size, true);
            }
        }
    )*};
}

losses! {
    l1_loss mse_loss smooth_l1_loss huber_loss
    cross_entropy nll_loss binary_cross_entropy binary_cross_entropy_with_logits
    multi_margin_loss multilabel_margin_loss multilabel_soft_margin_loss soft_margin_loss
    linear_cross_entropy
    kl_div poisson_nll_loss gaussian_nll_loss ctc_loss
    margin_ranking_loss hinge_embedding_loss cosine_embedding_loss
    triplet_margin_loss triplet_margin_with_distance_loss
}
