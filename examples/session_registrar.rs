//! The session adapter as a registrar on loopback: one agent (`alice`, password
//! `secret`, domain `example.test`); every session event on the bus is printed until
//! Ctrl-C, or for N seconds when N is given.
//!
//! ```text
//! cargo run -p call-engine-examples --example session_registrar -- [SECONDS] [PORT]
//! ```
//!
//! Then point a softphone (or SIPp) at `127.0.0.1:PORT` (default 5070, UDP or TCP) with
//! user `alice`, password `secret`, domain `example.test`: its REGISTER is challenged
//! (401), then accepted, and a `Registered` event is printed. Calls to any user at that
//! address print `IncomingCall` (nobody answers them in this example).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::{EventBus, EventBusConfig, Filter};
use call_engine_events::{topics, EngineEvent, IdAllocator};
use call_engine_session::{SessionAdapter, SessionConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: Option<u64> = args.next().map(|s| s.parse()).transpose()?;
    let port: u16 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5070);

    let bus = EventBus::<EngineEvent>::new(EventBusConfig::default())?;
    let mut events = bus.subscribe(Filter::topic(topics::SESSION_EVENTS));

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = SessionConfig::new("example.test");
    config.udp = Some(addr);
    config.tcp = Some(addr);
    config.credentials.insert("alice".into(), "secret".into());
    let sip = SessionAdapter::start(config, bus.clone(), Arc::new(IdAllocator::new())).await?;
    println!(
        "registrar for example.test on udp {} and tcp {}; agent alice/secret",
        sip.udp_addr().unwrap(),
        sip.tcp_addr().unwrap()
    );
    match seconds {
        Some(s) => println!("printing session events for {s} s"),
        None => println!("printing session events until Ctrl-C"),
    }

    let deadline = seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, events.recv()).await.ok(),
                None => Some(events.recv().await),
            }
        };
        match next.await {
            Some(Ok(ev)) => println!(
                "[{}] correlation {} {}",
                ev.priority,
                ev.correlation,
                serde_json::to_string(&ev.payload)?
            ),
            Some(Err(e)) => println!("bus: {e}"),
            None => break,
        }
    }

    for (agent, contacts) in sip.bindings().all() {
        for b in contacts {
            println!(
                "{agent}: {} via {} from {}, {} s left",
                b.contact,
                b.transport,
                b.source,
                b.remaining().as_secs()
            );
        }
    }
    println!("{:?}", sip.stats());
    sip.shutdown().await;
    Ok(())
}
