//! What one call into a handler can come to. A trap, a timeout, running out of memory and an
//! error returned by the guest are distinct outcomes: the failure policy treats them apart.

use std::fmt;

use super::bindings::{HandlerError, Output};
use super::guest_text::{MAX_GUEST_TEXT, sanitize};

/// Why a call did not produce outputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerFailure {
    /// The guest returned `retry-later`: a transient condition; the same message may succeed later.
    #[error("guest asked to retry later: {0}")]
    RetryLater(String),
    /// The guest returned `bad-message`: this message can never be handled.
    #[error("guest rejected the message: {0}")]
    BadMessage(String),
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access...). The instance is
    /// dead; the next call gets a fresh one.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The call ran past the plugin's deadline and was interrupted.
    #[error("guest ran past its {0} ms deadline and was interrupted")]
    Timeout(u64),
    /// The guest tried to grow its memory past the plugin's cap.
    #[error("guest exceeded its memory cap of {0} MiB")]
    OutOfMemory(u64),
    /// A fresh instance could not be made ready (instantiation or `init` failed).
    #[error("guest instance could not start: {0}")]
    InitFailed(String),
    /// No instance could be had (the instance pool is full): not the message's fault. kp waits
    /// and tries again; the failure policy never sees it.
    #[error("no guest instance available: {0}")]
    Unavailable(String),
    /// The broker refused an output of the handler for good (too large, no such partition or
    /// topic, not authorized): the handler's doing, so the failure policy applies.
    #[error("{0}")]
    OutputRefused(String),
}

/// A short, stable name of the failure kind (for logs, metrics and dead-letter headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    RetryLater,
    BadMessage,
    Trap,
    Timeout,
    OutOfMemory,
    InitFailed,
    Unavailable,
    OutputRefused,
}

impl HandlerFailure {
    pub fn kind(&self) -> FailureKind {
        match self {
            HandlerFailure::RetryLater(_) => FailureKind::RetryLater,
            HandlerFailure::BadMessage(_) => FailureKind::BadMessage,
            HandlerFailure::Trap(_) => FailureKind::Trap,
            HandlerFailure::Timeout(_) => FailureKind::Timeout,
            HandlerFailure::OutOfMemory(_) => FailureKind::OutOfMemory,
            HandlerFailure::InitFailed(_) => FailureKind::InitFailed,
            HandlerFailure::Unavailable(_) => FailureKind::Unavailable,
            HandlerFailure::OutputRefused(_) => FailureKind::OutputRefused,
        }
    }
}

/// A guest's error text, cut and escaped: it reaches logs, the status and dead-letter headers.
impl From<HandlerError> for HandlerFailure {
    fn from(e: HandlerError) -> Self {
        let clean = |why: String| sanitize(&why, MAX_GUEST_TEXT);
        match e {
            HandlerError::RetryLater(why) => HandlerFailure::RetryLater(clean(why)),
            HandlerError::BadMessage(why) => HandlerFailure::BadMessage(clean(why)),
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::RetryLater => "retry-later",
            FailureKind::BadMessage => "bad-message",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out-of-memory",
            FailureKind::InitFailed => "init-failed",
            FailureKind::Unavailable => "unavailable",
            FailureKind::OutputRefused => "output-refused",
        })
    }
}

/// The result of one call: the outputs to produce, or why there are none.
pub type HandlerOutcome = Result<Vec<Output>, HandlerFailure>;
