//! Endpoint lifecycle: ports, offers and answers, renegotiation, release, and the bus
//! adapter end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use call_engine_bus::{CorrelationId, EventBus, EventBusConfig, Filter};
use call_engine_events::{
    topics, AudioSource, Codec, EngineEvent, IdAllocator, Leg, MediaCommand, MediaEvent, Sdp,
};
use call_engine_media::sdp::{negotiate, Direction, SessionDescription};
use call_engine_media::{MediaAdapter, MediaError};
use common::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_exhaustion_fails_and_release_frees_the_port() {
    // Two even ports: 22500 and 22502.
    let (m, mut ev, ids) = media(config(22500, 4));
    let call = ids.call();
    let p = Phone::new().await;
    let e1 = m
        .allocate(call, Leg::Customer, Some(&p.offer(&[0])))
        .await
        .unwrap();
    let e2 = m.allocate(call, Leg::Agent, None).await.unwrap();
    let mut ports = [e1.local.port(), e2.local.port()];
    ports.sort();
    assert_eq!(ports, [22500, 22502]);
    let r = m.allocate(call, Leg::Consult, Some(&p.offer(&[0]))).await;
    assert!(matches!(r, Err(MediaError::NoFreePort { .. })), "{r:?}");
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::EndpointFailed { .. })
    })
    .await;
    let MediaEvent::EndpointFailed {
        call: c,
        leg,
        reason,
    } = e.event
    else {
        unreachable!()
    };
    assert_eq!((c, leg), (call, Leg::Consult));
    assert!(reason.contains("no free RTP port"), "{reason}");
    assert_eq!(m.endpoints(), 2);

    m.release(call, Leg::Customer).await;
    let e = expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Released { .. })).await;
    assert_eq!(
        e.event,
        MediaEvent::Released {
            call,
            leg: Leg::Customer
        }
    );
    // The port is really closed and free.
    assert!(std::net::UdpSocket::bind(e1.local).map(drop).is_ok());
    let e3 = m
        .allocate(call, Leg::Consult, Some(&p.offer(&[0])))
        .await
        .unwrap();
    assert_eq!(e3.local.port(), e1.local.port());
    // Releasing again is harmless.
    m.release(call, Leg::Customer).await;
    expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Released { .. })).await;
    assert!(m.stats(call, Leg::Customer).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_fail_without_taking_a_port() {
    let (m, mut ev, ids) = media(config(22510, 10));
    let call = ids.call();
    let bad = [
        Sdp("".into()),
        Sdp("\u{0}\u{1}garbage\r\n".into()),
        Sdp("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18 9\r\n".into()),
        Sdp("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/SAVP 0\r\n".into()),
        Sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\n".into()),
    ];
    for sdp in &bad {
        assert!(m.allocate(call, Leg::Customer, Some(sdp)).await.is_err());
        let e = expect_event(&mut ev, SEC, |_| true).await;
        assert!(
            matches!(
                e.event,
                MediaEvent::EndpointFailed {
                    leg: Leg::Customer,
                    ..
                }
            ),
            "{:?}",
            e.event
        );
    }
    assert_eq!(m.endpoints(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_then_answer_then_playback_in_the_answered_codec() {
    let (m, mut ev, ids) = media(config(22520, 10));
    let call = ids.call();
    let a = Phone::new().await;
    let ep = m.allocate(call, Leg::Agent, None).await.unwrap();
    assert_eq!(ep.codec, None);
    let e = expect_event(&mut ev, SEC, |_| true).await;
    let MediaEvent::EndpointReady {
        local_sdp,
        codec,
        endpoint,
        ..
    } = e.event
    else {
        panic!("{:?}", e.event)
    };
    assert_eq!((codec, endpoint), (None, ep.endpoint));
    let offer = SessionDescription::parse(&local_sdp.0).unwrap();
    let n = negotiate(&offer).unwrap();
    assert_eq!(n.remote, Some(ep.local));
    assert_eq!(offer.media[0].formats, ["0", "8", "101"]);
    assert!(local_sdp.0.contains("a=rtpmap:101 telephone-event/8000"));
    assert!(local_sdp.0.contains("a=sendrecv"));

    // Nothing is sent before the answer.
    m.play(
        call,
        Leg::Agent,
        ids.playback(),
        &AudioSource::BuiltinMusic,
        true,
    )
    .await
    .unwrap();
    assert!(a.recv(Duration::from_millis(100)).await.is_none());

    // A bad answer fails, a good one (PCMA) applies.
    assert!(m
        .set_remote(call, Leg::Agent, &Sdp("v=0\r\nnonsense".into()))
        .await
        .is_err());
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::EndpointFailed { .. })
    })
    .await;
    assert!(matches!(
        e.event,
        MediaEvent::EndpointFailed {
            leg: Leg::Agent,
            ..
        }
    ));
    assert!(m
        .set_remote(call, Leg::Consult, &a.offer(&[8]))
        .await
        .is_err());
    assert_eq!(
        m.set_remote(call, Leg::Agent, &a.offer(&[8, 101]))
            .await
            .unwrap(),
        Codec::Pcma
    );
    let pkts = a.recv_n(5, SEC).await;
    assert_eq!(pkts.len(), 5);
    assert!(pkts.iter().all(|p| p.header.payload_type == 8));
    let s = m.stats(call, Leg::Agent).await.unwrap();
    assert_eq!(
        (s.codec, s.telephone_event, s.remote),
        (Some(Codec::Pcma), Some(101), Some(a.addr))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reoffer_on_an_existing_leg_renegotiates_on_the_same_port() {
    let (m, _ev, ids) = media(config(22530, 10));
    let call = ids.call();
    let a = Phone::new().await;
    let first = m
        .allocate(call, Leg::Customer, Some(&a.offer(&[0])))
        .await
        .unwrap();
    m.play(
        call,
        Leg::Customer,
        ids.playback(),
        &AudioSource::BuiltinMusic,
        true,
    )
    .await
    .unwrap();
    assert!(a.recv(SEC).await.is_some());
    // The customer puts us on hold (sendonly): we answer recvonly and stop sending.
    let hold = Sdp(a.offer(&[0]).0.replace("a=sendrecv", "a=sendonly").into());
    let second = m.allocate(call, Leg::Customer, Some(&hold)).await.unwrap();
    assert_eq!(
        (second.endpoint, second.local),
        (first.endpoint, first.local)
    );
    let answer = SessionDescription::parse(&second.local_sdp.0).unwrap();
    assert_eq!(answer.media[0].direction, Some(Direction::RecvOnly));
    assert!(second
        .local_sdp
        .0
        .contains(&format!("o=call-engine {} 2 ", first.endpoint.0)));
    a.collect(Duration::from_millis(60)).await;
    assert!(
        a.recv(Duration::from_millis(200)).await.is_none(),
        "no media while held"
    );
    // Resume in PCMA: media flows again, in the new codec.
    let third = m
        .allocate(call, Leg::Customer, Some(&a.offer(&[8])))
        .await
        .unwrap();
    assert_eq!(third.codec, Some(Codec::Pcma));
    let p = a.recv(SEC).await.expect("resumed");
    assert_eq!(p.header.payload_type, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_bridged_leg_unbridges_reports_quality_and_releases() {
    let (m, mut ev, ids) = media(config(22540, 10));
    let (call, a, a_ep, b, _) = two_legs(&m, &ids, &[0], &[0]).await;
    let bridge = ids.bridge();
    m.bridge(call, bridge, Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    for i in 0..3u16 {
        a.send(a_ep, 0, i, 160 * u32::from(i), false, &[0xff; 160])
            .await;
    }
    assert_eq!(b.recv_n(3, SEC).await.len(), 3);
    drain(&mut ev);
    m.release(call, Leg::Customer).await;
    let got: Vec<MediaEvent> = drain(&mut ev);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], MediaEvent::Unbridged { call, bridge });
    assert!(matches!(
        got[1],
        MediaEvent::Quality { leg: Leg::Customer, quality, .. } if quality.packets_received == 3
    ));
    assert_eq!(
        got[2],
        MediaEvent::Released {
            call,
            leg: Leg::Customer
        }
    );
    // The agent leg lives on, unbridged.
    assert_eq!(m.stats(call, Leg::Agent).await.unwrap().bridge, None);
    m.shutdown().await;
    assert_eq!(m.endpoints(), 0);
    assert!(matches!(
        m.allocate(call, Leg::Customer, None).await,
        Err(MediaError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_adapter_executes_commands_and_publishes_correlated_events() {
    let bus = EventBus::<EngineEvent>::new(EventBusConfig::default()).unwrap();
    let ids = Arc::new(IdAllocator::new());
    let mut events = bus.subscribe(Filter::topic(topics::MEDIA_EVENTS));
    let adapter = MediaAdapter::start(config(22550, 10), bus.clone(), ids.clone()).unwrap();
    let orchestrator = bus.publisher("test");
    let call = ids.call();
    let a = Phone::new().await;

    let cmd = orchestrator
        .publish(
            call.into(),
            None,
            EngineEvent::MediaCommand(MediaCommand::Allocate {
                call,
                leg: Leg::Customer,
                remote_offer: Some(a.offer(&[0, 101])),
            }),
        )
        .await
        .unwrap();
    let e = tokio::time::timeout(SEC, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.source, "media");
    assert_eq!(e.correlation, CorrelationId::from(call));
    assert_eq!(e.causation, Some(cmd));
    let EngineEvent::Media(MediaEvent::EndpointReady { leg, codec, .. }) = &e.payload else {
        panic!("{:?}", e.payload)
    };
    assert_eq!((*leg, *codec), (Leg::Customer, Some(Codec::Pcmu)));
    drop(e);

    let playback = ids.playback();
    let cmd = orchestrator
        .publish(
            call.into(),
            None,
            EngineEvent::MediaCommand(MediaCommand::Play {
                call,
                leg: Leg::Customer,
                playback,
                source: AudioSource::BuiltinMusic,
                looped: true,
            }),
        )
        .await
        .unwrap();
    let e = tokio::time::timeout(SEC, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.causation, Some(cmd));
    assert_eq!(
        e.payload,
        EngineEvent::Media(MediaEvent::PlaybackStarted { call, playback })
    );
    drop(e);
    assert!(a.recv(SEC).await.is_some());

    let cmd = orchestrator
        .publish(
            call.into(),
            None,
            EngineEvent::MediaCommand(MediaCommand::Release {
                call,
                leg: Leg::Customer,
            }),
        )
        .await
        .unwrap();
    loop {
        let e = tokio::time::timeout(SEC, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let EngineEvent::Media(MediaEvent::Released { .. }) = e.payload {
            assert_eq!(e.causation, Some(cmd));
            break;
        }
    }
    assert_eq!(adapter.media().endpoints(), 0);
    adapter.shutdown().await;
}
