use super::*;
use call_engine_bus::{Message, Priority};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// One value of every variant of every command and event enum (two for
/// `SessionEvent::DialogProbed`, whose priority depends on `alive`).
/// [`every_variant_has_a_sample`] checks the list against the variants serde derives from
/// the enums, so a new variant without a sample fails the tests; [`rule`] matches every
/// variant without a `_` arm, so a new variant without a classification does not compile.
fn every_variant() -> Vec<EngineEvent> {
    let call = CallId(7);
    let session = SessionId(9);
    let agent = AgentId::new("alice");
    let queue = QueueId::new("support");
    let sdp = Sdp("v=0\r\n".into());
    let caller = Party::new("1000", "sip:1000@example.test");
    let quality = StreamQuality {
        packets_received: 10,
        packets_sent: 10,
        packets_lost: 0,
        jitter_ms: 1.5,
        mos: 4.3,
    };
    use EngineEvent as E;
    vec![
        // SessionEvent
        E::Session(SessionEvent::IncomingCall {
            call,
            session,
            from: caller.clone(),
            to: "support".into(),
            offer: Some(sdp.clone()),
            requested_skills: vec!["english".into()],
            requested_priority: Some(5),
        }),
        E::Session(SessionEvent::Ringing { call, session }),
        E::Session(SessionEvent::Answered {
            call,
            session,
            sdp: Some(sdp.clone()),
        }),
        E::Session(SessionEvent::Confirmed {
            call,
            session,
            answer: Some(sdp.clone()),
        }),
        E::Session(SessionEvent::Rejected {
            call,
            session,
            cause: HangupCause::Busy,
        }),
        E::Session(SessionEvent::Terminated {
            call,
            session,
            cause: HangupCause::Normal,
        }),
        E::Session(SessionEvent::HoldChanged {
            call,
            session,
            on_hold: true,
        }),
        E::Session(SessionEvent::TransferRequested {
            call,
            session,
            target: "sip:bob@example.test".into(),
        }),
        E::Session(SessionEvent::DtmfReceived {
            call,
            session,
            digit: '5',
        }),
        E::Session(SessionEvent::Registered {
            agent: agent.clone(),
            contact: "sip:alice@127.0.0.1:5070".into(),
            expires_secs: 3600,
        }),
        E::Session(SessionEvent::Unregistered {
            agent: agent.clone(),
            contact: "sip:alice@127.0.0.1:5070".into(),
            expired: true,
        }),
        E::Session(SessionEvent::AuthenticationFailed {
            username: "mallory".into(),
            source: "127.0.0.1:5070".into(),
        }),
        E::Session(SessionEvent::TransactionTimedOut {
            call: Some(call),
            session: Some(session),
            method: "INVITE".into(),
        }),
        E::Session(SessionEvent::DialogProbed {
            call,
            session,
            alive: true,
            status: Some(200),
        }),
        E::Session(SessionEvent::DialogProbed {
            call,
            session,
            alive: false,
            status: Some(481),
        }),
        E::Session(SessionEvent::ContactProbed {
            agent: agent.clone(),
            contact: "sip:alice@127.0.0.1:5070".into(),
            reachable: false,
        }),
        // SessionCommand
        E::SessionCommand(SessionCommand::Answer {
            call,
            session,
            sdp: sdp.clone(),
        }),
        E::SessionCommand(SessionCommand::Reject {
            call,
            session,
            status: 503,
            retry_after_secs: Some(30),
        }),
        E::SessionCommand(SessionCommand::Invite {
            call,
            session,
            target: "sip:alice@127.0.0.1:5070".into(),
            caller: caller.clone(),
            sdp: sdp.clone(),
        }),
        E::SessionCommand(SessionCommand::Cancel { call, session }),
        E::SessionCommand(SessionCommand::Hangup { call, session }),
        E::SessionCommand(SessionCommand::SetHold {
            call,
            session,
            hold: false,
        }),
        E::SessionCommand(SessionCommand::Refer {
            call,
            session,
            target: "sip:bob@example.test".into(),
        }),
        E::SessionCommand(SessionCommand::ProbeDialog { call, session }),
        E::SessionCommand(SessionCommand::Probe {
            agent: agent.clone(),
            contact: "sip:alice@127.0.0.1:5070".into(),
        }),
        // MediaEvent
        E::Media(MediaEvent::EndpointReady {
            call,
            leg: Leg::Customer,
            endpoint: EndpointId(11),
            local_sdp: sdp.clone(),
            codec: Some(Codec::Pcma),
        }),
        E::Media(MediaEvent::EndpointFailed {
            call,
            leg: Leg::Agent,
            reason: "no common codec".into(),
        }),
        E::Media(MediaEvent::Bridged {
            call,
            bridge: BridgeId(1),
            transcoding: true,
        }),
        E::Media(MediaEvent::Unbridged {
            call,
            bridge: BridgeId(1),
        }),
        E::Media(MediaEvent::PlaybackStarted {
            call,
            playback: PlaybackId(3),
        }),
        E::Media(MediaEvent::PlaybackFinished {
            call,
            playback: PlaybackId(3),
        }),
        E::Media(MediaEvent::DtmfDetected {
            call,
            leg: Leg::Customer,
            digit: '#',
        }),
        E::Media(MediaEvent::MediaTimeout {
            call,
            leg: Leg::Customer,
        }),
        E::Media(MediaEvent::Released {
            call,
            leg: Leg::Consult,
        }),
        E::Media(MediaEvent::Quality {
            call,
            leg: Leg::Customer,
            quality,
        }),
        // MediaCommand
        E::MediaCommand(MediaCommand::Allocate {
            call,
            leg: Leg::Agent,
            remote_offer: None,
        }),
        E::MediaCommand(MediaCommand::SetRemote {
            call,
            leg: Leg::Agent,
            sdp: sdp.clone(),
        }),
        E::MediaCommand(MediaCommand::Bridge {
            call,
            bridge: BridgeId(1),
            a: Leg::Customer,
            b: Leg::Agent,
        }),
        E::MediaCommand(MediaCommand::Unbridge {
            call,
            bridge: BridgeId(1),
        }),
        E::MediaCommand(MediaCommand::Play {
            call,
            leg: Leg::Customer,
            playback: PlaybackId(3),
            source: AudioSource::Prompt {
                name: "you-are-caller".into(),
            },
            looped: false,
        }),
        E::MediaCommand(MediaCommand::StopPlayback {
            call,
            playback: PlaybackId(3),
        }),
        E::MediaCommand(MediaCommand::Release {
            call,
            leg: Leg::Supervisor,
        }),
        // CallEvent
        E::Call(CallEvent::Created {
            call,
            caller: caller.clone(),
            dialed: "support".into(),
        }),
        E::Call(CallEvent::Queued {
            call,
            queue: queue.clone(),
            skills: vec!["english".into()],
        }),
        E::Call(CallEvent::Offered {
            call,
            agent: agent.clone(),
        }),
        E::Call(CallEvent::AgentRinging {
            call,
            agent: agent.clone(),
        }),
        E::Call(CallEvent::OfferFailed {
            call,
            agent: agent.clone(),
            cause: HangupCause::NoAnswer,
        }),
        E::Call(CallEvent::Connected {
            call,
            agent: agent.clone(),
        }),
        E::Call(CallEvent::HoldChanged {
            call,
            on_hold: false,
        }),
        E::Call(CallEvent::TransferStarted {
            call,
            kind: TransferKind::Blind,
            target: "bob".into(),
        }),
        E::Call(CallEvent::TransferCompleted {
            call,
            agent: Some(AgentId::new("bob")),
        }),
        E::Call(CallEvent::TransferFailed {
            call,
            cause: HangupCause::Status { code: 480 },
        }),
        E::Call(CallEvent::TransferConsulting { call }),
        E::Call(CallEvent::ConferenceStarted {
            call,
            participants: 1,
        }),
        E::Call(CallEvent::ConferenceEnded { call }),
        E::Call(CallEvent::Ended {
            call,
            disposition: Disposition::Answered,
            hung_up_by: Side::Agent,
            cause: HangupCause::Failure {
                detail: "rtp timeout".into(),
            },
        }),
        // CallCommand
        E::CallCommand(CallCommand::Enqueue {
            call,
            queue: queue.clone(),
        }),
        E::CallCommand(CallCommand::OfferTo {
            call,
            agent: agent.clone(),
            contact: "sip:alice@127.0.0.1:5070".into(),
            ring_timeout_secs: 15,
        }),
        E::CallCommand(CallCommand::Hangup {
            call,
            cause: HangupCause::Shutdown,
        }),
        E::CallCommand(CallCommand::SetHold { call, hold: true }),
        E::CallCommand(CallCommand::Transfer {
            call,
            kind: TransferKind::Attended,
            target: "bob".into(),
        }),
        E::CallCommand(CallCommand::StartConference {
            call,
            targets: vec!["bob".into(), "sip:expert@example.test".into()],
        }),
        E::CallCommand(CallCommand::AddToConference {
            call,
            target: "carol".into(),
        }),
        E::CallCommand(CallCommand::RemoveFromConference {
            call,
            target: "bob".into(),
        }),
        E::CallCommand(CallCommand::EndConference { call }),
        // AgentEvent
        E::Agent(AgentEvent::StatusChanged {
            agent: agent.clone(),
            status: AgentStatus::OnBreak {
                reason: "lunch".into(),
            },
        }),
        E::Agent(AgentEvent::ActivityChanged {
            agent: agent.clone(),
            activity: AgentActivity::WrapUp,
            active_calls: 0,
        }),
        E::Agent(AgentEvent::Reserved {
            agent: agent.clone(),
            call,
        }),
        E::Agent(AgentEvent::ReservationRejected {
            agent: agent.clone(),
            call,
            reason: RejectReason::AtCapacity,
        }),
        E::Agent(AgentEvent::QueueMembership {
            agent: agent.clone(),
            queue: queue.clone(),
            member: true,
            terms: Some(MembershipTerms {
                level: 2,
                position: 3,
                penalty: 4,
            }),
        }),
        E::Agent(AgentEvent::QueueMembership {
            agent: agent.clone(),
            queue: queue.clone(),
            member: false,
            terms: None,
        }),
        E::Agent(AgentEvent::Repaired {
            agent: agent.clone(),
            detail: "stale reservation".into(),
        }),
        // AgentCommand
        E::AgentCommand(AgentCommand::Reserve {
            agent: agent.clone(),
            call,
            ttl_ms: 2000,
        }),
        E::AgentCommand(AgentCommand::Release {
            agent: agent.clone(),
            call,
        }),
        E::AgentCommand(AgentCommand::SetStatus {
            agent,
            status: AgentStatus::AvailableOnDemand,
        }),
        // QueueEvent
        E::Queue(QueueEvent::CallerJoined {
            queue: queue.clone(),
            call,
            position: 1,
        }),
        E::Queue(QueueEvent::CallerLeft {
            queue: queue.clone(),
            call,
            reason: LeaveReason::Abandoned,
            waited_ms: 12_000,
        }),
        E::Queue(QueueEvent::CallerRefused {
            queue: queue.clone(),
            call,
            status: 486,
        }),
        E::Queue(QueueEvent::PositionChanged {
            queue: queue.clone(),
            call,
            position: 2,
        }),
        E::Queue(QueueEvent::Snapshot {
            queue,
            stats: QueueSnapshot {
                waiting: 1,
                longest_wait_secs: 2,
                agents_available: 3,
                agents_logged_in: 4,
            },
        }),
        // ResourceEvent
        E::Resource(ResourceEvent::Health {
            component: "session".into(),
            health: Health::Degraded,
        }),
        E::Resource(ResourceEvent::Usage {
            component: "media".into(),
            resource: "rtp_ports".into(),
            used: 10,
            limit: 100,
        }),
        E::Resource(ResourceEvent::ComponentFailed {
            component: "media".into(),
            detail: "port exhaustion".into(),
        }),
        E::Resource(ResourceEvent::Overloaded {
            component: "engine".into(),
            retry_after_secs: 30,
        }),
    ]
}

