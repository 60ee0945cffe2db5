//! The `kp` command: parses the command line, sets up logging, and calls into the library.

#![forbid(unsafe_code)]

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use kp::sandbox::{Allocation, ArtifactCache, Sandbox, SandboxConfig};

/// Runs sandboxed WebAssembly message handlers on Kafka.
#[derive(Parser)]
#[command(name = "kp", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn one_shot_sandbox(cache: &CacheArgs) -> Result<Sandbox> {
    Sandbox::new(SandboxConfig {
        cache_dir: cache.dir(),
        allocation: Allocation::OnDemand,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { file, cache } => {
            let sandbox = one_shot_sandbox(&cache)?;
            let report = kp::check::check(&sandbox, &file)?;
            print!("{report}");
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
                kp::replay::replay(&sandbox, loaded, std::io::stdin().lock(), stdout)?
            } else {
                let file = open(Path::new(&input))?;
                kp::replay::replay(&sandbox, loaded, BufReader::new(file), stdout)?
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
