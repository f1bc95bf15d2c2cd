//! # call-engine-orchestrator
//!
//! Call-center policy, pure: which agent gets which waiting call. It reacts to inputs
//! (agents coming online, calls entering queues, offers answered or failed, calls ending,
//! timers) and returns outputs (ring this agent, cancel that ring, start/cancel a timer).
//! It never does IO, reads no clock (time is an input) and uses no randomness, so the
//! same inputs in the same order always give the same decisions.
//!
//! Strategies: [`Strategy::LongestIdleAgent`], [`Strategy::RoundRobin`] (remembering the
//! last agent offered) and [`Strategy::RingAll`]. An agent takes at most `max_calls` calls
//! at once (ringing counts). A caller whose offer fails keeps their place at the head of
//! the queue; agents who already failed that call are skipped until every member has been
//! tried.
//!
//! ```
//! use call_engine_orchestrator::*;
//! use call_engine_events::{AgentId, CallId, QueueId};
//!
//! let support = QueueId::new("support");
//! let mut o = Orchestrator::new(
//!     vec![QueueConfig::new(support.clone(), Strategy::LongestIdleAgent)],
//!     vec![AgentConfig::new(AgentId::new("alice"), vec![support.clone()])],
//! );
//! o.handle(Input::AgentOnline { agent: AgentId::new("alice"), contact: "sip:alice@127.0.0.1:5070".into() }, 0);
//! let out = o.handle(Input::CallQueued { call: CallId(1), queue: support }, 10);
//! assert!(matches!(&out[0], Output::Ring { agent, .. } if agent.as_str() == "alice"));
//! ```

use call_engine_events::{AgentId, CallId, QueueId};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;

/// Milliseconds since an arbitrary origin chosen by the caller.
pub type Millis = u64;

/// How a queue picks agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The available agent who has been idle longest.
    LongestIdleAgent,
    /// The next available agent after the one offered last, in member order.
    RoundRobin,
    /// Every available agent at once; the first to answer takes the call.
    RingAll,
}

