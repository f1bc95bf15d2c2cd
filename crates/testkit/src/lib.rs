//! Test helpers for call-engine's end-to-end tests: a scripted SIP phone over UDP on
//! loopback, with an RTP socket, written on plain text SIP so that it shares no code with
//! the engine it tests.
//!
//! A [`Phone`] registers (answering digest challenges), places calls, answers or rejects
//! calls, hangs up and sends/receives RTP. Every wait has a timeout and returns `None`
//! (or an error) instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test tool: failures are test failures

use md5::{Digest, Md5};
use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

/// A parsed SIP message (just enough for tests).
#[derive(Debug, Clone, PartialEq)]
pub struct SipMsg {
    /// The start line.
    pub start: String,
    /// Headers in order (name as written, value trimmed).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

fn compact(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        _ => name,
    }
}

impl SipMsg {
    /// Parses a datagram.
    pub fn parse(data: &[u8]) -> Option<SipMsg> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(SipMsg {
            start,
            headers,
            body: body.to_string(),
        })
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let mut it = self.start.split_whitespace();
        (it.next()? == "SIP/2.0").then_some(())?;
        it.next()?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0") {
            return None;
        }
        self.start.split_whitespace().next()
    }

    /// The first header of that name (case-insensitive, compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = compact(name).to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| compact(n).to_ascii_lowercase() == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let want = compact(name).to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| compact(n).to_ascii_lowercase() == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Call-ID.
    pub fn call_id(&self) -> String {
        self.header("call-id").unwrap_or_default().to_string()
    }

    /// CSeq method.
    pub fn cseq_method(&self) -> String {
        self.header("cseq")
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    }

    /// The `tag` parameter of a From/To header value.
    pub fn tag_of(value: &str) -> Option<String> {
        value
            .split(';')
            .find_map(|p| p.trim().strip_prefix("tag="))
            .map(|t| t.to_string())
    }

    /// The URI inside `<…>` (or the whole value).
    pub fn uri_of(value: &str) -> String {
        match (value.find('<'), value.find('>')) {
            (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
            _ => value.split(';').next().unwrap_or(value).trim().to_string(),
        }
    }
}

/// The media part of an SDP body: where to send RTP and the chosen payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpMedia {
    /// RTP address.
    pub addr: SocketAddr,
    /// First payload type on the m= line.
    pub pt: u8,
}

/// Reads c= and m=audio from an SDP body.
pub fn sdp_media(sdp: &str) -> Option<SdpMedia> {
    let mut ip = None;
    let mut port = None;
    let mut pt = None;
    for line in sdp.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.split('/').next().map(|s| s.trim().to_string());
        }
        if let Some(m) = line.strip_prefix("m=audio ") {
            let mut it = m.split_whitespace();
            port = it.next().and_then(|p| p.parse::<u16>().ok());
            it.next();
            pt = it.next().and_then(|p| p.parse::<u8>().ok());
        }
    }
    let addr = format!("{}:{}", ip?, port?).parse().ok()?;
    Some(SdpMedia { addr, pt: pt? })
}

/// One RTP packet as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RtpPacket {
    /// Parses an RTP datagram.
    pub fn parse(d: &[u8]) -> Option<RtpPacket> {
        if d.len() < 12 || d[0] >> 6 != 2 {
            return None;
        }
        let cc = usize::from(d[0] & 0x0f);
        let start = 12 + 4 * cc;
        Some(RtpPacket {
            pt: d[1] & 0x7f,
            seq: u16::from_be_bytes([d[2], d[3]]),
            ts: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
            payload: d.get(start..)?.to_vec(),
        })
    }

    /// Serialises.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(12 + self.payload.len());
        v.push(0x80);
        v.push(self.pt & 0x7f);
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.ts.to_be_bytes());
        v.extend_from_slice(&self.ssrc.to_be_bytes());
        v.extend_from_slice(&self.payload);
        v
    }
}

