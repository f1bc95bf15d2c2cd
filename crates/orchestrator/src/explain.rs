//! Explainable decisions: what the orchestrator considered for a call, how it scored
//! each candidate and why it skipped the others.
//!
//! The routing path records into reused buffers (compact, agent and skill indices); the
//! public [`Decision`] is built only when asked for, by [`crate::Orchestrator::explain`].

use crate::{ExplainConfig, Millis, SkillRequirement, Strategy};
use call_engine_events::{AgentId, CallId, QueueId};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::fmt;

/// Why a member was or was not rung for a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Rung.
    Chosen,
    /// Eligible, but another agent ranked better (level, penalty, skill score, then the
    /// strategy's metric) or won the draw.
    Outranked,
    /// No contact (not registered).
    Offline,
    /// On a break ([`call_engine_events::AgentStatus::OnBreak`]: paused, or any other
    /// reason).
    Paused,
    /// Logged out ([`call_engine_events::AgentStatus::LoggedOut`]).
    LoggedOut,
    /// In a reject, busy or no-answer delay after a failed offer.
    Delayed,
    /// In wrap-up (after-call work) after a call.
    WrapUp,
    /// Already ringing for this call (ring-progressively adds others).
    AlreadyRinging,
    /// Ringing or talking up to `max_calls`.
    AtCapacity {
        /// Calls ringing or connected.
        calls: u16,
        /// The agent's limit.
        max_calls: u16,
    },
    /// The membership's tier level is not eligible yet for this caller.
    LevelTooHigh {
        /// The member's level.
        level: u8,
        /// The highest eligible level at this waiting time.
        allowed: u8,
    },
    /// The membership's penalty is above the limit at this waiting time.
    PenaltyTooHigh {
        /// The member's penalty.
        penalty: u32,
        /// The highest eligible penalty.
        max_penalty: u32,
    },
    /// The agent does not have a required skill.
    LacksSkill {
        /// The skill.
        skill: SmolStr,
        /// The (widened) minimum level required.
        required: u8,
    },
    /// The agent's level in a required skill is below the (widened) minimum.
    SkillTooLow {
        /// The skill.
        skill: SmolStr,
        /// The agent's level.
        level: u8,
        /// The minimum required.
        required: u8,
    },
    /// Already failed this call (no answer, busy, declined); skipped until every
    /// eligible member has been tried and the retry delay has passed.
    AlreadyTried,
}

impl Verdict {
    /// Whether the member was rung.
    pub fn is_chosen(&self) -> bool {
        matches!(self, Verdict::Chosen)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Chosen => f.write_str("chosen"),
            Verdict::Outranked => f.write_str("eligible, outranked"),
            Verdict::Offline => f.write_str("skipped: offline"),
            Verdict::Paused => f.write_str("skipped: paused"),
            Verdict::LoggedOut => f.write_str("skipped: logged out"),
            Verdict::Delayed => f.write_str("skipped: delayed"),
            Verdict::WrapUp => f.write_str("skipped: wrap-up"),
            Verdict::AlreadyRinging => f.write_str("skipped: already ringing"),
            Verdict::AtCapacity { calls, max_calls } => {
                write!(f, "skipped: at capacity ({calls}/{max_calls} calls)")
            }
            Verdict::LevelTooHigh { level, allowed } => {
                write!(f, "skipped: level {level} > allowed {allowed}")
            }
            Verdict::PenaltyTooHigh {
                penalty,
                max_penalty,
            } => write!(f, "skipped: penalty {penalty} > max {max_penalty}"),
            Verdict::LacksSkill { skill, required } => {
                write!(f, "skipped: lacks skill {skill} (needs {required})")
            }
            Verdict::SkillTooLow {
                skill,
                level,
                required,
            } => write!(f, "skipped: {skill} level {level} < {required}"),
            Verdict::AlreadyTried => f.write_str("skipped: already tried"),
        }
    }
}

/// One member considered for a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Candidate {
    /// The agent.
    pub agent: AgentId,
    /// Tier level of the membership (as it is now: memberships can change at runtime
    /// with [`crate::Input::QueueLogin`]; 0 if the agent left the queue since).
    pub level: u8,
    /// Position of the membership (as it is now).
    pub position: u32,
    /// Penalty of the membership (as it is now).
    pub penalty: u32,
    /// Skill score: the sum of the agent's levels in the required skills (0 for members
    /// skipped before the skill check: offline, paused, at capacity, tier, penalty).
    pub skill_score: u32,
    /// The strategy's metric, lower is better, for eligible members (0 for skipped
    /// ones): idle-since time (`longest-idle-agent`), distance after the last agent
    /// offered (`round-robin`, `sequentially-by-agent-order`), member index
    /// (`top-down`, `ring-all`, `ring-progressively`), calls answered
    /// (`agent-with-fewest-calls`), talk time in ms (`agent-with-least-talk-time`),
    /// weight, higher draws more often (`weighted-random`), 0 (`random`).
    pub metric: u64,
    /// Rung, outranked, or why it was skipped.
    pub verdict: Verdict,
}

