//! A small, careful SDP (RFC 4566) reader for audio offers and answers, offer/answer
//! negotiation (RFC 3264) for G.711 and telephone-event, and the SDP we write.
//!
//! Only what the media adapter needs is interpreted: `v=`, `o=`, `c=`, `m=`,
//! `a=rtpmap`, `a=ptime` and the direction attributes. Everything else is skipped. Any
//! input, including garbage, yields either a description or an [`SdpError`]; nothing
//! panics.

use crate::g711::{codec_of_static, encoding_name, CLOCK_RATE};
use call_engine_events::Codec;
use smol_str::SmolStr;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// Largest SDP body we accept.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Most media sections we accept.
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// Why an SDP body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// Empty body.
    #[error("empty SDP")]
    Empty,
    /// Larger than [`MAX_SDP_LEN`] or with more than [`MAX_MEDIA_SECTIONS`] media.
    #[error("SDP too large")]
    TooLarge,
    /// The first line is not `v=0`.
    #[error("SDP does not start with v=0")]
    BadVersion,
    /// A line is not `<letter>=<value>`.
    #[error("malformed SDP line {line}")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// A `c=` line we cannot read.
    #[error("bad connection line {line}")]
    BadConnection {
        /// 1-based line number.
        line: usize,
    },
    /// An `m=` line we cannot read.
    #[error("bad media line {line}")]
    BadMedia {
        /// 1-based line number.
        line: usize,
    },
    /// No active `m=audio` section.
    #[error("no audio stream offered")]
    NoAudio,
    /// The audio section uses a transport we do not speak (e.g. SRTP `RTP/SAVP`).
    #[error("unsupported audio transport {0}")]
    UnsupportedTransport(SmolStr),
    /// The audio section has no connection address (neither media nor session level).
    #[error("no connection address for the audio stream")]
    NoConnection,
    /// None of the offered formats is PCMU or PCMA at 8 kHz.
    #[error("no common codec (we support PCMU and PCMA)")]
    NoCommonCodec,
}

/// Media direction (RFC 3264 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Both ways (the default).
    SendRecv,
    /// The describing side only sends.
    SendOnly,
    /// The describing side only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        match s {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name (`sendrecv`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answerer uses for this offered direction.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the describing side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the describing side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// An `a=rtpmap` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type.
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `telephone-event`, …).
    pub encoding: SmolStr,
    /// Clock rate.
    pub clock_rate: u32,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// Media type (`audio`, `video`, …).
    pub media: SmolStr,
    /// Port; 0 means the stream is disabled.
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, …).
    pub protocol: SmolStr,
    /// Format tokens as written (payload type numbers for RTP).
    pub formats: Vec<SmolStr>,
    /// Media-level connection address.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` attributes.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=ptime`, milliseconds.
    pub ptime: Option<u32>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
}

impl MediaSection {
    fn new(media: &str, port: u16, protocol: &str, formats: Vec<SmolStr>) -> Self {
        MediaSection {
            media: media.into(),
            port,
            protocol: protocol.into(),
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            ptime: None,
            direction: None,
        }
    }

    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    /// The payload types of the format list that parse as numbers, in order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level connection address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// Media sections, in order.
    pub media: Vec<MediaSection>,
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut it = value.split_ascii_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let family = it.next()?;
    let addr = it.next()?;
    // Strip a multicast TTL / address count suffix.
    let addr = addr.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

fn parse_media(value: &str) -> Option<MediaSection> {
    let mut it = value.split_ascii_whitespace();
    let media = it.next()?;
    let port = it.next()?.split('/').next()?.parse::<u16>().ok()?;
    let protocol = it.next()?;
    let formats: Vec<SmolStr> = it.map(SmolStr::new).collect();
    Some(MediaSection::new(media, port, protocol, formats))
}

fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.split_once(' ')?;
    let pt = pt.trim().parse::<u8>().ok()?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next()?.trim();
    if encoding.is_empty() {
        return None;
    }
    let clock_rate = parts.next()?.trim().parse::<u32>().ok()?;
    Some(RtpMap {
        payload_type: pt,
        encoding: encoding.into(),
        clock_rate,
    })
}

