//! Readiness: a runtime is ready when `GET /health` on its RPC port answers 2xx.
//!
//! Probed right after the container starts and then with a short, growing backoff (5 ms up
//! to 10 ms), never a fixed one-second sleep: a runtime that is ready in 700 ms is served
//! within a few milliseconds of that (a probe is one local HTTP request). A published port accepts TCP before the process
//! listens, so only a real HTTP answer counts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, sleep, timeout};

/// A client for health probes only: fresh connections, no pool to carry stale ones over.
pub type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

pub fn probe_client() -> ProbeClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_millis(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits until `http://<authority>/health` answers 2xx, or returns the last failure seen
/// once `deadline` has passed.
pub async fn wait_ready(client: &ProbeClient, authority: &str, deadline: Instant) -> Result<(), String> {
    let uri: http::Uri = format!("http://{authority}/health")
        .parse()
        .map_err(|e| format!("bad health URL for {authority}: {e}"))?;
    let mut delay = FIRST_DELAY;
    loop {
        let budget = deadline.saturating_duration_since(Instant::now()).min(PROBE_TIMEOUT);
        let last_error = match timeout(budget, client.get(uri.clone())).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(()),
            Ok(Ok(response)) => {
                let status = response.status();
                // The runtime says what is missing; keep a little of it for the error.
                let body = http_body_util::Limited::new(response.into_body(), 512);
                let text = match tokio::time::timeout(PROBE_TIMEOUT, http_body_util::BodyExt::collect(body)).await {
                    Ok(Ok(collected)) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
                    _ => String::new(),
                };
                format!("/health answered HTTP {status} {text}")
            }
            Ok(Err(error)) => crate::report::error_chain(&error),
            Err(_) => format!("/health did not answer within {budget:?}"),
        };
        if Instant::now() + delay >= deadline {
            return Err(last_error);
        }
        sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// One `GET /health` on a runtime that answered before (a warm-pool runtime about to be
/// claimed): `Ok` on 2xx within `within`. Unlike [`wait_ready`] it does not retry, so a
/// runtime that died fails at once (connection refused) and a busy one gets all of `within`.
pub async fn answers(client: &ProbeClient, authority: &str, within: Duration) -> Result<(), String> {
    let uri: http::Uri = format!("http://{authority}/health")
        .parse()
        .map_err(|e| format!("bad health URL for {authority}: {e}"))?;
    match timeout(within, client.get(uri)).await {
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("/health answered HTTP {}", response.status())),
        Ok(Err(error)) => Err(crate::report::error_chain(&error)),
        Err(_) => Err(format!("/health did not answer within {within:?}")),
    }
}
