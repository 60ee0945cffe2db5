//! Loading a plugin: read the module and its manifest, compile it (or load it from the cache),
//! check that it is a component of the `handler-world` whose imports kp provides, and prove that
//! an instance starts (memory within the cap, `init` succeeds). The result, a [`LoadedPlugin`],
//! is immutable and shared by every partition worker that runs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Sandbox;
use super::bindings::{HANDLER_EXPORT, HandlerWorldPre, WORLD};
use super::cache::Provenance;
use super::instance::PluginInstance;
use super::state::{GuestIdentity, GuestState};
use crate::manifest::Manifest;

/// The error under a refusal (wasmtime's, the manifest parser's, the guest's `init`).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a module was refused. Each carries the file it is about; where an error of another layer
/// caused it, that error is kept as the [`std::error::Error::source`], and [`LoadError::report`]
/// (or anyhow's `{:#}`) gives the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: refused by the operator's policy: the plugin {reason}")]
    NotAllowed { path: PathBuf, reason: String },
    #[error("{path}: bad manifest")]
    Manifest { path: PathBuf, source: Cause },
    #[error("{path}: not a WebAssembly file ({reason})")]
    NotWasm { path: PathBuf, reason: String },
    #[error(
        "{path}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 \
         (or turn it into a component with `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("{path}: not a valid component")]
    Invalid { path: PathBuf, source: Cause },
    #[error("{path}: imports something kp does not provide")]
    UnsupportedImport { path: PathBuf, source: Cause },
    #[error("{path}: does not implement the world {WORLD}: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
    #[error("{path}: an instance does not start")]
    StartFailed { path: PathBuf, source: Cause },
}

impl LoadError {
    /// The refusal with every cause under it, "what: why: why deeper", for the log and status.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

/// What a module file looks like from its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Component,
    CoreModule,
}

fn shape(bytes: &[u8]) -> Result<Shape, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "it does not start with the wasm magic bytes; it starts with {}",
            head.join(" ")
        ));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok(Shape::CoreModule),
        [_, _, 1, 0] => Ok(Shape::Component),
        _ => Err(format!("unknown wasm version/layer {:02x?}", &bytes[4..8])),
    }
}

/// The most a plugin's instantiation and `init` may take when it is loaded (its own `timeout-ms`
/// if that is less). Loads happen one at a time, so this bounds how long one plugin can hold up
/// the reload of another.
pub const LOAD_INIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A compiled, checked plugin version, ready to instantiate.
pub struct LoadedPlugin {
    /// Its manifest (defaults if the module has none).
    pub manifest: Arc<Manifest>,
    /// Name, version: carried into log lines and guest state.
    pub identity: GuestIdentity,
    /// Full SHA-256 of the module bytes.
    pub content_hash: String,
    /// The module file.
    pub path: PathBuf,
    /// Size of the module file in bytes.
    pub size: usize,
    /// What the component imports and exports, by name (for `kp check`).
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Compiled now or loaded from the cache, and how long that took.
    pub provenance: Provenance,
    pub load_time: Duration,
    /// Linked and type-checked against the world: instantiation is a cheap step from here.
    pub(super) pre: HandlerWorldPre<GuestState>,
    /// The manifest's config, shared by every instance.
    pub(super) config: Arc<std::collections::BTreeMap<String, String>>,
    /// Instances of this version alive now (bounded by the operator's `max-instances`).
    pub(super) live_instances: Arc<std::sync::atomic::AtomicU32>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.identity.plugin)
            .field("version", &self.identity.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.identity.plugin
    }

    /// Short content hash that names this version in logs (first 12 hex digits of SHA-256).
    pub fn version(&self) -> &str {
        &self.identity.version
    }

    /// True when this version has as many instances alive as the operator's `max-instances`
    /// allows: another one must wait for one of them to go, whatever room the pool has.
    pub fn share_used_up(&self) -> bool {
        self.manifest.max_instances.is_some_and(|max| {
            self.live_instances
                .load(std::sync::atomic::Ordering::Acquire)
                >= max
        })
    }
}