impl SessionDescription {
    /// Parses an SDP body.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLarge);
        }
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        match lines.next() {
            None => return Err(SdpError::Empty),
            Some((_, l)) if l.trim_end() == "v=0" => {}
            Some(_) => return Err(SdpError::BadVersion),
        }
        let mut sd = SessionDescription {
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        for (i, line) in lines {
            let n = i + 1;
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(SdpError::Syntax { line: n });
            }
            let value = &line[2..];
            match b[0] {
                b'c' => {
                    let ip = parse_connection(value).ok_or(SdpError::BadConnection { line: n })?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(ip),
                        None => sd.connection = Some(ip),
                    }
                }
                b'm' => {
                    if sd.media.len() >= MAX_MEDIA_SECTIONS {
                        return Err(SdpError::TooLarge);
                    }
                    sd.media
                        .push(parse_media(value).ok_or(SdpError::BadMedia { line: n })?);
                }
                b'a' => {
                    let (name, arg) = match value.split_once(':') {
                        Some((k, v)) => (k, Some(v)),
                        None => (value.trim(), None),
                    };
                    if let Some(d) = Direction::parse(name) {
                        match sd.media.last_mut() {
                            Some(m) => m.direction = Some(d),
                            None => sd.direction = Some(d),
                        }
                        continue;
                    }
                    let (Some(m), Some(arg)) = (sd.media.last_mut(), arg) else {
                        continue;
                    };
                    match name {
                        // A malformed rtpmap is skipped: the static table still applies.
                        "rtpmap" => m.rtpmaps.extend(parse_rtpmap(arg)),
                        "ptime" => m.ptime = arg.trim().parse().ok(),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Ok(sd)
    }

    /// The index of the first active (`port != 0`) audio section.
    pub fn audio_index(&self) -> Option<usize> {
        self.media
            .iter()
            .position(|m| m.media.eq_ignore_ascii_case("audio") && m.port != 0)
    }
}

/// The outcome of negotiating an audio stream from the far end's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP (`None` when the far end gave `0.0.0.0` / `::`: on hold).
    pub remote: Option<SocketAddr>,
    /// The codec.
    pub codec: Codec,
    /// Its payload type as the far end numbered it.
    pub audio_pt: u8,
    /// The telephone-event payload type, if the far end supports RFC 4733.
    pub telephone_event: Option<u8>,
    /// The far end's direction.
    pub remote_direction: Direction,
    /// The index of the audio section among the SDP's media sections.
    pub media_index: usize,
}

impl Negotiated {
    /// Whether we should send media to the far end.
    pub fn send(&self) -> bool {
        self.remote.is_some() && self.remote_direction.receives()
    }
}

fn supported_codec(m: &MediaSection, pt: u8) -> Option<Codec> {
    match m.rtpmap(pt) {
        Some(map) if map.clock_rate == CLOCK_RATE => {
            if map.encoding.eq_ignore_ascii_case("PCMU") {
                Some(Codec::Pcmu)
            } else if map.encoding.eq_ignore_ascii_case("PCMA") {
                Some(Codec::Pcma)
            } else {
                None
            }
        }
        Some(_) => None,
        None => codec_of_static(pt),
    }
}

/// Negotiates the audio stream of the far end's SDP (an offer we answer, or the answer to
/// our offer): the first format that is PCMU or PCMA wins; telephone-event at 8 kHz is
/// used if present.
pub fn negotiate(sd: &SessionDescription) -> Result<Negotiated, SdpError> {
    let Some(idx) = sd.audio_index() else {
        return Err(SdpError::NoAudio);
    };
    let m = &sd.media[idx];
    if !matches!(m.protocol.as_str(), "RTP/AVP" | "RTP/AVPF") {
        return Err(SdpError::UnsupportedTransport(m.protocol.clone()));
    }
    let ip = m
        .connection
        .or(sd.connection)
        .ok_or(SdpError::NoConnection)?;
    let (codec, audio_pt) = m
        .payload_types()
        .find_map(|pt| supported_codec(m, pt).map(|c| (c, pt)))
        .ok_or(SdpError::NoCommonCodec)?;
    let telephone_event = m.payload_types().find(|pt| {
        m.rtpmap(*pt).is_some_and(|map| {
            map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == CLOCK_RATE
        })
    });
    let remote_direction = m.direction.or(sd.direction).unwrap_or(Direction::SendRecv);
    Ok(Negotiated {
        remote: (!ip.is_unspecified()).then_some(SocketAddr::new(ip, m.port)),
        codec,
        audio_pt,
        telephone_event,
        remote_direction,
        media_index: idx,
    })
}

/// What identifies our side in the SDP we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSdp {
    /// Address advertised in `o=` and `c=`.
    pub address: IpAddr,
    /// RTP port.
    pub port: u16,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version (incremented for every new SDP of the endpoint).
    pub version: u64,
    /// Packetisation time, milliseconds.
    pub ptime_ms: u32,
}

fn ip_family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn write_session_header(s: &mut String, local: &LocalSdp) {
    let fam = ip_family(local.address);
    let _ = write!(
        s,
        "v=0\r\no=call-engine {} {} IN {fam} {}\r\ns=call-engine\r\nc=IN {fam} {}\r\nt=0 0\r\n",
        local.session_id, local.version, local.address, local.address
    );
}

