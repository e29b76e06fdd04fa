//! A headless Chromium on the host (Debian's), driven over CDP: the way a person's browser
//! sees the gateway.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A CDP connection to one target (a page or a browser).
pub struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    pub async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("CDP {url}: {e}"));
        Cdp { ws, next_id: 0 }
    }

    /// Calls a method and returns its result, skipping events; panics on a CDP error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::Text(message.to_string().into())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer in 60 s"))
                .expect("CDP connection open")
                .expect("CDP frame");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {}", value["error"]);
                return value["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        result["result"]["value"].clone()
    }
}

/// Debian's Chromium, headless, with a fresh profile; killed when dropped.
pub struct HostBrowser {
    child: Child,
    _profile: tempfile::TempDir,
    pub port: u16,
}

impl HostBrowser {
    pub async fn launch() -> HostBrowser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts (Debian package chromium)");
        let port_file: PathBuf = profile.path().join("DevToolsActivePort");
        crate::common::eventually("chromium DevToolsActivePort", Duration::from_secs(30), || {
            std::fs::read_to_string(&port_file).is_ok_and(|t| t.lines().count() >= 2)
        })
        .await;
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        HostBrowser {
            child,
            _profile: profile,
            port,
        }
    }

    /// Opens a new tab, connects to it and navigates it to `url` (passed whole: `/json/new`
    /// would cut a URL at its first `&`).
    pub async fn open(&self, url: &str) -> Cdp {
        let request = http::Request::put(format!("http://127.0.0.1:{}/json/new?about:blank", self.port))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let reply = crate::common::send_request(request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let ws = reply.json()["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let mut page = Cdp::connect(&ws).await;
        page.call("Page.navigate", json!({"url": url})).await;
        page
    }
}

impl Drop for HostBrowser {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Share of the noVNC canvas that is magenta (the colour of the page the agent opens).
const MAGENTA_SHARE: &str = r#"(() => {
  const canvas = document.querySelector('#noVNC_container canvas') || document.querySelector('canvas');
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let magenta = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] > 200 && data[i + 1] < 60 && data[i + 2] > 200) magenta++;
  }
  return magenta / (data.length / 4);
})()"#;

/// What [`live_view_shows_agent_page`] saw.
pub struct LiveViewReport {
    /// From opening the view URL to noVNC's connected state.
    pub to_connected: std::time::Duration,
    /// Reloads needed after a failed load (see below).
    pub reloads: u32,
    /// From the agent's run answering to its page on the person's screen.
    pub to_on_screen: std::time::Duration,
    pub magenta_share: f64,
    pub screenshot: Vec<u8>,
}

impl std::fmt::Display for LiveViewReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "view URL to noVNC connected: {:?} ({} reloads); run answered to page on screen: {:?} (magenta share {:.2})",
            self.to_connected, self.reloads, self.to_on_screen, self.magenta_share
        )
    }
}

/// As a person and an agent would: opens `/view/<hash>/vnc.html?…&autoconnect=1` on the
/// gateway at `base` in a real browser and waits for noVNC to connect over the gateway's
/// WebSocket; then the agent posts a run to `/rpc/<owner>` that opens a magenta page, and
/// the noVNC canvas is read until that page is on the person's screen.
pub async fn live_view_shows_agent_page(base: &str, owner: &str) -> LiveViewReport {
    let hash = crate::common::seed_hash(owner);
    // A signed view URL, as the ensure API or `lazygate view-url` hands out.
    let token = crate::common::view_token(owner);
    let view =
        format!("{base}/view/{hash}/vnc.html?path=view/{hash}/websockify&autoconnect=1&resize=scale&token={token}");
    live_view_shows_run(&view, &format!("{base}/rpc/{owner}")).await
}

/// The same with any view URL (the shared browser's, say) and the run's URL.
pub async fn live_view_shows_run(view: &str, rpc: &str) -> LiveViewReport {
    live_view_shows_run_then(view, rpc, async || true).await
}

/// The same, and then the view stays open (noVNC connected throughout) until `done` says so.
pub async fn live_view_shows_run_then(view: &str, rpc: &str, mut done: impl AsyncFnMut() -> bool) -> LiveViewReport {
    use std::time::Instant;
    let view = view.to_owned();
    let browser = HostBrowser::launch().await;
    let started = Instant::now();
    let mut page = browser.open(&view).await;
    let connected = "document.documentElement.classList.contains('noVNC_connected')";
    // noVNC gave up: its page is there, but it is neither connecting nor connected.
    let gave_up = "document.readyState === 'complete' && !!document.getElementById('noVNC_status') \
        && !document.documentElement.classList.contains('noVNC_loading') \
        && !document.documentElement.classList.contains('noVNC_connecting') \
        && !document.documentElement.classList.contains('noVNC_connected')";
    let mut reloads = 0;
    let mut navigated = Instant::now();
    while page.eval(connected).await != json!(true) {
        // A new container's network change can abort the host browser's load or WebSocket in
        // flight (net::ERR_NETWORK_CHANGED): load a failed page again, as a person would, and
        // likewise a page stuck for 15 s (seen once or twice, cause not yet found).
        let failed = page.eval("location.href.startsWith('chrome-error:')").await == json!(true)
            || page.eval(gave_up).await == json!(true);
        let stuck = navigated.elapsed() > Duration::from_secs(15);
        if (failed && navigated.elapsed() > Duration::from_secs(2) || stuck) && reloads < 5 {
            let state = page
                .eval("document.documentElement.className + ' ' + location.href")
                .await;
            eprintln!(
                "reloading the view after {:?} (failed: {failed}): {state}",
                navigated.elapsed()
            );
            reloads += 1;
            navigated = Instant::now();
            page.call("Page.navigate", json!({"url": view})).await;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let state = page
                .eval("JSON.stringify({href: location.href, class: document.documentElement.className, status: (document.getElementById('noVNC_status') || {}).textContent})")
                .await;
            panic!("noVNC did not connect through the gateway: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to_connected = started.elapsed();

    let run = json!({"actions": [
        {"action": "open", "url": "data:text/html,<title>lazygate-e2e</title><body style='margin:0;background:%23ff00ff'></body>"},
        {"action": "title"}
    ]});
    let reply = crate::common::post(rpc, &run.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["results"][1]["title"], "lazygate-e2e");
    let shown = Instant::now();
    let mut magenta_share = 0.0;
    while magenta_share <= 0.5 {
        assert!(
            shown.elapsed() < Duration::from_secs(60),
            "the agent's page never showed ({magenta_share})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        magenta_share = page.eval(MAGENTA_SHARE).await.as_f64().unwrap_or(0.0);
    }
    let to_on_screen = shown.elapsed();
    let lingering = Instant::now();
    while !done().await {
        assert!(
            page.eval(connected).await == json!(true),
            "noVNC lost its connection after {:?} of watching",
            lingering.elapsed()
        );
        assert!(lingering.elapsed() < Duration::from_secs(60), "the view was never done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.eval(connected).await == json!(true), "noVNC is still connected");
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
    use base64::Engine;
    let screenshot = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    LiveViewReport {
        to_connected,
        reloads,
        to_on_screen,
        magenta_share,
        screenshot,
    }
}
