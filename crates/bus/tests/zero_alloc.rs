//! Steady-state publish and receive allocate nothing.
//!
//! A counting global allocator wraps the system allocator. Counting is per thread (a
//! const-initialised thread-local flag and counter, which themselves never allocate),
//! so allocations by other test threads or runtime threads are not counted. This file
//! holds a single `#[test]` so the scenarios run one after another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;

struct CountingAlloc;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: never panic inside the allocator (e.g. during thread teardown).
    let armed = ARMED.try_with(Cell::get).unwrap_or(false);
    if armed {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: defers every operation to `System`, only counting calls.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations made by this thread while running `f`.
fn count_allocs<R>(f: impl FnOnce() -> R) -> (u64, R) {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (COUNT.with(Cell::get), r)
}

/// A 64-byte `Copy` payload.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct P64 {
    seq: u64,
    data: [u64; 7],
}

const _: () = assert!(std::mem::size_of::<P64>() == 64);

impl Message for P64 {
    fn priority(&self) -> Priority {
        // All four lanes get traffic; none overflows (one event in flight at a time).
        Priority::ALL[(self.seq % 4) as usize]
    }
}

fn p(seq: u64) -> P64 {
    P64 {
        seq,
        data: [seq; 7],
    }
}

const WARMUP: u64 = 10_000;
const ITERS: u64 = 100_000;

fn config(history_capacity: usize) -> EventBusConfig {
    EventBusConfig {
        history_capacity,
        ..EventBusConfig::default()
    }
}

/// Runs `step(i)` for the warm-up events, then counts what the next `ITERS` allocate.
fn steady_allocs(mut step: impl FnMut(u64)) -> u64 {
    for i in 0..WARMUP {
        step(i);
    }
    count_allocs(|| {
        for i in WARMUP..WARMUP + ITERS {
            step(i);
        }
    })
    .0
}

/// (a) one subscriber, try_publish + try_recv.
fn single_subscriber(history: usize) -> u64 {
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("zero-alloc");
    let step = |i: u64| {
        let id = tx.try_publish(CorrelationId(i % 64), None, p(i)).unwrap();
        let e = rx.try_recv().unwrap();
        assert_eq!(e.id, id);
        assert_eq!(e.payload, p(i));
        assert!(!e.is_shared());
    };
    let n = steady_allocs(step);
    assert_eq!(bus.metrics().total().delivered, WARMUP + ITERS);
    n
}

/// (b) four subscribers, zero-copy fan-out through pooled slots.
fn fan_out(history: usize) -> u64 {
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rxs: Vec<_> = (0..4).map(|_| bus.subscribe(Filter::all())).collect();
    let tx = bus.publisher("zero-alloc");
    let mut step = |i: u64| {
        let id = tx.try_publish(CorrelationId(i % 64), None, p(i)).unwrap();
        for rx in rxs.iter_mut() {
            let e = rx.try_recv().unwrap();
            assert_eq!(e.id, id);
            assert_eq!(e.payload.seq, i);
            assert!(e.is_shared());
        }
    };
    for i in 0..WARMUP {
        step(i);
    }
    let before = bus.metrics().pool;
    let (n, ()) = count_allocs(|| {
        for i in WARMUP..WARMUP + ITERS {
            step(i);
        }
    });
    let after = bus.metrics().pool;
    assert_eq!(after.allocated, before.allocated, "pool allocated slots");
    assert_eq!(after.reused, before.reused + ITERS);
    n
}

/// (f) a broadcast subscription of 4 receivers: one shared queue, each receiver gets
/// its own copy.
fn broadcast(history: usize) -> u64 {
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rxs = bus.subscribe_broadcast(Filter::all(), 4);
    let tx = bus.publisher("zero-alloc");
    let step = |i: u64| {
        let id = tx.try_publish(CorrelationId(i % 64), None, p(i)).unwrap();
        for rx in rxs.iter_mut() {
            let e = rx.try_recv().unwrap();
            assert_eq!((e.id, e.payload), (id, p(i)));
        }
    };
    let n = steady_allocs(step);
    assert_eq!(bus.metrics().total().delivered, 4 * (WARMUP + ITERS));
    n
}

/// (g) events lent in place (`try_recv_with`) to three subscribers (zero-copy fan-out)
/// and a broadcast subscription of two receivers.
fn lent(history: usize) -> u64 {
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rxs = vec![bus.subscribe(Filter::all())];
    let mut fan: Vec<_> = (0..2).map(|_| bus.subscribe(Filter::all())).collect();
    let mut bcast = bus.subscribe_broadcast(Filter::all(), 2);
    rxs.append(&mut fan);
    rxs.append(&mut bcast);
    let tx = bus.publisher("zero-alloc");
    let step = |i: u64| {
        let ev = p(i);
        tx.try_publish(CorrelationId(i % 64), None, ev).unwrap();
        for rx in rxs.iter_mut() {
            let mut got = None;
            let info = rx.try_recv_with(8, |e| got = Some(e.payload)).unwrap();
            assert_eq!((info.received, got), (1, Some(ev)));
        }
    };
    let n = steady_allocs(step);
    assert_eq!(bus.metrics().total().delivered, 5 * (WARMUP + ITERS));
    n
}