/// Our offer: PCMU, PCMA and telephone-event/8000 on payload type 101, sendrecv.
pub fn build_offer(local: &LocalSdp) -> String {
    let mut s = String::with_capacity(320);
    write_session_header(&mut s, local);
    let _ = write!(
        s,
        "m=audio {} RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\n\
         a=ptime:{}\r\n\
         a=sendrecv\r\n",
        local.port, local.ptime_ms
    );
    s
}

/// Our answer to `offer`, negotiated as `neg`: the same media sections in the same
/// order, every section but the audio one rejected (port 0).
pub fn build_answer(local: &LocalSdp, offer: &SessionDescription, neg: &Negotiated) -> String {
    let mut s = String::with_capacity(320);
    write_session_header(&mut s, local);
    for (i, m) in offer.media.iter().enumerate() {
        if i != neg.media_index {
            let fmt = m.formats.first().map(SmolStr::as_str).unwrap_or("0");
            let _ = write!(s, "m={} 0 {} {}\r\n", m.media, m.protocol, fmt);
            continue;
        }
        let _ = write!(s, "m=audio {} {} {}", local.port, m.protocol, neg.audio_pt);
        if let Some(te) = neg.telephone_event {
            let _ = write!(s, " {te}");
        }
        let _ = write!(
            s,
            "\r\na=rtpmap:{} {}/8000\r\n",
            neg.audio_pt,
            encoding_name(neg.codec)
        );
        if let Some(te) = neg.telephone_event {
            let _ = write!(
                s,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n"
            );
        }
        let _ = write!(
            s,
            "a=ptime:{}\r\na={}\r\n",
            local.ptime_ms,
            neg.remote_direction.answer().as_str()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=- 1 1 IN IP4 192.0.2.1\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.1\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 18 8 0 96\r\n\
        a=rtpmap:18 G729/8000\r\n\
        a=rtpmap:96 telephone-event/8000\r\n\
        a=fmtp:96 0-16\r\n\
        a=ptime:20\r\n\
        m=video 51372 RTP/AVP 31\r\n";

    fn local() -> LocalSdp {
        LocalSdp {
            address: "198.51.100.7".parse().unwrap(),
            port: 20000,
            session_id: 42,
            version: 1,
            ptime_ms: 20,
        }
    }

    #[test]
    fn answers_first_supported_codec_with_telephone_event() {
        let sd = SessionDescription::parse(OFFER).unwrap();
        assert_eq!(sd.media.len(), 2);
        let n = negotiate(&sd).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.audio_pt, 8);
        assert_eq!(n.telephone_event, Some(96));
        assert_eq!(n.remote, Some("192.0.2.1:49170".parse().unwrap()));
        assert_eq!(n.remote_direction, Direction::SendRecv);
        assert!(n.send());

        let answer = build_answer(&local(), &sd, &n);
        assert!(
            answer.contains("m=audio 20000 RTP/AVP 8 96\r\n"),
            "{answer}"
        );
        assert!(answer.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(answer.contains("a=rtpmap:96 telephone-event/8000\r\n"));
        assert!(answer.contains("m=video 0 RTP/AVP 31\r\n"));
        assert!(answer.contains("c=IN IP4 198.51.100.7\r\n"));
        assert!(answer.contains("a=sendrecv\r\n"));
        // Our own answer parses and negotiates back to the same thing.
        let back = negotiate(&SessionDescription::parse(&answer).unwrap()).unwrap();
        assert_eq!(back.codec, Codec::Pcma);
        assert_eq!(back.telephone_event, Some(96));
        assert_eq!(back.remote, Some("198.51.100.7:20000".parse().unwrap()));
    }

    #[test]
    fn offer_round_trip() {
        let offer = build_offer(&local());
        let sd = SessionDescription::parse(&offer).unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(
            (n.codec, n.audio_pt, n.telephone_event),
            (Codec::Pcmu, 0, Some(101))
        );
        assert_eq!(sd.media[0].ptime, Some(20));
        assert_eq!(sd.media[0].rtpmaps.len(), 3);
    }

    #[test]
    fn static_types_without_rtpmap_and_no_telephone_event() {
        let sd =
            SessionDescription::parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n").unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(
            (n.codec, n.audio_pt, n.telephone_event),
            (Codec::Pcmu, 0, None)
        );
        let answer = build_answer(&local(), &sd, &n);
        assert!(answer.contains("m=audio 20000 RTP/AVP 0\r\n"));
        assert!(!answer.contains("telephone-event"));
    }

    #[test]
    fn dynamic_pcmu_and_media_level_connection_and_ipv6() {
        let sd = SessionDescription::parse(
            "v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVPF 97\nc=IN IP6 2001:db8::1\na=rtpmap:97 pcmu/8000\n",
        )
        .unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!((n.codec, n.audio_pt), (Codec::Pcmu, 97));
        assert_eq!(n.remote, Some("[2001:db8::1]:4000".parse().unwrap()));
    }

    #[test]
    fn hold_and_directions() {
        let sd = SessionDescription::parse(
            "v=0\nc=IN IP4 0.0.0.0\na=sendonly\nm=audio 4000 RTP/AVP 8\n",
        )
        .unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(n.remote, None);
        assert_eq!(n.remote_direction, Direction::SendOnly);
        assert!(!n.send());
        let answer = build_answer(&local(), &sd, &n);
        assert!(answer.contains("a=recvonly\r\n"));

        let sd = SessionDescription::parse(
            "v=0\nc=IN IP4 10.0.0.2\nm=audio 4000 RTP/AVP 8\na=inactive\n",
        )
        .unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(n.remote_direction, Direction::Inactive);
        assert!(!n.send());
        assert_eq!(Direction::RecvOnly.answer(), Direction::SendOnly);
    }

    #[test]
    fn rejections() {
        let cases: &[(&str, SdpError)] = &[
            ("", SdpError::Empty),
            ("\r\n\r\n", SdpError::Empty),
            ("hello world", SdpError::BadVersion),
            ("v=1\n", SdpError::BadVersion),
            ("v=0\nthis is not sdp\n", SdpError::Syntax { line: 2 }),
            ("v=0\n=x\n", SdpError::Syntax { line: 2 }),
            (
                "v=0\nc=IN IP4 999.1.1.1\n",
                SdpError::BadConnection { line: 2 },
            ),
            (
                "v=0\nc=IN IP4 2001:db8::1\n",
                SdpError::BadConnection { line: 2 },
            ),
            ("v=0\nc=IN\n", SdpError::BadConnection { line: 2 }),
            ("v=0\nm=audio\n", SdpError::BadMedia { line: 2 }),
            (
                "v=0\nm=audio 99999 RTP/AVP 0\n",
                SdpError::BadMedia { line: 2 },
            ),
            ("v=0\nc=IN IP4 1.2.3.4\n", SdpError::NoAudio),
            (
                "v=0\nc=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 0\n",
                SdpError::NoAudio,
            ),
            (
                "v=0\nc=IN IP4 1.2.3.4\nm=video 5 RTP/AVP 31\n",
                SdpError::NoAudio,
            ),
            (
                "v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/SAVP 0\n",
                SdpError::UnsupportedTransport("RTP/SAVP".into()),
            ),
            ("v=0\nm=audio 5 RTP/AVP 0\n", SdpError::NoConnection),
            (
                "v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 18 9 x\na=rtpmap:18 G729/8000\n",
                SdpError::NoCommonCodec,
            ),
            (
                "v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\na=rtpmap:0 PCMU/16000\n",
                SdpError::NoCommonCodec,
            ),
            (
                "v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP\n",
                SdpError::NoCommonCodec,
            ),
        ];
        for (text, err) in cases {
            let r = SessionDescription::parse(text).and_then(|sd| negotiate(&sd));
            assert_eq!(r.as_ref().err(), Some(err), "{text:?} gave {r:?}");
        }
        let big = format!("v=0\n{}", "a=x\n".repeat(MAX_SDP_LEN));
        assert_eq!(SessionDescription::parse(&big), Err(SdpError::TooLarge));
        let many = format!(
            "v=0\n{}",
            "m=audio 1 RTP/AVP 0\n".repeat(MAX_MEDIA_SECTIONS + 1)
        );
        assert_eq!(SessionDescription::parse(&many), Err(SdpError::TooLarge));
    }

    #[test]
    fn malformed_attributes_are_skipped() {
        let sd = SessionDescription::parse(
            "v=0\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 8 101\na=rtpmap:\na=rtpmap:abc PCMA/8000\n\
             a=rtpmap:101 telephone-event\na=ptime:x\na=unknown\na=rtpmap:8\n",
        )
        .unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.telephone_event, None);
        assert_eq!(sd.media[0].ptime, None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"v=0\r\nmcaIP46 /:.0123456789audioRTP/AVPrtpmap-sendonly";
        for _ in 0..2000 {
            let mut s = String::from("v=0\n");
            for _ in 0..(x % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(char::from(alphabet[(x % alphabet.len() as u64) as usize]));
            }
            if let Ok(sd) = SessionDescription::parse(&s) {
                if let Ok(n) = negotiate(&sd) {
                    let _ = build_answer(&local(), &sd, &n);
                }
            }
            // Arbitrary bytes as lossy UTF-8 too.
            let bytes: Vec<u8> = (0..64).map(|i| (x >> (i % 56)) as u8).collect();
            let _ = SessionDescription::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
