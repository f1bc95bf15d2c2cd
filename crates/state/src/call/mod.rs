//! The call state machine: one customer call from arrival to the end of every leg.
//!
//! See [`Call`] for the transition table.

use crate::time::{Armed, Millis, TimerId};
use crate::InvariantViolation;
use call_engine_events::{
    AgentId, CallEvent, CallId, Disposition, HangupCause, QueueId, Side, TransferKind,
};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Timeouts of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallConfig {
    /// How long an offer may stay unanswered (from [`CallInput::Offer`]) before it fails
    /// with [`HangupCause::NoAnswer`] and the call goes back to its queue.
    pub ring_timeout_ms: u64,
    /// Longest time a call may wait in queue, counted from its first enqueue, before the
    /// engine ends it with [`Disposition::NoAgent`]; `None` = wait forever.
    pub max_wait_ms: Option<u64>,
    /// How long a terminating call waits for its legs to confirm they are gone before it
    /// is declared [`CallState::Terminated`] anyway.
    pub terminate_guard_ms: u64,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            ring_timeout_ms: 15_000,
            max_wait_ms: None,
            terminate_guard_ms: 5_000,
        }
    }
}

/// Where a call is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CallState {
    /// The customer's INVITE arrived; the call is not queued yet.
    Incoming,
    /// Waiting in a queue for an agent.
    Queued {
        /// The queue.
        queue: QueueId,
    },
    /// An agent was reserved and is being invited.
    Offering {
        /// The agent.
        agent: AgentId,
    },
    /// The agent's phone rings.
    Ringing {
        /// The agent.
        agent: AgentId,
    },
    /// Customer and agent are talking.
    Bridged {
        /// The agent.
        agent: AgentId,
    },
    /// The agent put the customer on hold.
    OnHold {
        /// The agent.
        agent: AgentId,
    },
    /// The agent is transferring the call. Blind: the call is being handed to the
    /// target. Attended: the customer waits on hold while the agent calls the target on
    /// a consultation leg, first ringing, then (`consulting`) talking with them.
    Transferring {
        /// The transferring agent.
        agent: AgentId,
        /// Blind or attended.
        kind: TransferKind,
        /// Where to (agent, queue or URI).
        target: String,
        /// Attended only: the target answered and is talking with the agent.
        #[serde(default)]
        consulting: bool,
    },
    /// Customer, agent and more participants are in a conference.
    Conferencing {
        /// The agent who formed the conference.
        agent: AgentId,
        /// Participants beyond customer and agent (at least 1).
        participants: u16,
    },
    /// The call is over; its legs are being torn down.
    Terminating {
        /// How it ended.
        disposition: Disposition,
        /// Who ended it.
        hung_up_by: Side,
        /// Why.
        cause: HangupCause,
    },
    /// Final: every leg is gone. No input leaves this state.
    Terminated {
        /// How it ended.
        disposition: Disposition,
        /// Who ended it.
        hung_up_by: Side,
        /// Why.
        cause: HangupCause,
    },
}

impl CallState {
    /// The state's name (`"queued"`, `"bridged"`…), as used in errors.
    pub fn name(&self) -> &'static str {
        match self {
            CallState::Incoming => "incoming",
            CallState::Queued { .. } => "queued",
            CallState::Offering { .. } => "offering",
            CallState::Ringing { .. } => "ringing",
            CallState::Bridged { .. } => "bridged",
            CallState::OnHold { .. } => "on_hold",
            CallState::Transferring { .. } => "transferring",
            CallState::Conferencing { .. } => "conferencing",
            CallState::Terminating { .. } => "terminating",
            CallState::Terminated { .. } => "terminated",
        }
    }

    /// The agent the call is with (offered, ringing, talking, holding, transferring or
    /// conferencing), if any.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            CallState::Offering { agent }
            | CallState::Ringing { agent }
            | CallState::Bridged { agent }
            | CallState::OnHold { agent }
            | CallState::Transferring { agent, .. }
            | CallState::Conferencing { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// True for [`CallState::Terminating`] and [`CallState::Terminated`].
    pub fn is_ending(&self) -> bool {
        matches!(
            self,
            CallState::Terminating { .. } | CallState::Terminated { .. }
        )
    }

    /// True for [`CallState::Terminated`], the final state.
    pub fn is_final(&self) -> bool {
        matches!(self, CallState::Terminated { .. })
    }

    /// The disposition, once the call is ending.
    pub fn disposition(&self) -> Option<Disposition> {
        match self {
            CallState::Terminating { disposition, .. }
            | CallState::Terminated { disposition, .. } => Some(*disposition),
            _ => None,
        }
    }
}

/// The timers of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallTimerKind {
    /// Armed while `Offering`/`Ringing`: the offer fails with `NoAnswer` when it fires.
    RingTimeout,
    /// Armed while `Queued` (with [`CallConfig::max_wait_ms`]): the call ends with
    /// `NoAgent` when it fires.
    MaxWait,
    /// Armed while `Terminating`: the call becomes `Terminated` when it fires.
    TerminateGuard,
}

/// One arming of a call timer.
pub type CallTimer = TimerId<CallTimerKind>;

