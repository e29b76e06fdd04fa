//! The backend trait: what the gateway needs from a container platform.
//!
//! Docker is the one implementation today ([`super::docker`]); a Swarm or Kubernetes backend
//! implements the same trait and nothing above it changes. The trait is object-safe and held
//! as `Arc<dyn Backend>`.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::owner::OwnerHash;

/// Labels every runtime and volume carries, exactly as the seed sets them.
pub const LABEL_RUNTIME: &str = "browser_use.runtime";
pub const LABEL_OWNER_HASH: &str = "browser_use.owner_hash";
pub const LABEL_MANAGED_BY: &str = "browser_use.managed_by";
pub const MANAGED_BY: &str = "browser_runtime_manager";
/// Extra label, only when a scope is configured: keeps several gateways on one engine apart.
pub const LABEL_SCOPE: &str = "lazygate.scope";

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
/// request (header [`RUNTIME_KEY_HEADER`]) and the reference runtime refuses requests
/// without it, so that nothing but the gateway drives a runtime even if it reaches its ports.
pub const RUNTIME_KEY_ENV: &str = "LAZYGATE_RUNTIME_KEY";
/// The header the gateway sends a runtime's key in.
pub const RUNTIME_KEY_HEADER: &str = "x-lazygate-runtime-key";

/// The names an owner's runtime goes by on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeNames {
    pub container: String,
    pub volume: String,
    /// The runtime's own network: the runtime and the gateway, nothing else.
    pub network: String,
}

impl RuntimeNames {
    pub fn of(owner_hash: &OwnerHash, network_prefix: &str) -> RuntimeNames {
        RuntimeNames {
            container: container_name(owner_hash),
            volume: volume_name(owner_hash),
            network: network_name(network_prefix, owner_hash),
        }
    }
}

/// Everything needed to create one owner's runtime.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    pub owner_hash: OwnerHash,
    pub container_name: String,
    pub volume_name: String,
    pub image: String,
    /// The runtime's own network (created with it): no other runtime ever joins it, so no
    /// runtime can open a connection to another's ports.
    pub network: String,
    /// `KEY=value` pairs, the seed's environment (and the runtime's key).
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub shm_size_bytes: u64,
    /// Publish the ports on 127.0.0.1 with ephemeral host ports (gateway on the host).
    pub publish: bool,
    pub ports: Ports,
    pub resources: Resources,
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
    /// Engine id of the container: tells a recreated runtime from the one it replaced.
    pub id: String,
    pub container_name: String,
    pub owner_hash: OwnerHash,
    pub endpoints: Endpoints,
    /// True when the runtime was already running (adopted), false when this call created it.
    pub adopted: bool,
    /// The runtime's own key ([`RUNTIME_KEY_ENV`]), sent with every request to it; `None`
    /// for runtimes made without one (by the seed).
    pub key: Option<String>,
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
    #[error("container {0} publishes no host port for {1}")]
    NoPublishedPort(String, u16),
    #[error("no free subnet of /{prefix} left in the runtime subnet pool {pool}; widen runtime.subnet_pool")]
    SubnetPoolExhausted { pool: String, prefix: u8 },
    #[error(
        "cannot tell which container the gateway runs in, to join runtime networks: {0}; set runtime.gateway_container (LAZYGATE_GATEWAY_CONTAINER)"
    )]
    GatewayContainerUnknown(String),
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
    CreateContainer,
    StartContainer,
    RemoveContainer,
    RemoveVolume,
    ReadLogs,
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
            Operation::CreateContainer => "create container",
            Operation::StartContainer => "start container",
            Operation::RemoveContainer => "remove container",
            Operation::RemoveVolume => "remove volume",
            Operation::ReadLogs => "read logs",
        })
    }
}

impl BackendError {
    /// True when the engine itself is unreachable (503), false when it answered with an error (502).
    pub fn is_unavailable(&self) -> bool {
        match self {
            BackendError::Connect(_) => true,
            BackendError::Operation { unavailable, .. } => *unavailable,
            BackendError::NoPublishedPort(..)
            | BackendError::SubnetPoolExhausted { .. }
            | BackendError::GatewayContainerUnknown(_) => false,
        }
    }
}

/// A container platform that can run owners' runtimes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Does the engine answer?
    async fn ping(&self) -> Result<(), BackendError>;

    /// Returns the owner's running runtime, creating (or replacing a stopped) one if needed,
    /// on its own network (a running runtime found on any other network is moved onto its
    /// own). Creating is idempotent across callers: a name conflict adopts the winner's runtime.
    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError>;

    /// Is this container running? `Ok(false)` when it is gone.
    async fn is_running(&self, container_name: &str) -> Result<bool, BackendError>;

    /// Removes a runtime (if present), its own network and, when asked, its profile volume.
    async fn remove(&self, names: &RuntimeNames, with_volume: bool) -> Result<(), BackendError>;

    /// Running runtimes that carry the managed labels (and the scope label, when set), each
    /// on its own network (moved there when found elsewhere); `network_prefix` names it.
    async fn list(&self, ports: Ports, publish: bool, network_prefix: &str) -> Result<Vec<RuntimeInfo>, BackendError>;

    /// The last `lines` lines of a container's output: its stdout, then its stderr (as the seed reads them).
    async fn logs_tail(&self, container_name: &str, lines: usize) -> Result<String, BackendError>;
}
