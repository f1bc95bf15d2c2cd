//! call-engine-orchestrator's live statistics, estimated wait time and caller rules, on
//! their own: a simulated hour of a small queue fed into the `StatsBook`, then the
//! service level, ASA and the estimated wait for callers at several positions (Erlang C
//! blended with observed waits); caller rules (VIP, blacklist), an `X-Skills` header and
//! business hours.
//!
//! `cargo run -p call-engine-examples --example orchestrator_stats`

use call_engine_events::{AgentId, CallId, QueueId};
use call_engine_orchestrator::*;

fn main() {
    let q = QueueId::new("support");
    let mut book = StatsBook::default();
    book.set_service_level_threshold(&q, 20_000);

    // One call every 30 s for an hour; waits cycle 5..65 s; every 7th caller gives up;
    // 4 minutes of talk and 30 s of wrap-up for the others.
    let agents = ["ann", "bea", "cal"].map(AgentId::new);
    for i in 0..120u64 {
        let t = i * 30_000;
        let call = CallId(i + 1);
        let wait = 5_000 + (i % 7) * 10_000;
        book.call_joined(call, &q, t);
        if i % 7 == 6 {
            book.call_abandoned(call, &q, wait, t + wait);
            continue;
        }
        let agent = &agents[(i % 3) as usize];
        book.call_answered(call, &q, agent, wait, t + wait);
        book.call_ended(&q, agent, 240_000, t + wait + 240_000);
        book.wrap_up_done(agent, 30_000, t + wait + 270_000);
    }
    let now = 120 * 30_000 + 300_000;
    let s = book.queue_stats(&q, now);
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.0}%", v * 100.0));
    let secs = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.0} s", v / 1000.0));
    println!("queue {} (last 15 minutes):", s.queue);
    let w = &s.window;
    println!(
        "  offered {}, answered {}, abandoned {} ({})",
        w.offered,
        w.answered,
        w.abandoned,
        pct(w.abandon_rate)
    );
    println!(
        "  service level within 20 s: {} of answered, {} counting abandons, {} without short abandons",
        pct(w.service_level),
        pct(w.service_level_with_abandons),
        pct(w.service_level_excluding_short_abandons)
    );
    println!(
        "  ASA {}, AHT {}, arrival rate {:.1} calls/min",
        secs(w.asa_ms),
        secs(w.aht_ms),
        w.arrival_rate_per_s.unwrap_or(0.0) * 60.0
    );
    for agents in [10, 12, 15] {
        let line: Vec<String> = [1, 3, 10]
            .iter()
            .map(|p| {
                let e = book.ewt(&q, *p, agents, now);
                format!(
                    "position {p}: {}",
                    e.map_or("unknown".into(), |ms| format!(
                        "{:.0} s",
                        ms as f64 / 1000.0
                    ))
                )
            })
            .collect();
        println!("  EWT with {agents} agents logged in: {}", line.join(", "));
    }
    println!(
        "  Erlang C: 10 Erlang offered to 12 agents → P(wait) = {:.3}",
        erlang_c(10.0, 12).unwrap_or(f64::NAN)
    );

    // Caller rules: VIPs first, a blocked prefix, skills by number.
    let rules = CallerRules::new(vec![
        CallerRule::new(CallerPattern::parse("+4420*").unwrap_or_else(|_| CallerPattern::any()))
            .with_priority(10)
            .with_skill("english", 3),
        CallerRule::new(CallerPattern::parse("+1900*").unwrap_or_else(|_| CallerPattern::any()))
            .blocking(),
    ]);
    for number in ["+44 20 7946 0000", "+19005550100", "+33142685300"] {
        let v = rules.evaluate(number);
        println!(
            "caller {number}: blocked {}, priority {:?}, skills {:?}",
            v.blocked, v.priority, v.skills
        );
    }
    println!(
        "X-Skills: english=5, billing → {:?}",
        parse_skills_header("english=5, billing")
    );
    println!(
        "X-Skills: english=500 → {:?}",
        parse_skills_header("english=500").map_err(|e| e.to_string())
    );

    // Business hours: weekdays 08:00-18:00 at UTC+1, closed on Christmas.
    let hours = BusinessHours::parse("mon-fri 08:00-18:00")
        .and_then(|h| h.with_utc_offset(60))
        .and_then(|h| h.with_closed_date("2026-12-25"));
    if let Ok(hours) = hours {
        // Saturday 2026-11-21 12:00 UTC, Monday 2026-11-23 09:00 local, Christmas noon.
        for (label, t) in [
            ("Saturday noon", 1_795_262_400_000u64),
            ("Monday 09:00", 1_795_420_800_000),
            ("Christmas noon", 1_798_200_000_000),
        ] {
            println!(
                "{label}: {}, next change at unix ms {:?}",
                if hours.is_open(t) { "open" } else { "closed" },
                hours.next_change(t)
            );
        }
    }
}
