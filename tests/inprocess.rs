//! The pipeline in-process, without a container engine: `lazygate::run` on port 0 in front
//! of a [`FakeEngine`] whose runtimes are small servers in this process. Routing, admission,
//! the waiting page, resending to a replaced runtime, WebSocket tunnels, CDP discovery and
//! TLS are shown here in milliseconds; what only an engine can show stays in the engine tests.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::fake_engine::FakeEngine;
use common::{TEST_API_TOKEN, TEST_VIEW_SECRET, bearer, get, post, send_request, view_token};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use lazygate::config::{RawConfig, Settings};
use tokio_tungstenite::tungstenite::Message;

/// A gateway in this process; shut down (never its runtimes) when dropped.
struct InProcess {
    addr: SocketAddr,
    engine: FakeEngine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _state_dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(configure: impl FnOnce(&mut Settings)) -> InProcess {
        let state_dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.auth.api_tokens = vec![TEST_API_TOKEN.to_owned()];
        raw.auth.view_secret = TEST_VIEW_SECRET.to_owned();
        raw.server.workers = 1;
        raw.server.admin_listen = "127.0.0.1:0".to_owned();
        raw.runtime.state_dir = state_dir.path().to_str().unwrap().to_owned();
        let mut settings = Settings::try_from(raw).unwrap();
        configure(&mut settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let engine = FakeEngine::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = lazygate::run(listener, settings, engine.engine(), async {
            let _ = stopped.await;
        });
        tokio::spawn(async move { run.await.expect("the gateway runs") });
        InProcess {
            addr,
            engine,
            stop: Some(stop),
            _state_dir: state_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<http_body_util::Full<bytes::Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body.to_owned().into()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_admission_decide_before_any_runtime_starts() {
    let gateway = InProcess::start(|_| {}).await;
    // Refused: no token, a malformed owner, an unknown route; nothing starts.
    let anonymous = send_request(request(Method::POST, &gateway.url("/rpc/alice"), &[], "{}")).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.error_code(), "unauthorized");
    assert_eq!(post(&gateway.url("/rpc/%2e%2e"), "").await.status, 400);
    assert_eq!(get(&gateway.url("/nowhere")).await.status, 404);
    let hash = lazygate::owner::OwnerHash::of("alice");
    assert_eq!(get(&gateway.url(&format!("/view/{hash}/vnc.html"))).await.status, 401);
    assert_eq!(gateway.engine.starts.load(Ordering::SeqCst), 0, "nothing started");

    // Admitted: alice's run goes to alice's runtime, started once for two requests.
    let first = post(&gateway.url("/rpc/alice"), "hello").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["uri"], "/run");
    assert_eq!(first.json()["body"], "hello");
    assert_eq!(first.json()["owner_hash"], hash.to_string());
    let headers = get(&gateway.url("/rpc/alice/headers")).await.json();
    assert!(
        headers.get("authorization").is_none(),
        "the agent's token is not forwarded"
    );
    assert_eq!(gateway.engine.starts.load(Ordering::SeqCst), 1);

    // A signed view URL opens alice's view; it is no key to bob's.
    let token = view_token("alice");
    let page = get(&gateway.url(&format!("/view/{hash}/vnc.html?token={token}"))).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let bob = lazygate::owner::OwnerHash::of("bob");
    let wrong = get(&gateway.url(&format!("/view/{bob}/vnc.html?token={token}"))).await;
    assert_eq!(wrong.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_gets_the_waiting_page_and_a_killed_runtime_is_replaced_with_the_request_resent() {
    let gateway = InProcess::start(|_| {}).await;
    let hash = lazygate::owner::OwnerHash::of("carol");
    let token = view_token("carol");
    let navigation = send_request(request(
        Method::GET,
        &gateway.url(&format!("/view/{hash}/vnc.html?token={token}")),
        &[("accept", "text/html")],
        "",
    ))
    .await;
    assert_eq!(navigation.status, 503, "the waiting page, at once");
    assert!(navigation.text().contains("<html"), "{}", navigation.text());

    let first = post(&gateway.url("/rpc/carol"), "one").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let starts = gateway.engine.starts.load(Ordering::SeqCst);
    gateway.engine.kill("carol").await;
    let resent = post(&gateway.url("/rpc/carol"), "two").await;
    assert_eq!(resent.status, 200, "{}", resent.text());
    assert_eq!(resent.json()["body"], "two", "the body went to the new runtime");
    assert_eq!(
        gateway.engine.starts.load(Ordering::SeqCst),
        starts + 1,
        "started again, once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_tunnel_and_cdp_discovery_points_back_through_the_gateway() {
    let gateway = InProcess::start(|settings| {
        settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let hash = lazygate::owner::OwnerHash::of("dave");
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token("dave")
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(&url).await.expect("a tunnel");
    assert_eq!(response.status(), 101);
    for message in [Message::Text("hi".into()), Message::Binary(vec![0u8; 70_000].into())] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();

    let version = gateway.url("/cdp/dave/json/version");
    let token = bearer();
    let plain = send_request(request(Method::GET, &version, &[("authorization", &token)], "")).await;
    assert_eq!(
        plain.json()["webSocketDebuggerUrl"],
        format!("ws://{}/cdp/dave/devtools/browser/fake", gateway.addr)
    );
    let behind_https = send_request(request(
        Method::GET,
        &version,
        &[("authorization", &token), ("x-forwarded-proto", "https")],
        "",
    ))
    .await;
    assert_eq!(
        behind_https.json()["webSocketDebuggerUrl"],
        format!("wss://{}/cdp/dave/devtools/browser/fake", gateway.addr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_runs_go_through_on_http2_and_cdp_discovery_names_wss() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = (cert.clone(), key);
    let gateway = InProcess::start(move |settings| settings.tls = Some(tls)).await;
    let port = gateway.addr.port();
    // curl, a real TLS client, trusting only that certificate.
    let curl = |args: &[&str]| -> String {
        let resolve = format!("localhost:{port}:127.0.0.1");
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "--resolve",
                &resolve,
                "--cacert",
                cert.to_str().unwrap(),
            ])
            .args(["-H", &format!("authorization: {}", bearer())])
            .args(args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let run = curl(&[
        "-w",
        "\n%{http_version} %{http_code}",
        "-X",
        "POST",
        "-d",
        "{}",
        &format!("https://localhost:{port}/rpc/alice"),
    ]);
    assert!(run.ends_with("\n2 200"), "{run}");
    let discovery = curl(&[&format!("https://localhost:{port}/cdp/alice/json/version")]);
    let discovery: serde_json::Value = serde_json::from_str(&discovery).unwrap();
    let ws = discovery["webSocketDebuggerUrl"].as_str().unwrap_or_default();
    assert!(
        ws.starts_with(&format!("wss://localhost:{port}/cdp/alice/")),
        "{discovery}"
    );
}

/// Writes `first`, then lets the gateway look at it (a request on another connection goes
/// through the same worker, which takes its connections in the order they came), then
/// writes `rest`.
async fn write_in_two(stream: &mut tokio::net::TcpStream, healthz: &str, first: &[u8], rest: &[u8]) {
    use tokio::io::AsyncWriteExt;
    stream.write_all(first).await.unwrap();
    stream.flush().await.unwrap();
    assert_eq!(get(healthz).await.status, 200);
    stream.write_all(rest).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_and_http1_are_told_apart_however_their_first_bytes_arrive() {
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    let gateway = InProcess::start(|_| {}).await;
    let healthz = gateway.url("/healthz");
    let token = format!("Bearer {TEST_API_TOKEN}");

    // HTTP/1.1 that starts with the preface's first letter: `P`, then `OST …`.
    let mut http1 = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let rest = format!(
        "OST /rpc/alice HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nh1"
    );
    write_in_two(&mut http1, &healthz, b"P", rest.as_bytes()).await;
    let mut answer = String::new();
    http1.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    assert!(answer.contains(r#""body":"h1""#), "{answer}");

    // HTTP/2 with prior knowledge whose preface comes in two parts: the client on one end
    // of an in-memory pipe, the pipe relayed to the gateway with a pause after 8 bytes.
    let (client_end, mut relay_end) = tokio::io::duplex(64 * 1024);
    let mut tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let relay = tokio::spawn(async move {
        let mut preface = [0u8; 24];
        relay_end.read_exact(&mut preface).await.unwrap();
        write_in_two(&mut tcp, &healthz, &preface[..8], &preface[8..]).await;
        let _ = tokio::io::copy_bidirectional(&mut relay_end, &mut tcp).await;
    });
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(client_end),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let run = request(
        Method::POST,
        &gateway.url("/rpc/alice"),
        &[("authorization", &token)],
        "h2",
    );
    let response = sender.send_request(run).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["body"], "h2");
    drop(sender);
    connection.await.unwrap().unwrap();
    relay.await.unwrap();
}