/// What can happen to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum CallInput {
    /// Put the call in a queue (`Incoming` → `Queued`), or move a queued call to another
    /// queue (keeping its enqueue time).
    Enqueue {
        /// The queue.
        queue: QueueId,
    },
    /// A reserved agent is being invited (`Queued` → `Offering`).
    Offer {
        /// The agent.
        agent: AgentId,
    },
    /// The agent's phone rings (`Offering` → `Ringing`).
    AgentRinging,
    /// The agent answered (`Offering`/`Ringing` → `Bridged`).
    AgentAnswered,
    /// The offer failed: no answer, busy, declined (`Offering`/`Ringing` → `Queued` in
    /// the same queue, keeping the original enqueue time).
    OfferFailed {
        /// Why.
        cause: HangupCause,
    },
    /// The agent holds the customer (`Bridged` → `OnHold`).
    Hold,
    /// The agent resumes (`OnHold` → `Bridged`).
    Resume,
    /// The agent starts a transfer (`Bridged`/`OnHold` → `Transferring`).
    StartTransfer {
        /// Blind or attended.
        kind: TransferKind,
        /// Where to; must not be empty.
        target: String,
    },
    /// Attended transfer: the target answered the consultation call and talks with the
    /// agent while the customer waits (`Transferring` → `Transferring`, consulting).
    ConsultAnswered,
    /// Attended transfer: the consultation leg ended without the transfer completing (the
    /// target declined or hung up, or the agent gave up). The agent is back with the
    /// customer, who is still on hold (`OnHold`), or the call terminates if the agent's
    /// leg has ended. While terminating: the consultation leg is gone.
    ConsultEnded {
        /// Why.
        cause: HangupCause,
    },
    /// The transfer succeeded. With an agent, the call is now bridged to that agent
    /// (whose leg, the consultation leg of an attended transfer, becomes the call's agent
    /// leg; the transferring agent's leg is no longer the call's, and its end is not
    /// reported); without one (an external target), the call has left the engine and
    /// terminates (`Answered`, hung up by the agent). An attended transfer may complete
    /// before the target answers (semi-attended).
    TransferCompleted {
        /// The new agent, when the target was an agent.
        new_agent: Option<AgentId>,
    },
    /// The transfer failed: the call goes back to the transferring agent, or terminates
    /// if that agent's leg has already ended. Blind: the customer is reconnected
    /// (`Bridged`). Attended: the consultation leg is gone and the customer is still on
    /// hold (`OnHold`) until the agent resumes.
    TransferFailed {
        /// Why.
        cause: HangupCause,
    },
    /// A conference was formed or its size changed (`Bridged`/`OnHold`/`Conferencing` →
    /// `Conferencing`).
    StartConference {
        /// Participants beyond customer and agent; at least 1.
        participants: u16,
    },
    /// The extra participants left (`Conferencing` → `Bridged`).
    ConferenceEnded,
    /// A leg hung up. `side` must be `Customer` or `Agent` (there is no engine leg).
    LegEnded {
        /// Whose leg.
        side: Side,
        /// Why.
        cause: HangupCause,
    },
    /// The engine ends the call (any live state → `Terminating`).
    Hangup {
        /// Why.
        cause: HangupCause,
    },
    /// Every leg confirmed it is gone (`Terminating` → `Terminated`), including legs the
    /// machine does not track (conference participants).
    AllLegsGone,
    /// A timer the machine asked for fired.
    Timer(CallTimer),
}

/// The name of a [`CallInput`], as recorded in the history (timers are named by kind,
/// leg ends by side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallInputKind {
    /// [`CallInput::Enqueue`].
    Enqueue,
    /// [`CallInput::Offer`].
    Offer,
    /// [`CallInput::AgentRinging`].
    AgentRinging,
    /// [`CallInput::AgentAnswered`].
    AgentAnswered,
    /// [`CallInput::OfferFailed`].
    OfferFailed,
    /// [`CallInput::Hold`].
    Hold,
    /// [`CallInput::Resume`].
    Resume,
    /// [`CallInput::StartTransfer`].
    StartTransfer,
    /// [`CallInput::ConsultAnswered`].
    ConsultAnswered,
    /// [`CallInput::ConsultEnded`].
    ConsultEnded,
    /// [`CallInput::TransferCompleted`].
    TransferCompleted,
    /// [`CallInput::TransferFailed`].
    TransferFailed,
    /// [`CallInput::StartConference`].
    StartConference,
    /// [`CallInput::ConferenceEnded`].
    ConferenceEnded,
    /// [`CallInput::LegEnded`] for the customer.
    CustomerLegEnded,
    /// [`CallInput::LegEnded`] for the agent.
    AgentLegEnded,
    /// [`CallInput::LegEnded`] with [`Side::Engine`] (always invalid).
    EngineLegEnded,
    /// [`CallInput::Hangup`].
    Hangup,
    /// [`CallInput::AllLegsGone`].
    AllLegsGone,
    /// The [`CallTimerKind::RingTimeout`] timer fired.
    RingTimeout,
    /// The [`CallTimerKind::MaxWait`] timer fired.
    MaxWaitTimeout,
    /// The [`CallTimerKind::TerminateGuard`] timer fired.
    TerminateGuardTimeout,
}

impl CallInputKind {
    /// The input's name (`"enqueue"`, `"ring_timeout"`…).
    pub fn as_str(self) -> &'static str {
        use CallInputKind::*;
        match self {
            Enqueue => "enqueue",
            Offer => "offer",
            AgentRinging => "agent_ringing",
            AgentAnswered => "agent_answered",
            OfferFailed => "offer_failed",
            Hold => "hold",
            Resume => "resume",
            StartTransfer => "start_transfer",
            ConsultAnswered => "consult_answered",
            ConsultEnded => "consult_ended",
            TransferCompleted => "transfer_completed",
            TransferFailed => "transfer_failed",
            StartConference => "start_conference",
            ConferenceEnded => "conference_ended",
            CustomerLegEnded => "customer_leg_ended",
            AgentLegEnded => "agent_leg_ended",
            EngineLegEnded => "engine_leg_ended",
            Hangup => "hangup",
            AllLegsGone => "all_legs_gone",
            RingTimeout => "ring_timeout",
            MaxWaitTimeout => "max_wait_timeout",
            TerminateGuardTimeout => "terminate_guard_timeout",
        }
    }
}

