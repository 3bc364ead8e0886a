//! Matrix products (`linear_cross_entropy`'s three), through the [`gemm`] crate.
//!
//! `gemm` packs and multiplies with register-blocked kernels chosen at run time for the CPU
//! (AVX2 + FMA on x86_64), and has a dot-product kernel for products with a single row or
//! column. It is faster than ndarray's `general_mat_mul` (matrixmultiply) at the sizes of
//! `linear_cross_entropy`, and much faster for one row, where matrixmultiply packs the whole
//! right-hand matrix for a single output row (BENCHMARKS.md has the figures).
//! One thread per product: the service runs one request per core.

use std::any::TypeId;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::Real;

/// `c = a · b`, or `c += a · b` with `accumulate`, for 2-D views of any strides.
///
/// Panics unless `a` is `(m, k)`, `b` `(k, n)` and `c` `(m, n)`.
pub(crate) fn matmul<T: Real>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    c: &mut ArrayViewMut2<'_, T>,
    accumulate: bool,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "matmul: ({m}, {k}) · {:?} into {:?}",
        b.dim(),
        c.dim()
    );
    if TypeId::of::<T>() != TypeId::of::<f32>() && TypeId::of::<T>() != TypeId::of::<f64>() {
        // gemm implements f32 and f64 (and its own complex and f16 types) and panics on
        // anything else; `Real` is only f32 and f64 today, this keeps any other one correct.
        let beta = if accumulate { T::one() } else { T::zero() };
        general_mat_mul(T::one(), &a, &b, beta, c);
        return;
    }
    let (a_s, b_s) = (a.strides(), b.strides());
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointers and strides (in elements, as gemm takes them) are those of ndarray
    // views whose shapes were checked above to be (m, k), (k, n) and (m, n), so every element
    // gemm reads (a[i, l], b[l, j]) or writes (c[i, j]) for i < m, j < n, l < k lies in its
    // view; `c` is borrowed mutably, so it overlaps neither `a` nor `b`; `T` is f32 or f64
    // (checked above), types gemm implements. With m, n or k zero gemm touches no element it
    // cannot (it returns, or sets the (m, n) elements of `c`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            accumulate,
            a.as_ptr(),
            a_s[1],
            a_s[0],
            b.as_ptr(),
            b_s[1],
            b_s[0],
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, s};

    /// The product by definition, in f64.
    fn naive(a: &ArrayView2<'_, f64>, b: &ArrayView2<'_, f64>) -> Array2<f64> {
        Array2::from_shape_fn((a.nrows(), b.ncols()), |(i, j)| {
            (0..a.ncols()).map(|l| a[[i, l]] * b[[l, j]]).sum()
        })
    }

    #[test]
    fn products_of_any_layout_equal_the_definition() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for (m, k, n) in [
            (1, 256, 1000),
            (3, 5, 7),
            (17, 33, 9),
            (3, 1500, 5),
            (40, 600, 70),
            (0, 4, 3),
            (4, 0, 3),
            (5, 4, 0),
        ] {
            let a = Array2::from_shape_fn((m, k), |_| next());
            let bt = Array2::from_shape_fn((n, k), |_| next());
            let b = bt.t();
            let want = naive(&a.view(), &b);
            // Row-major b, b as a transposed view, and a strided (every other row) a.
            let b_owned = b.to_owned();
            let a2 = Array2::from_shape_fn((2 * m, k), |(i, l)| {
                if i % 2 == 0 { a[[i / 2, l]] } else { f64::NAN }
            });
            let a_strided = a2.slice(s![..;2, ..]);
            for (av, bv) in [(a.view(), b_owned.view()), (a.view(), b), (a_strided, b)] {
                let mut c = Array2::from_elem((m, n), f64::NAN);
                matmul(av, bv, &mut c.view_mut(), false);
                for (g, w) in c.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-13 * (1.0 + w.abs()),
                        "{m}x{k}x{n}: {g} vs {w}"
                    );
                }
                // Accumulating adds the product to what is there.
                let mut c = Array2::from_elem((m, n), 1.5);
                matmul(av, bv, &mut c.view_mut(), true);
                for (g, w) in c.iter().zip(&want) {
                    assert!(
                        (g - (w + 1.5)).abs() <= 1e-13 * (2.0 + w.abs()),
                        "{g} vs {w} + 1.5"
                    );
                }
            }
            // Into a transposed c and into c with its rows reversed (a negative stride).
            let mut ct = Array2::from_elem((n, m), f64::NAN);
            matmul(a.view(), b, &mut ct.view_mut().reversed_axes(), false);
            let mut cr = Array2::from_elem((m, n), 0.25);
            matmul(a.view(), b, &mut cr.slice_mut(s![..;-1, ..]), true);
            for i in 0..m {
                for j in 0..n {
                    let w = want[[i, j]];
                    assert!(
                        (ct[[j, i]] - w).abs() <= 1e-13 * (1.0 + w.abs()),
                        "transposed c"
                    );
                    let r = cr[[m - 1 - i, j]];
                    assert!(
                        (r - (w + 0.25)).abs() <= 1e-13 * (2.0 + w.abs()),
                        "reversed c"
                    );
                }
            }
            // f32 agrees with the f64 definition to f32 rounding.
            let (a32, b32) = (a.mapv(|v| v as f32), b_owned.mapv(|v| v as f32));
            let mut c = Array2::<f32>::zeros((m, n));
            matmul(a32.view(), b32.view(), &mut c.view_mut(), false);
            for (g, w) in c.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() <= 1e-5 * (1.0 + k as f64),
                    "{g} vs {w}"
                );
            }
        }
    }
}
