//! The Docker backend: the only file that speaks to the engine (through bollard).
//!
//! It creates what the seed's `docker run` created — same names, labels, environment, volume
//! and `--shm-size` — so either can adopt the other's runtimes, with one difference: each
//! runtime gets a bridge network of its own (`<runtime.network>-<owner_hash>`, a small subnet
//! from `runtime.subnet_pool`) instead of the seed's one flat network. Docker isolates bridge
//! networks from one another, so no runtime can open a connection to another's ports; the
//! gateway reaches a runtime through its published loopback ports (published mode) or by
//! joining the runtime's network (network mode). A running runtime found on any other
//! network (made by the seed, or by an older gateway) is moved onto its own. Each runtime
//! is also fenced from inside its own network namespace (see [`DockerBackend::fence`]'s
//! helper), so isolation holds even while the engine rewrites the host's rules. Names carry
//! only the owner hash, as the seed's do, so a container or volume of another scope met
//! under an owner's name is refused, never adopted or removed.
//!
//! (Long because a backend is one file by design: creating, isolating, fencing, adopting
//! and removing runtimes on Docker, with every engine call and its error named, live here, and
//! only here.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, Ipam, IpamConfig, Network, NetworkCreateRequest, NetworkDisconnectRequest,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use futures_util::StreamExt;
use ipnet::Ipv4Net;

use super::backend::{
    Backend, BackendError, Blueprint, Claim, Endpoints, LABEL_FENCE, LABEL_MANAGED_BY, LABEL_OWNER_HASH, LABEL_POOL,
    LABEL_PROFILE_IN, LABEL_RUNTIME, LABEL_SCOPE, LEFTOVER_AGE, MANAGED_BY, Operation, PoolSpec, PooledRuntime, Ports,
    RUNTIME_KEY_ENV, RuntimeInfo, RuntimeSpec, TunnelLogs, container_name, network_name, pool_container_name,
    pool_network_name, pool_volume_name, volume_name,
};
use super::engine_client::{EngineClient, fail, message_of, status_of};
use crate::config::{Settings, UpstreamMode};
use crate::owner::OwnerHash;

/// What the Docker backend needs from the gateway's configuration.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The ports a runtime serves inside its container.
    pub ports: Ports,
    /// Publish runtime ports on the host's loopback (the gateway runs on the host) rather
    /// than dialling runtimes on their networks.
    pub publish: bool,
    /// Prefix of each runtime's own network, `<prefix>-<owner_hash>`.
    pub network_prefix: String,
    /// Only runtimes with this `lazygate.scope` label are listed (see [`LABEL_SCOPE`]).
    pub scope: Option<String>,
    /// Addresses the runtimes' own networks are carved from.
    pub subnet_pool: Ipv4Net,
    /// Prefix length of each runtime's network (a /28 holds the runtime and the gateway).
    pub subnet_prefix: u8,
    /// Network mode: the gateway dials runtimes on their networks, so it joins each one.
    pub join_runtime_networks: bool,
    /// The gateway's own container (name or id); `None`: found from the hostname.
    pub gateway_container: Option<String>,
    /// Image of the helper that fences each runtime (it needs iproute2's `ip`); `None`: the
    /// gateway's own image when it runs in a container, else [`DEFAULT_FENCE_IMAGE`].
    pub fence_image: Option<String>,
}

/// The gateway image (scripts/build-gateway-image.sh), which has `ip`: the fence helper's
/// image when the gateway runs on the host and none is configured.
pub const DEFAULT_FENCE_IMAGE: &str = "lazygate:latest";

impl From<&Settings> for DockerOptions {
    fn from(s: &Settings) -> DockerOptions {
        DockerOptions {
            ports: Ports {
                rpc: s.rpc_port,
                view: s.view_port,
                cdp: s.cdp_port,
            },
            publish: s.upstream == UpstreamMode::Published,
            network_prefix: s.network.clone(),
            scope: s.scope.clone(),
            subnet_pool: s.subnet_pool,
            subnet_prefix: s.subnet_prefix,
            join_runtime_networks: s.upstream == UpstreamMode::Network,
            gateway_container: s.gateway_container.clone(),
            fence_image: s.fence_image.clone(),
        }
    }
}

/// Docker through its API, reached like every Docker client does (DOCKER_HOST, else the
/// local socket).
pub struct DockerBackend {
    /// The engine's API, shared with the Swarm backend's way of speaking it.
    engine: EngineClient,
    /// Single-flight for picking a free subnet: owners starting in parallel would otherwise
    /// pick the same one.
    network_lock: tokio::sync::Mutex<()>,
    /// Creates hold it shared, the sweep of leftover networks exclusively: a network made a
    /// moment before its container is never taken for a leftover.
    creating: tokio::sync::RwLock<()>,
    /// The container fenced by this process for each owner: a runtime found again
    /// (recovery, a racing request) is not fenced twice. A fence lives as long as its
    /// runtime's network namespace; a recreated runtime has another id.
    fenced: Mutex<HashMap<OwnerHash, String>>,
    /// The fence helper's image once resolved when none is configured (the gateway's own
    /// image id, found once rather than at every start).
    own_image: Mutex<Option<String>>,
    options: DockerOptions,
}

