//! Time as an input and timers as outputs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in time: milliseconds since an arbitrary origin chosen by the driver.
///
/// The machines never read a clock; every input carries the driver's `now`. A `now`
/// smaller than one seen before is treated as the latest time seen (time never runs
/// backwards inside a machine).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// The origin.
    pub const ZERO: Millis = Millis(0);

    /// This time plus `ms` milliseconds (saturating).
    #[must_use]
    pub const fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    #[must_use]
    pub const fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The value in (fractional) seconds.
    #[must_use]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that width and alignment (`{:>9}`) apply.
        f.pad(&format!("{}.{:03}s", self.0 / 1000, self.0 % 1000))
    }
}

impl From<u64> for Millis {
    fn from(ms: u64) -> Self {
        Millis(ms)
    }
}

/// One arming of a timer: which timer (`kind`) and which arming of it (`generation`).
///
/// A machine arms at most one timer per kind at a time. It returns a start action
/// carrying a fresh `TimerId` (a new generation) and the deadline; the driver schedules
/// it and, when the deadline passes, feeds the same `TimerId` back. A `TimerId` whose
/// generation is not the one currently armed (cancelled, superseded, already fired) is
/// *stale*: the machine rejects it with a `StaleTimer` error and changes nothing.
///
/// A driver keyed by `kind` can simply replace an existing timer of the same kind on a
/// new start action; one keyed by the whole `TimerId` is correct too, since stale fires
/// are harmless.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimerId<K> {
    /// Which timer.
    pub kind: K,
    /// Which arming of it (unique within one machine).
    pub generation: u64,
}

/// An armed timer inside a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Armed {
    pub(crate) generation: u64,
    pub(crate) at: Millis,
}

#[cfg(test)]
mod tests {
    use super::Millis;

    #[test]
    fn millis_arithmetic_and_display() {
        assert_eq!(Millis(1_500).plus(500), Millis(2_000));
        assert_eq!(Millis(u64::MAX).plus(1), Millis(u64::MAX));
        assert_eq!(Millis(2_000).since(Millis(500)), 1_500);
        assert_eq!(Millis(500).since(Millis(2_000)), 0);
        assert_eq!(Millis(61_005).to_string(), "61.005s");
        assert_eq!(format!("{:>8}", Millis(1_000)), "  1.000s");
        assert!((Millis(1_250).as_secs_f64() - 1.25).abs() < f64::EPSILON);
        assert_eq!(serde_json::to_string(&Millis(42)).unwrap(), "42");
    }
}
