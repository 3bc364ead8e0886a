//! Request decoding and response encoding, the service's own hot paths: 1,000,000 floats as
//! nested JSON and as base64, decoded through the real request type of `mse_loss`.
//!
//! `cargo bench --bench decode`; throughput is in bytes of request body per second.

use std::hint::black_box;

use divan::counter::BytesCount;
use lossd::losses::{self, Loss};
use lossd::wire::Budget;

fn main() {
    lossd_kernels::alloc::keep_freed_memory();
    divan::main();
}

const N: usize = 1_000_000;

fn values(seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..N)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0
        })
        .collect()
}

fn nested_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"input": values(1), "target": values(2)})).unwrap()
}

fn base64_body() -> Vec<u8> {
    let enc = |v: Vec<f64>| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        base64_simd::STANDARD.encode_to_string(bytes)
    };
    // Keys in the order of docs/api.md and the clients (serde_json's `json!` would sort them).
    format!(
        r#"{{"input": {{"shape": [{N}], "dtype": "float64", "base64": "{}"}}, "target": {{"shape": [{N}], "dtype": "float64", "base64": "{}"}}}}"#,
        enc(values(1)),
        enc(values(2))
    )
    .into_bytes()
}

/// The same body with each tensor's keys in sorted order (`base64` first: its length is not
/// known until its closing quote is found).
fn base64_body_sorted_keys() -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(&base64_body()).unwrap();
    serde_json::to_vec(&v).unwrap()
}

fn budget() -> Budget {
    Budget {
        elements: 1 << 24,
        rank: 16,
    }
}

/// Decodes `body` as an `mse_loss` request, as the service does.
fn decode_mse(body: &[u8]) -> losses::mse_loss::MseLoss {
    let mut budget = budget();
    let info = &losses::mse_loss::MseLoss::INFO;
    losses::decode(black_box(body), &mut budget, info, None).unwrap()
}

#[divan::bench(sample_count = 20)]
fn decode_nested_json(b: divan::Bencher) {
    let body = nested_body();
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(decode_mse(&body)));
}

/// The same on one core: rayon's work inside a one-thread pool (the per-core figure; the
/// service decodes the two top-level arrays of a large body on two threads).
#[divan::bench(sample_count = 20)]
fn decode_nested_json_one_core(b: divan::Bencher) {
    let body = nested_body();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    b.counter(BytesCount::new(body.len()))
        .bench(|| one.install(|| black_box(decode_mse(&body))));
}

/// Numbers as clients most often send them: rounded to 9 decimals and written shortest
/// (Python's `json.dumps` of `round(x, 9)`), `", "` between them; one core.
#[divan::bench(sample_count = 20)]
fn decode_nested_json_9_decimals_one_core(b: divan::Bencher) {
    let short = |seed| -> Vec<f64> {
        values(seed)
            .into_iter()
            .map(|x| (x * 1e9).round() / 1e9)
            .collect()
    };
    let body =
        serde_json::to_vec(&serde_json::json!({"input": short(1), "target": short(2)})).unwrap();
    let text = String::from_utf8(body).unwrap().replace(',', ", ");
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    b.counter(BytesCount::new(text.len()))
        .bench(|| one.install(|| black_box(decode_mse(text.as_bytes()))));
}

#[divan::bench(sample_count = 20)]
fn decode_base64(b: divan::Bencher) {
    let body = base64_body();
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(decode_mse(&body)));
}

#[divan::bench(sample_count = 20)]
fn decode_base64_sorted_keys(b: divan::Bencher) {
    let body = base64_body_sorted_keys();
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(decode_mse(&body)));
}

/// A small request (`mse_loss` 3×5, the HTTP benchmark's small case): decoding is a few
/// hundred nanoseconds of every request's cost.
#[divan::bench]
fn decode_small_json(b: divan::Bencher) {
    let body = SMALL;
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(decode_mse(body)));
}

const SMALL: &[u8] = br#"{"input": [[0.1, -1.2, 2.5, 0.33, 1.0], [0.5, 0.25, -0.75, 3.0, -2.0], [1.5, 2.5, 3.5, 4.5, 5.5]], "target": [[1, 0, 2, 1, 0], [0.5, 0.5, 0.5, 0.5, 0.5], [1.25, 2.0, 3.0, 4.0, 5.0]], "reduction": "mean"}"#;

/// serde alone on the same small body (what `decode` did before its fast path).
#[divan::bench]
fn decode_small_json_serde_only(b: divan::Bencher) {
    b.counter(BytesCount::new(SMALL.len()))
        .bench(|| black_box(serde_only(black_box(SMALL))));
}

/// serde alone on the 1M-float nested body (what `decode` did before its fast path).
#[divan::bench(sample_count = 20)]
fn decode_nested_json_serde_only(b: divan::Bencher) {
    let body = nested_body();
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(serde_only(black_box(&body))));
}

fn serde_only(body: &[u8]) -> losses::mse_loss::MseLoss {
    let (r, _) = budget().run(|| serde_json::from_slice(body));
    r.unwrap()
}

#[divan::bench(sample_count = 20)]
fn whole_request_nested_json(b: divan::Bencher) {
    let body = nested_body();
    let entry = losses::find("mse_loss").unwrap();
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(entry.run(black_box(&body), budget()).unwrap()));
}

#[divan::bench(sample_count = 20)]
fn whole_request_base64(b: divan::Bencher) {
    let body = base64_body();
    let entry = losses::find("mse_loss").unwrap();
    b.counter(BytesCount::new(body.len()))
        .bench(|| black_box(entry.run(black_box(&body), budget()).unwrap()));
}

#[divan::bench(sample_count = 10)]
fn encode_response_with_gradient_json(b: divan::Bencher) {
    let body = serde_json::to_vec(&serde_json::json!({
        "input": values(1), "target": values(2), "grad": true, "reduction": "none"
    }))
    .unwrap();
    let entry = losses::find("mse_loss").unwrap();
    b.bench(|| black_box(entry.run(black_box(&body), budget()).unwrap()));
}

/// Response encoding alone: 1,000,000 f64 values (a `reduction: "none"` loss or a gradient)
/// written as nested JSON and as base64. Throughput is in bytes written.
#[divan::bench(args = ["json", "base64"], sample_count = 20)]
fn encode_tensor_f64(b: divan::Bencher, encoding: &str) {
    use lossd::wire::ser::{Encoding, write_tensor};
    let a = lossd_kernels::ndarray::ArrayD::from_shape_vec(vec![N], values(3)).unwrap();
    let encoding = match encoding {
        "json" => Encoding::Json,
        _ => Encoding::Base64,
    };
    let mut out = Vec::new();
    write_tensor(&mut out, &a, encoding);
    b.counter(BytesCount::new(out.len())).bench(|| {
        let mut out = Vec::new();
        write_tensor(&mut out, black_box(&a), encoding);
        out
    });
}
