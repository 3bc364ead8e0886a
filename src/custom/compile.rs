//! From syntax to a computation graph: names resolved, arguments bound to parameters, literal
//! options and dims checked, and every node's shape inferred from the tensors' shapes, so that
//! every type and shape error is found before anything is computed, and the cost is known.

use std::collections::HashMap;

use lossd_kernels::broadcast::broadcast_shape;
use serde_json::{Map, Value};

use super::ExprError;
use super::builtin::{self, LossCall};
use super::parse::{Arg, Ast, BinOp, Span, SynKind};
use crate::error::Code;
use crate::losses::Entry;
pub use crate::losses::shape::fmt_shape;

/// An element-wise function of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `abs`
    Abs,
    /// `square`
    Square,
    /// `sqrt`
    Sqrt,
    /// `exp`
    Exp,
    /// `log`
    Log,
    /// `log1p`
    Log1p,
    /// `expm1`
    Expm1,
    /// `sigmoid`
    Sigmoid,
    /// `softplus`
    Softplus,
    /// `tanh`
    Tanh,
    /// `relu`
    Relu,
}

/// A reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// `sum`
    Sum,
    /// `mean`
    Mean,
    /// `max`
    Max,
    /// `min`
    Min,
    /// `logsumexp`
    LogSumExp,
}

/// What a node computes.
#[derive(Clone, Debug)]
pub enum Op {
    /// The request's tensor of this index.
    Leaf(usize),
    /// A number (a 0-d tensor).
    Const(f64),
    /// Unary minus.
    Neg,
    /// A binary operator, with broadcasting.
    Bin(BinOp),
    /// An element-wise function.
    Unary(Unary),
    /// `clamp` with number bounds (`torch.clamp(x, 0.0, 1.0)`): one input.
    ClampScalar {
        /// The lower bound.
        min: Option<f64>,
        /// The upper bound.
        max: Option<f64>,
    },
    /// `clamp` with tensor bounds: inputs `x`, then `min` if present, then `max` if present.
    ClampTensor {
        /// Whether there is a lower bound.
        min: bool,
        /// Whether there is an upper bound.
        max: bool,
    },
    /// `minimum(a, b)`.
    Minimum,
    /// `maximum(a, b)`.
    Maximum,
    /// `where(cond, a, b)`.
    Where,
    /// A reduction over everything (`dim: None`) or one dimension.
    Reduce {
        /// Which.
        kind: Reduce,
        /// The dimension (normalised; 0 for a 0-d input), or everything.
        dim: Option<usize>,
        /// Whether the reduced dimension(s) stay with size 1.
        keepdim: bool,
    },
    /// `softmax` or `log_softmax` along `dim`.
    Softmax {
        /// The dimension (normalised; 0 for a 0-d input).
        dim: usize,
        /// `log_softmax`.
        log: bool,
    },
    /// A built-in loss.
    Loss(Box<LossCall>),
}

/// A node of the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Its operands (earlier nodes).
    pub inputs: Vec<usize>,
    /// Its shape, inferred before computing.
    pub shape: Vec<usize>,
    /// The source text it comes from.
    pub span: Span,
    /// Whether a gradient flows back through it (it depends on a tensor of `grad`).
    pub grad: bool,
}

/// A checked expression, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The nodes, each after its inputs.
    pub nodes: Vec<Node>,
    /// The result.
    pub root: usize,
    /// The node of each request tensor the expression uses.
    pub leaves: Vec<Option<usize>>,
    /// Elements read or written by all operations together (saturating).
    pub cost: usize,
}

/// A documented function of the language.
#[derive(Clone, Copy, Debug)]
pub struct FuncDoc {
    /// The name.
    pub name: &'static str,
    /// How it is called.
    pub signature: &'static str,
    /// `element-wise`, `reduction`, `softmax`, `selection`.
    pub group: &'static str,
    /// What it computes.
    pub summary: &'static str,
    /// Its gradient, with the subgradients chosen.
    pub gradient: &'static str,
}

