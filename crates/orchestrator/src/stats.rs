//! Live queue and agent statistics, and the estimated wait time (EWT).
//!
//! A [`StatsBook`] is fed by the engine with observations (a call joined a queue, was
//! answered, abandoned, left otherwise, ended; an agent finished wrap-up) and queried
//! for snapshots ([`QueueStats`], [`AgentStatsSnapshot`]). Like the rest of the crate it
//! is pure: every method takes the current time `now` ([`Millis`]) as an argument and
//! nothing reads a clock.
//!
//! Per queue, two periods are kept:
//!
//! - a **sliding window** (default 15 minutes, [`StatsConfig::window_ms`]) made of a ring
//!   of fixed-size buckets (default 10 s, [`StatsConfig::bucket_ms`]): memory is bounded
//!   by the number of buckets, whatever the call volume. An observation is counted in
//!   the bucket of its `now`; the window at `now` is the last `n` buckets including the
//!   current, partly elapsed one, so it covers between `(n - 1) × bucket_ms` and
//!   `n × bucket_ms` of history;
//! - **totals** since the queue's first observation.
//!
//! The calls currently waiting are tracked by [`CallId`] (from [`StatsBook::call_joined`]
//! until the call is answered, abandoned or leaves) to give the number waiting and the
//! longest current wait.
//!
//! # Definitions
//!
//! "Within the threshold" means `wait_ms <= threshold` (inclusive); the threshold is per
//! queue ([`StatsBook::set_service_level_threshold`], default 20 s) and is applied when
//! the observation is recorded (changing it does not rewrite history).
//!
//! - **offered**: calls that joined the queue in the period.
//! - **abandon rate**: `abandoned / (answered + abandoned + left)`, the share of calls
//!   that stopped waiting in the period by hanging up.
//! - **service level** ([`PeriodStats::service_level`]): `answered within threshold /
//!   answered` (abandons ignored).
//! - **service level with abandons** ([`PeriodStats::service_level_with_abandons`]):
//!   `answered within threshold / (answered + abandoned)` (every abandon counts against).
//! - **service level excluding short abandons**
//!   ([`PeriodStats::service_level_excluding_short_abandons`]): `answered within threshold
//!   / (answered + abandoned after the threshold)` (callers who gave up before the
//!   threshold are not held against the queue).
//! - **ASA**: average wait of answered calls. **Average / max wait**: over every call
//!   that stopped waiting (answered, abandoned, left).
//! - **AHT**: average talk time + average wrap-up time (wrap-up counting as 0 when no
//!   wrap-up was observed, e.g. a queue without wrap-up).
//! - **arrival rate**: offered / the period's elapsed time in seconds.
//!
//! Every ratio or average is `None` when its denominator is 0; none is ever NaN or
//! infinite.
//!
//! # Estimated wait time
//!
//! [`erlang_c`] and [`erlang_c_expected_wait`] implement the Erlang C model;
//! [`estimate_wait_s`] blends it with the observed waits (formula there) and
//! [`StatsBook::ewt`] feeds it from the book.

use crate::Millis;
use call_engine_events::{AgentId, CallId, QueueId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default sliding window: 15 minutes.
pub const DEFAULT_WINDOW_MS: Millis = 15 * 60 * 1000;
/// Default bucket size of the sliding window: 10 seconds.
pub const DEFAULT_BUCKET_MS: Millis = 10 * 1000;
/// Default service-level threshold: 20 seconds.
pub const DEFAULT_SERVICE_LEVEL_MS: Millis = 20 * 1000;
/// Most buckets a window may have (a larger window uses larger buckets' worth of
/// memory: it is capped here, see [`StatsConfig`]).
pub const MAX_BUCKETS: usize = 8192;
/// Most waiting calls tracked per queue; joins beyond it are counted as offered but not
/// tracked as waiting (protects memory if the engine never reports the exit of calls).
pub const MAX_TRACKED_WAITING: usize = 100_000;

/// How the [`StatsBook`] keeps its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsConfig {
    /// Length of the sliding window.
    pub window_ms: Millis,
    /// Size of one bucket (at least 1 ms). The window has `ceil(window_ms / bucket_ms)`
    /// buckets, at least 1 and at most [`MAX_BUCKETS`] (the window is shortened when the
    /// cap is hit).
    pub bucket_ms: Millis,
    /// Service-level threshold of queues that have none of their own.
    pub default_service_level_ms: Millis,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_WINDOW_MS,
            bucket_ms: DEFAULT_BUCKET_MS,
            default_service_level_ms: DEFAULT_SERVICE_LEVEL_MS,
        }
    }
}

