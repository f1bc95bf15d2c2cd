//! Tests of agent status, delays, max no answer, runtime queue login/logout, queue
//! policies (max wait, empty queues, max length, overflow) and callbacks.

use super::*;

fn q(name: &str) -> QueueId {
    QueueId::new(name)
}
fn a(name: &str) -> AgentId {
    AgentId::new(name)
}

fn online(o: &mut Orchestrator, name: &str, now: Millis) -> Vec<Output> {
    o.handle(
        Input::AgentOnline {
            agent: a(name),
            contact: format!("sip:{name}@127.0.0.1").into(),
        },
        now,
    )
}

fn queued(o: &mut Orchestrator, call: u64, queue: &str, now: Millis) -> Vec<Output> {
    o.handle(
        Input::CallQueued {
            call: CallId(call),
            queue: q(queue),
        },
        now,
    )
}

fn rung(out: &[Output]) -> Vec<(u64, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ring { call, agent, .. } => Some((call.0, agent.as_str().to_string())),
            _ => None,
        })
        .collect()
}

fn started(out: &[Output]) -> Vec<(Timer, Millis)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StartTimer { timer, at } => Some((timer.clone(), *at)),
            _ => None,
        })
        .collect()
}

fn status_changes(out: &[Output]) -> Vec<(String, AgentStatus)> {
    out.iter()
        .filter_map(|o| match o {
            Output::AgentStatusChanged { agent, status } => {
                Some((agent.as_str().to_string(), status.clone()))
            }
            _ => None,
        })
        .collect()
}

fn removed(out: &[Output]) -> Vec<(u64, String, RejectCause, Option<SmolStr>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Removed {
                call,
                queue,
                reason,
                prompt,
                ..
            } => Some((call.0, queue.as_str().to_string(), *reason, prompt.clone())),
            _ => None,
        })
        .collect()
}

fn overflowed(out: &[Output]) -> Vec<(u64, String, String, RejectCause)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Overflowed {
                call,
                from,
                to,
                reason,
                ..
            } => Some((
                call.0,
                from.as_str().to_string(),
                to.as_str().to_string(),
                *reason,
            )),
            _ => None,
        })
        .collect()
}

fn orch(queues: Vec<QueueConfig>, agents: Vec<AgentProfile>) -> Orchestrator {
    Orchestrator::with_config(OrchestratorConfig::new(queues, agents))
}

fn support() -> QueueConfig {
    QueueConfig::new(q("support"), Strategy::TopDown)
}

fn agent(name: &str) -> AgentProfile {
    AgentProfile::new(a(name)).with_queue(q("support"))
}

fn fail(
    o: &mut Orchestrator,
    call: u64,
    name: &str,
    why: OfferFailure,
    now: Millis,
) -> Vec<Output> {
    o.handle(
        Input::OfferFailed {
            call: CallId(call),
            agent: a(name),
            why,
        },
        now,
    )
}

fn answer(o: &mut Orchestrator, call: u64, name: &str, now: Millis) -> Vec<Output> {
    o.handle(
        Input::OfferAnswered {
            call: CallId(call),
            agent: a(name),
        },
        now,
    )
}

/// The call was answered for `queue` and is on its way there (not queued yet).
fn arriving(o: &mut Orchestrator, call: u64, queue: &str, now: Millis) -> Vec<Output> {
    o.handle(
        Input::CallArriving {
            call: CallId(call),
            queue: q(queue),
        },
        now,
    )
}

fn end(o: &mut Orchestrator, call: u64, now: Millis) -> Vec<Output> {
    o.handle(Input::CallEnded { call: CallId(call) }, now)
}

fn set_status(o: &mut Orchestrator, name: &str, status: AgentStatus, now: Millis) -> Vec<Output> {
    o.handle(
        Input::AgentStatus {
            agent: a(name),
            status,
        },
        now,
    )
}

fn on_break(reason: &str) -> AgentStatus {
    AgentStatus::OnBreak {
        reason: reason.into(),
    }
}

fn last_verdict(o: &Orchestrator, call: u64, name: &str) -> Option<Verdict> {
    o.explain(CallId(call))
        .last()?
        .candidates
        .iter()
        .find(|c| c.agent.as_str() == name)
        .map(|c| c.verdict.clone())
}

// ---------------------------------------------------------------------------------------
// Agent status.

#[test]
fn logged_out_and_on_break_agents_are_never_offered_calls() {
    let mut o = orch(
        vec![support()],
        vec![
            agent("ann").with_status(AgentStatus::LoggedOut),
            agent("bob").with_status(on_break("lunch")),
        ],
    );
    online(&mut o, "ann", 0);
    online(&mut o, "bob", 0);
    assert_eq!(o.agent_status(&a("ann")), Some(AgentStatus::LoggedOut));
    assert_eq!(o.agent_status(&a("bob")), Some(on_break("lunch")));
    assert_eq!(o.agent_status(&a("nobody")), None);
    let out = queued(&mut o, 1, "support", 10);
    assert!(rung(&out).is_empty(), "{out:?}");
    assert_eq!(last_verdict(&o, 1, "ann"), Some(Verdict::LoggedOut));
    assert_eq!(last_verdict(&o, 1, "bob"), Some(Verdict::Paused));
    assert_eq!(Verdict::LoggedOut.to_string(), "skipped: logged out");
    // Status changes are reported, and routing follows at once.
    let out = set_status(&mut o, "bob", AgentStatus::Available, 20);
    assert_eq!(
        status_changes(&out),
        vec![("bob".to_string(), AgentStatus::Available)]
    );
    assert_eq!(rung(&out), vec![(1, "bob".to_string())]);
    // Setting the same status again reports nothing.
    assert!(set_status(&mut o, "bob", AgentStatus::Available, 30).is_empty());
    // Unknown agents are ignored.
    assert!(set_status(&mut o, "nobody", AgentStatus::Available, 30).is_empty());
}

#[test]
fn paused_maps_to_on_break_and_back_to_available() {
    let mut o = orch(vec![support()], vec![agent("ann")]);
    online(&mut o, "ann", 0);
    let out = o.handle(
        Input::AgentPaused {
            agent: a("ann"),
            paused: true,
        },
        1,
    );
    assert_eq!(
        status_changes(&out),
        vec![("ann".to_string(), on_break("paused"))]
    );
    assert!(!o.agent_available(&a("ann")));
    assert!(rung(&queued(&mut o, 1, "support", 2)).is_empty());
    let out = o.handle(
        Input::AgentPaused {
            agent: a("ann"),
            paused: false,
        },
        3,
    );
    assert_eq!(
        status_changes(&out),
        vec![("ann".to_string(), AgentStatus::Available)]
    );
    assert_eq!(rung(&out), vec![(1, "ann".to_string())]);
}

