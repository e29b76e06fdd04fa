//! The Swarm backend: owners' runtimes as Docker Swarm services, through a manager's API.
//!
//! Each owner gets a service named like the seed's container (`browser-use-browser-<hash>`),
//! with the seed's labels on the service and its containers, the same environment, the
//! profile volume at `/data` and a tmpfs at `/dev/shm`, on an attachable overlay network of
//! its own (`<runtime.network>-<hash>`) that only the gateway joins — overlays are separate
//! segments, so no runtime reaches another's ports. The gateway runs in a container on a
//! manager and dials a runtime by its service name on that network (DNS round-robin by
//! default: this needs no IPVS).
//!
//! Idle means scaled to zero, not deleted: the service, its labels and its profile stay, and
//! the next request scales it back to one. A per-principal service is pinned (a placement
//! constraint) to the node that ran it, where its local profile volume is, unless a volume
//! driver makes profiles reachable from every node. Several gateways share the services
//! with the engine as their only shared state: last use is a service label
//! ([`LABEL_LAST_USED`]), and every write of it and every scale-down is an update at the
//! version the writer read, so a stale reaper loses to a fresh use. A label-only update
//! does not touch the task. Two gateways racing a first hit create one service: the name
//! conflict is the lock, and the loser adopts the winner's.
//!
//! Tasks are not restarted by Swarm (restart condition `none`): a runtime that fails says why,
//! once, instead of a restart storm; the owner's next request asks for a new task.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, NetworkCreateRequest, NetworkDisconnectRequest, Service,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder, RemoveVolumeOptionsBuilder,
    UpdateServiceOptions,
};
use futures_util::StreamExt;

use super::backend::{
    Backend, BackendError, Blueprint, Claim, Endpoints, LABEL_LAST_USED, LABEL_MANAGED_BY, LABEL_OWNER_HASH,
    LABEL_POOL, LABEL_SCOPE, MANAGED_BY, Operation, PoolSpec, PooledRuntime, Ports, RUNTIME_KEY_ENV, Retirement,
    RuntimeInfo, RuntimeSpec, container_name, network_name, pool_container_name, pool_network_name, pool_volume_name,
    volume_name,
};
use super::engine_client::{EngineClient, fail, message_of, status_of};
use crate::config::{EndpointMode, Settings};
use crate::owner::OwnerHash;

/// Longest wait for a service's task to run (a new one, or one scaled up from zero).
const TASK_START_TIMEOUT: Duration = Duration::from_secs(60);
/// A task the scheduler cannot place for this long (its pinned node is gone, no node has
/// the room) is refused with the scheduler's reason rather than waited on.
const UNPLACEABLE_AFTER: Duration = Duration::from_secs(3);
/// Compare-and-swap updates that lose this many times in a row give up until the next pass.
const UPDATE_TRIES: usize = 5;
/// Label of the one-shot job that removes a profile volume on another node (value: the
/// owner hash), so one left by a gateway killed meanwhile is found.
pub const LABEL_JANITOR: &str = "lazygate.janitor";
/// Longest wait for that job.
const JANITOR_TIMEOUT: Duration = Duration::from_secs(60);

/// What the Swarm backend needs from the gateway's configuration.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    pub ports: Ports,
    /// Prefix of each runtime's own overlay network, `<prefix>-<owner_hash>`.
    pub network_prefix: String,
    pub scope: Option<String>,
    /// The gateway's own container (name or id); `None`: found from the hostname.
    pub gateway_container: Option<String>,
    pub endpoint_mode: EndpointMode,
    /// Profile volumes' driver and options; `None`: local volumes, services pinned.
    pub volume_driver: Option<String>,
    pub volume_options: HashMap<String, String>,
    /// The engine's socket on each node (for the volume removal job).
    pub node_socket: String,
}

impl From<&Settings> for SwarmOptions {
    fn from(s: &Settings) -> SwarmOptions {
        SwarmOptions {
            ports: Ports {
                rpc: s.rpc_port,
                view: s.view_port,
                cdp: s.cdp_port,
            },
            network_prefix: s.network.clone(),
            scope: s.scope.clone(),
            gateway_container: s.gateway_container.clone(),
            endpoint_mode: s.endpoint_mode,
            volume_driver: s.volume_driver.clone(),
            volume_options: s.volume_options.clone().into_iter().collect(),
            node_socket: s.node_socket.clone(),
        }
    }
}

/// Docker Swarm through a manager's API.
pub struct SwarmBackend {
    /// The engine's API, spoken as the Docker backend speaks it.
    engine: EngineClient,
    /// Runtime networks this gateway's container has joined: each pass lists every service,
    /// and joining again each time would cost an engine call per runtime per pass.
    joined: std::sync::Mutex<std::collections::HashSet<String>>,
    options: SwarmOptions,
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// A last use as the label carries it: seconds with milliseconds.
fn label_value(unix: f64) -> String {
    format!("{unix:.3}")
}

/// The last use a service's label records.
fn last_used_of(service: &Service) -> Option<f64> {
    service
        .spec
        .as_ref()?
        .labels
        .as_ref()?
        .get(LABEL_LAST_USED)?
        .parse()
        .ok()
}

/// A service's name (the seed's, or a pool service's own).
fn name_of(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .or_else(|| service.id.clone())
        .unwrap_or_default()
}

/// The warm-pool id of a service that came from the pool (claimed or not).
fn pool_id_of(service: &Service) -> Option<String> {
    service.spec.as_ref()?.labels.as_ref()?.get(LABEL_POOL).cloned()
}

/// The owner a service is for: the owner label (a pool service has it once claimed).
fn owner_of(service: &Service) -> Option<OwnerHash> {
    let hash = service.spec.as_ref()?.labels.as_ref()?.get(LABEL_OWNER_HASH)?;
    OwnerHash::parse(hash).ok()
}

fn replicas_of(service: &Service) -> i64 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
}