/// Every function of the language other than the built-in losses.
pub const FUNCTIONS: &[FuncDoc] = &[
    FuncDoc {
        name: "abs",
        signature: "abs(input)",
        group: "element-wise",
        summary: "|x|",
        gradient: "sign(x); 0 at x = 0 (and at NaN), as PyTorch",
    },
    FuncDoc {
        name: "square",
        signature: "square(input)",
        group: "element-wise",
        summary: "x²",
        gradient: "2x",
    },
    FuncDoc {
        name: "sqrt",
        signature: "sqrt(input)",
        group: "element-wise",
        summary: "√x (NaN below 0)",
        gradient: "1/(2√x): +Infinity at x = 0 (NaN where the incoming gradient is 0), as PyTorch",
    },
    FuncDoc {
        name: "exp",
        signature: "exp(input)",
        group: "element-wise",
        summary: "eˣ",
        gradient: "eˣ",
    },
    FuncDoc {
        name: "log",
        signature: "log(input)",
        group: "element-wise",
        summary: "natural logarithm (−Infinity at 0, NaN below)",
        gradient: "1/x",
    },
    FuncDoc {
        name: "log1p",
        signature: "log1p(input)",
        group: "element-wise",
        summary: "log(1 + x), accurate near 0",
        gradient: "1/(1 + x)",
    },
    FuncDoc {
        name: "expm1",
        signature: "expm1(input)",
        group: "element-wise",
        summary: "eˣ − 1, accurate near 0",
        gradient: "eˣ",
    },
    FuncDoc {
        name: "sigmoid",
        signature: "sigmoid(input)",
        group: "element-wise",
        summary: "1/(1 + e⁻ˣ)",
        gradient: "σ(x)(1 − σ(x))",
    },
    FuncDoc {
        name: "softplus",
        signature: "softplus(input)",
        group: "element-wise",
        summary: "log(1 + eˣ); x itself where x > 20 (PyTorch's default beta = 1, threshold = 20)",
        gradient: "σ(x); 1 where x > 20",
    },
    FuncDoc {
        name: "tanh",
        signature: "tanh(input)",
        group: "element-wise",
        summary: "hyperbolic tangent",
        gradient: "1 − tanh²(x)",
    },
    FuncDoc {
        name: "relu",
        signature: "relu(input)",
        group: "element-wise",
        summary: "max(x, 0)",
        gradient: "1 where relu(x) > 0, else 0: relu'(0) = 0; a NaN input passes the gradient, as PyTorch",
    },
    FuncDoc {
        name: "clamp",
        signature: "clamp(input, min=None, max=None)",
        group: "element-wise",
        summary: "min(max(x, min), max); at least one bound; max wins when min > max; NaN stays NaN. \
                  Number bounds behave as torch.clamp with Python numbers, tensor bounds (any \
                  non-literal expression) as torch.clamp with tensors, broadcasting",
        gradient: "Number bounds: 1 strictly inside (min < x < max), 0 at and beyond the bounds \
                   (PyTorch 2.15's clamp with scalar bounds). Tensor bounds: x gets 1 inside, \
                   ½ on a bound (the other ½ going to that bound), 1 when x = min = max; a bound \
                   gets the gradient where it is the result; with min > max all of it goes to max",
    },
    FuncDoc {
        name: "minimum",
        signature: "minimum(input, other)",
        group: "element-wise",
        summary: "element-wise minimum, broadcasting; NaN if either is NaN",
        gradient: "to the smaller; ties split it in half; with a NaN both get all of it (as PyTorch)",
    },
    FuncDoc {
        name: "maximum",
        signature: "maximum(input, other)",
        group: "element-wise",
        summary: "element-wise maximum, broadcasting; NaN if either is NaN",
        gradient: "to the larger; ties split it in half; with a NaN both get all of it (as PyTorch)",
    },
    FuncDoc {
        name: "pow",
        signature: "pow(input, exponent)",
        group: "element-wise",
        summary: "xʸ, the same as x ^ y (or x ** y)",
        gradient: "x: y·x^(y−1), 0 where y = 0; y: xʸ·log(x), 0 where x = 0 and y ≥ 0 (as PyTorch)",
    },
    FuncDoc {
        name: "where",
        signature: "where(condition, input, other)",
        group: "selection",
        summary: "input where condition ≠ 0 (comparisons give 1 and 0), else other; broadcasting",
        gradient: "routed to input where the condition holds, to other elsewhere; none to the condition",
    },
    FuncDoc {
        name: "sum",
        signature: "sum(input, dim=None, keepdim=False)",
        group: "reduction",
        summary: "sum of all elements, or along dim (negative counts from the end); accumulated in float64",
        gradient: "1 for each element summed",
    },
    FuncDoc {
        name: "mean",
        signature: "mean(input, dim=None, keepdim=False)",
        group: "reduction",
        summary: "mean of all elements, or along dim; the mean of nothing is NaN",
        gradient: "1/n for each element",
    },
    FuncDoc {
        name: "max",
        signature: "max(input, dim=None, keepdim=False)",
        group: "reduction",
        summary: "largest element (NaN if any is NaN), of all or along dim; an empty tensor or dim is \
                  an error. For the element-wise maximum of two tensors use maximum(a, b)",
        gradient: "Over everything (PyTorch's x.max()): shared equally by all elements equal to the \
                   maximum. Along dim (x.max(dim).values): all of it to the first maximal element \
                   of each slice (the index torch.max returns)",
    },
    FuncDoc {
        name: "min",
        signature: "min(input, dim=None, keepdim=False)",
        group: "reduction",
        summary: "smallest element, as max",
        gradient: "as max: shared equally over everything, to the first minimal element along dim",
    },
    FuncDoc {
        name: "logsumexp",
        signature: "logsumexp(input, dim=None, keepdim=False)",
        group: "reduction",
        summary: "log Σ eˣ, stable (the maximum is subtracted first); −Infinity for nothing",
        gradient: "softmax of the elements reduced",
    },
    FuncDoc {
        name: "softmax",
        signature: "softmax(input, dim)",
        group: "softmax",
        summary: "eˣ / Σ eˣ along dim (stable)",
        gradient: "y ⊙ (g − Σ g ⊙ y) along dim",
    },
    FuncDoc {
        name: "log_softmax",
        signature: "log_softmax(input, dim)",
        group: "softmax",
        summary: "x − logsumexp(x) along dim (stable)",
        gradient: "g − softmax(x) · Σ g along dim",
    },
];

