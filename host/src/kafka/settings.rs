//! librdkafka client settings: what kp sets itself, and why, plus the user's pass-through
//! properties (`-X key=value`, or `[kafka]` in the config file), so SASL/TLS clusters work.
//!
//! Consumer, set by kp (the commit rule depends on them; a user value for these is refused):
//! - `enable.auto.commit=false`: kp commits, and only what is finished.
//! - `enable.auto.offset.store=false`: nothing becomes committable behind kp's back.
//! - `group.id`: from the plugin manifest.
//!
//! Consumer defaults the user may override:
//! - `auto.offset.reset=earliest`: a new group starts at the beginning; nothing is skipped.
//! - `partition.assignment.strategy=cooperative-sticky` (classic protocol only): a rebalance
//!   moves only the partitions that change owner; the others keep flowing.
//! - `client.id=kp-<plugin>`: shows in broker logs and metrics.
//! - `fetch.queue.backoff.ms=10`: librdkafka's default (1000) stalls a partition's fetching for a
//!   second each time its prefetch queue fills, which cut kp's throughput by two thirds.
//!
//! Producer defaults the user may override:
//! - `enable.idempotence=true`: retries neither duplicate nor reorder outputs.
//! - `partitioner=murmur2_random`: keyed outputs land on the partition a Java client would choose.
//! - `linger.ms=5`: small batches without adding noticeable latency.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use rdkafka::ClientConfig;

/// Which consumer group protocol to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GroupProtocol {
    /// The classic protocol with cooperative-sticky assignment. The default: every Kafka broker
    /// since 2.4 and every managed service speaks it, and librdkafka's support is long proven.
    #[default]
    Classic,
    /// KIP-848's broker-driven protocol (Kafka 4.0+): faster, incremental rebalances.
    Consumer,
}

/// Properties that would break kp's commit rule if a user changed them.
const KP_OWNED: &[&str] = &["enable.auto.commit", "enable.auto.offset.store", "group.id"];

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
}

impl KafkaSettings {
    /// Refuses settings that cannot work, with a message naming the property.
    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            bail!("no brokers given (use --brokers HOST:PORT, or `kp dev` for an embedded broker)");
        }
        for (key, value) in self.common.iter().chain(self.consumer.iter()) {
            if KP_OWNED.contains(&key.as_str()) {
                bail!(
                    "the Kafka property {key}={value} cannot be set: kp sets it itself \
                     (offsets are committed only once the handler has finished with a message)"
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
        }
        if let Some(p) = self
            .common
            .get("group.protocol")
            .or(self.consumer.get("group.protocol"))
        {
            bail!("set the group protocol with --group-protocol, not group.protocol={p}");
        }
        Ok(())
    }

    /// The configuration of a plugin's consumer.
    pub fn consumer_config(&self, plugin: &str, group_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("kp-{plugin}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.queue.backoff.ms", "10");
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
            .set("enable.auto.offset.store", "false");
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
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5");
        for (k, v) in self.common.iter().chain(self.producer.iter()) {
            config.set(k, v);
        }
        config
    }
}

/// Parses `key=value` (a `-X` argument).
pub fn parse_property(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("expected a Kafka property as key=value, got {arg:?}"),
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
        let c = s.consumer_config("up", "kp-up");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("kp-up"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        s.group_protocol = GroupProtocol::Consumer;
        let c = s.consumer_config("up", "kp-up");
        assert_eq!(c.get("partition.assignment.strategy"), None);
        assert_eq!(c.get("group.protocol"), Some("consumer"));
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
