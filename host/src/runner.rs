//! `kp run`: resolve everything up front (load every plugin in the folder, check its topics on
//! the cluster), run one [`crate::kafka::PluginConsumer`] per plugin, follow changes to the
//! folder (hot reload) until the shutdown future resolves, then drain them all.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::producer::Producer;

use crate::kafka::output::{DeliveryContext, OutputProducer};
use crate::kafka::settings::create_client;
use crate::kafka::{Halt, Health, RunOptions};
use crate::registry::PluginRegistry;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::status::{PluginState, StatusBoard};
use crate::watcher::PluginWatcher;

pub use crate::registry::module_files;

/// Everything `kp run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub plugins_dir: PathBuf,
    pub options: RunOptions,
    pub sandbox: SandboxConfig,
    /// Follow changes to the plugins folder (hot reload).
    pub watch: bool,
    /// Start with no plugin that can run and wait for one to appear (`kp dev`; needs `watch`).
    /// `kp run` refuses to start instead: a deployment with nothing to run is a mistake.
    pub wait_for_plugins: bool,
    /// Where to write the plugins' status as JSON after every change.
    pub status_file: Option<PathBuf>,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`, `/status` and `/resume` (off: `None`).
    pub http: Option<std::net::SocketAddr>,
}

/// How a run went, for the exit status.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Plugins that were refused at the end, with the reason.
    pub refused: Vec<String>,
    /// Partitions that halted on a message they could not finish.
    pub halts: Vec<Halt>,
}

/// Runs every plugin in `config.plugins_dir` until `shutdown` resolves, then drains and leaves.
pub async fn run(mut config: RunConfig, shutdown: impl Future<Output = ()>) -> Result<RunReport> {
    // Lag and committed offsets come from librdkafka's statistics, only read when served.
    config.options.kafka.partition_statistics = config.http.is_some();
    config.options.kafka.validate()?;
    let drain_timeout = config.options.drain_timeout;
    // Bound before anything starts: a port in use is a clear error at once.
    let listener = match config.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--http {addr}: cannot listen"))?,
        ),
        None => None,
    };
    let ops = Arc::new(crate::ops::http::Ops {
        plugins_dir: config.plugins_dir.clone(),
        host: std::sync::OnceLock::new(),
    });
    crate::ops::trace::init();
    // Served from the start: probes get an answer ("starting") while the plugins load.
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(
                "serving /metrics, /healthz, /readyz, /status and /resume on http://{addr}"
            );
        }
        tokio::spawn(crate::ops::http::serve(listener, ops.clone(), async {
            let _ = http_stopped.await;
        }))
    });
    let host = tokio::task::spawn_blocking(move || RunningHost::start(config)).await??;
    let _ = ops.host.set(crate::ops::http::HostParts {
        status: host.status.clone(),
        health: host.health.clone(),
        views: host.views.clone(),
        producer: host.producer.clone(),
        executor: host.executor.clone(),
    });
    shutdown.await;
    tracing::info!("shutting down: draining partitions (at most {drain_timeout:?})");
    let stop = tokio::task::spawn_blocking(move || host.stop());
    let report = stop_bounded(stop, drain_timeout).await;
    // The listener goes last, and without waiting on a client that keeps a connection open.
    let _ = stop_http.send(());
    if let Some(server) = server
        && tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .is_err()
    {
        tracing::debug!("the HTTP listener did not close within 2 s: left behind");
    }
    tokio::task::spawn_blocking(crate::ops::trace::flush)
        .await
        .ok();
    report
}

async fn stop_bounded(
    stop: tokio::task::JoinHandle<Result<RunReport>>,
    drain_timeout: Duration,
) -> Result<RunReport> {
    // Draining is bounded inside; this outer bound covers librdkafka's own close.
    let bound = drain_timeout + Duration::from_secs(30);
    match tokio::time::timeout(bound, stop).await {
        Ok(report) => report?,
        Err(_) => bail!("shutdown did not finish within {bound:?}"),
    }
}

/// What is running between start and stop.
struct RunningHost {
    registry: Arc<Mutex<PluginRegistry>>,
    /// What the running plugins show (for the operator's endpoints).
    views: crate::registry::PluginViews,
    /// The workers (for `/healthz`).
    executor: Arc<crate::kafka::executor::Executor>,
    watcher: Option<PluginWatcher>,
    producer: Arc<OutputProducer>,
    health: Arc<Health>,
    status: StatusBoard,
}

impl RunningHost {
    fn start(config: RunConfig) -> Result<Self> {
        let sandbox = Sandbox::new(config.sandbox.clone())?;
        let producer: OutputProducer = create_client(
            &config.options.kafka.producer_config(),
            DeliveryContext,
            "creating the producer",
        )?;
        let producer = Arc::new(producer);
        let status = StatusBoard::new(config.status_file.clone());
        let health = Arc::new(Health::reporting_to(status.clone()));
        let mut registry = PluginRegistry::new(
            config.plugins_dir.clone(),
            sandbox,
            producer.clone(),
            health.clone(),
            config.options.clone(),
            status.clone(),
        )?;
        registry.sync_all()?;
        if registry.running().is_empty() && config.wait_for_plugins && config.watch {
            tracing::info!(
                dir = %config.plugins_dir.display(),
                "no plugin runs yet: waiting for one (NAME.wasm with its manifest NAME.toml)"
            );
        } else if registry.running().is_empty() {
            let refused = refusals(&status);
            bail!(
                "no plugin can run from {} ({} refused{})",
                config.plugins_dir.display(),
                refused.len(),
                if refused.is_empty() {
                    "; the folder holds no NAME.wasm".to_string()
                } else {
                    format!(": {}", refused.join("; "))
                }
            );
        }
        let views = registry.views();
        let executor = registry.executor();
        let registry = Arc::new(Mutex::new(registry));
        let watcher = if config.watch {
            Some(PluginWatcher::start(&config.plugins_dir, registry.clone())?)
        } else {
            None
        };
        Ok(RunningHost {
            registry,
            views,
            executor,
            watcher,
            producer,
            health,
            status,
        })
    }

    fn stop(self) -> Result<RunReport> {
        drop(self.watcher); // stops and joins the watcher: no sync runs from here on
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_all();
        if let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!("producer flush at exit: {e}");
        }
        Ok(RunReport {
            refused: refusals(&self.status),
            halts: self.health.halts(),
        })
    }
}

/// The reasons of every plugin that is refused, or runs an older version because its newest was.
fn refusals(status: &StatusBoard) -> Vec<String> {
    status
        .all()
        .into_iter()
        .filter(|(_, s)| s.state == PluginState::Refused || s.error.is_some())
        .filter_map(|(_, s)| s.error)
        .collect()
}
