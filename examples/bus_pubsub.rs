//! call-engine-bus on its own: priority lanes, shards, filters, overflow reporting,
//! metrics and history, and a broadcast subscription, with a payload type of your own.
//!
//! `cargo run -p call-engine-examples --example bus_pubsub`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::*;

#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Hangup(u32),
    Progress(u32),
    Jitter(f32),
}

impl Message for Ev {
    fn priority(&self) -> Priority {
        match self {
            Ev::Hangup(_) => Priority::Critical,
            Ev::Progress(_) => Priority::Normal,
            Ev::Jitter(_) => Priority::Low,
        }
    }
    fn topic(&self) -> Topic {
        match self {
            Ev::Jitter(_) => Topic::new(1),
            _ => Topic::new(0),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = EventBus::<Ev>::new(EventBusConfig {
        broadcast_capacity: 8,
        history_capacity: 64,
        ..Default::default()
    })?;
    let mut everything = bus.subscribe(Filter::all());
    let mut control_only = bus.subscribe(Filter::all().min_priority(Priority::Normal));
    let tx = bus.publisher("example");
    let call = CorrelationId(7);

    // 20 telemetry events overflow the Low lane (capacity 8): the oldest are shed.
    for i in 0..20 {
        tx.publish(call, None, Ev::Jitter(i as f32)).await?;
    }
    let progress = tx.publish(call, None, Ev::Progress(1)).await?;
    tx.publish(call, Some(progress), Ev::Hangup(16)).await?;

    println!("subscriber with Filter::all():");
    loop {
        match everything.try_recv() {
            Ok(e) => println!(
                "  {:>8} {} corr={} caused_by={:?} {:?}",
                e.priority.to_string(),
                e.id,
                e.correlation,
                e.causation,
                e.payload
            ),
            Err(TryRecvError::Lagged(n)) => {
                println!("  (missed {n} shed telemetry events: reported, not silent)")
            }
            Err(_) => break,
        }
    }
    println!("subscriber with min_priority(Normal): never woken for telemetry:");
    while let Ok(e) = control_only.try_recv() {
        println!("  {:>8} {:?}", e.priority.to_string(), e.payload);
    }

    let m = bus.metrics();
    let low = m.lane_total(Priority::Low);
    println!(
        "metrics: Low published={} delivered={} shed={}; p50 latency {} ns",
        low.published, low.delivered, low.shed, m.latency.p50_ns
    );
    println!(
        "history of {call}: {} envelopes",
        bus.history_of(call).len()
    );

    // A broadcast subscription: three consumers of one stream (say a logger, statistics
    // and an API client) share one queue; each event is written once, each gets a copy.
    let mut consumers = bus.subscribe_broadcast(Filter::topic(Topic::new(0)), 3);
    let next_call = CorrelationId(8);
    tx.publish(next_call, None, Ev::Progress(2)).await?;
    tx.publish(next_call, None, Ev::Hangup(16)).await?;
    drop(consumers.pop()); // one leaves; the others go on
    for (i, rx) in consumers.iter_mut().enumerate() {
        let mut got = Vec::new();
        if i == 0 {
            while let Ok(e) = rx.try_recv() {
                got.push(e.payload.clone());
            }
        } else {
            // Lent in place: nothing is copied out of the shared queue.
            let _ = rx.try_recv_with(64, |e| got.push(e.payload.clone()));
        }
        println!("broadcast receiver {i}: {got:?}");
    }
    Ok(())
}
