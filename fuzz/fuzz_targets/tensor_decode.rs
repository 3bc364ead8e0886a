//! The tensor decoder, all three encodings: any bytes either decode into a tensor whose data
//! matches its shape, or fail cleanly, within the element budget. The same bytes as the value
//! of a request body's key go through the fast path too, which must accept nothing serde
//! refuses and decode what it accepts to the same bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lossd::wire::{Budget, Data, Tensor, fast};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    t: Tensor,
    #[serde(default)]
    u: Option<Tensor>,
}

fn bits(t: &Tensor) -> (Vec<usize>, Vec<u64>, u8) {
    let (v, kind): (Vec<u64>, u8) = match &t.data {
        Data::I64(v) => (v.iter().map(|&i| i as u64).collect(), 0),
        Data::F64(v) => (v.iter().map(|x| x.to_bits()).collect(), 1),
        Data::F32(v) => (v.iter().map(|x| u64::from(x.to_bits())).collect(), 2),
    };
    (t.shape.clone(), v, kind)
}

fuzz_target!(|data: &[u8]| {
    let budget = Budget { elements: 4096, rank: 8 };
    let (result, _over) = budget.clone().run(|| serde_json::from_slice::<Tensor>(data));
    if let Ok(t) = result {
        let n: usize = t.shape.iter().product();
        assert_eq!(n, t.data.len(), "shape {:?} but {} elements", t.shape, t.data.len());
        assert!(t.shape.len() <= 8);
        assert!(n <= 4096);
    }
    // As a body: `{"t": <data>, "u": [1.5, 2]}`.
    let body = [br#"{"t": "#.as_slice(), data, br#", "u": [1.5, 2]}"#].concat();
    let (slow, slow_over) = budget.clone().run(|| serde_json::from_slice::<Body>(&body));
    let (quick, quick_over) = budget.clone().run(|| {
        let p = fast::prepare(&body)?;
        fast::with_tensors(p.tensors, || serde_json::from_slice::<Body>(&p.body).ok())?
    });
    if let Some(q) = quick {
        let s = slow.expect("the fast path accepted a body serde refuses");
        assert_eq!(bits(&s.t), bits(&q.t));
        assert_eq!(s.t.form, q.t.form);
        assert_eq!(s.u.as_ref().map(bits), q.u.as_ref().map(bits));
        assert_eq!(slow_over, quick_over);
    }
});
