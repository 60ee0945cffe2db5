//! What went wrong, kept where an operator (and the exit status) can see it: the log, the status
//! file, and kp's exit status.

use std::sync::Mutex;

use serde::Serialize;

use crate::status::StatusBoard;

/// A partition that stopped because a message could not be finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Halt {
    pub plugin: String,
    pub topic: String,
    pub partition: i32,
    /// The message that failed; it and everything after it stay uncommitted.
    pub offset: i64,
    pub reason: String,
}

/// Shared record of halted partitions.
#[derive(Default)]
pub struct Health {
    halts: Mutex<Vec<Halt>>,
    /// Where halts are shown besides the log (`--status-file`).
    status: Option<StatusBoard>,
}

impl Health {
    /// Health that also shows its halts in `status`.
    pub fn reporting_to(status: StatusBoard) -> Self {
        Health {
            halts: Mutex::default(),
            status: Some(status),
        }
    }

    /// Records a halted partition and logs it at ERROR level.
    pub fn halted(&self, halt: Halt) {
        tracing::error!(
            plugin = %halt.plugin,
            topic = %halt.topic,
            partition = halt.partition,
            offset = halt.offset,
            "PARTITION HALTED: message not handled and NOT committed: {}. The partition stays \
             stopped at this offset (later messages are not handled) until a new version of the \
             plugin is published, an operator resumes it (POST /resume on --http), or kp \
             restarts; nothing past it is committed.",
            halt.reason
        );
        let halts = {
            let mut halts = self.halts.lock().unwrap_or_else(|e| e.into_inner());
            // One entry per partition: a later halt at a lower offset (an earlier output's
            // delivery failing) replaces it.
            halts.retain(|h| {
                !(h.plugin == halt.plugin && h.topic == halt.topic && h.partition == halt.partition)
            });
            halts.push(halt);
            halts.clone()
        };
        if let Some(status) = &self.status {
            status.set_halts(halts);
        }
    }

    /// A halted partition runs again (from its halted message): it leaves the list.
    pub fn resumed(&self, plugin: &str, topic: &str, partition: i32) {
        if self.forget(plugin, topic, partition) {
            crate::ops::metrics::metrics().plugin(plugin).resumed.inc();
        }
    }

    /// A partition is no longer this kp's to run (resumed, revoked, its plugin stopped): its halt,
    /// if any, leaves the list. True if it had one. (kp's exit status still counts halts of
    /// partitions it gave up at shutdown: they stay in the list then.)
    pub fn forget(&self, plugin: &str, topic: &str, partition: i32) -> bool {
        let (halts, found) = {
            let mut halts = self.halts.lock().unwrap_or_else(|e| e.into_inner());
            let before = halts.len();
            halts.retain(|h| !(h.plugin == plugin && h.topic == topic && h.partition == partition));
            (halts.clone(), before != halts.len())
        };
        if found && let Some(status) = &self.status {
            status.set_halts(halts);
        }
        found
    }

    /// Shows (or, with `None`, clears) a plugin's problem in the status.
    pub fn problem(&self, plugin: &str, problem: Option<String>) {
        if let Some(status) = &self.status {
            status.set_problem(plugin, problem);
        }
    }

    /// Every halt so far.
    pub fn halts(&self) -> Vec<Halt> {
        self.halts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
