//! # call-engine-orchestrator
//!
//! Call-center policy, pure: which agent gets which waiting call. It reacts to inputs
//! (agents coming online, calls entering queues, offers answered or failed, calls ending,
//! timers) and returns outputs (ring this agent, cancel that ring, start/cancel a timer).
//! It never does IO and reads no clock (time is an input); `random` and
//! `weighted-random` draw from a seeded generator held in the orchestrator, so the same
//! configuration and the same inputs in the same order always give the same decisions.
//!
//! - **Strategies** ([`Strategy`]): ring-all, longest-idle-agent, round-robin (remembering
//!   the last agent offered), top-down, agent-with-fewest-calls,
//!   agent-with-least-talk-time, random, weighted-random (by penalty),
//!   ring-progressively, sequentially-by-agent-order.
//! - **Tiers**: an agent belongs to a queue with a level, a position and a penalty
//!   ([`Membership`]); [`TierRule`]s make higher levels eligible as a caller waits,
//!   [`PenaltyRule`]s raise the highest eligible penalty. Widening is event-driven: a
//!   [`Timer::Widen`] is asked for when the next step is due.
//! - **Skills**: agents have skills with levels, calls require skills with minimum levels
//!   (from the queue and from [`CallRouting`]); agents lacking one are excluded, the best
//!   match is preferred ([`SkillMatch`]); [`SkillRelax`] lowers the minimums over time.
//! - **Priority**: higher [`CallRouting::priority`] is served first; among equals, the
//!   earlier [`CallRouting::entered_at`] (seniority gained elsewhere).
//! - **Agent status** ([`AgentStatus`], [`Input::AgentStatus`]): only `Available` and
//!   `AvailableOnDemand` agents are offered calls; reject, busy and no-answer delays
//!   ([`Timer::DelayEnd`]); an automatic break after `max_no_answer` unanswered offers;
//!   queue login and logout at runtime ([`Input::QueueLogin`], [`Input::QueueLogout`]).
//! - **Queue policies**: max wait, join-empty, leave-when-empty, max wait with no agent,
//!   max length, with hang-up or overflow actions ([`QueueAction`], [`FullAction`]);
//!   [`Orchestrator::admit`] checks them before a call is answered.
//! - **Callbacks**: [`Input::CallbackRequested`] reserves one agent
//!   ([`Output::Callback`]) until the customer is called back.
//! - **Explanations**: every routing decision is recorded (bounded, in reused buffers):
//!   [`Orchestrator::explain`] returns the candidates considered, their scores and why
//!   each was skipped.
//!
//! An agent takes at most `max_calls` calls at once (ringing counts). A caller whose offer
//! fails keeps their place at the head of the queue; agents who already failed that call
//! are skipped until every eligible member has been tried.
//!
//! ```
//! use call_engine_orchestrator::*;
//! use call_engine_events::{AgentId, CallId, QueueId};
//!
//! let support = QueueId::new("support");
//! let mut o = Orchestrator::new(
//!     vec![QueueConfig::new(support.clone(), Strategy::LongestIdleAgent)],
//!     vec![AgentConfig::new(AgentId::new("alice"), vec![support.clone()])],
//! );
//! o.handle(Input::AgentOnline { agent: AgentId::new("alice"), contact: "sip:alice@127.0.0.1:5070".into() }, 0);
//! let out = o.handle(Input::CallQueued { call: CallId(1), queue: support }, 10);
//! assert!(matches!(&out[0], Output::Ring { agent, .. } if agent.as_str() == "alice"));
//! assert!(o.explain(CallId(1))[0].candidates[0].verdict.is_chosen());
//! ```
//!
//! With tiers and skills:
//!
//! ```
//! use call_engine_orchestrator::*;
//! use call_engine_events::{AgentId, CallId, QueueId};
//!
//! let billing = QueueId::new("billing");
//! let mut o = Orchestrator::with_config(OrchestratorConfig::new(
//!     vec![QueueConfig::new(billing.clone(), Strategy::LongestIdleAgent)
//!         .with_required_skill("billing", 3)
//!         .with_tier_rule(30_000, 2)], // level 2 after 30 s
//!     vec![
//!         AgentProfile::new(AgentId::new("ann"))
//!             .with_membership(Membership::new(billing.clone()).with_level(2))
//!             .with_skill("billing", 5),
//!     ],
//! ));
//! o.handle(Input::AgentOnline { agent: AgentId::new("ann"), contact: "sip:ann@x".into() }, 0);
//! let out = o.handle(Input::CallQueued { call: CallId(1), queue: billing }, 0);
//! // ann is level 2: not yet; a widening timer is asked for.
//! assert_eq!(out, vec![Output::StartTimer { timer: Timer::Widen { call: CallId(1) }, at: 30_000 }]);
//! let out = o.handle(Input::Timer(Timer::Widen { call: CallId(1) }), 30_000);
//! assert!(matches!(&out[0], Output::Ring { agent, .. } if agent.as_str() == "ann"));
//! ```

mod config;
mod explain;
mod rng;

pub use call_engine_events::AgentStatus;
pub use config::{
    AgentConfig, AgentProfile, CallRouting, EmptyCondition, ExplainConfig, FullAction, Membership,
    OrchestratorConfig, PenaltyRule, QueueAction, QueueConfig, SkillMatch, SkillRelax,
    SkillRequirement, TierRule,
};
pub use explain::{Candidate, Decision, Outcome, Verdict};

pub mod rules;
pub use rules::{
    parse_skills_header, BusinessHours, BusinessHoursError, CallerPattern, CallerPatternError,
    CallerRule, CallerRules, CallerVerdict, SkillsHeaderError, Weekday,
};
pub mod stats;
pub use stats::{
    erlang_c, erlang_c_expected_wait, estimate_wait_s, AgentStatsSnapshot, AgentsByState,
    EwtInputs, LeaveReason, PeriodStats, QueueStats, StatsBook, StatsConfig,
};

use call_engine_events::{AgentId, CallId, QueueId};
use explain::{Cand, ExplainLog, Limits, LogRef, Names, OutcomeCode, Record, Req, NO_SLOT, V};
use rng::SplitMix64;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Milliseconds since an arbitrary origin chosen by the caller.
pub type Millis = u64;

/// How a queue picks agents.
///
/// Whatever the strategy, only eligible members are considered (online, not paused,
/// below `max_calls`, tier level and penalty allowed at the caller's waiting time, the
/// required skills, not already failed for this call), and among them a lower tier
/// level, then a lower penalty, then (with [`SkillMatch::BestMatch`]) a higher skill
/// score is preferred; the strategy decides among equals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The available agent who has been idle longest.
    LongestIdleAgent,
    /// The next available agent after the one offered last, in member order.
    RoundRobin,
    /// Every available agent at once; the first to answer takes the call.
    RingAll,
    /// The first available agent in member order (position, then configuration order),
    /// every time. Alias `linear`.
    TopDown,
    /// The agent who has answered the fewest calls since the orchestrator started (ties:
    /// idle longest).
    AgentWithFewestCalls,
    /// The agent with the least cumulative talk time (answer to hang-up; ties: idle
    /// longest).
    AgentWithLeastTalkTime,
    /// A uniformly random agent (seeded, deterministic).
    Random,
    /// A random agent, weighted by penalty: weight `∝ 1 / (penalty + 1)`, so penalty 0
    /// draws twice as often as penalty 1. Alias `wrandom`.
    WeightedRandom,
    /// One agent in member order, then one more every `ring_progressively_delay_ms`
    /// while the earlier ones keep ringing; the first to answer takes the call.
    RingProgressively,
    /// In member order, starting after the last agent offered *this call* (top-down
    /// starts from the first member every time).
    SequentiallyByAgentOrder,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 10] = [
        Strategy::RingAll,
        Strategy::LongestIdleAgent,
        Strategy::RoundRobin,
        Strategy::TopDown,
        Strategy::AgentWithFewestCalls,
        Strategy::AgentWithLeastTalkTime,
        Strategy::Random,
        Strategy::WeightedRandom,
        Strategy::RingProgressively,
        Strategy::SequentiallyByAgentOrder,
    ];

    /// The configuration name (`longest-idle-agent`, `round-robin`, `ring-all`, …).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::LongestIdleAgent => "longest-idle-agent",
            Strategy::RoundRobin => "round-robin",
            Strategy::RingAll => "ring-all",
            Strategy::TopDown => "top-down",
            Strategy::AgentWithFewestCalls => "agent-with-fewest-calls",
            Strategy::AgentWithLeastTalkTime => "agent-with-least-talk-time",
            Strategy::Random => "random",
            Strategy::WeightedRandom => "weighted-random",
            Strategy::RingProgressively => "ring-progressively",
            Strategy::SequentiallyByAgentOrder => "sequentially-by-agent-order",
        }
    }

    /// Whether the strategy may ring several agents for one call at once (the first
    /// answer wins, the others are cancelled).
    pub fn rings_several(self) -> bool {
        matches!(self, Strategy::RingAll | Strategy::RingProgressively)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownStrategy(pub String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown strategy `{}` (expected ", self.0)?;
        for (i, s) in Strategy::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == Strategy::ALL.len() {
                    " or "
                } else {
                    ", "
                })?;
            }
            f.write_str(s.name())?;
        }
        f.write_str(")")
    }
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(found) = Strategy::ALL.iter().find(|x| x.name() == s) {
            return Ok(*found);
        }
        match s {
            "linear" => Ok(Strategy::TopDown),
            "wrandom" => Ok(Strategy::WeightedRandom),
            other => Err(UnknownStrategy(other.to_string())),
        }
    }
}

/// Why an offer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferFailure {
    /// Rang out (ring timeout) or the phone gave up.
    NoAnswer,
    /// 486.
    Busy,
    /// 603.
    Declined,
    /// Transport or protocol failure.
    Failed,
}

