use super::*;

fn q() -> QueueId {
    QueueId::new("support")
}

fn alice() -> AgentId {
    AgentId::new("alice")
}

fn customer_bye() -> CallInput {
    CallInput::LegEnded {
        side: Side::Customer,
        cause: HangupCause::Normal,
    }
}

fn started(actions: &[CallAction], kind: CallTimerKind) -> Option<(CallTimer, Millis)> {
    actions.iter().find_map(|a| match a {
        CallAction::StartTimer { timer, at } if timer.kind == kind => Some((timer.clone(), *at)),
        _ => None,
    })
}

fn cancelled(actions: &[CallAction], kind: CallTimerKind) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, CallAction::CancelTimer { timer } if timer.kind == kind))
}

fn notices(actions: &[CallAction]) -> Vec<CallNotice> {
    actions
        .iter()
        .filter_map(|a| match a {
            CallAction::Emit(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// A call that is ringing alice: created at 0, queued at 100, offered at 1000, ringing
/// at 1100.
fn ringing_call(config: CallConfig) -> Call {
    let mut c = Call::new(CallId(1), config, Millis(0));
    c.handle(CallInput::Enqueue { queue: q() }, Millis(100))
        .unwrap();
    c.handle(CallInput::Offer { agent: alice() }, Millis(1_000))
        .unwrap();
    c.handle(CallInput::AgentRinging, Millis(1_100)).unwrap();
    c.check_invariants().unwrap();
    c
}

fn bridged_call() -> Call {
    let mut c = ringing_call(CallConfig::default());
    c.handle(CallInput::AgentAnswered, Millis(3_000)).unwrap();
    c
}

#[test]
fn answered_call_ends_when_the_customer_hangs_up() {
    let mut c = Call::new(CallId(7), CallConfig::default(), Millis(0));
    let a = c
        .handle(CallInput::Enqueue { queue: q() }, Millis(100))
        .unwrap();
    assert_eq!(notices(&a), vec![CallNotice::Queued { queue: q() }]);
    assert!(
        started(&a, CallTimerKind::MaxWait).is_none(),
        "no max wait by default"
    );

    let a = c
        .handle(CallInput::Offer { agent: alice() }, Millis(1_000))
        .unwrap();
    assert_eq!(c.state(), &CallState::Offering { agent: alice() });
    let (_, at) = started(&a, CallTimerKind::RingTimeout).unwrap();
    assert_eq!(at, Millis(16_000));

    c.handle(CallInput::AgentRinging, Millis(1_100)).unwrap();
    assert_eq!(c.state(), &CallState::Ringing { agent: alice() });

    let a = c.handle(CallInput::AgentAnswered, Millis(3_000)).unwrap();
    assert!(cancelled(&a, CallTimerKind::RingTimeout));
    assert_eq!(notices(&a), vec![CallNotice::Connected { agent: alice() }]);
    assert_eq!(c.state(), &CallState::Bridged { agent: alice() });
    assert_eq!(c.answered_at(), Some(Millis(3_000)));

    let a = c.handle(customer_bye(), Millis(63_000)).unwrap();
    let (_, guard_at) = started(&a, CallTimerKind::TerminateGuard).unwrap();
    assert_eq!(guard_at, Millis(68_000));
    assert_eq!(
        notices(&a),
        vec![CallNotice::Terminating {
            disposition: Disposition::Answered,
            hung_up_by: Side::Customer,
            cause: HangupCause::Normal,
            agent: Some(alice()),
        }]
    );

    let a = c.handle(CallInput::AllLegsGone, Millis(63_050)).unwrap();
    assert!(cancelled(&a, CallTimerKind::TerminateGuard));
    let expected = CallState::Terminated {
        disposition: Disposition::Answered,
        hung_up_by: Side::Customer,
        cause: HangupCause::Normal,
    };
    assert_eq!(c.state(), &expected);
    assert_eq!(
        notices(&a)[0].clone().into_event(CallId(7)),
        Some(CallEvent::Ended {
            call: CallId(7),
            disposition: Disposition::Answered,
            hung_up_by: Side::Customer,
            cause: HangupCause::Normal,
        })
    );

    assert_eq!(c.created_at(), Millis(0));
    assert_eq!(c.queued_at(), Some(Millis(100)));
    assert_eq!(c.ended_at(), Some(Millis(63_000)));
    assert_eq!(c.wait_ms(), Some(2_900));
    assert_eq!(c.talk_ms(), Some(60_000));
    assert!(c.armed_timers().is_empty());

    let inputs: Vec<CallInputKind> = c.history().iter().map(|t| t.input).collect();
    assert_eq!(
        inputs,
        vec![
            CallInputKind::Enqueue,
            CallInputKind::Offer,
            CallInputKind::AgentRinging,
            CallInputKind::AgentAnswered,
            CallInputKind::CustomerLegEnded,
            CallInputKind::AllLegsGone,
        ]
    );
    assert_eq!(c.history().last().unwrap().to, expected);
    c.check_invariants().unwrap();

    // Terminated is final.
    for input in [
        customer_bye(),
        CallInput::AllLegsGone,
        CallInput::Hangup {
            cause: HangupCause::Normal,
        },
    ] {
        assert!(matches!(
            c.handle(input, Millis(70_000)),
            Err(CallError::InvalidTransition {
                state: "terminated",
                ..
            })
        ));
    }
    assert_eq!(c.history().len(), 6);
}

#[test]
fn abandon_while_queued() {
    let mut c = Call::new(CallId(1), CallConfig::default(), Millis(0));
    c.handle(CallInput::Enqueue { queue: q() }, Millis(100))
        .unwrap();
    let a = c
        .handle(
            CallInput::LegEnded {
                side: Side::Customer,
                cause: HangupCause::Cancelled,
            },
            Millis(20_100),
        )
        .unwrap();
    // The customer's was the only leg: the call is over at once, no guard timer.
    assert_eq!(
        c.state(),
        &CallState::Terminated {
            disposition: Disposition::Abandoned,
            hung_up_by: Side::Customer,
            cause: HangupCause::Cancelled,
        }
    );
    assert!(started(&a, CallTimerKind::TerminateGuard).is_none());
    assert!(matches!(
        notices(&a)[..],
        [CallNotice::Terminating { .. }, CallNotice::Ended { .. }]
    ));
    assert!(!c.legs().any());
    assert_eq!(c.wait_ms(), Some(20_000));
    assert_eq!(c.talk_ms(), None);
    assert!(c.handle(CallInput::AllLegsGone, Millis(20_200)).is_err());
    c.check_invariants().unwrap();
}

#[test]
fn abandon_while_ringing_cancels_the_ring_timer_and_names_the_agent() {
    let mut c = ringing_call(CallConfig::default());
    let (ring, _) = c.armed_timer(CallTimerKind::RingTimeout).unwrap();
    let a = c.handle(customer_bye(), Millis(5_000)).unwrap();
    assert!(a.contains(&CallAction::CancelTimer {
        timer: ring.clone()
    }));
    assert!(notices(&a).contains(&CallNotice::Terminating {
        disposition: Disposition::Abandoned,
        hung_up_by: Side::Customer,
        cause: HangupCause::Normal,
        agent: Some(alice()),
    }));
    // The ring timer fires anyway: stale.
    let before = c.clone();
    assert_eq!(
        c.handle(CallInput::Timer(ring.clone()), Millis(16_000)),
        Err(CallError::StaleTimer(ring))
    );
    assert_eq!(c, before);
    // The legs never confirm: the guard terminates the call.
    let (guard, at) = c.armed_timer(CallTimerKind::TerminateGuard).unwrap();
    assert_eq!(at, Millis(10_000));
    let a = c.handle(CallInput::Timer(guard), at).unwrap();
    assert!(c.state().is_final());
    assert!(matches!(
        notices(&a)[..],
        [CallNotice::Ended {
            disposition: Disposition::Abandoned,
            ..
        }]
    ));
    assert_eq!(
        c.history().last().unwrap().input,
        CallInputKind::TerminateGuardTimeout
    );
    c.check_invariants().unwrap();
}

#[test]
fn ring_timeout_requeues_keeping_the_enqueue_time() {
    let config = CallConfig {
        max_wait_ms: Some(60_000),
        ..CallConfig::default()
    };
    let mut c = ringing_call(config);
    assert!(
        c.armed_timer(CallTimerKind::MaxWait).is_none(),
        "paused while offering"
    );
    let (ring, at) = c.armed_timer(CallTimerKind::RingTimeout).unwrap();
    assert_eq!(at, Millis(16_000));
    let a = c.handle(CallInput::Timer(ring), at).unwrap();
    assert_eq!(c.state(), &CallState::Queued { queue: q() });
    assert_eq!(c.queued_at(), Some(Millis(100)));
    assert_eq!(
        notices(&a),
        vec![CallNotice::OfferFailed {
            agent: alice(),
            cause: HangupCause::NoAnswer
        }]
    );
    // The max wait deadline still counts from the first enqueue.
    let (wait, wait_at) = started(&a, CallTimerKind::MaxWait).unwrap();
    assert_eq!(wait_at, Millis(60_100));
    assert_eq!(
        c.history().last().unwrap().input,
        CallInputKind::RingTimeout
    );
    c.check_invariants().unwrap();

    // Nobody else takes it: the engine gives up with NoAgent.
    let a = c.handle(CallInput::Timer(wait), wait_at).unwrap();
    assert_eq!(
        c.state(),
        &CallState::Terminating {
            disposition: Disposition::NoAgent,
            hung_up_by: Side::Engine,
            cause: HangupCause::NoAnswer,
        }
    );
    assert!(started(&a, CallTimerKind::TerminateGuard).is_some());
    assert_eq!(c.wait_ms(), Some(60_000));
    c.check_invariants().unwrap();
}

#[test]
fn offer_failure_and_agent_leg_end_while_ringing_requeue() {
    let mut c = ringing_call(CallConfig::default());
    c.handle(
        CallInput::OfferFailed {
            cause: HangupCause::Busy,
        },
        Millis(2_000),
    )
    .unwrap();
    assert_eq!(c.state(), &CallState::Queued { queue: q() });
    assert!(c.armed_timers().is_empty());

    c.handle(
        CallInput::Offer {
            agent: AgentId::new("bob"),
        },
        Millis(3_000),
    )
    .unwrap();
    let a = c
        .handle(
            CallInput::LegEnded {
                side: Side::Agent,
                cause: HangupCause::Declined,
            },
            Millis(3_500),
        )
        .unwrap();
    assert_eq!(c.state(), &CallState::Queued { queue: q() });
    assert_eq!(
        notices(&a),
        vec![CallNotice::OfferFailed {
            agent: AgentId::new("bob"),
            cause: HangupCause::Declined
        }]
    );
    assert_eq!(c.queued_at(), Some(Millis(100)));
    c.check_invariants().unwrap();
}

#[test]
fn a_wait_deadline_already_passed_fires_at_once_after_a_failed_offer() {
    let config = CallConfig {
        max_wait_ms: Some(10_000),
        ring_timeout_ms: 30_000,
        ..CallConfig::default()
    };
    let mut c = ringing_call(config);
    let a = c
        .handle(
            CallInput::OfferFailed {
                cause: HangupCause::NoAnswer,
            },
            Millis(25_000),
        )
        .unwrap();
    assert_eq!(
        started(&a, CallTimerKind::MaxWait).unwrap().1,
        Millis(25_000)
    );
}

#[test]
fn hold_and_resume() {
    let mut c = bridged_call();
    let a = c.handle(CallInput::Hold, Millis(10_000)).unwrap();
    assert_eq!(notices(&a), vec![CallNotice::HoldChanged { on_hold: true }]);
    assert_eq!(c.state(), &CallState::OnHold { agent: alice() });
    assert!(c.handle(CallInput::Hold, Millis(10_500)).is_err());
    let a = c.handle(CallInput::Resume, Millis(20_000)).unwrap();
    assert_eq!(
        notices(&a),
        vec![CallNotice::HoldChanged { on_hold: false }]
    );
    assert_eq!(c.state(), &CallState::Bridged { agent: alice() });
    assert!(c.handle(CallInput::Resume, Millis(20_500)).is_err());
    // The agent hangs up.
    c.handle(
        CallInput::LegEnded {
            side: Side::Agent,
            cause: HangupCause::Normal,
        },
        Millis(30_000),
    )
    .unwrap();
    assert_eq!(
        c.state(),
        &CallState::Terminating {
            disposition: Disposition::Answered,
            hung_up_by: Side::Agent,
            cause: HangupCause::Normal,
        }
    );
    assert_eq!(c.talk_ms(), Some(27_000));
    c.check_invariants().unwrap();
}

/// Completes the transfer to agent bob: the call is bridged to bob, who is announced.
fn complete_to_bob(c: &mut Call, at: u64) {
    let a = c
        .handle(
            CallInput::TransferCompleted {
                new_agent: Some(AgentId::new("bob")),
            },
            Millis(at),
        )
        .unwrap();
    assert_eq!(
        c.state(),
        &CallState::Bridged {
            agent: AgentId::new("bob")
        }
    );
    assert!(notices(&a).contains(&CallNotice::Connected {
        agent: AgentId::new("bob")
    }));
}

#[test]
fn blind_transfer_to_another_agent() {
    let mut c = bridged_call();
    let a = c
        .handle(
            CallInput::StartTransfer {
                kind: TransferKind::Blind,
                target: "bob".into(),
            },
            Millis(10_000),
        )
        .unwrap();
    assert_eq!(
        notices(&a),
        vec![CallNotice::TransferStarted {
            kind: TransferKind::Blind,
            target: "bob".into()
        }]
    );
    // In a blind transfer the transferring agent leaves first.
    c.handle(
        CallInput::LegEnded {
            side: Side::Agent,
            cause: HangupCause::Normal,
        },
        Millis(10_100),
    )
    .unwrap();
    assert!(matches!(c.state(), CallState::Transferring { .. }));
    complete_to_bob(&mut c, 14_000);
    assert_eq!(c.answered_at(), Some(Millis(3_000)), "first answer kept");
    c.handle(customer_bye(), Millis(50_000)).unwrap();
    assert_eq!(c.state().disposition(), Some(Disposition::Answered));
    c.check_invariants().unwrap();
}

#[test]
fn failed_transfer_returns_to_the_agent_or_ends_if_the_agent_left() {
    // Blind: the customer is reconnected to the agent. Attended: the customer is still
    // on hold, the consultation leg gone.
    for (kind, back) in [
        (TransferKind::Blind, CallState::Bridged { agent: alice() }),
        (TransferKind::Attended, CallState::OnHold { agent: alice() }),
    ] {
        let mut c = bridged_call();
        c.handle(
            CallInput::StartTransfer {
                kind,
                target: "sip:ext@example.test".into(),
            },
            Millis(10_000),
        )
        .unwrap();
        let a = c
            .handle(
                CallInput::TransferFailed {
                    cause: HangupCause::Busy,
                },
                Millis(12_000),
            )
            .unwrap();
        assert_eq!(c.state(), &back, "{kind:?}");
        assert_eq!(
            notices(&a),
            vec![CallNotice::TransferFailed {
                cause: HangupCause::Busy
            }]
        );
        assert!(!c.legs().consult);
        c.check_invariants().unwrap();
    }
    let mut c = bridged_call();
    let start = CallInput::StartTransfer {
        kind: TransferKind::Attended,
        target: "sip:ext@example.test".into(),
    };

    c.handle(start, Millis(13_000)).unwrap();
    c.handle(
        CallInput::LegEnded {
            side: Side::Agent,
            cause: HangupCause::Normal,
        },
        Millis(13_500),
    )
    .unwrap();
    c.handle(
        CallInput::TransferFailed {
            cause: HangupCause::NotFound,
        },
        Millis(14_000),
    )
    .unwrap();
    assert_eq!(
        c.state(),
        &CallState::Terminating {
            disposition: Disposition::Answered,
            hung_up_by: Side::Agent,
            cause: HangupCause::NotFound,
        }
    );
    c.check_invariants().unwrap();
}

fn attended_start(c: &mut Call, at: u64) {
    let a = c
        .handle(
            CallInput::StartTransfer {
                kind: TransferKind::Attended,
                target: "bob".into(),
            },
            Millis(at),
        )
        .unwrap();
    assert_eq!(
        notices(&a),
        vec![CallNotice::TransferStarted {
            kind: TransferKind::Attended,
            target: "bob".into()
        }]
    );
    assert!(c.legs().consult, "the consultation leg is up");
}

#[test]
fn attended_transfer_consults_then_completes() {
    let mut c = bridged_call();
    attended_start(&mut c, 10_000);
    // Not consulting yet: the target's phone rings.
    assert!(matches!(
        c.state(),
        CallState::Transferring {
            consulting: false,
            ..
        }
    ));
    let a = c
        .handle(CallInput::ConsultAnswered, Millis(12_000))
        .unwrap();
    assert_eq!(notices(&a), vec![CallNotice::TransferConsulting]);
    assert_eq!(
        CallNotice::TransferConsulting.into_event(c.id()),
        Some(CallEvent::TransferConsulting { call: c.id() })
    );
    assert_eq!(
        c.state(),
        &CallState::Transferring {
            agent: alice(),
            kind: TransferKind::Attended,
            target: "bob".into(),
            consulting: true,
        }
    );
    // Answered once only.
    assert!(matches!(
        c.handle(CallInput::ConsultAnswered, Millis(12_500)),
        Err(CallError::InvalidTransition { .. })
    ));
    complete_to_bob(&mut c, 20_000);
    // The consultation leg is now the call's agent leg.
    assert_eq!(
        c.legs(),
        CallLegs {
            customer: true,
            agent: true,
            consult: false
        }
    );
    c.check_invariants().unwrap();
}

#[test]
fn attended_transfer_whose_consultation_ends_leaves_the_customer_on_hold() {
    let mut c = bridged_call();
    attended_start(&mut c, 10_000);
    c.handle(CallInput::ConsultAnswered, Millis(12_000))
        .unwrap();
    let a = c
        .handle(
            CallInput::ConsultEnded {
                cause: HangupCause::Declined,
            },
            Millis(15_000),
        )
        .unwrap();
    assert_eq!(c.state(), &CallState::OnHold { agent: alice() });
    assert_eq!(
        notices(&a),
        vec![CallNotice::TransferFailed {
            cause: HangupCause::Declined
        }]
    );
    assert!(!c.legs().consult);
    c.handle(CallInput::Resume, Millis(16_000)).unwrap();
    assert_eq!(c.state(), &CallState::Bridged { agent: alice() });
    c.check_invariants().unwrap();
}

#[test]
fn a_semi_attended_transfer_completes_before_the_target_answers() {
    let mut c = bridged_call();
    attended_start(&mut c, 10_000);
    complete_to_bob(&mut c, 11_000);
    c.check_invariants().unwrap();
}

#[test]
fn consultation_inputs_are_refused_in_a_blind_transfer_and_outside_transfers() {
    // Both consultation inputs are refused in `state`, and change nothing.
    fn refused(c: &mut Call, state: &str, at: u64) {
        for input in [
            CallInput::ConsultAnswered,
            CallInput::ConsultEnded {
                cause: HangupCause::Normal,
            },
        ] {
            let before = c.clone();
            match c.handle(input, Millis(at)) {
                Err(CallError::InvalidTransition { state: s, .. }) => assert_eq!(s, state),
                other => panic!("expected a refusal in {state}, got {other:?}"),
            }
            assert_eq!(*c, before, "a refused input changes nothing");
        }
    }
    let mut c = bridged_call();
    refused(&mut c, "bridged", 9_000);
    c.handle(
        CallInput::StartTransfer {
            kind: TransferKind::Blind,
            target: "bob".into(),
        },
        Millis(10_000),
    )
    .unwrap();
    assert!(
        !c.legs().consult,
        "a blind transfer has no consultation leg"
    );
    refused(&mut c, "transferring", 11_000);
}

/// The customer hangs up during a consultation: the call waits for the agent's and the
/// consultation leg, and is over when the last one ends (no `AllLegsGone` needed).
#[test]
fn a_call_ending_mid_consultation_finishes_when_its_last_leg_ends() {
    let mut c = bridged_call();
    attended_start(&mut c, 10_000);
    c.handle(CallInput::ConsultAnswered, Millis(12_000))
        .unwrap();
    c.handle(customer_bye(), Millis(13_000)).unwrap();
    assert!(matches!(c.state(), CallState::Terminating { .. }));
    assert!(c.armed_timer(CallTimerKind::TerminateGuard).is_some());
    c.handle(
        CallInput::LegEnded {
            side: Side::Agent,
            cause: HangupCause::Normal,
        },
        Millis(13_100),
    )
    .unwrap();
    assert!(matches!(c.state(), CallState::Terminating { .. }));
    assert!(c.legs().consult);
    let a = c
        .handle(
            CallInput::ConsultEnded {
                cause: HangupCause::Normal,
            },
            Millis(13_200),
        )
        .unwrap();
    assert!(cancelled(&a, CallTimerKind::TerminateGuard));
    assert_eq!(
        c.state(),
        &CallState::Terminated {
            disposition: Disposition::Answered,
            hung_up_by: Side::Customer,
            cause: HangupCause::Normal,
        }
    );
    c.check_invariants().unwrap();
}

/// While terminating, a consultation or offer leg that is not up cannot end again: the
/// driver reporting it is refused (a bug surfaces), unlike `LegEnded`, which BYE races
/// make legitimately repeated.
#[test]
fn ends_of_legs_that_are_not_up_are_refused_while_terminating() {
    let mut c = bridged_call();
    c.handle(customer_bye(), Millis(9_000)).unwrap();
    let before = c.clone();
    for input in [
        CallInput::ConsultEnded {
            cause: HangupCause::Normal,
        },
        CallInput::OfferFailed {
            cause: HangupCause::Cancelled,
        },
    ] {
        assert!(matches!(
            c.handle(input, Millis(9_100)),
            Err(CallError::InvalidTransition {
                state: "terminating",
                ..
            })
        ));
        assert_eq!(c, before);
    }
    c.handle(
        CallInput::LegEnded {
            side: Side::Customer,
            cause: HangupCause::Normal,
        },
        Millis(9_200),
    )
    .unwrap();
    assert!(matches!(c.state(), CallState::Terminating { .. }));
}

/// Legs the machine tracks: the agent's leg of an outstanding offer counts, and its
/// failure after the customer left ends the call.
#[test]
fn an_offer_outstanding_when_the_customer_leaves_is_the_last_leg() {
    let mut c = ringing_call(CallConfig::default());
    c.handle(customer_bye(), Millis(2_000)).unwrap();
    assert!(matches!(c.state(), CallState::Terminating { .. }));
    assert_eq!(
        c.legs(),
        CallLegs {
            customer: false,
            agent: true,
            consult: false
        }
    );
    c.handle(
        CallInput::OfferFailed {
            cause: HangupCause::Cancelled,
        },
        Millis(2_100),
    )
    .unwrap();
    assert_eq!(c.state().disposition(), Some(Disposition::Abandoned));
    assert!(c.state().is_final());
    c.check_invariants().unwrap();
    // An answered call's agent leg is not an offer.
    let mut c = bridged_call();
    c.handle(customer_bye(), Millis(9_000)).unwrap();
    assert!(c
        .handle(
            CallInput::OfferFailed {
                cause: HangupCause::Cancelled,
            },
            Millis(9_100),
        )
        .is_err());
    assert!(c.legs().agent);
}

#[test]
fn transfer_to_an_external_target_ends_the_call() {
    let mut c = bridged_call();
    assert_eq!(
        c.handle(
            CallInput::StartTransfer {
                kind: TransferKind::Blind,
                target: String::new(),
            },
            Millis(10_000),
        ),
        Err(CallError::InvalidArgument {
            input: "start_transfer",
            reason: "empty transfer target"
        })
    );
    c.handle(
        CallInput::StartTransfer {
            kind: TransferKind::Blind,
            target: "sip:+15550000@carrier.test".into(),
        },
        Millis(10_000),
    )
    .unwrap();
    c.handle(
        CallInput::TransferCompleted { new_agent: None },
        Millis(11_000),
    )
    .unwrap();
    assert_eq!(
        c.state(),
        &CallState::Terminating {
            disposition: Disposition::Answered,
            hung_up_by: Side::Agent,
            cause: HangupCause::Normal,
        }
    );
}

#[test]
fn conference_and_back() {
    let mut c = bridged_call();
    assert!(matches!(
        c.handle(
            CallInput::StartConference { participants: 0 },
            Millis(9_000)
        ),
        Err(CallError::InvalidArgument { .. })
    ));
    c.handle(
        CallInput::StartConference { participants: 1 },
        Millis(10_000),
    )
    .unwrap();
    c.handle(
        CallInput::StartConference { participants: 2 },
        Millis(11_000),
    )
    .unwrap();
    assert_eq!(
        c.state(),
        &CallState::Conferencing {
            agent: alice(),
            participants: 2
        }
    );
    assert!(c.handle(CallInput::Hold, Millis(11_500)).is_err());
    let a = c
        .handle(CallInput::ConferenceEnded, Millis(12_000))
        .unwrap();
    assert_eq!(c.state(), &CallState::Bridged { agent: alice() });
    assert_eq!(notices(&a), vec![CallNotice::ConferenceEnded]);
    assert_eq!(
        CallNotice::ConferenceEnded.into_event(c.id()),
        Some(CallEvent::ConferenceEnded { call: c.id() })
    );
    c.check_invariants().unwrap();
}

#[test]
fn invalid_input_changes_nothing() {
    let mut c = ringing_call(CallConfig::default());
    let before = c.clone();
    let cases = [
        CallInput::Enqueue { queue: q() },
        CallInput::Offer {
            agent: AgentId::new("bob"),
        },
        CallInput::AgentRinging,
        CallInput::Hold,
        CallInput::Resume,
        CallInput::ConferenceEnded,
        CallInput::TransferFailed {
            cause: HangupCause::Busy,
        },
        CallInput::AllLegsGone,
        CallInput::LegEnded {
            side: Side::Engine,
            cause: HangupCause::Normal,
        },
    ];
    for input in cases {
        let name = input.kind().as_str();
        let mut actions = vec![CallAction::Emit(CallNotice::ConferenceEnded)];
        let err = c
            .handle_into(input, Millis(2_000), &mut actions)
            .unwrap_err();
        assert_eq!(
            err,
            CallError::InvalidTransition {
                state: "ringing",
                input: name
            }
        );
        assert_eq!(actions.len(), 1, "the buffer is left as it was");
        assert_eq!(c, before, "{name} changed the call");
    }
    assert_eq!(c.history().len(), 3);
    assert_eq!(c.last_input_at(), Millis(1_100));
}

#[test]
fn stale_and_superseded_timers_are_ignored() {
    let mut c = ringing_call(CallConfig {
        max_wait_ms: Some(100_000),
        ..CallConfig::default()
    });
    let (ring1, _) = c.armed_timer(CallTimerKind::RingTimeout).unwrap();
    c.handle(
        CallInput::OfferFailed {
            cause: HangupCause::Busy,
        },
        Millis(2_000),
    )
    .unwrap();
    c.handle(CallInput::Offer { agent: alice() }, Millis(3_000))
        .unwrap();
    let (ring2, at2) = c.armed_timer(CallTimerKind::RingTimeout).unwrap();
    assert_ne!(ring1.generation, ring2.generation);
    let before = c.clone();
    // The first offer's timer fires late: it must not fail the second offer.
    assert_eq!(
        c.handle(CallInput::Timer(ring1.clone()), Millis(16_000)),
        Err(CallError::StaleTimer(ring1))
    );
    // A timer of a kind that is not armed.
    let bogus = TimerId {
        kind: CallTimerKind::TerminateGuard,
        generation: 0,
    };
    assert!(matches!(
        c.handle(CallInput::Timer(bogus), Millis(16_000)),
        Err(CallError::StaleTimer(_))
    ));
    assert_eq!(c, before);
    // The current one works, exactly once.
    c.handle(CallInput::Timer(ring2.clone()), at2).unwrap();
    assert_eq!(c.state(), &CallState::Queued { queue: q() });
    assert!(matches!(
        c.handle(CallInput::Timer(ring2), at2),
        Err(CallError::StaleTimer(_))
    ));
    c.check_invariants().unwrap();
}

#[test]
fn engine_hangup_dispositions() {
    let mut c = Call::new(CallId(1), CallConfig::default(), Millis(0));
    c.handle(
        CallInput::Hangup {
            cause: HangupCause::Shutdown,
        },
        Millis(5),
    )
    .unwrap();
    assert_eq!(c.state().disposition(), Some(Disposition::NoAgent));
    // Repeated hang-ups and leg ends while terminating are accepted no-ops.
    let a = c
        .handle(
            CallInput::Hangup {
                cause: HangupCause::Normal,
            },
            Millis(6),
        )
        .unwrap();
    assert!(a.is_empty());
    assert_eq!(c.history()[1].from, c.history()[1].to);
    // The customer's leg, the last one, goes: the call is over.
    let a = c.handle(customer_bye(), Millis(7)).unwrap();
    assert!(cancelled(&a, CallTimerKind::TerminateGuard));
    assert!(c.state().is_final());
    assert_eq!(c.history().len(), 3);

    let mut c = ringing_call(CallConfig::default());
    c.handle(
        CallInput::Hangup {
            cause: HangupCause::Failure {
                detail: "media".into(),
            },
        },
        Millis(2_000),
    )
    .unwrap();
    assert_eq!(c.state().disposition(), Some(Disposition::Failed));

    let mut c = bridged_call();
    c.handle(
        CallInput::Hangup {
            cause: HangupCause::Failure {
                detail: "rtp timeout".into(),
            },
        },
        Millis(9_000),
    )
    .unwrap();
    assert_eq!(c.state().disposition(), Some(Disposition::Answered));
}

#[test]
fn time_never_runs_backwards_in_the_history() {
    let mut c = Call::new(CallId(1), CallConfig::default(), Millis(1_000));
    c.handle(CallInput::Enqueue { queue: q() }, Millis(500))
        .unwrap();
    assert_eq!(c.queued_at(), Some(Millis(1_000)));
    assert_eq!(c.history()[0].at, Millis(1_000));
    c.check_invariants().unwrap();
}

#[test]
fn serde_round_trip() {
    let mut c = bridged_call();
    c.handle(CallInput::Hold, Millis(4_000)).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    let back: Call = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    let state = serde_json::to_value(c.state()).unwrap();
    assert_eq!(state["state"], "on_hold");
    assert_eq!(state["agent"], "alice");
    let input = serde_json::to_value(CallInput::Enqueue { queue: q() }).unwrap();
    assert_eq!(input["input"], "enqueue");
}
