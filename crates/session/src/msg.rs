//! Inbound messages (rvoip-sip-core's parser, validated, plus the raw header text) and
//! outbound message text.

use crate::raw::{param, split_first_via, RawMessage, ViaParts};
use crate::transport::{Peer, Transport};
use bytes::Bytes;
use rvoip_sip_core::types::{Message, Request, Response};
use rvoip_sip_core::{parse_message, Method, StatusCode, Uri};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// What an inbound datagram or stream frame turned out to be.
#[derive(Debug)]
pub(crate) enum Parsed {
    Request(Box<InRequest>),
    Response(Box<InResponse>),
    /// A request we cannot process but can answer (400).
    BadRequest {
        raw: RawMessage,
        reason: String,
    },
    /// Nothing we can answer: dropped.
    Garbage(String),
}

/// A validated inbound request.
#[derive(Debug, Clone)]
pub(crate) struct InRequest {
    pub method: Method,
    /// The Request-URI, typed.
    pub uri: Uri,
    pub raw: RawMessage,
    pub call_id: String,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    pub cseq: u32,
    /// The top Via.
    pub via: ViaParts,
    pub branch: Option<String>,
    pub body: Bytes,
    /// Where it came from.
    pub peer: Peer,
}

/// A validated inbound response.
#[derive(Debug, Clone)]
pub(crate) struct InResponse {
    pub status: u16,
    pub raw: RawMessage,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: Method,
    pub branch: Option<String>,
    pub to_tag: Option<String>,
    pub body: Bytes,
}

impl InRequest {
    /// The method as written on the wire (`INVITE`, `FOO`).
    pub fn method_name(&self) -> String {
        self.method.to_string()
    }

    /// The server transaction key (RFC 3261 17.2.3): branch and sent-by, with ACK
    /// mapped onto its INVITE. RFC 2543 requests without the magic cookie are keyed by
    /// Call-ID, From tag, CSeq number and top Via.
    pub fn server_key(&self) -> String {
        let method = match self.method {
            Method::Ack => "INVITE".to_string(),
            ref m => m.to_string(),
        };
        self.server_key_for(&method)
    }

    /// The server transaction key of this request's branch for another method (CANCEL
    /// finds its INVITE this way).
    pub fn server_key_for(&self, method: &str) -> String {
        let sent_by = format!("{}:{}", self.via.host, self.via.port.unwrap_or(5060));
        match &self.branch {
            Some(b) if b.starts_with("z9hG4bK") => format!("{b}|{sent_by}|{method}"),
            _ => format!(
                "2543|{}|{}|{}|{sent_by}|{method}",
                self.call_id,
                self.from_tag.as_deref().unwrap_or(""),
                self.cseq
            ),
        }
    }

    /// Where responses go (RFC 3261 18.2.2, RFC 3581): the connection for TCP; for UDP
    /// the source IP and, with `rport`, the source port, else the Via port.
    pub fn response_peer(&self) -> Peer {
        match self.peer.transport {
            Transport::Tcp => self.peer,
            Transport::Udp => {
                let port = if param(&self.via.params, "rport").is_some() {
                    self.peer.addr.port()
                } else {
                    self.via.port.unwrap_or(5060)
                };
                Peer {
                    transport: Transport::Udp,
                    addr: SocketAddr::new(self.peer.addr.ip(), port),
                }
            }
        }
    }

    /// The SDP body, if the request carries one.
    pub fn sdp(&self) -> Option<String> {
        body_sdp(&self.raw, &self.body)
    }
}

impl InResponse {
    /// The SDP body, if the response carries one.
    pub fn sdp(&self) -> Option<String> {
        body_sdp(&self.raw, &self.body)
    }
}

fn body_sdp(raw: &RawMessage, body: &Bytes) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let is_sdp = raw
        .get("Content-Type")
        .map(|ct| ct.to_ascii_lowercase().starts_with("application/sdp"))
        .unwrap_or(true);
    if !is_sdp {
        return None;
    }
    std::str::from_utf8(body).ok().map(str::to_string)
}

