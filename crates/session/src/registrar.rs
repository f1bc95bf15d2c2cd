//! Registrar: digest authentication (RFC 2617 MD5, with and without `qop=auth`),
//! stateless nonces we can recognise as ours (a timestamp and random bytes, signed with
//! a per-process secret: no table for a REGISTER flood to grow), and the location service (agent → contacts), readable by the engine
//! through [`Bindings`].

use crate::config::SessionConfig;
use crate::msg::InRequest;
use crate::raw::AuthParams;
use crate::transport::{Peer, Transport};
use call_engine_events::AgentId;
use md5::{Digest, Md5};
use parking_lot::RwLock;
use smol_str::SmolStr;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One registered contact of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI (where to send INVITEs), as the phone registered it.
    pub contact: SmolStr,
    /// The expiry granted at the last registration or refresh, seconds.
    pub expires_secs: u32,
    /// When the binding expires unless refreshed.
    pub expires_at: std::time::Instant,
    /// The transport requests to this contact use (its `transport` parameter, else the
    /// transport the phone registered over).
    pub transport: Transport,
    /// Where the REGISTER came from (for TCP, the connection reused for requests).
    pub source: SocketAddr,
    /// The transport the REGISTER came over.
    pub source_transport: Transport,
}

impl Binding {
    /// Time left before the binding expires.
    pub fn remaining(&self) -> Duration {
        self.expires_at
            .saturating_duration_since(std::time::Instant::now())
    }
}

/// A read handle on the current registrations, shared with the adapter (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    inner: Arc<RwLock<HashMap<AgentId, Vec<Binding>>>>,
}

impl Bindings {
    /// The contacts of one agent (empty when not registered).
    pub fn of(&self, agent: &AgentId) -> Vec<Binding> {
        self.inner.read().get(agent).cloned().unwrap_or_default()
    }

    /// Every registered agent with its contacts.
    pub fn all(&self) -> HashMap<AgentId, Vec<Binding>> {
        self.inner.read().clone()
    }

    /// Whether the agent has at least one contact.
    pub fn is_registered(&self, agent: &AgentId) -> bool {
        self.inner.read().get(agent).is_some_and(|v| !v.is_empty())
    }

    fn publish(&self, agent: &AgentId, list: Vec<Binding>) {
        let mut w = self.inner.write();
        if list.is_empty() {
            w.remove(agent);
        } else {
            w.insert(agent.clone(), list);
        }
    }
}

/// The result of checking a REGISTER's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// Authenticated.
    Ok,
    /// Send a 401 challenge (`stale=true` when the credentials were right but the nonce
    /// old or unknown).
    Challenge { stale: bool },
    /// Wrong password, unknown user, or a username that is not the registering agent.
    Forbidden { username: String },
    /// Malformed or unusable credentials.
    BadRequest(&'static str),
}

#[derive(Debug, Clone)]
struct BindingState {
    contact: String,
    expires_secs: u32,
    expires_at: Instant,
    transport: Transport,
    source: Peer,
}

/// What a REGISTER or an expiry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Bound { contact: String, expires_secs: u32 },
    Removed { contact: String, expired: bool },
}

/// One contact of a REGISTER request.
#[derive(Debug, Clone)]
pub(crate) struct ContactRequest {
    pub uri: String,
    pub expires: u32,
    pub transport: Transport,
}

pub(crate) struct Registrar {
    /// Signs nonces.
    secret: String,
    /// Nonce timestamps count milliseconds from here.
    epoch: Instant,
    bindings: HashMap<AgentId, Vec<BindingState>>,
    view: Bindings,
    /// The nonces of credentials accepted, against replays.
    used: UsedNonces,
}

impl Default for Registrar {
    fn default() -> Self {
        let secret: [u8; 16] = rand::random();
        Self {
            secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            epoch: Instant::now(),
            bindings: HashMap::new(),
            view: Bindings::default(),
            used: UsedNonces::default(),
        }
    }
}