/// Timers the orchestrator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// An agent has rung too long for a call.
    RingTimeout {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// Every available member failed a call: offer it again.
    Retry {
        /// The call.
        call: CallId,
    },
    /// The call's waiting time reaches the next tier, penalty or skill rule step: its
    /// limits widen and it is offered again. Asked for only while the call waits
    /// unrung; re-armed as needed.
    Widen {
        /// The call.
        call: CallId,
    },
    /// `ring-progressively`: ring one more agent for the call.
    RingMore {
        /// The call.
        call: CallId,
    },
    /// The agent's wrap-up (after-call work) is over: they can be offered calls again.
    /// Ignored unless the agent is in a wrap-up due by then.
    WrapUpEnd {
        /// The agent.
        agent: AgentId,
    },
    /// The agent's reject, busy or no-answer delay is over. Ignored unless the agent is
    /// in a delay due by then.
    DelayEnd {
        /// The agent.
        agent: AgentId,
    },
    /// The call has waited [`QueueConfig::max_wait_ms`] in its queue. Ignored unless the
    /// call is waiting with a max wait due by then.
    MaxWait {
        /// The call.
        call: CallId,
    },
    /// The queue has had no logged-in member for [`QueueConfig::max_wait_no_agent_ms`]:
    /// its callers get [`QueueConfig::empty_action`]. Ignored unless still due.
    NoAgent {
        /// The queue.
        queue: QueueId,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The agent has a reachable contact (registered). The most recent contact is rung.
    AgentOnline {
        /// The agent.
        agent: AgentId,
        /// Where to ring.
        contact: SmolStr,
    },
    /// The agent has no contact any more (unregistered or expired).
    AgentOffline {
        /// The agent.
        agent: AgentId,
    },
    /// The agent (un)paused: paused agents are not offered calls. Pausing sets the
    /// status to `OnBreak { reason: "paused" }`; unpausing sets it to `Available` (an
    /// agent `AvailableOnDemand` stays so). See [`Input::AgentStatus`].
    AgentPaused {
        /// The agent.
        agent: AgentId,
        /// Paused or not.
        paused: bool,
    },
    /// The agent's status was set (by the agent or a supervisor). Only `Available` and
    /// `AvailableOnDemand` agents are offered calls; an `AvailableOnDemand` agent is put
    /// `OnBreak { reason: "on-demand" }` when a connected call of theirs ends. Setting
    /// `Available` or `AvailableOnDemand` resets the consecutive no-answer count.
    /// [`Output::AgentStatusChanged`] is emitted if the status changed.
    AgentStatus {
        /// The agent.
        agent: AgentId,
        /// The new status.
        status: AgentStatus,
    },
    /// The agent joins a queue, or changes their level, position or penalty in it.
    /// Routing reflects it at once. Unknown agents or queues are ignored.
    QueueLogin {
        /// The agent.
        agent: AgentId,
        /// The queue and the membership details.
        membership: Membership,
    },
    /// The agent leaves a queue. Calls already ringing the agent go on.
    QueueLogout {
        /// The agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
    },
    /// The waiting caller asked to be called back: the call keeps its place and
    /// seniority; when an agent is picked for it, only one is, and it is reserved
    /// ([`Output::Callback`]) instead of rung. Rings in progress for it are cancelled.
    CallbackRequested {
        /// The call.
        call: CallId,
    },
    /// The customer answered the callback: the reserved agent is rung
    /// ([`Output::Ring`], with the queue's ring timeout from now). From then on the
    /// call is an ordinary one. A callback not yet reserved is routed as an ordinary call.
    CallbackAnswered {
        /// The call.
        call: CallId,
    },
    /// The customer did not answer the callback: the reserved agent is released (no
    /// delay, no no-answer count) and the call removed ([`Output::Removed`] with
    /// [`RejectCause::CallbackFailed`]).
    CallbackFailed {
        /// The call.
        call: CallId,
    },
    /// A call admitted to a queue (see [`Orchestrator::admit`]) was answered and is on
    /// its way there (waiting for the caller's ACK, say): until it is queued
    /// ([`Input::CallQueued`]) or ends ([`Input::CallEnded`]) it counts against the
    /// queue's [`max_len`](QueueConfig::max_len), for admissions and for overflows into
    /// the queue alike. Ignored for an unknown queue or a call already queued.
    CallArriving {
        /// The call.
        call: CallId,
        /// The queue it was admitted to.
        queue: QueueId,
    },
    /// A call entered a queue (answered, hearing music). Same as
    /// [`Input::CallQueuedWith`] with default [`CallRouting`].
    CallQueued {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
    },
    /// A call entered a queue, with its own routing data: extra required skills,
    /// priority, original entry time.
    CallQueuedWith {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
        /// Routing data.
        routing: CallRouting,
    },
    /// An agent answered a call rung by a [`Output::Ring`].
    OfferAnswered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// An offer failed.
    OfferFailed {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// Why.
        why: OfferFailure,
    },
    /// The customer hung up (or the call ended for another reason) — whatever state the
    /// call was in: waiting (abandoned), ringing agents, or connected. For a connected
    /// call, the time since the answer is added to the agent's talk time.
    CallEnded {
        /// The call.
        call: CallId,
    },
    /// A timer fired.
    Timer(Timer),
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Ring an agent for a call (the agent is now reserved for it).
    Ring {
        /// The call.
        call: CallId,
        /// The queue it waits in.
        queue: QueueId,
        /// The agent.
        agent: AgentId,
        /// Where.
        contact: SmolStr,
    },
    /// Stop ringing an agent for a call (CANCEL): ring-all losers, ring timeouts,
    /// customers who hung up.
    CancelRing {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The call is connected to this agent; it has left its queue.
    Assigned {
        /// The call.
        call: CallId,
        /// The queue it left.
        queue: QueueId,
        /// The agent.
        agent: AgentId,
        /// Time it waited in the queue.
        waited_ms: Millis,
    },
    /// The call left its queue unanswered (the customer hung up).
    Abandoned {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
        /// Time it waited.
        waited_ms: Millis,
    },
    /// Start a timer, firing at `at`.
    StartTimer {
        /// The timer.
        timer: Timer,
        /// When.
        at: Millis,
    },
    /// Cancel a timer.
    CancelTimer {
        /// The timer.
        timer: Timer,
    },
    /// The orchestrator changed an agent's status (automatic break after
    /// `max_no_answer` unanswered offers, on-demand agent after a call), or an input
    /// changed it.
    AgentStatusChanged {
        /// The agent.
        agent: AgentId,
        /// The new status.
        status: AgentStatus,
    },
    /// The call left queue `from` (or was refused by it) and the orchestrator moved it
    /// into queue `to`, keeping its priority, its own required skills and its
    /// seniority; it is routed there. Further `Overflowed` or a [`Output::Removed`]
    /// may follow in the same output (overflow chains).
    Overflowed {
        /// The call.
        call: CallId,
        /// The queue it left.
        from: QueueId,
        /// The queue it is now in.
        to: QueueId,
        /// Why it left.
        reason: RejectCause,
        /// Time it waited in `from` (0 if refused on joining).
        waited_ms: Millis,
    },
    /// The call left its queue (or was refused by it) and is no longer known to the
    /// orchestrator: the engine plays the prompt, if any, and hangs up.
    Removed {
        /// The call.
        call: CallId,
        /// The queue it left.
        queue: QueueId,
        /// Why.
        reason: RejectCause,
        /// A prompt to play before hanging up.
        prompt: Option<SmolStr>,
        /// Time it waited in the queue (0 if refused on joining).
        waited_ms: Millis,
    },
    /// A callback ([`Input::CallbackRequested`]): the agent is reserved for the call
    /// (counts as a call, like a ringing one); call the customer back, then report
    /// [`Input::CallbackAnswered`] or [`Input::CallbackFailed`].
    Callback {
        /// The call.
        call: CallId,
        /// The queue it waits in.
        queue: QueueId,
        /// The reserved agent.
        agent: AgentId,
    },
}

/// Why a call was refused by a queue or left it (other than answered or abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCause {
    /// The queue was full ([`QueueConfig::max_len`]; SIP 486 before answering).
    Full,
    /// The queue was empty ([`QueueConfig::join_empty`],
    /// [`QueueConfig::leave_when_empty`]; SIP 480 before answering).
    Empty,
    /// The queue has had no logged-in member for
    /// [`QueueConfig::max_wait_no_agent_ms`].
    NoAgent,
    /// The caller waited [`QueueConfig::max_wait_ms`].
    MaxWait,
    /// The customer did not answer the callback ([`Input::CallbackFailed`]).
    CallbackFailed,
    /// An overflow would have sent the call to a queue it was already in.
    OverflowLoop,
    /// An overflow (or [`Orchestrator::admit`]) named an unknown queue.
    UnknownQueue,
}

/// Whether a call may join a queue ([`Orchestrator::admit`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "admission", rename_all = "snake_case")]
pub enum Admission {
    /// It would join the queue.
    Join,
    /// It would be refused (or, following overflows, end up refused).
    Reject {
        /// Why.
        reason: RejectCause,
    },
    /// It would overflow and join this queue (the last of an overflow chain).
    Overflow {
        /// The queue it would end up in.
        queue: QueueId,
    },
}

/// What an agent is doing (the events crate's type: one definition for the engine and
/// its subscribers). `Reserved`: for a callback ([`Output::Callback`]); with several
/// calls, the first that applies of on call, ringing, reserved.
pub type Activity = call_engine_events::AgentActivity;

/// An agent as the engine shows it: status, activity, contact, queues, counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentSnapshot {
    /// The agent.
    pub id: AgentId,
    /// The chosen status.
    pub status: AgentStatus,
    /// The registered contact, if online.
    pub contact: Option<SmolStr>,
    /// Queues the agent is a member of now.
    pub queues: Vec<QueueId>,
    /// Counters and activity.
    pub stats: AgentStats,
}

/// An agent's counters, as the strategies see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentStats {
    /// Calls answered since the orchestrator started.
    pub answered: u64,
    /// Cumulative talk time (answer to end) of finished calls.
    pub talk_ms: Millis,
    /// When the agent last became free (or came online).
    pub idle_since: Millis,
    /// Calls ringing, reserved or connected now.
    pub calls: usize,
    /// What the agent is doing.
    pub activity: Activity,
    /// Consecutive unanswered offers (see [`AgentProfile::max_no_answer`]).
    pub no_answers: u32,
    /// End of the reject/busy/no-answer delay in progress.
    pub delayed_until: Option<Millis>,
    /// End of the wrap-up in progress.
    pub wrap_up_until: Option<Millis>,
}

// ---------------------------------------------------------------------------------------
// State.

/// Skill index that no agent has (more distinct skill names than fit in a `u16`).
const UNKNOWN_SKILL: u16 = u16::MAX;

#[derive(Debug, Clone)]
struct AgentState {
    id: AgentId,
    contact: Option<SmolStr>,
    status: AgentStatus,
    /// Configuration order (member order among equal positions).
    order: u32,
    max_calls: u16,
    /// Calls ringing or connected.
    calls: Vec<CallId>,
    /// (skill index, level ≥ 1), sorted by skill.
    skills: Vec<(u16, u8)>,
    /// Indices of the queues the agent is a member of.
    queues: Vec<u32>,
    /// (queue, member index) of each membership, to keep [`Member`] snapshots current.
    slots: Vec<(u32, u32)>,
    /// The agent's own wrap-up time (overrides the queue's).
    wrap_up_ms: Option<Millis>,
    /// In wrap-up until then (a [`Timer::WrapUpEnd`] is armed).
    wrap_up_until: Option<Millis>,
    /// In a reject/busy/no-answer delay until then (a [`Timer::DelayEnd`] is armed).
    delay_until: Option<Millis>,
    reject_delay_ms: Millis,
    busy_delay_ms: Millis,
    no_answer_delay_ms: Millis,
    max_no_answer: u32,
    /// Consecutive unanswered offers.
    no_answers: u32,
}

/// Whether a status takes calls.
fn takes_calls(s: &AgentStatus) -> bool {
    matches!(s, AgentStatus::Available | AgentStatus::AvailableOnDemand)
}

impl AgentState {
    fn available(&self) -> bool {
        self.contact.is_some()
            && takes_calls(&self.status)
            && self.wrap_up_until.is_none()
            && self.delay_until.is_none()
            && self.calls.len() < usize::from(self.max_calls)
    }

    /// Online and not logged out ([`EmptyCondition::NoMembers`]).
    fn logged_in(&self) -> bool {
        self.contact.is_some() && self.status != AgentStatus::LoggedOut
    }

    /// Online with a status that takes calls ([`EmptyCondition::NoneAvailable`]).
    fn staffed(&self) -> bool {
        self.contact.is_some() && takes_calls(&self.status)
    }

    fn status(&self) -> Status {
        if self.status == AgentStatus::LoggedOut {
            Status::LoggedOut
        } else if self.contact.is_none() {
            Status::Offline
        } else if !takes_calls(&self.status) {
            Status::Paused
        } else if self.wrap_up_until.is_some() {
            Status::WrapUp
        } else if self.delay_until.is_some() {
            Status::Delayed
        } else if self.calls.len() >= usize::from(self.max_calls) {
            Status::Full
        } else {
            Status::Free
        }
    }
}

/// The counters strategies rank by, apart from the rest of the agent's state: the
/// routing loop reads them only for eligible members, from a dense array.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// When the agent last became free (or came online).
    idle_since: Millis,
    answered: u64,
    talk_ms: Millis,
}

/// An agent's status as the routing loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Free,
    Offline,
    LoggedOut,
    /// On a break.
    Paused,
    /// Reject, busy or no-answer delay.
    Delayed,
    /// After-call work.
    WrapUp,
    /// Ringing or talking up to `max_calls`.
    Full,
}

/// Skills per queue whose member levels are precomputed in [`Member::qlevels`].
const QSKILLS: usize = 4;

/// A membership, with a snapshot of what routing needs from the agent (status, calls,
/// levels in the queue's required skills), so that evaluating a queue's members is a
/// sequential scan rather than a cache miss per member.
#[derive(Debug, Clone, Copy)]
struct Member {
    agent: u32,
    level: u8,
    status: Status,
    calls: u16,
    max_calls: u16,
    position: u32,
    penalty: u32,
    /// The agent's level in the queue's first [`QSKILLS`] required skills.
    qlevels: [u8; QSKILLS],
}

/// A waiting call's place in its queue: priority first, then seniority, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WaitKey {
    prio: Reverse<i32>,
    entered: Millis,
    seq: u64,
    call: CallId,
}

/// A call's place in the global dispatch order (across queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GKey {
    prio: Reverse<i32>,
    entered: Millis,
    queue: u32,
    seq: u64,
    call: CallId,
}

