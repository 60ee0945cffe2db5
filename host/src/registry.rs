//! `PluginRegistry`: the plugins that run, kept in line with the files of the plugins folder.
//!
//! [`PluginRegistry::sync`] looks at one plugin's files (`NAME.wasm`, `NAME.toml`) and makes the
//! running state match them, away from the message path:
//! - a new module starts a new plugin (its consumer joins its group);
//! - a changed module or manifest is loaded and checked while the old version keeps handling
//!   messages; only a version that loads, links and starts is published, and each partition
//!   task switches to it between two messages ([`crate::kafka::partition`]);
//! - a manifest that changes the topics or the group restarts that plugin's consumer (drain,
//!   commit, leave, join again); other changes (limits, config, output topic) are a swap;
//! - a deleted module stops its plugin cleanly (drain, commit, leave the group);
//! - a bad new version never replaces a good one: the old one keeps running, the reason is logged
//!   with the file name and kept in the status;
//! - a module that does not parse right after it changed may still be arriving: the caller is
//!   asked to look again once the file has been quiet ([`Synced::LookAgain`]), and the same
//!   bytes failing twice are refused. Nothing sleeps under the registry's lock.
//!
//! What to do with a loaded version is decided by [`plan`], a pure function unit-tested below;
//! [`PluginRegistry::sync`] loads, checks, and applies the plan.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::kafka::output::OutputProducer;
use crate::kafka::settings::create_client;
use crate::kafka::{Health, PluginConsumer, RunOptions};
use crate::manifest::{Manifest, plugin_name};
use crate::sandbox::{LoadError, LoadedPlugin, Sandbox};
use crate::status::{PluginState, StatusBoard};

/// How long to wait for the cluster's metadata when checking topics.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// A plugin that runs: its consumer and the version its workers follow.
struct RunningPlugin {
    consumer: PluginConsumer,
    /// The published version. Workers load it between messages and switch when it changes.
    versions: Arc<ArcSwap<LoadedPlugin>>,
}

/// The running plugins of one plugins folder.
pub struct PluginRegistry {
    dir: PathBuf,
    sandbox: Sandbox,
    producer: Arc<OutputProducer>,
    health: Arc<Health>,
    options: RunOptions,
    /// Reads topic metadata (to refuse plugins whose topics do not exist).
    metadata: BaseConsumer<MetadataContext>,
    running: BTreeMap<String, RunningPlugin>,
    pub status: StatusBoard,
    /// The workers that run every plugin's partitions.
    executor: Arc<crate::kafka::executor::Executor>,
    /// What each running plugin's consumer shows an operator (readiness, partitions), readable
    /// without the registry's lock (which a load can hold for minutes).
    views: PluginViews,
    /// Every plugin's idle guest instances (a full pool makes room from them).
    instances: Arc<crate::kafka::instances::AllInstances>,
    /// Modules that failed to parse once and were not refused yet, with the size and time they
    /// had: failing again unchanged refuses them (they were not still arriving).
    unsettled: HashMap<String, Fingerprint>,
}

/// What a sync asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Synced {
    /// The plugin matches its files (started, swapped, stopped or refused, or unchanged).
    Done,
    /// The module did not parse and may still be being written: sync it again once its files
    /// have been quiet for a while.
    LookAgain,
}

/// What loading a version of a plugin leads to, given the version running (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadPlan {
    /// The same module and manifest: nothing to do.
    Unchanged,
    /// Not running: start a consumer.
    Start,
    /// Same input topics and group: publish the new version; partitions switch between two
    /// messages, with no rebalance.
    Swap,
    /// Other input topics or another group: the consumer drains and leaves, and a new one joins.
    Restart,
}

/// Decides what a loaded version (`new`: content hash and manifest) does to the `running` one.
/// Pure, so the decision is tested without a broker.
pub fn plan(running: Option<(&str, &Manifest)>, new: (&str, &Manifest)) -> ReloadPlan {
    let Some((hash, manifest)) = running else {
        return ReloadPlan::Start;
    };
    if hash == new.0 && manifest == new.1 {
        return ReloadPlan::Unchanged;
    }
    if manifest.input_topics == new.1.input_topics && manifest.group_id == new.1.group_id {
        ReloadPlan::Swap
    } else {
        ReloadPlan::Restart
    }
}

/// Each running plugin's view, by name.
pub type PluginViews = Arc<std::sync::Mutex<BTreeMap<String, Arc<crate::kafka::PluginView>>>>;

