//! Idle HTTP/1.1 connections are parked (kept open without their buffers) and served again
//! when their client sends: nothing the client sent is lost — pipelined requests, a head
//! begun before the connection was parked, a WebSocket handshake — and a parked connection
//! does not hold up shutdown. Over TLS too.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Reads one response (its head, and a body of `content-length` bytes) off `stream`:
/// its status and body.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> (u16, String) {
    let read = async {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while pending.len() < end + 4 + length {
                    read_more(stream, pending).await;
                }
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).into_owned();
                pending.drain(..end + 4 + length);
                let status = head[9..12].parse().unwrap();
                return (status, body);
            }
            read_more(stream, pending).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("a response in time")
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(
        n > 0,
        "the gateway closed the connection; had: {:?}",
        String::from_utf8_lossy(pending)
    );
    pending.extend_from_slice(&chunk[..n]);
}

async fn parked(gateway: &Gateway) -> f64 {
    metric(gateway, "lazygate_connections_parked ").await
}

async fn parks_so_far(gateway: &Gateway) -> f64 {
    metric(gateway, "lazygate_connection_parks_total ").await
}

async fn await_parked(gateway: &Gateway, n: f64) {
    eventually_async(&format!("{n} parked connection(s)"), async || {
        parked(gateway).await == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_connection_serves_its_next_requests_whole() {
    let scope = Scope::new("parking");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("parked");
    let health = |n: u32| {
        format!(
            "GET /rpc/{owner}/health?n={n} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
            bearer()
        )
    };
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut pending = Vec::new();
    stream.write_all(health(1).as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    await_parked(&gateway, 1.0).await;

    // Two requests in one write to the parked connection: both answered, in order, on it.
    stream
        .write_all(format!("{}{}", health(2), health(3)).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    await_parked(&gateway, 1.0).await;

    // A head begun, then a pause long enough for the connection to be parked with it, then
    // the rest: one request, answered.
    let run = format!(
        "POST /rpc/{owner} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 10\r\n\r\n",
        bearer()
    );
    let (first, rest) = run.split_at(30);
    let parks = parks_so_far(&gateway).await;
    stream.write_all(first.as_bytes()).await.unwrap();
    eventually_async("parked with the start of a head", async || {
        parks_so_far(&gateway).await > parks
    })
    .await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    // A request in flight is never parked, however long its body pauses.
    stream.write_all(b"hello").await.unwrap();
    let parks = parks_so_far(&gateway).await;
    // Five times the time after which an idle connection is parked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(parks_so_far(&gateway).await, parks, "parked in the middle of a request");
    stream.write_all(b"world").await.unwrap();
    let (status, body) = read_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["body"], "helloworld");
    await_parked(&gateway, 1.0).await;

    // Parked again: a shutdown closes it at once (there is nothing to finish).
    assert_eq!(gateway.terminate(), Some(0));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed by the shutdown: {read:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_opens_on_a_parked_connection() {
    let scope = Scope::new("parking-ws");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("parkedview");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut pending = Vec::new();
    let head = format!(
        "GET /rpc/{owner}/health HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        bearer()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
    await_parked(&gateway, 1.0).await;

    let url = format!(
        "ws://{}/view/{}/websockify?token={}",
        gateway.addr,
        seed_hash(&owner),
        view_token(&owner)
    );
    let (mut socket, response) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("the view opens on the parked connection");
    assert_eq!(response.status(), 101);
    await_parked(&gateway, 0.0).await;
    socket.send(Message::text("through")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("through"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_connection_is_parked_and_served_again_and_carries_a_websocket() {
    let scope = Scope::new("parking-tls");
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("cert.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_TLS_CERT", cert.to_str().unwrap())
        .env("LAZYGATE_TLS_KEY", key.to_str().unwrap())
        .start();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let mut pending = Vec::new();
    let owner = unique("parkedtls");
    let health = format!(
        "GET /rpc/{owner}/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\r\n",
        bearer()
    );
    for _ in 0..2 {
        let parks = parks_so_far(&gateway).await;
        stream.write_all(health.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream, &mut pending).await.0, 200);
        eventually_async("the TLS connection parked", async || {
            parks_so_far(&gateway).await > parks
        })
        .await;
    }
    // A WebSocket over TLS: the tunnel cannot take a TLS session's socket out of hyper's
    // layers (it does a plain one's), so it relays through the upgraded connection.
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let hash = seed_hash(&owner);
    let url = format!("wss://localhost/view/{hash}/websockify?token={}", view_token(&owner));
    let (mut socket, response) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("a WebSocket over TLS");
    assert_eq!(response.status(), 101);
    for size in [100usize, 70_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        socket.send(Message::binary(payload.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .unwrap();
        assert_eq!(
            echoed.unwrap().unwrap().into_data().as_ref(),
            payload.as_slice(),
            "{size} bytes"
        );
    }
}
