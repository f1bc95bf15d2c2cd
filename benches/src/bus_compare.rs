//! `cargo xtask bench bus`: the same workloads against call-engine-bus,
//! rvoip-infra-common 0.4.0 (zero-copy `EventBus` and `GlobalEventCoordinator`),
//! `tokio::sync::broadcast`, a raw crossbeam channel and the `disruptor` crate, in one
//! run, with ratios.
//!
//! Every contender sends the same 64-byte payload and is driven by the same threads and
//! the same busy-polling consumers; latency is measured with one shared clock carried in
//! the payload (read only in the latency scenarios, (iv) and (v): in the throughput runs
//! no one reads a send time, and its clock read would be the benchmark's own cost in
//! every contender's publish loop). A contender that back-pressures is waited on; one that overwrites is not,
//! and its loss is counted: "reported" when its API tells the consumer how many it
//! missed, "unreported" when only sequence gaps show it.
//!
//! Our bus is consumed with `try_recv_with` (events lent in place, as the disruptor's
//! `poll_take` does); the "try_recv_batch" row moves them into a buffer instead. Options:
//! `--scenario i|ii|iii|iv|v|vi|async`, `--only NAME` (exact, or a prefix), `--reps N`
//! (throughput rounds, default 5: each round runs every contender once), `--events N` (events
//! per throughput run, default 2,000,000), `--batch N` (the throughput publishers hand
//! over N events per call, through each contender's batch call where it has one: our
//! `try_publish_batch`, rvoip's `EventBus::publish_batch`, the disruptor's
//! `try_batch_publish`; the others send them one by one), `--quick`; environment:
//! `CE_PIN=1` pins the threads of a throughput run to cores (for A/B runs of one
//! contender), `CE_CAP` and `CE_SHARDS` set our bus's queue capacity and shard count.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use call_engine_bus as ce;
use std::any::Any;
use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Payload and clock
// ---------------------------------------------------------------------------------------

fn clock() -> &'static quanta::Clock {
    static C: OnceLock<quanta::Clock> = OnceLock::new();
    C.get_or_init(quanta::Clock::new)
}

fn now_raw() -> u64 {
    clock().raw()
}

fn nanos(from: u64, to: u64) -> u64 {
    clock().delta_as_nanos(from, to)
}

fn zero_pad() -> [u8; 47] {
    [0; 47]
}

/// 64 bytes: seq, send time, priority flag, padding.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct BenchEvent {
    seq: u64,
    sent_at: u64,
    critical: bool,
    #[serde(skip, default = "zero_pad")]
    #[allow(dead_code)] // only there to make the event 64 bytes
    pad: [u8; 47],
}

const _: () = assert!(std::mem::size_of::<BenchEvent>() == 64);

impl BenchEvent {
    fn new(seq: u64, critical: bool) -> Self {
        Self {
            seq,
            sent_at: now_raw(),
            critical,
            pad: [0; 47],
        }
    }

    /// Without a send time, for the throughput runs, where no latency is taken: the clock
    /// read (about 12 ns here) would be the benchmark's own cost in every contender's
    /// publish loop.
    fn unstamped(seq: u64) -> Self {
        Self {
            seq,
            sent_at: 0,
            critical: false,
            pad: [0; 47],
        }
    }
}

/// Priority for our bus: set per scenario (Normal = never dropped; Low = shed).
static LOW_PRIORITY: AtomicBool = AtomicBool::new(false);

impl ce::Message for BenchEvent {
    fn priority(&self) -> ce::Priority {
        if self.critical {
            ce::Priority::Critical
        } else if LOW_PRIORITY.load(Ordering::Relaxed) {
            ce::Priority::Low
        } else {
            ce::Priority::Normal
        }
    }
}

