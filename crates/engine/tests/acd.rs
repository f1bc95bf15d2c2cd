//! End-to-end tests of the ACD over real SIP and RTP on loopback: overflow, queue
//! admission (full, closed, blocked), announcements heard by the caller, callbacks
//! requested with DTMF, automatic pause after no answer, and the control channel the
//! command line uses. Timeouts are safety nets only; nothing asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use call_engine::config::{AgentSection, QueueSection};
use call_engine::control::{self, ControlRequest};
use call_engine::Engine;
use call_engine_events::{
    AgentEvent, AgentId, AgentStatus, CorrelationId, Disposition, EngineEvent, LeaveReason,
    QueueEvent, QueueId,
};
use call_engine_orchestrator::{
    BusinessHours, CallerPattern, CallerRule, CallerRules, EmptyCondition, FullAction, QueueAction,
    Strategy,
};
use call_engine_testkit::{Phone, WAIT};
use common::*;
use std::time::Duration;

/// Every agent as the control socket reports them.
async fn agents_of(socket: &std::path::Path) -> Vec<call_engine_orchestrator::AgentSnapshot> {
    let r = control::request(socket, &ControlRequest::Agents)
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    serde_json::from_value(r.result.unwrap()).unwrap()
}

/// The logged events of `correlation`, once one matching `pred` is there (the log is
/// written asynchronously).
async fn wait_logged(
    engine: &Engine,
    correlation: call_engine_bus::CorrelationId,
    pred: impl Fn(&EngineEvent) -> bool,
) -> Vec<call_engine_store::StoredEvent> {
    let mut events = Vec::new();
    for _ in 0..200 {
        events = engine.store().events_of(correlation).await.unwrap();
        if events.iter().any(|e| pred(&e.payload)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    events
}

async fn place(
    cust: Phone,
) -> tokio::task::JoinHandle<(Phone, Result<call_engine_testkit::Dialog, u16>)> {
    call_in(cust, "support")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_overflows_to_another_queue_where_an_agent_answers() {
    let db = temp_db("overflow");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    // Nobody serves `support`; bob serves `sales`.
    cfg.agents = vec![
        AgentSection::new("alice", "alice-secret", &["support"]),
        AgentSection::new("bob", "bob-secret", &["sales"]),
    ];
    cfg.queues[0].routing = cfg.queues[0].routing.clone().with_max_wait(
        1_000,
        QueueAction::Overflow {
            queue: QueueId::new("sales"),
        },
    );
    cfg.queues
        .push(QueueSection::new("sales", Strategy::LongestIdleAgent));
    let engine = Engine::start(cfg).await.unwrap();
    let mut bob = agent(&engine, "bob").await;

    let call = place(customer(&engine, "9101").await).await;
    // Within the first second nobody rings; then the call overflows and bob is rung.
    assert!(bob.next_invite(Duration::from_millis(600)).await.is_none());
    let mut b = bob
        .answer(0, WAIT)
        .await
        .expect("bob rung after the overflow");
    let (_cust, d) = call.await.unwrap();
    d.expect("answered");
    assert_eq!(bob.bye(&mut b).await, 200);
    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs[0].queue, Some(QueueId::new("sales")));
    assert_eq!(cdrs[0].agent, Some(AgentId::new("bob")));
    assert_eq!(cdrs[0].disposition, Disposition::Answered);
    // The event log has the caller leaving `support` for overflow.
    let events = wait_logged(&engine, cdrs[0].call_id.into(), |e| {
        matches!(e, EngineEvent::Queue(QueueEvent::CallerLeft { .. }))
    })
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"queue.caller_left"), "{kinds:?}");
    assert!(
        events.iter().any(|e| matches!(
            &e.payload,
            EngineEvent::Queue(QueueEvent::CallerLeft {
                reason: LeaveReason::Overflow,
                ..
            })
        )),
        "{kinds:?}"
    );
    engine.shutdown().await;
}