#[test]
fn on_demand_agents_take_one_call_then_go_on_break() {
    let mut o = orch(
        vec![support()],
        vec![agent("ann").with_status(AgentStatus::AvailableOnDemand)],
    );
    online(&mut o, "ann", 0);
    assert_eq!(
        rung(&queued(&mut o, 1, "support", 10)),
        vec![(1, "ann".into())]
    );
    answer(&mut o, 1, "ann", 20);
    queued(&mut o, 2, "support", 30);
    let out = end(&mut o, 1, 100);
    assert_eq!(
        status_changes(&out),
        vec![("ann".to_string(), on_break("on-demand"))]
    );
    assert!(rung(&out).is_empty(), "not offered call 2: {out:?}");
    assert_eq!(o.agent_status(&a("ann")), Some(on_break("on-demand")));
    // Available on demand again: takes call 2.
    let out = set_status(&mut o, "ann", AgentStatus::AvailableOnDemand, 200);
    assert_eq!(rung(&out), vec![(2, "ann".into())]);
    // A call that was not connected (abandoned while ringing) does not end the
    // on-demand availability.
    let out = end(&mut o, 2, 210);
    assert!(status_changes(&out).is_empty());
    assert_eq!(
        o.agent_status(&a("ann")),
        Some(AgentStatus::AvailableOnDemand)
    );
}

#[test]
fn snapshots_show_status_and_activity() {
    let mut o = orch(
        vec![support().with_wrap_up_ms(1_000)],
        vec![agent("ann").with_busy_delay_ms(500), agent("bob")],
    );
    let act = |o: &Orchestrator, n: &str| o.agent_stats(&a(n)).map(|s| s.activity);
    assert_eq!(act(&o, "ann"), Some(Activity::Idle));
    online(&mut o, "ann", 0);
    queued(&mut o, 1, "support", 10);
    assert_eq!(act(&o, "ann"), Some(Activity::Ringing));
    answer(&mut o, 1, "ann", 20);
    assert_eq!(act(&o, "ann"), Some(Activity::OnCall));
    end(&mut o, 1, 30);
    assert_eq!(act(&o, "ann"), Some(Activity::WrapUp));
    let s = o.agent_stats(&a("ann")).expect("stats");
    assert_eq!(s.wrap_up_until, Some(1_030));
    o.handle(Input::Timer(Timer::WrapUpEnd { agent: a("ann") }), 1_030);
    queued(&mut o, 2, "support", 1_040);
    fail(&mut o, 2, "ann", OfferFailure::Busy, 1_050);
    assert_eq!(act(&o, "ann"), Some(Activity::Delayed));
    let snap = o.agent_snapshot(&a("ann")).expect("snapshot");
    assert_eq!(snap.status, AgentStatus::Available);
    assert_eq!(snap.contact.as_deref(), Some("sip:ann@127.0.0.1"));
    assert_eq!(snap.queues, vec![q("support")]);
    assert_eq!(snap.stats.delayed_until, Some(1_550));
    let all = o.agent_snapshots();
    assert_eq!(
        all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["ann", "bob"]
    );
    assert_eq!(all[1].contact, None);
}

// ---------------------------------------------------------------------------------------
// Delays.

#[test]
fn each_failure_starts_its_own_delay() {
    for (why, delay) in [
        (OfferFailure::Declined, 1_000),
        (OfferFailure::Busy, 2_000),
        (OfferFailure::NoAnswer, 3_000),
    ] {
        let mut o = orch(
            vec![support()],
            vec![agent("ann")
                .with_reject_delay_ms(1_000)
                .with_busy_delay_ms(2_000)
                .with_no_answer_delay_ms(3_000)],
        );
        online(&mut o, "ann", 0);
        queued(&mut o, 1, "support", 10);
        let out = fail(&mut o, 1, "ann", why, 100);
        // Only the delay: she is not eligible (rather than tried), so no retry either.
        assert_eq!(
            started(&out),
            vec![(Timer::DelayEnd { agent: a("ann") }, 100 + delay)],
            "{why:?}"
        );
        assert!(!o.agent_available(&a("ann")));
        assert_eq!(last_verdict(&o, 1, "ann"), Some(Verdict::Delayed));
        // Not offered anything during the delay.
        assert!(rung(&queued(&mut o, 2, "support", 100 + delay - 1)).is_empty());
        assert_eq!(Verdict::Delayed.to_string(), "skipped: delayed");
        // An early DelayEnd changes nothing; the due one frees the agent.
        assert!(o
            .handle(
                Input::Timer(Timer::DelayEnd { agent: a("ann") }),
                100 + delay - 1
            )
            .is_empty());
        let out = o.handle(
            Input::Timer(Timer::DelayEnd { agent: a("ann") }),
            100 + delay,
        );
        // Call 1 already tried her: call 2 goes first.
        assert_eq!(rung(&out), vec![(2, "ann".to_string())], "{why:?}");
        // A second DelayEnd is stale.
        assert!(o
            .handle(
                Input::Timer(Timer::DelayEnd { agent: a("ann") }),
                100 + delay + 1
            )
            .is_empty());
    }
}

#[test]
fn transport_failures_and_zero_delays_do_not_delay() {
    let mut o = orch(
        vec![support()],
        vec![agent("ann").with_reject_delay_ms(1_000)],
    );
    online(&mut o, "ann", 0);
    queued(&mut o, 1, "support", 10);
    let out = fail(&mut o, 1, "ann", OfferFailure::Failed, 20);
    assert!(!started(&out)
        .iter()
        .any(|(t, _)| matches!(t, Timer::DelayEnd { .. })));
    assert!(o.agent_available(&a("ann")));
    // Busy with a zero busy delay.
    let out = o.handle(Input::Timer(Timer::Retry { call: CallId(1) }), 2_020);
    assert_eq!(rung(&out), vec![(1, "ann".to_string())]);
    let out = fail(&mut o, 1, "ann", OfferFailure::Busy, 2_030);
    assert!(!started(&out)
        .iter()
        .any(|(t, _)| matches!(t, Timer::DelayEnd { .. })));
}

