//! The queue behind every Block lane: a bounded ring with many publishers and one
//! consumer (the receiver that owns the lane) or, for a broadcast subscription, a fixed
//! set of consumers that each read every value.
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
//!    finished reading, and `cap <= slots`, the slot's previous occupant `s - slots` is
//!    gone: moved out, dropped in place once lent, or leaked if a lend panicked (single
//!    consumer); or, in a broadcast ring, still there for this publisher to take out and
//!    drop (or to overwrite, for values that need no drop).
//! 2. It writes the value, then stores the stamp `2 (s + 1)` (Release). Or, if the
//!    publish was abandoned after the claim, the tombstone stamp `2 (s + 1) + 1`: every
//!    claimed sequence is committed one way or the other, so the consumer never waits
//!    on a hole.
//! 3. The consumer, at `next = s`, reads the stamp (Acquire); `2 (s + 1)`: it moves the
//!    value out, or lends it in place and drops it there; tombstone: skips it; anything
//!    else: not committed yet (empty for now).
//! 4. The consumer publishes `released = next` once per receive call, giving the
//!    capacity back to the publishers in one store.
//!
//! With several consumers (broadcast), each has its own `next` and `released`; a claim
//! checks against the lowest `released` of the consumers still present, consumers
//! *clone* values out (or borrow them in place), and a value stays in its slot until a
//! publisher reuses the slot (all consumers are past it by then: it takes the value out
//! and drops it, or simply overwrites a value that needs no drop) or the ring is dropped.

use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

use crate::sync::{exclusive, fence, AtomicBool, AtomicU64, Cell, Ordering};

/// One value slot, alone on its cache line(s).
#[repr(align(64))]
struct ValueSlot<T>(Cell<MaybeUninit<T>>);

/// Publishers' side.
struct Producers {
    /// Next sequence number to claim.
    tail: AtomicU64,
    /// The publishers' cached copy of the lowest `Consumer::released` (never ahead of it;
    /// stored with Release after Acquire loads of `released`, read with Acquire).
    released_seen: AtomicU64,
}

/// One consumer's side.
struct Consumer {
    /// Next sequence number to read. Written by the consumer only.
    next: AtomicU64,
    /// Sequence numbers below this are free for publishers to reuse (as far as this
    /// consumer is concerned).
    released: AtomicU64,
    /// False once the consumer has left (it no longer holds capacity back).
    present: AtomicBool,
}

pub(crate) struct Ring<T> {
    prod: CachePadded<Producers>,
    cons: Box<[CachePadded<Consumer>]>,
    /// Several consumers: values are cloned out and stay in their slots.
    shared: bool,
    /// Whether dropping a value does anything (if not, a broadcast ring's publisher does
    /// not move the previous lap's value out of the slot it reuses).
    drop_values: bool,
    stamps: Box<[AtomicU64]>,
    values: Box<[ValueSlot<T>]>,
    mask: u64,
    cap: u64,
}

// SAFETY: a value is written by exactly one publisher (the one that claimed the
// sequence) and then only read (cloned by several consumers, or moved out, dropped in
// place or, if a lend panics, leaked by the single one), ordered by the stamp's
// Release/Acquire pair. A broadcast ring's value is dropped by the publisher that reuses
// its slot after every consumer released it (Acquire on `released`), or by `drop`.
// T crosses threads and, in a broadcast ring, is read through `&T` by several: T: Sync.
unsafe impl<T: Send + Sync> Send for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Ring<T> {}

/// Whether a stamp marks a committed value (not a tombstone, not an empty slot).
#[inline]
fn holds_value(stamp: u64) -> bool {
    stamp != 0 && stamp & 1 == 0
}