/// The categories of the priority rule (the table of the crate documentation), to which
/// [`rule`] assigns every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Call setup and teardown: a call, a leg, an endpoint or a reservation starting or
    /// ending.
    SetupTeardown,
    /// Failure detection and recovery.
    FailureRecovery,
    /// Authentication and registration.
    Auth,
    /// Mid-call changes: hold, who hears whom.
    MidCallChange,
    /// Call-center features: transfer, conference, DTMF input.
    Feature,
    /// Media parameter updates (SDP).
    MediaParameters,
    /// Progress of a call (ringing, queue position, prompts).
    Progress,
    /// Quality metrics (jitter, loss, MOS).
    QualityMetrics,
    /// Resource reports and statistics.
    ResourceReport,
    /// Health reports and routine probes.
    Health,
    /// The documented exception: a signal admission control or routing acts on at once
    /// (overload, agent availability). High, because the Low lane may shed.
    ControlSignal,
}

impl Rule {
    /// The rule, as the crate documentation states it.
    fn priority(self) -> Priority {
        use Rule::*;
        match self {
            SetupTeardown | FailureRecovery | Auth => Priority::Critical,
            MidCallChange | Feature | MediaParameters | ControlSignal => Priority::High,
            Progress => Priority::Normal,
            QualityMetrics | ResourceReport | Health => Priority::Low,
        }
    }
}

