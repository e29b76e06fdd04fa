//! A backend that counts and times every call to the one it wraps, by operation and
//! outcome ([`crate::metrics`]): engine-neutral, so any backend is measured the same way.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::backend::{Backend, BackendError, Claim, PoolSpec, PooledRuntime, Retirement, RuntimeInfo, RuntimeSpec};
use crate::metrics::Metrics;
use crate::owner::OwnerHash;

/// Wraps a backend; every call is recorded in the metrics.
pub struct Instrumented {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Instrumented { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.engine_call(operation, result.is_ok(), started.elapsed());
        result
    }
}

#[async_trait]
impl Backend for Instrumented {
    async fn ping(&self) -> Result<(), BackendError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn check_engine(&self) -> Result<(), BackendError> {
        self.timed("check_engine", self.inner.check_engine()).await
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn record_use(&self, owner_hash: &OwnerHash, last_used: f64) -> Result<(), BackendError> {
        self.timed("record_use", self.inner.record_use(owner_hash, last_used))
            .await
    }

    async fn retire(
        &self,
        owner_hash: &OwnerHash,
        idle_before: f64,
        with_volume: bool,
    ) -> Result<Retirement, BackendError> {
        self.timed("retire", self.inner.retire(owner_hash, idle_before, with_volume))
            .await
    }

    async fn missing_images(&self, runtime_image: &str) -> Result<Vec<String>, BackendError> {
        self.timed("missing_images", self.inner.missing_images(runtime_image))
            .await
    }

    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
        self.timed("ensure", self.inner.ensure(spec)).await
    }

    async fn fence(&self, runtime: &RuntimeInfo) -> Result<(), BackendError> {
        self.timed("fence", self.inner.fence(runtime)).await
    }

    async fn last_output(&self, runtime: &RuntimeInfo, lines: usize) -> Result<String, BackendError> {
        self.timed("last_output", self.inner.last_output(runtime, lines)).await
    }

    async fn is_running(&self, runtime: &RuntimeInfo) -> Result<bool, BackendError> {
        self.timed("is_running", self.inner.is_running(runtime)).await
    }

    async fn remove(&self, owner_hash: &OwnerHash, with_volume: bool) -> Result<(), BackendError> {
        self.timed("remove", self.inner.remove(owner_hash, with_volume)).await
    }

    async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
        self.timed("list_profiles", self.inner.list_profiles()).await
    }

    async fn remove_profile(&self, owner_hash: &OwnerHash) -> Result<bool, BackendError> {
        self.timed("remove_profile", self.inner.remove_profile(owner_hash))
            .await
    }

    async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError> {
        self.timed("list", self.inner.list()).await
    }

    async fn sweep_leftovers(&self) -> Result<usize, BackendError> {
        self.timed("sweep_leftovers", self.inner.sweep_leftovers()).await
    }

    async fn start_pooled(&self, spec: &PoolSpec) -> Result<PooledRuntime, BackendError> {
        self.timed("start_pooled", self.inner.start_pooled(spec)).await
    }

    async fn list_pooled(&self) -> Result<Vec<PooledRuntime>, BackendError> {
        self.timed("list_pooled", self.inner.list_pooled()).await
    }

    async fn claim(&self, pooled: &PooledRuntime, owner_hash: &OwnerHash) -> Result<Claim, BackendError> {
        self.timed("claim", self.inner.claim(pooled, owner_hash)).await
    }

    async fn discard_pooled(&self, pooled: &PooledRuntime) -> Result<(), BackendError> {
        self.timed("discard_pooled", self.inner.discard_pooled(pooled)).await
    }
}
