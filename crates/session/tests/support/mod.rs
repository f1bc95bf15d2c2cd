//! A small scripted SIP user agent for the integration tests (raw SIP text over tokio
//! UDP/TCP, parsed back with rvoip-sip-core to check it is valid SIP), and a test
//! environment: a fresh bus and a session adapter on 127.0.0.1:0 with small timers.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::wrong_self_convention
)]

use call_engine_bus::{EventBus, EventBusConfig, EventId, Filter, Publisher, Receiver};
use call_engine_events::{topics, EngineEvent, IdAllocator, SessionCommand, SessionEvent};
use call_engine_session::{SessionAdapter, SessionConfig, SipTimers};
use md5::{Digest, Md5};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Safety-net timeout for anything we wait for.
pub const WAIT: Duration = Duration::from_secs(5);
pub const DOMAIN: &str = "example.test";

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

/// A session event with its envelope metadata.
#[derive(Debug, Clone)]
pub struct Got {
    pub event: SessionEvent,
    pub id: EventId,
    pub causation: Option<EventId>,
    pub correlation: u64,
    pub source: &'static str,
}

pub struct Env {
    pub bus: EventBus<EngineEvent>,
    pub events: Receiver<EngineEvent>,
    pub commands: Publisher<EngineEvent>,
    pub sip: Option<SessionAdapter>,
    pub ids: Arc<IdAllocator>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

pub fn test_config() -> SessionConfig {
    let mut c = SessionConfig::new(DOMAIN);
    c.udp = Some("127.0.0.1:0".parse().unwrap());
    c.tcp = Some("127.0.0.1:0".parse().unwrap());
    c.credentials.insert("alice".into(), "secret".into());
    c.credentials.insert("bob".into(), "hunter2".into());
    c.min_expires_secs = 1;
    c.timers = SipTimers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
        t4: Duration::from_millis(100),
    };
    c
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut SessionConfig)) -> Env {
        Env::start_with_bus(f, EventBusConfig::default()).await
    }

    /// [`start_with`](Self::start_with) on a bus configured with `bus`.
    pub async fn start_with_bus(f: impl FnOnce(&mut SessionConfig), bus: EventBusConfig) -> Env {
        let mut cfg = test_config();
        f(&mut cfg);
        let bus = EventBus::<EngineEvent>::new(bus).unwrap();
        let events = bus.subscribe(Filter::topic(topics::SESSION_EVENTS));
        let commands = bus.publisher("test");
        let ids = Arc::new(IdAllocator::new());
        let sip = SessionAdapter::start(cfg, bus.clone(), ids.clone())
            .await
            .unwrap();
        let udp = sip.udp_addr().unwrap();
        let tcp = sip.tcp_addr().unwrap();
        assert_ne!(udp.port(), 0);
        assert_ne!(tcp.port(), 0);
        Env {
            bus,
            events,
            commands,
            sip: Some(sip),
            ids,
            udp,
            tcp,
        }
    }

    pub fn sip(&self) -> &SessionAdapter {
        self.sip.as_ref().unwrap()
    }

    /// The next session event (panics after [`WAIT`]).
    pub async fn event(&mut self) -> Got {
        let ev = tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for a session event")
            .expect("bus closed");
        let got = match &ev.payload {
            EngineEvent::Session(e) => Got {
                event: e.clone(),
                id: ev.id,
                causation: ev.causation,
                correlation: ev.correlation.0,
                source: ev.source,
            },
            other => panic!("unexpected message on the session events topic: {other:?}"),
        };
        // The correlation id is always the event's own (call, agent or default).
        assert_eq!(
            EngineEvent::Session(got.event.clone()).correlation().0,
            got.correlation
        );
        assert_eq!(got.source, "session");
        got
    }

    /// Whether some session event arrives within `d`.
    pub async fn event_within(&mut self, d: Duration) -> Option<Got> {
        match tokio::time::timeout(d, self.events.recv()).await {
            Ok(Ok(ev)) => match &ev.payload {
                EngineEvent::Session(e) => Some(Got {
                    event: e.clone(),
                    id: ev.id,
                    causation: ev.causation,
                    correlation: ev.correlation.0,
                    source: ev.source,
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// Publishes a session command; returns its event id.
    pub async fn command(&self, cmd: SessionCommand) -> EventId {
        let ev = EngineEvent::SessionCommand(cmd);
        let corr = ev.correlation();
        self.commands.publish(corr, None, ev).await.unwrap()
    }

    pub async fn shutdown(&mut self) {
        if let Some(sip) = self.sip.take() {
            tokio::time::timeout(WAIT, sip.shutdown())
                .await
                .expect("shutdown hangs");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// A SIP message as received by the test UA.
#[derive(Debug, Clone)]
pub struct Msg {
    pub text: String,
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub from: SocketAddr,
}

fn expand(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "v" => "via".into(),
        "f" => "from".into(),
        "t" => "to".into(),
        "i" => "call-id".into(),
        "m" => "contact".into(),
        "l" => "content-length".into(),
        "c" => "content-type".into(),
        other => other.into(),
    }
}

impl Msg {
    pub fn parse(data: &[u8], from: SocketAddr) -> Msg {
        // It must be valid SIP for rvoip-sip-core too.
        if let Err(e) = rvoip_sip_core::parse_message(data) {
            panic!(
                "the adapter sent unparsable SIP ({e}):\n{}",
                String::from_utf8_lossy(data)
            );
        }
        let text = String::from_utf8(data.to_vec()).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap().to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (expand(n.trim()), v.trim().to_string())
            })
            .collect();
        Msg {
            start,
            headers,
            body: body.to_string(),
            from,
            text,
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.start
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.split(' ').next())
            .and_then(|c| c.parse().ok())
    }

    pub fn method(&self) -> Option<&str> {
        (!self.start.starts_with("SIP/2.0")).then(|| self.start.split(' ').next().unwrap())
    }

    pub fn request_uri(&self) -> &str {
        self.start.split(' ').nth(1).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = expand(name);
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in:\n{}", self.text))
    }

    pub fn headers(&self, name: &str) -> Vec<&str> {
        let name = expand(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A `;name=value` parameter of a header.
    pub fn param(&self, header: &str, name: &str) -> Option<String> {
        param_of(self.h(header), name)
    }

    pub fn to_tag(&self) -> Option<String> {
        self.param("To", "tag")
    }

    pub fn from_tag(&self) -> Option<String> {
        self.param("From", "tag")
    }

    pub fn cseq(&self) -> (u32, String) {
        let c = self.h("CSeq");
        let (n, m) = c.split_once(' ').unwrap();
        (n.trim().parse().unwrap(), m.trim().to_string())
    }

    pub fn branch(&self) -> String {
        param_of(self.h("Via"), "branch").unwrap()
    }

    /// The URI inside `<...>` of a header (or the header itself).
    pub fn uri_of(&self, header: &str) -> String {
        let v = self.h(header);
        match (v.find('<'), v.find('>')) {
            (Some(a), Some(b)) => v[a + 1..b].to_string(),
            _ => v.split(';').next().unwrap().to_string(),
        }
    }
}

pub fn param_of(value: &str, name: &str) -> Option<String> {
    let after = match value.rfind('>') {
        Some(i) => &value[i..],
        None => value,
    };
    after.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A request written as text.
pub struct Req {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Option<(String, String)>,
}

impl Req {
    pub fn new(method: &str, uri: &str) -> Req {
        Req {
            method: method.into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn h(mut self, name: &str, value: impl ToString) -> Req {
        self.headers.push((name.into(), value.to_string()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &str) -> Req {
        self.body = Some((content_type.into(), body.into()));
        self
    }

    pub fn build(self) -> String {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        match &self.body {
            Some((ct, b)) => s.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s
    }
}

/// A response to `req` (copying Via/From/To/Call-ID/CSeq), with `to_tag` added.
pub fn response_to(req: &Msg, code: u16, reason: &str, to_tag: Option<&str>) -> RespText {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.headers("Via") {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!("From: {}\r\n", req.h("From")));
    match to_tag {
        Some(t) if req.to_tag().is_none() => {
            s.push_str(&format!("To: {};tag={t}\r\n", req.h("To")))
        }
        _ => s.push_str(&format!("To: {}\r\n", req.h("To"))),
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.h("Call-ID")));
    s.push_str(&format!("CSeq: {}\r\n", req.h("CSeq")));
    RespText(s)
}

pub struct RespText(String);

impl RespText {
    pub fn h(mut self, name: &str, value: impl ToString) -> RespText {
        self.0
            .push_str(&format!("{name}: {}\r\n", value.to_string()));
        self
    }

    pub fn build(self) -> String {
        format!("{}Content-Length: 0\r\n\r\n", self.0)
    }

    pub fn body(self, ct: &str, body: &str) -> String {
        format!(
            "{}Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
            self.0,
            body.len()
        )
    }
}

pub fn rand_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn branch() -> String {
    format!("z9hG4bK{}", rand_token())
}

pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An `Authorization` value answering `challenge` (qop=auth when offered and `use_qop`).
pub fn authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    use_qop: bool,
) -> String {
    authorization_nc(challenge, user, password, method, uri, use_qop.then_some(1))
}

/// [`authorization`] with qop=auth and nonce count `nc` (`None`: without qop).
pub fn authorization_nc(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: Option<u32>,
) -> String {
    let get = |k: &str| {
        challenge
            .trim_start_matches("Digest")
            .split(',')
            .find_map(|p| {
                let (a, b) = p.split_once('=')?;
                (a.trim() == k).then(|| b.trim().trim_matches('"').to_string())
            })
    };
    let realm = get("realm").unwrap();
    let nonce = get("nonce").unwrap();
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    if let Some(nc) = nc {
        let cnonce = rand_token();
        let nc = format!("{nc:08x}");
        let resp = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, cnonce=\"{cnonce}\", qop=auth, nc={nc}"
        )
    } else {
        let resp = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5"
        )
    }
}

pub const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
pub const SDP_ENGINE: &str = "v=0\r\no=call-engine 42 1 IN IP4 127.0.0.1\r\ns=call-engine\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 50000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

// ---------------------------------------------------------------------------------------
// The user agent
// ---------------------------------------------------------------------------------------

enum Link {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, buf: Vec<u8> },
}

/// A scripted phone: one UDP socket or one TCP connection.
pub struct Ua {
    link: Link,
    pub local: SocketAddr,
    /// Where `send` goes (the adapter), for UDP.
    pub server: SocketAddr,
    pub peer: SocketAddr,
}

/// An OPTIONS to the adapter's `queue` user with the given top Via.
pub fn options_req(via: &str) -> Req {
    Req::new("OPTIONS", &format!("sip:queue@{DOMAIN}"))
        .h("Via", via)
        .h("Max-Forwards", 70)
        .h("From", format!("<sip:probe@{DOMAIN}>;tag=p1"))
        .h("To", format!("<sip:queue@{DOMAIN}>"))
        .h("Call-ID", rand_token())
        .h("CSeq", "7 OPTIONS")
}

impl Ua {
    /// Sends `text` and returns the response of its transaction (`branch`).
    pub async fn ask(&mut self, text: &str, branch: &str) -> Msg {
        self.send(text).await;
        self.recv_where(|m| m.status().is_some() && m.branch() == branch)
            .await
    }

    /// An OPTIONS, answered 200.
    pub async fn options_ok(&mut self) -> Msg {
        let b = branch();
        let text = options_req(&self.via(&b)).build();
        let r = self.ask(&text, &b).await;
        assert_eq!(r.status(), Some(200), "{}", r.text);
        r
    }

    pub async fn udp(server: SocketAddr) -> Ua {
        Ua::udp_from(server, [127, 0, 0, 1].into()).await
    }

    /// A UDP UA on `ip` (another loopback address, say: the adapter sees another source).
    pub async fn udp_from(server: SocketAddr, ip: std::net::IpAddr) -> Ua {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let local = sock.local_addr().unwrap();
        Ua {
            link: Link::Udp(sock),
            local,
            server,
            peer: server,
        }
    }

    pub async fn tcp(server: SocketAddr) -> Ua {
        let stream = TcpStream::connect(server).await.unwrap();
        let local = stream.local_addr().unwrap();
        Ua {
            link: Link::Tcp {
                stream,
                buf: Vec::new(),
            },
            local,
            server,
            peer: server,
        }
    }

    /// Waits for the adapter to connect to `listener`.
    pub async fn accept(listener: &TcpListener) -> Ua {
        let (stream, peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("no TCP connection from the adapter")
            .unwrap();
        let local = listener.local_addr().unwrap();
        Ua {
            link: Link::Tcp {
                stream,
                buf: Vec::new(),
            },
            local,
            server: peer,
            peer,
        }
    }

    pub fn transport(&self) -> &'static str {
        match self.link {
            Link::Udp(_) => "UDP",
            Link::Tcp { .. } => "TCP",
        }
    }

    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.transport(),
            self.local
        )
    }

    /// This UA's contact URI.
    pub fn contact(&self, user: &str) -> String {
        match self.link {
            Link::Udp(_) => format!("sip:{user}@{}", self.local),
            Link::Tcp { .. } => format!("sip:{user}@{};transport=tcp", self.local),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, data: &[u8]) {
        let to = self.server;
        match &mut self.link {
            Link::Udp(s) => {
                s.send_to(data, to).await.unwrap();
            }
            Link::Tcp { stream, .. } => stream.write_all(data).await.unwrap(),
        }
    }

    /// Sends to a specific address (UDP only: e.g. back to where a request came from).
    pub async fn send_to(&mut self, text: &str, to: SocketAddr) {
        match &mut self.link {
            Link::Udp(s) => {
                s.send_to(text.as_bytes(), to).await.unwrap();
            }
            Link::Tcp { stream, .. } => stream.write_all(text.as_bytes()).await.unwrap(),
        }
    }

    /// The next message (panics after [`WAIT`]).
    pub async fn recv(&mut self) -> Msg {
        self.recv_within(WAIT)
            .await
            .expect("timed out waiting for a SIP message")
    }

    /// The next message within `d`, if any.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Msg> {
        tokio::time::timeout(d, self.recv_inner()).await.ok()
    }

    async fn recv_inner(&mut self) -> Msg {
        match &mut self.link {
            Link::Udp(s) => {
                let mut buf = vec![0u8; 65536];
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                Msg::parse(&buf[..n], from)
            }
            Link::Tcp { stream, buf } => {
                let from = stream.peer_addr().unwrap();
                loop {
                    // Skip keep-alive CRLFs.
                    while buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n') {
                        buf.remove(0);
                    }
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let cl = head
                            .split("\r\n")
                            .find_map(|l| {
                                let (n, v) = l.split_once(':')?;
                                let n = n.trim().to_ascii_lowercase();
                                (n == "content-length" || n == "l")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .expect("Content-Length on TCP");
                        let total = end + 4 + cl;
                        if buf.len() >= total {
                            let frame: Vec<u8> = buf.drain(..total).collect();
                            return Msg::parse(&frame, from);
                        }
                    }
                    let mut chunk = [0u8; 8192];
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the adapter closed the TCP connection");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    /// Receives until a message satisfying `pred` (others are returned in order after).
    pub async fn recv_where(&mut self, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self
                .recv_within(left)
                .await
                .expect("timed out waiting for a matching SIP message");
            if pred(&m) {
                return m;
            }
        }
    }

    /// Reads every message arriving within `d`.
    pub async fn drain(&mut self, d: Duration) -> Vec<Msg> {
        let mut v = Vec::new();
        while let Some(m) = self.recv_within(d).await {
            v.push(m);
        }
        v
    }

    /// REGISTER with digest authentication: 401, then the authenticated request.
    /// Returns the final response.
    pub async fn register(
        &mut self,
        user: &str,
        password: &str,
        contact: &str,
        expires: u32,
    ) -> Msg {
        let call_id = rand_token();
        let tag = rand_token();
        let uri = format!("sip:{DOMAIN}");
        let transport = self.transport();
        let local = self.local;
        let base = |cseq: u32, branch: &str| {
            Req::new("REGISTER", &uri)
                .h(
                    "Via",
                    format!("SIP/2.0/{transport} {local};branch={branch};rport"),
                )
                .h("Max-Forwards", 70)
                .h("From", format!("<sip:{user}@{DOMAIN}>;tag={tag}"))
                .h("To", format!("<sip:{user}@{DOMAIN}>"))
                .h("Call-ID", &call_id)
                .h("CSeq", format!("{cseq} REGISTER"))
                .h("Contact", format!("<{contact}>"))
                .h("Expires", expires)
        };
        let first = base(1, &branch()).build();
        self.send(&first).await;
        let challenge = self.recv().await;
        assert_eq!(challenge.status(), Some(401), "{}", challenge.text);
        let auth = authorization(
            challenge.h("WWW-Authenticate"),
            user,
            password,
            "REGISTER",
            &uri,
            true,
        );
        let second = base(2, &branch()).h("Authorization", auth).build();
        self.send(&second).await;
        self.recv().await
    }
}
