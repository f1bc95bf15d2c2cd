//! The records the store keeps, independent of the database behind it.

use call_engine_bus::{CorrelationId, EventId, Priority, Timestamp};
use call_engine_events::{AgentId, CallId, Disposition, EngineEvent, HangupCause, QueueId, Side};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock instant in UTC, as whole milliseconds since the Unix epoch. This is how
/// every timestamp is stored (an integer column), so values compare and range-filter
/// cheaply in any database.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The current wall-clock time (0 if the clock is before 1970).
    pub fn now() -> UnixMillis {
        UnixMillis::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime` (saturating: 0 before the epoch, `u64::MAX` far after).
    pub fn from_system_time(t: SystemTime) -> UnixMillis {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds (with fraction) from `earlier` to `self`, 0 if `earlier` is later.
    pub fn secs_since(self, earlier: UnixMillis) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 / 1000.0
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// An agent as configured: who they are, which queues they serve, how many calls they
/// take at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The id the agent registers with (`sip:<id>@<domain>`). Not empty.
    pub id: AgentId,
    /// Name shown to supervisors.
    pub display_name: String,
    /// The queues the agent serves, in the order given (each at most once; each must
    /// exist, see [`Store::upsert_queue`](crate::Store::upsert_queue)).
    #[serde(default)]
    pub queues: Vec<QueueId>,
    /// How many calls the agent may handle at once.
    pub max_calls: u32,
    /// When the agent was first stored. Set by the store; ignored on upsert.
    #[serde(default)]
    pub created_at: UnixMillis,
    /// When the agent was last stored. Set by the store; ignored on upsert.
    #[serde(default)]
    pub updated_at: UnixMillis,
}

impl AgentRecord {
    /// An agent in no queue, taking one call at a time.
    pub fn new(id: impl Into<AgentId>, display_name: impl Into<String>) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            display_name: display_name.into(),
            queues: Vec::new(),
            max_calls: 1,
            created_at: UnixMillis::default(),
            updated_at: UnixMillis::default(),
        }
    }
}

/// A queue as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRecord {
    /// The queue's name (`sip:<name>@<domain>`). Not empty.
    pub name: QueueId,
    /// Routing strategy name (`longest_idle`, `round_robin`, …): interpreted by the
    /// orchestrator, stored as given.
    pub strategy: String,
    /// Music on hold: the audio source callers hear while waiting, if any.
    #[serde(default)]
    pub moh: Option<String>,
    /// How long an agent's phone rings before the call is offered to someone else.
    pub ring_timeout_secs: u32,
    /// Further settings, free-form JSON (stored as text).
    #[serde(default)]
    pub settings: serde_json::Value,
    /// When the queue was first stored. Set by the store; ignored on upsert.
    #[serde(default)]
    pub created_at: UnixMillis,
    /// When the queue was last stored. Set by the store; ignored on upsert.
    #[serde(default)]
    pub updated_at: UnixMillis,
}

impl QueueRecord {
    /// A queue with the given strategy, no music on hold, a 20 s ring timeout and empty
    /// settings.
    pub fn new(name: impl Into<QueueId>, strategy: impl Into<String>) -> QueueRecord {
        QueueRecord {
            name: name.into(),
            strategy: strategy.into(),
            moh: None,
            ring_timeout_secs: 20,
            settings: serde_json::Value::Object(serde_json::Map::new()),
            created_at: UnixMillis::default(),
            updated_at: UnixMillis::default(),
        }
    }
}

/// A call detail record: one row per call, written when the call ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdr {
    /// The call (primary key: a call has at most one record).
    pub call_id: CallId,
    /// The queue the call waited in, if it reached one.
    pub queue: Option<QueueId>,
    /// User part of the caller's URI (caller id).
    pub caller_user: String,
    /// Caller's display name, if any.
    pub caller_display: Option<String>,
    /// Caller's full URI.
    pub caller_uri: String,
    /// The agent who answered, if any.
    pub agent: Option<AgentId>,
    /// When the call entered its queue, if it did.
    pub entered_queue_at: Option<UnixMillis>,
    /// When an agent answered, if one did.
    pub agent_answered_at: Option<UnixMillis>,
    /// When the call ended. Time filters and ordering of [`CdrQuery`] use this.
    pub ended_at: UnixMillis,
    /// Seconds waited in the queue (finite, not negative).
    pub wait_secs: f64,
    /// Seconds talked with an agent (finite, not negative).
    pub talk_secs: f64,
    /// How the call ended.
    pub disposition: Disposition,
    /// Who hung up.
    pub hung_up_by: Side,
    /// Why, as a short label (see [`hangup_cause_label`]).
    pub hangup_cause: String,
}

/// A short, stable label for a hang-up cause, as stored in [`Cdr::hangup_cause`]:
/// `normal`, `busy`, `declined`, `no_answer`, `cancelled`, `not_found`, `shutdown`,
/// `failure: <detail>`, `sip <code>`.
pub fn hangup_cause_label(cause: &HangupCause) -> String {
    match cause {
        HangupCause::Normal => "normal".into(),
        HangupCause::Busy => "busy".into(),
        HangupCause::Declined => "declined".into(),
        HangupCause::NoAnswer => "no_answer".into(),
        HangupCause::Cancelled => "cancelled".into(),
        HangupCause::NotFound => "not_found".into(),
        HangupCause::Failure { detail } => format!("failure: {detail}"),
        HangupCause::Shutdown => "shutdown".into(),
        HangupCause::Status { code } => format!("sip {code}"),
    }
}

/// Which call detail records to list or count. Every filter is optional; the default
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrQuery {
    /// Only calls that ended at or after this instant.
    pub since: Option<UnixMillis>,
    /// Only calls that ended strictly before this instant.
    pub until: Option<UnixMillis>,
    /// Only calls of this queue.
    pub queue: Option<QueueId>,
    /// Only calls answered by this agent.
    pub agent: Option<AgentId>,
    /// Only calls with this disposition.
    pub disposition: Option<Disposition>,
    /// At most this many records (listing only; no limit if `None`).
    pub limit: Option<u32>,
    /// Skip this many records first (listing only).
    pub offset: u32,
}

/// What [`Store::insert_cdr`](crate::Store::insert_cdr) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdrInsert {
    /// The record was new and was stored.
    Inserted,
    /// A record for this call already existed; it was kept unchanged (first write wins,
    /// so a retried or replayed insert is harmless).
    AlreadyExists,
}

/// One entry of the event log: an [`Envelope`](call_engine_bus::Envelope) as it was
/// appended, plus where it sits in the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Position in the log: strictly increasing in append order, across restarts.
    pub seq: u64,
    /// The bus's event id. Unique within one bus's lifetime only (a restarted engine
    /// counts again), so it is not a key of the log.
    pub id: EventId,
    /// The correlation id (the call, or an agent's stable id).
    pub correlation: CorrelationId,
    /// The event that caused this one, if any.
    pub causation: Option<EventId>,
    /// The component that published it.
    pub source: String,
    /// Its lane.
    pub priority: Priority,
    /// The bus's monotonic timestamp (nanoseconds since that bus's origin).
    pub timestamp: Timestamp,
    /// Wall-clock time it was appended to the log.
    pub recorded_at: UnixMillis,
    /// `domain.type` of the payload (`call.ended`, `session.incoming_call`, …).
    pub kind: String,
    /// The event.
    pub payload: EngineEvent,
}
