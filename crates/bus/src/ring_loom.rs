//! Loom model tests of the ring: every interleaving of publishers and consumers (up to a
//! preemption bound), with loom's weak-memory model for the atomics and its race checker
//! on every access to a value cell.
//!
//! Run with `RUSTFLAGS="--cfg bus_loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! call-engine-bus --lib --release loom_` (what `cargo xtask test` does). Under
//! `bus_loom` the ring's atomics are loom's, which only work inside `loom::model`: the
//! crate's other tests are not run in that build.
//!
//! What loom does not model: SeqCst as a total order (it treats SeqCst accesses like
//! AcqRel), so the receiver's sleep check, which relies on SeqCst, is not tested here;
//! `per_correlation_order_holds_with_concurrent_publishers` and the wake tests in
//! `tests/bus_behaviour.rs` exercise it on real threads.

use super::Ring;
use crate::sync::{model, Arc, AtomicUsize, Ordering};
use loom::thread;
use std::collections::BTreeSet;

/// A value that counts how many were made (also by `clone`) and how many dropped.
#[derive(Debug)]
struct Tracked {
    v: u64,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

impl Counts {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            made: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        })
    }
}

/// A new tracked value.
fn make(counts: &Arc<Counts>, v: u64) -> Tracked {
    counts.made.fetch_add(1, Ordering::SeqCst);
    Tracked {
        v,
        counts: counts.clone(),
    }
}

