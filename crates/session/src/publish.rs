//! Publishing session events. The core never waits on the bus: it queues events to one
//! publisher task, which publishes them in order with back-pressure
//! ([`Publisher::publish`] waits while a subscriber's lane is full). A failed publish
//! (the bus is closed) is counted and logged, at `error` for Critical events.

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
}

impl Emitter {
    /// Queues an event caused by `causation` (the command it results from).
    pub fn emit(&self, event: SessionEvent, causation: Option<EventId>) {
        if let Err(mpsc::error::SendError((event, _))) = self.tx.send((event, causation)) {
            // Only after the publisher task died: the event cannot reach the bus.
            self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
            let ev = EngineEvent::Session(event);
            if ev.priority() == Priority::Critical {
                error!(call = ?ev.call(), event = ?ev, "session event lost: publisher stopped");
            } else {
                warn!(call = ?ev.call(), event = ?ev, "session event lost: publisher stopped");
            }
        }
    }
}

/// Starts the publisher task.
pub(crate) fn start(
    publisher: Publisher<EngineEvent>,
    stats: Arc<Stats>,
) -> (Emitter, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(SessionEvent, Option<EventId>)>();
    let task_stats = stats.clone();
    let handle = tokio::spawn(async move {
        while let Some((event, causation)) = rx.recv().await {
            let ev = EngineEvent::Session(event);
            let correlation = ev.correlation();
            let priority = ev.priority();
            match publisher.publish(correlation, causation, ev).await {
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
    (Emitter { tx, stats }, handle)
}
