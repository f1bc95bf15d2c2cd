//! The agent state machine: one agent's chosen status, registration and the calls it is
//! reserved for or talking on.
//!
//! See [`Agent`] for the transition table.

use crate::time::{Armed, Millis, TimerId};
use crate::InvariantViolation;
use call_engine_events::{
    AgentActivity, AgentEvent, AgentId, AgentStatus, CallId, HangupCause, RejectReason,
};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The break reason set when an agent misses [`AgentConfig::max_no_answer`] offers in a
/// row.
pub const AUTO_NO_ANSWER_REASON: &str = "auto: no answer";

/// Capacity and pacing of an agent. The defaults follow FreeSWITCH mod_callcenter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Calls the agent may hold at once (reserved, ringing or talking). Default 1.
    pub max_calls: u16,
    /// After-call work after each call; 0 = straight back to idle. Default 10 s.
    pub wrap_up_ms: u64,
    /// Pause after an unanswered offer. Default 60 s.
    pub no_answer_delay_ms: u64,
    /// Pause after the agent's phone was busy. Default 60 s.
    pub busy_delay_ms: u64,
    /// Pause after the agent declined an offer. Default 10 s.
    pub reject_delay_ms: u64,
    /// Unanswered offers in a row after which the agent is put on break
    /// ([`AUTO_NO_ANSWER_REASON`]); 0 = never. Default 3.
    pub max_no_answer: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_calls: 1,
            wrap_up_ms: 10_000,
            no_answer_delay_ms: 60_000,
            busy_delay_ms: 60_000,
            reject_delay_ms: 10_000,
            max_no_answer: 3,
        }
    }
}

/// Why an offer to the agent failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferFailure {
    /// Nobody answered (counts towards [`AgentConfig::max_no_answer`]).
    NoAnswer,
    /// The phone was busy.
    Busy,
    /// The agent declined.
    Declined,
}

impl OfferFailure {
    /// The failure a leg's hang-up cause means: `Busy` and `Declined` map to themselves,
    /// everything else counts as no answer.
    pub fn from_cause(cause: &HangupCause) -> Self {
        match cause {
            HangupCause::Busy => OfferFailure::Busy,
            HangupCause::Declined => OfferFailure::Declined,
            _ => OfferFailure::NoAnswer,
        }
    }
}

/// Where one of the agent's calls is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// Reserved for the call; the phone does not ring yet.
    Reserved,
    /// The phone rings.
    Ringing,
    /// Talking.
    OnCall,
}

impl CallPhase {
    fn name(self) -> &'static str {
        match self {
            CallPhase::Reserved => "reserved",
            CallPhase::Ringing => "ringing",
            CallPhase::OnCall => "on_call",
        }
    }

    /// Reserved or ringing: an offer not yet answered.
    pub fn is_pending(self) -> bool {
        matches!(self, CallPhase::Reserved | CallPhase::Ringing)
    }
}

/// One call the agent is reserved for or talking on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCall {
    /// The call.
    pub call: CallId,
    /// Where it is.
    pub phase: CallPhase,
    /// When it entered that phase.
    pub since: Millis,
    /// The reservation expiry, while pending.
    expiry: Option<Armed>,
}

/// The timers of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "timer", content = "call", rename_all = "snake_case")]
pub enum AgentTimerKind {
    /// A reservation for this call was not answered in time: it is released.
    ReservationExpiry(CallId),
    /// The no-answer/busy/reject delay is over.
    DelayEnd,
    /// Wrap-up is over.
    WrapUpEnd,
}

/// One arming of an agent timer.
pub type AgentTimer = TimerId<AgentTimerKind>;

