//! lazygate: the single ingress for per-owner browser runtimes.
//!
//! A request travels through the modules in this order:
//!
//! - [`server`] accepts connections and hands them to worker threads (one event loop per
//!   core) that serve them (HTTP/1.1 with upgrades, HTTP/2; [`tls`] when configured), park
//!   idle HTTP/1.1 connections without their buffers, and drain them on shutdown. Every
//!   stage below reads the request's body as a [`body::ClientBody`] and answers with a
//!   [`body::Body`].
//! - [`service`] is the pipeline for one request and its one log line; its stages follow.
//!   A request comes with its connection's [`peer::Peer`] (worked out once a connection).
//! - [`route`] turns method + URI into a [`route::Route`], refusing malformed owners
//!   ([`owner`]) and paths before anything else happens.
//! - [`admit`] makes every authorisation and request-shape check right after routing, with
//!   [`auth`] deciding who may reach (and so start) which runtime: nothing touches the
//!   engine before it says yes.
//! - [`provision`] gets or creates the owner's runtime — once, however many requests race —
//!   and hands out a [`provision::Lease`] that holds it alive; its [`provision::reaper`]
//!   retires runtimes idle past the TTL, and its [`provision::pool`] keeps runtimes started
//!   ahead for new owners (`runtime.warm_pool`). The backend is one file per engine behind
//!   [`provision::Backend`]: [`provision::docker`] (a container and a network of its own per
//!   runtime, so runtimes never reach each other) and [`provision::swarm`] (a service per
//!   owner on an overlay of its own, scaled to zero when idle, shared by several gateways
//!   through compare-and-swap labels); they share the engine's API client.
//! - [`proxy`] streams the request to the runtime over a kept connection
//!   ([`proxy::upstream`]: each worker's own, reused request after request) and the answer
//!   back, and tunnels WebSockets socket to socket
//!   (pinging live views' clients between the runtime's frames, [`proxy::frames`]);
//!   [`runs`] keeps the answers of asynchronous runs (`Prefer: respond-async`).
//! - [`page`] is what a person's browser sees: the page while their runtime starts, and
//!   errors as a page rather than JSON.
//! - [`api`] holds the API handlers (the seed-compatible `ensure`/`cleanup`, and release);
//!   [`view_url`] builds live-view URLs.
//! - [`metrics`] counts what operators watch; [`admin`] serves them (`/metrics`) and the
//!   admin API on a listener of its own, which [`admin_client`] (the `lazygate runtimes`
//!   commands) calls.
//! - [`config`] reads and validates [`config::Settings`], and [`reload`] reads the secrets
//!   again on SIGHUP; [`error`] maps request errors to
//!   statuses and JSON bodies in one place, and [`report`] renders an error with its causes;
//!   [`state_dir`] keeps the state directory private.
//!
//! Each module imports only modules below it in this order (no import cycles): the server
//! above the pipeline, the pipeline above the API handlers and the proxy, those above
//! provisioning, routing and authorisation, and those above configuration.
//!
//! [`run`] ties them together around a bound listener, so tests can bind port 0, and the
//! [`provision::Engine`] that [`provision::engine`] picks by `runtime.backend`.

pub mod admin;
pub mod admin_client;
pub mod admit;
pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod owner;
pub mod page;
pub mod peer;
pub mod provision;
pub mod proxy;
pub mod reload;
pub mod report;
pub mod route;
pub mod runs;
pub mod server;
pub mod service;
pub mod state_dir;
pub mod tls;
pub mod view_url;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Settings;
use provision::{Engine, Provisioner};
use service::Gateway;
use view_url::ViewUrls;

/// Errors that stop the gateway before it serves.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Secrets(#[from] auth::SecretsError),
    #[error("unsafe state directory: {0}")]
    UnsafeStateDir(#[from] state_dir::UnsafePath),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot start a worker thread: {0}")]
    Workers(std::io::Error),
    /// The engine cannot run the configured backend (Swarm on an engine that is no manager).
    #[error("{0}")]
    Engine(String),
}

impl StartupError {
    /// A configuration the gateway refuses (2), or a failure to start (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::UnsafeStateDir(_)
            | StartupError::Engine(_)
            | StartupError::Secrets(auth::SecretsError::Unsafe(_) | auth::SecretsError::Corrupt { .. }) => 2,
            _ => 1,
        }
    }
}

/// In network mode the gateway's container joins every runtime's network; were it to forward
/// packets, a runtime could try to route through it to another. Say so at start.
fn warn_if_forwarding() {
    let in_container = std::path::Path::new("/.dockerenv").exists();
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1");
    if in_container && forwarding {
        tracing::warn!(
            "this container forwards IPv4 packets while joining every runtime's network; run it with --sysctl net.ipv4.ip_forward=0 (see deploy/)"
        );
    }
}

