//! librdkafka client settings: what kp sets itself, and why, plus the user's pass-through
//! properties (`-X key=value`, or `[kafka]` in the config file), so TLS and SASL clusters work.
//!
//! Consumer, set by kp (the commit rule depends on them; a user value for these is refused):
//! - `enable.auto.commit=false` (alias `auto.commit.enable`): kp commits, and only what is finished.
//! - `enable.auto.offset.store=false`, `offset.store.method` left at `broker`: nothing becomes
//!   committable behind kp's back, and offsets live in the group, nowhere else.
//! - `group.id`: from the plugin manifest.
//! - `queued.min.messages`: from `--queue-depth` (kp's backpressure bound per partition).
//! - `group.instance.id`: `ID-<plugin>` with `--instance-id ID` (static membership), else unset.
//!
//! Consumer defaults the user may override:
//! - `auto.offset.reset=earliest`: a new group starts at the beginning; nothing is skipped.
//! - `partition.assignment.strategy=cooperative-sticky` (classic protocol only): a rebalance
//!   moves only the partitions that change owner; the others keep flowing.
//! - `client.id=kp-<plugin>`: shows in broker logs and metrics.
//! - `fetch.queue.backoff.ms=10`: librdkafka's default (1000) stalls a partition's fetching for a
//!   second each time its prefetch queue fills, which cut kp's throughput by two thirds.
//! - `queued.max.messages.kbytes`, `max.partition.fetch.bytes`, `fetch.max.bytes`: each input
//!   partition's equal part of `--prefetch-mib` ([`Prefetch`]), so what a plugin holds
//!   prefetched does not grow with its partitions.
//! - `statistics.interval.ms=5000` with `--http`: librdkafka's statistics give each partition's
//!   committed offset and lag to the metrics and `/status` (0 turns them off).
//!
//! Producer: refused unless they keep an acknowledged output durable and unique:
//! - `acks` (alias `request.required.acks`) other than `all`/`-1`: an output acknowledged by one
//!   replica can vanish in a leader change after its input was committed.
//! - `enable.idempotence=false`, unless the operator accepts duplicates (`--accept-duplicates`):
//!   a retried send could then write an output twice or out of order.
//!
//! Producer defaults the user may override:
//! - `enable.idempotence=true`: retries neither duplicate nor reorder outputs.
//! - `message.timeout.ms=0`: an output is retried until the broker takes it. A broker outage
//!   delays outputs (and so commits); it never fails a message. A finite value that runs out
//!   halts the partition, because kp cannot tell whether the output was written.
//! - `allow.auto.create.topics=false`: an output to a topic that does not exist is refused
//!   (the failure policy applies), never a new topic created by accident.
//! - `partitioner=murmur2_random`: keyed outputs land on the partition a Java client would choose.
//! - `linger.ms=5`: small batches without adding noticeable latency.
//!
//! Refused for every client, because they make librdkafka load or run code chosen by whoever
//! writes the configuration: `plugin.library.paths`, `ssl.engine.location`, `ssl.providers`,
//! `sasl.kerberos.kinit.cmd`.
//!
//! Values are secrets often: a value written `${env:NAME}` or `${file:PATH}` is read from that
//! environment variable or file ([`resolve_reference`]), and no message kp writes about a
//! property ever contains its value (refusals name the key; librdkafka's own refusals are
//! redacted by [`create_client`]).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::KafkaError;

/// Which consumer group protocol to use (`--group-protocol`, `group-protocol` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupProtocol {
    /// The classic protocol with cooperative-sticky assignment. The default: every Kafka broker
    /// since 2.4 and every managed service speaks it, and librdkafka's support is long proven.
    #[default]
    Classic,
    /// KIP-848's broker-driven protocol (Kafka 4.0+): faster, incremental rebalances.
    Consumer,
}

