//! Log output: `info` lines (the access log, one per request) are gathered in a buffer that a
//! background thread writes to stdout a few times a second, instead of one `write` system
//! call per request on the thread that answered it; `warn` and `error` lines are written at
//! once, after whatever is buffered, so they are never delayed.
//!
//! The buffer is bounded: when stdout does not keep up (a full pipe, a stalled collector) and
//! the buffer holds [`LIMIT`] bytes, further `info` lines are dropped and counted, and the
//! count is written as a line of its own once there is room again. Nothing waits on stdout
//! but the writer thread and the `warn`/`error` lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

mod format;
pub use format::{Fast, Style};

/// How often buffered lines are written out.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// The most bytes held for the writer thread; past this, `info` lines are dropped.
pub const LIMIT: usize = 4 << 20;
/// A buffer this full is written out at once instead of at the next interval.
const EAGER: usize = 64 << 10;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    dropped: u64,
    closed: bool,
}

struct Shared<W> {
    state: Mutex<State>,
    wake: Condvar,
    /// The output; locked while written, so buffered and direct lines keep their order.
    out: Mutex<W>,
}

impl<W: Write> Shared<W> {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out what is buffered (and the count of dropped lines), holding `out` so that
    /// nothing written directly slips in between.
    fn flush(&self, out: &mut W) {
        let (mut buf, dropped) = {
            let mut s = self.state();
            (std::mem::take(&mut s.buf), std::mem::take(&mut s.dropped))
        };
        if !buf.is_empty() {
            // A log line cannot be delivered anywhere else; a failed write is dropped.
            let _ = out.write_all(&buf);
        }
        if dropped > 0 {
            let _ = writeln!(
                out,
                "lossd: {dropped} log lines dropped (stdout did not keep up)"
            );
        }
        let _ = out.flush();
        buf.clear();
        // Keep the allocation for the next round unless it grew unusually large.
        if buf.capacity() <= 2 * EAGER {
            let mut s = self.state();
            if s.buf.is_empty() {
                s.buf = buf;
            }
        }
    }
}

/// A [`MakeWriter`] for `tracing_subscriber` writing to `W` (stdout in the binary) as
/// described in the module documentation. Cloned into the subscriber; [`LogGuard`] stops
/// the writer thread and writes out the rest.
pub struct BufferedLog<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for BufferedLog<W> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// Stops the writer thread when dropped, after it has written out every buffered line.
pub struct LogGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> BufferedLog<W> {
    /// A buffered log writing to `out`, and the guard that stops its writer thread.
    pub fn new(out: W) -> io::Result<(Self, LogGuard<W>)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            out: Mutex::new(out),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lossd-log".into())
            .spawn(move || {
                loop {
                    let closed = {
                        let st = s.state();
                        let (st, _) = s
                            .wake
                            .wait_timeout_while(st, INTERVAL, |st| {
                                !st.closed && st.buf.len() < EAGER
                            })
                            .unwrap_or_else(PoisonError::into_inner);
                        st.closed
                    };
                    let mut out = s.out.lock().unwrap_or_else(PoisonError::into_inner);
                    s.flush(&mut out);
                    if closed {
                        return;
                    }
                }
            })?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            LogGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl<W: Write + Send + 'static> Drop for LogGuard<W> {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One log line on its way: buffered (`info` and lower), or written at once after what is
/// buffered (`warn`, `error`).
pub struct Line<'a, W> {
    shared: &'a Shared<W>,
    direct: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let shared = self.shared;
        match self.direct {
            false => {
                let mut s = shared.state();
                if s.closed {
                    // After shutdown: no writer thread any more.
                    drop(s);
                    let mut out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
                    return out.write_all(bytes).map(|()| bytes.len());
                }
                if s.buf.len() + bytes.len() > LIMIT {
                    s.dropped += 1;
                } else {
                    s.buf.extend_from_slice(bytes);
                    if s.buf.len() >= EAGER {
                        shared.wake.notify_one();
                    }
                }
                Ok(bytes.len())
            }
            true => {
                let mut out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
                shared.flush(&mut out);
                out.write_all(bytes)?;
                out.flush()?;
                Ok(bytes.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BufferedLog<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
            direct: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            shared: &self.shared,
            // tracing orders levels by verbosity: WARN and ERROR are the "smaller" ones.
            direct: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An output shared with the test; the first write can be held until the test lets go.
    #[derive(Clone, Default)]
    struct Out {
        bytes: Arc<Mutex<Vec<u8>>>,
        hold: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    }

    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if let Some(rx) = self.hold.lock().unwrap().take() {
                rx.recv().ok();
            }
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Out) -> String {
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap()
    }

    fn line<W: Write + Send + 'static>(log: &BufferedLog<W>, direct: bool, s: &str) {
        let mut w = Line {
            shared: &log.shared,
            direct,
        };
        w.write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn buffered_lines_are_written_by_the_interval_and_in_order_with_direct_ones() {
        let out = Out::default();
        let (log, guard) = BufferedLog::new(out.clone()).unwrap();
        line(&log, false, "a\n");
        line(&log, false, "b\n");
        line(&log, true, "W\n");
        // The direct line went out at once, after the buffered ones.
        assert_eq!(text(&out), "a\nb\nW\n");
        line(&log, false, "c\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while text(&out) != "a\nb\nW\nc\n" {
            assert!(
                std::time::Instant::now() < deadline,
                "never written: {:?}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        line(&log, false, "d\n");
        drop(guard);
        assert_eq!(text(&out), "a\nb\nW\nc\nd\n");
        // After the guard, lines are written directly.
        line(&log, false, "e\n");
        assert_eq!(text(&out), "a\nb\nW\nc\nd\ne\n");
    }

    #[test]
    fn a_stalled_output_drops_lines_past_the_limit_and_says_how_many() {
        let out = Out::default();
        let (release, held) = mpsc::channel();
        *out.hold.lock().unwrap() = Some(held);
        let (log, guard) = BufferedLog::new(out.clone()).unwrap();
        // The first write out stalls (a full pipe), holding whatever it took.
        line(&log, false, "first\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.shared.state().buf.is_empty() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let row = "x".repeat(1023) + "\n";
        let fits = LIMIT / row.len();
        for _ in 0..fits + 10 {
            line(&log, false, &row);
        }
        assert_eq!(log.shared.state().buf.len(), fits * row.len());
        release.send(()).unwrap();
        drop(guard);
        let t = text(&out);
        assert_eq!(t.matches(&row).count(), fits);
        assert!(t.starts_with("first\n"));
        assert!(
            t.ends_with("lossd: 10 log lines dropped (stdout did not keep up)\n"),
            "{}",
            &t[t.len() - 80..]
        );
    }
}
