//! # call-engine-state
//!
//! Pure, sans-IO, deterministic state machines for call-engine: a [`Call`] (one customer
//! call from arrival to the end of every leg) and an [`Agent`] (status × activity, with
//! capacity, delays, wrap-up and registration).
//!
//! In the spirit of `quinn-proto`, nothing here reads a clock, spawns, sleeps, does IO or
//! draws random numbers:
//!
//! * **time is an input**: every `handle` call takes the driver's `now` ([`Millis`]);
//! * **timers are outputs**: a machine returns `StartTimer { timer, at }` /
//!   `CancelTimer { timer }` actions and the driver feeds `Timer(timer)` back when `at`
//!   passes. Each arming carries a fresh generation ([`TimerId`]), so a timer that was
//!   cancelled or superseded is recognised as stale and refused without effect;
//! * **every transition is validated**: an input that is not valid in the current state
//!   returns a typed error ([`CallError`], [`AgentError`]) and changes nothing: state,
//!   history and timers stay as they were;
//! * **every accepted input is recorded** in the machine's history with its time.
//!
//! Both machines are plain data (`Clone`, `PartialEq`, serde), so a driver can persist
//! and restore them; `armed_timers()` lists what to reschedule after a restore.
//!
//! ```
//! use call_engine_events::{AgentId, CallId, Disposition, HangupCause, QueueId, Side};
//! use call_engine_state::*;
//!
//! let mut call = Call::new(CallId(1), CallConfig::default(), Millis(0));
//! call.handle(CallInput::Enqueue { queue: QueueId::new("support") }, Millis(10))?;
//! call.handle(CallInput::Offer { agent: AgentId::new("alice") }, Millis(2_000))?;
//! let actions = call.handle(CallInput::AgentRinging, Millis(2_100))?;
//! assert!(actions.contains(&CallAction::Emit(CallNotice::AgentRinging {
//!     agent: AgentId::new("alice"),
//! })));
//! call.handle(CallInput::AgentAnswered, Millis(5_000))?;
//!
//! // Invalid inputs are refused and change nothing.
//! assert!(call.handle(CallInput::AgentAnswered, Millis(5_001)).is_err());
//!
//! call.handle(
//!     CallInput::LegEnded { side: Side::Customer, cause: HangupCause::Normal },
//!     Millis(65_000),
//! )?;
//! // The machine asks for a guard timer in case the legs never confirm.
//! let (guard, at) = call
//!     .armed_timer(CallTimerKind::TerminateGuard)
//!     .ok_or("no guard timer")?;
//! assert_eq!(at, Millis(70_000));
//! call.handle(CallInput::AllLegsGone, Millis(65_020))?;
//! assert!(call.state().is_final());
//! assert_eq!(call.state().disposition(), Some(Disposition::Answered));
//! assert_eq!(call.wait_ms(), Some(4_990));
//! assert_eq!(call.talk_ms(), Some(60_000));
//! assert_eq!(call.history().len(), 6);
//! // The guard was cancelled: if it fires anyway, it is stale and harmless.
//! assert!(matches!(
//!     call.handle(CallInput::Timer(guard), Millis(70_000)),
//!     Err(CallError::StaleTimer(_))
//! ));
//!
//! let mut agent = Agent::new(AgentId::new("alice"), AgentConfig::default(), Millis(0));
//! agent.handle(AgentInput::Registered, Millis(0))?;
//! agent.handle(AgentInput::Login, Millis(0))?;
//! assert!(agent.can_take_call(Millis(1)));
//! agent.handle(AgentInput::Reserve { call: CallId(1), ttl_ms: 20_000, direct: false }, Millis(1_990))?;
//! agent.handle(AgentInput::Ringing { call: CallId(1) }, Millis(2_100))?;
//! agent.handle(AgentInput::Answered { call: CallId(1) }, Millis(5_000))?;
//! agent.handle(AgentInput::CallEnded { call: CallId(1) }, Millis(65_000))?;
//! assert_eq!(agent.activity(), call_engine_events::AgentActivity::WrapUp);
//! assert!(!agent.can_take_call(Millis(70_000)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod agent;
pub mod call;
mod time;

pub use agent::{
    Agent, AgentAction, AgentCall, AgentConfig, AgentError, AgentInput, AgentInputKind,
    AgentNotice, AgentState, AgentTimer, AgentTimerKind, AgentTransition, CallPhase, OfferFailure,
    ReleaseReason, AUTO_NO_ANSWER_REASON,
};
pub use call::{
    Call, CallAction, CallConfig, CallError, CallInput, CallInputKind, CallLegs, CallNotice,
    CallState, CallTimer, CallTimerKind, Transition,
};
pub use time::{Millis, TimerId};

/// A broken machine invariant, reported by `check_invariants()`. A correct machine never
/// produces one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{machine} invariant violated: {detail}")]
pub struct InvariantViolation {
    /// `"call"` or `"agent"`.
    pub machine: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl InvariantViolation {
    pub(crate) fn new(machine: &'static str, detail: String) -> Self {
        Self { machine, detail }
    }
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