impl CallInput {
    /// This input's name.
    pub fn kind(&self) -> CallInputKind {
        use CallInputKind as K;
        match self {
            CallInput::Enqueue { .. } => K::Enqueue,
            CallInput::Offer { .. } => K::Offer,
            CallInput::AgentRinging => K::AgentRinging,
            CallInput::AgentAnswered => K::AgentAnswered,
            CallInput::OfferFailed { .. } => K::OfferFailed,
            CallInput::Hold => K::Hold,
            CallInput::Resume => K::Resume,
            CallInput::StartTransfer { .. } => K::StartTransfer,
            CallInput::ConsultAnswered => K::ConsultAnswered,
            CallInput::ConsultEnded { .. } => K::ConsultEnded,
            CallInput::TransferCompleted { .. } => K::TransferCompleted,
            CallInput::TransferFailed { .. } => K::TransferFailed,
            CallInput::StartConference { .. } => K::StartConference,
            CallInput::ConferenceEnded => K::ConferenceEnded,
            CallInput::LegEnded { side, .. } => match side {
                Side::Customer => K::CustomerLegEnded,
                Side::Agent => K::AgentLegEnded,
                Side::Engine => K::EngineLegEnded,
            },
            CallInput::Hangup { .. } => K::Hangup,
            CallInput::AllLegsGone => K::AllLegsGone,
            CallInput::Timer(t) => match t.kind {
                CallTimerKind::RingTimeout => K::RingTimeout,
                CallTimerKind::MaxWait => K::MaxWaitTimeout,
                CallTimerKind::TerminateGuard => K::TerminateGuardTimeout,
            },
        }
    }
}

/// A domain notification for the driver to publish (see [`CallNotice::into_event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallNotice {
    /// The call entered (or moved to) a queue.
    Queued {
        /// The queue.
        queue: QueueId,
    },
    /// The call is being offered to an agent.
    Offered {
        /// The agent.
        agent: AgentId,
    },
    /// The offered agent's phone rings.
    AgentRinging {
        /// The agent.
        agent: AgentId,
    },
    /// The offer failed; the call is back in its queue.
    OfferFailed {
        /// The agent.
        agent: AgentId,
        /// Why.
        cause: HangupCause,
    },
    /// Customer and agent are connected (first answer, or after a transfer).
    Connected {
        /// The agent.
        agent: AgentId,
    },
    /// Hold state changed.
    HoldChanged {
        /// On hold now.
        on_hold: bool,
    },
    /// A transfer started.
    TransferStarted {
        /// Blind or attended.
        kind: TransferKind,
        /// Target.
        target: String,
    },
    /// Attended transfer: the target answered; the agent consults them.
    TransferConsulting,
    /// A transfer completed.
    TransferCompleted {
        /// The new agent, if the target was one.
        agent: Option<AgentId>,
    },
    /// A transfer failed.
    TransferFailed {
        /// Why.
        cause: HangupCause,
    },
    /// A conference was formed or resized.
    ConferenceStarted {
        /// Participants beyond customer and agent.
        participants: u16,
    },
    /// The conference's extra participants left; customer and agent remain.
    ConferenceEnded,
    /// The call is over: the driver must tear down every remaining leg (and release
    /// `agent`, if any), then report [`CallInput::AllLegsGone`].
    Terminating {
        /// How it ended.
        disposition: Disposition,
        /// Who ended it.
        hung_up_by: Side,
        /// Why.
        cause: HangupCause,
        /// The agent the call was with when it ended, if any.
        agent: Option<AgentId>,
    },
    /// The call reached `Terminated`.
    Ended {
        /// How it ended.
        disposition: Disposition,
        /// Who ended it.
        hung_up_by: Side,
        /// Why.
        cause: HangupCause,
    },
}

impl CallNotice {
    /// The bus event for this notice about call `call`, when there is one
    /// (`Terminating` has none: it is the driver's cue to tear the legs down). `Queued`
    /// carries no skills: a driver that routes by skill fills them in.
    pub fn into_event(self, call: CallId) -> Option<CallEvent> {
        Some(match self {
            CallNotice::Queued { queue } => CallEvent::Queued {
                call,
                queue,
                skills: Vec::new(),
            },
            CallNotice::Offered { agent } => CallEvent::Offered { call, agent },
            CallNotice::AgentRinging { agent } => CallEvent::AgentRinging { call, agent },
            CallNotice::OfferFailed { agent, cause } => {
                CallEvent::OfferFailed { call, agent, cause }
            }
            CallNotice::Connected { agent } => CallEvent::Connected { call, agent },
            CallNotice::HoldChanged { on_hold } => CallEvent::HoldChanged { call, on_hold },
            CallNotice::TransferStarted { kind, target } => CallEvent::TransferStarted {
                call,
                kind,
                target: target.into(),
            },
            CallNotice::TransferCompleted { agent } => CallEvent::TransferCompleted { call, agent },
            CallNotice::TransferFailed { cause } => CallEvent::TransferFailed { call, cause },
            CallNotice::ConferenceStarted { participants } => {
                CallEvent::ConferenceStarted { call, participants }
            }
            CallNotice::Ended {
                disposition,
                hung_up_by,
                cause,
            } => CallEvent::Ended {
                call,
                disposition,
                hung_up_by,
                cause,
            },
            CallNotice::TransferConsulting => CallEvent::TransferConsulting { call },
            CallNotice::ConferenceEnded => CallEvent::ConferenceEnded { call },
            CallNotice::Terminating { .. } => return None,
        })
    }
}

/// What the driver must do after an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CallAction {
    /// Schedule `timer` to fire at `at` (replacing any timer of the same kind), then
    /// feed it back as [`CallInput::Timer`].
    StartTimer {
        /// The timer.
        timer: CallTimer,
        /// When.
        at: Millis,
    },
    /// Unschedule `timer` (feeding it back anyway is harmless: it is stale).
    CancelTimer {
        /// The timer.
        timer: CallTimer,
    },
    /// Publish a notification.
    Emit(CallNotice),
}

