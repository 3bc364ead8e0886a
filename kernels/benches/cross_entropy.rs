//! `cross_entropy` throughput: class-index targets, `mean`, forward alone and forward with the
//! input gradient, in `f32` and `f64`, for a wide `(4096, 1000)` and a tall `(65536, 10)` batch.
//!
//! `cargo bench -p lossd-kernels --bench cross_entropy`

use std::fmt;

use divan::{Bencher, black_box, counter::ItemsCount};
use lossd_kernels::classification::cross_entropy::{CeTarget, CrossEntropyOptions, cross_entropy};
use lossd_kernels::ndarray::{ArrayD, IxDyn};
use lossd_kernels::{Real, Reduction};

fn main() {
    lossd_kernels::alloc::keep_freed_memory();
    divan::main();
}

/// A batch shape `(N, C)`.
#[derive(Clone, Copy, Debug)]
struct Size {
    n: usize,
    c: usize,
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.n, self.c)
    }
}

const SIZES: [Size; 2] = [Size { n: 4096, c: 1000 }, Size { n: 65536, c: 10 }];

/// Deterministic logits in about [−4, 4] and targets in [0, C).
fn data<T: Real>(size: Size) -> (ArrayD<T>, ArrayD<i64>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let x = (0..size.n * size.c)
        .map(|_| T::of((next() >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0))
        .collect();
    let t = (0..size.n)
        .map(|_| (next() % size.c as u64) as i64)
        .collect();
    (
        ArrayD::from_shape_vec(IxDyn(&[size.n, size.c]), x).expect("n·c logits"),
        ArrayD::from_shape_vec(IxDyn(&[size.n]), t).expect("n targets"),
    )
}

fn run<T: Real>(bencher: Bencher, size: Size, grad: bool) {
    let (x, t) = data::<T>(size);
    bencher
        .counter(ItemsCount::new(size.n * size.c))
        .bench_local(|| {
            cross_entropy(
                black_box(x.view()),
                CeTarget::Indices(t.view()),
                CrossEntropyOptions {
                    weight: None,
                    ignore_index: -100,
                    label_smoothing: 0.0,
                    reduction: Reduction::Mean,
                    grad,
                },
            )
            .expect("valid arguments")
        });
}

#[divan::bench(types = [f32, f64], args = SIZES)]
fn forward<T: Real>(bencher: Bencher, size: Size) {
    run::<T>(bencher, size, false);
}

#[divan::bench(types = [f32, f64], args = SIZES)]
fn forward_and_gradient<T: Real>(bencher: Bencher, size: Size) {
    run::<T>(bencher, size, true);
}
