//! call-engine-orchestrator on its own: three agents, a ring-all queue and a round-robin
//! queue, a few callers; prints every decision.
//!
//! `cargo run -p call-engine-examples --example orchestrator_routing`

use call_engine_events::{AgentId, CallId, QueueId};
use call_engine_orchestrator::*;

fn main() {
    let sales = QueueId::new("sales");
    let support = QueueId::new("support");
    let mut o = Orchestrator::new(
        vec![
            QueueConfig::new(sales.clone(), Strategy::RingAll),
            QueueConfig::new(support.clone(), Strategy::RoundRobin),
        ],
        vec![
            AgentConfig::new(AgentId::new("alice"), vec![sales.clone(), support.clone()]),
            AgentConfig::new(AgentId::new("bob"), vec![sales.clone()]),
            AgentConfig::new(AgentId::new("carol"), vec![support.clone()]),
        ],
    );
    let mut step = |label: &str, input: Input, now: Millis| {
        println!("{now:>6} ms  {label}");
        for out in o.handle(input, now) {
            println!("           -> {out:?}");
        }
    };
    for (i, name) in ["alice", "bob", "carol"].iter().enumerate() {
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
        "caller 1 joins sales (ring-all)",
        Input::CallQueued {
            call: CallId(1),
            queue: sales.clone(),
        },
        100,
    );
    step(
        "bob answers",
        Input::OfferAnswered {
            call: CallId(1),
            agent: AgentId::new("bob"),
        },
        2_100,
    );
    step(
        "caller 2 joins support (round-robin)",
        Input::CallQueued {
            call: CallId(2),
            queue: support.clone(),
        },
        3_000,
    );
    step(
        "alice is busy (486)",
        Input::OfferFailed {
            call: CallId(2),
            agent: AgentId::new("alice"),
            why: OfferFailure::Busy,
        },
        3_500,
    );
    step(
        "caller 2 hangs up while carol rings",
        Input::CallEnded { call: CallId(2) },
        4_000,
    );
    step(
        "caller 1 hangs up",
        Input::CallEnded { call: CallId(1) },
        60_000,
    );
}