/// Parses one message. Never panics: the typed parser runs under `catch_unwind`.
pub(crate) fn parse(data: &[u8], peer: Peer) -> Parsed {
    let raw = RawMessage::scan(data);
    let typed = std::panic::catch_unwind(|| parse_message(data));
    match typed {
        Err(_) => bad(raw, "parser panicked".to_string()),
        Ok(Err(e)) => bad(raw, format!("unparsable message: {e}")),
        Ok(Ok(Message::Request(r))) => {
            let raw = raw.unwrap_or_default();
            match validate_request(r, raw.clone(), peer) {
                Ok(req) => Parsed::Request(Box::new(req)),
                Err(reason) => bad(Some(raw), reason.to_string()),
            }
        }
        Ok(Ok(Message::Response(r))) => match validate_response(r, raw.unwrap_or_default()) {
            Some(resp) => Parsed::Response(Box::new(resp)),
            None => Parsed::Garbage("response without Via/Call-ID/CSeq".to_string()),
        },
    }
}

fn bad(raw: Option<RawMessage>, reason: String) -> Parsed {
    match raw {
        Some(raw)
            if raw
                .request_method()
                .is_some_and(|m| !m.eq_ignore_ascii_case("ACK"))
                && raw.get("Via").is_some() =>
        {
            Parsed::BadRequest { raw, reason }
        }
        _ => Parsed::Garbage(reason),
    }
}

fn validate_request(r: Request, raw: RawMessage, peer: Peer) -> Result<InRequest, &'static str> {
    if r.first_via().is_none() {
        return Err("Missing or malformed Via");
    }
    let top_via = raw
        .get("Via")
        .map(|v| split_first_via(v).0)
        .and_then(ViaParts::parse)
        .ok_or("Malformed Via")?;
    let from = r.from().ok_or("Missing or malformed From")?;
    let to = r.to().ok_or("Missing or malformed To")?;
    let call_id = r.call_id().ok_or("Missing Call-ID")?.to_string();
    if call_id.trim().is_empty() {
        return Err("Missing Call-ID");
    }
    let cseq = r.cseq().ok_or("Missing or malformed CSeq")?;
    if *cseq.method() != r.method {
        return Err("CSeq method does not match the request method");
    }
    Ok(InRequest {
        method: r.method.clone(),
        uri: r.uri.clone(),
        call_id,
        from_tag: from.tag().map(str::to_string),
        to_tag: to.tag().map(str::to_string),
        cseq: cseq.sequence(),
        branch: r.via_branch().map(str::to_string),
        via: top_via,
        body: r.body.clone(),
        raw,
        peer,
    })
}

fn validate_response(r: Response, raw: RawMessage) -> Option<InResponse> {
    let cseq = r.cseq()?;
    let call_id = r.call_id()?.to_string();
    Some(InResponse {
        status: r.status_code(),
        call_id,
        cseq: cseq.sequence(),
        cseq_method: cseq.method().clone(),
        branch: r.first_via_branch(),
        to_tag: r.to_tag(),
        body: r.body.clone(),
        raw,
    })
}

/// The reason phrase of a status code.
pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match StatusCode::from_u16(code) {
        Ok(s) if s.reason_phrase() != "Unknown" => s.reason_phrase(),
        _ => match code {
            100..=199 => "Session Progress",
            200..=299 => "OK",
            300..=399 => "Redirection",
            400..=499 => "Request Failure",
            500..=599 => "Server Failure",
            _ => "Global Failure",
        },
    }
}

/// Outbound message text, built line by line. Content-Length is always written.
#[derive(Debug, Clone)]
pub(crate) struct SipBuf {
    text: String,
}

impl SipBuf {
    pub fn request(method: &str, uri: &str) -> Self {
        Self {
            text: format!("{method} {uri} SIP/2.0\r\n"),
        }
    }

    pub fn response(code: u16) -> Self {
        Self {
            text: format!("SIP/2.0 {code} {}\r\n", reason_phrase(code)),
        }
    }

    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        let _ = write!(self.text, "{name}: {value}\r\n");
        self
    }

    pub fn header_opt(self, name: &str, value: Option<impl std::fmt::Display>) -> Self {
        match value {
            Some(v) => self.header(name, v),
            None => self,
        }
    }

    /// Ends the headers, with an optional body of the given content type.
    pub fn finish(mut self, body: Option<(&str, &[u8])>) -> Bytes {
        match body {
            Some((ct, b)) if !b.is_empty() => {
                let _ = write!(
                    self.text,
                    "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                );
                let mut out = self.text.into_bytes();
                out.extend_from_slice(b);
                Bytes::from(out)
            }
            _ => {
                self.text.push_str("Content-Length: 0\r\n\r\n");
                Bytes::from(self.text)
            }
        }
    }
}

