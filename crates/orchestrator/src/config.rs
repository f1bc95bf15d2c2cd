//! Configuration: queues (strategy, tier, penalty and skill rules), agents (memberships
//! with level, position and penalty; skills), per-call routing data (required skills,
//! priority, original entry time) and the orchestrator as a whole (seed, explanation
//! bounds).

use crate::{Millis, Strategy};
use call_engine_events::{AgentId, AgentStatus, MembershipTerms, QueueId};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::collections::BTreeMap;

/// A skill a call needs, with the minimum level an agent must have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SkillRequirement {
    /// Skill name (`english`, `billing`, …).
    pub skill: SmolStr,
    /// Minimum level (an agent without the skill has level 0).
    pub min_level: u8,
}

impl SkillRequirement {
    /// `skill` at `min_level` or better.
    pub fn new(skill: impl Into<SmolStr>, min_level: u8) -> Self {
        Self {
            skill: skill.into(),
            min_level,
        }
    }
}

/// Tier rule: once a caller has waited `after_ms` in the queue, agents whose membership
/// level is at most `level` are eligible. Without any tier rule every level is eligible
/// at once; with rules, level 1 is eligible from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TierRule {
    /// Waiting time (in this queue) from which the rule applies.
    pub after_ms: Millis,
    /// Highest eligible level from then on.
    pub level: u8,
}

/// Penalty rule: once a caller has waited `after_ms`, members whose penalty is at most
/// `max_penalty` are eligible (the latest applicable rule wins; before the first,
/// [`QueueConfig::max_penalty`] applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PenaltyRule {
    /// Waiting time (in this queue) from which the rule applies.
    pub after_ms: Millis,
    /// Highest eligible penalty from then on.
    pub max_penalty: u32,
}

/// Skill widening: once a caller has waited `after_ms`, every required minimum skill
/// level is lowered by `lower_by` (the latest applicable rule wins, not cumulative). A
/// requirement lowered to 0 no longer excludes anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SkillRelax {
    /// Waiting time (in this queue) from which the rule applies.
    pub after_ms: Millis,
    /// How much every required minimum level is lowered.
    pub lower_by: u8,
}

/// How skill levels rank qualified agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkillMatch {
    /// The agent with the highest skill score (sum of their levels in the required
    /// skills) is preferred; the strategy breaks ties.
    #[default]
    BestMatch,
    /// Skills only qualify (or exclude) agents; the strategy alone picks among the
    /// qualified.
    Qualified,
}

fn default_ring_progressively_delay_ms() -> Millis {
    5_000
}

/// A queue's policy.
///
/// Fields added after the first release have serde defaults, and the builder methods
/// (`with_*`) leave everything else as [`QueueConfig::new`] sets it.
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
    /// Tier rules (see [`TierRule`]). Empty: every level is eligible at once.
    #[serde(default)]
    pub tier_rules: Vec<TierRule>,
    /// Highest eligible member penalty before any [`PenaltyRule`] applies. `None`: no
    /// limit.
    #[serde(default)]
    pub max_penalty: Option<u32>,
    /// Penalty rules (see [`PenaltyRule`]).
    #[serde(default)]
    pub penalty_rules: Vec<PenaltyRule>,
    /// Skills every call in this queue needs (a call can add more; for a skill named on
    /// both, the higher minimum applies).
    #[serde(default)]
    pub required_skills: Vec<SkillRequirement>,
    /// Skill widening rules (see [`SkillRelax`]).
    #[serde(default)]
    pub skill_relax: Vec<SkillRelax>,
    /// How skill levels rank qualified agents.
    #[serde(default)]
    pub skill_match: SkillMatch,
    /// [`Strategy::RingProgressively`]: one more agent is rung every this many ms.
    #[serde(default = "default_ring_progressively_delay_ms")]
    pub ring_progressively_delay_ms: Millis,
    /// Wrap-up (after-call work): once a connected call from this queue ends, its agent
    /// is not offered another call for this long. 0: available again at once.
    #[serde(default)]
    pub wrap_up_ms: Millis,
    /// Longest a caller may wait in this queue; then [`QueueConfig::max_wait_action`]
    /// applies (a [`crate::Timer::MaxWait`] is armed when the call joins). `None`: no
    /// limit. `Some(0)`: callers are refused ([`crate::RejectCause::MaxWait`]).
    #[serde(default)]
    pub max_wait_ms: Option<Millis>,
    /// What happens to a caller who waited [`QueueConfig::max_wait_ms`].
    #[serde(default)]
    pub max_wait_action: QueueAction,
    /// Callers are refused when they would join while this holds (they get
    /// [`QueueConfig::empty_action`]). `None`: callers always join.
    #[serde(default)]
    pub join_empty: Option<EmptyCondition>,
    /// Waiting callers leave (in queue order, with [`QueueConfig::empty_action`]) as
    /// soon as this holds; re-checked whenever a member's status, contact or membership
    /// changes. A caller who would have to leave at once is refused when joining.
    #[serde(default)]
    pub leave_when_empty: Option<EmptyCondition>,
    /// What happens to callers refused or leaving because the queue is empty
    /// ([`QueueConfig::join_empty`], [`QueueConfig::leave_when_empty`],
    /// [`QueueConfig::max_wait_no_agent_ms`]).
    #[serde(default)]
    pub empty_action: QueueAction,
    /// Callers waiting while the queue has had no logged-in member
    /// ([`EmptyCondition::NoMembers`]) for this long get [`QueueConfig::empty_action`]
    /// (a [`crate::Timer::NoAgent`] is armed). `None`: no limit.
    #[serde(default)]
    pub max_wait_no_agent_ms: Option<Millis>,
    /// Most callers waiting (ringing included), counting the calls on their way
    /// ([`Input::CallArriving`](crate::Input::CallArriving)); more are handled by
    /// [`QueueConfig::full_action`]. `None`: no limit.
    #[serde(default)]
    pub max_len: Option<u32>,
    /// What happens to a caller who finds the queue full.
    #[serde(default)]
    pub full_action: FullAction,
}

