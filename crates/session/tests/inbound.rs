//! Inbound calls over real SIP on loopback: INVITE → IncomingCall → Answer/Reject,
//! 2xx retransmission until ACK, CANCEL, BYE, re-INVITE hold, INFO DTMF, REFER.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use call_engine_events::{CallId, HangupCause, Sdp, SessionCommand, SessionEvent, SessionId};
use smol_str::SmolStr;
use std::time::Duration;
use support::*;

/// The phone's side of one inbound call.
struct Caller {
    ua: Ua,
    call_id: String,
    from: String,
    to: String,
    invite_branch: String,
    invite: String,
    /// Our To tag once the engine answered.
    remote_to: Option<String>,
    cseq: u32,
}

impl Caller {
    async fn new(env: &Env) -> Caller {
        Caller::over(Ua::udp(env.udp).await)
    }

    fn over(ua: Ua) -> Caller {
        Caller {
            call_id: rand_token(),
            from: format!("\"Jane Doe\" <sip:+15551234@{DOMAIN}>;tag={}", rand_token()),
            to: format!("<sip:support@{DOMAIN}>"),
            invite_branch: branch(),
            invite: String::new(),
            remote_to: None,
            cseq: 1,
            ua,
        }
    }

    async fn invite(&mut self, sdp: &str) {
        let contact = self.ua.contact("jane");
        self.invite = self
            .invite_transaction("INVITE")
            .h("Contact", format!("<{contact}>"))
            .h("X-Skills", "billing, fr")
            .h("X-Priority", "7")
            .body("application/sdp", sdp)
            .build();
        let invite = self.invite.clone();
        self.ua.send(&invite).await;
    }

    /// A re-INVITE offering `sdp` (none: a late offer); returns its 200.
    async fn reinvite(&mut self, sdp: Option<&str>) -> Msg {
        self.in_dialog("INVITE", &[], sdp.map(|s| ("application/sdp", s)))
            .await;
        let cseq = self.cseq;
        self.ua
            .recv_where(|m| m.status() == Some(200) && m.cseq().0 == cseq)
            .await
    }

    /// An INVITE without SDP (a late offer).
    async fn invite_late(&mut self) {
        let contact = self.ua.contact("jane");
        self.invite = self
            .invite_transaction("INVITE")
            .h("Contact", format!("<{contact}>"))
            .build();
        let invite = self.invite.clone();
        self.ua.send(&invite).await;
    }

    /// Sends an in-dialog request (after the answer).
    async fn in_dialog(
        &mut self,
        method: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> String {
        self.cseq += 1;
        let b = branch();
        let to = self.remote_to.clone().expect("answered");
        let mut r = Req::new(method, &format!("sip:support@{DOMAIN}"))
            .h("Via", self.ua.via(&b))
            .h("Max-Forwards", 70)
            .h("From", &self.from)
            .h("To", to)
            .h("Call-ID", &self.call_id)
            .h("CSeq", format!("{} {method}", self.cseq));
        for (n, v) in extra {
            r = r.h(n, v);
        }
        if let Some((ct, body)) = body {
            r = r.body(ct, body);
        }
        let text = r.build();
        self.ua.send(&text).await;
        b
    }

    /// CANCELs the INVITE.
    async fn cancel(&mut self) {
        let cancel = self.invite_transaction("CANCEL").build();
        self.ua.send(&cancel).await;
    }

    /// A request of the INVITE's transaction (the INVITE itself, its CANCEL).
    fn invite_transaction(&self, method: &str) -> Req {
        Req::new(method, &format!("sip:support@{DOMAIN}"))
            .h("Via", self.ua.via(&self.invite_branch))
            .h("Max-Forwards", 70)
            .h("From", &self.from)
            .h("To", &self.to)
            .h("Call-ID", &self.call_id)
            .h("CSeq", format!("1 {method}"))
    }

    /// Round trip through the adapter (OPTIONS): everything sent before is processed.
    async fn sync(&mut self) {
        let b = branch();
        let options = Req::new("OPTIONS", &format!("sip:support@{DOMAIN}"))
            .h("Via", self.ua.via(&b))
            .h("From", format!("<sip:sync@{DOMAIN}>;tag=s"))
            .h("To", format!("<sip:support@{DOMAIN}>"))
            .h("Call-ID", rand_token())
            .h("CSeq", "1 OPTIONS")
            .build();
        self.ua.send(&options).await;
        self.ua
            .recv_where(|m| m.status().is_some() && m.cseq().1 == "OPTIONS")
            .await;
    }

    async fn ack(&mut self, cseq: u32) {
        self.ack_with(cseq, None).await;
    }

    /// The ACK, with `sdp` as its body if given (the answer to a late offer).
    async fn ack_with(&mut self, cseq: u32, sdp: Option<&str>) {
        let to = self.remote_to.clone().expect("answered");
        let mut ack = Req::new("ACK", &format!("sip:support@{DOMAIN}"))
            .h("Via", self.ua.via(&branch()))
            .h("Max-Forwards", 70)
            .h("From", &self.from)
            .h("To", to)
            .h("Call-ID", &self.call_id)
            .h("CSeq", format!("{cseq} ACK"));
        if let Some(sdp) = sdp {
            ack = ack.body("application/sdp", sdp);
        }
        let ack = ack.build();
        self.ua.send(&ack).await;
    }
}

/// INVITE → 100 → IncomingCall; returns the ids.
async fn offer_call(env: &mut Env, caller: &mut Caller) -> (CallId, SessionId) {
    caller.invite(SDP_OFFER).await;
    let trying = caller.ua.recv().await;
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to_tag(), None, "100 Trying carries no To tag");
    let got = env.event().await;
    match got.event {
        SessionEvent::IncomingCall { call, session, .. } => {
            assert_eq!(got.causation, None);
            assert_eq!(got.correlation, call.0);
            (call, session)
        }
        other => panic!("expected IncomingCall, got {other:?}"),
    }
}

