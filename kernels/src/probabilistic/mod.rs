//! Probabilistic losses.

pub mod ctc;
pub mod gaussian_nll;
pub mod kl_div;
pub mod poisson_nll;

use std::borrow::Cow;

use ndarray::ArrayViewD;

use crate::LossError;
use crate::broadcast::broadcast_pair;
use crate::regression::contiguous;

/// Input and target broadcast together: the input's and the target's own shapes, the
/// broadcast shape, its element count, and input and target over it, row-major.
pub(crate) type Operands<'a, T> = (
    Vec<usize>,
    Vec<usize>,
    Vec<usize>,
    usize,
    Cow<'a, [T]>,
    Cow<'a, [T]>,
);

/// Broadcasts `input` and `target` as `kl_div` and `poisson_nll_loss` take them (a `Shape`
/// error on `"target"` when they do not).
pub(crate) fn operands<'a, T: Copy>(
    input: &'a ArrayViewD<'a, T>,
    target: &'a ArrayViewD<'a, T>,
) -> Result<Operands<'a, T>, LossError> {
    let (xs, ys) = (input.shape().to_vec(), target.shape().to_vec());
    let shape = broadcast_pair("input", &xs, "target", &ys)?;
    let n: usize = shape.iter().product();
    let x = contiguous(input, &shape);
    let y = contiguous(target, &shape);
    Ok((xs, ys, shape, n, x, y))
}
