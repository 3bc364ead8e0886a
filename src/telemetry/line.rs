//! The text log line, written directly.
//!
//! [`PlainText`] writes the very bytes of tracing-subscriber's default text format (`Full`,
//! colours off) for an event outside any span, which is every line lossd writes when its
//! output is not a terminal; with colours or inside a span it hands the event to the stock
//! formatter. Why: the stock formatter builds each line through `core::fmt` with a styling
//! object around every field name, and formats the date and time from scratch each time:
//! about 11,000 instructions per access-log line, more than a tiny loss request's own
//! decoding (callgrind; BENCHMARKS.md). This one writes the fields straight into the line and
//! keeps the date and time to the second from one line to the next.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime as StockTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's text format, written directly when it can be (see the module).
#[derive(Default)]
pub struct PlainText {
    stock: Format<Full, StockTime>,
}

impl<S, N> FormatEvent<S, N> for PlainText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || ctx.event_scope().is_some() {
            return self.stock.format_event(ctx, writer, event);
        }
        timestamp(&mut writer)?;
        let meta = event.metadata();
        writer.write_str(level(*meta.level()))?;
        writer.write_char(' ')?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The level as the stock formatter pads it (to five characters, on the left).
fn level(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

thread_local! {
    /// The second last written on this thread, and its `YYYY-MM-DDTHH:MM:SS.` text.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// `2026-12-07T04:58:25.844933Z ` (UTC, microseconds), as the stock `SystemTime` writes it.
fn timestamp(w: &mut Writer<'_>) -> fmt::Result {
    let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        // Before 1970: the stock timer knows what to write.
        StockTime.format_time(w)?;
        return w.write_char(' ');
    };
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = second_text(secs);
        SECOND.set((secs, text));
    }
    // The 20 bytes are ASCII digits and separators.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    let mut micros = [b'0'; 6];
    let mut n = since.subsec_micros();
    for d in micros.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)?;
    w.write_str("Z ")
}

/// `YYYY-MM-DDTHH:MM:SS.` of `secs` seconds after 1970-01-01T00:00:00 UTC (years up to 9999).
fn second_text(secs: u64) -> [u8; 20] {
    let (y, m, d) = civil_date(secs / 86_400);
    let t = secs % 86_400;
    let mut s = String::with_capacity(20);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    let mut out = [b'0'; 20];
    let n = s.len().min(20);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// The proleptic Gregorian date `days` days after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, on unsigned numbers since the day is never before 1970).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The event's fields as the stock `DefaultFields` writes them: the message first as it is
/// (control characters a terminal would act on escaped), then ` name=value` with the value's
/// `Debug` text (a string quoted and escaped).
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            self.out.write_str(sep)
        } else {
            self.out
                .write_str(sep)
                .and_then(|()| self.out.write_str(name))
                .and_then(|()| self.out.write_char('='))
        };
        self.result.is_ok()
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        if !self.start(field) {
            return;
        }
        // `Debug` of a str: quoted, with `"`, `\` and anything not printable ASCII escaped.
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.result = if plain {
            self.out
                .write_char('"')
                .and_then(|()| self.out.write_str(value))
                .and_then(|()| self.out.write_char('"'))
        } else {
            write!(self.out, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !self.start(field) {
            return;
        }
        self.result = write_f64(self.out, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        // As the stock formatter: the error, then its chain of sources as a list.
        let mut r = write!(Escaping(self.out), "{value}");
        if let Some(source) = value.source() {
            let name = field.name();
            r = r.and_then(|()| write!(self.out, " {name}.sources=["));
            let mut next = Some(source);
            let mut first = true;
            while let Some(e) = next {
                if !first {
                    r = r.and_then(|()| self.out.write_str(", "));
                }
                first = false;
                r = r.and_then(|()| write!(Escaping(self.out), "{e}"));
                next = e.source();
            }
            r = r.and_then(|()| self.out.write_char(']'));
        }
        self.result = r;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write!(Escaping(self.out), "{value:?}")
        } else {
            write!(self.out, "{value:?}")
        };
    }
}

/// `value` as `Debug` writes it.
fn write_f64(out: &mut impl Write, value: f64) -> fmt::Result {
    // `Debug` of an f64 is the shortest decimal that reads back to it, as zmij's is,
    // written without an exponent in this range. With at most 15 significant digits
    // that decimal is the only one of its length (a double's neighbours are closer than
    // 15-digit decimals are to each other), so the two agree; with 16 or 17 there can be
    // two, and they may pick differently (tested).
    if (1e-4..1e15).contains(&value.abs()) {
        let mut buf = lossd_zmij::Buffer::new();
        let text = buf.format_finite(value);
        let digits = text
            .bytes()
            .filter(u8::is_ascii_digit)
            .skip_while(|&b| b == b'0')
            .count();
        if digits <= 15 {
            return out.write_str(text);
        }
    }
    write!(out, "{value:?}")
}

