//! PyTorch's broadcasting rules, the "unbroadcast" that sums a gradient back to the shape of
//! the argument it belongs to, and [`unravel`] (a flat position as a multi-index, for the
//! error messages that point at an element).

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::{LossError, fmt_shape};
use crate::real::Real;

/// The broadcast shape of `a` and `b`, or PyTorch's message naming the first dimension that
/// does not match ("The size of tensor a (4) must match the size of tensor b (3) at
/// non-singleton dimension 1").
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!(
                "The size of tensor a ({da}) must match the size of tensor b ({db}) at non-singleton dimension {i}"
            ));
        };
    }
    Ok(out)
}

/// Broadcasts `b` against `a`, naming `b_name` in the error.
pub fn broadcast_pair(
    a_name: &str,
    a: &[usize],
    b_name: &'static str,
    b: &[usize],
) -> Result<Vec<usize>, LossError> {
    broadcast_shape(a, b).map_err(|m| {
        LossError::shape(
            b_name,
            format!(
                "{a_name} has shape {} but {b_name} has shape {}, which do not broadcast: {m}",
                fmt_shape(a),
                fmt_shape(b)
            ),
        )
    })
}

/// Checks that `shape` broadcasts *to* `target` without enlarging it (PyTorch's in-place
/// broadcast rule, e.g. a weight expanded to the input's shape).
pub fn expands_to(shape: &[usize], target: &[usize]) -> bool {
    shape.len() <= target.len()
        && shape
            .iter()
            .rev()
            .zip(target.iter().rev())
            .all(|(&s, &t)| s == t || s == 1)
}

/// A view of `x` broadcast to `shape` (which must be a valid broadcast of `x`'s shape).
pub fn view_as<'a, T>(x: &'a ArrayViewD<'a, T>, shape: &[usize]) -> ArrayViewD<'a, T> {
    x.broadcast(IxDyn(shape))
        .expect("caller checked that the shapes broadcast")
}

/// `x` broadcast to `shape`, as a contiguous row-major vector.
pub fn materialize<T: Copy>(x: &ArrayViewD<'_, T>, shape: &[usize]) -> Vec<T> {
    let v = x
        .broadcast(IxDyn(shape))
        .expect("caller checked that the shapes broadcast");
    v.iter().copied().collect()
}

/// Sums `grad` (of the broadcast shape) over the broadcast dimensions so that it gets `shape`,
/// the shape of the argument it is the gradient of. Accumulates in `f64`, in a fixed order.
pub fn unbroadcast<T: Real>(grad: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    if grad.shape() == shape {
        return grad;
    }
    let gshape = grad.shape().to_vec();
    let lead = gshape.len() - shape.len();
    // Row-major strides of the result; 0 along every broadcast dimension.
    let mut strides = vec![0usize; gshape.len()];
    let mut s = 1usize;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 || gshape[lead + i] == 1 {
            strides[lead + i] = s;
        }
        s *= shape[i];
    }
    let mut acc = vec![0.0f64; shape.iter().product()];
    let mut idx = vec![0usize; gshape.len()];
    let mut off = 0usize;
    for g in grad.iter() {
        acc[off] += g.f64();
        // Advance the multi-index and the offset into `acc`.
        for d in (0..gshape.len()).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < gshape[d] {
                break;
            }
            off -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    ArrayD::from_shape_vec(IxDyn(shape), acc.into_iter().map(T::of).collect())
        .expect("the length is the product of the shape")
}

/// The row-major multi-index of the `flat`-th element of a tensor of shape `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = flat % d;
            flat /= d;
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn shapes_broadcast_as_in_pytorch() {
        assert_eq!(broadcast_shape(&[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shape(&[], &[2, 3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shape(&[0], &[1]).unwrap(), vec![0]);
        let e = broadcast_shape(&[2, 2], &[3]).unwrap_err();
        assert!(
            e.contains("tensor a (2)") && e.contains("tensor b (3)") && e.contains("dimension 1")
        );
    }

    #[test]
    fn unbroadcast_sums_over_broadcast_dimensions() {
        let g = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn();
        assert_eq!(
            unbroadcast(g.clone(), &[3]),
            array![5.0, 7.0, 9.0].into_dyn()
        );
        assert_eq!(
            unbroadcast(g.clone(), &[2, 1]),
            array![[6.0], [15.0]].into_dyn()
        );
        assert_eq!(
            unbroadcast(g.clone(), &[1, 3]),
            array![[5.0, 7.0, 9.0]].into_dyn()
        );
        assert_eq!(unbroadcast(g.clone(), &[]), ndarray::arr0(21.0).into_dyn());
        assert_eq!(unbroadcast(g.clone(), &[2, 3]), g);
    }

    #[test]
    fn unravel_gives_the_row_major_multi_index() {
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(4, &[2, 1, 3]), vec![1, 0, 1]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }

    #[test]
    fn expanding_never_enlarges() {
        assert!(expands_to(&[3], &[2, 3]));
        assert!(expands_to(&[1, 3], &[2, 3]));
        assert!(!expands_to(&[2, 2, 3], &[2, 3]));
        assert!(!expands_to(&[4], &[2, 3]));
    }
}
