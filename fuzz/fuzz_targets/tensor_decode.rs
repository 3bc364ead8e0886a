//! The tensor decoder, all three encodings: any bytes either decode into a tensor whose data
//! matches its shape, or fail cleanly, within the element budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lossd::wire::{Budget, Tensor};

fuzz_target!(|data: &[u8]| {
    let mut budget = Budget { elements: 4096, rank: 8 };
    let (result, _over) = budget.run(|| serde_json::from_slice::<Tensor>(data));
    if let Ok(t) = result {
        let n: usize = t.shape.iter().product();
        assert_eq!(n, t.data.len(), "shape {:?} but {} elements", t.shape, t.data.len());
        assert!(t.shape.len() <= 8);
        assert!(n <= 4096);
    }
});
