//! Requests we receive: server transactions, inbound calls (UAS), in-dialog requests.

use super::{new_tag, status_cause, Core, End, Leg, LegState, OkRetx, Owner, ServerState, ALLOW};
use crate::msg::InRequest;
use crate::raw::{uri_user, NameAddr};
use crate::sdp;
use crate::timer::TimerKind;
use crate::transport::Transport;
use call_engine_bus::EventId;
use call_engine_events::{CallId, HangupCause, Party, Sdp, SessionEvent, SessionId};
use rvoip_sip_core::Method;
use smol_str::SmolStr;
use std::sync::atomic::Ordering;
use tracing::{debug, info, warn};

/// The Retry-After of a 503 sent for overload: the server transactions over budget,
/// too many calls waiting for the engine's answer, or too many events for the bus.
const OVERLOAD_RETRY_AFTER_SECS: u32 = 5;

impl Core {
    /// Answers 503 with Retry-After, keeping nothing.
    fn refuse_overloaded(&mut self, req: &InRequest, why: &'static str) {
        self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        debug!(method = %req.method, sip_call_id = %req.call_id, peer = %req.peer, why, "overloaded: 503");
        let tag = req.to_tag.is_none().then(new_tag);
        let resp = self
            .response(req, 503, tag.as_deref())
            .header("Retry-After", OVERLOAD_RETRY_AFTER_SECS.to_string())
            .finish(None);
        self.tp.send(req.response_peer(), resp);
    }

