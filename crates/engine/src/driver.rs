//! The engine's driver: the one place where session events, media events, the call state
//! machines and the orchestrator meet. It listens to the bus, feeds the pure components,
//! and turns their decisions into commands for the adapters. It does no SIP and no RTP
//! itself.

use crate::config::ClosedAction;
use crate::kept::{Claim, KeptPlaces};
use call_engine_bus::{EventBus, EventId, Filter, Publisher, Receiver, RecvError, TopicSet};
use call_engine_events::{
    topics, AgentActivity, AgentEvent, AgentId, AgentStatus, AudioSource, CallId, Disposition,
    EngineEvent, HangupCause, IdAllocator, LeaveReason, Leg, MediaCommand, MediaEvent,
    MembershipTerms, Party, QueueEvent, QueueId, Sdp, SessionCommand, SessionEvent, SessionId,
    Side,
};
use call_engine_orchestrator::{self as orch, Orchestrator, Output};
use call_engine_state::{Call, CallAction, CallConfig, CallInput, CallState, CallTimer, Millis};
use smol_str::SmolStr;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
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
    /// Opening hours (`None`: always open).
    pub business_hours: Option<orch::BusinessHours>,
    /// What happens to calls arriving while closed.
    pub closed_action: ClosedAction,
    /// Announcements to waiting callers.
    pub announce: Announcements,
    /// Service-level threshold for statistics, ms.
    pub service_level_ms: u64,
    /// A caller who hangs up while waiting and calls again within this many ms gets
    /// their place back (their original entry time). 0: off.
    pub abandoned_resume_ms: u64,
}

/// The call an INVITE asked for, for [`Driver::refuse`].
#[derive(Clone, Copy)]
struct Refused<'a> {
    call: CallId,
    session: SessionId,
    caller: &'a Party,
}

/// What waiting callers hear besides the music.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcements {
    /// Every this many ms: position in queue (and the estimated wait, if
    /// `wait_time`). 0: never.
    pub position_every_ms: u64,
    /// Include the estimated wait time in the position announcement.
    pub wait_time: bool,
    /// A message (prompt name) played every `periodic_every_ms`.
    pub periodic: Option<SmolStr>,
    /// Period of the message, ms.
    pub periodic_every_ms: u64,
    /// Callers may press 1 to be called back instead of waiting (and are told so).
    pub callback: bool,
    /// Where callbacks are placed: `sip:<caller number>@<callback_via>` (a gateway or
    /// trunk, `host[:port]`). `None`: the caller's own From URI.
    pub callback_via: Option<SmolStr>,
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
    /// Next position/wait-time announcement for a waiting call.
    Announce(CallId),
    /// Next periodic message for a waiting call.
    Periodic(CallId),
}

/// The driver's timers: a deadline (ms since the driver's origin) per key, earliest first.
/// Re-arming or cancelling a key leaves its old heap entry behind, skipped when it comes
/// up (its generation is no longer the key's); the heap is pruned when such entries
/// outnumber the armed ones, so it stays within twice the armed timers (plus a few).
#[derive(Default)]
struct TimerHeap {
    /// Armed: key → the generation of its arming.
    armed: HashMap<TimerKey, u64>,
    /// Every arming, earliest deadline on top.
    heap: BinaryHeap<Reverse<TimerEntry>>,
    gen: u64,
}

/// One arming: ordered by deadline, then arming order.
struct TimerEntry {
    at: u64,
    gen: u64,
    key: TimerKey,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.gen) == (other.at, other.gen)
    }
}

impl Eq for TimerEntry {}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.gen).cmp(&(other.at, other.gen))
    }
}

impl TimerHeap {
    /// Arms `key` for `at`, replacing an earlier arming of it.
    fn arm(&mut self, key: TimerKey, at: u64) {
        self.gen += 1;
        self.armed.insert(key.clone(), self.gen);
        self.heap.push(Reverse(TimerEntry {
            at,
            gen: self.gen,
            key,
        }));
        self.compact();
    }

    fn cancel(&mut self, key: &TimerKey) {
        if self.armed.remove(key).is_some() {
            self.compact();
        }
    }

    /// The armed keys.
    fn keys(&self) -> impl Iterator<Item = &TimerKey> {
        self.armed.keys()
    }

    /// The earliest deadline in the heap: an armed timer's, or a stale entry's (which
    /// only makes the driver wake early, for nothing).
    fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Whether `e` is its key's current arming.
    fn current(armed: &HashMap<TimerKey, u64>, e: &TimerEntry) -> bool {
        armed.get(&e.key) == Some(&e.gen)
    }

    /// The next key due by `now`, disarmed; skips stale entries.
    fn pop_due(&mut self, now: u64) -> Option<TimerKey> {
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            let Reverse(e) = self.heap.pop()?;
            if Self::current(&self.armed, &e) {
                self.armed.remove(&e.key);
                return Some(e.key);
            }
        }
        None
    }

    /// Drops the stale entries once they outnumber the armed ones.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.armed.len() + 64 {
            let armed = &self.armed;
            self.heap.retain(|Reverse(e)| Self::current(armed, e));
        }
    }
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
    /// Routing data (priority, skills, seniority) from caller rules and headers.
    routing: orch::CallRouting,
    /// Prompts still to play to the waiting customer, in order.
    prompts: std::collections::VecDeque<SmolStr>,
    /// After the current prompts, hang up with this cause (a policy removed the call, or
    /// the queue is closed) instead of going back to the music.
    close_after_prompts: Option<HangupCause>,
    /// Answered only to be told something (closed queue): never queued.
    announce_only: bool,
    /// The callback this call became, if the caller asked for one.
    callback: Option<CallbackState>,
    /// The customer's current playback is a prompt (it ends), not the music.
    playing_prompt: bool,
    /// The agent the orchestrator reserved for this call's callback.
    reserved: Option<AgentId>,
    /// The caller asked for a callback their number already has: they leave for it.
    duplicate_callback: bool,
    /// Answered, waiting for the caller's ACK (`Confirmed`): until it proves the INVITE
    /// came from the caller, no media goes to their address and the call is not queued.
    awaiting_ack: bool,
    /// The caller came back within `abandoned_resume`: once confirmed, the call takes
    /// the number's kept place if it is still there (another call from the number may
    /// have been confirmed first and taken it).
    resumes_place: Option<Claim>,
    /// The caller's INVITE had no SDP (a late offer): our 200 offers, their ACK answers.
    late_offer: bool,
    /// The customer's INVITE was answered (200 sent): from then on the call is ended
    /// with a BYE, not refused.
    customer_answered: bool,
}

impl CallCtx {
    /// Whether `agent` is rung, about to be rung, or connected for this call.
    fn involves(&self, agent: &AgentId) -> bool {
        self.offers.values().any(|a| a == agent)
            || self.pending_rings.iter().any(|(a, _)| a == agent)
            || self.connected.as_ref().is_some_and(|(a, _)| a == agent)
    }
}

/// Where a callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallbackState {
    /// The caller pressed 1 and hears the confirmation, then we hang up.
    Confirming,
    /// Waiting in the queue without a customer leg.
    Waiting,
    /// Calling the customer back on this outbound session.
    Dialing(SessionId),
    /// The customer answered the callback: an ordinary call from now on.
    Connected,
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
    /// The driver's timers, run in its own loop (no task per timer).
    timers: TimerHeap,
    /// Teardowns the call machines asked for, run after the current event.
    deferred: Vec<(CallId, Side, HangupCause)>,
    /// Calls removed here, to be forgotten by the orchestrator after the current event.
    forget: Vec<CallId>,
    records: mpsc::UnboundedSender<CallRecord>,
    /// Admission control: calls in progress above this get 503 + Retry-After.
    max_calls: usize,
    /// The driver's time base (tokio's clock, which its timers sleep on).
    origin: tokio::time::Instant,
    origin_unix_ms: u64,
    /// Every configured agent, for the reconciler.
    agents: Vec<AgentId>,
    /// How often the reconciler runs (`None`: never).
    reconcile_every: Option<std::time::Duration>,
    /// Caller rules.
    caller_rules: orch::CallerRules,
    /// Dialed numbers → queue, skills, priority.
    numbers: HashMap<SmolStr, crate::config::DialedNumber>,
    /// Live statistics per queue and agent.
    stats: orch::StatsBook,
    /// Places kept for callers who abandoned recently (`abandoned_resume`).
    kept: KeptPlaces,
    /// The SIP adapter's counters, reported with the statistics.
    sip_stats: Option<call_engine_session::SessionStatsSource>,
    /// Last published activity per agent.
    activities: HashMap<AgentId, (AgentActivity, u16)>,
    /// Control requests (CLI).
    control_rx: Option<mpsc::UnboundedReceiver<crate::control::Request>>,
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