/// Why a call left a queue: the events crate's type (one vocabulary for the queue
/// events and the statistics). `Answered` and `Abandoned` have their own observations;
/// given to [`StatsBook::call_left`], they count as [`LeftCounts::other`].
pub use call_engine_events::LeaveReason;

/// Calls that left a queue other than by answer or abandon, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftCounts {
    /// [`LeaveReason::Overflow`].
    pub overflow: u64,
    /// [`LeaveReason::Rejected`].
    pub rejected: u64,
    /// [`LeaveReason::Callback`].
    pub callback: u64,
    /// Any other reason.
    pub other: u64,
}

impl LeftCounts {
    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.overflow
            .saturating_add(self.rejected)
            .saturating_add(self.callback)
            .saturating_add(self.other)
    }

    fn add(&mut self, o: &LeftCounts) {
        self.overflow = self.overflow.saturating_add(o.overflow);
        self.rejected = self.rejected.saturating_add(o.rejected);
        self.callback = self.callback.saturating_add(o.callback);
        self.other = self.other.saturating_add(o.other);
    }

    fn bump(&mut self, reason: LeaveReason) {
        let c = match reason {
            LeaveReason::Overflow => &mut self.overflow,
            LeaveReason::Rejected => &mut self.rejected,
            LeaveReason::Callback => &mut self.callback,
            LeaveReason::Answered | LeaveReason::Abandoned => &mut self.other,
        };
        *c = c.saturating_add(1);
    }
}

/// Agents of a queue by state. The [`StatsBook`] does not track agent states (the
/// orchestrator does): [`QueueStats::agents`] is all zeros and the engine fills it in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsByState {
    /// Not logged in.
    pub logged_out: u32,
    /// Logged in, idle and able to take a call.
    pub available: u32,
    /// Logged in, on a break (paused).
    pub on_break: u32,
    /// Reserved for a call, not yet ringing.
    pub reserved: u32,
    /// Phone ringing.
    pub ringing: u32,
    /// Talking.
    pub on_call: u32,
    /// In after-call work.
    pub wrap_up: u32,
    /// In a reject, busy or no-answer delay before the next offer.
    #[serde(default)]
    pub delayed: u32,
}

impl AgentsByState {
    /// Agents logged in (every state but logged out).
    pub fn logged_in(&self) -> u32 {
        self.available
            .saturating_add(self.on_break)
            .saturating_add(self.reserved)
            .saturating_add(self.ringing)
            .saturating_add(self.on_call)
            .saturating_add(self.wrap_up)
            .saturating_add(self.delayed)
    }
}

