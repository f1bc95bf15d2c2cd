//! UDP and TCP transport: one UDP socket, one TCP listener, and a registry of live TCP
//! connections keyed by the peer's address, so a request to a phone reuses the
//! connection it registered over. Readers hand every datagram or stream frame to the
//! core through a channel; sending never blocks the core (TCP writes are queued to a
//! per-connection writer task, new connections are opened in the background).

use crate::error::SessionError;
use crate::raw::RawMessage;
use crate::stats::Stats;
use bytes::{Buf, Bytes, BytesMut};
use call_engine_bus::EventId;
use call_engine_events::{AgentId, SessionId};
use parking_lot::Mutex;
use rvoip_sip_core::framing::{inspect_sip_frame_with_policy, SipFrameStatus, SipFramingPolicy};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// A TCP connection could not be opened (or died before carrying anything).
    ConnectFailed { peer: Peer },
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
    reader: Option<tokio::task::AbortHandle>,
    writer: Option<JoinHandle<()>>,
}

/// The sockets and the TCP connection registry.
pub(crate) struct Transports {
    udp: Option<Arc<UdpSocket>>,
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    conns: Mutex<HashMap<SocketAddr, Conn>>,
    next_conn: AtomicU64,
    inbound: mpsc::UnboundedSender<Inbound>,
    stats: Arc<Stats>,
    connect_timeout: Duration,
    server: String,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Transports {
    /// Binds the configured sockets and starts the readers.
    pub async fn start(
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        inbound: mpsc::UnboundedSender<Inbound>,
        stats: Arc<Stats>,
        connect_timeout: Duration,
        server: String,
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
    pub fn inbound(&self) -> mpsc::UnboundedSender<Inbound> {
        self.inbound.clone()
    }

    /// Whether a TCP connection to `addr` is open (or being opened).
    pub fn has_conn(&self, addr: SocketAddr) -> bool {
        self.conns.lock().contains_key(&addr)
    }

    /// Sends a message; never waits. Failures are logged (UDP) or reported as
    /// [`Inbound::ConnectFailed`] (TCP).
    pub fn send(self: &Arc<Self>, peer: Peer, data: Bytes) {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match peer.transport {
            Transport::Udp => {
                let Some(sock) = &self.udp else {
                    warn!(%peer, "no UDP socket configured; message not sent");
                    return;
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
            }
            Transport::Tcp => self.send_tcp(peer.addr, data),
        }
    }

    fn send_tcp(self: &Arc<Self>, addr: SocketAddr, data: Bytes) {
        let mut conns = self.conns.lock();
        let data = match conns.get(&addr) {
            Some(c) => match c.tx.send(data) {
                Ok(()) => return,
                Err(mpsc::error::SendError(d)) => {
                    conns.remove(&addr);
                    d
                }
            },
            None => data,
        };
        // Open a new connection in the background; queue the message meanwhile.
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(data); // the receiver is alive: it is moved into the task below
        conns.insert(
            addr,
            Conn {
                id,
                tx,
                reader: None,
                writer: None,
            },
        );
        drop(conns);
        let me = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(me.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    debug!(%addr, "TCP connection opened");
                    me.run_conn(stream, addr, id, rx);
                }
                Ok(Err(e)) => me.connect_failed(addr, id, &e.to_string()),
                Err(_) => me.connect_failed(addr, id, "connect timed out"),
            }
        });
    }

    fn connect_failed(&self, addr: SocketAddr, id: u64, why: &str) {
        warn!(%addr, error = why, "TCP connect failed");
        self.remove_conn(addr, id);
        let _ = self.inbound.send(Inbound::ConnectFailed {
            peer: Peer {
                transport: Transport::Tcp,
                addr,
            },
        });
    }

    fn remove_conn(&self, addr: SocketAddr, id: u64) {
        let mut conns = self.conns.lock();
        if conns.get(&addr).is_some_and(|c| c.id == id) {
            conns.remove(&addr);
        }
    }

    /// Runs an open connection: a writer task draining `rx`, and a reader task framing
    /// the stream.
    fn run_conn(
        self: &Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        id: u64,
        mut rx: mpsc::UnboundedReceiver<Bytes>,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if let Err(e) = wr.write_all(&data).await {
                    debug!(%addr, error = %e, "TCP write failed");
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let me = self.clone();
        let reader = tokio::spawn(async move {
            let peer = Peer {
                transport: Transport::Tcp,
                addr,
            };
            let mut buf = BytesMut::with_capacity(8 * 1024);
            loop {
                if !me.drain_frames(&mut buf, peer) {
                    break;
                }
                match rd.read_buf(&mut buf).await {
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
            debug!(%addr, "TCP connection closed");
            me.remove_conn(addr, id);
        });
        let mut conns = self.conns.lock();
        match conns.get_mut(&addr) {
            Some(c) if c.id == id => {
                c.reader = Some(reader.abort_handle());
                c.writer = Some(writer);
            }
            _ => {
                // Replaced or removed meanwhile (shutdown): do not leak the tasks.
                reader.abort();
                writer.abort();
            }
        }
    }

    /// Hands every complete frame in `buf` to the core. Returns false when the stream
    /// is unusable (framing error), after answering 400 when possible.
    fn drain_frames(&self, buf: &mut BytesMut, peer: Peer) -> bool {
        loop {
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
            if buf.is_empty() {
                return true;
            }
            match inspect_sip_frame_with_policy(buf, SipFramingPolicy::Stream) {
                Ok(SipFrameStatus::Complete(frame)) => {
                    let data = buf.split_to(frame.total_bytes).freeze();
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    let _ = self.inbound.send(Inbound::Data { data, peer });
                }
                Ok(SipFrameStatus::Incomplete { .. }) => return true,
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, error = e.class(), "TCP framing error; closing the connection");
                    if let Some(raw) = RawMessage::scan(buf) {
                        if raw
                            .request_method()
                            .is_some_and(|m| !m.eq_ignore_ascii_case("ACK"))
                            && raw.get("Via").is_some()
                        {
                            let resp = crate::msg::bad_request(
                                &raw,
                                peer.addr,
                                &format!("framing: {}", e.class()),
                                &self.server,
                            );
                            self.reply_on(peer.addr, resp);
                        }
                    }
                    buf.clear();
                    return false;
                }
            }
        }
    }

    fn reply_on(&self, addr: SocketAddr, data: Bytes) {
        if let Some(c) = self.conns.lock().get(&addr) {
            let _ = c.tx.send(data);
        }
    }

    fn accept(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let old = self.conns.lock().insert(
            addr,
            Conn {
                id,
                tx,
                reader: None,
                writer: None,
            },
        );
        if let Some(old) = old {
            if let Some(r) = old.reader {
                r.abort();
            }
        }
        debug!(%addr, "TCP connection accepted");
        self.run_conn(stream, addr, id, rx);
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
                if t.inbound.send(Inbound::Data { data, peer }).is_err() {
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
