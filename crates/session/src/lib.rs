//! # call-engine-session
//!
//! The SIP adapter of call-engine, and the only crate that knows SIP. It turns what
//! phones and trunks do (REGISTER, INVITE, CANCEL, BYE, re-INVITE, INFO, REFER) into
//! [`SessionEvent`](call_engine_events::SessionEvent)s on the bus, and executes the
//! [`SessionCommand`](call_engine_events::SessionCommand)s other components publish
//! (answer, reject, call an agent, cancel, hang up, probe a contact or a dialog).
//!
//! It is built on **rvoip-sip-core 0.4.0** (the parser, the stream framing and the SDP
//! types of the rvoip project) with its own small stack on tokio: UDP and TCP
//! transports, RFC 3261 transactions (retransmissions and timers A–K), dialogs, a
//! registrar with MD5 digest authentication. See the crate README for why the
//! high-level `rvoip-sip` API is not used.
//!
//! ## Events and commands
//!
//! Every session (SIP dialog, or INVITE that never became one) ends with exactly one
//! terminal event: `Rejected` for an outbound INVITE that failed (non-2xx final,
//! Timer B, transport error), `Terminated` for everything else (BYE either way,
//! CANCEL, an inbound call the engine rejected or hung up before answering, no ACK,
//! shutdown). `Answered` reports the far end answering one of *our* INVITEs; an inbound
//! leg is answered by the engine's `Answer`, and the caller's ACK of it emits
//! `Confirmed` (the first proof that the INVITE's source is the caller). Events that result
//! from a command carry its event id as causation; the correlation id is the call's
//! (`EngineEvent::correlation`), or the agent's for registrations.
//!
//! ## Example
//!
//! ```no_run
//! use call_engine_bus::{EventBus, EventBusConfig, Filter};
//! use call_engine_events::{topics, EngineEvent, IdAllocator};
//! use call_engine_session::{SessionAdapter, SessionConfig};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = EventBus::<EngineEvent>::new(EventBusConfig::default())?;
//! let mut events = bus.subscribe(Filter::topic(topics::SESSION_EVENTS));
//! let mut config = SessionConfig::new("callcenter.example");
//! config.udp = Some("0.0.0.0:5060".parse()?);
//! config.tcp = Some("0.0.0.0:5060".parse()?);
//! config.credentials.insert("alice".into(), "secret".into());
//! let sip = SessionAdapter::start(config, bus.clone(), Arc::new(IdAllocator::new())).await?;
//! while let Ok(ev) = events.recv().await {
//!     println!("{:?}", ev.payload); // Registered, IncomingCall, ...
//! #   break;
//! }
//! sip.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod core;
mod error;
mod msg;
mod publish;
mod raw;
mod registrar;
mod sdp;
mod stats;
mod timer;
mod transport;

pub use config::{parse_network, Networks, SessionConfig, SipTimers, TcpLimits};
pub use error::SessionError;
pub use ipnet::IpNet;
pub use registrar::{Binding, Bindings};
pub use stats::{SessionStats, SessionStatsSource};
pub use transport::Transport;

use call_engine_bus::{EventBus, Filter};
use call_engine_events::{topics, EngineEvent, IdAllocator};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Messages received and not yet taken by the core, at most: past it the readers wait.
const INBOUND_QUEUE: usize = 4096;

