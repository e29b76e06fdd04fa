//! The Docker backend: the only file that speaks to the engine (through bollard).
//!
//! It creates exactly what the seed's `docker run` created — same names, labels, environment,
//! volume, network and `--shm-size` — so either can adopt the other's runtimes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, Network, NetworkCreateRequest,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use futures_util::StreamExt;

use super::backend::{
    Backend, BackendError, Endpoints, LABEL_MANAGED_BY, LABEL_OWNER_HASH, LABEL_SCOPE, MANAGED_BY, Operation, Ports,
    RuntimeInfo, RuntimeSpec,
};
use crate::owner::OwnerHash;

/// Longest any single engine call may take.
const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the first contact (version negotiation) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Docker through its API, reached like every Docker client does (DOCKER_HOST, else the
/// local socket).
pub struct DockerBackend {
    /// The version-negotiated client, kept once the engine has answered: the engine may be
    /// down when the gateway starts, so contact is retried on every call until it answers.
    client: Mutex<Option<Docker>>,
    /// The runtime network is known to exist; saves engine calls on every cold start.
    network_ready: AtomicBool,
    /// Single-flight for creating the runtime network when owners start in parallel.
    network_lock: tokio::sync::Mutex<()>,
    /// Only runtimes with this `lazygate.scope` label are listed (see [`LABEL_SCOPE`]).
    scope: Option<String>,
}

fn fail(operation: Operation) -> impl FnOnce(EngineError) -> BackendError {
    move |error| BackendError::Operation {
        operation,
        // The engine answered with a status: it is there, the operation failed.
        unavailable: !matches!(error, EngineError::DockerResponseServerError { .. }),
        message: match error {
            EngineError::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        },
    }
}

fn status_of(error: &EngineError) -> Option<u16> {
    match error {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl DockerBackend {
    pub fn new(scope: Option<String>) -> Self {
        DockerBackend {
            client: Mutex::new(None),
            network_ready: AtomicBool::new(false),
            network_lock: tokio::sync::Mutex::new(()),
            scope,
        }
    }

    async fn docker(&self) -> Result<Docker, BackendError> {
        if let Some(docker) = self.client.lock().expect("client lock").clone() {
            return Ok(docker);
        }
        let docker = Docker::connect_with_defaults()
            .map_err(|e| BackendError::Connect(e.to_string()))?
            .with_timeout(ENGINE_CALL_TIMEOUT);
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| BackendError::Connect(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| BackendError::Connect(e.to_string()))?;
        *self.client.lock().expect("client lock") = Some(docker.clone());
        Ok(docker)
    }

    /// Makes sure the runtime network exists, once per process (single-flight). The engine
    /// accepts two networks with one name, so gateways racing to create it can end up with
    /// duplicates, which make the name ambiguous; every racer then keeps the oldest one and
    /// removes the others, so they all settle on the same network.
    async fn ensure_network(&self, docker: &Docker, spec: &RuntimeSpec) -> Result<(), BackendError> {
        if self.network_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _single_flight = self.network_lock.lock().await;
        if self.network_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.networks_named(docker, &spec.network).await?.is_empty() {
            let labels = HashMap::from([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned())]);
            let request = NetworkCreateRequest {
                name: spec.network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            };
            docker
                .create_network(request)
                .await
                .map_err(fail(Operation::CreateNetwork))?;
            tracing::info!(network = %spec.network, "created runtime network");
        }
        let mut networks = self.networks_named(docker, &spec.network).await?;
        networks.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        for duplicate in networks.iter().skip(1) {
            if let Some(id) = &duplicate.id {
                tracing::warn!(network = %spec.network, %id, "removing a duplicate runtime network");
                if let Err(error) = docker.remove_network(id).await {
                    tracing::debug!(%error, "duplicate network already gone or in use");
                }
            }
        }
        self.network_ready.store(true, Ordering::Release);
        Ok(())
    }

    async fn networks_named(&self, docker: &Docker, name: &str) -> Result<Vec<Network>, BackendError> {
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let networks = docker
            .list_networks(Some(options))
            .await
            .map_err(fail(Operation::CreateNetwork))?;
        // The name filter matches substrings; keep exact matches.
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect())
    }

    async fn create(&self, docker: &Docker, spec: &RuntimeSpec) -> Result<bool, BackendError> {
        self.ensure_network(docker, spec).await?;
        let volume_labels: HashMap<String, String> = spec
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != LABEL_MANAGED_BY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(spec.volume_name.clone()),
                labels: Some(volume_labels),
                ..Default::default()
            })
            .await
            .map_err(fail(Operation::CreateVolume))?;

        let port_keys: Vec<String> = [spec.ports.rpc, spec.ports.view, spec.ports.cdp]
            .iter()
            .map(|p| format!("{p}/tcp"))
            .collect();
        let port_bindings = spec.publish.then(|| {
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
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            exposed_ports: Some(port_keys),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{}:/data", spec.volume_name)]),
                network_mode: Some(spec.network.clone()),
                shm_size: Some(spec.shm_size_bytes as i64),
                port_bindings,
                memory: Some(spec.resources.memory_bytes as i64),
                nano_cpus: Some((spec.resources.cpus * 1e9) as i64),
                pids_limit: Some(spec.resources.pids),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.container_name)
            .build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // Another gateway (or a request racing this one) created it first: adopt theirs.
            Err(e) if status_of(&e) == Some(409) => return Ok(false),
            Err(e) if e.to_string().contains("network") => {
                // The network vanished or became ambiguous since we checked: check again next time.
                self.network_ready.store(false, Ordering::Release);
                return Err(fail(Operation::CreateContainer)(e));
            }
            Err(e) => return Err(fail(Operation::CreateContainer)(e)),
        }
        match docker.start_container(&spec.container_name, None).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(304) => Ok(true),
            Err(e) => Err(fail(Operation::StartContainer)(e)),
        }
    }

    async fn remove_container(&self, docker: &Docker, name: &str) -> Result<(), BackendError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // 409: removal already in progress; the engine finishes it.
            Err(e) if status_of(&e) == Some(409) && e.to_string().contains("in progress") => Ok(()),
            Err(e) => Err(fail(Operation::RemoveContainer)(e)),
        }
    }

    fn labels_filter(&self) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_MANAGED_BY}={MANAGED_BY}")];
        if let Some(scope) = &self.scope {
            labels.push(format!("{LABEL_SCOPE}={scope}"));
        }
        HashMap::from([
            ("label".to_owned(), labels),
            ("status".to_owned(), vec!["running".to_owned()]),
        ])
    }
}

