use super::*;
use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as _;

fn q(name: &str) -> QueueId {
    QueueId::new(name)
}
fn a(name: &str) -> AgentId {
    AgentId::new(name)
}

fn setup(strategy: Strategy, agents: &[&str]) -> Orchestrator {
    let mut o = Orchestrator::new(
        vec![QueueConfig::new(q("support"), strategy)],
        agents
            .iter()
            .map(|n| AgentConfig::new(a(n), vec![q("support")]))
            .collect(),
    );
    for (i, n) in agents.iter().enumerate() {
        o.handle(
            Input::AgentOnline {
                agent: a(n),
                contact: format!("sip:{n}@127.0.0.1:{}", 5070 + i).into(),
            },
            i as Millis,
        );
    }
    o
}

fn rings(out: &[Output]) -> Vec<(CallId, AgentId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ring { call, agent, .. } => Some((*call, agent.clone())),
            _ => None,
        })
        .collect()
}

fn cancels(out: &[Output]) -> Vec<(CallId, AgentId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CancelRing { call, agent } => Some((*call, agent.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn longest_idle_agent_picks_the_agent_idle_longest() {
    let mut o = setup(Strategy::LongestIdleAgent, &["alice", "bob", "carol"]);
    // bob takes and finishes a call: he becomes the most recently idle.
    let out = o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        100,
    );
    assert_eq!(
        rings(&out),
        vec![(CallId(1), a("alice"))],
        "alice is idle longest"
    );
    o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("alice"),
        },
        110,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(2),
            queue: q("support"),
        },
        120,
    );
    assert_eq!(rings(&out), vec![(CallId(2), a("bob"))]);
    o.handle(
        Input::OfferAnswered {
            call: CallId(2),
            agent: a("bob"),
        },
        130,
    );
    // alice hangs up at 200, bob at 150: bob has been idle longer (150 < 200); carol
    // never took a call and came online at 2: she is idle longest of all.
    o.handle(Input::CallEnded { call: CallId(2) }, 150);
    o.handle(Input::CallEnded { call: CallId(1) }, 200);
    let out = o.handle(
        Input::CallQueued {
            call: CallId(3),
            queue: q("support"),
        },
        300,
    );
    assert_eq!(rings(&out), vec![(CallId(3), a("carol"))]);
    o.handle(
        Input::OfferAnswered {
            call: CallId(3),
            agent: a("carol"),
        },
        310,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(4),
            queue: q("support"),
        },
        320,
    );
    assert_eq!(
        rings(&out),
        vec![(CallId(4), a("bob"))],
        "bob idle since 150"
    );
    o.handle(
        Input::OfferAnswered {
            call: CallId(4),
            agent: a("bob"),
        },
        330,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(5),
            queue: q("support"),
        },
        340,
    );
    assert_eq!(rings(&out), vec![(CallId(5), a("alice"))]);
}

#[test]
fn round_robin_remembers_the_last_agent_and_is_fair_within_one() {
    let agents = ["a1", "a2", "a3", "a4", "a5", "a6", "a7"];
    let mut o = setup(Strategy::RoundRobin, &agents);
    let mut count: BTreeMap<AgentId, u32> = BTreeMap::new();
    let mut order = Vec::new();
    for i in 0..1000u64 {
        let call = CallId(i + 1);
        let now = 1000 + i * 10;
        let out = o.handle(
            Input::CallQueued {
                call,
                queue: q("support"),
            },
            now,
        );
        let r = rings(&out);
        assert_eq!(r.len(), 1);
        let agent = r[0].1.clone();
        order.push(agent.clone());
        *count.entry(agent.clone()).or_default() += 1;
        o.handle(Input::OfferAnswered { call, agent }, now + 1);
        o.handle(Input::CallEnded { call }, now + 2);
    }
    let min = count.values().min().copied().unwrap_or(0);
    let max = count.values().max().copied().unwrap_or(0);
    assert!(max - min <= 1, "{count:?}");
    assert_eq!(count.len(), agents.len());
    // Strict rotation in member order.
    for (i, agent) in order.iter().take(14).enumerate() {
        assert_eq!(agent.as_str(), agents[i % agents.len()]);
    }
}

