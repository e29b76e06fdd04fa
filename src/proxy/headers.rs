//! Header hygiene: hop-by-hop headers stay on their hop, forwarding headers are the gateway's.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1); `Upgrade`
/// last, as a WebSocket handshake keeps it ([`CONNECTION_ONLY`] leaves it out).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// How many of [`HOP_BY_HOP`] go from a WebSocket handshake: all but `Upgrade`.
const CONNECTION_ONLY: usize = 8;

/// Removes hop-by-hop headers, including those the `Connection` header names. `Upgrade` is
/// removed too unless `keep_upgrade` (a WebSocket handshake carries it to the runtime).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .filter(|name| !(keep_upgrade && name == header::UPGRADE))
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        remove_present(headers, &HOP_BY_HOP[..CONNECTION_ONLY]);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        remove_present(headers, &HOP_BY_HOP);
    }
}

/// A name's length as one bit of a set (lengths of 63 and more share the last).
fn length_bit(name: &HeaderName) -> u64 {
    1 << name.as_str().len().min(63)
}

/// Removes those of `names` (at most 32) that `headers` has. Most messages have none of the
/// names the gateway takes out, and a removal hashes its name and probes the map whether the
/// header is there or not: one pass over the message's own names (usually a handful) costs
/// less than that.
fn remove_present(headers: &mut HeaderMap, names: &[HeaderName]) {
    debug_assert!(names.len() <= 32);
    // The lengths of `names`, so that most of the message's names are passed over on their
    // length alone.
    let lengths = names.iter().fold(0u64, |set, n| set | length_bit(n));
    let mut found = 0u32;
    for name in headers.keys() {
        if lengths & length_bit(name) == 0 {
            continue;
        }
        if let Some(i) = names.iter().position(|n| n == name) {
            found |= 1 << i;
        }
    }
    for (i, name) in names.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
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

/// Sets `X-Forwarded-For` (appending the peer), `-Proto` and `-Host` for the runtime. What a
/// client sent in them is believed only from a `trusted` peer (the tunnel); from anyone else
/// it is replaced.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, original_host: Option<HeaderValue>, trusted: bool) {
    if !trusted {
        remove_present(headers, &FORWARDING);
        headers.insert(X_FORWARDED_FOR, ip_value(peer));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(original) = original_host {
            headers.insert(X_FORWARDED_HOST, original);
        }
        return;
    }
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) => HeaderValue::from_str(&format!("{existing}, {peer}")).ok(),
        None => Some(ip_value(peer)),
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(original) = original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, original);
    }
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// What a client may not tell the runtime about where its request came from (a `static`, as
/// every list of names here: a `const` array of names is built and dropped at each use).
static FORWARDING: [HeaderName; 4] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, FORWARDED];

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

/// True when a trusted proxy in front (the tunnel) says the client used HTTPS.
pub fn client_used_https(
    trusted_proxies: &[std::net::IpAddr],
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> bool {
    trusted_proxies.contains(&peer.ip())
        && headers
            .get("x-forwarded-proto")
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
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn remove_present_takes_out_only_the_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("same length as connection"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::HOST, HeaderValue::from_static("x"));
        remove_present(&mut h, &HOP_BY_HOP);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["user-agent", "host"]);
        remove_present(&mut h, &HOP_BY_HOP);
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
    fn websocket_handshake_keeps_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let mut untrusted = h.clone();
        set_forwarded(&mut untrusted, "127.0.0.1".parse().unwrap(), None, false);
        assert_eq!(untrusted.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(untrusted.get("x-forwarded-proto").unwrap(), "http");
        set_forwarded(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            Some(HeaderValue::from_static("gw:8080")),
            true,
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(
            h.get("x-forwarded-proto").unwrap(),
            "https",
            "the tunnel says the client used HTTPS"
        );
        assert_eq!(h.get("x-forwarded-host").unwrap(), "gw:8080");
    }
}