    pub(super) fn on_request(&mut self, req: InRequest) {
        debug!(
            method = %req.method,
            sip_call_id = %req.call_id,
            cseq = req.cseq,
            peer = %req.peer,
            "request received"
        );
        // Server transaction matching (RFC 3261 17.2.3).
        let key = req.server_key();
        if let Some(txn) = self.server.get_mut(&key) {
            if req.method == Method::Ack {
                match txn.state {
                    ServerState::Completed => {
                        txn.state = ServerState::Confirmed;
                        let linger = match txn.peer.transport {
                            Transport::Udp => self.cfg.timers.t4,
                            Transport::Tcp => std::time::Duration::ZERO,
                        };
                        self.timers.after(linger, TimerKind::ServerExpire(key));
                        return;
                    }
                    // A 2xx ACK reusing the INVITE's branch: the dialog takes it.
                    ServerState::Accepted => {}
                    ServerState::Proceeding | ServerState::Confirmed => return,
                }
            } else {
                if let Some(last) = txn.last.clone() {
                    self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                    debug!(method = %req.method, sip_call_id = %req.call_id, "retransmitted request: cached response resent");
                    self.tp.send(txn.peer, last);
                }
                return;
            }
        }
        // Overloaded (a flood of new requests keeps more server transactions than the
        // budget allows): 503 with Retry-After, nothing kept. An ACK creates nothing, and
        // a request in one of our dialogs goes on (it may end a call).
        // A CANCEL of an INVITE we hold goes on too (answering it frees state).
        if req.method != Method::Ack
            && self.server_full()
            && self.dialog_of(&req).is_none()
            && !(req.method == Method::Cancel
                && self.server.contains_key(&req.server_key_for("INVITE")))
        {
            return self.refuse_overloaded(&req, "server transactions over budget");
        }
        // Too many events wait for the bus (the engine is behind): a request that would
        // add more gets 503 with Retry-After, so that they stay bounded
        // (`max_pending_events`). Those that end something go on (an ACK, a CANCEL, a
        // BYE: one event per leg at most), and OPTIONS (none).
        if self.emitter.backlogged()
            && !matches!(
                req.method,
                Method::Ack | Method::Cancel | Method::Bye | Method::Options
            )
        {
            return self.refuse_overloaded(&req, "session events not getting through");
        }
        // We support no SIP extension: a required one gets 420 (RFC 3261 8.2.2.3).
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            let required = req.raw.get_list("Require");
            if !required.is_empty() {
                let unsupported = required.join(", ");
                debug!(sip_call_id = %req.call_id, %unsupported, "required extension: 420");
                return self.reply_with(&req, 420, |b| b.header("Unsupported", unsupported));
            }
        }
        match req.method {
            Method::Register => self.on_register(req),
            Method::Invite if req.to_tag.is_some() => self.on_reinvite(req),
            Method::Invite => self.on_invite(req),
            Method::Ack => self.on_ack(req),
            Method::Cancel => self.on_cancel(req),
            Method::Bye => self.on_bye(req),
            Method::Options => self.reply_with(&req, 200, |b| {
                b.header("Allow", ALLOW).header("Accept", "application/sdp")
            }),
            Method::Info => self.on_info(req),
            Method::Refer => self.on_refer(req),
            Method::Notify => match self.dialog_of(&req) {
                Some(_) => self.reply(&req, 200),
                None => self.reply(&req, 481),
            },
            Method::Extension(_) => self.reply(&req, 501),
            _ => self.reply_with(&req, 405, |b| b.header("Allow", ALLOW)),
        }
    }

    /// The leg of an in-dialog request (Call-ID and our tag, which is its To tag).
    pub(super) fn dialog_of(&self, req: &InRequest) -> Option<SessionId> {
        let tag = req.to_tag.clone()?;
        self.dialogs.get(&(req.call_id.clone(), tag)).copied()
    }

    fn on_invite(&mut self, req: InRequest) {
        // Only the configured networks may place calls: refused before anything is
        // spent on the call (the transaction absorbs retransmissions and the ACK).
        let source = req.peer.addr.ip();
        if !self.cfg.calls_from.contains(source) {
            self.stats.forbidden_sources.fetch_add(1, Ordering::Relaxed);
            debug!(sip_call_id = %req.call_id, peer = %req.peer, "INVITE from outside calls_from: 403");
            return self.reply(&req, 403);
        }
        // The engine is behind: more calls wait for its answer than allowed. Refused
        // here, before any leg or event exists (the transaction absorbs retransmissions
        // and the ACK).
        if self.offered >= self.cfg.max_offered_calls {
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            warn!(sip_call_id = %req.call_id, peer = %req.peer, waiting = self.offered, "too many calls wait for the engine: 503");
            return self.reply_with(&req, 503, |b| {
                b.header("Retry-After", OVERLOAD_RETRY_AFTER_SECS.to_string())
            });
        }
        let trying = self.response(&req, 100, None).finish(None);
        self.respond(&req, 100, trying);

        let call = self.ids.call();
        let session = self.ids.session();
        let local_tag = new_tag();
        let from = req.raw.get("From").and_then(NameAddr::parse);
        let party = match &from {
            Some(f) => Party {
                display_name: f.display.as_deref().map(SmolStr::new),
                user: SmolStr::new(uri_user(&f.uri).unwrap_or_default()),
                uri: SmolStr::new(&f.uri),
            },
            None => Party::new("", ""),
        };
        let to_user = req
            .uri
            .username()
            .map(str::to_string)
            .or_else(|| req.raw.request_uri().and_then(uri_user))
            .unwrap_or_default();
        // Only a trusted upstream (an SBC, an IVR) may ask for skills or rank the caller.
        let trusted = self.cfg.trusted.contains(source);
        if !trusted && (req.raw.get("X-Skills").is_some() || req.raw.get("X-Priority").is_some()) {
            debug!(%call, peer = %req.peer, "X-Skills/X-Priority ignored: the source is not trusted");
        }
        let skills: Vec<SmolStr> = req
            .raw
            .get_list("X-Skills")
            .iter()
            .filter(|_| trusted)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(SmolStr::new)
            .collect();
        // A malformed value is ignored.
        let priority = req.raw.get("X-Priority").filter(|_| trusted).and_then(|v| {
            let p = v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|p| (-1000..=1000).contains(p));
            if p.is_none() {
                debug!(%call, value = %v, "X-Priority ignored: not an integer in -1000..=1000");
            }
            p
        });
        let offer = req.sdp();
        let remote_target = req
            .raw
            .get_list("Contact")
            .first()
            .and_then(|c| NameAddr::parse(c))
            .map(|n| n.uri)
            .unwrap_or_else(|| match req.peer.transport {
                Transport::Udp => format!("sip:{}", req.peer.addr),
                Transport::Tcp => format!("sip:{};transport=tcp", req.peer.addr),
            });
        let local_hdr = format!("{};tag={local_tag}", req.raw.get("To").unwrap_or(""));
        let leg = Leg {
            call,
            session,
            inbound: true,
            state: LegState::Offered,
            sip_call_id: req.call_id.clone(),
            local_tag: local_tag.clone(),
            local_hdr,
            remote_hdr: req.raw.get("From").unwrap_or("").to_string(),
            local_cseq: 0,
            remote_target,
            route_set: req.raw.get_list("Record-Route"),
            flow: req.response_peer(),
            local_sdp: None,
            remote_hold: offer
                .as_deref()
                .is_some_and(|o| sdp::offer_direction(o).is_hold()),
            invite: Some(Box::new(req.clone())),
            ok: None,
            cause: None,
            hangup_pending: false,
            uac: None,
            late_offer: offer.is_none(),
            reinvite_offered: false,
        };
        info!(
            %call,
            %session,
            sip_call_id = %req.call_id,
            from = %party.uri,
            to = %to_user,
            peer = %req.peer,
            "incoming call"
        );
        self.legs.insert(session, leg);
        self.offered += 1;
        self.dialogs
            .insert((req.call_id.clone(), local_tag), session);
        self.emit(
            SessionEvent::IncomingCall {
                call,
                session,
                from: party,
                to: SmolStr::new(to_user),
                offer: offer.map(|o| Sdp(SmolStr::new(o))),
                requested_skills: skills,
                requested_priority: priority,
            },
            None,
        );
    }

    /// A leg of ours by session id, checking the call id.
    fn leg_for_command(&self, call: CallId, session: SessionId, what: &str) -> bool {
        match self.legs.get(&session) {
            Some(l) if l.call == call => true,
            Some(l) => {
                warn!(%call, %session, leg_call = %l.call, command = what, "command for a session of another call; ignored");
                false
            }
            None => {
                warn!(%call, %session, command = what, "command for an unknown or ended session; ignored");
                false
            }
        }
    }

    pub(super) fn cmd_answer(
        &mut self,
        call: CallId,
        session: SessionId,
        sdp: String,
        id: EventId,
    ) {
        if !self.leg_for_command(call, session, "Answer") {
            return;
        }
        let Some(leg) = self.legs.get(&session) else {
            return;
        };
        if !leg.inbound || leg.state != LegState::Offered {
            warn!(%call, %session, state = ?leg.state, "Answer for a session that is not an unanswered inbound call; ignored");
            return;
        }
        let Some(req) = leg.invite.clone() else {
            return;
        };
        let tag = leg.local_tag.clone();
        let contact = self.contact(req.response_peer());
        let mut b = self.response(&req, 200, Some(&tag));
        for rr in req.raw.get_all("Record-Route") {
            b = b.header("Record-Route", rr);
        }
        let ok = b
            .header("Contact", contact)
            .header("Allow", ALLOW)
            .finish(Some(("application/sdp", sdp.as_bytes())));
        self.respond(&req, 200, ok.clone());
        if let Some(leg) = self.legs.get_mut(&session) {
            if leg.state == LegState::Offered {
                self.offered -= 1;
            }
            leg.state = LegState::Accepted;
            leg.local_sdp = Some(sdp);
            leg.cause = Some(id);
        }
        info!(%call, %session, sip_call_id = %req.call_id, "answered (200 OK sent)");
        self.start_ok_retx(session, ok, req.response_peer(), req.cseq, true);
    }

    pub(super) fn cmd_reject(
        &mut self,
        call: CallId,
        session: SessionId,
        status: u16,
        retry_after: Option<u32>,
        id: EventId,
    ) {
        if !self.leg_for_command(call, session, "Reject") {
            return;
        }
        let Some(leg) = self.legs.get(&session) else {
            return;
        };
        if !leg.inbound || leg.state != LegState::Offered {
            warn!(%call, %session, state = ?leg.state, "Reject for a session that is not an unanswered inbound call; ignored");
            return;
        }
        let status = if (300..=699).contains(&status) {
            status
        } else {
            warn!(%call, %session, status, "Reject with a status outside 300-699: sending 500");
            500
        };
        let Some(req) = leg.invite.clone() else {
            return;
        };
        let tag = leg.local_tag.clone();
        let resp = self
            .response(&req, status, Some(&tag))
            .header_opt("Retry-After", retry_after)
            .finish(None);
        self.respond(&req, status, resp);
        info!(%call, %session, sip_call_id = %req.call_id, status, "inbound call rejected");
        self.finish_leg(session, End::Terminated(status_cause(status)), Some(id));
    }

    /// Retransmits a 2xx (UDP: T1 doubling up to T2) until its ACK arrives or 64*T1.
    pub(super) fn start_ok_retx(
        &mut self,
        session: SessionId,
        bytes: bytes::Bytes,
        peer: crate::transport::Peer,
        cseq: u32,
        initial: bool,
    ) {
        let gen = self.next_gen();
        let t1 = self.cfg.timers.t1;
        let timeout = self.cfg.timers.timeout();
        let Some(leg) = self.legs.get_mut(&session) else {
            return;
        };
        leg.ok = Some(OkRetx {
            bytes,
            peer,
            interval: t1,
            gen,
            cseq,
            initial,
        });
        if peer.transport == Transport::Udp {
            self.timers.after(t1, TimerKind::OkRetransmit(session, gen));
        }
        self.timers
            .after(timeout, TimerKind::OkTimeout(session, gen));
    }

    pub(super) fn ok_retransmit(&mut self, session: SessionId, gen: u64) {
        let t2 = self.cfg.timers.t2;
        let Some(ok) = self
            .legs
            .get_mut(&session)
            .and_then(|l| l.ok.as_mut())
            .filter(|ok| ok.gen == gen)
        else {
            return;
        };
        self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
        self.tp.send(ok.peer, ok.bytes.clone());
        ok.interval = (ok.interval * 2).min(t2);
        let next = ok.interval;
        debug!(%session, "2xx retransmitted (no ACK yet)");
        self.timers
            .after(next, TimerKind::OkRetransmit(session, gen));
    }

    pub(super) fn ok_timeout(&mut self, session: SessionId, gen: u64) {
        let Some(leg) = self.legs.get_mut(&session) else {
            return;
        };
        if leg.ok.as_ref().is_none_or(|ok| ok.gen != gen) {
            return;
        }
        leg.ok = None;
        let (call, cause) = (leg.call, leg.cause);
        // The engine asked to hang up meanwhile: that is the (normal) end it gets.
        let end = if leg.hangup_pending {
            End::Terminated(HangupCause::Normal)
        } else {
            End::Terminated(HangupCause::Failure {
                detail: SmolStr::new_static("no ACK for 200 OK"),
            })
        };
        warn!(%call, %session, sip_call_id = %leg.sip_call_id, "no ACK for our 2xx within 64*T1: hanging up");
        self.send_bye(session, Owner::Detached);
        self.finish_leg(session, end, cause);
    }

    fn on_ack(&mut self, req: InRequest) {
        let Some(sid) = self.dialog_of(&req) else {
            debug!(sip_call_id = %req.call_id, "ACK matches no dialog; dropped");
            return;
        };
        let Some(leg) = self.legs.get_mut(&sid) else {
            return;
        };
        let acked = leg.ok.as_ref().is_some_and(|ok| ok.cseq == req.cseq);
        if !acked {
            debug!(call = %leg.call, session = %sid, "duplicate or stray ACK absorbed");
            return;
        }
        let initial = leg.ok.as_ref().is_some_and(|ok| ok.initial);
        leg.ok = None;
        // The answer to the offer we made in the 200 to a re-INVITE without SDP: a hold
        // (or a resume) as if the re-INVITE had offered it.
        let mut hold_changed = None;
        if !initial && std::mem::take(&mut leg.reinvite_offered) {
            if let Some(answer) = req.sdp() {
                let held = sdp::offer_direction(&answer).is_hold();
                if held != leg.remote_hold {
                    leg.remote_hold = held;
                    hold_changed = Some(held);
                }
            }
        }
        if leg.state == LegState::Accepted {
            leg.state = LegState::Confirmed;
        }
        let (call, hangup) = (leg.call, leg.hangup_pending);
        // The ACK of our 2xx to the initial INVITE proves the caller's address (it
        // carries our To-tag, which only the 200 OK told): the engine waits for it before
        // sending media there. Not for a re-INVITE's ACK, nor for a leg being hung up.
        if initial {
            // A late offer's answer comes in this ACK (an SDP in the ACK of an INVITE
            // that had an offer is not an answer to anything: ignored).
            let answer = if leg.late_offer {
                req.sdp().map(|s| Sdp(s.into()))
            } else {
                None
            };
            let held = leg.late_offer
                && answer
                    .as_ref()
                    .is_some_and(|a| sdp::offer_direction(&a.0).is_hold());
            leg.remote_hold |= held;
            info!(%call, session = %sid, late_answer = answer.is_some(), "ACK received: session established");
            if !hangup {
                self.emit(
                    SessionEvent::Confirmed {
                        call,
                        session: sid,
                        answer,
                    },
                    None,
                );
                // A late answer that holds (sendonly, inactive) is a hold from the start.
                if held {
                    self.hold_changed(call, sid, true);
                }
            }
        }
        if let Some(held) = hold_changed {
            self.hold_changed(call, sid, held);
        }
        if hangup {
            self.send_bye(sid, Owner::Leg(sid));
            if let Some(leg) = self.legs.get_mut(&sid) {
                leg.state = LegState::Terminating;
            }
        }
    }

    fn on_cancel(&mut self, req: InRequest) {
        let invite_key = req.server_key_for("INVITE");
        let pending = self
            .server
            .get(&invite_key)
            .map(|t| t.state == ServerState::Proceeding);
        let Some(pending) = pending else {
            debug!(sip_call_id = %req.call_id, "CANCEL matches no INVITE: 481");
            return self.reply(&req, 481);
        };
        // The leg the INVITE created (same Call-ID and branch).
        let sid = self
            .legs
            .iter()
            .find(|(_, l)| {
                l.inbound
                    && l.state == LegState::Offered
                    && l.invite
                        .as_ref()
                        .is_some_and(|i| i.server_key() == invite_key)
            })
            .map(|(s, _)| *s);
        let tag = sid
            .and_then(|s| self.legs.get(&s))
            .map(|l| l.local_tag.clone())
            .unwrap_or_else(new_tag);
        let ok = self.response(&req, 200, Some(&tag)).finish(None);
        self.respond(&req, 200, ok);
        if !pending {
            return; // already answered or rejected: CANCEL has no effect
        }
        let Some(sid) = sid else {
            return;
        };
        let Some(invite) = self.legs.get(&sid).and_then(|l| l.invite.clone()) else {
            return;
        };
        let resp = self.response(&invite, 487, Some(&tag)).finish(None);
        self.respond(&invite, 487, resp);
        info!(session = %sid, sip_call_id = %req.call_id, "inbound call cancelled by the caller");
        self.finish_leg(sid, End::Terminated(HangupCause::Cancelled), None);
    }

    fn on_bye(&mut self, req: InRequest) {
        let Some(sid) = self.dialog_of(&req) else {
            debug!(sip_call_id = %req.call_id, "BYE for an unknown dialog: 481");
            return self.reply(&req, 481);
        };
        let established = self
            .legs
            .get(&sid)
            .is_some_and(|l| l.state != LegState::Offered && l.state != LegState::Calling);
        if !established {
            return self.reply(&req, 481);
        }
        self.reply(&req, 200);
        info!(session = %sid, sip_call_id = %req.call_id, "BYE received");
        self.finish_leg(sid, End::Terminated(HangupCause::Normal), None);
    }

    fn on_reinvite(&mut self, req: InRequest) {
        let Some(sid) = self.dialog_of(&req) else {
            return self.reply(&req, 481);
        };
        let Some(leg) = self.legs.get(&sid) else {
            return self.reply(&req, 481);
        };
        let (state, pending_ok, call, was_held) =
            (leg.state, leg.ok.is_some(), leg.call, leg.remote_hold);
        let ours = leg.local_sdp.clone();
        match state {
            LegState::Confirmed if !pending_ok => {}
            // Our 2xx is not ACKed yet (RFC 3261 14.2).
            LegState::Confirmed | LegState::Accepted => {
                return self.reply_with(&req, 500, |b| b.header("Retry-After", 1));
            }
            _ => return self.reply(&req, 481),
        }
        let Some(ours) = ours else {
            return self.reply(&req, 488);
        };
        let answer = match req.sdp() {
            Some(offer) => {
                let dir = sdp::offer_direction(&offer);
                let held = dir.is_hold();
                if held != was_held {
                    if let Some(leg) = self.legs.get_mut(&sid) {
                        leg.remote_hold = held;
                    }
                    self.hold_changed(call, sid, held);
                }
                sdp::with_direction(&ours, dir.answer())
            }
            // No offer: ours goes in the 200 as the offer (offering everything: the
            // direction of our last answer is not an offer), and the answer comes in the
            // ACK.
            None => sdp::with_direction(&ours, sdp::Direction::SendRecv),
        };
        let offered = req.sdp().is_none();
        let contact = self.contact(req.response_peer());
        let ok = self
            .response(&req, 200, None)
            .header("Contact", contact)
            .header("Allow", ALLOW)
            .finish(Some(("application/sdp", answer.as_bytes())));
        self.respond(&req, 200, ok.clone());
        let refreshed = req
            .raw
            .get_list("Contact")
            .first()
            .and_then(|c| NameAddr::parse(c))
            .map(|n| n.uri);
        if let Some(leg) = self.legs.get_mut(&sid) {
            leg.local_sdp = Some(answer);
            leg.reinvite_offered = offered;
            // A re-INVITE is a target refresh request (RFC 3261 12.2.2).
            if let Some(target) = refreshed {
                leg.remote_target = target;
            }
        }
        self.start_ok_retx(sid, ok, req.response_peer(), req.cseq, false);
    }

    /// Reports that the far end of `sid` now holds the call (or no longer does).
    fn hold_changed(&mut self, call: CallId, sid: SessionId, held: bool) {
        info!(%call, session = %sid, on_hold = held, "remote hold changed");
        self.emit(
            SessionEvent::HoldChanged {
                call,
                session: sid,
                on_hold: held,
            },
            None,
        );
    }

    fn on_info(&mut self, req: InRequest) {
        let Some(sid) = self.dialog_of(&req) else {
            return self.reply(&req, 481);
        };
        let ct = req.raw.get("Content-Type").unwrap_or("");
        let body = String::from_utf8_lossy(&req.body);
        let digit = sdp::info_digit(ct, &body);
        self.reply(&req, 200);
        if let (Some(digit), Some(leg)) = (digit, self.legs.get(&sid)) {
            let call = leg.call;
            debug!(%call, session = %sid, %digit, "DTMF via INFO");
            self.emit(
                SessionEvent::DtmfReceived {
                    call,
                    session: sid,
                    digit,
                },
                None,
            );
        }
    }

    fn on_refer(&mut self, req: InRequest) {
        let Some(sid) = self.dialog_of(&req) else {
            return self.reply(&req, 481);
        };
        let Some(target) = req
            .raw
            .get("Refer-To")
            .and_then(NameAddr::parse)
            .map(|n| n.uri)
        else {
            return self.reply(&req, 400);
        };
        self.reply(&req, 202);
        if let Some(leg) = self.legs.get(&sid) {
            let call = leg.call;
            info!(%call, session = %sid, %target, "transfer requested (REFER)");
            self.emit(
                SessionEvent::TransferRequested {
                    call,
                    session: sid,
                    target: SmolStr::new(target),
                },
                None,
            );
        }
    }
}