#[derive(Debug, Clone)]
struct QueueState {
    config: QueueConfig,
    /// Members by position, then configuration order.
    members: Vec<Member>,
    waiting: BTreeSet<WaitKey>,
    /// Calls on their way ([`Input::CallArriving`]): they count against `max_len`.
    arriving: usize,
    /// Round robin: index (in `members`) of the member offered last.
    last_offered: Option<u32>,
    /// Members available now (any tier, any skill).
    available: u32,
    /// The queue's required skills, sorted by skill.
    reqs: Vec<Req>,
    /// Rules sorted by `after_ms`.
    tiers: Vec<(Millis, u8)>,
    penalties: Vec<(Millis, u32)>,
    relax: Vec<(Millis, u8)>,
    /// Distinct positive steps of the tier and penalty rules, sorted.
    steps: Vec<Millis>,
    /// The same plus the skill widening steps.
    skill_steps: Vec<Millis>,
    /// Members online and not logged out.
    logged_in: u32,
    /// Members online with a status that takes calls.
    staffed: u32,
    /// Since when no member is logged in (`None`: some are, or not known since when:
    /// the clock then starts when a caller joins).
    memberless_since: Option<Millis>,
    /// When the armed [`Timer::NoAgent`] fires.
    no_agent_at: Option<Millis>,
}

impl QueueState {
    fn allowed_level(&self, wait: Millis) -> Option<u8> {
        if self.tiers.is_empty() {
            return None;
        }
        Some(
            self.tiers
                .iter()
                .filter(|(t, _)| *t <= wait)
                .fold(1, |m, (_, l)| m.max(*l)),
        )
    }

    fn max_penalty(&self, wait: Millis) -> Option<u32> {
        let mut m = self.config.max_penalty;
        for (t, p) in &self.penalties {
            if *t <= wait {
                m = Some(*p);
            }
        }
        m
    }

    fn lowered_by(&self, wait: Millis) -> u8 {
        let mut m = 0;
        for (t, l) in &self.relax {
            if *t <= wait {
                m = *l;
            }
        }
        m
    }

    fn next_widening(&self, since: Millis, wait: Millis, skills: bool) -> Option<Millis> {
        let steps = if skills {
            &self.skill_steps
        } else {
            &self.steps
        };
        let i = steps.partition_point(|s| *s <= wait);
        steps.get(i).map(|s| since.saturating_add(*s))
    }
}

#[derive(Debug, Clone, Default)]
struct Waiting {
    queue: u32,
    prio: i32,
    entered: Millis,
    seq: u64,
    /// When it entered this queue.
    since: Millis,
    /// Effective required skills (queue's and call's), sorted by skill.
    reqs: Vec<Req>,
    /// The call's own required skills (kept across overflows).
    call_reqs: Vec<Req>,
    /// Queues it was in (overflow loop guard).
    visited: Vec<u32>,
    /// When its [`Timer::MaxWait`] fires.
    max_wait_at: Option<Millis>,
    /// A callback ([`Input::CallbackRequested`]).
    callback: bool,
    /// The agent reserved for the callback.
    reserved: Option<u32>,
    /// Agents ringing for it now.
    ringing: Vec<u32>,
    /// Agents who failed it (sorted); skipped until every eligible member has been tried.
    tried: Vec<u32>,
    retry_armed: bool,
    widen_armed: bool,
    ring_more_armed: bool,
    /// Sequentially-by-agent-order: member index offered last for this call.
    cursor: Option<u32>,
    /// Its explanation slot.
    log: LogRef,
}

impl Waiting {
    /// Neither ringing anyone nor holding a reservation: routable.
    fn idle(&self) -> bool {
        self.ringing.is_empty() && self.reserved.is_none()
    }

    fn key(&self, call: CallId) -> WaitKey {
        WaitKey {
            prio: Reverse(self.prio),
            entered: self.entered,
            seq: self.seq,
            call,
        }
    }

    fn gkey(&self, call: CallId) -> GKey {
        GKey {
            prio: Reverse(self.prio),
            entered: self.entered,
            queue: self.queue,
            seq: self.seq,
            call,
        }
    }
}

/// Where a call is, from the orchestrator's point of view.
#[derive(Debug, Clone)]
enum CallEntry {
    Queued(Waiting),
    Connected {
        agent: u32,
        since: Millis,
        queue: u32,
    },
}

/// The call-center policy engine. See the crate docs.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    /// Sorted by id.
    agents: Vec<AgentState>,
    /// Parallel to `agents`.
    counters: Vec<Counters>,
    agent_index: BTreeMap<AgentId, u32>,
    /// Sorted by name.
    queues: Vec<QueueState>,
    queue_index: BTreeMap<QueueId, u32>,
    calls: BTreeMap<CallId, CallEntry>,
    /// Calls on their way to a queue (index), not queued yet.
    arriving: BTreeMap<CallId, u32>,
    skill_names: Vec<SmolStr>,
    skill_index: BTreeMap<SmolStr, u16>,
    rng: SplitMix64,
    /// Arrival counter (tie-break of equal priority and entry time).
    seq: u64,
    log: ExplainLog,
    // Dispatch bookkeeping and scratch buffers, reused across calls to `handle`.
    /// Queues where an agent became available since the last dispatch.
    scan: Vec<bool>,
    any_scan: bool,
    /// Queues whose logged-in or staffed count changed (empty-queue policies).
    check: Vec<bool>,
    any_check: bool,
    /// Calls that became routable (queued, retry, widening, all rings failed).
    dirty: Vec<CallId>,
    order: Vec<(GKey, bool)>,
    scratch: Vec<Cand>,
    /// Scratch indices of the chosen, then (agent, member) rung.
    chosen: Vec<u32>,
    rang: Vec<(u32, u32)>,
    spare: Vec<Waiting>,
}

/// What happens to a call refused by or leaving a queue (from [`QueueAction`] or
/// [`FullAction`]).
#[derive(Debug, Clone)]
enum Act {
    Hangup(Option<SmolStr>),
    Overflow(QueueId),
}

impl Act {
    fn of(a: &QueueAction) -> Act {
        match a {
            QueueAction::Hangup { prompt } => Act::Hangup(prompt.clone()),
            QueueAction::Overflow { queue } => Act::Overflow(queue.clone()),
        }
    }
}

/// Keeps a count of members meeting a condition.
fn adjust(n: &mut u32, before: bool, after: bool) {
    match (before, after) {
        (false, true) => *n = n.saturating_add(1),
        (true, false) => *n = n.saturating_sub(1),
        _ => {}
    }
}

fn sorted_rules<T: Copy>(rules: impl Iterator<Item = (Millis, T)>) -> Vec<(Millis, T)> {
    let mut v: Vec<(Millis, T)> = rules.collect();
    v.sort_by_key(|(t, _)| *t);
    v
}

/// Checks a member against the requirements: levels of the queue's skills come from the
/// member's snapshot, others from the agent's skills (sorted by skill). Adds the agent's
/// levels in the required skills to `score`. Returns the first failure.
fn skill_check(
    m: &Member,
    agents: &[AgentState],
    reqs: &[Req],
    lowered_by: u8,
    score: &mut u16,
) -> Option<V> {
    let mut fail = None;
    for r in reqs {
        let level = match m.qlevels.get(usize::from(r.slot)) {
            Some(l) => *l,
            None => agents
                .get(m.agent as usize)
                .and_then(|a| {
                    a.skills
                        .binary_search_by_key(&r.skill, |(s, _)| *s)
                        .ok()
                        .and_then(|i| a.skills.get(i))
                })
                .map_or(0, |(_, l)| *l),
        };
        *score = score.saturating_add(u16::from(level));
        let min = r.min.saturating_sub(lowered_by);
        if fail.is_none() && level < min {
            fail = Some(if level == 0 {
                V::LacksSkill {
                    skill: r.skill,
                    required: min,
                }
            } else {
                V::SkillTooLow {
                    skill: r.skill,
                    level,
                    required: min,
                }
            });
        }
    }
    fail
}

/// `weighted-random`: weight ∝ 1 / (penalty + 1) (720720 is divisible by 1..=16).
fn penalty_weight(penalty: u32) -> u64 {
    (720_720 / (u64::from(penalty) + 1)).max(1)
}

