//! Playback over real loopback RTP: music on hold, WAV files, prompts, errors, and
//! the hand-over from playback to a bridge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use call_engine_events::{AudioSource, Codec, Leg, MediaEvent};
use call_engine_media::audio::wav_bytes;
use call_engine_media::{g711, MediaError, MohSource};
use codec_core::codecs::g711::{ulaw_compress, ulaw_expand};
use common::*;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_music_streams_in_real_time() {
    let (m, mut ev, ids) = media(config(22000, 10));
    let call = ids.call();
    let a = Phone::new().await;
    m.allocate(call, Leg::Customer, Some(&a.offer(&[0, 101])))
        .await
        .unwrap();
    let playback = ids.playback();
    m.play(
        call,
        Leg::Customer,
        playback,
        &AudioSource::BuiltinMusic,
        true,
    )
    .await
    .unwrap();
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::PlaybackStarted { .. })
    })
    .await;
    assert_eq!(e.event, MediaEvent::PlaybackStarted { call, playback });

    let first = a.recv(SEC).await.expect("music arrives");
    assert!(first.header.marker);
    let start = Instant::now();
    let pkts = a.collect(SEC).await;
    let elapsed = start.elapsed();
    assert!(
        (35..=65).contains(&pkts.len()),
        "{} packets in {elapsed:?}",
        pkts.len()
    );
    let mut prev = &first;
    for p in &pkts {
        assert_eq!(p.header.payload_type, 0);
        assert_eq!(p.header.ssrc, first.header.ssrc);
        assert_eq!(p.header.sequence, prev.header.sequence.wrapping_add(1));
        assert_eq!(p.header.timestamp, prev.header.timestamp.wrapping_add(160));
        assert_eq!(p.payload.len(), 160);
        assert!(!p.header.marker);
        prev = p;
    }
    let peak = pkts
        .iter()
        .flat_map(|p| p.payload.iter().map(|b| ulaw_expand(*b).unsigned_abs()))
        .max()
        .unwrap();
    assert!(peak > 1000, "music is not silence (peak {peak})");
    // Looping music never finishes by itself; stopping it sends nothing more.
    assert!(m.stop_playback(call, playback).await);
    a.collect(Duration::from_millis(60)).await;
    assert!(a.recv(Duration::from_millis(150)).await.is_none());
    assert!(!drain(&mut ev)
        .iter()
        .any(|e| matches!(e, MediaEvent::PlaybackFinished { .. })));
    assert!(!m.stop_playback(call, playback).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_stops_music_and_the_stream_continues() {
    let (m, mut ev, ids) = media(config(22010, 10));
    let (call, a, _a_ep, b, b_ep) = two_legs(&m, &ids, &[0], &[0]).await;
    m.play(
        call,
        Leg::Customer,
        ids.playback(),
        &AudioSource::BuiltinMusic,
        true,
    )
    .await
    .unwrap();
    let moh = a.recv_n(10, SEC).await;
    assert_eq!(moh.len(), 10);
    let bridge = ids.bridge();
    m.bridge(call, bridge, Leg::Customer, Leg::Agent)
        .await
        .unwrap();
    expect_event(&mut ev, SEC, |e| matches!(e, MediaEvent::Bridged { .. })).await;
    // What was in flight, then silence: the music stopped.
    let tail = a.collect(Duration::from_millis(60)).await;
    let last = tail.last().unwrap_or(&moh[9]).clone();
    assert!(
        a.recv(Duration::from_millis(300)).await.is_none(),
        "music stopped"
    );
    // The agent's audio continues the same stream.
    for i in 0..10u16 {
        b.send(
            b_ep,
            0,
            4000 + i,
            77 + 160 * u32::from(i),
            false,
            &[0x33; 160],
        )
        .await;
    }
    let voice = a.recv_n(10, SEC).await;
    assert_eq!(voice.len(), 10);
    assert_eq!(voice[0].header.ssrc, last.header.ssrc);
    assert_eq!(
        voice[0].header.sequence,
        last.header.sequence.wrapping_add(1)
    );
    assert!(voice[0].header.marker);
    let advance = voice[0]
        .header
        .timestamp
        .wrapping_sub(last.header.timestamp);
    assert!(
        (160..8000 * 2).contains(&advance),
        "timestamp advance {advance}"
    );
    for w in voice.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
        assert_eq!(
            w[1].header.timestamp,
            w[0].header.timestamp.wrapping_add(160)
        );
    }
    assert!(voice.iter().all(|p| p.payload == vec![0x33; 160]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_file_plays_exactly_and_finishes() {
    let (m, mut ev, ids) = media(config(22020, 10));
    let call = ids.call();
    let a = Phone::new().await;
    m.allocate(call, Leg::Customer, Some(&a.offer(&[0])))
        .await
        .unwrap();
    // 0.33 s: 16 full frames and a partial one (padded with silence).
    let samples = sine(2640, 600.0, 9000.0, 0);
    let dir = temp_dir("wav");
    let path = dir.join("hello.wav");
    std::fs::write(&path, wav_bytes(&samples)).unwrap();
    let playback = ids.playback();
    let source = AudioSource::File {
        path: path.to_string_lossy().as_ref().into(),
    };
    m.play(call, Leg::Customer, playback, &source, false)
        .await
        .unwrap();
    let pkts = a.recv_n(17, 2 * SEC).await;
    assert_eq!(pkts.len(), 17);
    let bytes: Vec<u8> = pkts.iter().flat_map(|p| p.payload.clone()).collect();
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(bytes[i], ulaw_compress(*s), "sample {i}");
    }
    assert!(bytes[samples.len()..]
        .iter()
        .all(|b| *b == g711::silence(Codec::Pcmu)));
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::PlaybackFinished { .. })
    })
    .await;
    assert_eq!(e.event, MediaEvent::PlaybackFinished { call, playback });
    assert!(a.recv(Duration::from_millis(100)).await.is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wav_and_missing_prompts_are_reported_without_panicking() {
    let dir = temp_dir("prompts");
    let mut c = config(22030, 10);
    c.prompts_dir = Some(dir.clone());
    let (m, mut ev, ids) = media(c);
    let call = ids.call();
    let a = Phone::new().await;
    m.allocate(call, Leg::Customer, Some(&a.offer(&[8])))
        .await
        .unwrap();
    expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::EndpointReady { .. })
    })
    .await;

    // A 16 kHz stereo WAV.
    let mut w = wav_bytes(&[1, 2, 3, 4]);
    w[22] = 2;
    w[24..28].copy_from_slice(&16000u32.to_le_bytes());
    let bad = dir.join("bad.wav");
    std::fs::write(&bad, &w).unwrap();
    std::fs::write(dir.join("garbage.wav"), b"this is not a wav file").unwrap();
    std::fs::write(
        dir.join("digit-3.wav"),
        wav_bytes(&sine(800, 400.0, 5000.0, 0)),
    )
    .unwrap();

    let cases = [
        AudioSource::File {
            path: bad.to_string_lossy().as_ref().into(),
        },
        AudioSource::File {
            path: "/nonexistent/x.wav".into(),
        },
        AudioSource::Prompt {
            name: "garbage".into(),
        },
        AudioSource::Prompt {
            name: "no-such-prompt".into(),
        },
        AudioSource::Prompt {
            name: "../bad".into(),
        },
    ];
    for source in &cases {
        let playback = ids.playback();
        let r = m.play(call, Leg::Customer, playback, source, false).await;
        assert!(matches!(r, Err(MediaError::Audio(_))), "{source:?}: {r:?}");
        let e = expect_event(&mut ev, SEC, |_| true).await;
        assert_eq!(
            e.event,
            MediaEvent::PlaybackFinished { call, playback },
            "a failed playback finishes without starting"
        );
    }
    // Nothing was sent, and the endpoint still works: a real prompt plays (A-law).
    assert!(a.recv(Duration::from_millis(100)).await.is_none());
    let playback = ids.playback();
    m.play(
        call,
        Leg::Customer,
        playback,
        &AudioSource::Prompt {
            name: "digit-3".into(),
        },
        false,
    )
    .await
    .unwrap();
    let pkts = a.recv_n(5, SEC).await;
    assert_eq!(pkts.len(), 5);
    assert!(pkts.iter().all(|p| p.header.payload_type == 8));
    let e = expect_event(&mut ev, SEC, |e| {
        matches!(e, MediaEvent::PlaybackFinished { .. })
    })
    .await;
    assert_eq!(e.event, MediaEvent::PlaybackFinished { call, playback });

    // Without a prompts directory, prompts are a clear error.
    let (m2, mut ev2, ids2) = media(config(22040, 10));
    let call2 = ids2.call();
    m2.allocate(call2, Leg::Customer, Some(&a.offer(&[0])))
        .await
        .unwrap();
    let r = m2
        .play(
            call2,
            Leg::Customer,
            ids2.playback(),
            &AudioSource::Prompt {
                name: "digit-3".into(),
            },
            false,
        )
        .await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("no prompts directory"), "{err}");
    expect_event(&mut ev2, SEC, |e| {
        matches!(e, MediaEvent::PlaybackFinished { .. })
    })
    .await;
    // Playing to a leg without endpoint.
    assert!(matches!(
        m2.play(
            call2,
            Leg::Agent,
            ids2.playback(),
            &AudioSource::BuiltinMusic,
            true
        )
        .await,
        Err(MediaError::UnknownEndpoint { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn music_on_hold_from_a_configured_wav_file() {
    let dir = temp_dir("moh");
    let path = dir.join("moh.wav");
    let samples = sine(1600, 300.0, 7000.0, 0);
    std::fs::write(&path, wav_bytes(&samples)).unwrap();
    let mut c = config(22050, 10);
    c.moh = MohSource::WavFile(path.clone());
    let (m, _ev, ids) = media(c);
    let call = ids.call();
    let a = Phone::new().await;
    m.allocate(call, Leg::Customer, Some(&a.offer(&[0])))
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
    // 10 frames per loop; the 12th packet is the 2nd frame again.
    let pkts = a.recv_n(12, 2 * SEC).await;
    assert_eq!(pkts.len(), 12);
    assert_eq!(pkts[11].payload, pkts[1].payload);
    assert_eq!(pkts[1].payload[0], ulaw_compress(samples[160]));

    // A bad MOH file is a configuration error at start.
    std::fs::write(&path, b"nope").unwrap();
    let mut c = config(22060, 10);
    c.moh = MohSource::WavFile(path);
    let ids = std::sync::Arc::new(call_engine_events::IdAllocator::new());
    assert!(matches!(
        call_engine_media::Media::new(c, ids),
        Err(MediaError::Audio(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}
