//! `triplet_margin_loss` at N = 65536 triplets of D = 128 components (p = 2, mean), forward
//! only and forward + gradients, in `f32` and `f64`.
//!
//! Run: `cargo bench -p lossd-kernels --bench triplet`.

use divan::Bencher;
use divan::counter::ItemsCount;
use lossd_kernels::Real;
use lossd_kernels::ndarray::{ArrayD, IxDyn};
use lossd_kernels::ranking::triplet_margin::{TripletMarginOptions, triplet_margin_loss};

const N: usize = 65536;
const D: usize = 128;

fn main() {
    lossd_kernels::alloc::keep_freed_memory();
    divan::main();
}

/// A deterministic `(N, D)` tensor with values in [−2, 2) (SplitMix64, no `rand` needed).
fn tensor<T: Real>(seed: u64) -> ArrayD<T> {
    let mut s = seed;
    let data = (0..N * D)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            T::of((z >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[N, D]), data).expect("N·D elements")
}

fn run<T: Real>(bencher: Bencher, grad: bool) {
    let (a, p, n) = (tensor::<T>(1), tensor::<T>(2), tensor::<T>(3));
    bencher.counter(ItemsCount::new(N)).bench(|| {
        let options = TripletMarginOptions {
            grad,
            ..TripletMarginOptions::default()
        };
        triplet_margin_loss(a.view(), p.view(), n.view(), options).expect("valid inputs")
    });
}

/// The loss alone.
#[divan::bench(types = [f32, f64], sample_count = 20)]
fn forward<T: Real>(bencher: Bencher) {
    run::<T>(bencher, false);
}

/// The loss and the gradients for anchor, positive and negative.
#[divan::bench(types = [f32, f64], sample_count = 20)]
fn forward_and_gradient<T: Real>(bencher: Bencher) {
    run::<T>(bencher, true);
}