#[test]
fn round_robin_skips_busy_agents_and_continues_after_the_last_offered() {
    let mut o = setup(Strategy::RoundRobin, &["a1", "a2", "a3"]);
    let out = o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    assert_eq!(rings(&out), vec![(CallId(1), a("a1"))]);
    o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("a1"),
        },
        11,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(2),
            queue: q("support"),
        },
        12,
    );
    assert_eq!(rings(&out), vec![(CallId(2), a("a2"))]);
    o.handle(
        Input::OfferAnswered {
            call: CallId(2),
            agent: a("a2"),
        },
        13,
    );
    o.handle(Input::CallEnded { call: CallId(1) }, 14); // a1 free again
    let out = o.handle(
        Input::CallQueued {
            call: CallId(3),
            queue: q("support"),
        },
        15,
    );
    assert_eq!(rings(&out), vec![(CallId(3), a("a3"))], "after a2 comes a3");
    o.handle(
        Input::OfferAnswered {
            call: CallId(3),
            agent: a("a3"),
        },
        16,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(4),
            queue: q("support"),
        },
        17,
    );
    assert_eq!(rings(&out), vec![(CallId(4), a("a1"))], "wraps; a2 is busy");
}

#[test]
fn ring_all_rings_everyone_and_the_first_answer_wins() {
    let mut o = setup(Strategy::RingAll, &["alice", "bob", "carol"]);
    let out = o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    assert_eq!(rings(&out).len(), 3);
    let out = o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("bob"),
        },
        20,
    );
    let mut c = cancels(&out);
    c.sort();
    assert_eq!(c, vec![(CallId(1), a("alice")), (CallId(1), a("carol"))]);
    assert!(out
        .iter()
        .any(|x| matches!(x, Output::Assigned { agent, waited_ms: 10, .. } if *agent == a("bob"))));
    // alice and carol are free again: the next call rings both (bob is on a call).
    let out = o.handle(
        Input::CallQueued {
            call: CallId(2),
            queue: q("support"),
        },
        30,
    );
    let mut r = rings(&out);
    r.sort();
    assert_eq!(r, vec![(CallId(2), a("alice")), (CallId(2), a("carol"))]);
    // A late answer from a cancelled agent is ignored.
    let out = o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("alice"),
        },
        31,
    );
    assert!(out.iter().all(|x| !matches!(x, Output::Assigned { .. })));
}

#[test]
fn no_answer_moves_to_the_next_agent_and_the_caller_keeps_the_head() {
    let mut o = setup(Strategy::LongestIdleAgent, &["alice", "bob"]);
    let out = o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    assert_eq!(rings(&out), vec![(CallId(1), a("alice"))]);
    assert!(out.contains(&Output::StartTimer {
        timer: Timer::RingTimeout {
            call: CallId(1),
            agent: a("alice")
        },
        at: 10 + 15_000
    }));
    // A second caller arrives: bob rings for them.
    let out = o.handle(
        Input::CallQueued {
            call: CallId(2),
            queue: q("support"),
        },
        20,
    );
    assert_eq!(rings(&out), vec![(CallId(2), a("bob"))]);
    // Alice rings out.
    let out = o.handle(
        Input::Timer(Timer::RingTimeout {
            call: CallId(1),
            agent: a("alice"),
        }),
        15_010,
    );
    assert_eq!(cancels(&out), vec![(CallId(1), a("alice"))]);
    // Nobody else is free (bob rings for call 2) and alice already failed call 1: she is
    // not rung again in a loop; a retry is scheduled instead.
    assert!(rings(&out).is_empty());
    assert!(out.contains(&Output::StartTimer {
        timer: Timer::Retry { call: CallId(1) },
        at: 15_010 + 2_000
    }));
    assert_eq!(
        o.waiting(&q("support")),
        vec![CallId(1), CallId(2)],
        "call 1 keeps the head"
    );
    // The retry fires: alice is offered call 1 again.
    let out = o.handle(Input::Timer(Timer::Retry { call: CallId(1) }), 17_010);
    assert_eq!(rings(&out), vec![(CallId(1), a("alice"))]);
    // Bob declines call 2: alice is busy with call 1, so call 2 waits for its retry.
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(2),
            agent: a("bob"),
            why: OfferFailure::Declined,
        },
        17_020,
    );
    assert!(rings(&out).is_empty());
    // Alice answers call 1 and hangs up; now she is free and has not tried call 2.
    o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("alice"),
        },
        17_030,
    );
    let out = o.handle(Input::CallEnded { call: CallId(1) }, 17_040);
    assert_eq!(rings(&out), vec![(CallId(2), a("alice"))]);
}

