//! Property tests: random interleavings of publish / try_publish_batch / try_recv /
//! try_recv_batch against a
//! small bus (capacity 1..=8, 1..=3 shards, 1..=2 subscribers, as separate subscriptions
//! or as one broadcast subscription, random overflow policies for Normal and Low, random
//! `enable_priority`, `enable_zero_copy` and starvation limit),
//! checked step by step against a model of every lane and, after a full drain, against
//! the bus metrics.
//!
//! The model is exact about *admission* (which publishes are `Full`, which events are
//! shed and how many misses are reported) and about FIFO order within each lane, and it
//! checks the starvation guard: strict priority order, except that after
//! `starvation_limit` counted deliveries the receiver serves a lane below both the top
//! one and every lane of that streak whenever one has anything (which lane, when several
//! do, is the guard's rotation: not predicted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::*;
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

#[derive(Clone, Debug, PartialEq)]
struct Ev {
    prio: Priority,
    seq: u64,
}

impl Message for Ev {
    fn priority(&self) -> Priority {
        self.prio
    }
}

#[derive(Clone, Debug)]
enum Op {
    Publish {
        prio: Priority,
        corr: u64,
    },
    /// `try_publish_batch` of these (priority, correlation) events.
    PublishBatch {
        events: Vec<(Priority, u64)>,
    },
    TryRecv {
        sub: usize,
    },
    /// `lend`: through `try_recv_with` (events lent in place) instead of a buffer.
    RecvBatch {
        sub: usize,
        k: usize,
        lend: bool,
    },
}

fn priority() -> impl Strategy<Value = Priority> {
    prop::sample::select(Priority::ALL.to_vec())
}

fn policy() -> impl Strategy<Value = OverflowPolicy> {
    prop::sample::select(vec![OverflowPolicy::Block, OverflowPolicy::ShedOldest])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (priority(), 0u64..4).prop_map(|(prio, corr)| Op::Publish { prio, corr }),
        // Batches of one priority (runs for one queue) and mixed ones.
        1 => (priority(), prop::collection::vec(0u64..4, 1..=9)).prop_map(|(prio, corrs)| {
            Op::PublishBatch {
                events: corrs.into_iter().map(|c| (prio, c)).collect(),
            }
        }),
        1 => prop::collection::vec((priority(), 0u64..4), 1..=6)
            .prop_map(|events| Op::PublishBatch { events }),
        2 => (0usize..2).prop_map(|sub| Op::TryRecv { sub }),
        1 => (0usize..2, 1usize..6, any::<bool>())
            .prop_map(|(sub, k, lend)| Op::RecvBatch { sub, k, lend }),
    ]
}

#[derive(Clone, Debug)]
struct Setup {
    config: EventBusConfig,
    subscribers: usize,
    /// The subscribers as one `subscribe_broadcast` (same model: a shared never-dropped
    /// queue is full exactly when one of its receivers' share is).
    broadcast: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..=3,
        1usize..=8,
        any::<bool>(),
        any::<bool>(),
        policy(),
        policy(),
        prop::sample::select(vec![1u32, 2, 3, u32::MAX]),
        prop::sample::select(vec![0usize, 16]),
        1usize..=2,
        any::<bool>(),
    )
        .prop_map(
            |(
                shards,
                cap,
                prio,
                zero_copy,
                normal,
                low,
                limit,
                history,
                subscribers,
                broadcast,
            )| Setup {
                config: EventBusConfig {
                    shard_count: shards,
                    broadcast_capacity: cap,
                    enable_priority: prio,
                    enable_zero_copy: zero_copy,
                    starvation_limit: limit,
                    history_capacity: history,
                    pool_capacity: 4,
                    overflow: OverflowPolicies {
                        normal,
                        low,
                        ..OverflowPolicies::default()
                    },
                    ..EventBusConfig::default()
                },
                subscribers,
                broadcast,
            },
        )
}

/// A queued event: correlation, payload, whether it was written to a shared slot.
type Queued = (CorrelationId, Ev, bool);

