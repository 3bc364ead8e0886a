//! The element types kernels are generic over.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use num_traits::{Float, FloatConst};

/// A float type a kernel computes in: `f32` or `f64`.
///
/// Element-wise arithmetic happens in `Self`, as PyTorch does for a tensor of that dtype;
/// reductions accumulate in `f64` (see [`crate::reduction`]).
pub trait Real:
    Float
    + FloatConst
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + ndarray::ScalarOperand
    + crate::vmath::VMath
    + 'static
{
    /// PyTorch's name of the dtype (`"float32"`, `"float64"`).
    const DTYPE: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn of(x: f64) -> Self;

    /// Widens to `f64` (exact).
    fn f64(self) -> f64;
}

impl Real for f32 {
    const DTYPE: &'static str = "float32";

    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }

    #[inline(always)]
    fn f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    const DTYPE: &'static str = "float64";

    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }

    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
}
