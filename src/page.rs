//! What a person's browser gets instead of JSON: the page shown while their runtime starts
//! (it says so, and reloads itself as soon as the runtime answers, or says why it cannot
//! start), and a short page for an error met by a browser navigation (an expired link, a
//! foreign one, a runtime that failed). Everything else gets the JSON of [`crate::error`].

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::{Body, full};

const STYLE: &str = r#"<style>
  body { margin: 0; height: 100vh; display: grid; place-items: center; background: #1b1b1b;
         color: #eee; font: 16px/1.5 system-ui, sans-serif; }
  main { max-width: 36em; padding: 1em; }
  .dot { display: inline-block; animation: blink 1.2s infinite; }
  @keyframes blink { 50% { opacity: .2; } }
  .detail { color: #aaa; font-size: 14px; }
  code { color: #ccc; }
</style>"#;

const WAITING_PAGE: &str = r#"<main>
<p id="lazygate-waiting">Starting your browser<span class="dot">…</span>
this page reloads itself when it is ready.</p>
<div id="lazygate-failure" role="alert" hidden>
  <h1>Your browser could not be started</h1>
  <p id="lazygate-failure-message"></p>
  <p class="detail">Error <code id="lazygate-failure-code"></code>.
  <span id="lazygate-failure-next"></span></p>
</div>
</main>
<script>
  // The same URL asked for as data waits (up to the start timeout) until the runtime is up;
  // a failed start answers with its error, shown here, and is tried again when the gateway
  // says (Retry-After), so that the page recovers by itself once the cause is fixed.
  function show(error, retrySeconds) {
    document.getElementById("lazygate-waiting").hidden = true;
    document.getElementById("lazygate-failure").hidden = false;
    document.getElementById("lazygate-failure-message").textContent = error.message;
    document.getElementById("lazygate-failure-code").textContent = error.code;
    document.getElementById("lazygate-failure-next").textContent =
      retrySeconds ? "Trying again in " + retrySeconds + " s." : "Ask for a new link.";
  }
  async function waitForRuntime() {
    let retrySeconds = 1;
    try {
      const answer = await fetch(location.href, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (answer.ok) { location.reload(); return; }
      retrySeconds = Number(answer.headers.get("Retry-After")) || 1;
      const body = await answer.json().catch(() => null);
      const error = body && body.error;
      if (error && error.code !== "runtime_not_ready") {
        // Credentials the gateway refuses do not get better by waiting.
        const retryable = answer.status >= 500 || answer.status === 429 || answer.status === 409;
        show(error, retryable ? retrySeconds : 0);
        if (!retryable) return;
      }
    } catch (e) {}
    setTimeout(waitForRuntime, retrySeconds * 1000);
  }
  waitForRuntime();
</script>
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

fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\n<title>{title}</title>\n{STYLE}</head>\n\
         <body>{main}</body></html>\n"
    )
}

fn set_html(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The waiting page: `503` with `Retry-After`, so that anything but a person's browser
/// knows to come back.
pub fn waiting() -> Response<Body> {
    let mut response = Response::new(full(document("Starting your browser…", WAITING_PAGE)));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    set_html(response.headers_mut());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// What a person is told, by error code: a heading and what to do.
fn advice(status: StatusCode, code: &str) -> (&'static str, &'static str) {
    match code {
        "expired_token" => (
            "This link has expired",
            "Live-view links work for a limited time. Ask for a new one.",
        ),
        "unauthorized" => (
            "This page needs a live-view link",
            "Open the link you were given for your browser, or ask for a new one.",
        ),
        "invalid_token" => (
            "This link is not valid",
            "It may have been cut short when it was copied. Ask for a new one.",
        ),
        "wrong_owner" => (
            "This link is for another browser",
            "Each link opens one browser only. Ask for a link to yours.",
        ),
        "not_found" => ("There is nothing here", "Check the address, or ask for a new link."),
        "at_capacity" => (
            "All browsers are in use",
            "Every browser this gateway may run is busy. Reload in a moment.",
        ),
        _ if status.is_server_error() => (
            "Your browser cannot be reached right now",
            "Reload in a moment; if it keeps failing, tell the operator what is below.",
        ),
        _ => ("This request was refused", "What went wrong is below."),
    }
}

/// Escapes text for HTML: error messages carry parts of the request.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Turns an error response (status and headers kept) into a page a person understands,
/// for a browser navigation.
pub fn show_error(response: &mut Response<Body>, code: &str, message: &str) {
    let (heading, what_to_do) = advice(response.status(), code);
    let main = format!(
        "<main id=\"lazygate-error\" data-code=\"{code}\"><h1>{heading}</h1><p>{what_to_do}</p>\
         <p class=\"detail\">Error <code>{code}</code>: {message}</p></main>",
        code = escape(code),
        message = escape(message),
    );
    *response.body_mut() = full(document(heading, &main));
    set_html(response.headers_mut());
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_error_page_escapes_what_came_from_the_request() {
        let mut response = Response::new(full("{}"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        show_error(&mut response, "not_found", "no route for /<script>alert(1)</script>");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("There is nothing here"), "{body}");
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{body}");
        assert!(!body.contains("<script>alert"), "{body}");
    }
}
