//! Agent events and commands.

use crate::ids::{AgentId, CallId, QueueId};
use call_engine_bus::Priority;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// An agent's chosen status (what the agent or supervisor set).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AgentStatus {
    /// Not working.
    LoggedOut,
    /// Takes calls.
    Available,
    /// Takes calls like `Available` (mod_callcenter's "Available (On Demand)"), but
    /// is put `OnBreak { reason: "on-demand" }` automatically when a connected call of
    /// theirs ends: one call, then the agent must make themselves available again.
    AvailableOnDemand,
    /// On a break, with a reason ("lunch", "auto: no answer"…).
    OnBreak {
        /// Why.
        reason: SmolStr,
    },
}

/// What an agent is doing right now (derived from calls, not chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentActivity {
    /// Nothing; can be offered a call if available.
    Idle,
    /// Reserved for a call, not yet ringing.
    Reserved,
    /// Phone ringing.
    Ringing,
    /// Talking.
    OnCall,
    /// After-call work.
    WrapUp,
    /// In a reject, busy or no-answer delay before the next offer.
    Delayed,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The agent is not available (logged out, on break).
    NotAvailable,
    /// The agent is at max concurrent calls.
    AtCapacity,
    /// The agent is in a reject/busy/no-answer delay or wrap-up.
    Delayed,
    /// The agent has no registered contact.
    NotRegistered,
}

/// The terms of an agent's membership of a queue (by default level 1, position 0,
/// penalty 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MembershipTerms {
    /// Tier level (1 = first line).
    pub level: u8,
    /// Position within the queue (member order).
    pub position: u32,
    /// Penalty (0 = best).
    pub penalty: u32,
}

impl Default for MembershipTerms {
    fn default() -> Self {
        Self {
            level: 1,
            position: 0,
            penalty: 0,
        }
    }
}

/// What happened to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Status changed.
    StatusChanged {
        /// The agent.
        agent: AgentId,
        /// New status.
        status: AgentStatus,
    },
    /// Activity changed.
    ActivityChanged {
        /// The agent.
        agent: AgentId,
        /// New activity.
        activity: AgentActivity,
        /// Calls the agent handles now.
        active_calls: u16,
    },
    /// The agent was reserved for a call.
    Reserved {
        /// The agent.
        agent: AgentId,
        /// The call.
        call: CallId,
    },
    /// A reservation was refused.
    ReservationRejected {
        /// The agent.
        agent: AgentId,
        /// The call.
        call: CallId,
        /// Why.
        reason: RejectReason,
    },
    /// The agent joined or left a queue.
    QueueMembership {
        /// The agent.
        agent: AgentId,
        /// The queue.
        queue: QueueId,
        /// Joined (true) or left.
        member: bool,
        /// Joined: the tier level, position and penalty of the membership (absent in
        /// logs written before they were recorded: level 1, position 0, penalty 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terms: Option<MembershipTerms>,
    },
    /// The reconciler found and repaired an inconsistent agent state.
    Repaired {
        /// The agent.
        agent: AgentId,
        /// What was wrong.
        detail: SmolStr,
    },
}

impl AgentEvent {
    /// The bus priority of this event.
    pub fn priority(&self) -> Priority {
        use AgentEvent::*;
        match self {
            Reserved { .. } | ReservationRejected { .. } | Repaired { .. } => Priority::Critical,
            StatusChanged { .. } | ActivityChanged { .. } | QueueMembership { .. } => {
                Priority::High
            }
        }
    }
}

/// What an agent is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentCommand {
    /// Reserve the agent for a call, for at most `ttl_ms`.
    Reserve {
        /// The agent.
        agent: AgentId,
        /// The call.
        call: CallId,
        /// Reservation lifetime, milliseconds.
        ttl_ms: u32,
    },
    /// Release a reservation without a call.
    Release {
        /// The agent.
        agent: AgentId,
        /// The call.
        call: CallId,
    },
    /// Set the agent's status.
    SetStatus {
        /// The agent.
        agent: AgentId,
        /// New status.
        status: AgentStatus,
    },
}

impl AgentCommand {
    /// The bus priority of this command.
    pub fn priority(&self) -> Priority {
        use AgentCommand::*;
        match self {
            Reserve { .. } | Release { .. } => Priority::Critical,
            SetStatus { .. } => Priority::High,
        }
    }
}