impl rvoip_infra_common::events::types::Event for BenchEvent {
    fn event_type() -> &'static str {
        "bench_event"
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl rvoip_infra_common::events::cross_crate::CrossCrateEvent for BenchEvent {
    fn event_type(&self) -> &'static str {
        "bench_event"
    }
    fn source_plane(&self) -> rvoip_infra_common::planes::PlaneType {
        rvoip_infra_common::planes::PlaneType::Signaling
    }
    fn target_plane(&self) -> rvoip_infra_common::planes::PlaneType {
        rvoip_infra_common::planes::PlaneType::Signaling
    }
    fn priority(&self) -> rvoip_infra_common::events::types::EventPriority {
        rvoip_infra_common::events::types::EventPriority::Normal
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Polls a future that is expected to complete without waiting (the rvoip publish
/// paths never yield when no handler is registered); waits politely if it does not.
fn poll_now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------------------
// Contenders
// ---------------------------------------------------------------------------------------

/// What a consumer poll yields.
#[derive(Default)]
struct Polled {
    events: Vec<(u64, u64, bool)>,
    reported_lost: u64,
}

trait Tx: Send {
    /// Sends one event; waits (spins) if the contender back-pressures.
    fn send(&mut self, ev: BenchEvent);
    /// Sends every event of `evs` in order, emptying it, with the contender's batch call
    /// where it has one; otherwise one by one.
    fn send_batch(&mut self, evs: &mut Vec<BenchEvent>) {
        for ev in evs.drain(..) {
            self.send(ev);
        }
    }
}

trait Rx: Send {
    /// Appends what is available now (up to ~64 events).
    fn poll(&mut self, out: &mut Polled);
}

struct Setup {
    txs: Vec<Box<dyn Tx>>,
    rxs: Vec<Box<dyn Rx>>,
    _keep: Box<dyn Any + Send>,
}

#[derive(Clone, Copy)]
struct Shape {
    publishers: usize,
    subscribers: usize,
    capacity: usize,
}

trait Contender: Sync {
    fn name(&self) -> &'static str;
    fn setup(&self, shape: Shape) -> Setup;
}

// Every contender's publisher and subscriber handles are aligned to 128 bytes: allocated
// one after the other, they would otherwise share cache lines (one written by the
// publishing thread, the other by the receiving thread), a slowdown that depended on
// where the allocator happened to put them.

// --- call-engine-bus ---

struct Ours {
    history: bool,
    zero_copy: bool,
    /// The subscribers as one broadcast subscription (one shared queue per lane).
    broadcast: bool,
    /// Receive with `try_recv_with` (events lent in place); otherwise `try_recv_batch`
    /// (events moved into a buffer).
    lend: bool,
}

#[repr(align(128))]
struct OursTx(
    ce::Publisher<BenchEvent>,
    u64,
    std::collections::VecDeque<ce::Outgoing<BenchEvent>>,
);
impl Tx for OursTx {
    fn send(&mut self, ev: BenchEvent) {
        let c = ce::CorrelationId(self.1);
        self.1 = self.1.wrapping_add(1);
        let mut ev = ev;
        loop {
            match self.0.try_publish(c, None, ev) {
                Ok(_) => return,
                Err(ce::PublishError::Full(e)) => {
                    ev = e;
                    std::thread::yield_now();
                }
                Err(ce::PublishError::Closed(_)) => return,
            }
        }
    }
    fn send_batch(&mut self, evs: &mut Vec<BenchEvent>) {
        for payload in evs.drain(..) {
            let correlation = ce::CorrelationId(self.1);
            self.1 = self.1.wrapping_add(1);
            self.2.push_back(ce::Outgoing {
                correlation,
                causation: None,
                payload,
            });
        }
        while !self.2.is_empty() {
            match self.0.try_publish_batch(&mut self.2) {
                Ok(_) => {}
                Err(ce::PublishError::Full(())) => std::thread::yield_now(),
                Err(ce::PublishError::Closed(())) => return,
            }
        }
    }
}

#[repr(align(128))]
struct OursRx(ce::Receiver<BenchEvent>, Vec<ce::Event<BenchEvent>>, bool);
impl Rx for OursRx {
    fn poll(&mut self, out: &mut Polled) {
        if self.2 {
            let events = &mut out.events;
            if let Ok(info) = self.0.try_recv_with(64, |e| {
                events.push((e.payload.seq, e.payload.sent_at, e.payload.critical))
            }) {
                out.reported_lost += info.missed;
            }
            return;
        }
        if let Ok(info) = self.0.try_recv_batch(&mut self.1, 64) {
            out.reported_lost += info.missed;
            for e in self.1.drain(..) {
                out.events
                    .push((e.payload.seq, e.payload.sent_at, e.payload.critical));
            }
        }
    }
}

impl Contender for Ours {
    fn name(&self) -> &'static str {
        match (self.lend, self.broadcast, self.history, self.zero_copy) {
            (false, _, _, _) => "call-engine-bus try_recv_batch",
            (true, true, _, _) => "call-engine-bus broadcast",
            (true, false, false, true) => "call-engine-bus",
            (true, false, true, _) => "call-engine-bus +history",
            (true, false, false, false) => "call-engine-bus copy fan-out",
        }
    }
    fn setup(&self, s: Shape) -> Setup {
        let cfg = ce::EventBusConfig {
            shard_count: std::env::var("CE_SHARDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if s.capacity > 16_384 { 1 } else { 4 }),
            // A receiver's lane is one queue whatever the shard count: the same capacity
            // as every other contender's queue.
            broadcast_capacity: std::env::var("CE_CAP")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(s.capacity),
            history_capacity: if self.history { 1024 } else { 0 },
            enable_zero_copy: self.zero_copy,
            ..Default::default()
        };
        let bus = ce::EventBus::new(cfg).unwrap();
        let receivers = if self.broadcast {
            bus.subscribe_broadcast(ce::Filter::all(), s.subscribers)
        } else {
            (0..s.subscribers)
                .map(|_| bus.subscribe(ce::Filter::all()))
                .collect()
        };
        let rxs = receivers
            .into_iter()
            .map(|rx| Box::new(OursRx(rx, Vec::with_capacity(64), self.lend)) as Box<dyn Rx>)
            .collect();
        let txs = (0..s.publishers)
            .map(|i| {
                Box::new(OursTx(
                    bus.publisher("bench"),
                    (i as u64) << 40,
                    std::collections::VecDeque::with_capacity(256),
                )) as Box<dyn Tx>
            })
            .collect();
        Setup {
            txs,
            rxs,
            _keep: Box::new(bus),
        }
    }
}

// --- rvoip-infra-common EventBus ---

/// `fast`: published with `publish_fast`, rvoip's "ultra-fast publish for static events"
/// (no copy of the event, no lookup of direct subscribers), on the bus's own type
/// registry (`enable_zero_copy: false`; with it, `publish_fast` would use a process-wide
/// registry shared by every run). Otherwise `publish`, the call rvoip's own fast-path
/// example uses, on the zero-copy broadcast channel.
struct RvoipBus {
    fast: bool,
}
#[repr(align(128))]
struct RvoipBusTx(rvoip_infra_common::events::bus::EventBus, bool);
impl Tx for RvoipBusTx {
    fn send(&mut self, ev: BenchEvent) {
        if self.1 {
            let _ = poll_now(self.0.publish_fast(ev));
        } else {
            let _ = poll_now(self.0.publish(ev));
        }
    }
    fn send_batch(&mut self, evs: &mut Vec<BenchEvent>) {
        // The call takes the batch by value; the harness's buffer is then rebuilt (one
        // allocation per batch, on rvoip's side of the ledger).
        let batch = std::mem::replace(evs, Vec::with_capacity(evs.capacity()));
        let _ = poll_now(self.0.publish_batch(batch));
    }
}
impl rvoip_infra_common::events::types::StaticEvent for BenchEvent {}
#[repr(align(128))]
struct RvoipBusRx(rvoip_infra_common::events::registry::TypedBroadcastReceiver<BenchEvent>);
impl Rx for RvoipBusRx {
    fn poll(&mut self, out: &mut Polled) {
        for _ in 0..64 {
            match self.0.try_recv() {
                Ok(e) => out.events.push((e.seq, e.sent_at, e.critical)),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    out.reported_lost += n
                }
                Err(_) => break,
            }
        }
    }
}
impl Contender for RvoipBus {
    fn name(&self) -> &'static str {
        if self.fast {
            "rvoip EventBus publish_fast"
        } else {
            "rvoip EventBus"
        }
    }
    fn setup(&self, s: Shape) -> Setup {
        use rvoip_infra_common::events::bus::{EventBus, EventBusConfig};
        let bus = EventBus::with_config(EventBusConfig {
            broadcast_capacity: s.capacity,
            enable_zero_copy: !self.fast,
            ..Default::default()
        });
        let rxs = (0..s.subscribers)
            .map(|_| {
                Box::new(RvoipBusRx(
                    poll_now(bus.subscribe_broadcast::<BenchEvent>()).unwrap(),
                )) as Box<dyn Rx>
            })
            .collect();
        let txs = (0..s.publishers)
            .map(|_| Box::new(RvoipBusTx(bus.clone(), self.fast)) as Box<dyn Tx>)
            .collect();
        Setup {
            txs,
            rxs,
            _keep: Box::new(bus),
        }
    }
}

// --- rvoip-infra-common GlobalEventCoordinator ---

struct RvoipCoord;
type CoordEvent = Arc<dyn rvoip_infra_common::events::cross_crate::CrossCrateEvent>;
#[repr(align(128))]
struct RvoipCoordTx(Arc<rvoip_infra_common::events::coordinator::GlobalEventCoordinator>);
impl Tx for RvoipCoordTx {
    fn send(&mut self, ev: BenchEvent) {
        let _ = poll_now(self.0.publish(Arc::new(ev)));
    }
}
#[repr(align(128))]
struct RvoipCoordRx(tokio::sync::mpsc::Receiver<CoordEvent>);
impl Rx for RvoipCoordRx {
    fn poll(&mut self, out: &mut Polled) {
        for _ in 0..64 {
            match self.0.try_recv() {
                Ok(e) => {
                    if let Some(e) = e.as_any().downcast_ref::<BenchEvent>() {
                        out.events.push((e.seq, e.sent_at, e.critical));
                    }
                }
                Err(_) => break,
            }
        }
    }
}
impl Contender for RvoipCoord {
    fn name(&self) -> &'static str {
        "rvoip GlobalEventCoordinator"
    }
    fn setup(&self, s: Shape) -> Setup {
        use rvoip_infra_common::events::config::EventCoordinatorConfig;
        use rvoip_infra_common::events::coordinator::GlobalEventCoordinator;
        // Its subscriptions are bridged by tasks: give them a runtime of their own.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let coord = rt.block_on(async {
            Arc::new(
                GlobalEventCoordinator::new(
                    EventCoordinatorConfig::monolithic().with_channel_capacity(s.capacity),
                )
                .await
                .unwrap(),
            )
        });
        let rxs = (0..s.subscribers)
            .map(|_| {
                let rx = rt.block_on(coord.subscribe("bench_event")).unwrap();
                Box::new(RvoipCoordRx(rx)) as Box<dyn Rx>
            })
            .collect();
        let txs = (0..s.publishers)
            .map(|_| Box::new(RvoipCoordTx(coord.clone())) as Box<dyn Tx>)
            .collect();
        Setup {
            txs,
            rxs,
            _keep: Box::new((rt, coord)),
        }
    }
}

