//! Counters of the session adapter.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the transport, the core and the event publisher.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub malformed: AtomicU64,
    pub bad_requests: AtomicU64,
    pub retransmissions: AtomicU64,
    pub published: AtomicU64,
    pub publish_failures: AtomicU64,
    pub tcp_limited: AtomicU64,
    pub overloaded: AtomicU64,
    pub auth_failures_unreported: AtomicU64,
    pub pending_events: AtomicU64,
    pub forbidden_sources: AtomicU64,
}

/// A snapshot of the adapter's counters ([`SessionAdapter::stats`](crate::SessionAdapter::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// SIP messages received (datagrams and stream frames, keep-alives excluded).
    pub received: u64,
    /// SIP messages sent, retransmissions included.
    pub sent: u64,
    /// Messages that did not parse or failed validation (answered with 400 when
    /// possible, else dropped).
    pub malformed: u64,
    /// 400 responses sent to malformed requests.
    pub bad_requests: u64,
    /// Retransmissions sent (requests and responses).
    pub retransmissions: u64,
    /// Session events published on the bus.
    pub published: u64,
    /// Session events that could not be published (the bus was closed).
    pub publish_failures: u64,
    /// TCP connections closed by a [`TcpLimits`](crate::TcpLimits) limit: refused (too
    /// many open), a message too large or not complete in time, a peer not reading.
    pub tcp_limited: u64,
    /// Requests answered 503 because the server transactions were over their budget
    /// ([`SessionConfig::max_server_transaction_bytes`](crate::SessionConfig)), or
    /// INVITEs because too many calls waited for the engine's answer
    /// (`max_offered_calls`), or requests that would add events while
    /// `max_pending_events` waited for the bus.
    pub overloaded: u64,
    /// Failed authentications answered 403 without an `AuthenticationFailed` event: the
    /// same source address had one reported less than a second before.
    pub auth_failures_unreported: u64,
    /// Session events waiting for the bus now (about
    /// [`SessionConfig::max_pending_events`](crate::SessionConfig) at most: past it,
    /// requests that would add more are refused, counted in `overloaded`).
    pub pending_events: u64,
    /// INVITEs answered 403 because their source address is outside
    /// [`SessionConfig::calls_from`](crate::SessionConfig).
    pub forbidden_sources: u64,
}

/// Reads the adapter's counters ([`SessionAdapter::stats_source`](crate::SessionAdapter::stats_source)).
#[derive(Debug, Clone)]
pub struct SessionStatsSource(pub(crate) std::sync::Arc<Stats>);

impl SessionStatsSource {
    /// A snapshot of the counters now.
    pub fn snapshot(&self) -> SessionStats {
        self.0.snapshot()
    }
}

impl Stats {
    pub fn snapshot(&self) -> SessionStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SessionStats {
            received: l(&self.received),
            sent: l(&self.sent),
            malformed: l(&self.malformed),
            bad_requests: l(&self.bad_requests),
            retransmissions: l(&self.retransmissions),
            published: l(&self.published),
            publish_failures: l(&self.publish_failures),
            tcp_limited: l(&self.tcp_limited),
            overloaded: l(&self.overloaded),
            auth_failures_unreported: l(&self.auth_failures_unreported),
            pending_events: l(&self.pending_events),
            forbidden_sources: l(&self.forbidden_sources),
        }
    }
}