/// Raw counters of one bucket or of the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    offered: u64,
    refused: u64,
    answered: u64,
    answered_within: u64,
    abandoned: u64,
    abandoned_within: u64,
    left: LeftCounts,
    answer_wait_sum: u64,
    exit_wait_sum: u64,
    max_wait: Option<Millis>,
    talk_count: u64,
    talk_sum: u64,
    wrap_count: u64,
    wrap_sum: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.offered = self.offered.saturating_add(o.offered);
        self.refused = self.refused.saturating_add(o.refused);
        self.answered = self.answered.saturating_add(o.answered);
        self.answered_within = self.answered_within.saturating_add(o.answered_within);
        self.abandoned = self.abandoned.saturating_add(o.abandoned);
        self.abandoned_within = self.abandoned_within.saturating_add(o.abandoned_within);
        self.left.add(&o.left);
        self.answer_wait_sum = self.answer_wait_sum.saturating_add(o.answer_wait_sum);
        self.exit_wait_sum = self.exit_wait_sum.saturating_add(o.exit_wait_sum);
        self.max_wait = match (self.max_wait, o.max_wait) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.talk_count = self.talk_count.saturating_add(o.talk_count);
        self.talk_sum = self.talk_sum.saturating_add(o.talk_sum);
        self.wrap_count = self.wrap_count.saturating_add(o.wrap_count);
        self.wrap_sum = self.wrap_sum.saturating_add(o.wrap_sum);
    }

    fn exit(&mut self, wait_ms: Millis) {
        self.exit_wait_sum = self.exit_wait_sum.saturating_add(wait_ms);
        self.max_wait = Some(self.max_wait.map_or(wait_ms, |m| m.max(wait_ms)));
    }

    fn exits(&self) -> u64 {
        self.answered
            .saturating_add(self.abandoned)
            .saturating_add(self.left.total())
    }

    fn period(&self, span_ms: Millis) -> PeriodStats {
        let avg_talk_ms = ratio(self.talk_sum, self.talk_count);
        let avg_wrap_ms = ratio(self.wrap_sum, self.wrap_count);
        PeriodStats {
            span_ms,
            offered: self.offered,
            refused: self.refused,
            answered: self.answered,
            answered_within_threshold: self.answered_within,
            abandoned: self.abandoned,
            abandoned_within_threshold: self.abandoned_within,
            left: self.left,
            abandon_rate: ratio(self.abandoned, self.exits()),
            service_level: ratio(self.answered_within, self.answered),
            service_level_with_abandons: ratio(
                self.answered_within,
                self.answered.saturating_add(self.abandoned),
            ),
            service_level_excluding_short_abandons: ratio(
                self.answered_within,
                self.answered
                    .saturating_add(self.abandoned.saturating_sub(self.abandoned_within)),
            ),
            asa_ms: ratio(self.answer_wait_sum, self.answered),
            avg_wait_ms: ratio(self.exit_wait_sum, self.exits()),
            max_wait_ms: self.max_wait,
            avg_talk_ms,
            avg_wrap_ms,
            aht_ms: avg_talk_ms.map(|t| t + avg_wrap_ms.unwrap_or(0.0)),
            arrival_rate_per_s: if span_ms == 0 {
                None
            } else {
                Some(self.offered as f64 * 1000.0 / span_ms as f64)
            },
        }
    }
}

/// `num / den`, `None` when `den` is 0.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den != 0).then(|| num as f64 / den as f64)
}

/// Statistics of one queue over one period (the window or since the start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodStats {
    /// Time covered, in ms: for the window, from the start of its oldest bucket (or the
    /// queue's first observation, if later) to `now`; for totals, from the queue's first
    /// observation to `now`.
    pub span_ms: Millis,
    /// Calls that joined the queue.
    pub offered: u64,
    /// Calls refused before joining (the queue full or closed, no agent to take calls,
    /// a blocked caller): not in `offered`, nor in any rate.
    pub refused: u64,
    /// Calls answered (handled).
    pub answered: u64,
    /// Calls answered within the service-level threshold.
    pub answered_within_threshold: u64,
    /// Calls abandoned (the caller hung up while waiting).
    pub abandoned: u64,
    /// Calls abandoned within the service-level threshold ("short abandons").
    pub abandoned_within_threshold: u64,
    /// Calls that left otherwise, by reason.
    pub left: LeftCounts,
    /// `abandoned / (answered + abandoned + left)`.
    pub abandon_rate: Option<f64>,
    /// Variant (a): `answered within threshold / answered`.
    pub service_level: Option<f64>,
    /// Variant (b): `answered within threshold / (answered + abandoned)`.
    pub service_level_with_abandons: Option<f64>,
    /// Variant (c): `answered within threshold / (answered + abandoned after the
    /// threshold)`.
    pub service_level_excluding_short_abandons: Option<f64>,
    /// Average speed of answer: the average wait of answered calls, in ms.
    pub asa_ms: Option<f64>,
    /// Average wait of every call that stopped waiting (answered, abandoned, left), ms.
    pub avg_wait_ms: Option<f64>,
    /// Longest wait of a call that stopped waiting, in ms.
    pub max_wait_ms: Option<Millis>,
    /// Average talk time of ended calls, in ms.
    pub avg_talk_ms: Option<f64>,
    /// Average wrap-up time, in ms.
    pub avg_wrap_ms: Option<f64>,
    /// Average handle time: `avg_talk_ms + avg_wrap_ms` (wrap-up 0 if none observed).
    pub aht_ms: Option<f64>,
    /// Calls offered per second over `span_ms`.
    pub arrival_rate_per_s: Option<f64>,
}

