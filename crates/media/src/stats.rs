//! Receive statistics of one stream: packet loss from sequence gaps (RFC 3550 A.1,
//! including wrap-around and restarts), interarrival jitter (RFC 3550 A.8), and a MOS
//! estimate from a simplified ITU-T G.107 E-model.

use crate::rtp::RtpHeader;

/// A jump of more than this many sequence numbers forward is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// A jump of at most this many backwards is a late packet, not a restart.
const MAX_MISORDER: u16 = 100;

/// Tracks the extended highest sequence number of one SSRC and counts loss.
#[derive(Debug, Clone, Copy, Default)]
struct SeqTracker {
    started: bool,
    ssrc: u32,
    base: u64,
    max_seq: u16,
    cycles: u64,
    received: u64,
    /// Loss counted by earlier sources/restarts.
    carried_lost: u64,
}

impl SeqTracker {
    fn restart(&mut self, ssrc: u32, seq: u16) {
        self.carried_lost += self.lost_current();
        self.started = true;
        self.ssrc = ssrc;
        self.base = u64::from(seq);
        self.max_seq = seq;
        self.cycles = 0;
        self.received = 1;
    }

    fn lost_current(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let expected = (self.cycles + u64::from(self.max_seq)) - self.base + 1;
        expected.saturating_sub(self.received)
    }

    fn update(&mut self, ssrc: u32, seq: u16) {
        if !self.started || ssrc != self.ssrc {
            self.restart(ssrc, seq);
            return;
        }
        let delta = seq.wrapping_sub(self.max_seq);
        if delta == 0 {
            // Duplicate: counted, so it does not hide a loss elsewhere.
            self.received += 1;
        } else if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
            self.received += 1;
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A big jump: the sender restarted its sequence.
            self.restart(ssrc, seq);
        } else {
            // Late or reordered.
            self.received += 1;
        }
    }

    fn lost(&self) -> u64 {
        self.carried_lost + self.lost_current()
    }
}

/// RFC 3550 interarrival jitter, in timestamp units.
#[derive(Debug, Clone, Copy, Default)]
struct Jitter {
    last_transit: Option<(u32, i64)>,
    jitter: f64,
}

impl Jitter {
    fn update(&mut self, ssrc: u32, arrival: u32, rtp_ts: u32) {
        let transit = i64::from(arrival.wrapping_sub(rtp_ts) as i32);
        if let Some((s, last)) = self.last_transit {
            if s == ssrc {
                let d = (transit - last).unsigned_abs() as f64;
                // Ignore absurd steps (timestamp jumps), which are not jitter.
                if d < f64::from(crate::g711::CLOCK_RATE) * 10.0 {
                    self.jitter += (d - self.jitter) / 16.0;
                }
            }
        }
        self.last_transit = Some((ssrc, transit));
    }
}

/// Receive-side counters of one endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RxStats {
    pub received: u64,
    pub malformed: u64,
    pub ignored: u64,
    seq: SeqTracker,
    jitter: Jitter,
}

impl RxStats {
    /// Records one accepted RTP packet. `arrival` is the arrival time in timestamp units
    /// (8 kHz); `audio` says whether the packet counts for jitter (telephone-event
    /// packets repeat their timestamp and would inflate it).
    pub fn record(&mut self, h: &RtpHeader, arrival: u32, audio: bool) {
        self.received += 1;
        self.seq.update(h.ssrc, h.sequence);
        if audio {
            self.jitter.update(h.ssrc, arrival, h.timestamp);
        }
    }

    pub fn lost(&self) -> u64 {
        self.seq.lost()
    }

    pub fn jitter_ms(&self) -> f32 {
        (self.jitter.jitter / f64::from(crate::g711::CLOCK_RATE) * 1000.0) as f32
    }

    /// Loss as a fraction of expected packets.
    pub fn loss_fraction(&self) -> f32 {
        let lost = self.lost();
        let expected = lost + self.received;
        if expected == 0 {
            0.0
        } else {
            lost as f32 / expected as f32
        }
    }
}

/// A mean opinion score estimate (1.0–4.5) for G.711 from packet loss and jitter, after
/// ITU-T G.107: R = 93.2 − Id − Ie,eff with a jitter buffer of twice the jitter, 30 ms
/// of packetisation and network delay, and Bpl = 25.1 (G.711 with packet loss
/// concealment).
pub fn mos_estimate(loss_fraction: f32, jitter_ms: f32) -> f32 {
    let finite = |x: f32| if x.is_finite() { f64::from(x) } else { 0.0 };
    let loss_pct = finite(loss_fraction).clamp(0.0, 1.0) * 100.0;
    let delay = finite(jitter_ms).max(0.0) * 2.0 + 10.0 + 20.0;
    let id = if delay < 177.3 {
        0.024 * delay
    } else {
        0.024 * delay + 0.11 * (delay - 177.3)
    };
    let ie_eff = 95.0 * loss_pct / (loss_pct + 25.1);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6;
    mos.clamp(1.0, 4.5) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u16, ts: u32) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc: 7,
        }
    }

    #[test]
    fn loss_across_wrap() {
        let mut s = RxStats::default();
        let mut seq = 65530u16;
        for i in 0..20u32 {
            if i != 3 && i != 9 {
                s.record(&h(seq, i * 160), i * 160, true);
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.received, 18);
        assert_eq!(s.lost(), 2);
        assert!((s.loss_fraction() - 0.1).abs() < 1e-6);
        assert_eq!(s.jitter_ms(), 0.0);
    }

    #[test]
    fn reordering_and_duplicates_are_not_loss() {
        let mut s = RxStats::default();
        for seq in [1u16, 2, 4, 3, 5, 5, 6] {
            s.record(&h(seq, 0), 0, false);
        }
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn restart_and_new_ssrc_carry_loss() {
        let mut s = RxStats::default();
        s.record(&h(1, 0), 0, true);
        s.record(&h(3, 0), 0, true); // 1 lost
        s.record(&h(30000, 0), 0, true); // restart
        s.record(&h(30002, 0), 0, true); // 1 lost
        let mut other = h(100, 0);
        other.ssrc = 8;
        s.record(&other, 0, true);
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut s = RxStats::default();
        // Packets every 160 ts units arriving alternately 0 and 80 units late.
        for i in 0..400u32 {
            let late = if i % 2 == 0 { 0 } else { 80 };
            s.record(&h(i as u16, i * 160), i * 160 + late, true);
        }
        // |D| is always 80 units = 10 ms; J converges to 10 ms.
        assert!((s.jitter_ms() - 10.0).abs() < 0.1, "{}", s.jitter_ms());
    }

    #[test]
    fn mos_is_monotonic_and_bounded() {
        let perfect = mos_estimate(0.0, 0.0);
        assert!(perfect > 4.3 && perfect <= 4.5, "{perfect}");
        assert!(mos_estimate(0.05, 0.0) < perfect);
        assert!(mos_estimate(0.0, 100.0) < perfect);
        assert!(mos_estimate(0.2, 0.0) < mos_estimate(0.05, 0.0));
        assert!(mos_estimate(1.0, 1000.0) >= 1.0);
        assert!(mos_estimate(f32::NAN, f32::NAN).is_finite());
    }
}
