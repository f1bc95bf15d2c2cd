//! The core: one task that owns every transaction, dialog ("leg") and registration, fed
//! by the transport (inbound messages), the bus (session commands) and its own timer
//! heap. Nothing in here waits: sends are queued to the transport; events are published
//! at once when the bus has room and none waits before them, else queued to the
//! publisher task.
//!
//! - `inbound.rs`: requests we receive (server transactions, UAS dialogs, in-dialog
//!   requests, CANCEL/ACK/BYE).
//! - `outbound.rs`: requests we send (client transactions, UAC dialogs) and the
//!   responses to them; the session commands.
//! - `register.rs`: REGISTER.

mod inbound;
mod outbound;
mod register;

use crate::config::SessionConfig;
use crate::msg::{self, InRequest, Parsed, SipBuf};
use crate::publish::Emitter;
use crate::registrar::Registrar;
use crate::stats::Stats;
use crate::timer::{TimerKind, Timers};
use crate::transport::{Inbound, Peer, Transport, Transports};
use bytes::Bytes;
use call_engine_bus::{EventId, Receiver, RecvError};
use call_engine_events::{
    AgentId, CallId, EngineEvent, HangupCause, IdAllocator, Party, SessionCommand, SessionEvent,
    SessionId,
};
use rvoip_sip_core::Method;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Methods we accept (Allow header).
pub(crate) const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, REGISTER";

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A new From/To tag.
pub(crate) fn new_tag() -> String {
    random_hex(8)
}

/// A new RFC 3261 branch (with the magic cookie).
pub(crate) fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(10))
}

/// How a leg ended, for its one terminal event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// `SessionEvent::Terminated`.
    Terminated(HangupCause),
    /// `SessionEvent::Rejected` (an outbound INVITE that failed).
    Rejected(HangupCause),
}

/// The SIP-neutral cause of a final status.
pub(crate) fn status_cause(code: u16) -> HangupCause {
    match code {
        486 | 600 => HangupCause::Busy,
        603 => HangupCause::Declined,
        404 | 604 => HangupCause::NotFound,
        408 | 480 => HangupCause::NoAnswer,
        487 => HangupCause::Cancelled,
        code => HangupCause::Status { code },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// No final response yet.
    Proceeding,
    /// Non-2xx final sent (INVITE: waiting for the ACK; others: absorbing retransmits).
    Completed,
    /// ACK received for a non-2xx final.
    Confirmed,
    /// 2xx sent to an INVITE (RFC 6026): retransmitted INVITEs get the 2xx again.
    Accepted,
}

/// At most one report per source address per [`PerSource::WINDOW`].
#[derive(Default)]
pub(super) struct PerSource {
    last: HashMap<IpAddr, Instant>,
}

impl PerSource {
    const WINDOW: Duration = Duration::from_secs(1);
    /// Sources remembered at most (then forgotten at once: the next of each is reported).
    const MAX: usize = 4096;

    /// Whether something from `ip` at `now` is reported.
    pub(super) fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some(at) = self.last.get(&ip) {
            if now.saturating_duration_since(*at) < Self::WINDOW {
                return false;
            }
        } else if self.last.len() >= Self::MAX {
            self.last.clear();
        }
        self.last.insert(ip, now);
        true
    }
}

/// Peers whose route to us is remembered, at most (see `Core::local_ips`).
const MAX_LOCAL_IPS: usize = 4096;

/// What a server transaction costs besides its key and cached response (the map entry,
/// the timers that name it), in bytes, for the budget.
const SERVER_TXN_OVERHEAD: usize = 160;

struct ServerTxn {
    invite: bool,
    peer: Peer,
    last: Option<Bytes>,
    state: ServerState,
    interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// Sent, nothing heard (Calling / Trying).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// Final (non-2xx for INVITE) received.
    Completed,
    /// 2xx received to an INVITE: absorbing retransmitted 2xx (each re-ACKed).
    Accepted,
}

