//! Requests we send: outbound calls (UAC), CANCEL, BYE, OPTIONS probes; client
//! transactions and the responses to them.

use super::{
    new_branch, new_tag, status_cause, CachedAck, ClientState, ClientTxn, Core, End, Leg, LegState,
    Owner, Uac, ALLOW,
};
use crate::msg::{InResponse, SipBuf};
use crate::raw::{escape_user, quote, NameAddr, RawMessage};
use crate::timer::TimerKind;
use crate::transport::{Inbound, Peer, Resolve, Transport};
use bytes::Bytes;
use call_engine_bus::EventId;
use call_engine_events::{AgentId, CallId, HangupCause, Party, Sdp, SessionEvent, SessionId};
use rvoip_sip_core::types::uri::Scheme;
use rvoip_sip_core::{Host, Method, Uri};
use smol_str::SmolStr;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tracing::{debug, info, warn};

/// Where a request to a URI goes.
pub(super) enum Dest {
    Ready(Peer),
    Lookup {
        host: String,
        port: u16,
        transport: Transport,
    },
}

/// Parses a URI with rvoip-sip-core, never panicking.
fn parse_uri(s: &str) -> Option<Uri> {
    std::panic::catch_unwind(|| s.trim().parse::<Uri>())
        .ok()
        .and_then(Result::ok)
}

impl Core {
    /// Resolves a request target. `flow` is the dialog's transport flow: its transport
    /// is the default, and it is the fallback when the URI host is a name.
    pub(super) fn destination(&self, uri_text: &str, flow: Option<Peer>) -> Result<Dest, String> {
        let uri = parse_uri(uri_text).ok_or_else(|| format!("unparsable URI {uri_text:?}"))?;
        if uri.scheme != Scheme::Sip {
            return Err(format!("unsupported URI scheme in {uri_text:?}"));
        }
        let transport = match uri.transport().map(str::to_ascii_lowercase).as_deref() {
            Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            None => flow.map(|f| f.transport).unwrap_or(Transport::Udp),
            Some(other) => return Err(format!("unsupported transport {other:?}")),
        };
        let port = uri.port.filter(|p| *p != 0).unwrap_or(5060);
        match uri.host {
            Host::Address(ip) => Ok(Dest::Ready(self.pick_peer(
                transport,
                SocketAddr::new(ip, port),
                uri_text,
                flow,
            ))),
            Host::Domain(name) => match flow {
                Some(f) => Ok(Dest::Ready(f)),
                None => Ok(Dest::Lookup {
                    host: name,
                    port,
                    transport,
                }),
            },
        }
    }

    /// For TCP, reuse a live connection: to that address, else the dialog's flow, else
    /// the one the contact registered over; otherwise a new one is opened.
    fn pick_peer(
        &self,
        transport: Transport,
        addr: SocketAddr,
        uri_text: &str,
        flow: Option<Peer>,
    ) -> Peer {
        let tcp = |addr| Peer {
            transport: Transport::Tcp,
            addr,
        };
        match transport {
            Transport::Udp => Peer {
                transport: Transport::Udp,
                addr,
            },
            Transport::Tcp => {
                if self.tp.has_conn(addr) {
                    return tcp(addr);
                }
                if let Some(f) = flow.filter(|f| f.transport == Transport::Tcp) {
                    if self.tp.has_conn(f.addr) {
                        return f;
                    }
                }
                if let Some(src) = self.reg.tcp_source_of(uri_text.trim()) {
                    if self.tp.has_conn(src) {
                        return tcp(src);
                    }
                }
                tcp(addr)
            }
        }
    }