/// Reads where a running container's services answer.
fn endpoints_of(
    c: &ContainerInspectResponse,
    name: &str,
    ports: Ports,
    publish: bool,
) -> Result<Endpoints, BackendError> {
    let settings = c.network_settings.as_ref();
    if !publish {
        return Ok(Endpoints {
            rpc: format!("{name}:{}", ports.rpc),
            view: format!("{name}:{}", ports.view),
            cdp: format!("{name}:{}", ports.cdp),
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
    // the host at its bridge address.
    let bridge_ip = settings.and_then(|s| s.networks.as_ref()).and_then(|n| {
        n.values()
            .find_map(|e| e.ip_address.clone().filter(|ip| !ip.is_empty()))
    });
    let resolve = |port: u16| -> Result<String, BackendError> {
        published(port)
            .or_else(|| bridge_ip.as_ref().map(|ip| format!("{ip}:{port}")))
            .ok_or_else(|| BackendError::NoPublishedPort(name.to_owned(), port))
    };
    Ok(Endpoints {
        rpc: resolve(ports.rpc)?,
        view: resolve(ports.view)?,
        cdp: resolve(ports.cdp)?,
    })
}

fn info_of(
    c: &ContainerInspectResponse,
    owner_hash: OwnerHash,
    ports: Ports,
    publish: bool,
    adopted: bool,
) -> Result<RuntimeInfo, BackendError> {
    let name = c.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned();
    Ok(RuntimeInfo {
        id: c.id.clone().unwrap_or_default(),
        endpoints: endpoints_of(c, &name, ports, publish)?,
        container_name: name,
        owner_hash,
        adopted,
    })
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

fn is_created_only(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::CREATED)
}

#[async_trait]
impl Backend for DockerBackend {
    async fn ping(&self) -> Result<(), BackendError> {
        let docker = self.docker().await?;
        docker.ping().await.map(drop).map_err(fail(Operation::Ping))
    }

    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
        let docker = self.docker().await?;
        let mut created = false;
        for attempt in 0..40u32 {
            match docker.inspect_container(&spec.container_name, None).await {
                Ok(c) if is_running(&c) => {
                    return info_of(&c, spec.owner_hash, spec.ports, spec.publish, !created);
                }
                // Created by someone else and about to be started: give them a moment.
                Ok(c) if is_created_only(&c) && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                }
                Ok(c) if created => {
                    let status = c.state.and_then(|s| s.status).map(|s| s.to_string());
                    return Err(BackendError::Operation {
                        operation: Operation::StartContainer,
                        unavailable: false,
                        message: format!(
                            "{} stopped right after it started (status {})",
                            spec.container_name,
                            status.unwrap_or_default()
                        ),
                    });
                }
                Ok(_) => {
                    tracing::info!(container = %spec.container_name, "replacing a runtime that is not running");
                    self.remove_container(&docker, &spec.container_name).await?;
                }
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::InspectContainer)(e)),
            }
            created = self.create(&docker, spec).await?;
        }
        Err(BackendError::Operation {
            operation: Operation::CreateContainer,
            unavailable: false,
            message: format!("{} did not reach the running state", spec.container_name),
        })
    }

    async fn is_running(&self, container_name: &str) -> Result<bool, BackendError> {
        let docker = self.docker().await?;
        match docker.inspect_container(container_name, None).await {
            Ok(c) => Ok(is_running(&c)),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(fail(Operation::InspectContainer)(e)),
        }
    }

    async fn remove(&self, container_name: &str, volume_name: Option<&str>) -> Result<(), BackendError> {
        let docker = self.docker().await?;
        self.remove_container(&docker, container_name).await?;
        if let Some(volume) = volume_name {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            match docker.remove_volume(volume, Some(options)).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::RemoveVolume)(e)),
            }
        }
        Ok(())
    }

    async fn list(&self, ports: Ports, publish: bool) -> Result<Vec<RuntimeInfo>, BackendError> {
        let docker = self.docker().await?;
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
            // Without a scope of our own, runtimes scoped to another gateway are theirs.
            if self.scope.is_none() && labels.contains_key(LABEL_SCOPE) {
                continue;
            }
            let Some(Ok(owner_hash)) = labels.get(LABEL_OWNER_HASH).map(|h| OwnerHash::parse(h)) else {
                continue;
            };
            let Some(id) = summary.id else { continue };
            match docker.inspect_container(&id, None).await {
                Ok(c) if is_running(&c) => match info_of(&c, owner_hash, ports, publish, true) {
                    Ok(info) => runtimes.push(info),
                    Err(e) => tracing::warn!(error = %e, "cannot adopt runtime"),
                },
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(fail(Operation::InspectContainer)(e)),
            }
        }
        Ok(runtimes)
    }

    async fn logs_tail(&self, container_name: &str, lines: usize) -> Result<String, BackendError> {
        let docker = self.docker().await?;
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
