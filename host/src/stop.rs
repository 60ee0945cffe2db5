//! Stopping kp's threads: one signal, and one way to join a thread.
//!
//! [`Stop`] is triggered once and seen at once: a thread that waits on it ([`Stop::wait_timeout`],
//! or [`Stop::signal`] inside a `crossbeam_channel::select!` beside its own channel) wakes when
//! it is triggered instead of at its next poll. Triggering drops the one sender of a channel
//! that nobody ever sends on, so every receiver sees it disconnected (mini-redis's shutdown: drop
//! your sender and wait). A thread that cannot wait on a channel (one blocked in librdkafka's
//! poll, a worker's turn) reads [`Stop::is_triggered`] between steps.
//!
//! [`join_logged`] joins a thread and logs its panic with the thread's name, where a bare
//! `let _ = handle.join()` would lose it. [`StoppableThread`] is a thread run with its own `Stop`,
//! triggered and joined when dropped: the plugin consumer, the folder watcher, the epoch ticker
//! and `kp dev`'s helpers are each one, so forgetting to stop one cannot leave a thread behind,
//! and joining never waits on a thread nobody stopped. (The committer stops on a message of its
//! channel instead, and joins in its own `Drop`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A stop signal shared by the thread that stops and the threads that are stopped. Clones share
/// the signal.
#[derive(Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set first, so `is_triggered` is one load on hot paths.
    triggered: AtomicBool,
    /// The only sender; taken and dropped by `trigger`, which disconnects `signal`.
    sender: std::sync::Mutex<Option<Sender<()>>>,
    /// Never receives a value: it only ever reports "disconnected", once triggered.
    signal: Receiver<()>,
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Stop {
    pub fn new() -> Self {
        let (sender, signal) = crossbeam_channel::bounded(0);
        Stop {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                sender: std::sync::Mutex::new(Some(sender)),
                signal,
            }),
        }
    }

    /// Signals every holder; later calls do nothing.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(sender);
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Sleeps up to `timeout`, waking at once if the stop is triggered. True when triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match self.inner.signal.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => self.is_triggered(),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        }
    }

    /// A receiver that becomes ready (disconnected) when the stop is triggered, for
    /// `crossbeam_channel::select!` beside a thread's own channel.
    pub fn signal(&self) -> &Receiver<()> {
        &self.inner.signal
    }
}

/// A named thread that runs until its [`Stop`] is triggered; triggered and joined when dropped.
pub struct StoppableThread {
    stop: Stop,
    thread: Option<JoinHandle<()>>,
}

impl StoppableThread {
    /// Starts `run` on a thread called `name`, with the stop it must watch.
    pub fn spawn(name: &str, run: impl FnOnce(Stop) + Send + 'static) -> std::io::Result<Self> {
        let stop = Stop::new();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(stopped))?;
        Ok(StoppableThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Triggers the stop without waiting: to stop several at once, ask each, then drop each.
    pub fn request_stop(&self) {
        self.stop.trigger();
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(thread) = self.thread.take() {
            join_logged(thread);
        }
    }
}

/// Joins `thread`, logging its panic (with the thread's name) instead of dropping it.
pub fn join_logged(thread: JoinHandle<()>) {
    let name = thread.thread().name().unwrap_or("unnamed").to_string();
    if let Err(panic) = thread.join() {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        tracing::error!(thread = %name, "thread panicked: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_waiter_wakes_when_triggered_not_at_its_timeout() {
        let stop = Stop::new();
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                (stop.wait_timeout(Duration::from_secs(30)), start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        stop.trigger();
        let (triggered, waited) = waiter.join().unwrap();
        assert!(triggered);
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    }

    #[test]
    fn untriggered_waits_time_out_and_triggering_is_idempotent() {
        let stop = Stop::default();
        assert!(!stop.is_triggered());
        assert!(!stop.wait_timeout(Duration::from_millis(10)));
        stop.trigger();
        stop.trigger();
        assert!(stop.is_triggered());
        assert!(stop.clone().wait_timeout(Duration::from_secs(30)));
        // Ready inside select! too.
        crossbeam_channel::select! {
            recv(stop.signal()) -> _ => {}
            default(Duration::from_secs(30)) => panic!("the signal did not fire"),
        }
    }

    #[test]
    fn a_stoppable_thread_is_stopped_and_joined_when_dropped() {
        let ran = Arc::new(AtomicBool::new(false));
        let thread = {
            let ran = ran.clone();
            StoppableThread::spawn("kp-test-stoppable", move |stop| {
                while !stop.wait_timeout(Duration::from_secs(30)) {}
                ran.store(true, Ordering::SeqCst);
            })
            .unwrap()
        };
        let started = Instant::now();
        drop(thread); // would wait 30 s if the stop were not triggered
        assert!(ran.load(Ordering::SeqCst), "joined: the thread finished");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_panicking_thread_is_joined_not_propagated() {
        let t = std::thread::Builder::new()
            .name("kp-test-panics".into())
            .spawn(|| panic!("on purpose"))
            .unwrap();
        join_logged(t); // must not panic here
    }
}
