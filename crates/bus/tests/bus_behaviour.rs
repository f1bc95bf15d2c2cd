//! Behavioural integration tests of `call-engine-bus`: envelopes, priority lanes and the
//! starvation guard, shards and per-call order, overflow policies, filters, batches,
//! every configuration field, the dispatcher, close, independence of buses and replay.
//!
//! No test depends on wall-clock speed for pass/fail: timeouts are only safety nets so
//! that a bug fails instead of hanging (the one "not woken" check is explained inline).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Safety net only: a bug should fail a test, not hang it.
const SAFETY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
struct Ev {
    prio: Priority,
    topic: u8,
    seq: u64,
}

impl Message for Ev {
    fn priority(&self) -> Priority {
        self.prio
    }

    fn topic(&self) -> Topic {
        Topic::new(self.topic)
    }
}

fn ev(prio: Priority, seq: u64) -> Ev {
    Ev {
        prio,
        topic: 0,
        seq,
    }
}

fn cfg() -> EventBusConfig {
    EventBusConfig::default()
}

fn new_bus(config: EventBusConfig) -> EventBus<Ev> {
    EventBus::new(config).expect("valid config")
}

/// A bus of one shard whose queues hold `capacity` events per lane, without history.
fn one_shard_bus(capacity: usize) -> EventBus<Ev> {
    new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: capacity,
        history_capacity: 0,
        ..cfg()
    })
}

/// A bus of one shard with lanes of `capacity` and the given starvation limit, one
/// receiver of everything, and a publisher.
fn guarded_bus(capacity: usize, limit: u32) -> (EventBus<Ev>, Receiver<Ev>, Publisher<Ev>) {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: capacity,
        starvation_limit: limit,
        ..cfg()
    });
    let rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    (bus, rx, tx)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Receives everything queued now: (events, sum of reported misses).
fn drain(rx: &mut Receiver<Ev>) -> (Vec<Event<Ev>>, u64) {
    let mut out = Vec::new();
    let mut missed = 0;
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Lagged(n)) => missed += n,
            Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return (out, missed),
        }
    }
}

fn seqs(events: &[Event<Ev>]) -> Vec<u64> {
    events.iter().map(|e| e.payload.seq).collect()
}

/// One correlation id per shard (index = shard).
fn correlation_per_shard(bus: &EventBus<Ev>) -> Vec<CorrelationId> {
    let n = bus.config().shard_count;
    let mut found: Vec<Option<CorrelationId>> = vec![None; n];
    let mut c = 0u64;
    while found.iter().any(Option::is_none) {
        let s = bus.shard_of(CorrelationId(c));
        if found[s].is_none() {
            found[s] = Some(CorrelationId(c));
        }
        c += 1;
        assert!(c < 1_000_000, "shard_of never reaches some shard");
    }
    found.into_iter().map(Option::unwrap).collect()
}

fn assert_pending_recv(r: Result<Event<Ev>, TryRecvError>) {
    assert!(
        matches!(r, Err(TryRecvError::Empty)),
        "expected Empty, got {r:?}"
    );
}

// =======================================================================================
// 1. Envelope
// =======================================================================================

#[test]
fn envelope_carries_unique_ids_metadata_and_monotonic_timestamps() {
    let bus = new_bus(EventBusConfig {
        broadcast_capacity: 8192,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let caller = bus.publisher("caller");
    let media = bus.publisher("media");
    assert_eq!(caller.source(), "caller");

    const N: u64 = 4000;
    // seq -> (id, correlation, causation, source, priority)
    let mut sent = HashMap::new();
    let mut ids = HashSet::new();
    let mut prev: Option<EventId> = None;
    for seq in 0..N {
        let prio = Priority::ALL[(seq % 4) as usize];
        let corr = CorrelationId(seq % 7);
        let causation = if seq % 2 == 1 { prev } else { None };
        let (tx, source) = if seq % 3 == 0 {
            (&media, "media")
        } else {
            (&caller, "caller")
        };
        let id = tx.try_publish(corr, causation, ev(prio, seq)).unwrap();
        assert!(ids.insert(id), "duplicate event id {id}");
        sent.insert(seq, (id, corr, causation, source, prio));
        prev = Some(id);
    }
    let after = bus.now();

    let (events, missed) = drain(&mut rx);
    assert_eq!(missed, 0);
    assert_eq!(events.len() as u64, N);
    let mut ts_by_seq = vec![Timestamp(0); N as usize];
    for e in &events {
        let (id, corr, causation, source, prio) = sent[&e.payload.seq];
        assert_eq!(e.id, id);
        assert_eq!(e.correlation, corr);
        assert_eq!(e.causation, causation);
        assert_eq!(e.source, source);
        assert_eq!(e.priority, prio);
        assert_eq!(e.priority, e.payload.priority());
        ts_by_seq[e.payload.seq as usize] = e.timestamp;
    }
    for w in ts_by_seq.windows(2) {
        assert!(w[0] <= w[1], "timestamps went backwards: {w:?}");
    }
    assert!(after >= ts_by_seq[N as usize - 1]);
    assert!(bus.now() >= after);
}

// =======================================================================================
// 2. Priority lanes
// =======================================================================================

#[test]
fn critical_overtakes_100k_queued_low_events_single_shard() {
    let bus = one_shard_bus(131_072);
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..100_000 {
        tx.try_publish(CorrelationId(seq % 100), None, ev(Priority::Low, seq))
            .unwrap();
    }
    let crit = tx
        .try_publish(CorrelationId(3), None, ev(Priority::Critical, 100_000))
        .unwrap();
    assert_eq!(bus.metrics().lane_total(Priority::Low).shed, 0);

    let first = rx.try_recv().unwrap();
    assert_eq!(
        first.id, crit,
        "no pops happened yet: the Critical must be first"
    );
    assert_eq!(first.priority, Priority::Critical);
    // then the Low lane, FIFO
    assert_eq!(rx.try_recv().unwrap().payload, ev(Priority::Low, 0));
    assert_eq!(rx.try_recv().unwrap().payload, ev(Priority::Low, 1));
}

#[test]
fn critical_overtakes_100k_queued_low_events_across_shards() {
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        broadcast_capacity: 131_072,
        history_capacity: 0,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..100_000 {
        tx.try_publish(CorrelationId(seq % 1000), None, ev(Priority::Low, seq))
            .unwrap();
    }
    // Nothing shed: every Low event is still queued behind which the Criticals go.
    assert_eq!(bus.metrics().lane_total(Priority::Low).shed, 0);
    assert_eq!(bus.metrics().lane_total(Priority::Low).depth, 100_000);
    let mut crit_ids = HashSet::new();
    for (i, c) in correlation_per_shard(&bus).into_iter().enumerate() {
        crit_ids.insert(
            tx.try_publish(c, None, ev(Priority::Critical, 200_000 + i as u64))
                .unwrap(),
        );
    }
    for _ in 0..4 {
        let e = rx.try_recv().unwrap();
        assert_eq!(e.priority, Priority::Critical);
        assert!(crit_ids.remove(&e.id));
    }
    assert_eq!(rx.try_recv().unwrap().priority, Priority::Low);
}

#[test]
fn critical_is_next_even_after_idle_polling() {
    // The starvation guard counts consecutive *deliveries*; polls of an empty receiver
    // are not deliveries and must not make a Critical wait behind a Low event.
    for idle_polls in 0..20 {
        let bus = new_bus(EventBusConfig {
            shard_count: 1,
            starvation_limit: 8,
            ..cfg()
        });
        let mut rx = bus.subscribe(Filter::all());
        let tx = bus.publisher("t");
        for _ in 0..idle_polls {
            assert_pending_recv(rx.try_recv());
        }
        for seq in 0..100 {
            tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
                .unwrap();
        }
        let crit = tx
            .try_publish(CorrelationId(1), None, ev(Priority::Critical, 100))
            .unwrap();
        assert_eq!(
            rx.try_recv().unwrap().id,
            crit,
            "after {idle_polls} empty polls the Critical was not delivered next"
        );
    }
}

/// A streak of Low deliveries starves nothing: a Critical published after it is next,
/// however many Low events the receiver has just taken (below, at and beyond the
/// starvation limit), one at a time or in batches.
#[test]
fn critical_is_next_after_a_run_of_low_deliveries() {
    for lend in [false, true] {
        for taken in [1, 7, 8, 9, 16, 64, 100] {
            let (_bus, mut rx, tx) = guarded_bus(1024, 8);
            for seq in 0..1000 {
                tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
                    .unwrap();
            }
            let mut next = 0;
            if lend {
                let info = rx
                    .try_recv_with(taken, |e| {
                        assert_eq!(e.payload.seq, next);
                        next += 1;
                    })
                    .unwrap();
                assert_eq!(info.received, taken);
            } else {
                for _ in 0..taken {
                    assert_eq!(rx.try_recv().unwrap().payload.seq, next);
                    next += 1;
                }
            }
            let crit = tx
                .try_publish(CorrelationId(1), None, ev(Priority::Critical, 0))
                .unwrap();
            let first = if lend {
                let mut first = None;
                rx.try_recv_with(1, |e| first = Some(e.id)).unwrap();
                first
            } else {
                Some(rx.try_recv().unwrap().id)
            };
            assert_eq!(
                first,
                Some(crit),
                "lend {lend}: after {taken} Low deliveries the Critical was not next"
            );
        }
    }
}

/// The guard still serves a waiting lower lane when the streak came from above it, also
/// with a Critical waiting: after 8 Normal deliveries with Low waiting, one Low goes
/// first, then the Critical.
#[test]
fn the_guard_serves_a_lane_below_the_streak_only() {
    let (_bus, mut rx, tx) = guarded_bus(64, 8);
    for seq in 0..20 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
            .unwrap();
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    for seq in 0..8 {
        let e = rx.try_recv().unwrap();
        assert_eq!((e.priority, e.payload.seq), (Priority::Normal, seq));
    }
    tx.try_publish(CorrelationId(1), None, ev(Priority::Critical, 0))
        .unwrap();
    let order: Vec<_> = (0..3).map(|_| rx.try_recv().unwrap().priority).collect();
    assert_eq!(
        order,
        [Priority::Low, Priority::Critical, Priority::Normal],
        "the starved Low lane first, then strict order"
    );
}

// =======================================================================================
// 3. Starvation guard and FIFO without priority
// =======================================================================================

/// Receives `n` events from a receiver with 1000 High and 1000 Low queued; returns the
/// number of Low events among them (checking each lane stays FIFO).
fn low_share(limit: u32, n: usize) -> usize {
    let (_bus, mut rx, tx) = guarded_bus(2048, limit);
    for seq in 0..1000 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::High, seq))
            .unwrap();
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    let mut next = [0u64; 4];
    let mut low = 0;
    for _ in 0..n {
        let e = rx.try_recv().unwrap();
        assert_eq!(e.payload.seq, next[e.priority.index()], "lane not FIFO");
        next[e.priority.index()] += 1;
        if e.priority == Priority::Low {
            low += 1;
        }
    }
    low
}

#[test]
fn starvation_guard_serves_low_lane_about_once_per_limit_plus_one() {
    let low = low_share(8, 90);
    assert!(
        low >= 10,
        "only {low} Low events among 90 with starvation_limit 8"
    );
    assert!(low <= 11, "guard too generous: {low} Low of 90");
}

#[test]
fn starvation_guard_share_follows_the_limit() {
    let l8 = low_share(8, 90);
    let l2 = low_share(2, 90);
    assert!(l2 >= 30, "starvation_limit 2 gave {l2} Low of 90");
    assert!(l2 > l8, "limit 2 gave {l2}, limit 8 gave {l8}");
}

#[test]
fn starvation_guard_rotates_over_lower_lanes() {
    let (_bus, mut rx, tx) = guarded_bus(1024, 4);
    for seq in 0..500 {
        for p in [Priority::Critical, Priority::Normal, Priority::Low] {
            tx.try_publish(CorrelationId(1), None, ev(p, seq)).unwrap();
        }
    }
    let mut counts = [0usize; 4];
    for _ in 0..100 {
        counts[rx.try_recv().unwrap().priority.index()] += 1;
    }
    assert!(counts[Priority::Normal.index()] > 0, "{counts:?}");
    assert!(counts[Priority::Low.index()] > 0, "{counts:?}");
    assert!(counts[Priority::Critical.index()] >= 75, "{counts:?}");
}

#[test]
fn strict_priority_order_when_nothing_lower_is_waiting() {
    let (_bus, mut rx, tx) = guarded_bus(1024, 8);
    // A single lane: pure FIFO, the guard changes nothing.
    for seq in 0..500 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::High, seq))
            .unwrap();
    }
    let (events, _) = drain(&mut rx);
    assert_eq!(seqs(&events), (0..500).collect::<Vec<_>>());

    // Below the limit, everything Critical comes before anything High.
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        starvation_limit: 64,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..30 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::High, seq))
            .unwrap();
        tx.try_publish(CorrelationId(1), None, ev(Priority::Critical, seq))
            .unwrap();
    }
    let (events, _) = drain(&mut rx);
    let prios: Vec<_> = events.iter().map(|e| e.priority).collect();
    let mut expected = vec![Priority::Critical; 30];
    expected.extend(vec![Priority::High; 30]);
    assert_eq!(prios, expected);
}