#[test]
fn a_ring_timeout_counts_as_no_answer_and_the_delay_applies_in_every_queue() {
    let mut o = orch(
        vec![
            support().with_ring_timeout(5_000),
            QueueConfig::new(q("sales"), Strategy::TopDown),
        ],
        vec![agent("ann")
            .with_queue(q("sales"))
            .with_no_answer_delay_ms(10_000)],
    );
    online(&mut o, "ann", 0);
    queued(&mut o, 1, "support", 0);
    let out = o.handle(
        Input::Timer(Timer::RingTimeout {
            call: CallId(1),
            agent: a("ann"),
        }),
        5_000,
    );
    assert!(started(&out).contains(&(Timer::DelayEnd { agent: a("ann") }, 15_000)));
    assert_eq!(o.agent_stats(&a("ann")).map(|s| s.no_answers), Some(1));
    // Another queue's caller is not offered to her either.
    assert!(rung(&queued(&mut o, 2, "sales", 6_000)).is_empty());
    assert_eq!(last_verdict(&o, 2, "ann"), Some(Verdict::Delayed));
    let out = o.handle(Input::Timer(Timer::DelayEnd { agent: a("ann") }), 15_000);
    assert_eq!(rung(&out).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Max no answer.

#[test]
fn consecutive_no_answers_put_the_agent_on_break_and_an_answer_resets_the_count() {
    let mut o = orch(
        vec![support().with_retry_delay(0)],
        vec![agent("ann").with_max_no_answer(3)],
    );
    online(&mut o, "ann", 0);
    let mut now = 10;
    let mut ring_fail = |o: &mut Orchestrator, call: u64, why: OfferFailure| {
        now += 10;
        queued(o, call, "support", now);
        now += 10;
        let out = fail(o, call, "ann", why, now);
        end(o, call, now);
        out
    };
    ring_fail(&mut o, 1, OfferFailure::NoAnswer);
    ring_fail(&mut o, 2, OfferFailure::NoAnswer);
    // Busy neither counts nor resets.
    ring_fail(&mut o, 3, OfferFailure::Busy);
    assert_eq!(o.agent_stats(&a("ann")).map(|s| s.no_answers), Some(2));
    // An answer resets.
    queued(&mut o, 4, "support", 500);
    answer(&mut o, 4, "ann", 510);
    end(&mut o, 4, 520);
    assert_eq!(o.agent_stats(&a("ann")).map(|s| s.no_answers), Some(0));
    for c in 5..7 {
        let out = ring_fail(&mut o, c, OfferFailure::NoAnswer);
        assert!(status_changes(&out).is_empty());
    }
    let out = ring_fail(&mut o, 7, OfferFailure::NoAnswer);
    assert_eq!(
        status_changes(&out),
        vec![("ann".to_string(), on_break("auto: no answer"))]
    );
    assert!(rung(&queued(&mut o, 8, "support", 1_000)).is_empty());
    assert_eq!(last_verdict(&o, 8, "ann"), Some(Verdict::Paused));
    // Back to available: the count restarts and she takes the waiting call.
    let out = set_status(&mut o, "ann", AgentStatus::Available, 2_000);
    assert_eq!(rung(&out), vec![(8, "ann".to_string())]);
    assert_eq!(o.agent_stats(&a("ann")).map(|s| s.no_answers), Some(0));
}

// ---------------------------------------------------------------------------------------
// Queue login / logout.

#[test]
fn queue_login_and_logout_change_routing_at_once() {
    let mut o = orch(
        vec![support(), QueueConfig::new(q("sales"), Strategy::TopDown)],
        vec![
            AgentProfile::new(a("ann")).with_queue(q("sales")),
            agent("bob"),
        ],
    );
    online(&mut o, "ann", 0);
    assert!(rung(&queued(&mut o, 1, "support", 10)).is_empty());
    // ann logs into support: offered the waiting call in the same step.
    let out = o.handle(
        Input::QueueLogin {
            agent: a("ann"),
            membership: Membership::new(q("support")).with_position(5),
        },
        20,
    );
    assert_eq!(rung(&out), vec![(1, "ann".to_string())]);
    assert_eq!(o.members(&q("support")), vec![a("bob"), a("ann")]);
    // Logging out of support: the ringing call goes on and can be answered.
    let out = o.handle(
        Input::QueueLogout {
            agent: a("ann"),
            queue: q("support"),
        },
        30,
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(o.members(&q("support")), vec![a("bob")]);
    assert_eq!(
        o.agent_snapshot(&a("ann")).map(|s| s.queues),
        Some(vec![q("sales")])
    );
    answer(&mut o, 1, "ann", 40);
    end(&mut o, 1, 50);
    // Not offered support calls any more; still sales ones.
    assert!(rung(&queued(&mut o, 2, "support", 60)).is_empty());
    assert_eq!(
        rung(&queued(&mut o, 3, "sales", 70)),
        vec![(3, "ann".into())]
    );
    // bob comes online: the support caller goes to him.
    assert_eq!(rung(&online(&mut o, "bob", 80)), vec![(2, "bob".into())]);
    // Unknown agent, queue, or not a member: ignored.
    for input in [
        Input::QueueLogout {
            agent: a("ann"),
            queue: q("support"),
        },
        Input::QueueLogout {
            agent: a("zed"),
            queue: q("support"),
        },
        Input::QueueLogin {
            agent: a("ann"),
            membership: Membership::new(q("nope")),
        },
    ] {
        assert!(o.handle(input, 90).is_empty());
    }
}

#[test]
fn queue_login_updates_an_existing_membership_and_keeps_the_order() {
    let mut o = orch(
        vec![support().with_max_penalty(0)],
        vec![
            agent("ann"),
            AgentProfile::new(a("bob"))
                .with_membership(Membership::new(q("support")).with_penalty(3)),
            agent("cat"),
        ],
    );
    online(&mut o, "bob", 0);
    assert!(rung(&queued(&mut o, 1, "support", 10)).is_empty());
    assert!(matches!(
        last_verdict(&o, 1, "bob"),
        Some(Verdict::PenaltyTooHigh { penalty: 3, .. })
    ));
    // bob's penalty lowered to 0 and moved last: eligible at once.
    let out = o.handle(
        Input::QueueLogin {
            agent: a("bob"),
            membership: Membership::new(q("support")).with_position(9),
        },
        20,
    );
    assert_eq!(rung(&out), vec![(1, "bob".into())]);
    assert_eq!(o.members(&q("support")), vec![a("ann"), a("cat"), a("bob")]);
    // Explanations name the right agents after the reorder.
    assert_eq!(last_verdict(&o, 1, "bob"), Some(Verdict::Chosen));
}

// ---------------------------------------------------------------------------------------
// Max wait.

#[test]
fn max_wait_removes_the_caller_with_the_prompt() {
    let mut o = orch(
        vec![support().with_max_wait(
            60_000,
            QueueAction::Hangup {
                prompt: Some("sorry".into()),
            },
        )],
        vec![agent("ann")],
    );
    let out = queued(&mut o, 1, "support", 1_000);
    assert_eq!(
        started(&out),
        vec![(Timer::MaxWait { call: CallId(1) }, 61_000)]
    );
    // Early: nothing.
    assert!(o
        .handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 60_999)
        .is_empty());
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 61_000);
    assert_eq!(
        out,
        vec![Output::Removed {
            call: CallId(1),
            queue: q("support"),
            reason: RejectCause::MaxWait,
            prompt: Some("sorry".into()),
            waited_ms: 60_000,
        }]
    );
    assert!(o.waiting(&q("support")).is_empty());
    // Gone: a hang-up now reports nothing.
    assert!(end(&mut o, 1, 62_000).is_empty());
}

#[test]
fn max_wait_cancels_rings_in_progress_and_answered_calls_cancel_it() {
    let mut o = orch(
        vec![QueueConfig::new(q("support"), Strategy::RingAll)
            .with_max_wait(10_000, QueueAction::default())],
        vec![agent("ann"), agent("bob")],
    );
    online(&mut o, "ann", 0);
    online(&mut o, "bob", 0);
    assert_eq!(rung(&queued(&mut o, 1, "support", 0)).len(), 2);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 10_000);
    let cancels: Vec<&Output> = out
        .iter()
        .filter(|x| matches!(x, Output::CancelRing { .. }))
        .collect();
    assert_eq!(cancels.len(), 2, "{out:?}");
    assert_eq!(removed(&out).len(), 1);
    assert!(o.agent_available(&a("ann")) && o.agent_available(&a("bob")));
    // A call answered in time has its max wait cancelled.
    queued(&mut o, 2, "support", 11_000);
    let out = answer(&mut o, 2, "ann", 12_000);
    assert!(out.contains(&Output::CancelTimer {
        timer: Timer::MaxWait { call: CallId(2) }
    }));
    // And an abandoned one too.
    queued(&mut o, 3, "support", 13_000);
    let out = end(&mut o, 3, 14_000);
    assert!(out.contains(&Output::CancelTimer {
        timer: Timer::MaxWait { call: CallId(3) }
    }));
}