/// `cfg` with its first queue (support) full at one waiting caller (then 486).
fn with_max_len_1(mut cfg: call_engine::config::Config) -> call_engine::config::Config {
    cfg.queues[0].routing = cfg.queues[0]
        .routing
        .clone()
        .with_max_len(1, FullAction::Reject);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_closed_and_blocked_callers_are_refused_before_the_answer() {
    let db = temp_db("admit");
    let mut cfg = with_max_len_1(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]));
    let socket = cfg.control_socket.clone().unwrap();
    let mut closed = QueueSection::new("night", Strategy::LongestIdleAgent);
    closed.business_hours = Some(BusinessHours::new()); // never open
    closed.closed_action = call_engine::config::ClosedAction::Reject;
    cfg.queues.push(closed);
    cfg.caller_rules = CallerRules::new(vec![CallerRule::new(
        CallerPattern::parse("+1900*").unwrap(),
    )
    .blocking()]);
    // A queue that refuses callers while no member is logged in (alice is a member but
    // not registered).
    let mut strict = QueueSection::new("strict", Strategy::LongestIdleAgent);
    strict.routing = strict.routing.with_join_empty(EmptyCondition::NoMembers);
    cfg.queues.push(strict);
    cfg.agents[0].profile = cfg.agents[0]
        .profile
        .clone()
        .with_queue(QueueId::new("strict"));
    let engine = Engine::start(cfg).await.unwrap();

    // One caller waits (nobody logged in: the queue joins anyway by default)…
    let first = place(customer(&engine, "9201").await).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …so the second finds the queue full: 486.
    let mut second = customer(&engine, "9202").await;
    assert_eq!(second.call("support", 0).await.err(), Some(486));
    // A closed queue: 480.
    let mut night = customer(&engine, "9203").await;
    assert_eq!(night.call("night", 0).await.err(), Some(480));
    // Nobody logged in where that matters: 480.
    let mut early = customer(&engine, "9204").await;
    assert_eq!(early.call("strict", 0).await.err(), Some(480));
    // A blocked number: 403.
    let mut spam = customer(&engine, "+19005550100").await;
    assert_eq!(spam.call("support", 0).await.err(), Some(403));
    // No such queue: 404, and no record (no call of the call center's).
    let mut lost = customer(&engine, "9205").await;
    assert_eq!(lost.call("nowhere", 0).await.err(), Some(404));

    // Each refusal by a queue has its record, its cause the status the caller got…
    let cdrs = wait_cdrs(&engine, 4).await;
    let mut refused: Vec<(String, Option<String>, String)> = cdrs
        .iter()
        .filter(|c| c.disposition == Disposition::Refused)
        .map(|c| {
            (
                c.caller_user.clone(),
                c.queue.as_ref().map(|q| q.to_string()),
                c.hangup_cause.clone(),
            )
        })
        .collect();
    refused.sort();
    let row = |user: &str, queue: Option<&str>, cause: &str| {
        (
            user.to_string(),
            queue.map(str::to_string),
            cause.to_string(),
        )
    };
    assert_eq!(
        refused,
        vec![
            row("+19005550100", Some("support"), "sip 403"),
            row("9202", Some("support"), "sip 486"),
            row("9203", Some("night"), "sip 480"),
            row("9204", Some("strict"), "sip 480"),
        ],
        "{cdrs:?}"
    );
    // …is in the event log…
    let full = cdrs.iter().find(|c| c.caller_user == "9202").unwrap();
    let logged = async || {
        engine
            .store()
            .last_event_of(CorrelationId::from(full.call_id), "queue.caller_refused")
            .await
            .unwrap()
    };
    for _ in 0..100 {
        if logged().await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged().await.is_some(), "the refusal is in the event log");
    // …and in the queues' statistics, apart from the calls they were offered.
    let r = control::request(&socket, &ControlRequest::Stats)
        .await
        .unwrap();
    let result = r.result.unwrap();
    let total = |queue: &str| {
        result["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == queue)
            .map(|q| (q["total"]["refused"].clone(), q["total"]["offered"].clone()))
            .unwrap()
    };
    assert_eq!(total("support"), (2.into(), 1.into()), "{result}");
    assert_eq!(total("night"), (1.into(), 0.into()), "{result}");
    let text = call_engine::report::render(&ControlRequest::Stats, &result);
    assert!(text.contains("offered 1, refused 2"), "{text}");
    first.abort();
    engine.shutdown().await;
}