/// What happens to a caller leaving a queue because of a policy (max wait, empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum QueueAction {
    /// The call is removed ([`crate::Output::Removed`]); the engine plays the prompt, if
    /// any, and hangs up.
    Hangup {
        /// A prompt to play before hanging up.
        #[serde(default)]
        prompt: Option<SmolStr>,
    },
    /// The call moves to another queue ([`crate::Output::Overflowed`]), keeping its
    /// priority, its own required skills and its seniority.
    Overflow {
        /// The queue.
        queue: QueueId,
    },
}

impl Default for QueueAction {
    fn default() -> Self {
        QueueAction::Hangup { prompt: None }
    }
}

/// When a queue counts as empty ([`QueueConfig::join_empty`],
/// [`QueueConfig::leave_when_empty`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmptyCondition {
    /// No member is logged in: every member is offline (no contact) or
    /// [`AgentStatus::LoggedOut`]. Members on a break count as logged in.
    NoMembers,
    /// No member could take a call: every member is offline, logged out or on a break.
    /// Members busy on calls, ringing, in wrap-up or in a reject/busy/no-answer delay
    /// count as available (they will be soon).
    NoneAvailable,
}

/// What happens to a caller who finds the queue full ([`QueueConfig::max_len`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FullAction {
    /// Refused ([`crate::RejectCause::Full`]; SIP 486 before answering).
    #[default]
    Reject,
    /// Sent to another queue.
    Overflow {
        /// The queue.
        queue: QueueId,
    },
}

impl QueueConfig {
    /// A queue with the default ring timeout (15 s), retry delay (2 s), no tier, penalty
    /// or skill rules, and a ring-progressively delay of 5 s.
    pub fn new(name: QueueId, strategy: Strategy) -> Self {
        Self {
            name,
            strategy,
            ring_timeout_ms: 15_000,
            retry_delay_ms: 2_000,
            tier_rules: Vec::new(),
            max_penalty: None,
            penalty_rules: Vec::new(),
            required_skills: Vec::new(),
            skill_relax: Vec::new(),
            skill_match: SkillMatch::BestMatch,
            ring_progressively_delay_ms: default_ring_progressively_delay_ms(),
            wrap_up_ms: 0,
            max_wait_ms: None,
            max_wait_action: QueueAction::default(),
            join_empty: None,
            leave_when_empty: None,
            empty_action: QueueAction::default(),
            max_wait_no_agent_ms: None,
            max_len: None,
            full_action: FullAction::Reject,
        }
    }

    /// Sets the ring timeout.
    pub fn with_ring_timeout(mut self, ms: Millis) -> Self {
        self.ring_timeout_ms = ms;
        self
    }

    /// Sets the retry delay.
    pub fn with_retry_delay(mut self, ms: Millis) -> Self {
        self.retry_delay_ms = ms;
        self
    }

    /// Adds a tier rule: from `after_ms` of waiting, levels up to `level` are eligible.
    pub fn with_tier_rule(mut self, after_ms: Millis, level: u8) -> Self {
        self.tier_rules.push(TierRule { after_ms, level });
        self
    }