#[test]
fn max_wait_overflow_keeps_priority_skills_and_seniority() {
    let mut o = orch(
        vec![
            support().with_max_wait(30_000, QueueAction::Overflow { queue: q("backup") }),
            QueueConfig::new(q("backup"), Strategy::TopDown)
                .with_max_wait(5_000, QueueAction::Hangup { prompt: None }),
        ],
        vec![AgentProfile::new(a("ann"))
            .with_queue(q("backup"))
            .with_skill("french", 2)],
    );
    online(&mut o, "ann", 0);
    o.handle(
        Input::AgentPaused {
            agent: a("ann"),
            paused: true,
        },
        0,
    );
    o.handle(
        Input::CallQueuedWith {
            call: CallId(1),
            queue: q("support"),
            routing: CallRouting::new()
                .with_priority(5)
                .with_entered_at(100)
                .with_skill("french", 3),
        },
        1_000,
    );
    queued(&mut o, 2, "backup", 2_000);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 31_000);
    assert_eq!(
        overflowed(&out),
        vec![(1, "support".into(), "backup".into(), RejectCause::MaxWait)]
    );
    assert!(out.contains(&Output::StartTimer {
        timer: Timer::MaxWait { call: CallId(1) },
        at: 36_000
    }));
    // Priority first in the new queue, with its seniority and its own skill.
    assert_eq!(o.waiting(&q("backup")), vec![CallId(1), CallId(2)]);
    let d = o.explain(CallId(1));
    let last = d.last().expect("decision in backup");
    assert_eq!(last.queue, q("backup"));
    assert_eq!((last.priority, last.entered_at), (5, 100));
    assert_eq!(
        last.required_skills,
        vec![SkillRequirement::new("french", 3)]
    );
}

// ---------------------------------------------------------------------------------------
// Max length, overflow chains, loops.

#[test]
fn a_full_queue_rejects_or_overflows() {
    let mut o = orch(
        vec![
            support().with_max_len(1, FullAction::Reject),
            QueueConfig::new(q("other"), Strategy::TopDown),
        ],
        vec![agent("ann")],
    );
    assert_eq!(o.admit(&q("support"), 0), Admission::Join);
    queued(&mut o, 1, "support", 0);
    assert_eq!(
        o.admit(&q("support"), 1),
        Admission::Reject {
            reason: RejectCause::Full
        }
    );
    let out = queued(&mut o, 2, "support", 1);
    assert_eq!(
        out,
        vec![Output::Removed {
            call: CallId(2),
            queue: q("support"),
            reason: RejectCause::Full,
            prompt: None,
            waited_ms: 0,
        }]
    );
    assert_eq!(o.waiting(&q("support")), vec![CallId(1)]);
    // Room again once the caller leaves.
    end(&mut o, 1, 2);
    assert_eq!(o.admit(&q("support"), 3), Admission::Join);
    // ...unless a call admitted a moment ago is on its way (answered, not queued yet)...
    let full = Admission::Reject {
        reason: RejectCause::Full,
    };
    assert!(arriving(&mut o, 3, "support", 3).is_empty());
    assert!(o.has_call(CallId(3)));
    assert_eq!(o.admit(&q("support"), 3), full);
    // ...which, once queued, counts once (not also as arriving, nor against its own
    // admission)...
    queued(&mut o, 3, "support", 4);
    assert_eq!(o.waiting(&q("support")), vec![CallId(3)]);
    assert_eq!(o.admit(&q("support"), 4), full);
    end(&mut o, 3, 5);
    assert_eq!(o.admit(&q("support"), 5), Admission::Join);
    // ...or stops counting when it ends before being queued.
    arriving(&mut o, 4, "support", 6);
    assert_eq!(o.admit(&q("support"), 6), full);
    end(&mut o, 4, 7);
    assert!(!o.has_call(CallId(4)));
    assert_eq!(o.admit(&q("support"), 7), Admission::Join);
    // Calls on their way to another queue do not count.
    arriving(&mut o, 5, "other", 8);
    assert_eq!(o.admit(&q("support"), 8), Admission::Join);
    assert_eq!(o.admit(&q("other"), 8), Admission::Join, "no max_len there");

    // Overflow.
    let mut o = orch(
        vec![
            support().with_max_len(1, FullAction::Overflow { queue: q("backup") }),
            QueueConfig::new(q("backup"), Strategy::TopDown),
        ],
        vec![AgentProfile::new(a("bob")).with_queue(q("backup"))],
    );
    online(&mut o, "bob", 0);
    arriving(&mut o, 1, "support", 0);
    assert_eq!(
        o.admit(&q("support"), 1),
        Admission::Overflow { queue: q("backup") },
        "a call on its way fills the queue too: the next overflows"
    );
    queued(&mut o, 1, "support", 0);
    assert_eq!(
        o.admit(&q("support"), 1),
        Admission::Overflow { queue: q("backup") }
    );
    let out = queued(&mut o, 2, "support", 1);
    assert_eq!(
        overflowed(&out),
        vec![(2, "support".into(), "backup".into(), RejectCause::Full)]
    );
    assert_eq!(rung(&out), vec![(2, "bob".into())]);
}

