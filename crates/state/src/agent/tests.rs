use super::*;

fn ready(config: AgentConfig) -> Agent {
    let mut a = Agent::new(AgentId::new("alice"), config, Millis(0));
    a.handle(AgentInput::Registered, Millis(0)).unwrap();
    a.handle(AgentInput::Login, Millis(0)).unwrap();
    a.check_invariants().unwrap();
    a
}

fn reserve(call: u64) -> AgentInput {
    AgentInput::Reserve {
        call: CallId(call),
        ttl_ms: 20_000,
        direct: false,
    }
}

fn started(actions: &[AgentAction], kind: AgentTimerKind) -> Option<(AgentTimer, Millis)> {
    actions.iter().find_map(|a| match a {
        AgentAction::StartTimer { timer, at } if timer.kind == kind => Some((timer.clone(), *at)),
        _ => None,
    })
}

fn emitted(actions: &[AgentAction]) -> Vec<AgentNotice> {
    actions
        .iter()
        .filter_map(|a| match a {
            AgentAction::Emit(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn no_answer(call: u64) -> AgentInput {
    AgentInput::OfferFailed {
        call: CallId(call),
        why: OfferFailure::NoAnswer,
    }
}

#[test]
fn a_call_then_wrap_up_then_idle() {
    let mut a = ready(AgentConfig::default());
    assert_eq!(a.status(), &AgentStatus::Available);
    assert_eq!(a.activity(), AgentActivity::Idle);
    assert!(a.can_take_call(Millis(1)));

    let acts = a.handle(reserve(1), Millis(1_000)).unwrap();
    let (expiry, at) = started(&acts, AgentTimerKind::ReservationExpiry(CallId(1))).unwrap();
    assert_eq!(at, Millis(21_000));
    assert_eq!(
        emitted(&acts),
        vec![
            AgentNotice::Reserved { call: CallId(1) },
            AgentNotice::ActivityChanged {
                activity: AgentActivity::Reserved,
                active_calls: 1
            }
        ]
    );
    assert_eq!(
        emitted(&acts)[0].clone().into_event(AgentId::new("alice")),
        Some(AgentEvent::Reserved {
            agent: AgentId::new("alice"),
            call: CallId(1)
        })
    );
    assert_eq!(a.activity(), AgentActivity::Reserved);
    assert!(!a.can_take_call(Millis(1_001)), "max_calls 1");
    assert_eq!(
        a.reserve_check(Millis(1_001), false),
        Err(RejectReason::AtCapacity)
    );

    a.handle(AgentInput::Ringing { call: CallId(1) }, Millis(1_100))
        .unwrap();
    assert_eq!(a.activity(), AgentActivity::Ringing);
    let acts = a
        .handle(AgentInput::Answered { call: CallId(1) }, Millis(3_000))
        .unwrap();
    assert!(acts.contains(&AgentAction::CancelTimer {
        timer: expiry.clone()
    }));
    assert_eq!(a.activity(), AgentActivity::OnCall);
    assert_eq!(a.active_calls()[0].phase, CallPhase::OnCall);
    assert_eq!(a.active_calls()[0].since, Millis(3_000));
    // The reservation timer was cancelled: a late fire is stale.
    assert_eq!(
        a.handle(AgentInput::Timer(expiry.clone()), Millis(21_000)),
        Err(AgentError::StaleTimer(expiry))
    );

    let acts = a
        .handle(AgentInput::CallEnded { call: CallId(1) }, Millis(60_000))
        .unwrap();
    let (wrap, wrap_at) = started(&acts, AgentTimerKind::WrapUpEnd).unwrap();
    assert_eq!(wrap_at, Millis(70_000));
    assert_eq!(a.activity(), AgentActivity::WrapUp);
    assert_eq!(a.wrap_up_until(), Some(Millis(70_000)));
    assert_eq!(
        a.handle(reserve(2), Millis(65_000)),
        Err(AgentError::Rejected(RejectReason::Delayed))
    );
    let acts = a.handle(AgentInput::Timer(wrap), wrap_at).unwrap();
    assert_eq!(
        emitted(&acts),
        vec![AgentNotice::ActivityChanged {
            activity: AgentActivity::Idle,
            active_calls: 0
        }]
    );
    assert!(a.can_take_call(wrap_at));
    a.handle(reserve(2), Millis(70_001)).unwrap();

    let activities: Vec<AgentActivity> = a.history().iter().map(|t| t.to.activity).collect();
    assert_eq!(
        activities,
        vec![
            AgentActivity::Idle,     // registered
            AgentActivity::Idle,     // login
            AgentActivity::Reserved, // reserve 1
            AgentActivity::Ringing,
            AgentActivity::OnCall,
            AgentActivity::WrapUp,
            AgentActivity::Idle,
            AgentActivity::Reserved, // reserve 2
        ]
    );
    assert_eq!(a.history()[2].call, Some(CallId(1)));
    a.check_invariants().unwrap();
}

#[test]
fn zero_wrap_up_goes_straight_to_idle_and_end_wrap_up_shortens_it() {
    let mut a = ready(AgentConfig {
        wrap_up_ms: 0,
        ..AgentConfig::default()
    });
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(1) }, Millis(10))
        .unwrap();
    let acts = a
        .handle(AgentInput::CallEnded { call: CallId(1) }, Millis(20))
        .unwrap();
    assert!(started(&acts, AgentTimerKind::WrapUpEnd).is_none());
    assert_eq!(a.activity(), AgentActivity::Idle);
    assert!(a.can_take_call(Millis(20)));

    let mut a = ready(AgentConfig::default());
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(1) }, Millis(10))
        .unwrap();
    a.handle(AgentInput::CallEnded { call: CallId(1) }, Millis(20))
        .unwrap();
    let (wrap, _) = a.armed_timers()[0].clone();
    let acts = a.handle(AgentInput::EndWrapUp, Millis(30)).unwrap();
    assert!(acts.contains(&AgentAction::CancelTimer { timer: wrap }));
    assert_eq!(a.activity(), AgentActivity::Idle);
    assert!(matches!(
        a.handle(AgentInput::EndWrapUp, Millis(40)),
        Err(AgentError::InvalidTransition { .. })
    ));
    a.check_invariants().unwrap();
}

