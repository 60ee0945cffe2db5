//! The committer: one thread per plugin consumer that commits finished offsets as early as
//! possible. After each advance a commit goes out at once; while it is in flight, later advances
//! are coalesced into the next commit. There is no fixed interval.
//!
//! Coalescing starts before the channel: a partition's latest committable offset lives in its
//! [`AdvanceSlot`], and the slot is queued on the channel only when it is not queued already, so
//! a partition finishing a million messages between two commits sends one request, not a million.
//!
//! Every commit names its offsets explicitly (no "commit what was stored"), so what is committed
//! is exactly what [`super::progress::PartitionProgress`] computed.
//!
//! A failed commit is retried, except for a topic that no longer exists: Kafka drops a deleted
//! topic's committed offsets with it, and writing the old offset back once a topic of the same
//! name is created again would skip the new topic's first records. Such offsets are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use crate::stop::join_logged;

/// Pause after a failed commit before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Why a flush did not commit.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("the committer has stopped")]
    Stopped,
    #[error("the commit did not complete within {0:?}")]
    TimedOut(Duration),
    #[error("the commit failed: {0}")]
    Kafka(#[source] KafkaError),
}

/// What the committer is asked to do.
pub enum CommitRequest {
    /// The partition's committable offset moved: read it from the slot.
    Advance(Arc<AdvanceSlot>),
    /// Commit everything pending now and reply when it is committed (or failed).
    Flush {
        reply: Sender<Result<(), KafkaError>>,
    },
    /// The partition is no longer ours: drop anything pending for it.
    Forget { topic: Arc<str>, partition: i32 },
    /// Commit what is pending, then exit.
    Stop,
}

/// The latest committable offset of one partition, written by its progress tracker and read by
/// the committer.
#[derive(Debug)]
pub struct AdvanceSlot {
    topic: Arc<str>,
    partition: i32,
    /// The next offset to commit (only ever grows).
    next: AtomicI64,
    /// True while an `Advance` for this slot waits in the channel: later advances only update
    /// `next`. The committer clears it *before* reading `next`, so no advance is ever missed.
    queued: AtomicBool,
    /// The last offset the group has committed for this slot (`i64::MIN` until the first
    /// commit), written by the committer, read by the worker to bound what is uncommitted.
    pub committed: Arc<AtomicI64>,
}

impl AdvanceSlot {
    pub fn new(topic: Arc<str>, partition: i32) -> Arc<Self> {
        Arc::new(AdvanceSlot {
            topic,
            partition,
            next: AtomicI64::new(0),
            queued: AtomicBool::new(false),
            committed: Arc::new(AtomicI64::new(i64::MIN)),
        })
    }

    /// Takes the slot off the queue and returns its offset (the committer's side).
    pub fn take(&self) -> i64 {
        self.queued.store(false, Ordering::SeqCst);
        self.next.load(Ordering::SeqCst)
    }
}

/// The sending side, given to every partition's progress tracker.
#[derive(Clone)]
pub struct CommitSink(Sender<CommitRequest>);

impl CommitSink {
    pub fn new(tx: Sender<CommitRequest>) -> Self {
        CommitSink(tx)
    }

    /// Records that `slot`'s partition may be committed up to `next`, and queues the slot for
    /// the committer unless it is queued already.
    pub fn advance(&self, slot: &Arc<AdvanceSlot>, next: i64) {
        slot.next.fetch_max(next, Ordering::SeqCst);
        if !slot.queued.swap(true, Ordering::SeqCst) {
            let _ = self.0.send(CommitRequest::Advance(slot.clone()));
        }
    }

    pub fn forget(&self, topic: Arc<str>, partition: i32) {
        let _ = self.0.send(CommitRequest::Forget { topic, partition });
    }

    /// Commits everything pending and waits for the result, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let (reply, answer) = bounded(1);
        self.0
            .send(CommitRequest::Flush { reply })
            .map_err(|_| FlushError::Stopped)?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result.map_err(FlushError::Kafka),
            Err(RecvTimeoutError::Timeout) => Err(FlushError::TimedOut(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(FlushError::Stopped),
        }
    }
}

/// Owns the committer thread; dropping it commits what is pending and joins the thread.
pub struct Committer {
    /// To send the final `Stop`.
    sink: CommitSink,
    thread: Option<JoinHandle<()>>,
}

type Key = (Arc<str>, i32);
/// Offsets to commit, with the slot each came from (told once it is committed).
type Pending = BTreeMap<Key, (i64, Arc<AdvanceSlot>)>;