    /// Adds tier rules widening one level every `step_ms`, up to `max_level`: level 2
    /// after `step_ms`, level 3 after `2 × step_ms`, …
    pub fn with_tier_steps(mut self, step_ms: Millis, max_level: u8) -> Self {
        for level in 2..=max_level {
            self.tier_rules.push(TierRule {
                after_ms: step_ms.saturating_mul(Millis::from(level - 1)),
                level,
            });
        }
        self
    }

    /// Sets the initial highest eligible penalty.
    pub fn with_max_penalty(mut self, max_penalty: u32) -> Self {
        self.max_penalty = Some(max_penalty);
        self
    }

    /// Adds a penalty rule: from `after_ms` of waiting, penalties up to `max_penalty` are
    /// eligible.
    pub fn with_penalty_rule(mut self, after_ms: Millis, max_penalty: u32) -> Self {
        self.penalty_rules.push(PenaltyRule {
            after_ms,
            max_penalty,
        });
        self
    }

    /// Adds a required skill.
    pub fn with_required_skill(mut self, skill: impl Into<SmolStr>, min_level: u8) -> Self {
        self.required_skills
            .push(SkillRequirement::new(skill, min_level));
        self
    }

    /// Adds a skill widening rule: from `after_ms` of waiting, required levels are
    /// lowered by `lower_by`.
    pub fn with_skill_relax(mut self, after_ms: Millis, lower_by: u8) -> Self {
        self.skill_relax.push(SkillRelax { after_ms, lower_by });
        self
    }

    /// Sets how skill levels rank qualified agents.
    pub fn with_skill_match(mut self, m: SkillMatch) -> Self {
        self.skill_match = m;
        self
    }

    /// Sets the ring-progressively delay.
    pub fn with_ring_progressively_delay(mut self, ms: Millis) -> Self {
        self.ring_progressively_delay_ms = ms;
        self
    }

    /// Sets the wrap-up time (see [`QueueConfig::wrap_up_ms`]).
    pub fn with_wrap_up_ms(mut self, ms: Millis) -> Self {
        self.wrap_up_ms = ms;
        self
    }

    /// Sets the longest wait and what happens then (see [`QueueConfig::max_wait_ms`]).
    pub fn with_max_wait(mut self, ms: Millis, action: QueueAction) -> Self {
        self.max_wait_ms = Some(ms);
        self.max_wait_action = action;
        self
    }

    /// Refuses callers when the queue is empty (see [`QueueConfig::join_empty`]).
    pub fn with_join_empty(mut self, when: EmptyCondition) -> Self {
        self.join_empty = Some(when);
        self
    }

    /// Makes callers leave when the queue becomes empty (see
    /// [`QueueConfig::leave_when_empty`]).
    pub fn with_leave_when_empty(mut self, when: EmptyCondition) -> Self {
        self.leave_when_empty = Some(when);
        self
    }

    /// Sets what happens to callers refused or leaving an empty queue.
    pub fn with_empty_action(mut self, action: QueueAction) -> Self {
        self.empty_action = action;
        self
    }

    /// Sets the longest wait with no logged-in member (see
    /// [`QueueConfig::max_wait_no_agent_ms`]).
    pub fn with_max_wait_no_agent(mut self, ms: Millis) -> Self {
        self.max_wait_no_agent_ms = Some(ms);
        self
    }

    /// Sets the most callers waiting and what happens to the next ones.
    pub fn with_max_len(mut self, max_len: u32, action: FullAction) -> Self {
        self.max_len = Some(max_len);
        self.full_action = action;
        self
    }
}

/// An agent's policy: the original, simple form (every membership at level 1,
/// position 0, penalty 0; no skills). See [`AgentProfile`] for the full form;
/// `AgentProfile::from(config)` converts.
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

/// An agent's membership of one queue (a tier entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Membership {
    /// The queue.
    pub queue: QueueId,
    /// Tier level (1 = first line). Tier rules make higher levels eligible over time;
    /// among eligible agents, a lower level is preferred.
    pub level: u8,
    /// Position within the queue: member order (`top-down`, `round-robin`,
    /// `ring-progressively`, `sequentially-by-agent-order`) is by position, then by the
    /// order agents were configured.
    pub position: u32,
    /// Penalty (0 = best). Penalty rules limit which penalties are eligible over time;
    /// among eligible agents a lower penalty is preferred, except for
    /// `weighted-random`, where it sets the weight (`∝ 1 / (penalty + 1)`).
    pub penalty: u32,
}

