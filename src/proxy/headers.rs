//! Header hygiene: hop-by-hop headers stay on their hop, forwarding headers are the gateway's.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Removes a response's hop-by-hop headers (RFC 9110 §7.6.1), including those its
/// `Connection` header names (a request's head is made without them: [`Forwarding`]). The
/// names are those a forwarded head leaves out (`Role::of`): requests and responses leave
/// the same ones behind. Most responses have none, and then nothing is allocated.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| matches!(Role::of(name), Role::Hop | Role::Upgrade))
        .cloned()
        .collect();
    if hop.contains(&header::CONNECTION) {
        hop.extend(connection_named(headers, false));
    }
    for name in &hop {
        headers.remove(name);
    }
}

/// Refuses request-smuggling shapes: a body framed both by `Content-Length` and by
/// `Transfer-Encoding`, or a transfer coding other than plain `chunked`. hyper would pick one
/// reading; a proxy must not let two readings exist.
pub fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let encodings: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if encodings.is_empty() {
        return Ok(());
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err("both Content-Length and Transfer-Encoding frame the body");
    }
    let only_chunked = encodings.len() == 1 && encodings[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
    if !only_chunked {
        return Err("Transfer-Encoding other than `chunked`");
    }
    Ok(())
}

/// A WebSocket handshake must be a GET with version 13 and a 16-byte base64 key (RFC 6455
/// §4.1); anything else is refused before a runtime is started for it.
pub fn check_websocket_handshake(method: &http::Method, headers: &HeaderMap) -> Result<(), &'static str> {
    use base64::Engine;
    if method != http::Method::GET {
        return Err("a WebSocket handshake must be a GET");
    }
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = headers
        .get("sec-websocket-key")
        .map(|v| v.as_bytes().trim_ascii())
        .unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(decoded) if decoded.len() == 16 => Ok(()),
        _ => Err("Sec-WebSocket-Key must be 16 bytes in base64"),
    }
}

/// True for an HTTP/1.1 WebSocket handshake.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// How a forwarded request's head is made from the client's: hop-by-hop headers stay on
/// their hop (`Upgrade` goes on for a WebSocket handshake, with `Connection: upgrade`),
/// `X-Forwarded-*` are the gateway's (what a trusted proxy sent is kept and extended), and
/// what the caller names (credentials, `Origin`, a cookie) goes no further.
///
/// The head is the client's map, edited, and the client's head is left a copy of it as it
/// came (for a request sent again, and an error page): one pass over the copy (no hashing)
/// finds the few headers that go, and only those are looked up and taken out. Copying a map
/// costs a fraction of building one (each header appended to a new map is hashed and placed
/// again: about 230 instructions a header, counted with callgrind), and a browser sends a
/// dozen or more. The edited map is hyper's own, not the copy, because it has room to spare:
/// hyper parses each request into the map of an earlier message on the connection, where a
/// copy has room for exactly what it holds, and the first header the gateway adds would
/// move all of them to a larger one (once a request, counted with callgrind).
pub struct Forwarding<'a> {
    /// The client's address as a header value, appended to `X-Forwarded-For`.
    pub peer: &'a HeaderValue,
    /// The peer is a trusted proxy (the tunnel): the `X-Forwarded-*` it sent are believed.
    pub trusted: bool,
    /// The client came over TLS: `X-Forwarded-Proto: https` whatever it said.
    pub tls: bool,
    /// A WebSocket handshake: `Upgrade` goes on, with `Connection: upgrade`.
    pub upgrade: bool,
    /// The client's `Host` goes on (the default upstream serves the public name); otherwise
    /// the sender sets the upstream's ([`super::upstream::HostHeader`]).
    pub keep_host: bool,
    /// The client's headers that go no further (credentials, `Origin`).
    pub drop: &'a [HeaderName],
    /// The cookie that goes no further (the gateway's view cookie): taken out of `Cookie`.
    pub drop_cookie: &'a str,
}

/// At most how many headers [`Forwarding::head`] adds to the client's: `X-Forwarded-For`,
/// `-Proto`, `-Host`, `Connection`, `Cookie` and the caller's (a runtime's key and owner).
const GATEWAY_HEADERS: usize = 8;

/// What a header is to [`Forwarding::head`] and [`strip_hop_by_hop`].
enum Role {
    Host,
    Cookie,
    /// Hop-by-hop (RFC 9110 §7.6.1), `Upgrade` aside.
    Hop,
    Upgrade,
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    /// `Forwarded` (RFC 7239): a trusted proxy's goes on as it is, anyone else's goes.
    Forwarded,
    Other,
}

