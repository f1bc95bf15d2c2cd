//! UDP and TCP transport: one UDP socket, one TCP listener, and a registry of live TCP
//! connections keyed by the peer's address, so a request to a phone reuses the
//! connection it registered over. Readers hand every datagram or stream frame to the
//! core through a channel; sending never blocks the core (TCP writes are queued to a
//! per-connection writer task, new connections are opened in the background).

use crate::config::TcpLimits;
use crate::error::SessionError;
use crate::raw::RawMessage;
use crate::stats::Stats;
use bytes::{Buf, Bytes, BytesMut};
use call_engine_bus::EventId;
use call_engine_events::{AgentId, SessionId};
use parking_lot::Mutex;
use rvoip_sip_core::framing::{
    inspect_sip_frame_with_policy, SipFrameStatus, SipFramingError, SipFramingPolicy,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    /// `UDP` or `TCP`, as written in Via headers.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A remote endpoint: the transport and address (for TCP, the connection's peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.transport, self.addr)
    }
}

/// What the transport tells the core.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A datagram or a complete stream frame.
    Data { data: Bytes, peer: Peer },
    /// TCP connection `conn` to `peer` could not be opened, or it closed (the peer
    /// closed it, it failed, or a limit closed it), or it was replaced before it opened:
    /// no response to a request sent over it can come back on it. Not sent when an
    /// open connection is replaced by a newer one from the same address (responses come
    /// over that one); perhaps sent twice, or at shutdown (harmless: ids are unique).
    ConnectionLost { peer: Peer, conn: u64 },
    /// A host name of an outbound request's target was resolved.
    Resolved {
        purpose: Resolve,
        result: Result<SocketAddr, String>,
    },
}

/// What a name was resolved for.
#[derive(Debug, Clone)]
pub(crate) enum Resolve {
    /// The INVITE of this outbound session.
    Invite(SessionId),
    /// An OPTIONS probe.
    Probe {
        agent: AgentId,
        contact: String,
        cause: EventId,
    },
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes handed to the writer and not yet written (bounded by
    /// [`TcpLimits::max_queued_bytes`]).
    queued: Arc<AtomicUsize>,
    reader: Option<tokio::task::AbortHandle>,
    writer: Option<JoinHandle<()>>,
}

impl Conn {
    fn new(id: u64, tx: mpsc::UnboundedSender<Bytes>) -> Self {
        Self {
            id,
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            reader: None,
            writer: None,
        }
    }

