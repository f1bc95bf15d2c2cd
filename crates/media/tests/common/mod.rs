//! Test phones (plain tokio UDP sockets) and helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use call_engine_events::{CallId, IdAllocator, Leg, MediaEvent, Sdp};
use call_engine_media::rtp::{RtpHeader, RtpPacket};
use call_engine_media::{EmittedEvent, Media, MediaConfig, MediaEvents};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

/// A media config on 127.0.0.1 with its own port range (`base..base+range`), quiet
/// quality reports and a long media timeout unless a test changes them.
pub fn config(base: u16, range: u16) -> MediaConfig {
    let mut c = MediaConfig::new("127.0.0.1".parse().unwrap());
    c.rtp_ports = base..=base + range - 1;
    c.quality_interval = Duration::from_secs(3600);
    c.media_timeout = Duration::from_secs(3600);
    c
}

pub fn media(config: MediaConfig) -> (Media, MediaEvents, Arc<IdAllocator>) {
    let ids = Arc::new(IdAllocator::new());
    let (m, ev) = Media::new(config, ids.clone()).unwrap();
    (m, ev, ids)
}

/// One received RTP packet.
#[derive(Debug, Clone)]
pub struct Rtp {
    pub header: RtpHeader,
    pub payload: Vec<u8>,
}

/// A "phone": a UDP socket sending and receiving RTP.
pub struct Phone {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    pub ssrc: u32,
}

impl Phone {
    pub async fn new() -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        Phone {
            sock,
            addr,
            ssrc: rand::random(),
        }
    }

    /// An SDP offer from this phone with the given payload types (0 = PCMU, 8 = PCMA,
    /// anything else = telephone-event with that number).
    pub fn offer(&self, pts: &[u8]) -> Sdp {
        offer_at(self.addr, pts)
    }

    pub async fn send(
        &self,
        to: SocketAddr,
        pt: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) {
        let h = RtpHeader {
            marker,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc: self.ssrc,
        };
        let mut buf = h.to_bytes().to_vec();
        buf.extend_from_slice(payload);
        self.sock.send_to(&buf, to).await.unwrap();
    }

    pub async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).await.unwrap();
    }

    /// The next RTP packet, if one arrives within `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<Rtp> {
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (n, _) = timeout(left, self.sock.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                return Some(Rtp {
                    header: p.header,
                    payload: p.payload.to_vec(),
                });
            }
        }
    }

    /// Receives until `count` packets arrived or `wait` passed.
    pub async fn recv_n(&self, count: usize, wait: Duration) -> Vec<Rtp> {
        let deadline = Instant::now() + wait;
        let mut v = Vec::new();
        while v.len() < count {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.recv(left).await {
                Some(p) => v.push(p),
                None => break,
            }
        }
        v
    }

    /// Everything that arrives during `dur`.
    pub async fn collect(&self, dur: Duration) -> Vec<Rtp> {
        self.recv_n(usize::MAX, dur).await
    }
}

pub fn offer_at(addr: SocketAddr, pts: &[u8]) -> Sdp {
    let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
    let mut s = format!(
        "v=0\r\no=phone 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        fmts.join(" "),
        ip = addr.ip(),
        port = addr.port()
    );
    for pt in pts {
        match pt {
            0 => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            8 => s.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            te => s.push_str(&format!(
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
            )),
        }
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    Sdp(s.into())
}

/// The next event matching `pred` within `wait` (others are skipped).
pub async fn expect_event(
    events: &mut MediaEvents,
    wait: Duration,
    mut pred: impl FnMut(&MediaEvent) -> bool,
) -> EmittedEvent {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no matching event within {wait:?}"));
        let e = timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {wait:?}"))
            .expect("event stream ended");
        if pred(&e.event) {
            return e;
        }
    }
}

/// All events queued right now.
pub fn drain(events: &mut MediaEvents) -> Vec<MediaEvent> {
    let mut v = Vec::new();
    while let Some(e) = events.try_recv() {
        v.push(e.event);
    }
    v
}

/// Two phones answered on Customer and Agent legs of a new call.
pub async fn two_legs(
    m: &Media,
    ids: &IdAllocator,
    a_pts: &[u8],
    b_pts: &[u8],
) -> (CallId, Phone, SocketAddr, Phone, SocketAddr) {
    let call = ids.call();
    let a = Phone::new().await;
    let b = Phone::new().await;
    let ea = m
        .allocate(call, Leg::Customer, Some(&a.offer(a_pts)))
        .await
        .unwrap();
    let eb = m
        .allocate(call, Leg::Agent, Some(&b.offer(b_pts)))
        .await
        .unwrap();
    (call, a, ea.local, b, eb.local)
}

pub fn sine(n: usize, freq: f32, amp: f32, phase0: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = (i + phase0) as f32 / 8000.0;
            ((std::f32::consts::TAU * freq * t).sin() * amp) as i16
        })
        .collect()
}

/// A fresh temporary directory for this test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "call-engine-media-{}-{}-{}",
        name,
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub const SEC: Duration = Duration::from_secs(1);
