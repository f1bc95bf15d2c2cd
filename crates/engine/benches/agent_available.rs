//! Time from an agent becoming available to the INVITE leaving for them
//! (`cargo xtask bench acd`; target p99 ≤ 5 ms).
//!
//! The whole engine runs in-process (release build) on loopback with a real SQLite file.
//! One agent, `alice`, serves a queue in which `--calls` customers wait (real SIP
//! phones from the testkit, each answered with music). Each round, alice hangs up her
//! current call (BYE) and the clock starts; it stops when the INVITE for the next
//! waiting caller arrives at her phone. That span covers everything the engine does
//! between "agent free" and "INVITE sent": parsing her BYE, tearing the call down,
//! propagating the BYE to the customer, the orchestrator's routing decision, the agent
//! media endpoint and the INVITE on the wire — event-driven, no polling anywhere.
//! Loopback adds a few tens of µs each way, so the figure is an upper bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine::config::{AgentSection, Config, MediaConfig, QueueSection, SipConfig};
use call_engine::Engine;
use call_engine_orchestrator::Strategy;
use call_engine_testkit::Phone;
use std::time::{Duration, Instant};

const DOMAIN: &str = "bench.local";
const TARGET_P99_MS: f64 = 5.0;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let calls: usize = args
        .iter()
        .position(|a| a == "--calls")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 40 } else { 200 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(calls));
}

async fn run(calls: usize) {
    let dir = std::env::temp_dir().join(format!("call-engine-bench-acd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = Config::demo();
    cfg.sip = SipConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        tcp: None,
        domain: DOMAIN.into(),
        ..cfg.sip
    };
    cfg.media = MediaConfig {
        address: "127.0.0.1".parse().unwrap(),
        rtp_ports: 40000..=41999,
    };
    cfg.store_url = format!("sqlite://{}", dir.join("engine.db").display());
    cfg.control_socket = None;
    cfg.reconciler.interval_secs = 3600;
    cfg.queues = vec![QueueSection::new("support", Strategy::LongestIdleAgent)];
    cfg.agents = vec![AgentSection::new("alice", "alice-secret", &["support"])];
    let engine = Engine::start(cfg).await.expect("engine starts");
    let server = engine.sip_udp().unwrap();
    let mut alice = Phone::new("alice", DOMAIN, server).await;
    assert_eq!(alice.register("alice-secret", 3600).await, 200);

    // A first caller, answered by alice: the call she hangs up in the first round.
    let first = tokio::spawn(async move {
        let mut c = Phone::new("500000", DOMAIN, server).await;
        let d = c.call("support", 0).await.expect("customer answered");
        c.expect_request(&d.call_id, "BYE", Duration::from_secs(300))
            .await;
    });
    let (inv, from) = alice
        .next_invite(Duration::from_secs(10))
        .await
        .expect("first INVITE");
    let mut current = alice.answer_invite(inv, from, 0).await.expect("answered");

    // The callers who wait: each is answered (music), then answers the BYE that ends
    // its call.
    let mut waiting = vec![first];
    for i in 0..calls {
        waiting.push(tokio::spawn(async move {
            let mut c = Phone::new(&format!("6{i:05}"), DOMAIN, server).await;
            let d = c.call("support", 0).await.expect("customer answered");
            c.expect_request(&d.call_id, "BYE", Duration::from_secs(300))
                .await;
        }));
    }
    // Let every caller be answered and queued (the engine answers at once).
    tokio::time::sleep(Duration::from_millis(500 + 10 * calls as u64)).await;

    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        alice.send_request(&mut current, "BYE").await;
        let (inv, from) = alice
            .next_invite(Duration::from_secs(10))
            .await
            .expect("next caller rung");
        lat.push(t0.elapsed());
        current = alice.answer_invite(inv, from, 0).await.expect("answered");
    }
    alice.send_request(&mut current, "BYE").await;
    for w in waiting {
        w.abort();
    }
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    report(lat, calls);
}

fn report(mut lat: Vec<Duration>, calls: usize) {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = ms(percentile(&lat, 0.99));
    println!(
        "agent available → INVITE sent to them ({} rounds, {calls} callers waiting at the start)",
        lat.len()
    );
    println!(
        "  p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   max {:.3} ms",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        p99,
        ms(*lat.last().unwrap())
    );
    println!(
        "  target p99 ≤ {TARGET_P99_MS} ms: {}",
        if p99 <= TARGET_P99_MS {
            "MET"
        } else {
            "NOT MET"
        }
    );
}
