//! The `kp` command: parses the command line, sets up logging, and calls into the library.

#![forbid(unsafe_code)]

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use std::time::Duration;

use kp::config::{FileConfig, property_strings};
use kp::guest::scaffold::{Language, NewProject};
use kp::kafka::settings::{is_reference, looks_secret, parse_property};
use kp::kafka::{CommitMode, GroupProtocol, KafkaSettings, RunOptions};
use kp::runner::{RunConfig, RunReport};
use kp::sandbox::compiler::Compiler;
use kp::sandbox::{Allocation, ArtifactCache, Sandbox, SandboxConfig};

/// Runs sandboxed WebAssembly message handlers on Kafka.
#[derive(Parser)]
#[command(name = "kp", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or as JSON objects (one per line, with the span fields).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "KP_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Consume each plugin's input topics, run its handler, produce its outputs, commit.
    Run {
        #[command(flatten)]
        engine: EngineArgs,
        /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
        #[arg(long, env = "KP_BROKERS")]
        brokers: Option<String>,
    },
    /// Run the plugins against an embedded Kafka broker (librdkafka's mock cluster).
    Dev {
        #[command(flatten)]
        engine: EngineArgs,
        /// Feed sample records to every input topic, print the outputs, and exit.
        #[arg(long)]
        demo: bool,
    },
    /// Check a plugin module (and its manifest) and describe it; non-zero exit on bad input.
    Check {
        /// The module, NAME.wasm (its manifest NAME.toml is read if present).
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a plugin's handler over JSON-lines messages without Kafka; print results as JSON lines.
    Replay {
        /// The module, NAME.wasm (its manifest NAME.toml is read if present).
        #[arg(long)]
        plugin: PathBuf,
        /// JSON-lines input, one message per line; `-` reads standard input.
        #[arg(long, default_value = "-")]
        input: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Create a handler project that builds as it is: NAME/ with its source, manifest and build.sh.
    New {
        /// The plugin's name (lowercase letters, digits, '-'): NAME.wasm, NAME.toml, default topics.
        name: String,
        /// The handler's language.
        #[arg(long, value_enum)]
        lang: Language,
        /// Where to create the project [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// kp's guest-sdk folder, for Rust projects [default: the one kp was built from].
        #[arg(long, env = "KP_SDK_DIR")]
        sdk: Option<PathBuf>,
    },
    /// (internal) Compile a module read from stdin into OUT: kp runs this as a bounded child.
    #[command(name = "__compile", hide = true)]
    CompileChild {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print kp's version, wasmtime's and librdkafka's, and what this build can do (TLS, SASL, codecs).
    Version,
    /// Turn a core module built for WASI preview 1 (e.g. C with wasi-libc) into a kp component.
    Componentize {
        /// The core module (.wasm) exporting kp's handler functions.
        core_module: PathBuf,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args, Clone)]
struct EngineArgs {
    /// Folder of plugins: NAME.wasm with its manifest NAME.toml.
    #[arg(long, env = "KP_PLUGINS")]
    plugins: Option<PathBuf>,
    /// A config file (see the README); command-line flags override it.
    #[arg(long, env = "KP_CONFIG")]
    config: Option<PathBuf>,
    /// A librdkafka property for every client, as key=value (repeatable), like kcat's -X. A value
    /// written ${env:NAME} or ${file:PATH} is read from there (use it for passwords).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Let the producer run without idempotence (enable.idempotence=false): a retried send may
    /// then write an output twice or out of order.
    #[arg(long)]
    accept_duplicates: bool,
    /// Consumer group protocol [default: classic].
    #[arg(long, value_enum)]
    group_protocol: Option<GroupProtocol>,
    /// When offsets are committed [default: eager].
    #[arg(long, value_enum)]
    commit_mode: Option<CommitMode>,
    /// Bound on draining partitions at a rebalance or shutdown, in milliseconds [default: 30000].
    #[arg(long)]
    drain_timeout_ms: Option<u64>,
    /// Messages librdkafka keeps queued per partition before it stops fetching it [default: 10000].
    #[arg(long)]
    queue_depth: Option<usize>,
    /// At most this many messages per partition handled but not yet committed: what a crash can
    /// make kp handle again [default: 5000].
    #[arg(long)]
    max_uncommitted: Option<u64>,
    /// Worker threads that run the partitions of every plugin [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Guest instances the engine holds room for, over all plugins: idle instances beyond it
    /// are dropped, the longest unused first. At least twice --workers, plus 2 [default: 256].
    #[arg(long)]
    instance_pool: Option<u32>,
    /// A name for this kp that stays the same across restarts (a pod or host name): makes each
    /// plugin's consumer a static group member, so a restart within the session timeout gets
    /// its partitions back at once. Must differ between kp processes sharing a plugin.
    #[arg(long, env = "KP_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Do not follow changes to the plugins folder (no hot reload).
    #[arg(long)]
    no_watch: bool,
    /// Write the plugins' status (state, version, last error) to this JSON file on every change.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Serve /metrics, /healthz, /readyz, /status and POST /resume on this address, e.g.
    /// 127.0.0.1:9464 [default: off].
    #[arg(long, env = "KP_HTTP")]
    http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    cache: CacheArgs,
}

impl EngineArgs {
    /// Resolves file + flags into a run configuration (brokers left empty for `dev`).
    fn resolve(self, brokers: Option<String>) -> Result<RunConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut common = property_strings(&file.kafka)?;
        for p in &self.properties {
            let (k, v) = parse_property(p)?;
            if looks_secret(&k) && !is_reference(&v) {
                tracing::warn!(
                    "-X {k} is given on the command line, where other users can see it (ps, \
                     /proc): write -X {k}=${{file:PATH}} or -X {k}=${{env:NAME}} instead"
                );
            }
            common.insert(k, v);
        }
        let plugins = self
            .plugins
            .or(file.plugins)
            .context("no plugins folder given (use --plugins DIR)")?;
        let mut kafka = KafkaSettings {
            brokers: brokers.or(file.brokers).unwrap_or_default(),
            group_protocol: self
                .group_protocol
                .or(file.group_protocol.map(Into::into))
                .unwrap_or_default(),
            common,
            consumer: property_strings(&file.kafka_consumer)?,
            producer: property_strings(&file.kafka_producer)?,
            accept_duplicates: self.accept_duplicates || file.accept_duplicates.unwrap_or(false),
            instance_id: self.instance_id.or(file.instance_id),
            // Set by the runner when it serves /metrics and /status.
            partition_statistics: false,
        };
        kafka.resolve_references()?;
        let queue_depth = self
            .queue_depth
            .or(file.queue_depth)
            .unwrap_or(kp::kafka::DEFAULT_QUEUE_DEPTH);
        anyhow::ensure!(queue_depth >= 2, "--queue-depth must be at least 2");
        let mut policy = kp::policy::Policy {
            tenancy: file.tenancy.unwrap_or_default(),
            plugins: file.policy,
        };
        policy.resolve_references()?;
        let max_uncommitted = self
            .max_uncommitted
            .or(file.max_uncommitted)
            .unwrap_or(kp::kafka::DEFAULT_MAX_UNCOMMITTED);
        anyhow::ensure!(max_uncommitted >= 1, "--max-uncommitted must be at least 1");
        let workers = self
            .workers
            .or(file.workers)
            .unwrap_or_else(kp::kafka::executor::default_workers);
        let instance_pool = self
            .instance_pool
            .or(file.instance_pool)
            .unwrap_or(kp::sandbox::DEFAULT_INSTANCE_POOL);
        kp::sandbox::check_capacity(workers, instance_pool)?;
        Ok(RunConfig {
            plugins_dir: plugins,
            options: RunOptions {
                kafka,
                commit_mode: self
                    .commit_mode
                    .or(file.commit_mode.map(Into::into))
                    .unwrap_or_default(),
                drain_timeout: self
                    .drain_timeout_ms
                    .or(file.drain_timeout_ms)
                    .map(Duration::from_millis)
                    .unwrap_or(kp::kafka::DEFAULT_DRAIN_TIMEOUT),
                queue_depth,
                max_uncommitted,
                policy,
                workers,
            },
            watch: !self.no_watch,
            status_file: self.status_file,
            http: self.http.or(file.http),
            sandbox: SandboxConfig {
                cache_dir: self.cache.dir(),
                allocation: Allocation::Pooling {
                    max_instances: instance_pool,
                },
                compiler: Compiler::child_of_this_process()?,
            },
        })
    }
}

#[derive(Args, Clone)]
struct CacheArgs {
    /// Folder of the compiled-artifact cache [default: $XDG_CACHE_HOME/kp or ~/.cache/kp].
    #[arg(long, env = "KP_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every module afresh; neither read nor write the cache.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(ArtifactCache::default_dir)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => lines.json().with_current_span(true).init(),
    }
}

