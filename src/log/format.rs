//! The log line formatter: the lines `tracing_subscriber`'s default text and JSON formats
//! write, byte for byte, written without `core::fmt` machinery for the parts every line has
//! (timestamp, level, target, numbers and plain strings).
//!
//! The access log formats one line per request; through the default formatters that line cost
//! ~11,000 instructions (`callgrind`, `mse_loss` 3×5 under load), as much as decoding and
//! computing the request. This formatter writes the same line in a fraction of that. Whatever
//! it does not handle itself it hands, whole, to the default formatter it wraps, so the output
//! never differs: events inside spans, events bridged from the `log` crate, `r#` field names,
//! error values (the text format lists their sources), messages with characters the default
//! formatter sanitises, clocks before 1970 or past 9999, and terminals (colours).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Which of `tracing_subscriber`'s formats the lines follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `Format<Full>`: `2026-12-04T14:01:08.641071Z  INFO lossd: answered method=POST ...`.
    Text,
    /// `Format<Json>`: `{"timestamp":"...","level":"INFO","fields":{...},"target":"lossd"}`.
    Json,
}

/// A [`FormatEvent`] writing `inner`'s lines (`inner` is the default formatter of `style`,
/// used for whatever this one does not write itself).
pub struct Fast<F> {
    inner: F,
    style: Style,
}

impl<F> Fast<F> {
    /// Wraps `inner`, the default formatter of `style` (`Format::default()` or
    /// `Format::default().json()`, as the subscriber builder makes them).
    pub fn new(style: Style, inner: F) -> Self {
        Self { inner, style }
    }
}

thread_local! {
    /// The line being written, and the second (and its text) of the last timestamp.
    static SCRATCH: RefCell<(Vec<u8>, Clock)> = RefCell::new((Vec::with_capacity(256), Clock::default()));
}

impl<S, N, F> FormatEvent<S, N> for Fast<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if !writer.has_ansi_escapes() && ctx.event_scope().is_none() {
            // A field's Debug implementation that logs comes back here with the scratch
            // buffer borrowed: the default formatter writes that line.
            let done = SCRATCH.with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                let (line, clock) = &mut *s;
                line.clear();
                write_line(line, clock, self.style, event)?;
                let text = std::str::from_utf8(line).ok()?;
                Some(writer.write_str(text))
            });
            if let Some(result) = done {
                return result;
            }
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Writes `event`'s line into `out`; `None` when the default formatter must write it.
fn write_line(out: &mut Vec<u8>, clock: &mut Clock, style: Style, event: &Event<'_>) -> Option<()> {
    let meta = event.metadata();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    match style {
        Style::Text => {
            clock.write(out, now.as_secs(), now.subsec_micros())?;
            out.extend_from_slice(match *meta.level() {
                Level::TRACE => b" TRACE ",
                Level::DEBUG => b" DEBUG ",
                Level::INFO => b"  INFO ",
                Level::WARN => b"  WARN ",
                Level::ERROR => b" ERROR ",
            });
            out.extend_from_slice(meta.target().as_bytes());
            out.extend_from_slice(b": ");
            let mut v = Fields::new(out, style);
            event.record(&mut v);
            v.done()?;
        }
        Style::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            clock.write(out, now.as_secs(), now.subsec_micros())?;
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(meta.level().as_str().as_bytes());
            out.extend_from_slice(b"\",\"fields\":{");
            let mut v = Fields::new(out, style);
            event.record(&mut v);
            v.done()?;
            out.extend_from_slice(b"},\"target\":");
            json_str(out, meta.target());
            out.push(b'}');
        }
    }
    out.push(b'\n');
    Some(())
}

