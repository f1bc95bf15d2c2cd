//! The SQLite backend.
//!
//! Concurrency: SQLite allows one writer at a time. Instead of letting many connections
//! race for the write lock (and fail with "database is locked" when a deferred
//! transaction cannot upgrade), every write goes through a pool of exactly **one**
//! connection: writers queue in the pool, in-process, fairly. Reads use a separate pool
//! of `query_only` connections; in WAL mode they never block the writer nor wait for it.
//! `busy_timeout` still covers other processes opening the same file. An in-memory
//! database is private to one connection, so there one connection serves both.

use crate::codec::{
    disposition_name, event_kind, id_from_db, id_to_db, millis_from_db, millis_to_db,
    parse_disposition, parse_priority, parse_side, side_name,
};
use crate::url::Target;
use crate::{
    AgentRecord, Cdr, CdrInsert, CdrQuery, QueueRecord, StoreError, StoreOptions, StoredEvent,
    UnixMillis,
};
use call_engine_bus::{CorrelationId, Envelope, EventId, Timestamp};
use call_engine_events::{AgentId, CallId, EngineEvent, QueueId};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use tracing::{debug, info, trace};

/// The embedded SQLite migrations (`crates/store/migrations/sqlite`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A query of the event log: its columns, in the order `event_from_row` reads them,
/// then `WHERE` and the given condition.
macro_rules! select_events {
    ($condition:literal) => {
        concat!(
            "SELECT seq, event_id, correlation, causation, source, priority, bus_ts_ns, ",
            "recorded_at_ms, kind, payload FROM events WHERE ",
            $condition
        )
    };
}

