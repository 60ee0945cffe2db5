//! `kp run`: resolve everything up front (load every plugin in the folder, check its topics on
//! the cluster), then run one [`PluginConsumer`] per plugin until the shutdown future resolves,
//! then drain them all within the drain timeout.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::kafka::output::{DeliveryContext, OutputProducer};
use crate::kafka::{Halt, Health, PluginConsumer, RunOptions};
use crate::sandbox::{LoadedPlugin, Sandbox, SandboxConfig};

/// Everything `kp run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub plugins_dir: PathBuf,
    pub options: RunOptions,
    pub sandbox: SandboxConfig,
}

/// How a run went, for the exit status.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Plugins that ran.
    pub running: Vec<String>,
    /// Modules that were refused, with the reason.
    pub refused: Vec<String>,
    /// Partitions that halted on a message they could not finish.
    pub halts: Vec<Halt>,
}

/// How long to wait for the cluster's metadata when checking topics.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs every plugin in `config.plugins_dir` until `shutdown` resolves, then drains and leaves.
pub async fn run(config: RunConfig, shutdown: impl Future<Output = ()>) -> Result<RunReport> {
    config.options.kafka.validate()?;
    let drain_timeout = config.options.drain_timeout;
    let host = tokio::task::spawn_blocking(move || RunningHost::start(config)).await??;
    shutdown.await;
    tracing::info!("shutting down: draining partitions (at most {drain_timeout:?})");
    let stop = tokio::task::spawn_blocking(move || host.stop());
    // Draining is bounded inside; this outer bound covers librdkafka's own close.
    match tokio::time::timeout(drain_timeout + Duration::from_secs(30), stop).await {
        Ok(report) => report?,
        Err(_) => bail!(
            "shutdown did not finish within {:?}",
            drain_timeout + Duration::from_secs(30)
        ),
    }
}

/// The module files of a plugins folder: `*.wasm`, sorted, skipping hidden (temporary) files.
pub fn module_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading the plugins folder {}", dir.display()))?
    {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() && !hidden {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What is running between start and stop.
struct RunningHost {
    /// Kept alive while guests run: its ticker drives their deadlines.
    _sandbox: Sandbox,
    producer: Arc<OutputProducer>,
    consumers: Vec<PluginConsumer>,
    health: Arc<Health>,
    report: RunReport,
}

impl RunningHost {
    fn start(config: RunConfig) -> Result<Self> {
        let sandbox = Sandbox::new(config.sandbox.clone())?;
        let kafka = &config.options.kafka;
        let mut report = RunReport::default();
        let mut plugins: Vec<Arc<LoadedPlugin>> = Vec::new();
        for path in module_files(&config.plugins_dir)? {
            match sandbox.load(&path) {
                Ok(plugin) if plugin.manifest.input_topics.is_empty() => {
                    let why = format!(
                        "{}: not started: {} names no input-topics (a module needs a manifest NAME.toml with input-topics to run)",
                        path.display(),
                        crate::manifest::Manifest::path_for(&path).display()
                    );
                    tracing::error!("{why}");
                    report.refused.push(why);
                }
                Ok(plugin) => plugins.push(plugin),
                Err(e) => {
                    tracing::error!("refused: {e}");
                    report.refused.push(e.to_string());
                }
            }
        }

        let metadata: BaseConsumer = kafka
            .metadata_config()
            .create()
            .context("creating the metadata client")?;
        plugins.retain(|plugin| match missing_topics(&metadata, plugin) {
            Ok(missing) if missing.is_empty() => true,
            Ok(missing) => {
                let why = format!(
                    "plugin {}: not started: topic(s) {} do not exist on the cluster (create them, or fix {})",
                    plugin.name(),
                    missing.join(", "),
                    plugin.manifest.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                );
                tracing::error!("{why}");
                report.refused.push(why);
                false
            }
            Err(e) => {
                report.refused.push(format!("plugin {}: {e:#}", plugin.name()));
                false
            }
        });
        if plugins.is_empty() {
            bail!(
                "no plugin can run from {} ({} refused{})",
                config.plugins_dir.display(),
                report.refused.len(),
                if report.refused.is_empty() {
                    "; the folder holds no NAME.wasm".to_string()
                } else {
                    format!(": {}", report.refused.join("; "))
                }
            );
        }

        let producer: OutputProducer = kafka
            .producer_config()
            .create_with_context(DeliveryContext)
            .context("creating the producer")?;
        let producer = Arc::new(producer);
        let health = Arc::new(Health::default());
        let mut consumers = Vec::new();
        for plugin in plugins {
            let name = plugin.name().to_string();
            match PluginConsumer::start(
                plugin,
                producer.clone(),
                health.clone(),
                config.options.clone(),
            ) {
                Ok(c) => {
                    consumers.push(c);
                    report.running.push(name);
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    report.refused.push(format!("{e:#}"));
                }
            }
        }
        Ok(RunningHost {
            _sandbox: sandbox,
            producer,
            consumers,
            health,
            report,
        })
    }

    fn stop(self) -> Result<RunReport> {
        for c in &self.consumers {
            c.request_stop();
        }
        for c in self.consumers {
            c.join();
        }
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!("producer flush at exit: {e}");
        }
        let mut report = self.report;
        report.halts = self.health.halts();
        Ok(report)
    }
}

/// Input and output topics of `plugin` that the cluster does not have.
fn missing_topics(metadata: &BaseConsumer, plugin: &LoadedPlugin) -> Result<Vec<String>> {
    let manifest = &plugin.manifest;
    let mut missing = Vec::new();
    for topic in manifest
        .input_topics
        .iter()
        .chain(manifest.output_topic.iter())
    {
        let md = metadata
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .with_context(|| {
                format!("fetching metadata of topic {topic:?} (are the brokers reachable?)")
            })?;
        let exists = md.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none_or(|e| {
                    RDKafkaErrorCode::from(e) != RDKafkaErrorCode::UnknownTopicOrPartition
                })
                && !t.partitions().is_empty()
        });
        if !exists {
            missing.push(topic.clone());
        }
    }
    Ok(missing)
}
