//! call-engine-store on its own: opens (creating it if needed) `./data/example.db`, stores
//! a queue and an agent, records a few calls' detail records and one call's events, then
//! prints the newest records, a filtered count and the call's event chain. Run it twice:
//! the records of the first run are still there (call ids continue after the highest
//! stored one).
//!
//! `cargo run -p call-engine-examples --example store_cdrs`

use call_engine_bus::{CorrelationId, Envelope, EventId, Message, Timestamp};
use call_engine_events::{
    AgentId, CallEvent, Disposition, EngineEvent, HangupCause, IdAllocator, Party, QueueId, Side,
};
use call_engine_store::{
    hangup_cause_label, AgentRecord, Cdr, CdrQuery, QueueRecord, Store, StoreError, UnixMillis,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), StoreError> {
    let store = Store::open("sqlite://data/example.db").await?;
    println!(
        "opened {} (journal mode {})",
        store.url(),
        store.journal_mode().await?
    );

    let mut support = QueueRecord::new("support", "longest_idle");
    support.moh = Some("moh/default.wav".into());
    support.settings = serde_json::json!({ "max_wait_secs": 300 });
    store.upsert_queue(&support).await?;
    store
        .upsert_agent(&AgentRecord {
            queues: vec![QueueId::new("support")],
            ..AgentRecord::new("alice", "Alice Anderson")
        })
        .await?;

    // New call ids after whatever a previous run stored.
    let floor = store.max_call_id().await?.map_or(0, |c| c.0);
    let ids = IdAllocator::starting_after(floor);
    let now = UnixMillis::now().as_millis();
    let calls = [
        (
            "+15550001",
            Some("alice"),
            Disposition::Answered,
            Side::Customer,
            HangupCause::Normal,
        ),
        (
            "+15550002",
            None,
            Disposition::Abandoned,
            Side::Customer,
            HangupCause::Cancelled,
        ),
        (
            "+15550003",
            Some("alice"),
            Disposition::Answered,
            Side::Agent,
            HangupCause::Normal,
        ),
        (
            "+15550004",
            None,
            Disposition::NoAgent,
            Side::Engine,
            HangupCause::Status { code: 480 },
        ),
    ];
    let mut first_call = None;
    for (i, (user, agent, disposition, side, cause)) in calls.into_iter().enumerate() {
        let call = ids.call();
        first_call.get_or_insert(call);
        let entered = now - 120_000 + i as u64 * 20_000;
        let answered = agent.map(|_| entered + 8_000);
        let ended = entered + 60_000;
        let cdr = Cdr {
            call_id: call,
            queue: Some(QueueId::new("support")),
            caller_user: user.into(),
            caller_display: None,
            caller_uri: format!("sip:{user}@example.test"),
            agent: agent.map(AgentId::new),
            entered_queue_at: Some(UnixMillis(entered)),
            agent_answered_at: answered.map(UnixMillis),
            ended_at: UnixMillis(ended),
            wait_secs: (answered.unwrap_or(ended) - entered) as f64 / 1000.0,
            talk_secs: answered.map_or(0.0, |a| (ended - a) as f64 / 1000.0),
            disposition,
            hung_up_by: side,
            hangup_cause: hangup_cause_label(&cause),
        };
        println!("insert {call}: {:?}", store.insert_cdr(&cdr).await?);
    }
    // Inserting a record again changes nothing.
    if let Some(call) = first_call {
        if let Some(cdr) = store.get_cdr(call).await? {
            println!("insert {call} again: {:?}", store.insert_cdr(&cdr).await?);
        }
    }

    println!("\nnewest records:");
    let newest = CdrQuery {
        limit: Some(10),
        ..Default::default()
    };
    for c in store.list_cdrs(&newest).await? {
        println!(
            "  {} {:<10} from {:<10} agent {:<6} wait {:>5.1}s talk {:>5.1}s {:?} by {:?} ({})",
            c.call_id,
            c.queue.as_ref().map_or("-", |q| q.as_str()),
            c.caller_user,
            c.agent.as_ref().map_or("-", |a| a.as_str()),
            c.wait_secs,
            c.talk_secs,
            c.disposition,
            c.hung_up_by,
            c.hangup_cause,
        );
    }
    let answered_by_alice = CdrQuery {
        agent: Some(AgentId::new("alice")),
        disposition: Some(Disposition::Answered),
        ..Default::default()
    };
    println!(
        "total {} records, {} answered by alice",
        store.count_cdrs(&CdrQuery::default()).await?,
        store.count_cdrs(&answered_by_alice).await?
    );

    // The event log: a call's chain of events, each caused by the previous one.
    if let Some(call) = first_call {
        let corr = CorrelationId::from(call);
        let payloads = [
            EngineEvent::Call(CallEvent::Created {
                call,
                caller: Party::new("+15550001", "sip:+15550001@example.test"),
                dialed: "support".into(),
            }),
            EngineEvent::Call(CallEvent::Queued {
                call,
                queue: QueueId::new("support"),
                skills: vec![],
            }),
            EngineEvent::Call(CallEvent::Ended {
                call,
                disposition: Disposition::Answered,
                hung_up_by: Side::Customer,
                cause: HangupCause::Normal,
            }),
        ];
        let envelopes: Vec<Envelope<EngineEvent>> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Envelope {
                id: EventId(i as u64 + 1),
                correlation: corr,
                causation: i.checked_sub(1).map(|p| EventId(p as u64 + 1)),
                source: "example",
                priority: payload.priority(),
                timestamp: Timestamp(i as u64 * 1_000_000),
                payload,
            })
            .collect();
        store.append_events(&envelopes).await?;
        println!("\nevents of {call}:");
        for e in store.events_of(corr).await? {
            println!(
                "  #{} {} {:<14} caused by {:<22} {}",
                e.seq,
                e.id,
                e.kind,
                e.causation.map_or("-".to_string(), |c| c.to_string()),
                e.priority
            );
        }
    }

    store.close().await;
    Ok(())
}