/// One accepted input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When.
    pub at: Millis,
    /// Which input.
    pub input: CallInputKind,
    /// State before.
    pub from: CallState,
    /// State after (equal to `from` for accepted inputs that keep the state, such as a
    /// leg ending while the call is already terminating).
    pub to: CallState,
}

/// Why a call input was refused. A refused input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The input is not valid in the current state.
    #[error("call input `{input}` is not valid in state `{state}`")]
    InvalidTransition {
        /// The current state's name.
        state: &'static str,
        /// The input's name.
        input: &'static str,
    },
    /// The input carries an unusable value.
    #[error("call input `{input}` is invalid: {reason}")]
    InvalidArgument {
        /// The input's name.
        input: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The timer was cancelled, superseded or already fired.
    #[error("stale call timer {0:?}")]
    StaleTimer(CallTimer),
}

/// The legs of a call the machine keeps track of, each up (true) or gone. Conference
/// participants beyond customer and agent are not tracked (their end is confirmed with
/// [`CallInput::AllLegsGone`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLegs {
    /// The customer's leg: up from the start until the customer's `LegEnded`.
    pub customer: bool,
    /// The agent's leg: up from an `Offer` (the agent is being invited) until the offer
    /// fails or the agent's `LegEnded`; after a completed transfer, the new agent's.
    pub agent: bool,
    /// An attended transfer's consultation leg to the target.
    pub consult: bool,
}

impl CallLegs {
    /// Whether any tracked leg is up.
    pub fn any(&self) -> bool {
        self.customer || self.agent || self.consult
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Timers {
    ring: Option<Armed>,
    max_wait: Option<Armed>,
    guard: Option<Armed>,
}

/// Everything an input may change except the history: cloned, changed, and committed
/// only when the input is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Core {
    state: CallState,
    queue: Option<QueueId>,
    created_at: Millis,
    queued_at: Option<Millis>,
    answered_at: Option<Millis>,
    ended_at: Option<Millis>,
    legs: CallLegs,
    last_at: Millis,
    timers: Timers,
    next_generation: u64,
}

/// One customer call: a validated state machine with history and timers.
///
/// | state | input | next state |
/// |---|---|---|
/// | `Incoming` | `Enqueue` | `Queued` (arms `MaxWait`) |
/// | `Queued` | `Enqueue` | `Queued` (other queue, same enqueue time) |
/// | `Queued` | `Offer` | `Offering` (arms `RingTimeout`) |
/// | `Offering` | `AgentRinging` | `Ringing` |
/// | `Offering`, `Ringing` | `AgentAnswered` | `Bridged` |
/// | `Offering`, `Ringing` | `OfferFailed`, agent `LegEnded`, `RingTimeout` | `Queued` (same queue) |
/// | `Queued` | `MaxWait` fires | `Terminating` (`NoAgent`, engine) |
/// | `Bridged` | `Hold` | `OnHold` |
/// | `OnHold` | `Resume` | `Bridged` |
/// | `Bridged`, `OnHold` | `StartTransfer{Blind}` | `Transferring` (blind) |
/// | `Bridged`, `OnHold` | `StartTransfer{Attended}` | `Transferring` (attended; consultation leg up) |
/// | `Transferring` (attended, not consulting) | `ConsultAnswered` | `Transferring` (consulting) |
/// | `Transferring` | `TransferCompleted{Some(agent)}` | `Bridged` (new agent) |
/// | `Transferring` | `TransferCompleted{None}` | `Terminating` (`Answered`, agent) |
/// | `Transferring` (blind) | `TransferFailed` | `Bridged` (or `Terminating` if the agent leg ended) |
/// | `Transferring` (attended) | `TransferFailed`, `ConsultEnded` | `OnHold` (or `Terminating` if the agent leg ended) |
/// | `Transferring` | agent `LegEnded` | `Transferring` (agent leg noted as gone) |
/// | `Bridged`, `OnHold`, `Conferencing` | `StartConference` | `Conferencing` |
/// | `Conferencing` | `ConferenceEnded` | `Bridged` |
/// | `Bridged`, `OnHold`, `Conferencing` | agent `LegEnded` | `Terminating` (`Answered`, agent) |
/// | any live state | customer `LegEnded` | `Terminating` (`Answered` if answered, else `Abandoned`; `Failed` for an unanswered transport failure) |
/// | any live state | `Hangup` | `Terminating` (`Answered` if answered, else `Failed` for a failure cause, else `NoAgent`; engine) |
/// | `Terminating` | `LegEnded`, `Hangup` | `Terminating` (a leg that was up noted as gone; otherwise no effect) |
/// | `Terminating` | `ConsultEnded` (consultation leg up), `OfferFailed` (an offer's leg up) | `Terminating` (the leg noted as gone) |
/// | `Terminating` | `AllLegsGone`, `TerminateGuard` fires | `Terminated` |
///
/// The machine tracks the customer's, the agent's and a consultation leg
/// ([`Call::legs`]): a call whose last tracked leg ends is `Terminated` at once (from
/// `Terminating`, or straight from a live state when that leg's end is what ends the
/// call), without waiting for `AllLegsGone` or the guard timer.
///
/// Every other combination is refused with [`CallError::InvalidTransition`].
/// `Terminated` accepts nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    id: CallId,
    config: CallConfig,
    core: Core,
    history: Vec<Transition>,
}

impl Call {
    /// A new call in state `Incoming`, created at `now`.
    pub fn new(id: CallId, config: CallConfig, now: Millis) -> Self {
        Self {
            id,
            config,
            core: Core {
                state: CallState::Incoming,
                queue: None,
                created_at: now,
                queued_at: None,
                answered_at: None,
                ended_at: None,
                legs: CallLegs {
                    customer: true,
                    agent: false,
                    consult: false,
                },
                last_at: now,
                timers: Timers::default(),
                next_generation: 0,
            },
            history: Vec::new(),
        }
    }

