//! The per-call deadline for time a guest spends *blocked in the host*.
//!
//! Epoch interruption stops guest code that runs past its deadline, but it fires only while guest
//! code runs: a guest blocked in `wasi:io/poll` on a clock subscription would sleep as long as it
//! asked. The only blocking sources a kp guest has are clock subscriptions (its stdin is empty,
//! its stdout and stderr never block, it has no files or sockets), so kp wraps
//! `wasi:clocks/monotonic-clock`: a subscription never outlasts what is left of the call's
//! deadline. When it fires at the deadline, the guest's next instruction hits the epoch deadline
//! and the call ends as a `timeout`.
//!
//! A guest that wakes from a cut subscription may return without running another instruction
//! that checks the epoch, so the cut is also recorded ([`GuestState::take_deadline_hit`]): a call
//! whose subscription was cut is a `timeout` whatever it returns. And a subscription asked for
//! once the deadline has passed traps at once ([`DeadlinePassed`]).

use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;

use super::state::GuestState;

/// `wasi:clocks/monotonic-clock` with subscriptions cut at the call's deadline.
pub struct DeadlineClocks;

impl HasData for DeadlineClocks {
    type Data<'a> = DeadlineClockView<'a>;
}

/// The WASI clocks of one store, and when the current call must end.
pub struct DeadlineClockView<'a> {
    clocks: WasiClocksCtxView<'a>,
    deadline: Option<Instant>,
    /// Set when a subscription was cut at the deadline.
    hit: &'a mut bool,
}

/// The trap of a guest that asks to wait once its call's deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed while the guest was waiting in the host")]
pub struct DeadlinePassed;

impl GuestState {
    pub(crate) fn deadline_clocks(&mut self) -> DeadlineClockView<'_> {
        let deadline = self.call_deadline();
        let (clocks, hit) = self.clocks_and_deadline_hit();
        DeadlineClockView {
            clocks,
            deadline,
            hit,
        }
    }
}

impl DeadlineClockView<'_> {
    /// `wanted`, or what is left of the call's deadline if that is less (then recorded).
    fn clamp(&mut self, wanted: Duration) -> wasmtime::Result<Duration> {
        let Some(deadline) = self.deadline else {
            return Ok(wanted);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            *self.hit = true;
            return Err(DeadlinePassed.into());
        }
        if wanted > left {
            *self.hit = true;
        }
        Ok(wanted.min(left))
    }
}

impl monotonic_clock::Host for DeadlineClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        self.clocks.now()
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        self.clocks.resolution()
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.clocks.now()?;
        let wanted = Duration::from_nanos(when.saturating_sub(now));
        let duration = self.clamp(wanted)?;
        self.clocks
            .subscribe_duration(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let duration = self.clamp(Duration::from_nanos(duration))?;
        self.clocks
            .subscribe_duration(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_end_at_the_deadline_and_say_so() {
        let mut state = GuestState::for_tests();
        state.set_call_deadline(Some(Instant::now() + Duration::from_millis(50)));
        let mut view = state.deadline_clocks();
        assert_eq!(
            view.clamp(Duration::from_millis(1)).unwrap(),
            Duration::from_millis(1)
        );
        assert!(!*view.hit);
        assert!(view.clamp(Duration::from_secs(3600)).unwrap() <= Duration::from_millis(50));
        assert!(state.take_deadline_hit(), "the cut is recorded");
        state.set_call_deadline(Some(Instant::now()));
        assert!(
            state
                .deadline_clocks()
                .clamp(Duration::from_secs(1))
                .is_err(),
            "past: trap"
        );
        let mut state = GuestState::for_tests();
        let mut view = state.deadline_clocks();
        assert_eq!(
            view.clamp(Duration::from_secs(3600)).unwrap(),
            Duration::from_secs(3600),
            "no call, no cut"
        );
    }
}
