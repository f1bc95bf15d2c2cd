//! Method handling and hostile input: OPTIONS, 405/501, 400 for broken requests, 481
//! outside dialogs, and a barrage of garbage over UDP and TCP that must not take the
//! adapter down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn simple(ua: &Ua, method: &str, b: &str) -> Req {
    Req::new(method, &format!("sip:queue@{DOMAIN}"))
        .h("Via", ua.via(b))
        .h("Max-Forwards", 70)
        .h("From", format!("<sip:probe@{DOMAIN}>;tag=p1"))
        .h("To", format!("<sip:queue@{DOMAIN}>"))
        .h("Call-ID", rand_token())
        .h("CSeq", format!("7 {method}"))
}

#[tokio::test]
async fn options_gets_200_with_allow() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let r = ua.options_ok().await;
    let allow = r.h("Allow");
    for m in [
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "REFER",
    ] {
        assert!(allow.contains(m), "{allow}");
    }
    assert!(r.to_tag().is_some());
    assert_eq!(r.cseq(), (7, "OPTIONS".into()));
    assert!(r.h("Via").contains("received=127.0.0.1"));
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn compact_headers_are_understood() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let b = branch();
    let text = format!(
        "OPTIONS sip:queue@{DOMAIN} SIP/2.0\r\nv: {}\r\nf: <sip:probe@{DOMAIN}>;tag=1\r\nt: <sip:queue@{DOMAIN}>\r\ni: {}\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
        ua.via(&b),
        rand_token()
    );
    ua.send(&text).await;
    let r = ua.recv().await;
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.branch(), b);
    env.shutdown().await;
}

#[tokio::test]
async fn unknown_method_is_not_implemented() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    ua.send(&simple(&ua, "FOO", &branch()).build()).await;
    let r = ua.recv().await;
    assert_eq!(r.status(), Some(501));
    assert_eq!(r.cseq(), (7, "FOO".into()));
    env.shutdown().await;
}

#[tokio::test]
async fn unsupported_methods_get_405_with_allow() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    for method in ["SUBSCRIBE", "PUBLISH", "MESSAGE", "UPDATE"] {
        let mut req = simple(&ua, method, &branch());
        if method != "UPDATE" && method != "MESSAGE" {
            req = req.h("Event", "presence");
        }
        ua.send(&req.build()).await;
        let r = ua.recv().await;
        assert_eq!(r.status(), Some(405), "{method}: {}", r.text);
        assert!(r.h("Allow").contains("INVITE"));
    }
    env.shutdown().await;
}

#[tokio::test]
async fn required_extensions_get_420() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let req = simple(&ua, "INVITE", &branch())
        .h("Contact", format!("<sip:x@{}>", ua.local))
        .h("Require", "100rel, timer")
        .body("application/sdp", SDP_OFFER);
    ua.send(&req.build()).await;
    let r = ua.recv().await;
    assert_eq!(r.status(), Some(420));
    assert_eq!(r.h("Unsupported"), "100rel, timer");
    assert!(
        env.event_within(Duration::from_millis(100)).await.is_none(),
        "no call offered"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn broken_requests_get_400() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    // No Call-ID.
    let b = branch();
    let text = format!(
        "OPTIONS sip:queue@{DOMAIN} SIP/2.0\r\nVia: {}\r\nFrom: <sip:probe@{DOMAIN}>;tag=1\r\nTo: <sip:queue@{DOMAIN}>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ua.via(&b)
    );
    ua.send(&text).await;
    let r = ua.recv().await;
    assert_eq!(r.status(), Some(400), "{}", r.text);
    assert_eq!(r.branch(), b);
    assert!(r.header("Call-ID").is_none());
    assert_eq!(r.cseq(), (1, "OPTIONS".into()));
    // CSeq method not matching the request method.
    ua.send(
        &simple(&ua, "OPTIONS", &branch())
            .build()
            .replace("7 OPTIONS", "7 INVITE"),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(400));
    // Unparsable CSeq.
    ua.send(
        &simple(&ua, "OPTIONS", &branch())
            .build()
            .replace("7 OPTIONS", "seven OPTIONS"),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(400));
    // Content-Length larger than the datagram.
    ua.send(
        &simple(&ua, "OPTIONS", &branch())
            .build()
            .replace("Content-Length: 0", "Content-Length: 500"),
    )
    .await;
    assert_eq!(ua.recv().await.status(), Some(400));
    // A broken ACK is never answered.
    ua.send(
        &simple(&ua, "ACK", &branch())
            .build()
            .replace("Call-ID", "X-No-Call-ID"),
    )
    .await;
    assert!(ua.recv_within(Duration::from_millis(200)).await.is_none());
    assert!(env.sip().stats().bad_requests >= 4);
    ua.options_ok().await;
    env.shutdown().await;
}