#[test]
fn overflow_chains_follow_and_loops_or_unknown_queues_remove() {
    let full_to = |name: &str, to: &str| {
        QueueConfig::new(q(name), Strategy::TopDown)
            .with_max_len(0, FullAction::Overflow { queue: q(to) })
    };
    // a → b → c (joins c).
    let mut o = orch(
        vec![
            full_to("a", "b"),
            full_to("b", "c"),
            QueueConfig::new(q("c"), Strategy::TopDown),
        ],
        vec![],
    );
    assert_eq!(o.admit(&q("a"), 0), Admission::Overflow { queue: q("c") });
    let out = queued(&mut o, 1, "a", 0);
    assert_eq!(
        overflowed(&out),
        vec![
            (1, "a".into(), "b".into(), RejectCause::Full),
            (1, "b".into(), "c".into(), RejectCause::Full)
        ]
    );
    assert_eq!(o.waiting(&q("c")), vec![CallId(1)]);
    // a → b → a: removed by the loop guard.
    let mut o = orch(vec![full_to("a", "b"), full_to("b", "a")], vec![]);
    assert_eq!(
        o.admit(&q("a"), 0),
        Admission::Reject {
            reason: RejectCause::OverflowLoop
        }
    );
    let out = queued(&mut o, 1, "a", 0);
    assert_eq!(
        overflowed(&out),
        vec![(1, "a".into(), "b".into(), RejectCause::Full)]
    );
    assert_eq!(
        removed(&out),
        vec![(1, "b".into(), RejectCause::OverflowLoop, None)]
    );
    assert!(o.waiting(&q("a")).is_empty() && o.waiting(&q("b")).is_empty());
    // Overflow to itself and to an unknown queue.
    let mut o = orch(vec![full_to("a", "a"), full_to("b", "zzz")], vec![]);
    assert_eq!(
        removed(&queued(&mut o, 1, "a", 0)),
        vec![(1, "a".into(), RejectCause::OverflowLoop, None)]
    );
    assert_eq!(
        o.admit(&q("b"), 0),
        Admission::Reject {
            reason: RejectCause::UnknownQueue
        }
    );
    assert_eq!(
        removed(&queued(&mut o, 2, "b", 0)),
        vec![(2, "b".into(), RejectCause::UnknownQueue, None)]
    );
    assert_eq!(
        o.admit(&q("nope"), 0),
        Admission::Reject {
            reason: RejectCause::UnknownQueue
        }
    );
    // A max-wait overflow back into a queue it came from: removed.
    let mut o = orch(
        vec![
            QueueConfig::new(q("a"), Strategy::TopDown)
                .with_max_wait(1_000, QueueAction::Overflow { queue: q("b") }),
            QueueConfig::new(q("b"), Strategy::TopDown)
                .with_max_wait(1_000, QueueAction::Overflow { queue: q("a") }),
        ],
        vec![],
    );
    queued(&mut o, 1, "a", 0);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 1_000);
    assert_eq!(overflowed(&out).len(), 1);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 2_000);
    assert_eq!(
        removed(&out),
        vec![(1, "b".into(), RejectCause::OverflowLoop, None)]
    );
}

// ---------------------------------------------------------------------------------------
// Empty queues.

#[test]
fn join_empty_no_members_counts_agents_on_break_as_members() {
    let mut o = orch(
        vec![support()
            .with_join_empty(EmptyCondition::NoMembers)
            .with_empty_action(QueueAction::Hangup {
                prompt: Some("closed".into()),
            })],
        vec![agent("ann")],
    );
    let empty = Admission::Reject {
        reason: RejectCause::Empty,
    };
    // Offline: empty.
    assert_eq!(o.admit(&q("support"), 0), empty);
    assert_eq!(
        removed(&queued(&mut o, 1, "support", 0)),
        vec![(
            1,
            "support".into(),
            RejectCause::Empty,
            Some("closed".into())
        )]
    );
    // Online but on a break: a member.
    online(&mut o, "ann", 1);
    set_status(&mut o, "ann", on_break("lunch"), 2);
    assert_eq!(o.admit(&q("support"), 3), Admission::Join);
    assert!(removed(&queued(&mut o, 2, "support", 3)).is_empty());
    // Logged out: empty again.
    set_status(&mut o, "ann", AgentStatus::LoggedOut, 4);
    assert_eq!(o.admit(&q("support"), 5), empty);
    assert_eq!(removed(&queued(&mut o, 3, "support", 5)).len(), 1);
    // Not a member any more (logout from the queue): empty.
    set_status(&mut o, "ann", AgentStatus::Available, 6);
    assert_eq!(o.admit(&q("support"), 6), Admission::Join);
    o.handle(
        Input::QueueLogout {
            agent: a("ann"),
            queue: q("support"),
        },
        7,
    );
    assert_eq!(o.admit(&q("support"), 8), empty);
}

#[test]
fn join_empty_none_available_needs_a_member_taking_calls() {
    let mut o = orch(
        vec![support().with_join_empty(EmptyCondition::NoneAvailable)],
        vec![agent("ann")],
    );
    online(&mut o, "ann", 0);
    set_status(&mut o, "ann", on_break("lunch"), 1);
    assert_eq!(
        o.admit(&q("support"), 2),
        Admission::Reject {
            reason: RejectCause::Empty
        }
    );
    assert_eq!(removed(&queued(&mut o, 1, "support", 2)).len(), 1);
    set_status(&mut o, "ann", AgentStatus::Available, 3);
    // Busy on a call still counts as available.
    assert_eq!(
        rung(&queued(&mut o, 2, "support", 4)),
        vec![(2, "ann".into())]
    );
    answer(&mut o, 2, "ann", 5);
    assert_eq!(o.admit(&q("support"), 6), Admission::Join);
    assert!(removed(&queued(&mut o, 3, "support", 6)).is_empty());
}