async fn answer(
    env: &mut Env,
    caller: &mut Caller,
    call: CallId,
    session: SessionId,
) -> (Msg, call_engine_bus::EventId) {
    let id = env
        .command(SessionCommand::Answer {
            call,
            session,
            sdp: Sdp(SDP_ENGINE.into()),
        })
        .await;
    let ok = caller.ua.recv_where(|m| m.status() == Some(200)).await;
    caller.remote_to = Some(ok.h("To").to_string());
    (ok, id)
}

/// A caller whose call was answered, ACKed and confirmed to the engine.
async fn established(env: &mut Env) -> (Caller, CallId, SessionId) {
    let caller = Caller::new(env).await;
    established_by(env, caller).await
}

/// [`established`], for `caller`.
async fn established_by(env: &mut Env, mut caller: Caller) -> (Caller, CallId, SessionId) {
    let (call, session) = offer_call(env, &mut caller).await;
    answer(env, &mut caller, call, session).await;
    ack_confirmed(env, &mut caller, call, session).await;
    caller.sync().await;
    (caller, call, session)
}

/// ACKs the 200 to the INVITE (CSeq 1) and expects the dialog confirmed.
async fn ack_confirmed(env: &mut Env, caller: &mut Caller, call: CallId, session: SessionId) {
    caller.ack(1).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Confirmed {
            call,
            session,
            answer: None
        }
    );
}

#[tokio::test]
async fn inbound_call_answer_ack_bye() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    caller.invite(SDP_OFFER).await;
    let trying = caller.ua.recv().await;
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.h("Call-ID"), caller.call_id);
    assert_eq!(
        trying.h("From"),
        caller.from,
        "From copied verbatim (+ not escaped)"
    );

    let got = env.event().await;
    let (call, session) = match &got.event {
        SessionEvent::IncomingCall {
            call,
            session,
            from,
            to,
            offer,
            requested_skills,
            requested_priority,
        } => {
            assert_eq!(from.display_name.as_deref(), Some("Jane Doe"));
            assert_eq!(from.user, "+15551234");
            assert_eq!(from.uri, format!("sip:+15551234@{DOMAIN}"));
            assert_eq!(to, "support");
            assert_eq!(offer.as_ref().map(|s| s.0.as_str()), Some(SDP_OFFER));
            assert_eq!(requested_skills, &["billing", "fr"]);
            assert_eq!(*requested_priority, Some(7));
            (*call, *session)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(got.correlation, call.0);

    let (ok, answer_id) = answer(&mut env, &mut caller, call, session).await;
    assert_eq!(ok.body, SDP_ENGINE);
    assert_eq!(ok.h("Content-Type"), "application/sdp");
    assert!(ok.to_tag().is_some());
    assert_eq!(ok.cseq(), (1, "INVITE".into()));
    assert!(ok
        .uri_of("Contact")
        .starts_with("sip:call-engine@127.0.0.1:"));
    assert!(ok.h("Allow").contains("INVITE"));

    caller.ack(1).await;
    // The ACK confirms the dialog (not `Answered`: that is for outbound legs, and the
    // engine answered this one itself).
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Confirmed {
            call,
            session,
            answer: None
        }
    );
    assert_eq!(got.correlation, call.0);
    assert!(answer_id.0 > 0);

    // A duplicate ACK is absorbed silently: no second `Confirmed`.
    caller.ack(1).await;
    caller.sync().await;
    assert!(env.event_within(Duration::from_millis(100)).await.is_none());

    let bye_branch = caller.in_dialog("BYE", &[], None).await;
    let bye_ok = caller
        .ua
        .recv_where(|m| m.status().is_some() && m.cseq().1 == "BYE")
        .await;
    assert_eq!(bye_ok.status(), Some(200));
    assert_eq!(bye_ok.branch(), bye_branch);
    assert_eq!(bye_ok.cseq(), (2, "BYE".into()));
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Normal
        }
    );
    // Exactly one terminal event, and no stray retransmission of the 200.
    assert!(env.event_within(Duration::from_millis(200)).await.is_none());
    let late: Vec<_> = caller.ua.drain(Duration::from_millis(150)).await;
    assert!(
        late.iter()
            .all(|m| m.status() != Some(200) || m.cseq().1 != "INVITE"),
        "{late:?}"
    );

    // The dialog is gone: another BYE gets 481.
    caller.in_dialog("BYE", &[], None).await;
    assert_eq!(caller.ua.recv().await.status(), Some(481));
    env.shutdown().await;
}

