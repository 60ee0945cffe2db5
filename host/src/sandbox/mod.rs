//! The sandbox: loads plugins and runs them in isolated, limited guest instances.
//!
//! - [`engine`]: the wasmtime engine (component model, epoch deadlines, pooling allocator).
//! - [`cache`]: compiled components on disk, keyed by content hash, tagged against tampering.
//! - [`compiler`]: compiling in a child process bounded in memory and time (compile bombs).
//! - [`plugin`]: loading and checking a module → [`LoadedPlugin`].
//! - [`instance`]: one live instance a worker calls per message → [`PluginInstance`].
//! - [`state`]: the per-store state: WASI (deny by default), host imports, memory limiter.
//! - [`deadline_clock`]: clock subscriptions cut at the call's deadline (blocking host calls).
//! - [`guest_stdio`]: guest stdout/stderr into the host log.
//! - [`guest_text`]: untrusted guest text made safe for logs and headers (cut, escaped, rate-limited).
//! - [`outcome`]: what a call comes to ([`HandlerFailure`] kinds).
//! - [`bindings`]: the one bindgen of `wit/kp.wit`.

pub mod bindings;
pub mod cache;
pub mod compiler;
pub mod deadline_clock;
pub mod engine;
pub mod guest_stdio;
pub mod guest_text;
pub mod instance;
pub mod outcome;
pub mod plugin;
pub mod state;

use std::path::PathBuf;

use anyhow::{Context, Result};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use bindings::{Header, Message, Output, Timestamp, TimestampType};
pub use cache::{ArtifactCache, Provenance};
pub use engine::{Allocation, DEFAULT_INSTANCE_POOL, check_capacity};
pub use instance::PluginInstance;
pub use outcome::{FailureKind, HandlerFailure, HandlerOutcome};
pub use plugin::{LoadError, LoadedPlugin};
use state::GuestState;

/// wasmtime 48 has an error type of its own; this lifts it into `anyhow` to attach context.
pub(crate) trait IntoAnyhow<T> {
    fn anyhow(self) -> Result<T>;
}

impl<T> IntoAnyhow<T> for std::result::Result<T, wasmtime::Error> {
    fn anyhow(self) -> Result<T> {
        self.map_err(anyhow::Error::from)
    }
}

/// How to build a [`Sandbox`].
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instance allocation strategy.
    pub allocation: Allocation,
    /// Where modules are compiled (`kp` itself: a bounded child process).
    pub compiler: compiler::Compiler,
}

/// The engine, the linker with every host capability, and the artifact cache. One per process;
/// cheap to share (`&Sandbox`) between the loader and all workers.
pub struct Sandbox {
    engine: Engine,
    /// Linked once: WASI 0.2 (deny by default, per-store state decides) and the kp imports.
    linker: Linker<GuestState>,
    cache: Option<ArtifactCache>,
    compiler: compiler::Compiler,
    /// How instances are allocated (the pool's size bounds every plugin's instances together).
    allocation: Allocation,
    /// Drives epoch deadlines; stops when the sandbox is dropped.
    _ticker: engine::EpochTicker,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let engine = engine::build_engine(config.allocation)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .anyhow()
            .context("linking WASI 0.2")?;
        // The monotonic clock again, with subscriptions cut at each call's deadline.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<
            GuestState,
            deadline_clock::DeadlineClocks,
        >(&mut linker, GuestState::deadline_clocks)
        .anyhow()
        .context("linking the deadline-bound monotonic clock")?;
        linker.allow_shadowing(false);
        bindings::HandlerWorld::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .anyhow()
            .context("linking the kp host imports")?;
        let cache = config.cache_dir.map(|dir| ArtifactCache::new(dir, &engine));
        let _ticker = engine::EpochTicker::start(&engine)?;
        Ok(Sandbox {
            engine,
            linker,
            cache,
            compiler: config.compiler,
            allocation: config.allocation,
            _ticker,
        })
    }

    /// The instance pool's size (`--instance-pool`), or `None` when instances are allocated on
    /// demand.
    pub fn instance_pool(&self) -> Option<u32> {
        match self.allocation {
            Allocation::Pooling { max_instances } => Some(max_instances),
            Allocation::OnDemand => None,
        }
    }
}
