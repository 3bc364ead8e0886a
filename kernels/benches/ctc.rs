//! Benchmarks `ctc_loss` at a speech-recognition-like size: T = 500 frames, N = 16
//! sequences, C = 64 classes, padded targets of S = 100 labels (every sequence full length),
//! forward with and without the gradient, in `f32` and `f64`.
//!
//! Run with `cargo bench -p lossd-kernels --bench ctc`.

use divan::Bencher;
use lossd_kernels::Real;
use lossd_kernels::Reduction;
use lossd_kernels::ndarray::{ArrayD, IxDyn};
use lossd_kernels::probabilistic::ctc::{CtcOptions, ctc_loss};

const T: usize = 500;
const N: usize = 16;
const C: usize = 64;
const S: usize = 100;

fn main() {
    lossd_kernels::alloc::keep_freed_memory();
    divan::main();
}

/// SplitMix64, so the inputs are the same on every run.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `log_softmax` of uniform logits in [-2, 2), targets of labels in [1, C), full lengths.
fn inputs<R: Real>() -> (ArrayD<R>, ArrayD<i64>, ArrayD<i64>, ArrayD<i64>) {
    let mut state = 42;
    let mut lp = Vec::with_capacity(T * N * C);
    for _ in 0..T * N {
        let z: Vec<f64> = (0..C)
            .map(|_| (next(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
            .collect();
        let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
        lp.extend(z.iter().map(|v| R::of(v - lse)));
    }
    let targets: Vec<i64> = (0..N * S)
        .map(|_| 1 + (next(&mut state) % (C as u64 - 1)) as i64)
        .collect();
    (
        ArrayD::from_shape_vec(IxDyn(&[T, N, C]), lp).expect("T·N·C values"),
        ArrayD::from_shape_vec(IxDyn(&[N, S]), targets).expect("N·S labels"),
        ArrayD::from_elem(IxDyn(&[N]), T as i64),
        ArrayD::from_elem(IxDyn(&[N]), S as i64),
    )
}

#[divan::bench(types = [f32, f64], sample_count = 20)]
fn forward_and_gradient<R: Real>(bencher: Bencher) {
    run::<R>(bencher, true);
}

#[divan::bench(types = [f32, f64], sample_count = 20)]
fn forward_only<R: Real>(bencher: Bencher) {
    run::<R>(bencher, false);
}

/// Times `ctc_loss` with `reduction="mean"`, with or without the gradient.
fn run<R: Real>(bencher: Bencher, grad: bool) {
    let (lp, tg, il, tl) = inputs::<R>();
    let options = CtcOptions {
        reduction: Reduction::Mean,
        grad,
        ..CtcOptions::default()
    };
    bencher.bench_local(|| {
        ctc_loss(lp.view(), tg.view(), il.view(), tl.view(), options).expect("valid inputs")
    });
}