/// (c) batch publish and batch receive with pre-allocated buffers.
fn batches(history: usize) -> u64 {
    const BATCH: u64 = 32;
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rxs: Vec<_> = (0..2).map(|_| bus.subscribe(Filter::all())).collect();
    let tx = bus.publisher("zero-alloc");
    let mut out: VecDeque<Outgoing<P64>> = VecDeque::with_capacity(BATCH as usize);
    let mut buf: Vec<Event<P64>> = Vec::with_capacity(BATCH as usize);
    let mut step = |round: u64| {
        for k in 0..BATCH {
            let seq = round * BATCH + k;
            out.push_back(Outgoing {
                correlation: CorrelationId(seq % 64),
                causation: None,
                payload: p(seq),
            });
        }
        assert_eq!(tx.try_publish_batch(&mut out), Ok(BATCH as usize));
        for rx in rxs.iter_mut() {
            let info = rx.try_recv_batch(&mut buf, BATCH as usize).unwrap();
            assert_eq!((info.received, info.missed), (BATCH as usize, 0));
            buf.clear();
        }
    };
    for r in 0..WARMUP / BATCH {
        step(r);
    }
    let (n, ()) = count_allocs(|| {
        for r in WARMUP / BATCH..(WARMUP + ITERS) / BATCH {
            step(r);
        }
    });
    assert_eq!(
        bus.metrics().total().published,
        (WARMUP + ITERS) / BATCH * BATCH
    );
    n
}

/// (d) async publish + recv inside a current-thread tokio runtime built beforehand.
fn async_loop(history: usize, subscribers: usize) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rxs: Vec<_> = (0..subscribers)
        .map(|_| bus.subscribe(Filter::all()))
        .collect();
    let tx = bus.publisher("zero-alloc");
    runtime.block_on(async {
        for i in 0..WARMUP {
            let id = tx.publish(CorrelationId(i % 64), None, p(i)).await.unwrap();
            for rx in rxs.iter_mut() {
                assert_eq!(rx.recv().await.unwrap().id, id);
            }
        }
        COUNT.with(|c| c.set(0));
        ARMED.with(|a| a.set(true));
        for i in WARMUP..WARMUP + ITERS {
            let id = tx.publish(CorrelationId(i % 64), None, p(i)).await.unwrap();
            for rx in rxs.iter_mut() {
                let e = rx.recv().await.unwrap();
                assert_eq!(e.id, id);
                assert_eq!(e.payload.seq, i);
            }
        }
        ARMED.with(|a| a.set(false));
        COUNT.with(Cell::get)
    })
}

/// (e) async, wake path: a spawned receiver task is parked in `recv()` (registered
/// with the bus's notifier) when each event is published, so every receive goes through
/// a wake-up. Both tasks run on this thread (current-thread runtime).
fn async_wake_path(history: usize) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bus = EventBus::<P64>::new(config(history)).unwrap();
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("zero-alloc");
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    runtime.block_on(async move {
        let receiver = tokio::spawn(async move {
            for i in 0..WARMUP + ITERS {
                let e = rx.recv().await.unwrap();
                assert_eq!(e.payload.seq, i);
                r.store(i + 1, Ordering::Release);
            }
            // Hand the receiver back: dropping it here would unsubscribe (which
            // rebuilds the routing table) inside the counted window.
            rx
        });
        let mut n = 0;
        for i in 0..WARMUP + ITERS {
            if i == WARMUP {
                COUNT.with(|c| c.set(0));
                ARMED.with(|a| a.set(true));
            }
            // the receiver task is parked in recv() now
            tx.publish(CorrelationId(i % 64), None, p(i)).await.unwrap();
            while received.load(Ordering::Acquire) <= i {
                tokio::task::yield_now().await;
            }
            if i + 1 == WARMUP + ITERS {
                ARMED.with(|a| a.set(false));
                n = COUNT.with(Cell::get);
            }
        }
        let rx = receiver.await.unwrap();
        assert_eq!(bus.metrics().total().delivered, WARMUP + ITERS);
        drop(rx);
        n
    })
}

#[test]
fn steady_state_publish_and_receive_allocate_nothing() {
    // The counter itself works (otherwise every 0 below would be meaningless).
    let (n, v) = count_allocs(|| vec![1u8; 100]);
    assert!(n >= 1, "the counting allocator does not count");
    drop(v);

    // The history ring is off by default; the variant with it on must allocate nothing too.
    let with_history = 1024;
    for history in [0usize, with_history] {
        let results = [
            (
                "(a) try_publish + try_recv, 1 subscriber",
                single_subscriber(history),
            ),
            ("(b) zero-copy fan-out, 4 subscribers", fan_out(history)),
            ("(c) try_publish_batch + try_recv_batch", batches(history)),
            (
                "(d) async publish + recv, 1 subscriber",
                async_loop(history, 1),
            ),
            (
                "(d) async publish + recv, 4 subscribers",
                async_loop(history, 4),
            ),
            ("(e) async recv woken by publish", async_wake_path(history)),
            (
                "(f) broadcast subscription, 4 receivers",
                broadcast(history),
            ),
            ("(g) events lent in place (try_recv_with)", lent(history)),
        ];
        for (name, allocs) in results {
            assert_eq!(
                allocs, 0,
                "{name} with history_capacity {history}: {allocs} allocations in {ITERS} iterations"
            );
        }
    }
}
