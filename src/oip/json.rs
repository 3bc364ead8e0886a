//! The JSON of the protocol's HTTP requests, which is not quite JSON: tritonclient writes
//! non-finite floats as the bare tokens `NaN`, `Infinity` and `-Infinity` (as Python's and
//! RapidJSON's writers do, and as Triton reads them). serde_json refuses those, so the
//! inference header is read by this small parser: objects, arrays, strings, numbers (floats
//! correctly rounded, as serde_json's `float_roundtrip` reads them), `true`, `false`, `null`
//! and the three tokens. Arrays of numbers are kept as flat lists of numbers, so a large
//! `data` costs 16 bytes an element and no tree. Nesting deeper than [`MAX_DEPTH`] and more
//! numbers than the caller allows are refused.

/// The deepest nesting of arrays and objects.
pub const MAX_DEPTH: usize = 64;

/// A JSON number as read: an integer when it is one that fits, else a float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// An integer in the `i64` range (`-0` is the float -0.0).
    Int(i64),
    /// Anything else, including integers past `i64` and the non-finite tokens.
    Float(f64),
}

impl Num {
    /// The value as a float (what the JSON route makes of it).
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string.
    Str(String),
    /// An array holding only numbers (possibly empty).
    Nums(Vec<Num>),
    /// Any other array.
    Arr(Vec<Value>),
    /// An object, members in order.
    Obj(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a bool",
            Value::Num(_) => "a number",
            Value::Str(_) => "a string",
            Value::Nums(_) | Value::Arr(_) => "an array",
            Value::Obj(_) => "an object",
        }
    }
}

/// Why a text is not a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not JSON (with the byte offset).
    Syntax(String, usize),
    /// More numbers than allowed.
    TooMany,
}