    /// Stops both tasks: the socket closes.
    fn abort(&self) {
        if let Some(r) = &self.reader {
            r.abort();
        }
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

/// Why a message could not be handed to a connection's writer.
enum Queue {
    /// The connection is gone (its writer ended).
    Gone(Bytes),
    /// The peer does not read what it is sent: connection `.0` was closed.
    Overflow(u64),
}

/// Where the framing of a connection's stream stands, so that each byte is scanned
/// about once however the stream is cut (a message trickled a byte at a time must not
/// be re-scanned from its start on every read).
#[derive(Default)]
struct Framer {
    /// The buffer's first `scanned` bytes hold no end of headers (CRLFCRLF).
    scanned: usize,
    /// The whole message's size, once its headers are in.
    need: Option<usize>,
}

impl Framer {
    /// Whether the headers of the message at the front of `buf` may be complete, so
    /// that the framing parser (which reads from the start) is worth running. Scans only
    /// the bytes not scanned before, and the three before them (a CRLFCRLF cut in two).
    /// Past the framing's header limit it says yes, for the parser to refuse the message.
    fn headers_may_end(&mut self, buf: &[u8]) -> bool {
        let from = self.scanned.saturating_sub(3);
        let ends = buf[from..].windows(4).any(|w| w == b"\r\n\r\n");
        self.scanned = buf.len();
        ends || buf.len() > rvoip_sip_core::framing::MAX_SIP_HEADER_BYTES
    }
}

/// The sockets and the TCP connection registry.
pub(crate) struct Transports {
    udp: Option<Arc<UdpSocket>>,
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    conns: Mutex<HashMap<SocketAddr, Conn>>,
    next_conn: AtomicU64,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<Stats>,
    connect_timeout: Duration,
    server: String,
    limits: TcpLimits,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Transports {
    /// Binds the configured sockets and starts the readers.
    pub async fn start(
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        inbound: mpsc::Sender<Inbound>,
        stats: Arc<Stats>,
        connect_timeout: Duration,
        server: String,
        limits: TcpLimits,
    ) -> Result<Arc<Transports>, SessionError> {
        let udp_sock = match udp {
            Some(addr) => Some(Arc::new(UdpSocket::bind(addr).await.map_err(|source| {
                SessionError::Bind {
                    transport: "UDP",
                    addr,
                    source,
                }
            })?)),
            None => None,
        };
        let listener = match tcp {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| SessionError::Bind {
                            transport: "TCP",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let bound = |r: std::io::Result<SocketAddr>, transport: &'static str, addr: SocketAddr| {
            r.map_err(|source| SessionError::Bind {
                transport,
                addr,
                source,
            })
        };
        let udp_addr = match (&udp_sock, udp) {
            (Some(s), Some(a)) => Some(bound(s.local_addr(), "UDP", a)?),
            _ => None,
        };
        let tcp_addr = match (&listener, tcp) {
            (Some(l), Some(a)) => Some(bound(l.local_addr(), "TCP", a)?),
            _ => None,
        };
        let t = Arc::new(Transports {
            udp: udp_sock.clone(),
            udp_addr,
            tcp_addr,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            inbound,
            stats,
            connect_timeout,
            server,
            limits,
            tasks: Mutex::new(Vec::new()),
        });
        if let Some(sock) = udp_sock {
            let h = tokio::spawn(udp_reader(t.clone(), sock));
            t.tasks.lock().push(h);
        }
        if let Some(l) = listener {
            let h = tokio::spawn(tcp_acceptor(t.clone(), l));
            t.tasks.lock().push(h);
        }
        info!(udp = ?udp_addr, tcp = ?tcp_addr, "SIP transports listening");
        Ok(t)
    }

    /// A sender into the core's inbound channel (for background lookups).
    pub fn inbound(&self) -> mpsc::Sender<Inbound> {
        self.inbound.clone()
    }

    /// Whether a TCP connection to `addr` is open (or being opened).
    pub fn has_conn(&self, addr: SocketAddr) -> bool {
        self.conns.lock().contains_key(&addr)
    }

    /// Sends a message; never waits. Failures are logged (UDP) or reported as
    /// [`Inbound::ConnectionLost`] (TCP). Over TCP, returns the connection the message
    /// was handed to: a client transaction waits for its response on that one only.
    pub fn send(self: &Arc<Self>, peer: Peer, data: Bytes) -> Option<u64> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match peer.transport {
            Transport::Udp => {
                let Some(sock) = &self.udp else {
                    warn!(%peer, "no UDP socket configured; message not sent");
                    return None;
                };
                match sock.try_send_to(&data, peer.addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let sock = sock.clone();
                        tokio::spawn(async move {
                            if let Err(e) = sock.send_to(&data, peer.addr).await {
                                debug!(%peer, error = %e, "UDP send failed");
                            }
                        });
                    }
                    Err(e) => debug!(%peer, error = %e, "UDP send failed"),
                }
                None
            }
            Transport::Tcp => Some(self.send_tcp(peer.addr, data)),
        }
    }

    /// The connection the message was handed to (perhaps one just closed for overflow,
    /// or being opened).
    fn send_tcp(self: &Arc<Self>, addr: SocketAddr, data: Bytes) -> u64 {
        let mut conns = self.conns.lock();
        let data = match self.queue(&mut conns, addr, data) {
            Ok(id) | Err(Queue::Overflow(id)) => return id,
            Err(Queue::Gone(d)) => d,
        };
        // Open a new connection in the background; queue the message meanwhile.
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn::new(id, tx);
        conn.queued.fetch_add(data.len(), Ordering::Relaxed);
        let _ = conn.tx.send(data); // the receiver is alive: it is moved into the task below
        conns.insert(addr, conn);
        drop(conns);
        let me = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(me.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    debug!(%addr, "TCP connection opened");
                    me.run_conn(stream, addr, id, rx, false);
                }
                Ok(Err(e)) => me.connect_failed(addr, id, &e.to_string()).await,
                Err(_) => me.connect_failed(addr, id, "connect timed out").await,
            }
        });
        id
    }

