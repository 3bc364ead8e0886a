//! What custom expressions need to know of a loss's shapes: the shape of its unreduced output
//! (`reduction: "none"`) and how each tensor argument's elements reach that output
//! ([`Layout`]). Each loss states both in its own file, as required items of
//! [`Loss`](super::Loss); this module holds the types and the rules several losses share.
//!
//! A kernel returns the gradient of its output's *sum*. Under a non-uniform upstream gradient
//! that is only enough where an argument's elements each reach a single output element: the
//! layout says where, so the expression's backward pass can scale each element's derivative
//! by its own upstream value (see `custom::builtin`).

use lossd_kernels::broadcast::broadcast_shape;
use serde_json::{Map, Value};

/// A tensor argument's shape, as a shape rule sees it.
#[derive(Clone, Debug)]
pub struct ArgShape {
    /// The argument's name.
    pub name: &'static str,
    /// Its shape (`[]` for a literal).
    pub shape: Vec<usize>,
    /// Given as a number literal (sent as a plain JSON number, such as a float `var`).
    pub literal: bool,
}

/// A call's options (besides `reduction`), as JSON values.
pub type Options = Map<String, Value>;

/// The output shape with `reduction: "none"` from the arguments' shapes and the options, or
/// why the kernel would refuse the call.
pub type NoneShape = fn(&[ArgShape], &Options) -> Result<Vec<usize>, String>;

/// The dimensions of argument `arg` that the output lacks (each element of `arg` belongs to the
/// output element at its index without them), or `None` when its elements reach several
/// output elements.
pub type RowAxes = fn(&str, &[ArgShape]) -> Option<Vec<usize>>;

/// The shape an element-wise loss views argument `arg` (of shape `shape`, next to `input` of
/// shape `input`) as before broadcasting it, or `None` when it cannot.
pub type View = fn(arg: &str, shape: &[usize], input: &[usize]) -> Option<Vec<usize>>;

/// How the elements of a loss's tensor arguments reach its unreduced output.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Output element `i` depends only on element `i` of each argument once it is broadcast
    /// to the output's shape (after `view`, for an argument with a shape rule of its own).
    Elementwise {
        /// Reshapes an argument before broadcasting it; `None` for plain broadcasting.
        view: Option<View>,
    },
    /// Some arguments are split into rows, one per output element (the class dimension of
    /// cross-entropy, the embedding dimension of the triplet loss); the others feed every
    /// output element.
    Rows(RowAxes),
}

impl Layout {
    /// Element-wise with plain broadcasting.
    pub const ELEMENTWISE: Layout = Layout::Elementwise { view: None };

    /// Whether the loss is element-wise in its (broadcast) arguments.
    pub fn is_elementwise(self) -> bool {
        matches!(self, Layout::Elementwise { .. })
    }

    /// For a row-wise loss, the dimensions of `arg` its output lacks (see [`RowAxes`]).
    pub fn row_axes(self, arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
        match self {
            Layout::Rows(f) => f(arg, args),
            Layout::Elementwise { .. } => None,
        }
    }
}

/// The argument called `name`, if given.
pub fn get<'a>(args: &'a [ArgShape], name: &str) -> Option<&'a ArgShape> {
    args.iter().find(|a| a.name == name)
}

/// The shape of argument `name` (`[]` when it is not given).
pub fn shape(args: &[ArgShape], name: &str) -> Vec<usize> {
    get(args, name).map(|a| a.shape.clone()).unwrap_or_default()
}

/// The number of dimensions of argument `name`, if given.
pub fn rank(args: &[ArgShape], name: &str) -> Option<usize> {
    get(args, name).map(|a| a.shape.len())
}

/// `[2, 3]` as error messages write shapes.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The broadcast shape of `a` and `b`, or a message naming `what` does not broadcast.
pub fn broadcast(what: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    broadcast_shape(a, b).map_err(|m| {
        format!(
            "{what}: shapes {} and {} do not broadcast ({m})",
            fmt_shape(a),
            fmt_shape(b)
        )
    })
}

/// The rule of the point-wise losses: `input` and `target` broadcast together.
pub fn input_and_target(args: &[ArgShape], _: &Options) -> Result<Vec<usize>, String> {
    broadcast(
        "input and target",
        &shape(args, "input"),
        &shape(args, "target"),
    )
}

/// The rule of the losses whose output has exactly `input`'s shape (the other tensors must
/// broadcast to it without enlarging it, which the kernel checks).
pub fn input_shape(args: &[ArgShape], _: &Options) -> Result<Vec<usize>, String> {
    Ok(shape(args, "input"))
}

/// The class dimension of a class-scores tensor of `rank` dimensions: 1, or 0 when unbatched.
fn class_dim(rank: usize) -> usize {
    if rank >= 2 { 1 } else { 0 }
}

/// The rule of the class-index losses: `input` `(N, C, d1..dK)` → `(N, d1..dK)`, `(C)` → `()`.
pub fn without_class_dim(args: &[ArgShape], _: &Options) -> Result<Vec<usize>, String> {
    match shape(args, "input").as_slice() {
        [] => Err("input is 0-d but must have a class dimension".into()),
        [_] => Ok(vec![]),
        [n, _, rest @ ..] => Ok(std::iter::once(*n).chain(rest.iter().copied()).collect()),
    }
}

/// Rows along the class dimension of argument `arg` (dimension 1, or 0 when unbatched).
pub fn class_rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    let r = rank(args, arg)?;
    (r >= 1).then(|| vec![class_dim(r)])
}

/// Rows along the class dimension of `input` only (the other tensors are class indices or
/// per-class weights).
pub fn input_class_rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    (arg == "input").then(|| class_rows(arg, args))?
}

/// Rows along the last dimension of argument `arg` (embeddings, features).
pub fn last_dim_rows(arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    rank(args, arg)?.checked_sub(1).map(|d| vec![d])
}

/// A tensor argument of `shape`, for tests of shape rules.
#[cfg(test)]
pub(crate) fn arg(name: &'static str, shape: &[usize]) -> ArgShape {
    ArgShape {
        name,
        shape: shape.to_vec(),
        literal: false,
    }
}

#[cfg(test)]
mod tests {
    use super::arg as s;
    use super::*;

    #[test]
    fn the_shared_rules_follow_pytorch() {
        let none = Map::new();
        let a = [s("input", &[2, 1]), s("target", &[3])];
        assert_eq!(input_and_target(&a, &none), Ok(vec![2, 3]));
        let a = [s("input", &[2, 2]), s("target", &[3])];
        assert!(
            input_and_target(&a, &none)
                .unwrap_err()
                .contains("[2, 2] and [3]")
        );
        let a = [s("input", &[4, 5, 6])];
        assert_eq!(without_class_dim(&a, &none), Ok(vec![4, 6]));
        assert_eq!(class_rows("input", &a), Some(vec![1]));
        assert_eq!(last_dim_rows("input", &a), Some(vec![2]));
        assert_eq!(class_rows("weight", &a), None);
        assert!(without_class_dim(&[s("input", &[])], &none).is_err());
    }
}
