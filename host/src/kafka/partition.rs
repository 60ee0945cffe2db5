//! `PartitionTask`: one assigned partition, run in turns by the executor's workers
//! ([`super::executor`]).
//!
//! A turn polls the partition's own librdkafka queue (split from the consumer's) without
//! waiting, checks out an instance of the plugin for the turn ([`super::instances`]), hands it
//! the messages one at a time in offset order, sends what the handler returns, and registers
//! each message with the partition's progress tracker (which decides when its offset may be
//! committed). In strict mode it also waits until that offset is committed before it takes the
//! next message. A turn ends when the queue is empty (the task is woken again when librdkafka
//! puts a record in it), after [`super::executor::TURN_MESSAGES`] messages or
//! [`super::executor::TURN_TIME`] (so partitions share the workers), or when the partition must
//! wait: a `retry-later` backoff, no instance free, or commits lagging `--max-uncommitted`
//! behind. A waiting message is kept in the task, not in a worker: the wait holds up its
//! partition only. Waits that still hold the worker, each bounded: strict mode's wait for its
//! commit (a round trip, retried while the commit fails), a full producer queue (the producer's
//! own backpressure), the wait for a topic's old incarnation to finish when its offsets go
//! backwards, and the committed-offset lookup when a partition halts before its first message.
//!
//! Backpressure is librdkafka's own: a partition is polled only while its task runs, and
//! librdkafka stops fetching a partition whose queue holds `queued.min.messages`.
//!
//! An error read from the partition's queue instead of a message means librdkafka cannot hand
//! out the next record. It does not move past it by itself, so without a decision the partition
//! would stall silently. [`ConsumeErrors`] decides: a batch that cannot be decoded (corrupt,
//! unknown codec) halts the partition at once; any other error halts it once it has repeated,
//! with no message in between, for [`REPEATED_ERROR_HALTS_AFTER`].

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::CommitMode;
use super::committer::CommitSink;
use super::executor::{Executor, TURN_MESSAGES, TURN_TIME, Task, TaskRef, Turn, Waker};
use super::instances::{CheckoutError, PluginInstances};
use super::output::{self, AckToken, OutputProducer};
use super::progress::PartitionProgress;
use super::record::{self, Record};
use crate::manifest::{FailureAction, FailurePolicy};
use crate::sandbox::{
    FailureKind, HandlerFailure, Header, LoadedPlugin, Message, Output, PluginInstance,
};
use crate::stop::Stop;

/// How long strict mode waits for one message's outputs and commit before re-checking `stop`.
const STRICT_WAIT_SLICE: Duration = Duration::from_millis(200);

/// What a partition's task needs besides its own partition.
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

/// Pause before trying again to get an instance when none can be had.
const INSTANCE_RETRY: Duration = Duration::from_millis(200);

/// Pause before looking again whether the commits have caught up (`--max-uncommitted`).
const COMMIT_RETRY: Duration = Duration::from_millis(2);

/// The consumer's handle on a partition's task.
pub struct PartitionHandle {
    /// Triggered to make the task stop after the message it is handling (unread ones stay
    /// uncommitted).
    stop: Stop,
    /// Disconnected when the task has finished and been dropped (its queue with it).
    pub exited: Receiver<()>,
    pub progress: Arc<PartitionProgress>,
    /// To wake the task so that it sees `stop` at once.
    task: TaskRef,
}

impl PartitionHandle {
    /// Tells the task to stop after the message it is handling.
    pub fn stop(&self) {
        self.stop.trigger();
        self.task.wake_first();
    }
}

/// A message taken from the queue and not finished when a turn ended.
struct Pending {
    record: Record,
    /// The attempt this is (1 for the first).
    attempt: u32,
    /// Not before this time (a `retry-later` backoff).
    not_before: Option<Instant>,
    /// The version that handled its first attempt: its retries get the same one.
    version: Option<Arc<LoadedPlugin>>,
}

/// The partition halted: the reason is in its progress tracker ([`PartitionProgress::fail`]).
#[derive(Debug)]
struct Halted;