/// A snapshot of one queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueId,
    /// When the snapshot was taken.
    pub at: Millis,
    /// The service-level threshold in force, in ms.
    pub service_level_threshold_ms: Millis,
    /// Calls waiting now.
    pub waiting: u64,
    /// How long the longest-waiting call has waited so far (`None`: nobody waiting).
    pub longest_wait_ms: Option<Millis>,
    /// The sliding window.
    pub window: PeriodStats,
    /// Since the queue's first observation.
    pub total: PeriodStats,
    /// Agents by state: zeros here, filled in by the engine.
    pub agents: AgentsByState,
}

/// A snapshot of one agent's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatsSnapshot {
    /// The agent.
    pub agent: AgentId,
    /// Calls answered by the agent.
    pub handled: u64,
    /// Calls ended (talk time recorded).
    pub ended: u64,
    /// Total talk time, ms.
    pub talk_ms_total: Millis,
    /// Total wrap-up time, ms.
    pub wrap_ms_total: Millis,
    /// When the agent's last call ended (`None`: never).
    pub last_call_end: Option<Millis>,
    /// Average handle time: `(talk total + wrap-up total) / ended`, ms.
    pub aht_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: Option<u64>,
    c: Counters,
}

#[derive(Debug, Clone)]
struct QueueBook {
    threshold_ms: Option<Millis>,
    first_seen: Millis,
    waiting: BTreeMap<CallId, Millis>,
    buckets: Vec<Bucket>,
    total: Counters,
}

#[derive(Debug, Clone, Default)]
struct AgentBook {
    handled: u64,
    ended: u64,
    talk_ms: Millis,
    wrap_ms: Millis,
    last_call_end: Option<Millis>,
    last_queue: Option<QueueId>,
}

/// Live statistics of queues and agents, fed with observations; see the [module
/// documentation](self) for the definitions.
#[derive(Debug, Clone)]
pub struct StatsBook {
    bucket_ms: Millis,
    n_buckets: usize,
    default_threshold_ms: Millis,
    queues: BTreeMap<QueueId, QueueBook>,
    agents: BTreeMap<AgentId, AgentBook>,
}

impl Default for StatsBook {
    fn default() -> Self {
        Self::new(StatsConfig::default())
    }
}

impl StatsBook {
    /// An empty book.
    pub fn new(config: StatsConfig) -> Self {
        let bucket_ms = config.bucket_ms.max(1);
        let n = config
            .window_ms
            .div_ceil(bucket_ms)
            .clamp(1, MAX_BUCKETS as u64);
        Self {
            bucket_ms,
            n_buckets: usize::try_from(n).unwrap_or(MAX_BUCKETS),
            default_threshold_ms: config.default_service_level_ms,
            queues: BTreeMap::new(),
            agents: BTreeMap::new(),
        }
    }

    /// The effective window length (`buckets × bucket_ms`), in ms.
    pub fn window_ms(&self) -> Millis {
        self.bucket_ms.saturating_mul(self.n_buckets as u64)
    }

    /// Sets the service-level threshold of one queue (applies to later observations).
    pub fn set_service_level_threshold(&mut self, queue: &QueueId, threshold_ms: Millis) {
        self.queue_mut(queue, None).threshold_ms = Some(threshold_ms);
    }

    /// The service-level threshold of a queue.
    pub fn service_level_threshold(&self, queue: &QueueId) -> Millis {
        self.queues
            .get(queue)
            .and_then(|q| q.threshold_ms)
            .unwrap_or(self.default_threshold_ms)
    }

