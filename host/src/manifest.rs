//! Plugin manifests: `NAME.toml` beside `NAME.wasm`.
//!
//! ```toml
//! input-topics = ["orders"]        # required to run under `kp run`
//! output-topic = "orders-enriched" # default destination of outputs that name no topic
//! output-topics = ["orders-large"] # every other topic the handler may write to (nothing else)
//! group-id = "kp-enricher"         # consumer group; default "kp-" + NAME
//!
//! [limits]
//! timeout-ms = 5000                # wall-clock deadline of one call (default 5000)
//! memory-mib = 64                  # memory cap of one instance (default 64)
//!
//! [config]                         # free-form values the guest reads through kp:plugin/config
//! api-url = "https://example.com"
//!
//! [capabilities]                   # deny by default; files and network are never granted
//! env = ["API_URL"]                # environment variables passed from kp's own environment
//! wall-clock = true                # default true; false: the clock reads the Unix epoch
//! random = true                    # default true; false: fixed bytes (reproducible runs)
//!
//! [on-failure]                     # what happens to a message the handler cannot handle
//! policy = "dead-letter"           # or "skip" or "halt"; default: dead-letter if a topic is set, else halt
//! dead-letter-topic = "orders-dlq"
//! max-attempts = 3                 # attempts for `retry-later` errors (1 = no retry)
//! backoff-initial-ms = 200         # first pause between attempts; doubles, with jitter
//! backoff-max-ms = 30000           # longest pause
//! ```
//!
//! Unknown keys and bad values are refused with a message naming the file and the key.
//! A module without a manifest gets [`Manifest::default_for`]: it can be checked and replayed,
//! but `kp run` refuses to run it because it names no input topic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Default wall-clock deadline of one guest call.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default memory cap of one guest instance.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// The largest memory cap a manifest may ask for (the pooling allocator reserves slots this big).
pub const MAX_MEMORY_MIB: u64 = 4_096;
/// The longest deadline a manifest may ask for: a partition stalls for this long on a hung guest.
pub const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1_000;

/// A parsed, validated plugin manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Plugin name: the file stem of `NAME.wasm`.
    pub name: String,
    /// Topics to consume. Empty only for a module without a manifest.
    pub input_topics: Vec<String>,
    /// Where outputs that name no topic go.
    pub output_topic: Option<String>,
    /// The other topics the handler may write to. An output to a topic that is neither this nor
    /// `output_topic` is refused (the failure policy applies).
    pub output_topics: Vec<String>,
    /// Consumer group id.
    pub group_id: String,
    /// True when the manifest named the group itself (rather than taking `kp-NAME`).
    pub group_id_set: bool,
    /// May an output name its partition? Not a manifest key: the operator's policy decides
    /// (`crate::policy`); true unless it says otherwise.
    pub explicit_partitions: bool,
    /// Most instances of this plugin alive at once, its share of the pool. Not a manifest key:
    /// the operator's policy (`max-instances`); unbounded unless it says so.
    pub max_instances: Option<u32>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Values the guest reads through `kp:plugin/config`, sorted by key.
    pub config: BTreeMap<String, String>,
    /// What happens to a message the handler cannot handle.
    pub on_failure: FailurePolicy,
    /// What the guest may reach beyond its own memory.
    pub capabilities: Capabilities,
    /// Where the manifest came from (`None` for a module without one).
    pub source: Option<PathBuf>,
}

/// Per-instance sandbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call into the guest.
    pub timeout: Duration,
    /// Maximum linear memory of one instance, in bytes.
    pub memory_bytes: u64,
}

/// What a guest may reach. Files and the network are never granted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    /// Environment variables passed from kp's environment (by name); the guest sees no others.
    #[serde(default)]
    pub env: Vec<String>,
    /// The real wall clock. Granted by default: outputs and logs carry real times, and it reveals
    /// nothing about the host that Kafka timestamps do not. Denied, it reads the Unix epoch.
    #[serde(default = "yes")]
    pub wall_clock: bool,
    /// Real random bytes. Granted by default: language runtimes seed hash tables from it (Rust's
    /// HashMap, Python, JavaScript). Denied, it returns fixed bytes, for reproducible runs.
    #[serde(default = "yes")]
    pub random: bool,
}