fn unary_of(name: &str) -> Option<Unary> {
    Some(match name {
        "abs" => Unary::Abs,
        "square" => Unary::Square,
        "sqrt" => Unary::Sqrt,
        "exp" => Unary::Exp,
        "log" => Unary::Log,
        "log1p" => Unary::Log1p,
        "expm1" => Unary::Expm1,
        "sigmoid" => Unary::Sigmoid,
        "softplus" => Unary::Softplus,
        "tanh" => Unary::Tanh,
        "relu" => Unary::Relu,
        _ => return None,
    })
}

fn reduce_of(name: &str) -> Option<Reduce> {
    Some(match name {
        "sum" => Reduce::Sum,
        "mean" => Reduce::Mean,
        "max" => Reduce::Max,
        "min" => Reduce::Min,
        "logsumexp" => Reduce::LogSumExp,
        _ => return None,
    })
}

/// The number of elements of a shape, saturating.
pub fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// What a syntax node stands for, once compiled.
#[derive(Clone, Debug)]
enum Val {
    Node(usize),
    Num(f64),
    Str(String),
    Bool(bool),
    NoneLit,
}

impl Val {
    fn describe(&self) -> &'static str {
        match self {
            Val::Node(_) => "a tensor",
            Val::Num(_) => "a number",
            Val::Str(_) => "a string",
            Val::Bool(_) => "a boolean",
            Val::NoneLit => "None",
        }
    }
}

struct Compiler<'a> {
    src: &'a str,
    ast: &'a Ast,
    tensors: &'a [(String, Vec<usize>)],
    index: HashMap<&'a str, usize>,
    is_grad: Vec<bool>,
    nodes: Vec<Node>,
    leaves: Vec<Option<usize>>,
    vals: Vec<Val>,
    cost: usize,
}

/// Compiles `ast` (parsed from `src`) over tensors of the given names and shapes, `grad`
/// holding the indices of the tensors to differentiate.
pub fn compile(
    src: &str,
    ast: &Ast,
    tensors: &[(String, Vec<usize>)],
    grad: &[usize],
) -> Result<Graph, ExprError> {
    let mut is_grad = vec![false; tensors.len()];
    for &k in grad {
        is_grad[k] = true;
    }
    let mut c = Compiler {
        src,
        ast,
        tensors,
        index: tensors
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect(),
        is_grad,
        nodes: Vec::new(),
        leaves: vec![None; tensors.len()],
        vals: Vec::with_capacity(ast.nodes.len()),
        cost: 0,
    };
    for i in 0..ast.nodes.len() {
        let v = c.node(i)?;
        c.vals.push(v);
    }
    let root = c.tensor(ast.root)?;
    Ok(Graph {
        nodes: c.nodes,
        root,
        leaves: c.leaves,
        cost: c.cost,
    })
}

/// One parameter of a function.
struct Param {
    name: &'static str,
    required: bool,
}

