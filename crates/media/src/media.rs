//! The direct (non-bus) API: [`Media`].

use crate::audio::{self, AudioClip};
use crate::config::{MediaConfig, MohSource};
use crate::endpoint::{Ctrl, Ctx, EndpointTask, LegShared, LegStats, StreamParams};
use crate::error::MediaError;
use crate::ports::PortPool;
use crate::sdp::{self, LocalSdp, SessionDescription};
use crate::sink::{self, EventSink, MediaEvents};
use call_engine_bus::EventId;
use call_engine_events::{
    AudioSource, BridgeId, CallId, Codec, EndpointId, IdAllocator, Leg, MediaCommand, MediaEvent,
    PlaybackId, Sdp,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

/// A freshly allocated (or renegotiated) endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Our RTP address.
    pub local: SocketAddr,
    /// Our SDP: an answer if an offer was given, else an offer.
    pub local_sdp: Sdp,
    /// The codec chosen, when answering.
    pub codec: Option<Codec>,
}

struct LegEntry {
    shared: Arc<LegShared>,
    ctrl: mpsc::UnboundedSender<Ctrl>,
    task: Option<JoinHandle<()>>,
    version: u64,
    bridge: Option<BridgeId>,
}

#[derive(Clone, Copy)]
struct BridgeEntry {
    call: CallId,
    a: Leg,
    b: Leg,
}

#[derive(Default)]
struct Registry {
    legs: HashMap<(CallId, Leg), LegEntry>,
    bridges: HashMap<BridgeId, BridgeEntry>,
}

impl Registry {
    /// Removes a bridge and clears its legs' membership; returns the legs' control
    /// handles, to unlink them.
    fn take_bridge(
        &mut self,
        bridge: BridgeId,
    ) -> Option<(BridgeEntry, Vec<mpsc::UnboundedSender<Ctrl>>)> {
        let b = self.bridges.remove(&bridge)?;
        let mut ctrls = Vec::with_capacity(2);
        for leg in [b.a, b.b] {
            if let Some(e) = self.legs.get_mut(&(b.call, leg)) {
                if e.bridge == Some(bridge) {
                    e.bridge = None;
                }
                ctrls.push(e.ctrl.clone());
            }
        }
        Some((b, ctrls))
    }
}

struct Inner {
    config: MediaConfig,
    ids: Arc<IdAllocator>,
    pool: Arc<PortPool>,
    moh: AudioClip,
    ctx: Arc<Ctx>,
    sink: EventSink,
    reg: Mutex<Registry>,
    stopped: AtomicBool,
}

/// The media adapter without the bus: every operation is a method, and its events
/// (the same ones the bus adapter publishes, in order) come out of the [`MediaEvents`]
/// returned by [`Media::new`].
///
/// Every operation emits its outcome event whether it succeeds or fails, exactly as when
/// it arrives as a [`MediaCommand`] on the bus; the methods also return the outcome.
/// Cloning is cheap; all clones drive the same endpoints. Dropping the last clone stops
/// every endpoint task.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("address", &self.inner.config.address)
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

async fn request<T>(
    ctrl: &mpsc::UnboundedSender<Ctrl>,
    make: impl FnOnce(oneshot::Sender<T>) -> Ctrl,
) -> Result<T, MediaError> {
    let (tx, rx) = oneshot::channel();
    ctrl.send(make(tx)).map_err(|_| MediaError::Stopped)?;
    rx.await.map_err(|_| MediaError::Stopped)
}

