//! One RTP endpoint: a UDP socket and the tokio task that owns its receive side,
//! playback, DTMF detection, quality reports and media timeout.
//!
//! The send side of an endpoint ([`LegShared`]: socket, negotiated parameters and the
//! outgoing stream's SSRC/sequence/timestamp state) is shared: the endpoint's own task
//! sends playback through it, and the task of the leg it is bridged to relays packets
//! through it. The outgoing stream is re-anchored whenever its source changes (playback →
//! relay, a new incoming SSRC, …), so the far end always sees one continuous stream:
//! sequence numbers and timestamps continue from the last packet sent, the marker bit
//! flags the switch, and the SSRC never changes.

use crate::audio::AudioClip;
use crate::g711::{self, PT_TELEPHONE_EVENT};
use crate::ports::PortLease;
use crate::rtp::{self, RtpError, RtpHeader, RtpPacket, TelephoneEvent, HEADER_LEN};
use crate::sdp::Negotiated;
use crate::sink::EventSink;
use crate::stats::{mos_estimate, RxStats};
use call_engine_bus::EventId;
use call_engine_events::{
    BridgeId, CallId, Codec, EndpointId, Leg, MediaEvent, PlaybackId, StreamQuality,
};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tracing::{debug, info, trace, warn};

/// Receive buffer size: larger than any sane RTP packet.
const RECV_BUF: usize = 2048;
/// A latched source that has been silent this long may be replaced by a new one.
const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// Adapter-wide settings every endpoint task reads.
pub(crate) struct Ctx {
    pub sink: EventSink,
    pub ptime: Duration,
    pub frame: usize,
    pub quality_interval: Duration,
    pub media_timeout: Duration,
}

/// Negotiated parameters of one leg's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamParams {
    /// Where to send (SDP address, then the latched source).
    pub remote: Option<SocketAddr>,
    /// Whether the far end wants media from us.
    pub send: bool,
    /// Whether the far end sends media (media timeout applies).
    pub expect_rx: bool,
    pub codec: Codec,
    pub audio_pt: u8,
    pub telephone_event: Option<u8>,
    /// False while our offer is unanswered.
    pub negotiated: bool,
}

impl StreamParams {
    /// While our offer is outstanding: we accept what we offered, send nothing.
    pub fn offered() -> Self {
        StreamParams {
            remote: None,
            send: false,
            expect_rx: true,
            codec: Codec::Pcmu,
            audio_pt: g711::PT_PCMU,
            telephone_event: Some(PT_TELEPHONE_EVENT),
            negotiated: false,
        }
    }

