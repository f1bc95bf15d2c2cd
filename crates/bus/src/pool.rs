//! A lock-free pool of reference-counted envelope slots, used for zero-copy fan-out.
//!
//! A slot is checked out by the publisher, filled once, and handed to `n` subscribers as
//! `n` [`SharedRef`]s. The last `SharedRef` to drop destroys the envelope in place and
//! pushes the empty slot back on the free list (a bounded lock-free queue); if the free
//! list is full the slot is freed. Checked-out slots keep the pool alive (one strong count
//! each), so a handle may outlive the bus that published it.

use crate::envelope::Envelope;
use crate::sync::{fence, Arc, AtomicU64, AtomicUsize, BoundedQueue, Cell, Ordering};
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::ptr::NonNull;

struct Slot<T> {
    refs: AtomicUsize,
    env: Cell<MaybeUninit<Envelope<T>>>,
    pool: *const Pool<T>,
}

struct SlotPtr<T>(NonNull<Slot<T>>);

// SAFETY: a SlotPtr in the free list refers to an empty slot owned by the list; moving it
// between threads moves that ownership.
unsafe impl<T: Send + Sync> Send for SlotPtr<T> {}
// SAFETY: as above; the list never hands out shared access to one slot.
unsafe impl<T: Send + Sync> Sync for SlotPtr<T> {}

pub(crate) struct Pool<T> {
    free: BoundedQueue<SlotPtr<T>>,
    allocated: AtomicU64,
    reused: AtomicU64,
}

/// Pool counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolMetrics {
    /// Slots allocated since start (grows only while the free list runs dry).
    pub allocated: u64,
    /// Checkouts served from the free list.
    pub reused: u64,
    /// Slots on the free list now.
    pub free: u64,
}

impl<T: Send + Sync> Pool<T> {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            free: BoundedQueue::new(capacity.max(1)),
            allocated: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        })
    }

    /// Pre-allocates up to `n` slots onto the free list.
    pub(crate) fn prefill(pool: &Arc<Self>, n: usize) {
        for _ in 0..n.min(pool.free.capacity()) {
            let ptr = Self::alloc_slot(pool);
            if let Err(p) = pool.free.push(ptr) {
                // SAFETY: the slot was just allocated by Box and is empty.
                unsafe { drop(Box::from_raw(p.0.as_ptr())) };
                break;
            }
        }
    }

    fn alloc_slot(pool: &Arc<Self>) -> SlotPtr<T> {
        pool.allocated.fetch_add(1, Ordering::Relaxed);
        let b = Box::new(Slot {
            refs: AtomicUsize::new(0),
            env: Cell::new(MaybeUninit::uninit()),
            pool: Arc::as_ptr(pool),
        });
        SlotPtr(NonNull::from(Box::leak(b)))
    }

    /// Fills a slot with `env` and returns a factory for exactly `refs` handles.
    pub(crate) fn checkout(pool: &Arc<Self>, env: Envelope<T>, refs: usize) -> SlotHandles<T> {
        debug_assert!(refs > 0);
        let ptr = match pool.free.pop() {
            Some(p) => {
                pool.reused.fetch_add(1, Ordering::Relaxed);
                p
            }
            None => Self::alloc_slot(pool),
        };
        // The checked-out slot owns one strong count of the pool until it is returned.
        // SAFETY: `pool` is a live Arc, so its pointer is valid and the count is ≥ 1.
        unsafe { Arc::increment_strong_count(Arc::as_ptr(pool)) };
        // SAFETY: the slot came off the free list (or was just allocated): nobody else
        // references it, and its envelope is uninitialised.
        let slot = unsafe { ptr.0.as_ref() };
        slot.env.with_mut(|e| unsafe { (*e).write(env) });
        slot.refs.store(refs, Ordering::Relaxed);
        SlotHandles {
            ptr: ptr.0,
            remaining: refs,
        }
    }

    pub(crate) fn metrics(&self) -> PoolMetrics {
        PoolMetrics {
            allocated: self.allocated.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            free: self.free.len() as u64,
        }
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        while let Some(p) = self.free.pop() {
            // SAFETY: slots on the free list are empty, owned by the list, and were
            // allocated with Box.
            unsafe { drop(Box::from_raw(p.0.as_ptr())) };
        }
    }
}

/// Hands out the `refs` handles of one checked-out slot. Unused handles are released on
/// drop, so a slot is never leaked if a target disappears mid-publish.
pub(crate) struct SlotHandles<T> {
    ptr: NonNull<Slot<T>>,
    remaining: usize,
}

// SAFETY: SlotHandles only creates SharedRefs, which are Send for T: Send + Sync.
unsafe impl<T: Send + Sync> Send for SlotHandles<T> {}

impl<T: Send + Sync> SlotHandles<T> {
    /// The next handle, if any are left.
    pub(crate) fn take(&mut self) -> Option<SharedRef<T>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(SharedRef(self.ptr))
    }
}

impl<T> Drop for SlotHandles<T> {
    fn drop(&mut self) {
        while self.remaining > 0 {
            self.remaining -= 1;
            drop(SharedRef(self.ptr));
        }
    }
}

