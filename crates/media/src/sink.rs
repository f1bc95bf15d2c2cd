//! Where the media adapter's events go: an ordered, unbounded channel. The bus layer
//! ([`MediaAdapter`](crate::MediaAdapter)) forwards it to the bus; direct users read it.
//!
//! Unbounded so that an endpoint task never waits on a consumer: media events are rare
//! (a handful per call plus one quality report per leg and interval), and the bus
//! forwarder applies the bus's own back-pressure.

use call_engine_bus::EventId;
use call_engine_events::MediaEvent;
use tokio::sync::mpsc;

/// A media event with the id of the command that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmittedEvent {
    /// The event.
    pub event: MediaEvent,
    /// The command that caused it (`None` for direct-API calls).
    pub causation: Option<EventId>,
}

#[derive(Clone)]
pub(crate) struct EventSink(mpsc::UnboundedSender<EmittedEvent>);

impl EventSink {
    pub(crate) fn emit(&self, event: MediaEvent, causation: Option<EventId>) {
        // A dropped receiver means nobody listens any more; nothing to do.
        let _ = self.0.send(EmittedEvent { event, causation });
    }
}

/// The stream of events of a [`Media`](crate::Media), in the order they happened.
#[derive(Debug)]
pub struct MediaEvents(mpsc::UnboundedReceiver<EmittedEvent>);

impl MediaEvents {
    /// The next event; `None` once the media adapter and all its endpoints are gone.
    pub async fn recv(&mut self) -> Option<EmittedEvent> {
        self.0.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<EmittedEvent> {
        self.0.try_recv().ok()
    }
}

pub(crate) fn channel() -> (EventSink, MediaEvents) {
    let (tx, rx) = mpsc::unbounded_channel();
    (EventSink(tx), MediaEvents(rx))
}