#[derive(Debug, Clone)]
enum Owner {
    Leg(SessionId),
    Probe {
        agent: AgentId,
        contact: String,
        cause: EventId,
    },
    /// An in-dialog OPTIONS checking that the far end still has the dialog.
    DialogProbe {
        session: SessionId,
        cause: EventId,
    },
    /// Fire and forget (a BYE of a leg already reported ended).
    Detached,
}

struct ClientTxn {
    method: Method,
    request: Bytes,
    peer: Peer,
    /// The TCP connection the request went out on: its response can come on it only.
    conn: Option<u64>,
    state: ClientState,
    interval: Duration,
    owner: Owner,
    /// The ACK of a non-2xx final response, resent on its retransmissions.
    ack: Option<Bytes>,
}

impl ClientTxn {
    /// Still waiting for a final response with its retransmission / timeout timers
    /// running: Trying, or Proceeding for a non-INVITE (a provisional response stops
    /// INVITE retransmissions).
    fn awaiting_final(&self) -> bool {
        match self.state {
            ClientState::Trying => true,
            ClientState::Proceeding => self.method != Method::Invite,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// Outbound: waiting for the target's host name to resolve.
    Resolving,
    /// Inbound: INVITE received, waiting for Answer or Reject.
    Offered,
    /// Outbound: INVITE sent, no final response yet.
    Calling,
    /// Inbound: 200 sent, waiting for the ACK.
    Accepted,
    /// Established.
    Confirmed,
    /// Our BYE is in flight.
    Terminating,
}

/// A 2xx being retransmitted until its ACK arrives.
struct OkRetx {
    bytes: Bytes,
    peer: Peer,
    interval: Duration,
    gen: u64,
    cseq: u32,
    initial: bool,
}

/// Outbound INVITE state.
struct Uac {
    target: String,
    caller: Party,
    transport: Transport,
    branch: String,
    provisional: bool,
    ringing: bool,
    cancel_requested: bool,
    cancel_sent: bool,
    cancel_cause: Option<EventId>,
    /// The CANCEL is ours (Timer C), not the engine's: the leg ends `Rejected(NoAnswer)`.
    timed_out: bool,
}

impl Uac {
    /// How a leg whose INVITE we cancelled ends, and the command that caused it.
    fn cancelled_end(&self, invite_cause: Option<EventId>) -> (End, Option<EventId>) {
        if self.timed_out {
            (End::Rejected(HangupCause::NoAnswer), invite_cause)
        } else {
            (
                End::Terminated(HangupCause::Cancelled),
                self.cancel_cause.or(invite_cause),
            )
        }
    }
}

/// One SIP dialog (or dialog being set up): a session in the taxonomy's terms.
struct Leg {
    call: CallId,
    session: SessionId,
    inbound: bool,
    state: LegState,
    sip_call_id: String,
    local_tag: String,
    /// Our From/To header value (with our tag).
    local_hdr: String,
    /// Their From/To header value (with their tag once known).
    remote_hdr: String,
    local_cseq: u32,
    remote_target: String,
    route_set: Vec<String>,
    /// The transport flow the dialog was set up over.
    flow: Peer,
    /// The SDP we last sent.
    local_sdp: Option<String>,
    remote_hold: bool,
    /// Inbound: the initial INVITE (to answer it later).
    invite: Option<Box<InRequest>>,
    ok: Option<OkRetx>,
    /// The command whose outcome the leg reports next (Invite, Answer, Hangup…).
    cause: Option<EventId>,
    hangup_pending: bool,
    uac: Option<Uac>,
    /// Inbound, and the INVITE carried no SDP (a late offer): our 200 carries the offer
    /// and the caller's ACK the answer.
    late_offer: bool,
    /// A re-INVITE without SDP was answered with our offer: its ACK carries the answer
    /// (whose hold state counts).
    reinvite_offered: bool,
}

struct CachedAck {
    bytes: Bytes,
    peer: Peer,
}

/// The channels the core listens on.
pub(crate) struct CoreInputs {
    pub inbound: mpsc::Receiver<Inbound>,
    /// The bus subscription to [`topics::SESSION_COMMANDS`](call_engine_events::topics),
    /// read here directly (no forwarding task in between).
    pub commands: Receiver<EngineEvent>,
    pub shutdown: oneshot::Receiver<()>,
}

pub(crate) struct Core {
    cfg: Arc<SessionConfig>,
    tp: Arc<Transports>,
    ids: Arc<IdAllocator>,
    emitter: Emitter,
    stats: Arc<Stats>,
    timers: Timers,
    reg: Registrar,
    server: HashMap<String, ServerTxn>,
    /// What `server` holds, in bytes (keys, cached responses and a fixed overhead per
    /// entry), bounded by [`SessionConfig::max_server_transaction_bytes`].
    server_bytes: usize,
    client: HashMap<String, ClientTxn>,
    legs: HashMap<SessionId, Leg>,
    /// Inbound legs waiting for the engine's Answer or Reject (state `Offered`), bounded
    /// by [`SessionConfig::max_offered_calls`].
    offered: usize,
    /// (SIP Call-ID, our tag) → leg.
    dialogs: HashMap<(String, String), SessionId>,
    /// ACKs of 2xx we received, by Call-ID|CSeq|To-tag, to re-ACK retransmissions.
    acks: HashMap<String, CachedAck>,
    /// Our address towards a peer's (when bound to an unspecified address), at most
    /// [`MAX_LOCAL_IPS`].
    local_ips: HashMap<IpAddr, IpAddr>,
    /// When each source last had an authentication failure reported.
    auth_failures: PerSource,
    gen: u64,
}

impl Core {
    pub fn new(
        cfg: Arc<SessionConfig>,
        tp: Arc<Transports>,
        ids: Arc<IdAllocator>,
        emitter: Emitter,
        stats: Arc<Stats>,
        reg: Registrar,
    ) -> Self {
        Self {
            cfg,
            tp,
            ids,
            emitter,
            stats,
            timers: Timers::default(),
            reg,
            server: HashMap::new(),
            server_bytes: 0,
            client: HashMap::new(),
            legs: HashMap::new(),
            offered: 0,
            dialogs: HashMap::new(),
            acks: HashMap::new(),
            local_ips: HashMap::new(),
            auth_failures: PerSource::default(),
            gen: 0,
        }
    }

    /// Runs until shutdown (or until the bus closes).
    pub async fn run(mut self, mut input: CoreInputs) {
        // One timer, moved when the earliest deadline changes (not a new one registered
        // for every message).
        let far = || Instant::now() + Duration::from_secs(86_400);
        let mut armed = self.timers.next_deadline();
        let sleep = tokio::time::sleep_until(armed.unwrap_or_else(far));
        tokio::pin!(sleep);
        loop {
            let deadline = self.timers.next_deadline();
            if deadline != armed {
                armed = deadline;
                sleep.as_mut().reset(deadline.unwrap_or_else(far));
            }
            tokio::select! {
                _ = &mut input.shutdown => break,
                _ = &mut sleep => {
                    if armed.is_some() {
                        self.fire_timers();
                    }
                    // Fired: armed again (at the next deadline, or far away) next turn.
                    armed = None;
                    sleep.as_mut().reset(far());
                }
                msg = input.inbound.recv() => match msg {
                    Some(m) => self.on_inbound(m),
                    None => break,
                },
                // Cancel-safe: `recv` takes an event only when it returns it.
                cmd = input.commands.recv() => match cmd {
                    Ok(ev) => {
                        // Moved out when ours alone (no copy).
                        let env = ev.into_envelope();
                        if let EngineEvent::SessionCommand(c) = env.payload {
                            self.on_command(c, env.id);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "session commands were shed by the bus (low priority lane)");
                    }
                    Err(RecvError::Closed) => {
                        warn!("the bus closed: the session adapter stops");
                        break;
                    }
                },
            }
        }
        self.shutdown_legs();
        info!("session core stopped");
    }

    fn on_inbound(&mut self, m: Inbound) {
        match m {
            Inbound::Data { data, peer } => self.on_data(data, peer),
            Inbound::ConnectionLost { peer, conn } => self.on_connection_lost(peer, conn),
            Inbound::Resolved { purpose, result } => self.on_resolved(purpose, result),
        }
    }

    fn on_data(&mut self, data: Bytes, peer: Peer) {
        match msg::parse(&data, peer) {
            Parsed::Request(req) => self.on_request(*req),
            Parsed::Response(resp) => self.on_response(*resp),
            Parsed::BadRequest { raw, reason } => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, reason, "malformed request: 400");
                let resp = msg::bad_request(&raw, peer.addr, &reason, &self.cfg.user_agent);
                self.tp.send(peer, resp);
            }
            Parsed::Garbage(reason) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, reason, len = data.len(), "unparsable message dropped");
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(kind) = self.timers.pop_due(now) {
            self.on_timer(kind);
        }
    }