fn version_of(service: &Service) -> i32 {
    service.version.as_ref().and_then(|v| v.index).unwrap_or_default() as i32
}

/// An update that lost the compare-and-swap: someone else changed the service since it was read.
fn is_out_of_sequence(error: &bollard::errors::Error) -> bool {
    message_of(error).contains("out of sequence")
}

fn state_of(task: &Task) -> Option<TaskState> {
    task.status.as_ref().and_then(|s| s.state)
}

/// A task that will never run again.
fn is_terminal(state: Option<TaskState>) -> bool {
    matches!(
        state,
        Some(
            TaskState::COMPLETE
                | TaskState::SHUTDOWN
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::REMOVE
                | TaskState::ORPHANED
        )
    )
}

/// A task the engine runs and means to keep running (not one being stopped).
fn is_live(task: &Task) -> bool {
    state_of(task) == Some(TaskState::RUNNING) && task.desired_state == Some(TaskState::RUNNING)
}

/// A task that got as far as a container: it has made the profile volume on its node.
fn had_container(task: &Task) -> bool {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.as_ref())
        .is_some()
}

/// The task's own account of itself: its error, else its status message.
fn account_of(task: &Task) -> String {
    let status = task.status.as_ref();
    let state = state_of(task).map(|s| s.to_string()).unwrap_or_default();
    let said = status
        .and_then(|s| s.err.clone().filter(|e| !e.is_empty()))
        .or_else(|| status.and_then(|s| s.message.clone()))
        .unwrap_or_default();
    format!("task {} is {state}: {said}", task.id.as_deref().unwrap_or("?"))
}

/// The newest task of a service (the one its current state is about).
fn newest(tasks: &[Task]) -> Option<&Task> {
    tasks.iter().max_by_key(|t| {
        (
            t.version.as_ref().and_then(|v| v.index),
            t.created_at.clone().map(|d| d.to_string()),
        )
    })
}

/// The node constraint that keeps a service where its profile is.
fn pin(node_id: &str) -> String {
    format!("node.id=={node_id}")
}

fn is_pin(constraint: &str) -> bool {
    constraint.replace(' ', "").starts_with("node.id==")
}

impl SwarmBackend {
    pub fn new(options: SwarmOptions) -> Self {
        SwarmBackend {
            engine: EngineClient::new(options.scope.clone(), options.gateway_container.clone()),
            joined: Default::default(),
            options,
        }
    }

    /// The runtime's overlay network exists (attachable, so the gateway's container can
    /// join it); its id. Two gateways may race to create it and the engine accepts two
    /// networks with one name: every racer uses the oldest.
    async fn ensure_network(
        &self,
        docker: &Docker,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<String, BackendError> {
        let mut networks = self.engine.networks_named(docker, name).await?;
        if networks.is_empty() {
            let request = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("overlay".into()),
                attachable: Some(true),
                labels: Some(labels.clone()),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => {}
                // Swarm keeps network names unique: another gateway made it a moment ago.
                Err(e) if status_of(&e) == Some(409) || message_of(&e).contains("name conflicts") => {}
                Err(e) => return Err(fail(Operation::CreateNetwork)(e)),
            }
            networks = self.engine.networks_named(docker, name).await?;
        }
        networks.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        networks
            .into_iter()
            .find_map(|n| n.id)
            .ok_or_else(|| BackendError::Operation {
                operation: Operation::CreateNetwork,
                unavailable: false,
                message: format!("{name} was created but is not listed"),
            })
    }

    /// The gateway's container joins the runtime's network, where it resolves the service.
    async fn join(&self, docker: &Docker, network: &str) -> Result<(), BackendError> {
        if self.joined.lock().expect("joined lock").contains(network) {
            return Ok(());
        }
        match self.engine.gateway_container(docker).await? {
            Some(gateway) => self.engine.connect(docker, network, &gateway).await?,
            None => return Err(not_in_a_container()),
        }
        self.joined.lock().expect("joined lock").insert(network.to_owned());
        Ok(())
    }

    /// The gateway's container leaves a runtime's network (the runtime is at rest or gone).
    async fn leave(&self, docker: &Docker, network: &str) {
        self.joined.lock().expect("joined lock").remove(network);
        let Ok(Some(gateway)) = self.engine.gateway_container(docker).await else {
            return;
        };
        let request = NetworkDisconnectRequest {
            container: gateway,
            force: Some(true),
        };
        if let Err(error) = docker.disconnect_network(network, request).await
            && !matches!(status_of(&error), Some(404))
            && !message_of(&error).contains("not connected")
        {
            tracing::debug!(%network, %error, "cannot leave a runtime network");
        }
    }

