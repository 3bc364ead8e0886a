use super::*;

fn budget() -> Budget {
    Budget {
        elements: 1 << 20,
        rank: 16,
    }
}

/// Reads `body` in pieces of `piece` bytes.
fn read(body: &[u8], piece: usize) -> Read {
    let mut r = Reader::new(body.len(), budget());
    for p in body.chunks(piece) {
        r.feed(p);
    }
    r.finish()
}

fn b64(values: &[f64]) -> String {
    base64_simd::STANDARD.encode_to_string(bytemuck::cast_slice::<f64, u8>(values))
}

fn tensor(values: &[f64]) -> String {
    format!(
        r#"{{"shape": [{}], "dtype": "float64", "base64": "{}"}}"#,
        values.len(),
        b64(values)
    )
}

#[test]
fn base64_members_are_decoded_as_they_arrive_and_the_rest_is_kept() {
    let x: Vec<f64> = (0..301).map(|i| i as f64 * 0.25 - 3.0).collect();
    let y: Vec<f64> = (0..301).map(|i| (i as f64).sin()).collect();
    let body = format!(
        "{{\"input\" : {},\n \"target\":{}, \"reduction\": \"sum\", \"grad\": true, \"delta\": 1.5}}  ",
        tensor(&x),
        tensor(&y)
    );
    for piece in [1, 2, 3, 7, 64, 1000, body.len()] {
        let r = read(body.as_bytes(), piece);
        assert_eq!(
            r.streamed_keys(),
            [&b"input"[..], b"target"],
            "pieces of {piece}"
        );
        assert_eq!(r.len(), body.len());
        assert_eq!(r.streamed_elements(), 602);
        let (placed, tensors, stand_in) = r.with_placeholders().ok().expect("followed");
        assert_eq!(
            String::from_utf8(placed).unwrap(),
            "{\"input\" : \"\\u0000lossd:0\",\n \"target\":\"\\u0000lossd:1\", \"reduction\": \"sum\", \"grad\": true, \"delta\": 1.5}  "
        );
        assert_eq!(tensors[0].data, Data::F64(x.clone()));
        assert_eq!(tensors[1].data, Data::F64(y.clone()));
        assert_eq!(tensors[0].shape, [301]);
        // What stands in: the same body, the texts of the same length, all zeros.
        let zeros = format!(
            "{{\"input\" : {},\n \"target\":{}, \"reduction\": \"sum\", \"grad\": true, \"delta\": 1.5}}  ",
            tensor(&[0.0; 301]),
            tensor(&[0.0; 301])
        );
        assert_eq!(String::from_utf8(stand_in.body()).unwrap(), zeros);
        // And the body as sent, encoded again.
        assert_eq!(read(body.as_bytes(), piece).whole(), body.as_bytes());
    }
}