    fn spawn_lookup(&self, host: String, port: u16, purpose: Resolve) {
        let tx = self.tp.inbound();
        tokio::spawn(async move {
            let result = match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{host} has no address")),
                Err(e) => Err(format!("cannot resolve {host}: {e}")),
            };
            let _ = tx.send(Inbound::Resolved { purpose, result }).await;
        });
    }

    pub(super) fn on_resolved(&mut self, purpose: Resolve, result: Result<SocketAddr, String>) {
        match purpose {
            Resolve::Invite(sid) => {
                let Some(leg) = self.legs.get(&sid) else {
                    return;
                };
                if leg.state != LegState::Resolving {
                    return;
                }
                let (transport, target, cause) = match &leg.uac {
                    Some(u) => (u.transport, u.target.clone(), leg.cause),
                    None => return,
                };
                match result {
                    Ok(addr) => {
                        let peer = self.pick_peer(transport, addr, &target, None);
                        self.send_invite(sid, peer);
                    }
                    Err(e) => {
                        warn!(call = %leg.call, session = %sid, error = %e, "outbound call target does not resolve");
                        self.finish_leg(
                            sid,
                            End::Rejected(HangupCause::Failure {
                                detail: SmolStr::new(e),
                            }),
                            cause,
                        );
                    }
                }
            }
            Resolve::Probe {
                agent,
                contact,
                cause,
            } => match result {
                Ok(addr) => {
                    let transport = match self.destination(&contact, None) {
                        Ok(Dest::Lookup { transport, .. }) => transport,
                        _ => Transport::Udp,
                    };
                    let peer = self.pick_peer(transport, addr, &contact, None);
                    self.send_probe(agent, contact, peer, cause);
                }
                Err(e) => {
                    debug!(%agent, %contact, error = %e, "probe target does not resolve");
                    self.probed(agent, contact, false, Some(cause));
                }
            },
        }
    }

    pub(super) fn cmd_invite(
        &mut self,
        call: CallId,
        session: SessionId,
        target: String,
        caller: Party,
        sdp: String,
        id: EventId,
    ) {
        if self.legs.contains_key(&session) {
            warn!(%call, %session, "Invite for a session id already in use; ignored");
            return;
        }
        let dest = self.destination(&target, None);
        let (state, transport) = match &dest {
            Ok(Dest::Ready(p)) => (LegState::Calling, p.transport),
            Ok(Dest::Lookup { transport, .. }) => (LegState::Resolving, *transport),
            Err(e) => {
                warn!(%call, %session, %target, error = %e, "cannot call this target");
                self.emit(
                    SessionEvent::Rejected {
                        call,
                        session,
                        cause: HangupCause::Failure {
                            detail: SmolStr::new(e),
                        },
                    },
                    Some(id),
                );
                return;
            }
        };
        let host = self.cfg.domain.clone();
        let leg = Leg {
            call,
            session,
            inbound: false,
            state,
            sip_call_id: format!("{}@{host}", super::random_hex(12)),
            local_tag: new_tag(),
            local_hdr: String::new(),
            remote_hdr: String::new(),
            local_cseq: 1,
            remote_target: target.clone(),
            route_set: Vec::new(),
            flow: Peer {
                transport,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            local_sdp: Some(sdp),
            remote_hold: false,
            invite: None,
            ok: None,
            cause: Some(id),
            hangup_pending: false,
            late_offer: false,
            reinvite_offered: false,
            uac: Some(Uac {
                target: target.clone(),
                caller,
                transport,
                branch: String::new(),
                provisional: false,
                ringing: false,
                cancel_requested: false,
                cancel_sent: false,
                cancel_cause: None,
                timed_out: false,
            }),
        };
        self.legs.insert(session, leg);
        match dest {
            Ok(Dest::Ready(peer)) => self.send_invite(session, peer),
            Ok(Dest::Lookup { host, port, .. }) => {
                debug!(%call, %session, %host, "resolving the call target");
                self.spawn_lookup(host, port, Resolve::Invite(session));
            }
            Err(_) => {}
        }
    }

    fn send_invite(&mut self, sid: SessionId, peer: Peer) {
        let branch = new_branch();
        let via = self.via(peer, &branch);
        let contact = self.contact(peer);
        let domain = self.cfg.domain.clone();
        let ua = self.cfg.user_agent.clone();
        let Some(leg) = self.legs.get_mut(&sid) else {
            return;
        };
        let Some(uac) = leg.uac.as_mut() else {
            return;
        };
        let from_uri = format!("sip:{}@{domain}", escape_user(&uac.caller.user));
        let display = uac
            .caller
            .display_name
            .as_deref()
            .filter(|d| !d.trim().is_empty());
        let from = match display {
            Some(d) => format!("{} <{from_uri}>;tag={}", quote(d), leg.local_tag),
            None => format!("<{from_uri}>;tag={}", leg.local_tag),
        };
        let pai_uri = if uac.caller.uri.trim().is_empty() {
            from_uri.clone()
        } else {
            uac.caller.uri.trim().to_string()
        };
        let pai = match display {
            Some(d) => format!("{} <{pai_uri}>", quote(d)),
            None => format!("<{pai_uri}>"),
        };
        let to = format!("<{}>", uac.target.trim());
        let sdp = leg.local_sdp.clone().unwrap_or_default();
        let req = SipBuf::request("INVITE", uac.target.trim())
            .header("Via", via)
            .header("Max-Forwards", 70)
            .header("From", &from)
            .header("To", &to)
            .header("Call-ID", &leg.sip_call_id)
            .header("CSeq", "1 INVITE")
            .header("Contact", contact)
            .header("P-Asserted-Identity", pai)
            .header("Allow", ALLOW)
            .header("User-Agent", ua)
            .finish(Some(("application/sdp", sdp.as_bytes())));
        uac.branch = branch.clone();
        leg.local_hdr = from;
        leg.remote_hdr = to;
        leg.flow = peer;
        leg.state = LegState::Calling;
        let (call, dialog) = (leg.call, (leg.sip_call_id.clone(), leg.local_tag.clone()));
        info!(%call, session = %sid, sip_call_id = %dialog.0, %peer, "INVITE sent");
        self.dialogs.insert(dialog, sid);
        self.start_client(&branch, Method::Invite, req, peer, Owner::Leg(sid));
        self.timers
            .after(self.cfg.ring_timeout, TimerKind::RingTimeout(sid));
    }

    /// Sends a request in a new client transaction, arming Timer A/E (UDP) and B/F.
    fn start_client(&mut self, branch: &str, method: Method, req: Bytes, peer: Peer, owner: Owner) {
        let key = format!("{branch}|{method}");
        let conn = self.tp.send(peer, req.clone());
        let t1 = self.cfg.timers.t1;
        if peer.transport == Transport::Udp {
            self.timers
                .after(t1, TimerKind::ClientRetransmit(key.clone()));
        }
        self.timers.after(
            self.cfg.timers.timeout(),
            TimerKind::ClientTimeout(key.clone()),
        );
        self.client.insert(
            key,
            ClientTxn {
                method,
                request: req,
                peer,
                conn,
                state: ClientState::Trying,
                interval: t1,
                owner,
                ack: None,
            },
        );
    }

    pub(super) fn client_retransmit(&mut self, key: &str) {
        let t2 = self.cfg.timers.t2;
        let Some(txn) = self.client.get_mut(key) else {
            return;
        };
        if !txn.awaiting_final() {
            return;
        }
        let invite = txn.method == Method::Invite;
        self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
        self.tp.send(txn.peer, txn.request.clone());
        txn.interval = if invite {
            txn.interval * 2
        } else if txn.state == ClientState::Proceeding {
            t2
        } else {
            (txn.interval * 2).min(t2)
        };
        let next = txn.interval;
        self.timers
            .after(next, TimerKind::ClientRetransmit(key.to_string()));
    }

    /// Timer B or F fired, or (`transport_failed`) the request's connection was lost:
    /// the transaction ends without its final response. Not an INVITE that got a
    /// provisional response: its final one may still come over a new connection (RFC
    /// 3261 18.2.2), and the ring timeout (Timer C, or the engine's) bounds it.
    pub(super) fn client_timeout(&mut self, key: &str, transport_failed: bool) {
        let Some(txn) = self.client.get(key) else {
            return;
        };
        if !txn.awaiting_final() {
            return;
        }
        let Some(txn) = self.client.remove(key) else {
            return;
        };
        let method = txn.method.to_string();
        match (txn.method, txn.owner) {
            (Method::Invite, Owner::Leg(sid)) => {
                let Some(leg) = self.legs.get(&sid) else {
                    return;
                };
                let (call, cause) = (leg.call, leg.cause);
                let cancelled = leg
                    .uac
                    .as_ref()
                    .filter(|u| u.cancel_requested)
                    .map(|u| u.cancelled_end(cause));
                if transport_failed {
                    warn!(%call, session = %sid, "INVITE's connection lost before its final response");
                } else {
                    warn!(%call, session = %sid, "INVITE got no final response (Timer B)");
                }
                self.emit(
                    SessionEvent::TransactionTimedOut {
                        call: Some(call),
                        session: Some(sid),
                        method: SmolStr::new(&method),
                    },
                    cause,
                );
                let (end, by) = match cancelled {
                    Some(c) => c,
                    None if transport_failed => (
                        End::Rejected(HangupCause::Failure {
                            detail: SmolStr::new_static("transport error"),
                        }),
                        cause,
                    ),
                    None => (End::Rejected(HangupCause::NoAnswer), cause),
                };
                self.finish_leg(sid, end, by);
            }
            (Method::Bye, Owner::Leg(sid)) => {
                let Some(leg) = self.legs.get(&sid) else {
                    return;
                };
                let (call, cause) = (leg.call, leg.cause);
                warn!(%call, session = %sid, "BYE got no final response (Timer F): the leg is gone anyway");
                self.emit(
                    SessionEvent::TransactionTimedOut {
                        call: Some(call),
                        session: Some(sid),
                        method: SmolStr::new(&method),
                    },
                    cause,
                );
                self.finish_leg(sid, End::Terminated(HangupCause::Normal), cause);
            }
            (
                _,
                Owner::Probe {
                    agent,
                    contact,
                    cause,
                },
            ) => self.probed(agent, contact, false, Some(cause)),
            (_, Owner::DialogProbe { session, cause }) => {
                self.dialog_probed(session, false, None, cause)
            }
            (m, _) => debug!(method = %m, key, "client transaction timed out"),
        }
    }

    /// TCP connection `conn` to `peer` failed or closed: the transactions whose request
    /// went out on it and got no final response end now instead of at their timeout
    /// (except a ringing INVITE: see `client_timeout`). Connection ids are never reused,
    /// so those on a newer connection to the same address are not touched.
    pub(super) fn on_connection_lost(&mut self, peer: Peer, conn: u64) {
        let keys: Vec<String> = self
            .client
            .iter()
            .filter(|(_, t)| t.conn == Some(conn))
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            info!(%peer, conn, transactions = keys.len(), "TCP connection lost: its transactions fail");
        }
        for k in keys {
            self.client_timeout(&k, true);
        }
    }

    pub(super) fn on_response(&mut self, resp: InResponse) {
        let Some(branch) = resp.branch.clone() else {
            return;
        };
        let key = format!("{branch}|{}", resp.cseq_method);
        debug!(status = resp.status, sip_call_id = %resp.call_id, cseq = resp.cseq, method = %resp.cseq_method, "response received");
        if !self.client.contains_key(&key) {
            if resp.cseq_method == Method::Invite && (200..300).contains(&resp.status) {
                // A 2xx retransmitted after its transaction ended: re-ACK it.
                self.uac_2xx(None, &resp, None);
            } else {
                debug!(
                    status = resp.status,
                    "response matches no transaction; dropped"
                );
            }
            return;
        }
        if resp.cseq_method == Method::Invite {
            self.invite_response(&key, resp);
        } else {
            self.non_invite_response(&key, resp);
        }
    }

    fn invite_response(&mut self, key: &str, resp: InResponse) {
        let code = resp.status;
        let timeout = self.cfg.timers.timeout();
        let Some(txn) = self.client.get_mut(key) else {
            return;
        };
        let sid = match txn.owner {
            Owner::Leg(s) => Some(s),
            _ => None,
        };
        let peer = txn.peer;
        if code < 200 {
            if txn.state == ClientState::Trying {
                txn.state = ClientState::Proceeding;
            }
            if let Some(sid) = sid {
                self.uac_provisional(sid, code);
            }
        } else if code < 300 {
            if txn.state != ClientState::Accepted {
                txn.state = ClientState::Accepted;
                self.timers
                    .after(timeout, TimerKind::ClientExpire(key.to_string()));
            }
            self.uac_2xx(sid, &resp, Some(peer));
        } else {
            match txn.state {
                ClientState::Completed => {
                    if let Some(ack) = txn.ack.clone() {
                        self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                        self.tp.send(peer, ack);
                    }
                    return;
                }
                ClientState::Accepted => return,
                ClientState::Trying | ClientState::Proceeding => {}
            }
            let ack = non2xx_ack(&txn.request, &resp, &self.cfg.user_agent);
            if let Some(ack) = &ack {
                self.tp.send(peer, ack.clone());
            }
            txn.ack = ack;
            txn.state = ClientState::Completed;
            let linger = match peer.transport {
                Transport::Udp => timeout,
                Transport::Tcp => std::time::Duration::ZERO,
            };
            self.timers
                .after(linger, TimerKind::ClientExpire(key.to_string()));
            if let Some(sid) = sid {
                self.uac_failed(sid, code);
            }
        }
    }

    fn uac_provisional(&mut self, sid: SessionId, code: u16) {
        let Some(leg) = self.legs.get_mut(&sid) else {
            return;
        };
        if leg.state != LegState::Calling {
            return;
        }
        let (call, cause) = (leg.call, leg.cause);
        let Some(uac) = leg.uac.as_mut() else {
            return;
        };
        uac.provisional = true;
        let ring = (code == 180 || code == 183) && !uac.ringing;
        if ring {
            uac.ringing = true;
        }
        let cancel_now = uac.cancel_requested && !uac.cancel_sent;
        if ring {
            info!(%call, session = %sid, code, "ringing");
            self.emit(SessionEvent::Ringing { call, session: sid }, cause);
        }
        if cancel_now {
            self.send_cancel(sid);
        }
    }

    fn uac_failed(&mut self, sid: SessionId, code: u16) {
        let Some(leg) = self.legs.get(&sid) else {
            return;
        };
        if leg.state != LegState::Calling {
            return;
        }
        let (end, by) = match leg.uac.as_ref().filter(|u| u.cancel_requested) {
            Some(u) => u.cancelled_end(leg.cause),
            None => (End::Rejected(status_cause(code)), leg.cause),
        };
        self.finish_leg(sid, end, by);
    }

    /// A 2xx to one of our INVITEs: ACK it (again, if it is a retransmission), and
    /// establish the dialog of the leg waiting for it.
    fn uac_2xx(&mut self, sid: Option<SessionId>, resp: &InResponse, invite_peer: Option<Peer>) {
        let ack_key = format!(
            "{}|{}|{}",
            resp.call_id,
            resp.cseq,
            resp.to_tag.as_deref().unwrap_or("")
        );
        if let Some(a) = self.acks.get(&ack_key) {
            self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
            debug!(sip_call_id = %resp.call_id, "retransmitted 2xx: ACK resent");
            self.tp.send(a.peer, a.bytes.clone());
            return;
        }
        let contact = resp
            .raw
            .get_list("Contact")
            .first()
            .and_then(|c| NameAddr::parse(c))
            .map(|n| n.uri);
        let leg_flow = sid.and_then(|s| self.legs.get(&s)).map(|l| l.flow);
        // A 2xx matching no INVITE transaction of ours and no ACK we sent is dropped:
        // answering it would let anyone aim our ACK and BYE at a third party. (A real
        // late 2xx, after Timer B, stops by itself: its UAS gives up and sends BYE.)
        let Some(fallback) = leg_flow.or(invite_peer) else {
            debug!(sip_call_id = %resp.call_id, "2xx for no INVITE of ours; dropped");
            return;
        };
        let route_set: Vec<String> = resp
            .raw
            .get_list("Record-Route")
            .into_iter()
            .rev()
            .collect();
        let remote_target = contact.clone().unwrap_or_else(|| {
            sid.and_then(|s| self.legs.get(&s))
                .map(|l| l.remote_target.clone())
                .unwrap_or_default()
        });
        let next_hop = route_set
            .first()
            .and_then(|r| NameAddr::parse(r))
            .map(|n| n.uri)
            .unwrap_or_else(|| remote_target.clone());
        let peer = match self.destination(&next_hop, Some(fallback)) {
            Ok(Dest::Ready(p)) => p,
            _ => fallback,
        };
        let branch = new_branch();
        let via = self.via(peer, &branch);
        let mut b = SipBuf::request("ACK", &remote_target)
            .header("Via", via)
            .header("Max-Forwards", 70);
        for r in &route_set {
            b = b.header("Route", r);
        }
        let ack = b
            .header("From", resp.raw.get("From").unwrap_or(""))
            .header("To", resp.raw.get("To").unwrap_or(""))
            .header("Call-ID", &resp.call_id)
            .header("CSeq", format!("{} ACK", resp.cseq))
            .header("User-Agent", &self.cfg.user_agent)
            .finish(None);
        self.tp.send(peer, ack.clone());
        self.acks
            .insert(ack_key.clone(), CachedAck { bytes: ack, peer });
        self.timers
            .after(self.cfg.timers.timeout(), TimerKind::AckExpire(ack_key));

        let waiting = sid
            .and_then(|s| self.legs.get_mut(&s))
            .filter(|l| l.state == LegState::Calling);
        let Some(leg) = waiting else {
            // Nobody waits for this answer (the leg ended, or another fork answered):
            // it is ACKed; now hang it up.
            warn!(sip_call_id = %resp.call_id, "2xx for a leg that is not waiting for one: ACK and BYE");
            let bye = bye_from_2xx(resp, &remote_target, &route_set);
            if let Some(bye) = bye {
                let branch = new_branch();
                let via = self.via(peer, &branch);
                let req = bye.finish_with_via(&via, &self.cfg.user_agent);
                self.start_client(&branch, Method::Bye, req, peer, Owner::Detached);
            }
            return;
        };
        leg.remote_hdr = resp.raw.get("To").unwrap_or("").to_string();
        leg.remote_target = remote_target;
        leg.route_set = route_set;
        leg.state = LegState::Confirmed;
        let (call, session, cause) = (leg.call, leg.session, leg.cause);
        let cancelled = leg
            .uac
            .as_ref()
            .filter(|u| u.cancel_requested)
            .map(|u| u.cancelled_end(cause));
        if let Some((end, by)) = cancelled {
            info!(%call, %session, "answered after our CANCEL: ACK and BYE");
            self.send_bye(session, Owner::Detached);
            self.finish_leg(session, end, by);
            return;
        }
        info!(%call, %session, sip_call_id = %resp.call_id, "answered");
        self.emit(
            SessionEvent::Answered {
                call,
                session,
                sdp: resp.sdp().map(|s| Sdp(SmolStr::new(s))),
            },
            cause,
        );
    }

    fn non_invite_response(&mut self, key: &str, resp: InResponse) {
        let t4 = self.cfg.timers.t4;
        let Some(txn) = self.client.get_mut(key) else {
            return;
        };
        if resp.status < 200 {
            if txn.state == ClientState::Trying {
                txn.state = ClientState::Proceeding;
            }
            return;
        }
        if txn.state == ClientState::Completed {
            return;
        }
        txn.state = ClientState::Completed;
        let linger = match txn.peer.transport {
            Transport::Udp => t4,
            Transport::Tcp => std::time::Duration::ZERO,
        };
        let (method, owner) = (txn.method.clone(), txn.owner.clone());
        self.timers
            .after(linger, TimerKind::ClientExpire(key.to_string()));
        match (method, owner) {
            (Method::Bye, Owner::Leg(sid)) => {
                let cause = self.legs.get(&sid).and_then(|l| l.cause);
                debug!(session = %sid, status = resp.status, "BYE completed");
                self.finish_leg(sid, End::Terminated(HangupCause::Normal), cause);
            }
            (
                _,
                Owner::Probe {
                    agent,
                    contact,
                    cause,
                },
            ) => self.probed(agent, contact, true, Some(cause)),
            (_, Owner::DialogProbe { session, cause }) => {
                // RFC 3261 12.2.2: a request in a dialog the far end does not know gets
                // 481; 408 means it could not be delivered. Anything else (200, 405,
                // 501…) came from the dialog's peer: it is alive.
                let alive = !matches!(resp.status, 481 | 408);
                self.dialog_probed(session, alive, Some(resp.status), cause);
            }
            (m, _) => debug!(method = %m, status = resp.status, "request completed"),
        }
    }

    pub(super) fn cmd_cancel(&mut self, call: CallId, session: SessionId, id: EventId) {
        let Some(leg) = self.legs.get_mut(&session) else {
            warn!(%call, %session, "Cancel for an unknown or ended session; ignored");
            return;
        };
        if leg.call != call {
            warn!(%call, %session, "Cancel for a session of another call; ignored");
            return;
        }
        match leg.state {
            LegState::Resolving => {
                self.finish_leg(session, End::Terminated(HangupCause::Cancelled), Some(id))
            }
            LegState::Calling => {
                let Some(uac) = leg.uac.as_mut() else {
                    return;
                };
                if uac.cancel_requested {
                    return;
                }
                uac.cancel_requested = true;
                uac.cancel_cause = Some(id);
                if uac.provisional {
                    self.send_cancel(session);
                } else {
                    debug!(%call, %session, "Cancel before any provisional response: CANCEL deferred");
                }
            }
            LegState::Offered | LegState::Accepted | LegState::Confirmed => {
                self.cmd_hangup(call, session, id)
            }
            LegState::Terminating => {}
        }
    }

    pub(super) fn cmd_hangup(&mut self, call: CallId, session: SessionId, id: EventId) {
        let Some(leg) = self.legs.get_mut(&session) else {
            warn!(%call, %session, "Hangup for an unknown or ended session; ignored");
            return;
        };
        if leg.call != call {
            warn!(%call, %session, "Hangup for a session of another call; ignored");
            return;
        }
        match leg.state {
            LegState::Resolving | LegState::Calling => self.cmd_cancel(call, session, id),
            LegState::Offered => {
                let (req, tag) = (leg.invite.clone(), leg.local_tag.clone());
                if let Some(req) = req {
                    let resp = self.response(&req, 480, Some(&tag)).finish(None);
                    self.respond(&req, 480, resp);
                }
                self.finish_leg(session, End::Terminated(HangupCause::Normal), Some(id));
            }
            LegState::Accepted => {
                // RFC 3261 15: no BYE before the ACK (or its timeout).
                leg.hangup_pending = true;
                leg.cause = Some(id);
            }
            LegState::Confirmed => {
                leg.cause = Some(id);
                leg.state = LegState::Terminating;
                info!(%call, %session, "hanging up (BYE)");
                self.send_bye(session, Owner::Leg(session));
            }
            LegState::Terminating => {}
        }
    }

    /// Sends a BYE in the leg's dialog.
    pub(super) fn send_bye(&mut self, sid: SessionId, owner: Owner) {
        self.send_in_dialog(sid, Method::Bye, owner);
    }

    /// Sends a request (BYE, OPTIONS) in the leg's dialog.
    fn send_in_dialog(&mut self, sid: SessionId, method: Method, owner: Owner) {
        let Some(leg) = self.legs.get_mut(&sid) else {
            return;
        };
        leg.local_cseq += 1;
        let cseq = leg.local_cseq;
        let (target, routes, flow) = (leg.remote_target.clone(), leg.route_set.clone(), leg.flow);
        let (local, remote, cid) = (
            leg.local_hdr.clone(),
            leg.remote_hdr.clone(),
            leg.sip_call_id.clone(),
        );
        let next_hop = routes
            .first()
            .and_then(|r| NameAddr::parse(r))
            .map(|n| n.uri)
            .unwrap_or_else(|| target.clone());
        let peer = match self.destination(&next_hop, Some(flow)) {
            Ok(Dest::Ready(p)) => p,
            _ => flow,
        };
        let branch = new_branch();
        let via = self.via(peer, &branch);
        let name = method.to_string();
        let mut b = SipBuf::request(&name, &target)
            .header("Via", via)
            .header("Max-Forwards", 70);
        for r in &routes {
            b = b.header("Route", r);
        }
        let req = b
            .header("From", local)
            .header("To", remote)
            .header("Call-ID", cid)
            .header("CSeq", format!("{cseq} {name}"))
            .header("User-Agent", &self.cfg.user_agent)
            .finish(None);
        self.start_client(&branch, method, req, peer, owner);
    }

    /// Sends the CANCEL of the leg's INVITE (RFC 3261 9.1).
    pub(super) fn send_cancel(&mut self, sid: SessionId) {
        let Some(uac) = self.legs.get_mut(&sid).and_then(|l| l.uac.as_mut()) else {
            return;
        };
        uac.cancel_sent = true;
        let branch = uac.branch.clone();
        let Some(invite) = self.client.get(&format!("{branch}|INVITE")) else {
            return;
        };
        let peer = invite.peer;
        let Some(raw) = RawMessage::scan(&invite.request) else {
            return;
        };
        let (Some(ruri), Some(via), Some(from), Some(to), Some(cid)) = (
            raw.request_uri(),
            raw.get("Via"),
            raw.get("From"),
            raw.get("To"),
            raw.get("Call-ID"),
        ) else {
            return;
        };
        let mut b = SipBuf::request("CANCEL", ruri)
            .header("Via", via)
            .header("Max-Forwards", 70);
        for r in raw.get_all("Route") {
            b = b.header("Route", r);
        }
        let req = b
            .header("From", from)
            .header("To", to)
            .header("Call-ID", cid)
            .header("CSeq", "1 CANCEL")
            .header("User-Agent", &self.cfg.user_agent)
            .finish(None);
        debug!(session = %sid, "CANCEL sent");
        self.start_client(&branch, Method::Cancel, req, peer, Owner::Leg(sid));
        self.timers
            .after(self.cfg.timers.timeout(), TimerKind::CancelGiveUp(sid));
    }

    /// 64*T1 after our CANCEL and still no final response to the INVITE: the leg is
    /// considered gone (RFC 3261 9.1).
    pub(super) fn cancel_give_up(&mut self, sid: SessionId) {
        let Some(leg) = self.legs.get(&sid) else {
            return;
        };
        if leg.state != LegState::Calling {
            return;
        }
        let (call, cause) = (leg.call, leg.cause);
        let (end, by) = match leg.uac.as_ref() {
            Some(u) => u.cancelled_end(cause),
            None => (End::Terminated(HangupCause::Cancelled), cause),
        };
        if let Some(branch) = leg.uac.as_ref().map(|u| u.branch.clone()) {
            self.client.remove(&format!("{branch}|INVITE"));
        }
        warn!(%call, session = %sid, "no final response 64*T1 after CANCEL: giving up");
        self.emit(
            SessionEvent::TransactionTimedOut {
                call: Some(call),
                session: Some(sid),
                method: SmolStr::new_static("INVITE"),
            },
            cause,
        );
        self.finish_leg(sid, end, by);
    }

    /// Timer C: the INVITE rang for `ring_timeout` without a final response: cancel it
    /// (now, or when a provisional arrives) and report `Rejected(NoAnswer)`.
    pub(super) fn ring_timeout(&mut self, sid: SessionId) {
        let Some(leg) = self.legs.get_mut(&sid) else {
            return;
        };
        if leg.state != LegState::Calling {
            return;
        }
        let call = leg.call;
        let Some(uac) = leg.uac.as_mut() else {
            return;
        };
        if uac.cancel_requested {
            return;
        }
        uac.cancel_requested = true;
        uac.timed_out = true;
        let now = uac.provisional && !uac.cancel_sent;
        info!(%call, session = %sid, "ring timeout (Timer C): cancelling");
        if now {
            self.send_cancel(sid);
        }
    }

    pub(super) fn cmd_probe(&mut self, agent: AgentId, contact: String, id: EventId) {
        match self.destination(&contact, None) {
            Ok(Dest::Ready(peer)) => self.send_probe(agent, contact, peer, id),
            Ok(Dest::Lookup { host, port, .. }) => self.spawn_lookup(
                host,
                port,
                Resolve::Probe {
                    agent,
                    contact,
                    cause: id,
                },
            ),
            Err(e) => {
                debug!(%agent, %contact, error = %e, "cannot probe this contact");
                self.probed(agent, contact, false, Some(id));
            }
        }
    }

    fn send_probe(&mut self, agent: AgentId, contact: String, peer: Peer, cause: EventId) {
        let branch = new_branch();
        let via = self.via(peer, &branch);
        let domain = self.cfg.domain.clone();
        let host = self.local_host(peer);
        let req = SipBuf::request("OPTIONS", contact.trim())
            .header("Via", via)
            .header("Max-Forwards", 70)
            .header(
                "From",
                format!("<sip:call-engine@{domain}>;tag={}", new_tag()),
            )
            .header("To", format!("<{}>", contact.trim()))
            .header("Call-ID", format!("{}@{host}", super::random_hex(12)))
            .header("CSeq", "1 OPTIONS")
            .header("Accept", "application/sdp")
            .header("User-Agent", &self.cfg.user_agent)
            .finish(None);
        self.start_client(
            &branch,
            Method::Options,
            req,
            peer,
            Owner::Probe {
                agent,
                contact,
                cause,
            },
        );
    }

    pub(super) fn cmd_probe_dialog(&mut self, call: CallId, session: SessionId, id: EventId) {
        let Some(leg) = self.legs.get(&session) else {
            // Already gone: the Terminated was (or is being) reported.
            debug!(%call, %session, "ProbeDialog for an unknown or ended session; ignored");
            return;
        };
        if leg.call != call {
            warn!(%call, %session, "ProbeDialog for a session of another call; ignored");
            return;
        }
        if leg.state != LegState::Confirmed {
            // Not established (or already ending): nothing to check.
            debug!(%call, %session, state = ?leg.state, "ProbeDialog of a dialog not established; ignored");
            return;
        }
        debug!(%call, %session, "probing dialog (OPTIONS)");
        self.send_in_dialog(
            session,
            Method::Options,
            Owner::DialogProbe { session, cause: id },
        );
    }

    fn dialog_probed(
        &mut self,
        session: SessionId,
        alive: bool,
        status: Option<u16>,
        cause: EventId,
    ) {
        let Some(leg) = self.legs.get(&session) else {
            return;
        };
        let call = leg.call;
        // A BYE may have crossed the probe: only an established dialog can be lost.
        let established = leg.state == LegState::Confirmed;
        self.emit(
            SessionEvent::DialogProbed {
                call,
                session,
                alive,
                status,
            },
            Some(cause),
        );
        if !alive && established {
            warn!(%call, %session, ?status, "dialog lost by the far end (its BYE never arrived): ending the leg");
            let detail = match status {
                Some(code) => SmolStr::new(format!("dialog lost ({code} to OPTIONS)")),
                None => SmolStr::new_static("dialog lost (no answer to OPTIONS)"),
            };
            self.finish_leg(
                session,
                End::Terminated(HangupCause::Failure { detail }),
                Some(cause),
            );
        }
    }

    fn probed(&mut self, agent: AgentId, contact: String, reachable: bool, cause: Option<EventId>) {
        debug!(%agent, %contact, reachable, "contact probed");
        self.emit(
            SessionEvent::ContactProbed {
                agent,
                contact: SmolStr::new(contact),
                reachable,
            },
            cause,
        );
    }
}