#[test]
fn without_priority_delivery_is_fifo_across_priorities() {
    let bus = new_bus(EventBusConfig {
        enable_priority: false,
        shard_count: 1,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    let order = [
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
        Priority::High,
        Priority::Low,
        Priority::Critical,
    ];
    for (i, p) in order.iter().enumerate() {
        tx.try_publish(CorrelationId(1), None, ev(*p, i as u64))
            .unwrap();
    }
    let (events, _) = drain(&mut rx);
    assert_eq!(
        events.iter().map(|e| e.priority).collect::<Vec<_>>(),
        order.to_vec()
    );
    assert_eq!(seqs(&events), (0..order.len() as u64).collect::<Vec<_>>());
}

// =======================================================================================
// 4. Shards and per-call order
// =======================================================================================

#[test]
fn per_correlation_order_holds_with_concurrent_publishers() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 200;
    const PER_CALL: u64 = 50;
    let bus = new_bus(EventBusConfig {
        shard_count: 8,
        broadcast_capacity: 128,
        history_capacity: 0,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let publishers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = bus.publisher("p");
            std::thread::spawn(move || {
                rt().block_on(async {
                    for seq in 0..PER_CALL {
                        for k in 0..CALLS {
                            let c = CorrelationId(t * 10_000 + k);
                            tx.publish(c, None, ev(Priority::Normal, seq))
                                .await
                                .unwrap();
                        }
                    }
                })
            })
        })
        .collect();

    receive_in_call_order(&mut rx, publishers, THREADS * CALLS, PER_CALL);
}

/// Receives `calls × per_call` events as they come, each call's (correlation's) `seq`
/// counting up from 0: in order, none lost, none twice; then joins the publishers and
/// checks that nothing else arrives.
fn receive_in_call_order(
    rx: &mut Receiver<Ev>,
    publishers: Vec<std::thread::JoinHandle<()>>,
    calls: u64,
    per_call: u64,
) {
    let mut next: HashMap<CorrelationId, u64> = HashMap::new();
    rt().block_on(async {
        for _ in 0..calls * per_call {
            let e = tokio::time::timeout(SAFETY, rx.recv())
                .await
                .expect("receiver stalled")
                .expect("recv");
            let want = next.entry(e.correlation).or_insert(0);
            assert_eq!(e.payload.seq, *want, "out of order for {}", e.correlation);
            *want += 1;
        }
    });
    for p in publishers {
        p.join().unwrap();
    }
    assert_eq!(next.len() as u64, calls);
    assert!(next.values().all(|n| *n == per_call));
    assert_pending_recv(rx.try_recv());
}

/// Batch publishers (runs of events claimed together) racing single publishers on small
/// lanes, the receiver asleep between events: nothing lost, nothing twice, each call's
/// events in order.
#[test]
fn batch_and_single_publishers_keep_each_calls_order() {
    const CALLS: u64 = 40;
    const PER_CALL: u64 = 250;
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        broadcast_capacity: 32,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let publishers: Vec<_> = (0..3u64)
        .map(|t| {
            let tx = bus.publisher("p");
            std::thread::spawn(move || {
                rt().block_on(async {
                    for seq in 0..PER_CALL {
                        // Thread 0 publishes one by one; the others in batches of every
                        // call's next event (a run per receiver queue).
                        let calls = (0..CALLS).map(|k| CorrelationId(t * 1_000 + k));
                        if t == 0 {
                            for c in calls {
                                tx.publish(c, None, ev(Priority::Normal, seq))
                                    .await
                                    .unwrap();
                            }
                        } else {
                            let batch = calls.map(|c| Outgoing {
                                correlation: c,
                                causation: None,
                                payload: ev(Priority::Normal, seq),
                            });
                            assert_eq!(tx.publish_batch(batch).await, Ok(CALLS as usize));
                        }
                    }
                })
            })
        })
        .collect();
    receive_in_call_order(&mut rx, publishers, 3 * CALLS, PER_CALL);
    assert_eq!(bus.metrics().total().depth, 0);
}

/// Several publishers, two subscribers with tiny Block lanes, one of them slow: a publish
/// that finds the slow one full takes back its claim on the fast one (or, when another
/// publisher claimed after it, leaves a tombstone the fast receiver skips). Nothing is lost
/// or duplicated, order per call holds for both, and the sleeping receivers are always
/// woken (a tombstone nobody skips would hold a slot forever and stall the publishers).
#[test]
fn failed_fan_out_publishes_leave_nothing_behind() {
    const THREADS: u64 = 3;
    const PER_THREAD: u64 = 3_000;
    let bus = new_bus(EventBusConfig {
        shard_count: 2,
        broadcast_capacity: 4,
        history_capacity: 0,
        ..cfg()
    });
    let receivers = [bus.subscribe(Filter::all()), bus.subscribe(Filter::all())];
    let publishers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = bus.publisher("p");
            std::thread::spawn(move || {
                rt().block_on(async {
                    for seq in 0..PER_THREAD {
                        let c = CorrelationId(t);
                        // Alternate the waiting path and the try path (Full, retried).
                        if seq % 2 == 0 {
                            tx.publish(c, None, ev(Priority::High, seq)).await.unwrap();
                        } else {
                            let mut e = ev(Priority::High, seq);
                            loop {
                                match tx.try_publish(c, None, e) {
                                    Ok(_) => break,
                                    Err(PublishError::Full(back)) => {
                                        e = back;
                                        tokio::task::yield_now().await;
                                    }
                                    Err(err) => panic!("{err}"),
                                }
                            }
                        }
                    }
                })
            })
        })
        .collect();
    let consumers: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, mut rx)| {
            std::thread::spawn(move || {
                rt().block_on(async {
                    let mut next = [0u64; THREADS as usize];
                    for n in 0..THREADS * PER_THREAD {
                        let e = tokio::time::timeout(SAFETY, rx.recv())
                            .await
                            .expect("receiver stalled")
                            .expect("recv");
                        let t = e.correlation.0 as usize;
                        assert_eq!(e.payload.seq, next[t], "order of call {t}");
                        next[t] += 1;
                        if i == 1 && n % 64 == 0 {
                            // The slow one.
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                    assert_pending_recv(rx.try_recv());
                    next
                })
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for c in consumers {
        assert_eq!(c.join().unwrap(), [PER_THREAD; THREADS as usize]);
    }
    let m = bus.metrics();
    let lanes = m.shards.iter().map(|s| s.lanes[Priority::High.index()]);
    let (published, delivered, depth) = lanes.fold((0, 0, 0), |a, l| {
        (a.0 + l.published, a.1 + l.delivered, a.2 + l.depth)
    });
    assert_eq!(published, THREADS * PER_THREAD);
    assert_eq!(delivered, 2 * THREADS * PER_THREAD);
    assert_eq!(depth, 0);
}

/// A publish that claims room in one subscriber and then finds another full gives the
/// room back; a publisher waiting for exactly that room must be woken (nothing else
/// would wake it here: the receiver has nothing to take and never frees anything).
#[test]
fn room_given_back_by_a_failed_publish_wakes_waiting_publishers() {
    let bus = one_shard_bus(1);
    let both = TopicSet::of(&[Topic::new(0), Topic::new(1)]);
    let mut s1 = bus.subscribe(Filter::topics(both));
    let _s2_full = bus.subscribe(Filter::topic(Topic::new(0)));
    let blocker = bus.publisher("blocker");
    let on = |topic, seq| Ev {
        prio: Priority::High,
        topic,
        seq,
    };
    // S2 is full: every topic-0 publish claims S1, finds S2 full and gives S1 back.
    blocker
        .try_publish(CorrelationId(1), None, on(0, 0))
        .unwrap();
    assert_eq!(s1.try_recv().unwrap().payload.seq, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert!(matches!(
                    blocker.try_publish(CorrelationId(1), None, on(0, 1)),
                    Err(PublishError::Full(_))
                ));
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The churn is running before the waiter starts.
    while attempts.load(Ordering::Relaxed) < 1_000 {
        std::thread::yield_now();
    }
    let tx = bus.publisher("waiter");
    rt().block_on(async {
        for seq in 0..2_000 {
            tokio::time::timeout(SAFETY, tx.publish(CorrelationId(1), None, on(1, seq)))
                .await
                .expect("publisher never woken")
                .unwrap();
            let e = s1.try_recv().unwrap();
            assert_eq!((e.payload.topic, e.payload.seq), (1, seq));
        }
    });
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
}

/// Closing the bus while a publisher is busy: every publish that returned `Ok` is
/// received before the receiver sees `Closed` (a publish that claimed before the close
/// and commits after it is still delivered). With one subscription, and with two (a
/// fan-out: every acknowledged publish reaches both).
#[test]
fn every_acknowledged_publish_is_received_across_close() {
    // High: a Block lane (claims). Low: a Shed lane (may shed, and says so). Published one
    // by one, or in batches (runs of claims, some taken back at the close).
    let rounds = (0..40u64).flat_map(|r| {
        [Priority::High, Priority::Low]
            .into_iter()
            .flat_map(move |p| {
                [(false, 1), (true, 1), (false, 2), (true, 2)]
                    .map(|(batched, subscriptions)| (r, p, batched, subscriptions))
            })
    });
    for (round, prio, batched, subscriptions) in rounds {
        let bus = new_bus(EventBusConfig {
            shard_count: 2,
            broadcast_capacity: 64,
            history_capacity: 0,
            ..cfg()
        });
        let rxs: Vec<Receiver<Ev>> = (0..subscriptions)
            .map(|_| bus.subscribe(Filter::all()))
            .collect();
        let tx = bus.publisher("p");
        let publisher = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut seq = 0;
            loop {
                // Whether the publish was refused because the bus is closed (rather than
                // full); `Ok` if it went through.
                let refused: Result<(), bool> = if batched {
                    let size = 10 + seq % 51;
                    let mut batch: VecDeque<Outgoing<Ev>> = (seq..seq + size)
                        .map(|s| Outgoing {
                            correlation: CorrelationId(s % 7),
                            causation: None,
                            payload: ev(prio, s),
                        })
                        .collect();
                    let r = tx.try_publish_batch(&mut batch);
                    // Published: the front of the batch (the rest is tried again).
                    let published = size - batch.len() as u64;
                    acked.extend(seq..seq + published);
                    seq += published;
                    r.map(drop)
                        .map_err(|e| matches!(e, PublishError::Closed(())))
                } else {
                    match tx.try_publish(CorrelationId(seq % 7), None, ev(prio, seq)) {
                        Ok(_) => {
                            acked.push(seq);
                            seq += 1;
                            Ok(())
                        }
                        Err(e) => Err(matches!(e, PublishError::Closed(_))),
                    }
                };
                match refused {
                    Ok(()) => {}
                    Err(false) => std::thread::yield_now(),
                    Err(true) => break,
                }
            }
            acked
        });
        let closer = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(200 + 50 * round));
                bus.close();
            })
        };
        // Each receiver on its own thread, to its end.
        let receiving: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                std::thread::spawn(move || {
                    let (mut got, mut missed) = (Vec::new(), 0);
                    rt().block_on(async {
                        loop {
                            match tokio::time::timeout(SAFETY, rx.recv())
                                .await
                                .expect("stalled")
                            {
                                Ok(e) => got.push(e.payload.seq),
                                Err(RecvError::Closed) => break,
                                Err(RecvError::Lagged(n)) => missed += n,
                            }
                        }
                    });
                    (got, missed)
                })
            })
            .collect();
        let received: Vec<(Vec<u64>, u64)> =
            receiving.into_iter().map(|r| r.join().unwrap()).collect();
        closer.join().unwrap();
        let acked = publisher.join().unwrap();
        for (i, (mut got, missed)) in received.into_iter().enumerate() {
            got.sort_unstable();
            let missing: Vec<_> = acked
                .iter()
                .filter(|a| got.binary_search(a).is_err())
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|g| acked.binary_search(g).is_err())
                .collect();
            // Shed events (Low only) are reported: received + missed = acknowledged.
            assert!(
                missing.len() as u64 == missed && extra.is_empty(),
                "round {round} {prio} batched {batched}, receiver {i} of {subscriptions}: {} \
                 acked, {} received, {missed} reported missed; missing {missing:?}, extra \
                 {extra:?}",
                acked.len(),
                got.len()
            );
        }
    }
}

/// A broadcast subscription: every receiver gets every event, in order, by priority; the
/// metrics count each receiver's deliveries.
#[test]
fn broadcast_receivers_each_get_every_event() {
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        history_capacity: 0,
        ..cfg()
    });
    let mut rxs = bus.subscribe_broadcast(Filter::all(), 3);
    assert_eq!(rxs.len(), 3);
    let tx = bus.publisher("p");
    for seq in 0..100 {
        tx.try_publish(CorrelationId(seq % 5), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    tx.try_publish(CorrelationId(1), None, ev(Priority::Critical, 100))
        .unwrap();
    for rx in rxs.iter_mut() {
        let (events, missed) = drain(rx);
        assert_eq!(missed, 0);
        assert_eq!(events[0].payload.seq, 100, "Critical first");
        let normal: Vec<u64> = events[1..].iter().map(|e| e.payload.seq).collect();
        assert_eq!(normal, (0..100).collect::<Vec<_>>());
        assert!(events.iter().all(|e| !e.is_shared()), "each its own copy");
    }
    let t = bus.metrics().total();
    assert_eq!((t.published, t.delivered, t.depth), (101, 303, 0));
}

/// The slowest broadcast receiver holds the never-dropped lanes back (the publisher gets
/// `Full`); a receiver that is dropped no longer does; the others go on; the metrics never
/// go backwards; the subscription ends with its last receiver.
#[test]
fn broadcast_slowest_backpressures_and_a_dropped_receiver_leaves() {
    let bus = one_shard_bus(4);
    let mut rxs = bus.subscribe_broadcast(Filter::all(), 3);
    let tx = bus.publisher("p");
    let c = CorrelationId(1);
    for seq in 0..4 {
        tx.try_publish(c, None, ev(Priority::High, seq)).unwrap();
    }
    // Receivers 0 and 1 keep up; receiver 2 reads nothing.
    for rx in rxs[..2].iter_mut() {
        assert_eq!(seqs(&drain(rx).0), vec![0, 1, 2, 3]);
    }
    assert!(matches!(
        tx.try_publish(c, None, ev(Priority::High, 4)),
        Err(PublishError::Full(_))
    ));
    let delivered_before = bus.metrics().total().delivered;
    assert_eq!(delivered_before, 8);
    drop(rxs.pop());
    assert_eq!(bus.metrics().subscriptions, 1, "the others go on");
    for seq in 4..8 {
        tx.try_publish(c, None, ev(Priority::High, seq)).unwrap();
    }
    for rx in rxs.iter_mut() {
        assert_eq!(seqs(&drain(rx).0), vec![4, 5, 6, 7]);
    }
    let t = bus.metrics().total();
    assert_eq!((t.delivered, t.depth), (16, 0));
    drop(rxs);
    let t = bus.metrics();
    assert_eq!(t.subscriptions, 0, "ended with its last receiver");
    assert_eq!(t.total().delivered, 16, "metrics never go backwards");
}

/// Shed lanes are per broadcast receiver: each is told exactly what it missed.
#[test]
fn broadcast_shed_lanes_report_each_receivers_own_loss() {
    let bus = one_shard_bus(8);
    let mut rxs = bus.subscribe_broadcast(Filter::all(), 2);
    let tx = bus.publisher("p");
    let c = CorrelationId(1);
    for seq in 0..8 {
        tx.try_publish(c, None, ev(Priority::Low, seq)).unwrap();
    }
    assert_eq!(seqs(&drain(&mut rxs[0]).0), (0..8).collect::<Vec<_>>());
    for seq in 8..20 {
        tx.try_publish(c, None, ev(Priority::Low, seq)).unwrap();
    }
    let (first, first_missed) = drain(&mut rxs[0]);
    assert_eq!((seqs(&first), first_missed), ((12..20).collect(), 4));
    let (second, second_missed) = drain(&mut rxs[1]);
    assert_eq!((seqs(&second), second_missed), ((12..20).collect(), 12));
}

/// Broadcast receivers as tasks, concurrent publishers: every receiver gets every event
/// exactly once and in order per call, with sleeping receivers woken each time.
#[test]
fn broadcast_async_receivers_with_concurrent_publishers() {
    const THREADS: u64 = 2;
    const PER: u64 = 5_000;
    let bus = new_bus(EventBusConfig {
        shard_count: 2,
        broadcast_capacity: 16,
        history_capacity: 0,
        ..cfg()
    });
    let receivers = bus.subscribe_broadcast(Filter::all(), 3);
    let consumers: Vec<_> = receivers
        .into_iter()
        .map(|mut rx| {
            std::thread::spawn(move || {
                rt().block_on(async {
                    let mut next = [0u64; THREADS as usize];
                    for _ in 0..THREADS * PER {
                        let e = tokio::time::timeout(SAFETY, rx.recv())
                            .await
                            .expect("receiver stalled")
                            .expect("recv");
                        let t = e.correlation.0 as usize;
                        assert_eq!(e.payload.seq, next[t]);
                        next[t] += 1;
                    }
                    next
                })
            })
        })
        .collect();
    let publishers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = bus.publisher("p");
            std::thread::spawn(move || {
                rt().block_on(async {
                    for seq in 0..PER {
                        tx.publish(CorrelationId(t), None, ev(Priority::Normal, seq))
                            .await
                            .unwrap();
                    }
                })
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for c in consumers {
        assert_eq!(c.join().unwrap(), [PER; THREADS as usize]);
    }
}

#[test]
fn shard_of_is_stable_in_range_and_spreads() {
    let a = new_bus(EventBusConfig {
        shard_count: 8,
        ..cfg()
    });
    let b = new_bus(EventBusConfig {
        shard_count: 8,
        ..cfg()
    });
    let mut per_shard = [0usize; 8];
    for c in 0..1000 {
        let c = CorrelationId(c);
        let s = a.shard_of(c);
        assert!(s < 8);
        assert_eq!(s, a.shard_of(c), "not stable");
        assert_eq!(s, b.shard_of(c), "differs between buses");
        per_shard[s] += 1;
    }
    assert!(per_shard.iter().all(|n| *n > 0), "{per_shard:?}");
    // and roughly even (1000 / 8 = 125)
    assert!(per_shard.iter().all(|n| *n > 60), "{per_shard:?}");
}

#[test]
fn sharded_receivers_are_disjoint_complete_and_independent() {
    let bus = new_bus(EventBusConfig {
        shard_count: 8,
        ..cfg()
    });
    let mut rxs = bus.subscribe_sharded(Filter::all(), 4);
    assert_eq!(rxs.len(), 4);
    let mut owner = HashMap::new();
    for (g, rx) in rxs.iter().enumerate() {
        assert!(!rx.shards().is_empty());
        for &s in rx.shards() {
            assert!(owner.insert(s, g).is_none(), "shard {s} owned twice");
        }
    }
    assert_eq!(
        owner.keys().copied().collect::<HashSet<_>>(),
        (0..8).collect::<HashSet<_>>()
    );

    let tx = bus.publisher("t");
    let mut expected: Vec<Vec<(CorrelationId, u64)>> = vec![Vec::new(); 4];
    for seq in 0..20 {
        for c in 0..100 {
            let c = CorrelationId(c);
            tx.try_publish(c, None, ev(Priority::Normal, seq)).unwrap();
            expected[owner[&bus.shard_of(c)]].push((c, seq));
        }
    }
    // Drain receiver 2 alone (async), the others never polled yet.
    let got2: Vec<(CorrelationId, u64)> = rt().block_on(async {
        let mut v = Vec::new();
        for _ in 0..expected[2].len() {
            let e = tokio::time::timeout(SAFETY, rxs[2].recv())
                .await
                .expect("stalled")
                .unwrap();
            v.push((e.correlation, e.payload.seq));
        }
        v
    });
    assert_pending_recv(rxs[2].try_recv());
    let check = |g: usize, got: Vec<(CorrelationId, u64)>| {
        let mut got_by_corr: HashMap<CorrelationId, Vec<u64>> = HashMap::new();
        for (c, s) in got {
            assert_eq!(
                owner[&bus.shard_of(c)],
                g,
                "{c} delivered to wrong receiver"
            );
            got_by_corr.entry(c).or_default().push(s);
        }
        let mut want_by_corr: HashMap<CorrelationId, Vec<u64>> = HashMap::new();
        for (c, s) in &expected[g] {
            want_by_corr.entry(*c).or_default().push(*s);
        }
        assert_eq!(got_by_corr, want_by_corr, "receiver {g}");
    };
    check(2, got2);
    for g in [0, 1, 3] {
        let (events, missed) = drain(&mut rxs[g]);
        assert_eq!(missed, 0);
        check(
            g,
            events
                .iter()
                .map(|e| (e.correlation, e.payload.seq))
                .collect(),
        );
    }
}

// =======================================================================================
// 5. Overflow: Block lanes
// =======================================================================================

async fn block_lane_is_all_or_nothing_and_backpressures(prio: Priority) {
    let bus = one_shard_bus(8);
    let mut a = bus.subscribe(Filter::all());
    let mut b = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    let c = CorrelationId(1);
    for seq in 0..8 {
        tx.try_publish(c, None, ev(prio, seq)).unwrap();
    }
    for seq in 0..8 {
        assert_eq!(b.try_recv().unwrap().payload.seq, seq);
    }
    // A's lane is full: the 9th is refused, handed back, and B does not get it either.
    let ninth = ev(prio, 8);
    assert_eq!(
        tx.try_publish(c, None, ninth.clone()),
        Err(PublishError::Full(ninth.clone()))
    );
    assert_pending_recv(b.try_recv());
    let m = bus.metrics();
    assert_eq!(m.lane_total(prio).published, 8);
    assert_eq!(m.lane_total(prio).depth, 8);

    // The async publish waits...
    let tx2 = tx.clone();
    let pending = tokio::spawn(async move { tx2.publish(c, None, ninth).await });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !pending.is_finished(),
        "publish into a full Block lane completed"
    );
    assert_pending_recv(b.try_recv());
    // ...until A makes room.
    assert_eq!(a.try_recv().unwrap().payload.seq, 0);
    let id = tokio::time::timeout(SAFETY, pending)
        .await
        .expect("publish stayed blocked after room was made")
        .unwrap()
        .unwrap();
    let on_b = b.try_recv().unwrap();
    assert_eq!((on_b.id, on_b.payload.seq), (id, 8));
    let (rest, missed) = drain(&mut a);
    assert_eq!(missed, 0);
    assert_eq!(seqs(&rest), (1..=8).collect::<Vec<_>>());
    assert_eq!(rest.last().unwrap().id, id);

    // Nothing lost, nothing duplicated.
    let m = bus.metrics();
    let lane = m.lane_total(prio);
    assert_eq!(lane.published, 9);
    assert_eq!(lane.delivered, 18);
    assert_eq!(lane.shed, 0);
    assert_eq!(lane.depth, 0);
}

#[tokio::test]
async fn critical_lane_blocks_all_or_nothing() {
    block_lane_is_all_or_nothing_and_backpressures(Priority::Critical).await;
}

#[tokio::test]
async fn high_lane_blocks_all_or_nothing() {
    block_lane_is_all_or_nothing_and_backpressures(Priority::High).await;
}

#[tokio::test]
async fn normal_lane_blocks_all_or_nothing_by_default() {
    block_lane_is_all_or_nothing_and_backpressures(Priority::Normal).await;
}

// =======================================================================================
// 6. Overflow: shed oldest
// =======================================================================================

fn shed_bus(normal: OverflowPolicy) -> EventBus<Ev> {
    new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: 16,
        overflow: OverflowPolicies {
            normal,
            ..OverflowPolicies::default()
        },
        ..cfg()
    })
}