impl Counts {
    /// Drops `ring` (its last handle: every other thread is joined), then checks that
    /// every value made was dropped exactly once (none leaked, none twice).
    fn dropped_with(&self, ring: Arc<Ring<Tracked>>) {
        let Ok(ring) = Arc::try_unwrap(ring) else {
            panic!("a thread still holds the ring");
        };
        drop(ring);
        let made = self.made.load(Ordering::SeqCst);
        let dropped = self.dropped.load(Ordering::SeqCst);
        assert_eq!(made, dropped, "{made} values made, {dropped} dropped");
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        make(&self.counts, self.v)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// One attempt to publish `value`: whether it was committed. As the bus's publish path:
/// `commit_with` where the ring may hand back a previous lap's value (dropped after the
/// commit), `commit_fresh_with` otherwise.
fn try_publish<T>(ring: &Ring<T>, value: T) -> bool {
    let Some(seq) = ring.claim() else {
        return false;
    };
    // SAFETY: claimed just above.
    unsafe { commit_one(ring, seq, value) };
    true
}

/// Commits `value` for the claimed `seq` as the bus's publish paths do.
///
/// # Safety
/// `seq` was claimed on `ring` and not committed yet.
unsafe fn commit_one<T>(ring: &Ring<T>, seq: u64, value: T) {
    if ring.keeps_previous() {
        // SAFETY: forwarded; committed once.
        drop(unsafe { ring.commit_with(seq, || value) });
    } else {
        // SAFETY: as above; the ring keeps no previous value.
        unsafe { ring.commit_fresh_with(seq, || value) };
    }
}

/// Consumer `c` makes `attempts` attempts to pop, releasing after each value taken (the
/// bus releases once per receive call; one value per call makes the most releases to
/// race with).
fn pop_some<T: Clone>(ring: &Ring<T>, c: usize, attempts: usize) -> Vec<T> {
    let mut got = Vec::new();
    for _ in 0..attempts {
        // SAFETY: only this thread consumes as `c` (until it is joined), and it is
        // present.
        if let Some(v) = unsafe { ring.pop(c) } {
            got.push(v);
            ring.release(c);
        }
    }
    got
}

/// Everything left for consumer `c`, once no one else touches the ring.
fn drain<T: Clone>(ring: &Ring<T>, c: usize) -> Vec<T> {
    let mut got = Vec::new();
    // SAFETY: the other threads are joined.
    while let Some(v) = unsafe { ring.pop(c) } {
        got.push(v);
    }
    ring.release(c);
    got
}

/// Moves a ring's positions one lap on (publish and take one value per slot), so that
/// what the test publishes next reuses slots.
fn one_lap(ring: &Ring<u64>, slots: u64, consumers: usize) {
    for v in 0..slots {
        assert!(try_publish(ring, 100 + v));
        for c in 0..consumers {
            assert_eq!(pop_some(ring, c, 1), [100 + v]);
        }
    }
}

/// Runs `f` on a new model thread with its own handle on the ring.
fn on_thread<T: 'static, R: 'static>(
    ring: &Arc<Ring<T>>,
    f: impl FnOnce(&Ring<T>) -> R + 'static,
) -> thread::JoinHandle<R> {
    let ring = ring.clone();
    thread::spawn(move || f(&ring))
}

/// A publisher on its own thread (loom explores the spawned threads' interleavings more
/// thoroughly than the main thread's): one attempt for each of `vs`; returns the values
/// it committed, after `already` (those committed before).
fn publisher(
    ring: &Arc<Ring<Tracked>>,
    counts: &Arc<Counts>,
    already: &[u64],
    vs: std::ops::RangeInclusive<u64>,
) -> thread::JoinHandle<Vec<u64>> {
    let counts = counts.clone();
    let mut sent = already.to_vec();
    on_thread(ring, move |ring| {
        sent.extend(vs.filter(|v| try_publish(ring, make(&counts, *v))));
        sent
    })
}

/// Consumer `c` makes `attempts` attempts to take one value lent in place (`visit_run`,
/// as `try_recv_with` does), releasing after each: the values lent.
fn lend_some(ring: &Ring<Tracked>, c: usize, attempts: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..attempts {
        // SAFETY: only this thread consumes as `c` (until it is joined), and it is
        // present.
        if unsafe { ring.visit_run(c, 1, |t| seen.push(t.v), || false) } > 0 {
            ring.release(c);
        }
    }
    seen
}

/// What consumer `c` took while racing (`got`), then everything left for it once the
/// other threads are joined.
fn and_the_rest(ring: &Ring<Tracked>, c: usize, mut got: Vec<u64>) -> Vec<u64> {
    got.extend(values(&drain(ring, c)));
    got
}

fn values(v: &[Tracked]) -> Vec<u64> {
    v.iter().map(|t| t.v).collect()
}

/// Two publishers and one consumer on a ring of capacity 1, its slot on its second lap:
/// a claim succeeds only once the consumer released the slot's previous value, every
/// committed value is delivered once, each publisher's in its order, and every value is
/// dropped exactly once (none leaked, none twice).
#[test]
fn loom_two_publishers_one_consumer() {
    let outcomes = model(2, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(1, 1));
        assert!(try_publish(&ring, make(&counts, 0)));
        let publishers: Vec<_> = [10u64, 20]
            .into_iter()
            .map(|base| publisher(&ring, &counts, &[], base..=base + 1))
            .collect();
        let early = values(&pop_some(&ring, 0, 2));
        let sent: Vec<Vec<u64>> = publishers.into_iter().map(|p| p.join().unwrap()).collect();
        let got = and_the_rest(&ring, 0, early);
        assert_eq!(got.first(), Some(&0), "got {got:?}");
        for (base, sent) in [10u64, 20].into_iter().zip(&sent) {
            let from: Vec<u64> = got
                .iter()
                .copied()
                .filter(|v| v / 10 == base / 10)
                .collect();
            assert_eq!(&from, sent, "publisher {base}: got {got:?}");
        }
        let published = sent.iter().map(Vec::len).sum::<usize>();
        assert_eq!(got.len(), 1 + published);
        counts.dropped_with(ring);
        published
    });
    // None, one or two of the four claims found the slot released.
    assert_eq!(outcomes, BTreeSet::from([0, 1, 2]));
}

/// A consumer lending values in place (`visit_run`, as `try_recv_with` does) drops each
/// in its slot while a publisher reuses the slots; the values never read are dropped by
/// the ring.
#[test]
fn loom_lent_values_are_dropped_in_place_once() {
    let outcomes = model(3, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(2, 1));
        let publisher = publisher(&ring, &counts, &[], 0..=3);
        let mut seen = Vec::new();
        for _ in 0..2 {
            // SAFETY: the only consumer.
            if unsafe { ring.visit_run(0, 2, |t| seen.push(t.v), || false) } > 0 {
                ring.release(0);
            }
        }
        let sent = publisher.join().unwrap();
        // What was lent is what was sent, from the first, in order; the rest is left in
        // the ring, and dropped with it.
        assert_eq!(seen, sent[..seen.len()], "sent {sent:?}");
        counts.dropped_with(ring);
        sent.len() * 10 + seen.len()
    });
    // Two values always fit. Some runs lend none of them, some both; in some the
    // publisher reuses a slot the consumer released.
    assert!(
        outcomes.contains(&20) && outcomes.contains(&22),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().any(|o| o / 10 > 2), "{outcomes:?}");
}