impl Membership {
    /// Level 1, position 0, penalty 0.
    pub fn new(queue: QueueId) -> Self {
        Self {
            queue,
            level: 1,
            position: 0,
            penalty: 0,
        }
    }

    /// Sets the tier level.
    pub fn with_level(mut self, level: u8) -> Self {
        self.level = level;
        self
    }

    /// Sets the position.
    pub fn with_position(mut self, position: u32) -> Self {
        self.position = position;
        self
    }

    /// Sets the penalty.
    pub fn with_penalty(mut self, penalty: u32) -> Self {
        self.penalty = penalty;
        self
    }

    /// The membership of `queue` on `terms` (a level of 0 counts as 1).
    pub fn with_terms(queue: QueueId, terms: MembershipTerms) -> Self {
        Self::new(queue)
            .with_level(terms.level.max(1))
            .with_position(terms.position)
            .with_penalty(terms.penalty)
    }

    /// Its level, position and penalty.
    pub fn terms(&self) -> MembershipTerms {
        MembershipTerms {
            level: self.level,
            position: self.position,
            penalty: self.penalty,
        }
    }
}

/// An agent's full routing profile: memberships with tier level, position and
/// penalty; skills with levels; concurrent calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentProfile {
    /// Id.
    pub id: AgentId,
    /// Calls at once (ringing included).
    pub max_calls: u16,
    /// Queues the agent serves (a queue named twice counts once, the first entry wins).
    pub memberships: Vec<Membership>,
    /// Skills and their levels (1–255; 0 is the same as not having the skill).
    #[serde(default)]
    pub skills: BTreeMap<SmolStr, u8>,
    /// Wrap-up time after this agent's connected calls, overriding the queue's
    /// [`QueueConfig::wrap_up_ms`]. `None`: the queue's applies.
    #[serde(default)]
    pub wrap_up_ms: Option<Millis>,
    /// Initial status (default [`AgentStatus::Available`]); changed at runtime by
    /// [`crate::Input::AgentStatus`].
    #[serde(default = "default_status")]
    pub status: AgentStatus,
    /// After an offer this agent declined ([`crate::OfferFailure::Declined`], SIP 603),
    /// they are not offered any call for this long. 0: no delay.
    #[serde(default)]
    pub reject_delay_ms: Millis,
    /// After an offer failed busy ([`crate::OfferFailure::Busy`], SIP 486).
    #[serde(default)]
    pub busy_delay_ms: Millis,
    /// After an offer was not answered ([`crate::OfferFailure::NoAnswer`] or a ring
    /// timeout).
    #[serde(default)]
    pub no_answer_delay_ms: Millis,
    /// After this many consecutive unanswered offers, the agent is put on a break
    /// (`"auto: no answer"`). An answered offer, or setting the status back to
    /// available, resets the count. 0: never.
    #[serde(default)]
    pub max_no_answer: u32,
}

fn default_status() -> AgentStatus {
    AgentStatus::Available
}

impl AgentProfile {
    /// An agent in no queue, with no skills, taking one call at a time.
    pub fn new(id: AgentId) -> Self {
        Self {
            id,
            max_calls: 1,
            memberships: Vec::new(),
            skills: BTreeMap::new(),
            wrap_up_ms: None,
            status: AgentStatus::Available,
            reject_delay_ms: 0,
            busy_delay_ms: 0,
            no_answer_delay_ms: 0,
            max_no_answer: 0,
        }
    }

    /// Adds a membership at level 1, position 0, penalty 0.
    pub fn with_queue(self, queue: QueueId) -> Self {
        self.with_membership(Membership::new(queue))
    }

    /// Adds a membership.
    pub fn with_membership(mut self, m: Membership) -> Self {
        self.memberships.push(m);
        self
    }

    /// Sets a skill level.
    pub fn with_skill(mut self, skill: impl Into<SmolStr>, level: u8) -> Self {
        self.skills.insert(skill.into(), level);
        self
    }

    /// Sets the number of calls at once.
    pub fn with_max_calls(mut self, max_calls: u16) -> Self {
        self.max_calls = max_calls;
        self
    }

    /// Sets the agent's own wrap-up time, overriding the queue's.
    pub fn with_wrap_up_ms(mut self, ms: Millis) -> Self {
        self.wrap_up_ms = Some(ms);
        self
    }

    /// Sets the initial status.
    pub fn with_status(mut self, status: AgentStatus) -> Self {
        self.status = status;
        self
    }