/// Whether the partition goes on after handing a message on: `Break(Halted)` when it halted.
/// Stopping is not a halt: a stopping task goes on to the turn's stop check, and the message it
/// was on stays uncommitted, for whoever reads the partition next.
type Flow = ControlFlow<Halted>;

/// What one step of a turn led to.
enum Step {
    /// The message is finished with (handled, dead-lettered or skipped): go on.
    Next,
    /// The message waits (kept in `pending`) until this time.
    Wait(Instant),
    /// The partition halted, or must stop.
    Halt,
}

/// What the queue gave.
enum Next {
    Record(Record),
    Empty,
    Halted,
}

pub struct PartitionTask<C: ConsumerContext> {
    /// The published plugin version, for the failure policy between messages.
    versions: Arc<ArcSwap<LoadedPlugin>>,
    /// The plugin's instances, checked out for a turn.
    instances: Arc<PluginInstances>,
    /// This partition's librdkafka queue.
    queue: PartitionQueue<C>,
    /// The consumer, to look up the committed offset when the partition halts before its first
    /// message (weak: the consumer's thread owns it and closes it at shutdown).
    consumer: Weak<BaseConsumer<C>>,
    /// Errors read from the queue since the last message.
    errors: ConsumeErrors,
    /// Read between messages; strict mode's waits wake on it.
    stop: Stop,
    progress: Arc<PartitionProgress>,
    shared: WorkerShared,
    /// The message a turn ended on before it was finished.
    pending: Option<Pending>,
    /// The version that handled this partition's last message (weak: it must not keep an
    /// unloaded version alive), so a switch is said once per partition.
    last_version: Option<(Weak<LoadedPlugin>, String)>,
    /// `partition{plugin, topic, partition}`, entered for each turn: every log line of the
    /// turn (the guest's own included) names the partition without repeating its fields.
    span: tracing::Span,
    /// Held (never sent on) so `exited` disconnects when this task is gone.
    _alive: Sender<()>,
}

/// Starts the task of one partition, read from `queue`.
#[allow(clippy::too_many_arguments)]
pub fn spawn<C: ConsumerContext + 'static>(
    executor: &Executor,
    versions: Arc<ArcSwap<LoadedPlugin>>,
    instances: Arc<PluginInstances>,
    progress: Arc<PartitionProgress>,
    shared: WorkerShared,
    queue: PartitionQueue<C>,
    consumer: Weak<BaseConsumer<C>>,
) -> PartitionHandle {
    let (alive, exited) = crossbeam_channel::bounded(0);
    let stop = Stop::new();
    let span = tracing::info_span!(
        "partition",
        plugin = %progress.plugin,
        topic = %progress.topic,
        partition = progress.partition
    );
    let task = executor.spawn(Box::new(PartitionTask {
        span,
        versions,
        instances,
        queue,
        consumer,
        errors: ConsumeErrors::default(),
        stop: stop.clone(),
        progress: progress.clone(),
        shared,
        pending: None,
        last_version: None,
        _alive: alive,
    }));
    PartitionHandle {
        stop,
        exited,
        progress,
        task,
    }
}

impl<C: ConsumerContext + 'static> Task for PartitionTask<C> {
    fn turn(&mut self, first: Option<Waker>) -> Turn {
        let span = self.span.clone();
        let _in_partition = span.enter();
        if let Some(waker) = first {
            // librdkafka calls this (on its own thread, under the queue's lock) when the queue
            // goes from empty to non-empty: it only marks the task ready. Set on the first turn,
            // which then polls, so nothing already queued waits for it.
            self.queue.set_nonempty_callback(move || waker.wake());
        }
        let mut lease = None;
        let turn = self.run_turn(&mut lease);
        if let Some(instance) = lease {
            self.instances.give_back(instance);
        }
        turn
    }

    /// Up to [`TURN_TIME`] of messages, then one call, plus an instance start (its `init`), each
    /// cut at the plugin's deadline; strict mode's commit wait on top.
    fn turn_bound(&self) -> Duration {
        let timeout = self.versions.load().manifest.limits.timeout;
        TURN_TIME + timeout * 3 + Duration::from_secs(60)
    }

    fn panicked(&mut self, why: String) {
        // A panic (a bug, or a record that trips a library) must not leave a partition that
        // silently stops: it halts the partition, loudly.
        self.progress.fail(
            self.progress.reading(),
            format!("internal error: the partition's worker panicked: {why}"),
        );
    }
}