const fn req(name: &'static str) -> Param {
    Param {
        name,
        required: true,
    }
}

const fn opt(name: &'static str) -> Param {
    Param {
        name,
        required: false,
    }
}

impl<'a> Compiler<'a> {
    fn span(&self, syn: usize) -> Span {
        self.ast.nodes[syn].span
    }

    /// The source text of a span, shortened when long.
    fn text(&self, span: Span) -> String {
        let t = &self.src[span.start..span.end];
        if t.chars().count() > 80 {
            let head: String = t.chars().take(77).collect();
            format!("{head}...")
        } else {
            t.to_string()
        }
    }

    fn err(&self, span: Span, msg: String) -> ExprError {
        ExprError::syntax(self.src, span.start, msg)
    }

    fn shape_err(&self, span: Span, msg: String) -> ExprError {
        ExprError::new(Code::ShapeMismatch, self.src, span.start, msg)
    }

    fn push(
        &mut self,
        op: Op,
        inputs: Vec<usize>,
        shape: Vec<usize>,
        span: Span,
        cost: usize,
    ) -> usize {
        let grad = match &op {
            Op::Leaf(i) => self.is_grad[*i],
            Op::Const(_) => false,
            Op::Bin(b) if b.is_comparison() => false,
            _ => inputs.iter().any(|&i| self.nodes[i].grad),
        };
        self.cost = self.cost.saturating_add(cost);
        self.nodes.push(Node {
            op,
            inputs,
            shape,
            span,
            grad,
        });
        self.nodes.len() - 1
    }

    fn shape(&self, node: usize) -> &[usize] {
        &self.nodes[node].shape
    }

    /// The tensor a syntax node stands for (a number becomes a 0-d constant).
    fn tensor(&mut self, syn: usize) -> Result<usize, ExprError> {
        match self.vals[syn].clone() {
            Val::Node(n) => Ok(n),
            Val::Num(v) => Ok(self.push(Op::Const(v), vec![], vec![], self.span(syn), 1)),
            other => Err(self.err(
                self.span(syn),
                format!(
                    "expected a tensor or a number, found {} (`{}`)",
                    other.describe(),
                    self.text(self.span(syn))
                ),
            )),
        }
    }

    /// The broadcast shape of two operands of the expression at `span`.
    fn broadcast(
        &self,
        span: Span,
        a: (usize, usize),
        b: (usize, usize),
    ) -> Result<Vec<usize>, ExprError> {
        let (sa, sb) = (self.shape(a.1), self.shape(b.1));
        broadcast_shape(sa, sb).map_err(|m| {
            self.shape_err(
                span,
                format!(
                    "`{}`: `{}` has shape {} and `{}` has shape {}, which do not broadcast ({m})",
                    self.text(span),
                    self.text(self.span(a.0)),
                    fmt_shape(sa),
                    self.text(self.span(b.0)),
                    fmt_shape(sb)
                ),
            )
        })
    }

    fn node(&mut self, i: usize) -> Result<Val, ExprError> {
        let syn = &self.ast.nodes[i];
        let span = syn.span;
        Ok(match &syn.kind {
            SynKind::Num(v) => Val::Num(*v),
            SynKind::Str(s) => Val::Str(s.clone()),
            SynKind::Bool(b) => Val::Bool(*b),
            SynKind::NoneLit => Val::NoneLit,
            SynKind::Name(name) => {
                let Some(&k) = self.index.get(name.as_str()) else {
                    let hint = if FUNCTIONS.iter().any(|f| f.name == name)
                        || crate::losses::find(name).is_some()
                    {
                        format!(" (`{name}` is a function: call it with parentheses)")
                    } else {
                        String::new()
                    };
                    return Err(self.err(
                        span,
                        format!(
                            "unknown name `{name}`: the request's tensors are {}{hint}",
                            super::list_names(self.tensors.iter().map(|(n, _)| n.as_str()))
                        ),
                    ));
                };
                let node = match self.leaves[k] {
                    Some(n) => n,
                    None => {
                        let shape = self.tensors[k].1.clone();
                        let n = self.push(Op::Leaf(k), vec![], shape, span, 0);
                        self.leaves[k] = Some(n);
                        n
                    }
                };
                Val::Node(node)
            }
            SynKind::Neg(a) => {
                let a = *a;
                match self.vals[a] {
                    Val::Num(v) => Val::Num(-v),
                    _ => {
                        let x = self.tensor(a)?;
                        let shape = self.shape(x).to_vec();
                        let n = numel(&shape);
                        Val::Node(self.push(Op::Neg, vec![x], shape, span, n))
                    }
                }
            }
            SynKind::Bin(op, a, b) => {
                let (op, a, b) = (*op, *a, *b);
                if let (Val::Num(x), Val::Num(y)) = (&self.vals[a], &self.vals[b]) {
                    return Ok(Val::Num(fold(op, *x, *y)));
                }
                let x = self.tensor(a)?;
                let y = self.tensor(b)?;
                let shape = self.broadcast(span, (a, x), (b, y))?;
                let n = numel(&shape);
                Val::Node(self.push(Op::Bin(op), vec![x, y], shape, span, n))
            }
            SynKind::Call {
                name,
                name_span,
                args,
            } => Val::Node(self.call(name, *name_span, span, args)?),
        })
    }

