//! The compiled-artifact cache: a compiled component is kept on disk under its content hash, so a
//! restart (or a reload of bytes seen before) loads it in milliseconds instead of compiling again.
//!
//! Key: SHA-256 of the module bytes + a hash of everything in the engine that affects the
//! compiled code (wasmtime version, target, compiler settings). Files are written to a temporary
//! name and renamed, so a reader never sees a partial artifact.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components live.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Hash of the engine settings that compiled code depends on, part of every file name.
    engine_key: String,
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

    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache {
            dir: dir.into(),
            engine_key: format!("{:016x}", hasher.finish()),
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
    ) -> Result<(Component, Provenance)> {
        let path = self.path_for(content_hash);
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, Provenance::Cached)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = self.store(&path, &artifact) {
                    tracing::warn!(dir = %self.dir.display(), "could not write the compiled-artifact cache: {e:#}");
                }
            }
            Err(e) => tracing::warn!("could not serialize a compiled component: {e:#}"),
        }
        Ok((component, Provenance::Compiled))
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        crate::files::write_whole(path, artifact)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Loads a compiled artifact from the cache.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Component> {
    // SAFETY: wasmtime trusts precompiled artifacts (they are native code). This file lives in
    // kp's own cache folder, was written by `ArtifactCache::store` from `precompile_component`
    // (whole, through a rename), and its name binds it to the module's SHA-256 and this
    // engine's compatibility hash; wasmtime also checks its header against the engine.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("loading {}", path.display()))
}
