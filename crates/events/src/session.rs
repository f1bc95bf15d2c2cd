//! SIP sessions (dialogs), registrations and transactions, in SIP-neutral terms. Only the
//! session adapter produces these events and executes these commands.

use crate::common::{HangupCause, Party, Sdp};
use crate::ids::{AgentId, CallId, SessionId};
use call_engine_bus::Priority;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// What happened to a SIP session or registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A new inbound INVITE for a queue or extension.
    IncomingCall {
        /// The new call this session starts.
        call: CallId,
        /// The inbound dialog.
        session: SessionId,
        /// The caller.
        from: Party,
        /// The dialed target's user part (queue name or number).
        to: SmolStr,
        /// The caller's SDP offer, if the INVITE carried one.
        offer: Option<Sdp>,
        /// Skills requested by the caller's side (e.g. an `X-Skills` header).
        requested_skills: Vec<SmolStr>,
        /// Priority requested by the caller's side (an `X-Priority` header set by a
        /// trusted upstream IVR or SBC; higher is served first).
        #[serde(default)]
        requested_priority: Option<i32>,
    },
    /// The far end is ringing (180/183).
    Ringing {
        /// The call.
        call: CallId,
        /// The ringing outbound dialog.
        session: SessionId,
    },
    /// The far end answered (200 OK, ACK sent or received).
    Answered {
        /// The call.
        call: CallId,
        /// The answered dialog.
        session: SessionId,
        /// The far end's SDP.
        sdp: Option<Sdp>,
    },
    /// The caller acknowledged our 200 OK to their INVITE (the ACK arrived): the inbound
    /// dialog is confirmed. Until then the caller's address is unproven (a spoofed
    /// INVITE's source never ACKs), so nothing is sent to their media address and the
    /// call is not queued.
    Confirmed {
        /// The call.
        call: CallId,
        /// The confirmed inbound dialog.
        session: SessionId,
        /// The caller's SDP answer, when their INVITE had no offer (a late offer: our
        /// 200 carried the offer, and the ACK carries the answer). `None` otherwise, or
        /// when a late offer's ACK carried none (the call cannot have media).
        answer: Option<Sdp>,
    },
    /// An outbound INVITE failed with a final non-2xx response, or timed out.
    Rejected {
        /// The call.
        call: CallId,
        /// The failed dialog.
        session: SessionId,
        /// Why.
        cause: HangupCause,
    },
    /// A dialog ended (BYE from the far end, CANCEL of an inbound INVITE, or transport
    /// failure).
    Terminated {
        /// The call.
        call: CallId,
        /// The dialog that ended.
        session: SessionId,
        /// Why.
        cause: HangupCause,
    },
    /// The far end put us on hold or resumed (re-INVITE with a=sendonly/inactive or back).
    HoldChanged {
        /// The call.
        call: CallId,
        /// The dialog.
        session: SessionId,
        /// Whether the far end holds.
        on_hold: bool,
    },
    /// The far end asked to transfer (REFER).
    TransferRequested {
        /// The call.
        call: CallId,
        /// The dialog that sent REFER.
        session: SessionId,
        /// Refer-To target.
        target: SmolStr,
    },
    /// A DTMF digit arrived via SIP INFO.
    DtmfReceived {
        /// The call.
        call: CallId,
        /// The dialog.
        session: SessionId,
        /// The digit, `0-9*#A-D`.
        digit: char,
    },
    /// An agent registered or refreshed a contact.
    Registered {
        /// The agent.
        agent: AgentId,
        /// The contact URI (where to send INVITEs).
        contact: SmolStr,
        /// Granted expiry, seconds.
        expires_secs: u32,
    },
    /// A contact was removed (Expires: 0) or expired.
    Unregistered {
        /// The agent.
        agent: AgentId,
        /// The contact removed.
        contact: SmolStr,
        /// True when it expired rather than being removed by the phone.
        expired: bool,
    },
    /// A REGISTER failed authentication.
    AuthenticationFailed {
        /// The username presented.
        username: SmolStr,
        /// Where it came from (`ip:port`).
        source: SmolStr,
    },
    /// A SIP transaction got no final response in time (Timer B/F) or its transport
    /// failed: the session adapter gave up on it. Failure recovery, so Critical.
    TransactionTimedOut {
        /// The call, if the transaction belonged to one.
        call: Option<CallId>,
        /// The dialog, if any.
        session: Option<SessionId>,
        /// The request method (`INVITE`, `BYE`, `OPTIONS`…).
        method: SmolStr,
    },
    /// Result of an in-dialog OPTIONS probe ([`SessionCommand::ProbeDialog`]). A dialog
    /// the far end no longer knows (481, 408 or no answer at all) is dead: a
    /// [`SessionEvent::Terminated`] for it follows at once.
    DialogProbed {
        /// The call.
        call: CallId,
        /// The dialog probed.
        session: SessionId,
        /// Whether the far end still has the dialog.
        alive: bool,
        /// The final status it answered, if it answered.
        status: Option<u16>,
    },
    /// Result of an OPTIONS probe to a contact (reconciliation keepalive).
    ContactProbed {
        /// The agent.
        agent: AgentId,
        /// The contact.
        contact: SmolStr,
        /// Whether it answered.
        reachable: bool,
    },
}