    /// Sets the delay after a declined offer (see [`AgentProfile::reject_delay_ms`]).
    pub fn with_reject_delay_ms(mut self, ms: Millis) -> Self {
        self.reject_delay_ms = ms;
        self
    }

    /// Sets the delay after a busy offer (see [`AgentProfile::busy_delay_ms`]).
    pub fn with_busy_delay_ms(mut self, ms: Millis) -> Self {
        self.busy_delay_ms = ms;
        self
    }

    /// Sets the delay after an unanswered offer (see
    /// [`AgentProfile::no_answer_delay_ms`]).
    pub fn with_no_answer_delay_ms(mut self, ms: Millis) -> Self {
        self.no_answer_delay_ms = ms;
        self
    }

    /// Sets the consecutive unanswered offers before an automatic break (see
    /// [`AgentProfile::max_no_answer`]).
    pub fn with_max_no_answer(mut self, n: u32) -> Self {
        self.max_no_answer = n;
        self
    }
}

impl From<AgentConfig> for AgentProfile {
    fn from(c: AgentConfig) -> Self {
        Self {
            id: c.id,
            max_calls: c.max_calls,
            memberships: c.queues.into_iter().map(Membership::new).collect(),
            skills: BTreeMap::new(),
            wrap_up_ms: None,
            status: AgentStatus::Available,
            reject_delay_ms: 0,
            busy_delay_ms: 0,
            no_answer_delay_ms: 0,
            max_no_answer: 0,
        }
    }
}

/// Routing data carried by one call (see [`crate::Input::CallQueuedWith`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallRouting {
    /// Skills the call needs on top of the queue's.
    #[serde(default)]
    pub skills: Vec<SkillRequirement>,
    /// Priority: higher is served first (VIP). Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Original entry time (seniority gained elsewhere, e.g. in another queue or a
    /// previous attempt): among callers of equal priority, the earlier entry is served
    /// first. Default: the time the call is queued. A time in the future counts as now.
    #[serde(default)]
    pub entered_at: Option<Millis>,
}

impl CallRouting {
    /// No extra skills, priority 0, entered now.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a required skill.
    pub fn with_skill(mut self, skill: impl Into<SmolStr>, min_level: u8) -> Self {
        self.skills.push(SkillRequirement::new(skill, min_level));
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the original entry time.
    pub fn with_entered_at(mut self, at: Millis) -> Self {
        self.entered_at = Some(at);
        self
    }
}

/// Bounds on the explanations kept (see [`crate::Orchestrator::explain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExplainConfig {
    /// Calls whose decisions are kept (the oldest call's are dropped first). 0 turns
    /// explanations off.
    pub calls: usize,
    /// Decisions kept per call (the oldest are dropped first). Consecutive attempts
    /// that rang nobody with the same outcome are kept as one decision with a repeat
    /// count.
    pub decisions_per_call: usize,
    /// Candidates kept per decision: the chosen first, then the eligible, then the
    /// skipped, in member order; the rest are counted in `omitted`.
    pub candidates_per_decision: usize,
}

impl Default for ExplainConfig {
    fn default() -> Self {
        Self {
            calls: 1024,
            decisions_per_call: 8,
            candidates_per_decision: 64,
        }
    }
}

impl ExplainConfig {
    /// No explanations.
    pub fn disabled() -> Self {
        Self {
            calls: 0,
            decisions_per_call: 0,
            candidates_per_decision: 0,
        }
    }

    /// Sets every bound.
    pub fn new(calls: usize, decisions_per_call: usize, candidates_per_decision: usize) -> Self {
        Self {
            calls,
            decisions_per_call,
            candidates_per_decision,
        }
    }
}

/// Everything an [`crate::Orchestrator`] is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OrchestratorConfig {
    /// Queues.
    pub queues: Vec<QueueConfig>,
    /// Agents.
    pub agents: Vec<AgentProfile>,
    /// Seed of the pseudo-random generator used by `random` and `weighted-random`: the
    /// same seed and the same inputs give the same decisions.
    #[serde(default)]
    pub seed: u64,
    /// Explanation bounds.
    #[serde(default)]
    pub explain: ExplainConfig,
}

impl OrchestratorConfig {
    /// These queues and agents, seed 0, default explanation bounds.
    pub fn new(queues: Vec<QueueConfig>, agents: Vec<AgentProfile>) -> Self {
        Self {
            queues,
            agents,
            seed: 0,
            explain: ExplainConfig::default(),
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the explanation bounds.
    pub fn with_explain(mut self, explain: ExplainConfig) -> Self {
        self.explain = explain;
        self
    }
}
