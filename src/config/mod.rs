//! Configuration: one validated [`Settings`], from defaults, a TOML file and the environment.
//!
//! Every key is defined once, in [`keys::KEYS`] (path, variables, default, doc). Loading
//! layers the defaults, the file and the environment (the seed's variable names where the
//! seed has one, `LAZYGATE_*` otherwise, through an [`Environment`]) into one table, refusing
//! unknown keys and values of the wrong type by name; [`RawConfig`] is that table typed, and
//! `Settings::try_from(raw)` checks every value's meaning. Unlike the seed, an invalid value
//! is never silently replaced by a default: the error names the key and the value, and the
//! binary exits with status 2.
//!
//! (Long because it holds the checks of some forty settings and their tests.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use keys::label;
pub use keys::{KEYS, Key, unknown_variables};

mod keys;

/// How runtimes are shared between owners (the seed's `BROWSER_USE_ISOLATION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationMode {
    /// One shared browser for everyone, at `BROWSER_URL` / `BROWSER_USE_RPC_URL`.
    Shared,
    /// One runtime per principal (user, session or thread); its profile volume is kept.
    DockerPerPrincipal,
    /// One runtime per task; its profile volume is removed with it.
    DockerPerTask,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Shared => "shared",
            IsolationMode::DockerPerPrincipal => "docker-per-principal",
            IsolationMode::DockerPerTask => "docker-per-task",
        }
    }
}

impl FromStr for IsolationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "shared" => Ok(IsolationMode::Shared),
            "docker-per-principal" => Ok(IsolationMode::DockerPerPrincipal),
            "docker-per-task" => Ok(IsolationMode::DockerPerTask),
            _ => Err("expected shared, docker-per-principal or docker-per-task".into()),
        }
    }
}

/// The container platform runtimes run on (`LAZYGATE_BACKEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// One Docker engine (`DOCKER_HOST`, else the local socket).
    Docker,
    /// A Docker Swarm, through a manager: one service per owner, scaled to zero when idle.
    Swarm,
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "docker" => Ok(BackendKind::Docker),
            "swarm" => Ok(BackendKind::Swarm),
            _ => Err("expected docker or swarm".into()),
        }
    }
}

/// How Swarm publishes a runtime service's name on its network (`LAZYGATE_ENDPOINT_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMode {
    /// The name resolves to the task's own address (works without IPVS).
    Dnsrr,
    /// The name resolves to a virtual IP the kernel's IPVS balances.
    Vip,
}

impl FromStr for EndpointMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dnsrr" => Ok(EndpointMode::Dnsrr),
            "vip" => Ok(EndpointMode::Vip),
            _ => Err("expected dnsrr or vip".into()),
        }
    }
}

/// How the gateway dials a runtime (`LAZYGATE_UPSTREAM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    /// The gateway shares the runtime network and dials `<container-name>:<port>`.
    Network,
    /// Runtime ports are published on 127.0.0.1 with ephemeral host ports.
    Published,
}

impl FromStr for UpstreamMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "network" => Ok(UpstreamMode::Network),
            "published" => Ok(UpstreamMode::Published),
            _ => Err("expected network or published".into()),
        }
    }
}

/// Where the `cdp_url` and `rpc_url` of an ensure answer point (`LAZYGATE_ANSWER_URLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerUrls {
    /// Through the gateway, `…/cdp/<owner>` and `…/rpc/<owner>`, at the host the caller used:
    /// the only way in, now that each runtime is alone on its network, and the caller's
    /// traffic holds the runtime.
    Gateway,
    /// The seed's `http://<container>:<port>`: reachable only from the runtime's own network.
    Direct,
}

impl FromStr for AnswerUrls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gateway" => Ok(AnswerUrls::Gateway),
            "direct" => Ok(AnswerUrls::Direct),
            _ => Err("expected gateway or direct".into()),
        }
    }
}

/// The configuration as layered from the key table (`keys::layered`): every key present (its default when
/// neither the file nor the environment sets it), typed, not yet checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    pub runtime: RawRuntime,
    pub shared: RawShared,
    pub view: RawView,
    pub auth: RawAuth,
    pub limits: RawLimits,
    pub api: RawApi,
}

impl Default for RawConfig {
    /// Every key at its default.
    fn default() -> RawConfig {
        RawConfig::try_from(keys::layered(None, &[]).expect("the defaults layer")).expect("the defaults are typed")
    }
}

