//! The compiled-artifact cache: a compiled component is kept on disk under its content hash, so a
//! restart (or a reload of bytes seen before) loads it in milliseconds instead of compiling again.
//!
//! Key: SHA-256 of the module bytes + a hash of everything in the engine that affects the
//! compiled code (wasmtime version, target, compiler settings). Files are written to a temporary
//! name and renamed, so a reader never sees a partial artifact.
//!
//! An artifact is native code that kp runs without further checks, so whoever can write the
//! cache can run code in kp. Hence:
//! - the cache folder is created private to kp's user (0700); a cache folder or artifact that
//!   another user owns or that group or others may write is not used (compiled afresh instead,
//!   with a warning);
//! - every artifact carries a tag, HMAC-SHA-256 under a key kept *outside* the cache
//!   (`$XDG_CONFIG_HOME/kp/cache-key`, or `KP_CACHE_KEY_FILE`; made at first use, 0600) over its
//!   name (module hash and engine key) and its bytes. An artifact whose tag does not verify is
//!   not loaded: a planted or swapped file is compiled over, not run. The bytes that were
//!   checked are the bytes loaded (no second read of the file).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components live.
#[derive(Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Hash of the engine settings that compiled code depends on, part of every file name.
    engine_key: String,
    /// The key artifacts are tagged with; `None` when it cannot be had (then the cache is
    /// neither read nor written, and everything is compiled afresh).
    tag_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .field("engine_key", &self.engine_key)
            .finish_non_exhaustive()
    }
}

/// How a component got into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Compiled now (and stored in the cache if there is one).
    Compiled,
    /// Loaded from a cached artifact.
    Cached,
}

impl ArtifactCache {
    /// The default cache folder: `$XDG_CACHE_HOME/kp` or `~/.cache/kp`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("kp"))
    }

    /// Where the tag key lives: `KP_CACHE_KEY_FILE`, or `$XDG_CONFIG_HOME/kp/cache-key`, or
    /// `~/.config/kp/cache-key`.
    pub fn default_key_file() -> Option<PathBuf> {
        std::env::var_os("KP_CACHE_KEY_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                    .map(|d| d.join("kp").join("cache-key"))
            })
    }

    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let tag_key = match Self::default_key_file().map(|f| tag_key(&f)) {
            Some(Ok(key)) => Some(key),
            Some(Err(e)) => {
                tracing::warn!("the compiled-artifact cache is not used: {e:#}");
                None
            }
            None => None,
        };
        ArtifactCache {
            dir: dir.into(),
            engine_key: format!("{:016x}", hasher.finish()),
            tag_key,
        }
    }

    fn path_for(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// Loads the component for `bytes` (whose SHA-256 is `content_hash`) from the cache, or
    /// compiles it and stores the artifact. A cache that cannot be written is logged, not fatal.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        content_hash: &str,
        bytes: &[u8],
        compiler: &super::compiler::Compiler,
    ) -> Result<(Component, Provenance)> {
        let Some(key) = &self.tag_key else {
            return Ok((compiler.compile(engine, bytes)?, Provenance::Compiled));
        };
        let path = self.path_for(content_hash);
        if path.exists() && !tag_path(&path).exists() {
            tracing::info!(path = %path.display(), "cached artifact without a tag (an older kp's): compiling afresh");
        } else if path.exists() {
            match self.verified(key, &path) {
                Ok(artifact) => match deserialize(engine, &artifact) {
                    Ok(component) => return Ok((component, Provenance::Cached)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}")
                    }
                },
                Err(e) => {
                    tracing::warn!(path = %path.display(), "NOT loading a cached artifact: {e:#}; compiling afresh")
                }
            }
        }
        let component = compiler.compile(engine, bytes)?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = self.store(key, &path, &artifact) {
                    tracing::warn!(dir = %self.dir.display(), "could not write the compiled-artifact cache: {e:#}");
                }
            }
            Err(e) => tracing::warn!("could not serialize a compiled component: {e:#}"),
        }
        Ok((component, Provenance::Compiled))
    }

    /// The artifact at `path`, if the folder and the file are kp's own and its tag verifies.
    fn verified(&self, key: &[u8; 32], path: &Path) -> Result<Vec<u8>> {
        private(&self.dir, "the cache folder")?;
        private(path, "the artifact")?;
        let artifact =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let tag = std::fs::read(tag_path(path)).context("its tag is missing")?;
        tagger(key, path, &artifact)
            .verify_slice(&tag)
            .map_err(|_| {
                anyhow::anyhow!("its tag does not match (not written by this kp, or changed since)")
            })?;
        Ok(artifact)
    }

    fn store(&self, key: &[u8; 32], path: &Path, artifact: &[u8]) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        private(&self.dir, "the cache folder")?;
        let tag = tagger(key, path, artifact).finalize().into_bytes();
        crate::files::write_whole(&tag_path(path), &tag)
            .with_context(|| format!("writing the tag of {}", path.display()))?;
        crate::files::write_whole(path, artifact)
            .with_context(|| format!("writing {}", path.display()))?;
        // Whatever the umask, an artifact is kp's user's alone (others writing it would make
        // `private` refuse it on the next load).
        for file in [path, &tag_path(path)] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private", file.display()))?;
        }
        Ok(())
    }
}

/// The HMAC of an artifact stored under `path`: over its file name (the module's hash and the
/// engine's key), then its bytes. Finalized when storing, verified (in constant time) when loading.
fn tagger(key: &[u8; 32], path: &Path, artifact: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(path.file_name().unwrap_or_default().as_encoded_bytes());
    mac.update(&[0]);
    mac.update(artifact);
    mac
}

fn tag_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("cwasm.tag")
}

/// Refuses `path` unless kp's user owns it and neither group nor others may write it.
fn private(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(meta.uid());
    if meta.uid() != me {
        bail!(
            "{what} {} belongs to another user (uid {})",
            path.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "{what} {} may be written by group or others (mode {:o}): chmod go-w it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(())
}

/// The tag key in `file`, made (32 random bytes, 0600) if there is none yet.
fn tag_key(file: &Path) -> Result<[u8; 32]> {
    if !file.exists() {
        if let Some(dir) = file.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut key = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut key))
            .context("reading /dev/urandom")?;
        // Written whole under a private name, then linked into place: another kp starting at
        // the same moment either wins the link (and we read its key) or loses it.
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &key))
            .and_then(|()| std::fs::hard_link(&tmp, file));
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => return Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {} // another kp made it
            Err(e) => {
                return Err(e).with_context(|| format!("writing the cache key {}", file.display()));
            }
        }
    }
    let meta = std::fs::metadata(file)?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the cache key {} may be read or written by group or others: chmod 600 it",
            file.display()
        );
    }
    private(file, "the cache key")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the cache key {} is not 32 bytes", file.display()))
}

/// Loads a compiled artifact whose tag was verified.
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component> {
    // SAFETY: wasmtime trusts precompiled artifacts (they are native code). Callers pass only
    // bytes kp itself produced: either read once from kp's own, private cache folder with their
    // HMAC tag (under a key kept outside the cache) verified over the artifact's name (module
    // SHA-256 and engine compatibility hash) and these very bytes, or written a moment ago by
    // kp's own compiling child into a folder private to kp's user (`super::compiler`).
    // wasmtime also checks the header against the engine.
    unsafe { Component::deserialize(engine, artifact) }
        .map_err(anyhow::Error::from)
        .context("loading a cached artifact")
}
