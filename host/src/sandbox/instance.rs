//! `PluginInstance`: one live guest instance that a partition worker calls once per message.
//!
//! The instance is reused across calls (a call costs about a microsecond); after any failure that
//! kills it (trap, timeout, out-of-memory) it is dropped, and the next call instantiates a fresh
//! one from the plugin's `InstancePre` and runs its `init` again.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Store, Trap};

use super::bindings::{HandlerWorld, Message};
use super::engine::deadline_ticks;
use super::guest_text::{MAX_GUEST_TEXT, sanitize};
use super::outcome::{HandlerFailure, HandlerOutcome};
use super::plugin::LoadedPlugin;
use super::state::GuestState;

/// Most outputs kp takes from one call. Their bytes are bounded by the plugin's memory cap
/// (wasmtime's hostcall fuel, set per store).
pub const MAX_OUTPUTS_PER_CALL: usize = 10_000;

/// A live instance: its store and its typed exports.
struct Live {
    store: Store<GuestState>,
    bindings: HandlerWorld,
    /// Its place in the plugin's share of the pool, given back when the instance goes.
    _share: ShareSlot,
}

/// One instance counted against its plugin's `max-instances`.
struct ShareSlot(Arc<std::sync::atomic::AtomicU32>);

impl ShareSlot {
    /// Takes a place, or says the plugin's share is used up.
    fn take(plugin: &LoadedPlugin) -> Result<Self, HandlerFailure> {
        use std::sync::atomic::Ordering;
        let live = plugin.live_instances.clone();
        let now = live.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = ShareSlot(live);
        match plugin.manifest.max_instances {
            Some(max) if now > max => Err(HandlerFailure::Unavailable(format!(
                "plugin {} has its share of {max} instances in use (max-instances)",
                plugin.name()
            ))),
            _ => Ok(slot),
        }
    }
}

impl Drop for ShareSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One guest instance of one plugin version, owned by one worker.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    /// `None` after a failure killed the instance; refilled by the next call.
    live: Option<Live>,
    /// Epoch ticks that make up the plugin's per-call deadline.
    deadline: u64,
    /// The deadline of instantiation and `init` (the per-call deadline, or less when probing).
    init_timeout: std::time::Duration,
    /// How many instances this worker has started (1 + replacements), for tests and metrics.
    started: u64,
}

