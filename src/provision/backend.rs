//! The backend trait: what the gateway needs from a container platform.
//!
//! Docker ([`super::docker`]) and Docker Swarm ([`super::swarm`]) implement it, each in one
//! file, chosen by `runtime.backend` in [`super::engine`]; nothing above it changes. A
//! backend whose runtimes several gateways serve at once ([`Backend::is_shared`]) keeps last
//! use on the engine ([`Backend::record_use`]) and retires a runtime only if nobody used it
//! since ([`Backend::retire`]). The trait is object-safe and held as
//! `Arc<dyn Backend>`; it speaks of runtimes, specs and endpoints, never of containers,
//! published ports or `K=V` strings.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use crate::owner::OwnerHash;

/// Labels every runtime and volume carries, exactly as the seed sets them.
pub const LABEL_RUNTIME: &str = "browser_use.runtime";
pub const LABEL_OWNER_HASH: &str = "browser_use.owner_hash";
pub const LABEL_MANAGED_BY: &str = "browser_use.managed_by";
pub const MANAGED_BY: &str = "browser_runtime_manager";
/// Extra label, only when a scope is configured: keeps several gateways on one engine apart.
pub const LABEL_SCOPE: &str = "lazygate.scope";
/// Label on a shared backend's runtime (Swarm: its service) with its last use, in whole
/// seconds since the Unix epoch, written by whichever gateway saw the use.
pub const LABEL_LAST_USED: &str = "lazygate.last_used";
/// Label of the short-lived helper that fences a runtime (value: the owner hash), so a
/// helper left by a gateway killed mid-fence is found and removed.
pub const LABEL_FENCE: &str = "lazygate.fence";

/// How old a finished helper must be before [`Backend::sweep_leftovers`] takes it: a
/// helper lives well under a second from creation to removal by the gateway that made it,
/// so one this old is no gateway's fence in progress, while one that is still running is
/// left alone whatever its age.
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// Label of a warm-pool runtime, its container and volume and network (value: the pool id
/// in their names). It stays after the runtime is claimed (Docker labels are fixed), which
/// is how a claimed runtime's own network and volume are found again.
pub const LABEL_POOL: &str = "lazygate.pool";

/// Label of an owner's seed-named profile volume made when a pool runtime was claimed
/// (Docker): the pool volume that holds the profile until the runtime is put to rest. A start
/// that finds that volume still there takes the profile back from it first.
pub const LABEL_PROFILE_IN: &str = "lazygate.profile_in";

/// A warm-pool runtime's container name before it is claimed.
pub fn pool_container_name(pool_id: &str) -> String {
    format!("lazygate-pool-{pool_id}")
}

/// A warm-pool runtime's profile volume, which stays its volume after the claim (volumes
/// cannot be renamed) until the runtime is put to rest.
pub fn pool_volume_name(pool_id: &str) -> String {
    format!("lazygate-pool-{pool_id}")
}

/// A warm-pool runtime's own network, `<prefix>-pool-<pool_id>`, kept after the claim.
pub fn pool_network_name(prefix: &str, pool_id: &str) -> String {
    format!("{prefix}-pool-{pool_id}")
}

/// The seed's container name for an owner.
pub fn container_name(owner_hash: &OwnerHash) -> String {
    format!("browser-use-browser-{owner_hash}")
}

/// The seed's profile volume name for an owner.
pub fn volume_name(owner_hash: &OwnerHash) -> String {
    format!("browser-use-profile-{owner_hash}")
}

/// The network of an owner's runtime alone: `<prefix>-<owner_hash>` (`browser-net-<hash>`).
pub fn network_name(prefix: &str, owner_hash: &OwnerHash) -> String {
    format!("{prefix}-{owner_hash}")
}

/// Environment variable carrying a runtime's own key: the gateway sends it with every
/// request (header [`crate::auth::RUNTIME_KEY_HEADER`]) and the reference runtime refuses
/// requests without it, so that nothing but the gateway drives a runtime even if it
/// reaches its ports.
pub const RUNTIME_KEY_ENV: &str = "LAZYGATE_RUNTIME_KEY";

/// Everything needed to run one owner's runtime, whatever the engine. How it is named,
/// networked and reached is the backend's to decide (and to keep seed-compatible).
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    pub owner_hash: OwnerHash,
    pub image: String,
    /// The runtime's environment: the seed's variables and the runtime's key.
    pub env: BTreeMap<String, String>,
    pub labels: HashMap<String, String>,
    pub shm_size_bytes: u64,
    pub resources: Resources,
}

/// A runtime for the warm pool: what [`RuntimeSpec`] says minus the owner, whom nobody
/// knows yet. Its labels carry [`LABEL_POOL`] and no owner; its environment no view URL.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Random, in its names and its [`LABEL_POOL`] label.
    pub pool_id: String,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub labels: HashMap<String, String>,
    pub shm_size_bytes: u64,
    pub resources: Resources,
}

