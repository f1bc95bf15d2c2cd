//! Configuration of the session adapter.

use crate::error::SessionError;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// RFC 3261 timer base values (section 17). Every transaction timer derives from these:
/// retransmissions start at `t1` and double up to `t2`; transactions give up after
/// `64 * t1`; `t4` is how long a completed transaction lingers to absorb retransmissions.
///
/// The defaults are the RFC's; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipTimers {
    /// Round-trip estimate: the first retransmission interval (RFC default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and 2xx responses
    /// (RFC default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (RFC default 5 s).
    pub t4: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl SipTimers {
    /// `64 * T1`: Timers B, F, H and J, and how long a 2xx is retransmitted waiting for
    /// its ACK.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Limits on TCP connections: what one peer, or a flood of them, can hold of the adapter.
/// A peer above a limit is disconnected (a message too large is first answered 513);
/// nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpLimits {
    /// TCP connections open at once, accepted or opened by us (default 4096). An
    /// accepted connection above it is closed at once.
    pub max_connections: usize,
    /// TCP connections open at once with one IP address (default 256: an office of
    /// phones behind one NAT). An accepted connection above it is closed at once.
    pub max_per_ip: usize,
    /// Largest message accepted over TCP, headers and body (default 64 KiB). A larger one
    /// is answered `513 Message Too Large` as soon as its size is known, and the
    /// connection is closed.
    pub max_message_bytes: usize,
    /// A message begun must be complete within this (default 32 s), and an accepted
    /// connection must carry its first complete message within it (keep-alive pings do
    /// not count); otherwise the connection is closed. A connection idle between
    /// messages stays open (a phone registered over it is reached through it).
    pub message_timeout: Duration,
    /// Bytes queued for a peer that does not read them (default 1 MiB): above it the
    /// connection is closed instead of the queue growing.
    pub max_queued_bytes: usize,
    /// A write to a peer that makes no progress for this long closes the connection
    /// (default 32 s).
    pub write_timeout: Duration,
    /// A connection that carries nothing between messages for this long, not even a
    /// keep-alive ping, is closed (default 65 min). It must be longer than
    /// `max_expires_secs`: a phone registered over a connection refreshes its
    /// registration through it before then. (The kernel's keep-alive probes, after a
    /// minute of silence, find a peer that vanished much sooner.)
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_ip: 256,
            max_message_bytes: 64 * 1024,
            message_timeout: Duration::from_secs(32),
            max_queued_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(65 * 60),
        }
    }
}

/// Configuration of the session adapter. Build it with [`SessionConfig::new`] and adjust
/// the public fields.
///
/// ```
/// use call_engine_session::SessionConfig;
///
/// let mut config = SessionConfig::new("example.test");
/// config.udp = Some("127.0.0.1:0".parse().unwrap());
/// config.credentials.insert("alice".into(), "secret".into());
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// UDP listening address (port 0 picks a free port), or `None` for no UDP.
    pub udp: Option<SocketAddr>,
    /// TCP listening address (port 0 picks a free port), or `None` for no TCP.
    pub tcp: Option<SocketAddr>,
    /// Host (IP or name) written into our Via and Contact headers. `None`: the bound IP,
    /// or when bound to an unspecified address (`0.0.0.0`), the local IP the OS would use
    /// to reach the peer.
    pub advertised_host: Option<String>,
    /// The SIP domain: agents register as `sip:<agent-id>@<domain>`; it is also the
    /// digest realm and the host of the From URI of outbound calls.
    pub domain: String,
    /// Agent id → SIP password.
    pub credentials: HashMap<String, String>,
    /// Shortest registration accepted; shorter non-zero requests get 423 with
    /// Min-Expires (default 60 s).
    pub min_expires_secs: u32,
    /// Longest registration granted; longer requests are shortened (default 3600 s).
    pub max_expires_secs: u32,
    /// Registration length when the REGISTER names none (default 3600 s).
    pub default_expires_secs: u32,
    /// How long a digest nonce we issued stays valid (default 300 s); an older one gets
    /// `401 stale=true`.
    pub nonce_lifetime: Duration,
    /// Transaction timer base values.
    pub timers: SipTimers,
    /// Timer C: an outbound INVITE still without a final response after this long is
    /// cancelled and reported `Rejected { cause: NoAnswer }` (default 180 s). The
    /// engine normally cancels earlier; this only bounds a forgotten leg.
    pub ring_timeout: Duration,
    /// `User-Agent` (requests) and `Server` (responses) header value.
    pub user_agent: String,
    /// Limits on TCP connections.
    pub tcp_limits: TcpLimits,
    /// Memory the server transactions may hold (their cached responses, kept to answer
    /// retransmissions for up to `64 * T1`), default 128 MiB. Above it, a new request
    /// out of a dialog is answered 503 with Retry-After and remembered nowhere.
    pub max_server_transaction_bytes: usize,
    /// Inbound calls that may wait at once for the engine's `Answer` or `Reject`
    /// (default 1000; the engine normally answers within milliseconds). Above it, a new
    /// INVITE is answered 503 with Retry-After before any event is published.
    pub max_offered_calls: usize,
    /// Session events that may wait for the bus at once (default 4096: a subscriber
    /// that falls behind back-pressures their publishing). At that many, requests that
    /// would add events (INVITE, REGISTER, INFO, REFER, re-INVITE…) are answered 503
    /// with Retry-After until the engine catches up; responses, ACK, CANCEL, BYE and
    /// OPTIONS are still handled, so calls in progress go on. Events are never
    /// dropped.
    pub max_pending_events: usize,
    /// Source addresses that may place calls (an INVITE outside a dialog), from
    /// customers' carriers and phones alike (default: any address). An INVITE from
    /// elsewhere is answered `403 Forbidden` before any leg or event exists, and counted
    /// in [`SessionStats::forbidden_sources`](crate::SessionStats). Set it to the
    /// carriers', SBCs' and phones' networks: a call center reached through an SBC
    /// should take calls from the SBC only.
    pub calls_from: Networks,
    /// Upstream hosts (an SBC, an IVR) whose `X-Skills` and `X-Priority` headers are
    /// honoured (default: loopback only). From any other source the headers are
    /// ignored, so a caller cannot rank themselves ahead of the queue.
    pub trusted: Networks,
}

