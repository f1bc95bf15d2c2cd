//! The configuration file (TOML). Key names are the public contract:
//!
//! ```toml
//! [sip]
//! udp = "127.0.0.1:5060"        # listen addresses; either may be omitted
//! tcp = "127.0.0.1:5060"
//! domain = "example.test"       # SIP domain and digest realm
//! t1_ms = 500                   # SIP timer T1 (10-4000): retransmissions start at T1;
//!                               # an unanswered transaction or unACKed 200 ends at 64·T1
//! calls_from = ["0.0.0.0/0", "::/0"]  # who may place calls (others get 403); default: anyone
//! trusted = ["127.0.0.1"]       # whose X-Skills / X-Priority count; default: loopback
//! [media]
//! address = "127.0.0.1"         # bound for RTP and advertised in SDP
//! rtp_ports = "20000-29999"
//! [store]
//! url = "sqlite://data/call-engine.db"
//! [[queue]]
//! name = "support"
//! strategy = "longest-idle-agent"   # or any of the ten in the README's "Configuration"
//! moh = "builtin"                   # or a path to an 8 kHz WAV
//! ring_timeout_secs = 15
//! wrap_up_secs = 0                  # after-call work before the next offer (0-3600)
//! [[agent]]
//! id = "alice"
//! password = "alice-secret"
//! queues = ["support"]
//! [reconciler]
//! interval_secs = 30                # lost BYEs and unreachable phones are found this often
//! ```
//!
//! Every error names the offending key and its line.

use crate::driver::{parse_status, Announcements};
use call_engine_events::{AgentId, QueueId};
use call_engine_media::audio::load_wav;
use call_engine_orchestrator::{
    AgentProfile, BusinessHours, CallerPattern, CallerRule, CallerRules, EmptyCondition,
    FullAction, Membership, QueueAction, QueueConfig, SkillMatch, Strategy,
};
use call_engine_session::{parse_network, Networks};
use serde::Deserialize;
use smol_str::SmolStr;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The prompts a queue's features play, each with the key that asks for it and where
/// that key is: position and wait announcements, the callback offer, the closed
/// announcement, what a policy that hangs up says (its own prompt, or
/// [`REMOVED_PROMPT`](crate::driver::REMOVED_PROMPT) whenever a policy can remove a
/// caller, an overflow that finds no room included), the periodic message.
fn needed_prompts(rq: &RawQueue, q: &QueueSection) -> Vec<(SmolStr, &'static str, usize)> {
    use crate::driver::{
        CALLBACK_PROMPTS, CLOSED_PROMPT, POSITION_PROMPTS, REMOVED_PROMPT, WAIT_PROMPTS,
    };
    let mut out = Vec::new();
    let mut add = |names: &[&str], k: &'static str, at: usize| {
        out.extend(names.iter().map(|n| (SmolStr::new(n), k, at)));
    };
    // Where a key is (the features below are only on when their key is written).
    fn at<T>(v: &Option<Spanned<T>>) -> usize {
        v.as_ref().map_or(0, |v| v.span().start)
    }
    if q.announce.position_every_ms > 0 {
        add(
            POSITION_PROMPTS,
            "announce_position_secs",
            at(&rq.announce_position_secs),
        );
        if q.announce.wait_time {
            add(
                WAIT_PROMPTS,
                "announce_wait_time",
                at(&rq.announce_wait_time),
            );
        }
        if q.announce.callback {
            add(CALLBACK_PROMPTS, "callback", at(&rq.callback));
        }
    }
    if q.business_hours.is_some() && q.closed_action == ClosedAction::Announce {
        match &rq.closed_action {
            Some(a) => add(&[CLOSED_PROMPT], "closed_action", a.span().start),
            None => add(&[CLOSED_PROMPT], "business_hours", at(&rq.business_hours)),
        }
    }
    let policies = [
        (
            "max_wait_secs",
            at(&rq.max_wait_secs),
            rq.max_wait_secs.is_some(),
        ),
        ("max_len", at(&rq.max_len), rq.max_len.is_some()),
        ("join_empty", at(&rq.join_empty), rq.join_empty.is_some()),
        (
            "leave_when_empty",
            at(&rq.leave_when_empty),
            rq.leave_when_empty.is_some(),
        ),
        (
            "max_wait_no_agent_secs",
            at(&rq.max_wait_no_agent_secs),
            rq.max_wait_no_agent_secs.is_some(),
        ),
    ];
    if let Some((k, pos, _)) = policies.iter().find(|p| p.2) {
        add(&[REMOVED_PROMPT], k, *pos);
    }
    let named = |a: &QueueAction| match a {
        QueueAction::Hangup {
            prompt: Some(prompt),
        } => Some(prompt.clone()),
        _ => None,
    };
    if let (Some(p), Some(a)) = (named(&q.routing.max_wait_action), &rq.max_wait_action) {
        add(&[p.as_str()], "max_wait_action", a.span().start);
    }
    let empty_policy = policies[2].2 || policies[3].2 || policies[4].2;
    if let (true, Some(p), Some(a)) = (
        empty_policy,
        named(&q.routing.empty_action),
        &rq.empty_action,
    ) {
        add(&[p.as_str()], "empty_action", a.span().start);
    }
    if let Some(p) = &rq.periodic_prompt {
        add(&[p.get_ref().as_str()], "periodic_prompt", p.span().start);
    }
    out
}

/// A configuration error: which key, on which line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (dotted path, e.g. `queue[0].strategy`), if known.
    pub key: Option<String>,
    /// 1-based line in the file, if known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, self.line) {
            (Some(k), Some(l)) => write!(f, "line {l}: `{k}`: {}", self.message),
            (Some(k), None) => write!(f, "`{k}`: {}", self.message),
            (None, Some(l)) => write!(f, "line {l}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The SIP section.
#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    /// UDP listen address.
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// SIP domain and digest realm.
    pub domain: String,
    /// SIP timer T1 in milliseconds (RFC 3261's round-trip estimate, 500 by default,
    /// 10 to 4000): retransmissions over UDP start at T1, and a transaction without an
    /// answer, or a 200 OK without its ACK, is given up after 64·T1. T2 stays 4 s. Below
    /// 100 ms the engine warns at start: a caller or phone further away than 64·T1
    /// could never complete a call.
    pub t1_ms: u32,
    /// Networks that may place calls (`calls_from`, CIDR or single addresses; default:
    /// any). An INVITE from elsewhere gets 403.
    pub calls_from: Networks,
    /// Upstreams (an SBC, an IVR) whose `X-Skills` and `X-Priority` headers are honoured
    /// (`trusted`; default: loopback only).
    pub trusted: Networks,
}

impl SipConfig {
    /// RFC 3261's T1.
    pub const DEFAULT_T1_MS: u32 = 500;
}

/// The media section.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Bound for RTP and advertised in SDP.
    pub address: IpAddr,
    /// RTP port range.
    pub rtp_ports: RangeInclusive<u16>,
}

/// Default seconds without RTP on a leg before the call is ended.
pub const DEFAULT_MEDIA_TIMEOUT_SECS: u32 = 30;

/// Where the queue prompts (8 kHz WAVs: `you-are-caller.wav`, `number-5.wav`…) are
/// found by default: the set shipped in the repository.
pub const DEFAULT_PROMPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/prompts");

/// Music on hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moh {
    /// The built-in music.
    Builtin,
    /// An 8 kHz WAV file.
    File(PathBuf),
}

/// What happens to a call arriving while its queue is closed (business hours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosedAction {
    /// Refused before answering (SIP 480 Temporarily Unavailable).
    Reject,
    /// Answered, told the queue is closed (the `closed` prompt), then hung up.
    Announce,
    /// Sent to another queue.
    Overflow(String),
}

/// One queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSection {
    /// Name (`sip:<name>@<domain>`).
    pub name: String,
    /// Music on hold.
    pub moh: Moh,
    /// Everything the orchestrator routes by: strategy, ring timeout, retry delay,
    /// wrap-up, tier, penalty and skill rules (`name` is the queue's name).
    pub routing: QueueConfig,
    /// Service-level threshold for statistics, seconds (default 20).
    pub service_level_secs: u32,
    /// Opening hours; `None`: always open.
    pub business_hours: Option<BusinessHours>,
    /// What happens to calls arriving while closed.
    pub closed_action: ClosedAction,
    /// Announcements to waiting callers (position, wait time, periodic message,
    /// callback offer).
    pub announce: Announcements,
    /// A caller who hangs up while waiting and calls back within this many seconds
    /// keeps their place (their original entry time): the call back's INVITE must come
    /// within the window, and the place is taken when its ACK proves the call is the
    /// caller's, even if that is after the window. 0: off.
    pub abandoned_resume_secs: u32,
}