fn check_shed_oldest(prio: Priority, normal_policy: OverflowPolicy) {
    let bus = shed_bus(normal_policy);
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..100 {
        tx.try_publish(CorrelationId(1), None, ev(prio, seq))
            .unwrap();
    }
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Lagged(84));
    for seq in 84..100 {
        let e = rx.try_recv().unwrap();
        assert_eq!(e.payload, ev(prio, seq));
    }
    assert_pending_recv(rx.try_recv());
    let lane = bus.metrics().lane_total(prio);
    assert_eq!(lane.shed, 84);
    assert_eq!(lane.published, 100);
    assert_eq!(lane.delivered, 16);
    assert_eq!(lane.depth, 0);
}

#[test]
fn low_lane_sheds_oldest_and_reports_exact_loss() {
    check_shed_oldest(Priority::Low, OverflowPolicy::Block);
}

#[test]
fn normal_lane_sheds_oldest_when_configured() {
    check_shed_oldest(Priority::Normal, OverflowPolicy::ShedOldest);
}

#[tokio::test]
async fn async_recv_reports_lagged() {
    let bus = shed_bus(OverflowPolicy::Block);
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..100 {
        tx.publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .await
            .unwrap();
    }
    assert_eq!(rx.recv().await.unwrap_err(), RecvError::Lagged(84));
    assert_eq!(rx.recv().await.unwrap().payload.seq, 84);
}

#[tokio::test]
async fn recv_batch_reports_missed() {
    let bus = shed_bus(OverflowPolicy::Block);
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..100 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    let mut buf = Vec::new();
    let info = rx.recv_batch(&mut buf).await.unwrap();
    assert_eq!(info.missed, 84);
    assert_eq!(info.received, 16);
    assert_eq!(seqs(&buf), (84..100).collect::<Vec<_>>());
    // try_recv_batch too
    for seq in 100..120 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    buf.clear();
    let info = rx.try_recv_batch(&mut buf, 100).unwrap();
    assert_eq!((info.received, info.missed), (16, 4));
}