impl Sandbox {
    /// Loads `path` and the manifest beside it.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        self.load_admitted(path, &|_| Ok(()))
    }

    /// [`Self::load`], with the manifest first put through `admit` (the operator's policy),
    /// which may refuse it or adjust it; a refused plugin is not even compiled.
    pub fn load_admitted(
        &self,
        path: &Path,
        admit: &dyn Fn(&mut Manifest) -> Result<(), String>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let mut manifest = Manifest::load_for(path).map_err(|e| LoadError::Manifest {
            path: Manifest::path_for(path),
            source: e.into(),
        })?;
        admit(&mut manifest).map_err(|reason| LoadError::NotAllowed {
            path: path.to_path_buf(),
            reason,
        })?;
        let bytes = crate::files::read_plugin_file(path, crate::files::MAX_MODULE_BYTES).map_err(
            |source| LoadError::Io {
                path: path.to_path_buf(),
                source,
            },
        )?;
        self.load_bytes(path, &bytes, manifest)
    }

    /// Loads a module from bytes already read, with a given manifest.
    pub fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        manifest: Manifest,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let _loading = tracing::info_span!("load", module = %path.display()).entered();
        let started = Instant::now();
        let path_buf = path.to_path_buf();
        match shape(bytes) {
            Ok(Shape::Component) => {}
            Ok(Shape::CoreModule) => return Err(LoadError::CoreModule { path: path_buf }),
            Err(reason) => {
                return Err(LoadError::NotWasm {
                    path: path_buf,
                    reason,
                });
            }
        }
        let content_hash = hex::encode(Sha256::digest(bytes));
        let (component, provenance) = match &self.cache {
            Some(cache) => {
                cache.load_or_compile(&self.engine, &content_hash, bytes, &self.compiler)
            }
            None => self
                .compiler
                .compile(&self.engine, bytes)
                .map(|c| (c, Provenance::Compiled)),
        }
        .map_err(|e| LoadError::Invalid {
            path: path_buf.clone(),
            source: e.into(),
        })?;

        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::UnsupportedImport {
                    path: path_buf.clone(),
                    source: anyhow::Error::from(e).into(),
                })?;
        if !exports.iter().any(|name| name == HANDLER_EXPORT) {
            let found = if exports.is_empty() {
                "it exports nothing".to_string()
            } else {
                format!("it exports {}", exports.join(", "))
            };
            return Err(LoadError::WrongWorld {
                path: path_buf,
                reason: format!("it does not export `{HANDLER_EXPORT}` ({found})"),
            });
        }
        let pre = HandlerWorldPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            path: path_buf.clone(),
            reason: format!("{e:#}"),
        })?;

        let identity = GuestIdentity {
            plugin: Arc::from(manifest.name.as_str()),
            version: Arc::from(&content_hash[..12]),
            log_budget: Arc::default(),
        };
        let plugin = Arc::new(LoadedPlugin {
            config: Arc::new(manifest.config.clone()),
            live_instances: Arc::default(),
            manifest: Arc::new(manifest),
            identity,
            content_hash,
            path: path_buf.clone(),
            size: bytes.len(),
            imports,
            exports,
            provenance,
            load_time: started.elapsed(),
            pre,
        });
        // Prove that an instance starts here, once, rather than in every partition worker; its
        // `init` gets at most LOAD_INIT_DEADLINE, since loading holds up other plugins' reloads.
        PluginInstance::probe(plugin.clone(), LOAD_INIT_DEADLINE).map_err(|e| {
            LoadError::StartFailed {
                path: path_buf,
                source: Box::new(e),
            }
        })?;
        Ok(plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(shape(b"\0asm\x01\0\0\0"), Ok(Shape::CoreModule));
        assert_eq!(shape(b"\0asm\x0d\0\x01\0"), Ok(Shape::Component));
        assert!(shape(b"").unwrap_err().contains("empty"));
        assert!(shape(b"hello world").unwrap_err().contains("68 65 6c 6c"));
    }
}
