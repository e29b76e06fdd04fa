//! The request pipeline: route ([`crate::route`]) → admit ([`crate::admit`]) → provision a
//! lease ([`crate::provision`]) → forward over HTTP ([`crate::proxy`]) or tunnel a WebSocket
//! ([`crate::proxy::tunnel`]) → rewrite CDP discovery ([`crate::proxy::cdp`]); API routes go
//! to [`crate::api`]. One log line per request.
//!
//! [`Gateway::handle`] is the outer layer: it runs [`Gateway::dispatch`] (which uses `?`
//! throughout), turns a [`RequestError`] into its JSON response, and logs once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;

use crate::admit::{Admission, Admitted};
use crate::api;
use crate::auth::{self, Auth, AuthStore};
use crate::body::{Body, ClientBody, empty};
use crate::config::{IsolationMode, Settings};
use crate::error::{RequestError, json_response};
use crate::metrics::{self, Metrics};
use crate::owner::OwnerHash;
use crate::page;
use crate::peer::Peer;
use crate::provision::{Lease, Provisioner, RuntimePort};
use crate::proxy::upstream::HostHeader;
use crate::proxy::{self, RequestBody, SendError, Upstream, cdp, headers, tunnel};
use crate::route::{self, Route};
use crate::runs::{self, RunState, RunStore};
use crate::view_url::ViewUrls;

/// The one log line of a request, written when it is dropped: when the response head is
/// ready, or when the client went away first (then with status 499, as nginx logs it).
pub struct RequestLog {
    method: http::Method,
    started: Instant,
    route: &'static str,
    owner_hash: Option<OwnerHash>,
    /// The request started its runtime (or waited for the start).
    pub cold: bool,
    status: Option<StatusCode>,
    /// Where the request is counted, with the same fields as the line.
    metrics: Arc<Metrics>,
    /// The request's id ([`headers::request_id`]), also in its error body and at the runtime.
    request_id: HeaderValue,
}

impl RequestLog {
    /// The line of a `method` request, started now.
    fn new(
        method: &Method,
        route: &'static str,
        owner_hash: Option<OwnerHash>,
        metrics: &Arc<Metrics>,
        request_id: HeaderValue,
    ) -> Self {
        RequestLog {
            method: method.clone(),
            started: Instant::now(),
            route,
            owner_hash,
            cold: false,
            status: None,
            metrics: metrics.clone(),
            request_id,
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let status = self.status.map_or(499, |s| s.as_u16());
        let took = self.started.elapsed();
        self.metrics.request(self.route, status, self.cold, took);
        tracing::info!(
            method = %self.method,
            route = self.route,
            owner_hash = %self.owner_hash.map(|h| h.to_string()).unwrap_or_default(),
            status,
            duration_ms = took.as_secs_f64() * 1000.0,
            cold = self.cold,
            request_id = self.request_id.to_str().unwrap_or_default(),
            "request"
        );
    }
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub(crate) settings: Arc<Settings>,
    pub(crate) provisioner: Arc<Provisioner>,
    pub(crate) views: Arc<ViewUrls>,
    /// Kept connections to runtimes ([`proxy::upstream`]); one set per worker, so they stay on its thread.
    upstream: Upstream,
    /// Open WebSocket tunnels (of all workers), so shutdown can give them the drain deadline
    /// to finish and then close them.
    pub(crate) tunnels: tunnel::Tunnels,
    /// Decides who may reach which runtime, before anything else happens; reloadable.
    pub(crate) auth: Arc<AuthStore>,
    /// Asynchronous runs going on in the background, and the answers of finished ones (of
    /// all workers: the run's location may be asked for on any connection).
    runs: Arc<RunStore>,
}

impl Gateway {
    pub fn new(
        settings: Arc<Settings>,
        provisioner: Arc<Provisioner>,
        views: Arc<ViewUrls>,
        auth: Arc<AuthStore>,
        tunnels: tunnel::Tunnels,
        runs: Arc<RunStore>,
    ) -> Self {
        Gateway {
            auth,
            runs,
            upstream: Upstream::new(settings.upstream_timeout, provisioner.metrics().clone()),
            settings,
            provisioner,
            views,
            tunnels,
        }
    }

