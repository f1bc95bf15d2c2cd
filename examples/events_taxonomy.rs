//! call-engine-events on its own: the taxonomy, its priorities and topics, and its JSON
//! form (as the event log and API will carry it).
//!
//! `cargo run -p call-engine-examples --example events_taxonomy`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::Message;
use call_engine_events::*;

fn main() {
    let ids = IdAllocator::new();
    let call = ids.call();
    let session = ids.session();
    let samples = [
        EngineEvent::Session(SessionEvent::IncomingCall {
            call,
            session,
            from: Party {
                display_name: Some("Jane Doe".into()),
                user: "+15551234".into(),
                uri: "sip:+15551234@example.test".into(),
            },
            to: "support".into(),
            offer: None,
            requested_skills: vec!["english".into()],
            requested_priority: Some(10),
        }),
        EngineEvent::Call(CallEvent::Queued {
            call,
            queue: QueueId::new("support"),
            skills: vec![],
        }),
        EngineEvent::AgentCommand(AgentCommand::Reserve {
            agent: AgentId::new("alice"),
            call,
            ttl_ms: 2_000,
        }),
        EngineEvent::MediaCommand(MediaCommand::Bridge {
            call,
            bridge: ids.bridge(),
            a: Leg::Customer,
            b: Leg::Agent,
        }),
        EngineEvent::Media(MediaEvent::Quality {
            call,
            leg: Leg::Agent,
            quality: StreamQuality {
                packets_received: 500,
                packets_sent: 500,
                packets_lost: 1,
                jitter_ms: 2.5,
                mos: 4.3,
            },
        }),
        EngineEvent::Call(CallEvent::Ended {
            call,
            disposition: Disposition::Answered,
            hung_up_by: Side::Customer,
            cause: HangupCause::Normal,
        }),
    ];
    for e in &samples {
        println!(
            "{:<9} topic {:>2}  corr {}  {}",
            e.priority().to_string(),
            e.topic().get(),
            e.correlation(),
            serde_json::to_string(e).unwrap()
        );
    }
}