#[test]
fn a_body_the_reader_does_not_follow_is_given_back_exactly() {
    let x: Vec<f64> = (0..50).map(|i| i as f64 / 7.0).collect();
    let t = tensor(&x);
    let text = b64(&x);
    let bodies = [
        // Not followed from the start, or after a tensor it streamed.
        format!(r#"{{"input": [[1, 2], [3, 4]], "target": {t}}}"#),
        format!(r#"{{"input": {t}, "target": [1, 2, 3]}}"#),
        format!(r#"{{"input": {t}, "x\"y": 1}}"#),
        format!(r#"{{"input": {t}, "target": "\u0000lossd:0"}}"#),
        // The base64 first, another key.
        format!(r#"{{"input": {{"base64": "{text}", "shape": [50], "dtype": "float64"}}}}"#),
        format!(
            r#"{{"input": {{"shape": [50], "dtype": "float64", "base64": "{text}", "x": 1}}}}"#
        ),
        format!(r#"{{"input": {{"shape": [50], "data": [1], "base64": "{text}"}}}}"#),
        // Texts that do not decode to the shape's elements.
        format!(r#"{{"input": {{"shape": [51], "dtype": "float64", "base64": "{text}"}}}}"#),
        format!(r#"{{"input": {{"shape": [49], "dtype": "float64", "base64": "{text}"}}}}"#),
        // A text longer than its shape says, whose first part decodes to all the elements.
        format!(r#"{{"input": {{"shape": [48], "dtype": "float64", "base64": "{text}"}}}}"#),
        format!(r#"{{"input": {{"shape": [50], "dtype": "float32", "base64": "{text}"}}}}"#),
        format!(
            r#"{{"input": {{"shape": [50], "dtype": "float64", "base64": "{}!{}"}}}}"#,
            &text[..100],
            &text[101..]
        ),
        format!(
            r#"{{"input": {{"shape": [50], "dtype": "float64", "base64": "{}\"{}"}}}}"#,
            &text[..100],
            &text[101..]
        ),
        format!(
            r#"{{"input": {{"shape": [50], "dtype": "float64", "base64": "{}\\u0041{}"}}}}"#,
            &text[..100],
            &text[101..]
        ),
        // Shapes it does not take, and a body cut short or with more after it.
        format!(r#"{{"input": {{"shape": [05, 10], "dtype": "float64", "base64": "{text}"}}}}"#),
        format!(r#"{{"input": {{"shape": [0], "dtype": "float64", "base64": ""}}, "t": {t}}}"#),
        format!(r#"{{"input": {{"shape": [-50], "dtype": "float64", "base64": "{text}"}}}}"#),
        format!(r#"{{"input": {t}"#),
        format!(r#"{{"input": {t}}} {{}}"#),
        format!(r#"{{"input": {{"shape": [50], "dtype": "float64", "base64": "{text}"#),
        format!(r#"["input", {t}]"#),
    ];
    for body in &bodies {
        for piece in [1, 5, 64, body.len()] {
            let r = read(body.as_bytes(), piece);
            assert!(
                r.with_placeholders()
                    .is_err_and(|r| r.whole() == body.as_bytes()),
                "{body} in pieces of {piece}"
            );
        }
    }
}

#[test]
fn tensors_past_the_limits_or_the_declared_body_are_kept_as_text() {
    let x: Vec<f64> = (0..40).map(f64::from).collect();
    let body = format!(r#"{{"input": {}, "target": {}}}"#, tensor(&x), tensor(&x));
    let follow = |elements: usize, rank: usize, declared: usize| {
        let mut r = Reader::new(declared, Budget { elements, rank });
        r.feed(body.as_bytes());
        r.finish()
    };
    // Room for one tensor only: the second is kept, so the body is not used streamed.
    let r = follow(79, 16, body.len());
    assert_eq!(r.streamed_elements(), 40);
    assert!(
        r.with_placeholders()
            .is_err_and(|r| r.whole() == body.as_bytes())
    );
    assert_eq!(follow(80, 16, body.len()).streamed_elements(), 80);
    assert_eq!(follow(80, 0, body.len()).streamed_elements(), 0);
    // A body declared shorter than its texts: nothing is allocated for a text past it.
    assert_eq!(follow(80, 16, 100).streamed_elements(), 0);
}

#[test]
fn any_body_in_any_pieces_is_given_back_exactly() {
    // A valid body with one byte changed at a time, to every kind of byte the reader looks
    // at, cut into pieces of changing lengths: whatever the reader made of it, the body as
    // sent comes back.
    let x: Vec<f64> = (0..20).map(|i| i as f64 * 1.5).collect();
    let body = format!(
        r#"{{"input": {}, "target": {}, "reduction": "sum"}}"#,
        tensor(&x),
        tensor(&x[..19])
    )
    .into_bytes();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    for at in 0..body.len() {
        for b in [
            b'"', b'\\', b'{', b'}', b'[', b',', b':', b' ', b'=', b'A', b'0', b'x',
        ] {
            let mut sent = body.clone();
            sent[at] = b;
            let mut r = Reader::new(sent.len(), budget());
            let mut rest = &sent[..];
            while !rest.is_empty() {
                let k = (1 + next(40)).min(rest.len());
                r.feed(&rest[..k]);
                rest = &rest[k..];
            }
            assert_eq!(r.finish().whole(), sent, "{at} {}", b as char);
        }
    }
}