impl Orchestrator {
    /// An orchestrator for these queues and agents (agents start offline), with seed 0
    /// and default explanation bounds.
    pub fn new(queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> Self {
        Self::with_config(OrchestratorConfig::new(
            queues,
            agents.into_iter().map(AgentProfile::from).collect(),
        ))
    }

    /// An orchestrator from a full configuration (agents start offline). A queue or an
    /// agent named twice: the later one counts. Memberships of unknown queues are
    /// ignored.
    pub fn with_config(config: OrchestratorConfig) -> Self {
        let OrchestratorConfig {
            queues,
            agents,
            seed,
            explain,
        } = config;
        let mut skill_names = Vec::new();
        let mut skill_index = BTreeMap::new();
        let mut intern =
            |name: &SmolStr| -> u16 { intern_skill(&mut skill_names, &mut skill_index, name) };

        // Queues, by name.
        let mut qconfigs: BTreeMap<QueueId, QueueConfig> = BTreeMap::new();
        for q in queues {
            qconfigs.insert(q.name.clone(), q);
        }
        let mut qstates: Vec<QueueState> = Vec::with_capacity(qconfigs.len());
        let mut queue_index = BTreeMap::new();
        for (i, (name, c)) in qconfigs.into_iter().enumerate() {
            queue_index.insert(name, i as u32);
            let mut reqs: Vec<Req> = Vec::new();
            for r in &c.required_skills {
                merge_req(&mut reqs, intern(&r.skill), r.min_level);
            }
            reqs.sort();
            for (k, r) in reqs.iter_mut().enumerate() {
                r.slot = if k < QSKILLS { k as u8 } else { NO_SLOT };
            }
            let tiers = sorted_rules(c.tier_rules.iter().map(|r| (r.after_ms, r.level)));
            let penalties =
                sorted_rules(c.penalty_rules.iter().map(|r| (r.after_ms, r.max_penalty)));
            let relax = sorted_rules(c.skill_relax.iter().map(|r| (r.after_ms, r.lower_by)));
            let mut steps: Vec<Millis> = tiers
                .iter()
                .map(|(t, _)| *t)
                .chain(penalties.iter().map(|(t, _)| *t))
                .filter(|t| *t > 0)
                .collect();
            steps.sort_unstable();
            steps.dedup();
            let mut skill_steps: Vec<Millis> = steps
                .iter()
                .copied()
                .chain(relax.iter().map(|(t, _)| *t).filter(|t| *t > 0))
                .collect();
            skill_steps.sort_unstable();
            skill_steps.dedup();
            qstates.push(QueueState {
                config: c,
                members: Vec::new(),
                waiting: BTreeSet::new(),
                arriving: 0,
                last_offered: None,
                available: 0,
                reqs,
                tiers,
                penalties,
                relax,
                steps,
                skill_steps,
                logged_in: 0,
                staffed: 0,
                memberless_since: None,
                no_agent_at: None,
            });
        }

        // Agents: the later profile of an id wins; configuration order is kept for
        // member order.
        let mut last_of: BTreeMap<AgentId, usize> = BTreeMap::new();
        for (i, a) in agents.iter().enumerate() {
            last_of.insert(a.id.clone(), i);
        }
        let agent_index: BTreeMap<AgentId, u32> = last_of
            .keys()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let mut states: Vec<Option<AgentState>> = vec![None; agent_index.len()];
        // (queue, position, configuration order, member)
        let mut members: Vec<(u32, u32, usize, Member)> = Vec::new();
        for (order, a) in agents.into_iter().enumerate() {
            if last_of.get(&a.id) != Some(&order) {
                continue;
            }
            let Some(&idx) = agent_index.get(&a.id) else {
                continue;
            };
            let mut skills: Vec<(u16, u8)> = a
                .skills
                .iter()
                .filter(|(_, l)| **l > 0)
                .map(|(s, l)| (intern(s), *l))
                .collect();
            skills.sort_unstable();
            skills.dedup_by_key(|(s, _)| *s);
            let mut queues = Vec::new();
            for m in &a.memberships {
                let Some(&qi) = queue_index.get(&m.queue) else {
                    continue;
                };
                if queues.contains(&qi) {
                    continue;
                }
                queues.push(qi);
                members.push((
                    qi,
                    m.position,
                    order,
                    Member {
                        agent: idx,
                        level: m.level,
                        status: Status::Offline,
                        calls: 0,
                        max_calls: a.max_calls,
                        position: m.position,
                        penalty: m.penalty,
                        qlevels: [0; QSKILLS],
                    },
                ));
            }
            if let Some(slot) = states.get_mut(idx as usize) {
                *slot = Some(AgentState {
                    id: a.id,
                    contact: None,
                    status: a.status,
                    order: order as u32,
                    max_calls: a.max_calls,
                    calls: Vec::new(),
                    skills,
                    queues,
                    slots: Vec::new(),
                    wrap_up_ms: a.wrap_up_ms,
                    wrap_up_until: None,
                    delay_until: None,
                    reject_delay_ms: a.reject_delay_ms,
                    busy_delay_ms: a.busy_delay_ms,
                    no_answer_delay_ms: a.no_answer_delay_ms,
                    max_no_answer: a.max_no_answer,
                    no_answers: 0,
                });
            }
        }
        members.sort_by_key(|(q, pos, order, _)| (*q, *pos, *order));
        for (qi, _, _, mut m) in members {
            let Some(q) = qstates.get_mut(qi as usize) else {
                continue;
            };
            if let Some(Some(a)) = states.get_mut(m.agent as usize) {
                for (k, r) in q.reqs.iter().take(QSKILLS).enumerate() {
                    if let (Some(slot), Ok(i)) = (
                        m.qlevels.get_mut(k),
                        a.skills.binary_search_by_key(&r.skill, |(s, _)| *s),
                    ) {
                        *slot = a.skills.get(i).map_or(0, |(_, l)| *l);
                    }
                }
                a.slots.push((qi, q.members.len() as u32));
                m.status = a.status();
            }
            q.members.push(m);
        }
        let agents: Vec<AgentState> = states.into_iter().flatten().collect();
        let counters = vec![Counters::default(); agents.len()];
        let nq = qstates.len();
        Self {
            agents,
            counters,
            agent_index,
            queues: qstates,
            queue_index,
            calls: BTreeMap::new(),
            arriving: BTreeMap::new(),
            skill_names,
            skill_index,
            rng: SplitMix64::new(seed),
            seq: 0,
            log: ExplainLog::new(explain),
            scan: vec![false; nq],
            any_scan: false,
            check: vec![false; nq],
            any_check: false,
            dirty: Vec::new(),
            order: Vec::new(),
            scratch: Vec::new(),
            chosen: Vec::new(),
            rang: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Whether a queue of that name exists.
    pub fn has_queue(&self, q: &QueueId) -> bool {
        self.queue_index.contains_key(q)
    }

    /// Whether the orchestrator holds this call (on its way, waiting, ringing, reserved
    /// or connected).
    pub fn has_call(&self, call: CallId) -> bool {
        self.calls.contains_key(&call) || self.arriving.contains_key(&call)
    }

    /// Callers waiting in a queue, head first (by priority, then entry time).
    pub fn waiting(&self, q: &QueueId) -> Vec<CallId> {
        self.queue(q)
            .map(|s| s.waiting.iter().map(|k| k.call).collect())
            .unwrap_or_default()
    }

    /// A waiting call's position in its queue (1 = head) and the queue, without listing
    /// the queue. `None` for a call that is not waiting.
    pub fn position(&self, call: CallId) -> Option<(QueueId, u32)> {
        let Some(CallEntry::Queued(w)) = self.calls.get(&call) else {
            return None;
        };
        let q = self.queues.get(w.queue as usize)?;
        let ahead = q.waiting.range(..w.key(call)).count();
        Some((
            q.config.name.clone(),
            u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1),
        ))
    }

    /// Members of a queue who are online with a status that takes calls (available or
    /// available on demand), busy or not.
    pub fn staffed(&self, q: &QueueId) -> u32 {
        self.queue(q).map(|s| s.staffed).unwrap_or(0)
    }

    /// Calls an agent is ringing for or connected to.
    pub fn agent_calls(&self, a: &AgentId) -> Vec<CallId> {
        let mut v = self.agent(a).map(|s| s.calls.clone()).unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Agents ringing for, reserved for, or connected to `call`.
    pub fn call_agents(&self, call: CallId) -> Vec<AgentId> {
        let idx: Vec<u32> = match self.calls.get(&call) {
            Some(CallEntry::Queued(w)) => w.ringing.iter().copied().chain(w.reserved).collect(),
            Some(CallEntry::Connected { agent, .. }) => vec![*agent],
            None => Vec::new(),
        };
        idx.into_iter().map(|i| self.agent_name(i)).collect()
    }

    /// Whether the agent could be offered a call now.
    pub fn agent_available(&self, a: &AgentId) -> bool {
        self.agent(a).is_some_and(AgentState::available)
    }

    /// The agent's chosen status.
    pub fn agent_status(&self, a: &AgentId) -> Option<AgentStatus> {
        self.agent(a).map(|s| s.status.clone())
    }

    /// The agent's counters (calls answered, talk time, idle since) and activity.
    pub fn agent_stats(&self, a: &AgentId) -> Option<AgentStats> {
        self.stats_of(self.agent_idx(a)?)
    }

    /// The agent's status, activity, contact, queues and counters.
    pub fn agent_snapshot(&self, a: &AgentId) -> Option<AgentSnapshot> {
        self.snapshot_of(self.agent_idx(a)?)
    }

    /// Every agent's snapshot, by id.
    pub fn agent_snapshots(&self) -> Vec<AgentSnapshot> {
        (0..self.agents.len() as u32)
            .filter_map(|i| self.snapshot_of(i))
            .collect()
    }

    /// The members of a queue now, in member order (position, then configuration
    /// order).
    pub fn members(&self, q: &QueueId) -> Vec<AgentId> {
        self.queue(q)
            .map(|s| s.members.iter().map(|m| self.agent_name(m.agent)).collect())
            .unwrap_or_default()
    }

    /// Whether a call would be admitted by a queue now, without changing anything: the
    /// same rules [`Input::CallQueued`] applies (empty queue — `join_empty`,
    /// `leave_when_empty`, `max_wait_no_agent_ms` —, then full, then a zero max wait),
    /// following overflow chains. Lets the engine refuse a call before answering it
    /// (486 for [`RejectCause::Full`], 480 for [`RejectCause::Empty`]). An unknown
    /// queue gives [`RejectCause::UnknownQueue`] (queueing into one is ignored). Calls
    /// on their way ([`Input::CallArriving`]) count as waiting: a burst of callers
    /// cannot answer its way past `max_len`.
    pub fn admit(&self, queue: &QueueId, now: Millis) -> Admission {
        let Some(&first) = self.queue_index.get(queue) else {
            return Admission::Reject {
                reason: RejectCause::UnknownQueue,
            };
        };
        let mut qi = first;
        let mut visited = Vec::new();
        loop {
            let Some((cause, act)) = self.admission(qi, now) else {
                return if qi == first {
                    Admission::Join
                } else {
                    Admission::Overflow {
                        queue: self.queue_name(qi),
                    }
                };
            };
            visited.push(qi);
            match act {
                Act::Hangup(_) => return Admission::Reject { reason: cause },
                Act::Overflow(to) => match self.queue_index.get(&to) {
                    None => {
                        return Admission::Reject {
                            reason: RejectCause::UnknownQueue,
                        }
                    }
                    Some(t) if visited.contains(t) => {
                        return Admission::Reject {
                            reason: RejectCause::OverflowLoop,
                        }
                    }
                    Some(&t) => qi = t,
                },
            }
        }
    }

    /// The routing decisions kept for a call, oldest first: the limits in force, every
    /// candidate considered with its scores and verdict, and the outcome. Bounded by
    /// [`ExplainConfig`]; kept after the call ends until newer calls push it out.
    pub fn explain(&self, call: CallId) -> Vec<Decision> {
        self.log.explain(call, self)
    }

    /// Handles one input at time `now` and returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Millis) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_into(input, now, &mut out);
        out
    }

    /// Like [`Orchestrator::handle`], appending to `out` (reuse it to avoid an
    /// allocation per input).
    pub fn handle_into(&mut self, input: Input, now: Millis, out: &mut Vec<Output>) {
        match input {
            Input::AgentOnline { agent, contact } => {
                if let Some(i) = self.agent_idx(&agent) {
                    let was_offline = self
                        .agents
                        .get(i as usize)
                        .is_some_and(|a| a.contact.is_none());
                    if was_offline {
                        if let Some(c) = self.counters.get_mut(i as usize) {
                            c.idle_since = now;
                        }
                    }
                    self.update_agent(i, |a| a.contact = Some(contact));
                }
            }
            Input::AgentOffline { agent } => {
                if let Some(i) = self.agent_idx(&agent) {
                    self.update_agent(i, |a| a.contact = None);
                }
            }
            Input::AgentPaused { agent, paused } => {
                if let Some(i) = self.agent_idx(&agent) {
                    let status = if paused {
                        AgentStatus::OnBreak {
                            reason: SmolStr::new_static("paused"),
                        }
                    } else if self
                        .agents
                        .get(i as usize)
                        .is_some_and(|a| a.status == AgentStatus::AvailableOnDemand)
                    {
                        AgentStatus::AvailableOnDemand
                    } else {
                        AgentStatus::Available
                    };
                    self.set_status(i, status, out);
                }
            }
            Input::AgentStatus { agent, status } => {
                if let Some(i) = self.agent_idx(&agent) {
                    self.set_status(i, status, out);
                }
            }
            Input::QueueLogin { agent, membership } => self.queue_login(&agent, &membership),
            Input::QueueLogout { agent, queue } => self.queue_logout(&agent, &queue),
            Input::CallArriving { call, queue } => self.call_arriving(call, &queue),
            Input::CallQueued { call, queue } => self.enqueue(call, &queue, None, now, out),
            Input::CallQueuedWith {
                call,
                queue,
                routing,
            } => self.enqueue(call, &queue, Some(&routing), now, out),
            Input::OfferAnswered { call, agent } => self.answered(call, &agent, now, out),
            Input::OfferFailed { call, agent, why } => {
                if let Some(i) = self.agent_idx(&agent) {
                    self.offer_failed(call, i, why, now, out);
                }
            }
            Input::CallbackRequested { call } => self.callback_requested(call, now, out),
            Input::CallbackAnswered { call } => self.callback_answered(call, now, out),
            Input::CallbackFailed { call } => self.callback_failed(call, now, out),
            Input::Timer(Timer::RingTimeout { call, agent }) => {
                // Only if still ringing: a stale timer changes nothing.
                if let Some(i) = self.agent_idx(&agent) {
                    let ringing = matches!(self.calls.get(&call),
                        Some(CallEntry::Queued(w)) if w.ringing.contains(&i));
                    if ringing {
                        out.push(Output::CancelRing { call, agent });
                        self.offer_failed(call, i, OfferFailure::NoAnswer, now, out);
                    }
                }
            }
            Input::Timer(Timer::Retry { call }) => {
                if let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) {
                    w.retry_armed = false;
                    w.tried.clear();
                    self.dirty.push(call);
                }
            }
            Input::Timer(Timer::Widen { call }) => {
                if let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) {
                    if w.widen_armed {
                        w.widen_armed = false;
                        self.dirty.push(call);
                    }
                }
            }
            Input::Timer(Timer::RingMore { call }) => {
                if let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) {
                    if w.ring_more_armed {
                        w.ring_more_armed = false;
                        if !w.ringing.is_empty() {
                            self.try_route(call, now, true, out);
                        }
                    }
                }
            }
            Input::Timer(Timer::WrapUpEnd { agent }) => {
                // Only if a wrap-up is due by now: a stale timer changes nothing.
                if let Some(i) = self.agent_idx(&agent) {
                    let due = self
                        .agents
                        .get(i as usize)
                        .and_then(|a| a.wrap_up_until)
                        .is_some_and(|until| until <= now);
                    if due {
                        let mut idle = false;
                        self.update_agent(i, |a| {
                            a.wrap_up_until = None;
                            idle = a.calls.is_empty();
                        });
                        if idle {
                            if let Some(c) = self.counters.get_mut(i as usize) {
                                c.idle_since = now;
                            }
                        }
                    }
                }
            }
            Input::Timer(Timer::DelayEnd { agent }) => {
                // Only if a delay is due by now: a stale timer changes nothing.
                if let Some(i) = self.agent_idx(&agent) {
                    let due = self
                        .agents
                        .get(i as usize)
                        .and_then(|a| a.delay_until)
                        .is_some_and(|until| until <= now);
                    if due {
                        self.update_agent(i, |a| a.delay_until = None);
                    }
                }
            }
            Input::Timer(Timer::MaxWait { call }) => {
                let due = match self.calls.get_mut(&call) {
                    Some(CallEntry::Queued(w)) if w.max_wait_at.is_some_and(|at| at <= now) => {
                        // It fired: nothing to cancel.
                        w.max_wait_at = None;
                        Some(w.queue)
                    }
                    _ => None,
                };
                if let Some(qi) = due {
                    let act = self
                        .queues
                        .get(qi as usize)
                        .map_or(Act::Hangup(None), |q| Act::of(&q.config.max_wait_action));
                    self.leave(call, RejectCause::MaxWait, act, now, out);
                }
            }
            Input::Timer(Timer::NoAgent { queue }) => {
                if let Some(&qi) = self.queue_index.get(&queue) {
                    let due = self.queues.get_mut(qi as usize).and_then(|q| {
                        let due = q.logged_in == 0 && q.no_agent_at.is_some_and(|at| at <= now);
                        if due {
                            q.no_agent_at = None;
                            Some(Act::of(&q.config.empty_action))
                        } else {
                            None
                        }
                    });
                    if let Some(act) = due {
                        self.empty_queue(qi, RejectCause::NoAgent, act, now, out);
                    }
                }
            }
            Input::CallEnded { call } => self.call_ended(call, now, out),
        }
        self.check_queues(now, out);
        self.dispatch(now, out);
    }

    fn agent_idx(&self, a: &AgentId) -> Option<u32> {
        self.agent_index.get(a).copied()
    }

    fn agent(&self, a: &AgentId) -> Option<&AgentState> {
        self.agent_idx(a).and_then(|i| self.agents.get(i as usize))
    }

    fn queue(&self, q: &QueueId) -> Option<&QueueState> {
        self.queue_index
            .get(q)
            .and_then(|&i| self.queues.get(i as usize))
    }

    fn agent_name(&self, i: u32) -> AgentId {
        self.agents
            .get(i as usize)
            .map(|a| a.id.clone())
            .unwrap_or_else(|| AgentId::new("?"))
    }

    fn queue_name(&self, i: u32) -> QueueId {
        self.queues
            .get(i as usize)
            .map(|q| q.config.name.clone())
            .unwrap_or_else(|| QueueId::new("?"))
    }

    fn activity(&self, i: u32) -> Activity {
        let Some(a) = self.agents.get(i as usize) else {
            return Activity::Idle;
        };
        let (mut on_call, mut ringing, mut reserved) = (false, false, false);
        for c in &a.calls {
            match self.calls.get(c) {
                Some(CallEntry::Connected { agent, .. }) if *agent == i => on_call = true,
                Some(CallEntry::Queued(w)) if w.reserved == Some(i) => reserved = true,
                Some(CallEntry::Queued(_)) => ringing = true,
                _ => {}
            }
        }
        if on_call {
            Activity::OnCall
        } else if ringing {
            Activity::Ringing
        } else if reserved {
            Activity::Reserved
        } else if a.wrap_up_until.is_some() {
            Activity::WrapUp
        } else if a.delay_until.is_some() {
            Activity::Delayed
        } else {
            Activity::Idle
        }
    }

    fn stats_of(&self, i: u32) -> Option<AgentStats> {
        let s = self.agents.get(i as usize)?;
        let c = self.counters.get(i as usize)?;
        Some(AgentStats {
            answered: c.answered,
            talk_ms: c.talk_ms,
            idle_since: c.idle_since,
            calls: s.calls.len(),
            activity: self.activity(i),
            no_answers: s.no_answers,
            delayed_until: s.delay_until,
            wrap_up_until: s.wrap_up_until,
        })
    }

    fn snapshot_of(&self, i: u32) -> Option<AgentSnapshot> {
        let a = self.agents.get(i as usize)?;
        let mut queues: Vec<QueueId> = a.queues.iter().map(|&q| self.queue_name(q)).collect();
        queues.sort();
        Some(AgentSnapshot {
            id: a.id.clone(),
            status: a.status.clone(),
            contact: a.contact.clone(),
            queues,
            stats: self.stats_of(i)?,
        })
    }

    /// Changes an agent and keeps the per-queue counts (available, logged in, staffed);
    /// an agent who becomes available has their queues scanned at the next dispatch; a
    /// queue whose logged-in or staffed count changed is checked for its empty-queue
    /// policies.
    fn update_agent(&mut self, i: u32, f: impl FnOnce(&mut AgentState)) {
        let Some(a) = self.agents.get_mut(i as usize) else {
            return;
        };
        let before = (a.available(), a.logged_in(), a.staffed());
        f(a);
        let after = (a.available(), a.logged_in(), a.staffed());
        sync_members(a, &mut self.queues);
        if before == after {
            return;
        }
        for &qi in &a.queues {
            if let Some(q) = self.queues.get_mut(qi as usize) {
                adjust(&mut q.available, before.0, after.0);
                adjust(&mut q.logged_in, before.1, after.1);
                adjust(&mut q.staffed, before.2, after.2);
            }
            if after.0 && !before.0 {
                if let Some(s) = self.scan.get_mut(qi as usize) {
                    *s = true;
                    self.any_scan = true;
                }
            }
            if before.1 != after.1 || before.2 != after.2 {
                if let Some(c) = self.check.get_mut(qi as usize) {
                    *c = true;
                    self.any_check = true;
                }
            }
        }
    }

    /// Sets an agent's status; reports a change. Setting a status that takes calls
    /// resets the no-answer count.
    fn set_status(&mut self, i: u32, status: AgentStatus, out: &mut Vec<Output>) {
        let Some(a) = self.agents.get_mut(i as usize) else {
            return;
        };
        if takes_calls(&status) {
            a.no_answers = 0;
        }
        if a.status == status {
            return;
        }
        let agent = a.id.clone();
        let s = status.clone();
        self.update_agent(i, |a| a.status = s);
        out.push(Output::AgentStatusChanged { agent, status });
    }

    /// Frees an agent from a call (ringing, reserved or connected).
    fn release_agent(&mut self, agent: u32, call: CallId, now: Millis) {
        let mut idle = false;
        self.update_agent(agent, |a| {
            if let Some(p) = a.calls.iter().position(|c| *c == call) {
                a.calls.swap_remove(p);
                idle = a.calls.is_empty();
            }
        });
        if idle {
            if let Some(c) = self.counters.get_mut(agent as usize) {
                c.idle_since = now;
            }
        }
    }

    fn mark_check(&mut self, qi: u32) {
        if let Some(c) = self.check.get_mut(qi as usize) {
            *c = true;
            self.any_check = true;
        }
    }

    /// Rebuilds a queue's member order (position, then configuration order) after a
    /// membership change, and what refers to member indices: the agents' slots, the
    /// round-robin last offered, the calls' sequential cursors. A cursor or last
    /// offered on a member who left moves to the member just before in the new order.
    fn resort_members(&mut self, qi: u32) {
        let Self {
            agents,
            queues,
            calls,
            ..
        } = self;
        let Some(q) = queues.get_mut(qi as usize) else {
            return;
        };
        let key = |m: &Member| {
            (
                m.position,
                agents.get(m.agent as usize).map_or(u32::MAX, |a| a.order),
                m.agent,
            )
        };
        let old: Vec<(u32, u32, u32)> = q.members.iter().map(key).collect();
        q.members.sort_by_key(key);
        let new: Vec<(u32, u32, u32)> = q.members.iter().map(key).collect();
        let remap = |idx: Option<u32>| -> Option<u32> {
            let k = old.get(idx? as usize)?;
            let n = new.partition_point(|x| x <= k);
            n.checked_sub(1).map(|n| n as u32)
        };
        q.last_offered = remap(q.last_offered);
        for k in &q.waiting {
            if let Some(CallEntry::Queued(w)) = calls.get_mut(&k.call) {
                if w.cursor.is_some() {
                    w.cursor = remap(w.cursor);
                }
            }
        }
        for (mi, m) in q.members.iter().enumerate() {
            if let Some(a) = agents.get_mut(m.agent as usize) {
                for slot in a.slots.iter_mut() {
                    if slot.0 == qi {
                        slot.1 = mi as u32;
                    }
                }
            }
        }
    }

    /// [`Input::QueueLogin`].
    fn queue_login(&mut self, agent: &AgentId, m: &Membership) {
        let (Some(ai), Some(&qi)) = (self.agent_idx(agent), self.queue_index.get(&m.queue)) else {
            return;
        };
        let Self { agents, queues, .. } = self;
        let (Some(a), Some(q)) = (agents.get_mut(ai as usize), queues.get_mut(qi as usize)) else {
            return;
        };
        let mut added = false;
        if let Some(&(_, mi)) = a.slots.iter().find(|(x, _)| *x == qi) {
            if let Some(member) = q.members.get_mut(mi as usize) {
                member.level = m.level;
                member.position = m.position;
                member.penalty = m.penalty;
            }
        } else {
            let mut member = Member {
                agent: ai,
                level: m.level,
                status: a.status(),
                calls: u16::try_from(a.calls.len()).unwrap_or(u16::MAX),
                max_calls: a.max_calls,
                position: m.position,
                penalty: m.penalty,
                qlevels: [0; QSKILLS],
            };
            for (k, r) in q.reqs.iter().take(QSKILLS).enumerate() {
                if let (Some(slot), Ok(i)) = (
                    member.qlevels.get_mut(k),
                    a.skills.binary_search_by_key(&r.skill, |(s, _)| *s),
                ) {
                    *slot = a.skills.get(i).map_or(0, |(_, l)| *l);
                }
            }
            a.queues.push(qi);
            a.slots.push((qi, q.members.len() as u32));
            q.members.push(member);
            adjust(&mut q.available, false, a.available());
            adjust(&mut q.logged_in, false, a.logged_in());
            adjust(&mut q.staffed, false, a.staffed());
            added = true;
        }
        if added {
            self.mark_check(qi);
        }
        self.resort_members(qi);
        // A waiting call may now reach this agent (another level or penalty).
        if let Some(s) = self.scan.get_mut(qi as usize) {
            *s = true;
            self.any_scan = true;
        }
    }

    /// [`Input::QueueLogout`].
    fn queue_logout(&mut self, agent: &AgentId, queue: &QueueId) {
        let (Some(ai), Some(&qi)) = (self.agent_idx(agent), self.queue_index.get(queue)) else {
            return;
        };
        let Self {
            agents,
            queues,
            calls,
            ..
        } = self;
        let (Some(a), Some(q)) = (agents.get_mut(ai as usize), queues.get_mut(qi as usize)) else {
            return;
        };
        let Some(p) = a.slots.iter().position(|(x, _)| *x == qi) else {
            return;
        };
        let (_, mi) = a.slots.swap_remove(p);
        a.queues.retain(|x| *x != qi);
        if (mi as usize) < q.members.len() {
            q.members.remove(mi as usize);
        }
        adjust(&mut q.available, a.available(), false);
        adjust(&mut q.logged_in, a.logged_in(), false);
        adjust(&mut q.staffed, a.staffed(), false);
        // Indices after the removed member shift down: fix slots, round-robin and cursors
        // by key.
        let shift = |x: Option<u32>| match x {
            Some(i) if i > mi => Some(i - 1),
            Some(i) if i == mi => i.checked_sub(1),
            other => other,
        };
        q.last_offered = shift(q.last_offered);
        for k in &q.waiting {
            if let Some(CallEntry::Queued(w)) = calls.get_mut(&k.call) {
                w.cursor = shift(w.cursor);
            }
        }
        for m in &q.members {
            if let Some(other) = agents.get_mut(m.agent as usize) {
                for slot in other.slots.iter_mut() {
                    if slot.0 == qi && slot.1 > mi {
                        slot.1 -= 1;
                    }
                }
            }
        }
        self.mark_check(qi);
    }

    /// The rules a call joining queue `qi` now meets: `None` to join, else why it is
    /// refused and what happens to it. Calls on their way to the queue count as waiting.
    fn admission(&self, qi: u32, now: Millis) -> Option<(RejectCause, Act)> {
        let q = self.queues.get(qi as usize)?;
        let c = &q.config;
        let empty = |cond: EmptyCondition| match cond {
            EmptyCondition::NoMembers => q.logged_in == 0,
            EmptyCondition::NoneAvailable => q.staffed == 0,
        };
        if c.join_empty.is_some_and(empty) || c.leave_when_empty.is_some_and(empty) {
            return Some((RejectCause::Empty, Act::of(&c.empty_action)));
        }
        if let Some(limit) = c.max_wait_no_agent_ms {
            let since = q.memberless_since.unwrap_or(now);
            if q.logged_in == 0 && since.saturating_add(limit) <= now {
                return Some((RejectCause::NoAgent, Act::of(&c.empty_action)));
            }
        }
        if c.max_len.is_some_and(|m| {
            q.waiting.len().saturating_add(q.arriving) >= usize::try_from(m).unwrap_or(usize::MAX)
        }) {
            let act = match &c.full_action {
                FullAction::Reject => Act::Hangup(None),
                FullAction::Overflow { queue } => Act::Overflow(queue.clone()),
            };
            return Some((RejectCause::Full, act));
        }
        if c.max_wait_ms == Some(0) {
            return Some((RejectCause::MaxWait, Act::of(&c.max_wait_action)));
        }
        None
    }

    fn enqueue(
        &mut self,
        call: CallId,
        queue: &QueueId,
        routing: Option<&CallRouting>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        // Here now: no longer counted as on its way (its own admission below must not
        // count it).
        self.leave_arriving(call);
        let Some(&qi) = self.queue_index.get(queue) else {
            return;
        };
        if self.calls.contains_key(&call) {
            return;
        }
        let mut w = self.spare.pop().unwrap_or_default();
        w.since = now;
        w.prio = routing.map_or(0, |r| r.priority);
        w.entered = routing
            .and_then(|r| r.entered_at)
            .map_or(now, |t| t.min(now));
        w.seq = self.seq;
        self.seq += 1;
        w.call_reqs.clear();
        if let Some(r) = routing {
            for s in &r.skills {
                let id = intern_skill(&mut self.skill_names, &mut self.skill_index, &s.skill);
                merge_req(&mut w.call_reqs, id, s.min_level);
            }
        }
        let verdict = self.admission(qi, now);
        self.place(call, w, qi, verdict, now, out);
    }

    /// Puts a call into queue `qi` (`verdict` `None`) or applies what happens to it
    /// there (refused or leaving: removed, or overflowed — then the next queue's rules
    /// apply, and so on). Overflowing into a queue it was already in, or an unknown
    /// one, removes it.
    fn place(
        &mut self,
        call: CallId,
        mut w: Waiting,
        mut qi: u32,
        mut verdict: Option<(RejectCause, Act)>,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        // A callback moves only into a queue that takes it: its overflows are held back
        // until one does, and if none does it stays where it was (see below).
        let start = (qi, w.visited.len());
        let mut held = Vec::new();
        loop {
            let Some((cause, act)) = verdict else {
                out.append(&mut held);
                self.join(call, w, qi, now, out);
                return;
            };
            let waited_ms = now.saturating_sub(w.since);
            if !w.visited.contains(&qi) {
                w.visited.push(qi);
            }
            let (reason, prompt) = match act {
                Act::Hangup(prompt) => (cause, prompt),
                Act::Overflow(to) => match self.queue_index.get(&to).copied() {
                    None => (RejectCause::UnknownQueue, None),
                    Some(t) if w.visited.contains(&t) => (RejectCause::OverflowLoop, None),
                    Some(t) => {
                        let overflowed = Output::Overflowed {
                            call,
                            from: self.queue_name(qi),
                            to,
                            reason: cause,
                            waited_ms,
                        };
                        if w.callback {
                            held.push(overflowed);
                        } else {
                            out.push(overflowed);
                        }
                        qi = t;
                        w.since = now;
                        verdict = self.admission(t, now);
                        continue;
                    }
                },
            };
            if w.callback {
                // A promise to a caller no longer on the line: where no overflow takes
                // it (a target full or closed to it, unknown, a loop), it waits in the
                // queue it was in, for an agent, with no max wait any more (another try
                // would fail the same way, and a max wait of 0 would try forever).
                w.visited.truncate(start.1);
                self.join(call, w, start.0, now, out);
                if let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) {
                    if w.max_wait_at.take().is_some() {
                        out.push(Output::CancelTimer {
                            timer: Timer::MaxWait { call },
                        });
                    }
                }
                return;
            }
            out.push(Output::Removed {
                call,
                queue: self.queue_name(qi),
                reason,
                prompt,
                waited_ms,
            });
            self.recycle(w);
            return;
        }
    }

    /// The call joins queue `qi` now: takes its place, arms its max wait, is routed.
    fn join(&mut self, call: CallId, mut w: Waiting, qi: u32, now: Millis, out: &mut Vec<Output>) {
        w.queue = qi;
        w.since = now;
        w.reqs.clear();
        let mut max_wait = None;
        if let Some(q) = self.queues.get_mut(qi as usize) {
            w.reqs.extend_from_slice(&q.reqs);
            q.waiting.insert(w.key(call));
            max_wait = q.config.max_wait_ms;
        }
        for r in &w.call_reqs {
            merge_req(&mut w.reqs, r.skill, r.min);
        }
        if !w.call_reqs.is_empty() {
            w.reqs.sort();
        }
        w.max_wait_at = max_wait.map(|ms| now.saturating_add(ms));
        if let Some(at) = w.max_wait_at {
            out.push(Output::StartTimer {
                timer: Timer::MaxWait { call },
                at,
            });
        }
        w.log = self.log.begin(call, qi, w.prio, w.entered, &w.reqs);
        self.calls.insert(call, CallEntry::Queued(w));
        self.dirty.push(call);
        self.arm_no_agent(qi, now, out);
    }

    /// Arms the queue's [`Timer::NoAgent`] if it has callers, no logged-in member, a
    /// `max_wait_no_agent_ms`, and none armed.
    fn arm_no_agent(&mut self, qi: u32, now: Millis, out: &mut Vec<Output>) {
        let Some(q) = self.queues.get_mut(qi as usize) else {
            return;
        };
        let Some(limit) = q.config.max_wait_no_agent_ms else {
            return;
        };
        if q.logged_in > 0 || q.waiting.is_empty() || q.no_agent_at.is_some() {
            return;
        }
        let since = *q.memberless_since.get_or_insert(now);
        let at = since.saturating_add(limit).max(now);
        q.no_agent_at = Some(at);
        out.push(Output::StartTimer {
            timer: Timer::NoAgent {
                queue: q.config.name.clone(),
            },
            at,
        });
    }

    /// Applies the empty-queue policies to the queues whose logged-in or staffed count
    /// changed: the no-agent clock and timer, and leave-when-empty.
    fn check_queues(&mut self, now: Millis, out: &mut Vec<Output>) {
        while self.any_check {
            self.any_check = false;
            for qi in 0..self.queues.len() as u32 {
                let flagged = self
                    .check
                    .get_mut(qi as usize)
                    .is_some_and(|c| std::mem::replace(c, false));
                if !flagged {
                    continue;
                }
                let Some(q) = self.queues.get_mut(qi as usize) else {
                    continue;
                };
                if q.logged_in > 0 {
                    q.memberless_since = None;
                    if q.no_agent_at.take().is_some() {
                        out.push(Output::CancelTimer {
                            timer: Timer::NoAgent {
                                queue: q.config.name.clone(),
                            },
                        });
                    }
                } else if q.memberless_since.is_none() {
                    q.memberless_since = Some(now);
                }
                let leave = match q.config.leave_when_empty {
                    Some(EmptyCondition::NoMembers) => q.logged_in == 0,
                    Some(EmptyCondition::NoneAvailable) => q.staffed == 0,
                    None => false,
                };
                if leave {
                    let act = Act::of(&q.config.empty_action);
                    self.empty_queue(qi, RejectCause::Empty, act, now, out);
                } else {
                    self.arm_no_agent(qi, now, out);
                }
            }
        }
    }

    /// Every caller of a queue leaves, in queue order.
    fn empty_queue(
        &mut self,
        qi: u32,
        cause: RejectCause,
        act: Act,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let calls: Vec<CallId> = self
            .queues
            .get(qi as usize)
            .map(|q| q.waiting.iter().map(|k| k.call).collect())
            .unwrap_or_default();
        for call in calls {
            self.leave(call, cause, act.clone(), now, out);
        }
    }

    /// A waiting call leaves its queue because of a policy: its rings are cancelled,
    /// its reservation released, its timers cancelled, then it is removed or
    /// overflowed.
    ///
    /// A callback not yet answered is a promise to a caller who is no longer on the
    /// line: it stays, to be called back once an agent is free, except that max wait's
    /// overflow moves it (still a callback; see [`place`](Self::place)). Empty-queue
    /// policies never move it: they are for callers on the line (and a callback moved
    /// from an empty queue into another empty one would be moved again at once).
    fn leave(
        &mut self,
        call: CallId,
        cause: RejectCause,
        act: Act,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let keep_callback = |w: &Waiting| {
            w.callback && (matches!(act, Act::Hangup(_)) || cause != RejectCause::MaxWait)
        };
        match self.calls.get(&call) {
            Some(CallEntry::Queued(w)) if keep_callback(w) => return,
            Some(CallEntry::Queued(_)) => {}
            _ => return,
        }
        let Some(CallEntry::Queued(mut w)) = self.calls.remove(&call) else {
            return;
        };
        if let Some(q) = self.queues.get_mut(w.queue as usize) {
            q.waiting.remove(&w.key(call));
        }
        self.drop_offers(call, &mut w, now, out);
        Self::cancel_call_timers(call, &w, out);
        let qi = w.queue;
        w.tried.clear();
        w.retry_armed = false;
        w.widen_armed = false;
        w.ring_more_armed = false;
        w.max_wait_at = None;
        w.cursor = None;
        self.place(call, w, qi, Some((cause, act)), now, out);
    }

    /// Cancels the rings of a waiting call (CANCEL and ring timeouts) and releases its
    /// ringing and reserved agents, without counting a failure.
    fn drop_offers(&mut self, call: CallId, w: &mut Waiting, now: Millis, out: &mut Vec<Output>) {
        for &a in &w.ringing {
            let agent = self.agent_name(a);
            out.push(Output::CancelRing {
                call,
                agent: agent.clone(),
            });
            out.push(Output::CancelTimer {
                timer: Timer::RingTimeout { call, agent },
            });
        }
        for k in 0..w.ringing.len() {
            if let Some(&a) = w.ringing.get(k) {
                self.release_agent(a, call, now);
            }
        }
        w.ringing.clear();
        if let Some(a) = w.reserved.take() {
            self.release_agent(a, call, now);
        }
    }

    fn recycle(&mut self, mut w: Waiting) {
        w.reqs.clear();
        w.call_reqs.clear();
        w.visited.clear();
        w.ringing.clear();
        w.tried.clear();
        w.retry_armed = false;
        w.widen_armed = false;
        w.ring_more_armed = false;
        w.max_wait_at = None;
        w.callback = false;
        w.reserved = None;
        w.cursor = None;
        w.log = None;
        if self.spare.len() < 1024 {
            self.spare.push(w);
        }
    }

    /// Cancels the call-level timers still armed for a call leaving its queue.
    fn cancel_call_timers(call: CallId, w: &Waiting, out: &mut Vec<Output>) {
        if w.retry_armed {
            out.push(Output::CancelTimer {
                timer: Timer::Retry { call },
            });
        }
        if w.widen_armed {
            out.push(Output::CancelTimer {
                timer: Timer::Widen { call },
            });
        }
        if w.ring_more_armed {
            out.push(Output::CancelTimer {
                timer: Timer::RingMore { call },
            });
        }
        if w.max_wait_at.is_some() {
            out.push(Output::CancelTimer {
                timer: Timer::MaxWait { call },
            });
        }
    }

    fn answered(&mut self, call: CallId, agent: &AgentId, now: Millis, out: &mut Vec<Output>) {
        let Some(ai) = self.agent_idx(agent) else {
            return;
        };
        if !matches!(self.calls.get(&call), Some(CallEntry::Queued(w)) if w.ringing.contains(&ai)) {
            return;
        }
        let Some(CallEntry::Queued(w)) = self.calls.remove(&call) else {
            return;
        };
        if let Some(q) = self.queues.get_mut(w.queue as usize) {
            q.waiting.remove(&w.key(call));
        }
        out.push(Output::CancelTimer {
            timer: Timer::RingTimeout {
                call,
                agent: agent.clone(),
            },
        });
        for &o in &w.ringing {
            if o == ai {
                continue;
            }
            let other = self.agent_name(o);
            out.push(Output::CancelRing {
                call,
                agent: other.clone(),
            });
            out.push(Output::CancelTimer {
                timer: Timer::RingTimeout { call, agent: other },
            });
            self.release_agent(o, call, now);
        }
        Self::cancel_call_timers(call, &w, out);
        out.push(Output::Assigned {
            call,
            queue: self.queue_name(w.queue),
            agent: agent.clone(),
            waited_ms: now.saturating_sub(w.since),
        });
        if let Some(c) = self.counters.get_mut(ai as usize) {
            c.answered += 1;
        }
        if let Some(a) = self.agents.get_mut(ai as usize) {
            a.no_answers = 0;
        }
        self.calls.insert(
            call,
            CallEntry::Connected {
                agent: ai,
                since: now,
                queue: w.queue,
            },
        );
        self.recycle(w);
    }

    /// An offer failed (reported, or the ring timed out: `NoAnswer`): the agent is
    /// released, starts the delay for that failure, and counts a no-answer; the call
    /// goes back to routing once no agent rings for it.
    fn offer_failed(
        &mut self,
        call: CallId,
        ai: u32,
        why: OfferFailure,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(p) = w.ringing.iter().position(|a| *a == ai) else {
            return;
        };
        w.ringing.remove(p);
        if let Err(i) = w.tried.binary_search(&ai) {
            w.tried.insert(i, ai);
        }
        let agent = self
            .agents
            .get(ai as usize)
            .map(|a| a.id.clone())
            .unwrap_or_else(|| AgentId::new("?"));
        out.push(Output::CancelTimer {
            timer: Timer::RingTimeout {
                call,
                agent: agent.clone(),
            },
        });
        if w.ringing.is_empty() {
            if w.ring_more_armed {
                w.ring_more_armed = false;
                out.push(Output::CancelTimer {
                    timer: Timer::RingMore { call },
                });
            }
            self.dirty.push(call);
        }
        // Released, delayed and counted in one step (never available in between).
        let (mut idle, mut delayed, mut auto_break) = (false, None, false);
        self.update_agent(ai, |a| {
            if let Some(p) = a.calls.iter().position(|c| *c == call) {
                a.calls.swap_remove(p);
                idle = a.calls.is_empty();
            }
            let delay = match why {
                OfferFailure::Declined => a.reject_delay_ms,
                OfferFailure::Busy => a.busy_delay_ms,
                OfferFailure::NoAnswer => a.no_answer_delay_ms,
                OfferFailure::Failed => 0,
            };
            if delay > 0 {
                let until = now.saturating_add(delay);
                if a.delay_until.is_none_or(|u| u < until) {
                    a.delay_until = Some(until);
                    delayed = Some(until);
                }
            }
            if why == OfferFailure::NoAnswer {
                a.no_answers = a.no_answers.saturating_add(1);
                auto_break = a.max_no_answer > 0
                    && a.no_answers >= a.max_no_answer
                    && takes_calls(&a.status);
            }
        });
        if idle {
            if let Some(c) = self.counters.get_mut(ai as usize) {
                c.idle_since = now;
            }
        }
        if let Some(at) = delayed {
            out.push(Output::StartTimer {
                timer: Timer::DelayEnd { agent },
                at,
            });
        }
        if auto_break {
            let status = AgentStatus::OnBreak {
                reason: SmolStr::new_static("auto: no answer"),
            };
            self.set_status(ai, status, out);
        }
    }

    /// [`Input::CallbackRequested`].
    fn callback_requested(&mut self, call: CallId, now: Millis, out: &mut Vec<Output>) {
        let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) else {
            return;
        };
        if w.callback {
            return;
        }
        w.callback = true;
        let mut w = std::mem::take(w);
        self.drop_offers(call, &mut w, now, out);
        if w.ring_more_armed {
            w.ring_more_armed = false;
            out.push(Output::CancelTimer {
                timer: Timer::RingMore { call },
            });
        }
        if let Some(CallEntry::Queued(slot)) = self.calls.get_mut(&call) {
            *slot = w;
        }
        self.dirty.push(call);
    }

    /// [`Input::CallbackAnswered`].
    fn callback_answered(&mut self, call: CallId, now: Millis, out: &mut Vec<Output>) {
        let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) else {
            return;
        };
        if !w.callback {
            return;
        }
        w.callback = false;
        let Some(ai) = w.reserved.take() else {
            // Not reserved yet: an ordinary call from now on.
            self.dirty.push(call);
            return;
        };
        let qi = w.queue;
        let contact = self.agents.get(ai as usize).and_then(|a| a.contact.clone());
        let Some(contact) = contact else {
            // The agent went offline meanwhile: route again.
            self.release_agent(ai, call, now);
            self.dirty.push(call);
            return;
        };
        let (ring_timeout, strategy, more) =
            self.queues
                .get(qi as usize)
                .map_or((15_000, Strategy::TopDown, 0), |q| {
                    (
                        q.config.ring_timeout_ms,
                        q.config.strategy,
                        q.config.ring_progressively_delay_ms,
                    )
                });
        let queue = self.queue_name(qi);
        let agent = self.agent_name(ai);
        let Some(CallEntry::Queued(w)) = self.calls.get_mut(&call) else {
            return;
        };
        w.ringing.push(ai);
        out.push(Output::Ring {
            call,
            queue,
            agent: agent.clone(),
            contact,
        });
        out.push(Output::StartTimer {
            timer: Timer::RingTimeout { call, agent },
            at: now.saturating_add(ring_timeout),
        });
        if strategy == Strategy::RingProgressively && !w.ring_more_armed {
            w.ring_more_armed = true;
            out.push(Output::StartTimer {
                timer: Timer::RingMore { call },
                at: now.saturating_add(more),
            });
        }
    }

    /// [`Input::CallbackFailed`].
    fn callback_failed(&mut self, call: CallId, now: Millis, out: &mut Vec<Output>) {
        if !matches!(self.calls.get(&call), Some(CallEntry::Queued(w)) if w.callback) {
            return;
        }
        let Some(CallEntry::Queued(mut w)) = self.calls.remove(&call) else {
            return;
        };
        if let Some(q) = self.queues.get_mut(w.queue as usize) {
            q.waiting.remove(&w.key(call));
        }
        self.drop_offers(call, &mut w, now, out);
        Self::cancel_call_timers(call, &w, out);
        out.push(Output::Removed {
            call,
            queue: self.queue_name(w.queue),
            reason: RejectCause::CallbackFailed,
            prompt: None,
            waited_ms: now.saturating_sub(w.since),
        });
        self.recycle(w);
    }

    /// A call answered for queue `queue`, not queued yet: counted there until it is.
    fn call_arriving(&mut self, call: CallId, queue: &QueueId) {
        if self.calls.contains_key(&call) {
            return;
        }
        self.leave_arriving(call);
        if let Some(&qi) = self.queue_index.get(queue) {
            if let Some(q) = self.queues.get_mut(qi as usize) {
                q.arriving = q.arriving.saturating_add(1);
                self.arriving.insert(call, qi);
            }
        }
    }

    /// The call is no longer on its way (queued, or ended).
    fn leave_arriving(&mut self, call: CallId) {
        if let Some(qi) = self.arriving.remove(&call) {
            if let Some(q) = self.queues.get_mut(qi as usize) {
                q.arriving = q.arriving.saturating_sub(1);
            }
        }
    }

    fn call_ended(&mut self, call: CallId, now: Millis, out: &mut Vec<Output>) {
        self.leave_arriving(call);
        match self.calls.remove(&call) {
            Some(CallEntry::Queued(mut w)) => {
                if let Some(q) = self.queues.get_mut(w.queue as usize) {
                    q.waiting.remove(&w.key(call));
                }
                let ringing = std::mem::take(&mut w.ringing);
                for &a in &ringing {
                    let agent = self.agent_name(a);
                    out.push(Output::CancelRing {
                        call,
                        agent: agent.clone(),
                    });
                    out.push(Output::CancelTimer {
                        timer: Timer::RingTimeout { call, agent },
                    });
                }
                Self::cancel_call_timers(call, &w, out);
                for &a in &ringing {
                    self.release_agent(a, call, now);
                }
                w.ringing = ringing;
                if let Some(a) = w.reserved.take() {
                    self.release_agent(a, call, now);
                }
                out.push(Output::Abandoned {
                    call,
                    queue: self.queue_name(w.queue),
                    waited_ms: now.saturating_sub(w.since),
                });
                self.recycle(w);
            }
            Some(CallEntry::Connected {
                agent,
                since,
                queue,
            }) => {
                if let Some(c) = self.counters.get_mut(agent as usize) {
                    c.talk_ms = c.talk_ms.saturating_add(now.saturating_sub(since));
                }
                // On demand: a break after each call (before the agent is freed, so
                // they are never offered a call in between).
                if self
                    .agents
                    .get(agent as usize)
                    .is_some_and(|a| a.status == AgentStatus::AvailableOnDemand)
                {
                    let status = AgentStatus::OnBreak {
                        reason: SmolStr::new_static("on-demand"),
                    };
                    self.set_status(agent, status, out);
                }
                let wrap_up = self.agents.get(agent as usize).and_then(|a| a.wrap_up_ms);
                let wrap_up = wrap_up.unwrap_or_else(|| {
                    self.queues
                        .get(queue as usize)
                        .map_or(0, |q| q.config.wrap_up_ms)
                });
                if wrap_up == 0 {
                    self.release_agent(agent, call, now);
                    return;
                }
                // After-call work: freed from the call but not offered another until
                // the wrap-up ends (changed in one step, so the agent never counts as
                // available in between).
                let until = now.saturating_add(wrap_up);
                let mut armed = None;
                self.update_agent(agent, |a| {
                    if let Some(p) = a.calls.iter().position(|c| *c == call) {
                        a.calls.swap_remove(p);
                    }
                    if a.wrap_up_until.is_none_or(|u| u < until) {
                        a.wrap_up_until = Some(until);
                        armed = Some(a.id.clone());
                    }
                });
                if let Some(agent) = armed {
                    out.push(Output::StartTimer {
                        timer: Timer::WrapUpEnd { agent },
                        at: until,
                    });
                }
            }
            None => {}
        }
    }

    /// Offers waiting calls to available agents until nothing more can be matched.
    ///
    /// Event-driven: only calls that became routable (dirty) and the waiting calls of
    /// queues where an agent became available are tried; everything else was already
    /// tried against the same agents and limits. Calls are tried in one global order —
    /// priority, then entry time, across queues — so an agent in several queues serves
    /// the caller who has waited longest.
    fn dispatch(&mut self, now: Millis, out: &mut Vec<Output>) {
        if !self.any_scan && self.dirty.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.order);
        list.clear();
        if self.any_scan {
            for (qi, q) in self.queues.iter().enumerate() {
                if !self.scan.get(qi).copied().unwrap_or(false) || q.available == 0 {
                    continue;
                }
                for k in &q.waiting {
                    if let Some(CallEntry::Queued(w)) = self.calls.get(&k.call) {
                        if w.idle() {
                            list.push((w.gkey(k.call), false));
                        }
                    }
                }
            }
            self.scan.iter_mut().for_each(|s| *s = false);
            self.any_scan = false;
        }
        for call in &self.dirty {
            if let Some(CallEntry::Queued(w)) = self.calls.get(call) {
                if w.idle() {
                    list.push((w.gkey(*call), true));
                }
            }
        }
        self.dirty.clear();
        list.sort_unstable();
        list.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 |= b.1;
                true
            } else {
                false
            }
        });
        for (k, dirty) in &list {
            let available = self.queues.get(k.queue as usize).map_or(0, |q| q.available);
            // A call not marked dirty was tried before; without an available member
            // nothing can have changed for it.
            if !dirty && available == 0 {
                continue;
            }
            self.try_route(k.call, now, false, out);
        }
        list.clear();
        self.order = list;
    }

    /// One routing decision for a waiting call: evaluates every member, picks by the
    /// strategy, rings, arms timers and records the decision. `expand`:
    /// ring-progressively adding one more agent to a call already ringing.
    ///
    /// Allocation-free in steady state: candidates go to a reused scratch buffer and
    /// the decision record reuses its slot's buffers.
    fn try_route(&mut self, call: CallId, now: Millis, expand: bool, out: &mut Vec<Output>) {
        let Self {
            agents,
            counters,
            queues,
            calls,
            scratch,
            chosen,
            rang,
            rng,
            log,
            ..
        } = self;
        let Some(CallEntry::Queued(w)) = calls.get_mut(&call) else {
            return;
        };
        if if expand {
            w.ringing.is_empty()
        } else {
            !w.idle()
        } {
            return;
        }
        // A callback reserves one agent, whatever the strategy.
        let callback = w.callback;
        let qi = w.queue as usize;
        let Some(q) = queues.get(qi) else {
            return;
        };
        let wait = now.saturating_sub(w.since);
        let has_skills = !w.reqs.is_empty();
        let limits = Limits {
            waited: wait,
            allowed_level: q.allowed_level(wait),
            max_penalty: q.max_penalty(wait),
            lowered_by: if has_skills { q.lowered_by(wait) } else { 0 },
            next_widening_at: q.next_widening(w.since, wait, has_skills),
        };
        let strategy = q.config.strategy;
        let best_match = q.config.skill_match == SkillMatch::BestMatch;
        let n = q.members.len();
        let start = match strategy {
            Strategy::RoundRobin => q.last_offered.map_or(0, |l| l as usize + 1),
            Strategy::SequentiallyByAgentOrder => w.cursor.map_or(0, |c| c as usize + 1),
            _ => 0,
        } % n.max(1);

        // Evaluate every member.
        scratch.clear();
        let mut eligible = 0u32;
        let mut pool = 0u32;
        for (mi, m) in q.members.iter().enumerate() {
            let mut score = 0u16;
            let verdict = match m.status {
                Status::Offline => V::Offline,
                Status::LoggedOut => V::LoggedOut,
                Status::Paused => V::Paused,
                Status::WrapUp => V::WrapUp,
                Status::Delayed => V::Delayed,
                _ if w.ringing.contains(&m.agent) => V::Ringing,
                Status::Full => V::AtCapacity {
                    calls: m.calls,
                    max: m.max_calls,
                },
                Status::Free => {
                    if limits.allowed_level.is_some_and(|l| m.level > l) {
                        V::LevelTooHigh
                    } else if limits.max_penalty.is_some_and(|p| m.penalty > p) {
                        V::PenaltyTooHigh
                    } else if let Some(v) =
                        skill_check(m, agents, &w.reqs, limits.lowered_by, &mut score)
                    {
                        v
                    } else if w.tried.binary_search(&m.agent).is_ok() {
                        eligible += 1;
                        V::Tried
                    } else {
                        eligible += 1;
                        pool += 1;
                        V::Eligible
                    }
                }
            };
            let metric = if verdict == V::Eligible {
                let c = || counters.get(m.agent as usize).copied().unwrap_or_default();
                match strategy {
                    Strategy::LongestIdleAgent => c().idle_since,
                    Strategy::RoundRobin | Strategy::SequentiallyByAgentOrder => {
                        ((mi + n - start) % n) as u64
                    }
                    Strategy::TopDown | Strategy::RingAll | Strategy::RingProgressively => {
                        mi as u64
                    }
                    Strategy::AgentWithFewestCalls => c().answered,
                    Strategy::AgentWithLeastTalkTime => c().talk_ms,
                    Strategy::Random => 0,
                    Strategy::WeightedRandom => penalty_weight(m.penalty),
                }
            } else {
                0
            };
            scratch.push(Cand {
                metric,
                member: mi as u32,
                agent: m.agent,
                score,
                verdict,
            });
        }

        // Pick: lower level, lower penalty (not for weighted-random), higher skill
        // score (best match), then the strategy.
        chosen.clear();
        if pool > 0 {
            let members = &q.members;
            let member = |c: &Cand| members.get(c.member as usize);
            let elig = |c: &Cand| c.verdict == V::Eligible;
            let rank = |c: &Cand| {
                let (level, penalty) =
                    member(c).map_or((u8::MAX, u32::MAX), |m| (m.level, m.penalty));
                (
                    level,
                    if strategy == Strategy::WeightedRandom {
                        0
                    } else {
                        penalty
                    },
                    Reverse(if best_match { c.score } else { 0 }),
                )
            };
            // Ties of fewest-calls and least-talk-time: idle longest; then agent order.
            let tie = |c: &Cand| {
                let agent = member(c).map_or(u32::MAX, |m| m.agent);
                let idle = match strategy {
                    Strategy::AgentWithFewestCalls | Strategy::AgentWithLeastTalkTime => {
                        counters.get(agent as usize).map_or(0, |x| x.idle_since)
                    }
                    _ => 0,
                };
                (idle, agent)
            };
            match strategy {
                Strategy::RingAll => {
                    let group = |c: &Cand| member(c).map(|m| (m.level, m.penalty));
                    let best = scratch.iter().filter(|c| elig(c)).filter_map(group).min();
                    for (i, c) in scratch.iter().enumerate() {
                        if elig(c) && group(c) == best {
                            chosen.push(i as u32);
                        }
                    }
                }
                Strategy::Random | Strategy::WeightedRandom => {
                    let weighted = strategy == Strategy::WeightedRandom;
                    let best = scratch.iter().filter(|c| elig(c)).map(rank).min();
                    let in_group = |c: &Cand| elig(c) && Some(rank(c)) == best;
                    let weight = |c: &Cand| if weighted { c.metric } else { 1 };
                    let total: u64 = scratch.iter().filter(|c| in_group(c)).map(weight).sum();
                    let mut r = rng.below(total);
                    for (i, c) in scratch.iter().enumerate() {
                        if !in_group(c) {
                            continue;
                        }
                        let wt = weight(c);
                        if r < wt {
                            chosen.push(i as u32);
                            break;
                        }
                        r -= wt;
                    }
                }
                _ => {
                    let mut best: Option<(usize, &Cand)> = None;
                    for (i, c) in scratch.iter().enumerate() {
                        if !elig(c) {
                            continue;
                        }
                        let better = match best {
                            None => true,
                            Some((_, b)) => (rank(c), c.metric)
                                .cmp(&(rank(b), b.metric))
                                .then_with(|| tie(c).cmp(&tie(b)))
                                .is_lt(),
                        };
                        if better {
                            best = Some((i, c));
                        }
                    }
                    if let Some((i, _)) = best {
                        chosen.push(i as u32);
                    }
                }
            }
            if callback {
                chosen.truncate(1);
            }
            for &i in chosen.iter() {
                if let Some(c) = scratch.get_mut(i as usize) {
                    c.verdict = V::Chosen;
                }
            }
        }
        rang.clear();
        rang.extend(chosen.iter().filter_map(|&i| {
            let c = scratch.get(i as usize)?;
            let m = q.members.get(c.member as usize)?;
            Some((m.agent, c.member))
        }));
        let ring_timeout = q.config.ring_timeout_ms;
        let retry_delay = q.config.retry_delay_ms;
        let ring_more_delay = q.config.ring_progressively_delay_ms;
        let queue_name = q.config.name.clone();

        // Ring the chosen. `rang` keeps those actually rung (for the record).
        let mut last_member = None;
        let mut rung = 0;
        for k in 0..rang.len() {
            let Some((agent, member)) = rang.get(k).copied() else {
                continue;
            };
            let Some(a) = agents.get_mut(agent as usize) else {
                continue;
            };
            let Some(contact) = a.contact.clone() else {
                continue;
            };
            let was = a.available();
            a.calls.push(call);
            sync_members(a, queues);
            if was && !a.available() {
                for &aq in &a.queues {
                    if let Some(x) = queues.get_mut(aq as usize) {
                        x.available = x.available.saturating_sub(1);
                    }
                }
            }
            if callback {
                out.push(Output::Callback {
                    call,
                    queue: queue_name.clone(),
                    agent: a.id.clone(),
                });
                w.reserved = Some(agent);
            } else {
                out.push(Output::Ring {
                    call,
                    queue: queue_name.clone(),
                    agent: a.id.clone(),
                    contact,
                });
                out.push(Output::StartTimer {
                    timer: Timer::RingTimeout {
                        call,
                        agent: a.id.clone(),
                    },
                    at: now.saturating_add(ring_timeout),
                });
                w.ringing.push(agent);
            }
            last_member = Some(member);
            if let Some(slot) = rang.get_mut(rung) {
                *slot = (agent, member);
            }
            rung += 1;
        }
        rang.truncate(rung);
        if let Some(m) = last_member {
            match strategy {
                Strategy::RoundRobin => {
                    if let Some(x) = queues.get_mut(qi) {
                        x.last_offered = Some(m);
                    }
                }
                Strategy::SequentiallyByAgentOrder => w.cursor = Some(m),
                _ => {}
            }
        }
        let outcome = if rung > 0 && callback {
            OutcomeCode::Reserved
        } else if rung > 0 {
            OutcomeCode::Rang
        } else if eligible > 0 && !expand && !w.retry_armed {
            // Every eligible member failed this call: wait before offering it again,
            // rather than ringing a busy phone in a loop.
            w.retry_armed = true;
            let at = now.saturating_add(retry_delay);
            out.push(Output::StartTimer {
                timer: Timer::Retry { call },
                at,
            });
            OutcomeCode::AllTried { retry_at: Some(at) }
        } else if eligible > 0 {
            OutcomeCode::AllTried { retry_at: None }
        } else {
            OutcomeCode::NoEligible
        };
        if rung == 0 && !expand && !w.widen_armed {
            if let Some(at) = limits.next_widening_at {
                w.widen_armed = true;
                out.push(Output::StartTimer {
                    timer: Timer::Widen { call },
                    at,
                });
            }
        }
        if strategy == Strategy::RingProgressively && !w.ringing.is_empty() && !w.ring_more_armed {
            w.ring_more_armed = true;
            out.push(Output::StartTimer {
                timer: Timer::RingMore { call },
                at: now.saturating_add(ring_more_delay),
            });
        }
        if !log.holds(w.log, call) {
            // Its slot went to newer calls while it waited: start again.
            w.log = log.begin(call, w.queue, w.prio, w.entered, &w.reqs);
        }
        log.record(Record {
            call,
            log: w.log,
            at: now,
            limits,
            eligible,
            cands: scratch,
            rang,
            outcome,
        });
    }
}