/// A claim taken back (`unclaim`, as a publish to a subscription that closed meanwhile)
/// leaves no hole: a later publisher's value is delivered, whether the tail moved back or
/// a tombstone was left, and the ring keeps its capacity.
#[test]
fn loom_unclaim_leaves_no_hole() {
    let outcomes = model(3, || {
        let ring = Arc::new(Ring::<u64>::new(2, 1));
        let taker = on_thread(&ring, move |ring| {
            let seq = ring.claim().expect("room for two claims");
            // SAFETY: claimed just above, not committed.
            unsafe { ring.unclaim(seq) }
        });
        let publisher = on_thread(&ring, move |ring| try_publish(ring, 7));
        let mut got = pop_some(&ring, 0, 1);
        let moved_back = taker.join().unwrap();
        assert!(publisher.join().unwrap(), "two claims fit in capacity 2");
        got.extend(drain(&ring, 0));
        assert_eq!(got, [7]);
        // The whole capacity is back.
        assert!(try_publish(&ring, 8));
        assert!(try_publish(&ring, 9));
        assert_eq!(drain(&ring, 0), [8, 9]);
        usize::from(moved_back)
    });
    // Both ways: the tail moved back, and a tombstone left behind a later claim.
    assert_eq!(outcomes, BTreeSet::from([0, 1]));
}

/// A broadcast ring (two consumers, capacity 1, its slot on its second lap): each
/// consumer gets every committed value in order, a slot is reused only once both
/// released it, and the publisher drops the previous lap's value exactly once. One
/// consumer takes clones (`pop`), the other borrows in place (`visit_run`).
#[test]
fn loom_broadcast_every_consumer_gets_every_value() {
    let outcomes = model(2, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(1, 2));
        assert!(try_publish(&ring, make(&counts, 0)));
        let consumers = [
            on_thread(&ring, |ring| values(&pop_some(ring, 0, 2))),
            on_thread(&ring, |ring| lend_some(ring, 1, 2)),
        ];
        let sent = publisher(&ring, &counts, &[0], 1..=2).join().unwrap();
        for (c, consumer) in consumers.into_iter().enumerate() {
            let got = and_the_rest(&ring, c, consumer.join().unwrap());
            assert_eq!(got, sent, "consumer {c}");
        }
        counts.dropped_with(ring);
        sent.len()
    });
    // The racing claims found the slot released by both consumers, or not. (Both claims
    // winning needs three preemptions in the right places: not reached within the
    // bound, and not required.)
    assert!(
        outcomes.contains(&1) && outcomes.contains(&2),
        "{outcomes:?}"
    );
}

/// A claim taken back on a broadcast ring whose slots still hold the previous lap's
/// values: whether the tail moves back (the old value stays) or a tombstone is left (the
/// old value is taken out and dropped), both consumers get the other publisher's value,
/// and every value is dropped exactly once.
#[test]
fn loom_broadcast_take_back_over_a_previous_lap() {
    let outcomes = model(2, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(2, 2));
        for v in [10, 11] {
            assert!(try_publish(&ring, make(&counts, v)));
            for c in 0..2 {
                assert_eq!(values(&pop_some(&ring, c, 1)), [v]);
            }
        }
        let taker = on_thread(&ring, |ring| {
            let seq = ring.claim().expect("both consumers released");
            // SAFETY: claimed just above, not committed.
            unsafe { ring.unclaim(seq) }
        });
        let sent = publisher(&ring, &counts, &[], 5..=5);
        let early = [pop_some(&ring, 0, 1), pop_some(&ring, 1, 1)].map(|g| values(&g));
        let moved_back = taker.join().unwrap();
        assert_eq!(sent.join().unwrap(), [5], "a second claim fits");
        for (c, early) in early.into_iter().enumerate() {
            assert_eq!(and_the_rest(&ring, c, early), [5], "consumer {c}");
        }
        counts.dropped_with(ring);
        usize::from(moved_back)
    });
    assert_eq!(outcomes, BTreeSet::from([0, 1]));
}