/// Consumer properties that would break kp's commit rule if a user changed them.
const KP_OWNED: &[&str] = &[
    "enable.auto.commit",
    "auto.commit.enable",
    "enable.auto.offset.store",
    "offset.store.method",
    "group.id",
    "group.instance.id",
    "queued.min.messages",
];

/// Properties that make librdkafka load a library or run a command.
const LOADS_CODE: &[&str] = &[
    "plugin.library.paths",
    "ssl.engine.location",
    "ssl.providers",
    "sasl.kerberos.kinit.cmd",
];

/// Producer properties whose only safe value is `all` (an output acknowledged by the leader
/// alone can be lost after its input's offset was committed).
const ACKS: &[&str] = &["acks", "request.required.acks"];

/// Properties librdkafka refuses under `group.protocol=consumer` (the broker owns them there).
const CLASSIC_ONLY: &[&str] = &[
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
];

/// How to reach the cluster and how to configure the clients.
#[derive(Debug, Clone, Default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_protocol: GroupProtocol,
    /// Pass-through properties for both consumers and the producer.
    pub common: BTreeMap<String, String>,
    /// Pass-through properties for consumers only.
    pub consumer: BTreeMap<String, String>,
    /// Pass-through properties for the producer only.
    pub producer: BTreeMap<String, String>,
    /// Ask librdkafka for statistics (each partition's committed offset and lag), for the
    /// metrics and `/status`: set by `kp run` when it serves them (`--http`).
    pub partition_statistics: bool,
    /// The operator accepts that a retried send may write an output twice: only then may the
    /// producer run without idempotence (`--accept-duplicates`).
    pub accept_duplicates: bool,
    /// This kp's stable name (`--instance-id`): with it, each plugin's consumer is a static
    /// group member (`group.instance.id` = ID-PLUGIN), so a restart within the session timeout
    /// gets its partitions back at once instead of after the old member's session expires.
    pub instance_id: Option<String>,
}