#[test]
fn late_wrap_up_timer_does_not_block_offers() {
    let mut a = ready(AgentConfig::default());
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(1) }, Millis(10))
        .unwrap();
    a.handle(AgentInput::CallEnded { call: CallId(1) }, Millis(20))
        .unwrap();
    // The wrap-up timer (due at 10 020) has not been delivered yet.
    assert!(a.can_take_call(Millis(10_020)));
    let acts = a.handle(reserve(2), Millis(10_020)).unwrap();
    assert!(acts
        .iter()
        .any(|x| matches!(x, AgentAction::CancelTimer { timer } if timer.kind == AgentTimerKind::WrapUpEnd)));
    assert_eq!(a.wrap_up_until(), None);
    a.check_invariants().unwrap();
}

#[test]
fn max_no_answer_puts_the_agent_on_break() {
    let mut a = ready(AgentConfig {
        max_no_answer: 2,
        no_answer_delay_ms: 0,
        ..AgentConfig::default()
    });
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Ringing { call: CallId(1) }, Millis(10))
        .unwrap();
    a.handle(no_answer(1), Millis(15_000)).unwrap();
    assert_eq!(a.consecutive_no_answers(), 1);
    assert_eq!(a.status(), &AgentStatus::Available);

    a.handle(reserve(2), Millis(16_000)).unwrap();
    let acts = a.handle(no_answer(2), Millis(31_000)).unwrap();
    assert_eq!(
        a.status(),
        &AgentStatus::OnBreak {
            reason: AUTO_NO_ANSWER_REASON.into()
        }
    );
    assert!(emitted(&acts).contains(&AgentNotice::StatusChanged {
        status: AgentStatus::OnBreak {
            reason: AUTO_NO_ANSWER_REASON.into()
        }
    }));
    assert_eq!(
        a.handle(reserve(3), Millis(32_000)),
        Err(AgentError::Rejected(RejectReason::NotAvailable))
    );
    // Coming back resets the count.
    a.handle(
        AgentInput::SetStatus(AgentStatus::Available),
        Millis(40_000),
    )
    .unwrap();
    assert_eq!(a.consecutive_no_answers(), 0);
    a.handle(reserve(3), Millis(40_001)).unwrap();
    a.check_invariants().unwrap();
}

