//! Telemetry: the log subscriber and request ids.
//!
//! Log lines are in tracing-subscriber's text or JSON format (the text written by [`line`],
//! byte for byte the stock formatter's, at a fraction of its cost). They are appended to one
//! in-memory batch that a thread of its own writes to stdout every [`GATHER`], so the thread
//! answering a request never waits on a `write`. The batch is bounded ([`BUFFERED_BYTES`])
//! and lossy: when stdout does not keep up, further lines are dropped rather than holding up
//! requests, and the count is logged at shutdown. What is buffered is written out when the
//! [`LogGuard`] drops.
//!
//! Why not tracing-appender's non-blocking writer, which does the same with a queue of lines:
//! its writer thread is woken for nearly every line under load, and that wake-up (a futex
//! call, a context switch, the channel's spinning receive) cost more CPU than the rest of a
//! small request's logging (BENCHMARKS.md); a batch gathered over [`GATHER`] wakes the
//! thread at most once per interval.
//!
//! Request ids: a client's `x-request-id` is kept when it is a plausible id
//! ([`valid_client_id`]); otherwise it is removed before tower-http's `SetRequestId` layer
//! makes a version 4 UUID, and the request carries [`RejectedRequestId`] for the access log.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::Request;
use http::HeaderValue;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::X_REQUEST_ID;
use crate::config::LogFormat;

mod line;

/// The most bytes of log lines waiting for the writer thread (about 16,000 access-log lines);
/// past this, lines are dropped.
pub const BUFFERED_BYTES: usize = 2 << 20;

/// The longest client request id kept.
pub const MAX_CLIENT_ID: usize = 128;

/// How long the writer thread gathers lines after the first one of a batch arrives.
pub const GATHER: Duration = Duration::from_millis(10);

/// The batch, the writer thread's signal and the count of dropped lines.
struct Shared {
    batch: Mutex<Vec<u8>>,
    ready: Condvar,
    stop: AtomicBool,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // Nothing panics while holding it; a poisoned batch is still whole lines.
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends each line to the batch whole, or drops it when the batch is full.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut batch = self.0.lock();
        if batch.len() + line.len() > BUFFERED_BYTES {
            drop(batch);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let first = batch.is_empty();
            batch.extend_from_slice(line);
            drop(batch);
            if first {
                self.0.ready.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The writer thread: waits for a first line, gathers for [`GATHER`], writes the batch.
fn write_batches(shared: &Shared) {
    let mut out = Vec::new();
    loop {
        let mut batch = shared.lock();
        while batch.is_empty() && !shared.stop.load(Ordering::SeqCst) {
            batch = shared.ready.wait(batch).unwrap_or_else(|e| e.into_inner());
        }
        let stopping = shared.stop.load(Ordering::SeqCst);
        if !stopping {
            drop(batch);
            std::thread::sleep(GATHER);
            batch = shared.lock();
        }
        std::mem::swap(&mut *batch, &mut out);
        drop(batch);
        let mut stdout = std::io::stdout().lock();
        // A failed write loses its lines; there is nowhere else to report it.
        let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
        out.clear();
        if stopping && shared.lock().is_empty() {
            return;
        }
    }
}

/// Keeps the writer thread until dropped; then logs how many lines were dropped, if any, and
/// waits for the thread to write out what is buffered.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "log lines dropped: stdout did not keep up");
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs the global subscriber: `format` lines of the events `filter` (`EnvFilter`
/// syntax; `info` when it does not parse) lets through, on stdout, in colour only on a
/// terminal.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let shared = Arc::new(Shared {
        batch: Mutex::new(Vec::new()),
        ready: Condvar::new(),
        stop: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
    });
    let writer = BatchWriter(shared.clone());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("lossd-log".into())
            .spawn(move || write_batches(&shared))
            .ok()
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => fmt.event_format(line::PlainText::default()).init(),
        LogFormat::Json => fmt.json().init(),
    }
    LogGuard { shared, thread }
}

/// Marks a request whose `x-request-id` was refused (and removed): the access log says so.
#[derive(Clone, Copy, Debug)]
pub struct RejectedRequestId;

/// Whether a client's request id is kept: 1 to [`MAX_CLIENT_ID`] characters of printable
/// ASCII without space (`!` to `~`). A longer one would be copied into every log line and
/// response; control characters or non-ASCII could forge or garble log lines; a space would
/// split the id for the tools that read logs as whitespace-separated words.
pub fn valid_client_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_CLIENT_ID).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Removes a request's `x-request-id` unless it is one valid value, so that
/// `SetRequestIdLayer` makes a new one; runs before it (`ServiceBuilder::map_request`).
pub fn screen_request_id(mut req: Request) -> Request {
    let mut values = req.headers().get_all(&X_REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => return req,
        (Some(one), None) => valid_client_id(one),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(&X_REQUEST_ID);
        req.extensions_mut().insert(RejectedRequestId);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_short_and_printable() {
        let ok = |s: &str| valid_client_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("abc-123"));
        assert!(ok(&"x".repeat(MAX_CLIENT_ID)));
        assert!(ok("!~{}[]:;\"'"));
        assert!(!ok(&"x".repeat(MAX_CLIENT_ID + 1)));
        assert!(!ok(""));
        assert!(!ok("a b"));
        assert!(!ok("a\tb"));
        assert!(!valid_client_id(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
        ));
    }

    #[test]
    fn an_invalid_or_repeated_id_is_removed_and_marked() {
        let screen = |ids: &[&str]| {
            let mut req = Request::new(axum::body::Body::empty());
            for id in ids {
                req.headers_mut()
                    .append(&X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
            }
            let req = screen_request_id(req);
            let left: Vec<_> = req
                .headers()
                .get_all(&X_REQUEST_ID)
                .iter()
                .cloned()
                .collect();
            (left, req.extensions().get::<RejectedRequestId>().is_some())
        };
        assert_eq!(screen(&[]), (vec![], false));
        assert_eq!(
            screen(&["abc"]),
            (vec![HeaderValue::from_static("abc")], false)
        );
        assert_eq!(screen(&["a b"]), (vec![], true));
        assert_eq!(screen(&["abc", "def"]), (vec![], true));
    }
}
