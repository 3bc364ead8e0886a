//! Built-in losses inside expressions: their options (from the catalog), their output shapes
//! with `reduction: "none"`, the request body that calls them through the registry, and how
//! their gradients chain into the expression's backward pass.
//!
//! A kernel returns the gradient of its output's *sum*. That is the exact vector-Jacobian
//! product when the upstream gradient is the same for every output element (always so for
//! `mean`/`sum`/`batchmean`, whose output is a scalar). For `reduction: "none"` with a
//! non-uniform upstream gradient lossd still differentiates exactly where each input element
//! reaches a single output element:
//!
//! - element-wise losses (the regression losses, BCE, soft margin, KL, Poisson and Gaussian
//!   NLL, hinge embedding, margin ranking): the tensors are broadcast to the output's shape
//!   and the loss called once more, giving each element's own derivative; times the upstream
//!   gradient, summed back to each tensor's shape;
//! - row-wise losses (cross-entropy and NLL over the class dimension, the margin and
//!   multilabel losses, cosine embedding, triplet, linear cross-entropy's input, CTC's
//!   log_probs): an input element belongs to exactly one output element (its row), so its
//!   derivative is scaled by that element's upstream gradient.
//!
//! A tensor shared by many outputs (class weights, `linear_weight`, a broadcast row) has no
//! such decomposition: a non-uniform upstream gradient there is a 422 `invalid_expression`.

use lossd_kernels::LossOutput;
use lossd_kernels::broadcast::broadcast_shape;
use lossd_kernels::ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde_json::{Map, Value};

use super::compile::fmt_shape;
use crate::error::{ApiError, Code};
use crate::losses::{Computed, Entry};
use crate::wire::Budget;
use crate::wire::ser::{WireFloat, write_shape, write_str};

/// A compiled call of a built-in loss.
#[derive(Clone)]
pub struct LossCall {
    /// The registered loss.
    pub entry: &'static Entry,
    /// The tensor argument each input node is passed as, in node-input order.
    pub names: Vec<&'static str>,
    /// Tensor arguments given as number literals (sent as JSON numbers: a plain number, such
    /// as `gaussian_nll_loss`'s float `var`).
    pub literals: Vec<(&'static str, f64)>,
    /// The options, as JSON values.
    pub options: Map<String, Value>,
    /// The reduction.
    pub reduction: &'static str,
}

impl std::fmt::Debug for LossCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossCall")
            .field("loss", &self.entry.info.name)
            .field("names", &self.names)
            .field("literals", &self.literals)
            .field("options", &self.options)
            .field("reduction", &self.reduction)
            .finish()
    }
}

/// A tensor argument's shape, for shape rules.
#[derive(Clone, Debug)]
pub struct ArgShape {
    /// The argument's name.
    pub name: &'static str,
    /// Its shape (`[]` for a literal).
    pub shape: Vec<usize>,
    /// Given as a number literal.
    pub literal: bool,
}

/// A loss option as the catalog describes it.
#[derive(Clone, Debug)]
pub struct OptionDoc {
    /// The keyword.
    pub name: String,
    /// `number`, `integer`, `boolean`, `string` or a combination (`number | string`).
    pub ty: String,
    /// Allowed string values, if restricted.
    pub allowed: Option<Vec<String>>,
}

impl OptionDoc {
    fn has(&self, t: &str) -> bool {
        self.ty.is_empty() || self.ty.split('|').any(|p| p.trim() == t)
    }

    /// Whether a number literal fits.
    pub fn accepts_number(&self, v: f64) -> bool {
        self.has("number") || (self.has("integer") && v.fract() == 0.0)
    }

    /// Whether a boolean literal fits.
    pub fn accepts_bool(&self) -> bool {
        self.has("boolean")
    }

    /// Whether a string literal fits.
    pub fn accepts_str(&self, s: &str) -> bool {
        self.has("string")
            && self
                .allowed
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| x == s))
    }

    /// What fits, in words.
    pub fn expected(&self) -> String {
        if let Some(a) = &self.allowed {
            let list: Vec<String> = a.iter().map(|s| format!("'{s}'")).collect();
            return format!("one of {}", list.join(", "));
        }
        let words: Vec<&str> = self
            .ty
            .split('|')
            .map(|p| match p.trim() {
                "number" => "a number",
                "integer" => "an integer",
                "boolean" => "True or False",
                "string" => "a string",
                _ => "a literal",
            })
            .collect();
        words.join(" or ")
    }
}