    /// The service's spec for a runtime: the seed's container as a one-replica service.
    fn service_spec(&self, spec: Blueprint<'_>, name: String, volume: String, network_id: &str) -> ServiceSpec {
        // The seed's volume labels: the runtime and owner labels, not "managed by".
        let volume_labels: HashMap<String, String> = spec
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != LABEL_MANAGED_BY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let driver_config = self
            .options
            .volume_driver
            .as_ref()
            .map(|driver| MountVolumeOptionsDriverConfig {
                name: Some(driver.clone()),
                options: Some(self.options.volume_options.clone()),
            });
        let mounts = vec![
            Mount {
                target: Some("/data".into()),
                source: Some(volume),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(volume_labels),
                    driver_config,
                    ..Default::default()
                }),
                ..Default::default()
            },
            Mount {
                target: Some("/dev/shm".into()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(spec.shm_size_bytes as i64),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let mut service_labels = spec.labels.clone();
        service_labels.insert(LABEL_LAST_USED.to_owned(), label_value(unix_now()));
        ServiceSpec {
            name: Some(name),
            labels: Some(service_labels),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(spec.image.to_owned()),
                    labels: Some(spec.labels.clone()),
                    env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    mounts: Some(mounts),
                    // Raw sockets would let a page's process forge frames on its network.
                    capability_drop: Some(vec!["CAP_NET_RAW".to_owned()]),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some((spec.resources.cpus * 1e9) as i64),
                        memory_bytes: Some(spec.resources.memory_bytes as i64),
                        pids: Some(spec.resources.pids),
                    }),
                    ..Default::default()
                }),
                // The gateway asks for a new task when the owner comes back: a broken
                // runtime fails once, with its reason, instead of restarting in a loop.
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement::default()),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(network_id.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(match self.options.endpoint_mode {
                    EndpointMode::Dnsrr => EndpointSpecModeEnum::DNSRR,
                    EndpointMode::Vip => EndpointSpecModeEnum::VIP,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The owner's service, `None` when there is none; refused when another scope's.
    async fn service(&self, docker: &Docker, name: &str) -> Result<Option<Service>, BackendError> {
        match docker.inspect_service(name, None).await {
            Ok(service) => {
                let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
                self.engine.check_ours(name, labels, true)?;
                Ok(Some(service))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(fail(Operation::InspectService)(e)),
        }
    }

    /// Every task of a service the engine still lists.
    async fn tasks(&self, docker: &Docker, service: &str) -> Result<Vec<Task>, BackendError> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        docker
            .list_tasks(Some(options))
            .await
            .map_err(fail(Operation::ListTasks))
    }

    /// Updates a service at the version it was read with `change` applied; `Ok(false)`
    /// when someone else updated it first (the compare-and-swap lost).
    async fn update(
        &self,
        docker: &Docker,
        service: &Service,
        change: impl FnOnce(&mut ServiceSpec),
    ) -> Result<bool, BackendError> {
        let name = service
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .or_else(|| service.id.clone())
            .unwrap_or_default();
        let mut spec = service.spec.clone().unwrap_or_default();
        change(&mut spec);
        let options = UpdateServiceOptions {
            version: version_of(service),
            ..Default::default()
        };
        match docker.update_service(&name, spec, options, None).await {
            Ok(_) => Ok(true),
            Err(e) if is_out_of_sequence(&e) => Ok(false),
            Err(e) => Err(fail(Operation::UpdateService)(e)),
        }
    }

    /// The node constraint a service scaled back up (or given a new task) should carry:
    /// the node of its latest task, where its local profile is; `None` when profiles live
    /// on a volume driver or it is pinned already.
    fn pin_for(&self, service: &Service, tasks: &[Task]) -> Option<String> {
        if self.options.volume_driver.is_some() {
            return None;
        }
        let pinned = service
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.as_ref())
            .is_some_and(|c| c.iter().any(|c| is_pin(c)));
        if pinned {
            return None;
        }
        let ran: Vec<Task> = tasks.iter().filter(|t| had_container(t)).cloned().collect();
        newest(&ran).and_then(|t| t.node_id.clone()).map(|n| pin(&n))
    }

    /// Waits until the service's task runs; its id and node. A task that fails says why
    /// (502); one the scheduler cannot place (a pinned node gone) is refused with the
    /// scheduler's reason (503) after [`UNPLACEABLE_AFTER`].
    async fn wait_running(&self, docker: &Docker, name: &str, not: &[String]) -> Result<Task, BackendError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let tasks = self.tasks(docker, name).await?;
            // Tasks that were already there before this start are history, and so is one
            // still running that the engine is stopping (the task of before a scale to zero,
            // when the owner came back at once): it must not be taken for the new one.
            let current: Vec<Task> = tasks
                .into_iter()
                .filter(|t| t.id.as_ref().is_some_and(|id| !not.contains(id)))
                .filter(|t| is_terminal(state_of(t)) || t.desired_state == Some(TaskState::RUNNING))
                .collect();
            if let Some(task) = newest(&current) {
                match state_of(task) {
                    Some(TaskState::RUNNING) => return Ok(task.clone()),
                    state if is_terminal(state) => {
                        return Err(BackendError::Operation {
                            operation: Operation::StartContainer,
                            unavailable: false,
                            message: format!("{name}: {}", account_of(task)),
                        });
                    }
                    Some(TaskState::PENDING) if started.elapsed() >= UNPLACEABLE_AFTER => {
                        let reason = account_of(task);
                        if task
                            .status
                            .as_ref()
                            .and_then(|s| s.err.as_ref())
                            .is_some_and(|e| !e.is_empty())
                        {
                            return Err(BackendError::Unplaceable(format!("{name}: {reason}")));
                        }
                    }
                    _ => {}
                }
            }
            if started.elapsed() >= TASK_START_TIMEOUT {
                return Err(BackendError::Operation {
                    operation: Operation::StartContainer,
                    unavailable: false,
                    message: format!("{name}: no task running after {TASK_START_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The owner's service: the seed-named one, else a warm-pool service claimed for the
    /// owner (it keeps its own name, since services cannot be renamed; its labels name the
    /// owner); `None` when neither exists.
    async fn owner_service(&self, docker: &Docker, owner_hash: &OwnerHash) -> Result<Option<Service>, BackendError> {
        if let Some(service) = self.service(docker, &container_name(owner_hash)).await? {
            return Ok(Some(service));
        }
        let mut filters = self.engine.scoped_filter(format!("{LABEL_OWNER_HASH}={owner_hash}"));
        filters
            .entry("label".to_owned())
            .or_default()
            .push(LABEL_POOL.to_owned());
        let options = ListServicesOptionsBuilder::default().filters(&filters).build();
        let services = docker
            .list_services(Some(options))
            .await
            .map_err(fail(Operation::ListServices))?;
        Ok(services.into_iter().find(|s| {
            let labels = s.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
            !self.engine.is_another_scopes(&labels)
        }))
    }

    /// A runtime's own overlay: its pool network when it came from the warm pool, else the owner's.
    fn network_of(&self, service: Option<&Service>, owner_hash: &OwnerHash) -> String {
        match service.and_then(pool_id_of) {
            Some(pool_id) => pool_network_name(&self.options.network_prefix, &pool_id),
            None => network_name(&self.options.network_prefix, owner_hash),
        }
    }

    /// Where the gateway dials a task: by the task's own name (`<service>.<slot>.<task id>`,
    /// which the overlay's DNS resolves like the service's), so a connection kept alive to an
    /// earlier task of the service (before a scale to zero) is never reused for this one.
    fn task_endpoints(&self, service_name: &str, task: &Task) -> Endpoints {
        let ports = self.options.ports;
        let task_name = match (task.slot, task.id.as_deref()) {
            (Some(slot), Some(id)) => format!("{service_name}.{slot}.{id}"),
            _ => service_name.to_owned(),
        };
        Endpoints {
            rpc: format!("{task_name}:{}", ports.rpc),
            view: format!("{task_name}:{}", ports.view),
            cdp: format!("{task_name}:{}", ports.cdp),
        }
    }

    /// Removes a pool service (unclaimed, or claimed and going with its profile): the
    /// service, its volume wherever its tasks ran, its network.
    async fn remove_pool_service(&self, docker: &Docker, name: &str, pool_id: &str) -> Result<(), BackendError> {
        let mut nodes: Vec<String> = self
            .tasks(docker, name)
            .await?
            .iter()
            .filter(|t| had_container(t))
            .filter_map(|t| t.node_id.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        match docker.delete_service(name).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(fail(Operation::RemoveService)(e)),
        }
        self.remove_volume_everywhere(docker, pool_id, &pool_volume_name(pool_id), &nodes)
            .await?;
        self.remove_network(docker, &pool_network_name(&self.options.network_prefix, pool_id))
            .await;
        Ok(())
    }

    fn info_of(&self, service: &Service, task: &Task, owner_hash: OwnerHash, adopted: bool) -> RuntimeInfo {
        // The seed's name, or a claimed pool service's own.
        let name = name_of(service);
        let ports = self.options.ports;
        let at = |host: &str, port: u16| format!("{host}:{port}");
        let endpoints = self.task_endpoints(&name, task);
        let direct = Endpoints {
            rpc: at(&name, ports.rpc),
            view: at(&name, ports.view),
            cdp: at(&name, ports.cdp),
        };
        let key = service
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.env.as_ref())
            .and_then(|env| {
                env.iter()
                    .find_map(|kv| kv.strip_prefix(RUNTIME_KEY_ENV)?.strip_prefix('='))
                    .and_then(|k| http::HeaderValue::from_str(k).ok())
            });
        RuntimeInfo {
            id: task.id.clone().unwrap_or_default(),
            name,
            owner_hash,
            direct,
            endpoints,
            adopted,
            key,
            phases: Vec::new(),
            last_used: last_used_of(service),
            profile: pool_id_of(service).map(|id| pool_volume_name(&id)),
        }
    }

    /// Removes the owner's profile volume wherever its tasks ran: on this node through the
    /// engine, on another through a one-shot job pinned there (a manager's API reaches only
    /// its own node's volumes), running the gateway's own image with that node's socket.
    async fn remove_volume_everywhere(
        &self,
        docker: &Docker,
        tag: &str,
        volume: &str,
        nodes: &[String],
    ) -> Result<(), BackendError> {
        let volume = volume.to_owned();
        let own_node = docker
            .info()
            .await
            .map_err(fail(Operation::InspectSwarm))?
            .swarm
            .and_then(|s| s.node_id)
            .unwrap_or_default();
        for node in nodes.iter().filter(|n| **n != own_node) {
            self.remove_volume_on(docker, tag, node, &volume).await?;
        }
        match docker.inspect_volume(&volume).await {
            Ok(v) => {
                self.engine.check_ours(&volume, Some(&v.labels), false)?;
                remove_volume(docker, &volume).await
            }
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(fail(Operation::InspectVolume)(e)),
        }
    }

    /// Runs `lazygate remove-volume <volume>` as a job on `node` and waits for it.
    async fn remove_volume_on(&self, docker: &Docker, tag: &str, node: &str, volume: &str) -> Result<(), BackendError> {
        let image = self.own_image(docker).await?;
        let name = format!("lazygate-janitor-{tag}");
        let mut labels = HashMap::from([(LABEL_JANITOR.to_owned(), tag.to_owned())]);
        if let Some(scope) = self.engine.scope() {
            labels.insert(LABEL_SCOPE.to_owned(), scope.clone());
        }
        let spec = ServiceSpec {
            name: Some(name.clone()),
            labels: Some(labels),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image),
                    command: Some(
                        ["/usr/local/bin/lazygate", "remove-volume", volume]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                    mounts: Some(vec![Mount {
                        target: Some("/var/run/docker.sock".into()),
                        source: Some(self.options.node_socket.clone()),
                        typ: Some(MountType::BIND),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![pin(node)]),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated_job: Some(ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(1),
                    total_completions: Some(1),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // A job left by an earlier try (a gateway killed while it ran) goes first.
        let _ = docker.delete_service(&name).await;
        docker
            .create_service(spec, None)
            .await
            .map_err(fail(Operation::CreateService))?;
        let started = tokio::time::Instant::now();
        let outcome = loop {
            let tasks = self.tasks(docker, &name).await?;
            match newest(&tasks).map(|t| (state_of(t), account_of(t))) {
                Some((Some(TaskState::COMPLETE), _)) => break Ok(()),
                Some((state, account)) if is_terminal(state) => {
                    break Err(BackendError::Operation {
                        operation: Operation::RemoveVolume,
                        unavailable: false,
                        message: format!("{volume} on node {node}: {account}"),
                    });
                }
                _ if started.elapsed() >= JANITOR_TIMEOUT => {
                    break Err(BackendError::Operation {
                        operation: Operation::RemoveVolume,
                        unavailable: false,
                        message: format!(
                            "{volume} on node {node}: the removal job did not finish in {JANITOR_TIMEOUT:?}"
                        ),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if let Err(error) = docker.delete_service(&name).await
            && status_of(&error) != Some(404)
        {
            tracing::warn!(job = %name, error = %message_of(&error), "cannot remove a volume removal job");
        }
        outcome
    }

    /// The gateway's own image, which the volume removal job runs.
    async fn own_image(&self, docker: &Docker) -> Result<String, BackendError> {
        let gateway = self
            .engine
            .gateway_container(docker)
            .await?
            .ok_or_else(not_in_a_container)?;
        let c = docker
            .inspect_container(&gateway, None)
            .await
            .map_err(fail(Operation::InspectContainer))?;
        c.config
            .and_then(|config| config.image)
            .or(c.image)
            .ok_or_else(|| BackendError::Operation {
                operation: Operation::InspectContainer,
                unavailable: false,
                message: format!("{gateway}: no image"),
            })
    }

    /// Removes a runtime network once its task has left it (retried for a few seconds).
    async fn remove_network(&self, docker: &Docker, network: &str) {
        self.leave(docker, network).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match docker.remove_network(network).await {
                Ok(()) => return,
                Err(e) if status_of(&e) == Some(404) => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(%network, error = %message_of(&e), "cannot remove a runtime's network; leaving it");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Removes a volume the engine may still see in use for a moment (its task's container
/// goes after the service): retried for a few seconds. Also what the volume removal job
/// runs on another node (`lazygate remove-volume`).
pub async fn remove_volume(docker: &Docker, volume: &str) -> Result<(), BackendError> {
    let mut pause = Duration::from_millis(20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let options = RemoveVolumeOptionsBuilder::default().build();
        match docker.remove_volume(volume, Some(options)).await {
            Ok(()) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) if status_of(&e) == Some(409) && tokio::time::Instant::now() < deadline => {}
            Err(e) => return Err(fail(Operation::RemoveVolume)(e)),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// `lazygate remove-volume <name>`, the volume removal job's command: removes a volume on
/// the engine it reaches (the node's own socket), waiting while its last container goes.
pub async fn remove_local_volume(volume: &str) -> Result<(), BackendError> {
    let docker = EngineClient::new(None, None).docker().await?;
    remove_volume(&docker, volume).await
}

fn not_in_a_container() -> BackendError {
    BackendError::Unsuitable(
        "runtime.backend = swarm (LAZYGATE_BACKEND): the gateway dials runtimes on their overlay networks, \
         so it must run in a container on a manager node (see deploy/swarm-replica.sh), with runtime.gateway_container \
         (LAZYGATE_GATEWAY_CONTAINER) naming it if its hostname does not"
            .to_owned(),
    )
}

#[async_trait]
impl Backend for SwarmBackend {
    async fn ping(&self) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        docker.ping().await.map(drop).map_err(fail(Operation::Ping))
    }

    async fn check_engine(&self) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        let info = docker.info().await.map_err(fail(Operation::InspectSwarm))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "inactive".to_owned());
            let what = if state == "active" {
                "a worker, not a manager".to_owned()
            } else {
                format!("not in a swarm (state: {state})")
            };
            return Err(BackendError::Unsuitable(format!(
                "runtime.backend = swarm (LAZYGATE_BACKEND) needs a swarm manager, and this engine is {what}: \
                 run `docker swarm init` on it, or point DOCKER_HOST at a manager, or set runtime.backend = docker"
            )));
        }
        match self.engine.gateway_container(&docker).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(not_in_a_container()),
            Err(BackendError::GatewayContainerUnknown(why)) => {
                Err(BackendError::Unsuitable(format!("{} ({why})", not_in_a_container())))
            }
            Err(error) => Err(error),
        }
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn missing_images(&self, runtime_image: &str) -> Result<Vec<String>, BackendError> {
        let docker = self.engine.docker().await?;
        match docker.inspect_image(runtime_image).await {
            Ok(_) => Ok(Vec::new()),
            Err(e) if status_of(&e) == Some(404) => Ok(vec![runtime_image.to_owned()]),
            Err(e) => Err(fail(Operation::InspectImage)(e)),
        }
    }

    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
        let docker = self.engine.docker().await?;
        let owner_hash = spec.owner_hash;
        // A warm-pool service claimed for the owner is its runtime, under its own name.
        let claimed = self
            .owner_service(&docker, &owner_hash)
            .await?
            .filter(|s| pool_id_of(s).is_some());
        let name = claimed.as_ref().map_or_else(|| container_name(&owner_hash), name_of);
        let network = self.network_of(claimed.as_ref(), &owner_hash);
        let started = std::time::Instant::now();
        let network_id = self.ensure_network(&docker, &network, &spec.labels).await?;
        // By name: a node that has no task on an overlay yet does not know it by id.
        self.join(&docker, &network).await?;
        let joined = started.elapsed();
        // Whether this call created the service or gave it a task: then it is not adopted.
        let mut made = false;
        for _ in 0..UPDATE_TRIES * 2 {
            let Some(service) = self.service(&docker, &name).await? else {
                if claimed.is_some() {
                    return Err(BackendError::Operation {
                        operation: Operation::InspectService,
                        unavailable: false,
                        message: format!("{name}, the owner's claimed runtime, was removed meanwhile; try again"),
                    });
                }
                let made_spec = self.service_spec(
                    Blueprint::from(spec),
                    container_name(&owner_hash),
                    volume_name(&owner_hash),
                    &network_id,
                );
                match docker.create_service(made_spec, None).await {
                    Ok(_) => made = true,
                    // Another gateway's first hit won the name: adopt its service.
                    Err(e) if status_of(&e) == Some(409) || message_of(&e).contains("name conflicts") => {}
                    Err(e) => return Err(fail(Operation::CreateService)(e)),
                }
                continue;
            };
            let tasks = self.tasks(&docker, &name).await?;
            let running = tasks.iter().find(|t| is_live(t));
            if let Some(task) = running {
                let mut info = self.info_of(&service, task, owner_hash, !made);
                if made {
                    info.phases = vec![("join", joined), ("create", started.elapsed() - joined)];
                }
                return Ok(info);
            }
            let starting = tasks
                .iter()
                .any(|t| t.desired_state == Some(TaskState::RUNNING) && !is_terminal(state_of(t)));
            if replicas_of(&service) >= 1 && (starting || made) {
                // A task is on its way (this call's, or another gateway's): wait for it.
                let history: Vec<String> = tasks
                    .iter()
                    .filter(|t| is_terminal(state_of(t)))
                    .filter_map(|t| t.id.clone())
                    .collect();
                let task = self.wait_running(&docker, &name, &history).await?;
                let service = self.service(&docker, &name).await?.unwrap_or(service);
                let mut info = self.info_of(&service, &task, owner_hash, !made);
                if made {
                    info.phases = vec![("join", joined), ("create", started.elapsed() - joined)];
                }
                return Ok(info);
            }
            // At rest (0 replicas), or its last task ended (killed, crashed): one replica
            // again, on the node of its profile, marked as used now.
            let pin = self.pin_for(&service, &tasks);
            let now = label_value(unix_now());
            let scaled = self
                .update(&docker, &service, |s| {
                    s.mode = Some(ServiceSpecMode {
                        replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                        ..Default::default()
                    });
                    s.labels.get_or_insert_default().insert(LABEL_LAST_USED.to_owned(), now);
                    let template = s.task_template.get_or_insert_default();
                    if let Some(pin) = pin {
                        template
                            .placement
                            .get_or_insert_default()
                            .constraints
                            .get_or_insert_default()
                            .push(pin);
                    }
                    // A service already at one replica gets a new task only when forced.
                    template.force_update = Some(template.force_update.unwrap_or(0) + 1);
                })
                .await?;
            made |= scaled;
        }
        Err(BackendError::Operation {
            operation: Operation::UpdateService,
            unavailable: false,
            message: format!("{name}: other writers kept changing it; try again"),
        })
    }

    /// Nothing to do on Swarm: each runtime is alone on its overlay with the gateway (a
    /// separate segment the host does not route to), and tasks reach each other's
    /// `docker_gwbridge` addresses not at all (that bridge isolates its members). A helper
    /// in a task's namespace would have to run on the task's node, which a manager's API
    /// cannot do.
    async fn fence(&self, _runtime: &RuntimeInfo) -> Result<(), BackendError> {
        Ok(())
    }

    async fn last_output(&self, runtime: &RuntimeInfo, lines: usize) -> Result<String, BackendError> {
        let docker = self.engine.docker().await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = docker.task_logs(&runtime.id, Some(options));
        let mut output = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => output.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) => return Err(fail(Operation::ReadLogs)(e)),
            }
        }
        Ok(output.trim().to_owned())
    }

    async fn is_running(&self, runtime: &RuntimeInfo) -> Result<bool, BackendError> {
        let docker = self.engine.docker().await?;
        match docker.inspect_task(&runtime.id).await {
            Ok(task) => Ok(is_live(&task)),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(fail(Operation::ListTasks)(e)),
        }
    }

    async fn record_use(&self, owner_hash: &OwnerHash, last_used: f64) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        let name = container_name(owner_hash);
        for _ in 0..UPDATE_TRIES {
            let Some(service) = self.owner_service(&docker, owner_hash).await? else {
                return Ok(());
            };
            if last_used_of(&service).is_some_and(|recorded| recorded >= last_used) {
                return Ok(());
            }
            let value = label_value(last_used);
            // Labels of the service, not of its task: the task is not touched.
            if self
                .update(&docker, &service, |s| {
                    s.labels
                        .get_or_insert_default()
                        .insert(LABEL_LAST_USED.to_owned(), value);
                })
                .await?
            {
                return Ok(());
            }
        }
        Err(BackendError::Operation {
            operation: Operation::UpdateService,
            unavailable: false,
            message: format!("{name}: last use not recorded: other writers kept changing it"),
        })
    }

    async fn retire(
        &self,
        owner_hash: &OwnerHash,
        idle_before: f64,
        with_volume: bool,
    ) -> Result<Retirement, BackendError> {
        let docker = self.engine.docker().await?;
        let Some(service) = self.owner_service(&docker, owner_hash).await? else {
            if with_volume {
                self.remove(owner_hash, true).await?;
            }
            return Ok(Retirement::Retired);
        };
        let name = name_of(&service);
        let network = self.network_of(Some(&service), owner_hash);
        let recorded = last_used_of(&service);
        if let Some(recorded) = recorded.filter(|r| *r > idle_before) {
            return Ok(Retirement::UsedSince(recorded));
        }
        let tasks = self.tasks(&docker, &name).await?;
        let pin = if with_volume {
            None
        } else {
            self.pin_for(&service, &tasks)
        };
        // At the version whose last use was judged: a use recorded since makes this fail.
        let scaled = self
            .update(&docker, &service, |s| {
                s.mode = Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                    ..Default::default()
                });
                if let Some(pin) = pin {
                    s.task_template
                        .get_or_insert_default()
                        .placement
                        .get_or_insert_default()
                        .constraints
                        .get_or_insert_default()
                        .push(pin);
                }
            })
            .await?;
        if !scaled {
            // Someone wrote in between; judge again at the next pass.
            return Ok(Retirement::UsedSince(recorded.unwrap_or(idle_before)));
        }
        if with_volume {
            self.remove(owner_hash, true).await?;
        } else {
            self.leave(&docker, &network).await;
        }
        Ok(Retirement::Retired)
    }

    async fn remove(&self, owner_hash: &OwnerHash, with_volume: bool) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        let service = self.owner_service(&docker, owner_hash).await?;
        let name = service.as_ref().map_or_else(|| container_name(owner_hash), name_of);
        let network = self.network_of(service.as_ref(), owner_hash);
        // A claimed pool service's profile is its pool volume.
        let volume = service
            .as_ref()
            .and_then(pool_id_of)
            .map_or_else(|| volume_name(owner_hash), |id| pool_volume_name(&id));
        // The nodes its tasks ran on: each may hold a copy of a local volume.
        let mut nodes: Vec<String> = Vec::new();
        if service.is_some() {
            if with_volume {
                nodes = self
                    .tasks(&docker, &name)
                    .await?
                    .iter()
                    .filter(|t| had_container(t))
                    .filter_map(|t| t.node_id.clone())
                    .collect();
                nodes.sort();
                nodes.dedup();
            }
            match docker.delete_service(&name).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::RemoveService)(e)),
            }
        }
        if with_volume {
            self.remove_volume_everywhere(&docker, owner_hash.as_str(), &volume, &nodes)
                .await?;
        }
        self.remove_network(&docker, &network).await;
        Ok(())
    }

    async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
        self.engine.list_profiles().await
    }

    /// A profile past the retention goes with its service at rest (the owner is gone);
    /// kept while the service runs.
    async fn remove_profile(&self, owner_hash: &OwnerHash) -> Result<bool, BackendError> {
        let docker = self.engine.docker().await?;
        if let Some(service) = self.owner_service(&docker, owner_hash).await? {
            if replicas_of(&service) > 0 {
                return Ok(false);
            }
            self.remove(owner_hash, false).await?;
        }
        self.engine.remove_profile(owner_hash).await
    }

    async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError> {
        let docker = self.engine.docker().await?;
        let filters = self.engine.scoped_filter(format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let options = ListServicesOptionsBuilder::default().filters(&filters).build();
        let services = docker
            .list_services(Some(options))
            .await
            .map_err(fail(Operation::ListServices))?;
        let filters = HashMap::from([("desired-state".to_owned(), vec!["running".to_owned()])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = docker
            .list_tasks(Some(options))
            .await
            .map_err(fail(Operation::ListTasks))?;
        let mut runtimes = Vec::new();
        for service in services {
            let labels = service.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
            if self.engine.is_another_scopes(&labels) || replicas_of(&service) < 1 {
                continue;
            }
            let Some(Ok(owner_hash)) = labels.get(LABEL_OWNER_HASH).map(|h| OwnerHash::parse(h)) else {
                continue;
            };
            let running = tasks
                .iter()
                .find(|t| t.service_id == service.id && state_of(t) == Some(TaskState::RUNNING));
            let Some(task) = running else { continue };
            let network = self.network_of(Some(&service), &owner_hash);
            if let Err(error) = self.join(&docker, &network).await {
                tracing::warn!(service = ?service.spec.as_ref().and_then(|s| s.name.clone()), %error, "cannot join a runtime's network; not adopting it");
                continue;
            }
            runtimes.push(self.info_of(&service, task, owner_hash, true));
        }
        Ok(runtimes)
    }

    async fn start_pooled(&self, spec: &PoolSpec) -> Result<PooledRuntime, BackendError> {
        let docker = self.engine.docker().await?;
        let name = pool_container_name(&spec.pool_id);
        let network = pool_network_name(&self.options.network_prefix, &spec.pool_id);
        let network_id = self.ensure_network(&docker, &network, &spec.labels).await?;
        self.join(&docker, &network).await?;
        let volume = pool_volume_name(&spec.pool_id);
        let service_spec = self.service_spec(Blueprint::from(spec), name.clone(), volume, &network_id);
        docker
            .create_service(service_spec, None)
            .await
            .map_err(fail(Operation::CreateService))?;
        let made = async {
            let task = self.wait_running(&docker, &name, &[]).await?;
            Ok(PooledRuntime {
                pool_id: spec.pool_id.clone(),
                id: task.id.clone().unwrap_or_default(),
                endpoints: self.task_endpoints(&name, &task),
                name: name.clone(),
            })
        }
        .await;
        if made.is_err()
            && let Err(error) = self.remove_pool_service(&docker, &name, &spec.pool_id).await
        {
            tracing::warn!(service = %name, %error, "cannot remove a pool runtime that failed to start");
        }
        made
    }

    async fn list_pooled(&self) -> Result<Vec<PooledRuntime>, BackendError> {
        let docker = self.engine.docker().await?;
        let filters = self.engine.scoped_filter(LABEL_POOL.to_owned());
        let options = ListServicesOptionsBuilder::default().filters(&filters).build();
        let services = docker
            .list_services(Some(options))
            .await
            .map_err(fail(Operation::ListServices))?;
        let mut pooled = Vec::new();
        for service in services {
            let labels = service.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
            let Some(pool_id) = pool_id_of(&service) else { continue };
            // Claimed ones are their owners' ([`Backend::list`]'s).
            if self.engine.is_another_scopes(&labels) || owner_of(&service).is_some() {
                continue;
            }
            let name = name_of(&service);
            let tasks = self.tasks(&docker, &name).await?;
            match tasks.iter().find(|t| state_of(t) == Some(TaskState::RUNNING)) {
                Some(task) => {
                    self.join(&docker, &pool_network_name(&self.options.network_prefix, &pool_id))
                        .await?;
                    pooled.push(PooledRuntime {
                        pool_id,
                        id: task.id.clone().unwrap_or_default(),
                        endpoints: self.task_endpoints(&name, task),
                        name,
                    });
                }
                // Its task ended and was never claimed: nobody's data is in it. One still
                // starting may be another gateway's pool filling up: left alone.
                None if newest(&tasks).is_none_or(|t| is_terminal(state_of(t))) => {
                    tracing::info!(service = %name, "removing a pool runtime that is not running");
                    self.remove_pool_service(&docker, &name, &pool_id).await?;
                }
                None => {}
            }
        }
        Ok(pooled)
    }

    async fn claim(&self, pooled: &PooledRuntime, owner_hash: &OwnerHash) -> Result<Claim, BackendError> {
        let docker = self.engine.docker().await?;
        let claiming = std::time::Instant::now();
        // An owner with a service (at rest, say) or a profile here keeps them.
        if self.owner_service(&docker, owner_hash).await?.is_some() {
            return Ok(Claim::OwnerHasOne);
        }
        match docker.inspect_volume(&volume_name(owner_hash)).await {
            Ok(_) => return Ok(Claim::OwnerHasOne),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(fail(Operation::InspectVolume)(e)),
        }
        let Some(service) = self.service(&docker, &pooled.name).await? else {
            return Ok(Claim::Gone);
        };
        if owner_of(&service).is_some() {
            return Ok(Claim::Gone);
        }
        // The claim is a label update at the version read: of gateways claiming one pool
        // service, one wins; the others see it gone.
        let (hash, now) = (owner_hash.to_string(), label_value(unix_now()));
        let won = self
            .update(&docker, &service, |s| {
                let labels = s.labels.get_or_insert_default();
                labels.insert(LABEL_OWNER_HASH.to_owned(), hash);
                labels.insert(LABEL_LAST_USED.to_owned(), now);
            })
            .await?;
        if !won {
            return Ok(Claim::Gone);
        }
        let tasks = self.tasks(&docker, &pooled.name).await?;
        let Some(task) = tasks.iter().find(|t| t.id.as_deref() == Some(pooled.id.as_str())) else {
            return Ok(Claim::Gone);
        };
        let mut info = self.info_of(&service, task, *owner_hash, false);
        info.phases = vec![("claim", claiming.elapsed())];
        Ok(Claim::Claimed(Box::new(info)))
    }

    async fn discard_pooled(&self, pooled: &PooledRuntime) -> Result<(), BackendError> {
        let docker = self.engine.docker().await?;
        // Only while unclaimed: one claimed through another gateway is its owner's now.
        match self.service(&docker, &pooled.name).await? {
            Some(service) if owner_of(&service).is_some() => Ok(()),
            Some(_) => self.remove_pool_service(&docker, &pooled.name, &pooled.pool_id).await,
            None => Ok(()),
        }
    }
}