/// Writes that need several statements start with `BEGIN IMMEDIATE`: the write lock is
/// taken up front (waiting under `busy_timeout`), never upgraded mid-transaction.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A store on SQLite.
#[derive(Debug, Clone)]
pub(crate) struct SqliteBackend {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database, configures it and applies migrations.
    pub(crate) async fn open(
        target: Target,
        shown_url: &str,
        opts: &StoreOptions,
    ) -> Result<SqliteBackend, StoreError> {
        let open_err = |source| StoreError::Open {
            url: shown_url.to_owned(),
            source,
        };
        let pool = |max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(opts.acquire_timeout)
        };
        let backend = match target {
            Target::SqliteMemory => {
                // `from_str` gives each in-memory database a unique shared-cache name; the
                // single connection is kept forever (the database lives as long as it).
                let options = SqliteConnectOptions::from_str("sqlite::memory:")
                    .map_err(open_err)?
                    .foreign_keys(true)
                    .busy_timeout(opts.busy_timeout);
                let writer = pool(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(open_err)?;
                SqliteBackend {
                    reader: writer.clone(),
                    writer,
                }
            }
            Target::SqliteFile(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !dir.exists() {
                        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                            path: dir.to_path_buf(),
                            source,
                        })?;
                        debug!(dir = %dir.display(), "created database directory");
                    }
                }
                let base = SqliteConnectOptions::new()
                    .filename(&path)
                    .foreign_keys(true)
                    .busy_timeout(opts.busy_timeout)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
                // The writer first: it creates the file and switches it to WAL before
                // any reader exists.
                let writer = pool(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(base.clone().create_if_missing(true))
                    .await
                    .map_err(open_err)?;
                let reader = pool(opts.read_connections)
                    .connect_with(base.pragma("query_only", "ON"))
                    .await
                    .map_err(open_err)?;
                SqliteBackend { writer, reader }
            }
        };
        MIGRATOR.run(&backend.writer).await?;
        info!(url = shown_url, "store open (sqlite), schema up to date");
        Ok(backend)
    }

    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub(crate) async fn journal_mode(&self) -> Result<String, StoreError> {
        sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(&self.reader)
            .await
            .map_err(StoreError::db("read the journal mode"))
    }

    // ---- agents -------------------------------------------------------------------

    pub(crate) async fn upsert_agent(
        &self,
        agent: &AgentRecord,
    ) -> Result<AgentRecord, StoreError> {
        if agent.id.as_str().is_empty() {
            return Err(StoreError::invalid("agent id", "must not be empty"));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = agent.queues.iter().find(|q| !seen.insert(q.as_str())) {
            return Err(StoreError::invalid(
                "agent queues",
                format!("queue `{dup}` is listed twice for agent `{}`", agent.id),
            ));
        }
        let now = millis_to_db("agent timestamp", UnixMillis::now())?;
        const OP: &str = "upsert agent";
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::db(OP))?;
        for q in &agent.queues {
            let exists = sqlx::query("SELECT 1 FROM queues WHERE name = ?")
                .bind(q.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?
                .is_some();
            if !exists {
                return Err(StoreError::UnknownQueue {
                    agent: agent.id.to_string(),
                    queue: q.to_string(),
                });
            }
        }
        let row = sqlx::query(
            "INSERT INTO agents (id, display_name, max_calls, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (id) DO UPDATE SET
                 display_name = excluded.display_name,
                 max_calls = excluded.max_calls,
                 updated_at_ms = excluded.updated_at_ms
             RETURNING created_at_ms, updated_at_ms",
        )
        .bind(agent.id.as_str())
        .bind(&agent.display_name)
        .bind(i64::from(agent.max_calls))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
        sqlx::query("DELETE FROM agent_queues WHERE agent_id = ?")
            .bind(agent.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
        for (pos, q) in agent.queues.iter().enumerate() {
            sqlx::query("INSERT INTO agent_queues (agent_id, queue, position) VALUES (?, ?, ?)")
                .bind(agent.id.as_str())
                .bind(q.as_str())
                .bind(i64::try_from(pos).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
        }
        tx.commit().await.map_err(StoreError::db(OP))?;
        let mut stored = agent.clone();
        stored.created_at = millis_from_db(
            "agents",
            "created_at_ms",
            get(&row, "agents", "created_at_ms")?,
        )?;
        stored.updated_at = millis_from_db(
            "agents",
            "updated_at_ms",
            get(&row, "agents", "updated_at_ms")?,
        )?;
        debug!(agent = %agent.id, queues = agent.queues.len(), "agent stored");
        Ok(stored)
    }

    pub(crate) async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let mut agents = self.load_agents(AgentFilter::Id(id)).await?;
        Ok(agents.pop())
    }

    pub(crate) async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.load_agents(AgentFilter::All).await
    }

    pub(crate) async fn list_agents_in_queue(
        &self,
        queue: &QueueId,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.load_agents(AgentFilter::Queue(queue)).await
    }

    /// Agents (ordered by id) with their queues, read in one snapshot.
    async fn load_agents(&self, filter: AgentFilter<'_>) -> Result<Vec<AgentRecord>, StoreError> {
        const OP: &str = "read agents";
        let mut tx = self.reader.begin().await.map_err(StoreError::db(OP))?;
        let cols = "a.id, a.display_name, a.max_calls, a.created_at_ms, a.updated_at_ms";
        let rows = match filter {
            AgentFilter::All => {
                sqlx::query(&format!("SELECT {cols} FROM agents a ORDER BY a.id"))
                    .fetch_all(&mut *tx)
                    .await
            }
            AgentFilter::Id(id) => {
                sqlx::query(&format!("SELECT {cols} FROM agents a WHERE a.id = ?"))
                    .bind(id.as_str())
                    .fetch_all(&mut *tx)
                    .await
            }
            AgentFilter::Queue(q) => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM agents a JOIN agent_queues m ON m.agent_id = a.id
                     WHERE m.queue = ? ORDER BY a.id"
                ))
                .bind(q.as_str())
                .fetch_all(&mut *tx)
                .await
            }
        }
        .map_err(StoreError::db(OP))?;
        let mut agents = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if agents.is_empty() {
            return Ok(agents);
        }
        let memberships = match filter {
            AgentFilter::Id(id) => {
                sqlx::query(
                    "SELECT agent_id, queue FROM agent_queues WHERE agent_id = ? ORDER BY position",
                )
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await
            }
            AgentFilter::All | AgentFilter::Queue(_) => {
                sqlx::query("SELECT agent_id, queue FROM agent_queues ORDER BY agent_id, position")
                    .fetch_all(&mut *tx)
                    .await
            }
        }
        .map_err(StoreError::db(OP))?;
        tx.commit().await.map_err(StoreError::db(OP))?;
        let index: HashMap<String, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.as_str().to_owned(), i))
            .collect();
        for row in &memberships {
            let agent: String = get(row, "agent_queues", "agent_id")?;
            let queue: String = get(row, "agent_queues", "queue")?;
            if let Some(&i) = index.get(&agent) {
                agents[i].queues.push(QueueId::new(queue));
            }
        }
        Ok(agents)
    }

    pub(crate) async fn delete_agent(&self, id: &AgentId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agents WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.writer)
            .await
            .map_err(StoreError::db("delete agent"))?;
        let deleted = done.rows_affected() > 0;
        debug!(agent = %id, deleted, "delete agent");
        Ok(deleted)
    }

    // ---- queues -------------------------------------------------------------------

    pub(crate) async fn upsert_queue(
        &self,
        queue: &QueueRecord,
    ) -> Result<QueueRecord, StoreError> {
        if queue.name.as_str().is_empty() {
            return Err(StoreError::invalid("queue name", "must not be empty"));
        }
        let settings = serde_json::to_string(&queue.settings)
            .map_err(|e| StoreError::invalid("queue settings", e.to_string()))?;
        let now = millis_to_db("queue timestamp", UnixMillis::now())?;
        let row = sqlx::query(
            "INSERT INTO queues (name, strategy, moh, ring_timeout_secs, settings,
                                 created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (name) DO UPDATE SET
                 strategy = excluded.strategy,
                 moh = excluded.moh,
                 ring_timeout_secs = excluded.ring_timeout_secs,
                 settings = excluded.settings,
                 updated_at_ms = excluded.updated_at_ms
             RETURNING created_at_ms, updated_at_ms",
        )
        .bind(queue.name.as_str())
        .bind(&queue.strategy)
        .bind(queue.moh.as_deref())
        .bind(i64::from(queue.ring_timeout_secs))
        .bind(settings)
        .bind(now)
        .fetch_one(&self.writer)
        .await
        .map_err(StoreError::db("upsert queue"))?;
        let mut stored = queue.clone();
        stored.created_at = millis_from_db(
            "queues",
            "created_at_ms",
            get(&row, "queues", "created_at_ms")?,
        )?;
        stored.updated_at = millis_from_db(
            "queues",
            "updated_at_ms",
            get(&row, "queues", "updated_at_ms")?,
        )?;
        debug!(queue = %queue.name, "queue stored");
        Ok(stored)
    }

    pub(crate) async fn get_queue(
        &self,
        name: &QueueId,
    ) -> Result<Option<QueueRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {QUEUE_COLS} FROM queues WHERE name = ?"))
            .bind(name.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::db("get queue"))?;
        row.as_ref().map(queue_from_row).transpose()
    }

    pub(crate) async fn list_queues(&self) -> Result<Vec<QueueRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {QUEUE_COLS} FROM queues ORDER BY name"))
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::db("list queues"))?;
        rows.iter().map(queue_from_row).collect()
    }

    pub(crate) async fn delete_queue(&self, name: &QueueId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM queues WHERE name = ?")
            .bind(name.as_str())
            .execute(&self.writer)
            .await
            .map_err(StoreError::db("delete queue"))?;
        let deleted = done.rows_affected() > 0;
        debug!(queue = %name, deleted, "delete queue (memberships cascade)");
        Ok(deleted)
    }

    // ---- call detail records --------------------------------------------------------

    pub(crate) async fn insert_cdr(&self, cdr: &Cdr) -> Result<CdrInsert, StoreError> {
        let row = CdrRow::new(cdr)?;
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(StoreError::db("insert cdr"))?;
        row.insert(&mut conn).await
    }

    pub(crate) async fn insert_cdrs(&self, cdrs: &[Cdr]) -> Result<Vec<CdrInsert>, StoreError> {
        let rows = cdrs
            .iter()
            .map(CdrRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        const OP: &str = "insert cdrs";
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::db(OP))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(row.insert(&mut tx).await?);
        }
        tx.commit().await.map_err(StoreError::db(OP))?;
        Ok(out)
    }

    pub(crate) async fn get_cdr(&self, call: CallId) -> Result<Option<Cdr>, StoreError> {
        let row = sqlx::query(&format!("SELECT {CDR_COLS} FROM cdrs WHERE call_id = ?"))
            .bind(id_to_db(call.0))
            .fetch_optional(&self.reader)
            .await
            .map_err(StoreError::db("get cdr"))?;
        row.as_ref().map(cdr_from_row).transpose()
    }

    pub(crate) async fn list_cdrs(&self, q: &CdrQuery) -> Result<Vec<Cdr>, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT {CDR_COLS} FROM cdrs"));
        push_cdr_filters(&mut qb, q)?;
        qb.push(" ORDER BY ended_at_ms DESC, call_id DESC LIMIT ");
        qb.push_bind(q.limit.map_or(-1, i64::from));
        qb.push(" OFFSET ");
        qb.push_bind(i64::from(q.offset));
        let rows = qb
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::db("list cdrs"))?;
        rows.iter().map(cdr_from_row).collect()
    }

    pub(crate) async fn count_cdrs(&self, q: &CdrQuery) -> Result<u64, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM cdrs");
        push_cdr_filters(&mut qb, q)?;
        let n: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.reader)
            .await
            .map_err(StoreError::db("count cdrs"))?;
        u64::try_from(n).map_err(|_| StoreError::corrupt("cdrs", "COUNT(*)", format!("{n}")))
    }

    pub(crate) async fn max_call_id(&self) -> Result<Option<CallId>, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(call_id) FROM cdrs")
            .fetch_one(&self.reader)
            .await
            .map_err(StoreError::db("read the highest call id"))?;
        Ok(max.map(|v| CallId(id_from_db(v))))
    }

    // ---- event log ----------------------------------------------------------------

    pub(crate) async fn append_events<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Envelope<EngineEvent>>,
    ) -> Result<Vec<u64>, StoreError> {
        let rows = events
            .into_iter()
            .map(EventRow::new)
            .collect::<Result<Vec<_>, _>>()?;
        const OP: &str = "append events";
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(StoreError::db(OP))?;
        let mut seqs = Vec::with_capacity(rows.len());
        // One statement per chunk: each statement is a round trip to SQLite's worker
        // thread, which dominated appending one row at a time.
        for chunk in rows.chunks(EVENT_ROWS_PER_INSERT) {
            seqs.extend(EventRow::insert_all(chunk, &mut tx).await?);
        }
        tx.commit().await.map_err(StoreError::db(OP))?;
        trace!(n = seqs.len(), "events appended");
        Ok(seqs)
    }

    pub(crate) async fn events_of(
        &self,
        correlation: CorrelationId,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(select_events!("correlation = ? ORDER BY seq"))
            .bind(id_to_db(correlation.0))
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::db("read events"))?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn events_of_kind(
        &self,
        correlation: CorrelationId,
        kind: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(select_events!("correlation = ? AND kind = ? ORDER BY seq"))
            .bind(id_to_db(correlation.0))
            .bind(kind)
            .fetch_all(&self.reader)
            .await
            .map_err(StoreError::db("read events"))?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn last_event_of(
        &self,
        correlation: CorrelationId,
        kind: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(select_events!(
            "correlation = ? AND kind = ? ORDER BY seq DESC LIMIT 1"
        ))
        .bind(id_to_db(correlation.0))
        .bind(kind)
        .fetch_optional(&self.reader)
        .await
        .map_err(StoreError::db("read events"))?;
        row.as_ref().map(event_from_row).transpose()
    }
}

