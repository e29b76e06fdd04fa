//! The engine's API, as the backends that speak it (Docker and Swarm) share it: one
//! version-negotiated bollard client, contacted again until the engine answers; engine
//! errors named after the operation that failed; the scope rules that keep several gateways
//! on one engine apart; the gateway's own container (which joins runtime networks); and the
//! profile volumes, which both keep the seed's way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{Network, NetworkConnectRequest};
use bollard::query_parameters::{ListNetworksOptionsBuilder, ListVolumesOptionsBuilder};

use super::backend::{
    BackendError, LABEL_MANAGED_BY, LABEL_OWNER_HASH, LABEL_RUNTIME, LABEL_SCOPE, MANAGED_BY, Operation, volume_name,
};
use crate::owner::OwnerHash;

/// Longest any single engine call may take.
const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the first contact (version negotiation) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An engine failure as the operation that failed.
pub(super) fn fail(operation: Operation) -> impl FnOnce(EngineError) -> BackendError {
    move |error| BackendError::Operation {
        operation,
        // The engine answered with a status: it is there, the operation failed.
        unavailable: !matches!(error, EngineError::DockerResponseServerError { .. }),
        message: message_of(&error),
    }
}

/// The HTTP status the engine answered with, if it answered.
pub(super) fn status_of(error: &EngineError) -> Option<u16> {
    match error {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for a failure.
pub(super) fn message_of(error: &EngineError) -> String {
    match error {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The engine through its API, reached like every Docker client does (DOCKER_HOST, else the
/// local socket), for one gateway scope.
pub(super) struct EngineClient {
    /// The version-negotiated client, kept once the engine has answered: the engine may be
    /// down when the gateway starts, so contact is retried on every call until it answers.
    client: Mutex<Option<Docker>>,
    /// Only objects with this `lazygate.scope` label are this gateway's (see [`LABEL_SCOPE`]).
    scope: Option<String>,
    /// The container the gateway runs in, when it joins runtime networks: configured, or
    /// the one whose hostname is ours.
    configured_gateway: Option<String>,
    /// The gateway's own container id once known (`Some(None)`: not in a container).
    gateway: Mutex<Option<Option<String>>>,
}

impl EngineClient {
    pub(super) fn new(scope: Option<String>, gateway_container: Option<String>) -> Self {
        EngineClient {
            client: Mutex::new(None),
            scope,
            configured_gateway: gateway_container,
            gateway: Mutex::new(None),
        }
    }

    /// The client, contacting the engine first if it has not answered yet.
    pub(super) async fn docker(&self) -> Result<Docker, BackendError> {
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

    pub(super) fn scope(&self) -> Option<&String> {
        self.scope.as_ref()
    }

    /// The container the gateway runs in: the configured one, else the container whose
    /// hostname is ours; `None` outside a container.
    pub(super) async fn gateway_container(&self, docker: &Docker) -> Result<Option<String>, BackendError> {
        if let Some(known) = self.gateway.lock().expect("gateway lock").clone() {
            return Ok(known);
        }
        let wanted = match &self.configured_gateway {
            Some(name) => Some(name.clone()),
            None if !std::path::Path::new("/.dockerenv").exists() => None,
            None => Some(
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .map_err(|e| BackendError::GatewayContainerUnknown(format!("reading /etc/hostname: {e}")))?,
            ),
        };
        let resolved = match wanted {
            None => None,
            Some(name) => match docker.inspect_container(&name, None).await {
                Ok(c) => c.id,
                Err(e) if status_of(&e) == Some(404) => {
                    return Err(BackendError::GatewayContainerUnknown(format!(
                        "no container named {name}"
                    )));
                }
                Err(e) => return Err(fail(Operation::InspectContainer)(e)),
            },
        };
        *self.gateway.lock().expect("gateway lock") = Some(resolved.clone());
        Ok(resolved)
    }

    /// The networks named exactly `name` (the engine may hold two of one name).
    pub(super) async fn networks_named(&self, docker: &Docker, name: &str) -> Result<Vec<Network>, BackendError> {
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let networks = docker
            .list_networks(Some(options))
            .await
            .map_err(fail(Operation::ListNetworks))?;
        // The name filter matches substrings; keep exact matches.
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect())
    }

    /// Attaches `container` to `network`; already attached is fine.
    pub(super) async fn connect(&self, docker: &Docker, network: &str, container: &str) -> Result<(), BackendError> {
        let request = NetworkConnectRequest {
            container: container.to_owned(),
            endpoint_config: None,
        };
        match docker.connect_network(network, request).await {
            Ok(()) => Ok(()),
            Err(e) if message_of(&e).contains("already exists") || message_of(&e).contains("already attached") => {
                Ok(())
            }
            Err(e) => Err(fail(Operation::ConnectNetwork)(e)),
        }
    }

    /// Refuses an object (`managed`: it must carry the managed label) of another gateway's
    /// scope: the seed's names carry only the owner hash, so two scopes on one engine meet
    /// on them, and one must never wait on, adopt or remove the other's runtime or profile.
    pub(super) fn check_ours(
        &self,
        name: &str,
        labels: Option<&HashMap<String, String>>,
        managed: bool,
    ) -> Result<(), BackendError> {
        let empty = HashMap::new();
        let labels = labels.unwrap_or(&empty);
        let theirs = labels.get(LABEL_SCOPE).cloned();
        let is_managed = labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY);
        if (is_managed || !managed) && theirs == self.scope {
            return Ok(());
        }
        Err(BackendError::NameTaken {
            name: name.to_owned(),
            theirs,
            ours: self.scope.clone(),
        })
    }

    /// An engine list filter: objects with `label`, and this gateway's scope label if it has one.
    pub(super) fn scoped_filter(&self, label: String) -> HashMap<String, Vec<String>> {
        let mut labels = vec![label];
        if let Some(scope) = &self.scope {
            labels.push(format!("{LABEL_SCOPE}={scope}"));
        }
        HashMap::from([("label".to_owned(), labels)])
    }

    /// Without a scope of our own, what is scoped to another gateway is theirs (with one,
    /// the list filter already kept only ours).
    pub(super) fn is_another_scopes(&self, labels: &HashMap<String, String>) -> bool {
        self.scope.is_none() && labels.contains_key(LABEL_SCOPE)
    }

    /// Owners with a profile volume on this engine, of this scope.
    pub(super) async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
        let docker = self.docker().await?;
        // The seed labels its volumes `browser_use.runtime=true` and the owner hash, no more.
        let options = ListVolumesOptionsBuilder::default()
            .filters(&self.scoped_filter(format!("{LABEL_RUNTIME}=true")))
            .build();
        let volumes = docker
            .list_volumes(Some(options))
            .await
            .map_err(fail(Operation::ListVolumes))?
            .volumes
            .unwrap_or_default();
        Ok(volumes
            .into_iter()
            .filter(|v| !self.is_another_scopes(&v.labels))
            .filter_map(|v| {
                let owner_hash = OwnerHash::parse(v.labels.get(LABEL_OWNER_HASH)?).ok()?;
                // Only the seed's name for that owner's profile: never some other volume.
                (v.name == volume_name(&owner_hash)).then_some(owner_hash)
            })
            .collect())
    }

    /// Removes the owner's profile volume from this engine; `Ok(false)` while a container
    /// uses it.
    pub(super) async fn remove_profile(&self, owner_hash: &OwnerHash) -> Result<bool, BackendError> {
        let docker = self.docker().await?;
        let volume = volume_name(owner_hash);
        match docker.inspect_volume(&volume).await {
            Ok(v) => self.check_ours(&volume, Some(&v.labels), false)?,
            Err(e) if status_of(&e) == Some(404) => return Ok(true),
            Err(e) => return Err(fail(Operation::InspectVolume)(e)),
        }
        // Not forced: the engine refuses (409) while a container uses the volume.
        match docker
            .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(true),
            Err(e) if status_of(&e) == Some(409) => Ok(false),
            Err(e) => Err(fail(Operation::RemoveVolume)(e)),
        }
    }
}