// --- tokio broadcast ---

struct TokioBroadcast;
#[repr(align(128))]
struct TbTx(tokio::sync::broadcast::Sender<BenchEvent>);
impl Tx for TbTx {
    fn send(&mut self, ev: BenchEvent) {
        let _ = self.0.send(ev);
    }
}
#[repr(align(128))]
struct TbRx(tokio::sync::broadcast::Receiver<BenchEvent>);
impl Rx for TbRx {
    fn poll(&mut self, out: &mut Polled) {
        for _ in 0..64 {
            match self.0.try_recv() {
                Ok(e) => out.events.push((e.seq, e.sent_at, e.critical)),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    out.reported_lost += n
                }
                Err(_) => break,
            }
        }
    }
}
impl Contender for TokioBroadcast {
    fn name(&self) -> &'static str {
        "tokio::sync::broadcast"
    }
    fn setup(&self, s: Shape) -> Setup {
        let (tx, _) = tokio::sync::broadcast::channel(s.capacity);
        let rxs = (0..s.subscribers)
            .map(|_| Box::new(TbRx(tx.subscribe())) as Box<dyn Rx>)
            .collect();
        let txs = (0..s.publishers)
            .map(|_| Box::new(TbTx(tx.clone())) as Box<dyn Tx>)
            .collect();
        Setup {
            txs,
            rxs,
            _keep: Box::new(tx),
        }
    }
}

// --- crossbeam (one channel per subscriber; publisher copies to each) ---

struct Crossbeam;
#[repr(align(128))]
struct CbTx(Vec<crossbeam_channel::Sender<BenchEvent>>);
impl Tx for CbTx {
    fn send(&mut self, ev: BenchEvent) {
        for s in &self.0 {
            let _ = s.send(ev);
        }
    }
}
#[repr(align(128))]
struct CbRx(crossbeam_channel::Receiver<BenchEvent>);
impl Rx for CbRx {
    fn poll(&mut self, out: &mut Polled) {
        for e in self.0.try_iter().take(64) {
            out.events.push((e.seq, e.sent_at, e.critical));
        }
    }
}
impl Contender for Crossbeam {
    fn name(&self) -> &'static str {
        "crossbeam channel (raw)"
    }
    fn setup(&self, s: Shape) -> Setup {
        let (txs_, rxs): (Vec<_>, Vec<_>) = (0..s.subscribers)
            .map(|_| crossbeam_channel::bounded(s.capacity))
            .unzip();
        let rxs = rxs
            .into_iter()
            .map(|r| Box::new(CbRx(r)) as Box<dyn Rx>)
            .collect();
        let txs = (0..s.publishers)
            .map(|_| Box::new(CbTx(txs_.clone())) as Box<dyn Tx>)
            .collect();
        Setup {
            txs,
            rxs,
            _keep: Box::new(()),
        }
    }
}

// --- disruptor (one shared ring; the fan-out reference) ---

struct Disruptor;
#[repr(align(128))]
struct DisTx<P>(P);
impl<P: disruptor::Producer<BenchEvent> + Send> Tx for DisTx<P> {
    fn send(&mut self, ev: BenchEvent) {
        while self.0.try_publish(|e| *e = ev).is_err() {
            std::thread::yield_now();
        }
    }
    fn send_batch(&mut self, evs: &mut Vec<BenchEvent>) {
        let n = evs.len();
        if n == 0 {
            return;
        }
        // All or nothing: the batch is claimed whole, or not at all.
        while self
            .0
            .try_batch_publish(n, |slots| {
                for (slot, ev) in slots.zip(evs.iter()) {
                    *slot = *ev;
                }
            })
            .is_err()
        {
            std::thread::yield_now();
        }
        evs.clear();
    }
}
#[repr(align(128))]
struct DisRx<B>(disruptor::EventPoller<BenchEvent, B>);
macro_rules! dis_rx {
    ($barrier:ty) => {
        impl Rx for DisRx<$barrier> {
            fn poll(&mut self, out: &mut Polled) {
                if let Ok(mut events) = self.0.poll_take(64) {
                    for e in &mut events {
                        out.events.push((e.seq, e.sent_at, e.critical));
                    }
                }
            }
        }
    };
}
dis_rx!(disruptor::SingleProducerBarrier);
dis_rx!(disruptor::MultiProducerBarrier);

/// A disruptor's pollers (one per subscriber), then its producer(s).
macro_rules! disruptor_setup {
    ($builder:expr, $s:expr, |$producer:ident| $txs:expr) => {{
        let (p0, b) = $builder.event_poller();
        let mut rxs: Vec<Box<dyn Rx>> = vec![Box::new(DisRx(p0))];
        let txs: Vec<Box<dyn Tx>> = if $s.subscribers == 1 {
            let $producer = b.build();
            $txs
        } else {
            let (p1, mut b) = b.event_poller();
            rxs.push(Box::new(DisRx(p1)));
            for _ in 2..$s.subscribers {
                let (p, next) = b.event_poller();
                rxs.push(Box::new(DisRx(p)));
                b = next;
            }
            let $producer = b.build();
            $txs
        };
        Setup {
            txs,
            rxs,
            _keep: Box::new(()),
        }
    }};
}

