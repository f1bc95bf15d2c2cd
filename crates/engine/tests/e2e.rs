//! End-to-end tests: the whole engine in-process, driven over real SIP and RTP on
//! loopback by scripted phones (call-engine-testkit), with a real SQLite file.
//! Timeouts are safety nets only; nothing asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine::Engine;
use call_engine_events::{
    AgentActivity, AgentEvent, AgentId, Disposition, EngineEvent, QueueId, Side,
};
use call_engine_orchestrator::Strategy;
use call_engine_store::CdrQuery;
use call_engine_testkit::{Phone, RtpPacket, WAIT};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod common;
use common::*;

fn mostly(packets: &[RtpPacket], byte: u8) -> usize {
    packets
        .iter()
        .filter(|p| p.payload.iter().all(|b| *b == byte))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_needs_the_right_password() {
    let db = temp_db("reg");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut good = Phone::new("alice", DOMAIN, engine.sip_udp().unwrap()).await;
    assert_eq!(good.register("alice-secret", 600).await, 200);
    let mut bad = Phone::new("alice", DOMAIN, engine.sip_udp().unwrap()).await;
    let status = bad.register("wrong", 600).await;
    assert!(
        status == 401 || status == 403,
        "wrong password gets {status}"
    );
    let mut nobody = Phone::new("mallory", DOMAIN, engine.sip_udp().unwrap()).await;
    let status = nobody.register("x", 600).await;
    assert!(status == 401 || status == 403, "unknown user gets {status}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reaches_an_agent_audio_flows_and_bye_ends_both_legs() {
    let db = temp_db("call");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut alice = agent(&engine, "alice").await;
    let mut cust = customer(&engine, "5551234").await;

    let call = tokio::spawn(async move {
        let d = cust.call("support", 0).await;
        (cust, d)
    });
    // The customer is answered at once and hears music on hold while alice rings.
    let mut a_dialog = alice.answer(0, WAIT).await.expect("alice is rung");
    let (cust, c_dialog) = call.await.unwrap();
    let mut c_dialog = c_dialog.expect("customer answered");
    // Caller id reaches the agent.
    let inv = &a_dialog.message;
    let from = inv.header("from").unwrap_or("");
    assert!(from.contains("5551234"), "From shows the caller: {from}");
    assert!(
        from.contains("Caller 5551234"),
        "From shows the display name: {from}"
    );
    assert!(inv
        .header("p-asserted-identity")
        .unwrap_or("")
        .contains("5551234"));

    // RTP both ways through the engine.
    let c_media = c_dialog.remote_media.expect("engine SDP to customer");
    let a_media = a_dialog.remote_media.expect("engine SDP to agent");
    alice.drain_rtp().await;
    let (_, got_at_agent) = tokio::join!(
        cust.send_rtp(c_media.addr, 0, 50, |_| 0x55),
        alice.recv_rtp(Duration::from_millis(1500))
    );
    assert!(
        mostly(&got_at_agent, 0x55) >= 40,
        "customer audio reaches the agent: {} packets",
        mostly(&got_at_agent, 0x55)
    );
    cust.drain_rtp().await;
    let (_, got_at_customer) = tokio::join!(
        alice.send_rtp(a_media.addr, 0, 50, |_| 0x66),
        cust.recv_rtp(Duration::from_millis(1500))
    );
    assert!(
        mostly(&got_at_customer, 0x66) >= 40,
        "agent audio reaches the customer: {}",
        mostly(&got_at_customer, 0x66)
    );

    // Customer hangs up: the agent gets a BYE.
    let mut cust = cust;
    assert_eq!(cust.bye(&mut c_dialog).await, 200);
    assert!(
        alice
            .expect_request(&a_dialog.call_id, "BYE", WAIT)
            .await
            .is_some(),
        "BYE propagated to the agent"
    );

    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs.len(), 1);
    let r = &cdrs[0];
    assert_eq!(r.disposition, Disposition::Answered);
    assert_eq!(r.hung_up_by, Side::Customer);
    assert_eq!(r.agent, Some(AgentId::new("alice")));
    assert_eq!(r.caller_user, "5551234");
    assert_eq!(r.queue, Some(QueueId::new("support")));
    let entered = r.entered_queue_at.expect("entered the queue");
    let answered = r.agent_answered_at.expect("answered");
    assert!(
        entered <= answered && answered <= r.ended_at,
        "in order: {entered:?} {answered:?} {:?}",
        r.ended_at
    );
    // The wait is the time from the queue to the answer; the talk, from there to the end.
    let span = |a: call_engine_store::UnixMillis, b: call_engine_store::UnixMillis| {
        (b.as_millis() as f64 - a.as_millis() as f64) / 1000.0
    };
    assert!(
        (r.wait_secs - span(entered, answered)).abs() < 0.05,
        "wait {} vs {}",
        r.wait_secs,
        span(entered, answered)
    );
    assert!(
        (r.talk_secs - span(answered, r.ended_at)).abs() < 0.05,
        "talk {} vs {}",
        r.talk_secs,
        span(answered, r.ended_at)
    );
    assert!(r.talk_secs > 0.5, "talked {}", r.talk_secs);
    let _ = &mut a_dialog;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_callers_ack_no_media_goes_to_them_and_no_agent_is_rung() {
    // An INVITE's source is unproven until the caller ACKs our 200 (a forged source
    // never does): our music must not be aimed at its SDP address, nor an agent rung.
    let db = temp_db("ack");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut alice = agent(&engine, "alice").await;
    let mut cust = customer(&engine, "5551234").await;
    let mut c_dialog = cust.invite("support", 0).await.expect("answered");
    let (early_rtp, early_invite) = tokio::join!(
        cust.recv_rtp(Duration::from_millis(800)),
        alice.next_invite(Duration::from_millis(800))
    );
    assert_eq!(early_rtp.len(), 0, "RTP reached the caller before the ACK");
    assert!(early_invite.is_none(), "an agent was rung before the ACK");

    // The ACK: the music starts and alice is rung.
    cust.ack(&c_dialog).await;
    let (music, invite) = tokio::join!(
        cust.recv_rtp(Duration::from_millis(800)),
        alice.next_invite(WAIT)
    );
    assert!(
        music.len() >= 10,
        "music on hold after the ACK: {} packets",
        music.len()
    );
    let (invite, from) = invite.expect("alice is rung after the ACK");
    let a_dialog = alice
        .answer_invite(invite, from, 0)
        .await
        .expect("alice answers");
    assert_eq!(cust.bye(&mut c_dialog).await, 200);
    assert!(alice
        .expect_request(&a_dialog.call_id, "BYE", WAIT)
        .await
        .is_some());
    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs[0].disposition, Disposition::Answered);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_never_acks_is_hung_up_unqueued_and_recorded_as_failed() {
    let db = temp_db("noack");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    // 64·T1 = 1.28 s instead of 32 s.
    cfg.sip.t1_ms = 20;
    let engine = Engine::start(cfg).await.unwrap();
    let mut alice = agent(&engine, "alice").await;
    let mut ghost = customer(&engine, "5550000").await;
    let d = ghost.invite("support", 0).await.expect("answered");
    // Never ACKed: the engine gives up after 64·T1 with a BYE; nothing was played to the
    // caller's address and no agent was rung meanwhile.
    let (rtp, rung) = tokio::join!(
        ghost.recv_rtp(Duration::from_millis(1000)),
        alice.next_invite(Duration::from_millis(1000))
    );
    assert_eq!(rtp.len(), 0, "RTP reached a caller who never ACKed");
    assert!(
        rung.is_none(),
        "an agent was rung for a caller who never ACKed"
    );
    let bye = ghost.expect_request(&d.call_id, "BYE", WAIT).await;
    assert!(bye.is_some(), "BYE after 64·T1 without an ACK");
    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs[0].caller_user, "5550000");
    assert_eq!(cdrs[0].disposition, Disposition::Failed);
    assert_eq!(
        cdrs[0].hung_up_by,
        Side::Engine,
        "our BYE, not the caller's"
    );
    assert!(cdrs[0].entered_queue_at.is_none(), "{:?}", cdrs[0]);
    assert_eq!(cdrs[0].agent, None);

    // Alice is free for the next (real) caller.
    let mut cust = customer(&engine, "5551234").await;
    let call = tokio::spawn(async move {
        let d = cust.call("support", 0).await;
        (cust, d)
    });
    let a_dialog = alice
        .answer(0, WAIT)
        .await
        .expect("alice takes the next call");
    let (mut cust, c_dialog) = call.await.unwrap();
    let mut c_dialog = c_dialog.expect("the next caller is answered");
    assert_eq!(cust.bye(&mut c_dialog).await, 200);
    assert!(alice
        .expect_request(&a_dialog.call_id, "BYE", WAIT)
        .await
        .is_some());
    assert_eq!(wait_cdrs(&engine, 2).await.len(), 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_bye_ends_the_customer_leg_and_the_agent_is_free_again() {
    let db = temp_db("agentbye");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut alice = agent(&engine, "alice").await;
    for i in 0..2 {
        let mut cust = customer(&engine, &format!("600{i}")).await;
        let call = tokio::spawn(async move {
            let d = cust.call("support", 0).await;
            (cust, d)
        });
        let mut a = alice.answer(0, WAIT).await.expect("alice rung");
        let (mut cust, d) = call.await.unwrap();
        let d = d.expect("answered");
        assert_eq!(alice.bye(&mut a).await, 200);
        assert!(
            cust.expect_request(&d.call_id, "BYE", WAIT).await.is_some(),
            "customer gets BYE"
        );
    }
    let cdrs = wait_cdrs(&engine, 2).await;
    assert_eq!(cdrs.len(), 2, "alice took both calls: she was free again");
    assert!(cdrs
        .iter()
        .all(|r| r.hung_up_by == Side::Agent && r.disposition == Disposition::Answered));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_up_keeps_the_agent_from_the_next_call_then_she_is_rung() {
    let db = temp_db("wrapup");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.queues[0].routing.wrap_up_ms = 2_000;
    let engine = Engine::start(cfg).await.unwrap();
    let mut alice = agent(&engine, "alice").await;

    // Call 1: answered, then the customer hangs up.
    let mut c1 = customer(&engine, "7001").await;
    let call = tokio::spawn(async move {
        let d = c1.call("support", 0).await;
        (c1, d)
    });
    let a1 = alice.answer(0, WAIT).await.expect("alice rung for call 1");
    let (mut c1, d1) = call.await.unwrap();
    let mut d1 = d1.expect("call 1 answered");
    assert_eq!(c1.bye(&mut d1).await, 200);
    assert!(
        alice
            .expect_request(&a1.call_id, "BYE", WAIT)
            .await
            .is_some(),
        "BYE propagated to alice"
    );

    // Call 2, placed at once: alice is in wrap-up (2 s), so she is not rung at once…
    let mut c2 = customer(&engine, "7002").await;
    let call = tokio::spawn(async move {
        let d = c2.call("support", 0).await;
        (c2, d)
    });
    assert!(
        alice.next_invite(Duration::from_secs(1)).await.is_none(),
        "alice must not be rung during her wrap-up"
    );
    // …but once it is over.
    let a2 = alice
        .answer(0, Duration::from_secs(5))
        .await
        .expect("alice rung for call 2 after her wrap-up");
    let (mut c2, d2) = call.await.unwrap();
    let mut d2 = d2.expect("call 2 answered");
    assert_eq!(c2.bye(&mut d2).await, 200);
    assert!(alice
        .expect_request(&a2.call_id, "BYE", WAIT)
        .await
        .is_some());

    let cdrs = wait_cdrs(&engine, 2).await;
    assert_eq!(cdrs.len(), 2);
    assert!(
        cdrs.iter()
            .all(|r| r.disposition == Disposition::Answered
                && r.agent == Some(AgentId::new("alice"))),
        "both calls answered by alice: {cdrs:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queue_gets_404() {
    let db = temp_db("404");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut cust = customer(&engine, "1").await;
    let r = cust.call("nosuchqueue", 0).await;
    if r.as_ref().err() != Some(&404) {
        for e in engine.bus().history() {
            eprintln!(
                "HIST {} {} {:?}",
                e.timestamp.as_nanos() / 1000,
                e.source,
                e.payload
            );
        }
    }
    assert_eq!(r.err(), Some(404));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_moves_on_to_the_next_agent() {
    let db = temp_db("noanswer");
    let engine = Engine::start(config(&db, Strategy::RoundRobin, 1, &["alice", "bob"]))
        .await
        .unwrap();
    let mut alice = agent(&engine, "alice").await;
    let mut bob = agent(&engine, "bob").await;
    let mut cust = customer(&engine, "42").await;
    let call = tokio::spawn(async move {
        let d = cust.call("support", 0).await;
        (cust, d)
    });
    // alice is rung first (round robin) and does not answer: she gets a CANCEL.
    let (inv, from) = alice.next_invite(WAIT).await.expect("alice rung");
    alice.respond(&inv, from, 180, "Ringing", "a1", None).await;
    let (cancel, cfrom) = alice
        .recv_where(WAIT, |m| m.method() == Some("CANCEL"))
        .await
        .expect("ring timeout cancels alice");
    alice.respond(&cancel, cfrom, 200, "OK", "a1", None).await;
    alice
        .respond(&inv, from, 487, "Request Terminated", "a1", None)
        .await;
    // bob is rung next and answers.
    let mut b = bob.answer(0, WAIT).await.expect("bob rung next");
    let (mut cust, d) = call.await.unwrap();
    let mut d = d.expect("answered");
    assert_eq!(cust.bye(&mut d).await, 200);
    assert!(bob.expect_request(&b.call_id, "BYE", WAIT).await.is_some());
    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs[0].agent, Some(AgentId::new("bob")));
    let _ = &mut b;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_while_queued_and_while_ringing() {
    let db = temp_db("abandon");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    // Queued, nobody registered: the customer hears music, then hangs up.
    let mut c1 = customer(&engine, "1001").await;
    let mut d1 = c1
        .call("support", 0)
        .await
        .expect("answered into the queue");
    let moh = c1.recv_rtp(Duration::from_millis(600)).await;
    assert!(
        moh.len() >= 10,
        "music on hold plays: {} packets",
        moh.len()
    );
    assert_eq!(c1.bye(&mut d1).await, 200);
    // Ringing: alice is rung, the customer hangs up, alice gets a CANCEL.
    let mut alice = agent(&engine, "alice").await;
    let mut c2 = customer(&engine, "1002").await;
    let mut d2 = c2.call("support", 0).await.expect("answered");
    let (inv, from) = alice.next_invite(WAIT).await.expect("alice rung");
    alice.respond(&inv, from, 180, "Ringing", "t", None).await;
    assert_eq!(c2.bye(&mut d2).await, 200);
    let (cancel, cfrom) = alice
        .recv_where(WAIT, |m| m.method() == Some("CANCEL"))
        .await
        .expect("alice's phone stops ringing");
    alice.respond(&cancel, cfrom, 200, "OK", "t", None).await;
    alice
        .respond(&inv, from, 487, "Request Terminated", "t", None)
        .await;
    let cdrs = wait_cdrs(&engine, 2).await;
    assert_eq!(cdrs.len(), 2);
    assert!(
        cdrs.iter().all(|r| r.disposition == Disposition::Abandoned
            && r.hung_up_by == Side::Customer
            && r.agent.is_none()),
        "{cdrs:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcma_customer_talks_to_pcmu_agent() {
    let db = temp_db("transcode");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut alice = agent(&engine, "alice").await;
    let mut cust = customer(&engine, "777").await;
    let call = tokio::spawn(async move {
        let d = cust.call("support", 8).await; // PCMA offered first
        (cust, d)
    });
    let a = alice.answer(0, WAIT).await.expect("alice rung"); // alice answers PCMU
    let (cust, d) = call.await.unwrap();
    let d = d.expect("answered");
    let c_media = d.remote_media.unwrap();
    assert_eq!(c_media.pt, 8, "the customer leg uses PCMA");
    alice.drain_rtp().await;
    // Send a mid-level A-law code; the agent must receive µ-law codes that decode to the
    // same linear sample within G.711 quantisation error.
    const ALAW: u8 = 0xA5;
    let want = alaw_to_linear(ALAW);
    let (_, got) = tokio::join!(
        cust.send_rtp(c_media.addr, 8, 50, |_| ALAW),
        alice.recv_rtp(Duration::from_millis(1500))
    );
    let pcmu: Vec<_> = got.iter().filter(|p| p.pt == 0).collect();
    assert!(
        pcmu.len() >= 40,
        "transcoded packets at the agent: {}",
        pcmu.len()
    );
    let close = |b: &u8| {
        let x = ulaw_to_linear(*b);
        (x - want).abs() <= want.abs() / 8 + 16
    };
    let matching = pcmu
        .iter()
        .filter(|p| p.payload.len() == 160 && p.payload.iter().all(close))
        .count();
    assert!(
        matching >= 40,
        "decoded µ-law matches the A-law sample {want}: {matching} packets"
    );
    let _ = a;
    engine.shutdown().await;
}

/// A late offer (an INVITE without SDP, as some trunks and SBCs send): the 200 offers
/// PCMU, PCMA and telephone-event, the caller answers PCMA in the ACK, hears the music,
/// and talks with an agent on PCMU both ways. An ACK without the answer ends the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_offer_is_answered_in_the_ack_and_the_call_goes_through() {
    let db = temp_db("late-offer");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut cust = customer(&engine, "5556000").await;
    let d = cust.invite_late("support").await.expect("answered");
    let offer = d.message.body.clone();
    assert!(
        offer.contains("RTP/AVP 0 8 101"),
        "the engine offers: {offer}"
    );
    let c_media = d.remote_media.expect("an address to send to");
    cust.ack_answering(&d, 8).await;
    // Music on hold, in the codec of the answer.
    let moh = cust.recv_rtp(Duration::from_millis(600)).await;
    assert!(
        moh.len() >= 10 && moh.iter().all(|p| p.pt == 8),
        "music in PCMA: {} packets, types {:?}",
        moh.len(),
        moh.iter().map(|p| p.pt).collect::<BTreeSet<_>>()
    );
    let mut alice = agent(&engine, "alice").await;
    let a_dialog = alice.answer(0, WAIT).await.expect("alice is rung");
    let a_media = a_dialog.remote_media.expect("engine SDP to agent");
    alice.drain_rtp().await;
    let (_, got_at_agent) = tokio::join!(
        cust.send_rtp(c_media.addr, 8, 50, |_| 0xD5),
        alice.recv_rtp(Duration::from_millis(1500))
    );
    let pcmu = got_at_agent.iter().filter(|p| p.pt == 0).count();
    assert!(pcmu >= 40, "the caller reaches the agent: {pcmu} packets");
    cust.drain_rtp().await;
    let (_, got_at_customer) = tokio::join!(
        alice.send_rtp(a_media.addr, 0, 50, |_| 0xFF),
        cust.recv_rtp(Duration::from_millis(1500))
    );
    let pcma = got_at_customer
        .iter()
        .filter(|p| p.pt == 8 && p.payload.len() == 160)
        .count();
    assert!(pcma >= 40, "the agent reaches the caller: {pcma} packets");

    // A late offer whose ACK carries no answer cannot have media: the engine hangs up.
    let mut mute = customer(&engine, "5556001").await;
    let d = mute.invite_late("support").await.expect("answered");
    mute.ack(&d).await;
    assert!(
        mute.expect_request(&d.call_id, "BYE", WAIT).await.is_some(),
        "no answer in the ACK: BYE"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_agents_take_a_hundred_calls_round_robin() {
    let db = temp_db("load");
    let names: Vec<String> = (0..10).map(|i| format!("agent{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let engine = Engine::start(config(&db, Strategy::RoundRobin, 15, &refs))
        .await
        .unwrap();
    let mut agents = Vec::new();
    for n in &names {
        agents.push(agent(&engine, n).await);
    }
    // Each agent answers and hangs up every call it gets.
    let mut handles = Vec::new();
    for mut a in agents {
        handles.push(tokio::spawn(async move {
            let mut taken = 0;
            while let Some(mut d) = a.answer(0, Duration::from_secs(20)).await {
                taken += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                a.bye(&mut d).await;
            }
            taken
        }));
    }
    // 100 customers, 10 at a time.
    for batch in 0..10 {
        let mut calls = Vec::new();
        for i in 0..10 {
            let mut c = customer(&engine, &format!("9{batch}{i}")).await;
            calls.push(tokio::spawn(async move {
                let d = c.call("support", 0).await.expect("answered");
                c.expect_request(&d.call_id, "BYE", Duration::from_secs(30))
                    .await
                    .is_some()
            }));
        }
        for c in calls {
            assert!(c.await.unwrap(), "every call reaches an agent and ends");
        }
    }
    let cdrs = wait_cdrs(&engine, 100).await;
    assert_eq!(cdrs.len(), 100);
    let mut per_agent: BTreeMap<String, u32> = BTreeMap::new();
    for r in &cdrs {
        assert_eq!(r.disposition, Disposition::Answered);
        *per_agent
            .entry(r.agent.as_ref().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_agent.len(), 10, "{per_agent:?}");
    assert!(
        per_agent.values().all(|n| *n == 10),
        "round robin spreads evenly: {per_agent:?}"
    );
    engine.shutdown().await;
    for h in handles {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_records_survive_a_restart() {
    let db = temp_db("restart");
    let cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let mut cust = customer(&engine, "3003").await;
    let mut d = cust.call("support", 0).await.expect("queued");
    assert_eq!(cust.bye(&mut d).await, 200);
    let before = wait_cdrs(&engine, 1).await;
    assert_eq!(before.len(), 1);
    engine.shutdown().await;
    let engine = Engine::start(cfg).await.unwrap();
    let after = engine
        .store()
        .list_cdrs(&CdrQuery::default())
        .await
        .unwrap();
    assert_eq!(after, before, "the record is still there after a restart");
    // New call ids never collide with recorded ones.
    let mut cust = customer(&engine, "3004").await;
    let mut d = cust.call("support", 0).await.expect("queued");
    assert_eq!(cust.bye(&mut d).await, 200);
    let all = wait_cdrs(&engine, 2).await;
    assert_eq!(all.len(), 2);
    assert!(all[0].call_id > before[0].call_id);
    engine.shutdown().await;
}

/// Reference G.711 decoders (ITU-T G.711), independent of the engine's codec code.
fn alaw_to_linear(a: u8) -> i32 {
    let a = a ^ 0x55;
    let exp = i32::from((a >> 4) & 7);
    let mant = i32::from(a & 0x0f);
    let s = if exp == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (exp - 1)
    };
    if a & 0x80 != 0 {
        s
    } else {
        -s
    }
}

#[test]
fn reference_decoders_agree_with_the_standard() {
    // µ-law 0xFF/0x7F are +0/-0; A-law 0xD5 is +8, 0x55 is -8.
    assert_eq!(ulaw_to_linear(0xFF), 0);
    assert_eq!(ulaw_to_linear(0x7F), 0);
    assert_eq!(alaw_to_linear(0xD5), 8);
    assert_eq!(alaw_to_linear(0x55), -8);
    assert_eq!(ulaw_to_linear(0x80), 32124);
    assert_eq!(ulaw_to_linear(0x00), -32124);
    assert_eq!(alaw_to_linear(0xAA), 32256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_records_waiting_callers_as_ended_by_the_engine() {
    let db = temp_db("shutdown");
    let cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let mut cust = customer(&engine, "4004").await;
    let _d = cust.call("support", 0).await.expect("queued");
    engine.shutdown().await;
    // The customer's phone is told the call is over.
    assert!(cust
        .recv_where(WAIT, |m| m.method() == Some("BYE"))
        .await
        .is_some());
    let store = call_engine_store::Store::open(&cfg.store_url)
        .await
        .unwrap();
    let cdrs = store.list_cdrs(&CdrQuery::default()).await.unwrap();
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(
        cdrs[0].hung_up_by,
        Side::Engine,
        "not a customer abandon: {:?}",
        cdrs[0]
    );
    assert_eq!(cdrs[0].disposition, Disposition::NoAgent);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_503_with_retry_after() {
    let db = temp_db("overload");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    // 8 ports: 4 RTP endpoints, 2 calls.
    cfg.media.rtp_ports = 39900..=39907;
    let engine = Engine::start(cfg).await.unwrap();
    let mut c1 = customer(&engine, "1").await;
    let mut c2 = customer(&engine, "2").await;
    let mut c3 = customer(&engine, "3").await;
    let mut d1 = c1.call("support", 0).await.expect("first call queued");
    let mut d2 = c2.call("support", 0).await.expect("second call queued");
    // The third is refused with 503 and a Retry-After.
    let call_id = format!("over-{}", rand_suffix());
    let sdp = c3.sdp(0);
    let req = format!(
        "INVITE sip:support@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKover;rport\r\nMax-Forwards: 70\r\nFrom: <sip:3@{DOMAIN}>;tag=o1\r\nTo: <sip:support@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:3@{addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        addr = c3.sip_addr,
    );
    c3.send(&req).await;
    let resp = c3
        .response(&call_id, "INVITE", 200)
        .await
        .expect("a final response");
    assert_eq!(resp.status(), Some(503), "{resp:?}");
    assert_eq!(
        resp.header("retry-after")
            .map(|v| v.trim().starts_with('5')),
        Some(true),
        "{resp:?}"
    );
    // Capacity comes back when a call ends.
    assert_eq!(c1.bye(&mut d1).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c4 = customer(&engine, "4").await;
    let mut d4 = c4.call("support", 0).await.expect("admitted again");
    assert_eq!(c4.bye(&mut d4).await, 200);
    assert_eq!(c2.bye(&mut d2).await, 200);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bye_is_found_by_the_reconciler_and_the_agent_is_free_again() {
    let db = temp_db("lostbye");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.reconciler.interval_secs = 1;
    let engine = Engine::start(cfg).await.unwrap();
    let mut alice = agent(&engine, "alice").await;

    let mut c1 = customer(&engine, "8001").await;
    let call = tokio::spawn(async move {
        let d = c1.call("support", 0).await;
        (c1, d)
    });
    let a1 = alice.answer(0, WAIT).await.expect("alice rung");
    let (mut c1, d1) = call.await.unwrap();
    let d1 = d1.expect("answered");

    // Alice hangs up, but her BYE is lost on the way: the engine never hears it.
    alice.lose_dialog(&a1);
    // Within the reconciler's interval the engine probes the dialog, alice's phone
    // answers 481, and the engine ends the call: the customer gets the BYE.
    let (bye, _) = tokio::join!(
        c1.expect_request(&d1.call_id, "BYE", Duration::from_secs(5)),
        alice.recv_where(Duration::from_secs(3), |_| false)
    );
    assert!(
        bye.is_some(),
        "the customer's leg is ended after the lost BYE"
    );

    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0].disposition, Disposition::Answered);
    assert_eq!(cdrs[0].hung_up_by, Side::Agent);
    assert!(
        cdrs[0].hangup_cause.contains("481"),
        "{}",
        cdrs[0].hangup_cause
    );

    // The repair is in the event log, against alice.
    let mut repaired = Vec::new();
    for _ in 0..100 {
        repaired = engine
            .store()
            .events_of(AgentId::new("alice").correlation())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "agent.repaired")
            .collect();
        if !repaired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(repaired.len(), 1, "one repair logged");
    // Her activity is logged back to idle (not left "on call" in the log).
    let mut last = None;
    for _ in 0..100 {
        last = engine
            .store()
            .last_event_of(
                AgentId::new("alice").correlation(),
                "agent.activity_changed",
            )
            .await
            .unwrap()
            .map(|e| e.payload);
        if matches!(
            last,
            Some(EngineEvent::Agent(AgentEvent::ActivityChanged {
                activity: AgentActivity::Idle,
                ..
            }))
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        matches!(
            last,
            Some(EngineEvent::Agent(AgentEvent::ActivityChanged {
                activity: AgentActivity::Idle,
                active_calls: 0,
                ..
            }))
        ),
        "{last:?}"
    );

    // And alice is available again: the next call rings her.
    let mut c2 = customer(&engine, "8002").await;
    let call = tokio::spawn(async move {
        let d = c2.call("support", 0).await;
        (c2, d)
    });
    let mut a2 = alice.answer(0, WAIT).await.expect("alice rung again");
    let (_c2, d2) = call.await.unwrap();
    d2.expect("call 2 answered");
    assert_eq!(alice.bye(&mut a2).await, 200);
    engine.shutdown().await;
}

/// An agent who unregisters (Expires: 0) is not rung; registered again, she is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_agent_is_not_rung_until_she_registers_again() {
    let db = temp_db("unregister");
    let engine = Engine::start(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]))
        .await
        .unwrap();
    let mut alice = agent(&engine, "alice").await;
    assert_eq!(alice.register("alice-secret", 0).await, 200);
    let call = call_in(customer(&engine, "5557000").await, "support");
    assert_not_rung(&mut alice, "unregistered").await;
    assert_eq!(alice.register("alice-secret", 300).await, 200);
    let _a = alice.answer(0, WAIT).await.expect("registered again: rung");
    let (_cust, d) = call.await.unwrap();
    d.expect("answered");
    engine.shutdown().await;
}