/// What a routing decision did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// These agents were rung.
    Rang {
        /// The agents.
        agents: Vec<AgentId>,
    },
    /// Every eligible member already failed the call; it waits for its retry timer.
    AllTried {
        /// When the retry fires, if it was armed by this decision.
        retry_at: Option<Millis>,
    },
    /// No member is eligible now.
    NoEligibleAgent,
    /// A callback ([`crate::Input::CallbackRequested`]): this agent was reserved
    /// ([`crate::Output::Callback`]) while the customer is called back.
    Reserved {
        /// The agent.
        agent: AgentId,
    },
}

/// One routing decision for a call: the limits in force, every candidate considered
/// (up to [`ExplainConfig::candidates_per_decision`]) and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// Sequence number across all calls (decisions are numbered as they are made).
    pub seq: u64,
    /// The call.
    pub call: CallId,
    /// The queue.
    pub queue: QueueId,
    /// The queue's strategy.
    pub strategy: Strategy,
    /// When the decision was made.
    pub at: Millis,
    /// When it was last repeated (same as `at` if `repeats` is 0).
    pub last_at: Millis,
    /// How many later attempts had the same outcome without ringing anyone and were
    /// folded into this decision (the candidates are those of the last one).
    pub repeats: u32,
    /// Waiting time in the queue at `last_at`.
    pub waited_ms: Millis,
    /// The call's priority.
    pub priority: i32,
    /// The call's entry time used for ordering (seniority).
    pub entered_at: Millis,
    /// Highest eligible tier level (`None`: no tier rules).
    pub allowed_level: Option<u8>,
    /// Highest eligible penalty (`None`: no limit).
    pub max_penalty: Option<u32>,
    /// Required skills after widening.
    pub required_skills: Vec<SkillRequirement>,
    /// When the limits widen next (a [`crate::Timer::Widen`] is armed for it if the
    /// call is still waiting then).
    pub next_widening_at: Option<Millis>,
    /// Members considered.
    pub considered: u32,
    /// Members eligible (before excluding those who already tried).
    pub eligible: u32,
    /// Candidates considered but not listed (over the bound).
    pub omitted: u32,
    /// Candidates: the chosen first if the list was cut, else in member order.
    pub candidates: Vec<Candidate>,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decision #{} {} queue {} ({}) at {} ms, waited {} ms, priority {}",
            self.seq, self.call, self.queue, self.strategy, self.at, self.waited_ms, self.priority
        )?;
        if self.repeats > 0 {
            write!(
                f,
                ", repeated {} times until {} ms",
                self.repeats, self.last_at
            )?;
        }
        writeln!(f)?;
        write!(f, "  limits: level ")?;
        match self.allowed_level {
            Some(l) => write!(f, "<= {l}")?,
            None => write!(f, "any")?,
        }
        write!(f, ", penalty ")?;
        match self.max_penalty {
            Some(p) => write!(f, "<= {p}")?,
            None => write!(f, "any")?,
        }
        write!(f, ", skills")?;
        if self.required_skills.is_empty() {
            write!(f, " none")?;
        }
        for s in &self.required_skills {
            write!(f, " {}>={}", s.skill, s.min_level)?;
        }
        if let Some(at) = self.next_widening_at {
            write!(f, "; widens at {at} ms")?;
        }
        writeln!(f)?;
        match &self.outcome {
            Outcome::Rang { agents } => {
                write!(f, "  -> rang")?;
                for a in agents {
                    write!(f, " {a}")?;
                }
                writeln!(f)?;
            }
            Outcome::AllTried { retry_at: Some(at) } => {
                writeln!(f, "  -> every eligible agent tried; retry at {at} ms")?
            }
            Outcome::AllTried { retry_at: None } => {
                writeln!(f, "  -> every eligible agent tried; waiting for the retry")?
            }
            Outcome::NoEligibleAgent => writeln!(f, "  -> no eligible agent")?,
            Outcome::Reserved { agent } => writeln!(f, "  -> reserved {agent} for a callback")?,
        }
        writeln!(
            f,
            "  {} considered, {} eligible{}",
            self.considered,
            self.eligible,
            if self.omitted > 0 {
                format!(", {} not listed", self.omitted)
            } else {
                String::new()
            }
        )?;
        for c in &self.candidates {
            writeln!(
                f,
                "  {:<16} level {} pos {} pen {} score {} metric {}  {}",
                c.agent.as_str(),
                c.level,
                c.position,
                c.penalty,
                c.skill_score,
                c.metric,
                c.verdict
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Internal, compact records.

/// A verdict as recorded on the routing path (skill as an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V {
    Eligible,
    Chosen,
    Offline,
    Paused,
    LoggedOut,
    Delayed,
    WrapUp,
    Ringing,
    AtCapacity {
        calls: u16,
        max: u16,
    },
    /// The allowed level is in the decision's limits.
    LevelTooHigh,
    /// The highest penalty is in the decision's limits.
    PenaltyTooHigh,
    LacksSkill {
        skill: u16,
        required: u8,
    },
    SkillTooLow {
        skill: u16,
        level: u8,
        required: u8,
    },
    Tried,
}

/// A candidate as recorded on the routing path: 24 bytes (level, position and penalty
/// come from the agent's membership; the limits from the decision).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    pub metric: u64,
    /// Index into the queue's members (valid during the decision only: memberships
    /// change at runtime).
    pub member: u32,
    /// The agent (index).
    pub agent: u32,
    pub score: u16,
    pub verdict: V,
}