/// One subscriber's queued events, per lane (one receiver: one queue per lane for all
/// shards), and its unreported misses.
struct SubModel {
    lanes: Vec<Vec<VecDeque<Queued>>>,
    missed: u64,
    /// The starvation guard as the receiver must apply it: deliveries counted since it
    /// last caught up or the guard served a lower lane, and the lowest-priority lane
    /// among them.
    streak: u32,
    floor: usize,
}

impl SubModel {
    fn is_empty(&self) -> bool {
        self.lanes.iter().flatten().all(VecDeque::is_empty)
    }

    fn len(&self) -> usize {
        self.lanes.iter().flatten().map(VecDeque::len).sum()
    }

    /// Highest-priority lane with anything queued.
    fn top_lane(&self) -> Option<usize> {
        let n_lanes = self.lanes[0].len();
        (0..n_lanes).find(|&l| self.lanes.iter().any(|s| !s[l].is_empty()))
    }
}

struct Harness {
    bus: EventBus<Ev>,
    tx: Publisher<Ev>,
    rxs: Vec<Receiver<Ev>>,
    models: Vec<SubModel>,
    cfg: EventBusConfig,
    broadcast: bool,
    next_seq: u64,
    published: [u64; 4],
    received: [u64; 4],
    shed: [u64; 4],
    reported_missed: u64,
    last_seq: HashMap<(usize, CorrelationId, Priority), u64>,
}

impl Harness {
    fn new(s: &Setup) -> Self {
        let bus = EventBus::new(s.config.clone()).unwrap();
        let rxs: Vec<_> = if s.broadcast {
            bus.subscribe_broadcast(Filter::all(), s.subscribers)
        } else {
            (0..s.subscribers)
                .map(|_| bus.subscribe(Filter::all()))
                .collect()
        };
        let n_lanes = if s.config.enable_priority { 4 } else { 1 };
        let models = (0..s.subscribers)
            .map(|_| SubModel {
                // One receiver: one queue per lane for all shards.
                lanes: vec![vec![VecDeque::new(); n_lanes]; 1],
                missed: 0,
                streak: 0,
                floor: 0,
            })
            .collect();
        Self {
            tx: bus.publisher("prop"),
            bus,
            rxs,
            models,
            cfg: s.config.clone(),
            broadcast: s.broadcast,
            next_seq: 0,
            published: [0; 4],
            received: [0; 4],
            shed: [0; 4],
            reported_missed: 0,
            last_seq: HashMap::new(),
        }
    }

    fn lane_of(&self, p: Priority) -> usize {
        if self.cfg.enable_priority {
            p.index()
        } else {
            0
        }
    }

    /// Every shard's depth per priority, as the bus's metrics give it, is what the model
    /// holds queued for that shard and priority, over all subscribers.
    fn check_depth(&self) -> Result<(), TestCaseError> {
        let m = self.bus.metrics();
        for (si, shard) in m.shards.iter().enumerate() {
            for p in Priority::ALL {
                let queued = self
                    .models
                    .iter()
                    .flat_map(|sm| sm.lanes.iter().flatten().flatten())
                    .filter(|(c, e, _)| self.bus.shard_of(*c) == si && e.prio == p)
                    .count() as u64;
                prop_assert_eq!(shard.lane(p).depth, queued, "shard {} {}", si, p);
            }
        }
        Ok(())
    }

    /// A new event (a new sequence number).
    fn next_event(&mut self, prio: Priority) -> Ev {
        self.next_seq += 1;
        Ev {
            prio,
            seq: self.next_seq - 1,
        }
    }

    fn publish(&mut self, prio: Priority, corr: u64) -> Result<(), TestCaseError> {
        let c = CorrelationId(corr);
        prop_assert!(self.bus.shard_of(c) < self.cfg.shard_count);
        let e = self.next_event(prio);
        let r = self.tx.try_publish(c, None, e.clone());
        if !self.model_publish(c, &e) {
            prop_assert_eq!(r, Err(PublishError::Full(e)));
            return Ok(());
        }
        prop_assert!(r.is_ok(), "unexpected {:?}", r);
        Ok(())
    }