impl PluginInstance {
    /// Instantiates `plugin` and runs its `init`.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, HandlerFailure> {
        let timeout = plugin.manifest.limits.timeout;
        Self::with_init_deadline(plugin, timeout)
    }

    /// [`Self::new`] with `init` bounded by `init_deadline` if that is shorter than the plugin's
    /// own deadline (loading a plugin, which must not hold up the others for long).
    pub fn probe(
        plugin: Arc<LoadedPlugin>,
        init_deadline: std::time::Duration,
    ) -> Result<Self, HandlerFailure> {
        let timeout = plugin.manifest.limits.timeout.min(init_deadline);
        Self::with_init_deadline(plugin, timeout)
    }

    fn with_init_deadline(
        plugin: Arc<LoadedPlugin>,
        init_timeout: std::time::Duration,
    ) -> Result<Self, HandlerFailure> {
        let mut instance = PluginInstance {
            deadline: deadline_ticks(init_timeout),
            init_timeout,
            plugin,
            live: None,
            started: 0,
        };
        instance.live = Some(instance.start()?);
        instance.deadline = deadline_ticks(instance.plugin.manifest.limits.timeout);
        instance.init_timeout = instance.plugin.manifest.limits.timeout;
        Ok(instance)
    }

    /// The plugin version this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// False after a failure killed the instance (a trap, a timeout, out of memory): the next
    /// call would start a fresh one.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Number of instances started so far (1 + replacements after failures).
    pub fn instances_started(&self) -> u64 {
        self.started
    }

    fn start(&mut self) -> Result<Live, HandlerFailure> {
        self.started += 1;
        // What another guest wrote on this thread is not this one's account of a failure.
        super::guest_stdio::clear_last_words();
        let plugin = &self.plugin;
        let share = ShareSlot::take(plugin)?;
        let state = GuestState::new(
            plugin.identity.clone(),
            plugin.config.clone(),
            plugin.manifest.limits.memory_bytes,
            &plugin.manifest.capabilities,
        );
        let mut store = Store::new(plugin.pre.engine(), state);
        store.limiter(|state| state);
        // What the host copies out of one call (outputs, log lines) is bounded by the plugin's
        // memory cap, not by wasmtime's default of 128 MiB.
        store.set_hostcall_fuel(
            usize::try_from(plugin.manifest.limits.memory_bytes).unwrap_or(usize::MAX),
        );
        store.set_epoch_deadline(self.deadline);
        store
            .data_mut()
            .set_call_deadline(Some(Instant::now() + self.init_timeout));
        let bindings = plugin.pre.instantiate(&mut store).map_err(|e| {
            match self.classify(&mut store, e, "instantiation") {
                unavailable @ HandlerFailure::Unavailable(_) => unavailable,
                other => HandlerFailure::InitFailed(other.to_string()),
            }
        })?;
        store.set_epoch_deadline(self.deadline);
        store
            .data_mut()
            .set_call_deadline(Some(Instant::now() + self.init_timeout));
        super::guest_stdio::clear_last_words();
        let init = bindings.kp_plugin_handler().call_init(&mut store);
        store.data_mut().set_call_deadline(None);
        if store.data_mut().take_deadline_hit() {
            return Err(HandlerFailure::InitFailed(format!(
                "init ran past its {} ms deadline (waiting in the host) and was cut",
                self.init_timeout.as_millis()
            )));
        }
        match init {
            Ok(Ok(())) => Ok(Live {
                store,
                bindings,
                _share: share,
            }),
            Ok(Err(why)) => Err(HandlerFailure::InitFailed(format!(
                "init returned an error: {}",
                sanitize(&why, MAX_GUEST_TEXT)
            ))),
            Err(e) => Err(HandlerFailure::InitFailed(
                self.classify(&mut store, e, "init").to_string(),
            )),
        }
    }

    /// Turns a wasmtime error from a call into the failure kind it stands for.
    fn classify(
        &self,
        store: &mut Store<GuestState>,
        error: wasmtime::Error,
        during: &str,
    ) -> HandlerFailure {
        let limits = &self.plugin.manifest.limits;
        if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
            return HandlerFailure::Unavailable(full.to_string());
        }
        if store.data_mut().take_memory_refused() {
            return HandlerFailure::OutOfMemory(limits.memory_bytes >> 20);
        }
        if store.data_mut().take_deadline_hit()
            || error
                .downcast_ref::<super::deadline_clock::DeadlinePassed>()
                .is_some()
        {
            return HandlerFailure::Timeout(limits.timeout.as_millis() as u64);
        }
        if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
            return HandlerFailure::Timeout(limits.timeout.as_millis() as u64);
        }
        // The guest's own account first (a panic message, an exception, a traceback's end),
        // marked as the guest's: it is text the guest chose.
        match super::guest_stdio::take_last_words() {
            Some(words) => HandlerFailure::Trap(format!(
                "guest stderr: \"{words}\" (trapped during {during}: {})",
                describe(&error)
            )),
            None => HandlerFailure::Trap(format!("during {during}: {}", describe(&error))),
        }
    }

    /// Calls the handler on one message.
    pub fn handle(&mut self, message: &Message) -> HandlerOutcome {
        if self.live.is_none() {
            self.live = Some(self.start()?);
        }
        let live = self.live.as_mut().expect("just ensured");
        live.store
            .data_mut()
            .enter(&message.topic, message.partition, message.offset);
        live.store.set_epoch_deadline(self.deadline);
        let timeout = self.plugin.manifest.limits.timeout;
        live.store
            .data_mut()
            .set_call_deadline(Some(Instant::now() + timeout));
        let _handling = super::guest_stdio::Handling::start(message.offset);
        let result = live
            .bindings
            .kp_plugin_handler()
            .call_handle(&mut live.store, message);
        drop(_handling);
        live.store.data_mut().set_call_deadline(None);
        live.store.data_mut().leave();
        if live.store.data_mut().take_deadline_hit() {
            // Its wait was cut at the deadline: whatever it returned came too late.
            self.live = None;
            return Err(HandlerFailure::Timeout(timeout.as_millis() as u64));
        }
        match result {
            Ok(Ok(outputs)) if outputs.len() > MAX_OUTPUTS_PER_CALL => {
                Err(HandlerFailure::OutputRefused(format!(
                    "the handler returned {} outputs for one message, more than kp takes from \
                     one call ({MAX_OUTPUTS_PER_CALL})",
                    outputs.len()
                )))
            }
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(guest_error)) => Err(guest_error.into()),
            Err(error) => {
                // A trapped instance cannot be entered again: drop it, start afresh next call.
                let mut dead = self.live.take().expect("live above");
                Err(self.classify(&mut dead.store, error, "handle"))
            }
        }
    }
}

/// A guest function's name as its author wrote it: Rust's mangled symbols demangled, without
/// their hash (`core::panicking::panic_fmt`, not `_ZN4core9panicking9panic_fmt17h…E`).
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// The root cause of a wasmtime error plus the first frames of the guest backtrace, if any.
fn describe(error: &wasmtime::Error) -> String {
    let mut text = error.root_cause().to_string();
    if let Some(trace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = trace
            .frames()
            .iter()
            .take(4)
            .map(|f| {
                f.func_name()
                    .map(demangle)
                    .unwrap_or_else(|| format!("func[{}]", f.func_index()))
            })
            .collect();
        if !frames.is_empty() {
            text.push_str(&format!(" (in {})", frames.join(" <- ")));
        }
    }
    // Trap messages and function names come from the guest (its name section).
    sanitize(&text, MAX_GUEST_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_symbols_are_demangled() {
        assert_eq!(
            demangle("_ZN4core9panicking9panic_fmt17h6a5d4dc3e3b5c4f1E"),
            "core::panicking::panic_fmt"
        );
        assert_eq!(demangle("handle"), "handle");
    }
}