#[test]
fn an_answer_resets_the_no_answer_count() {
    let mut a = ready(AgentConfig {
        max_no_answer: 2,
        no_answer_delay_ms: 0,
        ..AgentConfig::default()
    });
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(no_answer(1), Millis(1)).unwrap();
    a.handle(reserve(2), Millis(2)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(2) }, Millis(3))
        .unwrap();
    assert_eq!(a.consecutive_no_answers(), 0);
}

/// A no-answer and a decline each start their own delay: the agent shows `Delayed`,
/// reservations are refused with `Delayed` until the timer, then it is idle and takes
/// calls again.
#[test]
fn no_answer_and_reject_delays_last_as_configured() {
    for (why, delay) in [
        (OfferFailure::NoAnswer, 20_000),
        (OfferFailure::Declined, 7_000),
    ] {
        let mut a = ready(AgentConfig {
            no_answer_delay_ms: 20_000,
            reject_delay_ms: 7_000,
            ..AgentConfig::default()
        });
        a.handle(reserve(1), Millis(1_000)).unwrap();
        a.handle(AgentInput::Ringing { call: CallId(1) }, Millis(1_100))
            .unwrap();
        let acts = a
            .handle(
                AgentInput::OfferFailed {
                    call: CallId(1),
                    why,
                },
                Millis(16_000),
            )
            .unwrap();
        let (timer, at) = started(&acts, AgentTimerKind::DelayEnd).unwrap();
        assert_eq!(at, Millis(16_000 + delay), "{why:?}");
        assert_eq!(a.delayed_until(), Some(at));
        assert_eq!(a.activity(), AgentActivity::Delayed);
        assert!(emitted(&acts).contains(&AgentNotice::ActivityChanged {
            activity: AgentActivity::Delayed,
            active_calls: 0
        }));
        assert!(!a.can_take_call(Millis(16_000 + delay - 1)));
        assert_eq!(
            a.handle(reserve(2), Millis(16_000 + delay - 1)),
            Err(AgentError::Rejected(RejectReason::Delayed))
        );
        let acts = a.handle(AgentInput::Timer(timer), at).unwrap();
        assert_eq!(a.activity(), AgentActivity::Idle);
        assert!(emitted(&acts).contains(&AgentNotice::ActivityChanged {
            activity: AgentActivity::Idle,
            active_calls: 0
        }));
        a.handle(reserve(2), at).unwrap();
        a.check_invariants().unwrap();
    }
}

#[test]
fn busy_delay_rejects_reservations_until_its_timer() {
    let mut a = ready(AgentConfig::default());
    a.handle(reserve(1), Millis(1_000)).unwrap();
    let acts = a
        .handle(
            AgentInput::OfferFailed {
                call: CallId(1),
                why: OfferFailure::Busy,
            },
            Millis(2_000),
        )
        .unwrap();
    let (delay, at) = started(&acts, AgentTimerKind::DelayEnd).unwrap();
    assert_eq!(at, Millis(62_000));
    assert_eq!(a.delayed_until(), Some(Millis(62_000)));
    assert_eq!(a.consecutive_no_answers(), 0, "busy is not a no-answer");
    let before = a.clone();
    assert_eq!(
        a.handle(reserve(2), Millis(30_000)),
        Err(AgentError::Rejected(RejectReason::Delayed))
    );
    assert_eq!(a, before, "a rejection changes nothing");
    a.handle(AgentInput::Timer(delay.clone()), at).unwrap();
    assert_eq!(a.delayed_until(), None);
    assert!(matches!(
        a.handle(AgentInput::Timer(delay), at),
        Err(AgentError::StaleTimer(_))
    ));
    a.handle(reserve(2), Millis(62_000)).unwrap();
    a.check_invariants().unwrap();
}

