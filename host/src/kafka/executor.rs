//! The execution model: a fixed set of worker threads that serve the partitions of every plugin.
//!
//! ```text
//!  librdkafka fetch threads ──► partition queue (one per assigned partition, split off the
//!                               │                consumer's queue; holds up to --queue-depth)
//!                               │ empty → non-empty: librdkafka calls the queue's callback,
//!                               ▼                    which wakes the partition's task
//!  run queue (FIFO of ready tasks) ◄── wakes: queue callback · timer (backoff, waits) · stop
//!        │ a worker takes the task at the head (a lease: no other worker can hold it)
//!        ▼
//!  worker thread 1..N (--workers, default: the number of cores)
//!        runs one *turn* of the task: up to TURN_MESSAGES messages or TURN_TIME, then
//!        ├─ Ready  → back to the tail of the run queue (partitions share the workers fairly)
//!        ├─ Idle   → parked until its queue's callback (or a safety re-check) wakes it
//!        ├─ Sleep  → parked until a time (a retry's backoff, a full instance pool, commits)
//!        └─ Done   → dropped (stopped, drained or halted): its queue goes with it
//! ```
//!
//! Who owns what: a [`TaskRef`] is shared by the plugin consumer (to stop the task), the
//! partition queue's callback and the timer (weakly, to wake it). The task itself (the partition's
//! state, [`super::partition::PartitionTask`]) sits in its cell and is touched only by the worker
//! that holds the lease, so a partition's messages are handled one at a time, in offset order,
//! whichever worker runs each turn.
//!
//! Backpressure: a partition whose task is not running is not polled, and librdkafka stops
//! fetching a partition whose queue holds `queued.min.messages` (`--queue-depth`). A full run
//! queue is not possible: each task is in it at most once.
//!
//! Threads: `workers` + one timer thread, whatever the number of partitions and plugins.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Most messages of one partition handled in one turn before the worker moves on to the next
/// ready partition.
pub const TURN_MESSAGES: usize = 256;
/// Most time one turn takes (checked between messages) before the worker moves on: a slow
/// handler does not hold a worker from the other partitions for more than about this plus one
/// call.
pub const TURN_TIME: Duration = Duration::from_millis(10);
/// An idle task is looked at again after this even if its queue's callback never came: a wake-up
/// lost to a librdkafka path that does not call it costs at most this much latency, never a
/// stalled partition.
pub const IDLE_RECHECK: Duration = Duration::from_millis(250);

thread_local! {
    /// On a worker thread: the executor and the worker's index, to lift its turn's bound.
    static WORKER: std::cell::RefCell<Option<(Weak<Shared>, usize)>> =
        const { std::cell::RefCell::new(None) };
}

/// The current turn waits on Kafka (a full producer queue, a strict commit's round trip): that
/// is not a stuck worker, so `/healthz` stops counting this turn against its bound.
pub fn waiting_on_kafka() {
    WORKER.with(|worker| {
        if let Some((shared, index)) = &*worker.borrow()
            && let Some(shared) = shared.upgrade()
        {
            shared.turn_deadlines[*index].store(0, Ordering::Relaxed);
        }
    });
}

/// The default number of workers: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// What a task asks for at the end of its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// It has more to do now: run it again after the other ready tasks.
    Ready,
    /// Nothing to do until woken (its queue's callback, or a stop).
    Idle,
    /// Nothing to do until this time (or until woken).
    Sleep(Instant),
    /// Finished for good: drop it.
    Done,
}

/// A unit of work the executor runs in turns. Implemented by a partition's task.
pub trait Task: Send {
    /// Runs one turn. Must return within about [`TURN_TIME`] plus one handler call. The first
    /// turn gets the task's [`Waker`] (to hand to a partition queue's callback): by then the
    /// task is in its cell, so no wake can find the cell empty.
    fn turn(&mut self, first: Option<Waker>) -> Turn;
    /// The turn panicked (a bug, or a record that trips a library): the task must report it
    /// loudly; it is then dropped.
    fn panicked(&mut self, why: String);

    /// The longest a turn of this task may take when nothing is wrong (`/healthz` says a worker
    /// is stuck past it).
    fn turn_bound(&self) -> Duration {
        Duration::from_secs(60)
    }
}

// A task cell's schedule state.
const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
/// Running, and woken meanwhile: runs again after this turn.
const NOTIFIED: u8 = 3;
const DONE: u8 = 4;

