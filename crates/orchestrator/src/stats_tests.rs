use super::*;
use proptest::prelude::{any, prop_assert, proptest};

fn q(name: &str) -> QueueId {
    QueueId::new(name)
}
fn a(name: &str) -> AgentId {
    AgentId::new(name)
}

const S: Millis = 1000;

fn close(x: Option<f64>, want: f64) -> bool {
    x.is_some_and(|v| (v - want).abs() < 1e-9)
}

/// Erlang C from the textbook formula with factorials (small N only).
fn erlang_c_direct(a: f64, n: u32) -> f64 {
    let fact = |k: u32| (1..=k).map(f64::from).product::<f64>();
    let nf = f64::from(n);
    let top = a.powi(n as i32) / fact(n) * nf / (nf - a);
    let sum: f64 = (0..n).map(|k| a.powi(k as i32) / fact(k)).sum();
    top / (sum + top)
}

#[test]
fn erlang_c_known_values() {
    // Textbook values.
    assert!((erlang_c(2.0, 3).unwrap() - 4.0 / 9.0).abs() < 1e-12); // 0.4444
    assert!((erlang_c(10.0, 12).unwrap() - 0.4494).abs() < 1e-4);
    assert!((erlang_c(1.0, 2).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // One agent: M/M/1, P(wait) = rho.
    assert!((erlang_c(0.5, 1).unwrap() - 0.5).abs() < 1e-12);
    for n in 1..=20u32 {
        for tenth in 0..(n * 10) {
            let a = f64::from(tenth) / 10.0;
            let got = erlang_c(a, n).unwrap();
            let want = erlang_c_direct(a, n);
            assert!((got - want).abs() < 1e-9, "A={a} N={n}: {got} vs {want}");
        }
    }
}

#[test]
fn erlang_c_undefined_cases() {
    assert_eq!(erlang_c(1.0, 0), None);
    assert_eq!(erlang_c(0.0, 0), None);
    assert_eq!(erlang_c(3.0, 3), None); // N == A: unstable
    assert_eq!(erlang_c(4.0, 3), None);
    assert_eq!(erlang_c(-1.0, 3), None);
    assert_eq!(erlang_c(f64::NAN, 3), None);
    assert_eq!(erlang_c(f64::INFINITY, 3), None);
    assert_eq!(erlang_c(0.0, 3), Some(0.0));
    assert_eq!(erlang_c(1.0, ERLANG_MAX_AGENTS + 1), None);
}

#[test]
fn erlang_c_large_systems() {
    let pc = erlang_c(480.0, 500).unwrap();
    assert!(pc > 0.0 && pc < 1.0, "{pc}");
    let pc = erlang_c(499.9, 500).unwrap();
    assert!(pc > 0.9 && pc <= 1.0, "{pc}");
    assert!(erlang_c(100.0, 500).unwrap() < 1e-12);
    assert!(erlang_c(999_000.0, ERLANG_MAX_AGENTS).is_some());
}

#[test]
fn erlang_c_expected_wait_known_value() {
    // λ = 1/30 per s, AHT = 60 s: A = 2 Erl; N = 3: W = 4/9 * 60 / 1 = 26.67 s.
    let w = erlang_c_expected_wait(1.0 / 30.0, 60.0, 3).unwrap();
    assert!((w - 4.0 / 9.0 * 60.0).abs() < 1e-9);
    assert_eq!(erlang_c_expected_wait(1.0, 0.0, 3), None);
    assert_eq!(erlang_c_expected_wait(-1.0, 10.0, 3), None);
    assert_eq!(erlang_c_expected_wait(1.0, 10.0, 10), None);
    assert_eq!(erlang_c_expected_wait(0.0, 10.0, 1), Some(0.0));
}

proptest! {
    #[test]
    fn erlang_c_decreases_with_agents(a in 0.0f64..300.0, extra in 1u32..50) {
        let n = a.floor() as u32 + 1;
        let lo = erlang_c(a, n).unwrap();
        let hi = erlang_c(a, n + extra).unwrap();
        prop_assert!(hi <= lo + 1e-12, "A={} N={}: {} then {}", a, n, lo, hi);
    }

    #[test]
    fn erlang_never_nan(a in any::<f64>(), n in 0u32..2000, rate in any::<f64>(), aht in any::<f64>()) {
        if let Some(c) = erlang_c(a, n) {
            prop_assert!(c.is_finite() && (0.0..=1.0).contains(&c));
        }
        if let Some(w) = erlang_c_expected_wait(rate, aht, n) {
            prop_assert!(w.is_finite() && w >= 0.0);
        }
    }

    #[test]
    fn estimate_never_nan(
        position in any::<u32>(),
        agents in 0u32..3000,
        rate in proptest::option::of(any::<f64>()),
        aht in proptest::option::of(any::<f64>()),
        obs in proptest::option::of(any::<f64>()),
        samples in any::<u64>(),
    ) {
        let i = EwtInputs { position, agents, arrival_rate_per_s: rate, aht_s: aht, observed_wait_s: obs, observed_samples: samples };
        if let Some(w) = estimate_wait_s(&i) {
            prop_assert!(w.is_finite() && w >= 0.0);
        }
        if agents == 0 {
            prop_assert!(estimate_wait_s(&i).is_none());
        }
    }

    #[test]
    fn book_never_panics(ops in proptest::collection::vec((0u8..6, 0u64..5, any::<u64>(), 0u64..100_000_000), 0..60), pos in any::<u32>(), n in any::<u32>()) {
        let mut b = StatsBook::new(StatsConfig { window_ms: 60_000, bucket_ms: 1000, default_service_level_ms: 20_000 });
        let mut now = 0;
        for (op, id, x, dt) in ops {
            now += dt;
            let queue = q(if id % 2 == 0 { "a" } else { "b" });
            let agent = a(if id % 3 == 0 { "x" } else { "y" });
            match op {
                0 => b.call_joined(CallId(id), &queue, now),
                1 => b.call_answered(CallId(id), &queue, &agent, x, now),
                2 => b.call_abandoned(CallId(id), &queue, x, now),
                3 => b.call_left(CallId(id), &queue, LeaveReason::Overflow, x, now),
                4 => b.call_ended(&queue, &agent, x, now),
                _ => b.wrap_up_done(&agent, x, now),
            }
        }
        for queue in ["a", "b", "c"] {
            let s = b.queue_stats(&q(queue), now);
            for p in [&s.window, &s.total] {
                for v in [p.abandon_rate, p.service_level, p.service_level_with_abandons,
                          p.service_level_excluding_short_abandons, p.asa_ms, p.avg_wait_ms,
                          p.avg_talk_ms, p.avg_wrap_ms, p.aht_ms, p.arrival_rate_per_s].into_iter().flatten() {
                    prop_assert!(v.is_finite() && v >= 0.0);
                }
            }
            for r in [s.window.abandon_rate, s.window.service_level, s.window.service_level_with_abandons,
                      s.window.service_level_excluding_short_abandons, s.total.service_level].into_iter().flatten() {
                prop_assert!(r <= 1.0);
            }
            prop_assert!(s.window.offered <= s.total.offered);
            prop_assert!(s.window.answered <= s.total.answered);
            prop_assert!(s.window.abandoned <= s.total.abandoned);
            prop_assert!(s.window.max_wait_ms <= s.total.max_wait_ms);
            prop_assert!(s.window.span_ms <= 60_000 && s.window.span_ms <= s.total.span_ms);
            let _ = b.ewt(&q(queue), pos, n, now);
            let _ = b.ewt(&q(queue), pos, n, u64::MAX);
        }
    }
}

#[test]
fn empty_book() {
    let b = StatsBook::default();
    assert_eq!(b.window_ms(), DEFAULT_WINDOW_MS);
    let s = b.queue_stats(&q("support"), 1000);
    assert_eq!(s.waiting, 0);
    assert_eq!(s.longest_wait_ms, None);
    assert_eq!(s.service_level_threshold_ms, DEFAULT_SERVICE_LEVEL_MS);
    assert_eq!(s.window.offered, 0);
    assert_eq!(s.window.service_level, None);
    assert_eq!(s.window.abandon_rate, None);
    assert_eq!(s.window.asa_ms, None);
    assert_eq!(s.window.aht_ms, None);
    assert_eq!(s.window.arrival_rate_per_s, None);
    assert_eq!(b.ewt(&q("support"), 1, 5, 1000), None);
    assert_eq!(b.agent_stats(&a("x")).handled, 0);
    assert_eq!(b.agent_stats(&a("x")).aht_ms, None);
    assert!(b.all_agent_stats().is_empty());
}

#[test]
fn waiting_and_longest_wait() {
    let mut b = StatsBook::default();
    let support = q("support");
    b.call_joined(CallId(1), &support, 1000);
    b.call_joined(CallId(2), &support, 5000);
    b.call_joined(CallId(3), &support, 7000);
    let s = b.queue_stats(&support, 10_000);
    assert_eq!(s.waiting, 3);
    assert_eq!(s.longest_wait_ms, Some(9000));
    b.call_answered(CallId(1), &support, &a("x"), 9000, 10_000);
    let s = b.queue_stats(&support, 10_000);
    assert_eq!(s.waiting, 2);
    assert_eq!(s.longest_wait_ms, Some(5000));
    b.call_abandoned(CallId(2), &support, 6000, 11_000);
    b.call_left(CallId(3), &support, LeaveReason::Callback, 5000, 12_000);
    let s = b.queue_stats(&support, 12_000);
    assert_eq!(s.waiting, 0);
    assert_eq!(s.longest_wait_ms, None);
    // Another queue is not affected.
    assert_eq!(b.queue_stats(&q("other"), 12_000).waiting, 0);
    assert_eq!(b.queues().count(), 1);
}

#[test]
fn service_level_variants() {
    let mut b = StatsBook::default();
    let sq = q("sales");
    b.set_service_level_threshold(&sq, 20 * S);
    let x = a("x");
    // Answered: 10 s, 20 s (inclusive: within), 30 s.
    for (i, w) in [10 * S, 20 * S, 30 * S].into_iter().enumerate() {
        b.call_joined(CallId(i as u64), &sq, 0);
        b.call_answered(CallId(i as u64), &sq, &x, w, 60 * S);
    }
    // Abandoned: 5 s (short) and 40 s.
    b.call_abandoned(CallId(10), &sq, 5 * S, 60 * S);
    b.call_abandoned(CallId(11), &sq, 40 * S, 60 * S);
    // Overflow after 50 s.
    b.call_left(CallId(12), &sq, LeaveReason::Overflow, 50 * S, 60 * S);
    // Two callers refused before joining: counted apart, in no rate.
    b.call_refused(&sq, 59 * S);
    b.call_refused(&sq, 60 * S);
    let s = b.queue_stats(&sq, 60 * S);
    for p in [&s.window, &s.total] {
        assert_eq!(p.refused, 2);
        assert_eq!(p.offered, 3);
        assert_eq!(p.answered, 3);
        assert_eq!(p.answered_within_threshold, 2);
        assert_eq!(p.abandoned, 2);
        assert_eq!(p.abandoned_within_threshold, 1);
        assert_eq!(p.left.overflow, 1);
        assert_eq!(p.left.total(), 1);
        assert!(close(p.service_level, 2.0 / 3.0));
        assert!(close(p.service_level_with_abandons, 2.0 / 5.0));
        assert!(close(p.service_level_excluding_short_abandons, 2.0 / 4.0));
        assert!(close(p.abandon_rate, 2.0 / 6.0));
        assert!(close(p.asa_ms, 20_000.0));
        assert!(close(
            p.avg_wait_ms,
            (10.0 + 20.0 + 30.0 + 5.0 + 40.0 + 50.0) * 1000.0 / 6.0
        ));
        assert_eq!(p.max_wait_ms, Some(50 * S));
    }
    assert_eq!(s.window.offered, 3);
    // A stricter threshold on another queue.
    let tq = q("tech");
    b.set_service_level_threshold(&tq, 5 * S);
    assert_eq!(b.service_level_threshold(&tq), 5 * S);
    b.call_answered(CallId(20), &tq, &x, 6 * S, 0);
    assert!(close(b.queue_stats(&tq, 0).total.service_level, 0.0));
}

#[test]
fn only_abandons_within_threshold() {
    let mut b = StatsBook::default();
    let sq = q("sales");
    b.call_abandoned(CallId(1), &sq, 2 * S, 0);
    let p = b.queue_stats(&sq, 0).total;
    assert_eq!(p.service_level, None);
    assert!(close(p.service_level_with_abandons, 0.0));
    assert_eq!(p.service_level_excluding_short_abandons, None);
    assert!(close(p.abandon_rate, 1.0));
}

#[test]
fn talk_wrap_aht_and_agents() {
    let mut b = StatsBook::default();
    let sq = q("sales");
    let (x, y) = (a("x"), a("y"));
    b.call_answered(CallId(1), &sq, &x, 0, 0);
    b.call_answered(CallId(2), &sq, &y, 0, 0);
    b.call_ended(&sq, &x, 100 * S, 100 * S);
    b.call_ended(&sq, &y, 200 * S, 200 * S);
    let p = b.queue_stats(&sq, 200 * S).window;
    assert!(close(p.avg_talk_ms, 150_000.0));
    assert_eq!(p.avg_wrap_ms, None);
    assert!(close(p.aht_ms, 150_000.0)); // no wrap-up observed: talk only
    b.wrap_up_done(&x, 10 * S, 110 * S);
    b.wrap_up_done(&y, 30 * S, 230 * S);
    let p = b.queue_stats(&sq, 230 * S).window;
    assert!(close(p.avg_wrap_ms, 20_000.0));
    assert!(close(p.aht_ms, 170_000.0));
    let sx = b.agent_stats(&x);
    assert_eq!(
        sx,
        AgentStatsSnapshot {
            agent: x.clone(),
            handled: 1,
            ended: 1,
            talk_ms_total: 100 * S,
            wrap_ms_total: 10 * S,
            last_call_end: Some(100 * S),
            aht_ms: Some(110_000.0),
        }
    );
    assert_eq!(b.all_agent_stats().len(), 2);
    assert_eq!(b.agents().count(), 2);
    // Wrap-up of an agent who never had a call: agent totals only.
    b.wrap_up_done(&a("z"), 5 * S, 240 * S);
    assert_eq!(b.agent_stats(&a("z")).wrap_ms_total, 5 * S);
    assert!(close(
        b.queue_stats(&sq, 240 * S).window.avg_wrap_ms,
        20_000.0
    ));
}

#[test]
fn window_slides_and_totals_stay() {
    let mut b = StatsBook::new(StatsConfig {
        window_ms: 60 * S,
        bucket_ms: 10 * S,
        default_service_level_ms: 20 * S,
    });
    assert_eq!(b.window_ms(), 60 * S);
    let sq = q("sales");
    for i in 0..6u64 {
        b.call_joined(CallId(i), &sq, i * 10 * S); // one per bucket: 0, 10, …, 50 s
    }
    let s = b.queue_stats(&sq, 59 * S);
    assert_eq!(s.window.offered, 6);
    assert_eq!(s.window.span_ms, 59 * S);
    assert!(close(s.window.arrival_rate_per_s, 6.0 / 59.0));
    // At 60 s the bucket [0, 10) leaves the window.
    let s = b.queue_stats(&sq, 60 * S);
    assert_eq!(s.window.offered, 5);
    assert_eq!(s.window.span_ms, 50 * S);
    assert_eq!(s.total.offered, 6);
    assert_eq!(s.total.span_ms, 60 * S);
    assert!(close(s.total.arrival_rate_per_s, 0.1));
    // Long after: empty window, totals kept.
    let s = b.queue_stats(&sq, 3600 * S);
    assert_eq!(s.window.offered, 0);
    assert!(close(s.window.arrival_rate_per_s, 0.0));
    assert_eq!(s.total.offered, 6);
    // Buckets are reused: a new observation much later.
    b.call_joined(CallId(100), &sq, 3600 * S);
    assert_eq!(b.queue_stats(&sq, 3600 * S).window.offered, 1);
    assert_eq!(b.queue_stats(&sq, 3600 * S).total.offered, 7);
    // A late observation older than the window: totals only.
    b.call_abandoned(CallId(1), &sq, 0, 10 * S);
    let s = b.queue_stats(&sq, 3600 * S);
    assert_eq!(s.window.abandoned, 0);
    assert_eq!(s.total.abandoned, 1);
}

#[test]
fn config_edge_cases() {
    let b = StatsBook::new(StatsConfig {
        window_ms: 0,
        bucket_ms: 0,
        default_service_level_ms: 0,
    });
    assert_eq!(b.window_ms(), 1);
    let b = StatsBook::new(StatsConfig {
        window_ms: u64::MAX,
        bucket_ms: 1,
        default_service_level_ms: 0,
    });
    assert_eq!(b.window_ms(), MAX_BUCKETS as u64);
    let b = StatsBook::new(StatsConfig {
        window_ms: 95,
        bucket_ms: 10,
        default_service_level_ms: 0,
    });
    assert_eq!(b.window_ms(), 100);
}

#[test]
fn snapshots_serialize() {
    let mut b = StatsBook::default();
    let sq = q("sales");
    b.call_joined(CallId(1), &sq, 0);
    b.call_answered(CallId(1), &sq, &a("x"), 3 * S, 3 * S);
    let mut s = b.queue_stats(&sq, 4 * S);
    s.agents = AgentsByState {
        available: 2,
        on_call: 1,
        wrap_up: 1,
        ..AgentsByState::default()
    };
    assert_eq!(s.agents.logged_in(), 4);
    let json = serde_json::to_string(&s).unwrap();
    let back: QueueStats = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let ag = b.agent_stats(&a("x"));
    let back: AgentStatsSnapshot =
        serde_json::from_str(&serde_json::to_string(&ag).unwrap()).unwrap();
    assert_eq!(back, ag);
}

#[test]
fn estimate_fallbacks() {
    let base = EwtInputs {
        position: 1,
        agents: 3,
        arrival_rate_per_s: None,
        aht_s: None,
        observed_wait_s: None,
        observed_samples: 0,
    };
    // Nothing known.
    assert_eq!(estimate_wait_s(&base), None);
    // No agents: unknown whatever else.
    let all = EwtInputs {
        agents: 0,
        arrival_rate_per_s: Some(0.01),
        aht_s: Some(60.0),
        observed_wait_s: Some(30.0),
        observed_samples: 50,
        ..base
    };
    assert_eq!(estimate_wait_s(&all), None);
    // Position only (no λ): p·h/N.
    let pos = EwtInputs {
        position: 3,
        aht_s: Some(60.0),
        ..base
    };
    assert!(close(estimate_wait_s(&pos), 60.0));
    // Position 0 counts as 1.
    assert!(close(
        estimate_wait_s(&EwtInputs { position: 0, ..pos }),
        20.0
    ));
    // Unstable (A = 6 > N = 3): position estimate.
    let unstable = EwtInputs {
        arrival_rate_per_s: Some(0.1),
        ..pos
    };
    assert!(close(estimate_wait_s(&unstable), 60.0));
    // Stable, Erlang C above the floor: A = 2, N = 3, W = 26.67 s > 1·60/3 = 20.
    let erlang = EwtInputs {
        position: 1,
        arrival_rate_per_s: Some(1.0 / 30.0),
        aht_s: Some(60.0),
        ..base
    };
    assert!(close(estimate_wait_s(&erlang), 4.0 / 9.0 * 60.0));
    // Stable, the floor wins deeper in the queue: 5·60/3 = 100 s.
    assert!(close(
        estimate_wait_s(&EwtInputs {
            position: 5,
            ..erlang
        }),
        100.0
    ));
    // Observed only.
    let obs = EwtInputs {
        observed_wait_s: Some(42.0),
        observed_samples: 3,
        ..base
    };
    assert!(close(estimate_wait_s(&obs), 42.0));
    // Observed value with zero samples is ignored.
    assert_eq!(
        estimate_wait_s(&EwtInputs {
            observed_samples: 0,
            ..obs
        }),
        None
    );
    // Blend: 10 samples → w = 0.5.
    let blend = EwtInputs {
        observed_wait_s: Some(40.0),
        observed_samples: 10,
        ..pos
    };
    assert!(close(estimate_wait_s(&blend), 0.5 * 60.0 + 0.5 * 40.0));
    // Many samples → w capped at 0.8.
    let many = EwtInputs {
        observed_samples: 1_000_000,
        ..blend
    };
    assert!(close(estimate_wait_s(&many), 0.2 * 60.0 + 0.8 * 40.0));
    // Garbage counts as unknown.
    let garbage = EwtInputs {
        aht_s: Some(f64::NAN),
        arrival_rate_per_s: Some(f64::INFINITY),
        observed_wait_s: Some(-1.0),
        observed_samples: 5,
        ..base
    };
    assert_eq!(estimate_wait_s(&garbage), None);
}

#[test]
fn ewt_from_the_book() {
    let mut b = StatsBook::default();
    let sq = q("sales");
    let x = a("x");
    // No agents: unknown.
    assert_eq!(b.ewt(&sq, 1, 0, 0), None);
    // Calls of 60 s talk, no wrap-up, answered after 10 s.
    for i in 0..10u64 {
        let t = i * 30 * S;
        b.call_joined(CallId(i), &sq, t);
        b.call_answered(CallId(i), &sq, &x, 10 * S, t + 10 * S);
        b.call_ended(&sq, &x, 60 * S, t + 70 * S);
    }
    let now = 300 * S;
    let i = b.ewt_inputs(&sq, 2, 4, now);
    assert_eq!(i.observed_samples, 10);
    assert!(close(i.aht_s, 60.0));
    assert!(close(i.observed_wait_s, 10.0));
    assert!(close(i.arrival_rate_per_s, 10.0 / 300.0));
    let model = erlang_c_expected_wait(10.0 / 300.0, 60.0, 4)
        .unwrap()
        .max(2.0 * 60.0 / 4.0);
    let want = 0.5 * model + 0.5 * 10.0;
    assert_eq!(b.ewt(&sq, 2, 4, now), Some((want * 1000.0).round() as u64));
    // Deeper in the queue waits longer.
    assert!(b.ewt(&sq, 10, 4, now) > b.ewt(&sq, 2, 4, now));
    // More agents: shorter.
    assert!(b.ewt(&sq, 2, 8, now) < b.ewt(&sq, 2, 4, now));
    // Window empty an hour later: AHT from the totals, no observed waits, no arrivals.
    let later = now + 3600 * S;
    let i = b.ewt_inputs(&sq, 2, 4, later);
    assert_eq!(i.observed_samples, 0);
    assert!(close(i.aht_s, 60.0));
    assert_eq!(b.ewt(&sq, 2, 4, later), Some(30 * S)); // 2·60/4 s
                                                       // Unknown queue.
    assert_eq!(b.ewt(&q("nope"), 1, 4, now), None);
}