/// What can happen to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum AgentInput {
    /// Log in as `Available` (only when logged out).
    Login,
    /// Log out: pending reservations are released, wrap-up and delays are cleared;
    /// calls in progress continue (without wrap-up).
    Logout,
    /// Set the status. From `LoggedOut`, any other status logs in with it; `LoggedOut`
    /// is [`AgentInput::Logout`]. `Available`/`AvailableOnDemand` reset the no-answer
    /// count.
    SetStatus(AgentStatus),
    /// The agent has a registered contact (idempotent).
    Registered,
    /// The agent has no registered contact left (idempotent): no offers until it
    /// registers again; pending reservations are released.
    Unregistered,
    /// Reserve the agent for `call` for at most `ttl_ms` (until answered). Requires
    /// `Available` (or `AvailableOnDemand` with `direct`), a registered contact, a free
    /// slot and no delay or wrap-up; otherwise refused with
    /// [`AgentError::Rejected`].
    Reserve {
        /// The call.
        call: CallId,
        /// Reservation lifetime; should cover the ring timeout.
        ttl_ms: u64,
        /// An explicit offer to this agent (not automatic routing): allowed when
        /// `AvailableOnDemand`.
        direct: bool,
    },
    /// The agent's phone rings for `call` (reserved → ringing).
    Ringing {
        /// The call.
        call: CallId,
    },
    /// The agent answered `call` (reserved/ringing → on call).
    Answered {
        /// The call.
        call: CallId,
    },
    /// The offer of `call` failed: the reservation is released and the matching delay
    /// starts.
    OfferFailed {
        /// The call.
        call: CallId,
        /// Why.
        why: OfferFailure,
    },
    /// `call` ended (on call → wrap-up, or idle without wrap-up).
    CallEnded {
        /// The call.
        call: CallId,
    },
    /// The reservation for `call` was cancelled (e.g. the customer hung up first).
    Release {
        /// The call.
        call: CallId,
    },
    /// The agent finished wrap-up early.
    EndWrapUp,
    /// A timer the machine asked for fired.
    Timer(AgentTimer),
}

/// The name of an [`AgentInput`], as recorded in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentInputKind {
    /// [`AgentInput::Login`].
    Login,
    /// [`AgentInput::Logout`].
    Logout,
    /// [`AgentInput::SetStatus`].
    SetStatus,
    /// [`AgentInput::Registered`].
    Registered,
    /// [`AgentInput::Unregistered`].
    Unregistered,
    /// [`AgentInput::Reserve`].
    Reserve,
    /// [`AgentInput::Ringing`].
    Ringing,
    /// [`AgentInput::Answered`].
    Answered,
    /// [`AgentInput::OfferFailed`].
    OfferFailed,
    /// [`AgentInput::CallEnded`].
    CallEnded,
    /// [`AgentInput::Release`].
    Release,
    /// [`AgentInput::EndWrapUp`].
    EndWrapUp,
    /// A [`AgentTimerKind::ReservationExpiry`] fired.
    ReservationExpired,
    /// The [`AgentTimerKind::DelayEnd`] timer fired.
    DelayEnded,
    /// The [`AgentTimerKind::WrapUpEnd`] timer fired.
    WrapUpEnded,
}

impl AgentInputKind {
    /// The input's name (`"reserve"`, `"wrap_up_ended"`…).
    pub fn as_str(self) -> &'static str {
        use AgentInputKind::*;
        match self {
            Login => "login",
            Logout => "logout",
            SetStatus => "set_status",
            Registered => "registered",
            Unregistered => "unregistered",
            Reserve => "reserve",
            Ringing => "ringing",
            Answered => "answered",
            OfferFailed => "offer_failed",
            CallEnded => "call_ended",
            Release => "release",
            EndWrapUp => "end_wrap_up",
            ReservationExpired => "reservation_expired",
            DelayEnded => "delay_ended",
            WrapUpEnded => "wrap_up_ended",
        }
    }
}

impl AgentInput {
    /// This input's name.
    pub fn kind(&self) -> AgentInputKind {
        use AgentInputKind as K;
        match self {
            AgentInput::Login => K::Login,
            AgentInput::Logout => K::Logout,
            AgentInput::SetStatus(_) => K::SetStatus,
            AgentInput::Registered => K::Registered,
            AgentInput::Unregistered => K::Unregistered,
            AgentInput::Reserve { .. } => K::Reserve,
            AgentInput::Ringing { .. } => K::Ringing,
            AgentInput::Answered { .. } => K::Answered,
            AgentInput::OfferFailed { .. } => K::OfferFailed,
            AgentInput::CallEnded { .. } => K::CallEnded,
            AgentInput::Release { .. } => K::Release,
            AgentInput::EndWrapUp => K::EndWrapUp,
            AgentInput::Timer(t) => match t.kind {
                AgentTimerKind::ReservationExpiry(_) => K::ReservationExpired,
                AgentTimerKind::DelayEnd => K::DelayEnded,
                AgentTimerKind::WrapUpEnd => K::WrapUpEnded,
            },
        }
    }