enum AgentFilter<'a> {
    All,
    Id(&'a AgentId),
    Queue(&'a QueueId),
}

/// Reads a column, turning a missing column or a type mismatch into [`StoreError::Corrupt`].
fn get<'r, T>(
    row: &'r SqliteRow,
    table: &'static str,
    column: &'static str,
) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|e| StoreError::corrupt(table, column, e.to_string()))
}

fn agent_from_row(row: &SqliteRow) -> Result<AgentRecord, StoreError> {
    const T: &str = "agents";
    let max_calls: i64 = get(row, T, "max_calls")?;
    Ok(AgentRecord {
        id: AgentId::new(get::<String>(row, T, "id")?),
        display_name: get(row, T, "display_name")?,
        queues: Vec::new(),
        max_calls: u32::try_from(max_calls).map_err(|_| {
            StoreError::corrupt(T, "max_calls", format!("{max_calls} out of range"))
        })?,
        created_at: millis_from_db(T, "created_at_ms", get(row, T, "created_at_ms")?)?,
        updated_at: millis_from_db(T, "updated_at_ms", get(row, T, "updated_at_ms")?)?,
    })
}

const QUEUE_COLS: &str =
    "name, strategy, moh, ring_timeout_secs, settings, created_at_ms, updated_at_ms";

