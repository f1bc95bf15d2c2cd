//! REGISTER (RFC 3261 section 10.3) with digest authentication.

use super::{new_tag, Core};
use crate::msg::InRequest;
use crate::raw::{uri_param, uri_user, NameAddr};
use crate::registrar::{AuthOutcome, Change, ContactRequest};
use crate::timer::TimerKind;
use crate::transport::Transport;
use call_engine_events::{AgentId, SessionEvent};
use smol_str::SmolStr;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Seconds from a header or parameter, saturating at `u32::MAX`.
fn secs(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map(|n| n.min(u64::from(u32::MAX)) as u32)
            .unwrap_or(u32::MAX),
    )
}

impl Core {
    pub(super) fn on_register(&mut self, req: InRequest) {
        let now = Instant::now();
        let agent_name = req
            .raw
            .get("To")
            .and_then(NameAddr::parse)
            .and_then(|t| uri_user(&t.uri))
            .filter(|u| !u.is_empty());
        let Some(agent_name) = agent_name else {
            return self.reply(&req, 404);
        };
        match self.reg.check_auth(&self.cfg, &req, &agent_name, now) {
            AuthOutcome::Ok => {}
            AuthOutcome::Challenge { stale } => {
                let nonce = self.reg.issue_nonce(now);
                let mut challenge = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"",
                    self.cfg.domain
                );
                if stale {
                    challenge.push_str(", stale=true");
                }
                debug!(agent = %agent_name, stale, "REGISTER challenged");
                return self.reply_with(&req, 401, |b| b.header("WWW-Authenticate", challenge));
            }
            AuthOutcome::Forbidden { username } => {
                // One event (and one warning) per source address and second: a password
                // guesser is reported, not echoed onto the bus at its own rate.
                if self.auth_failures.admit(req.peer.addr.ip(), now) {
                    warn!(agent = %agent_name, %username, source = %req.peer.addr, "REGISTER authentication failed");
                    self.emit(
                        SessionEvent::AuthenticationFailed {
                            username: SmolStr::new(username),
                            source: SmolStr::new(req.peer.addr.to_string()),
                        },
                        None,
                    );
                } else {
                    self.stats
                        .auth_failures_unreported
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return self.reply(&req, 403);
            }
            AuthOutcome::BadRequest(why) => {
                debug!(agent = %agent_name, why, "bad REGISTER credentials");
                return self.reply_with(&req, 400, |b| {
                    b.header("Warning", format!("399 call-engine \"{why}\""))
                });
            }
        }
        let agent = AgentId::new(&agent_name);
        let header_expires = req.raw.get("Expires").and_then(secs);
        let elems = req.raw.get_list("Contact");
        let (min, max) = (self.cfg.min_expires_secs, self.cfg.max_expires_secs);
        let contacts = if elems.iter().any(|e| e.trim() == "*") {
            if elems.len() != 1 || header_expires != Some(0) {
                return self.reply_with(&req, 400, |b| {
                    b.header(
                        "Warning",
                        "399 call-engine \"Contact: * needs Expires: 0 and no other contact\"",
                    )
                });
            }
            None
        } else {
            let mut list = Vec::with_capacity(elems.len());
            for e in &elems {
                let Some(na) = NameAddr::parse(e) else {
                    return self.reply_with(&req, 400, |b| {
                        b.header("Warning", "399 call-engine \"Malformed Contact\"")
                    });
                };
                let requested = na
                    .param("expires")
                    .and_then(|v| v.as_deref().and_then(secs))
                    .or(header_expires)
                    .unwrap_or(self.cfg.default_expires_secs);
                if requested != 0 && requested < min {
                    debug!(agent = %agent, requested, min, "registration too brief: 423");
                    return self.reply_with(&req, 423, |b| b.header("Min-Expires", min));
                }
                let transport = match uri_param(&na.uri, "transport")
                    .flatten()
                    .map(|t| t.to_ascii_lowercase())
                    .as_deref()
                {
                    Some("tcp") => Transport::Tcp,
                    Some("udp") => Transport::Udp,
                    _ => req.peer.transport,
                };
                list.push(ContactRequest {
                    uri: na.uri,
                    expires: requested.min(max),
                    transport,
                });
            }
            Some(list)
        };
        let changes = self.reg.apply(&agent, contacts, req.peer, now);
        for change in changes {
            match change {
                Change::Bound {
                    contact,
                    expires_secs,
                } => {
                    if let Some(at) = self.reg.expires_at(&agent, &contact) {
                        self.timers
                            .at(at, TimerKind::BindingExpire(agent.clone(), contact.clone()));
                    }
                    info!(%agent, %contact, expires_secs, source = %req.peer, "registered");
                    self.emit(
                        SessionEvent::Registered {
                            agent: agent.clone(),
                            contact: SmolStr::new(contact),
                            expires_secs,
                        },
                        None,
                    );
                }
                Change::Removed { contact, expired } => {
                    info!(%agent, %contact, "unregistered");
                    self.emit(
                        SessionEvent::Unregistered {
                            agent: agent.clone(),
                            contact: SmolStr::new(contact),
                            expired,
                        },
                        None,
                    );
                }
            }
        }
        let bindings = self.reg.contacts_of(&agent, now);
        let tag = new_tag();
        let mut b = self.response(&req, 200, Some(&tag));
        for (contact, left) in bindings {
            b = b.header("Contact", format!("<{contact}>;expires={left}"));
        }
        let resp = b.finish(None);
        self.respond(&req, 200, resp);
    }
}

#[cfg(test)]
mod tests {
    use super::secs;

    #[test]
    fn parses_seconds() {
        assert_eq!(secs("60"), Some(60));
        assert_eq!(secs(" 0 "), Some(0));
        assert_eq!(secs("99999999999999999999"), Some(u32::MAX));
        assert_eq!(secs("-1"), None);
        assert_eq!(secs(""), None);
    }
}
