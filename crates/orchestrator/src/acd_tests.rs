//! Tests of the full ACD routing: every strategy, tiers, penalties, skills, priority,
//! explanations, fairness, and determinism by replay.

use super::*;
use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as _;

fn q(name: &str) -> QueueId {
    QueueId::new(name)
}
fn a(name: &str) -> AgentId {
    AgentId::new(name)
}

fn online(o: &mut Orchestrator, name: &str, now: Millis) -> Vec<Output> {
    o.handle(
        Input::AgentOnline {
            agent: a(name),
            contact: format!("sip:{name}@127.0.0.1").into(),
        },
        now,
    )
}

fn queued(o: &mut Orchestrator, call: u64, queue: &str, now: Millis) -> Vec<Output> {
    o.handle(
        Input::CallQueued {
            call: CallId(call),
            queue: q(queue),
        },
        now,
    )
}

fn rings(out: &[Output]) -> Vec<(CallId, AgentId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ring { call, agent, .. } => Some((*call, agent.clone())),
            _ => None,
        })
        .collect()
}

fn rung(out: &[Output]) -> Vec<String> {
    rings(out)
        .into_iter()
        .map(|(_, a)| a.as_str().to_string())
        .collect()
}

fn started(out: &[Output]) -> Vec<(Timer, Millis)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StartTimer { timer, at } => Some((timer.clone(), *at)),
            _ => None,
        })
        .collect()
}

fn cancelled(out: &[Output]) -> Vec<Timer> {
    out.iter()
        .filter_map(|o| match o {
            Output::CancelTimer { timer } => Some(timer.clone()),
            _ => None,
        })
        .collect()
}

/// One queue, agents in one queue each with the given membership details.
fn build(queue: QueueConfig, agents: Vec<AgentProfile>) -> Orchestrator {
    Orchestrator::with_config(OrchestratorConfig::new(vec![queue], agents))
}

fn member(name: &str, queue: &str, level: u8, position: u32, penalty: u32) -> AgentProfile {
    AgentProfile::new(a(name)).with_membership(
        Membership::new(q(queue))
            .with_level(level)
            .with_position(position)
            .with_penalty(penalty),
    )
}

/// Queues a call, answers whoever rings, returns who it was.
fn serve(o: &mut Orchestrator, call: u64, queue: &str, now: Millis) -> AgentId {
    let out = queued(o, call, queue, now);
    let r = rings(&out);
    assert_eq!(r.len(), 1, "{out:?}");
    let agent = r[0].1.clone();
    o.handle(
        Input::OfferAnswered {
            call: CallId(call),
            agent: agent.clone(),
        },
        now,
    );
    agent
}

fn end(o: &mut Orchestrator, call: u64, now: Millis) -> Vec<Output> {
    o.handle(Input::CallEnded { call: CallId(call) }, now)
}

// ---------------------------------------------------------------------------------------
// Names.

#[test]
fn every_strategy_name_round_trips_and_aliases_parse() {
    for s in Strategy::ALL {
        assert_eq!(s.name().parse::<Strategy>(), Ok(s));
        assert_eq!(s.to_string(), s.name());
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(
            json,
            format!("\"{}\"", s.name()),
            "serde uses the same name"
        );
    }
    assert_eq!("linear".parse::<Strategy>(), Ok(Strategy::TopDown));
    assert_eq!("wrandom".parse::<Strategy>(), Ok(Strategy::WeightedRandom));
    let e = "fastest".parse::<Strategy>().err().map(|e| e.to_string());
    let e = e.unwrap_or_default();
    for s in Strategy::ALL {
        assert!(e.contains(s.name()), "{e}");
    }
    assert!(Strategy::RingAll.rings_several() && Strategy::RingProgressively.rings_several());
    assert!(!Strategy::TopDown.rings_several());
}

#[test]
fn agent_config_new_means_level_1_position_0_penalty_0() {
    let p = AgentProfile::from(AgentConfig::new(a("x"), vec![q("s"), q("t")]));
    assert_eq!(p.memberships.len(), 2);
    for m in &p.memberships {
        assert_eq!((m.level, m.position, m.penalty), (1, 0, 0));
    }
    assert_eq!(p.max_calls, 1);
    assert!(p.skills.is_empty());
}

// ---------------------------------------------------------------------------------------
// Strategies and fairness.

#[test]
fn top_down_always_prefers_the_first_available_by_position() {
    // Configuration order a, b, c, d; positions 3, 1, 2, 1 → order b, d, c, a (b and d
    // tie on position; configuration order breaks the tie).
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::TopDown),
        vec![
            member("a", "s", 1, 3, 0),
            member("b", "s", 1, 1, 0),
            member("c", "s", 1, 2, 0),
            member("d", "s", 1, 1, 0),
        ],
    );
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        online(&mut o, n, i as Millis);
    }
    let order = ["b", "d", "c", "a"];
    let mut connected: Vec<u64> = Vec::new();
    let mut x: u64 = 7;
    for call in 1..=300u64 {
        let now = call * 10;
        // Free some calls, pseudo-randomly.
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if !connected.is_empty() && (x >> 33).is_multiple_of(2) {
            let c = connected.remove(((x >> 40) as usize) % connected.len());
            end(&mut o, c, now);
        }
        let expected = order.iter().find(|n| o.agent_available(&a(n))).copied();
        let out = queued(&mut o, call, "s", now + 1);
        match expected {
            Some(n) => {
                assert_eq!(rung(&out), vec![n.to_string()], "call {call}");
                o.handle(
                    Input::OfferAnswered {
                        call: CallId(call),
                        agent: a(n),
                    },
                    now + 2,
                );
                connected.push(call);
            }
            None => {
                assert!(rings(&out).is_empty());
                end(&mut o, call, now + 2); // the caller gives up
            }
        }
    }
}

#[test]
fn longest_idle_picks_the_agent_idle_longest_among_many() {
    let names: Vec<String> = (0..8).map(|i| format!("ag{i}")).collect();
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent),
        names.iter().map(|n| member(n, "s", 1, 0, 0)).collect(),
    );
    for (i, n) in names.iter().enumerate() {
        online(&mut o, n, 100 - i as Millis * 7); // ag7 came online first
    }
    let mut connected: Vec<u64> = Vec::new();
    let mut x: u64 = 99;
    for call in 1..=500u64 {
        let now = 1_000 + call * 13;
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        while connected.len() > 3 || (!connected.is_empty() && (x >> 35).is_multiple_of(3)) {
            let c = connected.remove(((x >> 41) as usize) % connected.len());
            end(&mut o, c, now);
            x = x.rotate_left(7);
        }
        // The expected agent: available with the smallest idle-since (ties: id).
        let expected = names
            .iter()
            .filter(|n| o.agent_available(&a(n)))
            .min_by_key(|n| {
                (
                    o.agent_stats(&a(n)).map_or(0, |s| s.idle_since),
                    (*n).clone(),
                )
            })
            .cloned();
        let got = serve(&mut o, call, "s", now + 1);
        assert_eq!(Some(got.as_str().to_string()), expected, "call {call}");
        connected.push(call);
    }
}

#[test]
fn fewest_calls_balances_and_a_late_joiner_catches_up() {
    let names = ["a", "b", "c", "d"];
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::AgentWithFewestCalls),
        names
            .iter()
            .map(|n| member(n, "s", 1, 0, 0))
            .chain([member("late", "s", 1, 0, 0)])
            .collect(),
    );
    for n in names {
        online(&mut o, n, 0);
    }
    // Two calls overlap at any time.
    let mut prev = None;
    for call in 1..=1000u64 {
        let now = call * 100;
        serve(&mut o, call, "s", now);
        if let Some(p) = prev {
            end(&mut o, p, now + 50);
        }
        prev = Some(call);
        let counts: Vec<u64> = names
            .iter()
            .map(|n| o.agent_stats(&a(n)).map_or(0, |s| s.answered))
            .collect();
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(max - min <= 1, "after call {call}: {counts:?}");
    }
    if let Some(p) = prev {
        end(&mut o, p, 200_000);
    }
    // A late joiner has answered none: they take the next calls until caught up.
    online(&mut o, "late", 200_001);
    for call in 1001..1011u64 {
        let got = serve(&mut o, call, "s", 200_000 + call);
        end(&mut o, call, 200_000 + call);
        assert_eq!(got.as_str(), "late");
    }
}

#[test]
fn least_talk_time_prefers_the_agent_who_talked_least() {
    let names = ["a", "b", "c"];
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::AgentWithLeastTalkTime),
        names.iter().map(|n| member(n, "s", 1, 0, 0)).collect(),
    );
    for n in names {
        online(&mut o, n, 0);
    }
    let mut now = 1_000;
    let mut x: u64 = 3;
    let mut longest = 0;
    for call in 1..=300u64 {
        let expected = names
            .iter()
            .min_by_key(|n| {
                let s = o.agent_stats(&a(n));
                (
                    s.map_or(0, |s| s.talk_ms),
                    s.map_or(0, |s| s.idle_since),
                    n.to_string(),
                )
            })
            .map(|n| n.to_string());
        let got = serve(&mut o, call, "s", now);
        assert_eq!(Some(got.as_str().to_string()), expected);
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let talk = 1_000 + (x >> 33) % 100_000;
        longest = longest.max(talk);
        now += talk;
        end(&mut o, call, now);
        now += 1;
    }
    let talks: Vec<u64> = names
        .iter()
        .map(|n| o.agent_stats(&a(n)).map_or(0, |s| s.talk_ms))
        .collect();
    let spread =
        talks.iter().max().copied().unwrap_or(0) - talks.iter().min().copied().unwrap_or(0);
    assert!(spread <= longest, "{talks:?} spread {spread} > {longest}");
}