/// The prompts of the position announcement ("you are caller number …": the number
/// said with `number_prompts`).
pub const POSITION_PROMPTS: &[&str] = &[
    YOU_ARE_CALLER,
    "number-0",
    "number-1",
    "number-2",
    "number-3",
    "number-4",
    "number-5",
    "number-6",
    "number-7",
    "number-8",
    "number-9",
    "number-10",
    "number-11",
    "number-12",
    "number-13",
    "number-14",
    "number-15",
    "number-16",
    "number-17",
    "number-18",
    "number-19",
    "number-20",
    "number-30",
    "number-40",
    "number-50",
    "number-60",
    "number-70",
    "number-80",
    "number-90",
    "hundred",
];

/// The prompts the estimated wait adds to the position announcement.
pub const WAIT_PROMPTS: &[&str] = &[ESTIMATED_WAIT, MINUTE, MINUTES, LESS_THAN_A_MINUTE];

/// The prompts of the callback offer and its confirmation.
pub const CALLBACK_PROMPTS: &[&str] = &[PRESS_1_FOR_CALLBACK, CALLBACK_CONFIRMED];

const YOU_ARE_CALLER: &str = "you-are-caller";
const ESTIMATED_WAIT: &str = "estimated-wait";
const MINUTE: &str = "minute";
const MINUTES: &str = "minutes";
const LESS_THAN_A_MINUTE: &str = "less-than-a-minute";
const PRESS_1_FOR_CALLBACK: &str = "press-1-for-callback";
const CALLBACK_CONFIRMED: &str = "callback-confirmed";

/// Told to callers of a closed queue (`closed_action = "announce"`).
pub const CLOSED_PROMPT: &str = "closed";

/// Told to a caller a queue policy hangs up on, unless the action names its own.
pub const REMOVED_PROMPT: &str = "no-agents";

/// Prompt names saying `n` (0-999): `number-<n>` up to 20, tens and units above,
/// `hundred` for the hundreds.
fn number_prompts(n: u32) -> Vec<SmolStr> {
    let n = n.min(999);
    let mut out = Vec::new();
    let hundreds = n / 100;
    let rest = n % 100;
    if hundreds > 0 {
        out.push(SmolStr::new(format!("number-{hundreds}")));
        out.push(SmolStr::new_static("hundred"));
        if rest == 0 {
            return out;
        }
    }
    if rest <= 20 {
        out.push(SmolStr::new(format!("number-{rest}")));
    } else {
        out.push(SmolStr::new(format!("number-{}", rest / 10 * 10)));
        if !rest.is_multiple_of(10) {
            out.push(SmolStr::new(format!("number-{}", rest % 10)));
        }
    }
    out
}

async fn next_control(
    rx: &mut Option<mpsc::UnboundedReceiver<crate::control::Request>>,
) -> Option<crate::control::Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Parses a status as the command line writes it.
pub fn parse_status(s: &str) -> Result<AgentStatus, String> {
    let s = s.trim();
    match s {
        "available" => Ok(AgentStatus::Available),
        "available-on-demand" | "on-demand" => Ok(AgentStatus::AvailableOnDemand),
        "logged-out" | "logout" => Ok(AgentStatus::LoggedOut),
        "break" => Ok(AgentStatus::OnBreak {
            reason: SmolStr::new_static("break"),
        }),
        other => match other.strip_prefix("break:") {
            Some(reason) if !reason.trim().is_empty() && reason.len() <= 64 => {
                Ok(AgentStatus::OnBreak {
                    reason: SmolStr::new(reason.trim()),
                })
            }
            _ => Err(format!(
                "`{other}` is not a status (available, available-on-demand, logged-out, break, break:<reason>)"
            )),
        },
    }
}

/// Whether a caller number can be called back: not empty, not anonymous, a phone
/// number (digits, an optional leading `+`).
fn dialable(user: &str) -> bool {
    let digits = user.strip_prefix('+').unwrap_or(user);
    !digits.is_empty() && digits.len() <= 32 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A short label for why a policy removed a call.
fn reject_label(r: orch::RejectCause) -> &'static str {
    match r {
        orch::RejectCause::Full => "queue full",
        orch::RejectCause::Empty => "no agents",
        orch::RejectCause::NoAgent => "no agent logged in",
        orch::RejectCause::MaxWait => "max wait",
        orch::RejectCause::CallbackFailed => "callback not answered",
        orch::RejectCause::OverflowLoop => "overflow loop",
        orch::RejectCause::UnknownQueue => "unknown overflow queue",
        _ => "policy",
    }
}

impl Driver {
    /// A driver for these queues and agents, publishing on `bus`, sending finished calls
    /// to `records`.
    pub fn new(
        bus: EventBus<EngineEvent>,
        ids: Arc<IdAllocator>,
        routing: orch::OrchestratorConfig,
        queues: BTreeMap<QueueId, QueueSettings>,
        records: mpsc::UnboundedSender<CallRecord>,
        max_calls: usize,
    ) -> Self {
        let agent_ids = routing.agents.iter().map(|a| a.id.clone()).collect();
        let orch = Orchestrator::with_config(routing);
        let mut stats = orch::StatsBook::default();
        for (q, settings) in &queues {
            stats.set_service_level_threshold(q, settings.service_level_ms);
        }
        let rx = bus.subscribe(Filter::topics(TopicSet::of(&[
            topics::SESSION_EVENTS,
            topics::MEDIA_EVENTS,
        ])));
        Self {
            rx,
            tx: bus.publisher("engine"),
            ids,
            orch,
            queues,
            contacts: BTreeMap::new(),
            calls: HashMap::new(),
            timers: TimerHeap::default(),
            deferred: Vec::new(),
            forget: Vec::new(),
            records,
            max_calls,
            origin: tokio::time::Instant::now(),
            origin_unix_ms: unix_ms(),
            agents: agent_ids,
            reconcile_every: None,
            caller_rules: orch::CallerRules::default(),
            numbers: HashMap::new(),
            stats,
            kept: KeptPlaces::default(),
            sip_stats: None,
            activities: HashMap::new(),
            control_rx: None,
        }
    }

    /// Dialed numbers routed into queues with their own skills and priority.
    pub fn with_numbers(mut self, numbers: Vec<crate::config::DialedNumber>) -> Self {
        self.numbers = numbers
            .into_iter()
            .map(|n| (SmolStr::new(&n.number), n))
            .collect();
        self
    }

    /// Serves control requests (stats, explanations, agent status) from `rx`.
    pub fn with_control(mut self, rx: mpsc::UnboundedReceiver<crate::control::Request>) -> Self {
        self.control_rx = Some(rx);
        self
    }

    /// Caller rules (by caller number) applied to every incoming call: blocked callers
    /// get 403; the others get the priority and skills of the rules they match.
    pub fn with_caller_rules(mut self, rules: orch::CallerRules) -> Self {
        self.caller_rules = rules;
        self
    }

    /// Reports the SIP adapter's counters with the statistics (`call-engine stats`).
    pub fn with_sip_stats(mut self, source: call_engine_session::SessionStatsSource) -> Self {
        self.sip_stats = Some(source);
        self
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
        // One sleep for all the driver's timers, moved when the earliest deadline changes.
        let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(86_400);
        let mut armed = self.next_timer_at();
        let sleep = tokio::time::sleep_until(armed.unwrap_or_else(far));
        tokio::pin!(sleep);
        loop {
            let next = self.next_timer_at();
            if next != armed {
                armed = next;
                sleep.as_mut().reset(next.unwrap_or_else(far));
            }
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
                _ = &mut sleep => {
                    self.fire_due_timers().await;
                    // Armed again at the next deadline (or far away) next turn.
                    armed = None;
                    sleep.as_mut().reset(far());
                }
                Some(req) = next_control(&mut self.control_rx) => self.on_control(req).await,
            }
            self.settle().await;
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
        self.timers.arm(key, at);
    }

    fn cancel_timer(&mut self, key: &TimerKey) {
        self.timers.cancel(key);
    }

    /// The instant the earliest armed timer is due, if any.
    fn next_timer_at(&self) -> Option<tokio::time::Instant> {
        self.timers
            .next_at()
            .map(|at| self.origin + std::time::Duration::from_millis(at))
    }

    /// Runs every timer due by now, earliest first.
    async fn fire_due_timers(&mut self) {
        let now = self.now();
        while let Some(key) = self.timers.pop_due(now) {
            self.on_timer(key).await;
            // Each timer's teardowns before the next timer: one due with it may belong
            // to a call that this one ended (its cancel must come first).
            self.settle().await;
        }
    }