fn queue_from_row(row: &SqliteRow) -> Result<QueueRecord, StoreError> {
    const T: &str = "queues";
    let ring: i64 = get(row, T, "ring_timeout_secs")?;
    let settings: String = get(row, T, "settings")?;
    Ok(QueueRecord {
        name: QueueId::new(get::<String>(row, T, "name")?),
        strategy: get(row, T, "strategy")?,
        moh: get(row, T, "moh")?,
        ring_timeout_secs: u32::try_from(ring).map_err(|_| {
            StoreError::corrupt(T, "ring_timeout_secs", format!("{ring} out of range"))
        })?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| StoreError::corrupt(T, "settings", format!("not JSON: {e}")))?,
        created_at: millis_from_db(T, "created_at_ms", get(row, T, "created_at_ms")?)?,
        updated_at: millis_from_db(T, "updated_at_ms", get(row, T, "updated_at_ms")?)?,
    })
}

const CDR_COLS: &str = "call_id, queue, caller_user, caller_display, caller_uri, agent, \
     entered_queue_at_ms, agent_answered_at_ms, ended_at_ms, wait_secs, talk_secs, \
     disposition, hung_up_by, hangup_cause";

/// A CDR validated and converted to column values.
struct CdrRow<'a> {
    cdr: &'a Cdr,
    entered: Option<i64>,
    answered: Option<i64>,
    ended: i64,
    recorded: i64,
}

