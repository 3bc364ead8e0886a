//! Tensors on the wire: the three encodings of docs/api.md in ([`de`]) and out ([`ser`]).
//!
//! Decoding goes straight from the request bytes into flat buffers through serde visitors:
//! no `serde_json::Value` tree, no `Vec<Vec<f64>>`. The element budget and rank limit are
//! enforced while decoding ([`Budget`]), so nothing a client sends allocates past them.

mod b64;
pub mod de;
pub mod fast;
pub mod schema;
pub mod ser;
pub mod skip;

pub use de::{Budget, Data, Form, Tensor};