#[test]
fn leave_when_empty_makes_callers_leave_in_queue_order() {
    for cond in [EmptyCondition::NoMembers, EmptyCondition::NoneAvailable] {
        let mut o = orch(
            vec![
                support()
                    .with_leave_when_empty(cond)
                    .with_empty_action(QueueAction::Overflow { queue: q("other") }),
                QueueConfig::new(q("other"), Strategy::TopDown),
            ],
            vec![agent("ann").with_max_calls(1)],
        );
        online(&mut o, "ann", 0);
        queued(&mut o, 1, "support", 10); // rings ann
        queued(&mut o, 2, "support", 20);
        o.handle(
            Input::CallQueuedWith {
                call: CallId(3),
                queue: q("support"),
                routing: CallRouting::new().with_priority(1),
            },
            30,
        );
        // Going on break empties the queue for NoneAvailable only; logging out for both.
        let out = set_status(&mut o, "ann", on_break("x"), 40);
        if cond == EmptyCondition::NoneAvailable {
            assert_eq!(
                overflowed(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
                vec![3, 1, 2],
                "{out:?}"
            );
            // The ring in progress was cancelled.
            assert!(out.contains(&Output::CancelRing {
                call: CallId(1),
                agent: a("ann")
            }));
            assert_eq!(o.waiting(&q("other")).len(), 3);
            continue;
        }
        assert!(overflowed(&out).is_empty());
        let out = o.handle(Input::AgentOffline { agent: a("ann") }, 50);
        assert_eq!(
            overflowed(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![3, 1, 2],
            "{out:?}"
        );
        assert!(overflowed(&out).iter().all(|x| x.3 == RejectCause::Empty));
        assert!(o.waiting(&q("support")).is_empty());
        // A caller arriving now would leave at once: refused.
        assert_eq!(
            o.admit(&q("support"), 60),
            Admission::Overflow { queue: q("other") }
        );
    }
}

#[test]
fn max_wait_no_agent_removes_callers_of_a_memberless_queue() {
    let mut o = orch(
        vec![support()
            .with_max_wait_no_agent(20_000)
            .with_empty_action(QueueAction::Hangup {
                prompt: Some("nobody".into()),
            })],
        vec![agent("ann")],
    );
    // A caller joins a memberless queue: the clock starts.
    let out = queued(&mut o, 1, "support", 1_000);
    let timer = Timer::NoAgent {
        queue: q("support"),
    };
    assert_eq!(started(&out), vec![(timer.clone(), 21_000)]);
    queued(&mut o, 2, "support", 5_000);
    // A member logs in: cancelled.
    let out = online(&mut o, "ann", 6_000);
    assert!(out.contains(&Output::CancelTimer {
        timer: timer.clone()
    }));
    answer(&mut o, 1, "ann", 6_100);
    // The member leaves: the clock starts again, from then.
    let out = o.handle(Input::AgentOffline { agent: a("ann") }, 7_000);
    assert_eq!(started(&out), vec![(timer.clone(), 27_000)]);
    // A stale (early) timer changes nothing.
    assert!(o.handle(Input::Timer(timer.clone()), 21_000).is_empty());
    queued(&mut o, 3, "support", 8_000);
    let out = o.handle(Input::Timer(timer.clone()), 27_000);
    assert_eq!(
        removed(&out),
        vec![
            (
                2,
                "support".into(),
                RejectCause::NoAgent,
                Some("nobody".into())
            ),
            (
                3,
                "support".into(),
                RejectCause::NoAgent,
                Some("nobody".into())
            )
        ]
    );
    // Still memberless past the limit: new callers are refused on joining.
    assert_eq!(
        o.admit(&q("support"), 30_000),
        Admission::Reject {
            reason: RejectCause::NoAgent
        }
    );
    assert_eq!(removed(&queued(&mut o, 4, "support", 30_000)).len(), 1);
    // Members on a break count as members.
    online(&mut o, "ann", 31_000);
    set_status(&mut o, "ann", on_break("x"), 31_000);
    assert_eq!(o.admit(&q("support"), 80_000), Admission::Join);
}

#[test]
fn admit_agrees_with_enqueue_and_changes_nothing() {
    let mut o = orch(
        vec![
            support()
                .with_max_len(2, FullAction::Overflow { queue: q("b") })
                .with_join_empty(EmptyCondition::NoneAvailable),
            QueueConfig::new(q("b"), Strategy::TopDown).with_max_len(1, FullAction::Reject),
        ],
        vec![agent("ann").with_queue(q("b"))],
    );
    for call in 1..8u64 {
        let now = call * 10;
        if call == 3 {
            online(&mut o, "ann", now);
            set_status(&mut o, "ann", on_break("x"), now);
            set_status(&mut o, "ann", AgentStatus::Available, now);
        }
        let before = (o.waiting(&q("support")), o.waiting(&q("b")));
        let admission = o.admit(&q("support"), now);
        assert_eq!((o.waiting(&q("support")), o.waiting(&q("b"))), before);
        let out = queued(&mut o, call, "support", now);
        match &admission {
            Admission::Join => {
                assert!(removed(&out).is_empty() && overflowed(&out).is_empty());
                assert!(o.waiting(&q("support")).contains(&CallId(call)));
            }
            Admission::Reject { reason } => {
                assert_eq!(removed(&out).last().map(|r| r.2), Some(*reason), "{out:?}")
            }
            Admission::Overflow { queue } => {
                assert_eq!(
                    overflowed(&out).last().map(|x| x.2.clone()),
                    Some(queue.as_str().to_string())
                );
                assert!(removed(&out).is_empty());
                assert!(o.waiting(queue).contains(&CallId(call)));
            }
        }
    }
}

#[test]
fn policy_config_defaults_when_absent_from_json() {
    let mut v = serde_json::to_value(support()).expect("serializes");
    for k in [
        "max_wait_ms",
        "max_wait_action",
        "join_empty",
        "leave_when_empty",
        "empty_action",
        "max_wait_no_agent_ms",
        "max_len",
        "full_action",
    ] {
        assert!(v.as_object_mut().and_then(|m| m.remove(k)).is_some(), "{k}");
    }
    let c: QueueConfig = serde_json::from_value(v).expect("old queue config");
    assert_eq!(c, support());
    let mut v = serde_json::to_value(AgentProfile::new(a("x"))).expect("serializes");
    for k in [
        "status",
        "reject_delay_ms",
        "busy_delay_ms",
        "no_answer_delay_ms",
        "max_no_answer",
    ] {
        assert!(v.as_object_mut().and_then(|m| m.remove(k)).is_some(), "{k}");
    }
    let p: AgentProfile = serde_json::from_value(v).expect("old profile");
    assert_eq!(p, AgentProfile::new(a("x")));
    assert_eq!(p.status, AgentStatus::Available);
    // The actions round-trip.
    let c = support()
        .with_max_wait(5, QueueAction::Overflow { queue: q("b") })
        .with_max_len(3, FullAction::Overflow { queue: q("c") })
        .with_leave_when_empty(EmptyCondition::NoneAvailable);
    let back: QueueConfig =
        serde_json::from_str(&serde_json::to_string(&c).unwrap_or_default()).expect("json");
    assert_eq!(back, c);
}

// ---------------------------------------------------------------------------------------
// Callbacks.

/// Whether `out` places the callback of `call`.
fn calls_back(out: &[Output], call: u64) -> bool {
    out.iter()
        .any(|x| matches!(x, Output::Callback { call: c, .. } if *c == CallId(call)))
}

fn callback_setup(strategy: Strategy) -> Orchestrator {
    let mut o = orch(
        vec![QueueConfig::new(q("support"), strategy).with_ring_timeout(10_000)],
        vec![agent("ann"), agent("bob")],
    );
    queued(&mut o, 1, "support", 0);
    o
}

#[test]
fn callback_reserves_one_agent_then_rings_when_the_customer_answers() {
    let mut o = callback_setup(Strategy::RingAll);
    assert!(o
        .handle(Input::CallbackRequested { call: CallId(1) }, 10)
        .is_empty());
    // Ring-all, but a callback reserves one agent only.
    online(&mut o, "ann", 20);
    let out = online(&mut o, "bob", 20);
    assert!(out.is_empty(), "{out:?}");
    let mut o = callback_setup(Strategy::RingAll);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    let mut out = online(&mut o, "bob", 20);
    out.extend(online(&mut o, "ann", 20));
    assert_eq!(
        out,
        vec![Output::Callback {
            call: CallId(1),
            queue: q("support"),
            agent: a("bob"),
        }]
    );
    // Reserved: counts as a call, no ring timeout yet.
    assert_eq!(o.agent_calls(&a("bob")), vec![CallId(1)]);
    assert!(!o.agent_available(&a("bob")));
    assert_eq!(
        o.agent_stats(&a("bob")).map(|s| s.activity),
        Some(Activity::Reserved)
    );
    assert_eq!(
        o.explain(CallId(1)).last().map(|d| d.outcome.clone()),
        Some(Outcome::Reserved { agent: a("bob") })
    );
    // Answers to a reservation are not answers to a ring.
    assert!(answer(&mut o, 1, "bob", 25).is_empty());
    let out = o.handle(Input::CallbackAnswered { call: CallId(1) }, 30);
    assert_eq!(
        out,
        vec![
            Output::Ring {
                call: CallId(1),
                queue: q("support"),
                agent: a("bob"),
                contact: "sip:bob@127.0.0.1".into(),
            },
            Output::StartTimer {
                timer: Timer::RingTimeout {
                    call: CallId(1),
                    agent: a("bob")
                },
                at: 10_030,
            }
        ]
    );
    // From now on an ordinary call: bob fails, ann gets it.
    let out = fail(&mut o, 1, "bob", OfferFailure::NoAnswer, 40);
    assert_eq!(rung(&out), vec![(1, "ann".into())]);
    let out = answer(&mut o, 1, "ann", 50);
    assert!(out.iter().any(|x| matches!(x, Output::Assigned { .. })));
}

#[test]
fn callback_failed_releases_the_agent_without_penalty_and_removes_the_call() {
    let mut o = orch(
        vec![support()],
        vec![agent("ann")
            .with_max_no_answer(1)
            .with_no_answer_delay_ms(5_000)],
    );
    online(&mut o, "ann", 0);
    queued(&mut o, 1, "support", 0); // rings ann
    let out = o.handle(Input::CallbackRequested { call: CallId(1) }, 100);
    // The ring is cancelled, then ann is reserved.
    assert_eq!(
        out,
        vec![
            Output::CancelRing {
                call: CallId(1),
                agent: a("ann")
            },
            Output::CancelTimer {
                timer: Timer::RingTimeout {
                    call: CallId(1),
                    agent: a("ann")
                }
            },
            Output::Callback {
                call: CallId(1),
                queue: q("support"),
                agent: a("ann")
            }
        ]
    );
    queued(&mut o, 2, "support", 150);
    let out = o.handle(Input::CallbackFailed { call: CallId(1) }, 200);
    assert_eq!(
        removed(&out),
        vec![(1, "support".into(), RejectCause::CallbackFailed, None)]
    );
    // No delay, no no-answer: ann takes the next caller at once.
    assert_eq!(rung(&out), vec![(2, "ann".into())]);
    assert_eq!(o.agent_stats(&a("ann")).map(|s| s.no_answers), Some(0));
    // CallbackFailed for an ordinary call is ignored.
    assert!(o
        .handle(Input::CallbackFailed { call: CallId(2) }, 210)
        .is_empty());
}

#[test]
fn a_call_ending_midway_through_a_callback_frees_everything() {
    // While waiting (not reserved yet).
    let mut o = callback_setup(Strategy::TopDown);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    let out = end(&mut o, 1, 20);
    assert!(
        matches!(out.as_slice(), [Output::Abandoned { .. }]),
        "{out:?}"
    );
    // While reserved: the agent is released, no CANCEL is sent.
    let mut o = callback_setup(Strategy::TopDown);
    online(&mut o, "ann", 0);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    assert_eq!(o.agent_calls(&a("ann")), vec![CallId(1)]);
    let out = end(&mut o, 1, 20);
    assert!(!out.iter().any(|x| matches!(x, Output::CancelRing { .. })));
    assert!(out.iter().any(|x| matches!(x, Output::Abandoned { .. })));
    assert!(o.agent_available(&a("ann")));
    // While ringing after the customer answered.
    let mut o = callback_setup(Strategy::TopDown);
    online(&mut o, "ann", 0);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    o.handle(Input::CallbackAnswered { call: CallId(1) }, 15);
    let out = end(&mut o, 1, 20);
    assert!(out.contains(&Output::CancelRing {
        call: CallId(1),
        agent: a("ann")
    }));
    assert!(o.agent_available(&a("ann")));
    // Connected.
    let mut o = callback_setup(Strategy::TopDown);
    online(&mut o, "ann", 0);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    o.handle(Input::CallbackAnswered { call: CallId(1) }, 15);
    answer(&mut o, 1, "ann", 16);
    end(&mut o, 1, 20);
    assert!(o.agent_available(&a("ann")));
    // Callback inputs for unknown or ended calls are ignored.
    for input in [
        Input::CallbackRequested { call: CallId(1) },
        Input::CallbackAnswered { call: CallId(1) },
        Input::CallbackFailed { call: CallId(9) },
    ] {
        assert!(o.handle(input, 30).is_empty());
    }
}

#[test]
fn a_callback_answered_before_any_reservation_is_routed_as_an_ordinary_call() {
    let mut o = callback_setup(Strategy::TopDown);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    o.handle(Input::CallbackAnswered { call: CallId(1) }, 20);
    assert_eq!(rung(&online(&mut o, "ann", 30)), vec![(1, "ann".into())]);
}

#[test]
fn a_callback_outlives_max_wait_hangups_but_not_overflows() {
    let mut o = orch(
        vec![support().with_max_wait(10_000, QueueAction::default())],
        vec![agent("ann")],
    );
    queued(&mut o, 1, "support", 0);
    queued(&mut o, 2, "support", 1);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 5);
    assert_eq!(o.waiting(&q("support")), vec![CallId(1), CallId(2)]);
    let out = online(&mut o, "ann", 6);
    assert!(calls_back(&out, 1), "{out:?}");
    // Max wait while the callback is being placed: the caller was promised a call, so
    // it stays, and so does its agent.
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 10_000);
    assert!(removed(&out).is_empty(), "{out:?}");
    assert!(rung(&out).is_empty(), "{out:?}");
    // An ordinary caller's max wait still hangs up.
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(2) }), 10_001);
    assert_eq!(removed(&out).len(), 1, "{out:?}");
    assert_eq!(o.waiting(&q("support")), vec![CallId(1)]);
    // The customer answers the callback: the reserved agent is rung.
    let out = o.handle(Input::CallbackAnswered { call: CallId(1) }, 12_000);
    assert_eq!(rung(&out), vec![(1, "ann".into())]);

    // With an overflow action, the callback moves on, still a callback.
    let mut o = orch(
        vec![
            support().with_max_wait(10_000, QueueAction::Overflow { queue: q("other") }),
            QueueConfig::new(q("other"), Strategy::TopDown),
        ],
        vec![agent("ann").with_queue(q("other"))],
    );
    queued(&mut o, 1, "support", 0);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 5);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 10_000);
    assert_eq!(overflowed(&out).len(), 1, "{out:?}");
    let out = online(&mut o, "ann", 10_001);
    assert!(calls_back(&out, 1), "{out:?}");
}