/// A broadcast consumer that leaves no longer holds capacity back: the publisher goes
/// on with the one that stays, which gets every value.
#[test]
fn loom_broadcast_consumer_leaving_frees_capacity() {
    let outcomes = model(2, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(1, 2));
        assert!(try_publish(&ring, make(&counts, 0)));
        let leaver = on_thread(&ring, move |ring| {
            // SAFETY: the only consumer 1, present until `leave`.
            drop(unsafe { ring.pop(1) });
            ring.release(1);
            ring.leave(1);
        });
        let stayer = on_thread(&ring, move |ring| values(&pop_some(ring, 0, 2)));
        let sent = publisher(&ring, &counts, &[0], 1..=2).join().unwrap();
        leaver.join().unwrap();
        let got = and_the_rest(&ring, 0, stayer.join().unwrap());
        assert_eq!(got, sent);
        // With the leaver gone, the stayer's release alone gives the room back.
        assert!(try_publish(&ring, make(&counts, 3)));
        assert_eq!(values(&drain(&ring, 0)), [3]);
        counts.dropped_with(ring);
        sent.len()
    });
    assert!(
        outcomes.contains(&1) && outcomes.contains(&2),
        "{outcomes:?}"
    );
}

/// A publisher racing the consumer's release on a full ring: its claim succeeds only
/// if the release came first, and once the release is done (the consumer joined) both
/// `has_room` and `claim` see the room. Both outcomes of the race are explored.
#[test]
fn loom_room_seen_after_release() {
    let outcomes = model(3, || {
        let ring = Arc::new(Ring::<u64>::new(1, 1));
        one_lap(&ring, 1, 1);
        assert!(try_publish(&ring, 1));
        let consumer = on_thread(&ring, move |ring| pop_some(ring, 0, 1));
        let racer = on_thread(&ring, move |ring| try_publish(ring, 2));
        let early = racer.join().unwrap();
        assert_eq!(consumer.join().unwrap(), [1]);
        if !early {
            assert!(ring.has_room(), "room not seen after the release");
            assert!(try_publish(&ring, 2), "no claim after the release");
        }
        assert_eq!(drain(&ring, 0), [2]);
        usize::from(early)
    });
    // The racing claim was refused (before the release) and taken (after it).
    assert_eq!(outcomes, BTreeSet::from([0, 1]));
}

/// An abandoned claim between two values (a tombstone) is skipped, and the value after
/// it is seen whole (loom's race checker reports a read of a cell not ordered after its
/// write by the stamp's Release/Acquire pair).
#[test]
fn loom_abandoned_claim_is_skipped() {
    let outcomes = model(3, || {
        let ring = Arc::new(Ring::<u64>::new(4, 1));
        one_lap(&ring, 4, 1);
        let publisher = on_thread(&ring, move |ring| {
            assert!(try_publish(ring, 1));
            let seq = ring.claim().expect("room for a second claim");
            // SAFETY: claimed just above, committed once (as a tombstone).
            unsafe { ring.abandon(seq) };
            assert!(try_publish(ring, 3));
        });
        let mut got = pop_some(&ring, 0, 2);
        let early = got.len();
        publisher.join().unwrap();
        got.extend(drain(&ring, 0));
        assert_eq!(got, [1, 3]);
        early
    });
    // The consumer's two attempts found nothing, the first value, or both (past the
    // tombstone).
    assert_eq!(outcomes, BTreeSet::from([0, 1, 2]));
}

/// Two claims outstanding at once, committed in either order: the consumer never reads
/// past an uncommitted claim (the second sequence waits for the first), and gets both
/// values once each, whatever order they were claimed and committed in.
#[test]
fn loom_two_claims_outstanding_commit_out_of_order() {
    let outcomes = model(2, || {
        let ring = Arc::new(Ring::<u64>::new(2, 1));
        one_lap(&ring, 2, 1);
        let publishers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|v| on_thread(&ring, move |ring| assert!(try_publish(ring, v))))
            .collect();
        let mut got = pop_some(&ring, 0, 2);
        let early = got.len();
        for p in publishers {
            p.join().unwrap();
        }
        got.extend(drain(&ring, 0));
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        early
    });
    // Nothing committed yet, one, or both, when the consumer looked.
    assert_eq!(outcomes, BTreeSet::from([0, 1, 2]));
}