fn intern_skill(
    names: &mut Vec<SmolStr>,
    index: &mut BTreeMap<SmolStr, u16>,
    name: &SmolStr,
) -> u16 {
    if let Some(&i) = index.get(name) {
        return i;
    }
    if names.len() >= usize::from(UNKNOWN_SKILL) {
        return UNKNOWN_SKILL;
    }
    let i = names.len() as u16;
    names.push(name.clone());
    index.insert(name.clone(), i);
    i
}

/// Adds a requirement; for a skill already required, the higher minimum wins.
fn merge_req(reqs: &mut Vec<Req>, skill: u16, min: u8) {
    match reqs.iter_mut().find(|r| r.skill == skill) {
        Some(r) => r.min = r.min.max(min),
        None => reqs.push(Req {
            skill,
            min,
            slot: NO_SLOT,
        }),
    }
}

/// Copies an agent's status into the snapshots of their memberships.
fn sync_members(a: &AgentState, queues: &mut [QueueState]) {
    let status = a.status();
    let calls = u16::try_from(a.calls.len()).unwrap_or(u16::MAX);
    for &(qi, mi) in &a.slots {
        if let Some(m) = queues
            .get_mut(qi as usize)
            .and_then(|q| q.members.get_mut(mi as usize))
        {
            m.status = status;
            m.calls = calls;
            m.max_calls = a.max_calls;
        }
    }
}

impl Names for Orchestrator {
    fn agent_id(&self, idx: u32) -> Option<AgentId> {
        self.agents.get(idx as usize).map(|a| a.id.clone())
    }

    fn member_info(&self, queue: u32, agent: u32) -> (u8, u32, u32) {
        self.agents
            .get(agent as usize)
            .and_then(|a| a.slots.iter().find(|(q, _)| *q == queue))
            .and_then(|&(q, m)| self.queues.get(q as usize)?.members.get(m as usize))
            .map_or((0, 0, 0), |m| (m.level, m.position, m.penalty))
    }

    fn skill_name(&self, idx: u16) -> SmolStr {
        self.skill_names
            .get(usize::from(idx))
            .cloned()
            .unwrap_or_else(|| SmolStr::new_static("?"))
    }

    fn queue_info(&self, idx: u32) -> Option<(QueueId, Strategy)> {
        self.queues
            .get(idx as usize)
            .map(|q| (q.config.name.clone(), q.config.strategy))
    }
}

/// The README's code, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod acd_tests;

#[cfg(test)]
mod policy_tests;
