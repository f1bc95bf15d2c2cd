//! A shared value that changes rarely (the routing table), and a per-handle cache of it
//! that a publisher reads without any atomic read-modify-write.
//!
//! [`Swappable`] is a shared [`ArcSwap`]. A [`LocalCache`] reads it through an
//! [`arc_swap::Cache`], which keeps its own `Arc` of the value and, on each read, only
//! compares that with the current pointer (one load), reloading when something was
//! stored. A plain `ArcSwap` load on every publish costs two atomic read-modify-writes
//! (it registers and releases a debt slot), which drain the store buffer right after the
//! previous event's slot writes. `arc_swap::Cache::load` takes `&mut self`; what this
//! module adds is a cache per thread behind a shared publisher handle.
//!
//! A cache keeps up to [`WAYS`] copies, one per thread: each copy belongs to the first
//! thread that read through it (its *owner*), so a publisher whose task moves between a
//! runtime's worker threads keeps a copy on each. A further thread, and a nested read on
//! an owner thread (a payload's `Drop` that publishes through the same handle), falls
//! back to a plain `ArcSwap` load. So the copies need no synchronisation of their own.

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A value replaced as a whole (shared with the caches that read it).
pub(crate) struct Swappable<X> {
    current: Arc<ArcSwap<X>>,
}

impl<X> Swappable<X> {
    pub(crate) fn new(x: X) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(x)),
        }
    }

    /// Replaces the value. A read that starts after this returns sees the new value (a
    /// cache compares its copy with the pointer stored here).
    pub(crate) fn store(&self, x: X) {
        self.current.store(Arc::new(x));
    }
}

/// One thread's `arc_swap` cache of a [`Swappable`] value.
type ArcCache<X> = arc_swap::Cache<Arc<ArcSwap<X>>, Arc<X>>;

/// How many threads a [`LocalCache`] keeps a copy for: a 2-worker runtime and a couple of
/// other threads.
pub(crate) const WAYS: usize = 4;

/// Per-thread copies of a [`Swappable`] value (see the module docs).
pub(crate) struct LocalCache<X> {
    /// One copy per owner thread, each on cache lines of its own (its owner writes `busy`
    /// on every read).
    copies: [CachePadded<PerThread<X>>; WAYS],
}

/// One thread's copy.
struct PerThread<X> {
    /// The thread allowed to use the fields below (a [`thread_uid`]); 0 until one reads.
    owner: AtomicU64,
    /// A read through this copy is in progress on the owner thread.
    busy: Cell<bool>,
    /// Made at the owner's first read.
    cache: UnsafeCell<Option<ArcCache<X>>>,
}

// SAFETY: a copy's `busy` and `cache` are only touched by its owner thread
// (whose id is set once, by compare-and-swap from 0, and never changes; thread ids are
// never reused, even after a thread exits), or through `&mut self` (drop). The guards
// that keep a copy in use (`Cached::Local`, `Busy`) borrow a `Cell` and so cannot leave
// the owner thread. The `Arc<X>` inside is handed to other threads only as `&X`
// borrowed by the owner: X: Send + Sync.
unsafe impl<X: Send + Sync> Sync for LocalCache<X> {}

impl<X> Default for LocalCache<X> {
    fn default() -> Self {
        Self {
            copies: std::array::from_fn(|_| {
                CachePadded::new(PerThread {
                    owner: AtomicU64::new(0),
                    busy: Cell::new(false),
                    cache: UnsafeCell::new(None),
                })
            }),
        }
    }
}

/// A number unique to the calling thread for the life of the process (never reused, never 0).
#[inline]
fn thread_uid() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static UID: Cell<u64> = const { Cell::new(0) });
    UID.with(|u| match u.get() {
        0 => {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            u.set(id);
            id
        }
        id => id,
    })
}

/// Clears `busy` when the guard holding it drops, however the read ends (a panic while
/// the guard is held included).
pub(crate) struct Busy<'a>(&'a Cell<bool>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl<X> LocalCache<X> {
    /// Runs `f` on the current value of `src` (see [`get`](Self::get)).
    #[cfg(test)]
    pub(crate) fn with<R>(&self, src: &Swappable<X>, f: impl FnOnce(&X) -> R) -> R {
        f(&self.get(src))
    }