    pub fn from_negotiated(n: &Negotiated) -> Self {
        StreamParams {
            remote: n.remote,
            send: n.send(),
            expect_rx: n.remote_direction.sends(),
            codec: n.codec,
            audio_pt: n.audio_pt,
            telephone_event: n.telephone_event,
            negotiated: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    None,
    Playback,
    Relay { from: EndpointId, ssrc: u32 },
}

/// The outgoing stream of a leg.
pub(crate) struct TxState {
    pub params: StreamParams,
    /// A playback owns the stream: relayed packets toward this leg are dropped.
    pub playing: bool,
    ssrc: u32,
    last_seq: u16,
    last_ts: u32,
    last_send: Option<Instant>,
    source: Source,
    seq_off: u16,
    ts_off: u32,
}

impl TxState {
    fn new(params: StreamParams) -> Self {
        TxState {
            params,
            playing: false,
            ssrc: rand::random(),
            last_seq: rand::random(),
            last_ts: rand::random(),
            last_send: None,
            source: Source::None,
            seq_off: 0,
            ts_off: 0,
        }
    }

    fn destination(&self) -> Option<SocketAddr> {
        self.params.remote.filter(|_| self.params.send)
    }

    /// The sequence number and timestamp that continue the stream after a source
    /// switch: the next sequence number, and the timestamp advanced by the wall-clock
    /// time since the last packet (at least one frame).
    fn anchor(&self, now: Instant, frame: u32) -> (u16, u32) {
        let advance = match self.last_send {
            Some(t) => {
                let us = now
                    .saturating_duration_since(t)
                    .as_micros()
                    .min(3_600_000_000) as u64;
                ((us * u64::from(g711::CLOCK_RATE) / 1_000_000) as u32).max(frame)
            }
            None => frame,
        };
        (
            self.last_seq.wrapping_add(1),
            self.last_ts.wrapping_add(advance),
        )
    }

    fn commit(&mut self, seq: u16, ts: u32, now: Instant) {
        if rtp::seq_newer(seq, self.last_seq) {
            self.last_seq = seq;
        }
        if rtp::ts_newer(ts, self.last_ts) {
            self.last_ts = ts;
        }
        self.last_send = Some(now);
    }

    /// Header fields for the next playback frame.
    fn next_playback(&mut self, now: Instant, frame: u32) -> (u16, u32, bool) {
        let (seq, ts, marker) = if self.source == Source::Playback {
            (
                self.last_seq.wrapping_add(1),
                self.last_ts.wrapping_add(frame),
                false,
            )
        } else {
            self.source = Source::Playback;
            let (s, t) = self.anchor(now, frame);
            (s, t, true)
        };
        self.commit(seq, ts, now);
        (seq, ts, marker)
    }

    /// Header fields for a packet relayed from `from`: the incoming sequence number and
    /// timestamp shifted by offsets fixed at the source switch, so gaps, reordering and
    /// telephone-event timing survive the relay.
    fn map_relay(
        &mut self,
        from: EndpointId,
        h: &RtpHeader,
        now: Instant,
        frame: u32,
    ) -> (u16, u32, bool) {
        let src = Source::Relay { from, ssrc: h.ssrc };
        let mut marker = h.marker;
        if self.source != src {
            let (s, t) = self.anchor(now, frame);
            self.seq_off = s.wrapping_sub(h.sequence);
            self.ts_off = t.wrapping_sub(h.timestamp);
            self.source = src;
            marker = true;
        }
        let seq = h.sequence.wrapping_add(self.seq_off);
        let ts = h.timestamp.wrapping_add(self.ts_off);
        self.commit(seq, ts, now);
        (seq, ts, marker)
    }
}

/// The shared half of an endpoint.
pub(crate) struct LegShared {
    pub call: CallId,
    pub leg: Leg,
    pub endpoint: EndpointId,
    pub local: SocketAddr,
    pub socket: UdpSocket,
    pub tx: Mutex<TxState>,
    pub sent: AtomicU64,
    // Declared after the socket: the port returns to the pool after the socket closes.
    _lease: PortLease,
}

impl LegShared {
    pub fn new(
        call: CallId,
        leg: Leg,
        endpoint: EndpointId,
        socket: UdpSocket,
        local: SocketAddr,
        lease: PortLease,
        params: StreamParams,
    ) -> Self {
        LegShared {
            call,
            leg,
            endpoint,
            local,
            socket,
            tx: Mutex::new(TxState::new(params)),
            sent: AtomicU64::new(0),
            _lease: lease,
        }
    }

    fn send(&self, packet: &[u8], to: SocketAddr) {
        match self.socket.try_send_to(packet, to) {
            Ok(_) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                trace!(call = %self.call, leg = ?self.leg, %to, error = %e, "RTP send failed");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Audio(Codec),
    Event,
    Other,
}

/// Relays one packet received on another leg to `peer`'s far end.
#[allow(clippy::too_many_arguments)]
fn relay(
    peer: &LegShared,
    from: EndpointId,
    h: &RtpHeader,
    payload: &[u8],
    kind: Kind,
    now: Instant,
    frame: u32,
    out: &mut [u8],
) {
    let n = HEADER_LEN + payload.len();
    if n > out.len() {
        return;
    }
    let (to, pt, transcode) = {
        let mut tx = peer.tx.lock();
        let Some(to) = tx.destination() else {
            return;
        };
        if tx.playing {
            return;
        }
        let (pt, transcode) = match kind {
            Kind::Event => match tx.params.telephone_event {
                Some(pt) => (pt, None),
                None => return,
            },
            Kind::Audio(c) => (tx.params.audio_pt, Some((c, tx.params.codec))),
            Kind::Other => return,
        };
        let (sequence, timestamp, marker) = tx.map_relay(from, h, now, frame);
        let header = RtpHeader {
            marker,
            payload_type: pt,
            sequence,
            timestamp,
            ssrc: tx.ssrc,
        };
        if header.write(out).is_none() {
            return;
        }
        (to, pt, transcode)
    };
    let body = &mut out[HEADER_LEN..n];
    match transcode {
        Some((from_codec, to_codec)) => {
            g711::transcode(from_codec, to_codec, payload, body);
        }
        None => body.copy_from_slice(payload),
    }
    trace!(call = %peer.call, to_leg = ?peer.leg, pt, "relayed");
    peer.send(&out[..n], to);
}

/// A snapshot of an endpoint, from the direct API.
#[derive(Debug, Clone, PartialEq)]
pub struct LegStats {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Our RTP address.
    pub local: SocketAddr,
    /// Where we send (the SDP address, or the latched source).
    pub remote: Option<SocketAddr>,
    /// The negotiated codec (`None` while our offer is unanswered).
    pub codec: Option<Codec>,
    /// The far end's telephone-event payload type.
    pub telephone_event: Option<u8>,
    /// The counters as in the `Quality` event.
    pub quality: StreamQuality,
    /// Datagrams that were not RTP (too short, wrong version, truncated, bad padding).
    pub malformed: u64,
    /// RTP packets ignored: from a foreign source after latching, or of a payload type
    /// we neither play nor relay (e.g. comfort noise).
    pub ignored: u64,
    /// The bridge the leg is in.
    pub bridge: Option<BridgeId>,
    /// The playback running on the leg.
    pub playback: Option<PlaybackId>,
}

/// Instructions to an endpoint task; each acknowledges through its oneshot.
pub(crate) enum Ctrl {
    Configure {
        params: StreamParams,
        done: oneshot::Sender<()>,
    },
    Play {
        playback: PlaybackId,
        clip: AudioClip,
        looped: bool,
        cause: Option<EventId>,
        done: oneshot::Sender<()>,
    },
    StopPlayback {
        playback: PlaybackId,
        done: oneshot::Sender<bool>,
    },
    Link {
        bridge: BridgeId,
        peer: Arc<LegShared>,
        cause: Option<EventId>,
        done: oneshot::Sender<()>,
    },
    Unlink {
        bridge: BridgeId,
        done: oneshot::Sender<()>,
    },
    Stats {
        done: oneshot::Sender<LegStats>,
    },
    Shutdown,
}

struct Peer {
    bridge: BridgeId,
    shared: Arc<LegShared>,
    cause: Option<EventId>,
}

struct Playback {
    id: PlaybackId,
    clip: AudioClip,
    pos: usize,
    looped: bool,
    cause: Option<EventId>,
}

enum Wake {
    Ctrl(Option<Ctrl>),
    Packet(std::io::Result<(usize, SocketAddr)>),
    Tick,
    Quality,
    Timeout,
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The task of one endpoint.
pub(crate) struct EndpointTask {
    shared: Arc<LegShared>,
    ctx: Arc<Ctx>,
    rx: StreamParams,
    latched: Option<SocketAddr>,
    stats: RxStats,
    peer: Option<Peer>,
    playback: Option<Playback>,
    alloc_cause: Option<EventId>,
    last_dtmf: Option<(u32, u32)>,
    last_rx: Option<Instant>,
    armed_at: Instant,
    timed_out: bool,
    epoch: Instant,
    pcm: Vec<i16>,
    out: Vec<u8>,
}

impl EndpointTask {
    pub fn new(
        shared: Arc<LegShared>,
        ctx: Arc<Ctx>,
        params: StreamParams,
        alloc_cause: Option<EventId>,
    ) -> Self {
        let frame = ctx.frame;
        let now = Instant::now();
        EndpointTask {
            shared,
            ctx,
            rx: params,
            latched: None,
            stats: RxStats::default(),
            peer: None,
            playback: None,
            alloc_cause,
            last_dtmf: None,
            last_rx: None,
            armed_at: now,
            timed_out: false,
            epoch: now,
            pcm: vec![0; frame],
            out: vec![0; RECV_BUF + HEADER_LEN],
        }
    }

    fn emit(&self, event: MediaEvent, cause: Option<EventId>) {
        self.ctx.sink.emit(event, cause);
    }

    fn timeout_armed(&self) -> bool {
        self.peer.is_some() && self.rx.expect_rx && !self.timed_out
    }

    fn rearm(&mut self, now: Instant, sleep: std::pin::Pin<&mut Sleep>) {
        self.armed_at = now;
        self.timed_out = false;
        sleep.reset(now + self.ctx.media_timeout);
    }

    /// Runs until told to shut down (or every handle is dropped).
    pub async fn run(mut self, mut ctrl: mpsc::UnboundedReceiver<Ctrl>) {
        let shared = self.shared.clone();
        let mut buf = vec![0u8; RECV_BUF];
        let mut ticker: Option<Interval> = None;
        let qi = self.ctx.quality_interval;
        let mut quality = tokio::time::interval_at(Instant::now() + qi, qi);
        quality.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let timeout = tokio::time::sleep(self.ctx.media_timeout);
        tokio::pin!(timeout);
        debug!(call = %shared.call, leg = ?shared.leg, local = %shared.local, "endpoint started");
        loop {
            let armed = self.timeout_armed();
            let wake = tokio::select! {
                c = ctrl.recv() => Wake::Ctrl(c),
                r = shared.socket.recv_from(&mut buf) => Wake::Packet(r),
                () = tick(&mut ticker) => Wake::Tick,
                _ = quality.tick() => Wake::Quality,
                () = &mut timeout, if armed => Wake::Timeout,
            };
            match wake {
                Wake::Ctrl(None) | Wake::Ctrl(Some(Ctrl::Shutdown)) => break,
                Wake::Ctrl(Some(c)) => self.control(c, &mut ticker, timeout.as_mut()),
                Wake::Packet(Ok((n, from))) => {
                    self.datagram(&buf[..n], from, timeout.as_mut());
                }
                Wake::Packet(Err(e)) => {
                    // E.g. ICMP errors reported on some platforms; keep serving, briefly
                    // back off so a persistent error cannot spin.
                    debug!(call = %shared.call, leg = ?shared.leg, error = %e, "RTP receive error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Wake::Tick => {
                    if !self.play_frame() {
                        ticker = None;
                    }
                }
                Wake::Quality => self.report_quality(),
                Wake::Timeout => self.check_timeout(timeout.as_mut()),
            }
        }
        self.report_quality();
        debug!(call = %shared.call, leg = ?shared.leg, "endpoint stopped");
    }

    fn control(
        &mut self,
        c: Ctrl,
        ticker: &mut Option<Interval>,
        sleep: std::pin::Pin<&mut Sleep>,
    ) {
        let now = Instant::now();
        match c {
            Ctrl::Configure { params, done } => {
                self.rx = params;
                self.latched = None;
                self.shared.tx.lock().params = params;
                self.rearm(now, sleep);
                let _ = done.send(());
            }
            Ctrl::Play {
                playback,
                clip,
                looped,
                cause,
                done,
            } => {
                if let Some(old) = self.playback.take() {
                    debug!(call = %self.shared.call, leg = ?self.shared.leg, old = %old.id, new = %playback, "playback replaced");
                }
                self.playback = Some(Playback {
                    id: playback,
                    clip,
                    pos: 0,
                    looped,
                    cause,
                });
                self.shared.tx.lock().playing = true;
                let mut t = tokio::time::interval(self.ctx.ptime);
                // Late ticks are not made up in a burst: the stream just resumes.
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                *ticker = Some(t);
                info!(call = %self.shared.call, leg = ?self.shared.leg, %playback, looped, "playback started");
                self.emit(
                    MediaEvent::PlaybackStarted {
                        call: self.shared.call,
                        playback,
                    },
                    cause,
                );
                let _ = done.send(());
            }
            Ctrl::StopPlayback { playback, done } => {
                let hit = self.playback.as_ref().is_some_and(|p| p.id == playback);
                if hit {
                    self.stop_playback(ticker, "stopped");
                }
                let _ = done.send(hit);
            }
            Ctrl::Link {
                bridge,
                peer,
                cause,
                done,
            } => {
                self.stop_playback(ticker, "bridged");
                self.peer = Some(Peer {
                    bridge,
                    shared: peer,
                    cause,
                });
                self.rearm(now, sleep);
                let _ = done.send(());
            }
            Ctrl::Unlink { bridge, done } => {
                if self.peer.as_ref().is_some_and(|p| p.bridge == bridge) {
                    self.peer = None;
                }
                let _ = done.send(());
            }
            Ctrl::Stats { done } => {
                let tx = self.shared.tx.lock();
                let s = LegStats {
                    endpoint: self.shared.endpoint,
                    local: self.shared.local,
                    remote: tx.params.remote,
                    codec: tx.params.negotiated.then_some(tx.params.codec),
                    telephone_event: tx.params.telephone_event,
                    quality: self.quality(),
                    malformed: self.stats.malformed,
                    ignored: self.stats.ignored,
                    bridge: self.peer.as_ref().map(|p| p.bridge),
                    playback: self.playback.as_ref().map(|p| p.id),
                };
                drop(tx);
                let _ = done.send(s);
            }
            Ctrl::Shutdown => {}
        }
    }

    fn stop_playback(&mut self, ticker: &mut Option<Interval>, why: &str) {
        if let Some(p) = self.playback.take() {
            info!(call = %self.shared.call, leg = ?self.shared.leg, playback = %p.id, why, "playback stopped");
        }
        *ticker = None;
        self.shared.tx.lock().playing = false;
    }

    /// Sends the next frame of the playback; returns false when it is over.
    fn play_frame(&mut self) -> bool {
        let frame = self.ctx.frame;
        let Some(p) = self.playback.as_mut() else {
            return false;
        };
        let clip = p.clip.samples();
        let mut filled = 0;
        while filled < frame {
            if p.pos >= clip.len() {
                if p.looped && !clip.is_empty() {
                    p.pos = 0;
                } else {
                    break;
                }
            }
            let n = (frame - filled).min(clip.len() - p.pos);
            self.pcm[filled..filled + n].copy_from_slice(&clip[p.pos..p.pos + n]);
            filled += n;
            p.pos += n;
        }
        let finished = !p.looped && p.pos >= clip.len();
        if filled > 0 {
            self.pcm[filled..].fill(0);
            let now = Instant::now();
            let mut tx = self.shared.tx.lock();
            if let Some(to) = tx.destination() {
                let (sequence, timestamp, marker) = tx.next_playback(now, frame as u32);
                let header = RtpHeader {
                    marker,
                    payload_type: tx.params.audio_pt,
                    sequence,
                    timestamp,
                    ssrc: tx.ssrc,
                };
                let codec = tx.params.codec;
                drop(tx);
                let n = HEADER_LEN + frame;
                if header.write(&mut self.out).is_some() {
                    g711::encode(codec, &self.pcm, &mut self.out[HEADER_LEN..n]);
                    self.shared.send(&self.out[..n], to);
                }
            }
        }
        if finished {
            let Some(p) = self.playback.take() else {
                return false;
            };
            self.shared.tx.lock().playing = false;
            info!(call = %self.shared.call, leg = ?self.shared.leg, playback = %p.id, "playback finished");
            self.emit(
                MediaEvent::PlaybackFinished {
                    call: self.shared.call,
                    playback: p.id,
                },
                p.cause,
            );
            return false;
        }
        true
    }

    fn accept_source(&mut self, from: SocketAddr, now: Instant) -> bool {
        if self.latched == Some(from) {
            return true;
        }
        let may_latch = match (self.latched, self.last_rx) {
            (None, _) => true,
            (Some(_), Some(t)) => now.saturating_duration_since(t) >= RELATCH_AFTER,
            (Some(_), None) => true,
        };
        if !may_latch {
            return false;
        }
        self.latched = Some(from);
        let mut tx = self.shared.tx.lock();
        if tx.params.remote != Some(from) {
            info!(
                call = %self.shared.call, leg = ?self.shared.leg, %from, sdp = ?tx.params.remote,
                "symmetric RTP: latched onto the packets' source"
            );
            tx.params.remote = Some(from);
            self.rx.remote = Some(from);
        }
        true
    }

    fn classify(&self, pt: u8) -> Kind {
        if Some(pt) == self.rx.telephone_event {
            Kind::Event
        } else if pt == self.rx.audio_pt {
            Kind::Audio(self.rx.codec)
        } else if let Some(c) = g711::codec_of_static(pt) {
            Kind::Audio(c)
        } else {
            Kind::Other
        }
    }

    fn datagram(&mut self, data: &[u8], from: SocketAddr, sleep: std::pin::Pin<&mut Sleep>) {
        let pkt = match RtpPacket::parse(data) {
            Ok(p) => p,
            Err(RtpError::Rtcp(_)) => return,
            Err(e) => {
                self.stats.malformed += 1;
                trace!(call = %self.shared.call, leg = ?self.shared.leg, %from, error = %e, "malformed RTP ignored");
                return;
            }
        };
        let now = Instant::now();
        if !self.accept_source(from, now) {
            self.stats.ignored += 1;
            trace!(call = %self.shared.call, leg = ?self.shared.leg, %from, "RTP from a foreign source ignored");
            return;
        }
        let h = pkt.header;
        let kind = self.classify(h.payload_type);
        let arrival = (now.saturating_duration_since(self.epoch).as_micros() as u64
            * u64::from(g711::CLOCK_RATE)
            / 1_000_000) as u32;
        self.stats
            .record(&h, arrival, matches!(kind, Kind::Audio(_)));
        self.last_rx = Some(now);
        if self.timed_out {
            self.rearm(now, sleep);
        }
        match kind {
            Kind::Other => {
                self.stats.ignored += 1;
                return;
            }
            Kind::Event => {
                if !self.detect_dtmf(&h, pkt.payload) {
                    return;
                }
            }
            Kind::Audio(_) => {}
        }
        if let Some(peer) = &self.peer {
            relay(
                &peer.shared,
                self.shared.endpoint,
                &h,
                pkt.payload,
                kind,
                now,
                self.ctx.frame as u32,
                &mut self.out,
            );
        }
    }

    /// Reports a digit at the first end packet of its event; returns false (and counts
    /// the packet as malformed) if the payload is not a telephone-event.
    fn detect_dtmf(&mut self, h: &RtpHeader, payload: &[u8]) -> bool {
        let Some(ev) = TelephoneEvent::parse(payload) else {
            self.stats.malformed += 1;
            return false;
        };
        // An event is identified by its SSRC and timestamp; its end packet is usually
        // sent three times: report it once.
        if !ev.end || self.last_dtmf == Some((h.ssrc, h.timestamp)) {
            return true;
        }
        self.last_dtmf = Some((h.ssrc, h.timestamp));
        let Some(digit) = ev.digit() else {
            return true;
        };
        info!(call = %self.shared.call, leg = ?self.shared.leg, %digit, duration = ev.duration, "DTMF detected");
        let cause = self
            .peer
            .as_ref()
            .map_or(self.alloc_cause, |p| p.cause.or(self.alloc_cause));
        self.emit(
            MediaEvent::DtmfDetected {
                call: self.shared.call,
                leg: self.shared.leg,
                digit,
            },
            cause,
        );
        true
    }

    fn check_timeout(&mut self, sleep: std::pin::Pin<&mut Sleep>) {
        let base = match self.last_rx {
            Some(t) if t > self.armed_at => t,
            _ => self.armed_at,
        };
        let deadline = base + self.ctx.media_timeout;
        let now = Instant::now();
        if now < deadline {
            sleep.reset(deadline);
            return;
        }
        self.timed_out = true;
        warn!(call = %self.shared.call, leg = ?self.shared.leg, timeout_ms = self.ctx.media_timeout.as_millis() as u64, "media timeout: no RTP received");
        let cause = self
            .peer
            .as_ref()
            .and_then(|p| p.cause)
            .or(self.alloc_cause);
        self.emit(
            MediaEvent::MediaTimeout {
                call: self.shared.call,
                leg: self.shared.leg,
            },
            cause,
        );
    }

    fn quality(&self) -> StreamQuality {
        let jitter_ms = self.stats.jitter_ms();
        StreamQuality {
            packets_received: self.stats.received,
            packets_sent: self.shared.sent.load(Ordering::Relaxed),
            packets_lost: self.stats.lost(),
            jitter_ms,
            mos: mos_estimate(self.stats.loss_fraction(), jitter_ms),
        }
    }

    fn report_quality(&self) {
        let quality = self.quality();
        if quality.packets_received == 0 && quality.packets_sent == 0 {
            return;
        }
        self.emit(
            MediaEvent::Quality {
                call: self.shared.call,
                leg: self.shared.leg,
                quality,
            },
            self.alloc_cause,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> StreamParams {
        StreamParams {
            remote: Some("127.0.0.1:9".parse().unwrap()),
            send: true,
            ..StreamParams::offered()
        }
    }

    #[tokio::test]
    async fn stream_stays_continuous_across_source_switches() {
        let mut tx = TxState::new(params());
        let t0 = Instant::now();
        let (s0, ts0, m0) = tx.next_playback(t0, 160);
        assert!(m0);
        let (s1, ts1, m1) = tx.next_playback(t0, 160);
        assert!(!m1);
        assert_eq!(s1, s0.wrapping_add(1));
        assert_eq!(ts1, ts0.wrapping_add(160));
        // Switch to relaying a stream with unrelated numbers, 20 ms later.
        let h = |seq: u16, ts: u32| RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: seq,
            timestamp: ts,
            ssrc: 99,
        };
        let t1 = t0 + Duration::from_millis(20);
        let (s2, ts2, m2) = tx.map_relay(EndpointId(1), &h(65535, 7), t1, 160);
        assert!(m2);
        assert_eq!(s2, s1.wrapping_add(1));
        assert_eq!(ts2, ts1.wrapping_add(160));
        let (s3, ts3, m3) = tx.map_relay(EndpointId(1), &h(0, 167), t1, 160);
        assert!(!m3);
        assert_eq!(s3, s2.wrapping_add(1));
        assert_eq!(ts3, ts2.wrapping_add(160));
        // A late packet does not move the stream backwards.
        let _ = tx.map_relay(EndpointId(1), &h(65534, 0), t1, 160);
        assert_eq!(tx.last_seq, s3);
        // Back to playback a second later: timestamps advance by the elapsed time.
        let (s4, ts4, m4) = tx.next_playback(t1 + Duration::from_secs(1), 160);
        assert!(m4);
        assert_eq!(s4, s3.wrapping_add(1));
        assert_eq!(ts4, ts3.wrapping_add(8000));
    }
}