impl<C: ConsumerContext> PartitionTask<C> {
    fn run_turn(&mut self, lease: &mut Option<PluginInstance>) -> Turn {
        let started = Instant::now();
        for n in 1..=TURN_MESSAGES {
            // Stopping (unread messages stay uncommitted), or halted: here, or from another
            // thread (an output's or dead letter's delivery failed).
            if self.stop.is_triggered()
                || self.progress.is_halted()
                || self.apply_policy_to_refused_outputs().is_break()
            {
                return Turn::Done;
            }
            let pending = match self.pending.take() {
                Some(pending) => pending,
                None => match self.next() {
                    Next::Record(record) => Pending {
                        record,
                        attempt: 1,
                        not_before: None,
                        version: None,
                    },
                    Next::Empty => return Turn::Idle,
                    Next::Halted => return Turn::Done,
                },
            };
            if let Some(at) = pending.not_before.filter(|at| *at > Instant::now()) {
                self.pending = Some(pending);
                return Turn::Sleep(at);
            }
            // At most `max_uncommitted` handled and not committed: what a crash makes kp handle
            // again stays bounded when the commit round trip is slower than the handler.
            let offset = pending.record.message.offset;
            if pending.record.bad_header.is_none()
                && self.progress.uncommitted_before(offset) >= self.shared.max_uncommitted
            {
                self.pending = Some(pending);
                return Turn::Sleep(Instant::now() + COMMIT_RETRY);
            }
            match self.step(pending, lease) {
                Step::Next => {}
                Step::Wait(at) => return Turn::Sleep(at),
                Step::Halt => return Turn::Done,
            }
            // The clock is read every few messages only: at a few hundred thousand messages a
            // second, reading it for each one showed in profiles.
            if n % 8 == 0 && started.elapsed() >= TURN_TIME {
                return Turn::Ready;
            }
        }
        Turn::Ready
    }