/// A warm-pool runtime, started and fenced, not yet claimed by any owner. No route reaches
/// it: routes find runtimes by owner, and it has none.
#[derive(Debug, Clone)]
pub struct PooledRuntime {
    pub pool_id: String,
    /// The backend's own id of the runtime (Docker: the container id).
    pub id: String,
    pub name: String,
    /// Where the gateway dials its services (for the readiness probe).
    pub endpoints: Endpoints,
}

/// What a runtime is made of (image, environment, labels, resources): an owner's [`RuntimeSpec`] or a [`PoolSpec`].
#[derive(Clone, Copy)]
pub struct Blueprint<'a> {
    pub image: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub labels: &'a HashMap<String, String>,
    pub shm_size_bytes: u64,
    pub resources: Resources,
}

impl<'a> From<&'a RuntimeSpec> for Blueprint<'a> {
    fn from(spec: &'a RuntimeSpec) -> Self {
        Blueprint {
            image: &spec.image,
            env: &spec.env,
            labels: &spec.labels,
            shm_size_bytes: spec.shm_size_bytes,
            resources: spec.resources,
        }
    }
}

impl<'a> From<&'a PoolSpec> for Blueprint<'a> {
    fn from(spec: &'a PoolSpec) -> Self {
        Blueprint {
            image: &spec.image,
            env: &spec.env,
            labels: &spec.labels,
            shm_size_bytes: spec.shm_size_bytes,
            resources: spec.resources,
        }
    }
}

/// What [`Backend::claim`] did.
#[derive(Debug)]
pub enum Claim {
    /// The runtime is the owner's now.
    Claimed(Box<RuntimeInfo>),
    /// The owner has a runtime or a profile already: it gets those; the pooled runtime
    /// stays in the pool.
    OwnerHasOne,
    /// The pooled runtime is no longer the pool's (removed, or claimed through another
    /// gateway): forget it, remove nothing.
    Gone,
}

/// What one runtime may use of the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    pub memory_bytes: u64,
    pub cpus: f64,
    pub pids: i64,
}

/// The container ports a runtime serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub rpc: u16,
    pub view: u16,
    pub cdp: u16,
}

/// Where a runtime's services answer, as `host:port` authorities the gateway can dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub rpc: String,
    pub view: String,
    pub cdp: String,
}

/// A running runtime as the backend sees it.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// The backend's own id of the runtime (Docker: the container id): tells a recreated
    /// runtime from the one it replaced.
    pub id: String,
    /// The runtime's name on the engine (Docker: the container's), for logs and the registry.
    pub name: String,
    pub owner_hash: OwnerHash,
    /// Where the gateway dials the runtime's services.
    pub endpoints: Endpoints,
    /// Where something on the runtime's own network would dial them (the seed's URLs).
    pub direct: Endpoints,
    /// True when the runtime was already running (adopted), false when this call created it.
    pub adopted: bool,
    /// The runtime's own key ([`RUNTIME_KEY_ENV`]), ready to send with every request to it;
    /// `None` for runtimes made without one (by the seed).
    pub key: Option<http::HeaderValue>,
    /// How long each phase of its start took (`volume`, `network`, `create`, `start`, `join`:
    /// the gateway joining its network; then provisioning's `fence` and `ready`), when this
    /// gateway started it; empty otherwise.
    pub phases: Vec<(&'static str, std::time::Duration)>,
    /// Last use as the engine records it ([`LABEL_LAST_USED`]), seconds since the Unix
    /// epoch; `None` where last use lives in the registry file (Docker).
    pub last_used: Option<f64>,
    /// The profile volume, when it is not the seed's `browser-use-profile-<hash>`: a claimed
    /// warm-pool runtime keeps the volume it was started with (the registry file's
    /// `volume_name` says so) until it is put to rest.
    pub profile: Option<String>,
}

/// What [`Backend::retire`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retirement {
    /// The runtime is at rest (removed, or scaled to zero).
    Retired,
    /// Someone used it after the cut-off (another gateway): last use, seconds since the
    /// Unix epoch. It stays.
    UsedSince(f64),
}

