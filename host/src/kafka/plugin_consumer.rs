//! `PluginConsumer`: one consumer group member per plugin.
//!
//! Each assigned partition's messages go to a librdkafka queue of its own (split from the
//! consumer's), read by that partition's task ([`super::partition`]), which the shared workers
//! run in turns ([`super::executor`]). Backpressure is librdkafka's: a partition whose task is
//! not running is not polled, and librdkafka stops fetching a partition once its queue holds
//! `queued.min.messages` (kp sets it from `--queue-depth`). The consumer's own queue, polled
//! continuously by the consumer thread, then carries only events (rebalances, errors), so a slow
//! handler never gets the member kicked out for exceeding `max.poll.interval.ms`.
//!
//! Rebalances run on the consumer thread, inside `poll`:
//! - assigned partitions get their queue split off, a fresh progress tracker and a task,
//!   before librdkafka starts fetching them;
//! - revoked partitions are *drained* before they are given up: the task finishes the message
//!   in the handler and stops, its outputs' acknowledgements are awaited, the offsets committed,
//!   all within the drain timeout. Unread messages stay uncommitted; the next owner reads them.
//!
//! Shutdown drains every partition the same way, stops the committer, and closes the consumer,
//! which leaves the group. A halted partition (its task stopped on a failed message) is paused
//! so librdkafka stops fetching it; it is resumed from the halted message when a new version of
//! the plugin is published or an operator asks ([`PluginConsumer::resume_halted`]).
//!
//! What an operator sees of the consumer (joined, partitions, positions and lag from
//! librdkafka's statistics) is kept in its [`PluginView`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::settings::Prefetch;
use crate::stop::{Stop, StoppableThread};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::committer::{CommitRequest, CommitSink, Committer};
use super::executor::Executor;
use super::health::Health;
use super::instances::{AllInstances, PluginInstances};
use super::partition::{self, PartitionHandle, WorkerShared};
use super::progress::PartitionProgress;
use super::settings::create_client;
use super::{RunOptions, rdkafka_log};
use crate::sandbox::LoadedPlugin;

type PartitionKey = (Arc<str>, i32);

/// What a plugin's consumer shows an operator. Written by the consumer thread (and librdkafka's
/// statistics callback), read by the operator's endpoints.
#[derive(Default)]
pub struct PluginView {
    /// Set at the first assignment (an empty one included): the consumer is in its group.
    pub joined: AtomicBool,
    /// When an operator (or a new version) last asked to resume the halted partitions: those
    /// halted before it are resumed, not later ones.
    resume: Mutex<Option<Instant>>,
    /// Assigned partitions. Only the polling thread changes it.
    partitions: Mutex<HashMap<PartitionKey, PartitionSlot>>,
    /// Committed offset and lag per assigned partition (librdkafka's statistics; -1: unknown).
    positions: Mutex<HashMap<PartitionKey, (i64, i64)>>,
}

/// One assigned partition, as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// `running`, `backing-off` (a message waits for its retry) or `halted`.
    pub state: &'static str,
    /// Where it halted, or the offset read last.
    pub offset: Option<i64>,
    /// Why it halted.
    pub reason: Option<String>,
    /// The attempt the waiting message is at, when backing off.
    pub attempt: Option<u32>,
    pub committed: Option<i64>,
    pub lag: Option<i64>,
}

