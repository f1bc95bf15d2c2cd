//! Handler-based consumption: a [`Dispatcher`] runs a handler over a subscription with at
//! most [`max_concurrent_dispatches`](crate::EventBusConfig::max_concurrent_dispatches)
//! invocations at once, keeping per-shard (per-call) order.

use crate::bus::{EventBus, Filter, RecvError};
use crate::envelope::Event;
use crate::types::Message;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What a dispatcher hands its handler.
#[derive(Debug)]
pub enum Dispatch<T: Message> {
    /// An event.
    Event(Event<T>),
    /// This many events were shed before the next one (see
    /// [`RecvError::Lagged`](crate::RecvError::Lagged)).
    Missed(u64),
}

/// A running dispatcher: `concurrency()` tasks, each owning a disjoint group of shards
/// and calling the handler sequentially for that group. Dropping it stops the tasks.
#[derive(Debug)]
pub struct Dispatcher {
    tasks: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// Number of tasks, i.e. the most handler invocations that can run at once.
    pub fn concurrency(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every task has ended (after the bus is closed and drained).
    pub async fn join(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl<T: Message + Clone> EventBus<T> {
    /// Runs `handler` for every event matching `filter` on the current tokio runtime, with
    /// `min(max_concurrent_dispatches, shard_count)` tasks. Events of one correlation id
    /// are handled in order by one task; up to `batch_size` events are drained per
    /// wake-up. Must be called within a tokio runtime.
    pub fn spawn_dispatcher<H>(&self, filter: Filter, handler: H) -> Dispatcher
    where
        H: Fn(Dispatch<T>) + Send + Sync + 'static,
    {
        let groups = self
            .config()
            .max_concurrent_dispatches
            .min(self.config().shard_count);
        let handler = Arc::new(handler);
        let tasks = self
            .subscribe_sharded(filter, groups)
            .into_iter()
            .map(|mut rx| {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(rx.batch_size());
                    loop {
                        match rx.recv_batch(&mut buf).await {
                            Ok(info) => {
                                if info.missed > 0 {
                                    handler(Dispatch::Missed(info.missed));
                                }
                                for e in buf.drain(..) {
                                    handler(Dispatch::Event(e));
                                }
                            }
                            Err(RecvError::Closed) => break,
                            Err(RecvError::Lagged(n)) => handler(Dispatch::Missed(n)),
                        }
                    }
                })
            })
            .collect();
        Dispatcher { tasks }
    }
}
