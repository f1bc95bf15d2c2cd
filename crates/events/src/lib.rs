//! # call-engine-events
//!
//! The typed taxonomy every call-engine component speaks: identifiers, **commands** (what
//! a component is asked to do) and **events** (what happened), for SIP sessions, media,
//! calls, agents, queues and resources.
//!
//! Every message is an [`EngineEvent`], which implements [`call_engine_bus::Message`]: its
//! [`priority`](call_engine_bus::Message::priority) follows one rule, written down once
//! here:
//!
//! | priority | what |
//! |---|---|
//! | Critical | call setup and teardown, failure recovery, authentication |
//! | High | mid-call changes, features, media parameter updates |
//! | Normal | progress |
//! | Low | quality metrics, resource reports, health |
//!
//! Control signals that admission control or routing act on at once are High, never
//! Low (the Low lane may shed when full): [`ResourceEvent::Overloaded`] and the agent's
//! status, activity and queue membership.
//!
//! and its [`topic`](call_engine_bus::Message::topic) is its domain and direction (see
//! [`topics`]), so a component subscribes to exactly the messages addressed to it.
//!
//! Correlation and causation ids live in the bus envelope
//! ([`call_engine_bus::Envelope`]); the correlation id of everything about a call is its
//! [`CallId`] (`CorrelationId::from(call)`), of everything about an agent outside a call
//! [`AgentId::correlation`]. [`CorrelationId`] is re-exported here, so the taxonomy's
//! ids all come from this crate.
//!
//! ```
//! use call_engine_events::*;
//! use call_engine_bus::{Message, Priority};
//!
//! let ids = IdAllocator::new();
//! let call = ids.call();
//! let ev = EngineEvent::Session(SessionEvent::IncomingCall {
//!     call,
//!     session: ids.session(),
//!     from: Party::new("+15551234", "sip:+15551234@example.test"),
//!     to: "support".into(),
//!     offer: None,
//!     requested_skills: vec![],
//!     requested_priority: None,
//! });
//! assert_eq!(ev.priority(), Priority::Critical);
//! assert_eq!(ev.topic(), topics::SESSION_EVENTS);
//! assert_eq!(ev.call(), Some(call));
//! assert_eq!(ev.correlation(), CorrelationId::from(call));
//! ```

mod agent;
mod call;
mod common;
mod ids;
mod media;
mod queue;
mod session;

pub use agent::{
    AgentActivity, AgentCommand, AgentEvent, AgentStatus, MembershipTerms, RejectReason,
};
pub use call::{CallCommand, CallEvent};
pub use common::{Codec, Disposition, HangupCause, Leg, Party, Sdp, Side, TransferKind};
pub use ids::{AgentId, BridgeId, CallId, EndpointId, IdAllocator, PlaybackId, QueueId, SessionId};
pub use media::{AudioSource, MediaCommand, MediaEvent, StreamQuality};
pub use queue::{Health, LeaveReason, QueueEvent, QueueSnapshot, ResourceEvent};
pub use session::{SessionCommand, SessionEvent};

/// The correlation id of the bus envelope, re-exported so that every id of the taxonomy
/// comes from this crate: a [`CallId`] converts into one (`CorrelationId::from(call)`,
/// and back), an agent's is [`AgentId::correlation`], and [`EngineEvent::correlation`]
/// picks the right one for any message. It is the very type of `call_engine_bus` (not a
/// copy), so envelopes and stores accept it as is.
pub use call_engine_bus::CorrelationId;

use call_engine_bus::{Message, Priority, Topic};
use serde::{Deserialize, Serialize};

/// Bus topics: one per domain and direction.
pub mod topics {
    use call_engine_bus::{Topic, TopicSet};

    /// Events from the session adapter.
    pub const SESSION_EVENTS: Topic = Topic::new(0);
    /// Commands for the session adapter.
    pub const SESSION_COMMANDS: Topic = Topic::new(1);
    /// Events from the media adapter.
    pub const MEDIA_EVENTS: Topic = Topic::new(2);
    /// Commands for the media adapter.
    pub const MEDIA_COMMANDS: Topic = Topic::new(3);
    /// Events from the call state machine.
    pub const CALL_EVENTS: Topic = Topic::new(4);
    /// Commands for calls.
    pub const CALL_COMMANDS: Topic = Topic::new(5);
    /// Events from the agent state machine.
    pub const AGENT_EVENTS: Topic = Topic::new(6);
    /// Commands for agents.
    pub const AGENT_COMMANDS: Topic = Topic::new(7);
    /// Queue events.
    pub const QUEUE_EVENTS: Topic = Topic::new(8);
    /// Resource and health reports.
    pub const RESOURCE_EVENTS: Topic = Topic::new(9);

