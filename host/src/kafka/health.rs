//! What went wrong, kept where an operator (and the exit status) can see it.

use std::sync::Mutex;

/// A partition that stopped because a message could not be finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    pub plugin: String,
    pub topic: String,
    pub partition: i32,
    /// The message that failed; it and everything after it stay uncommitted.
    pub offset: i64,
    pub reason: String,
    /// The committable offset when it halted.
    pub committable: Option<i64>,
}

/// Shared record of halted partitions.
#[derive(Debug, Default)]
pub struct Health {
    halts: Mutex<Vec<Halt>>,
}

impl Health {
    /// Records a halted partition and logs it at ERROR level.
    pub fn halted(&self, halt: Halt) {
        tracing::error!(
            plugin = %halt.plugin,
            topic = %halt.topic,
            partition = halt.partition,
            offset = halt.offset,
            "PARTITION HALTED: message not handled and NOT committed: {}. The partition stays \
             stopped at this offset (later messages are not handled) until kp restarts; nothing \
             past it is committed.",
            halt.reason
        );
        self.halts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(halt);
    }

    /// Every halt so far.
    pub fn halts(&self) -> Vec<Halt> {
        self.halts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