/// `[sip] calls_from` reaches the SIP adapter: a caller from elsewhere gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_outside_the_configured_networks_get_403() {
    let db = temp_db("calls-from");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.sip.calls_from = "127.0.0.2/32".parse().unwrap();
    let socket = cfg.control_socket.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let mut caller = customer(&engine, "9301").await;
    assert_eq!(caller.call("support", 0).await.err(), Some(403));
    // The operator sees it in the statistics.
    let r = control::request(&socket, &ControlRequest::Stats)
        .await
        .unwrap();
    let result = r.result.unwrap();
    assert_eq!(result["sip"]["forbidden_sources"], 1, "{result}");
    let text = call_engine::report::render(&ControlRequest::Stats, &result);
    assert!(text.contains("from outside calls_from (403) 1"), "{text}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_answered_but_not_acked_yet_counts_against_max_len() {
    let db = temp_db("admit-ack");
    let cfg = with_max_len_1(config(&db, Strategy::LongestIdleAgent, 15, &["alice"]));
    let engine = Engine::start(cfg).await.unwrap();
    // The first caller is answered; their ACK is slow to come.
    let mut first = customer(&engine, "9211").await;
    let d = first.invite("support", 0).await.expect("answered");
    // Meanwhile the queue is full already: a clean 486, not an answer and a hang-up.
    let mut second = customer(&engine, "9212").await;
    assert_eq!(second.call("support", 0).await.err(), Some(486));
    // The ACK: the first caller waits (music), and the queue is still full.
    first.ack(&d).await;
    assert!(first.recv_rtp(Duration::from_millis(500)).await.len() >= 5);
    let mut third = customer(&engine, "9213").await;
    assert_eq!(third.call("support", 0).await.err(), Some(486));
    engine.shutdown().await;
}

/// Decoded 20 ms frames of a prompt WAV.
fn prompt_frames(name: &str) -> Vec<Vec<i32>> {
    let path =
        std::path::Path::new(call_engine::config::DEFAULT_PROMPTS_DIR).join(format!("{name}.wav"));
    let clip = call_engine_media::audio::load_wav(&path).expect("prompt shipped");
    clip.samples()
        .chunks(160)
        .map(|c| c.iter().map(|s| i32::from(*s)).collect())
        .collect()
}