fn yes() -> bool {
    true
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            env: Vec::new(),
            wall_clock: true,
            random: true,
        }
    }
}

/// What to do with a message whose handling failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Produce it to the dead-letter topic (with headers saying why), then commit it.
    DeadLetter,
    /// Log and count it, then commit it: the message is dropped.
    Skip,
    /// Stop the partition at it, uncommitted, until an operator acts.
    Halt,
}

/// The failure policy of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePolicy {
    pub action: FailureAction,
    pub dead_letter_topic: Option<String>,
    /// Attempts for a `retry-later` error, the first included.
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for FailurePolicy {
    /// Without a dead-letter topic nothing may be lost, so the default is to halt.
    fn default() -> Self {
        FailurePolicy {
            action: FailureAction::Halt,
            dead_letter_topic: None,
            max_attempts: 3,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFailurePolicy {
    policy: Option<FailureAction>,
    dead_letter_topic: Option<String>,
    max_attempts: Option<u32>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
}

impl RawFailurePolicy {
    fn resolve(self) -> Result<FailurePolicy> {
        let defaults = FailurePolicy::default();
        if let Some(topic) = &self.dead_letter_topic {
            validate_topic(topic)?;
        }
        let action = match (self.policy, &self.dead_letter_topic) {
            (Some(FailureAction::DeadLetter), None) => {
                bail!("on-failure.policy = \"dead-letter\" needs on-failure.dead-letter-topic")
            }
            (Some(action), _) => action,
            (None, Some(_)) => FailureAction::DeadLetter,
            (None, None) => defaults.action,
        };
        let max_attempts = self.max_attempts.unwrap_or(defaults.max_attempts);
        if !(1..=100).contains(&max_attempts) {
            bail!("on-failure.max-attempts must be between 1 and 100, not {max_attempts}");
        }
        let initial = self
            .backoff_initial_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.backoff_initial);
        let max = self
            .backoff_max_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.backoff_max);
        if initial.is_zero() || initial > max || max > Duration::from_secs(3600) {
            bail!(
                "on-failure: backoff-initial-ms must be at least 1 and at most backoff-max-ms, which is at most one hour"
            );
        }
        Ok(FailurePolicy {
            action,
            dead_letter_topic: self.dead_letter_topic,
            max_attempts,
            backoff_initial: initial,
            backoff_max: max,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            memory_bytes: DEFAULT_MEMORY_MIB << 20,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    #[serde(default)]
    input_topics: Vec<String>,
    output_topic: Option<String>,
    #[serde(default)]
    output_topics: Vec<String>,
    group_id: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    on_failure: RawFailurePolicy,
    #[serde(default)]
    capabilities: Capabilities,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
}

impl Manifest {
    /// What a module without a manifest gets: default limits, no topics, no config.
    pub fn default_for(name: &str) -> Manifest {
        Manifest {
            name: name.to_string(),
            input_topics: Vec::new(),
            output_topic: None,
            output_topics: Vec::new(),
            group_id: format!("kp-{name}"),
            group_id_set: false,
            explicit_partitions: true,
            max_instances: None,
            limits: Limits::default(),
            config: BTreeMap::new(),
            on_failure: FailurePolicy::default(),
            capabilities: Capabilities::default(),
            source: None,
        }
    }

    /// Every topic the handler may write to: `output-topic` and `output-topics`.
    pub fn declared_outputs(&self) -> impl Iterator<Item = &String> {
        self.output_topic.iter().chain(&self.output_topics)
    }

    /// True when the handler may write to `topic`.
    pub fn may_write(&self, topic: &str) -> bool {
        self.declared_outputs().any(|t| t == topic)
    }

    /// The manifest path that belongs to a module: `dir/NAME.wasm` → `dir/NAME.toml`.
    pub fn path_for(module: &Path) -> PathBuf {
        module.with_extension("toml")
    }

    /// Loads the manifest beside `module`, or the defaults when there is none.
    pub fn load_for(module: &Path) -> Result<Manifest> {
        let name = plugin_name(module)?;
        let path = Self::path_for(module);
        match crate::files::read_plugin_file(&path, crate::files::MAX_MANIFEST_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    anyhow::anyhow!("manifest {} is not UTF-8 text", path.display())
                })?;
                Self::parse(&name, &text)
                    .with_context(|| format!("manifest {}", path.display()))
                    .map(|mut m| {
                        m.source = Some(path);
                        m
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default_for(&name)),
            Err(e) => Err(e).with_context(|| format!("reading manifest {}", path.display())),
        }
    }

    /// Parses and validates manifest text for plugin `name`.
    pub fn parse(name: &str, text: &str) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!(crate::files::toml_error(&e, text)))?;
        for topic in raw
            .input_topics
            .iter()
            .chain(raw.output_topic.iter())
            .chain(&raw.output_topics)
        {
            validate_topic(topic)?;
        }
        for topic in raw
            .output_topic
            .iter()
            .chain(&raw.output_topics)
            .chain(&raw.on_failure.dead_letter_topic)
        {
            if topic.starts_with('_') {
                bail!(
                    "{topic:?} cannot be written by a plugin: topics starting with '_' belong to \
                     Kafka and its tools (__consumer_offsets, _schemas, connect's topics)"
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for topic in &raw.input_topics {
            if !seen.insert(topic) {
                bail!("input-topics lists {topic:?} twice");
            }
        }
        if let Some(group) = &raw.group_id
            && group.trim().is_empty()
        {
            bail!("group-id must not be empty");
        }
        let timeout_ms = raw.limits.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            bail!("limits.timeout-ms must be between 1 and {MAX_TIMEOUT_MS}, not {timeout_ms}");
        }
        let memory_mib = raw.limits.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        if memory_mib == 0 || memory_mib > MAX_MEMORY_MIB {
            bail!("limits.memory-mib must be between 1 and {MAX_MEMORY_MIB}, not {memory_mib}");
        }
        let mut config = BTreeMap::new();
        for (key, value) in raw.config {
            let Some(text) = crate::files::toml_scalar_text(&value) else {
                bail!(
                    "config.{key} must be a string, number, boolean or date (the guest reads strings), not a {}",
                    value.type_str()
                );
            };
            config.insert(key, text);
        }
        Ok(Manifest {
            name: name.to_string(),
            input_topics: raw.input_topics,
            output_topic: raw.output_topic,
            output_topics: raw.output_topics,
            group_id_set: raw.group_id.is_some(),
            explicit_partitions: true,
            max_instances: None,
            group_id: raw.group_id.unwrap_or_else(|| format!("kp-{name}")),
            limits: Limits {
                timeout: Duration::from_millis(timeout_ms),
                memory_bytes: memory_mib << 20,
            },
            config,
            on_failure: raw.on_failure.resolve()?,
            capabilities: raw.capabilities,
            source: None,
        })
    }
}

/// The plugin name of a module path: its file stem, which must be a usable name.
pub fn plugin_name(module: &Path) -> Result<String> {
    let stem = module
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: the file name is not valid UTF-8", module.display()))?;
    if stem.is_empty()
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "{}: a plugin name may hold only ASCII letters, digits, '-', '_' and '.'",
            module.display()
        );
    }
    Ok(stem.to_string())
}

/// Kafka's rules for topic names: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        bail!("{topic:?} is not a valid Kafka topic name (1 to 249 characters, not '.' or '..')");
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        bail!(
            "{topic:?} is not a valid Kafka topic name: {c:?} is not allowed (use a-z A-Z 0-9 . _ -)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let m = Manifest::parse(
            "enrich",
            r#"
            input-topics = ["a", "b"]
            output-topic = "out"
            group-id = "g"
            [limits]
            timeout-ms = 250
            memory-mib = 16
            [config]
            url = "x"
            retries = 3
            ratio = 0.5
            on = true
            "#,
        )
        .unwrap();
        assert_eq!(m.input_topics, ["a", "b"]);
        assert_eq!(m.output_topic.as_deref(), Some("out"));
        assert_eq!(m.group_id, "g");
        assert_eq!(m.limits.timeout, Duration::from_millis(250));
        assert_eq!(m.limits.memory_bytes, 16 << 20);
        assert_eq!(m.config["retries"], "3");
        assert_eq!(m.config["ratio"], "0.5");
        assert_eq!(m.config["on"], "true");
    }

    #[test]
    fn defaults_apply() {
        let m = Manifest::parse("up", "input-topics = [\"t\"]").unwrap();
        assert_eq!(m.group_id, "kp-up");
        assert_eq!(m.limits, Limits::default());
        assert_eq!(
            Manifest::default_for("up").input_topics,
            Vec::<String>::new()
        );
    }

    fn refused(text: &str) -> String {
        format!("{:#}", Manifest::parse("p", text).unwrap_err())
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(refused("input-topic = [\"t\"]").contains("unknown field `input-topic`"));
        assert!(refused("[limits]\ntimeout = 5").contains("unknown field `timeout`"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(refused("input-topics = \"t\"").contains("invalid type"));
        assert!(refused("input-topics = [\"a b\"]").contains("not a valid Kafka topic name"));
        assert!(refused("input-topics = [\"a\", \"a\"]").contains("twice"));
        assert!(refused("[limits]\ntimeout-ms = 0").contains("timeout-ms"));
        assert!(refused("[limits]\nmemory-mib = 999999").contains("memory-mib"));
        assert!(refused("[limits]\nmemory-mib = -1").contains("invalid value"));
        assert!(refused("[config]\nx = [1]").contains("config.x"));
        assert!(refused("group-id = \" \"").contains("group-id"));
        assert!(
            refused("input-topics = [").contains("TOML") || !refused("input-topics = [").is_empty()
        );
    }

    #[test]
    fn failure_policies() {
        let m = Manifest::parse("p", "input-topics = [\"t\"]").unwrap();
        assert_eq!(
            m.on_failure.action,
            FailureAction::Halt,
            "no dead-letter topic: nothing may be lost"
        );
        let m = Manifest::parse(
            "p",
            "[on-failure]\ndead-letter-topic = \"dlq\"\nmax-attempts = 5",
        )
        .unwrap();
        assert_eq!(m.on_failure.action, FailureAction::DeadLetter);
        assert_eq!(m.on_failure.max_attempts, 5);
        let m = Manifest::parse("p", "[on-failure]\npolicy = \"skip\"").unwrap();
        assert_eq!(m.on_failure.action, FailureAction::Skip);
        assert!(refused("[on-failure]\npolicy = \"dead-letter\"").contains("dead-letter-topic"));
        assert!(refused("[on-failure]\npolicy = \"ignore\"").contains("unknown variant"));
        assert!(refused("[on-failure]\nmax-attempts = 0").contains("max-attempts"));
        assert!(
            refused("[on-failure]\nbackoff-initial-ms = 10\nbackoff-max-ms = 5")
                .contains("backoff")
        );
        assert!(refused("[on-failure]\ndead-letter-topic = \"a b\"").contains("topic name"));
    }

    #[test]
    fn capabilities() {
        let m = Manifest::parse("p", "").unwrap();
        assert_eq!(m.capabilities, Capabilities::default());
        assert!(
            m.capabilities.env.is_empty() && m.capabilities.wall_clock && m.capabilities.random
        );
        let m = Manifest::parse("p", "[capabilities]\nenv = [\"A\"]\nrandom = false").unwrap();
        assert_eq!(m.capabilities.env, ["A"]);
        assert!(!m.capabilities.random);
        assert!(refused("[capabilities]\nnetwork = true").contains("unknown field `network`"));
    }

    #[test]
    fn plugin_names() {
        assert_eq!(
            plugin_name(Path::new("/x/up-per_1.wasm")).unwrap(),
            "up-per_1"
        );
        assert!(plugin_name(Path::new("/x/a b.wasm")).is_err());
    }
}