    /// Runs the teardowns the call machines asked for while handling an input, and
    /// tells the orchestrator of the calls that ended.
    async fn settle(&mut self) {
        while let Some((call, by, why)) = self.deferred.pop() {
            self.hangup_all(None, call, by, why).await;
            self.orch_input(None, orch::Input::CallEnded { call }).await;
            self.maybe_finish(None, call).await;
        }
        while let Some(call) = self.forget.pop() {
            self.orch_input(None, orch::Input::CallEnded { call }).await;
        }
    }

    async fn on_timer(&mut self, key: TimerKey) {
        match key {
            TimerKey::Orch(t) => self.orch_input(None, orch::Input::Timer(t)).await,
            TimerKey::Call(call, t) => self.call_input(None, call, CallInput::Timer(t)).await,
            TimerKey::Announce(call) => {
                let every = self
                    .calls
                    .get(&call)
                    .and_then(|c| self.queues.get(&c.queue))
                    .map(|q| q.announce.position_every_ms)
                    .unwrap_or(0);
                let prompts = self.position_prompts(call);
                if prompts.is_empty() {
                    return; // no longer waiting
                }
                self.announce(None, call, prompts).await;
                if every > 0 {
                    let at = self.now() + every;
                    self.start_timer(TimerKey::Announce(call), at);
                }
            }
            TimerKey::Periodic(call) => {
                let (prompt, every) = match self
                    .calls
                    .get(&call)
                    .filter(|c| c.connected.is_none() && c.callback.is_none())
                    .and_then(|c| self.queues.get(&c.queue))
                {
                    Some(q) => (q.announce.periodic.clone(), q.announce.periodic_every_ms),
                    None => return,
                };
                if let Some(p) = prompt {
                    self.announce(None, call, vec![p]).await;
                    if every > 0 {
                        let at = self.now() + every;
                        self.start_timer(TimerKey::Periodic(call), at);
                    }
                }
            }
        }
    }

    /// Answers a control request (command line).
    async fn on_control(&mut self, req: crate::control::Request) {
        use crate::control::{ControlRequest as R, ControlResponse};
        let now = self.now();
        let json = |v: Result<serde_json::Value, serde_json::Error>| match v {
            Ok(v) => ControlResponse::ok(v),
            Err(e) => ControlResponse::err(e.to_string()),
        };
        let known_agent = |d: &Self, a: &str| {
            let id = AgentId::new(a);
            if d.agents.contains(&id) {
                Ok(id)
            } else {
                Err(ControlResponse::err(format!("no agent `{a}`")))
            }
        };
        let answer = match req.body {
            R::Stats => {
                let queues: Vec<orch::QueueStats> = self
                    .queues
                    .keys()
                    .map(|q| {
                        let mut st = self.stats.queue_stats(q, now);
                        st.agents = self.agents_by_state(q);
                        st
                    })
                    .collect();
                let agents = self.stats.all_agent_stats();
                let sip = self.sip_stats.as_ref().map(|s| {
                    let s = s.snapshot();
                    serde_json::json!({
                        "received": s.received,
                        "sent": s.sent,
                        "malformed": s.malformed,
                        "bad_requests": s.bad_requests,
                        "retransmissions": s.retransmissions,
                        "overloaded": s.overloaded,
                        "forbidden_sources": s.forbidden_sources,
                        "tcp_limited": s.tcp_limited,
                        "auth_failures_unreported": s.auth_failures_unreported,
                        "pending_events": s.pending_events,
                    })
                });
                json(serde_json::to_value(serde_json::json!({
                    "queues": queues,
                    "agents": agents,
                    "sip": sip,
                })))
            }
            R::Agents => json(serde_json::to_value(self.orch.agent_snapshots())),
            R::Explain { call } => {
                let decisions = self.orch.explain(CallId(call));
                if decisions.is_empty() {
                    ControlResponse::err(format!(
                        "no routing decision recorded for call {call} (unknown, or too old)"
                    ))
                } else {
                    json(serde_json::to_value(decisions))
                }
            }
            R::SetStatus { agent, status } => {
                match (known_agent(self, &agent), parse_status(&status)) {
                    (Err(e), _) => e,
                    (_, Err(e)) => ControlResponse::err(e),
                    (Ok(agent), Ok(status)) => {
                        self.orch_input(
                            None,
                            orch::Input::AgentStatus {
                                agent: agent.clone(),
                                status,
                            },
                        )
                        .await;
                        json(serde_json::to_value(self.orch.agent_snapshot(&agent)))
                    }
                }
            }
            R::Login {
                agent,
                queue,
                level,
                position,
                penalty,
            } => match known_agent(self, &agent) {
                Err(e) => e,
                Ok(_) if !self.queues.contains_key(&QueueId::new(&queue)) => {
                    ControlResponse::err(format!("no queue `{queue}`"))
                }
                Ok(agent) => {
                    let defaults = MembershipTerms::default();
                    let membership = orch::Membership::with_terms(
                        QueueId::new(&queue),
                        MembershipTerms {
                            level: level.unwrap_or(defaults.level),
                            position: position.unwrap_or(defaults.position),
                            penalty: penalty.unwrap_or(defaults.penalty),
                        },
                    );
                    let terms = membership.terms();
                    self.orch_input(
                        None,
                        orch::Input::QueueLogin {
                            agent: agent.clone(),
                            membership,
                        },
                    )
                    .await;
                    self.send(
                        None,
                        EngineEvent::Agent(AgentEvent::QueueMembership {
                            agent: agent.clone(),
                            queue: QueueId::new(&queue),
                            member: true,
                            terms: Some(terms),
                        }),
                    )
                    .await;
                    json(serde_json::to_value(self.orch.agent_snapshot(&agent)))
                }
            },
            R::Logout { agent, queue } => match known_agent(self, &agent) {
                Err(e) => e,
                Ok(agent) => {
                    let queue = QueueId::new(&queue);
                    self.orch_input(
                        None,
                        orch::Input::QueueLogout {
                            agent: agent.clone(),
                            queue: queue.clone(),
                        },
                    )
                    .await;
                    self.send(
                        None,
                        EngineEvent::Agent(AgentEvent::QueueMembership {
                            agent: agent.clone(),
                            queue,
                            member: false,
                            terms: None,
                        }),
                    )
                    .await;
                    json(serde_json::to_value(self.orch.agent_snapshot(&agent)))
                }
            },
        };
        // The asker may have gone away: nothing to do then.
        let _ = req.reply.send(answer);
    }

