//! What one TCP peer, or many, can hold of the adapter (`TcpLimits`): connections
//! above the caps are closed at once, a message too large gets 513, a silent or stalled
//! connection is closed after the message timeout, a peer that does not read what it is
//! sent is disconnected; and through all of it, other peers are served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use call_engine_session::TcpLimits;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn options(via: &str) -> String {
    options_req(via).build()
}

fn tcp_via(local: SocketAddr) -> String {
    format!("SIP/2.0/TCP {local};branch={}", branch())
}

/// A connection from `ip`, answered 200 to an OPTIONS (so the adapter holds it).
async fn served_from(ip: &str, server: SocketAddr) -> TcpStream {
    let mut s = connect_from(ip, server).await;
    let local = s.local_addr().unwrap();
    s.write_all(options(&tcp_via(local)).as_bytes())
        .await
        .unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut got))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        got[..n].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&got[..n])
    );
    s
}

async fn connect_from(ip: &str, server: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    sock.connect(server).await.unwrap()
}

/// Whether the adapter closes `s` within `d` (what it sent before is read and
/// returned).
async fn closed_within(s: &mut TcpStream, d: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    match tokio::time::timeout(d, s.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

async fn limited(env: &Env, at_least: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.sip().stats().tcp_limited < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tcp_limited {} < {at_least}",
            env.sip().stats().tcp_limited
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh TCP peer is served, nothing reached the core as an event, and the adapter
/// shuts down.
async fn served_and_quiet(env: &mut Env) {
    let mut ua = Ua::tcp(env.tcp).await;
    ua.options_ok().await;
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn connections_above_the_caps_are_closed_at_once_and_room_comes_back() {
    let mut env = Env::start_with(|c| {
        c.tcp_limits = TcpLimits {
            max_connections: 4,
            max_per_ip: 2,
            ..TcpLimits::default()
        };
    })
    .await;
    let a1 = served_from("127.0.0.1", env.tcp).await;
    let _a2 = served_from("127.0.0.1", env.tcp).await;
    // A third from the same IP: closed at once, nothing answered.
    let mut a3 = connect_from("127.0.0.1", env.tcp).await;
    let got = closed_within(&mut a3, WAIT).await.expect("closed at once");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Other IPs have room until the global cap.
    let _b1 = served_from("127.0.0.2", env.tcp).await;
    let _b2 = served_from("127.0.0.2", env.tcp).await;
    let mut c1 = connect_from("127.0.0.3", env.tcp).await;
    assert!(closed_within(&mut c1, WAIT).await.is_some(), "global cap");
    limited(&env, 2).await;
    // One leaves: a connection from its IP is served again.
    drop(a1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _a4 = served_from("127.0.0.1", env.tcp).await;
    // UDP is not affected (TCP is full again: four open).
    let mut udp = Ua::udp(env.udp).await;
    udp.options_ok().await;
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn a_message_too_large_gets_513_as_soon_as_its_size_is_known() {
    let mut env = Env::start_with(|c| {
        c.tcp_limits.max_message_bytes = 4096;
    })
    .await;
    // Headers announcing a 70,000-byte body: answered before the body is sent.
    let mut s = TcpStream::connect(env.tcp).await.unwrap();
    let local = s.local_addr().unwrap();
    let head = options(&tcp_via(local)).replace("Content-Length: 0", "Content-Length: 70000");
    assert!(head.contains("Content-Length: 70000"), "{head}");
    s.write_all(head.as_bytes()).await.unwrap();
    let got = closed_within(&mut s, WAIT).await.expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 513 "), "{text}");
    // A whole message over the limit in one write: the same.
    let mut s = TcpStream::connect(env.tcp).await.unwrap();
    let local = s.local_addr().unwrap();
    let big = options_req(&tcp_via(local))
        .body("text/plain", &"x".repeat(5000))
        .build();
    s.write_all(big.as_bytes()).await.unwrap();
    let got = closed_within(&mut s, WAIT).await.expect("closed");
    assert!(got.starts_with(b"SIP/2.0 513 "));
    // Headers and a body streamed right behind them: the answer still arrives (the
    // connection is not reset under it).
    let mut s = TcpStream::connect(env.tcp).await.unwrap();
    let local = s.local_addr().unwrap();
    let head = options(&tcp_via(local)).replace("Content-Length: 0", "Content-Length: 70000");
    let mut stream = head.into_bytes();
    stream.extend(std::iter::repeat_n(b'x', 70_000));
    let _ = s.write_all(&stream).await;
    let got = closed_within(&mut s, WAIT).await.expect("closed");
    assert!(
        got.starts_with(b"SIP/2.0 513 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Beyond what the framing itself accepts (16 MiB): 513 as well, not 400.
    let mut s = TcpStream::connect(env.tcp).await.unwrap();
    let local = s.local_addr().unwrap();
    let head = options(&tcp_via(local)).replace("Content-Length: 0", "Content-Length: 20000000");
    s.write_all(head.as_bytes()).await.unwrap();
    let got = closed_within(&mut s, WAIT).await.expect("closed");
    assert!(
        got.starts_with(b"SIP/2.0 513 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    limited(&env, 4).await;
    // A message within the limit is served.
    served_and_quiet(&mut env).await;
}

#[tokio::test]
async fn silent_and_stalled_connections_are_closed_but_idle_served_ones_stay() {
    let timeout = Duration::from_millis(300);
    let mut env = Env::start_with(|c| {
        c.tcp_limits.message_timeout = timeout;
    })
    .await;
    // Served, then idle for longer than the timeout: still open and served.
    let mut served = Ua::tcp(env.tcp).await;
    served.options_ok().await;
    // Connected, then silent (keep-alive pings do not count).
    let mut silent = TcpStream::connect(env.tcp).await.unwrap();
    silent.write_all(b"\r\n\r\n").await.unwrap();
    // Half a message, then nothing.
    let mut stalled = TcpStream::connect(env.tcp).await.unwrap();
    let local = stalled.local_addr().unwrap();
    let msg = options(&tcp_via(local));
    stalled.write_all(&msg.as_bytes()[..40]).await.unwrap();
    // A message trickled slower than one byte per read, but complete in time.
    let mut slow = TcpStream::connect(env.tcp).await.unwrap();
    let local = slow.local_addr().unwrap();
    let msg = options(&tcp_via(local));
    for chunk in msg.as_bytes().chunks(msg.len() / 4 + 1) {
        slow.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, slow.read_exact(&mut head))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(&head, b"SIP/2.0 200 ");

    for (name, s) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let got = closed_within(s, WAIT)
            .await
            .unwrap_or_else(|| panic!("{name}: still open"));
        // Only the pong of the ping.
        assert!(got.iter().all(|b| b.is_ascii_whitespace()), "{name}");
    }
    limited(&env, 2).await;
    tokio::time::sleep(timeout * 2).await;
    served.options_ok().await;
    assert!(closed_within(&mut slow, Duration::from_millis(50))
        .await
        .is_none());
    assert!(env.event_within(Duration::from_millis(50)).await.is_none());
    env.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_disconnected_not_buffered_without_end() {
    // Either limit alone closes the connection: the queue's size (with a write timeout
    // too long to matter), or the stalled write (with room for everything queued).
    for (queued, write_timeout) in [
        (64 * 1024, Duration::from_secs(60)),
        (64 * 1024 * 1024, Duration::from_secs(1)),
    ] {
        let mut env = Env::start_with(|c| {
            c.tcp_limits.max_message_bytes = 8 * 1024;
            c.tcp_limits.max_queued_bytes = queued;
            c.tcp_limits.write_timeout = write_timeout;
        })
        .await;
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(env.tcp).await.unwrap();
        let local = s.local_addr().unwrap();
        // Requests whose answers (which copy the Via) are about 3.5 KB each, never read.
        let pad = "p".repeat(3400);
        let mut sent = 0;
        for _ in 0..5000 {
            let via = format!("{};pad={pad}", tcp_via(local));
            if s.write_all(options(&via).as_bytes()).await.is_err() {
                break; // closed by the adapter
            }
            sent += 1;
        }
        assert!(sent > 20, "sent {sent}");
        limited(&env, 1).await;
        assert!(
            closed_within(&mut s, WAIT).await.is_some(),
            "queue {queued}: the connection is closed"
        );
        served_and_quiet(&mut env).await;
    }
}

#[tokio::test]
async fn a_connection_idle_past_the_idle_timeout_is_closed_but_keep_alives_keep_it() {
    let idle = Duration::from_millis(1500);
    let mut env = Env::start_with(|c| {
        // Registrations shorter than the idle timeout (it must be longer).
        c.max_expires_secs = 1;
        c.default_expires_secs = 1;
        c.tcp_limits.idle_timeout = idle;
    })
    .await;
    let mut quiet = served_from("127.0.0.1", env.tcp).await;
    let mut pinging = served_from("127.0.0.1", env.tcp).await;
    // Pings every half of the timeout, for twice the timeout.
    for _ in 0..4 {
        tokio::time::sleep(idle / 2).await;
        pinging.write_all(b"\r\n\r\n").await.unwrap();
    }
    // The quiet one was closed after the timeout; the other is open and served.
    assert!(closed_within(&mut quiet, Duration::from_millis(10))
        .await
        .is_some());
    let local = pinging.local_addr().unwrap();
    pinging
        .write_all(options(&tcp_via(local)).as_bytes())
        .await
        .unwrap();
    // (After the pongs of the pings.)
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("SIP/2.0 200 ") {
        let n = tokio::time::timeout(WAIT, pinging.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    limited(&env, 1).await;
    served_and_quiet(&mut env).await;
}
