//! Guest instances, bounded by workers rather than partitions.
//!
//! A worker running a partition's turn *checks out* an instance of that partition's plugin for
//! the turn and gives it back at its end. Given-back instances wait, idle, in their plugin's
//! [`PluginInstances`], for the next turn of any partition of that plugin on any worker. So a
//! plugin has at most one instance per worker in use (and as many idle as were once needed at
//! the same time), whatever its number of partitions; an instance sees the messages of several
//! partitions, interleaved, which `wit/kp.wit` tells guests.
//!
//! The engine's instance pool (`--instance-pool`) bounds the total. Idle instances are a cache
//! kept within the pool minus the room the workers and plugin loads need (two per worker, two for
//! loads; checked at start): giving one back beyond that drops the idle instance used longest ago,
//! of any plugin. So a checkout or a load never waits on another worker's idle instance; should
//! the pool still be full, idle instances are dropped to make room ([`AllInstances::evict`]). A
//! plugin's own share (`max-instances`) can make a checkout wait; the partition then waits
//! without failing its message and says why. An instance that trapped is never given back.
//!
//! Versions: a checkout returns an instance of the published version (or, for a retry, of the
//! version that handled the message's first attempt). Idle instances of other versions are
//! dropped. A published version whose instance does not start, where the previous one does, is
//! remembered as refused and the previous one kept, so a bad version is tried once per plugin,
//! not once per message; a version that started once is not refused later (its failure is the
//! message's, under the failure policy).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::sandbox::{FailureKind, HandlerFailure, LoadedPlugin, PluginInstance};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every plugin's idle instances, so a full pool can make room. One per `kp run`.
pub struct AllInstances {
    plugins: Mutex<Vec<Weak<PluginInstances>>>,
    /// Most idle instances over all plugins.
    idle_cap: usize,
    /// Idle instances now, over all plugins.
    idle: std::sync::atomic::AtomicUsize,
}

impl AllInstances {
    /// Idle instances over all plugins stay within `idle_cap`.
    pub fn new(idle_cap: usize) -> Self {
        AllInstances {
            plugins: Mutex::new(Vec::new()),
            idle_cap,
            idle: Default::default(),
        }
    }

    /// The room idle instances may take in a pool of `pool` slots served by `workers` workers
    /// (see [`crate::sandbox::check_capacity`]); no cap without a pool.
    pub fn idle_cap(pool: Option<u32>, workers: usize) -> usize {
        pool.map_or(usize::MAX, |pool| {
            (pool as usize).saturating_sub(workers.saturating_mul(2).saturating_add(2))
        })
    }

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