#[test]
fn a_callback_an_overflow_cannot_take_waits_where_it_is() {
    // The backup queue is full: the callback is refused there, so it does not move; it
    // waits in its queue rather than be dropped, and tries again at its next max wait.
    let mut o = orch(
        vec![
            support().with_max_wait(10_000, QueueAction::Overflow { queue: q("other") }),
            QueueConfig::new(q("other"), Strategy::TopDown).with_max_len(1, FullAction::Reject),
        ],
        vec![agent("ann").with_queue(q("other"))],
    );
    queued(&mut o, 2, "other", 0);
    queued(&mut o, 1, "support", 0);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 5);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 10_000);
    assert!(removed(&out).is_empty(), "{out:?}");
    assert!(overflowed(&out).is_empty(), "{out:?}");
    assert_eq!(o.waiting(&q("other")), vec![CallId(2)]);
    assert_eq!(o.waiting(&q("support")), vec![CallId(1)]);
    // No max wait any more (the timer cancelled; a late one does nothing).
    assert!(out.contains(&Output::CancelTimer {
        timer: Timer::MaxWait { call: CallId(1) }
    }));
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 20_000);
    assert!(
        overflowed(&out).is_empty() && removed(&out).is_empty(),
        "{out:?}"
    );
    assert_eq!(o.waiting(&q("support")), vec![CallId(1)]);
    // An overflow into an unknown queue: it stays where it was.
    let mut o = orch(
        vec![support().with_max_wait(10_000, QueueAction::Overflow { queue: q("gone") })],
        vec![agent("ann")],
    );
    queued(&mut o, 1, "support", 0);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 5);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 10_000);
    assert!(removed(&out).is_empty(), "{out:?}");
    assert_eq!(o.waiting(&q("support")), vec![CallId(1)]);
    assert!(calls_back(&online(&mut o, "ann", 10_001), 1));
}