/// Most nonces remembered at once (the oldest are forgotten first; a forgotten nonce is
/// refused as stale anyway once its lifetime is over).
const MAX_USED_NONCES: usize = 65_536;

/// The nonces of accepted credentials, each with the highest nonce count (`nc`) accepted
/// with it (0 for a digest without qop, whose nonce is good for one request only). Only
/// requests that proved the password add to it, so it cannot be grown by anyone else;
/// an entry is forgotten once its nonce has expired, or, past [`MAX_USED_NONCES`], the
/// oldest first, and then every nonce issued no later than a forgotten one is refused.
#[derive(Default)]
struct UsedNonces {
    last_nc: HashMap<String, u64>,
    /// First use, issue time (the nonce's milliseconds) and nonce, in order of first use.
    order: VecDeque<(Instant, u64, String)>,
    /// The latest issue time among nonces forgotten while still valid.
    forgotten_through: Option<u64>,
}

impl UsedNonces {
    /// Accepts `nc` for `nonce` (issued at `issued` ms) if it was not accepted before: a
    /// digest without qop (`nc` None) uses its nonce once; with qop each count above the
    /// last once.
    fn accept(
        &mut self,
        nonce: &str,
        issued: u64,
        nc: Option<u64>,
        lifetime: Duration,
        now: Instant,
    ) -> bool {
        while let Some((at, issued_at, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) > lifetime;
            if !expired && self.order.len() < MAX_USED_NONCES {
                break;
            }
            if !expired {
                // Still valid: from now on nonces this old are refused.
                self.forgotten_through = self.forgotten_through.max(Some(*issued_at));
            }
            if let Some((_, _, n)) = self.order.pop_front() {
                self.last_nc.remove(&n);
            }
        }
        if !self.last_nc.contains_key(nonce) && self.forgotten_through >= Some(issued) {
            return false;
        }
        match (self.last_nc.get_mut(nonce), nc) {
            (Some(last), Some(nc)) if nc > *last => {
                *last = nc;
                true
            }
            (Some(_), _) => false,
            (None, nc) => {
                self.last_nc.insert(nonce.to_string(), nc.unwrap_or(0));
                self.order.push_back((now, issued, nonce.to_string()));
                true
            }
        }
    }
}

/// What we know about a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonceAge {
    /// Valid; issued at this many milliseconds.
    Fresh(u64),
    /// Ours, but older than the lifetime.
    Expired,
    /// Not one we issued (forged, or from before a restart).
    Unknown,
}