/// Adds `received`/`rport` to the top Via element (RFC 3261 18.2.1, RFC 3581).
pub(crate) fn stamp_via(elem: &str, src: SocketAddr) -> String {
    let Some(parts) = ViaParts::parse(elem) else {
        return elem.to_string();
    };
    let head = match elem.find(';') {
        Some(i) => &elem[..i],
        None => elem,
    };
    let has_rport = param(&parts.params, "rport").is_some();
    let mut out = head.trim_end().to_string();
    for p in parts.params.split(';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let key = p.split('=').next().unwrap_or("").trim();
        if key.eq_ignore_ascii_case("received") {
            continue;
        }
        if key.eq_ignore_ascii_case("rport") {
            let _ = write!(out, ";rport={}", src.port());
        } else {
            out.push(';');
            out.push_str(p);
        }
    }
    let src_ip = src.ip().to_string();
    if has_rport || parts.host != src_ip {
        let _ = write!(out, ";received={src_ip}");
    }
    out
}

/// A response to a request, copying Via (top stamped), From, To (with `to_tag` added
/// when the request had none), Call-ID and CSeq from the raw request.
pub(crate) fn response_from_raw(
    raw: &RawMessage,
    src: SocketAddr,
    code: u16,
    to_tag: Option<&str>,
    server: &str,
) -> SipBuf {
    let mut b = SipBuf::response(code);
    for (i, via) in raw.get_all("Via").enumerate() {
        if i == 0 {
            let (first, rest) = split_first_via(via);
            let stamped = stamp_via(first, src);
            b = match rest {
                Some(rest) => b.header("Via", format!("{stamped}, {rest}")),
                None => b.header("Via", stamped),
            };
        } else {
            b = b.header("Via", via);
        }
    }
    if let Some(from) = raw.get("From") {
        b = b.header("From", from);
    }
    if let Some(to) = raw.get("To") {
        let has_tag = crate::raw::NameAddr::parse(to)
            .map(|n| n.param("tag").is_some())
            .unwrap_or(false);
        b = match to_tag {
            Some(tag) if !has_tag && code > 100 => b.header("To", format!("{to};tag={tag}")),
            _ => b.header("To", to),
        };
    }
    if let Some(cid) = raw.get("Call-ID") {
        b = b.header("Call-ID", cid);
    }
    if let Some(cseq) = raw.get("CSeq") {
        b = b.header("CSeq", cseq);
    }
    b.header("Server", server)
}

/// Best-effort 400 to a request that failed parsing or validation, copying whichever
/// of Via/From/To/Call-ID/CSeq it has (the caller checked there is a Via).
pub(crate) fn bad_request(raw: &RawMessage, src: SocketAddr, reason: &str, server: &str) -> Bytes {
    refusal(raw, src, 400, reason, server)
}

/// A `status` response (e.g. 400, 513) to a request that is not processed further, with
/// `reason` in a Warning header.
pub(crate) fn refusal(
    raw: &RawMessage,
    src: SocketAddr,
    status: u16,
    reason: &str,
    server: &str,
) -> Bytes {
    let tag = crate::core::new_tag();
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    response_from_raw(raw, src, status, Some(&tag), server)
        .header(
            "Warning",
            format!("399 call-engine {}", crate::raw::quote(&reason)),
        )
        .finish(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:4000".parse().unwrap(),
        }
    }

    #[test]
    fn stamps_received_and_rport() {
        let src: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        assert_eq!(
            stamp_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", src),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=4000;received=10.0.0.9"
        );
        assert_eq!(
            stamp_via("SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1", src),
            "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1"
        );
    }

    #[test]
    fn validates_requests() {
        let ok = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKa;rport\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        match parse(ok.as_bytes(), peer()) {
            Parsed::Request(r) => {
                assert_eq!(r.method, Method::Options);
                assert_eq!(r.response_peer().addr.port(), 4000);
                assert!(r
                    .server_key()
                    .starts_with("z9hG4bKa|127.0.0.1:4000|OPTIONS"));
            }
            other => panic!("{other:?}"),
        }
        let no_cid = ok.replace("Call-ID: c\r\n", "");
        assert!(matches!(
            parse(no_cid.as_bytes(), peer()),
            Parsed::BadRequest { .. }
        ));
        let wrong_cseq = ok.replace("1 OPTIONS", "1 INVITE");
        assert!(matches!(
            parse(wrong_cseq.as_bytes(), peer()),
            Parsed::BadRequest { .. }
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage", peer()),
            Parsed::Garbage(_)
        ));
        let built = SipBuf::response(200)
            .header("X", 1)
            .finish(Some(("text/plain", b"hi")));
        assert!(built.ends_with(b"Content-Length: 2\r\n\r\nhi"));
    }
}