/// The expected category of every variant, written from the rule (not from the
/// `priority` functions). No `_` arm: a new variant does not compile until classified.
fn rule(e: &EngineEvent) -> Rule {
    use Rule::*;
    match e {
        EngineEvent::Session(e) => match e {
            SessionEvent::IncomingCall { .. } => SetupTeardown,
            SessionEvent::Ringing { .. } => Progress,
            SessionEvent::Answered { .. } => SetupTeardown,
            SessionEvent::Confirmed { .. } => SetupTeardown,
            SessionEvent::Rejected { .. } => SetupTeardown,
            SessionEvent::Terminated { .. } => SetupTeardown,
            SessionEvent::HoldChanged { .. } => MidCallChange,
            SessionEvent::TransferRequested { .. } => Feature,
            SessionEvent::DtmfReceived { .. } => Feature,
            SessionEvent::Registered { .. } => Auth,
            SessionEvent::Unregistered { .. } => Auth,
            SessionEvent::AuthenticationFailed { .. } => Auth,
            SessionEvent::TransactionTimedOut { .. } => FailureRecovery,
            // A dead dialog starts recovery (its Terminated follows); a live one is a
            // routine health answer.
            SessionEvent::DialogProbed { alive: false, .. } => FailureRecovery,
            SessionEvent::DialogProbed { alive: true, .. } => Health,
            SessionEvent::ContactProbed { .. } => Health,
        },
        EngineEvent::SessionCommand(c) => match c {
            SessionCommand::Answer { .. } => SetupTeardown,
            SessionCommand::Reject { .. } => SetupTeardown,
            SessionCommand::Invite { .. } => SetupTeardown,
            SessionCommand::Cancel { .. } => SetupTeardown,
            SessionCommand::Hangup { .. } => SetupTeardown,
            SessionCommand::SetHold { .. } => MidCallChange,
            SessionCommand::Refer { .. } => Feature,
            SessionCommand::ProbeDialog { .. } => Health,
            SessionCommand::Probe { .. } => Health,
        },
        EngineEvent::Media(e) => match e {
            MediaEvent::EndpointReady { .. } => SetupTeardown,
            MediaEvent::EndpointFailed { .. } => FailureRecovery,
            MediaEvent::Bridged { .. } => MidCallChange,
            MediaEvent::Unbridged { .. } => MidCallChange,
            MediaEvent::PlaybackStarted { .. } => Progress,
            MediaEvent::PlaybackFinished { .. } => Progress,
            MediaEvent::DtmfDetected { .. } => Feature,
            MediaEvent::MediaTimeout { .. } => FailureRecovery,
            MediaEvent::Released { .. } => SetupTeardown,
            MediaEvent::Quality { .. } => QualityMetrics,
        },
        EngineEvent::MediaCommand(c) => match c {
            MediaCommand::Allocate { .. } => SetupTeardown,
            MediaCommand::SetRemote { .. } => MediaParameters,
            MediaCommand::Bridge { .. } => MidCallChange,
            MediaCommand::Unbridge { .. } => MidCallChange,
            MediaCommand::Play { .. } => Progress,
            MediaCommand::StopPlayback { .. } => Progress,
            MediaCommand::Release { .. } => SetupTeardown,
        },
        EngineEvent::Call(e) => match e {
            CallEvent::Created { .. } => SetupTeardown,
            CallEvent::Queued { .. } => Progress,
            CallEvent::Offered { .. } => Progress,
            CallEvent::AgentRinging { .. } => Progress,
            // The call must be routed again.
            CallEvent::OfferFailed { .. } => FailureRecovery,
            CallEvent::Connected { .. } => SetupTeardown,
            CallEvent::HoldChanged { .. } => MidCallChange,
            CallEvent::TransferStarted { .. } => Feature,
            CallEvent::TransferCompleted { .. } => Feature,
            CallEvent::TransferFailed { .. } => Feature,
            CallEvent::TransferConsulting { .. } => Feature,
            CallEvent::ConferenceStarted { .. } => Feature,
            CallEvent::ConferenceEnded { .. } => Feature,
            CallEvent::Ended { .. } => SetupTeardown,
        },
        EngineEvent::CallCommand(c) => match c {
            CallCommand::Enqueue { .. } => SetupTeardown,
            CallCommand::OfferTo { .. } => SetupTeardown,
            CallCommand::Hangup { .. } => SetupTeardown,
            CallCommand::SetHold { .. } => MidCallChange,
            CallCommand::Transfer { .. } => Feature,
            CallCommand::StartConference { .. } => Feature,
            CallCommand::AddToConference { .. } => Feature,
            CallCommand::RemoveFromConference { .. } => Feature,
            CallCommand::EndConference { .. } => Feature,
        },
        EngineEvent::Agent(e) => match e {
            AgentEvent::StatusChanged { .. } => ControlSignal,
            AgentEvent::ActivityChanged { .. } => ControlSignal,
            AgentEvent::Reserved { .. } => SetupTeardown,
            // The router must pick another agent.
            AgentEvent::ReservationRejected { .. } => SetupTeardown,
            AgentEvent::QueueMembership { .. } => ControlSignal,
            AgentEvent::Repaired { .. } => FailureRecovery,
        },
        EngineEvent::AgentCommand(c) => match c {
            AgentCommand::Reserve { .. } => SetupTeardown,
            AgentCommand::Release { .. } => SetupTeardown,
            AgentCommand::SetStatus { .. } => ControlSignal,
        },
        EngineEvent::Queue(e) => match e {
            QueueEvent::CallerJoined { .. } => Progress,
            QueueEvent::CallerLeft { .. } => Progress,
            QueueEvent::CallerRefused { .. } => Progress,
            QueueEvent::PositionChanged { .. } => Progress,
            QueueEvent::Snapshot { .. } => ResourceReport,
        },
        EngineEvent::Resource(e) => match e {
            ResourceEvent::Health { .. } => Health,
            ResourceEvent::Usage { .. } => ResourceReport,
            ResourceEvent::ComponentFailed { .. } => FailureRecovery,
            ResourceEvent::Overloaded { .. } => ControlSignal,
        },
    }
}