#[test]
fn shed_policy_without_priority_drops_the_new_event_and_reports_it() {
    let bus = new_bus(EventBusConfig {
        enable_priority: false,
        shard_count: 1,
        broadcast_capacity: 16,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..100 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    // A Block-policy event finds the shared lane full: back-pressure, not loss.
    assert!(matches!(
        tx.try_publish(CorrelationId(1), None, ev(Priority::Critical, 100)),
        Err(PublishError::Full(_))
    ));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Lagged(84));
    let (events, missed) = drain(&mut rx);
    assert_eq!(missed, 0);
    assert_eq!(seqs(&events), (0..16).collect::<Vec<_>>());
    assert_eq!(bus.metrics().lane_total(Priority::Low).shed, 84);
}

// =======================================================================================
// 7. No silent loss under a flood
// =======================================================================================

#[test]
fn flood_loses_nothing_silently_and_only_sheds_low() {
    const N: u64 = 200_000;
    let bus = new_bus(EventBusConfig {
        broadcast_capacity: 64,
        history_capacity: 0,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    fn prio_of(i: u64) -> Priority {
        match i % 10 {
            0 => Priority::Critical,
            1 | 2 => Priority::High,
            3..=5 => Priority::Normal,
            _ => Priority::Low,
        }
    }

    let receiver = std::thread::spawn(move || {
        rt().block_on(async move {
            let mut got = [0u64; 4];
            let mut missed = 0u64;
            let mut last: HashMap<(CorrelationId, Priority), u64> = HashMap::new();
            loop {
                let r = tokio::time::timeout(SAFETY, rx.recv())
                    .await
                    .expect("receiver stalled");
                match r {
                    Ok(e) => {
                        got[e.priority.index()] += 1;
                        if let Some(prev) = last.insert((e.correlation, e.priority), e.payload.seq)
                        {
                            assert!(prev < e.payload.seq, "reordered within a call and lane");
                        }
                        // a slow subscriber
                        std::thread::yield_now();
                    }
                    Err(RecvError::Lagged(n)) => missed += n,
                    Err(RecvError::Closed) => break,
                }
            }
            // Keep the subscription alive until the metrics are read: per-subscription
            // counters (delivered, shed, depth) leave the metrics with it.
            (got, missed, rx)
        })
    });

    let tx = bus.publisher("flood");
    let publisher = std::thread::spawn(move || {
        rt().block_on(async move {
            let mut sent = [0u64; 4];
            for i in 0..N {
                let p = prio_of(i);
                tx.publish(CorrelationId(i % 16), None, ev(p, i))
                    .await
                    .unwrap();
                sent[p.index()] += 1;
            }
            sent
        })
    });
    let sent = publisher.join().unwrap();
    bus.close();
    let (got, missed, rx) = receiver.join().unwrap();

    eprintln!("flood: sent {sent:?}, received {got:?}, missed {missed}");
    assert_eq!(sent.iter().sum::<u64>(), N);
    assert_eq!(got.iter().sum::<u64>() + missed, N, "silent loss");
    for p in [Priority::Critical, Priority::High, Priority::Normal] {
        assert_eq!(got[p.index()], sent[p.index()], "{p} lost events");
    }
    assert_eq!(
        got[Priority::Low.index()] + missed,
        sent[Priority::Low.index()]
    );

    let m = bus.metrics();
    assert_eq!(m.total().published, N);
    assert_eq!(m.total().shed, missed);
    assert_eq!(m.lane_total(Priority::Low).shed, missed);
    assert_eq!(m.total().delivered, got.iter().sum::<u64>());
    for p in [Priority::Critical, Priority::High, Priority::Normal] {
        assert_eq!(m.lane_total(p).shed, 0);
        assert_eq!(m.lane_total(p).published, sent[p.index()]);
        assert_eq!(m.lane_total(p).delivered, sent[p.index()]);
    }
    assert_eq!(m.total().depth, 0);
    drop(rx);
}

// =======================================================================================
// 8. Filtering
// =======================================================================================

#[test]
fn each_subscriber_gets_exactly_what_its_filter_admits() {
    let bus = new_bus(EventBusConfig {
        broadcast_capacity: 1024,
        ..cfg()
    });
    let f1 = Filter::topic(Topic::new(1));
    let f2 = Filter::all().correlation(CorrelationId(5));
    let f3 = Filter::all().min_priority(Priority::High);
    let mut s1 = bus.subscribe(f1);
    let mut s2 = bus.subscribe(f2);
    let mut s3 = bus.subscribe(f3);
    assert_eq!(bus.metrics().subscriptions, 3);

    let tx = bus.publisher("t");
    let mut want: [Vec<u64>; 3] = Default::default();
    let mut unrouted = 0;
    let mut seq = 0;
    for topic in 0..3u8 {
        for corr in 4..7u64 {
            for p in Priority::ALL {
                let e = Ev {
                    prio: p,
                    topic,
                    seq,
                };
                let a1 = topic == 1;
                let a2 = corr == 5;
                let a3 = p <= Priority::High;
                for (w, admitted) in want.iter_mut().zip([a1, a2, a3]) {
                    if admitted {
                        w.push(seq);
                    }
                }
                if !(a1 || a2 || a3) {
                    unrouted += 1;
                }
                tx.try_publish(CorrelationId(corr), None, e).unwrap();
                seq += 1;
            }
        }
    }
    for (i, rx) in [&mut s1, &mut s2, &mut s3].into_iter().enumerate() {
        let (events, missed) = drain(rx);
        assert_eq!(missed, 0);
        let mut got = seqs(&events);
        got.sort_unstable();
        assert_eq!(got, want[i], "subscriber S{}", i + 1);
    }
    assert_eq!(bus.metrics().unrouted, unrouted);
    assert!(unrouted > 0);
}

/// Several plain subscriptions of one topic, up to the fan-out fast path's limit of eight
/// and past it, with a filter that leaves out some events for one of them, one split
/// over two receivers by shard (from three subscriptions on), with and without
/// `enable_zero_copy`: each subscription gets what its filter admits, in order, with the
/// same id, correlation, causation and source as the others; shared or copied as
/// configured; and the metrics count one publish, one queued event and one delivery per
/// subscription.
#[test]
fn a_fan_out_reaches_every_plain_subscription_whatever_their_number() {
    for (n, zero_copy) in [2, 3, 8, 9, 12]
        .into_iter()
        .flat_map(|n| [(n, true), (n, false)])
    {
        let bus = new_bus(EventBusConfig {
            shard_count: 2,
            broadcast_capacity: 64,
            enable_zero_copy: zero_copy,
            history_capacity: 0,
            ..cfg()
        });
        // The last subscription takes call 7 only: a fan-out to n - 1 subscriptions for
        // the other calls (to one, when n is 2). From three on, the first is sharded.
        let sharded = n >= 3;
        let mut subs: Vec<Vec<Receiver<Ev>>> = (0..n - 1)
            .map(|i| match i {
                0 if sharded => bus.subscribe_sharded(Filter::all(), 2),
                _ => vec![bus.subscribe(Filter::all())],
            })
            .chain([vec![
                bus.subscribe(Filter::all().correlation(CorrelationId(7)))
            ]])
            .collect();
        let tx = bus.publisher("fan");
        let mut ids = Vec::new();
        for seq in 0..40u64 {
            let prio = Priority::ALL[(seq % 4) as usize];
            let c = CorrelationId(6 + seq % 3);
            let cause = (seq > 0).then(|| ids[ids.len() - 1]);
            ids.push(tx.try_publish(c, cause, ev(prio, seq)).unwrap());
        }
        let label = format!("{n} subscriptions, zero copy {zero_copy}");
        let to_seven = (0..40u64).filter(|s| 6 + s % 3 == 7).count() as u64;
        let m = bus.metrics().total();
        assert_eq!(m.depth, 40 * (n as u64 - 1) + to_seven, "{label}: queued");
        // A sharded subscription's receivers together.
        let got: Vec<Vec<Event<Ev>>> = subs
            .iter_mut()
            .map(|rxs| {
                let mut events = Vec::new();
                for rx in rxs.iter_mut() {
                    let (mine, missed) = drain(rx);
                    assert_eq!(missed, 0);
                    let shards = rx.shards();
                    assert!(mine
                        .iter()
                        .all(|e| shards.contains(&bus.shard_of(e.correlation))));
                    events.extend(mine);
                }
                events
            })
            .collect();
        for (i, events) in got.iter().enumerate() {
            let last = i == n - 1;
            let mut mine: Vec<_> = events.iter().collect();
            mine.sort_by_key(|e| e.payload.seq);
            let want: Vec<u64> = (0..40).filter(|s| !last || 6 + s % 3 == 7).collect();
            assert_eq!(seqs_of(&mine), want, "{label}: receiver {i}");
            for e in mine {
                let seq = e.payload.seq as usize;
                assert_eq!(e.id, ids[seq], "{label}");
                assert_eq!(e.correlation, CorrelationId(6 + seq as u64 % 3), "{label}");
                assert_eq!(e.causation, (seq > 0).then(|| ids[seq - 1]), "{label}");
                assert_eq!(e.source, "fan", "{label}");
                assert_eq!(e.priority, Priority::ALL[seq % 4], "{label}");
                // Shared by every receiver when several get it and zero copy is on.
                let receivers = if 6 + seq as u64 % 3 == 7 { n } else { n - 1 };
                assert_eq!(e.is_shared(), zero_copy && receivers > 1, "{label}: {seq}");
            }
        }
        // Each call's events of one priority came in publish order.
        for events in &got {
            for (p, c) in Priority::ALL
                .into_iter()
                .flat_map(|p| (6..9).map(move |c| (p, c)))
            {
                let lane: Vec<u64> = events
                    .iter()
                    .filter(|e| e.priority == p && e.correlation == CorrelationId(c))
                    .map(|e| e.payload.seq)
                    .collect();
                assert!(lane.windows(2).all(|w| w[0] < w[1]), "{label}: {lane:?}");
            }
        }
        let m = bus.metrics().total();
        assert_eq!(m.published, 40, "{label}");
        assert_eq!(m.delivered, 40 * (n as u64 - 1) + to_seven, "{label}");
        assert_eq!((m.depth, m.shed), (0, 0), "{label}");
    }
}

/// A batch published to several subscriptions whose receivers all wait: every receiver
/// is woken and gets the whole batch in order.
#[test]
fn a_batch_fanned_out_wakes_every_waiting_receiver() {
    // Up to four receivers to wake are gathered for the batch's end; more are woken at
    // once.
    let cases = [3, 5, 8].into_iter().flat_map(|n| [(n, true), (n, false)]);
    for (n, zero_copy) in cases {
        let bus = new_bus(EventBusConfig {
            broadcast_capacity: 256,
            enable_zero_copy: zero_copy,
            history_capacity: 0,
            ..cfg()
        });
        let rxs: Vec<Receiver<Ev>> = (0..n).map(|_| bus.subscribe(Filter::all())).collect();
        let waiting: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                std::thread::spawn(move || {
                    rt().block_on(async {
                        let mut got = Vec::new();
                        while got.len() < 100 {
                            let e = tokio::time::timeout(SAFETY, rx.recv())
                                .await
                                .expect("receiver never woken")
                                .unwrap();
                            got.push(e.payload.seq);
                        }
                        got
                    })
                })
            })
            .collect();
        // The receivers are asleep (nothing to take) before the batch is published.
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = outgoing(Priority::High, 0..100);
        assert_eq!(
            bus.publisher("b").try_publish_batch(&mut batch).unwrap(),
            100
        );
        for w in waiting {
            assert_eq!(
                w.join().unwrap(),
                (0..100).collect::<Vec<_>>(),
                "{n} receivers, zero copy {zero_copy}"
            );
        }
        assert_eq!(bus.metrics().total().delivered, 100 * n as u64);
    }
}

/// A fan-out racing the end of one of its subscriptions: the receiver that stays gets
/// every acknowledged event, in order, and nothing is wedged (a claim taken in the
/// subscription that ended is given back, not left open).
#[test]
fn a_fan_out_racing_a_receivers_drop_loses_nothing_for_the_others() {
    for round in 0..20u64 {
        let bus = new_bus(EventBusConfig {
            shard_count: 1,
            broadcast_capacity: 16,
            history_capacity: 0,
            ..cfg()
        });
        let mut stays = bus.subscribe(Filter::all());
        let others: Vec<Receiver<Ev>> = (0..2).map(|_| bus.subscribe(Filter::all())).collect();
        let tx = bus.publisher("p");
        const N: u64 = 20_000;
        let publisher = std::thread::spawn(move || {
            for seq in 0..N {
                let mut e = ev(Priority::High, seq);
                loop {
                    match tx.try_publish(CorrelationId(1), None, e) {
                        Ok(_) => break,
                        Err(PublishError::Full(back)) => {
                            e = back;
                            std::thread::yield_now();
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
            }
        });
        // The other two take a while, then leave, one after the other.
        let leaving = std::thread::spawn(move || {
            for mut rx in others {
                let until = Instant::now() + Duration::from_micros(100 + 40 * round);
                while Instant::now() < until {
                    let _ = rx.try_recv_with(8, |_| {});
                }
                drop(rx);
            }
        });
        let got = rt().block_on(async {
            let mut got = Vec::new();
            while (got.len() as u64) < N {
                let e = tokio::time::timeout(SAFETY, stays.recv())
                    .await
                    .expect("stalled")
                    .unwrap();
                got.push(e.payload.seq);
            }
            got
        });
        publisher.join().unwrap();
        leaving.join().unwrap();
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "round {round}");
        assert_pending_recv(stays.try_recv());
    }
}

/// Counts the wake-ups of a waiting receiver: filtered-out events (by topic, by
/// correlation, by priority) wake it zero times; one admitted event wakes it once.
#[test]
fn a_waiting_receiver_is_woken_only_by_events_its_filter_admits() {
    use std::future::Future;
    struct Counter(AtomicUsize);
    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    for (filter, admitted, refused) in [
        (
            Filter::topic(Topic::new(1)),
            (1, Priority::Low, 1u8),
            (1, Priority::Critical, 2u8),
        ),
        (
            Filter::all().correlation(CorrelationId(5)),
            (5, Priority::Low, 0),
            (6, Priority::Critical, 0),
        ),
        (
            Filter::all().min_priority(Priority::High),
            (1, Priority::High, 0),
            (1, Priority::Normal, 0),
        ),
    ] {
        let bus = new_bus(cfg());
        let mut rx = bus.subscribe(filter);
        // Something else listens to everything, so the refused events are published to
        // somebody (routed, queued and delivered elsewhere).
        let mut other = bus.subscribe(Filter::all());
        let tx = bus.publisher("t");
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut recv = Box::pin(rx.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        let (corr, prio, topic) = refused;
        for seq in 0..500 {
            tx.try_publish(CorrelationId(corr), None, Ev { prio, topic, seq })
                .unwrap();
        }
        assert_eq!(drain(&mut other).0.len(), 500);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            0,
            "{filter:?}: woken by events it did not ask for"
        );
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        let (corr, prio, topic) = admitted;
        let id = tx
            .try_publish(
                CorrelationId(corr),
                None,
                Ev {
                    prio,
                    topic,
                    seq: 0,
                },
            )
            .unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "{filter:?}");
        match recv.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(e)) => assert_eq!(e.id, id),
            other => panic!("{filter:?}: expected the admitted event, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn non_matching_events_are_never_queued_nor_wake_the_subscriber() {
    let bus = new_bus(cfg());
    let mut s1 = bus.subscribe(Filter::topic(Topic::new(1)));
    let tx = bus.publisher("t");
    let topic2 = |seq| Ev {
        prio: Priority::Critical,
        topic: 2,
        seq,
    };
    // While S1 waits, only topic-2 events are published. A wrong delivery would
    // complete the recv with an event, so this "not woken" check does not depend on
    // speed: the timeout only bounds how long we watch.
    let (res, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(100), s1.recv()),
        async {
            for seq in 0..50 {
                tx.try_publish(CorrelationId(seq), None, topic2(seq))
                    .unwrap();
                tokio::task::yield_now().await;
            }
        }
    );
    assert!(res.is_err(), "S1 received a topic-2 event: {res:?}");
    let m = bus.metrics();
    assert_eq!(m.total().depth, 0, "non-matching events were queued");
    assert_eq!(m.total().delivered, 0);
    assert_eq!(m.unrouted, 50);
    assert_pending_recv(s1.try_recv());

    // A matching event is delivered.
    let id = tx
        .try_publish(
            CorrelationId(1),
            None,
            Ev {
                prio: Priority::Low,
                topic: 1,
                seq: 99,
            },
        )
        .unwrap();
    let e = tokio::time::timeout(SAFETY, s1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.id, id);
    assert_eq!(bus.metrics().unrouted, 50);
}

#[test]
fn correlation_and_priority_filters_do_not_queue_other_events() {
    let bus = new_bus(cfg());
    let mut s2 = bus.subscribe(Filter::all().correlation(CorrelationId(5)));
    let mut s3 = bus.subscribe(Filter::all().min_priority(Priority::High));
    let tx = bus.publisher("t");
    for seq in 0..20 {
        // not corr 5, and Normal/Low: nobody wants them
        let p = if seq % 2 == 0 {
            Priority::Normal
        } else {
            Priority::Low
        };
        tx.try_publish(CorrelationId(6), None, ev(p, seq)).unwrap();
    }
    assert_eq!(bus.metrics().total().depth, 0);
    assert_eq!(bus.metrics().unrouted, 20);
    assert_pending_recv(s2.try_recv());
    assert_pending_recv(s3.try_recv());
}

// =======================================================================================
// 9. Batch publish and receive
// =======================================================================================

fn outgoing(prio: Priority, seqs: std::ops::Range<u64>) -> VecDeque<Outgoing<Ev>> {
    seqs.map(|seq| Outgoing {
        correlation: CorrelationId(seq % 5),
        causation: None,
        payload: ev(prio, seq),
    })
    .collect()
}

#[test]
fn try_publish_batch_publishes_and_removes_everything() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("batch");
    let before = bus.now();
    let mut batch = outgoing(Priority::Normal, 0..100);
    assert_eq!(tx.try_publish_batch(&mut batch), Ok(100));
    assert!(batch.is_empty());
    let after = bus.now();
    let (events, _) = drain(&mut rx);
    assert_eq!(seqs(&events), (0..100).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.source == "batch"));
    assert_eq!(bus.metrics().total().published, 100);
    // One call, one instant: every event of the batch carries the same timestamp, taken
    // during the call.
    let stamp = events[0].timestamp;
    assert!(events.iter().all(|e| e.timestamp == stamp));
    assert!(before <= stamp && stamp <= after);
    // The next call is stamped at its own (later or equal) instant.
    let mut more = outgoing(Priority::Normal, 100..101);
    assert_eq!(tx.try_publish_batch(&mut more), Ok(1));
    assert!(drain(&mut rx).0[0].timestamp >= stamp);
}

/// A batch publish claims room for a run of events bound for one queue at once. Runs end
/// where the receiver group, the filter's verdict or the priority changes; every event
/// still reaches exactly the receiver it should, in order, with its own id, correlation,
/// causation and priority, and what the filter refuses is counted as unrouted.
#[test]
fn batch_runs_end_where_the_group_filter_or_priority_changes() {
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        broadcast_capacity: 256,
        ..cfg()
    });
    let shards = correlation_per_shard(&bus);
    // One subscription of two receiver groups (shards 0, 2 and 1, 3), High and above.
    let mut rxs = bus.subscribe_sharded(Filter::all().min_priority(Priority::High), 2);
    let tx = bus.publisher("runs");
    // Runs of the same correlation, then alternating groups, mixed priorities, and
    // Normal events the filter refuses.
    let plan: Vec<(usize, Priority)> = (0..120)
        .map(|k| {
            let shard = match k {
                0..40 => 0,
                40..80 => k % 4,
                _ => (k / 3) % 4,
            };
            let prio = match k % 13 {
                5 => Priority::Normal,
                7 | 8 => Priority::Critical,
                _ => Priority::High,
            };
            (shard, prio)
        })
        .collect();
    let mut batch: VecDeque<Outgoing<Ev>> = plan
        .iter()
        .enumerate()
        .map(|(k, &(shard, prio))| Outgoing {
            correlation: shards[shard],
            causation: (k % 2 == 1).then_some(EventId(k as u64)),
            payload: ev(prio, k as u64),
        })
        .collect();
    assert_eq!(tx.try_publish_batch(&mut batch), Ok(120));
    let refused = plan.iter().filter(|(_, p)| *p == Priority::Normal).count();
    let mut ids = HashSet::new();
    let mut got = 0;
    for (g, rx) in rxs.iter_mut().enumerate() {
        let (events, missed) = drain(rx);
        assert_eq!(missed, 0);
        // Each group gets its shards' admitted events: Critical before High, each
        // priority in publish order.
        let want = |p: Priority| -> Vec<u64> {
            (0..120u64)
                .filter(|&k| {
                    let (shard, prio) = plan[k as usize];
                    shard % 2 == g && prio == p
                })
                .collect()
        };
        let (critical, high): (Vec<_>, Vec<_>) = events
            .iter()
            .partition(|e| e.priority == Priority::Critical);
        assert_eq!(seqs_of(&critical), want(Priority::Critical), "group {g}");
        assert_eq!(seqs_of(&high), want(Priority::High), "group {g}");
        assert!(events
            .iter()
            .take(critical.len())
            .all(|e| e.priority == Priority::Critical));
        for e in &events {
            let k = e.payload.seq as usize;
            assert_eq!(e.correlation, shards[plan[k].0]);
            assert_eq!(e.causation, (k % 2 == 1).then_some(EventId(k as u64)));
            assert_eq!(e.priority, plan[k].1);
            assert_eq!(e.source, "runs");
            assert!(ids.insert(e.id), "duplicate id {}", e.id);
        }
        got += events.len();
    }
    assert_eq!(got, 120 - refused);
    let m = bus.metrics();
    assert_eq!(m.unrouted, refused as u64);
    assert_eq!(m.total().published, 120);
    assert_eq!(m.total().delivered, (120 - refused) as u64);
    assert_eq!(m.total().depth, 0);
}

/// The history lists one call's events in the order they were published, also those
/// of one batch, which share a timestamp and whose ids count per priority; a replay
/// publishes them in that order, the cause chain rebuilt.
#[test]
fn history_keeps_a_batchs_order_across_priorities() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        history_capacity: 64,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("h");
    let c = CorrelationId(3);
    // Critical ids run ahead of the others'.
    for seq in 0..10 {
        tx.try_publish(c, None, ev(Priority::Critical, seq))
            .unwrap();
    }
    let prios = [
        Priority::High,
        Priority::Critical,
        Priority::Low,
        Priority::Normal,
    ];
    let mut batch: VecDeque<Outgoing<Ev>> = (10..18)
        .map(|seq| Outgoing {
            correlation: c,
            causation: None,
            payload: ev(prios[seq as usize % 4], seq),
        })
        .collect();
    assert_eq!(tx.try_publish_batch(&mut batch), Ok(8));
    drain(&mut rx);
    let history = bus.history_of(c);
    assert_eq!(
        history.iter().map(|e| e.payload.seq).collect::<Vec<_>>(),
        (0..18).collect::<Vec<_>>()
    );
    assert_eq!(
        bus.history()
            .iter()
            .map(|e| e.payload.seq)
            .collect::<Vec<_>>(),
        (0..18).collect::<Vec<_>>()
    );
    // Replayed into another bus: every event, each priority's in history order (the
    // receiver drains by lane, so that is the order it can show).
    let other = new_bus(cfg());
    let mut replayed = other.subscribe(Filter::all());
    rt().block_on(other.replay(history)).unwrap();
    let mut got: Vec<u64> = drain(&mut replayed)
        .0
        .iter()
        .map(|e| e.payload.seq)
        .collect();
    for p in Priority::ALL {
        let of_p: Vec<u64> = (0..18)
            .filter(|&s| {
                if s < 10 {
                    p == Priority::Critical
                } else {
                    prios[s as usize % 4] == p
                }
            })
            .collect();
        let seen: Vec<u64> = got.iter().copied().filter(|s| of_p.contains(s)).collect();
        assert_eq!(seen, of_p, "{p}");
    }
    got.sort_unstable();
    assert_eq!(got, (0..18).collect::<Vec<_>>());
}

fn seqs_of(events: &[&Event<Ev>]) -> Vec<u64> {
    events.iter().map(|e| e.payload.seq).collect()
}

/// A batch whose events a subscription's correlation filter admits only in part: the
/// admitted ones arrive, in order; the rest count as unrouted.
#[test]
fn batch_runs_respect_a_correlation_filter() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all().correlation(CorrelationId(1)));
    let tx = bus.publisher("runs");
    // 1 1 1 2 2 1 1 3 1 ...: runs of the admitted correlation between refused ones.
    let corr = |k: u64| {
        if k % 5 == 3 || k % 7 == 4 {
            2 + k % 2
        } else {
            1
        }
    };
    let mut batch: VecDeque<Outgoing<Ev>> = (0..100)
        .map(|k| Outgoing {
            correlation: CorrelationId(corr(k)),
            causation: None,
            payload: ev(Priority::Normal, k),
        })
        .collect();
    assert_eq!(tx.try_publish_batch(&mut batch), Ok(100));
    let want: Vec<u64> = (0..100).filter(|&k| corr(k) == 1).collect();
    let (events, _) = drain(&mut rx);
    assert_eq!(seqs(&events), want);
    assert!(events.iter().all(|e| e.correlation == CorrelationId(1)));
    assert_eq!(bus.metrics().unrouted, 100 - want.len() as u64);
}

