//! The envelope every event travels in, and the handle a receiver gets.

use crate::pool::SharedRef;
use crate::types::{CorrelationId, EventId, Message, Priority, Timestamp};
use serde::Serialize;
use std::fmt;
use std::ops::Deref;

/// An event with its routing and tracing metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope<T> {
    /// Unique id, assigned by the bus at publish.
    pub id: EventId,
    /// What the event belongs to (the call); decides the shard.
    pub correlation: CorrelationId,
    /// The event that caused this one, if any.
    pub causation: Option<EventId>,
    /// The component that published it.
    pub source: &'static str,
    /// The lane it travels in (from [`Message::priority`]).
    pub priority: Priority,
    /// Monotonic publish time.
    pub timestamp: Timestamp,
    /// The event itself.
    pub payload: T,
}

/// What a receiver gets: a read-only view of an [`Envelope`]. Depending on
/// [`enable_zero_copy`](crate::EventBusConfig::enable_zero_copy) and fan-out, the envelope
/// is either owned by this handle or a pooled slot shared with the other subscribers; the
/// slot returns to the pool when its last handle drops.
pub struct Event<T: Message>(pub(crate) Repr<T>);

pub(crate) enum Repr<T: Message> {
    Owned(Envelope<T>),
    Shared(SharedRef<T>),
}

impl<T: Message> Event<T> {
    /// Whether this handle shares a pooled slot with other subscribers.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }

    /// The envelope, by value (moved if owned, cloned if shared).
    pub fn into_envelope(self) -> Envelope<T>
    where
        T: Clone,
    {
        match self.0 {
            Repr::Owned(e) => e,
            Repr::Shared(s) => (*s).clone(),
        }
    }
}

/// A copy of the event as an owned envelope (a pooled slot is not shared further: the
/// copy owns its envelope).
impl<T: Message + Clone> Clone for Event<T> {
    fn clone(&self) -> Self {
        Event(Repr::Owned((**self).clone()))
    }
}

impl<T: Message> Deref for Event<T> {
    type Target = Envelope<T>;

    #[inline]
    fn deref(&self) -> &Envelope<T> {
        match &self.0 {
            Repr::Owned(e) => e,
            Repr::Shared(s) => s,
        }
    }
}

impl<T: Message + fmt::Debug> fmt::Debug for Event<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