/// Pearson's chi-square statistic.
fn chi_square(observed: &[u64], expected: &[f64]) -> f64 {
    observed
        .iter()
        .zip(expected)
        .map(|(o, e)| (*o as f64 - e).powi(2) / e)
        .sum()
}

fn draws(
    strategy: Strategy,
    agents: Vec<AgentProfile>,
    seed: u64,
    n: u64,
) -> BTreeMap<String, u64> {
    let names: Vec<String> = agents.iter().map(|p| p.id.as_str().to_string()).collect();
    let mut o = Orchestrator::with_config(
        OrchestratorConfig::new(vec![QueueConfig::new(q("s"), strategy)], agents)
            .with_seed(seed)
            .with_explain(ExplainConfig::disabled()),
    );
    for n in &names {
        online(&mut o, n, 0);
    }
    let mut count = BTreeMap::new();
    for call in 1..=n {
        let got = serve(&mut o, call, "s", call);
        end(&mut o, call, call);
        *count.entry(got.as_str().to_string()).or_insert(0) += 1;
    }
    count
}

#[test]
fn weighted_random_respects_penalty_weights() {
    // Penalties 0, 1, 3 → weights 1, 1/2, 1/4 → probabilities 4/7, 2/7, 1/7.
    let agents = vec![
        member("p0", "s", 1, 0, 0),
        member("p1", "s", 1, 0, 1),
        member("p3", "s", 1, 0, 3),
    ];
    let n = 10_000;
    let count = draws(Strategy::WeightedRandom, agents.clone(), 42, n);
    let observed: Vec<u64> = ["p0", "p1", "p3"]
        .iter()
        .map(|k| count.get(*k).copied().unwrap_or(0))
        .collect();
    let expected: Vec<f64> = [4.0, 2.0, 1.0].iter().map(|w| w / 7.0 * n as f64).collect();
    let chi2 = chi_square(&observed, &expected);
    // 2 degrees of freedom: 13.82 is the 0.1 % critical value. The seed is fixed, so the
    // test is deterministic; the bound shows the draw is not skewed.
    assert!(chi2 < 13.82, "chi² {chi2:.2} for {observed:?}");
    // Same seed, same draws; another seed, other draws.
    assert_eq!(
        draws(Strategy::WeightedRandom, agents.clone(), 42, 200),
        draws(Strategy::WeightedRandom, agents.clone(), 42, 200)
    );
    assert_ne!(
        draws(Strategy::WeightedRandom, agents.clone(), 42, 200),
        draws(Strategy::WeightedRandom, agents, 43, 200)
    );
}

#[test]
fn random_is_uniform_and_seeded() {
    let agents: Vec<AgentProfile> = ["w", "x", "y", "z"]
        .iter()
        .map(|n| member(n, "s", 1, 0, 0))
        .collect();
    let n = 10_000;
    let count = draws(Strategy::Random, agents.clone(), 7, n);
    let observed: Vec<u64> = count.values().copied().collect();
    assert_eq!(observed.len(), 4);
    let chi2 = chi_square(&observed, &[n as f64 / 4.0; 4]);
    assert!(chi2 < 16.27, "chi² {chi2:.2} for {observed:?}"); // 3 dof, 0.1 %
    assert_eq!(
        draws(Strategy::Random, agents.clone(), 7, 100),
        draws(Strategy::Random, agents, 7, 100)
    );
}

#[test]
fn random_strategies_still_prefer_lower_levels() {
    for s in [Strategy::Random, Strategy::WeightedRandom] {
        let count = draws(
            s,
            vec![
                member("first", "s", 1, 0, 5),
                member("backup", "s", 2, 0, 0),
            ],
            1,
            50,
        );
        assert_eq!(count.get("first"), Some(&50), "{s}");
    }
}

#[test]
fn ring_progressively_adds_one_agent_every_delay_and_the_first_answer_wins() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::RingProgressively)
            .with_ring_progressively_delay(3_000)
            .with_ring_timeout(60_000),
        vec![
            member("a", "s", 1, 0, 0),
            member("b", "s", 1, 1, 0),
            member("c", "s", 1, 2, 0),
        ],
    );
    for n in ["a", "b", "c"] {
        online(&mut o, n, 0);
    }
    let out = queued(&mut o, 1, "s", 100);
    assert_eq!(rung(&out), vec!["a"]);
    assert!(started(&out).contains(&(Timer::RingMore { call: CallId(1) }, 3_100)));
    let out = o.handle(Input::Timer(Timer::RingMore { call: CallId(1) }), 3_100);
    assert_eq!(rung(&out), vec!["b"], "one more, a keeps ringing");
    assert!(started(&out).contains(&(Timer::RingMore { call: CallId(1) }, 6_100)));
    let out = o.handle(Input::Timer(Timer::RingMore { call: CallId(1) }), 6_100);
    assert_eq!(rung(&out), vec!["c"]);
    let d = o.explain(CallId(1));
    let last = d.last().cloned();
    assert!(last.is_some_and(|d| d
        .candidates
        .iter()
        .any(|c| c.agent == a("a") && c.verdict == Verdict::AlreadyRinging)));
    // Nobody left: the timer keeps going while ringing, changing nothing.
    let out = o.handle(Input::Timer(Timer::RingMore { call: CallId(1) }), 9_100);
    assert!(rings(&out).is_empty());
    let out = o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("b"),
        },
        9_500,
    );
    let mut cancels: Vec<String> = out
        .iter()
        .filter_map(|x| match x {
            Output::CancelRing { agent, .. } => Some(agent.as_str().to_string()),
            _ => None,
        })
        .collect();
    cancels.sort();
    assert_eq!(cancels, vec!["a", "c"]);
    assert!(cancelled(&out).contains(&Timer::RingMore { call: CallId(1) }));
    // A stale ring-more changes nothing.
    assert!(o
        .handle(Input::Timer(Timer::RingMore { call: CallId(1) }), 12_100)
        .is_empty());
}

#[test]
fn ring_progressively_restarts_after_every_ring_failed() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::RingProgressively).with_ring_progressively_delay(1_000),
        vec![member("a", "s", 1, 0, 0), member("b", "s", 1, 1, 0)],
    );
    online(&mut o, "a", 0);
    online(&mut o, "b", 0);
    queued(&mut o, 1, "s", 0);
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("a"),
            why: OfferFailure::Busy,
        },
        10,
    );
    // The only ring failed: the armed ring-more is cancelled and routing starts over
    // with the next agent (a already tried), arming a fresh ring-more.
    assert!(cancelled(&out).contains(&Timer::RingMore { call: CallId(1) }));
    assert_eq!(rung(&out), vec!["b"]);
    assert!(started(&out).contains(&(Timer::RingMore { call: CallId(1) }, 1_010)));
}

#[test]
fn sequentially_by_agent_order_continues_after_the_last_tried_for_that_call() {
    // a busy, call 1 rings b; a becomes free meanwhile; b fails. Top-down goes back to
    // the first member (a); sequentially-by-agent-order goes on after b (c).
    let next_after_failure = |strategy| {
        let mut o = build(
            QueueConfig::new(q("s"), strategy),
            vec![
                member("a", "s", 1, 0, 0),
                member("b", "s", 1, 1, 0),
                member("c", "s", 1, 2, 0),
            ],
        );
        for n in ["a", "b", "c"] {
            online(&mut o, n, 0);
        }
        assert_eq!(serve(&mut o, 9, "s", 1).as_str(), "a");
        assert_eq!(rung(&queued(&mut o, 1, "s", 2)), vec!["b"]);
        assert!(rings(&end(&mut o, 9, 3)).is_empty(), "call 1 is ringing b");
        let out = o.handle(
            Input::OfferFailed {
                call: CallId(1),
                agent: a("b"),
                why: OfferFailure::NoAnswer,
            },
            4,
        );
        let first = rung(&out);
        // That one fails too: the next one.
        let out = o.handle(
            Input::OfferFailed {
                call: CallId(1),
                agent: a(&first[0]),
                why: OfferFailure::NoAnswer,
            },
            5,
        );
        (first[0].clone(), rung(&out))
    };
    assert_eq!(
        next_after_failure(Strategy::TopDown),
        ("a".to_string(), vec!["c".to_string()])
    );
    assert_eq!(
        next_after_failure(Strategy::SequentiallyByAgentOrder),
        ("c".to_string(), vec!["a".to_string()]),
        "wraps around after the last member"
    );
}

#[test]
fn round_robin_fair_within_one_with_tiers_and_agents_coming_and_going() {
    let names: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::RoundRobin),
        names
            .iter()
            .map(|n| member(n, "s", 1, 0, 0))
            .chain([member("backup", "s", 2, 0, 0)])
            .collect(),
    );
    for n in &names {
        online(&mut o, n, 0);
    }
    online(&mut o, "backup", 0);
    let mut count: BTreeMap<String, u32> = BTreeMap::new();
    for call in 1..=1000u64 {
        let got = serve(&mut o, call, "s", call * 10);
        end(&mut o, call, call * 10 + 5);
        *count.entry(got.as_str().to_string()).or_default() += 1;
    }
    assert_eq!(count.get("backup"), None, "level 2 is only a backup");
    let min = count.values().min().copied().unwrap_or(0);
    let max = count.values().max().copied().unwrap_or(0);
    assert!(max - min <= 1, "{count:?}");
    assert_eq!(count.len(), 5);
}

// ---------------------------------------------------------------------------------------
// Tiers and penalties.

