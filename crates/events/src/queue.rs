//! Queue events, resources and health.

use crate::ids::{CallId, QueueId};
use call_engine_bus::Priority;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// Why a caller left a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// An agent answered.
    Answered,
    /// The caller hung up.
    Abandoned,
    /// Max wait reached or queue full: sent elsewhere.
    Overflow,
    /// Chose a callback.
    Callback,
    /// Hung up by policy (closed, no agents, max wait without overflow).
    Rejected,
}

/// Live queue snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Callers waiting.
    pub waiting: u32,
    /// Longest current wait, seconds.
    pub longest_wait_secs: u32,
    /// Agents available.
    pub agents_available: u32,
    /// Agents logged in.
    pub agents_logged_in: u32,
}

/// What happened in a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueueEvent {
    /// A caller joined.
    CallerJoined {
        /// The queue.
        queue: QueueId,
        /// The call.
        call: CallId,
        /// Position (1 = head).
        position: u32,
    },
    /// A caller left.
    CallerLeft {
        /// The queue.
        queue: QueueId,
        /// The call.
        call: CallId,
        /// Why.
        reason: LeaveReason,
        /// Time waited, milliseconds.
        waited_ms: u64,
    },
    /// A caller was refused before being answered (the queue was full or closed, no
    /// agent could take calls, the caller was blocked).
    CallerRefused {
        /// The queue.
        queue: QueueId,
        /// The call.
        call: CallId,
        /// The SIP status the caller got (486, 480, 403…).
        status: u16,
    },
    /// A caller's position changed.
    PositionChanged {
        /// The queue.
        queue: QueueId,
        /// The call.
        call: CallId,
        /// New position.
        position: u32,
    },
    /// Periodic statistics.
    Snapshot {
        /// The queue.
        queue: QueueId,
        /// The numbers.
        stats: QueueSnapshot,
    },
}

impl QueueEvent {
    /// The bus priority of this event.
    pub fn priority(&self) -> Priority {
        use QueueEvent::*;
        match self {
            // Progress of a call through its queue, like `CallEvent::Queued`; the
            // teardown of an abandoned caller is reported by the session and call
            // events themselves.
            CallerJoined { .. }
            | CallerLeft { .. }
            | CallerRefused { .. }
            | PositionChanged { .. } => Priority::Normal,
            Snapshot { .. } => Priority::Low,
        }
    }
}

/// Health of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Working.
    Healthy,
    /// Working with problems.
    Degraded,
    /// Not working.
    Failed,
}

/// Resource and health reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResourceEvent {
    /// A component reports its health.
    Health {
        /// Component name.
        component: SmolStr,
        /// State.
        health: Health,
    },
    /// A resource usage report (ports, sessions, memory).
    Usage {
        /// Component name.
        component: SmolStr,
        /// Resource name.
        resource: SmolStr,
        /// In use.
        used: u64,
        /// Limit.
        limit: u64,
    },
    /// A component failed and is being recovered (restart, failover).
    ComponentFailed {
        /// Component name.
        component: SmolStr,
        /// What happened.
        detail: SmolStr,
    },
    /// Admission control is shedding new calls (503 + Retry-After).
    ///
    /// High, not Low like the other resource reports: it is a control signal that
    /// admission control and routing act on, not a statistic. The Low lane sheds its
    /// oldest events when full, so as Low it could be dropped exactly when the engine is
    /// overloaded, the one moment it matters. (High is never shed: publishers wait.)
    Overloaded {
        /// Component name.
        component: SmolStr,
        /// Suggested Retry-After, seconds.
        retry_after_secs: u32,
    },
}

impl ResourceEvent {
    /// The bus priority of this event.
    pub fn priority(&self) -> Priority {
        use ResourceEvent::*;
        match self {
            ComponentFailed { .. } => Priority::Critical,
            // A control signal, see the variant.
            Overloaded { .. } => Priority::High,
            Health { .. } | Usage { .. } => Priority::Low,
        }
    }
}