    /// The next record in the queue, without waiting.
    fn next(&mut self) -> Next {
        loop {
            match self.queue.poll(Duration::ZERO) {
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
                    return Next::Record(message);
                }
                Some(Err(error)) => {
                    if let Some(reason) = self.errors.record(&error, Instant::now()) {
                        let offset = self.position();
                        self.progress.fail(offset, reason);
                        return Next::Halted;
                    }
                    tracing::warn!("consumer error: {error}");
                }
                None => return Next::Empty,
            }
        }
    }

    /// One attempt at one message, with the instance leased for the turn.
    fn step(&mut self, pending: Pending, lease: &mut Option<PluginInstance>) -> Step {
        let Pending {
            record: Record {
                message,
                bad_header,
            },
            attempt,
            version,
            ..
        } = pending;
        let offset = message.offset;
        if let Some(bad) = bad_header {
            // Not for the handler: straight to the failure policy.
            let failure = HandlerFailure::BadMessage(bad.to_string());
            self.progress.metrics.failure(failure.kind());
            let plugin = self.versions.load_full();
            return self.go_on(self.give_up(&plugin, &message, &failure, 1, Registered::No));
        }
        // The version for this message: a retry (the only message with `version` set) keeps its
        // first attempt's; a new message gets the one published now (a new version takes over
        // between two messages). A lease of the published version, the common case, is kept
        // without taking a lock.
        let keep = lease.as_ref().is_some_and(|instance| match &version {
            Some(pinned) => Arc::ptr_eq(instance.plugin(), pinned),
            None => self.instances.serves_now(instance),
        });
        if !keep && let Some(old) = lease.take() {
            self.instances.give_back(old);
        }
        let instance = match lease {
            Some(instance) => instance,
            None => match self.instances.checkout(version.as_ref()) {
                Ok(instance) => lease.insert(instance),
                Err(CheckoutError::Unavailable(failure)) => {
                    return self.wait_for_instance(&failure, message, attempt, version);
                }
                Err(CheckoutError::Failed(failure)) => {
                    // The instance does not start: the message's failure, as when a replacement
                    // after a trap does not start.
                    self.progress.metrics.failure(failure.kind());
                    let plugin = version.unwrap_or_else(|| self.instances.version_now());
                    return self.go_on(self.give_up(
                        &plugin,
                        &message,
                        &failure,
                        attempt,
                        Registered::No,
                    ));
                }
            },
        };
        self.note_version(instance.plugin(), offset);
        let metrics = &self.progress.metrics;
        // Only a record that carries a trace gets a span (one scan of its header names).
        let span = if message.headers.is_empty() {
            None
        } else {
            crate::ops::trace::handle_span(&message, instance.plugin(), attempt)
        };
        let called = Instant::now();
        let result = instance.handle(&message);
        metrics.duration.observe(called.elapsed().as_secs_f64());
        let failure = match result {
            Ok(mut outputs) => {
                metrics.handled.inc();
                if attempt > 1 {
                    self.progress.retrying.store(0, Ordering::Relaxed);
                }
                let plugin = instance.plugin().clone();
                if let Some(span) = span {
                    span.mark_outputs(&mut outputs, plugin.manifest.output_topic.as_deref());
                    span.end("ok");
                }
                return self.go_on(self.finish(&plugin, message, outputs, attempt));
            }
            Err(failure) => failure,
        };
        if let Some(span) = span {
            span.end(&failure.kind().to_string());
        }
        if failure.kind() != FailureKind::Unavailable {
            metrics.failure(failure.kind()); // no room for an instance is not a failed attempt
        }
        // The policy is read only on failure: nothing is cloned on the message path.
        let plugin = instance.plugin().clone();
        if failure.kind() == FailureKind::Unavailable {
            // Not the message's fault: the same message again once an instance is free.
            return self.wait_for_instance(&failure, message, attempt, Some(plugin));
        }
        let policy = &plugin.manifest.on_failure;
        if failure.kind() != FailureKind::RetryLater || attempt >= policy.max_attempts {
            return self.go_on(self.give_up(&plugin, &message, &failure, attempt, Registered::No));
        }
        let pause = backoff(policy, attempt);
        tracing::warn!(
            offset,
            attempt,
            pause_ms = pause.as_millis() as u64,
            "{failure}; retrying after a pause"
        );
        let at = Instant::now() + pause;
        self.progress.metrics.retries.inc();
        self.progress.retrying.store(attempt + 1, Ordering::Relaxed);
        self.pending = Some(Pending {
            record: Record {
                message,
                bad_header: None,
            },
            attempt: attempt + 1,
            not_before: Some(at),
            version: Some(plugin),
        });
        Step::Wait(at)
    }

    fn go_on(&self, flow: Flow) -> Step {
        match flow {
            ControlFlow::Continue(()) => Step::Next,
            ControlFlow::Break(Halted) => Step::Halt,
        }
    }

    /// Says (now and then) that no instance could be had, and keeps the message for a later
    /// turn: it is not failed for it.
    fn wait_for_instance(
        &mut self,
        failure: &HandlerFailure,
        message: Message,
        attempt: u32,
        version: Option<Arc<LoadedPlugin>>,
    ) -> Step {
        static SAID: AtomicU64 = AtomicU64::new(0);
        if SAID.fetch_add(1, Ordering::Relaxed).is_multiple_of(50) {
            tracing::warn!(
                offset = message.offset,
                "{failure}; waiting for one (the message is not failed for it; raise \
                 --instance-pool or the plugin's max-instances, or run fewer plugins per kp)"
            );
        }
        self.pending = Some(Pending {
            record: Record {
                message,
                bad_header: None,
            },
            attempt,
            not_before: None,
            // Only a retry is bound to a version; a first attempt takes the newest when it runs.
            version: version.filter(|_| attempt > 1),
        });
        Step::Wait(Instant::now() + INSTANCE_RETRY)
    }

    /// Says when this partition's messages start going to another version: between two
    /// messages, so every message is handled by exactly one version.
    fn note_version(&mut self, plugin: &Arc<LoadedPlugin>, offset: i64) {
        let same = self
            .last_version
            .as_ref()
            .is_some_and(|(last, _)| std::ptr::eq(last.as_ptr(), Arc::as_ptr(plugin)));
        if same {
            return;
        }
        if let Some((_, from)) = &self.last_version {
            tracing::info!(
                offset, from = %from, to = %plugin.version(),
                "partition switched version"
            );
        }
        self.last_version = Some((Arc::downgrade(plugin), plugin.version().to_string()));
    }

    /// The partition's offsets went backwards to `offset`: the topic was deleted and created
    /// again, or its log truncated, and librdkafka reset the position (`auto.offset.reset`).
    /// What is in flight of the old incarnation finishes first; then its progress starts anew,
    /// so its offsets are never committed over the new topic's.
    fn start_again(&self, offset: i64, previous: i64) {
        tracing::error!(
            offset,
            previous,
            "OFFSETS WENT BACKWARDS: the partition now starts at offset {offset}, below the {} \
             kp had reached: the topic was deleted and created again (or its log truncated). \
             Handling the new records from here; the old position is not committed over them.",
            previous + 1
        );
        while !self.progress.wait_idle(Instant::now() + STRICT_WAIT_SLICE) {
            if self.stop.is_triggered() {
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

    /// What follows a handler's success: the outputs are checked against the manifest,
    /// registered with the progress tracker and sent (strict mode: and committed).
    fn finish(
        &self,
        plugin: &Arc<LoadedPlugin>,
        message: Message,
        outputs: Vec<Output>,
        attempt: u32,
    ) -> Flow {
        let offset = message.offset;
        let default_topic = plugin.manifest.output_topic.as_deref();
        if outputs.iter().any(|o| o.topic.is_none()) && default_topic.is_none() {
            self.progress.fail(
                offset,
                "the handler returned an output without a topic and the manifest names no output-topic".into(),
            );
            return ControlFlow::Break(Halted);
        }
        if let Some(why) = undeclared_output(&plugin.manifest, &outputs) {
            let failure = HandlerFailure::OutputRefused(why);
            self.progress.metrics.failure(failure.kind());
            return self.give_up(plugin, &message, &failure, attempt, Registered::No);
        }
        // Kept until its outputs are acknowledged only where a refused output could still send
        // it to the dead-letter topic.
        let keep =
            (plugin.manifest.on_failure.action == FailureAction::DeadLetter).then_some(message);
        // ORDER MATTERS: registered before the outputs are sent. An acknowledgement can arrive
        // (on the producer's thread) before `send` returns, and one for a message the tracker
        // does not know to be in flight would be lost: the message would never be finished, and
        // its partition's commits would stop there.
        self.progress
            .handled_keeping(offset, outputs.len() as u32, keep);
        for out in &outputs {
            let topic = out
                .topic
                .as_deref()
                .or(default_topic)
                .expect("checked above");
            self.send(topic, out, offset, Sent::Output)?;
        }
        self.apply_policy_to_refused_outputs()?;
        if self.shared.mode == CommitMode::Strict {
            return self.commit_now(offset);
        }
        ControlFlow::Continue(())
    }

    /// Sends one record for the message at `offset`. An output the broker refuses for good
    /// before it is sent goes to the failure policy (like one refused later, by the broker); any
    /// other failure, and any failure of a dead-letter record, halts the partition.
    fn send(&self, topic: &str, record: &Output, offset: i64, what: Sent) -> Flow {
        let token = AckToken {
            progress: self.progress.clone(),
            offset,
            dead_letter: what == Sent::DeadLetter,
        };
        match output::send(&self.shared.producer, topic, record, token) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) if what == Sent::Output && output::refused_for_good(&error) => {
                self.progress.refused(
                    offset,
                    format!("the output to {topic:?} was refused: {error}"),
                );
                ControlFlow::Continue(())
            }
            Err(error) => {
                self.progress
                    .fail(offset, format!("producing to {topic:?} failed: {error}"));
                ControlFlow::Break(Halted)
            }
        }
    }

    /// Applies the failure policy to messages whose outputs the broker refused for good.
    fn apply_policy_to_refused_outputs(&self) -> Flow {
        for refused in self.progress.take_refusals() {
            let plugin = self.versions.load_full();
            let failure = HandlerFailure::OutputRefused(refused.reason);
            self.progress.metrics.failure(failure.kind());
            let registered = Registered::Refused;
            match refused.message {
                Some(message) => self.give_up(&plugin, &message, &failure, 1, registered)?,
                // Kept only under a dead-letter policy: the policy changed since (a reload).
                None if plugin.manifest.on_failure.action == FailureAction::DeadLetter => {
                    self.progress.fail(
                        refused.offset,
                        format!(
                            "{failure} (output-refused; the dead-letter policy came with a \
                                 new version after the message was handled, so it was not kept)"
                        ),
                    );
                    return ControlFlow::Break(Halted);
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
                    self.give_up(&plugin, &stub, &failure, 1, registered)?
                }
            }
        }
        ControlFlow::Continue(())
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
    ) -> Flow {
        let offset = message.offset;
        let policy = &plugin.manifest.on_failure;
        self.progress.retrying.store(0, Ordering::Relaxed);
        // The message is finished once `extra` more records (a dead-letter record) are acknowledged.
        let settle = |extra: u32| match registered {
            Registered::No => self.progress.handled(offset, extra),
            Registered::Refused => self.progress.resolve_refusal(offset, extra),
        };
        match (policy.action, &policy.dead_letter_topic) {
            (FailureAction::DeadLetter, Some(topic)) => {
                tracing::warn!(
                    offset, attempts, kind = %failure.kind(), dead_letter_topic = %topic, "{failure}; sent to the dead-letter topic"
                );
                // Committed only once the dead-letter record is acknowledged, like any output.
                self.progress.metrics.dead_lettered.inc();
                settle(1);
                let mut record = dead_letter(plugin, message, failure, attempts);
                crate::ops::trace::mark_dead_letter(&mut record, topic);
                self.send(topic, &record, offset, Sent::DeadLetter)?;
                self.commit_if_strict(offset)
            }
            (FailureAction::Skip, _) => {
                tracing::warn!(
                    offset, attempts, kind = %failure.kind(), "{failure}; SKIPPED (policy skip): the message is dropped"
                );
                self.progress.skipped();
                self.progress.metrics.skipped.inc();
                settle(0);
                self.commit_if_strict(offset)
            }
            _ => {
                self.progress.fail(
                    offset,
                    format!(
                        "{failure} ({}, after {attempts} attempt(s))",
                        failure.kind()
                    ),
                );
                ControlFlow::Break(Halted)
            }
        }
    }

    fn commit_if_strict(&self, offset: i64) -> Flow {
        if self.shared.mode == CommitMode::Strict {
            self.commit_now(offset)
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Strict mode: wait until this message is finished and its offset committed. Stopping cuts
    /// the wait short and goes on (to the turn's stop check): the message stays uncommitted.
    fn commit_now(&self, offset: i64) -> Flow {
        // A round trip to the broker, retried while it fails: a wait on Kafka, not a stuck worker.
        super::executor::waiting_on_kafka();
        loop {
            if self
                .progress
                .wait_finished(offset, Instant::now() + STRICT_WAIT_SLICE)
            {
                break;
            }
            if self.progress.failed_at().is_some() {
                return ControlFlow::Break(Halted);
            }
            self.apply_policy_to_refused_outputs()?;
            if self.stop.is_triggered() {
                return ControlFlow::Continue(());
            }
        }
        loop {
            match self.shared.commits.flush(Duration::from_secs(30)) {
                Ok(()) => return ControlFlow::Continue(()),
                Err(e) => {
                    tracing::warn!(offset, "strict commit failed, retrying: {e:#}");
                    if self.stop.wait_timeout(Duration::from_millis(100)) {
                        return ControlFlow::Continue(());
                    }
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