/// A failed engine operation, named after the operation.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connecting to the container engine failed: {0}")]
    Connect(String),
    #[error("{operation} failed: {message}")]
    Operation {
        operation: Operation,
        /// True when the engine could not be reached at all (socket gone, timeout).
        unavailable: bool,
        message: String,
    },
    #[error("runtime {0} has no address for its port {1}")]
    NoEndpoint(String, u16),
    #[error("no free subnet of /{prefix} left in the runtime subnet pool {pool}; widen runtime.subnet_pool")]
    SubnetPoolExhausted { pool: String, prefix: u8 },
    #[error(
        "{name} belongs to {}, not to this gateway{}: gateways sharing an engine must not share owner ids (the seed's names carry only the owner hash)",
        describe_scope(.theirs), describe_own(.ours)
    )]
    NameTaken {
        /// The runtime's (or its volume's) name on the engine.
        name: String,
        /// The scope it carries: `None` for the seed's or an unscoped gateway's.
        theirs: Option<String>,
        ours: Option<String>,
    },
    /// The engine cannot run this backend (Swarm on an engine that is no manager): a start-up refusal.
    #[error("{0}")]
    Unsuitable(String),
    /// No node can take the runtime now (its pinned node is gone or full): the scheduler's reason.
    #[error("no node can run the runtime now: {0}")]
    Unplaceable(String),
    #[error(
        "cannot tell which container the gateway runs in, to join runtime networks: {0}; set runtime.gateway_container (LAZYGATE_GATEWAY_CONTAINER)"
    )]
    GatewayContainerUnknown(String),
}

fn describe_scope(scope: &Option<String>) -> String {
    match scope {
        Some(scope) => format!("the gateway of scope {scope}"),
        None => "the seed or a gateway without a scope".to_owned(),
    }
}

fn describe_own(scope: &Option<String>) -> String {
    match scope {
        Some(scope) => format!(" (scope {scope})"),
        None => " (no scope)".to_owned(),
    }
}

/// Engine operations, for error messages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Ping,
    InspectContainer,
    ListContainers,
    ListNetworks,
    CreateNetwork,
    ConnectNetwork,
    DisconnectNetwork,
    RemoveNetwork,
    CreateVolume,
    InspectVolume,
    InspectImage,
    ListVolumes,
    CreateContainer,
    StartContainer,
    RemoveContainer,
    RemoveVolume,
    ReadLogs,
    Fence,
    MoveProfile,
    RenameContainer,
    InspectSwarm,
    ListNodes,
    CreateService,
    InspectService,
    UpdateService,
    RemoveService,
    ListServices,
    ListTasks,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Ping => "ping",
            Operation::InspectContainer => "inspect container",
            Operation::ListContainers => "list containers",
            Operation::ListNetworks => "list networks",
            Operation::CreateNetwork => "create network",
            Operation::ConnectNetwork => "connect network",
            Operation::DisconnectNetwork => "disconnect network",
            Operation::RemoveNetwork => "remove network",
            Operation::CreateVolume => "create volume",
            Operation::InspectVolume => "inspect volume",
            Operation::InspectImage => "inspect image",
            Operation::ListVolumes => "list volumes",
            Operation::CreateContainer => "create container",
            Operation::StartContainer => "start container",
            Operation::RemoveContainer => "remove container",
            Operation::RemoveVolume => "remove volume",
            Operation::ReadLogs => "read logs",
            Operation::Fence => "fence runtime",
            Operation::MoveProfile => "move profile",
            Operation::RenameContainer => "rename container",
            Operation::InspectSwarm => "inspect swarm",
            Operation::ListNodes => "list nodes",
            Operation::CreateService => "create service",
            Operation::InspectService => "inspect service",
            Operation::UpdateService => "update service",
            Operation::RemoveService => "remove service",
            Operation::ListServices => "list services",
            Operation::ListTasks => "list tasks",
        })
    }
}

impl BackendError {
    /// True when the engine itself is unreachable (503), false when it answered with an error (502).
    pub fn is_unavailable(&self) -> bool {
        match self {
            BackendError::Connect(_) | BackendError::Unplaceable(_) => true,
            BackendError::Operation { unavailable, .. } => *unavailable,
            BackendError::NoEndpoint(..)
            | BackendError::NameTaken { .. }
            | BackendError::SubnetPoolExhausted { .. }
            | BackendError::Unsuitable(_)
            | BackendError::GatewayContainerUnknown(_) => false,
        }
    }
}

