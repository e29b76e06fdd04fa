//! The page a person's browser gets while their runtime is starting: it says so, and
//! reloads itself as soon as the runtime answers, instead of a blank tab that hangs.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Starting your browser…</title>
<style>
  body { margin: 0; height: 100vh; display: grid; place-items: center; background: #1b1b1b;
         color: #eee; font: 16px/1.5 system-ui, sans-serif; }
  .dot { display: inline-block; animation: blink 1.2s infinite; }
  @keyframes blink { 50% { opacity: .2; } }
</style></head>
<body><p id="lazygate-waiting">Starting your browser<span class="dot">…</span>
this page reloads itself when it is ready.</p>
<script>
  // The same URL asked for as data waits (up to the start timeout) until the runtime is up.
  async function waitForRuntime() {
    try {
      const answer = await fetch(location.href, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (answer.ok) { location.reload(); return; }
    } catch (e) {}
    setTimeout(waitForRuntime, 1000);
  }
  waitForRuntime();
</script></body></html>
"#;

/// True for a browser navigation: a GET whose `Accept` asks for HTML.
pub fn is_navigation(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::GET
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/html"))
}

/// `503` with `Retry-After`, so that anything but a person's browser knows to come back.
pub fn response() -> Response<Body> {
    let mut response = Response::new(full(PAGE));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
