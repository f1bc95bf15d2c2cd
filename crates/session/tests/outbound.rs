//! Outbound calls (the engine calling an agent's phone) over real SIP on loopback:
//! INVITE, provisional and final responses, ACK (and re-ACK of retransmitted 2xx),
//! CANCEL, BYE, timeouts, TCP (new connection and reuse of the registration's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use call_engine_bus::EventId;
use call_engine_events::{
    AgentId, CallId, HangupCause, Party, Sdp, SessionCommand, SessionEvent, SessionId,
};
use std::time::Duration;
use support::*;
use tokio::net::TcpListener;

fn caller() -> Party {
    Party {
        display_name: Some("Jane Doe".into()),
        user: "+15551234".into(),
        uri: "sip:+15551234@carrier.test".into(),
    }
}

/// A phone registered over TCP with a contact nobody could connect to (like a phone
/// behind NAT): requests reach it only over the registration's connection.
async fn registered_over_tcp(env: &mut Env) -> (Ua, &'static str) {
    let contact = "sip:alice@127.0.0.1:9;transport=tcp";
    (register_over_tcp(env, contact).await, contact)
}

/// A new TCP connection registering `contact` for alice (or refreshing it).
async fn register_over_tcp(env: &mut Env, contact: &str) -> Ua {
    let mut phone = Ua::tcp(env.tcp).await;
    assert_eq!(
        phone
            .register("alice", "secret", contact, 60)
            .await
            .status(),
        Some(200)
    );
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Registered { .. }
    ));
    phone
}

async fn invite(env: &Env, target: &str) -> (CallId, SessionId, call_engine_bus::EventId) {
    let call = env.ids.call();
    let session = env.ids.session();
    let id = env
        .command(SessionCommand::Invite {
            call,
            session,
            target: target.into(),
            caller: caller(),
            sdp: Sdp(SDP_ENGINE.into()),
        })
        .await;
    (call, session, id)
}

/// A `;transport=tcp` target at `listener`.
fn tcp_target(listener: &TcpListener) -> String {
    format!("sip:alice@{};transport=tcp", listener.local_addr().unwrap())
}

/// An INVITE to `listener`'s address over a TCP connection we open: the phone's end of
/// that connection and the INVITE it got.
async fn tcp_invite(env: &Env, listener: &TcpListener) -> (CallId, SessionId, Ua, Msg) {
    let (call, session, _) = invite(env, &tcp_target(listener)).await;
    let mut phone = Ua::accept(listener).await;
    let inv = phone.recv().await;
    assert_eq!(inv.method(), Some("INVITE"));
    (call, session, phone, inv)
}

/// The phone answers `inv` with 200 (Contact `contact`) over TCP: it is ACKed over
/// TCP and reported `Answered`.
async fn answer_over_tcp(
    env: &mut Env,
    phone: &mut Ua,
    inv: &Msg,
    tag: &str,
    contact: &str,
    call: CallId,
    session: SessionId,
) {
    let ok = reply(inv, 200, "OK", tag)
        .h("Contact", format!("<{contact}>"))
        .body("application/sdp", SDP_OFFER);
    phone.send(&ok).await;
    let ack = phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert!(ack.h("Via").starts_with("SIP/2.0/TCP "));
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Answered { call: c, session: s, .. } if (c, s) == (call, session)
    ));
}

/// The agent phone answers: a tagged response to the INVITE.
fn reply(inv: &Msg, code: u16, reason: &str, tag: &str) -> RespText {
    response_to(inv, code, reason, Some(tag))
}

