//! Accuracy of the vectorisable functions against `std`, special values, and the
//! bit-identity of the AVX2 and baseline paths.

use super::*;
use crate::testing::Rng;

/// The helpers for one float type: `$ulps(a, b)`, the distance in units in the last place (0
/// for two NaNs or equal infinities, `u64::MAX` when only one is NaN); `$worst(xs, f, g)`, the
/// worst ulp error of `f` against `g` over `xs` with its argument; `$bits(seed)`, random bit
/// patterns (every float equally likely: mostly huge or tiny magnitudes); `$range(seed, lo,
/// hi)`, uniform values in `[lo, hi)`.
macro_rules! float_helpers {
    ($f:ty, $u:ty, $i:ty, $wide:ty, $ulps:ident, $worst:ident, $bits:ident, $range:ident) => {
        fn $ulps(a: $f, b: $f) -> u64 {
            if a.is_nan() || b.is_nan() {
                return if a.is_nan() && b.is_nan() {
                    0
                } else {
                    u64::MAX
                };
            }
            let key = |x: $f| {
                let i = x.to_bits() as $i;
                if i < 0 { <$i>::MIN - i } else { i }
            };
            (key(a) as $wide - key(b) as $wide).unsigned_abs() as u64
        }

        fn $worst(xs: impl Iterator<Item = $f>, f: fn($f) -> $f, g: fn($f) -> $f) -> (u64, $f) {
            let mut worst = (0, 0.0);
            for x in xs {
                let e = $ulps(f(x), g(x));
                if e > worst.0 {
                    worst = (e, x);
                }
            }
            worst
        }

        fn $bits(seed: u64) -> impl Iterator<Item = $f> {
            let mut rng = Rng::new(seed);
            (0..N).map(move |_| <$f>::from_bits(rng.next_u64() as $u))
        }

        fn $range(seed: u64, lo: f64, hi: f64) -> impl Iterator<Item = $f> {
            let mut rng = Rng::new(seed);
            (0..N).map(move |_| rng.range(lo, hi) as $f)
        }
    };
}

const N: usize = 1 << 20;

float_helpers!(f64, u64, i64, i128, ulps64, worst64, bits64, range64);
float_helpers!(f32, u32, i32, i64, ulps32, worst32, bits32, range32);

/// Values of every magnitude, both signs: `±2^u` with `u` uniform in `[lo, hi)`.
fn log_range64(seed: u64, lo: f64, hi: f64) -> impl Iterator<Item = f64> {
    let mut rng = Rng::new(seed);
    (0..N).map(move |_| {
        let s = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        s * rng.range(lo, hi).exp2()
    })
}

fn log_range32(seed: u64, lo: f64, hi: f64) -> impl Iterator<Item = f32> {
    log_range64(seed, lo, hi).map(|x| x as f32)
}

/// The values of `$xs` and the two neighbours of each finite non-zero one.
macro_rules! with_neighbours {
    ($f:ty, $xs:expr) => {{
        let mut v: Vec<$f> = $xs.to_vec();
        for x in v.clone() {
            if x.is_finite() && x != 0.0 {
                v.push(<$f>::from_bits(x.to_bits() + 1));
                v.push(<$f>::from_bits(x.to_bits() - 1));
            }
        }
        v
    }};
}

fn special64() -> Vec<f64> {
    with_neighbours!(
        f64,
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.0,
            0.5,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::from_bits(0x000f_ffff_ffff_ffff),
            -f64::from_bits(1),
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::EPSILON,
            -f64::EPSILON,
            1e-300,
            // exp's overflow and underflow thresholds and their neighbours.
            709.782_712_893_384,
            709.79,
            -708.396_418_532_264_1,
            -745.133_219_101_941_1,
            -745.2,
            -744.0,
            746.0,
            -746.0,
            -1e5,
            1e5,
            std::f64::consts::LN_2,
            std::f64::consts::E,
            1.0 - f64::EPSILON / 2.0,
            1.0 + f64::EPSILON,
            -1.0 + f64::EPSILON / 2.0,
        ]
    )
}

fn special32() -> Vec<f32> {
    with_neighbours!(
        f32,
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.0,
            0.5,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            -f32::from_bits(1),
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::EPSILON,
            -f32::EPSILON,
            88.722_84,
            88.73,
            -87.336_55,
            -103.972_08,
            -104.0,
            -103.0,
            89.0,
            -1e5,
            1e5,
            std::f32::consts::LN_2,
            std::f32::consts::E,
            1.0 - f32::EPSILON / 2.0,
            1.0 + f32::EPSILON,
            -1.0 + f32::EPSILON / 2.0,
        ]
    )
}