fn one_shot_sandbox(cache: &CacheArgs) -> Result<Sandbox> {
    Sandbox::new(SandboxConfig {
        cache_dir: cache.dir(),
        allocation: Allocation::OnDemand,
        compiler: Compiler::child_of_this_process()?,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// Exit status 3: some partition halted on a message it could not finish.
const EXIT_HALTED: u8 = 3;

fn finish(report: RunReport) -> ExitCode {
    for refused in &report.refused {
        eprintln!("kp: refused: {refused}");
    }
    if report.halts.is_empty() {
        return ExitCode::SUCCESS;
    }
    for h in &report.halts {
        eprintln!(
            "kp: HALTED {}/{} of plugin {} at offset {} (not committed): {}",
            h.topic, h.partition, h.plugin, h.offset, h.reason
        );
    }
    ExitCode::from(EXIT_HALTED)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { engine, brokers } => {
            let config = engine.resolve(brokers)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(kp::runner::run(config, interrupted()));
            // `run` bounds shutdown; a thread still stuck past that bound must not hold the
            // process (dropping a runtime would wait for it).
            runtime.shutdown_timeout(Duration::from_secs(1));
            let report = report?;
            Ok(finish(report))
        }
        Command::Dev { engine, demo } => {
            let config = engine.resolve(Some("embedded".into()))?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(kp::dev::dev(config, demo, interrupted()));
            runtime.shutdown_timeout(Duration::from_secs(1));
            let report = report?;
            Ok(finish(report))
        }
        Command::Check { file, cache } => {
            let sandbox = one_shot_sandbox(&cache)?;
            let report = kp::check::check(&sandbox, &file)?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let build = kp::guest::scaffold::create(&NewProject {
                name: &name,
                language: lang,
                dir: &dir,
                sdk: sdk.as_deref(),
            })?;
            println!("created {}; build it with {build}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::CompileChild { out } => {
            kp::sandbox::compiler::compile_child_main(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            print!("{}", kp::version::BuildInfo::current());
            Ok(ExitCode::SUCCESS)
        }
        Command::Componentize {
            core_module,
            output,
        } => {
            let core = std::fs::read(&core_module)
                .with_context(|| format!("reading {}", core_module.display()))?;
            let component = kp::guest::componentize::componentize(&core)
                .with_context(|| format!("componentizing {}", core_module.display()))?;
            // Whole or not at all: a kp may be watching the output's folder.
            kp::files::write_whole(&output, &component)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {} ({} bytes)", output.display(), component.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            plugin,
            input,
            cache,
        } => {
            let sandbox = one_shot_sandbox(&cache)?;
            let loaded = sandbox.load(&plugin)?;
            let stdout = std::io::stdout().lock();
            let summary = if input == "-" {
                kp::replay::replay(loaded, std::io::stdin().lock(), stdout)?
            } else {
                let file = open(Path::new(&input))?;
                kp::replay::replay(loaded, BufReader::new(file), stdout)?
            };
            tracing::info!(
                messages = summary.messages,
                outputs = summary.outputs,
                failures = summary.failures,
                "replay finished"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))
}