#[tokio::test]
async fn outbound_call_ringing_answer_reack_and_hangup() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let target = phone.contact("alice");
    let (call, session, invite_id) = invite(&env, &target).await;

    let inv = phone.recv().await;
    assert_eq!(inv.method(), Some("INVITE"));
    assert_eq!(inv.request_uri(), target);
    assert_eq!(
        inv.h("From").split(";tag=").next().unwrap(),
        format!("\"Jane Doe\" <sip:+15551234@{DOMAIN}>")
    );
    assert!(inv.from_tag().is_some());
    assert_eq!(inv.h("To"), format!("<{target}>"));
    assert_eq!(
        inv.h("P-Asserted-Identity"),
        "\"Jane Doe\" <sip:+15551234@carrier.test>"
    );
    assert!(inv.h("Via").starts_with("SIP/2.0/UDP 127.0.0.1:"));
    assert!(inv.branch().starts_with("z9hG4bK"));
    assert_eq!(inv.cseq(), (1, "INVITE".into()));
    assert!(inv
        .uri_of("Contact")
        .starts_with("sip:call-engine@127.0.0.1:"));
    assert_eq!(inv.body, SDP_ENGINE);
    assert_eq!(inv.from, env.udp, "sent from the adapter's UDP socket");

    let tag = rand_token();
    phone
        .send_to(&reply(&inv, 100, "Trying", &tag).build(), inv.from)
        .await;
    phone
        .send_to(&reply(&inv, 180, "Ringing", &tag).build(), inv.from)
        .await;
    let got = env.event().await;
    assert_eq!(got.event, SessionEvent::Ringing { call, session });
    assert_eq!(got.causation, Some(invite_id));
    assert_eq!(got.correlation, call.0);

    let phone_contact = format!("sip:alice@{};ob", phone.local);
    let ok = reply(&inv, 200, "OK", &tag)
        .h("Contact", format!("<{phone_contact}>"))
        .body("application/sdp", SDP_OFFER);
    phone.send_to(&ok, inv.from).await;
    let ack = phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert_eq!(
        ack.request_uri(),
        phone_contact,
        "the ACK goes to the 2xx's Contact"
    );
    assert_eq!(ack.cseq(), (1, "ACK".into()));
    assert_ne!(ack.branch(), inv.branch(), "a 2xx ACK has a new branch");
    assert_eq!(ack.to_tag().as_deref(), Some(tag.as_str()));
    assert_eq!(ack.from_tag(), inv.from_tag());
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Answered {
            call,
            session,
            sdp: Some(Sdp(SDP_OFFER.into()))
        }
    );
    assert_eq!(got.causation, Some(invite_id));

    // The phone did not see our ACK and retransmits its 200: we ACK again.
    phone.send_to(&ok, inv.from).await;
    let ack2 = phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert_eq!(ack2.text, ack.text);
    phone.send_to(&ok, inv.from).await;
    assert_eq!(
        phone.recv_where(|m| m.method() == Some("ACK")).await.text,
        ack.text
    );
    // No INVITE retransmission after the final response, no new event.
    let late = phone.drain(Duration::from_millis(150)).await;
    assert!(
        late.iter().all(|m| m.method() != Some("INVITE")),
        "{late:?}"
    );
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());

    let hangup_id = env.command(SessionCommand::Hangup { call, session }).await;
    let bye = phone.recv_where(|m| m.method() == Some("BYE")).await;
    assert_eq!(bye.request_uri(), phone_contact);
    assert_eq!(bye.cseq(), (2, "BYE".into()));
    assert_eq!(bye.to_tag().as_deref(), Some(tag.as_str()));
    assert_eq!(bye.from_tag(), inv.from_tag());
    assert_eq!(bye.h("Call-ID"), inv.h("Call-ID"));
    phone
        .send_to(&response_to(&bye, 200, "OK", None).build(), bye.from)
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
    assert_eq!(got.causation, Some(hangup_id));
    assert!(
        env.event_within(Duration::from_millis(150)).await.is_none(),
        "exactly one Terminated"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn busy_phone_is_acked_and_rejected() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, invite_id) = invite(&env, &phone.contact("alice")).await;
    let inv = phone.recv().await;
    let busy = reply(&inv, 486, "Busy Here", &rand_token()).build();
    phone.send_to(&busy, inv.from).await;
    let ack = phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert_eq!(
        ack.branch(),
        inv.branch(),
        "a non-2xx ACK reuses the INVITE's branch"
    );
    assert_eq!(ack.request_uri(), inv.request_uri());
    assert_eq!(ack.cseq(), (1, "ACK".into()));
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Rejected {
            call,
            session,
            cause: HangupCause::Busy
        }
    );
    assert_eq!(got.causation, Some(invite_id));
    // A retransmitted 486 is ACKed again; no second event.
    phone.send_to(&busy, inv.from).await;
    assert_eq!(
        phone.recv_where(|m| m.method() == Some("ACK")).await.text,
        ack.text
    );
    assert!(env.event_within(Duration::from_millis(150)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn status_codes_map_to_causes() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    for (code, cause) in [
        (603, HangupCause::Declined),
        (404, HangupCause::NotFound),
        (480, HangupCause::NoAnswer),
        (408, HangupCause::NoAnswer),
        (500, HangupCause::Status { code: 500 }),
    ] {
        let (call, session, _) = invite(&env, &phone.contact("alice")).await;
        let inv = phone.recv_where(|m| m.method() == Some("INVITE")).await;
        phone
            .send_to(&reply(&inv, code, "Nope", &rand_token()).build(), inv.from)
            .await;
        phone.recv_where(|m| m.method() == Some("ACK")).await;
        assert_eq!(
            env.event().await.event,
            SessionEvent::Rejected {
                call,
                session,
                cause
            }
        );
    }
    env.shutdown().await;
}

#[tokio::test]
async fn cancel_after_ringing() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, _) = invite(&env, &phone.contact("alice")).await;
    let inv = phone.recv().await;
    let tag = rand_token();
    phone
        .send_to(&reply(&inv, 180, "Ringing", &tag).build(), inv.from)
        .await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Ringing { call, session }
    );

    let cancel_id = env.command(SessionCommand::Cancel { call, session }).await;
    let cancel = phone.recv_where(|m| m.method() == Some("CANCEL")).await;
    assert_eq!(cancel.branch(), inv.branch());
    assert_eq!(cancel.request_uri(), inv.request_uri());
    assert_eq!(cancel.cseq(), (1, "CANCEL".into()));
    assert_eq!(cancel.h("To"), inv.h("To"), "CANCEL's To has no tag");
    phone
        .send_to(
            &response_to(&cancel, 200, "OK", Some(&tag)).build(),
            cancel.from,
        )
        .await;
    phone
        .send_to(
            &reply(&inv, 487, "Request Terminated", &tag).build(),
            inv.from,
        )
        .await;
    let ack = phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert_eq!(ack.branch(), inv.branch());
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Cancelled
        }
    );
    assert_eq!(got.causation, Some(cancel_id));
    assert!(env.event_within(Duration::from_millis(150)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn cancel_before_any_provisional_waits_for_one() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, _) = invite(&env, &phone.contact("alice")).await;
    let inv = phone.recv().await;
    env.command(SessionCommand::Cancel { call, session }).await;
    // RFC 3261 9.1: no CANCEL before a provisional response (only INVITE retransmits).
    let before = phone.drain(Duration::from_millis(60)).await;
    assert!(
        before.iter().all(|m| m.method() == Some("INVITE")),
        "{before:?}"
    );
    let tag = rand_token();
    phone
        .send_to(&reply(&inv, 100, "Trying", &tag).build(), inv.from)
        .await;
    let cancel = phone.recv_where(|m| m.method() == Some("CANCEL")).await;
    assert_eq!(cancel.branch(), inv.branch());
    phone
        .send_to(
            &response_to(&cancel, 200, "OK", Some(&tag)).build(),
            cancel.from,
        )
        .await;
    phone
        .send_to(
            &reply(&inv, 487, "Request Terminated", &tag).build(),
            inv.from,
        )
        .await;
    phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Cancelled
        }
    );
    env.shutdown().await;
}

