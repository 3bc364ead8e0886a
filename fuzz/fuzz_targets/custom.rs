//! Custom-loss bodies: the expression parser, the shape checker and the evaluator, with
//! gradients. Nothing may panic, hang or fail internally; every failure is a problem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lossd::custom::Limits;
use lossd::error::Code;
use lossd::wire::Budget;

fuzz_target!(|data: &[u8]| {
    let mut budget = Budget { elements: 4096, rank: 8 };
    match lossd::custom::prepare(data, &mut budget, None, &Limits::default()) {
        Ok(job) => {
            if let Err(e) = job() {
                assert_ne!(e.code, Code::Internal, "{e:?}");
            }
        }
        Err(e) => assert_ne!(e.code, Code::Internal, "{e:?}"),
    }
});