#[test]
fn tier_rules_widen_to_the_next_level_on_a_timer() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent)
            .with_tier_rule(10_000, 2)
            .with_tier_rule(25_000, 3),
        vec![
            member("first", "s", 1, 0, 0),
            member("second", "s", 2, 0, 0),
            member("third", "s", 3, 0, 0),
        ],
    );
    for n in ["first", "second", "third"] {
        online(&mut o, n, 0);
    }
    serve(&mut o, 9, "s", 1); // first is busy
    let out = queued(&mut o, 1, "s", 1_000);
    assert!(rings(&out).is_empty(), "level 2 not yet eligible");
    assert_eq!(
        started(&out),
        vec![(Timer::Widen { call: CallId(1) }, 11_000)]
    );
    let d = o.explain(CallId(1));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].allowed_level, Some(1));
    assert_eq!(d[0].next_widening_at, Some(11_000));
    assert_eq!(d[0].outcome, Outcome::NoEligibleAgent);
    let verdict = |d: &Decision, n: &str| {
        d.candidates
            .iter()
            .find(|c| c.agent == a(n))
            .map(|c| c.verdict.clone())
    };
    assert_eq!(
        verdict(&d[0], "second"),
        Some(Verdict::LevelTooHigh {
            level: 2,
            allowed: 1
        })
    );
    assert_eq!(
        verdict(&d[0], "first"),
        Some(Verdict::AtCapacity {
            calls: 1,
            max_calls: 1
        })
    );
    // The timer fires: level 2 is eligible.
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(1) }), 11_000);
    assert_eq!(rung(&out), vec!["second"]);
    // second does not answer: level 3 is not due yet (25 s); the timer for it is asked.
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("second"),
            why: OfferFailure::NoAnswer,
        },
        12_000,
    );
    assert!(rings(&out).is_empty());
    assert!(started(&out).contains(&(Timer::Widen { call: CallId(1) }, 26_000)));
    assert!(started(&out).contains(&(Timer::Retry { call: CallId(1) }, 14_000)));
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(1) }), 26_000);
    assert_eq!(rung(&out), vec!["third"]);
    assert!(
        started(&out)
            .iter()
            .all(|(t, _)| !matches!(t, Timer::Widen { .. })),
        "no further step"
    );
}

#[test]
fn a_first_line_agent_freed_before_the_widening_takes_the_call_and_the_timer_is_cancelled() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent).with_tier_steps(10_000, 3),
        vec![
            member("first", "s", 1, 0, 0),
            member("second", "s", 2, 0, 0),
        ],
    );
    online(&mut o, "first", 0);
    online(&mut o, "second", 0);
    serve(&mut o, 9, "s", 1);
    let out = queued(&mut o, 1, "s", 100);
    assert_eq!(
        started(&out),
        vec![(Timer::Widen { call: CallId(1) }, 10_100)]
    );
    let out = end(&mut o, 9, 5_000);
    assert_eq!(rung(&out), vec!["first"]);
    let out = o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("first"),
        },
        6_000,
    );
    assert!(cancelled(&out).contains(&Timer::Widen { call: CallId(1) }));
    // A stale widening timer changes nothing.
    assert!(o
        .handle(Input::Timer(Timer::Widen { call: CallId(1) }), 10_100)
        .is_empty());
}

#[test]
fn no_rules_means_no_widening_timers_and_lower_levels_are_preferred() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent),
        vec![member("l2", "s", 2, 0, 0), member("l1", "s", 1, 0, 0)],
    );
    online(&mut o, "l2", 0); // idle longer, but level 2
    online(&mut o, "l1", 50);
    let out = queued(&mut o, 1, "s", 100);
    assert_eq!(rung(&out), vec!["l1"]);
    assert!(started(&out)
        .iter()
        .all(|(t, _)| matches!(t, Timer::RingTimeout { .. })));
    let out = queued(&mut o, 2, "s", 100);
    assert_eq!(
        rung(&out),
        vec!["l2"],
        "level 2 when level 1 is busy, without rules"
    );
}

#[test]
fn penalty_rules_raise_the_max_penalty_over_time_and_lower_penalty_is_preferred() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::TopDown)
            .with_max_penalty(0)
            .with_penalty_rule(5_000, 2)
            .with_penalty_rule(20_000, 10),
        vec![
            member("p5", "s", 1, 0, 5),
            member("p2", "s", 1, 1, 2),
            member("p0", "s", 1, 2, 0),
        ],
    );
    for n in ["p5", "p2", "p0"] {
        online(&mut o, n, 0);
    }
    // p0 is preferred even though it is last by position: lower penalty first.
    assert_eq!(rung(&queued(&mut o, 1, "s", 0)), vec!["p0"]);
    let out = queued(&mut o, 2, "s", 0);
    assert!(rings(&out).is_empty());
    assert_eq!(
        started(&out),
        vec![(Timer::Widen { call: CallId(2) }, 5_000)]
    );
    let d = o.explain(CallId(2));
    assert!(d[0].candidates.iter().any(|c| c.agent == a("p2")
        && c.verdict
            == Verdict::PenaltyTooHigh {
                penalty: 2,
                max_penalty: 0
            }));
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(2) }), 5_000);
    assert_eq!(rung(&out), vec!["p2"]);
    let out = queued(&mut o, 3, "s", 6_000);
    assert!(rings(&out).is_empty());
    assert_eq!(
        started(&out),
        vec![(Timer::Widen { call: CallId(3) }, 11_000)]
    );
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(3) }), 11_000);
    assert!(rings(&out).is_empty(), "p5 needs the 20 s rule");
    assert_eq!(
        started(&out),
        vec![(Timer::Widen { call: CallId(3) }, 26_000)]
    );
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(3) }), 26_000);
    assert_eq!(rung(&out), vec!["p5"]);
}

// ---------------------------------------------------------------------------------------
// Skills.

fn skilled(name: &str, skills: &[(&str, u8)]) -> AgentProfile {
    let mut p = AgentProfile::new(a(name)).with_queue(q("s"));
    for (s, l) in skills {
        p = p.with_skill(*s, *l);
    }
    p
}

#[test]
fn agents_lacking_a_skill_are_excluded_and_the_best_match_wins() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent)
            .with_required_skill("english", 3)
            .with_required_skill("billing", 2),
        vec![
            skilled("none", &[]),
            skilled("low", &[("english", 2), ("billing", 5)]),
            skilled("ok", &[("english", 3), ("billing", 2)]),
            skilled("best", &[("english", 5), ("billing", 4), ("french", 5)]),
        ],
    );
    for (i, n) in ["none", "low", "ok", "best"].iter().enumerate() {
        online(&mut o, n, i as Millis);
    }
    assert_eq!(
        rung(&queued(&mut o, 1, "s", 10)),
        vec!["best"],
        "ok idles longer, best scores higher"
    );
    assert_eq!(rung(&queued(&mut o, 2, "s", 10)), vec!["ok"]);
    let out = queued(&mut o, 3, "s", 10);
    assert!(rings(&out).is_empty());
    let d = o.explain(CallId(3));
    let by = |n: &str| d[0].candidates.iter().find(|c| c.agent == a(n)).cloned();
    assert_eq!(
        by("none").map(|c| c.verdict),
        Some(Verdict::LacksSkill {
            skill: "english".into(),
            required: 3
        }),
        "the first requirement not met is reported"
    );
    assert_eq!(
        by("low").map(|c| c.verdict),
        Some(Verdict::SkillTooLow {
            skill: "english".into(),
            level: 2,
            required: 3
        })
    );
    assert_eq!(by("low").map(|c| c.skill_score), Some(7));
    let mut skills = d[0].required_skills.clone();
    skills.sort_by(|x, y| x.skill.cmp(&y.skill));
    assert_eq!(
        skills,
        vec![
            SkillRequirement::new("billing", 2),
            SkillRequirement::new("english", 3)
        ]
    );
}

#[test]
fn call_requirements_add_to_the_queue_s_and_the_higher_minimum_wins() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::TopDown).with_required_skill("english", 2),
        vec![
            skilled("en2", &[("english", 2)]),
            skilled("en4", &[("english", 4)]),
            skilled("en4fr", &[("english", 4), ("french", 1)]),
        ],
    );
    for n in ["en2", "en4", "en4fr"] {
        online(&mut o, n, 0);
    }
    let out = o.handle(
        Input::CallQueuedWith {
            call: CallId(1),
            queue: q("s"),
            routing: CallRouting::new()
                .with_skill("english", 4)
                .with_skill("french", 1),
        },
        1,
    );
    assert_eq!(rung(&out), vec!["en4fr"]);
    let out = o.handle(
        Input::CallQueuedWith {
            call: CallId(2),
            queue: q("s"),
            routing: CallRouting::new().with_skill("english", 1),
        },
        1,
    );
    // english ≥ 2 from the queue still applies; en4 scores higher than en2.
    assert_eq!(rung(&out), vec!["en4"]);
    // A skill nobody has.
    let out = o.handle(
        Input::CallQueuedWith {
            call: CallId(3),
            queue: q("s"),
            routing: CallRouting::new().with_skill("klingon", 1),
        },
        1,
    );
    assert!(rings(&out).is_empty());
    let d = o.explain(CallId(3));
    assert!(d[0].candidates.iter().any(|c| c.verdict
        == Verdict::LacksSkill {
            skill: "klingon".into(),
            required: 1
        }));
}