    /// The members of a queue counted by state.
    fn agents_by_state(&self, queue: &QueueId) -> orch::AgentsByState {
        let mut by = orch::AgentsByState::default();
        for a in self.orch.members(queue) {
            let Some(s) = self.orch.agent_snapshot(&a) else {
                continue;
            };
            let slot = if s.contact.is_none() || s.status == AgentStatus::LoggedOut {
                &mut by.logged_out
            } else if matches!(s.status, AgentStatus::OnBreak { .. }) && s.stats.calls == 0 {
                &mut by.on_break
            } else {
                match s.stats.activity {
                    orch::Activity::Idle => &mut by.available,
                    orch::Activity::Reserved => &mut by.reserved,
                    orch::Activity::Ringing => &mut by.ringing,
                    orch::Activity::OnCall => &mut by.on_call,
                    orch::Activity::WrapUp => &mut by.wrap_up,
                    orch::Activity::Delayed => &mut by.delayed,
                }
            };
            *slot += 1;
        }
        by
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
                    Some(c) if c.reserved.as_ref() == Some(&agent) => {
                        // Reserved for a callback: fine while we call the customer (or
                        // they answered and the agent is being rung); stuck otherwise.
                        let dialing = matches!(c.callback, Some(CallbackState::Dialing(_)));
                        (!dialing && !c.involves(&agent)).then(|| {
                            (
                                orch::Input::CallbackFailed { call },
                                format!("reserved for callback {call} that is not being placed: released"),
                            )
                        })
                    }
                    Some(c) => (!c.involves(&agent)).then(|| {
                        (
                            orch::Input::OfferFailed {
                                call,
                                agent: agent.clone(),
                                why: orch::OfferFailure::Failed,
                            },
                            format!("reserved for call {call} without ringing it: released"),
                        )
                    }),
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

    /// Gives the media adapter the far end's SDP of a leg that answered, if it sent one.
    async fn set_remote(&self, cause: Option<EventId>, call: CallId, leg: Leg, sdp: Option<Sdp>) {
        if let Some(sdp) = sdp {
            self.send(
                cause,
                EngineEvent::MediaCommand(MediaCommand::SetRemote { call, leg, sdp }),
            )
            .await;
        }
    }

    /// Tells the orchestrator an offer failed.
    async fn orch_offer_failed(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        agent: AgentId,
        why: orch::OfferFailure,
    ) {
        self.orch_input(cause, orch::Input::OfferFailed { call, agent, why })
            .await;
    }

    /// Answers the customer's INVITE `session` of `call` with the final `status` (and a
    /// `Retry-After`).
    async fn reject(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        session: SessionId,
        status: u16,
        retry_after_secs: Option<u32>,
    ) {
        let reject = SessionCommand::Reject {
            call,
            session,
            status,
            retry_after_secs,
        };
        self.send(cause, EngineEvent::SessionCommand(reject)).await;
    }

    /// Refuses a call to `queue` before answering it with `status`: counted in the
    /// queue's statistics and event log, and recorded (disposition `Refused`, the status
    /// as its cause).
    async fn refuse(
        &mut self,
        cause: Option<EventId>,
        r: Refused<'_>,
        queue: QueueId,
        status: u16,
    ) {
        self.reject(cause, r.call, r.session, status, None).await;
        self.stats.call_refused(&queue, self.now());
        self.send(
            cause,
            EngineEvent::Queue(QueueEvent::CallerRefused {
                queue: queue.clone(),
                call: r.call,
                status,
            }),
        )
        .await;
        let now = unix_ms();
        let record = CallRecord {
            call: r.call,
            queue: Some(queue),
            caller: r.caller.clone(),
            agent: None,
            entered_queue_at_ms: None,
            answered_at_ms: None,
            ended_at_ms: now,
            wait_secs: 0.0,
            talk_secs: 0.0,
            disposition: Disposition::Refused,
            hung_up_by: Side::Engine,
            cause: HangupCause::Status { code: status },
        };
        if self.records.send(record).is_err() {
            warn!(call = %r.call, "call record dropped: recorder stopped");
        }
    }

    /// Publishes that a call left a queue.
    async fn left_queue(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        queue: QueueId,
        reason: LeaveReason,
        waited_ms: u64,
    ) {
        self.cancel_timer(&TimerKey::Announce(call));
        self.cancel_timer(&TimerKey::Periodic(call));
        self.send(
            cause,
            EngineEvent::Queue(QueueEvent::CallerLeft {
                queue,
                call,
                reason,
                waited_ms,
            }),
        )
        .await;
    }

    /// Publishes that a call joined a queue, and arms its announcements.
    async fn joined_queue(&mut self, cause: Option<EventId>, call: CallId, queue: QueueId) {
        let position = self.orch.position(call).map(|(_, p)| p).unwrap_or(0);
        self.send(
            cause,
            EngineEvent::Queue(QueueEvent::CallerJoined {
                queue: queue.clone(),
                call,
                position,
            }),
        )
        .await;
        let announce = self
            .queues
            .get(&queue)
            .map(|q| q.announce.clone())
            .unwrap_or_default();
        let now = self.now();
        if announce.position_every_ms > 0 {
            self.start_timer(TimerKey::Announce(call), now + announce.position_every_ms);
        }
        if announce.periodic.is_some() && announce.periodic_every_ms > 0 {
            self.start_timer(TimerKey::Periodic(call), now + announce.periodic_every_ms);
        }
    }

    /// Ends a call on the engine's initiative after telling the customer `prompt` (if
    /// any, and if the customer is still there).
    async fn close_with_prompt(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        prompt: Option<SmolStr>,
        why: HangupCause,
    ) {
        let speak = match self.calls.get_mut(&call) {
            Some(c) if c.customer_alive && !c.ending && c.moh.is_some() => match prompt {
                Some(p) => {
                    c.prompts.clear();
                    c.prompts.push_back(p);
                    c.close_after_prompts = Some(why.clone());
                    true
                }
                None => false,
            },
            Some(_) => false,
            None => return,
        };
        if speak {
            self.play_next_prompt(cause, call).await;
        } else {
            self.hangup_all(cause, call, Side::Engine, why).await;
            self.maybe_finish(cause, call).await;
        }
    }

    /// Plays the next queued prompt to the customer, or, when none is left, goes back
    /// to the music (or hangs up, if the call was to be closed).
    async fn play_next_prompt(&mut self, cause: Option<EventId>, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.customer_alive || c.ending || c.connected.is_some() {
            c.prompts.clear();
            return;
        }
        let playback = self.ids.playback();
        let (source, looped) = match c.prompts.pop_front() {
            Some(name) => (AudioSource::Prompt { name }, false),
            None => {
                if let Some(why) = c.close_after_prompts.take() {
                    c.moh = None;
                    self.hangup_all(cause, call, Side::Engine, why).await;
                    self.maybe_finish(cause, call).await;
                    return;
                }
                if c.callback == Some(CallbackState::Confirming) {
                    // Told we will call back: hang up now; the place in the queue stays.
                    c.callback = Some(CallbackState::Waiting);
                    c.moh = None;
                    let session = c.customer;
                    c.hanging_up.insert(session);
                    // Gone from now on: a callback reserved before the BYE completes
                    // dials them back rather than ringing an agent for nobody.
                    c.customer_alive = false;
                    self.send(
                        cause,
                        EngineEvent::SessionCommand(SessionCommand::Hangup { call, session }),
                    )
                    .await;
                    return;
                }
                let moh = self
                    .queues
                    .get(&c.queue)
                    .map(|q| q.moh.clone())
                    .unwrap_or(AudioSource::BuiltinMusic);
                (moh, true)
            }
        };
        c.moh = Some(playback);
        c.playing_prompt = !looped;
        self.send(
            cause,
            EngineEvent::MediaCommand(MediaCommand::Play {
                call,
                leg: Leg::Customer,
                playback,
                source,
                looped,
            }),
        )
        .await;
    }

    /// A digit from the customer (RFC 4733 or SIP INFO): 1 asks for a callback where the
    /// queue offers it.
    async fn on_digit(&mut self, cause: Option<EventId>, call: CallId, digit: char) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let offered = self
            .queues
            .get(&c.queue)
            .is_some_and(|q| q.announce.callback);
        let waiting = c.connected.is_none()
            && c.callback.is_none()
            && !c.duplicate_callback
            && dialable(&c.caller.user)
            && c.customer_alive
            && !c.ending
            && !c.announce_only
            && self.orch.position(call).is_some();
        debug!(%call, %digit, offered, waiting, "digit from the customer");
        if digit != '1' || !offered || !waiting {
            return;
        }
        let number = c.caller.user.clone();
        let queue = c.queue.clone();
        // One pending callback per number (derived from the calls, never out of sync).
        let duplicate = self
            .calls
            .iter()
            .any(|(id, o)| *id != call && o.callback.is_some() && o.caller.user == number);
        if duplicate {
            // One callback per number: the one already waiting keeps its place; this
            // caller leaves for it (counted so, not as an abandon).
            info!(%call, caller = %number, "callback already pending for this number");
            self.cancel_timer(&TimerKey::Announce(call));
            self.cancel_timer(&TimerKey::Periodic(call));
            if let Some(c) = self.calls.get_mut(&call) {
                c.duplicate_callback = true;
            }
            self.close_with_prompt(
                cause,
                call,
                Some(SmolStr::new_static(CALLBACK_CONFIRMED)),
                HangupCause::Normal,
            )
            .await;
            return;
        }
        info!(%call, caller = %number, %queue, "callback requested: the caller keeps the place");
        if let Some(c) = self.calls.get_mut(&call) {
            c.callback = Some(CallbackState::Confirming);
            c.prompts.clear();
            c.prompts.push_back(SmolStr::new_static(CALLBACK_CONFIRMED));
        }
        self.orch_input(cause, orch::Input::CallbackRequested { call })
            .await;
        // Logged like any queue event: the caller left the line (keeping the place).
        let waited_ms = self
            .calls
            .get(&call)
            .and_then(|c| c.sm.queued_at())
            .map(|at| self.now().saturating_sub(at.0))
            .unwrap_or(0);
        self.left_queue(cause, call, queue, LeaveReason::Callback, waited_ms)
            .await;
        self.play_next_prompt(cause, call).await;
    }