impl<'a> CdrRow<'a> {
    fn new(cdr: &'a Cdr) -> Result<CdrRow<'a>, StoreError> {
        for (what, v) in [
            ("cdr wait_secs", cdr.wait_secs),
            ("cdr talk_secs", cdr.talk_secs),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(StoreError::invalid(
                    what,
                    format!(
                        "{v} for {} (must be a finite, non-negative number)",
                        cdr.call_id
                    ),
                ));
            }
        }
        Ok(CdrRow {
            cdr,
            entered: cdr
                .entered_queue_at
                .map(|t| millis_to_db("cdr entered_queue_at", t))
                .transpose()?,
            answered: cdr
                .agent_answered_at
                .map(|t| millis_to_db("cdr agent_answered_at", t))
                .transpose()?,
            ended: millis_to_db("cdr ended_at", cdr.ended_at)?,
            recorded: millis_to_db("cdr timestamp", UnixMillis::now())?,
        })
    }

    async fn insert(&self, conn: &mut SqliteConnection) -> Result<CdrInsert, StoreError> {
        let c = self.cdr;
        let done = sqlx::query(
            "INSERT INTO cdrs (call_id, queue, caller_user, caller_display, caller_uri, agent,
                               entered_queue_at_ms, agent_answered_at_ms, ended_at_ms,
                               wait_secs, talk_secs, disposition, hung_up_by, hangup_cause,
                               recorded_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (call_id) DO NOTHING",
        )
        .bind(id_to_db(c.call_id.0))
        .bind(c.queue.as_ref().map(|q| q.as_str()))
        .bind(&c.caller_user)
        .bind(c.caller_display.as_deref())
        .bind(&c.caller_uri)
        .bind(c.agent.as_ref().map(|a| a.as_str()))
        .bind(self.entered)
        .bind(self.answered)
        .bind(self.ended)
        .bind(c.wait_secs)
        .bind(c.talk_secs)
        .bind(disposition_name(c.disposition))
        .bind(side_name(c.hung_up_by))
        .bind(&c.hangup_cause)
        .bind(self.recorded)
        .execute(conn)
        .await
        .map_err(StoreError::db("insert cdr"))?;
        if done.rows_affected() == 0 {
            debug!(call = %c.call_id, "cdr already stored; kept the first one");
            Ok(CdrInsert::AlreadyExists)
        } else {
            trace!(call = %c.call_id, "cdr stored");
            Ok(CdrInsert::Inserted)
        }
    }
}