    /// The current value of `src`: this thread's copy if it has one (or can take a free
    /// one) and `src` has not changed since it was taken, a fresh load otherwise. (A
    /// guard rather than a closure: a publish's payload then needs no move into a closure
    /// and out again.)
    #[inline]
    pub(crate) fn get<'s>(&'s self, src: &'s Swappable<X>) -> Cached<'s, X> {
        let me = thread_uid();
        // The first copy is the common case: one thread publishing through the handle.
        let first = &self.copies[0];
        let owner = first.owner.load(Ordering::Relaxed);
        if owner == me {
            return first.read(src);
        }
        match self.copies.iter().find(|c| c.claim(me)) {
            Some(c) => c.read(src),
            None => Cached::Shared(src.current.load()),
        }
    }

    /// How many threads own a copy (tests).
    #[cfg(test)]
    fn owners(&self) -> usize {
        self.copies
            .iter()
            .filter(|c| c.owner.load(Ordering::Relaxed) != 0)
            .count()
    }
}

impl<X> PerThread<X> {
    /// Whether thread `me` owns this copy, taking it if it is free.
    #[inline]
    fn claim(&self, me: u64) -> bool {
        let owner = self.owner.load(Ordering::Relaxed);
        owner == me
            || (owner == 0
                && self
                    .owner
                    .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok())
    }

    /// Reads `src` through this copy. Only on its owner thread.
    #[inline(always)]
    fn read<'s>(&'s self, src: &'s Swappable<X>) -> Cached<'s, X> {
        if self.busy.get() {
            return Cached::Shared(src.current.load());
        }
        let busy = Busy(&self.busy);
        self.busy.set(true);
        // SAFETY: only the owner thread gets here (see `Sync` above), and not re-entrantly
        // (`busy`, reset when the returned guard drops): no other reference into `cache`
        // exists while this one, or the shared one made from it below, lives.
        let slot = unsafe { &mut *self.cache.get() };
        let cache = match slot {
            Some(cache) => cache,
            None => slot.insert(arc_swap::Cache::new(src.current.clone())),
        };
        // A handle reads one bus's table only.
        debug_assert!(std::ptr::eq(cache.arc_swap(), &*src.current));
        Cached::Local {
            value: cache.load(),
            _busy: busy,
        }
    }
}

/// A value read through a [`LocalCache`]: the owner's copy (in use until this drops), or
/// a plain load.
pub(crate) enum Cached<'s, X> {
    Local {
        value: &'s X,
        /// Marks the copy in use until the guard drops.
        _busy: Busy<'s>,
    },
    Shared(arc_swap::Guard<Arc<X>>),
}

