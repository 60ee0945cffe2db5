//! `PluginWatcher`: watches the plugins folder (notify) and asks the registry to sync each plugin
//! whose files changed. Files arrive in many ways (written in place in chunks, truncated then
//! rewritten, written under a temporary name and renamed, copied slowly): a plugin is synced only
//! once its files have been quiet for [`QUIET`], hidden temporary names are ignored, reads (kp's
//! own loading) are not changes, and the registry re-checks a module that fails to parse while it
//! is still changing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{EventKind, RecursiveMode, Watcher};

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
        let (tx, rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx).context("starting the file watcher")?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kp-watch".into())
            .spawn(move || {
                let _watcher = watcher; // watching stops when it is dropped
                // Plugins whose files changed, and when they last did.
                let mut changed: HashMap<String, Instant> = HashMap::new();
                while !flag.load(Ordering::Acquire) {
                    let wait = changed
                        .values()
                        .map(|at| QUIET.saturating_sub(at.elapsed()))
                        .min()
                        .unwrap_or(Duration::from_millis(100))
                        .min(Duration::from_millis(100));
                    match rx.recv_timeout(wait) {
                        // Reading a file (kp itself loading it) is not a change.
                        Ok(Ok(event)) if !matches!(event.kind, EventKind::Access(_)) => {
                            for name in event.paths.iter().filter_map(|p| plugin_of(p)) {
                                changed.insert(name, Instant::now());
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!("file watcher: {e}"),
                        Err(_) => {}
                    }
                    let quiet: Vec<String> = changed
                        .iter()
                        .filter(|(_, at)| at.elapsed() >= QUIET)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for name in quiet {
                        if flag.load(Ordering::Acquire) {
                            break;
                        }
                        changed.remove(&name);
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
