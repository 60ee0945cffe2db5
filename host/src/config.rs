//! The engine's configuration, resolved in one place: command-line flags ([`EngineArgs`]) over
//! the optional config file ([`FileConfig`], `--config FILE`) over the defaults (the `DEFAULT_*`
//! constants, each named in its flag's help and checked against it by a test). `main` only
//! parses the command line and calls [`EngineArgs::resolve`]; everything it decides is
//! unit-tested below, without Kafka.
//!
//! The file:
//!
//! ```toml
//! brokers = "broker-1:9092,broker-2:9092"
//! plugins = "/srv/kp/plugins"
//! group-protocol = "classic"     # or "consumer" (KIP-848)
//! commit-mode = "eager"          # or "strict"
//! drain-timeout-ms = 30000
//! queue-depth = 10000
//! accept-duplicates = false      # true lets the producer run without idempotence
//! instance-id = "kp-1"           # static group membership (fast restarts); unset by default
//! max-uncommitted = 50000        # per partition: handled but not yet committed, at most
//! prefetch-mib = 256             # per plugin: prefetched records librdkafka may hold, in MiB
//! workers = 2                    # worker threads (default: the number of cores)
//! instance-pool = 256            # guest instances over all plugins
//! http = "127.0.0.1:9464"        # /metrics, /healthz, /readyz, /status, /resume (default: off)
//!
//! tenancy = "open"               # or "governed": see crate::policy and the README
//! [policy.orders]                # the operator's policy for plugin "orders" (crate::policy)
//! consume = ["orders"]
//! produce = ["orders-enriched"]
//!
//! [kafka]                        # librdkafka properties for every client
//! "security.protocol" = "SASL_SSL"
//! "sasl.mechanisms" = "SCRAM-SHA-512"
//! "sasl.password" = "${file:/run/secrets/kafka}"   # or "${env:NAME}": never the secret itself
//! [kafka-consumer]               # consumers only
//! "fetch.min.bytes" = "1"
//! [kafka-producer]               # the producer only
//! "compression.type" = "zstd"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::kafka::settings::{is_reference, looks_secret, parse_property};
use crate::kafka::{CommitMode, GroupProtocol, KafkaSettings, RunOptions};
use crate::policy::{PluginPolicy, Policy, Tenancy};
use crate::runner::RunConfig;
use crate::sandbox::compiler::Compiler;
use crate::sandbox::{Allocation, ArtifactCache, SandboxConfig};

/// The engine's flags (`kp run`, `kp dev`). Each is optional: the config file fills what is not
/// given, and the default named in its help what neither gives.
#[derive(Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Folder of plugins: NAME.wasm with its manifest NAME.toml.
    #[arg(long, env = "KP_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// A config file (see the README); command-line flags override it.
    #[arg(long, env = "KP_CONFIG")]
    pub config: Option<PathBuf>,
    /// A librdkafka property for every client, as key=value (repeatable), like kcat's -X. A value
    /// written ${env:NAME} or ${file:PATH} is read from there (use it for passwords).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Let the producer run without idempotence (enable.idempotence=false): a retried send may
    /// then write an output twice or out of order.
    #[arg(long)]
    pub accept_duplicates: bool,
    /// Consumer group protocol [default: classic].
    #[arg(long, value_enum)]
    pub group_protocol: Option<GroupProtocol>,
    /// When offsets are committed [default: eager].
    #[arg(long, value_enum)]
    pub commit_mode: Option<CommitMode>,
    /// Bound on draining partitions at a rebalance or shutdown, in milliseconds [default: 30000].
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
    /// Messages librdkafka keeps queued per partition before it stops fetching it [default: 10000].
    #[arg(long)]
    pub queue_depth: Option<usize>,
    /// At most this many messages per partition handled but not yet committed: what a crash can
    /// make kp handle again [default: 50000].
    #[arg(long)]
    pub max_uncommitted: Option<u64>,
    /// MiB of prefetched records librdkafka may hold per plugin, shared by its input partitions
    /// (each gets an equal part, 64 KiB to 64 MiB) [default: 256].
    #[arg(long)]
    pub prefetch_mib: Option<u64>,
    /// Worker threads that run the partitions of every plugin [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Guest instances the engine holds room for, over all plugins: idle instances beyond it
    /// are dropped, the longest unused first. At least twice --workers, plus 2 [default: 256].
    #[arg(long)]
    pub instance_pool: Option<u32>,
    /// A name for this kp that stays the same across restarts (a pod or host name): makes each
    /// plugin's consumer a static group member, so a restart within the session timeout gets
    /// its partitions back at once. Must differ between kp processes sharing a plugin.
    #[arg(long, env = "KP_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Do not follow changes to the plugins folder (no hot reload).
    #[arg(long)]
    pub no_watch: bool,
    /// Write the plugins' status (state, version, last error) to this JSON file on every change.
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// Serve /metrics, /healthz, /readyz, /status and POST /resume on this address, e.g.
    /// 127.0.0.1:9464 [default: off].
    #[arg(long, env = "KP_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Where compiled modules are cached (`kp run`, `kp dev`, `kp check`, `kp replay`).