#[tokio::test]
async fn ok_is_retransmitted_until_the_ack() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut caller).await;
    let (first, _) = answer(&mut env, &mut caller, call, session).await;
    // Withhold the ACK: the same 200 comes again (T1 = 20 ms, doubling up to T2 = 80 ms).
    for _ in 0..3 {
        let again = caller.ua.recv().await;
        assert_eq!(again.status(), Some(200));
        assert_eq!(again.text, first.text);
    }
    ack_confirmed(&mut env, &mut caller, call, session).await;
    caller.sync().await;
    // Let any retransmission already in flight land, then expect silence.
    tokio::time::sleep(Duration::from_millis(30)).await;
    caller.ua.drain(Duration::from_millis(10)).await;
    assert!(
        caller
            .ua
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "the 200 must stop after the ACK"
    );
    assert!(env.sip().stats().retransmissions >= 3);
    env.shutdown().await;
}

#[tokio::test]
async fn no_ack_ends_the_call_with_a_bye() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut caller).await;
    answer(&mut env, &mut caller, call, session).await;
    // Never ACK: after 64*T1 the engine gives up, sends BYE and reports the leg gone.
    let bye = caller.ua.recv_where(|m| m.method() == Some("BYE")).await;
    assert_eq!(bye.h("Call-ID"), caller.call_id);
    match env.event().await.event {
        SessionEvent::Terminated {
            call: c,
            session: s,
            cause,
        } => {
            assert_eq!((c, s), (call, session));
            assert!(matches!(cause, HangupCause::Failure { .. }), "{cause:?}");
        }
        other => panic!("{other:?}"),
    }
    let ok = response_to(&bye, 200, "OK", None).build();
    caller.ua.send(&ok).await;
    assert!(env.event_within(Duration::from_millis(200)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn reject_sends_the_status_with_retry_after() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut caller).await;
    let id = env
        .command(SessionCommand::Reject {
            call,
            session,
            status: 503,
            retry_after_secs: Some(30),
        })
        .await;
    let resp = caller.ua.recv().await;
    assert_eq!(resp.status(), Some(503));
    assert_eq!(resp.h("Retry-After"), "30");
    assert!(resp.to_tag().is_some());
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Status { code: 503 }
        }
    );
    assert_eq!(got.causation, Some(id));
    // Retransmitted until the ACK...
    let again = caller.ua.recv().await;
    assert_eq!(again.text, resp.text);
    // ...a retransmitted INVITE gets the cached 503, not a new call...
    let invite = caller.invite.clone();
    caller.ua.send(&invite).await;
    assert_eq!(caller.ua.recv().await.status(), Some(503));
    assert!(env.event_within(Duration::from_millis(100)).await.is_none());
    // ...and the ACK (which reuses the INVITE's branch) stops it.
    let ack = Req::new("ACK", &format!("sip:support@{DOMAIN}"))
        .h("Via", caller.ua.via(&caller.invite_branch))
        .h("Max-Forwards", 70)
        .h("From", &caller.from)
        .h("To", resp.h("To"))
        .h("Call-ID", &caller.call_id)
        .h("CSeq", "1 ACK")
        .build();
    caller.ua.send(&ack).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    caller.ua.drain(Duration::from_millis(10)).await;
    assert!(caller
        .ua
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn caller_cancels_before_the_answer() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut caller).await;
    caller.cancel().await;
    let a = caller.ua.recv().await;
    let b = caller.ua.recv().await;
    let (cancel_ok, terminated) = if a.cseq().1 == "CANCEL" {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(cancel_ok.status(), Some(200));
    assert_eq!(cancel_ok.cseq(), (1, "CANCEL".into()));
    assert_eq!(terminated.status(), Some(487));
    assert_eq!(terminated.cseq(), (1, "INVITE".into()));
    assert_eq!(
        env.event().await.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Cancelled
        }
    );
    // An Answer arriving too late is ignored (no 200 goes out).
    env.command(SessionCommand::Answer {
        call,
        session,
        sdp: Sdp(SDP_ENGINE.into()),
    })
    .await;
    let ack = Req::new("ACK", &format!("sip:support@{DOMAIN}"))
        .h("Via", caller.ua.via(&caller.invite_branch))
        .h("From", &caller.from)
        .h("To", terminated.h("To"))
        .h("Call-ID", &caller.call_id)
        .h("CSeq", "1 ACK")
        .build();
    caller.ua.send(&ack).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    caller.ua.drain(Duration::from_millis(10)).await;
    assert!(caller
        .ua
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    assert!(env.event_within(Duration::from_millis(100)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn reinvite_hold_and_resume_answers_with_our_sdp() {
    let mut env = Env::start().await;
    let (mut caller, call, session) = established(&mut env).await;

    let hold = SDP_OFFER
        .replace("a=sendrecv", "a=sendonly")
        .replace("o=- 1 1", "o=- 1 2");
    caller
        .in_dialog("INVITE", &[], Some(("application/sdp", &hold)))
        .await;
    let ok = caller
        .ua
        .recv_where(|m| m.status() == Some(200) && m.cseq().0 == 2)
        .await;
    assert_eq!(ok.cseq(), (2, "INVITE".into()));
    assert!(ok.body.contains("a=recvonly"), "{}", ok.body);
    assert!(!ok.body.contains("a=sendrecv"));
    assert!(
        ok.body.contains("o=call-engine 42 2 IN IP4"),
        "version bumped: {}",
        ok.body
    );
    assert!(
        ok.body.contains("m=audio 50000 RTP/AVP 0 101"),
        "our SDP, not a generated one"
    );
    caller.ack(2).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::HoldChanged {
            call,
            session,
            on_hold: true
        }
    );

    let resume = SDP_OFFER.replace("o=- 1 1", "o=- 1 3");
    caller
        .in_dialog("INVITE", &[], Some(("application/sdp", &resume)))
        .await;
    let ok = caller
        .ua
        .recv_where(|m| m.status() == Some(200) && m.cseq().0 == 3)
        .await;
    assert!(
        ok.body.contains("a=sendrecv") && ok.body.contains("o=call-engine 42 3 "),
        "{}",
        ok.body
    );
    caller.ack(3).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::HoldChanged {
            call,
            session,
            on_hold: false
        }
    );
    env.shutdown().await;
}

/// A re-INVITE without SDP: the 200 offers (sendrecv, whatever we last answered) and the
/// ACK's answer holds or resumes.
#[tokio::test]
async fn a_reinvite_without_sdp_is_answered_in_its_ack() {
    let mut env = Env::start().await;
    let (mut caller, call, session) = established(&mut env).await;
    let held = |on_hold| SessionEvent::HoldChanged {
        call,
        session,
        on_hold,
    };
    // Held by an offer first: our answer, the SDP we last sent, is recvonly.
    let hold = SDP_OFFER.replace("a=sendrecv", "a=sendonly");
    let ok = caller.reinvite(Some(&hold)).await;
    assert!(ok.body.contains("a=recvonly"), "{}", ok.body);
    caller.ack(2).await;
    assert_eq!(env.event().await.event, held(true));
    // Then re-INVITEs without SDP: each 200 offers sendrecv; the ACK's answer decides.
    for (cseq, direction, on_hold) in [(3, "a=sendrecv", false), (4, "a=sendonly", true)] {
        let ok = caller.reinvite(None).await;
        assert!(ok.body.contains("a=sendrecv"), "an offer: {}", ok.body);
        let answer = SDP_OFFER.replace("a=sendrecv", direction);
        caller.ack_with(cseq, Some(&answer)).await;
        assert_eq!(env.event().await.event, held(on_hold));
    }
    // The same state again: no event.
    caller.reinvite(None).await;
    caller.ack_with(5, Some(&hold)).await;
    assert!(env.event_within(Duration::from_millis(200)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn info_dtmf_and_refer() {
    let mut env = Env::start().await;
    let (mut caller, call, session) = established(&mut env).await;

    caller
        .in_dialog(
            "INFO",
            &[],
            Some(("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n")),
        )
        .await;
    assert_eq!(caller.ua.recv().await.status(), Some(200));
    assert_eq!(
        env.event().await.event,
        SessionEvent::DtmfReceived {
            call,
            session,
            digit: '5'
        }
    );

    caller
        .in_dialog("REFER", &[("Refer-To", "<sip:bob@example.test>")], None)
        .await;
    assert_eq!(caller.ua.recv().await.status(), Some(202));
    assert_eq!(
        env.event().await.event,
        SessionEvent::TransferRequested {
            call,
            session,
            target: "sip:bob@example.test".into()
        }
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_hangup_before_the_ack_sends_the_bye_on_the_ack_without_confirming() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut caller).await;
    answer(&mut env, &mut caller, call, session).await;
    // The engine hangs up while our 200 is not ACKed yet: the BYE waits for the ACK.
    let id = env.command(SessionCommand::Hangup { call, session }).await;
    caller.sync().await;
    // 100 ms (the 200 keeps coming, every 80 ms at most): no BYE among it.
    let until = tokio::time::Instant::now() + Duration::from_millis(100);
    while let Some(m) = caller
        .ua
        .recv_within(until.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert_ne!(m.method(), Some("BYE"), "a BYE before the ACK");
    }
    caller.ack(1).await;
    let bye = caller.ua.recv_where(|m| m.method() == Some("BYE")).await;
    assert_eq!(bye.h("Call-ID"), caller.call_id);
    // The leg ends; it was never confirmed to the engine.
    bye_answered(&mut env, &mut caller, &bye, call, session, id).await;
    assert!(env.event_within(Duration::from_millis(200)).await.is_none());
    env.shutdown().await;
}

/// Answers our BYE with 200 and expects the leg's end, caused by the `Hangup` command `id`.
async fn bye_answered(
    env: &mut Env,
    caller: &mut Caller,
    bye: &Msg,
    call: CallId,
    session: SessionId,
    id: call_engine_bus::EventId,
) {
    caller
        .ua
        .send(&response_to(bye, 200, "OK", None).build())
        .await;
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Normal
        }
    );
    assert_eq!(got.causation, Some(id));
}

#[tokio::test]
async fn engine_hangs_up_an_inbound_call() {
    let mut env = Env::start().await;
    let (mut caller, call, session) = established(&mut env).await;
    let id = env.command(SessionCommand::Hangup { call, session }).await;
    let bye = caller.ua.recv_where(|m| m.method() == Some("BYE")).await;
    // The BYE goes to the caller's Contact, in its dialog.
    assert_eq!(bye.request_uri(), caller.ua.contact("jane"));
    assert_eq!(bye.h("Call-ID"), caller.call_id);
    assert_eq!(bye.h("To"), caller.from);
    assert_eq!(
        bye.from_tag(),
        param_of(caller.remote_to.as_deref().unwrap(), "tag")
    );
    bye_answered(&mut env, &mut caller, &bye, call, session, id).await;
    env.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_live_calls() {
    let mut env = Env::start().await;
    let (mut caller, call, session) = established(&mut env).await;
    env.shutdown().await;
    let bye = caller.ua.recv_where(|m| m.method() == Some("BYE")).await;
    assert_eq!(bye.h("Call-ID"), caller.call_id);
    assert_eq!(
        env.event().await.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Shutdown
        }
    );
}

#[tokio::test]
async fn dialog_probe_alive_then_lost() {
    let mut env = Env::start().await;
    let (mut caller, call, session) = established(&mut env).await;

    // The phone still has the dialog: 200 to the in-dialog OPTIONS.
    let id = env
        .command(SessionCommand::ProbeDialog { call, session })
        .await;
    let probe = caller
        .ua
        .recv_where(|m| m.method() == Some("OPTIONS"))
        .await;
    assert_eq!(probe.h("Call-ID"), caller.call_id, "sent in the dialog");
    assert_eq!(
        probe.from_tag(),
        param_of(caller.remote_to.as_deref().unwrap(), "tag")
    );
    caller
        .ua
        .send(&response_to(&probe, 200, "OK", None).build())
        .await;
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::DialogProbed {
            call,
            session,
            alive: true,
            status: Some(200)
        }
    );
    assert_eq!(got.causation, Some(id));
    assert!(env.event_within(Duration::from_millis(100)).await.is_none());

    // The phone hung up and its BYE was lost: it answers 481 now, and the leg ends.
    env.command(SessionCommand::ProbeDialog { call, session })
        .await;
    let probe = caller
        .ua
        .recv_where(|m| m.method() == Some("OPTIONS"))
        .await;
    assert_eq!(probe.cseq().1, "OPTIONS");
    caller
        .ua
        .send(&response_to(&probe, 481, "Call/Transaction Does Not Exist", None).build())
        .await;
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::DialogProbed {
            call,
            session,
            alive: false,
            status: Some(481)
        }
    );
    let got = env.event().await;
    match got.event {
        SessionEvent::Terminated {
            call: c,
            session: s,
            cause: HangupCause::Failure { detail },
        } => {
            assert_eq!((c, s), (call, session));
            assert!(detail.contains("481"), "{detail}");
        }
        other => panic!("expected Terminated, got {other:?}"),
    }
    // The leg is gone: probing again does nothing.
    env.command(SessionCommand::ProbeDialog { call, session })
        .await;
    assert!(env.event_within(Duration::from_millis(150)).await.is_none());
    assert!(caller
        .ua
        .recv_within(Duration::from_millis(100))
        .await
        .is_none());
    env.shutdown().await;
}