pub(crate) fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    let mut out = String::with_capacity(32);
    for b in d {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn ct_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Registrar {
    pub fn view(&self) -> Bindings {
        self.view.clone()
    }

    fn sign(&self, body: &str) -> String {
        md5_hex(&format!("{body}:{}", self.secret))
    }

    /// A fresh nonce: `<ms since start><random>.<signature>`, all hex.
    pub fn issue_nonce(&self, now: Instant) -> String {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let salt: u64 = rand::random();
        let body = format!("{ms:012x}{salt:016x}");
        let sig = self.sign(&body);
        format!("{body}.{sig}")
    }

    fn nonce_age(&self, nonce: &str, lifetime: Duration, now: Instant) -> NonceAge {
        let Some((body, sig)) = nonce.split_once('.') else {
            return NonceAge::Unknown;
        };
        if body.len() != 28 || !body.is_ascii() || !ct_eq(&self.sign(body), sig) {
            return NonceAge::Unknown;
        }
        let Ok(ms) = u64::from_str_radix(&body[..12], 16) else {
            return NonceAge::Unknown;
        };
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        match now_ms.checked_sub(ms) {
            None => NonceAge::Unknown,
            Some(age) if u128::from(age) <= lifetime.as_millis() => NonceAge::Fresh(ms),
            Some(_) => NonceAge::Expired,
        }
    }

    /// Checks the Authorization of a REGISTER from `agent`.
    pub fn check_auth(
        &mut self,
        cfg: &SessionConfig,
        req: &InRequest,
        agent: &str,
        now: Instant,
    ) -> AuthOutcome {
        let Some(header) = req.raw.get("Authorization") else {
            return AuthOutcome::Challenge { stale: false };
        };
        let Some(a) = AuthParams::parse(header) else {
            return AuthOutcome::BadRequest("Malformed Authorization");
        };
        if !a.scheme.eq_ignore_ascii_case("digest") {
            return AuthOutcome::Challenge { stale: false };
        }
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            a.get("username"),
            a.get("realm"),
            a.get("nonce"),
            a.get("uri"),
            a.get("response"),
        ) else {
            return AuthOutcome::BadRequest("Incomplete digest credentials");
        };
        if realm != cfg.domain {
            // Credentials for another realm: challenge for ours.
            return AuthOutcome::Challenge { stale: false };
        }
        if let Some(alg) = a.get("algorithm") {
            if !alg.eq_ignore_ascii_case("MD5") {
                return AuthOutcome::BadRequest("Unsupported digest algorithm");
            }
        }
        let Some(password) = cfg.credentials.get(username) else {
            return AuthOutcome::Forbidden {
                username: username.to_string(),
            };
        };
        if username != agent {
            return AuthOutcome::Forbidden {
                username: username.to_string(),
            };
        }
        let req_uri = req.raw.request_uri().unwrap_or("");
        let uri_matches = uri == req_uri
            || std::panic::catch_unwind(|| uri.parse::<rvoip_sip_core::Uri>())
                .ok()
                .and_then(Result::ok)
                .is_some_and(|u| u == req.uri);
        if !uri_matches {
            return AuthOutcome::BadRequest("Digest uri does not match the Request-URI");
        }
        let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
        let ha2 = md5_hex(&format!("{}:{uri}", req.method_name()));
        let (expected, count) = match a.get("qop") {
            None => (md5_hex(&format!("{ha1}:{nonce}:{ha2}")), None),
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (a.get("nc"), a.get("cnonce")) else {
                    return AuthOutcome::BadRequest("qop=auth without nc/cnonce");
                };
                let Some(count) = u64::from_str_radix(nc, 16).ok().filter(|_| nc.len() == 8) else {
                    return AuthOutcome::BadRequest("nc is not 8 hex digits");
                };
                (
                    md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}")),
                    Some(count),
                )
            }
            Some(_) => return AuthOutcome::BadRequest("Unsupported qop"),
        };
        if !ct_eq(&expected, &response.to_ascii_lowercase()) {
            return AuthOutcome::Forbidden {
                username: username.to_string(),
            };
        }
        match self.nonce_age(nonce, cfg.nonce_lifetime, now) {
            // A nonce count seen before (or a qop-less nonce used before) is a replay:
            // the request is not the phone's own, or the phone must take a new nonce.
            NonceAge::Fresh(issued)
                if !self
                    .used
                    .accept(nonce, issued, count, cfg.nonce_lifetime, now) =>
            {
                AuthOutcome::Challenge { stale: true }
            }
            NonceAge::Fresh(_) => AuthOutcome::Ok,
            // Right password, old or foreign nonce: challenge again without alarming
            // the user (RFC 2617 `stale`).
            NonceAge::Expired | NonceAge::Unknown => AuthOutcome::Challenge { stale: true },
        }
    }

    /// Applies the contacts of an authenticated REGISTER. `contacts` is `None` for
    /// `Contact: *` (remove all).
    pub fn apply(
        &mut self,
        agent: &AgentId,
        contacts: Option<Vec<ContactRequest>>,
        source: Peer,
        now: Instant,
    ) -> Vec<Change> {
        let list = self.bindings.entry(agent.clone()).or_default();
        let mut changes = Vec::new();
        match contacts {
            None => {
                for b in list.drain(..) {
                    changes.push(Change::Removed {
                        contact: b.contact,
                        expired: false,
                    });
                }
            }
            Some(contacts) => {
                for c in contacts {
                    let pos = list.iter().position(|b| b.contact == c.uri);
                    if c.expires == 0 {
                        if let Some(pos) = pos {
                            let b = list.remove(pos);
                            changes.push(Change::Removed {
                                contact: b.contact,
                                expired: false,
                            });
                        }
                        continue;
                    }
                    let state = BindingState {
                        contact: c.uri.clone(),
                        expires_secs: c.expires,
                        expires_at: now + Duration::from_secs(u64::from(c.expires)),
                        transport: c.transport,
                        source,
                    };
                    match pos {
                        Some(pos) => list[pos] = state,
                        None => list.push(state),
                    }
                    changes.push(Change::Bound {
                        contact: c.uri,
                        expires_secs: c.expires,
                    });
                }
            }
        }
        self.refresh_view(agent, now);
        changes
    }

    /// Removes a binding whose time is up (a timer armed at its expiry fired).
    pub fn expire(&mut self, agent: &AgentId, contact: &str, now: Instant) -> Option<Change> {
        let list = self.bindings.get_mut(agent)?;
        let pos = list
            .iter()
            .position(|b| b.contact == contact && b.expires_at <= now)?;
        let b = list.remove(pos);
        self.refresh_view(agent, now);
        Some(Change::Removed {
            contact: b.contact,
            expired: true,
        })
    }

    /// When a binding is due to expire (to arm its timer).
    pub fn expires_at(&self, agent: &AgentId, contact: &str) -> Option<Instant> {
        self.bindings
            .get(agent)?
            .iter()
            .find(|b| b.contact == contact)
            .map(|b| b.expires_at)
    }

    /// `(contact, seconds left)` of an agent's bindings, for the 200 response.
    pub fn contacts_of(&self, agent: &AgentId, now: Instant) -> Vec<(String, u64)> {
        self.bindings
            .get(agent)
            .map(|v| {
                v.iter()
                    .map(|b| {
                        let left = b.expires_at.saturating_duration_since(now);
                        (
                            b.contact.clone(),
                            left.as_secs() + u64::from(left.subsec_nanos() > 0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The TCP connection a contact registered over, if it did.
    pub fn tcp_source_of(&self, contact: &str) -> Option<SocketAddr> {
        self.bindings
            .values()
            .flatten()
            .find(|b| b.contact == contact && b.source.transport == Transport::Tcp)
            .map(|b| b.source.addr)
    }

    fn refresh_view(&mut self, agent: &AgentId, now: Instant) {
        let std_now = std::time::Instant::now();
        let list: Vec<Binding> = self
            .bindings
            .get(agent)
            .map(|v| {
                v.iter()
                    .map(|b| Binding {
                        contact: SmolStr::new(&b.contact),
                        expires_secs: b.expires_secs,
                        expires_at: std_now + b.expires_at.saturating_duration_since(now),
                        transport: b.transport,
                        source: b.source.addr,
                        source_transport: b.source.transport,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if list.is_empty() {
            self.bindings.remove(agent);
        }
        self.view.publish(agent, list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_count_is_accepted_once_and_the_memory_stays_bounded() {
        let life = Duration::from_secs(300);
        let t0 = Instant::now();
        let mut used = UsedNonces::default();
        assert!(used.accept("n1", 1, Some(1), life, t0));
        assert!(!used.accept("n1", 1, Some(1), life, t0), "replayed count");
        assert!(used.accept("n1", 1, Some(3), life, t0), "a higher count");
        assert!(!used.accept("n1", 1, Some(2), life, t0), "a lower count");
        assert!(used.accept("n2", 2, None, life, t0));
        assert!(!used.accept("n2", 2, None, life, t0), "no qop: once");
        // Forgotten once expired (the nonce itself is refused as stale by then).
        let later = t0 + life + Duration::from_secs(1);
        assert!(used.accept("n3", 3, None, life, later));
        assert_eq!(used.last_nc.len(), 1);
        assert_eq!(used.forgotten_through, None, "expired ones leave no mark");
        // Never more than the bound, the oldest forgotten first; a nonce forgotten while
        // still valid (and any issued before it) is refused from then on.
        let m = |k: usize| (format!("m{k}"), 1000 + k as u64);
        for k in 0..MAX_USED_NONCES + 10 {
            let (n, issued) = m(k);
            assert!(used.accept(&n, issued, Some(1), life, later));
        }
        assert!(used.last_nc.len() <= MAX_USED_NONCES);
        assert_eq!(used.last_nc.len(), used.order.len());
        let (first, first_issued) = m(0);
        assert!(!used.last_nc.contains_key(&first));
        assert!(
            !used.accept(&first, first_issued, Some(1), life, later),
            "replay of a forgotten one"
        );
        assert!(
            !used.accept("early", 5, Some(1), life, later),
            "issued before a forgotten one"
        );
        let (last, last_issued) = m(MAX_USED_NONCES + 9);
        assert!(
            !used.accept(&last, last_issued, Some(1), life, later),
            "replay of a kept one"
        );
        assert!(
            used.accept("new", 1_000_000, Some(1), life, later),
            "a newer nonce"
        );
    }

    #[test]
    fn md5_matches_rfc_2617_example() {
        // RFC 2617 section 3.5 (qop=auth).
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let resp = md5_hex(&format!(
            "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
        ));
        assert_eq!(resp, "6629fae49393a05397450978507c4ef1");
        assert!(ct_eq("abc", "abc") && !ct_eq("abc", "abd") && !ct_eq("a", "ab"));
    }

    #[test]
    fn nonces_are_recognised_and_age() {
        let r = Registrar::default();
        let other = Registrar::default();
        let t0 = Instant::now();
        let n = r.issue_nonce(t0);
        let life = Duration::from_secs(300);
        assert_ne!(n, r.issue_nonce(t0), "unique");
        assert!(matches!(r.nonce_age(&n, life, t0), NonceAge::Fresh(_)));
        assert_eq!(
            r.nonce_age(&n, life, t0 + Duration::from_secs(301)),
            NonceAge::Expired
        );
        assert_eq!(
            other.nonce_age(&n, life, t0),
            NonceAge::Unknown,
            "another secret"
        );
        let flipped = if n.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{flipped}", &n[..n.len() - 1]);
        assert_eq!(r.nonce_age(&forged, life, t0), NonceAge::Unknown);
        assert_eq!(r.nonce_age("garbage", life, t0), NonceAge::Unknown);
        assert_eq!(r.nonce_age("zz.zz", life, t0), NonceAge::Unknown);
    }

    #[test]
    fn bindings_refresh_remove_and_expire() {
        let mut r = Registrar::default();
        let agent = AgentId::new("alice");
        let now = Instant::now();
        let src = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        let c = |uri: &str, expires| ContactRequest {
            uri: uri.into(),
            expires,
            transport: Transport::Udp,
        };
        let ch = r.apply(
            &agent,
            Some(vec![c("sip:a@1", 60), c("sip:a@2", 30)]),
            src,
            now,
        );
        assert_eq!(ch.len(), 2);
        assert_eq!(r.view().of(&agent).len(), 2);
        assert!(r.expire(&agent, "sip:a@2", now).is_none(), "not due yet");
        let later = now + Duration::from_secs(31);
        assert_eq!(
            r.expire(&agent, "sip:a@2", later),
            Some(Change::Removed {
                contact: "sip:a@2".into(),
                expired: true
            })
        );
        let ch = r.apply(&agent, Some(vec![c("sip:a@1", 0)]), src, later);
        assert_eq!(ch.len(), 1);
        assert!(!r.view().is_registered(&agent));
        assert!(r.apply(&agent, None, src, later).is_empty());
    }
}
