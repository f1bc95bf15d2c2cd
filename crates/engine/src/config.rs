//! The configuration file (TOML). Key names are the public contract:
//!
//! ```toml
//! [sip]
//! udp = "127.0.0.1:5060"        # listen addresses; either may be omitted
//! tcp = "127.0.0.1:5060"
//! domain = "example.test"       # SIP domain and digest realm
//! [media]
//! address = "127.0.0.1"         # bound for RTP and advertised in SDP
//! rtp_ports = "20000-29999"
//! [store]
//! url = "sqlite://data/call-engine.db"
//! [[queue]]
//! name = "support"
//! strategy = "longest-idle-agent"   # | "round-robin" | "ring-all"
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

use call_engine_orchestrator::Strategy;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use toml::Spanned;

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
}

/// The media section.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Bound for RTP and advertised in SDP.
    pub address: IpAddr,
    /// RTP port range.
    pub rtp_ports: RangeInclusive<u16>,
}

/// Music on hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moh {
    /// The built-in music.
    Builtin,
    /// An 8 kHz WAV file.
    File(PathBuf),
}

/// One queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSection {
    /// Name (`sip:<name>@<domain>`).
    pub name: String,
    /// Routing strategy.
    pub strategy: Strategy,
    /// Music on hold.
    pub moh: Moh,
    /// Ring timeout, seconds.
    pub ring_timeout_secs: u32,
    /// Wrap-up (after-call work), seconds: after a call from this queue ends, its
    /// agent is not offered another call for this long. 0: none.
    pub wrap_up_secs: u32,
}

/// One agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSection {
    /// Id (`sip:<id>@<domain>`, digest username).
    pub id: String,
    /// Digest password.
    pub password: String,
    /// Queues served.
    pub queues: Vec<String>,
    /// Calls at once.
    pub max_calls: u16,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    address: Spanned<String>,
    rtp_ports: Spanned<String>,
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
    wrap_up_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: Spanned<String>,
    password: Spanned<String>,
    #[serde(default)]
    queues: Vec<Spanned<String>>,
    #[serde(default)]
    max_calls: Option<Spanned<i64>>,
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
                    Moh::File(p)
                }
            };
            let ring_timeout_secs = match &q.ring_timeout_secs {
                None => 15,
                Some(t) => u32::try_from(*t.get_ref())
                    .ok()
                    .filter(|t| (1..=600).contains(t))
                    .ok_or_else(|| {
                        cx.err(
                            format!("queue[{i}].ring_timeout_secs"),
                            t,
                            "must be between 1 and 600",
                        )
                    })?,
            };
            let wrap_up_secs = match &q.wrap_up_secs {
                None => 0,
                Some(t) => u32::try_from(*t.get_ref())
                    .ok()
                    .filter(|t| (0..=3600).contains(t))
                    .ok_or_else(|| {
                        cx.err(
                            format!("queue[{i}].wrap_up_secs"),
                            t,
                            "must be between 0 and 3600",
                        )
                    })?,
            };
            queues.push(QueueSection {
                name,
                strategy,
                moh,
                ring_timeout_secs,
                wrap_up_secs,
            });
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
            let mut qs = Vec::new();
            for (j, q) in a.queues.iter().enumerate() {
                if !names.contains(q.get_ref()) {
                    return Err(cx.err(
                        format!("agent[{i}].queues[{j}]"),
                        q,
                        format!("no queue named `{}`", q.get_ref()),
                    ));
                }
                qs.push(q.get_ref().clone());
            }
            let max_calls = match &a.max_calls {
                None => 1,
                Some(m) => u16::try_from(*m.get_ref())
                    .ok()
                    .filter(|m| (1..=100).contains(m))
                    .ok_or_else(|| {
                        cx.err(
                            format!("agent[{i}].max_calls"),
                            m,
                            "must be between 1 and 100",
                        )
                    })?,
            };
            agents.push(AgentSection {
                id,
                password: a.password.get_ref().clone(),
                queues: qs,
                max_calls,
            });
        }

        let mut reconciler = ReconcilerSection::default();
        if let Some(t) = raw
            .reconciler
            .as_ref()
            .and_then(|r| r.interval_secs.as_ref())
        {
            reconciler.interval_secs = u32::try_from(*t.get_ref())
                .ok()
                .filter(|t| (1..=3600).contains(t))
                .ok_or_else(|| {
                    cx.err("reconciler.interval_secs", t, "must be between 1 and 3600")
                })?;
        }

        Ok(Config {
            sip: SipConfig { udp, tcp, domain },
            media: MediaConfig { address, rtp_ports },
            store_url: url,
            queues,
            agents,
            reconciler,
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
        assert_eq!(c.queues[0].strategy, Strategy::LongestIdleAgent);
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
            15,
        );
        expect_err(
            &bad("moh = \"builtin\"", "moh = \"no/such.wav\""),
            "queue[0].moh",
            16,
        );
        expect_err(
            &bad("ring_timeout_secs = 15", "ring_timeout_secs = 0"),
            "queue[0].ring_timeout_secs",
            17,
        );
        expect_err(
            &bad("queues = [\"support\"]", "queues = [\"sales\"]"),
            "agent[0].queues[0]",
            22,
        );
        expect_err(&bad("id = \"bob\"", "id = \"alice\""), "agent[1].id", 25);
        expect_err(
            &bad("password = \"bob-secret\"", "password = \"\""),
            "agent[1].password",
            26,
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
        assert_eq!(parse(&with("0")).expect("valid").queues[0].wrap_up_secs, 0);
        assert_eq!(
            parse(&with("30")).expect("valid").queues[0].wrap_up_secs,
            30
        );
        assert_eq!(
            parse(&with("3600")).expect("valid").queues[0].wrap_up_secs,
            3600
        );
        expect_err(&with("-1"), "queue[0].wrap_up_secs", 18);
        expect_err(&with("3601"), "queue[0].wrap_up_secs", 18);
        let e = parse(&with("\"2\"")).expect_err("not a number");
        assert_eq!(e.line, Some(18), "{e}");
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
        assert_eq!(c.queues[0].ring_timeout_secs, 15);
        assert_eq!(c.queues[0].wrap_up_secs, 0);
        assert_eq!(c.queues[0].moh, Moh::Builtin);
        let e = parse(&src.replace("tcp = \"127.0.0.1:5070\"\n", "")).expect_err("no listener");
        assert_eq!(e.key.as_deref(), Some("sip"));
    }
}