    /// Every event topic (not commands): what a recorder or the API listens to.
    pub const ALL_EVENTS: TopicSet = TopicSet::of(&[
        SESSION_EVENTS,
        MEDIA_EVENTS,
        CALL_EVENTS,
        AGENT_EVENTS,
        QUEUE_EVENTS,
        RESOURCE_EVENTS,
    ]);
    /// Every command topic.
    pub const ALL_COMMANDS: TopicSet = TopicSet::of(&[
        SESSION_COMMANDS,
        MEDIA_COMMANDS,
        CALL_COMMANDS,
        AGENT_COMMANDS,
    ]);
}

/// Every message that travels on the engine's bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "domain", content = "message", rename_all = "snake_case")]
pub enum EngineEvent {
    /// From the session adapter.
    Session(SessionEvent),
    /// To the session adapter.
    SessionCommand(SessionCommand),
    /// From the media adapter.
    Media(MediaEvent),
    /// To the media adapter.
    MediaCommand(MediaCommand),
    /// From the call state machine.
    Call(CallEvent),
    /// To a call.
    CallCommand(CallCommand),
    /// From the agent state machine.
    Agent(AgentEvent),
    /// To an agent.
    AgentCommand(AgentCommand),
    /// From queues.
    Queue(QueueEvent),
    /// Resources and health.
    Resource(ResourceEvent),
}

impl Message for EngineEvent {
    fn priority(&self) -> Priority {
        match self {
            EngineEvent::Session(e) => e.priority(),
            EngineEvent::SessionCommand(c) => c.priority(),
            EngineEvent::Media(e) => e.priority(),
            EngineEvent::MediaCommand(c) => c.priority(),
            EngineEvent::Call(e) => e.priority(),
            EngineEvent::CallCommand(c) => c.priority(),
            EngineEvent::Agent(e) => e.priority(),
            EngineEvent::AgentCommand(c) => c.priority(),
            EngineEvent::Queue(e) => e.priority(),
            EngineEvent::Resource(e) => e.priority(),
        }
    }

    fn topic(&self) -> Topic {
        match self {
            EngineEvent::Session(_) => topics::SESSION_EVENTS,
            EngineEvent::SessionCommand(_) => topics::SESSION_COMMANDS,
            EngineEvent::Media(_) => topics::MEDIA_EVENTS,
            EngineEvent::MediaCommand(_) => topics::MEDIA_COMMANDS,
            EngineEvent::Call(_) => topics::CALL_EVENTS,
            EngineEvent::CallCommand(_) => topics::CALL_COMMANDS,
            EngineEvent::Agent(_) => topics::AGENT_EVENTS,
            EngineEvent::AgentCommand(_) => topics::AGENT_COMMANDS,
            EngineEvent::Queue(_) => topics::QUEUE_EVENTS,
            EngineEvent::Resource(_) => topics::RESOURCE_EVENTS,
        }
    }
}