/// One subscriber's reference to a shared envelope slot.
pub(crate) struct SharedRef<T>(NonNull<Slot<T>>);

// SAFETY: the envelope is only read through shared references while handles exist, and
// T: Send + Sync makes sharing and sending those reads sound.
unsafe impl<T: Send + Sync> Send for SharedRef<T> {}
// SAFETY: see above.
unsafe impl<T: Send + Sync> Sync for SharedRef<T> {}

impl<T> Deref for SharedRef<T> {
    type Target = Envelope<T>;

    #[inline]
    fn deref(&self) -> &Envelope<T> {
        // SAFETY: while any handle exists the slot is checked out and its envelope is
        // initialised; it is only mutated after the last handle drops.
        unsafe { self.0.as_ref() }
            .env
            .with(|e| unsafe { (*e).assume_init_ref() })
    }
}

impl<T> Drop for SharedRef<T> {
    fn drop(&mut self) {
        // SAFETY: the slot is checked out (we hold a reference count).
        let slot = unsafe { self.0.as_ref() };
        if slot.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let pool = slot.pool;
        // SAFETY: we were the last handle: nobody else reads the envelope, so it can be
        // dropped in place, and the slot is ours to return.
        slot.env.with_mut(|e| unsafe { (*e).assume_init_drop() });
        // SAFETY: the pool is alive because this checked-out slot owns a strong count;
        // after the push we touch only `pool`, never the slot.
        unsafe {
            if let Err(p) = (*pool).free.push(SlotPtr(self.0)) {
                drop(Box::from_raw(p.0.as_ptr()));
            }
            Arc::decrement_strong_count(pool);
        }
    }
}

// Real threads and std's atomics; the loom build runs `loom_tests` instead.
#[cfg(test)]
#[cfg(not(bus_loom))]
mod tests {
    use super::*;
    use crate::types::{CorrelationId, EventId, Priority, Timestamp};

    fn env(v: String) -> Envelope<String> {
        Envelope {
            id: EventId(1),
            correlation: CorrelationId(2),
            causation: None,
            source: "test",
            priority: Priority::Normal,
            timestamp: Timestamp(0),
            payload: v,
        }
    }

    #[test]
    fn slots_are_recycled_and_payload_dropped_once() {
        let pool = Pool::<String>::new(4);
        Pool::prefill(&pool, 2);
        assert_eq!(pool.metrics().allocated, 2);
        for i in 0..100 {
            let mut h = Pool::checkout(&pool, env(format!("v{i}")), 3);
            let a = h.take().unwrap();
            let b = h.take().unwrap();
            let c = h.take().unwrap();
            assert!(h.take().is_none());
            assert_eq!(a.payload, format!("v{i}"));
            assert!(std::ptr::eq(&*a, &*b) && std::ptr::eq(&*b, &*c));
            drop((a, b));
            assert_eq!(c.payload, format!("v{i}"));
        }
        let m = pool.metrics();
        assert_eq!(m.allocated, 2, "no allocation beyond the prefill");
        assert_eq!(m.reused, 100);
        assert_eq!(Arc::strong_count(&pool), 1, "every slot returned its count");
    }

    #[test]
    fn unused_handles_release_the_slot() {
        let pool = Pool::<String>::new(4);
        let mut h = Pool::checkout(&pool, env("x".into()), 5);
        let a = h.take().unwrap();
        drop(h); // 4 untaken handles released
        assert_eq!(a.payload, "x");
        drop(a);
        assert_eq!(pool.metrics().free, 1);
        assert_eq!(Arc::strong_count(&pool), 1);
    }

    #[test]
    fn handle_outlives_pool_owner() {
        let pool = Pool::<String>::new(1);
        let mut h = Pool::checkout(&pool, env("late".into()), 1);
        let a = h.take().unwrap();
        drop(h);
        drop(pool); // the slot keeps the pool alive
        assert_eq!(a.payload, "late");
        drop(a); // returns to the pool, which is then freed
    }

    #[test]
    fn overflowing_free_list_frees_slots() {
        let pool = Pool::<String>::new(1);
        let mut handles = Vec::new();
        for i in 0..3 {
            let mut h = Pool::checkout(&pool, env(i.to_string()), 1);
            handles.push(h.take().unwrap());
        }
        drop(handles);
        let m = pool.metrics();
        assert_eq!(m.allocated, 3);
        assert_eq!(m.free, 1);
        assert_eq!(Arc::strong_count(&pool), 1);
    }

    #[test]
    fn concurrent_release_returns_every_slot() {
        let pool = Pool::<String>::new(64);
        for round in 0..200 {
            let mut h = Pool::checkout(&pool, env(round.to_string()), 4);
            let refs: Vec<_> = (0..4).map(|_| h.take().unwrap()).collect();
            let threads: Vec<_> = refs
                .into_iter()
                .map(|r| std::thread::spawn(move || assert_eq!(r.payload, round.to_string())))
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        assert_eq!(Arc::strong_count(&pool), 1);
        assert!(pool.metrics().allocated <= 2);
    }
}

#[cfg(test)]
#[cfg(bus_loom)]
#[path = "pool_loom.rs"]
mod loom_tests;
