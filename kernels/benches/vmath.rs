//! The vectorisable `exp`/`ln`/`ln_1p` of `lossd_kernels::vmath` over a slice of 4096
//! elements, against `std`'s scalar functions (`cargo bench -p lossd-kernels --bench vmath`).

use divan::{Bencher, black_box};
use lossd_kernels::Real;
use lossd_kernels::vmath::{exp_slice, ln_1p_slice, ln_slice};

fn main() {
    lossd_kernels::alloc::keep_freed_memory();
    divan::main();
}

const N: usize = 4096;

fn data<T: Real>(lo: f64, hi: f64) -> Vec<T> {
    (0..N)
        .map(|i| T::of(lo + (hi - lo) * ((i * 7919) % N) as f64 / N as f64))
        .collect()
}

#[divan::bench(types = [f32, f64])]
fn exp_vmath<T: Real>(b: Bencher) {
    let (x, mut out) = (data::<T>(-20.0, 20.0), vec![T::zero(); N]);
    b.bench_local(|| exp_slice(black_box(&x), &mut out));
}

#[divan::bench(types = [f32, f64])]
fn exp_std<T: Real>(b: Bencher) {
    let (x, mut out) = (data::<T>(-20.0, 20.0), vec![T::zero(); N]);
    b.bench_local(|| {
        for (o, &v) in out.iter_mut().zip(black_box(&x)) {
            *o = v.exp();
        }
    });
}

#[divan::bench(types = [f32, f64])]
fn ln_vmath<T: Real>(b: Bencher) {
    let (x, mut out) = (data::<T>(1e-3, 20.0), vec![T::zero(); N]);
    b.bench_local(|| ln_slice(black_box(&x), &mut out));
}

#[divan::bench(types = [f32, f64])]
fn ln_std<T: Real>(b: Bencher) {
    let (x, mut out) = (data::<T>(1e-3, 20.0), vec![T::zero(); N]);
    b.bench_local(|| {
        for (o, &v) in out.iter_mut().zip(black_box(&x)) {
            *o = v.ln();
        }
    });
}

#[divan::bench(types = [f32, f64])]
fn ln_1p_vmath<T: Real>(b: Bencher) {
    let (x, mut out) = (data::<T>(0.0, 1.0), vec![T::zero(); N]);
    b.bench_local(|| ln_1p_slice(black_box(&x), &mut out));
}

#[divan::bench(types = [f32, f64])]
fn ln_1p_std<T: Real>(b: Bencher) {
    let (x, mut out) = (data::<T>(0.0, 1.0), vec![T::zero(); N]);
    b.bench_local(|| {
        for (o, &v) in out.iter_mut().zip(black_box(&x)) {
            *o = v.ln_1p();
        }
    });
}