impl Contender for Disruptor {
    fn name(&self) -> &'static str {
        "disruptor (raw shared ring)"
    }
    fn setup(&self, s: Shape) -> Setup {
        let size = s.capacity.next_power_of_two();
        let factory = || BenchEvent::new(0, false);
        if s.publishers == 1 {
            let b = disruptor::build_single_producer(size, factory, disruptor::BusySpin);
            disruptor_setup!(b, s, |p| vec![Box::new(DisTx(p)) as Box<dyn Tx>])
        } else {
            let b = disruptor::build_multi_producer(size, factory, disruptor::BusySpin);
            disruptor_setup!(b, s, |p| (0..s.publishers)
                .map(|_| Box::new(DisTx(p.clone())) as Box<dyn Tx>)
                .collect())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------

#[derive(Default, Clone, Debug)]
struct Outcome {
    sent: u64,
    received: u64,
    reported_lost: u64,
    unreported_lost: u64,
    elapsed: Duration,
    /// Non-empty polls of the consumers (events per poll: how far behind they ran).
    busy_polls: u64,
    latencies: Vec<u64>,
    critical_position: Option<u64>,
    critical_wait_ns: Option<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }
}

struct ConsumerResult {
    received: u64,
    reported: u64,
    /// When the last event arrived (`now_raw`: one cheap TSC read per poll, already taken
    /// for the latencies; an `Instant::now()` per poll cost the consumers ~30 ns each).
    last_at: u64,
    /// Polls that returned at least one event.
    busy_polls: u64,
    latencies: Vec<u64>,
}

/// Consumer loop: until `expected` events are accounted for (received + reported lost), or
/// the publishers are done and nothing arrived for 300 ms. `work_ns` of busy work per event
/// makes a slow subscriber.
fn consume(
    mut rx: Box<dyn Rx>,
    expected: u64,
    done: Arc<AtomicBool>,
    keep_latency: bool,
    work_ns: u64,
) -> ConsumerResult {
    let idle = Duration::from_millis(300);
    let mut p = Polled::default();
    let (mut received, mut reported) = (0u64, 0u64);
    let mut latencies = Vec::with_capacity(if keep_latency { expected as usize } else { 0 });
    let mut last_at = now_raw();
    let idle_ns = idle.as_nanos() as u64;
    let mut busy_polls = 0u64;
    loop {
        p.events.clear();
        rx.poll(&mut p);
        reported += std::mem::take(&mut p.reported_lost);
        if p.events.is_empty() {
            if received + reported >= expected
                || (done.load(Ordering::Acquire) && nanos(last_at, now_raw()) > idle_ns)
            {
                break;
            }
            std::thread::yield_now();
            continue;
        }
        busy_polls += 1;
        let t = now_raw();
        for &(_, sent_at, _) in &p.events {
            if keep_latency {
                latencies.push(nanos(sent_at, t));
            }
            received += 1;
            if work_ns > 0 {
                let until = now_raw();
                while nanos(until, now_raw()) < work_ns {
                    std::hint::spin_loop();
                }
            }
        }
        last_at = t;
        if received + reported >= expected {
            break;
        }
    }
    ConsumerResult {
        received,
        reported,
        last_at,
        busy_polls,
        latencies,
    }
}

/// With `CE_PIN=1` in the environment, pins the `k`-th thread of a throughput run
/// (publishers first, then subscribers) to core `k % cores`: in (i) the publisher and
/// the subscriber each get a core of their own. Off by default: rvoip's contenders run
/// threads of their own that pinning would starve. Useful for A/B runs of one contender.
fn pin(k: usize) {
    if std::env::var_os("CE_PIN").is_none() {
        return;
    }
    if let Some(ids) = core_affinity::get_core_ids() {
        if let Some(id) = ids.get(k % ids.len().max(1)) {
            core_affinity::set_for_current(*id);
        }
    }
}

/// The round trip of one cache line between two threads pinned to the first two cores
/// (median of 5 runs of 20,000 round trips), in ns: tells where the VM's vCPUs sit at the
/// moment (about 30 ns when they share a core's caches, 65-100 ns apart, several hundred
/// when the host is busy), which moves every throughput figure.
fn core_round_trip_ns() -> f64 {
    #[repr(align(128))]
    struct Line(AtomicU64);
    let Some(ids) = core_affinity::get_core_ids().filter(|ids| ids.len() >= 2) else {
        return f64::NAN;
    };
    let (a, b) = (ids[0], ids[1]);
    let line = Arc::new(Line(AtomicU64::new(0)));
    let n = 20_000u64;
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            line.0.store(0, Ordering::SeqCst);
            let other = line.clone();
            let echo = std::thread::spawn(move || {
                core_affinity::set_for_current(b);
                for i in 0..n {
                    while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    other.0.store(2 * i + 2, Ordering::Release);
                }
            });
            let t = std::thread::spawn({
                let line = line.clone();
                move || {
                    core_affinity::set_for_current(a);
                    let t0 = now_raw();
                    for i in 0..n {
                        line.0.store(2 * i + 1, Ordering::Release);
                        while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                            std::hint::spin_loop();
                        }
                    }
                    nanos(t0, now_raw()) as f64 / n as f64
                }
            });
            let ns = t.join().unwrap();
            echo.join().unwrap();
            ns
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// Throughput: `pubs` publishers send `n` events each, as fast as the contender lets them.
/// Sends one queue's worth of events through every publisher and drains them, in chunks
/// that keep each queue at most half full (no back-pressure, no loss): every contender
/// then starts the timed run with its queue memory touched and its allocator warm. (Our
/// ring's slots, for one, are first written by the publisher; the others write theirs
/// when built.)
fn warm_up(setup: &mut Setup, shape: Shape) {
    let pubs = setup.txs.len().max(1);
    // `CE_CAP` may give our bus a smaller queue than the others': the chunks fit it too.
    let smallest = std::env::var("CE_CAP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(shape.capacity, |c| c.min(shape.capacity));
    let chunk = (smallest / 2 / pubs).max(1) as u64;
    let mut polled = Polled::default();
    let mut sent = 0;
    while sent < shape.capacity as u64 {
        for tx in setup.txs.iter_mut() {
            for i in 0..chunk {
                tx.send(BenchEvent::unstamped(i));
            }
        }
        sent += chunk * pubs as u64;
        let want = chunk * pubs as u64;
        for rx in setup.rxs.iter_mut() {
            let (mut got, mut idle_since) = (0, Instant::now());
            while got < want && idle_since.elapsed() < Duration::from_millis(200) {
                polled.events.clear();
                rx.poll(&mut polled);
                let now = polled.events.len() as u64 + std::mem::take(&mut polled.reported_lost);
                if now > 0 {
                    got += now;
                    idle_since = Instant::now();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Throughput: `n` events per publisher, handed over `batch` at a time (see
/// [`Tx::send_batch`]; 1: one `send` each).
fn throughput(c: &dyn Contender, shape: Shape, n: u64, work_ns: u64, batch: u64) -> Outcome {
    let mut setup = c.setup(shape);
    warm_up(&mut setup, shape);
    let total = n * shape.publishers as u64;
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(shape.publishers + shape.subscribers + 1));
    let consumers: Vec<_> = setup
        .rxs
        .into_iter()
        .enumerate()
        .map(|(j, rx)| {
            let done = done.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                pin(shape.publishers + j);
                start.wait();
                consume(rx, total, done, false, work_ns)
            })
        })
        .collect();
    let producers: Vec<_> = setup
        .txs
        .into_iter()
        .enumerate()
        .map(|(i, mut tx)| {
            let start = start.clone();
            std::thread::spawn(move || {
                pin(i);
                start.wait();
                // The run starts when the first publisher starts (not when the main thread
                // gets to run again after the barrier).
                let started = now_raw();
                if batch <= 1 {
                    for i in 0..n {
                        tx.send(BenchEvent::unstamped(i));
                    }
                } else {
                    let mut evs = Vec::with_capacity(batch as usize);
                    let mut i = 0;
                    while i < n {
                        let k = batch.min(n - i);
                        evs.extend((i..i + k).map(BenchEvent::unstamped));
                        tx.send_batch(&mut evs);
                        i += k;
                    }
                }
                started
            })
        })
        .collect();
    start.wait();
    let t0 = producers
        .into_iter()
        .map(|p| p.join().unwrap())
        .min()
        .unwrap_or_else(now_raw);
    done.store(true, Ordering::Release);
    let results: Vec<_> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    let last = results.iter().map(|r| r.last_at).max().unwrap_or(t0);
    let received: u64 = results.iter().map(|r| r.received).sum();
    let reported: u64 = results.iter().map(|r| r.reported).sum();
    let busy_polls: u64 = results.iter().map(|r| r.busy_polls).sum();
    let sent_total = total * shape.subscribers as u64;
    drop(setup._keep);
    Outcome {
        sent: sent_total,
        received,
        reported_lost: reported,
        unreported_lost: sent_total.saturating_sub(received + reported),
        elapsed: Duration::from_nanos(nanos(t0, last)),
        busy_polls,
        ..Default::default()
    }
}

/// Latency at a fixed rate: one publisher paced at `rate` events/s, one subscriber.
fn paced_latency(c: &dyn Contender, rate: u64, n: u64) -> Outcome {
    let setup = c.setup(Shape {
        publishers: 1,
        subscribers: 1,
        capacity: 16_384,
    });
    let done = Arc::new(AtomicBool::new(false));
    let mut rxs = setup.rxs;
    let mut txs = setup.txs;
    let rx = rxs.remove(0);
    let mut tx = txs.remove(0);
    let d = done.clone();
    let consumer = std::thread::spawn(move || consume(rx, n, d, true, 0));
    let period = 1_000_000_000 / rate;
    let t0 = now_raw();
    for i in 0..n {
        let due = i * period;
        while nanos(t0, now_raw()) < due {
            std::hint::spin_loop();
        }
        tx.send(BenchEvent::new(i, false));
    }
    done.store(true, Ordering::Release);
    let r = consumer.join().unwrap();
    drop(setup._keep);
    Outcome {
        sent: n,
        received: r.received,
        reported_lost: r.reported,
        unreported_lost: n.saturating_sub(r.received + r.reported),
        latencies: r.latencies,
        ..Default::default()
    }
}

/// A Critical event published behind a backlog of Low events: the consumer drains all
/// the time but slowly (~1 µs of work per event), the publisher bursts `backlog` Low
/// events (far faster than they drain), then one Critical. Reports how many events the
/// consumer received before the Critical, its publish→receive latency, and the backlog
/// actually queued when it was published.
fn critical_behind_low(c: &dyn Contender, backlog: u64) -> (Outcome, u64) {
    LOW_PRIORITY.store(true, Ordering::Relaxed);
    let setup = c.setup(Shape {
        publishers: 1,
        subscribers: 1,
        capacity: (backlog as usize + 1).next_power_of_two(),
    });
    let progress = Arc::new(AtomicU64::new(0));
    let mut rxs = setup.rxs;
    let mut txs = setup.txs;
    let mut rx = rxs.remove(0);
    let mut tx = txs.remove(0);
    let p = progress.clone();
    let consumer = std::thread::spawn(move || {
        let mut polled = Polled::default();
        let mut received = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            polled.events.clear();
            rx.poll(&mut polled);
            let t = now_raw();
            for &(_, sent_at, critical) in &polled.events {
                if critical {
                    return Some((received, nanos(sent_at, t)));
                }
                received += 1;
                p.store(received, Ordering::Relaxed);
                let w = now_raw();
                while nanos(w, now_raw()) < 1_000 {
                    std::hint::spin_loop();
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            if polled.events.is_empty() {
                std::thread::yield_now();
            }
        }
    });
    for i in 0..backlog {
        tx.send(BenchEvent::new(i, false));
    }
    let queued_at_publish = backlog - progress.load(Ordering::Relaxed);
    tx.send(BenchEvent::new(backlog, true));
    let res = consumer.join().unwrap();
    LOW_PRIORITY.store(false, Ordering::Relaxed);
    drop(setup._keep);
    (
        Outcome {
            sent: backlog + 1,
            critical_position: res.map(|r| r.0),
            critical_wait_ns: res.map(|r| r.1),
            ..Default::default()
        },
        queued_at_publish,
    )
}

// ---------------------------------------------------------------------------------------
// Async mode: tasks on a 2-worker tokio runtime, `publish().await` / `recv().await`, as
// the engine's components use a bus.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum AsyncKind {
    Ours,
    /// The subscribers as one broadcast subscription.
    OursBroadcast,
    RvoipBus,
    /// `publish_fast` (see the synchronous `RvoipBus`).
    RvoipBusFast,
    RvoipCoord,
    TokioBroadcast,
    TokioMpsc,
}

impl AsyncKind {
    const ALL: [AsyncKind; 7] = [
        AsyncKind::Ours,
        AsyncKind::OursBroadcast,
        AsyncKind::RvoipBus,
        AsyncKind::RvoipBusFast,
        AsyncKind::RvoipCoord,
        AsyncKind::TokioBroadcast,
        AsyncKind::TokioMpsc,
    ];

    fn name(self) -> &'static str {
        match self {
            AsyncKind::Ours => "call-engine-bus",
            AsyncKind::OursBroadcast => "call-engine-bus broadcast",
            AsyncKind::RvoipBus => "rvoip EventBus",
            AsyncKind::RvoipBusFast => "rvoip EventBus publish_fast",
            AsyncKind::RvoipCoord => "rvoip GlobalEventCoordinator",
            AsyncKind::TokioBroadcast => "tokio::sync::broadcast",
            AsyncKind::TokioMpsc => "tokio::sync::mpsc (raw)",
        }
    }
}

/// Counts what a consumer got; ends at `expected` or after 300 ms of silence once the
/// publishers are done.
struct AsyncCount {
    received: u64,
    reported: u64,
    last_at: Instant,
}

/// `f`, or `None` after 300 ms without a result (the publishers are done and whatever
/// was lost is not coming).
async fn idle_or<F: std::future::Future>(_done: &AtomicBool, f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_millis(300), f)
        .await
        .ok()
}

fn async_throughput(kind: AsyncKind, shape: Shape, n: u64) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = n * shape.publishers as u64;
    let done = Arc::new(AtomicBool::new(false));
    rt.block_on(async move {
        let mut consumers = Vec::new();
        let mut producers = Vec::new();
        let t0;
        match kind {
            AsyncKind::Ours | AsyncKind::OursBroadcast => {
                let bus = ce::EventBus::<BenchEvent>::new(ce::EventBusConfig {
                    broadcast_capacity: shape.capacity / 4,
                    ..Default::default()
                })
                .unwrap();
                let receivers = if kind == AsyncKind::OursBroadcast {
                    bus.subscribe_broadcast(ce::Filter::all(), shape.subscribers)
                } else {
                    (0..shape.subscribers)
                        .map(|_| bus.subscribe(ce::Filter::all()))
                        .collect()
                };
                for mut rx in receivers {
                    let done = done.clone();
                    consumers.push(tokio::spawn(async move {
                        let mut c = AsyncCount {
                            received: 0,
                            reported: 0,
                            last_at: Instant::now(),
                        };
                        while c.received + c.reported < total {
                            let mut got = 0u64;
                            match idle_or(&done, rx.recv_with(|_| got += 1)).await {
                                Some(Ok(info)) => {
                                    c.received += got;
                                    c.reported += info.missed;
                                    c.last_at = Instant::now();
                                }
                                _ => break,
                            }
                        }
                        c
                    }));
                }
                t0 = Instant::now();
                for p in 0..shape.publishers {
                    let tx = bus.publisher("bench");
                    producers.push(tokio::spawn(async move {
                        for i in 0..n {
                            let c = ce::CorrelationId(((p as u64) << 40) | i);
                            let _ = tx.publish(c, None, BenchEvent::unstamped(i)).await;
                        }
                    }));
                }
                for p in producers.drain(..) {
                    p.await.unwrap();
                }
            }
            AsyncKind::RvoipBus | AsyncKind::RvoipBusFast => {
                use rvoip_infra_common::events::bus::{EventBus, EventBusConfig};
                let fast = kind == AsyncKind::RvoipBusFast;
                let bus = EventBus::with_config(EventBusConfig {
                    broadcast_capacity: shape.capacity,
                    enable_zero_copy: !fast,
                    ..Default::default()
                });
                for _ in 0..shape.subscribers {
                    let mut rx = bus.subscribe_broadcast::<BenchEvent>().await.unwrap();
                    let done = done.clone();
                    consumers.push(tokio::spawn(async move {
                        let mut c = AsyncCount {
                            received: 0,
                            reported: 0,
                            last_at: Instant::now(),
                        };
                        while c.received + c.reported < total {
                            match idle_or(&done, rx.recv()).await {
                                Some(Ok(_)) => {
                                    c.received += 1;
                                    c.last_at = Instant::now();
                                }
                                Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(k))) => {
                                    c.reported += k
                                }
                                _ => break,
                            }
                        }
                        c
                    }));
                }
                t0 = Instant::now();
                for _ in 0..shape.publishers {
                    let bus = bus.clone();
                    producers.push(tokio::spawn(async move {
                        for i in 0..n {
                            let ev = BenchEvent::unstamped(i);
                            let _ = if fast {
                                bus.publish_fast(ev).await
                            } else {
                                bus.publish(ev).await
                            };
                            // It never yields by itself: let the consumers run.
                            if i % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                for p in producers.drain(..) {
                    p.await.unwrap();
                }
            }
            AsyncKind::RvoipCoord => {
                use rvoip_infra_common::events::config::EventCoordinatorConfig;
                use rvoip_infra_common::events::coordinator::GlobalEventCoordinator;
                let coord = Arc::new(
                    GlobalEventCoordinator::new(
                        EventCoordinatorConfig::monolithic().with_channel_capacity(shape.capacity),
                    )
                    .await
                    .unwrap(),
                );
                for _ in 0..shape.subscribers {
                    let mut rx = coord.subscribe("bench_event").await.unwrap();
                    let done = done.clone();
                    consumers.push(tokio::spawn(async move {
                        let mut c = AsyncCount {
                            received: 0,
                            reported: 0,
                            last_at: Instant::now(),
                        };
                        while c.received + c.reported < total {
                            match idle_or(&done, rx.recv()).await {
                                Some(Some(_)) => {
                                    c.received += 1;
                                    c.last_at = Instant::now();
                                }
                                _ => break,
                            }
                        }
                        c
                    }));
                }
                t0 = Instant::now();
                for _ in 0..shape.publishers {
                    let coord = coord.clone();
                    producers.push(tokio::spawn(async move {
                        for i in 0..n {
                            let _ = coord.publish(Arc::new(BenchEvent::unstamped(i))).await;
                            if i % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                for p in producers.drain(..) {
                    p.await.unwrap();
                }
            }
            AsyncKind::TokioBroadcast => {
                let (tx, _) = tokio::sync::broadcast::channel::<BenchEvent>(shape.capacity);
                for _ in 0..shape.subscribers {
                    let mut rx = tx.subscribe();
                    let done = done.clone();
                    consumers.push(tokio::spawn(async move {
                        let mut c = AsyncCount {
                            received: 0,
                            reported: 0,
                            last_at: Instant::now(),
                        };
                        while c.received + c.reported < total {
                            match idle_or(&done, rx.recv()).await {
                                Some(Ok(_)) => {
                                    c.received += 1;
                                    c.last_at = Instant::now();
                                }
                                Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(k))) => {
                                    c.reported += k
                                }
                                _ => break,
                            }
                        }
                        c
                    }));
                }
                t0 = Instant::now();
                for _ in 0..shape.publishers {
                    let tx = tx.clone();
                    producers.push(tokio::spawn(async move {
                        for i in 0..n {
                            let _ = tx.send(BenchEvent::unstamped(i));
                            if i % 64 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                for p in producers.drain(..) {
                    p.await.unwrap();
                }
            }
            AsyncKind::TokioMpsc => {
                let mut senders = Vec::new();
                for _ in 0..shape.subscribers {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<BenchEvent>(shape.capacity);
                    senders.push(tx);
                    let done = done.clone();
                    consumers.push(tokio::spawn(async move {
                        let mut c = AsyncCount {
                            received: 0,
                            reported: 0,
                            last_at: Instant::now(),
                        };
                        let mut buf = Vec::with_capacity(64);
                        while c.received < total {
                            match idle_or(&done, rx.recv_many(&mut buf, 64)).await {
                                Some(k) if k > 0 => {
                                    c.received += k as u64;
                                    buf.clear();
                                    c.last_at = Instant::now();
                                }
                                _ => break,
                            }
                        }
                        c
                    }));
                }
                t0 = Instant::now();
                for _ in 0..shape.publishers {
                    let senders = senders.clone();
                    producers.push(tokio::spawn(async move {
                        for i in 0..n {
                            for s in &senders {
                                let _ = s.send(BenchEvent::unstamped(i)).await;
                            }
                        }
                    }));
                }
                for p in producers.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        done.store(true, Ordering::Release);
        let mut received = 0;
        let mut reported = 0;
        let mut last = t0;
        for c in consumers {
            let c = c.await.unwrap();
            received += c.received;
            reported += c.reported;
            last = last.max(c.last_at);
        }
        let sent = total * shape.subscribers as u64;
        Outcome {
            sent,
            received,
            reported_lost: reported,
            unreported_lost: sent.saturating_sub(received + reported),
            elapsed: last.duration_since(t0),
            ..Default::default()
        }
    })
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// The `q` quantile of sorted values, by nearest rank; `None` if there are none.
fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    nearest_rank(v, q).unwrap_or(0)
}

fn fmt_rate(r: f64) -> String {
    format!("{:.2} M/s", r / 1e6)
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn loss(o: &Outcome) -> String {
    let pct = |n: u64| 100.0 * n as f64 / o.sent.max(1) as f64;
    format!(
        "{} ({:.1}%) reported, {} ({:.1}%) unreported",
        o.reported_lost,
        pct(o.reported_lost),
        o.unreported_lost,
        pct(o.unreported_lost)
    )
}

/// Prints `ours / other` round by round (both ran in the same few seconds), and in how
/// many rounds it reached `target`.
fn print_round_ratios(
    rounds: &HashMap<(&str, &str), Vec<f64>>,
    title: &str,
    ours: &str,
    other: &str,
    target: f64,
) {
    let (Some(a), Some(b)) = (rounds.get(&(title, ours)), rounds.get(&(title, other))) else {
        return;
    };
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    let met = ratios.iter().filter(|r| **r >= target).count();
    let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    // Paired: the median of the per-round ratios (each pair ran within the same few
    // seconds), with the middle half of them, is steadier on this VM than the ratio of
    // two medians that may come from different rounds.
    let (median, low, high) = quartiles(&ratios);
    println!(
        "  per round, {ours} / {other}: {} (>= {target}x in {met} of {}); paired median {median:.2}x, middle half {low:.2}-{high:.2}x",
        list.join(", "),
        ratios.len()
    );
}

/// The median and the first and third quartiles (nearest rank) of `v`; NaN if empty.
fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| nearest_rank(&v, q).unwrap_or(f64::NAN);
    (at(0.5), at(0.25), at(0.75))
}

fn median_by_rate(mut v: Vec<Outcome>) -> Outcome {
    v.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    v.swap_remove(v.len() / 2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--smoke`: a tiny run that proves the harness works (used by `cargo xtask test`).
    let smoke = args.iter().any(|a| a == "--smoke");
    let scale = if smoke {
        200
    } else if quick {
        10
    } else {
        1
    };
    // The value after `flag`, if there is one.
    let value = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    };
    // A positive number after `flag`.
    let count = |flag: &str| {
        value(flag)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&c| c > 0)
    };
    // `--reps N`: throughput rounds (default 5).
    let reps = count("--reps").map_or(if quick || smoke { 1 } else { 5 }, |r| r as usize);
    // `--events N`: events per throughput run (default 2,000,000).
    let n = count("--events").unwrap_or(2_000_000) / scale;
    // `--batch N`: events per publish call in the throughput scenarios (default 1).
    let batch = count("--batch").unwrap_or(1);

    let contenders: Vec<Box<dyn Contender>> = vec![
        Box::new(Ours {
            history: false,
            zero_copy: true,
            broadcast: false,
            lend: true,
        }),
        Box::new(Ours {
            history: false,
            zero_copy: true,
            broadcast: false,
            lend: false,
        }),
        Box::new(Ours {
            history: true,
            zero_copy: true,
            broadcast: false,
            lend: true,
        }),
        Box::new(Ours {
            history: false,
            zero_copy: false,
            broadcast: false,
            lend: true,
        }),
        Box::new(Ours {
            history: false,
            zero_copy: true,
            broadcast: true,
            lend: true,
        }),
        Box::new(RvoipBus { fast: false }),
        Box::new(RvoipBus { fast: true }),
        Box::new(RvoipCoord),
        Box::new(TokioBroadcast),
        Box::new(Crossbeam),
        Box::new(Disruptor),
    ];
    // `--only NAME` keeps matching contenders (for profiling one of them).
    let only = value("--only");
    // An exact name keeps that contender alone; otherwise every name it starts.
    let exact = only
        .as_deref()
        .is_some_and(|o| contenders.iter().any(|c| c.name() == o));
    let contenders: Vec<Box<dyn Contender>> = contenders
        .into_iter()
        .filter(|c| {
            only.as_deref().is_none_or(|o| {
                if exact {
                    c.name() == o
                } else {
                    c.name().starts_with(o)
                }
            })
        })
        .collect();
    // `--scenario i|ii|iii|iv|v|vi` runs one scenario.
    let scenario = value("--scenario");
    let want = |s: &str| scenario.as_deref().is_none_or(|w| w == s);
    let names: Vec<&str> = contenders.iter().map(|c| c.name()).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(10) + 2;
    let allocator = if cfg!(feature = "system-allocator") {
        "system allocator"
    } else {
        "mimalloc (rvoip-infra-common's default global allocator)"
    };
    println!(
        "bus-compare: {} cores, {} events per run, {reps} rounds, 64-byte events, {allocator}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n
    );
    if batch > 1 {
        println!(
            "  throughput publishers hand over {batch} events per call (the batch calls of our \
             bus, rvoip's EventBus and the disruptor; the others one by one)"
        );
    }

    let settings: Vec<String> = ["CE_PIN", "CE_CAP", "CE_SHARDS"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect();
    if !settings.is_empty() {
        println!("  environment: {}", settings.join(" "));
    }

    // What must not happen (our bus losing a never-dropped event): reported, and the run
    // fails at the end.
    let mut failures: Vec<String> = Vec::new();
    let mut rates: HashMap<(&str, &str), f64> = HashMap::new();
    // Each contender's rate in every round, in round order.
    let mut rounds: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    let scenarios: [(&str, Shape, u64); 3] = [
        (
            "(i) 1 publisher -> 1 subscriber",
            Shape {
                publishers: 1,
                subscribers: 1,
                capacity: 16_384,
            },
            n,
        ),
        (
            "(ii) 1 publisher -> 4 subscribers (fan-out)",
            Shape {
                publishers: 1,
                subscribers: 4,
                capacity: 16_384,
            },
            n / 4,
        ),
        (
            "(iii) 2 publishers -> 1 subscriber",
            Shape {
                publishers: 2,
                subscribers: 1,
                capacity: 16_384,
            },
            n / 2,
        ),
    ];
    for (title, shape, per_pub) in scenarios {
        let tag = title[1..].split(')').next().unwrap_or("");
        if !want(tag) {
            continue;
        }
        println!("\n{title}: delivered events/s (all subscribers), median of {reps} rounds [slowest-fastest], loss");
        // Rounds, not one contender's repetitions back to back: this VM's speed changes
        // from one few-second period to the next, and each round gives every contender a
        // run in the same period.
        let mut runs: Vec<Vec<Outcome>> = contenders.iter().map(|_| Vec::new()).collect();
        let mut trips = Vec::new();
        for round in 0..reps {
            trips.push(format!("{:.0}", core_round_trip_ns()));
            for k in 0..contenders.len() {
                // Rotated, so that no contender always runs first or last in a round.
                let j = (k + round) % contenders.len();
                runs[j].push(throughput(contenders[j].as_ref(), shape, per_pub, 0, batch));
            }
        }
        println!(
            "  (core-to-core round trip before each round, ns: {}; this VM's two vCPUs move between \
             placements)",
            trips.join(", ")
        );
        for (c, outcomes) in contenders.iter().zip(&runs) {
            // Our bus publishes Normal events here: never dropped. Any loss is a bug.
            if c.name().starts_with("call-engine-bus") {
                for o in outcomes.iter().filter(|o| o.received != o.sent) {
                    failures.push(format!(
                        "{title}: {} delivered {} of {} events",
                        c.name(),
                        o.received,
                        o.sent
                    ));
                }
            }
            rounds.insert(
                (title, c.name()),
                outcomes.iter().map(Outcome::rate).collect(),
            );
            let lo = outcomes
                .iter()
                .map(Outcome::rate)
                .fold(f64::INFINITY, f64::min);
            let hi = outcomes.iter().map(Outcome::rate).fold(0.0, f64::max);
            let o = median_by_rate(outcomes.clone());
            rates.insert((title, c.name()), o.rate());
            println!(
                "  {:width$} {:>12}  [{} - {}]  {:>5.1}/poll   loss: {}",
                c.name(),
                fmt_rate(o.rate()),
                fmt_rate(lo).trim(),
                fmt_rate(hi).trim(),
                o.received as f64 / o.busy_polls.max(1) as f64,
                loss(&o)
            );
        }
        let (Some(ours), true) = (
            rates.get(&(title, "call-engine-bus")).copied(),
            rates.len() > 4,
        ) else {
            continue;
        };
        let r = |n: &str| ours / rates.get(&(title, n)).copied().unwrap_or(f64::NAN);
        println!(
            "  ratio call-engine-bus / rvoip EventBus = {:.1}x, / rvoip GlobalEventCoordinator = {:.1}x, / tokio broadcast = {:.1}x, / raw crossbeam = {:.2}x, / disruptor = {:.2}x",
            r("rvoip EventBus"),
            r("rvoip GlobalEventCoordinator"),
            r("tokio::sync::broadcast"),
            r("crossbeam channel (raw)"),
            r("disruptor (raw shared ring)")
        );
        // The target is met against rvoip's faster publish call, whichever it is.
        for rvoip in ["rvoip EventBus", "rvoip EventBus publish_fast"] {
            print_round_ratios(&rounds, title, "call-engine-bus", rvoip, 5.0);
        }
        if shape.subscribers == 1 {
            print_round_ratios(
                &rounds,
                title,
                "call-engine-bus",
                "crossbeam channel (raw)",
                0.5,
            );
        }
        if shape.subscribers > 1 {
            for rvoip in ["rvoip EventBus", "rvoip EventBus publish_fast"] {
                print_round_ratios(&rounds, title, "call-engine-bus broadcast", rvoip, 5.0);
            }
            if let Some(b) = rates.get(&(title, "call-engine-bus broadcast")).copied() {
                let rb = |n: &str| b / rates.get(&(title, n)).copied().unwrap_or(f64::NAN);
                println!(
                    "  ratio call-engine-bus broadcast / rvoip EventBus = {:.1}x, / rvoip GlobalEventCoordinator = {:.1}x, / tokio broadcast = {:.1}x, / disruptor = {:.2}x",
                    rb("rvoip EventBus"),
                    rb("rvoip GlobalEventCoordinator"),
                    rb("tokio::sync::broadcast"),
                    rb("disruptor (raw shared ring)")
                );
            }
        }
    }

    if want("async") {
        println!("\nAsync mode: publisher and subscriber tasks on a 2-worker tokio runtime, publish().await / recv().await");
        for (title, shape, per_pub) in scenarios {
            println!("\n{title} [async]: delivered events/s, loss");
            let mut r: HashMap<&str, f64> = HashMap::new();
            for k in AsyncKind::ALL {
                if only.as_deref().is_some_and(|o| !k.name().starts_with(o)) {
                    continue;
                }
                let o = median_by_rate(
                    (0..reps)
                        .map(|_| async_throughput(k, shape, per_pub))
                        .collect(),
                );
                r.insert(k.name(), o.rate());
                println!(
                    "  {:width$} {:>12}   loss: {}",
                    k.name(),
                    fmt_rate(o.rate()),
                    loss(&o)
                );
            }
            if r.len() == AsyncKind::ALL.len() {
                let ours = r["call-engine-bus"];
                println!(
                    "  ratio call-engine-bus / rvoip EventBus = {:.1}x, / its publish_fast = {:.1}x, / rvoip GlobalEventCoordinator = {:.1}x, / tokio broadcast = {:.1}x, / tokio mpsc = {:.2}x",
                    ours / r["rvoip EventBus"],
                    ours / r["rvoip EventBus publish_fast"],
                    ours / r["rvoip GlobalEventCoordinator"],
                    ours / r["tokio::sync::broadcast"],
                    ours / r["tokio::sync::mpsc (raw)"]
                );
                if shape.subscribers > 1 {
                    let b = r["call-engine-bus broadcast"];
                    println!(
                        "  ratio call-engine-bus broadcast / rvoip EventBus = {:.1}x, / its publish_fast = {:.1}x, / tokio broadcast = {:.1}x",
                        b / r["rvoip EventBus"],
                        b / r["rvoip EventBus publish_fast"],
                        b / r["tokio::sync::broadcast"]
                    );
                }
            }
        }
    }

    if want("iv") {
        println!("\n(iv) publish->receive latency at 100k events/s (1->1)");
        for c in &contenders {
            let mut o = paced_latency(c.as_ref(), 100_000, 200_000 / scale as u64);
            let l = &mut o.latencies;
            println!(
                "  {:width$} p50 {:>9}  p99 {:>9}  p99.9 {:>9}   loss: {}",
                c.name(),
                fmt_ns(pct(l, 0.50)),
                fmt_ns(pct(l, 0.99)),
                fmt_ns(pct(l, 0.999)),
                loss(&o)
            );
        }
    }
    if want("v") {
        println!("\n(v) a Critical event published behind 100,000 Low events (consumer drains ~1 µs/event): events received before it, publish->receive latency; median of {reps} runs [fastest-slowest]");
        println!("  (the consumer finishes the batch it holds, up to 64 events at 1 µs each, before its next poll can see the Critical event)");
        for c in &contenders {
            let runs: Vec<(Outcome, u64)> = (0..reps)
                .map(|_| critical_behind_low(c.as_ref(), 100_000 / scale as u64))
                .collect();
            let mut arrived: Vec<(u64, u64, u64)> = runs
                .iter()
                .filter_map(|(o, queued)| {
                    Some((o.critical_wait_ns?, o.critical_position?, *queued))
                })
                .collect();
            if arrived.is_empty() {
                println!("  {:width$} the Critical event never arrived", c.name());
                continue;
            }
            arrived.sort_unstable();
            let (ns, pos, queued) = arrived[arrived.len() / 2];
            let lost = if arrived.len() < runs.len() {
                format!(
                    ", never arrived in {} of {} runs",
                    runs.len() - arrived.len(),
                    runs.len()
                )
            } else {
                String::new()
            };
            println!(
                "  {:width$} position {:>7}   latency {:>9} [{} - {}]   (backlog when published: {}){lost}",
                c.name(),
                pos,
                fmt_ns(ns),
                fmt_ns(arrived[0].0),
                fmt_ns(arrived[arrived.len() - 1].0),
                queued
            );
        }
    }
    if !want("vi") {
        fail_on(&failures);
        return;
    }
    println!("\n(vi) flood: 1 publisher at full speed, 1 subscriber doing ~1 µs of work per event, 500k events, capacity 4096");
    let flood_n = 500_000 / scale as u64;
    let shape = Shape {
        publishers: 1,
        subscribers: 1,
        capacity: 4096,
    };
    for c in &contenders {
        let o = throughput(c.as_ref(), shape, flood_n, 1_000, 1);
        println!(
            "  {:width$} received {:>7}   loss: {}",
            c.name(),
            o.received,
            loss(&o)
        );
    }
    LOW_PRIORITY.store(true, Ordering::Relaxed);
    for c in contenders
        .iter()
        .filter(|c| c.name().starts_with("call-engine-bus"))
    {
        let o = throughput(c.as_ref(), shape, flood_n, 1_000, 1);
        println!(
            "  {:width$} received {:>7}   loss: {}",
            format!("{} [Low lane, shed-oldest]", c.name()),
            o.received,
            loss(&o)
        );
    }
    LOW_PRIORITY.store(false, Ordering::Relaxed);
    println!("\n(call-engine-bus publishes Normal events in (i)-(iv) and (vi): never dropped, back-pressured. The Low-lane rows show the shed policy: every loss reported.)");
    fail_on(&failures);
}

/// Ends the run with an error if anything in `failures` happened.
fn fail_on(failures: &[String]) {
    if failures.is_empty() {
        return;
    }
    for f in failures {
        eprintln!("bus-compare: FAILED: {f}");
    }
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::quartiles;

    #[test]
    fn quartiles_by_nearest_rank() {
        assert_eq!(quartiles(&[4.0, 1.0, 3.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(quartiles(&[5.0]), (5.0, 5.0, 5.0));
        assert_eq!(
            quartiles(&[9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]),
            (5.0, 3.0, 7.0)
        );
        assert!(quartiles(&[]).0.is_nan());
    }
}
