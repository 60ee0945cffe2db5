//! `PluginWatcher`: watches the plugins folder (notify, debounced) and asks the registry to sync
//! each plugin whose files changed. Files arrive in many ways (written in place in chunks,
//! truncated then rewritten, written under a temporary name and renamed, copied slowly); the
//! debounce waits until a file has been quiet for [`QUIET`], hidden temporary names are ignored,
//! and the registry re-checks a module that fails to parse while it is still changing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::RecursiveMode;
use notify_debouncer_mini::{DebouncedEventKind, new_debouncer};

use crate::registry::{PluginRegistry, plugin_of};

/// A file must be quiet this long before it is looked at.
pub const QUIET: Duration = Duration::from_millis(300);

/// The watching thread.
pub struct PluginWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PluginWatcher {
    pub fn start(dir: &Path, registry: Arc<Mutex<PluginRegistry>>) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut debouncer = new_debouncer(QUIET, tx).context("starting the file watcher")?;
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kp-watch".into())
            .spawn(move || {
                let _debouncer = debouncer; // watching stops when it is dropped
                while !flag.load(Ordering::Acquire) {
                    let events = match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(Ok(events)) => events,
                        Ok(Err(e)) => {
                            tracing::warn!("file watcher: {e}");
                            continue;
                        }
                        Err(_) => continue,
                    };
                    // `AnyContinuous` means a file is still changing: wait for its final `Any`.
                    let names: BTreeSet<String> = events
                        .iter()
                        .filter(|e| e.kind == DebouncedEventKind::Any)
                        .filter_map(|e| plugin_of(&e.path))
                        .collect();
                    for name in names {
                        if flag.load(Ordering::Acquire) {
                            break;
                        }
                        tracing::debug!(plugin = %name, "files changed");
                        registry
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .sync(&name);
                    }
                }
            })
            .context("starting the watcher thread")?;
        tracing::info!(dir = %dir.display(), "watching the plugins folder for changes");
        Ok(PluginWatcher {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops watching (a sync in progress finishes first).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
