//! `PartitionWorker`: one thread per assigned partition. It polls the partition's own librdkafka
//! queue (split from the consumer's), owns the partition's guest instance and hands it the
//! messages one at a time, in offset order; sends what the handler returns; and registers each
//! message with the partition's progress tracker (which decides when its offset may be
//! committed). In strict mode it also waits until that offset is committed before it takes the
//! next message.
//!
//! Backpressure is librdkafka's own: a worker polls only when it is ready for the next message,
//! and librdkafka stops fetching a partition whose queue holds `queued.min.messages`.
//!
//! An error read from the partition's queue instead of a message means librdkafka cannot hand
//! out the next record. It does not move past it by itself, so without a decision the partition
//! would stall silently. [`ConsumeErrors`] decides: a batch that cannot be decoded (corrupt,
//! unknown codec) halts the partition at once; any other error halts it once it has repeated,
//! with no message in between, for [`REPEATED_ERROR_HALTS_AFTER`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Weak;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::CommitMode;
use super::committer::CommitSink;
use super::output::{self, AckToken, OutputProducer};
use super::progress::PartitionProgress;
use super::record::{self, Record};
use crate::manifest::{FailureAction, FailurePolicy};
use crate::sandbox::{
    FailureKind, HandlerFailure, Header, LoadedPlugin, Message, Output, PluginInstance,
};

/// How long strict mode waits for one message's outputs and commit before re-checking `stop`.
const STRICT_WAIT_SLICE: Duration = Duration::from_millis(200);

/// What a worker needs besides its own partition.
#[derive(Clone)]
pub struct WorkerShared {
    pub producer: Arc<OutputProducer>,
    pub commits: CommitSink,
    pub mode: CommitMode,
    /// See [`super::RunOptions::max_uncommitted`].
    pub max_uncommitted: u64,
}

/// What a record sent for a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// An output of the handler: if refused for good, the failure policy applies.
    Output,
    /// The message itself, to the dead-letter topic: if refused, the partition halts.
    DeadLetter,
}

/// Whether a message that failed is already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registered {
    /// Not yet: the handler failed.
    No,
    /// Yes: it was handled, and an output of it was refused.
    Refused,
}

/// Pause before trying again to get an instance from a full pool.
const INSTANCE_RETRY: Duration = Duration::from_millis(200);

/// How long a worker waits in one poll before it re-checks `stop` and the published version.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// The consumer's handle on a running worker.
pub struct WorkerHandle {
    /// Set to make the worker stop after the message it is handling (unread ones stay uncommitted).
    pub stop: Arc<AtomicBool>,
    /// Disconnected when the worker thread has exited.
    pub exited: Receiver<()>,
    pub progress: Arc<PartitionProgress>,
    /// Detached rather than joined when a drain times out on a hung guest.
    pub thread: Option<JoinHandle<()>>,
}

struct PartitionWorker<C: ConsumerContext> {
    /// The published plugin version, checked between messages.
    versions: Arc<ArcSwap<LoadedPlugin>>,
    /// A version whose instance would not start here, so it is not retried on every message.
    refused: Option<Arc<LoadedPlugin>>,
    /// This partition's librdkafka queue.
    queue: PartitionQueue<C>,
    /// The consumer, to look up the committed offset when the partition halts before its first
    /// message (weak: the consumer's thread owns it and closes it at shutdown).
    consumer: Weak<BaseConsumer<C>>,
    /// Errors read from the queue since the last message.
    errors: ConsumeErrors,
    stop: Arc<AtomicBool>,
    progress: Arc<PartitionProgress>,
    shared: WorkerShared,
    /// Held (never sent on) so `exited` disconnects when this worker is gone.
    _alive: Sender<()>,
}

