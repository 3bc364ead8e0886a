//! Whole request bodies of every loss, through the real request types and kernels. The input
//! is `<loss name>\n<body>`; an unknown name picks a loss by its first byte. Nothing may
//! panic; every failure is a problem other than a 500.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lossd::error::Code;
use lossd::wire::Budget;

fuzz_target!(|data: &[u8]| {
    let registry = lossd::losses::registry();
    let (entry, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let name = std::str::from_utf8(&data[..i]).unwrap_or("");
            let entry = lossd::losses::find(name)
                .unwrap_or(&registry[data.first().copied().unwrap_or(0) as usize % registry.len()]);
            (entry, &data[i + 1..])
        }
        None => (&registry[data.first().copied().unwrap_or(0) as usize % registry.len()], data),
    };
    let budget = Budget { elements: 4096, rank: 8 };
    if let Err(e) = entry.run(body, budget) {
        assert_ne!(e.code, Code::Internal, "{}: {e:?}", entry.info.name);
    }
});