fn push_cdr_filters(qb: &mut QueryBuilder<'_, Sqlite>, q: &CdrQuery) -> Result<(), StoreError> {
    let mut sep = " WHERE ";
    let mut next = |qb: &mut QueryBuilder<'_, Sqlite>, sql: &str| {
        qb.push(sep);
        qb.push(sql);
        sep = " AND ";
    };
    if let Some(t) = q.since {
        next(qb, "ended_at_ms >= ");
        qb.push_bind(millis_to_db("cdr query since", t)?);
    }
    if let Some(t) = q.until {
        next(qb, "ended_at_ms < ");
        qb.push_bind(millis_to_db("cdr query until", t)?);
    }
    if let Some(queue) = &q.queue {
        next(qb, "queue = ");
        qb.push_bind(queue.as_str().to_owned());
    }
    if let Some(agent) = &q.agent {
        next(qb, "agent = ");
        qb.push_bind(agent.as_str().to_owned());
    }
    if let Some(d) = q.disposition {
        next(qb, "disposition = ");
        qb.push_bind(disposition_name(d));
    }
    Ok(())
}

fn cdr_from_row(row: &SqliteRow) -> Result<Cdr, StoreError> {
    const T: &str = "cdrs";
    let opt_ms = |column: &'static str| -> Result<Option<UnixMillis>, StoreError> {
        get::<Option<i64>>(row, T, column)?
            .map(|v| millis_from_db(T, column, v))
            .transpose()
    };
    let disposition: String = get(row, T, "disposition")?;
    let hung_up_by: String = get(row, T, "hung_up_by")?;
    Ok(Cdr {
        call_id: CallId(id_from_db(get(row, T, "call_id")?)),
        queue: get::<Option<String>>(row, T, "queue")?.map(QueueId::new),
        caller_user: get(row, T, "caller_user")?,
        caller_display: get(row, T, "caller_display")?,
        caller_uri: get(row, T, "caller_uri")?,
        agent: get::<Option<String>>(row, T, "agent")?.map(AgentId::new),
        entered_queue_at: opt_ms("entered_queue_at_ms")?,
        agent_answered_at: opt_ms("agent_answered_at_ms")?,
        ended_at: millis_from_db(T, "ended_at_ms", get(row, T, "ended_at_ms")?)?,
        wait_secs: get(row, T, "wait_secs")?,
        talk_secs: get(row, T, "talk_secs")?,
        disposition: parse_disposition(&disposition).ok_or_else(|| {
            StoreError::corrupt(
                T,
                "disposition",
                format!("unknown disposition `{disposition}`"),
            )
        })?,
        hung_up_by: parse_side(&hung_up_by).ok_or_else(|| {
            StoreError::corrupt(T, "hung_up_by", format!("unknown side `{hung_up_by}`"))
        })?,
        hangup_cause: get(row, T, "hangup_cause")?,
    })
}

