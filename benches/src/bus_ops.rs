//! Single-threaded publish + receive loop, for instruction counting
//! (`valgrind --tool=callgrind target/release/bus-ops ours|ours-batch|ours-lend|ours-pub-batch|ours-bcast|ours-bcast-lend|ours-plain4|ours-plain4-copy|crossbeam N`). Measures the
//! per-event instruction cost of the bus machinery without cross-core effects.
//!
//! To count only inside the bus calls (the clock calibration at start-up varies from run
//! to run), collect in them alone and divide by N:
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='bus_ops::publish'
//! target/release/bus-ops ours-lend 200000` for publishing, and
//! `--toggle-collect='*try_recv_with*'` for receiving (`BUS_OPS_BATCH` events per call).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use call_engine_bus as ce;

#[derive(Clone, Copy, Debug)]
struct P64 {
    seq: u64,
    _pad: [u64; 7],
}

impl ce::Message for P64 {
    fn priority(&self) -> ce::Priority {
        ce::Priority::Normal
    }
}

fn publish(tx: &ce::Publisher<P64>, i: u64) {
    tx.try_publish(
        ce::CorrelationId(i),
        None,
        P64 {
            seq: i,
            _pad: [0; 7],
        },
    )
    .unwrap();
}

#[inline(never)]
fn publish_batch(tx: &ce::Publisher<P64>, out: &mut std::collections::VecDeque<ce::Outgoing<P64>>) {
    let k = out.len();
    assert_eq!(tx.try_publish_batch(out).unwrap(), k);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let who = args.get(1).map(String::as_str).unwrap_or("ours");
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // Events per receive call (`BUS_OPS_BATCH`, default 64, at least 1): small batches show
    // the per-call cost a consumer pays when it keeps up with the publisher. Every call
    // takes the whole batch.
    let batch: u64 = std::env::var("BUS_OPS_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&b| b > 0)
        .unwrap_or(64);
    let max = batch as usize;
    let mut sum = 0u64;
    match who {
        "ours" | "ours-batch" | "ours-lend" => {
            let bus = ce::EventBus::<P64>::new(ce::EventBusConfig::default()).unwrap();
            let mut rx = bus.subscribe(ce::Filter::all());
            let tx = bus.publisher("ops");
            let mut buf = Vec::with_capacity(max);
            for i in 0..n {
                publish(&tx, i);
                if who == "ours" {
                    sum += rx.try_recv().unwrap().payload.seq;
                } else if i % batch == batch - 1 && who == "ours-lend" {
                    rx.try_recv_with(max, |e| sum += e.payload.seq).unwrap();
                } else if i % batch == batch - 1 {
                    rx.try_recv_batch(&mut buf, max).unwrap();
                    sum += buf.drain(..).map(|e| e.payload.seq).sum::<u64>();
                }
            }
        }
        "ours-pub-batch" => {
            // Published `batch` at a time with `try_publish_batch`, received lent in place.
            let bus = ce::EventBus::<P64>::new(ce::EventBusConfig::default()).unwrap();
            let mut rx = bus.subscribe(ce::Filter::all());
            let tx = bus.publisher("ops");
            let mut out = std::collections::VecDeque::with_capacity(max);
            let mut i = 0;
            while i < n {
                let k = batch.min(n - i);
                out.extend((i..i + k).map(|j| ce::Outgoing {
                    correlation: ce::CorrelationId(j),
                    causation: None,
                    payload: P64 {
                        seq: j,
                        _pad: [0; 7],
                    },
                }));
                publish_batch(&tx, &mut out);
                rx.try_recv_with(max, |e| sum += e.payload.seq).unwrap();
                i += k;
            }
        }
        "ours-bcast" | "ours-bcast-lend" => {
            // 1 -> 4 through one broadcast subscription, batch receive.
            let bus = ce::EventBus::<P64>::new(ce::EventBusConfig::default()).unwrap();
            let mut rxs = bus.subscribe_broadcast(ce::Filter::all(), 4);
            let tx = bus.publisher("ops");
            let mut buf = Vec::with_capacity(max);
            for i in 0..n {
                publish(&tx, i);
                if i % batch == batch - 1 {
                    for rx in rxs.iter_mut() {
                        if who == "ours-bcast-lend" {
                            rx.try_recv_with(max, |e| sum += e.payload.seq).unwrap();
                            continue;
                        }
                        rx.try_recv_batch(&mut buf, max).unwrap();
                        sum += buf.drain(..).map(|e| e.payload.seq).sum::<u64>();
                    }
                }
            }
        }
        "ours-plain4" | "ours-plain4-copy" => {
            // 1 -> 4 through four independent subscriptions (the fan-out publish path),
            // received lent in place; "-copy": `enable_zero_copy` off (a clone per receiver
            // instead of a pooled, shared envelope).
            let bus = ce::EventBus::<P64>::new(ce::EventBusConfig {
                enable_zero_copy: who == "ours-plain4",
                ..Default::default()
            })
            .unwrap();
            let mut rxs: Vec<_> = (0..4).map(|_| bus.subscribe(ce::Filter::all())).collect();
            let tx = bus.publisher("ops");
            for i in 0..n {
                publish(&tx, i);
                if i % batch == batch - 1 {
                    for rx in rxs.iter_mut() {
                        rx.try_recv_with(max, |e| sum += e.payload.seq).unwrap();
                    }
                }
            }
        }
        "crossbeam" => {
            let (tx, rx) = crossbeam_channel::bounded(4096);
            for i in 0..n {
                tx.send(P64 {
                    seq: i,
                    _pad: [0; 7],
                })
                .unwrap();
                sum += rx.try_recv().unwrap().seq;
            }
        }
        other => panic!("unknown {other}"),
    }
    println!("{sum}");
}
