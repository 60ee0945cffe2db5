//! `GuestState`: the one state struct of each guest `Store`.
//!
//! It carries the capabilities granted to the instance (a deny-by-default WASI context, the
//! plugin's config values), the memory cap the resource limiter enforces, and the position of
//! the message being handled so that guest log lines carry topic, partition and offset.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{Deterministic, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::manifest::Capabilities;

use super::bindings::{Level, kp};
use super::guest_stdio::{GuestLog, Stream};
use super::guest_text::{LOG_LINES_PER_SECOND, LogBudget, MAX_GUEST_TEXT, sanitize};

/// Most table elements an instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Most linear memories, core instances and tables one component instance may create (the
/// toolchains kp supports use 1-2 memories and a handful of instances and tables).
const MAX_MEMORIES: usize = 8;
const MAX_CORE_INSTANCES: usize = 64;
const MAX_TABLES: usize = 16;

/// Who a guest is, for log lines: plugin name and version (short content hash).
#[derive(Debug, Clone)]
pub struct GuestIdentity {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
    /// Guest log lines (logging import, stdout, stderr) of every instance of this version.
    pub log_budget: Arc<LogBudget>,
}

/// Where the guest is in the stream, for log lines.
#[derive(Debug, Clone, Default)]
struct Position {
    topic: Option<Arc<str>>,
    partition: i32,
    offset: i64,
}

/// Per-`Store` state of one guest instance.
pub struct GuestState {
    /// WASI 0.2 context: no preopened directories, no environment, no network, no inherited stdio.
    wasi: WasiCtx,
    /// Resources (streams, pollables) handed to the guest through WASI.
    table: ResourceTable,
    identity: GuestIdentity,
    /// The plugin's `[config]` values, shared by all its instances.
    config: Arc<BTreeMap<String, String>>,
    /// Memory cap in bytes for all the instance's linear memories together, enforced by the
    /// `ResourceLimiter` impl below.
    memory_cap: usize,
    /// Bytes of linear memory the instance holds, over all its memories.
    memory_used: usize,
    /// The last growth the limiter allowed, (before, after), undone if wasmtime then fails it.
    last_growth: Option<(usize, usize)>,
    /// When the current call (or `init`) must end; clock subscriptions are cut there.
    call_deadline: Option<std::time::Instant>,
    /// A clock subscription of the current call was cut at its deadline: the call timed out.
    deadline_hit: bool,
    /// Set when the limiter refused a memory growth: a trap that follows is out-of-memory.
    memory_refused: bool,
    /// The message being handled, if any.
    position: Option<Position>,
}

impl GuestState {
    pub fn new(
        identity: GuestIdentity,
        config: Arc<BTreeMap<String, String>>,
        memory_cap: u64,
        capabilities: &Capabilities,
    ) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestLog::new(&identity, Stream::Stdout))
            .stderr(GuestLog::new(&identity, Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for name in &capabilities.env {
            if let Ok(value) = std::env::var(name) {
                wasi.env(name, value);
            }
        }
        if !capabilities.wall_clock {
            wasi.wall_clock(EpochClock);
        }
        if !capabilities.random {
            wasi.secure_random(Deterministic::new(vec![0x5a; 32]))
                .insecure_random(Deterministic::new(vec![0xa5; 32]))
                .insecure_random_seed(0);
        }
        GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            identity,
            config,
            memory_cap: usize::try_from(memory_cap).unwrap_or(usize::MAX),
            memory_used: 0,
            last_growth: None,
            call_deadline: None,
            deadline_hit: false,
            memory_refused: false,
            position: None,
        }
    }

    /// Records which message the next call handles (for log tags).
    pub fn enter(&mut self, topic: &str, partition: i32, offset: i64) {
        let position = self.position.get_or_insert_with(Position::default);
        if position.topic.as_deref() != Some(topic) {
            position.topic = Some(Arc::from(topic));
        }
        position.partition = partition;
        position.offset = offset;
    }

    /// Clears the position once a call is over (lines logged by `init` carry none).
    pub fn leave(&mut self) {
        if let Some(p) = self.position.as_mut() {
            p.offset = -1;
        }
    }

    /// Sets (or clears) when the current call must end.
    pub fn set_call_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.call_deadline = deadline;
    }

    pub(crate) fn call_deadline(&self) -> Option<std::time::Instant> {
        self.call_deadline
    }

    /// The WASI clocks, and the flag a cut subscription sets.
    pub(crate) fn clocks_and_deadline_hit(
        &mut self,
    ) -> (wasmtime_wasi::clocks::WasiClocksCtxView<'_>, &mut bool) {
        (
            wasmtime_wasi::clocks::WasiClocksCtxView {
                ctx: self.wasi.clocks(),
                table: &mut self.table,
            },
            &mut self.deadline_hit,
        )
    }

    /// True (once) when a clock subscription was cut at the deadline since the last call to this.
    pub fn take_deadline_hit(&mut self) -> bool {
        std::mem::take(&mut self.deadline_hit)
    }

    /// A state with nothing granted, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        GuestState::new(
            GuestIdentity {
                plugin: "test".into(),
                version: "0".into(),
                log_budget: Arc::default(),
            },
            Arc::default(),
            64 << 20,
            &Capabilities::default(),
        )
    }

    /// True (once) when the limiter refused a memory growth since the last call to this.
    pub fn take_memory_refused(&mut self) -> bool {
        std::mem::take(&mut self.memory_refused)
    }
}