/// `domain.type` of a message, from its JSON form.
fn kind(e: &EngineEvent) -> String {
    let v = serde_json::to_value(e).unwrap();
    format!(
        "{}.{}",
        v["domain"].as_str().unwrap(),
        v["message"]["type"].as_str().unwrap()
    )
}

/// The variant names serde derived for `T`, read from its error for an unknown `tag`
/// value ("unknown variant `…`, expected one of `a`, `b`, …"): they come from the enum
/// itself, not from a list kept by hand.
fn serde_variants<T: DeserializeOwned + std::fmt::Debug>(tag: &str) -> BTreeSet<String> {
    let json = format!(r#"{{"{tag}":"no such variant","message":null}}"#);
    let err = serde_json::from_str::<T>(&json)
        .expect_err("an unknown variant is refused")
        .to_string();
    let (_, expected) = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("serde's unknown-variant error changed: {err}"));
    let names: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(names.len() > 1, "no variants read from {err:?}");
    names
}

/// Every `domain.type` the taxonomy has.
fn all_kinds() -> BTreeSet<String> {
    let domains = serde_variants::<EngineEvent>("domain");
    let mut kinds = BTreeSet::new();
    for domain in &domains {
        let types = match domain.as_str() {
            "session" => serde_variants::<SessionEvent>("type"),
            "session_command" => serde_variants::<SessionCommand>("type"),
            "media" => serde_variants::<MediaEvent>("type"),
            "media_command" => serde_variants::<MediaCommand>("type"),
            "call" => serde_variants::<CallEvent>("type"),
            "call_command" => serde_variants::<CallCommand>("type"),
            "agent" => serde_variants::<AgentEvent>("type"),
            "agent_command" => serde_variants::<AgentCommand>("type"),
            "queue" => serde_variants::<QueueEvent>("type"),
            "resource" => serde_variants::<ResourceEvent>("type"),
            other => panic!("new domain {other}: add its enum here and samples of it"),
        };
        kinds.extend(types.into_iter().map(|t| format!("{domain}.{t}")));
    }
    kinds
}

