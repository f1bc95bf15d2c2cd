//! Bridging over real loopback RTP: relay, transcoding, DTMF, latching, quality,
//! media timeout, malformed packets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use call_engine_events::{Codec, Leg, MediaEvent};
use call_engine_media::g711;
use call_engine_media::rtp::{RtpHeader, TelephoneEvent};
use codec_core::codecs::g711::{alaw_compress, alaw_expand, ulaw_compress, ulaw_expand};
use common::*;
use std::time::Duration;

fn assert_continuous(pkts: &[Rtp], pt: u8) {
    let ssrc = pkts[0].header.ssrc;
    for w in pkts.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
        assert_eq!(
            w[1].header.timestamp,
            w[0].header.timestamp.wrapping_add(160)
        );
    }
    for p in pkts {
        assert_eq!(p.header.payload_type, pt);
        assert_eq!(p.header.ssrc, ssrc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_relays_pcmu_both_ways() {
    let (m, mut ev, ids) = media(config(21000, 10));
    let (call, a, a_ep, b, b_ep) = two_legs(&m, &ids, &[0, 101], &[0, 101]).await;
    let bridge = ids.bridge();
    assert!(!m
        .bridge(call, bridge, Leg::Customer, Leg::Agent)
        .await
        .unwrap());
    let e = expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Bridged { .. })).await;
    assert_eq!(
        e.event,
        MediaEvent::Bridged {
            call,
            bridge,
            transcoding: false
        }
    );

    for (from, to, to_ep, seq0) in [(&a, &b, a_ep, 65500u16), (&b, &a, b_ep, 7)] {
        let payload = |i: usize| -> Vec<u8> { (0..160).map(|k| (i * 7 + k) as u8).collect() };
        for i in 0..50usize {
            from.send(
                to_ep,
                0,
                seq0.wrapping_add(i as u16),
                1000 + 160 * i as u32,
                i == 0,
                &payload(i),
            )
            .await;
        }
        let got = to.recv_n(50, 3 * SEC).await;
        assert_eq!(got.len(), 50);
        assert_continuous(&got, 0);
        assert_ne!(got[0].header.ssrc, from.ssrc, "SSRC is the endpoint's own");
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.payload, payload(i), "packet {i}");
        }
        assert!(got[0].header.marker);
        // Nothing more.
        assert!(to.recv(Duration::from_millis(100)).await.is_none());
    }
    let sa = m.stats(call, Leg::Customer).await.unwrap();
    let sb = m.stats(call, Leg::Agent).await.unwrap();
    assert_eq!(sa.quality.packets_received, 50);
    assert_eq!(sa.quality.packets_sent, 50);
    assert_eq!(sb.quality.packets_received, 50);
    assert_eq!(sb.quality.packets_sent, 50);
    assert_eq!(sa.bridge, Some(bridge));
    assert_eq!(sa.quality.packets_lost, 0);

    // Unbridge: nothing is relayed any more.
    m.unbridge(call, bridge).await;
    expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Unbridged { .. })).await;
    a.send(a_ep, 0, 100, 0, false, &[0xff; 160]).await;
    assert!(b.recv(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcma_customer_to_pcmu_agent_is_transcoded() {
    let (m, mut ev, ids) = media(config(21010, 10));
    let call = ids.call();
    let a = Phone::new().await;
    let b = Phone::new().await;
    let ea = m
        .allocate(call, Leg::Customer, Some(&a.offer(&[8])))
        .await
        .unwrap();
    let eb = m
        .allocate(call, Leg::Agent, Some(&b.offer(&[0])))
        .await
        .unwrap();
    assert_eq!(ea.codec, Some(Codec::Pcma));
    assert_eq!(eb.codec, Some(Codec::Pcmu));
    assert!(ea.local_sdp.0.contains("a=rtpmap:8 PCMA/8000"));
    let bridge = ids.bridge();
    assert!(m
        .bridge(call, bridge, Leg::Customer, Leg::Agent)
        .await
        .unwrap());
    let e = expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Bridged { .. })).await;
    assert!(matches!(
        e.event,
        MediaEvent::Bridged {
            transcoding: true,
            ..
        }
    ));

    // A → B: a 440 Hz sine encoded in PCMA, received as PCMU.
    let original = sine(160 * 20, 440.0, 12000.0, 0);
    for (i, frame) in original.chunks(160).enumerate() {
        let mut enc = [0u8; 160];
        g711::encode(Codec::Pcma, frame, &mut enc);
        a.send(ea.local, 8, i as u16, 160 * i as u32, false, &enc)
            .await;
    }
    let got = b.recv_n(20, 3 * SEC).await;
    assert_eq!(got.len(), 20);
    assert_continuous(&got, 0);
    let decoded: Vec<i16> = got
        .iter()
        .flat_map(|p| p.payload.iter().map(|b| ulaw_expand(*b)))
        .collect();
    assert_eq!(decoded.len(), original.len());
    for (x, y) in original.iter().zip(&decoded) {
        // Exactly what decoding A-law and re-encoding µ-law gives…
        assert_eq!(
            *y,
            ulaw_expand(ulaw_compress(alaw_expand(alaw_compress(*x))))
        );
        // …which is the original within two G.711 quantisation steps.
        let err = (i32::from(*x) - i32::from(*y)).abs();
        assert!(err <= 32 + i32::from(*x).abs() / 12, "{x} -> {y}");
    }

    // B → A: PCMU in, PCMA out.
    let original = sine(160 * 10, 1000.0, 8000.0, 0);
    for (i, frame) in original.chunks(160).enumerate() {
        let mut enc = [0u8; 160];
        g711::encode(Codec::Pcmu, frame, &mut enc);
        b.send(eb.local, 0, 500 + i as u16, 160 * i as u32, false, &enc)
            .await;
    }
    let got = a.recv_n(10, 3 * SEC).await;
    assert_eq!(got.len(), 10);
    assert_continuous(&got, 8);
    for (p, frame) in got.iter().zip(original.chunks(160)) {
        for (byte, x) in p.payload.iter().zip(frame) {
            let y = alaw_expand(*byte);
            let err = (i32::from(*x) - i32::from(y)).abs();
            assert!(err <= 32 + i32::from(*x).abs() / 12, "{x} -> {y}");
        }
    }
}

