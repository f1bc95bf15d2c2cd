//! The core's timers: one min-heap of deadlines; the core sleeps until the earliest.
//! Timers are never cancelled: each handler checks whether what it refers to still
//! exists and is still in the state the timer was armed for (generation numbers where
//! a state can be re-entered).

use call_engine_events::{AgentId, SessionId};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use tokio::time::Instant;

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Timer G: retransmit a non-2xx final response of an INVITE server transaction.
    ServerRetransmit(String),
    /// Timers H, I, J and the end of the Accepted state: forget a server transaction.
    ServerExpire(String),
    /// Timers A and E: retransmit a client request.
    ClientRetransmit(String),
    /// Timers B and F: a client transaction got no final response.
    ClientTimeout(String),
    /// Timers D and K: forget a client transaction.
    ClientExpire(String),
    /// Retransmit a 2xx to an INVITE (this generation of it).
    OkRetransmit(SessionId, u64),
    /// No ACK for a 2xx (this generation): give up on the dialog.
    OkTimeout(SessionId, u64),
    /// A CANCEL was sent and the INVITE got no final response in 64*T1.
    CancelGiveUp(SessionId),
    /// Timer C: an outbound INVITE rang too long.
    RingTimeout(SessionId),
    /// A registration may have expired.
    BindingExpire(AgentId, String),
    /// Forget a cached ACK for a 2xx.
    AckExpire(String),
}

struct Entry {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A min-heap of deadlines.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl Timers {
    pub fn at(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            kind,
        });
    }

    pub fn after(&mut self, d: std::time::Duration, kind: TimerKind) {
        self.at(Instant::now() + d, kind);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// Removes and returns the next timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        if self.heap.peek().is_some_and(|e| e.at <= now) {
            self.heap.pop().map(|e| e.kind)
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.at(
            now + Duration::from_millis(20),
            TimerKind::AckExpire("b".into()),
        );
        t.at(
            now + Duration::from_millis(10),
            TimerKind::AckExpire("a".into()),
        );
        t.at(
            now + Duration::from_millis(10),
            TimerKind::AckExpire("a2".into()),
        );
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        assert!(t.pop_due(now).is_none());
        let later = now + Duration::from_millis(30);
        assert_eq!(t.pop_due(later), Some(TimerKind::AckExpire("a".into())));
        assert_eq!(t.pop_due(later), Some(TimerKind::AckExpire("a2".into())));
        assert_eq!(t.pop_due(later), Some(TimerKind::AckExpire("b".into())));
        assert_eq!(t.len(), 0);
    }
}