    fn live_plugins(&self) -> Vec<Arc<PluginInstances>> {
        lock(&self.plugins)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Drops the idle instance used longest ago, of any plugin. False when none is idle.
    pub fn evict(&self) -> bool {
        let oldest = self
            .live_plugins()
            .into_iter()
            .filter_map(|p| {
                let at = lock(&p.state).idle.first().map(|(_, at)| *at)?;
                Some((at, p))
            })
            .min_by_key(|(at, _)| *at);
        let Some((_, plugin)) = oldest else {
            return false;
        };
        let evicted = {
            let mut state = lock(&plugin.state);
            (!state.idle.is_empty()).then(|| state.idle.remove(0))
        };
        if evicted.is_some() {
            self.idle.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        // Dropped outside the lock: freeing an instance returns its slot to the pool.
        evicted.is_some()
    }

    /// Idle instances over all plugins.
    pub fn idle(&self) -> usize {
        self.idle.load(std::sync::atomic::Ordering::Acquire)
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
    /// To keep idle instances within their room, and make room in a full pool.
    all: Weak<AllInstances>,
    state: Mutex<State>,
}

/// Why a checkout gave no instance.
pub enum CheckoutError {
    /// No room (pool or the plugin's share): not the message's fault; try again later.
    Unavailable(HandlerFailure),
    /// The version's instance does not start: the message's failure, under the failure policy.
    Failed(HandlerFailure),
}

impl From<HandlerFailure> for CheckoutError {
    fn from(failure: HandlerFailure) -> Self {
        if failure.kind() == FailureKind::Unavailable {
            CheckoutError::Unavailable(failure)
        } else {
            CheckoutError::Failed(failure)
        }
    }
}

impl PluginInstances {
    /// The version a new message gets now: the published one, unless it was refused.
    pub fn version_now(&self) -> Arc<LoadedPlugin> {
        let published = self.versions.load_full();
        let state = lock(&self.state);
        if state
            .refused
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &published))
        {
            state.current.clone()
        } else {
            published
        }
    }

    /// True when `instance` runs the version a new message gets now; lock-free when it is the
    /// published one.
    pub fn serves_now(&self, instance: &PluginInstance) -> bool {
        Arc::ptr_eq(&self.versions.load(), instance.plugin())
            || Arc::ptr_eq(&self.version_now(), instance.plugin())
    }

    /// An instance of `version` (a retry keeps the version of its first attempt), or of the
    /// version a new message gets now: an idle one, or a new one.
    pub fn checkout(
        &self,
        version: Option<&Arc<LoadedPlugin>>,
    ) -> Result<PluginInstance, CheckoutError> {
        let pinned = version.is_some();
        let target = version.cloned().unwrap_or_else(|| self.version_now());
        let (found, stale) = {
            let mut state = lock(&self.state);
            let mut stale = Vec::new();
            let mut found = None;
            // Newest first (the likeliest to be warm); other versions' instances are dropped,
            // except for a retry of an older version, which leaves the others alone.
            while let Some((instance, at)) = state.idle.pop() {
                if Arc::ptr_eq(instance.plugin(), &target) {
                    found = Some(instance);
                    break;
                }
                stale.push((instance, at));
            }
            if pinned {
                // Put the others back, in their order.
                state.idle.extend(stale.drain(..).rev());
            }
            let taken = stale.len() + usize::from(found.is_some());
            if let Some(all) = self.all.upgrade() {
                all.idle
                    .fetch_sub(taken, std::sync::atomic::Ordering::AcqRel);
            }
            (found, stale)
        };
        drop(stale); // older versions: their slots go back to the pool
        if let Some(instance) = found {
            return Ok(instance);
        }
        let failure = match self.start(target.clone()) {
            Ok(instance) => {
                let mut state = lock(&self.state);
                if !pinned {
                    // A version that starts is good, even if another worker's start failed.
                    if state
                        .refused
                        .as_ref()
                        .is_some_and(|r| Arc::ptr_eq(r, &target))
                    {
                        state.refused = None;
                    }
                    state.current = target;
                }
                return Ok(instance);
            }
            Err(failure) if failure.kind() == FailureKind::Unavailable || pinned => {
                return Err(failure.into());
            }
            Err(failure) => failure,
        };
        // A new version that does not start, where the running one does: refuse it once.
        let previous = {
            let mut state = lock(&self.state);
            if Arc::ptr_eq(&state.current, &target) {
                return Err(CheckoutError::Failed(failure));
            }
            state.refused = Some(target.clone());
            state.current.clone()
        };
        tracing::error!(
            plugin = %target.name(), version = %target.version(), running = %previous.version(),
            "new version does not start, keeping the running one: {failure}"
        );
        Ok(self.start(previous)?)
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
                    crate::ops::metrics::metrics()
                        .plugin(plugin.name())
                        .instances_started
                        .inc();
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

    /// Gives an instance back for the next turn. One that trapped, or of a version no longer
    /// current, is dropped; beyond the idle room, the idle instance used longest ago goes.
    pub fn give_back(&self, instance: PluginInstance) {
        if !instance.is_live() || !self.serves_now(&instance) {
            return;
        }
        let Some(all) = self.all.upgrade() else {
            return;
        };
        if all.idle() >= all.idle_cap && !all.evict() {
            return; // no room at all: this one goes
        }
        let mut state = lock(&self.state);
        // Counted before it can be taken, so the count never goes below zero.
        all.idle.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        state.idle.push((instance, Instant::now()));
    }
}
