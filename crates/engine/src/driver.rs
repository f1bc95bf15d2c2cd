//! The engine's driver: the one place where session events, media events, the call state
//! machines and the orchestrator meet. It listens to the bus, feeds the pure components,
//! and turns their decisions into commands for the adapters. It does no SIP and no RTP
//! itself.

use call_engine_bus::{EventBus, EventId, Filter, Publisher, Receiver, RecvError, TopicSet};
use call_engine_events::{
    topics, AgentEvent, AgentId, AudioSource, CallId, Disposition, EngineEvent, HangupCause,
    IdAllocator, Leg, MediaCommand, MediaEvent, Party, QueueId, Sdp, SessionCommand, SessionEvent,
    SessionId, Side,
};
use call_engine_orchestrator::{self as orch, Orchestrator, Output};
use call_engine_state::{Call, CallAction, CallConfig, CallInput, CallState, CallTimer, Millis};
use smol_str::SmolStr;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// Per-queue settings the driver needs.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Strategy (strategies that ring several agents defer the call machine's offer
    /// to the answer).
    pub strategy: orch::Strategy,
    /// Music on hold.
    pub moh: AudioSource,
    /// Ring timeout, ms.
    pub ring_timeout_ms: u64,
}

/// One finished call, for its call detail record.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The call.
    pub call: CallId,
    /// Its queue.
    pub queue: Option<QueueId>,
    /// The caller.
    pub caller: Party,
    /// The agent who answered.
    pub agent: Option<AgentId>,
    /// Unix ms: entered the queue.
    pub entered_queue_at_ms: Option<u64>,
    /// Unix ms: an agent answered.
    pub answered_at_ms: Option<u64>,
    /// Unix ms: ended.
    pub ended_at_ms: u64,
    /// Seconds waited.
    pub wait_secs: f64,
    /// Seconds talked.
    pub talk_secs: f64,
    /// How it ended.
    pub disposition: Disposition,
    /// Who hung up.
    pub hung_up_by: Side,
    /// Why.
    pub cause: HangupCause,
}

/// Timers the driver runs for the pure components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TimerKey {
    Orch(orch::Timer),
    Call(CallId, CallTimer),
}

struct CallCtx {
    sm: Call,
    queue: QueueId,
    caller: Party,
    customer: SessionId,
    customer_alive: bool,
    /// Our SDP offer for agent legs (one endpoint, shared by forked INVITEs).
    agent_offer: Option<Sdp>,
    agent_endpoint_requested: bool,
    /// Rings waiting for the agent endpoint.
    pending_rings: Vec<(AgentId, SmolStr)>,
    /// Outstanding INVITEs to agents.
    offers: BTreeMap<SessionId, AgentId>,
    /// The agent leg once answered.
    connected: Option<(AgentId, SessionId)>,
    agent_alive: bool,
    /// Sessions we asked to end (their Terminated is our own teardown).
    hanging_up: BTreeSet<SessionId>,
    hung_up_by: Option<Side>,
    cause: HangupCause,
    moh: Option<call_engine_events::PlaybackId>,
    recorded: bool,
    /// Teardown has started (by either side or the engine): don't start it again.
    ending: bool,
    /// A leg is on hold: silence is expected, not a media failure.
    held: bool,
}

/// The driver. Create with [`Driver::new`] and run with [`Driver::run`].
pub struct Driver {
    /// Subscribed at construction, so nothing published after `new` returns is missed.
    rx: Receiver<EngineEvent>,
    tx: Publisher<EngineEvent>,
    ids: Arc<IdAllocator>,
    orch: Orchestrator,
    queues: BTreeMap<QueueId, QueueSettings>,
    /// Registered contacts per agent, oldest first.
    contacts: BTreeMap<AgentId, Vec<SmolStr>>,
    calls: HashMap<CallId, CallCtx>,
    /// Armed timers with their generation: a fire from an older arming is ignored.
    timers: HashMap<TimerKey, (u64, AbortHandle)>,
    timer_gen: u64,
    timer_tx: mpsc::UnboundedSender<(TimerKey, u64)>,
    timer_rx: mpsc::UnboundedReceiver<(TimerKey, u64)>,
    /// Teardowns the call machines asked for, run after the current event.
    deferred: Vec<(CallId, Side, HangupCause)>,
    records: mpsc::UnboundedSender<CallRecord>,
    /// Admission control: calls in progress above this get 503 + Retry-After.
    max_calls: usize,
    origin: Instant,
    origin_unix_ms: u64,
    /// Every configured agent, for the reconciler.
    agents: Vec<AgentId>,
    /// How often the reconciler runs (`None`: never).
    reconcile_every: Option<std::time::Duration>,
}