// The routing loop writes one per member: keep it small.
const _: () = assert!(std::mem::size_of::<Cand>() <= 24);

/// A required skill, interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Req {
    pub skill: u16,
    pub min: u8,
    /// Index of the skill in the members' precomputed levels (`Member::qlevels`), or
    /// `NO_SLOT`: look it up in the agent's skills.
    pub slot: u8,
}

/// `Req::slot` of a skill whose levels are not precomputed per member.
pub(crate) const NO_SLOT: u8 = u8::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeCode {
    NoEligible,
    AllTried { retry_at: Option<Millis> },
    Rang,
    Reserved,
}

impl OutcomeCode {
    fn same_kind(self, other: OutcomeCode) -> bool {
        matches!(
            (self, other),
            (OutcomeCode::NoEligible, OutcomeCode::NoEligible)
                | (OutcomeCode::AllTried { .. }, OutcomeCode::AllTried { .. })
        )
    }
}

/// The limits in force for one decision.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub waited: Millis,
    pub allowed_level: Option<u8>,
    pub max_penalty: Option<u32>,
    pub lowered_by: u8,
    pub next_widening_at: Option<Millis>,
}

#[derive(Debug, Clone)]
struct DecRec {
    seq: u64,
    at: Millis,
    last_at: Millis,
    repeats: u32,
    limits: Limits,
    considered: u32,
    eligible: u32,
    omitted: u32,
    cands: Vec<Cand>,
    rang: Vec<u32>,
    outcome: OutcomeCode,
}

#[derive(Debug, Clone)]
struct CallLog {
    call: CallId,
    /// Which [`ExplainLog::begin`] filled the slot (slots are reused).
    generation: u64,
    queue: u32,
    priority: i32,
    entered: Millis,
    reqs: Vec<Req>,
    /// Ring of decisions: decision number `t` lives at `t % capacity`.
    decs: Vec<DecRec>,
    total: u64,
}

/// A call's slot in the log, checked by generation (the slot may have been reused for a
/// newer call since).
pub(crate) type LogRef = Option<(u32, u64)>;

/// What the routing path hands to the log for one decision.
pub(crate) struct Record<'a> {
    pub call: CallId,
    pub log: LogRef,
    pub at: Millis,
    pub limits: Limits,
    pub eligible: u32,
    pub cands: &'a [Cand],
    /// (agent, member) rung.
    pub rang: &'a [(u32, u32)],
    pub outcome: OutcomeCode,
}

/// Bounded, reusing store of decisions per call: a ring of call slots (the oldest call
/// is dropped first), each a ring of decisions. No map: a waiting call holds its slot
/// reference; [`ExplainLog::explain`] scans the slots.
#[derive(Debug, Clone)]
pub(crate) struct ExplainLog {
    cfg: ExplainConfig,
    slots: Vec<CallLog>,
    next: usize,
    generation: u64,
    seq: u64,
}