    /// Applies `input` at `now` and returns what the driver must do.
    ///
    /// On error nothing changed: not the state, not the history, not the timers.
    pub fn handle(&mut self, input: CallInput, now: Millis) -> Result<Vec<CallAction>, CallError> {
        let mut actions = Vec::new();
        self.handle_into(input, now, &mut actions)?;
        Ok(actions)
    }

    /// Like [`Call::handle`], appending the actions to `actions` (left as it was on
    /// error), so a driver can reuse one buffer.
    pub fn handle_into(
        &mut self,
        input: CallInput,
        now: Millis,
        actions: &mut Vec<CallAction>,
    ) -> Result<(), CallError> {
        let now = now.max(self.core.last_at);
        let kind = input.kind();
        let mark = actions.len();
        let mut next = self.core.clone();
        if let Err(e) = next.apply(&self.config, input, kind, now, actions) {
            actions.truncate(mark);
            return Err(e);
        }
        next.last_at = now;
        let from = std::mem::replace(&mut self.core, next).state;
        self.history.push(Transition {
            at: now,
            input: kind,
            from,
            to: self.core.state.clone(),
        });
        Ok(())
    }

    /// The call's id.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The call's configuration.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &CallState {
        &self.core.state
    }

    /// Every accepted input, oldest first.
    pub fn history(&self) -> &[Transition] {
        &self.history
    }

    /// The agent the call is with, if any.
    pub fn agent(&self) -> Option<&AgentId> {
        self.core.state.agent()
    }

    /// The legs that are up. A terminating call becomes `Terminated` as soon as the last
    /// of them ends.
    pub fn legs(&self) -> CallLegs {
        self.core.legs
    }

    /// The queue the call was last enqueued in, if any.
    pub fn queue(&self) -> Option<&QueueId> {
        self.core.queue.as_ref()
    }

    /// When the call was created.
    pub fn created_at(&self) -> Millis {
        self.core.created_at
    }

    /// When the call was first enqueued.
    pub fn queued_at(&self) -> Option<Millis> {
        self.core.queued_at
    }

    /// When an agent first answered.
    pub fn answered_at(&self) -> Option<Millis> {
        self.core.answered_at
    }

    /// When the call ended (entered `Terminating`).
    pub fn ended_at(&self) -> Option<Millis> {
        self.core.ended_at
    }

    /// The time of the last accepted input (or of creation).
    pub fn last_input_at(&self) -> Millis {
        self.core.last_at
    }

    /// Time in queue: from the first enqueue to the answer, or to the end if never
    /// answered. `None` if never queued or still waiting.
    pub fn wait_ms(&self) -> Option<u64> {
        let queued = self.core.queued_at?;
        let until = self.core.answered_at.or(self.core.ended_at)?;
        Some(until.since(queued))
    }

    /// Time with an agent: from the first answer to the end (hold included). `None` if
    /// never answered or not ended yet.
    pub fn talk_ms(&self) -> Option<u64> {
        Some(self.core.ended_at?.since(self.core.answered_at?))
    }

    /// The armed timer of `kind`, with its deadline.
    pub fn armed_timer(&self, kind: CallTimerKind) -> Option<(CallTimer, Millis)> {
        self.core.timers.slot(kind).map(|a| {
            (
                TimerId {
                    kind,
                    generation: a.generation,
                },
                a.at,
            )
        })
    }

    /// Every armed timer with its deadline (what a driver restoring a persisted call
    /// must schedule).
    pub fn armed_timers(&self) -> Vec<(CallTimer, Millis)> {
        [
            CallTimerKind::RingTimeout,
            CallTimerKind::MaxWait,
            CallTimerKind::TerminateGuard,
        ]
        .into_iter()
        .filter_map(|k| self.armed_timer(k))
        .collect()
    }

    /// Checks the machine's invariants: the state agrees with the recorded timestamps
    /// and armed timers, and the history is a consistent chain ending in the current
    /// state. A correct machine never fails this; it exists for tests and debugging.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |detail: String| Err(InvariantViolation::new("call", detail));
        let c = &self.core;
        // History chain.
        let mut prev = CallState::Incoming;
        let mut prev_at = c.created_at;
        for (i, t) in self.history.iter().enumerate() {
            if t.from != prev {
                return fail(format!(
                    "transition {i} starts in {:?}, not {prev:?}",
                    t.from
                ));
            }
            if t.at < prev_at {
                return fail(format!("transition {i} goes back in time"));
            }
            if prev.is_final() {
                return fail(format!("transition {i} leaves the final state"));
            }
            prev = t.to.clone();
            prev_at = t.at;
        }
        if prev != c.state {
            return fail(format!("history ends in {prev:?}, state is {:?}", c.state));
        }
        if prev_at > c.last_at {
            return fail("history is later than the last input".into());
        }
        // Timestamps are ordered.
        let chain = [Some(c.created_at), c.queued_at, c.answered_at, c.ended_at];
        let present: Vec<Millis> = chain.iter().flatten().copied().collect();
        if present.windows(2).any(|w| w[0] > w[1]) {
            return fail(format!("timestamps out of order: {chain:?}"));
        }
        if c.ended_at.is_some_and(|e| e > c.last_at) {
            return fail("ended after the last input".into());
        }
        // Per-state facts.
        let live_queue = |c: &Core| c.queued_at.is_some() && c.queue.is_some();
        let ok = match &c.state {
            CallState::Incoming => {
                c.queued_at.is_none() && c.answered_at.is_none() && c.ended_at.is_none()
            }
            CallState::Queued { queue } => {
                live_queue(c)
                    && c.queue.as_ref() == Some(queue)
                    && c.answered_at.is_none()
                    && c.ended_at.is_none()
            }
            CallState::Offering { .. } | CallState::Ringing { .. } => {
                live_queue(c) && c.answered_at.is_none() && c.ended_at.is_none()
            }
            CallState::Bridged { .. } | CallState::OnHold { .. } => {
                c.answered_at.is_some() && c.ended_at.is_none()
            }
            CallState::Transferring {
                target,
                kind,
                consulting,
                ..
            } => {
                c.answered_at.is_some()
                    && c.ended_at.is_none()
                    && !target.is_empty()
                    && (!consulting || *kind == TransferKind::Attended)
            }
            CallState::Conferencing { participants, .. } => {
                c.answered_at.is_some() && c.ended_at.is_none() && *participants >= 1
            }
            CallState::Terminating { disposition, .. }
            | CallState::Terminated { disposition, .. } => {
                c.ended_at.is_some()
                    && ((*disposition == Disposition::Answered) == c.answered_at.is_some())
            }
        };
        // Which legs are up, per state.
        let l = c.legs;
        let legs_ok = match &c.state {
            CallState::Incoming | CallState::Queued { .. } => l.customer && !l.agent && !l.consult,
            CallState::Offering { .. }
            | CallState::Ringing { .. }
            | CallState::Bridged { .. }
            | CallState::OnHold { .. }
            | CallState::Conferencing { .. } => l.customer && l.agent && !l.consult,
            CallState::Transferring { kind, .. } => {
                l.customer && l.consult == (*kind == TransferKind::Attended)
            }
            // A terminating call is waiting for a leg; the last one's end finishes it.
            CallState::Terminating { .. } => l.any(),
            CallState::Terminated { .. } => true,
        };
        if !legs_ok {
            return fail(format!("legs {l:?} disagree with state {:?}", c.state));
        }
        if !ok {
            return fail(format!("state {:?} disagrees with facts {c:?}", c.state));
        }
        // Timers are armed exactly when their state needs them.
        let s = &c.state;
        let want_ring = matches!(s, CallState::Offering { .. } | CallState::Ringing { .. });
        let want_wait = matches!(s, CallState::Queued { .. }) && self.config.max_wait_ms.is_some();
        let want_guard = matches!(s, CallState::Terminating { .. });
        if c.timers.ring.is_some() != want_ring
            || c.timers.max_wait.is_some() != want_wait
            || c.timers.guard.is_some() != want_guard
        {
            return fail(format!("timers {:?} do not match state {s:?}", c.timers));
        }
        let gens = [c.timers.ring, c.timers.max_wait, c.timers.guard];
        if gens
            .iter()
            .flatten()
            .any(|a| a.generation >= c.next_generation)
        {
            return fail("timer generation from the future".into());
        }
        Ok(())
    }
}

