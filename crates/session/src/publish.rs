//! Publishing session events. The core never waits on the bus: when no event waits
//! before it, it publishes an event itself ([`Publisher::try_publish`], the common case:
//! no hand-over to another task); otherwise (or when a subscriber's lane is full) it
//! queues it to one publisher task, which publishes them in order with back-pressure
//! ([`Publisher::publish`] waits while a subscriber's lane is full). Order is kept: the
//! core publishes directly only while nothing is queued. A failed publish (the bus is
//! closed) is counted and logged, at `error` for Critical events.
//!
//! The queue is bounded by the core, not here: events are never dropped, so at
//! [`SessionConfig::max_pending_events`](crate::SessionConfig) waiting the core
//! answers 503 to the requests that would add more (see [`Emitter::backlogged`]) until
//! the publisher gets through.

use crate::stats::Stats;
use call_engine_bus::{EventId, Message, Priority, PublishError, Publisher};
use call_engine_events::{EngineEvent, SessionEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// The core's handle for emitting events.
pub(crate) struct Emitter {
    /// The core's own handle, for the direct path.
    publisher: Publisher<EngineEvent>,
    tx: mpsc::UnboundedSender<(EngineEvent, Option<EventId>)>,
    stats: Arc<Stats>,
    /// `max_pending_events`.
    limit: u64,
}

impl Emitter {
    /// Publishes (or, behind earlier events or a full lane, queues) an event caused by
    /// `causation` (the command it results from).
    pub fn emit(&self, event: SessionEvent, causation: Option<EventId>) {
        let mut ev = EngineEvent::Session(event);
        // Nothing queued (Acquire: pairs with the task's decrement after its publish, so
        // every queued event is on the bus before this one): publish here.
        if self.stats.pending_events.load(Ordering::Acquire) == 0 {
            match self.publisher.try_publish(ev.correlation(), causation, ev) {
                Ok(_) => {
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(PublishError::Closed(ev)) => {
                    self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    lost(&ev, "session event lost: the bus is closed");
                    return;
                }
                // A subscriber's lane is full: the task waits for room.
                Err(PublishError::Full(back)) => ev = back,
            }
        }
        self.stats.pending_events.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError((ev, _))) = self.tx.send((ev, causation)) {
            // Only after the publisher task died: the event cannot reach the bus.
            self.stats.pending_events.fetch_sub(1, Ordering::Relaxed);
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
            lost(&ev, "session event lost: publisher stopped");
        }
    }

    /// Whether `max_pending_events` events wait for the bus: the core then refuses the
    /// requests that would add more.
    pub fn backlogged(&self) -> bool {
        self.stats.pending_events.load(Ordering::Relaxed) >= self.limit
    }
}

/// Starts the publisher task; the core sheds new work while `limit` events wait.
pub(crate) fn start(
    publisher: Publisher<EngineEvent>,
    stats: Arc<Stats>,
    limit: usize,
) -> (Emitter, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(EngineEvent, Option<EventId>)>();
    let direct = publisher.clone();
    let task_stats = stats.clone();
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let handle = tokio::spawn(async move {
        while let Some((ev, causation)) = rx.recv().await {
            let published = publisher.publish(ev.correlation(), causation, ev).await;
            // Release: the core publishes directly once this reaches 0 (see `emit`).
            task_stats.pending_events.fetch_sub(1, Ordering::Release);
            match published {
                Ok(_) => {
                    task_stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    task_stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    lost(&e.into_inner(), "session event lost: the bus is closed");
                }
            }
        }
    });
    (
        Emitter {
            publisher: direct,
            tx,
            stats,
            limit,
        },
        handle,
    )
}

/// Logs an event that cannot reach the bus: at `error` for a Critical one.
fn lost(ev: &EngineEvent, what: &str) {
    let correlation = ev.correlation();
    if ev.priority() == Priority::Critical {
        error!(call = ?ev.call(), %correlation, event = ?ev, "{what}");
    } else {
        warn!(call = ?ev.call(), %correlation, event = ?ev, "{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use call_engine_bus::{EventBus, EventBusConfig, Filter};
    use call_engine_events::{topics, CallId, SessionId};

    fn dtmf(n: u64) -> SessionEvent {
        SessionEvent::DtmfReceived {
            call: CallId(1),
            session: SessionId(n),
            digit: '1',
        }
    }

    fn session_of(e: &EngineEvent) -> u64 {
        match e {
            EngineEvent::Session(SessionEvent::DtmfReceived { session, .. }) => session.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Events emitted while earlier ones wait for room go behind them, also once the
    /// subscriber has room again (the direct path is taken only when nothing waits).
    #[tokio::test(flavor = "current_thread")]
    async fn events_keep_their_order_through_a_full_lane() {
        let bus = EventBus::<EngineEvent>::new(EventBusConfig {
            shard_count: 1,
            broadcast_capacity: 2,
            ..Default::default()
        })
        .unwrap();
        let mut rx = bus.subscribe(Filter::topic(topics::SESSION_EVENTS));
        let stats = Arc::new(Stats::default());
        let (emitter, task) = start(bus.publisher("session"), stats.clone(), 100);
        // 1 and 2 fill the lane (published directly); 3 to 5 wait in the queue.
        for n in 1..=5 {
            emitter.emit(dtmf(n), None);
        }
        assert_eq!(stats.pending_events.load(Ordering::Relaxed), 3);
        assert_eq!(session_of(&rx.recv().await.unwrap().payload), 1);
        // Room for one again, but the queued events come first: 6 is queued too (the
        // publisher task has not run since).
        emitter.emit(dtmf(6), None);
        assert_eq!(stats.pending_events.load(Ordering::Relaxed), 4);
        let mut got = vec![];
        while got.len() < 5 {
            got.push(session_of(&rx.recv().await.unwrap().payload));
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        // Drained: the direct path again, nothing queued.
        tokio::task::yield_now().await;
        assert_eq!(stats.pending_events.load(Ordering::Relaxed), 0);
        emitter.emit(dtmf(7), None);
        assert_eq!(stats.pending_events.load(Ordering::Relaxed), 0);
        assert_eq!(session_of(&rx.recv().await.unwrap().payload), 7);
        assert_eq!(stats.published.load(Ordering::Relaxed), 7);
        drop(emitter);
        task.await.unwrap();
    }
}
