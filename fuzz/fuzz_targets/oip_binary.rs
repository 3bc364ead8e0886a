//! Open Inference Protocol bodies: the binary-body splitter, the inference header parser
//! (JSON with bare NaN/Infinity tokens) and, for what parses, the loss itself. The first
//! byte picks the model, the next four the `Inference-Header-Content-Length` (none when
//! 0xFFFFFFFF); nothing may panic and no request may fail internally.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lossd::error::Code;
use lossd::oip::{Model, binary, http};
use lossd::wire::Budget;

fuzz_target!(|data: &[u8]| {
    let [pick, a, b, c, d, body @ ..] = data else {
        return;
    };
    let budget = Budget { elements: 4096, rank: 8 };
    let len = u32::from_le_bytes([*a, *b, *c, *d]);
    let len = (len != u32::MAX).then(|| (len % 65536).to_string());
    let Ok((head, rest)) = binary::split(body, len.as_deref()) else {
        return;
    };
    let Ok(parsed) = http::parse(head, rest, budget) else {
        return;
    };
    let losses = lossd::losses::registry();
    let model = match usize::from(*pick) % (losses.len() + 1) {
        i if i == losses.len() => Model::Custom,
        i => Model::Loss(&losses[i]),
    };
    let limits = lossd::custom::Limits::default();
    match lossd::oip::infer(model, parsed.request, budget, &limits) {
        Ok(out) => {
            let _ = http::write(model, parsed.id.as_deref(), &out, &parsed.binary);
        }
        Err(e) => assert_ne!(e.code, Code::Internal, "{e:?}"),
    }
});
