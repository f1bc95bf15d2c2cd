//! Bus configuration and its validation.

use crate::types::Priority;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What happens when a subscriber's lane is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Never drop: the publisher is back-pressured (`publish` waits for room,
    /// `try_publish` returns [`PublishError::Full`](crate::PublishError::Full) and delivers
    /// nothing).
    Block,
    /// Drop the oldest queued event of that lane to make room. The subscriber is told
    /// exactly how many it missed ([`RecvError::Lagged`](crate::RecvError::Lagged)), and the
    /// loss is counted in the metrics. Never allowed for Critical or High.
    ShedOldest,
}

/// Overflow policy per priority lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowPolicies {
    /// Critical lane: must be [`OverflowPolicy::Block`].
    pub critical: OverflowPolicy,
    /// High lane: must be [`OverflowPolicy::Block`].
    pub high: OverflowPolicy,
    /// Normal lane.
    pub normal: OverflowPolicy,
    /// Low lane.
    pub low: OverflowPolicy,
}

impl Default for OverflowPolicies {
    fn default() -> Self {
        Self {
            critical: OverflowPolicy::Block,
            high: OverflowPolicy::Block,
            normal: OverflowPolicy::Block,
            low: OverflowPolicy::ShedOldest,
        }
    }
}

impl OverflowPolicies {
    /// The policy of a priority.
    pub fn get(&self, p: Priority) -> OverflowPolicy {
        match p {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

/// Configuration of an [`EventBus`](crate::EventBus). Every field is read; see each field
/// for what it controls. [`EventBusConfig::validate`] names the offending field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventBusConfig {
    /// Number of shards. Events are assigned to a shard by their correlation id; a
    /// subscription's shards can be split across receivers drained by different tasks
    /// ([`EventBus::subscribe_sharded`](crate::EventBus::subscribe_sharded)), each with
    /// its own queues; per-shard metrics are kept either way. 1..=[`MAX_SHARDS`].
    pub shard_count: usize,
    /// Capacity of each lane of each receiver's queue, in events (a plain
    /// [`EventBus::subscribe`](crate::EventBus::subscribe) has one receiver).
    /// 1..=[`MAX_CAPACITY`] (2^30).
    /// Memory: the never-dropped lanes keep their storage in slots of whole cache lines,
    /// rounded up to a power of two (a capacity of 4096, the default, uses 4096 slots).
    pub broadcast_capacity: usize,
    /// When false, all priorities share one FIFO lane (publish order is delivery order);
    /// overflow still follows the event's own priority policy (a shed-policy event that
    /// finds the lane full is dropped, counted and reported). When true, each priority has
    /// its own lane and higher lanes are drained first.
    pub enable_priority: bool,
    /// When true, an event delivered to several subscribers is written once into a pooled,
    /// reference-counted slot that all of them read (no per-subscriber payload clone).
    /// When false, each additional subscriber receives its own clone. Broadcast
    /// subscriptions ([`EventBus::subscribe_broadcast`](crate::EventBus::subscribe_broadcast))
    /// never use pooled slots: when one is among an event's targets, every target gets
    /// its own copy.
    pub enable_zero_copy: bool,
    /// Maximum events returned by one [`Receiver::recv_batch`](crate::Receiver::recv_batch)
    /// call and drained per wake-up by a dispatcher. ≥ 1.
    pub batch_size: usize,
    /// Maximum handler invocations running at once in one
    /// [`Dispatcher`](crate::Dispatcher): its shards are split into at most this many
    /// groups, each run by one task (so per-shard order holds). ≥ 1.
    pub max_concurrent_dispatches: usize,
    /// Starvation guard: after this many consecutive deliveries, a receiver serves the
    /// next non-empty lane below every lane those deliveries came from (in rotation) once
    /// before returning to strict priority order. A run of Low deliveries thus never makes
    /// a Critical wait. ≥ 1.
    pub starvation_limit: u32,
    /// Overflow policy per priority.
    pub overflow: OverflowPolicies,
    /// Number of free zero-copy slots kept for reuse. Slots beyond this are freed when
    /// released; publishing allocates only while fewer than this many are free. ≥ 1 when
    /// `enable_zero_copy`; at most [`MAX_BUFFERED`].
    pub pool_capacity: usize,
    /// Number of recent envelopes kept (in total, split across shards) for debugging and
    /// replay ([`EventBus::history`](crate::EventBus::history)). 0 (the default) disables
    /// it: recording costs a per-shard lock and a clone on every publish (measured: about
    /// 40% of 1→1 throughput), so it is opt-in. At most [`MAX_BUFFERED`].
    pub history_capacity: usize,
}

impl Default for EventBusConfig {
    fn default() -> Self {
        Self {
            shard_count: 4,
            broadcast_capacity: 4096,
            enable_priority: true,
            enable_zero_copy: true,
            batch_size: 64,
            max_concurrent_dispatches: 4,
            starvation_limit: 64,
            overflow: OverflowPolicies::default(),
            pool_capacity: 4096,
            history_capacity: 0,
        }
    }
}

/// A configuration value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid bus configuration: `{field}` {reason}")]
pub struct ConfigError {
    /// The offending field (dotted path, e.g. `overflow.critical`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Largest accepted shard count (keeps per-subscription memory sane).
pub const MAX_SHARDS: usize = 1024;

/// Largest accepted queue capacity per lane (`broadcast_capacity`): 2^30 events, far
/// beyond any memory this could be given; the rings' index arithmetic relies on it.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Largest accepted `history_capacity` and `pool_capacity`: 2^24 (16,777,216) envelopes.
/// Both are allocated when the bus is built (the history ring in full, the pool's free
/// list); a larger value would only fail there, on allocation, instead of here with the
/// field named.
pub const MAX_BUFFERED: usize = 1 << 24;

/// `Ok` if `1 <= value <= max`; otherwise an error naming `field`.
fn in_range(field: &'static str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return Err(ConfigError::new(
            field,
            format!("must be between 1 and {max}, got {value}"),
        ));
    }
    Ok(())
}

