//! Integration tests through real HTTP: a server on port 0 per test.

mod conformance;
mod encodings;
mod errors;
mod helpers;
mod service;
