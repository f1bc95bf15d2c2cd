//! Places kept for callers who abandoned a queue (`abandoned_resume_secs`).
//!
//! A caller who hangs up while waiting and calls the same queue again within the
//! queue's window gets their original entry time back. The returning call only
//! *claims* the place at its INVITE; it *takes* it once its ACK proves the INVITE came
//! from the caller (a forged INVITE in their name must not use the place up). A claim
//! holds the place past its window until the claiming call is confirmed or ends, so a
//! caller who came back in time keeps the place even if their ACK arrives after the
//! window closed.

use call_engine_events::QueueId;
use smol_str::SmolStr;
use std::collections::HashMap;

/// Expired places are swept at most this often (a lookup checks the window itself).
const SWEEP_EVERY_MS: u64 = 1_000;

/// One kept place.
#[derive(Debug, Clone)]
struct Place {
    /// The queue the caller left.
    queue: QueueId,
    /// When they had entered it (ms on the driver's clock): what they get back.
    entered: u64,
    /// Until when a call back claims it (ms on the driver's clock).
    until: u64,
    /// Calls from the number that claimed it and wait for their ACK.
    claims: u32,
    /// Which place of the number this is: claims on an older one do not count here.
    generation: u64,
}

/// Kept places, by caller number.
#[derive(Debug, Default)]
pub(crate) struct KeptPlaces {
    by_number: HashMap<SmolStr, Place>,
    next_sweep: u64,
    generations: u64,
}

/// A call's claim on a kept place ([`KeptPlaces::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim(u64);

impl KeptPlaces {
    /// `number` left `queue` at `now`, having entered it at `entered`; a call back
    /// within `keep_ms` may take the place. Replaces an older place of the number (calls
    /// that claimed the older one find it gone).
    pub fn keep(&mut self, number: SmolStr, queue: QueueId, entered: u64, now: u64, keep_ms: u64) {
        self.generations += 1;
        self.by_number.insert(
            number,
            Place {
                queue,
                entered,
                until: now.saturating_add(keep_ms),
                claims: 0,
                generation: self.generations,
            },
        );
    }

    /// A call from `number` to `queue` arrived at `now`. If it came back within the
    /// window, the call claims the place: [`take`](Self::take) it once confirmed, or
    /// [`release`](Self::release) the claim if it ends first.
    pub fn claim(&mut self, number: &str, queue: &QueueId, now: u64) -> Option<Claim> {
        self.sweep(now);
        match self.by_number.get_mut(number) {
            Some(p) if p.queue == *queue && now <= p.until => {
                p.claims = p.claims.saturating_add(1);
                Some(Claim(p.generation))
            }
            _ => None,
        }
    }

    /// The call that made `claim` on the place of `number` was confirmed: the entry time
    /// to restore, if that place is still there (the number's first confirmed call takes
    /// it; it is gone for the others).
    pub fn take(&mut self, number: &str, claim: Claim) -> Option<u64> {
        match self.by_number.get(number) {
            Some(p) if p.generation == claim.0 => self.by_number.remove(number).map(|p| p.entered),
            _ => None,
        }
    }

    /// The call that made `claim` on the place of `number` ended unconfirmed.
    pub fn release(&mut self, number: &str, claim: Claim) {
        if let Some(p) = self.by_number.get_mut(number) {
            if p.generation == claim.0 {
                p.claims = p.claims.saturating_sub(1);
            }
        }
    }

    /// How many places are kept (expired ones may wait for the next sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_number.len()
    }

    /// Drops places past their window that nobody claims.
    fn sweep(&mut self, now: u64) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.saturating_add(SWEEP_EVERY_MS);
        self.by_number.retain(|_, p| p.claims > 0 || now <= p.until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueId {
        QueueId::new(name)
    }

    #[test]
    fn a_call_back_within_the_window_takes_the_place_once() {
        let mut k = KeptPlaces::default();
        k.keep("9601".into(), q("support"), 100, 1_000, 5_000);
        assert!(
            k.claim("9601", &q("sales"), 2_000).is_none(),
            "another queue"
        );
        assert!(
            k.claim("9602", &q("support"), 2_000).is_none(),
            "another number"
        );
        let first = k
            .claim("9601", &q("support"), 6_000)
            .expect("at the window's end");
        let second = k
            .claim("9601", &q("support"), 6_000)
            .expect("claimed again");
        assert_eq!(k.take("9601", first), Some(100));
        assert_eq!(k.take("9601", second), None, "taken once");
        assert!(k.claim("9601", &q("support"), 6_000).is_none());
    }

    #[test]
    fn a_claim_holds_the_place_past_its_window_until_taken_or_released() {
        let mut k = KeptPlaces::default();
        k.keep("9601".into(), q("support"), 100, 0, 1_000);
        k.keep("9602".into(), q("support"), 200, 0, 1_000);
        let c = k.claim("9601", &q("support"), 900).expect("in time");
        // Well past the window, swept: the claimed place stays, the other goes.
        assert!(k.claim("9603", &q("support"), 5_000).is_none());
        assert_eq!(k.len(), 1);
        let late = k.claim("9601", &q("support"), 5_000);
        assert!(late.is_none(), "no new claims after it");
        assert_eq!(k.take("9601", c), Some(100), "the late ACK");
        // A claim whose call ends unconfirmed lets the place expire.
        k.keep("9604".into(), q("support"), 300, 10_000, 1_000);
        let c = k.claim("9604", &q("support"), 10_500).expect("in time");
        k.release("9604", c);
        assert!(k.claim("9605", &q("support"), 20_000).is_none());
        assert_eq!(k.len(), 0, "nothing kept forever");
    }

    #[test]
    fn claims_on_an_older_place_do_not_touch_a_newer_one() {
        let mut k = KeptPlaces::default();
        k.keep("9601".into(), q("support"), 100, 0, 1_000);
        let a = k.claim("9601", &q("support"), 100).expect("in time");
        let b = k.claim("9601", &q("support"), 200).expect("in time");
        // A is confirmed and takes the place; it abandons again: a newer place.
        assert_eq!(k.take("9601", a), Some(100));
        k.keep("9601".into(), q("support"), 300, 400, 1_000);
        let e = k.claim("9601", &q("support"), 500).expect("in time");
        // B, which claimed the older place, ends unconfirmed: E's claim stands, and the
        // newer place outlives its window for E's late ACK.
        k.release("9601", b);
        assert!(k.claim("9609", &q("support"), 5_000).is_none(), "a sweep");
        assert_eq!(k.take("9601", b), None, "B's place is gone");
        assert_eq!(k.take("9601", e), Some(300));
        // A place replaced meanwhile is not taken by a claim on the old one.
        k.keep("9601".into(), q("support"), 100, 10_000, 1_000);
        let old = k.claim("9601", &q("support"), 10_100).expect("in time");
        k.keep("9601".into(), q("sales"), 700, 10_200, 1_000);
        assert_eq!(k.take("9601", old), None);
        assert!(k.claim("9609", &q("sales"), 20_000).is_none());
        assert_eq!(k.len(), 0, "nothing claims the newer place: it expired");
    }
}