impl QueueSection {
    /// A queue with every default: builtin music, always open, the orchestrator's
    /// defaults for `strategy` (15 s ring timeout, no wrap-up).
    pub fn new(name: &str, strategy: Strategy) -> Self {
        Self {
            name: name.into(),
            moh: Moh::Builtin,
            routing: QueueConfig::new(QueueId::new(name), strategy),
            service_level_secs: 20,
            business_hours: None,
            closed_action: ClosedAction::Announce,
            announce: Announcements::default(),
            abandoned_resume_secs: 0,
        }
    }
}

/// One agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSection {
    /// Id (`sip:<id>@<domain>`, digest username).
    pub id: String,
    /// Digest password.
    pub password: String,
    /// Memberships (with level, position, penalty), skills, max calls, wrap-up.
    pub profile: AgentProfile,
}

impl AgentSection {
    /// An agent taking one call at a time in `queues` (level 1, no skills).
    pub fn new(id: &str, password: &str, queues: &[&str]) -> Self {
        let mut profile = AgentProfile::new(AgentId::new(id));
        for q in queues {
            profile = profile.with_queue(QueueId::new(*q));
        }
        Self {
            id: id.into(),
            password: password.into(),
            profile,
        }
    }
}

/// A dialed number (DID) routed into a queue with its own skills and priority: e.g.
/// the Spanish line of the support queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialedNumber {
    /// The number dialed (the Request-URI user part).
    pub number: String,
    /// The queue it reaches.
    pub queue: String,
    /// Skills its calls need (on top of the queue's).
    pub skills: Vec<(String, u8)>,
    /// Priority of its calls (higher first); `None`: 0.
    pub priority: Option<i32>,
}

/// The reconciler: the periodic check that repairs agent and call states the engine
/// lost track of (lost BYEs, unreachable phones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerSection {
    /// Seconds between passes (1-3600; default 30).
    pub interval_secs: u32,
}

impl Default for ReconcilerSection {
    fn default() -> Self {
        Self { interval_secs: 30 }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// SIP.
    pub sip: SipConfig,
    /// Media.
    pub media: MediaConfig,
    /// Store URL.
    pub store_url: String,
    /// Queues.
    pub queues: Vec<QueueSection>,
    /// Agents.
    pub agents: Vec<AgentSection>,
    /// The reconciler.
    pub reconciler: ReconcilerSection,
    /// Seed of the routing's random choices (random strategies, tie-breaks): the same
    /// seed and the same events give the same decisions.
    pub routing_seed: u64,
    /// Caller rules (by caller number): block, priority (VIP), skills.
    pub caller_rules: CallerRules,
    /// Dialed numbers routed into queues with their own skills and priority.
    pub numbers: Vec<DialedNumber>,
    /// Directory of the queue prompts.
    pub prompts_dir: PathBuf,
    /// Seconds without RTP on a bridged leg (not on hold) before the call is ended.
    /// (Waiting callers are checked by the reconciler instead: phones may send no RTP
    /// while they only listen.)
    pub media_timeout_secs: u32,
    /// The control socket the command line talks to (`call-engine stats`…); `None`:
    /// no control socket.
    pub control_socket: Option<PathBuf>,
}

// --- raw, as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    sip: RawSip,
    media: RawMedia,
    store: RawStore,
    #[serde(default)]
    queue: Vec<RawQueue>,
    #[serde(default)]
    agent: Vec<RawAgent>,
    #[serde(default)]
    reconciler: Option<RawReconciler>,
    #[serde(default)]
    routing: Option<RawRouting>,
    #[serde(default)]
    caller_rule: Vec<RawCallerRule>,
    #[serde(default)]
    control: Option<RawControl>,
    #[serde(default)]
    number: Vec<RawNumber>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumber {
    dial: Spanned<String>,
    queue: Spanned<String>,
    #[serde(default)]
    skills: Option<Spanned<BTreeMap<String, i64>>>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconciler {
    #[serde(default)]
    interval_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    udp: Option<Spanned<String>>,
    tcp: Option<Spanned<String>>,
    domain: Spanned<String>,
    #[serde(default)]
    t1_ms: Option<Spanned<i64>>,
    #[serde(default)]
    calls_from: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    trusted: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    address: Spanned<String>,
    rtp_ports: Spanned<String>,
    #[serde(default)]
    prompts_dir: Option<Spanned<String>>,
    #[serde(default)]
    timeout_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: Spanned<String>,
    #[serde(default)]
    strategy: Option<Spanned<String>>,
    #[serde(default)]
    moh: Option<Spanned<String>>,
    #[serde(default)]
    ring_timeout_secs: Option<Spanned<i64>>,
    #[serde(default)]
    retry_delay_secs: Option<Spanned<i64>>,
    #[serde(default)]
    wrap_up_secs: Option<Spanned<i64>>,
    #[serde(default)]
    ring_progressively_secs: Option<Spanned<i64>>,
    #[serde(default)]
    required_skills: Option<Spanned<BTreeMap<String, i64>>>,
    #[serde(default)]
    skill_match: Option<Spanned<String>>,
    #[serde(default)]
    skill_relax: Vec<Spanned<RawSkillRelax>>,
    #[serde(default)]
    tier_rules: Vec<Spanned<RawTierRule>>,
    #[serde(default)]
    max_penalty: Option<Spanned<i64>>,
    #[serde(default)]
    penalty_rules: Vec<Spanned<RawPenaltyRule>>,
    #[serde(default)]
    service_level_secs: Option<Spanned<i64>>,
    #[serde(default)]
    business_hours: Option<Spanned<String>>,
    #[serde(default)]
    utc_offset_minutes: Option<Spanned<i64>>,
    #[serde(default)]
    closed_dates: Vec<Spanned<String>>,
    #[serde(default)]
    closed_action: Option<Spanned<String>>,
    #[serde(default)]
    max_wait_secs: Option<Spanned<i64>>,
    #[serde(default)]
    max_wait_action: Option<Spanned<String>>,
    #[serde(default)]
    join_empty: Option<Spanned<String>>,
    #[serde(default)]
    leave_when_empty: Option<Spanned<String>>,
    #[serde(default)]
    empty_action: Option<Spanned<String>>,
    #[serde(default)]
    max_wait_no_agent_secs: Option<Spanned<i64>>,
    #[serde(default)]
    max_len: Option<Spanned<i64>>,
    #[serde(default)]
    full_action: Option<Spanned<String>>,
    #[serde(default)]
    announce_position_secs: Option<Spanned<i64>>,
    #[serde(default)]
    announce_wait_time: Option<Spanned<bool>>,
    #[serde(default)]
    periodic_prompt: Option<Spanned<String>>,
    #[serde(default)]
    periodic_prompt_secs: Option<Spanned<i64>>,
    #[serde(default)]
    callback: Option<Spanned<bool>>,
    #[serde(default)]
    callback_via: Option<Spanned<String>>,
    #[serde(default)]
    abandoned_resume_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkillRelax {
    after_secs: i64,
    lower_by: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTierRule {
    after_secs: i64,
    level: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPenaltyRule {
    after_secs: i64,
    max_penalty: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: Spanned<String>,
    password: Spanned<String>,
    #[serde(default)]
    queues: Vec<Spanned<String>>,
    #[serde(default)]
    memberships: Vec<Spanned<RawMembership>>,
    #[serde(default)]
    skills: Option<Spanned<BTreeMap<String, i64>>>,
    #[serde(default)]
    max_calls: Option<Spanned<i64>>,
    #[serde(default)]
    wrap_up_secs: Option<Spanned<i64>>,
    #[serde(default)]
    reject_delay_secs: Option<Spanned<i64>>,
    #[serde(default)]
    busy_delay_secs: Option<Spanned<i64>>,
    #[serde(default)]
    no_answer_delay_secs: Option<Spanned<i64>>,
    #[serde(default)]
    max_no_answer: Option<Spanned<i64>>,
    #[serde(default)]
    status: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMembership {
    queue: String,
    #[serde(default)]
    level: Option<i64>,
    #[serde(default)]
    position: Option<i64>,
    #[serde(default)]
    penalty: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    seed: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallerRule {
    pattern: Spanned<String>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    #[serde(default)]
    skills: Option<Spanned<BTreeMap<String, i64>>>,
    #[serde(default)]
    block: bool,
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset.min(src.len()))
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1)
}

struct Ctx<'a> {
    src: &'a str,
}

impl Ctx<'_> {
    /// An integer in `range`, converted.
    fn int<T: TryFrom<i64> + PartialOrd + fmt::Display + Copy>(
        &self,
        key: impl Into<String>,
        v: &Spanned<i64>,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError> {
        T::try_from(*v.get_ref())
            .ok()
            .filter(|x| range.contains(x))
            .ok_or_else(|| {
                self.err(
                    key,
                    v,
                    format!("must be between {} and {}", range.start(), range.end()),
                )
            })
    }

    /// Skill levels (`{ english = 5 }`): names as SIP tokens, levels 1-100.
    fn skills(
        &self,
        key: &str,
        v: &Spanned<BTreeMap<String, i64>>,
    ) -> Result<Vec<(String, u8)>, ConfigError> {
        let mut out = Vec::new();
        for (name, level) in v.get_ref() {
            if !is_skill_name(name) {
                return Err(self.err(
                    format!("{key}.{name}"),
                    v,
                    "a skill name is letters, digits, - and _ (at most 64)",
                ));
            }
            let level = u8::try_from(*level)
                .ok()
                .filter(|l| (1..=100).contains(l))
                .ok_or_else(|| self.err(format!("{key}.{name}"), v, "a skill level is 1 to 100"))?;
            out.push((name.clone(), level));
        }
        Ok(out)
    }

    fn err<T>(
        &self,
        key: impl Into<String>,
        span: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            key: Some(key.into()),
            line: Some(line_of(self.src, span.span().start)),
            message: message.into(),
        }
    }
}

fn parse_port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let (a, b) = s.split_once('-')?;
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    (a <= b).then_some(a..=b)
}

fn is_skill_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_sip_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'+".contains(c))
}

impl Config {
    /// Parses and validates `src` (the contents of a file); `base` resolves relative
    /// paths (MOH files).
    pub fn parse(src: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let line = e.span().map(|s| line_of(src, s.start));
            ConfigError {
                key: None,
                line,
                message: e.message().to_string(),
            }
        })?;
        let cx = Ctx { src };

