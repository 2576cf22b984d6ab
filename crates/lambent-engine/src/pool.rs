//! The instance pool: warm instances per function, reused across invocations; a cold
//! start only when none is idle; at most `concurrency` instances busy per function;
//! idle ones dropped by the keep-alive policy (scale to zero).

use crate::keepalive::KeepAlivePolicy;
use lambent_core::FunctionSpec;
use lambent_runtime::{Instance, InstanceConfig, Runtime, RuntimeError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct Idle {
    version: u64,
    instance: Box<dyn Instance>,
    since: Instant,
}

struct FunctionPool {
    limit: u32,
    permits: Arc<Semaphore>,
    idle: Vec<Idle>,
}

/// One of a function's `concurrency` slots; freed when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// An instance checked out of the pool, in its slot.
pub struct Checkout {
    pub instance: Box<dyn Instance>,
    pub version: u64,
    pub cold: bool,
    _slot: Slot,
}

/// How often idle instances are checked against the keep-alive policy.
pub const REAP_INTERVAL: Duration = Duration::from_millis(500);

pub struct Pool {
    runtime: Arc<dyn Runtime>,
    policy: Arc<dyn KeepAlivePolicy>,
    functions: Mutex<HashMap<String, FunctionPool>>,
}

impl Pool {
    pub fn new(runtime: Arc<dyn Runtime>, policy: Arc<dyn KeepAlivePolicy>) -> Self {
        Self {
            runtime,
            policy,
            functions: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &Arc<dyn KeepAlivePolicy> {
        &self.policy
    }

    /// The function's semaphore, re-created when its concurrency limit changed.
    fn permits(&self, spec: &FunctionSpec) -> Arc<Semaphore> {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(spec.name.clone())
            .or_insert_with(|| FunctionPool {
                limit: spec.concurrency,
                permits: Arc::new(Semaphore::new(spec.concurrency as usize)),
                idle: Vec::new(),
            });
        if entry.limit != spec.concurrency {
            entry.limit = spec.concurrency;
            entry.permits = Arc::new(Semaphore::new(spec.concurrency as usize));
        }
        entry.permits.clone()
    }

    /// Waits for a concurrency slot of the function (`None` only if its limit was
    /// replaced by a redeploy meanwhile; ask again).
    pub async fn wait_slot(&self, spec: &FunctionSpec) -> Option<Slot> {
        self.permits(spec)
            .acquire_owned()
            .await
            .ok()
            .map(|p| Slot { _permit: p })
    }

    /// A free concurrency slot of the function, if there is one now.
    pub fn try_slot(&self, spec: &FunctionSpec) -> Option<Slot> {
        self.permits(spec)
            .try_acquire_owned()
            .ok()
            .map(|p| Slot { _permit: p })
    }

    /// Checks out a warm instance of this version, or starts one (a cold start), in
    /// a slot the caller holds.
    pub async fn checkout(
        &self,
        slot: Slot,
        spec: &FunctionSpec,
        version: u64,
        code_dir: PathBuf,
    ) -> Result<Checkout, RuntimeError> {
        self.policy.on_invocation(&spec.name);
        let (warm, stale) = self.take_idle(&spec.name, version);
        for old in stale {
            old.instance.shutdown().await;
        }
        if let Some(instance) = warm {
            return Ok(Checkout {
                instance,
                version,
                cold: false,
                _slot: slot,
            });
        }
        let instance = self
            .runtime
            .start(InstanceConfig {
                spec: spec.clone(),
                version,
                code_dir,
            })
            .await?;
        Ok(Checkout {
            instance,
            version,
            cold: true,
            _slot: slot,
        })
    }

    /// The most recently used usable idle instance of `version`; idle instances of
    /// other versions are handed back for shutdown (a deploy replaced them).
    fn take_idle(&self, function: &str, version: u64) -> (Option<Box<dyn Instance>>, Vec<Idle>) {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pool) = map.get_mut(function) else {
            return (None, Vec::new());
        };
        let (keep, stale): (Vec<Idle>, Vec<Idle>) = pool
            .idle
            .drain(..)
            .partition(|i| i.version == version && i.instance.is_usable());
        pool.idle = keep;
        (pool.idle.pop().map(|i| i.instance), stale)
    }

    /// Returns an instance after an invocation; an unusable one is shut down.
    pub async fn checkin(&self, function: &str, checkout: Checkout) {
        let Checkout {
            instance, version, ..
        } = checkout;
        if !instance.is_usable() {
            instance.shutdown().await;
            return;
        }
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = map.get_mut(function) {
            pool.idle.push(Idle {
                version,
                instance,
                since: Instant::now(),
            });
        }
    }

    /// Drops idle instances the policy no longer keeps; returns how many.
    pub async fn reap(&self) -> usize {
        let expired: Vec<Idle> = {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for (name, pool) in map.iter_mut() {
                let keep_for = self.policy.keep_alive(name);
                let (keep, drop): (Vec<Idle>, Vec<Idle>) = pool
                    .idle
                    .drain(..)
                    .partition(|i| i.since.elapsed() < keep_for && i.instance.is_usable());
                pool.idle = keep;
                out.extend(drop);
            }
            out
        };
        let n = expired.len();
        for idle in expired {
            idle.instance.shutdown().await;
        }
        n
    }

    /// Drops every idle instance of a function (deleted or redeployed).
    pub async fn evict(&self, function: &str) {
        let idle = {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            map.get_mut(function)
                .map(|p| std::mem::take(&mut p.idle))
                .unwrap_or_default()
        };
        for i in idle {
            i.instance.shutdown().await;
        }
    }

    /// Idle instances per function, for status output.
    pub fn idle_counts(&self) -> Vec<(String, usize)> {
        let map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, p)| (k.clone(), p.idle.len())).collect();
        v.sort();
        v
    }
}