    /// Binds the arguments of a call to `params`: the syntax node given for each, if any.
    fn bind(
        &self,
        name: &str,
        span: Span,
        params: &[Param],
        args: &[Arg],
    ) -> Result<Vec<Option<usize>>, ExprError> {
        let mut slots: Vec<Option<usize>> = vec![None; params.len()];
        let list = || params.iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
        for (i, arg) in args.iter().enumerate() {
            let k = match &arg.keyword {
                None => {
                    if i >= params.len() {
                        return Err(self.err(
                            self.span(arg.value),
                            format!(
                                "{name}() takes at most {} arguments ({}), but {} were given",
                                params.len(),
                                list(),
                                args.len()
                            ),
                        ));
                    }
                    i
                }
                Some((kw, kspan)) => {
                    let Some(k) = params.iter().position(|p| p.name == kw) else {
                        return Err(self.err(
                            *kspan,
                            format!(
                                "{name}() has no argument `{kw}`: its arguments are {}",
                                list()
                            ),
                        ));
                    };
                    if slots[k].is_some() {
                        return Err(self.err(
                            *kspan,
                            format!("{name}() got `{kw}` both positionally and by keyword"),
                        ));
                    }
                    k
                }
            };
            slots[k] = Some(arg.value);
        }
        for (p, s) in params.iter().zip(&slots) {
            if p.required && s.is_none() {
                return Err(self.err(
                    span,
                    format!(
                        "{name}() is missing its argument `{}` ({name}({}))",
                        p.name,
                        list()
                    ),
                ));
            }
        }
        Ok(slots)
    }

    /// A `dim` argument: an integer literal in range for rank `rank`, normalised.
    fn dim(&self, syn: usize, x: (usize, usize), rank: usize) -> Result<Option<usize>, ExprError> {
        let span = self.span(syn);
        match self.vals[syn] {
            Val::NoneLit => Ok(None),
            Val::Num(v) if v.fract() == 0.0 && v.abs() < 1e15 => {
                let r = rank.max(1) as i64;
                let d = v as i64;
                if d < -r || d >= r {
                    return Err(self.shape_err(
                        span,
                        format!(
                            "dim {d} does not exist: `{}` has shape {} ({} dimensions), so dim must be in [{}, {}]",
                            self.text(self.span(x.0)),
                            fmt_shape(self.shape(x.1)),
                            rank,
                            -r,
                            r - 1
                        ),
                    ));
                }
                Ok(Some(if d < 0 { (d + r) as usize } else { d as usize }))
            }
            ref other => Err(self.err(
                span,
                format!(
                    "dim must be an integer literal (or None), found {} (`{}`)",
                    other.describe(),
                    self.text(span)
                ),
            )),
        }
    }

    fn boolean(&self, syn: Option<usize>, what: &str) -> Result<bool, ExprError> {
        let Some(syn) = syn else { return Ok(false) };
        match self.vals[syn] {
            Val::Bool(b) => Ok(b),
            ref other => Err(self.err(
                self.span(syn),
                format!("{what} must be True or False, found {}", other.describe()),
            )),
        }
    }

