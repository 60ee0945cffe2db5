//! The optional `kp run --config FILE` file. Command-line flags override it.
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
//! max-uncommitted = 5000         # per partition: handled but not yet committed, at most
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

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::kafka::settings::looks_secret;
use crate::kafka::{CommitMode, GroupProtocol};
use crate::policy::{PluginPolicy, Tenancy};

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
    /// Lets the producer run without idempotence (`--accept-duplicates`).
    pub accept_duplicates: Option<bool>,
    pub instance_id: Option<String>,
    pub max_uncommitted: Option<u64>,
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
            .filter(|(k, v)| {
                looks_secret(k) && !v.as_str().is_some_and(crate::kafka::settings::is_reference)
            })
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

    #[test]
    fn literal_secrets_are_found_and_references_are_not() {
        let c: FileConfig = toml::from_str(
            "[kafka]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"kp\"\n\
             [kafka-producer]\n\"ssl.key.password\" = \"${file:/run/secrets/key}\"\n",
        )
        .unwrap();
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
