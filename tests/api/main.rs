//! Integration tests through real HTTP: a server on port 0 per test.

mod access;
mod batch;
mod catalog;
mod conformance;
mod custom;
mod encodings;
mod errors;
mod fidelity;
mod helpers;
mod hostile;
mod limits;
mod memory;
mod oip;
mod openapi;
mod request_ids;
mod service;
mod streaming;