/// Starts a worker that reads one partition from `queue`.
pub fn spawn<C: ConsumerContext + 'static>(
    versions: Arc<ArcSwap<LoadedPlugin>>,
    progress: Arc<PartitionProgress>,
    shared: WorkerShared,
    queue: PartitionQueue<C>,
    consumer: Weak<BaseConsumer<C>>,
) -> Result<WorkerHandle> {
    let (alive, exited) = crossbeam_channel::bounded(0);
    let stop = Arc::new(AtomicBool::new(false));
    let worker = PartitionWorker {
        versions,
        refused: None,
        queue,
        consumer,
        errors: ConsumeErrors::default(),
        stop: stop.clone(),
        progress: progress.clone(),
        shared,
        _alive: alive,
    };
    let name = format!(
        "kp-{}-{}-{}",
        progress.plugin, progress.topic, progress.partition
    );
    let watched = progress.clone();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // A panic (a bug, or a record that trips a library) must not leave a dead thread
            // and a partition that silently stops: it halts the partition, loudly.
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| worker.run())) {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                watched.fail(
                    watched.reading(),
                    format!("internal error: the partition's worker panicked: {why}"),
                );
            }
        })
        .context("starting a partition worker thread")?;
    Ok(WorkerHandle {
        stop,
        exited,
        progress,
        thread: Some(thread),
    })
}

impl<C: ConsumerContext> PartitionWorker<C> {
    /// The next message, or `None` once the worker is told to stop or the partition halted on
    /// an error it cannot read past.
    fn next(&mut self) -> Option<Record> {
        while !self.stop.load(Ordering::Acquire) {
            if !self.apply_policy_to_refused_outputs() {
                return None; // halted
            }
            match self.queue.poll(POLL_SLICE) {
                Some(Ok(m)) => {
                    self.errors.clear();
                    let offset = m.offset();
                    // Noted before the record is read, so a panic reading it halts right there.
                    let previous = self.progress.reading();
                    self.progress.note_reading(offset);
                    let message = record::to_message(&m);
                    drop(m);
                    if previous >= 0 && offset <= previous {
                        self.start_again(offset, previous);
                    }
                    return Some(message);
                }
                Some(Err(error)) => {
                    if let Some(reason) = self.errors.record(&error, Instant::now()) {
                        let offset = self.position();
                        self.progress.fail(offset, reason);
                        return None;
                    }
                    tracing::warn!(
                        plugin = %self.progress.plugin, topic = %self.progress.topic,
                        partition = self.progress.partition, "consumer error: {error}"
                    );
                }
                None => {}
            }
        }
        None
    }

    /// The partition's offsets went backwards to `offset`: the topic was deleted and created
    /// again, or its log truncated, and librdkafka reset the position (`auto.offset.reset`).
    /// What is in flight of the old incarnation finishes first; then its progress starts anew,
    /// so its offsets are never committed over the new topic's.
    fn start_again(&self, offset: i64, previous: i64) {
        let (topic, partition) = (&self.progress.topic, self.progress.partition);
        tracing::error!(
            plugin = %self.progress.plugin, topic = %topic, partition, offset, previous,
            "OFFSETS WENT BACKWARDS: the partition now starts at offset {offset}, below the {} \
             kp had reached: the topic was deleted and created again (or its log truncated). \
             Handling the new records from here; the old position is not committed over them.",
            previous + 1
        );
        while !self.progress.wait_idle(Instant::now() + STRICT_WAIT_SLICE) {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
        }
        self.progress.restart();
    }

    /// The offset of the next record: one past the last message read, or, before the first, the
    /// group's committed offset (-1 when even that cannot be had).
    fn position(&self) -> i64 {
        let read = self.progress.reading();
        if read >= 0 {
            return read + 1;
        }
        let Some(consumer) = self.consumer.upgrade() else {
            return -1;
        };
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition(&self.progress.topic, self.progress.partition);
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .ok()
            .and_then(|got| {
                let offset = got.elements().first().map(|e| e.offset());
                drop(got); // before the consumer handle (see field-notes: librdkafka hangs otherwise)
                offset
            });
        drop(consumer);
        match committed {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        }
    }

    fn run(mut self) {
        let first = loop {
            match PluginInstance::new(self.versions.load_full()) {
                Err(failure) if failure.kind() == FailureKind::Unavailable => {
                    if !self.wait_for_instance(&failure, -1) {
                        return;
                    }
                }
                other => break other,
            }
        };
        let mut instance = match first {
            Ok(instance) => instance,
            Err(failure) => {
                // Nothing was handled: halt before the first message.
                if let Some(first) = self.next() {
                    self.progress
                        .fail(first.message.offset, failure.to_string());
                }
                return;
            }
        };
        while let Some(Record {
            message,
            bad_header,
        }) = self.next()
        {
            if let Some(bad) = bad_header {
                // Not for the handler: straight to the failure policy.
                let failure = HandlerFailure::BadMessage(bad.to_string());
                let plugin = self.versions.load_full();
                if !self.give_up(&plugin, &message, &failure, 1, Registered::No) {
                    return;
                }
                continue;
            }
            if !self.wait_for_commits(message.offset) {
                return; // stopping: the message stays uncommitted
            }
            self.follow_version(&mut instance, message.offset);
            if !self.handle(&mut instance, message) {
                return; // halted: the progress tracker has said so loudly
            }
        }
    }

