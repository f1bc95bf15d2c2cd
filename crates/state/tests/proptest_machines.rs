//! Property tests: random input sequences (timers included, `now` never decreasing)
//! applied to a `Call` and to an `Agent`, with a fake driver that schedules the timers the
//! machines ask for.

use call_engine_events::{
    AgentActivity, AgentId, AgentStatus, CallId, Disposition, HangupCause, QueueId, RejectReason,
    Side, TransferKind,
};
use call_engine_state::*;
use proptest::prelude::*;
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn cause() -> impl Strategy<Value = HangupCause> {
    prop_oneof![
        Just(HangupCause::Normal),
        Just(HangupCause::Busy),
        Just(HangupCause::Declined),
        Just(HangupCause::NoAnswer),
        Just(HangupCause::Cancelled),
        Just(HangupCause::Failure {
            detail: "rtp timeout".into()
        }),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![
        4 => Just(Side::Customer),
        4 => Just(Side::Agent),
        1 => Just(Side::Engine),
    ]
}

fn agent_id() -> impl Strategy<Value = AgentId> {
    prop_oneof![Just(AgentId::new("alice")), Just(AgentId::new("bob"))]
}

fn call_timer_kind() -> impl Strategy<Value = CallTimerKind> {
    prop_oneof![
        Just(CallTimerKind::RingTimeout),
        Just(CallTimerKind::MaxWait),
        Just(CallTimerKind::TerminateGuard),
    ]
}

#[derive(Debug, Clone)]
enum CallOp {
    Input(CallInput),
    /// Fire the armed timer of this kind (or, if `stale` or none is armed, a timer with a
    /// generation that is not armed).
    Fire {
        kind: CallTimerKind,
        stale: bool,
    },
}

fn call_op() -> impl Strategy<Value = CallOp> {
    let input = prop_oneof![
        prop_oneof![Just("q1"), Just("q2")].prop_map(|q| CallInput::Enqueue {
            queue: QueueId::new(q)
        }),
        agent_id().prop_map(|agent| CallInput::Offer { agent }),
        Just(CallInput::AgentRinging),
        Just(CallInput::AgentAnswered),
        cause().prop_map(|cause| CallInput::OfferFailed { cause }),
        Just(CallInput::Hold),
        Just(CallInput::Resume),
        (
            prop_oneof![Just(TransferKind::Blind), Just(TransferKind::Attended)],
            prop_oneof![Just(""), Just("bob"), Just("sip:ext@example.test")],
        )
            .prop_map(|(kind, target)| CallInput::StartTransfer {
                kind,
                target: target.into()
            }),
        proptest::option::of(agent_id())
            .prop_map(|new_agent| CallInput::TransferCompleted { new_agent }),
        cause().prop_map(|cause| CallInput::TransferFailed { cause }),
        Just(CallInput::ConsultAnswered),
        cause().prop_map(|cause| CallInput::ConsultEnded { cause }),
        (0u16..4).prop_map(|participants| CallInput::StartConference { participants }),
        Just(CallInput::ConferenceEnded),
        (side(), cause()).prop_map(|(side, cause)| CallInput::LegEnded { side, cause }),
        cause().prop_map(|cause| CallInput::Hangup { cause }),
        Just(CallInput::AllLegsGone),
    ];
    prop_oneof![
        4 => input.prop_map(CallOp::Input),
        1 => (call_timer_kind(), any::<bool>()).prop_map(|(kind, stale)| CallOp::Fire { kind, stale }),
    ]
}

fn call_config() -> impl Strategy<Value = CallConfig> {
    (
        1u64..40_000,
        proptest::option::of(0u64..120_000),
        0u64..10_000,
    )
        .prop_map(|(ring, wait, guard)| CallConfig {
            ring_timeout_ms: ring,
            max_wait_ms: wait,
            terminate_guard_ms: guard,
        })
}

#[derive(Debug, Clone)]
enum AgentOp {
    Input(AgentInput),
    /// Fire an agent timer: 0 = a reservation expiry of `call`, 1 = delay end, 2 =
    /// wrap-up end.
    Fire {
        which: u8,
        call: u64,
        stale: bool,
    },
}

fn status() -> impl Strategy<Value = AgentStatus> {
    prop_oneof![
        Just(AgentStatus::LoggedOut),
        Just(AgentStatus::Available),
        Just(AgentStatus::AvailableOnDemand),
        Just(AgentStatus::OnBreak {
            reason: "lunch".into()
        }),
    ]
}

fn offer_failure() -> impl Strategy<Value = OfferFailure> {
    prop_oneof![
        Just(OfferFailure::NoAnswer),
        Just(OfferFailure::Busy),
        Just(OfferFailure::Declined),
    ]
}

fn agent_op() -> impl Strategy<Value = AgentOp> {
    let call = || (1u64..5).prop_map(CallId);
    let input = prop_oneof![
        1 => Just(AgentInput::Login),
        1 => Just(AgentInput::Logout),
        1 => status().prop_map(AgentInput::SetStatus),
        1 => Just(AgentInput::Registered),
        1 => Just(AgentInput::Unregistered),
        5 => (call(), 0u64..40_000, any::<bool>())
            .prop_map(|(call, ttl_ms, direct)| AgentInput::Reserve { call, ttl_ms, direct }),
        3 => call().prop_map(|call| AgentInput::Ringing { call }),
        3 => call().prop_map(|call| AgentInput::Answered { call }),
        3 => (call(), offer_failure()).prop_map(|(call, why)| AgentInput::OfferFailed { call, why }),
        3 => call().prop_map(|call| AgentInput::CallEnded { call }),
        2 => call().prop_map(|call| AgentInput::Release { call }),
        1 => Just(AgentInput::EndWrapUp),
    ];
    prop_oneof![
        4 => input.prop_map(AgentOp::Input),
        1 => (0u8..3, 1u64..5, any::<bool>())
            .prop_map(|(which, call, stale)| AgentOp::Fire { which, call, stale }),
    ]
}

fn agent_config() -> impl Strategy<Value = AgentConfig> {
    (
        0u16..4,
        prop_oneof![Just(0u64), 1u64..20_000],
        prop_oneof![Just(0u64), 1u64..40_000],
        prop_oneof![Just(0u64), 1u64..40_000],
        prop_oneof![Just(0u64), 1u64..40_000],
        0u32..4,
    )
        .prop_map(|(max_calls, wrap, na, busy, reject, max_na)| AgentConfig {
            max_calls,
            wrap_up_ms: wrap,
            no_answer_delay_ms: na,
            busy_delay_ms: busy,
            reject_delay_ms: reject,
            max_no_answer: max_na,
        })
}

// ---------------------------------------------------------------------------------------
// A fake driver: the timers it has scheduled, from the actions it was given.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Scheduler<K: std::hash::Hash + Eq + Clone + std::fmt::Debug> {
    armed: HashMap<K, (TimerId<K>, Millis)>,
}