impl PluginView {
    fn lock_partitions(&self) -> MutexGuard<'_, HashMap<PartitionKey, PartitionSlot>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_positions(&self) -> MutexGuard<'_, HashMap<PartitionKey, (i64, i64)>> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The assigned partitions, sorted. Halt reasons come from `halts`.
    /// Asks the consumer thread to resume the partitions of the plugin halted until now.
    pub fn request_resume(&self) {
        *self.resume.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub fn partitions(&self, halts: &[super::Halt]) -> Vec<PartitionStatus> {
        let positions = self.lock_positions().clone();
        let mut out: Vec<PartitionStatus> = self
            .lock_partitions()
            .iter()
            .map(|(key, slot)| {
                let progress = &slot.task.progress;
                let failed = progress.failed_at();
                let attempt = progress.retrying.load(Ordering::Relaxed);
                let (committed, lag) = positions.get(key).copied().unwrap_or((-1, -1));
                let reason = failed.and_then(|_| {
                    halts
                        .iter()
                        .find(|h| *h.topic == *key.0 && h.partition == key.1)
                        .map(|h| h.reason.clone())
                });
                PartitionStatus {
                    topic: key.0.to_string(),
                    partition: key.1,
                    state: match (failed, attempt) {
                        (Some(_), _) => "halted",
                        (None, 0) => "running",
                        (None, _) => "backing-off",
                    },
                    offset: failed.or_else(|| Some(progress.reading()).filter(|o| *o >= 0)),
                    reason,
                    attempt: (attempt > 0).then_some(attempt),
                    committed: (committed >= 0).then_some(committed),
                    lag: (lag >= 0).then_some(lag),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }
}

/// One assigned partition as the consumer sees it.
struct PartitionSlot {
    task: PartitionHandle,
    /// When the task halted and the partition was paused.
    halted: Option<Instant>,
}

/// The consumer context: owns the partition table, so rebalance callbacks (which librdkafka runs
/// on the polling thread) can start and drain partition tasks.
pub struct PluginContext {
    /// The published plugin version; partitions switch to a new one between messages.
    versions: Arc<ArcSwap<LoadedPlugin>>,
    /// The plugin's guest instances, shared by its partitions' tasks.
    instances: Arc<PluginInstances>,
    /// The workers that run the partitions' tasks (shared by every plugin).
    executor: Arc<Executor>,
    name: Arc<str>,
    shared: WorkerShared,
    health: Arc<Health>,
    options: RunOptions,
    /// The consumer itself, to split partition queues off in the rebalance callback (weak: the
    /// consumer owns this context).
    consumer: OnceLock<Weak<BaseConsumer<PluginContext>>>,
    /// Its assigned partitions and what an operator sees of them.
    view: Arc<PluginView>,
}

impl ClientContext for PluginContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        rdkafka_log(&self.name, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
    }

    /// Every `statistics.interval.ms`: each assigned partition's committed offset and lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let assigned: HashSet<PartitionKey> = self.table().keys().cloned().collect();
        let metrics = crate::ops::metrics::metrics();
        let mut positions = self.view.lock_positions();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                let key: PartitionKey = (Arc::from(topic.as_str()), partition);
                if partition < 0 || !assigned.contains(&key) {
                    continue;
                }
                positions.insert(key, (p.committed_offset, p.consumer_lag));
                metrics.partition_position(
                    &crate::ops::metrics::PartitionLabels::new(&self.name, topic, partition),
                    p.committed_offset,
                    p.consumer_lag,
                );
            }
        }
    }
}

impl ConsumerContext for PluginContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let keys = keys_of(tpl);
                tracing::info!(partitions = ?partition_names(&keys), "partitions revoked: draining");
                self.drain(&keys, true);
            }
            // Before librdkafka starts fetching: split each partition's queue off to its task.
            Rebalance::Assign(tpl) => {
                self.view.joined.store(true, Ordering::Release);
                let keys = keys_of(tpl);
                tracing::info!(partitions = ?partition_names(&keys), "partitions assigned");
                for key in keys {
                    self.assign(key);
                }
            }
            Rebalance::Error(e) => tracing::error!("rebalance error: {e}"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::debug!("commit callback reported: {e}");
        }
    }
}