#[test]
fn a_shorter_delay_does_not_shorten_a_longer_one() {
    let mut a = ready(AgentConfig {
        max_calls: 2,
        ..AgentConfig::default()
    });
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(reserve(2), Millis(0)).unwrap();
    a.handle(
        AgentInput::OfferFailed {
            call: CallId(1),
            why: OfferFailure::Busy,
        },
        Millis(100),
    )
    .unwrap();
    let acts = a
        .handle(
            AgentInput::OfferFailed {
                call: CallId(2),
                why: OfferFailure::Declined,
            },
            Millis(200),
        )
        .unwrap();
    assert!(started(&acts, AgentTimerKind::DelayEnd).is_none());
    assert_eq!(a.delayed_until(), Some(Millis(60_100)));
}

#[test]
fn capacity_with_max_calls() {
    let mut a = ready(AgentConfig {
        max_calls: 2,
        ..AgentConfig::default()
    });
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(1) }, Millis(10))
        .unwrap();
    assert!(a.can_take_call(Millis(20)));
    let acts = a.handle(reserve(2), Millis(20)).unwrap();
    assert!(emitted(&acts).contains(&AgentNotice::ActivityChanged {
        activity: AgentActivity::OnCall,
        active_calls: 2
    }));
    assert_eq!(a.activity(), AgentActivity::OnCall, "talking dominates");
    assert_eq!(
        a.handle(reserve(3), Millis(30)),
        Err(AgentError::Rejected(RejectReason::AtCapacity))
    );
    assert_eq!(
        a.handle(reserve(2), Millis(30)),
        Err(AgentError::DuplicateCall(CallId(2)))
    );
    a.handle(AgentInput::Release { call: CallId(2) }, Millis(40))
        .unwrap();
    assert_eq!(a.state().active_calls, 1);
    a.handle(reserve(3), Millis(50)).unwrap();
    assert_eq!(a.active_calls().len(), 2);
    a.check_invariants().unwrap();
}

#[test]
fn reservation_expiry_releases_the_call() {
    let mut a = ready(AgentConfig::default());
    let acts = a.handle(reserve(1), Millis(0)).unwrap();
    let (t, at) = started(&acts, AgentTimerKind::ReservationExpiry(CallId(1))).unwrap();
    let acts = a.handle(AgentInput::Timer(t), at).unwrap();
    assert!(emitted(&acts).contains(&AgentNotice::ReservationReleased {
        call: CallId(1),
        reason: ReleaseReason::Expired
    }));
    assert!(a.active_calls().is_empty());
    assert_eq!(a.activity(), AgentActivity::Idle);
    assert_eq!(
        a.history().last().unwrap().input,
        AgentInputKind::ReservationExpired
    );
    assert!(matches!(
        a.handle(AgentInput::Answered { call: CallId(1) }, at),
        Err(AgentError::UnknownCall { .. })
    ));
}

#[test]
fn availability_rules() {
    let mut a = Agent::new(AgentId::new("bob"), AgentConfig::default(), Millis(0));
    assert_eq!(
        a.handle(reserve(1), Millis(0)),
        Err(AgentError::Rejected(RejectReason::NotAvailable))
    );
    a.handle(AgentInput::Login, Millis(0)).unwrap();
    assert_eq!(
        a.handle(reserve(1), Millis(0)),
        Err(AgentError::Rejected(RejectReason::NotRegistered))
    );
    assert!(matches!(
        a.handle(AgentInput::Login, Millis(0)),
        Err(AgentError::InvalidTransition {
            state: "available",
            input: "login"
        })
    ));
    a.handle(AgentInput::Registered, Millis(0)).unwrap();
    a.handle(
        AgentInput::SetStatus(AgentStatus::AvailableOnDemand),
        Millis(1),
    )
    .unwrap();
    assert!(!a.can_take_call(Millis(1)));
    assert_eq!(
        a.handle(reserve(1), Millis(1)),
        Err(AgentError::Rejected(RejectReason::NotAvailable))
    );
    a.handle(
        AgentInput::Reserve {
            call: CallId(1),
            ttl_ms: 1_000,
            direct: true,
        },
        Millis(2),
    )
    .unwrap();
    a.handle(
        AgentInput::SetStatus(AgentStatus::OnBreak {
            reason: "lunch".into(),
        }),
        Millis(3),
    )
    .unwrap();
    assert_eq!(
        a.active_calls().len(),
        1,
        "a break does not cancel the offer"
    );
    a.check_invariants().unwrap();
}