    /// The queues observed so far.
    pub fn queues(&self) -> impl Iterator<Item = &QueueId> {
        self.queues.keys()
    }

    /// The agents observed so far.
    pub fn agents(&self) -> impl Iterator<Item = &AgentId> {
        self.agents.keys()
    }

    fn queue_mut(&mut self, queue: &QueueId, now: Option<Millis>) -> &mut QueueBook {
        let n = self.n_buckets;
        let q = self
            .queues
            .entry(queue.clone())
            .or_insert_with(|| QueueBook {
                threshold_ms: None,
                first_seen: now.unwrap_or(Millis::MAX),
                waiting: BTreeMap::new(),
                buckets: vec![Bucket::default(); n],
                total: Counters::default(),
            });
        if let Some(now) = now {
            q.first_seen = q.first_seen.min(now);
        }
        q
    }

    /// Applies `f` to the totals and to the window bucket of `now` of a queue.
    fn record(&mut self, queue: &QueueId, now: Millis, f: impl Fn(&mut Counters, Millis)) {
        let default = self.default_threshold_ms;
        let bucket_ms = self.bucket_ms;
        let q = self.queue_mut(queue, Some(now));
        let threshold = q.threshold_ms.unwrap_or(default);
        f(&mut q.total, threshold);
        let slot = now / bucket_ms;
        let len = q.buckets.len().max(1) as u64;
        let idx = usize::try_from(slot % len).unwrap_or(0);
        if let Some(b) = q.buckets.get_mut(idx) {
            match b.slot {
                Some(s) if s == slot => f(&mut b.c, threshold),
                Some(s) if s > slot => {} // older than the window: totals only
                _ => {
                    *b = Bucket {
                        slot: Some(slot),
                        c: Counters::default(),
                    };
                    f(&mut b.c, threshold);
                }
            }
        }
    }

    fn agent_mut(&mut self, agent: &AgentId) -> &mut AgentBook {
        self.agents.entry(agent.clone()).or_default()
    }

    /// A call joined `queue` (counted as offered, tracked as waiting since `now`).
    pub fn call_joined(&mut self, call: CallId, queue: &QueueId, now: Millis) {
        self.record(queue, now, |c, _| c.offered = c.offered.saturating_add(1));
        let q = self.queue_mut(queue, Some(now));
        if q.waiting.len() < MAX_TRACKED_WAITING || q.waiting.contains_key(&call) {
            q.waiting.insert(call, now);
        }
    }

    fn stop_waiting(&mut self, call: CallId, queue: &QueueId) {
        if let Some(q) = self.queues.get_mut(queue) {
            q.waiting.remove(&call);
        }
    }

    /// `call` was answered by `agent` after waiting `wait_ms` in `queue`.
    pub fn call_answered(
        &mut self,
        call: CallId,
        queue: &QueueId,
        agent: &AgentId,
        wait_ms: Millis,
        now: Millis,
    ) {
        self.stop_waiting(call, queue);
        self.record(queue, now, |c, threshold| {
            c.answered = c.answered.saturating_add(1);
            if wait_ms <= threshold {
                c.answered_within = c.answered_within.saturating_add(1);
            }
            c.answer_wait_sum = c.answer_wait_sum.saturating_add(wait_ms);
            c.exit(wait_ms);
        });
        let a = self.agent_mut(agent);
        a.handled = a.handled.saturating_add(1);
        a.last_queue = Some(queue.clone());
    }

    /// The caller of `call` hung up after waiting `wait_ms` in `queue`.
    pub fn call_abandoned(&mut self, call: CallId, queue: &QueueId, wait_ms: Millis, now: Millis) {
        self.stop_waiting(call, queue);
        self.record(queue, now, |c, threshold| {
            c.abandoned = c.abandoned.saturating_add(1);
            if wait_ms <= threshold {
                c.abandoned_within = c.abandoned_within.saturating_add(1);
            }
            c.exit(wait_ms);
        });
    }

    /// A call was refused before joining `queue` (full, closed, no agents, blocked).
    pub fn call_refused(&mut self, queue: &QueueId, now: Millis) {
        self.record(queue, now, |c, _| c.refused = c.refused.saturating_add(1));
    }

