//! Raw header text: a tolerant line scanner over a message's header block, and small
//! parsers for the header grammars we need verbatim (name-addr, parameters, comma lists,
//! auth parameters).
//!
//! The typed parser of rvoip-sip-core validates messages and gives us tags, branches and
//! CSeq; but responses must copy Via/From/To/Call-ID/CSeq *as received* (its serializer
//! percent-encodes `+` in user parts and drops the commas between several contacts of
//! one header), the digest `uri` must be hashed as the client sent it, and a message that
//! does not parse still needs a best-effort 400. Everything here works on `&str` slices
//! at ASCII delimiters, so it never splits a UTF-8 character and never panics.

/// One header line, unfolded, with its name canonicalised (compact forms expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub name: String,
    pub value: String,
}

/// The start line and header lines of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawMessage {
    pub start_line: String,
    pub headers: Vec<RawHeader>,
}

/// Upper bound on the header lines we keep (the typed parser allows 100).
const MAX_HEADERS: usize = 256;

impl RawMessage {
    /// Scans the header block of `data` (up to the first empty line, or the end).
    /// Returns `None` when there is no start line at all.
    pub fn scan(data: &[u8]) -> Option<RawMessage> {
        let end = find(data, b"\r\n\r\n")
            .or_else(|| find(data, b"\n\n"))
            .unwrap_or(data.len());
        let block = String::from_utf8_lossy(&data[..end]);
        let mut lines = block.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start_line = lines.next()?.trim().to_string();
        if start_line.is_empty() {
            return None;
        }
        let mut headers: Vec<RawHeader> = Vec::new();
        for line in lines {
            if headers.len() >= MAX_HEADERS {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.value.push(' ');
                    last.value.push_str(line.trim());
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.is_empty() || name.contains([' ', '\t']) {
                continue;
            }
            headers.push(RawHeader {
                name: canonical_name(name),
                value: value.trim().to_string(),
            });
        }
        Some(RawMessage {
            start_line,
            headers,
        })
    }

    /// The first value of a header (case-insensitive, compact forms expanded).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every line of a header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every element of a comma-separated header, over all its lines.
    pub fn get_list(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(split_commas)
            .map(|s| s.to_string())
            .collect()
    }

    /// The request method, when the start line looks like a request line
    /// (`METHOD uri SIP/2.0`).
    pub fn request_method(&self) -> Option<&str> {
        let mut parts = self.start_line.split_whitespace();
        let method = parts.next()?;
        let _uri = parts.next()?;
        let version = parts.next()?;
        if parts.next().is_some() || !version.eq_ignore_ascii_case("SIP/2.0") {
            return None;
        }
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return None;
        }
        Some(method)
    }

