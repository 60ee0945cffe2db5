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

/// Longest guest log line kept; longer ones are cut (a guest must not flood the host's log).
const MAX_LOG_LINE: usize = 16 * 1024;
/// Most table elements an instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Who a guest is, for log lines: plugin name and version (short content hash).
#[derive(Debug, Clone)]
pub struct GuestIdentity {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
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
    /// Memory cap in bytes, enforced by the `ResourceLimiter` impl below.
    memory_cap: usize,
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
        wasi.stdout(GuestLog::new(identity.plugin.clone(), Stream::Stdout))
            .stderr(GuestLog::new(identity.plugin.clone(), Stream::Stderr))
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
        if desired > self.memory_cap {
            self.memory_refused = true;
            // An error (rather than Ok(false)) traps the guest at once: every language then
            // fails the same clean way instead of each handling allocation failure its own way.
            wasmtime::bail!(
                "memory cap reached: growing linear memory from {current} to {desired} bytes exceeds the cap of {} bytes",
                self.memory_cap
            );
        }
        Ok(true)
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
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
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
