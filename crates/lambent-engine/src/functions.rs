//! Deploying, reading and removing functions.

use crate::Engine;
use crate::error::{EngineError, Result, not_found};
use lambent_core::function::{
    DEFAULT_CONCURRENCY, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, DEFAULT_WASM_CONCURRENCY,
};
use lambent_core::{FunctionSpec, RetryPolicy, RuntimeKind, function::validate_name};
use lambent_store::{FunctionVersion, StoredCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Create a function or change it. Every field left out keeps its current value
/// (or its default on create); code is required on create.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployRequest {
    /// Taken from the path when the API is called as `PUT /v1/functions/NAME`.
    #[serde(default)]
    pub name: String,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub memory_mb: Option<u32>,
    pub timeout_s: Option<u32>,
    pub env: Option<BTreeMap<String, String>>,
    pub concurrency: Option<u32>,
    pub max_attempts: Option<u32>,
    pub max_event_age_s: Option<u64>,
    pub retry_base_delay_ms: Option<u64>,
    pub retry_max_delay_ms: Option<u64>,
    pub description: Option<String>,
    /// Replaces the grants (`net`); absent keeps the previous version's.
    pub grants: Option<Vec<String>>,
    /// An IAM role ARN (AWS clients send one); absent keeps the previous version's.
    #[serde(default)]
    pub role: Option<String>,
    /// The on-failure destination (a function name; empty removes it); absent keeps
    /// the previous version's.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// The function's own keep-alive policy (empty: the node's); absent keeps the
    /// previous version's.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// The code as a zip archive.
    #[serde(skip)]
    pub code_zip: Option<Vec<u8>>,
}

impl DeployRequest {
    fn spec(&self, previous: Option<&FunctionSpec>) -> Result<FunctionSpec> {
        let runtime = match (&self.runtime, previous) {
            (Some(r), _) => RuntimeKind::parse(r)?,
            (None, Some(p)) => p.runtime.clone(),
            (None, None) => {
                return Err(EngineError::Invalid(format!(
                    "function `{}` does not exist yet: a runtime is required to create it",
                    self.name
                )));
            }
        };
        let base_retry = previous.map(|p| p.retry).unwrap_or_default();
        let retry = RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base_retry.max_attempts),
            max_event_age_s: self.max_event_age_s.unwrap_or(base_retry.max_event_age_s),
            base_delay_ms: self.retry_base_delay_ms.unwrap_or(base_retry.base_delay_ms),
            max_delay_ms: self
                .retry_max_delay_ms
                .unwrap_or(base_retry.max_delay_ms)
                .max(self.retry_base_delay_ms.unwrap_or(base_retry.base_delay_ms)),
        };
        let default_concurrency = match runtime {
            RuntimeKind::Wasm { .. } => DEFAULT_WASM_CONCURRENCY,
            _ => DEFAULT_CONCURRENCY,
        };
        let spec = FunctionSpec {
            name: self.name.clone(),
            runtime,
            handler: self
                .handler
                .clone()
                .or_else(|| previous.map(|p| p.handler.clone()))
                .unwrap_or_default(),
            memory_mb: self
                .memory_mb
                .or(previous.map(|p| p.memory_mb))
                .unwrap_or(DEFAULT_MEMORY_MB),
            timeout_s: self
                .timeout_s
                .or(previous.map(|p| p.timeout_s))
                .unwrap_or(DEFAULT_TIMEOUT_S),
            env: self
                .env
                .clone()
                .or_else(|| previous.map(|p| p.env.clone()))
                .unwrap_or_default(),
            concurrency: self
                .concurrency
                .or(previous.map(|p| p.concurrency))
                .unwrap_or(default_concurrency),
            retry,
            description: self
                .description
                .clone()
                .or_else(|| previous.map(|p| p.description.clone()))
                .unwrap_or_default(),
            grants: self
                .grants
                .clone()
                .or_else(|| previous.map(|p| p.grants.clone()))
                .unwrap_or_default(),
            role: self
                .role
                .clone()
                .or_else(|| previous.and_then(|p| p.role.clone())),
            on_failure: match &self.on_failure {
                Some(dest) if dest.is_empty() => None,
                Some(dest) => Some(dest.clone()),
                None => previous.and_then(|p| p.on_failure.clone()),
            },
            keep_alive: match &self.keep_alive {
                Some(policy) if policy.is_empty() => None,
                Some(policy) => Some(
                    lambent_scale::parse_policy(policy)
                        .map_err(|e| {
                            EngineError::Invalid(format!("function `{}`: {e}", self.name))
                        })?
                        .name(),
                ),
                None => previous.and_then(|p| p.keep_alive.clone()),
            },
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Lambda's limits on one tag: a key of 1-128 characters, not `aws:`, a value of at
/// most 256.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(EngineError::Invalid(format!(
                "tag `{key}`: keys are 1-128 characters and values at most 256"
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(EngineError::Invalid(format!(
                "tag `{key}`: the aws: prefix is reserved"
            )));
        }
    }
    Ok(())
}

