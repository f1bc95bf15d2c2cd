//! call-engine-orchestrator's full ACD routing on its own: tiers (a backup level that
//! becomes eligible after 30 s), skills (a billing queue, a French-speaking caller),
//! caller priority (a VIP overtakes), and the explanation of every decision.
//!
//! `cargo run -p call-engine-examples --example orchestrator_acd`

use call_engine_events::{AgentId, CallId, QueueId};
use call_engine_orchestrator::*;

fn main() {
    let billing = QueueId::new("billing");
    let mut o = Orchestrator::with_config(
        OrchestratorConfig::new(
            vec![
                QueueConfig::new(billing.clone(), Strategy::LongestIdleAgent)
                    .with_required_skill("billing", 3)
                    .with_tier_rule(30_000, 2)
                    .with_skill_relax(60_000, 2),
            ],
            vec![
                AgentProfile::new(AgentId::new("ann"))
                    .with_queue(billing.clone())
                    .with_skill("billing", 5)
                    .with_skill("english", 5),
                AgentProfile::new(AgentId::new("bea"))
                    .with_queue(billing.clone())
                    .with_skill("billing", 3)
                    .with_skill("french", 4),
                AgentProfile::new(AgentId::new("cal"))
                    .with_membership(Membership::new(billing.clone()).with_level(2))
                    .with_skill("billing", 4)
                    .with_skill("french", 2),
                AgentProfile::new(AgentId::new("dan")).with_queue(billing.clone()),
            ],
        )
        .with_seed(1),
    );
    let mut step = |label: &str, input: Input, now: Millis| {
        println!("{now:>7} ms  {label}");
        for out in o.handle(input, now) {
            println!("            -> {out:?}");
        }
    };
    for (i, name) in ["ann", "bea", "cal", "dan"].iter().enumerate() {
        step(
            &format!("{name} registers"),
            Input::AgentOnline {
                agent: AgentId::new(name),
                contact: format!("sip:{name}@127.0.0.1:{}", 5070 + i).into(),
            },
            i as Millis,
        );
    }
    step(
        "caller 1 (needs French 3) joins billing",
        Input::CallQueuedWith {
            call: CallId(1),
            queue: billing.clone(),
            routing: CallRouting::new().with_skill("french", 3),
        },
        100,
    );
    step(
        "bea answers",
        Input::OfferAnswered {
            call: CallId(1),
            agent: AgentId::new("bea"),
        },
        2_000,
    );
    step(
        "caller 2 joins",
        Input::CallQueued {
            call: CallId(2),
            queue: billing.clone(),
        },
        3_000,
    );
    step(
        "caller 3, a VIP who entered 5 minutes ago elsewhere, joins",
        Input::CallQueuedWith {
            call: CallId(3),
            queue: billing.clone(),
            routing: CallRouting::new().with_priority(10).with_entered_at(0),
        },
        3_500,
    );
    step(
        "caller 4 joins: ann and bea are busy, cal is level 2",
        Input::CallQueued {
            call: CallId(4),
            queue: billing.clone(),
        },
        4_000,
    );
    step(
        "ann answers caller 2",
        Input::OfferAnswered {
            call: CallId(2),
            agent: AgentId::new("ann"),
        },
        5_000,
    );
    step(
        "caller 2 hangs up: ann takes the VIP (priority 10), ahead of caller 4",
        Input::CallEnded { call: CallId(2) },
        20_000,
    );
    step(
        "ann answers the VIP (the VIP's widening timer is cancelled)",
        Input::OfferAnswered {
            call: CallId(3),
            agent: AgentId::new("ann"),
        },
        21_000,
    );
    step(
        "30 s after caller 4 joined: the tier widens to level 2 for them",
        Input::Timer(Timer::Widen { call: CallId(4) }),
        34_000,
    );
    for call in 1..=4 {
        println!("\nwhy, for call {call}:");
        for d in o.explain(CallId(call)) {
            print!("{d}");
        }
    }
}