#[derive(Args, Debug, Clone, Default)]
pub struct CacheArgs {
    /// Folder of the compiled-artifact cache [default: $XDG_CACHE_HOME/kp or ~/.cache/kp].
    #[arg(long, env = "KP_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every module afresh; neither read nor write the cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The cache folder, or `None` with `--no-cache`.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(ArtifactCache::default_dir)
        }
    }
}

impl EngineArgs {
    /// Reads the config file (if one is named) and resolves flags over it over the defaults.
    /// `brokers` is `--brokers` (`kp run`), or the embedded broker's placeholder (`kp dev`).
    pub fn resolve(self, brokers: Option<String>) -> Result<RunConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        self.over(file, brokers)
    }

    /// Flags over `file` over the defaults, and the checks that need no cluster.
    pub fn over(self, file: FileConfig, brokers: Option<String>) -> Result<RunConfig> {
        let mut common = property_strings(&file.kafka)?;
        let mut consumer = property_strings(&file.kafka_consumer)?;
        let mut producer = property_strings(&file.kafka_producer)?;
        for p in &self.properties {
            let (k, v) = parse_property(p)?;
            if looks_secret(&k) && !is_reference(&v) {
                tracing::warn!(
                    "-X {k} is given on the command line, where other users can see it (ps, \
                     /proc): write -X {k}=${{file:PATH}} or -X {k}=${{env:NAME}} instead"
                );
            }
            // A flag wins over the file's client-specific tables too (they are applied after
            // the common properties).
            consumer.remove(&k);
            producer.remove(&k);
            common.insert(k, v);
        }
        let plugins_dir = self.plugins.or(file.plugins).context(
            "no plugins folder given (use --plugins DIR, or plugins = \"DIR\" in the config file)",
        )?;
        let mut kafka = KafkaSettings {
            brokers: brokers.or(file.brokers).unwrap_or_default(),
            group_protocol: self
                .group_protocol
                .or(file.group_protocol)
                .unwrap_or_default(),
            common,
            consumer,
            producer,
            accept_duplicates: self.accept_duplicates || file.accept_duplicates.unwrap_or(false),
            instance_id: self.instance_id.or(file.instance_id),
            // Set by the runner when it serves /metrics and /status.
            partition_statistics: false,
        };
        kafka.resolve_references()?;
        let queue_depth = self
            .queue_depth
            .or(file.queue_depth)
            .unwrap_or(crate::kafka::DEFAULT_QUEUE_DEPTH);
        anyhow::ensure!(queue_depth >= 2, "--queue-depth must be at least 2");
        let max_uncommitted = self
            .max_uncommitted
            .or(file.max_uncommitted)
            .unwrap_or(crate::kafka::DEFAULT_MAX_UNCOMMITTED);
        anyhow::ensure!(max_uncommitted >= 1, "--max-uncommitted must be at least 1");
        let prefetch_mib = self
            .prefetch_mib
            .or(file.prefetch_mib)
            .unwrap_or(crate::kafka::DEFAULT_PREFETCH_MIB);
        anyhow::ensure!(
            (1..=1 << 20).contains(&prefetch_mib),
            "--prefetch-mib must be between 1 and 1048576 (MiB), got {prefetch_mib}"
        );
        let mut policy = Policy {
            tenancy: file.tenancy.unwrap_or_default(),
            plugins: file.policy,
        };
        policy.resolve_references()?;
        let workers = self
            .workers
            .or(file.workers)
            .unwrap_or_else(crate::kafka::executor::default_workers);
        let instance_pool = self
            .instance_pool
            .or(file.instance_pool)
            .unwrap_or(crate::sandbox::DEFAULT_INSTANCE_POOL);
        crate::sandbox::check_capacity(workers, instance_pool)?;
        Ok(RunConfig {
            plugins_dir,
            options: RunOptions {
                kafka,
                commit_mode: self.commit_mode.or(file.commit_mode).unwrap_or_default(),
                drain_timeout: self
                    .drain_timeout_ms
                    .or(file.drain_timeout_ms)
                    .map(Duration::from_millis)
                    .unwrap_or(crate::kafka::DEFAULT_DRAIN_TIMEOUT),
                queue_depth,
                max_uncommitted,
                prefetch_bytes: prefetch_mib << 20,
                policy,
                workers,
                create_missing_topics: false,
            },
            watch: !self.no_watch,
            wait_for_plugins: false,
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

/// The contents of a config file; every field optional (a flag overrides each).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `--brokers`.
    pub brokers: Option<String>,
    /// `--plugins`.
    pub plugins: Option<PathBuf>,
    /// `--group-protocol`.
    pub group_protocol: Option<GroupProtocol>,
    /// `--commit-mode`.
    pub commit_mode: Option<CommitMode>,
    /// `--drain-timeout-ms`.
    pub drain_timeout_ms: Option<u64>,
    /// `--queue-depth`.
    pub queue_depth: Option<usize>,
    /// Lets the producer run without idempotence (`--accept-duplicates`).
    pub accept_duplicates: Option<bool>,
    /// `--instance-id`.
    pub instance_id: Option<String>,
    /// `--max-uncommitted`.
    pub max_uncommitted: Option<u64>,
    /// `--prefetch-mib`.
    pub prefetch_mib: Option<u64>,
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--instance-pool`.
    pub instance_pool: Option<u32>,
    /// `--http`.
    pub http: Option<std::net::SocketAddr>,
    /// Whether plugins without a policy of their own may run (`crate::policy`).
    pub tenancy: Option<Tenancy>,
    /// The operator's policy per plugin: `[policy.NAME]`.
    #[serde(default)]
    pub policy: BTreeMap<String, PluginPolicy>,
    /// `-X`, for every client.
    #[serde(default)]
    pub kafka: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub kafka_consumer: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub kafka_producer: BTreeMap<String, toml::Value>,
}

impl FileConfig {
    /// Reads the file. Warns when it holds secret-looking Kafka values written out (not as
    /// `${env:..}`/`${file:..}` references) while group or others may read it.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: FileConfig = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {}: {}",
                path.display(),
                crate::files::toml_error(&e, &text)
            )
        })?;
        let literal_secrets = config.literal_secret_keys();
        if !literal_secrets.is_empty() && readable_by_others(path) {
            tracing::warn!(
                file = %path.display(), keys = ?literal_secrets,
                "the config file holds secret-looking values and is readable by group or others: \
                 chmod 600 it, or give the values as ${{file:PATH}} or ${{env:NAME}}"
            );
        }
        Ok(config)
    }

    /// Keys of Kafka properties that look secret and are written out in the file.
    fn literal_secret_keys(&self) -> Vec<&str> {
        [&self.kafka, &self.kafka_consumer, &self.kafka_producer]
            .into_iter()
            .flatten()
            .filter(|(k, v)| looks_secret(k) && !v.as_str().is_some_and(is_reference))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// True when the file's permissions let its group or other users read it.
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

/// librdkafka properties are strings; accept TOML numbers and booleans too.
pub fn property_strings(table: &BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, String>> {
    table
        .iter()
        .map(|(k, v)| {
            let s = crate::files::toml_scalar_text(v).with_context(|| {
                format!(
                    "Kafka property {k} must be a string, number or boolean, not a {}",
                    v.type_str()
                )
            })?;
            Ok((k.clone(), s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The engine's flags as `kp run` parses them.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    fn flags(args: &[&str]) -> EngineArgs {
        let mut argv = vec!["kp"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().engine
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let c = file(
            "brokers = \"b:9092\"\ncommit-mode = \"strict\"\n[kafka]\n\"fetch.wait.max.ms\" = 10\n",
        );
        assert_eq!(c.brokers.as_deref(), Some("b:9092"));
        assert_eq!(c.commit_mode, Some(CommitMode::Strict));
        assert_eq!(
            property_strings(&c.kafka).unwrap()["fetch.wait.max.ms"],
            "10"
        );
        assert!(toml::from_str::<FileConfig>("broker = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("commit-mode = \"lazy\"").is_err());
        assert!(toml::from_str::<FileConfig>("group-protocol = \"consumer\"").is_ok());
        let nested = file("[kafka]\n\"a.b\" = [1]\n");
        let e = property_strings(&nested.kafka).unwrap_err();
        assert!(format!("{e:#}").contains("a.b"), "{e:#}");
    }

    #[test]
    fn defaults_fill_what_neither_flags_nor_file_give() {
        let c = flags(&["--plugins", "p"])
            .over(FileConfig::default(), None)
            .unwrap();
        let o = &c.options;
        assert_eq!(c.plugins_dir, PathBuf::from("p"));
        assert_eq!(o.queue_depth, crate::kafka::DEFAULT_QUEUE_DEPTH);
        assert_eq!(o.drain_timeout, crate::kafka::DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(o.max_uncommitted, crate::kafka::DEFAULT_MAX_UNCOMMITTED);
        assert_eq!(o.prefetch_bytes, crate::kafka::DEFAULT_PREFETCH_MIB << 20);
        assert_eq!(o.workers, crate::kafka::executor::default_workers());
        assert_eq!(o.commit_mode, CommitMode::Eager);
        assert_eq!(o.kafka.group_protocol, GroupProtocol::Classic);
        assert!(!o.kafka.accept_duplicates);
        assert!(c.watch && c.http.is_none() && c.status_file.is_none());
        assert!(matches!(
            c.sandbox.allocation,
            Allocation::Pooling { max_instances } if max_instances == crate::sandbox::DEFAULT_INSTANCE_POOL
        ));
        // No brokers is refused when the run starts (`kp dev` has its own).
        assert!(o.kafka.validate().is_err());
    }

    #[test]
    fn the_file_fills_what_flags_do_not_give_and_flags_win() {
        let from_file = file(
            "brokers = \"file:9092\"\nplugins = \"from-file\"\ncommit-mode = \"strict\"\n\
             queue-depth = 50\ndrain-timeout-ms = 1000\nworkers = 3\ninstance-pool = 100\n\
             group-protocol = \"consumer\"\n\
             [kafka]\n\"client.rack\" = \"a\"\n\"linger.ms\" = 7\n",
        );
        let c = flags(&["--queue-depth", "70", "-X", "linger.ms=9"])
            .over(from_file, None)
            .unwrap();
        let o = &c.options;
        assert_eq!(c.plugins_dir, PathBuf::from("from-file"));
        assert_eq!(o.kafka.brokers, "file:9092");
        assert_eq!(o.commit_mode, CommitMode::Strict);
        assert_eq!(o.queue_depth, 70, "the flag wins");
        assert_eq!(o.drain_timeout, Duration::from_secs(1));
        assert_eq!(o.workers, 3);
        assert_eq!(o.kafka.group_protocol, GroupProtocol::Consumer);
        assert_eq!(o.kafka.common["linger.ms"], "9", "-X wins over [kafka]");
        let consumer_table = flags(&["--plugins", "p", "-X", "fetch.min.bytes=7"])
            .over(file("[kafka-consumer]\n\"fetch.min.bytes\" = 1\n"), None)
            .unwrap();
        let config = consumer_table.options.kafka.consumer_config(
            "p",
            "g",
            10,
            crate::kafka::settings::Prefetch::split(1 << 28, 1),
        );
        assert_eq!(
            config.get("fetch.min.bytes"),
            Some("7"),
            "-X wins over [kafka-consumer]"
        );
        assert_eq!(o.kafka.common["client.rack"], "a");
        let brokers_flag = flags(&["--plugins", "p"])
            .over(file("brokers = \"file:9092\""), Some("flag:9092".into()))
            .unwrap();
        assert_eq!(brokers_flag.options.kafka.brokers, "flag:9092");
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let refused = |args: &[&str], file_text: &str| {
            let e = flags(args).over(file(file_text), None).unwrap_err();
            format!("{e:#}")
        };
        assert!(refused(&[], "").contains("--plugins"));
        assert!(refused(&["--plugins", "p", "--queue-depth", "1"], "").contains("--queue-depth"));
        assert!(refused(&["--plugins", "p"], "max-uncommitted = 0").contains("--max-uncommitted"));
        let pool = refused(
            &["--plugins", "p", "--workers", "8", "--instance-pool", "10"],
            "",
        );
        assert!(pool.contains("instance"), "{pool}");
        // Not echoed: a malformed -X may hold a secret.
        let malformed = refused(&["--plugins", "p", "-X", "hunter2"], "");
        assert!(
            malformed.contains("key=value") && !malformed.contains("hunter2"),
            "{malformed}"
        );
        // Unknown flags and values never get this far.
        let mut argv = vec!["kp", "--commit-mode", "lazy"];
        assert!(Cli::try_parse_from(&argv).is_err());
        argv = vec!["kp", "--queue-dept", "5"];
        assert!(Cli::try_parse_from(&argv).is_err());
    }

    #[test]
    fn the_defaults_in_the_help_are_the_ones_used() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for (flag, default) in [
            (
                "--queue-depth",
                crate::kafka::DEFAULT_QUEUE_DEPTH.to_string(),
            ),
            (
                "--drain-timeout-ms",
                crate::kafka::DEFAULT_DRAIN_TIMEOUT.as_millis().to_string(),
            ),
            (
                "--max-uncommitted",
                crate::kafka::DEFAULT_MAX_UNCOMMITTED.to_string(),
            ),
            (
                "--instance-pool",
                crate::sandbox::DEFAULT_INSTANCE_POOL.to_string(),
            ),
        ] {
            let at = help.find(flag).unwrap();
            let rest = &help[at..];
            let said = rest[rest.find("[default: ").unwrap() + 10..]
                .split(']')
                .next()
                .unwrap()
                .to_string();
            assert_eq!(said, default, "{flag}'s help says {said}");
        }
    }

    #[test]
    fn literal_secrets_are_found_and_references_are_not() {
        let c = file(
            "[kafka]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"kp\"\n\
             [kafka-producer]\n\"ssl.key.password\" = \"${file:/run/secrets/key}\"\n",
        );
        assert_eq!(c.literal_secret_keys(), ["sasl.password"]);
    }

    #[test]
    fn group_or_world_readable_files_are_noticed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kp.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!readable_by_others(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(readable_by_others(&file));
    }
}