/// Retry-After (seconds) sent with 503 when the engine is full.
pub const RETRY_AFTER_SECS: u32 = 5;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn offer_failure(cause: &HangupCause) -> orch::OfferFailure {
    match cause {
        HangupCause::Busy => orch::OfferFailure::Busy,
        HangupCause::Declined => orch::OfferFailure::Declined,
        HangupCause::NoAnswer | HangupCause::Cancelled => orch::OfferFailure::NoAnswer,
        _ => orch::OfferFailure::Failed,
    }
}

impl Driver {
    /// A driver for these queues and agents, publishing on `bus`, sending finished calls
    /// to `records`.
    pub fn new(
        bus: EventBus<EngineEvent>,
        ids: Arc<IdAllocator>,
        queues: BTreeMap<QueueId, (orch::QueueConfig, QueueSettings)>,
        agents: Vec<orch::AgentConfig>,
        records: mpsc::UnboundedSender<CallRecord>,
        max_calls: usize,
    ) -> Self {
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let agent_ids = agents.iter().map(|a| a.id.clone()).collect();
        let orch = Orchestrator::new(queues.values().map(|(c, _)| c.clone()).collect(), agents);
        let rx = bus.subscribe(Filter::topics(TopicSet::of(&[
            topics::SESSION_EVENTS,
            topics::MEDIA_EVENTS,
        ])));
        Self {
            rx,
            tx: bus.publisher("engine"),
            ids,
            orch,
            queues: queues.into_iter().map(|(k, (_, s))| (k, s)).collect(),
            contacts: BTreeMap::new(),
            calls: HashMap::new(),
            timers: HashMap::new(),
            timer_gen: 0,
            timer_tx,
            timer_rx,
            deferred: Vec::new(),
            records,
            max_calls,
            origin: Instant::now(),
            origin_unix_ms: unix_ms(),
            agents: agent_ids,
            reconcile_every: None,
        }
    }

    /// Runs the reconciler every `every`: established dialogs are probed in-dialog
    /// (a lost BYE is found and the call torn down), agents' contacts are probed with
    /// OPTIONS (an unreachable phone is not rung), and the orchestrator's idea of each
    /// agent's calls is checked against the calls alive here. Every repair is published
    /// as [`AgentEvent::Repaired`] (and so logged in the store).
    pub fn with_reconciler(mut self, every: std::time::Duration) -> Self {
        self.reconcile_every = Some(every);
        self
    }