#[test]
fn try_publish_batch_stops_at_a_full_block_lane() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: 8,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    let mut batch = outgoing(Priority::Critical, 0..20);
    assert_eq!(
        tx.try_publish_batch(&mut batch),
        Err(PublishError::Full(()))
    );
    assert_eq!(batch.len(), 12);
    assert_eq!(batch.front().unwrap().payload, ev(Priority::Critical, 8));
    assert_eq!(batch.front().unwrap().correlation, CorrelationId(8 % 5));
    assert_eq!(bus.metrics().total().published, 8);
    let (events, _) = drain(&mut rx);
    assert_eq!(seqs(&events), (0..8).collect::<Vec<_>>());
    // resume
    assert_eq!(
        tx.try_publish_batch(&mut batch),
        Err(PublishError::Full(()))
    );
    assert_eq!(batch.len(), 4);
    drain(&mut rx);
    assert_eq!(tx.try_publish_batch(&mut batch), Ok(4));
    assert!(batch.is_empty());
    assert_eq!(seqs(&drain(&mut rx).0), (16..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn publish_batch_waits_while_a_receiver_drains_concurrently() {
    let bus = new_bus(EventBusConfig {
        shard_count: 2,
        broadcast_capacity: 8,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    let batch = outgoing(Priority::High, 0..1000);
    let (published, received) = tokio::time::timeout(SAFETY, async {
        tokio::join!(tx.publish_batch(batch), async {
            let mut got = Vec::new();
            while got.len() < 1000 {
                let e = rx.recv().await.unwrap();
                got.push((e.correlation, e.payload.seq));
            }
            got
        })
    })
    .await
    .expect("publish_batch / receiver stalled");
    assert_eq!(published, Ok(1000));
    let mut by_corr: HashMap<CorrelationId, Vec<u64>> = HashMap::new();
    for (c, s) in received {
        by_corr.entry(c).or_default().push(s);
    }
    for (c, s) in by_corr {
        let want: Vec<u64> = (0..1000).filter(|x| x % 5 == c.0).collect();
        assert_eq!(s, want);
    }
}

#[test]
fn try_recv_batch_respects_max() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..25 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    let mut buf = Vec::new();
    let mut sizes = Vec::new();
    loop {
        match rx.try_recv_batch(&mut buf, 10) {
            Ok(info) => {
                assert_eq!(info.missed, 0);
                sizes.push(info.received);
            }
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(seqs(&buf), (0..25).collect::<Vec<_>>());
}

#[tokio::test]
async fn batch_size_bounds_recv_batch() {
    let bus = new_bus(EventBusConfig {
        batch_size: 7,
        shard_count: 3,
        ..cfg()
    });
    let mut rx = bus.subscribe(Filter::all());
    assert_eq!(rx.batch_size(), 7);
    let tx = bus.publisher("t");
    for seq in 0..30 {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    let mut buf = Vec::new();
    let mut sizes = Vec::new();
    while buf.len() < 30 {
        let before = buf.len();
        let info = tokio::time::timeout(SAFETY, rx.recv_batch(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.received, buf.len() - before);
        assert!(info.received <= 7);
        if 30 - before >= 7 {
            assert_eq!(info.received, 7, "a full batch was available");
        }
        sizes.push(info.received);
    }
    assert_eq!(sizes, vec![7, 7, 7, 7, 2]);
    let mut all = seqs(&buf);
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
}

// =======================================================================================
// 10. Every config field
// =======================================================================================

#[test]
fn config_shard_count() {
    for n in [1usize, 3, 8, 64] {
        let bus = new_bus(EventBusConfig {
            shard_count: n,
            ..cfg()
        });
        assert_eq!(bus.metrics().shards.len(), n);
        let mut seen = HashSet::new();
        for c in 0..2000 {
            let s = bus.shard_of(CorrelationId(c));
            assert!(s < n);
            seen.insert(s);
        }
        assert_eq!(seen.len(), n);
        // events land in the metrics of shard_of(c)
        let tx = bus.publisher("t");
        tx.try_publish(CorrelationId(77), None, ev(Priority::High, 0))
            .unwrap();
        let m = bus.metrics();
        let s = bus.shard_of(CorrelationId(77));
        assert_eq!(m.shards[s].shard, s);
        assert_eq!(m.shards[s].lane(Priority::High).published, 1);
    }
}

#[test]
fn config_broadcast_capacity() {
    for cap in [1usize, 5, 32] {
        let bus = new_bus(EventBusConfig {
            shard_count: 1,
            broadcast_capacity: cap,
            ..cfg()
        });
        let _rx = bus.subscribe(Filter::all());
        let tx = bus.publisher("t");
        for seq in 0..cap as u64 {
            tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
                .unwrap();
        }
        let extra = ev(Priority::Normal, cap as u64);
        assert_eq!(
            tx.try_publish(CorrelationId(1), None, extra.clone()),
            Err(PublishError::Full(extra))
        );
        // per lane: another Block lane still has room
        tx.try_publish(CorrelationId(1), None, ev(Priority::High, 0))
            .unwrap();
    }
}

#[test]
fn config_enable_priority() {
    for on in [true, false] {
        let bus = new_bus(EventBusConfig {
            enable_priority: on,
            ..cfg()
        });
        let mut rx = bus.subscribe(Filter::all());
        let tx = bus.publisher("t");
        for (i, p) in [Priority::Low, Priority::Critical, Priority::Normal]
            .into_iter()
            .enumerate()
        {
            tx.try_publish(CorrelationId(9), None, ev(p, i as u64))
                .unwrap();
        }
        let got: Vec<_> = drain(&mut rx).0.iter().map(|e| e.priority).collect();
        let want = if on {
            vec![Priority::Critical, Priority::Normal, Priority::Low]
        } else {
            vec![Priority::Low, Priority::Critical, Priority::Normal]
        };
        assert_eq!(got, want, "enable_priority = {on}");
    }
}

#[derive(Debug)]
struct Counted {
    clones: Arc<AtomicUsize>,
    seq: u64,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: self.clones.clone(),
            seq: self.seq,
        }
    }
}

impl Message for Counted {
    fn priority(&self) -> Priority {
        Priority::Normal
    }
}

#[test]
fn config_enable_zero_copy() {
    for zero_copy in [true, false] {
        let bus = EventBus::<Counted>::new(EventBusConfig {
            enable_zero_copy: zero_copy,
            history_capacity: 0,
            ..cfg()
        })
        .unwrap();
        let mut rxs: Vec<_> = (0..3).map(|_| bus.subscribe(Filter::all())).collect();
        let clones = Arc::new(AtomicUsize::new(0));
        let tx = bus.publisher("t");
        for seq in 0..10 {
            tx.try_publish(
                CorrelationId(1),
                None,
                Counted {
                    clones: clones.clone(),
                    seq,
                },
            )
            .unwrap();
        }
        let per_sub: Vec<Vec<Event<Counted>>> = rxs
            .iter_mut()
            .map(|rx| (0..10).map(|_| rx.try_recv().unwrap()).collect())
            .collect();
        let triples = per_sub[0].iter().zip(&per_sub[1]).zip(&per_sub[2]);
        for (i, ((a, b), c)) in triples.enumerate() {
            assert_eq!(a.payload.seq, i as u64);
            assert_eq!(a.id, b.id);
            assert_eq!(a.id, c.id);
            if zero_copy {
                assert!(a.is_shared() && b.is_shared() && c.is_shared());
                assert!(std::ptr::eq(&**a, &**b) && std::ptr::eq(&**b, &**c));
            } else {
                assert!(!a.is_shared() && !b.is_shared() && !c.is_shared());
                assert!(!std::ptr::eq(&**a, &**b) && !std::ptr::eq(&**b, &**c));
            }
        }
        let expected = if zero_copy { 0 } else { 2 * 10 };
        assert_eq!(
            clones.load(Ordering::SeqCst),
            expected,
            "payload clones with enable_zero_copy = {zero_copy}"
        );
    }
}

#[test]
fn zero_copy_single_subscriber_moves_the_payload() {
    let bus = EventBus::<Counted>::new(EventBusConfig {
        history_capacity: 0,
        ..cfg()
    })
    .unwrap();
    let mut rx = bus.subscribe(Filter::all());
    let clones = Arc::new(AtomicUsize::new(0));
    bus.publisher("t")
        .try_publish(
            CorrelationId(1),
            None,
            Counted {
                clones: clones.clone(),
                seq: 0,
            },
        )
        .unwrap();
    let e = rx.try_recv().unwrap();
    assert!(!e.is_shared());
    assert_eq!(clones.load(Ordering::SeqCst), 0);
}

#[test]
fn shared_event_outlives_the_bus() {
    let bus = new_bus(cfg());
    let mut a = bus.subscribe(Filter::all());
    let mut b = bus.subscribe(Filter::all());
    bus.publisher("t")
        .try_publish(CorrelationId(1), None, ev(Priority::High, 42))
        .unwrap();
    let ea = a.try_recv().unwrap();
    let eb = b.try_recv().unwrap();
    drop((a, b, bus));
    assert!(ea.is_shared());
    assert_eq!(ea.payload.seq, 42);
    drop(ea);
    assert_eq!(eb.into_envelope().payload.seq, 42);
}

#[test]
fn config_pool_capacity() {
    for cap in [4usize, 16] {
        let bus = new_bus(EventBusConfig {
            shard_count: 1,
            pool_capacity: cap,
            history_capacity: 0,
            broadcast_capacity: 64,
            ..cfg()
        });
        let mut rxs: Vec<_> = (0..3).map(|_| bus.subscribe(Filter::all())).collect();
        let tx = bus.publisher("t");
        let start = bus.metrics().pool;
        assert!(start.allocated <= cap as u64);
        for seq in 0..1000 {
            tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
                .unwrap();
            for rx in &mut rxs {
                assert!(rx.try_recv().unwrap().is_shared());
            }
        }
        let m = bus.metrics().pool;
        assert!(m.allocated <= cap as u64, "{m:?}");
        assert!(m.reused >= start.reused + 1000 - cap as u64, "{m:?}");

        // More in flight than the pool keeps: extra slots are allocated, and freed again
        // on release so the free list never exceeds pool_capacity.
        for seq in 0..40 {
            tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
                .unwrap();
        }
        assert!(bus.metrics().pool.allocated >= 40);
        for rx in &mut rxs {
            drain(rx);
        }
        assert_eq!(bus.metrics().pool.free, cap as u64);
    }
}

#[test]
fn config_history_capacity() {
    // 0: disabled
    let bus = new_bus(EventBusConfig {
        history_capacity: 0,
        ..cfg()
    });
    let tx = bus.publisher("t");
    for seq in 0..10 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    assert!(bus.history().is_empty());
    assert!(bus.history_of(CorrelationId(1)).is_empty());

    // 10 on one shard: exactly the 10 most recent, oldest first
    let bus = new_bus(EventBusConfig {
        history_capacity: 10,
        shard_count: 1,
        ..cfg()
    });
    let tx = bus.publisher("t");
    let mut ids = Vec::new();
    for seq in 0..25 {
        let c = CorrelationId(1 + seq % 2);
        ids.push(tx.try_publish(c, None, ev(Priority::Low, seq)).unwrap());
    }
    let h = bus.history();
    assert_eq!(
        h.iter().map(|e| e.payload.seq).collect::<Vec<_>>(),
        (15..25).collect::<Vec<_>>()
    );
    assert_eq!(
        h.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[15..].to_vec()
    );
    let of1 = bus.history_of(CorrelationId(1));
    assert_eq!(
        of1.iter().map(|e| e.payload.seq).collect::<Vec<_>>(),
        vec![16, 18, 20, 22, 24]
    );
    assert!(of1.iter().all(|e| e.correlation == CorrelationId(1)));
    assert!(bus.history_of(CorrelationId(3)).is_empty());

    // split across shards: never more than the total
    let bus = new_bus(EventBusConfig {
        history_capacity: 8,
        shard_count: 4,
        ..cfg()
    });
    let tx = bus.publisher("t");
    for seq in 0..100 {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::Low, seq))
            .unwrap();
    }
    assert!(bus.history().len() <= 8);
    assert!(!bus.history().is_empty());
    // 10 over 3 shards: split 4 + 3 + 3, never rounded up past the total.
    let bus = new_bus(EventBusConfig {
        history_capacity: 10,
        shard_count: 3,
        ..cfg()
    });
    let tx = bus.publisher("t");
    for seq in 0..1000 {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::Low, seq))
            .unwrap();
    }
    assert_eq!(bus.history().len(), 10);
}

#[test]
fn config_overflow_each_policy() {
    for p in [Priority::Normal, Priority::Low] {
        for policy in [OverflowPolicy::Block, OverflowPolicy::ShedOldest] {
            let mut overflow = OverflowPolicies::default();
            match p {
                Priority::Normal => overflow.normal = policy,
                _ => overflow.low = policy,
            }
            assert_eq!(overflow.get(p), policy);
            let bus = new_bus(EventBusConfig {
                shard_count: 1,
                broadcast_capacity: 4,
                overflow,
                ..cfg()
            });
            let mut rx = bus.subscribe(Filter::all());
            let tx = bus.publisher("t");
            for seq in 0..4 {
                tx.try_publish(CorrelationId(1), None, ev(p, seq)).unwrap();
            }
            let r = tx.try_publish(CorrelationId(1), None, ev(p, 4));
            match policy {
                OverflowPolicy::Block => {
                    assert_eq!(r, Err(PublishError::Full(ev(p, 4))));
                    let (events, missed) = drain(&mut rx);
                    assert_eq!((seqs(&events), missed), ((0..4).collect(), 0));
                }
                OverflowPolicy::ShedOldest => {
                    assert!(r.is_ok());
                    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Lagged(1));
                    let (events, missed) = drain(&mut rx);
                    assert_eq!((seqs(&events), missed), ((1..5).collect(), 0));
                }
            }
        }
    }
    // Critical and High can never shed.
    let mut c = cfg();
    c.overflow.high = OverflowPolicy::ShedOldest;
    assert_eq!(EventBus::<Ev>::new(c).unwrap_err().field, "overflow.high");
}

#[test]
fn config_validate_names_the_field() {
    let cases: Vec<(&str, EventBusConfig)> = vec![
        (
            "shard_count",
            EventBusConfig {
                shard_count: 0,
                ..cfg()
            },
        ),
        (
            "shard_count",
            EventBusConfig {
                shard_count: MAX_SHARDS + 1,
                ..cfg()
            },
        ),
        (
            "broadcast_capacity",
            EventBusConfig {
                broadcast_capacity: 0,
                ..cfg()
            },
        ),
        (
            "batch_size",
            EventBusConfig {
                batch_size: 0,
                ..cfg()
            },
        ),
        (
            "max_concurrent_dispatches",
            EventBusConfig {
                max_concurrent_dispatches: 0,
                ..cfg()
            },
        ),
        (
            "starvation_limit",
            EventBusConfig {
                starvation_limit: 0,
                ..cfg()
            },
        ),
        (
            "overflow.critical",
            EventBusConfig {
                overflow: OverflowPolicies {
                    critical: OverflowPolicy::ShedOldest,
                    ..OverflowPolicies::default()
                },
                ..cfg()
            },
        ),
        (
            "pool_capacity",
            EventBusConfig {
                pool_capacity: 0,
                ..cfg()
            },
        ),
    ];
    for (field, c) in cases {
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field));
        assert_eq!(EventBus::<Ev>::new(c).unwrap_err().field, field);
    }
    assert!(EventBus::<Ev>::new(EventBusConfig {
        enable_zero_copy: false,
        pool_capacity: 0,
        ..cfg()
    })
    .is_ok());
    assert!(EventBus::<Ev>::new(EventBusConfig {
        shard_count: MAX_SHARDS,
        broadcast_capacity: 1,
        ..cfg()
    })
    .is_ok());
}