    /// Waits while `max_uncommitted` messages of the partition are handled but not committed
    /// (the commit round trip is slower than the handler): what a crash makes kp handle again
    /// stays bounded. False when told to stop.
    fn wait_for_commits(&self, offset: i64) -> bool {
        while self.progress.uncommitted_before(offset) >= self.shared.max_uncommitted {
            if self.stop.load(Ordering::Acquire) || !self.apply_policy_to_refused_outputs() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// No instance could be had: waits a moment (saying so now and then) before the caller tries
    /// again. False when told to stop.
    fn wait_for_instance(&self, failure: &HandlerFailure, offset: i64) -> bool {
        use std::sync::atomic::AtomicU64;
        static SAID: AtomicU64 = AtomicU64::new(0);
        if SAID.fetch_add(1, Ordering::Relaxed).is_multiple_of(50) {
            tracing::warn!(
                plugin = %self.progress.plugin, topic = %self.progress.topic,
                partition = self.progress.partition, offset,
                "{failure}; waiting for one (the message is not failed for it; raise the pool \
                 size or run fewer partitions per kp)"
            );
        }
        self.pause(INSTANCE_RETRY)
    }

    /// Switches to the published version if it changed: between two messages, so every message
    /// is handled by exactly one version.
    fn follow_version(&mut self, instance: &mut PluginInstance, offset: i64) {
        let published = self.versions.load();
        if Arc::ptr_eq(&published, instance.plugin())
            || self
                .refused
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &published))
        {
            return;
        }
        let published = Arc::clone(&published);
        match PluginInstance::new(published.clone()) {
            Ok(fresh) => {
                tracing::info!(
                    plugin = %self.progress.plugin, topic = %self.progress.topic, partition = self.progress.partition,
                    offset, from = %instance.plugin().version(), to = %published.version(),
                    "partition switched version"
                );
                *instance = fresh;
            }
            // No instance free for the new version now: keep the old one, try at the next message.
            Err(e) if e.kind() == FailureKind::Unavailable => {}
            Err(e) => {
                tracing::error!(
                    plugin = %self.progress.plugin, topic = %self.progress.topic, partition = self.progress.partition,
                    version = %published.version(), "new version does not start here, keeping the old one: {e}"
                );
                self.refused = Some(published);
            }
        }
    }

    /// Handles one message, retrying `retry-later` errors with backoff and applying the plugin's
    /// failure policy to what still fails. False when the partition must halt (or must stop: the
    /// message then stays uncommitted and is handled again by whoever reads the partition next).
    fn handle(&self, instance: &mut PluginInstance, message: Message) -> bool {
        let offset = message.offset;
        let mut attempt = 1;
        let outputs = loop {
            let failure = match instance.handle(&message) {
                Ok(outputs) => break outputs,
                Err(failure) => failure,
            };
            if failure.kind() == FailureKind::Unavailable {
                // Not the message's fault: the same message again once an instance is free.
                if !self.wait_for_instance(&failure, offset) {
                    return false;
                }
                continue;
            }
            // The policy is read only on failure: nothing is cloned on the message path.
            let plugin = instance.plugin();
            let policy = &plugin.manifest.on_failure;
            if failure.kind() != FailureKind::RetryLater || attempt >= policy.max_attempts {
                return self.give_up(plugin, &message, &failure, attempt, Registered::No);
            }
            let pause = backoff(policy, attempt);
            tracing::warn!(
                plugin = %self.progress.plugin, topic = %self.progress.topic, partition = self.progress.partition,
                offset, attempt, pause_ms = pause.as_millis() as u64, "{failure}; retrying after a pause"
            );
            if !self.pause(pause) {
                return false; // stopping: the message stays uncommitted
            }
            attempt += 1;
        };
        let plugin = instance.plugin();
        let default_topic = plugin.manifest.output_topic.as_deref();
        if outputs.iter().any(|o| o.topic.is_none()) && default_topic.is_none() {
            self.progress.fail(
                offset,
                "the handler returned an output without a topic and the manifest names no output-topic".into(),
            );
            return false;
        }
        if let Some(why) = undeclared_output(&plugin.manifest, &outputs) {
            let failure = HandlerFailure::OutputRefused(why);
            return self.give_up(plugin, &message, &failure, attempt, Registered::No);
        }
        // Kept until its outputs are acknowledged only where a refused output could still send
        // it to the dead-letter topic.
        let keep =
            (plugin.manifest.on_failure.action == FailureAction::DeadLetter).then_some(message);
        // Registered before the outputs are sent: an acknowledgement can arrive before `send`
        // returns, and one for a message not yet in flight would be lost.
        self.progress
            .handled_keeping(offset, outputs.len() as u32, keep);
        for out in &outputs {
            let topic = out
                .topic
                .as_deref()
                .or(default_topic)
                .expect("checked above");
            if !self.send(topic, out, offset, Sent::Output) {
                return false;
            }
        }
        if !self.apply_policy_to_refused_outputs() {
            return false;
        }
        if self.shared.mode == CommitMode::Strict {
            return self.commit_now(offset);
        }
        true
    }

