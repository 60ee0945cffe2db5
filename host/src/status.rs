//! What an operator can see of the plugins: for each, its state, the version that runs, and the
//! last error (a refused module, a refused new version), and every halted partition. Kept in
//! memory, logged, and, with `--status-file`, written as JSON (atomically) after every change:
//! `{"plugins": {NAME: {state, version, error}}, "halted": [{plugin, topic, partition, offset, reason, committable}]}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::kafka::Halt;

/// The state of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    Running,
    Refused,
    Removed,
}

/// One plugin's line of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStatus {
    pub state: PluginState,
    /// Short content hash of the version that runs.
    pub version: Option<String>,
    /// Why the last load (or reload) was refused; cleared by the next success.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Board {
    plugins: BTreeMap<String, PluginStatus>,
    halted: Vec<Halt>,
}

/// Shared status of every plugin.
#[derive(Clone, Default)]
pub struct StatusBoard {
    board: Arc<Mutex<Board>>,
    /// Where to write the JSON after each change.
    file: Option<PathBuf>,
}

impl StatusBoard {
    pub fn new(file: Option<PathBuf>) -> Self {
        StatusBoard {
            board: Arc::default(),
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets or clears a running plugin's problem (for example a deleted input topic), keeping its
    /// state and version.
    pub fn set_problem(&self, name: &str, problem: Option<String>) {
        let snapshot = {
            let mut board = self.lock();
            let Some(plugin) = board.plugins.get_mut(name) else {
                return;
            };
            plugin.error = problem;
            board.clone()
        };
        self.write(&snapshot);
    }

    /// Replaces the list of halted partitions.
    pub fn set_halts(&self, halted: Vec<Halt>) {
        let snapshot = {
            let mut board = self.lock();
            board.halted = halted;
            board.clone()
        };
        self.write(&snapshot);
    }

    pub fn set(
        &self,
        name: &str,
        state: PluginState,
        version: Option<String>,
        error: Option<String>,
    ) {
        let snapshot = {
            let mut board = self.lock();
            board.plugins.insert(
                name.to_string(),
                PluginStatus {
                    state,
                    version,
                    error,
                },
            );
            board.clone()
        };
        self.write(&snapshot);
    }

    fn write(&self, board: &Board) {
        if let Some(file) = &self.file {
            let json = serde_json::json!({ "plugins": board.plugins, "halted": board.halted });
            let written = crate::files::write_whole(
                file,
                &serde_json::to_vec_pretty(&json).unwrap_or_default(),
            );
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), "could not write the status file: {e}");
            }
        }
    }

    pub fn all(&self) -> BTreeMap<String, PluginStatus> {
        self.lock().plugins.clone()
    }
}