    fn call(
        &mut self,
        name: &str,
        name_span: Span,
        span: Span,
        args: &[Arg],
    ) -> Result<usize, ExprError> {
        if let Some(u) = unary_of(name) {
            let s = self.bind(name, span, &[req("input")], args)?;
            let x = self.tensor(s[0].expect("required"))?;
            let shape = self.shape(x).to_vec();
            let n = numel(&shape);
            return Ok(self.push(Op::Unary(u), vec![x], shape, span, n));
        }
        if let Some(kind) = reduce_of(name) {
            let s = self.bind(
                name,
                span,
                &[req("input"), opt("dim"), opt("keepdim")],
                args,
            )?;
            let xs = s[0].expect("required");
            let x = self.tensor(xs)?;
            let rank = self.shape(x).len();
            if let (Some(d), Reduce::Max | Reduce::Min) = (s[1], kind)
                && !matches!(self.vals[d], Val::Num(_) | Val::NoneLit)
            {
                return Err(self.err(
                    self.span(d),
                    format!(
                        "{name}(input, dim) reduces along a dimension, and dim must be an integer \
                         literal; for the element-wise {name}imum of two tensors use {name}imum(a, b)"
                    ),
                ));
            }
            let dim = match s[1] {
                Some(d) => self.dim(d, (xs, x), rank)?,
                None => None,
            };
            let keepdim = self.boolean(s[2], "keepdim")?;
            let xshape = self.shape(x).to_vec();
            let shape: Vec<usize> = match dim {
                None if keepdim => vec![1; rank],
                None => vec![],
                Some(_) if rank == 0 => vec![],
                Some(d) if keepdim => {
                    let mut s = xshape.clone();
                    s[d] = 1;
                    s
                }
                Some(d) => {
                    let mut s = xshape.clone();
                    s.remove(d);
                    s
                }
            };
            if matches!(kind, Reduce::Max | Reduce::Min) {
                let empty = match dim {
                    None => numel(&xshape) == 0,
                    Some(d) => rank > 0 && xshape[d] == 0,
                };
                if empty {
                    return Err(self.shape_err(
                        span,
                        format!(
                            "`{}`: {name} of an empty {} has no value (`{}` has shape {}); PyTorch raises too",
                            self.text(span),
                            if dim.is_some() { "dimension" } else { "tensor" },
                            self.text(self.span(xs)),
                            fmt_shape(&xshape)
                        ),
                    ));
                }
            }
            let n = numel(&xshape).saturating_add(numel(&shape));
            return Ok(self.push(Op::Reduce { kind, dim, keepdim }, vec![x], shape, span, n));
        }
        match name {
            "softmax" | "log_softmax" => {
                let s = self.bind(name, span, &[req("input"), req("dim")], args)?;
                let xs = s[0].expect("required");
                let x = self.tensor(xs)?;
                let shape = self.shape(x).to_vec();
                let ds = s[1].expect("required");
                let Some(dim) = self.dim(ds, (xs, x), shape.len())? else {
                    return Err(self.err(self.span(ds), format!("{name}() needs a dim")));
                };
                let dim = if shape.is_empty() { 0 } else { dim };
                let n = numel(&shape).saturating_mul(2);
                Ok(self.push(
                    Op::Softmax {
                        dim,
                        log: name == "log_softmax",
                    },
                    vec![x],
                    shape,
                    span,
                    n,
                ))
            }
            "minimum" | "maximum" | "pow" => {
                let second = if name == "pow" { "exponent" } else { "other" };
                let s = self.bind(name, span, &[req("input"), req(second)], args)?;
                let (a, b) = (s[0].expect("required"), s[1].expect("required"));
                if name == "pow"
                    && let (Val::Num(x), Val::Num(y)) = (&self.vals[a], &self.vals[b])
                {
                    let v = fold(BinOp::Pow, *x, *y);
                    return Ok(self.push(Op::Const(v), vec![], vec![], span, 1));
                }
                let x = self.tensor(a)?;
                let y = self.tensor(b)?;
                let shape = self.broadcast(span, (a, x), (b, y))?;
                let op = match name {
                    "minimum" => Op::Minimum,
                    "maximum" => Op::Maximum,
                    _ => Op::Bin(BinOp::Pow),
                };
                let n = numel(&shape);
                Ok(self.push(op, vec![x, y], shape, span, n))
            }
            "where" => {
                let s = self.bind(
                    name,
                    span,
                    &[req("condition"), req("input"), req("other")],
                    args,
                )?;
                let (cs, as_, bs) = (
                    s[0].expect("required"),
                    s[1].expect("required"),
                    s[2].expect("required"),
                );
                let c = self.tensor(cs)?;
                let a = self.tensor(as_)?;
                let b = self.tensor(bs)?;
                let ca = self.broadcast(span, (cs, c), (as_, a))?;
                let shape = broadcast_shape(&ca, self.shape(b)).map_err(|m| {
                    self.shape_err(
                        span,
                        format!(
                            "`{}`: the condition and input broadcast to {} but `{}` has shape {}, which does not broadcast with it ({m})",
                            self.text(span),
                            fmt_shape(&ca),
                            self.text(self.span(bs)),
                            fmt_shape(self.shape(b))
                        ),
                    )
                })?;
                let n = numel(&shape);
                Ok(self.push(Op::Where, vec![c, a, b], shape, span, n))
            }
            "clamp" => {
                let s = self.bind(name, span, &[req("input"), opt("min"), opt("max")], args)?;
                let xs = s[0].expect("required");
                let x = self.tensor(xs)?;
                let bound = |k: usize| s[k].filter(|&b| !matches!(self.vals[b], Val::NoneLit));
                let (lo, hi) = (bound(1), bound(2));
                if lo.is_none() && hi.is_none() {
                    return Err(self.err(
                        span,
                        "clamp() needs at least one of min and max (not None)".into(),
                    ));
                }
                let num = |b: Option<usize>| {
                    b.map(|b| match self.vals[b] {
                        Val::Num(v) => Some(v),
                        _ => None,
                    })
                };
                let (nlo, nhi) = (num(lo), num(hi));
                if nlo.is_none_or(|v| v.is_some()) && nhi.is_none_or(|v| v.is_some()) {
                    let shape = self.shape(x).to_vec();
                    let n = numel(&shape);
                    return Ok(self.push(
                        Op::ClampScalar {
                            min: nlo.flatten(),
                            max: nhi.flatten(),
                        },
                        vec![x],
                        shape,
                        span,
                        n,
                    ));
                }
                let mut inputs = vec![x];
                let mut shape = self.shape(x).to_vec();
                for b in [lo, hi].into_iter().flatten() {
                    let t = self.tensor(b)?;
                    shape = broadcast_shape(&shape, self.shape(t)).map_err(|m| {
                        self.shape_err(
                            span,
                            format!(
                                "`{}`: the bound `{}` has shape {}, which does not broadcast with {} ({m})",
                                self.text(span),
                                self.text(self.span(b)),
                                fmt_shape(self.shape(t)),
                                fmt_shape(&shape)
                            ),
                        )
                    })?;
                    inputs.push(t);
                }
                let n = numel(&shape);
                Ok(self.push(
                    Op::ClampTensor {
                        min: lo.is_some(),
                        max: hi.is_some(),
                    },
                    inputs,
                    shape,
                    span,
                    n,
                ))
            }
            _ => match crate::losses::find(name) {
                Some(entry) => self.loss(entry, span, args),
                None => {
                    let mut names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
                    names.extend(crate::losses::registry().iter().map(|e| e.info.name));
                    Err(self.err(
                        name_span,
                        format!(
                            "unknown function `{name}`: the functions are {}",
                            names.join(", ")
                        ),
                    ))
                }
            },
        }
    }