#[test]
fn skill_relax_lowers_required_levels_over_time_by_timer() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent)
            .with_required_skill("billing", 4)
            .with_skill_relax(15_000, 1)
            .with_skill_relax(30_000, 4),
        vec![skilled("b3", &[("billing", 3)]), skilled("none", &[])],
    );
    online(&mut o, "b3", 0);
    online(&mut o, "none", 0);
    let out = queued(&mut o, 1, "s", 0);
    assert!(rings(&out).is_empty());
    assert_eq!(
        started(&out),
        vec![(Timer::Widen { call: CallId(1) }, 15_000)]
    );
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(1) }), 15_000);
    assert_eq!(rung(&out), vec!["b3"]);
    let d = o.explain(CallId(1));
    assert_eq!(
        d[1].required_skills,
        vec![SkillRequirement::new("billing", 3)]
    );
    // Lowered to 0, a skill no longer excludes anyone.
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("b3"),
            why: OfferFailure::Declined,
        },
        16_000,
    );
    assert!(rings(&out).is_empty());
    assert!(started(&out).contains(&(Timer::Widen { call: CallId(1) }, 30_000)));
    let out = o.handle(Input::Timer(Timer::Widen { call: CallId(1) }), 30_000);
    assert_eq!(rung(&out), vec!["none"]);
}

#[test]
fn skill_relax_steps_are_ignored_for_calls_without_skills() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent).with_skill_relax(15_000, 1),
        vec![skilled("x", &[])],
    );
    let out = queued(&mut o, 1, "s", 0);
    assert!(started(&out).is_empty(), "{out:?}");
}

#[test]
fn qualified_skill_match_lets_the_strategy_pick() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent)
            .with_required_skill("english", 1)
            .with_skill_match(SkillMatch::Qualified),
        vec![
            skilled("fluent", &[("english", 5)]),
            skilled("basic", &[("english", 1)]),
        ],
    );
    online(&mut o, "basic", 0);
    online(&mut o, "fluent", 10);
    assert_eq!(
        rung(&queued(&mut o, 1, "s", 20)),
        vec!["basic"],
        "idle longest"
    );
}

// ---------------------------------------------------------------------------------------
// Priority and seniority.

fn with_routing(o: &mut Orchestrator, call: u64, r: CallRouting, now: Millis) -> Vec<Output> {
    o.handle(
        Input::CallQueuedWith {
            call: CallId(call),
            queue: q("s"),
            routing: r,
        },
        now,
    )
}

#[test]
fn higher_priority_callers_are_served_first_then_seniority() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent),
        vec![skilled("x", &[])],
    );
    queued(&mut o, 1, "s", 10);
    with_routing(&mut o, 2, CallRouting::new().with_priority(5), 20);
    with_routing(&mut o, 3, CallRouting::new().with_entered_at(5), 30);
    with_routing(
        &mut o,
        4,
        CallRouting::new().with_priority(5).with_entered_at(1),
        40,
    );
    with_routing(&mut o, 5, CallRouting::new().with_entered_at(1_000_000), 50);
    with_routing(&mut o, 6, CallRouting::new().with_priority(-1), 1);
    // 4 and 2 (priority 5; 4 entered earlier), then by entry time: 3 (5), 1 (10),
    // 5 (future entry counts as now: 50), then 6 (priority -1).
    let expected = [4u64, 2, 3, 1, 5, 6].map(CallId).to_vec();
    assert_eq!(o.waiting(&q("s")), expected);
    online(&mut o, "x", 100);
    for (i, c) in expected.iter().enumerate() {
        assert_eq!(o.agent_calls(&a("x")), vec![*c]);
        let now = 200 + i as Millis * 10;
        o.handle(
            Input::OfferAnswered {
                call: *c,
                agent: a("x"),
            },
            now,
        );
        end(&mut o, c.0, now + 1);
    }
    let d = o.explain(CallId(4));
    assert_eq!((d[0].priority, d[0].entered_at), (5, 1));
}

#[test]
fn priority_orders_across_queues_for_an_agent_in_both() {
    let mut o = Orchestrator::with_config(OrchestratorConfig::new(
        vec![
            QueueConfig::new(q("sales"), Strategy::LongestIdleAgent),
            QueueConfig::new(q("vip"), Strategy::LongestIdleAgent),
        ],
        vec![AgentProfile::new(a("x"))
            .with_queue(q("sales"))
            .with_queue(q("vip"))],
    ));
    queued(&mut o, 1, "sales", 10);
    o.handle(
        Input::CallQueuedWith {
            call: CallId(2),
            queue: q("vip"),
            routing: CallRouting::new().with_priority(1),
        },
        20,
    );
    let out = online(&mut o, "x", 30);
    assert_eq!(rings(&out), vec![(CallId(2), a("x"))]);
}

// ---------------------------------------------------------------------------------------
// Explanations.

#[test]
fn explain_lists_every_candidate_with_why_and_serialises() {
    let mut o = build(
        QueueConfig::new(q("s"), Strategy::LongestIdleAgent)
            .with_required_skill("english", 2)
            .with_tier_rule(60_000, 2)
            .with_max_penalty(3),
        vec![
            skilled("offline", &[("english", 5)]),
            skilled("paused", &[("english", 5)]),
            skilled("busy", &[("english", 5)]),
            member("level2", "s", 2, 0, 0).with_skill("english", 5),
            member("pen9", "s", 1, 0, 9).with_skill("english", 5),
            skilled("noskill", &[]),
            skilled("tried", &[("english", 5)]),
            skilled("chosen", &[("english", 5)]),
            skilled("outranked", &[("english", 3)]),
        ],
    );
    for n in ["paused", "busy", "level2", "pen9", "noskill", "tried"] {
        online(&mut o, n, 0);
    }
    online(&mut o, "chosen", 1);
    online(&mut o, "outranked", 1);
    o.handle(
        Input::AgentPaused {
            agent: a("paused"),
            paused: true,
        },
        1,
    );
    // Call 9: busy, chosen and tried score 5, busy and tried idle longest, busy comes
    // first by id.
    assert_eq!(rung(&queued(&mut o, 9, "s", 2)), vec!["busy"]);
    // Call 1: tried (idle longest among the best scores), who is busy; then chosen.
    assert_eq!(rung(&queued(&mut o, 1, "s", 4)), vec!["tried"]);
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(1),
            agent: a("tried"),
            why: OfferFailure::Busy,
        },
        5,
    );
    assert_eq!(rung(&out), vec!["chosen"]);
    let d = o.explain(CallId(1));
    let last = d.last().cloned();
    let Some(last) = last else {
        panic!("no decision");
    };
    assert_eq!(
        last.outcome,
        Outcome::Rang {
            agents: vec![a("chosen")]
        }
    );
    let verdict = |n: &str| {
        last.candidates
            .iter()
            .find(|c| c.agent == a(n))
            .map(|c| c.verdict.clone())
    };
    assert_eq!(verdict("offline"), Some(Verdict::Offline));
    assert_eq!(verdict("paused"), Some(Verdict::Paused));
    assert_eq!(
        verdict("busy"),
        Some(Verdict::AtCapacity {
            calls: 1,
            max_calls: 1
        })
    );
    assert_eq!(
        verdict("level2"),
        Some(Verdict::LevelTooHigh {
            level: 2,
            allowed: 1
        })
    );
    assert_eq!(
        verdict("pen9"),
        Some(Verdict::PenaltyTooHigh {
            penalty: 9,
            max_penalty: 3
        })
    );
    assert_eq!(
        verdict("noskill"),
        Some(Verdict::LacksSkill {
            skill: "english".into(),
            required: 2
        })
    );
    assert_eq!(verdict("tried"), Some(Verdict::AlreadyTried));
    assert_eq!(verdict("chosen"), Some(Verdict::Chosen));
    assert_eq!(verdict("outranked"), Some(Verdict::Outranked));
    assert_eq!(last.considered, 9);
    assert_eq!(last.eligible, 3, "tried, chosen, outranked");
    assert_eq!(last.allowed_level, Some(1));
    assert_eq!(last.max_penalty, Some(3));
    assert_eq!(last.next_widening_at, Some(4 + 60_000));
    assert_eq!(last.waited_ms, 1);
    // Serialisable and back.
    let json = serde_json::to_string(&d).unwrap_or_default();
    assert!(json.contains("\"verdict\":\"lacks_skill\""), "{json}");
    let back: Vec<Decision> = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, d);
    // Printable.
    let text = last.to_string();
    assert!(
        text.contains("rang chosen") && text.contains("lacks skill english"),
        "{text}"
    );
}