impl<X> std::ops::Deref for Cached<'_, X> {
    type Target = X;

    #[inline]
    fn deref(&self) -> &X {
        match self {
            Cached::Local { value, .. } => value,
            Cached::Shared(g) => g,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_sees_every_store() {
        let src = Swappable::new(1u32);
        let cache = LocalCache::default();
        assert_eq!(cache.with(&src, |x| *x), 1);
        src.store(2);
        assert_eq!(cache.with(&src, |x| *x), 2);
        assert_eq!(cache.with(&src, |x| *x), 2);
        src.store(3);
        assert_eq!(cache.with(&src, |x| *x), 3);
    }

    #[test]
    fn another_thread_sees_the_current_value_and_stores_seen_here() {
        let src = Arc::new(Swappable::new(10u32));
        let cache = Arc::new(LocalCache::default());
        assert_eq!(cache.with(&src, |x| *x), 10);
        src.store(11);
        let (s, c) = (src.clone(), cache.clone());
        let seen = std::thread::spawn(move || {
            let first = c.with(&s, |x| *x);
            s.store(12);
            (first, c.with(&s, |x| *x))
        })
        .join()
        .unwrap();
        assert_eq!(seen, (11, 12));
        assert_eq!(cache.with(&src, |x| *x), 12);
    }

    /// Whether a read on this thread goes through a copy of its own, and what it sees.
    fn read_on_this_thread(cache: &LocalCache<u32>, src: &Swappable<u32>) -> (bool, u32) {
        let got = cache.get(src);
        (matches!(got, Cached::Local { .. }), *got)
    }

    #[test]
    fn each_thread_keeps_a_copy_of_its_own() {
        let src = Arc::new(Swappable::new(1u32));
        let cache = Arc::new(LocalCache::default());
        assert_eq!(read_on_this_thread(&cache, &src), (true, 1));
        let (s, c) = (src.clone(), cache.clone());
        let other = std::thread::spawn(move || {
            let first = read_on_this_thread(&c, &s);
            s.store(2);
            (first, read_on_this_thread(&c, &s))
        })
        .join()
        .unwrap();
        assert_eq!(other, ((true, 1), (true, 2)));
        assert_eq!(cache.owners(), 2);
        // This thread's copy sees the other thread's store.
        assert_eq!(read_on_this_thread(&cache, &src), (true, 2));
    }

    #[test]
    fn threads_beyond_the_copies_read_the_current_value() {
        let src = Arc::new(Swappable::new(0u32));
        let cache = Arc::new(LocalCache::default());
        let reads: Vec<(bool, u32)> = (0..WAYS as u32 + 2)
            .map(|k| {
                let (s, c) = (src.clone(), cache.clone());
                std::thread::spawn(move || {
                    s.store(k);
                    read_on_this_thread(&c, &s)
                })
                .join()
                .unwrap()
            })
            .collect();
        let expected: Vec<(bool, u32)> = (0..WAYS as u32 + 2)
            .map(|k| ((k as usize) < WAYS, k))
            .collect();
        assert_eq!(reads, expected);
        assert_eq!(cache.owners(), WAYS);
    }

    #[test]
    fn threads_reading_at_once_never_share_a_copy() {
        let src = Arc::new(Swappable::new(7u32));
        let cache = Arc::new(LocalCache::default());
        let n = WAYS + 3;
        let start = Arc::new(std::sync::Barrier::new(n));
        let held = Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (s, c, start, held) = (src.clone(), cache.clone(), start.clone(), held.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // Every thread holds its guard while the others claim.
                    let got = c.get(&s);
                    let copy = match &got {
                        // A copy is told apart by its `busy` flag (every copy's value is
                        // the same `X`).
                        Cached::Local { _busy, .. } => Some(_busy.0 as *const Cell<bool> as usize),
                        Cached::Shared(_) => None,
                    };
                    let seen = *got;
                    held.wait();
                    drop(got);
                    (copy, seen)
                })
            })
            .collect();
        let results: Vec<(Option<usize>, u32)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.iter().all(|(_, seen)| *seen == 7));
        let mut copies: Vec<usize> = results.iter().filter_map(|(c, _)| *c).collect();
        assert_eq!(copies.len(), WAYS, "one local read per copy, the rest load");
        copies.sort();
        copies.dedup();
        assert_eq!(copies.len(), WAYS, "no copy used by two threads");
        assert_eq!(cache.owners(), WAYS);
        assert!(cache.copies.iter().all(|c| !c.busy.get()));
    }

    #[test]
    fn a_nested_read_on_a_later_copy_loads_the_value() {
        let src = Arc::new(Swappable::new(String::from("a")));
        let cache = Arc::new(LocalCache::default());
        // This thread takes the first copy; another thread the second.
        assert_eq!(&*cache.get(&src), "a");
        let (s, c) = (src.clone(), cache.clone());
        let (outer, inner, nested_local) = std::thread::spawn(move || {
            let outer = c.get(&s);
            assert!(matches!(outer, Cached::Local { .. }));
            s.store(String::from("b"));
            let inner = c.get(&s);
            let nested_local = matches!(inner, Cached::Local { .. });
            ((*outer).clone(), (*inner).clone(), nested_local)
        })
        .join()
        .unwrap();
        assert_eq!(
            (outer.as_str(), inner.as_str(), nested_local),
            ("a", "b", false)
        );
        assert_eq!(cache.owners(), 2);
    }

    #[test]
    fn a_nested_read_does_not_touch_the_copy_in_use() {
        let src = Swappable::new(String::from("a"));
        let cache = LocalCache::default();
        let (outer, inner) = cache.with(&src, |x| {
            src.store(String::from("b"));
            // The outer borrow of the cached "a" stays valid.
            let inner = cache.with(&src, |y| y.clone());
            (x.clone(), inner)
        });
        assert_eq!((outer.as_str(), inner.as_str()), ("a", "b"));
        assert_eq!(cache.with(&src, |x| x.clone()), "b");
    }

    #[test]
    fn a_panic_inside_leaves_the_cache_usable() {
        let src = Swappable::new(5u32);
        let cache = LocalCache::default();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.with(&src, |_| panic!("inside"))
        }));
        assert!(r.is_err());
        src.store(6);
        assert_eq!(cache.with(&src, |x| *x), 6);
        assert!(!cache.copies[0].busy.get());
    }

    #[test]
    fn a_replaced_value_is_freed_once_the_cache_moves_on() {
        let src = Swappable::new(Arc::new(()));
        let probe = src.current.load_full();
        let cache = LocalCache::default();
        cache.with(&src, |_| ());
        let weak = Arc::downgrade(&probe);
        drop(probe);
        src.store(Arc::new(()));
        // Still held by the cache until its next read.
        assert!(weak.upgrade().is_some());
        cache.with(&src, |_| ());
        assert!(weak.upgrade().is_none());
    }
}