impl<T> Ring<T> {
    /// The stamp of slot `i` (an index already masked: `i <= mask`).
    #[inline(always)]
    fn stamp_at(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.stamps.len());
        // SAFETY: every index passed here is a sequence number masked with `mask`, and
        // there are `mask + 1` stamps (both fixed in `new`).
        unsafe { self.stamps.get_unchecked(i & self.mask as usize) }
    }

    /// The value of slot `i` (an index already masked: `i <= mask`).
    #[inline(always)]
    fn value_at(&self, i: usize) -> &Cell<MaybeUninit<T>> {
        debug_assert!(i < self.values.len());
        // SAFETY: as in `stamp_at`: `mask + 1` value slots.
        unsafe { &self.values.get_unchecked(i & self.mask as usize).0 }
    }

    /// A ring holding up to `cap` (≥ 1) values, read by `consumers` (≥ 1) consumers.
    pub(crate) fn new(cap: usize, consumers: usize) -> Self {
        // The configuration refuses more than `MAX_CAPACITY`; clamped here as well, so that
        // the slot count is always a power of two that fits: the unchecked slot indexing
        // relies on exactly `mask + 1` slots.
        let cap = cap.clamp(1, crate::config::MAX_CAPACITY);
        let slots = cap.next_power_of_two();
        let consumers = consumers.max(1);
        Self {
            prod: CachePadded::new(Producers {
                tail: AtomicU64::new(0),
                released_seen: AtomicU64::new(0),
            }),
            cons: (0..consumers)
                .map(|_| {
                    CachePadded::new(Consumer {
                        next: AtomicU64::new(0),
                        released: AtomicU64::new(0),
                        present: AtomicBool::new(true),
                    })
                })
                .collect(),
            shared: consumers > 1,
            drop_values: std::mem::needs_drop::<T>(),
            stamps: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            values: (0..slots)
                .map(|_| ValueSlot(Cell::new(MaybeUninit::uninit())))
                .collect(),
            mask: slots as u64 - 1,
            cap: cap as u64,
        }
    }

    /// Declares that dropping any value this ring will hold does nothing (as `needs_drop`
    /// would say of a type whose only variants in use own nothing to drop): values left
    /// in a broadcast ring's slots are then overwritten instead of moved out and dropped.
    ///
    /// # Safety
    /// Every value committed to this ring must be one whose drop is a no-op; otherwise
    /// what it owns is leaked (never freed), which is safe but wrong.
    pub(crate) unsafe fn values_need_no_drop(mut self) -> Self {
        self.drop_values = false;
        self
    }

    /// The lowest `released` of the consumers present; of all of them if none is left
    /// (the capacity bound must hold even then: a publisher may still be claiming).
    #[inline]
    fn lowest_released(&self) -> u64 {
        if let [only] = &self.cons[..] {
            return only.released.load(Ordering::Acquire);
        }
        let lowest = |present_only: bool| {
            let mut low: Option<u64> = None;
            for c in self.cons.iter() {
                if !present_only || c.present.load(Ordering::Acquire) {
                    let r = c.released.load(Ordering::Acquire);
                    // Sequence numbers wrap: compare by signed distance.
                    low = Some(match low {
                        Some(l) if (r.wrapping_sub(l) as i64) >= 0 => l,
                        _ => r,
                    });
                }
            }
            low
        };
        lowest(true).or_else(|| lowest(false)).unwrap_or(0)
    }

    /// Claims the next sequence number if the ring has room. The claim must be
    /// committed with [`commit`](Self::commit) or [`abandon`](Self::abandon).
    ///
    /// The compare-and-swap is SeqCst: the receiver's sleep check relies on it (see
    /// `Receiver::wait`).
    #[inline(always)]
    pub(crate) fn claim(&self) -> Option<u64> {
        let mut t = self.prod.tail.load(Ordering::Relaxed);
        loop {
            // Acquire/Release on the cached copy too: a publisher that reuses a slot on
            // another publisher's reading of `released` must still happen after the
            // consumers finished with the slot's old value.
            let seen = self.prod.released_seen.load(Ordering::Acquire);
            // Signed: `t` may be stale and below a fresh `released`; the CAS then fails.
            if (t.wrapping_sub(seen) as i64) >= self.cap as i64 {
                let released = self.lowest_released();
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

    /// Claims up to `want` (≥ 1) consecutive sequence numbers with one compare-and-swap,
    /// as many as the ring has room for: the first and how many, or `None` if it has no
    /// room at all. Each must be committed (in any order) with
    /// [`commit_with`](Self::commit_with) or its siblings, or abandoned, as a claim of
    /// [`claim`](Self::claim) must; the consumers read them in sequence order.
    ///
    /// SeqCst, as [`claim`](Self::claim).
    #[inline]
    pub(crate) fn claim_run(&self, want: u64) -> Option<(u64, u64)> {
        debug_assert!(want >= 1);
        let cap = self.cap as i64;
        let mut t = self.prod.tail.load(Ordering::Relaxed);
        loop {
            // As in `claim`; the cached `released` is refreshed when it does not leave
            // room for the whole run.
            let seen = self.prod.released_seen.load(Ordering::Acquire);
            let mut room = cap - t.wrapping_sub(seen) as i64;
            if room < want as i64 {
                let released = self.lowest_released();
                self.prod.released_seen.store(released, Ordering::Release);
                room = cap - t.wrapping_sub(released) as i64;
                if room <= 0 {
                    return None;
                }
            }
            // `t` may be stale (then `room` may exceed the capacity, and the CAS fails).
            let n = want.min(room as u64);
            match self.prod.tail.compare_exchange_weak(
                t,
                t.wrapping_add(n),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((t, n)),
                Err(now) => t = now,
            }
        }
    }

    /// Whether a commit can hand back a value left from the slot's previous lap (a
    /// broadcast ring of values that need dropping). If not,
    /// [`commit_fresh_with`](Self::commit_fresh_with) commits without an `Option<T>` to
    /// move around: on the publish path, that move was a store then a wider load of
    /// the same bytes, which waits for every earlier store, the event's slot writes
    /// included, to reach the cache.
    #[inline(always)]
    pub(crate) fn keeps_previous(&self) -> bool {
        std::mem::needs_drop::<T>() && self.shared && self.drop_values
    }

    /// In a broadcast ring, takes out the value a slot still holds from its previous lap
    /// (the caller drops it after its commit: user code stays out of the claim-to-commit
    /// window, and a panicking drop cannot leave the claim open or the value twice).
    ///
    /// # Safety
    /// The caller holds the claim of a sequence number of slot `i` and stores the slot's
    /// new stamp right after.
    #[inline(always)]
    unsafe fn take_previous(&self, i: usize) -> Option<T> {
        if self.keeps_previous() && holds_value(self.stamp_at(i).load(Ordering::Relaxed)) {
            // SAFETY: the claim proves that every consumer present released the previous
            // lap's sequence of this slot (consumers that left read nothing more), and the
            // stamp says a value was committed there and never moved out; the new stamp
            // stored by the caller marks it gone.
            // A write access for loom's race checker: the value is moved out.
            Some(
                self.value_at(i)
                    .with_mut(|v| unsafe { (*v).assume_init_read() }),
            )
        } else {
            None
        }
    }

    /// Writes the value of a claimed sequence number and makes it visible. Returns the
    /// value a broadcast ring's slot still held from its previous lap: the caller drops it
    /// once its own bookkeeping is done (its `Drop` is user code and may panic).
    ///
    /// # Safety
    /// `seq` was returned by [`claim`](Self::claim) on this ring and not committed yet.
    #[inline(always)]
    #[must_use = "the previous value is dropped by the caller, after its bookkeeping"]
    pub(crate) unsafe fn commit(&self, seq: u64, value: T) -> Option<T> {
        // SAFETY: forwarded.
        unsafe { self.commit_with(seq, || value) }
    }

    /// [`commit`](Self::commit), with the value made by `make` where it is stored (a
    /// large value made first and then passed in is copied on the way). If `make` panics,
    /// nothing is written and the claim stays open, holding up the consumers: a caller
    /// whose `make` may panic must give the claim back (`unclaim` or `abandon`) as it
    /// unwinds.
    ///
    /// # Safety
    /// As for [`commit`](Self::commit).
    #[inline(always)]
    #[must_use = "the previous value is dropped by the caller, after its bookkeeping"]
    pub(crate) unsafe fn commit_with(&self, seq: u64, make: impl FnOnce() -> T) -> Option<T> {
        let i = (seq & self.mask) as usize;
        // SAFETY: the claim gives this publisher the slot exclusively (see the module
        // docs): its previous occupant was moved out (or is dropped here) and no consumer
        // reads it before the stamp below.
        let previous = unsafe { self.take_previous(i) };
        // SAFETY: as above. Made where it is stored (`make` inside the closure).
        self.value_at(i).with_mut(|v| unsafe { (*v).write(make()) });
        self.stamp_at(i)
            .store(seq.wrapping_add(1) << 1, Ordering::Release);
        previous
    }

    /// [`commit_with`](Self::commit_with) for a ring that keeps no previous value
    /// ([`keeps_previous`](Self::keeps_previous) is false): nothing to hand back.
    ///
    /// # Safety
    /// As for [`commit`](Self::commit), and `keeps_previous()` is false.
    #[inline(always)]
    pub(crate) unsafe fn commit_fresh_with(&self, seq: u64, make: impl FnOnce() -> T) {
        debug_assert!(!self.keeps_previous());
        let i = (seq & self.mask) as usize;
        // SAFETY: as in `commit_with`. The slot's previous occupant is gone or needs no
        // drop (the caller's precondition): a single consumer moved it out, dropped it in
        // place, or leaked it when a lend panicked (overwriting it keeps it leaked, never
        // drops it twice); a broadcast ring's values need no drop.
        self.value_at(i).with_mut(|v| unsafe { (*v).write(make()) });
        self.stamp_at(i)
            .store(seq.wrapping_add(1) << 1, Ordering::Release);
    }

    /// Commits a claimed sequence number as a tombstone the consumers skip.
    ///
    /// # Safety
    /// As for [`commit`](Self::commit).
    #[inline]
    pub(crate) unsafe fn abandon(&self, seq: u64) {
        let i = (seq & self.mask) as usize;
        // SAFETY: forwarded; the tombstone stamp follows.
        let previous = unsafe { self.take_previous(i) };
        self.stamp_at(i)
            .store((seq.wrapping_add(1) << 1) | 1, Ordering::Release);
        drop(previous);
    }

    /// Takes back a claim that will not be committed: if no later sequence number was
    /// claimed, the tail simply moves back (nothing is left behind); otherwise the claim
    /// is committed as a tombstone, which holds its capacity until the consumers pass
    /// it. Returns `false` in that second case (the caller wakes the consumers).
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

    /// The next value for consumer `c`, skipping tombstones: moved out of a single-consumer
    /// ring, cloned out of a broadcast ring. `None` if the next sequence is not committed
    /// yet.
    ///
    /// # Safety
    /// Only consumer `c` itself may call this (the receiver owning that position), and
    /// only while it is present.
    #[inline]
    pub(crate) unsafe fn pop(&self, c: usize) -> Option<T>
    where
        T: Clone,
    {
        let me = &self.cons[c];
        let (n, i) = self.next_value(me)?;
        // SAFETY: the stamp says the value of `n` was written (Acquire pairs with the
        // publisher's Release). Broadcast consumers only read it (cloned before `next`
        // moves past it: a panicking `Clone` leaves it to be read again), and it is not
        // dropped before they all released it; a single consumer moves it out exactly
        // once (`next` moves past it right away).
        let value = self.value_at(i).with(|v| {
            if self.shared {
                unsafe { (*v).assume_init_ref() }.clone()
            } else {
                unsafe { (*v).assume_init_read() }
            }
        });
        me.next.store(n.wrapping_add(1), Ordering::Relaxed);
        Some(value)
    }

    /// Consumer `me`'s next committed value, past any tombstones (which it moves over):
    /// its sequence number and slot. `None` if the next sequence is not committed yet.
    #[inline(always)]
    fn next_value(&self, me: &Consumer) -> Option<(u64, usize)> {
        loop {
            let n = me.next.load(Ordering::Relaxed);
            let i = (n & self.mask) as usize;
            let stamp = self.stamp_at(i).load(Ordering::Acquire);
            if stamp >> 1 != n.wrapping_add(1) & (u64::MAX >> 1) {
                return None;
            }
            if stamp & 1 == 0 {
                return Some((n, i));
            }
            me.next.store(n.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// Lends consumer `c`'s next value to `f` in place, skipping tombstones: the consumer
    /// moves past it first, so it is lent once (if `f` panics, it is still gone). A
    /// single consumer then drops it in its slot (leaks it if `f` panics); in a broadcast
    /// ring it stays for the others. Returns false, without calling `f`, if the next
    /// sequence is not committed yet.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[inline(always)]
    pub(crate) unsafe fn visit(&self, c: usize, f: impl FnOnce(&T)) -> bool {
        let mut f = Some(f);
        // SAFETY: forwarded.
        let lent = unsafe {
            self.visit_run(
                c,
                1,
                |x| {
                    if let Some(f) = f.take() {
                        f(x);
                    }
                },
                || false,
            )
        };
        lent == 1
    }

    /// [`visit`](Self::visit) for a run of values: lends consumer `c`'s committed values
    /// in order (tombstones skipped, not counted) to `f` until `max` were lent, one is
    /// not committed yet, or `stop` (asked after each value, once it is dropped) says so.
    /// The consumer's position is stored once, at the end (also if `f` panics: then the
    /// value being lent counts as lent, and a single consumer leaks it rather than run
    /// its `Drop` during the unwind). Returns how many were lent.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[inline(always)]
    pub(crate) unsafe fn visit_run(
        &self,
        c: usize,
        max: usize,
        mut f: impl FnMut(&T),
        stop: impl Fn() -> bool,
    ) -> usize {
        /// Stores the consumer's position however the run ends.
        struct Advance<'a> {
            next: &'a AtomicU64,
            n: u64,
        }
        impl Drop for Advance<'_> {
            fn drop(&mut self) {
                self.next.store(self.n, Ordering::Relaxed);
            }
        }
        let me = &self.cons[c];
        let mut at = Advance {
            next: &me.next,
            n: me.next.load(Ordering::Relaxed),
        };
        let drop_each = !self.shared && self.drop_values;
        let mut lent = 0;
        while lent < max {
            let n = at.n;
            let i = (n & self.mask) as usize;
            let stamp = self.stamp_at(i).load(Ordering::Acquire);
            if stamp >> 1 != n.wrapping_add(1) & (u64::MAX >> 1) {
                break;
            }
            at.n = n.wrapping_add(1);
            if stamp & 1 == 1 {
                continue;
            }
            lent += 1;
            let slot = self.value_at(i);
            // Moved past before `f` runs: the slot is not reused before this consumer
            // releases it, after this call (`release`).
            // SAFETY: committed (Acquire pairs with the publisher's Release), not moved out
            // nor dropped (see `visit`).
            slot.with(|v| f(unsafe { (*v).assume_init_ref() }));
            if drop_each {
                // SAFETY: lent and moved past; a single consumer is the only reader. If
                // `f` panicked we are not here: the value is leaked rather than dropped
                // during the unwind (where a panicking `Drop` would abort the process).
                slot.with_mut(|v| unsafe { (*v).assume_init_drop() });
            }
            // After the value's drop: what its `Drop` did (say, publish a Critical event)
            // is seen before the next value is lent.
            if stop() {
                break;
            }
        }
        lent
    }

    /// What decides whether consumer `c`'s next sequence is committed: the stamp to
    /// load and the value (shifted right by one) that means committed. Valid until the
    /// consumer moves on: [`ready`](Self::ready) without the index arithmetic.
    #[inline]
    pub(crate) fn watch(&self, c: usize) -> (&AtomicU64, u64) {
        let n = self.cons[c].next.load(Ordering::Relaxed);
        (
            self.stamp_at((n & self.mask) as usize),
            n.wrapping_add(1) & (u64::MAX >> 1),
        )
    }

    /// Whether consumer `c`'s next sequence is committed (a value or a tombstone).
    #[inline]
    pub(crate) fn ready(&self, c: usize) -> bool {
        let (stamp, committed) = self.watch(c);
        stamp.load(Ordering::Acquire) >> 1 == committed
    }

    /// Whether anything was claimed past consumer `c`'s position (possibly not committed
    /// yet). SeqCst: pairs with the SeqCst claim for the receiver's sleep check.
    #[inline]
    pub(crate) fn claimed_ahead(&self, c: usize) -> bool {
        self.prod.tail.load(Ordering::SeqCst) != self.cons[c].next.load(Ordering::Relaxed)
    }

    /// Gives the capacity of everything consumer `c` read so far back to the publishers.
    /// Returns whether anything was released. Consumer `c` only.
    #[inline]
    pub(crate) fn release(&self, c: usize) -> bool {
        let me = &self.cons[c];
        let n = me.next.load(Ordering::Relaxed);
        if me.released.load(Ordering::Relaxed) == n {
            return false;
        }
        me.released.store(n, Ordering::SeqCst);
        true
    }

    /// Consumer `c` leaves for good: it no longer holds capacity back. In a
    /// single-consumer ring the values it did not read stay until the ring is dropped.
    pub(crate) fn leave(&self, c: usize) {
        self.cons[c].present.store(false, Ordering::SeqCst);
    }

    #[cfg(all(test, not(bus_loom)))]
    fn tail(&self) -> u64 {
        self.prod.tail.load(Ordering::Relaxed)
    }

    /// Whether a claim could succeed now.
    pub(crate) fn has_room(&self) -> bool {
        let t = self.prod.tail.load(Ordering::SeqCst);
        // SeqCst, like the consumer's store of `released`: a publisher that registered as
        // waiting for room and then finds none is sure to be notified.
        fence(Ordering::SeqCst);
        let r = self.lowest_released();
        (t.wrapping_sub(r) as i64) < self.cap as i64
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        if !self.drop_values {
            return;
        }
        // Exclusive access: every claim has been committed (publishers hold the ring
        // only during a publish, which commits or abandons everything it claimed).
        if self.shared {
            // Values stay in their slots: drop every one still there.
            for (stamp, value) in self.stamps.iter_mut().zip(self.values.iter_mut()) {
                if holds_value(exclusive(stamp)) {
                    // SAFETY: committed, never moved out, not dropped yet.
                    value.0.with_mut(|v| unsafe { (*v).assume_init_drop() });
                }
            }
            return;
        }
        let tail = exclusive(&mut self.prod.tail);
        let mut n = exclusive(&mut self.cons[0].next);
        while n != tail {
            let i = (n & self.mask) as usize;
            if exclusive(&mut self.stamps[i]) == n.wrapping_add(1) << 1 {
                // SAFETY: committed and never read.
                self.values[i]
                    .0
                    .with_mut(|v| unsafe { (*v).assume_init_drop() });
            }
            n = n.wrapping_add(1);
        }
    }
}

// Real threads and std's atomics; the loom build runs `loom_tests` instead.
#[cfg(test)]
#[cfg(not(bus_loom))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_capacity_and_release() {
        let r = Ring::new(3, 1);
        let a = r.claim().unwrap();
        let b = r.claim().unwrap();
        let c = r.claim().unwrap();
        assert_eq!(r.claim(), None, "capacity is 3, not the 4 slots");
        unsafe {
            assert!(r.commit(b, "b".to_string()).is_none());
            assert_eq!(r.pop(0), None, "a is claimed but not committed");
            assert!(r.commit(a, "a".to_string()).is_none());
            r.abandon(c);
            assert_eq!(r.pop(0).as_deref(), Some("a"));
            assert_eq!(r.pop(0).as_deref(), Some("b"));
            assert_eq!(r.pop(0), None, "tombstone skipped");
        }
        assert_eq!(r.claim(), None, "nothing released yet");
        assert_eq!(r.tail(), 3);
        assert!(r.release(0));
        assert!(!r.release(0));
        for round in 0..10 {
            let s = r.claim().unwrap();
            drop(unsafe { r.commit(s, format!("{round}")) });
            assert_eq!(unsafe { r.pop(0) }, Some(format!("{round}")));
            r.release(0);
        }
    }

    #[test]
    fn unclaim_of_the_last_claim_leaves_nothing_behind() {
        let r = Ring::new(2, 1);
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
        assert!(unsafe { r.commit(b, 5) }.is_none());
        assert_eq!(unsafe { r.pop(0) }, Some(5), "the tombstone is skipped");
        r.release(0);
        let c = r.claim().unwrap();
        assert!(unsafe { r.commit(c, 7) }.is_none());
        assert_eq!(unsafe { r.pop(0) }, Some(7));
    }

    #[test]
    fn a_run_claims_what_there_is_room_for_with_its_numbers_in_order() {
        let r = Ring::new(5, 1);
        assert_eq!(r.claim_run(3), Some((0, 3)));
        let d = r.claim().unwrap();
        assert_eq!(d, 3);
        // Room for one more: a run of four gets one.
        assert_eq!(r.claim_run(4), Some((4, 1)));
        assert_eq!(r.claim_run(1), None, "full");
        unsafe {
            // Committed out of order; read in sequence order.
            assert!(r.commit(4, 'e').is_none());
            assert!(r.commit(d, 'd').is_none());
            assert!(r.commit(1, 'b').is_none());
            assert_eq!(r.pop(0), None, "0 claimed, not committed");
            assert!(r.commit(0, 'a').is_none());
            r.abandon(2);
            let got: Vec<char> = std::iter::from_fn(|| r.pop(0)).collect();
            assert_eq!(got, ['a', 'b', 'd', 'e'], "tombstone 2 skipped");
        }
        assert_eq!(r.claim_run(2), None, "nothing released yet");
        assert!(r.release(0));
        // The cached `released` is stale: the run refreshes it and gets the whole room.
        assert_eq!(r.claim_run(9), Some((5, 5)));
        assert_eq!(r.tail(), 10);
        for s in 5..10 {
            unsafe { r.abandon(s) };
        }
        assert_eq!(unsafe { r.pop(0) }, None);
        r.release(0);
        // Runs keep working over many laps.
        for lap in 0..20u64 {
            let (first, n) = r.claim_run(3).unwrap();
            assert_eq!((first, n), (10 + 3 * lap, 3));
            for k in 0..n {
                assert!(unsafe { r.commit(first + k, 'x') }.is_none());
            }
            for _ in 0..n {
                assert_eq!(unsafe { r.pop(0) }, Some('x'));
            }
            r.release(0);
        }
    }

    #[test]
    fn a_run_taken_back_last_first_behind_a_later_claim_leaves_tombstones() {
        let r = Ring::new(8, 1);
        assert_eq!(r.claim_run(3), Some((0, 3)));
        let later = r.claim().unwrap();
        // As a batch publish takes a run back (last first): a later claim is outstanding,
        // so the tail cannot move back, and each becomes a tombstone.
        for s in (0..3).rev() {
            assert!(!unsafe { r.unclaim(s) });
        }
        assert_eq!(r.tail(), 4);
        assert!(unsafe { r.commit(later, 'x') }.is_none());
        assert_eq!(unsafe { r.pop(0) }, Some('x'), "the tombstones are skipped");
        assert_eq!(unsafe { r.pop(0) }, None);
        // Nothing outstanding after a run: it is taken back whole, the tail moves back.
        r.release(0);
        assert_eq!(r.claim_run(2), Some((4, 2)));
        assert!(unsafe { r.unclaim(5) });
        assert!(unsafe { r.unclaim(4) });
        assert_eq!(r.tail(), 4);
    }

    #[test]
    fn runs_and_single_claims_from_several_threads_lose_nothing() {
        let r = Arc::new(Ring::new(16, 1));
        let per = 30_000u64;
        let pubs: Vec<_> = (0..3u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while i < per {
                        // Publisher 0 claims single numbers, the others runs of up to 7.
                        let want = if p == 0 { 1 } else { (per - i).min(1 + i % 7) };
                        match r.claim_run(want) {
                            Some((first, n)) => {
                                for k in 0..n {
                                    assert!(unsafe { r.commit(first + k, (p, i + k)) }.is_none());
                                }
                                i += n;
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        consume_in_publisher_order(&r, pubs, per);
    }

    /// Takes `per` values `(p, i)` from each of the publisher threads `pubs` (`i` counting
    /// up from 0 for each `p`) as they come, releasing whenever it finds nothing: each
    /// publisher's values in order, none lost, none twice; then joins the publishers and
    /// checks that nothing is left.
    fn consume_in_publisher_order(
        r: &Ring<(u64, u64)>,
        pubs: Vec<std::thread::JoinHandle<()>>,
        per: u64,
    ) {
        let mut next = vec![0u64; pubs.len()];
        let mut got = 0;
        while got < pubs.len() as u64 * per {
            match unsafe { r.pop(0) } {
                Some((p, i)) => {
                    assert_eq!(next[p as usize], i, "publisher {p}: order");
                    next[p as usize] += 1;
                    got += 1;
                }
                None => {
                    r.release(0);
                    std::thread::yield_now();
                }
            }
        }
        for p in pubs {
            p.join().unwrap();
        }
        assert_eq!(unsafe { r.pop(0) }, None);
    }

    /// Claims `n` sequence numbers and commits `value(k)` for the k-th, or a tombstone
    /// where it is `None`.
    fn commit_all<T>(r: &Ring<T>, n: usize, value: impl Fn(usize) -> Option<T>) {
        for k in 0..n {
            let s = r.claim().unwrap();
            match value(k) {
                Some(x) => drop(unsafe { r.commit(s, x) }),
                None => unsafe { r.abandon(s) },
            }
        }
    }

    #[test]
    fn visit_lends_in_place_and_drops_once() {
        let v = Arc::new(());
        {
            let r = Ring::new(4, 1);
            commit_all(&r, 3, |k| (k != 1).then(|| v.clone()));
            assert_eq!(Arc::strong_count(&v), 3);
            // The tombstone is skipped; each value is dropped right after its visit.
            let mut seen = 0;
            assert!(unsafe { r.visit(0, |x| seen += Arc::strong_count(x)) });
            assert_eq!((seen, Arc::strong_count(&v)), (3, 2));
            // A panicking visitor: the value was lent (not lent again), and leaked rather
            // than dropped during the unwind.
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                r.visit(0, |_| panic!("visitor"))
            }));
            assert!(panicked.is_err());
            assert_eq!(Arc::strong_count(&v), 2);
            assert!(!unsafe { r.visit(0, |_| unreachable!()) });
            // One left unread: the ring's drop frees it (and not the visited ones).
            let s = r.claim().unwrap();
            drop(unsafe { r.commit(s, v.clone()) });
            assert!(r.release(0));
        }
        // The leaked one.
        assert_eq!(Arc::strong_count(&v), 2);
    }

    #[test]
    fn only_a_broadcast_ring_of_values_that_need_dropping_keeps_previous_values() {
        assert!(!Ring::<Arc<()>>::new(4, 1).keeps_previous());
        assert!(Ring::<Arc<()>>::new(4, 2).keeps_previous());
        assert!(!Ring::<u64>::new(4, 1).keeps_previous());
        assert!(!Ring::<u64>::new(4, 2).keeps_previous());
        assert!(
            !unsafe { Ring::<Option<Arc<()>>>::new(4, 2).values_need_no_drop() }.keeps_previous()
        );
    }

    #[test]
    fn fresh_commits_over_many_laps_drop_every_value_once() {
        let v = Arc::new(());
        {
            let r = Ring::new(4, 1);
            assert!(!r.keeps_previous());
            for lap in 0..5 {
                for _ in 0..4 {
                    let s = r.claim().unwrap();
                    unsafe { r.commit_fresh_with(s, || v.clone()) };
                }
                // Ours, the leaked ones (from lap 2 on), and four in the ring.
                let leaked = usize::from(lap > 2);
                assert_eq!(Arc::strong_count(&v), 1 + leaked + 4);
                match lap {
                    // Moved out.
                    0 => {
                        for _ in 0..4 {
                            drop(unsafe { r.pop(0) });
                        }
                    }
                    // Lent and dropped in place, one lend panicking (that one leaks).
                    2 => {
                        let panicked =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                                r.visit_run(0, 4, |_| panic!("visitor"), || false)
                            }));
                        assert!(panicked.is_err());
                        assert_eq!(unsafe { r.visit_run(0, 4, |_| (), || false) }, 3);
                    }
                    // Lent and dropped in place.
                    _ => assert_eq!(unsafe { r.visit_run(0, 4, |_| (), || false) }, 4),
                }
                assert!(r.release(0));
                // Only the leaked ones are left; the next lap overwrites their slots.
                assert_eq!(Arc::strong_count(&v), 1 + usize::from(lap >= 2));
            }
            // One more, unread: the ring's drop frees it.
            let s = r.claim().unwrap();
            unsafe { r.commit_fresh_with(s, || v.clone()) };
        }
        // The one leaked by the panicking lend.
        assert_eq!(Arc::strong_count(&v), 2);
    }

    #[test]
    fn visit_run_lends_in_order_and_stops_where_told() {
        let v = Arc::new(());
        {
            let r = Ring::new(16, 1);
            commit_all(&r, 10, |k| (k % 4 != 1).then(|| (k, v.clone())));
            // 10 claims, 3 tombstones (1, 5, 9): 7 values.
            assert_eq!(Arc::strong_count(&v), 8);
            let mut seen = Vec::new();
            // At most 3.
            let lent = unsafe { r.visit_run(0, 3, |x| seen.push(x.0), || false) };
            assert_eq!((lent, &seen[..]), (3, &[0, 2, 3][..]));
            // `stop` says stop after the first.
            let lent = unsafe { r.visit_run(0, 10, |x| seen.push(x.0), || true) };
            assert_eq!((lent, seen.len()), (1, 4));
            // Values lent are dropped in place: 4 lent, 3 left.
            assert_eq!(Arc::strong_count(&v), 4);
            // A panic: the value being lent counts as lent (and is leaked, not dropped
            // during the unwind).
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                r.visit_run(0, 10, |_| panic!("visitor"), || false)
            }));
            assert!(panicked.is_err());
            assert_eq!(Arc::strong_count(&v), 4);
            // `stop` is asked once the value is dropped.
            let lent =
                unsafe { r.visit_run(0, 10, |x| seen.push(x.0), || Arc::strong_count(&v) == 3) };
            assert_eq!((lent, &seen[4..]), (1, &[7][..]));
            // The rest, up to what is committed (tombstone 9 is passed, not counted).
            let lent = unsafe { r.visit_run(0, 10, |x| seen.push(x.0), || false) };
            assert_eq!((lent, &seen[5..]), (1, &[8][..]));
            assert_eq!(Arc::strong_count(&v), 2);
            assert_eq!(
                unsafe { r.visit_run(0, 10, |_| unreachable!(), || false) },
                0
            );
            assert!(r.release(0));
            assert!(r.claim().is_some());
        }
        // The leaked one.
        assert_eq!(Arc::strong_count(&v), 2);
    }

    #[test]
    fn broadcast_visit_leaves_the_value_for_the_others() {
        let v = Arc::new(());
        {
            let r = Ring::new(2, 2);
            let s = r.claim().unwrap();
            drop(unsafe { r.commit(s, v.clone()) });
            let mut counts = Vec::new();
            assert!(unsafe { r.visit(0, |x| counts.push(Arc::strong_count(x))) });
            assert!(!unsafe { r.visit(0, |_| unreachable!()) });
            assert!(unsafe { r.visit(1, |x| counts.push(Arc::strong_count(x))) });
            assert_eq!(counts, [2, 2]);
            assert_eq!(Arc::strong_count(&v), 2);
            r.release(0);
            r.release(1);
            // Reusing the slot hands the old value back to the publisher.
            let s = r.claim().unwrap();
            let s2 = r.claim().unwrap();
            drop(unsafe { r.commit(s, Arc::new(())) });
            let previous = unsafe { r.commit(s2, Arc::new(())) };
            assert!(previous.is_some());
            drop(previous);
            assert_eq!(Arc::strong_count(&v), 1);
        }
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn drop_frees_unread_values() {
        let v = Arc::new(());
        {
            let r = Ring::new(8, 1);
            // Five values, then a tombstone.
            commit_all(&r, 6, |k| (k < 5).then(|| v.clone()));
            drop(unsafe { r.pop(0) });
            assert_eq!(Arc::strong_count(&v), 5);
        }
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn many_publishers_one_consumer_lose_nothing() {
        let r = Arc::new(Ring::new(64, 1));
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
                                assert!(unsafe { r.commit(s, (p, i)) }.is_none());
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        // An abandoned claim is retried with the same value: every value arrives once.
        consume_in_publisher_order(&r, pubs, per);
    }

    #[test]
    fn broadcast_consumers_each_read_everything_and_the_slowest_holds_capacity() {
        let v = Arc::new(());
        {
            let r = Ring::new(2, 3);
            commit_all(&r, 2, |_| Some(v.clone()));
            assert_eq!(r.claim(), None);
            for c in 0..3 {
                assert!(unsafe { r.pop(c) }.is_some());
                assert!(unsafe { r.pop(c) }.is_some());
                assert!(unsafe { r.pop(c) }.is_none());
            }
            // The values stay in their slots until reused (2), plus nothing else.
            assert_eq!(Arc::strong_count(&v), 3);
            r.release(0);
            r.release(1);
            assert_eq!(r.claim(), None, "consumer 2 has not released");
            r.leave(2);
            let s = r.claim().expect("a consumer that left holds nothing back");
            drop(unsafe { r.commit(s, v.clone()) });
            // The slot's previous value was dropped when it was reused.
            assert_eq!(Arc::strong_count(&v), 3);
            let s = r.claim().unwrap();
            unsafe { r.abandon(s) };
            assert_eq!(Arc::strong_count(&v), 2, "a tombstone also clears its slot");
            assert!(unsafe { r.pop(0) }.is_some());
            assert!(unsafe { r.pop(0) }.is_none(), "tombstone skipped");
        }
        assert_eq!(
            Arc::strong_count(&v),
            1,
            "drop frees what the slots still hold"
        );
    }

    #[test]
    fn broadcast_under_concurrency_every_consumer_gets_every_value_in_order() {
        const PUBS: u64 = 2;
        const PER: u64 = 20_000;
        const CONSUMERS: usize = 3;
        let r = Arc::new(Ring::new(32, CONSUMERS));
        let pubs: Vec<_> = (0..PUBS)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        loop {
                            if let Some(s) = r.claim() {
                                drop(unsafe { r.commit(s, Arc::new((p, i))) });
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut last = [None::<u64>; PUBS as usize];
                    let mut got = 0;
                    while got < PUBS * PER {
                        match unsafe { r.pop(c) } {
                            Some(v) => {
                                let (p, i) = *v;
                                assert!(last[p as usize].is_none_or(|l| l + 1 == i));
                                last[p as usize] = Some(i);
                                got += 1;
                            }
                            None => {
                                r.release(c);
                                std::thread::yield_now();
                            }
                        }
                    }
                    r.release(c);
                    last
                })
            })
            .collect();
        for p in pubs {
            p.join().unwrap();
        }
        for c in consumers {
            assert_eq!(c.join().unwrap(), [Some(PER - 1); PUBS as usize]);
        }
    }

    /// A value whose drop panics (user code) when its slot is reused: the new value is
    /// committed first, so the consumers get it, and nothing is dropped twice.
    #[test]
    fn a_panicking_drop_of_the_previous_value_leaves_the_ring_consistent() {
        use std::sync::atomic::AtomicUsize;
        #[derive(Debug)]
        struct Bomb {
            armed: bool,
            id: u32,
            drops: Arc<AtomicUsize>,
        }
        impl Clone for Bomb {
            fn clone(&self) -> Self {
                Bomb {
                    armed: false,
                    id: self.id,
                    drops: self.drops.clone(),
                }
            }
        }
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.drops.fetch_add(1, Ordering::SeqCst);
                if self.armed {
                    panic!("boom");
                }
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let bomb = |armed, id| Bomb {
            armed,
            id,
            drops: drops.clone(),
        };
        {
            let r = Ring::new(1, 2);
            let s = r.claim().unwrap();
            drop(unsafe { r.commit(s, bomb(true, 0)) });
            for c in 0..2 {
                assert_eq!(unsafe { r.pop(c) }.map(|b| b.id), Some(0));
                r.release(c);
            }
            assert_eq!(drops.load(Ordering::SeqCst), 2, "the two clones");
            let s = r.claim().unwrap();
            // The caller drops the slot's previous value after its own bookkeeping.
            let previous = unsafe { r.commit(s, bomb(false, 1)) };
            let reuse = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(previous)));
            assert!(reuse.is_err(), "the old value's drop panicked");
            assert_eq!(drops.load(Ordering::SeqCst), 3, "dropped once");
            assert_eq!(
                unsafe { r.pop(0) }.map(|b| b.id),
                Some(1),
                "committed anyway"
            );
        }
        // The clone just received, and the value left in the ring: once each.
        assert_eq!(drops.load(Ordering::SeqCst), 5);
    }
}

#[cfg(test)]
#[cfg(bus_loom)]
#[path = "ring_loom.rs"]
mod loom_tests;