impl SessionEvent {
    /// The bus priority of this event.
    pub fn priority(&self) -> Priority {
        use SessionEvent::*;
        match self {
            IncomingCall { .. }
            | Answered { .. }
            | Confirmed { .. }
            | Rejected { .. }
            | Terminated { .. }
            | Registered { .. }
            | Unregistered { .. }
            | AuthenticationFailed { .. }
            | TransactionTimedOut { .. }
            | DialogProbed { alive: false, .. } => Priority::Critical,
            // A live dialog is routine reconciliation traffic.
            DialogProbed { alive: true, .. } => Priority::Low,
            HoldChanged { .. } | TransferRequested { .. } | DtmfReceived { .. } => Priority::High,
            Ringing { .. } => Priority::Normal,
            ContactProbed { .. } => Priority::Low,
        }
    }
}

/// What the session adapter is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionCommand {
    /// Answer an inbound session with 200 OK and this SDP.
    Answer {
        /// The call.
        call: CallId,
        /// The inbound dialog.
        session: SessionId,
        /// Our SDP answer.
        sdp: Sdp,
    },
    /// Refuse an inbound session with a final status (404, 486, 503…).
    Reject {
        /// The call.
        call: CallId,
        /// The inbound dialog.
        session: SessionId,
        /// SIP status code.
        status: u16,
        /// Retry-After seconds, for 503.
        retry_after_secs: Option<u32>,
    },
    /// Place an outbound call (to an agent's contact, a transfer target, a callback).
    Invite {
        /// The call.
        call: CallId,
        /// The new outbound dialog's id (chosen by the requester).
        session: SessionId,
        /// Request-URI (the agent's registered contact).
        target: SmolStr,
        /// Caller id to present (From display/user and P-Asserted-Identity).
        caller: Party,
        /// Our SDP offer.
        sdp: Sdp,
    },
    /// Cancel an unanswered outbound INVITE.
    Cancel {
        /// The call.
        call: CallId,
        /// The ringing dialog.
        session: SessionId,
    },
    /// End an established dialog (BYE).
    Hangup {
        /// The call.
        call: CallId,
        /// The dialog.
        session: SessionId,
    },
    /// Put the far end on hold or resume it (re-INVITE).
    SetHold {
        /// The call.
        call: CallId,
        /// The dialog.
        session: SessionId,
        /// Hold (true) or resume (false).
        hold: bool,
    },
    /// Ask the far end to call someone else (REFER).
    Refer {
        /// The call.
        call: CallId,
        /// The dialog.
        session: SessionId,
        /// Refer-To target.
        target: SmolStr,
    },
    /// Check that the far end still has an established dialog: OPTIONS inside the
    /// dialog (reconciliation of lost BYEs). Answered by [`SessionEvent::DialogProbed`].
    /// Low, like [`Probe`](SessionCommand::Probe): a routine health probe.
    ProbeDialog {
        /// The call.
        call: CallId,
        /// The dialog.
        session: SessionId,
    },
    /// Probe a contact with OPTIONS.
    Probe {
        /// The agent.
        agent: AgentId,
        /// The contact.
        contact: SmolStr,
    },
}

impl SessionCommand {
    /// The bus priority of this command.
    pub fn priority(&self) -> Priority {
        use SessionCommand::*;
        match self {
            Answer { .. } | Reject { .. } | Invite { .. } | Cancel { .. } | Hangup { .. } => {
                Priority::Critical
            }
            SetHold { .. } | Refer { .. } => Priority::High,
            // Routine health probes (reconciliation keepalives), like the `DialogProbed {
            // alive: true }` most of them get back: a dead dialog is reported Critical by
            // the answer, not by the question. Being Low, a probe may be shed under load;
            // the next reconciler pass asks again.
            ProbeDialog { .. } | Probe { .. } => Priority::Low,
        }
    }
}