/// Whether a μ-law packet carries this frame (within G.711's quantisation error).
fn carries(payload: &[u8], frame: &[i32]) -> bool {
    payload.len() == frame.len()
        && payload
            .iter()
            .zip(frame)
            .all(|(u, s)| (ulaw_to_linear(*u) - s).abs() <= s.abs() / 8 + 40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_caller_hears_the_position_announcement() {
    let db = temp_db("announce");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.queues[0].announce.position_every_ms = 1_000;
    let engine = Engine::start(cfg).await.unwrap();
    let call = place(customer(&engine, "9301").await).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cust, d) = {
        // The call is answered at once (music), so the dialog is established.
        let (c, d) = call.await.unwrap();
        (c, d.expect("answered"))
    };
    let packets = cust.recv_rtp(Duration::from_millis(2_500)).await;
    let frames = prompt_frames("you-are-caller");
    // The prompt's voiced frames arrive, in order, as RTP.
    let voiced: Vec<&Vec<i32>> = frames
        .iter()
        .filter(|f| f.iter().map(|s| s.abs()).max().unwrap_or(0) > 2_000)
        .take(10)
        .collect();
    assert!(voiced.len() >= 10, "the prompt has speech");
    let heard = voiced
        .iter()
        .filter(|f| packets.iter().any(|p| p.pt == 0 && carries(&p.payload, f)))
        .count();
    assert!(
        heard >= 8,
        "\"you are caller number\" reaches the caller: {heard}/10 voiced frames found in {} packets",
        packets.len()
    );
    // Then "one".
    let one = prompt_frames("number-1");
    let heard_one = one
        .iter()
        .filter(|f| f.iter().map(|s| s.abs()).max().unwrap_or(0) > 2_000)
        .filter(|f| packets.iter().any(|p| carries(&p.payload, f)))
        .count();
    assert!(heard_one >= 3, "position 1 is said: {heard_one}");
    drop(d);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_1_turns_the_wait_into_a_callback_then_the_agent_is_rung() {
    let db = temp_db("callback");
    // The customer's phone exists first: callbacks go to its address.
    let mut cust = Phone::new("9401", DOMAIN, "127.0.0.1:9".parse().unwrap()).await;
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.queues[0].announce.callback = true;
    cfg.queues[0].announce.callback_via = Some(cust.sip_addr.to_string().into());
    let engine = Engine::start(cfg).await.unwrap();
    cust.server = engine.sip_udp().unwrap();

    let mut d = cust.call("support", 0).await.expect("answered (music)");
    let media = d.remote_media.expect("engine SDP");
    cust.send_dtmf(media.addr, '1').await;
    // Confirmation, then the engine hangs up: the caller's place is kept.
    assert!(
        cust.expect_request(&d.call_id, "BYE", WAIT).await.is_some(),
        "the engine hangs up after confirming the callback"
    );
    let _ = &mut d;

    // An agent becomes available: the engine calls the customer back first…
    let mut alice = agent(&engine, "alice").await;
    let mut back = cust
        .answer(0, WAIT)
        .await
        .expect("the customer is called back");
    assert!(back
        .message
        .header("from")
        .unwrap_or("")
        .contains("support"));
    // …then rings alice, who answers: one call, answered.
    let mut a = alice
        .answer(0, WAIT)
        .await
        .expect("alice rung for the callback");
    assert_eq!(alice.bye(&mut a).await, 200);
    assert!(cust
        .expect_request(&back.call_id, "BYE", WAIT)
        .await
        .is_some());
    let _ = &mut back;
    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs.len(), 1, "{cdrs:?}");
    assert_eq!(cdrs[0].disposition, Disposition::Answered);
    assert_eq!(cdrs[0].agent, Some(AgentId::new("alice")));
    // The callback is in the call's event log like any queue event.
    let events = wait_logged(&engine, cdrs[0].call_id.into(), |e| {
        matches!(
            e,
            EngineEvent::Queue(QueueEvent::CallerLeft {
                reason: LeaveReason::Callback,
                ..
            })
        )
    })
    .await;
    assert!(events.iter().any(|e| matches!(
        &e.payload,
        EngineEvent::Queue(QueueEvent::CallerLeft {
            reason: LeaveReason::Callback,
            ..
        })
    )));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_does_not_answer_is_paused_and_the_next_agent_is_rung() {
    let db = temp_db("autopause");
    let mut cfg = config(&db, Strategy::TopDown, 1, &["alice", "bob"]);
    cfg.agents[0].profile = cfg.agents[0].profile.clone().with_max_no_answer(1);
    // alice first in top-down order.
    cfg.agents[1].profile.memberships[0].position = 1;
    let socket = cfg.control_socket.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let mut alice = agent(&engine, "alice").await;
    let mut bob = agent(&engine, "bob").await;

    let call = place(customer(&engine, "9501").await).await;
    // alice rings out (1 s ring timeout) and is put on a break…
    let (inv, from) = alice.next_invite(WAIT).await.expect("alice rung first");
    alice.respond(&inv, from, 180, "Ringing", "a1", None).await;
    assert!(
        alice
            .expect_request(&inv.call_id(), "CANCEL", WAIT)
            .await
            .is_some(),
        "the ring times out: CANCEL"
    );
    alice
        .respond(&inv, from, 487, "Request Terminated", "a1", None)
        .await;
    // …bob gets the call.
    let mut b = bob.answer(0, WAIT).await.expect("bob rung next");
    let (_c, d) = call.await.unwrap();
    d.expect("answered");
    assert_eq!(bob.bye(&mut b).await, 200);

    // The command line sees alice on an automatic break.
    let agents = agents_of(&socket).await;
    let a = agents
        .iter()
        .find(|a| a.id == AgentId::new("alice"))
        .unwrap();
    assert_eq!(
        a.status,
        AgentStatus::OnBreak {
            reason: "auto: no answer".into()
        }
    );
    // The change is in the event log.
    let logged = wait_logged(&engine, AgentId::new("alice").correlation(), |e| {
        matches!(
            e,
            EngineEvent::Agent(AgentEvent::StatusChanged {
                status: AgentStatus::OnBreak { .. },
                ..
            })
        )
    })
    .await;
    assert!(
        logged.iter().any(|e| matches!(
            &e.payload,
            EngineEvent::Agent(AgentEvent::StatusChanged {
                status: AgentStatus::OnBreak { reason },
                ..
            }) if reason == "auto: no answer"
        )),
        "{:?}",
        logged.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );

    // She is not offered the next call; after `status alice available` she is.
    let call = place(customer(&engine, "9502").await).await;
    let mut b = bob.answer(0, WAIT).await.expect("bob again");
    assert!(
        alice
            .next_invite(Duration::from_millis(300))
            .await
            .is_none(),
        "on break: alice is not rung"
    );
    let (_c, d) = call.await.unwrap();
    d.expect("answered");
    assert_eq!(bob.bye(&mut b).await, 200);
    let r = control::request(
        &socket,
        &ControlRequest::SetStatus {
            agent: "alice".into(),
            status: "available".into(),
        },
    )
    .await
    .unwrap();
    assert!(r.ok, "{r:?}");
    let call = place(customer(&engine, "9503").await).await;
    let mut a = alice
        .answer(0, WAIT)
        .await
        .expect("alice rung once available");
    let (_c, d) = call.await.unwrap();
    d.expect("answered");
    assert_eq!(alice.bye(&mut a).await, 200);

    // Statistics over the control channel: three calls answered in `support`.
    wait_cdrs(&engine, 3).await;
    let r = control::request(&socket, &ControlRequest::Stats)
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    let result = r.result.unwrap();
    let q = &result["queues"][0];
    assert_eq!(q["queue"], "support");
    assert_eq!(q["total"]["answered"], 3, "{q}");
    assert_eq!(q["total"]["offered"], 3, "{q}");
    // The text the command line prints.
    let text = call_engine::report::render(&ControlRequest::Stats, &result);
    assert!(text.contains("queue support"), "{text}");
    assert!(text.contains("answered 3"), "{text}");
    // Errors are explained, not fatal.
    let r = control::request(
        &socket,
        &ControlRequest::SetStatus {
            agent: "nobody".into(),
            status: "available".into(),
        },
    )
    .await
    .unwrap();
    assert!(!r.ok && r.error.unwrap().contains("nobody"));
    engine.shutdown().await;
}

/// Caller 9601 waits, then 9602; 9601 hangs up (a queue with `abandoned_resume_secs`
/// and these agents, none logged in; T1 = `t1_ms`, so an unACKed call ends after 64·T1).
/// Returns the engine, 9601's phone and 9602's waiting call.
async fn abandoned_ahead_of_9602(
    name: &str,
    resume_secs: u32,
    t1_ms: u32,
    agents: &[&str],
) -> (
    Engine,
    Phone,
    tokio::task::JoinHandle<(Phone, Result<call_engine_testkit::Dialog, u16>)>,
) {
    let db = temp_db(name);
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, agents);
    cfg.queues[0].abandoned_resume_secs = resume_secs;
    cfg.sip.t1_ms = t1_ms;
    let engine = Engine::start(cfg).await.unwrap();
    let mut a = customer(&engine, "9601").await;
    let mut da = a.call("support", 0).await.expect("9601 answered (music)");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = place(customer(&engine, "9602").await).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.bye(&mut da).await, 200);
    (engine, a, b)
}