fn keys_of(tpl: &TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
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
        self.view.lock_partitions()
    }

    /// Starts the partitions halted before the last resume request again, from their halted
    /// message, with the version published now. A partition whose task has not finished yet, or
    /// whose earlier messages still wait for acknowledgements, waits for a later round (at most
    /// [`RESUME_WAIT`] after the request); one halted before its first message was read (no
    /// offset to go back to) is not resumed.
    fn resume_halted(&self, consumer: &BaseConsumer<Self>) {
        let asked = {
            let mut resume = self.view.resume.lock().unwrap_or_else(|e| e.into_inner());
            match *resume {
                Some(at) if at.elapsed() > RESUME_WAIT => {
                    *resume = None;
                    None
                }
                other => other,
            }
        };
        let Some(asked) = asked else {
            return;
        };
        let mut later = false;
        let halted: Vec<(PartitionKey, i64)> = self
            .table()
            .iter()
            .filter(|(_, slot)| {
                let progress = &slot.task.progress;
                let asked_for = progress.halted_since().is_some_and(|at| at <= asked);
                // Halted, not yet paused: the next round.
                later |= asked_for && slot.halted.is_none();
                asked_for && slot.halted.is_some()
            })
            .filter_map(|(key, slot)| Some((key.clone(), slot.task.progress.failed_at()?)))
            .collect();
        let mut flushed = false;
        for (key, offset) in halted {
            if offset < 0 {
                tracing::warn!(
                    topic = %key.0, partition = key.1,
                    "the halted partition cannot be resumed: it halted before its first message \
                     was read (restart kp to read it again)"
                );
                continue;
            }
            let ready = self.table().get(&key).is_some_and(|slot| {
                let task = &slot.task;
                // Its task must be gone (its queue with it) before a new one reads the partition.
                task.stop();
                matches!(
                    task.exited.try_recv(),
                    Err(crossbeam_channel::TryRecvError::Disconnected)
                ) && task.progress.settled_up_to_failure()
            });
            if !ready {
                later = true;
                continue;
            }
            // What the halted tracker finished is committed before a new one takes over.
            if !flushed {
                if let Err(e) = self.shared.commits.flush(Duration::from_secs(10)) {
                    tracing::warn!("commit before resuming failed: {e:#}");
                    later = true;
                    break;
                }
                flushed = true;
            }
            if let Err(e) = consumer.seek(
                &key.0,
                key.1,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(topic = %key.0, partition = key.1, "cannot resume the halted partition (seek failed): {e}");
                later = true;
                continue;
            }
            if let Some(old) = self.table().remove(&key) {
                old.task.progress.detach();
                self.shared.commits.forget(key.0.clone(), key.1);
            }
            self.health.resumed(&self.name, &key.0, key.1);
            self.assign(key.clone());
            if let Err(e) = consumer.resume(&single(&key)) {
                tracing::error!(topic = %key.0, partition = key.1, "resuming the halted partition failed, it stays paused: {e}");
            }
            tracing::warn!(
                topic = %key.0, partition = key.1, offset,
                version = %self.versions.load().version(),
                "halted partition resumed at its halted message"
            );
        }
        if !later {
            let mut resume = self.view.resume.lock().unwrap_or_else(|e| e.into_inner());
            if *resume == Some(asked) {
                *resume = None;
            }
        }
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
        let weak = self.consumer.get().cloned().unwrap_or_default();
        let queue = weak
            .upgrade()
            .and_then(|consumer| consumer.split_partition_queue(&key.0, key.1));
        let Some(queue) = queue else {
            // Without its own queue the partition's messages would go unread: say so, never skip.
            progress.fail(
                -1,
                "internal error: could not set up the partition's queue".into(),
            );
            return;
        };
        let task = partition::spawn(
            &self.executor,
            self.versions.clone(),
            self.instances.clone(),
            progress,
            self.shared.clone(),
            queue,
            weak,
        );
        self.table()
            .insert(key, PartitionSlot { task, halted: None });
    }

    /// Pauses partitions whose task halted, so librdkafka stops fetching them.
    fn pause_halted(&self, consumer: &BaseConsumer<Self>) {
        for (key, slot) in self.table().iter_mut() {
            if slot.halted.is_none() && slot.task.progress.is_halted() {
                slot.halted = Some(Instant::now());
                if let Err(e) = consumer.pause(&single(key)) {
                    tracing::warn!("pausing halted {}/{} failed: {e}", key.0, key.1);
                }
            }
        }
    }

    /// A message arrived on the consumer's own queue, which only carries events once the
    /// partitions' queues are split off. A revoked partition's leftover is harmless (it is not
    /// committed; the next owner reads it); for an assigned partition it would be skipped by its
    /// task, so the partition halts there instead.
    fn stray(&self, topic: &str, partition: i32, offset: i64) {
        let table = self.table();
        if let Some(slot) = table.get(&(Arc::from(topic), partition)) {
            slot.task.progress.fail(
                offset,
                "internal error: message delivered outside its partition queue".into(),
            );
        }
    }

    /// Moves the assigned partitions of `topic` (created again) to where `auto.offset.reset`
    /// says a new topic starts.
    fn restart_topic(&self, consumer: &BaseConsumer<Self>, topic: &str) {
        let reset = self
            .options
            .kafka
            .common
            .get("auto.offset.reset")
            .or(self.options.kafka.consumer.get("auto.offset.reset"))
            .map(String::as_str);
        let start = match reset {
            Some("latest" | "largest" | "end") => Offset::End,
            _ => Offset::Beginning,
        };
        let partitions: Vec<i32> = self
            .table()
            .keys()
            .filter(|(t, _)| &**t == topic)
            .map(|(_, p)| *p)
            .collect();
        for partition in partitions {
            if let Err(e) = consumer.seek(topic, partition, start, Duration::from_secs(5)) {
                tracing::warn!(
                    topic,
                    partition,
                    "could not move to the new topic's start: {e}"
                );
            }
        }
    }

    /// Stops the tasks of `keys`, lets their in-flight messages finish, commits, and forgets
    /// them. Bounded by the drain timeout.
    fn drain(&self, keys: &[PartitionKey], revoked: bool) {
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
            slot.task.stop();
        }
        let mut drained = Vec::new();
        for (key, slot) in slots {
            let PartitionHandle {
                exited, progress, ..
            } = slot.task;
            let finished = matches!(
                exited.recv_deadline(deadline),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected)
            ) && progress.wait_idle(deadline);
            if !finished {
                tracing::warn!(
                    topic = %key.0, partition = key.1, in_flight = progress.in_flight(),
                    "drain timed out: messages still in flight are left uncommitted (they will be handled again)"
                );
            }
            drained.push((key, progress));
        }
        {
            let mut positions = self.view.lock_positions();
            for (key, _) in &drained {
                if revoked {
                    // Another member runs it now; its halt, if any, is no longer this kp's.
                    self.health.forget(&self.name, &key.0, key.1);
                }
                positions.remove(key);
                crate::ops::metrics::metrics().forget_partition(
                    &crate::ops::metrics::PartitionLabels::new(&self.name, &key.0, key.1),
                );
            }
        }
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match self.shared.commits.flush(remaining) {
            Ok(()) => {
                for (key, progress) in &drained {
                    tracing::info!(
                        topic = %key.0, partition = key.1,
                        committed = ?progress.committable(), skipped = progress.skipped_count(),
                        "partition drained and committed"
                    );
                }
            }
            Err(e) => tracing::error!("final commit failed: {e:#}"),
        }
        for (key, progress) in drained {
            progress.detach();
            self.shared.commits.forget(key.0.clone(), key.1);
        }
    }
}

