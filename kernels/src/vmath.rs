//! Branch-free `exp`, `ln` and `ln_1p` that the loop vectoriser takes, and the runtime
//! dispatch that makes the vectorised loops use 512-bit (AVX-512) or 256-bit (AVX2) registers.
//!
//! The scalar functions of `std` are libm calls: a loop calling them runs one element at a
//! time. The functions here are plain arithmetic, fused multiply-adds, integer bit
//! manipulation and selects (no branches, no `f64 → i64` conversion that SSE2 lacks), so a
//! loop applying them over a slice vectorises. `f32` is computed in `f32` arithmetic, as
//! PyTorch computes a float32 tensor.
//!
//! - `exp`: Cody–Waite reduction `x = k·ln2 + r`, `|r| ≤ ln2/2` (`k` by the `1.5·2^p`
//!   magic-add rounding, read back from the bits), a Taylor polynomial of `e^r` (degree 13 in
//!   `f64`, 7 in `f32`, truncation error below 0.05 ulp), and `2^k` applied as two exact
//!   powers of two so that subnormal results are rounded once and overflow gives `inf`.
//! - `ln`: fdlibm's/musl's `log`/`logf` made branch-free: exponent and mantissa split from
//!   the bits (mantissa in `[√2/2, √2)`), `ln(1+f)` by the `atanh` series in `s = f/(2+f)`;
//!   subnormals are pre-scaled by `2^52` (`2^23`), special values chosen by selects.
//! - `ln_1p`: `ln(u) + c/u` with `u = 1 + x` and `c` the exact rounding error of that sum.
//!
//! Measured against `std` (the tests below, millions of random bit patterns): at most 1 ulp.
//!
//! The same operations in the same order run on every path, so the AVX-512 and AVX2 paths are
//! bit-identical to the SSE2 one (tested). The multiply-adds are explicit (`mul_add`, one
//! rounding, never left to contraction), so they round alike everywhere: the AVX2 and AVX-512
//! paths (compiled with FMA, which every CPU with AVX2 that lossd takes that path on has) use
//! the instruction; the SSE2 baseline, which has none, calls libm's `fma`, exact but slower. A
//! CPU without AVX2 and FMA (before 2013) gets the same bits, more slowly. The fused forms are
//! also the faster ones where the instruction exists.

// The constants are fdlibm's/musl's, written with all the digits they are published with.
#![allow(clippy::excessive_precision)]

use crate::real::Real;

// ---------------------------------------------------------------------------------------
// f64
// ---------------------------------------------------------------------------------------

const LN2_HI_64: f64 = 6.931_471_803_691_238_164_90e-01; // 0x3fe62e42fee00000
const LN2_LO_64: f64 = 1.908_214_929_270_587_700_02e-10; // 0x3dea39ef35793c76
const LOG2E_64: f64 = std::f64::consts::LOG2_E;
/// `1.5·2^52`: adding it rounds to an integer held in the low mantissa bits.
const SHIFT_64: f64 = 6_755_399_441_055_744.0;

/// `e^x` in `f64`, branch-free; at most 1 ulp from `f64::exp`.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    // Beyond these, the result is 0 or inf anyway; the clamp keeps k in range. NaN passes
    // (the comparisons are false) and comes out NaN.
    let xc = if x < -746.0 { -746.0 } else { x };
    let xc = if xc > 710.0 { 710.0 } else { xc };
    let t = xc.mul_add(LOG2E_64, SHIFT_64);
    let kf = t - SHIFT_64;
    let r = (-kf).mul_add(LN2_LO_64, (-kf).mul_add(LN2_HI_64, xc));
    // e^r = 1 + r + r²·p(r), p(r) = 1/2 + r/6 + … + r^11/13!, by Estrin's scheme (a short
    // dependency chain: Horner's would leave the vectorised loop latency-bound).
    let r2 = r * r;
    let r4 = r2 * r2;
    let a0 = r.mul_add(1.0 / 6.0, 0.5);
    let a1 = r.mul_add(1.0 / 120.0, 1.0 / 24.0);
    let a2 = r.mul_add(1.0 / 5_040.0, 1.0 / 720.0);
    let a3 = r.mul_add(1.0 / 362_880.0, 1.0 / 40_320.0);
    let a4 = r.mul_add(1.0 / 39_916_800.0, 1.0 / 3_628_800.0);
    let a5 = r.mul_add(1.0 / 6_227_020_800.0, 1.0 / 479_001_600.0);
    let b0 = r2.mul_add(a1, a0);
    let b1 = r2.mul_add(a3, a2);
    let b2 = r2.mul_add(a5, a4);
    let p = (r4 * r4).mul_add(b2, r4.mul_add(b1, b0));
    let er = 1.0 + r2.mul_add(p, r);
    // k + 2046 from the low bits of t (k ∈ [-1077, 1025], so this is positive), split in two
    // biased exponents e1 + e2 = k + 2046, each in the normal range.
    let s = t
        .to_bits()
        .wrapping_sub(SHIFT_64.to_bits())
        .wrapping_add(2046)
        & 0xfff;
    let e1 = s >> 1;
    let e2 = s - e1;
    er * f64::from_bits(e1 << 52) * f64::from_bits(e2 << 52)
}

