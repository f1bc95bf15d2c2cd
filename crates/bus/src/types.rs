//! The small vocabulary every bus user speaks: priorities, ids, topics and the
//! [`Message`] trait a payload type implements.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Delivery priority of an event. Each priority is a separate lane in every
/// subscriber queue; a consumer drains higher lanes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Must never be lost or delayed behind anything else (call setup/teardown, failure
    /// recovery, authentication).
    Critical = 0,
    /// Important and time-sensitive (mid-call changes, features).
    High = 1,
    /// Ordinary progress.
    Normal = 2,
    /// Telemetry: quality metrics, resource reports, health. May be shed under overload
    /// (always counted and reported).
    Low = 3,
}

impl Priority {
    /// All priorities, highest first (the order lanes are drained in).
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Lane index: 0 for Critical … 3 for Low.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name, as used in metrics and configuration keys.
    pub const fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies everything that belongs together, typically one call. All events with the
/// same correlation id go to the same shard and keep their publish order within a lane.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct CorrelationId(pub u64);

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corr-{:016x}", self.0)
    }
}

/// Unique id of one published event, assigned by the bus. Used as the causation id of
/// the events it causes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct EventId(pub u64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ev-{:016x}", self.0)
    }
}

/// A routing topic, `0..64`. Subscribers choose topics at subscribe time and are never
/// woken for events of other topics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Topic(u8);

impl Topic {
    /// Number of distinct topics.
    pub const COUNT: usize = 64;

    /// Creates a topic. Panics at compile time (in const context) or at run time if
    /// `n >= 64`; topics are program constants, never outside input.
    pub const fn new(n: u8) -> Topic {
        assert!((n as usize) < Topic::COUNT, "topic out of range 0..64");
        Topic(n)
    }

    /// The topic number.
    #[inline]
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A set of topics (a 64-bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopicSet(pub u64);

impl TopicSet {
    /// Every topic.
    pub const ALL: TopicSet = TopicSet(u64::MAX);
    /// No topic.
    pub const NONE: TopicSet = TopicSet(0);

    /// A set of the given topics.
    pub const fn of(topics: &[Topic]) -> TopicSet {
        let mut mask = 0u64;
        let mut i = 0;
        while i < topics.len() {
            mask |= 1 << topics[i].0;
            i += 1;
        }
        TopicSet(mask)
    }

    /// Whether `t` is in the set.
    #[inline]
    pub const fn contains(self, t: Topic) -> bool {
        self.0 & (1 << t.0) != 0
    }

    /// The union of two sets.
    pub const fn union(self, other: TopicSet) -> TopicSet {
        TopicSet(self.0 | other.0)
    }
}

/// A payload type that can travel on the bus. The bus reads only these two facts from
/// it; everything else is the domain's business.
pub trait Message: Send + Sync + 'static {
    /// The lane this event travels in.
    fn priority(&self) -> Priority;

    /// The routing topic (used by subscriber filters). Defaults to topic 0.
    fn topic(&self) -> Topic {
        Topic(0)
    }
}

/// Monotonic time, in nanoseconds since the bus's clock origin.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Nanoseconds since the clock origin.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Nanoseconds from `earlier` to `self`, saturating at zero.
    #[inline]
    pub const fn saturating_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_indices_are_lane_order() {
        for (i, p) in Priority::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        assert!(Priority::Critical < Priority::Low);
    }

    #[test]
    fn topic_sets() {
        let a = Topic::new(3);
        let b = Topic::new(63);
        let s = TopicSet::of(&[a, b]);
        assert!(s.contains(a) && s.contains(b));
        assert!(!s.contains(Topic::new(0)));
        assert!(TopicSet::ALL.contains(Topic::new(17)));
        assert!(!TopicSet::NONE.contains(Topic::new(17)));
    }
}
