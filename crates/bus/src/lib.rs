//! # call-engine-bus
//!
//! A domain-free, in-process event bus built for call control:
//!
//! - **Envelopes**: every event carries an event id, a correlation id (the call), a
//!   causation id (the event that caused it), its source, its priority and a monotonic
//!   timestamp ([`Envelope`]).
//! - **Priority lanes**: Critical, High, Normal and Low are separate queues; receivers
//!   drain higher lanes first, with a starvation guard
//!   ([`EventBusConfig::starvation_limit`]). A Critical event published behind 100,000
//!   queued Low events is delivered next.
//! - **Shards** keyed by correlation id: one call's events go to one shard and keep their
//!   order within a lane; shards can be drained by separate tasks
//!   ([`EventBus::subscribe_sharded`], [`EventBus::spawn_dispatcher`]). The publish path
//!   takes no lock: it reads an immutable routing table snapshot and pushes into
//!   lock-free bounded queues.
//! - **Pooled, zero-copy fan-out**: an event for several subscribers is written once into
//!   a recycled, reference-counted slot. In steady state, publishing and receiving
//!   allocate nothing (up to 32 subscriptions per topic; where copies are made, as for
//!   broadcast receivers, only if the payload's `Clone` does not allocate).
//! - **Broadcast subscriptions** ([`EventBus::subscribe_broadcast`]): several receivers
//!   of one stream share one queue per lane; the publisher writes each event once, every
//!   receiver clones it out (shed lanes take one copy per receiver), the slowest
//!   back-pressures, and one that is dropped leaves without ending the others.
//! - **Bounded queues, explicit overflow policy** ([`OverflowPolicy`]): Critical and High
//!   are never dropped (the publisher is back-pressured: [`Publisher::publish`] waits,
//!   [`Publisher::try_publish`] returns [`PublishError::Full`] and delivers nothing);
//!   Low (by default) sheds the oldest (with priority lanes off: the new event), and the
//!   subscriber is told exactly how many it missed ([`RecvError::Lagged`]). Nothing is lost silently.
//! - **Filters** ([`Filter`]) are decided at subscribe time and applied at publish:
//!   subscribers are never woken for events they did not ask for. Batch publish and
//!   batch receive, including a lending receive ([`Receiver::try_recv_with`],
//!   [`Receiver::recv_with`]) that hands events to a closure where they are queued, with
//!   nothing copied out.
//! - **Metrics** per shard and lane (depth, published, delivered, shed, latency
//!   histogram) and a bounded **history** ring for debugging and replay. No globals.
//!
//! ```
//! use call_engine_bus::*;
//!
//! #[derive(Clone, Debug, PartialEq)]
//! enum Ev { Setup(u32), Quality(f32) }
//! impl Message for Ev {
//!     fn priority(&self) -> Priority {
//!         match self { Ev::Setup(_) => Priority::Critical, Ev::Quality(_) => Priority::Low }
//!     }
//! }
//!
//! let bus = EventBus::<Ev>::new(EventBusConfig::default())?;
//! let mut rx = bus.subscribe(Filter::all());
//! let tx = bus.publisher("doc");
//! let call = CorrelationId(42);
//! tx.try_publish(call, None, Ev::Quality(4.2)).unwrap();
//! let setup = tx.try_publish(call, None, Ev::Setup(1)).unwrap();
//! // Critical overtakes Low:
//! assert_eq!(rx.try_recv().unwrap().id, setup);
//! assert_eq!(rx.try_recv().unwrap().payload, Ev::Quality(4.2));
//! # Ok::<(), ConfigError>(())
//! ```

mod bus;
mod cache;
mod config;
mod dispatch;
mod envelope;
mod metrics;
mod pool;
mod ring;
mod sync;
mod types;

pub use bus::{
    BatchInfo, EventBus, Filter, Outgoing, PublishError, Publisher, Receiver, RecvError,
    TryRecvError,
};
pub use config::{
    ConfigError, EventBusConfig, OverflowPolicies, OverflowPolicy, MAX_BUFFERED, MAX_CAPACITY,
    MAX_SHARDS,
};
pub use dispatch::{Dispatch, Dispatcher};
pub use envelope::{Envelope, Event};
pub use metrics::{BusMetrics, LaneMetrics, LatencySummary, ShardMetrics};
pub use pool::PoolMetrics;
pub use types::{CorrelationId, EventId, Message, Priority, Timestamp, Topic, TopicSet};