/// A publisher on its own thread making one attempt to claim a run of two (`claim_run`,
/// as a batch publish does) and committing values from 10 on: the values it committed.
fn run_publisher(ring: &Arc<Ring<Tracked>>, counts: &Arc<Counts>) -> thread::JoinHandle<Vec<u64>> {
    let counts = counts.clone();
    on_thread(ring, move |ring| {
        let Some((first, n)) = ring.claim_run(2) else {
            return Vec::new();
        };
        let sent: Vec<u64> = (10..10 + n).collect();
        for (k, v) in sent.iter().enumerate() {
            // SAFETY: claimed by the run, committed once each.
            unsafe { commit_one(ring, first + k as u64, make(&counts, *v)) };
        }
        sent
    })
}

/// A publisher claiming a run of two (`claim_run`, as a batch publish does) races one
/// claiming a single number, on a ring of capacity 2 on its second lap, while the
/// consumer takes a value: the run gets what there is room for (both, or the one left by
/// the single claim), every committed value is delivered once, each publisher's in its
/// order, and every value is dropped exactly once.
#[test]
fn loom_a_run_races_a_single_claim() {
    let outcomes = model(2, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(2, 1));
        for v in 0..2 {
            assert!(try_publish(&ring, make(&counts, v)));
        }
        assert_eq!(values(&pop_some(&ring, 0, 2)), [0, 1]);
        let runner = run_publisher(&ring, &counts);
        let single = publisher(&ring, &counts, &[], 20..=20);
        let early = values(&pop_some(&ring, 0, 1));
        let run = runner.join().unwrap();
        let one = single.join().unwrap();
        let got = and_the_rest(&ring, 0, early);
        for sent in [&run, &one] {
            let from: Vec<u64> = got
                .iter()
                .copied()
                .filter(|v| sent.first().is_some_and(|f| v / 10 == f / 10))
                .collect();
            assert_eq!(&from, sent, "got {got:?}");
        }
        assert_eq!(got.len(), run.len() + one.len(), "got {got:?}");
        counts.dropped_with(ring);
        10 * run.len() + one.len()
    });
    // The run first: both numbers, the single claim then finds room only if the consumer
    // released one meanwhile. The single claim first: the run gets the one number left,
    // or both if the consumer released the first meanwhile.
    assert_eq!(outcomes, BTreeSet::from([11, 20, 21]));
}

/// A run claimed on a broadcast ring (two consumers) while the slower consumer is still
/// reading the previous lap: the run gets only the room that consumer released (one
/// number, or both if it released the second meanwhile); each consumer reads every value
/// once, in order; the previous lap's values are dropped once, when their slots are
/// reused or with the ring.
#[test]
fn loom_a_run_on_a_broadcast_ring_waits_for_the_slowest() {
    let outcomes = model(2, || {
        let counts = Counts::new();
        let ring = Arc::new(Ring::<Tracked>::new(2, 2));
        for v in 0..2 {
            assert!(try_publish(&ring, make(&counts, v)));
        }
        assert_eq!(values(&pop_some(&ring, 0, 2)), [0, 1]);
        assert_eq!(values(&pop_some(&ring, 1, 1)), [0]);
        let runner = run_publisher(&ring, &counts);
        let slow = on_thread(&ring, |ring| values(&pop_some(ring, 1, 1)));
        let early = values(&pop_some(&ring, 0, 1));
        let run = runner.join().unwrap();
        let slow_got = and_the_rest(&ring, 1, slow.join().unwrap());
        let fast_got = and_the_rest(&ring, 0, early);
        assert_eq!(fast_got, run, "the fast consumer");
        let mut want_slow = vec![1];
        want_slow.extend(&run);
        assert_eq!(slow_got, want_slow, "the slow consumer");
        counts.dropped_with(ring);
        run.len()
    });
    assert_eq!(outcomes, BTreeSet::from([1, 2]));
}