    /// The orchestrator reserved an agent for a callback: call the customer back.
    /// Returns the input to give the orchestrator at once, if any.
    async fn dial_callback(&mut self, cause: Option<EventId>, call: CallId) -> Option<orch::Input> {
        let Some(c) = self.calls.get_mut(&call) else {
            return Some(orch::Input::CallbackFailed { call });
        };
        match c.callback {
            Some(CallbackState::Confirming)
                if c.customer_alive && !c.hanging_up.contains(&c.customer) =>
            {
                // Still on the line (hearing the confirmation): no need to call back.
                c.callback = Some(CallbackState::Connected);
                c.prompts.clear();
                return Some(orch::Input::CallbackAnswered { call });
            }
            // Already calling them (an overflow reserved another agent): the answer
            // rings whoever is reserved then.
            Some(CallbackState::Dialing(_)) | Some(CallbackState::Connected) => return None,
            _ => {}
        }
        let session = self.ids.session();
        c.callback = Some(CallbackState::Dialing(session));
        c.customer = session;
        self.send(
            cause,
            EngineEvent::MediaCommand(MediaCommand::Allocate {
                call,
                leg: Leg::Customer,
                remote_offer: None,
            }),
        )
        .await;
        None
    }

    /// The customer answered our callback: music until the reserved agent answers.
    async fn callback_answered(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        session: SessionId,
        sdp: Option<Sdp>,
    ) {
        info!(%call, "callback answered by the customer");
        if let Some(c) = self.calls.get_mut(&call) {
            c.callback = Some(CallbackState::Connected);
            c.customer = session;
            c.customer_alive = true;
        }
        self.set_remote(cause, call, Leg::Customer, sdp).await;
        self.play_next_prompt(cause, call).await;
        if let Some(queue) = self.calls.get(&call).map(|c| c.queue.clone()) {
            self.head_of_queue(cause, call, queue).await;
        }
        self.orch_input(cause, orch::Input::CallbackAnswered { call })
            .await;
    }

