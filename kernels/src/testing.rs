//! Helpers for the kernels' unit tests: deterministic random tensors and a central-difference
//! gradient check.

use ndarray::{ArrayD, IxDyn};

use crate::output::LossOutput;

/// A deterministic pseudo-random generator (SplitMix64), so tests need no `rand`.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// An integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A tensor of standard normal samples.
    pub fn randn(&mut self, shape: &[usize]) -> ArrayD<f64> {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| self.normal()).collect()).unwrap()
    }

    /// A tensor of uniform samples in [lo, hi).
    pub fn uniform_tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> ArrayD<f64> {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| self.range(lo, hi)).collect()).unwrap()
    }
}

/// The scalar a kernel's gradients are of: the loss itself for `mean`/`sum`, the sum of the
/// unreduced loss for `none`.
pub fn scalar(out: &LossOutput<f64>) -> f64 {
    out.loss.iter().sum()
}

/// Asserts that `analytic` equals the central difference of `f` at `x`, element by element.
///
/// `f` gets a perturbed copy of `x`; choose points away from kinks (|d| = beta, hinges at 0).
pub fn assert_grad(
    what: &str,
    x: &ArrayD<f64>,
    analytic: &ArrayD<f64>,
    f: impl Fn(&ArrayD<f64>) -> f64,
) {
    assert_eq!(x.shape(), analytic.shape(), "{what}: gradient shape");
    let h = 1e-6;
    for i in 0..x.len() {
        let mut xp = x.clone();
        let mut xm = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        xm.as_slice_mut().unwrap()[i] -= h;
        let num = (f(&xp) - f(&xm)) / (2.0 * h);
        let ana = analytic.as_slice().unwrap()[i];
        assert!(
            (num - ana).abs() <= 1e-5 * (1.0 + ana.abs()),
            "{what}: element {i}: finite difference {num} but analytic gradient {ana}"
        );
    }
}

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise, NaN and infinities exactly.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= atol + rtol * w.abs()
        } else {
            g == w || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// A class-index target for an input of `shape` with the classes on dimension 1 (0-d for a
/// `(C)` input): `at1` at element 1, a random class below `classes` everywhere else.
pub fn class_target(rng: &mut Rng, shape: &[usize], classes: usize, at1: i64) -> ArrayD<i64> {
    let tshape: Vec<usize> = match shape.len() {
        1 => vec![],
        _ => [&shape[..1], &shape[2..]].concat(),
    };
    let n: usize = tshape.iter().product();
    ArrayD::from_shape_vec(
        IxDyn(&tshape),
        (0..n)
            .map(|i| {
                if i == 1 {
                    at1
                } else {
                    rng.below(classes) as i64
                }
            })
            .collect(),
    )
    .unwrap()
}

/// [`assert_close`] on a whole array (a loss or a gradient), in its standard layout.
pub fn assert_array_close(what: &str, got: &ArrayD<f64>, want: &[f64], rtol: f64, atol: f64) {
    assert_close(what, got.as_slice().unwrap(), want, rtol, atol);
}

/// The bits of each value (as `f64`), to compare results exactly.
pub fn bits<T: crate::Real>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.f64().to_bits()).collect()
}

/// The bits of a sum, any NaN as one: the sign of a NaN sum depends on which NaN operand
/// an addition propagates, and the compiler may swap the operands of the lane additions
/// (it does so differently in a reference loop and a vectorised pass).
pub fn sum_bits(t: f64) -> u64 {
    if t.is_nan() { f64::NAN } else { t }.to_bits()
}

/// Checks the three gradients of a kernel of three tensors against finite differences:
/// `names[k]` is the gradient `run` returns for `args[k]`.
pub fn assert_grads3(
    what: &str,
    args: [&ArrayD<f64>; 3],
    names: [&str; 3],
    run: impl Fn(&ArrayD<f64>, &ArrayD<f64>, &ArrayD<f64>) -> LossOutput<f64>,
) {
    let [a, b, c] = args;
    let out = run(a, b, c);
    let grad = |k: usize| out.grad(names[k]).unwrap();
    assert_grad(what, a, grad(0), |v| scalar(&run(v, b, c)));
    assert_grad(what, b, grad(1), |v| scalar(&run(a, v, c)));
    assert_grad(what, c, grad(2), |v| scalar(&run(a, b, v)));
}