/// The time of each phase of a start, in order.
type Phases = Vec<(&'static str, Duration)>;

/// Times the phases of a start, one lap each.
struct PhaseClock {
    lap_started: std::time::Instant,
    phases: Phases,
}

impl PhaseClock {
    fn start() -> Self {
        PhaseClock {
            lap_started: std::time::Instant::now(),
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name`.
    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.phases.push((name, now - self.lap_started));
        self.lap_started = now;
    }

    /// Ends the last phase, `name`; returns them all.
    fn finish(mut self, name: &'static str) -> Phases {
        self.lap(name);
        self.phases
    }
}

/// True when two subnets share an address.
fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first subnet of `/prefix` in `pool` that overlaps none of `used`.
fn free_subnet(pool: &Ipv4Net, prefix: u8, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    pool.subnets(prefix)
        .ok()?
        .find(|candidate| !used.iter().any(|u| overlaps(candidate, u)))
}

/// Every IPv4 subnet the engine's networks use.
fn subnets_in_use(networks: &[Network]) -> Vec<Ipv4Net> {
    networks
        .iter()
        .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
        .flatten()
        .filter_map(|c| c.subnet.as_deref()?.parse::<Ipv4Net>().ok())
        .collect()
}

/// Names of the networks a container is attached to.
fn networks_of(c: &ContainerInspectResponse) -> Vec<String> {
    c.network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default()
}

impl DockerBackend {
    pub fn new(options: DockerOptions) -> Self {
        DockerBackend {
            engine: EngineClient::new(options.scope.clone(), options.gateway_container.clone()),
            network_lock: tokio::sync::Mutex::new(()),
            creating: tokio::sync::RwLock::new(()),
            fenced: Mutex::new(HashMap::new()),
            own_image: Mutex::new(None),
            options,
        }
    }

    /// The container the gateway runs in, when it must join runtime networks (network
    /// mode, in a container); `None` otherwise: the host routes to every bridge already.
    async fn gateway_container(&self, docker: &Docker) -> Result<Option<String>, BackendError> {
        if !self.options.join_runtime_networks {
            return Ok(None);
        }
        self.engine.gateway_container(docker).await
    }

    /// Makes sure the runtime's own network exists: a bridge on the first free subnet of the
    /// pool. The engine accepts two networks with one name, so when gateways race to create
    /// it every racer keeps the oldest and removes the others.
    async fn ensure_network(
        &self,
        docker: &Docker,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), BackendError> {
        let _single_flight = self.network_lock.lock().await;
        let (pool, prefix) = (self.options.subnet_pool, self.options.subnet_prefix);
        let mut created = false;
        // Subnets the engine refused as overlapping: another client is creating a network on
        // them (the engine reserves the subnet before the network shows in its list).
        let mut taken: Vec<Ipv4Net> = Vec::new();
        for _ in 0..32 {
            let networks = docker
                .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
                .await
                .map_err(fail(Operation::ListNetworks))?;
            if networks.iter().any(|n| n.name.as_deref() == Some(name)) {
                created = true;
                break;
            }
            let mut used = subnets_in_use(&networks);
            used.extend_from_slice(&taken);
            let subnet = free_subnet(&pool, prefix, &used).ok_or(BackendError::SubnetPoolExhausted {
                pool: pool.to_string(),
                prefix,
            })?;
            let request = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => {
                    tracing::debug!(network = name, %subnet, "created runtime network");
                    created = true;
                    break;
                }
                Err(e) if message_of(&e).contains("overlap") => taken.push(subnet),
                Err(e) => return Err(fail(Operation::CreateNetwork)(e)),
            }
        }
        if !created {
            return Err(BackendError::Operation {
                operation: Operation::CreateNetwork,
                unavailable: false,
                message: format!("{name}: every free subnet was taken while trying"),
            });
        }
        let mut networks = self.engine.networks_named(docker, name).await?;
        networks.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        for duplicate in networks.iter().skip(1) {
            if let Some(id) = &duplicate.id {
                tracing::warn!(network = name, %id, "removing a duplicate runtime network");
                if let Err(error) = docker.remove_network(id).await {
                    tracing::debug!(%error, "duplicate network already gone or in use");
                }
            }
        }
        Ok(())
    }

    /// Makes a running runtime reachable by the gateway and by nothing else: on its own
    /// network only (moved there from any other), with the gateway joined in network mode.
    /// Returns the container as it is afterwards.
    async fn isolate(
        &self,
        docker: &Docker,
        c: ContainerInspectResponse,
        network: &str,
        labels: &HashMap<String, String>,
    ) -> Result<ContainerInspectResponse, BackendError> {
        let attached = networks_of(&c);
        let name = c.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned();
        let mut changed = false;
        if attached.iter().any(|n| n != network) || attached.is_empty() {
            self.ensure_network(docker, network, labels).await?;
            self.engine.connect(docker, network, &name).await?;
            for other in attached.iter().filter(|n| *n != network) {
                let request = NetworkDisconnectRequest {
                    container: name.clone(),
                    force: Some(true),
                };
                docker
                    .disconnect_network(other, request)
                    .await
                    .map_err(fail(Operation::DisconnectNetwork))?;
            }
            tracing::warn!(
                container = %name,
                from = ?attached,
                to = network,
                "moved a runtime onto a network of its own (it could reach other runtimes)"
            );
            changed = true;
        }
        if let Some(gateway) = self.gateway_container(docker).await? {
            self.engine.connect(docker, network, &gateway).await?;
        }
        if !changed {
            return Ok(c);
        }
        docker
            .inspect_container(&name, None)
            .await
            .map_err(fail(Operation::InspectContainer))
    }

    /// Creates and starts the owner's runtime; `Some` with the time of each phase when this
    /// call made it, `None` when another caller's runtime won the name.
    async fn create(
        &self,
        docker: &Docker,
        spec: Blueprint<'_>,
        (name, volume, network): (String, String, String),
    ) -> Result<Option<Phases>, BackendError> {
        let _creating = self.creating.read().await;
        let mut phases = PhaseClock::start();
        let labels: HashMap<String, String> = spec
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != LABEL_MANAGED_BY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut network_labels = labels.clone();
        network_labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        // A failed start removes the volume only if this start made it: never a profile.
        let volume_is_new = match docker.inspect_volume(&volume).await {
            Ok(_) => false,
            Err(e) if status_of(&e) == Some(404) => true,
            Err(e) => return Err(fail(Operation::InspectVolume)(e)),
        };
        // An existing volume is handed back as it is: it must be this gateway's profile.
        let profile = docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(fail(Operation::CreateVolume))?;
        self.engine.check_ours(&volume, Some(&profile.labels), false)?;
        // A profile a claimed pool runtime left behind in its pool volume comes here first.
        if let (Some(from), Some(Ok(owner_hash))) = (
            profile.labels.get(LABEL_PROFILE_IN),
            profile.labels.get(LABEL_OWNER_HASH).map(|h| OwnerHash::parse(h)),
        ) {
            self.take_profile_back(docker, from, &volume, &owner_hash).await?;
        }
        phases.lap("volume");
        self.ensure_network(docker, &network, &network_labels).await?;
        phases.lap("network");

        let ports = self.options.ports;
        let port_keys: Vec<String> = [ports.rpc, ports.view, ports.cdp]
            .iter()
            .map(|p| format!("{p}/tcp"))
            .collect();
        let port_bindings = self.options.publish.then(|| {
            port_keys
                .iter()
                .map(|key| {
                    let binding = PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    };
                    (key.clone(), Some(vec![binding]))
                })
                .collect()
        });
        let body = ContainerCreateBody {
            image: Some(spec.image.to_owned()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone()),
            exposed_ports: Some(port_keys),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{volume}:/data")]),
                network_mode: Some(network.clone()),
                shm_size: Some(spec.shm_size_bytes as i64),
                port_bindings,
                memory: Some(spec.resources.memory_bytes as i64),
                // No swap beyond it: a runtime over its memory is killed (and started again
                // on its owner's next request), never left thrashing the host's swap.
                memory_swap: Some(spec.resources.memory_bytes as i64),
                nano_cpus: Some((spec.resources.cpus * 1e9) as i64),
                pids_limit: Some(spec.resources.pids),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                // Raw sockets would let a page's process forge frames on its network; a
                // browser needs none.
                cap_drop: Some(vec!["NET_RAW".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker.create_container(Some(options), body).await;
        phases.lap("create");
        let error = match created {
            // Another gateway (or a request racing this one) created it first: adopt theirs.
            Err(e) if status_of(&e) == Some(409) => return Ok(None),
            Err(e) => fail(Operation::CreateContainer)(e),
            Ok(_) => match docker.start_container(&name, None).await {
                // 304: already started (by a racing caller): ours all the same.
                Ok(()) => return Ok(Some(phases.finish("start"))),
                Err(e) if status_of(&e) == Some(304) => return Ok(Some(phases.finish("start"))),
                Err(e) => fail(Operation::StartContainer)(e),
            },
        };
        self.undo_failed_create(docker, &name, volume_is_new.then_some(&volume), &network)
            .await;
        Err(error)
    }

    /// Leaves nothing behind of a start that failed (a missing image, a bad entrypoint):
    /// the container, the volume when this start made it, and the runtime's network.
    async fn undo_failed_create(&self, docker: &Docker, name: &str, new_volume: Option<&String>, network: &str) {
        if let Err(error) = self.remove_container(docker, name).await {
            tracing::warn!(container = name, %error, "cannot remove a runtime that failed to start");
        }
        if let Some(volume) = new_volume
            && let Err(error) = docker
                .remove_volume(volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            && status_of(&error) != Some(404)
        {
            tracing::warn!(%volume, %error, "cannot remove the volume of a runtime that failed to start");
        }
        if let Err(error) = self.remove_network(docker, network).await {
            tracing::debug!(%network, %error, "cannot remove the network of a runtime that failed to start");
        }
    }

    /// Containers of this scope, running or not, that carry `label` (any value).
    async fn labelled_containers(&self, docker: &Docker, label: &str) -> Result<Vec<ContainerSummary>, BackendError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.engine.scoped_filter(label.to_owned()))
            .build();
        docker
            .list_containers(Some(options))
            .await
            .map_err(fail(Operation::ListContainers))
    }

    async fn remove_container(&self, docker: &Docker, name: &str) -> Result<(), BackendError> {
        // With its anonymous volumes (`v`): the helpers run the gateway's image, whose
        // `VOLUME /var/lib/lazygate` gave each one a volume that outlived it. Named volumes
        // (profiles) are never removed by this.
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // 409: removal already in progress; the engine finishes it.
            Err(e) if status_of(&e) == Some(409) && e.to_string().contains("in progress") => Ok(()),
            Err(e) => Err(fail(Operation::RemoveContainer)(e)),
        }
    }

    /// Removes a runtime's own network, after taking the gateway off it.
    async fn remove_network(&self, docker: &Docker, network: &str) -> Result<(), BackendError> {
        if let Some(gateway) = self.gateway_container(docker).await? {
            let request = NetworkDisconnectRequest {
                container: gateway,
                force: Some(true),
            };
            match docker.disconnect_network(network, request).await {
                Ok(()) => {}
                Err(e) if matches!(status_of(&e), Some(404) | Some(403)) => {}
                Err(e) if message_of(&e).contains("not connected") => {}
                Err(e) => return Err(fail(Operation::DisconnectNetwork)(e)),
            }
        }
        match docker.remove_network(network).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(fail(Operation::RemoveNetwork)(e)),
        }
    }

    /// The fence helper's image: configured, else the gateway's own (in a container), else
    /// [`DEFAULT_FENCE_IMAGE`].
    async fn fence_image(&self, docker: &Docker) -> Result<String, BackendError> {
        if let Some(image) = &self.options.fence_image {
            return Ok(image.clone());
        }
        if let Some(known) = self.own_image.lock().expect("own image lock").clone() {
            return Ok(known);
        }
        let image = match self.gateway_container(docker).await? {
            None => DEFAULT_FENCE_IMAGE.to_owned(),
            Some(gateway) => docker
                .inspect_container(&gateway, None)
                .await
                .map_err(fail(Operation::InspectContainer))?
                .image
                .unwrap_or_else(|| DEFAULT_FENCE_IMAGE.to_owned()),
        };
        *self.own_image.lock().expect("own image lock") = Some(image.clone());
        Ok(image)
    }

    /// Runs the fence helper in the runtime's network namespace: one `ip route replace
    /// prohibit <subnet pool>`. The runtime's own subnet stays reachable (its connected
    /// route is more specific) and so does the outside; any other runtime's address, or the
    /// gateway's address on another runtime's network, fails at once with "permission
    /// denied", whatever the host's forwarding rules say. The helper alone gets NET_ADMIN,
    /// only in that namespace, for one command; the runtime never has it and cannot undo it.
    /// `tag` is the helper's [`LABEL_FENCE`] value: the owner hash, or the pool runtime's name.
    async fn run_fence(&self, docker: &Docker, id: &str, name: &str, tag: &str) -> Result<(), BackendError> {
        let pool = self.options.subnet_pool.to_string();
        let host_config = HostConfig {
            network_mode: Some(format!("container:{id}")),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(vec!["NET_ADMIN".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        };
        let command = ["ip", "route", "replace", "prohibit", &pool]
            .map(str::to_owned)
            .to_vec();
        self.run_helper(docker, Operation::Fence, name, tag, command, host_config)
            .await
    }

    /// Runs a short-lived helper container from the fence image (the gateway's own) to its
    /// end and removes it; a non-zero exit is an error of `operation` with the helper's last
    /// words. Helpers carry [`LABEL_FENCE`] = `tag`, so one a killed gateway left is swept.
    async fn run_helper(
        &self,
        docker: &Docker,
        operation: Operation,
        subject: &str,
        tag: &str,
        command: Vec<String>,
        host_config: HostConfig,
    ) -> Result<(), BackendError> {
        let image = self.fence_image(docker).await?;
        let mut labels = HashMap::from([(LABEL_FENCE.to_owned(), tag.to_owned())]);
        if let Some(scope) = self.engine.scope() {
            labels.insert(LABEL_SCOPE.to_owned(), scope.clone());
        }
        let shown = command.join(" ");
        let mut command = command.into_iter();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint: command.next().map(|program| vec![program]),
            cmd: Some(command.collect()),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let refuse = |message: String| BackendError::Operation {
            operation,
            unavailable: false,
            message: format!("{subject}: {message}"),
        };
        let helper = match docker.create_container(None::<CreateContainerOptions>, body).await {
            Ok(created) => created.id,
            Err(e) if status_of(&e) == Some(404) => {
                return Err(refuse(format!(
                    "the fence image {image} is missing; build it with scripts/build-gateway-image.sh \
                     or name an image with iproute2 in runtime.fence_image (LAZYGATE_FENCE_IMAGE)"
                )));
            }
            Err(e) => return Err(fail(operation)(e)),
        };
        let outcome = async {
            docker.start_container(&helper, None).await.map_err(fail(operation))?;
            let waited = docker.wait_container(&helper, None).next().await;
            match waited {
                Some(Ok(_)) => Ok(()),
                Some(Err(EngineError::DockerContainerWaitError { code, .. })) => {
                    let output = self.tail(&helper, 5).await.unwrap_or_default();
                    Err(refuse(format!(
                        "`{shown}` in {image} exited with {code}: {}",
                        output.trim()
                    )))
                }
                Some(Err(e)) => Err(fail(operation)(e)),
                None => Err(refuse("the engine did not report the helper's exit".to_owned())),
            }
        }
        .await;
        if let Err(error) = self.remove_container(docker, &helper).await {
            tracing::warn!(%helper, %error, "cannot remove a helper container");
        }
        outcome
    }

    /// The seed's container and volume names for an owner, and its own network's.
    fn names(&self, owner_hash: &OwnerHash) -> (String, String, String) {
        (
            container_name(owner_hash),
            volume_name(owner_hash),
            network_name(&self.options.network_prefix, owner_hash),
        )
    }

    /// Removes runtime networks that outlived their runtime (the runtime died while no
    /// gateway ran, and its owner never came back): managed, of this scope, with nobody but
    /// the gateway attached, and not the network of a runtime that runs. Each would keep a
    /// subnet of the pool forever.
    async fn sweep_networks(&self, docker: &Docker, running: &[RuntimeInfo]) {
        let filters = self.engine.scoped_filter(format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let _no_creates = self.creating.write().await;
        let Ok(networks) = docker.list_networks(Some(options)).await else {
            return;
        };
        let gateway = self.gateway_container(docker).await.ok().flatten();
        for network in networks {
            let (Some(name), Some(labels)) = (network.name, network.labels) else {
                continue;
            };
            if self.engine.is_another_scopes(&labels) {
                continue;
            }
            let Some(Ok(owner_hash)) = labels.get(LABEL_OWNER_HASH).map(|h| OwnerHash::parse(h)) else {
                continue;
            };
            if name != network_name(&self.options.network_prefix, &owner_hash)
                || running.iter().any(|r| r.owner_hash == owner_hash)
            {
                continue;
            }
            let Ok(inspected) = docker.inspect_network(&name, None).await else {
                continue;
            };
            let attached: Vec<String> = inspected.containers.unwrap_or_default().into_keys().collect();
            if attached.iter().any(|id| Some(id) != gateway.as_ref()) {
                continue;
            }
            match self.remove_network(docker, &name).await {
                Ok(()) => tracing::info!(network = %name, "removed a runtime network its runtime outlived"),
                Err(error) => tracing::debug!(network = %name, %error, "cannot remove a leftover runtime network"),
            }
        }
    }

    /// A runtime's own network: the one it was started on when it came from the warm pool
    /// (it keeps it when claimed), else `<prefix>-<owner_hash>`.
    fn network_of(&self, c: &ContainerInspectResponse, owner_hash: &OwnerHash) -> String {
        match pool_id_of(c) {
            Some(pool_id) => pool_network_name(&self.options.network_prefix, &pool_id),
            None => network_name(&self.options.network_prefix, owner_hash),
        }
    }

    /// The labels of an owner's profile volume, as [`DockerBackend::create`] gives it.
    fn profile_labels(&self, owner_hash: &OwnerHash) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_RUNTIME.to_owned(), "true".to_owned()),
            (LABEL_OWNER_HASH.to_owned(), owner_hash.to_string()),
        ]);
        if let Some(scope) = self.engine.scope() {
            labels.insert(LABEL_SCOPE.to_owned(), scope.clone());
        }
        labels
    }

    /// Removes a claimed warm-pool runtime. With its volume: the container, its network and
    /// its volume. Without (per-principal): puts it to rest under the seed's names — the
    /// container is killed, its profile copied into the owner's `browser-use-profile-<hash>`
    /// (where the next start, and the seed, look), and only then do the container, its
    /// network and its pool volume go. Until the copy has worked the stopped container
    /// stays, naming the volume that holds the profile, so a failure loses nothing and the
    /// next removal or start tries again.
    async fn remove_claimed(
        &self,
        docker: &Docker,
        c: &ContainerInspectResponse,
        owner_hash: &OwnerHash,
        with_volume: bool,
    ) -> Result<(), BackendError> {
        let id = c.id.clone().unwrap_or_default();
        let network = self.network_of(c, owner_hash);
        let pool_volume = profile_of(c).or_else(|| pool_id_of(c).map(|p| pool_volume_name(&p)));
        if !with_volume && let Some(from) = &pool_volume {
            match docker
                .kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>)
                .await
            {
                Ok(()) => {}
                // Not running (409), or gone (404).
                Err(e) if matches!(status_of(&e), Some(404) | Some(409)) => {}
                Err(e) => return Err(fail(Operation::RemoveContainer)(e)),
            }
            let to = volume_name(owner_hash);
            let profile = docker
                .create_volume(VolumeCreateRequest {
                    name: Some(to.clone()),
                    labels: Some(self.profile_labels(owner_hash)),
                    ..Default::default()
                })
                .await
                .map_err(fail(Operation::CreateVolume))?;
            self.engine.check_ours(&to, Some(&profile.labels), false)?;
            let name = c.name.as_deref().unwrap_or_default().trim_start_matches('/');
            self.copy_profile(docker, from, &to, name, owner_hash).await?;
            tracing::info!(container = name, from = %from, to = %to, "moved a claimed runtime's profile to the seed's volume name");
        }
        self.remove_container(docker, &id).await?;
        self.fenced.lock().expect("fenced lock").remove(owner_hash);
        if let Err(error) = self.remove_network(docker, &network).await {
            tracing::warn!(%network, %error, "cannot remove a runtime's network; leaving it");
        }
        let mut volumes: Vec<String> = pool_volume.into_iter().collect();
        if with_volume {
            volumes.push(volume_name(owner_hash));
        }
        for volume in volumes {
            remove_volume_forced(docker, &volume).await?;
        }
        Ok(())
    }

    /// Copies a profile volume's files into another (`cp -a`, by a helper with no network).
    async fn copy_profile(
        &self,
        docker: &Docker,
        from: &str,
        to: &str,
        subject: &str,
        owner_hash: &OwnerHash,
    ) -> Result<(), BackendError> {
        let host_config = HostConfig {
            binds: Some(vec![format!("{from}:/from:ro"), format!("{to}:/to")]),
            network_mode: Some("none".to_owned()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        };
        let command = ["cp", "-a", "/from/.", "/to/"].map(str::to_owned).to_vec();
        self.run_helper(
            docker,
            Operation::MoveProfile,
            subject,
            owner_hash.as_str(),
            command,
            host_config,
        )
        .await
    }

    /// Moves a profile that a claimed pool runtime left in its pool volume into the owner's
    /// seed-named volume, whose [`LABEL_PROFILE_IN`] names it: the runtime's container was
    /// removed from outside (the seed's expiry, an operator) before it could be put to rest.
    async fn take_profile_back(
        &self,
        docker: &Docker,
        from: &str,
        to: &str,
        owner_hash: &OwnerHash,
    ) -> Result<(), BackendError> {
        match docker.inspect_volume(from).await {
            Ok(_) => {}
            // Moved already (the usual case: it was put to rest).
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(fail(Operation::InspectVolume)(e)),
        }
        self.copy_profile(docker, from, to, to, owner_hash).await?;
        remove_volume_forced(docker, from).await?;
        tracing::warn!(%from, %to, "took back a profile left in a pool volume (its runtime was removed from outside)");
        Ok(())
    }

    /// Removes an unclaimed pool runtime (by container id or name) with its network and volume.
    async fn remove_pooled(&self, docker: &Docker, container: &str, pool_id: &str) -> Result<(), BackendError> {
        self.remove_container(docker, container).await?;
        let network = pool_network_name(&self.options.network_prefix, pool_id);
        if let Err(error) = self.remove_network(docker, &network).await {
            tracing::warn!(%network, %error, "cannot remove a pool runtime's network; leaving it");
        }
        remove_volume_forced(docker, &pool_volume_name(pool_id)).await
    }

    /// A running, unclaimed pool runtime as the pool keeps it.
    fn pooled_of(&self, c: &ContainerInspectResponse, pool_id: String) -> Result<PooledRuntime, BackendError> {
        let name = c.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned();
        let network = pool_network_name(&self.options.network_prefix, &pool_id);
        Ok(PooledRuntime {
            endpoints: endpoints_of(c, &name, &network, self.options.ports, self.options.publish)?,
            id: c.id.clone().unwrap_or_default(),
            name,
            pool_id,
        })
    }

    fn labels_filter(&self) -> HashMap<String, Vec<String>> {
        let mut filters = self.engine.scoped_filter(format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        filters.insert("status".to_owned(), vec!["running".to_owned()]);
        filters
    }
}

/// Reads where a running container's services answer: its address on its own network
/// (network mode), or its ports published on the host's loopback.
fn endpoints_of(
    c: &ContainerInspectResponse,
    name: &str,
    network: &str,
    ports: Ports,
    publish: bool,
) -> Result<Endpoints, BackendError> {
    let settings = c.network_settings.as_ref();
    let own_ip = settings
        .and_then(|s| s.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.clone())
        .filter(|ip| !ip.is_empty());
    let no_address = |port: u16| BackendError::NoEndpoint(name.to_owned(), port);
    if !publish {
        let ip = own_ip.ok_or_else(|| no_address(ports.rpc))?;
        return Ok(Endpoints {
            rpc: format!("{ip}:{}", ports.rpc),
            view: format!("{ip}:{}", ports.view),
            cdp: format!("{ip}:{}", ports.cdp),
        });
    }
    let published = |port: u16| -> Option<String> {
        let bindings = settings?.ports.as_ref()?.get(&format!("{port}/tcp"))?.as_ref()?;
        bindings
            .iter()
            .find(|b| {
                b.host_ip
                    .as_deref()
                    .is_some_and(|ip| ip == "127.0.0.1" || ip == "0.0.0.0")
            })
            .and_then(|b| b.host_port.as_deref())
            .filter(|p| !p.is_empty())
            .map(|p| format!("127.0.0.1:{p}"))
    };
    // A runtime started without published ports (by the seed, say) is still reachable from
    // the host at its address on its network.
    let resolve = |port: u16| -> Result<String, BackendError> {
        published(port)
            .or_else(|| own_ip.as_ref().map(|ip| format!("{ip}:{port}")))
            .ok_or_else(|| no_address(port))
    };
    Ok(Endpoints {
        rpc: resolve(ports.rpc)?,
        view: resolve(ports.view)?,
        cdp: resolve(ports.cdp)?,
    })
}

/// The runtime's key, from its environment.
fn key_of(c: &ContainerInspectResponse) -> Option<http::HeaderValue> {
    let prefix = format!("{RUNTIME_KEY_ENV}=");
    c.config
        .as_ref()?
        .env
        .as_ref()?
        .iter()
        .find_map(|e| e.strip_prefix(&prefix))
        .filter(|k| !k.is_empty())
        .and_then(|k| http::HeaderValue::from_str(k).ok())
}

fn info_of(
    c: &ContainerInspectResponse,
    owner_hash: OwnerHash,
    network: &str,
    ports: Ports,
    publish: bool,
    adopted: bool,
) -> Result<RuntimeInfo, BackendError> {
    let name = c.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned();
    Ok(RuntimeInfo {
        id: c.id.clone().unwrap_or_default(),
        endpoints: endpoints_of(c, &name, network, ports, publish)?,
        direct: Endpoints {
            rpc: format!("{name}:{}", ports.rpc),
            view: format!("{name}:{}", ports.view),
            cdp: format!("{name}:{}", ports.cdp),
        },
        name,
        owner_hash,
        adopted,
        key: key_of(c),
        phases: Vec::new(),
        last_used: None,
        profile: pool_id_of(c).and_then(|_| profile_of(c)),
    })
}

fn labels_of(c: &ContainerInspectResponse) -> Option<&HashMap<String, String>> {
    c.config.as_ref().and_then(|config| config.labels.as_ref())
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

fn is_created_only(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::CREATED)
}

/// Removes a volume even if a stopped container still names it; gone already is fine.
async fn remove_volume_forced(docker: &Docker, volume: &str) -> Result<(), BackendError> {
    let options = RemoveVolumeOptionsBuilder::default().force(true).build();
    match docker.remove_volume(volume, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(fail(Operation::RemoveVolume)(e)),
    }
}

/// The warm-pool id of a runtime that came from the pool (claimed or not).
fn pool_id_of(c: &ContainerInspectResponse) -> Option<String> {
    labels_of(c)?.get(LABEL_POOL).cloned()
}

/// The volume mounted at the runtime's `/data`: its profile.
fn profile_of(c: &ContainerInspectResponse) -> Option<String> {
    c.mounts
        .as_ref()?
        .iter()
        .find(|m| m.destination.as_deref() == Some("/data"))
        .and_then(|m| m.name.clone())
}

/// Labels a runtime's network carries: the container's, for finding and cleaning it.
fn network_labels_of(c: &ContainerInspectResponse) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = c
        .config
        .as_ref()
        .and_then(|config| config.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("browser_use.") || k.starts_with("lazygate."))
        .collect();
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels
}

#[async_trait]
impl Backend for DockerBackend {
    async fn ping(&self) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        docker.ping().await.map(drop).map_err(fail(Operation::Ping))
    }

    async fn missing_images(&self, runtime_image: &str) -> Result<Vec<String>, BackendError> {
        let docker = self.engine.docker().await?;
        let fence_image = self.fence_image(&docker).await?;
        let mut missing = Vec::new();
        for image in [runtime_image, fence_image.as_str()] {
            match docker.inspect_image(image).await {
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(404) => missing.push(image.to_owned()),
                Err(e) => return Err(fail(Operation::InspectImage)(e)),
            }
        }
        missing.dedup();
        Ok(missing)
    }

    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
        let docker = self.engine.docker().await?;
        let name = container_name(&spec.owner_hash);
        let (ports, publish) = (self.options.ports, self.options.publish);
        let mut created: Option<Phases> = None;
        for attempt in 0..40u32 {
            let inspected = docker.inspect_container(&name, None).await;
            if let Ok(c) = &inspected {
                self.engine.check_ours(&name, labels_of(c), true)?;
            }
            match inspected {
                Ok(c) if is_running(&c) => {
                    let labels = network_labels_of(&c);
                    let network = self.network_of(&c, &spec.owner_hash);
                    let joining = std::time::Instant::now();
                    let c = self.isolate(&docker, c, &network, &labels).await?;
                    let adopted = created.is_none();
                    let mut info = info_of(&c, spec.owner_hash, &network, ports, publish, adopted)?;
                    // The gateway joining the runtime's network (network mode) is a phase too.
                    info.phases = created
                        .map(|mut phases| {
                            phases.push(("join", joining.elapsed()));
                            phases
                        })
                        .unwrap_or_default();
                    return Ok(info);
                }
                // Created by someone else and about to be started: give them a moment.
                Ok(c) if is_created_only(&c) && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                }
                Ok(c) if created.is_some() => {
                    let status = c.state.and_then(|s| s.status).map(|s| s.to_string());
                    return Err(BackendError::Operation {
                        operation: Operation::StartContainer,
                        unavailable: false,
                        message: format!(
                            "{name} stopped right after it started (status {})",
                            status.unwrap_or_default()
                        ),
                    });
                }
                // A claimed pool runtime's profile is put where the new one will look first.
                Ok(c) if pool_id_of(&c).is_some() => {
                    tracing::info!(container = %name, "replacing a claimed pool runtime that is not running");
                    self.remove_claimed(&docker, &c, &spec.owner_hash, false).await?;
                }
                Ok(_) => {
                    tracing::info!(container = %name, "replacing a runtime that is not running");
                    self.remove_container(&docker, &name).await?;
                }
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::InspectContainer)(e)),
            }
            let names = self.names(&spec.owner_hash);
            created = self.create(&docker, Blueprint::from(spec), names).await?.or(created);
        }
        Err(BackendError::Operation {
            operation: Operation::CreateContainer,
            unavailable: false,
            message: format!("{name} did not reach the running state"),
        })
    }

    async fn fence(&self, runtime: &RuntimeInfo) -> Result<(), BackendError> {
        if self.fenced.lock().expect("fenced lock").get(&runtime.owner_hash) == Some(&runtime.id) {
            return Ok(());
        }
        let docker = self.engine.docker().await?;
        let started = std::time::Instant::now();
        self.run_fence(&docker, &runtime.id, &runtime.name, runtime.owner_hash.as_str())
            .await?;
        tracing::debug!(container = %runtime.name, ms = started.elapsed().as_millis() as u64, "fenced runtime");
        self.fenced
            .lock()
            .expect("fenced lock")
            .insert(runtime.owner_hash, runtime.id.clone());
        Ok(())
    }

    async fn last_output(&self, runtime: &RuntimeInfo, lines: usize) -> Result<String, BackendError> {
        let output = self.tail(&runtime.id, lines).await?;
        Ok(output.trim().to_owned())
    }

    async fn is_running(&self, runtime: &RuntimeInfo) -> Result<bool, BackendError> {
        let docker = self.engine.docker().await?;
        // By id: a container recreated under the same name is another runtime.
        match docker.inspect_container(&runtime.id, None).await {
            Ok(c) => Ok(is_running(&c)),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(fail(Operation::InspectContainer)(e)),
        }
    }

    async fn remove(&self, owner_hash: &OwnerHash, with_volume: bool) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        let (name, volume, network) = self.names(owner_hash);
        match docker.inspect_container(&name, None).await {
            Ok(c) => {
                self.engine.check_ours(&name, labels_of(&c), true)?;
                if pool_id_of(&c).is_some() {
                    return self.remove_claimed(&docker, &c, owner_hash, with_volume).await;
                }
            }
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(fail(Operation::InspectContainer)(e)),
        }
        if with_volume {
            match docker.inspect_volume(&volume).await {
                Ok(v) => self.engine.check_ours(&volume, Some(&v.labels), false)?,
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::InspectVolume)(e)),
            }
        }
        self.remove_container(&docker, &name).await?;
        self.fenced.lock().expect("fenced lock").remove(owner_hash);
        // The runtime is gone either way; a network left behind (something else still
        // attached) is reused by name at the owner's next start.
        if let Err(error) = self.remove_network(&docker, &network).await {
            tracing::warn!(%network, %error, "cannot remove a runtime's network; leaving it");
        }
        if with_volume {
            remove_volume_forced(&docker, &volume).await?;
        }
        Ok(())
    }

    async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
        self.engine.list_profiles().await
    }

    async fn remove_profile(&self, owner_hash: &OwnerHash) -> Result<bool, BackendError> {
        self.engine.remove_profile(owner_hash).await
    }

    async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError> {
        let docker = self.engine.docker().await?;
        let (ports, publish) = (self.options.ports, self.options.publish);
        let options = ListContainersOptionsBuilder::default()
            .filters(&self.labels_filter())
            .build();
        let summaries = docker
            .list_containers(Some(options))
            .await
            .map_err(fail(Operation::ListContainers))?;
        let mut runtimes = Vec::new();
        for summary in summaries {
            let labels = summary.labels.unwrap_or_default();
            if self.engine.is_another_scopes(&labels) {
                continue;
            }
            // A claimed pool runtime carries no owner label (labels are fixed at creation):
            // its name is the owner's; an unclaimed one is the pool's, not listed here.
            let owner = match (labels.get(LABEL_OWNER_HASH), labels.contains_key(LABEL_POOL)) {
                (Some(hash), _) => Some(hash.as_str()),
                (None, true) => summary
                    .names
                    .iter()
                    .flatten()
                    .find_map(|n| n.trim_start_matches('/').strip_prefix("browser-use-browser-")),
                (None, false) => None,
            };
            let Some(Ok(owner_hash)) = owner.map(OwnerHash::parse) else {
                continue;
            };
            let Some(id) = summary.id else { continue };
            match docker.inspect_container(&id, None).await {
                Ok(c) if is_running(&c) => {
                    let network = self.network_of(&c, &owner_hash);
                    let network_labels = network_labels_of(&c);
                    let adopted = self
                        .isolate(&docker, c, &network, &network_labels)
                        .await
                        .and_then(|c| info_of(&c, owner_hash, &network, ports, publish, true));
                    match adopted {
                        Ok(info) => runtimes.push(info),
                        Err(e) => tracing::warn!(error = %e, container = %id, "cannot adopt runtime"),
                    }
                }
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::InspectContainer)(e)),
            }
        }
        self.sweep_networks(&docker, &runtimes).await;
        Ok(runtimes)
    }

    /// Fence helpers of this scope that a gateway killed mid-fence left: never started, or
    /// ended, and made at least [`LEFTOVER_AGE`] ago. A running one may be some gateway's
    /// fence in progress; a later sweep takes it once it has ended.
    async fn sweep_leftovers(&self) -> Result<usize, BackendError> {
        let docker = self.engine.docker().await?;
        let helpers = self.labelled_containers(&docker, LABEL_FENCE).await?;
        let made_before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(LEFTOVER_AGE)
            .as_secs();
        let mut removed = 0;
        for helper in helpers {
            use ContainerSummaryStateEnum::{CREATED, DEAD, EXITED};
            let ended = matches!(helper.state, Some(CREATED | EXITED | DEAD));
            let old = helper
                .created
                .is_some_and(|at| u64::try_from(at).is_ok_and(|at| at <= made_before));
            if !ended || !old || self.engine.is_another_scopes(&helper.labels.unwrap_or_default()) {
                continue;
            }
            if let Some(id) = helper.id {
                match self.remove_container(&docker, &id).await {
                    Ok(()) => removed += 1,
                    Err(error) => tracing::warn!(%id, %error, "cannot remove a leftover fence helper"),
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed fence helpers a stopped gateway left");
        }
        Ok(removed)
    }

    async fn start_pooled(&self, spec: &PoolSpec) -> Result<PooledRuntime, BackendError> {
        let docker = self.engine.docker().await?;
        let name = pool_container_name(&spec.pool_id);
        let names = (
            name.clone(),
            pool_volume_name(&spec.pool_id),
            pool_network_name(&self.options.network_prefix, &spec.pool_id),
        );
        if self.create(&docker, Blueprint::from(spec), names).await?.is_none() {
            return Err(BackendError::Operation {
                operation: Operation::CreateContainer,
                unavailable: false,
                message: format!("{name} exists already"),
            });
        }
        let made = async {
            let c = docker
                .inspect_container(&name, None)
                .await
                .map_err(fail(Operation::InspectContainer))?;
            if !is_running(&c) {
                return Err(BackendError::Operation {
                    operation: Operation::StartContainer,
                    unavailable: false,
                    message: format!("{name} stopped right after it started"),
                });
            }
            let network = pool_network_name(&self.options.network_prefix, &spec.pool_id);
            let labels = network_labels_of(&c);
            let c = self.isolate(&docker, c, &network, &labels).await?;
            let pooled = self.pooled_of(&c, spec.pool_id.clone())?;
            self.run_fence(&docker, &pooled.id, &name, &name).await?;
            Ok(pooled)
        }
        .await;
        if made.is_err()
            && let Err(error) = self.remove_pooled(&docker, &name, &spec.pool_id).await
        {
            tracing::warn!(container = %name, %error, "cannot remove a pool runtime that failed to start");
        }
        made
    }

    async fn list_pooled(&self) -> Result<Vec<PooledRuntime>, BackendError> {
        let docker = self.engine.docker().await?;
        let summaries = self.labelled_containers(&docker, LABEL_POOL).await?;
        let mut pooled = Vec::new();
        for summary in summaries {
            let labels = summary.labels.unwrap_or_default();
            let (Some(id), Some(pool_id)) = (summary.id, labels.get(LABEL_POOL).cloned()) else {
                continue;
            };
            // Claimed ones are their owners' (named after them): [`Backend::list`]'s.
            let unclaimed = summary
                .names
                .iter()
                .flatten()
                .any(|n| n.trim_start_matches('/') == pool_container_name(&pool_id));
            if self.engine.is_another_scopes(&labels) || !unclaimed {
                continue;
            }
            match docker.inspect_container(&id, None).await {
                Ok(c) if is_running(&c) => match self.pooled_of(&c, pool_id) {
                    Ok(p) => pooled.push(p),
                    Err(error) => tracing::warn!(container = %id, %error, "cannot adopt a pool runtime"),
                },
                // Stopped, never claimed: nobody's data is in it.
                Ok(_) => {
                    tracing::info!(container = %id, "removing a pool runtime that is not running");
                    self.remove_pooled(&docker, &id, &pool_id).await?;
                }
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::InspectContainer)(e)),
            }
        }
        Ok(pooled)
    }

    async fn claim(&self, pooled: &PooledRuntime, owner_hash: &OwnerHash) -> Result<Claim, BackendError> {
        let docker = self.engine.docker().await?;
        let claiming = std::time::Instant::now();
        let (name, volume, _) = self.names(owner_hash);
        // An owner with a profile gets it mounted, not a pool runtime's empty one.
        match docker.inspect_volume(&volume).await {
            Ok(_) => return Ok(Claim::OwnerHasOne),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(fail(Operation::InspectVolume)(e)),
        }
        // The owner's seed-named volume, made now and empty, says where the profile is until
        // it is put to rest ([`LABEL_PROFILE_IN`]): if the container is removed from outside,
        // the next start takes the profile back from there.
        let pool_volume = pool_volume_name(&pooled.pool_id);
        let mut labels = self.profile_labels(owner_hash);
        labels.insert(LABEL_PROFILE_IN.to_owned(), pool_volume);
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(fail(Operation::CreateVolume))?;
        // The seed's name, which is also the claim: the engine gives a name once, so an
        // owner whose runtime exists already (or a racing claim) gets a conflict.
        let options = bollard::query_parameters::RenameContainerOptions { name: name.clone() };
        let refused = match docker.rename_container(&pooled.id, options).await {
            Ok(()) => None,
            Err(e) if status_of(&e) == Some(409) => Some(Claim::OwnerHasOne),
            Err(e) if status_of(&e) == Some(404) => Some(Claim::Gone),
            Err(e) => return Err(fail(Operation::RenameContainer)(e)),
        };
        if let Some(refused) = refused {
            // Only the marker this claim made, which nothing uses.
            let _ = docker
                .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await;
            return Ok(refused);
        }
        let c = docker
            .inspect_container(&pooled.id, None)
            .await
            .map_err(fail(Operation::InspectContainer))?;
        let network = self.network_of(&c, owner_hash);
        let (ports, publish) = (self.options.ports, self.options.publish);
        let mut info = info_of(&c, *owner_hash, &network, ports, publish, false)?;
        // Dialled by address, never by the new name: a renamed container's name takes a
        // while to resolve on a user-defined network.
        info.endpoints = pooled.endpoints.clone();
        info.phases = vec![("claim", claiming.elapsed())];
        // Fenced when it joined the pool.
        self.fenced
            .lock()
            .expect("fenced lock")
            .insert(*owner_hash, info.id.clone());
        Ok(Claim::Claimed(Box::new(info)))
    }

    async fn discard_pooled(&self, pooled: &PooledRuntime) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        self.remove_pooled(&docker, &pooled.id, &pooled.pool_id).await
    }
}

