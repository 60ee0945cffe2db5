//! The commit rule for one partition.
//!
//! A message is *finished* when its handler has returned and every record it produced has been
//! acknowledged by the broker. The committable offset of a partition is one past the last
//! message such that it and every earlier message are finished. `PartitionProgress` tracks the
//! messages in flight in offset order and moves that offset forward, telling the committer each
//! time it does. A failure freezes it: nothing at or after the failed message is ever committed.
//!
//! An output the broker refuses for good (too large, a partition or topic that does not exist, not
//! authorized) is not the partition's failure but the message's: the message stays unfinished,
//! and its worker applies the plugin's failure policy to it ([`PartitionProgress::take_refusals`],
//! [`PartitionProgress::resolve_refusal`]). For a dead-letter policy the message itself is kept in
//! flight until its outputs are acknowledged, so it can still be dead-lettered then.
//!
//! Offsets only grow within one incarnation of a partition. When a topic is deleted and created
//! again (or its log truncated), [`PartitionProgress::restart`] starts a new one, so an offset of
//! the old topic is never committed over the new one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use arc_swap::ArcSwap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::committer::{AdvanceSlot, CommitSink};
use super::health::{Halt, Health};
use crate::sandbox::Message;

/// One message whose outputs are not all acknowledged yet.
#[derive(Debug)]
struct InFlight {
    offset: i64,
    /// Outputs sent and not yet acknowledged.
    unacked: u32,
    /// The message, kept while a refused output could still send it to the dead-letter topic.
    message: Option<Message>,
    /// An output of this message was refused for good: it is not finished until the worker has
    /// applied the failure policy.
    refusal: Refusal,
}

#[derive(Debug, Default, PartialEq)]
enum Refusal {
    #[default]
    None,
    /// Refused; the worker has not seen it yet.
    Pending(String),
    /// The worker is applying the policy.
    Taken,
    /// The policy was applied: a later refused output of the same message changes nothing (the
    /// message was already dead-lettered or skipped).
    Resolved,
}

impl Refusal {
    /// True while the message waits for its policy.
    fn blocks(&self) -> bool {
        matches!(self, Refusal::Pending(_) | Refusal::Taken)
    }
}

/// An output refused for good, handed to the worker: the policy applies to its message.
#[derive(Debug)]
pub struct RefusedOutput {
    pub offset: i64,
    pub reason: String,
    /// The message, when it was kept (dead-letter policy).
    pub message: Option<Message>,
}

#[derive(Debug)]
struct State {
    /// Messages handed to the producer, in offset order.
    in_flight: VecDeque<InFlight>,
    /// The next offset to commit (last finished + 1), once anything has finished.
    committable: Option<i64>,
    /// Set when a message failed: the partition is halted at that offset.
    failed_at: Option<i64>,
    /// Set once the partition is revoked or stopped: progress is no longer sent to the committer.
    detached: bool,
    /// Messages dropped by the `skip` policy.
    skipped: u64,
    /// Threads waiting on `changed`: notifying costs a system call, so it is skipped when none is.
    waiters: usize,
    /// This incarnation's latest committable offset, as the committer reads it (replaced by
    /// [`PartitionProgress::restart`]).
    slot: Arc<AdvanceSlot>,
}

/// Finished-offset tracking for one assigned partition; shared by its worker (which registers
/// messages), the producer's delivery callback (which acknowledges outputs) and the consumer
/// (which waits for it to go idle when draining).
pub struct PartitionProgress {
    pub plugin: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    state: Mutex<State>,
    /// Signalled whenever `committable` moves or the partition fails.
    changed: Condvar,
    sink: CommitSink,
    health: Arc<Health>,
    /// Set when an output was refused, so the worker's check between messages costs no lock.
    refused: AtomicBool,
    /// The group's committed offset of this incarnation, as the committer reports it.
    committed: ArcSwap<AtomicI64>,
    /// The first offset handled in this incarnation (`i64::MIN` before it).
    first: AtomicI64,
    /// One past the last offset handled in this incarnation (`i64::MIN` before the first).
    handled_up_to: AtomicI64,
    /// The offset of the record the worker read last (-1 before the first): where a worker
    /// that dies halts the partition.
    reading: AtomicI64,
    /// The attempt a message waiting for a retry is at (0: none waits): the partition is
    /// backing off.
    pub retrying: std::sync::atomic::AtomicU32,
    /// The plugin's metric handles.
    pub metrics: crate::ops::metrics::PluginMetrics,
    /// Set once the partition halted (from any thread), so its task's check between messages
    /// costs no lock.
    halted: AtomicBool,
    /// When it halted (a resume request covers the halts before it).
    halted_since: Mutex<Option<Instant>>,
}