/// `caller` sends an INVITE without SDP, offered to the engine without one, which
/// answers: the ids and the 200.
async fn late_call(env: &mut Env, caller: &mut Caller) -> (CallId, SessionId, Msg) {
    caller.invite_late().await;
    assert_eq!(caller.ua.recv().await.status(), Some(100));
    let (call, session) = match env.event().await.event {
        SessionEvent::IncomingCall {
            call,
            session,
            offer,
            ..
        } => {
            assert_eq!(offer, None);
            (call, session)
        }
        other => panic!("expected IncomingCall, got {other:?}"),
    };
    let (ok, _) = answer(env, caller, call, session).await;
    (call, session, ok)
}

/// A late offer: an INVITE without SDP is offered to the engine without one; the 200
/// carries the engine's offer and the ACK the caller's answer, which `Confirmed` brings.
/// An SDP in the ACK of an ordinary call is no answer: `Confirmed` carries none.
#[tokio::test]
async fn a_late_offer_is_answered_in_the_ack() {
    let mut env = Env::start().await;
    let mut caller = Caller::new(&env).await;
    let (call, session, ok) = late_call(&mut env, &mut caller).await;
    assert_eq!(ok.body, SDP_ENGINE, "the 200 carries the engine's offer");
    caller.ack_with(1, Some(SDP_OFFER)).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Confirmed {
            call,
            session,
            answer: Some(Sdp(SDP_OFFER.into())),
        }
    );

    // A late answer that holds: on hold from the start.
    let mut held = Caller::new(&env).await;
    let (call, session, _) = late_call(&mut env, &mut held).await;
    let sendonly = SDP_OFFER.replace("a=sendrecv", "a=sendonly");
    held.ack_with(1, Some(&sendonly)).await;
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Confirmed {
            answer: Some(_),
            ..
        }
    ));
    assert_eq!(
        env.event().await.event,
        SessionEvent::HoldChanged {
            call,
            session,
            on_hold: true
        }
    );

    let mut ordinary = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut ordinary).await;
    answer(&mut env, &mut ordinary, call, session).await;
    ordinary.ack_with(1, Some(SDP_OFFER)).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Confirmed {
            call,
            session,
            answer: None,
        }
    );
    env.shutdown().await;
}

