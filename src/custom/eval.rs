//! Evaluating a [`Graph`]: the forward pass in the request dtype, then reverse-mode
//! differentiation with PyTorch's autograd formulas (and its subgradients), node by node, with
//! a cancellation checkpoint between nodes. Element-wise arithmetic is done in `T`; sums,
//! means and the normalisers of softmax and logsumexp accumulate in `f64` in a fixed order
//! ([`Sum8`]), as the kernels do.

use lossd_kernels::LossOutput;
use lossd_kernels::broadcast::unbroadcast;
use lossd_kernels::cancel::checkpoint;
use lossd_kernels::ndarray::{ArrayD, ArrayViewD, Dimension, IxDyn, Zip};
use lossd_kernels::reduction::{Sum8, mean};

use super::Output;
use super::builtin::{self, ArgShape, ELEMENTWISE, Float, LossCall};
use super::compile::{Graph, Node, Op, Reduce, Unary, fmt_shape};
use super::parse::BinOp;
use crate::error::{ApiError, Code};
use crate::wire::Tensor;

/// The source text of a node, shortened when long.
pub fn snippet(src: &str, node: &Node) -> String {
    let t = src.get(node.span.start..node.span.end).unwrap_or("");
    if t.chars().count() > 80 {
        let head: String = t.chars().take(77).collect();
        format!("{head}...")
    } else {
        t.to_string()
    }
}

fn bit<T: Float>(c: bool) -> T {
    if c { T::one() } else { T::zero() }
}

fn half<T: Float>() -> T {
    T::of(0.5)
}

/// `f` over `a` and `b` broadcast to `shape`.
fn zip2<T: Float>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    shape: &[usize],
    f: impl Fn(T, T) -> T,
) -> ArrayD<T> {
    let sh = IxDyn(shape);
    let av = a.broadcast(sh.clone()).expect("shapes were checked");
    let bv = b.broadcast(sh).expect("shapes were checked");
    Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y))
}

/// `f` over `a`, `b` and `c` broadcast to `shape`.
fn zip3<T: Float>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    c: &ArrayD<T>,
    shape: &[usize],
    f: impl Fn(T, T, T) -> T,
) -> ArrayD<T> {
    let sh = IxDyn(shape);
    let av = a.broadcast(sh.clone()).expect("shapes were checked");
    let bv = b.broadcast(sh.clone()).expect("shapes were checked");
    let cv = c.broadcast(sh).expect("shapes were checked");
    Zip::from(&av)
        .and(&bv)
        .and(&cv)
        .map_collect(|&x, &y, &z| f(x, y, z))
}

/// `f` over `g` (of `shape`) and up to three operands broadcast to it.
fn zip_g<T: Float>(g: &ArrayD<T>, ops: &[&ArrayD<T>], f: impl Fn(T, &[T]) -> T) -> ArrayD<T> {
    let sh = IxDyn(g.shape());
    let views: Vec<ArrayViewD<'_, T>> = ops
        .iter()
        .map(|a| a.broadcast(sh.clone()).expect("shapes were checked"))
        .collect();
    let mut out = g.clone();
    let mut vals = [T::zero(); 3];
    match views.len() {
        1 => Zip::from(&mut out).and(&views[0]).for_each(|o, &a| {
            vals[0] = a;
            *o = f(*o, &vals[..1]);
        }),
        2 => Zip::from(&mut out)
            .and(&views[0])
            .and(&views[1])
            .for_each(|o, &a, &b| {
                vals[0] = a;
                vals[1] = b;
                *o = f(*o, &vals[..2]);
            }),
        _ => Zip::from(&mut out)
            .and(&views[0])
            .and(&views[1])
            .and(&views[2])
            .for_each(|o, &a, &b, &c| {
                vals[0] = a;
                vals[1] = b;
                vals[2] = c;
                *o = f(*o, &vals[..3]);
            }),
    }
    out
}

