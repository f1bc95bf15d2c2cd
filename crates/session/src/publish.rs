//! Publishing session events. The core never waits on the bus: it queues events to one
//! publisher task, which publishes them in order with back-pressure
//! ([`Publisher::publish`] waits while a subscriber's lane is full). A failed publish
//! (the bus is closed) is counted and logged, at `error` for Critical events.
//!
//! The queue is bounded by the core, not here: events are never dropped, so at
//! [`SessionConfig::max_pending_events`](crate::SessionConfig) waiting the core
//! answers 503 to the requests that would add more (see [`Emitter::backlogged`]) until
//! the publisher gets through.

use crate::stats::Stats;
use call_engine_bus::{EventId, Message, Priority, Publisher};
use call_engine_events::{EngineEvent, SessionEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// The core's handle for emitting events.
pub(crate) struct Emitter {
    tx: mpsc::UnboundedSender<(SessionEvent, Option<EventId>)>,
    stats: Arc<Stats>,
    /// `max_pending_events`.
    limit: u64,
}

impl Emitter {
    /// Queues an event caused by `causation` (the command it results from).
    pub fn emit(&self, event: SessionEvent, causation: Option<EventId>) {
        self.stats.pending_events.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError((event, _))) = self.tx.send((event, causation)) {
            // Only after the publisher task died: the event cannot reach the bus.
            self.stats.pending_events.fetch_sub(1, Ordering::Relaxed);
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
            let ev = EngineEvent::Session(event);
            if ev.priority() == Priority::Critical {
                error!(call = ?ev.call(), event = ?ev, "session event lost: publisher stopped");
            } else {
                warn!(call = ?ev.call(), event = ?ev, "session event lost: publisher stopped");
            }
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
    let (tx, mut rx) = mpsc::unbounded_channel::<(SessionEvent, Option<EventId>)>();
    let task_stats = stats.clone();
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let handle = tokio::spawn(async move {
        while let Some((event, causation)) = rx.recv().await {
            let ev = EngineEvent::Session(event);
            let correlation = ev.correlation();
            let priority = ev.priority();
            let published = publisher.publish(correlation, causation, ev).await;
            task_stats.pending_events.fetch_sub(1, Ordering::Relaxed);
            match published {
                Ok(_) => {
                    task_stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    task_stats.publish_failures.fetch_add(1, Ordering::Relaxed);
                    let ev = e.into_inner();
                    if priority == Priority::Critical {
                        error!(
                            call = ?ev.call(),
                            %correlation,
                            event = ?ev,
                            "failed to publish a critical session event: the bus is closed"
                        );
                    } else {
                        warn!(call = ?ev.call(), event = ?ev, "failed to publish a session event: the bus is closed");
                    }
                }
            }
        }
    });
    (Emitter { tx, stats, limit }, handle)
}
