//! call-engine-state on its own: one call through queue → offer → ring → answer → hold →
//! resume → hang-up, and its agent through the matching states, driven by a tiny
//! simulated driver (a virtual clock and a timer wheel). Prints both histories, the
//! actions the machines asked for, and the call's wait and talk time.
//!
//! `cargo run -p call-engine-examples --example state_call_history`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_events::{AgentId, CallId, HangupCause, QueueId, Side};
use call_engine_state::*;
use std::collections::BTreeMap;

/// The driver's side: a virtual clock and the timers the machines asked for.
#[derive(Default)]
struct Driver {
    call_timers: BTreeMap<String, (CallTimer, Millis)>,
    agent_timers: BTreeMap<String, (AgentTimer, Millis)>,
}

impl Driver {
    fn call(&mut self, call: &mut Call, input: CallInput, now: Millis) {
        let name = input.kind().as_str();
        let actions = call.handle(input, now).expect("valid call input");
        for a in actions {
            match a {
                CallAction::StartTimer { timer, at } => {
                    println!(
                        "  {now:>9}  call  {name:<20} start timer {:?} at {at}",
                        timer.kind
                    );
                    self.call_timers
                        .insert(format!("{:?}", timer.kind), (timer, at));
                }
                CallAction::CancelTimer { timer } => {
                    println!("  {now:>9}  call  {name:<20} cancel timer {:?}", timer.kind);
                    self.call_timers.remove(&format!("{:?}", timer.kind));
                }
                CallAction::Emit(notice) => {
                    let event = notice.clone().into_event(call.id());
                    match event {
                        Some(ev) => println!(
                            "  {now:>9}  call  {name:<20} publish {}",
                            serde_json::to_string(&ev).unwrap()
                        ),
                        None => println!("  {now:>9}  call  {name:<20} notice {notice:?}"),
                    }
                }
            }
        }
    }

    fn agent(&mut self, agent: &mut Agent, input: AgentInput, now: Millis) {
        let name = input.kind().as_str();
        let actions = agent.handle(input, now).expect("valid agent input");
        for a in actions {
            match a {
                AgentAction::StartTimer { timer, at } => {
                    println!(
                        "  {now:>9}  agent {name:<20} start timer {:?} at {at}",
                        timer.kind
                    );
                    self.agent_timers
                        .insert(format!("{:?}", timer.kind), (timer, at));
                }
                AgentAction::CancelTimer { timer } => {
                    println!("  {now:>9}  agent {name:<20} cancel timer {:?}", timer.kind);
                    self.agent_timers.remove(&format!("{:?}", timer.kind));
                }
                AgentAction::Emit(notice) => {
                    println!("  {now:>9}  agent {name:<20} notice {notice:?}")
                }
            }
        }
    }

    /// Fires every agent timer due by `now`.
    fn fire_agent_timers(&mut self, agent: &mut Agent, now: Millis) {
        let due: Vec<AgentTimer> = self
            .agent_timers
            .values()
            .filter(|(_, at)| *at <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            self.agent_timers.remove(&format!("{:?}", t.kind));
            self.agent(agent, AgentInput::Timer(t), now);
        }
    }
}

fn main() {
    let call_id = CallId(1);
    let alice = AgentId::new("alice");
    let mut d = Driver::default();
    let ms = Millis;

    let mut agent = Agent::new(alice.clone(), AgentConfig::default(), ms(0));
    let mut call = Call::new(
        call_id,
        CallConfig {
            max_wait_ms: Some(300_000),
            ..CallConfig::default()
        },
        ms(1_000),
    );

    println!("actions:");
    d.agent(&mut agent, AgentInput::Registered, ms(0));
    d.agent(&mut agent, AgentInput::Login, ms(500));

    // The customer arrives and waits.
    d.call(
        &mut call,
        CallInput::Enqueue {
            queue: QueueId::new("support"),
        },
        ms(1_200),
    );
    // Routing picks alice: reserve her, then offer the call.
    assert!(agent.can_take_call(ms(9_000)));
    d.agent(
        &mut agent,
        AgentInput::Reserve {
            call: call_id,
            ttl_ms: 20_000,
            direct: false,
        },
        ms(9_000),
    );
    d.call(
        &mut call,
        CallInput::Offer {
            agent: alice.clone(),
        },
        ms(9_000),
    );
    // 180 Ringing, then 200 OK.
    d.agent(&mut agent, AgentInput::Ringing { call: call_id }, ms(9_150));
    d.call(&mut call, CallInput::AgentRinging, ms(9_150));
    d.agent(
        &mut agent,
        AgentInput::Answered { call: call_id },
        ms(13_400),
    );
    d.call(&mut call, CallInput::AgentAnswered, ms(13_400));
    // Hold and resume.
    d.call(&mut call, CallInput::Hold, ms(60_000));
    d.call(&mut call, CallInput::Resume, ms(95_000));
    // The customer hangs up; the driver tears down the agent leg.
    d.call(
        &mut call,
        CallInput::LegEnded {
            side: Side::Customer,
            cause: HangupCause::Normal,
        },
        ms(193_400),
    );
    d.agent(
        &mut agent,
        AgentInput::CallEnded { call: call_id },
        ms(193_400),
    );
    // The agent's leg, the last one, is gone: the call is over.
    d.call(
        &mut call,
        CallInput::LegEnded {
            side: Side::Agent,
            cause: HangupCause::Normal,
        },
        ms(193_450),
    );
    // Wrap-up runs out.
    let wrap_end = agent.wrap_up_until().expect("in wrap-up");
    d.fire_agent_timers(&mut agent, wrap_end);
    assert!(agent.can_take_call(wrap_end));
    assert!(d.call_timers.is_empty() && d.agent_timers.is_empty());

    println!("\ncall {} history:", call.id());
    println!("  {:>9}  {:<20} {:<14} -> to", "at", "input", "from");
    for t in call.history() {
        println!(
            "  {:>9}  {:<20} {:<14} -> {}",
            t.at,
            t.input.as_str(),
            t.from.name(),
            serde_json::to_string(&t.to).unwrap()
        );
    }

    println!("\nagent {} history:", agent.id());
    println!(
        "  {:>9}  {:<20} {:<22} -> status / activity / calls",
        "at", "input", "from"
    );
    for t in agent.history() {
        println!(
            "  {:>9}  {:<20} {:<22} -> {:?} / {:?} / {}",
            t.at,
            t.input.as_str(),
            format!("{:?}", t.from.activity),
            t.to.status,
            t.to.activity,
            t.to.active_calls
        );
    }

    let secs = |v: Option<u64>| v.map_or(0.0, |ms| ms as f64 / 1000.0);
    println!(
        "\ncall ended: {:?}; waited {:.1} s, talked {:.1} s (hold included)",
        call.state(),
        secs(call.wait_ms()),
        secs(call.talk_ms())
    );
    call.check_invariants().unwrap();
    agent.check_invariants().unwrap();
}