    /// Sends one record for the message at `offset`. An output the broker refuses for good
    /// before it is sent goes to the failure policy (like one refused later, by the broker); any
    /// other failure, and any failure of a dead-letter record, halts the partition (false).
    fn send(&self, topic: &str, record: &Output, offset: i64, what: Sent) -> bool {
        let token = AckToken {
            progress: self.progress.clone(),
            offset,
            dead_letter: what == Sent::DeadLetter,
        };
        match output::send(&self.shared.producer, topic, record, token) {
            Ok(()) => true,
            Err(error) if what == Sent::Output && output::refused_for_good(&error) => {
                self.progress.refused(
                    offset,
                    format!("the output to {topic:?} was refused: {error}"),
                );
                true
            }
            Err(error) => {
                self.progress
                    .fail(offset, format!("producing to {topic:?} failed: {error}"));
                false
            }
        }
    }

    /// Applies the failure policy to messages whose outputs the broker refused for good. False
    /// when the partition halted.
    fn apply_policy_to_refused_outputs(&self) -> bool {
        for refused in self.progress.take_refusals() {
            let plugin = self.versions.load_full();
            let failure = HandlerFailure::OutputRefused(refused.reason);
            let registered = Registered::Refused;
            let halted = match refused.message {
                Some(message) => !self.give_up(&plugin, &message, &failure, 1, registered),
                // Kept only under a dead-letter policy: the policy changed since (a reload).
                None if plugin.manifest.on_failure.action == FailureAction::DeadLetter => {
                    self.progress.fail(
                        refused.offset,
                        format!(
                            "{failure} (output-refused; the dead-letter policy came with a \
                                 new version after the message was handled, so it was not kept)"
                        ),
                    );
                    true
                }
                None => {
                    let stub = Message {
                        topic: self.progress.topic.to_string(),
                        partition: self.progress.partition,
                        offset: refused.offset,
                        timestamp: None,
                        key: None,
                        value: None,
                        headers: Vec::new(),
                    };
                    !self.give_up(&plugin, &stub, &failure, 1, registered)
                }
            };
            if halted {
                return false;
            }
        }
        true
    }

    /// Sleeps `pause` unless told to stop first (then false).
    fn pause(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        !self.stop.load(Ordering::Acquire)
    }