#[test]
fn config_round_trips_through_serde() {
    let c = EventBusConfig {
        shard_count: 3,
        starvation_limit: 5,
        overflow: OverflowPolicies {
            normal: OverflowPolicy::ShedOldest,
            ..OverflowPolicies::default()
        },
        ..cfg()
    };
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"shed_oldest\""), "{json}");
    let back: EventBusConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
}

// =======================================================================================
// 11. Dispatcher
// =======================================================================================

/// Waits (safety net) until `done()` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Default)]
struct DispatchProbe {
    inflight: AtomicUsize,
    peak: AtomicUsize,
    handled: AtomicU64,
    missed: AtomicU64,
    out_of_order: AtomicU64,
    last: Mutex<HashMap<CorrelationId, u64>>,
}

impl DispatchProbe {
    fn record_order(&self, e: &Event<Ev>) {
        let mut last = self.last.lock().unwrap();
        if let Some(prev) = last.insert(e.correlation, e.payload.seq) {
            if prev >= e.payload.seq {
                self.out_of_order.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_with_one_concurrent_dispatch_never_overlaps() {
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        max_concurrent_dispatches: 1,
        ..cfg()
    });
    let probe = Arc::new(DispatchProbe::default());
    let p = probe.clone();
    let d = bus.spawn_dispatcher(Filter::all(), move |msg| {
        if let Dispatch::Event(e) = msg {
            let now = p.inflight.fetch_add(1, Ordering::SeqCst) + 1;
            p.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::yield_now(); // widen any overlap window
            p.record_order(&e);
            p.inflight.fetch_sub(1, Ordering::SeqCst);
            p.handled.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(d.concurrency(), 1);
    let tx = bus.publisher("t");
    for seq in 0..40 {
        for c in 0..50 {
            tx.publish(CorrelationId(c), None, ev(Priority::Normal, seq))
                .await
                .unwrap();
        }
    }
    wait_until("2000 dispatches", || {
        probe.handled.load(Ordering::SeqCst) == 2000
    })
    .await;
    assert_eq!(probe.peak.load(Ordering::SeqCst), 1);
    assert_eq!(probe.out_of_order.load(Ordering::SeqCst), 0);
    bus.close();
    tokio::time::timeout(SAFETY, d.join())
        .await
        .expect("dispatcher did not end after close");
    assert_eq!(probe.handled.load(Ordering::SeqCst), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispatcher_runs_up_to_max_concurrent_dispatches_in_parallel() {
    const MAX: usize = 4;
    let bus = new_bus(EventBusConfig {
        shard_count: 8,
        max_concurrent_dispatches: MAX,
        ..cfg()
    });
    let probe = Arc::new(DispatchProbe::default());
    let reached = Arc::new(AtomicBool::new(false));
    let (p, r) = (probe.clone(), reached.clone());
    let d = bus.spawn_dispatcher(Filter::all(), move |msg| {
        if let Dispatch::Event(e) = msg {
            let now = p.inflight.fetch_add(1, Ordering::SeqCst) + 1;
            p.peak.fetch_max(now, Ordering::SeqCst);
            // Rendezvous: wait (bounded) for all groups to be inside the handler at once.
            let start = Instant::now();
            while !r.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
                if p.inflight.load(Ordering::SeqCst) >= MAX {
                    r.store(true, Ordering::SeqCst);
                }
                std::thread::yield_now();
            }
            p.record_order(&e);
            p.inflight.fetch_sub(1, Ordering::SeqCst);
            p.handled.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(d.concurrency(), MAX);

    // Correlation ids covering every group (group = shard % MAX).
    let mut by_group: Vec<Vec<CorrelationId>> = vec![Vec::new(); MAX];
    let mut c = 0;
    while by_group.iter().any(|g| g.len() < 5) {
        let g = bus.shard_of(CorrelationId(c)) % MAX;
        if by_group[g].len() < 5 {
            by_group[g].push(CorrelationId(c));
        }
        c += 1;
    }
    let tx = bus.publisher("t");
    let mut total = 0;
    for seq in 0..50 {
        for g in &by_group {
            for &c in g {
                tx.publish(c, None, ev(Priority::Normal, seq))
                    .await
                    .unwrap();
                total += 1;
            }
        }
    }
    wait_until("all dispatches", || {
        probe.handled.load(Ordering::SeqCst) == total
    })
    .await;
    assert_eq!(
        probe.peak.load(Ordering::SeqCst),
        MAX,
        "never ran 4 at once"
    );
    assert!(reached.load(Ordering::SeqCst));
    assert_eq!(probe.out_of_order.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dispatcher_concurrency_is_min_of_max_and_shards() {
    for (shards, max, want) in [(8, 4, 4), (2, 4, 2), (4, 1, 1), (3, 3, 3)] {
        let bus = new_bus(EventBusConfig {
            shard_count: shards,
            max_concurrent_dispatches: max,
            ..cfg()
        });
        let d = bus.spawn_dispatcher(Filter::all(), |_| {});
        assert_eq!(d.concurrency(), want, "shards {shards}, max {max}");
        assert_eq!(bus.metrics().subscriptions, 1);
    }
}

#[tokio::test]
async fn dispatcher_reports_missed_when_low_events_are_shed() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: 4,
        ..cfg()
    });
    let probe = Arc::new(DispatchProbe::default());
    let p = probe.clone();
    let d = bus.spawn_dispatcher(Filter::all(), move |msg| match msg {
        Dispatch::Event(e) => {
            p.record_order(&e);
            p.last
                .lock()
                .unwrap()
                .insert(CorrelationId(u64::MAX), e.payload.seq);
            p.handled.fetch_add(1, Ordering::SeqCst);
        }
        Dispatch::Missed(n) => {
            p.missed.fetch_add(n, Ordering::SeqCst);
        }
    });
    // Current-thread runtime: the dispatcher cannot run before we yield.
    let tx = bus.publisher("t");
    for seq in 0..100 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    wait_until("dispatch of everything", || {
        probe.handled.load(Ordering::SeqCst) + probe.missed.load(Ordering::SeqCst) == 100
    })
    .await;
    assert_eq!(probe.missed.load(Ordering::SeqCst), 96);
    assert_eq!(probe.handled.load(Ordering::SeqCst), 4);
    assert_eq!(
        probe.last.lock().unwrap()[&CorrelationId(u64::MAX)],
        99,
        "the newest survive"
    );
    drop(d);
}

// =======================================================================================
// 12. Close
// =======================================================================================

#[tokio::test]
async fn close_refuses_publishes_and_drains_receivers_first() {
    let bus = new_bus(cfg());
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..3 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    assert!(!bus.is_closed());
    bus.close();
    assert!(bus.is_closed());
    let late = ev(Priority::Critical, 9);
    assert_eq!(
        tx.try_publish(CorrelationId(1), None, late.clone()),
        Err(PublishError::Closed(late.clone()))
    );
    assert_eq!(
        tx.publish(CorrelationId(1), None, late.clone()).await,
        Err(PublishError::Closed(late.clone()))
    );
    let mut batch = outgoing(Priority::High, 0..3);
    assert_eq!(
        tx.try_publish_batch(&mut batch),
        Err(PublishError::Closed(()))
    );
    assert_eq!(batch.len(), 3);
    for seq in 0..3 {
        assert_eq!(rx.recv().await.unwrap().payload.seq, seq);
    }
    assert_eq!(rx.recv().await.unwrap_err(), RecvError::Closed);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed);
    let mut buf = Vec::new();
    assert_eq!(
        rx.recv_batch(&mut buf).await.unwrap_err(),
        RecvError::Closed
    );
    // subscribing after close yields an already-closed receiver
    let mut late_rx = bus.subscribe(Filter::all());
    assert_eq!(late_rx.try_recv().unwrap_err(), TryRecvError::Closed);
}

#[tokio::test]
async fn close_wakes_a_pending_recv() {
    let bus = new_bus(cfg());
    let mut rx = bus.subscribe(Filter::all());
    let task = tokio::spawn(async move { rx.recv().await.map(|e| e.payload.seq) });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!task.is_finished());
    bus.close();
    let r = tokio::time::timeout(SAFETY, task).await.unwrap().unwrap();
    assert_eq!(r, Err(RecvError::Closed));
}

#[tokio::test]
async fn close_wakes_a_publisher_blocked_on_a_full_lane() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: 1,
        ..cfg()
    });
    let _rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    tx.try_publish(CorrelationId(1), None, ev(Priority::High, 0))
        .unwrap();
    let task = tokio::spawn(async move {
        tx.publish(CorrelationId(1), None, ev(Priority::High, 1))
            .await
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!task.is_finished());
    bus.close();
    let r = tokio::time::timeout(SAFETY, task).await.unwrap().unwrap();
    assert_eq!(r, Err(PublishError::Closed(ev(Priority::High, 1))));
}

#[tokio::test]
async fn dropping_every_bus_handle_closes_receivers_after_draining() {
    let bus = new_bus(cfg());
    let mut rx = bus.subscribe(Filter::all());
    let mut waiting = bus.subscribe(Filter::all().correlation(CorrelationId(999)));
    let tx = bus.publisher("t");
    for seq in 0..3 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    let pending = tokio::spawn(async move { waiting.recv().await.map(|e| e.payload.seq) });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!pending.is_finished());
    drop(tx);
    drop(bus);
    let r = tokio::time::timeout(SAFETY, pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, Err(RecvError::Closed));
    for seq in 0..3 {
        assert_eq!(rx.recv().await.unwrap().payload.seq, seq);
    }
    assert_eq!(rx.recv().await.unwrap_err(), RecvError::Closed);
}

#[test]
fn dropping_a_receiver_removes_the_subscription() {
    let bus = new_bus(cfg());
    let a = bus.subscribe(Filter::all());
    let mut b = bus.subscribe(Filter::all());
    let sharded = bus.subscribe_sharded(Filter::all(), 2);
    assert_eq!(bus.metrics().subscriptions, 3);
    let tx = bus.publisher("t");
    tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, 0))
        .unwrap();
    assert_eq!(bus.metrics().unrouted, 0);
    drop(a);
    assert_eq!(bus.metrics().subscriptions, 2);
    drop(sharded);
    assert_eq!(bus.metrics().subscriptions, 1);
    drain(&mut b);
    drop(b);
    assert_eq!(bus.metrics().subscriptions, 0);
    for seq in 1..=5 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    assert_eq!(bus.metrics().unrouted, 5);
    assert_eq!(bus.metrics().total().depth, 0);
}

#[tokio::test]
async fn dropping_a_receiver_unblocks_a_waiting_publisher() {
    let bus = new_bus(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: 1,
        ..cfg()
    });
    let rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    tx.try_publish(CorrelationId(1), None, ev(Priority::Critical, 0))
        .unwrap();
    let task = tokio::spawn(async move {
        tx.publish(CorrelationId(1), None, ev(Priority::Critical, 1))
            .await
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!task.is_finished());
    drop(rx);
    let r = tokio::time::timeout(SAFETY, task).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(bus.metrics().unrouted, 1);
}

// =======================================================================================
// 13. No singletons
// =======================================================================================

#[test]
fn two_buses_are_fully_independent() {
    let a = new_bus(cfg());
    let b = new_bus(cfg());
    let mut ra = a.subscribe(Filter::all());
    let mut rb = b.subscribe(Filter::all());
    let ta = a.publisher("a");
    let tb = b.publisher("b");
    let first_a = ta
        .try_publish(CorrelationId(1), None, ev(Priority::Normal, 0))
        .unwrap();
    for seq in 1..10 {
        ta.try_publish(CorrelationId(1), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    let first_b = tb
        .try_publish(CorrelationId(1), None, ev(Priority::Normal, 100))
        .unwrap();
    assert_eq!(first_a, first_b, "id sequences are per bus");
    let ma = a.metrics();
    let mb = b.metrics();
    assert_eq!(ma.total().published, 10);
    assert_eq!(mb.total().published, 1);
    assert_eq!(ma.subscriptions, 1);
    let _extra = b.subscribe(Filter::all());
    assert_eq!(a.metrics().subscriptions, 1);
    assert_eq!(b.metrics().subscriptions, 2);
    let (ea, _) = drain(&mut ra);
    let (eb, _) = drain(&mut rb);
    assert_eq!(seqs(&ea), (0..10).collect::<Vec<_>>());
    assert_eq!(seqs(&eb), vec![100]);
    assert!(ea.iter().all(|e| e.source == "a"));
    a.close();
    assert!(!b.is_closed());
    tb.try_publish(CorrelationId(2), None, ev(Priority::Low, 101))
        .unwrap();
    assert_eq!(rb.try_recv().unwrap().payload.seq, 101);
}

// =======================================================================================
// 14. Replay
// =======================================================================================

#[tokio::test]
async fn replay_reproduces_a_recorded_call_in_another_bus() {
    let recorder = new_bus(EventBusConfig {
        history_capacity: 1024,
        ..cfg()
    });
    let setup = recorder.publisher("setup");
    let media = recorder.publisher("media");
    let call = CorrelationId(7);
    let mut cause = None;
    for seq in 0..12 {
        let tx = if seq % 3 == 0 { &setup } else { &media };
        let id = tx
            .try_publish(call, cause, ev(Priority::Normal, seq))
            .unwrap();
        cause = Some(id);
        // noise from other calls
        media
            .try_publish(
                CorrelationId(8 + seq),
                None,
                ev(Priority::Normal, 1000 + seq),
            )
            .unwrap();
    }
    let recorded = recorder.history_of(call);
    assert_eq!(recorded.len(), 12);
    assert_eq!(
        recorded.iter().map(|e| e.payload.seq).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );

    let target = new_bus(cfg());
    let mut rx = target.subscribe(Filter::all());
    // Replayed from the third event on: the first replayed one's cause (the second
    // recorded event) is not part of the replay and keeps its recorded id.
    let n = target.replay(recorded[2..].to_vec()).await.unwrap();
    assert_eq!(n, 10);
    let mut new_id_of = HashMap::new();
    for want in &recorded[2..] {
        let got = rx.try_recv().unwrap();
        assert_eq!(got.payload, want.payload);
        assert_eq!(got.correlation, want.correlation);
        assert_eq!(got.source, want.source);
        assert_eq!(got.priority, want.priority);
        // The cause chain is rebuilt with the target bus's ids.
        let cause = want.causation.expect("recorded with a cause");
        let want_cause = new_id_of.get(&cause).copied().unwrap_or(cause);
        assert_eq!(got.causation, Some(want_cause), "seq {}", want.payload.seq);
        if want.payload.seq > 2 {
            assert_eq!(got.causation, new_id_of.get(&cause).copied());
        } else {
            assert_eq!(got.causation, Some(recorded[1].id));
        }
        new_id_of.insert(want.id, got.id);
    }
    assert_pending_recv(rx.try_recv());
}

#[test]
fn metrics_keep_the_counts_of_a_subscriber_that_left() {
    let bus = new_bus(EventBusConfig {
        broadcast_capacity: 4,
        ..cfg()
    });
    let tx = bus.publisher("t");
    let mut rx = bus.subscribe(Filter::all());
    for seq in 0..10 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Lagged(6));
    for _ in 0..4 {
        rx.try_recv().unwrap();
    }
    let before = bus.metrics();
    assert_eq!(before.lane_total(Priority::Low).shed, 6);
    assert_eq!(before.lane_total(Priority::Low).delivered, 4);
    drop(rx);
    let after = bus.metrics();
    assert_eq!(after.subscriptions, 0);
    assert_eq!(
        after.lane_total(Priority::Low).shed,
        6,
        "shed counts survive"
    );
    assert_eq!(
        after.lane_total(Priority::Low).delivered,
        4,
        "deliveries survive"
    );
    assert_eq!(
        after.latency.count, before.latency.count,
        "latency samples survive"
    );
    assert_eq!(
        after.lane_total(Priority::Low).latency,
        before.lane_total(Priority::Low).latency,
        "the lane's latency survives"
    );
}

/// The publish→receive latency is measured per shard and lane, and its values are real:
/// events that waited 30 ms in the Low lane show at least that (less the histogram's
/// ≤ 19% bucket rounding); a Critical event is counted in its own lane only; the shard
/// and the bus merge the lanes.
#[test]
fn latency_is_measured_per_lane_with_real_values() {
    let bus = one_shard_bus(64);
    let tx = bus.publisher("t");
    let mut rx = bus.subscribe(Filter::all());
    for seq in 0..5 {
        tx.try_publish(CorrelationId(1), None, ev(Priority::Low, seq))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(drain(&mut rx).0.len(), 5);
    tx.try_publish(CorrelationId(1), None, ev(Priority::Critical, 0))
        .unwrap();
    assert_eq!(rx.try_recv().unwrap().priority, Priority::Critical);

    let m = bus.metrics();
    let low = m.shards[0].lane(Priority::Low).latency;
    assert_eq!(low.count, 5);
    // 30 ms less 19%, to the bucket's lower bound.
    assert!(low.p50_ns >= 24_000_000, "Low waited 30 ms: {low:?}");
    assert!(low.max_ns >= low.p50_ns);
    let crit = m.shards[0].lane(Priority::Critical).latency;
    assert_eq!(crit.count, 1);
    for p in [Priority::High, Priority::Normal] {
        assert_eq!(m.shards[0].lane(p).latency.count, 0, "{p:?}");
    }
    assert_eq!(m.lane_total(Priority::Low).latency, low);
    assert_eq!(m.lane_latency[Priority::Critical.index()], crit);
    assert_eq!(m.shards[0].latency.count, 6);
    assert_eq!(m.latency.count, 6);
    assert_eq!(m.latency.max_ns, low.max_ns);
}

/// The surviving receivers of a sharded subscription keep being counted while they
/// drain: the metrics add up after one receiver was dropped.
#[test]
fn sharded_survivors_are_counted_while_they_drain() {
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        history_capacity: 0,
        ..cfg()
    });
    let mut rxs = bus.subscribe_sharded(Filter::all(), 2);
    let tx = bus.publisher("t");
    for seq in 0..40 {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::High, seq))
            .unwrap();
    }
    // The one about to go takes two, then is dropped; the survivor drains afterwards.
    let mut dropped = rxs.pop().unwrap();
    dropped.try_recv().unwrap();
    dropped.try_recv().unwrap();
    drop(dropped);
    let (mine, _) = drain(&mut rxs[0]);
    let dropped_share = 40 - mine.len() as u64;
    assert!(dropped_share >= 2 && !mine.is_empty());
    let t = bus.metrics().total();
    assert_eq!(
        t.delivered,
        mine.len() as u64 + 2,
        "the survivor's deliveries count"
    );
    assert_eq!(
        t.depth,
        dropped_share - 2,
        "still queued in the dropped group"
    );
    drop(rxs);
    let t = bus.metrics().total();
    assert_eq!(t.delivered, mine.len() as u64 + 2);
    assert_eq!(t.depth, 0, "the subscription is gone");
}

