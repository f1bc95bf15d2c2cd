//! Parsing of store URLs into a backend target.

use crate::StoreError;
use std::path::PathBuf;

/// Where a store lives, as parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite database file.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database (gone when the store closes).
    SqliteMemory,
}

/// The URL with the password of any `user:password@` authority replaced by `***`, safe to
/// put in errors and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..rest_start],
        &userinfo[..colon],
        &url[rest_start + at..]
    )
}

/// Parses `sqlite://<path>`, `sqlite:<path>`, `sqlite::memory:` and `sqlite://:memory:`.
/// Recognises `postgres://` / `postgresql://` as planned-but-unsupported, everything else
/// as an error naming the problem.
pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
    let trimmed = url.trim();
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(invalid("the URL is empty"));
    }
    let Some(colon) = trimmed.find(':') else {
        return Err(invalid(
            "no scheme: expected `sqlite://<path>` or `sqlite::memory:`",
        ));
    };
    let scheme = &trimmed[..colon];
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(invalid(
            "no valid scheme: expected `sqlite://<path>` or `sqlite::memory:`",
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {}
        "postgres" | "postgresql" => {
            return Err(StoreError::NotSupportedYet {
                scheme: scheme.to_owned(),
                url: redact(url),
            })
        }
        _ => {
            return Err(StoreError::UnsupportedScheme {
                scheme: scheme.to_owned(),
                url: redact(url),
            })
        }
    }
    let rest = &trimmed[colon + 1..];
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.contains('?') || path.contains('#') {
        return Err(invalid(
            "query parameters and fragments are not supported (the store sets its own options)",
        ));
    }
    if path == ":memory:" {
        return Ok(Target::SqliteMemory);
    }
    if path.is_empty() {
        return Err(invalid("no database path after `sqlite://`"));
    }
    Ok(Target::SqliteFile(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_forms() {
        assert_eq!(parse("sqlite::memory:").ok(), Some(Target::SqliteMemory));
        assert_eq!(parse("sqlite://:memory:").ok(), Some(Target::SqliteMemory));
        assert_eq!(
            parse("sqlite://data/x.db").ok(),
            Some(Target::SqliteFile("data/x.db".into()))
        );
        assert_eq!(
            parse("sqlite:///abs/x.db").ok(),
            Some(Target::SqliteFile("/abs/x.db".into()))
        );
        assert_eq!(
            parse("sqlite:rel.db").ok(),
            Some(Target::SqliteFile("rel.db".into()))
        );
        assert_eq!(
            parse("SQLite://x.db").ok(),
            Some(Target::SqliteFile("x.db".into()))
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(parse(""), Err(StoreError::InvalidUrl { .. })));
        assert!(matches!(
            parse("garbage"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse("sqlite://"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse("sqlite://x.db?mode=ro"),
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse("mysql://h/db"),
            Err(StoreError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            parse("postgres://u:p@h/db"),
            Err(StoreError::NotSupportedYet { .. })
        ));
        assert!(matches!(
            parse("/tmp/x.db"),
            Err(StoreError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://user:secret@host:5432/db"),
            "postgres://user:***@host:5432/db"
        );
        assert_eq!(redact("postgres://user@host/db"), "postgres://user@host/db");
        assert_eq!(redact("sqlite://a:b/c.db"), "sqlite://a:b/c.db");
        assert_eq!(redact("garbage"), "garbage");
        let err = parse("postgresql://u:hunter2@h/db")
            .err()
            .map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("not supported yet"), "{msg}");
    }
}