/// Writes through, escaping the control characters a terminal acts on (ESC, BEL, BS, FF,
/// DEL and the C1 range), as the stock formatter does for messages and errors.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let risky = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if !s.chars().any(risky) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \x1b[31m failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner \u{85} cause")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    /// Every kind of field, at every level.
    fn events() {
        let path = "/v1/losses/{name}";
        tracing::info!(
            method = %"POST",
            route = path,
            request_id = "fbfd8467-4d4c-4448-a9ef-727e824a26c2",
            status = 200u16,
            latency_ms = 0.425631,
            "answered"
        );
        tracing::warn!(
            status = -14i32,
            rejected = true,
            ok = false,
            "a\x1bb \u{90} c"
        );
        tracing::error!(error = %"bad \"thing\"\t", detail = ?vec![1, 2], "internal error");
        let e = Outer(Inner);
        tracing::error!(
            error = &e as &(dyn std::error::Error + 'static),
            "with sources"
        );
        tracing::info!(
            r#type = "x\\y",
            quote = "say \"hi\"",
            uni = "café ☃",
            "raw names"
        );
        for v in [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e-4,
            9.999e-5,
            1e-7,
            123456.789,
            1e15,
            9.99e14,
            1e16,
            1e300,
            -2.5,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.425631,
            3.0e-3,
            12.0,
            1234567890123.5,
        ] {
            tracing::info!(latency_ms = v, "float");
        }
        tracing::info!(n = u64::MAX, m = i64::MIN, "integers");
        tracing::info!("no fields");
        tracing::debug!(x = 1, "debug");
        tracing::trace!(x = 2, "trace");
    }

    fn lines(plain: bool) -> Vec<String> {
        let out = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE);
        if plain {
            tracing::subscriber::with_default(
                builder.event_format(PlainText::default()).finish(),
                events,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn lines_are_the_stock_formatters_bytes() {
        let (ours, stock) = (lines(true), lines(false));
        assert_eq!(ours.len(), stock.len());
        assert!(ours.len() > 25);
        for (a, b) in ours.iter().zip(&stock) {
            // The timestamps differ by the time between the runs; the rest is identical.
            let (ta, ra) = a.split_at(28);
            let (tb, rb) = b.split_at(28);
            assert_eq!(ra, rb);
            assert_eq!(ta.len(), tb.len());
            let shape = |t: &str| {
                t.bytes()
                    .map(|c| if c.is_ascii_digit() { b'0' } else { c })
                    .collect::<Vec<_>>()
            };
            assert_eq!(shape(ta), shape(tb), "{ta} against {tb}");
        }
    }

    #[test]
    fn the_timestamp_is_the_stock_timers() {
        // Compared within one second (tried again when a second boundary falls between).
        for _ in 0..100 {
            let mut ours = String::new();
            let mut stock = String::new();
            let before = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            timestamp(&mut Writer::new(&mut ours)).unwrap();
            StockTime.format_time(&mut Writer::new(&mut stock)).unwrap();
            let after = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            if before == after {
                assert_eq!(ours[..20], stock[..20]);
                assert_eq!(ours.len(), stock.len() + 1);
                assert!(ours.ends_with("Z "));
                return;
            }
        }
        panic!("no whole second in 100 tries");
    }

    fn float_text(v: f64) -> String {
        let mut out = String::new();
        write_f64(&mut out, v).unwrap();
        out
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        // Random bit patterns whose magnitude is in the range, and round decimal values.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut tried = 0;
        while tried < 200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f64::from_bits(state);
            if !(1e-4..1e15).contains(&v.abs()) {
                continue;
            }
            tried += 1;
            assert_eq!(float_text(v), format!("{v:?}"));
        }
        for k in 1..100_000u32 {
            for v in [
                f64::from(k) / 1e3,
                f64::from(k),
                f64::from(k) * 1e9,
                f64::from(k) / 1e4,
            ] {
                assert_eq!(float_text(v), format!("{v:?}"));
            }
        }
    }

    #[test]
    fn dates_are_the_gregorian_calendars() {
        let text = |s: u64| String::from_utf8(second_text(s).to_vec()).unwrap();
        assert_eq!(text(0), "1970-01-01T00:00:00.");
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00.");
        assert_eq!(text(951_868_799), "2000-02-29T23:59:59.");
        assert_eq!(text(951_868_800), "2000-03-01T00:00:00.");
        assert_eq!(text(1_796_619_505), "2026-12-07T04:58:25.");
        assert_eq!(text(4_107_542_399), "2100-02-28T23:59:59.");
        assert_eq!(text(4_107_542_400), "2100-03-01T00:00:00.");
        assert_eq!(text(253_402_300_799), "9999-12-31T23:59:59.");
        // Day by day over four centuries: each date follows the one before.
        let mut prev = civil_date(0);
        for day in 1..146_097 * 2 {
            let (y, m, d) = civil_date(day);
            let (py, pm, pd) = prev;
            let leap = py % 4 == 0 && (py % 100 != 0 || py % 400 == 0);
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
            let expected = if pd < len[pm as usize - 1] {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {day}");
            prev = (y, m, d);
        }
    }
}
