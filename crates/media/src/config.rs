//! Configuration of the media adapter.

use crate::error::MediaError;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// What [`AudioSource::BuiltinMusic`](call_engine_events::AudioSource::BuiltinMusic)
/// plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MohSource {
    /// The melody synthesised in code ([`builtin_music`](crate::audio::builtin_music)).
    Builtin,
    /// An 8 kHz 16-bit PCM mono WAV file, loaded (and checked) once at start.
    WavFile(PathBuf),
}

/// Configuration of the media adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// The address RTP sockets bind to; it is also the address advertised in our SDP, so
    /// it must be a concrete address the phones can reach (not `0.0.0.0`).
    pub address: IpAddr,
    /// RTP ports; only the even ones are used (RTCP is not sent, its odd port is not
    /// bound). Each endpoint takes one.
    pub rtp_ports: RangeInclusive<u16>,
    /// The music on hold.
    pub moh: MohSource,
    /// Where named prompts live: `Prompt { name }` plays `<prompts_dir>/<name>.wav`.
    pub prompts_dir: Option<PathBuf>,
    /// How often each endpoint publishes a `Quality` report.
    pub quality_interval: Duration,
    /// A bridged leg that receives no RTP for this long gets a `MediaTimeout`.
    pub media_timeout: Duration,
    /// Packetisation time of the audio we send: 10–60 ms in 10 ms steps (20 ms is what
    /// every phone expects).
    pub ptime: Duration,
}

impl MediaConfig {
    /// Defaults around an address: ports 16384–32766, built-in music, no prompts
    /// directory, quality every 5 s, media timeout 30 s, ptime 20 ms.
    pub fn new(address: IpAddr) -> Self {
        MediaConfig {
            address,
            rtp_ports: 16384..=32766,
            moh: MohSource::Builtin,
            prompts_dir: None,
            quality_interval: Duration::from_secs(5),
            media_timeout: Duration::from_secs(30),
            ptime: Duration::from_millis(20),
        }
    }

    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), MediaError> {
        let bad = |field: &'static str, reason: &str| {
            Err(MediaError::Config {
                field,
                reason: reason.into(),
            })
        };
        if self.address.is_unspecified() {
            return bad(
                "address",
                "must be a concrete address: it is advertised in SDP",
            );
        }
        if self.address.is_multicast() {
            return bad("address", "must not be a multicast address");
        }
        if self.even_ports().is_none() {
            return bad("rtp_ports", "contains no even port");
        }
        if self.quality_interval.is_zero() {
            return bad("quality_interval", "must be positive");
        }
        if self.media_timeout.is_zero() {
            return bad("media_timeout", "must be positive");
        }
        let ms = self.ptime.as_millis();
        if !(10..=60).contains(&ms)
            || !ms.is_multiple_of(10)
            || self.ptime != Duration::from_millis(ms as u64)
        {
            return bad("ptime", "must be 10, 20, …, 60 ms");
        }
        Ok(())
    }

    /// The first and last even port of the range, if any.
    pub(crate) fn even_ports(&self) -> Option<(u16, u16)> {
        let (start, end) = (*self.rtp_ports.start(), *self.rtp_ports.end());
        let first = start.checked_add(start & 1)?;
        let last = end - (end & 1);
        (first <= last && first != 0).then_some((first, last))
    }

    /// Samples (= G.711 bytes) per packet.
    pub(crate) fn samples_per_packet(&self) -> usize {
        self.ptime.as_millis() as usize * 8
    }

    /// ptime in whole milliseconds.
    pub(crate) fn ptime_ms(&self) -> u32 {
        self.ptime.as_millis() as u32
    }
}

impl Default for MediaConfig {
    /// [`MediaConfig::new`] on 127.0.0.1.
    fn default() -> Self {
        MediaConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = MediaConfig::default();
        assert!(ok.validate().is_ok());
        let field = |c: MediaConfig| match c.validate() {
            Err(MediaError::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut c = ok.clone();
        c.address = "0.0.0.0".parse().unwrap();
        assert_eq!(field(c), "address");
        let mut c = ok.clone();
        c.rtp_ports = 3..=3;
        assert_eq!(field(c), "rtp_ports");
        let mut c = ok.clone();
        c.rtp_ports = 0..=1;
        assert_eq!(field(c), "rtp_ports");
        let mut c = ok.clone();
        #[allow(clippy::reversed_empty_ranges)]
        {
            c.rtp_ports = 10..=5;
        }
        assert_eq!(field(c), "rtp_ports");
        let mut c = ok.clone();
        c.quality_interval = Duration::ZERO;
        assert_eq!(field(c), "quality_interval");
        let mut c = ok.clone();
        c.media_timeout = Duration::ZERO;
        assert_eq!(field(c), "media_timeout");
        let mut c = ok.clone();
        c.ptime = Duration::from_millis(25);
        assert_eq!(field(c), "ptime");
    }

    #[test]
    fn even_port_bounds() {
        let mut c = MediaConfig {
            rtp_ports: 3..=7,
            ..MediaConfig::default()
        };
        assert_eq!(c.even_ports(), Some((4, 6)));
        c.rtp_ports = 65535..=65535;
        assert_eq!(c.even_ports(), None);
        c.rtp_ports = 65534..=65535;
        assert_eq!(c.even_ports(), Some((65534, 65534)));
        assert_eq!(MediaConfig::default().samples_per_packet(), 160);
    }
}