/// The ACK of a non-2xx final response (RFC 3261 17.1.1.3): same branch, Request-URI,
/// From, Call-ID and Route as the INVITE, the response's To.
fn non2xx_ack(invite: &Bytes, resp: &InResponse, ua: &str) -> Option<Bytes> {
    let raw = RawMessage::scan(invite)?;
    let mut b = SipBuf::request("ACK", raw.request_uri()?)
        .header("Via", raw.get("Via")?)
        .header("Max-Forwards", 70);
    for r in raw.get_all("Route") {
        b = b.header("Route", r);
    }
    Some(
        b.header("From", raw.get("From")?)
            .header("To", resp.raw.get("To")?)
            .header("Call-ID", raw.get("Call-ID")?)
            .header("CSeq", format!("{} ACK", resp.cseq))
            .header("User-Agent", ua)
            .finish(None),
    )
}

/// A BYE for a dialog known only from its 2xx (a leg that already ended).
struct ByeDraft {
    target: String,
    routes: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
}

impl ByeDraft {
    fn finish_with_via(self, via: &str, ua: &str) -> Bytes {
        let mut b = SipBuf::request("BYE", &self.target)
            .header("Via", via)
            .header("Max-Forwards", 70);
        for r in &self.routes {
            b = b.header("Route", r);
        }
        b.header("From", self.from)
            .header("To", self.to)
            .header("Call-ID", self.call_id)
            .header("CSeq", format!("{} BYE", self.cseq.saturating_add(1)))
            .header("User-Agent", ua)
            .finish(None)
    }
}

fn bye_from_2xx(resp: &InResponse, target: &str, routes: &[String]) -> Option<ByeDraft> {
    if target.is_empty() {
        return None;
    }
    Some(ByeDraft {
        target: target.to_string(),
        routes: routes.to_vec(),
        from: resp.raw.get("From")?.to_string(),
        to: resp.raw.get("To")?.to_string(),
        call_id: resp.call_id.clone(),
        cseq: resp.cseq,
    })
}