/// The options of loss `name` (besides `reduction`), from its catalog entry.
pub fn options(name: &str) -> Vec<OptionDoc> {
    let Some(entry) = crate::catalog::entry(name) else {
        return Vec::new();
    };
    entry["options"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| OptionDoc {
                    name: o["name"].as_str().unwrap_or("").to_string(),
                    ty: o["type"].as_str().unwrap_or("").to_string(),
                    allowed: o["allowed"].as_array().map(|v| {
                        v.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    }),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A number as request JSON: an integer when whole, the API's strings when not finite.
pub fn number_json(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// Losses whose unreduced output is element-wise in its (broadcast) tensors.
pub const ELEMENTWISE: [&str; 12] = [
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "soft_margin_loss",
    "kl_div",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
];

/// For a row-wise loss, the dimensions of argument `arg` that its output does not have (each
/// element of `arg` belongs to the output element at its index without these dimensions).
pub fn row_axes(name: &str, arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    let rank = |n: &str| args.iter().find(|a| a.name == n).map(|a| a.shape.len());
    let r = rank(arg)?;
    let class = |r: usize| if r >= 2 { 1 } else { 0 };
    let last = |r: usize| r.checked_sub(1);
    match (name, arg) {
        (
            "cross_entropy" | "nll_loss" | "multi_margin_loss" | "multilabel_margin_loss",
            "input",
        )
        | ("cross_entropy", "target") => (r >= 1).then(|| vec![class(r)]),
        ("linear_cross_entropy", "input") => last(r).map(|d| vec![d]),
        ("multilabel_soft_margin_loss", _) => last(rank("input")?).map(|d| vec![d]),
        ("cosine_embedding_loss", "input1" | "input2")
        | (
            "triplet_margin_loss" | "triplet_margin_with_distance_loss",
            "anchor" | "positive" | "negative",
        ) => last(r).map(|d| vec![d]),
        ("ctc_loss", "log_probs") => match r {
            3 => Some(vec![0, 2]),
            2 => Some(vec![0, 1]),
            _ => None,
        },
        _ => None,
    }
}

fn bc(what: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    broadcast_shape(a, b).map_err(|m| {
        format!(
            "{what}: shapes {} and {} do not broadcast ({m})",
            fmt_shape(a),
            fmt_shape(b)
        )
    })
}

/// `gaussian_nll_loss`'s rule for `var`'s shape (the kernel's, which is PyTorch's).
pub fn effective_var_shape(input: &[usize], var: &[usize]) -> Option<Vec<usize>> {
    if var == input {
        return Some(var.to_vec());
    }
    if let Some((_, leading)) = input.split_last()
        && var == leading
    {
        let mut s = var.to_vec();
        s.push(1);
        return Some(s);
    }
    let mismatched = input
        .iter()
        .zip(var)
        .filter(|(a, b)| a != b)
        .fold(0usize, |acc, (_, &b)| acc.saturating_add(b));
    (var.len() == input.len() && mismatched == 1).then(|| var.to_vec())
}

/// The shape of loss `name`'s output with `reduction: "none"`, from its arguments' shapes
/// (the kernels' rules; a call they would refuse may be refused here first).
pub fn none_shape(
    name: &str,
    args: &[ArgShape],
    options: &Map<String, Value>,
) -> Result<Vec<usize>, String> {
    let get = |n: &str| args.iter().find(|a| a.name == n);
    let shape = |n: &str| get(n).map(|a| a.shape.clone()).unwrap_or_default();
    let (x, y) = (shape("input"), shape("target"));
    match name {
        "l1_loss"
        | "mse_loss"
        | "smooth_l1_loss"
        | "huber_loss"
        | "kl_div"
        | "poisson_nll_loss"
        | "hinge_embedding_loss" => bc("input and target", &x, &y),
        "binary_cross_entropy" | "binary_cross_entropy_with_logits" | "soft_margin_loss" => Ok(x),
        "margin_ranking_loss" => {
            let s = bc("input1 and input2", &shape("input1"), &shape("input2"))?;
            bc("input1, input2 and target", &s, &shape("target"))
        }
        "gaussian_nll_loss" => {
            let s = bc("input and target", &x, &y)?;
            match get("var") {
                Some(v) if !v.literal => {
                    let eff = effective_var_shape(&x, &v.shape).ok_or_else(|| {
                        format!(
                            "var has shape {} but input has shape {}: var must have the input's \
                             shape, the input's shape without its last dimension, or one \
                             dimension of size 1",
                            fmt_shape(&v.shape),
                            fmt_shape(&x)
                        )
                    })?;
                    bc("var and the input", &s, &eff)
                }
                _ => Ok(s),
            }
        }
        "cross_entropy" | "nll_loss" => match x.as_slice() {
            [] => Err("input is 0-d but must have a class dimension".into()),
            [_] => Ok(vec![]),
            [n, _, rest @ ..] => Ok(std::iter::once(*n).chain(rest.iter().copied()).collect()),
        },
        "multi_margin_loss" => {
            let n = if x.len() == 2 { x[0] } else { 1 };
            Ok(if y.is_empty() { vec![] } else { vec![n] })
        }
        "multilabel_margin_loss" => Ok(if x.len() == 2 { vec![x[0]] } else { vec![] }),
        "multilabel_soft_margin_loss" => {
            if x.is_empty() {
                return Err("input is 0-d but must have a class dimension".into());
            }
            let mut s = bc("input and target", &x, &y)?;
            if let Some(w) = get("weight") {
                s = bc("weight and the input", &s, &w.shape)?;
            }
            s.remove(x.len() - 1);
            Ok(s)
        }
        "cosine_embedding_loss" => {
            let (a, b) = (shape("input1"), shape("input2"));
            let full = bc("input1 and input2", &a, &b)?;
            let rows: Vec<usize> = if y.len() == 1 && full.len() == 2 {
                vec![full[0]]
            } else {
                vec![]
            };
            bc("the cosines and target", &rows, &y)
        }
        "triplet_margin_loss" | "triplet_margin_with_distance_loss" => {
            let (a, p, n) = (shape("anchor"), shape("positive"), shape("negative"));
            if p.len() != a.len() || n.len() != a.len() {
                return Err(format!(
                    "anchor, positive and negative must have the same number of dimensions, got {}, {} and {}",
                    fmt_shape(&a),
                    fmt_shape(&p),
                    fmt_shape(&n)
                ));
            }
            let mut pairs = vec![(&a, &p), (&a, &n)];
            if options.get("swap") == Some(&Value::Bool(true)) {
                pairs.push((&p, &n));
            }
            let mut batch: Option<Vec<usize>> = None;
            for (u, v) in pairs {
                let full = bc("the triplet's tensors", u, v)?;
                let b = full
                    .split_last()
                    .map(|(_, b)| b.to_vec())
                    .unwrap_or_default();
                batch = Some(match batch {
                    None => b,
                    Some(prev) => bc("the triplet's distances", &prev, &b)?,
                });
            }
            Ok(batch.unwrap_or_default())
        }
        "linear_cross_entropy" => {
            // The logits are (C), (N, C) or (N, C, d1..dK) for linear_weight (C, d1..dK, H).
            let w = shape("linear_weight");
            let spatial = if w.len() >= 2 {
                &w[1..w.len() - 1]
            } else {
                &[][..]
            };
            match x.as_slice() {
                [_] => Ok(vec![]),
                [n, _] => Ok(std::iter::once(*n).chain(spatial.iter().copied()).collect()),
                _ => Err(format!(
                    "input has shape {}: expected (in_features) or (N, in_features)",
                    fmt_shape(&x)
                )),
            }
        }
        "ctc_loss" => match shape("log_probs").as_slice() {
            [_, n, _] => Ok(vec![*n]),
            [_, _] => Ok(vec![]),
            other => Err(format!(
                "log_probs has shape {}, but it must be (T, N, C), or (T, C) unbatched",
                fmt_shape(other)
            )),
        },
        other => Err(format!("no shape rule for {other}")),
    }
}

/// A float type the built-in losses can be called in.
pub trait Float: WireFloat {
    /// The kernel output in this precision.
    fn take(c: Computed) -> Option<LossOutput<Self>>;
}

impl Float for f64 {
    fn take(c: Computed) -> Option<LossOutput<f64>> {
        match c {
            Computed::F64(o) => Some(o),
            Computed::F32(_) => None,
        }
    }
}

impl Float for f32 {
    fn take(c: Computed) -> Option<LossOutput<f32>> {
        match c {
            Computed::F32(o) => Some(o),
            Computed::F64(_) => None,
        }
    }
}

/// Appends `{"shape", "dtype", "base64"}` for `a`, exact.
fn write_base64<T: WireFloat>(out: &mut Vec<u8>, a: &ArrayViewD<'_, T>) {
    out.extend_from_slice(b"{\"shape\":");
    write_shape(out, a.shape());
    out.extend_from_slice(b",\"dtype\":\"");
    out.extend_from_slice(T::DTYPE.as_bytes());
    out.extend_from_slice(b"\",\"base64\":\"");
    match a.as_slice() {
        Some(data) => base64_simd::STANDARD.encode_append(&*T::le_bytes(data), out),
        None => {
            let data: Vec<T> = a.iter().copied().collect();
            base64_simd::STANDARD.encode_append(&*T::le_bytes(&data), out)
        }
    }
    out.extend_from_slice(b"\"}");
}

/// The request body calling `call` on `args` (in `call.names` order).
pub fn body<T: WireFloat>(call: &LossCall, args: &[ArrayViewD<'_, T>], grad: bool) -> Vec<u8> {
    let n: usize = args.iter().map(|a| a.len()).sum();
    let mut b = Vec::with_capacity(n * std::mem::size_of::<T>() * 4 / 3 + 256);
    b.push(b'{');
    for (name, a) in call.names.iter().zip(args) {
        write_str(&mut b, name);
        b.push(b':');
        write_base64(&mut b, a);
        b.push(b',');
    }
    for (name, v) in &call.literals {
        write_str(&mut b, name);
        b.push(b':');
        serde_json::to_writer(&mut b, &number_json(*v)).expect("writing to a Vec");
        b.push(b',');
    }
    for (k, v) in &call.options {
        write_str(&mut b, k);
        b.push(b':');
        serde_json::to_writer(&mut b, v).expect("writing to a Vec");
        b.push(b',');
    }
    b.extend_from_slice(b"\"reduction\":");
    write_str(&mut b, call.reduction);
    b.extend_from_slice(b",\"dtype\":\"");
    b.extend_from_slice(T::DTYPE.as_bytes());
    b.extend_from_slice(if grad {
        b"\",\"grad\":true}"
    } else {
        b"\",\"grad\":false}"
    });
    b
}

/// Calls the loss through the registry; errors are the caller's to place.
pub fn call<T: Float>(
    call: &LossCall,
    args: &[ArrayViewD<'_, T>],
    grad: bool,
    rank: usize,
) -> Result<LossOutput<T>, ApiError> {
    let body = body(call, args, grad);
    let mut budget = Budget {
        elements: usize::MAX,
        rank,
    };
    let out = (call.entry.eval)(&body, &mut budget)?;
    T::take(out).ok_or_else(|| ApiError::internal("a built-in loss answered in another dtype"))
}

/// Tensors broadcast to an output's shape, and the shape each was viewed as before.
pub type Materialized<T> = (Vec<ArrayD<T>>, Vec<Vec<usize>>);

/// Broadcasts the arguments of an element-wise loss to its output's shape (`var` of
/// `gaussian_nll_loss` by its own rule first); the shapes each was viewed as, for summing the
/// gradients back.
pub fn materialize<T: Copy>(
    call: &LossCall,
    args: &[ArrayViewD<'_, T>],
    out: &[usize],
) -> Option<Materialized<T>> {
    let input = call
        .names
        .iter()
        .position(|n| *n == "input")
        .map(|i| args[i].shape().to_vec());
    let mut views = Vec::with_capacity(args.len());
    let mut viewed = Vec::with_capacity(args.len());
    for (name, a) in call.names.iter().zip(args) {
        let mut v = a.clone();
        if call.entry.info.name == "gaussian_nll_loss" && *name == "var" {
            let eff = effective_var_shape(input.as_deref()?, a.shape())?;
            v = v.into_shape_with_order(IxDyn(&eff)).ok()?;
        }
        viewed.push(v.shape().to_vec());
        views.push(v.broadcast(IxDyn(out))?.to_owned());
    }
    Some((views, viewed))
}

/// Places a built-in loss's error at its call: the code kept (an option's problem is the
/// expression's), the detail prefixed with the call's text.
pub fn place(e: ApiError, src: &str, start: usize, text: &str) -> ApiError {
    let code = match e.code {
        Code::InvalidOption => Code::InvalidExpression,
        c => c,
    };
    if matches!(code, Code::Timeout | Code::PayloadTooLarge | Code::Internal) {
        return e;
    }
    let position = src.get(..start).map_or(start, |s| s.chars().count());
    let at = match &e.pointer {
        Some(p) if !p.is_empty() => format!(" (argument {})", p.trim_start_matches('/')),
        _ => String::new(),
    };
    ApiError {
        code,
        detail: format!("in `{text}`{at}: {} (at character {position})", e.detail),
        pointer: Some("/expression".into()),
        position: Some(position),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::registry;
    use crate::wire::Tensor;

    /// The shape of each tensor argument of an example body.
    fn shapes_of(body: &Value, e: &Entry) -> Vec<ArgShape> {
        e.info
            .tensors
            .iter()
            .filter_map(|t| {
                let v = body.get(t.name)?;
                if v.is_null() {
                    return None;
                }
                let literal = v.is_number();
                let (tensor, _) = Budget {
                    elements: usize::MAX,
                    rank: 16,
                }
                .run(|| serde_json::from_value::<Tensor>(v.clone()));
                Some(ArgShape {
                    name: t.name,
                    shape: tensor.ok()?.shape,
                    literal,
                })
            })
            .collect()
    }

    #[test]
    fn the_none_shape_rules_agree_with_every_kernel_on_its_examples() {
        let mut checked = 0;
        for e in registry() {
            for ex in (e.examples)() {
                let mut body = ex.body.clone();
                body["reduction"] = Value::from("none");
                body["grad"] = Value::from(false);
                let args = shapes_of(&body, e);
                let opts: Map<String, Value> = body
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| !e.info.is_tensor(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let bytes = serde_json::to_vec(&body).unwrap();
                let mut budget = Budget {
                    elements: usize::MAX,
                    rank: 16,
                };
                let Ok(out) = (e.eval)(&bytes, &mut budget) else {
                    continue;
                };
                let got = match out {
                    Computed::F64(o) => o.loss.shape().to_vec(),
                    Computed::F32(o) => o.loss.shape().to_vec(),
                };
                let want = none_shape(e.info.name, &args, &opts)
                    .unwrap_or_else(|m| panic!("{}/{}: {m}", e.info.name, ex.name));
                assert_eq!(want, got, "{}/{}", e.info.name, ex.name);
                checked += 1;
            }
        }
        assert!(checked >= 22, "{checked}");
    }

    fn s(name: &'static str, shape: &[usize]) -> ArgShape {
        ArgShape {
            name,
            shape: shape.to_vec(),
            literal: false,
        }
    }

    #[test]
    fn none_shapes_of_the_shape_families() {
        let none = Map::new();
        let r = |n: &str, a: &[ArgShape]| none_shape(n, a, &none).unwrap();
        assert_eq!(
            r("mse_loss", &[s("input", &[2, 1]), s("target", &[3])]),
            vec![2, 3]
        );
        assert_eq!(
            r(
                "cross_entropy",
                &[s("input", &[4, 5, 6, 7]), s("target", &[4, 6, 7])]
            ),
            vec![4, 6, 7]
        );
        assert_eq!(
            r("cross_entropy", &[s("input", &[5]), s("target", &[])]),
            Vec::<usize>::new()
        );
        assert_eq!(
            r("multi_margin_loss", &[s("input", &[5]), s("target", &[1])]),
            vec![1]
        );
        assert_eq!(
            r(
                "multilabel_soft_margin_loss",
                &[s("input", &[3, 4]), s("target", &[3, 4])]
            ),
            vec![3]
        );
        assert_eq!(
            r(
                "cosine_embedding_loss",
                &[
                    s("input1", &[3, 4]),
                    s("input2", &[1, 4]),
                    s("target", &[3])
                ]
            ),
            vec![3]
        );
        assert_eq!(
            r(
                "triplet_margin_loss",
                &[
                    s("anchor", &[3, 4]),
                    s("positive", &[3, 4]),
                    s("negative", &[1, 4])
                ]
            ),
            vec![3]
        );
        assert_eq!(r("ctc_loss", &[s("log_probs", &[10, 2, 5])]), vec![2]);
        assert_eq!(
            r(
                "gaussian_nll_loss",
                &[s("input", &[3, 2]), s("target", &[3, 2]), s("var", &[3])]
            ),
            vec![3, 2]
        );
        assert!(none_shape("linear_cross_entropy", &[s("input", &[2, 3, 4])], &none).is_err());
    }

    #[test]
    fn row_axes_name_the_dimension_each_output_element_sums_over() {
        let a = [s("input", &[4, 5, 6])];
        assert_eq!(row_axes("cross_entropy", "input", &a), Some(vec![1]));
        assert_eq!(row_axes("cross_entropy", "weight", &a), None);
        let a = [s("log_probs", &[7, 2, 5])];
        assert_eq!(row_axes("ctc_loss", "log_probs", &a), Some(vec![0, 2]));
        let a = [s("anchor", &[3, 4])];
        assert_eq!(row_axes("triplet_margin_loss", "anchor", &a), Some(vec![1]));
    }

    #[test]
    fn numbers_are_written_as_the_api_reads_them() {
        assert_eq!(number_json(-100.0), Value::from(-100));
        assert_eq!(number_json(0.5), Value::from(0.5));
        assert_eq!(number_json(f64::INFINITY), Value::from("Infinity"));
        assert_eq!(number_json(f64::NAN), Value::from("NaN"));
    }
}
