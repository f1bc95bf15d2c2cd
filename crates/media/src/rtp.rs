//! A small RTP (RFC 3550) header codec and the RFC 4733 telephone-event payload.
//!
//! Parsing never panics and never allocates: [`RtpPacket::parse`] borrows the payload from
//! the datagram. Writing produces the 12-byte fixed header only (no CSRC list, no header
//! extension), which is all an anchoring relay sends.

use thiserror::Error;

/// The RTP version this codec speaks.
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed RTP header.
pub const HEADER_LEN: usize = 12;

/// The fields of an RTP header the media adapter reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit (start of a talk spurt, start of a telephone event).
    pub marker: bool,
    /// Payload type, `0..128`.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp (8 kHz clock for G.711 and telephone-event).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes the 12-byte fixed header (version 2, no padding, extension or CSRCs) into
    /// the start of `out`. Returns the number of bytes written, or `None` if `out` is
    /// shorter than [`HEADER_LEN`].
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let out = out.get_mut(..HEADER_LEN)?;
        out[0] = RTP_VERSION << 6;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7f);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Some(HEADER_LEN)
    }

    /// The fixed header as bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        // Cannot fail: the array has exactly HEADER_LEN bytes.
        let _ = self.write(&mut b);
        b
    }
}

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Shorter than the fixed header.
    #[error("datagram of {0} bytes is shorter than an RTP header")]
    TooShort(usize),
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// An RTCP packet (packet type 192..=223) multiplexed on the RTP port (RFC 5761).
    #[error("RTCP packet type {0} on the RTP port")]
    Rtcp(u8),
    /// The CSRC list or header extension runs past the end of the datagram.
    #[error("CSRC list or header extension is truncated")]
    Truncated,
    /// The padding count is zero or larger than the payload.
    #[error("invalid padding")]
    BadPadding,
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The header.
    pub header: RtpHeader,
    /// The payload, without CSRCs, header extension or padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram. Any byte sequence is accepted as input: malformed packets are
    /// reported as an [`RtpError`], never by panicking.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < HEADER_LEN {
            return Err(RtpError::TooShort(buf.len()));
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        if (192..=223).contains(&b1) {
            return Err(RtpError::Rtcp(b1));
        }
        let padding = b0 & 0x20 != 0;
        let extension = b0 & 0x10 != 0;
        let csrc_count = usize::from(b0 & 0x0f);
        let mut start = HEADER_LEN + 4 * csrc_count;
        if extension {
            let ext = buf.get(start..start + 4).ok_or(RtpError::Truncated)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
        }
        if start > buf.len() {
            return Err(RtpError::Truncated);
        }
        let mut end = buf.len();
        if padding {
            let pad = usize::from(buf[end - 1]);
            if pad == 0 || pad > end - start {
                return Err(RtpError::BadPadding);
            }
            end -= pad;
        }
        Ok(RtpPacket {
            header: RtpHeader {
                marker: b1 & 0x80 != 0,
                payload_type: b1 & 0x7f,
                sequence: u16::from_be_bytes([buf[2], buf[3]]),
                timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            },
            payload: &buf[start..end],
        })
    }
}

/// Writes a complete packet (fixed header + payload) into `out`; returns its length, or
/// `None` if `out` is too small.
pub fn write_packet(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let n = HEADER_LEN + payload.len();
    header.write(out)?;
    out.get_mut(HEADER_LEN..n)?.copy_from_slice(payload);
    Some(n)
}

/// Whether sequence number `a` is newer than `b` (modulo 2^16).
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Whether timestamp `a` is newer than `b` (modulo 2^32).
pub fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// An RFC 4733 telephone-event payload (the first 4 bytes of the RTP payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 `A`–`D`, others tones/flash.
    pub event: u8,
    /// The end bit: this is (one of the up to three copies of) the last packet.
    pub end: bool,
    /// Volume in -dBm0, 0..=63.
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the payload; `None` if it is shorter than 4 bytes.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b = payload.get(..4)?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    /// The DTMF digit of this event, if it is one.
    pub fn digit(&self) -> Option<char> {
        dtmf_digit(self.event)
    }
}

/// The DTMF character of an RFC 4733 event code (`0`–`9`, `*`, `#`, `A`–`D`).
pub fn dtmf_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF character (case-insensitive for `A`–`D`).
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 8,
            sequence: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: 0x0102_0304,
        }
    }

    #[test]
    fn round_trip() {
        let mut out = [0u8; 64];
        let n = write_packet(&header(), &[1, 2, 3], &mut out).unwrap();
        assert_eq!(n, 15);
        assert_eq!(out[0], 0x80);
        assert_eq!(out[1], 0x88);
        let p = RtpPacket::parse(&out[..n]).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.payload, &[1, 2, 3]);
        assert_eq!(header().to_bytes(), out[..12]);
    }

    #[test]
    fn write_into_short_buffer_fails() {
        assert_eq!(header().write(&mut [0u8; 11]), None);
        assert_eq!(write_packet(&header(), &[0; 10], &mut [0u8; 20]), None);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 2, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[9; 8]); // 2 CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // extension of 1 word
        p.extend_from_slice(&[42, 43]); // payload
        p.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let pkt = RtpPacket::parse(&p).unwrap();
        assert_eq!(pkt.payload, &[42, 43]);
        assert_eq!(pkt.header.sequence, 1);
        assert_eq!(pkt.header.timestamp, 2);
        assert_eq!(pkt.header.ssrc, 3);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::TooShort(0)));
        assert_eq!(RtpPacket::parse(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut p = header().to_bytes().to_vec();
        p[0] = 0x40;
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::BadVersion(1)));
        p[0] = 0x80;
        p[1] = 200;
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Rtcp(200)));
        p[1] = 0;
        p[0] = 0x8f; // 15 CSRCs, none present
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Truncated));
        p[0] = 0x90; // extension header missing
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Truncated));
        let mut q = p.clone();
        q.extend_from_slice(&[0, 0, 0xff, 0xff]); // extension claims 65535 words
        assert_eq!(RtpPacket::parse(&q), Err(RtpError::Truncated));
        p[0] = 0xa0; // padding with count 0
        p.push(0);
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::BadPadding));
        *p.last_mut().unwrap() = 200; // padding longer than payload
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::BadPadding));
    }

    #[test]
    fn every_short_prefix_and_random_bytes_parse_without_panic() {
        let mut x: u32 = 12345;
        for len in 0..200usize {
            let mut buf = vec![0u8; len];
            for b in &mut buf {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (x >> 24) as u8;
            }
            let _ = RtpPacket::parse(&buf);
            if let Some(b) = buf.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            let _ = RtpPacket::parse(&buf);
        }
    }

    #[test]
    fn wrapping_comparisons() {
        assert!(seq_newer(0, 0xffff));
        assert!(!seq_newer(0xffff, 0));
        assert!(!seq_newer(5, 5));
        assert!(ts_newer(10, 0xffff_fff0));
    }

    #[test]
    fn telephone_events() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Some(e));
        assert_eq!(e.digit(), Some('#'));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
        for (c, n) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(dtmf_event(c), Some(n));
            assert_eq!(dtmf_digit(n), Some(c));
        }
        assert_eq!(dtmf_event('d'), Some(15));
        assert_eq!(dtmf_digit(16), None);
        assert_eq!(dtmf_event('x'), None);
    }
}
