//! Built-in losses inside expressions: their options (from the catalog), the request body that
//! calls them through the registry, and how their gradients chain into the expression's
//! backward pass. Every per-loss fact (the output shape with `reduction: "none"`, which
//! tensors are element-wise or row-wise) comes from the loss's own [`Info`](crate::losses::Info)
//! through the registry; nothing here is keyed by a loss's name.
//!
//! A kernel returns the gradient of its output's *sum*. That is the exact vector-Jacobian
//! product when the upstream gradient is the same for every output element (always so for
//! `mean`/`sum`/`batchmean`, whose output is a scalar). For `reduction: "none"` with a
//! non-uniform upstream gradient lossd still differentiates exactly where each input element
//! reaches a single output element, as the loss's [`Layout`] says:
//!
//! - element-wise losses: the tensors are broadcast to the output's shape and the loss called
//!   once more, giving each element's own derivative; times the upstream gradient, summed
//!   back to each tensor's shape;
//! - row-wise losses: an input element belongs to exactly one output element (its row), so its
//!   derivative is scaled by that element's upstream gradient.
//!
//! A tensor shared by many outputs (class weights, `linear_weight`, a broadcast row) has no
//! such decomposition: a non-uniform upstream gradient there is a 422 `invalid_expression`.

use std::sync::LazyLock;

use lossd_kernels::LossOutput;
use lossd_kernels::ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde_json::{Map, Value};

use crate::error::{ApiError, Code};
pub use crate::losses::ArgShape;
use crate::losses::{Computed, Entry, Layout, registry};
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

/// The names of the losses whose unreduced output is element-wise in their (broadcast)
/// tensors, from their layouts.
pub static ELEMENTWISE: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    registry()
        .iter()
        .filter(|e| e.info.layout.is_elementwise())
        .map(|e| e.info.name)
        .collect()
});

/// For a row-wise loss, the dimensions of argument `arg` that its output does not have (each
/// element of `arg` belongs to the output element at its index without these dimensions).
pub fn row_axes(name: &str, arg: &str, args: &[ArgShape]) -> Option<Vec<usize>> {
    crate::losses::find(name)?.info.layout.row_axes(arg, args)
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

/// Broadcasts the arguments of an element-wise loss to its output's shape (after the view
/// its layout gives an argument, such as `var` of `gaussian_nll_loss`); the shapes each was
/// viewed as, for summing the gradients back.
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
        if let Layout::Elementwise { view: Some(view) } = call.entry.info.layout {
            let eff = view(name, a.shape(), input.as_deref()?)?;
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
    use crate::losses::shape::arg as s;
    use crate::wire::Tensor;

    /// Loss `name`'s rule for the shape of its unreduced output.
    fn none_shape(
        name: &str,
        args: &[ArgShape],
        options: &Map<String, Value>,
    ) -> Result<Vec<usize>, String> {
        (crate::losses::find(name).unwrap().info.none_shape)(args, options)
    }

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
