//! Loom model tests of the envelope pool: handles of one slot dropped on several threads,
//! a slot recycled by one thread while another checks one out, a handle outliving the
//! pool's owner. Every interleaving up to a preemption bound, with loom's race checker on
//! every access to an envelope and its leak check on the pool's `Arc`.
//!
//! Run with `RUSTFLAGS="--cfg bus_loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! call-engine-bus --lib --release loom_` (what `cargo xtask test` does). Under loom the free list is a mutex-guarded
//! deque instead of crossbeam's `ArrayQueue` (see `sync::BoundedQueue`): what is checked
//! is the pool's own protocol (reference counts, the last handle's drop, the pool kept
//! alive by its slots), given a correct queue.

use super::{Pool, SharedRef};
use crate::envelope::Envelope;
use crate::sync::model;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::types::{CorrelationId, EventId, Priority, Timestamp};
use loom::thread;
use std::collections::BTreeSet;

/// A payload that counts its drops.
struct Payload {
    v: u64,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn env(v: u64, dropped: &Arc<AtomicUsize>) -> Envelope<Payload> {
    Envelope {
        id: EventId(v),
        correlation: CorrelationId(1),
        causation: None,
        source: "loom",
        priority: Priority::Normal,
        timestamp: Timestamp(0),
        payload: Payload {
            v,
            dropped: dropped.clone(),
        },
    }
}

/// Reads a handle's envelope, then drops the handle.
fn read_and_drop(h: SharedRef<Payload>) -> u64 {
    let v = h.payload.v;
    drop(h);
    v
}

/// Two handles of one slot dropped on two threads: the envelope is read by both and
/// dropped once, by whichever drops last, after both reads; the slot goes back to the
/// free list and gives back its count of the pool.
#[test]
fn loom_last_handle_drops_the_envelope_once() {
    let outcomes = model(3, || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(2);
        let mut handles = Pool::checkout(&pool, env(7, &dropped), 2);
        let (Some(a), Some(b)) = (handles.take(), handles.take()) else {
            panic!("two handles");
        };
        drop(handles);
        let other = thread::spawn(move || read_and_drop(a));
        assert_eq!(read_and_drop(b), 7);
        // 1 if this thread's handle was the last, 0 if the other's is still alive.
        let main_was_last = dropped.load(Ordering::SeqCst);
        assert_eq!(other.join().unwrap(), 7);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped once");
        assert_eq!(pool.metrics().free, 1, "the slot is back on the free list");
        assert_eq!(Arc::strong_count(&pool), 1, "the slot gave its count back");
        main_was_last
    });
    // Each thread was the last one in some interleavings.
    assert_eq!(outcomes, BTreeSet::from([0, 1]));
}

/// A slot recycled on one thread (its last handle dropped) while another thread checks
/// one out: the checkout gets the recycled slot or a new one, and the new envelope is
/// written only after the old one's last read and drop (loom's race checker).
#[test]
fn loom_recycled_slot_is_rewritten_after_its_last_reader() {
    let outcomes = model(3, || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(1);
        let mut first = Pool::checkout(&pool, env(1, &dropped), 1);
        let Some(a) = first.take() else {
            panic!("one handle");
        };
        let recycler = thread::spawn(move || read_and_drop(a));
        let mut second = Pool::checkout(&pool, env(2, &dropped), 1);
        let Some(b) = second.take() else {
            panic!("one handle");
        };
        assert_eq!(read_and_drop(b), 2);
        assert_eq!(recycler.join().unwrap(), 1);
        drop((first, second));
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        let m = pool.metrics();
        assert_eq!(m.allocated, 1 + 1 - m.reused, "{m:?}");
        assert_eq!(Arc::strong_count(&pool), 1);
        m.reused as usize
    });
    // Both ways: the checkout found the recycled slot, or allocated a second one.
    assert_eq!(outcomes, BTreeSet::from([0, 1]));
}

/// A handle outlives the pool's owner: whichever of the two goes last frees the pool,
/// after the envelope's drop; nothing leaks (loom checks its `Arc`s at the end).
#[test]
fn loom_handle_outlives_the_pool_owner() {
    let outcomes = model(3, || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(1);
        let mut handles = Pool::checkout(&pool, env(3, &dropped), 1);
        let Some(a) = handles.take() else {
            panic!("one handle");
        };
        drop(handles);
        let reader = thread::spawn(move || read_and_drop(a));
        // The owner on a thread of its own too (loom explores spawned threads'
        // interleavings more thoroughly than the main thread's). It sees 2 while the
        // reader's slot still holds the pool, 1 once the slot gave its count back.
        let owner = thread::spawn(move || {
            let count = Arc::strong_count(&pool);
            drop(pool);
            count
        });
        let count = owner.join().unwrap();
        assert_eq!(reader.join().unwrap(), 3);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        count
    });
    // The owner went first (the reader freed the pool) and last.
    assert_eq!(outcomes, BTreeSet::from([1, 2]));
}

/// Handles never taken (a target that disappeared mid-publish) are released when the
/// factory drops, racing with a taken handle dropped on another thread: the envelope is
/// dropped once, the slot returned once.
#[test]
fn loom_untaken_handles_are_released() {
    let outcomes = model(3, || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(2);
        let mut handles = Pool::checkout(&pool, env(4, &dropped), 3);
        let Some(a) = handles.take() else {
            panic!("one handle");
        };
        let reader = thread::spawn(move || read_and_drop(a));
        drop(handles);
        // 1 if the untaken handles were the last, 0 if the reader's is still alive.
        let factory_was_last = dropped.load(Ordering::SeqCst);
        assert_eq!(reader.join().unwrap(), 4);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert_eq!(pool.metrics().free, 1);
        assert_eq!(Arc::strong_count(&pool), 1);
        factory_was_last
    });
    assert_eq!(outcomes, BTreeSet::from([0, 1]));
}