/// The IncomingCall of `caller`'s INVITE: its requested skills and priority.
async fn requested(env: &mut Env, caller: &mut Caller) -> (Vec<SmolStr>, Option<i32>) {
    caller.invite(SDP_OFFER).await;
    assert_eq!(caller.ua.recv().await.status(), Some(100));
    match env.event().await.event {
        SessionEvent::IncomingCall {
            requested_skills,
            requested_priority,
            ..
        } => (requested_skills, requested_priority),
        other => panic!("expected IncomingCall, got {other:?}"),
    }
}

/// Only `calls_from` may place calls: an INVITE from elsewhere gets 403 (also when
/// retransmitted) and nothing reaches the engine; one from inside is offered.
#[tokio::test]
async fn invites_from_outside_calls_from_get_403() {
    let mut env = Env::start_with(|c| c.calls_from = "127.0.0.2".parse().unwrap()).await;
    let mut outsider = Caller::new(&env).await;
    assert_eq!(outsider.ua.local.ip().to_string(), "127.0.0.1");
    outsider.invite(SDP_OFFER).await;
    let r = outsider.ua.recv().await;
    assert_eq!(r.status(), Some(403), "{}", r.text);
    assert!(r.to_tag().is_some());
    let retransmission = outsider.invite.clone();
    outsider.ua.send(&retransmission).await;
    assert_eq!(outsider.ua.recv().await.status(), Some(403));
    assert!(env.event_within(Duration::from_millis(200)).await.is_none());
    assert_eq!(env.sip().stats().forbidden_sources, 1);
    let ua = Ua::udp_from(env.udp, [127, 0, 0, 2].into()).await;
    let mut insider = Caller::over(ua);
    offer_call(&mut env, &mut insider).await;
    assert_eq!(env.sip().stats().forbidden_sources, 1);
    env.shutdown().await;
}