/// A set of IP networks (CIDR blocks), for who may do what.
///
/// An IPv4 address seen as an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, from a
/// dual-stack socket) matches the IPv4 networks.
///
/// ```
/// use call_engine_session::Networks;
/// let lan: Networks = "10.0.0.0/8, 2001:db8::/32".parse().unwrap();
/// assert!(lan.contains("10.1.2.3".parse().unwrap()));
/// assert!(lan.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!lan.contains("192.0.2.1".parse().unwrap()));
/// assert!(Networks::any().contains("192.0.2.1".parse().unwrap()));
/// assert_eq!(lan.to_string(), "10.0.0.0/8, 2001:db8::/32");
/// let mapped: Networks = "::ffff:192.0.2.0/120".parse().unwrap();
/// assert!(mapped.contains("192.0.2.9".parse().unwrap()));
/// assert!("10.1.2.3/8".parse::<Networks>().is_err());
/// assert_eq!(Networks::none().to_string().parse::<Networks>(), Ok(Networks::none()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Every address, IPv4 and IPv6.
    pub fn any() -> Self {
        Self(vec![
            IpNet::new_assert(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            IpNet::new_assert(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        ])
    }

    /// No address.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The loopback networks, `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> Self {
        Self(vec![
            IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ])
    }

    /// These networks (IPv4-mapped IPv6 ones taken as the IPv4 networks they stand for:
    /// addresses are compared as IPv4 when they are mapped).
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().map(unmapped).collect())
    }

    /// The networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// A network written as CIDR (`10.0.0.0/8`) or a single address (`192.0.2.7`, `::1`).
/// Host bits set under the prefix (`10.1.2.3/8`) are refused: probably a typo that would
/// widen the network. IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are taken as
/// the IPv4 networks they stand for.
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match (s.parse::<IpNet>(), s.parse::<IpAddr>()) {
        (Ok(n), _) => n,
        (_, Ok(ip)) => IpNet::from(ip),
        _ => {
            return Err(format!(
                "`{s}` is not an IP network (like \"10.0.0.0/8\" or \"192.0.2.7\")"
            ))
        }
    };
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set under its prefix: did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(unmapped(net))
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it stands for;
/// any other network as it is.
fn unmapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

impl std::fmt::Display for Networks {
    /// The networks, comma-separated (`-` for none), as [`FromStr`](std::str::FromStr)
    /// reads them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Networks {
    type Err = String;

    /// Networks separated by commas or spaces (see [`parse_network`]).
    fn from_str(s: &str) -> Result<Self, String> {
        s.split([',', ' '])
            .filter(|p| !p.trim().is_empty() && p.trim() != "-")
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

impl Default for SessionConfig {
    /// [`SessionConfig::new`] for the domain `localhost`: set `domain` (and the
    /// credentials) before use.
    fn default() -> Self {
        Self::new("localhost")
    }
}

impl SessionConfig {
    /// A configuration for `domain` with UDP and TCP on `0.0.0.0:5060`, no credentials
    /// and the RFC defaults.
    pub fn new(domain: impl Into<String>) -> Self {
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 5060));
        Self {
            udp: Some(any),
            tcp: Some(any),
            advertised_host: None,
            domain: domain.into(),
            credentials: HashMap::new(),
            min_expires_secs: 60,
            max_expires_secs: 3600,
            default_expires_secs: 3600,
            nonce_lifetime: Duration::from_secs(300),
            timers: SipTimers::default(),
            ring_timeout: Duration::from_secs(180),
            user_agent: concat!("call-engine/", env!("CARGO_PKG_VERSION")).to_string(),
            tcp_limits: TcpLimits::default(),
            max_server_transaction_bytes: 128 * 1024 * 1024,
            max_offered_calls: 1000,
            max_pending_events: 4096,
            calls_from: Networks::any(),
            trusted: Networks::loopback(),
        }
    }