/// A container platform that can run owners' runtimes, in the engine's neutral terms.
/// Runtimes are found by owner hash; the backend names, places and reaches them.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Does the engine answer?
    async fn ping(&self) -> Result<(), BackendError>;

    /// Checked once at start: can this backend run on the engine it reaches (Swarm: a
    /// manager)? [`BackendError::Unsuitable`] says what to do; an engine that does not
    /// answer yet is not refused here.
    async fn check_engine(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// True when several gateways may serve this backend's runtimes at once with the engine
    /// as their only shared state: last use is recorded there ([`Backend::record_use`]), and
    /// each reaper pass adopts the runtimes other gateways started.
    fn is_shared(&self) -> bool {
        false
    }

    /// Records an owner's last use (seconds since the Unix epoch) where every gateway sees
    /// it; nothing for a backend whose last use lives in the registry file.
    async fn record_use(&self, owner_hash: &OwnerHash, last_used: f64) -> Result<(), BackendError> {
        let _ = (owner_hash, last_used);
        Ok(())
    }

    /// Puts an idle runtime to rest, unless the engine says it was used after `idle_before`
    /// (seconds since the Unix epoch). Docker removes it ([`Backend::remove`]); Swarm scales
    /// its service to zero (or removes it, `with_volume`) with a compare-and-swap at the
    /// version whose last use it judged, so a use recorded in between wins.
    async fn retire(
        &self,
        owner_hash: &OwnerHash,
        idle_before: f64,
        with_volume: bool,
    ) -> Result<Retirement, BackendError> {
        let _ = idle_before;
        self.remove(owner_hash, with_volume).await.map(|()| Retirement::Retired)
    }

    /// The images a start needs that the engine does not have: `runtime_image`, and any the
    /// backend runs beside runtimes. A gateway that cannot start runtimes is not ready.
    async fn missing_images(&self, runtime_image: &str) -> Result<Vec<String>, BackendError>;

    /// Returns the owner's running runtime, creating (or replacing a stopped) one if needed,
    /// reachable by the gateway and by no other runtime. Creating is idempotent across
    /// callers: a name conflict adopts the winner's runtime.
    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError>;

    /// Walls a running runtime off from every other runtime from inside its own network
    /// namespace, so that isolation does not rest on the host's forwarding rules alone.
    /// Provision runs it alongside readiness and forwards nothing to a runtime before it
    /// has returned `Ok`; idempotent.
    async fn fence(&self, runtime: &RuntimeInfo) -> Result<(), BackendError>;

    /// The last `lines` lines of the runtime's own output, for the warning about a runtime
    /// that never became ready (it is removed right after, and its logs with it).
    async fn last_output(&self, runtime: &RuntimeInfo, lines: usize) -> Result<String, BackendError>;

    /// Is this runtime still running? `Ok(false)` when it is gone or was replaced.
    async fn is_running(&self, runtime: &RuntimeInfo) -> Result<bool, BackendError>;

    /// Removes the owner's runtime (if present) with what was made for it alone, and, when
    /// asked, its profile volume.
    async fn remove(&self, owner_hash: &OwnerHash, with_volume: bool) -> Result<(), BackendError>;

    /// Owners with a profile volume on the engine (this gateway's scope, or the seed's when
    /// no scope is set), for the profile retention.
    async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError>;

    /// Removes the owner's profile volume; `Ok(false)` when a runtime (running or stopped)
    /// still uses it, and so it stays.
    async fn remove_profile(&self, owner_hash: &OwnerHash) -> Result<bool, BackendError>;

    /// Running runtimes that carry the managed labels (and the scope label, when set), made
    /// reachable as [`Backend::ensure`] makes them; claimed warm-pool runtimes among them,
    /// unclaimed ones not.
    async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError>;

    /// Removes what a gateway killed in the middle of an operation left on the engine
    /// (Docker: fence helpers that ended, or were never started, at least
    /// [`LEFTOVER_AGE`] after they were made); how many it removed. The reaper calls it
    /// once runtimes are adopted and every [`super::reaper::LEFTOVER_SWEEP_INTERVAL`] after.
    async fn sweep_leftovers(&self) -> Result<usize, BackendError> {
        Ok(0)
    }

    /// Creates and starts one warm-pool runtime: no owner, a network and a fresh profile
    /// volume of its own, fenced like any runtime. Readiness is the caller's to wait for.
    async fn start_pooled(&self, spec: &PoolSpec) -> Result<PooledRuntime, BackendError> {
        let _ = spec;
        Err(BackendError::Unsuitable("this backend has no warm pool".to_owned()))
    }

    /// The warm pool's running, unclaimed runtimes (of this scope); pool runtimes that are
    /// not running and were never claimed are removed on the way.
    async fn list_pooled(&self) -> Result<Vec<PooledRuntime>, BackendError> {
        Ok(Vec::new())
    }

    /// Makes a pooled runtime the owner's runtime, as [`Backend::ensure`] would return it.
    async fn claim(&self, pooled: &PooledRuntime, owner_hash: &OwnerHash) -> Result<Claim, BackendError> {
        let _ = (pooled, owner_hash);
        Ok(Claim::Gone)
    }

    /// Removes an unclaimed pool runtime with its volume and network.
    async fn discard_pooled(&self, pooled: &PooledRuntime) -> Result<(), BackendError> {
        let _ = pooled;
        Ok(())
    }
}

/// Where the tunnel announces its public URL: the tail of a container's output (the seed
/// reads the tunnel container's logs), for [`crate::view_url`] to discover the view base URL.
#[async_trait]
pub trait TunnelLogs: Send + Sync + 'static {
    /// The last `lines` lines of `container`'s output: its stdout, then its stderr.
    async fn tail(&self, container: &str, lines: usize) -> Result<String, BackendError>;
}
