//! call-engine-store against real SQLite files in temporary directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use call_engine_bus::{
    CorrelationId, Envelope, EventBus, EventBusConfig, EventId, Filter, Message, Priority,
    Timestamp,
};
use call_engine_events::{
    AgentEvent, AgentId, AgentStatus, CallEvent, CallId, Disposition, EngineEvent, HangupCause,
    Party, QueueEvent, QueueId, Side,
};
use call_engine_store::{
    hangup_cause_label, AgentRecord, Cdr, CdrInsert, CdrQuery, QueueRecord, Store, StoreError,
    StoreOptions, UnixMillis,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "call-engine-store-{name}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn url(&self, file: &str) -> String {
        format!("sqlite://{}", self.0.join(file).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A raw connection to the file, bypassing the store.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

const T0: u64 = 1_700_000_000_000;

fn full_cdr(call: u64) -> Cdr {
    Cdr {
        call_id: CallId(call),
        queue: Some(QueueId::new("support")),
        caller_user: "+15551234".into(),
        caller_display: Some("Jane \"JD\" Doe ✆".into()),
        caller_uri: "sip:+15551234@example.test".into(),
        agent: Some(AgentId::new("alice")),
        entered_queue_at: Some(UnixMillis(T0)),
        agent_answered_at: Some(UnixMillis(T0 + 12_345)),
        ended_at: UnixMillis(T0 + 98_765),
        wait_secs: 12.345,
        talk_secs: 86.42,
        disposition: Disposition::Answered,
        hung_up_by: Side::Agent,
        hangup_cause: hangup_cause_label(&HangupCause::Normal),
    }
}

fn cdr(call: u64, queue: &str, agent: Option<&str>, d: Disposition, ended: u64) -> Cdr {
    Cdr {
        call_id: CallId(call),
        queue: Some(QueueId::new(queue)),
        caller_user: format!("user{call}"),
        caller_display: None,
        caller_uri: format!("sip:user{call}@example.test"),
        agent: agent.map(AgentId::new),
        entered_queue_at: Some(UnixMillis(ended - 10_000)),
        agent_answered_at: agent.map(|_| UnixMillis(ended - 5_000)),
        ended_at: UnixMillis(ended),
        wait_secs: 5.0,
        talk_secs: if agent.is_some() { 5.0 } else { 0.0 },
        disposition: d,
        hung_up_by: Side::Customer,
        hangup_cause: "normal".into(),
    }
}

#[tokio::test]
async fn open_creates_file_and_parent_dirs_in_wal_mode() {
    let tmp = TempDir::new("open");
    let file = tmp.path().join("a/b/c/engine.db");
    assert!(!file.exists());
    let store = Store::open(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    assert!(file.exists(), "database file created");
    assert_eq!(store.journal_mode().await.unwrap(), "wal");
    store.close().await;

    // WAL is a property of the file: a fresh connection sees it too.
    let mut conn = raw(&file).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for t in ["agent_queues", "agents", "cdrs", "events", "queues"] {
        assert!(tables.iter().any(|n| n == t), "table {t} in {tables:?}");
    }
}

#[tokio::test]
async fn sqlite_colon_form_and_relative_parent_work() {
    let tmp = TempDir::new("colon");
    let file = tmp.path().join("x.db");
    let store = Store::open(&format!("sqlite:{}", file.display()))
        .await
        .unwrap();
    assert!(file.exists());
    store.close().await;
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let tmp = TempDir::new("migrate");
    let url = tmp.url("m.db");
    let store = Store::open(&url).await.unwrap();
    store
        .upsert_queue(&QueueRecord::new("support", "longest_idle"))
        .await
        .unwrap();
    store.close().await;

    // Open twice more, one of them while another store is open on the same file.
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    assert_eq!(a.list_queues().await.unwrap().len(), 1);
    assert_eq!(b.list_queues().await.unwrap().len(), 1);
    a.close().await;
    b.close().await;

    let mut conn = raw(&tmp.path().join("m.db")).await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // Each migration once (0001 the schema, 0002 the event log's index by kind).
    assert_eq!(applied, 2);
}

#[tokio::test]
async fn memory_stores_are_private() {
    let a = Store::open("sqlite::memory:").await.unwrap();
    let b = Store::open("sqlite::memory:").await.unwrap();
    a.insert_cdr(&full_cdr(1)).await.unwrap();
    assert_eq!(a.count_cdrs(&CdrQuery::default()).await.unwrap(), 1);
    assert_eq!(b.count_cdrs(&CdrQuery::default()).await.unwrap(), 0);
    assert_eq!(a.journal_mode().await.unwrap(), "memory");
}

#[tokio::test]
async fn cdr_round_trip_with_every_field() {
    let tmp = TempDir::new("cdr");
    let store = Store::open(&tmp.url("c.db")).await.unwrap();
    let full = full_cdr(0x7fff_ffff_ffff_fff0);
    let sparse = Cdr {
        call_id: CallId(7),
        queue: None,
        caller_user: String::new(),
        caller_display: None,
        caller_uri: "sip:anonymous@anonymous.invalid".into(),
        agent: None,
        entered_queue_at: None,
        agent_answered_at: None,
        ended_at: UnixMillis(0),
        wait_secs: 0.0,
        talk_secs: 0.0,
        disposition: Disposition::Failed,
        hung_up_by: Side::Engine,
        hangup_cause: hangup_cause_label(&HangupCause::Failure {
            detail: "media timeout".into(),
        }),
    };
    assert_eq!(store.insert_cdr(&full).await.unwrap(), CdrInsert::Inserted);
    assert_eq!(
        store.insert_cdr(&sparse).await.unwrap(),
        CdrInsert::Inserted
    );
    assert_eq!(
        store.get_cdr(full.call_id).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        store.get_cdr(sparse.call_id).await.unwrap(),
        Some(sparse.clone())
    );
    assert_eq!(store.get_cdr(CallId(8)).await.unwrap(), None);
    assert_eq!(sparse.hangup_cause, "failure: media timeout");

    // Every disposition and side survives.
    let mut n = 100;
    for d in [
        Disposition::Answered,
        Disposition::Abandoned,
        Disposition::NoAgent,
        Disposition::Failed,
    ] {
        for s in [Side::Customer, Side::Agent, Side::Engine] {
            let mut c = full_cdr(n);
            c.disposition = d;
            c.hung_up_by = s;
            store.insert_cdr(&c).await.unwrap();
            assert_eq!(store.get_cdr(CallId(n)).await.unwrap(), Some(c));
            n += 1;
        }
    }
    assert_eq!(store.max_call_id().await.unwrap(), Some(full.call_id));
    store.close().await;
}

#[tokio::test]
async fn same_call_twice_is_one_row_first_write_wins() {
    let tmp = TempDir::new("dup");
    let store = Store::open(&tmp.url("d.db")).await.unwrap();
    let first = full_cdr(42);
    let mut second = full_cdr(42);
    second.disposition = Disposition::Abandoned;
    second.talk_secs = 0.0;
    assert_eq!(store.insert_cdr(&first).await.unwrap(), CdrInsert::Inserted);
    assert_eq!(
        store.insert_cdr(&second).await.unwrap(),
        CdrInsert::AlreadyExists
    );
    assert_eq!(
        store.insert_cdr(&first).await.unwrap(),
        CdrInsert::AlreadyExists
    );
    assert_eq!(store.count_cdrs(&CdrQuery::default()).await.unwrap(), 1);
    assert_eq!(
        store.get_cdr(CallId(42)).await.unwrap(),
        Some(first.clone())
    );

    // Batch: duplicates within the batch and with stored rows.
    let out = store
        .insert_cdrs(&[full_cdr(43), full_cdr(42), full_cdr(43), full_cdr(44)])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            CdrInsert::Inserted,
            CdrInsert::AlreadyExists,
            CdrInsert::AlreadyExists,
            CdrInsert::Inserted
        ]
    );
    assert_eq!(store.count_cdrs(&CdrQuery::default()).await.unwrap(), 3);
    store.close().await;
}

#[tokio::test]
async fn invalid_cdrs_are_refused_and_batches_are_atomic() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        let mut c = full_cdr(1);
        c.wait_secs = bad;
        let err = store.insert_cdr(&c).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { .. }),
            "{bad}: {err}"
        );
    }
    let mut c = full_cdr(2);
    c.ended_at = UnixMillis(u64::MAX);
    assert!(matches!(
        store.insert_cdr(&c).await,
        Err(StoreError::InvalidInput { .. })
    ));
    let mut bad = full_cdr(3);
    bad.talk_secs = f64::NAN;
    assert!(store.insert_cdrs(&[full_cdr(4), bad]).await.is_err());
    assert_eq!(store.count_cdrs(&CdrQuery::default()).await.unwrap(), 0);
}