    /// The Request-URI text of a request line.
    pub fn request_uri(&self) -> Option<&str> {
        self.start_line.split_whitespace().nth(1)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Canonical spelling of a header name (compact forms expanded, known names in their
/// usual case); unknown names are kept as received.
pub(crate) fn canonical_name(name: &str) -> String {
    let known = match name.to_ascii_lowercase().as_str() {
        "v" | "via" => "Via",
        "f" | "from" => "From",
        "t" | "to" => "To",
        "i" | "call-id" => "Call-ID",
        "m" | "contact" => "Contact",
        "l" | "content-length" => "Content-Length",
        "c" | "content-type" => "Content-Type",
        "e" | "content-encoding" => "Content-Encoding",
        "k" | "supported" => "Supported",
        "s" | "subject" => "Subject",
        "o" | "event" => "Event",
        "r" | "refer-to" => "Refer-To",
        "b" | "referred-by" => "Referred-By",
        "u" | "allow-events" => "Allow-Events",
        "x" | "session-expires" => "Session-Expires",
        "cseq" => "CSeq",
        "record-route" => "Record-Route",
        "route" => "Route",
        "expires" => "Expires",
        "authorization" => "Authorization",
        "max-forwards" => "Max-Forwards",
        _ => return name.to_string(),
    };
    known.to_string()
}

/// Splits at commas that are outside double quotes and angle brackets.
pub(crate) fn split_commas(s: &str) -> impl Iterator<Item = &str> {
    split_outside(s, ',')
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Splits at `sep` outside double quotes (with backslash escapes) and angle brackets.
fn split_outside(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = 0usize;
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => angle += 1,
            '>' if !in_quotes => angle = angle.saturating_sub(1),
            c if c == sep && !in_quotes && angle == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A `name-addr` or `addr-spec` with its header parameters, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    /// The URI, without angle brackets.
    pub uri: String,
    /// Header parameters (`;tag=..;expires=..`), including the leading `;`, or empty.
    pub params: String,
}

impl NameAddr {
    /// Parses `"Name" <uri>;params`, `Name <uri>;params` or `uri;params`.
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        // Find a '<' outside quotes.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut lt = None;
        for (i, ch) in s.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match ch {
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '<' if !in_quotes => {
                    lt = Some(i);
                    break;
                }
                _ => {}
            }
        }
        if let Some(lt) = lt {
            let gt = lt + s[lt..].find('>')?;
            let uri = s[lt + 1..gt].trim().to_string();
            if uri.is_empty() {
                return None;
            }
            let display = unquote(s[..lt].trim());
            let params = s[gt + 1..].trim().to_string();
            Some(NameAddr {
                display: (!display.is_empty()).then_some(display),
                uri,
                params,
            })
        } else {
            // addr-spec: parameters after the URI belong to the header.
            let (uri, params) = match s.find(';') {
                Some(i) => (&s[..i], &s[i..]),
                None => (s, ""),
            };
            let uri = uri.trim();
            if uri.is_empty() || uri.contains([' ', '"']) {
                return None;
            }
            Some(NameAddr {
                display: None,
                uri: uri.to_string(),
                params: params.trim().to_string(),
            })
        }
    }

    /// A header parameter: `Some(None)` for a flag, `Some(Some(v))` for `name=v`.
    pub fn param(&self, name: &str) -> Option<Option<String>> {
        param(&self.params, name)
    }
}

/// Looks up `name` in a `;a=b;c` parameter string (case-insensitive names).
pub(crate) fn param(params: &str, name: &str) -> Option<Option<String>> {
    for p in split_outside(params, ';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
            None => (p, None),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

/// Removes surrounding double quotes and backslash escapes.
pub(crate) fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        let inner = &s[1..s.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut escaped = false;
        for ch in inner.chars() {
            if escaped {
                out.push(ch);
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else {
                out.push(ch);
            }
        }
        out
    } else {
        s.to_string()
    }
}

/// Quotes a display name for a header (`"Jane \"JD\" Doe"`).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Percent-encodes what may not appear in the user part of a SIP URI (RFC 3261 `user`).
pub(crate) fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parameters of an auth header (`Digest a="b", c=d`): the scheme and the lowercase
/// parameter names with unquoted values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuthParams {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    pub fn parse(s: &str) -> Option<AuthParams> {
        let s = s.trim();
        let (scheme, rest) = match s.find([' ', '\t']) {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        for part in split_commas(rest) {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), unquote(v.trim())),
                None => continue,
            };
            if !k.is_empty() {
                params.push((k.to_ascii_lowercase(), v));
            }
        }
        Some(AuthParams {
            scheme: scheme.to_string(),
            params,
        })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The first element of a Via header value and the rest (if the line held several).
pub(crate) fn split_first_via(value: &str) -> (&str, Option<&str>) {
    let parts = split_outside(value, ',');
    match parts.first() {
        Some(first) if parts.len() > 1 => {
            let rest = value[first.len() + 1..].trim();
            (first.trim(), (!rest.is_empty()).then_some(rest))
        }
        _ => (value.trim(), None),
    }
}

/// The parts of one Via element: transport (upper case), sent-by host and port, and
/// the parameter string (with leading `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViaParts {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: String,
}

impl ViaParts {
    pub fn parse(via: &str) -> Option<ViaParts> {
        let via = via.trim();
        let (proto, rest) = via.split_once(|c: char| c.is_ascii_whitespace())?;
        let transport = proto.rsplit('/').next()?.trim().to_ascii_uppercase();
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by)?;
        Some(ViaParts {
            transport,
            host,
            port,
            params: params.to_string(),
        })
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &rest[..close];
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.trim().parse().ok()?))),
        Some(_) => Some((s.to_string(), None)), // bare IPv6 without brackets
        None => Some((s.to_string(), None)),
    }
}

/// The user part of a SIP/SIPS/TEL URI, percent-decoded (`+1555` of
/// `sip:%2B1555@host;user=phone`).
pub(crate) fn uri_user(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.trim().split_once(':')?;
    let user = if scheme.eq_ignore_ascii_case("tel") {
        rest.split([';', '?']).next()?
    } else {
        let at = rest.find('@')?;
        let userinfo = &rest[..at];
        userinfo.split(':').next()?
    };
    if user.is_empty() {
        return None;
    }
    Some(percent_decode(user))
}