struct TaskCell {
    /// IDLE / SCHEDULED / RUNNING / NOTIFIED / DONE: a task is in the run queue at most once and
    /// held by at most one worker; a wake during a turn is never lost.
    state: AtomicU8,
    /// The task; `None` once done. Locked only by the worker holding the lease (uncontended).
    task: Mutex<Option<Box<dyn Task>>>,
    /// The task's own waker until its first turn takes it.
    first: Mutex<Option<Waker>>,
    /// Where to queue it when woken (weak: the executor may be gone first).
    executor: Weak<Shared>,
    /// Which timer of this task is the live one: a timer set by an earlier turn is stale and
    /// wakes nothing (otherwise every wake of an idle task would start another chain of
    /// re-checks).
    timer_generation: AtomicU64,
    /// The cell keeps itself alive until it is done, so the last reference to a task that still
    /// holds a partition queue is never the temporary one in librdkafka's queue callback (the
    /// task would then be dropped inside that callback, under the queue's own lock).
    keep_alive: Mutex<Option<Arc<TaskCell>>>,
}

impl TaskCell {
    /// Makes the task run a turn soon; `urgent` puts it at the head of the run queue.
    fn wake(self: &Arc<Self>, urgent: bool) {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = match state {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return, // already scheduled or notified, or done
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if next == SCHEDULED
                        && let Some(executor) = self.executor.upgrade()
                    {
                        executor.push(self.clone(), urgent);
                    }
                    return;
                }
                Err(actual) => state = actual,
            }
        }
    }
}

/// A handle on a task: wakes it. Cheap to clone.
#[derive(Clone)]
pub struct TaskRef(Arc<TaskCell>);

impl TaskRef {
    /// Makes the task run a turn soon (no effect if it is done).
    pub fn wake(&self) {
        self.0.wake(false);
    }

    /// Makes the task run a turn before every other ready task: to stop it (a drain is bounded
    /// in time and must not wait behind every partition's turn).
    pub fn wake_first(&self) {
        self.0.wake(true);
    }

    /// A weak waker, for callbacks that must not keep the task alive (a partition queue's).
    pub fn waker(&self) -> Waker {
        Waker(Arc::downgrade(&self.0))
    }
}

/// Wakes a task if it still exists.
#[derive(Clone)]
pub struct Waker(Weak<TaskCell>);

impl Waker {
    pub fn wake(&self) {
        if let Some(cell) = self.0.upgrade() {
            cell.wake(false);
        }
    }
}

/// A timer entry: wake `task` at `at`.
struct Timer {
    at: Instant,
    /// Tie-breaker so entries are totally ordered.
    seq: u64,
    task: Weak<TaskCell>,
    /// The task's timer generation when this was set: stale once the task has run again.
    generation: u64,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What the workers and the timer share.
struct Shared {
    /// Ready tasks, in the order they became ready.
    ready: Mutex<VecDeque<Arc<TaskCell>>>,
    /// Signalled when a task is queued (or at shutdown).
    ready_signal: Condvar,
    /// Pending wake-ups, earliest first.
    timers: Mutex<BinaryHeap<Reverse<Timer>>>,
    /// Signalled when an earlier timer is added (or at shutdown).
    timer_signal: Condvar,
    timer_seq: AtomicU64,
    /// Set once: workers and the timer leave.
    stopping: AtomicBool,
    /// Times a worker took a task that was not in the SCHEDULED state (a bug: checked by tests).
    anomalies: AtomicU64,
    /// Per worker: when its current turn must be over, in milliseconds since `epoch` (0 between
    /// turns).
    turn_deadlines: Vec<AtomicU64>,
    /// The time `turn_deadlines` count from.
    epoch: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn push(&self, cell: Arc<TaskCell>, urgent: bool) {
        let mut ready = lock(&self.ready);
        if urgent {
            ready.push_front(cell);
        } else {
            ready.push_back(cell);
        }
        drop(ready);
        self.ready_signal.notify_one();
    }

    /// Sets the task's one live timer (any earlier one goes stale).
    fn wake_at(&self, cell: &Arc<TaskCell>, at: Instant) {
        let seq = self.timer_seq.fetch_add(1, Ordering::Relaxed);
        let generation = cell.timer_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut timers = lock(&self.timers);
        let earliest = timers.peek().is_none_or(|Reverse(t)| at < t.at);
        timers.push(Reverse(Timer {
            at,
            seq,
            task: Arc::downgrade(cell),
            generation,
        }));
        drop(timers);
        if earliest {
            self.timer_signal.notify_one();
        }
    }