#[test]
fn explanations_are_bounded_and_repeated_failures_fold() {
    let mut o = Orchestrator::with_config(
        OrchestratorConfig::new(
            vec![QueueConfig::new(q("s"), Strategy::RingAll)],
            (0..10)
                .map(|i| AgentProfile::new(a(&format!("g{i}"))).with_queue(q("s")))
                .collect(),
        )
        .with_explain(ExplainConfig::new(3, 2, 4)),
    );
    // Nobody online: each retry tries the call again without ringing: one decision,
    // folded.
    queued(&mut o, 1, "s", 0);
    for i in 0..5 {
        o.handle(Input::Timer(Timer::Retry { call: CallId(1) }), i);
    }
    let d = o.explain(CallId(1));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].outcome, Outcome::NoEligibleAgent);
    assert_eq!((d[0].repeats, d[0].at, d[0].last_at), (5, 0, 4));
    assert_eq!(d[0].considered, 10);
    assert_eq!(d[0].candidates.len(), 4);
    assert_eq!(d[0].omitted, 6);
    o.handle(Input::CallEnded { call: CallId(1) }, 5);
    // Ring-all rings 7; the list is cut at 4, chosen first.
    for i in 0..7 {
        online(&mut o, &format!("g{i}"), 10);
    }
    queued(&mut o, 2, "s", 11);
    let d = o.explain(CallId(2));
    assert_eq!(d.len(), 1);
    assert!(d[0].candidates.iter().all(|c| c.verdict == Verdict::Chosen));
    assert!(matches!(&d[0].outcome, Outcome::Rang { agents } if agents.len() == 7));
    // Decisions per call: the oldest drop out.
    for i in 0..7 {
        o.handle(
            Input::OfferFailed {
                call: CallId(2),
                agent: a(&format!("g{i}")),
                why: OfferFailure::Busy,
            },
            20,
        );
    }
    o.handle(Input::Timer(Timer::Retry { call: CallId(2) }), 3_000);
    let d = o.explain(CallId(2));
    assert_eq!(d.len(), 2);
    assert!(matches!(
        d[0].outcome,
        Outcome::AllTried {
            retry_at: Some(2_020)
        }
    ));
    assert!(matches!(&d[1].outcome, Outcome::Rang { agents } if agents.len() == 7));
    assert!(d[0].seq < d[1].seq);
    // Calls: only the last 3 are kept.
    for c in 3..=5 {
        queued(&mut o, c, "s", 4_000);
    }
    assert!(o.explain(CallId(1)).is_empty());
    assert!(o.explain(CallId(2)).is_empty());
    assert_eq!(o.explain(CallId(5)).len(), 1);
    // Off.
    let mut off = Orchestrator::with_config(
        OrchestratorConfig::new(vec![QueueConfig::new(q("s"), Strategy::RingAll)], vec![])
            .with_explain(ExplainConfig::disabled()),
    );
    queued(&mut off, 1, "s", 0);
    assert!(off.explain(CallId(1)).is_empty());
}

// ---------------------------------------------------------------------------------------
// Property tests: a simulated driver (timers fire when due), invariants after every
// step, and replay of the recorded inputs into a fresh orchestrator.

#[derive(Debug, Clone)]
enum Op {
    Online(usize),
    Offline(usize),
    Pause(usize, bool),
    Queue(u8, i32, Option<u8>, Option<(usize, u8)>),
    Answer(usize),
    Fail(usize, OfferFailure),
    EndConnected(usize),
    Abandon(usize),
    Advance(u16),
    StaleTimer(u8, u64),
    /// Set a status: 0 available, 1 on demand, 2 on break, 3 logged out.
    Status(usize, u8),
    /// Queue login: agent, queue, level, position, penalty.
    Login(usize, u8, u8, u32, u32),
    Logout(usize, u8),
    CallbackRequest(usize),
    CallbackAnswer(usize),
    CallbackFail(usize),
    /// A call admitted to queue `q{n}` is on its way (answered, not queued yet).
    Arrive(u8),
    /// The `i`-th call on its way is queued (`true`) or ends first (`false`).
    Arrived(usize, bool),
}

fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
    let agent = 0usize..6;
    let why = prop_oneof![
        Just(OfferFailure::NoAnswer),
        Just(OfferFailure::Busy),
        Just(OfferFailure::Declined),
        Just(OfferFailure::Failed)
    ];
    prop_oneof![
        agent.clone().prop_map(Op::Online),
        agent.clone().prop_map(Op::Offline),
        (agent, any::<bool>()).prop_map(|(x, p)| Op::Pause(x, p)),
        (
            0u8..3,
            -1i32..3,
            proptest::option::of(0u8..20),
            proptest::option::of((0usize..3, 1u8..6))
        )
            .prop_map(|(qq, p, e, s)| Op::Queue(qq, p, e, s)),
        (0usize..8).prop_map(Op::Answer),
        ((0usize..8), why).prop_map(|(i, w)| Op::Fail(i, w)),
        (0usize..8).prop_map(Op::EndConnected),
        (0usize..8).prop_map(Op::Abandon),
        (0u16..20_000).prop_map(Op::Advance),
        (0u8..8, 1u64..30).prop_map(|(k, c)| Op::StaleTimer(k, c)),
        (0usize..6, 0u8..4).prop_map(|(x, s)| Op::Status(x, s)),
        (0usize..6, 0u8..3, 1u8..4, 0u32..4, 0u32..3)
            .prop_map(|(x, qq, l, p, n)| Op::Login(x, qq, l, p, n)),
        (0usize..6, 0u8..3).prop_map(|(x, qq)| Op::Logout(x, qq)),
        (0usize..8).prop_map(Op::CallbackRequest),
        (0usize..8).prop_map(Op::CallbackAnswer),
        (0usize..8).prop_map(Op::CallbackFail),
        (0u8..4).prop_map(Op::Arrive),
        ((0usize..8), any::<bool>()).prop_map(|(i, q)| Op::Arrived(i, q)),
    ]
}

/// A queue action for the property tests: hang up, or overflow to another queue
/// (possibly itself or an unknown one).
fn arb_action() -> impl proptest::strategy::Strategy<Value = QueueAction> {
    prop_oneof![
        Just(QueueAction::Hangup { prompt: None }),
        Just(QueueAction::Hangup {
            prompt: Some("bye".into())
        }),
        (0u8..4).prop_map(|i| QueueAction::Overflow {
            queue: q(&format!("q{i}"))
        }),
    ]
}

/// Queue policies for the property tests.
#[derive(Debug, Clone)]
struct Policies {
    max_wait: Option<(u64, QueueAction)>,
    join_empty: Option<EmptyCondition>,
    leave_when_empty: Option<EmptyCondition>,
    empty_action: QueueAction,
    max_wait_no_agent: Option<u64>,
    max_len: Option<(u32, Option<u8>)>,
}

fn arb_policies() -> impl proptest::strategy::Strategy<Value = Policies> {
    let cond = proptest::option::of(prop_oneof![
        Just(EmptyCondition::NoMembers),
        Just(EmptyCondition::NoneAvailable)
    ]);
    (
        proptest::option::of((
            prop_oneof![Just(0u64), Just(8_000u64), Just(40_000u64)],
            arb_action(),
        )),
        cond.clone(),
        cond,
        arb_action(),
        proptest::option::of(prop_oneof![Just(0u64), Just(5_000u64), Just(30_000u64)]),
        proptest::option::of((0u32..4, proptest::option::of(0u8..4))),
    )
        .prop_map(
            |(max_wait, join_empty, leave_when_empty, empty_action, max_wait_no_agent, max_len)| {
                Policies {
                    max_wait,
                    join_empty,
                    leave_when_empty,
                    empty_action,
                    max_wait_no_agent,
                    max_len,
                }
            },
        )
}

fn with_policies(mut c: QueueConfig, p: Policies) -> QueueConfig {
    if let Some((ms, act)) = p.max_wait {
        c = c.with_max_wait(ms, act);
    }
    if let Some(j) = p.join_empty {
        c = c.with_join_empty(j);
    }
    if let Some(l) = p.leave_when_empty {
        c = c.with_leave_when_empty(l);
    }
    c = c.with_empty_action(p.empty_action);
    if let Some(ms) = p.max_wait_no_agent {
        c = c.with_max_wait_no_agent(ms);
    }
    if let Some((n, to)) = p.max_len {
        let action = match to {
            Some(i) => FullAction::Overflow {
                queue: q(&format!("q{i}")),
            },
            None => FullAction::Reject,
        };
        c = c.with_max_len(n, action);
    }
    c
}

const SKILLS: [&str; 3] = ["english", "billing", "french"];

fn arb_config() -> impl proptest::strategy::Strategy<Value = OrchestratorConfig> {
    let strategy = (0usize..Strategy::ALL.len()).prop_map(|i| Strategy::ALL[i]);
    let queue = (
        strategy,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u64), Just(3_000u64), Just(25_000u64)],
    );
    let agent = (
        1u16..3,
        proptest::collection::vec((0u8..3, 1u8..4, 0u32..4, 0u32..3), 1..4),
        proptest::collection::vec((0usize..3, 1u8..6), 0..3),
        proptest::option::of(prop_oneof![Just(0u64), Just(1_500u64), Just(9_000u64)]),
    );
    let agent_extra = (
        0u8..4,
        prop_oneof![Just(0u64), Just(2_000u64)],
        prop_oneof![Just(0u64), Just(3_000u64)],
        prop_oneof![Just(0u64), Just(6_000u64)],
        0u32..3,
    );
    (
        proptest::collection::vec(queue, 3),
        proptest::collection::vec(agent, 6),
        any::<u64>(),
        proptest::collection::vec(proptest::option::of(arb_policies()), 3),
        proptest::collection::vec(agent_extra, 6),
    )
        .prop_map(|(queues, agents, seed, policies, extras)| {
            let queues = queues
                .into_iter()
                .zip(policies)
                .enumerate()
                .map(
                    |(i, ((s, tiers, pens, skill, relax, qualified, wrap_up), pol))| {
                        let mut c = QueueConfig::new(q(&format!("q{i}")), s)
                            .with_ring_timeout(15_000)
                            .with_ring_progressively_delay(4_000)
                            .with_wrap_up_ms(wrap_up);
                        if tiers {
                            c = c.with_tier_steps(10_000, 3);
                        }
                        if pens {
                            c = c
                                .with_max_penalty(0)
                                .with_penalty_rule(7_000, 1)
                                .with_penalty_rule(30_000, 3);
                        }
                        if skill {
                            c = c.with_required_skill(SKILLS[i], 3);
                        }
                        if relax {
                            c = c.with_skill_relax(12_000, 2).with_skill_relax(40_000, 5);
                        }
                        if qualified {
                            c = c.with_skill_match(SkillMatch::Qualified);
                        }
                        if let Some(p) = pol {
                            c = with_policies(c, p);
                        }
                        c
                    },
                )
                .collect();
            let agents = agents
                .into_iter()
                .zip(extras)
                .enumerate()
                .map(|(i, ((max_calls, ms, skills, wrap_up), extra))| {
                    let (status, reject, busy, no_answer, max_no_answer) = extra;
                    let mut p = AgentProfile::new(a(&format!("a{i}")))
                        .with_max_calls(max_calls)
                        .with_status(status_of(status))
                        .with_reject_delay_ms(reject)
                        .with_busy_delay_ms(busy)
                        .with_no_answer_delay_ms(no_answer)
                        .with_max_no_answer(max_no_answer);
                    if let Some(w) = wrap_up {
                        p = p.with_wrap_up_ms(w);
                    }
                    for (qq, level, position, penalty) in ms {
                        p = p.with_membership(
                            Membership::new(q(&format!("q{qq}")))
                                .with_level(level)
                                .with_position(position)
                                .with_penalty(penalty),
                        );
                    }
                    for (s, l) in skills {
                        p = p.with_skill(SKILLS[s], l);
                    }
                    p
                })
                .collect();
            OrchestratorConfig::new(queues, agents)
                .with_seed(seed)
                .with_explain(ExplainConfig::new(1024, 4, 16))
        })
}

