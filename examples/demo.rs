//! The foundation working together: one customer call travels as typed events on the
//! bus; a call driver feeds them into the pure call state machine and publishes what the
//! machine reports, each event caused by the one before. At the end it prints the call's
//! state history and the causal chain of events the bus recorded for that call.
//!
//! `cargo run -p call-engine-examples --example demo`
//!
//! (The SIP and RTP sides are scripted here; `call-engine serve` replaces the script with
//! real phones.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::{EventBus, EventBusConfig, EventId, Filter, Message, TopicSet};
use call_engine_events::*;
use call_engine_state::{Call, CallAction, CallConfig, CallInput, Millis};

/// Bus time in milliseconds: the driver's clock for the pure machine.
fn millis(bus: &EventBus<EngineEvent>) -> Millis {
    Millis(bus.now().as_nanos() / 1_000_000)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep a history ring so the call's causal chain can be printed at the end.
    let bus = EventBus::<EngineEvent>::new(EventBusConfig {
        history_capacity: 1024,
        ..Default::default()
    })?;
    let ids = IdAllocator::new();
    let call_id = ids.call();
    let customer = ids.session();
    let agent_leg = ids.session();
    let alice = AgentId::new("alice");

    // The call driver listens to session events and call commands.
    let mut driver_rx = bus.subscribe(Filter::topics(TopicSet::of(&[
        topics::SESSION_EVENTS,
        topics::CALL_COMMANDS,
    ])));
    let session = bus.publisher("session");
    let orchestrator = bus.publisher("orchestrator");
    let driver = bus.publisher("call-driver");
    let corr = call_id.into();

    // The script: what the SIP side and the policy would publish, in order.
    let script: Vec<(&call_engine_bus::Publisher<EngineEvent>, EngineEvent)> = vec![
        (
            &session,
            EngineEvent::Session(SessionEvent::IncomingCall {
                call: call_id,
                session: customer,
                from: Party {
                    display_name: Some("Jane Doe".into()),
                    user: "+15551234".into(),
                    uri: "sip:+15551234@example.test".into(),
                },
                to: "support".into(),
                offer: None,
                requested_skills: vec![],
                requested_priority: None,
            }),
        ),
        (
            // The caller ACKed our 200 OK: the call joins its queue.
            &session,
            EngineEvent::Session(SessionEvent::Confirmed {
                call: call_id,
                session: customer,
                answer: None,
            }),
        ),
        (
            &orchestrator,
            EngineEvent::CallCommand(CallCommand::OfferTo {
                call: call_id,
                agent: alice.clone(),
                contact: "sip:alice@127.0.0.1:5070".into(),
                ring_timeout_secs: 15,
            }),
        ),
        (
            &session,
            EngineEvent::Session(SessionEvent::Ringing {
                call: call_id,
                session: agent_leg,
            }),
        ),
        (
            &session,
            EngineEvent::Session(SessionEvent::Answered {
                call: call_id,
                session: agent_leg,
                sdp: None,
            }),
        ),
        (
            &session,
            EngineEvent::Session(SessionEvent::HoldChanged {
                call: call_id,
                session: agent_leg,
                on_hold: true,
            }),
        ),
        (
            &session,
            EngineEvent::Session(SessionEvent::HoldChanged {
                call: call_id,
                session: agent_leg,
                on_hold: false,
            }),
        ),
        (
            &session,
            EngineEvent::Session(SessionEvent::Terminated {
                call: call_id,
                session: customer,
                cause: HangupCause::Normal,
            }),
        ),
    ];

    let mut call: Option<Call> = None;
    // The dialed queue, joined once the caller's ACK confirms the call.
    let mut queue: Option<QueueId> = None;
    let mut last: Option<EventId> = None;
    for (publisher, event) in script {
        // A little time passes between steps, so wait and talk time are visible.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        publisher.publish(corr, last, event).await?;
        // The driver handles what arrived.
        let env = driver_rx.recv().await?;
        let now = millis(&bus);
        let inputs: Vec<CallInput> = match &env.payload {
            EngineEvent::Session(SessionEvent::IncomingCall { to, .. }) => {
                call = Some(Call::new(call_id, CallConfig::default(), now));
                queue = Some(QueueId::new(to));
                vec![]
            }
            EngineEvent::Session(SessionEvent::Confirmed { .. }) => queue
                .take()
                .map(|queue| CallInput::Enqueue { queue })
                .into_iter()
                .collect(),
            EngineEvent::CallCommand(CallCommand::OfferTo { agent, .. }) => {
                vec![CallInput::Offer {
                    agent: agent.clone(),
                }]
            }
            EngineEvent::Session(SessionEvent::Ringing { .. }) => vec![CallInput::AgentRinging],
            EngineEvent::Session(SessionEvent::Answered { .. }) => vec![CallInput::AgentAnswered],
            EngineEvent::Session(SessionEvent::HoldChanged { on_hold, .. }) => {
                vec![if *on_hold {
                    CallInput::Hold
                } else {
                    CallInput::Resume
                }]
            }
            EngineEvent::Session(SessionEvent::Terminated { session, cause, .. }) => {
                let side = if *session == customer {
                    Side::Customer
                } else {
                    Side::Agent
                };
                let other = if side == Side::Customer {
                    Side::Agent
                } else {
                    Side::Customer
                };
                // The engine hangs up the other leg; when it is gone too (the last leg
                // the machine knows of), the call is over.
                vec![
                    CallInput::LegEnded {
                        side,
                        cause: cause.clone(),
                    },
                    CallInput::LegEnded {
                        side: other,
                        cause: HangupCause::Normal,
                    },
                ]
            }
            _ => vec![],
        };
        let Some(c) = call.as_mut() else { continue };
        let mut cause = env.id;
        for input in inputs {
            for action in c.handle(input, now)? {
                if let CallAction::Emit(notice) = action {
                    if let Some(ev) = notice.into_event(call_id) {
                        cause = driver
                            .publish(corr, Some(cause), EngineEvent::Call(ev))
                            .await?;
                    }
                }
            }
        }
        last = Some(cause);
    }

    let Some(call) = call else {
        return Err("the call was never created".into());
    };
    println!("State history of {call_id}:");
    for t in call.history() {
        println!(
            "  {:>10}  {:<14} --{:<16}--> {}",
            t.at.to_string(),
            t.from.name(),
            t.input.as_str(),
            t.to.name()
        );
    }
    println!(
        "  final: {:?}; waited {:.3} s, talked {:.3} s",
        call.state(),
        call.wait_ms().unwrap_or(0) as f64 / 1000.0,
        call.talk_ms().unwrap_or(0) as f64 / 1000.0
    );

    println!("\nEvents of {call_id} on the bus (id <- cause, priority, source, event):");
    for e in bus.history_of(corr) {
        let json = serde_json::to_value(&e.payload)?;
        println!(
            "  {} <- {:<22} {:<8} {:<13} {}.{}",
            e.id,
            e.causation
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            e.payload.priority().to_string(),
            e.source,
            json["domain"].as_str().unwrap_or("?"),
            json["message"]["type"].as_str().unwrap_or("?")
        );
    }
    let m = bus.metrics();
    let t = m.total();
    println!(
        "\nBus: {} published, {} delivered, {} shed, {} unrouted; p50 publish->receive {} ns",
        t.published, t.delivered, t.shed, m.unrouted, m.latency.p50_ns
    );
    Ok(())
}