/// A running plugin consumer.
pub struct PluginConsumer {
    /// What it shows an operator.
    view: Arc<PluginView>,
    /// The polling thread: told to drain and leave by its stop (read between polls of
    /// librdkafka); dropping the consumer drains, commits, leaves the group and joins it.
    thread: StoppableThread,
}

impl PluginConsumer {
    /// Joins the group and starts consuming the plugin's input topics.
    pub fn start(
        versions: Arc<ArcSwap<LoadedPlugin>>,
        producer: Arc<super::output::OutputProducer>,
        health: Arc<Health>,
        options: RunOptions,
        input_partitions: usize,
        executor: Arc<Executor>,
        all_instances: &Arc<AllInstances>,
    ) -> Result<Self> {
        let first = versions.load_full();
        let name: Arc<str> = Arc::from(first.name());
        let manifest = first.manifest.clone();
        let (commit_tx, commit_rx) = crossbeam_channel::unbounded::<CommitRequest>();
        let commits = CommitSink::new(commit_tx);
        let context = PluginContext {
            instances: all_instances.for_plugin(versions.clone()),
            executor,
            versions,
            name: name.clone(),
            shared: WorkerShared {
                producer,
                commits: commits.clone(),
                mode: options.commit_mode,
                max_uncommitted: options.max_uncommitted,
            },
            health,
            options: options.clone(),
            consumer: OnceLock::new(),
            view: Arc::default(),
        };
        let view = context.view.clone();
        // The partitions its input topics have now share its prefetch budget; partitions added
        // later get the same part each (the consumer is configured once).
        let prefetch = Prefetch::split(options.prefetch_bytes, input_partitions);
        let most = prefetch.most_bytes(input_partitions);
        if most > 2 * prefetch.budget_bytes {
            tracing::warn!(
                plugin = %name,
                "{input_partitions} input partitions at the least prefetch share each (64 KiB) \
                 may hold up to {} MiB of records, above twice --prefetch-mib {}",
                most >> 20,
                prefetch.budget_bytes >> 20
            );
        }
        tracing::debug!(plugin = %name, input_partitions, share_kib = prefetch.share_kib, "prefetch budget split");
        let config =
            options
                .kafka
                .consumer_config(&name, &manifest.group_id, options.queue_depth, prefetch);
        let consumer: BaseConsumer<PluginContext> = create_client(
            &config,
            context,
            &format!("plugin {name}: creating its consumer"),
        )?;
        let consumer = Arc::new(consumer);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = manifest.input_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .with_context(|| format!("plugin {name}: subscribing to {topics:?}"))?;
        let committer = Committer::start(name.clone(), consumer.clone(), commits, commit_rx)?;
        let watch = TopicWatch::new(manifest.input_topics.clone());
        let span = tracing::info_span!("consumer", plugin = %name);
        let thread = StoppableThread::spawn(&format!("kp-poll-{name}"), move |stopped| {
            span.in_scope(|| poll_loop(consumer, committer, &stopped, watch))
        })
        .context("starting the consumer thread")?;
        tracing::info!(plugin = %name, version = %first.version(), group = %manifest.group_id, topics = ?manifest.input_topics, "plugin consuming");
        Ok(PluginConsumer { view, thread })
    }

