//! The Kafka side: consume each plugin's topics, run the handler, produce, commit.
//!
//! - [`settings`]: librdkafka properties kp sets (and why) and the user's pass-through ones.
//! - [`executor`]: **the execution model**: a fixed set of worker threads running the
//!   partitions of every plugin in turns, woken by librdkafka when a partition has records.
//! - [`plugin_consumer`]: one group member per plugin; rebalances (split queues, drain), halts.
//! - [`partition`]: one partition's task: reads its own queue; calls the guest in offset order;
//!   retries, failure policies, new plugin versions between messages; strict mode.
//! - [`instances`]: guest instances checked out per turn, bounded by workers, not partitions.
//! - [`progress`]: **the commit rule**: which offset of a partition is finished.
//! - [`committer`]: commits finished offsets as early as possible, coalescing while one is in flight.
//! - [`output`]: the shared idempotent producer and its delivery reports.
//! - [`record`]: a consumed record as the WIT message, header names read as bytes.
//! - [`health`]: halted partitions, for the log and the exit status.

pub(crate) mod committer;
pub(crate) mod executor;
pub(crate) mod health;
pub(crate) mod instances;
pub(crate) mod output;
pub(crate) mod partition;
pub(crate) mod plugin_consumer;
pub(crate) mod progress;
pub(crate) mod record;
pub mod settings;

use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;

pub use health::{Halt, Health};
pub use plugin_consumer::{PartitionStatus, PluginConsumer, PluginView};
pub use settings::{GroupProtocol, KafkaSettings};

/// When offsets are committed (`--commit-mode`, `commit-mode` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// After each handler return a commit goes out; returns that arrive while a commit is in
    /// flight are coalesced into the next one.
    #[default]
    Eager,
    /// Synchronously after every message, before the next one is handed to the handler.
    Strict,
}

/// `--queue-depth`'s default.
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;
/// `--drain-timeout-ms`'s default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// `--max-uncommitted`'s default. It bounds what a crash makes kp handle again, and must not slow
/// a partition whose commits keep up: a message counts until its outputs are acknowledged and
/// its offset committed (linger, a produce and a commit round trip: 20–40 ms on the project
/// machine under load, more to a remote cluster), so a partition can run at most this many
/// messages per commit cycle. 50,000 lets one partition do 500k messages/s over a 100 ms cycle.
/// The earlier 5,000 held a single partition to 278k/s where 20,000 or more gave 504–524k/s
/// (2026-11-30, Rust passthrough, broker on the same 2 cores).
pub const DEFAULT_MAX_UNCOMMITTED: u64 = 50_000;

/// `--prefetch-mib`'s default: what librdkafka may hold in prefetched records per plugin, shared
/// by its input partitions ([`settings::Prefetch`]). librdkafka's own limits are
/// per partition once each partition has its own queue, as in kp (64 MiB and 10,000 messages
/// each by default): 1,000 partitions with a backlog could hold gigabytes.
pub const DEFAULT_PREFETCH_MIB: u64 = 256;

/// Options shared by every plugin consumer of one `kp run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub kafka: KafkaSettings,
    pub commit_mode: CommitMode,
    /// Bound on draining a revoked partition, and on shutdown.
    pub drain_timeout: Duration,
    /// Messages librdkafka keeps queued per partition (`queued.min.messages`).
    pub queue_depth: usize,
    /// At most this many messages of a partition are handled but not yet committed: the bound on
    /// what is handled again after a crash. A worker that reaches it waits for the commit.
    pub max_uncommitted: u64,
    /// Bytes of prefetched records librdkafka may hold per plugin, over all its input partitions
    /// (`--prefetch-mib`).
    pub prefetch_bytes: u64,
    /// The operator's policy: what each plugin may read, write and know.
    pub policy: crate::policy::Policy,
    /// Worker threads that run the partitions of every plugin (`--workers`).
    pub workers: usize,
    /// `kp dev` only: a plugin's topics that the cluster lacks are created before it starts,
    /// instead of refusing the plugin.
    pub create_missing_topics: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            kafka: KafkaSettings::default(),
            commit_mode: CommitMode::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_uncommitted: DEFAULT_MAX_UNCOMMITTED,
            prefetch_bytes: DEFAULT_PREFETCH_MIB << 20,
            policy: crate::policy::Policy::default(),
            workers: executor::default_workers(),
            create_missing_topics: false,
        }
    }
}

/// True when `metadata`, fetched for `topic`, says the cluster has it. Only "unknown topic" (or
/// no partitions) means it has not: any other error (a leader being elected) is not a deleted
/// topic. The one rule for the registry's start check, the consumers' watch for deleted input
/// topics and the committer's check before dropping offsets.
pub(crate) fn has_topic(metadata: &rdkafka::metadata::Metadata, topic: &str) -> bool {
    metadata.topics().iter().any(|t| {
        t.name() == topic
            && t.error().is_none_or(|e| {
                rdkafka::error::RDKafkaErrorCode::from(e)
                    != rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition
            })
            && !t.partitions().is_empty()
    })
}

/// Sends a librdkafka log line to `tracing` at the matching level.
pub(crate) fn rdkafka_log(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "kp::librdkafka", client, fac, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "kp::librdkafka", client, fac, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "kp::librdkafka", client, fac, "{message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "kp::librdkafka", client, fac, "{message}")
        }
    }
}