        let addr =
            |key: &str, v: &Option<Spanned<String>>| -> Result<Option<SocketAddr>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(s) => s.get_ref().parse::<SocketAddr>().map(Some).map_err(|_| {
                        cx.err(
                            key,
                            s,
                            format!("`{}` is not an address like 127.0.0.1:5060", s.get_ref()),
                        )
                    }),
                }
            };
        let udp = addr("sip.udp", &raw.sip.udp)?;
        let tcp = addr("sip.tcp", &raw.sip.tcp)?;
        if udp.is_none() && tcp.is_none() {
            return Err(cx.err(
                "sip",
                &raw.sip.domain,
                "neither `udp` nor `tcp` is set: nothing to listen on",
            ));
        }
        let domain = raw.sip.domain.get_ref().trim().to_string();
        if domain.is_empty() || domain.contains(char::is_whitespace) {
            return Err(cx.err(
                "sip.domain",
                &raw.sip.domain,
                "must be a non-empty domain name",
            ));
        }
        // At most T2 (4 s), which the RFC caps retransmission intervals at.
        let t1_ms = match &raw.sip.t1_ms {
            Some(t) => cx.int("sip.t1_ms", t, 10..=4000)?,
            None => SipConfig::DEFAULT_T1_MS,
        };
        let networks =
            |key: &str, list: &Option<Spanned<Vec<Spanned<String>>>>, default: Networks| {
                let Some(list) = list else {
                    return Ok(default);
                };
                list.get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        parse_network(n.get_ref()).map_err(|e| cx.err(format!("{key}[{i}]"), n, e))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Networks::new)
            };
        let calls_from = networks("sip.calls_from", &raw.sip.calls_from, Networks::any())?;
        if let Some(list) = raw
            .sip
            .calls_from
            .as_ref()
            .filter(|l| l.get_ref().is_empty())
        {
            return Err(cx.err(
                "sip.calls_from",
                list,
                "is empty: no call could come in (leave it out to take calls from anywhere)",
            ));
        }
        let trusted = networks("sip.trusted", &raw.sip.trusted, Networks::loopback())?;

        let address: IpAddr = raw.media.address.get_ref().parse().map_err(|_| {
            cx.err(
                "media.address",
                &raw.media.address,
                format!("`{}` is not an IP address", raw.media.address.get_ref()),
            )
        })?;
        if address.is_unspecified() {
            return Err(cx.err(
                "media.address",
                &raw.media.address,
                "is advertised in SDP, so it must be a concrete address, not 0.0.0.0",
            ));
        }
        let rtp_ports = parse_port_range(raw.media.rtp_ports.get_ref())
            .filter(|r| *r.start() > 0 && r.end() - r.start() >= 1)
            .ok_or_else(|| {
                cx.err(
                    "media.rtp_ports",
                    &raw.media.rtp_ports,
                    format!(
                        "`{}` is not a port range like \"20000-29999\" (at least two ports, from 1)",
                        raw.media.rtp_ports.get_ref()
                    ),
                )
            })?;

        let url = raw.store.url.get_ref().clone();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(cx.err(
                "store.url",
                &raw.store.url,
                format!("`{url}` is not a database URL (sqlite://path or postgres://…)"),
            ));
        }

        let mut queues = Vec::new();
        let mut names = BTreeSet::new();
        for (i, q) in raw.queue.iter().enumerate() {
            let name = q.name.get_ref().clone();
            if !is_sip_token(&name) {
                return Err(cx.err(
                    format!("queue[{i}].name"),
                    &q.name,
                    format!("`{name}` must be a SIP user part (letters, digits, -_.)"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(cx.err(
                    format!("queue[{i}].name"),
                    &q.name,
                    format!("queue `{name}` is defined twice"),
                ));
            }
            let strategy = match &q.strategy {
                None => Strategy::LongestIdleAgent,
                Some(s) => s
                    .get_ref()
                    .parse::<Strategy>()
                    .map_err(|e| cx.err(format!("queue[{i}].strategy"), s, e.to_string()))?,
            };
            let moh = match &q.moh {
                None => Moh::Builtin,
                Some(m) if m.get_ref() == "builtin" => Moh::Builtin,
                Some(m) => {
                    let p = base.join(m.get_ref());
                    if !p.is_file() {
                        return Err(cx.err(
                            format!("queue[{i}].moh"),
                            m,
                            format!(
                                "`{}` is neither \"builtin\" nor an existing WAV file",
                                p.display()
                            ),
                        ));
                    }
                    // Read now: a file the media adapter cannot play would leave every
                    // waiting caller in silence.
                    if let Err(e) = load_wav(&p) {
                        return Err(cx.err(format!("queue[{i}].moh"), m, e.to_string()));
                    }
                    Moh::File(p)
                }
            };
            let key = |k: &str| format!("queue[{i}].{k}");
            let secs_ms = |k: &str,
                           v: &Option<Spanned<i64>>,
                           default: u32,
                           range: RangeInclusive<u32>|
             -> Result<u64, ConfigError> {
                Ok(u64::from(match v {
                    None => default,
                    Some(t) => cx.int(key(k), t, range)?,
                }) * 1000)
            };
            let mut routing = QueueConfig::new(QueueId::new(&name), strategy)
                .with_ring_timeout(secs_ms(
                    "ring_timeout_secs",
                    &q.ring_timeout_secs,
                    15,
                    1..=600,
                )?)
                .with_retry_delay(secs_ms(
                    "retry_delay_secs",
                    &q.retry_delay_secs,
                    2,
                    0..=600,
                )?)
                .with_wrap_up_ms(secs_ms("wrap_up_secs", &q.wrap_up_secs, 0, 0..=3600)?)
                .with_ring_progressively_delay(secs_ms(
                    "ring_progressively_secs",
                    &q.ring_progressively_secs,
                    5,
                    1..=600,
                )?);
            if let Some(sk) = &q.required_skills {
                for (skill, level) in cx.skills(&key("required_skills"), sk)? {
                    routing = routing.with_required_skill(skill, level);
                }
            }
            if let Some(m) = &q.skill_match {
                routing = routing.with_skill_match(match m.get_ref().as_str() {
                    "best-match" => SkillMatch::BestMatch,
                    "qualified" => SkillMatch::Qualified,
                    other => {
                        return Err(cx.err(
                            key("skill_match"),
                            m,
                            format!("`{other}` is neither \"best-match\" nor \"qualified\""),
                        ))
                    }
                });
            }
            for (j, r) in q.skill_relax.iter().enumerate() {
                let k = format!("queue[{i}].skill_relax[{j}]");
                let raw = r.get_ref();
                let after = u32::try_from(raw.after_secs).ok().filter(|a| *a <= 86_400);
                let by = u8::try_from(raw.lower_by)
                    .ok()
                    .filter(|b| (1..=100).contains(b));
                match (after, by) {
                    (Some(a), Some(b)) => {
                        routing = routing.with_skill_relax(u64::from(a) * 1000, b)
                    }
                    _ => return Err(cx.err(k, r, "after_secs is 0-86400 and lower_by 1-100")),
                }
            }
            for (j, r) in q.tier_rules.iter().enumerate() {
                let k = format!("queue[{i}].tier_rules[{j}]");
                let raw = r.get_ref();
                let after = u32::try_from(raw.after_secs).ok().filter(|a| *a <= 86_400);
                let level = u8::try_from(raw.level)
                    .ok()
                    .filter(|l| (1..=100).contains(l));
                match (after, level) {
                    (Some(a), Some(l)) => routing = routing.with_tier_rule(u64::from(a) * 1000, l),
                    _ => return Err(cx.err(k, r, "after_secs is 0-86400 and level 1-100")),
                }
            }
            if let Some(m) = &q.max_penalty {
                routing = routing.with_max_penalty(cx.int(key("max_penalty"), m, 0..=1_000_000)?);
            }
            for (j, r) in q.penalty_rules.iter().enumerate() {
                let k = format!("queue[{i}].penalty_rules[{j}]");
                let raw = r.get_ref();
                let after = u32::try_from(raw.after_secs).ok().filter(|a| *a <= 86_400);
                let max = u32::try_from(raw.max_penalty)
                    .ok()
                    .filter(|m| *m <= 1_000_000);
                match (after, max) {
                    (Some(a), Some(m)) => {
                        routing = routing.with_penalty_rule(u64::from(a) * 1000, m)
                    }
                    _ => {
                        return Err(cx.err(k, r, "after_secs is 0-86400 and max_penalty 0-1000000"))
                    }
                }
            }
            let action = |k: &str, v: &Spanned<String>| -> Result<QueueAction, ConfigError> {
                let text = v.get_ref().trim();
                if text == "hangup" {
                    return Ok(QueueAction::Hangup { prompt: None });
                }
                if let Some(p) = text.strip_prefix("hangup:").map(str::trim) {
                    if is_skill_name(p) {
                        return Ok(QueueAction::Hangup {
                            prompt: Some(SmolStr::new(p)),
                        });
                    }
                }
                if let Some(t) = text.strip_prefix("overflow:").map(str::trim) {
                    if !t.is_empty() {
                        return Ok(QueueAction::Overflow {
                            queue: QueueId::new(t),
                        });
                    }
                }
                Err(cx.err(
                    key(k),
                    v,
                    format!(
                        "`{text}` is not \"hangup\", \"hangup:<prompt>\" or \"overflow:<queue>\""
                    ),
                ))
            };
            let condition = |k: &str, v: &Spanned<String>| -> Result<EmptyCondition, ConfigError> {
                match v.get_ref().trim() {
                    "no-members" => Ok(EmptyCondition::NoMembers),
                    "none-available" => Ok(EmptyCondition::NoneAvailable),
                    other => Err(cx.err(
                        key(k),
                        v,
                        format!("`{other}` is not \"no-members\" or \"none-available\""),
                    )),
                }
            };
            if let Some(m) = &q.max_wait_secs {
                let secs: u32 = cx.int(key("max_wait_secs"), m, 1..=86_400)?;
                let act = match &q.max_wait_action {
                    None => QueueAction::Hangup { prompt: None },
                    Some(a) => action("max_wait_action", a)?,
                };
                routing = routing.with_max_wait(u64::from(secs) * 1000, act);
            } else if let Some(a) = &q.max_wait_action {
                return Err(cx.err(
                    key("max_wait_action"),
                    a,
                    "only means something with `max_wait_secs`",
                ));
            }
            if let Some(c) = &q.join_empty {
                routing = routing.with_join_empty(condition("join_empty", c)?);
            }
            if let Some(c) = &q.leave_when_empty {
                routing = routing.with_leave_when_empty(condition("leave_when_empty", c)?);
            }
            if let Some(a) = &q.empty_action {
                routing = routing.with_empty_action(action("empty_action", a)?);
            }
            if let Some(m) = &q.max_wait_no_agent_secs {
                let secs: u32 = cx.int(key("max_wait_no_agent_secs"), m, 1..=86_400)?;
                routing = routing.with_max_wait_no_agent(u64::from(secs) * 1000);
            }
            if let Some(m) = &q.max_len {
                let n: u32 = cx.int(key("max_len"), m, 1..=100_000)?;
                let full = match &q.full_action {
                    None => FullAction::Reject,
                    Some(a) => match a.get_ref().trim() {
                        "reject" => FullAction::Reject,
                        other => match other.strip_prefix("overflow:").map(str::trim) {
                            Some(t) if !t.is_empty() => FullAction::Overflow {
                                queue: QueueId::new(t),
                            },
                            _ => {
                                return Err(cx.err(
                                    key("full_action"),
                                    a,
                                    format!("`{other}` is not \"reject\" or \"overflow:<queue>\""),
                                ))
                            }
                        },
                    },
                };
                routing = routing.with_max_len(n, full);
            } else if let Some(a) = &q.full_action {
                return Err(cx.err(key("full_action"), a, "only means something with `max_len`"));
            }
            let on = |v: &Option<Spanned<bool>>| v.as_ref().is_some_and(|b| *b.get_ref());
            let mut announce = Announcements {
                wait_time: on(&q.announce_wait_time),
                callback: on(&q.callback),
                ..Announcements::default()
            };
            if let Some(t) = &q.announce_position_secs {
                let secs: u32 = cx.int(key("announce_position_secs"), t, 0..=3600)?;
                announce.position_every_ms = u64::from(secs) * 1000;
            }
            // Both are said within the position announcement: without it, never.
            if announce.position_every_ms == 0 {
                for (k, v) in [
                    ("announce_wait_time", &q.announce_wait_time),
                    ("callback", &q.callback),
                ] {
                    if let Some(b) = v.as_ref().filter(|b| *b.get_ref()) {
                        return Err(cx.err(
                            key(k),
                            b,
                            "is said within the position announcement: set `announce_position_secs` too",
                        ));
                    }
                }
            }
            if let Some(p) = &q.periodic_prompt {
                if !is_skill_name(p.get_ref()) {
                    return Err(cx.err(
                        key("periodic_prompt"),
                        p,
                        "a prompt name is letters, digits, - and _ (a WAV in the prompts directory)",
                    ));
                }
                announce.periodic = Some(SmolStr::new(p.get_ref()));
                announce.periodic_every_ms = 30_000;
            }
            if let Some(t) = &q.periodic_prompt_secs {
                let secs: u32 = cx.int(key("periodic_prompt_secs"), t, 5..=3600)?;
                announce.periodic_every_ms = u64::from(secs) * 1000;
            }
            if let Some(v) = &q.callback_via {
                let text = v.get_ref().trim();
                let ok = !text.is_empty()
                    && !text.contains(char::is_whitespace)
                    && !text.contains('@')
                    && !text.starts_with("sip:");
                if !ok {
                    return Err(cx.err(
                        key("callback_via"),
                        v,
                        "is a host[:port] (the gateway callbacks are placed through)",
                    ));
                }
                announce.callback_via = Some(SmolStr::new(text));
            }
            let abandoned_resume_secs = match &q.abandoned_resume_secs {
                None => 0,
                Some(t) => cx.int(key("abandoned_resume_secs"), t, 0..=3600)?,
            };
            let service_level_secs = match &q.service_level_secs {
                None => 20,
                Some(t) => cx.int(key("service_level_secs"), t, 1..=3600)?,
            };
            let business_hours = match &q.business_hours {
                None => None,
                Some(h) => {
                    let mut bh = BusinessHours::parse(h.get_ref())
                        .map_err(|e| cx.err(key("business_hours"), h, e.to_string()))?;
                    if let Some(o) = &q.utc_offset_minutes {
                        let minutes = cx.int(key("utc_offset_minutes"), o, -1080..=1080)?;
                        bh = bh
                            .with_utc_offset(minutes)
                            .map_err(|e| cx.err(key("utc_offset_minutes"), o, e.to_string()))?;
                    }
                    for (j, d) in q.closed_dates.iter().enumerate() {
                        bh = bh.with_closed_date(d.get_ref()).map_err(|e| {
                            cx.err(format!("queue[{i}].closed_dates[{j}]"), d, e.to_string())
                        })?;
                    }
                    Some(bh)
                }
            };
            if business_hours.is_none() {
                let stray = q
                    .utc_offset_minutes
                    .as_ref()
                    .map(|o| ("utc_offset_minutes", o.span().start))
                    .or_else(|| {
                        q.closed_dates
                            .first()
                            .map(|d| ("closed_dates", d.span().start))
                    })
                    .or_else(|| {
                        q.closed_action
                            .as_ref()
                            .map(|a| ("closed_action", a.span().start))
                    });
                if let Some((k, at)) = stray {
                    return Err(ConfigError {
                        key: Some(key(k)),
                        line: Some(line_of(src, at)),
                        message: "only means something with `business_hours`".into(),
                    });
                }
            }
            let closed_action = match &q.closed_action {
                None => ClosedAction::Announce,
                Some(a) => match a.get_ref().as_str() {
                    "reject" => ClosedAction::Reject,
                    "announce" => ClosedAction::Announce,
                    other => match other.strip_prefix("overflow:") {
                        Some(target) if !target.trim().is_empty() => {
                            ClosedAction::Overflow(target.trim().to_string())
                        }
                        _ => {
                            return Err(cx.err(
                                key("closed_action"),
                                a,
                                format!(
                                "`{other}` is not \"reject\", \"announce\" or \"overflow:<queue>\""
                            ),
                            ))
                        }
                    },
                },
            };
            queues.push(QueueSection {
                name,
                moh,
                routing,
                service_level_secs,
                business_hours,
                closed_action,
                announce,
                abandoned_resume_secs,
            });
        }
        // Overflow targets must exist.
        for (i, q) in raw.queue.iter().enumerate() {
            let targets = [
                ("max_wait_action", &q.max_wait_action),
                ("empty_action", &q.empty_action),
                ("full_action", &q.full_action),
            ];
            for (k, v) in targets {
                if let Some(v) = v {
                    if let Some(t) = v.get_ref().trim().strip_prefix("overflow:") {
                        if !names.contains(t.trim()) {
                            return Err(cx.err(
                                format!("queue[{i}].{k}"),
                                v,
                                format!("no queue named `{}`", t.trim()),
                            ));
                        }
                    }
                }
            }
            if let (Some(a), ClosedAction::Overflow(target)) =
                (&q.closed_action, &queues[i].closed_action)
            {
                if !names.contains(target) {
                    return Err(cx.err(
                        format!("queue[{i}].closed_action"),
                        a,
                        format!("no queue named `{target}`"),
                    ));
                }
            }
        }

        let mut agents = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, a) in raw.agent.iter().enumerate() {
            let id = a.id.get_ref().clone();
            if !is_sip_token(&id) {
                return Err(cx.err(
                    format!("agent[{i}].id"),
                    &a.id,
                    format!("`{id}` must be a SIP user part (letters, digits, -_.)"),
                ));
            }
            if names.contains(&id) {
                return Err(cx.err(
                    format!("agent[{i}].id"),
                    &a.id,
                    format!("`{id}` is also a queue name"),
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(cx.err(
                    format!("agent[{i}].id"),
                    &a.id,
                    format!("agent `{id}` is defined twice"),
                ));
            }
            if a.password.get_ref().is_empty() {
                return Err(cx.err(
                    format!("agent[{i}].password"),
                    &a.password,
                    "must not be empty",
                ));
            }
            let mut profile = AgentProfile::new(AgentId::new(&id));
            let mut seen = BTreeSet::new();
            for (j, q) in a.queues.iter().enumerate() {
                if !names.contains(q.get_ref()) {
                    return Err(cx.err(
                        format!("agent[{i}].queues[{j}]"),
                        q,
                        format!("no queue named `{}`", q.get_ref()),
                    ));
                }
                if seen.insert(q.get_ref().clone()) {
                    profile = profile.with_queue(QueueId::new(q.get_ref()));
                }
            }
            for (j, m) in a.memberships.iter().enumerate() {
                let k = format!("agent[{i}].memberships[{j}]");
                let raw = m.get_ref();
                if !names.contains(&raw.queue) {
                    return Err(cx.err(k, m, format!("no queue named `{}`", raw.queue)));
                }
                if !seen.insert(raw.queue.clone()) {
                    return Err(cx.err(
                        k,
                        m,
                        format!("agent is already a member of `{}`", raw.queue),
                    ));
                }
                let level = u8::try_from(raw.level.unwrap_or(1))
                    .ok()
                    .filter(|l| (1..=100).contains(l));
                let position = u32::try_from(raw.position.unwrap_or(0)).ok();
                let penalty = u32::try_from(raw.penalty.unwrap_or(0))
                    .ok()
                    .filter(|p| *p <= 1_000_000);
                match (level, position, penalty) {
                    (Some(l), Some(pos), Some(pen)) => {
                        profile = profile.with_membership(
                            Membership::new(QueueId::new(&raw.queue))
                                .with_level(l)
                                .with_position(pos)
                                .with_penalty(pen),
                        )
                    }
                    _ => {
                        return Err(cx.err(
                            k,
                            m,
                            "level is 1-100, position 0 or more, penalty 0-1000000",
                        ))
                    }
                }
            }
            if let Some(sk) = &a.skills {
                for (skill, level) in cx.skills(&format!("agent[{i}].skills"), sk)? {
                    profile = profile.with_skill(skill, level);
                }
            }
            if let Some(m) = &a.max_calls {
                profile =
                    profile.with_max_calls(cx.int(format!("agent[{i}].max_calls"), m, 1..=100)?);
            }
            if let Some(w) = &a.wrap_up_secs {
                let secs: u32 = cx.int(format!("agent[{i}].wrap_up_secs"), w, 0..=3600)?;
                profile = profile.with_wrap_up_ms(u64::from(secs) * 1000);
            }
            let delay = |k: &str, v: &Option<Spanned<i64>>| -> Result<u64, ConfigError> {
                Ok(match v {
                    None => 0,
                    Some(t) => {
                        u64::from(cx.int::<u32>(format!("agent[{i}].{k}"), t, 0..=3600)?) * 1000
                    }
                })
            };
            profile = profile
                .with_reject_delay_ms(delay("reject_delay_secs", &a.reject_delay_secs)?)
                .with_busy_delay_ms(delay("busy_delay_secs", &a.busy_delay_secs)?)
                .with_no_answer_delay_ms(delay("no_answer_delay_secs", &a.no_answer_delay_secs)?);
            if let Some(m) = &a.max_no_answer {
                profile = profile.with_max_no_answer(cx.int(
                    format!("agent[{i}].max_no_answer"),
                    m,
                    0..=1000,
                )?);
            }
            if let Some(st) = &a.status {
                let status = parse_status(st.get_ref())
                    .map_err(|e| cx.err(format!("agent[{i}].status"), st, e))?;
                profile = profile.with_status(status);
            }
            agents.push(AgentSection {
                id,
                password: a.password.get_ref().clone(),
                profile,
            });
        }

        let routing_seed = match raw.routing.as_ref().and_then(|r| r.seed.as_ref()) {
            None => 0,
            Some(v) => cx.int("routing.seed", v, 0..=i64::MAX)? as u64,
        };
        let mut rules = Vec::new();
        for (i, r) in raw.caller_rule.iter().enumerate() {
            let pattern = CallerPattern::parse(r.pattern.get_ref()).map_err(|e| {
                cx.err(
                    format!("caller_rule[{i}].pattern"),
                    &r.pattern,
                    e.to_string(),
                )
            })?;
            let mut rule = CallerRule::new(pattern);
            if let Some(p) = &r.priority {
                rule = rule.with_priority(cx.int(
                    format!("caller_rule[{i}].priority"),
                    p,
                    -1000..=1000,
                )?);
            }
            if let Some(sk) = &r.skills {
                for (skill, level) in cx.skills(&format!("caller_rule[{i}].skills"), sk)? {
                    rule = rule.with_skill(skill, level);
                }
            }
            if r.block {
                rule = rule.blocking();
            }
            rules.push(rule);
        }

        let mut reconciler = ReconcilerSection::default();
        if let Some(t) = raw
            .reconciler
            .as_ref()
            .and_then(|r| r.interval_secs.as_ref())
        {
            reconciler.interval_secs = cx.int("reconciler.interval_secs", t, 1..=3600)?;
        }

        let mut numbers = Vec::new();
        let mut dialed = BTreeSet::new();
        for (i, n) in raw.number.iter().enumerate() {
            let number = n.dial.get_ref().trim().to_string();
            if !is_sip_token(&number) || names.contains(&number) || ids.contains(&number) {
                return Err(cx.err(
                    format!("number[{i}].dial"),
                    &n.dial,
                    format!("`{number}` must be a SIP user part that is not a queue or agent"),
                ));
            }
            if !dialed.insert(number.clone()) {
                return Err(cx.err(
                    format!("number[{i}].dial"),
                    &n.dial,
                    format!("number `{number}` is defined twice"),
                ));
            }
            if !names.contains(n.queue.get_ref()) {
                return Err(cx.err(
                    format!("number[{i}].queue"),
                    &n.queue,
                    format!("no queue named `{}`", n.queue.get_ref()),
                ));
            }
            let skills = match &n.skills {
                None => Vec::new(),
                Some(sk) => cx.skills(&format!("number[{i}].skills"), sk)?,
            };
            let priority = match &n.priority {
                None => None,
                Some(p) => Some(cx.int(format!("number[{i}].priority"), p, -1000..=1000)?),
            };
            numbers.push(DialedNumber {
                number,
                queue: n.queue.get_ref().clone(),
                skills,
                priority,
            });
        }
        let prompts_dir = match &raw.media.prompts_dir {
            None => PathBuf::from(DEFAULT_PROMPTS_DIR),
            Some(d) => {
                let p = base.join(d.get_ref());
                if !p.is_dir() {
                    return Err(cx.err(
                        "media.prompts_dir",
                        d,
                        format!("`{}` is not a directory", p.display()),
                    ));
                }
                p
            }
        };
        // Every prompt the queues' features play is read now, in the directory used:
        // one missing or in the wrong format would be silence in the middle of an
        // announcement. The error names the feature that needs it.
        for (i, (rq, q)) in raw.queue.iter().zip(&queues).enumerate() {
            for (name, k, at) in needed_prompts(rq, q) {
                let wav = prompts_dir.join(format!("{name}.wav"));
                if let Err(e) = load_wav(&wav) {
                    let hint = if raw.media.prompts_dir.is_none() {
                        " (set `media.prompts_dir` to a directory holding it)"
                    } else {
                        ""
                    };
                    return Err(ConfigError {
                        key: Some(format!("queue[{i}].{k}")),
                        line: Some(line_of(src, at)),
                        message: format!("needs the prompt `{name}`: {e}{hint}"),
                    });
                }
            }
        }
        let media_timeout_secs = match &raw.media.timeout_secs {
            None => DEFAULT_MEDIA_TIMEOUT_SECS,
            Some(t) => cx.int("media.timeout_secs", t, 1..=3600)?,
        };
        let control_socket = match &raw.control {
            None => None,
            Some(c) if c.socket.get_ref().trim().is_empty() => {
                return Err(cx.err("control.socket", &c.socket, "must be a path"))
            }
            Some(c) => Some(base.join(c.socket.get_ref())),
        };

        Ok(Config {
            sip: SipConfig {
                udp,
                tcp,
                domain,
                t1_ms,
                calls_from,
                trusted,
            },
            media: MediaConfig { address, rtp_ports },
            store_url: url,
            queues,
            agents,
            reconciler,
            routing_seed,
            caller_rules: CallerRules::new(rules),
            numbers,
            prompts_dir,
            media_timeout_secs,
            control_socket,
        })
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: None,
            line: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::parse(&src, base)
    }

    /// The embedded demo configuration: loopback, SQLite under `./data`, a `support` queue
    /// and two demo agents.
    pub fn demo() -> Config {
        // The demo text is part of the program: parsing it cannot fail (tested).
        match Config::parse(DEMO, Path::new(".")) {
            Ok(c) => c,
            Err(e) => unreachable!("the embedded demo configuration is invalid: {e}"),
        }
    }
}

/// The embedded demo configuration, as TOML (printed by `call-engine serve` without
/// `--config`, so users can copy it).
pub const DEMO: &str = r#"[sip]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"
domain = "call-engine.local"

[media]
address = "127.0.0.1"
rtp_ports = "20000-20999"

[store]
url = "sqlite://data/call-engine.db"

[control]
socket = "data/call-engine.sock"

[[queue]]
name = "support"
strategy = "longest-idle-agent"
moh = "builtin"
ring_timeout_secs = 15

[[agent]]
id = "alice"
password = "alice-secret"
queues = ["support"]

[[agent]]
id = "bob"
password = "bob-secret"
queues = ["support"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("."))
    }

    #[test]
    fn demo_is_valid() {
        let c = Config::demo();
        assert_eq!(c.queues.len(), 1);
        assert_eq!(c.agents.len(), 2);
        assert_eq!(c.queues[0].routing.strategy, Strategy::LongestIdleAgent);
        assert_eq!(c.media.rtp_ports, 20000..=20999);
    }

    fn expect_err(src: &str, key: &str, line: usize) {
        let e = parse(src).expect_err("invalid");
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.to_string().contains(key), "{e}");
        assert!(e.to_string().contains(&format!("line {line}")), "{e}");
    }

    #[test]
    fn the_default_t1_is_the_session_adapters() {
        assert_eq!(
            std::time::Duration::from_millis(u64::from(SipConfig::DEFAULT_T1_MS)),
            call_engine_session::SipTimers::default().t1
        );
    }

    #[test]
    fn sip_t1_is_checked_and_optional() {
        assert_eq!(parse(DEMO).unwrap().sip.t1_ms, 500);
        let with = DEMO.replacen("[sip]\n", "[sip]\nt1_ms = 250\n", 1);
        assert_ne!(with, DEMO, "the demo config has a [sip] section");
        assert_eq!(parse(&with).unwrap().sip.t1_ms, 250);
        let line = DEMO
            .lines()
            .position(|l| l.trim() == "[sip]")
            .map(|i| i + 2)
            .unwrap();
        for bad in ["0", "9", "4001", "-5"] {
            let src = DEMO.replacen("[sip]\n", &format!("[sip]\nt1_ms = {bad}\n"), 1);
            expect_err(&src, "sip.t1_ms", line);
        }
    }

    /// A scratch directory for files a config names.
    fn scratch(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("call-engine-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The line of the first line of `src` that starts with `start`, 1-based.
    fn line_of_key(src: &str, start: &str) -> usize {
        src.lines().position(|l| l.starts_with(start)).unwrap() + 1
    }

    #[test]
    fn audio_files_are_read_at_start() {
        let dir = scratch("audio");
        // Music on hold that is not an 8 kHz mono WAV: the key, its line and why.
        let stereo = dir.join("stereo.wav");
        let mut wav = call_engine_media::audio::wav_bytes(&[0; 800]);
        wav[22] = 2; // channels
        std::fs::write(&stereo, &wav).unwrap();
        let text = dir.join("text.wav");
        std::fs::write(&text, "not audio").unwrap();
        let good = dir.join("good.wav");
        std::fs::write(&good, call_engine_media::audio::wav_bytes(&[0; 800])).unwrap();
        let with_moh = |file: &Path| {
            DEMO.replacen(
                "moh = \"builtin\"",
                &format!("moh = \"{}\"", file.display()),
                1,
            )
        };
        for (file, why) in [(&stereo, "channels"), (&text, "not a wav")] {
            let src = with_moh(file);
            let e = parse(&src).expect_err("unplayable music");
            assert_eq!(e.key.as_deref(), Some("queue[0].moh"), "{e}");
            assert_eq!(e.line, Some(line_of_key(&src, "moh =")), "{e}");
            assert!(e.message.to_lowercase().contains(why), "{e}");
        }
        let src = with_moh(&good);
        assert_eq!(parse(&src).unwrap().queues[0].moh, Moh::File(good.clone()));

        // A prompts directory holds what the queues' features play: none here…
        let prompts = dir.join("prompts");
        std::fs::create_dir_all(&prompts).unwrap();
        let with_dir = DEMO.replacen(
            "[media]\n",
            &format!("[media]\nprompts_dir = \"{}\"\n", prompts.display()),
            1,
        );
        assert_eq!(parse(&with_dir).unwrap().prompts_dir, prompts);
        // …the position announcement's prompts, once it is on: the error names the key
        // that needs the missing one.
        for p in crate::driver::POSITION_PROMPTS
            .iter()
            .filter(|p| **p != "number-7")
        {
            std::fs::copy(&good, prompts.join(format!("{p}.wav"))).unwrap();
        }
        let announcing =
            with_dir.replacen("[[queue]]\n", "[[queue]]\nannounce_position_secs = 30\n", 1);
        let e = parse(&announcing).expect_err("a prompt is missing");
        assert_eq!(
            e.key.as_deref(),
            Some("queue[0].announce_position_secs"),
            "{e}"
        );
        assert_eq!(
            e.line,
            Some(line_of_key(&announcing, "announce_position_secs =")),
            "{e}"
        );
        assert!(e.message.contains("`number-7`"), "{e}");
        std::fs::copy(&good, prompts.join("number-7.wav")).unwrap();
        assert!(parse(&announcing).is_ok());

        // A policy that hangs up tells the caller why: its prompt is needed too.
        let hanging_up = with_dir.replacen(
            "[[queue]]\n",
            "[[queue]]\nmax_wait_secs = 60\nmax_wait_action = \"hangup:sorry\"\n",
            1,
        );
        // First the one any policy that removes callers may say…
        let e = parse(&hanging_up).expect_err("no such prompt");
        assert_eq!(e.key.as_deref(), Some("queue[0].max_wait_secs"), "{e}");
        assert!(e.message.contains("`no-agents`"), "{e}");
        std::fs::copy(&good, prompts.join("no-agents.wav")).unwrap();
        // …then the action's own.
        let e = parse(&hanging_up).expect_err("no such prompt");
        assert_eq!(e.key.as_deref(), Some("queue[0].max_wait_action"), "{e}");
        assert!(e.message.contains("`sorry`"), "{e}");

        // A queue's periodic prompt must be there too.
        let periodic = with_dir.replacen(
            "[[queue]]\n",
            "[[queue]]\nperiodic_prompt = \"thank-you-for-holding\"\n",
            1,
        );
        let e = parse(&periodic).expect_err("no such prompt");
        assert_eq!(e.key.as_deref(), Some("queue[0].periodic_prompt"), "{e}");
        assert_eq!(
            e.line,
            Some(line_of_key(&periodic, "periodic_prompt =")),
            "{e}"
        );
        std::fs::copy(&good, prompts.join("thank-you-for-holding.wav")).unwrap();
        assert!(parse(&periodic).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sip_networks_are_checked_and_optional() {
        let c = parse(DEMO).unwrap();
        assert_eq!(c.sip.calls_from, Networks::any());
        assert_eq!(c.sip.trusted, Networks::loopback());
        let with = DEMO.replacen(
            "[sip]\n",
            "[sip]\ncalls_from = [\"192.0.2.0/24\", \"2001:db8::1\"]\ntrusted = []\n",
            1,
        );
        let c = parse(&with).unwrap();
        assert!(c.sip.calls_from.contains("192.0.2.77".parse().unwrap()));
        assert!(c.sip.calls_from.contains("2001:db8::1".parse().unwrap()));
        assert!(!c.sip.calls_from.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(c.sip.trusted, Networks::none());
        let line = DEMO
            .lines()
            .position(|l| l.trim() == "[sip]")
            .map(|i| i + 3)
            .unwrap();
        let none = DEMO.replacen("[sip]\n", "[sip]\ncalls_from = []\n", 1);
        expect_err(&none, "sip.calls_from", line - 1);
        for bad in ["10.0.0.0/33", "example.com", "10.0.0", "10.1.2.3/8"] {
            let src = DEMO.replacen(
                "[sip]\n",
                &format!("[sip]\ncalls_from = [\"10.0.0.0/8\"]\ntrusted = [\n  \"127.0.0.1\",\n  \"{bad}\"]\n"),
                1,
            );
            let e = parse(&src).expect_err("invalid");
            assert_eq!(e.key.as_deref(), Some("sip.trusted[1]"), "{e}");
            assert_eq!(e.line, Some(line + 2), "{e}");
            assert!(e.message.contains(bad), "{e}");
        }
    }

    #[test]
    fn reconciler_interval_is_checked_and_optional() {
        assert_eq!(parse(DEMO).unwrap().reconciler.interval_secs, 30);
        let with = format!("{DEMO}\n[reconciler]\ninterval_secs = 5\n");
        assert_eq!(parse(&with).unwrap().reconciler.interval_secs, 5);
        let lines = DEMO.lines().count();
        let bad = format!("{DEMO}\n[reconciler]\ninterval_secs = 0\n");
        expect_err(&bad, "reconciler.interval_secs", lines + 3);
        let bad = format!("{DEMO}\n[reconciler]\ninterval = 5\n");
        let e = parse(&bad).unwrap_err();
        assert!(e.message.contains("interval"), "{e}");
    }

    #[test]
    fn every_bad_value_names_key_and_line() {
        let bad = |from: &str, to: &str| DEMO.replacen(from, to, 1);
        expect_err(
            &bad("udp = \"127.0.0.1:5060\"", "udp = \"localhost\""),
            "sip.udp",
            2,
        );
        expect_err(
            &bad("tcp = \"127.0.0.1:5060\"", "tcp = \"1.2.3.4\""),
            "sip.tcp",
            3,
        );
        expect_err(
            &bad("address = \"127.0.0.1\"", "address = \"0.0.0.0\""),
            "media.address",
            7,
        );
        expect_err(&bad("20000-20999", "30000-20000"), "media.rtp_ports", 8);
        expect_err(
            &bad("sqlite://data/call-engine.db", "mysql://x"),
            "store.url",
            11,
        );
        expect_err(
            &bad("longest-idle-agent", "fastest"),
            "queue[0].strategy",
            18,
        );
        expect_err(
            &bad("moh = \"builtin\"", "moh = \"no/such.wav\""),
            "queue[0].moh",
            19,
        );
        expect_err(
            &bad("ring_timeout_secs = 15", "ring_timeout_secs = 0"),
            "queue[0].ring_timeout_secs",
            20,
        );
        expect_err(
            &bad("queues = [\"support\"]", "queues = [\"sales\"]"),
            "agent[0].queues[0]",
            25,
        );
        expect_err(&bad("id = \"bob\"", "id = \"alice\""), "agent[1].id", 28);
        expect_err(
            &bad("password = \"bob-secret\"", "password = \"\""),
            "agent[1].password",
            29,
        );
    }

    #[test]
    fn wrap_up_secs_is_checked_and_optional() {
        let with = |v: &str| {
            DEMO.replacen(
                "ring_timeout_secs = 15",
                &format!("ring_timeout_secs = 15\nwrap_up_secs = {v}"),
                1,
            )
        };
        assert_eq!(
            parse(&with("0")).expect("valid").queues[0]
                .routing
                .wrap_up_ms,
            0
        );
        assert_eq!(
            parse(&with("30")).expect("valid").queues[0]
                .routing
                .wrap_up_ms,
            30_000
        );
        assert_eq!(
            parse(&with("3600")).expect("valid").queues[0]
                .routing
                .wrap_up_ms,
            3_600_000
        );
        expect_err(&with("-1"), "queue[0].wrap_up_secs", 21);
        expect_err(&with("3601"), "queue[0].wrap_up_secs", 21);
        let e = parse(&with("\"2\"")).expect_err("not a number");
        assert_eq!(e.line, Some(21), "{e}");
    }

    #[test]
    fn syntax_and_unknown_keys_report_the_line() {
        let e = parse(&DEMO.replacen("[media]", "[media]\nbogus = 1", 1)).expect_err("unknown key");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = parse("[sip]\nudp = \n").expect_err("syntax");
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("[sip]\ndomain = \"x\"\n").expect_err("missing media");
        assert!(e.message.contains("media"), "{e}");
    }

    #[test]
    fn defaults_and_one_listener_is_enough() {
        let src = "[sip]\ntcp = \"127.0.0.1:5070\"\ndomain = \"d\"\n[media]\naddress = \"127.0.0.1\"\nrtp_ports = \"30000-30010\"\n[store]\nurl = \"sqlite::memory:\"\n[[queue]]\nname = \"q\"\n";
        let c = parse(src).expect("valid");
        assert_eq!(c.sip.udp, None);
        assert_eq!(c.queues[0].routing.ring_timeout_ms, 15_000);
        assert_eq!(c.queues[0].routing.wrap_up_ms, 0);
        assert_eq!(c.control_socket, None);
        assert_eq!(c.routing_seed, 0);
        assert_eq!(c.queues[0].moh, Moh::Builtin);
        let e = parse(&src.replace("tcp = \"127.0.0.1:5070\"\n", "")).expect_err("no listener");
        assert_eq!(e.key.as_deref(), Some("sip"));
    }

    const FULL: &str = r#"[sip]
udp = "127.0.0.1:5060"
domain = "d"
[media]
address = "127.0.0.1"
rtp_ports = "30000-30010"
timeout_secs = 12
[store]
url = "sqlite::memory:"
[routing]
seed = 7
[control]
socket = "run/engine.sock"
[[queue]]
name = "support"
strategy = "ring-progressively"
retry_delay_secs = 3
ring_progressively_secs = 4
required_skills = { english = 3 }
skill_match = "qualified"
skill_relax = [{ after_secs = 30, lower_by = 1 }]
tier_rules = [{ after_secs = 20, level = 2 }]
max_penalty = 1
penalty_rules = [{ after_secs = 60, max_penalty = 5 }]
service_level_secs = 30
business_hours = "mon-fri 08:00-18:00"
utc_offset_minutes = 60
closed_dates = ["2026-12-25"]
closed_action = "overflow:sales"
max_wait_secs = 300
max_wait_action = "overflow:sales"
join_empty = "no-members"
leave_when_empty = "none-available"
empty_action = "hangup:no-agents"
max_wait_no_agent_secs = 60
max_len = 10
full_action = "overflow:sales"
announce_position_secs = 45
announce_wait_time = true
periodic_prompt = "thank-you-for-holding"
periodic_prompt_secs = 60
callback = true
callback_via = "gw.example:5080"
abandoned_resume_secs = 120
[[queue]]
name = "sales"
[[agent]]
id = "alice"
password = "p"
queues = ["support"]
memberships = [{ queue = "sales", level = 2, position = 3, penalty = 4 }]
skills = { english = 5, billing = 2 }
max_calls = 2
wrap_up_secs = 10
reject_delay_secs = 5
busy_delay_secs = 6
no_answer_delay_secs = 7
max_no_answer = 3
status = "break:training"
[[number]]
dial = "5551000"
queue = "support"
skills = { spanish = 3 }
priority = 2
[[caller_rule]]
pattern = "+4420*"
priority = 10
skills = { vip = 1 }
[[caller_rule]]
pattern = "+1900*"
block = true
"#;

    #[test]
    fn every_routing_policy_and_announcement_key_lands() {
        use call_engine_orchestrator::{EmptyCondition, FullAction, QueueAction};
        let c = parse(FULL).expect("valid");
        assert_eq!(c.routing_seed, 7);
        assert_eq!(c.media_timeout_secs, 12);
        assert_eq!(
            c.control_socket.as_deref(),
            Some(Path::new("./run/engine.sock"))
        );
        let q = &c.queues[0];
        let r = &q.routing;
        assert_eq!(r.strategy, Strategy::RingProgressively);
        assert_eq!(r.retry_delay_ms, 3_000);
        assert_eq!(r.ring_progressively_delay_ms, 4_000);
        assert_eq!(r.required_skills.len(), 1);
        assert_eq!(r.required_skills[0].skill, "english");
        assert_eq!(r.required_skills[0].min_level, 3);
        assert_eq!(r.skill_match, SkillMatch::Qualified);
        assert_eq!(
            (r.skill_relax[0].after_ms, r.skill_relax[0].lower_by),
            (30_000, 1)
        );
        assert_eq!(
            (r.tier_rules[0].after_ms, r.tier_rules[0].level),
            (20_000, 2)
        );
        assert_eq!(r.max_penalty, Some(1));
        assert_eq!(
            (r.penalty_rules[0].after_ms, r.penalty_rules[0].max_penalty),
            (60_000, 5)
        );
        assert_eq!(r.max_wait_ms, Some(300_000));
        assert_eq!(
            r.max_wait_action,
            QueueAction::Overflow {
                queue: QueueId::new("sales")
            }
        );
        assert_eq!(r.join_empty, Some(EmptyCondition::NoMembers));
        assert_eq!(r.leave_when_empty, Some(EmptyCondition::NoneAvailable));
        assert_eq!(
            r.empty_action,
            QueueAction::Hangup {
                prompt: Some("no-agents".into())
            }
        );
        assert_eq!(r.max_wait_no_agent_ms, Some(60_000));
        assert_eq!(r.max_len, Some(10));
        assert_eq!(
            r.full_action,
            FullAction::Overflow {
                queue: QueueId::new("sales")
            }
        );
        assert_eq!(q.service_level_secs, 30);
        let hours = q.business_hours.as_ref().expect("hours");
        // Saturday 2026-11-21 12:00 UTC: closed; Monday 2026-11-23 09:00 local (08:00 UTC): open.
        assert!(!hours.is_open(1_795_262_400_000));
        assert!(hours.is_open(1_795_420_800_000));
        assert_eq!(q.closed_action, ClosedAction::Overflow("sales".into()));
        assert_eq!(q.announce.position_every_ms, 45_000);
        assert!(q.announce.wait_time && q.announce.callback);
        assert_eq!(q.announce.callback_via.as_deref(), Some("gw.example:5080"));
        assert_eq!(
            q.announce.periodic.as_deref(),
            Some("thank-you-for-holding")
        );
        assert_eq!(q.announce.periodic_every_ms, 60_000);
        assert_eq!(q.abandoned_resume_secs, 120);

        let a = &c.agents[0].profile;
        assert_eq!(a.memberships.len(), 2);
        let sales = &a.memberships[1];
        assert_eq!((sales.level, sales.position, sales.penalty), (2, 3, 4));
        assert_eq!(a.skills.get("english"), Some(&5));
        assert_eq!(a.max_calls, 2);
        assert_eq!(a.wrap_up_ms, Some(10_000));
        assert_eq!(
            (
                a.reject_delay_ms,
                a.busy_delay_ms,
                a.no_answer_delay_ms,
                a.max_no_answer
            ),
            (5_000, 6_000, 7_000, 3)
        );
        assert_eq!(
            a.status,
            call_engine_events::AgentStatus::OnBreak {
                reason: "training".into()
            }
        );
        let vip = c.caller_rules.evaluate("+44 20 7946 0000");
        assert_eq!(vip.priority, Some(10));
        assert!(!vip.blocked);
        assert!(c.caller_rules.evaluate("+19005550100").blocked);
        assert_eq!(
            c.numbers,
            vec![DialedNumber {
                number: "5551000".into(),
                queue: "support".into(),
                skills: vec![("spanish".into(), 3)],
                priority: Some(2),
            }]
        );
    }

    #[test]
    fn bad_policy_values_name_their_key() {
        let cases = [
            (
                "max_wait_action = \"overflow:sales\"",
                "max_wait_action = \"overflow:nowhere\"",
                "queue[0].max_wait_action",
                "max_wait_action",
            ),
            (
                "max_wait_action = \"overflow:sales\"",
                "max_wait_action = \"shrug\"",
                "queue[0].max_wait_action",
                "max_wait_action",
            ),
            (
                "join_empty = \"no-members\"",
                "join_empty = \"never\"",
                "queue[0].join_empty",
                "join_empty",
            ),
            (
                "full_action = \"overflow:sales\"",
                "full_action = \"explode\"",
                "queue[0].full_action",
                "full_action",
            ),
            ("max_len = 10", "max_len = 0", "queue[0].max_len", "max_len"),
            (
                "business_hours = \"mon-fri 08:00-18:00\"",
                "business_hours = \"someday 08:00-18:00\"",
                "queue[0].business_hours",
                "business_hours",
            ),
            (
                "closed_dates = [\"2026-12-25\"]",
                "closed_dates = [\"2026-13-25\"]",
                "queue[0].closed_dates[0]",
                "closed_dates",
            ),
            (
                "skill_match = \"qualified\"",
                "skill_match = \"best\"",
                "queue[0].skill_match",
                "skill_match",
            ),
            (
                "required_skills = { english = 3 }",
                "required_skills = { english = 300 }",
                "queue[0].required_skills.english",
                "required_skills",
            ),
            (
                "periodic_prompt = \"thank-you-for-holding\"",
                "periodic_prompt = \"../etc/passwd\"",
                "queue[0].periodic_prompt",
                "periodic_prompt",
            ),
            (
                "status = \"break:training\"",
                "status = \"asleep\"",
                "agent[0].status",
                "status",
            ),
            (
                "max_no_answer = 3",
                "max_no_answer = -3",
                "agent[0].max_no_answer",
                "max_no_answer",
            ),
            (
                "skills = { english = 5, billing = 2 }",
                "skills = { \"bad name\" = 5 }",
                "agent[0].skills.bad name",
                "skills",
            ),
            (
                "memberships = [{ queue = \"sales\", level = 2, position = 3, penalty = 4 }]",
                "memberships = [{ queue = \"support\" }]",
                "agent[0].memberships[0]",
                "memberships",
            ),
            (
                "pattern = \"+4420*\"",
                "pattern = \"+44*20\"",
                "caller_rule[0].pattern",
                "pattern",
            ),
            ("seed = 7", "seed = -7", "routing.seed", "seed"),
            (
                "timeout_secs = 12",
                "timeout_secs = 0",
                "media.timeout_secs",
                "timeout_secs",
            ),
            (
                "dial = \"5551000\"",
                "dial = \"sales\"",
                "number[0].dial",
                "dial",
            ),
            (
                "queue = \"support\"\nskills",
                "queue = \"nowhere\"\nskills",
                "number[0].queue",
                "queue = \"nowhere\"",
            ),
            (
                "announce_position_secs = 45",
                "announce_position_secs = 0",
                "queue[0].announce_wait_time",
                "announce_wait_time",
            ),
        ];
        for (from, to, key, starts) in cases {
            let src = FULL.replacen(from, to, 1);
            assert_ne!(src, FULL, "{from}");
            expect_err(&src, key, line_of_key(&src, starts));
        }
        // Keys that only mean something together.
        let src = FULL.replacen("max_wait_secs = 300\n", "", 1);
        let e = parse(&src).expect_err("action without max wait");
        assert_eq!(e.key.as_deref(), Some("queue[0].max_wait_action"), "{e}");
        let src = FULL.replacen("business_hours = \"mon-fri 08:00-18:00\"\n", "", 1);
        let e = parse(&src).expect_err("offset without hours");
        assert_eq!(e.key.as_deref(), Some("queue[0].utc_offset_minutes"), "{e}");
        // The callback offer is said in the position announcement.
        let src = FULL
            .replacen("announce_position_secs = 45\n", "", 1)
            .replacen("announce_wait_time = true\n", "", 1);
        expect_err(&src, "queue[0].callback", line_of_key(&src, "callback ="));
    }
}