impl Role {
    fn of(name: &HeaderName) -> Role {
        match name.as_str() {
            "host" => Role::Host,
            "cookie" => Role::Cookie,
            "upgrade" => Role::Upgrade,
            "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding" => Role::Hop,
            "x-forwarded-for" => Role::ForwardedFor,
            "x-forwarded-proto" => Role::ForwardedProto,
            "x-forwarded-host" => Role::ForwardedHost,
            "forwarded" => Role::Forwarded,
            _ => Role::Other,
        }
    }
}

impl Forwarding<'_> {
    /// The head that goes to the upstream: the client's `headers` as this says, then
    /// `extra` (the gateway's own for this attempt); `headers` is left an equal copy of
    /// what it was. `authority` is the request URI's: the public host (`X-Forwarded-Host`)
    /// when the client sent no `Host` (HTTP/2).
    pub fn head(
        &self,
        headers: &mut HeaderMap,
        authority: Option<&str>,
        extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    ) -> HeaderMap {
        let copy = headers.clone();
        let mut head = std::mem::replace(headers, copy);
        let headers = &*headers;
        // Room for the gateway's own at once, where the map has less (a connection's first
        // request): growing later would move every entry again.
        head.reserve(GATEWAY_HEADERS);
        let mut public_host = None;
        // A trusted proxy sent `X-Forwarded-For` (in one field or several).
        let mut forwarded_for = false;
        let (mut has_proto, mut has_host) = (false, false);
        // `Cookie` is rewritten when it carries the view cookie or comes in several fields
        // (HTTP/2 splits it; HTTP/1.1 allows one).
        let (mut cookie_fields, mut drops_cookie) = (0, false);
        let mut has_connection = false;
        // A name that comes more than once is taken out at its first (all its values go).
        for (name, value) in headers {
            let role = Role::of(name);
            if matches!(role, Role::Host) && public_host.is_none() {
                public_host = Some(value);
            }
            let goes = match role {
                Role::Hop => {
                    has_connection |= name == header::CONNECTION;
                    true
                }
                Role::Host => !self.keep_host,
                Role::Upgrade => !self.upgrade,
                // Set below, extending what a trusted proxy sent.
                Role::ForwardedFor => {
                    forwarded_for |= self.trusted;
                    false
                }
                Role::ForwardedProto | Role::ForwardedHost | Role::Forwarded if !self.trusted => true,
                // Set below (a trusted proxy's is replaced over TLS).
                Role::ForwardedProto => {
                    has_proto = true;
                    false
                }
                Role::ForwardedHost => {
                    has_host = true;
                    false
                }
                Role::Forwarded => false,
                Role::Cookie => {
                    cookie_fields += 1;
                    drops_cookie |= cookie_pairs(value).any(|pair| self.is_dropped_cookie(pair));
                    false
                }
                Role::Other => self.drop.contains(name),
            };
            if goes {
                head.remove(name);
            }
        }
        // Headers the `Connection` header names are hop-by-hop too (most requests send none).
        if has_connection {
            for name in connection_named(headers, self.upgrade) {
                match Role::of(&name) {
                    Role::ForwardedFor => forwarded_for = false,
                    Role::ForwardedProto => has_proto = false,
                    Role::ForwardedHost => has_host = false,
                    Role::Cookie => (cookie_fields, drops_cookie) = (0, false),
                    _ => {}
                }
                head.remove(&name);
            }
        }
        // The chain the trusted proxy sent, every field of it in order, then the peer.
        let forwarded_for = if forwarded_for {
            let mut chain: Vec<&str> = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            chain.push(self.peer.to_str().unwrap_or_default());
            HeaderValue::from_str(&chain.join(", ")).ok()
        } else {
            Some(self.peer.clone())
        };
        match forwarded_for {
            Some(value) => head.insert(X_FORWARDED_FOR, value),
            None => head.remove(X_FORWARDED_FOR),
        };
        if self.tls {
            head.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        } else if !has_proto {
            head.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !has_host {
            let public_host = public_host
                .cloned()
                .or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
            if let Some(public_host) = public_host {
                head.insert(X_FORWARDED_HOST, public_host);
            }
        }
        if self.upgrade {
            head.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if drops_cookie || cookie_fields > 1 {
            let kept = headers
                .get_all(header::COOKIE)
                .iter()
                .flat_map(cookie_pairs)
                .filter(|pair| !self.is_dropped_cookie(pair))
                .collect::<Vec<_>>()
                .join("; ");
            head.remove(header::COOKIE);
            if let Ok(value) = HeaderValue::from_str(&kept)
                && !kept.is_empty()
            {
                head.insert(header::COOKIE, value);
            }
        }
        for (name, value) in extra {
            head.insert(name, value);
        }
        head
    }

    /// True for a `name=value` pair of the cookie that goes no further.
    fn is_dropped_cookie(&self, pair: &str) -> bool {
        pair.split_once('=').is_some_and(|(name, _)| name == self.drop_cookie)
    }
}

/// The `name=value` pairs of a `Cookie` field.
fn cookie_pairs(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

/// The names a message's `Connection` header lists (but `Upgrade` when it is kept): most
/// messages send none, and then nothing is allocated.
fn connection_named(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect()
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Room for a value the gateway writes for every request ([`request_id`], [`ip_value`]).
const SHORT_VALUE: usize = 64;

/// The text of a short header value, written in place without `fmt` (whose machinery costs
/// more than the writing) and then put in one allocation its clones share (a value made
/// from a `String` is copied once, and again the first time it is cloned).
struct ShortValue {
    bytes: [u8; SHORT_VALUE],
    len: usize,
}

impl Default for ShortValue {
    fn default() -> Self {
        ShortValue {
            bytes: [0; SHORT_VALUE],
            len: 0,
        }
    }
}

impl ShortValue {
    /// Appends a byte; callers write less than [`SHORT_VALUE`] bytes.
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// The value, in one allocation its clones share.
    fn into_header(self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(self))
    }
}

impl AsRef<[u8]> for ShortValue {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A peer address as a header value (`X-Forwarded-For`).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an IPv6 address is a header value");
    };
    let mut value = ShortValue::default();
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            value.push(b'.');
        }
        if octet >= 100 {
            value.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            value.push(b'0' + octet / 10 % 10);
        }
        value.push(b'0' + octet % 10);
    }
    value.into_header().expect("digits and dots")
}