fn status_of(k: u8) -> AgentStatus {
    match k {
        0 => AgentStatus::Available,
        1 => AgentStatus::AvailableOnDemand,
        2 => AgentStatus::OnBreak {
            reason: "lunch".into(),
        },
        _ => AgentStatus::LoggedOut,
    }
}

/// Brute force, independent of the dispatch bookkeeping: a waiting call not ringing
/// anyone and an agent who could take it right now (available, tier level and penalty
/// allowed at the call's waiting time, skills, not tried). Must never exist after
/// `handle` returns: dispatch is event-driven, not a full scan, so this checks that no
/// event that could enable a match was missed. Calls with a timer due now but not
/// fired yet (a widening at this very instant) are skipped.
fn unmatched(
    o: &Orchestrator,
    now: Millis,
    timers: &BTreeMap<Timer, Millis>,
) -> Option<(CallId, AgentId)> {
    for (call, e) in &o.calls {
        let CallEntry::Queued(w) = e else {
            continue;
        };
        if !w.ringing.is_empty() || w.reserved.is_some() {
            continue;
        }
        let due = timers.iter().any(|(t, at)| {
            *at <= now
                && matches!(t, Timer::Widen { call: c } | Timer::Retry { call: c } if c == call)
        });
        if due {
            continue;
        }
        let qs = &o.queues[w.queue as usize];
        let c = &qs.config;
        let wait = now - w.since;
        let allowed = if c.tier_rules.is_empty() {
            u8::MAX
        } else {
            c.tier_rules
                .iter()
                .filter(|r| r.after_ms <= wait)
                .map(|r| r.level)
                .max()
                .unwrap_or(1)
                .max(1)
        };
        let mut rules = c.penalty_rules.clone();
        rules.sort_by_key(|r| r.after_ms);
        let max_pen = rules
            .iter()
            .rev()
            .find(|r| r.after_ms <= wait)
            .map(|r| r.max_penalty)
            .or(c.max_penalty)
            .unwrap_or(u32::MAX);
        let mut relax = c.skill_relax.clone();
        relax.sort_by_key(|r| r.after_ms);
        let lowered = relax
            .iter()
            .rev()
            .find(|r| r.after_ms <= wait)
            .map_or(0, |r| r.lower_by);
        for m in &qs.members {
            let ag = &o.agents[m.agent as usize];
            let skills_ok = w.reqs.iter().all(|r| {
                let name = &o.skill_names[r.skill as usize];
                let level = ag
                    .skills
                    .iter()
                    .find(|(s, _)| &o.skill_names[*s as usize] == name)
                    .map_or(0, |(_, l)| *l);
                level >= r.min.saturating_sub(lowered)
            });
            if ag.contact.is_some()
                && matches!(
                    ag.status,
                    AgentStatus::Available | AgentStatus::AvailableOnDemand
                )
                && ag.delay_until.is_none()
                && ag.wrap_up_until.is_none()
                && ag.calls.len() < usize::from(ag.max_calls)
                && m.level <= allowed
                && m.penalty <= max_pen
                && skills_ok
                && !w.tried.contains(&m.agent)
            {
                return Some((*call, ag.id.clone()));
            }
        }
    }
    None
}

struct Sim {
    o: Orchestrator,
    now: Millis,
    timers: BTreeMap<Timer, Millis>,
    log: Vec<(Input, Millis)>,
    outputs: Vec<Vec<Output>>,
    next_call: u64,
    /// Calls on their way to a queue, not queued nor ended yet.
    on_the_way: Vec<(CallId, QueueId)>,
    /// Calls that ended on their way, never queued (they leave no queue).
    never_queued: BTreeSet<CallId>,
    /// Assigned, Abandoned or Removed seen per call.
    terminal: BTreeMap<CallId, u32>,
}

impl Sim {
    fn feed(
        &mut self,
        input: Input,
        now: Millis,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        self.log.push((input.clone(), now));
        let out = self.o.handle(input, now);
        for x in &out {
            match x {
                Output::StartTimer { timer, at } => {
                    prop_assert!(*at >= now, "timer in the past: {x:?}");
                    self.timers.insert(timer.clone(), *at);
                }
                Output::CancelTimer { timer } => {
                    self.timers.remove(timer);
                }
                Output::Ring { call, agent, .. } => {
                    prop_assert!(
                        out.iter().any(|t| matches!(t, Output::StartTimer { timer: Timer::RingTimeout { call: c, agent: g }, .. } if c == call && g == agent)),
                        "every ring has its timeout"
                    );
                    let d = self.o.explain(*call);
                    let chosen = d.last().is_some_and(|d| {
                        d.candidates
                            .iter()
                            .any(|c| &c.agent == agent && c.verdict == Verdict::Chosen)
                    });
                    prop_assert!(chosen, "the decision explains the ring");
                }
                _ => {}
            }
        }
        for ag in &self.o.agents {
            prop_assert!(
                ag.calls.len() <= usize::from(ag.max_calls),
                "max_calls exceeded"
            );
        }
        for (i, qs) in self.o.queues.iter().enumerate() {
            let on_the_way = self
                .o
                .arriving
                .values()
                .filter(|&&q| q as usize == i)
                .count();
            prop_assert_eq!(qs.arriving, on_the_way, "calls on their way to queue {}", i);
            if let Some(m) = qs.config.max_len {
                prop_assert!(
                    qs.waiting.len() + qs.arriving <= m as usize,
                    "queue {} holds {} waiting and {} on their way, max_len {}",
                    i,
                    qs.waiting.len(),
                    qs.arriving,
                    m
                );
            }
            let avail = qs
                .members
                .iter()
                .filter(|m| self.o.agents[m.agent as usize].available())
                .count() as u32;
            prop_assert_eq!(qs.available, avail, "available count of queue {}", i);
            for m in &qs.members {
                let ag = &self.o.agents[m.agent as usize];
                prop_assert_eq!(
                    m.status,
                    ag.status(),
                    "member snapshot of {}",
                    ag.id.as_str()
                );
                prop_assert_eq!(usize::from(m.calls), ag.calls.len());
            }
        }
        prop_assert_eq!(
            unmatched(&self.o, now, &self.timers),
            None,
            "a match was missed"
        );
        // Every way out of a queue, once per call.
        for (k, x) in out.iter().enumerate() {
            match x {
                Output::Assigned { call, .. } | Output::Abandoned { call, .. } => {
                    *self.terminal.entry(*call).or_default() += 1;
                }
                Output::Removed { call, .. } => {
                    *self.terminal.entry(*call).or_default() += 1;
                    prop_assert!(!self.o.calls.contains_key(call), "removed but known");
                }
                Output::Overflowed { call, to, .. } => {
                    let removed_later = out[k + 1..]
                        .iter()
                        .any(|y| matches!(y, Output::Removed { call: c, .. } if c == call));
                    let moved = out[k + 1..]
                        .iter()
                        .any(|y| matches!(y, Output::Overflowed { call: c, .. } if c == call));
                    let waits_there = matches!(self.o.calls.get(call),
                        Some(CallEntry::Queued(w)) if self.o.queue_name(w.queue) == *to);
                    let answered_later = out[k + 1..]
                        .iter()
                        .any(|y| matches!(y, Output::Assigned { call: c, .. } if c == call));
                    prop_assert!(
                        removed_later || moved || waits_there || answered_later,
                        "overflowed call lost: {:?}",
                        x
                    );
                }
                _ => {}
            }
        }
        for (call, n) in &self.terminal {
            prop_assert!(*n <= 1, "{:?} left its queue {} times", call, n);
            if matches!(self.o.calls.get(call), Some(CallEntry::Queued(_))) {
                prop_assert!(false, "{:?} both left and waiting", call);
            }
        }
        // Waiting sets and the call table agree; per-queue counts are exact.
        for (i, qs) in self.o.queues.iter().enumerate() {
            for k in &qs.waiting {
                let ok = matches!(self.o.calls.get(&k.call),
                    Some(CallEntry::Queued(w)) if w.queue as usize == i);
                prop_assert!(ok, "{:?} in queue {} but not waiting there", k.call, i);
            }
            let members: Vec<&AgentState> = qs
                .members
                .iter()
                .map(|m| &self.o.agents[m.agent as usize])
                .collect();
            prop_assert_eq!(
                qs.logged_in as usize,
                members.iter().filter(|a| a.logged_in()).count()
            );
            prop_assert_eq!(
                qs.staffed as usize,
                members.iter().filter(|a| a.staffed()).count()
            );
        }
        for (call, e) in &self.o.calls {
            if let CallEntry::Queued(w) = e {
                prop_assert!(self.o.queues[w.queue as usize]
                    .waiting
                    .contains(&w.key(*call)));
                if let Some(r) = w.reserved {
                    prop_assert!(self.o.agents[r as usize].calls.contains(call));
                }
            }
        }
        self.outputs.push(out);
        Ok(())
    }