    /// Serves one request; never fails (errors become JSON responses).
    pub async fn handle(self: &Arc<Self>, request: Request<ClientBody>, peer: &Peer) -> Response<Body> {
        // Taken apart before anything else (and never borrowed whole): the head stays here
        // and the stages borrow it, so that each stage's future does not hold (and each
        // call copy) the request again; every stage's future is moved whole into its
        // caller's, and this one into its box.
        let (mut parts, body) = request.into_parts();
        let request_id = headers::request_id(&parts.headers, peer.trusted);
        // The runtime gets the same id (the request's headers go to it).
        parts.headers.insert(headers::REQUEST_ID, request_id.clone());
        let mut log = RequestLog::new(&parts.method, "-", None, self.provisioner.metrics(), request_id.clone());
        let mut response = match self.dispatch(&mut parts, body, peer, &mut log).await {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(
                        route = log.route,
                        owner_hash = %log.owner_hash.map(|h| h.to_string()).unwrap_or_default(),
                        code = error.code(),
                        %error,
                        request_id = request_id.to_str().unwrap_or_default(),
                        "request failed"
                    );
                }
                let mut response = error.to_response(request_id.to_str().ok());
                // A person's browser gets an error as a page, anything else as JSON (a route
                // that took the head, an API's or a background run's, answers JSON).
                if page::is_navigation(&parts.method, &parts.headers) {
                    page::show_error(&mut response, error.code(), &error.to_string());
                }
                response
            }
        };
        response.headers_mut().insert(headers::REQUEST_ID, request_id);
        log.status = Some(response.status());
        response
    }

    async fn dispatch(
        self: &Arc<Self>,
        parts: &mut Parts,
        body: ClientBody,
        peer: &Peer,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, RequestError> {
        // The secrets in force when the request arrived decide it, start to finish.
        let auth = self.auth.current();
        let admission = self.admission(&auth);
        admission.check_shape(&parts.headers)?;
        // The route borrows what it names from a handle on the URI (a reference count; no
        // copy), so that the stages may still change the head.
        let uri = parts.uri.clone();
        let route = route::parse(&parts.method, &uri)?;
        log.route = route.kind();
        log.owner_hash = route.owner_hash();
        let admitted = admission.admit(&route, parts, peer)?;
        match route {
            Route::Health => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
            Route::Ready => Box::pin(self.readiness()).await,
            Route::ViewRedirect { owner_hash } => {
                let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                let location = format!("/view/{owner_hash}/{query}");
                let mut response = Response::new(empty());
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                Ok(response)
            }
            Route::Rpc { .. } if parts.method == Method::POST && runs::prefers_async(&parts.headers) => {
                self.run_async(take_parts(parts), body, peer.clone(), route, admitted)
            }
            Route::RunResult { owner_hash, id } => self.run_result(owner_hash, &id),
            Route::View { .. } | Route::Rpc { .. } | Route::Cdp { .. } => {
                let target = Target::of(&route).expect("a proxied route");
                let target = Target {
                    rest: admitted.rest.as_deref().unwrap_or(target.rest),
                    ..target
                };
                let mut response = self.forward(parts, body, peer, target, &admitted, log).await?;
                if let Some(cookie) = admitted.view_cookie {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                Ok(response)
            }
            // Boxed, as every route that is not a forward: a forward's future is what each
            // request allocates, and it need not hold room for theirs.
            Route::Release { owner_hash, .. } => Box::pin(api::release(&self.api(&auth), owner_hash)).await,
            Route::ApiEnsure => {
                let host = admitted.public_host.as_deref();
                let request = Request::from_parts(take_parts(parts), body);
                let (response, cold) = Box::pin(api::ensure(&self.api(&auth), request, host, admitted.secure)).await?;
                log.cold = cold;
                Ok(response)
            }
            Route::ApiCleanup => {
                let request = Request::from_parts(take_parts(parts), body);
                Box::pin(api::cleanup(&self.api(&auth), request)).await
            }
            Route::SharedView { rest } if self.settings.isolation_mode == IsolationMode::Shared => {
                let target = Target {
                    owner_hash: None,
                    owner: None,
                    service: RuntimePort::View,
                    rest: admitted.rest.as_deref().unwrap_or(&rest),
                };
                let mut response = Box::pin(self.forward(parts, body, peer, target, &admitted, log)).await?;
                if let Some(cookie) = admitted.view_cookie {
                    response.headers_mut().append(header::SET_COOKIE, cookie);
                }
                Ok(response)
            }
            Route::SharedView { .. } | Route::Other => match &self.settings.default_upstream {
                Some(authority) => Box::pin(self.pass_through(parts, body, peer, admitted.websocket, authority)).await,
                None => Err(route::RouteError::not_found(parts.uri.path()).into()),
            },
        }
    }

    /// Starts an asynchronous run: answers 202 with the run's location at once and forwards
    /// the request in the background (holding the runtime like any run), keeping the
    /// runtime's answer for [`Gateway::run_result`].
    fn run_async(
        self: &Arc<Self>,
        mut parts: Parts,
        body: ClientBody,
        peer: Peer,
        route: Route<'_>,
        admitted: Admitted,
    ) -> Result<Response<Body>, RequestError> {
        let route = route.into_owned();
        let Route::Rpc { owner, owner_hash, .. } = &route else {
            unreachable!("only runs are asynchronous");
        };
        let (id, ticket) = self.runs.begin(*owner_hash)?;
        let location = format!("/rpc/{}/runs/{id}", crate::owner::encode_owner(owner));
        let request_id = parts.headers.get(&headers::REQUEST_ID).cloned();
        let this = self.clone();
        tokio::spawn(async move {
            let line_id = request_id.clone().unwrap_or(HeaderValue::from_static("-"));
            let mut log = RequestLog::new(
                &parts.method,
                "rpc_async",
                route.owner_hash(),
                this.provisioner.metrics(),
                line_id,
            );
            let target = Target::of(&route).expect("a run");
            let target = Target {
                rest: admitted.rest.as_deref().unwrap_or(target.rest),
                ..target
            };
            let response = match this.forward(&mut parts, body, &peer, target, &admitted, &mut log).await {
                Ok(response) => response,
                Err(error) => error.to_response(request_id.as_ref().and_then(|v| v.to_str().ok())),
            };
            let (parts, body) = response.into_parts();
            log.status = Some(parts.status);
            let max = ticket.max_bytes();
            let (status, code, message) = match read_at_most(body, max).await {
                Ok(Some(bytes)) => return ticket.finish(parts.status, parts.headers, bytes),
                Ok(None) => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "async_run_too_large",
                    format!(
                        "the run's answer is larger than {max} bytes (limits.max_async_run_bytes); run it without Prefer: respond-async to stream it"
                    ),
                ),
                Err(error) => (
                    StatusCode::BAD_GATEWAY,
                    "runtime_connection_failed",
                    format!("the run's answer was cut: {error}"),
                ),
            };
            let body = json!({"error": {"code": code, "message": message}}).to_string();
            ticket.finish(status, runs::json_headers(), body.into());
        });
        let mut response = json_response(
            StatusCode::ACCEPTED,
            &json!({"run": id, "status": "running", "location": location}),
        );
        let headers = response.headers_mut();
        headers.insert("preference-applied", HeaderValue::from_static("respond-async"));
        if let Ok(value) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, value);
        }
        Ok(response)
    }

    /// An asynchronous run's state: 202 with `Retry-After` while it goes on, the runtime's
    /// own answer once it is done; 404 when the owner has no such run (another owner's
    /// looks the same).
    fn run_result(&self, owner_hash: OwnerHash, id: &str) -> Result<Response<Body>, RequestError> {
        match self.runs.get(owner_hash, id) {
            None => Err(RequestError::RunNotFound(id.chars().take(64).collect())),
            Some(RunState::Running) => {
                let mut response = json_response(StatusCode::ACCEPTED, &json!({"run": id, "status": "running"}));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Ok(response)
            }
            Some(RunState::Done { status, headers, body }) => {
                let mut response = Response::new(crate::body::full(body));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                Ok(response)
            }
        }
    }

    /// How a request from `peer` goes on, to a runtime or the default upstream
    /// ([`headers::Forwarding`]): hop-by-hop headers stay here (`Upgrade` goes on for a
    /// handshake), `X-Forwarded-*` are set (a trusted proxy's kept), `X-Forwarded-Proto:
    /// https` after TLS, the view cookie and the headers in `drop` stay here.
    fn forwarding<'a>(
        peer: &'a Peer,
        upgrade: bool,
        host: HostHeader,
        drop: &'a [HeaderName],
    ) -> headers::Forwarding<'a> {
        headers::Forwarding {
            peer: &peer.forwarded_for,
            trusted: peer.trusted,
            tls: peer.tls,
            upgrade,
            keep_host: host == HostHeader::Keep,
            drop,
            drop_cookie: auth::VIEW_COOKIE,
        }
    }

    /// Forwards a request that is not the gateway's to the default upstream (the
    /// application behind the same tunnel), HTTP or WebSocket, bodies streamed both ways.
    /// The application does its own authorisation: the client's `Authorization`, cookies,
    /// `Host` and `Origin` go to it unchanged; only the gateway's own view cookie and
    /// runtime key, and hop-by-hop headers, are taken out, and `X-Forwarded-*` are set.
    async fn pass_through(
        &self,
        parts: &mut Parts,
        incoming: ClientBody,
        peer: &Peer,
        websocket: bool,
        authority: &str,
    ) -> Result<Response<Body>, RequestError> {
        let client_upgrade = websocket.then(|| proxy::take_upgrade(parts));
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let forwarding = Self::forwarding(peer, client_upgrade.is_some(), HostHeader::Keep, &auth::GATEWAY_ONLY);
        let head_of = |parts: &mut Parts| {
            forwarding.head(
                &mut parts.headers,
                parts.uri.authority().map(|a| a.as_str()),
                std::iter::empty(),
            )
        };
        let failed = |error: SendError| error.at_default_upstream(authority);
        match client_upgrade {
            Some(client_upgrade) => {
                let (response, upgrade) = tunnel::handshake(
                    head_of(parts),
                    HostHeader::Keep,
                    authority,
                    &path_and_query,
                    self.settings.upstream_timeout,
                )
                .await
                .map_err(failed)?;
                Ok(match upgrade {
                    Some(upstream_upgrade) => tunnel::splice(
                        response,
                        client_upgrade,
                        upstream_upgrade,
                        None,
                        &self.tunnels,
                        tunnel::Watch::default(),
                        self.provisioner.metrics(),
                    ),
                    None => proxy::into_client_response(response, None),
                })
            }
            None => {
                let (body, handle) = RequestBody::new(incoming, u64::MAX);
                let method = parts.method.clone();
                let send = |head, body| {
                    self.upstream
                        .send(&method, head, HostHeader::Keep, authority, &path_and_query, body)
                };
                let response = match send(head_of(parts), body).await {
                    // A kept connection the application closed as the request went: once
                    // more on a new one, when the request may be repeated (as to a runtime).
                    Err(SendError::Dropped(_)) if proxy::may_repeat(&parts.method) => {
                        let body = handle
                            .resend()
                            .ok_or_else(|| RequestError::UpstreamFailed("request body was already sent".into()))?;
                        send(head_of(parts), body).await
                    }
                    sent => sent,
                }
                .map_err(failed)?;
                Ok(proxy::into_client_response(response, None))
            }
        }
    }

    /// What admission decides with.
    fn admission<'a>(&'a self, auth: &'a Auth) -> Admission<'a> {
        Admission {
            settings: &self.settings,
            auth,
        }
    }

    /// The shared state the API handlers work with.
    fn api<'a>(&'a self, auth: &'a Auth) -> api::Api<'a> {
        api::Api {
            settings: &self.settings,
            provisioner: &self.provisioner,
            views: &self.views,
            auth,
        }
    }

    async fn readiness(&self) -> Result<Response<Body>, RequestError> {
        if self.settings.isolation_mode == IsolationMode::Shared {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"status": "ready", "engine": "not used"}),
            ));
        }
        let backend = self.provisioner.backend();
        let check = async {
            backend.ping().await?;
            backend.missing_images(&self.settings.image).await
        };
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(missing)) if missing.is_empty() => Ok(json_response(
                StatusCode::OK,
                &json!({"status": "ready", "engine": "ok"}),
            )),
            Ok(Ok(missing)) => Err(RequestError::ImageMissing(missing)),
            Ok(Err(error)) => Err(RequestError::EngineUnavailable(error.to_string())),
            Err(_) => Err(RequestError::EngineUnavailable("no answer within 2s".into())),
        }
    }

    /// Where a service answers in shared mode: the seed's shared browser.
    fn shared_authority(&self, service: RuntimePort) -> String {
        let authority_of = |url: &str| {
            url.parse::<http::Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.to_string()))
                .unwrap_or_default()
        };
        match service {
            RuntimePort::Rpc => authority_of(&self.settings.shared_rpc_url),
            RuntimePort::Cdp => authority_of(&self.settings.shared_cdp_url),
            RuntimePort::View => {
                let cdp = self.settings.shared_cdp_url.parse::<http::Uri>().ok();
                let host = cdp.as_ref().and_then(|u| u.host()).unwrap_or("browser");
                format!("{host}:{}", self.settings.view_port)
            }
        }
    }

    /// Forwards a request to the owner's runtime, starting it if needed. When the runtime
    /// turns out to be gone (the container was killed behind our back), it is started again
    /// and the request — body included, since none of it was sent — goes to the new one.
    async fn forward(
        &self,
        parts: &mut Parts,
        incoming: ClientBody,
        peer: &Peer,
        target: Target<'_>,
        admitted: &Admitted,
        log: &mut RequestLog,
    ) -> Result<Response<Body>, RequestError> {
        let shared = self.settings.isolation_mode == IsolationMode::Shared;
        let Target {
            owner_hash,
            owner,
            service,
            rest,
        } = target;
        // A person opening a view whose runtime is not up gets the waiting page at once.
        // In shared mode every route goes to the shared browser; no runtime is started.
        let owner_hash = owner_hash.filter(|_| !shared);
        if let Some(owner_hash) = owner_hash
            && matches!(service, RuntimePort::View)
            && page::is_navigation(&parts.method, &parts.headers)
            && !self.provisioner.is_ready(owner_hash)
        {
            self.provisioner.start_in_background(owner_hash);
            log.cold = true;
            return Ok(page::waiting());
        }
        let client_upgrade = admitted.websocket.then(|| proxy::take_upgrade(parts));
        let host = match service {
            RuntimePort::Cdp => HostHeader::Devtools,
            RuntimePort::Rpc | RuntimePort::View => HostHeader::Runtime,
        };
        // The gateway checked the origin already; the reference runtime's CDP and VNC
        // WebSockets refuse any request that carries one (every one a web page opens).
        let stays: &[HeaderName] = match service {
            RuntimePort::Rpc => &auth::CLIENT_CREDENTIALS,
            RuntimePort::Cdp | RuntimePort::View => &CLIENT_CREDENTIALS_AND_ORIGIN,
        };
        let forwarding = Self::forwarding(peer, client_upgrade.is_some(), host, stays);
        let limit = match service {
            RuntimePort::Rpc => self.settings.limits.max_rpc_body_bytes,
            RuntimePort::View | RuntimePort::Cdp => u64::MAX,
        };
        let (body, handle) = RequestBody::new(incoming, limit);
        let mut body = Some(body);
        let mut retried = false;
        // Sent again once already because a kept connection dropped it.
        let mut resent_dropped = false;
        let port = service;
        // A runtime's port that has not answered yet is waited for, within the start timeout
        // (from the request's arrival: the clock is read once a request, by its log line).
        let deadline = log.started + self.settings.start_timeout;
        let mut delay = Duration::from_millis(10);
        loop {
            let lease = match owner_hash {
                None => None,
                Some(owner_hash) => Some(self.provisioner.acquire(owner_hash).await?),
            };
            // What a start cost, for the client's devtools: only when this request waited for
            // one (the wait counted from the request's arrival).
            let timing = lease
                .as_ref()
                .filter(|l| l.cold())
                .and_then(|l| metrics::server_timing(log.started.elapsed(), &l.runtime().phases));
            log.cold |= lease.as_ref().is_some_and(Lease::cold);
            // The runtime learns whose request it is, and that it comes from the gateway.
            let runtime = lease.as_ref().map(Lease::runtime);
            let key = runtime
                .and_then(|r| r.key.clone())
                .map(|key| (auth::RUNTIME_KEY_HEADER, key));
            let whose = runtime.map(|r| (auth::OWNER_HASH_HEADER, r.owner_hash.header_value()));
            let head = forwarding.head(
                &mut parts.headers,
                parts.uri.authority().map(|a| a.as_str()),
                key.into_iter().chain(whose),
            );
            let shared;
            let authority: &str = match (&lease, service) {
                (None, _) => {
                    shared = self.shared_authority(service);
                    &shared
                }
                (Some(lease), RuntimePort::Rpc) => &lease.runtime().endpoints.rpc,
                (Some(lease), RuntimePort::View) => &lease.runtime().endpoints.view,
                (Some(lease), RuntimePort::Cdp) => &lease.runtime().endpoints.cdp,
            };
            let sent = Instant::now();
            let result = match client_upgrade {
                Some(_) => {
                    Box::pin(tunnel::handshake(
                        head,
                        host,
                        authority,
                        rest,
                        self.settings.upstream_timeout,
                    ))
                    .await
                }
                None => {
                    let body = body
                        .take()
                        .or_else(|| handle.resend())
                        .ok_or_else(|| RequestError::UpstreamFailed("request body was already sent".into()))?;
                    self.upstream
                        .send(&parts.method, head, host, authority, rest, body)
                        .await
                        .map(|r| (r, None))
                }
            };
            if result.is_ok() {
                self.provisioner.metrics().upstream_answered(sent.elapsed());
                if let Some(lease) = &lease {
                    lease.mark_answered(port);
                }
            }
            let with_timing = |mut response: Response<Body>| {
                if let Some(timing) = timing.clone() {
                    response.headers_mut().insert(metrics::SERVER_TIMING, timing);
                }
                response
            };
            match result {
                Ok((response, Some(upstream_upgrade))) => {
                    let client_upgrade = client_upgrade.expect("upstream upgraded only when asked");
                    // A person's view is watched for a client that is gone; an agent's CDP
                    // session ends with its process (and TCP keepalive finds a host gone).
                    let watch = match service {
                        RuntimePort::View => tunnel::Watch {
                            ping_after: self.settings.ws_ping,
                            pong_timeout: self.settings.ws_pong_timeout,
                            max_age: self.settings.limits.max_view,
                        },
                        RuntimePort::Cdp | RuntimePort::Rpc => tunnel::Watch::default(),
                    };
                    return Ok(with_timing(tunnel::splice(
                        response,
                        client_upgrade,
                        upstream_upgrade,
                        lease,
                        &self.tunnels,
                        watch,
                        self.provisioner.metrics(),
                    )));
                }
                Ok((response, None)) if matches!(service, RuntimePort::Cdp) && admitted.public_host.is_some() => {
                    let public_host = admitted.public_host.as_deref().unwrap_or_default();
                    let owner = owner.unwrap_or_default();
                    let response =
                        Box::pin(cdp::rewrite_response(response, public_host, owner, admitted.secure)).await?;
                    drop(lease);
                    return Ok(with_timing(response));
                }
                Ok((response, None)) => return Ok(with_timing(proxy::into_client_response(response, lease))),
                // The runtime closed a kept connection as the request went (its keep-alive
                // timeout, most often): once more on a new connection, when the request may
                // be repeated. A run is not, as below: it answers 502 rather than maybe run twice.
                Err(SendError::Dropped(_))
                    if !resent_dropped && proxy::may_repeat(&parts.method) && handle.can_resend() =>
                {
                    resent_dropped = true;
                    drop(lease);
                    continue;
                }
                Err(error @ (SendError::Connect(_) | SendError::Dropped(_) | SendError::Failed(_)))
                    if !handle.exceeded() =>
                {
                    let Some(lease) = lease else {
                        return Err(error.into());
                    };
                    // The engine tells what this is: the runtime gone (start it again), the
                    // engine gone (503), or a runtime whose port is not up yet (wait for it).
                    // A request is sent again only if it cannot have reached the runtime (the
                    // connection failed) or may be repeated (a handshake, GET, HEAD): a run
                    // cut by its runtime's death answers 502 rather than running twice.
                    let repeatable = client_upgrade.is_some()
                        || matches!(error, SendError::Connect(_))
                        || proxy::may_repeat(&parts.method);
                    let resendable = repeatable && (client_upgrade.is_some() || handle.can_resend());
                    if Box::pin(self.provisioner.recover(&lease)).await? {
                        if !retried && resendable {
                            retried = true;
                            drop(lease);
                            continue;
                        }
                        return Err(error.into());
                    }
                    if resendable && !lease.has_answered(port) && Instant::now() + delay < deadline {
                        tracing::debug!(?owner_hash, ?port, ?delay, "runtime port not up yet; retrying");
                        drop(lease);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(250));
                        continue;
                    }
                    return Err(error.into());
                }
                Err(_) if handle.exceeded() => {
                    return Err(RequestError::BodyTooLarge {
                        limit: self.settings.limits.max_rpc_body_bytes as usize,
                    });
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// What a request to a runtime's CDP or view leaves at the gateway: the client's credentials
/// and its `Origin`.
static CLIENT_CREDENTIALS_AND_ORIGIN: [HeaderName; 4] = [
    header::AUTHORIZATION,
    auth::RUNTIME_KEY_HEADER,
    auth::OWNER_HASH_HEADER,
    header::ORIGIN,
];

/// What a proxied request is for.
#[derive(Clone, Copy)]
struct Target<'a> {
    /// The owner whose runtime serves it; `None` for the shared browser's own view paths.
    owner_hash: Option<OwnerHash>,
    /// The raw owner id, where the route names it (RPC and CDP; views name only the hash).
    owner: Option<&'a str>,
    service: RuntimePort,
    /// Path and query to forward.
    rest: &'a str,
}

impl<'a> Target<'a> {
    /// The target of a route that goes to a runtime.
    fn of(route: &'a Route<'_>) -> Option<Target<'a>> {
        let (owner_hash, owner, service, rest) = match route {
            Route::View { owner_hash, rest } => (*owner_hash, None, RuntimePort::View, rest),
            Route::Rpc {
                owner,
                owner_hash,
                rest,
            } => (*owner_hash, Some(&**owner), RuntimePort::Rpc, rest),
            Route::Cdp {
                owner,
                owner_hash,
                rest,
            } => (*owner_hash, Some(&**owner), RuntimePort::Cdp, rest),
            _ => return None,
        };
        Some(Target {
            owner_hash: Some(owner_hash),
            owner,
            service,
            rest,
        })
    }
}

/// Moves a request's head out from behind a borrow, for the stages that keep the request (a
/// run in the background, the API's handlers): http's `Parts` has no `Default`, so an empty
/// request's head takes its place.
fn take_parts(parts: &mut Parts) -> Parts {
    std::mem::replace(parts, Request::new(()).into_parts().0)
}

/// Reads a body whole, up to `max` bytes; `Ok(None)` when it is larger.
async fn read_at_most(mut body: Body, max: usize) -> Result<Option<bytes::Bytes>, crate::body::BoxError> {
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if whole.len() + data.len() > max {
                return Ok(None);
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(Some(whole.freeze()))
}