#[tokio::test]
async fn answer_racing_a_cancel_is_acked_and_hung_up() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, _) = invite(&env, &phone.contact("alice")).await;
    let inv = phone.recv().await;
    let tag = rand_token();
    phone
        .send_to(&reply(&inv, 180, "Ringing", &tag).build(), inv.from)
        .await;
    env.event().await;
    env.command(SessionCommand::Cancel { call, session }).await;
    let cancel = phone.recv_where(|m| m.method() == Some("CANCEL")).await;
    // The phone answered before it saw the CANCEL.
    phone
        .send_to(
            &response_to(&cancel, 481, "No Transaction", Some(&tag)).build(),
            cancel.from,
        )
        .await;
    let ok = reply(&inv, 200, "OK", &tag)
        .h("Contact", format!("<{}>", phone.contact("alice")))
        .body("application/sdp", SDP_OFFER);
    phone.send_to(&ok, inv.from).await;
    phone.recv_where(|m| m.method() == Some("ACK")).await;
    let bye = phone.recv_where(|m| m.method() == Some("BYE")).await;
    phone
        .send_to(&response_to(&bye, 200, "OK", None).build(), bye.from)
        .await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Cancelled
        }
    );
    assert!(
        env.event_within(Duration::from_millis(150)).await.is_none(),
        "no Answered"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn unanswered_invite_times_out() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, _) = invite(&env, &phone.contact("alice")).await;
    // Timer A: the INVITE is retransmitted while nothing answers.
    let first = phone.recv().await;
    let again = phone.recv().await;
    assert_eq!(again.text, first.text);
    // Timer B (64*T1 = 1.28 s here).
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::TransactionTimedOut {
            call: Some(call),
            session: Some(session),
            method: "INVITE".into()
        }
    );
    assert_eq!(
        env.event().await.event,
        SessionEvent::Rejected {
            call,
            session,
            cause: HangupCause::NoAnswer
        }
    );
    env.shutdown().await;
}