impl Engine {
    /// Creates a function or a new version of it. The code is validated and unpacked
    /// before anything is recorded: a refused deploy leaves the previous version serving.
    pub async fn deploy(&self, request: DeployRequest) -> Result<FunctionVersion> {
        validate_name(&request.name)?;
        let previous = self
            .inner
            .stores
            .registry
            .get_function(&request.name, None)
            .await?;
        let spec = request.spec(previous.as_ref().map(|p| &p.spec))?;
        if let Some(destination) = &spec.on_failure {
            self.function(destination).await.map_err(|_| {
                EngineError::Invalid(format!(
                    "function `{}`: its on-failure destination `{destination}` does not exist",
                    spec.name
                ))
            })?;
        }
        let code = match (request.code_zip, &previous) {
            (Some(zip), _) => {
                let store = self.inner.stores.code.clone();
                tokio::task::spawn_blocking(move || store.put_zip(&zip))
                    .await
                    .map_err(|e| EngineError::Internal(e.to_string()))??
            }
            (None, Some(p)) => StoredCode {
                sha256: p.code_sha256.clone(),
                size: p.code_size,
            },
            (None, None) => {
                return Err(EngineError::Invalid(format!(
                    "function `{}` does not exist yet: code is required to create it",
                    request.name
                )));
            }
        };
        if let Some(p) = &previous
            && p.spec == spec
            && p.code_sha256 == code.sha256
        {
            return Ok(p.clone()); // nothing changed: no new version
        }
        // The runtime checks (a wasm component: compiles) the code against this
        // spec's grants before anything is recorded.
        let code_dir = self.inner.stores.code.tree(&code.sha256);
        self.inner
            .pool
            .runtime()
            .prepare(&spec, &code_dir)
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let version = self.inner.stores.registry.put_function(spec, code).await?;
        self.inner.forget_function(&version.spec.name);
        self.inner.pool.evict(&version.spec.name).await;
        // Deliveries waiting for this function may now succeed (a fixed deploy).
        self.inner.scan_by(0);
        Ok(version)
    }

    /// A function's tags.
    pub async fn tags(&self, name: &str) -> Result<BTreeMap<String, String>> {
        self.function(name).await?;
        Ok(self.inner.stores.registry.tags(name).await?)
    }

    /// Adds or replaces tags (`set`) and removes keys (`remove`); Lambda's limits: 50
    /// tags, keys of 1-128 characters and values of at most 256, no `aws:` keys.
    pub async fn tag(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<BTreeMap<String, String>> {
        check_tags(&set)?;
        let mut tags = self.tags(name).await?;
        tags.extend(set);
        for key in remove {
            tags.remove(key);
        }
        if tags.len() > 50 {
            return Err(EngineError::Invalid(format!(
                "function `{name}` would have {} tags; the limit is 50",
                tags.len()
            )));
        }
        self.inner
            .stores
            .registry
            .set_tags(name, tags.clone())
            .await?;
        Ok(tags)
    }

    pub async fn function(&self, name: &str) -> Result<FunctionVersion> {
        self.inner
            .latest_function(name)
            .await?
            .ok_or_else(|| not_found("function", name))
    }

    pub async fn functions(&self) -> Result<Vec<FunctionVersion>> {
        Ok(self.inner.stores.registry.list_functions().await?)
    }

    pub async fn delete_function(&self, name: &str) -> Result<()> {
        let deleted = self.inner.stores.registry.delete_function(name).await?;
        self.inner.forget_function(name);
        if !deleted {
            return Err(not_found("function", name));
        }
        self.inner.pool.evict(name).await;
        // A function made again under this name starts afresh.
        self.inner.pool.forget(name);
        if let Err(e) = self.inner.stores.learned.delete_learned(name).await {
            tracing::warn!(function = %name, error = %e, "could not forget what its keep-alive policy learned");
        }
        Ok(())
    }
}
