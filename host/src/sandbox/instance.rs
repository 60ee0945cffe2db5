//! `PluginInstance`: one live guest instance that a partition worker calls once per message.
//!
//! The instance is reused across calls (a call costs about a microsecond); after any failure that
//! kills it (trap, timeout, out-of-memory) it is dropped, and the next call instantiates a fresh
//! one from the plugin's `InstancePre` and runs its `init` again.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::bindings::{HandlerWorld, Message};
use super::engine::deadline_ticks;
use super::outcome::{HandlerFailure, HandlerOutcome};
use super::plugin::LoadedPlugin;
use super::state::GuestState;

/// A live instance: its store and its typed exports.
struct Live {
    store: Store<GuestState>,
    bindings: HandlerWorld,
}

/// One guest instance of one plugin version, owned by one worker.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    /// `None` after a failure killed the instance; refilled by the next call.
    live: Option<Live>,
    /// Epoch ticks that make up the plugin's per-call deadline.
    deadline: u64,
    /// How many instances this worker has started (1 + replacements), for tests and metrics.
    started: u64,
}

impl PluginInstance {
    /// Instantiates `plugin` and runs its `init`.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, HandlerFailure> {
        let deadline = deadline_ticks(plugin.manifest.limits.timeout);
        let mut instance = PluginInstance {
            plugin,
            live: None,
            deadline,
            started: 0,
        };
        instance.live = Some(instance.start()?);
        Ok(instance)
    }

    /// The plugin version this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Number of instances started so far (1 + replacements after failures).
    pub fn instances_started(&self) -> u64 {
        self.started
    }

    fn start(&mut self) -> Result<Live, HandlerFailure> {
        self.started += 1;
        let plugin = &self.plugin;
        let state = GuestState::new(
            plugin.identity.clone(),
            plugin.config.clone(),
            plugin.manifest.limits.memory_bytes,
            &plugin.manifest.capabilities,
        );
        let mut store = Store::new(plugin.pre.engine(), state);
        store.limiter(|state| state);
        store.set_epoch_deadline(self.deadline);
        let bindings = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&mut store, e, "instantiation"))?;
        store.set_epoch_deadline(self.deadline);
        match bindings.kp_plugin_handler().call_init(&mut store) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(why)) => Err(HandlerFailure::InitFailed(format!(
                "init returned an error: {why}"
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
        if store.data_mut().take_memory_refused() {
            return HandlerFailure::OutOfMemory(limits.memory_bytes >> 20);
        }
        if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
            return HandlerFailure::Timeout(limits.timeout.as_millis() as u64);
        }
        HandlerFailure::Trap(format!("during {during}: {}", describe(&error)))
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
        let result = live
            .bindings
            .kp_plugin_handler()
            .call_handle(&mut live.store, message);
        live.store.data_mut().leave();
        match result {
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
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("func[{}]", f.func_index()))
            })
            .collect();
        if !frames.is_empty() {
            text.push_str(&format!(" (in {})", frames.join(" <- ")));
        }
    }
    text
}