#[test]
fn dropping_one_sharded_receiver_ends_the_whole_subscription() {
    let bus = new_bus(EventBusConfig {
        shard_count: 4,
        broadcast_capacity: 2,
        ..cfg()
    });
    let mut rxs = bus.subscribe_sharded(Filter::all(), 2);
    let tx = bus.publisher("t");
    // One event for a correlation owned by the surviving receiver.
    let kept = (0..1000u64)
        .map(CorrelationId)
        .find(|c| rxs[0].shards().contains(&bus.shard_of(*c)))
        .unwrap();
    tx.try_publish(kept, None, ev(Priority::Critical, 1))
        .unwrap();
    drop(rxs.pop()); // drop receiver 1
                     // Unrouted now: publishers can never be stalled by the group nobody drains.
    for seq in 0..100 {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::Critical, seq))
            .unwrap();
    }
    assert_eq!(bus.metrics().subscriptions, 0);
    // The survivor drains what was queued, then sees Closed.
    assert_eq!(rxs[0].try_recv().unwrap().payload.seq, 1);
    assert_eq!(rxs[0].try_recv().unwrap_err(), TryRecvError::Closed);
}

/// A publisher keeps its own copy of the routing table: every subscribe and every
/// unsubscribe must still be seen by its next publish, on its own thread and on another
/// thread sharing it.
#[test]
fn a_publisher_sees_every_subscription_change_at_its_next_publish() {
    let bus = new_bus(cfg());
    let tx = Arc::new(bus.publisher("t"));
    let publish = |tx: &Publisher<Ev>, seq| {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::Normal, seq))
            .unwrap();
    };
    publish(&tx, 0);
    assert_eq!(bus.metrics().unrouted, 1);
    let mut a = bus.subscribe(Filter::all());
    publish(&tx, 1);
    let mut b = bus.subscribe(Filter::all());
    publish(&tx, 2);
    // Another thread, same publisher: it reads the table itself.
    let (t2, bus2) = (tx.clone(), bus.clone());
    let mut c = std::thread::spawn(move || {
        publish(&t2, 3);
        let c = bus2.subscribe(Filter::all());
        publish(&t2, 4);
        c
    })
    .join()
    .unwrap();
    publish(&tx, 5);
    assert_eq!(seqs(&drain(&mut a).0), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&drain(&mut b).0), [2, 3, 4, 5]);
    assert_eq!(seqs(&drain(&mut c).0), [4, 5]);
    drop(a);
    drop(b);
    publish(&tx, 6);
    assert_eq!(seqs(&drain(&mut c).0), [6]);
    drop(c);
    publish(&tx, 7);
    assert_eq!(bus.metrics().unrouted, 2);
    assert_eq!(bus.metrics().subscriptions, 0);
}

// =======================================================================================
// Lending receive (try_recv_with / recv_with)
// =======================================================================================

/// Two identical buses fed the same events (every priority, a Low lane that sheds, the
/// starvation guard at work, several shards): draining one with `try_recv_with` must see
/// exactly what `try_recv_batch` moves out of the other, in the same order, with the same
/// metrics.
#[test]
fn try_recv_with_lends_exactly_what_try_recv_batch_moves() {
    let config = EventBusConfig {
        shard_count: 4,
        broadcast_capacity: 64,
        starvation_limit: 3,
        ..cfg()
    };
    let (a, b) = (new_bus(config.clone()), new_bus(config));
    let (mut ra, mut rb) = (a.subscribe(Filter::all()), b.subscribe(Filter::all()));
    let (ta, tb) = (a.publisher("t"), b.publisher("t"));
    let mut seq = 0u64;
    let mut publish = |n: u64| {
        for _ in 0..n {
            let prio = Priority::ALL[(seq * 7 % 11 % 4) as usize];
            for tx in [&ta, &tb] {
                // Block lanes full: skipped on both (same outcome on both buses).
                let _ = tx.try_publish(CorrelationId(seq % 5), None, ev(prio, seq));
            }
            seq += 1;
        }
    };
    let key = |e: &Envelope<Ev>| (e.payload.seq, e.priority, e.correlation, e.id);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let (mut missed_a, mut missed_b) = (0, 0);
    for (round, k) in [(0, 1usize), (1, 5), (2, 64), (3, 7), (4, 200), (5, 2)] {
        publish(40 + round * 37);
        let mut buf = Vec::new();
        let ia = ra.try_recv_batch(&mut buf, k).unwrap();
        got_a.extend(buf.iter().map(|e| key(e)));
        let ib = rb.try_recv_with(k, |e| got_b.push(key(e))).unwrap();
        assert_eq!(ia, ib, "round {round}");
        missed_a += ia.missed;
        missed_b += ib.missed;
    }
    loop {
        let mut buf = Vec::new();
        let ia = ra.try_recv_batch(&mut buf, 16);
        got_a.extend(buf.iter().map(|e| key(e)));
        let ib = rb.try_recv_with(16, |e| got_b.push(key(e)));
        assert_eq!(ia, ib);
        match ia {
            Ok(i) => {
                missed_a += i.missed;
                missed_b += ib.map(|i| i.missed).unwrap_or_default();
            }
            Err(_) => break,
        }
    }
    assert_eq!(got_a, got_b);
    assert!(missed_a > 0, "the Low lane should have shed");
    assert_eq!(missed_a, missed_b);
    let (ma, mb) = (a.metrics(), b.metrics());
    for p in Priority::ALL {
        // Every counter; the latencies differ (two runs), their sample counts do not.
        let (la, lb) = (ma.lane_total(p), mb.lane_total(p));
        assert_eq!(
            (
                la.depth,
                la.published,
                la.delivered,
                la.shed,
                la.latency.count
            ),
            (
                lb.depth,
                lb.published,
                lb.delivered,
                lb.shed,
                lb.latency.count
            ),
            "{p}"
        );
    }
    assert_eq!(mb.total().depth, 0);
    assert_eq!(mb.latency.count, mb.total().delivered);
    assert_eq!(ma.latency.count, mb.latency.count);
}

#[test]
fn broadcast_receivers_lend_every_event_and_give_the_room_back() {
    let bus = new_bus(EventBusConfig {
        broadcast_capacity: 8,
        ..cfg()
    });
    let mut rxs = bus.subscribe_broadcast(Filter::all(), 3);
    let tx = bus.publisher("t");
    let mut seen = vec![Vec::new(); 3];
    for round in 0..5u64 {
        for k in 0..8 {
            tx.try_publish(CorrelationId(k), None, ev(Priority::High, round * 8 + k))
                .unwrap();
        }
        // Full until every receiver has read.
        assert!(matches!(
            tx.try_publish(CorrelationId(0), None, ev(Priority::High, 999)),
            Err(PublishError::Full(_))
        ));
        for (rx, seen) in rxs.iter_mut().zip(seen.iter_mut()) {
            let info = rx.try_recv_with(100, |e| seen.push(e.payload.seq)).unwrap();
            assert_eq!(info.received, 8);
        }
    }
    let want: Vec<u64> = (0..40).collect();
    for s in &seen {
        assert_eq!(s, &want);
    }
    assert_eq!(bus.metrics().total().delivered, 3 * 40);
    assert_eq!(bus.metrics().total().depth, 0);
}

/// A receive call that takes from several Block lanes gives every one of them its room
/// back (each receive path: one event at a time, moved into a buffer, lent).
#[test]
fn a_receive_call_gives_back_the_room_of_every_lane_it_took_from() {
    const CAP: u64 = 4;
    let block = [Priority::Critical, Priority::High, Priority::Normal];
    for path in 0..3 {
        let bus = one_shard_bus(CAP as usize);
        let mut rx = bus.subscribe(Filter::all());
        let tx = bus.publisher("t");
        for round in 0..3u64 {
            // Every Block lane full.
            for (p, prio) in block.iter().enumerate() {
                for k in 0..CAP {
                    tx.try_publish(
                        CorrelationId(1),
                        None,
                        ev(*prio, round * 100 + p as u64 * 10 + k),
                    )
                    .unwrap_or_else(|_| {
                        panic!("path {path} round {round}: {prio:?} lane full early")
                    });
                }
                assert!(
                    matches!(
                        tx.try_publish(CorrelationId(1), None, ev(*prio, 999)),
                        Err(PublishError::Full(_))
                    ),
                    "{prio:?} lane holds {CAP}"
                );
            }
            // One call (or, for `try_recv`, one call per event) takes all of them.
            let mut got = 0;
            match path {
                0 => {
                    while rx.try_recv().is_ok() {
                        got += 1;
                    }
                }
                1 => {
                    let mut buf = Vec::new();
                    got = rx.try_recv_batch(&mut buf, 100).unwrap().received;
                }
                _ => got = rx.try_recv_with(100, |_| ()).unwrap().received,
            }
            assert_eq!(got, 3 * CAP as usize, "path {path} round {round}");
        }
        assert_eq!(bus.metrics().total().delivered, 9 * CAP, "path {path}");
        assert_eq!(bus.metrics().total().depth, 0, "path {path}");
    }
}

/// One plain receiver, or a broadcast subscription of two.
fn one_or_broadcast<T: Message + Clone>(bus: &EventBus<T>, broadcast: bool) -> Vec<Receiver<T>> {
    if broadcast {
        bus.subscribe_broadcast(Filter::all(), 2)
    } else {
        vec![bus.subscribe(Filter::all())]
    }
}

/// A payload that counts its drops (Normal, or the priority given).
#[derive(Clone, Debug)]
struct DropCounted(u64, Arc<AtomicUsize>, Priority);

impl Drop for DropCounted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Message for DropCounted {
    fn priority(&self) -> Priority {
        self.2
    }
}

/// Publishes `n` drop-counted events of priority `prio`, each with its own correlation id.
fn publish_counted(tx: &Publisher<DropCounted>, n: u64, drops: &Arc<AtomicUsize>, prio: Priority) {
    for k in 0..n {
        tx.try_publish(CorrelationId(k), None, DropCounted(k, drops.clone(), prio))
            .unwrap();
    }
}

/// A closure that panics: the events it was lent are gone (counted as delivered), the
/// rest stay queued, nothing is delivered twice, and no payload is dropped twice (the one
/// being lent when the closure panicked is leaked by a single receiver rather than
/// dropped during the unwind).
#[test]
fn a_panicking_lend_closure_loses_only_what_it_was_lent() {
    let drops = Arc::new(AtomicUsize::new(0));
    for broadcast in [false, true] {
        drops.store(0, Ordering::SeqCst);
        let bus = EventBus::<DropCounted>::new(EventBusConfig {
            enable_zero_copy: false,
            ..cfg()
        })
        .unwrap();
        let mut rxs = one_or_broadcast(&bus, broadcast);
        let tx = bus.publisher("t");
        publish_counted(&tx, 10, &drops, Priority::Normal);
        let mut seen = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rxs[0].try_recv_with(100, |e| {
                seen.push(e.payload.0);
                if e.payload.0 == 3 {
                    panic!("handler bug");
                }
            })
        }));
        assert!(r.is_err());
        let info = rxs[0]
            .try_recv_with(100, |e| seen.push(e.payload.0))
            .unwrap();
        assert_eq!(info.received, 6);
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "broadcast: {broadcast}");
        assert_eq!(bus.metrics().total().delivered, 10);
        if !broadcast {
            // Lent values are dropped in place, once each; the panicking one leaked.
            assert_eq!(drops.load(Ordering::SeqCst), 9);
        }
        drop(rxs);
        drop(tx);
        drop(bus);
        let want = if broadcast { 10 } else { 9 };
        assert_eq!(drops.load(Ordering::SeqCst), want, "broadcast: {broadcast}");
    }
}

/// The starvation guard counts the events lent before a closure panicked: with a limit
/// of 8, a lower lane is served after at most 8 consecutive events of the top lane, the
/// ones lent before the panic included. Checked for a Block top lane (a run through its
/// ring) and a Shed one (one pop at a time).
#[test]
fn a_panicking_lend_closure_does_not_reset_the_starvation_guard() {
    for (top, top_policy) in [
        (Priority::High, OverflowPolicy::Block),
        (Priority::Normal, OverflowPolicy::ShedOldest),
    ] {
        for panic_at in 1..=8u64 {
            let overflow = OverflowPolicies {
                normal: top_policy,
                ..Default::default()
            };
            let bus = new_bus(EventBusConfig {
                shard_count: 1,
                broadcast_capacity: 64,
                starvation_limit: 8,
                overflow,
                ..cfg()
            });
            let mut rx = bus.subscribe(Filter::all());
            let tx = bus.publisher("t");
            for seq in 0..40 {
                tx.try_publish(CorrelationId(1), None, ev(top, seq))
                    .unwrap();
            }
            tx.try_publish(CorrelationId(1), None, ev(Priority::Low, 0))
                .unwrap();
            let mut seen = Vec::new();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rx.try_recv_with(100, |e| {
                    seen.push(e.priority);
                    if seen.len() as u64 == panic_at {
                        panic!("handler bug");
                    }
                })
            }));
            assert!(r.is_err());
            assert_eq!(seen, vec![top; panic_at as usize]);
            while !seen.contains(&Priority::Low) {
                let e = rx.try_recv().expect("queued events left");
                seen.push(e.priority);
            }
            let before_low = seen.len() - 1;
            assert!(
                (panic_at as usize..=8).contains(&before_low),
                "{top:?} top lane, panic at event {panic_at}: the Low event came after \
                 {before_low} {top:?} events (limit 8)"
            );
        }
    }
}