impl TryFrom<toml::Table> for RawConfig {
    type Error = ConfigError;
    fn try_from(table: toml::Table) -> Result<RawConfig, ConfigError> {
        // Types were checked key by key while layering; what is left is a range (a port
        // above 65535) or a key the table and these structs disagree on (a bug).
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid("configuration", "", e.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub answer_urls: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_runtimes: u64,
    pub max_concurrent_starts: u64,
    pub runtime_memory_bytes: u64,
    pub runtime_cpus: f64,
    pub runtime_pids: u64,
    pub max_connections: u64,
    pub max_headers: u64,
    pub max_header_bytes: u64,
    pub header_read_timeout_seconds: u64,
    pub max_rpc_body_bytes: u64,
    pub max_async_runs: u64,
    pub max_async_run_bytes: u64,
    pub async_run_seconds: u64,
    pub max_view_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    pub admin_listen: String,
    pub default_upstream: String,
    pub upstream_timeout_seconds: u64,
    pub drain_seconds: u64,
    pub ws_ping_seconds: u64,
    pub ws_pong_timeout_seconds: u64,
    pub workers: u64,
    pub trusted_proxies: Vec<String>,
    pub tls_cert: String,
    pub tls_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub backend: String,
    pub isolation_mode: String,
    pub image: String,
    pub network: String,
    pub subnet_pool: String,
    pub subnet_prefix: u64,
    pub gateway_container: String,
    pub fence_image: String,
    pub endpoint_mode: String,
    pub volume_driver: String,
    pub volume_options: Vec<String>,
    pub node_socket: String,
    pub warm_pool: u64,
    pub ttl_seconds: u64,
    pub profile_retention_days: u64,
    pub start_timeout_seconds: u64,
    pub enable_ui: bool,
    pub upstream: String,
    pub view_port: u64,
    pub rpc_port: u64,
    pub cdp_port: u64,
    pub shm_size_bytes: u64,
    pub state_dir: String,
    pub scope: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    pub cdp_url: String,
    pub rpc_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub api_tokens: Vec<String>,
    pub view_secret: String,
    pub view_secret_previous: String,
    pub view_token_ttl_seconds: u64,
    pub allowed_origins: Vec<String>,
    pub insecure_dev: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawView {
    pub base_url: String,
    pub tunnel_container: String,
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The admin listener (metrics, the admin API); `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// Where paths that are not the gateway's go (`host:port` of an `http://` URL), so the
    /// gateway can be the only door behind the tunnel; `None`: 404.
    pub default_upstream: Option<String>,
    /// Longest wait for a runtime's response head before answering 504.
    pub upstream_timeout: Duration,
    /// How long open connections may finish after shutdown is asked for.
    pub drain: Duration,
    /// A view's client is pinged after this long without a word from it; `None`: never.
    pub ws_ping: Option<Duration>,
    /// A view's client that answers no ping within this is gone.
    pub ws_pong_timeout: Duration,
    /// Threads serving connections, each with its own event loop (one per core by default):
    /// a connection and its upstream stay on one thread, with no cross-thread wake-ups.
    pub workers: usize,
    /// The container platform runtimes run on.
    pub backend: BackendKind,
    pub isolation_mode: IsolationMode,
    pub image: String,
    /// Prefix of each runtime's own network, `<network>-<owner_hash>` (the seed's one flat
    /// network let runtimes reach each other).
    pub network: String,
    /// Addresses the runtimes' own networks are carved from, one `/subnet_prefix` each.
    pub subnet_pool: ipnet::Ipv4Net,
    pub subnet_prefix: u8,
    /// The container the gateway runs in (network mode joins it to each runtime's network);
    /// `None`: found from the hostname.
    pub gateway_container: Option<String>,
    /// Image of the helper that fences each runtime off inside its own network namespace
    /// (needs iproute2's `ip`); `None`: the gateway's own image, or `lazygate:latest`.
    pub fence_image: Option<String>,
    /// Swarm: how a runtime service's name resolves on its overlay network.
    pub endpoint_mode: EndpointMode,
    /// Swarm: the profile volumes' driver and its options (e.g. the local driver with NFS
    /// options), so that any node mounts a profile; `None`: local volumes, and each
    /// per-principal runtime is pinned to the node that holds its profile.
    pub volume_driver: Option<String>,
    pub volume_options: std::collections::BTreeMap<String, String>,
    /// Swarm: the engine's socket on each node, for the job that removes a volume there.
    pub node_socket: String,
    /// Runtimes kept started ahead for owners not seen yet (0: no pool); each counts in
    /// `limits.max_runtimes`.
    pub warm_pool: usize,
    /// Idle time after which a runtime without holds is removed.
    pub ttl: Duration,
    /// Time after an owner's last request when its per-principal profile volume is removed;
    /// `None`: profiles are kept forever.
    pub profile_retention: Option<Duration>,
    /// Longest wait for a runtime to be created and answer `/health`.
    pub start_timeout: Duration,
    pub enable_ui: bool,
    pub upstream: UpstreamMode,
    pub view_port: u16,
    pub rpc_port: u16,
    pub cdp_port: u16,
    pub shm_size_bytes: u64,
    /// Where the seed's registry file `docker_runtimes.json` lives.
    pub state_dir: PathBuf,
    /// When set, an extra label `lazygate.scope=<scope>` on everything created, and only
    /// runtimes with it are adopted: keeps several gateways on one engine apart.
    pub scope: Option<String>,
    pub shared_cdp_url: String,
    pub shared_rpc_url: String,
    /// Explicit public base URL of the views (BROWSER_VIEW_BASE_URL / BROWSER_VIEW_URL).
    pub view_base_url: Option<String>,
    /// Container whose logs announce the tunnel's public URL when no base URL is set.
    pub tunnel_container: String,
    /// The gateway's MODEL_DEFAULT / OPENAI_API_KEY / OPENAI_BASE_URL, passed to runtimes.
    pub passthrough_env: Vec<(String, String)>,
    /// The configuration file these settings were read from, read again on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Peers (the tunnel) whose X-Forwarded-* headers are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// PEM certificate chain and private key: the listener speaks HTTPS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: AuthSettings,
    pub limits: Limits,
    /// Where ensure answers send callers for CDP and runs.
    pub answer_urls: AnswerUrls,
}

/// What keeps the host alive: caps on runtimes and starts, per-runtime resources, and
/// per-request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Runtimes at once; at the cap the least recently used one without holds makes room.
    pub max_runtimes: usize,
    /// Runtimes starting at once (starting is the expensive part).
    pub max_concurrent_starts: usize,
    pub runtime_memory_bytes: u64,
    pub runtime_cpus: f64,
    pub runtime_pids: i64,
    /// Client connections at once; past it a connection gets 503 and is closed.
    pub max_connections: usize,
    pub max_headers: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Time a client gets to send its request head (slow senders are cut off).
    pub header_read_timeout: Duration,
    /// Largest request body on /rpc (413 beyond it).
    pub max_rpc_body_bytes: u64,
    /// Asynchronous runs kept at once, the largest answer kept, and how long a finished
    /// one is kept ([`crate::runs`]).
    pub max_async_runs: usize,
    pub max_async_run_bytes: usize,
    pub async_run_lifetime: Duration,
    /// Longest a live view's WebSocket stays open; `None`: no limit.
    pub max_view: Option<Duration>,
}

/// Who may reach runtimes; see [`crate::auth`].
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Bearer tokens accepted on /rpc, /cdp and /api; empty: generated at start.
    pub api_tokens: Vec<String>,
    /// Signs view URLs; `None`: generated at start.
    pub view_secret: Option<String>,
    /// The secret before the last rotation, still accepted so open views keep working.
    pub view_secret_previous: Option<String>,
    /// Lifetime of the view URLs the gateway hands out.
    pub view_token_ttl: Duration,
    /// Origins, besides the gateway's own, allowed to open WebSockets.
    pub allowed_origins: Vec<String>,
    /// Auth off, for local development only.
    pub insecure_dev: bool,
}

impl std::fmt::Debug for AuthSettings {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_tokens", &format_args!("[{} redacted]", self.api_tokens.len()))
            .field("view_secret", &self.view_secret.as_ref().map(|_| "redacted"))
            .field(
                "view_secret_previous",
                &self.view_secret_previous.as_ref().map(|_| "redacted"),
            )
            .field("view_token_ttl", &self.view_token_ttl)
            .field("allowed_origins", &self.allowed_origins)
            .field("insecure_dev", &self.insecure_dev)
            .finish()
    }
}