impl KafkaSettings {
    /// Refuses settings that cannot work or would break the commit rule, with a message naming
    /// the property (never its value).
    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            bail!("no brokers given (use --brokers HOST:PORT, or `kp dev` for an embedded broker)");
        }
        let every = self
            .common
            .iter()
            .chain(&self.consumer)
            .chain(&self.producer);
        for (key, _) in every {
            if LOADS_CODE.contains(&key.as_str()) {
                bail!(
                    "the Kafka property {key} cannot be set: it makes librdkafka load or run code \
                     named by the configuration, which kp does not allow"
                );
            }
        }
        for (key, _) in self.common.iter().chain(&self.consumer) {
            if KP_OWNED.contains(&key.as_str()) {
                bail!(
                    "the Kafka property {key} cannot be set: kp sets it itself \
                     (offsets are committed only once the handler has finished with a message; \
                     queue depth: --queue-depth; static membership: --instance-id)"
                );
            }
            if self.group_protocol == GroupProtocol::Consumer
                && CLASSIC_ONLY.contains(&key.as_str())
            {
                bail!(
                    "the Kafka property {key} belongs to the classic group protocol; with \
                     --group-protocol consumer the broker decides it (set it broker-side, or drop it)"
                );
            }
            if key == "group.protocol" {
                bail!(
                    "set the group protocol with --group-protocol, not the property group.protocol"
                );
            }
        }
        for (key, value) in self.common.iter().chain(&self.producer) {
            if ACKS.contains(&key.as_str()) && !matches!(value.trim(), "all" | "-1") {
                bail!(
                    "the Kafka property {key} must be all (or -1), or left unset: kp commits an \
                     input once its outputs are acknowledged, and an output acknowledged by the \
                     leader alone can be lost when the leader changes"
                );
            }
            if key == "enable.idempotence"
                && !self.accept_duplicates
                && !matches!(value.trim(), "true" | "1")
            {
                bail!(
                    "the Kafka property enable.idempotence can be turned off only with \
                     --accept-duplicates (accept-duplicates = true in the config file): without \
                     it a retried send can write an output twice or out of order"
                );
            }
        }
        Ok(())
    }

    /// Replaces every `${env:NAME}` and `${file:PATH}` value by what it names.
    pub fn resolve_references(&mut self) -> Result<()> {
        for map in [&mut self.common, &mut self.consumer, &mut self.producer] {
            for (key, value) in map.iter_mut() {
                if let Some(resolved) = resolve_reference(key, value)? {
                    *value = resolved;
                }
            }
        }
        Ok(())
    }

    /// The configuration of a plugin's consumer, reading at most `queue_depth` messages and
    /// `prefetch`'s share of bytes ahead per partition.
    pub fn consumer_config(
        &self,
        plugin: &str,
        group_id: &str,
        queue_depth: usize,
        prefetch: Prefetch,
    ) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("kp-{plugin}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.queue.backoff.ms", "10");
        // The prefetch budget, unless the user set these (or an alias: librdkafka applies a
        // client's properties in no fixed order, so kp must not set a second name for one).
        let user_set = |keys: &[&str]| {
            keys.iter()
                .any(|k| self.common.contains_key(*k) || self.consumer.contains_key(*k))
        };
        if !user_set(&["queued.max.messages.kbytes"]) {
            // Checked before a partition is fetched, and a fetch brings up to the partition
            // fetch size more: at most about twice this per partition.
            config.set("queued.max.messages.kbytes", prefetch.share_kib.to_string());
        }
        if !user_set(&["max.partition.fetch.bytes", "fetch.message.max.bytes"]) {
            config.set(
                "max.partition.fetch.bytes",
                prefetch.partition_fetch_bytes().to_string(),
            );
        }
        if !user_set(&["fetch.max.bytes", "message.max.bytes"]) {
            // librdkafka lowers a fetch request's size to queued.max.messages.kbytes unless it
            // is set: one request must still carry many partitions' parts.
            config.set("fetch.max.bytes", prefetch.request_bytes().to_string());
        }
        if self.partition_statistics {
            // Committed offsets and lag per partition for the metrics and /status.
            config.set("statistics.interval.ms", "5000");
        }
        match self.group_protocol {
            GroupProtocol::Classic => {
                config
                    .set("group.protocol", "classic")
                    .set("partition.assignment.strategy", "cooperative-sticky");
            }
            GroupProtocol::Consumer => {
                config.set("group.protocol", "consumer");
            }
        }
        for (k, v) in self.common.iter().chain(self.consumer.iter()) {
            config.set(k, v);
        }
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("queued.min.messages", queue_depth.to_string());
        if let Some(id) = &self.instance_id {
            config.set("group.instance.id", format!("{id}-{plugin}"));
        }
        config
    }

    /// The configuration of a client that only reads metadata (checking topics exist).
    pub fn metadata_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "kp-metadata");
        for (k, v) in &self.common {
            config.set(k, v);
        }
        config
    }

    /// The configuration of the producer that sends every plugin's outputs.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "kp-producer")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "0")
            .set("allow.auto.create.topics", "false")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5");
        for (k, v) in self.common.iter().chain(self.producer.iter()) {
            config.set(k, v);
        }
        config
    }
}

/// A plugin's prefetch budget (`--prefetch-mib`) split over its input partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// The whole budget, in bytes.
    pub budget_bytes: u64,
    /// Each partition's part, in KiB (`queued.max.messages.kbytes`).
    pub share_kib: u64,
}

impl Prefetch {
    /// An equal share of `budget_bytes` for each of `partitions`: at least 64 KiB (a fetch
    /// smaller than that costs more requests than it saves memory: 64 KiB at 1,000 partitions
    /// halved kp's rate in the scale bench) and at most librdkafka's own default (64 MiB).
    pub fn split(budget_bytes: u64, partitions: usize) -> Self {
        Prefetch {
            budget_bytes,
            share_kib: (budget_bytes / 1024 / partitions.max(1) as u64).clamp(64, 64 * 1024),
        }
    }