    /// The call the input is about, if any.
    pub fn call(&self) -> Option<CallId> {
        match self {
            AgentInput::Reserve { call, .. }
            | AgentInput::Ringing { call }
            | AgentInput::Answered { call }
            | AgentInput::OfferFailed { call, .. }
            | AgentInput::CallEnded { call }
            | AgentInput::Release { call } => Some(*call),
            AgentInput::Timer(TimerId {
                kind: AgentTimerKind::ReservationExpiry(call),
                ..
            }) => Some(*call),
            _ => None,
        }
    }
}

/// A snapshot of what the agent looks like from outside: the unit of the history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentState {
    /// The chosen status.
    pub status: AgentStatus,
    /// The derived activity.
    pub activity: AgentActivity,
    /// Whether a contact is registered.
    pub registered: bool,
    /// Calls reserved, ringing or talking.
    pub active_calls: u16,
}

/// Why the machine released a reservation on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The reservation's lifetime ran out.
    Expired,
    /// The agent logged out.
    LoggedOut,
    /// The agent's last contact went away.
    Unregistered,
}

/// A domain notification for the driver to publish (see [`AgentNotice::into_event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentNotice {
    /// The status changed.
    StatusChanged {
        /// New status.
        status: AgentStatus,
    },
    /// The activity or the number of active calls changed.
    ActivityChanged {
        /// New activity.
        activity: AgentActivity,
        /// Calls reserved, ringing or talking.
        active_calls: u16,
    },
    /// Registration changed.
    RegistrationChanged {
        /// Registered now.
        registered: bool,
    },
    /// The agent was reserved for a call.
    Reserved {
        /// The call.
        call: CallId,
    },
    /// The machine dropped a pending reservation: the driver must fail the offer of
    /// `call` (cancel the INVITE, put the call back in its queue).
    ReservationReleased {
        /// The call.
        call: CallId,
        /// Why.
        reason: ReleaseReason,
    },
}

impl AgentNotice {
    /// The bus event for this notice about agent `agent`, when there is one.
    pub fn into_event(self, agent: AgentId) -> Option<AgentEvent> {
        Some(match self {
            AgentNotice::StatusChanged { status } => AgentEvent::StatusChanged { agent, status },
            AgentNotice::ActivityChanged {
                activity,
                active_calls,
            } => AgentEvent::ActivityChanged {
                agent,
                activity,
                active_calls,
            },
            AgentNotice::Reserved { call } => AgentEvent::Reserved { agent, call },
            AgentNotice::RegistrationChanged { .. } | AgentNotice::ReservationReleased { .. } => {
                return None
            }
        })
    }
}

/// What the driver must do after an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AgentAction {
    /// Schedule `timer` at `at` (replacing any timer of the same kind), then feed it back
    /// as [`AgentInput::Timer`].
    StartTimer {
        /// The timer.
        timer: AgentTimer,
        /// When.
        at: Millis,
    },
    /// Unschedule `timer` (feeding it back anyway is harmless: it is stale).
    CancelTimer {
        /// The timer.
        timer: AgentTimer,
    },
    /// Publish a notification.
    Emit(AgentNotice),
}

/// One accepted input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTransition {
    /// When.
    pub at: Millis,
    /// Which input.
    pub input: AgentInputKind,
    /// The call it was about, if any.
    pub call: Option<CallId>,
    /// Before.
    pub from: AgentState,
    /// After.
    pub to: AgentState,
}

/// Why an agent input was refused. A refused input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The input is not valid in the current state.
    #[error("agent input `{input}` is not valid in state `{state}`")]
    InvalidTransition {
        /// The current status, activity or call phase.
        state: &'static str,
        /// The input's name.
        input: &'static str,
    },
    /// A reservation was refused.
    #[error("reservation rejected: {0:?}")]
    Rejected(RejectReason),
    /// The input names a call the agent does not have.
    #[error("agent input `{input}` names unknown call {call}")]
    UnknownCall {
        /// The call.
        call: CallId,
        /// The input's name.
        input: &'static str,
    },
    /// The agent already has this call.
    #[error("agent already has call {0}")]
    DuplicateCall(CallId),
    /// The timer was cancelled, superseded or already fired.
    #[error("stale agent timer {0:?}")]
    StaleTimer(AgentTimer),
}