/// The visitor writing an event's fields as the default formatter of its style does.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    style: Style,
    first: bool,
    /// Set when a field needs the default formatter (then nothing of this line is used).
    fallback: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut Vec<u8>, style: Style) -> Self {
        Self {
            out,
            style,
            first: true,
            fallback: false,
        }
    }

    fn done(self) -> Option<()> {
        (!self.fallback).then_some(())
    }

    /// The separator and the field's name; `false` when the default formatter must write
    /// the line (names it treats specially).
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.fallback || name.starts_with("r#") || name.starts_with("log.") {
            self.fallback = true;
            return false;
        }
        match self.style {
            Style::Text => {
                if !self.first {
                    self.out.push(b' ');
                }
                if name != "message" {
                    self.out.extend_from_slice(name.as_bytes());
                    self.out.push(b'=');
                }
            }
            Style::Json => {
                if !self.first {
                    self.out.push(b',');
                }
                json_str(self.out, name);
                self.out.push(b':');
            }
        }
        self.first = false;
        true
    }

    /// A message's text, as the text format writes it: as is, unless it holds a character
    /// the default formatter would escape (terminal control sequences).
    fn message(&mut self, start: usize) {
        let written = &self.out[start..];
        let control = |c: &u8| matches!(c, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f);
        // C1 controls (U+0080 to U+009F) are 0xC2 0x80..=0x9F in UTF-8.
        let c1 = written
            .windows(2)
            .any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]));
        if written.iter().any(control) || c1 {
            self.fallback = true;
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.name(field) {
            return;
        }
        let start = self.out.len();
        match self.style {
            Style::Text => {
                let _ = write!(Bytes(self.out), "{value:?}");
                if field.name() == "message" {
                    self.message(start);
                }
            }
            Style::Json => {
                // Written in place, then quoted; re-escaped only when it needs escaping.
                self.out.push(b'"');
                let _ = write!(Bytes(self.out), "{value:?}");
                if self.out[start + 1..]
                    .iter()
                    .any(|&c| c == b'"' || c == b'\\' || c < 0x20)
                {
                    let text = self.out.split_off(start + 1);
                    self.out.truncate(start);
                    // Written from `&str` pieces only: valid UTF-8.
                    json_str(self.out, std::str::from_utf8(&text).unwrap_or_default());
                } else {
                    self.out.push(b'"');
                }
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.name(field) {
            return;
        }
        match self.style {
            Style::Text if field.name() == "message" => {
                let start = self.out.len();
                self.out.extend_from_slice(value.as_bytes());
                self.message(start);
            }
            Style::Text => debug_str(self.out, value),
            Style::Json => json_str(self.out, value),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.name(field) {
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.name(field) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.name(field) {
            return;
        }
        match self.style {
            // Debug formatting, as the text format's fields are written.
            Style::Text => {
                let _ = write!(Bytes(self.out), "{value:?}");
            }
            // As serde_json writes it (`null` when not finite).
            Style::Json => {
                let _ = serde_json::to_writer(&mut *self.out, &value);
            }
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match self.style {
            // The text format writes the error's sources as well: its own formatter does it.
            Style::Text => self.fallback = true,
            Style::Json => self.record_debug(field, &format_args!("{value}")),
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `s` as `{:?}` writes it: in quotes, `"` and `\` escaped; printable ASCII is copied,
/// anything else goes through `core::fmt`.
fn debug_str(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        let _ = write!(Bytes(out), "{s:?}");
        return;
    }
    out.push(b'"');
    for &c in s.as_bytes() {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The timestamp of the lines: `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, the text of the last
/// second kept so that most lines only write their microseconds.
#[derive(Default)]
struct Clock {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS.` of `second`.
    prefix: [u8; 20],
}

impl Clock {
    /// Writes the timestamp of `secs` seconds and `micros` microseconds after the epoch;
    /// `None` past the year 9999 (the default formatter writes those).
    fn write(&mut self, out: &mut Vec<u8>, secs: u64, micros: u32) -> Option<()> {
        if self.second != Some(secs) {
            self.prefix = civil(secs)?;
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        let mut digits = [b'0'; 6];
        let mut m = micros;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (m % 10) as u8;
            m /= 10;
        }
        out.extend_from_slice(&digits);
        out.push(b'Z');
        Some(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of `secs` seconds after the epoch (UTC, proleptic Gregorian),
/// `None` after 9999-12-31T23:59:59.
fn civil(secs: u64) -> Option<[u8; 20]> {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (era from 0000-03-01).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    let mut p = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            p[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3_600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Failure(Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(if self.0.is_some() { "outer" } else { "inner" })
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_deref().map(|e| e as _)
        }
    }

    /// Logs a variety of events: plain ones this formatter writes, and every kind it hands
    /// to the default formatter.
    fn events() {
        let strange = "quote \" backslash \\ newline \n tab \t nul \0 bell \x07 esc \x1b é ü 😀 \u{85} \u{301}";
        tracing::info!(
            method = %http::Method::POST,
            route = "/v1/losses/{name}",
            request_id = "6728c7cf-f228-4580-a728-759582491a01",
            status = 200u16,
            latency_ms = 0.402768,
            "answered"
        );
        tracing::info!(route = strange, request_id = "a\"b\\c", "answered");
        tracing::warn!(
            count = -3i64,
            ok = true,
            big = u64::MAX,
            "shed {} requests",
            7
        );
        tracing::error!(
            x = f64::NAN,
            y = f64::INFINITY,
            z = -f64::INFINITY,
            w = 1e-7
        );
        tracing::info!(
            a = 1e300,
            b = 0.1 + 0.2,
            c = -0.0,
            d = 100000000000000000000.0
        );
        tracing::info!(target: "elsewhere", "no fields but the message");
        tracing::info!(only = 1);
        tracing::info!("");
        tracing::info!(message = strange);
        tracing::info!("a message with an escape \x1b[31m");
        tracing::info!("a message with a C1 control \u{9b}");
        tracing::info!(r#type = "raw name");
        tracing::info!(bytes = ?b"\x00\xff".as_slice(), tuple = ?(1, "two"), text = %"dis\"play");
        tracing::debug!(n = 5, "below the filter's level: not written by either");
        let err = Failure(Some(Box::new(Failure(None))));
        tracing::error!(error = &err as &(dyn std::error::Error + 'static), "failed");
        let span = tracing::info_span!("request", id = 7);
        span.in_scope(|| tracing::info!(inside = true, "in a span"));
        tracing::info!(parent: &span, "with an explicit parent");
        tracing::info!(n = 1, n2 = 2, "after the span");
    }

    fn run(style: Style, fast: bool) -> String {
        let sink = Sink::default();
        let builder = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(sink.clone());
        let dispatch = match (style, fast) {
            (Style::Text, false) => tracing::Dispatch::new(builder.finish()),
            (Style::Text, true) => tracing::Dispatch::new(
                builder
                    .event_format(Fast::new(style, tracing_subscriber::fmt::format()))
                    .finish(),
            ),
            (Style::Json, false) => tracing::Dispatch::new(builder.json().finish()),
            (Style::Json, true) => tracing::Dispatch::new(
                builder
                    .json()
                    .event_format(Fast::new(style, tracing_subscriber::fmt::format().json()))
                    .finish(),
            ),
        };
        tracing::dispatcher::with_default(&dispatch, events);
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    /// `out` with every timestamp replaced by `TS`, and the number replaced (the two runs
    /// happen at different times).
    fn untimed(out: &str) -> (String, usize) {
        let form = |w: &[u8]| {
            w.iter()
                .zip(b"0000-00-00T00:00:00.000000Z")
                .all(|(&c, &f)| {
                    if f == b'0' {
                        c.is_ascii_digit()
                    } else {
                        c == f
                    }
                })
        };
        let b = out.as_bytes();
        let (mut masked, mut n, mut i) = (String::new(), 0, 0);
        while i < b.len() {
            if b.len() - i >= 27 && form(&b[i..i + 27]) {
                masked.push_str("TS");
                n += 1;
                i += 27;
            } else {
                let c = out[i..].chars().next().unwrap();
                masked.push(c);
                i += c.len_utf8();
            }
        }
        (masked, n)
    }

    #[test]
    fn lines_are_those_of_the_default_formatters() {
        for style in [Style::Text, Style::Json] {
            let (default, fast) = (run(style, false), run(style, true));
            let (d, dn) = untimed(&default);
            let (f, fn_) = untimed(&fast);
            assert_eq!(dn, 17, "{style:?}: {default}");
            assert_eq!(fn_, 17, "{style:?}: {fast}");
            for (d, f) in d.lines().zip(f.lines()) {
                assert_eq!(d, f, "{style:?}");
            }
            assert_eq!(d, f, "{style:?}");
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let mut clock = Clock::default();
        let at = |clock: &mut Clock, s: u64, us: u32| {
            let mut out = Vec::new();
            clock
                .write(&mut out, s, us)
                .map(|()| String::from_utf8(out).unwrap())
        };
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
            (951_868_799, 999_999, "2000-02-29T23:59:59.999999Z"),
            (1_780_000_000, 123_456, "2026-05-28T20:26:40.123456Z"),
            (1_796_392_868, 641_071, "2026-12-04T14:01:08.641071Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
            (253_402_300_799, 1, "9999-12-31T23:59:59.000001Z"),
        ];
        for (s, us, want) in cases {
            assert_eq!(at(&mut clock, s, us).as_deref(), Some(want), "{s}");
            // Again from the cached second.
            assert_eq!(at(&mut clock, s, us).as_deref(), Some(want), "{s}");
        }
        assert_eq!(at(&mut clock, 253_402_300_800, 0), None);
        // Every day boundary of four centuries agrees with a day-by-day count.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for day in 0..146_097u64 {
            let p = civil(day * 86_400).unwrap();
            assert_eq!(
                std::str::from_utf8(&p).unwrap(),
                format!("{y:04}-{m:02}-{d:02}T00:00:00."),
            );
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[m as usize - 1] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
