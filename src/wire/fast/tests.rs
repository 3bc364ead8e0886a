//! The fast path against serde alone: whatever serde refuses, the fast path must not
//! accept; whatever both accept must be the same tensors, bit for bit.

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    input: Tensor,
    #[serde(default)]
    target: Option<Tensor>,
    #[serde(default)]
    reduction: Option<String>,
}

fn budget() -> Budget {
    Budget {
        elements: 10_000,
        rank: 4,
    }
}

/// serde alone.
fn slow(body: &str) -> (Result<Req, String>, bool) {
    budget().run(|| serde_json::from_str::<Req>(body).map_err(|e| e.to_string()))
}

/// The fast path as `losses::decode` runs it: `None` when it does not apply or fails. Run
/// with the parallel path off and forced on, and with 64 spaces after the body (the short
/// float parse leaves the last 64 bytes of a body to the byte loop): all must give the same.
fn fast(body: &str) -> (Option<Req>, bool) {
    let seq = fast_with(body, usize::MAX);
    let padded = format!("{body}{:64}", "");
    for (other, how) in [
        (fast_with(body, 0), "the parallel path"),
        (fast_with(&padded, usize::MAX), "the padded body"),
        (fast_with(&padded, 0), "the padded body in parallel"),
    ] {
        assert_eq!(seq.1, other.1, "budget overrun differs in {how}: {body}");
        match (&seq.0, &other.0) {
            (Some(s), Some(p)) => {
                assert_eq!(bits(&s.input), bits(&p.input), "{how}: {body}");
                assert_eq!(
                    s.target.as_ref().map(bits),
                    p.target.as_ref().map(bits),
                    "{how}: {body}"
                );
            }
            (None, None) => {}
            _ => panic!("{how} differs from the sequential walk: {body}"),
        }
    }
    seq
}

fn fast_with(body: &str, parallel_from: usize) -> (Option<Req>, bool) {
    budget().run(|| {
        let p = prepare_with(body.as_bytes(), parallel_from)?;
        with_tensors(p.tensors, || serde_json::from_slice::<Req>(&p.body).ok())?
    })
}

/// Bits of the data, so NaNs compare equal.
fn bits(t: &Tensor) -> (Vec<usize>, Form, Vec<u64>, &'static str) {
    let (v, kind): (Vec<u64>, _) = match &t.data {
        Data::I64(v) => (v.iter().map(|&i| i as u64).collect(), "i64"),
        Data::F64(v) => (v.iter().map(|x| x.to_bits()).collect(), "f64"),
        Data::F32(v) => (v.iter().map(|x| u64::from(x.to_bits())).collect(), "f32"),
    };
    (t.shape.clone(), t.form, v, kind)
}

/// Checks the two paths agree on `body`; returns whether the fast path took it.
fn agree(body: &str) -> bool {
    let (s, s_over) = slow(body);
    let (f, f_over) = fast(body);
    match (&s, &f) {
        (Err(e), Some(_)) => panic!("the fast path accepted what serde refuses ({e}): {body}"),
        (Ok(s), Some(f)) => {
            assert_eq!(bits(&s.input), bits(&f.input), "{body}");
            assert_eq!(
                s.target.as_ref().map(bits),
                f.target.as_ref().map(bits),
                "{body}"
            );
            assert_eq!(s.reduction, f.reduction, "{body}");
            assert_eq!(s_over, f_over, "{body}");
        }
        (_, None) => {}
    }
    f.is_some()
}

