//! The gateway with many registered owners: a backend that is the Docker backend plus
//! `owners - 1` runtimes that exist only in its listing, all answering at the address of one
//! real runtime. The gateway adopts them all at start, as it adopts running containers after
//! a restart, so its owner table holds every one of them on the warm path.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use lazygate::config::{ProcessEnv, Settings};
use lazygate::owner::OwnerHash;
use lazygate::provision::docker::{DockerBackend, DockerOptions};
use lazygate::provision::{Backend, BackendError, Engine, RuntimeInfo, RuntimeSpec};

use crate::Error;

/// Names of the runtimes that exist only in the listing.
const EXTRA: &str = "bench-owner-";

struct ManyOwners {
    docker: Arc<DockerBackend>,
    /// The one real runtime's owner, whose endpoints the others share.
    owner_hash: OwnerHash,
    owners: usize,
    /// The owners that exist only in the listing.
    extra: HashSet<OwnerHash>,
}

#[async_trait]
impl Backend for ManyOwners {
    async fn ping(&self) -> Result<(), BackendError> {
        self.docker.ping().await
    }

    async fn missing_images(&self, runtime_image: &str) -> Result<Vec<String>, BackendError> {
        self.docker.missing_images(runtime_image).await
    }

    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
        self.docker.ensure(spec).await
    }

    async fn fence(&self, runtime: &RuntimeInfo) -> Result<(), BackendError> {
        // The extra owners' traffic goes to the one real runtime, fenced as itself.
        if runtime.name.starts_with(EXTRA) {
            return Ok(());
        }
        self.docker.fence(runtime).await
    }

    async fn last_output(&self, runtime: &RuntimeInfo, lines: usize) -> Result<String, BackendError> {
        self.docker.last_output(runtime, lines).await
    }

    async fn is_running(&self, runtime: &RuntimeInfo) -> Result<bool, BackendError> {
        if runtime.name.starts_with(EXTRA) {
            return Ok(true);
        }
        self.docker.is_running(runtime).await
    }

    async fn remove(&self, owner_hash: &OwnerHash, with_volume: bool) -> Result<(), BackendError> {
        if self.extra.contains(owner_hash) {
            return Ok(());
        }
        self.docker.remove(owner_hash, with_volume).await
    }

    async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
        self.docker.list_profiles().await
    }

    async fn remove_profile(&self, owner_hash: &OwnerHash) -> Result<bool, BackendError> {
        self.docker.remove_profile(owner_hash).await
    }

    async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError> {
        let mut listed = self.docker.list().await?;
        let real = listed
            .iter()
            .find(|r| r.owner_hash == self.owner_hash)
            .cloned()
            .ok_or_else(|| BackendError::Connect(format!("the runtime of {} is not running", self.owner_hash)))?;
        for n in 1..self.owners {
            let name = format!("{EXTRA}{n}");
            listed.push(RuntimeInfo {
                owner_hash: OwnerHash::of(&name),
                id: name.clone(),
                name,
                ..real.clone()
            });
        }
        Ok(listed)
    }
}

/// Serves until Ctrl-C or SIGTERM with `owners` registered owners.
pub async fn serve(owners: usize, owner: &str) -> Result<(), Error> {
    let settings = Settings::load(None, &ProcessEnv)?;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let docker = Arc::new(DockerBackend::new(DockerOptions::from(&settings)));
    let engine = Engine {
        runtimes: Arc::new(ManyOwners {
            docker: docker.clone(),
            owner_hash: OwnerHash::of(owner),
            owners,
            extra: (1..owners).map(|n| OwnerHash::of(&format!("{EXTRA}{n}"))).collect(),
        }),
        tunnel_logs: docker,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    lazygate::run(listener, settings, engine, shutdown).await?;
    Ok(())
}