#[test]
fn unregistering_makes_the_agent_unofferable_and_drops_pending_offers() {
    let mut a = ready(AgentConfig::default());
    let acts = a.handle(AgentInput::Unregistered, Millis(5)).unwrap();
    assert!(emitted(&acts).contains(&AgentNotice::RegistrationChanged { registered: false }));
    assert!(!a.can_take_call(Millis(5)));
    assert_eq!(
        a.handle(reserve(1), Millis(5)),
        Err(AgentError::Rejected(RejectReason::NotRegistered))
    );
    a.handle(AgentInput::Registered, Millis(6)).unwrap();
    a.handle(reserve(1), Millis(7)).unwrap();
    let acts = a.handle(AgentInput::Unregistered, Millis(8)).unwrap();
    assert!(emitted(&acts).contains(&AgentNotice::ReservationReleased {
        call: CallId(1),
        reason: ReleaseReason::Unregistered
    }));
    assert!(acts
        .iter()
        .any(|x| matches!(x, AgentAction::CancelTimer { .. })));
    assert_eq!(a.activity(), AgentActivity::Idle);
    a.check_invariants().unwrap();
}

#[test]
fn logout_releases_offers_but_not_calls_in_progress() {
    let mut a = ready(AgentConfig {
        max_calls: 2,
        ..AgentConfig::default()
    });
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(1) }, Millis(10))
        .unwrap();
    a.handle(reserve(2), Millis(20)).unwrap();
    let acts = a.handle(AgentInput::Logout, Millis(30)).unwrap();
    assert_eq!(a.status(), &AgentStatus::LoggedOut);
    assert!(emitted(&acts).contains(&AgentNotice::ReservationReleased {
        call: CallId(2),
        reason: ReleaseReason::LoggedOut
    }));
    assert_eq!(a.activity(), AgentActivity::OnCall);
    let acts = a
        .handle(AgentInput::CallEnded { call: CallId(1) }, Millis(40))
        .unwrap();
    assert!(
        started(&acts, AgentTimerKind::WrapUpEnd).is_none(),
        "no wrap-up when logged out"
    );
    assert_eq!(a.activity(), AgentActivity::Idle);
    assert!(matches!(
        a.handle(AgentInput::Logout, Millis(50)),
        Err(AgentError::InvalidTransition {
            state: "logged_out",
            ..
        })
    ));
    a.check_invariants().unwrap();
}

#[test]
fn invalid_inputs_change_nothing() {
    let mut a = ready(AgentConfig::default());
    a.handle(reserve(1), Millis(0)).unwrap();
    a.handle(AgentInput::Answered { call: CallId(1) }, Millis(1))
        .unwrap();
    let before = a.clone();
    let cases = [
        (
            AgentInput::Ringing { call: CallId(1) },
            AgentError::InvalidTransition {
                state: "on_call",
                input: "ringing",
            },
        ),
        (
            AgentInput::Release { call: CallId(1) },
            AgentError::InvalidTransition {
                state: "on_call",
                input: "release",
            },
        ),
        (
            AgentInput::CallEnded { call: CallId(9) },
            AgentError::UnknownCall {
                call: CallId(9),
                input: "call_ended",
            },
        ),
        (reserve(2), AgentError::Rejected(RejectReason::AtCapacity)),
    ];
    for (input, err) in cases {
        assert_eq!(a.handle(input, Millis(5)), Err(err));
        assert_eq!(a, before);
    }
}

#[test]
fn serde_round_trip() {
    let mut a = ready(AgentConfig::default());
    a.handle(reserve(1), Millis(0)).unwrap();
    let json = serde_json::to_string(&a).unwrap();
    let back: Agent = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a);
    let t = serde_json::to_value(AgentTimerKind::ReservationExpiry(CallId(3))).unwrap();
    assert_eq!(
        t,
        serde_json::json!({"timer": "reservation_expiry", "call": 3})
    );
    assert_eq!(
        OfferFailure::from_cause(&HangupCause::Busy),
        OfferFailure::Busy
    );
    assert_eq!(
        OfferFailure::from_cause(&HangupCause::Status { code: 480 }),
        OfferFailure::NoAnswer
    );
}
