//! Identifiers. Numeric ids are compact `Copy` values allocated by an [`IdAllocator`]
//! owned by whoever creates the entities (no process-wide singleton); agent and queue
//! ids are the names operators configure.

use call_engine_bus::CorrelationId;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "-{:016x}"), self.0)
            }
        }
    };
}

numeric_id!(
    /// One customer call through the engine, from arrival to the end of every leg. It is
    /// the correlation id of all events of that call.
    CallId,
    "call"
);
numeric_id!(
    /// One SIP dialog (a leg), as the session adapter knows it.
    SessionId,
    "sess"
);
numeric_id!(
    /// A media bridge joining two or more legs.
    BridgeId,
    "bridge"
);
numeric_id!(
    /// One RTP endpoint anchored by the media adapter.
    EndpointId,
    "ep"
);
numeric_id!(
    /// One audio playback (music on hold, a prompt).
    PlaybackId,
    "play"
);

impl From<CallId> for CorrelationId {
    fn from(c: CallId) -> Self {
        CorrelationId(c.0)
    }
}

impl From<CorrelationId> for CallId {
    fn from(c: CorrelationId) -> Self {
        CallId(c.0)
    }
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub SmolStr);

        impl $name {
            /// Creates the id from a name.
            pub fn new(name: impl AsRef<str>) -> Self {
                Self(SmolStr::new(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A stable correlation id for events about this entity that belong to no call
            /// (registrations, status changes): FNV-1a of the name, with the top bit set so
            /// it never equals an allocated [`CallId`].
            pub fn correlation(&self) -> CorrelationId {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in self.0.as_bytes() {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                CorrelationId(h | (1 << 63))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
    };
}

name_id!(
    /// An agent, by the id it registers with (`sip:<agent-id>@<domain>`).
    AgentId
);
name_id!(
    /// A queue, by name (`sip:<queue>@<domain>`).
    QueueId
);

/// Allocates unique, increasing 63-bit ids: 43 bits of Unix milliseconds followed by a
/// 20-bit counter, so ids stay unique across restarts (call records survive restarts) as
/// long as the clock does not step back by more than the run's lifetime. The top bit is
/// always clear (name-derived correlation ids use it).
#[derive(Debug)]
pub struct IdAllocator {
    last: AtomicU64,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdAllocator {
    const COUNTER_BITS: u32 = 20;
    const MASK: u64 = (1 << 63) - 1;

    /// A new allocator seeded from the wall clock.
    pub fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// An allocator that starts after `floor` (e.g. the highest id found in the store).
    pub fn starting_after(floor: u64) -> Self {
        Self {
            last: AtomicU64::new(floor & Self::MASK),
        }
    }

    fn now_base() -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        (ms << Self::COUNTER_BITS) & Self::MASK
    }

    /// The next raw id: strictly greater than every id this allocator returned before.
    pub fn next_raw(&self) -> u64 {
        let base = Self::now_base();
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let next = base.max(cur + 1) & Self::MASK;
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// A new call id.
    pub fn call(&self) -> CallId {
        CallId(self.next_raw())
    }

    /// A new session id.
    pub fn session(&self) -> SessionId {
        SessionId(self.next_raw())
    }

    /// A new bridge id.
    pub fn bridge(&self) -> BridgeId {
        BridgeId(self.next_raw())
    }

    /// A new endpoint id.
    pub fn endpoint(&self) -> EndpointId {
        EndpointId(self.next_raw())
    }

    /// A new playback id.
    pub fn playback(&self) -> PlaybackId {
        PlaybackId(self.next_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_increasing_across_threads() {
        let alloc = std::sync::Arc::new(IdAllocator::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let a = alloc.clone();
                std::thread::spawn(move || {
                    let v: Vec<u64> = (0..10_000).map(|_| a.next_raw()).collect();
                    assert!(v.windows(2).all(|w| w[0] < w[1]));
                    v
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
                assert_eq!(id >> 63, 0);
            }
        }
    }

    #[test]
    fn allocator_respects_floor() {
        let a = IdAllocator::starting_after(u64::MAX >> 2);
        assert!(a.next_raw() > u64::MAX >> 2);
    }

    #[test]
    fn name_correlation_is_stable_and_disjoint_from_call_ids() {
        let a = AgentId::new("alice");
        assert_eq!(a.correlation(), AgentId::new("alice").correlation());
        assert_ne!(a.correlation(), AgentId::new("bob").correlation());
        assert_eq!(a.correlation().0 >> 63, 1);
        assert_eq!(a.to_string(), "alice");
        assert_eq!(CallId(42).to_string(), "call-000000000000002a");
    }
}
