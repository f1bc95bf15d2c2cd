//! # call-engine-store
//!
//! Persistence for call-engine: configured **agents** and **queues**, one **call detail
//! record** per call, and the **event log** (bus envelopes with their correlation and
//! causation ids), in SQLite through sqlx.
//!
//! - [`Store::open`] takes a URL: `sqlite://path/to/file.db` (parent directories and the
//!   file are created if missing; WAL journal, foreign keys on, busy timeout) or
//!   `sqlite::memory:` (private, gone on close; for tests). Migrations embedded in the
//!   binary are applied on open; opening again is a no-op. `postgres://…` is recognised
//!   and refused with [`StoreError::NotSupportedYet`]: PostgreSQL is planned behind the
//!   same API (see the README).
//! - [`Store`] is cheap to clone and safe to share between tasks. All writes of one store
//!   go through a single connection, so concurrent inserts queue instead of failing with
//!   "database is locked"; reads use their own connections and, in WAL mode, never wait
//!   for writes.
//! - Nothing read back is trusted: an unknown enum name, a negative timestamp or an
//!   unparsable payload is a [`StoreError::Corrupt`], never a panic.
//!
//! ```
//! use call_engine_events::{CallId, Disposition, QueueId, Side};
//! use call_engine_store::{Cdr, CdrInsert, CdrQuery, Store, UnixMillis};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), call_engine_store::StoreError> {
//! let store = Store::open("sqlite::memory:").await?;
//! let cdr = Cdr {
//!     call_id: CallId(1),
//!     queue: Some(QueueId::new("support")),
//!     caller_user: "+15551234".into(),
//!     caller_display: None,
//!     caller_uri: "sip:+15551234@example.test".into(),
//!     agent: None,
//!     entered_queue_at: Some(UnixMillis(1_700_000_000_000)),
//!     agent_answered_at: None,
//!     ended_at: UnixMillis(1_700_000_030_000),
//!     wait_secs: 30.0,
//!     talk_secs: 0.0,
//!     disposition: Disposition::Abandoned,
//!     hung_up_by: Side::Customer,
//!     hangup_cause: "cancelled".into(),
//! };
//! assert_eq!(store.insert_cdr(&cdr).await?, CdrInsert::Inserted);
//! assert_eq!(store.insert_cdr(&cdr).await?, CdrInsert::AlreadyExists);
//! assert_eq!(store.count_cdrs(&CdrQuery::default()).await?, 1);
//! store.close().await;
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;
mod sqlite;
mod types;
mod url;

pub use error::StoreError;
pub use types::{
    hangup_cause_label, AgentRecord, Cdr, CdrInsert, CdrQuery, QueueRecord, StoredEvent, UnixMillis,
};

use call_engine_bus::{CorrelationId, Envelope};
use call_engine_events::{AgentId, CallId, EngineEvent, QueueId};
use std::sync::Arc;
use std::time::Duration;

/// Tuning for [`Store::open_with`]. The defaults suit the embedded engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a statement waits for a lock held by another process before failing
    /// (SQLite `busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
    /// How long an operation waits for a free connection of the store's own pools
    /// (writes queue for the single writer connection). Default 30 s.
    pub acquire_timeout: Duration,
    /// Connections used for reads (file databases; at least 1). Default 4.
    pub read_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            read_connections: 4,
        }
    }
}

/// The store: one database, one API whatever the backend. Clones share the database
/// (and [`close`](Store::close)).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    url: Arc<str>,
}

/// The database behind a [`Store`]. A PostgreSQL variant will sit next to SQLite; the
/// public API does not change.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteBackend),
}

