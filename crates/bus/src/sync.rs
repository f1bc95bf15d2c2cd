//! The atomics, `Arc`, value cells and free list that the lock-free parts of the bus (the
//! ring and the envelope pool) are built on. Under `--cfg bus_loom` they are loom's, so
//! that the loom model tests (`ring_loom.rs`, `pool_loom.rs`) explore every interleaving
//! of those parts' threads and check every access to a cell for a data race; otherwise
//! they are std's and crossbeam's, and the shim compiles to the plain accesses.

#[cfg(bus_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(bus_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(not(bus_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(bus_loom))]
pub(crate) use std::sync::Arc;

/// An `UnsafeCell` accessed through closures, as loom's is (so its accesses can be
/// tracked under loom; with std's cell the closures are inlined away).
pub(crate) struct Cell<T>(
    #[cfg(not(bus_loom))] std::cell::UnsafeCell<T>,
    #[cfg(bus_loom)] loom::cell::UnsafeCell<T>,
);

impl<T> Cell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(bus_loom))]
        return Self(std::cell::UnsafeCell::new(value));
        #[cfg(bus_loom)]
        return Self(loom::cell::UnsafeCell::new(value));
    }

    /// Calls `f` with a pointer for reading.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(bus_loom))]
        return f(self.0.get());
        #[cfg(bus_loom)]
        return self.0.with(f);
    }

    /// Calls `f` with a pointer for writing.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(bus_loom))]
        return f(self.0.get());
        #[cfg(bus_loom)]
        return self.0.with_mut(f);
    }
}

/// The value of an atomic the caller holds exclusively.
#[inline]
pub(crate) fn exclusive(a: &mut AtomicU64) -> u64 {
    #[cfg(not(bus_loom))]
    return *a.get_mut();
    #[cfg(bus_loom)]
    return a.with_mut(|v| *v);
}

/// A bounded multi-producer multi-consumer queue: crossbeam's lock-free `ArrayQueue`, or
/// under loom a mutex-guarded deque (loom cannot see inside crossbeam's atomics; the
/// pool's own protocol is what its model tests check, given a correct queue).
pub(crate) struct BoundedQueue<T> {
    #[cfg(not(bus_loom))]
    q: crossbeam_queue::ArrayQueue<T>,
    #[cfg(bus_loom)]
    q: loom::sync::Mutex<std::collections::VecDeque<T>>,
    #[cfg(bus_loom)]
    cap: usize,
}

impl<T> BoundedQueue<T> {
    /// A queue of `cap` (≥ 1) elements.
    pub(crate) fn new(cap: usize) -> Self {
        #[cfg(not(bus_loom))]
        return Self {
            q: crossbeam_queue::ArrayQueue::new(cap),
        };
        #[cfg(bus_loom)]
        return Self {
            q: loom::sync::Mutex::new(std::collections::VecDeque::new()),
            cap,
        };
    }

    /// Appends `v`, or hands it back if the queue is full.
    pub(crate) fn push(&self, v: T) -> Result<(), T> {
        #[cfg(not(bus_loom))]
        return self.q.push(v);
        #[cfg(bus_loom)]
        {
            let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() == self.cap {
                return Err(v);
            }
            q.push_back(v);
            Ok(())
        }
    }

    /// The oldest element, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(not(bus_loom))]
        return self.q.pop();
        #[cfg(bus_loom)]
        return self.q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
    }

    /// How many elements it holds now.
    pub(crate) fn len(&self) -> usize {
        #[cfg(not(bus_loom))]
        return self.q.len();
        #[cfg(bus_loom)]
        return self.q.lock().unwrap_or_else(|e| e.into_inner()).len();
    }

    /// How many elements it can hold.
    pub(crate) fn capacity(&self) -> usize {
        #[cfg(not(bus_loom))]
        return self.q.capacity();
        #[cfg(bus_loom)]
        return self.cap;
    }
}

/// Runs a loom model: every interleaving of `f`'s threads with at most `bound`
/// preemptions (bugs in lock-free code of this size show up within two or three). `f`
/// returns what the interleaving came to (say, how many claims succeeded); the distinct
/// outcomes are returned, so that a test can check its races went every way (loom did
/// explore them).
///
/// The model tests make no thread wait for another in a loop (a spinning thread
/// multiplies the interleavings past what loom can explore): each makes a bounded number
/// of attempts, and the main thread checks the result after joining the others.
#[cfg(test)]
#[cfg(bus_loom)]
pub(crate) fn model(
    bound: usize,
    f: impl Fn() -> usize + Sync + Send + 'static,
) -> std::collections::BTreeSet<usize> {
    let outcomes = std::sync::Arc::new(parking_lot::Mutex::new(std::collections::BTreeSet::new()));
    let seen = outcomes.clone();
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(move || {
        let outcome = f();
        seen.lock().insert(outcome);
    });
    let outcomes = outcomes.lock().clone();
    outcomes
}
