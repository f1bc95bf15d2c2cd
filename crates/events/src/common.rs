//! Vocabulary shared by several domains.

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// A SIP party as seen in From/To/P-Asserted-Identity: the display name and the user
/// part are what an agent's phone shows as caller id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Party {
    /// Display name, if any (`"Jane Doe" <sip:…>`).
    pub display_name: Option<SmolStr>,
    /// User part of the URI (`+15551234` in `sip:+15551234@example.test`).
    pub user: SmolStr,
    /// The full URI.
    pub uri: SmolStr,
}

impl Party {
    /// A party with a user part and URI and no display name.
    pub fn new(user: impl AsRef<str>, uri: impl AsRef<str>) -> Self {
        Self {
            display_name: None,
            user: SmolStr::new(user),
            uri: SmolStr::new(uri),
        }
    }
}

/// An SDP body, shared cheaply between events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sdp(pub SmolStr);

/// Which leg of a call-center call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// The caller.
    Customer,
    /// The agent currently handling the call.
    Agent,
    /// A consultation/transfer target (attended transfer, conference).
    Consult,
    /// A supervisor listening, whispering or barging.
    Supervisor,
}

/// Who ended a call (or a leg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The customer hung up.
    Customer,
    /// The agent hung up.
    Agent,
    /// The engine ended it (timeout, shutdown, policy, failure).
    Engine,
}

/// Why a leg or call ended, in SIP-neutral terms (the session adapter maps status codes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum HangupCause {
    /// Ordinary hang-up (BYE).
    Normal,
    /// The callee was busy (486).
    Busy,
    /// The callee declined (603).
    Declined,
    /// Nobody answered in time.
    NoAnswer,
    /// The caller gave up before being answered (CANCEL).
    Cancelled,
    /// The target does not exist (404).
    NotFound,
    /// A transport or protocol failure.
    Failure {
        /// What failed.
        detail: SmolStr,
    },
    /// The engine is shutting down.
    Shutdown,
    /// A SIP final status the taxonomy has no name for.
    Status {
        /// The SIP status code.
        code: u16,
    },
}

/// How a call ended, as recorded in its call detail record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// An agent answered.
    Answered,
    /// The caller hung up before an agent answered.
    Abandoned,
    /// No agent could take the call (none logged in, queue closed, max wait reached).
    NoAgent,
    /// The call failed (transport, media or protocol error).
    Failed,
    /// Refused before it was answered: the queue was full or closed, no agent could
    /// join it, the caller was blocked, or the number is no queue (its SIP status is in
    /// the record's cause).
    Refused,
}

/// Kind of transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Transfer without consultation.
    Blind,
    /// Transfer after the agent spoke with the target.
    Attended,
}

/// Audio codec negotiated on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 µ-law (payload type 0).
    Pcmu,
    /// G.711 A-law (payload type 8).
    Pcma,
}