    async fn connect_failed(&self, addr: SocketAddr, id: u64, why: &str) {
        warn!(%addr, error = why, "TCP connect failed");
        // Lost even if a connection from that address replaced it meanwhile: what was
        // sent went nowhere. Told before the slot is given up (see `run_conn`'s reader).
        let _ = self.inbound.send(Self::lost_msg(addr, id)).await;
        drop(self.take_conn(addr, id));
    }

    fn lost_msg(addr: SocketAddr, id: u64) -> Inbound {
        Inbound::ConnectionLost {
            peer: Peer {
                transport: Transport::Tcp,
                addr,
            },
            conn: id,
        }
    }

    /// Tells the core that connection `id` to `addr` is gone (see
    /// [`Inbound::ConnectionLost`]), from code that cannot wait: if the core's queue is
    /// full, a task waits for room. (These closes come from sending, which a core with
    /// a full queue does little of; a reader's own close waits instead.)
    fn lost(&self, addr: SocketAddr, id: u64) {
        if let Err(mpsc::error::TrySendError::Full(msg)) =
            self.inbound.try_send(Self::lost_msg(addr, id))
        {
            let inbound = self.inbound.clone();
            tokio::spawn(async move {
                let _ = inbound.send(msg).await;
            });
        }
    }

    /// Takes connection `id` to `addr` out of the registry (if it is still there: a
    /// newer connection from the same address may have replaced it).
    fn take_conn(&self, addr: SocketAddr, id: u64) -> Option<Conn> {
        let mut conns = self.conns.lock();
        match conns.get(&addr) {
            Some(c) if c.id == id => conns.remove(&addr),
            _ => None,
        }
    }

    /// Whether connection `id` is still the registry's connection to `addr`.
    fn is_current(&self, addr: SocketAddr, id: u64) -> bool {
        self.conns.lock().get(&addr).is_some_and(|c| c.id == id)
    }

    /// Removes the connection, stops its tasks (the socket closes at once) and tells
    /// the core it is lost.
    fn close_conn(&self, addr: SocketAddr, id: u64) {
        if let Some(c) = self.take_conn(addr, id) {
            c.abort();
            self.lost(addr, id);
        }
    }

    /// Hands `data` to the writer of the connection to `addr` (returned). A peer that
    /// leaves more than [`TcpLimits::max_queued_bytes`] unread is disconnected.
    fn queue(
        &self,
        conns: &mut HashMap<SocketAddr, Conn>,
        addr: SocketAddr,
        data: Bytes,
    ) -> Result<u64, Queue> {
        let Some(c) = conns.get(&addr) else {
            return Err(Queue::Gone(data));
        };
        let (id, len) = (c.id, data.len());
        if c.queued.fetch_add(len, Ordering::Relaxed) + len > self.limits.max_queued_bytes {
            self.stats.tcp_limited.fetch_add(1, Ordering::Relaxed);
            warn!(%addr, queued = c.queued.load(Ordering::Relaxed), "TCP peer does not read what it is sent; closing the connection");
            if let Some(c) = conns.remove(&addr) {
                c.abort();
            }
            self.lost(addr, id);
            return Err(Queue::Overflow(id));
        }
        match c.tx.send(data) {
            Ok(()) => Ok(id),
            Err(mpsc::error::SendError(d)) => {
                conns.remove(&addr);
                self.lost(addr, id);
                Err(Queue::Gone(d))
            }
        }
    }