    /// Applies the failure policy to a message that failed for good. `registered` says whether
    /// the message is in flight already (an output of it was refused).
    fn give_up(
        &self,
        plugin: &LoadedPlugin,
        message: &Message,
        failure: &HandlerFailure,
        attempts: u32,
        registered: Registered,
    ) -> bool {
        let offset = message.offset;
        let policy = &plugin.manifest.on_failure;
        // The message is finished once `extra` more records (a dead-letter record) are acknowledged.
        let settle = |extra: u32| match registered {
            Registered::No => self.progress.handled(offset, extra),
            Registered::Refused => self.progress.resolve_refusal(offset, extra),
        };
        match (policy.action, &policy.dead_letter_topic) {
            (FailureAction::DeadLetter, Some(topic)) => {
                tracing::warn!(
                    plugin = %self.progress.plugin, topic = %self.progress.topic, partition = self.progress.partition,
                    offset, attempts, kind = %failure.kind(), dead_letter_topic = %topic, "{failure}; sent to the dead-letter topic"
                );
                // Committed only once the dead-letter record is acknowledged, like any output.
                settle(1);
                let record = dead_letter(plugin, message, failure, attempts);
                if !self.send(topic, &record, offset, Sent::DeadLetter) {
                    return false;
                }
                self.shared.mode != CommitMode::Strict || self.commit_now(offset)
            }
            (FailureAction::Skip, _) => {
                tracing::warn!(
                    plugin = %self.progress.plugin, topic = %self.progress.topic, partition = self.progress.partition,
                    offset, attempts, kind = %failure.kind(), "{failure}; SKIPPED (policy skip): the message is dropped"
                );
                self.progress.skipped();
                settle(0);
                self.shared.mode != CommitMode::Strict || self.commit_now(offset)
            }
            _ => {
                self.progress.fail(
                    offset,
                    format!(
                        "{failure} ({}, after {attempts} attempt(s))",
                        failure.kind()
                    ),
                );
                false
            }
        }
    }