impl EngineEvent {
    /// The call this message is about, if any.
    pub fn call(&self) -> Option<CallId> {
        use EngineEvent::*;
        match self {
            Session(e) => match e {
                SessionEvent::IncomingCall { call, .. }
                | SessionEvent::Ringing { call, .. }
                | SessionEvent::Answered { call, .. }
                | SessionEvent::Confirmed { call, .. }
                | SessionEvent::Rejected { call, .. }
                | SessionEvent::Terminated { call, .. }
                | SessionEvent::HoldChanged { call, .. }
                | SessionEvent::TransferRequested { call, .. }
                | SessionEvent::DtmfReceived { call, .. }
                | SessionEvent::DialogProbed { call, .. } => Some(*call),
                SessionEvent::TransactionTimedOut { call, .. } => *call,
                SessionEvent::Registered { .. }
                | SessionEvent::Unregistered { .. }
                | SessionEvent::AuthenticationFailed { .. }
                | SessionEvent::ContactProbed { .. } => None,
            },
            SessionCommand(c) => match c {
                session::SessionCommand::Answer { call, .. }
                | session::SessionCommand::Reject { call, .. }
                | session::SessionCommand::Invite { call, .. }
                | session::SessionCommand::Cancel { call, .. }
                | session::SessionCommand::Hangup { call, .. }
                | session::SessionCommand::SetHold { call, .. }
                | session::SessionCommand::Refer { call, .. }
                | session::SessionCommand::ProbeDialog { call, .. } => Some(*call),
                session::SessionCommand::Probe { .. } => None,
            },
            Media(e) => Some(match e {
                MediaEvent::EndpointReady { call, .. }
                | MediaEvent::EndpointFailed { call, .. }
                | MediaEvent::Bridged { call, .. }
                | MediaEvent::Unbridged { call, .. }
                | MediaEvent::PlaybackStarted { call, .. }
                | MediaEvent::PlaybackFinished { call, .. }
                | MediaEvent::DtmfDetected { call, .. }
                | MediaEvent::MediaTimeout { call, .. }
                | MediaEvent::Released { call, .. }
                | MediaEvent::Quality { call, .. } => *call,
            }),
            MediaCommand(c) => Some(match c {
                media::MediaCommand::Allocate { call, .. }
                | media::MediaCommand::SetRemote { call, .. }
                | media::MediaCommand::Bridge { call, .. }
                | media::MediaCommand::Unbridge { call, .. }
                | media::MediaCommand::Play { call, .. }
                | media::MediaCommand::StopPlayback { call, .. }
                | media::MediaCommand::Release { call, .. } => *call,
            }),
            Call(e) => Some(match e {
                CallEvent::Created { call, .. }
                | CallEvent::Queued { call, .. }
                | CallEvent::Offered { call, .. }
                | CallEvent::AgentRinging { call, .. }
                | CallEvent::OfferFailed { call, .. }
                | CallEvent::Connected { call, .. }
                | CallEvent::HoldChanged { call, .. }
                | CallEvent::TransferStarted { call, .. }
                | CallEvent::TransferCompleted { call, .. }
                | CallEvent::TransferFailed { call, .. }
                | CallEvent::TransferConsulting { call }
                | CallEvent::ConferenceStarted { call, .. }
                | CallEvent::ConferenceEnded { call }
                | CallEvent::Ended { call, .. } => *call,
            }),
            CallCommand(c) => Some(match c {
                call::CallCommand::Enqueue { call, .. }
                | call::CallCommand::OfferTo { call, .. }
                | call::CallCommand::Hangup { call, .. }
                | call::CallCommand::SetHold { call, .. }
                | call::CallCommand::Transfer { call, .. }
                | call::CallCommand::StartConference { call, .. }
                | call::CallCommand::AddToConference { call, .. }
                | call::CallCommand::RemoveFromConference { call, .. }
                | call::CallCommand::EndConference { call } => *call,
            }),
            Agent(e) => match e {
                AgentEvent::Reserved { call, .. }
                | AgentEvent::ReservationRejected { call, .. } => Some(*call),
                AgentEvent::StatusChanged { .. }
                | AgentEvent::ActivityChanged { .. }
                | AgentEvent::QueueMembership { .. }
                | AgentEvent::Repaired { .. } => None,
            },
            AgentCommand(c) => match c {
                agent::AgentCommand::Reserve { call, .. }
                | agent::AgentCommand::Release { call, .. } => Some(*call),
                agent::AgentCommand::SetStatus { .. } => None,
            },
            Queue(e) => match e {
                QueueEvent::CallerJoined { call, .. }
                | QueueEvent::CallerLeft { call, .. }
                | QueueEvent::CallerRefused { call, .. }
                | QueueEvent::PositionChanged { call, .. } => Some(*call),
                QueueEvent::Snapshot { .. } => None,
            },
            Resource(_) => None,
        }
    }

    /// The agent this message is about, if any.
    pub fn agent(&self) -> Option<&AgentId> {
        use EngineEvent::*;
        match self {
            Session(SessionEvent::Registered { agent, .. })
            | Session(SessionEvent::Unregistered { agent, .. })
            | Session(SessionEvent::ContactProbed { agent, .. })
            | SessionCommand(session::SessionCommand::Probe { agent, .. })
            | Call(CallEvent::Offered { agent, .. })
            | Call(CallEvent::AgentRinging { agent, .. })
            | Call(CallEvent::OfferFailed { agent, .. })
            | Call(CallEvent::Connected { agent, .. })
            | CallCommand(call::CallCommand::OfferTo { agent, .. }) => Some(agent),
            Call(CallEvent::TransferCompleted { agent, .. }) => agent.as_ref(),
            Agent(e) => Some(match e {
                AgentEvent::StatusChanged { agent, .. }
                | AgentEvent::ActivityChanged { agent, .. }
                | AgentEvent::Reserved { agent, .. }
                | AgentEvent::ReservationRejected { agent, .. }
                | AgentEvent::QueueMembership { agent, .. }
                | AgentEvent::Repaired { agent, .. } => agent,
            }),
            AgentCommand(c) => Some(match c {
                agent::AgentCommand::Reserve { agent, .. }
                | agent::AgentCommand::Release { agent, .. }
                | agent::AgentCommand::SetStatus { agent, .. } => agent,
            }),
            _ => None,
        }
    }

    /// The correlation id to publish this message under: its call, else its agent, else
    /// the default (0) for engine-wide reports.
    pub fn correlation(&self) -> CorrelationId {
        if let Some(c) = self.call() {
            return c.into();
        }
        if let Some(a) = self.agent() {
            return a.correlation();
        }
        CorrelationId::default()
    }
}

#[cfg(test)]
mod tests;
