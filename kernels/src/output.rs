//! [`LossOutput`]: what every kernel returns.

use ndarray::{ArrayD, IxDyn};

/// A loss value with the gradients asked for and PyTorch's warnings.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput<T> {
    /// The loss: 0-d for `mean`/`sum`, the unreduced tensor for `none`.
    pub loss: ArrayD<T>,
    /// Gradients of the loss (of its sum, for `none`) with respect to each differentiable
    /// argument, in argument order, each with that argument's shape. Empty unless asked for.
    pub grads: Vec<(&'static str, ArrayD<T>)>,
    /// Sentences for the warnings PyTorch would have printed.
    pub warnings: Vec<String>,
}

impl<T> LossOutput<T> {
    /// A loss without gradients or warnings.
    pub fn new(loss: ArrayD<T>) -> Self {
        Self {
            loss,
            grads: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Adds the gradient with respect to `arg`: `data` in row-major order, of shape `shape`.
    pub(crate) fn push_grad(&mut self, arg: &'static str, shape: &[usize], data: Vec<T>) {
        let g = ArrayD::from_shape_vec(IxDyn(shape), data).expect("one value per element");
        self.grads.push((arg, g));
    }

    /// The gradient with respect to `arg`, if it was computed.
    pub fn grad(&self, arg: &str) -> Option<&ArrayD<T>> {
        self.grads.iter().find(|(n, _)| *n == arg).map(|(_, g)| g)
    }
}
