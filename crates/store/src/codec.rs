//! How domain values map to column values. Shared by every backend, so the stored names
//! are the same whatever the database.

use crate::{StoreError, UnixMillis};
use call_engine_bus::Priority;
use call_engine_events::{Disposition, Side};

/// Stored name of a disposition.
pub(crate) fn disposition_name(d: Disposition) -> &'static str {
    match d {
        Disposition::Answered => "answered",
        Disposition::Abandoned => "abandoned",
        Disposition::NoAgent => "no_agent",
        Disposition::Failed => "failed",
        Disposition::Refused => "refused",
    }
}

/// Parses a stored disposition name.
pub(crate) fn parse_disposition(s: &str) -> Option<Disposition> {
    Some(match s {
        "answered" => Disposition::Answered,
        "abandoned" => Disposition::Abandoned,
        "no_agent" => Disposition::NoAgent,
        "failed" => Disposition::Failed,
        "refused" => Disposition::Refused,
        _ => return None,
    })
}

/// Stored name of a side.
pub(crate) fn side_name(s: Side) -> &'static str {
    match s {
        Side::Customer => "customer",
        Side::Agent => "agent",
        Side::Engine => "engine",
    }
}

/// Parses a stored side name.
pub(crate) fn parse_side(s: &str) -> Option<Side> {
    Some(match s {
        "customer" => Side::Customer,
        "agent" => Side::Agent,
        "engine" => Side::Engine,
        _ => return None,
    })
}

/// Parses a stored priority name ([`Priority::name`]).
pub(crate) fn parse_priority(s: &str) -> Option<Priority> {
    Priority::ALL.into_iter().find(|p| p.name() == s)
}

/// A u64 id as a 64-bit signed integer column: the same bits, so every value round-trips
/// (ids with the top bit set, like agents' correlation ids, become negative).
pub(crate) const fn id_to_db(v: u64) -> i64 {
    v as i64
}

/// Inverse of [`id_to_db`].
pub(crate) const fn id_from_db(v: i64) -> u64 {
    v as u64
}

/// A timestamp as an integer column; refuses values beyond `i64::MAX` ms.
pub(crate) fn millis_to_db(what: &'static str, t: UnixMillis) -> Result<i64, StoreError> {
    i64::try_from(t.0).map_err(|_| StoreError::invalid(what, format!("{t} is out of range")))
}

/// A timestamp read back; negative values are corrupt.
pub(crate) fn millis_from_db(
    table: &'static str,
    column: &'static str,
    v: i64,
) -> Result<UnixMillis, StoreError> {
    u64::try_from(v)
        .map(UnixMillis)
        .map_err(|_| StoreError::corrupt(table, column, format!("negative timestamp {v}")))
}

/// `domain.type` of an event's JSON form (`{"domain":…,"message":{"type":…}}`).
pub(crate) fn event_kind(json: &serde_json::Value) -> String {
    let domain = json
        .get("domain")
        .and_then(|d| d.as_str())
        .unwrap_or("unknown");
    match json
        .get("message")
        .and_then(|m| m.get("type"))
        .and_then(|t| t.as_str())
    {
        Some(ty) => format!("{domain}.{ty}"),
        None => domain.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [
            Disposition::Answered,
            Disposition::Abandoned,
            Disposition::NoAgent,
            Disposition::Failed,
            Disposition::Refused,
        ] {
            assert_eq!(parse_disposition(disposition_name(d)), Some(d));
        }
        for s in [Side::Customer, Side::Agent, Side::Engine] {
            assert_eq!(parse_side(side_name(s)), Some(s));
        }
        for p in Priority::ALL {
            assert_eq!(parse_priority(p.name()), Some(p));
        }
        assert_eq!(parse_disposition("bogus"), None);
        assert_eq!(parse_side(""), None);
        assert_eq!(parse_priority("urgent"), None);
    }

    #[test]
    fn stored_names_match_the_serde_names() {
        for d in [
            Disposition::Answered,
            Disposition::Abandoned,
            Disposition::NoAgent,
            Disposition::Failed,
            Disposition::Refused,
        ] {
            assert_eq!(
                serde_json::to_value(d).ok(),
                Some(disposition_name(d).into())
            );
        }
        for s in [Side::Customer, Side::Agent, Side::Engine] {
            assert_eq!(serde_json::to_value(s).ok(), Some(side_name(s).into()));
        }
    }

    #[test]
    fn ids_keep_every_bit() {
        for v in [0, 1, u64::MAX, 1 << 63, (1 << 63) - 1] {
            assert_eq!(id_from_db(id_to_db(v)), v);
        }
    }

    #[test]
    fn millis_bounds() {
        assert!(millis_to_db("t", UnixMillis(u64::MAX)).is_err());
        assert!(millis_from_db("t", "c", -1).is_err());
        assert_eq!(millis_from_db("t", "c", 5).ok(), Some(UnixMillis(5)));
    }
}