    /// Checks the configuration; the error names the offending field.
    pub fn validate(&self) -> Result<(), SessionError> {
        let bad = |field: &'static str, reason: &str| {
            Err(SessionError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.udp.is_none() && self.tcp.is_none() {
            return bad("udp", "neither udp nor tcp is configured");
        }
        if self.domain.trim().is_empty() || self.domain.contains(['"', ' ', '\r', '\n']) {
            return bad(
                "domain",
                "must be a non-empty host name without spaces or quotes",
            );
        }
        if self.min_expires_secs == 0 {
            return bad("min_expires_secs", "must be at least 1");
        }
        if self.max_expires_secs < self.min_expires_secs {
            return bad("max_expires_secs", "must be >= min_expires_secs");
        }
        if self.default_expires_secs == 0 {
            return bad("default_expires_secs", "must be at least 1");
        }
        if self.timers.t1.is_zero() {
            return bad("timers.t1", "must be positive");
        }
        if self.timers.t2 < self.timers.t1 {
            return bad("timers.t2", "must be >= t1");
        }
        if self.ring_timeout.is_zero() {
            return bad("ring_timeout", "must be positive");
        }
        if self.nonce_lifetime.is_zero() {
            return bad("nonce_lifetime", "must be positive");
        }
        let l = &self.tcp_limits;
        if l.max_connections == 0 {
            return bad("tcp_limits.max_connections", "must be at least 1");
        }
        if l.max_per_ip == 0 {
            return bad("tcp_limits.max_per_ip", "must be at least 1");
        }
        if l.max_message_bytes < 1024 {
            return bad("tcp_limits.max_message_bytes", "must be at least 1024");
        }
        if l.message_timeout.is_zero() {
            return bad("tcp_limits.message_timeout", "must be positive");
        }
        if l.max_queued_bytes < l.max_message_bytes {
            return bad(
                "tcp_limits.max_queued_bytes",
                "must be >= max_message_bytes",
            );
        }
        if l.write_timeout.is_zero() {
            return bad("tcp_limits.write_timeout", "must be positive");
        }
        if l.idle_timeout <= Duration::from_secs(u64::from(self.max_expires_secs)) {
            return bad(
                "tcp_limits.idle_timeout",
                "must be longer than max_expires_secs",
            );
        }
        if self.max_offered_calls == 0 {
            return bad("max_offered_calls", "must be at least 1");
        }
        if self.max_pending_events == 0 {
            return bad("max_pending_events", "must be at least 1");
        }
        if self.max_server_transaction_bytes < 64 * 1024 {
            return bad("max_server_transaction_bytes", "must be at least 65536");
        }
        if self.user_agent.contains(['\r', '\n']) {
            return bad("user_agent", "must be one line");
        }
        if let Some(h) = &self.advertised_host {
            if h.is_empty() || h.contains([' ', '\r', '\n', ';', '<', '>']) {
                return bad("advertised_host", "must be a host name or IP");
            }
        }
        for user in self.credentials.keys() {
            if user.is_empty() || user.contains(['"', ' ', '\r', '\n', '@', ':']) {
                return bad("credentials", "agent ids must be non-empty SIP user names");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        let c = SessionConfig::new("example.test");
        assert!(c.validate().is_ok());
        assert_eq!(c.timers.timeout(), Duration::from_secs(32));

        let mut c3 = c.clone();
        c3.udp = None;
        c3.tcp = None;
        assert!(c3.validate().is_err());

        type Bad = fn(&mut SessionConfig);
        let bad: [(Bad, &str); 11] = [
            (|c| c.max_expires_secs = 10, "max_expires_secs"),
            (|c| c.max_pending_events = 0, "max_pending_events"),
            (|c| c.max_offered_calls = 0, "max_offered_calls"),
            (
                |c| c.max_server_transaction_bytes = 1000,
                "max_server_transaction_bytes",
            ),
            (
                |c| c.tcp_limits.idle_timeout = Duration::from_secs(3600),
                "tcp_limits.idle_timeout",
            ),
            (
                |c| c.tcp_limits.max_connections = 0,
                "tcp_limits.max_connections",
            ),
            (|c| c.tcp_limits.max_per_ip = 0, "tcp_limits.max_per_ip"),
            (
                |c| c.tcp_limits.max_message_bytes = 100,
                "tcp_limits.max_message_bytes",
            ),
            (
                |c| c.tcp_limits.message_timeout = Duration::ZERO,
                "tcp_limits.message_timeout",
            ),
            (
                |c| c.tcp_limits.max_queued_bytes = 2048,
                "tcp_limits.max_queued_bytes",
            ),
            (
                |c| c.tcp_limits.write_timeout = Duration::ZERO,
                "tcp_limits.write_timeout",
            ),
        ];
        for (spoil, name) in bad {
            let mut c4 = c.clone();
            spoil(&mut c4);
            match c4.validate() {
                Err(SessionError::Config { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
}