    /// Strict mode: wait until this message is finished and its offset committed.
    fn commit_now(&self, offset: i64) -> bool {
        loop {
            if self
                .progress
                .wait_finished(offset, Instant::now() + STRICT_WAIT_SLICE)
            {
                break;
            }
            if self.progress.failed_at().is_some() || !self.apply_policy_to_refused_outputs() {
                return false;
            }
            if self.stop.load(Ordering::Acquire) {
                return true;
            }
        }
        loop {
            match self.shared.commits.flush(Duration::from_secs(30)) {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(
                        plugin = %self.progress.plugin, topic = %self.progress.topic,
                        partition = self.progress.partition, offset, "strict commit failed, retrying: {e:#}"
                    );
                    if self.stop.load(Ordering::Acquire) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// How long an error must repeat on a partition, with no message in between, before the
/// partition halts. librdkafka retries fetches by itself; an error that outlasts this is not
/// going away without someone's help, and a halt says so where a warning every few hundred
/// milliseconds would scroll by.
pub const REPEATED_ERROR_HALTS_AFTER: Duration = Duration::from_secs(30);

/// Errors that mean the data at the partition's position cannot be read by this client, ever:
/// the partition halts at the first one.
const UNREADABLE: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::BadCompression, // a batch that does not decompress
    RDKafkaErrorCode::NotImplemented, // a codec this build does not have
    RDKafkaErrorCode::UnsupportedCompressionType, // the broker says the same
    RDKafkaErrorCode::BadMessage,     // a batch librdkafka cannot parse
    RDKafkaErrorCode::InvalidMessage, // a CRC mismatch (with check.crcs=true)
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::AutoOffsetReset, // auto.offset.reset=error and no offset
];

/// The errors a partition's queue delivered since its last message, and the decision to halt.
#[derive(Debug, Default)]
pub struct ConsumeErrors {
    /// The error that keeps coming, when it started, and how often it came.
    repeating: Option<(String, Instant, u32)>,
}

impl ConsumeErrors {
    /// A message arrived: the partition moves.
    pub fn clear(&mut self) {
        self.repeating = None;
    }

    /// Records an error read at `now`; returns the halt reason when the partition must halt.
    pub fn record(&mut self, error: &KafkaError, now: Instant) -> Option<String> {
        if error
            .rdkafka_error_code()
            .is_some_and(|code| UNREADABLE.contains(&code))
        {
            return Some(format!(
                "the next record batch cannot be read: {error} (a corrupt batch, or a \
                 compression codec this build lacks: `kp version` lists its codecs)"
            ));
        }
        let text = error.to_string();
        match &mut self.repeating {
            Some((same, since, count)) if *same == text => {
                *count += 1;
                let lasted = now.saturating_duration_since(*since);
                (lasted >= REPEATED_ERROR_HALTS_AFTER).then(|| {
                    format!(
                        "the consumer error \"{text}\" repeated {count} times over {}s with no \
                         message in between",
                        lasted.as_secs()
                    )
                })
            }
            _ => {
                self.repeating = Some((text, now, 1));
                None
            }
        }
    }
}

/// Why the outputs of one call may not be sent, if they may not: an output to a topic the
/// manifest does not declare (`output-topic`, `output-topics`; they were checked against the
/// operator's policy at load), to an explicit partition where the policy forbids it, or with a
/// header in kp's reserved `kp.` namespace (kp's dead-letter metadata cannot be forged).
pub fn undeclared_output(
    manifest: &crate::manifest::Manifest,
    outputs: &[Output],
) -> Option<String> {
    use crate::sandbox::guest_text::sanitize;
    for (i, out) in outputs.iter().enumerate() {
        let Some(topic) = out.topic.as_deref().or(manifest.output_topic.as_deref()) else {
            return Some(format!(
                "output {i} names no topic and the manifest names no output-topic"
            ));
        };
        if !manifest.may_write(topic) {
            return Some(format!(
                "output {i} goes to topic {:?}, which the plugin's manifest does not declare \
                 (output-topic, output-topics)",
                sanitize(topic, 256)
            ));
        }
        if let Some(partition) = out.partition
            && !manifest.explicit_partitions
        {
            return Some(format!(
                "output {i} names partition {partition}, which the operator's policy does not allow"
            ));
        }
        if let Some(h) = out
            .headers
            .iter()
            .find(|h| record::reserved_header(&h.name))
        {
            return Some(format!(
                "output {i} sets header {:?}: headers starting with \"kp.\" belong to kp",
                sanitize(&h.name, 256)
            ));
        }
    }
    None
}

/// The pause before attempt `attempt + 1`: exponential from the initial backoff, capped, with
/// up to 25% random jitter (so partitions retrying together spread out).
fn backoff(policy: &FailurePolicy, attempt: u32) -> Duration {
    let base = policy
        .backoff_initial
        .saturating_mul(1 << (attempt - 1).min(20))
        .min(policy.backoff_max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    (base + jitter).min(policy.backoff_max)
}

/// The dead-letter record of a failed message: its key, value and headers as they were, plus
/// headers that say where it came from and why it failed.
pub fn dead_letter(
    plugin: &LoadedPlugin,
    message: &Message,
    failure: &HandlerFailure,
    attempts: u32,
) -> Output {
    let mut headers = message.headers.clone();
    let failed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for (name, value) in [
        ("kp.source.topic", message.topic.clone()),
        ("kp.source.partition", message.partition.to_string()),
        ("kp.source.offset", message.offset.to_string()),
        ("kp.error.kind", failure.kind().to_string()),
        ("kp.error.message", failure.to_string()),
        ("kp.attempts", attempts.to_string()),
        ("kp.plugin", plugin.name().to_string()),
        ("kp.plugin.version", plugin.version().to_string()),
        ("kp.failed.at.ms", failed_at.to_string()),
    ] {
        headers.push(Header {
            name: name.into(),
            value: value.into_bytes(),
        });
    }
    Output {
        topic: None,
        key: message.key.clone(),
        value: message.value.clone(),
        headers,
        partition: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumption(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageConsumption(code)
    }

    #[test]
    fn an_unreadable_batch_halts_at_once() {
        let mut errors = ConsumeErrors::default();
        for code in [
            RDKafkaErrorCode::BadCompression,
            RDKafkaErrorCode::NotImplemented,
        ] {
            let reason = errors
                .record(&consumption(code), Instant::now())
                .expect("halts");
            assert!(reason.contains("cannot be read"), "{reason}");
        }
    }

    #[test]
    fn other_errors_halt_only_when_they_persist() {
        let mut errors = ConsumeErrors::default();
        let start = Instant::now();
        let error = consumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(errors.record(&error, start).is_none());
        assert!(
            errors
                .record(&error, start + Duration::from_secs(10))
                .is_none()
        );
        // A message in between: the count starts again.
        errors.clear();
        let later = start + REPEATED_ERROR_HALTS_AFTER;
        assert!(errors.record(&error, later).is_none());
        // A different error: starts again too.
        let other = consumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(errors.record(&other, later).is_none());
        assert!(
            errors
                .record(&other, later + REPEATED_ERROR_HALTS_AFTER / 2)
                .is_none()
        );
        let reason = errors
            .record(&other, later + REPEATED_ERROR_HALTS_AFTER)
            .expect("halts once it has lasted");
        assert!(reason.contains("repeated 3 times"), "{reason}");
    }
}