#[async_trait]
impl TunnelLogs for DockerBackend {
    async fn tail(&self, container_name: &str, lines: usize) -> Result<String, BackendError> {
        let docker = self.engine.docker().await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = docker.logs(container_name, Some(options));
        // Like the seed (`stdout + "\n" + stderr`): stdout first, then stderr, so the last
        // URL a tunnel printed on stderr wins.
        let (mut stdout, mut stderr) = (String::new(), String::new());
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(fail(Operation::ReadLogs))? {
                LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
                other => stdout.push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
        Ok(format!("{stdout}\n{stderr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn subnets_come_from_the_pool_and_skip_what_is_in_use() {
        let pool = net("10.213.0.0/16");
        assert_eq!(free_subnet(&pool, 28, &[]), Some(net("10.213.0.0/28")));
        let used = [net("10.213.0.0/28"), net("10.213.0.16/28"), net("172.17.0.0/16")];
        assert_eq!(free_subnet(&pool, 28, &used), Some(net("10.213.0.32/28")));
        // A wide network inside the pool (made by hand) blocks every subnet it covers.
        assert_eq!(
            free_subnet(&pool, 28, &[net("10.213.0.0/24")]),
            Some(net("10.213.1.0/28"))
        );
        // A network covering the whole pool leaves nothing.
        assert_eq!(free_subnet(&pool, 28, &[net("10.0.0.0/8")]), None);
        let tiny = net("10.9.0.0/27");
        assert_eq!(free_subnet(&tiny, 28, &[net("10.9.0.0/28"), net("10.9.0.16/28")]), None);
    }

    #[test]
    fn overlap_is_symmetric() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.2.0/28")));
        assert!(overlaps(&net("10.1.2.0/28"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.1.2.0/28"), &net("10.1.2.16/28")));
    }
}