    /// A batch is published in order up to the first event refused as Full, which stays
    /// at the front of the batch with those after it.
    fn publish_batch(&mut self, events: &[(Priority, u64)]) -> Result<(), TestCaseError> {
        let sent: Vec<(CorrelationId, Ev)> = events
            .iter()
            .map(|&(prio, corr)| (CorrelationId(corr), self.next_event(prio)))
            .collect();
        let mut batch: VecDeque<Outgoing<Ev>> = sent
            .iter()
            .map(|(c, e)| Outgoing {
                correlation: *c,
                causation: None,
                payload: e.clone(),
            })
            .collect();
        let r = self.tx.try_publish_batch(&mut batch);
        let mut admitted = 0;
        for (c, e) in &sent {
            if !self.model_publish(*c, e) {
                break;
            }
            admitted += 1;
        }
        if admitted == sent.len() {
            prop_assert_eq!(r, Ok(admitted));
            prop_assert!(batch.is_empty());
        } else {
            prop_assert_eq!(r, Err(PublishError::Full(())));
            prop_assert_eq!(batch.len(), sent.len() - admitted);
            let front = batch.front().map(|o| (o.correlation, o.payload.clone()));
            prop_assert_eq!(front, Some(sent[admitted].clone()));
        }
        Ok(())
    }

    /// The model's side of publishing `e` for `c`: false if it is refused (a Block lane
    /// of a subscriber is full), otherwise what each subscriber's lane does with it.
    fn model_publish(&mut self, c: CorrelationId, e: &Ev) -> bool {
        let prio = e.prio;
        let lane = self.lane_of(prio);
        let policy = self.cfg.overflow.get(prio);
        let cap = self.cfg.broadcast_capacity;
        let full = self
            .models
            .iter()
            .any(|m| policy == OverflowPolicy::Block && m.lanes[0][lane].len() >= cap);
        if full {
            return false;
        }
        self.published[prio.index()] += 1;
        // Subscribers that get the event (zero-copy shares a slot only among several).
        let takers = self
            .models
            .iter()
            .filter(|m| self.cfg.enable_priority || m.lanes[0][lane].len() < cap)
            .count();
        // Broadcast receivers always get their own copy.
        let shared = self.cfg.enable_zero_copy && takers > 1 && !self.broadcast;
        // A broadcast subscription's single shared lane (priority off) is full for all its
        // receivers as soon as it is full for one: a shed-policy event is dropped for all.
        let shared_lane_full = self.broadcast
            && !self.cfg.enable_priority
            && self.models.iter().any(|m| m.lanes[0][lane].len() >= cap);
        for m in &mut self.models {
            let q = &mut m.lanes[0][lane];
            if shared_lane_full {
                self.shed[prio.index()] += 1;
                m.missed += 1;
            } else if q.len() < cap {
                q.push_back((c, e.clone(), shared));
            } else if self.cfg.enable_priority {
                // shed oldest (of this lane, hence of this priority)
                let (_, old, _) = q.pop_front().unwrap();
                self.shed[old.prio.index()] += 1;
                m.missed += 1;
                q.push_back((c, e.clone(), shared));
            } else {
                // single shared lane: the new shed-policy event is dropped
                self.shed[prio.index()] += 1;
                m.missed += 1;
            }
        }
        true
    }

