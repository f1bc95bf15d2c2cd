//! Helpers shared by the end-to-end test binaries: engines on loopback with a real
//! SQLite file, scripted phones.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use call_engine::config::{AgentSection, Config, MediaConfig, QueueSection, SipConfig};
use call_engine::Engine;
use call_engine_orchestrator::Strategy;
use call_engine_store::CdrQuery;
use call_engine_testkit::Phone;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

pub const DOMAIN: &str = "test.local";

/// Distinct RTP port ranges per engine (tests run in parallel).
pub fn rtp_range() -> std::ops::RangeInclusive<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    let start = 31000 + i * 400;
    start..=start + 399
}

pub fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "call-engine-e2e-{}-{}-{name}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("engine.db")
}

pub fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn config(
    db: &std::path::Path,
    strategy: Strategy,
    ring_timeout_secs: u32,
    agents: &[&str],
) -> Config {
    let mut c = Config::demo();
    c.sip = SipConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        domain: DOMAIN.into(),
        ..c.sip
    };
    c.media = MediaConfig {
        address: "127.0.0.1".parse().unwrap(),
        rtp_ports: rtp_range(),
    };
    c.store_url = format!("sqlite://{}", db.display());
    c.control_socket = Some(db.with_file_name("engine.sock"));
    let mut q = QueueSection::new("support", strategy);
    q.routing.ring_timeout_ms = u64::from(ring_timeout_secs) * 1000;
    c.queues = vec![q];
    c.agents = agents
        .iter()
        .map(|a| AgentSection::new(a, &format!("{a}-secret"), &["support"]))
        .collect();
    c
}

pub async fn agent(engine: &Engine, id: &str) -> Phone {
    let mut p = Phone::new(id, DOMAIN, engine.sip_udp().unwrap()).await;
    assert_eq!(
        p.register(&format!("{id}-secret"), 600).await,
        200,
        "{id} registers"
    );
    p
}

pub async fn customer(engine: &Engine, user: &str) -> Phone {
    let mut p = Phone::new(user, DOMAIN, engine.sip_udp().unwrap()).await;
    p.display = Some(format!("Caller {user}"));
    p
}

/// `cust` calls `queue` in the background: the dialog once answered (ACKed), or the
/// refusal's status.
pub fn call_in(
    mut cust: Phone,
    queue: &str,
) -> tokio::task::JoinHandle<(Phone, Result<call_engine_testkit::Dialog, u16>)> {
    let queue = queue.to_string();
    tokio::spawn(async move {
        let d = cust.call(&queue, 0).await;
        (cust, d)
    })
}

/// Asserts that `agent` gets no INVITE within 700 ms (`why` says why she should not).
pub async fn assert_not_rung(agent: &mut Phone, why: &str) {
    assert!(
        agent
            .next_invite(Duration::from_millis(700))
            .await
            .is_none(),
        "{why}: not rung"
    );
}

/// Waits until the store has `n` call records (the recorder writes asynchronously).
pub async fn wait_cdrs(engine: &Engine, n: u64) -> Vec<call_engine_store::Cdr> {
    for _ in 0..200 {
        if engine
            .store()
            .count_cdrs(&CdrQuery::default())
            .await
            .unwrap()
            >= n
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine
        .store()
        .list_cdrs(&CdrQuery::default())
        .await
        .unwrap()
}

/// Reference G.711 μ-law decoder (ITU-T G.711), independent of the engine's.
pub fn ulaw_to_linear(u: u8) -> i32 {
    let u = !u;
    let exp = i32::from((u >> 4) & 7);
    let mant = i32::from(u & 0x0f);
    let s = (((mant << 3) + 0x84) << exp) - 0x84;
    if u & 0x80 != 0 {
        -s
    } else {
        s
    }
}