const LG1_64: f64 = 6.666_666_666_666_735_13e-01;
const LG2_64: f64 = 3.999_999_999_940_941_908e-01;
const LG3_64: f64 = 2.857_142_874_366_239_149e-01;
const LG4_64: f64 = 2.222_219_843_214_978_396e-01;
const LG5_64: f64 = 1.818_357_216_161_805_012e-01;
const LG6_64: f64 = 1.531_383_769_920_937_332e-01;
const LG7_64: f64 = 1.479_819_860_511_658_591e-01;
const LN2_HI_LOG_64: f64 = 6.931_471_803_691_238_164_90e-01;
const LN2_LO_LOG_64: f64 = 1.908_214_929_270_587_700_02e-10;

/// `ln(x)` in `f64`, branch-free; at most 1 ulp from `f64::ln`.
#[inline(always)]
pub fn ln_f64(x: f64) -> f64 {
    // Subnormals: scale by 2^52 and take 52 off the exponent.
    let sub = x < f64::MIN_POSITIVE;
    let xs = if sub { x * 4_503_599_627_370_496.0 } else { x };
    let bias: u64 = if sub { 1023 + 52 } else { 1023 };
    // Move the mantissa into [√2/2, √2), adjusting the exponent (musl's trick).
    let ix = xs
        .to_bits()
        .wrapping_add(0x3ff0_0000_0000_0000 - 0x3fe6_a09e_0000_0000);
    let ke = (ix >> 52) & 0x7ff; // k + bias
    let m = f64::from_bits((ix & 0x000f_ffff_ffff_ffff).wrapping_add(0x3fe6_a09e_0000_0000));
    // k as f64 without an integer conversion: 2^52 + (k + 2048) from the bits, minus 2^52 + 2048.
    let dk = f64::from_bits(0x4330_0000_0000_0000 | (ke + 2048 - bias))
        - (4_503_599_627_370_496.0 + 2048.0);
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * w.mul_add(w.mul_add(LG6_64, LG4_64), LG2_64);
    let t2 = z * w.mul_add(w.mul_add(w.mul_add(LG7_64, LG5_64), LG3_64), LG1_64);
    let rr = t2 + t1;
    let y = dk.mul_add(
        LN2_HI_LOG_64,
        (s.mul_add(hfsq + rr, dk * LN2_LO_LOG_64) - hfsq) + f,
    );
    // Special values: ln(+inf) = inf, ln(0) = -inf, ln(x<0) = NaN, ln(NaN) = NaN.
    let y = if x == f64::INFINITY { x } else { y };
    let y = if x == 0.0 { f64::NEG_INFINITY } else { y };
    if x < 0.0 || x.is_nan() { f64::NAN } else { y }
}

/// `ln(1 + x)` in `f64`, branch-free; at most 1 ulp from `f64::ln_1p`.
#[inline(always)]
pub fn ln_1p_f64(x: f64) -> f64 {
    let u = 1.0 + x;
    // The exact rounding error of 1 + x (Fast2Sum, larger operand first).
    let c = if x.abs() <= 1.0 {
        x - (u - 1.0)
    } else {
        1.0 - (u - x)
    };
    let y = ln_f64(u) + c / u;
    // x = ±0 (keeps the sign), x = -1 (c/u would be 0/0), x = inf (c would be NaN).
    let y = if u == 0.0 || x == f64::INFINITY || x == 0.0 {
        ln_f64(u)
    } else {
        y
    };
    if x == 0.0 { x } else { y }
}

// ---------------------------------------------------------------------------------------
// f32
// ---------------------------------------------------------------------------------------

const LN2_HI_32: f32 = 6.931_457_519_5e-01; // 0x3f317200
const LN2_LO_32: f32 = 1.428_606_765_3e-06; // 0x35bfbe8e
const LOG2E_32: f32 = std::f32::consts::LOG2_E;
/// `1.5·2^23`.
const SHIFT_32: f32 = 12_582_912.0;