#[tokio::test]
async fn list_filters_ordering_paging_and_count() {
    let tmp = TempDir::new("list");
    let store = Store::open(&tmp.url("l.db")).await.unwrap();
    use Disposition::*;
    let rows = [
        cdr(1, "support", Some("alice"), Answered, T0 + 1_000),
        cdr(2, "support", None, Abandoned, T0 + 2_000),
        cdr(3, "sales", Some("bob"), Answered, T0 + 3_000),
        cdr(4, "sales", None, NoAgent, T0 + 4_000),
        cdr(5, "support", Some("bob"), Answered, T0 + 5_000),
        cdr(6, "support", Some("alice"), Answered, T0 + 6_000),
        cdr(7, "sales", None, Failed, T0 + 7_000),
        // Same end time as 7: ties break on call id, newest (highest) first.
        cdr(8, "support", None, Abandoned, T0 + 7_000),
    ];
    // Insert out of order: the listing order must not depend on insertion order.
    for c in rows.iter().rev() {
        store.insert_cdr(c).await.unwrap();
    }
    let ids = |v: Vec<Cdr>| v.into_iter().map(|c| c.call_id.0).collect::<Vec<_>>();
    let all = CdrQuery::default();

    assert_eq!(
        ids(store.list_cdrs(&all).await.unwrap()),
        vec![8, 7, 6, 5, 4, 3, 2, 1]
    );
    assert_eq!(store.count_cdrs(&all).await.unwrap(), 8);

    let q = CdrQuery {
        queue: Some(QueueId::new("support")),
        ..Default::default()
    };
    assert_eq!(ids(store.list_cdrs(&q).await.unwrap()), vec![8, 6, 5, 2, 1]);
    assert_eq!(store.count_cdrs(&q).await.unwrap(), 5);

    let q = CdrQuery {
        agent: Some(AgentId::new("bob")),
        ..Default::default()
    };
    assert_eq!(ids(store.list_cdrs(&q).await.unwrap()), vec![5, 3]);

    let q = CdrQuery {
        disposition: Some(Abandoned),
        ..Default::default()
    };
    assert_eq!(ids(store.list_cdrs(&q).await.unwrap()), vec![8, 2]);
    assert_eq!(store.count_cdrs(&q).await.unwrap(), 2);

    // since inclusive, until exclusive.
    let q = CdrQuery {
        since: Some(UnixMillis(T0 + 3_000)),
        until: Some(UnixMillis(T0 + 6_000)),
        ..Default::default()
    };
    assert_eq!(ids(store.list_cdrs(&q).await.unwrap()), vec![5, 4, 3]);
    assert_eq!(store.count_cdrs(&q).await.unwrap(), 3);

    // Combined.
    let q = CdrQuery {
        since: Some(UnixMillis(T0 + 2_000)),
        queue: Some(QueueId::new("support")),
        agent: Some(AgentId::new("alice")),
        disposition: Some(Answered),
        ..Default::default()
    };
    assert_eq!(ids(store.list_cdrs(&q).await.unwrap()), vec![6]);

    // Paging: limit/offset apply to listing, not counting.
    let page = |limit, offset| CdrQuery {
        limit: Some(limit),
        offset,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_cdrs(&page(3, 0)).await.unwrap()),
        vec![8, 7, 6]
    );
    assert_eq!(
        ids(store.list_cdrs(&page(3, 3)).await.unwrap()),
        vec![5, 4, 3]
    );
    assert_eq!(ids(store.list_cdrs(&page(3, 6)).await.unwrap()), vec![2, 1]);
    assert!(store.list_cdrs(&page(3, 9)).await.unwrap().is_empty());
    assert!(store.list_cdrs(&page(0, 0)).await.unwrap().is_empty());
    let offset_only = CdrQuery {
        offset: 6,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_cdrs(&offset_only).await.unwrap()),
        vec![2, 1]
    );
    assert_eq!(store.count_cdrs(&page(3, 3)).await.unwrap(), 8);

    // No match.
    let q = CdrQuery {
        queue: Some(QueueId::new("nope")),
        ..Default::default()
    };
    assert!(store.list_cdrs(&q).await.unwrap().is_empty());
    assert_eq!(store.count_cdrs(&q).await.unwrap(), 0);

    // Values that look like SQL stay values.
    let q = CdrQuery {
        queue: Some(QueueId::new("support' OR '1'='1")),
        ..Default::default()
    };
    assert_eq!(store.count_cdrs(&q).await.unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn cdrs_survive_a_restart() {
    let tmp = TempDir::new("restart");
    let url = tmp.url("r.db");
    let store = Store::open(&url).await.unwrap();
    let mut written = vec![full_cdr(1), full_cdr(2)];
    written[1].disposition = Disposition::NoAgent;
    written[1].agent = None;
    written[1].agent_answered_at = None;
    written[1].ended_at = UnixMillis(T0 + 200_000);
    for c in &written {
        store.insert_cdr(c).await.unwrap();
    }
    let before = store.list_cdrs(&CdrQuery::default()).await.unwrap();
    store.close().await;
    assert!(matches!(
        store.get_cdr(CallId(1)).await,
        Err(StoreError::Closed)
    ));

    let reopened = Store::open(&url).await.unwrap();
    let after = reopened.list_cdrs(&CdrQuery::default()).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.len(), 2);
    assert_eq!(
        reopened.get_cdr(CallId(1)).await.unwrap(),
        Some(written[0].clone())
    );
    assert_eq!(
        reopened.get_cdr(CallId(2)).await.unwrap(),
        Some(written[1].clone())
    );
    reopened.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_never_hit_a_locked_database() {
    let tmp = TempDir::new("concurrent");
    let store = Store::open_with(
        &tmp.url("conc.db"),
        StoreOptions {
            read_connections: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100u64 {
                let id = t * 1_000 + i;
                let c = cdr(id, "support", Some("alice"), Disposition::Answered, T0 + id);
                assert_eq!(store.insert_cdr(&c).await?, CdrInsert::Inserted);
                // Readers run alongside the writers.
                if i % 25 == 0 {
                    store.count_cdrs(&CdrQuery::default()).await?;
                }
            }
            Ok::<_, StoreError>(())
        }));
    }
    // Agents and events written concurrently as well.
    let side = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .upsert_queue(&QueueRecord::new("support", "round_robin"))
                .await?;
            for i in 0..20 {
                let mut a = AgentRecord::new(format!("agent{i}").as_str(), "x");
                a.queues = vec![QueueId::new("support")];
                store.upsert_agent(&a).await?;
            }
            Ok::<_, StoreError>(())
        })
    };
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    side.await.unwrap().unwrap();
    assert_eq!(store.count_cdrs(&CdrQuery::default()).await.unwrap(), 800);
    assert_eq!(store.list_agents().await.unwrap().len(), 20);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_wait_for_each_other() {
    // Two stores on one file behave like two processes: two writer connections that
    // contend for SQLite's lock, resolved by busy_timeout and BEGIN IMMEDIATE.
    let tmp = TempDir::new("two-writers");
    let url = tmp.url("shared.db");
    let a = Store::open(&url).await.unwrap();
    let b = Store::open(&url).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let id = t * 1_000 + i;
                if i % 10 == 0 {
                    // Multi-statement transactions too.
                    let batch: Vec<Cdr> = (0..5)
                        .map(|k| cdr(id * 10 + 100_000 + k, "q", None, Disposition::Abandoned, T0))
                        .collect();
                    store.insert_cdrs(&batch).await?;
                }
                store
                    .insert_cdr(&cdr(id, "q", None, Disposition::Abandoned, T0 + id))
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        a.count_cdrs(&CdrQuery::default()).await.unwrap(),
        8 * 50 + 8 * 5 * 5
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn queues_and_agents_round_trip() {
    let tmp = TempDir::new("agents");
    let store = Store::open(&tmp.url("a.db")).await.unwrap();

    let mut support = QueueRecord::new("support", "longest_idle");
    support.moh = Some("moh/default.wav".into());
    support.ring_timeout_secs = 15;
    support.settings = serde_json::json!({"max_wait_secs": 300, "skills": ["english"]});
    let stored = store.upsert_queue(&support).await.unwrap();
    assert!(stored.created_at.as_millis() > 0);
    assert_eq!(stored.created_at, stored.updated_at);
    let got = store
        .get_queue(&QueueId::new("support"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, stored);
    assert_eq!(got.settings["skills"][0], "english");
    let sales = store
        .upsert_queue(&QueueRecord::new("sales", "round_robin"))
        .await
        .unwrap();
    assert_eq!(sales.moh, None);
    assert_eq!(
        store
            .list_queues()
            .await
            .unwrap()
            .iter()
            .map(|q| q.name.as_str().to_owned())
            .collect::<Vec<_>>(),
        vec!["sales", "support"]
    );
    // Update keeps created_at.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut changed = support.clone();
    changed.strategy = "round_robin".into();
    changed.moh = None;
    let updated = store.upsert_queue(&changed).await.unwrap();
    assert_eq!(updated.created_at, stored.created_at);
    assert!(updated.updated_at > stored.updated_at);
    let got = store
        .get_queue(&QueueId::new("support"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.strategy, "round_robin");
    assert_eq!(got.moh, None);
    assert_eq!(store.get_queue(&QueueId::new("nope")).await.unwrap(), None);

    // Agents.
    let mut alice = AgentRecord::new("alice", "Alice A.");
    alice.queues = vec![QueueId::new("support"), QueueId::new("sales")];
    alice.max_calls = 2;
    let a1 = store.upsert_agent(&alice).await.unwrap();
    assert_eq!(a1.queues, alice.queues, "order kept");
    let bob = store
        .upsert_agent(&AgentRecord {
            queues: vec![QueueId::new("sales")],
            ..AgentRecord::new("bob", "Bob B.")
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_agent(&AgentId::new("alice")).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(
        store.list_agents().await.unwrap(),
        vec![a1.clone(), bob.clone()]
    );
    assert_eq!(
        store
            .list_agents_in_queue(&QueueId::new("support"))
            .await
            .unwrap(),
        vec![a1.clone()]
    );
    assert_eq!(
        store
            .list_agents_in_queue(&QueueId::new("sales"))
            .await
            .unwrap(),
        vec![a1.clone(), bob.clone()]
    );

    // Update: memberships replaced, created_at kept.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut alice2 = alice.clone();
    alice2.display_name = "Alice Anderson".into();
    alice2.queues = vec![QueueId::new("sales")];
    let a2 = store.upsert_agent(&alice2).await.unwrap();
    assert_eq!(a2.created_at, a1.created_at);
    assert!(a2.updated_at > a1.updated_at);
    let got = store
        .get_agent(&AgentId::new("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.display_name, "Alice Anderson");
    assert_eq!(got.queues, vec![QueueId::new("sales")]);
    assert!(store
        .list_agents_in_queue(&QueueId::new("support"))
        .await
        .unwrap()
        .is_empty());

    // Refused: unknown queue, duplicate queue, empty id. Nothing changes.
    let mut bad = alice2.clone();
    bad.queues = vec![QueueId::new("sales"), QueueId::new("typo")];
    let err = store.upsert_agent(&bad).await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownQueue { .. }), "{err}");
    assert!(err.to_string().contains("typo"), "{err}");
    bad.queues = vec![QueueId::new("sales"), QueueId::new("sales")];
    assert!(matches!(
        store.upsert_agent(&bad).await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert!(matches!(
        store.upsert_agent(&AgentRecord::new("", "nobody")).await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert!(matches!(
        store.upsert_queue(&QueueRecord::new("", "x")).await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert_eq!(
        store
            .get_agent(&AgentId::new("alice"))
            .await
            .unwrap()
            .unwrap()
            .queues,
        vec![QueueId::new("sales")]
    );

    // Deleting a queue removes memberships; deleting an agent removes it.
    assert!(store.delete_queue(&QueueId::new("sales")).await.unwrap());
    assert!(!store.delete_queue(&QueueId::new("sales")).await.unwrap());
    assert!(store
        .get_agent(&AgentId::new("bob"))
        .await
        .unwrap()
        .unwrap()
        .queues
        .is_empty());
    assert!(store.delete_agent(&AgentId::new("alice")).await.unwrap());
    assert!(!store.delete_agent(&AgentId::new("alice")).await.unwrap());
    assert_eq!(store.get_agent(&AgentId::new("alice")).await.unwrap(), None);
    assert_eq!(store.list_agents().await.unwrap().len(), 1);

    // Configuration survives a restart too.
    let url = tmp.url("a.db");
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.list_agents().await.unwrap().len(), 1);
    assert_eq!(store.list_queues().await.unwrap().len(), 1);
    store.close().await;
}

fn envelope(
    id: u64,
    correlation: CorrelationId,
    causation: Option<u64>,
    payload: EngineEvent,
) -> Envelope<EngineEvent> {
    Envelope {
        id: EventId(id),
        correlation,
        causation: causation.map(EventId),
        source: "test",
        priority: payload.priority(),
        timestamp: Timestamp(id.wrapping_mul(1_000)),
        payload,
    }
}

#[tokio::test]
async fn event_log_appends_and_reads_back_in_order() {
    let tmp = TempDir::new("events");
    let store = Store::open(&tmp.url("e.db")).await.unwrap();
    let call = CallId(77);
    let corr = CorrelationId::from(call);
    let created = envelope(
        10,
        corr,
        None,
        EngineEvent::Call(CallEvent::Created {
            call,
            caller: Party::new("+15551234", "sip:+15551234@example.test"),
            dialed: "support".into(),
        }),
    );
    let queued = envelope(
        11,
        corr,
        Some(10),
        EngineEvent::Call(CallEvent::Queued {
            call,
            queue: QueueId::new("support"),
            skills: vec![],
        }),
    );
    let ended = envelope(
        12,
        corr,
        Some(11),
        EngineEvent::Call(CallEvent::Ended {
            call,
            disposition: Disposition::Abandoned,
            hung_up_by: Side::Customer,
            cause: HangupCause::Cancelled,
        }),
    );
    // An agent event (correlation with the top bit set) interleaved.
    let alice = AgentId::new("alice");
    let status = envelope(
        u64::MAX,
        alice.correlation(),
        None,
        EngineEvent::Agent(AgentEvent::StatusChanged {
            agent: alice.clone(),
            status: AgentStatus::OnBreak {
                reason: "lunch".into(),
            },
        }),
    );

    let s1 = store.append_event(&created).await.unwrap();
    let s2 = store.append_event(&status).await.unwrap();
    let batch = store
        .append_events(&[queued.clone(), ended.clone()])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert!(s1 < s2 && s2 < batch[0] && batch[0] < batch[1]);
    assert!(store.append_events(&[]).await.unwrap().is_empty());

    let log = store.events_of(corr).await.unwrap();
    assert_eq!(log.len(), 3);
    for (stored, sent) in log.iter().zip([&created, &queued, &ended]) {
        assert_eq!(stored.id, sent.id);
        assert_eq!(stored.correlation, sent.correlation);
        assert_eq!(stored.causation, sent.causation);
        assert_eq!(stored.source, sent.source);
        assert_eq!(stored.priority, sent.priority);
        assert_eq!(stored.timestamp, sent.timestamp);
        assert_eq!(stored.payload, sent.payload);
        assert!(stored.recorded_at.as_millis() > 0);
    }
    assert_eq!(
        log.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["call.created", "call.queued", "call.ended"]
    );
    // The causation chain is intact: each event names the previous one.
    assert_eq!(log[1].causation, Some(log[0].id));
    assert_eq!(log[2].causation, Some(log[1].id));
    assert_eq!(log[0].priority, Priority::Critical);

    let agent_log = store.events_of(alice.correlation()).await.unwrap();
    assert_eq!(agent_log.len(), 1);
    assert_eq!(agent_log[0].id, EventId(u64::MAX));
    assert_eq!(agent_log[0].payload, status.payload);
    assert_eq!(agent_log[0].kind, "agent.status_changed");
    assert!(store.events_of(CorrelationId(5)).await.unwrap().is_empty());
    // The latest event of a kind, per correlation.
    let last = store
        .last_event_of(alice.correlation(), "agent.status_changed")
        .await
        .unwrap()
        .expect("logged");
    assert_eq!(last.payload, status.payload);
    let last_call = store
        .last_event_of(corr, "call.queued")
        .await
        .unwrap()
        .expect("logged");
    assert_eq!(last_call.id, queued.id);
    assert!(store
        .last_event_of(corr, "agent.status_changed")
        .await
        .unwrap()
        .is_none());
    // Every event of a kind, per correlation, in append order.
    let of_kind = store.events_of_kind(corr, "call.queued").await.unwrap();
    assert_eq!(of_kind.len(), 1);
    assert_eq!(of_kind[0].id, queued.id);
    assert!(store
        .events_of_kind(alice.correlation(), "call.queued")
        .await
        .unwrap()
        .is_empty());

    // The log survives a restart, and new appends continue the sequence.
    let url = tmp.url("e.db");
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.events_of(corr).await.unwrap(), log);
    let s5 = store.append_event(&created).await.unwrap();
    assert!(s5 > batch[1]);
    store.close().await;
}

#[tokio::test]
async fn a_large_batch_is_appended_in_order_across_statements() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let corr = CorrelationId(7);
    // More events than one INSERT statement carries (256), after one appended alone.
    let first = store
        .append_event(&envelope(
            1,
            corr,
            None,
            EngineEvent::Queue(QueueEvent::CallerJoined {
                queue: QueueId::new("support"),
                call: CallId(7),
                position: 1,
            }),
        ))
        .await
        .unwrap();
    let batch: Vec<_> = (0..600u64)
        .map(|i| {
            envelope(
                100 + i,
                corr,
                Some(99 + i),
                EngineEvent::Queue(QueueEvent::CallerJoined {
                    queue: QueueId::new("support"),
                    call: CallId(7),
                    position: u32::try_from(i).unwrap(),
                }),
            )
        })
        .collect();
    let seqs = store.append_events(&batch).await.unwrap();
    assert_eq!(seqs.len(), 600);
    assert!(seqs[0] > first);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive, in order"
    );
    let log = store.events_of(corr).await.unwrap();
    assert_eq!(log.len(), 601);
    for ((stored, sent), seq) in log[1..].iter().zip(&batch).zip(&seqs) {
        assert_eq!(stored.seq, *seq);
        assert_eq!(stored.id, sent.id);
        assert_eq!(stored.causation, sent.causation);
        assert_eq!(stored.payload, sent.payload);
    }
    store.close().await;
}

#[tokio::test]
async fn event_log_records_what_the_bus_delivers() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let bus = EventBus::<EngineEvent>::new(EventBusConfig::default()).unwrap();
    let mut rx = bus.subscribe(Filter::all());
    let tx = bus.publisher("orchestrator");
    let call = CallId(9);
    let corr = CorrelationId::from(call);
    let first = tx
        .try_publish(
            corr,
            None,
            EngineEvent::Call(CallEvent::Queued {
                call,
                queue: QueueId::new("support"),
                skills: vec![],
            }),
        )
        .unwrap();
    tx.try_publish(
        corr,
        Some(first),
        EngineEvent::Call(CallEvent::Offered {
            call,
            agent: AgentId::new("alice"),
        }),
    )
    .unwrap();
    let mut received = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        received.push(ev);
    }
    assert_eq!(received.len(), 2);
    store
        .append_events(received.iter().map(|e| &**e))
        .await
        .unwrap();
    let log = store.events_of(corr).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].id, first);
    assert_eq!(log[1].causation, Some(first));
    assert_eq!(log[1].source, "orchestrator");
    assert_eq!(log[1].timestamp, received[1].timestamp);
}

#[tokio::test]
async fn bad_urls_are_clear_errors() {
    let err = Store::open("garbage").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("garbage") && msg.contains("scheme"), "{msg}");

    let err = Store::open("mysql://db.example/x").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedScheme { .. }), "{err}");
    assert!(err.to_string().contains("`mysql`"), "{err}");

    for url in [
        "postgres://engine:s3cret@db.example/engine",
        "postgresql://db.example/engine",
    ] {
        let err = Store::open(url).await.unwrap_err();
        assert!(matches!(err, StoreError::NotSupportedYet { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("not supported yet"), "{msg}");
        assert!(msg.contains("postgres"), "{msg}");
        assert!(!msg.contains("s3cret"), "password leaked: {msg}");
    }

    for url in ["", "sqlite://", "sqlite://x.db?mode=ro", "/tmp/x.db"] {
        let err = Store::open(url).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{url}: {err}");
    }

    // A path whose parent cannot be a directory.
    let tmp = TempDir::new("badpath");
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"not a dir").unwrap();
    let err = Store::open(&format!("sqlite://{}/sub/x.db", blocker.display()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");

    // A file that is not a database.
    let err = Store::open(&format!("sqlite://{}", blocker.display()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Open { .. } | StoreError::Migrate(_)),
        "{err}"
    );

    assert!(matches!(
        Store::open_with(
            "sqlite::memory:",
            StoreOptions {
                read_connections: 0,
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let tmp = TempDir::new("corrupt");
    let file = tmp.path().join("x.db");
    let store = Store::open(&tmp.url("x.db")).await.unwrap();
    store.insert_cdr(&full_cdr(1)).await.unwrap();
    store.insert_cdr(&full_cdr(2)).await.unwrap();
    store
        .upsert_queue(&QueueRecord::new("support", "x"))
        .await
        .unwrap();
    let corr = CorrelationId(3);
    store
        .append_event(&envelope(
            1,
            corr,
            None,
            EngineEvent::Call(CallEvent::Offered {
                call: CallId(3),
                agent: AgentId::new("a"),
            }),
        ))
        .await
        .unwrap();

    let mut conn = raw(&file).await;
    for sql in [
        "UPDATE cdrs SET disposition = 'teleported' WHERE call_id = 1",
        "UPDATE cdrs SET ended_at_ms = -5 WHERE call_id = 2",
        "UPDATE queues SET settings = '{not json'",
        "UPDATE events SET payload = '{\"domain\":\"nope\"}'",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }

    let err = store.get_cdr(CallId(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                column: "disposition",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("teleported"), "{err}");
    let err = store.get_cdr(CallId(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                column: "ended_at_ms",
                ..
            }
        ),
        "{err}"
    );
    assert!(store.list_cdrs(&CdrQuery::default()).await.is_err());
    assert!(matches!(
        store.list_queues().await,
        Err(StoreError::Corrupt {
            column: "settings",
            ..
        })
    ));
    assert!(matches!(
        store.events_of(corr).await,
        Err(StoreError::Corrupt {
            column: "payload",
            ..
        })
    ));
    // A column of the wrong type.
    sqlx::query("UPDATE cdrs SET wait_secs = 'slow' WHERE call_id = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE cdrs SET disposition = 'answered' WHERE call_id = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.get_cdr(CallId(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                column: "wait_secs",
                ..
            }
        ),
        "{err}"
    );
    store.close().await;
}

#[tokio::test]
async fn closed_store_refuses_work() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let clone = store.clone();
    store.close().await;
    assert!(matches!(
        clone.insert_cdr(&full_cdr(1)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(clone.list_agents().await, Err(StoreError::Closed)));
}
