//! Guest instances, bounded by workers rather than partitions.
//!
//! A worker running a partition's turn *checks out* an instance of that partition's plugin for
//! the turn and gives it back at its end. Given-back instances wait, idle, in their plugin's
//! [`PluginInstances`], for the next turn of any partition of that plugin on any worker. So a
//! plugin has at most one instance per worker in use (and as many idle as were once needed at
//! the same time), whatever its number of partitions; an instance sees the messages of several
//! partitions, interleaved, which `wit/kp.wit` tells guests.
//!
//! The engine's instance pool (`--instance-pool`) bounds the total. When it is full, the idle
//! instance used longest ago, of any plugin, is dropped to make room ([`AllInstances::evict`]):
//! idle instances are a cache, and with a pool of at least twice the workers (checked at start)
//! a checkout never waits on another worker's idle instance. A plugin's own share
//! (`max-instances`) can make a checkout wait; the partition then waits without failing its
//! message and says why.
//!
//! Versions: a checkout returns an instance of the published version. Idle instances of an older
//! version are dropped as they come out. A published version whose instance does not start is
//! remembered as refused and the previous one kept, so a bad version is tried once per plugin,
//! not once per message.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::sandbox::{FailureKind, HandlerFailure, LoadedPlugin, PluginInstance};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every plugin's idle instances, so a full pool can make room. One per `kp run`.
#[derive(Default)]
pub struct AllInstances {
    plugins: Mutex<Vec<Weak<PluginInstances>>>,
}

impl AllInstances {
    /// The instances of one plugin (one per plugin consumer).
    pub fn for_plugin(
        self: &Arc<Self>,
        versions: Arc<ArcSwap<LoadedPlugin>>,
    ) -> Arc<PluginInstances> {
        let current = versions.load_full();
        let plugin = Arc::new(PluginInstances {
            versions,
            all: Arc::downgrade(self),
            state: Mutex::new(State {
                idle: Vec::new(),
                current,
                refused: None,
            }),
        });
        let mut plugins = lock(&self.plugins);
        plugins.retain(|p| p.strong_count() > 0);
        plugins.push(Arc::downgrade(&plugin));
        plugin
    }

    /// Drops the idle instance used longest ago, of any plugin. False when none is idle.
    pub fn evict(&self) -> bool {
        let plugins: Vec<Arc<PluginInstances>> = lock(&self.plugins)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let oldest = plugins
            .iter()
            .filter_map(|p| {
                let state = lock(&p.state);
                state.idle.first().map(|(_, at)| (*at, p.clone()))
            })
            .min_by_key(|(at, _)| *at);
        let Some((_, plugin)) = oldest else {
            return false;
        };
        let evicted = {
            let mut state = lock(&plugin.state);
            (!state.idle.is_empty()).then(|| state.idle.remove(0))
        };
        // Dropped outside the lock: freeing an instance returns its slot to the pool.
        evicted.is_some()
    }

    /// Idle instances over all plugins (for tests and the status).
    pub fn idle(&self) -> usize {
        lock(&self.plugins)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|p| lock(&p.state).idle.len())
            .sum()
    }
}

struct State {
    /// Given-back instances, oldest first, with when they were given back.
    idle: Vec<(PluginInstance, Instant)>,
    /// The version new instances are made of: the published one, unless it was refused.
    current: Arc<LoadedPlugin>,
    /// A published version whose instance did not start; not tried again.
    refused: Option<Arc<LoadedPlugin>>,
}

/// One plugin's instances: the idle ones, and which version to make.
pub struct PluginInstances {
    /// The published version (the registry stores new ones).
    versions: Arc<ArcSwap<LoadedPlugin>>,
    /// To make room in a full pool.
    all: Weak<AllInstances>,
    state: Mutex<State>,
}

/// Why a checkout gave no instance.
pub enum CheckoutError {
    /// No room (pool or the plugin's share): not the message's fault; try again later.
    Unavailable(HandlerFailure),
    /// The version's instance does not start.
    Failed(HandlerFailure),
}

impl PluginInstances {
    /// True when `instance` runs the version a message should get now.
    pub fn is_current(&self, instance: &PluginInstance) -> bool {
        let published = self.versions.load();
        if Arc::ptr_eq(&published, instance.plugin()) {
            return true;
        }
        let state = lock(&self.state);
        state
            .refused
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &published))
            && Arc::ptr_eq(&state.current, instance.plugin())
    }

    /// An instance of the version to run now: an idle one, or a new one.
    pub fn checkout(&self) -> Result<PluginInstance, CheckoutError> {
        let published = self.versions.load_full();
        let (target, stale) = {
            let mut state = lock(&self.state);
            let refused = state
                .refused
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &published));
            let target = if refused {
                state.current.clone()
            } else {
                published.clone()
            };
            // Newest first: the most recently used is the likeliest to be warm.
            let mut stale = Vec::new();
            while let Some((instance, _)) = state.idle.pop() {
                if Arc::ptr_eq(instance.plugin(), &target) {
                    drop(state);
                    drop(stale);
                    return Ok(instance);
                }
                stale.push(instance);
            }
            (target, stale)
        };
        drop(stale); // older versions: their slots go back to the pool
        match self.start(target.clone()) {
            Ok(instance) => {
                lock(&self.state).current = target;
                Ok(instance)
            }
            Err(failure) if failure.kind() == FailureKind::Unavailable => {
                Err(CheckoutError::Unavailable(failure))
            }
            Err(failure) => {
                let fallback = {
                    let mut state = lock(&self.state);
                    if Arc::ptr_eq(&target, &state.current) {
                        None
                    } else {
                        state.refused = Some(target.clone());
                        Some(state.current.clone())
                    }
                };
                let Some(previous) = fallback else {
                    return Err(CheckoutError::Failed(failure));
                };
                tracing::error!(
                    plugin = %target.name(), version = %target.version(), running = %previous.version(),
                    "new version does not start, keeping the running one: {failure}"
                );
                match self.start(previous) {
                    Ok(instance) => Ok(instance),
                    Err(f) if f.kind() == FailureKind::Unavailable => {
                        Err(CheckoutError::Unavailable(f))
                    }
                    Err(f) => Err(CheckoutError::Failed(f)),
                }
            }
        }
    }

    /// A new instance of `plugin`; when the pool is full, idle instances (of any plugin) are
    /// dropped to make room.
    fn start(&self, plugin: Arc<LoadedPlugin>) -> Result<PluginInstance, HandlerFailure> {
        loop {
            match PluginInstance::new(plugin.clone()) {
                Err(failure)
                    if failure.kind() == FailureKind::Unavailable
                        && !plugin.share_used_up()
                        && self.all.upgrade().is_some_and(|all| all.evict()) => {}
                Ok(instance) => {
                    tracing::debug!(
                        plugin = %plugin.name(), version = %plugin.version(),
                        "guest instance started"
                    );
                    return Ok(instance);
                }
                other => return other,
            }
        }
    }

    /// Gives an instance back for the next turn. An instance of a version no longer current is
    /// dropped.
    pub fn give_back(&self, instance: PluginInstance) {
        if !self.is_current(&instance) {
            return;
        }
        lock(&self.state).idle.push((instance, Instant::now()));
    }
}
