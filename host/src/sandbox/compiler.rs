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

    /// Compiles `bytes` for `engine`.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Component> {
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
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&module);
        });
        let mut stderr = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                let _ = feeder.join();
                bail!(
                    "compiling it took longer than {}s: refused (a module of pathological shape?)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = feeder.join();
        let stderr = reader.join().unwrap_or_default();
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