/// `X-Skills` and `X-Priority` count only from a trusted upstream: a caller elsewhere
/// cannot rank themselves.
#[tokio::test]
async fn skills_and_priority_headers_count_only_from_trusted_sources() {
    let mut env = Env::start_with(|c| c.trusted = "127.0.0.2/32".parse().unwrap()).await;
    let mut caller = Caller::new(&env).await;
    assert_eq!(requested(&mut env, &mut caller).await, (vec![], None));
    let mut upstream = Caller::over(Ua::udp_from(env.udp, [127, 0, 0, 2].into()).await);
    assert_eq!(
        requested(&mut env, &mut upstream).await,
        (vec!["billing".into(), "fr".into()], Some(7))
    );
    env.shutdown().await;
}

#[tokio::test]
async fn calls_beyond_those_the_engine_has_not_answered_yet_get_503() {
    let mut env = Env::start_with(|c| c.max_offered_calls = 2).await;
    let mut first = Caller::new(&env).await;
    let (call1, session1) = offer_call(&mut env, &mut first).await;
    let mut second = Caller::new(&env).await;
    let (call2, session2) = offer_call(&mut env, &mut second).await;
    // Two wait for the engine: a third is refused before any event.
    let refused = async |env: &mut Env| {
        let mut c = Caller::new(env).await;
        c.invite(SDP_OFFER).await;
        let r = c.ua.recv().await;
        assert_eq!(r.status(), Some(503), "{}", r.text);
        assert_eq!(r.h("Retry-After"), "5");
        assert!(env.event_within(Duration::from_millis(100)).await.is_none());
    };
    refused(&mut env).await;
    assert_eq!(env.sip().stats().overloaded, 1);
    // The engine rejects one: room for one more.
    env.command(SessionCommand::Reject {
        call: call1,
        session: session1,
        status: 486,
        retry_after_secs: None,
    })
    .await;
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Terminated { .. }
    ));
    let mut third = Caller::new(&env).await;
    offer_call(&mut env, &mut third).await;
    refused(&mut env).await;
    // The engine answers one: it no longer waits, room for one more.
    answer(&mut env, &mut second, call2, session2).await;
    let mut fourth = Caller::new(&env).await;
    offer_call(&mut env, &mut fourth).await;
    refused(&mut env).await;
    assert_eq!(env.sip().stats().overloaded, 3);
    env.shutdown().await;
}

