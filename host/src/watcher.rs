//! `PluginWatcher`: watches the plugins folder (notify) and asks the registry to sync each plugin
//! whose files changed. Files arrive in many ways (written in place in chunks, truncated then
//! rewritten, written under a temporary name and renamed, copied slowly): a plugin is synced only
//! once its files have been quiet for [`QUIET`], hidden temporary names are ignored, reads (kp's
//! own loading) are not changes, and a module that fails to parse right after it changed is looked
//! at again once quiet ([`Synced::LookAgain`]) before it is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::registry::{PluginRegistry, Synced, plugin_of};
use crate::stop::StoppableThread;

/// A file must be quiet this long before it is looked at.
pub const QUIET: Duration = Duration::from_millis(300);

/// The watching thread; stopped (at once: it waits on file events and its stop together) and
/// joined when dropped. A sync in progress finishes first.
pub struct PluginWatcher {
    /// Held for its `Drop`: stops and joins the thread.
    _thread: StoppableThread,
}

impl PluginWatcher {
    pub fn start(dir: &Path, registry: Arc<Mutex<PluginRegistry>>) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .context("starting the file watcher")?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching {}", dir.display()))?;
        let thread = StoppableThread::spawn("kp-watch", move |stopped| {
            let _watcher = watcher; // watching stops when it is dropped
            // Plugins whose files changed (or that must be looked at again), and when.
            let mut changed: HashMap<String, Instant> = HashMap::new();
            while !stopped.is_triggered() {
                let wait = changed
                    .values()
                    .map(|at| QUIET.saturating_sub(at.elapsed()))
                    .min()
                    .unwrap_or(Duration::from_secs(3600));
                crossbeam_channel::select! {
                    recv(stopped.signal()) -> _ => break,
                    recv(rx) -> event => match event {
                        // Reading a file (kp itself loading it) is not a change.
                        Ok(Ok(event)) if !matches!(event.kind, EventKind::Access(_)) => {
                            for name in event.paths.iter().filter_map(|p| plugin_of(p)) {
                                changed.insert(name, Instant::now());
                            }
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!("file watcher: {e}"),
                        Err(_) => break, // the notify watcher is gone
                    },
                    default(wait) => {}
                }
                let quiet: Vec<String> = changed
                    .iter()
                    .filter(|(_, at)| at.elapsed() >= QUIET)
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in quiet {
                    if stopped.is_triggered() {
                        break;
                    }
                    changed.remove(&name);
                    tracing::debug!(plugin = %name, "files changed");
                    let synced = registry
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .sync(&name);
                    if synced == Synced::LookAgain {
                        // Still being written: looked at again once quiet, lock released.
                        changed.insert(name, Instant::now());
                    }
                }
            }
        })
        .context("starting the watcher thread")?;
        tracing::info!(dir = %dir.display(), "watching the plugins folder for changes");
        Ok(PluginWatcher { _thread: thread })
    }
}
