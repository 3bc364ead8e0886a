//! The OpenAPI schema of a tensor field: the three encodings of docs/api.md.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::Tensor;

fn non_finite() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["NaN", "Infinity", "-Infinity"]))
}

impl PartialSchema for Tensor {
    fn schema() -> RefOr<Schema> {
        let number = ObjectBuilder::new()
            .schema_type(Type::Number)
            .description(Some("A 0-d tensor."));
        let element = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(non_finite())
            .item(ArrayBuilder::new());
        let nested = ArrayBuilder::new().items(element).description(Some(
            "Nested arrays of numbers, rectangular; rank and shape are inferred. \
             \"NaN\", \"Infinity\" and \"-Infinity\" stand for non-finite floats.",
        ));
        let shape = || {
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
        };
        let flat = ObjectBuilder::new()
            .property("shape", shape())
            .property(
                "data",
                ArrayBuilder::new().items(
                    OneOfBuilder::new()
                        .item(ObjectBuilder::new().schema_type(Type::Number))
                        .item(non_finite()),
                ),
            )
            .required("shape")
            .required("data")
            .description(Some("Row-major `data` with an explicit `shape`."));
        let b64 = ObjectBuilder::new()
            .property("shape", shape())
            .property(
                "dtype",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["float32", "float64", "int64"])),
            )
            .property(
                "base64",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_encoding("base64"),
            )
            .required("shape")
            .required("dtype")
            .required("base64")
            .description(Some(
                "Raw little-endian bytes, standard base64 with padding.",
            ));
        let special = non_finite().description(Some("A 0-d non-finite tensor."));
        OneOfBuilder::new()
            .item(number)
            .item(special)
            .item(nested)
            .item(flat)
            .item(b64)
            .description(Some("A tensor in any of the three encodings."))
            .into()
    }
}

impl ToSchema for Tensor {}