#[test]
fn nested_arrays_decode_as_serde_decodes_them() {
    for t in [
        "[1, 2, 3]",
        "[[1, 2.5, 3], [4, 5, 6]]",
        "[[[1], [2]], [[3], [4]]]",
        "[ 1 ,2\n,\t3\r]",
        "[-0]",
        "[-0, 1]",
        "[1, -0]",
        "[0, -0.0, 0.0]",
        "[9223372036854775807, 1]",
        "[9223372036854775808]",
        "[-9223372036854775808]",
        "[-9223372036854775809]",
        "[18446744073709551615]",
        "[18446744073709551616]",
        "[99999999999999999999999]",
        "[-99999999999999999999999]",
        "[1e5, 1E5, 1e+5, 1e-5, 1.5E-5]",
        "[0.1, 2.2250738585072011e-308, 9007199254740993]",
        "[4.9e-324, 2.4703282292062327e-324, 2.4703282292062328e-324, 1e-400]",
        "[1.7976931348623157e308, 1.7976931348623158e308]",
        "[0.30000000000000004, 123456789012345678901234567890.5]",
        "[1, 2, 1e0]",
    ] {
        let body = format!(r#"{{"input": {t}, "target": {t}}}"#);
        assert!(agree(&body), "the fast path should take {body}");
    }
}

#[test]
fn what_the_fast_path_leaves_is_decoded_or_refused_by_serde() {
    for t in [
        // Not taken (serde decodes them).
        "[]",
        "[[], []]",
        r#"["NaN", 1]"#,
        "7",
        "1.5",
        r#""Infinity""#,
        "[1, 1e400]",
        "[[[[[1]]]]]",
        // Refused.
        "[[1, 2], [3]]",
        "[[1], [2, 3]]",
        "[[1, 2], 3]",
        "[1, [2]]",
        "[[], [1]]",
        "[01]",
        "[1.]",
        "[.5]",
        "[1e]",
        "[+1]",
        "[1,]",
        "[1 2]",
        "[-]",
        "[1",
        "[[1, 2]",
        "[NaN]",
        "[1.0e+-1]",
        "[0x10]",
    ] {
        agree(&format!(r#"{{"input": {t}, "target": [1.5, 2]}}"#));
        agree(&format!(r#"{{"target": [1.5, 2], "input": {t}}}"#));
    }
}

#[test]
fn tensor_objects_decode_as_serde_decodes_them() {
    for t in [
        r#"{"shape": [2, 2], "data": [1, 2, 3, 4.5]}"#,
        r#"{"data": [1, 2, 3, 4], "shape": [4]}"#,
        r#"{"shape": [], "data": [5]}"#,
        r#"{"shape": [3], "dtype": "float64", "data": [1, 2, 3]}"#,
        r#"{"shape": [3], "dtype": "float32", "data": [1, 2, 3]}"#,
        r#"{"shape": [3], "dtype": "int64", "data": [1, 2, 3]}"#,
        r#"{"dtype": "float64", "base64": "AAAAAAAA8D8AAAAAAAAAwA==", "shape": [2]}"#,
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAAAMA="}"#,
        r#"{"shape": [1, 2], "dtype": "int64", "base64": "AQAAAAAAAAD+/////////w=="}"#,
        r#"{"shape": [1], "dtype": "float64", "base64": "AAAAAAAA+H8="}"#,
    ] {
        let body = format!(r#"{{"input": {t}, "reduction": "sum"}}"#);
        assert!(agree(&body), "the fast path should take {body}");
    }
    for t in [
        r#"{"shape": [0], "data": []}"#,
        r#"{"shape": [3], "dtype": "int64", "data": [1, 2, 3.5]}"#,
        r#"{"shape": [3], "data": [1, 2]}"#,
        r#"{"shape": [2, 1], "data": [[1], [2]]}"#,
        r#"{"shape": [], "data": 0}"#,
        r#"{"shape": [2], "data": [1, 2], "data": [1, 2]}"#,
        r#"{"shape": [2], "data": [1, 2], "base64": "AAAA"}"#,
        r#"{"shape": [2], "dtype": "float64", "base64": "AAAAAAAA8D8AAAAAAAAAwA="}"#,
        r#"{"shape": [2], "dtype": "float64", "base64": "!!!!AAAA8D8AAAAAAAAAwA=="}"#,
        r#"{"shape": [2], "base64": "AAAAAAAA8D8AAAAAAAAAwA=="}"#,
        r#"{"shape": [2], "dtype": "float16", "base64": "AAAAAAAA8D8AAAAAAAAAwA=="}"#,
        r#"{"shape": [-2], "data": [1, 2]}"#,
        r#"{"shape": [2.0], "data": [1, 2]}"#,
        r#"{"shape": [2], "data": [1, 2], "extra": 1}"#,
        r#"{"shap\u0065": [2], "data": [1, 2]}"#,
        r#"{"shape": [1, 1, 1, 1, 1], "data": [1]}"#,
        r#"{"shape": [4294967296, 4294967296, 4294967296], "data": []}"#,
        r#"{}"#,
    ] {
        agree(&format!(r#"{{"input": {t}, "reduction": "sum"}}"#));
    }
}

#[test]
fn base64_text_found_by_its_length_is_still_checked() {
    // With shape and dtype first, the closing quote is looked for where the length puts it
    // (12 characters for two float32): escapes inside that span, a text that is too long or
    // too short, and a forged placeholder all go to serde, which refuses them.
    for t in [
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAAA\"A"}"#,
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAAAM\\"}"#,
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAAAMA=AAAA"}"#,
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAA"}"#,
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAA", "x": "AAAA"}"#,
        r#"{"shape": [3], "dtype": "float32", "base64": "\u0000lossd:0AAA"}"#,
        r#"{"base64": "AACAPwAA\"AMA=", "dtype": "float32", "shape": [2]}"#,
        r#"{"base64": "AACAPwAAAMA=\"", "dtype": "float32", "shape": [2]}"#,
        r#"{"dtype": "float32", "base64": "AACAPwAAAMA=", "shape": [2"#,
    ] {
        let body = format!(r#"{{"input": {t}, "reduction": "sum"}}"#);
        assert!(!agree(&body), "the fast path should leave {body} to serde");
        assert!(slow(&body).0.is_err(), "serde should refuse {body}");
    }
    // Well-formed, in either key order, the fast path takes it.
    for t in [
        r#"{"shape": [2], "dtype": "float32", "base64": "AACAPwAAAMA="}"#,
        r#"{"base64": "AACAPwAAAMA=", "dtype": "float32", "shape": [2]}"#,
        r#"{"dtype": "float32", "base64": "AACAPwAAAMA=", "shape": [2]}"#,
    ] {
        let body = format!(r#"{{"input": {t}, "reduction": "sum"}}"#);
        assert!(agree(&body), "the fast path should take {body}");
    }
}

#[test]
fn bodies_the_walk_does_not_follow_go_to_serde() {
    for body in [
        r#"[1, 2]"#,
        r#"{"input": [1, 2]"#,
        r#"{"input": [1, 2]} x"#,
        r#"{"input": [1, 2],}"#,
        r#"{"input" [1, 2]}"#,
        r#"{"input": [1, 2] "target": [1, 2]}"#,
        r#"{"input": [1, 2], "input": [1, 2]}"#,
        r#"{"input": [1, 2], "other": [1, 2]}"#,
        r#"{"input": [1, 2], "reduction": ["sum"]}"#,
        r#"{"input": [1, 2], "reduction": "a\"]}, [1, 2"}"#,
        r#"{"reduction": {"a": [1, {"b": "]"}]}, "input": [1, 2]}"#,
        r#"{"input": [1, 2], "reduction": [}"#,
        r#"{"in\u0070ut": [1, 2]}"#,
        r#"  {"input": [1, 2]}  "#,
    ] {
        agree(body);
    }
}

#[test]
fn placeholders_cannot_be_forged() {
    let forged = r#"{"input": "\u0000lossd:0", "target": [1, 2]}"#;
    assert!(prepare(forged.as_bytes()).is_none());
    assert!(slow(forged).0.is_err());
    let escaped = r#"{"input": [1, 2], "reduction": "\u0000"}"#;
    assert!(prepare(escaped.as_bytes()).is_none());
    // Outside a fast decode, a placeholder is just a string.
    assert!(take("\0lossd:0").is_none());
}

#[test]
fn the_element_budget_is_spent_and_never_overrun() {
    let body = r#"{"input": [1, 2, 3], "target": [4, 5, 6]}"#;
    let run = |elements| {
        Budget { elements, rank: 4 }.run(|| {
            let p = prepare(body.as_bytes());
            p.map(|p| p.tensors.len())
        })
    };
    assert_eq!(run(6), (Some(2), false));
    // The second tensor does not fit: left for serde, which marks the budget exceeded.
    assert_eq!(run(5), (Some(1), false));
    assert_eq!(run(2), (None, false));
    for elements in [2, 5, 6] {
        let (s, s_over) = Budget { elements, rank: 4 }
            .run(|| serde_json::from_str::<Req>(body).map_err(|e| e.to_string()));
        let (f, f_over) = Budget { elements, rank: 4 }.run(|| {
            let p = prepare(body.as_bytes())?;
            with_tensors(p.tensors, || serde_json::from_slice::<Req>(&p.body).ok())?
        });
        assert!(s.is_ok(), "{elements}");
        // Where the fast path applies, it ends as serde does (over the budget at 2 and 5).
        assert_eq!(s_over, elements < 6, "{elements}");
        if elements > 2 {
            assert_eq!((f.is_some(), f_over), (true, s_over), "{elements}");
        }
    }
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A number in one of the many ways JSON can write one.
fn number_text(r: &mut Lcg) -> String {
    let x = f64::from_bits(r.next() << 11 | r.next() & 0x7ff);
    match r.below(12) {
        0 => format!("{}", r.next() as i64 - (1 << 52)),
        1 => format!("{}", (r.next() % 2000) as i64 - 1000),
        2 if x.is_finite() => format!("{x:e}"),
        3 if x.is_finite() => format!("{x:E}"),
        4 => format!(
            "{:.17}",
            (r.next() as f64) / (1u64 << 53) as f64 * 4.0 - 2.0
        ),
        5 => format!("{}", (r.next() as f64) / (1u64 << 53) as f64 * 4.0 - 2.0),
        6 => format!("{}e{}", r.below(100_000), r.below(700) as i64 - 350),
        7 => format!("-{}.{}e+{}", r.below(10), r.next(), r.below(320)),
        8 => ["-0", "0", "-0.0", "0e0", "1E-0"][r.below(5) as usize].to_string(),
        9 => format!("{}{}", r.next(), r.next()),
        10 => format!("-{}", u64::MAX - r.below(1 << 12)),
        _ => format!("{}", (r.next() as f64) * 1e-300),
    }
}

/// Random tensors, often well-formed, sometimes broken in one place.
#[test]
fn random_tensors_agree() {
    let mut r = Lcg(7);
    let mut taken = 0;
    for case in 0..3000 {
        let rank = 1 + r.below(3) as usize;
        let shape: Vec<usize> = (0..rank).map(|_| 1 + r.below(4) as usize).collect();
        let n: usize = shape.iter().product();
        let nums: Vec<String> = (0..n).map(|_| number_text(&mut r)).collect();
        let mut text = nest(&nums, &shape, r.below(3) == 0);
        if case % 4 == 3 {
            // Break it: drop, double or change one byte.
            let i = r.below(text.len() as u64) as usize;
            let c = text.as_bytes()[i];
            match r.below(3) {
                0 => {
                    text.remove(i);
                }
                1 => text.insert(i, c as char),
                _ => text.replace_range(
                    i..=i,
                    [",", "]", "[", "1", "-", ".", "e", " "][r.below(8) as usize],
                ),
            }
        }
        let flat = format!(r#"{{"shape": {shape:?}, "data": [{}]}}"#, nums.join(", "));
        let body = format!(r#"{{"input": {text}, "target": {flat}}}"#);
        taken += usize::from(agree(&body));
    }
    assert!(taken > 2000, "the fast path took only {taken} of 3000");
}

/// Two nested arrays at the top level (what the parallel path takes), often well-formed,
/// sometimes broken, sometimes over the element budget together but not alone.
#[test]
fn random_pairs_of_arrays_agree() {
    let mut r = Lcg(11);
    let mut taken = 0;
    for case in 0..2000 {
        let mut arrays = Vec::new();
        for _ in 0..2 {
            let rank = 1 + r.below(3) as usize;
            let shape: Vec<usize> = (0..rank).map(|_| 1 + r.below(6) as usize).collect();
            let n: usize = shape.iter().product();
            let nums: Vec<String> = (0..n).map(|_| number_text(&mut r)).collect();
            let mut text = nest(&nums, &shape, r.below(3) == 0);
            if case % 5 == 4 {
                let i = r.below(text.len() as u64) as usize;
                text.replace_range(i..=i, ["]", "[", "\"", "1", "-", " "][r.below(6) as usize]);
            }
            arrays.push(text);
        }
        let body = match case % 3 {
            0 => format!(r#"{{"input": {}, "target": {}}}"#, arrays[0], arrays[1]),
            1 => format!(
                r#"{{"reduction": "sum", "target": {}, "input": {}}}"#,
                arrays[0], arrays[1]
            ),
            _ => format!(r#" {{ "input" : {} ,"target":{} }} "#, arrays[0], arrays[1]),
        };
        taken += usize::from(agree(&body));
    }
    assert!(taken > 1000, "the fast path took only {taken} of 2000");
    // More top-level arrays than placeholders, and a broken array beside good ones: the
    // parallel walk gives way or leaves the broken one, as the sequential walk does.
    let many: Vec<String> = (0..17).map(|i| format!(r#""k{i}": [{i}, 1]"#)).collect();
    let body = format!(r#"{{"input": [1, 2], {}}}"#, many.join(", "));
    assert!(budget().run(|| parallel(body.as_bytes())).0.is_none());
    agree(&body);
    for body in [
        r#"{"input": [1, 2, 3], "target": [[1, 2], [3]]}"#,
        r#"{"input": [1, 2, 3], "target": [1, 2, {}]}"#,
        r#"{"input": [[1e999, 2]], "target": [[1, 2]]}"#,
    ] {
        agree(body);
    }
    // Over the budget (10,000 elements) together, not alone; and within it.
    for (a, b) in [
        (6000, 5000),
        (9999, 1),
        (10_000, 1),
        (5000, 5000),
        (1, 10_001),
        (300, 200),
    ] {
        let body = format!(
            r#"{{"input": [{}], "target": [{}]}}"#,
            vec!["1.5"; a].join(","),
            vec!["2"; b].join(",")
        );
        agree(&body);
        let (_, over) = fast(&body);
        assert_eq!(over, a + b > 10_000, "{a} + {b}");
        // Well within the budget the parallel walk takes both; past it, it leaves the body
        // to the sequential walk (near it, it may: blocks are reserved ahead of use).
        let (walked, _) = budget().run(|| parallel(body.as_bytes()));
        match walked {
            Some(Some(p)) => assert!(
                a + b <= 10_000 && p.tensors.len() == 2,
                "{a} + {b}: {}",
                p.tensors.len()
            ),
            // A walk of c elements holds at most max(1024, c) more than it uses.
            None => assert!(a + b + a.max(1024) + b.max(1024) > 10_000, "{a} + {b}"),
            Some(None) => panic!("nothing taken from {a} + {b}"),
        }
    }
}

fn nest(nums: &[String], shape: &[usize], spaced: bool) -> String {
    let sep = if spaced { ", " } else { "," };
    if shape.len() == 1 {
        return format!("[{}]", nums.join(sep));
    }
    let inner: usize = shape[1..].iter().product();
    let parts: Vec<String> = nums
        .chunks(inner)
        .map(|c| nest(c, &shape[1..], spaced))
        .collect();
    format!("[{}]", parts.join(sep))
}

/// The fast float path (at most 19 digits, powers of ten up to 10^22) and numbers just past
/// it, against serde_json's correctly rounded parse, bit for bit.
#[test]
fn floats_parse_as_serde_parses_them_bit_for_bit() {
    let mut texts: Vec<String> = [
        "-0.0",
        "0.0",
        "-0.000",
        "0e5",
        "-0e-5",
        "1.0",
        "9007199254740992.0",
        "9007199254740993.0",
        "9007199254740993e-22",
        "1234567890123456789e-22",
        "12345678901234567890e-22",
        "0.1234567890123456789",
        "0.12345678901234567891",
        "1e22",
        "1e23",
        "1.5e-22",
        "1.5e-23",
        "4.9e-324",
        "2.4703282292062327e-324",
        "2.4703282292062328e-324",
        "2.2250738585072011e-308",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "123456789.12345678",
        "0.00000000000000000001",
        "1e-400",
        "0.1e0000000000000000000000000001",
        "1e-0000000000000000000000000001",
    ]
    .map(String::from)
    .to_vec();
    let mut r = Lcg(3);
    for _ in 0..20_000 {
        // Up to 21 digits, the point anywhere among them, sometimes an exponent.
        let n = 1 + r.below(21) as usize;
        let mut digits: String = (0..n)
            .map(|_| char::from(b'0' + r.below(10) as u8))
            .collect();
        if n > 1 && digits.starts_with('0') {
            digits.replace_range(0..1, "1");
        }
        let point = r.below(n as u64) as usize;
        let sign = ["", "-"][r.below(2) as usize];
        let mut t = match point {
            0 => format!("{sign}{digits}"),
            _ => format!("{sign}{}.{}", &digits[..point], &digits[point..]),
        };
        // Without a point, an exponent makes it a float.
        if point == 0 || r.below(2) == 0 {
            t += &format!("e{}", r.below(61) as i64 - 30);
        }
        texts.push(t);
    }
    // What Python writes for round(random.gauss(0, 1), 9), the common large request.
    for _ in 0..20_000 {
        let u = (r.next() as f64 + 1.0) / (1u64 << 53) as f64;
        let v = r.next() as f64 / (1u64 << 53) as f64;
        let g = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        texts.push(format!("{}", (g * 1e9).round() / 1e9));
    }
    for t in &texts {
        let want: f64 = serde_json::from_str(t).unwrap();
        let got = number(t.as_bytes(), 0);
        match got {
            Some((Num::Float(v), end)) if end == t.len() => {
                assert_eq!(v.to_bits(), want.to_bits(), "{t}");
            }
            // A float's text without a point or exponent is an integer here.
            Some((Num::Int(i), end)) if end == t.len() => assert_eq!(i as f64, want, "{t}"),
            _ => panic!("{t}: {}", got.is_some()),
        }
    }
    // Past f64's range serde_json refuses the number; so does the walk.
    for t in [
        "1.7976931348623159e308",
        "1e309",
        "-1e400",
        "123456789e999999999999",
    ] {
        assert!(serde_json::from_str::<f64>(t).is_err(), "{t}");
        assert!(number(t.as_bytes(), 0).is_none(), "{t}");
    }
}

#[test]
fn eight_digits_takes_eight_digits_only() {
    let odd = b"/:.,e-+ \x00\x7f\x80\xaf\xb0\xb9\xba\xff";
    let mut r = Lcg(5);
    for _ in 0..100_000 {
        let bytes: Vec<u8> = (0..8)
            .map(|_| match r.below(6) {
                0 => odd[r.below(odd.len() as u64) as usize],
                _ => b'0' + r.below(10) as u8,
            })
            .collect();
        let want = bytes
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(&bytes).unwrap().parse::<u64>().unwrap());
        assert_eq!(eight_digits(&bytes, 0), want, "{bytes:?}");
    }
    assert_eq!(eight_digits(b"99999999", 0), Some(99_999_999));
    assert_eq!(eight_digits(b"x1234567", 0), None);
    assert_eq!(eight_digits(b"1234567", 0), None);
    assert_eq!(eight_digits(b"123456789", 1), Some(23_456_789));
}

#[test]
fn commas_are_counted_across_the_lanes_and_steps() {
    let mut r = Lcg(9);
    for len in [
        0, 1, 15, 16, 17, 4079, 4080, 4081, 4096, 8160, 8161, 16_397, 100_003,
    ] {
        let text: Vec<u8> = (0..len).map(|_| b",1 ]"[r.below(4) as usize]).collect();
        let want = text.iter().filter(|&&c| c == b',').count();
        assert_eq!(commas(&text), want, "{len}");
    }
    // Every lane full at every step.
    assert_eq!(commas(&[b','; 9000]), 9000);
}

/// Arrays large enough to have their buffer sized first decode as serde decodes them
/// (integers only, or turning to floats partway), and commas alone are still refused.
#[test]
fn large_arrays_decode_as_serde_decodes_them() {
    let big = || Budget {
        elements: 1 << 20,
        rank: 4,
    };
    let mut r = Lcg(13);
    let nums: Vec<String> = (0..30_000).map(|_| number_text(&mut r)).collect();
    let flat = format!("[{}]", nums.join(", "));
    let ints = format!(
        "[{}]",
        (0..30_000)
            .map(|i| (i * 7).to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let nested = nest(&nums, &[100, 300], false);
    for body in [
        format!(r#"{{"input": {flat}, "target": {nested}}}"#),
        format!(r#"{{"input": {ints}, "reduction": "sum"}}"#),
        format!(r#"{{"input": {{"shape": [30000], "data": {flat}}}}}"#),
        // Commas where no number follows: refused by both.
        format!(r#"{{"input": [{}1]}}"#, ",".repeat(70_000)),
    ] {
        let (s, _) = big().run(|| serde_json::from_str::<Req>(&body).map_err(|e| e.to_string()));
        for parallel_from in [0, usize::MAX] {
            let (f, _) = big().run(|| {
                let p = prepare_with(body.as_bytes(), parallel_from)?;
                with_tensors(p.tensors, || serde_json::from_slice::<Req>(&p.body).ok())?
            });
            match (&s, &f) {
                (Ok(s), Some(f)) => {
                    assert_eq!(bits(&s.input), bits(&f.input));
                    assert_eq!(s.target.as_ref().map(bits), f.target.as_ref().map(bits));
                }
                (Err(_), Some(_)) => panic!("accepted what serde refuses"),
                (Ok(_), None) => panic!("the fast path should take it"),
                (Err(_), None) => {}
            }
        }
    }
}

/// The short float parse against [`number`] and serde_json: where it takes a number, the
/// same bits and the same end; and it takes every short decimal with a point.
#[cfg(target_arch = "x86_64")]
#[test]
fn short_floats_parse_as_number_parses_them() {
    if !short::supported() {
        return;
    }
    let mut taken: Vec<String> = [
        "-0.373170205",
        "0.044383233",
        "1.5",
        "-1.5",
        "0.0",
        "-0.0",
        "-0.000",
        "10.25",
        "999999999999999.9",
        "1.000000000000001",
        "-12345678901234.5",
        "0.1",
        "0.30000000000000004",
    ]
    .map(String::from)
    .to_vec();
    let left = [
        "1",
        "-1",
        "12",
        "123",
        "-0",
        "1.",
        "-1.",
        ".5",
        "-.5",
        "01.5",
        "-01.5",
        "00.5",
        "1.5e3",
        "1.5E-3",
        "1e5",
        "+1.5",
        "1..5",
        "1.5.5",
        "--1.5",
        "-1.5-",
        "1.5x",
        "x1.5",
        "1,5",
        "1.5\"",
        "\u{b9}1.5",
        "1.-5",
        "- 1.5",
        "9999999999999999.9",
        "-0.12345678901234567",
    ];
    let mut r = Lcg(17);
    for _ in 0..20_000 {
        // Up to 15 digits with the point among them, sometimes a sign.
        let n = 2 + r.below(14) as usize;
        let mut digits: String = (0..n)
            .map(|_| char::from(b'0' + r.below(10) as u8))
            .collect();
        let point = 1 + r.below(n as u64 - 1) as usize;
        if point > 1 && digits.starts_with('0') {
            digits.replace_range(0..1, "7");
        }
        let sign = ["", "-"][r.below(2) as usize];
        taken.push(format!("{sign}{}.{}", &digits[..point], &digits[point..]));
    }
    for _ in 0..5_000 {
        taken.push(format!(
            "{}",
            (r.next() as f64) / (1u64 << 53) as f64 * 8.0 - 4.0
        ));
    }
    let ends = [
        ",", " ", "]", "\n", "\r", "\t", "\0", "}", ":", "e", "5", ".", "\u{80}",
    ];
    for (t, short_form) in taken
        .iter()
        .map(|t| (t.as_str(), t.len() <= 16))
        .chain(left.iter().map(|&t| (t, false)))
    {
        for (i, end) in ends.iter().enumerate() {
            // After the number, more than 64 bytes (the map's reach).
            let body = format!("{t}{end}{:70}", "");
            let b = body.as_bytes();
            let got = unsafe { short::Tokens::new().float(b, 0) };
            let want = number(b, 0);
            match got {
                Some((v, q)) => {
                    assert!(
                        matches!(want, Some((Num::Float(w), e)) if e == q && w.to_bits() == v.to_bits()),
                        "{body:?}"
                    );
                    let serde: f64 = serde_json::from_str(&body[..q]).unwrap();
                    assert_eq!(v.to_bits(), serde.to_bits(), "{body:?}");
                }
                // A separator ends the number; anything else leaves it to the byte loop.
                None => assert!(!short_form || i >= 7, "{body:?} was not taken"),
            }
            // At the body's end (no 64 bytes to map) it is left to the byte loop.
            let tail = format!("{t}{end}");
            assert!(unsafe { short::Tokens::new().float(tail.as_bytes(), 0) }.is_none());
        }
    }
}

/// Numbers read one after another with one map, across the 64-byte blocks it covers.
#[cfg(target_arch = "x86_64")]
#[test]
fn short_floats_follow_one_another_across_blocks() {
    if !short::supported() {
        return;
    }
    let mut r = Lcg(19);
    // Numbers the walk takes (number_text writes some past f64's range).
    let nums: Vec<String> = (0..5_000)
        .map(|_| match r.below(4) {
            0 => number_text(&mut r),
            _ => format!("{:.9}", (r.next() as f64) / (1u64 << 53) as f64 * 8.0 - 4.0),
        })
        .filter(|n| number(n.as_bytes(), 0).is_some())
        .collect();
    let seps = [",", ", ", " ,", ",\n  ", "\t,\t"];
    let mut body = String::from("[");
    for (i, n) in nums.iter().enumerate() {
        if i > 0 {
            body += seps[r.below(seps.len() as u64) as usize];
        }
        body += n;
    }
    body += "]";
    let b = body.as_bytes();
    let mut tokens = short::Tokens::new();
    let (mut p, mut shorts) = (1, 0);
    for n in &nums {
        p = ws(b, p);
        let want = number(b, p).unwrap();
        let got = unsafe { tokens.float(b, p) };
        if let Some((v, q)) = got {
            assert!(
                matches!(want.0, Num::Float(w) if w.to_bits() == v.to_bits()),
                "{n}"
            );
            assert_eq!(q, want.1, "{n}");
            shorts += 1;
        }
        p = ws(b, want.1);
        assert!(matches!(at(b, p), b',' | b']'), "{n}");
        p += 1;
    }
    assert!(shorts > 3_000, "only {shorts} of {} taken", nums.len());
}

/// An array's end and commas found in one pass, as [`array_end`] and [`commas`] find them:
/// brackets anywhere in a 32-byte step, none for thousands of bytes, strings, and no end.
#[test]
fn spans_are_the_ends_and_commas_found_apart() {
    let mut r = Lcg(23);
    let mut texts = Vec::new();
    for case in 0..3_000 {
        let len = [5, 31, 33, 64, 200, 9_000, 40_000][case % 7];
        // Mostly numbers and commas; brackets and quotes now and then.
        let text: Vec<u8> = std::iter::once(b'[')
            .chain((0..len).map(|_| match r.below(400) {
                0..=3 => b'[',
                4..=8 => b']',
                9 if case % 3 == 0 => b'"',
                10..=99 => b',',
                100..=150 => b' ',
                _ => b"0123456789.-"[r.below(12) as usize],
            }))
            .collect();
        texts.push(text);
    }
    // Long runs with no bracket (more than 255 steps of byte lanes), then the end.
    for n in [8_000, 8_161, 100_000] {
        texts.push(format!("[{}1]  ", "1.5,".repeat(n)).into_bytes());
        texts.push(format!("[[{}1], [2]]", "1.5,".repeat(n)).into_bytes());
    }
    for text in &texts {
        let want = array_end(text, 0).map(|end| (end, commas(&text[..end])));
        assert_eq!(span(text, 0), want, "{}", String::from_utf8_lossy(text));
    }
    // Most of the random texts have an end, and the long ones all do.
    let ends = texts.iter().filter(|t| span(t, 0).is_some()).count();
    assert!(ends > texts.len() / 2, "{ends} of {}", texts.len());
}

/// A run of short floats stops where the walk must take over: at the room it was given, at a
/// number it does not take, after a number not followed by a comma.
#[cfg(target_arch = "x86_64")]
#[test]
fn short_float_runs_stop_where_the_walk_goes_on() {
    if !short::supported() {
        return;
    }
    let body = format!("[1.5, 2.25,\n 3.125 ,4.0, 7, 0.5]{:64}", "");
    let b = body.as_bytes();
    let run = |p: usize, capacity: usize, max: usize| {
        let mut out = Vec::with_capacity(capacity);
        let (n, q, at_number) = unsafe { short::Tokens::new().floats(b, p, &mut out, max) };
        assert_eq!(out.len(), n);
        (out, &body[q..q + 3], at_number)
    };
    let all = vec![1.5, 2.25, 3.125];
    assert_eq!(run(1, 10, 10), (all.clone(), " ,4", false));
    assert_eq!(run(1, 2, 10), (all[..2].to_vec(), "3.1", true));
    assert_eq!(run(1, 10, 1), (all[..1].to_vec(), "2.2", true));
    assert_eq!(run(1, 10, 0), (vec![], "1.5", true));
    let four = body.find("4.0").unwrap();
    assert_eq!(run(four, 10, 10), (vec![4.0], "7, ", true));
    assert_eq!(run(four + 5, 10, 10), (vec![], "7, ", true));
    let last = body.find("0.5").unwrap();
    assert_eq!(run(last, 10, 10), (vec![0.5], "]  ", false));
}

/// Long runs of short floats (the common large request: Python's `round(x, 9)` written
/// shortest, `", "` between) decode as serde decodes them, with a number the byte parse
/// takes now and then to break a run.
#[test]
fn long_runs_of_short_floats_decode_as_serde_decodes_them() {
    let big = || Budget {
        elements: 1 << 20,
        rank: 4,
    };
    let mut r = Lcg(29);
    let mut number = |i: usize| {
        let x = (r.next() as f64) / (1u64 << 53) as f64 * 8.0 - 4.0;
        match i % 1000 {
            999 => format!("{x:e}"),
            500 => "7".to_string(),
            _ => format!("{}", (x * 1e9).round() / 1e9),
        }
    };
    let input: Vec<String> = (0..20_000).map(&mut number).collect();
    let target: Vec<String> = (0..20_000).map(&mut number).collect();
    let body = format!(
        r#"{{"input": [{}], "target": [{}]}}"#,
        input.join(", "),
        target.join(",")
    );
    let (s, _) = big().run(|| serde_json::from_str::<Req>(&body).unwrap());
    for parallel_from in [0, usize::MAX] {
        let (f, _) = big().run(|| {
            let p = prepare_with(body.as_bytes(), parallel_from)?;
            with_tensors(p.tensors, || serde_json::from_slice::<Req>(&p.body).ok())?
        });
        let f = f.expect("the fast path should take it");
        assert_eq!(bits(&s.input), bits(&f.input));
        assert_eq!(s.target.as_ref().map(bits), f.target.as_ref().map(bits));
    }
}

/// Rows of short floats with every kind of separator after their commas, the body cut at
/// every length past the last row: each number decodes as serde decodes it, whether the
/// short parse took it from a map, after mapping the bytes from it, or left it to the byte
/// loop near the body's end.
#[test]
fn separators_after_commas_decode_as_serde_decodes_them() {
    let mut r = Lcg(31);
    let seps = [",", ", ", ",  ", ", \n", ",\t", " , ", ",\r\n ", ", \t "];
    for case in 0..200 {
        let rows = 1 + case % 7;
        let cols = 1 + r.below(12) as usize;
        let row = |r: &mut Lcg| {
            let nums: Vec<String> = (0..cols)
                .map(|_| format!("{:.6}", (r.next() as f64) / (1u64 << 53) as f64 * 8.0 - 4.0))
                .collect();
            let mut text = String::from("[");
            for (i, n) in nums.iter().enumerate() {
                if i > 0 {
                    text += seps[r.below(seps.len() as u64) as usize];
                }
                text += n;
            }
            text + "]"
        };
        let body: Vec<String> = (0..rows).map(|_| row(&mut r)).collect();
        let pad = " ".repeat(case % 70);
        let body = format!(r#"{{"input": [{}]{pad}}}"#, body.join(", "));
        assert!(agree(&body), "{body}");
    }
}

/// A buffer the caller did not size is sized by its first row: a body of many rows decodes
/// into one buffer not much larger than its numbers, and a small tensor before a large one
/// does not keep the room the rest of the body suggested.
#[test]
fn unsized_buffers_are_sized_by_their_first_row() {
    let capacity = |t: &Tensor| match &t.data {
        Data::F64(v) => (v.len(), v.capacity()),
        Data::I64(v) => (v.len(), v.capacity()),
        Data::F32(v) => (v.len(), v.capacity()),
    };
    let row = "[-0.620333, -0.739516, -0.344047, 0.106421, 0.632079]";
    let rows = vec![row; 64].join(", ");
    let body = format!(r#"{{"input": [{rows}], "target": [[1.5, 2], [3, 4.25]]}}"#);
    let (f, _) = fast(&body);
    let f = f.expect("the fast path should take it");
    let (len, cap) = capacity(&f.input);
    assert_eq!(len, 320);
    assert!(cap < len + len / 4, "{cap} for {len}");
    let (len, cap) = capacity(f.target.as_ref().unwrap());
    assert!(len == 4 && cap <= FIRST_ROOM, "{cap} for {len}");
    let body = format!(r#"{{"input": [[1.5, 2.5]], "target": [{rows}]}}"#);
    let (f, _) = fast(&body);
    let f = f.expect("the fast path should take it");
    let (len, cap) = capacity(&f.input);
    assert!(len == 2 && cap <= FIRST_ROOM, "{cap} for {len}");
    assert!(agree(&body));
}

/// A row of integers that turns to floats keeps its buffer's room, and its integers' values.
#[test]
fn promoted_buffers_keep_their_room_and_values() {
    let mut buf = Buf::with_capacity(8);
    for i in [1, -2, 3] {
        buf.push_i64(i);
    }
    buf.push_f64(0.5);
    let Data::F64(v) = buf.into_data() else {
        panic!("not promoted");
    };
    assert_eq!(v, [1.0, -2.0, 3.0, 0.5]);
    assert!(v.capacity() >= 8);
}

/// Placeholders are written as `format!` wrote them, for every slot.
#[test]
fn placeholders_are_written_as_format_writes_them() {
    for slot in [0, 1, 9, 10, 15, 99, 100, 12345, usize::MAX] {
        let mut out = b"x".to_vec();
        placeholder(&mut out, slot);
        assert_eq!(out, format!("x\"\\u0000lossd:{slot}\"").into_bytes());
    }
}
