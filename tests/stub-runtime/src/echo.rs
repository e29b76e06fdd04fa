//! The WebSocket echo both stand-in runtimes serve: the stub runtime's view port, and the
//! in-process tests' fake engine (which includes this file by path).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

fn text(body: impl Into<Bytes>) -> BoxBody<Bytes, hyper::Error> {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

/// Accepts a WebSocket handshake and echoes every message back, byte for byte.
pub fn websocket_echo(mut req: Request<Incoming>) -> Response<BoxBody<Bytes, hyper::Error>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut response = Response::new(text("expected a websocket handshake"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // On a close frame, tungstenite queues the reply; reading on flushes it and ends.
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_binary() || message.is_text()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(text(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("connection", "upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    response
}
