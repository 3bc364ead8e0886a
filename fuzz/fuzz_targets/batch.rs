//! Batch bodies: decoded jobs run; nothing may panic and no job may fail internally.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lossd::error::Code;
use lossd::wire::Budget;

fuzz_target!(|data: &[u8]| {
    let mut budget = Budget { elements: 4096, rank: 8 };
    if let Ok(jobs) = lossd::routes::batch::prepare(data, &mut budget, 16, &lossd::custom::Limits::default()) {
        for job in jobs.into_iter().flatten() {
            if let Err(e) = job() {
                assert_ne!(e.code, Code::Internal, "{e:?}");
            }
        }
    }
});
