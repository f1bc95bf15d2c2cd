//! The queue behind every Block lane: a bounded ring with many publishers and exactly one
//! consumer (the receiver that owns the lane).
//!
//! Why not a general MPMC queue: a lane has one consumer, so the consumer needs no atomic
//! read-modify-write at all, and never reads the publishers' tail to decide that the ring
//! is empty (it looks at the next slot's stamp). A publisher's claim of a sequence number
//! *is* its capacity reservation, so admission and push are one compare-and-swap.
//!
//! Layout: the stamps live in their own array, and every value slot is aligned to a
//! cache line, so an event occupies whole lines that only its publisher and its consumer
//! touch.
//!
//! Protocol, for sequence number `s` (slot `s & mask`):
//! 1. A publisher claims `s` by advancing `tail` from `s` to `s + 1`, which it only does
//!    while `s - released < cap`. Since `released` never passes what the consumer has
//!    finished reading, and `cap <= slots`, the slot's previous occupant `s - slots` has
//!    been moved out.
//! 2. It writes the value, then stores the stamp `2 (s + 1)` (Release). Or, if the
//!    publish was abandoned after the claim, the tombstone stamp `2 (s + 1) + 1`: every
//!    claimed sequence is committed one way or the other, so the consumer never waits
//!    on a hole.
//! 3. The consumer, at `next = s`, reads the stamp (Acquire); `2 (s + 1)`: it moves the
//!    value out; tombstone: skips it; anything else: not committed yet (empty for now).
//! 4. The consumer publishes `released = next` once per receive call, giving the
//!    capacity back to the publishers in one store.

use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

/// One value slot, alone on its cache line(s).
#[repr(align(64))]
struct ValueSlot<T>(UnsafeCell<MaybeUninit<T>>);

/// Publishers' side.
struct Producers {
    /// Next sequence number to claim.
    tail: AtomicU64,
    /// The publishers' cached copy of `Consumer::released` (never ahead of it; stored with
    /// Release after an Acquire load of `released`, read with Acquire).
    released_seen: AtomicU64,
}

/// Consumer's side.
struct Consumer {
    /// Next sequence number to read. Written by the consumer only.
    next: AtomicU64,
    /// Sequence numbers below this are free for publishers to reuse.
    released: AtomicU64,
}

pub(crate) struct Ring<T> {
    prod: CachePadded<Producers>,
    cons: CachePadded<Consumer>,
    stamps: Box<[AtomicU64]>,
    values: Box<[ValueSlot<T>]>,
    mask: u64,
    cap: u64,
}