    /// Fires every timer due up to `until`, in order.
    fn advance(&mut self, until: Millis) -> Result<(), proptest::test_runner::TestCaseError> {
        loop {
            let due = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= until)
                .min_by_key(|(t, at)| (**at, (*t).clone()))
                .map(|(t, at)| (t.clone(), *at));
            let Some((t, at)) = due else {
                break;
            };
            self.timers.remove(&t);
            self.now = self.now.max(at);
            self.feed(Input::Timer(t), self.now)?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    fn ringing(&self) -> Vec<(CallId, AgentId)> {
        let mut v = Vec::new();
        for (call, e) in &self.o.calls {
            if let CallEntry::Queued(w) = e {
                for r in &w.ringing {
                    v.push((*call, self.o.agents[*r as usize].id.clone()));
                }
            }
        }
        v
    }

    fn connected(&self) -> Vec<CallId> {
        self.o
            .calls
            .iter()
            .filter(|(_, e)| matches!(e, CallEntry::Connected { .. }))
            .map(|(c, _)| *c)
            .collect()
    }

    fn reserved(&self) -> Vec<CallId> {
        self.o
            .calls
            .iter()
            .filter(|(_, e)| matches!(e, CallEntry::Queued(w) if w.reserved.is_some()))
            .map(|(c, _)| *c)
            .collect()
    }

    fn waiting(&self) -> Vec<CallId> {
        self.o
            .calls
            .iter()
            .filter(|(_, e)| matches!(e, CallEntry::Queued(_)))
            .map(|(c, _)| *c)
            .collect()
    }

    fn step(&mut self, op: &Op) -> Result<(), proptest::test_runner::TestCaseError> {
        let now = self.now + 1;
        self.advance(now)?;
        let ag = |i: usize| a(&format!("a{i}"));
        let input = match op {
            Op::Online(i) => Input::AgentOnline {
                agent: ag(*i),
                contact: format!("sip:a{i}@h").into(),
            },
            Op::Offline(i) => Input::AgentOffline { agent: ag(*i) },
            Op::Pause(i, p) => Input::AgentPaused {
                agent: ag(*i),
                paused: *p,
            },
            Op::Queue(qq, prio, entered, skill) => {
                self.next_call += 1;
                let mut r = CallRouting::new().with_priority(*prio);
                if let Some(e) = entered {
                    r = r.with_entered_at(now.saturating_sub(Millis::from(*e) * 1000));
                }
                if let Some((s, l)) = skill {
                    r = r.with_skill(SKILLS[*s], *l);
                }
                let call = CallId(self.next_call);
                let queue = q(&format!("q{qq}"));
                let input = if *prio == 0 && entered.is_none() && skill.is_none() {
                    Input::CallQueued {
                        call,
                        queue: queue.clone(),
                    }
                } else {
                    Input::CallQueuedWith {
                        call,
                        queue: queue.clone(),
                        routing: r,
                    }
                };
                // The pre-answer check agrees with what queueing does.
                let admission = self.o.admit(&queue, now);
                self.feed(input, now)?;
                let out = self.outputs.last().cloned().unwrap_or_default();
                let removed = out.iter().find_map(|x| match x {
                    Output::Removed {
                        call: c, reason, ..
                    } if *c == call => Some(*reason),
                    _ => None,
                });
                let last_overflow = out.iter().rev().find_map(|x| match x {
                    Output::Overflowed { call: c, to, .. } if *c == call => Some(to.clone()),
                    _ => None,
                });
                match admission {
                    Admission::Join => {
                        prop_assert_eq!(removed, None);
                        prop_assert_eq!(last_overflow, None);
                    }
                    Admission::Reject { reason } => prop_assert_eq!(removed, Some(reason)),
                    Admission::Overflow { queue } => {
                        prop_assert_eq!(removed, None);
                        prop_assert_eq!(last_overflow, Some(queue));
                    }
                }
                return Ok(());
            }
            Op::Answer(i) => {
                let r = self.ringing();
                if r.is_empty() {
                    return Ok(());
                }
                let (call, agent) = r[i % r.len()].clone();
                Input::OfferAnswered { call, agent }
            }
            Op::Fail(i, why) => {
                let r = self.ringing();
                if r.is_empty() {
                    return Ok(());
                }
                let (call, agent) = r[i % r.len()].clone();
                Input::OfferFailed {
                    call,
                    agent,
                    why: *why,
                }
            }
            Op::EndConnected(i) => {
                let c = self.connected();
                if c.is_empty() {
                    return Ok(());
                }
                Input::CallEnded {
                    call: c[i % c.len()],
                }
            }
            Op::Arrive(qq) => {
                let queue = q(&format!("q{qq}"));
                // Only what the engine does: a call admitted (joins or overflows there).
                let queue = match self.o.admit(&queue, now) {
                    Admission::Join => queue,
                    Admission::Overflow { queue } => queue,
                    Admission::Reject { .. } => return Ok(()),
                };
                self.next_call += 1;
                let call = CallId(self.next_call);
                self.on_the_way.push((call, queue.clone()));
                let input = Input::CallArriving { call, queue };
                self.feed(input, now)?;
                prop_assert!(self.o.has_call(call));
                return Ok(());
            }
            Op::Arrived(i, queued) => {
                if self.on_the_way.is_empty() {
                    return Ok(());
                }
                let (call, queue) = self.on_the_way.remove(i % self.on_the_way.len());
                let input = if *queued {
                    Input::CallQueued { call, queue }
                } else {
                    Input::CallEnded { call }
                };
                self.feed(input, now)?;
                prop_assert!(!self.o.arriving.contains_key(&call));
                if !*queued {
                    prop_assert!(!self.o.has_call(call));
                    self.never_queued.insert(call);
                }
                return Ok(());
            }
            Op::Abandon(i) => {
                let c = self.waiting();
                if c.is_empty() {
                    return Ok(());
                }
                Input::CallEnded {
                    call: c[i % c.len()],
                }
            }
            Op::Advance(ms) => {
                return self.advance(now + Millis::from(*ms));
            }
            Op::StaleTimer(k, c) => {
                // A timer the orchestrator did not ask for (or already cancelled).
                let call = CallId(*c);
                let t = match k {
                    0 => Timer::Retry { call },
                    1 => Timer::Widen { call },
                    2 => Timer::RingMore { call },
                    3 => Timer::WrapUpEnd {
                        agent: ag((c % 6) as usize),
                    },
                    4 => Timer::DelayEnd {
                        agent: ag((c % 6) as usize),
                    },
                    5 => Timer::MaxWait { call },
                    6 => Timer::NoAgent {
                        queue: q(&format!("q{}", c % 4)),
                    },
                    _ => Timer::RingTimeout { call, agent: ag(0) },
                };
                if self.timers.contains_key(&t) {
                    return Ok(());
                }
                Input::Timer(t)
            }
            Op::Status(i, k) => Input::AgentStatus {
                agent: ag(*i),
                status: status_of(*k),
            },
            Op::Login(i, qq, level, position, penalty) => Input::QueueLogin {
                agent: ag(*i),
                membership: Membership::new(q(&format!("q{qq}")))
                    .with_level(*level)
                    .with_position(*position)
                    .with_penalty(*penalty),
            },
            Op::Logout(i, qq) => Input::QueueLogout {
                agent: ag(*i),
                queue: q(&format!("q{qq}")),
            },
            Op::CallbackRequest(i) => {
                let c = self.waiting();
                if c.is_empty() {
                    return Ok(());
                }
                Input::CallbackRequested {
                    call: c[i % c.len()],
                }
            }
            Op::CallbackAnswer(i) | Op::CallbackFail(i) => {
                let c = self.reserved();
                if c.is_empty() {
                    return Ok(());
                }
                let call = c[i % c.len()];
                if matches!(op, Op::CallbackAnswer(_)) {
                    Input::CallbackAnswered { call }
                } else {
                    Input::CallbackFailed { call }
                }
            }
        };
        self.feed(input, now)
    }
}

// ---------------------------------------------------------------------------------------
// Wrap-up (after-call work).

/// `support` with one agent, alice, online; call 1 rung, answered at 100 and ended at
/// `end`. Returns the outputs of the end.
fn wrap_up_setup(
    queue: QueueConfig,
    alice: AgentProfile,
    end: Millis,
) -> (Orchestrator, Vec<Output>) {
    let mut o = build(queue, vec![alice]);
    online(&mut o, "alice", 0);
    assert_eq!(rung(&queued(&mut o, 1, "support", 10)), vec!["alice"]);
    o.handle(
        Input::OfferAnswered {
            call: CallId(1),
            agent: a("alice"),
        },
        100,
    );
    let out = o.handle(Input::CallEnded { call: CallId(1) }, end);
    (o, out)
}

fn wrap_up_end(o: &mut Orchestrator, name: &str, now: Millis) -> Vec<Output> {
    o.handle(Input::Timer(Timer::WrapUpEnd { agent: a(name) }), now)
}

#[test]
fn wrap_up_keeps_the_agent_from_offers_until_its_timer() {
    let queue = QueueConfig::new(q("support"), Strategy::LongestIdleAgent).with_wrap_up_ms(30_000);
    let (mut o, out) = wrap_up_setup(
        queue,
        AgentProfile::new(a("alice")).with_queue(q("support")),
        1_000,
    );
    assert_eq!(
        started(&out),
        vec![(Timer::WrapUpEnd { agent: a("alice") }, 31_000)]
    );
    assert!(!o.agent_available(&a("alice")));
    assert!(o.agent_calls(&a("alice")).is_empty());
    // A call arriving during the wrap-up waits; the explanation says why.
    let out = queued(&mut o, 2, "support", 1_500);
    assert!(rings(&out).is_empty(), "{out:?}");
    let d = o.explain(CallId(2));
    let last = d.last().expect("a decision");
    assert_eq!(last.candidates.len(), 1);
    assert_eq!(last.candidates[0].verdict, Verdict::WrapUp);
    assert_eq!(last.candidates[0].verdict.to_string(), "skipped: wrap-up");
    // Nothing else makes her available early (pause/unpause, a new contact).
    o.handle(
        Input::AgentPaused {
            agent: a("alice"),
            paused: true,
        },
        2_000,
    );
    assert!(rings(&o.handle(
        Input::AgentPaused {
            agent: a("alice"),
            paused: false,
        },
        2_100,
    ))
    .is_empty());
    assert!(rings(&online(&mut o, "alice", 2_200)).is_empty());
    // Right at the timer: offered the waiting call.
    let out = wrap_up_end(&mut o, "alice", 31_000);
    assert_eq!(rings(&out), vec![(CallId(2), a("alice"))]);
    // Idle since the end of the wrap-up.
    assert_eq!(
        o.agent_stats(&a("alice")).map(|s| s.idle_since),
        Some(31_000)
    );
}

#[test]
fn stale_wrap_up_timers_change_nothing() {
    let queue = QueueConfig::new(q("support"), Strategy::LongestIdleAgent).with_wrap_up_ms(30_000);
    let (mut o, _) = wrap_up_setup(
        queue,
        AgentProfile::new(a("alice")).with_queue(q("support")),
        1_000,
    );
    queued(&mut o, 2, "support", 1_500);
    // Early (not due yet): ignored.
    assert!(wrap_up_end(&mut o, "alice", 20_000).is_empty());
    assert!(!o.agent_available(&a("alice")));
    // Unknown agent: ignored.
    assert!(wrap_up_end(&mut o, "nobody", 40_000).is_empty());
    // Due: rung.
    assert_eq!(rung(&wrap_up_end(&mut o, "alice", 31_000)), vec!["alice"]);
    // Again, while she rings and after: ignored.
    assert!(wrap_up_end(&mut o, "alice", 31_001).is_empty());
    assert_eq!(o.agent_calls(&a("alice")), vec![CallId(2)]);
    // An agent never in wrap-up: ignored.
    let mut fresh = setup_one_free();
    assert!(wrap_up_end(&mut fresh, "alice", 5).is_empty());
    assert!(fresh.agent_available(&a("alice")));
}

fn setup_one_free() -> Orchestrator {
    let mut o = build(
        QueueConfig::new(q("support"), Strategy::LongestIdleAgent).with_wrap_up_ms(1_000),
        vec![AgentProfile::new(a("alice")).with_queue(q("support"))],
    );
    online(&mut o, "alice", 0);
    o
}

#[test]
fn zero_wrap_up_frees_the_agent_at_once() {
    let queue = QueueConfig::new(q("support"), Strategy::LongestIdleAgent);
    assert_eq!(queue.wrap_up_ms, 0);
    let (mut o, out) = wrap_up_setup(
        queue,
        AgentProfile::new(a("alice")).with_queue(q("support")),
        1_000,
    );
    assert!(started(&out).is_empty(), "{out:?}");
    assert!(o.agent_available(&a("alice")));
    assert_eq!(rung(&queued(&mut o, 2, "support", 1_000)), vec!["alice"]);
    // The agent's own 0 overrides a queue's wrap-up too.
    let queue = QueueConfig::new(q("support"), Strategy::LongestIdleAgent).with_wrap_up_ms(30_000);
    let alice = AgentProfile::new(a("alice"))
        .with_queue(q("support"))
        .with_wrap_up_ms(0);
    let (o, out) = wrap_up_setup(queue, alice, 1_000);
    assert!(started(&out).is_empty(), "{out:?}");
    assert!(o.agent_available(&a("alice")));
}

#[test]
fn the_agents_wrap_up_overrides_the_queues() {
    let queue = QueueConfig::new(q("support"), Strategy::LongestIdleAgent).with_wrap_up_ms(30_000);
    let alice = AgentProfile::new(a("alice"))
        .with_queue(q("support"))
        .with_wrap_up_ms(5_000);
    let (mut o, out) = wrap_up_setup(queue, alice, 1_000);
    assert_eq!(
        started(&out),
        vec![(Timer::WrapUpEnd { agent: a("alice") }, 6_000)]
    );
    queued(&mut o, 2, "support", 2_000);
    assert_eq!(rung(&wrap_up_end(&mut o, "alice", 6_000)), vec!["alice"]);
}

#[test]
fn wrap_up_follows_connected_calls_only() {
    // An abandoned or unanswered call does not start a wrap-up.
    let mut o = setup_one_free();
    assert_eq!(rung(&queued(&mut o, 1, "support", 10)), vec!["alice"]);
    let out = o.handle(Input::CallEnded { call: CallId(1) }, 20);
    assert!(started(&out).is_empty(), "{out:?}");
    assert!(o.agent_available(&a("alice")));
    assert_eq!(rung(&queued(&mut o, 2, "support", 30)), vec!["alice"]);
    let out = o.handle(
        Input::OfferFailed {
            call: CallId(2),
            agent: a("alice"),
            why: OfferFailure::Busy,
        },
        40,
    );
    assert!(!started(&out)
        .iter()
        .any(|(t, _)| matches!(t, Timer::WrapUpEnd { .. })));
}

#[test]
fn wrap_up_config_defaults_when_absent_from_json() {
    // Configurations recorded before wrap-up existed still load, with no wrap-up.
    let mut v = serde_json::to_value(QueueConfig::new(q("support"), Strategy::RoundRobin))
        .expect("serializes");
    assert!(v
        .as_object_mut()
        .and_then(|m| m.remove("wrap_up_ms"))
        .is_some());
    let c: QueueConfig = serde_json::from_value(v).expect("old queue config");
    assert_eq!(c.wrap_up_ms, 0);
    let mut v = serde_json::to_value(AgentProfile::new(a("alice"))).expect("serializes");
    assert!(v
        .as_object_mut()
        .and_then(|m| m.remove("wrap_up_ms"))
        .is_some());
    let p: AgentProfile = serde_json::from_value(v).expect("old profile");
    assert_eq!(p.wrap_up_ms, None);
}

proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(256))]

    #[test]
    fn replaying_a_recorded_input_log_gives_identical_decisions_and_explanations(
        config in arb_config(),
        ops in proptest::collection::vec(arb_op(), 1..150),
    ) {
        let mut sim = Sim {
            o: Orchestrator::with_config(config.clone()),
            now: 0,
            timers: BTreeMap::new(),
            log: Vec::new(),
            outputs: Vec::new(),
            next_call: 0,
            on_the_way: Vec::new(),
            never_queued: BTreeSet::new(),
            terminal: BTreeMap::new(),
        };
        for op in &ops {
            sim.step(op)?;
        }
        sim.advance(sim.now + 120_000)?;
        // Every caller still waiting hangs up, every connected call ends: each call that
        // entered left its queue exactly once (assigned, abandoned or removed).
        // Calls still on their way end too, never queued.
        let on_the_way: Vec<CallId> = sim.on_the_way.drain(..).map(|(c, _)| c).collect();
        for call in sim.waiting().into_iter().chain(sim.connected()).chain(on_the_way.iter().copied()) {
            let now = sim.now + 1;
            sim.now = now;
            sim.feed(Input::CallEnded { call }, now)?;
        }
        sim.never_queued.extend(on_the_way);
        for c in 1..=sim.next_call {
            let want = if sim.never_queued.contains(&CallId(c)) { None } else { Some(1) };
            prop_assert_eq!(sim.terminal.get(&CallId(c)).copied(), want, "call {}", c);
        }
        prop_assert!(sim.o.arriving.is_empty());
        prop_assert!(sim.o.calls.is_empty());
        // Record: the configuration and the input log as JSON, as a store would keep them.
        let recorded_config = serde_json::to_string(&config).unwrap_or_default();
        let recorded_log = serde_json::to_string(&sim.log).unwrap_or_default();
        let config: OrchestratorConfig = serde_json::from_str(&recorded_config).unwrap_or_else(|_| OrchestratorConfig::new(vec![], vec![]));
        let log: Vec<(Input, Millis)> = serde_json::from_str(&recorded_log).unwrap_or_default();
        prop_assert_eq!(log.len(), sim.log.len());
        let mut replay = Orchestrator::with_config(config);
        for (i, (input, now)) in log.into_iter().enumerate() {
            let out = replay.handle(input, now);
            prop_assert_eq!(&out, &sim.outputs[i], "step {}", i);
        }
        for c in 1..=sim.next_call {
            prop_assert_eq!(replay.explain(CallId(c)), sim.o.explain(CallId(c)));
        }
    }
}