impl Media {
    /// Validates the configuration, loads the music on hold (reading the MOH file, if
    /// configured, synchronously) and returns the API and its event stream. Needs no
    /// runtime; the operations must run inside a tokio runtime.
    pub fn new(
        config: MediaConfig,
        ids: Arc<IdAllocator>,
    ) -> Result<(Media, MediaEvents), MediaError> {
        config.validate()?;
        let moh = match &config.moh {
            MohSource::Builtin => audio::builtin_music(),
            MohSource::WavFile(path) => audio::load_wav(path)?,
        };
        let (first, last) = config.even_ports().ok_or(MediaError::Config {
            field: "rtp_ports",
            reason: "contains no even port".into(),
        })?;
        let (sink, events) = sink::channel();
        let ctx = Arc::new(Ctx {
            sink: sink.clone(),
            ptime: config.ptime,
            frame: config.samples_per_packet(),
            quality_interval: config.quality_interval,
            media_timeout: config.media_timeout,
        });
        let inner = Inner {
            pool: PortPool::new(config.address, first, last),
            config,
            ids,
            moh,
            ctx,
            sink,
            reg: Mutex::new(Registry::default()),
            stopped: AtomicBool::new(false),
        };
        Ok((
            Media {
                inner: Arc::new(inner),
            },
            events,
        ))
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// Number of allocated endpoints.
    pub fn endpoints(&self) -> usize {
        self.inner.reg.lock().legs.len()
    }

    fn emit(&self, event: MediaEvent, cause: Option<EventId>) {
        self.inner.sink.emit(event, cause);
    }

    fn running(&self) -> Result<(), MediaError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            Err(MediaError::Stopped)
        } else {
            Ok(())
        }
    }

    fn ctrl_of(&self, call: CallId, leg: Leg) -> Result<mpsc::UnboundedSender<Ctrl>, MediaError> {
        self.inner
            .reg
            .lock()
            .legs
            .get(&(call, leg))
            .map(|e| e.ctrl.clone())
            .ok_or(MediaError::UnknownEndpoint { call, leg })
    }

    /// Executes a command as the bus adapter does: the outcome is emitted as events
    /// caused by `cause` (errors are logged and reported as events, never returned).
    pub async fn execute(&self, cmd: MediaCommand, cause: Option<EventId>) {
        match cmd {
            MediaCommand::Allocate {
                call,
                leg,
                remote_offer,
            } => {
                let _ = self
                    .allocate_with(call, leg, remote_offer.as_ref(), cause)
                    .await;
            }
            MediaCommand::SetRemote { call, leg, sdp } => {
                let _ = self.set_remote_with(call, leg, &sdp, cause).await;
            }
            MediaCommand::Bridge { call, bridge, a, b } => {
                let _ = self.bridge_with(call, bridge, a, b, cause).await;
            }
            MediaCommand::Unbridge { call, bridge } => {
                self.unbridge_with(call, bridge, cause).await;
            }
            MediaCommand::Play {
                call,
                leg,
                playback,
                source,
                looped,
            } => {
                let _ = self
                    .play_with(call, leg, playback, &source, looped, cause)
                    .await;
            }
            MediaCommand::StopPlayback { call, playback } => {
                self.stop_playback(call, playback).await;
            }
            MediaCommand::Release { call, leg } => {
                self.release_with(call, leg, cause).await;
            }
        }
    }

    /// Allocates an RTP endpoint for a leg (a UDP socket on a free even port) and
    /// answers `remote_offer` (first offered format among PCMU/PCMA, telephone-event if
    /// offered) or, without one, makes an offer (PCMU, PCMA, telephone-event/8000 on 101,
    /// sendrecv). Emits `EndpointReady`, or `EndpointFailed` (no free port, bad SDP, no
    /// common codec).
    ///
    /// Allocating a leg that already has an endpoint renegotiates on the same socket
    /// (a re-INVITE: hold, resume, codec change): same endpoint id and port, a new SDP
    /// version.
    pub async fn allocate(
        &self,
        call: CallId,
        leg: Leg,
        remote_offer: Option<&Sdp>,
    ) -> Result<Allocated, MediaError> {
        self.allocate_with(call, leg, remote_offer, None).await
    }

    async fn allocate_with(
        &self,
        call: CallId,
        leg: Leg,
        remote_offer: Option<&Sdp>,
        cause: Option<EventId>,
    ) -> Result<Allocated, MediaError> {
        let r = self.try_allocate(call, leg, remote_offer, cause).await;
        match &r {
            Ok(a) => {
                info!(%call, ?leg, endpoint = %a.endpoint, local = %a.local, codec = ?a.codec, answer = remote_offer.is_some(), "endpoint ready");
                self.emit(
                    MediaEvent::EndpointReady {
                        call,
                        leg,
                        endpoint: a.endpoint,
                        local_sdp: a.local_sdp.clone(),
                        codec: a.codec,
                    },
                    cause,
                );
            }
            Err(e) => {
                warn!(%call, ?leg, error = %e, "endpoint allocation failed");
                self.emit(
                    MediaEvent::EndpointFailed {
                        call,
                        leg,
                        reason: e.to_string().into(),
                    },
                    cause,
                );
            }
        }
        r
    }

    async fn try_allocate(
        &self,
        call: CallId,
        leg: Leg,
        remote_offer: Option<&Sdp>,
        cause: Option<EventId>,
    ) -> Result<Allocated, MediaError> {
        self.running()?;
        let offer = match remote_offer {
            Some(sdp) => {
                let sd = SessionDescription::parse(&sdp.0)?;
                let n = sdp::negotiate(&sd)?;
                Some((sd, n))
            }
            None => None,
        };
        let params = offer.as_ref().map_or(StreamParams::offered(), |(_, n)| {
            StreamParams::from_negotiated(n)
        });

        // Existing endpoint: renegotiate. Otherwise bind, spawn and register in one
        // critical section, so two allocations of one leg cannot race.
        let existing = {
            let mut reg = self.inner.reg.lock();
            match reg.legs.get_mut(&(call, leg)) {
                Some(e) => {
                    e.version += 1;
                    Some((e.shared.clone(), e.ctrl.clone(), e.version))
                }
                None => {
                    let (sock, lease) = self.inner.pool.bind()?;
                    sock.set_nonblocking(true)?;
                    let local = sock.local_addr()?;
                    let socket = tokio::net::UdpSocket::from_std(sock)?;
                    let endpoint = self.inner.ids.endpoint();
                    let shared = Arc::new(LegShared::new(
                        call, leg, endpoint, socket, local, lease, params,
                    ));
                    let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
                    let task =
                        EndpointTask::new(shared.clone(), self.inner.ctx.clone(), params, cause);
                    let span = tracing::info_span!("media_endpoint", call = %call, leg = ?leg, endpoint = %endpoint);
                    let handle = tokio::spawn(task.run(ctrl_rx).instrument(span));
                    reg.legs.insert(
                        (call, leg),
                        LegEntry {
                            shared,
                            ctrl,
                            task: Some(handle),
                            version: 1,
                            bridge: None,
                        },
                    );
                    None
                }
            }
        };
        let (shared, version) = match existing {
            Some((shared, ctrl, version)) => {
                request(&ctrl, |done| Ctrl::Configure { params, done }).await?;
                (shared, version)
            }
            None => {
                let reg = self.inner.reg.lock();
                let e = reg
                    .legs
                    .get(&(call, leg))
                    .ok_or(MediaError::UnknownEndpoint { call, leg })?;
                (e.shared.clone(), e.version)
            }
        };
        let local = LocalSdp {
            address: self.inner.config.address,
            port: shared.local.port(),
            session_id: shared.endpoint.0,
            version,
            ptime_ms: self.inner.config.ptime_ms(),
        };
        let (text, codec) = match &offer {
            Some((sd, n)) => (sdp::build_answer(&local, sd, n), Some(n.codec)),
            None => (sdp::build_offer(&local), None),
        };
        Ok(Allocated {
            endpoint: shared.endpoint,
            local: shared.local,
            local_sdp: Sdp(text.into()),
            codec,
        })
    }

    /// Applies the far end's answer to our offer: remote address, codec, telephone-event
    /// payload type, direction. Returns the codec. Emits `EndpointFailed` if the answer
    /// is unusable or the leg has no endpoint (nothing on success: `EndpointReady` was
    /// already sent with the offer).
    pub async fn set_remote(&self, call: CallId, leg: Leg, sdp: &Sdp) -> Result<Codec, MediaError> {
        self.set_remote_with(call, leg, sdp, None).await
    }

    async fn set_remote_with(
        &self,
        call: CallId,
        leg: Leg,
        sdp: &Sdp,
        cause: Option<EventId>,
    ) -> Result<Codec, MediaError> {
        let r: Result<_, MediaError> = async {
            self.running()?;
            let n = sdp::negotiate(&SessionDescription::parse(&sdp.0)?)?;
            let ctrl = self.ctrl_of(call, leg)?;
            let params = StreamParams::from_negotiated(&n);
            request(&ctrl, |done| Ctrl::Configure { params, done }).await?;
            Ok(n)
        }
        .await;
        match r {
            Ok(n) => {
                info!(%call, ?leg, remote = ?n.remote, codec = ?n.codec, telephone_event = ?n.telephone_event, "remote SDP applied");
                Ok(n.codec)
            }
            Err(e) => {
                warn!(%call, ?leg, error = %e, "remote SDP rejected");
                self.emit(
                    MediaEvent::EndpointFailed {
                        call,
                        leg,
                        reason: e.to_string().into(),
                    },
                    cause,
                );
                Err(e)
            }
        }
    }

    /// Relays RTP between legs `a` and `b` of `call`, after stopping any playback on
    /// both (and tearing down any other bridge either leg was in, with `Unbridged`).
    /// Returns whether the bridge transcodes (PCMU ↔ PCMA). Emits `Bridged`; if the
    /// bridge cannot be made (a leg has no endpoint, `a == b`), emits `Unbridged` for it.
    pub async fn bridge(
        &self,
        call: CallId,
        bridge: BridgeId,
        a: Leg,
        b: Leg,
    ) -> Result<bool, MediaError> {
        self.bridge_with(call, bridge, a, b, None).await
    }

    async fn bridge_with(
        &self,
        call: CallId,
        bridge: BridgeId,
        a: Leg,
        b: Leg,
        cause: Option<EventId>,
    ) -> Result<bool, MediaError> {
        match self.try_bridge(call, bridge, a, b, cause).await {
            Ok(transcoding) => {
                info!(%call, %bridge, ?a, ?b, transcoding, "bridged");
                self.emit(
                    MediaEvent::Bridged {
                        call,
                        bridge,
                        transcoding,
                    },
                    cause,
                );
                Ok(transcoding)
            }
            Err(e) => {
                warn!(%call, %bridge, ?a, ?b, error = %e, "bridge failed");
                self.emit(MediaEvent::Unbridged { call, bridge }, cause);
                Err(e)
            }
        }
    }

    async fn try_bridge(
        &self,
        call: CallId,
        bridge: BridgeId,
        a: Leg,
        b: Leg,
        cause: Option<EventId>,
    ) -> Result<bool, MediaError> {
        self.running()?;
        if a == b {
            return Err(MediaError::Bridge {
                bridge,
                reason: "cannot bridge a leg with itself",
            });
        }
        let (ea, eb, old) = {
            let mut reg = self.inner.reg.lock();
            for leg in [a, b] {
                if !reg.legs.contains_key(&(call, leg)) {
                    return Err(MediaError::UnknownEndpoint { call, leg });
                }
            }
            let mut old = Vec::new();
            let mut olds: Vec<BridgeId> = Vec::new();
            for leg in [a, b] {
                if let Some(id) = reg.legs.get(&(call, leg)).and_then(|e| e.bridge) {
                    if !olds.contains(&id) {
                        olds.push(id);
                    }
                }
            }
            if reg.bridges.contains_key(&bridge) && !olds.contains(&bridge) {
                olds.push(bridge);
            }
            for id in olds {
                if let Some(t) = reg.take_bridge(id) {
                    old.push((id, t));
                }
            }
            reg.bridges.insert(bridge, BridgeEntry { call, a, b });
            let mut get = |leg| {
                reg.legs.get_mut(&(call, leg)).map(|e| {
                    e.bridge = Some(bridge);
                    (e.shared.clone(), e.ctrl.clone())
                })
            };
            let ea = get(a).ok_or(MediaError::UnknownEndpoint { call, leg: a })?;
            let eb = get(b).ok_or(MediaError::UnknownEndpoint { call, leg: b })?;
            (ea, eb, old)
        };
        for (id, (entry, ctrls)) in old {
            for c in ctrls {
                let _ = request(&c, |done| Ctrl::Unlink { bridge: id, done }).await;
            }
            if id != bridge {
                info!(call = %entry.call, bridge = %id, "bridge replaced");
                self.emit(
                    MediaEvent::Unbridged {
                        call: entry.call,
                        bridge: id,
                    },
                    cause,
                );
            }
        }
        let ra = request(&ea.1, |done| Ctrl::Link {
            bridge,
            peer: eb.0.clone(),
            cause,
            done,
        })
        .await;
        let rb = request(&eb.1, |done| Ctrl::Link {
            bridge,
            peer: ea.0.clone(),
            cause,
            done,
        })
        .await;
        if let Err(e) = ra.and(rb) {
            // A leg went away meanwhile: undo.
            if let Some((_, ctrls)) = self.inner.reg.lock().take_bridge(bridge) {
                for c in ctrls {
                    let _ = c.send(Ctrl::Unlink {
                        bridge,
                        done: oneshot::channel().0,
                    });
                }
            }
            return Err(e);
        }
        let ca = ea.0.tx.lock().params.codec;
        let cb = eb.0.tx.lock().params.codec;
        Ok(ca != cb)
    }

    /// Stops relaying. Emits `Unbridged` (also for a bridge that does not exist any
    /// more: tearing down is idempotent).
    pub async fn unbridge(&self, call: CallId, bridge: BridgeId) {
        self.unbridge_with(call, bridge, None).await
    }

    async fn unbridge_with(&self, call: CallId, bridge: BridgeId, cause: Option<EventId>) {
        let taken = self.inner.reg.lock().take_bridge(bridge);
        if let Some((_, ctrls)) = taken {
            for c in ctrls {
                let _ = request(&c, |done| Ctrl::Unlink { bridge, done }).await;
            }
            info!(%call, %bridge, "unbridged");
        } else {
            debug!(%call, %bridge, "unbridge of an unknown bridge");
        }
        self.emit(MediaEvent::Unbridged { call, bridge }, cause);
    }

    async fn load(&self, source: &AudioSource) -> Result<AudioClip, MediaError> {
        let path: PathBuf = match source {
            AudioSource::BuiltinMusic => return Ok(self.inner.moh.clone()),
            AudioSource::File { path } => PathBuf::from(path.as_str()),
            AudioSource::Prompt { name } => {
                audio::prompt_path(self.inner.config.prompts_dir.as_deref(), name)?
            }
        };
        let r = tokio::task::spawn_blocking(move || audio::load_wav(&path))
            .await
            .map_err(|_| MediaError::Stopped)?;
        Ok(r?)
    }

    /// Plays audio to a leg, encoded in its codec, one packet per ptime; replaces any
    /// playback already running on the leg. A playback owns the leg's outgoing stream:
    /// while it runs, audio relayed from a bridged leg is not sent. Emits
    /// `PlaybackStarted`, then `PlaybackFinished` when a non-looped source ends.
    ///
    /// If the source cannot be played (no such endpoint, unreadable file, wrong WAV
    /// format, unknown prompt), the error is logged and returned, and `PlaybackFinished`
    /// is emitted without a `PlaybackStarted`: whoever waits for the playback moves on.
    pub async fn play(
        &self,
        call: CallId,
        leg: Leg,
        playback: PlaybackId,
        source: &AudioSource,
        looped: bool,
    ) -> Result<(), MediaError> {
        self.play_with(call, leg, playback, source, looped, None)
            .await
    }

    async fn play_with(
        &self,
        call: CallId,
        leg: Leg,
        playback: PlaybackId,
        source: &AudioSource,
        looped: bool,
        cause: Option<EventId>,
    ) -> Result<(), MediaError> {
        let r = async {
            self.running()?;
            let ctrl = self.ctrl_of(call, leg)?;
            let clip = self.load(source).await?;
            request(&ctrl, |done| Ctrl::Play {
                playback,
                clip,
                looped,
                cause,
                done,
            })
            .await
        }
        .await;
        if let Err(e) = &r {
            warn!(%call, ?leg, %playback, ?source, error = %e, "playback failed");
            self.emit(MediaEvent::PlaybackFinished { call, playback }, cause);
        }
        r
    }

    /// Stops a playback of `call` (no event: `PlaybackFinished` is only for sources that
    /// reached their end). Returns whether it was running.
    pub async fn stop_playback(&self, call: CallId, playback: PlaybackId) -> bool {
        let ctrls: Vec<_> = self
            .inner
            .reg
            .lock()
            .legs
            .iter()
            .filter(|((c, _), _)| *c == call)
            .map(|(_, e)| e.ctrl.clone())
            .collect();
        let mut stopped = false;
        for c in ctrls {
            stopped |= request(&c, |done| Ctrl::StopPlayback { playback, done })
                .await
                .unwrap_or(false);
        }
        if !stopped {
            debug!(%call, %playback, "stop of a playback that is not running");
        }
        stopped
    }

    /// Frees a leg's endpoint: tears down its bridge (`Unbridged`), stops its task
    /// (which publishes a last `Quality` report if it carried media), closes the socket,
    /// returns the port to the pool, then emits `Released`. Idempotent: releasing a leg
    /// without an endpoint just emits `Released`.
    pub async fn release(&self, call: CallId, leg: Leg) {
        self.release_with(call, leg, None).await
    }

    async fn release_with(&self, call: CallId, leg: Leg, cause: Option<EventId>) {
        let (entry, bridge) = {
            let mut reg = self.inner.reg.lock();
            let bridge = reg
                .legs
                .get(&(call, leg))
                .and_then(|e| e.bridge)
                .and_then(|b| reg.take_bridge(b).map(|t| (b, t)));
            (reg.legs.remove(&(call, leg)), bridge)
        };
        if let Some((id, (_, ctrls))) = bridge {
            for c in ctrls {
                let _ = request(&c, |done| Ctrl::Unlink { bridge: id, done }).await;
            }
            info!(%call, bridge = %id, "unbridged by release");
            self.emit(MediaEvent::Unbridged { call, bridge: id }, cause);
        }
        if let Some(mut e) = entry {
            let _ = e.ctrl.send(Ctrl::Shutdown);
            if let Some(task) = e.task.take() {
                if let Err(err) = task.await {
                    warn!(%call, ?leg, error = %err, "endpoint task ended abnormally");
                }
            }
            info!(%call, ?leg, endpoint = %e.shared.endpoint, "endpoint released");
            // Dropping the entry drops the last handle of the socket: the port is free.
            drop(e);
        } else {
            debug!(%call, ?leg, "release of a leg without endpoint");
        }
        self.emit(MediaEvent::Released { call, leg }, cause);
    }

    /// A snapshot of a leg's endpoint.
    pub async fn stats(&self, call: CallId, leg: Leg) -> Result<LegStats, MediaError> {
        let ctrl = self.ctrl_of(call, leg)?;
        request(&ctrl, |done| Ctrl::Stats { done })
            .await
            .map_err(|_| MediaError::UnknownEndpoint { call, leg })
    }

    /// Refuses new work and releases every endpoint (emitting their events).
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let legs: Vec<(CallId, Leg)> = self.inner.reg.lock().legs.keys().copied().collect();
        for (call, leg) in legs {
            self.release_with(call, leg, None).await;
        }
    }
}