/// The elements of `x` with dimension `d` moved last (rows of `len` in the order of the other
/// dimensions), and `len`. A 0-d `x` is one row of one.
fn to_last<T: Float>(x: &ArrayD<T>, d: usize) -> (Vec<T>, usize) {
    if x.ndim() == 0 {
        return (x.iter().copied().collect(), 1);
    }
    let r = x.ndim();
    let mut perm: Vec<usize> = (0..r).filter(|&i| i != d).collect();
    perm.push(d);
    let v = x.view().permuted_axes(IxDyn(&perm));
    (v.iter().copied().collect(), x.shape()[d])
}

/// The inverse of [`to_last`]: rows of `shape[d]` back into `shape`.
fn from_last<T: Float>(data: Vec<T>, shape: &[usize], d: usize) -> ArrayD<T> {
    if shape.is_empty() {
        return ArrayD::from_shape_vec(IxDyn(&[]), data).expect("one element");
    }
    let r = shape.len();
    let mut moved: Vec<usize> = (0..r).filter(|&i| i != d).map(|i| shape[i]).collect();
    moved.push(shape[d]);
    let a = ArrayD::from_shape_vec(IxDyn(&moved), data).expect("the element count is kept");
    let inverse: Vec<usize> = (0..r)
        .map(|i| match i.cmp(&d) {
            std::cmp::Ordering::Less => i,
            std::cmp::Ordering::Equal => r - 1,
            std::cmp::Ordering::Greater => i - 1,
        })
        .collect();
    a.permuted_axes(IxDyn(&inverse))
        .as_standard_layout()
        .into_owned()
}

/// The lanes a reduction works on: one per output element, each `len` long, row-major.
fn lanes<T: Float>(x: &ArrayD<T>, dim: Option<usize>) -> (Vec<T>, usize) {
    match dim {
        Some(d) => to_last(x, d),
        None => {
            let v: Vec<T> = x.iter().copied().collect();
            let n = v.len();
            (v, n)
        }
    }
}

/// Spreads per-element results over the lanes of [`lanes`] back into `shape`.
fn unlanes<T: Float>(data: Vec<T>, shape: &[usize], dim: Option<usize>) -> ArrayD<T> {
    match dim {
        Some(d) => from_last(data, shape, d),
        None => ArrayD::from_shape_vec(IxDyn(shape), data).expect("the element count is kept"),
    }
}

/// The index of the first maximum (`max`) or minimum in a lane; a NaN wins at once, as in
/// `torch.max(x, dim)`.
fn pick<T: Float>(lane: &[T], max: bool) -> usize {
    let mut best = 0;
    for (i, &v) in lane.iter().enumerate().skip(1) {
        let b = lane[best];
        if b.is_nan() {
            break;
        }
        if v.is_nan() || (max && v > b) || (!max && v < b) {
            best = i;
        }
    }
    best
}

fn sum_f64<T: Float>(xs: impl Iterator<Item = T>) -> f64 {
    let mut s = Sum8::new();
    xs.for_each(|x| s.add(x.f64()));
    s.total()
}

/// `logsumexp` of a lane as ATen computes it: the maximum (0 when infinite) subtracted.
fn logsumexp<T: Float>(lane: &[T]) -> T {
    let m = lane.get(pick(lane, true)).copied().unwrap_or(T::zero());
    let m = if m.is_infinite() { T::zero() } else { m };
    let s = sum_f64(lane.iter().map(|&x| (x - m).exp()));
    T::of(s).ln() + m
}

