//! Starting, running and stopping the engine.

use crate::config::{Config, Moh};
use crate::driver::{CallRecord, Driver, QueueSettings};
use call_engine_bus::{EventBus, EventBusConfig, Filter, Receiver, TopicSet};
use call_engine_events::{
    topics, AgentEvent, AgentId, AudioSource, EngineEvent, IdAllocator, QueueId,
};
use call_engine_media::{MediaAdapter, MediaConfig, MohSource};
use call_engine_orchestrator as orch;
use call_engine_session::{SessionAdapter, SessionConfig, SipTimers};
use call_engine_store::{hangup_cause_label, AgentRecord, Cdr, QueueRecord, Store, UnixMillis};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or written.
    #[error("store: {0}")]
    Store(#[from] call_engine_store::StoreError),
    /// The SIP adapter could not start (e.g. the address is in use).
    #[error("sip: {0}")]
    Session(#[from] call_engine_session::SessionError),
    /// The media adapter could not start.
    #[error("media: {0}")]
    Media(#[from] call_engine_media::MediaError),
    /// The bus configuration is invalid.
    #[error("bus: {0}")]
    Bus(#[from] call_engine_bus::ConfigError),
    /// The control socket could not be opened.
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
}

/// A running engine.
pub struct Engine {
    bus: EventBus<EngineEvent>,
    session: SessionAdapter,
    media: MediaAdapter,
    store: Store,
    driver: JoinHandle<()>,
    recorder: JoinHandle<()>,
    logger: JoinHandle<()>,
}

/// How long the event log and the call recorder gather what else arrives after a first
/// event or record, so that one transaction carries many: a commit per handful of events
/// was most of the store's cost under load. A crash loses at most this much more.
const STORE_LINGER: Duration = Duration::from_millis(10);

/// Appends every call, agent and queue event to the store's event log, in batches, until
/// the bus closes. A failed write is retried once, then reported (the engine goes on).
async fn log_events(store: Store, mut rx: Receiver<EngineEvent>) {
    const MAX_BATCH: usize = 1024;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    while !closed {
        batch.clear();
        let mut until = None;
        while batch.len() < MAX_BATCH {
            let got = match until {
                None => rx.recv_batch(&mut batch).await,
                Some(t) => match tokio::time::timeout_at(t, rx.recv_batch(&mut batch)).await {
                    Ok(got) => got,
                    Err(_) => break,
                },
            };
            match got {
                // Only Low-priority events can be shed; none of the logged ones are Low.
                Ok(info) if info.missed > 0 => warn!(missed = info.missed, "event log lagged"),
                Ok(_) => {}
                Err(_) => {
                    // Closed (a batch receive reports lag in its `BatchInfo`).
                    closed = true;
                    break;
                }
            }
            if !batch.is_empty() && until.is_none() {
                until = Some(tokio::time::Instant::now() + STORE_LINGER);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut result = store.append_events(batch.iter().map(|e| &**e)).await;
        if result.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            result = store.append_events(batch.iter().map(|e| &**e)).await;
        }
        if let Err(e) = result {
            error!(error = %e, events = batch.len(), "events not appended to the event log");
        }
    }
}

/// Stores the call records as they come, those arriving within [`STORE_LINGER`] of
/// each other in one transaction. If a batch fails, its
/// records are stored one by one, so that one bad record loses only itself.
async fn record_calls(store: Store, mut rx: mpsc::UnboundedReceiver<CallRecord>) {
    const MAX_BATCH: usize = 256;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(r) = rx.recv().await {
        batch.push(to_cdr(r));
        let until = tokio::time::Instant::now() + STORE_LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(r)) => batch.push(to_cdr(r)),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(e) = store.insert_cdrs(&batch).await {
            warn!(error = %e, records = batch.len(), "call records not stored together: one by one");
            for cdr in &batch {
                if let Err(e) = store.insert_cdr(cdr).await {
                    error!(call = %cdr.call_id, error = %e, "call record not stored");
                }
            }
        }
        batch.clear();
    }
}

fn to_cdr(r: CallRecord) -> Cdr {
    Cdr {
        call_id: r.call,
        queue: r.queue,
        caller_user: r.caller.user.to_string(),
        caller_display: r.caller.display_name.map(|d| d.to_string()),
        caller_uri: r.caller.uri.to_string(),
        agent: r.agent,
        entered_queue_at: r.entered_queue_at_ms.map(UnixMillis),
        agent_answered_at: r.answered_at_ms.map(UnixMillis),
        ended_at: UnixMillis(r.ended_at_ms),
        wait_secs: r.wait_secs,
        talk_secs: r.talk_secs,
        disposition: r.disposition,
        hung_up_by: r.hung_up_by,
        hangup_cause: hangup_cause_label(&r.cause),
    }
}

impl Engine {
    /// Starts every component for `config`.
    pub async fn start(config: Config) -> Result<Engine, StartError> {
        let store = Store::open(&config.store_url).await?;
        // Call ids stay unique across restarts: continue after the highest recorded.
        let floor = store.max_call_id().await?.map(|c| c.0).unwrap_or(0);
        let ids = Arc::new(IdAllocator::starting_after(floor));
        for q in &config.queues {
            store
                .upsert_queue(&QueueRecord {
                    name: QueueId::new(&q.name),
                    strategy: q.routing.strategy.name().to_string(),
                    moh: Some(match &q.moh {
                        Moh::Builtin => "builtin".into(),
                        Moh::File(p) => p.display().to_string(),
                    }),
                    ring_timeout_secs: u32::try_from(q.routing.ring_timeout_ms / 1000)
                        .unwrap_or(u32::MAX),
                    settings: serde_json::Value::Null,
                    created_at: UnixMillis(0),
                    updated_at: UnixMillis(0),
                })
                .await?;
        }
        for a in &config.agents {
            store
                .upsert_agent(&AgentRecord {
                    id: AgentId::new(&a.id),
                    display_name: a.id.clone(),
                    queues: a
                        .profile
                        .memberships
                        .iter()
                        .map(|m| m.queue.clone())
                        .collect(),
                    max_calls: u32::from(a.profile.max_calls),
                    created_at: UnixMillis(0),
                    updated_at: UnixMillis(0),
                })
                .await?;
        }

        // A history ring of recent events, for debugging a live engine.
        let bus = EventBus::new(EventBusConfig {
            history_capacity: 4096,
            ..EventBusConfig::default()
        })?;
        let media = MediaAdapter::start(
            MediaConfig {
                address: config.media.address,
                rtp_ports: config.media.rtp_ports.clone(),
                moh: MohSource::Builtin,
                prompts_dir: Some(config.prompts_dir.clone()),
                media_timeout: Duration::from_secs(u64::from(config.media_timeout_secs)),
                ..MediaConfig::default()
            },
            bus.clone(),
            ids.clone(),
        )?;
        let credentials: HashMap<String, String> = config
            .agents
            .iter()
            .map(|a| (a.id.clone(), a.password.clone()))
            .collect();
        if config.sip.t1_ms < 100 {
            warn!(
                key = "sip.t1_ms",
                t1_ms = config.sip.t1_ms,
                "SIP timer T1 below 100 ms: transactions and unACKed answers are given up after 64·T1, too soon for distant phones"
            );
        }
        info!(
            calls_from = %config.sip.calls_from,
            trusted = %config.sip.trusted,
            "SIP: who may place calls, and whose X-Skills / X-Priority headers count"
        );
        let session = SessionAdapter::start(
            SessionConfig {
                udp: config.sip.udp,
                tcp: config.sip.tcp,
                domain: config.sip.domain.clone(),
                credentials,
                timers: SipTimers {
                    t1: Duration::from_millis(u64::from(config.sip.t1_ms)),
                    ..SipTimers::default()
                },
                ring_timeout: timer_c(&config),
                calls_from: config.sip.calls_from.clone(),
                trusted: config.sip.trusted.clone(),
                ..SessionConfig::default()
            },
            bus.clone(),
            ids.clone(),
        )
        .await?;

        let settings: BTreeMap<QueueId, QueueSettings> = config
            .queues
            .iter()
            .map(|q| {
                (
                    QueueId::new(&q.name),
                    QueueSettings {
                        strategy: q.routing.strategy,
                        moh: match &q.moh {
                            Moh::Builtin => AudioSource::BuiltinMusic,
                            Moh::File(p) => AudioSource::File {
                                path: p.display().to_string().into(),
                            },
                        },
                        ring_timeout_ms: q.routing.ring_timeout_ms,
                        business_hours: q.business_hours.clone(),
                        closed_action: q.closed_action.clone(),
                        announce: q.announce.clone(),
                        abandoned_resume_ms: u64::from(q.abandoned_resume_secs) * 1000,
                        service_level_ms: u64::from(q.service_level_secs) * 1000,
                    },
                )
            })
            .collect();
        // An agent's status survives a restart: the last one logged (set from the command
        // line, or automatically) wins over the configured initial status.
        let mut profiles = Vec::with_capacity(config.agents.len());
        for a in &config.agents {
            let mut profile = a.profile.clone();
            let last = store
                .last_event_of(profile.id.correlation(), "agent.status_changed")
                .await?;
            if let Some(EngineEvent::Agent(AgentEvent::StatusChanged { status, .. })) =
                last.map(|e| e.payload)
            {
                info!(agent = %profile.id, ?status, "agent status restored from the event log");
                profile = profile.with_status(status);
            }
            // So do the queue logins and logouts made at run time (from the command
            // line), in the order they were made, over the configured memberships; those
            // of queues no longer configured are skipped.
            let changes = store
                .events_of_kind(profile.id.correlation(), "agent.queue_membership")
                .await?;
            for e in changes {
                let EngineEvent::Agent(AgentEvent::QueueMembership {
                    queue,
                    member,
                    terms,
                    ..
                }) = e.payload
                else {
                    continue;
                };
                if !config.queues.iter().any(|q| q.name == queue.as_str()) {
                    continue;
                }
                profile.memberships.retain(|m| m.queue != queue);
                if member {
                    let terms = terms.unwrap_or_default();
                    profile
                        .memberships
                        .push(orch::Membership::with_terms(queue.clone(), terms));
                }
                info!(agent = %profile.id, %queue, member, "queue membership restored from the event log");
            }
            profiles.push(profile);
        }
        let routing = orch::OrchestratorConfig::new(
            config.queues.iter().map(|q| q.routing.clone()).collect(),
            profiles,
        )
        .with_seed(config.routing_seed);
        let (records_tx, records_rx) = mpsc::unbounded_channel::<CallRecord>();
        // Each call anchors two RTP endpoints, one even port each: the port range is the
        // capacity. Beyond it new calls get 503 + Retry-After instead of failing later.
        let ports = usize::from(config.media.rtp_ports.end() - config.media.rtp_ports.start()) + 1;
        let max_calls = (ports / 2 / 2).max(1);
        // Subscribed before anything runs, so the log misses nothing.
        let log_rx = bus.subscribe(Filter::topics(TopicSet::of(&[
            topics::CALL_EVENTS,
            topics::AGENT_EVENTS,
            topics::QUEUE_EVENTS,
        ])));
        let logger = tokio::spawn(log_events(store.clone(), log_rx));
        let driver = Driver::new(bus.clone(), ids, routing, settings, records_tx, max_calls)
            .with_caller_rules(config.caller_rules.clone())
            .with_numbers(config.numbers.clone())
            .with_sip_stats(session.stats_source())
            .with_reconciler(Duration::from_secs(u64::from(
                config.reconciler.interval_secs,
            )));
        let driver = match &config.control_socket {
            Some(path) => {
                let (tx, rx) = mpsc::unbounded_channel();
                crate::control::listen(path, tx).await?;
                info!(socket = %path.display(), "control socket listening");
                driver.with_control(rx)
            }
            None => driver,
        };
        let driver = tokio::spawn(driver.run());
        let recorder_store = store.clone();
        let recorder = tokio::spawn(record_calls(recorder_store, records_rx));
        info!(
            udp = ?session.udp_addr(),
            tcp = ?session.tcp_addr(),
            store = %config.store_url,
            "call-engine started"
        );
        Ok(Engine {
            bus,
            session,
            media,
            store,
            driver,
            recorder,
            logger,
        })
    }

    /// The bound SIP UDP address.
    pub fn sip_udp(&self) -> Option<SocketAddr> {
        self.session.udp_addr()
    }

    /// The bound SIP TCP address.
    pub fn sip_tcp(&self) -> Option<SocketAddr> {
        self.session.tcp_addr()
    }

    /// The store (call records, agents, queues).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The event bus (for observers and tests).
    pub fn bus(&self) -> &EventBus<EngineEvent> {
        &self.bus
    }

    /// Stops everything: no new calls; pending call records are written; the store is
    /// closed.
    pub async fn shutdown(self) {
        self.session.shutdown().await;
        self.media.shutdown().await;
        // Let the driver flush what is in flight, then stop it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.bus.close();
        let _ = self.driver.await;
        let _ = self.recorder.await;
        let _ = self.logger.await;
        self.store.close().await;
        info!("call-engine stopped");
    }
}

/// Timer C of outbound INVITEs: it only bounds a forgotten leg, so it stays above every
/// queue's ring timeout (which the engine enforces itself), and at least the session
/// adapter's default.
fn timer_c(config: &Config) -> Duration {
    config
        .queues
        .iter()
        .map(|q| Duration::from_millis(q.routing.ring_timeout_ms) + Duration::from_secs(30))
        .fold(SessionConfig::default().ring_timeout, Duration::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use call_engine_events::{CallId, Disposition, HangupCause, Party, Side};
    use call_engine_store::CdrQuery;

    fn record(call: u64, wait_secs: f64) -> CallRecord {
        CallRecord {
            call: CallId(call),
            queue: Some(QueueId::new("support")),
            caller: Party::new("5551234", "sip:5551234@example.test"),
            agent: None,
            entered_queue_at_ms: Some(1_000),
            answered_at_ms: None,
            ended_at_ms: 2_000,
            wait_secs,
            talk_secs: 0.0,
            disposition: Disposition::Abandoned,
            hung_up_by: Side::Customer,
            cause: HangupCause::Normal,
        }
    }

    #[tokio::test]
    async fn records_ready_together_are_stored_and_a_bad_one_loses_only_itself() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        // Queued before the recorder runs: one batch, with an invalid record (a negative
        // wait) in the middle, which fails the batch's transaction.
        tx.send(record(1, 1.0)).unwrap();
        tx.send(record(2, -1.0)).unwrap();
        tx.send(record(3, 2.0)).unwrap();
        drop(tx);
        record_calls(store.clone(), rx).await;
        let stored = store.list_cdrs(&CdrQuery::default()).await.unwrap();
        let mut calls: Vec<u64> = stored.iter().map(|c| c.call_id.0).collect();
        calls.sort_unstable();
        assert_eq!(calls, vec![1, 3]);
        store.close().await;
    }

    #[test]
    fn timer_c_outlasts_every_ring_timeout() {
        let mut config = Config::demo();
        assert_eq!(timer_c(&config), SessionConfig::default().ring_timeout);
        config.queues[0].routing = config.queues[0].routing.clone().with_ring_timeout(600_000);
        assert_eq!(timer_c(&config), Duration::from_secs(630));
    }
}