#[tokio::test]
async fn in_dialog_requests_without_a_dialog_get_481() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    for method in ["BYE", "INFO", "REFER", "NOTIFY"] {
        let req = simple(&ua, method, &branch()).build().replace(
            &format!("<sip:queue@{DOMAIN}>\r\n"),
            &format!("<sip:queue@{DOMAIN}>;tag=nope\r\n"),
        );
        ua.send(&req).await;
        assert_eq!(ua.recv().await.status(), Some(481), "{method}");
    }
    // An ACK for nothing is dropped silently; a re-INVITE for no dialog is 481.
    ua.send(&simple(&ua, "ACK", &branch()).build()).await;
    assert!(ua.recv_within(Duration::from_millis(150)).await.is_none());
    let reinvite = simple(&ua, "INVITE", &branch()).build().replace(
        &format!("<sip:queue@{DOMAIN}>\r\n"),
        &format!("<sip:queue@{DOMAIN}>;tag=nope\r\n"),
    );
    ua.send(&reinvite).await;
    assert_eq!(ua.recv().await.status(), Some(481));
    // A CANCEL for no INVITE is 481.
    ua.send(&simple(&ua, "CANCEL", &branch()).build()).await;
    assert_eq!(ua.recv().await.status(), Some(481));
    env.shutdown().await;
}

/// Garbage of many shapes, reproducible.
fn garbage(rng: &mut StdRng, valid: &[String]) -> Vec<u8> {
    let base = valid[rng.gen_range(0..valid.len())].as_bytes().to_vec();
    match rng.gen_range(0..10) {
        // Random bytes.
        0 => (0..rng.gen_range(0..1500)).map(|_| rng.gen()).collect(),
        // Random printable text with CRLFs.
        1 => (0..rng.gen_range(1..800))
            .map(|_| {
                let c = rng.gen_range(0..40u8);
                if c < 3 {
                    b'\n'
                } else if c < 6 {
                    b'\r'
                } else {
                    rng.gen_range(b' '..=b'~')
                }
            })
            .collect(),
        // A valid message truncated anywhere.
        2 | 3 => {
            let n = rng.gen_range(0..base.len());
            base[..n].to_vec()
        }
        // Bytes flipped in a valid message.
        4 | 5 => {
            let mut m = base;
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..m.len());
                m[i] = rng.gen();
            }
            m
        }
        // A header line duplicated or deleted.
        6 => {
            let text = String::from_utf8_lossy(&base).to_string();
            let mut lines: Vec<&str> = text.split("\r\n").collect();
            let i = rng
                .gen_range(1..lines.len().max(2) - 1)
                .min(lines.len() - 1);
            if rng.gen() {
                lines.remove(i);
            } else {
                let l = lines[i];
                lines.insert(i, l);
            }
            lines.join("\r\n").into_bytes()
        }
        // Absurd values.
        7 => {
            let text = String::from_utf8_lossy(&base).to_string();
            let evil = [
                ("Content-Length: 0", "Content-Length: -5"),
                ("Content-Length: 0", "Content-Length: 99999999999999999999"),
                ("CSeq: 7", "CSeq: 4294967296"),
                ("SIP/2.0\r\n", "SIP/9.9\r\n"),
                ("Max-Forwards: 70", "Max-Forwards: 70000000000000000"),
                ("sip:", "sip:%%%@[::::]:99999;;;="),
                ("Via: SIP/2.0/UDP", "Via: SIP/2.0/UDP \"\";branch="),
                ("From: <", "From: \"unterminated <"),
            ];
            let (a, b) = evil[rng.gen_range(0..evil.len())];
            text.replacen(a, b, 1).into_bytes()
        }
        // A very long header line / many headers.
        8 => {
            let text = String::from_utf8_lossy(&base).to_string();
            let filler = if rng.gen() {
                format!("X-Long: {}\r\n", "a".repeat(rng.gen_range(4000..20000)))
            } else {
                "X-H: 1\r\n".repeat(rng.gen_range(90..300))
            };
            text.replacen("Max-Forwards", &format!("{filler}Max-Forwards"), 1)
                .into_bytes()
        }
        // NULs and non-UTF-8 in the middle of headers.
        _ => {
            let mut m = base;
            let i = rng.gen_range(0..m.len());
            m.splice(i..i, [0u8, 0xff, 0xfe, b'\r', 0xc3]);
            m
        }
    }
}

#[tokio::test]
async fn a_thousand_garbage_datagrams_do_not_take_it_down() {
    let mut env = Env::start().await;
    let mut ua = Ua::udp(env.udp).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_c0de);
    let valid: Vec<String> = ["OPTIONS", "INVITE", "REGISTER", "BYE", "ACK", "CANCEL", "INFO"]
        .iter()
        .map(|m| {
            simple(&ua, m, &branch())
                .h("Contact", format!("<sip:x@{}>", ua.local))
                .body("application/sdp", SDP_OFFER)
                .build()
        })
        .chain(std::iter::once(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKzz\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".to_string(),
        ))
        .collect();
    for i in 0..1000 {
        let g = garbage(&mut rng, &valid);
        ua.send_bytes(&g).await;
        if i % 50 == 0 {
            // Let the adapter keep up; read back whatever it answered (400s, 100s…).
            ua.drain(Duration::from_millis(5)).await;
        }
    }
    ua.drain(Duration::from_millis(100)).await;
    // Still alive and answering.
    let mut fresh = Ua::udp(env.udp).await;
    fresh.options_ok().await;
    let stats = env.sip().stats();
    assert!(stats.received >= 900, "{stats:?}");
    assert!(stats.malformed > 100, "{stats:?}");
    // Whatever calls the garbage started are still well-formed events; drain them.
    while env.event_within(Duration::from_millis(20)).await.is_some() {}
    env.shutdown().await;
}

