//! The admin CLI's side of the admin API (`lazygate runtimes list|rm`): one request to a
//! running gateway's admin listener with its API token, and the answer as a table for
//! people or JSON for scripts.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::auth::SecretsError;
use crate::config::Settings;
use crate::owner::OwnerHash;

/// How long the CLI waits for the gateway.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin command failed (exit status 1, or 2 for a configuration problem).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the admin listener is off (server.admin_listen, LAZYGATE_ADMIN_LISTEN is empty); turn it on, or pass --admin ADDRESS"
    )]
    AdminOff,
    #[error(transparent)]
    Token(#[from] SecretsError),
    #[error(
        "cannot reach the gateway's admin listener at {address}: {message} (is the gateway running? server.admin_listen)"
    )]
    Unreachable { address: SocketAddr, message: String },
    #[error("the gateway refused the API token ({0}); run the command with the gateway's configuration")]
    Refused(String),
    #[error("no such runtime: the gateway has none for owner hash {0}")]
    NoSuchRuntime(OwnerHash),
    #[error("the gateway answered {status}: {message}")]
    Failed { status: StatusCode, message: String },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::AdminOff | ClientError::Token(_) => 2,
            _ => 1,
        }
    }
}

/// Where to reach the admin listener: `--admin`, else `server.admin_listen` (an unspecified
/// address such as `0.0.0.0` is reached on loopback).
pub fn admin_address(settings: &Settings, flag: Option<SocketAddr>) -> Result<SocketAddr, ClientError> {
    let mut address = flag.or(settings.admin_listen).ok_or(ClientError::AdminOff)?;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(address)
}

async fn call(
    address: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Value), ClientError> {
    let unreachable = |message: String| ClientError::Unreachable { address, message };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, address.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, ClientError>((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))??;
    let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
    match status {
        StatusCode::OK => Ok((status, body)),
        StatusCode::UNAUTHORIZED => Err(ClientError::Refused(message)),
        status => Err(ClientError::Failed { status, message }),
    }
}

/// `lazygate runtimes list`: a table, or the gateway's JSON with `json`.
pub async fn list(address: SocketAddr, token: &str, json: bool) -> Result<String, ClientError> {
    let (_, body) = call(address, token, Method::GET, "/admin/runtimes").await?;
    if json {
        return Ok(serde_json::to_string_pretty(&body).unwrap_or_default());
    }
    let runtimes = body["runtimes"].as_array().cloned().unwrap_or_default();
    if runtimes.is_empty() {
        return Ok("no runtimes".to_owned());
    }
    let mut table = format!(
        "{:<16}  {:<20}  {:<8}  {:>8}  {:>8}  {:>5}  {:>4}  CONTAINER",
        "OWNER_HASH", "MODE", "STATE", "AGE", "IDLE", "VIEWS", "RUNS"
    );
    for r in runtimes {
        let number = |field: &str| r[field].as_u64().unwrap_or_default();
        table.push_str(&format!(
            "\n{:<16}  {:<20}  {:<8}  {:>7}s  {:>7}s  {:>5}  {:>4}  {}",
            r["owner_hash"].as_str().unwrap_or_default(),
            r["mode"].as_str().unwrap_or_default(),
            r["state"].as_str().unwrap_or_default(),
            number("age_seconds"),
            number("idle_seconds"),
            number("websockets"),
            number("requests"),
            r["container"].as_str().unwrap_or_default(),
        ));
    }
    Ok(table)
}

/// `lazygate runtimes rm <owner|hash>`: 16 lowercase hex characters are taken as an owner
/// hash, anything else as an owner id (hashed as the gateway does).
pub async fn remove(address: SocketAddr, token: &str, target: &str) -> Result<String, ClientError> {
    let owner_hash = OwnerHash::parse(target).unwrap_or_else(|_| OwnerHash::of(target));
    let path = format!("/admin/runtimes/{owner_hash}");
    match call(address, token, Method::DELETE, &path).await {
        Ok(_) => Ok(format!("removed the runtime of owner hash {owner_hash}")),
        Err(ClientError::Failed {
            status: StatusCode::NOT_FOUND,
            ..
        }) => Err(ClientError::NoSuchRuntime(owner_hash)),
        Err(other) => Err(other),
    }
}