    /// Checks one received event against the model (it must be the front of its lane);
    /// `shared`: whether its handle shares a pooled slot (unknown for a lent envelope).
    fn accept(
        &mut self,
        sub: usize,
        e: &Envelope<Ev>,
        shared: Option<bool>,
    ) -> Result<(), TestCaseError> {
        prop_assert!(self.bus.shard_of(e.correlation) < self.cfg.shard_count);
        let lane = self.lane_of(e.priority);
        prop_assert_eq!(e.priority, e.payload.prio);
        let m = &mut self.models[sub];
        if self.cfg.enable_priority {
            // Strict priority order, except the guard's turn: after `starvation_limit`
            // counted deliveries, a lane below both the top one and every lane of the
            // streak is served once if anything waits there (so a streak of Low
            // deliveries never delays a Critical, and no lane starves).
            let Some(top) = m.top_lane() else {
                return Err(TestCaseError::fail("delivered from an empty model"));
            };
            let mut counted = true;
            if m.streak >= self.cfg.starvation_limit {
                let bar = top.max(m.floor);
                let waiting_below = (bar + 1..4).any(|l| !m.lanes[0][l].is_empty());
                m.streak = 0;
                if waiting_below {
                    prop_assert!(
                        lane > bar,
                        "the guard served lane {} (top {}, streak floor {})",
                        lane,
                        top,
                        bar
                    );
                    counted = false;
                } else {
                    prop_assert_eq!(lane, top, "strict priority violated at the guard's turn");
                }
            } else {
                prop_assert_eq!(lane, top, "strict priority violated");
            }
            if counted {
                m.floor = if m.streak == 0 {
                    lane
                } else {
                    m.floor.max(lane)
                };
                m.streak += 1;
            }
        }
        let front = m.lanes[0][lane].pop_front();
        prop_assert_eq!(
            front.as_ref().map(|(c, ev, _)| (*c, ev)),
            Some((e.correlation, &e.payload)),
            "not the oldest event of its lane"
        );
        let want_shared = front.map(|(_, _, shared)| shared).unwrap_or_default();
        if let Some(shared) = shared {
            prop_assert_eq!(shared, want_shared, "is_shared");
        }
        if let Some(prev) = self
            .last_seq
            .insert((sub, e.correlation, e.priority), e.payload.seq)
        {
            prop_assert!(prev < e.payload.seq, "per-call order violated");
        }
        self.received[e.priority.index()] += 1;
        Ok(())
    }

    /// One try_recv; returns false when the receiver reported Empty.
    fn try_recv(&mut self, sub: usize) -> Result<bool, TestCaseError> {
        let sub = sub % self.rxs.len();
        let r = self.rxs[sub].try_recv();
        let m = &mut self.models[sub];
        if m.missed > 0 {
            prop_assert_eq!(r.unwrap_err(), TryRecvError::Lagged(m.missed));
            self.reported_missed += m.missed;
            m.missed = 0;
            return Ok(true);
        }
        if m.is_empty() {
            prop_assert_eq!(r.unwrap_err(), TryRecvError::Empty);
            // Caught up: the streak ends.
            m.streak = 0;
            return Ok(false);
        }
        match r {
            Ok(e) => self.accept(sub, &e, Some(e.is_shared()))?,
            Err(err) => prop_assert!(false, "expected an event, got {:?}", err),
        }
        Ok(true)
    }

    fn recv_batch(&mut self, sub: usize, k: usize, lend: bool) -> Result<(), TestCaseError> {
        let sub = sub % self.rxs.len();
        let mut buf: Vec<(Envelope<Ev>, Option<bool>)> = Vec::new();
        let r = if lend {
            self.rxs[sub].try_recv_with(k, |e| buf.push((e.clone(), None)))
        } else {
            let mut events = Vec::new();
            let r = self.rxs[sub].try_recv_batch(&mut events, k);
            buf.extend(events.into_iter().map(|e| {
                let shared = e.is_shared();
                (e.into_envelope(), Some(shared))
            }));
            r
        };
        let m = &mut self.models[sub];
        if m.missed == 0 && m.is_empty() {
            prop_assert_eq!(r, Err(TryRecvError::Empty));
            m.streak = 0;
            return Ok(());
        }
        let want_received = k.min(m.len());
        let info = r.unwrap();
        prop_assert_eq!(info.missed, m.missed);
        prop_assert_eq!(info.received, want_received);
        prop_assert_eq!(buf.len(), want_received);
        self.reported_missed += m.missed;
        m.missed = 0;
        for (e, shared) in &buf {
            self.accept(sub, e, *shared)?;
        }
        if want_received < k {
            // The batch caught up: the streak ends.
            self.models[sub].streak = 0;
        }
        Ok(())
    }