impl Timers {
    fn slot(&self, kind: CallTimerKind) -> Option<Armed> {
        match kind {
            CallTimerKind::RingTimeout => self.ring,
            CallTimerKind::MaxWait => self.max_wait,
            CallTimerKind::TerminateGuard => self.guard,
        }
    }

    fn slot_mut(&mut self, kind: CallTimerKind) -> &mut Option<Armed> {
        match kind {
            CallTimerKind::RingTimeout => &mut self.ring,
            CallTimerKind::MaxWait => &mut self.max_wait,
            CallTimerKind::TerminateGuard => &mut self.guard,
        }
    }
}

fn emit(out: &mut Vec<CallAction>, notice: CallNotice) {
    out.push(CallAction::Emit(notice));
}

impl Core {
    fn arm(&mut self, kind: CallTimerKind, at: Millis, out: &mut Vec<CallAction>) {
        self.disarm(kind, out);
        let generation = self.next_generation;
        self.next_generation += 1;
        *self.timers.slot_mut(kind) = Some(Armed { generation, at });
        out.push(CallAction::StartTimer {
            timer: TimerId { kind, generation },
            at,
        });
    }

    fn disarm(&mut self, kind: CallTimerKind, out: &mut Vec<CallAction>) {
        if let Some(a) = self.timers.slot_mut(kind).take() {
            out.push(CallAction::CancelTimer {
                timer: TimerId {
                    kind,
                    generation: a.generation,
                },
            });
        }
    }

    fn terminate(
        &mut self,
        cfg: &CallConfig,
        now: Millis,
        disposition: Disposition,
        hung_up_by: Side,
        cause: HangupCause,
        out: &mut Vec<CallAction>,
    ) {
        let agent = self.state.agent().cloned();
        self.disarm(CallTimerKind::RingTimeout, out);
        self.disarm(CallTimerKind::MaxWait, out);
        self.ended_at = Some(now);
        self.state = CallState::Terminating {
            disposition,
            hung_up_by,
            cause: cause.clone(),
        };
        if self.legs.any() {
            self.arm(
                CallTimerKind::TerminateGuard,
                now.plus(cfg.terminate_guard_ms),
                out,
            );
        }
        emit(
            out,
            CallNotice::Terminating {
                disposition,
                hung_up_by,
                cause,
                agent,
            },
        );
        // The leg whose end ended the call was the last one.
        self.finish_if_no_legs(out);
    }

    /// `Terminating` → `Terminated` once no tracked leg is up.
    fn finish_if_no_legs(&mut self, out: &mut Vec<CallAction>) {
        if !self.legs.any() {
            self.finish(out);
        }
    }

    /// `Terminating` → `Terminated`.
    fn finish(&mut self, out: &mut Vec<CallAction>) -> bool {
        let CallState::Terminating {
            disposition,
            hung_up_by,
            cause,
        } = &self.state
        else {
            return false;
        };
        let (disposition, hung_up_by, cause) = (*disposition, *hung_up_by, cause.clone());
        self.disarm(CallTimerKind::TerminateGuard, out);
        self.legs = CallLegs::default();
        self.state = CallState::Terminated {
            disposition,
            hung_up_by,
            cause: cause.clone(),
        };
        emit(
            out,
            CallNotice::Ended {
                disposition,
                hung_up_by,
                cause,
            },
        );
        true
    }

