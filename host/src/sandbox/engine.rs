//! The shared wasmtime `Engine`: component model, epoch interruption driven by a ticker thread,
//! and the pooling allocator sized for many small instances.

use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::IntoAnyhow;
use crate::manifest::MAX_MEMORY_MIB;
use crate::stop::StoppableThread;

/// How often the epoch advances. A call's deadline is rounded up to a whole number of ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How the engine allocates instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Pre-reserved slots: fresh instances in microseconds (the default).
    Pooling {
        /// Most instances alive at once over all plugins (`--instance-pool`): at most one per
        /// worker per plugin is in use, the rest idle and dropped when room is needed.
        max_instances: u32,
    },
    /// Allocate on demand (for tools that make one instance, like `kp check`).
    OnDemand,
}

impl Default for Allocation {
    fn default() -> Self {
        Allocation::Pooling {
            max_instances: DEFAULT_INSTANCE_POOL,
        }
    }
}

/// `--instance-pool`'s default. Each slot reserves address space (not memory) for its memories
/// and tables; 256 keeps that within what any 64-bit host gives a process.
pub const DEFAULT_INSTANCE_POOL: u32 = 256;

/// Checks at start that `instance_pool` slots are enough for `workers` workers: each worker has
/// at most one instance in use and may start a second (a new version, or a replacement after a
/// trap) before the first goes; loading a plugin takes one more for its probe.
pub fn check_capacity(workers: usize, instance_pool: u32) -> Result<()> {
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let needed = workers.saturating_mul(2).saturating_add(2);
    anyhow::ensure!(
        instance_pool as usize >= needed,
        "--instance-pool {instance_pool} is too small for --workers {workers}: it needs at least \
         {needed} (two per worker, plus two for loading plugins); raise --instance-pool or lower \
         --workers"
    );
    Ok(())
}

pub fn build_engine(allocation: Allocation) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(OptLevel::Speed);
    config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(16));
    if let Allocation::Pooling { max_instances } = allocation {
        let mut pool = PoolingAllocationConfig::default();
        // Components from some toolchains hold several core instances, memories and tables.
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances * 8)
            .total_memories(max_instances * 2)
            .total_tables(max_instances * 4)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .table_elements(100_000)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize)
            // Keep a little of each memory resident so reusing a slot costs no page faults.
            .linear_memory_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
        .anyhow()
        .context("configuring the wasmtime engine")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped (then stopped at once and
/// joined, so no thread outlives the sandbox).
pub struct EpochTicker {
    /// Held for its `Drop`: stops and joins the thread.
    _thread: StoppableThread,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Result<Self> {
        let engine = engine.clone();
        let thread = StoppableThread::spawn("kp-epoch", move |stop| {
            while !stop.wait_timeout(EPOCH_TICK) {
                engine.increment_epoch();
            }
        })
        .context("starting the epoch ticker thread")?;
        Ok(EpochTicker { _thread: thread })
    }
}

/// The number of epoch ticks that covers `timeout` (at least 1, plus one for the partial tick).
pub fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up() {
        assert_eq!(deadline_ticks(Duration::from_millis(5)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(6)), 3);
        assert_eq!(deadline_ticks(Duration::from_secs(5)), 1001);
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
    }
}