/// The module names of a plugins folder: every `NAME.wasm` entry with a valid plugin name, sorted,
/// skipping hidden (temporary) files. An entry may turn out not to be a usable file (a folder, a
/// broken or looping link): [`module_file`] says.
pub fn module_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(scan(dir)?.0)
}

/// The folder's modules, and every other entry kp does not load, with the reason. One read of
/// the folder.
fn scan(dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut modules = Vec::new();
    let mut manifests = Vec::new();
    let mut ignored = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the plugins folder {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if file.starts_with('.') {
            continue; // temporary names used while writing: see the README's hot reload
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext @ ("wasm" | "toml")) => match plugin_name(&path) {
                Ok(_) if ext == "wasm" => modules.push(path),
                Ok(_) => manifests.push(path),
                Err(why) => ignored.push(format!("{why:#}")),
            },
            _ => ignored.push(format!(
                "{}: not a module (NAME.wasm) or a manifest (NAME.toml)",
                path.display()
            )),
        }
    }
    for manifest in manifests {
        let module = manifest.with_extension("wasm");
        if !modules.contains(&module) {
            ignored.push(format!(
                "{}: a manifest without its module {}",
                manifest.display(),
                module.display()
            ));
        }
    }
    modules.sort();
    ignored.sort();
    Ok((modules, ignored))
}

/// What a module path of the plugins folder is.
#[derive(Debug, PartialEq, Eq)]
pub enum ModuleFile {
    /// Nothing there (deleted).
    Absent,
    /// A regular file (possibly through a link).
    File,
    /// Something kp cannot load, and why.
    Unusable(String),
}

/// Looks at what is at `path` without reading it.
pub fn module_file(path: &Path) -> ModuleFile {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => ModuleFile::File,
        Ok(meta) if meta.is_dir() => {
            ModuleFile::Unusable(format!("{} is a folder, not a module file", path.display()))
        }
        Ok(_) => ModuleFile::Unusable(format!(
            "{} is not a regular file (a device, socket or pipe)",
            path.display()
        )),
        Err(e) if std::fs::symlink_metadata(path).is_ok() => ModuleFile::Unusable(format!(
            "{} is a link that cannot be followed: {e}",
            path.display()
        )),
        Err(_) => ModuleFile::Absent,
    }
}

/// The plugin a file of the plugins folder belongs to: `NAME` for `NAME.wasm` or `NAME.toml`;
/// none for hidden files (temporary names used while writing) and anything else.
pub fn plugin_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') {
        return None;
    }
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    plugin_name(path).ok()
}

/// Size and modification time, to tell whether a file is still being written.
fn fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

impl PluginRegistry {
    pub fn new(
        dir: PathBuf,
        sandbox: Sandbox,
        producer: Arc<OutputProducer>,
        health: Arc<Health>,
        options: RunOptions,
        status: StatusBoard,
    ) -> Result<Self> {
        let metadata: BaseConsumer<MetadataContext> = create_client(
            &options.kafka.metadata_config(),
            MetadataContext::default(),
            "creating the metadata client",
        )?;
        if let Some(pool) = sandbox.instance_pool() {
            crate::sandbox::check_capacity(options.workers, pool)?;
        }
        let executor = crate::kafka::executor::Executor::start(options.workers)?;
        let idle_cap = crate::kafka::instances::AllInstances::idle_cap(
            sandbox.instance_pool(),
            options.workers,
        );
        Ok(PluginRegistry {
            dir,
            sandbox,
            producer,
            health,
            options,
            metadata,
            running: BTreeMap::new(),
            status,
            executor: Arc::new(executor),
            views: PluginViews::default(),
            instances: Arc::new(crate::kafka::instances::AllInstances::new(idle_cap)),
            unsettled: HashMap::new(),
        })
    }