    /// `call` left `queue` after waiting `wait_ms`, neither answered nor abandoned.
    pub fn call_left(
        &mut self,
        call: CallId,
        queue: &QueueId,
        reason: LeaveReason,
        wait_ms: Millis,
        now: Millis,
    ) {
        self.stop_waiting(call, queue);
        self.record(queue, now, |c, _| {
            c.left.bump(reason);
            c.exit(wait_ms);
        });
    }

    /// A call of `queue` handled by `agent` ended after `talk_ms` of talk.
    pub fn call_ended(&mut self, queue: &QueueId, agent: &AgentId, talk_ms: Millis, now: Millis) {
        self.record(queue, now, |c, _| {
            c.talk_count = c.talk_count.saturating_add(1);
            c.talk_sum = c.talk_sum.saturating_add(talk_ms);
        });
        let a = self.agent_mut(agent);
        a.ended = a.ended.saturating_add(1);
        a.talk_ms = a.talk_ms.saturating_add(talk_ms);
        a.last_call_end = Some(a.last_call_end.map_or(now, |t| t.max(now)));
        a.last_queue = Some(queue.clone());
    }

    /// `agent` finished `wrap_ms` of wrap-up. It is counted in the agent's totals and in
    /// the queue of the agent's last call (none if the agent never had one).
    pub fn wrap_up_done(&mut self, agent: &AgentId, wrap_ms: Millis, now: Millis) {
        let a = self.agent_mut(agent);
        a.wrap_ms = a.wrap_ms.saturating_add(wrap_ms);
        if let Some(queue) = a.last_queue.clone() {
            self.record(&queue, now, |c, _| {
                c.wrap_count = c.wrap_count.saturating_add(1);
                c.wrap_sum = c.wrap_sum.saturating_add(wrap_ms);
            });
        }
    }

    /// The window counters of a queue at `now`, and the window's span.
    fn window(&self, q: &QueueBook, now: Millis) -> (Counters, Millis) {
        let now_slot = now / self.bucket_ms;
        let n = q.buckets.len() as u64;
        let mut c = Counters::default();
        for b in &q.buckets {
            if let Some(s) = b.slot {
                if s <= now_slot && s.saturating_add(n) > now_slot {
                    c.add(&b.c);
                }
            }
        }
        let start = (now_slot.saturating_add(1).saturating_sub(n))
            .saturating_mul(self.bucket_ms)
            .max(q.first_seen);
        (c, now.saturating_sub(start))
    }

    /// A snapshot of `queue` at `now` (all zeros for a queue never observed).
    pub fn queue_stats(&self, queue: &QueueId, now: Millis) -> QueueStats {
        let threshold = self.service_level_threshold(queue);
        match self.queues.get(queue) {
            None => {
                let empty = Counters::default().period(0);
                QueueStats {
                    queue: queue.clone(),
                    at: now,
                    service_level_threshold_ms: threshold,
                    waiting: 0,
                    longest_wait_ms: None,
                    window: empty.clone(),
                    total: empty,
                    agents: AgentsByState::default(),
                }
            }
            Some(q) => {
                let (w, span) = self.window(q, now);
                QueueStats {
                    queue: queue.clone(),
                    at: now,
                    service_level_threshold_ms: threshold,
                    waiting: q.waiting.len() as u64,
                    longest_wait_ms: q
                        .waiting
                        .values()
                        .min()
                        .map(|&joined| now.saturating_sub(joined)),
                    window: w.period(span),
                    total: q.total.period(now.saturating_sub(q.first_seen)),
                    agents: AgentsByState::default(),
                }
            }
        }
    }

    /// A snapshot of one agent (all zeros for an agent never observed).
    pub fn agent_stats(&self, agent: &AgentId) -> AgentStatsSnapshot {
        let a = self.agents.get(agent).cloned().unwrap_or_default();
        AgentStatsSnapshot {
            agent: agent.clone(),
            handled: a.handled,
            ended: a.ended,
            talk_ms_total: a.talk_ms,
            wrap_ms_total: a.wrap_ms,
            last_call_end: a.last_call_end,
            aht_ms: ratio(a.talk_ms.saturating_add(a.wrap_ms), a.ended),
        }
    }