    /// Most bytes one fetch takes of one partition: its share, at most librdkafka's default
    /// (1 MiB).
    pub fn partition_fetch_bytes(&self) -> u64 {
        (self.share_kib * 1024).min(1 << 20)
    }

    /// Most bytes of one fetch request: the budget, at most librdkafka's default (50 MiB), at
    /// least the largest record librdkafka takes by default (`message.max.bytes`, 1,000,000).
    pub fn request_bytes(&self) -> u64 {
        self.budget_bytes.clamp(1_000_000, 50 << 20)
    }

    /// The most this plugin's partitions may hold in records' bytes: each its share and one
    /// fetch more. Above the budget when the 64 KiB floor applies.
    pub fn most_bytes(&self, partitions: usize) -> u64 {
        partitions.max(1) as u64 * (self.share_kib * 1024 + self.partition_fetch_bytes())
    }
}

/// Parses `key=value` (a `-X` argument).
pub fn parse_property(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("expected a Kafka property as key=value, got an argument without a key or '='"),
    }
}

/// True for keys whose values are usually secrets (passwords, client secrets, private keys),
/// which should not be written on a command line or in a world-readable file.
pub fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    (key.contains("password") || key.contains("secret") || key.contains(".key"))
        && !key.ends_with(".location")
}

/// True when a value is read from elsewhere (`${env:..}` or `${file:..}`) rather than written.
pub fn is_reference(value: &str) -> bool {
    value.starts_with("${env:") || value.starts_with("${file:")
}

/// Reads a property value given as a reference: `${env:NAME}` (the environment variable NAME)
/// or `${file:PATH}` (the whole file, without one trailing newline). `$${...}` stands for the
/// literal text `${...}`. `None` when the value is written out as it is. Errors name the key and
/// the variable or file, never a value.
pub fn resolve_reference(key: &str, value: &str) -> Result<Option<String>> {
    if let Some(literal) = value.strip_prefix("$${") {
        return Ok(Some(format!("${{{literal}")));
    }
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return Ok(None);
    };
    if let Some(name) = inner.strip_prefix("env:") {
        let resolved = std::env::var(name).map_err(|e| match e {
            std::env::VarError::NotPresent => anyhow::anyhow!(
                "Kafka property {key}: the environment variable {name} (named by ${{env:{name}}}) is not set"
            ),
            std::env::VarError::NotUnicode(_) => anyhow::anyhow!(
                "Kafka property {key}: the environment variable {name} is not valid UTF-8"
            ),
        })?;
        return Ok(Some(resolved));
    }
    if let Some(path) = inner.strip_prefix("file:") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Kafka property {key}: reading the file {path}"))?;
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        return Ok(Some(text.to_string()));
    }
    bail!(
        "Kafka property {key}: a value starting with ${{ must be ${{env:NAME}} or ${{file:PATH}} \
         (write $${{ for a literal ${{)"
    )
}

/// Creates a librdkafka client. librdkafka's refusal of a property quotes its value, which may be
/// a password: the error kp returns names the property and says why, with the value hidden.
pub fn create_client<T, C>(config: &ClientConfig, context: C, what: &str) -> Result<T>
where
    T: FromClientConfigAndContext<C>,
    C: rdkafka::ClientContext,
{
    T::from_config_and_context(config, context).map_err(|e| match e {
        KafkaError::ClientConfig(_, description, key, value) => {
            let description = redact(&description, &key, &value);
            anyhow::anyhow!(
                "{what}: the Kafka property {key} is refused by librdkafka: {description}"
            )
        }
        other => anyhow::Error::new(other).context(what.to_string()),
    })
}