    /// Queues prompts for a waiting caller and starts them unless some are playing.
    async fn announce(&mut self, cause: Option<EventId>, call: CallId, prompts: Vec<SmolStr>) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if prompts.is_empty()
            || !c.customer_alive
            || c.ending
            || c.connected.is_some()
            || c.callback.is_some()
            || c.close_after_prompts.is_some()
        {
            return;
        }
        // Queued behind a prompt still playing, never cutting it off.
        let idle = c.prompts.is_empty() && !c.playing_prompt;
        c.prompts.extend(prompts);
        if idle {
            self.play_next_prompt(cause, call).await;
        }
    }

    /// The position (and wait time) announcement for a waiting call.
    fn position_prompts(&self, call: CallId) -> Vec<SmolStr> {
        let Some(c) = self.calls.get(&call) else {
            return Vec::new();
        };
        let Some((_, position)) = self.orch.position(call) else {
            return Vec::new();
        };
        let settings = self.queues.get(&c.queue);
        let mut out = vec![SmolStr::new_static(YOU_ARE_CALLER)];
        out.extend(number_prompts(position));
        if settings.is_some_and(|q| q.announce.wait_time) {
            let staffed = self.orch.staffed(&c.queue);
            if let Some(ewt) = self.stats.ewt(&c.queue, position, staffed, self.now()) {
                out.push(SmolStr::new_static(ESTIMATED_WAIT));
                let minutes = (ewt + 30_000) / 60_000;
                if minutes == 0 {
                    out.push(SmolStr::new_static(LESS_THAN_A_MINUTE));
                } else {
                    out.extend(number_prompts(minutes.min(999) as u32));
                    out.push(SmolStr::new_static(if minutes == 1 {
                        MINUTE
                    } else {
                        MINUTES
                    }));
                }
            }
        }
        if settings.is_some_and(|q| q.announce.callback) && dialable(&c.caller.user) {
            out.push(SmolStr::new_static(PRESS_1_FOR_CALLBACK));
        }
        out
    }

    /// Feeds the orchestrator and executes its decisions.
    async fn orch_input(&mut self, cause: Option<EventId>, input: orch::Input) {
        let mut inputs = std::collections::VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let follow = self.orch_step(cause, input).await;
            inputs.extend(follow);
        }
    }

    /// One orchestrator input; returns inputs its decisions led to.
    async fn orch_step(&mut self, cause: Option<EventId>, input: orch::Input) -> Vec<orch::Input> {
        let mut follow = Vec::new();
        let now = self.now();
        let mut touched = self.agents_of_input(&input);
        let outputs = self.orch.handle(input, now);
        for out in &outputs {
            match out {
                Output::Ring { agent, .. }
                | Output::CancelRing { agent, .. }
                | Output::Assigned { agent, .. }
                | Output::AgentStatusChanged { agent, .. }
                | Output::Callback { agent, .. } => touched.push(agent.clone()),
                _ => {}
            }
        }
        for out in outputs {
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
                    // A single-ring offer that failed: tell the call machine — unless the
                    // call is ending anyway (the customer left: no agent is to blame),
                    // or the rings stop because the caller chose a callback.
                    let why = match self.calls.get(&call) {
                        Some(c) if c.ending || !c.customer_alive => None,
                        Some(c)
                            if matches!(
                                c.callback,
                                Some(CallbackState::Confirming | CallbackState::Waiting)
                            ) =>
                        {
                            Some(HangupCause::Cancelled)
                        }
                        Some(_) => Some(HangupCause::NoAnswer),
                        None => None,
                    };
                    if let Some(why) = why {
                        self.call_offer_failed(cause, call, &agent, why).await;
                    }
                }
                Output::Assigned {
                    call,
                    queue,
                    agent,
                    waited_ms,
                } => {
                    info!(%call, %agent, "call assigned");
                    self.stats
                        .call_answered(call, &queue, &agent, waited_ms, now);
                    self.left_queue(cause, call, queue, LeaveReason::Answered, waited_ms)
                        .await;
                }
                Output::Abandoned {
                    call,
                    queue,
                    waited_ms,
                } => {
                    let duplicate = self.calls.get(&call).is_some_and(|c| c.duplicate_callback);
                    if duplicate {
                        // Left for the callback already pending for their number.
                        info!(%call, %queue, waited_ms, "caller left for a pending callback");
                        self.stats
                            .call_left(call, &queue, LeaveReason::Callback, waited_ms, now);
                        self.left_queue(cause, call, queue, LeaveReason::Callback, waited_ms)
                            .await;
                        continue;
                    }
                    info!(%call, %queue, waited_ms, "caller abandoned");
                    self.stats.call_abandoned(call, &queue, waited_ms, now);
                    // Calling back soon keeps the place (abandoned_resume).
                    if let Some(c) = self.calls.get(&call) {
                        let resume = self
                            .queues
                            .get(&queue)
                            .map(|q| q.abandoned_resume_ms)
                            .unwrap_or(0);
                        // Only a real number identifies the caller again.
                        if resume > 0 && dialable(&c.caller.user) {
                            let entered = c
                                .routing
                                .entered_at
                                .unwrap_or(now.saturating_sub(waited_ms));
                            self.kept.keep(
                                c.caller.user.clone(),
                                queue.clone(),
                                entered,
                                now,
                                resume,
                            );
                        }
                    }
                    self.left_queue(cause, call, queue, LeaveReason::Abandoned, waited_ms)
                        .await;
                }
                Output::AgentStatusChanged { agent, status } => {
                    info!(%agent, ?status, "agent status");
                    self.send(
                        cause,
                        EngineEvent::Agent(AgentEvent::StatusChanged { agent, status }),
                    )
                    .await;
                }
                Output::Overflowed {
                    call,
                    from,
                    to,
                    reason,
                    waited_ms,
                } => {
                    info!(%call, %from, %to, ?reason, "call overflowed");
                    self.stats
                        .call_left(call, &from, LeaveReason::Overflow, waited_ms, now);
                    self.stats.call_joined(call, &to, now);
                    self.left_queue(cause, call, from, LeaveReason::Overflow, waited_ms)
                        .await;
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.queue = to.clone();
                    }
                    self.call_input(cause, call, CallInput::Enqueue { queue: to.clone() })
                        .await;
                    self.joined_queue(cause, call, to).await;
                }
                Output::Removed {
                    call,
                    queue,
                    reason,
                    prompt,
                    waited_ms,
                } => {
                    info!(%call, %queue, ?reason, "call removed from its queue by policy");
                    let why = match reason {
                        orch::RejectCause::CallbackFailed => LeaveReason::Callback,
                        _ => LeaveReason::Rejected,
                    };
                    self.stats.call_left(call, &queue, why, waited_ms, now);
                    self.left_queue(cause, call, queue, LeaveReason::Rejected, waited_ms)
                        .await;
                    let prompt = match reason {
                        orch::RejectCause::CallbackFailed => None,
                        _ => Some(prompt.unwrap_or_else(|| SmolStr::new_static(REMOVED_PROMPT))),
                    };
                    let detail = SmolStr::new(format!("queue policy: {}", reject_label(reason)));
                    self.close_with_prompt(cause, call, prompt, HangupCause::Failure { detail })
                        .await;
                }
                Output::Callback { call, queue, agent } => {
                    info!(%call, %queue, %agent, "calling the customer back");
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.reserved = Some(agent.clone());
                    }
                    follow.extend(self.dial_callback(cause, call).await);
                }
                Output::StartTimer { timer, at } => self.start_timer(TimerKey::Orch(timer), at),
                Output::CancelTimer { timer } => self.cancel_timer(&TimerKey::Orch(timer)),
            }
        }
        touched.sort();
        touched.dedup();
        for agent in touched {
            self.publish_activity(cause, agent).await;
        }
        follow
    }

    /// Agents an orchestrator input may change.
    fn agents_of_input(&self, input: &orch::Input) -> Vec<AgentId> {
        use orch::Input as I;
        // The orchestrator's own record: it holds even when the driver has forgotten
        // the call already (it ended on a path of the driver's).
        let of_call = |call: &CallId| self.orch.call_agents(*call);
        match input {
            I::AgentOnline { agent, .. }
            | I::AgentOffline { agent }
            | I::AgentPaused { agent, .. }
            | I::AgentStatus { agent, .. }
            | I::QueueLogin { agent, .. }
            | I::QueueLogout { agent, .. }
            | I::OfferAnswered { agent, .. }
            | I::OfferFailed { agent, .. } => vec![agent.clone()],
            I::CallEnded { call } | I::CallbackFailed { call } | I::CallbackAnswered { call } => {
                of_call(call)
            }
            I::Timer(orch::Timer::WrapUpEnd { agent } | orch::Timer::DelayEnd { agent }) => {
                vec![agent.clone()]
            }
            I::Timer(orch::Timer::RingTimeout { agent, .. }) => vec![agent.clone()],
            I::Timer(
                orch::Timer::MaxWait { call }
                | orch::Timer::Retry { call }
                | orch::Timer::Widen { call }
                | orch::Timer::RingMore { call },
            )
            | I::CallbackRequested { call } => of_call(call),
            I::Timer(orch::Timer::NoAgent { queue }) => self
                .calls
                .values()
                .filter(|c| c.queue == *queue)
                .filter_map(|c| c.reserved.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Publishes an agent's activity when it changed.
    async fn publish_activity(&mut self, cause: Option<EventId>, agent: AgentId) {
        let Some(st) = self.orch.agent_stats(&agent) else {
            return;
        };
        let activity = st.activity;
        let calls = u16::try_from(st.calls).unwrap_or(u16::MAX);
        if self.activities.get(&agent) == Some(&(activity, calls)) {
            return;
        }
        self.activities.insert(agent.clone(), (activity, calls));
        self.send(
            cause,
            EngineEvent::Agent(AgentEvent::ActivityChanged {
                agent,
                activity,
                active_calls: calls,
            }),
        )
        .await;
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
        if c.ending {
            // Torn down already: the orchestrator hears CallEnded after this event.
            return;
        }
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
            ev @ SessionEvent::IncomingCall { .. } => self.incoming(cause, ev).await,
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
                let callback = self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.callback == Some(CallbackState::Dialing(session)));
                if callback {
                    self.callback_answered(cause, call, session, sdp).await
                } else {
                    self.answered(cause, call, session, sdp).await
                }
            }
            SessionEvent::Confirmed {
                call,
                session,
                answer,
            } => self.customer_confirmed(cause, call, session, answer).await,
            SessionEvent::DtmfReceived { call, digit, .. } => {
                self.on_digit(cause, call, digit).await
            }
            SessionEvent::Rejected {
                call,
                session,
                cause: why,
            } if self
                .calls
                .get(&call)
                .is_some_and(|c| c.callback == Some(CallbackState::Dialing(session))) =>
            {
                info!(%call, ?why, "callback not answered by the customer");
                self.orch_input(cause, orch::Input::CallbackFailed { call })
                    .await;
                self.maybe_finish(cause, call).await;
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

    async fn incoming(&mut self, cause: Option<EventId>, ev: SessionEvent) {
        let SessionEvent::IncomingCall {
            call,
            session,
            from,
            to,
            offer,
            requested_skills,
            requested_priority,
        } = ev
        else {
            return;
        };
        let refused = Refused {
            call,
            session,
            caller: &from,
        };
        // A dialed number may stand for a queue, with its own skills and priority.
        let dialed = self.numbers.get(&to).cloned();
        let mut queue = match &dialed {
            Some(n) => QueueId::new(&n.queue),
            None => QueueId::new(&to),
        };
        if !self.orch.has_queue(&queue) {
            // No call of the call center's: no record (a scanner trying numbers would
            // otherwise write one per INVITE).
            info!(%call, %to, "unknown queue: 404");
            self.reject(cause, call, session, 404, None).await;
            return;
        }
        if self.calls.len() >= self.max_calls {
            // Overload: refuse rather than fail later (no RTP ports left for the call).
            // Only counted: an overloaded engine writes no records for what it refuses.
            warn!(%call, calls = self.calls.len(), max = self.max_calls, "overload: 503");
            self.stats.call_refused(&queue, self.now());
            self.reject(cause, call, session, 503, Some(RETRY_AFTER_SECS))
                .await;
            return;
        }
        // Caller rules: blacklist, VIP priority, skills.
        let verdict = self.caller_rules.evaluate(&from.user);
        if verdict.blocked {
            info!(%call, caller = %from.user, "caller blocked by a caller rule: 403");
            self.refuse(cause, refused, queue, 403).await;
            return;
        }
        // Priority: the highest of the caller rules and a trusted upstream's header.
        let priority = verdict
            .priority
            .into_iter()
            .chain(requested_priority)
            .chain(dialed.as_ref().and_then(|n| n.priority))
            .max()
            .unwrap_or(0);
        let mut routing = orch::CallRouting::new().with_priority(priority);
        for (skill, level) in dialed.iter().flat_map(|n| n.skills.iter()) {
            routing = routing.with_skill(skill.as_str(), *level);
        }
        for (skill, level) in verdict.skills {
            routing = routing.with_skill(skill, level);
        }
        if !requested_skills.is_empty() {
            match orch::parse_skills_header(&requested_skills.join(",")) {
                Ok(skills) => {
                    for (skill, level) in skills {
                        routing = routing.with_skill(skill, level);
                    }
                }
                // A bad header is the caller's mistake: route without it.
                Err(e) => warn!(%call, error = %e, "X-Skills ignored"),
            }
        }
        // Business hours.
        let mut announce_only = None;
        let now_unix = unix_ms();
        let mut hops = 0;
        while let Some(settings) = self.queues.get(&queue) {
            let open = settings
                .business_hours
                .as_ref()
                .is_none_or(|h| h.is_open(now_unix));
            if open {
                break;
            }
            match settings.closed_action.clone() {
                ClosedAction::Reject => {
                    info!(%call, %queue, "queue closed: 480");
                    self.refuse(cause, refused, queue, 480).await;
                    return;
                }
                ClosedAction::Announce => {
                    info!(%call, %queue, "queue closed: announcing");
                    announce_only = Some(SmolStr::new_static(CLOSED_PROMPT));
                    break;
                }
                ClosedAction::Overflow(target) => {
                    hops += 1;
                    if hops > 8 {
                        warn!(%call, %queue, "closed queues overflow into each other: 480");
                        self.refuse(cause, refused, queue, 480).await;
                        return;
                    }
                    info!(%call, from = %queue, to = %target, "queue closed: overflow");
                    queue = QueueId::new(&target);
                }
            }
        }
        let now = self.now();
        if announce_only.is_none() {
            // Calls answered but not queued yet (waiting for their ACK) count as
            // waiting (`Input::CallArriving`, below): a burst of callers cannot answer
            // its way past `max_len`.
            match self.orch.admit(&queue, now) {
                orch::Admission::Join => {}
                orch::Admission::Overflow { queue: to } => {
                    info!(%call, from = %queue, %to, "queue refuses callers: overflow");
                    queue = to;
                }
                orch::Admission::Reject { reason } => {
                    let status = match reason {
                        orch::RejectCause::Full => 486,
                        orch::RejectCause::UnknownQueue => 404,
                        _ => 480,
                    };
                    info!(%call, %queue, ?reason, status, "queue refuses the caller");
                    self.refuse(cause, refused, queue, status).await;
                    return;
                }
            }
        }
        // Called back soon after abandoning: the place in the queue is kept. It is
        // taken only once the caller's ACK proves the call is theirs: a forged INVITE in
        // their name must not use it up.
        let resumes_place = if announce_only.is_none() {
            self.kept.claim(&from.user, &queue, now)
        } else {
            None
        };
        if resumes_place.is_some() {
            info!(%call, caller = %from.user, "caller back within abandoned_resume: place kept once confirmed");
        }
        let ring_timeout_ms = self
            .queues
            .get(&queue)
            .map(|q| q.ring_timeout_ms)
            .unwrap_or(15_000);
        let config = CallConfig {
            // The orchestrator times rings; this is a backstop.
            ring_timeout_ms: ring_timeout_ms + 5_000,
            ..CallConfig::default()
        };
        let now = self.millis();
        info!(%call, caller = %from.user, %queue, "incoming call");
        // On its way to the queue until confirmed: it counts against `max_len` there,
        // for the next INVITE's admission and for overflows alike (sent below).
        let arriving = announce_only.is_none().then(|| queue.clone());
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
                routing,
                prompts: announce_only.into_iter().collect(),
                close_after_prompts: None,
                announce_only: false,
                callback: None,
                playing_prompt: false,
                reserved: None,
                duplicate_callback: false,
                awaiting_ack: false,
                resumes_place,
                late_offer: offer.is_none(),
                customer_answered: false,
            },
        );
        if let Some(c) = self.calls.get_mut(&call) {
            c.announce_only = !c.prompts.is_empty();
            if c.announce_only {
                c.close_after_prompts = Some(HangupCause::Failure {
                    detail: SmolStr::new_static("queue closed"),
                });
            }
        }
        if let Some(queue) = arriving {
            self.orch_input(cause, orch::Input::CallArriving { call, queue })
                .await;
        }
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
                let callback = self.calls.get(&call).and_then(|c| c.callback);
                match leg {
                    Leg::Customer if matches!(callback, Some(CallbackState::Dialing(_))) => {
                        // No endpoint to call the customer back with: the callback fails
                        // (the reserved agent is released).
                        if let Some(c) = self.calls.get_mut(&call) {
                            if let Some(CallbackState::Dialing(s)) = c.callback {
                                c.hanging_up.insert(s);
                            }
                        }
                        self.orch_input(cause, orch::Input::CallbackFailed { call })
                            .await;
                        self.maybe_finish(cause, call).await;
                    }
                    Leg::Customer
                        if callback.is_some()
                            || self.calls.get(&call).is_some_and(|c| c.customer_answered) =>
                    {
                        // The customer's leg is answered (a callback, ours, or a late
                        // offer whose answer the endpoint refused): end the call.
                        self.deferred.push((call, Side::Engine, why));
                    }
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
                            self.reject(cause, call, session, 488, None).await;
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
                            self.orch_offer_failed(cause, call, agent, orch::OfferFailure::Failed)
                                .await;
                        }
                        if connected {
                            self.hangup_all(cause, call, Side::Engine, why).await;
                        }
                    }
                    _ => {}
                }
            }
            MediaEvent::PlaybackFinished { call, playback } => {
                let current = self
                    .calls
                    .get(&call)
                    .is_some_and(|c| c.moh == Some(playback) && c.playing_prompt);
                if current {
                    self.play_next_prompt(cause, call).await;
                }
            }
            MediaEvent::DtmfDetected {
                call,
                leg: Leg::Customer,
                digit,
            } => self.on_digit(cause, call, digit).await,
            MediaEvent::MediaTimeout { call, leg } => {
                if self.calls.get(&call).is_some_and(|c| c.held) {
                    // A held leg may well be silent.
                    debug!(%call, ?leg, "no RTP while on hold");
                    return;
                }
                warn!(%call, ?leg, "no RTP: ending the call");
                // The full teardown: both legs, the orchestrator, the record.
                self.deferred.push((
                    call,
                    Side::Engine,
                    HangupCause::Failure {
                        detail: "media timeout".into(),
                    },
                ));
            }
            _ => {}
        }
    }

    async fn customer_ready(&mut self, cause: Option<EventId>, call: CallId, sdp: Sdp) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(CallbackState::Dialing(session)) = c.callback {
            // Our endpoint for calling the customer back: send the INVITE.
            let via = self
                .queues
                .get(&c.queue)
                .and_then(|q| q.announce.callback_via.clone());
            let target = match via {
                Some(via) => SmolStr::new(format!("sip:{}@{via}", c.caller.user)),
                None => c.caller.uri.clone(),
            };
            let caller = Party {
                user: SmolStr::new(c.queue.as_str()),
                display_name: None,
                uri: SmolStr::new(format!("sip:{}", c.queue)),
            };
            info!(%call, %target, "callback: calling the customer");
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Invite {
                    call,
                    session,
                    target,
                    caller,
                    sdp,
                }),
            )
            .await;
            return;
        }
        let session = c.customer;
        c.awaiting_ack = true;
        c.customer_answered = true;
        self.send(
            cause,
            EngineEvent::SessionCommand(SessionCommand::Answer { call, session, sdp }),
        )
        .await;
    }

    /// The caller's ACK of our 200 arrived: the music (or the announcement) starts, and
    /// the call joins its queue. Not before: an INVITE with a forged source never ACKs,
    /// and must not get our music aimed at its SDP address nor an agent rung for it (if
    /// no ACK comes, the session adapter ends the leg after 64·T1).
    async fn customer_confirmed(
        &mut self,
        cause: Option<EventId>,
        call: CallId,
        session: SessionId,
        answer: Option<Sdp>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.awaiting_ack || c.customer != session || c.ending {
            debug!(%call, %session, "Confirmed for no answer we are waiting on; ignored");
            return;
        }
        c.awaiting_ack = false;
        if c.late_offer {
            // Our 200 offered; the ACK must answer (RFC 3264). `SetRemote` (High lane) is
            // normally delivered before the music's `Play` (Normal lane); should the
            // bus's starvation guard deliver the `Play` first, the endpoint sends nothing
            // until it knows where to, so only the first packets of the music are lost.
            let Some(sdp) = answer else {
                warn!(%call, "late offer: the ACK carried no SDP answer; hanging up");
                self.deferred.push((
                    call,
                    Side::Engine,
                    HangupCause::Failure {
                        detail: SmolStr::new_static("no SDP answer in the ACK"),
                    },
                ));
                return;
            };
            self.send(
                cause,
                EngineEvent::MediaCommand(MediaCommand::SetRemote {
                    call,
                    leg: Leg::Customer,
                    sdp,
                }),
            )
            .await;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if let Some(claim) = c.resumes_place.take() {
            // The first of the number's calls to be confirmed takes the place; another
            // one answered meanwhile (two INVITEs in the number's name) finds it gone
            // and queues as a new caller.
            match self.kept.take(&c.caller.user, claim) {
                Some(entered) => c.routing.entered_at = Some(entered),
                None => {
                    info!(%call, caller = %c.caller.user, "the kept place was taken by another call from the number: queued as a new caller");
                }
            }
        }
        let queue = c.queue.clone();
        let announce_only = c.announce_only;
        let routing = c.routing.clone();
        c.moh = Some(self.ids.playback());
        self.play_next_prompt(cause, call).await;
        if announce_only {
            return;
        }
        self.call_input(
            cause,
            call,
            CallInput::Enqueue {
                queue: queue.clone(),
            },
        )
        .await;
        let now = self.now();
        self.stats.call_joined(call, &queue, now);
        self.orch_input(
            cause,
            orch::Input::CallQueuedWith {
                call,
                queue: queue.clone(),
                routing,
            },
        )
        .await;
        // Still in this queue (a policy may have removed it or sent it elsewhere at
        // once, which published its own events): it joined.
        if self.calls.contains_key(&call)
            && self.orch.position(call).is_some_and(|(q, _)| q == queue)
        {
            self.joined_queue(cause, call, queue).await;
        }
    }

    /// Publishes that a call joined a queue at its head (it is being routed at once).
    async fn head_of_queue(&mut self, cause: Option<EventId>, call: CallId, queue: QueueId) {
        self.send(
            cause,
            EngineEvent::Queue(QueueEvent::CallerJoined {
                queue,
                call,
                position: 1,
            }),
        )
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
        let gone = self
            .calls
            .get(&call)
            .is_none_or(|c| c.ending || !c.customer_alive);
        if gone {
            // The customer is gone or going: release the agent at once.
            info!(%call, %agent, "agent answered a call that is ending: hanging up");
            self.send(
                cause,
                EngineEvent::SessionCommand(SessionCommand::Hangup { call, session }),
            )
            .await;
            self.orch_offer_failed(cause, call, agent, orch::OfferFailure::Failed)
                .await;
            return;
        }
        info!(%call, %agent, "agent answered");
        if let Some(c) = self.calls.get_mut(&call) {
            c.connected = Some((agent.clone(), session));
            c.agent_alive = true;
        }
        self.set_remote(cause, call, Leg::Agent, sdp).await;
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
        if let Some(CallbackState::Dialing(s)) = c.callback {
            // Calling the customer back: CANCEL that INVITE.
            if !c.customer_alive {
                targets.push(s);
            }
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
        if session == c.customer
            && !c.ending
            && matches!(
                c.callback,
                Some(CallbackState::Confirming | CallbackState::Waiting)
            )
        {
            // The caller chose a callback: their leg ends, the call keeps its place.
            c.hanging_up.remove(&session);
            c.customer_alive = false;
            c.callback = Some(CallbackState::Waiting);
            c.prompts.clear();
            c.moh = None;
            info!(%call, "callback: caller's leg ended, waiting to call back");
            self.send(
                cause,
                EngineEvent::MediaCommand(MediaCommand::Release {
                    call,
                    leg: Leg::Customer,
                }),
            )
            .await;
            return;
        }
        let ours = c.hanging_up.remove(&session);
        // A shutdown ends legs on the engine's initiative, not the caller's or agent's.
        let by_engine = why == HangupCause::Shutdown;
        // So does the session adapter's BYE to a caller who never ACKed our 200 (the
        // call is recorded as failed by the engine, not as hung up by the caller).
        let unconfirmed =
            session == c.customer && c.awaiting_ack && matches!(why, HangupCause::Failure { .. });
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
                    c.hung_up_by = Some(if by_engine || unconfirmed {
                        Side::Engine
                    } else {
                        side
                    });
                    c.cause = why.clone();
                }
            }
            // The other leg goes too (unless already on its way): a BYE is never left
            // unpropagated.
            if let Some(s) = other.filter(|s| !c.hanging_up.contains(s)) {
                c.ending = true;
                c.hanging_up.insert(s);
                self.send(
                    cause,
                    EngineEvent::SessionCommand(SessionCommand::Hangup { call, session: s }),
                )
                .await;
            }
            if by_engine {
                // Ended by the engine (shutdown): the machine records it as such.
                self.call_input(cause, call, CallInput::Hangup { cause: why.clone() })
                    .await;
            }
            // The orchestrator first, while the call's context is still here (an
            // abandoned caller's number and seniority are kept from it).
            self.orch_input(cause, orch::Input::CallEnded { call })
                .await;
            self.call_input(cause, call, CallInput::LegEnded { side, cause: why })
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
        if let (Some((agent, _)), Some(talk)) = (&c.connected, c.sm.talk_ms()) {
            let now_ms = now.0;
            self.stats.call_ended(&c.queue, agent, talk, now_ms);
            // The orchestrator has scheduled the wrap-up: its length is known now.
            if let Some(until) = self
                .orch
                .agent_stats(agent)
                .filter(|s| s.activity == orch::Activity::WrapUp)
                .and_then(|s| s.wrap_up_until)
            {
                self.stats
                    .wrap_up_done(agent, until.saturating_sub(now_ms), now_ms);
            }
        }

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
        if let Some(c) = self.calls.remove(&call) {
            if let Some(claim) = c.resumes_place {
                // Ended before it was confirmed: its claim on the kept place goes.
                self.kept.release(&c.caller.user, claim);
            }
        }
        // Whatever path ended it, the orchestrator must not keep the call.
        if self.orch.has_call(call) {
            self.forget.push(call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(n: u64) -> TimerKey {
        TimerKey::Announce(CallId(n))
    }

    /// Every key due by `now`, in firing order.
    fn due(t: &mut TimerHeap, now: u64) -> Vec<TimerKey> {
        std::iter::from_fn(|| t.pop_due(now)).collect()
    }

    #[test]
    fn timers_fire_once_in_deadline_order_when_due() {
        let mut t = TimerHeap::default();
        t.arm(announce(1), 300);
        t.arm(announce(2), 100);
        t.arm(announce(3), 200);
        assert_eq!(t.next_at(), Some(100));
        assert_eq!(due(&mut t, 99), vec![]);
        assert_eq!(due(&mut t, 250), vec![announce(2), announce(3)]);
        assert_eq!(t.next_at(), Some(300));
        assert_eq!(due(&mut t, 1_000), vec![announce(1)]);
        assert_eq!(due(&mut t, 10_000), vec![], "each fires once");
        assert_eq!(t.next_at(), None);
        assert_eq!(t.keys().count(), 0);
    }

    #[test]
    fn a_rearmed_timer_fires_at_its_new_deadline_only_and_a_cancelled_one_never() {
        let mut t = TimerHeap::default();
        t.arm(announce(1), 100);
        t.arm(announce(1), 500); // later: the 100 entry is stale
        t.arm(announce(2), 400);
        t.arm(announce(2), 50); // earlier
        t.arm(announce(3), 60);
        t.cancel(&announce(3));
        t.cancel(&announce(4)); // never armed: nothing happens
        assert_eq!(due(&mut t, 60), vec![announce(2)]);
        assert_eq!(
            due(&mut t, 450),
            vec![],
            "the first arming of 1 and 2 are stale"
        );
        assert_eq!(due(&mut t, 500), vec![announce(1)]);
        assert_eq!(t.keys().count(), 0);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let mut t = TimerHeap::default();
        t.arm(announce(7), 1_000_000);
        for i in 0..10_000u64 {
            t.arm(announce(1), 1_000 + i);
            t.arm(announce(2), 2_000 + i);
            t.cancel(&announce(2));
            assert!(
                t.heap.len() <= 2 * t.armed.len() + 65,
                "{} entries",
                t.heap.len()
            );
        }
        assert_eq!(due(&mut t, 20_000), vec![announce(1)]);
        assert_eq!(t.keys().collect::<Vec<_>>(), vec![&announce(7)]);
        assert_eq!(due(&mut t, 1_000_000), vec![announce(7)]);
    }

    #[test]
    fn numbers_are_said_in_prompts() {
        let say = |n| {
            number_prompts(n)
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(say(0), "number-0");
        assert_eq!(say(7), "number-7");
        assert_eq!(say(20), "number-20");
        assert_eq!(say(21), "number-20 number-1");
        assert_eq!(say(90), "number-90");
        assert_eq!(say(100), "number-1 hundred");
        assert_eq!(say(345), "number-3 hundred number-40 number-5");
        assert_eq!(say(5000), "number-9 hundred number-90 number-9");
    }

    #[test]
    fn every_prompt_the_engine_plays_is_listed_and_shipped() {
        let dir = std::path::Path::new(crate::config::DEFAULT_PROMPTS_DIR);
        for n in 0..=999 {
            for p in number_prompts(n) {
                assert!(POSITION_PROMPTS.contains(&p.as_str()), "{p} not listed");
            }
        }
        let all = POSITION_PROMPTS
            .iter()
            .chain(WAIT_PROMPTS)
            .chain(CALLBACK_PROMPTS)
            .chain([&CLOSED_PROMPT, &REMOVED_PROMPT]);
        for p in all {
            let wav = dir.join(format!("{p}.wav"));
            assert!(
                call_engine_media::audio::load_wav(&wav).is_ok(),
                "{p} is not shipped"
            );
        }
    }

    #[test]
    fn only_real_numbers_are_called_back() {
        assert!(dialable("+441632960961"));
        assert!(dialable("5551234"));
        assert!(!dialable(""));
        assert!(!dialable("+"));
        assert!(!dialable("anonymous"));
        assert!(!dialable("alice"));
        assert!(!dialable("555 1234"));
        assert!(!dialable(&"1".repeat(40)));
    }

    #[test]
    fn statuses_as_typed_on_the_command_line() {
        assert_eq!(parse_status("available"), Ok(AgentStatus::Available));
        assert_eq!(
            parse_status("on-demand"),
            Ok(AgentStatus::AvailableOnDemand)
        );
        assert_eq!(parse_status("logged-out"), Ok(AgentStatus::LoggedOut));
        assert_eq!(
            parse_status("break:lunch"),
            Ok(AgentStatus::OnBreak {
                reason: "lunch".into()
            })
        );
        assert!(parse_status("break:").is_err());
        assert!(parse_status("asleep")
            .unwrap_err()
            .contains("`asleep` is not a status"));
    }
}