/// Read access to names, for materialising decisions.
pub(crate) trait Names {
    fn agent_id(&self, idx: u32) -> Option<AgentId>;
    /// (level, position, penalty) of an agent's current membership of a queue (zeros if
    /// no longer a member).
    fn member_info(&self, queue: u32, agent: u32) -> (u8, u32, u32);
    fn skill_name(&self, idx: u16) -> SmolStr;
    fn queue_info(&self, idx: u32) -> Option<(QueueId, Strategy)>;
}

impl ExplainLog {
    pub(crate) fn new(cfg: ExplainConfig) -> Self {
        Self {
            cfg,
            slots: Vec::new(),
            next: 0,
            generation: 0,
            seq: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.cfg.calls > 0 && self.cfg.decisions_per_call > 0
    }

    /// Whether `log` still refers to a slot of `call`.
    pub(crate) fn holds(&self, log: LogRef, call: CallId) -> bool {
        log.and_then(|(s, g)| self.slots.get(s as usize).map(|l| (l, g)))
            .is_some_and(|(l, g)| l.generation == g && l.call == call)
    }

    /// Starts the log of a call in a queue: takes the next slot (the oldest call's, once
    /// `calls` slots exist) and returns the reference the call keeps.
    pub(crate) fn begin(
        &mut self,
        call: CallId,
        queue: u32,
        priority: i32,
        entered: Millis,
        reqs: &[Req],
    ) -> LogRef {
        if !self.enabled() {
            return None;
        }
        self.generation += 1;
        let slot = if self.slots.len() < self.cfg.calls {
            self.slots.push(CallLog {
                call,
                generation: 0,
                queue,
                priority,
                entered,
                reqs: Vec::new(),
                decs: Vec::new(),
                total: 0,
            });
            self.slots.len() - 1
        } else {
            let s = self.next % self.slots.len().max(1);
            self.next = s + 1;
            s
        };
        let l = self.slots.get_mut(slot)?;
        l.call = call;
        l.generation = self.generation;
        l.queue = queue;
        l.priority = priority;
        l.entered = entered;
        l.reqs.clear();
        l.reqs.extend_from_slice(reqs);
        l.total = 0;
        Some((slot as u32, self.generation))
    }

    /// Records one decision (no allocation once the slot's buffers have grown).
    pub(crate) fn record(&mut self, r: Record<'_>) {
        if !self.enabled() {
            return;
        }
        if !self.holds(r.log, r.call) {
            return;
        }
        let Some(l) = r.log.and_then(|(s, _)| self.slots.get_mut(s as usize)) else {
            return;
        };
        self.seq += 1;
        let cap = self.cfg.decisions_per_call;
        let max_cands = self.cfg.candidates_per_decision;
        // Fold a repeated non-ringing outcome into the previous decision.
        if l.total > 0 && !matches!(r.outcome, OutcomeCode::Rang | OutcomeCode::Reserved) {
            let p = ((l.total - 1) % cap as u64) as usize;
            if let Some(prev) = l.decs.get_mut(p) {
                if prev.outcome.same_kind(r.outcome) {
                    prev.repeats = prev.repeats.saturating_add(1);
                    prev.last_at = r.at;
                    prev.seq = self.seq;
                    prev.limits = r.limits;
                    prev.eligible = r.eligible;
                    prev.considered = r.cands.len() as u32;
                    prev.omitted = copy_cands(&mut prev.cands, r.cands, max_cands);
                    if let (
                        OutcomeCode::AllTried { retry_at: None },
                        OutcomeCode::AllTried { retry_at: Some(_) },
                    ) = (r.outcome, prev.outcome)
                    {
                        // Keep the retry time armed by the first of the folded attempts.
                    } else {
                        prev.outcome = r.outcome;
                    }
                    return;
                }
            }
        }
        let p = (l.total % cap as u64) as usize;
        if p >= l.decs.len() {
            l.decs.push(DecRec {
                seq: 0,
                at: 0,
                last_at: 0,
                repeats: 0,
                limits: Limits::default(),
                considered: 0,
                eligible: 0,
                omitted: 0,
                cands: Vec::new(),
                rang: Vec::new(),
                outcome: OutcomeCode::NoEligible,
            });
        }
        let Some(d) = l.decs.get_mut(p) else {
            return;
        };
        d.seq = self.seq;
        d.at = r.at;
        d.last_at = r.at;
        d.repeats = 0;
        d.limits = r.limits;
        d.considered = r.cands.len() as u32;
        d.eligible = r.eligible;
        d.omitted = copy_cands(&mut d.cands, r.cands, max_cands);
        d.rang.clear();
        d.rang.extend(r.rang.iter().map(|(a, _)| *a));
        d.outcome = r.outcome;
        l.total += 1;
    }

    /// The decisions kept for a call, oldest first.
    pub(crate) fn explain(&self, call: CallId, names: &impl Names) -> Vec<Decision> {
        // The latest log of the call (a call id queued again starts a new one).
        let Some(l) = self
            .slots
            .iter()
            .filter(|l| l.call == call && l.generation > 0)
            .max_by_key(|l| l.generation)
        else {
            return Vec::new();
        };
        let Some((queue, strategy)) = names.queue_info(l.queue) else {
            return Vec::new();
        };
        let cap = self.cfg.decisions_per_call as u64;
        let mut out = Vec::new();
        for t in l.total.saturating_sub(cap)..l.total {
            let Some(d) = l.decs.get((t % cap) as usize) else {
                continue;
            };
            let required_skills = l
                .reqs
                .iter()
                .map(|r| SkillRequirement {
                    skill: names.skill_name(r.skill),
                    min_level: r.min.saturating_sub(d.limits.lowered_by),
                })
                .collect();
            let candidates = d
                .cands
                .iter()
                .map(|c| {
                    let (level, position, penalty) = names.member_info(l.queue, c.agent);
                    Candidate {
                        agent: names.agent_id(c.agent).unwrap_or_else(|| AgentId::new("?")),
                        level,
                        position,
                        penalty,
                        skill_score: u32::from(c.score),
                        metric: c.metric,
                        verdict: match c.verdict {
                            V::Eligible => Verdict::Outranked,
                            V::Chosen => Verdict::Chosen,
                            V::Offline => Verdict::Offline,
                            V::Paused => Verdict::Paused,
                            V::LoggedOut => Verdict::LoggedOut,
                            V::Delayed => Verdict::Delayed,
                            V::WrapUp => Verdict::WrapUp,
                            V::Ringing => Verdict::AlreadyRinging,
                            V::AtCapacity { calls, max } => Verdict::AtCapacity {
                                calls,
                                max_calls: max,
                            },
                            V::LevelTooHigh => Verdict::LevelTooHigh {
                                level,
                                allowed: d.limits.allowed_level.unwrap_or(0),
                            },
                            V::PenaltyTooHigh => Verdict::PenaltyTooHigh {
                                penalty,
                                max_penalty: d.limits.max_penalty.unwrap_or(0),
                            },
                            V::LacksSkill { skill, required } => Verdict::LacksSkill {
                                skill: names.skill_name(skill),
                                required,
                            },
                            V::SkillTooLow {
                                skill,
                                level,
                                required,
                            } => Verdict::SkillTooLow {
                                skill: names.skill_name(skill),
                                level,
                                required,
                            },
                            V::Tried => Verdict::AlreadyTried,
                        },
                    }
                })
                .collect();
            let outcome = match d.outcome {
                OutcomeCode::Rang => Outcome::Rang {
                    agents: d.rang.iter().filter_map(|&a| names.agent_id(a)).collect(),
                },
                OutcomeCode::AllTried { retry_at } => Outcome::AllTried { retry_at },
                OutcomeCode::NoEligible => Outcome::NoEligibleAgent,
                OutcomeCode::Reserved => match d.rang.first().and_then(|&a| names.agent_id(a)) {
                    Some(agent) => Outcome::Reserved { agent },
                    None => Outcome::NoEligibleAgent,
                },
            };
            out.push(Decision {
                seq: d.seq,
                call,
                queue: queue.clone(),
                strategy,
                at: d.at,
                last_at: d.last_at,
                repeats: d.repeats,
                waited_ms: d.limits.waited,
                priority: l.priority,
                entered_at: l.entered,
                allowed_level: d.limits.allowed_level,
                max_penalty: d.limits.max_penalty,
                required_skills,
                next_widening_at: d.limits.next_widening_at,
                considered: d.considered,
                eligible: d.eligible,
                omitted: d.omitted,
                candidates,
                outcome,
            });
        }
        out
    }
}

/// Copies up to `max` candidates: all of them if they fit, else the chosen, then the
/// eligible, then the skipped, each in member order. Returns how many were left out.
fn copy_cands(dst: &mut Vec<Cand>, src: &[Cand], max: usize) -> u32 {
    dst.clear();
    if src.len() <= max {
        dst.extend_from_slice(src);
        return 0;
    }
    for pass in 0..3 {
        for c in src {
            if dst.len() >= max {
                break;
            }
            let class = match c.verdict {
                V::Chosen => 0,
                V::Eligible => 1,
                _ => 2,
            };
            if class == pass {
                dst.push(*c);
            }
        }
    }
    (src.len() - dst.len()) as u32
}