/// Caller 9601 waits, then 9602; 9601 hangs up and calls again at once (after a forged
/// INVITE in 9601's name, never ACKed, if `forged`). Returns the caller the agent is
/// offered first once she logs in.
async fn first_offered(resume_secs: u32, forged: bool, name: &str) -> String {
    let (engine, a, b) = abandoned_ahead_of_9602(name, resume_secs, 20, &["alice"]).await;
    if forged {
        let mut fake = customer(&engine, "9601").await;
        let d = fake.invite("support", 0).await.expect("answered");
        assert!(
            fake.expect_request(&d.call_id, "BYE", WAIT).await.is_some(),
            "the unACKed call ends"
        );
    }
    let a = place(a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = agent(&engine, "alice").await;
    let (inv, _) = alice.next_invite(WAIT).await.expect("alice rung");
    let from = inv.header("from").unwrap_or("").to_string();
    a.abort();
    b.abort();
    engine.shutdown().await;
    from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_and_calls_back_soon_keeps_the_place() {
    // With abandoned_resume_secs, 9601 is ahead of 9602 again…
    let with = first_offered(60, false, "resume").await;
    assert!(with.contains("9601"), "the returning caller first: {with}");
    // …also after a forged INVITE in their name, which never proved itself with an ACK…
    let forged = first_offered(60, true, "forged").await;
    assert!(
        forged.contains("9601"),
        "a forged call does not use up the place: {forged}"
    );
    // …without it, 9601 is behind.
    let without = first_offered(0, false, "noresume").await;
    assert!(
        without.contains("9602"),
        "the returning caller last: {without}"
    );
}

/// Two calls from the returning number, both answered before either is ACKed: only the
/// first confirmed takes the kept place; the other queues behind 9602 as a new caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_place_goes_to_one_call_of_the_returning_number() {
    let (engine, mut a1, b) =
        abandoned_ahead_of_9602("resume-twice", 60, 20, &["alice", "bob", "carol"]).await;
    let mut a2 = customer(&engine, "9601").await;
    let d1 = a1
        .invite("support", 0)
        .await
        .expect("first call back answered");
    let d2 = a2
        .invite("support", 0)
        .await
        .expect("second call back answered");
    a1.ack(&d1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a2.ack(&d2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Who each agent is offered once logged in, in turn.
    let mut offered = vec![];
    for name in ["alice", "bob", "carol"] {
        let mut phone = agent(&engine, name).await;
        let (inv, _) = phone.next_invite(WAIT).await.expect("rung");
        offered.push(inv.header("from").unwrap_or("").to_string());
    }
    assert!(
        offered[0].contains("9601"),
        "the kept place first: {offered:?}"
    );
    assert!(
        offered[1].contains("9602"),
        "the number's second call is behind 9602: {offered:?}"
    );
    assert!(
        offered[2].contains("9601"),
        "…and still waits, as a new caller: {offered:?}"
    );
    b.abort();
    engine.shutdown().await;
}

/// The caller calls back within the window, but their ACK arrives after it closed, and
/// another caller's INVITE (which prunes expired places) comes in between: the place is
/// still theirs (9601 is offered before 9602).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_back_in_time_keeps_the_place_when_the_ack_comes_after_the_window() {
    // A 1 s window; T1 = 40 ms, so an unACKed call is given up 2.56 s after its 200.
    let (engine, mut a, b) = abandoned_ahead_of_9602("resume-edge", 1, 40, &["alice"]).await;
    let d = a.invite("support", 0).await.expect("call back answered");
    // Past the window (1 s after the abandonment), well before the ACK timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = place(customer(&engine, "9603").await).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.ack(&d).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = agent(&engine, "alice").await;
    let (inv, _) = alice.next_invite(WAIT).await.expect("alice rung");
    let from = inv.header("from").unwrap_or("").to_string();
    assert!(from.contains("9601"), "the kept place first: {from}");
    b.abort();
    c.abort();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialed_number_brings_its_skills_into_the_queue() {
    let db = temp_db("dialed");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice", "bob"]);
    cfg.agents[0].profile = cfg.agents[0].profile.clone().with_skill("spanish", 5);
    cfg.numbers = vec![call_engine::config::DialedNumber {
        number: "5551000".into(),
        queue: "support".into(),
        skills: vec![("spanish".into(), 3)],
        priority: None,
    }];
    let engine = Engine::start(cfg).await.unwrap();
    // bob registers first (idle longest), yet only alice speaks Spanish.
    let mut bob = agent(&engine, "bob").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut alice = agent(&engine, "alice").await;
    let mut cust = customer(&engine, "9701").await;
    let call = tokio::spawn(async move {
        let d = cust.call("5551000", 0).await;
        (cust, d)
    });
    let mut a = alice
        .answer(0, WAIT)
        .await
        .expect("alice rung for the Spanish line");
    assert!(
        bob.next_invite(Duration::from_millis(300)).await.is_none(),
        "bob lacks the skill"
    );
    let (_c, d) = call.await.unwrap();
    d.expect("answered");
    assert_eq!(alice.bye(&mut a).await, 200);
    let cdrs = wait_cdrs(&engine, 1).await;
    assert_eq!(cdrs[0].queue, Some(QueueId::new("support")));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_deduplicated_by_caller_number() {
    let db = temp_db("callback-dedup");
    let mut first = Phone::new("9801", DOMAIN, "127.0.0.1:9".parse().unwrap()).await;
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.queues[0].announce.callback = true;
    cfg.queues[0].announce.callback_via = Some(first.sip_addr.to_string().into());
    let engine = Engine::start(cfg).await.unwrap();
    first.server = engine.sip_udp().unwrap();

    // The same number asks twice (two calls, both pressing 1).
    let d1 = first.call("support", 0).await.expect("first call answered");
    first
        .send_dtmf(d1.remote_media.expect("sdp").addr, '1')
        .await;
    assert!(first
        .expect_request(&d1.call_id, "BYE", WAIT)
        .await
        .is_some());
    let mut again = customer(&engine, "9801").await;
    let d2 = again
        .call("support", 0)
        .await
        .expect("second call answered");
    again
        .send_dtmf(d2.remote_media.expect("sdp").addr, '1')
        .await;
    assert!(
        again
            .expect_request(&d2.call_id, "BYE", WAIT)
            .await
            .is_some(),
        "the second request is confirmed and ended too"
    );

    // One callback only.
    let mut alice = agent(&engine, "alice").await;
    let mut back = first.answer(0, WAIT).await.expect("called back once");
    let mut a = alice.answer(0, WAIT).await.expect("alice rung");
    assert_eq!(alice.bye(&mut a).await, 200);
    assert!(first
        .expect_request(&back.call_id, "BYE", WAIT)
        .await
        .is_some());
    let _ = &mut back;
    assert!(
        first
            .next_invite(Duration::from_millis(800))
            .await
            .is_none(),
        "no second callback for the same number"
    );
    let cdrs = wait_cdrs(&engine, 2).await;
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    assert_eq!(
        cdrs.iter()
            .filter(|c| c.disposition == Disposition::Answered)
            .count(),
        1,
        "{cdrs:?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_status_survives_a_restart() {
    let db = temp_db("status-restart");
    let cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice", "bob"]);
    let socket = cfg.control_socket.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let r = control::request(
        &socket,
        &ControlRequest::SetStatus {
            agent: "alice".into(),
            status: "break:training".into(),
        },
    )
    .await
    .unwrap();
    assert!(r.ok, "{r:?}");
    engine.shutdown().await;

    let engine = Engine::start(cfg).await.unwrap();
    let agents = agents_of(&socket).await;
    let status = |id: &str| {
        agents
            .iter()
            .find(|a| a.id == AgentId::new(id))
            .map(|a| a.status.clone())
            .unwrap()
    };
    assert_eq!(
        status("alice"),
        AgentStatus::OnBreak {
            reason: "training".into()
        }
    );
    assert_eq!(status("bob"), AgentStatus::Available);
    // And she is not rung while on that break.
    let mut alice = agent(&engine, "alice").await;
    let call = place(customer(&engine, "9901").await).await;
    assert!(alice
        .next_invite(Duration::from_millis(800))
        .await
        .is_none());
    call.abort();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_media_stops_is_ended_and_the_agent_freed() {
    let db = temp_db("media-timeout");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.media_timeout_secs = 1;
    let engine = Engine::start(cfg).await.unwrap();
    let mut alice = agent(&engine, "alice").await;
    // Neither phone sends RTP once bridged (both dead, or a broken NAT).
    let call = place(customer(&engine, "9951").await).await;
    let a = alice.answer(0, WAIT).await.expect("alice rung");
    let (mut cust, d) = call.await.unwrap();
    let d = d.expect("answered");
    let (to_cust, to_alice) = tokio::join!(
        cust.expect_request(&d.call_id, "BYE", WAIT),
        alice.expect_request(&a.call_id, "BYE", WAIT)
    );
    assert!(to_cust.is_some() && to_alice.is_some(), "both legs ended");
    let cdrs = wait_cdrs(&engine, 1).await;
    assert!(cdrs[0].hangup_cause.contains("media timeout"), "{cdrs:?}");
    // The orchestrator heard it: alice takes the next call.
    let call = place(customer(&engine, "9952").await).await;
    let mut a2 = alice.answer(0, WAIT).await.expect("alice free again");
    let (_c, d2) = call.await.unwrap();
    d2.expect("answered");
    assert_eq!(alice.bye(&mut a2).await, 200);
    engine.shutdown().await;
}

/// The command line's queue login and logout reach routing, and `explain` tells how the
/// call was routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_login_logout_and_explain_over_the_control_socket() {
    let db = temp_db("login");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.queues
        .push(QueueSection::new("sales", Strategy::LongestIdleAgent));
    let socket = cfg.control_socket.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let mut alice = agent(&engine, "alice").await;
    let ask = async |req: ControlRequest| {
        let r = control::request(&socket, &req).await.unwrap();
        assert!(r.ok, "{req:?}: {r:?}");
        r.result.unwrap_or_default()
    };

    // A sales caller waits: alice is not a member of sales.
    let call = call_in(customer(&engine, "9701").await, "sales");
    assert_not_rung(&mut alice, "not a member").await;
    // Logged into sales from the command line: she is rung for the waiting caller.
    let login = ControlRequest::Login {
        agent: "alice".into(),
        queue: "sales".into(),
        level: None,
        position: None,
        penalty: None,
    };
    let text = call_engine::report::render(&login, &ask(login.clone()).await);
    assert!(text.contains("sales"), "{text}");
    let mut a = alice.answer(0, WAIT).await.expect("rung once a member");
    let (_c1, d) = call.await.unwrap();
    d.expect("answered");
    assert_eq!(alice.bye(&mut a).await, 200);

    // How the call was routed: alice, the one candidate, chosen.
    let cdrs = wait_cdrs(&engine, 1).await;
    let explain = ControlRequest::Explain {
        call: cdrs[0].call_id.0,
    };
    let text = call_engine::report::render(&explain, &ask(explain.clone()).await);
    assert!(text.contains("alice"), "{text}");
    let unknown = control::request(&socket, &ControlRequest::Explain { call: 1 })
        .await
        .unwrap();
    assert!(!unknown.ok, "no decisions for an unknown call");

    // Logged out of sales: the next sales caller waits again.
    ask(ControlRequest::Logout {
        agent: "alice".into(),
        queue: "sales".into(),
    })
    .await;
    let waiting = call_in(customer(&engine, "9702").await, "sales");
    assert_not_rung(&mut alice, "logged out of sales").await;
    waiting.abort();
    engine.shutdown().await;
}

/// Queue logins and logouts made from the command line survive a restart (like a status
/// set there): the event log replays them over the configured memberships.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_logins_and_logouts_survive_a_restart() {
    let db = temp_db("login-restart");
    let mut cfg = config(&db, Strategy::LongestIdleAgent, 15, &["alice"]);
    cfg.queues
        .push(QueueSection::new("sales", Strategy::LongestIdleAgent));
    let socket = cfg.control_socket.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    for req in [
        ControlRequest::Login {
            agent: "alice".into(),
            queue: "sales".into(),
            level: Some(2),
            position: None,
            penalty: None,
        },
        ControlRequest::Logout {
            agent: "alice".into(),
            queue: "support".into(),
        },
    ] {
        let r = control::request(&socket, &req).await.unwrap();
        assert!(r.ok, "{r:?}");
    }
    // The changes are logged before the engine stops.
    let logged = wait_logged(&engine, AgentId::new("alice").correlation(), |e| {
        matches!(
            e,
            EngineEvent::Agent(AgentEvent::QueueMembership { member: false, .. })
        )
    })
    .await;
    assert!(!logged.is_empty());
    engine.shutdown().await;

    let engine = Engine::start(cfg).await.unwrap();
    let agents = agents_of(&socket).await;
    assert_eq!(agents[0].queues, vec![QueueId::new("sales")], "{agents:?}");
    let mut alice = agent(&engine, "alice").await;
    let support = call_in(customer(&engine, "9801").await, "support");
    assert_not_rung(&mut alice, "logged out of support before the restart").await;
    let sales = call_in(customer(&engine, "9802").await, "sales");
    let (inv, _) = alice.next_invite(WAIT).await.expect("rung for sales");
    assert!(inv.header("from").unwrap_or("").contains("9802"));
    support.abort();
    sales.abort();
    engine.shutdown().await;
}