#[tokio::test]
async fn outbound_call_over_tcp() {
    let mut env = Env::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = tcp_target(&listener);
    let (call, session, mut phone, inv) = tcp_invite(&env, &listener).await;
    assert_eq!(inv.method(), Some("INVITE"));
    assert!(inv.h("Via").starts_with("SIP/2.0/TCP "), "{}", inv.h("Via"));
    assert!(inv.uri_of("Contact").ends_with(";transport=tcp"));
    let tag = rand_token();
    phone.send(&reply(&inv, 180, "Ringing", &tag).build()).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Ringing { call, session }
    );
    answer_over_tcp(&mut env, &mut phone, &inv, &tag, &target, call, session).await;
    env.command(SessionCommand::Hangup { call, session }).await;
    let bye = phone.recv_where(|m| m.method() == Some("BYE")).await;
    phone
        .send(&response_to(&bye, 200, "OK", None).build())
        .await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Normal
        }
    );
    env.shutdown().await;
}

#[tokio::test]
async fn tcp_contact_reuses_the_registration_connection() {
    let mut env = Env::start().await;
    // The phone registers over TCP a contact nobody could connect to (like a phone
    // behind NAT): requests must come back over the registration's connection.
    let (mut phone, contact) = registered_over_tcp(&mut env).await;
    let (call, session, _) = invite(&env, contact).await;
    let inv = phone.recv().await;
    assert_eq!(inv.method(), Some("INVITE"));
    assert_eq!(inv.request_uri(), contact);
    phone
        .send(&reply(&inv, 486, "Busy Here", &rand_token()).build())
        .await;
    phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Rejected {
            call,
            session,
            cause: HangupCause::Busy
        }
    );
    // Probes use it too.
    probe(&env, "alice", contact).await;
    let options = phone.recv().await;
    assert_eq!(options.method(), Some("OPTIONS"));
    phone
        .send(&response_to(&options, 200, "OK", Some("x")).build())
        .await;
    probed(&mut env, "alice", contact, true).await;
    env.shutdown().await;
}

#[tokio::test]
async fn tcp_connect_failure_rejects_at_once() {
    let mut env = Env::start().await;
    // A port nothing listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let (call, session, _) =
        invite(&env, &format!("sip:alice@127.0.0.1:{port};transport=tcp")).await;
    given_up_for_transport(&mut env, call, session).await;
    env.shutdown().await;
}