impl<K: std::hash::Hash + Eq + Clone + std::fmt::Debug> Scheduler<K> {
    fn new() -> Self {
        Self {
            armed: HashMap::new(),
        }
    }

    fn start(&mut self, timer: &TimerId<K>, at: Millis, now: Millis) -> Result<(), TestCaseError> {
        prop_assert!(
            at >= now,
            "timer {timer:?} scheduled in the past ({at} < {now})"
        );
        let old = self.armed.insert(timer.kind.clone(), (timer.clone(), at));
        prop_assert!(
            old.is_none(),
            "{timer:?} started without cancelling {old:?}"
        );
        Ok(())
    }

    fn cancel(&mut self, timer: &TimerId<K>) -> Result<(), TestCaseError> {
        let old = self.armed.remove(&timer.kind);
        prop_assert_eq!(
            old.map(|(t, _)| t),
            Some(timer.clone()),
            "cancel of an unscheduled timer"
        );
        Ok(())
    }

    fn fired(&mut self, timer: &TimerId<K>) -> Result<(), TestCaseError> {
        let old = self.armed.remove(&timer.kind);
        prop_assert_eq!(
            old.map(|(t, _)| t),
            Some(timer.clone()),
            "fired an unscheduled timer"
        );
        Ok(())
    }

    fn same_as(&self, machine: Vec<(TimerId<K>, Millis)>) -> Result<(), TestCaseError> {
        let machine: HashMap<K, (TimerId<K>, Millis)> = machine
            .into_iter()
            .map(|(t, at)| (t.kind.clone(), (t, at)))
            .collect();
        prop_assert_eq!(
            &self.armed,
            &machine,
            "driver and machine disagree on timers"
        );
        Ok(())
    }
}