/// `text` with `value` hidden: where librdkafka quotes it, and anywhere for a secret-looking key
/// or a value long enough not to hide ordinary words.
fn redact(text: &str, key: &str, value: &str) -> String {
    if value.is_empty() {
        return text.to_string();
    }
    let text = text.replace(&format!("\"{value}\""), "(value hidden)");
    if looks_secret(key) || value.len() >= 4 {
        text.replace(value, "(value hidden)")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> KafkaSettings {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            ..Default::default()
        }
    }

    #[test]
    fn kp_owned_properties_are_refused() {
        let mut s = settings();
        s.common.insert("enable.auto.commit".into(), "true".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("enable.auto.commit")
        );
        let mut s = settings();
        s.consumer
            .insert("enable.auto.offset.store".into(), "true".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn classic_only_properties_are_refused_under_kip848() {
        let mut s = settings();
        s.common.insert("session.timeout.ms".into(), "6000".into());
        assert!(s.validate().is_ok());
        s.group_protocol = GroupProtocol::Consumer;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("session.timeout.ms")
        );
    }

    #[test]
    fn consumer_config_keeps_the_commit_rule() {
        let mut s = settings();
        s.common
            .insert("security.protocol".into(), "SASL_SSL".into());
        let c = s.consumer_config("up", "kp-up", 500, Prefetch::split(1 << 28, 1));
        assert_eq!(c.get("queued.min.messages"), Some("500"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("kp-up"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        s.group_protocol = GroupProtocol::Consumer;
        let c = s.consumer_config("up", "kp-up", 500, Prefetch::split(1 << 28, 1));
        assert_eq!(c.get("partition.assignment.strategy"), None);
        assert_eq!(c.get("group.instance.id"), None);
        s.instance_id = Some("web-1".into());
        let c = s.consumer_config("up", "kp-up", 500, Prefetch::split(1 << 28, 1));
        assert_eq!(c.get("group.instance.id"), Some("web-1-up"));
        assert_eq!(c.get("group.protocol"), Some("consumer"));
    }

    #[test]
    fn the_prefetch_budget_is_shared_by_the_partitions_and_the_user_may_override_it() {
        let mib = 1u64 << 20;
        // 256 MiB over 1,000 partitions: 262 KiB each; over 1: librdkafka's own 64 MiB at most.
        let split = |budget, partitions| Prefetch::split(budget, partitions).share_kib;
        assert_eq!(split(256 * mib, 1000), 262);
        assert_eq!(split(256 * mib, 1), 64 * 1024);
        assert_eq!(split(256 * mib, 0), 64 * 1024);
        assert_eq!(split(mib, 1_000_000), 64, "at least 64 KiB");
        let p = Prefetch::split(256 * mib, 1000);
        assert_eq!(p.most_bytes(1000), 1000 * 2 * 262 * 1024);
        assert!(Prefetch::split(mib, 100).most_bytes(100) > mib, "the floor");
        let mut s = settings();
        let c = s.consumer_config("up", "kp-up", 500, p);
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("262"));
        assert_eq!(c.get("max.partition.fetch.bytes"), Some("268288"));
        assert_eq!(c.get("fetch.max.bytes"), Some("52428800"));
        let c = s.consumer_config("up", "kp-up", 500, Prefetch::split(256 * mib, 1));
        assert_eq!(
            c.get("max.partition.fetch.bytes"),
            Some("1048576"),
            "never above librdkafka's default"
        );
        let c = s.consumer_config("up", "kp-up", 500, Prefetch::split(mib, 1));
        assert_eq!(c.get("fetch.max.bytes"), Some("1048576"));
        // The user's value wins, under either name: kp sets neither then.
        s.consumer
            .insert("fetch.message.max.bytes".into(), "4096".into());
        s.common
            .insert("message.max.bytes".into(), "2000000".into());
        let c = s.consumer_config("up", "kp-up", 500, p);
        assert_eq!(c.get("fetch.message.max.bytes"), Some("4096"), "-X wins");
        assert_eq!(c.get("max.partition.fetch.bytes"), None);
        assert_eq!(c.get("fetch.max.bytes"), None);
    }

    fn refusal(key: &str, value: &str, producer: bool) -> Option<String> {
        let mut s = settings();
        let map = if producer {
            &mut s.producer
        } else {
            &mut s.common
        };
        map.insert(key.into(), value.into());
        s.validate().err().map(|e| e.to_string())
    }

    #[test]
    fn properties_that_load_code_are_refused_without_their_value() {
        for key in LOADS_CODE {
            let why = refusal(key, "/tmp/evil-hunter2.so", true).expect("refused");
            assert!(
                why.contains(key) && why.contains("load or run code"),
                "{why}"
            );
            assert!(!why.contains("hunter2"), "{why}");
        }
    }

    #[test]
    fn producer_settings_that_lose_or_duplicate_outputs_are_refused() {
        for acks in ["1", "0"] {
            let why = refusal("acks", acks, true).expect("refused");
            assert!(why.contains("acks") && why.contains("all"), "{why}");
            assert!(refusal("request.required.acks", acks, false).is_some());
        }
        assert!(refusal("acks", "all", true).is_none());
        assert!(refusal("acks", "-1", false).is_none());
        let why = refusal("enable.idempotence", "false", true).expect("refused");
        assert!(why.contains("--accept-duplicates"), "{why}");
        assert!(refusal("enable.idempotence", "true", true).is_none());
        let mut s = settings();
        s.accept_duplicates = true;
        s.producer
            .insert("enable.idempotence".into(), "false".into());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn kp_owned_refusals_never_quote_the_value() {
        let why = refusal("enable.auto.commit", "hunter2-secret", false).expect("refused");
        assert!(!why.contains("hunter2"), "{why}");
        let why = refusal("offset.store.method", "file", false).expect("refused");
        assert!(why.contains("offset.store.method"), "{why}");
    }

    #[test]
    fn references_read_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let reference = format!("${{file:{}}}", file.display());
        assert_eq!(
            resolve_reference("sasl.password", &reference).unwrap(),
            Some("s3cret".into())
        );
        assert_eq!(resolve_reference("k", "plain").unwrap(), None);
        assert_eq!(
            resolve_reference("k", "$${env:X}").unwrap(),
            Some("${env:X}".into())
        );
        let path = std::env::var("PATH").unwrap();
        assert_eq!(resolve_reference("k", "${env:PATH}").unwrap(), Some(path));
        let missing = resolve_reference("sasl.password", "${env:KP_SURELY_UNSET_VARIABLE}")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("sasl.password") && missing.contains("KP_SURELY_UNSET_VARIABLE"),
            "{missing}"
        );
        assert!(resolve_reference("k", "${vault:x}").is_err());
        let unreadable = format!(
            "{:#}",
            resolve_reference("k", "${file:/nonexistent/pw}").unwrap_err()
        );
        assert!(unreadable.contains("/nonexistent/pw"), "{unreadable}");
    }

    #[test]
    fn secret_looking_keys() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "ssl.keystore.password",
        ] {
            assert!(looks_secret(key), "{key}");
        }
        for key in [
            "sasl.username",
            "ssl.key.location",
            "ssl.ca.location",
            "acks",
        ] {
            assert!(!looks_secret(key), "{key}");
        }
    }

    #[test]
    fn librdkafka_refusals_hide_the_value() {
        let mut config = ClientConfig::new();
        config
            .set("ssl.key.password", "hunter2")
            .set("ssl.engine.id", "x")
            .set("socket.timeout.ms", "not-a-number-hunter2");
        let err = create_client::<rdkafka::producer::BaseProducer, _>(
            &config,
            rdkafka::producer::DefaultProducerContext,
            "creating the producer",
        )
        .err()
        .expect("refused");
        let text = format!("{err:#}");
        assert!(text.contains("socket.timeout.ms"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn properties_parse() {
        assert_eq!(
            parse_property("a.b=c=d").unwrap(),
            ("a.b".into(), "c=d".into())
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());
    }
}