    /// Names of the plugins that run.
    pub fn running(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Syncs every plugin of the folder (at start), and says once what in it is not loaded. A
    /// module still being written is looked at again (a few times, a quiet period apart).
    pub fn sync_all(&mut self) -> Result<()> {
        let (modules, ignored) = scan(&self.dir)?;
        for why in ignored {
            tracing::warn!("plugins folder: ignored: {why}");
        }
        let mut again: Vec<String> = modules.iter().filter_map(|m| plugin_of(m)).collect();
        for _ in 0..10 {
            again.retain(|name| self.sync(name) == Synced::LookAgain);
            if again.is_empty() {
                break;
            }
            std::thread::sleep(crate::watcher::QUIET);
        }
        for name in again {
            tracing::warn!(
                plugin = %name,
                "the module is still changing: not loaded yet (the folder watcher loads it once \
                 it is complete)"
            );
        }
        Ok(())
    }

    /// Makes plugin `name` match its files.
    pub fn sync(&mut self, name: &str) -> Synced {
        let module = self.dir.join(format!("{name}.wasm"));
        let file = module_file(&module);
        match file {
            ModuleFile::File => {}
            ModuleFile::Absent => {
                self.unsettled.remove(name);
                if self.stop_running(name) {
                    self.status.set(name, PluginState::Removed, None, None);
                }
                return Synced::Done;
            }
            // What replaced the module cannot be loaded: the module is gone, as if deleted.
            ModuleFile::Unusable(why) => {
                self.unsettled.remove(name);
                self.stop_running(name);
                self.refuse(name, why);
                return Synced::Done;
            }
        }
        let before = fingerprint(&module);
        let policy = &self.options.policy;
        let plugin = match self.sandbox.load_admitted(&module, &|m| policy.apply(m)) {
            Ok(plugin) => plugin,
            Err(e) => {
                let now = fingerprint(&module);
                let seen = self.unsettled.insert(name.to_string(), before);
                if look_again(&e, before, now, seen) {
                    tracing::debug!(
                        plugin = name,
                        "module is still being written; looking again once it is quiet"
                    );
                    return Synced::LookAgain;
                }
                self.unsettled.remove(name);
                self.refuse(name, e.report());
                return Synced::Done;
            }
        };
        self.unsettled.remove(name);
        if plugin.manifest.input_topics.is_empty() {
            let why = format!(
                "{}: not started: {} names no input-topics (a module needs a manifest NAME.toml with input-topics to run)",
                module.display(),
                Manifest::path_for(&module).display()
            );
            self.refuse(name, why);
            return Synced::Done;
        }
        if let Err(why) = self.conflicts(name, &plugin.manifest) {
            self.refuse(name, format!("{}: not started: {why}", module.display()));
            return Synced::Done;
        }
        let running = self.running.get(name).map(|r| r.versions.load_full());
        let plan = plan(
            running
                .as_deref()
                .map(|current| (current.content_hash.as_str(), &*current.manifest)),
            (&plugin.content_hash, &plugin.manifest),
        );
        if plan == ReloadPlan::Unchanged {
            return Synced::Done; // nothing changed (a touch, or the same bytes written again)
        }
        let mut input_partitions = 0;
        let missing = self.check_topics(&plugin).and_then(|checked| {
            input_partitions = checked.input_partitions;
            let missing = checked.missing;
            if self.options.create_missing_topics && !missing.is_empty() {
                crate::dev::create_topics(&self.options.kafka, &missing)?;
                // Counted again with the topics just created.
                input_partitions = self.check_topics(&plugin)?.input_partitions;
                return Ok(Vec::new());
            }
            Ok(missing)
        });
        match missing {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => {
                let why = format!(
                    "plugin {name}: not started: topic(s) {} do not exist on the cluster (create them, or fix {})",
                    missing.join(", "),
                    Manifest::path_for(&module).display()
                );
                self.refuse(name, why);
                return Synced::Done;
            }
            Err(e) => {
                self.refuse(name, format!("plugin {name}: {e:#}"));
                return Synced::Done;
            }
        }
        if let (ReloadPlan::Swap, Some(previous)) = (plan, &running) {
            tracing::info!(
                plugin = name, from = %previous.version(), to = %plugin.version(),
                "new version ready: partitions switch at their next message"
            );
            self.running[name].versions.store(plugin.clone());
            crate::ops::metrics::metrics().reload(name, true);
            // Partitions this plugin halted get their chance with the new version.
            self.running[name].consumer.resume_halted();
            self.status.set(
                name,
                PluginState::Running,
                Some(plugin.version().to_string()),
                None,
            );
            return Synced::Done;
        }
        if let Some(old) = self.running.remove(name) {
            tracing::info!(
                plugin = name,
                "topics or group changed: restarting the plugin's consumer"
            );
            // Not ready while the new consumer joins.
            self.forget_view(name);
            drop(old); // drains, commits, leaves the group
        }
        let versions = Arc::new(ArcSwap::new(plugin.clone()));
        match PluginConsumer::start(
            versions.clone(),
            self.producer.clone(),
            self.health.clone(),
            self.options.clone(),
            input_partitions,
            self.executor.clone(),
            &self.instances,
        ) {
            Ok(consumer) => {
                self.views
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), consumer.view());
                self.running
                    .insert(name.to_string(), RunningPlugin { consumer, versions });
                self.status.set(
                    name,
                    PluginState::Running,
                    Some(plugin.version().to_string()),
                    None,
                );
            }
            Err(e) => self.refuse(name, format!("{e:#}")),
        }
        Synced::Done
    }

    /// Records why a plugin (or a new version of it) was not started.
    /// What running `manifest` as plugin `name` would clash with among the other running
    /// plugins: a consumer group another plugin uses (the two would split its partitions and
    /// commit for each other), or a loop from its outputs back to its inputs, directly or
    /// through other plugins, unless the operator allows it.
    fn conflicts(&self, name: &str, manifest: &Manifest) -> Result<(), String> {
        let others: Vec<(String, Manifest)> = self
            .running
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .map(|(other, r)| (other.clone(), (*r.versions.load().manifest).clone()))
            .collect();
        if let Some((other, _)) = others.iter().find(|(_, m)| m.group_id == manifest.group_id) {
            return Err(format!(
                "plugins {other} and {name} both ask for consumer group {:?}: give each plugin \
                 a group of its own (each must see every record of its topics)",
                manifest.group_id
            ));
        }
        if !self.options.policy.allows_loops(name) {
            // Everything a plugin writes: its outputs and its dead-letter topic.
            let writes = |m: &Manifest| -> Vec<String> {
                m.declared_outputs()
                    .chain(&m.on_failure.dead_letter_topic)
                    .cloned()
                    .collect()
            };
            let graph: Vec<(String, Vec<String>, Vec<String>)> = others
                .iter()
                .map(|(n, m)| (n.clone(), m.input_topics.clone(), writes(m)))
                .collect();
            let outputs = writes(manifest);
            if let Some(path) = crate::policy::find_loop(&manifest.input_topics, &outputs, &graph) {
                return Err(format!(
                    "its outputs reach its own inputs ({}): a loop that would never end; the \
                     operator may allow it with allow-loops = true under [policy.{name}]",
                    path.join(" -> ")
                ));
            }
        }
        Ok(())
    }

    /// Stops plugin `name` if it runs (drain, commit, leave); true if it ran.
    fn stop_running(&mut self, name: &str) -> bool {
        let Some(running) = self.running.remove(name) else {
            return false;
        };
        tracing::info!(plugin = name, "module removed: stopping the plugin");
        self.forget_view(name);
        drop(running); // drains, commits, leaves the group
        true
    }

    fn refuse(&mut self, name: &str, why: String) {
        crate::ops::metrics::metrics().reload(name, false);
        match self.running.get(name) {
            Some(running) => {
                let keep = running.versions.load();
                tracing::error!(plugin = name, keeping = %keep.version(), "new version refused, the running version goes on: {why}");
                self.status.set(
                    name,
                    PluginState::Running,
                    Some(keep.version().to_string()),
                    Some(why),
                );
            }
            None => {
                tracing::error!(plugin = name, "refused: {why}");
                self.status.set(name, PluginState::Refused, None, Some(why));
            }
        }
    }

    /// Which input and output topics of `plugin` the cluster does not have, and how many
    /// partitions its input topics have (they share its prefetch budget).
    fn check_topics(&self, plugin: &LoadedPlugin) -> Result<TopicCheck> {
        let manifest = &plugin.manifest;
        let mut missing = Vec::new();
        let mut input_partitions = 0;
        let inputs = manifest.input_topics.len();
        for (i, topic) in manifest
            .input_topics
            .iter()
            .chain(manifest.declared_outputs())
            .chain(&manifest.on_failure.dead_letter_topic)
            .enumerate()
        {
            let md = self.metadata.fetch_metadata(Some(topic), METADATA_TIMEOUT);
            if md.is_err() {
                // Serve the client's queue: its log lines and errors arrive there.
                let _ = self.metadata.poll(Duration::ZERO);
            }
            let md = md.with_context(|| match self.metadata.context().last_error() {
                    // Say why the cluster could not be reached (a refused login, a certificate
                    // that does not verify), not only that it could not.
                    Some(cause) => format!(
                        "fetching metadata of topic {topic:?}: the cluster could not be reached: {cause}"
                    ),
                    None => format!("fetching metadata of topic {topic:?} (are the brokers reachable?)"),
                })?;
            if !crate::kafka::has_topic(&md, topic) {
                missing.push(topic.clone());
            } else if i < inputs {
                // An input counted once, even where it is an output too (allow-loops).
                input_partitions += md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or(0, |t| t.partitions().len());
            }
        }
        Ok(TopicCheck {
            missing,
            input_partitions,
        })
    }

    /// Stops every plugin (drain, commit, leave), in parallel.
    /// What the running plugins' consumers show, shared with the operator's endpoints.
    pub fn views(&self) -> PluginViews {
        self.views.clone()
    }

    /// The workers' liveness, for `/healthz`.
    pub fn executor(&self) -> Arc<crate::kafka::executor::Executor> {
        self.executor.clone()
    }

    fn forget_view(&self, name: &str) {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    pub fn stop_all(&mut self) {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let running = std::mem::take(&mut self.running);
        for r in running.values() {
            r.consumer.request_stop();
        }
        drop(running); // each drains, commits and leaves; together, since all were asked first
    }
}

