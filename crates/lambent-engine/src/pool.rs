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
use tokio::sync::Notify;

struct Idle {
    version: u64,
    instance: Box<dyn Instance>,
    since: Instant,
}

struct FunctionPool {
    slots: Arc<Slots>,
    idle: Vec<Idle>,
}

/// A function's concurrency: its limit and how many slots are taken. One per
/// function for the node's life, so a redeploy that changes the limit still counts
/// the invocations of the old version that are running.
struct Slots {
    count: Mutex<SlotCount>,
    freed: Notify,
}

#[derive(Clone, Copy)]
struct SlotCount {
    limit: u32,
    busy: u32,
}

impl Slots {
    fn set_limit(&self, limit: u32) {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if c.limit != limit {
            c.limit = limit;
            drop(c);
            self.freed.notify_waiters();
        }
    }

    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if c.busy >= c.limit {
            return None;
        }
        c.busy += 1;
        Some(Slot {
            slots: self.clone(),
        })
    }
}

/// One of a function's `concurrency` slots; freed when dropped.
pub struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.count.lock().unwrap_or_else(|p| p.into_inner());
        c.busy = c.busy.saturating_sub(1);
        drop(c);
        self.slots.freed.notify_waiters();
    }
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
    /// The node's services for instances (set once the engine exists).
    host: std::sync::OnceLock<lambent_runtime::host::Host>,
}

impl Pool {
    pub fn new(runtime: Arc<dyn Runtime>, policy: Arc<dyn KeepAlivePolicy>) -> Self {
        Self {
            runtime,
            policy,
            functions: Mutex::new(HashMap::new()),
            host: std::sync::OnceLock::new(),
        }
    }

    /// Hands the node's services to every instance started from now on.
    pub fn set_host(&self, host: lambent_runtime::host::Host) {
        let _ = self.host.set(host);
    }

    /// The runtime (the node's registry of runtimes) instances are started with.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn policy(&self) -> &Arc<dyn KeepAlivePolicy> {
        &self.policy
    }

    /// The function's slots, with its limit as `spec` states it now.
    fn slots(&self, spec: &FunctionSpec) -> Arc<Slots> {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(spec.name.clone())
            .or_insert_with(|| FunctionPool {
                slots: Arc::new(Slots {
                    count: Mutex::new(SlotCount {
                        limit: spec.concurrency,
                        busy: 0,
                    }),
                    freed: Notify::new(),
                }),
                idle: Vec::new(),
            });
        entry.slots.set_limit(spec.concurrency);
        entry.slots.clone()
    }

    /// Waits for a concurrency slot of the function.
    pub async fn wait_slot(&self, spec: &FunctionSpec) -> Slot {
        let slots = self.slots(spec);
        loop {
            let freed = slots.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = slots.try_take() {
                return slot;
            }
            freed.await;
        }
    }

    /// A free concurrency slot of the function, if there is one now.
    pub fn try_slot(&self, spec: &FunctionSpec) -> Option<Slot> {
        self.slots(spec).try_take()
    }

    /// Slots of a function in use now.
    #[cfg(test)]
    fn busy(&self, function: &str) -> u32 {
        let map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        map.get(function)
            .map(|p| p.slots.count.lock().unwrap_or_else(|p| p.into_inner()).busy)
            .unwrap_or(0)
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
                host: self.host.get().cloned(),
            })
            .await?;
        Ok(Checkout {
            instance,
            version,
            cold: true,
            _slot: slot,
        })
    }

    /// The most recently used usable idle instance of `version`; unusable idle
    /// instances are handed back for shutdown. Idle instances of other versions stay:
    /// an alias may route between two versions. (A deploy evicts the function's idle
    /// instances; one of an older version checked in after it goes at keep-alive.)
    fn take_idle(&self, function: &str, version: u64) -> (Option<Box<dyn Instance>>, Vec<Idle>) {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pool) = map.get_mut(function) else {
            return (None, Vec::new());
        };
        let (usable, stale): (Vec<Idle>, Vec<Idle>) =
            pool.idle.drain(..).partition(|i| i.instance.is_usable());
        pool.idle = usable;
        let taken = pool
            .idle
            .iter()
            .rposition(|i| i.version == version)
            .map(|at| pool.idle.remove(at).instance);
        (taken, stale)
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

    /// Stops every idle instance (the node is stopping).
    pub async fn evict_all(&self) {
        let idle: Vec<Idle> = {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            map.values_mut().flat_map(|p| p.idle.drain(..)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::Fixed;
    use lambent_core::{FunctionSpec, RuntimeKind};
    use lambent_runtime::{Instance, InstanceConfig};

    struct NoRuntime;

    #[async_trait::async_trait]
    impl Runtime for NoRuntime {
        async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
            Err(RuntimeError::NoBootstrap {
                function: config.spec.name,
            })
        }
    }

    fn spec(concurrency: u32) -> FunctionSpec {
        FunctionSpec {
            role: None,
            on_failure: None,
            name: "f".into(),
            runtime: RuntimeKind::parse("provided").unwrap_or_else(|e| panic!("{e}")),
            handler: String::new(),
            memory_mb: 128,
            timeout_s: 3,
            env: Default::default(),
            concurrency,
            retry: Default::default(),
            description: String::new(),
            grants: Vec::new(),
        }
    }

    /// Finding 5: a redeploy that changes `concurrency` still counts the invocations
    /// that hold slots of the old limit.
    #[test]
    fn the_concurrency_limit_holds_across_a_limit_change() {
        let pool = Pool::new(Arc::new(NoRuntime), Arc::new(Fixed(Duration::from_secs(1))));
        let held = [pool.try_slot(&spec(2)), pool.try_slot(&spec(2))];
        assert!(held.iter().all(Option::is_some));
        assert!(pool.try_slot(&spec(2)).is_none());
        // Raised to 3: one more, not three more.
        let third = pool.try_slot(&spec(3));
        assert!(third.is_some());
        assert!(
            pool.try_slot(&spec(3)).is_none(),
            "old slots were not counted"
        );
        // Lowered to 1 while 3 run: none until only... fewer than one runs.
        drop(third);
        assert!(pool.try_slot(&spec(1)).is_none());
        drop(held);
        assert_eq!(pool.busy("f"), 0);
        let one = pool.try_slot(&spec(1));
        assert!(one.is_some());
        assert!(pool.try_slot(&spec(1)).is_none());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_freed_by_a_raised_limit() {
        let pool = Arc::new(Pool::new(
            Arc::new(NoRuntime),
            Arc::new(Fixed(Duration::from_secs(1))),
        ));
        let _held = pool.try_slot(&spec(1));
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.wait_slot(&spec(1)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // A redeploy raises the limit to 3 and takes one slot: the waiter, woken by
        // the change, gets the third (no slot was freed for it).
        let _redeployed = pool.try_slot(&spec(3));
        let got = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter was not woken by the raised limit");
        let _got = got.unwrap();
        assert_eq!(pool.busy("f"), 3);
    }
}
