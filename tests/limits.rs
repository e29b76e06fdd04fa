//! Limits that keep the host alive: a cap on runtimes (least recently used one evicted,
//! 429 when all are held), per-runtime resources, and per-request limits — each breach
//! answered with the right status or a closed connection, never a hang.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn at_the_runtime_cap_the_least_recently_used_idle_runtime_makes_room() {
    let scope = Scope::new("limit-runtimes");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_MAX_RUNTIMES", "2").start();
    let owners: Vec<String> = (0..4).map(|i| unique(&format!("capped{i}"))).collect();
    let name = |i: usize| container_name(&seed_hash(&owners[i]));
    for owner in &owners[..2] {
        assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
    }
    // Owner 0 was used least recently: the third owner's start evicts it.
    assert_eq!(post(&gateway.url(&format!("/rpc/{}", owners[2])), "").await.status, 200);
    assert!(
        inspect(&name(0)).is_none(),
        "the least recently used runtime was evicted"
    );
    assert!(inspect(&name(1)).is_some() && inspect(&name(2)).is_some());
    assert!(
        volume_exists(&volume_name(&seed_hash(&owners[0]))),
        "eviction keeps a principal's profile"
    );

    // With both remaining runtimes held by open views, a fourth owner is refused.
    let mut views = Vec::new();
    for owner in &owners[1..3] {
        let url = format!(
            "ws://{}/view/{}/websockify?token={}",
            gateway.addr,
            seed_hash(owner),
            view_token(owner)
        );
        views.push(tokio_tungstenite::connect_async(&url).await.expect("view opens").0);
    }
    let refused = post(&gateway.url(&format!("/rpc/{}", owners[3])), "").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "at_capacity");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(inspect(&name(3)).is_none());
    // A view closes: its runtime can make room again.
    let mut closing = views.pop().unwrap();
    closing.close(None).await.unwrap();
    while let Some(Ok(_)) = closing.next().await {}
    drop(closing);
    let mut admitted = None;
    for _ in 0..100 {
        let reply = post(&gateway.url(&format!("/rpc/{}", owners[3])), "").await;
        if reply.status == 200 {
            admitted = Some(reply);
            break;
        }
        // The tunnel's hold goes when the gateway sees the close; until then, 429.
        assert_eq!(reply.status, 429);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted.is_some(), "a released runtime made room");
    assert_eq!(scope.containers().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn runtimes_get_resource_limits_and_no_new_privileges() {
    let scope = Scope::new("limit-resources");
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_RUNTIME_MEMORY_BYTES", "1073741824")
        .env("LAZYGATE_RUNTIME_CPUS", "1.5")
        .env("LAZYGATE_RUNTIME_PIDS", "512")
        .start();
    let owner = unique("contained");
    assert_eq!(post(&gateway.url(&format!("/rpc/{owner}")), "").await.status, 200);
    let host = &inspect(&container_name(&seed_hash(&owner))).unwrap()["HostConfig"];
    assert_eq!(host["Memory"], 1073741824u64);
    assert_eq!(host["NanoCpus"], 1_500_000_000u64);
    assert_eq!(host["PidsLimit"], 512);
    assert_eq!(host["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
}

/// Writes raw bytes and returns what came back until the peer closed (bounded by 30 s).
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_slow_and_smuggling_requests_are_refused() {
    let scope = Scope::new("limit-requests");
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_MAX_RPC_BODY_BYTES", "1024")
        .env("LAZYGATE_HEADER_READ_TIMEOUT_SECONDS", "1")
        .start();
    let addr = gateway.addr;
    let owner = unique("hostile");
    let auth = format!("Authorization: Bearer {TEST_API_TOKEN}\r\n");

    // A thousand headers, and one huge header: 431, before any routing.
    let many: String = (0..1000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = exchange(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    let huge = "a".repeat(100_000);
    let answer = exchange(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: {huge}\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    // The limit is the head's size (64 KiB by default), to the byte: one over it is refused,
    // one within it served.
    let head = |size: usize| {
        let start = "GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: ";
        let filler = "a".repeat(size - start.len() - "\r\n\r\n".len());
        format!("{start}{filler}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    };
    let answer = exchange(addr, head(65537).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    let answer = exchange(addr, head(65536).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");

    // An RPC body over the limit: 413 from its declared length, before a runtime starts.
    let body = "x".repeat(2000);
    let answer = exchange(
        addr,
        format!(
            "POST /rpc/{owner} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2000\r\nConnection: close\r\n\r\n{body}"
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert!(answer.contains("body_too_large"));

    // A transfer coding other than plain chunked: two proxies could read it two ways.
    let answer = exchange(
        addr,
        format!("POST /rpc/{owner} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.200}");
    assert!(scope.containers().is_empty(), "no hostile request started a runtime");

    // Content-Length with Transfer-Encoding: hyper reads the body as chunked (RFC 9112), drops
    // the length and closes the connection after answering, so the bytes smuggled behind the
    // body are never read as a request; the runtime sees one request with an empty body.
    let answer = exchange(
        addr,
        format!(
            "POST /rpc/{owner} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    assert!(
        answer.contains(r#""body":"""#),
        "the runtime saw an empty body: {answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request got no answer: {answer}"
    );

    // A slow sender that never finishes its head is cut off (the read ends; no hang).
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let mut rest = Vec::new();
    let outcome = slow.read_to_end(&mut rest);
    assert!(outcome.is_ok(), "the gateway closed the connection: {outcome:?}");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text:.80}");

    // An idle keep-alive connection is closed too (the same timer waits for every head).
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first[9..12], b"200");
    let mut rest = Vec::new();
    assert!(
        idle.read_to_end(&mut rest).is_ok(),
        "the idle connection was closed, not left open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_a_client_gets_503() {
    let scope = Scope::new("limit-connections");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_MAX_CONNECTIONS", "2").start();
    // Two idle keep-alive connections hold both permits...
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(gateway.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf[9..12], b"200");
            s
        })
        .collect();
    // ...so the third is told to come back.
    let answer = exchange(gateway.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:.80}");
    assert!(answer.contains("too_many_connections"));
    drop(held);
    // Once they close, connections are served again.
    let mut served = false;
    for _ in 0..100 {
        if exchange(
            gateway.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
}

/// Reads until the gateway closes `stream` (a 30 s hang guard); true when it did.
fn closed_by_gateway(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_and_idle_http2_are_closed_so_the_cap_stays_free() {
    let scope = Scope::new("limit-silent");
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_MAX_CONNECTIONS", "3")
        .env("LAZYGATE_HEADER_READ_TIMEOUT_SECONDS", "1")
        .start();
    // Three sockets fill the cap: two that never send a byte, one with a bare HTTP/2
    // preface and an empty SETTINGS frame.
    let mut silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(gateway.addr).unwrap()).collect();
    let mut preface = TcpStream::connect(gateway.addr).unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    // The gateway closes each of them, rather than keeping everyone else out.
    for stream in silent.iter_mut().chain(std::iter::once(&mut preface)) {
        assert!(closed_by_gateway(stream), "a silent connection was left open");
    }
    let health = get(&gateway.url("/healthz")).await;
    assert_eq!(health.status, 200, "{}", health.text());

    // The timeout is for a connection with no request open, not for an answer: a run that
    // takes longer (its runtime's start, then 2.5 s) is answered on a keep-alive connection,
    // which is closed once it has idled past the timeout.
    let mut keep_alive = TcpStream::connect(gateway.addr).unwrap();
    keep_alive.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let run = format!(
        "GET /rpc/{}/sleep?ms=2500 HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        unique("limit-slow-run"),
        bearer()
    );
    keep_alive.write_all(run.as_bytes()).unwrap();
    let mut status = [0u8; 12];
    keep_alive.read_exact(&mut status).unwrap();
    assert_eq!(&status[9..12], b"200", "a run longer than the timeout is answered");
    assert!(
        closed_by_gateway(&mut keep_alive),
        "the idle keep-alive connection was left open"
    );

    // HTTP/2 (prior knowledge): a request with more headers than the limit is refused, as
    // on HTTP/1.1; one within it is served; then the idle connection is shut down.
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let mut crowded = http::Request::get(format!("http://{}/healthz", gateway.addr));
    for i in 0..150 {
        crowded = crowded.header(format!("x-filler-{i}"), "x");
    }
    let crowded = crowded.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let answer = sender.send_request(crowded).await.unwrap();
    assert_eq!(answer.status(), 431, "HTTP/2 enforces max_headers too");
    let plain = http::Request::get(format!("http://{}/healthz", gateway.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = sender.send_request(plain).await.unwrap();
    assert_eq!(answer.status(), 200);
    drop(answer);
    let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was left open");
}