    /// Runs an open connection: a writer task draining `rx`, and a reader task framing
    /// the stream.
    ///
    /// An `accepted` connection must carry its first complete message within
    /// [`TcpLimits::message_timeout`]; on any connection, a message begun must be
    /// complete within it.
    fn run_conn(
        self: &Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        id: u64,
        mut rx: mpsc::UnboundedReceiver<Bytes>,
        accepted: bool,
    ) {
        let _ = stream.set_nodelay(true);
        // A peer that vanished (a NAT reboot, a phone unplugged) leaves no FIN: the
        // kernel's probes find it within about two and a half minutes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            debug!(%addr, error = %e, "TCP keep-alive not set");
        }
        let (mut rd, mut wr) = stream.into_split();
        let queued = self
            .conns
            .lock()
            .get(&addr)
            .filter(|c| c.id == id)
            .map(|c| c.queued.clone())
            .unwrap_or_default();
        let me = self.clone();
        let writer = tokio::spawn(async move {
            let write_timeout = me.limits.write_timeout;
            while let Some(data) = rx.recv().await {
                match tokio::time::timeout(write_timeout, wr.write_all(&data)).await {
                    Ok(Ok(())) => {
                        queued.fetch_sub(data.len(), Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        debug!(%addr, error = %e, "TCP write failed");
                        me.close_conn(addr, id);
                        return;
                    }
                    Err(_) => {
                        me.stats.tcp_limited.fetch_add(1, Ordering::Relaxed);
                        warn!(%addr, "TCP write made no progress; closing the connection");
                        me.close_conn(addr, id);
                        return;
                    }
                }
            }
            let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
        });
        let me = self.clone();
        let reader = tokio::spawn(async move {
            let peer = Peer {
                transport: Transport::Tcp,
                addr,
            };
            let (timeout, idle) = (me.limits.message_timeout, me.limits.idle_timeout);
            let mut buf = BytesMut::with_capacity(8 * 1024);
            let mut framer = Framer::default();
            // An accepted connection that has not carried a complete message yet.
            let mut first_pending = accepted;
            // Until when the message under way (or that first one) may take to arrive.
            let mut deadline = None;
            let mut frames = Vec::new();
            'read: loop {
                let usable = me.drain_frames(&mut buf, &mut framer, peer, &mut frames);
                if !frames.is_empty() {
                    first_pending = false;
                    deadline = None;
                }
                // Handed to the core, waiting while it is behind (the peer's writes then
                // wait for this connection's reads: TCP flow control).
                for data in frames.drain(..) {
                    if me.inbound.send(Inbound::Data { data, peer }).await.is_err() {
                        break 'read;
                    }
                }
                if !usable {
                    // Let the refusal reach the peer: what it still sends is read and
                    // dropped for a while, so that closing does not reset the connection
                    // under the answer.
                    let mut scratch = vec![0u8; 16 * 1024];
                    let mut left = LINGER_BYTES;
                    let _ = tokio::time::timeout(LINGER, async {
                        while let Ok(n @ 1..) = rd.read(&mut scratch).await {
                            left = left.saturating_sub(n);
                            if left == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                    break;
                }
                if !first_pending && buf.is_empty() {
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + timeout);
                }
                // Between messages, a connection carrying nothing (not even a keep-alive
                // ping) for the idle timeout is closed.
                let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + idle);
                let read = match tokio::time::timeout_at(until, rd.read_buf(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        me.stats.tcp_limited.fetch_add(1, Ordering::Relaxed);
                        match deadline {
                            Some(_) => {
                                warn!(%addr, pending = buf.len(), "TCP message not complete in time; closing the connection")
                            }
                            None => debug!(%addr, "TCP connection idle; closing it"),
                        }
                        break;
                    }
                };
                match read {
                    Ok(0) => {
                        if !buf.iter().all(|b| b.is_ascii_whitespace()) {
                            debug!(%addr, pending = buf.len(), "TCP connection closed mid-message");
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(%addr, error = %e, "TCP read failed");
                        break;
                    }
                }
            }
            drop(rd);
            debug!(%addr, "TCP connection closed");
            // The core learns of the loss after every frame the connection carried (the
            // same queue, in order), waiting for room if it is behind. The connection
            // keeps its slot until then, so closed connections waiting here stay within
            // the connection caps. Its writer then sends what is queued, and closes.
            if me.is_current(addr, id) {
                let _ = me.inbound.send(Self::lost_msg(addr, id)).await;
            }
            drop(me.take_conn(addr, id));
        });
        let mut conns = self.conns.lock();
        match conns.get_mut(&addr) {
            Some(c) if c.id == id => {
                c.reader = Some(reader.abort_handle());
                c.writer = Some(writer);
            }
            _ => {
                // Replaced or removed meanwhile (shutdown): do not leak the tasks. What
                // was queued for it is not sent.
                reader.abort();
                writer.abort();
                drop(conns);
                self.lost(addr, id);
            }
        }
    }

    /// Moves every complete frame in `buf` to `frames`. False when the stream is
    /// unusable (a framing error, or a message larger than
    /// [`TcpLimits::max_message_bytes`]), after answering 400 or 513 when possible.
    fn drain_frames(
        &self,
        buf: &mut BytesMut,
        framer: &mut Framer,
        peer: Peer,
        frames: &mut Vec<Bytes>,
    ) -> bool {
        let max = self.limits.max_message_bytes;
        loop {
            if framer.need.is_none() && framer.scanned == 0 {
                let lead = buf
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if lead > 0 {
                    // RFC 5626 keep-alive: a CRLFCRLF ping gets a CRLF pong.
                    if buf[..lead].windows(4).any(|w| w == b"\r\n\r\n") {
                        self.reply_on(peer.addr, Bytes::from_static(b"\r\n"));
                    }
                    buf.advance(lead);
                }
            }
            if buf.is_empty() {
                return true;
            }
            // (The headers alone are bounded by the framing's own limit, 64 KiB.)
            if let Some(size) = framer.need.filter(|n| *n > max) {
                self.stats.tcp_limited.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, size, max, "TCP message too large; closing the connection");
                self.refuse_stream(buf, peer, 513, &format!("message over {max} bytes"));
                return false;
            }
            match framer.need {
                // The body is still arriving.
                Some(need) if buf.len() < need => return true,
                Some(_) => {}
                None => {
                    if !framer.headers_may_end(buf) {
                        return true;
                    }
                }
            }
            match inspect_sip_frame_with_policy(buf, SipFramingPolicy::Stream) {
                Ok(SipFrameStatus::Complete(frame)) if frame.total_bytes > max => {
                    framer.need = Some(frame.total_bytes);
                }
                Ok(SipFrameStatus::Complete(frame)) => {
                    frames.push(buf.split_to(frame.total_bytes).freeze());
                    *framer = Framer::default();
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(SipFrameStatus::Incomplete {
                    required_total: Some(need),
                }) => framer.need = Some(need),
                Ok(SipFrameStatus::Incomplete {
                    required_total: None,
                }) => {
                    // Not reached (no end of headers was seen), but stay correct.
                    framer.scanned = buf.len();
                    return true;
                }
                // Larger than the framing itself allows (over 16 MiB): too large, as above.
                Err(
                    e @ (SipFramingError::BodyTooLarge
                    | SipFramingError::MessageTooLarge
                    | SipFramingError::ContentLengthOverflow),
                ) => {
                    self.stats.tcp_limited.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, error = e.class(), max, "TCP message too large; closing the connection");
                    self.refuse_stream(buf, peer, 513, &format!("message over {max} bytes"));
                    return false;
                }
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, error = e.class(), "TCP framing error; closing the connection");
                    self.refuse_stream(buf, peer, 400, &format!("framing: {}", e.class()));
                    return false;
                }
            }
        }
    }

    /// Answers the request at the front of an unusable stream (not an ACK, and only if
    /// it has a Via) with `status`, and drops what is buffered.
    fn refuse_stream(&self, buf: &mut BytesMut, peer: Peer, status: u16, why: &str) {
        if let Some(raw) = RawMessage::scan(buf) {
            if raw
                .request_method()
                .is_some_and(|m| !m.eq_ignore_ascii_case("ACK"))
                && raw.get("Via").is_some()
            {
                let resp = crate::msg::refusal(&raw, peer.addr, status, why, &self.server);
                self.reply_on(peer.addr, resp);
            }
        }
        buf.clear();
    }

    fn reply_on(&self, addr: SocketAddr, data: Bytes) {
        let mut conns = self.conns.lock();
        let _ = self.queue(&mut conns, addr, data);
    }

    fn accept(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let old = {
            let mut conns = self.conns.lock();
            let limits = &self.limits;
            // A connection from the same address replaces the old one (below).
            let others = conns.len() - usize::from(conns.contains_key(&addr));
            let group = ip_group(addr.ip());
            let same_ip = conns
                .keys()
                .filter(|a| ip_group(a.ip()) == group && **a != addr)
                .count();
            if others >= limits.max_connections || same_ip >= limits.max_per_ip {
                drop(conns);
                self.stats.tcp_limited.fetch_add(1, Ordering::Relaxed);
                warn!(%addr, open = others, from_ip = same_ip, "TCP connection refused: too many open");
                return; // dropping the stream closes it
            }
            conns.insert(addr, Conn::new(id, tx))
        };
        if let Some(old) = old {
            if let Some(r) = old.reader {
                r.abort();
            }
        }
        debug!(%addr, "TCP connection accepted");
        self.run_conn(stream, addr, id, rx, true);
    }

    /// Stops every task and closes every connection, letting queued TCP writes flush
    /// for up to `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        for h in self.tasks.lock().drain(..) {
            h.abort();
        }
        let conns: Vec<Conn> = self.conns.lock().drain().map(|(_, c)| c).collect();
        let mut writers = Vec::new();
        for c in conns {
            if let Some(r) = &c.reader {
                r.abort();
            }
            if let Some(w) = c.writer {
                writers.push(w);
            }
            drop(c.tx); // the writer drains what is queued, then exits
        }
        for w in writers {
            let abort = w.abort_handle();
            if tokio::time::timeout(grace, w).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// How long a refused stream is still read (and dropped) so that its answer arrives.
const LINGER: Duration = Duration::from_secs(2);
/// ... and how much of it at most.
const LINGER_BYTES: usize = 1024 * 1024;

/// The address a connection counts against for [`TcpLimits::max_per_ip`]: an IPv4
/// address, or an IPv6 address's /64 (one host may hold a whole /64).
fn ip_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & (u128::MAX << 64))),
        },
    }
}

