//! [`LossError`]: what is wrong with a kernel's arguments, and which argument it is.

use std::fmt;

/// The kind of a [`LossError`]; the service maps each to its own error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Tensors PyTorch would refuse to combine (sizes, ranks, broadcasting).
    Shape,
    /// Values PyTorch rejects: a class index out of range, BCE input outside [0, 1], ...
    Value,
    /// A bad option value: `delta <= 0`, `p = 3`, `label_smoothing > 1`, ...
    Option,
    /// The computation would need more memory or work than the kernel allows.
    TooLarge,
    /// The computation was stopped from outside (see [`crate::cancel`]).
    Cancelled,
}

/// An argument PyTorch would reject, with the argument's name and a message a client can act on.
#[derive(Clone, Debug, PartialEq)]
pub struct LossError {
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// The argument at fault, named as in `torch.nn.functional` (`"input"`, `"target"`, `"delta"`).
    pub arg: &'static str,
    /// Where inside the argument, when one element is at fault (row-major multi-index).
    pub index: Option<Vec<usize>>,
    /// The message: names the argument, and gives both shapes or the bad value.
    pub message: String,
}

impl LossError {
    /// Tensors that cannot be combined.
    pub fn shape(arg: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Shape, arg, message)
    }

    /// A value PyTorch rejects.
    pub fn value(arg: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Value, arg, message)
    }

    /// A bad option.
    pub fn option(arg: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Option, arg, message)
    }

    /// More memory or work than the kernel allows.
    pub fn too_large(arg: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, arg, message)
    }

    /// The computation was cancelled.
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "", "the computation was cancelled")
    }

    /// Points the error at one element of the argument.
    pub fn at(mut self, index: &[usize]) -> Self {
        self.index = Some(index.to_vec());
        self
    }

    fn new(kind: ErrorKind, arg: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            arg,
            index: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for LossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LossError {}

/// Formats a shape as PyTorch prints it in messages: `[3, 5]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}