fn drive_call(
    sched: &mut Scheduler<CallTimerKind>,
    actions: &[CallAction],
    now: Millis,
) -> Result<(), TestCaseError> {
    for a in actions {
        match a {
            CallAction::StartTimer { timer, at } => sched.start(timer, *at, now)?,
            CallAction::CancelTimer { timer } => sched.cancel(timer)?,
            CallAction::Emit(_) => {}
        }
    }
    Ok(())
}

fn drive_agent(
    sched: &mut Scheduler<AgentTimerKind>,
    actions: &[AgentAction],
    now: Millis,
) -> Result<(), TestCaseError> {
    for a in actions {
        match a {
            AgentAction::StartTimer { timer, at } => sched.start(timer, *at, now)?,
            AgentAction::CancelTimer { timer } => sched.cancel(timer)?,
            AgentAction::Emit(_) => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Call
// ---------------------------------------------------------------------------------------

/// How the legs of a call end in [`check_call_can_end`].
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Every leg the machine says is up ends (customer first): nothing else is fed.
    LegsEnd,
    /// The driver confirms with `AllLegsGone` after the customer's leg ended.
    AllLegsGone,
    /// The terminate guard timer fires after the customer's leg ended.
    Guard,
}

/// (b): from any state, the call ends in `Terminated` when its legs end: the customer's
/// leg, then every other leg the machine reports as up, one by one (or, instead of the
/// others, the driver's `AllLegsGone` or the guard timer).
fn check_call_can_end(call: &Call, now: Millis) -> Result<(), TestCaseError> {
    let was_ending = call.state().is_ending();
    let answered = call.answered_at().is_some();
    let fail = |e: CallError| TestCaseError::fail(e.to_string());
    for ending in [Ending::LegsEnd, Ending::AllLegsGone, Ending::Guard] {
        let mut c = call.clone();
        let bye = c.handle(
            CallInput::LegEnded {
                side: Side::Customer,
                cause: HangupCause::Normal,
            },
            now,
        );
        prop_assert_eq!(bye.is_ok(), !call.state().is_final(), "{:?}", bye);
        prop_assert!(c.state().is_ending());
        prop_assert!(!c.legs().customer);
        match ending {
            Ending::LegsEnd => {
                let legs = c.legs();
                if legs.agent {
                    let r = c.handle(
                        CallInput::LegEnded {
                            side: Side::Agent,
                            cause: HangupCause::Normal,
                        },
                        now,
                    );
                    r.map_err(fail)?;
                }
                if legs.consult {
                    let r = c.handle(
                        CallInput::ConsultEnded {
                            cause: HangupCause::Normal,
                        },
                        now,
                    );
                    r.map_err(fail)?;
                }
            }
            Ending::Guard => {
                if let Some((guard, at)) = c.armed_timer(CallTimerKind::TerminateGuard) {
                    c.handle(CallInput::Timer(guard), at.max(now))
                        .map_err(fail)?;
                }
            }
            Ending::AllLegsGone => {
                if !c.state().is_final() {
                    c.handle(CallInput::AllLegsGone, now).map_err(fail)?;
                }
            }
        }
        prop_assert!(
            c.state().is_final(),
            "{:?}: not terminated: {:?}",
            ending,
            c.state()
        );
        prop_assert!(!c.legs().any());
        prop_assert!(c.armed_timers().is_empty());
        if !was_ending {
            let expected = if answered {
                Disposition::Answered
            } else {
                Disposition::Abandoned
            };
            prop_assert_eq!(c.state().disposition(), Some(expected));
        }
        c.check_invariants()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn call_machine_stays_valid(
        config in call_config(),
        start in 0u64..1_000_000,
        steps in proptest::collection::vec((0u64..20_000, call_op()), 0..60),
    ) {
        let mut call = Call::new(CallId(1), config, Millis(start));
        let mut sched = Scheduler::new();
        let mut now = Millis(start);
        let mut accepted = 0usize;
        check_call_can_end(&call, now)?;
        for (delta, op) in steps {
            now = now.plus(delta);
            let before = call.clone();
            let (input, expect_fire) = match op {
                CallOp::Input(i) => (i, None),
                CallOp::Fire { kind, stale } => match call.armed_timer(kind) {
                    Some((t, at)) if !stale => {
                        now = now.max(at);
                        (CallInput::Timer(t.clone()), Some(t))
                    }
                    armed => {
                        let generation = armed.map_or(7, |(t, _)| t.generation + 1);
                        (CallInput::Timer(TimerId { kind, generation }), None)
                    }
                },
            };
            let is_timer = matches!(input, CallInput::Timer(_));
            let kind = input.kind();
            match call.handle(input, now) {
                Ok(actions) => {
                    accepted += 1;
                    prop_assert!(!before.state().is_final(), "left Terminated via {:?}", kind);
                    if let Some(t) = &expect_fire {
                        sched.fired(t)?;
                    } else {
                        prop_assert!(!is_timer, "a stale timer was accepted");
                    }
                    drive_call(&mut sched, &actions, now)?;
                    let last = call.history().last().cloned();
                    prop_assert!(last.is_some());
                    let last = last.unwrap_or_else(|| unreachable!());
                    prop_assert_eq!(last.input, kind);
                    prop_assert_eq!(&last.from, before.state());
                    prop_assert_eq!(&last.to, call.state());
                    prop_assert_eq!(last.at, now);
                    // Facts, once recorded, never change.
                    for (b, a) in [
                        (before.queued_at(), call.queued_at()),
                        (before.answered_at(), call.answered_at()),
                        (before.ended_at(), call.ended_at()),
                    ] {
                        if b.is_some() {
                            prop_assert_eq!(b, a);
                        }
                    }
                    if let Some(d) = before.state().disposition() {
                        prop_assert_eq!(Some(d), call.state().disposition());
                    }
                }
                Err(e) => {
                    prop_assert_eq!(&call, &before, "rejected {:?} ({}) changed the call", kind, e);
                    if expect_fire.is_some() {
                        return Err(TestCaseError::fail(format!("armed timer refused: {e}")));
                    }
                    if is_timer {
                        prop_assert!(matches!(e, CallError::StaleTimer(_)), "{e}");
                    }
                }
            }
            prop_assert_eq!(call.history().len(), accepted);
            call.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
            sched.same_as(call.armed_timers())?;
            check_call_can_end(&call, now)?;
        }
        // (c) the whole history chains from Incoming to the current state.
        let mut prev = CallState::Incoming;
        let mut prev_at = Millis(start);
        for t in call.history() {
            prop_assert_eq!(&t.from, &prev);
            prop_assert!(t.at >= prev_at);
            prev = t.to.clone();
            prev_at = t.at;
        }
        prop_assert_eq!(&prev, call.state());
        if let (Some(a), Some(e)) = (call.answered_at(), call.ended_at()) {
            prop_assert!(a <= e);
            prop_assert_eq!(call.talk_ms(), Some(e.since(a)));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Agent
// ---------------------------------------------------------------------------------------

fn agent_timer_for(agent: &Agent, which: u8, call: u64) -> Option<(AgentTimer, Millis)> {
    let kind = match which {
        0 => AgentTimerKind::ReservationExpiry(CallId(call)),
        1 => AgentTimerKind::DelayEnd,
        _ => AgentTimerKind::WrapUpEnd,
    };
    agent
        .armed_timers()
        .into_iter()
        .find(|(t, _)| t.kind == kind)
        .or(Some((
            TimerId {
                kind,
                generation: u64::MAX,
            },
            Millis(0),
        )))
}

/// No agent can wedge: ending or releasing every call and letting every timer fire
/// leaves it idle with nothing scheduled, able to take calls exactly when its status and
/// registration allow.
fn check_agent_can_drain(agent: &Agent, now: Millis) -> Result<(), TestCaseError> {
    let mut a = agent.clone();
    let fail = |e: AgentError| TestCaseError::fail(e.to_string());
    for c in agent.active_calls() {
        let input = if c.phase.is_pending() {
            AgentInput::Release { call: c.call }
        } else {
            AgentInput::CallEnded { call: c.call }
        };
        a.handle(input, now).map_err(fail)?;
    }
    let mut now = now;
    while let Some((t, at)) = a.armed_timers().into_iter().next() {
        now = now.max(at);
        a.handle(AgentInput::Timer(t), now).map_err(fail)?;
    }
    prop_assert_eq!(a.activity(), AgentActivity::Idle);
    prop_assert!(a.active_calls().is_empty());
    let should =
        a.status() == &AgentStatus::Available && a.is_registered() && a.config().max_calls > 0;
    prop_assert_eq!(a.can_take_call(now), should);
    a.check_invariants()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn agent_machine_stays_valid(
        config in agent_config(),
        steps in proptest::collection::vec((0u64..15_000, agent_op()), 0..80),
    ) {
        let max_calls = usize::from(config.max_calls);
        let mut agent = Agent::new(AgentId::new("alice"), config, Millis(0));
        let mut sched = Scheduler::new();
        let mut now = Millis(0);
        let mut accepted = 0usize;
        for (delta, op) in steps {
            now = now.plus(delta);
            let before = agent.clone();
            let (input, expect_fire) = match op {
                AgentOp::Input(i) => (i, None),
                AgentOp::Fire { which, call, stale } => {
                    let (t, at) = agent_timer_for(&agent, which, call)
                        .unwrap_or_else(|| unreachable!());
                    if t.generation != u64::MAX && !stale {
                        now = now.max(at);
                        (AgentInput::Timer(t.clone()), Some(t))
                    } else {
                        let t = TimerId { generation: t.generation.wrapping_add(1), ..t };
                        (AgentInput::Timer(t), None)
                    }
                }
            };
            let is_timer = matches!(input, AgentInput::Timer(_));
            let reserve = match &input {
                AgentInput::Reserve { call, direct, .. } => Some((*call, *direct)),
                _ => None,
            };
            let offer_failed = match &input {
                AgentInput::OfferFailed { why, .. } => Some(*why),
                _ => None,
            };
            let kind = input.kind();
            let result = agent.handle(input, now);
            // A reservation is refused exactly when `reserve_check` says so.
            if let Some((call, direct)) = reserve {
                let duplicate = before.active_calls().iter().any(|c| c.call == call);
                match (&result, before.reserve_check(now, direct)) {
                    (Err(AgentError::DuplicateCall(_)), _) => prop_assert!(duplicate),
                    (Err(AgentError::Rejected(r)), Err(expected)) => {
                        prop_assert!(!duplicate);
                        prop_assert_eq!(r, &expected);
                    }
                    (Ok(_), Ok(())) => prop_assert!(!duplicate),
                    (r, check) => {
                        return Err(TestCaseError::fail(format!("reserve gave {r:?}, check {check:?}")));
                    }
                }
                if let Err(AgentError::Rejected(RejectReason::AtCapacity)) = &result {
                    prop_assert_eq!(before.active_calls().len(), max_calls);
                }
            }
            match result {
                Ok(actions) => {
                    accepted += 1;
                    if let Some(t) = &expect_fire {
                        sched.fired(t)?;
                    } else {
                        prop_assert!(!is_timer, "a stale timer was accepted");
                    }
                    drive_agent(&mut sched, &actions, now)?;
                    // A failed offer starts (or extends) the delay its kind configures.
                    if let Some(why) = &offer_failed {
                        let cfg = agent.config();
                        let d = match why {
                            OfferFailure::NoAnswer => cfg.no_answer_delay_ms,
                            OfferFailure::Busy => cfg.busy_delay_ms,
                            OfferFailure::Declined => cfg.reject_delay_ms,
                        };
                        let running = before.delayed_until().filter(|&at| at > now);
                        let want = if d > 0 {
                            Some(running.map_or(now.plus(d), |r| r.max(now.plus(d))))
                        } else {
                            running
                        };
                        prop_assert_eq!(agent.delayed_until(), want, "delay after {:?}", why);
                    }
                    let last = agent.history().last().cloned();
                    prop_assert!(last.is_some());
                    let last = last.unwrap_or_else(|| unreachable!());
                    prop_assert_eq!(last.input, kind);
                    prop_assert_eq!(&last.from, &before.state());
                    prop_assert_eq!(&last.to, &agent.state());
                    prop_assert_eq!(last.at, now);
                }
                Err(e) => {
                    prop_assert_eq!(&agent, &before, "rejected {:?} ({}) changed the agent", kind, e);
                    if expect_fire.is_some() {
                        return Err(TestCaseError::fail(format!("armed timer refused: {e}")));
                    }
                    if is_timer {
                        prop_assert!(matches!(e, AgentError::StaleTimer(_)), "{e}");
                    }
                }
            }
            // (d) capacity and consistency.
            prop_assert!(agent.active_calls().len() <= max_calls);
            let pending = agent.active_calls().iter().filter(|c| c.phase.is_pending()).count();
            let on_call = agent.active_calls().iter().filter(|c| c.phase == CallPhase::OnCall).count();
            if agent.status() == &AgentStatus::LoggedOut {
                prop_assert_eq!(pending, 0);
            }
            if !agent.is_registered() {
                prop_assert_eq!(pending, 0);
            }
            match agent.activity() {
                AgentActivity::OnCall => prop_assert!(on_call >= 1),
                AgentActivity::Ringing | AgentActivity::Reserved => {
                    prop_assert!(pending >= 1 && on_call == 0)
                }
                AgentActivity::WrapUp => {
                    prop_assert!(agent.active_calls().is_empty());
                    prop_assert!(agent.wrap_up_until().is_some());
                }
                AgentActivity::Delayed => {
                    prop_assert!(agent.active_calls().is_empty());
                    prop_assert!(agent.wrap_up_until().is_none());
                    prop_assert!(agent.delayed_until().is_some());
                }
                AgentActivity::Idle => {
                    prop_assert!(agent.active_calls().is_empty());
                    prop_assert!(agent.wrap_up_until().is_none() && agent.delayed_until().is_none());
                }
            }
            if agent.can_take_call(now) {
                prop_assert_eq!(agent.status(), &AgentStatus::Available);
                prop_assert!(agent.is_registered());
                prop_assert!(agent.active_calls().len() < max_calls);
            }
            prop_assert_eq!(agent.history().len(), accepted);
            agent.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
            sched.same_as(agent.armed_timers())?;
            check_agent_can_drain(&agent, now)?;
        }
    }
}