/// Variables passed from the gateway's environment to every runtime, as in the seed.
pub const PASSTHROUGH_ENV: [&str; 3] = ["MODEL_DEFAULT", "OPENAI_API_KEY", "OPENAI_BASE_URL"];

impl Settings {
    pub fn registry_path(&self) -> PathBuf {
        self.state_dir.join("docker_runtimes.json")
    }

    /// How often the reaper looks for idle runtimes: a tenth of the TTL, at most a second,
    /// so a runtime goes within TTL × 1.1 + 1 s.
    /// How often a shared backend's last-use label of a runtime in use is rewritten: a
    /// quarter of the TTL, so another gateway's reaper never finds a held runtime idle.
    pub fn use_refresh(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(300))
    }

    pub fn reap_interval(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Reads the file (when given) and the environment, and validates the result.
    pub fn load(path: Option<&Path>, env: &dyn Environment) -> Result<Settings, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.var("LAZYGATE_CONFIG").map(PathBuf::from));
        let file = match &path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?)
            }
            None => None,
        };
        let raw = RawConfig::try_from(keys::layered(file, env)?)?;
        let mut settings = Settings::try_from(raw)?;
        settings.passthrough_env = PASSTHROUGH_ENV
            .iter()
            .filter_map(|key| env.var(key).map(|value| (key.to_string(), value)))
            .collect();
        settings.config_file = path;
        Ok(settings)
    }
}

/// A configuration problem; the gateway refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid { key: String, value: String, reason: String },
    #[error("{key} in the config file is not a {what}; {hint}")]
    Unknown {
        key: String,
        what: &'static str,
        hint: String,
    },
}

/// Where environment overrides come from: the process environment, or a map in tests.
pub trait Environment {
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment. Empty variables count as unset, as in the seed.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

fn invalid(key: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// A whole number of at least `min`.
fn at_least(path: &str, value: u64, min: u64) -> Result<u64, ConfigError> {
    if value < min {
        return Err(invalid(&label(path), value, format!("must be at least {min}")));
    }
    Ok(value)
}

fn seconds(path: &str, value: u64, min: u64) -> Result<Duration, ConfigError> {
    at_least(path, value, min).map(Duration::from_secs)
}

/// Whole days, 0 meaning "never"; at most 100 years.
fn days(path: &str, value: u64) -> Result<Option<Duration>, ConfigError> {
    if value > 36_500 {
        return Err(invalid(&label(path), value, "expected at most 36500 days (0: never)"));
    }
    Ok((value > 0).then(|| Duration::from_secs(value * 86_400)))
}

fn port(path: &str, value: u64) -> Result<u16, ConfigError> {
    match u16::try_from(value) {
        Ok(0) => Err(invalid(&label(path), 0, "port 0 cannot be dialled")),
        Ok(p) => Ok(p),
        Err(_) => Err(invalid(&label(path), value, "expected a port number (1-65535)")),
    }
}

fn http_url(path: &str, value: String) -> Result<String, ConfigError> {
    let value = value.trim().to_owned();
    match value.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(value),
        _ => Err(invalid(&label(path), value, "expected an http:// URL with a host")),
    }
}

/// The `host:port` of an `http://host[:port][/]` URL with nothing after it (a path prefix
/// would have to be added to every request and taken out of every answer's links).
fn authority_of_base(path: &str, value: String) -> Result<String, ConfigError> {
    let value = http_url(path, value)?;
    let uri: http::Uri = value.parse().expect("checked by http_url");
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(
            &label(path),
            value,
            "expected an http:// URL without a path, e.g. http://api:8000",
        ));
    }
    let authority = uri.authority().expect("checked by http_url");
    Ok(match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:80", authority.host()),
    })
}