#[test]
fn busy_agent_is_skipped_for_that_call_until_everyone_was_tried() {
    let mut o = setup(Strategy::LongestIdleAgent, &["alice", "bob"]);
    o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("alice"),
            why: OfferFailure::Busy,
        },
        11,
    );
    assert_eq!(
        rings(&out),
        vec![(CallId(1), a("bob"))],
        "next agent, not alice again"
    );
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("bob"),
            why: OfferFailure::NoAnswer,
        },
        12,
    );
    // Both tried: no ring storm; after the retry delay, start over.
    assert!(rings(&out).is_empty());
    let out = o.handle(Input::Timer(Timer::Retry { call: CallId(1) }), 2_012);
    assert_eq!(rings(&out).len(), 1);
}

#[test]
fn abandon_while_queued_and_while_ringing() {
    let mut o = setup(Strategy::RingAll, &["alice"]);
    o.handle(Input::AgentOffline { agent: a("alice") }, 1);
    o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    let out = o.handle(Input::CallEnded { call: CallId(1) }, 40);
    assert_eq!(
        out,
        vec![Output::Abandoned {
            call: CallId(1),
            queue: q("support"),
            waited_ms: 30
        }]
    );
    assert!(o.waiting(&q("support")).is_empty());
    // Ringing: the ring is cancelled and the agent freed.
    o.handle(
        Input::AgentOnline {
            agent: a("alice"),
            contact: "sip:alice@x".into(),
        },
        50,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(2),
            queue: q("support"),
        },
        60,
    );
    assert_eq!(rings(&out).len(), 1);
    let out = o.handle(Input::CallEnded { call: CallId(2) }, 70);
    assert_eq!(cancels(&out), vec![(CallId(2), a("alice"))]);
    assert!(o.agent_available(&a("alice")));
}

#[test]
fn max_calls_is_respected() {
    let mut o = Orchestrator::new(
        vec![QueueConfig::new(q("support"), Strategy::RoundRobin)],
        vec![AgentConfig {
            id: a("alice"),
            queues: vec![q("support")],
            max_calls: 2,
        }],
    );
    o.handle(
        Input::AgentOnline {
            agent: a("alice"),
            contact: "sip:alice@x".into(),
        },
        0,
    );
    for i in 1..=3u64 {
        o.handle(
            Input::CallQueued {
                call: CallId(i),
                queue: q("support"),
            },
            i,
        );
    }
    assert_eq!(o.agent_calls(&a("alice")), vec![CallId(1), CallId(2)]);
    o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("alice"),
        },
        5,
    );
    assert_eq!(o.waiting(&q("support")), vec![CallId(2), CallId(3)]);
    let out = o.handle(Input::CallEnded { call: CallId(1) }, 6);
    assert_eq!(rings(&out), vec![(CallId(3), a("alice"))]);
}

#[test]
fn agents_offline_or_paused_are_not_offered_and_coming_online_dispatches_at_once() {
    let mut o = setup(Strategy::LongestIdleAgent, &["alice"]);
    o.handle(
        Input::AgentPaused {
            agent: a("alice"),
            paused: true,
        },
        1,
    );
    let out = o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    assert!(rings(&out).is_empty());
    let out = o.handle(
        Input::AgentPaused {
            agent: a("alice"),
            paused: false,
        },
        20,
    );
    assert_eq!(rings(&out), vec![(CallId(1), a("alice"))]);
    o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("alice"),
            why: OfferFailure::Failed,
        },
        21,
    );
    o.handle(Input::AgentOffline { agent: a("alice") }, 22);
    o.handle(Input::Timer(Timer::Retry { call: CallId(1) }), 23);
    assert!(!o.agent_available(&a("alice")));
    let out = o.handle(
        Input::AgentOnline {
            agent: a("alice"),
            contact: "sip:alice@y".into(),
        },
        30,
    );
    assert_eq!(
        out.iter().find_map(|x| match x {
            Output::Ring { contact, .. } => Some(contact.clone()),
            _ => None,
        }),
        Some("sip:alice@y".into()),
        "rings the current contact"
    );
}