impl EventBusConfig {
    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range("shard_count", self.shard_count, MAX_SHARDS)?;
        in_range("broadcast_capacity", self.broadcast_capacity, MAX_CAPACITY)?;
        if self.batch_size == 0 {
            return Err(ConfigError::new("batch_size", "must be at least 1"));
        }
        if self.max_concurrent_dispatches == 0 {
            return Err(ConfigError::new(
                "max_concurrent_dispatches",
                "must be at least 1",
            ));
        }
        if self.starvation_limit == 0 {
            return Err(ConfigError::new("starvation_limit", "must be at least 1"));
        }
        if self.overflow.critical != OverflowPolicy::Block {
            return Err(ConfigError::new(
                "overflow.critical",
                "must be `block`: call control is never dropped",
            ));
        }
        if self.overflow.high != OverflowPolicy::Block {
            return Err(ConfigError::new(
                "overflow.high",
                "must be `block`: call control is never dropped",
            ));
        }
        if self.enable_zero_copy && self.pool_capacity == 0 {
            return Err(ConfigError::new(
                "pool_capacity",
                "must be at least 1 when enable_zero_copy is true",
            ));
        }
        for (field, value) in [
            ("pool_capacity", self.pool_capacity),
            ("history_capacity", self.history_capacity),
        ] {
            if value > MAX_BUFFERED {
                return Err(ConfigError::new(
                    field,
                    format!("must be at most {MAX_BUFFERED}, got {value}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(EventBusConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_invalid_field_is_named() {
        type Mutation = Box<dyn Fn(&mut EventBusConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("shard_count", Box::new(|c| c.shard_count = 0)),
            ("shard_count", Box::new(|c| c.shard_count = MAX_SHARDS + 1)),
            ("broadcast_capacity", Box::new(|c| c.broadcast_capacity = 0)),
            (
                "broadcast_capacity",
                Box::new(|c| c.broadcast_capacity = MAX_CAPACITY + 1),
            ),
            (
                "broadcast_capacity",
                Box::new(|c| c.broadcast_capacity = usize::MAX),
            ),
            ("batch_size", Box::new(|c| c.batch_size = 0)),
            (
                "max_concurrent_dispatches",
                Box::new(|c| c.max_concurrent_dispatches = 0),
            ),
            ("starvation_limit", Box::new(|c| c.starvation_limit = 0)),
            (
                "overflow.critical",
                Box::new(|c| c.overflow.critical = OverflowPolicy::ShedOldest),
            ),
            (
                "overflow.high",
                Box::new(|c| c.overflow.high = OverflowPolicy::ShedOldest),
            ),
            ("pool_capacity", Box::new(|c| c.pool_capacity = 0)),
            (
                "pool_capacity",
                Box::new(|c| c.pool_capacity = MAX_BUFFERED + 1),
            ),
            ("pool_capacity", Box::new(|c| c.pool_capacity = usize::MAX)),
            (
                "history_capacity",
                Box::new(|c| c.history_capacity = MAX_BUFFERED + 1),
            ),
            (
                "history_capacity",
                Box::new(|c| c.history_capacity = usize::MAX),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = EventBusConfig::default();
            mutate(&mut c);
            let err = c.validate().expect_err(field);
            assert_eq!(err.field, field);
            assert!(err.to_string().contains(field), "{err}");
        }
        // pool_capacity 0 is fine without zero-copy
        let c = EventBusConfig {
            enable_zero_copy: false,
            pool_capacity: 0,
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn config_deserialises_with_defaults_and_rejects_unknown_keys() {
        let c: EventBusConfig =
            serde_json::from_str(r#"{"shard_count": 8, "overflow": {"critical":"block","high":"block","normal":"shed_oldest","low":"shed_oldest"}}"#)
                .unwrap();
        assert_eq!(c.shard_count, 8);
        assert_eq!(c.overflow.normal, OverflowPolicy::ShedOldest);
        assert_eq!(c.batch_size, EventBusConfig::default().batch_size);
        let err = serde_json::from_str::<EventBusConfig>(r#"{"shard_cnt": 8}"#).unwrap_err();
        assert!(err.to_string().contains("shard_cnt"), "{err}");
    }
}