/// An established (or establishing) call as the phone sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// Their tag.
    pub remote_tag: String,
    /// Our URI (From for requests we send).
    pub local_uri: String,
    /// Their URI.
    pub remote_uri: String,
    /// Where to send in-dialog requests.
    pub remote_target: String,
    /// Their media.
    pub remote_media: Option<SdpMedia>,
    /// The INVITE (for answers) or the 200 (for our calls).
    pub message: SipMsg,
    /// Next CSeq for requests we send.
    pub cseq: u32,
}

fn rand_token() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn param(header: &str, name: &str) -> Option<String> {
    let h = header.trim_start_matches("Digest").trim();
    for part in h.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(name) {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

/// A scripted SIP phone on loopback (UDP).
pub struct Phone {
    /// The user part (agent id or caller number).
    pub user: String,
    /// Display name sent in From.
    pub display: Option<String>,
    /// The SIP domain.
    pub domain: String,
    /// The engine's SIP address.
    pub server: SocketAddr,
    sip: UdpSocket,
    /// Our SIP address.
    pub sip_addr: SocketAddr,
    rtp: UdpSocket,
    /// Our RTP address.
    pub rtp_addr: SocketAddr,
    backlog: VecDeque<(SipMsg, SocketAddr)>,
    cseq: u32,
    /// Call-IDs of dialogs this phone hung up on without its BYE reaching the engine.
    lost: std::collections::HashSet<String>,
}

/// Default wait for anything.
pub const WAIT: Duration = Duration::from_secs(10);

impl Phone {
    /// A phone for `user` talking to the engine at `server`.
    pub async fn new(user: &str, domain: &str, server: SocketAddr) -> Phone {
        let sip = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Phone {
            user: user.into(),
            display: None,
            domain: domain.into(),
            server,
            sip_addr: sip.local_addr().unwrap(),
            sip,
            rtp_addr: rtp.local_addr().unwrap(),
            rtp,
            backlog: VecDeque::new(),
            cseq: 1,
            lost: std::collections::HashSet::new(),
        }
    }

    /// Our contact URI.
    pub fn contact(&self) -> String {
        format!("sip:{}@{}", self.user, self.sip_addr)
    }

    fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{};rport",
            self.sip_addr,
            rand_token()
        )
    }

    /// An SDP offer/answer for our RTP socket with this payload type first.
    pub fn sdp(&self, pt: u8) -> String {
        let other = if pt == 0 { 8 } else { 0 };
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP {pt} {other} 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
            self.rtp_addr.port()
        )
    }

    /// An SDP answer with only one payload type.
    pub fn sdp_only(&self, pt: u8) -> String {
        let name = if pt == 0 { "PCMU" } else { "PCMA" };
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\na=sendrecv\r\n",
            self.rtp_addr.port()
        )
    }

    /// Sends raw text to an address.
    pub async fn send_to(&self, text: &str, to: SocketAddr) {
        self.sip.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// Sends raw text to the engine.
    pub async fn send(&self, text: &str) {
        self.send_to(text, self.server).await;
    }

    async fn recv_raw(&mut self, wait: Duration) -> Option<(SipMsg, SocketAddr)> {
        if let Some(m) = self.backlog.pop_front() {
            return Some(m);
        }
        let mut buf = vec![0u8; 65_535];
        let (n, from) = timeout(wait, self.sip.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        SipMsg::parse(&buf[..n]).map(|m| (m, from))
    }

    /// The next message matching `pred` within `wait`; others are kept for later.
    pub async fn recv_where(
        &mut self,
        wait: Duration,
        pred: impl Fn(&SipMsg) -> bool,
    ) -> Option<(SipMsg, SocketAddr)> {
        // First the backlog.
        if let Some(i) = self.backlog.iter().position(|(m, _)| pred(m)) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65_535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, from) = timeout(left, self.sip.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            if let Some(m) = SipMsg::parse(&buf[..n]) {
                if pred(&m) {
                    return Some((m, from));
                }
                if self.auto_answer(&m, from).await {
                    continue;
                }
                self.backlog.push_back((m, from));
            }
        }
    }

    /// What a real phone does on its own while the script waits for something else:
    /// OPTIONS get 200 (keepalive probes, in or out of a dialog), and any request in a
    /// dialog the phone has lost (see [`Phone::lose_dialog`]) gets 481. True when `m`
    /// was answered here.
    async fn auto_answer(&mut self, m: &SipMsg, from: SocketAddr) -> bool {
        let Some(method) = m.method() else {
            return false;
        };
        if method == "ACK" {
            return false;
        }
        if self.lost.contains(&m.call_id()) {
            self.respond(m, from, 481, "Call/Transaction Does Not Exist", "", None)
                .await;
            return true;
        }
        if method == "OPTIONS" {
            self.respond(m, from, 200, "OK", &rand_token(), None).await;
            return true;
        }
        false
    }

    /// Forgets dialog `d` as if the phone had hung up and its BYE had been lost on the
    /// way: nothing is sent; from now on requests in that dialog get 481 (RFC 3261
    /// 12.2.2), as a real phone answers for a call it no longer has.
    pub fn lose_dialog(&mut self, d: &Dialog) {
        self.lost.insert(d.call_id.clone());
    }

    /// The next message of any kind.
    pub async fn recv(&mut self, wait: Duration) -> Option<SipMsg> {
        self.recv_raw(wait).await.map(|(m, _)| m)
    }

    /// A final (or any ≥ `min`) response to a request with this Call-ID and CSeq method.
    pub async fn response(&mut self, call_id: &str, method: &str, min: u16) -> Option<SipMsg> {
        let (cid, m) = (call_id.to_string(), method.to_string());
        self.recv_where(WAIT, move |x| {
            x.status().is_some_and(|s| s >= min) && x.call_id() == cid && x.cseq_method() == m
        })
        .await
        .map(|(m, _)| m)
    }

    fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }

    /// Registers with `password` and `expires`; answers a digest challenge. Returns the
    /// final status.
    pub async fn register(&mut self, password: &str, expires: u32) -> u16 {
        let call_id = format!("reg-{}", rand_token());
        let tag = rand_token();
        let uri = format!("sip:{}", self.domain);
        let mut auth: Option<String> = None;
        for _ in 0..3 {
            let cseq = self.next_cseq();
            let req = format!(
                "REGISTER {uri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag={tag}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n{}User-Agent: testkit\r\nContent-Length: 0\r\n\r\n",
                self.via(),
                auth.as_ref().map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default(),
                aor = self.aor(),
                contact = self.contact(),
            );
            self.send(&req).await;
            let Some(resp) = self.response(&call_id, "REGISTER", 200).await else {
                return 0;
            };
            let status = resp.status().unwrap_or(0);
            if status != 401 && status != 407 {
                return status;
            }
            if auth.is_some()
                && param(resp.header("www-authenticate").unwrap_or(""), "stale").as_deref()
                    != Some("true")
            {
                return status;
            }
            let ch = resp
                .header("www-authenticate")
                .or_else(|| resp.header("proxy-authenticate"))
                .unwrap_or("")
                .to_string();
            let realm = param(&ch, "realm").unwrap_or_default();
            let nonce = param(&ch, "nonce").unwrap_or_default();
            let opaque = param(&ch, "opaque");
            let qop = param(&ch, "qop");
            let ha1 = md5_hex(&format!("{}:{realm}:{password}", self.user));
            let ha2 = md5_hex(&format!("REGISTER:{uri}"));
            let a = if qop
                .as_deref()
                .is_some_and(|q| q.split(',').any(|x| x.trim() == "auth"))
            {
                let cnonce = rand_token();
                let nc = "00000001";
                let resp = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
                format!(
                    "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\"{}",
                    self.user,
                    opaque.map(|o| format!(", opaque=\"{o}\"")).unwrap_or_default()
                )
            } else {
                let resp = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
                format!(
                    "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5{}",
                    self.user,
                    opaque.map(|o| format!(", opaque=\"{o}\"")).unwrap_or_default()
                )
            };
            auth = Some(a);
        }
        0
    }

    /// Calls `target` (a queue) offering `pt` first. Returns the dialog once answered (ACK
    /// sent), or the final error status.
    pub async fn call(&mut self, target: &str, pt: u8) -> Result<Dialog, u16> {
        let d = self.invite(target, pt).await?;
        self.ack(&d).await;
        Ok(d)
    }

    /// [`call`](Self::call) without the ACK of the 2xx: the dialog once answered, for the
    /// caller to [`ack`](Self::ack) (or not), or the final error status (ACKed).
    pub async fn invite(&mut self, target: &str, pt: u8) -> Result<Dialog, u16> {
        let sdp = self.sdp(pt);
        self.invite_with(target, Some(sdp)).await
    }

    /// A late offer: an INVITE without SDP. The dialog once answered (the 200 carries the
    /// far end's offer), for the caller to answer in the ACK
    /// ([`ack_answering`](Self::ack_answering)), or the final error status (ACKed).
    pub async fn invite_late(&mut self, target: &str) -> Result<Dialog, u16> {
        self.invite_with(target, None).await
    }

    async fn invite_with(&mut self, target: &str, sdp: Option<String>) -> Result<Dialog, u16> {
        let call_id = format!("call-{}", rand_token());
        let tag = rand_token();
        let cseq = self.next_cseq();
        let to = format!("sip:{target}@{}", self.domain);
        let from_uri = self.aor();
        let display = self
            .display
            .as_ref()
            .map(|d| format!("\"{d}\" "))
            .unwrap_or_default();
        let via = self.via();
        let body = match &sdp {
            Some(sdp) => format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            ),
            None => "Content-Length: 0\r\n\r\n".to_string(),
        };
        let req = format!(
            "INVITE {to} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {display}<{from_uri}>;tag={tag}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <{}>\r\n{body}",
            self.contact(),
        );
        self.send(&req).await;
        let resp = self.response(&call_id, "INVITE", 200).await.ok_or(0u16)?;
        let status = resp.status().unwrap_or(0);
        let remote_tag = resp
            .header("to")
            .and_then(SipMsg::tag_of)
            .unwrap_or_default();
        let to_hdr = resp.header("to").unwrap_or("").to_string();
        if status >= 300 {
            // ACK for a non-2xx: same branch as the INVITE.
            let ack = format!(
                "ACK {to} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {display}<{from_uri}>;tag={tag}\r\nTo: {to_hdr}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
            );
            self.send(&ack).await;
            return Err(status);
        }
        let remote_target = resp
            .header("contact")
            .map(SipMsg::uri_of)
            .unwrap_or_else(|| to.clone());
        let d = Dialog {
            call_id,
            local_tag: tag,
            remote_tag,
            local_uri: from_uri,
            remote_uri: to,
            remote_target,
            remote_media: sdp_media(&resp.body),
            message: resp,
            cseq,
        };
        Ok(d)
    }

    /// Sends the ACK for a 2xx.
    pub async fn ack(&self, d: &Dialog) {
        self.ack_with_body(d, "Content-Length: 0\r\n\r\n").await;
    }

    /// Sends the ACK for the 2xx of a late offer ([`invite_late`](Self::invite_late)),
    /// answering with `pt` only.
    pub async fn ack_answering(&self, d: &Dialog, pt: u8) {
        let sdp = self.sdp_only(pt);
        let body = format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        self.ack_with_body(d, &body).await;
    }

    async fn ack_with_body(&self, d: &Dialog, body: &str) {
        let ack = format!(
            "ACK {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: <{}>;tag={}\r\nCall-ID: {}\r\nCSeq: {} ACK\r\n{body}",
            d.remote_target,
            self.via(),
            d.local_uri,
            d.local_tag,
            d.remote_uri,
            d.remote_tag,
            d.call_id,
            d.cseq
        );
        self.send(&ack).await;
    }

    /// Sends an in-dialog request (BYE…) and returns the final status.
    pub async fn request(&mut self, d: &mut Dialog, method: &str) -> u16 {
        self.send_request(d, method).await;
        self.response(&d.call_id.clone(), method, 200)
            .await
            .and_then(|r| r.status())
            .unwrap_or(0)
    }

    /// Hangs up.
    pub async fn bye(&mut self, d: &mut Dialog) -> u16 {
        self.request(d, "BYE").await
    }

    /// Sends an in-dialog request (BYE…) without waiting for its response (which is
    /// kept for later like any other message).
    pub async fn send_request(&mut self, d: &mut Dialog, method: &str) {
        d.cseq += 1;
        let req = format!(
            "{method} {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: <{}>;tag={}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nContent-Length: 0\r\n\r\n",
            d.remote_target,
            self.via(),
            d.local_uri,
            d.local_tag,
            d.remote_uri,
            d.remote_tag,
            d.call_id,
            d.cseq
        );
        self.send(&req).await;
    }

    /// Answers an INVITE already received (180, then 200 with an SDP answer using
    /// `pt`) and waits for the ACK. Returns the dialog.
    pub async fn answer_invite(&mut self, inv: SipMsg, from: SocketAddr, pt: u8) -> Option<Dialog> {
        let tag = rand_token();
        self.respond(&inv, from, 180, "Ringing", &tag, None).await;
        let sdp = self.sdp_only(pt);
        self.respond(&inv, from, 200, "OK", &tag, Some(&sdp)).await;
        let cid = inv.call_id();
        self.recv_where(WAIT, |m| m.method() == Some("ACK") && m.call_id() == cid)
            .await?;
        let remote_from = inv.header("from").unwrap_or("").to_string();
        Some(Dialog {
            call_id: cid,
            local_tag: tag,
            remote_tag: SipMsg::tag_of(&remote_from).unwrap_or_default(),
            local_uri: SipMsg::uri_of(inv.header("to").unwrap_or("")),
            remote_uri: SipMsg::uri_of(&remote_from),
            remote_target: inv
                .header("contact")
                .map(SipMsg::uri_of)
                .unwrap_or_else(|| format!("sip:{from}")),
            remote_media: sdp_media(&inv.body),
            message: inv,
            cseq: 0,
        })
    }

    /// Waits for an INVITE (`wait`), without answering.
    pub async fn next_invite(&mut self, wait: Duration) -> Option<(SipMsg, SocketAddr)> {
        self.recv_where(wait, |m| m.method() == Some("INVITE"))
            .await
    }

    /// Answers a request with `status` (adding our tag to To, echoing Via/From/Call-ID/CSeq),
    /// optionally with an SDP body.
    pub async fn respond(
        &self,
        req: &SipMsg,
        from: SocketAddr,
        status: u16,
        reason: &str,
        tag: &str,
        sdp: Option<&str>,
    ) {
        let mut s = format!("SIP/2.0 {status} {reason}\r\n");
        for v in req.headers_named("via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        s.push_str(&format!("From: {}\r\n", req.header("from").unwrap_or("")));
        let to = req.header("to").unwrap_or("");
        if status > 100 && SipMsg::tag_of(to).is_none() {
            s.push_str(&format!("To: {to};tag={tag}\r\n"));
        } else {
            s.push_str(&format!("To: {to}\r\n"));
        }
        s.push_str(&format!("Call-ID: {}\r\n", req.call_id()));
        s.push_str(&format!("CSeq: {}\r\n", req.header("cseq").unwrap_or("")));
        s.push_str(&format!("Contact: <{}>\r\n", self.contact()));
        match sdp {
            Some(b) => s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        self.send_to(&s, from).await;
    }

    /// Waits for an INVITE and answers it: 180, then 200 with an SDP answer using `pt`,
    /// then waits for the ACK.
    /// Returns the dialog.
    pub async fn answer(&mut self, pt: u8, wait: Duration) -> Option<Dialog> {
        let (inv, from) = self.next_invite(wait).await?;
        self.answer_invite(inv, from, pt).await
    }

    /// Waits for an INVITE and rejects it with `status`, absorbing the ACK.
    pub async fn reject(&mut self, status: u16, wait: Duration) -> Option<SipMsg> {
        let (inv, from) = self.next_invite(wait).await?;
        let tag = rand_token();
        self.respond(&inv, from, status, "Rejected", &tag, None)
            .await;
        let cid = inv.call_id();
        self.recv_where(WAIT, |m| m.method() == Some("ACK") && m.call_id() == cid)
            .await?;
        Some(inv)
    }

    /// Waits for a request `method` in dialog `call_id` and answers 200.
    pub async fn expect_request(
        &mut self,
        call_id: &str,
        method: &str,
        wait: Duration,
    ) -> Option<SipMsg> {
        let (cid, m) = (call_id.to_string(), method.to_string());
        let (req, from) = self
            .recv_where(wait, move |x| {
                x.method() == Some(m.as_str()) && x.call_id() == cid
            })
            .await?;
        self.respond(&req, from, 200, "OK", "", None).await;
        Some(req)
    }

    /// Sends `count` RTP packets (20 ms apart) to `to`, payload type `pt`, each payload
    /// 160 bytes filled by `fill(i)`.
    pub async fn send_rtp(&self, to: SocketAddr, pt: u8, count: u16, fill: impl Fn(u16) -> u8) {
        let ssrc: u32 = rand::thread_rng().gen();
        for i in 0..count {
            let p = RtpPacket {
                pt,
                seq: 1000u16.wrapping_add(i),
                ts: 160 * u32::from(i),
                ssrc,
                payload: vec![fill(i); 160],
            };
            self.rtp.send_to(&p.to_bytes(), to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends DTMF digit `digit` (`0-9`, `*`, `#`) to `to` as an RFC 4733
    /// telephone-event on payload type 101: a few packets of one event, the last three
    /// with the end bit, as phones do.
    pub async fn send_dtmf(&self, to: SocketAddr, digit: char) {
        let event: u8 = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => return,
        };
        let ssrc: u32 = rand::thread_rng().gen();
        let ts: u32 = rand::thread_rng().gen();
        for i in 0..6u16 {
            let end = i >= 3;
            let duration = 400u16.saturating_mul(i.min(3) + 1);
            let mut payload = vec![event, if end { 0x80 | 10 } else { 10 }];
            payload.extend_from_slice(&duration.to_be_bytes());
            let p = RtpPacket {
                pt: 101,
                seq: 5000u16.wrapping_add(i),
                ts,
                ssrc,
                payload,
            };
            self.rtp.send_to(&p.to_bytes(), to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Receives RTP for `dur` and returns what arrived.
    pub async fn recv_rtp(&self, dur: Duration) -> Vec<RtpPacket> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match timeout(left, self.rtp.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    if let Some(p) = RtpPacket::parse(&buf[..n]) {
                        out.push(p);
                    }
                }
                _ => break,
            }
        }
        out
    }

    /// Discards RTP already queued on the socket.
    pub async fn drain_rtp(&self) {
        let mut buf = [0u8; 2048];
        while let Ok(Ok(_)) = timeout(Duration::from_millis(1), self.rtp.recv_from(&mut buf)).await
        {
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_and_sdp() {
        let m = SipMsg::parse(b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 1.2.3.4\r\nTo: <sip:a@b>;tag=xyz\r\ni: abc\r\nCSeq: 2 INVITE\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 8 0\r\n").unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.call_id(), "abc");
        assert_eq!(m.cseq_method(), "INVITE");
        assert_eq!(
            SipMsg::tag_of(m.header("to").unwrap()).as_deref(),
            Some("xyz")
        );
        let s = sdp_media(&m.body).unwrap();
        assert_eq!(s.pt, 8);
        assert_eq!(s.addr, "127.0.0.1:4000".parse().unwrap());
    }

    #[test]
    fn rtp_round_trip() {
        let p = RtpPacket {
            pt: 0,
            seq: 7,
            ts: 160,
            ssrc: 9,
            payload: vec![1, 2, 3],
        };
        assert_eq!(RtpPacket::parse(&p.to_bytes()), Some(p));
        assert_eq!(RtpPacket::parse(&[0u8; 5]), None);
    }

    #[test]
    fn digest_matches_rfc2617_example() {
        // RFC 2617 §3.5 example.
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let r = md5_hex(&format!(
            "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
        ));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }
}