#[test]
fn stale_ring_timeout_changes_nothing() {
    let mut o = setup(Strategy::LongestIdleAgent, &["alice"]);
    o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("alice"),
        },
        20,
    );
    let out = o.handle(
        Input::Timer(Timer::RingTimeout {
            call: CallId(1),
            agent: a("alice"),
        }),
        15_010,
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(o.agent_calls(&a("alice")), vec![CallId(1)]);
}

#[test]
fn an_agent_in_two_queues_serves_the_caller_who_waited_longest() {
    let mut o = Orchestrator::new(
        vec![
            QueueConfig::new(q("sales"), Strategy::LongestIdleAgent),
            QueueConfig::new(q("support"), Strategy::LongestIdleAgent),
        ],
        vec![AgentConfig::new(a("alice"), vec![q("sales"), q("support")])],
    );
    o.handle(
        Input::CallQueued {
            call: CallId(1),
            queue: q("support"),
        },
        10,
    );
    o.handle(
        Input::CallQueued {
            call: CallId(2),
            queue: q("sales"),
        },
        20,
    );
    let out = o.handle(
        Input::AgentOnline {
            agent: a("alice"),
            contact: "sip:alice@x".into(),
        },
        30,
    );
    assert_eq!(rings(&out), vec![(CallId(1), a("alice"))]);
}

#[test]
fn unknown_queue_and_unknown_agents_are_ignored() {
    let mut o = setup(Strategy::RingAll, &["alice"]);
    assert!(!o.has_queue(&q("nope")));
    assert!(o
        .handle(
            Input::CallQueued {
                call: CallId(1),
                queue: q("nope")
            },
            1
        )
        .is_empty());
    assert!(o
        .handle(
            Input::AgentOnline {
                agent: a("mallory"),
                contact: "sip:m@x".into()
            },
            2
        )
        .is_empty());
    assert!(o
        .handle(Input::CallEnded { call: CallId(99) }, 3)
        .is_empty());
}

#[test]
fn strategy_names_round_trip() {
    for s in [
        Strategy::LongestIdleAgent,
        Strategy::RoundRobin,
        Strategy::RingAll,
    ] {
        assert_eq!(s.name().parse::<Strategy>(), Ok(s));
    }
    assert!("fastest".parse::<Strategy>().is_err());
}

fn arb_input() -> impl proptest::strategy::Strategy<Value = Input> {
    let agent = prop_oneof![Just(a("a1")), Just(a("a2")), Just(a("a3"))];
    let call = (1u64..6).prop_map(CallId);
    prop_oneof![
        agent.clone().prop_map(|agent| Input::AgentOnline {
            agent,
            contact: "sip:x@y".into()
        }),
        agent
            .clone()
            .prop_map(|agent| Input::AgentOffline { agent }),
        (agent.clone(), any::<bool>())
            .prop_map(|(agent, paused)| Input::AgentPaused { agent, paused }),
        call.clone().prop_map(|call| Input::CallQueued {
            call,
            queue: q("support")
        }),
        (call.clone(), agent.clone())
            .prop_map(|(call, agent)| Input::OfferAnswered { call, agent }),
        (call.clone(), agent.clone()).prop_map(|(call, agent)| Input::OfferFailed {
            call,
            agent,
            why: OfferFailure::NoAnswer
        }),
        call.clone().prop_map(|call| Input::CallEnded { call }),
        agent
            .clone()
            .prop_map(|agent| Input::Timer(Timer::WrapUpEnd { agent })),
        (call.clone(), agent.clone())
            .prop_map(|(call, agent)| Input::Timer(Timer::RingTimeout { call, agent })),
        call.clone()
            .prop_map(|call| Input::Timer(Timer::Retry { call })),
        (agent.clone(), 0u8..4).prop_map(|(agent, k)| Input::AgentStatus {
            agent,
            status: match k {
                0 => AgentStatus::Available,
                1 => AgentStatus::AvailableOnDemand,
                2 => AgentStatus::OnBreak { reason: "x".into() },
                _ => AgentStatus::LoggedOut,
            }
        }),
        (agent.clone(), any::<bool>()).prop_map(|(agent, login)| if login {
            Input::QueueLogin {
                agent,
                membership: Membership::new(q("support")),
            }
        } else {
            Input::QueueLogout {
                agent,
                queue: q("support"),
            }
        }),
        agent.prop_map(|agent| Input::Timer(Timer::DelayEnd { agent })),
        (call.clone(), 0u8..4).prop_map(|(call, k)| match k {
            0 => Input::CallbackRequested { call },
            1 => Input::CallbackAnswered { call },
            2 => Input::CallbackFailed { call },
            _ => Input::Timer(Timer::MaxWait { call }),
        }),
    ]
}

