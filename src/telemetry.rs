//! Telemetry: the log subscriber and request ids, both stock.
//!
//! Log lines are tracing-subscriber's own text or JSON format, handed to tracing-appender's
//! non-blocking writer: a thread of its own writes them to stdout, so the thread answering a
//! request never waits on a `write`. Its queue is bounded ([`BUFFERED_LINES`]) and lossy: when
//! stdout does not keep up, further lines are dropped rather than holding up requests, and
//! the count is logged at shutdown. What is queued is written out when the [`LogGuard`] drops.
//!
//! Request ids: a client's `x-request-id` is kept when it is a plausible id
//! ([`valid_client_id`]); otherwise it is removed before tower-http's `SetRequestId` layer
//! makes a version 4 UUID, and the request carries [`RejectedRequestId`] for the access log.

use std::io::{BufWriter, IsTerminal};

use axum::extract::Request;
use http::HeaderValue;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::X_REQUEST_ID;
use crate::config::LogFormat;

/// The most lines waiting for the writer thread; past this, lines are dropped.
pub const BUFFERED_LINES: usize = 16_384;

/// The longest client request id kept.
pub const MAX_CLIENT_ID: usize = 128;

/// Keeps the writer thread until dropped; then logs how many lines were dropped, if any, and
/// waits for the thread to write out what is queued.
pub struct LogGuard {
    dropped: ErrorCounter,
    _worker: WorkerGuard,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let dropped = self.dropped.dropped_lines();
        if dropped > 0 {
            tracing::warn!(dropped, "log lines dropped: stdout did not keep up");
        }
    }
}

/// Installs the global subscriber: `format` lines of the events `filter` (`EnvFilter`
/// syntax; `info` when it does not parse) lets through, on stdout, in colour only on a
/// terminal.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // The writer thread flushes after each batch it takes off the queue, so a `BufWriter`
    // turns a busy stretch into a few large writes instead of one per line.
    let (writer, worker) = NonBlockingBuilder::default()
        .buffered_lines_limit(BUFFERED_LINES)
        .lossy(true)
        .thread_name("lossd-log")
        .finish(BufWriter::new(std::io::stdout()));
    let dropped = writer.error_counter();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    LogGuard {
        dropped,
        _worker: worker,
    }
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