/// The wall clock of a guest denied the real one: always the Unix epoch.
struct EpochClock;

impl HostWallClock for EpochClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The cap is for the instance: a component may hold several memories, and every one of
        // them counts (`current` is what this memory already holds and is counted already).
        let total = self.memory_used - current.min(self.memory_used) + desired;
        if total > self.memory_cap {
            self.memory_refused = true;
            // An error (rather than Ok(false)) traps the guest at once: every language then
            // fails the same clean way instead of each handling allocation failure its own way.
            wasmtime::bail!(
                "memory cap reached: growing a linear memory from {current} to {desired} bytes \
                 would make the instance's memories {total} bytes, above the cap of {} bytes",
                self.memory_cap
            );
        }
        self.memory_used = total;
        self.last_growth = Some((current, desired));
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // Allowed here, refused after (the memory's own maximum, the pool's slot): not held.
        if let Some((before, after)) = self.last_growth.take() {
            self.memory_used = self.memory_used.saturating_sub(after - before);
        }
        Ok(())
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl kp::plugin::types::Host for GuestState {}

impl kp::plugin::logging::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        let Some(dropped) = self.identity.log_budget.take() else {
            return; // over the plugin's rate: counted, said with the next line written
        };
        if dropped > 0 {
            tracing::warn!(target: "kp::guest", plugin = %self.identity.plugin, dropped, "guest log lines dropped: over {LOG_LINES_PER_SECOND} lines/s");
        }
        let message = sanitize(&message, MAX_GUEST_TEXT);
        let plugin = &*self.identity.plugin;
        let version = &*self.identity.version;
        let (topic, partition, offset) = match &self.position {
            Some(Position {
                topic: Some(t),
                partition,
                offset,
            }) if *offset >= 0 => (&**t, *partition, *offset),
            _ => ("", -1, -1),
        };
        macro_rules! emit {
            ($lvl:ident) => {
                if offset >= 0 {
                    tracing::$lvl!(target: "kp::guest", plugin, version, topic, partition, offset, "{message}")
                } else {
                    tracing::$lvl!(target: "kp::guest", plugin, version, "{message}")
                }
            };
        }
        match level {
            Level::Trace => emit!(trace),
            Level::Debug => emit!(debug),
            Level::Info => emit!(info),
            Level::Warn => emit!(warn),
            Level::Error => emit!(error),
        }
    }
}

impl kp::plugin::config::Host for GuestState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component may hold several memories; the cap is for all of them together.
    #[test]
    fn the_memory_cap_counts_every_memory_of_the_instance() {
        let engine =
            super::super::engine::build_engine(super::super::Allocation::OnDemand).unwrap();
        // 400 pages = 25 MiB each: two fit the 64 MiB cap, three do not.
        let three = wat::parse_str("(module (memory 400) (memory 400) (memory 400))").unwrap();
        let two = wat::parse_str("(module (memory 400) (memory 400))").unwrap();
        let instantiate = |bytes: &[u8]| {
            let module = wasmtime::Module::new(&engine, bytes).unwrap();
            let mut store = wasmtime::Store::new(&engine, GuestState::for_tests());
            store.limiter(|state| state);
            let result = wasmtime::Instance::new(&mut store, &module, &[]).map(|_| ());
            (result, store.data_mut().take_memory_refused())
        };
        let (result, refused) = instantiate(&two);
        assert!(result.is_ok() && !refused);
        let (result, refused) = instantiate(&three);
        assert!(
            result.is_err() && refused,
            "three memories of 25 MiB exceed a 64 MiB cap"
        );
    }
}