/// The running session adapter: its sockets, its tasks and a read view of the
/// registrations. Stop it with [`SessionAdapter::shutdown`]; dropping it stops the
/// tasks abruptly.
pub struct SessionAdapter {
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    bindings: Bindings,
    stats: Arc<stats::Stats>,
    transports: Arc<transport::Transports>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    core: Option<JoinHandle<()>>,
    publisher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SessionAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAdapter")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

impl SessionAdapter {
    /// Validates `config`, binds UDP and TCP, and starts the transport readers, the
    /// core (transactions, dialogs, registrar, timers; it also consumes the
    /// `SessionCommand`s on [`topics::SESSION_COMMANDS`]). Session events are
    /// published with source `"session"`. Must be called within a tokio runtime.
    pub async fn start(
        config: SessionConfig,
        bus: EventBus<EngineEvent>,
        ids: Arc<IdAllocator>,
    ) -> Result<SessionAdapter, SessionError> {
        config.validate()?;
        let cfg = Arc::new(config);
        let stats = Arc::new(stats::Stats::default());
        // Subscribe first: no command published after `start` returns is missed.
        let commands_rx = bus.subscribe(Filter::topic(topics::SESSION_COMMANDS));
        // Bounded: a reader waits while the core is this far behind (TCP flow control
        // engages, UDP datagrams wait in the socket's buffer, the kernel drops the rest).
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let transports = transport::Transports::start(
            cfg.udp,
            cfg.tcp,
            inbound_tx,
            stats.clone(),
            cfg.timers.timeout().min(Duration::from_secs(10)),
            cfg.user_agent.clone(),
            cfg.tcp_limits.clone(),
        )
        .await?;
        let (emitter, publisher) = publish::start(
            bus.publisher("session"),
            stats.clone(),
            cfg.max_pending_events,
        );

        let registrar = registrar::Registrar::default();
        let bindings = registrar.view();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let core = core::Core::new(
            cfg.clone(),
            transports.clone(),
            ids,
            emitter,
            stats.clone(),
            registrar,
        );
        let core = tokio::spawn(core.run(core::CoreInputs {
            inbound: inbound_rx,
            commands: commands_rx,
            shutdown: shutdown_rx,
        }));
        info!(udp = ?transports.udp_addr, tcp = ?transports.tcp_addr, domain = %cfg.domain, "session adapter started");
        Ok(SessionAdapter {
            udp_addr: transports.udp_addr,
            tcp_addr: transports.tcp_addr,
            bindings,
            stats,
            transports,
            shutdown_tx: Some(shutdown_tx),
            core: Some(core),
            publisher: Some(publisher),
        })
    }

    /// The bound UDP address (with the actual port when 0 was configured).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The bound TCP address (with the actual port when 0 was configured).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// A read handle on the current registrations (agent → contacts).
    pub fn bindings(&self) -> Bindings {
        self.bindings.clone()
    }

    /// A snapshot of the adapter's counters.
    pub fn stats(&self) -> SessionStats {
        self.stats.snapshot()
    }

    /// A handle that reads the adapter's counters, for another component to report
    /// them (it outlives nothing: it reads the same counters).
    pub fn stats_source(&self) -> SessionStatsSource {
        SessionStatsSource(self.stats.clone())
    }

    /// Stops cleanly: live sessions are ended (BYE, CANCEL or 503, sent once) and report
    /// `Terminated { cause: Shutdown }`, queued events are published, sockets close.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(()); // the core may already have stopped (bus closed)
        }
        if let Some(core) = self.core.take() {
            if let Err(e) = core.await {
                error!(error = %e, "session core task failed");
            }
        }
        // The core dropped the emitter: the publisher drains what is queued, then ends.
        if let Some(p) = self.publisher.take() {
            let abort = p.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), p)
                .await
                .is_err()
            {
                warn!("session events still queued after 5 s (bus back-pressure); dropped");
                abort.abort();
            }
        }
        self.transports.shutdown(Duration::from_millis(500)).await;
        info!("session adapter stopped");
    }
}

impl Drop for SessionAdapter {
    fn drop(&mut self) {
        for h in [self.core.take(), self.publisher.take()]
            .into_iter()
            .flatten()
        {
            h.abort();
        }
        if self.shutdown_tx.is_some() {
            // Not shut down: stop the transport tasks too (they hold the sockets).
            let t = self.transports.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { t.shutdown(Duration::ZERO).await });
            }
        }
    }
}