/// Parses `text` as one value, holding at most `max_numbers` numbers in arrays.
pub fn parse(text: &[u8], max_numbers: usize) -> Result<Value, Error> {
    let mut p = Parser {
        b: text,
        pos: 0,
        left: max_numbers,
    };
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    left: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::Syntax(what.to_string(), self.pos)
    }

    fn peek(&self) -> u8 {
        self.b.get(self.pos).copied().unwrap_or(0)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        self.ws();
        match self.peek() {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => Ok(Value::Str(self.string()?)),
            b't' if self.literal(b"true") => Ok(Value::Bool(true)),
            b'f' if self.literal(b"false") => Ok(Value::Bool(false)),
            b'n' if self.literal(b"null") => Ok(Value::Null),
            _ => Ok(Value::Num(self.number()?)),
        }
    }

    fn nest(&self, depth: usize) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            Err(self.err("nested more than 64 levels deep"))
        } else {
            Ok(())
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Error> {
        self.nest(depth)?;
        self.pos += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == b'}' {
            self.pos += 1;
            return Ok(Value::Obj(members));
        }
        loop {
            self.ws();
            if self.peek() != b'"' {
                return Err(self.err("expected a string key"));
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != b':' {
                return Err(self.err("expected `:`"));
            }
            self.pos += 1;
            let v = self.value(depth)?;
            members.push((k, v));
            self.ws();
            match self.peek() {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Ok(Value::Obj(members));
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        self.nest(depth)?;
        self.pos += 1;
        self.ws();
        if self.peek() == b']' {
            self.pos += 1;
            return Ok(Value::Nums(Vec::new()));
        }
        let first = self.value(depth)?;
        let Value::Num(n) = first else {
            return self.values(first, depth);
        };
        // An array of numbers: read them into one flat list.
        let mut nums = vec![n];
        self.spend()?;
        while self.another()? {
            self.ws();
            nums.push(self.number()?);
            self.spend()?;
        }
        Ok(Value::Nums(nums))
    }

    /// The rest of an array whose first element is not a number.
    fn values(&mut self, first: Value, depth: usize) -> Result<Value, Error> {
        let mut items = vec![first];
        while self.another()? {
            items.push(self.value(depth)?);
        }
        Ok(Value::Arr(items))
    }

    /// After an array's element: true past a `,` (another element follows), false past the
    /// closing `]`.
    fn another(&mut self) -> Result<bool, Error> {
        self.ws();
        match self.peek() {
            b',' => {
                self.pos += 1;
                Ok(true)
            }
            b']' => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.err("expected `,` or `]`")),
        }
    }

    fn spend(&mut self) -> Result<(), Error> {
        if self.left == 0 {
            return Err(Error::TooMany);
        }
        self.left -= 1;
        Ok(())
    }

    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let mut p = start + 1;
        let mut escaped = false;
        loop {
            let Some(q) = memchr::memchr2(b'"', b'\\', &self.b[p.min(self.b.len())..]) else {
                self.pos = self.b.len();
                return Err(self.err("unterminated string"));
            };
            p += q;
            if self.b[p] == b'"' {
                break;
            }
            escaped = true;
            p += 2;
        }
        let end = p + 1;
        self.pos = end;
        let raw = &self.b[start..end];
        if escaped {
            serde_json::from_slice::<String>(raw).map_err(|e| Error::Syntax(e.to_string(), start))
        } else {
            std::str::from_utf8(&raw[1..raw.len() - 1])
                .map(str::to_owned)
                .map_err(|_| Error::Syntax("a string is not UTF-8".into(), start))
        }
    }

    fn number(&mut self) -> Result<Num, Error> {
        let b = self.b;
        let start = self.pos;
        if self.literal(b"NaN") {
            return Ok(Num::Float(f64::NAN));
        }
        if self.literal(b"Infinity") {
            return Ok(Num::Float(f64::INFINITY));
        }
        if self.literal(b"-Infinity") {
            return Ok(Num::Float(f64::NEG_INFINITY));
        }
        let mut p = start;
        let neg = b.get(p) == Some(&b'-');
        p += usize::from(neg);
        let digits = p;
        match b.get(p) {
            Some(b'0') => p += 1,
            Some(b'1'..=b'9') => {
                while b.get(p).is_some_and(u8::is_ascii_digit) {
                    p += 1;
                }
            }
            _ => return Err(self.err("expected a value")),
        }
        let int_end = p;
        if b.get(p) == Some(&b'.') {
            p += 1;
            if !b.get(p).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("expected a digit after the point"));
            }
            while b.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            p += 1;
            if matches!(b.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            if !b.get(p).is_some_and(u8::is_ascii_digit) {
                return Err(self.err("expected a digit in the exponent"));
            }
            while b.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
        }
        self.pos = p;
        let text = &b[start..p];
        if p == int_end {
            // An integer: i64 when it fits and is not -0, as serde_json reads it.
            let s = std::str::from_utf8(text).unwrap_or("");
            if let Ok(i) = s.parse::<i64>()
                && !(neg && i == 0)
            {
                return Ok(Num::Int(i));
            }
            if int_end - digits > 400 {
                return Err(Error::Syntax("number out of range".into(), start));
            }
        }
        let v: f64 =
            lexical_core::parse(text).map_err(|_| Error::Syntax("not a number".into(), start))?;
        if v.is_finite() {
            Ok(Num::Float(v))
        } else {
            Err(Error::Syntax("number out of range".into(), start))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_tritonclient_writes() {
        let v = parse(
            br#"{"inputs": [{"name": "input", "data": [1, 2.5, NaN, -Infinity, Infinity, -0, 1e400]}]}"#,
            100,
        );
        assert!(matches!(v, Err(Error::Syntax(..))), "1e400 is out of range");
        let v = parse(
            br#"{"id": "a\"b", "inputs": [{"name": "input", "data": [[1, 2.5], [NaN, -Infinity]], "x": null}], "p": {"b": true}}"#,
            100,
        )
        .unwrap();
        assert_eq!(v.get("id"), Some(&Value::Str("a\"b".into())));
        let inputs = match v.get("inputs") {
            Some(Value::Arr(a)) => a,
            other => panic!("{other:?}"),
        };
        let Some(Value::Arr(rows)) = inputs[0].get("data") else {
            panic!()
        };
        let Value::Nums(row) = &rows[1] else { panic!() };
        assert!(matches!(row[0], Num::Float(f) if f.is_nan()));
        assert_eq!(row[1], Num::Float(f64::NEG_INFINITY));
        assert_eq!(
            parse(b"[-0, 0.1, 18446744073709551616]", 10).unwrap(),
            Value::Nums(vec![
                Num::Float(-0.0),
                Num::Float(0.1),
                Num::Float(18446744073709551616.0)
            ])
        );
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"[1 2]",
            b"{\"a\" 1}",
            b"\"abc",
            b"01",
            b"1.",
            b"nan",
            b"[1] x",
            b"{\"a\":}",
        ] {
            assert!(
                matches!(parse(bad, 10), Err(Error::Syntax(..))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(deep.as_bytes(), 10).is_err());
        assert_eq!(parse(b"[1, 2, 3]", 2), Err(Error::TooMany));
    }
}
