//! Call-level events (what the call state machine reports) and commands (what policy asks
//! of a call).

use crate::common::{Disposition, HangupCause, Party, Side, TransferKind};
use crate::ids::{AgentId, CallId, QueueId};
use call_engine_bus::Priority;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// What happened to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEvent {
    /// A call was created for an inbound customer.
    Created {
        /// The call.
        call: CallId,
        /// The caller.
        caller: Party,
        /// What they dialed.
        dialed: SmolStr,
    },
    /// The call entered a queue.
    Queued {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
        /// Required skills.
        skills: Vec<SmolStr>,
    },
    /// The call is being offered to an agent (their phone will ring).
    Offered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The offered agent's phone rings.
    AgentRinging {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The offer failed (no answer, busy, declined); the call goes back to its queue.
    OfferFailed {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// Why.
        cause: HangupCause,
    },
    /// Customer and agent are connected.
    Connected {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// Hold state changed.
    HoldChanged {
        /// The call.
        call: CallId,
        /// On hold now.
        on_hold: bool,
    },
    /// A transfer started.
    TransferStarted {
        /// The call.
        call: CallId,
        /// Blind or attended.
        kind: TransferKind,
        /// Target (agent, queue or URI).
        target: SmolStr,
    },
    /// Attended transfer: the target answered the consultation call and is talking with
    /// the transferring agent while the customer waits on hold.
    TransferConsulting {
        /// The call.
        call: CallId,
    },
    /// A transfer completed; the call now belongs to the target.
    TransferCompleted {
        /// The call.
        call: CallId,
        /// New agent, when the target was an agent.
        agent: Option<AgentId>,
    },
    /// A transfer failed; the call is back with the transferring agent.
    TransferFailed {
        /// The call.
        call: CallId,
        /// Why.
        cause: HangupCause,
    },
    /// A conference was formed.
    ConferenceStarted {
        /// The call.
        call: CallId,
        /// Participants beyond customer and agent.
        participants: u16,
    },
    /// The conference's added participants have left; customer and agent remain.
    ConferenceEnded {
        /// The call.
        call: CallId,
    },
    /// The call ended: every leg is gone.
    Ended {
        /// The call.
        call: CallId,
        /// How it ended.
        disposition: Disposition,
        /// Who hung up.
        hung_up_by: Side,
        /// Why.
        cause: HangupCause,
    },
}

impl CallEvent {
    /// The bus priority of this event.
    pub fn priority(&self) -> Priority {
        use CallEvent::*;
        match self {
            Created { .. } | Connected { .. } | Ended { .. } | OfferFailed { .. } => {
                Priority::Critical
            }
            HoldChanged { .. }
            | TransferStarted { .. }
            | TransferConsulting { .. }
            | TransferCompleted { .. }
            | TransferFailed { .. }
            | ConferenceStarted { .. }
            | ConferenceEnded { .. } => Priority::High,
            Queued { .. } | Offered { .. } | AgentRinging { .. } => Priority::Normal,
        }
    }
}

/// What a call is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallCommand {
    /// Put the call in a queue.
    Enqueue {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
    },
    /// Ring an agent (who has been reserved for this call).
    OfferTo {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// Where to ring.
        contact: SmolStr,
        /// Ring timeout, seconds.
        ring_timeout_secs: u32,
    },
    /// Hang up the whole call.
    Hangup {
        /// The call.
        call: CallId,
        /// Why.
        cause: HangupCause,
    },
    /// Hold or resume the customer.
    SetHold {
        /// The call.
        call: CallId,
        /// Hold or resume.
        hold: bool,
    },
    /// Transfer the call.
    Transfer {
        /// The call.
        call: CallId,
        /// Blind or attended.
        kind: TransferKind,
        /// Target.
        target: SmolStr,
    },
    /// Turn a connected call (customer and agent, held or not) into a conference: dial
    /// each target on a leg of its own and bridge it with the customer and the agent
    /// when it answers. Reported by [`CallEvent::ConferenceStarted`]; targets that fail
    /// to answer are left out. Refused for a call that is not connected.
    StartConference {
        /// The call.
        call: CallId,
        /// Parties to bring in (agent, queue or URI, as for
        /// [`Transfer`](CallCommand::Transfer)); at least one.
        targets: Vec<SmolStr>,
    },
    /// Bring one more party into a call that is already a conference (see
    /// [`StartConference`](CallCommand::StartConference)). Reported by a
    /// [`CallEvent::ConferenceStarted`] with the new participant count. Refused for a call
    /// that is not in conference.
    AddToConference {
        /// The call.
        call: CallId,
        /// The party to add (agent, queue or URI).
        target: SmolStr,
    },
    /// Drop one added participant from a conference (hang up their leg). The customer
    /// and the agent stay; when the last added participant leaves, the call is a
    /// two-party call again.
    RemoveFromConference {
        /// The call.
        call: CallId,
        /// The participant to drop, as it was named in
        /// [`StartConference`](CallCommand::StartConference) or
        /// [`AddToConference`](CallCommand::AddToConference).
        target: SmolStr,
    },
    /// End the conference: hang up every added participant, leaving the customer and the
    /// agent connected. (To end the whole call use [`Hangup`](CallCommand::Hangup).)
    EndConference {
        /// The call.
        call: CallId,
    },
}

impl CallCommand {
    /// The bus priority of this command.
    pub fn priority(&self) -> Priority {
        use CallCommand::*;
        match self {
            Enqueue { .. } | OfferTo { .. } | Hangup { .. } => Priority::Critical,
            // Mid-call changes and features. Ending a conference drops added legs
            // only, never the call, so it is not teardown.
            SetHold { .. }
            | Transfer { .. }
            | StartConference { .. }
            | AddToConference { .. }
            | RemoveFromConference { .. }
            | EndConference { .. } => Priority::High,
        }
    }
}