impl Store {
    /// Opens the store at `url` with default [`StoreOptions`]: `sqlite://path/to/file.db`
    /// (relative paths are relative to the working directory, `sqlite:///abs/path.db` is
    /// absolute; directories and the file are created if missing), or `sqlite::memory:`.
    /// Applies pending migrations.
    ///
    /// Errors: [`StoreError::InvalidUrl`] / [`StoreError::UnsupportedScheme`] /
    /// [`StoreError::NotSupportedYet`] (PostgreSQL) for the URL,
    /// [`StoreError::CreateDir`], [`StoreError::Open`] or [`StoreError::Migrate`] for the
    /// database.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, StoreOptions::default()).await
    }

    /// Opens the store at `url` (see [`Store::open`]) with explicit options.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        if options.read_connections == 0 {
            return Err(StoreError::invalid(
                "store options",
                "read_connections must be at least 1",
            ));
        }
        let shown = url::redact(url);
        let target = url::parse(url)?;
        let backend = Backend::Sqlite(sqlite::SqliteBackend::open(target, &shown, &options).await?);
        Ok(Store {
            backend,
            url: shown.into(),
        })
    }

    /// The URL the store was opened with (password redacted).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection (of this store and all its clones), waiting for running
    /// operations to finish. Later operations fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(b) => b.close().await,
        }
        tracing::info!(url = %self.url, "store closed");
    }

    /// The database's journal mode as it reports it (`wal` for SQLite files, `memory`
    /// for in-memory databases). For diagnostics.
    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.journal_mode().await,
        }
    }

    // ---- agents -------------------------------------------------------------------

    /// Creates or replaces an agent (by id), including its queue memberships, in one
    /// transaction. Every queue must exist ([`StoreError::UnknownQueue`]) and appear
    /// once. The input's timestamps are ignored; the returned record carries the stored
    /// ones (`created_at` kept from the first upsert).
    pub async fn upsert_agent(&self, agent: &AgentRecord) -> Result<AgentRecord, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.upsert_agent(agent).await,
        }
    }

    /// The agent with this id, if stored.
    pub async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.get_agent(id).await,
        }
    }

    /// Every agent, ordered by id.
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.list_agents().await,
        }
    }

    /// The agents serving `queue`, ordered by id.
    pub async fn list_agents_in_queue(
        &self,
        queue: &QueueId,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.list_agents_in_queue(queue).await,
        }
    }

    /// Deletes an agent and its memberships; `false` if there was none. Their call
    /// detail records stay.
    pub async fn delete_agent(&self, id: &AgentId) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.delete_agent(id).await,
        }
    }

    // ---- queues -------------------------------------------------------------------

    /// Creates or replaces a queue (by name). The input's timestamps are ignored; the
    /// returned record carries the stored ones.
    pub async fn upsert_queue(&self, queue: &QueueRecord) -> Result<QueueRecord, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.upsert_queue(queue).await,
        }
    }

    /// The queue with this name, if stored.
    pub async fn get_queue(&self, name: &QueueId) -> Result<Option<QueueRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.get_queue(name).await,
        }
    }

    /// Every queue, ordered by name.
    pub async fn list_queues(&self) -> Result<Vec<QueueRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.list_queues().await,
        }
    }

    /// Deletes a queue and every agent's membership in it; `false` if there was none.
    /// Call detail records of the queue stay.
    pub async fn delete_queue(&self, name: &QueueId) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.delete_queue(name).await,
        }
    }

    // ---- call detail records --------------------------------------------------------

    /// Stores the record of a call. Idempotent on `call_id`: if the call already has a
    /// record, nothing changes and [`CdrInsert::AlreadyExists`] is returned (first write
    /// wins). `wait_secs`/`talk_secs` must be finite and non-negative.
    pub async fn insert_cdr(&self, cdr: &Cdr) -> Result<CdrInsert, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.insert_cdr(cdr).await,
        }
    }

    /// Stores several records in one transaction (all or none), with the outcome of each
    /// as [`insert_cdr`](Store::insert_cdr) would report it.
    pub async fn insert_cdrs(&self, cdrs: &[Cdr]) -> Result<Vec<CdrInsert>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.insert_cdrs(cdrs).await,
        }
    }

    /// The record of a call, if stored.
    pub async fn get_cdr(&self, call: CallId) -> Result<Option<Cdr>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.get_cdr(call).await,
        }
    }

    /// Records matching `query`, newest first (by `ended_at`, then by call id), paged by
    /// its `limit` and `offset`.
    pub async fn list_cdrs(&self, query: &CdrQuery) -> Result<Vec<Cdr>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.list_cdrs(query).await,
        }
    }

    /// How many records match `query`'s filters (its `limit` and `offset` are ignored).
    pub async fn count_cdrs(&self, query: &CdrQuery) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.count_cdrs(query).await,
        }
    }

    /// The highest call id with a record: seed for
    /// [`IdAllocator::starting_after`](call_engine_events::IdAllocator::starting_after)
    /// so a restarted engine never reuses a call id.
    pub async fn max_call_id(&self) -> Result<Option<CallId>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.max_call_id().await,
        }
    }

    // ---- event log ----------------------------------------------------------------

    /// Appends one envelope to the event log; returns its sequence number.
    pub async fn append_event(&self, event: &Envelope<EngineEvent>) -> Result<u64, StoreError> {
        let seqs = self.append_events(std::iter::once(event)).await?;
        seqs.first()
            .copied()
            .ok_or_else(|| StoreError::corrupt("events", "seq", "no sequence number returned"))
    }

    /// Appends envelopes in one transaction (all or none), in iteration order; returns
    /// their sequence numbers. Takes `&[Envelope]` or `&Vec<Envelope>`, or received
    /// [`Event`](call_engine_bus::Event)s via `events.iter().map(|e| &**e)`.
    pub async fn append_events<'a, I>(&self, events: I) -> Result<Vec<u64>, StoreError>
    where
        I: IntoIterator<Item = &'a Envelope<EngineEvent>>,
    {
        match &self.backend {
            Backend::Sqlite(b) => b.append_events(events).await,
        }
    }

    /// The latest logged event of `correlation` whose kind is `kind`
    /// (`agent.status_changed`, `call.ended`…), if any.
    pub async fn last_event_of(
        &self,
        correlation: CorrelationId,
        kind: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.last_event_of(correlation, kind).await,
        }
    }

    /// Every logged event of `correlation` whose kind is `kind`, in append order.
    pub async fn events_of_kind(
        &self,
        correlation: CorrelationId,
        kind: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.events_of_kind(correlation, kind).await,
        }
    }

    /// Every logged event of `correlation` (a call: `CorrelationId::from(call_id)`), in
    /// append order.
    pub async fn events_of(
        &self,
        correlation: CorrelationId,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.events_of(correlation).await,
        }
    }
}