#[test]
fn an_emptied_queue_keeps_its_callbacks() {
    let mut o = orch(
        vec![support().with_leave_when_empty(EmptyCondition::NoMembers)],
        vec![agent("ann")],
    );
    online(&mut o, "ann", 0);
    let out = set_status(&mut o, "ann", on_break("x"), 1);
    assert!(out.iter().all(|x| !matches!(x, Output::Removed { .. })));
    // The last member logs out: the caller on the line leaves, the callback stays.
    the_callback_stays_when_ann_leaves(&mut o);
    // Back from break and online again: the callback is placed.
    set_status(&mut o, "ann", AgentStatus::Available, 50);
    let out = online(&mut o, "ann", 60);
    assert!(calls_back(&out, 1), "{out:?}");

    // Two empty queues overflowing into each other: the caller on the line goes round
    // once and is removed; the callback stays put (it is not bounced between them).
    let empty_to = |from: &str, to: &str| {
        QueueConfig::new(q(from), Strategy::TopDown)
            .with_leave_when_empty(EmptyCondition::NoMembers)
            .with_empty_action(QueueAction::Overflow { queue: q(to) })
    };
    let mut o = orch(
        vec![empty_to("support", "other"), empty_to("other", "support")],
        vec![agent("ann").with_queue(q("other"))],
    );
    online(&mut o, "ann", 0);
    the_callback_stays_when_ann_leaves(&mut o);
}

/// Calls 1 (a callback) and 2 wait in `support`; ann, its last member, logs out: call 2
/// is removed, the callback stays.
fn the_callback_stays_when_ann_leaves(o: &mut Orchestrator) {
    queued(o, 1, "support", 10);
    queued(o, 2, "support", 20);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 30);
    let out = o.handle(Input::AgentOffline { agent: a("ann") }, 40);
    assert_eq!(
        removed(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![2],
        "{out:?}"
    );
    assert_eq!(o.waiting(&q("support")), vec![CallId(1)]);
}

/// Call 1 waits in `support`, which overflows after 1 s into `backup` (max_len 1).
fn waits_then_overflows_into_backup_of_one() -> Orchestrator {
    let mut o = orch(
        vec![
            support().with_max_wait(1_000, QueueAction::Overflow { queue: q("backup") }),
            QueueConfig::new(q("backup"), Strategy::TopDown).with_max_len(1, FullAction::Reject),
        ],
        vec![],
    );
    queued(&mut o, 1, "support", 0);
    o
}

/// A call overflowing on its max wait into a full queue is refused there, calls on their
/// way counted (not only the admission before answering counts them).
#[test]
fn an_overflow_counts_the_calls_on_their_way_to_the_target() {
    let mut o = waits_then_overflows_into_backup_of_one();
    arriving(&mut o, 2, "backup", 500);
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 1_000);
    assert_eq!(
        overflowed(&out),
        vec![(1, "support".into(), "backup".into(), RejectCause::MaxWait)]
    );
    assert!(
        out.contains(&Output::Removed {
            call: CallId(1),
            queue: q("backup"),
            reason: RejectCause::Full,
            prompt: None,
            waited_ms: 0,
        }),
        "refused by the full backup queue: {out:?}"
    );
    assert!(o.waiting(&q("backup")).is_empty());
    // Without the call on its way, the overflow joins.
    let mut o = waits_then_overflows_into_backup_of_one();
    let out = o.handle(Input::Timer(Timer::MaxWait { call: CallId(1) }), 1_000);
    assert_eq!(
        overflowed(&out),
        vec![(1, "support".into(), "backup".into(), RejectCause::MaxWait)]
    );
    assert_eq!(o.waiting(&q("backup")), vec![CallId(1)]);
}

#[test]
fn the_agents_of_a_call_are_those_rung_reserved_or_connected() {
    let mut o = orch(
        vec![QueueConfig::new(q("support"), Strategy::RingAll)],
        vec![agent("ann"), agent("bob")],
    );
    online(&mut o, "ann", 0);
    online(&mut o, "bob", 0);
    queued(&mut o, 1, "support", 1);
    // Ring-all: both rung.
    assert_eq!(o.call_agents(CallId(1)), vec![a("ann"), a("bob")]);
    answer(&mut o, 1, "bob", 2);
    assert_eq!(o.call_agents(CallId(1)), vec![a("bob")]);
    o.handle(Input::CallEnded { call: CallId(1) }, 3);
    assert!(o.call_agents(CallId(1)).is_empty());
    // A callback: the one agent reserved for it.
    let mut o = callback_setup(Strategy::TopDown);
    o.handle(Input::CallbackRequested { call: CallId(1) }, 10);
    assert!(o.call_agents(CallId(1)).is_empty());
    assert!(calls_back(&online(&mut o, "ann", 20), 1));
    assert_eq!(o.call_agents(CallId(1)), vec![a("ann")]);
}