    fn drain_and_check(&mut self) -> Result<(), TestCaseError> {
        for sub in 0..self.rxs.len() {
            while self.try_recv(sub)? {}
            prop_assert!(self.models[sub].is_empty());
            prop_assert_eq!(self.models[sub].missed, 0);
        }
        let n_subs = self.rxs.len() as u64;
        for p in Priority::ALL {
            let i = p.index();
            match self.cfg.overflow.get(p) {
                // never lost: every subscriber got every successfully published event
                OverflowPolicy::Block => {
                    prop_assert_eq!(self.shed[i], 0);
                    prop_assert_eq!(self.received[i], self.published[i] * n_subs);
                }
                OverflowPolicy::ShedOldest => {
                    prop_assert_eq!(self.received[i] + self.shed[i], self.published[i] * n_subs);
                }
            }
        }
        prop_assert_eq!(self.reported_missed, self.shed.iter().sum::<u64>());

        let m = self.bus.metrics();
        prop_assert_eq!(m.shards.len(), self.cfg.shard_count);
        let subscriptions = if self.broadcast { 1 } else { self.rxs.len() };
        prop_assert_eq!(m.subscriptions, subscriptions);
        prop_assert_eq!(m.unrouted, 0);
        for p in Priority::ALL {
            let l = m.lane_total(p);
            prop_assert_eq!(l.published, self.published[p.index()], "published {}", p);
            prop_assert_eq!(l.delivered, self.received[p.index()], "delivered {}", p);
            prop_assert_eq!(l.shed, self.shed[p.index()], "shed {}", p);
            prop_assert_eq!(l.depth, 0, "depth {}", p);
        }
        if self.cfg.history_capacity == 0 {
            prop_assert!(self.bus.history().is_empty());
        } else {
            // The ring is split exactly across shards: never more than the total.
            let h = self.bus.history();
            prop_assert!(h.len() <= self.cfg.history_capacity);
            for w in h.windows(2) {
                prop_assert!(w[0].timestamp <= w[1].timestamp, "history not oldest first");
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_interleavings_keep_the_lane_invariants(
        s in setup(),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let mut h = Harness::new(&s);
        for op in ops {
            match op {
                Op::Publish { prio, corr } => {
                    h.publish(prio, corr)?;
                    h.check_depth()?;
                }
                Op::PublishBatch { events } => {
                    h.publish_batch(&events)?;
                    h.check_depth()?;
                }
                Op::TryRecv { sub } => {
                    h.try_recv(sub)?;
                }
                Op::RecvBatch { sub, k, lend } => h.recv_batch(sub, k, lend)?,
            }
        }
        h.drain_and_check()?;
    }

    /// Publishing with a full Block lane delivers to nobody; a later publish after
    /// making room succeeds (with two subscribers, one of them drained eagerly).
    #[test]
    fn full_block_lane_is_all_or_nothing(cap in 1usize..=8, prio in priority(), extra in 1usize..4) {
        let bus = EventBus::<Ev>::new(EventBusConfig {
            shard_count: 1,
            broadcast_capacity: cap,
            overflow: OverflowPolicies { low: OverflowPolicy::Block, ..OverflowPolicies::default() },
            ..EventBusConfig::default()
        }).unwrap();
        let mut slow = bus.subscribe(Filter::all());
        let mut eager = bus.subscribe(Filter::all());
        let tx = bus.publisher("prop");
        for seq in 0..cap as u64 {
            let r = tx.try_publish(CorrelationId(0), None, Ev { prio, seq });
            prop_assert!(r.is_ok());
            prop_assert_eq!(eager.try_recv().unwrap().payload.seq, seq);
        }
        for i in 0..extra as u64 {
            let e = Ev { prio, seq: cap as u64 + i };
            prop_assert_eq!(tx.try_publish(CorrelationId(0), None, e.clone()), Err(PublishError::Full(e)));
            prop_assert_eq!(eager.try_recv().unwrap_err(), TryRecvError::Empty);
        }
        prop_assert_eq!(slow.try_recv().unwrap().payload.seq, 0);
        let r = tx.try_publish(CorrelationId(0), None, Ev { prio, seq: 99 });
        prop_assert!(r.is_ok());
        prop_assert_eq!(eager.try_recv().unwrap().payload.seq, 99);
        prop_assert_eq!(bus.metrics().lane_total(prio).published, cap as u64 + 1);
    }
}