/// A URI parameter (`transport` of `sip:a@h:5060;transport=tcp`).
pub(crate) fn uri_param(uri: &str, name: &str) -> Option<Option<String>> {
    let uri = uri.split('?').next().unwrap_or(uri);
    let after_host = match uri.find('@') {
        Some(at) => &uri[at..],
        None => uri,
    };
    let i = after_host.find(';')?;
    param(&after_host[i..], name)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = &bytes[i + 1..i + 3];
            let v = std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = v {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_headers_with_folding_and_compact_forms() {
        let msg = b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nSubject: a\r\n  b\r\ni: x\r\nX-Skills: a, b\r\n\r\nbody";
        let raw = RawMessage::scan(msg).unwrap();
        assert_eq!(raw.request_method(), Some("INVITE"));
        assert_eq!(raw.get("via"), Some("SIP/2.0/UDP h;branch=z9hG4bK1"));
        assert_eq!(raw.get("Subject"), Some("a b"));
        assert_eq!(raw.get("Call-ID"), Some("x"));
        assert_eq!(raw.get_list("x-skills"), vec!["a", "b"]);
        assert!(RawMessage::scan(b"").is_none());
        assert!(RawMessage::scan(b"\xff\xfe garbage")
            .unwrap()
            .request_method()
            .is_none());
    }

    #[test]
    fn parses_name_addr_forms() {
        let n = NameAddr::parse(r#""Jane \"JD\" Doe" <sip:+1555@x;user=phone>;tag=abc"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Jane "JD" Doe"#));
        assert_eq!(n.uri, "sip:+1555@x;user=phone");
        assert_eq!(n.param("tag"), Some(Some("abc".into())));
        let n = NameAddr::parse("sip:alice@10.0.0.1:5060;expires=30").unwrap();
        assert_eq!(n.uri, "sip:alice@10.0.0.1:5060");
        assert_eq!(n.param("expires"), Some(Some("30".into())));
        let n = NameAddr::parse("Bob <sip:bob@h>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob"));
        assert!(NameAddr::parse("<>").is_none());
        assert!(NameAddr::parse("\"unterminated <sip:a@b").is_none());
        let list: Vec<_> = split_commas(r#"<sip:a@b>;expires=0, "x, y" <sip:c@d>"#).collect();
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn parses_auth_and_via() {
        let a = AuthParams::parse(
            r#"Digest username="alice", realm="r", uri="sip:r", qop=auth, nc=00000001"#,
        )
        .unwrap();
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.get("username"), Some("alice"));
        assert_eq!(a.get("qop"), Some("auth"));
        let (first, rest) = split_first_via("SIP/2.0/UDP a:1;branch=x, SIP/2.0/TCP b");
        assert_eq!(first, "SIP/2.0/UDP a:1;branch=x");
        assert_eq!(rest, Some("SIP/2.0/TCP b"));
        let v = ViaParts::parse("SIP/2.0/tcp [::1]:5070;rport;branch=z").unwrap();
        assert_eq!(
            (v.transport.as_str(), v.host.as_str(), v.port),
            ("TCP", "::1", Some(5070))
        );
        assert_eq!(param(&v.params, "rport"), Some(None));
        assert!(ViaParts::parse("garbage").is_none());
        assert_eq!(escape_user("+1 55"), "+1%2055");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn uri_helpers() {
        assert_eq!(
            uri_user("sip:%2B1555@h;user=phone").as_deref(),
            Some("+1555")
        );
        assert_eq!(uri_user("sip:alice:pw@h").as_deref(), Some("alice"));
        assert_eq!(
            uri_user("tel:+1555;phone-context=x").as_deref(),
            Some("+1555")
        );
        assert_eq!(uri_user("sip:h"), None);
        assert_eq!(uri_user("sip:a%2@h").as_deref(), Some("a%2"));
        assert_eq!(uri_user("sip:a%@h").as_deref(), Some("a%"));
        assert_eq!(
            uri_param("sip:a@h:1;transport=TCP;ob", "transport"),
            Some(Some("TCP".into()))
        );
        assert_eq!(uri_param("sip:a;b@h", "b"), None);
        assert_eq!(uri_param("sip:h;lr", "lr"), Some(None));
    }
}