/// Everything an input may change except the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Core {
    status: AgentStatus,
    registered: bool,
    calls: Vec<AgentCall>,
    /// Wrap-up timer; its deadline is when wrap-up ends.
    wrap_up: Option<Armed>,
    /// Delay timer; its deadline is when offers may resume.
    delay: Option<Armed>,
    no_answers: u32,
    last_at: Millis,
    next_generation: u64,
}

/// One agent: a validated state machine with history and timers.
///
/// Status (chosen) × activity (derived from the calls and timers: on call › ringing ›
/// reserved › wrap-up › delayed (a no-answer, busy or reject delay) › idle).
///
/// | input | valid when | effect |
/// |---|---|---|
/// | `Login` | logged out | status `Available` |
/// | `Logout`, `SetStatus(LoggedOut)` | logged in | status `LoggedOut`; pending reservations released; wrap-up and delay cleared |
/// | `SetStatus(s)` | always (from `LoggedOut`: logs in) | status `s` |
/// | `Registered` / `Unregistered` | always | contact flag; unregistering releases pending reservations |
/// | `Reserve` | available, registered, below `max_calls`, no delay/wrap-up | call `Reserved`, arms `ReservationExpiry` |
/// | `Ringing` | call reserved | call `Ringing` |
/// | `Answered` | call reserved/ringing | call `OnCall`; no-answer count reset |
/// | `OfferFailed` | call reserved/ringing | call removed; delay per failure; `max_no_answer` → `OnBreak("auto: no answer")` |
/// | `Release`, `ReservationExpiry` fires | call reserved/ringing | call removed |
/// | `CallEnded` | call on call | call removed; wrap-up for `wrap_up_ms` (arms `WrapUpEnd`) |
/// | `EndWrapUp`, `WrapUpEnd` fires | in wrap-up | wrap-up over |
/// | `DelayEnd` fires | in delay | delay over |
///
/// Wrap-up and delays whose deadline has passed are also cleared by any later input, so
/// a late timer never keeps an agent unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    id: AgentId,
    config: AgentConfig,
    core: Core,
    history: Vec<AgentTransition>,
}

fn status_name(s: &AgentStatus) -> &'static str {
    match s {
        AgentStatus::LoggedOut => "logged_out",
        AgentStatus::Available => "available",
        AgentStatus::AvailableOnDemand => "available_on_demand",
        AgentStatus::OnBreak { .. } => "on_break",
    }
}

fn is_available(s: &AgentStatus) -> bool {
    matches!(s, AgentStatus::Available | AgentStatus::AvailableOnDemand)
}

impl Agent {
    /// A new agent, logged out and unregistered, at `now`.
    pub fn new(id: AgentId, config: AgentConfig, now: Millis) -> Self {
        Self {
            id,
            config,
            core: Core {
                status: AgentStatus::LoggedOut,
                registered: false,
                calls: Vec::new(),
                wrap_up: None,
                delay: None,
                no_answers: 0,
                last_at: now,
                next_generation: 0,
            },
            history: Vec::new(),
        }
    }

    /// Applies `input` at `now` and returns what the driver must do.
    ///
    /// On error nothing changed: not the state, not the history, not the timers.
    pub fn handle(
        &mut self,
        input: AgentInput,
        now: Millis,
    ) -> Result<Vec<AgentAction>, AgentError> {
        let mut actions = Vec::new();
        self.handle_into(input, now, &mut actions)?;
        Ok(actions)
    }