    /// Snapshots of every agent observed, by agent id.
    pub fn all_agent_stats(&self) -> Vec<AgentStatsSnapshot> {
        self.agents.keys().map(|a| self.agent_stats(a)).collect()
    }

    /// The inputs of [`estimate_wait_s`] for a caller at `position` (1 = head) of
    /// `queue` with `agents_logged_in` agents, from the window at `now`: the window's
    /// arrival rate; its AHT, or the totals' AHT when no call ended in the window; its
    /// ASA and number of answered calls as the observed waits.
    pub fn ewt_inputs(
        &self,
        queue: &QueueId,
        position: u32,
        agents_logged_in: u32,
        now: Millis,
    ) -> EwtInputs {
        let mut inputs = EwtInputs {
            position,
            agents: agents_logged_in,
            arrival_rate_per_s: None,
            aht_s: None,
            observed_wait_s: None,
            observed_samples: 0,
        };
        if let Some(q) = self.queues.get(queue) {
            let (w, span) = self.window(q, now);
            let w = w.period(span);
            let total = q.total.period(now.saturating_sub(q.first_seen));
            inputs.arrival_rate_per_s = w.arrival_rate_per_s;
            inputs.aht_s = w.aht_ms.or(total.aht_ms).map(|ms| ms / 1000.0);
            inputs.observed_wait_s = w.asa_ms.map(|ms| ms / 1000.0);
            inputs.observed_samples = w.answered;
        }
        inputs
    }

    /// The estimated wait time of a caller at `position` (1 = head; 0 is treated as 1)
    /// of `queue` when `agents_logged_in` agents serve it, in ms: [`estimate_wait_s`] of
    /// [`StatsBook::ewt_inputs`]. `None` when unknown (no agents, no history at all).
    pub fn ewt(
        &self,
        queue: &QueueId,
        position: u32,
        agents_logged_in: u32,
        now: Millis,
    ) -> Option<Millis> {
        let s = estimate_wait_s(&self.ewt_inputs(queue, position, agents_logged_in, now))?;
        let ms = (s * 1000.0).round();
        // `estimate_wait_s` is finite and non-negative; saturate huge values.
        Some(if ms >= u64::MAX as f64 {
            u64::MAX
        } else {
            ms as u64
        })
    }
}

/// Most agents [`erlang_c`] computes for (the iteration is linear in the number of
/// agents); beyond it, `None`.
pub const ERLANG_MAX_AGENTS: u32 = 1_000_000;

/// Erlang C: the probability that a caller has to wait, with `traffic_erlangs` of
/// offered traffic (arrival rate × average handle time) and `agents` agents.
///
/// Computed from the Erlang B recursion `B(0) = 1`, `B(k) = A·B(k-1) / (k + A·B(k-1))`
/// (numerically stable: no factorials or powers), then `C = N·B / (N − A·(1 − B))`.
///
/// `None` when undefined or unstable: `agents == 0`, `agents <= traffic`, a negative or
/// non-finite traffic, or more than [`ERLANG_MAX_AGENTS`] agents. With no traffic the
/// probability is 0.
pub fn erlang_c(traffic_erlangs: f64, agents: u32) -> Option<f64> {
    let a = traffic_erlangs;
    if agents == 0 || agents > ERLANG_MAX_AGENTS || !a.is_finite() || a < 0.0 {
        return None;
    }
    let n = f64::from(agents);
    if n <= a {
        return None;
    }
    if a == 0.0 {
        return Some(0.0);
    }
    let mut b = 1.0_f64;
    for k in 1..=agents {
        b = a * b / (f64::from(k) + a * b);
        if b == 0.0 {
            break; // underflow: stays 0
        }
    }
    let c = n * b / (n - a * (1.0 - b));
    c.is_finite().then(|| c.clamp(0.0, 1.0))
}

