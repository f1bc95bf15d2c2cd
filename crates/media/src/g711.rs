//! G.711 helpers over `codec_core` (rvoip-codec-core): slice encode/decode, static
//! payload types, and µ-law ↔ A-law transcoding tables.
//!
//! Transcoding goes through linear PCM (`expand` then `compress`, exactly as decoding and
//! re-encoding would); the 256-entry tables are computed at compile time from
//! codec-core's `const fn`s, so the per-packet cost is one table lookup per byte.

use call_engine_events::Codec;
use codec_core::codecs::g711::{alaw_compress, alaw_expand, ulaw_compress, ulaw_expand};

/// The clock rate of G.711 and of the telephone-event payload we negotiate.
pub const CLOCK_RATE: u32 = 8000;
/// Static payload type of PCMU.
pub const PT_PCMU: u8 = 0;
/// Static payload type of PCMA.
pub const PT_PCMA: u8 = 8;
/// The payload type we offer for telephone-event (RFC 4733).
pub const PT_TELEPHONE_EVENT: u8 = 101;

/// The static RTP payload type of a codec.
pub const fn static_payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => PT_PCMU,
        Codec::Pcma => PT_PCMA,
    }
}

/// The codec of a static payload type (0 → PCMU, 8 → PCMA).
pub const fn codec_of_static(pt: u8) -> Option<Codec> {
    match pt {
        PT_PCMU => Some(Codec::Pcmu),
        PT_PCMA => Some(Codec::Pcma),
        _ => None,
    }
}

/// The SDP encoding name of a codec.
pub const fn encoding_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Pcmu => "PCMU",
        Codec::Pcma => "PCMA",
    }
}

/// Encodes one linear sample.
#[inline]
pub fn encode_sample(codec: Codec, sample: i16) -> u8 {
    match codec {
        Codec::Pcmu => ulaw_compress(sample),
        Codec::Pcma => alaw_compress(sample),
    }
}

/// Decodes one G.711 byte.
#[inline]
pub fn decode_sample(codec: Codec, byte: u8) -> i16 {
    match codec {
        Codec::Pcmu => ulaw_expand(byte),
        Codec::Pcma => alaw_expand(byte),
    }
}

/// Encodes `pcm` into `out` (one byte per sample); encodes `min(pcm.len(), out.len())`
/// samples and returns that count.
pub fn encode(codec: Codec, pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, s) in out[..n].iter_mut().zip(&pcm[..n]) {
        *o = encode_sample(codec, *s);
    }
    n
}

/// Decodes `data` into `out`; decodes `min(data.len(), out.len())` bytes and returns that
/// count.
pub fn decode(codec: Codec, data: &[u8], out: &mut [i16]) -> usize {
    let n = data.len().min(out.len());
    for (o, b) in out[..n].iter_mut().zip(&data[..n]) {
        *o = decode_sample(codec, *b);
    }
    n
}

/// The byte that encodes silence (linear 0).
pub fn silence(codec: Codec) -> u8 {
    encode_sample(codec, 0)
}

const fn table(from_ulaw: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if from_ulaw {
            alaw_compress(ulaw_expand(i as u8))
        } else {
            ulaw_compress(alaw_expand(i as u8))
        };
        i += 1;
    }
    t
}

static ULAW_TO_ALAW: [u8; 256] = table(true);
static ALAW_TO_ULAW: [u8; 256] = table(false);

/// Transcodes G.711 bytes from `from` to `to` (same length: one byte per sample), via
/// linear PCM. Copies when the codecs are equal. Writes `min(src.len(), dst.len())`
/// bytes and returns that count.
pub fn transcode(from: Codec, to: Codec, src: &[u8], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    match (from, to) {
        (Codec::Pcmu, Codec::Pcma) => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = ULAW_TO_ALAW[usize::from(*s)];
            }
        }
        (Codec::Pcma, Codec::Pcmu) => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = ALAW_TO_ULAW[usize::from(*s)];
            }
        }
        _ => dst.copy_from_slice(src),
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_linear_round_trip() {
        for b in 0..=255u8 {
            let mut out = [0u8];
            transcode(Codec::Pcmu, Codec::Pcma, &[b], &mut out);
            assert_eq!(out[0], alaw_compress(ulaw_expand(b)));
            transcode(Codec::Pcma, Codec::Pcmu, &[b], &mut out);
            assert_eq!(out[0], ulaw_compress(alaw_expand(b)));
            transcode(Codec::Pcma, Codec::Pcma, &[b], &mut out);
            assert_eq!(out[0], b);
        }
    }

    #[test]
    fn encode_decode_within_quantisation() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 12000.0) as i16)
            .collect();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = [0u8; 160];
            assert_eq!(encode(codec, &pcm, &mut enc), 160);
            let mut dec = [0i16; 160];
            assert_eq!(decode(codec, &enc, &mut dec), 160);
            for (a, b) in pcm.iter().zip(&dec) {
                let err = (i32::from(*a) - i32::from(*b)).abs();
                assert!(err <= 64.max(i32::from(*a).abs() / 16), "{a} vs {b}");
            }
        }
        assert_eq!(decode_sample(Codec::Pcmu, silence(Codec::Pcmu)), 0);
        assert_eq!(decode_sample(Codec::Pcma, silence(Codec::Pcma)).abs(), 8);
    }

    #[test]
    fn static_types() {
        assert_eq!(codec_of_static(0), Some(Codec::Pcmu));
        assert_eq!(codec_of_static(8), Some(Codec::Pcma));
        assert_eq!(codec_of_static(9), None);
        assert_eq!(static_payload_type(Codec::Pcma), 8);
    }
}