    /// What it shows an operator.
    pub fn view(&self) -> Arc<PluginView> {
        self.view.clone()
    }

    /// Asks the consumer thread to resume the plugin's halted partitions from their halted
    /// message (after a new version is published, or when an operator asks).
    pub fn resume_halted(&self) {
        self.view.request_resume();
    }

    /// Asks the consumer to drain and leave its group, without waiting: to stop several at
    /// once, ask each, then drop each (dropping drains, commits, leaves the group, and waits for
    /// all of it, bounded by the drain timeout).
    pub fn request_stop(&self) {
        self.thread.request_stop();
    }
}

/// How long a resume request waits for halted partitions that are not ready to resume yet (a
/// task finishing, outputs being acknowledged, a commit or seek that failed).
const RESUME_WAIT: Duration = Duration::from_secs(30);

/// How often a consumer checks that its input topics still exist.
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Input topics that went missing, so a deletion and a re-creation are each said once.
struct TopicWatch {
    topics: Vec<String>,
    missing: BTreeSet<String>,
    next_check: Instant,
}

impl TopicWatch {
    fn new(topics: Vec<String>) -> Self {
        TopicWatch {
            topics,
            missing: BTreeSet::new(),
            next_check: Instant::now() + TOPIC_CHECK_INTERVAL,
        }
    }

    /// Every [`TOPIC_CHECK_INTERVAL`]: says when an input topic disappears (log and status) and
    /// when it exists again. A topic that comes back is a new topic: its assigned partitions are
    /// read from `auto.offset.reset` (librdkafka would otherwise keep reading at the old topic's
    /// position, skipping the new topic's first records when it already has that many).
    fn check(&mut self, name: &str, consumer: &BaseConsumer<PluginContext>) {
        if Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + TOPIC_CHECK_INTERVAL;
        let context = consumer.context();
        for topic in &self.topics {
            let exists = match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
                Ok(md) => super::has_topic(&md, topic),
                Err(_) => continue, // the cluster did not answer: say nothing either way
            };
            if !exists && self.missing.insert(topic.clone()) {
                tracing::error!(
                    topic = %topic,
                    "INPUT TOPIC DELETED: {topic} does not exist any more; the plugin waits for it \
                     (a topic created again under this name is read from auto.offset.reset)"
                );
                context.health.problem(
                    name,
                    Some(format!("input topic {topic} does not exist (deleted?)")),
                );
            } else if exists && self.missing.remove(topic) {
                tracing::warn!(
                    topic = %topic,
                    "input topic {topic} exists again: a new topic, read from auto.offset.reset"
                );
                context.restart_topic(consumer, topic);
                if self.missing.is_empty() {
                    context.health.problem(name, None);
                }
            }
        }
    }
}

/// The consumer's thread, in the `consumer{plugin}` span: serves rebalances and errors until
/// stopped, then drains, commits and leaves the group.
fn poll_loop(
    consumer: Arc<BaseConsumer<PluginContext>>,
    committer: Committer,
    stop: &Stop,
    mut watch: TopicWatch,
) {
    let context = consumer.context();
    let name = &*context.name;
    while !stop.is_triggered() {
        watch.check(name, &consumer);
        // Serves rebalances and errors; messages arrive on the partitions' own queues.
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
                drop(m);
                context.stray(&topic, partition, offset);
            }
            Some(Err(e)) => tracing::warn!("consumer error: {e}"),
            None => {}
        }
        context.pause_halted(&consumer);
        context.resume_halted(&consumer);
    }
    // Shutdown: drain everything we own, commit, stop the committer, then close (leave the group).
    let keys: Vec<PartitionKey> = context.table().keys().cloned().collect();
    tracing::info!(partitions = ?partition_names(&keys), "stopping: draining");
    context.drain(&keys, false);
    drop(committer); // commits what is pending, then its thread ends
    // Tasks (and their partition queues) and the committer are gone: this is the last handle,
    // and dropping it closes the consumer (librdkafka runs the final revoke, with nothing left to
    // drain, and leaves the group). A task stuck in a hung guest past the drain timeout would
    // still hold a queue; the consumer then closes when the process exits.
    drop(consumer);
    tracing::info!("left the group");
}