fn reduce_forward<T: Float>(
    kind: Reduce,
    x: &ArrayD<T>,
    dim: Option<usize>,
    shape: &[usize],
) -> ArrayD<T> {
    let (data, len) = lanes(x, dim);
    let rows = data
        .len()
        .checked_div(len)
        .unwrap_or_else(|| crate::custom::compile::numel(shape));
    let out: Vec<T> = (0..rows)
        .map(|r| {
            let lane = &data[r * len..(r + 1) * len];
            match kind {
                Reduce::Sum => T::of(sum_f64(lane.iter().copied())),
                Reduce::Mean => T::of(mean(sum_f64(lane.iter().copied()), len)),
                Reduce::Max => lane[pick(lane, true)],
                Reduce::Min => lane[pick(lane, false)],
                Reduce::LogSumExp => logsumexp(lane),
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), out).expect("one value per lane")
}

fn reduce_backward<T: Float>(
    kind: Reduce,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    g: &ArrayD<T>,
    dim: Option<usize>,
) -> ArrayD<T> {
    let (data, len) = lanes(x, dim);
    let gs: Vec<T> = g.iter().copied().collect();
    let ys: Vec<T> = y.iter().copied().collect();
    let mut out = vec![T::zero(); data.len()];
    for (r, (&gr, &yr)) in gs.iter().zip(&ys).enumerate() {
        let lane = &data[r * len..(r + 1) * len];
        let o = &mut out[r * len..(r + 1) * len];
        match kind {
            Reduce::Sum => o.iter_mut().for_each(|v| *v = gr),
            Reduce::Mean => {
                let n = T::of(len as f64);
                o.iter_mut().for_each(|v| *v = gr / n);
            }
            Reduce::Max | Reduce::Min if dim.is_some() => {
                o[pick(lane, kind == Reduce::Max)] = gr;
            }
            Reduce::Max | Reduce::Min => {
                // `x.max()`: shared evenly by every element equal to the result.
                let hit = |v: T| if yr.is_nan() { v.is_nan() } else { v == yr };
                let count = lane.iter().filter(|&&v| hit(v)).count();
                let share = gr / T::of(count as f64);
                for (v, &xv) in o.iter_mut().zip(lane) {
                    if hit(xv) {
                        *v = share;
                    }
                }
            }
            Reduce::LogSumExp => {
                for (v, &xv) in o.iter_mut().zip(lane) {
                    *v = gr * (xv - yr).exp();
                }
            }
        }
    }
    unlanes(out, x.shape(), dim)
}

fn softmax_forward<T: Float>(x: &ArrayD<T>, dim: usize, log: bool) -> ArrayD<T> {
    let (mut data, len) = to_last(x, dim);
    if len > 0 {
        for lane in data.chunks_mut(len) {
            let m = lane[pick(lane, true)];
            let s = sum_f64(lane.iter().map(|&v| (v - m).exp()));
            if log {
                let ls = T::of(s).ln();
                lane.iter_mut().for_each(|v| *v = *v - m - ls);
            } else {
                let s = T::of(s);
                lane.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
            }
        }
    }
    from_last(data, x.shape(), dim)
}

fn softmax_backward<T: Float>(y: &ArrayD<T>, g: &ArrayD<T>, dim: usize, log: bool) -> ArrayD<T> {
    let (ys, len) = to_last(y, dim);
    let (mut gs, _) = to_last(g, dim);
    if len > 0 {
        for (gl, yl) in gs.chunks_mut(len).zip(ys.chunks(len)) {
            if log {
                let s = T::of(sum_f64(gl.iter().copied()));
                for (gv, &yv) in gl.iter_mut().zip(yl) {
                    *gv -= yv.exp() * s;
                }
            } else {
                let s = T::of(sum_f64(gl.iter().zip(yl).map(|(&a, &b)| a * b)));
                for (gv, &yv) in gl.iter_mut().zip(yl) {
                    *gv = yv * (*gv - s);
                }
            }
        }
    }
    from_last(gs, y.shape(), dim)
}

fn unary_forward<T: Float>(u: Unary, x: T) -> T {
    match u {
        Unary::Abs => x.abs(),
        Unary::Square => x * x,
        Unary::Sqrt => x.sqrt(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Log1p => x.ln_1p(),
        Unary::Expm1 => x.exp_m1(),
        Unary::Sigmoid => T::one() / (T::one() + (-x).exp()),
        Unary::Softplus => {
            if x > T::of(20.0) {
                x
            } else {
                x.exp().ln_1p()
            }
        }
        Unary::Tanh => x.tanh(),
        Unary::Relu => {
            if x.is_nan() || x > T::zero() {
                x
            } else {
                T::zero()
            }
        }
    }
}

/// The gradient of an element-wise function, from `g`, the input `x` and the result `y`.
fn unary_backward<T: Float>(u: Unary, g: T, x: T, y: T) -> T {
    let one = T::one();
    match u {
        Unary::Abs => {
            let s = if x > T::zero() {
                one
            } else if x < T::zero() {
                -one
            } else {
                T::zero()
            };
            g * s
        }
        Unary::Square => g * (T::of(2.0) * x),
        Unary::Sqrt => g / (T::of(2.0) * y),
        Unary::Exp => g * y,
        Unary::Log => g / x,
        Unary::Log1p => g / (x + one),
        Unary::Expm1 => g * (y + one),
        Unary::Sigmoid => g * (one - y) * y,
        Unary::Softplus => {
            if x > T::of(20.0) {
                g
            } else {
                let z = x.exp();
                g * z / (z + one)
            }
        }
        Unary::Tanh => g * (one - y * y),
        Unary::Relu => {
            if y <= T::zero() {
                T::zero()
            } else {
                g
            }
        }
    }
}

fn binary_forward<T: Float>(op: BinOp, x: T, y: T) -> T {
    match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Pow => x.powf(y),
        BinOp::Lt => bit(x < y),
        BinOp::Le => bit(x <= y),
        BinOp::Gt => bit(x > y),
        BinOp::Ge => bit(x >= y),
        BinOp::Eq => bit(x == y),
        BinOp::Ne => bit(x != y),
    }
}

/// `clamp` with tensor bounds, forward.
fn clamp_tensor<T: Float>(x: T, lo: Option<T>, hi: Option<T>) -> T {
    if x.is_nan() || lo.is_some_and(|l| l.is_nan()) || hi.is_some_and(|h| h.is_nan()) {
        return T::nan();
    }
    match (lo, hi) {
        (Some(l), Some(h)) if l > h => h,
        _ => {
            let v = match lo {
                Some(l) if x < l => l,
                _ => x,
            };
            match hi {
                Some(h) if v > h => h,
                _ => v,
            }
        }
    }
}

/// `clamp` with tensor bounds, backward: the shares of `x`, `min` and `max` (PyTorch 2.15).
fn clamp_tensor_shares<T: Float>(x: T, lo: Option<T>, hi: Option<T>) -> (T, T, T) {
    let (one, zero, half) = (T::one(), T::zero(), half::<T>());
    // How much x keeps against a bound it must not be below (or above).
    let keep_above = |l: T| {
        if x < l {
            zero
        } else if x == l {
            half
        } else {
            one
        }
    };
    let keep_below = |h: T| {
        if x > h {
            zero
        } else if x == h {
            half
        } else {
            one
        }
    };
    match (lo, hi) {
        (Some(l), Some(h)) => {
            if l > h {
                (zero, zero, one)
            } else if x == l && x == h {
                (one, zero, zero)
            } else {
                (
                    keep_above(l) * keep_below(h),
                    one - keep_above(l),
                    one - keep_below(h),
                )
            }
        }
        (Some(l), None) => (keep_above(l), one - keep_above(l), zero),
        (None, Some(h)) => (keep_below(h), zero, one - keep_below(h)),
        (None, None) => (one, zero, zero),
    }
}

/// Adds `c` to the gradient of node `i`.
fn accumulate<T: Float>(grads: &mut [Option<ArrayD<T>>], i: usize, c: ArrayD<T>) {
    match &mut grads[i] {
        Some(g) => *g += &c,
        slot @ None => *slot = Some(c),
    }
}

/// Evaluates `graph` (compiled from `src`) on the request's tensors, with the gradients of
/// the tensors of index `wanted`.
pub fn run<T: Float>(
    graph: &Graph,
    src: &str,
    data: Vec<Tensor>,
    wanted: &[usize],
    rank: usize,
) -> Result<Output<T>, ApiError> {
    let mut data: Vec<Option<Tensor>> = data.into_iter().map(Some).collect();
    let nodes = &graph.nodes;
    let mut values: Vec<ArrayD<T>> = Vec::with_capacity(nodes.len());
    let mut stash: Vec<Option<LossOutput<T>>> = Vec::with_capacity(nodes.len());
    let mut warnings: Vec<String> = Vec::new();
    let expr = Expr { graph, src, rank };
    for node in nodes {
        checkpoint()?;
        let mut kept = None;
        let v = forward(&expr, node, &values, &mut data, &mut kept, &mut warnings)?;
        debug_assert_eq!(v.shape(), node.shape.as_slice());
        values.push(v);
        stash.push(kept);
    }
    let root = graph.root;
    let mut grads: Vec<Option<ArrayD<T>>> = vec![None; nodes.len()];
    if !wanted.is_empty() && nodes[root].grad {
        grads[root] = Some(ArrayD::from_elem(IxDyn(&nodes[root].shape), T::one()));
        for i in (0..nodes.len()).rev() {
            if !nodes[i].grad || matches!(nodes[i].op, Op::Leaf(_)) {
                continue;
            }
            let Some(g) = grads[i].take() else { continue };
            checkpoint()?;
            backward(&expr, i, g, &values, &stash, &mut grads)?;
        }
    }
    let out_grads = wanted
        .iter()
        .map(|&k| {
            let shape = match graph.leaves[k] {
                Some(n) => nodes[n].shape.clone(),
                None => data[k]
                    .as_ref()
                    .map(|t| t.shape.clone())
                    .unwrap_or_default(),
            };
            graph.leaves[k]
                .and_then(|n| grads[n].take())
                .unwrap_or_else(|| ArrayD::zeros(IxDyn(&shape)))
        })
        .collect();
    let value = values.swap_remove(root);
    Ok(Output {
        value,
        grads: out_grads,
        warnings,
    })
}

/// The expression [`run`] evaluates: its graph, its source (quoted in errors) and the rank
/// the built-in losses are called with.
struct Expr<'a> {
    graph: &'a Graph,
    src: &'a str,
    rank: usize,
}