/// An envelope converted to column values.
struct EventRow<'a> {
    env: &'a Envelope<EngineEvent>,
    kind: String,
    payload: String,
    recorded: i64,
}

impl<'a> EventRow<'a> {
    fn new(env: &'a Envelope<EngineEvent>) -> Result<EventRow<'a>, StoreError> {
        let json = serde_json::to_value(&env.payload)
            .map_err(|e| StoreError::invalid("event payload", e.to_string()))?;
        Ok(EventRow {
            env,
            kind: event_kind(&json),
            payload: json.to_string(),
            recorded: millis_to_db("event timestamp", UnixMillis::now())?,
        })
    }

    /// Inserts `rows` with one statement; their sequence numbers, in `rows`' order.
    async fn insert_all(
        rows: &[EventRow<'_>],
        conn: &mut SqliteConnection,
    ) -> Result<Vec<u64>, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (event_id, correlation, causation, source, priority, bus_ts_ns,
                                 recorded_at_ms, kind, payload) ",
        );
        qb.push_values(rows, |mut b, row| {
            let e = row.env;
            b.push_bind(id_to_db(e.id.0))
                .push_bind(id_to_db(e.correlation.0))
                .push_bind(e.causation.map(|c| id_to_db(c.0)))
                .push_bind(e.source)
                .push_bind(e.priority.name())
                .push_bind(id_to_db(e.timestamp.0))
                .push_bind(row.recorded)
                .push_bind(row.kind.as_str())
                .push_bind(row.payload.as_str());
        });
        qb.push(" RETURNING seq");
        let mut seqs: Vec<i64> = qb
            .build_query_scalar()
            .fetch_all(conn)
            .await
            .map_err(StoreError::db("append events"))?;
        if seqs.len() != rows.len() {
            return Err(StoreError::corrupt(
                "events",
                "seq",
                format!("{} rows inserted, {} returned", rows.len(), seqs.len()),
            ));
        }
        // RETURNING gives no order; `seq` is AUTOINCREMENT, so the rows of one statement
        // got increasing numbers in the order they were inserted.
        seqs.sort_unstable();
        seqs.into_iter()
            .map(|seq| {
                u64::try_from(seq)
                    .map_err(|_| StoreError::corrupt("events", "seq", format!("{seq}")))
            })
            .collect()
    }
}

/// Event rows per INSERT statement: 9 parameters each, far below SQLite's limit of
/// 32,766 parameters per statement.
const EVENT_ROWS_PER_INSERT: usize = 256;

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    const T: &str = "events";
    let seq: i64 = get(row, T, "seq")?;
    let priority: String = get(row, T, "priority")?;
    let payload: String = get(row, T, "payload")?;
    Ok(StoredEvent {
        seq: u64::try_from(seq)
            .map_err(|_| StoreError::corrupt(T, "seq", format!("negative sequence {seq}")))?,
        id: EventId(id_from_db(get(row, T, "event_id")?)),
        correlation: CorrelationId(id_from_db(get(row, T, "correlation")?)),
        causation: get::<Option<i64>>(row, T, "causation")?.map(|c| EventId(id_from_db(c))),
        source: get(row, T, "source")?,
        priority: parse_priority(&priority).ok_or_else(|| {
            StoreError::corrupt(T, "priority", format!("unknown priority `{priority}`"))
        })?,
        timestamp: Timestamp(id_from_db(get(row, T, "bus_ts_ns")?)),
        recorded_at: millis_from_db(T, "recorded_at_ms", get(row, T, "recorded_at_ms")?)?,
        kind: get(row, T, "kind")?,
        payload: serde_json::from_str(&payload).map_err(|e| {
            StoreError::corrupt(T, "payload", format!("not a valid engine event: {e}"))
        })?,
    })
}