    fn on_timer(&mut self, kind: TimerKind) {
        match kind {
            TimerKind::ServerRetransmit(key) => self.server_retransmit(&key),
            TimerKind::ServerExpire(key) => self.server_expire(&key),
            TimerKind::ClientRetransmit(key) => self.client_retransmit(&key),
            TimerKind::ClientTimeout(key) => self.client_timeout(&key, false),
            TimerKind::ClientExpire(key) => {
                self.client.remove(&key);
            }
            TimerKind::OkRetransmit(sid, gen) => self.ok_retransmit(sid, gen),
            TimerKind::OkTimeout(sid, gen) => self.ok_timeout(sid, gen),
            TimerKind::CancelGiveUp(sid) => self.cancel_give_up(sid),
            TimerKind::RingTimeout(sid) => self.ring_timeout(sid),
            TimerKind::BindingExpire(agent, contact) => self.binding_expire(&agent, &contact),
            TimerKind::AckExpire(key) => {
                self.acks.remove(&key);
            }
        }
    }

    fn on_command(&mut self, cmd: SessionCommand, id: EventId) {
        debug!(command = ?cmd, event = %id, "session command");
        match cmd {
            SessionCommand::Answer { call, session, sdp } => {
                self.cmd_answer(call, session, sdp.0.to_string(), id)
            }
            SessionCommand::Reject {
                call,
                session,
                status,
                retry_after_secs,
            } => self.cmd_reject(call, session, status, retry_after_secs, id),
            SessionCommand::Invite {
                call,
                session,
                target,
                caller,
                sdp,
            } => self.cmd_invite(
                call,
                session,
                target.to_string(),
                caller,
                sdp.0.to_string(),
                id,
            ),
            SessionCommand::Cancel { call, session } => self.cmd_cancel(call, session, id),
            SessionCommand::Hangup { call, session } => self.cmd_hangup(call, session, id),
            SessionCommand::Probe { agent, contact } => {
                self.cmd_probe(agent, contact.to_string(), id)
            }
            SessionCommand::ProbeDialog { call, session } => {
                self.cmd_probe_dialog(call, session, id)
            }
            SessionCommand::SetHold { call, session, .. }
            | SessionCommand::Refer { call, session, .. } => {
                warn!(%call, %session, command = ?cmd, "session command not supported yet; ignored");
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------

    fn emit(&self, event: SessionEvent, causation: Option<EventId>) {
        self.emitter.emit(event, causation);
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Ends a leg: removes it and emits its one terminal event.
    fn finish_leg(&mut self, sid: SessionId, end: End, causation: Option<EventId>) {
        let Some(leg) = self.legs.remove(&sid) else {
            return;
        };
        if leg.state == LegState::Offered {
            self.offered -= 1;
        }
        self.dialogs
            .remove(&(leg.sip_call_id.clone(), leg.local_tag.clone()));
        let (call, session) = (leg.call, leg.session);
        let event = match end {
            End::Terminated(cause) => {
                info!(%call, %session, sip_call_id = %leg.sip_call_id, ?cause, "session terminated");
                SessionEvent::Terminated {
                    call,
                    session,
                    cause,
                }
            }
            End::Rejected(cause) => {
                info!(%call, %session, sip_call_id = %leg.sip_call_id, ?cause, "outbound session rejected");
                SessionEvent::Rejected {
                    call,
                    session,
                    cause,
                }
            }
        };
        self.emit(event, causation);
    }

    /// Our host for Via/Contact towards `peer`.
    fn local_host(&mut self, peer: Peer) -> String {
        if let Some(h) = &self.cfg.advertised_host {
            return h.clone();
        }
        let bound = match peer.transport {
            Transport::Udp => self.tp.udp_addr.or(self.tp.tcp_addr),
            Transport::Tcp => self.tp.tcp_addr.or(self.tp.udp_addr),
        };
        let ip = match bound.map(|a| a.ip()) {
            Some(ip) if !ip.is_unspecified() => ip,
            _ => {
                let dest = peer.addr.ip();
                if self.local_ips.len() >= MAX_LOCAL_IPS && !self.local_ips.contains_key(&dest) {
                    // Every caller's address is remembered: forget them all now and then
                    // rather than grow without end (each is asked of the OS again).
                    self.local_ips.clear();
                }
                *self.local_ips.entry(dest).or_insert_with(|| route_ip(dest))
            }
        };
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    }

    fn local_port(&self, t: Transport) -> u16 {
        let a = match t {
            Transport::Udp => self.tp.udp_addr.or(self.tp.tcp_addr),
            Transport::Tcp => self.tp.tcp_addr.or(self.tp.udp_addr),
        };
        a.map(|a| a.port()).unwrap_or(5060)
    }

    /// A Via header value for a request we send to `peer`.
    fn via(&mut self, peer: Peer, branch: &str) -> String {
        let host = self.local_host(peer);
        let port = self.local_port(peer.transport);
        format!(
            "SIP/2.0/{} {host}:{port};branch={branch};rport",
            peer.transport
        )
    }

    /// Our Contact header value towards `peer`.
    fn contact(&mut self, peer: Peer) -> String {
        let host = self.local_host(peer);
        let port = self.local_port(peer.transport);
        match peer.transport {
            Transport::Udp => format!("<sip:call-engine@{host}:{port}>"),
            Transport::Tcp => format!("<sip:call-engine@{host}:{port};transport=tcp>"),
        }
    }

    /// A response to `req` with its headers copied (To tag added when it had none).
    fn response(&self, req: &InRequest, code: u16, to_tag: Option<&str>) -> SipBuf {
        msg::response_from_raw(&req.raw, req.peer.addr, code, to_tag, &self.cfg.user_agent)
    }

    /// Sends a response and records it in the request's server transaction, arming
    /// its timers.
    fn respond(&mut self, req: &InRequest, code: u16, resp: Bytes) {
        let key = req.server_key();
        let peer = req.response_peer();
        let invite = req.method == Method::Invite;
        self.tp.send(peer, resp.clone());
        let t1 = self.cfg.timers.t1;
        let timeout = self.cfg.timers.timeout();
        let txn = match self.server.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.server_bytes += key.len() + SERVER_TXN_OVERHEAD;
                e.insert(ServerTxn {
                    invite,
                    peer,
                    last: None,
                    state: ServerState::Proceeding,
                    interval: t1,
                })
            }
        };
        self.server_bytes += resp.len();
        if let Some(old) = txn.last.replace(resp) {
            self.server_bytes -= old.len();
        }
        txn.peer = peer;
        if code < 200 {
            txn.state = ServerState::Proceeding;
            return;
        }
        if invite && code < 300 {
            txn.state = ServerState::Accepted;
            self.timers.after(timeout, TimerKind::ServerExpire(key));
        } else if invite {
            txn.state = ServerState::Completed;
            txn.interval = t1;
            if peer.transport == Transport::Udp {
                self.timers
                    .after(t1, TimerKind::ServerRetransmit(key.clone()));
            }
            self.timers.after(timeout, TimerKind::ServerExpire(key));
        } else if peer.transport == Transport::Tcp {
            // Timer J is zero on a reliable transport (RFC 3261 17.2.2).
            self.server_expire(&key);
        } else {
            txn.state = ServerState::Completed;
            self.timers.after(timeout, TimerKind::ServerExpire(key));
        }
    }

    /// Whether a new server transaction would take more than the configured budget:
    /// the request is then answered 503 with Retry-After and remembered nowhere.
    pub(super) fn server_full(&self) -> bool {
        self.server_bytes >= self.cfg.max_server_transaction_bytes
    }

    /// A response without body, with a fresh To tag when the request had none.
    fn reply(&mut self, req: &InRequest, code: u16) {
        self.reply_with(req, code, |b| b);
    }

    fn reply_with(&mut self, req: &InRequest, code: u16, f: impl FnOnce(SipBuf) -> SipBuf) {
        let tag = req.to_tag.is_none().then(new_tag);
        let resp = f(self.response(req, code, tag.as_deref())).finish(None);
        self.respond(req, code, resp);
    }

    fn server_retransmit(&mut self, key: &str) {
        let t2 = self.cfg.timers.t2;
        let Some(txn) = self.server.get_mut(key) else {
            return;
        };
        if txn.state != ServerState::Completed || !txn.invite {
            return;
        }
        if let Some(last) = txn.last.clone() {
            self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
            self.tp.send(txn.peer, last);
        }
        txn.interval = (txn.interval * 2).min(t2);
        let next = txn.interval;
        self.timers
            .after(next, TimerKind::ServerRetransmit(key.to_string()));
    }

    fn server_expire(&mut self, key: &str) {
        if let Some(txn) = self.server.remove(key) {
            self.server_bytes -=
                key.len() + SERVER_TXN_OVERHEAD + txn.last.as_ref().map_or(0, Bytes::len);
            if txn.invite && txn.state == ServerState::Completed {
                debug!(key, "no ACK for a final response (Timer H)");
            }
        }
    }

    fn binding_expire(&mut self, agent: &AgentId, contact: &str) {
        if let Some(crate::registrar::Change::Removed { contact, expired }) =
            self.reg.expire(agent, contact, Instant::now())
        {
            info!(%agent, %contact, "registration expired");
            self.emit(
                SessionEvent::Unregistered {
                    agent: agent.clone(),
                    contact: contact.into(),
                    expired,
                },
                None,
            );
        }
    }

    /// Stops every leg: final responses, BYEs and CANCELs are sent once, and each leg
    /// reports `Terminated { cause: Shutdown }`.
    fn shutdown_legs(&mut self) {
        let sids: Vec<SessionId> = self.legs.keys().copied().collect();
        for sid in sids {
            let Some(leg) = self.legs.get(&sid) else {
                continue;
            };
            let state = leg.state;
            let invite = leg.invite.clone();
            let tag = leg.local_tag.clone();
            let can_cancel = leg
                .uac
                .as_ref()
                .is_some_and(|u| u.provisional && !u.cancel_sent);
            match state {
                LegState::Offered => {
                    if let Some(req) = invite {
                        let resp = self.response(&req, 503, Some(&tag)).finish(None);
                        self.respond(&req, 503, resp);
                    }
                }
                LegState::Accepted | LegState::Confirmed => self.send_bye(sid, Owner::Detached),
                LegState::Calling if can_cancel => self.send_cancel(sid),
                LegState::Calling | LegState::Resolving | LegState::Terminating => {}
            }
            self.finish_leg(sid, End::Terminated(HangupCause::Shutdown), None);
        }
    }
}

/// The local IP the OS would use to reach `dest` (no packet is sent).
fn route_ip(dest: IpAddr) -> IpAddr {
    let any: SocketAddr = match dest {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(SocketAddr::new(dest, 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(dest)
}