/// Serves on `listener` until `shutdown` completes, then drains connections and tunnels
/// within the configured deadline. Runtimes are never stopped on the way out.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    engine: Engine,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    // The registry and generated secrets live here: nobody else may have put them there.
    state_dir::prepare(&settings.state_dir)?;
    let auth = auth::Auth::from_settings(&settings)?;
    auth.log_in_use("secrets in use");
    let auth = Arc::new(auth::AuthStore::new(auth));
    // TLS: the certificate store is watched (SIGHUP, file changes) by a task owned here.
    let tls_watch = CancellationToken::new();
    let _tls_watch_guard = tls_watch.clone().drop_guard();
    let tls = match &settings.tls {
        None => None,
        Some((cert, key)) => {
            let store = tls::CertificateStore::open(cert.clone(), key.clone())?;
            tokio::spawn(store.clone().watch(tls_watch.clone()));
            Some(tokio_rustls::TlsAcceptor::from(tls::server_config(store)?))
        }
    };
    if auth.current().is_insecure() {
        tracing::warn!("INSECURE DEVELOPMENT MODE: anyone who reaches this gateway can start and drive runtimes");
    }
    if settings.upstream == config::UpstreamMode::Network && settings.isolation_mode != config::IsolationMode::Shared {
        warn_if_forwarding();
    }
    let settings = Arc::new(settings);
    // Secrets reload on SIGHUP, by a task owned here.
    let reload_watch = CancellationToken::new();
    let _reload_watch_guard = reload_watch.clone().drop_guard();
    tokio::spawn(reload::watch(auth.clone(), settings.clone(), reload_watch));
    let views = Arc::new(ViewUrls::new(
        settings.view_base_url.clone(),
        settings.tunnel_container.clone(),
        engine.tunnel_logs,
    ));
    let metrics = Arc::new(metrics::Metrics::new(
        settings.isolation_mode.as_str(),
        settings.admin_listen.is_some(),
    ));
    let runtimes = Arc::new(provision::instrumented::Instrumented::new(
        engine.runtimes,
        metrics.clone(),
    ));
    let provisioner = Provisioner::new(settings.clone(), runtimes, views.clone(), metrics.clone(), auth.clone());
    if settings.isolation_mode != config::IsolationMode::Shared {
        // An engine that cannot run this backend is a configuration to fix, not a fault to
        // wait out; an engine that does not answer yet is retried like any other.
        match provisioner.backend().check_engine().await {
            Ok(()) => {}
            Err(provision::BackendError::Unsuitable(reason)) => return Err(StartupError::Engine(reason)),
            Err(error) => tracing::warn!(%error, "cannot check the container engine yet"),
        }
        // Adopt before serving, so a restarted gateway finds its runtimes rather than racing
        // requests; when the engine is down the reaper keeps trying.
        match provisioner.adopt().await {
            Ok(count) => tracing::info!(count, "adopted running runtimes"),
            Err(error) => tracing::warn!(%error, "container engine not reachable; serving anyway and retrying"),
        }
    }

    // Without a public base URL, ensure answers carry no view URL: say so once at start too.
    if views.base_url().await.is_empty() {
        views.warn_no_base_url(None);
    }

    // The admin listener (metrics, the admin API), owned here like the reaper.
    let admin_stop = CancellationToken::new();
    let _admin_guard = admin_stop.clone().drop_guard();
    // Serving matters more than being watched: an admin address that cannot be bound (a
    // second gateway on the host with the default) is a warning, not a refusal to start.
    if let Some(address) = settings.admin_listen {
        match TcpListener::bind(address).await {
            Ok(admin_listener) => {
                let bound = admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(addr = %bound, "admin listener ready (/metrics, /admin/runtimes)");
                let admin = Arc::new(admin::Admin {
                    provisioner: provisioner.clone(),
                    auth: auth.clone(),
                });
                tokio::spawn(admin::serve(admin_listener, admin, admin_stop.clone()));
            }
            Err(error) => tracing::warn!(
                %address,
                %error,
                "cannot listen on the admin address (server.admin_listen): no /metrics and no admin API; \
                 give each gateway on a host an admin address of its own"
            ),
        }
    }

    // The reaper is owned here: the guard cancels it however this function is left.
    let reaper_token = CancellationToken::new();
    let _reaper_guard = reaper_token.clone().drop_guard();
    let reaper = tokio::spawn(provision::reaper::run(provisioner.clone(), reaper_token.clone()));
    // The warm pool's refill task (nothing when runtime.warm_pool is 0), cancelled with it.
    let pool = tokio::spawn(provision::pool::run(provisioner.clone(), reaper_token.clone()));

    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        %addr,
        url = %format!("{scheme}://{addr}"),
        mode = settings.isolation_mode.as_str(),
        image = %settings.image,
        ttl_seconds = settings.ttl.as_secs(),
        "listening"
    );
    // Worker threads serve the connections; this task accepts them and keeps the control
    // plane (adoption, the reaper, certificate reloads, the shutdown signal).
    let tunnels = proxy::tunnel::Tunnels::new(server::parking::upgraded_socket);
    let limits = &settings.limits;
    let runs = Arc::new(runs::RunStore::new(
        limits.max_async_runs,
        limits.max_async_run_bytes,
        limits.async_run_lifetime,
    ));
    let mut workers = Vec::with_capacity(settings.workers);
    for index in 0..settings.workers {
        let worker = server::Worker {
            gateway: Arc::new(Gateway::new(
                settings.clone(),
                provisioner.clone(),
                views.clone(),
                auth.clone(),
                tunnels.clone(),
                runs.clone(),
            )),
            tls: tls.clone(),
            drain: settings.drain,
        };
        // On an error, the workers started so far see their inbox close and exit.
        workers.push(worker.spawn(index).map_err(StartupError::Workers)?);
    }
    let connections = Arc::new(tokio::sync::Semaphore::new(settings.limits.max_connections));
    let stop = CancellationToken::new();
    let server = tokio::spawn(server::serve(listener, workers, connections, stop.clone()));
    shutdown.await;
    tracing::info!("shutting down: no new connections; runtimes keep running");
    stop.cancel();
    server.await.ok();
    reaper_token.cancel();
    reaper.await.ok();
    pool.await.ok();
    Ok(())
}