impl Committer {
    /// Starts committing for `consumer`, reading requests from `requests`, in a
    /// `committer{plugin}` span.
    pub fn start<C: ConsumerContext + 'static>(
        plugin: Arc<str>,
        consumer: Arc<BaseConsumer<C>>,
        sink: CommitSink,
        requests: Receiver<CommitRequest>,
    ) -> Result<Self> {
        let span = tracing::info_span!("committer", plugin = %plugin);
        let thread = std::thread::Builder::new()
            .name(format!("kp-commit-{plugin}"))
            .spawn(move || span.in_scope(|| commit_loop(&consumer, &requests)))
            .context("starting the committer thread")?;
        Ok(Committer {
            sink,
            thread: Some(thread),
        })
    }
}

impl Drop for Committer {
    /// Commits what is pending and stops the thread (which drops its consumer handle).
    fn drop(&mut self) {
        let _ = self.sink.0.send(CommitRequest::Stop);
        if let Some(thread) = self.thread.take() {
            join_logged(thread);
        }
    }
}

fn commit_loop<C: ConsumerContext>(consumer: &BaseConsumer<C>, requests: &Receiver<CommitRequest>) {
    let mut pending: Pending = BTreeMap::new();
    let mut waiters: Vec<Sender<Result<(), KafkaError>>> = Vec::new();
    let mut stopping = false;
    let mut last_failed = false;
    loop {
        // Block for the next request; after a failed commit, wake up to retry it.
        let first = if last_failed {
            requests.recv_timeout(RETRY_BACKOFF)
        } else {
            requests.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match first {
            Ok(request) => absorb(request, &mut pending, &mut waiters, &mut stopping),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => stopping = true,
        }
        // Coalesce everything that queued up while the last commit was in flight.
        for request in requests.try_iter() {
            absorb(request, &mut pending, &mut waiters, &mut stopping);
        }
        let result = if pending.is_empty() {
            Ok(())
        } else {
            commit(consumer, &pending)
        };
        last_failed = result.is_err();
        match &result {
            Ok(()) => {
                if !pending.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
                    let offsets: BTreeMap<&Key, i64> =
                        pending.iter().map(|(k, (next, _))| (k, *next)).collect();
                    tracing::debug!(?offsets, "committed");
                }
                for (next, slot) in std::mem::take(&mut pending).into_values() {
                    slot.committed.fetch_max(next, Ordering::SeqCst);
                }
            }
            Err(e) => {
                tracing::warn!("commit failed, will retry: {e}");
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                    drop_deleted_topics(consumer, &mut pending);
                }
            }
        }
        for waiter in waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
        if stopping {
            if !pending.is_empty() {
                tracing::warn!("committer stopping with offsets it could not commit: {pending:?}");
            }
            return;
        }
    }
}

fn absorb(
    request: CommitRequest,
    pending: &mut Pending,
    waiters: &mut Vec<Sender<Result<(), KafkaError>>>,
    stopping: &mut bool,
) {
    match request {
        CommitRequest::Advance(slot) => {
            let next = slot.take();
            let entry = pending
                .entry((slot.topic.clone(), slot.partition))
                .or_insert_with(|| (next, slot.clone()));
            if Arc::ptr_eq(&entry.1, &slot) {
                entry.0 = entry.0.max(next);
            } else {
                *entry = (next, slot); // a new incarnation of the partition (see progress)
            }
        }
        CommitRequest::Flush { reply } => waiters.push(reply),
        CommitRequest::Forget { topic, partition } => {
            pending.remove(&(topic, partition));
        }
        CommitRequest::Stop => *stopping = true,
    }
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    pending: &Pending,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(pending.len());
    for ((topic, partition), (next, _)) in pending {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    let result = consumer.commit(&tpl, CommitMode::Sync);
    drop(tpl);
    result
}

/// Drops the pending offsets of topics the cluster no longer has, saying so.
fn drop_deleted_topics<C: ConsumerContext>(consumer: &BaseConsumer<C>, pending: &mut Pending) {
    let topics: BTreeSet<Arc<str>> = pending.keys().map(|(t, _)| t.clone()).collect();
    for topic in topics {
        let exists = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .map(|md| super::has_topic(&md, &topic));
        if let Ok(false) = exists {
            pending.retain(|(t, partition), (next, _)| {
                let keep = *t != topic;
                if !keep {
                    tracing::error!(
                        topic = %t, partition, offset = *next,
                        "the topic does not exist any more (deleted): its offset is not committed \
                         (Kafka dropped the group's offsets with the topic; a topic created again \
                         under this name starts from auto.offset.reset)"
                    );
                }
                keep
            });
        }
    }
}
