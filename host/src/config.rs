//! The optional `kp run --config FILE` file. Command-line flags override it.
//!
//! ```toml
//! brokers = "broker-1:9092,broker-2:9092"
//! plugins = "/srv/kp/plugins"
//! group-protocol = "classic"     # or "consumer" (KIP-848)
//! commit-mode = "eager"          # or "strict"
//! drain-timeout-ms = 30000
//! queue-depth = 10000
//!
//! [kafka]                        # librdkafka properties for every client
//! "security.protocol" = "SASL_SSL"
//! "sasl.mechanisms" = "PLAIN"
//! [kafka-consumer]               # consumers only
//! "fetch.min.bytes" = "1"
//! [kafka-producer]               # the producer only
//! "compression.type" = "zstd"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::kafka::{CommitMode, GroupProtocol};

/// The contents of a config file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub brokers: Option<String>,
    pub plugins: Option<PathBuf>,
    pub group_protocol: Option<GroupProtocolName>,
    pub commit_mode: Option<CommitModeName>,
    pub drain_timeout_ms: Option<u64>,
    pub queue_depth: Option<usize>,
    #[serde(default)]
    pub kafka: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub kafka_consumer: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub kafka_producer: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupProtocolName {
    Classic,
    Consumer,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitModeName {
    Eager,
    Strict,
}

impl From<GroupProtocolName> for GroupProtocol {
    fn from(n: GroupProtocolName) -> Self {
        match n {
            GroupProtocolName::Classic => GroupProtocol::Classic,
            GroupProtocolName::Consumer => GroupProtocol::Consumer,
        }
    }
}

impl From<CommitModeName> for CommitMode {
    fn from(n: CommitModeName) -> Self {
        match n {
            CommitModeName::Eager => CommitMode::Eager,
            CommitModeName::Strict => CommitMode::Strict,
        }
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// librdkafka properties are strings; accept TOML numbers and booleans too.
pub fn property_strings(table: &BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, String>> {
    table
        .iter()
        .map(|(k, v)| {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => anyhow::bail!(
                    "Kafka property {k} must be a string, number or boolean, not a {}",
                    other.type_str()
                ),
            };
            Ok((k.clone(), s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let c: FileConfig = toml::from_str(
            "brokers = \"b:9092\"\ncommit-mode = \"strict\"\n[kafka]\n\"fetch.wait.max.ms\" = 10\n",
        )
        .unwrap();
        assert_eq!(c.brokers.as_deref(), Some("b:9092"));
        assert!(matches!(c.commit_mode, Some(CommitModeName::Strict)));
        assert_eq!(
            property_strings(&c.kafka).unwrap()["fetch.wait.max.ms"],
            "10"
        );
        assert!(toml::from_str::<FileConfig>("broker = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("commit-mode = \"lazy\"").is_err());
    }
}
