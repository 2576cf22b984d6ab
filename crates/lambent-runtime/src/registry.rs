//! The node's runtimes, keyed by family (`process`, `wasm`): the engine and the pool
//! hold this registry, which dispatches each function to the runtime of its kind.

use crate::{Instance, InstanceConfig, Runtime, RuntimeError};
use async_trait::async_trait;
use lambent_core::FunctionSpec;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Default, Clone)]
pub struct Runtimes {
    by_family: BTreeMap<&'static str, Arc<dyn Runtime>>,
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_family.keys()).finish()
    }
}

impl Runtimes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `runtime` for functions whose kind belongs to `family`.
    pub fn with(mut self, family: &'static str, runtime: Arc<dyn Runtime>) -> Self {
        self.by_family.insert(family, runtime);
        self
    }

    fn for_spec(&self, spec: &FunctionSpec) -> Result<&Arc<dyn Runtime>, RuntimeError> {
        let family = spec.runtime.family();
        self.by_family
            .get(family)
            .ok_or_else(|| RuntimeError::NoRuntime {
                function: spec.name.clone(),
                family,
            })
    }
}

#[async_trait]
impl Runtime for Runtimes {
    async fn prepare(&self, spec: &FunctionSpec, code_dir: &Path) -> Result<(), RuntimeError> {
        self.for_spec(spec)?.prepare(spec, code_dir).await
    }

    async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
        self.for_spec(&config.spec)?.start(config).await
    }

    async fn collect(&self, unused_for: std::time::Duration) -> usize {
        let mut removed = 0;
        for runtime in self.by_family.values() {
            removed += runtime.collect(unused_for).await;
        }
        removed
    }
}