    /// `Offering`/`Ringing` → `Queued` in the same queue.
    fn offer_failed(
        &mut self,
        cfg: &CallConfig,
        now: Millis,
        cause: HangupCause,
        out: &mut Vec<CallAction>,
    ) -> bool {
        let (CallState::Offering { agent } | CallState::Ringing { agent }) = &self.state else {
            return false;
        };
        let (Some(queue), Some(queued_at)) = (self.queue.clone(), self.queued_at) else {
            return false;
        };
        let agent = agent.clone();
        self.disarm(CallTimerKind::RingTimeout, out);
        self.legs.agent = false;
        self.state = CallState::Queued { queue };
        if let Some(wait) = cfg.max_wait_ms {
            // The deadline counts from the first enqueue: an offer does not buy time.
            self.arm(CallTimerKind::MaxWait, queued_at.plus(wait).max(now), out);
        }
        emit(out, CallNotice::OfferFailed { agent, cause });
        true
    }

    /// A transfer that did not complete (`Transferring` → back to the agent): blind, the
    /// customer is reconnected (`Bridged`); attended, the consultation leg is gone and the
    /// customer is still on hold (`OnHold`). Terminates if the agent's leg has ended.
    /// False (nothing changed) outside `Transferring`, like [`offer_failed`](Self::offer_failed).
    fn transfer_failed(
        &mut self,
        cfg: &CallConfig,
        now: Millis,
        cause: HangupCause,
        out: &mut Vec<CallAction>,
    ) -> bool {
        let CallState::Transferring { agent, kind, .. } = &self.state else {
            return false;
        };
        let (agent, kind) = (agent.clone(), *kind);
        self.legs.consult = false;
        emit(
            out,
            CallNotice::TransferFailed {
                cause: cause.clone(),
            },
        );
        if !self.legs.agent {
            self.terminate(cfg, now, Disposition::Answered, Side::Agent, cause, out);
        } else if kind == TransferKind::Attended {
            self.state = CallState::OnHold { agent };
        } else {
            self.state = CallState::Bridged { agent };
        }
        true
    }

    fn customer_disposition(&self, cause: &HangupCause) -> Disposition {
        if self.answered_at.is_some() {
            Disposition::Answered
        } else if matches!(cause, HangupCause::Failure { .. }) {
            Disposition::Failed
        } else {
            Disposition::Abandoned
        }
    }

    fn engine_disposition(&self, cause: &HangupCause) -> Disposition {
        if self.answered_at.is_some() {
            Disposition::Answered
        } else if matches!(cause, HangupCause::Failure { .. }) {
            Disposition::Failed
        } else {
            Disposition::NoAgent
        }
    }

