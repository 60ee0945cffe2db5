//! `PluginConsumer`: one consumer group member per plugin, on a thread of its own.
//!
//! The thread polls the consumer continuously (so a slow handler never gets the member kicked out
//! for exceeding `max.poll.interval.ms`), and hands each message to its partition's worker over a
//! bounded queue. When a queue is full the partition is *paused* (librdkafka stops fetching it)
//! rather than buffered; it is resumed once its queue has drained to half.
//!
//! Rebalances run on this same thread, inside `poll`:
//! - assigned partitions get a fresh progress tracker and worker;
//! - revoked partitions are *drained* before they are given up: stop handing out messages, let
//!   the message in the handler finish, wait for its outputs' acknowledgements, commit, all within
//!   the drain timeout. Messages still queued are dropped uncommitted; the next owner reads them.
//!
//! Shutdown drains every partition the same way, stops the committer, and closes the consumer,
//! which leaves the group.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use crossbeam_channel::TrySendError;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{ClientContext, TopicPartitionList};

use super::committer::{CommitRequest, CommitSink, Committer};
use super::health::Health;
use super::progress::PartitionProgress;
use super::worker::{self, WorkerHandle, WorkerShared};
use super::{RunOptions, rdkafka_log};
use crate::sandbox::{Header, LoadedPlugin, Message, Timestamp, TimestampType};

type PartitionKey = (Arc<str>, i32);

/// One assigned partition as the consumer sees it.
struct PartitionSlot {
    worker: WorkerHandle,
    /// Messages polled while the partition was paused or its queue full, oldest first.
    backlog: VecDeque<Message>,
    /// True while librdkafka is told not to fetch this partition.
    paused: bool,
    /// True once the worker has halted; the partition stays paused.
    halted: bool,
}

/// The consumer context: owns the partition table, so rebalance callbacks (which librdkafka runs
/// on the polling thread) can start and drain workers.
pub struct PluginContext {
    /// The published plugin version; workers switch to a new one between messages.
    versions: Arc<ArcSwap<LoadedPlugin>>,
    name: Arc<str>,
    shared: WorkerShared,
    health: Arc<Health>,
    options: RunOptions,
    /// Assigned partitions. Only the polling thread touches it; the mutex satisfies `Sync`.
    partitions: Mutex<HashMap<PartitionKey, PartitionSlot>>,
    /// Counts pauses for backpressure, for tests and metrics.
    pauses: std::sync::atomic::AtomicU64,
}