async fn udp_reader(t: Arc<Transports>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, addr)) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                if data.iter().all(|b| b.is_ascii_whitespace()) {
                    continue; // keep-alive
                }
                t.stats.received.fetch_add(1, Ordering::Relaxed);
                let peer = Peer {
                    transport: Transport::Udp,
                    addr,
                };
                // A core that is behind stops this reader: the socket's buffer fills and
                // the kernel drops what does not fit, instead of a queue here growing.
                if t.inbound.send(Inbound::Data { data, peer }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // ICMP errors surface here on some platforms; keep reading.
                debug!(error = %e, "UDP receive error");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

async fn tcp_acceptor(t: Arc<Transports>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => t.accept(stream, addr),
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ip_group, Framer};
    use std::net::IpAddr;

    #[test]
    fn connections_count_per_ipv4_address_and_per_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_group(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(ip_group(ip("192.0.2.7")), ip_group(ip("192.0.2.8")));
        assert_eq!(
            ip_group(ip("2001:db8:1:2::1")),
            ip_group(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            ip_group(ip("2001:db8:1:2::1")),
            ip_group(ip("2001:db8:1:3::1"))
        );
        assert_eq!(ip_group(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn a_trickled_message_is_handed_to_the_parser_once_its_headers_end() {
        let msg = b"OPTIONS sip:q@example.test SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
        for chunk in [1, 2, 3, 5, 7] {
            let mut framer = Framer::default();
            let mut parses = 0;
            let mut at = 0;
            while at < msg.len() {
                at = (at + chunk).min(msg.len());
                if framer.headers_may_end(&msg[..at]) {
                    parses += 1;
                    assert_eq!(at, msg.len(), "chunks of {chunk}: too early");
                }
            }
            assert_eq!(parses, 1, "chunks of {chunk}");
        }
    }

    #[test]
    fn headers_over_the_limit_go_to_the_parser_to_be_refused() {
        let mut framer = Framer::default();
        let long = vec![b'a'; rvoip_sip_core::framing::MAX_SIP_HEADER_BYTES + 1];
        assert!(!framer.headers_may_end(&long[..1000]));
        assert!(framer.headers_may_end(&long));
    }
}
