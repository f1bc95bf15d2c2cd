//! The bus: routing table, publishers, subscriptions and receivers.

use crate::cache::{LocalCache, Swappable};
use crate::config::{ConfigError, EventBusConfig, OverflowPolicy};
use crate::envelope::{Envelope, Event, Repr};
use crate::metrics::{
    add_buckets, merged, BusMetrics, LaneMetrics, LatencyHistogram, LatencySummary, ShardMetrics,
    BUCKETS,
};
use crate::pool::{Pool, SlotHandles};
use crate::ring::Ring;
use crate::types::{CorrelationId, EventId, Message, Priority, Timestamp, Topic, TopicSet};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use thiserror::Error;
use tokio::sync::Notify;

/// Bits of an [`EventId`] that hold the shard index.
const SHARD_BITS: u32 = 10;

/// The most events a batch publish claims in one run (see `BusInner::publish_run`).
const MAX_RUN: usize = 64;

/// Called by a publish right after each claim of room in a ring, before it checks
/// whether the bus or the subscription closed meanwhile: the window where another
/// thread's close can land, which a test cannot otherwise place. Does nothing outside
/// this crate's unit tests (see `claim_hook`).
#[inline(always)]
fn claimed() {
    #[cfg(all(test, not(bus_loom)))]
    claim_hook::fire();
}

/// A unit test's hook into the claim-to-check window (see [`claimed`]).
#[cfg(all(test, not(bus_loom)))]
mod claim_hook {
    use std::cell::RefCell;

