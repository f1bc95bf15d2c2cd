//! Metrics: per shard and lane counters and a lock-free publish→receive latency
//! histogram.

use crate::pool::PoolMetrics;
use crate::types::Priority;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two (resolution: 1/4 of an octave, ≤ 19% relative error).
const SUB_BITS: u32 = 2;
const SUB: usize = 1 << SUB_BITS;
/// Number of buckets: values up to 2^64 ns.
pub(crate) const BUCKETS: usize = 64 * SUB;

/// A lock-free log-linear histogram of nanosecond values, written by one thread (a
/// relaxed load and store per record); reading merges bucket counts.
pub(crate) struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub(crate) fn bucket_of(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let sub = ((ns >> (msb - SUB_BITS)) as usize) & (SUB - 1);
        ((msb - SUB_BITS + 1) as usize) * SUB + sub
    }

    /// Lower bound of a bucket, in ns.
    pub(crate) fn bucket_floor(b: usize) -> u64 {
        if b < SUB {
            return b as u64;
        }
        let octave = (b / SUB) as u32 + SUB_BITS - 1;
        let sub = (b % SUB) as u64;
        (1u64 << octave) | (sub << (octave - SUB_BITS))
    }

    /// Records without a read-modify-write: only for a histogram that one thread writes
    /// (readers may see the count one behind, never torn).
    #[inline]
    pub(crate) fn record_single_writer(&self, ns: u64) {
        let b = &self.buckets[Self::bucket_of(ns)];
        b.store(b.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn add_into(&self, out: &mut [u64; BUCKETS]) {
        for (o, b) in out.iter_mut().zip(self.buckets.iter()) {
            *o += b.load(Ordering::Relaxed);
        }
    }
}

/// Adds bucket counts `b` into `a`.
pub(crate) fn add_buckets(a: &mut [u64; BUCKETS], b: &[u64; BUCKETS]) {
    for (x, y) in a.iter_mut().zip(b.iter()) {
        *x += y;
    }
}

/// The bucket counts of all four lanes together.
pub(crate) fn merged(lanes: &[[u64; BUCKETS]; 4]) -> [u64; BUCKETS] {
    let mut out = [0u64; BUCKETS];
    for l in lanes {
        add_buckets(&mut out, l);
    }
    out
}

/// Summary of a latency distribution (publish → receive), in nanoseconds. Values are
/// bucket lower bounds (≤ 19% under the true value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest bucket with samples.
    pub max_ns: u64,
}

impl LatencySummary {
    pub(crate) fn from_buckets(b: &[u64; BUCKETS]) -> Self {
        let count: u64 = b.iter().sum();
        if count == 0 {
            return Self::default();
        }
        let q = |frac: f64| -> u64 {
            let rank = ((count as f64) * frac).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in b.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return LatencyHistogram::bucket_floor(i);
                }
            }
            0
        };
        let max = b
            .iter()
            .rposition(|n| *n > 0)
            .map(LatencyHistogram::bucket_floor)
            .unwrap_or(0);
        Self {
            count,
            p50_ns: q(0.50),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: max,
        }
    }
}

/// Counters of one lane of one shard (summed over subscriptions where noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LaneMetrics {
    /// Events queued now, over all subscriptions.
    pub depth: u64,
    /// Events published into this lane and shard (once per publish, whatever the fan-out).
    pub published: u64,
    /// Deliveries to receivers (one per receiver that got the event: a broadcast
    /// subscription of n receivers counts n).
    pub delivered: u64,
    /// Events shed by the overflow policy (per subscriber), each reported to that
    /// subscriber as missed.
    pub shed: u64,
    /// Publish → receive latency of this lane's deliveries.
    pub latency: LatencySummary,
}

/// Metrics of one shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardMetrics {
    /// Shard index.
    pub shard: usize,
    /// Per lane, Critical first.
    pub lanes: [LaneMetrics; 4],
    /// Publish → receive latency of this shard's deliveries.
    pub latency: LatencySummary,
}

impl ShardMetrics {
    /// The lane of a priority.
    pub fn lane(&self, p: Priority) -> &LaneMetrics {
        &self.lanes[p.index()]
    }
}

/// A snapshot of all bus metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusMetrics {
    /// Per shard.
    pub shards: Vec<ShardMetrics>,
    /// Open (routed) subscriptions: 0 once the bus is closed. (A closed one whose
    /// receivers are still draining is not counted here; its counters still are, until
    /// its last receiver is dropped.)
    pub subscriptions: usize,
    /// Events published that matched no open subscription (including ones that closed
    /// during the publish).
    pub unrouted: u64,
    /// Zero-copy slot pool.
    pub pool: PoolMetrics,
    /// Publish → receive latency per lane (Critical first) over all shards.
    pub lane_latency: [LatencySummary; 4],
    /// Publish → receive latency over all shards and lanes.
    pub latency: LatencySummary,
}

impl BusMetrics {
    /// Sum of a lane's counters over all shards, with the lane's latency.
    pub fn lane_total(&self, p: Priority) -> LaneMetrics {
        let mut t = LaneMetrics {
            latency: self.lane_latency[p.index()],
            ..LaneMetrics::default()
        };
        for s in &self.shards {
            let l = s.lane(p);
            t.depth += l.depth;
            t.published += l.published;
            t.delivered += l.delivered;
            t.shed += l.shed;
        }
        t
    }

    /// Sum over all lanes and shards, with the overall latency.
    pub fn total(&self) -> LaneMetrics {
        let mut t = LaneMetrics {
            latency: self.latency,
            ..LaneMetrics::default()
        };
        for p in Priority::ALL {
            let l = self.lane_total(p);
            t.depth += l.depth;
            t.published += l.published;
            t.delivered += l.delivered;
            t.shed += l.shed;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            1000,
            12_345,
            1 << 40,
            u64::MAX,
        ] {
            let b = LatencyHistogram::bucket_of(ns);
            assert!(b >= last, "{ns}");
            last = b;
            let floor = LatencyHistogram::bucket_floor(b);
            assert!(floor <= ns, "{ns} floor {floor}");
            assert!(ns - floor <= ns / 4 + 1, "{ns} floor {floor}");
        }
        assert!(LatencyHistogram::bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles() {
        let h = LatencyHistogram::new();
        for i in 1..=1000u64 {
            h.record_single_writer(i * 1000);
        }
        let mut b = [0u64; BUCKETS];
        h.add_into(&mut b);
        let s = LatencySummary::from_buckets(&b);
        assert_eq!(s.count, 1000);
        assert!((400_000..=500_000).contains(&s.p50_ns), "{s:?}");
        assert!((800_000..=990_000).contains(&s.p99_ns), "{s:?}");
        assert!(s.max_ns <= 1_000_000 && s.max_ns >= 800_000, "{s:?}");
    }
}
