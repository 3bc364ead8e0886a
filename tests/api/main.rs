//! Integration tests through real HTTP: a server on port 0 per test.

mod batch;
mod catalog;
mod conformance;
mod custom;
mod encodings;
mod errors;
mod helpers;
mod hostile;
mod limits;
mod oip;
mod openapi;
mod service;