    /// Like [`Agent::handle`], appending the actions to `actions` (left as it was on
    /// error).
    pub fn handle_into(
        &mut self,
        input: AgentInput,
        now: Millis,
        actions: &mut Vec<AgentAction>,
    ) -> Result<(), AgentError> {
        let now = now.max(self.core.last_at);
        let kind = input.kind();
        let call = input.call();
        let mark = actions.len();
        let mut next = self.core.clone();
        if let Err(e) = next.apply(&self.config, input, kind, now, actions) {
            actions.truncate(mark);
            return Err(e);
        }
        next.last_at = now;
        let from = self.core.view();
        let to = next.view();
        if from.status != to.status {
            actions.push(AgentAction::Emit(AgentNotice::StatusChanged {
                status: to.status.clone(),
            }));
        }
        if (from.activity, from.active_calls) != (to.activity, to.active_calls) {
            actions.push(AgentAction::Emit(AgentNotice::ActivityChanged {
                activity: to.activity,
                active_calls: to.active_calls,
            }));
        }
        if from.registered != to.registered {
            actions.push(AgentAction::Emit(AgentNotice::RegistrationChanged {
                registered: to.registered,
            }));
        }
        self.core = next;
        self.history.push(AgentTransition {
            at: now,
            input: kind,
            call,
            from,
            to,
        });
        Ok(())
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The agent's configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The chosen status.
    pub fn status(&self) -> &AgentStatus {
        &self.core.status
    }

    /// What the agent is doing (derived).
    pub fn activity(&self) -> AgentActivity {
        self.core.activity()
    }

    /// Status, activity, registration and active calls together.
    pub fn state(&self) -> AgentState {
        self.core.view()
    }

    /// Whether a contact is registered.
    pub fn is_registered(&self) -> bool {
        self.core.registered
    }

    /// Calls reserved, ringing or talking.
    pub fn active_calls(&self) -> &[AgentCall] {
        &self.core.calls
    }

    /// Unanswered offers in a row.
    pub fn consecutive_no_answers(&self) -> u32 {
        self.core.no_answers
    }

    /// When wrap-up ends, while in wrap-up.
    pub fn wrap_up_until(&self) -> Option<Millis> {
        self.core.wrap_up.map(|a| a.at)
    }

    /// When the current no-answer/busy/reject delay ends, if any.
    pub fn delayed_until(&self) -> Option<Millis> {
        self.core.delay.map(|a| a.at)
    }

    /// Every accepted input, oldest first.
    pub fn history(&self) -> &[AgentTransition] {
        &self.history
    }

    /// Why a reservation at `now` would be refused, if it would (`direct`: see
    /// [`AgentInput::Reserve`]).
    pub fn reserve_check(&self, now: Millis, direct: bool) -> Result<(), RejectReason> {
        match self
            .core
            .reject_reason(&self.config, now.max(self.core.last_at), direct)
        {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    /// Whether automatic routing may reserve the agent at `now`.
    pub fn can_take_call(&self, now: Millis) -> bool {
        self.reserve_check(now, false).is_ok()
    }

    /// Every armed timer with its deadline (what a driver restoring a persisted agent
    /// must schedule).
    pub fn armed_timers(&self) -> Vec<(AgentTimer, Millis)> {
        let c = &self.core;
        let mut out: Vec<(AgentTimer, Millis)> = c
            .calls
            .iter()
            .filter_map(|ac| {
                ac.expiry.map(|a| {
                    (
                        TimerId {
                            kind: AgentTimerKind::ReservationExpiry(ac.call),
                            generation: a.generation,
                        },
                        a.at,
                    )
                })
            })
            .collect();
        for (kind, slot) in [
            (AgentTimerKind::DelayEnd, c.delay),
            (AgentTimerKind::WrapUpEnd, c.wrap_up),
        ] {
            if let Some(a) = slot {
                out.push((
                    TimerId {
                        kind,
                        generation: a.generation,
                    },
                    a.at,
                ));
            }
        }
        out
    }

    /// Checks the machine's invariants: capacity, status/activity/timer consistency and
    /// a consistent history chain ending in the current state. A correct machine never
    /// fails this; it exists for tests and debugging.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |detail: String| Err(InvariantViolation::new("agent", detail));
        let c = &self.core;
        if c.calls.len() > usize::from(self.config.max_calls) {
            return fail(format!(
                "{} calls above max_calls {}",
                c.calls.len(),
                self.config.max_calls
            ));
        }
        for (i, a) in c.calls.iter().enumerate() {
            if c.calls[..i].iter().any(|b| b.call == a.call) {
                return fail(format!("call {} listed twice", a.call));
            }
            if a.phase.is_pending() != a.expiry.is_some() {
                return fail(format!(
                    "call {} in {:?} with expiry {:?}",
                    a.call, a.phase, a.expiry
                ));
            }
            if a.since > c.last_at {
                return fail(format!("call {} from the future", a.call));
            }
        }
        let pending = c.calls.iter().filter(|a| a.phase.is_pending()).count();
        if c.status == AgentStatus::LoggedOut
            && (pending > 0 || c.wrap_up.is_some() || c.delay.is_some())
        {
            return fail("logged out with reservations, wrap-up or delay".into());
        }
        if !c.registered && pending > 0 {
            return fail("unregistered with pending reservations".into());
        }
        let max = self.config.max_no_answer;
        if max > 0 && c.no_answers >= max && is_available(&c.status) {
            return fail(format!(
                "{} no-answers in a row but still available",
                c.no_answers
            ));
        }
        let view = c.view();
        let on_call = c.calls.iter().any(|a| a.phase == CallPhase::OnCall);
        let consistent = match view.activity {
            AgentActivity::OnCall => on_call,
            AgentActivity::Ringing => {
                !on_call && c.calls.iter().any(|a| a.phase == CallPhase::Ringing)
            }
            AgentActivity::Reserved => {
                !on_call && c.calls.iter().all(|a| a.phase == CallPhase::Reserved)
            }
            AgentActivity::WrapUp => c.calls.is_empty() && c.wrap_up.is_some(),
            AgentActivity::Delayed => {
                c.calls.is_empty() && c.wrap_up.is_none() && c.delay.is_some()
            }
            AgentActivity::Idle => c.calls.is_empty() && c.wrap_up.is_none() && c.delay.is_none(),
        };
        if !consistent || usize::from(view.active_calls) != c.calls.len() {
            return fail(format!(
                "activity {view:?} disagrees with calls {:?}",
                c.calls
            ));
        }
        let timers = self.armed_timers();
        for (i, (t, _)) in timers.iter().enumerate() {
            if t.generation >= c.next_generation
                || timers[..i]
                    .iter()
                    .any(|(u, _)| u.generation == t.generation)
            {
                return fail(format!("bad timer generation {t:?}"));
            }
        }
        let mut prev_at = None;
        for (i, t) in self.history.iter().enumerate() {
            if let Some(p) = prev_at {
                if t.at < p {
                    return fail(format!("transition {i} goes back in time"));
                }
            }
            if i > 0 && t.from != self.history[i - 1].to {
                return fail(format!(
                    "transition {i} does not start where {} ended",
                    i - 1
                ));
            }
            prev_at = Some(t.at);
        }
        if let Some(last) = self.history.last() {
            if last.to != view {
                return fail(format!("history ends in {:?}, state is {view:?}", last.to));
            }
            if last.at > c.last_at {
                return fail("history is later than the last input".into());
            }
        }
        Ok(())
    }
}

impl Core {
    fn activity(&self) -> AgentActivity {
        let has = |p: CallPhase| self.calls.iter().any(|a| a.phase == p);
        if has(CallPhase::OnCall) {
            AgentActivity::OnCall
        } else if has(CallPhase::Ringing) {
            AgentActivity::Ringing
        } else if has(CallPhase::Reserved) {
            AgentActivity::Reserved
        } else if self.wrap_up.is_some() {
            AgentActivity::WrapUp
        } else if self.delay.is_some() {
            AgentActivity::Delayed
        } else {
            AgentActivity::Idle
        }
    }

    fn view(&self) -> AgentState {
        AgentState {
            status: self.status.clone(),
            activity: self.activity(),
            registered: self.registered,
            active_calls: u16::try_from(self.calls.len()).unwrap_or(u16::MAX),
        }
    }

    fn reject_reason(&self, cfg: &AgentConfig, now: Millis, direct: bool) -> Option<RejectReason> {
        match self.status {
            AgentStatus::Available => {}
            AgentStatus::AvailableOnDemand if direct => {}
            _ => return Some(RejectReason::NotAvailable),
        }
        if !self.registered {
            return Some(RejectReason::NotRegistered);
        }
        if self.calls.len() >= usize::from(cfg.max_calls) {
            return Some(RejectReason::AtCapacity);
        }
        let busy_until = |a: Option<Armed>| a.is_some_and(|a| now < a.at);
        if busy_until(self.wrap_up) || busy_until(self.delay) {
            return Some(RejectReason::Delayed);
        }
        None
    }

    fn fresh(&mut self, kind: AgentTimerKind, at: Millis, out: &mut Vec<AgentAction>) -> Armed {
        let generation = self.next_generation;
        self.next_generation += 1;
        out.push(AgentAction::StartTimer {
            timer: TimerId { kind, generation },
            at,
        });
        Armed { generation, at }
    }

    fn cancel(kind: AgentTimerKind, armed: Option<Armed>, out: &mut Vec<AgentAction>) {
        if let Some(a) = armed {
            out.push(AgentAction::CancelTimer {
                timer: TimerId {
                    kind,
                    generation: a.generation,
                },
            });
        }
    }

    /// Sets the wrap-up or delay timer to end at `until`, unless it already ends later.
    fn extend(&mut self, kind: AgentTimerKind, until: Millis, out: &mut Vec<AgentAction>) {
        let current = match kind {
            AgentTimerKind::WrapUpEnd => self.wrap_up,
            _ => self.delay,
        };
        if current.is_some_and(|a| a.at >= until) {
            return;
        }
        Self::cancel(kind, current, out);
        let armed = Some(self.fresh(kind, until, out));
        match kind {
            AgentTimerKind::WrapUpEnd => self.wrap_up = armed,
            _ => self.delay = armed,
        }
    }

    /// Clears wrap-up and delay whose deadline has passed (their timer is late).
    fn expire_elapsed(&mut self, now: Millis, out: &mut Vec<AgentAction>) {
        if self.wrap_up.is_some_and(|a| a.at <= now) {
            Self::cancel(AgentTimerKind::WrapUpEnd, self.wrap_up.take(), out);
        }
        if self.delay.is_some_and(|a| a.at <= now) {
            Self::cancel(AgentTimerKind::DelayEnd, self.delay.take(), out);
        }
    }

    /// Drops every pending reservation, telling the driver why.
    fn release_pending(&mut self, reason: ReleaseReason, out: &mut Vec<AgentAction>) {
        let (pending, keep): (Vec<AgentCall>, Vec<AgentCall>) = std::mem::take(&mut self.calls)
            .into_iter()
            .partition(|a| a.phase.is_pending());
        self.calls = keep;
        for a in pending {
            Self::cancel(AgentTimerKind::ReservationExpiry(a.call), a.expiry, out);
            out.push(AgentAction::Emit(AgentNotice::ReservationReleased {
                call: a.call,
                reason,
            }));
        }
    }

    fn logout(&mut self, out: &mut Vec<AgentAction>) {
        self.release_pending(ReleaseReason::LoggedOut, out);
        Self::cancel(AgentTimerKind::WrapUpEnd, self.wrap_up.take(), out);
        Self::cancel(AgentTimerKind::DelayEnd, self.delay.take(), out);
        self.no_answers = 0;
        self.status = AgentStatus::LoggedOut;
    }

    /// The index of `call` if it is in one of `phases`.
    fn find(
        &self,
        call: CallId,
        phases: &[CallPhase],
        kind: AgentInputKind,
    ) -> Result<usize, AgentError> {
        let idx =
            self.calls
                .iter()
                .position(|a| a.call == call)
                .ok_or(AgentError::UnknownCall {
                    call,
                    input: kind.as_str(),
                })?;
        let phase = self.calls[idx].phase;
        if phases.contains(&phase) {
            Ok(idx)
        } else {
            Err(AgentError::InvalidTransition {
                state: phase.name(),
                input: kind.as_str(),
            })
        }
    }

    fn apply(
        &mut self,
        cfg: &AgentConfig,
        input: AgentInput,
        kind: AgentInputKind,
        now: Millis,
        out: &mut Vec<AgentAction>,
    ) -> Result<(), AgentError> {
        const PENDING: &[CallPhase] = &[CallPhase::Reserved, CallPhase::Ringing];
        let invalid = AgentError::InvalidTransition {
            state: status_name(&self.status),
            input: kind.as_str(),
        };
        if !matches!(input, AgentInput::Timer(_)) {
            self.expire_elapsed(now, out);
        }
        match input {
            AgentInput::Login => {
                if self.status != AgentStatus::LoggedOut {
                    return Err(invalid);
                }
                self.status = AgentStatus::Available;
                self.no_answers = 0;
            }
            AgentInput::Logout | AgentInput::SetStatus(AgentStatus::LoggedOut) => {
                if self.status == AgentStatus::LoggedOut {
                    return Err(invalid);
                }
                self.logout(out);
            }
            AgentInput::SetStatus(status) => {
                if is_available(&status) || self.status == AgentStatus::LoggedOut {
                    self.no_answers = 0;
                }
                self.status = status;
            }
            AgentInput::Registered => self.registered = true,
            AgentInput::Unregistered => {
                self.registered = false;
                self.release_pending(ReleaseReason::Unregistered, out);
            }
            AgentInput::Reserve {
                call,
                ttl_ms,
                direct,
            } => {
                if self.calls.iter().any(|a| a.call == call) {
                    return Err(AgentError::DuplicateCall(call));
                }
                if let Some(reason) = self.reject_reason(cfg, now, direct) {
                    return Err(AgentError::Rejected(reason));
                }
                let expiry = self.fresh(
                    AgentTimerKind::ReservationExpiry(call),
                    now.plus(ttl_ms),
                    out,
                );
                self.calls.push(AgentCall {
                    call,
                    phase: CallPhase::Reserved,
                    since: now,
                    expiry: Some(expiry),
                });
                out.push(AgentAction::Emit(AgentNotice::Reserved { call }));
            }
            AgentInput::Ringing { call } => {
                let i = self.find(call, &[CallPhase::Reserved], kind)?;
                let a = &mut self.calls[i];
                a.phase = CallPhase::Ringing;
                a.since = now;
            }
            AgentInput::Answered { call } => {
                let i = self.find(call, PENDING, kind)?;
                let a = &mut self.calls[i];
                a.phase = CallPhase::OnCall;
                a.since = now;
                let expiry = a.expiry.take();
                Self::cancel(AgentTimerKind::ReservationExpiry(call), expiry, out);
                self.no_answers = 0;
            }
            AgentInput::OfferFailed { call, why } => {
                let i = self.find(call, PENDING, kind)?;
                let a = self.calls.remove(i);
                Self::cancel(AgentTimerKind::ReservationExpiry(call), a.expiry, out);
                let delay = match why {
                    OfferFailure::NoAnswer => cfg.no_answer_delay_ms,
                    OfferFailure::Busy => cfg.busy_delay_ms,
                    OfferFailure::Declined => cfg.reject_delay_ms,
                };
                if delay > 0 {
                    self.extend(AgentTimerKind::DelayEnd, now.plus(delay), out);
                }
                if why == OfferFailure::NoAnswer {
                    self.no_answers = self.no_answers.saturating_add(1);
                    if cfg.max_no_answer > 0
                        && self.no_answers >= cfg.max_no_answer
                        && is_available(&self.status)
                    {
                        self.status = AgentStatus::OnBreak {
                            reason: AUTO_NO_ANSWER_REASON.into(),
                        };
                    }
                }
            }
            AgentInput::CallEnded { call } => {
                let i = self.find(call, &[CallPhase::OnCall], kind)?;
                self.calls.remove(i);
                if cfg.wrap_up_ms > 0 && self.status != AgentStatus::LoggedOut {
                    self.extend(AgentTimerKind::WrapUpEnd, now.plus(cfg.wrap_up_ms), out);
                }
            }
            AgentInput::Release { call } => {
                let i = self.find(call, PENDING, kind)?;
                let a = self.calls.remove(i);
                Self::cancel(AgentTimerKind::ReservationExpiry(call), a.expiry, out);
            }
            AgentInput::EndWrapUp => {
                let Some(w) = self.wrap_up.take() else {
                    return Err(AgentError::InvalidTransition {
                        state: "not_in_wrap_up",
                        input: kind.as_str(),
                    });
                };
                Self::cancel(AgentTimerKind::WrapUpEnd, Some(w), out);
            }
            AgentInput::Timer(timer) => {
                let stale = AgentError::StaleTimer(timer.clone());
                let current =
                    |a: Option<Armed>| a.is_some_and(|a| a.generation == timer.generation);
                match timer.kind {
                    AgentTimerKind::ReservationExpiry(call) => {
                        let i = self
                            .calls
                            .iter()
                            .position(|a| a.call == call && current(a.expiry))
                            .ok_or(stale)?;
                        self.calls.remove(i);
                        out.push(AgentAction::Emit(AgentNotice::ReservationReleased {
                            call,
                            reason: ReleaseReason::Expired,
                        }));
                    }
                    AgentTimerKind::DelayEnd => {
                        if !current(self.delay) {
                            return Err(stale);
                        }
                        self.delay = None;
                    }
                    AgentTimerKind::WrapUpEnd => {
                        if !current(self.wrap_up) {
                            return Err(stale);
                        }
                        self.wrap_up = None;
                    }
                }
            }
        }
        Ok(())
    }
}
