//! The admin listener (`server.admin_listen`, loopback by default): `/metrics` for
//! Prometheus, and the admin API behind `lazygate runtimes` — `GET /admin/runtimes` lists
//! the runtimes, `DELETE /admin/runtimes/<owner_hash>` removes one — which takes the API
//! token like `/api`. It is a listener of its own so that the tunnel, which reaches the main
//! one, never exposes it; its connections are served on the control-plane thread.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::AuthStore;
use crate::body::{Body, full};
use crate::error::{RequestError, error_response, json_response};
use crate::metrics::Removal;
use crate::owner::OwnerHash;
use crate::provision::Provisioner;

/// What the admin listener serves from.
pub struct Admin {
    pub provisioner: Arc<Provisioner>,
    pub auth: Arc<AuthStore>,
}

/// Serves admin connections on `listener` until `stop` fires; open ones are cut then.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "admin accept failed");
                    continue;
                }
            },
        };
        let admin = admin.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "admin connection ended with an error");
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

impl Admin {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        if path == "/metrics" {
            if method != Method::GET {
                return error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "GET /metrics");
            }
            let mut response = Response::new(full(self.provisioner.metrics().encode()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            return response;
        }
        let Some(rest) = path.strip_prefix("/admin/runtimes") else {
            return error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin route for {path}; there are /metrics and /admin/runtimes"),
            );
        };
        if let Err(error) = self.auth.current().check_api(request.headers()) {
            return RequestError::from(error).to_response(None);
        }
        match (method, rest.strip_prefix('/')) {
            (Method::GET, None | Some("")) => {
                let runtimes = self.provisioner.runtimes();
                json_response(StatusCode::OK, &json!({ "runtimes": runtimes }))
            }
            (Method::DELETE, Some(hash)) => self.remove(hash).await,
            _ => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "GET /admin/runtimes, or DELETE /admin/runtimes/<owner_hash>",
            ),
        }
    }

    async fn remove(&self, hash: &str) -> Response<Body> {
        let owner_hash = match OwnerHash::parse(hash) {
            Ok(owner_hash) => owner_hash,
            Err(error) => return error_response(StatusCode::BAD_REQUEST, "invalid_owner_hash", &error.to_string()),
        };
        match self.provisioner.release(owner_hash, Removal::Released).await {
            Ok(true) => json_response(StatusCode::OK, &json!({"owner_hash": owner_hash, "removed": true})),
            Ok(false) => error_response(
                StatusCode::NOT_FOUND,
                "no_such_runtime",
                &format!("this gateway has no runtime for owner hash {owner_hash}"),
            ),
            Err(error) => RequestError::from(error).to_response(None),
        }
    }
}