impl Strategy {
    /// The configuration name (`longest-idle-agent`, `round-robin`, `ring-all`).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::LongestIdleAgent => "longest-idle-agent",
            Strategy::RoundRobin => "round-robin",
            Strategy::RingAll => "ring-all",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}` (expected longest-idle-agent, round-robin or ring-all)")]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "longest-idle-agent" => Ok(Strategy::LongestIdleAgent),
            "round-robin" => Ok(Strategy::RoundRobin),
            "ring-all" => Ok(Strategy::RingAll),
            other => Err(UnknownStrategy(other.to_string())),
        }
    }
}

/// A queue's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Name.
    pub name: QueueId,
    /// Strategy.
    pub strategy: Strategy,
    /// How long an agent may ring before the offer counts as not answered.
    pub ring_timeout_ms: Millis,
    /// When every available member has failed a call (no answer, busy, declined), wait
    /// this long before offering it to them again, rather than ringing a busy phone in a
    /// loop.
    pub retry_delay_ms: Millis,
}

impl QueueConfig {
    /// A queue with the default ring timeout (15 s).
    pub fn new(name: QueueId, strategy: Strategy) -> Self {
        Self {
            name,
            strategy,
            ring_timeout_ms: 15_000,
            retry_delay_ms: 2_000,
        }
    }
}

/// An agent's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Id.
    pub id: AgentId,
    /// Queues the agent serves, in the order given.
    pub queues: Vec<QueueId>,
    /// Calls at once (ringing included). Default 1.
    pub max_calls: u16,
}

impl AgentConfig {
    /// An agent taking one call at a time.
    pub fn new(id: AgentId, queues: Vec<QueueId>) -> Self {
        Self {
            id,
            queues,
            max_calls: 1,
        }
    }
}

/// Why an offer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferFailure {
    /// Rang out (ring timeout) or the phone gave up.
    NoAnswer,
    /// 486.
    Busy,
    /// 603.
    Declined,
    /// Transport or protocol failure.
    Failed,
}

/// Timers the orchestrator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// An agent has rung too long for a call.
    RingTimeout {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// Every available member failed a call: offer it again.
    Retry {
        /// The call.
        call: CallId,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// The agent has a reachable contact (registered). The most recent contact is rung.
    AgentOnline {
        /// The agent.
        agent: AgentId,
        /// Where to ring.
        contact: SmolStr,
    },
    /// The agent has no contact any more (unregistered or expired).
    AgentOffline {
        /// The agent.
        agent: AgentId,
    },
    /// The agent (un)paused: paused agents are not offered calls.
    AgentPaused {
        /// The agent.
        agent: AgentId,
        /// Paused or not.
        paused: bool,
    },
    /// A call entered a queue (answered, hearing music).
    CallQueued {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
    },
    /// An agent answered a call rung by a [`Output::Ring`].
    OfferAnswered {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// An offer failed.
    OfferFailed {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
        /// Why.
        why: OfferFailure,
    },
    /// The customer hung up (or the call ended for another reason) — whatever state the
    /// call was in: waiting (abandoned), ringing agents, or connected.
    CallEnded {
        /// The call.
        call: CallId,
    },
    /// A timer fired.
    Timer(Timer),
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Ring an agent for a call (the agent is now reserved for it).
    Ring {
        /// The call.
        call: CallId,
        /// The queue it waits in.
        queue: QueueId,
        /// The agent.
        agent: AgentId,
        /// Where.
        contact: SmolStr,
    },
    /// Stop ringing an agent for a call (CANCEL): ring-all losers, ring timeouts,
    /// customers who hung up.
    CancelRing {
        /// The call.
        call: CallId,
        /// The agent.
        agent: AgentId,
    },
    /// The call is connected to this agent; it has left its queue.
    Assigned {
        /// The call.
        call: CallId,
        /// The queue it left.
        queue: QueueId,
        /// The agent.
        agent: AgentId,
        /// Time it waited in the queue.
        waited_ms: Millis,
    },
    /// The call left its queue unanswered (the customer hung up).
    Abandoned {
        /// The call.
        call: CallId,
        /// The queue.
        queue: QueueId,
        /// Time it waited.
        waited_ms: Millis,
    },
    /// Start a timer, firing at `at`.
    StartTimer {
        /// The timer.
        timer: Timer,
        /// When.
        at: Millis,
    },
    /// Cancel a timer.
    CancelTimer {
        /// The timer.
        timer: Timer,
    },
}

#[derive(Debug, Clone)]
struct AgentView {
    config: AgentConfig,
    contact: Option<SmolStr>,
    paused: bool,
    /// Calls ringing or connected.
    calls: BTreeSet<CallId>,
    /// When the agent last became free (or came online).
    idle_since: Millis,
}

impl AgentView {
    fn available(&self) -> bool {
        self.contact.is_some()
            && !self.paused
            && self.calls.len() < usize::from(self.config.max_calls)
    }
}

#[derive(Debug, Clone)]
struct Waiting {
    call: CallId,
    since: Millis,
    /// Agents ringing for it now.
    ringing: BTreeSet<AgentId>,
    /// Agents who failed it; skipped until every member has been tried.
    tried: BTreeSet<AgentId>,
    /// A retry timer is armed.
    retry_armed: bool,
}

#[derive(Debug, Clone)]
struct QueueState {
    config: QueueConfig,
    /// Members in configuration order.
    members: Vec<AgentId>,
    waiting: VecDeque<Waiting>,
    /// Round robin: the agent offered last.
    last_offered: Option<AgentId>,
}

/// Where a call is, from the orchestrator's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallPlace {
    Queued(QueueId),
    Connected(AgentId),
}

/// The call-center policy engine. See the crate docs.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    agents: BTreeMap<AgentId, AgentView>,
    queues: BTreeMap<QueueId, QueueState>,
    calls: BTreeMap<CallId, CallPlace>,
}

impl Orchestrator {
    /// An orchestrator for these queues and agents (agents start offline).
    pub fn new(queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> Self {
        let mut qs: BTreeMap<QueueId, QueueState> = queues
            .into_iter()
            .map(|c| {
                (
                    c.name.clone(),
                    QueueState {
                        config: c,
                        members: Vec::new(),
                        waiting: VecDeque::new(),
                        last_offered: None,
                    },
                )
            })
            .collect();
        let mut views = BTreeMap::new();
        for a in agents {
            for q in &a.queues {
                if let Some(qs) = qs.get_mut(q) {
                    if !qs.members.contains(&a.id) {
                        qs.members.push(a.id.clone());
                    }
                }
            }
            views.insert(
                a.id.clone(),
                AgentView {
                    config: a,
                    contact: None,
                    paused: false,
                    calls: BTreeSet::new(),
                    idle_since: 0,
                },
            );
        }
        Self {
            agents: views,
            queues: qs,
            calls: BTreeMap::new(),
        }
    }

    /// Whether a queue of that name exists.
    pub fn has_queue(&self, q: &QueueId) -> bool {
        self.queues.contains_key(q)
    }

    /// Callers waiting in a queue, head first.
    pub fn waiting(&self, q: &QueueId) -> Vec<CallId> {
        self.queues
            .get(q)
            .map(|s| s.waiting.iter().map(|w| w.call).collect())
            .unwrap_or_default()
    }

    /// Calls an agent is ringing for or connected to.
    pub fn agent_calls(&self, a: &AgentId) -> Vec<CallId> {
        self.agents
            .get(a)
            .map(|v| v.calls.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether the agent could be offered a call now.
    pub fn agent_available(&self, a: &AgentId) -> bool {
        self.agents.get(a).is_some_and(AgentView::available)
    }

    /// Handles one input at time `now` and returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Millis) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::AgentOnline { agent, contact } => {
                if let Some(v) = self.agents.get_mut(&agent) {
                    if v.contact.is_none() {
                        v.idle_since = now;
                    }
                    v.contact = Some(contact);
                }
            }
            Input::AgentOffline { agent } => {
                if let Some(v) = self.agents.get_mut(&agent) {
                    v.contact = None;
                }
            }
            Input::AgentPaused { agent, paused } => {
                if let Some(v) = self.agents.get_mut(&agent) {
                    v.paused = paused;
                }
            }
            Input::CallQueued { call, queue } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    if let std::collections::btree_map::Entry::Vacant(e) = self.calls.entry(call) {
                        q.waiting.push_back(Waiting {
                            call,
                            since: now,
                            ringing: BTreeSet::new(),
                            tried: BTreeSet::new(),
                            retry_armed: false,
                        });
                        e.insert(CallPlace::Queued(queue));
                    }
                }
            }
            Input::OfferAnswered { call, agent } => self.answered(call, agent, now, &mut out),
            Input::OfferFailed { call, agent, why } => {
                self.offer_failed(call, &agent, why, now, &mut out)
            }
            Input::Timer(Timer::RingTimeout { call, agent }) => {
                // Only if still ringing: a stale timer changes nothing.
                if self.is_ringing(call, &agent) {
                    out.push(Output::CancelRing {
                        call,
                        agent: agent.clone(),
                    });
                    self.offer_failed(call, &agent, OfferFailure::NoAnswer, now, &mut out);
                }
            }
            Input::Timer(Timer::Retry { call }) => {
                if let Some(CallPlace::Queued(qid)) = self.calls.get(&call) {
                    if let Some(w) = self
                        .queues
                        .get_mut(qid)
                        .and_then(|q| q.waiting.iter_mut().find(|w| w.call == call))
                    {
                        w.retry_armed = false;
                        w.tried.clear();
                    }
                }
            }
            Input::CallEnded { call } => self.call_ended(call, now, &mut out),
        }
        self.dispatch(now, &mut out);
        out
    }

    fn is_ringing(&self, call: CallId, agent: &AgentId) -> bool {
        match self.calls.get(&call) {
            Some(CallPlace::Queued(q)) => self
                .queues
                .get(q)
                .and_then(|qs| qs.waiting.iter().find(|w| w.call == call))
                .is_some_and(|w| w.ringing.contains(agent)),
            _ => false,
        }
    }

    /// Frees an agent from a call (ringing or connected).
    fn release_agent(&mut self, agent: &AgentId, call: CallId, now: Millis) {
        if let Some(v) = self.agents.get_mut(agent) {
            if v.calls.remove(&call) && v.calls.is_empty() {
                v.idle_since = now;
            }
        }
    }

    fn answered(&mut self, call: CallId, agent: AgentId, now: Millis, out: &mut Vec<Output>) {
        let Some(CallPlace::Queued(qid)) = self.calls.get(&call).cloned() else {
            return;
        };
        let Some(q) = self.queues.get_mut(&qid) else {
            return;
        };
        let Some(pos) = q.waiting.iter().position(|w| w.call == call) else {
            return;
        };
        if !q.waiting[pos].ringing.contains(&agent) {
            return;
        }
        let Some(w) = q.waiting.remove(pos) else {
            return;
        };
        let others: Vec<AgentId> = w.ringing.iter().filter(|a| **a != agent).cloned().collect();
        out.push(Output::CancelTimer {
            timer: Timer::RingTimeout {
                call,
                agent: agent.clone(),
            },
        });
        for o in others {
            out.push(Output::CancelRing {
                call,
                agent: o.clone(),
            });
            out.push(Output::CancelTimer {
                timer: Timer::RingTimeout {
                    call,
                    agent: o.clone(),
                },
            });
            self.release_agent(&o, call, now);
        }
        out.push(Output::Assigned {
            call,
            queue: qid,
            agent: agent.clone(),
            waited_ms: now.saturating_sub(w.since),
        });
        self.calls.insert(call, CallPlace::Connected(agent));
    }

    fn offer_failed(
        &mut self,
        call: CallId,
        agent: &AgentId,
        _why: OfferFailure,
        now: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(CallPlace::Queued(qid)) = self.calls.get(&call).cloned() else {
            return;
        };
        let Some(q) = self.queues.get_mut(&qid) else {
            return;
        };
        let Some(w) = q.waiting.iter_mut().find(|w| w.call == call) else {
            return;
        };
        if !w.ringing.remove(agent) {
            return;
        }
        w.tried.insert(agent.clone());
        out.push(Output::CancelTimer {
            timer: Timer::RingTimeout {
                call,
                agent: agent.clone(),
            },
        });
        self.release_agent(agent, call, now);
    }

    fn call_ended(&mut self, call: CallId, now: Millis, out: &mut Vec<Output>) {
        match self.calls.remove(&call) {
            Some(CallPlace::Queued(qid)) => {
                let Some(q) = self.queues.get_mut(&qid) else {
                    return;
                };
                let Some(pos) = q.waiting.iter().position(|w| w.call == call) else {
                    return;
                };
                let Some(w) = q.waiting.remove(pos) else {
                    return;
                };
                for a in &w.ringing {
                    out.push(Output::CancelRing {
                        call,
                        agent: a.clone(),
                    });
                    out.push(Output::CancelTimer {
                        timer: Timer::RingTimeout {
                            call,
                            agent: a.clone(),
                        },
                    });
                }
                if w.retry_armed {
                    out.push(Output::CancelTimer {
                        timer: Timer::Retry { call },
                    });
                }
                for a in w.ringing {
                    self.release_agent(&a, call, now);
                }
                out.push(Output::Abandoned {
                    call,
                    queue: qid,
                    waited_ms: now.saturating_sub(w.since),
                });
            }
            Some(CallPlace::Connected(agent)) => self.release_agent(&agent, call, now),
            None => {}
        }
    }

    /// Offers waiting calls to available agents until nothing more can be matched.
    /// Calls are considered oldest first across all queues, so an agent in several
    /// queues serves the caller who has waited longest.
    fn dispatch(&mut self, now: Millis, out: &mut Vec<Output>) {
        // Waiting calls not ringing anyone, oldest first (ties: queue name, position).
        let mut candidates: Vec<(Millis, QueueId, usize, CallId)> = Vec::new();
        for (qid, q) in &self.queues {
            for (i, w) in q.waiting.iter().enumerate() {
                if w.ringing.is_empty() {
                    candidates.push((w.since, qid.clone(), i, w.call));
                }
            }
        }
        candidates.sort();
        for (_, qid, _, call) in candidates {
            let Some(q) = self.queues.get(&qid) else {
                continue;
            };
            let Some(w) = q.waiting.iter().find(|w| w.call == call) else {
                continue;
            };
            let available: Vec<&AgentId> = q
                .members
                .iter()
                .filter(|a| self.agents.get(*a).is_some_and(AgentView::available))
                .collect();
            if available.is_empty() {
                continue;
            }
            // Skip agents who already failed this call. If all available ones have, wait
            // `retry_delay_ms` before offering it to them again.
            let pool: Vec<&AgentId> = available
                .iter()
                .copied()
                .filter(|a| !w.tried.contains(*a))
                .collect();
            if pool.is_empty() {
                if !w.retry_armed {
                    let at = now + q.config.retry_delay_ms;
                    out.push(Output::StartTimer {
                        timer: Timer::Retry { call },
                        at,
                    });
                    if let Some(w) = self
                        .queues
                        .get_mut(&qid)
                        .and_then(|q| q.waiting.iter_mut().find(|w| w.call == call))
                    {
                        w.retry_armed = true;
                    }
                }
                continue;
            }
            let chosen: Vec<AgentId> = match q.config.strategy {
                Strategy::RingAll => pool.into_iter().cloned().collect(),
                Strategy::LongestIdleAgent => pool
                    .into_iter()
                    .min_by_key(|a| {
                        (
                            self.agents.get(*a).map(|v| v.idle_since).unwrap_or(0),
                            (*a).clone(),
                        )
                    })
                    .cloned()
                    .into_iter()
                    .collect(),
                Strategy::RoundRobin => {
                    let start = q
                        .last_offered
                        .as_ref()
                        .and_then(|l| q.members.iter().position(|m| m == l))
                        .map(|p| p + 1)
                        .unwrap_or(0);
                    let n = q.members.len();
                    (0..n)
                        .map(|i| &q.members[(start + i) % n])
                        .find(|m| pool.contains(m))
                        .cloned()
                        .into_iter()
                        .collect()
                }
            };
            if chosen.is_empty() {
                continue;
            }
            let timeout = q.config.ring_timeout_ms;
            let strategy = q.config.strategy;
            let mut rung = Vec::new();
            for a in chosen {
                let Some(v) = self.agents.get_mut(&a) else {
                    continue;
                };
                let Some(contact) = v.contact.clone() else {
                    continue;
                };
                v.calls.insert(call);
                out.push(Output::Ring {
                    call,
                    queue: qid.clone(),
                    agent: a.clone(),
                    contact,
                });
                out.push(Output::StartTimer {
                    timer: Timer::RingTimeout {
                        call,
                        agent: a.clone(),
                    },
                    at: now + timeout,
                });
                rung.push(a);
            }
            if let Some(q) = self.queues.get_mut(&qid) {
                if strategy == Strategy::RoundRobin {
                    if let Some(last) = rung.last() {
                        q.last_offered = Some(last.clone());
                    }
                }
                if let Some(w) = q.waiting.iter_mut().find(|w| w.call == call) {
                    w.ringing.extend(rung);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