#[tokio::test]
async fn tcp_framing_keepalive_and_truncation() {
    let mut env = Env::start().await;

    // A message split across writes, preceded by a keep-alive ping (CRLFCRLF → CRLF).
    let mut ua = Ua::tcp(env.tcp).await;
    let b = branch();
    let text = simple(&ua, "OPTIONS", &b).build();
    let (a, rest) = text.split_at(37);
    ua.send("\r\n\r\n").await;
    ua.send(a).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    ua.send(rest).await;
    let r = ua.recv().await; // the UA's reader skips the CRLF pong
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.branch(), b);

    // Two messages in one write.
    let b1 = branch();
    let b2 = branch();
    let two = format!(
        "{}{}",
        simple(&ua, "OPTIONS", &b1).build(),
        simple(&ua, "FOO", &b2).build()
    );
    ua.send(&two).await;
    let r1 = ua.recv().await;
    let r2 = ua.recv().await;
    assert_eq!((r1.status(), r1.branch()), (Some(200), b1));
    assert_eq!((r2.status(), r2.branch()), (Some(501), b2));

    // A stream without Content-Length cannot be framed: 400, then the connection closes.
    let mut raw = TcpStream::connect(env.tcp).await.unwrap();
    let local = raw.local_addr().unwrap();
    let no_len = format!(
        "OPTIONS sip:q@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch={}\r\nFrom: <sip:a@{DOMAIN}>;tag=1\r\nTo: <sip:q@{DOMAIN}>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        branch()
    );
    raw.write_all(no_len.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, raw.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the adapter closes an unframeable stream");
    assert!(
        String::from_utf8_lossy(&got).starts_with("SIP/2.0 400 "),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Truncated streams: half a message, then the peer goes away.
    for cut in [1usize, 20, 60, 150] {
        let mut s = TcpStream::connect(env.tcp).await.unwrap();
        let msg = simple(&ua, "INVITE", &branch())
            .body("application/sdp", SDP_OFFER)
            .build();
        s.write_all(&msg.as_bytes()[..cut.min(msg.len())])
            .await
            .unwrap();
        drop(s);
    }
    // Garbage over TCP.
    let mut s = TcpStream::connect(env.tcp).await.unwrap();
    s.write_all(b"\x00\x01\x02 GARBAGE \xff\r\n\r\n")
        .await
        .unwrap();
    drop(s);

    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fresh = Ua::tcp(env.tcp).await;
    fresh.options_ok().await;
    let mut fresh_udp = Ua::udp(env.udp).await;
    fresh_udp.options_ok().await;
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_new_requests_gets_503_once_the_transaction_budget_is_spent() {
    let mut env = Env::start_with(|c| c.max_server_transaction_bytes = 64 * 1024).await;
    // Requests whose answers (which copy the Via) are about 2 KB each.
    let pad = "p".repeat(2000);
    let padded = |ua: &Ua| {
        let b = branch();
        let via = ua.via(&b);
        let text = simple(ua, "OPTIONS", &b)
            .build()
            .replacen(&via, &format!("{via};pad={pad}"), 1);
        (b, text)
    };
    // Over TCP a non-INVITE transaction ends with its answer (Timer J is zero): no
    // budget is held, however many.
    let mut tcp = Ua::tcp(env.tcp).await;
    for _ in 0..60 {
        let (b, text) = padded(&tcp);
        let r = tcp.ask(&text, &b).await;
        assert_eq!(r.status(), Some(200), "{}", r.text);
    }
    // Over UDP each is kept 64*T1 for retransmissions: past the budget, 503.
    let mut udp = Ua::udp(env.udp).await;
    let mut codes = Vec::new();
    for _ in 0..60 {
        let (b, text) = padded(&udp);
        let r = udp.ask(&text, &b).await;
        if r.status() == Some(503) {
            assert_eq!(r.header("Retry-After"), Some("5"), "{}", r.text);
        }
        codes.push(r.status().unwrap());
    }
    let ok = codes.iter().take_while(|c| **c == 200).count();
    assert!((10..60).contains(&ok), "{codes:?}");
    assert!(codes[ok..].iter().all(|c| *c == 503), "{codes:?}");
    assert_eq!(env.sip().stats().overloaded, (60 - ok) as u64);
    // Once those transactions end, requests are served again.
    tokio::time::sleep(Duration::from_millis(20 * 64 + 300)).await;
    udp.options_ok().await;
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}
