//! What crosses the gateway: streamed bodies both ways, byte-exact WebSockets, header
//! hygiene, redirects, and the seed-compatible ensure/cleanup API.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio_tungstenite::tungstenite::Message;

/// Deterministic pseudo-random bytes (xorshift), so payloads are not trivially compressible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_both_ways_without_buffering() {
    let scope = Scope::new("streaming");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("streamer");

    // Response streaming: the runtime sends one chunk and then waits for a release that
    // only comes after the test has read that chunk through the gateway.
    let hold_id = unique("hold");
    let response = client()
        .request(
            Request::get(gateway.url(&format!("/rpc/{owner}/hold?id={hold_id}")))
                .header("authorization", bearer())
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    let release = get(&gateway.url(&format!("/rpc/{owner}/release?id={hold_id}"))).await;
    assert_eq!(release.text(), "released");
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "rest");

    // Request streaming: each chunk comes back before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    let stream = tokio_stream_from(rx);
    let streaming_client: Client<_, StreamBody<_>> =
        Client::builder(TokioExecutor::new()).build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = Request::post(gateway.url(&format!("/rpc/{owner}/echo")))
        .header("authorization", bearer())
        .body(StreamBody::new(stream))
        .unwrap();
    let sending = tokio::spawn(async move { streaming_client.request(request).await });
    tx.send(Ok(Frame::data(Bytes::from_static(b"chunk-1")))).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let mut echoed = Vec::new();
    while echoed.len() < 7 {
        let frame = body.frame().await.unwrap().unwrap();
        echoed.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(
        echoed, b"chunk-1",
        "the first chunk came back while the request was still open"
    );
    let big = noise(1 << 20, 7);
    tx.send(Ok(Frame::data(Bytes::from(big.clone())))).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest.len(), big.len());
    assert!(rest == big, "1 MiB echoed byte for byte");
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_opened_as_its_runtime_starts_waits_for_the_view_port() {
    // The stub's view port listens only some time after its /health answered (as the real
    // runtime's websockify may): a first view must wait for it, not get a 502.
    let scope = Scope::new("view-port-late");
    let gateway = GatewayConfig::new(&scope).start();
    let watcher = unique("early-watcher");
    let url = format!(
        "ws://{}/view/{}/websockify?token={}",
        gateway.addr,
        seed_hash(&watcher),
        view_token(&watcher)
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the first view WebSocket opens once the view port is up");
    assert_eq!(response.status(), 101);
    ws.send(Message::Text("first".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("first".into()));

    let reader = unique("early-reader");
    let hash = seed_hash(&reader);
    let page = get(&gateway.url(&format!("/view/{hash}/vnc.html?token={}", view_token(&reader)))).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("stub noVNC"));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frames_cross_byte_exact() {
    let scope = Scope::new("websocket");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("watcher");
    let hash = seed_hash(&owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(&owner)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket through the gateway");
    for (i, size) in [1usize, 100, 1_000, 16_384, 65_536, 300_000].into_iter().enumerate() {
        let payload = noise(size, i as u64 + 1);
        ws.send(Message::Binary(payload.clone().into())).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_data().as_ref(), payload.as_slice(), "{size} bytes");
    }
    ws.send(Message::Text("héllo ✓".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("héllo ✓".into()));
    ws.close(None).await.unwrap();
    // The close handshake completes through the tunnel.
    let closing = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap();
    assert!(matches!(closing, Some(Ok(Message::Close(_))) | None), "{closing:?}");
}

/// Bytes that come in the same write as a WebSocket handshake cross the tunnel first, from
/// either side: a client's first frame sent with its handshake, and an application's first
/// frame sent with its 101 (the relay copies between the sockets themselves, so what hyper
/// read past either head must go first). Raw TCP on both ends, to choose the writes.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_sent_with_a_websocket_handshake_cross_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scope = Scope::new("ws-early");
    let application = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = GatewayConfig::new(&scope)
        .env(
            "LAZYGATE_DEFAULT_UPSTREAM",
            &format!("http://{}", application.local_addr().unwrap()),
        )
        .start();
    // A client frame: masked, "ping!" (RFC 6455 §5.3).
    let mask = [1u8, 2, 3, 4];
    let mut client_frame = vec![0x82, 0x80 | 5];
    client_frame.extend(mask);
    client_frame.extend(b"ping!".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    let server_frame = b"\x82\x05pong!".to_vec();

    /// Reads until `head_end` is found and then `more` bytes past it; returns what came after.
    async fn read_past_head(socket: &mut tokio::net::TcpStream, more: usize) -> (String, Vec<u8>) {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n")
                && seen.len() >= end + 4 + more
            {
                let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                return (head, seen[end + 4..].to_vec());
            }
            let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
                .await
                .expect("bytes in time")
                .unwrap();
            assert!(n > 0, "closed early; had {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    }

    let application = tokio::spawn({
        let (client_frame, server_frame) = (client_frame.clone(), server_frame.clone());
        async move {
            let (mut socket, _) = application.accept().await.unwrap();
            // (The client's frame comes only once the tunnel is open: after the 101.)
            let (head, mut rest) = read_past_head(&mut socket, 0).await;
            assert!(head.starts_with("GET /early"), "{head}");
            // The 101 and the first frame in one write.
            let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec();
            answer.extend(&server_frame);
            socket.write_all(&answer).await.unwrap();
            while rest.len() < client_frame.len() {
                let mut chunk = [0u8; 64];
                let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
                    .await
                    .expect("the client's frame in time")
                    .unwrap();
                assert!(n > 0, "closed before the client's frame; had {rest:?}");
                rest.extend_from_slice(&chunk[..n]);
            }
            (rest, socket)
        }
    });
    let mut client = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    // The handshake and the first frame in one write.
    let mut hello = format!(
        "GET /early HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gateway.addr
    )
    .into_bytes();
    hello.extend(&client_frame);
    client.write_all(&hello).await.unwrap();
    let (head, rest) = read_past_head(&mut client, server_frame.len()).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(rest, server_frame, "the application's first frame, sent with its 101");
    let (rest, _socket) = application.await.unwrap();
    assert_eq!(rest, client_frame, "the client's first frame, sent with its handshake");
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_stay_and_forwarding_headers_are_set() {
    let scope = Scope::new("headers");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("headers");
    let request = Request::get(gateway.url(&format!("/rpc/{owner}/headers")))
        .header("connection", "x-private")
        .header("x-private", "only for this hop")
        .header("keep-alive", "timeout=5")
        .header("x-visible", "passes")
        .header("authorization", bearer())
        .header("cookie", "app=1; lazygate_view=not-for-the-runtime")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send_request(request).await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    assert_eq!(seen["x-visible"], "passes");
    assert!(seen.get("x-private").is_none(), "{seen}");
    assert!(seen.get("keep-alive").is_none(), "{seen}");
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "a client's own X-Forwarded-For is not believed"
    );
    assert!(
        seen.get("authorization").is_none(),
        "the bearer token stays at the gateway: {seen}"
    );
    assert_eq!(seen["cookie"], "app=1", "the view cookie stays at the gateway");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], gateway.addr.to_string().as_str());
}

/// Requests to a runtime go over kept connections: a keep-alive client's requests, and the
/// requests of clients that each open a connection of their own, reuse the connection the
/// first one dialled instead of dialling one each.
#[tokio::test(flavor = "multi_thread")]
async fn requests_reuse_kept_connections_to_their_runtime() {
    let scope = Scope::new("reuse");
    // Two workers: a client connection lives on one, and each keeps its own connections.
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_WORKERS", "2").start();
    let owner = unique("reuse");
    let url = gateway.url(&format!("/rpc/{owner}/headers"));
    assert_eq!(get(&url).await.status, 200, "the runtime starts");
    let dialled = metric(&gateway, "lazygate_upstream_connections_total").await;
    assert!(dialled >= 1.0, "the first request dialled its runtime");

    // One keep-alive client, 30 requests one after another, with bodies both ways.
    let keep_alive = client();
    for i in 0..30 {
        let request = Request::post(gateway.url(&format!("/rpc/{owner}/echo")))
            .header("authorization", bearer())
            .body(Full::new(Bytes::from(format!("run {i}"))))
            .unwrap();
        let response = keep_alive.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("run {i}").as_bytes());
    }
    let after_keep_alive = metric(&gateway, "lazygate_upstream_connections_total").await;
    // At most one per worker: the client's connection is on one of them.
    assert!(
        after_keep_alive - dialled <= 1.0,
        "30 requests on one client connection dialled {} connections",
        after_keep_alive - dialled
    );

    // 30 clients, one request each, each on a new connection (spread over both workers).
    for _ in 0..30 {
        assert_eq!(get(&url).await.status, 200);
    }
    let after_new_clients = metric(&gateway, "lazygate_upstream_connections_total").await;
    assert!(
        after_new_clients - after_keep_alive <= 2.0,
        "30 requests on 30 client connections dialled {} connections",
        after_new_clients - after_keep_alive
    );

    // One keep-alive client going back and forth between two runtimes: each runtime's
    // connection waits for it while the other's is used.
    let other = unique("reuse-other");
    let other_url = gateway.url(&format!("/rpc/{other}/headers"));
    assert_eq!(get(&other_url).await.status, 200, "the second runtime starts");
    let before_switching = metric(&gateway, "lazygate_upstream_connections_total").await;
    for i in 0..20 {
        let url = if i % 2 == 0 { &url } else { &other_url };
        let request = Request::get(url.as_str())
            .header("authorization", bearer())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = keep_alive.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    let after_switching = metric(&gateway, "lazygate_upstream_connections_total").await;
    // At most one per runtime, should the client's worker not have dialled it yet.
    assert!(
        after_switching - before_switching <= 2.0,
        "20 requests alternating between two runtimes dialled {} connections",
        after_switching - before_switching
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_without_trailing_slash_redirects() {
    let scope = Scope::new("redirect");
    let gateway = GatewayConfig::new(&scope).start();
    let hash = seed_hash("redirected");
    let reply = get(&gateway.url(&format!("/view/{hash}?autoconnect=1"))).await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.headers["location"],
        format!("/view/{hash}/?autoconnect=1").as_str()
    );
    assert!(scope.containers().is_empty(), "a redirect starts nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_and_cleanup_answer_like_the_seed_per_principal() {
    let scope = Scope::new("api-principal");
    let gateway = GatewayConfig::new(&scope)
        .env(
            "BROWSER_VIEW_URL",
            "https://tunnel.example.test/vnc.html?path=websockify",
        )
        .start();
    let user = unique("user");
    let hash = seed_hash(&user);
    let body = serde_json::json!({"task_id": "t1", "thread_id": "th1", "metadata": {"user_id": user}});
    let reply = post(&gateway.url("/api/runtimes/ensure"), &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let name = container_name(&hash);
    // Each runtime is alone on its network: CDP and runs go through the gateway, at the
    // host the caller used.
    assert_eq!(
        reply.json(),
        serde_json::json!({
            "cdp_url": gateway.url(&format!("/cdp/{user}")),
            "rpc_url": gateway.url(&format!("/rpc/{user}")),
            "browser_view": reply.json()["browser_view"],
            "isolation_mode": "docker-per-principal",
            "owner_hash": hash,
        })
    );
    let run = post(reply.json()["rpc_url"].as_str().unwrap(), "{\"action\":\"title\"}").await;
    assert_eq!(run.status, 200, "{}", run.text());
    assert_eq!(run.json()["uri"], "/run", "the rpc_url takes a run, as the seed's did");
    let version = get(&format!("{}/json/version", reply.json()["cdp_url"].as_str().unwrap())).await;
    assert_eq!(version.status, 200, "{}", version.text());
    // The view URL is the seed's, signed: it opens this owner's view on the gateway.
    let view = reply.json()["browser_view"].as_str().unwrap().to_owned();
    let prefix = format!("https://tunnel.example.test/view/{hash}/vnc.html?path=view/{hash}/websockify&token=");
    assert!(view.starts_with(&prefix), "{view}");
    let on_gateway = view.replace("https://tunnel.example.test", &gateway.url(""));
    let page = get(&on_gateway).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(inspect(&name).is_some());
    // cleanup does nothing outside per-task mode, as in the seed.
    let cleanup = post(&gateway.url("/api/runtimes/cleanup"), &body.to_string()).await;
    assert_eq!(cleanup.status, 200);
    assert_eq!(cleanup.json()["removed"], false);
    assert!(inspect(&name).is_some());

    // `direct` answers the seed's URLs (reachable only from the runtime's own network).
    drop(gateway);
    let direct = GatewayConfig::new(&scope).env("LAZYGATE_ANSWER_URLS", "direct").start();
    let reply = post(&direct.url("/api/runtimes/ensure"), &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["cdp_url"], format!("http://{name}:9222"));
    assert_eq!(reply.json()["rpc_url"], format!("http://{name}:8787/run"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_and_cleanup_per_task_remove_container_and_volume() {
    let scope = Scope::new("api-task");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "docker-per-task")
        .start();
    let task = unique("task");
    let hash = seed_hash(&task);
    let body = serde_json::json!({"task_id": task, "metadata": {"user_id": "ignored-in-per-task"}});
    let reply = post(&gateway.url("/api/runtimes/ensure"), &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["owner_hash"], hash.as_str());
    assert_eq!(reply.json()["isolation_mode"], "docker-per-task");
    assert_eq!(
        reply.json()["browser_view"],
        "",
        "no base URL configured or discoverable"
    );
    // Said at start, and with the answer that lacks it.
    let warnings = |gateway: &Gateway| gateway.log_lines("no public view base URL");
    eventually("the warnings", Duration::from_secs(10), || {
        let lines = warnings(&gateway);
        lines.len() >= 2 && lines.iter().any(|l| l.contains(&hash))
    })
    .await;
    assert!(volume_exists(&volume_name(&hash)));
    let cleanup = post(&gateway.url("/api/runtimes/cleanup"), &body.to_string()).await;
    assert_eq!(cleanup.status, 200, "{}", cleanup.text());
    assert_eq!(cleanup.json()["removed"], true);
    assert!(inspect(&container_name(&hash)).is_none());
    assert!(!volume_exists(&volume_name(&hash)));
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_mode_answers_like_the_seed_and_starts_nothing() {
    let scope = Scope::new("shared");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "shared")
        .env("BROWSER_VIEW_BASE_URL", "https://shared.example.test")
        .start();
    let mut reply = post(&gateway.url("/api/runtimes/ensure"), "{}").await.json();
    // The seed's shared view URL, signed for the shared view (which it opens, see browser.rs).
    let view = reply["browser_view"].as_str().unwrap().to_owned();
    assert!(
        view.starts_with("https://shared.example.test/vnc.html?path=websockify&token=shared."),
        "{view}"
    );
    reply["browser_view"] = "(checked)".into();
    assert_eq!(
        reply,
        serde_json::json!({
            "cdp_url": gateway.url("/cdp/shared"),
            "rpc_url": gateway.url("/rpc/shared"),
            "browser_view": "(checked)",
            "isolation_mode": "shared",
            "owner_hash": "",
        })
    );
    // The seed's own answer, with direct answer URLs.
    let direct = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "shared")
        .env("LAZYGATE_ANSWER_URLS", "direct")
        .start();
    let reply = post(&direct.url("/api/runtimes/ensure"), "{}").await.json();
    assert_eq!(reply["cdp_url"], "http://browser:9222");
    assert_eq!(reply["rpc_url"], "http://browser:8787/run");
    let release = send(Method::DELETE, &gateway.url("/rpc/anyone"), "").await;
    assert_eq!(release.status, 409);
    assert_eq!(release.error_code(), "shared_mode");
    assert!(scope.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_navigation_to_a_starting_view_gets_the_waiting_page() {
    let scope = Scope::new("waiting-page");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("early-bird");
    let hash = seed_hash(&owner);
    let url = gateway.url(&format!("/view/{hash}/vnc.html?token={}", view_token(&owner)));
    let navigation = Request::get(&url)
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let page = send_request(navigation).await;
    assert_eq!(page.status, 503);
    assert_eq!(page.headers["retry-after"], "1");
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().contains("Starting your browser"), "{}", page.text());
    // The runtime starts without anyone waiting on it...
    eventually("runtime started by the waiting page", Duration::from_secs(30), || {
        inspect(&container_name(&hash)).is_some()
    })
    .await;
    // ...and the page's own poll (a non-navigation request) waits for it and gets through.
    let poll = Request::get(&url)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let ready = send_request(poll).await;
    assert_eq!(ready.status, 200);
    assert!(ready.text().contains("stub noVNC"));
    assert_eq!(scope.containers().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_base_url_is_discovered_from_the_tunnels_logs() {
    let scope = Scope::new("tunnel-discovery");
    // A stand-in tunnel container that announces its public URL the way quick tunnels do.
    let tunnel = format!("lazygate-tunnel-{}", unique("t"));
    let label = format!("lazygate.scope={}", scope.name);
    let announce = "echo 'INF Requesting new quick Tunnel'; \
                    echo 'INF |  https://stale-name.example.test  |'; \
                    echo 'INF |  https://fresh-name.example.test/vnc.html  |' >&2; \
                    sleep 600";
    docker(&[
        "run",
        "-d",
        "--name",
        &tunnel,
        "--label",
        &label,
        "lazygate-debian:bookworm",
        "sh",
        "-c",
        announce,
    ])
    .expect("tunnel stand-in starts");
    eventually("tunnel stand-in printed its URL", Duration::from_secs(30), || {
        container_logs(&tunnel).contains("fresh-name")
    })
    .await;
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_TUNNEL_CONTAINER", &tunnel)
        .start();
    let user = unique("tunnel-user");
    let hash = seed_hash(&user);
    let body = serde_json::json!({"metadata": {"user_id": user}});
    let reply = post(&gateway.url("/api/runtimes/ensure"), &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let expected = format!("https://fresh-name.example.test/view/{hash}/vnc.html?path=view/{hash}/websockify");
    let view = reply.json()["browser_view"].as_str().unwrap().to_owned();
    assert!(view.starts_with(&format!("{expected}&token=")), "{view}");
    // The runtime was started with the same URL, as the seed does (signed, so that it opens).
    let env = inspect(&container_name(&hash)).unwrap()["Config"]["Env"].to_string();
    assert!(env.contains(&format!("BROWSER_VIEW_URL={expected}&token=")), "{env}");
}