#[tokio::test]
async fn a_cancel_goes_through_when_new_requests_are_refused_for_overload() {
    let mut env = Env::start_with(|c| c.max_server_transaction_bytes = 64 * 1024).await;
    let mut caller = Caller::new(&env).await;
    let (call, session) = offer_call(&mut env, &mut caller).await;
    // Another peer spends the transaction budget (answers that copy a 2 KB Via).
    let mut flood = Ua::udp(env.udp).await;
    let pad = "p".repeat(2000);
    let mut refused = false;
    for _ in 0..100 {
        let b = branch();
        let via = flood.via(&b);
        let options = Req::new("OPTIONS", &format!("sip:support@{DOMAIN}"))
            .h("Via", format!("{via};pad={pad}"))
            .h("From", format!("<sip:flood@{DOMAIN}>;tag=f"))
            .h("To", format!("<sip:support@{DOMAIN}>"))
            .h("Call-ID", rand_token())
            .h("CSeq", "1 OPTIONS")
            .build();
        flood.send(&options).await;
        let r = flood
            .recv_where(|m| m.status().is_some() && m.branch() == b)
            .await;
        if r.status() == Some(503) {
            refused = true;
            break;
        }
    }
    assert!(refused, "the budget is spent");
    // The caller gives up: its CANCEL is answered, and so is the INVITE (487).
    caller.cancel().await;
    let mut codes = [caller.ua.recv().await, caller.ua.recv().await]
        .map(|m| (m.cseq().1, m.status().unwrap_or(0)));
    codes.sort();
    assert_eq!(
        codes,
        [("CANCEL".to_string(), 200), ("INVITE".to_string(), 487)]
    );
    let ended = env.event().await.event;
    let cancelled = SessionEvent::Terminated {
        call,
        session,
        cause: HangupCause::Cancelled,
    };
    assert_eq!(ended, cancelled);
    env.shutdown().await;
}