/// A receiver dropped right after its closure panicked: what it was lent still counts as
/// delivered (deliveries are counted when they are lent, before its counters are
/// retired).
#[test]
fn deliveries_of_a_panicking_lend_survive_the_receivers_drop() {
    for broadcast in [false, true] {
        let bus = new_bus(cfg());
        let mut rxs = one_or_broadcast(&bus, broadcast);
        let tx = bus.publisher("t");
        for k in 0..10 {
            tx.try_publish(CorrelationId(1), None, ev(Priority::Normal, k))
                .unwrap();
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rxs[0].try_recv_with(100, |e| assert!(e.payload.seq < 3, "handler bug"))
        }));
        assert!(r.is_err());
        let first = rxs.remove(0);
        drop(first);
        let m = bus.metrics();
        assert_eq!(m.total().delivered, 4, "broadcast: {broadcast}");
        assert_eq!(m.total().published, 10);
    }
}

/// A broadcast receiver's `try_recv_batch` clones events into the buffer; when a clone
/// panics mid-batch, the events taken before it count as delivered (depth and delivered
/// stay consistent), and the one whose clone panicked is received next time.
#[test]
fn a_panicking_clone_mid_batch_keeps_the_counts_of_what_was_taken() {
    #[derive(Debug)]
    struct Brittle(u64);
    impl Clone for Brittle {
        fn clone(&self) -> Self {
            if self.0 == 3 && BRITTLE.swap(false, Ordering::SeqCst) {
                panic!("clone of 3");
            }
            Brittle(self.0)
        }
    }
    static BRITTLE: AtomicBool = AtomicBool::new(true);
    impl Message for Brittle {
        fn priority(&self) -> Priority {
            Priority::Normal
        }
    }
    let bus = EventBus::<Brittle>::new(EventBusConfig {
        shard_count: 1,
        ..cfg()
    })
    .expect("valid config");
    let mut rxs = bus.subscribe_broadcast(Filter::all(), 2);
    let tx = bus.publisher("t");
    for seq in 0..6 {
        tx.try_publish(CorrelationId(1), None, Brittle(seq))
            .unwrap();
    }
    let mut buf = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rxs[0].try_recv_batch(&mut buf, 100)
    }));
    assert!(r.is_err(), "the clone of 3 panics");
    assert_eq!(
        buf.iter().map(|e| e.payload.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let m = bus.metrics();
    // Member 0 took three, member 1 none yet.
    assert_eq!(m.total().delivered, 3);
    // The rest is still there, the one whose clone panicked first.
    buf.clear();
    rxs[0].try_recv_batch(&mut buf, 100).unwrap();
    assert_eq!(
        buf.iter().map(|e| e.payload.0).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let mut other = Vec::new();
    rxs[1].try_recv_batch(&mut other, 100).unwrap();
    assert_eq!(other.len(), 6);
    let m = bus.metrics();
    assert_eq!(m.total().delivered, 12);
    assert_eq!(m.total().depth, 0);
}

/// A publish whose payload's `Clone` panics partway through a copy fan-out: the
/// subscriptions it was already committed to have it, the others never see it (their
/// claims are given back), the publish panics (its caller knows it failed), and
/// nothing is wedged: every lane's room comes back, later events reach everyone, and
/// depth returns to zero.
#[test]
fn a_payload_clone_panicking_mid_fan_out_wedges_nothing() {
    #[derive(Debug)]
    struct Brittle(u64);
    // Clones left before one panics (`u64::MAX`: never).
    static CLONES_LEFT: AtomicU64 = AtomicU64::new(u64::MAX);
    impl Clone for Brittle {
        fn clone(&self) -> Self {
            if CLONES_LEFT.fetch_sub(1, Ordering::SeqCst) == 0 {
                CLONES_LEFT.store(u64::MAX, Ordering::SeqCst);
                panic!("clone of {}", self.0);
            }
            Brittle(self.0)
        }
    }
    impl Message for Brittle {
        fn priority(&self) -> Priority {
            Priority::Normal
        }
    }
    let capacity = 4;
    let bus = EventBus::<Brittle>::new(EventBusConfig {
        shard_count: 1,
        broadcast_capacity: capacity,
        // Copies, not pooled slots: each subscription but the last gets a clone.
        enable_zero_copy: false,
        ..cfg()
    })
    .expect("valid config");
    let mut rxs: Vec<Receiver<Brittle>> = (0..3).map(|_| bus.subscribe(Filter::all())).collect();
    let tx = bus.publisher("t");
    tx.try_publish(CorrelationId(1), None, Brittle(0)).unwrap();
    // The first clone (for the first subscription) succeeds, the second panics.
    CLONES_LEFT.store(1, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tx.try_publish(CorrelationId(1), None, Brittle(1))
    }));
    assert!(r.is_err(), "the publish panics with the clone");
    // The claims given back leave no hole and hold no room: two more fill the first
    // queue (the one that has event 1), the others keep one slot free.
    for seq in 2..capacity as u64 {
        tx.try_publish(CorrelationId(1), None, Brittle(seq))
            .unwrap();
    }
    assert!(matches!(
        tx.try_publish(CorrelationId(1), None, Brittle(99)),
        Err(PublishError::Full(_))
    ));
    // Counted as queued where committed: 4 + 3 + 3. (The id of event 1 was taken before
    // its clones, so it counts as published, as through any path.)
    let m = bus.metrics().total();
    assert_eq!((m.depth, m.published), (10, 4));
    let seen: Vec<Vec<u64>> = rxs
        .iter_mut()
        .map(|rx| {
            let mut got = Vec::new();
            rx.try_recv_with(100, |e| got.push(e.payload.0)).unwrap();
            got
        })
        .collect();
    assert_eq!(seen[0], [0, 1, 2, 3], "committed before the panic");
    assert_eq!(
        seen[1],
        [0, 2, 3],
        "never saw the event whose clone panicked"
    );
    assert_eq!(seen[2], [0, 2, 3]);
    // Drained: a whole queue's worth fits again in every lane.
    for seq in 10..10 + capacity as u64 {
        tx.try_publish(CorrelationId(1), None, Brittle(seq))
            .unwrap();
    }
    for rx in rxs.iter_mut() {
        let mut got = Vec::new();
        rx.try_recv_with(100, |e| got.push(e.payload.0)).unwrap();
        assert_eq!(got, [10, 11, 12, 13]);
    }
    let m = bus.metrics().total();
    assert_eq!(m.depth, 0);
    assert_eq!(m.published, 8);
    assert_eq!(m.delivered, 4 + 3 + 3 + 3 * 4);
    assert_eq!(m.shed, 0);
}

/// A batch publish whose payload's `Clone` panics in the fan-out of its second event:
/// the receivers waiting on the subscriptions it committed to are woken as the publish
/// unwinds (the batch gathers its wake-ups for its end, and the end comes early).
#[test]
fn a_batch_unwinding_from_a_panicking_clone_still_wakes_its_receivers() {
    #[derive(Debug)]
    struct Brittle(u64);
    impl Clone for Brittle {
        fn clone(&self) -> Self {
            // The second event's second clone.
            if self.0 == 2 && SECOND_CLONE.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("clone of {}", self.0);
            }
            Brittle(self.0)
        }
    }
    static SECOND_CLONE: AtomicU64 = AtomicU64::new(0);
    impl Message for Brittle {
        fn priority(&self) -> Priority {
            Priority::High
        }
    }
    let bus = EventBus::<Brittle>::new(EventBusConfig {
        enable_zero_copy: false,
        ..cfg()
    })
    .expect("valid config");
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let mut rx = bus.subscribe(Filter::all());
            std::thread::spawn(move || {
                rt().block_on(async {
                    let first = tokio::time::timeout(SAFETY, rx.recv())
                        .await
                        .expect("receiver never woken")
                        .unwrap();
                    let mut got = vec![first.payload.0];
                    // Whatever else was committed by then is there already.
                    while let Ok(e) = rx.try_recv() {
                        got.push(e.payload.0);
                    }
                    got
                })
            })
        })
        .collect();
    // The receivers are asleep before the batch is published.
    std::thread::sleep(Duration::from_millis(50));
    let tx = bus.publisher("b");
    let mut batch: VecDeque<Outgoing<Brittle>> = [1, 2, 3]
        .map(|seq| Outgoing {
            correlation: CorrelationId(seq % 2),
            causation: None,
            payload: Brittle(seq),
        })
        .into();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tx.try_publish_batch(&mut batch)
    }));
    assert!(r.is_err(), "the batch panics with the clone");
    let got: Vec<Vec<u64>> = waiting.into_iter().map(|w| w.join().unwrap()).collect();
    // Event 1 everywhere; event 2 where its clone was committed before the panic: the
    // first subscription only.
    assert_eq!(got, [vec![1, 2], vec![1], vec![1]]);
    assert_eq!(bus.metrics().total().depth, 0);
}

/// A payload whose `Clone` closes the bus, in the middle of a fan-out that claimed before
/// the close: the publish is acknowledged, so every receiver gets the event before it
/// sees `Closed`.
#[test]
fn a_fan_out_acknowledged_across_a_close_reaches_every_receiver() {
    type Armed = Arc<Mutex<Option<EventBus<Closer>>>>;
    #[derive(Debug)]
    struct Closer(u64, Armed);
    impl Clone for Closer {
        fn clone(&self) -> Self {
            if let Some(bus) = self.1.lock().unwrap().take() {
                bus.close();
            }
            Closer(self.0, self.1.clone())
        }
    }
    impl Message for Closer {
        fn priority(&self) -> Priority {
            Priority::High
        }
    }
    let bus = EventBus::<Closer>::new(EventBusConfig {
        // Copies: the publish clones the payload for every subscription but the last.
        enable_zero_copy: false,
        ..cfg()
    })
    .expect("valid config");
    let mut rxs: Vec<Receiver<Closer>> = (0..3).map(|_| bus.subscribe(Filter::all())).collect();
    let tx = bus.publisher("c");
    let armed: Armed = Arc::new(Mutex::new(None));
    tx.try_publish(CorrelationId(1), None, Closer(0, armed.clone()))
        .unwrap();
    // Armed: the next clone closes the bus, after the publish claimed its slots.
    *armed.lock().unwrap() = Some(bus.clone());
    let r = tx.try_publish(CorrelationId(1), None, Closer(1, armed.clone()));
    assert!(r.is_ok(), "{r:?}");
    assert!(bus.is_closed());
    assert!(matches!(
        tx.try_publish(CorrelationId(1), None, Closer(2, armed.clone())),
        Err(PublishError::Closed(_))
    ));
    for rx in rxs.iter_mut() {
        let mut got = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(e) => got.push(e.payload.0),
                Err(TryRecvError::Closed) => break,
                Err(e) => panic!("{e:?} after {got:?}"),
            }
        }
        assert_eq!(got, [0, 1]);
    }
}

/// A payload whose `Drop` publishes a Critical event (once): a single receiver drops each
/// lent value before it lends the next, so the Critical event is next, as it would be
/// between two `try_recv` calls.
#[test]
fn what_a_lent_payloads_drop_publishes_is_seen_before_the_next_event() {
    struct Loud {
        seq: u64,
        prio: Priority,
        on_drop: Option<Publisher<Loud>>,
    }
    impl Clone for Loud {
        fn clone(&self) -> Self {
            Loud {
                seq: self.seq,
                prio: self.prio,
                on_drop: None,
            }
        }
    }
    impl Drop for Loud {
        fn drop(&mut self) {
            if let Some(tx) = self.on_drop.take() {
                let critical = Loud {
                    seq: 100,
                    prio: Priority::Critical,
                    on_drop: None,
                };
                tx.try_publish(CorrelationId(9), None, critical).ok();
            }
        }
    }
    impl Message for Loud {
        fn priority(&self) -> Priority {
            self.prio
        }
    }
    let bus = EventBus::<Loud>::new(cfg()).unwrap();
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..3 {
        let on_drop = (seq == 0).then(|| bus.publisher("drop"));
        let e = Loud {
            seq,
            prio: Priority::Normal,
            on_drop,
        };
        assert!(tx.try_publish(CorrelationId(seq), None, e).is_ok());
    }
    let mut order = Vec::new();
    rx.try_recv_with(100, |e| order.push(e.payload.seq))
        .unwrap();
    assert_eq!(order, [0, 100, 1, 2]);
}

#[test]
fn recv_with_waits_for_events_and_ends_at_close() {
    rt().block_on(async {
        let bus = new_bus(cfg());
        let mut rx = bus.subscribe(Filter::all());
        let tx = bus.publisher("t");
        let consumer = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                match rx.recv_with(|e| seen.push(e.payload.seq)).await {
                    Ok(_) => {}
                    Err(RecvError::Closed) => return seen,
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        for k in 0..100 {
            tx.publish(CorrelationId(k), None, ev(Priority::Normal, k))
                .await
                .unwrap();
            if k % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        bus.close();
        let seen = consumer.await.unwrap();
        assert_eq!(seen.len(), 100);
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    });
}

/// A higher-priority event that becomes ready in the middle of a batch is lent next: the
/// closure itself publishes a Critical (then a High) event while Normal ones are drained.
#[test]
fn a_higher_lane_that_becomes_ready_mid_batch_is_served_next() {
    let bus = new_bus(cfg());
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    for seq in 0..10 {
        tx.try_publish(CorrelationId(seq), None, ev(Priority::Normal, seq))
            .unwrap();
    }
    let mut order = Vec::new();
    let info = rx
        .try_recv_with(100, |e| {
            order.push((e.priority, e.payload.seq));
            if e.payload.seq == 2 && e.priority == Priority::Normal {
                tx.try_publish(CorrelationId(7), None, ev(Priority::Critical, 100))
                    .unwrap();
            }
            if e.payload.seq == 5 && e.priority == Priority::Normal {
                tx.try_publish(CorrelationId(7), None, ev(Priority::Low, 300))
                    .unwrap();
                tx.try_publish(CorrelationId(7), None, ev(Priority::High, 200))
                    .unwrap();
            }
        })
        .unwrap();
    assert_eq!(info.received, 13);
    use Priority::*;
    assert_eq!(
        order,
        [
            (Normal, 0),
            (Normal, 1),
            (Normal, 2),
            (Critical, 100),
            (Normal, 3),
            (Normal, 4),
            (Normal, 5),
            (High, 200),
            (Normal, 6),
            (Normal, 7),
            (Normal, 8),
            (Normal, 9),
            (Low, 300),
        ]
    );
}

/// A receiver drained from a destructor while another panic unwinds (a shutdown path):
/// the values it lends are still dropped, not leaked.
#[test]
fn lending_during_an_unwind_still_drops_what_it_lends() {
    struct DrainOnDrop(Receiver<DropCounted>, Arc<AtomicUsize>);
    impl Drop for DrainOnDrop {
        fn drop(&mut self) {
            let seen = &self.1;
            while let Ok(info) = self.0.try_recv_with(4, |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            }) {
                if info.received == 0 {
                    break;
                }
            }
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let bus = EventBus::<DropCounted>::new(cfg()).unwrap();
    let rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    publish_counted(&tx, 10, &drops, Priority::Normal);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _drain = DrainOnDrop(rx, seen.clone());
        panic!("something else failed");
    }));
    assert!(r.is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 10);
    assert_eq!(drops.load(Ordering::SeqCst), 10);
}

/// The same for a Low (shed) lane: the event the closure panicked on is leaked, not
/// dropped during the unwind; the others are dropped once each.
#[test]
fn a_panicking_lend_closure_on_a_shed_lane_drops_the_rest_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let bus = EventBus::<DropCounted>::new(cfg()).unwrap();
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("t");
    publish_counted(&tx, 6, &drops, Priority::Low);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rx.try_recv_with(100, |e| assert!(e.payload.0 != 2, "handler bug"))
    }));
    assert!(r.is_err());
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    let info = rx.try_recv_with(100, |_| ()).unwrap();
    assert_eq!(info.received, 3);
    assert_eq!(drops.load(Ordering::SeqCst), 5);
    drop(rx);
    drop(bus);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        5,
        "the one being lent is leaked"
    );
}