/// Asserts at most `max` ulp over every sample set, printing the worst case.
macro_rules! check {
    ($name:literal, $max:expr, $worst:ident, $f:expr, $g:expr, [$($xs:expr),* $(,)?]) => {{
        let mut all = (0u64, Default::default());
        $(
            let w = $worst($xs, $f, $g);
            if w.0 > all.0 {
                all = w;
            }
        )*
        eprintln!("{}: worst {} ulp at {:e}", $name, all.0, all.1);
        assert!(all.0 <= $max, "{}: {} ulp at {:e} ({:?} vs std {:?})", $name, all.0, all.1, $f(all.1), $g(all.1));
    }};
}

#[test]
fn exp_f64_is_within_one_ulp_of_std() {
    check!(
        "exp f64",
        1,
        worst64,
        exp_f64,
        f64::exp,
        [
            special64().into_iter(),
            bits64(1),
            range64(2, -746.0, 710.0),
            range64(3, -2.0, 2.0),
            log_range64(4, -60.0, 10.0),
        ]
    );
}

#[test]
fn exp_f32_is_within_one_ulp_of_std() {
    check!(
        "exp f32",
        1,
        worst32,
        exp_f32,
        f32::exp,
        [
            special32().into_iter(),
            bits32(1),
            range32(2, -104.0, 89.0),
            range32(3, -2.0, 2.0),
            log_range32(4, -30.0, 7.0),
        ]
    );
}

#[test]
fn ln_f64_is_within_one_ulp_of_std() {
    check!(
        "ln f64",
        1,
        worst64,
        ln_f64,
        f64::ln,
        [
            special64().into_iter(),
            bits64(5),
            range64(6, 0.0, 4.0),
            range64(7, 0.5, 1.5),
            log_range64(8, -1074.0, 1024.0),
        ]
    );
}

#[test]
fn ln_f32_is_within_one_ulp_of_std() {
    check!(
        "ln f32",
        1,
        worst32,
        ln_f32,
        f32::ln,
        [
            special32().into_iter(),
            bits32(5),
            range32(6, 0.0, 4.0),
            range32(7, 0.5, 1.5),
            log_range32(8, -149.0, 128.0),
        ]
    );
}

#[test]
fn ln_1p_f64_is_within_one_ulp_of_std() {
    check!(
        "ln_1p f64",
        1,
        worst64,
        ln_1p_f64,
        f64::ln_1p,
        [
            special64().into_iter(),
            bits64(9),
            range64(10, -1.0, 4.0),
            range64(11, -1e-3, 1e-3),
            log_range64(12, -1074.0, 1024.0),
            log_range64(13, -60.0, 1.0),
        ]
    );
}

#[test]
fn ln_1p_f32_is_within_one_ulp_of_std() {
    check!(
        "ln_1p f32",
        1,
        worst32,
        ln_1p_f32,
        f32::ln_1p,
        [
            special32().into_iter(),
            bits32(9),
            range32(10, -1.0, 4.0),
            range32(11, -1e-3, 1e-3),
            log_range32(12, -149.0, 128.0),
            log_range32(13, -30.0, 1.0),
        ]
    );
}

