//! Guest stdout and stderr, sent to the host's log line by line and tagged with the plugin.
//!
//! A guest never inherits the host's stdio: what it prints becomes `tracing` events at INFO
//! (stdout) or WARN (stderr) with `plugin` and `stream` fields. Partial lines are buffered until
//! a newline or until the buffer holds [`MAX_LINE`] bytes, so a guest cannot grow host memory.
//! Lines share the plugin's log rate limit and are sanitized (`super::guest_text`).
//!
//! The guest's **last words**: what it wrote to stderr during the current call (its last
//! [`LAST_WORDS`] bytes, rate limit or not) is kept on the calling thread, so that when the call
//! traps, the failure carries the guest's own account: a Rust panic message, a JavaScript
//! exception, a Python traceback's last lines ([`take_last_words`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::guest_text::{LogBudget, sanitize};
use super::state::GuestIdentity;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept before it is logged in pieces.
const MAX_LINE: usize = super::guest_text::MAX_GUEST_TEXT;

/// Bytes of the current call's stderr kept for its failure message (the last ones).
pub const LAST_WORDS: usize = 2048;

/// Lines of the last words a failure message shows (a traceback's last lines).
const LAST_WORDS_LINES: usize = 8;

/// Which guest stream a [`GuestLog`] carries.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A `StdoutStream` that turns guest output into log lines.
#[derive(Clone)]
pub struct GuestLog {
    /// Plugin name attached to each line.
    plugin: Arc<str>,
    /// The plugin's log rate limit.
    budget: Arc<LogBudget>,
    stream: Stream,
    /// Bytes of the current, unfinished line; shared by every handle the guest opens.
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestLog {
    pub fn new(identity: &GuestIdentity, stream: Stream) -> Self {
        GuestLog {
            plugin: identity.plugin.clone(),
            budget: identity.log_budget.clone(),
            stream,
            pending: Arc::default(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let offset = HANDLING.with(std::cell::Cell::get);
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return;
        }
        let Some(dropped) = self.budget.take() else {
            return;
        };
        if dropped > 0 {
            tracing::warn!(plugin = %self.plugin, dropped, "guest log lines dropped: over the rate limit");
        }
        let text = sanitize(text, MAX_LINE);
        // The partition's span (when a worker runs it) names the plugin, topic and partition;
        // the offset is the message the guest is handling.
        match (self.stream, offset >= 0) {
            (Stream::Stdout, true) => {
                tracing::info!(plugin = %self.plugin, stream = "stdout", offset, "{text}")
            }
            (Stream::Stdout, false) => {
                tracing::info!(plugin = %self.plugin, stream = "stdout", "{text}")
            }
            (Stream::Stderr, true) => {
                tracing::warn!(plugin = %self.plugin, stream = "stderr", offset, "{text}")
            }
            (Stream::Stderr, false) => {
                tracing::warn!(plugin = %self.plugin, stream = "stderr", "{text}")
            }
        }
    }

    fn push(&self, bytes: &[u8]) {
        if matches!(self.stream, Stream::Stderr) {
            STDERR_TAIL.with(|tail| {
                let mut tail = tail.borrow_mut();
                let keep = bytes.len().min(LAST_WORDS);
                tail.extend_from_slice(&bytes[bytes.len() - keep..]);
                let excess = tail.len().saturating_sub(LAST_WORDS);
                tail.drain(..excess);
            });
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for &b in bytes {
            pending.push(b);
            if b == b'\n' || pending.len() >= MAX_LINE {
                self.emit(&pending);
                pending.clear();
            }
        }
    }

    fn flush_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            self.emit(&pending);
            pending.clear();
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flush_pending();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.flush_pending();
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

thread_local! {
    /// The offset of the message this thread's guest call handles (-1 outside a call), for the
    /// guest's stdout and stderr lines.
    static HANDLING: std::cell::Cell<i64> = const { std::cell::Cell::new(-1) };
    /// What the guest on this thread wrote to stderr since its current call began (the last
    /// [`LAST_WORDS`] bytes).
    static STDERR_TAIL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Forgets the last words of an earlier call: called as a guest call (or `init`) begins.
pub(crate) fn clear_last_words() {
    STDERR_TAIL.with(|tail| tail.borrow_mut().clear());
}

/// The last lines the guest wrote to stderr during this thread's current call, joined with
/// " | " and sanitized; `None` when it wrote nothing. Taken: a second read gets nothing.
pub(crate) fn take_last_words() -> Option<String> {
    let text = STDERR_TAIL.with(|tail| {
        let text = String::from_utf8_lossy(&tail.borrow()).into_owned();
        tail.borrow_mut().clear();
        text
    });
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        // Rust's panic hook adds this after the message: no help to a kp user.
        .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE=1`"))
        .collect();
    if lines.is_empty() {
        return None;
    }
    let last = &lines[lines.len().saturating_sub(LAST_WORDS_LINES)..];
    // The tail is LAST_WORDS bytes already; escaping may lengthen it, and the end (a traceback's
    // last line) is what matters, so the bound here is looser than the tail's.
    Some(sanitize(&last.join(" | "), 2 * LAST_WORDS))
}

/// The message a guest call on this thread handles, until dropped (an unwinding call included).
pub(crate) struct Handling;

impl Handling {
    pub(crate) fn start(offset: i64) -> Handling {
        HANDLING.with(|h| h.set(offset));
        clear_last_words();
        Handling
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        HANDLING.with(|h| h.set(-1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_words_are_the_last_stderr_lines_of_the_call_only() {
        let identity = GuestIdentity {
            plugin: "p".into(),
            version: "0".into(),
            log_budget: Arc::default(),
        };
        let (out, err) = (
            GuestLog::new(&identity, Stream::Stdout),
            GuestLog::new(&identity, Stream::Stderr),
        );
        let _call = Handling::start(1);
        assert_eq!(take_last_words(), None);
        out.push(b"stdout is not kept\n");
        err.push(b"thread '<unnamed>' panicked at src/lib.rs:9:5:\n");
        err.push(b"boom\n\n");
        assert_eq!(
            take_last_words().as_deref(),
            Some("thread '<unnamed>' panicked at src/lib.rs:9:5: | boom")
        );
        assert_eq!(take_last_words(), None, "taken once");
        // A flood keeps only its end, within bounds.
        for i in 0..1000 {
            err.push(format!("line {i}\n").as_bytes());
        }
        let words = take_last_words().unwrap();
        assert!(words.ends_with("line 999"), "{words}");
        assert!(words.len() <= LAST_WORDS);
        assert_eq!(words.matches(" | ").count(), LAST_WORDS_LINES - 1);
        // The next call starts with nothing.
        drop(_call);
        err.push(b"left over from an earlier call\n");
        let _next = Handling::start(2);
        assert_eq!(take_last_words(), None);
    }
}