/// The metadata client's context: librdkafka's log goes to `tracing`, and the last error it
/// reported is kept, so a refusal can say why the cluster could not be reached.
#[derive(Default)]
pub struct MetadataContext {
    last_error: std::sync::Mutex<Option<String>>,
}

impl MetadataContext {
    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl rdkafka::ClientContext for MetadataContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel::{Alert, Critical, Emerg, Error};
        // "All brokers down" follows the error that says why: keep the why.
        if matches!(level, Emerg | Alert | Critical | Error)
            && !message.contains("brokers are down")
        {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
        }
        crate::kafka::rdkafka_log("metadata", level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for MetadataContext {}

/// Size and modification time of a module file.
type Fingerprint = Option<(u64, SystemTime)>;

/// Whether a module that failed to load (`error`, read at `before`, looking like `now` after the
/// attempt) is looked at again rather than refused: when it changed during the attempt, or when
/// it does not parse and this is the first failure of these bytes (`seen`: the fingerprint of
/// its previous failure). It may still be being written.
fn look_again(
    error: &LoadError,
    before: Fingerprint,
    now: Fingerprint,
    seen: Option<Fingerprint>,
) -> bool {
    let may_be_arriving = matches!(
        error,
        LoadError::Invalid { .. } | LoadError::NotWasm { .. } | LoadError::Io { .. }
    );
    now != before || (may_be_arriving && seen != Some(before))
}

/// What [`PluginRegistry::check_topics`] found.
struct TopicCheck {
    /// Topics the plugin names that the cluster does not have.
    missing: Vec<String>,
    /// The partitions of its input topics that exist.
    input_partitions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_that_does_not_parse_is_looked_at_again_once_then_refused() {
        let at = |len| Some((len, SystemTime::UNIX_EPOCH));
        let invalid = LoadError::NotWasm {
            path: "m.wasm".into(),
            reason: "cut".into(),
        };
        let manifest = LoadError::NotAllowed {
            path: "m.wasm".into(),
            reason: "no".into(),
        };
        // Changed while being loaded: always again.
        assert!(look_again(&manifest, at(1), at(2), None));
        // Does not parse: again the first time, refused when the same bytes fail again.
        assert!(look_again(&invalid, at(5), at(5), None));
        assert!(!look_again(&invalid, at(5), at(5), Some(at(5))));
        // Other bytes failing: again.
        assert!(look_again(&invalid, at(6), at(6), Some(at(5))));
        // A refusal that does not come from half a file: at once.
        assert!(!look_again(&manifest, at(5), at(5), None));
    }

    fn manifest(topics: &[&str], group: &str) -> Manifest {
        let text = format!(
            "input-topics = [{}]\noutput-topic = \"out\"\ngroup-id = \"{group}\"\n",
            topics
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Manifest::parse("p", &text).expect("valid manifest")
    }

    #[test]
    fn a_plugin_not_running_starts() {
        assert_eq!(
            plan(None, ("h1", &manifest(&["a"], "g"))),
            ReloadPlan::Start
        );
    }

    #[test]
    fn the_same_bytes_and_manifest_change_nothing() {
        let m = manifest(&["a"], "g");
        assert_eq!(plan(Some(("h1", &m)), ("h1", &m)), ReloadPlan::Unchanged);
    }

    #[test]
    fn a_new_module_or_setting_on_the_same_topics_and_group_swaps() {
        let m = manifest(&["a"], "g");
        assert_eq!(plan(Some(("h1", &m)), ("h2", &m)), ReloadPlan::Swap);
        let mut other = m.clone();
        other.output_topic = Some("elsewhere".into());
        assert_eq!(plan(Some(("h1", &m)), ("h1", &other)), ReloadPlan::Swap);
    }

    #[test]
    fn other_input_topics_or_another_group_restart_the_consumer() {
        let m = manifest(&["a"], "g");
        assert_eq!(
            plan(Some(("h1", &m)), ("h1", &manifest(&["a", "b"], "g"))),
            ReloadPlan::Restart
        );
        assert_eq!(
            plan(Some(("h1", &m)), ("h2", &manifest(&["a"], "g2"))),
            ReloadPlan::Restart
        );
    }
}