    fn apply(
        &mut self,
        cfg: &CallConfig,
        input: CallInput,
        kind: CallInputKind,
        now: Millis,
        out: &mut Vec<CallAction>,
    ) -> Result<(), CallError> {
        use CallState as S;
        let invalid = CallError::InvalidTransition {
            state: self.state.name(),
            input: kind.as_str(),
        };
        match input {
            CallInput::Enqueue { queue } => {
                match self.state {
                    S::Incoming => {
                        self.queued_at = Some(now);
                        if let Some(wait) = cfg.max_wait_ms {
                            self.arm(CallTimerKind::MaxWait, now.plus(wait), out);
                        }
                    }
                    S::Queued { .. } => {}
                    _ => return Err(invalid),
                }
                self.queue = Some(queue.clone());
                self.state = S::Queued {
                    queue: queue.clone(),
                };
                emit(out, CallNotice::Queued { queue });
            }
            CallInput::Offer { agent } => {
                if !matches!(self.state, S::Queued { .. }) {
                    return Err(invalid);
                }
                self.disarm(CallTimerKind::MaxWait, out);
                self.arm(
                    CallTimerKind::RingTimeout,
                    now.plus(cfg.ring_timeout_ms),
                    out,
                );
                self.legs.agent = true;
                self.state = S::Offering {
                    agent: agent.clone(),
                };
                emit(out, CallNotice::Offered { agent });
            }
            CallInput::AgentRinging => {
                let S::Offering { agent } = &self.state else {
                    return Err(invalid);
                };
                let agent = agent.clone();
                self.state = S::Ringing {
                    agent: agent.clone(),
                };
                emit(out, CallNotice::AgentRinging { agent });
            }
            CallInput::AgentAnswered => {
                let (S::Offering { agent } | S::Ringing { agent }) = &self.state else {
                    return Err(invalid);
                };
                let agent = agent.clone();
                self.disarm(CallTimerKind::RingTimeout, out);
                self.answered_at.get_or_insert(now);
                self.state = S::Bridged {
                    agent: agent.clone(),
                };
                emit(out, CallNotice::Connected { agent });
            }
            CallInput::OfferFailed { cause } => match self.state {
                // An offer outstanding when the call ended: its leg is gone.
                S::Terminating { .. } if self.answered_at.is_none() && self.legs.agent => {
                    self.legs.agent = false;
                    self.finish_if_no_legs(out);
                }
                _ => {
                    if !self.offer_failed(cfg, now, cause, out) {
                        return Err(invalid);
                    }
                }
            },
            CallInput::Hold => {
                let S::Bridged { agent } = &self.state else {
                    return Err(invalid);
                };
                self.state = S::OnHold {
                    agent: agent.clone(),
                };
                emit(out, CallNotice::HoldChanged { on_hold: true });
            }
            CallInput::Resume => {
                let S::OnHold { agent } = &self.state else {
                    return Err(invalid);
                };
                self.state = S::Bridged {
                    agent: agent.clone(),
                };
                emit(out, CallNotice::HoldChanged { on_hold: false });
            }
            CallInput::StartTransfer {
                kind: transfer,
                target,
            } => {
                let (S::Bridged { agent } | S::OnHold { agent }) = &self.state else {
                    return Err(invalid);
                };
                if target.is_empty() {
                    return Err(CallError::InvalidArgument {
                        input: kind.as_str(),
                        reason: "empty transfer target",
                    });
                }
                self.state = S::Transferring {
                    agent: agent.clone(),
                    kind: transfer,
                    target: target.clone(),
                    consulting: false,
                };
                self.legs.consult = transfer == TransferKind::Attended;
                emit(
                    out,
                    CallNotice::TransferStarted {
                        kind: transfer,
                        target,
                    },
                );
            }
            CallInput::ConsultAnswered => {
                let S::Transferring {
                    kind: TransferKind::Attended,
                    consulting,
                    ..
                } = &mut self.state
                else {
                    return Err(invalid);
                };
                if *consulting {
                    return Err(invalid);
                }
                *consulting = true;
                emit(out, CallNotice::TransferConsulting);
            }
            CallInput::ConsultEnded { cause } => match &self.state {
                S::Transferring {
                    kind: TransferKind::Attended,
                    ..
                } => {
                    self.transfer_failed(cfg, now, cause, out);
                }
                S::Terminating { .. } if self.legs.consult => {
                    self.legs.consult = false;
                    self.finish_if_no_legs(out);
                }
                _ => return Err(invalid),
            },
            CallInput::TransferCompleted { new_agent } => {
                if !matches!(self.state, S::Transferring { .. }) {
                    return Err(invalid);
                }
                emit(
                    out,
                    CallNotice::TransferCompleted {
                        agent: new_agent.clone(),
                    },
                );
                self.legs.consult = false;
                match new_agent {
                    Some(agent) => {
                        self.legs.agent = true;
                        self.state = S::Bridged {
                            agent: agent.clone(),
                        };
                        emit(out, CallNotice::Connected { agent });
                    }
                    None => self.terminate(
                        cfg,
                        now,
                        Disposition::Answered,
                        Side::Agent,
                        HangupCause::Normal,
                        out,
                    ),
                }
            }
            CallInput::TransferFailed { cause } => {
                if !self.transfer_failed(cfg, now, cause, out) {
                    return Err(invalid);
                }
            }
            CallInput::StartConference { participants } => {
                let (S::Bridged { agent } | S::OnHold { agent } | S::Conferencing { agent, .. }) =
                    &self.state
                else {
                    return Err(invalid);
                };
                if participants == 0 {
                    return Err(CallError::InvalidArgument {
                        input: kind.as_str(),
                        reason: "a conference needs at least one extra participant",
                    });
                }
                self.state = S::Conferencing {
                    agent: agent.clone(),
                    participants,
                };
                emit(out, CallNotice::ConferenceStarted { participants });
            }
            CallInput::ConferenceEnded => {
                let S::Conferencing { agent, .. } = &self.state else {
                    return Err(invalid);
                };
                self.state = S::Bridged {
                    agent: agent.clone(),
                };
                emit(out, CallNotice::ConferenceEnded);
            }
            CallInput::LegEnded { side, cause } => match (side, &self.state) {
                (Side::Engine, _) | (_, S::Terminated { .. }) => return Err(invalid),
                (Side::Customer, S::Terminating { .. }) => {
                    self.legs.customer = false;
                    self.finish_if_no_legs(out);
                }
                (Side::Agent, S::Terminating { .. }) => {
                    self.legs.agent = false;
                    self.finish_if_no_legs(out);
                }
                (Side::Customer, _) => {
                    self.legs.customer = false;
                    let d = self.customer_disposition(&cause);
                    self.terminate(cfg, now, d, Side::Customer, cause, out);
                }
                (Side::Agent, S::Offering { .. } | S::Ringing { .. }) => {
                    if !self.offer_failed(cfg, now, cause, out) {
                        return Err(invalid);
                    }
                }
                (Side::Agent, S::Bridged { .. } | S::OnHold { .. } | S::Conferencing { .. }) => {
                    self.legs.agent = false;
                    self.terminate(cfg, now, Disposition::Answered, Side::Agent, cause, out);
                }
                (Side::Agent, S::Transferring { .. }) if self.legs.agent => {
                    self.legs.agent = false;
                }
                (Side::Agent, _) => return Err(invalid),
            },
            CallInput::Hangup { cause } => match self.state {
                S::Terminated { .. } => return Err(invalid),
                S::Terminating { .. } => {}
                _ => {
                    let d = self.engine_disposition(&cause);
                    self.terminate(cfg, now, d, Side::Engine, cause, out);
                }
            },
            CallInput::AllLegsGone => {
                if !self.finish(out) {
                    return Err(invalid);
                }
            }
            CallInput::Timer(timer) => {
                match self.timers.slot(timer.kind) {
                    Some(a) if a.generation == timer.generation => {}
                    _ => return Err(CallError::StaleTimer(timer)),
                }
                // It fired: nothing to cancel.
                *self.timers.slot_mut(timer.kind) = None;
                let done = match timer.kind {
                    CallTimerKind::RingTimeout => {
                        self.offer_failed(cfg, now, HangupCause::NoAnswer, out)
                    }
                    CallTimerKind::MaxWait => {
                        let queued = matches!(self.state, S::Queued { .. });
                        if queued {
                            self.terminate(
                                cfg,
                                now,
                                Disposition::NoAgent,
                                Side::Engine,
                                HangupCause::NoAnswer,
                                out,
                            );
                        }
                        queued
                    }
                    CallTimerKind::TerminateGuard => self.finish(out),
                };
                if !done {
                    // Unreachable while the invariants hold (timers are armed only in
                    // the states that handle them); refuse rather than guess.
                    return Err(invalid);
                }
            }
        }
        Ok(())
    }
}