proptest! {
    #[test]
    fn decisions_are_deterministic_and_capacity_holds(
        inputs in proptest::collection::vec(arb_input(), 1..80),
        strategy in prop_oneof![Just(Strategy::LongestIdleAgent), Just(Strategy::RoundRobin), Just(Strategy::RingAll)],
    ) {
        let mut x = setup(strategy, &["a1", "a2", "a3"]);
        let mut y = setup(strategy, &["a1", "a2", "a3"]);
        for (i, input) in inputs.into_iter().enumerate() {
            let now = 100 + i as Millis * 7;
            let ox = x.handle(input.clone(), now);
            let oy = y.handle(input, now);
            prop_assert_eq!(&ox, &oy, "same inputs, same decisions");
            for agent in ["a1", "a2", "a3"] {
                prop_assert!(x.agent_calls(&a(agent)).len() <= 1, "max_calls exceeded");
            }
            // Every ring has its timer.
            for o in &ox {
                if let Output::Ring { call, agent, .. } = o {
                    let has_timer = ox.iter().any(|t| matches!(t, Output::StartTimer { timer: Timer::RingTimeout { call: c, agent: g }, .. } if c == call && g == agent));
                    prop_assert!(has_timer);
                }
            }
        }
    }
}

#[test]
fn position_and_staffed_follow_the_queue() {
    // Nobody online: callers wait, in priority then arrival order.
    let mut o = setup(Strategy::LongestIdleAgent, &[]);
    for (call, at) in [(1u64, 10), (2, 20), (3, 30)] {
        o.handle(
            Input::CallQueued {
                call: CallId(call),
                queue: q("support"),
            },
            at,
        );
    }
    let pos = |o: &Orchestrator, c: u64| o.position(CallId(c)).map(|(_, p)| p);
    assert_eq!(
        (pos(&o, 1), pos(&o, 2), pos(&o, 3)),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!(o.position(CallId(1)).map(|(q, _)| q), Some(q("support")));
    // A VIP goes to the head; the others move back.
    o.handle(
        Input::CallQueuedWith {
            call: CallId(4),
            queue: q("support"),
            routing: CallRouting::new().with_priority(5),
        },
        40,
    );
    assert_eq!(pos(&o, 4), Some(1));
    assert_eq!(pos(&o, 3), Some(4));
    // The agreement with `waiting`, and a caller who left has no position.
    o.handle(Input::CallEnded { call: CallId(1) }, 50);
    assert_eq!(pos(&o, 1), None);
    let listed = o.waiting(&q("support"));
    for (i, c) in listed.iter().enumerate() {
        assert_eq!(o.position(*c).map(|(_, p)| p), Some(i as u32 + 1));
    }
    assert_eq!(o.staffed(&q("support")), 0);
    assert_eq!(o.position(CallId(99)), None);

    // Staffed: online members with a status that takes calls, busy or not.
    let mut o = setup(Strategy::LongestIdleAgent, &["alice", "bob"]);
    assert_eq!(o.staffed(&q("support")), 2);
    o.handle(
        Input::AgentPaused {
            agent: a("bob"),
            paused: true,
        },
        100,
    );
    assert_eq!(o.staffed(&q("support")), 1);
    o.handle(
        Input::CallQueued {
            call: CallId(7),
            queue: q("support"),
        },
        110,
    );
    assert_eq!(o.staffed(&q("support")), 1, "ringing alice still counts");
    o.handle(Input::AgentOffline { agent: a("alice") }, 120);
    assert_eq!(o.staffed(&q("support")), 0);
    assert_eq!(o.staffed(&q("nowhere")), 0);
}