    /// The driver clock as the call machines take it.
    fn millis(&self) -> Millis {
        Millis(self.now())
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Runs until the bus closes.
    pub async fn run(mut self) {
        // The reconciler's tick (a long period when it is off: the arm never fires).
        let period = self
            .reconcile_every
            .unwrap_or(std::time::Duration::from_secs(86_400 * 365));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick(), if self.reconcile_every.is_some() => self.reconcile().await,
                ev = self.rx.recv() => match ev {
                    Ok(e) => {
                        // Moves the envelope out when it is ours alone (no copy).
                        let env = e.into_envelope();
                        self.on_event(env.id, env.payload).await;
                    }
                    Err(RecvError::Lagged(n)) => debug!(missed = n, "telemetry shed"),
                    Err(RecvError::Closed) => break,
                },
                Some((key, gen)) = self.timer_rx.recv() => self.on_timer(key, gen).await,
            }
            while let Some((call, by, why)) = self.deferred.pop() {
                self.hangup_all(None, call, by, why).await;
                self.orch_input(None, orch::Input::CallEnded { call }).await;
                self.maybe_finish(None, call).await;
            }
        }
    }

    async fn send(&self, cause: Option<EventId>, ev: EngineEvent) {
        let corr = ev.correlation();
        if let Err(e) = self.tx.publish(corr, cause, ev).await {
            // Only possible while shutting down.
            warn!(error = %e, "command not published: bus closed");
        }
    }

    fn start_timer(&mut self, key: TimerKey, at: u64) {
        if let Some((_, old)) = self.timers.remove(&key) {
            old.abort();
        }
        let delay = at.saturating_sub(self.now());
        let tx = self.timer_tx.clone();
        self.timer_gen += 1;
        let gen = self.timer_gen;
        let k = key.clone();
        let h = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            // The driver may be gone at shutdown: nothing to do then.
            let _ = tx.send((k, gen));
        });
        self.timers.insert(key, (gen, h.abort_handle()));
    }

    fn cancel_timer(&mut self, key: &TimerKey) {
        if let Some((_, h)) = self.timers.remove(key) {
            h.abort();
        }
    }

    async fn on_timer(&mut self, key: TimerKey, gen: u64) {
        // A fire that raced with a cancel or re-arm belongs to an older arming: ignore it.
        match self.timers.get(&key) {
            Some((g, _)) if *g == gen => {
                self.timers.remove(&key);
            }
            _ => return,
        }
        match key {
            TimerKey::Orch(t) => self.orch_input(None, orch::Input::Timer(t)).await,
            TimerKey::Call(call, t) => self.call_input(None, call, CallInput::Timer(t)).await,
        }
    }

    /// One reconciler pass (see [`Driver::with_reconciler`]).
    async fn reconcile(&mut self) {
        // 1. Established dialogs: does the far end still have them? (A phone whose BYE
        // was lost answers 481; the session adapter then ends the leg, and the usual
        // teardown frees the agent.)
        let mut legs = Vec::new();
        for (call, c) in &self.calls {
            if c.ending {
                continue;
            }
            if c.customer_alive {
                legs.push((*call, c.customer));
            }
            if let (Some((_, s)), true) = (&c.connected, c.agent_alive) {
                legs.push((*call, *s));
            }
        }
        for (call, session) in legs {
            self.send(
                None,
                EngineEvent::SessionCommand(SessionCommand::ProbeDialog { call, session }),
            )
            .await;
        }
        // 2. Registered contacts: still reachable?
        let probes: Vec<(AgentId, SmolStr)> = self
            .contacts
            .iter()
            .flat_map(|(a, list)| list.iter().map(move |c| (a.clone(), c.clone())))
            .collect();
        for (agent, contact) in probes {
            self.send(
                None,
                EngineEvent::SessionCommand(SessionCommand::Probe { agent, contact }),
            )
            .await;
        }
        // 3. The orchestrator's calls per agent against the calls alive here.
        let agents = self.agents.clone();
        for agent in agents {
            for call in self.orch.agent_calls(&agent) {
                let input = match self.calls.get(&call) {
                    None => Some((
                        orch::Input::CallEnded { call },
                        format!("held by call {call}, which no longer exists: released"),
                    )),
                    Some(c) => {
                        let involved = c.offers.values().any(|a| *a == agent)
                            || c.pending_rings.iter().any(|(a, _)| *a == agent)
                            || c.connected.as_ref().is_some_and(|(a, _)| *a == agent);
                        (!involved).then(|| {
                            (
                                orch::Input::OfferFailed {
                                    call,
                                    agent: agent.clone(),
                                    why: orch::OfferFailure::Failed,
                                },
                                format!("reserved for call {call} without ringing it: released"),
                            )
                        })
                    }
                };
                if let Some((input, detail)) = input {
                    self.repaired(None, &agent, detail).await;
                    self.orch_input(None, input).await;
                }
            }
        }
    }

    /// Logs and publishes a repair the reconciler made.
    async fn repaired(&self, cause: Option<EventId>, agent: &AgentId, detail: String) {
        warn!(%agent, %detail, "reconciler repaired an agent state");
        self.send(
            cause,
            EngineEvent::Agent(AgentEvent::Repaired {
                agent: agent.clone(),
                detail: detail.into(),
            }),
        )
        .await;
    }

    /// Feeds the orchestrator and executes its decisions.
    async fn orch_input(&mut self, cause: Option<EventId>, input: orch::Input) {
        let now = self.now();
        for out in self.orch.handle(input, now) {
            match out {
                Output::Ring {
                    call,
                    agent,
                    contact,
                    ..
                } => self.ring(cause, call, agent, contact).await,
                Output::CancelRing { call, agent } => {
                    let sessions: Vec<SessionId> = self
                        .calls
                        .get(&call)
                        .map(|c| {
                            c.offers
                                .iter()
                                .filter(|(_, a)| **a == agent)
                                .map(|(s, _)| *s)
                                .collect()
                        })
                        .unwrap_or_default();
                    for session in sessions {
                        if let Some(c) = self.calls.get_mut(&call) {
                            c.offers.remove(&session);
                        }
                        self.send(
                            cause,
                            EngineEvent::SessionCommand(SessionCommand::Cancel { call, session }),
                        )
                        .await;
                    }
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.pending_rings.retain(|(a, _)| *a != agent);
                    }
                    // A single-ring offer that failed: tell the call machine.
                    self.call_offer_failed(cause, call, &agent, HangupCause::NoAnswer)
                        .await;
                }
                Output::Assigned { call, agent, .. } => {
                    info!(%call, %agent, "call assigned");
                }
                Output::Abandoned {
                    call,
                    queue,
                    waited_ms,
                } => {
                    info!(%call, %queue, waited_ms, "caller abandoned");
                }
                Output::StartTimer { timer, at } => self.start_timer(TimerKey::Orch(timer), at),
                Output::CancelTimer { timer } => self.cancel_timer(&TimerKey::Orch(timer)),
            }
        }
    }

    async fn ring(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        agent: AgentId,
        contact: SmolStr,
    ) {
        let now = self.millis();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let defer = self
            .queues
            .get(&c.queue)
            .is_some_and(|q| q.strategy.rings_several());
        if !defer && matches!(c.sm.state(), CallState::Queued { .. }) {
            match c.sm.handle(
                CallInput::Offer {
                    agent: agent.clone(),
                },
                now,
            ) {
                Ok(actions) => {
                    self.call_actions(cause, call, actions).await;
                }
                Err(e) => debug!(%call, error = %e, "offer not applied to call machine"),
            }
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.agent_offer.clone() {
            Some(sdp) => {
                let session = self.ids.session();
                c.offers.insert(session, agent.clone());
                let caller = c.caller.clone();
                info!(%call, %agent, %contact, "ringing agent");
                self.send(
                    cause,
                    EngineEvent::SessionCommand(SessionCommand::Invite {
                        call,
                        session,
                        target: contact,
                        caller,
                        sdp,
                    }),
                )
                .await;
            }
            None => {
                c.pending_rings.push((agent, contact));
                if !c.agent_endpoint_requested {
                    c.agent_endpoint_requested = true;
                    self.send(
                        cause,
                        EngineEvent::MediaCommand(MediaCommand::Allocate {
                            call,
                            leg: Leg::Agent,
                            remote_offer: None,
                        }),
                    )
                    .await;
                }
            }
        }
    }

    /// Feeds a call machine and executes its actions.
    async fn call_input(&mut self, cause: Option<EventId>, call: CallId, input: CallInput) {
        let now = self.millis();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.sm.handle(input, now) {
            Ok(actions) => self.call_actions(cause, call, actions).await,
            Err(e) => debug!(%call, error = %e, "input not applied to call machine"),
        }
        self.maybe_finish(cause, call).await;
    }

    async fn call_actions(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        actions: Vec<CallAction>,
    ) {
        for a in actions {
            match a {
                CallAction::StartTimer { timer, at } => {
                    self.start_timer(TimerKey::Call(call, timer), at.0)
                }
                CallAction::CancelTimer { timer } => {
                    self.cancel_timer(&TimerKey::Call(call, timer))
                }
                CallAction::Emit(notice) => {
                    // The machine decided to end the call itself (timers): tear down.
                    if let call_engine_state::CallNotice::Terminating {
                        hung_up_by,
                        cause: why,
                        ..
                    } = &notice
                    {
                        if self.calls.get(&call).is_some_and(|c| !c.ending) {
                            self.deferred.push((call, *hung_up_by, why.clone()));
                        }
                    }
                    if let Some(ev) = notice.into_event(call) {
                        self.send(cause, EngineEvent::Call(ev)).await;
                    }
                }
            }
        }
    }

    async fn call_offer_failed(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        agent: &AgentId,
        why: HangupCause,
    ) {
        let offered = self.calls.get(&call).is_some_and(|c| {
            matches!(c.sm.state(), CallState::Offering { agent: a } | CallState::Ringing { agent: a } if a == agent)
        });
        if offered {
            self.call_input(cause, call, CallInput::OfferFailed { cause: why })
                .await;
        }
    }

    async fn on_event(&mut self, id: EventId, ev: EngineEvent) {
        let cause = Some(id);
        match ev {
            EngineEvent::Session(s) => self.on_session(cause, s).await,
            EngineEvent::Media(m) => self.on_media(cause, m).await,
            _ => {}
        }
    }

    async fn on_session(&mut self, cause: Option<EventId>, ev: SessionEvent) {
        match ev {
            SessionEvent::Registered { agent, contact, .. } => {
                // Ring the contact registered first: refreshes don't flip devices.
                let list = self.contacts.entry(agent.clone()).or_default();
                if !list.contains(&contact) {
                    list.push(contact);
                }
                if let Some(contact) = list.first().cloned() {
                    self.orch_input(cause, orch::Input::AgentOnline { agent, contact })
                        .await;
                }
            }
            SessionEvent::Unregistered { agent, contact, .. } => {
                let latest = self.contacts.get_mut(&agent).and_then(|list| {
                    list.retain(|c| *c != contact);
                    list.first().cloned()
                });
                let input = match latest {
                    Some(contact) => orch::Input::AgentOnline { agent, contact },
                    None => orch::Input::AgentOffline { agent },
                };
                self.orch_input(cause, input).await;
            }
            SessionEvent::IncomingCall {
                call,
                session,
                from,
                to,
                offer,
                ..
            } => self.incoming(cause, call, session, from, to, offer).await,
            SessionEvent::Ringing { call, session } => {
                let first = self.calls.get(&call).is_some_and(|c| {
                    c.offers.contains_key(&session)
                        && matches!(c.sm.state(), CallState::Offering { .. })
                });
                if first {
                    self.call_input(cause, call, CallInput::AgentRinging).await;
                }
            }
            SessionEvent::Answered { call, session, sdp } => {
                self.answered(cause, call, session, sdp).await
            }
            SessionEvent::Rejected {
                call,
                session,
                cause: why,
            } => {
                let agent = self
                    .calls
                    .get_mut(&call)
                    .and_then(|c| c.offers.remove(&session));
                if let Some(agent) = agent {
                    info!(%call, %agent, ?why, "offer failed");
                    self.call_offer_failed(cause, call, &agent, why.clone())
                        .await;
                    self.orch_input(
                        cause,
                        orch::Input::OfferFailed {
                            call,
                            agent,
                            why: offer_failure(&why),
                        },
                    )
                    .await;
                }
            }
            SessionEvent::Terminated {
                call,
                session,
                cause: why,
            } => self.terminated(cause, call, session, why).await,
            SessionEvent::DialogProbed {
                call,
                session,
                alive: false,
                status,
            } => {
                // The Terminated that follows tears the call down as usual; record the
                // repair against the agent the lost dialog held.
                let agent = self.calls.get(&call).and_then(|c| {
                    c.connected
                        .as_ref()
                        .filter(|(_, s)| *s == session)
                        .map(|(a, _)| a.clone())
                });
                let leg = if agent.is_some() { "agent" } else { "customer" };
                warn!(%call, %session, ?status, leg, "dialog lost by the far end: its BYE never arrived");
                if let Some(c) = self.calls.get(&call) {
                    let agent = agent.or_else(|| c.connected.as_ref().map(|(a, _)| a.clone()));
                    if let Some(agent) = agent {
                        self.repaired(
                            cause,
                            &agent,
                            format!("call {call}: the {leg} leg was gone without a BYE (status {status:?}): call ended"),
                        )
                        .await;
                    }
                }
            }
            SessionEvent::ContactProbed {
                agent,
                contact,
                reachable: false,
            } => {
                // An unreachable phone is not rung: treated as unregistered until it
                // registers again.
                let known = self
                    .contacts
                    .get(&agent)
                    .is_some_and(|l| l.contains(&contact));
                if known {
                    self.repaired(
                        cause,
                        &agent,
                        format!("contact {contact} does not answer OPTIONS: not rung until it registers again"),
                    )
                    .await;
                    let latest = self.contacts.get_mut(&agent).and_then(|list| {
                        list.retain(|c| *c != contact);
                        list.first().cloned()
                    });
                    let input = match latest {
                        Some(contact) => orch::Input::AgentOnline { agent, contact },
                        None => orch::Input::AgentOffline { agent },
                    };
                    self.orch_input(cause, input).await;
                }
            }
            SessionEvent::HoldChanged { call, on_hold, .. } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.held = on_hold;
                }
                let input = if on_hold {
                    CallInput::Hold
                } else {
                    CallInput::Resume
                };
                self.call_input(cause, call, input).await;
            }
            _ => {}
        }
    }

    async fn incoming(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        session: SessionId,
        from: Party,
        to: SmolStr,
        offer: Option<Sdp>,
    ) {
        let queue = QueueId::new(&to);
        if !self.orch.has_queue(&queue) {
            info!(%call, %to, "unknown queue: 404");
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Reject {
                    call,
                    session,
                    status: 404,
                    retry_after_secs: None,
                }),
            )
            .await;
            return;
        }
        if self.calls.len() >= self.max_calls {
            // Overload: refuse rather than fail later (no RTP ports left for the call).
            warn!(%call, calls = self.calls.len(), max = self.max_calls, "overload: 503");
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Reject {
                    call,
                    session,
                    status: 503,
                    retry_after_secs: Some(RETRY_AFTER_SECS),
                }),
            )
            .await;
            return;
        }
        if offer.is_none() {
            // Late offer (INVITE without SDP) is not supported yet.
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Reject {
                    call,
                    session,
                    status: 488,
                    retry_after_secs: None,
                }),
            )
            .await;
            return;
        }
        let ring_timeout_ms = self
            .queues
            .get(&queue)
            .map(|q| q.ring_timeout_ms)
            .unwrap_or(15_000);
        let now = self.millis();
        let config = CallConfig {
            // The orchestrator times rings; this is a backstop.
            ring_timeout_ms: ring_timeout_ms + 5_000,
            ..CallConfig::default()
        };
        info!(%call, caller = %from.user, %queue, "incoming call");
        self.calls.insert(
            call,
            CallCtx {
                sm: Call::new(call, config, now),
                queue,
                caller: from,
                customer: session,
                customer_alive: true,
                agent_offer: None,
                agent_endpoint_requested: false,
                pending_rings: Vec::new(),
                offers: BTreeMap::new(),
                connected: None,
                agent_alive: false,
                hanging_up: BTreeSet::new(),
                hung_up_by: None,
                cause: HangupCause::Normal,
                moh: None,
                recorded: false,
                ending: false,
                held: false,
            },
        );
        self.send(
            cause,
            EngineEvent::MediaCommand(MediaCommand::Allocate {
                call,
                leg: Leg::Customer,
                remote_offer: offer,
            }),
        )
        .await;
    }

    async fn on_media(&mut self, cause: Option<EventId>, ev: MediaEvent) {
        match ev {
            MediaEvent::EndpointReady {
                call,
                leg,
                local_sdp,
                ..
            } => match leg {
                Leg::Customer => self.customer_ready(cause, call, local_sdp).await,
                Leg::Agent => {
                    let pending = match self.calls.get_mut(&call) {
                        Some(c) => {
                            c.agent_offer = Some(local_sdp);
                            std::mem::take(&mut c.pending_rings)
                        }
                        None => Vec::new(),
                    };
                    for (agent, contact) in pending {
                        self.ring(cause, call, agent, contact).await;
                    }
                }
                _ => {}
            },
            MediaEvent::EndpointFailed { call, leg, reason } => {
                warn!(%call, ?leg, %reason, "media endpoint failed");
                let why = HangupCause::Failure {
                    detail: reason.clone(),
                };
                match leg {
                    Leg::Customer => {
                        // The customer cannot be answered: refuse the INVITE (488).
                        let session = match self.calls.get_mut(&call) {
                            Some(c) if c.customer_alive && !c.ending => {
                                c.ending = true;
                                c.hung_up_by = Some(Side::Engine);
                                c.cause = why.clone();
                                c.hanging_up.insert(c.customer);
                                Some(c.customer)
                            }
                            _ => None,
                        };
                        if let Some(session) = session {
                            self.send(
                                cause,
                                EngineEvent::SessionCommand(SessionCommand::Reject {
                                    call,
                                    session,
                                    status: 488,
                                    retry_after_secs: None,
                                }),
                            )
                            .await;
                            self.call_input(cause, call, CallInput::Hangup { cause: why })
                                .await;
                        }
                    }
                    Leg::Agent => {
                        // No agent endpoint: the pending rings fail (the agents are freed
                        // and the caller waits for the next try); a connected call ends.
                        let (pending, connected) = match self.calls.get_mut(&call) {
                            Some(c) => {
                                c.agent_endpoint_requested = false;
                                c.agent_offer = None;
                                (std::mem::take(&mut c.pending_rings), c.connected.is_some())
                            }
                            None => (Vec::new(), false),
                        };
                        for (agent, _) in pending {
                            self.call_offer_failed(cause, call, &agent, why.clone())
                                .await;
                            self.orch_input(
                                cause,
                                orch::Input::OfferFailed {
                                    call,
                                    agent,
                                    why: orch::OfferFailure::Failed,
                                },
                            )
                            .await;
                        }
                        if connected {
                            self.hangup_all(cause, call, Side::Engine, why).await;
                        }
                    }
                    _ => {}
                }
            }
            MediaEvent::MediaTimeout { call, leg } => {
                if self.calls.get(&call).is_some_and(|c| c.held) {
                    // A held leg may well be silent.
                    debug!(%call, ?leg, "no RTP while on hold");
                    return;
                }
                warn!(%call, ?leg, "no RTP: ending the call");
                self.hangup_all(
                    cause,
                    call,
                    Side::Engine,
                    HangupCause::Failure {
                        detail: "media timeout".into(),
                    },
                )
                .await;
            }
            _ => {}
        }
    }

    async fn customer_ready(&mut self, cause: Option<EventId>, call: CallId, sdp: Sdp) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let session = c.customer;
        let queue = c.queue.clone();
        let playback = self.ids.playback();
        c.moh = Some(playback);
        let moh = self
            .queues
            .get(&queue)
            .map(|q| q.moh.clone())
            .unwrap_or(AudioSource::BuiltinMusic);
        self.send(
            cause,
            EngineEvent::SessionCommand(SessionCommand::Answer { call, session, sdp }),
        )
        .await;
        self.send(
            cause,
            EngineEvent::MediaCommand(MediaCommand::Play {
                call,
                leg: Leg::Customer,
                playback,
                source: moh,
                looped: true,
            }),
        )
        .await;
        self.call_input(
            cause,
            call,
            CallInput::Enqueue {
                queue: queue.clone(),
            },
        )
        .await;
        self.orch_input(cause, orch::Input::CallQueued { call, queue })
            .await;
    }

    async fn answered(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        session: SessionId,
        sdp: Option<Sdp>,
    ) {
        let agent = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.offers.remove(&session));
        let Some(agent) = agent else {
            // An answer for a call that is gone or an offer that was cancelled: hang it up.
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Hangup { call, session }),
            )
            .await;
            return;
        };
        info!(%call, %agent, "agent answered");
        if let Some(c) = self.calls.get_mut(&call) {
            c.connected = Some((agent.clone(), session));
            c.agent_alive = true;
        }
        if let Some(sdp) = sdp {
            self.send(
                cause,
                EngineEvent::MediaCommand(MediaCommand::SetRemote {
                    call,
                    leg: Leg::Agent,
                    sdp,
                }),
            )
            .await;
        }
        let bridge = self.ids.bridge();
        self.send(
            cause,
            EngineEvent::MediaCommand(MediaCommand::Bridge {
                call,
                bridge,
                a: Leg::Customer,
                b: Leg::Agent,
            }),
        )
        .await;
        // The Play of the music was published on the Normal lane; the Bridge travels in
        // the High lane and may overtake it. Stopping the playback on the Normal lane
        // again, after the Play, guarantees the music never outlives the bridge.
        let moh = self.calls.get_mut(&call).and_then(|c| c.moh.take());
        if let Some(playback) = moh {
            self.send(
                cause,
                EngineEvent::MediaCommand(MediaCommand::StopPlayback { call, playback }),
            )
            .await;
        }
        // Strategies ringing several agents deferred the offer to the machine until now.
        let queued = self
            .calls
            .get(&call)
            .is_some_and(|c| matches!(c.sm.state(), CallState::Queued { .. }));
        if queued {
            self.call_input(
                cause,
                call,
                CallInput::Offer {
                    agent: agent.clone(),
                },
            )
            .await;
        }
        self.call_input(cause, call, CallInput::AgentAnswered).await;
        self.orch_input(cause, orch::Input::OfferAnswered { call, agent })
            .await;
    }

    async fn hangup_all(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        by: Side,
        why: HangupCause,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.ending = true;
        if c.hung_up_by.is_none() {
            c.hung_up_by = Some(by);
            c.cause = why.clone();
        }
        let mut targets = Vec::new();
        if c.customer_alive {
            targets.push(c.customer);
        }
        if let (Some((_, s)), true) = (&c.connected, c.agent_alive) {
            targets.push(*s);
        }
        for s in &targets {
            c.hanging_up.insert(*s);
        }
        for session in targets {
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Hangup { call, session }),
            )
            .await;
        }
        // The call machine records who ended it and why (no-op if it is already ending).
        self.call_input(cause, call, CallInput::Hangup { cause: why })
            .await;
    }

    async fn terminated(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        session: SessionId,
        why: HangupCause,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let ours = c.hanging_up.remove(&session);
        // A shutdown ends legs on the engine's initiative, not the caller's or agent's.
        let by_engine = why == HangupCause::Shutdown;
        // Which leg ended, and the other leg that must be ended with it (a BYE is never
        // left unpropagated).
        let side = if session == c.customer {
            Some(Side::Customer)
        } else if c.connected.as_ref().is_some_and(|(_, s)| *s == session) {
            Some(Side::Agent)
        } else {
            None
        };
        if let Some(side) = side {
            let other = if side == Side::Customer {
                c.customer_alive = false;
                c.connected
                    .as_ref()
                    .filter(|_| c.agent_alive)
                    .map(|(_, s)| *s)
            } else {
                c.agent_alive = false;
                c.customer_alive.then_some(c.customer)
            };
            if !ours {
                c.ending = true;
                if c.hung_up_by.is_none() {
                    c.hung_up_by = Some(if by_engine { Side::Engine } else { side });
                    c.cause = why.clone();
                }
                if let Some(s) = other {
                    c.hanging_up.insert(s);
                    self.send(
                        cause,
                        EngineEvent::SessionCommand(SessionCommand::Hangup { call, session: s }),
                    )
                    .await;
                }
            }
            if by_engine {
                // Ended by the engine (shutdown): the machine records it as such.
                self.call_input(cause, call, CallInput::Hangup { cause: why.clone() })
                    .await;
            }
            self.call_input(cause, call, CallInput::LegEnded { side, cause: why })
                .await;
            self.orch_input(cause, orch::Input::CallEnded { call })
                .await;
        } else if let Some(agent) = c.offers.remove(&session) {
            // An offer that ended before an answer (e.g. our CANCEL completed, or the
            // phone gave up): the call machine and the orchestrator hear a failed offer.
            self.call_offer_failed(cause, call, &agent, why.clone())
                .await;
            self.orch_input(
                cause,
                orch::Input::OfferFailed {
                    call,
                    agent,
                    why: offer_failure(&why),
                },
            )
            .await;
        }
        self.maybe_finish(cause, call).await;
    }

    /// When every leg is gone: finish the call machine, write the record, free media.
    async fn maybe_finish(&mut self, cause: Option<EventId>, call: CallId) {
        let now = self.millis();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.customer_alive
            && !c.agent_alive
            && matches!(c.sm.state(), CallState::Terminating { .. })
        {
            if let Ok(actions) = c.sm.handle(CallInput::AllLegsGone, now) {
                self.call_actions(cause, call, actions).await;
            }
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.sm.state().is_final() || c.recorded {
            return;
        }
        c.recorded = true;
        let (disposition, sm_by, sm_cause) = match c.sm.state() {
            CallState::Terminated {
                disposition,
                hung_up_by,
                cause,
            } => (*disposition, *hung_up_by, cause.clone()),
            _ => (Disposition::Failed, Side::Engine, HangupCause::Normal),
        };
        let record = CallRecord {
            call,
            queue: Some(c.queue.clone()),
            caller: c.caller.clone(),
            agent: c.connected.as_ref().map(|(a, _)| a.clone()),
            entered_queue_at_ms: c.sm.queued_at().map(|m| self.origin_unix_ms + m.0),
            answered_at_ms: c.sm.answered_at().map(|m| self.origin_unix_ms + m.0),
            ended_at_ms: self.origin_unix_ms + c.sm.ended_at().unwrap_or(now).0,
            wait_secs: c.sm.wait_ms().unwrap_or(0) as f64 / 1000.0,
            talk_secs: c.sm.talk_ms().unwrap_or(0) as f64 / 1000.0,
            disposition,
            hung_up_by: c.hung_up_by.unwrap_or(sm_by),
            cause: if c.hung_up_by == Some(Side::Engine) {
                c.cause.clone()
            } else {
                sm_cause
            },
        };
        info!(%call, ?disposition, hung_up_by = ?record.hung_up_by, "call ended");
        if self.records.send(record).is_err() {
            warn!(%call, "call record dropped: recorder stopped");
        }
        let agent_leg = c.agent_endpoint_requested;
        for leg in [Leg::Customer, Leg::Agent] {
            if leg == Leg::Agent && !agent_leg {
                continue;
            }
            self.send(
                cause,
                EngineEvent::MediaCommand(MediaCommand::Release { call, leg }),
            )
            .await;
        }
        // Cancel outstanding offers, if any survived.
        let offers: Vec<SessionId> = self
            .calls
            .get(&call)
            .map(|c| c.offers.keys().copied().collect())
            .unwrap_or_default();
        for session in offers {
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Cancel { call, session }),
            )
            .await;
        }
        let keys: Vec<TimerKey> = self
            .timers
            .keys()
            .filter(|k| matches!(k, TimerKey::Call(c, _) if *c == call))
            .cloned()
            .collect();
        for k in keys {
            self.cancel_timer(&k);
        }
        self.calls.remove(&call);
    }
}
