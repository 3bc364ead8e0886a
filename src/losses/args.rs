//! Converting decoded tensors to the kernels' arrays: floats in the compute dtype, integers
//! checked to be integers.

use lossd_kernels::ndarray::{ArrayD, ArrayViewD, IxDyn};
use lossd_kernels::{LossError, LossOutput};

use crate::error::{ApiError, Code, element_pointer};
use crate::wire::ser::WireFloat;
use crate::wire::{Data, Form, Tensor};

/// Where element `flat` of a tensor of `shape` sits, as a pointer into the request.
fn pointer(field: &str, shape: &[usize], form: Form, flat: usize) -> String {
    match form {
        Form::Nested => {
            let mut idx = vec![0; shape.len()];
            let mut rest = flat;
            for d in (0..shape.len()).rev() {
                let n = shape[d].max(1);
                idx[d] = rest % n;
                rest /= n;
            }
            element_pointer(field, &idx)
        }
        Form::Flat => format!("/{field}/data/{flat}"),
        Form::Base64 => format!("/{field}"),
    }
}

/// A tensor as floats of the compute dtype `T` (integers convert).
pub fn float<T: WireFloat>(t: Tensor) -> ArrayD<T> {
    // f64 → f64 collects in place, reusing the decoded buffer.
    let data: Vec<T> = match t.data {
        Data::F64(v) => v.into_iter().map(T::of).collect(),
        Data::F32(v) => v.into_iter().map(|x| T::of(f64::from(x))).collect(),
        Data::I64(v) => v.into_iter().map(|x| T::of(x as f64)).collect(),
    };
    ArrayD::from_shape_vec(IxDyn(&t.shape), data).expect("decoding checked the element count")
}

/// The tensor `field` as integers: every element must be a whole number in the int64 range.
pub fn index(t: Tensor, field: &str) -> Result<ArrayD<i64>, ApiError> {
    let Tensor { shape, data, form } = t;
    let whole = |i: usize, x: f64| {
        // 2^63 is the first double above the int64 range.
        if x.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x) {
            Ok(x as i64)
        } else {
            Err(ApiError::new(
                Code::InvalidTensor,
                format!("{field}: {x} is not a whole number in the int64 range, and {field} holds integers"),
            )
            .at(pointer(field, &shape, form, i)))
        }
    };
    let data = match data {
        Data::I64(v) => v,
        Data::F64(v) => v
            .into_iter()
            .enumerate()
            .map(|(i, x)| whole(i, x))
            .collect::<Result<_, _>>()?,
        Data::F32(v) => v
            .into_iter()
            .enumerate()
            .map(|(i, x)| whole(i, f64::from(x)))
            .collect::<Result<_, _>>()?,
    };
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("decoding checked the element count"))
}

/// What a kernel returns.
type Kernel<T> = Result<LossOutput<T>, LossError>;

/// An optional tensor as floats of `T`, lent to a kernel with [`view`].
pub fn float_opt<T: WireFloat>(t: Option<Tensor>) -> Option<ArrayD<T>> {
    t.map(float::<T>)
}

/// A view of an optional array, as kernels take their optional tensors.
pub fn view<T>(a: &Option<ArrayD<T>>) -> Option<ArrayViewD<'_, T>> {
    a.as_ref().map(|a| a.view())
}

/// Runs `kernel` on `input` and `target` as floats of `T`: the `compute` of most losses.
pub fn pair<T: WireFloat>(
    input: Tensor,
    target: Tensor,
    kernel: impl FnOnce(ArrayViewD<'_, T>, ArrayViewD<'_, T>) -> Kernel<T>,
) -> Result<LossOutput<T>, ApiError> {
    let (x, y) = (float::<T>(input), float::<T>(target));
    Ok(kernel(x.view(), y.view())?)
}

/// As [`pair`], with an optional float `weight` as well.
pub fn weighted<T: WireFloat>(
    input: Tensor,
    target: Tensor,
    weight: Option<Tensor>,
    kernel: impl FnOnce(ArrayViewD<'_, T>, ArrayViewD<'_, T>, Option<ArrayViewD<'_, T>>) -> Kernel<T>,
) -> Result<LossOutput<T>, ApiError> {
    let w = float_opt::<T>(weight);
    pair(input, target, |x, y| kernel(x, y, view(&w)))
}

/// Runs `kernel` on three float tensors: two inputs and a target, or the triplet losses'
/// anchor, positive and negative.
pub fn triple<T: WireFloat>(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    kernel: impl FnOnce(ArrayViewD<'_, T>, ArrayViewD<'_, T>, ArrayViewD<'_, T>) -> Kernel<T>,
) -> Result<LossOutput<T>, ApiError> {
    let (a, b, c) = (float::<T>(a), float::<T>(b), float::<T>(c));
    Ok(kernel(a.view(), b.view(), c.view())?)
}

/// Runs `kernel` on a float `input`, a class-index `target` and an optional float `weight`.
pub fn classes<T: WireFloat>(
    input: Tensor,
    target: Tensor,
    weight: Option<Tensor>,
    kernel: impl FnOnce(ArrayViewD<'_, T>, ArrayViewD<'_, i64>, Option<ArrayViewD<'_, T>>) -> Kernel<T>,
) -> Result<LossOutput<T>, ApiError> {
    let x = float::<T>(input);
    let y = index(target, "target")?;
    let w = float_opt::<T>(weight);
    Ok(kernel(x.view(), y.view(), view(&w))?)
}

/// A float option that may also be infinite: a JSON number, or one of the strings
/// `"Infinity"`, `"-Infinity"`, `"NaN"` (as in tensor data). Used for `p` of the triplet loss,
/// where PyTorch accepts `float('inf')`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Float(pub f64);

impl<'de> serde::Deserialize<'de> for Float {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Float;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Float, E> {
                Ok(Float(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Float, E> {
                match s {
                    "Infinity" => Ok(Float(f64::INFINITY)),
                    "-Infinity" => Ok(Float(f64::NEG_INFINITY)),
                    "NaN" => Ok(Float(f64::NAN)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl utoipa::PartialSchema for Float {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["Infinity", "-Infinity", "NaN"])),
            )
            .into()
    }
}

impl utoipa::ToSchema for Float {}
