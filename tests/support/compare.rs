//! Comparing a response's numbers with PyTorch's, as docs/api.md defines a passing case:
//! `|got - want| <= atol + rtol * |want|`, non-finite values exactly. Shared by the
//! conformance tests and the soak example.

use serde_json::Value;

/// A JSON number, or one of the strings for non-finite values.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Compares nested numbers; returns the first difference.
pub fn compare(what: &str, got: &Value, want: &Value, rtol: f64, atol: f64) -> Result<(), String> {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) => {
            if g.len() != w.len() {
                return Err(format!("{what}: length {} but want {}", g.len(), w.len()));
            }
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                compare(&format!("{what}[{i}]"), g, w, rtol, atol)?;
            }
            Ok(())
        }
        _ => {
            let (Some(g), Some(w)) = (number(got), number(want)) else {
                return Err(format!("{what}: got {got} but want {want}"));
            };
            let ok = if w.is_finite() {
                (g - w).abs() <= atol + rtol * w.abs()
            } else {
                g == w || (g.is_nan() && w.is_nan())
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{what}: got {g:e} but want {w:e}"))
            }
        }
    }
}
