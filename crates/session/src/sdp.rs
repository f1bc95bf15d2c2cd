//! The little SDP we need: is an offer a hold, what direction answers it, and our last
//! SDP with its direction changed (the media adapter's SDP is otherwise passed through
//! untouched). DTMF from SIP INFO bodies.

use rvoip_sip_core::{parse_sdp, MediaDirection};

/// The direction of an offer's first audio stream (media level over session level) and
/// whether its connection address is `0.0.0.0` (RFC 2543 hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OfferDirection {
    pub direction: Direction,
    pub null_address: bool,
}

/// SDP direction attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "a=sendrecv",
            Direction::SendOnly => "a=sendonly",
            Direction::RecvOnly => "a=recvonly",
            Direction::Inactive => "a=inactive",
        }
    }

    fn from_media(d: MediaDirection) -> Self {
        match d {
            MediaDirection::SendRecv => Direction::SendRecv,
            MediaDirection::SendOnly => Direction::SendOnly,
            MediaDirection::RecvOnly => Direction::RecvOnly,
            MediaDirection::Inactive => Direction::Inactive,
        }
    }
}

impl OfferDirection {
    /// Whether the offerer puts us on hold (RFC 3264 section 8.4, RFC 2543 `c=0.0.0.0`).
    pub fn is_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive) || self.null_address
    }

    /// The direction of our answer (RFC 3264 section 6.1).
    pub fn answer(&self) -> Direction {
        match self.direction {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
            Direction::SendRecv if self.null_address => Direction::RecvOnly,
            Direction::SendRecv => Direction::SendRecv,
        }
    }
}

/// Reads an offer with rvoip-sip-core's SDP parser, falling back to a line scan when it
/// rejects the body (we only need two facts, and phones' SDP is not always pristine).
pub(crate) fn offer_direction(sdp: &str) -> OfferDirection {
    let parsed =
        std::panic::catch_unwind(|| parse_sdp(&bytes::Bytes::copy_from_slice(sdp.as_bytes())));
    if let Ok(Ok(session)) = parsed {
        let audio = session
            .media_descriptions
            .iter()
            .find(|m| m.media.eq_ignore_ascii_case("audio"))
            .or(session.media_descriptions.first());
        let direction = audio
            .and_then(|m| m.get_direction())
            .or_else(|| session.get_direction())
            .map(Direction::from_media)
            .unwrap_or(Direction::SendRecv);
        let addr = audio
            .and_then(|m| m.connection_info.as_ref())
            .or(session.connection_info.as_ref())
            .map(|c| c.connection_address.clone());
        return OfferDirection {
            direction,
            null_address: addr.is_some_and(|a| a == "0.0.0.0"),
        };
    }
    scan_direction(sdp)
}

fn scan_direction(sdp: &str) -> OfferDirection {
    let mut session_dir = None;
    let mut media_dir = None;
    let mut in_media = false;
    let mut null_address = false;
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            if in_media {
                break; // first stream only
            }
            in_media = true;
            continue;
        }
        let dir = match line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        if let Some(d) = dir {
            if in_media {
                media_dir = Some(d);
            } else {
                session_dir = Some(d);
            }
        }
        if let Some(c) = line.strip_prefix("c=") {
            null_address = c.split_whitespace().nth(2) == Some("0.0.0.0");
        }
    }
    OfferDirection {
        direction: media_dir.or(session_dir).unwrap_or(Direction::SendRecv),
        null_address,
    }
}

/// `sdp` with every direction attribute set to `dir` (added to each media section that
/// has none) and, when that changes the body, the `o=` session version incremented
/// (RFC 3264 section 8).
pub(crate) fn with_direction(sdp: &str, dir: Direction) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().collect();
    let is_dir = |l: &str| {
        matches!(
            l.trim(),
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        )
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    let mut section_has_dir = false;
    let mut in_media = false;
    for line in &lines {
        if line.starts_with("m=") {
            if in_media && !section_has_dir {
                out.push(dir.attr().to_string());
            }
            in_media = true;
            section_has_dir = false;
            out.push(line.to_string());
            continue;
        }
        if is_dir(line) {
            if in_media {
                section_has_dir = true;
                out.push(dir.attr().to_string());
            }
            // session-level direction attributes are dropped: media level rules
            continue;
        }
        out.push(line.to_string());
    }
    if in_media && !section_has_dir {
        out.push(dir.attr().to_string());
    }
    let changed = out.iter().map(String::as_str).ne(lines.iter().copied());
    if changed {
        for line in out.iter_mut() {
            if let Some(o) = line.strip_prefix("o=") {
                let mut f: Vec<String> = o.split_whitespace().map(str::to_string).collect();
                if f.len() >= 6 {
                    if let Ok(v) = f[2].parse::<u64>() {
                        f[2] = v.wrapping_add(1).to_string();
                        *line = format!("o={}", f.join(" "));
                    }
                }
                break;
            }
        }
    }
    let mut s = out.join(eol);
    s.push_str(eol);
    s
}

/// The digit of a SIP INFO DTMF body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`).
pub(crate) fn info_digit(content_type: &str, body: &str) -> Option<char> {
    let ct = content_type.trim().to_ascii_lowercase();
    let value = if ct.starts_with("application/dtmf-relay") {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| v.trim().to_string())
        })?
    } else if ct.starts_with("application/dtmf") {
        body.trim().to_string()
    } else {
        return None;
    };
    let mut chars = value.chars();
    let c = chars.next()?.to_ascii_uppercase();
    if chars.next().is_some() {
        // Numeric event codes 10/11 are '*' and '#'.
        return match value.as_str() {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => None,
        };
    }
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n";

    #[test]
    fn detects_hold() {
        let d = offer_direction(OFFER);
        assert!(d.is_hold());
        assert_eq!(d.answer(), Direction::RecvOnly);
        let resume = OFFER.replace("a=sendonly", "a=sendrecv");
        assert!(!offer_direction(&resume).is_hold());
        let old = OFFER
            .replace("a=sendonly", "a=sendrecv")
            .replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0");
        assert!(offer_direction(&old).is_hold());
        assert!(scan_direction("m=audio 1 RTP/AVP 0\r\na=inactive\r\n").is_hold());
        assert!(!offer_direction("garbage").is_hold());
    }

    #[test]
    fn rewrites_direction_and_version() {
        let ours = "v=0\r\no=- 7 3 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let held = with_direction(ours, Direction::RecvOnly);
        assert!(held.contains("o=- 7 4 IN IP4"));
        assert!(held.ends_with("a=recvonly\r\n"));
        let again = with_direction(&held, Direction::RecvOnly);
        assert_eq!(again, held, "unchanged SDP keeps its version");
        let back = with_direction(&held, Direction::SendRecv);
        assert!(
            back.contains("o=- 7 5 IN IP4")
                && back.contains("a=sendrecv")
                && !back.contains("recvonly")
        );
    }

    #[test]
    fn parses_dtmf() {
        assert_eq!(
            info_digit("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            info_digit("application/dtmf-relay", "Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(info_digit("application/dtmf", "11"), Some('#'));
        assert_eq!(info_digit("text/plain", "5"), None);
        assert_eq!(info_digit("application/dtmf-relay", "Signal=xyz"), None);
    }
}