fn non_empty(path: &str, value: String) -> Result<String, ConfigError> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(invalid(&label(path), value, "must not be empty"));
    }
    Ok(value)
}

/// Free text where empty means "not set".
fn optional(value: String) -> Option<String> {
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A value with spaces is no image reference.
fn image_reference(path: &str, value: String) -> Result<String, ConfigError> {
    if value.chars().any(char::is_whitespace) {
        return Err(invalid(&label(path), value, "must not contain spaces"));
    }
    Ok(value)
}

/// One of a fixed set of words.
/// `runtime.volume_options`: `key=value` pairs, only with a volume driver to pass them to.
fn volume_options(driver: &str, options: &[String]) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let path = "runtime.volume_options";
    if !options.is_empty() && driver.trim().is_empty() {
        return Err(invalid(
            &label(path),
            options.join(","),
            "options need a driver: set runtime.volume_driver (LAZYGATE_VOLUME_DRIVER) too",
        ));
    }
    options
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
            _ => Err(invalid(&label(path), pair, "expected key=value, such as type=nfs")),
        })
        .collect()
}

fn choice<T: FromStr<Err = String>>(path: &str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|reason| invalid(&label(path), value, reason))
}

/// Docker names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn docker_name(path: &str, value: String) -> Result<String, ConfigError> {
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(value)
    } else {
        Err(invalid(
            &label(path),
            value,
            "expected a Docker name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
        ))
    }
}

/// The seed's `_normalize_browser_view_base_url`: cut at `/vnc.html` or `/index.html`, drop
/// trailing slashes.
pub fn normalize_view_base_url(raw: &str) -> String {
    let mut url = raw.trim();
    for marker in ["/vnc.html", "/index.html"] {
        if let Some(i) = url.find(marker) {
            url = &url[..i];
            break;
        }
    }
    url.trim_end_matches('/').to_owned()
}

