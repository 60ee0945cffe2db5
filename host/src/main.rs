//! The `kp` command: parses the command line, sets up logging, and calls into the library.

#![forbid(unsafe_code)]

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use std::time::Duration;

use kp::config::{CacheArgs, EngineArgs};
use kp::guest::scaffold::{Language, NewProject};
use kp::runner::RunReport;
use kp::sandbox::compiler::Compiler;
use kp::sandbox::{Allocation, Sandbox, SandboxConfig};

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
        /// Print every record the plugins produce (JSON lines) until stopped.
        #[arg(long)]
        tail: bool,
        /// Where the embedded broker answers (port 0 picks a free one).
        #[arg(long, default_value = kp::dev::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
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
    /// Run a handler over test messages and compare its results with the expected ones (a field
    /// left out of an expected line matches anything); non-zero exit on a difference.
    Test {
        /// The module, NAME.wasm (its manifest NAME.toml is read if present).
        plugin: PathBuf,
        /// Input messages, JSON lines (`kp replay`'s input format).
        #[arg(long, default_value = "test/input.jsonl")]
        input: PathBuf,
        /// Expected results, one JSON line per input message (`kp replay`'s output format).
        #[arg(long, default_value = "test/expected.jsonl")]
        expect: PathBuf,
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
        Command::Dev {
            engine,
            demo,
            tail,
            listen,
        } => {
            let config = engine.resolve(Some("embedded".into()))?;
            let options = kp::dev::DevOptions { demo, tail, listen };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(kp::dev::dev(config, options, interrupted()));
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
        Command::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let build = kp::guest::scaffold::create(&NewProject {
                name: &name,
                language: lang,
                dir: &dir,
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
        Command::Test {
            plugin,
            input,
            expect,
            cache,
        } => {
            let sandbox = one_shot_sandbox(&cache)?;
            let loaded = sandbox.load(&plugin)?;
            let expected = std::fs::read_to_string(&expect)
                .with_context(|| format!("reading the expected results {}", expect.display()))?;
            let report = kp::testing::run(
                loaded,
                BufReader::new(open(&input)?),
                &expected,
                &expect.display().to_string(),
            )
            .with_context(|| format!("running {} over {}", plugin.display(), input.display()))?;
            if report.passed() {
                println!(
                    "kp test: {}: {} case(s) passed",
                    plugin.display(),
                    report.cases
                );
                return Ok(ExitCode::SUCCESS);
            }
            for mismatch in &report.mismatches {
                println!("{mismatch}");
            }
            let failed: std::collections::BTreeSet<usize> =
                report.mismatches.iter().map(|m| m.case).collect();
            println!(
                "kp test: {}: FAILED: {} of {} case(s) differ from {} (the whole results: kp replay --plugin {} --input {})",
                plugin.display(),
                failed.len(),
                report.cases.max(failed.iter().copied().max().unwrap_or(0)),
                expect.display(),
                plugin.display(),
                input.display()
            );
            Ok(ExitCode::FAILURE)
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
