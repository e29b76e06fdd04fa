//! Request errors, mapped to a status and a JSON body in one place.
//!
//! Stages return [`RequestError`] with `?`; the service logs it once and turns it into
//! `{"error": {"code", "message"}}` with the status below. Startup errors are a different
//! type ([`crate::config::ConfigError`], [`crate::StartupError`]).

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::body::{Body, full};
use crate::provision::{BackendError, ProvisionError};
use crate::route::RouteError;

/// Everything that can go wrong while serving one request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("request body is not valid: {0}")]
    BadBody(String),
    #[error("request framing refused: {0}")]
    Framing(&'static str),
    #[error("malformed WebSocket handshake: {0}")]
    BadWebSocket(&'static str),
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("owner {owner_hash} has no runtime of its own in shared isolation mode")]
    SharedMode { owner_hash: String },
    #[error("runtime refused the connection: {0}")]
    UpstreamRefused(String),
    #[error("runtime did not answer within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("runtime connection failed: {0}")]
    UpstreamFailed(String),
    #[error("container engine is not reachable: {0}")]
    EngineUnavailable(String),
    #[error("the Host header is not a host name or address with an optional port")]
    BadHost,
    #[error(
        "the container engine has no image {}: runtimes cannot start; build or load it (see the README's troubleshooting)",
        .0.join(", ")
    )]
    ImageMissing(Vec<String>),
    #[error("more than {limit} request headers")]
    TooManyHeaders { limit: usize },
    #[error(transparent)]
    TooManyRuns(#[from] crate::runs::TooManyRuns),
    #[error("no asynchronous run {0} of this owner (unknown, or its answer has expired)")]
    RunNotFound(String),
    /// The default upstream (`server.default_upstream`) could not be reached or failed.
    #[error("the default upstream {authority} {problem}")]
    DefaultUpstream {
        authority: String,
        problem: String,
        timed_out: bool,
    },
}

/// How long clients are told to wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "2";

impl RequestError {
    pub fn status(&self) -> StatusCode {
        use RequestError::*;
        match self {
            Route(RouteError::NotFound(_)) => StatusCode::NOT_FOUND,
            Route(RouteError::MethodNotAllowed { .. }) => StatusCode::METHOD_NOT_ALLOWED,
            Route(_) | BadBody(_) | Framing(_) | BadWebSocket(_) | BadHost => StatusCode::BAD_REQUEST,
            TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SharedMode { .. } => StatusCode::CONFLICT,
            Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            Auth(_) => StatusCode::UNAUTHORIZED,
            Provision(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            Provision(ProvisionError::AtCapacity { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Provision(ProvisionError::Engine(BackendError::NameTaken { .. })) => StatusCode::CONFLICT,
            Provision(ProvisionError::BackingOff { code: "name_taken", .. }) => StatusCode::CONFLICT,
            Provision(_) | UpstreamRefused(_) | UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            DefaultUpstream { timed_out: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            DefaultUpstream { .. } => StatusCode::BAD_GATEWAY,
            TooManyRuns(_) => StatusCode::TOO_MANY_REQUESTS,
            RunNotFound(_) => StatusCode::NOT_FOUND,
            EngineUnavailable(_) | ImageMissing(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        use RequestError::*;
        match self {
            Route(RouteError::NotFound(_)) => "not_found",
            Route(RouteError::MethodNotAllowed { .. }) => "method_not_allowed",
            Route(RouteError::Owner(_)) => "invalid_owner",
            Route(RouteError::OwnerHash(_)) => "invalid_owner_hash",
            Route(RouteError::Path(_)) => "invalid_path",
            BadBody(_) => "invalid_body",
            Framing(_) => "invalid_framing",
            BadWebSocket(_) => "invalid_websocket",
            BodyTooLarge { .. } => "body_too_large",
            SharedMode { .. } => "shared_mode",
            Provision(e) => e.code(),
            Auth(e) => e.code(),
            UpstreamRefused(_) => "runtime_refused",
            UpstreamTimeout(_) => "runtime_timeout",
            UpstreamFailed(_) => "runtime_connection_failed",
            EngineUnavailable(_) => "engine_unavailable",
            ImageMissing(_) => "image_missing",
            BadHost => "invalid_host",
            TooManyHeaders { .. } => "too_many_headers",
            DefaultUpstream { timed_out: true, .. } => "default_upstream_timeout",
            DefaultUpstream { .. } => "default_upstream_failed",
            TooManyRuns(_) => "too_many_async_runs",
            RunNotFound(_) => "run_not_found",
        }
    }

    /// The JSON error response, naming the request's id (when it has one) so a report can
    /// be matched to the log line.
    pub fn to_response(&self, request_id: Option<&str>) -> Response<Body> {
        let mut error = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let Some(request_id) = request_id {
            error["request_id"] = request_id.into();
        }
        let body = serde_json::json!({ "error": error });
        let mut response = error_response_with(self.status(), body);
        if let RequestError::Framing(_) = self {
            // What follows on this connection cannot be trusted to be a new request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let RequestError::Provision(ProvisionError::BackingOff { retry_in, .. }) = self {
            // Not before the next start is tried: sooner would get this answer again.
            let seconds = retry_in.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let RequestError::Auth(AuthError::MissingToken | AuthError::BadToken) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Builds `{"error": {"code", "message"}}` with `status`; 503s carry `Retry-After`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    error_response_with(
        status,
        serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

fn error_response_with(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

/// A JSON success response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