impl PartitionProgress {
    pub fn new(
        plugin: Arc<str>,
        topic: Arc<str>,
        partition: i32,
        sink: CommitSink,
        health: Arc<Health>,
    ) -> Self {
        let slot = AdvanceSlot::new(topic.clone(), partition);
        PartitionProgress {
            committed: ArcSwap::new(slot.committed.clone()),
            first: AtomicI64::new(i64::MIN),
            handled_up_to: AtomicI64::new(i64::MIN),
            reading: AtomicI64::new(-1),
            retrying: Default::default(),
            halted: AtomicBool::new(false),
            halted_since: Mutex::new(None),
            metrics: crate::ops::metrics::metrics().plugin(&plugin),
            state: Mutex::new(State {
                in_flight: VecDeque::new(),
                committable: None,
                failed_at: None,
                detached: false,
                skipped: 0,
                waiters: 0,
                slot,
            }),
            plugin,
            topic,
            partition,
            changed: Condvar::new(),
            sink,
            health,
            refused: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handler returned for `offset` and `outputs` records are about to be sent.
    /// With no outputs the message is finished at once.
    pub fn handled(&self, offset: i64, outputs: u32) {
        self.handled_keeping(offset, outputs, None);
    }

    /// [`Self::handled`], keeping `message` until its outputs are acknowledged (for a policy
    /// that must still be able to dead-letter it).
    pub fn handled_keeping(&self, offset: i64, outputs: u32, message: Option<Message>) {
        // Only the worker writes these.
        if self.first.load(Ordering::Relaxed) == i64::MIN {
            self.first.store(offset, Ordering::Relaxed);
        }
        self.handled_up_to.store(offset + 1, Ordering::Relaxed);
        let mut state = self.lock();
        debug_assert!(
            state
                .in_flight
                .back()
                .is_none_or(|last| last.offset < offset)
        );
        state.in_flight.push_back(InFlight {
            offset,
            unacked: outputs,
            message: if outputs > 0 { message } else { None },
            refusal: Refusal::None,
        });
        self.advance(&mut state);
    }

    /// The broker acknowledged (or refused) one output of the message at `offset`.
    pub fn acked(&self, offset: i64, result: Result<(), String>) {
        let mut state = self.lock();
        if let Err(reason) = result {
            drop(state);
            self.fail(
                offset,
                format!("an output record was not delivered: {reason}"),
            );
            return;
        }
        if let Some(entry) = Self::entry(&mut state, offset) {
            entry.unacked = entry.unacked.saturating_sub(1);
        }
        self.advance(&mut state);
    }

    /// The broker refused one output of the message at `offset` for good: the message is not
    /// finished until its worker has applied the failure policy to it.
    pub fn refused(&self, offset: i64, reason: String) {
        let mut state = self.lock();
        if let Some(entry) = Self::entry(&mut state, offset) {
            entry.unacked = entry.unacked.saturating_sub(1);
            if entry.refusal == Refusal::None {
                entry.refusal = Refusal::Pending(reason);
                self.refused.store(true, Ordering::Release);
            }
        }
        self.advance(&mut state);
    }

    /// The refused outputs the worker has not seen yet (cheap when there are none).
    pub fn take_refusals(&self) -> Vec<RefusedOutput> {
        // A plain load first: this runs between every two messages, and a swap would write the
        // cache line the delivery thread reads.
        if !self.refused.load(Ordering::Acquire) || !self.refused.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        let mut state = self.lock();
        state
            .in_flight
            .iter_mut()
            .filter(|e| matches!(e.refusal, Refusal::Pending(_)))
            .map(|e| {
                let Refusal::Pending(reason) = std::mem::replace(&mut e.refusal, Refusal::Taken)
                else {
                    unreachable!("filtered")
                };
                RefusedOutput {
                    offset: e.offset,
                    reason,
                    message: e.message.take(),
                }
            })
            .collect()
    }

    /// The policy was applied to a message with a refused output; `outputs` more records (a
    /// dead-letter record) are about to be sent for it.
    pub fn resolve_refusal(&self, offset: i64, outputs: u32) {
        let mut state = self.lock();
        if let Some(entry) = Self::entry(&mut state, offset) {
            entry.refusal = Refusal::Resolved;
            entry.unacked += outputs;
        }
        self.advance(&mut state);
    }

    /// The in-flight entry of `offset`.
    fn entry(state: &mut State, offset: i64) -> Option<&mut InFlight> {
        // Offsets are mostly dense (no gaps from compaction or transaction markers): try the
        // slot `offset - front` before searching.
        let guess = state
            .in_flight
            .front()
            .and_then(|front| usize::try_from(offset - front.offset).ok())
            .filter(|&i| state.in_flight.get(i).is_some_and(|m| m.offset == offset));
        let index = guess.or_else(|| {
            state
                .in_flight
                .binary_search_by_key(&offset, |m| m.offset)
                .ok()
        })?;
        state.in_flight.get_mut(index)
    }

    /// Starts a new incarnation of the partition: its offsets went backwards (the topic was
    /// deleted and created again, or its log truncated). Nothing of the old one is committed
    /// from now on: its pending commit is dropped and the next commit may go below it.
    pub fn restart(&self) {
        let mut state = self.lock();
        self.sink.forget(self.topic.clone(), self.partition);
        state.slot = AdvanceSlot::new(self.topic.clone(), self.partition);
        self.committed.store(state.slot.committed.clone());
        self.first.store(i64::MIN, Ordering::Relaxed);
        self.handled_up_to.store(i64::MIN, Ordering::Relaxed);
        state.in_flight.clear();
        state.committable = None;
        drop(state);
        self.changed.notify_all();
    }

    /// The message at `offset` failed: halt the partition there and say so loudly.
    pub fn fail(&self, offset: i64, reason: String) {
        let mut state = self.lock();
        if state.failed_at.is_some_and(|at| at <= offset) {
            return;
        }
        state.failed_at = Some(offset);
        drop(state);
        *self.halted_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.halted.store(true, Ordering::Release);
        self.changed.notify_all();
        self.health.halted(Halt {
            plugin: self.plugin.to_string(),
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            reason,
        });
    }

    fn advance(&self, state: &mut State) {
        let mut moved = false;
        while let Some(front) = state.in_flight.front() {
            let blocked =
                state.failed_at.is_some_and(|at| at <= front.offset) || front.refusal.blocks();
            if front.unacked > 0 || blocked {
                break;
            }
            state.committable = Some(front.offset + 1);
            state.in_flight.pop_front();
            moved = true;
        }
        if moved {
            if !state.detached
                && let Some(next) = state.committable
            {
                self.sink.advance(&state.slot, next);
            }
            if state.waiters > 0 {
                self.changed.notify_all();
            }
        }
    }

    /// The worker read the record at `offset`.
    pub fn note_reading(&self, offset: i64) {
        self.reading.store(offset, Ordering::Relaxed);
    }

    /// The offset of the record the worker read last (-1 before the first).
    pub fn reading(&self) -> i64 {
        self.reading.load(Ordering::Relaxed)
    }

    /// How many messages before `offset` are handled but not committed, at most: the distance
    /// from the last committed offset (or the first handled one, before any commit) to the last
    /// handled one. Offsets may have gaps (compaction, aborted transactions), so this counts
    /// offsets, never fewer than messages; and when everything handled is committed it is 0,
    /// however far `offset` jumps.
    pub fn uncommitted_before(&self, offset: i64) -> u64 {
        let committed = self.committed.load().load(Ordering::SeqCst);
        let handled_up_to = self.handled_up_to.load(Ordering::Relaxed);
        if handled_up_to == i64::MIN || committed >= handled_up_to {
            return 0;
        }
        let base = committed.max(self.first.load(Ordering::Relaxed));
        u64::try_from(offset.min(handled_up_to) - base).unwrap_or(0)
    }

    /// Counts a message dropped by the `skip` policy.
    pub fn skipped(&self) {
        self.lock().skipped += 1;
    }

    /// Messages dropped by the `skip` policy so far.
    pub fn skipped_count(&self) -> u64 {
        self.lock().skipped
    }

    /// The next offset to commit, if any message has finished.
    pub fn committable(&self) -> Option<i64> {
        self.lock().committable
    }

    /// The offset the partition halted at, if it did.
    /// When the partition halted.
    pub fn halted_since(&self) -> Option<Instant> {
        *self.halted_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the partition halted (a lock-free [`Self::failed_at`]`.is_some()`).
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    pub fn failed_at(&self) -> Option<i64> {
        self.lock().failed_at
    }

    /// Waits until everything up to and including `offset` is finished. False on failure or timeout.
    pub fn wait_finished(&self, offset: i64, deadline: Instant) -> bool {
        self.wait_for(deadline, |state| {
            if state.committable.is_some_and(|next| next > offset) {
                Some(true)
            } else if state.failed_at.is_some() {
                Some(false)
            } else {
                None
            }
        })
    }

    /// Waits until no message is in flight (or the partition failed, or what is left waits
    /// for a policy that a stopped worker will not apply: it stays uncommitted). False on timeout.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        self.wait_for(deadline, |state| {
            // Every output answered: what is left waits behind a refused output.
            let settled = state.in_flight.iter().all(|e| e.unacked == 0);
            (settled || state.failed_at.is_some()).then_some(true)
        })
    }

