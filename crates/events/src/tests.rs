use super::*;
use call_engine_bus::{Message, Priority};

fn samples() -> Vec<EngineEvent> {
    let call = CallId(7);
    let session = SessionId(9);
    let agent = AgentId::new("alice");
    let queue = QueueId::new("support");
    let sdp = Sdp("v=0\r\n".into());
    vec![
        EngineEvent::Session(SessionEvent::IncomingCall {
            call,
            session,
            from: Party::new("1000", "sip:1000@example.test"),
            to: "support".into(),
            offer: Some(sdp.clone()),
            requested_skills: vec!["english".into()],
            requested_priority: Some(5),
        }),
        EngineEvent::Session(SessionEvent::Ringing { call, session }),
        EngineEvent::Session(SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Normal,
        }),
        EngineEvent::Session(SessionEvent::HoldChanged {
            call,
            session,
            on_hold: true,
        }),
        EngineEvent::Session(SessionEvent::AuthenticationFailed {
            username: "mallory".into(),
            source: "127.0.0.1:5070".into(),
        }),
        EngineEvent::SessionCommand(SessionCommand::Invite {
            call,
            session,
            target: "sip:alice@127.0.0.1:5070".into(),
            caller: Party::new("1000", "sip:1000@example.test"),
            sdp: sdp.clone(),
        }),
        EngineEvent::Media(MediaEvent::Quality {
            call,
            leg: Leg::Customer,
            quality: StreamQuality {
                packets_received: 10,
                packets_sent: 10,
                packets_lost: 0,
                jitter_ms: 1.5,
                mos: 4.3,
            },
        }),
        EngineEvent::MediaCommand(MediaCommand::Bridge {
            call,
            bridge: BridgeId(1),
            a: Leg::Customer,
            b: Leg::Agent,
        }),
        EngineEvent::MediaCommand(MediaCommand::Play {
            call,
            leg: Leg::Customer,
            playback: PlaybackId(3),
            source: AudioSource::BuiltinMusic,
            looped: true,
        }),
        EngineEvent::Call(CallEvent::Ended {
            call,
            disposition: Disposition::Answered,
            hung_up_by: Side::Agent,
            cause: HangupCause::Failure {
                detail: "rtp timeout".into(),
            },
        }),
        EngineEvent::Call(CallEvent::Queued {
            call,
            queue: queue.clone(),
            skills: vec![],
        }),
        EngineEvent::CallCommand(CallCommand::Transfer {
            call,
            kind: TransferKind::Attended,
            target: "bob".into(),
        }),
        EngineEvent::Agent(AgentEvent::StatusChanged {
            agent: agent.clone(),
            status: AgentStatus::OnBreak {
                reason: "lunch".into(),
            },
        }),
        EngineEvent::AgentCommand(AgentCommand::Reserve {
            agent: agent.clone(),
            call,
            ttl_ms: 2000,
        }),
        EngineEvent::Queue(QueueEvent::Snapshot {
            queue,
            stats: QueueSnapshot {
                waiting: 1,
                longest_wait_secs: 2,
                agents_available: 3,
                agents_logged_in: 4,
            },
        }),
        EngineEvent::Resource(ResourceEvent::ComponentFailed {
            component: "media".into(),
            detail: "port exhaustion".into(),
        }),
        EngineEvent::Resource(ResourceEvent::Health {
            component: "session".into(),
            health: Health::Healthy,
        }),
    ]
}

#[test]
fn priority_rule_per_category() {
    let s = samples();
    let p: Vec<Priority> = s.iter().map(|e| e.priority()).collect();
    use Priority::*;
    // setup/teardown, auth, failure recovery -> Critical
    assert_eq!(p[0], Critical, "incoming call");
    assert_eq!(p[2], Critical, "terminated");
    assert_eq!(p[4], Critical, "auth failure");
    assert_eq!(p[5], Critical, "invite");
    assert_eq!(p[9], Critical, "call ended");
    assert_eq!(p[13], Critical, "reserve");
    assert_eq!(p[15], Critical, "component failed");
    // mid-call changes, features, media parameter updates -> High
    assert_eq!(p[3], High, "hold");
    assert_eq!(p[7], High, "bridge");
    assert_eq!(p[11], High, "transfer");
    assert_eq!(p[12], High, "status change");
    // progress -> Normal
    assert_eq!(p[1], Normal, "ringing");
    assert_eq!(p[8], Normal, "play");
    assert_eq!(p[10], Normal, "queued");
    // quality, resources, health -> Low
    assert_eq!(p[6], Low, "quality");
    assert_eq!(p[14], Low, "queue snapshot");
    assert_eq!(p[16], Low, "health");
}

#[test]
fn topics_follow_domain_and_direction() {
    for e in samples() {
        let expected = match &e {
            EngineEvent::Session(_) => topics::SESSION_EVENTS,
            EngineEvent::SessionCommand(_) => topics::SESSION_COMMANDS,
            EngineEvent::Media(_) => topics::MEDIA_EVENTS,
            EngineEvent::MediaCommand(_) => topics::MEDIA_COMMANDS,
            EngineEvent::Call(_) => topics::CALL_EVENTS,
            EngineEvent::CallCommand(_) => topics::CALL_COMMANDS,
            EngineEvent::Agent(_) => topics::AGENT_EVENTS,
            EngineEvent::AgentCommand(_) => topics::AGENT_COMMANDS,
            EngineEvent::Queue(_) => topics::QUEUE_EVENTS,
            EngineEvent::Resource(_) => topics::RESOURCE_EVENTS,
        };
        assert_eq!(e.topic(), expected);
        let is_command = matches!(
            e,
            EngineEvent::SessionCommand(_)
                | EngineEvent::MediaCommand(_)
                | EngineEvent::CallCommand(_)
                | EngineEvent::AgentCommand(_)
        );
        assert_eq!(topics::ALL_COMMANDS.contains(e.topic()), is_command);
        assert_eq!(topics::ALL_EVENTS.contains(e.topic()), !is_command);
    }
}

#[test]
fn transaction_timeouts_are_critical_and_belong_to_their_call() {
    let e = EngineEvent::Session(SessionEvent::TransactionTimedOut {
        call: Some(CallId(3)),
        session: Some(SessionId(4)),
        method: "INVITE".into(),
    });
    assert_eq!(e.priority(), Priority::Critical);
    assert_eq!(e.call(), Some(CallId(3)));
    let orphan = EngineEvent::Session(SessionEvent::TransactionTimedOut {
        call: None,
        session: None,
        method: "OPTIONS".into(),
    });
    assert_eq!(orphan.call(), None);
    assert_eq!(orphan.correlation(), call_engine_bus::CorrelationId(0));
}

#[test]
fn correlation_is_the_call_or_the_agent() {
    let s = samples();
    assert_eq!(s[0].correlation(), CallId(7).into());
    assert_eq!(s[12].correlation(), AgentId::new("alice").correlation());
    assert_eq!(s[16].correlation(), call_engine_bus::CorrelationId(0));
    assert_eq!(s[13].agent(), Some(&AgentId::new("alice")));
}

#[test]
fn serde_round_trip_keeps_every_sample() {
    for e in samples() {
        let json = serde_json::to_string(&e).unwrap();
        let back: EngineEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e, "{json}");
    }
    let json = serde_json::to_string(&samples()[0]).unwrap();
    assert!(json.contains(r#""domain":"session""#), "{json}");
    assert!(json.contains(r#""type":"incoming_call""#), "{json}");
}