// SAFETY: values are moved in by exactly one publisher (the one that claimed the
// sequence) and out by the single consumer, ordered by the stamp's Release/Acquire pair;
// T only crosses threads, it is never shared.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring holding up to `cap` (≥ 1) values.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let slots = cap.next_power_of_two();
        Self {
            prod: CachePadded::new(Producers {
                tail: AtomicU64::new(0),
                released_seen: AtomicU64::new(0),
            }),
            cons: CachePadded::new(Consumer {
                next: AtomicU64::new(0),
                released: AtomicU64::new(0),
            }),
            stamps: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            values: (0..slots)
                .map(|_| ValueSlot(UnsafeCell::new(MaybeUninit::uninit())))
                .collect(),
            mask: slots as u64 - 1,
            cap: cap as u64,
        }
    }

    /// Claims the next sequence number if the ring has room. The claim must be
    /// committed with [`commit`](Self::commit) or [`abandon`](Self::abandon).
    ///
    /// The compare-and-swap is SeqCst: the receiver's sleep check relies on it (see
    /// `Receiver::wait`).
    #[inline]
    pub(crate) fn claim(&self) -> Option<u64> {
        let mut t = self.prod.tail.load(Ordering::Relaxed);
        loop {
            // Acquire/Release on the cached copy too: a publisher that reuses a slot on
            // another publisher's reading of `released` must still happen after the
            // consumer moved the slot's old value out.
            let seen = self.prod.released_seen.load(Ordering::Acquire);
            // Signed: `t` may be stale and below a fresh `released`; the CAS then fails.
            if (t.wrapping_sub(seen) as i64) >= self.cap as i64 {
                let released = self.cons.released.load(Ordering::Acquire);
                self.prod.released_seen.store(released, Ordering::Release);
                if (t.wrapping_sub(released) as i64) >= self.cap as i64 {
                    return None;
                }
            }
            match self.prod.tail.compare_exchange_weak(
                t,
                t.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(t),
                Err(now) => t = now,
            }
        }
    }

    /// Writes the value of a claimed sequence number and makes it visible.
    ///
    /// # Safety
    /// `seq` was returned by [`claim`](Self::claim) on this ring and not committed yet.
    #[inline]
    pub(crate) unsafe fn commit(&self, seq: u64, value: T) {
        let i = (seq & self.mask) as usize;
        // SAFETY: the claim gives this publisher the slot exclusively (see the module
        // docs): its previous occupant was moved out and the consumer does not read it
        // before the stamp below.
        unsafe { (*self.values[i].0.get()).write(value) };
        self.stamps[i].store(seq.wrapping_add(1) << 1, Ordering::Release);
    }

    /// Commits a claimed sequence number as a tombstone the consumer skips.
    ///
    /// # Safety
    /// As for [`commit`](Self::commit).
    #[inline]
    pub(crate) unsafe fn abandon(&self, seq: u64) {
        let i = (seq & self.mask) as usize;
        self.stamps[i].store((seq.wrapping_add(1) << 1) | 1, Ordering::Release);
    }

    /// Takes back a claim that will not be committed: if no later sequence number was
    /// claimed, the tail simply moves back (nothing is left behind); otherwise the claim
    /// is committed as a tombstone, which holds its capacity until the consumer passes
    /// it. Returns `false` in that second case (the caller wakes the consumer).
    ///
    /// # Safety
    /// As for [`commit`](Self::commit).
    #[inline]
    pub(crate) unsafe fn unclaim(&self, seq: u64) -> bool {
        if self
            .prod
            .tail
            .compare_exchange(
                seq.wrapping_add(1),
                seq,
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return true;
        }
        // SAFETY: forwarded.
        unsafe { self.abandon(seq) };
        false
    }

    /// Moves the next value out, skipping tombstones; `None` if the next sequence is not
    /// committed yet.
    ///
    /// # Safety
    /// Only the ring's single consumer may call this (the receiver owning the lane).
    #[inline]
    pub(crate) unsafe fn pop(&self) -> Option<T> {
        loop {
            let n = self.cons.next.load(Ordering::Relaxed);
            let i = (n & self.mask) as usize;
            let stamp = self.stamps[i].load(Ordering::Acquire);
            if stamp >> 1 != n.wrapping_add(1) & (u64::MAX >> 1) {
                return None;
            }
            self.cons.next.store(n.wrapping_add(1), Ordering::Relaxed);
            if stamp & 1 == 0 {
                // SAFETY: the stamp says the value of `n` was written (Acquire pairs
                // with the publisher's Release) and it is read exactly once: `next` has
                // moved past it.
                return Some(unsafe { (*self.values[i].0.get()).assume_init_read() });
            }
        }
    }

    /// Whether the next sequence is committed (a value or a tombstone).
    #[inline]
    pub(crate) fn ready(&self) -> bool {
        let n = self.cons.next.load(Ordering::Relaxed);
        let stamp = self.stamps[(n & self.mask) as usize].load(Ordering::Acquire);
        stamp >> 1 == n.wrapping_add(1) & (u64::MAX >> 1)
    }

    /// Whether anything was claimed past the consumer's position (possibly not committed
    /// yet). SeqCst: pairs with the SeqCst claim for the receiver's sleep check.
    #[inline]
    pub(crate) fn claimed_ahead(&self) -> bool {
        self.prod.tail.load(Ordering::SeqCst) != self.cons.next.load(Ordering::Relaxed)
    }

    /// Gives the capacity of everything read so far back to the publishers. Returns
    /// whether anything was released. Consumer only.
    #[inline]
    pub(crate) fn release(&self) -> bool {
        let n = self.cons.next.load(Ordering::Relaxed);
        if self.cons.released.load(Ordering::Relaxed) == n {
            return false;
        }
        self.cons.released.store(n, Ordering::SeqCst);
        true
    }

    #[cfg(test)]
    fn tail(&self) -> u64 {
        self.prod.tail.load(Ordering::Relaxed)
    }

    /// Whether a claim could succeed now.
    pub(crate) fn has_room(&self) -> bool {
        let t = self.prod.tail.load(Ordering::SeqCst);
        let r = self.cons.released.load(Ordering::SeqCst);
        (t.wrapping_sub(r) as i64) < self.cap as i64
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Exclusive access: every claim has been committed (publishers hold the ring
        // only during a publish, which commits or abandons everything it claimed).
        let tail = *self.prod.tail.get_mut();
        let mut n = *self.cons.next.get_mut();
        while n != tail {
            let i = (n & self.mask) as usize;
            if *self.stamps[i].get_mut() == n.wrapping_add(1) << 1 {
                // SAFETY: committed and never read.
                unsafe { self.values[i].0.get_mut().assume_init_drop() };
            }
            n = n.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_capacity_and_release() {
        let r = Ring::new(3);
        let a = r.claim().unwrap();
        let b = r.claim().unwrap();
        let c = r.claim().unwrap();
        assert_eq!(r.claim(), None, "capacity is 3, not the 4 slots");
        unsafe {
            r.commit(b, "b".to_string());
            assert_eq!(r.pop(), None, "a is claimed but not committed");
            r.commit(a, "a".to_string());
            r.abandon(c);
            assert_eq!(r.pop().as_deref(), Some("a"));
            assert_eq!(r.pop().as_deref(), Some("b"));
            assert_eq!(r.pop(), None, "tombstone skipped");
        }
        assert_eq!(r.claim(), None, "nothing released yet");
        assert_eq!(r.tail(), 3);
        assert!(r.release());
        assert!(!r.release());
        for round in 0..10 {
            let s = r.claim().unwrap();
            unsafe { r.commit(s, format!("{round}")) };
            assert_eq!(unsafe { r.pop() }, Some(format!("{round}")));
            r.release();
        }
    }

    #[test]
    fn unclaim_of_the_last_claim_leaves_nothing_behind() {
        let r = Ring::new(2);
        let a = r.claim().unwrap();
        assert!(unsafe { r.unclaim(a) });
        let a = r.claim().unwrap();
        let b = r.claim().unwrap();
        assert_eq!(r.claim(), None);
        // `a` is no longer the last claim: it becomes a tombstone.
        assert!(!unsafe { r.unclaim(a) });
        assert!(unsafe { r.unclaim(b) });
        let b = r.claim().unwrap();
        assert_eq!(b, 1, "b's number is free again");
        assert_eq!(r.claim(), None, "the tombstone holds its slot");
        unsafe { r.commit(b, 5) };
        assert_eq!(unsafe { r.pop() }, Some(5), "the tombstone is skipped");
        r.release();
        let c = r.claim().unwrap();
        unsafe { r.commit(c, 7) };
        assert_eq!(unsafe { r.pop() }, Some(7));
    }

    #[test]
    fn drop_frees_unread_values() {
        let v = Arc::new(());
        {
            let r = Ring::new(8);
            for _ in 0..5 {
                let s = r.claim().unwrap();
                unsafe { r.commit(s, v.clone()) };
            }
            let s = r.claim().unwrap();
            unsafe { r.abandon(s) };
            drop(unsafe { r.pop() });
            assert_eq!(Arc::strong_count(&v), 5);
        }
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn many_publishers_one_consumer_lose_nothing() {
        let r = Arc::new(Ring::new(64));
        let per = 50_000u64;
        let pubs: Vec<_> = (0..3u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut abandoned = false;
                    for i in 0..per {
                        loop {
                            if let Some(s) = r.claim() {
                                if i % 7 == 3 && !abandoned {
                                    // A publish that gave up after claiming.
                                    unsafe { r.abandon(s) };
                                    abandoned = true;
                                    continue;
                                }
                                abandoned = false;
                                unsafe { r.commit(s, (p, i)) };
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut last = [None::<u64>; 3];
        let mut got = 0;
        while got < 3 * per {
            match unsafe { r.pop() } {
                Some((p, i)) => {
                    assert!(
                        last[p as usize].is_none_or(|l| l < i),
                        "per-publisher order"
                    );
                    last[p as usize] = Some(i);
                    got += 1;
                }
                None => {
                    r.release();
                    std::thread::yield_now();
                }
            }
        }
        for p in pubs {
            p.join().unwrap();
        }
        assert_eq!(unsafe { r.pop() }, None);
    }
}