    /// Waits until `decide` gives an answer (asked again at every change), or the deadline (false).
    fn wait_for(&self, deadline: Instant, decide: impl Fn(&State) -> Option<bool>) -> bool {
        let mut state = self.lock();
        loop {
            if let Some(answer) = decide(&state) {
                return answer;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state.waiters += 1;
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiters -= 1;
        }
    }

    /// Stops sending progress to the committer (the partition is revoked or stopped).
    /// True when the partition halted and every message before the halted one is finished: it
    /// can start again from the halted message without leaving one of them unacknowledged.
    pub fn settled_up_to_failure(&self) -> bool {
        let state = self.lock();
        state
            .failed_at
            .is_some_and(|at| state.in_flight.iter().all(|e| e.offset >= at))
    }

    pub fn detach(&self) {
        self.lock().detached = true;
    }

    /// Messages still in flight (for logs when a drain times out).
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::committer::{CommitRequest, CommitSink};
    use super::*;
    use std::time::Duration;

    fn progress() -> (
        PartitionProgress,
        crossbeam_channel::Receiver<CommitRequest>,
        Arc<Health>,
    ) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let health = Arc::new(Health::default());
        (
            PartitionProgress::new(
                "p".into(),
                "t".into(),
                0,
                CommitSink::new(tx),
                health.clone(),
            ),
            rx,
            health,
        )
    }