impl TryFrom<RawConfig> for Settings {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Settings, ConfigError> {
        let RawConfig {
            server,
            runtime,
            shared,
            view,
            auth,
            limits,
            api,
        } = raw;
        let cpus = limits.runtime_cpus;
        if !(cpus.is_finite() && cpus >= 0.1) {
            return Err(invalid(&label("limits.runtime_cpus"), cpus, "must be at least 0.1"));
        }
        let limits = Limits {
            max_runtimes: at_least("limits.max_runtimes", limits.max_runtimes, 1)? as usize,
            max_concurrent_starts: at_least("limits.max_concurrent_starts", limits.max_concurrent_starts, 1)? as usize,
            runtime_memory_bytes: at_least(
                "limits.runtime_memory_bytes",
                limits.runtime_memory_bytes,
                64 * 1024 * 1024,
            )?,
            runtime_cpus: cpus,
            runtime_pids: at_least("limits.runtime_pids", limits.runtime_pids, 64)?.min(i64::MAX as u64) as i64,
            max_connections: at_least("limits.max_connections", limits.max_connections, 1)? as usize,
            max_headers: at_least("limits.max_headers", limits.max_headers, 8)? as usize,
            max_header_bytes: at_least("limits.max_header_bytes", limits.max_header_bytes, 8192)? as usize,
            header_read_timeout: seconds(
                "limits.header_read_timeout_seconds",
                limits.header_read_timeout_seconds,
                1,
            )?,
            max_rpc_body_bytes: at_least("limits.max_rpc_body_bytes", limits.max_rpc_body_bytes, 1024)?,
            max_async_runs: at_least("limits.max_async_runs", limits.max_async_runs, 1)? as usize,
            max_async_run_bytes: at_least("limits.max_async_run_bytes", limits.max_async_run_bytes, 1024)? as usize,
            async_run_lifetime: seconds("limits.async_run_seconds", limits.async_run_seconds, 1)?,
            max_view: (limits.max_view_seconds > 0).then(|| Duration::from_secs(limits.max_view_seconds)),
        };
        let tls = match (optional(server.tls_cert), optional(server.tls_key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (Some(cert), None) => {
                return Err(invalid(
                    &label("server.tls_key"),
                    "",
                    format!("needed with the certificate {cert}"),
                ));
            }
            (None, Some(key)) => {
                return Err(invalid(
                    &label("server.tls_cert"),
                    "",
                    format!("needed with the key {key}"),
                ));
            }
        };
        let trusted_proxies = server
            .trusted_proxies
            .iter()
            .map(|ip| {
                ip.trim()
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| invalid(&label("server.trusted_proxies"), ip, "expected IP addresses"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(short) = auth.api_tokens.iter().find(|t| t.len() < 16) {
            return Err(invalid(
                &label("auth.api_tokens"),
                format!("{}…", short.chars().take(3).collect::<String>()),
                "every token must be at least 16 characters",
            ));
        }
        let secret = |path: &str, value: String| -> Result<Option<String>, ConfigError> {
            match optional(value) {
                Some(v) if v.len() < 32 => Err(invalid(&label(path), "(redacted)", "must be at least 32 characters")),
                other => Ok(other),
            }
        };
        let auth = AuthSettings {
            api_tokens: auth.api_tokens,
            view_secret: secret("auth.view_secret", auth.view_secret)?,
            view_secret_previous: secret("auth.view_secret_previous", auth.view_secret_previous)?,
            view_token_ttl: seconds("auth.view_token_ttl_seconds", auth.view_token_ttl_seconds, 1)?,
            allowed_origins: auth.allowed_origins,
            insecure_dev: auth.insecure_dev,
        };
        let listen = server
            .listen
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| invalid(&label("server.listen"), &server.listen, "expected IP:PORT"))?;
        let admin_listen = optional(server.admin_listen.clone())
            .map(|address| {
                address.trim().parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        &label("server.admin_listen"),
                        &server.admin_listen,
                        "expected IP:PORT, or empty to turn it off",
                    )
                })
            })
            .transpose()?;
        let subnet_pool = runtime.subnet_pool.trim().parse::<ipnet::Ipv4Net>().map_err(|_| {
            invalid(
                &label("runtime.subnet_pool"),
                &runtime.subnet_pool,
                "expected an IPv4 network such as 10.213.0.0/16",
            )
        })?;
        if subnet_pool != subnet_pool.trunc() {
            return Err(invalid(
                &label("runtime.subnet_pool"),
                &runtime.subnet_pool,
                format!("host bits are set; did you mean {}?", subnet_pool.trunc()),
            ));
        }
        let subnet_prefix = runtime.subnet_prefix;
        if !(u64::from(subnet_pool.prefix_len())..=29).contains(&subnet_prefix) {
            return Err(invalid(
                &label("runtime.subnet_prefix"),
                subnet_prefix,
                format!(
                    "must be between the pool's /{} and /29 (a runtime's network holds the runtime and the gateway)",
                    subnet_pool.prefix_len()
                ),
            ));
        }
        let shm_size_bytes = at_least("runtime.shm_size_bytes", runtime.shm_size_bytes, 1024 * 1024)?;
        let backend: BackendKind = choice("runtime.backend", &runtime.backend)?;
        let upstream: UpstreamMode = choice("runtime.upstream", &runtime.upstream)?;
        if backend == BackendKind::Swarm && upstream == UpstreamMode::Published {
            return Err(invalid(
                &label("runtime.upstream"),
                &runtime.upstream,
                "runtime.backend = swarm dials runtimes on their overlay networks: expected network",
            ));
        }
        let warm_pool = runtime.warm_pool as usize;
        if warm_pool > 0 {
            let isolation: IsolationMode = choice("runtime.isolation_mode", &runtime.isolation_mode)?;
            if warm_pool as u64 > limits.max_runtimes as u64 {
                return Err(invalid(
                    &label("runtime.warm_pool"),
                    warm_pool,
                    format!(
                        "is larger than limits.max_runtimes ({}): pool runtimes count in it, so no owner would ever get one of its own",
                        limits.max_runtimes
                    ),
                ));
            }
            if isolation == IsolationMode::Shared {
                return Err(invalid(
                    &label("runtime.warm_pool"),
                    warm_pool,
                    "runtime.isolation_mode = shared starts no runtimes: expected 0",
                ));
            }
        }
        let view_base_url = Some(normalize_view_base_url(&view.base_url)).filter(|u| !u.is_empty());
        if let Some(url) = &view_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                &label("view.base_url"),
                url,
                "expected an http:// or https:// URL",
            ));
        }
        Ok(Settings {
            listen,
            admin_listen,
            default_upstream: optional(server.default_upstream.clone())
                .map(|url| authority_of_base("server.default_upstream", url))
                .transpose()?,
            upstream_timeout: seconds("server.upstream_timeout_seconds", server.upstream_timeout_seconds, 1)?,
            drain: seconds("server.drain_seconds", server.drain_seconds, 0)?,
            ws_ping: (server.ws_ping_seconds > 0).then(|| Duration::from_secs(server.ws_ping_seconds)),
            ws_pong_timeout: seconds("server.ws_pong_timeout_seconds", server.ws_pong_timeout_seconds, 1)?,
            workers: match server.workers {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n if n > 1024 => return Err(invalid(&label("server.workers"), n, "must be at most 1024")),
                n => n as usize,
            },
            backend,
            isolation_mode: choice("runtime.isolation_mode", &runtime.isolation_mode)?,
            image: image_reference("runtime.image", non_empty("runtime.image", runtime.image)?)?,
            network: docker_name("runtime.network", non_empty("runtime.network", runtime.network)?)?,
            subnet_pool,
            subnet_prefix: subnet_prefix as u8,
            gateway_container: optional(runtime.gateway_container)
                .map(|name| docker_name("runtime.gateway_container", name))
                .transpose()?,
            fence_image: optional(runtime.fence_image)
                .map(|image| image_reference("runtime.fence_image", image))
                .transpose()?,
            endpoint_mode: choice("runtime.endpoint_mode", &runtime.endpoint_mode)?,
            volume_driver: optional(runtime.volume_driver.clone()),
            volume_options: volume_options(&runtime.volume_driver, &runtime.volume_options)?,
            node_socket: non_empty("runtime.node_socket", runtime.node_socket)?,
            warm_pool,
            ttl: seconds("runtime.ttl_seconds", runtime.ttl_seconds, 1)?,
            profile_retention: days("runtime.profile_retention_days", runtime.profile_retention_days)?,
            start_timeout: seconds("runtime.start_timeout_seconds", runtime.start_timeout_seconds, 1)?,
            enable_ui: runtime.enable_ui,
            upstream,
            view_port: port("runtime.view_port", runtime.view_port)?,
            rpc_port: port("runtime.rpc_port", runtime.rpc_port)?,
            cdp_port: port("runtime.cdp_port", runtime.cdp_port)?,
            shm_size_bytes,
            state_dir: PathBuf::from(non_empty("runtime.state_dir", runtime.state_dir)?),
            scope: optional(runtime.scope)
                .map(|scope| docker_name("runtime.scope", scope))
                .transpose()?,
            shared_cdp_url: http_url("shared.cdp_url", shared.cdp_url)?,
            shared_rpc_url: http_url("shared.rpc_url", shared.rpc_url)?,
            view_base_url,
            tunnel_container: docker_name(
                "view.tunnel_container",
                non_empty("view.tunnel_container", view.tunnel_container)?,
            )?,
            passthrough_env: Vec::new(),
            config_file: None,
            trusted_proxies,
            tls,
            auth,
            limits,
            answer_urls: choice("api.answer_urls", &api.answer_urls)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &dyn Environment) -> Result<Settings, ConfigError> {
        let file: toml::Table = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        Settings::try_from(RawConfig::try_from(keys::layered(Some(file), env)?)?)
    }

    #[test]
    fn defaults_match_the_seed() {
        let s = load("", &[]).unwrap();
        assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.image, "browser-use-browser-runtime:latest");
        assert_eq!(s.network, "browser-net");
        assert_eq!(s.ttl, Duration::from_secs(900));
        assert_eq!(s.start_timeout, Duration::from_secs(45));
        assert!(s.enable_ui);
        assert_eq!(s.upstream, UpstreamMode::Network);
        assert_eq!((s.view_port, s.rpc_port, s.cdp_port), (6080, 8787, 9222));
        assert_eq!(
            s.registry_path(),
            PathBuf::from("/tmp/browser-use-api/docker_runtimes.json")
        );
        assert_eq!(s.shared_rpc_url, "http://browser:8787/run");
        assert_eq!(s.view_base_url, None);
    }

    #[test]
    fn workers_default_to_one_per_core_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(load("", &[]).unwrap().workers, cores);
        assert_eq!(load("[server]\nworkers = 3", &[]).unwrap().workers, 3);
        assert_eq!(load("", &[("LAZYGATE_WORKERS", "1")]).unwrap().workers, 1);
        let error = load("", &[("LAZYGATE_WORKERS", "5000")]).unwrap_err().to_string();
        assert!(error.contains("LAZYGATE_WORKERS") && error.contains("5000"), "{error}");
        assert!(load("", &[("LAZYGATE_WORKERS", "many")]).is_err());
    }

    #[test]
    fn the_warm_pool_is_off_by_default_and_must_fit_under_the_runtime_cap() {
        assert_eq!(load("", &[]).unwrap().warm_pool, 0);
        assert_eq!(load("", &[("LAZYGATE_WARM_POOL", "3")]).unwrap().warm_pool, 3);
        let env = [("LAZYGATE_WARM_POOL", "5"), ("LAZYGATE_MAX_RUNTIMES", "4")];
        let error = load("", &env).unwrap_err().to_string();
        assert!(
            error.contains("runtime.warm_pool") && error.contains("limits.max_runtimes (4)"),
            "{error}"
        );
        let error = load("[runtime]\nwarm_pool = 2\nisolation_mode = \"shared\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("runtime.warm_pool") && error.contains("shared"),
            "{error}"
        );
        let swarm = load("[runtime]\nwarm_pool = 2\nbackend = \"swarm\"\n", &[]).unwrap();
        assert_eq!(swarm.warm_pool, 2, "both backends have a pool");
    }

    #[test]
    fn the_shipped_file_parses_to_the_defaults() {
        let text = include_str!("../../config/lazygate.toml");
        let s = load(text, &[]).unwrap();
        let d = load("", &[]).unwrap();
        assert_eq!(format!("{s:?}"), format!("{d:?}"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("BROWSER_USE_ISOLATION_MODE", "docker-per-task"),
            ("BROWSER_RUNTIME_TTL_SECONDS", "5"),
            ("BROWSER_RUNTIME_ENABLE_UI", "off"),
            ("LAZYGATE_UPSTREAM", "published"),
            ("LAZYGATE_LISTEN", "127.0.0.1:0"),
            ("BROWSER_VIEW_URL", "https://x.example/vnc.html?path=websockify"),
            ("BROWSER_RUNTIME_IMAGE", ""),
        ];
        let s = load("[runtime]\nttl_seconds = 60\nimage = \"img:1\"\n", &env).unwrap();
        assert_eq!(s.isolation_mode, IsolationMode::DockerPerTask);
        assert_eq!(s.ttl, Duration::from_secs(5));
        assert!(!s.enable_ui);
        assert_eq!(s.upstream, UpstreamMode::Published);
        assert_eq!(s.image, "img:1", "an empty variable counts as unset");
        assert_eq!(s.view_base_url.as_deref(), Some("https://x.example"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        type Case<'a> = (&'a str, [(&'a str, &'a str); 1], &'a str);
        let cases: Vec<Case> = vec![
            (
                "",
                [("BROWSER_RUNTIME_TTL_SECONDS", "abc")],
                "BROWSER_RUNTIME_TTL_SECONDS",
            ),
            (
                "",
                [("BROWSER_RUNTIME_TTL_SECONDS", "0")],
                "BROWSER_RUNTIME_TTL_SECONDS",
            ),
            (
                "",
                [("BROWSER_USE_ISOLATION_MODE", "docker")],
                "BROWSER_USE_ISOLATION_MODE",
            ),
            (
                "",
                [("BROWSER_RUNTIME_ENABLE_UI", "maybe")],
                "BROWSER_RUNTIME_ENABLE_UI",
            ),
            ("", [("LAZYGATE_UPSTREAM", "carrier-pigeon")], "LAZYGATE_UPSTREAM"),
            ("", [("LAZYGATE_LISTEN", "8080")], "LAZYGATE_LISTEN"),
            ("", [("LAZYGATE_VIEW_PORT", "70000")], "LAZYGATE_VIEW_PORT"),
            ("", [("LAZYGATE_RPC_PORT", "0")], "LAZYGATE_RPC_PORT"),
            ("", [("BROWSER_URL", "browser:9222")], "BROWSER_URL"),
            (
                "",
                [("BROWSER_RUNTIME_NETWORK", "no spaces")],
                "BROWSER_RUNTIME_NETWORK",
            ),
            ("[runtime]\nttl_seconds = 0\n", [("X", "")], "runtime.ttl_seconds"),
            ("", [("LAZYGATE_SUBNET_POOL", "10.213.0.0")], "LAZYGATE_SUBNET_POOL"),
            ("", [("LAZYGATE_SUBNET_POOL", "10.213.0.1/16")], "LAZYGATE_SUBNET_POOL"),
            ("", [("LAZYGATE_SUBNET_PREFIX", "30")], "LAZYGATE_SUBNET_PREFIX"),
            ("", [("LAZYGATE_ANSWER_URLS", "sideways")], "LAZYGATE_ANSWER_URLS"),
            ("", [("LAZYGATE_BACKEND", "podman")], "LAZYGATE_BACKEND"),
            (
                "[runtime]\nbackend = \"swarm\"\n",
                [("LAZYGATE_UPSTREAM", "published")],
                "LAZYGATE_UPSTREAM",
            ),
            ("", [("LAZYGATE_VOLUME_OPTIONS", "type=nfs")], "LAZYGATE_VOLUME_OPTIONS"),
            (
                "[runtime]\nvolume_driver = \"local\"\n",
                [("LAZYGATE_VOLUME_OPTIONS", "no-equals-sign")],
                "LAZYGATE_VOLUME_OPTIONS",
            ),
            ("", [("LAZYGATE_ENDPOINT_MODE", "ipvs")], "LAZYGATE_ENDPOINT_MODE"),
            (
                "[runtime]\nsubnet_pool = \"10.213.0.0/24\"\n",
                [("LAZYGATE_SUBNET_PREFIX", "20")],
                "LAZYGATE_SUBNET_PREFIX",
            ),
        ];
        for (file, env, key) in cases {
            let err = load(file, &env).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load("[runtime]\nttl = 5\n", &[]).unwrap_err().to_string();
        assert!(err.contains("ttl"), "{err}");
    }

    #[test]
    fn view_base_url_is_normalized_like_the_seed() {
        assert_eq!(normalize_view_base_url(" https://a.b/x/vnc.html?p=1 "), "https://a.b/x");
        assert_eq!(normalize_view_base_url("https://a.b/index.html"), "https://a.b");
        assert_eq!(normalize_view_base_url("https://a.b///"), "https://a.b");
    }

    /// The README's configuration table as (key, environment variables, default, doc) rows.
    fn readme_rows() -> Vec<(String, Vec<String>, String, String)> {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..readme.find("## Errors").unwrap()];
        let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (keys, envs, default, doc) = (ticked(cells[1]), ticked(cells[2]), cells[3], cells[4]);
            // `900`, `0` (one per core): the first ticked value; "empty", "generated": none.
            let default = ticked(default).into_iter().next().unwrap_or_default();
            for (i, key) in keys.iter().enumerate() {
                // Rows naming several keys pair them with as many variables, in order.
                let env = if keys.len() > 1 {
                    vec![envs[i].clone()]
                } else {
                    envs.clone()
                };
                rows.push((key.clone(), env, default.clone(), doc.to_owned()));
            }
        }
        rows
    }

    /// A default as the README and the shipped file write it ("" for an empty string or list).
    fn written(default: keys::Fallback) -> String {
        match default {
            keys::Fallback::Text(text) => text.to_owned(),
            keys::Fallback::Whole(n) => n.to_string(),
            keys::Fallback::Number(x) => format!("{x:?}"),
            keys::Fallback::Flag(b) => b.to_string(),
            keys::Fallback::List => String::new(),
        }
    }

    /// The key table as (key, environment variables, default, doc) rows.
    fn table_rows() -> Vec<(String, Vec<String>, String, String)> {
        KEYS.iter()
            .map(|k| {
                let env = k.env.iter().map(|v| v.to_string()).collect();
                (k.path.to_owned(), env, written(k.default), k.doc.to_owned())
            })
            .collect()
    }

    /// The shipped file's keys with their values as text ("" for an empty string or list).
    fn shipped_keys() -> Vec<(String, String)> {
        let table: toml::Table = toml::from_str(include_str!("../../config/lazygate.toml")).unwrap();
        let mut keys = Vec::new();
        for (section, values) in &table {
            for (name, value) in values.as_table().unwrap() {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(a) if a.is_empty() => String::new(),
                    other => other.to_string(),
                };
                keys.push((format!("{section}.{name}"), text));
            }
        }
        keys
    }

    #[test]
    fn the_readme_table_says_what_the_key_table_says() {
        let mut readme = readme_rows();
        let mut table = table_rows();
        readme.sort();
        table.sort();
        assert_eq!(readme, table, "README table (left) and keys.rs (right) differ");
    }

    #[test]
    fn the_shipped_file_lists_every_key_at_its_default() {
        let mut shipped = shipped_keys();
        let mut table: Vec<(String, String)> = table_rows().into_iter().map(|(k, _, d, _)| (k, d)).collect();
        shipped.sort();
        table.sort();
        assert_eq!(shipped, table, "config/lazygate.toml (left) and keys.rs (right) differ");
        // Every key also parses, so the file can never list a key the gateway refuses.
        load(include_str!("../../config/lazygate.toml"), &[]).unwrap();
    }

    #[test]
    fn every_variable_of_the_table_does_something() {
        let defaults = format!("{:?}", load("", &[]).unwrap());
        for name in KEYS.iter().flat_map(|k| k.env.iter()) {
            // Setting it to nonsense is noticed (or, for free text, taken), never ignored.
            let env = [(*name, "\u{1}nonsense")];
            if let Ok(settings) = load("", &env) {
                assert_ne!(format!("{settings:?}"), defaults, "{name} changed nothing");
            }
        }
    }

    #[test]
    fn a_file_value_of_the_wrong_type_names_its_key() {
        for (file, key, reason) in [
            (
                "[runtime]\nttl_seconds = \"15m\"\n",
                "runtime.ttl_seconds",
                "whole number",
            ),
            ("[runtime]\nttl_seconds = -5\n", "runtime.ttl_seconds", "whole number"),
            ("[limits]\nruntime_cpus = \"two\"\n", "limits.runtime_cpus", "a number"),
            ("[auth]\ninsecure_dev = \"yes\"\n", "auth.insecure_dev", "true or false"),
            ("[auth]\napi_tokens = \"abc\"\n", "auth.api_tokens", "list of strings"),
            ("[runtime]\nview_port = 70000\n", "runtime.view_port", "port number"),
        ] {
            let err = load(file, &[]).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(reason),
                "{err} should name {key}: {reason}"
            );
        }
        // A whole number is a fine number.
        assert_eq!(
            load("[limits]\nruntime_cpus = 1\n", &[]).unwrap().limits.runtime_cpus,
            1.0
        );
    }

    #[test]
    fn a_misspelt_key_or_variable_gets_the_nearest_name() {
        let err = load("[runtime]\nttl_second = 5\n", &[]).unwrap_err().to_string();
        assert!(err.contains("did you mean runtime.ttl_seconds?"), "{err}");
        let err = load("[limit]\nmax_runtimes = 5\n", &[]).unwrap_err().to_string();
        assert!(err.contains("did you mean limits.max_runtimes?"), "{err}");
        let err = load("max_runtimes = 5\n", &[]).unwrap_err().to_string();
        assert!(
            err.contains("max_runtimes in the config file is not a section"),
            "{err}"
        );
        let names = [
            "LAZYGATE_MAX_RUNTIME",
            "LAZYGATE_MAX_RUNTIMES",
            "PATH",
            "LAZYGATE_CONFIG",
            "LAZYGATE_ZZZ",
        ];
        assert_eq!(
            unknown_variables(names.into_iter()),
            vec![
                ("LAZYGATE_MAX_RUNTIME".to_owned(), Some("LAZYGATE_MAX_RUNTIMES")),
                ("LAZYGATE_ZZZ".to_owned(), None),
            ]
        );
    }

    #[test]
    fn the_deploy_files_give_the_gateway_longer_to_stop_than_it_drains() {
        let drain = match keys::key("server.drain_seconds").default {
            keys::Fallback::Whole(seconds) => seconds,
            other => panic!("{other:?}"),
        };
        let number_after = |text: &str, marker: &str| -> u64 {
            let rest = &text[text.find(marker).unwrap_or_else(|| panic!("{marker} missing")) + marker.len()..];
            rest.trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap()
        };
        let script = include_str!("../../deploy/run-gateway.sh");
        let compose = include_str!("../../deploy/compose.yaml");
        for (file, seconds) in [
            ("run-gateway.sh --stop-timeout", number_after(script, "--stop-timeout")),
            ("run-gateway.sh docker stop -t", number_after(script, "docker stop -t")),
            (
                "compose.yaml stop_grace_period",
                number_after(compose, "stop_grace_period:"),
            ),
        ] {
            assert!(seconds > drain, "{file}: {seconds} s is not beyond the {drain} s drain");
        }
        assert!(
            !script.contains("rm -f lazygate"),
            "removing the gateway by force skips the drain"
        );
    }
}
