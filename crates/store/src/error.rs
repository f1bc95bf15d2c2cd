//! The one error type of the store.

use std::path::PathBuf;

/// Everything that can go wrong in the store. Messages name what was being done and, for
/// URL problems, the (password-redacted) URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL could not be understood at all (no scheme, empty path, query parameters).
    #[error("invalid store URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL names a scheme this crate does not know.
    #[error(
        "unsupported store URL scheme `{scheme}` in `{url}`: expected `sqlite://<path>` or `sqlite::memory:`"
    )]
    UnsupportedScheme {
        /// The scheme found (`mysql`, `http`, …).
        scheme: String,
        /// The URL, with any password replaced by `***`.
        url: String,
    },
    /// The URL names a backend that is planned but not implemented (PostgreSQL).
    #[error(
        "store backend `{scheme}` is not supported yet (URL `{url}`); use `sqlite://<path>` or `sqlite::memory:` for now"
    )]
    NotSupportedYet {
        /// The scheme found (`postgres`, `postgresql`).
        scheme: String,
        /// The URL, with any password replaced by `***`.
        url: String,
    },
    /// The parent directory of the database file could not be created.
    #[error("cannot create directory `{}` for the database: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or configured.
    #[error("cannot open database `{url}`: {source}")]
    Open {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the schema migrations failed (including: the database was written by a
    /// newer version that has migrations this build does not know).
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error while trying to {op}: {source}")]
    Database {
        /// What the store was doing (`insert cdr`, `list agents`, …).
        op: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The store was closed ([`Store::close`](crate::Store::close)).
    #[error("the store is closed")]
    Closed,
    /// A value given to the store cannot be stored (empty id, negative duration, …).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which value.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An agent names a queue that does not exist.
    #[error("agent `{agent}` refers to unknown queue `{queue}` (create the queue first)")]
    UnknownQueue {
        /// The agent.
        agent: String,
        /// The queue it names.
        queue: String,
    },
    /// A value read back from the database is not valid (unknown enum name, negative
    /// timestamp, JSON that no longer parses, …). The store never panics on it.
    #[error("corrupt value in {table}.{column}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// Wraps a query error, recognising a closed pool.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| match source {
            sqlx::Error::PoolClosed => StoreError::Closed,
            source => StoreError::Database { op, source },
        }
    }

    pub(crate) fn corrupt(
        table: &'static str,
        column: &'static str,
        reason: impl Into<String>,
    ) -> StoreError {
        StoreError::Corrupt {
            table,
            column,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidInput {
            what,
            reason: reason.into(),
        }
    }
}
