//! CDP through the gateway: Chrome's `/json/*` answers name WebSocket URLs on the runtime's
//! own address; they are rewritten to point back through the gateway, as the client reached it.

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Limited};

use crate::body::{Body, full};
use crate::error::RequestError;

/// The Host header Chrome's DevTools server accepts (it refuses names other than an IP
/// address or `localhost`); it then names its own URLs with it.
pub const DEVTOOLS_HOST: &str = "localhost";

/// Largest `/json` answer rewritten (a browser with many tabs stays far below it).
const MAX_JSON: usize = 4 * 1024 * 1024;

/// True for the discovery endpoints whose answers carry URLs.
pub fn is_discovery(rest: &str) -> bool {
    let path = rest.split('?').next().unwrap_or(rest);
    path == "/json" || path.starts_with("/json/")
}

/// The host a client reached the gateway at, fit to go into a URL: a name or address and an
/// optional port, nothing else (a `Host` header is the client's to choose).
pub fn valid_public_host(host: &str) -> Option<&str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    let ok = !host.is_empty()
        && host.len() <= 255
        && host.chars().all(allowed)
        && host.parse::<http::uri::Authority>().is_ok();
    ok.then_some(host)
}

/// Rewrites `ws://localhost/devtools/…` (and the `ws=` parameter of `devtoolsFrontendUrl`)
/// in one string to `ws[s]://<public host>/cdp/<owner>/devtools/…`.
fn rewrite_url(text: &str, base: &str, scheme: &str) -> String {
    text.replace(
        &format!("ws://{DEVTOOLS_HOST}/devtools/"),
        &format!("{scheme}://{base}"),
    )
    .replace(&format!("ws={DEVTOOLS_HOST}/devtools/"), &format!("{scheme}={base}"))
}

/// Rewrites every string of a discovery answer (see [`rewrite_url`]); the JSON is rebuilt by
/// the serializer, so nothing in the host or owner can change its structure.
pub fn rewrite(value: &mut serde_json::Value, public_host: &str, owner: &str, secure: bool) {
    let owner = crate::owner::encode_owner(owner);
    let scheme = if secure { "wss" } else { "ws" };
    let base = format!("{public_host}/cdp/{owner}/devtools/");
    fn walk(value: &mut serde_json::Value, base: &str, scheme: &str) {
        match value {
            serde_json::Value::String(text) if text.contains(DEVTOOLS_HOST) => {
                *text = rewrite_url(text, base, scheme);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, base, scheme)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| walk(v, base, scheme)),
            _ => {}
        }
    }
    walk(value, &base, scheme);
}

/// Reads a discovery answer whole, rewrites it, and returns it with a fresh length. An
/// answer that is not JSON passes unchanged.
pub async fn rewrite_response(
    response: Response<super::UpstreamBody>,
    public_host: &str,
    owner: &str,
    secure: bool,
) -> Result<Response<Body>, RequestError> {
    let (mut parts, incoming) = response.into_parts();
    let bytes: Bytes = Limited::new(incoming, MAX_JSON)
        .collect()
        .await
        .map_err(|e| RequestError::UpstreamFailed(format!("reading the CDP discovery answer: {e}")))?
        .to_bytes();
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) => {
            rewrite(&mut value, public_host, owner, secure);
            Bytes::from(serde_json::to_vec_pretty(&value).map_err(|e| RequestError::UpstreamFailed(e.to_string()))?)
        }
        Err(_) => bytes,
    };
    super::headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, full(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_urls_point_back_through_the_gateway() {
        let mut version = json!({"webSocketDebuggerUrl": "ws://localhost/devtools/browser/abc", "Browser": "x"});
        rewrite(&mut version, "gw.example:8080", "user@x y", false);
        assert_eq!(
            version,
            json!({"webSocketDebuggerUrl": "ws://gw.example:8080/cdp/user@x%20y/devtools/browser/abc", "Browser": "x"})
        );
        let mut list = json!([{"devtoolsFrontendUrl": "/devtools/inspector.html?ws=localhost/devtools/page/P1"}]);
        rewrite(&mut list, "gw", "bob", true);
        assert_eq!(
            list,
            json!([{"devtoolsFrontendUrl": "/devtools/inspector.html?wss=gw/cdp/bob/devtools/page/P1"}])
        );
        assert!(is_discovery("/json/version") && is_discovery("/json?x") && is_discovery("/json"));
        assert!(!is_discovery("/devtools/page/1") && !is_discovery("/jsonx"));
    }

    #[test]
    fn owners_and_hosts_cannot_inject_json() {
        // An owner id full of JSON: escaped by the serializer, the structure stays.
        let mut version = json!({"webSocketDebuggerUrl": "ws://localhost/devtools/browser/abc"});
        rewrite(&mut version, "gw", "a\",\"x\":\"y", false);
        let text = serde_json::to_string(&version).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back.as_object().unwrap().len(), 1, "{text}");
        // Hosts are checked before they are used at all.
        for bad in ["evil.example\",\"x\":\"y", "a b", "user@host", "", "h/x", "h?x"] {
            assert_eq!(valid_public_host(bad), None, "{bad}");
        }
        for good in ["gw.example", "gw.example:8080", "127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(valid_public_host(good), Some(good), "{good}");
        }
    }
}