    /// The next ready task, or `None` when stopping.
    fn take(&self) -> Option<Arc<TaskCell>> {
        let mut ready = lock(&self.ready);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            if let Some(cell) = ready.pop_front() {
                return Some(cell);
            }
            ready = self
                .ready_signal
                .wait(ready)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn worker_loop(self: &Arc<Self>, worker: usize) {
        WORKER.with(|w| *w.borrow_mut() = Some((Arc::downgrade(self), worker)));
        while let Some(cell) = self.take() {
            if cell.state.swap(RUNNING, Ordering::AcqRel) != SCHEDULED {
                self.anomalies.fetch_add(1, Ordering::Relaxed);
            }
            // Any timer set before this turn is stale now.
            cell.timer_generation.fetch_add(1, Ordering::AcqRel);
            let turn = {
                let mut slot = lock(&cell.task);
                let first = lock(&cell.first).take();
                let turn = match slot.as_mut() {
                    None => Turn::Done,
                    Some(task) => {
                        let bound = self.epoch.elapsed() + task.turn_bound();
                        self.turn_deadlines[worker]
                            .store(bound.as_millis().max(1) as u64, Ordering::Relaxed);
                        let turn = std::panic::catch_unwind(AssertUnwindSafe(|| task.turn(first)));
                        self.turn_deadlines[worker].store(0, Ordering::Relaxed);
                        match turn {
                            Ok(turn) => turn,
                            Err(panic) => {
                                let why = panic
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_else(|| "(no message)".into());
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                    task.panicked(why)
                                }));
                                Turn::Done
                            }
                        }
                    }
                };
                if turn == Turn::Done {
                    // Dropped here, on the worker: its partition queue (and the consumer
                    // reference it holds) goes with it. A panic while dropping must not kill
                    // the worker.
                    cell.state.store(DONE, Ordering::Release);
                    let task = slot.take();
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| drop(task)));
                }
                turn
            };
            match turn {
                Turn::Done => {
                    lock(&cell.keep_alive).take();
                }
                Turn::Ready => {
                    cell.state.store(SCHEDULED, Ordering::Release);
                    self.push(cell, false);
                }
                Turn::Idle | Turn::Sleep(_) => {
                    let at = match turn {
                        Turn::Sleep(at) => at,
                        _ => Instant::now() + IDLE_RECHECK,
                    };
                    self.wake_at(&cell, at);
                    // Woken during the turn: run again now.
                    if cell
                        .state
                        .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        cell.state.store(SCHEDULED, Ordering::Release);
                        self.push(cell, false);
                    }
                }
            }
        }
    }

    fn timer_loop(&self) {
        let mut timers = lock(&self.timers);
        while !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse(first)) = timers.peek() {
                if first.at > now {
                    break;
                }
                let Reverse(timer) = timers.pop().expect("peeked");
                due.push(timer);
            }
            let wait = timers
                .peek()
                .map(|Reverse(t)| t.at.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1));
            if !due.is_empty() {
                drop(timers);
                for timer in due {
                    if let Some(cell) = timer.task.upgrade()
                        && cell.timer_generation.load(Ordering::Acquire) == timer.generation
                    {
                        cell.wake(false);
                    }
                }
                timers = lock(&self.timers);
                continue;
            }
            timers = self
                .timer_signal
                .wait_timeout(timers, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The worker threads and the timer. Dropping it stops them (after their current turn) and drops
/// the tasks still queued.
pub struct Executor {
    shared: Arc<Shared>,
    /// Joined on drop.
    threads: Vec<JoinHandle<()>>,
    workers: usize,
}

impl Executor {
    /// Starts `workers` worker threads and the timer thread.
    pub fn start(workers: usize) -> Result<Self> {
        anyhow::ensure!(workers >= 1, "--workers must be at least 1");
        let shared = Arc::new(Shared {
            ready: Mutex::new(VecDeque::new()),
            ready_signal: Condvar::new(),
            timers: Mutex::new(BinaryHeap::new()),
            timer_signal: Condvar::new(),
            timer_seq: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            anomalies: AtomicU64::new(0),
            turn_deadlines: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        });
        let mut executor = Executor {
            shared: shared.clone(),
            threads: Vec::new(),
            workers,
        };
        for i in 0..workers {
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("kp-worker-{i}"))
                .spawn(move || shared.worker_loop(i))
                .context("starting a worker thread")?;
            executor.threads.push(thread);
        }
        let timer = std::thread::Builder::new()
            .name("kp-timer".into())
            .spawn(move || shared.timer_loop())
            .context("starting the timer thread")?;
        executor.threads.push(timer);
        Ok(executor)
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// A worker whose turn has run past its bound, and by how much (`/healthz`).
    pub fn stuck_worker(&self) -> Option<(usize, Duration)> {
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.shared
            .turn_deadlines
            .iter()
            .enumerate()
            .find_map(|(i, deadline)| {
                let deadline = deadline.load(Ordering::Relaxed);
                (deadline != 0 && now > deadline)
                    .then(|| (i, Duration::from_millis(now - deadline)))
            })
    }

    /// Schedules a task's first turn.
    pub fn spawn(&self, task: Box<dyn Task>) -> TaskRef {
        let cell = Arc::new(TaskCell {
            state: AtomicU8::new(IDLE),
            task: Mutex::new(Some(task)),
            first: Mutex::new(None),
            executor: Arc::downgrade(&self.shared),
            timer_generation: AtomicU64::new(0),
            keep_alive: Mutex::new(None),
        });
        *lock(&cell.first) = Some(Waker(Arc::downgrade(&cell)));
        *lock(&cell.keep_alive) = Some(cell.clone());
        let task = TaskRef(cell);
        task.wake();
        task
    }

    /// Times a worker found a task in a state other than SCHEDULED (a scheduling bug).
    #[cfg(test)]
    fn anomalies(&self) -> u64 {
        self.shared.anomalies.load(Ordering::Relaxed)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        {
            let _ready = lock(&self.shared.ready);
            self.shared.ready_signal.notify_all();
        }
        {
            let _timers = lock(&self.shared.timers);
            self.shared.timer_signal.notify_all();
        }
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            // The last reference can go on a worker (a task dropped late releases a consumer
            // that holds the executor): that worker leaves when it returns; it cannot join itself.
            if thread.thread().id() == me {
                continue;
            }
            crate::stop::join_logged(thread);
        }
        lock(&self.shared.ready).clear();
        lock(&self.shared.timers).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its turns; asks for `ready_turns` Ready turns, then Idle; notes any overlap.
    struct Counting {
        turns: Arc<AtomicUsize>,
        ready_turns: usize,
        running: Arc<AtomicUsize>,
        overlap: Arc<AtomicBool>,
    }

    impl Counting {
        fn new(turns: &Arc<AtomicUsize>, ready_turns: usize, overlap: &Arc<AtomicBool>) -> Self {
            Counting {
                turns: turns.clone(),
                ready_turns,
                running: Arc::new(AtomicUsize::new(0)),
                overlap: overlap.clone(),
            }
        }
    }

    impl Task for Counting {
        fn turn(&mut self, _first: Option<Waker>) -> Turn {
            if self.running.fetch_add(1, Ordering::SeqCst) != 0 {
                self.overlap.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_micros(50));
            self.running.fetch_sub(1, Ordering::SeqCst);
            let n = self.turns.fetch_add(1, Ordering::SeqCst) + 1;
            if n < self.ready_turns {
                Turn::Ready
            } else {
                Turn::Idle
            }
        }
        fn panicked(&mut self, _why: String) {}
    }

    fn wait_for(within: Duration, what: impl Fn() -> bool) -> bool {
        let until = Instant::now() + within;
        while !what() {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_task_is_taken_only_when_scheduled_however_often_it_is_woken() {
        let executor = Executor::start(4).unwrap();
        let turns = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        let task = executor.spawn(Box::new(Counting::new(&turns, 100, &overlap)));
        // Wakes from other threads while it runs and while it idles, as queue callbacks do.
        let wakers: Vec<_> = (0..4)
            .map(|_| {
                let task = task.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        task.wake();
                        if i % 100 == 0 {
                            std::thread::sleep(Duration::from_micros(300));
                        }
                    }
                })
            })
            .collect();
        for w in wakers {
            w.join().unwrap();
        }
        assert!(wait_for(Duration::from_secs(10), || turns
            .load(Ordering::SeqCst)
            >= 100));
        assert_eq!(executor.anomalies(), 0, "a task was queued twice");
        assert!(!overlap.load(Ordering::SeqCst), "two workers ran one task");
    }

    #[test]
    fn a_wake_of_an_idle_task_is_never_lost() {
        let executor = Executor::start(2).unwrap();
        let turns = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        // Idle after every turn.
        let task = executor.spawn(Box::new(Counting::new(&turns, 0, &overlap)));
        for _ in 0..200 {
            let before = turns.load(Ordering::SeqCst);
            task.wake();
            // Well under the idle re-check (250 ms): the wake itself brought the turn.
            assert!(
                wait_for(Duration::from_millis(100), || turns.load(Ordering::SeqCst)
                    > before),
                "a wake was lost"
            );
        }
        assert_eq!(executor.anomalies(), 0);
    }

    #[test]
    fn an_idle_task_is_rechecked_by_one_timer_however_often_it_was_woken() {
        let executor = Executor::start(1).unwrap();
        let turns = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        let task = executor.spawn(Box::new(Counting::new(&turns, 0, &overlap)));
        for _ in 0..20 {
            task.wake();
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = turns.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1000));
        let rechecks = turns.load(Ordering::SeqCst) - before;
        // One live timer: about 4 re-checks a second. A timer per wake would make 20 chains.
        assert!(
            rechecks <= 6,
            "{rechecks} turns in a second of idling after 20 wakes"
        );
    }

    #[test]
    fn sleeping_tasks_wake_at_their_time_and_done_tasks_are_dropped() {
        struct Sleeper {
            woke: Arc<Mutex<Vec<Instant>>>,
            _alive: Arc<()>,
        }
        impl Task for Sleeper {
            fn turn(&mut self, _first: Option<Waker>) -> Turn {
                let mut woke = lock(&self.woke);
                woke.push(Instant::now());
                if woke.len() < 3 {
                    Turn::Sleep(Instant::now() + Duration::from_millis(30))
                } else {
                    Turn::Done
                }
            }
            fn panicked(&mut self, _why: String) {}
        }
        let executor = Executor::start(1).unwrap();
        let woke = Arc::new(Mutex::new(Vec::new()));
        let alive = Arc::new(());
        let _task = executor.spawn(Box::new(Sleeper {
            woke: woke.clone(),
            _alive: alive.clone(),
        }));
        assert!(wait_for(Duration::from_secs(10), || Arc::strong_count(
            &alive
        ) == 1));
        let woke = lock(&woke).clone();
        assert_eq!(woke.len(), 3);
        for pair in woke.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(30));
        }
    }

    #[test]
    fn the_first_turn_gets_the_waker_and_the_task_is_in_place() {
        struct First(Arc<Mutex<Option<Waker>>>);
        impl Task for First {
            fn turn(&mut self, first: Option<Waker>) -> Turn {
                if let Some(waker) = first {
                    // A wake right away, as a queue callback enabled now could send.
                    waker.wake();
                    *lock(&self.0) = Some(waker);
                    return Turn::Idle;
                }
                Turn::Done
            }
            fn panicked(&mut self, _why: String) {}
        }
        let executor = Executor::start(2).unwrap();
        let got = Arc::new(Mutex::new(None));
        let task = executor.spawn(Box::new(First(got.clone())));
        // The wake from inside the first turn brings a second turn, which finishes the task.
        assert!(wait_for(Duration::from_millis(200), || task
            .0
            .state
            .load(Ordering::SeqCst)
            == DONE));
        assert!(lock(&got).is_some());
    }

    #[test]
    fn a_panicking_turn_is_reported_and_the_worker_goes_on() {
        struct Panics(Arc<Mutex<Option<String>>>);
        impl Task for Panics {
            fn turn(&mut self, _first: Option<Waker>) -> Turn {
                panic!("boom");
            }
            fn panicked(&mut self, why: String) {
                *lock(&self.0) = Some(why);
            }
        }
        let executor = Executor::start(1).unwrap();
        let said = Arc::new(Mutex::new(None));
        executor.spawn(Box::new(Panics(said.clone())));
        assert!(wait_for(Duration::from_secs(10), || lock(&said).is_some()));
        assert_eq!(lock(&said).as_deref(), Some("boom"));
        // The single worker still serves other tasks.
        let turns = Arc::new(AtomicUsize::new(0));
        let overlap = Arc::new(AtomicBool::new(false));
        executor.spawn(Box::new(Counting::new(&turns, 1, &overlap)));
        assert!(wait_for(Duration::from_secs(10), || turns
            .load(Ordering::SeqCst)
            == 1));
    }
}