impl ClientContext for PluginContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        rdkafka_log(&self.name, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(plugin = %self.name, "librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for PluginContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let keys: Vec<PartitionKey> = tpl
                .elements()
                .iter()
                .map(|e| (Arc::from(e.topic()), e.partition()))
                .collect();
            tracing::info!(plugin = %self.name, partitions = ?partition_names(&keys), "partitions revoked: draining");
            self.drain(&keys);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let keys: Vec<PartitionKey> = tpl
                    .elements()
                    .iter()
                    .map(|e| (Arc::from(e.topic()), e.partition()))
                    .collect();
                tracing::info!(plugin = %self.name, partitions = ?partition_names(&keys), "partitions assigned");
                for key in keys {
                    self.assign(key);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(plugin = %self.name, "rebalance error: {e}"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::debug!(plugin = %self.name, "commit callback reported: {e}");
        }
    }
}

fn partition_names(keys: &[PartitionKey]) -> Vec<String> {
    keys.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

fn single(key: &PartitionKey) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition(&key.0, key.1);
    tpl
}

impl PluginContext {
    fn table(&self) -> MutexGuard<'_, HashMap<PartitionKey, PartitionSlot>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assign(&self, key: PartitionKey) {
        if self.table().contains_key(&key) {
            return;
        }
        let progress = Arc::new(PartitionProgress::new(
            self.name.clone(),
            key.0.clone(),
            key.1,
            self.shared.commits.clone(),
            self.health.clone(),
        ));
        match worker::spawn(
            self.versions.clone(),
            progress,
            self.shared.clone(),
            self.options.queue_depth,
        ) {
            Ok(worker) => {
                self.table().insert(
                    key,
                    PartitionSlot {
                        worker,
                        backlog: VecDeque::new(),
                        paused: false,
                        halted: false,
                    },
                );
            }
            Err(e) => {
                tracing::error!(plugin = %self.name, "cannot start a worker for {}/{}: {e:#}", key.0, key.1)
            }
        }
    }

    /// Hands a polled message to its partition's worker, pausing the partition if its queue is
    /// full. True when the partition now has a backlog to move along.
    fn dispatch(&self, consumer: &BaseConsumer<Self>, key: PartitionKey, message: Message) -> bool {
        let mut table = self.table();
        let Some(slot) = table.get_mut(&key) else {
            tracing::debug!(plugin = %self.name, "dropping a message of unassigned partition {}/{}", key.0, key.1);
            return false;
        };
        if slot.halted {
            return false;
        }
        if slot.paused || !slot.backlog.is_empty() {
            slot.backlog.push_back(message);
            return true;
        }
        match slot.worker.queue.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                slot.backlog.push_back(message);
                if let Err(e) = consumer.pause(&single(&key)) {
                    tracing::warn!(plugin = %self.name, "pausing {}/{} failed: {e}", key.0, key.1);
                }
                slot.paused = true;
                self.pauses.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Err(TrySendError::Disconnected(_)) => self.halt(consumer, &key, slot),
        }
        false
    }

    fn halt(&self, consumer: &BaseConsumer<Self>, key: &PartitionKey, slot: &mut PartitionSlot) {
        slot.halted = true;
        slot.backlog.clear();
        if !slot.paused {
            let _ = consumer.pause(&single(key));
            slot.paused = true;
        }
    }

    /// Moves backlogs into queues that have room, resumes partitions whose queue drained to half,
    /// and pauses partitions whose worker halted. Returns true while some partition has a backlog.
    fn service(&self, consumer: &BaseConsumer<Self>) -> bool {
        let mut table = self.table();
        let mut backlog = false;
        for (key, slot) in table.iter_mut() {
            if slot.halted {
                continue;
            }
            if slot.worker.progress.failed_at().is_some() {
                self.halt(consumer, key, slot);
                continue;
            }
            while let Some(message) = slot.backlog.pop_front() {
                match slot.worker.queue.try_send(message) {
                    Ok(()) => {}
                    Err(TrySendError::Full(message)) => {
                        slot.backlog.push_front(message);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        slot.backlog.clear();
                        break;
                    }
                }
            }
            if slot.paused
                && slot.backlog.is_empty()
                && slot.worker.queue.len() <= self.options.queue_depth / 2
            {
                match consumer.resume(&single(key)) {
                    Ok(()) => slot.paused = false,
                    Err(e) => {
                        tracing::warn!(plugin = %self.name, "resuming {}/{} failed: {e}", key.0, key.1)
                    }
                }
            }
            backlog |= slot.paused || !slot.backlog.is_empty();
        }
        backlog
    }

    /// Stops the workers of `keys`, lets their in-flight messages finish, commits, and forgets
    /// them. Bounded by the drain timeout.
    fn drain(&self, keys: &[PartitionKey]) {
        let deadline = Instant::now() + self.options.drain_timeout;
        let slots: Vec<(PartitionKey, PartitionSlot)> = {
            let mut table = self.table();
            keys.iter()
                .filter_map(|k| table.remove(k).map(|s| (k.clone(), s)))
                .collect()
        };
        if slots.is_empty() {
            return;
        }
        // Stop them all first, so they finish in parallel.
        for (_, slot) in &slots {
            slot.worker.stop.store(true, Ordering::Release);
        }
        let mut drained = Vec::new();
        for (key, slot) in slots {
            let WorkerHandle {
                queue,
                exited,
                progress,
                thread,
                ..
            } = slot.worker;
            // Closing the queue wakes an idle worker; queued messages are dropped uncommitted.
            drop(queue);
            let finished = matches!(
                exited.recv_deadline(deadline),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected)
            ) && progress.wait_idle(deadline);
            if finished {
                if let Some(t) = thread {
                    let _ = t.join();
                }
            } else {
                tracing::warn!(
                    plugin = %self.name, topic = %key.0, partition = key.1, in_flight = progress.in_flight(),
                    "drain timed out: messages still in flight are left uncommitted (they will be handled again)"
                );
            }
            drained.push((key, progress));
        }
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match self.shared.commits.flush(remaining) {
            Ok(()) => {
                for (key, progress) in &drained {
                    tracing::info!(
                        plugin = %self.name, topic = %key.0, partition = key.1,
                        committed = ?progress.committable(), "partition drained and committed"
                    );
                }
            }
            Err(e) => tracing::error!(plugin = %self.name, "final commit failed: {e:#}"),
        }
        for (key, progress) in drained {
            progress.detach();
            self.shared.commits.forget(key.0.clone(), key.1);
        }
    }

    /// Number of times a partition was paused because its queue was full.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
}