    thread_local! {
        static HOOK: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Runs `f` once, at this thread's next claim.
    pub(super) fn at_next_claim(f: impl FnOnce() + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    /// Whether a hook is still waiting for its claim.
    pub(super) fn pending() -> bool {
        HOOK.with(|h| h.borrow().is_some())
    }

    pub(super) fn fire() {
        // Taken out before it runs: a publish inside it claims without it.
        if let Some(f) = HOOK.with(|h| h.borrow_mut().take()) {
            f();
        }
    }
}

/// What [`BusInner::publish_run`] did with the front of a batch.
enum Run {
    /// Published this many (taken from the batch).
    Published(usize),
    /// The front does not start a run: it is routed on its own.
    None,
    /// A run of this many found no room in its ring: they are routed one by one (which
    /// decides on the full lane), without scanning them again.
    NoRoom(usize),
}

/// Most subscriptions a topic may have for its publishes to take the fan-out fast path
/// ([`BusInner::route_fanout`]), counting those whose filter turns the event away; a topic
/// with more takes the general path.
const FANOUT_MAX: usize = 8;

/// One target of a fan-out publish: a single-receiver subscription, its receiver group,
/// and that group's Block ring for the event's lane.
type Target<'a, T> = (&'a SubInner<T>, usize, &'a Ring<Event<T>>);

/// The claims of a fan-out publish ([`BusInner::route_fanout`]), in target order: if the
/// publish gives up or unwinds (a payload's `Clone` is user code and may panic), the
/// claims not committed are taken back, last first.
struct FanoutClaims<'a, T: Message> {
    targets: [Option<Target<'a, T>>; FANOUT_MAX],
    seqs: [u64; FANOUT_MAX],
    /// Targets claimed (`targets[..claimed]`).
    claimed: usize,
    /// Targets committed (`targets[..committed]`, `committed <= claimed`).
    committed: usize,
}

impl<'a, T: Message> FanoutClaims<'a, T> {
    /// Commits the next target not committed yet, with the event `make` builds in its
    /// slot, and returns that target's subscription and receiver group; `None` once every
    /// claimed target is committed. `make` may panic (a payload's `Clone`): nothing is
    /// written then, and the claim stays with the others for `drop` to give back.
    #[inline(always)]
    fn commit_next(&mut self, make: impl FnOnce() -> Event<T>) -> Option<(&'a SubInner<T>, usize)> {
        let k = self.committed;
        if k >= self.claimed {
            return None;
        }
        let (sub, g, ring) = self.targets[k]?;
        // SAFETY: claimed on this ring by this publish (`k < claimed`) and not committed
        // (`k == committed`); the ring has a single receiver, so it keeps no previous
        // value.
        unsafe { ring.commit_fresh_with(self.seqs[k], make) };
        self.committed = k + 1;
        Some((sub, g))
    }
}

impl<T: Message> Drop for FanoutClaims<'_, T> {
    fn drop(&mut self) {
        for k in (self.committed..self.claimed).rev() {
            if let Some((sub, g, ring)) = self.targets[k] {
                // SAFETY: claimed by this publish (`k < claimed`) and not committed
                // (`k >= committed`).
                unsafe { give_back(sub, &sub.groups[g], ring, self.seqs[k]) };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Publishing failed; the payload is handed back.
#[derive(Debug, Error, PartialEq)]
pub enum PublishError<T> {
    /// A subscriber's lane with the [`OverflowPolicy::Block`] policy is full; nothing was
    /// delivered to anyone. Retry later or use the async `publish`, which waits.
    #[error("a subscriber's lane is full (back-pressure)")]
    Full(T),
    /// The bus was closed.
    #[error("the bus is closed")]
    Closed(T),
}

impl<T> PublishError<T> {
    /// The payload that was not published.
    pub fn into_inner(self) -> T {
        match self {
            PublishError::Full(t) | PublishError::Closed(t) => t,
        }
    }
}

/// Receiving failed.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum RecvError {
    /// Events of a shed-policy lane were dropped on overflow: exactly this many since the
    /// last report. The next call returns events again.
    #[error("missed {0} events shed on overflow")]
    Lagged(u64),
    /// The subscription ended (the bus was closed or dropped, or another receiver of a
    /// sharded subscription was dropped), everything queued has been received, every
    /// loss reported, and no acknowledged publish is still landing.
    #[error("the bus is closed")]
    Closed,
}

/// Non-blocking receive failed.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued.
    #[error("no event queued")]
    Empty,
    /// See [`RecvError::Lagged`].
    #[error("missed {0} events shed on overflow")]
    Lagged(u64),
    /// See [`RecvError::Closed`].
    #[error("the bus is closed")]
    Closed,
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

/// What a subscription receives; decided at subscribe time and applied at publish time,
/// so a subscriber is never woken for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    topics: TopicSet,
    correlation: Option<CorrelationId>,
    min_priority: Priority,
}

impl Default for Filter {
    fn default() -> Self {
        Self::all()
    }
}

impl Filter {
    /// Everything.
    pub const fn all() -> Self {
        Self {
            topics: TopicSet::ALL,
            correlation: None,
            min_priority: Priority::Low,
        }
    }

    /// Only these topics.
    pub const fn topics(topics: TopicSet) -> Self {
        Self {
            topics,
            correlation: None,
            min_priority: Priority::Low,
        }
    }

    /// Only one topic.
    pub const fn topic(t: Topic) -> Self {
        Self::topics(TopicSet::of(&[t]))
    }

    /// Additionally, only events of this correlation id (one call).
    pub const fn correlation(mut self, c: CorrelationId) -> Self {
        self.correlation = Some(c);
        self
    }

    /// Additionally, only events of at least this priority.
    pub const fn min_priority(mut self, p: Priority) -> Self {
        self.min_priority = p;
        self
    }

    #[inline]
    fn admits(&self, c: CorrelationId, p: Priority) -> bool {
        p <= self.min_priority && self.correlation.is_none_or(|want| want == c)
    }
}

// ---------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------

/// One priority lane of a receiver group. Block lanes (never dropped) are [`Ring`]s: a
/// publisher's claim is its capacity reservation; the members of a broadcast
/// subscription share the ring, each with its own position. Shed lanes (drop oldest) are
/// `ArrayQueue`s, one per member, whose `force_push` displaces the oldest event safely
/// while the receiver may be reading.
// A handful of lanes per receiver group, made once: an indirection for the smaller
// variant's sake would cost a pointer chase on every publish and receive.
#[allow(clippy::large_enum_variant)]
enum Lane<T: Message> {
    Block(Ring<Event<T>>),
    Shed(Box<[ArrayQueue<Event<T>>]>),
}

impl<T: Message> Lane<T> {
    fn ring(&self) -> Option<&Ring<Event<T>>> {
        match self {
            Lane::Block(r) => Some(r),
            Lane::Shed(_) => None,
        }
    }

    /// Whether member `m` can take an event now (a tombstone counts: taking it is free).
    #[inline]
    fn ready(&self, m: usize) -> bool {
        match self {
            Lane::Block(r) => r.ready(m),
            Lane::Shed(q) => q.get(m).is_some_and(|q| !q.is_empty()),
        }
    }

    /// Whether something was pushed or claimed past member `m` (sleep check; SeqCst).
    #[inline]
    fn pending(&self, m: usize) -> bool {
        match self {
            Lane::Block(r) => r.claimed_ahead(m),
            Lane::Shed(q) => q.get(m).is_some_and(|q| !q.is_empty()),
        }
    }
}

/// Per (subscription, shard) counters. Queues are per receiver group, not per shard:
/// one call's events share a shard, a shard belongs to one group, and one FIFO per
/// (group, lane) keeps their order while the receiver drains a single queue per lane.
/// Per-shard depth is derived: enqueued (`SubInner::enqueued`) - delivered - displaced.
struct ShardStats {
    /// Taken out by the receiver, by priority (written by that receiver alone, on every
    /// delivery: a store, no read-modify-write).
    delivered: CachePadded<[AtomicU64; 4]>,
    /// Shed by the overflow policy, by priority: displaced from the queue, or refused.
    shed: [AtomicU64; 4],
    /// The part of `shed` that had been enqueued (displaced by shed-oldest).
    displaced: [AtomicU64; 4],
    /// Publish→receive latency, by priority.
    latency: [LatencyHistogram; 4],
}

impl ShardStats {
    fn new() -> Self {
        Self {
            delivered: CachePadded::new(Default::default()),
            shed: Default::default(),
            displaced: Default::default(),
            latency: std::array::from_fn(|_| LatencyHistogram::new()),
        }
    }

    /// Counts one delivery and its publish→receive latency. Single writer: a shard's
    /// statistics belong to one receiver.
    #[inline(always)]
    fn delivered_one(&self, prio: Priority, latency_ns: u64) {
        let d = &self.delivered[prio.index()];
        d.store(d.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.latency[prio.index()].record_single_writer(latency_ns);
    }
}

/// One receiver group of a subscription: its lanes and its members (one per receiver:
/// one, or several for a broadcast subscription).
struct Group<T: Message> {
    lanes: Box<[Lane<T>]>,
    members: Box<[Member]>,
    /// Publishes registered to deliver to this group's Shed lanes (or count a shed in
    /// it) right now. Block lanes are protected against a racing close by their claims;
    /// Shed lanes by this: at admission a publisher registers, then re-checks `closed`
    /// (SeqCst both), and a receiver that saw the close reports `Closed` only once no
    /// publish is registered. So an event acknowledged with `Ok` is received (or its
    /// shedding reported).
    in_flight: CachePadded<AtomicUsize>,
    /// The lanes ever published to (bit per lane), set before the first event (or claim)
    /// reaches a lane: a batch receive scans and watches only these. Read-mostly: each bit
    /// is set once.
    used: CachePadded<AtomicU8>,
}

impl<T: Message> Group<T> {
    /// Marks lane `lane` as published to, before anything is claimed or pushed in it.
    /// (SeqCst: a receiver that sees what follows sees the bit.)
    #[inline(always)]
    fn mark_used(&self, lane: usize) {
        let bit = 1u8 << lane;
        if self.used.load(Ordering::Relaxed) & bit == 0 {
            self.used.fetch_or(bit, Ordering::SeqCst);
        }
    }
}

/// One receiver's wake-up state and loss count.
struct Member {
    notify: Notify,
    sleeping: CachePadded<AtomicBool>,
    /// Events shed from this member's queues (all lanes): reported to its receiver.
    shed: CachePadded<AtomicU64>,
    /// False once its receiver is gone (a broadcast member that left).
    present: AtomicBool,
}

impl Member {
    fn new() -> Self {
        Self {
            notify: Notify::new(),
            sleeping: CachePadded::new(AtomicBool::new(false)),
            shed: CachePadded::new(AtomicU64::new(0)),
            present: AtomicBool::new(true),
        }
    }

    /// Wakes the receiver if it sleeps. Called after the event was pushed (or its shed
    /// counted). No fence is needed: the push advanced the queue's tail with a SeqCst CAS
    /// (the ring's claim, or crossbeam-queue 0.3 `ArrayQueue::force_push`), a shed is
    /// counted with a SeqCst RMW, and this load is SeqCst; the receiver stores `sleeping`
    /// (SeqCst), then fences (SeqCst) and re-checks the tails and the shed count. In the
    /// single total order of SeqCst operations, either the receiver's re-check sees the
    /// event or this load sees `sleeping` and wakes it.
    #[inline]
    fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    #[inline]
    fn is_present(&self) -> bool {
        self.present.load(Ordering::Relaxed)
    }
}

impl<T: Message> Group<T> {
    /// Wakes every present member that sleeps.
    #[inline]
    fn wake(&self) {
        for m in self.members.iter() {
            m.wake_if_sleeping();
        }
    }
}

struct SubInner<T: Message> {
    id: u64,
    filter: Filter,
    /// Counters per member and shard: `stats[member][shard]`.
    stats: Box<[Box<[ShardStats]>]>,
    /// Pushed into the group queues per shard, by priority (publishers). The same count
    /// for every member present: each gets every event (a member that left is no
    /// longer counted anywhere), so one counter serves them all.
    enqueued: Box<[CachePadded<[AtomicU64; 4]>]>,
    groups: Box<[Group<T>]>,
    /// Receivers per group that each get every event (broadcast); 1 otherwise.
    members: usize,
    closed: AtomicBool,
    receivers: AtomicUsize,
    space: Notify,
    space_waiters: AtomicUsize,
}

impl<T: Message> SubInner<T> {
    /// The receiver group that owns `shard`.
    #[inline]
    fn group_of(&self, shard: usize) -> usize {
        match self.groups.len() {
            1 => 0,
            n => shard % n,
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for g in self.groups.iter() {
            for m in g.members.iter() {
                m.notify.notify_one();
            }
        }
        self.space.notify_waiters();
    }
}

/// The shard an event was published on: the low bits of its id.
#[inline]
fn shard_of_id(id: EventId) -> usize {
    (id.0 & ((1u64 << SHARD_BITS) - 1)) as usize
}

struct RoutingTable<T: Message> {
    by_topic: Vec<Box<[Arc<SubInner<T>>]>>,
}

impl<T: Message> RoutingTable<T> {
    fn build(subs: &[Arc<SubInner<T>>]) -> Self {
        let by_topic = (0..Topic::COUNT as u8)
            .map(|t| {
                // A closed subscription is not routed (its receivers may still drain).
                subs.iter()
                    .filter(|s| {
                        s.filter.topics.contains(Topic::new(t)) && !s.closed.load(Ordering::SeqCst)
                    })
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_boxed_slice()
            })
            .collect();
        Self { by_topic }
    }
}

struct HistoryRing<T> {
    buf: Vec<Option<Envelope<T>>>,
    next: usize,
}

impl<T> HistoryRing<T> {
    /// The envelopes kept, oldest first (as recorded: one publisher's in its publish
    /// order, also where several share a timestamp, as a batch's events do).
    fn oldest_first(&self) -> impl Iterator<Item = &Envelope<T>> {
        let (newer, older) = self.buf.split_at(self.next);
        older.iter().chain(newer).flatten()
    }
}

struct BusShard<T> {
    published: CachePadded<[AtomicU64; 4]>,
    history: Option<Mutex<HistoryRing<T>>>,
}

/// Counters of subscriptions that have been removed, per shard.
struct Retired {
    delivered: [u64; 4],
    shed: [u64; 4],
    latency: [[u64; BUCKETS]; 4],
}

struct BusInner<T: Message + Clone> {
    config: EventBusConfig,
    retired: Mutex<Vec<Retired>>,
    shards: Box<[BusShard<T>]>,
    routes: Swappable<RoutingTable<T>>,
    subs: Mutex<Vec<Arc<SubInner<T>>>>,
    next_sub: AtomicU64,
    pool: Option<crate::sync::Arc<Pool<T>>>,
    clock: quanta::Clock,
    origin: u64,
    closed: AtomicBool,
    unrouted: CachePadded<AtomicU64>,
}

impl<T: Message + Clone> Drop for BusInner<T> {
    fn drop(&mut self) {
        for s in self.subs.get_mut().iter() {
            s.close();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Admit {
    Skip,
    /// A sequence number claimed in the subscriber's Block ring.
    Reserved(u64),
    Force,
    ShedNew,
}

/// Takes back (or commits as tombstones) the claims of a publish that did not deliver them:
/// on the `Full` path, and if anything panics between claim and commit, so a receiver
/// never waits on a claimed slot forever. Delivered entries are set to `Skip`.
struct ClaimGuard<'a, 'o, T: Message> {
    subs: &'a [Arc<SubInner<T>>],
    out: &'o mut Outcomes,
    shard: usize,
    lane: usize,
}

/// Takes back the claim `seq` on `ring` (a lane of `sub`'s receiver group `group`): room
/// given back wakes publishers waiting for it; a tombstone wakes the receiver, which must
/// pass it to free its slot.
///
/// # Safety
/// `seq` was claimed on `ring` and not committed.
unsafe fn give_back<T: Message>(
    sub: &SubInner<T>,
    group: &Group<T>,
    ring: &Ring<Event<T>>,
    seq: u64,
) {
    // SAFETY: forwarded.
    if unsafe { ring.unclaim(seq) } {
        if sub.space_waiters.load(Ordering::SeqCst) > 0 {
            sub.space.notify_waiters();
        }
    } else {
        group.wake();
    }
}

impl<T: Message> Drop for ClaimGuard<'_, '_, T> {
    fn drop(&mut self) {
        for (i, a) in self.out.as_mut_slice().iter_mut().enumerate() {
            if matches!(*a, Admit::Force | Admit::ShedNew) {
                // Delivered (or given up): the registration ends.
                *a = Admit::Skip;
                if let Some(sub) = self.subs.get(i) {
                    let group = &sub.groups[sub.group_of(self.shard)];
                    group.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                continue;
            }
            if let Admit::Reserved(seq) = *a {
                *a = Admit::Skip;
                let Some(sub) = self.subs.get(i) else {
                    continue;
                };
                let group = &sub.groups[sub.group_of(self.shard)];
                if let Some(r) = group.lanes[self.lane].ring() {
                    // SAFETY: `seq` was claimed on this ring by this publish and not
                    // committed (committed entries were set to `Skip`).
                    unsafe { give_back(sub, group, r, seq) };
                }
            }
        }
    }
}

/// Admission outcomes of one publish, one per subscriber of the topic, in order: on the
/// stack (and not initialised until written) for up to 32 subscribers.
struct Outcomes {
    inline: [MaybeUninit<Admit>; 32],
    heap: Vec<Admit>,
    len: usize,
}

impl Outcomes {
    #[inline]
    fn new(n: usize) -> Self {
        Self {
            inline: [const { MaybeUninit::uninit() }; 32],
            heap: if n > 32 {
                Vec::with_capacity(n)
            } else {
                Vec::new()
            },
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, a: Admit) {
        if self.heap.capacity() > 0 {
            self.heap.push(a);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            slot.write(a);
        }
        self.len += 1;
    }

    /// The outcomes pushed so far.
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [Admit] {
        if self.heap.capacity() > 0 {
            return &mut self.heap;
        }
        let n = self.len.min(32);
        // SAFETY: the first `len` entries were written by `push`.
        unsafe { &mut *(std::ptr::addr_of_mut!(self.inline[..n]) as *mut [Admit]) }
    }
}

/// Receivers to wake once a batch publish (or a publish through the general path) has
/// pushed its events, each once; beyond its inline room, receivers are woken right away.
struct WakeList<'a, T: Message> {
    pending: [Option<(&'a SubInner<T>, usize)>; 4],
    len: usize,
}

/// What one batch publish shares across its events: the receivers to wake at its end, and
/// its timestamp (the events of one call are published at the same instant).
struct Batch<'a, T: Message> {
    wakes: WakeList<'a, T>,
    timestamp: Timestamp,
}

/// Whatever happens after an event was committed (a payload's `Clone` or `Drop` may
/// panic), the receivers it was committed for are woken.
impl<T: Message> Drop for WakeList<'_, T> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<'a, T: Message> WakeList<'a, T> {
    #[inline]
    fn new() -> Self {
        Self {
            pending: [None; 4],
            len: 0,
        }
    }

    #[inline(always)]
    fn add(&mut self, sub: &'a SubInner<T>, group: usize) {
        let known = self.pending[..self.len]
            .iter()
            .flatten()
            .any(|(s, g)| std::ptr::eq(*s, sub) && *g == group);
        if known {
            return;
        }
        if self.len == self.pending.len() {
            sub.groups[group].wake();
            return;
        }
        self.pending[self.len] = Some((sub, group));
        self.len += 1;
    }

    #[inline]
    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        for (s, g) in self.pending[..self.len].iter().flatten() {
            s.groups[*g].wake();
        }
        self.len = 0;
    }
}

/// Everything a publish puts in its envelope but the id and the payload.
#[derive(Clone, Copy)]
struct Meta {
    correlation: CorrelationId,
    causation: Option<EventId>,
    source: &'static str,
    priority: Priority,
    timestamp: Timestamp,
}

impl Meta {
    /// The envelope. Built where it is stored when called there (a built envelope moved
    /// into its slot goes through the stack on the way).
    #[inline(always)]
    fn envelope<T>(self, id: EventId, payload: T) -> Envelope<T> {
        Envelope {
            id,
            correlation: self.correlation,
            causation: self.causation,
            source: self.source,
            priority: self.priority,
            timestamp: self.timestamp,
            payload,
        }
    }
}

/// Where a publish blocked: the subscription and lane to wait on.
struct Blocked<T: Message> {
    sub: Arc<SubInner<T>>,
    group: usize,
    lane: usize,
}

impl<T: Message + Clone> BusInner<T> {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(self.clock.delta_as_nanos(self.origin, self.clock.raw()))
    }

    #[inline]
    fn shard_of(&self, c: CorrelationId) -> usize {
        // Fibonacci hashing (a multiply by 2^64 / φ spreads consecutive ids evenly over
        // the high bits), then a multiply-shift range reduction of those high bits.
        let z = c.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(z) * self.shards.len() as u128) >> 64) as usize
    }

    #[inline]
    fn lane_index(&self, p: Priority) -> usize {
        if self.config.enable_priority {
            p.index()
        } else {
            0
        }
    }

    /// A new event id. One counter per (shard, priority) is both the published count and
    /// the id sequence: id = seq | priority | shard (the shard in the low bits).
    #[inline(always)]
    fn next_id(&self, shard_idx: usize, prio: Priority) -> EventId {
        let seq = self.shards[shard_idx].published[prio.index()].fetch_add(1, Ordering::Relaxed);
        EventId(
            (seq << (SHARD_BITS + 2)) | ((prio.index() as u64) << SHARD_BITS) | shard_idx as u64,
        )
    }

    /// The id of an event claimed in `sub`'s Block ring, counted as enqueued there. Called
    /// before the commit: no atomic read-modify-write follows the slot writes, so their
    /// cache-line transfers overlap with the next publish instead of stalling this one (a
    /// locked instruction waits for every earlier store).
    #[inline(always)]
    fn admit_one(&self, sub: &Arc<SubInner<T>>, shard_idx: usize, prio: Priority) -> EventId {
        let id = self.next_id(shard_idx, prio);
        sub.enqueued[shard_idx][prio.index()].fetch_add(1, Ordering::Relaxed);
        id
    }

    /// The one publish path. On `Full`, nothing was delivered and the blocked
    /// subscription is returned so an async publisher can wait on it. `batch` gathers the
    /// receivers to wake across a batch and gives its timestamp; without it (a single
    /// publish) the clock is read here, the fast path wakes its receiver right after the
    /// commit and the general path gathers its own.
    #[allow(clippy::type_complexity)]
    #[inline(always)]
    fn route<'a>(
        &'a self,
        table: &'a RoutingTable<T>,
        correlation: CorrelationId,
        causation: Option<EventId>,
        source: &'static str,
        payload: T,
        batch: Option<&mut Batch<'a, T>>,
    ) -> Result<EventId, (PublishError<T>, Option<Blocked<T>>)> {
        if self.closed.load(Ordering::Acquire) {
            return Err((PublishError::Closed(payload), None));
        }
        let prio = payload.priority();
        let subs = &table.by_topic[payload.topic().get() as usize];
        let shard_idx = self.shard_of(correlation);
        let lane_idx = self.lane_index(prio);
        // Everything that can be prepared is prepared before any claim: a publisher
        // preempted between its claim and its commit holds up its receivers.
        let meta = Meta {
            correlation,
            causation,
            source,
            priority: prio,
            timestamp: match &batch {
                Some(b) => b.timestamp,
                None => self.now(),
            },
        };

        // Fast path: one subscription for the topic (one receiver, or a broadcast group), a
        // Block lane with room, no history. Nothing between the claim and the commit can
        // fail or panic.
        if let [sub] = &subs[..] {
            let shard = &self.shards[shard_idx];
            if shard.history.is_none()
                && sub.filter.admits(correlation, prio)
                && !sub.closed.load(Ordering::Relaxed)
            {
                let g = sub.group_of(shard_idx);
                let group = &sub.groups[g];
                if let Lane::Block(ring) = &group.lanes[lane_idx] {
                    group.mark_used(lane_idx);
                    if let Some(seq) = ring.claim() {
                        claimed();
                        // Closed since the check above? Then the receiver may already
                        // have reported `Closed`: take the claim back. (SeqCst: pairs with
                        // the receiver's pending check after it saw the close.)
                        if sub.closed.load(Ordering::SeqCst) {
                            // SAFETY: claimed just above, not committed.
                            unsafe { give_back(sub, group, ring, seq) };
                            if self.closed.load(Ordering::SeqCst) {
                                return Err((PublishError::Closed(payload), None));
                            }
                            // Only this subscription ended: published to nobody.
                            self.unrouted.fetch_add(1, Ordering::Relaxed);
                            return Ok(self.next_id(shard_idx, prio));
                        }
                        let id = self.admit_one(sub, shard_idx, prio);
                        let make = || Event(Repr::Owned(meta.envelope(id, payload)));
                        let wake = || match batch {
                            Some(b) => b.wakes.add(sub, g),
                            None => group.wake(),
                        };
                        // Two branches, so that the common one moves no `Option` of a
                        // displaced value around (see `Ring::keeps_previous`).
                        if ring.keeps_previous() {
                            // SAFETY: claimed on this ring just above, committed once.
                            let displaced = unsafe { ring.commit_with(seq, make) };
                            wake();
                            // User code (the payload's `Drop`) last.
                            drop(displaced);
                        } else {
                            // SAFETY: as above; the ring keeps no previous value.
                            unsafe { ring.commit_fresh_with(seq, make) };
                            wake();
                        }
                        return Ok(id);
                    }
                    // Full: the general path decides (shed or back-pressure).
                }
            }
        }
        let env = meta.envelope(EventId(0), payload);
        self.route_general(subs, shard_idx, lane_idx, env, batch.map(|b| &mut b.wakes))
    }

    /// The fast path of a fan-out: the topic has at most [`FANOUT_MAX`] subscriptions, each
    /// with one receiver (no broadcast), no history is kept, and every subscription that
    /// takes the event (its filter admits it, it is open) has a Block lane with room. The
    /// event is claimed in every target's ring (or in none), then committed to each, built
    /// in its slot: a clone of the envelope for every target but the last, which gets the
    /// envelope itself; or, with `enable_zero_copy`, a handle each on one pooled envelope.
    /// Each target is counted and woken (or, for a batch, registered in `wakes`) once
    /// committed. A full lane
    /// under the Block policy returns the envelope with where to wait for room (nothing
    /// delivered). Anything else (a broadcast subscription, a Shed lane, a full lane under
    /// a shed policy, a subscription or the bus closing meanwhile, no target at all) hands
    /// the envelope back, nothing delivered, for the rest of the general path to decide.
    #[inline(always)]
    fn route_fanout<'a>(
        &'a self,
        subs: &'a [Arc<SubInner<T>>],
        shard_idx: usize,
        lane_idx: usize,
        mut env: Envelope<T>,
        mut wakes: Option<&mut WakeList<'a, T>>,
    ) -> Result<EventId, (Envelope<T>, Option<Blocked<T>>)> {
        if subs.len() > FANOUT_MAX
            || self.shards[shard_idx].history.is_some()
            || subs.iter().any(|s| s.members != 1)
        {
            return Err((env, None));
        }
        let (correlation, prio) = (env.correlation, env.priority);
        // 1. Room in every target's ring, or in none.
        let mut claims = FanoutClaims {
            targets: [None; FANOUT_MAX],
            seqs: [0; FANOUT_MAX],
            claimed: 0,
            committed: 0,
        };
        for sub in subs {
            if !sub.filter.admits(correlation, prio) || sub.closed.load(Ordering::Relaxed) {
                continue;
            }
            let g = sub.group_of(shard_idx);
            let group = &sub.groups[g];
            // Every subscription's lane of a priority is of the same kind (the bus's
            // overflow policy): a Shed lane turns the publish away at its first target,
            // before any claim.
            let Lane::Block(ring) = &group.lanes[lane_idx] else {
                return Err((env, None));
            };
            group.mark_used(lane_idx);
            let Some(seq) = ring.claim().inspect(|_| claimed()) else {
                // Full: `claims` takes back the others. Under the Block policy that is
                // the answer (nothing delivered, and where to wait for room); a shed
                // policy (a lane shared by all priorities) is the general path's to apply.
                let full =
                    (self.config.overflow.get(prio) == OverflowPolicy::Block).then(|| Blocked {
                        sub: sub.clone(),
                        group: g,
                        lane: lane_idx,
                    });
                return Err((env, full));
            };
            let k = claims.claimed;
            claims.targets[k] = Some((&**sub, g, ring));
            claims.seqs[k] = seq;
            claims.claimed = k + 1;
        }
        let n = claims.claimed;
        // Closed since the checks above (see `route`): nothing delivered, the claims
        // taken back, and the general path meets the close. (No target at all: the
        // general path counts the event as unrouted.)
        if n == 0
            || self.closed.load(Ordering::SeqCst)
            || claims.targets[..n]
                .iter()
                .flatten()
                .any(|(sub, _, _)| sub.closed.load(Ordering::SeqCst))
        {
            return Err((env, None));
        }
        // 2. Admitted: the id, then one commit per target, each counted and registered
        // for its wake-up right after.
        let id = self.next_id(shard_idx, prio);
        env.id = id;
        let mut delivered = |(sub, g): (&'a SubInner<T>, usize)| {
            sub.enqueued[shard_idx][prio.index()].fetch_add(1, Ordering::Relaxed);
            match &mut wakes {
                Some(w) => w.add(sub, g),
                None => sub.groups[g].wake(),
            }
        };
        let pool = self
            .pool
            .as_ref()
            .filter(|_| self.config.enable_zero_copy && n > 1);
        if let Some(pool) = pool {
            let mut handles = Pool::checkout(pool, env, n);
            while let Some(r) = handles.take() {
                let Some(target) = claims.commit_next(|| Event(Repr::Shared(r))) else {
                    break;
                };
                delivered(target);
            }
            return Ok(id);
        }
        // A clone, made in its slot, for every target but the last, which gets the
        // envelope.
        for _ in 1..n {
            let Some(target) = claims.commit_next(|| Event(Repr::Owned(env.clone()))) else {
                break;
            };
            delivered(target);
        }
        if let Some(target) = claims.commit_next(|| Event(Repr::Owned(env))) {
            delivered(target);
        }
        Ok(id)
    }

    /// The fast path of a batch publish: the run of events at the front of `batch` (up to
    /// [`MAX_RUN`]) that go to one Block ring (one subscription for their topic, one
    /// receiver group, one priority, all admitted by its filter; no history kept) takes its
    /// sequence numbers with one claim and is committed in order. Anything else (the
    /// front does not start such a run of at least two, the ring has no room, the
    /// subscription closed meanwhile) leaves the batch as it was, for the caller to route
    /// event by event.
    #[inline]
    fn publish_run<'a>(
        &'a self,
        table: &'a RoutingTable<T>,
        batch: &mut VecDeque<Outgoing<T>>,
        source: &'static str,
        shared: &mut Batch<'a, T>,
    ) -> Run {
        if self.closed.load(Ordering::Acquire) {
            return Run::None;
        }
        let Some(front) = batch.front() else {
            return Run::None;
        };
        let (prio, topic) = (front.payload.priority(), front.payload.topic());
        let [sub] = &table.by_topic[topic.get() as usize][..] else {
            return Run::None;
        };
        let g = sub.group_of(self.shard_of(front.correlation));
        let group = &sub.groups[g];
        let lane_idx = self.lane_index(prio);
        let Lane::Block(ring) = &group.lanes[lane_idx] else {
            return Run::None;
        };
        // A ring that hands back previous values (dropped after each commit), and a bus
        // keeping a history, take the event-by-event path.
        if ring.keeps_previous()
            || self.config.history_capacity > 0
            || sub.closed.load(Ordering::Relaxed)
        {
            return Run::None;
        }
        // User code (`priority`, `topic`) runs here, before any claim.
        let mut len = 0;
        for o in batch.iter().take(MAX_RUN) {
            let shard = self.shard_of(o.correlation);
            if o.payload.priority() != prio
                || o.payload.topic() != topic
                || sub.group_of(shard) != g
                || !sub.filter.admits(o.correlation, prio)
            {
                break;
            }
            len += 1;
        }
        if len < 2 {
            return Run::None;
        }
        group.mark_used(lane_idx);
        let Some((first, got)) = ring.claim_run(len as u64) else {
            return Run::NoRoom(len);
        };
        claimed();
        if sub.closed.load(Ordering::SeqCst) {
            // Closed since the check above (see `route`): the claims are taken back, last
            // first, and the front event, routed on its own, meets the close.
            for k in (0..got).rev() {
                // SAFETY: claimed by the run just above, not committed.
                unsafe { give_back(sub, group, ring, first.wrapping_add(k)) };
            }
            return Run::None;
        }
        // Nothing from here to the last commit can fail or panic (no user code).
        let mut published = 0;
        for k in 0..got {
            let seq = first.wrapping_add(k);
            let Some(o) = batch.pop_front() else {
                // Not reached (`got` ≤ the events scanned), but a claim is never left
                // open.
                // SAFETY: claimed by the run, not committed.
                unsafe { ring.abandon(seq) };
                continue;
            };
            let id = self.admit_one(sub, self.shard_of(o.correlation), prio);
            let meta = Meta {
                correlation: o.correlation,
                causation: o.causation,
                source,
                priority: prio,
                timestamp: shared.timestamp,
            };
            // SAFETY: claimed by the run, committed once; the ring keeps no previous
            // value (checked above).
            unsafe {
                ring.commit_fresh_with(seq, || Event(Repr::Owned(meta.envelope(id, o.payload))))
            };
            published += 1;
        }
        shared.wakes.add(sub, g);
        if published == 0 {
            // Not reached (see above).
            return Run::None;
        }
        Run::Published(published)
    }

    /// The publish path for everything the fast path in [`route`](Self::route) does not
    /// take. A fan-out goes through [`route_fanout`](Self::route_fanout) first; what that
    /// leaves (broadcast subscriptions among several, more than [`FANOUT_MAX`]
    /// subscriptions, Shed lanes, a full lane under a shed policy, history) is handled
    /// here.
    #[allow(clippy::type_complexity)]
    #[inline(never)]
    fn route_general<'a>(
        &'a self,
        subs: &'a [Arc<SubInner<T>>],
        shard_idx: usize,
        lane_idx: usize,
        mut env: Envelope<T>,
        wakes: Option<&mut WakeList<'a, T>>,
    ) -> Result<EventId, (PublishError<T>, Option<Blocked<T>>)> {
        let mut wakes = wakes;
        if subs.len() > 1 {
            env = match self.route_fanout(subs, shard_idx, lane_idx, env, wakes.as_deref_mut()) {
                Ok(id) => return Ok(id),
                Err((env, Some(full))) => {
                    return Err((PublishError::Full(env.payload), Some(full)))
                }
                Err((env, None)) => env,
            };
        }
        let mut own = WakeList::new();
        let wakes = wakes.unwrap_or(&mut own);
        let (correlation, prio) = (env.correlation, env.priority);
        let policy = self.config.overflow.get(prio);
        // The history copy is made before any claim, and stored after the delivery: user
        // code (clone, drop) and the history lock stay out of the claim-to-commit window.
        let history_copy = self.shards[shard_idx].history.as_ref().map(|_| env.clone());

        // 1. Admission: claim room in every matching Block lane, or deliver nothing.
        let mut outcomes = Outcomes::new(subs.len());
        let guard = ClaimGuard {
            subs,
            out: &mut outcomes,
            shard: shard_idx,
            lane: lane_idx,
        };
        let mut targets = 0usize;
        // Event values to hand out: one per Block ring, one per member's Shed queue.
        let mut deliver = 0usize;
        // Broadcast receivers get their own copies (a broadcast ring keeps its value until
        // the slot is reused): no pooled slot when one is a target.
        let mut broadcast_target = false;
        for sub in subs.iter() {
            if !sub.filter.admits(correlation, prio) || sub.closed.load(Ordering::Relaxed) {
                guard.out.push(Admit::Skip);
                continue;
            }
            targets += 1;
            let lane = &sub.groups[sub.group_of(shard_idx)].lanes[lane_idx];
            let group = &sub.groups[sub.group_of(shard_idx)];
            group.mark_used(lane_idx);
            // Registers a Shed-lane delivery (see `Group::in_flight`); false if the
            // subscription closed meanwhile (the registration is then withdrawn).
            let register = || {
                group.in_flight.fetch_add(1, Ordering::SeqCst);
                let open = !sub.closed.load(Ordering::SeqCst);
                if !open {
                    group.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                open
            };
            let admit = match lane {
                Lane::Shed(_) if register() => Admit::Force,
                Lane::Shed(_) => {
                    targets -= 1;
                    guard.out.push(Admit::Skip);
                    continue;
                }
                Lane::Block(ring) => match ring.claim().inspect(|_| claimed()) {
                    // Closed since the check above (see the fast path): take it back.
                    Some(seq) if sub.closed.load(Ordering::SeqCst) => {
                        let group = &sub.groups[sub.group_of(shard_idx)];
                        // SAFETY: claimed just above, not committed.
                        unsafe { give_back(sub, group, ring, seq) };
                        targets -= 1;
                        guard.out.push(Admit::Skip);
                        continue;
                    }
                    Some(seq) => Admit::Reserved(seq),
                    None if policy == OverflowPolicy::ShedOldest => {
                        if !register() {
                            targets -= 1;
                            guard.out.push(Admit::Skip);
                            continue;
                        }
                        Admit::ShedNew
                    }
                    None => {
                        // `guard` abandons the claims made so far.
                        drop(guard);
                        return Err((
                            PublishError::Full(env.payload),
                            Some(Blocked {
                                sub: sub.clone(),
                                group: sub.group_of(shard_idx),
                                lane: lane_idx,
                            }),
                        ));
                    }
                },
            };
            guard.out.push(admit);
            match admit {
                Admit::Reserved(_) => {
                    deliver += 1;
                    broadcast_target |= sub.members > 1;
                }
                Admit::Force => {
                    broadcast_target |= sub.members > 1;
                    let group = &sub.groups[sub.group_of(shard_idx)];
                    deliver += if sub.members == 1 {
                        1
                    } else {
                        group.members.iter().filter(|m| m.is_present()).count()
                    };
                }
                Admit::Skip | Admit::ShedNew => {}
            }
        }

        // The bus closed while claiming: deliver nothing (`guard` takes the claims back).
        if self.closed.load(Ordering::SeqCst) {
            drop(guard);
            return Err((PublishError::Closed(env.payload), None));
        }

        // 2. Admitted: the id.
        let id = self.next_id(shard_idx, prio);
        env.id = id;
        if targets == 0 {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            self.remember(shard_idx, history_copy, id);
            return Ok(id);
        }

        // 3. Deliver.
        let shared = self.config.enable_zero_copy && deliver > 1 && !broadcast_target;
        let mut handles: Option<SlotHandles<T>> = None;
        let mut owned = Some(env);
        if shared {
            if let (Some(pool), Some(env)) = (&self.pool, owned.take()) {
                handles = Some(Pool::checkout(pool, env, deliver));
            }
        }
        let mut remaining = deliver;
        // The next event value: a pooled handle, a clone, or (the last) the envelope.
        let mut next_event = || {
            remaining = remaining.saturating_sub(1);
            match (&mut handles, &mut owned) {
                (Some(h), _) => h.take().map(|r| Event(Repr::Shared(r))),
                (None, Some(env)) if remaining > 0 => Some(Event(Repr::Owned(env.clone()))),
                (None, o) => o.take().map(|env| Event(Repr::Owned(env))),
            }
        };
        for (i, sub) in subs.iter().enumerate() {
            let admit = guard.out.as_mut_slice()[i];
            if admit == Admit::Skip {
                continue;
            }
            // A broadcast slot's value from its previous lap, dropped (user code) after
            // this target's bookkeeping and wake-up registration.
            let mut displaced = None;
            let g = sub.group_of(shard_idx);
            let group = &sub.groups[g];
            let lane = &group.lanes[lane_idx];
            // Broadcast members that left get nothing more; a single receiver always does
            // (even racing with a close: it may still be draining).
            let present = |m: &usize| sub.members == 1 || group.members[*m].is_present();
            match (admit, lane) {
                (Admit::ShedNew, _) => {
                    for m in (0..sub.members).filter(present) {
                        sub.stats[m][shard_idx].shed[prio.index()].fetch_add(1, Ordering::Relaxed);
                        // SeqCst: pairs with the receiver's sleep check (see
                        // `Member::wake_if_sleeping`).
                        group.members[m].shed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                (Admit::Reserved(seq), Lane::Block(ring)) => {
                    // Unreachable (one value per delivery); the guard takes the claim back.
                    let Some(ev) = next_event() else { continue };
                    // What a broadcast ring's `values_need_no_drop` relies on.
                    debug_assert!(sub.members == 1 || !ev.is_shared());
                    guard.out.as_mut_slice()[i] = Admit::Skip;
                    // SAFETY: claimed on this ring by this publish, committed once.
                    displaced = unsafe { ring.commit(seq, ev) };
                    sub.enqueued[shard_idx][prio.index()].fetch_add(1, Ordering::Relaxed);
                }
                (_, Lane::Shed(queues)) => {
                    let mut counted = false;
                    for (m, q) in queues.iter().enumerate().filter(|(m, _)| present(m)) {
                        let Some(ev) = next_event() else { break };
                        let stats = &sub.stats[m];
                        if !counted {
                            sub.enqueued[shard_idx][prio.index()].fetch_add(1, Ordering::Relaxed);
                            counted = true;
                        }
                        let old = q.force_push(ev);
                        if let Some(old) = &old {
                            // The displaced event may belong to another shard of this group.
                            let os = &stats[shard_of_id(old.id)];
                            os.shed[old.priority.index()].fetch_add(1, Ordering::Relaxed);
                            os.displaced[old.priority.index()].fetch_add(1, Ordering::Relaxed);
                            group.members[m].shed.fetch_add(1, Ordering::Release);
                        }
                        // Registered for a wake-up once the loss is counted (a receiver
                        // woken at once, when the list is full, sees it with the event),
                        // and before any more user code runs (the displaced event's drop,
                        // the next clone).
                        wakes.add(sub, g);
                        drop(old);
                    }
                }
                // Unreachable: Block lanes are always claimed. Never lose it silently.
                (_, Lane::Block(_)) => {
                    debug_assert!(false, "unclaimed Block lane");
                    for m in (0..sub.members).filter(present) {
                        let ss = &sub.stats[m][shard_idx];
                        ss.shed[prio.index()].fetch_add(1, Ordering::Relaxed);
                        ss.displaced[prio.index()].fetch_add(1, Ordering::Relaxed);
                        group.members[m].shed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            wakes.add(sub, g);
            drop(displaced);
        }
        drop(guard);
        self.remember(shard_idx, history_copy, id);
        Ok(id)
    }

    /// Stores a publish's envelope in its shard's history ring (when enabled).
    fn remember(&self, shard_idx: usize, copy: Option<Envelope<T>>, id: EventId) {
        if let (Some(h), Some(mut env)) = (&self.shards[shard_idx].history, copy) {
            env.id = id;
            let mut h = h.lock();
            let i = h.next;
            let old = h.buf[i].replace(env);
            h.next = (i + 1) % h.buf.len();
            drop(h);
            // The displaced envelope is dropped outside the lock.
            drop(old);
        }
    }

    async fn wait_for_room(&self, b: &Blocked<T>) {
        /// Counted as a waiter until dropped, also when the publish is cancelled.
        struct Waiting<'s>(&'s AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let sub = &b.sub;
        let lane = &sub.groups[b.group].lanes[b.lane];
        sub.space_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&sub.space_waiters);
        let notified = sub.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let room = lane.ring().is_none_or(Ring::has_room);
        if !room && !sub.closed.load(Ordering::SeqCst) && !self.closed.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    /// Rebuilds the routing table (closed subscriptions are left out).
    fn unroute(&self) {
        let subs = self.subs.lock();
        self.routes.store(RoutingTable::build(&subs));
    }

    /// Unroutes a subscription (idempotent) and keeps its counters in the retired totals,
    /// so the metrics never go backwards when a subscriber leaves.
    fn remove_sub(&self, id: u64) {
        let mut subs = self.subs.lock();
        let Some(pos) = subs.iter().position(|s| s.id == id) else {
            return;
        };
        let gone = subs.remove(pos);
        self.routes.store(RoutingTable::build(&subs));
        // Retired before the `subs` lock is released, so that a metrics snapshot sees the
        // counters either live or retired (lock order: subs, then retired).
        for m in 0..gone.members {
            self.retire_member(&gone, m);
        }
        drop(subs);
    }

    /// Moves a member's counters into the retired totals (once: the member is marked
    /// absent), so the metrics never go backwards when a receiver leaves.
    fn retire_member(&self, sub: &SubInner<T>, m: usize) {
        // Under the lock `metrics` holds while it reads: a snapshot sees the member's
        // counters either live or retired, never neither.
        let mut retired = self.retired.lock();
        let was_present = sub
            .groups
            .iter()
            .map(|g| g.members[m].present.swap(false, Ordering::SeqCst))
            .fold(false, |a, b| a | b);
        if !was_present {
            return;
        }
        for (ss, r) in sub.stats[m].iter().zip(retired.iter_mut()) {
            for p in 0..4 {
                r.delivered[p] += ss.delivered[p].load(Ordering::Relaxed);
            }
            for (p, n) in ss.shed.iter().enumerate() {
                r.shed[p] += n.load(Ordering::Relaxed);
            }
            for (h, r) in ss.latency.iter().zip(r.latency.iter_mut()) {
                h.add_into(r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// A domain-free in-process event bus. Cheap to clone (a handle); no global state: make as
/// many as you like.
///
/// ```
/// use call_engine_bus::*;
///
/// #[derive(Clone, Debug)]
/// struct Ping(u32);
/// impl Message for Ping {
///     fn priority(&self) -> Priority { Priority::Normal }
/// }
///
/// let bus = EventBus::<Ping>::new(EventBusConfig::default()).unwrap();
/// let mut rx = bus.subscribe(Filter::all());
/// let tx = bus.publisher("example");
/// let id = tx.try_publish(CorrelationId(1), None, Ping(7)).unwrap();
/// let ev = rx.try_recv().unwrap();
/// assert_eq!((ev.id, ev.payload.0, ev.source), (id, 7, "example"));
/// ```
pub struct EventBus<T: Message + Clone> {
    inner: Arc<BusInner<T>>,
}

impl<T: Message + Clone> Clone for EventBus<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Message + Clone> std::fmt::Debug for EventBus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// One event of a batch publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing<T> {
    /// Correlation id.
    pub correlation: CorrelationId,
    /// Causing event.
    pub causation: Option<EventId>,
    /// The event.
    pub payload: T,
}

impl<T: Message + Clone> EventBus<T> {
    /// A new bus; fails naming the offending field if the configuration is invalid.
    pub fn new(config: EventBusConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // Split the history exactly: the first `extra` shards keep one more.
        let base = config.history_capacity / config.shard_count;
        let extra = config.history_capacity % config.shard_count;
        let shards = (0..config.shard_count)
            .map(|i| (i, base + usize::from(i < extra)))
            .map(|(_, per_shard_history)| BusShard {
                published: CachePadded::new(Default::default()),
                history: (per_shard_history > 0).then(|| {
                    Mutex::new(HistoryRing {
                        buf: (0..per_shard_history).map(|_| None).collect(),
                        next: 0,
                    })
                }),
            })
            .collect();
        let pool = config.enable_zero_copy.then(|| {
            let p = Pool::new(config.pool_capacity);
            Pool::prefill(&p, config.pool_capacity.min(1024));
            p
        });
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Ok(Self {
            inner: Arc::new(BusInner {
                retired: Mutex::new(
                    (0..config.shard_count)
                        .map(|_| Retired {
                            delivered: [0; 4],
                            shed: [0; 4],
                            latency: [[0; BUCKETS]; 4],
                        })
                        .collect(),
                ),
                config,
                shards,
                routes: Swappable::new(RoutingTable::build(&[])),
                subs: Mutex::new(Vec::new()),
                next_sub: AtomicU64::new(1),
                pool,
                clock,
                origin,
                closed: AtomicBool::new(false),
                unrouted: CachePadded::new(AtomicU64::new(0)),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EventBusConfig {
        &self.inner.config
    }

    /// The shard that events of `c` go to.
    pub fn shard_of(&self, c: CorrelationId) -> usize {
        self.inner.shard_of(c)
    }

    /// Current monotonic bus time (the clock envelope timestamps use).
    pub fn now(&self) -> Timestamp {
        self.inner.now()
    }

    /// A publishing handle that stamps `source` on every envelope.
    pub fn publisher(&self, source: &'static str) -> Publisher<T> {
        Publisher {
            bus: self.inner.clone(),
            source,
            routes: LocalCache::default(),
        }
    }

    /// Subscribes one receiver to every shard.
    pub fn subscribe(&self, filter: Filter) -> Receiver<T> {
        self.subscribe_grouped(filter, 1).remove(0)
    }

    /// Subscribes with the shards split across `groups` receivers (clamped to
    /// `1..=shard_count`), each of which can be drained by its own task. Receiver `g` owns
    /// the shards `s` with `s % groups == g`, so one call's events always reach the same
    /// receiver, in order. Dropping any of the receivers ends the whole subscription.
    pub fn subscribe_sharded(&self, filter: Filter, groups: usize) -> Vec<Receiver<T>> {
        self.subscribe_grouped(filter, groups)
    }

    /// Subscribes `receivers` receivers that each get every event matching `filter`,
    /// sharing one queue per lane instead of one each: the publisher writes an event once
    /// and every receiver clones it out. This is the cheap way to fan one stream out to
    /// several consumers (a logger, statistics, API clients): a never-dropped lane is
    /// written once whatever the number of receivers (shed lanes, one per receiver, take
    /// a copy each), so publishing costs about the same
    /// for one receiver or many.
    ///
    /// Never-dropped lanes are shared, so the slowest receiver back-pressures publishers;
    /// shed lanes are per receiver, and each is told exactly what it missed. (With
    /// `enable_priority` off there is one shared lane: a shed-policy event that finds it
    /// full is dropped for every receiver, and each is told.) A receiver
    /// that is dropped leaves (it no longer holds anything back); the subscription ends
    /// when the last one is dropped. Pooled zero-copy slots are not used for these
    /// subscriptions (a receiver gets its own copy of each event).
    pub fn subscribe_broadcast(&self, filter: Filter, receivers: usize) -> Vec<Receiver<T>> {
        self.subscribe_inner(filter, 1, receivers.max(1))
    }

    fn subscribe_grouped(&self, filter: Filter, groups: usize) -> Vec<Receiver<T>> {
        self.subscribe_inner(filter, groups, 1)
    }

    fn subscribe_inner(&self, filter: Filter, groups: usize, members: usize) -> Vec<Receiver<T>> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let n_groups = groups.clamp(1, cfg.shard_count);
        let n_lanes = if cfg.enable_priority { 4 } else { 1 };
        let block = if cfg.enable_priority {
            Priority::ALL.map(|p| cfg.overflow.get(p) == OverflowPolicy::Block)
        } else {
            [true; 4]
        };
        let sub = Arc::new(SubInner {
            id: inner.next_sub.fetch_add(1, Ordering::Relaxed),
            filter,
            stats: (0..members)
                .map(|_| (0..cfg.shard_count).map(|_| ShardStats::new()).collect())
                .collect(),
            enqueued: (0..cfg.shard_count)
                .map(|_| CachePadded::new(Default::default()))
                .collect(),
            groups: (0..n_groups)
                .map(|_| Group {
                    lanes: (0..n_lanes)
                        .map(|l| {
                            if block[l] {
                                let ring = Ring::new(cfg.broadcast_capacity, members);
                                if members > 1 && !std::mem::needs_drop::<T>() {
                                    // SAFETY: a broadcast ring only ever holds owned
                                    // envelopes (publishes that reach a broadcast
                                    // subscription never use pooled slots, see
                                    // `route_general`), and an owned envelope of a payload
                                    // with no drop glue has none either.
                                    Lane::Block(unsafe { ring.values_need_no_drop() })
                                } else {
                                    Lane::Block(ring)
                                }
                            } else {
                                Lane::Shed(
                                    (0..members)
                                        .map(|_| ArrayQueue::new(cfg.broadcast_capacity))
                                        .collect(),
                                )
                            }
                        })
                        .collect(),
                    members: (0..members).map(|_| Member::new()).collect(),
                    in_flight: CachePadded::new(AtomicUsize::new(0)),
                    used: CachePadded::new(AtomicU8::new(0)),
                })
                .collect(),
            members,
            closed: AtomicBool::new(inner.closed.load(Ordering::Acquire)),
            receivers: AtomicUsize::new(n_groups * members),
            space: Notify::new(),
            space_waiters: AtomicUsize::new(0),
        });
        {
            let mut subs = inner.subs.lock();
            subs.push(sub.clone());
            inner.routes.store(RoutingTable::build(&subs));
            // A close that ran before the push did not see this subscription.
            if inner.closed.load(Ordering::SeqCst) {
                sub.close();
            }
        }
        (0..n_groups)
            .flat_map(|g| (0..members).map(move |m| (g, m)))
            .map(|(g, member)| {
                let shards: Box<[usize]> =
                    (0..cfg.shard_count).filter(|s| s % n_groups == g).collect();
                Receiver {
                    shards,
                    sub: sub.clone(),
                    bus: Arc::downgrade(inner),
                    group: g,
                    member,
                    order: LaneOrder {
                        last_lane: usize::MAX,
                        streak: 0,
                        floor: 0,
                        fair_lane: 0,
                        n_lanes,
                        starvation_limit: cfg.starvation_limit,
                        member,
                        moved: 0,
                    },
                    reported_shed: 0,
                    batch_size: cfg.batch_size,
                    clock: inner.clock.clone(),
                    origin: inner.origin,
                }
            })
            .collect()
    }

    /// Closes the bus: publishing fails with [`PublishError::Closed`]; receivers get
    /// everything already queued, then [`RecvError::Closed`].
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for s in self.inner.subs.lock().iter() {
            s.close();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// A snapshot of all metrics.
    pub fn metrics(&self) -> BusMetrics {
        let inner = &self.inner;
        let subs = inner.subs.lock().clone();
        let retired = inner.retired.lock();
        // Latency buckets by priority, over all shards.
        let mut all = [[0u64; BUCKETS]; 4];
        let shards = inner
            .shards
            .iter()
            .enumerate()
            .map(|(si, bs)| {
                let mut lanes = [LaneMetrics::default(); 4];
                let r = &retired[si];
                // This shard's latency buckets, by priority: the retired receivers' first.
                let mut buckets = r.latency;
                for (p, l) in lanes.iter_mut().enumerate() {
                    l.published = bs.published[p].load(Ordering::Relaxed);
                    l.delivered = r.delivered[p];
                    l.shed = r.shed[p];
                }
                let members = subs.iter().flat_map(|sub| {
                    (0..sub.members)
                        .filter(|&m| sub.groups[0].members[m].is_present())
                        .map(move |m| (&sub.stats[m], &sub.enqueued[si]))
                });
                for (stats, enqueued) in members {
                    let ss = &stats[si];
                    for (p, l) in lanes.iter_mut().enumerate() {
                        let enqueued = enqueued[p].load(Ordering::Relaxed);
                        let delivered = ss.delivered[p].load(Ordering::Relaxed);
                        let displaced = ss.displaced[p].load(Ordering::Relaxed);
                        l.depth += enqueued.saturating_sub(delivered + displaced);
                        l.delivered += delivered;
                        l.shed += ss.shed[p].load(Ordering::Relaxed);
                    }
                    for (h, b) in ss.latency.iter().zip(buckets.iter_mut()) {
                        h.add_into(b);
                    }
                }
                for (l, b) in lanes.iter_mut().zip(buckets.iter()) {
                    l.latency = LatencySummary::from_buckets(b);
                }
                for (a, b) in all.iter_mut().zip(buckets.iter()) {
                    add_buckets(a, b);
                }
                ShardMetrics {
                    shard: si,
                    lanes,
                    latency: LatencySummary::from_buckets(&merged(&buckets)),
                }
            })
            .collect();
        BusMetrics {
            shards,
            // Routed ones: a closed subscription still draining is counted in the
            // counters above, not here.
            subscriptions: subs
                .iter()
                .filter(|s| !s.closed.load(Ordering::Relaxed))
                .count(),
            unrouted: inner.unrouted.load(Ordering::Relaxed),
            pool: inner.pool.as_ref().map(|p| p.metrics()).unwrap_or_default(),
            lane_latency: all.each_ref().map(LatencySummary::from_buckets),
            latency: LatencySummary::from_buckets(&merged(&all)),
        }
    }

    /// The recent envelopes kept by the history ring, oldest first (by timestamp; those of
    /// one shard with equal timestamps, such as a batch's, in the order recorded). Empty
    /// when `history_capacity` is 0.
    pub fn history(&self) -> Vec<Envelope<T>> {
        let mut out: Vec<Envelope<T>> = Vec::new();
        for s in self.inner.shards.iter() {
            if let Some(h) = &s.history {
                out.extend(h.lock().oldest_first().cloned());
            }
        }
        // Stable: each shard's envelopes keep their recorded order among equal timestamps
        // (ids give no order across priorities).
        out.sort_by_key(|e| e.timestamp);
        out
    }

    /// The recent envelopes of one correlation id (one call), oldest first.
    pub fn history_of(&self, c: CorrelationId) -> Vec<Envelope<T>> {
        let shard = &self.inner.shards[self.inner.shard_of(c)];
        // One call's envelopes are all in its shard's ring, in their recorded order.
        match &shard.history {
            Some(h) => h
                .lock()
                .oldest_first()
                .filter(|e| e.correlation == c)
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Publishes recorded envelopes again, in order, keeping their correlation and source
    /// (ids and timestamps are new). For replaying a recorded log into components under
    /// test. Waits for room like [`Publisher::publish`].
    ///
    /// The cause chain is rebuilt: an envelope caused by one replayed before it gets
    /// that one's new id as its causation. A cause that is not part of the replay keeps
    /// its recorded id (it names an event of the recording bus).
    pub async fn replay(
        &self,
        envelopes: impl IntoIterator<Item = Envelope<T>>,
    ) -> Result<usize, PublishError<T>> {
        let mut new_ids: HashMap<EventId, EventId> = HashMap::new();
        let mut n = 0;
        for e in envelopes {
            let causation = e.causation.map(|c| new_ids.get(&c).copied().unwrap_or(c));
            let id = self
                .publisher(e.source)
                .publish(e.correlation, causation, e.payload)
                .await?;
            new_ids.insert(e.id, id);
            n += 1;
        }
        Ok(n)
    }
}

/// Publishes events with a fixed source name. Cheap to clone.
///
/// A publisher keeps a copy of the routing table for each of the first four threads that
/// publish through it (a task moving between a runtime's workers keeps one on each),
/// checked against the current table at every publish (so a new or removed
/// subscription is seen by the next publish). Further threads load the table at every
/// publish: for many threads, clone a publisher per thread. A copy stays with its thread
/// even after the thread exits (so short-lived threads publishing through a shared handle
/// use up its copies), and until that thread's next publish (or the handle's drop) it
/// holds on to the subscriptions of the table it last used, even those removed since.
// Aligned to 128 bytes: it writes its routing-table cache on every publish, and must not
// share a cache line with, say, a receiver that another thread keeps next to it.
#[repr(align(128))]
pub struct Publisher<T: Message + Clone> {
    bus: Arc<BusInner<T>>,
    source: &'static str,
    /// The routing table as the publishing thread last read it (see `cache.rs`).
    routes: LocalCache<RoutingTable<T>>,
}

impl<T: Message + Clone> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            source: self.source,
            routes: LocalCache::default(),
        }
    }
}

impl<T: Message + Clone> Publisher<T> {
    /// The source name stamped on envelopes.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Publishes without waiting. If any matching subscriber's Block lane is full, nothing
    /// is delivered and [`PublishError::Full`] hands the payload back.
    /// [`PublishError::Closed`] means the bus is closed; a single subscription that has
    /// ended simply does not get the event (if none is left, it counts as unrouted).
    #[inline]
    pub fn try_publish(
        &self,
        correlation: CorrelationId,
        causation: Option<EventId>,
        payload: T,
    ) -> Result<EventId, PublishError<T>> {
        self.route_once(correlation, causation, payload)
            .map_err(|(e, _)| e)
    }

    /// One routing attempt with the current table; the receiver it committed an event for
    /// on the fast path is woken right after the commit, those of the general path when
    /// it returns.
    #[inline]
    #[allow(clippy::type_complexity)]
    fn route_once(
        &self,
        correlation: CorrelationId,
        causation: Option<EventId>,
        payload: T,
    ) -> Result<EventId, (PublishError<T>, Option<Blocked<T>>)> {
        let table = self.routes.get(&self.bus.routes);
        self.bus
            .route(&table, correlation, causation, self.source, payload, None)
    }

    /// Publishes, waiting (asynchronously) while a Block lane of a matching subscriber is
    /// full. Fails only if the bus is closed.
    pub async fn publish(
        &self,
        correlation: CorrelationId,
        causation: Option<EventId>,
        mut payload: T,
    ) -> Result<EventId, PublishError<T>> {
        loop {
            let blocked = match self.route_once(correlation, causation, payload) {
                Ok(id) => return Ok(id),
                Err((PublishError::Full(p), Some(b))) => {
                    payload = p;
                    b
                }
                Err((e, _)) => return Err(e),
            };
            self.bus.wait_for_room(&blocked).await;
        }
    }

    /// Publishes from the front of `batch` until it is empty or a Block lane is full;
    /// published events are removed from `batch`. One routing-table read, one clock read
    /// (the events of one call carry the same timestamp: the instant of the call) and one
    /// wake-up per receiver for the whole batch; consecutive events bound for the same
    /// queue (same subscription, receiver, priority) claim their room together, up to 64
    /// at a time. Returns how many were published.
    pub fn try_publish_batch(
        &self,
        batch: &mut VecDeque<Outgoing<T>>,
    ) -> Result<usize, PublishError<()>> {
        let table = self.routes.get(&self.bus.routes);
        self.publish_front(&table, batch)
    }

    /// [`try_publish_batch`](Self::try_publish_batch) with one routing table.
    fn publish_front(
        &self,
        table: &RoutingTable<T>,
        batch: &mut VecDeque<Outgoing<T>>,
    ) -> Result<usize, PublishError<()>> {
        let mut shared = Batch {
            wakes: WakeList::new(),
            timestamp: self.bus.now(),
        };
        let mut n = 0;
        // Events still to route one by one before a run is tried again.
        let mut singles = 0usize;
        let result = loop {
            if singles == 0 {
                match self.bus.publish_run(table, batch, self.source, &mut shared) {
                    Run::Published(k) => {
                        n += k;
                        continue;
                    }
                    Run::NoRoom(len) => singles = len,
                    Run::None => singles = 1,
                }
            }
            singles -= 1;
            let Some(o) = batch.pop_front() else {
                break Ok(n);
            };
            match self.bus.route(
                table,
                o.correlation,
                o.causation,
                self.source,
                o.payload,
                Some(&mut shared),
            ) {
                Ok(_) => n += 1,
                Err((e, _)) => {
                    let full = matches!(e, PublishError::Full(_));
                    batch.push_front(Outgoing {
                        correlation: o.correlation,
                        causation: o.causation,
                        payload: e.into_inner(),
                    });
                    break Err(if full {
                        PublishError::Full(())
                    } else {
                        PublishError::Closed(())
                    });
                }
            }
        };
        // `shared.wakes` wakes the receivers once for the whole batch as it drops.
        result
    }

    /// Publishes every event of `batch` in order, waiting for room as needed. Returns how
    /// many were published; fails only if the bus is closed. Events published together
    /// share a timestamp; those published after a wait carry the later instant.
    pub async fn publish_batch(
        &self,
        batch: impl IntoIterator<Item = Outgoing<T>>,
    ) -> Result<usize, PublishError<T>> {
        let mut queue: VecDeque<Outgoing<T>> = batch.into_iter().collect();
        let mut n = 0;
        while !queue.is_empty() {
            let before = queue.len();
            match self.try_publish_batch(&mut queue) {
                Ok(k) => n += k,
                Err(PublishError::Closed(())) => {
                    return Err(PublishError::Closed(match queue.pop_front() {
                        Some(o) => o.payload,
                        None => return Ok(n),
                    }))
                }
                Err(PublishError::Full(())) => {
                    // Those published before the blocked one.
                    n += before - queue.len();
                    // Publish the blocked one with the waiting path, then continue batching.
                    if let Some(o) = queue.pop_front() {
                        self.publish(o.correlation, o.causation, o.payload).await?;
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Whether a lane above the one being drained has become ready, checked between two
/// events of a batch.
enum Watch<'a, T: Message> {
    /// A Block lane: the stamp of the receiver's next sequence, and its committed value.
    Stamp(&'a crate::sync::AtomicU64, u64),
    /// A Shed lane: the receiver's queue.
    Queue(&'a ArrayQueue<Event<T>>),
    Nothing,
}

impl<'a, T: Message> Watch<'a, T> {
    #[inline]
    fn of(lane: &'a Lane<T>, m: usize) -> Self {
        match lane {
            Lane::Block(r) => {
                let (stamp, committed) = r.watch(m);
                Watch::Stamp(stamp, committed)
            }
            Lane::Shed(q) => q.get(m).map_or(Watch::Nothing, Watch::Queue),
        }
    }

    #[inline(always)]
    fn ready(&self) -> bool {
        match self {
            Watch::Stamp(stamp, committed) => stamp.load(Ordering::Acquire) >> 1 == *committed,
            Watch::Queue(q) => !q.is_empty(),
            Watch::Nothing => false,
        }
    }
}

/// Where a receiver's drain order hands the events it takes: moved into a buffer, or
/// lent in place to a visitor.
trait Sink<T: Message> {
    /// Takes member `m`'s next value of a Block ring; false if none is committed.
    ///
    /// # Safety
    /// The caller is the receiver owning member position `m`, and it is present.
    unsafe fn take_from_ring(&mut self, ring: &Ring<Event<T>>, m: usize) -> bool;
    /// Takes an event popped from a Shed queue.
    fn take(&mut self, e: Event<T>);

    /// Takes up to `allowed` (≥ 1) of member `m`'s next values of a Block ring, in order,
    /// stopping early where none is committed or, after an event, where `stop` says so.
    /// Returns how many.
    ///
    /// # Safety
    /// As for [`take_from_ring`](Self::take_from_ring).
    #[inline]
    unsafe fn take_run_from_ring(
        &mut self,
        ring: &Ring<Event<T>>,
        m: usize,
        allowed: usize,
        stop: impl Fn() -> bool,
    ) -> usize {
        let mut got = 0;
        // SAFETY: forwarded.
        while got < allowed && unsafe { self.take_from_ring(ring, m) } {
            got += 1;
            if stop() {
                break;
            }
        }
        got
    }
}

/// One event (`try_recv`).
impl<T: Message + Clone> Sink<T> for Option<Event<T>> {
    #[inline]
    unsafe fn take_from_ring(&mut self, ring: &Ring<Event<T>>, m: usize) -> bool {
        // SAFETY: forwarded.
        *self = unsafe { ring.pop(m) };
        self.is_some()
    }

    #[inline]
    fn take(&mut self, e: Event<T>) {
        *self = Some(e);
    }
}

/// The first of the lanes in `used` (bit per lane) that member `m` can take an event from.
#[inline(always)]
fn first_ready<T: Message>(lanes: &[Lane<T>], used: u8, m: usize) -> Option<usize> {
    let mut left = used;
    while left != 0 {
        let l = left.trailing_zeros() as usize;
        left &= left - 1;
        if lanes.get(l).is_some_and(|lane| lane.ready(m)) {
            return Some(l);
        }
    }
    None
}

/// The receiver's drain order over its lanes: strict priority, with the starvation guard.
struct LaneOrder {
    /// The Shed lane the last event came from (`usize::MAX`: none).
    last_lane: usize,
    /// Consecutive deliveries since the receiver last caught up or the guard served a
    /// lower lane.
    streak: u32,
    /// The lowest-priority lane served during the streak: the guard serves only lanes
    /// below it (a streak of Low deliveries starves nothing, and must not make a Critical
    /// published after it wait behind one more Low).
    floor: usize,
    fair_lane: usize,
    n_lanes: usize,
    starvation_limit: u32,
    /// The receiver's member position (its consumer in rings, its queue in Shed lanes).
    member: usize,
    /// The Block lanes whose ring position may have moved since the last flush (bit per
    /// lane): the only ones whose room the flush gives back.
    moved: u8,
}

impl LaneOrder {
    /// Counts `k` deliveries from `lane` into the streak ahead of taking them: should a
    /// lent event's closure panic, the events taken before it still count (the guard then
    /// comes early, never late). Returns what [`settle`](Self::settle) needs.
    #[inline(always)]
    fn count_ahead(&mut self, lane: usize, k: u32) -> (u32, usize) {
        let before = (self.streak, self.floor);
        self.floor = if self.streak == 0 {
            lane
        } else {
            self.floor.max(lane)
        };
        self.streak = self.streak.saturating_add(k);
        before
    }

    /// Corrects the streak counted ahead to the `got` deliveries actually taken.
    #[inline(always)]
    fn settle(&mut self, (streak, floor): (u32, usize), got: u32) {
        self.streak = streak.saturating_add(got);
        if got == 0 {
            self.floor = floor;
        }
    }

    /// Pops from one lane. Block lanes: the ring's next stamp says whether anything is
    /// there, without touching the publishers' cache lines. Shed lanes: on the lane the
    /// last event came from, `pop` directly (on a non-empty queue it never reads the
    /// tail the publishers keep writing); elsewhere `is_empty` first, as `pop` on an
    /// empty queue costs a full fence.
    #[inline(always)]
    fn pop_lane<T: Message + Clone>(
        &mut self,
        lanes: &[Lane<T>],
        lane: usize,
        sink: &mut impl Sink<T>,
    ) -> bool {
        match lanes.get(lane) {
            None => false,
            // SAFETY: the receiver owning this member position is its only consumer, and
            // it calls this through `&mut self`; it is present (a receiver leaves only
            // when dropped).
            Some(Lane::Block(r)) => {
                self.moved |= 1 << lane;
                unsafe { sink.take_from_ring(r, self.member) }
            }
            Some(Lane::Shed(queues)) => {
                let Some(q) = queues.get(self.member) else {
                    return false;
                };
                if lane != self.last_lane && q.is_empty() {
                    return false;
                }
                match q.pop() {
                    Some(e) => {
                        self.last_lane = lane;
                        sink.take(e);
                        true
                    }
                    None => {
                        if lane == self.last_lane {
                            self.last_lane = usize::MAX;
                        }
                        false
                    }
                }
            }
        }
    }

    /// Hands up to `max` events to `sink`, in the order repeated [`pop`](Self::pop)s
    /// would give, but draining the top lane in a tight loop: between two events it
    /// only checks that no higher lane has become ready. Looks only at the lanes the
    /// group's publishers have used (a lane used for the first time meanwhile ends the
    /// run too). Returns how many.
    #[inline]
    fn pop_batch<T: Message + Clone>(
        &mut self,
        group: &Group<T>,
        sink: &mut impl Sink<T>,
        max: usize,
    ) -> usize {
        let lanes = &group.lanes[..];
        let mut n = 0;
        while n < max {
            if self.streak >= self.starvation_limit && self.n_lanes > 1 {
                // The guard's turn (rare): one event the way `pop` chooses it.
                if !self.pop(lanes, sink) {
                    return n;
                }
                n += 1;
                continue;
            }
            // A lane's bit is set before anything is claimed or pushed in it, so a receiver
            // that has seen anything of a lane (a stamp, a claim, a wake-up) sees its bit;
            // one that has not yet simply finds the lane at a later call.
            let used = group.used.load(Ordering::Acquire);
            let Some(top) = first_ready(lanes, used, self.member) else {
                // Caught up: nothing is being starved.
                self.streak = 0;
                return n;
            };
            // What the higher lanes' readiness depends on, worked out once: this loop
            // only moves through `top`.
            let mut higher = [Watch::Nothing, Watch::Nothing, Watch::Nothing];
            let mut watched = 0;
            let mut below = used & ((1u8 << top) - 1);
            while below != 0 {
                let l = below.trailing_zeros() as usize;
                below &= below - 1;
                if let (Some(w), Some(lane)) = (higher.get_mut(watched), lanes.get(l)) {
                    *w = Watch::of(lane, self.member);
                    watched += 1;
                }
            }
            let higher = &higher[..watched];
            // A higher lane that becomes ready, or a lane used for the first time.
            let stop =
                || higher.iter().any(Watch::ready) || group.used.load(Ordering::Relaxed) != used;
            if let Some(Lane::Block(ring)) = lanes.get(top) {
                // A run through one ring: stops where the lane is empty, where a higher
                // lane has become ready, or where the batch or the guard says so.
                // With one lane there is nothing to guard against.
                let until_guard = match self.n_lanes {
                    1 => usize::MAX,
                    _ => self.starvation_limit.saturating_sub(self.streak).max(1) as usize,
                };
                let allowed = (max - n).min(until_guard);
                self.moved |= 1 << top;
                let before = self.count_ahead(top, allowed.min(u32::MAX as usize) as u32);
                // SAFETY: as in `pop_lane`.
                let got = unsafe { sink.take_run_from_ring(ring, self.member, allowed, stop) };
                n += got;
                self.settle(before, got as u32);
                continue;
            }
            while n < max {
                let before = self.count_ahead(top, 1);
                if !self.pop_lane(lanes, top, sink) {
                    self.settle(before, 0);
                    break;
                }
                n += 1;
                if self.streak >= self.starvation_limit || stop() {
                    break;
                }
            }
        }
        n
    }

    /// One event in priority order, with the starvation guard, handed to `sink`.
    /// Returns false if there was none.
    #[inline]
    fn pop<T: Message + Clone>(&mut self, lanes: &[Lane<T>], sink: &mut impl Sink<T>) -> bool {
        // The guard counts consecutive deliveries (not empty polls), and serves a lane
        // *below* the one strict order would serve and below every lane the streak served:
        // serving one of those would leave the waiting lower lanes starved, and a lane
        // above them starved nothing.
        if self.streak >= self.starvation_limit && self.n_lanes > 1 {
            self.streak = 0;
            if let Some(top) = lanes.iter().position(|l| l.ready(self.member)) {
                for k in 0..3 {
                    let lane = 1 + (self.fair_lane + k) % 3;
                    if lane <= top.max(self.floor) {
                        continue;
                    }
                    if self.pop_lane(lanes, lane, sink) {
                        self.fair_lane = lane % 3;
                        return true;
                    }
                }
            }
        }
        for lane in 0..self.n_lanes {
            let before = self.count_ahead(lane, 1);
            if self.pop_lane(lanes, lane, sink) {
                return true;
            }
            self.settle(before, 0);
        }
        // Caught up: nothing is being starved.
        self.streak = 0;
        false
    }
}

/// Counts a receiver's deliveries as they are taken: delivered, and the publish→receive
/// latency.
struct Deliveries<'r> {
    /// The receiver's counters per shard.
    stats: &'r [ShardStats],
    clock: &'r quanta::Clock,
    origin: u64,
    /// A clock reading no earlier than the publish time of every event seen so far.
    now: u64,
}

impl<'r> Deliveries<'r> {
    fn new(stats: &'r [ShardStats], clock: &'r quanta::Clock, origin: u64) -> Self {
        Self {
            stats,
            clock,
            origin,
            now: 0,
        }
    }

    /// Counts one delivery (its shard is in the low bits of its id). The clock is read
    /// only for an event published after the last reading.
    #[inline(always)]
    fn count<T>(&mut self, e: &Envelope<T>) {
        let published = e.timestamp.as_nanos();
        if published > self.now {
            self.now = self.clock.delta_as_nanos(self.origin, self.clock.raw());
        }
        if let Some(ss) = self.stats.get(shard_of_id(e.id)) {
            ss.delivered_one(e.priority, self.now.saturating_sub(published));
        }
    }
}

/// Moves (or, for a broadcast receiver, clones) each event into a buffer
/// ([`Receiver::try_recv_batch`]), counting it as it is taken: if a payload's `Clone`
/// panics mid-batch, what was taken before is counted.
struct Collect<'r, 'b, T: Message> {
    counted: Deliveries<'r>,
    buf: &'b mut Vec<Event<T>>,
}

impl<T: Message + Clone> Sink<T> for Collect<'_, '_, T> {
    #[inline]
    unsafe fn take_from_ring(&mut self, ring: &Ring<Event<T>>, m: usize) -> bool {
        // SAFETY: forwarded.
        match unsafe { ring.pop(m) } {
            Some(e) => {
                self.take(e);
                true
            }
            None => false,
        }
    }

    #[inline]
    fn take(&mut self, e: Event<T>) {
        self.counted.count(&e);
        self.buf.push(e);
    }
}

/// Lends each event to the caller's closure in place ([`Receiver::try_recv_with`]), then
/// counts it.
struct Visitor<'r, F> {
    counted: Deliveries<'r>,
    f: F,
}

impl<F> Visitor<'_, F> {
    /// Counts the event as delivered, then lends it to the closure (lent once: if the
    /// closure panics, the event is not delivered again).
    #[inline(always)]
    fn see<T: Message>(&mut self, e: &Envelope<T>)
    where
        F: FnMut(&Envelope<T>),
    {
        self.counted.count(e);
        (self.f)(e);
    }
}

impl<T: Message + Clone, F: FnMut(&Envelope<T>)> Sink<T> for Visitor<'_, F> {
    #[inline(always)]
    unsafe fn take_from_ring(&mut self, ring: &Ring<Event<T>>, m: usize) -> bool {
        // SAFETY: forwarded.
        unsafe { ring.visit(m, |e| self.see(e)) }
    }

    #[inline(always)]
    unsafe fn take_run_from_ring(
        &mut self,
        ring: &Ring<Event<T>>,
        m: usize,
        allowed: usize,
        stop: impl Fn() -> bool,
    ) -> usize {
        // SAFETY: forwarded.
        unsafe { ring.visit_run(m, allowed, |e| self.see(e), stop) }
    }

    #[inline]
    fn take(&mut self, e: Event<T>) {
        // As in a ring: dropped once the closure returns, leaked if it panics (a
        // panicking `Drop` during the unwind would abort the process).
        let e = std::mem::ManuallyDrop::new(e);
        self.see(&e);
        drop(std::mem::ManuallyDrop::into_inner(e));
    }
}

/// Outcome of a batch receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchInfo {
    /// Events appended to the buffer.
    pub received: usize,
    /// Events shed before these (see [`RecvError::Lagged`]).
    pub missed: u64,
}

/// Receives the events of one subscription (or of one group of its shards).
// Aligned to 128 bytes: its drain state is written on every receive, and
// must not share a cache line with a publisher another thread keeps next to it.
#[repr(align(128))]
pub struct Receiver<T: Message + Clone> {
    sub: Arc<SubInner<T>>,
    bus: Weak<BusInner<T>>,
    group: usize,
    /// Its position among the members of a broadcast subscription (0 otherwise).
    member: usize,
    shards: Box<[usize]>,
    order: LaneOrder,
    reported_shed: u64,
    batch_size: usize,
    clock: quanta::Clock,
    origin: u64,
}

impl<T: Message + Clone> Drop for Receiver<T> {
    /// Dropping any receiver of a sharded subscription ends the whole subscription: its
    /// other receivers drain what is queued and then see `Closed`. (Keeping it routed with
    /// a group nobody drains would fill that group's Block lanes and stall publishers.)
    /// A receiver of a broadcast subscription leaves alone; the last one ends it.
    fn drop(&mut self) {
        // The room of what a lending closure that panicked was lent (that call skipped
        // its flush) is given back before the receiver leaves.
        self.flush();
        // One counter decides who is last (a broadcast subscription has one group, so it
        // counts its members): two receivers dropped at once never both stay or both go.
        let last = self.sub.receivers.fetch_sub(1, Ordering::AcqRel) == 1;
        // A broadcast member leaves alone unless it is the last one (which ends the
        // subscription below, still holding capacity back so that publishers racing
        // with the close stay within it).
        if self.sub.members > 1 && !last {
            let group = &self.sub.groups[self.group];
            for l in group.lanes.iter() {
                if let Some(r) = l.ring() {
                    r.leave(self.member);
                }
            }
            match self.bus.upgrade() {
                Some(bus) => bus.retire_member(&self.sub, self.member),
                None => group.members[self.member]
                    .present
                    .store(false, Ordering::SeqCst),
            }
            // What it held back is free now.
            self.sub.space.notify_waiters();
            return;
        }
        self.sub.close();
        if let Some(bus) = self.bus.upgrade() {
            if last {
                bus.remove_sub(self.sub.id);
            } else {
                // The other receivers of a sharded subscription drain what is queued:
                // unrouted now, counted (metrics) until the last one is gone.
                bus.unroute();
            }
        }
    }
}

impl<T: Message + Clone> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("group", &self.group)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<T: Message + Clone> Receiver<T> {
    /// The shards this receiver drains.
    pub fn shards(&self) -> &[usize] {
        &self.shards
    }

    #[inline]
    fn take_missed(&mut self) -> u64 {
        let shed = self.sub.groups[self.group].members[self.member]
            .shed
            .load(Ordering::Acquire);
        let missed = shed - self.reported_shed;
        self.reported_shed = shed;
        missed
    }

    /// Pops from `lane`, scanning this receiver's shards from the cursor. Returns the
    /// shard *position* (index into `self.shards`).
    /// This receiver's queues.
    #[inline]
    fn lanes(&self) -> &[Lane<T>] {
        &self.sub.groups[self.group].lanes
    }

    /// Gives back the room of the Block lanes this receiver moved in since the last call.
    fn flush(&mut self) {
        let mut freed_any = false;
        let mut moved = std::mem::take(&mut self.order.moved);
        while moved != 0 {
            let lane = moved.trailing_zeros() as usize;
            moved &= moved - 1;
            if let Some(r) = self.sub.groups[self.group]
                .lanes
                .get(lane)
                .and_then(Lane::ring)
            {
                freed_any |= r.release(self.member);
            }
        }
        if freed_any && self.sub.space_waiters.load(Ordering::SeqCst) > 0 {
            self.sub.space.notify_waiters();
        }
    }

    /// Receives one event without waiting.
    pub fn try_recv(&mut self) -> Result<Event<T>, TryRecvError> {
        let missed = self.take_missed();
        if missed > 0 {
            return Err(TryRecvError::Lagged(missed));
        }
        let mut popped: Option<Event<T>> = None;
        let lanes = &self.sub.groups[self.group].lanes;
        // Closed: drain anything that raced with the close first.
        if !self.order.pop(lanes, &mut popped)
            && self.sub.closed.load(Ordering::Acquire)
            && !self.order.pop(lanes, &mut popped)
        {
            self.flush();
            return Err(self.empty_or_closed());
        }
        let Some(e) = popped else {
            // Tombstones may have been passed: give their room back.
            self.flush();
            return Err(TryRecvError::Empty);
        };
        Deliveries::new(&self.sub.stats[self.member], &self.clock, self.origin).count(&e);
        self.flush();
        Ok(e)
    }

    /// Appends up to `max` queued events to `buf` without waiting (priority order, same
    /// starvation guard as [`try_recv`](Self::try_recv)). `missed` reports shed events.
    pub fn try_recv_batch(
        &mut self,
        buf: &mut Vec<Event<T>>,
        max: usize,
    ) -> Result<BatchInfo, TryRecvError> {
        let missed = self.take_missed();
        let start = buf.len();
        let mut collect = Collect {
            counted: Deliveries::new(&self.sub.stats[self.member], &self.clock, self.origin),
            buf,
        };
        self.order
            .pop_batch(&self.sub.groups[self.group], &mut collect, max);
        self.flush();
        let received = buf.len() - start;
        self.batch_outcome(received, missed)
    }

    /// What a batch receive that took `received` events (and flushed) returns.
    fn batch_outcome(&self, received: usize, missed: u64) -> Result<BatchInfo, TryRecvError> {
        if received == 0 && missed == 0 {
            return Err(if self.sub.closed.load(Ordering::Acquire) {
                self.empty_or_closed()
            } else {
                TryRecvError::Empty
            });
        }
        Ok(BatchInfo { received, missed })
    }

    /// Repeats a batch receive, waiting between attempts, until it takes something or
    /// the bus is closed and drained.
    async fn batch_when_ready(
        &mut self,
        mut attempt: impl FnMut(&mut Self) -> Result<BatchInfo, TryRecvError>,
    ) -> Result<BatchInfo, RecvError> {
        loop {
            match attempt(self) {
                Ok(info) => return Ok(info),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Lagged(n)) => {
                    return Ok(BatchInfo {
                        received: 0,
                        missed: n,
                    })
                }
                Err(TryRecvError::Empty) => self.wait().await?,
            }
        }
    }

    /// Lends up to `max` queued events, one at a time, to `f` without waiting: the same
    /// events, in the same order and with the same accounting as
    /// [`try_recv_batch`](Self::try_recv_batch), but read where they are queued instead
    /// of being moved (or, for a broadcast receiver, cloned) into a buffer. The fastest
    /// way to consume: nothing is copied and nothing is dropped by the caller.
    ///
    /// Each event is lent once and counts as delivered when it is lent: if `f` panics,
    /// the events it was given are gone, and the rest stay queued for the next receive.
    /// (The one `f` panicked on is not dropped during the unwind, where a panicking
    /// `Drop` would abort the process: a plain receiver leaks it, and a leaked pooled
    /// event keeps its pool slot, and the pool, alive.) A payload's `Drop` runs before
    /// the next event is lent, so what it publishes is ordered as between two calls,
    /// though the room the lent events held is given back only when the call returns.
    /// `f` should not block: publishers may be waiting for that room.
    pub fn try_recv_with<F>(&mut self, max: usize, f: F) -> Result<BatchInfo, TryRecvError>
    where
        F: FnMut(&Envelope<T>),
    {
        let missed = self.take_missed();
        let mut visitor = Visitor {
            counted: Deliveries::new(&self.sub.stats[self.member], &self.clock, self.origin),
            f,
        };
        let received = self
            .order
            .pop_batch(&self.sub.groups[self.group], &mut visitor, max);
        self.flush();
        self.batch_outcome(received, missed)
    }

    /// Waits for at least one event, then lends up to `batch_size` (from the
    /// configuration) to `f`, as [`try_recv_with`](Self::try_recv_with) does. Fails only
    /// when the bus is closed and drained.
    pub async fn recv_with<F>(&mut self, mut f: F) -> Result<BatchInfo, RecvError>
    where
        F: FnMut(&Envelope<T>),
    {
        let max = self.batch_size;
        self.batch_when_ready(|rx| rx.try_recv_with(max, &mut f))
            .await
    }

    /// After a close, with nothing to take: `Closed`, unless a publish that started
    /// before the close has claimed a slot and not committed it yet (it was told `Ok`, so
    /// the event must still be received): `Empty` until it lands.
    fn empty_or_closed(&self) -> TryRecvError {
        let group = &self.sub.groups[self.group];
        if group.in_flight.load(Ordering::SeqCst) > 0
            || group.members[self.member].shed.load(Ordering::SeqCst) != self.reported_shed
            || self.lanes().iter().any(|l| l.pending(self.member))
        {
            TryRecvError::Empty
        } else {
            TryRecvError::Closed
        }
    }

    async fn wait(&mut self) -> Result<(), RecvError> {
        let me = &self.sub.groups[self.group].members[self.member];
        let notified = me.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        me.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let ready = self.has_pending() || self.sub.closed.load(Ordering::SeqCst);
        if !ready {
            notified.await;
        } else if !self.lanes().iter().any(|l| l.ready(self.member)) {
            // Only claimed, not yet committed: the publisher is between its claim and
            // its commit. Let it (and others) run instead of spinning.
            tokio::task::yield_now().await;
        }
        me.sleeping.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn has_pending(&self) -> bool {
        let me = &self.sub.groups[self.group].members[self.member];
        if me.shed.load(Ordering::Acquire) != self.reported_shed {
            return true;
        }
        self.lanes().iter().any(|l| l.pending(self.member))
    }

    /// Receives one event, waiting for it.
    pub async fn recv(&mut self) -> Result<Event<T>, RecvError> {
        loop {
            match self.try_recv() {
                Ok(e) => return Ok(e),
                Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => self.wait().await?,
            }
        }
    }

    /// Waits for at least one event, then appends up to `batch_size` (from the
    /// configuration) to `buf`. Fails only when the bus is closed and drained.
    pub async fn recv_batch(&mut self, buf: &mut Vec<Event<T>>) -> Result<BatchInfo, RecvError> {
        let max = self.batch_size;
        self.batch_when_ready(|rx| rx.try_recv_batch(buf, max))
            .await
    }

    /// The configured batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// Which publishes the fan-out fast path takes, asked of it directly (through the public
/// API both paths deliver the same).
#[cfg(all(test, not(bus_loom)))]
mod fanout_tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct M(Priority);

    impl Message for M {
        fn priority(&self) -> Priority {
            self.0
        }
    }

    /// What `route_fanout` makes of one event of priority `p` for call 1: taken (`Ok`),
    /// full under the Block policy (`Err(true)`), or left to the general path
    /// (`Err(false)`).
    fn attempt(bus: &EventBus<M>, p: Priority) -> Result<EventId, bool> {
        let inner = &bus.inner;
        let cache = LocalCache::default();
        let table = cache.get(&inner.routes);
        let subs = &table.by_topic[0];
        let c = CorrelationId(1);
        let meta = Meta {
            correlation: c,
            causation: None,
            source: "t",
            priority: p,
            timestamp: inner.now(),
        };
        let shard = inner.shard_of(c);
        inner
            .route_fanout(
                subs,
                shard,
                inner.lane_index(p),
                meta.envelope(EventId(0), M(p)),
                None,
            )
            .map_err(|(_, full)| full.is_some())
    }

    #[allow(clippy::unwrap_used)]
    fn bus(config: EventBusConfig) -> EventBus<M> {
        EventBus::new(config).unwrap()
    }

    #[test]
    fn two_to_eight_plain_subscriptions_take_the_fast_path_and_nine_do_not() {
        for n in 2..=9 {
            let bus = bus(EventBusConfig::default());
            let mut rxs: Vec<_> = (0..n).map(|_| bus.subscribe(Filter::all())).collect();
            let r = attempt(&bus, Priority::Normal);
            assert_eq!(r.is_ok(), n <= FANOUT_MAX, "{n} subscriptions: {r:?}");
            if let Ok(id) = r {
                for rx in rxs.iter_mut() {
                    assert_eq!(rx.try_recv().unwrap().id, id);
                }
            }
            // Left to the general path: nothing delivered, nothing counted.
            let m = bus.metrics().total();
            let taken = u64::from(n <= FANOUT_MAX);
            assert_eq!((m.published, m.depth), (taken, 0), "{n} subscriptions");
        }
    }

    #[test]
    fn filtered_out_subscriptions_are_skipped_and_none_left_is_the_general_paths() {
        let bus = bus(EventBusConfig::default());
        let mut taken = bus.subscribe(Filter::all());
        let _other_call = bus.subscribe(Filter::all().correlation(CorrelationId(2)));
        let _high_only = bus.subscribe(Filter::all().min_priority(Priority::High));
        assert!(attempt(&bus, Priority::Normal).is_ok());
        assert!(taken.try_recv().is_ok());
        drop(taken);
        // No subscription takes a Normal event of call 1 now: unrouted, counted by the
        // general path.
        assert_eq!(attempt(&bus, Priority::Normal), Err(false));
    }

    #[test]
    fn broadcast_shed_lanes_and_history_are_the_general_paths() {
        let plain = bus(EventBusConfig::default());
        let _rxs: Vec<_> = (0..2).map(|_| plain.subscribe(Filter::all())).collect();
        // Low sheds by default: a Shed lane.
        assert_eq!(attempt(&plain, Priority::Low), Err(false));
        let _bcast = plain.subscribe_broadcast(Filter::all(), 2);
        assert_eq!(attempt(&plain, Priority::Normal), Err(false));

        let history = bus(EventBusConfig {
            history_capacity: 16,
            ..Default::default()
        });
        let _rxs: Vec<_> = (0..2).map(|_| history.subscribe(Filter::all())).collect();
        assert_eq!(attempt(&history, Priority::Normal), Err(false));
        for b in [&plain, &history] {
            assert_eq!(b.metrics().total().published, 0);
        }
    }

    #[test]
    fn a_full_lane_turns_the_fan_out_away_and_gives_the_other_claims_back() {
        for enable_priority in [true, false] {
            let bus = bus(EventBusConfig {
                broadcast_capacity: 1,
                enable_priority,
                ..Default::default()
            });
            let mut first = bus.subscribe(Filter::all());
            let mut second = bus.subscribe(Filter::all());
            assert!(attempt(&bus, Priority::Normal).is_ok());
            assert!(first.try_recv().is_ok());
            // The second is full, the first has room: claimed there, then given back.
            // Normal blocks: the answer is Full (and where to wait).
            assert_eq!(attempt(&bus, Priority::Normal), Err(true));
            if !enable_priority {
                // One lane for all: a Low event's shed policy is the general path's.
                assert_eq!(attempt(&bus, Priority::Low), Err(false));
            }
            assert!(matches!(first.try_recv(), Err(TryRecvError::Empty)));
            assert!(second.try_recv().is_ok());
            // Room everywhere again: the first's slot was not left behind.
            assert!(attempt(&bus, Priority::Normal).is_ok());
            assert!(first.try_recv().is_ok() && second.try_recv().is_ok());
            let m = bus.metrics().total();
            assert_eq!(
                (m.published, m.depth),
                (2, 0),
                "priority lanes {enable_priority}"
            );
        }
    }
}

/// A close landing between a publish's claim and its check for it (the window
/// [`claimed`] marks), placed there by a hook, on every path that claims: the single
/// subscription's, the fan-out's, a batch run's and the general one. The stress tests
/// reach that window only by chance.
#[cfg(all(test, not(bus_loom)))]
mod close_after_claim_tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct M(u32);

    impl Message for M {
        fn priority(&self) -> Priority {
            Priority::Normal
        }
    }

    /// 1: the single path; 2 and 8: the fan-out; 9 (more than [`FANOUT_MAX`]): the general
    /// path.
    const SUBSCRIPTIONS: [usize; 4] = [1, 2, 8, FANOUT_MAX + 1];

    /// A bus with `n` subscriptions to everything (their receivers, and their insides,
    /// kept past the receivers' drop), and a publisher.
    #[allow(clippy::unwrap_used)]
    fn setup(n: usize) -> Setup {
        let bus = EventBus::new(EventBusConfig::default()).unwrap();
        let rxs = (0..n).map(|_| bus.subscribe(Filter::all())).collect();
        let subs = LocalCache::default().get(&bus.inner.routes).by_topic[0].to_vec();
        let tx = bus.publisher("t");
        (bus, rxs, subs, tx)
    }

    type Setup = (
        EventBus<M>,
        Vec<Receiver<M>>,
        Vec<Arc<SubInner<M>>>,
        Publisher<M>,
    );

    /// Whether anything (committed or not) is claimed in `sub`'s Normal ring past what its
    /// receiver read.
    fn claimed_ahead(bus: &EventBus<M>, sub: &SubInner<M>) -> bool {
        let lane = bus.inner.lane_index(Priority::Normal);
        sub.groups.iter().any(|g| match &g.lanes[lane] {
            Lane::Block(ring) => ring.claimed_ahead(0),
            Lane::Shed(_) => false,
        })
    }

    fn batch(n: u32) -> VecDeque<Outgoing<M>> {
        (0..n)
            .map(|k| Outgoing {
                correlation: CorrelationId(1),
                causation: None,
                payload: M(k),
            })
            .collect()
    }

    #[test]
    fn a_bus_closed_after_the_claim_delivers_nothing_and_hands_the_event_back() {
        for n in SUBSCRIPTIONS {
            let (bus, mut rxs, subs, tx) = setup(n);
            let closer = bus.clone();
            claim_hook::at_next_claim(move || closer.close());
            match tx.try_publish(CorrelationId(1), None, M(7)) {
                Err(PublishError::Closed(M(7))) => {}
                other => panic!("{n} subscriptions: {other:?}"),
            }
            assert!(!claim_hook::pending(), "{n} subscriptions: no claim made");
            for rx in rxs.iter_mut() {
                assert!(
                    matches!(rx.try_recv(), Err(TryRecvError::Closed)),
                    "{n} subscriptions"
                );
            }
            for sub in &subs {
                assert!(!claimed_ahead(&bus, sub), "{n} subscriptions: a claim left");
            }
            let m = bus.metrics();
            assert_eq!((m.total().published, m.unrouted), (0, 0), "{n}");
        }
    }

    #[test]
    fn a_subscription_ended_after_the_claim_gets_nothing_and_the_others_get_the_event() {
        for n in SUBSCRIPTIONS {
            let (bus, mut rxs, subs, tx) = setup(n);
            // The first subscription's receiver leaves right after the publish claimed
            // its slot (the first claim of every path).
            let first = rxs.remove(0);
            claim_hook::at_next_claim(move || drop(first));
            let id = match tx.try_publish(CorrelationId(1), None, M(7)) {
                Ok(id) => id,
                Err(e) => panic!("{n} subscriptions: {e:?}"),
            };
            assert!(!claim_hook::pending(), "{n} subscriptions: no claim made");
            assert!(subs[0].closed.load(Ordering::SeqCst));
            assert!(
                !claimed_ahead(&bus, &subs[0]),
                "{n} subscriptions: an event committed to the ended subscription"
            );
            for rx in rxs.iter_mut() {
                match rx.try_recv() {
                    Ok(e) => assert_eq!((e.id, e.payload.0), (id, 7), "{n}"),
                    Err(e) => panic!("{n} subscriptions: {e:?}"),
                }
            }
            let m = bus.metrics();
            assert_eq!(m.total().published, 1, "{n} subscriptions");
            // Nobody left to take it: counted as unrouted.
            assert_eq!(m.unrouted, u64::from(n == 1), "{n} subscriptions");
        }
    }

    #[test]
    fn a_close_half_done_after_the_claim_loses_nothing_and_tells_no_lie() {
        // `close` flags the bus, then closes its subscriptions one by one: the hook lands
        // between the two. Whatever the publish answers holds for every receiver.
        for n in SUBSCRIPTIONS {
            let (bus, mut rxs, subs, tx) = setup(n);
            let inner = bus.inner.clone();
            claim_hook::at_next_claim(move || inner.closed.store(true, Ordering::SeqCst));
            let outcome = tx.try_publish(CorrelationId(1), None, M(7));
            assert!(!claim_hook::pending(), "{n} subscriptions: no claim made");
            bus.close();
            for rx in rxs.iter_mut() {
                match &outcome {
                    Ok(id) => match rx.try_recv() {
                        Ok(e) => assert_eq!(e.id, *id, "{n}"),
                        Err(e) => panic!("{n} subscriptions: Ok, yet {e:?}"),
                    },
                    Err(PublishError::Closed(M(7))) => {}
                    Err(e) => panic!("{n} subscriptions: {e:?}"),
                }
                assert!(
                    matches!(rx.try_recv(), Err(TryRecvError::Closed)),
                    "{n} subscriptions"
                );
            }
            for sub in &subs {
                assert!(!claimed_ahead(&bus, sub), "{n} subscriptions: a claim left");
            }
            let published = bus.metrics().total().published;
            assert_eq!(published, u64::from(outcome.is_ok()), "{n} subscriptions");
        }
    }

    #[test]
    fn a_close_after_a_batch_runs_claim_keeps_the_whole_batch() {
        let (bus, mut rxs, subs, tx) = setup(1);
        let mut rx = rxs.remove(0);
        let closer = bus.clone();
        claim_hook::at_next_claim(move || closer.close());
        let mut events = batch(4);
        assert!(matches!(
            tx.try_publish_batch(&mut events),
            Err(PublishError::Closed(()))
        ));
        assert!(!claim_hook::pending(), "no claim made");
        // Nothing published, nothing lost: every event is still the caller's, in order.
        let left: Vec<u32> = events.iter().map(|o| o.payload.0).collect();
        assert_eq!(left, [0, 1, 2, 3]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Closed)));
        assert!(!claimed_ahead(&bus, &subs[0]), "a claim left");
        assert_eq!(bus.metrics().total().published, 0);
    }

    #[test]
    fn a_subscription_ended_after_a_batch_runs_claim_gets_none_of_it() {
        let (bus, mut rxs, subs, tx) = setup(1);
        let rx = rxs.remove(0);
        claim_hook::at_next_claim(move || drop(rx));
        let mut events = batch(4);
        // Each event, routed on its own, finds its only subscription ended: unrouted.
        assert_eq!(tx.try_publish_batch(&mut events).ok(), Some(4));
        assert!(!claim_hook::pending(), "no claim made");
        assert!(events.is_empty());
        assert!(!claimed_ahead(&bus, &subs[0]), "committed to the ended one");
        let m = bus.metrics();
        assert_eq!((m.total().published, m.unrouted), (4, 4));
    }
}