#[test]
fn every_variant_has_a_sample() {
    let sampled: BTreeSet<String> = every_variant().iter().map(kind).collect();
    let all = all_kinds();
    let missing: Vec<_> = all.difference(&sampled).collect();
    assert!(
        missing.is_empty(),
        "variants without a sample in every_variant(): {missing:?}"
    );
    assert_eq!(sampled, all);
    // 10 domains; DialogProbed is sampled twice (alive and dead), QueueMembership twice
    // (joined with its terms, and left).
    assert_eq!(every_variant().len(), all.len() + 2);
    assert!(all.contains("call_command.start_conference"), "{all:?}");
}

#[test]
fn every_variant_has_the_priority_of_its_rule() {
    let wrong: Vec<String> = every_variant()
        .iter()
        .filter(|e| e.priority() != rule(e).priority())
        .map(|e| {
            format!(
                "{} ({:?}): is {}, the rule says {}",
                kind(e),
                rule(e),
                e.priority(),
                rule(e).priority()
            )
        })
        .collect();
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn every_priority_is_used() {
    let used: BTreeSet<String> = every_variant()
        .iter()
        .map(|e| e.priority().to_string())
        .collect();
    assert_eq!(used.len(), Priority::ALL.len(), "{used:?}");
}

#[test]
fn reclassified_variants_keep_their_priority() {
    let s = every_variant();
    let priority_of = |k: &str| {
        s.iter()
            .find(|e| kind(e) == k)
            .unwrap_or_else(|| panic!("no sample {k}"))
            .priority()
    };
    // Teardown, like the MediaCommand::Release it answers.
    assert_eq!(priority_of("media.released"), Priority::Critical);
    assert_eq!(priority_of("media_command.release"), Priority::Critical);
    // A control signal: as Low it could be shed exactly under overload.
    assert_eq!(priority_of("resource.overloaded"), Priority::High);
    // A routine probe, like Probe.
    assert_eq!(priority_of("session_command.probe_dialog"), Priority::Low);
    // Queue progress, like CallEvent::Queued.
    assert_eq!(priority_of("queue.caller_joined"), Priority::Normal);
    assert_eq!(priority_of("queue.caller_left"), Priority::Normal);
    assert_eq!(priority_of("call.queued"), Priority::Normal);
    // Conference commands are features.
    for k in [
        "call_command.start_conference",
        "call_command.add_to_conference",
        "call_command.remove_from_conference",
        "call_command.end_conference",
    ] {
        assert_eq!(priority_of(k), Priority::High, "{k}");
    }
}

#[test]
fn topics_follow_domain_and_direction() {
    for e in every_variant() {
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

/// `call()`, `agent()` and `correlation()` agree with the message's own `call` and
/// `agent` fields (read from its JSON form), for every variant.
#[test]
fn call_agent_and_correlation_follow_the_fields() {
    for e in every_variant() {
        let v = serde_json::to_value(&e).unwrap();
        let m = &v["message"];
        let call = m["call"].as_u64().map(CallId);
        let agent = m["agent"].as_str().map(AgentId::new);
        assert_eq!(e.call(), call, "{}", kind(&e));
        assert_eq!(e.agent(), agent.as_ref(), "{}", kind(&e));
        let correlation = match (call, &agent) {
            (Some(c), _) => CorrelationId::from(c),
            (None, Some(a)) => a.correlation(),
            (None, None) => CorrelationId::default(),
        };
        assert_eq!(e.correlation(), correlation, "{}", kind(&e));
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
    assert_eq!(orphan.correlation(), CorrelationId(0));
}

#[test]
fn correlation_id_is_the_bus_type() {
    // The re-export is the bus's own type, not a look-alike.
    let c: call_engine_bus::CorrelationId = CorrelationId::from(CallId(7));
    assert_eq!(CallId::from(c), CallId(7));
    let alice = AgentId::new("alice");
    let ev = EngineEvent::Agent(AgentEvent::Repaired {
        agent: alice.clone(),
        detail: "x".into(),
    });
    assert_eq!(ev.correlation(), alice.correlation());
}

#[test]
fn serde_round_trip_keeps_every_variant() {
    for e in every_variant() {
        let json = serde_json::to_string(&e).unwrap();
        let back: EngineEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e, "{json}");
    }
    let json = serde_json::to_string(&every_variant()[0]).unwrap();
    assert!(json.contains(r#""domain":"session""#), "{json}");
    assert!(json.contains(r#""type":"incoming_call""#), "{json}");
}
