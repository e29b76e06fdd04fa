//! CDP through the gateway: Chrome's `/json/*` answers name WebSocket URLs on the runtime's
//! own address; they are rewritten to point back through the gateway, as the client reached it.

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::body::{Body, full};
use crate::error::RequestError;

/// The Host header Chrome's DevTools server accepts (it refuses names other than an IP
/// address or `localhost`); it then names its own URLs with it.
pub const DEVTOOLS_HOST: &str = "localhost";

/// Largest `/json` answer rewritten (a browser with many tabs stays far below it).
const MAX_JSON: usize = 4 * 1024 * 1024;

/// Characters escaped in an owner id put back into a path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// True for the discovery endpoints whose answers carry URLs.
pub fn is_discovery(rest: &str) -> bool {
    let path = rest.split('?').next().unwrap_or(rest);
    path == "/json" || path.starts_with("/json/")
}

/// Rewrites `ws://localhost/devtools/…` (and the `ws=` parameter of `devtoolsFrontendUrl`)
/// to `ws[s]://<public host>/cdp/<owner>/devtools/…`.
pub fn rewrite(text: &str, public_host: &str, owner: &str, secure: bool) -> String {
    let owner = utf8_percent_encode(owner, SEGMENT).to_string();
    let scheme = if secure { "wss" } else { "ws" };
    let base = format!("{public_host}/cdp/{owner}/devtools/");
    text.replace(
        &format!("ws://{DEVTOOLS_HOST}/devtools/"),
        &format!("{scheme}://{base}"),
    )
    .replace(&format!("ws={DEVTOOLS_HOST}/devtools/"), &format!("{scheme}={base}"))
}

/// Reads a discovery answer whole, rewrites it, and returns it with a fresh length.
pub async fn rewrite_response(
    response: Response<Incoming>,
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
    let text = String::from_utf8_lossy(&bytes);
    let rewritten = rewrite(&text, public_host, owner, secure);
    super::headers::strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, full(rewritten)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_point_back_through_the_gateway() {
        let version = r#"{"webSocketDebuggerUrl": "ws://localhost/devtools/browser/abc"}"#;
        assert_eq!(
            rewrite(version, "gw.example:8080", "user@x y", false),
            r#"{"webSocketDebuggerUrl": "ws://gw.example:8080/cdp/user@x%20y/devtools/browser/abc"}"#
        );
        let list = r#"{"devtoolsFrontendUrl": "/devtools/inspector.html?ws=localhost/devtools/page/P1"}"#;
        assert_eq!(
            rewrite(list, "gw", "bob", true),
            r#"{"devtoolsFrontendUrl": "/devtools/inspector.html?wss=gw/cdp/bob/devtools/page/P1"}"#
        );
        assert!(is_discovery("/json/version") && is_discovery("/json?x") && is_discovery("/json"));
        assert!(!is_discovery("/devtools/page/1") && !is_discovery("/jsonx"));
    }
}