#[tokio::test]
async fn an_engine_that_falls_behind_gets_new_work_refused_and_loses_no_event() {
    const LIMIT: usize = 32;
    const N: u32 = 600;
    let mut env = Env::start_with_bus(
        |c| c.max_pending_events = LIMIT,
        call_engine_bus::EventBusConfig {
            broadcast_capacity: 8,
            ..Default::default()
        },
    )
    .await;
    // Over TCP: nothing lost on the way (a UDP flood may overrun the socket's buffer).
    let caller = Caller::over(Ua::tcp(env.tcp).await);
    let (mut caller, call, session) = established_by(&mut env, caller).await;
    // The engine (this test) stops taking events while the caller sends a flood of
    // DTMF INFOs, each an event.
    let digit = |cseq: u32| char::from(b'0' + (cseq % 10) as u8);
    let first = caller.cseq + 1;
    for cseq in first..first + N {
        let body = format!("Signal={}\r\nDuration=100\r\n", digit(cseq));
        caller
            .in_dialog("INFO", &[], Some(("application/dtmf-relay", &body)))
            .await;
    }
    // Every INFO is answered: 200 while the events fit, then 503 with Retry-After.
    let mut accepted = Vec::new();
    let mut refused = 0u32;
    for _ in 0..N {
        let m = caller
            .ua
            .recv_where(|m| m.status().is_some() && m.cseq().1 == "INFO")
            .await;
        match m.status() {
            Some(200) => accepted.push(m.cseq().0),
            Some(503) => {
                assert!(m.header("Retry-After").is_some());
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // The events that waited: those in the bus's lane (8) and the pending ones (LIMIT,
    // the one in the publisher task's hands included).
    assert!(accepted.len() <= LIMIT + 8, "{} accepted", accepted.len());
    assert!(refused > 0);
    let stats = env.sip().stats();
    assert!(stats.pending_events <= LIMIT as u64, "{stats:?}");
    assert!(stats.overloaded >= u64::from(refused), "{stats:?}");
    // A BYE still goes through: calls can end while the engine is behind.
    caller.in_dialog("BYE", &[], None).await;
    let ok = caller
        .ua
        .recv_where(|m| m.status().is_some() && m.cseq().1 == "BYE")
        .await;
    assert_eq!(ok.status(), Some(200));
    // The engine catches up: every accepted INFO's event arrives, in order, and the end
    // (Critical: it may overtake the High DTMF events, by design).
    let mut digits = Vec::new();
    let mut ended = false;
    while digits.len() < accepted.len() || !ended {
        match env.event().await.event {
            SessionEvent::DtmfReceived {
                call: c,
                session: s,
                digit,
            } if (c, s) == (call, session) => digits.push(digit),
            SessionEvent::Terminated { call: c, .. } if c == call && !ended => ended = true,
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<char> = accepted.iter().map(|c| digit(*c)).collect();
    assert_eq!(digits, expected);
    assert!(env.event_within(Duration::from_millis(100)).await.is_none());
    let stats = env.sip().stats();
    assert_eq!(stats.pending_events, 0, "{stats:?}");
    assert_eq!(stats.publish_failures, 0);
    env.shutdown().await;
}