/// `e^x` in `f32` (computed in `f32`), branch-free; at most 1 ulp from `f32::exp`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = if x < -104.0 { -104.0 } else { x };
    let xc = if xc > 89.0 { 89.0 } else { xc };
    let t = xc.mul_add(LOG2E_32, SHIFT_32);
    let kf = t - SHIFT_32;
    let r = (-kf).mul_add(LN2_LO_32, (-kf).mul_add(LN2_HI_32, xc));
    // p(r) = 1/2 + r/6 + … + r^5/7! (Estrin).
    let r2 = r * r;
    let a0 = r.mul_add(1.0 / 6.0, 0.5);
    let a1 = r.mul_add(1.0 / 120.0, 1.0 / 24.0);
    let a2 = r.mul_add(1.0 / 5_040.0, 1.0 / 720.0);
    let p = r2.mul_add(r2.mul_add(a2, a1), a0);
    let er = 1.0 + r2.mul_add(p, r);
    // k ∈ [-151, 129]: k + 254 > 0, split into two normal biased exponents.
    let s = t
        .to_bits()
        .wrapping_sub(SHIFT_32.to_bits())
        .wrapping_add(254)
        & 0x1ff;
    let e1 = s >> 1;
    let e2 = s - e1;
    er * f32::from_bits(e1 << 23) * f32::from_bits(e2 << 23)
}

const LG1_32: f32 = 0.666_666_626_93; // 0xaaaaaa.0p-24
const LG2_32: f32 = 0.400_009_721_52; // 0xccce13.0p-25
const LG3_32: f32 = 0.284_987_866_88; // 0x91e9ee.0p-25
const LG4_32: f32 = 0.242_790_788_41; // 0xf89e26.0p-26
const LN2_HI_LOG_32: f32 = 6.931_381_225_6e-01; // 0x3f317180
const LN2_LO_LOG_32: f32 = 9.058_000_614_5e-06; // 0x3717f7d1

/// `ln(x)` in `f32` (computed in `f32`), branch-free; at most 1 ulp from `f32::ln`.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 8_388_608.0 } else { x };
    let bias: u32 = if sub { 127 + 23 } else { 127 };
    let ix = xs.to_bits().wrapping_add(0x3f80_0000 - 0x3f35_04f3);
    let ke = (ix >> 23) & 0xff;
    let m = f32::from_bits((ix & 0x007f_ffff).wrapping_add(0x3f35_04f3));
    let dk = f32::from_bits(0x4b00_0000 | (ke + 256 - bias)) - (8_388_608.0 + 256.0);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * w.mul_add(LG4_32, LG2_32);
    let t2 = z * w.mul_add(LG3_32, LG1_32);
    let rr = t2 + t1;
    let hfsq = 0.5 * f * f;
    let y = dk.mul_add(
        LN2_HI_LOG_32,
        (s.mul_add(hfsq + rr, dk * LN2_LO_LOG_32) - hfsq) + f,
    );
    let y = if x == f32::INFINITY { x } else { y };
    let y = if x == 0.0 { f32::NEG_INFINITY } else { y };
    if x < 0.0 || x.is_nan() { f32::NAN } else { y }
}

/// `ln(1 + x)` in `f32` (computed in `f32`), branch-free; at most 1 ulp from `f32::ln_1p`.
#[inline(always)]
pub fn ln_1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    let c = if x.abs() <= 1.0 {
        x - (u - 1.0)
    } else {
        1.0 - (u - x)
    };
    let y = ln_f32(u) + c / u;
    let y = if u == 0.0 || x == f32::INFINITY || x == 0.0 {
        ln_f32(u)
    } else {
        y
    };
    if x == 0.0 { x } else { y }
}

// ---------------------------------------------------------------------------------------
// Generic entry points and dispatch
// ---------------------------------------------------------------------------------------

/// The vectorisable functions for a [`Real`] type.
pub trait VMath: Copy {
    /// `e^x`.
    fn vexp(self) -> Self;
    /// `ln(x)`.
    fn vln(self) -> Self;
    /// `ln(1 + x)`.
    fn vln_1p(self) -> Self;
}

impl VMath for f64 {
    #[inline(always)]
    fn vexp(self) -> Self {
        exp_f64(self)
    }
    #[inline(always)]
    fn vln(self) -> Self {
        ln_f64(self)
    }
    #[inline(always)]
    fn vln_1p(self) -> Self {
        ln_1p_f64(self)
    }
}