    /// What the committer would read: each queued slot's offset.
    fn advances(rx: &crossbeam_channel::Receiver<CommitRequest>) -> Vec<i64> {
        rx.try_iter()
            .filter_map(|r| match r {
                CommitRequest::Advance(slot) => Some(slot.take()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn advances_between_two_reads_are_coalesced_and_none_is_lost() {
        let (p, rx, _) = progress();
        for offset in 0..1000 {
            p.handled(offset, 0);
        }
        assert_eq!(advances(&rx), [1000], "one request for a thousand advances");
        p.handled(1000, 0);
        assert_eq!(
            advances(&rx),
            [1001],
            "after a read, the next advance is queued again"
        );
        assert_eq!(advances(&rx), Vec::<i64>::new());
    }

    #[test]
    fn no_outputs_finish_at_once() {
        let (p, rx, _) = progress();
        p.handled(10, 0);
        assert_eq!(p.committable(), Some(11));
        assert_eq!(advances(&rx), [11]);
    }

    #[test]
    fn commit_waits_for_every_ack_in_order() {
        let (p, rx, _) = progress();
        p.handled(0, 2);
        p.handled(1, 1);
        p.handled(2, 0);
        assert_eq!(p.committable(), None);
        p.acked(1, Ok(()));
        assert_eq!(p.committable(), None, "offset 0 is not finished yet");
        p.acked(0, Ok(()));
        assert_eq!(
            p.committable(),
            None,
            "offset 0 still has one output unacknowledged"
        );
        p.acked(0, Ok(()));
        assert_eq!(p.committable(), Some(3), "0, 1 and 2 are all finished");
        assert_eq!(advances(&rx), [3]);
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let (p, _, _) = progress();
        p.handled(5, 1);
        p.handled(9, 0);
        p.acked(5, Ok(()));
        assert_eq!(p.committable(), Some(10));
        // Acks out of order across a gap: 30 is not at index 30 - 20 (it is at 2).
        p.handled(20, 1);
        p.handled(21, 1);
        p.handled(30, 1);
        p.acked(30, Ok(()));
        p.acked(21, Ok(()));
        assert_eq!(p.committable(), Some(10), "20 is not acknowledged yet");
        p.acked(20, Ok(()));
        assert_eq!(p.committable(), Some(31));
    }

    #[test]
    fn a_failed_delivery_freezes_the_partition() {
        let (p, rx, health) = progress();
        p.handled(0, 1);
        p.handled(1, 1);
        p.handled(2, 1);
        p.acked(0, Ok(()));
        p.acked(1, Err("broker said no".into()));
        p.acked(2, Ok(()));
        assert_eq!(
            p.committable(),
            Some(1),
            "nothing at or past the failure is committable"
        );
        assert_eq!(p.failed_at(), Some(1));
        assert_eq!(advances(&rx), [1]);
        let halts = health.halts();
        assert_eq!(halts.len(), 1);
        assert_eq!(halts[0].offset, 1);
        assert!(halts[0].reason.contains("broker said no"));
    }

    #[test]
    fn a_handler_failure_halts_before_the_message() {
        let (p, _, health) = progress();
        p.handled(0, 0);
        p.fail(1, "trap".into());
        p.handled(2, 0);
        assert_eq!(p.committable(), Some(1));
        assert_eq!(health.halts().len(), 1);
    }

    #[test]
    fn a_refused_output_holds_its_message_until_the_policy_is_applied() {
        let (p, rx, health) = progress();
        let message = Message {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            timestamp: None,
            key: None,
            value: Some(b"v".to_vec()),
            headers: vec![],
        };
        p.handled(0, 1);
        p.handled_keeping(1, 2, Some(message.clone()));
        p.handled(2, 0);
        p.acked(0, Ok(()));
        p.refused(1, "too large".into());
        assert_eq!(p.committable(), Some(1), "1 waits for its policy");
        let refused = p.take_refusals();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].offset, 1);
        assert_eq!(refused[0].reason, "too large");
        assert_eq!(refused[0].message.as_ref(), Some(&message));
        assert!(p.take_refusals().is_empty(), "handed out once");
        // Dead-lettered: one more record for offset 1.
        p.resolve_refusal(1, 1);
        // Its other output is refused too, later: nothing changes, it is dead-lettered already.
        p.refused(1, "too large as well".into());
        assert!(p.take_refusals().is_empty(), "the policy is applied once");
        assert_eq!(
            p.committable(),
            Some(1),
            "the dead-letter record is not acknowledged yet"
        );
        p.acked(1, Ok(()));
        assert_eq!(p.committable(), Some(3));
        assert!(health.halts().is_empty(), "a refused output is not a halt");
        assert_eq!(advances(&rx).last(), Some(&3));
    }

    #[test]
    fn a_restart_commits_below_the_old_incarnation() {
        let (p, rx, _) = progress();
        for offset in 0..100 {
            p.handled(offset, 0);
        }
        assert_eq!(advances(&rx), [100]);
        p.handled(100, 1); // in flight when the topic went away
        p.restart();
        assert!(
            rx.try_iter()
                .any(|r| matches!(r, CommitRequest::Forget { .. })),
            "the old incarnation's pending commit is dropped"
        );
        assert_eq!(p.committable(), None);
        p.handled(0, 0);
        p.handled(1, 0);
        assert_eq!(p.committable(), Some(2));
        assert_eq!(advances(&rx), [2], "commits go below the old offset");
    }

    #[test]
    fn a_drain_does_not_wait_for_a_policy_nobody_will_apply() {
        let (p, _, _) = progress();
        p.handled(0, 1);
        p.handled(1, 0);
        p.refused(0, "no such partition".into());
        assert!(p.wait_idle(Instant::now()), "every output answered");
        assert_eq!(
            p.committable(),
            None,
            "and nothing committable past the refusal"
        );
    }

    #[test]
    fn a_gap_in_offsets_does_not_count_as_uncommitted() {
        let (p, rx, _) = progress();
        for offset in 0..10 {
            p.handled(offset, 0);
        }
        assert_eq!(p.uncommitted_before(10), 10, "nothing committed yet");
        // The committer commits 10.
        for r in rx.try_iter() {
            if let CommitRequest::Advance(slot) = r {
                let next = slot.take();
                slot.committed.fetch_max(next, Ordering::SeqCst);
            }
        }
        assert_eq!(p.uncommitted_before(10), 0);
        assert_eq!(
            p.uncommitted_before(1_000_000),
            0,
            "10..1,000,000 were never handled"
        );
        p.handled(1_000_000, 1);
        assert_eq!(
            p.uncommitted_before(1_000_001),
            1_000_001 - 10,
            "an upper bound"
        );
    }

    #[test]
    fn detached_progress_is_not_sent() {
        let (p, rx, _) = progress();
        p.detach();
        p.handled(0, 0);
        assert_eq!(p.committable(), Some(1));
        assert!(advances(&rx).is_empty());
    }

    #[test]
    fn waiting_for_a_message_sees_acks_from_another_thread() {
        let (p, _, _) = progress();
        let p = Arc::new(p);
        p.handled(0, 1);
        let acker = {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                p.acked(0, Ok(()));
            })
        };
        assert!(p.wait_finished(0, Instant::now() + Duration::from_secs(10)));
        assert!(p.wait_idle(Instant::now()));
        acker.join().unwrap();
        p.handled(1, 1);
        assert!(
            !p.wait_finished(1, Instant::now() + Duration::from_millis(10)),
            "times out"
        );
    }
}