/// Copies a polled record into the WIT message type.
fn to_message(m: &BorrowedMessage<'_>) -> Message {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    name: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let timestamp = match m.timestamp() {
        rdkafka::Timestamp::NotAvailable => None,
        rdkafka::Timestamp::CreateTime(millis) => Some(Timestamp {
            millis,
            kind: TimestampType::CreateTime,
        }),
        rdkafka::Timestamp::LogAppendTime(millis) => Some(Timestamp {
            millis,
            kind: TimestampType::LogAppendTime,
        }),
    };
    Message {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp,
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// A running plugin consumer.
pub struct PluginConsumer {
    pub name: Arc<str>,
    /// Tells the polling thread to drain and leave.
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PluginConsumer {
    /// Joins the group and starts consuming the plugin's input topics.
    pub fn start(
        versions: Arc<ArcSwap<LoadedPlugin>>,
        producer: Arc<super::output::OutputProducer>,
        health: Arc<Health>,
        options: RunOptions,
    ) -> Result<Self> {
        let first = versions.load_full();
        let name: Arc<str> = Arc::from(first.name());
        let manifest = first.manifest.clone();
        let (commit_tx, commit_rx) = crossbeam_channel::unbounded::<CommitRequest>();
        let commits = CommitSink::new(commit_tx);
        let context = PluginContext {
            versions,
            name: name.clone(),
            shared: WorkerShared {
                producer,
                commits: commits.clone(),
                mode: options.commit_mode,
            },
            health,
            options: options.clone(),
            partitions: Mutex::new(HashMap::new()),
            pauses: Default::default(),
        };
        let consumer: BaseConsumer<PluginContext> = options
            .kafka
            .consumer_config(&name, &manifest.group_id)
            .create_with_context(context)
            .with_context(|| format!("plugin {name}: creating its consumer"))?;
        let topics: Vec<&str> = manifest.input_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("plugin {name}: subscribing to {topics:?}"))?;
        let consumer = Arc::new(consumer);
        let committer = Committer::start(name.clone(), consumer.clone(), commits, commit_rx)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kp-poll-{name}"))
            .spawn(move || poll_loop(&thread_name, consumer, committer, &flag))
            .context("starting the consumer thread")?;
        tracing::info!(plugin = %name, version = %first.version(), group = %manifest.group_id, topics = ?manifest.input_topics, "plugin consuming");
        Ok(PluginConsumer {
            name,
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the consumer to drain and leave its group.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits until the consumer has left (call `request_stop` first).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often partitions without a backlog are checked for halts.
const SERVICE_INTERVAL: Duration = Duration::from_millis(50);

fn poll_loop(
    name: &str,
    consumer: Arc<BaseConsumer<PluginContext>>,
    committer: Committer,
    stop: &AtomicBool,
) {
    let mut backlog = false;
    let mut serviced = Instant::now();
    while !stop.load(Ordering::Acquire) {
        // With a backlog, come back quickly to move it along; otherwise wait for messages.
        let timeout = if backlog {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                let key: PartitionKey = (Arc::from(m.topic()), m.partition());
                let message = to_message(&m);
                drop(m);
                backlog |= consumer.context().dispatch(&consumer, key, message);
            }
            Some(Err(e)) => tracing::warn!(plugin = name, "consumer error: {e}"),
            None => {}
        }
        // Moving backlogs along matters at once; checking for halts can wait a little.
        if backlog || serviced.elapsed() >= SERVICE_INTERVAL {
            backlog = consumer.context().service(&consumer);
            serviced = Instant::now();
        }
    }
    // Shutdown: drain everything we own, commit, stop the committer, then close (leave the group).
    let context = consumer.context();
    let keys: Vec<PartitionKey> = context.table().keys().cloned().collect();
    tracing::info!(
        plugin = name, partitions = ?partition_names(&keys), backpressure_pauses = context.pauses(),
        "stopping: draining"
    );
    context.drain(&keys);
    committer.stop();
    // The committer has dropped its handle: this is the last one, and dropping it closes the
    // consumer (librdkafka runs the final revoke, with nothing left to drain, and leaves the group).
    debug_assert_eq!(Arc::strong_count(&consumer), 1);
    drop(consumer);
    tracing::info!(plugin = name, "left the group");
}
