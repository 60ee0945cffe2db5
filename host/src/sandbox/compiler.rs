//! Compiling a module, with bounds a hostile one cannot break.
//!
//! Cranelift's memory and time grow with the shape of the code, not its size: a 150 KB component
//! of deeply nested blocks took 5.1 GB to compile, a 3 MB one was killed by the kernel at 21 GB.
//! So `kp run`, `kp dev` and `kp check` compile each module in a child process
//! (`kp __compile`, started through `sh -c 'ulimit -v ...'`) with an address-space limit and a
//! deadline ([`Compiler::Child`]). A child that runs out of either is killed, the module is
//! refused with the reason, and kp's own memory is untouched. The child writes the compiled
//! artifact to a private temporary folder; kp loads those bytes (its own child's output) and only
//! then may the artifact cache keep them, so a refused module leaves nothing in the cache.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Default address-space bound of a compiling child. Real components of every supported
/// language compile within a fraction of it (the 18 MB Python component the most).
pub const DEFAULT_COMPILE_MEMORY: u64 = 4 << 30;
/// Default deadline of a compiling child (JavaScript and Python take 5-50 s).
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(180);

/// Where modules are compiled.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// In this process, unbounded: for tests, benchmarks and embedders that trust their modules.
    #[default]
    InProcess,
    /// In a child process running `exe __compile`, bounded in memory and time.
    Child {
        exe: PathBuf,
        memory_bytes: u64,
        timeout: Duration,
    },
}

impl Compiler {
    /// The bounded child compiler, running this very executable. `KP_COMPILE_MEMORY_MIB` and
    /// `KP_COMPILE_TIMEOUT_S` change the bounds.
    pub fn child_of_this_process() -> Result<Self> {
        let number = |name: &str| -> Result<Option<u64>> {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse::<u64>()
                        .with_context(|| format!("{name} must be a whole number"))
                })
                .transpose()
        };
        Ok(Compiler::Child {
            exe: std::env::current_exe().context("finding kp's own executable")?,
            memory_bytes: number("KP_COMPILE_MEMORY_MIB")?
                .map_or(DEFAULT_COMPILE_MEMORY, |mib| mib << 20),
            timeout: number("KP_COMPILE_TIMEOUT_S")?
                .map_or(DEFAULT_COMPILE_TIMEOUT, Duration::from_secs),
        })
    }

    /// Compiles `bytes` for `engine`, saying so: a JavaScript or Python module takes 10-50 s the
    /// first time (the result is cached), and a silent wait that long looks like a hang. The
    /// caller's span names the module.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Component> {
        let started = Instant::now();
        tracing::info!(
            size_kib = bytes.len() / 1024,
            "compiling the module (once: the result is cached)"
        );
        let compiled = self.compile_quietly(engine, bytes);
        if compiled.is_ok() {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compiled the module"
            );
        }
        compiled
    }

    fn compile_quietly(&self, engine: &Engine, bytes: &[u8]) -> Result<Component> {
        match self {
            Compiler::InProcess => Ok(Component::new(engine, bytes)?),
            Compiler::Child {
                exe,
                memory_bytes,
                timeout,
            } => {
                let artifact = compile_in_child(exe, *memory_bytes, *timeout, bytes)?;
                super::cache::deserialize(engine, &artifact)
            }
        }
    }
}

/// How often a long compilation says it is still going.
const STILL_COMPILING_EVERY: Duration = Duration::from_secs(10);

/// Runs `exe __compile` with the module on stdin and returns the artifact it wrote.
fn compile_in_child(
    exe: &PathBuf,
    memory: u64,
    timeout: Duration,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    // A fresh folder with an unguessable name, only kp's user can enter; gone when dropped.
    let dir = tempfile::Builder::new()
        .prefix("kp-compile-")
        .tempdir()
        .context("creating a private folder for the compiler")?;
    let out = dir.path().join("artifact.cwasm");
    let result = (|| {
        let mut child = Command::new("sh")
            .arg("-c")
            // -v: address space in KiB; -f: largest file, in 512-byte blocks (1 GiB).
            .arg(r#"ulimit -v "$1" && ulimit -f 2097152 && exec "$2" __compile --out "$3""#)
            .arg("sh")
            .arg((memory / 1024).to_string())
            .arg(exe)
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the compiler process")?;
        let mut stdin = child.stdin.take().expect("piped");
        let module = bytes.to_vec();
        let feeder = std::thread::Builder::new()
            .name("kp-compile-feed".into())
            .spawn(move || {
                let _ = stdin.write_all(&module);
            })
            .context("starting the thread that feeds the compiler")?;
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let started = Instant::now();
        let mut next_word = started + STILL_COMPILING_EVERY;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= next_word {
                next_word += STILL_COMPILING_EVERY;
                tracing::info!(
                    elapsed_s = started.elapsed().as_secs(),
                    limit_s = timeout.as_secs(),
                    "still compiling the module"
                );
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                crate::stop::join_logged(feeder);
                bail!(
                    "compiling it took longer than {}s: refused (a module of pathological shape?)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        crate::stop::join_logged(feeder);
        let stderr = reader.join().unwrap_or_default(); // a panic here only loses the child's text
        if !status.success() {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let memory_gone = stderr.contains("memory allocation")
                || stderr.contains("out of memory")
                || stderr.contains("Cannot allocate");
            if memory_gone || (last.is_empty() && status.signal().is_some()) {
                bail!(
                    "compiling it needed more than {} MiB of memory ({status}): refused (a module \
                     of pathological shape?)",
                    memory >> 20
                );
            }
            if last.is_empty() {
                bail!("the compiler process failed ({status})");
            }
            bail!(
                "compiling it failed: {}",
                super::guest_text::sanitize(last, 1024)
            );
        }
        std::fs::read(&out).context("reading the compiled artifact")
    })();
    drop(dir);
    result
}

/// The child's side (`kp __compile --out FILE`): reads a module on stdin, writes its artifact.
pub fn compile_child_main(out: &std::path::Path) -> Result<()> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let engine = super::engine::build_engine(super::Allocation::OnDemand)?;
    let artifact = engine
        .precompile_component(&bytes)
        .map_err(anyhow::Error::from)?;
    std::fs::write(out, artifact).with_context(|| format!("writing {}", out.display()))
}