async fn send_digit(p: &Phone, to: std::net::SocketAddr, pt: u8, digit: char, seq0: u16, ts: u32) {
    let event = call_engine_media::rtp::dtmf_event(digit).unwrap();
    // 5 progress packets, then the end packet three times (RFC 4733 2.5.1.4).
    for i in 0..8u16 {
        let end = i >= 5;
        let ev = TelephoneEvent {
            event,
            end,
            volume: 10,
            duration: 160 * (i.min(5) + 1),
        };
        p.send(to, pt, seq0 + i, ts, i == 0, &ev.to_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_is_detected_once_and_forwarded_with_the_other_legs_payload_type() {
    let (m, mut ev, ids) = media(config(21020, 10));
    // Customer uses 101 for telephone-event, the agent 96.
    let (call, a, a_ep, b, _) = two_legs(&m, &ids, &[0, 101], &[0, 96]).await;
    m.bridge(call, ids.bridge(), Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    // Some audio first, then digit 5, then audio, then #.
    a.send(a_ep, 0, 10, 0, false, &[0xff; 160]).await;
    send_digit(&a, a_ep, 101, '5', 11, 160).await;
    a.send(a_ep, 0, 19, 1280, false, &[0xff; 160]).await;
    send_digit(&a, a_ep, 101, '#', 20, 1440).await;
    // A telephone-event packet too short to be one: counted, not forwarded.
    a.send(a_ep, 101, 28, 2000, false, &[1, 2]).await;

    let got = b.recv_n(18, 3 * SEC).await;
    assert_eq!(got.len(), 18);
    let events: Vec<&Rtp> = got.iter().filter(|p| p.header.payload_type == 96).collect();
    assert_eq!(events.len(), 16, "telephone-events forwarded with PT 96");
    assert!(got.iter().all(|p| matches!(p.header.payload_type, 0 | 96)));
    // One event keeps one timestamp; payload bytes forwarded unchanged.
    let five: Vec<&&Rtp> = events.iter().filter(|p| p.payload[0] == 5).collect();
    assert_eq!(five.len(), 8);
    assert!(five
        .iter()
        .all(|p| p.header.timestamp == five[0].header.timestamp));
    assert!(five[0].header.marker);
    assert_eq!(
        TelephoneEvent::parse(&five[7].payload).unwrap(),
        TelephoneEvent {
            event: 5,
            end: true,
            volume: 10,
            duration: 960
        }
    );
    // Sequence numbers stay continuous across audio and events.
    for w in got.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
    }

    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::DtmfDetected { .. })
    })
    .await;
    assert_eq!(
        e.event,
        MediaEvent::DtmfDetected {
            call,
            leg: Leg::Customer,
            digit: '5'
        }
    );
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::DtmfDetected { .. })
    })
    .await;
    assert!(matches!(
        e.event,
        MediaEvent::DtmfDetected { digit: '#', .. }
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !drain(&mut ev)
            .iter()
            .any(|e| matches!(e, MediaEvent::DtmfDetected { .. })),
        "each digit is reported once"
    );
    assert!(b.recv(Duration::from_millis(50)).await.is_none());
    assert_eq!(m.stats(call, Leg::Customer).await.unwrap().malformed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telephone_events_are_dropped_toward_a_leg_without_telephone_event() {
    let (m, mut ev, ids) = media(config(21030, 10));
    let (call, a, a_ep, b, _) = two_legs(&m, &ids, &[0, 101], &[0]).await;
    m.bridge(call, ids.bridge(), Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    send_digit(&a, a_ep, 101, '9', 1, 0).await;
    a.send(a_ep, 0, 9, 1280, false, &[0x7f; 160]).await;
    let got = b.recv_n(9, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header.payload_type, 0);
    // Still detected.
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::DtmfDetected { .. })
    })
    .await;
    assert!(matches!(
        e.event,
        MediaEvent::DtmfDetected { digit: '9', .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_rtp_latches_onto_the_real_source() {
    let (m, _ev, ids) = media(config(21040, 10));
    let call = ids.call();
    let a = Phone::new().await;
    let b = Phone::new().await;
    // B's SDP names an address nobody listens on (as behind a NAT).
    let decoy = Phone::new().await;
    let decoy_addr = decoy.addr;
    drop(decoy);
    let ea = m
        .allocate(call, Leg::Customer, Some(&a.offer(&[0])))
        .await
        .unwrap();
    let eb = m
        .allocate(call, Leg::Agent, Some(&offer_at(decoy_addr, &[0])))
        .await
        .unwrap();
    m.bridge(call, ids.bridge(), Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    assert_eq!(
        m.stats(call, Leg::Agent).await.unwrap().remote,
        Some(decoy_addr)
    );
    // B speaks from its real address: the endpoint latches onto it.
    b.send(eb.local, 0, 1, 0, true, &[0xff; 160]).await;
    assert!(a.recv(SEC).await.is_some());
    assert_eq!(
        m.stats(call, Leg::Agent).await.unwrap().remote,
        Some(b.addr)
    );
    for i in 0..10u16 {
        a.send(ea.local, 0, i, 160 * u32::from(i), false, &[0x55; 160])
            .await;
    }
    assert_eq!(b.recv_n(10, 2 * SEC).await.len(), 10);
    // A third party cannot take the stream over while B is active.
    let intruder = Phone::new().await;
    intruder.send(eb.local, 0, 99, 0, false, &[0; 160]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = m.stats(call, Leg::Agent).await.unwrap();
    assert_eq!(s.remote, Some(b.addr));
    assert_eq!(s.ignored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_reports_count_packets_and_loss() {
    let mut c = config(21050, 10);
    c.quality_interval = Duration::from_millis(300);
    let (m, mut ev, ids) = media(c);
    let (call, a, a_ep, _b, _) = two_legs(&m, &ids, &[0], &[0]).await;
    m.bridge(call, ids.bridge(), Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    // 100 packets, sequence wrapping, every 10th dropped on purpose.
    let mut sent = 0u64;
    for i in 0..100u16 {
        if i % 10 == 3 {
            continue;
        }
        a.send(
            a_ep,
            0,
            65_480u16.wrapping_add(i),
            160 * u32::from(i),
            false,
            &[0xff; 160],
        )
        .await;
        sent += 1;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(sent, 90);
    let e = expect_event(&mut ev, 3 * SEC, |e| {
        matches!(e, MediaEvent::Quality { leg: Leg::Customer, quality, .. } if quality.packets_received == 90)
    })
    .await;
    let MediaEvent::Quality {
        call: c, quality, ..
    } = e.event
    else {
        unreachable!()
    };
    assert_eq!(c, call);
    assert_eq!(quality.packets_lost, 10);
    assert!(quality.jitter_ms.is_finite() && quality.jitter_ms >= 0.0);
    assert!(quality.mos < call_engine_media::mos_estimate(0.0, 0.0));
    assert!(quality.mos >= 1.0);
    // The agent leg sent what it relayed.
    let e = expect_event(&mut ev, 3 * SEC, |e| {
        matches!(e, MediaEvent::Quality { leg: Leg::Agent, quality, .. } if quality.packets_sent == 90)
    })
    .await;
    let MediaEvent::Quality { quality, .. } = e.event else {
        unreachable!()
    };
    assert_eq!(quality.packets_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_timeout_fires_when_a_bridged_leg_goes_silent() {
    let mut c = config(21060, 10);
    c.media_timeout = Duration::from_millis(300);
    let (m, mut ev, ids) = media(c);
    let (call, a, a_ep, b, b_ep) = two_legs(&m, &ids, &[0], &[0]).await;
    m.bridge(call, ids.bridge(), Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    // B keeps talking; A says a little, then goes silent.
    let talker = tokio::spawn(async move {
        for i in 0..60u16 {
            b.send(b_ep, 0, i, 160 * u32::from(i), false, &[0xff; 160])
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b
    });
    for i in 0..5u16 {
        a.send(a_ep, 0, i, 160 * u32::from(i), false, &[0xff; 160])
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let silent_since = tokio::time::Instant::now();
    let e = expect_event(&mut ev, 2 * SEC, |e| {
        matches!(e, MediaEvent::MediaTimeout { .. })
    })
    .await;
    let waited = silent_since.elapsed();
    assert_eq!(
        e.event,
        MediaEvent::MediaTimeout {
            call,
            leg: Leg::Customer
        }
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
    // Once per silence: no repeat, and none for the talking leg.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!drain(&mut ev)
        .iter()
        .any(|e| matches!(e, MediaEvent::MediaTimeout { .. })));
    let _b = talker.await.unwrap();
    // A talks again, then goes silent again: a new timeout.
    a.send(a_ep, 0, 5, 800, false, &[0xff; 160]).await;
    let e = expect_event(&mut ev, 2 * SEC, |e| {
        matches!(
            e,
            MediaEvent::MediaTimeout {
                leg: Leg::Customer,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        e.event,
        MediaEvent::MediaTimeout {
            call,
            leg: Leg::Customer
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_counted_and_ignored() {
    let (m, _ev, ids) = media(config(21070, 10));
    let (call, a, a_ep, b, _) = two_legs(&m, &ids, &[0], &[0]).await;
    m.bridge(call, ids.bridge(), Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    let good = RtpHeader {
        marker: false,
        payload_type: 0,
        sequence: 1,
        timestamp: 0,
        ssrc: 1,
    }
    .to_bytes();
    let mut wrong_version = good;
    wrong_version[0] = 0x40;
    let mut csrc_missing = good;
    csrc_missing[0] = 0x8f;
    let mut bad_padding = good.to_vec();
    bad_padding[0] = 0xa0;
    bad_padding.push(0);
    let rtcp = [0x80u8, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let garbage: Vec<&[u8]> = vec![
        &[],
        &[0x80],
        &[1, 2, 3, 4, 5],
        &good[..11],
        &wrong_version,
        &csrc_missing,
        &bad_padding,
    ];
    for g in &garbage {
        a.send_raw(a_ep, g).await;
    }
    a.send_raw(a_ep, &rtcp).await;
    // Valid RTP still flows.
    a.send(a_ep, 0, 7, 0, false, &[0x11; 160]).await;
    let p = b.recv(SEC).await.expect("relayed after garbage");
    assert_eq!(p.payload, vec![0x11; 160]);
    let s = m.stats(call, Leg::Customer).await.unwrap();
    assert_eq!(s.malformed, garbage.len() as u64);
    assert_eq!(s.quality.packets_received, 1);
    assert!(b.recv(Duration::from_millis(100)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridging_unknown_or_same_legs_fails_with_unbridged() {
    let (m, mut ev, ids) = media(config(21080, 10));
    let call = ids.call();
    let a = Phone::new().await;
    m.allocate(call, Leg::Customer, Some(&a.offer(&[0])))
        .await
        .unwrap();
    let bridge = ids.bridge();
    assert!(m
        .bridge(call, bridge, Leg::Customer, Leg::Agent)
        .await
        .is_err());
    let e = expect_event(&mut ev, SEC, |e| {
        !matches!(e, MediaEvent::EndpointReady { .. })
    })
    .await;
    assert_eq!(e.event, MediaEvent::Unbridged { call, bridge });
    assert!(m
        .bridge(call, bridge, Leg::Customer, Leg::Customer)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebridging_a_leg_replaces_its_bridge_and_keeps_its_stream_continuous() {
    // Transfer: customer moves from the agent to a consult leg.
    let (m, mut ev, ids) = media(config(21090, 10));
    let (call, a, a_ep, b, b_ep) = two_legs(&m, &ids, &[0], &[0]).await;
    let c = Phone::new().await;
    let ec = m
        .allocate(call, Leg::Consult, Some(&c.offer(&[8])))
        .await
        .unwrap();
    let first = ids.bridge();
    m.bridge(call, first, Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    for i in 0..5u16 {
        b.send(b_ep, 0, 100 + i, 160 * u32::from(i), false, &[0x22; 160])
            .await;
    }
    let before = a.recv_n(5, SEC).await;
    assert_eq!(before.len(), 5);
    let second = ids.bridge();
    assert!(m
        .bridge(call, second, Leg::Customer, Leg::Consult)
        .await
        .unwrap());
    let e = expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Unbridged { .. })).await;
    assert_eq!(
        e.event,
        MediaEvent::Unbridged {
            call,
            bridge: first
        }
    );
    // The old agent is no longer heard; the consult leg is, continuing A's stream.
    b.send(b_ep, 0, 105, 800, false, &[0x22; 160]).await;
    for i in 0..5u16 {
        c.send(
            ec.local,
            8,
            9000 + i,
            160 * u32::from(i),
            false,
            &[0xd5; 160],
        )
        .await;
    }
    let after = a.recv_n(5, SEC).await;
    assert_eq!(after.len(), 5);
    let expected = ulaw_compress(alaw_expand(0xd5)); // A-law silence, transcoded
    assert!(after.iter().all(|p| p.payload == vec![expected; 160]));
    assert_eq!(after[0].header.ssrc, before[0].header.ssrc);
    assert_eq!(
        after[0].header.sequence,
        before[4].header.sequence.wrapping_add(1)
    );
    assert!(after[0].header.marker);
    assert!(a.recv(Duration::from_millis(100)).await.is_none());
    let _ = a_ep;
}