impl VMath for f32 {
    #[inline(always)]
    fn vexp(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn vln(self) -> Self {
        ln_f32(self)
    }
    #[inline(always)]
    fn vln_1p(self) -> Self {
        ln_1p_f32(self)
    }
}

/// `log(1 + exp(z))` without overflow, vectorisable.
#[inline(always)]
pub fn softplus<T: Real>(z: T) -> T {
    z.max(T::zero()) + (-z.abs()).vexp().vln_1p()
}

/// `1 / (1 + exp(−z))` without overflow, vectorisable: `e = exp(−|z|)`, then `1/(1+e)` for
/// `z ≥ 0` and `e/(1+e)` below (the two branches of the scalar form, as a select).
#[inline(always)]
pub fn sigmoid<T: Real>(z: T) -> T {
    let e = (-z.abs()).vexp();
    let num = if z >= T::zero() { T::one() } else { e };
    num / (T::one() + e)
}

/// The instruction sets the vectorised loops are compiled for. Each path performs the same
/// IEEE operations in the same order (fused multiply-adds only where written as `mul_add`,
/// never by contraction), so all give the same bits; only the vector width differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// As built: SSE2 on x86_64.
    Baseline,
    /// 256-bit vectors (AVX2 with FMA).
    Avx2,
    /// 512-bit vectors (AVX-512 F, VL, DQ, BW, with FMA).
    Avx512,
}

impl Isa {
    /// Whether this CPU runs the path (checked by `std` once, cached).
    #[inline(always)]
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Baseline => true,
                Isa::Avx2 => has!("avx2") && has!("fma"),
                Isa::Avx512 => {
                    has!("avx512f")
                        && has!("avx512vl")
                        && has!("avx512dq")
                        && has!("avx512bw")
                        && has!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Baseline
        }
    }

    /// The widest path this CPU runs.
    #[inline(always)]
    pub fn best() -> Isa {
        if Isa::Avx512.supported() {
            Isa::Avx512
        } else if Isa::Avx2.supported() {
            Isa::Avx2
        } else {
            Isa::Baseline
        }
    }
}

/// Whether the CPU has AVX2 and FMA (and so a vector path other than the baseline).
#[inline(always)]
pub fn has_avx2() -> bool {
    Isa::Avx2.supported()
}

/// Runs `f` compiled for the widest vector instructions the CPU has (AVX-512, else AVX2),
/// else as built (SSE2 on x86_64).
///
/// `f` should be an `#[inline(always)]` closure (see [`vectorised!`]) calling an
/// `#[inline(always)]` function that holds the loops: both are then inlined into, and
/// vectorised for, the wrapper of that instruction set. All paths perform the same IEEE
/// operations in the same order (explicit `mul_add`s, no contraction), so their results are
/// bit-identical.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    dispatch_isa(Isa::best(), f)
}

/// [`dispatch`], with the choice made by the caller: the widest vector path (`vector`) or the
/// baseline; for tests comparing the two.
#[inline(always)]
pub fn dispatch_with<R>(vector: bool, f: impl FnOnce() -> R) -> R {
    dispatch_isa(if vector { Isa::best() } else { Isa::Baseline }, f)
}

/// Runs `f` compiled for `isa`, or as built when the CPU lacks it.
#[inline(always)]
pub fn dispatch_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if isa.supported() {
            match isa {
                // SAFETY: the CPU supports the features each wrapper is compiled with (checked
                // just above), the only requirement of calling such a function.
                Isa::Avx512 => return unsafe { with_avx512(f) },
                Isa::Avx2 => return unsafe { with_avx2(f) },
                Isa::Baseline => {}
            }
        }
    }
    let _ = isa;
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,fma")]
#[inline(never)]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Evaluates an expression through [`dispatch`], as an `#[inline(always)]` closure so that
/// the expression (typically a call of an `#[inline(always)]` function holding the loops) is
/// compiled inside the AVX2 wrapper whatever the inliner's size heuristics say.
macro_rules! vectorised {
    ($e:expr) => {
        $crate::vmath::dispatch(
            #[inline(always)]
            || $e,
        )
    };
}
pub(crate) use vectorised;

/// `out[i] = e^{x[i]}`, vectorised (dispatched).
pub fn exp_slice<T: Real>(x: &[T], out: &mut [T]) {
    vectorised!(map_into(x, out, T::vexp))
}

/// `out[i] = ln(x[i])`, vectorised (dispatched).
pub fn ln_slice<T: Real>(x: &[T], out: &mut [T]) {
    vectorised!(map_into(x, out, T::vln))
}

/// `out[i] = ln(1 + x[i])`, vectorised (dispatched).
pub fn ln_1p_slice<T: Real>(x: &[T], out: &mut [T]) {
    vectorised!(map_into(x, out, T::vln_1p))
}

#[inline(always)]
fn map_into<T: Copy>(x: &[T], out: &mut [T], f: impl Fn(T) -> T) {
    let out = &mut out[..x.len()];
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[cfg(test)]
mod tests;