#[test]
fn exact_results_are_exact() {
    assert_eq!(exp_f64(0.0).to_bits(), 1.0f64.to_bits());
    assert_eq!(exp_f64(-0.0).to_bits(), 1.0f64.to_bits());
    assert_eq!(exp_f32(0.0).to_bits(), 1.0f32.to_bits());
    assert_eq!(exp_f64(f64::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f64(f64::INFINITY), f64::INFINITY);
    assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    assert!(exp_f64(f64::NAN).is_nan() && exp_f32(f32::NAN).is_nan());
    assert_eq!(exp_f64(-1000.0), 0.0);
    assert_eq!(exp_f64(1000.0), f64::INFINITY);
    assert_eq!(exp_f64(-745.2), 0.0);
    assert_eq!(exp_f64(-745.0), f64::from_bits(1));
    assert_eq!(exp_f32(-1000.0), 0.0);
    assert_eq!(exp_f32(100.0), f32::INFINITY);
    assert_eq!(ln_f64(1.0).to_bits(), 0);
    assert_eq!(ln_f32(1.0).to_bits(), 0);
    assert_eq!(ln_f64(0.0), f64::NEG_INFINITY);
    assert_eq!(ln_f64(-0.0), f64::NEG_INFINITY);
    assert_eq!(ln_f32(0.0), f32::NEG_INFINITY);
    assert!(ln_f64(-1.0).is_nan() && ln_f32(-1.0).is_nan());
    assert!(ln_f64(f64::NEG_INFINITY).is_nan());
    assert_eq!(ln_f64(f64::INFINITY), f64::INFINITY);
    assert_eq!(ln_f32(f32::INFINITY), f32::INFINITY);
    assert_eq!(ln_1p_f64(0.0).to_bits(), 0.0f64.to_bits());
    assert_eq!(ln_1p_f64(-0.0).to_bits(), (-0.0f64).to_bits());
    assert_eq!(ln_1p_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(ln_1p_f64(-1.0), f64::NEG_INFINITY);
    assert_eq!(ln_1p_f32(-1.0), f32::NEG_INFINITY);
    assert!(ln_1p_f64(-2.0).is_nan() && ln_1p_f32(-2.0).is_nan());
    assert_eq!(ln_1p_f64(f64::INFINITY), f64::INFINITY);
    assert!(ln_1p_f64(f64::NEG_INFINITY).is_nan());
    assert_eq!(ln_1p_f64(1e-300), 1e-300);
    assert_eq!(ln_1p_f32(1e-30), 1e-30);
}

#[test]
fn softplus_and_sigmoid_match_their_scalar_forms() {
    let mut rng = Rng::new(21);
    for _ in 0..100_000 {
        let z = rng.range(-120.0, 120.0);
        let want = z.max(0.0) + (-z.abs()).exp().ln_1p();
        assert!(ulps64(softplus(z), want) <= 2, "softplus {z}");
        let want = if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            z.exp() / (1.0 + z.exp())
        };
        assert!(ulps64(sigmoid(z), want) <= 2, "sigmoid {z}");
        let z = z as f32;
        let want = z.max(0.0) + (-z.abs()).exp().ln_1p();
        assert!(ulps32(softplus(z), want) <= 2, "softplus {z}");
    }
    assert_eq!(sigmoid(0.0f64), 0.5);
    assert_eq!(sigmoid(-0.0f32), 0.5);
    assert!(sigmoid(f64::NAN).is_nan() && softplus(f32::NAN).is_nan());
    assert_eq!(softplus(1000.0f32), 1000.0);
    assert_eq!(softplus(-1000.0f64), 0.0);
}

/// The slice functions give the same bits through the AVX-512, AVX2 and baseline paths (those
/// this CPU has), and the same bits as the scalar functions.
#[test]
fn every_vector_path_is_bit_identical_to_the_baseline() {
    let paths: Vec<Isa> = [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .filter(|i| i.supported())
        .collect();
    if paths.is_empty() {
        eprintln!("no AVX2 on this CPU: only the baseline path is tested");
    }
    let mut rng = Rng::new(31);
    let mut x64: Vec<f64> = (0..4099).map(|_| rng.range(-800.0, 800.0)).collect();
    x64.extend((0..4099).map(|_| f64::from_bits(rng.next_u64())));
    x64.extend(special64());
    let x32: Vec<f32> = x64.iter().map(|&x| x as f32).collect();
    fn run<T: Real>(x: &[T], isa: Isa) -> [Vec<T>; 3] {
        let mut out = [
            vec![T::zero(); x.len()],
            vec![T::zero(); x.len()],
            vec![T::zero(); x.len()],
        ];
        let [a, b, c] = &mut out;
        dispatch_isa(
            isa,
            #[inline(always)]
            || map_into(x, a, T::vexp),
        );
        dispatch_isa(
            isa,
            #[inline(always)]
            || map_into(x, b, T::vln),
        );
        dispatch_isa(
            isa,
            #[inline(always)]
            || map_into(x, c, T::vln_1p),
        );
        out
    }
    let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let base64 = run(&x64, Isa::Baseline);
    let base32 = run(&x32, Isa::Baseline);
    for &isa in &paths {
        let a = run(&x64, isa);
        for k in 0..3 {
            assert_eq!(
                bits64(&a[k]),
                bits64(&base64[k]),
                "{isa:?} f64 function {k}"
            );
        }
        let a = run(&x32, isa);
        for k in 0..3 {
            assert_eq!(
                bits32(&a[k]),
                bits32(&base32[k]),
                "{isa:?} f32 function {k}"
            );
        }
    }
    let scalar: Vec<f64> = x64.iter().map(|&x| exp_f64(x)).collect();
    assert_eq!(bits64(&scalar), bits64(&base64[0]));
    let scalar: Vec<f32> = x32.iter().map(|&x| ln_1p_f32(x)).collect();
    assert_eq!(bits32(&scalar), bits32(&base32[2]));
}

/// Every `f32` (run with `cargo test --release -p lossd-kernels -- --ignored exhaustive`).
#[test]
#[ignore]
fn exhaustive_f32() {
    for (name, f, g) in [
        ("exp", exp_f32 as fn(f32) -> f32, f32::exp as fn(f32) -> f32),
        ("ln", ln_f32, f32::ln),
        ("ln_1p", ln_1p_f32, f32::ln_1p),
    ] {
        let w = worst32((0..=u32::MAX).map(f32::from_bits), f, g);
        eprintln!("{name} f32, all inputs: worst {} ulp at {:e}", w.0, w.1);
        assert!(w.0 <= 1);
    }
}