/// How an INVITE ends when its TCP connection goes: `TransactionTimedOut` and then
/// `Rejected{Failure}` at once (Timer B, 1.28 s here, or the 180 s ring timeout would
/// say `NoAnswer` instead).
async fn given_up_for_transport(env: &mut Env, call: CallId, session: SessionId) {
    assert!(matches!(
        env.event().await.event,
        SessionEvent::TransactionTimedOut { method, .. } if method == "INVITE"
    ));
    match env.event().await.event {
        SessionEvent::Rejected {
            call: c,
            session: s,
            cause: HangupCause::Failure { detail },
        } => {
            assert_eq!((c, s), (call, session));
            assert_eq!(detail, "transport error");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_ringing_phone_that_reconnects_answers_over_its_new_connection() {
    let mut env = Env::start().await;
    // The phone's connection carries its registration and our INVITE.
    let (mut phone, contact) = registered_over_tcp(&mut env).await;
    let (call, session, _) = invite(&env, contact).await;
    let inv = phone.recv().await;
    let tag = rand_token();
    phone.send(&reply(&inv, 180, "Ringing", &tag).build()).await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Ringing { call, session }
    );
    // Its connection drops while it rings: the INVITE stays (RFC 3261 18.2.2: the final
    // response may come over a new connection).
    drop(phone);
    assert!(env.event_within(Duration::from_millis(300)).await.is_none());
    // It reconnects, refreshes its registration and answers over the new connection.
    let mut phone = register_over_tcp(&mut env, contact).await;
    answer_over_tcp(&mut env, &mut phone, &inv, &tag, contact, call, session).await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_probe_whose_tcp_connection_closes_unanswered_reports_unreachable_at_once() {
    // The RFC's timers: Timer F would take 32 s, beyond the test's wait.
    let mut env = Env::start_with(|c| c.timers = call_engine_session::SipTimers::default()).await;
    let (mut phone, contact) = registered_over_tcp(&mut env).await;
    probe(&env, "alice", contact).await;
    assert_eq!(phone.recv().await.method(), Some("OPTIONS"));
    drop(phone);
    probed(&mut env, "alice", contact, false).await;
    env.shutdown().await;
}

#[tokio::test]
async fn an_invite_whose_tcp_connection_closes_unanswered_fails_at_once() {
    let mut env = Env::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (call, session, phone, _) = tcp_invite(&env, &listener).await;
    drop(phone);
    given_up_for_transport(&mut env, call, session).await;

    // The next INVITE to that address opens a new connection, and the old one's loss
    // does not touch it.
    let (call, session, mut phone, inv) = tcp_invite(&env, &listener).await;
    phone
        .send(&reply(&inv, 180, "Ringing", &rand_token()).build())
        .await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Ringing { call, session }
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_invite_whose_tcp_connection_a_limit_closes_fails_at_once() {
    let mut env = Env::start_with(|c| {
        c.tcp_limits.message_timeout = Duration::from_millis(300);
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (call, session, mut phone, inv) = tcp_invite(&env, &listener).await;
    // A response begun and never finished: the message deadline closes the connection.
    let partial = reply(&inv, 180, "Ringing", &rand_token()).build();
    phone.send(&partial[..partial.len() / 2]).await;
    given_up_for_transport(&mut env, call, session).await;
    assert!(env.sip().stats().tcp_limited >= 1);
    drop(phone);
    env.shutdown().await;
}

#[tokio::test]
async fn unusable_target_is_rejected() {
    let mut env = Env::start().await;
    let (call, session, id) = invite(&env, "not a uri").await;
    let got = env.event().await;
    assert!(matches!(
        got.event,
        SessionEvent::Rejected { call: c, session: s, cause: HangupCause::Failure { .. } } if c == call && s == session
    ));
    assert_eq!(got.causation, Some(id));
    env.shutdown().await;
}

/// Asks for an OPTIONS probe of `agent`'s `contact`; the command's id.
async fn probe(env: &Env, agent: &str, contact: &str) -> EventId {
    env.command(SessionCommand::Probe {
        agent: AgentId::new(agent),
        contact: contact.into(),
    })
    .await
}

/// The next event is the probe's result for `agent`'s `contact`: `reachable` or not.
async fn probed(env: &mut Env, agent: &str, contact: &str, reachable: bool) -> Got {
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::ContactProbed {
            agent: AgentId::new(agent),
            contact: contact.into(),
            reachable
        }
    );
    got
}

#[tokio::test]
async fn probe_reports_reachability() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let contact = phone.contact("alice");
    let id = probe(&env, "alice", &contact).await;
    let options = phone.recv().await;
    assert_eq!(options.method(), Some("OPTIONS"));
    assert_eq!(options.request_uri(), contact);
    phone
        .send_to(
            &response_to(&options, 200, "OK", Some("t")).build(),
            options.from,
        )
        .await;
    let got = probed(&mut env, "alice", &contact, true).await;
    assert_eq!(got.causation, Some(id));

    // Nobody answers: unreachable after Timer F.
    let silent = Ua::udp(env.udp).await;
    let dead = silent.contact("bob");
    probe(&env, "bob", &dead).await;
    probed(&mut env, "bob", &dead, false).await;
    env.shutdown().await;
}

#[tokio::test]
async fn bye_from_the_agent_ends_the_outbound_leg() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, _) = invite(&env, &phone.contact("alice")).await;
    let inv = phone.recv().await;
    let tag = rand_token();
    let ok = reply(&inv, 200, "OK", &tag)
        .h("Contact", format!("<{}>", phone.contact("alice")))
        .body("application/sdp", SDP_OFFER);
    phone.send_to(&ok, inv.from).await;
    phone.recv_where(|m| m.method() == Some("ACK")).await;
    assert!(matches!(
        env.event().await.event,
        SessionEvent::Answered { .. }
    ));
    // The agent hangs up: its BYE has From = its To (tagged), To = our From.
    let bye = Req::new("BYE", inv.uri_of("Contact").as_str())
        .h("Via", phone.via(&branch()))
        .h("From", format!("{};tag={tag}", inv.h("To")))
        .h("To", inv.h("From"))
        .h("Call-ID", inv.h("Call-ID"))
        .h("CSeq", "1 BYE")
        .build();
    phone.send(&bye).await;
    let resp = phone
        .recv_where(|m| m.status().is_some() && m.cseq().1 == "BYE")
        .await;
    assert_eq!(resp.status(), Some(200));
    assert_eq!(
        env.event().await.event,
        SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Normal
        }
    );
    env.shutdown().await;
}

#[tokio::test]
async fn ring_timeout_cancels_and_reports_no_answer() {
    let mut env = Env::start_with(|c| c.ring_timeout = Duration::from_millis(300)).await;
    let mut phone = Ua::udp(env.udp).await;
    let (call, session, invite_id) = invite(&env, &phone.contact("alice")).await;
    let inv = phone.recv().await;
    let tag = rand_token();
    phone
        .send_to(&reply(&inv, 180, "Ringing", &tag).build(), inv.from)
        .await;
    assert_eq!(
        env.event().await.event,
        SessionEvent::Ringing { call, session }
    );
    // Nobody picks up: Timer C cancels.
    let cancel = phone.recv_where(|m| m.method() == Some("CANCEL")).await;
    phone
        .send_to(
            &response_to(&cancel, 200, "OK", Some(&tag)).build(),
            cancel.from,
        )
        .await;
    phone
        .send_to(
            &reply(&inv, 487, "Request Terminated", &tag).build(),
            inv.from,
        )
        .await;
    phone.recv_where(|m| m.method() == Some("ACK")).await;
    let got = env.event().await;
    assert_eq!(
        got.event,
        SessionEvent::Rejected {
            call,
            session,
            cause: HangupCause::NoAnswer
        }
    );
    assert_eq!(got.causation, Some(invite_id));
    env.shutdown().await;
}

#[tokio::test]
async fn hangup_completes_on_481_or_bye_timeout() {
    let mut env = Env::start().await;
    let mut phone = Ua::udp(env.udp).await;
    for answer_bye in [true, false] {
        let (call, session, _) = invite(&env, &phone.contact("alice")).await;
        let inv = phone.recv_where(|m| m.method() == Some("INVITE")).await;
        let tag = rand_token();
        let ok = reply(&inv, 200, "OK", &tag)
            .h("Contact", format!("<{}>", phone.contact("alice")))
            .body("application/sdp", SDP_OFFER);
        phone.send_to(&ok, inv.from).await;
        phone.recv_where(|m| m.method() == Some("ACK")).await;
        assert!(matches!(
            env.event().await.event,
            SessionEvent::Answered { .. }
        ));
        let hangup = env.command(SessionCommand::Hangup { call, session }).await;
        let bye = phone.recv_where(|m| m.method() == Some("BYE")).await;
        if answer_bye {
            // The phone forgot the dialog: 481 still ends the leg.
            phone
                .send_to(
                    &response_to(&bye, 481, "Call Does Not Exist", None).build(),
                    bye.from,
                )
                .await;
        } else {
            // Silence: the BYE is retransmitted (Timer E), then given up (Timer F).
            let again = phone.recv_where(|m| m.method() == Some("BYE")).await;
            assert_eq!(again.text, bye.text);
            let got = env.event().await;
            assert_eq!(
                got.event,
                SessionEvent::TransactionTimedOut {
                    call: Some(call),
                    session: Some(session),
                    method: "BYE".into()
                }
            );
        }
        let got = env.event().await;
        assert_eq!(
            got.event,
            SessionEvent::Terminated {
                call,
                session,
                cause: HangupCause::Normal
            }
        );
        assert_eq!(got.causation, Some(hangup));
        assert!(env.event_within(Duration::from_millis(100)).await.is_none());
        phone.drain(Duration::from_millis(50)).await;
    }
    env.shutdown().await;
}