    /// A call of a built-in loss: tensors positionally (in `Info.tensors` order) or by
    /// keyword, options and `reduction` by keyword, as literals.
    fn loss(
        &mut self,
        entry: &'static Entry,
        span: Span,
        args: &[Arg],
    ) -> Result<usize, ExprError> {
        let info = entry.info;
        let name = info.name;
        let options = builtin::options(name);
        let tensor_list = || {
            info.tensors
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let option_list = || {
            let mut o = vec!["reduction"];
            o.extend(options.iter().map(|o| o.name.as_str()));
            o.join(", ")
        };
        let mut slots: Vec<Option<usize>> = vec![None; info.tensors.len()];
        let mut reduction: &'static str = "mean";
        let mut opts = Map::new();
        for (i, arg) in args.iter().enumerate() {
            let vspan = self.span(arg.value);
            let Some((kw, kspan)) = &arg.keyword else {
                if i >= info.tensors.len() {
                    return Err(self.err(
                        vspan,
                        format!(
                            "{name}() takes at most {} tensors positionally ({}); pass its options ({}) by keyword",
                            info.tensors.len(),
                            tensor_list(),
                            option_list()
                        ),
                    ));
                }
                slots[i] = Some(arg.value);
                continue;
            };
            if let Some(k) = info.tensors.iter().position(|t| t.name == kw) {
                if slots[k].is_some() {
                    return Err(self.err(
                        *kspan,
                        format!("{name}() got `{kw}` both positionally and by keyword"),
                    ));
                }
                slots[k] = Some(arg.value);
                continue;
            }
            let val = self.vals[arg.value].clone();
            if kw == "reduction" {
                let ok = match &val {
                    Val::Str(s) => info.reductions.iter().find(|r| **r == s.as_str()).copied(),
                    _ => None,
                };
                let Some(r) = ok else {
                    return Err(self.err(
                        vspan,
                        format!(
                            "reduction of {name}() must be one of {} (a string literal), found `{}`",
                            info.reductions
                                .iter()
                                .map(|r| format!("'{r}'"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            self.text(vspan)
                        ),
                    ));
                };
                reduction = r;
                continue;
            }
            if ["dtype", "grad", "encoding"].contains(&kw.as_str()) {
                return Err(self.err(
                    *kspan,
                    format!("`{kw}` is set once for the whole request, not per call of {name}()"),
                ));
            }
            let Some(o) = options.iter().find(|o| o.name == *kw) else {
                return Err(self.err(
                    *kspan,
                    format!(
                        "{name}() has no argument `{kw}`: its tensors are {} and its options {}",
                        tensor_list(),
                        option_list()
                    ),
                ));
            };
            let json = match &val {
                Val::NoneLit => continue,
                Val::Num(v) => o.accepts_number(*v).then(|| builtin::number_json(*v)),
                Val::Bool(b) => o.accepts_bool().then_some(Value::Bool(*b)),
                Val::Str(s) => o.accepts_str(s).then(|| Value::String(s.clone())),
                Val::Node(_) => None,
            };
            let Some(json) = json else {
                return Err(self.err(
                    vspan,
                    format!(
                        "option `{kw}` of {name}() must be {}, found {} (`{}`)",
                        o.expected(),
                        val.describe(),
                        self.text(vspan)
                    ),
                ));
            };
            opts.insert(kw.clone(), json);
        }
        let mut inputs = Vec::new();
        let mut names = Vec::new();
        let mut literals = Vec::new();
        let mut arg_shapes: Vec<builtin::ArgShape> = Vec::new();
        for (t, slot) in info.tensors.iter().zip(&slots) {
            let given = slot.filter(|&s| !matches!(self.vals[s], Val::NoneLit));
            let Some(s) = given else {
                if t.required {
                    return Err(self.err(
                        span,
                        format!(
                            "{name}() is missing its tensor `{}` ({name}({}))",
                            t.name,
                            tensor_list()
                        ),
                    ));
                }
                continue;
            };
            if let Val::Num(v) = self.vals[s] {
                literals.push((t.name, v));
                arg_shapes.push(builtin::ArgShape {
                    name: t.name,
                    shape: vec![],
                    literal: true,
                });
                continue;
            }
            let node = self.tensor(s)?;
            if self.nodes[node].grad && !t.differentiable {
                return Err(self.err(
                    self.span(s),
                    format!(
                        "`{}` of {name}() is not differentiable, but `{}` depends on a tensor of \
                         `grad`",
                        t.name,
                        self.text(self.span(s))
                    ),
                ));
            }
            arg_shapes.push(builtin::ArgShape {
                name: t.name,
                shape: self.shape(node).to_vec(),
                literal: false,
            });
            inputs.push(node);
            names.push(t.name);
        }
        let shape = if reduction == "none" {
            (info.none_shape)(&arg_shapes, &opts)
                .map_err(|m| self.shape_err(span, format!("`{}`: {m}", self.text(span))))?
        } else {
            vec![]
        };
        let args_n = inputs
            .iter()
            .fold(0usize, |a, &i| a.saturating_add(numel(self.shape(i))));
        // With reduction 'none', a non-uniform upstream gradient may need a second call.
        let calls = if reduction == "none" { 2 } else { 1 };
        let n = args_n.saturating_add(numel(&shape)).saturating_mul(calls);
        let call = LossCall {
            entry,
            names,
            literals,
            options: opts,
            reduction,
        };
        Ok(self.push(Op::Loss(Box::new(call)), inputs, shape, span, n))
    }
}

/// A binary operation on two number literals, in float64 as Python would.
fn fold(op: BinOp, x: f64, y: f64) -> f64 {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Pow => x.powf(y),
        BinOp::Lt => b(x < y),
        BinOp::Le => b(x <= y),
        BinOp::Gt => b(x > y),
        BinOp::Ge => b(x >= y),
        BinOp::Eq => b(x == y),
        BinOp::Ne => b(x != y),
    }
}

#[cfg(test)]
mod tests;
