//! The whole engine (`call-engine`) embedded in a program, driven by scripted SIP phones
//! (`call-engine-testkit`), all on loopback:
//!
//! 1. The engine starts on the demo configuration, moved to ephemeral ports and a
//!    temporary SQLite file.
//! 2. Agent `alice` registers (digest authentication) and is rung when a customer calls
//!    the `support` queue; she answers.
//! 3. Audio flows both ways through the engine's RTP relay.
//! 4. The customer hangs up: the engine sends alice a BYE and writes the call record,
//!    which is read back from the store.
//!
//! ```text
//! cargo run -p call-engine-examples --example engine_embedded
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine::config::{Config, MediaConfig, SipConfig};
use call_engine::Engine;
use call_engine_store::CdrQuery;
use call_engine_testkit::Phone;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A fresh temporary directory, removed when dropped (however `main` returns).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "call-engine-example-{}-{nanos}",
            std::process::id()
        ));
        // Never a leftover store: its old call records would be read back below.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = TempDir::new()?;
    let mut config = Config::demo();
    config.sip = SipConfig {
        udp: Some("127.0.0.1:0".parse()?),
        tcp: Some("127.0.0.1:0".parse()?),
        domain: "example.test".into(),
        ..config.sip
    };
    config.media = MediaConfig {
        address: "127.0.0.1".parse()?,
        rtp_ports: 41000..=41099,
    };
    config.store_url = format!("sqlite://{}", dir.0.join("engine.db").display());
    config.control_socket = None;
    let engine = Engine::start(config).await?;
    let sip = engine.sip_udp().ok_or("no UDP listener")?;
    println!("engine up: SIP on udp {sip}, store in {}", dir.0.display());

    // The agent registers with the demo password.
    let mut alice = Phone::new("alice", "example.test", sip).await;
    let status = alice.register("alice-secret", 600).await;
    println!("alice REGISTER -> {status}");
    if status != 200 {
        return Err(format!("alice could not register: {status}").into());
    }

    // A customer calls the queue; the engine answers at once (music on hold) and rings
    // alice, who answers.
    let mut customer = Phone::new("5551234", "example.test", sip).await;
    let calling = tokio::spawn(async move {
        let dialog = customer.call("support", 0).await;
        (customer, dialog)
    });
    let alice_leg = alice.answer(0, WAIT).await.ok_or("alice was not rung")?;
    println!(
        "alice rung by {}",
        alice_leg.message.header("from").unwrap_or("?")
    );
    let (mut customer, dialog) = calling.await?;
    let mut customer_leg = dialog.map_err(|code| format!("the call got {code}"))?;

    // Audio both ways through the engine.
    let to_engine_from_customer = customer_leg.remote_media.ok_or("no SDP to the customer")?;
    let to_engine_from_alice = alice_leg.remote_media.ok_or("no SDP to alice")?;
    alice.drain_rtp().await;
    let (_, at_alice) = tokio::join!(
        customer.send_rtp(to_engine_from_customer.addr, 0, 50, |_| 0x55),
        alice.recv_rtp(Duration::from_millis(1500))
    );
    customer.drain_rtp().await;
    let (_, at_customer) = tokio::join!(
        alice.send_rtp(to_engine_from_alice.addr, 0, 50, |_| 0x66),
        customer.recv_rtp(Duration::from_millis(1500))
    );
    println!(
        "RTP: {} of 50 customer packets reached alice, {} of 50 of hers reached the customer",
        at_alice.len(),
        at_customer.len()
    );

    // The customer hangs up; the engine propagates the BYE to alice.
    let status = customer.bye(&mut customer_leg).await;
    let bye = alice
        .expect_request(&alice_leg.call_id, "BYE", WAIT)
        .await
        .is_some();
    println!("customer BYE -> {status}; alice got the engine's BYE: {bye}");

    // The call record (written asynchronously by the recorder).
    let mut cdrs = Vec::new();
    for _ in 0..100 {
        cdrs = engine.store().list_cdrs(&CdrQuery::default()).await?;
        if !cdrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cdr = cdrs.first().ok_or("no call record")?;
    println!(
        "call record: caller {}, queue {:?}, agent {:?}, {:?}, hung up by {:?}, waited {:.2} s, talked {:.2} s",
        cdr.caller_user,
        cdr.queue.as_ref().map(|q| q.as_str()),
        cdr.agent.as_ref().map(|a| a.as_str()),
        cdr.disposition,
        cdr.hung_up_by,
        cdr.wait_secs,
        cdr.talk_secs
    );
    let as_expected = cdrs.len() == 1
        && cdr.agent.as_ref().map(|a| a.as_str()) == Some("alice")
        && cdr.disposition == call_engine_events::Disposition::Answered
        && cdr.hung_up_by == call_engine_events::Side::Customer;
    engine.shutdown().await;
    if at_alice.is_empty() || at_customer.is_empty() || !bye || !as_expected {
        return Err("the call did not go through as expected".into());
    }
    Ok(())
}