/// The header that carries a request's id, from the client (when trusted), to the runtime
/// and back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the `X-Request-Id` a trusted proxy sent (1 to 128 visible ASCII
/// characters), else a new one (a per-process random prefix and a counter: unique, cheap).
pub fn request_id(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    if trusted
        && let Some(given) = headers.get(&REQUEST_ID)
        && (1..=128).contains(&given.len())
        && given.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return given.clone();
    }
    static PREFIX: OnceLock<[u8; 12]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).ok();
        let mut prefix = [0u8; 12];
        for (i, byte) in random.into_iter().enumerate() {
            prefix[2 * i] = HEX[usize::from(byte >> 4)];
            prefix[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
        }
        prefix
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut value = ShortValue::default();
    for &b in prefix {
        value.push(b);
    }
    value.push(b'-');
    // The counter in lowercase hex, without leading zeros.
    let digits = (u64::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        value.push(HEX[((n >> (shift * 4)) & 0x0f) as usize]);
    }
    value.into_header().expect("hex digits")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// True when the request says the client used HTTPS (`X-Forwarded-Proto`): believed of a
/// trusted proxy in front (the tunnel) only.
pub fn says_https(headers: &HeaderMap) -> bool {
    headers
        .get(X_FORWARDED_PROTO)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn strip_hop_by_hop_takes_out_only_the_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("same length as connection"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::HOST, HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["user-agent", "host"]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "nothing more to take out");
    }

    #[test]
    fn gateway_made_values_are_written_right() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "fd00::2",
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), ip);
        }
        let first = request_id(&HeaderMap::new(), false);
        let second = request_id(&HeaderMap::new(), false);
        let (prefix, n) = first.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(prefix.len(), 12);
        assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let next = u64::from_str_radix(n, 16).unwrap() + 1;
        // Other tests take ids too: the counter only goes up.
        let (same, m) = second.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(same, prefix);
        assert!(u64::from_str_radix(m, 16).unwrap() >= next, "{first:?} then {second:?}");
        assert!(!m.starts_with('0') || m == "0", "no leading zeros: {m}");
    }

    #[test]
    fn conflicting_framing_is_refused() {
        let mut h = HeaderMap::new();
        assert!(check_framing(&h).is_ok());
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(check_framing(&h).is_ok());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert!(check_framing(&h).is_err());
        h.remove(header::CONTENT_LENGTH);
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        assert!(check_framing(&h).is_err());
    }

    #[test]
    fn a_websocket_handshake_is_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(!is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
    }

    /// The head `forwarding` makes of a request with `headers`, and one extra header.
    fn head_of(forwarding: &Forwarding, headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in headers {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let came = h.clone();
        let extra = [(HeaderName::from_static("x-extra"), HeaderValue::from_static("1"))];
        let head = forwarding.head(&mut h, Some("from-uri:1"), extra);
        // The client's head is left as it came.
        assert_eq!(h, came);
        head
    }

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }

    static STAYS: [HeaderName; 2] = [header::AUTHORIZATION, header::ORIGIN];

    static LOCAL: HeaderValue = HeaderValue::from_static("127.0.0.1");

    fn forwarding(trusted: bool) -> Forwarding<'static> {
        Forwarding {
            peer: &LOCAL,
            trusted,
            tls: false,
            upgrade: false,
            keep_host: false,
            drop: &STAYS,
            drop_cookie: "lazygate_view",
        }
    }

    #[test]
    fn a_forwarded_head_keeps_the_message_and_leaves_the_hop_and_the_credentials() {
        let client = [
            ("host", "gw:8080"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer token"),
            ("origin", "https://evil.example"),
            ("cookie", "a=1; lazygate_view=t.1.x"),
            ("cookie", "b=2"),
            ("content-type", "text/plain"),
            ("accept", "a"),
            ("accept", "b"),
            ("x-request-id", "id-1"),
        ];
        let h = head_of(&forwarding(false), &client);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "content-type",
                "cookie",
                "x-extra",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-request-id",
            ],
            "{h:?}"
        );
        assert_eq!(values(&h, "accept"), ["a", "b"]);
        assert_eq!(
            values(&h, "cookie"),
            ["a=1; b=2"],
            "the view cookie stays, the others go on as one"
        );
        assert_eq!(values(&h, "x-forwarded-host"), ["gw:8080"]);
        assert_eq!(values(&h, "x-extra"), ["1"]);

        // The client's Host goes on where asked; without one the URI's authority is the public host.
        let keep = Forwarding {
            keep_host: true,
            ..forwarding(false)
        };
        assert_eq!(values(&head_of(&keep, &client), "host"), ["gw:8080"]);
        let h = head_of(&keep, &[("cookie", "lazygate_view=t.1.x")]);
        assert!(!h.contains_key("host") && !h.contains_key("cookie"), "{h:?}");
        assert_eq!(values(&h, "x-forwarded-host"), ["from-uri:1"]);
    }

    #[test]
    fn a_handshake_head_keeps_upgrade() {
        let upgrade = Forwarding {
            upgrade: true,
            ..forwarding(false)
        };
        let client = [("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")];
        let h = head_of(&upgrade, &client);
        assert_eq!(values(&h, "connection"), ["upgrade"]);
        assert_eq!(values(&h, "upgrade"), ["websocket"]);
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_peers() {
        let client = [
            ("host", "gw:8080"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
            ("forwarded", "for=10.0.0.1"),
        ];
        let untrusted = head_of(&forwarding(false), &client);
        assert_eq!(values(&untrusted, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(values(&untrusted, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&untrusted, "x-forwarded-host"), ["gw:8080"]);
        assert!(!untrusted.contains_key("forwarded"));

        let trusted = head_of(&forwarding(true), &client);
        assert_eq!(
            values(&trusted, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 127.0.0.1"],
            "every field of the chain, in order, then the peer"
        );
        assert_eq!(
            values(&trusted, "x-forwarded-proto"),
            ["https"],
            "the tunnel says the client used HTTPS"
        );
        assert_eq!(values(&trusted, "x-forwarded-host"), ["public.example"]);
        assert_eq!(values(&trusted, "forwarded"), ["for=10.0.0.1"]);

        // What the `Connection` header names is the last hop's, trusted or not.
        let named = [
            ("x-forwarded-for", "10.0.0.1"),
            ("connection", "x-forwarded-for, Cookie"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ];
        let h = head_of(&forwarding(true), &named);
        assert_eq!(values(&h, "x-forwarded-for"), ["127.0.0.1"]);
        assert!(!h.contains_key("cookie") && !h.contains_key("connection"), "{h:?}");
        let h = head_of(&forwarding(false), &[("cookie", "a=1; b=2")]);
        assert_eq!(
            values(&h, "cookie"),
            ["a=1; b=2"],
            "one field without the view cookie goes as it is"
        );

        let tls = Forwarding {
            tls: true,
            ..forwarding(true)
        };
        let h = head_of(&tls, &[("x-forwarded-proto", "http")]);
        assert_eq!(
            values(&h, "x-forwarded-proto"),
            ["https"],
            "over TLS, whatever was said"
        );
    }
}
