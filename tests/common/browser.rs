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