/// The average wait of all callers (waiting or not) under Erlang C, in seconds:
/// `Pc · AHT / (N − A)` with `A = arrival_rate_per_s × aht_s`. `None` when [`erlang_c`]
/// is, or when a rate or the AHT is negative, non-finite, or the AHT is 0.
pub fn erlang_c_expected_wait(arrival_rate_per_s: f64, aht_s: f64, agents: u32) -> Option<f64> {
    if !arrival_rate_per_s.is_finite()
        || arrival_rate_per_s < 0.0
        || !aht_s.is_finite()
        || aht_s <= 0.0
    {
        return None;
    }
    let a = arrival_rate_per_s * aht_s;
    let pc = erlang_c(a, agents)?;
    let w = pc * aht_s / (f64::from(agents) - a);
    (w.is_finite() && w >= 0.0).then_some(w)
}

/// Weight constant of the blend in [`estimate_wait_s`]: with `K` observed samples the
/// observation and the model weigh the same.
pub const EWT_BLEND_K: f64 = 10.0;
/// Largest weight the observed waits get in [`estimate_wait_s`] (the model always
/// keeps some say, because it is the only part that depends on the position).
pub const EWT_MAX_OBSERVED_WEIGHT: f64 = 0.8;

/// What [`estimate_wait_s`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EwtInputs {
    /// The caller's position, 1 = head (0 is treated as 1).
    pub position: u32,
    /// Agents logged in to the queue (`N`).
    pub agents: u32,
    /// Recent arrival rate (`λ`), calls per second.
    pub arrival_rate_per_s: Option<f64>,
    /// Recent average handle time (`AHT`), seconds.
    pub aht_s: Option<f64>,
    /// Recent average wait of answered calls (ASA), seconds.
    pub observed_wait_s: Option<f64>,
    /// How many answered calls `observed_wait_s` averages.
    pub observed_samples: u64,
}

fn usable(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= 0.0)
}

/// The estimated wait, in seconds, of a caller at position `p` with `N` agents.
///
/// 1. **Model** (needs an AHT `h > 0`): the position estimate is `p · h / N` (the caller
///    needs `p` agents to free up; `N` agents free up at rate `N / h`). When the arrival
///    rate `λ` is known and the system is stable (`N > λ·h`), the model is
///    `max(W_erlang, p · h / N)` where `W_erlang` is [`erlang_c_expected_wait`] (the
///    wait of a caller arriving now, which accounts for the load); the position
///    estimate is a floor. Unstable or `λ` unknown: the position estimate alone.
/// 2. **Blend** with the observed average wait `O` of `n` recently answered calls:
///    `w = min(n / (n + K), W_MAX)` ([`EWT_BLEND_K`], [`EWT_MAX_OBSERVED_WEIGHT`]), the
///    estimate is `(1 − w) · model + w · O`.
/// 3. **Fallbacks**: no agents → `None` (unknown); no observed waits → the model; no
///    AHT → `O` alone; neither → `None`.
///
/// Inputs that are negative or not finite count as unknown. The result is always
/// finite and non-negative.
pub fn estimate_wait_s(inputs: &EwtInputs) -> Option<f64> {
    if inputs.agents == 0 {
        return None;
    }
    let p = f64::from(inputs.position.max(1));
    let n = f64::from(inputs.agents);
    let model = usable(inputs.aht_s)
        .filter(|h| *h > 0.0)
        .map(|h| {
            let by_position = p * h / n;
            usable(inputs.arrival_rate_per_s)
                .and_then(|l| erlang_c_expected_wait(l, h, inputs.agents))
                .map_or(by_position, |w| w.max(by_position))
        })
        .filter(|m| m.is_finite());
    let observed = usable(inputs.observed_wait_s).filter(|_| inputs.observed_samples > 0);
    let est = match (model, observed) {
        (None, None) => return None,
        (Some(m), None) => m,
        (None, Some(o)) => o,
        (Some(m), Some(o)) => {
            let s = inputs.observed_samples as f64;
            let w = (s / (s + EWT_BLEND_K)).min(EWT_MAX_OBSERVED_WEIGHT);
            (1.0 - w) * m + w * o
        }
    };
    (est.is_finite() && est >= 0.0).then_some(est)
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