fn forward<T: Float>(
    expr: &Expr<'_>,
    node: &Node,
    values: &[ArrayD<T>],
    data: &mut [Option<Tensor>],
    kept: &mut Option<LossOutput<T>>,
    warnings: &mut Vec<String>,
) -> Result<ArrayD<T>, ApiError> {
    let (src, rank) = (expr.src, expr.rank);
    let arg = |k: usize| &values[node.inputs[k]];
    let shape = node.shape.as_slice();
    Ok(match &node.op {
        Op::Leaf(k) => {
            let t = data[*k].take().expect("each tensor is one leaf");
            crate::losses::float::<T>(t)
        }
        Op::Const(v) => ArrayD::from_elem(IxDyn(&[]), T::of(*v)),
        Op::Neg => arg(0).mapv(|x| -x),
        Op::Bin(op) => zip2(arg(0), arg(1), shape, |x, y| binary_forward(*op, x, y)),
        Op::Unary(u) => arg(0).mapv(|x| unary_forward(*u, x)),
        Op::ClampScalar { min, max } => {
            let (lo, hi) = (min.map(T::of), max.map(T::of));
            arg(0).mapv(|x| {
                if x.is_nan() {
                    return x;
                }
                let v = match lo {
                    Some(l) if x < l => l,
                    _ => x,
                };
                match hi {
                    Some(h) if h < v => h,
                    _ => v,
                }
            })
        }
        Op::ClampTensor { min, max } => {
            let x = arg(0);
            match (min, max) {
                (true, true) => zip3(x, arg(1), arg(2), shape, |x, l, h| {
                    clamp_tensor(x, Some(l), Some(h))
                }),
                (true, false) => zip2(x, arg(1), shape, |x, l| clamp_tensor(x, Some(l), None)),
                _ => zip2(x, arg(1), shape, |x, h| clamp_tensor(x, None, Some(h))),
            }
        }
        Op::Minimum | Op::Maximum => {
            let max = matches!(node.op, Op::Maximum);
            zip2(arg(0), arg(1), shape, |x, y| {
                if x.is_nan() || y.is_nan() {
                    T::nan()
                } else if (x < y) == max {
                    y
                } else {
                    x
                }
            })
        }
        Op::Where => zip3(arg(0), arg(1), arg(2), shape, |c, a, b| {
            if c != T::zero() { a } else { b }
        }),
        Op::Reduce { kind, dim, .. } => reduce_forward(*kind, arg(0), *dim, shape),
        Op::Softmax { dim, log } => softmax_forward(arg(0), *dim, *log),
        Op::Loss(call) => {
            let views: Vec<ArrayViewD<'_, T>> =
                node.inputs.iter().map(|&i| values[i].view()).collect();
            let text = snippet(src, node);
            let out = builtin::call(call, &views, node.grad, rank)
                .map_err(|e| builtin::place(e, src, node.span.start, &text))?;
            if out.loss.shape() != shape {
                return Err(ApiError::internal(format!(
                    "{} returned shape {} where {} was inferred",
                    call.entry.info.name,
                    fmt_shape(out.loss.shape()),
                    fmt_shape(shape)
                )));
            }
            for w in &out.warnings {
                let w = format!("{}: {w}", call.entry.info.name);
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
            let mut out = out;
            let loss = std::mem::replace(&mut out.loss, ArrayD::zeros(IxDyn(&[])));
            if node.grad {
                *kept = Some(out);
            }
            loss
        }
    })
}

fn backward<T: Float>(
    expr: &Expr<'_>,
    i: usize,
    g: ArrayD<T>,
    values: &[ArrayD<T>],
    stash: &[Option<LossOutput<T>>],
    grads: &mut [Option<ArrayD<T>>],
) -> Result<(), ApiError> {
    let nodes = &expr.graph.nodes;
    let node = &nodes[i];
    let inputs = &node.inputs;
    let needs = |k: usize| nodes[inputs[k]].grad;
    let val = |k: usize| &values[inputs[k]];
    let shape_of = |k: usize| nodes[inputs[k]].shape.clone();
    // Sends a gradient of the node's shape to input `k`, summed back to its shape.
    let send = |grads: &mut [Option<ArrayD<T>>], k: usize, c: ArrayD<T>| {
        let c = unbroadcast(c, &shape_of(k));
        accumulate(grads, inputs[k], c);
    };
    match &node.op {
        Op::Leaf(_) | Op::Const(_) => {}
        Op::Neg => send(grads, 0, g.mapv(|v| -v)),
        Op::Bin(op) => {
            let (a, b) = (val(0), val(1));
            match op {
                BinOp::Add => {
                    if needs(0) {
                        send(grads, 0, g.clone());
                    }
                    if needs(1) {
                        send(grads, 1, g);
                    }
                }
                BinOp::Sub => {
                    if needs(0) {
                        send(grads, 0, g.clone());
                    }
                    if needs(1) {
                        send(grads, 1, g.mapv(|v| -v));
                    }
                }
                BinOp::Mul => {
                    if needs(0) {
                        send(grads, 0, zip_g(&g, &[b], |g, o| g * o[0]));
                    }
                    if needs(1) {
                        send(grads, 1, zip_g(&g, &[a], |g, o| g * o[0]));
                    }
                }
                BinOp::Div => {
                    if needs(0) {
                        send(grads, 0, zip_g(&g, &[b], |g, o| g / o[0]));
                    }
                    if needs(1) {
                        send(
                            grads,
                            1,
                            zip_g(&g, &[a, b], |g, o| -g * ((o[0] / o[1]) / o[1])),
                        );
                    }
                }
                BinOp::Pow => {
                    if needs(0) {
                        send(
                            grads,
                            0,
                            zip_g(&g, &[a, b], |g, o| {
                                let (x, e) = (o[0], o[1]);
                                if e == T::zero() {
                                    T::zero()
                                } else {
                                    g * (e * x.powf(e - T::one()))
                                }
                            }),
                        );
                    }
                    if needs(1) {
                        let y = &values[i];
                        send(
                            grads,
                            1,
                            zip_g(&g, &[a, b, y], |g, o| {
                                let (x, e, y) = (o[0], o[1], o[2]);
                                if x == T::zero() && e >= T::zero() {
                                    g * T::zero()
                                } else {
                                    g * (y * x.ln())
                                }
                            }),
                        );
                    }
                }
                _ => {}
            }
        }
        Op::Unary(u) => {
            let y = &values[i];
            let c = zip_g(&g, &[val(0), y], |g, o| unary_backward(*u, g, o[0], o[1]));
            send(grads, 0, c);
        }
        Op::ClampScalar { min, max } => {
            let (lo, hi) = (min.map(T::of), max.map(T::of));
            let c = zip_g(&g, &[val(0)], |g, o| {
                let x = o[0];
                let inside = lo.is_none_or(|l| x > l) && hi.is_none_or(|h| x < h);
                if inside { g } else { T::zero() }
            });
            send(grads, 0, c);
        }
        Op::ClampTensor { min, max } => {
            let x = val(0);
            let lo = min.then(|| val(1));
            let hi = max.then(|| val(if *min { 2 } else { 1 }));
            let ops: Vec<&ArrayD<T>> = [Some(x), lo, hi].into_iter().flatten().collect();
            let share = |which: usize| {
                zip_g(&g, &ops, |g, o| {
                    let l = min.then(|| o[1]);
                    let h = max.then(|| o[if *min { 2 } else { 1 }]);
                    let (sx, sl, sh) = clamp_tensor_shares(o[0], l, h);
                    g * [sx, sl, sh][which]
                })
            };
            if needs(0) {
                send(grads, 0, share(0));
            }
            if *min && needs(1) {
                send(grads, 1, share(1));
            }
            if *max {
                let k = if *min { 2 } else { 1 };
                if needs(k) {
                    send(grads, k, share(2));
                }
            }
        }
        Op::Minimum | Op::Maximum => {
            let max = matches!(node.op, Op::Maximum);
            let (a, b) = (val(0), val(1));
            // PyTorch: where(a == b, g/2, g), zeroed where the other one wins.
            let part = |first: bool| {
                zip_g(&g, &[a, b], move |g, o| {
                    let (x, y) = if first { (o[0], o[1]) } else { (o[1], o[0]) };
                    let loses = if max { x < y } else { x > y };
                    if loses {
                        T::zero()
                    } else if x == y {
                        g / T::of(2.0)
                    } else {
                        g
                    }
                })
            };
            if needs(0) {
                send(grads, 0, part(true));
            }
            if needs(1) {
                send(grads, 1, part(false));
            }
        }
        Op::Where => {
            let c = val(0);
            if needs(1) {
                send(
                    grads,
                    1,
                    zip_g(
                        &g,
                        &[c],
                        |g, o| if o[0] != T::zero() { g } else { T::zero() },
                    ),
                );
            }
            if needs(2) {
                send(
                    grads,
                    2,
                    zip_g(
                        &g,
                        &[c],
                        |g, o| if o[0] != T::zero() { T::zero() } else { g },
                    ),
                );
            }
        }
        Op::Reduce { kind, dim, .. } => {
            let c = reduce_backward(*kind, val(0), &values[i], &g, *dim);
            accumulate(grads, inputs[0], c);
        }
        Op::Softmax { dim, log } => {
            let c = softmax_backward(&values[i], &g, *dim, *log);
            accumulate(grads, inputs[0], c);
        }
        Op::Loss(call) => {
            let out = stash[i]
                .as_ref()
                .ok_or_else(|| ApiError::internal("a built-in loss kept no gradients"))?;
            loss_backward(expr, i, call, out, g, values, grads)?;
        }
    }
    Ok(())
}

/// Chains a built-in loss's gradients (see [`builtin`] for when this is exact).
fn loss_backward<T: Float>(
    expr: &Expr<'_>,
    i: usize,
    call: &LossCall,
    out: &LossOutput<T>,
    g: ArrayD<T>,
    values: &[ArrayD<T>],
    grads: &mut [Option<ArrayD<T>>],
) -> Result<(), ApiError> {
    let Expr { graph, src, rank } = *expr;
    let nodes = &graph.nodes;
    let node = &nodes[i];
    let name = call.entry.info.name;
    let text = snippet(src, node);
    let position = src.get(..node.span.start).map_or(0, |s| s.chars().count());
    let fail = |msg: String| ApiError {
        code: Code::InvalidExpression,
        detail: format!("in `{text}`: {msg} (at character {position})"),
        pointer: Some("/expression".into()),
        position: Some(position),
    };
    let missing = |arg: &str| {
        fail(format!(
            "{name}() returns no gradient for `{arg}` with these arguments (see which of its \
             arguments are differentiable, and when, in its catalog entry)"
        ))
    };
    let first = g.iter().next().copied().unwrap_or(T::zero());
    let uniform = g
        .iter()
        .all(|&v| v == first || (v.is_nan() && first.is_nan()));
    let wanted: Vec<usize> = (0..node.inputs.len())
        .filter(|&k| nodes[node.inputs[k]].grad)
        .collect();
    if uniform {
        for k in wanted {
            let arg = call.names[k];
            let gk = out.grad(arg).ok_or_else(|| missing(arg))?;
            accumulate(grads, node.inputs[k], gk.mapv(|v| v * first));
        }
        return Ok(());
    }
    let views: Vec<ArrayViewD<'_, T>> = node.inputs.iter().map(|&n| values[n].view()).collect();
    let why = |arg: &str| {
        fail(format!(
            "the gradient cannot flow back through `{arg}` of {name}() with reduction='none' \
             here: the result weighs the loss's elements unequally, and each element of `{arg}` \
             reaches several of them, while the kernel only gives the gradient of their sum. \
             Reduce the loss itself (reduction='mean' or 'sum'), or write this part of the loss \
             with the language's functions"
        ))
    };
    if ELEMENTWISE.contains(&name) {
        let (mat, viewed) = builtin::materialize(call, &views, &node.shape)
            .ok_or_else(|| why(call.names[wanted[0]]))?;
        let mat: Vec<ArrayViewD<'_, T>> = mat.iter().map(|a| a.view()).collect();
        let again = builtin::call(call, &mat, true, rank)
            .map_err(|e| builtin::place(e, src, node.span.start, &text))?;
        for k in wanted {
            let arg = call.names[k];
            let gk = again.grad(arg).ok_or_else(|| missing(arg))?;
            let full = Zip::from(gk).and(&g).map_collect(|&a, &b| a * b);
            let mut c = unbroadcast(full, &viewed[k]);
            let own = &nodes[node.inputs[k]].shape;
            if c.shape() != own.as_slice() {
                c = c
                    .into_shape_with_order(IxDyn(own))
                    .map_err(|e| ApiError::internal(format!("reshaping a gradient: {e}")))?;
            }
            accumulate(grads, node.inputs[k], c);
        }
        return Ok(());
    }
    let shapes: Vec<ArgShape> = call
        .names
        .iter()
        .zip(&views)
        .map(|(n, v)| ArgShape {
            name: n,
            shape: v.shape().to_vec(),
            literal: false,
        })
        .collect();
    let gflat: Vec<T> = g.iter().copied().collect();
    for k in wanted {
        let arg = call.names[k];
        let ashape = views[k].shape();
        let axes = builtin::row_axes(name, arg, &shapes).ok_or_else(|| why(arg))?;
        let kept: Vec<usize> = (0..ashape.len()).filter(|d| !axes.contains(d)).collect();
        let rows: Vec<usize> = kept.iter().map(|&d| ashape[d]).collect();
        if rows != node.shape {
            return Err(why(arg));
        }
        let gk = out.grad(arg).ok_or_else(|| missing(arg))?;
        let mut c = gk.clone();
        for (idx, v) in c.indexed_iter_mut() {
            let idx = idx.slice();
            let o = kept.iter().fold(0usize, |acc, &d| acc * ashape[d] + idx[d]);
            *v *= gflat[o];
        }
        accumulate(grads, node.inputs[k], c);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
