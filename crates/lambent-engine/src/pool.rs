//! The instance pool: warm instances per function, reused across invocations; a cold
//! start only when none is idle; at most `concurrency` instances busy per function;
//! idle ones dropped, and pre-warmed, by the function's keep-alive policy (scale to
//! zero). The decisions are `lambent_scale::Warmth`'s — the state machine
//! `lambent simulate` runs — on a wall clock; this module holds the instances.

use crate::keepalive::KeepAlivePolicy;
use lambent_core::FunctionSpec;
use lambent_runtime::{Instance, InstanceConfig, Runtime, RuntimeError};
use lambent_scale::{
    Action, EvictReason, GreedyDual, Learned, Priority, Profile, Start, Warmth, WarmthStats,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
// tokio's clock: tests that pause time drive the pool's decisions in virtual time.
use tokio::sync::Notify;
use tokio::time::Instant;

struct Idle {
    version: u64,
    instance: Box<dyn Instance>,
    /// Its place in the memory budget's eviction order.
    priority: Priority,
}

/// What a pre-warm starts: the function as it was last invoked.
#[derive(Clone)]
struct Template {
    spec: FunctionSpec,
    version: u64,
    code_dir: PathBuf,
}

struct FunctionPool {
    slots: Arc<Slots>,
    warmth: Warmth,
    /// The spec's own policy and memory `warmth` was made for.
    made_for: (Option<String>, u32),
    /// The policy in force, for status output.
    policy_name: String,
    /// Idle instances that are running, by the id `warmth` knows them by (a pre-warm
    /// still starting is in `warmth` but not here yet).
    idle: HashMap<u64, Idle>,
    template: Option<Template>,
    /// Pre-warms `warmth` asked for that are not started yet.
    prewarms: Vec<u64>,
    /// How long a cold start of this function takes (a moving average), the cost
    /// the eviction order weighs.
    cold_start_ms: f64,
}

impl FunctionPool {
    /// Hands out `warmth`'s actions: instances to stop; pre-warms are queued.
    fn apply(&mut self, actions: &mut Vec<Action>, stop: &mut Vec<Box<dyn Instance>>) {
        for action in actions.drain(..) {
            match action {
                Action::Evict { id, .. } => {
                    self.prewarms.retain(|p| *p != id);
                    stop.extend(self.idle.remove(&id).map(|i| i.instance));
                }
                Action::Prewarm { id } => self.prewarms.push(id),
            }
        }
    }

    /// Drops idle instances that can no longer serve (their process died).
    fn drop_unusable(&mut self, now: u64, stop: &mut Vec<Box<dyn Instance>>) {
        let dead: Vec<u64> = self
            .idle
            .iter()
            .filter(|(_, i)| !i.instance.is_usable())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.warmth.remove(now, id, EvictReason::Unusable);
            stop.extend(self.idle.remove(&id).map(|i| i.instance));
        }
    }
}

/// Memory held by a function's instances: busy, idle, and pre-warms on their way.
fn in_use_mb(pool: &FunctionPool) -> u64 {
    (u64::from(pool.warmth.busy()) + pool.warmth.idle_count() as u64) * pool.warmth.memory_mb()
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
    busy: Busy,
    _slot: Slot,
}

type Functions = Mutex<HashMap<String, FunctionPool>>;

/// Milliseconds since `epoch`: the pool's clock (`Warmth` runs on milliseconds).
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An instance counted busy in its function's `Warmth` until checked in. One never
/// checked in (a panic, or a checkout whose future was dropped during its cold start)
/// is finished here as lost: otherwise the function stays counted busy, and a busy
/// function is never pre-warmed, until the node restarts.
struct Busy {
    functions: Weak<Functions>,
    epoch: Instant,
    function: String,
    id: u64,
    armed: bool,
}

impl Busy {
    /// Returned the normal way; gives the instance's id.
    fn disarm(mut self) -> u64 {
        self.armed = false;
        self.id
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(functions) = self.functions.upgrade() else {
            return;
        };
        let now = millis_since(self.epoch);
        let mut stop = Vec::new();
        {
            let mut map = functions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pool) = map.get_mut(&self.function) {
                let mut actions = Vec::new();
                pool.warmth.finish(now, self.id, false, &mut actions);
                pool.apply(&mut actions, &mut stop);
            }
        }
        // No await in a drop: the shutdowns run on their own (dropped, they are killed).
        if !stop.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                for old in stop {
                    old.shutdown().await;
                }
            });
        }
    }
}

/// How often idle instances are checked against the keep-alive policy (and due
/// pre-warms started).
pub const REAP_INTERVAL: Duration = Duration::from_millis(500);

/// A function's cold-start cost before one was measured.
const ASSUMED_COLD_START_MS: f64 = 100.0;

/// The node's memory budget, for status output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryStatus {
    /// The most memory instances (busy and idle) may hold; `None`: no budget.
    pub budget_mb: Option<u64>,
    pub in_use_mb: u64,
    /// The last eviction the budget forced, and why that instance.
    pub last_budget_eviction: Option<String>,
}

/// The eviction order and what it last chose.
#[derive(Default)]
struct Evictions {
    order: GreedyDual,
    last: Option<String>,
}

/// A function's pool, for status output and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolStatus {
    pub function: String,
    pub policy: String,
    /// The schedule in force, in words.
    pub schedule: String,
    pub idle: usize,
    pub busy: u32,
    pub invocations: u64,
    pub cold_starts: u64,
    pub prewarms: u64,
    pub evictions: std::collections::BTreeMap<&'static str, u64>,
    pub idle_memory_gb_s: f64,
    /// Idle times its policy has learned from (kept across restarts).
    pub idle_times_learned: u64,
}

pub struct Pool {
    runtime: Arc<dyn Runtime>,
    policy: Arc<dyn KeepAlivePolicy>,
    functions: Arc<Functions>,
    /// Time zero of the pool's clock (`Warmth` runs on milliseconds).
    epoch: Instant,
    budget_mb: Option<u64>,
    /// Locked after `functions` when both are.
    evictions: Mutex<Evictions>,
    /// The node's services for instances (set once the engine exists).
    host: std::sync::OnceLock<lambent_runtime::host::Host>,
}

impl Pool {
    pub fn new(runtime: Arc<dyn Runtime>, policy: Arc<dyn KeepAlivePolicy>) -> Self {
        Self {
            runtime,
            policy,
            functions: Arc::new(Mutex::new(HashMap::new())),
            epoch: Instant::now(),
            budget_mb: None,
            evictions: Mutex::new(Evictions::default()),
            host: std::sync::OnceLock::new(),
        }
    }

    /// Caps the memory of the node's instances, busy and idle: a start past it evicts
    /// idle instances, lowest Greedy-Dual priority first. Work is never refused for
    /// it — with nothing idle left the start goes ahead over the budget — but a
    /// pre-warm that does not fit is skipped.
    pub fn with_memory_budget(mut self, budget_mb: Option<u64>) -> Self {
        self.budget_mb = budget_mb;
        self
    }

    /// Evicts idle instances until the instances alive fit the budget; false if
    /// they still do not (nothing idle is left). `for_function` needs the room.
    fn make_room(
        &self,
        map: &mut HashMap<String, FunctionPool>,
        now: u64,
        for_function: &str,
        stop: &mut Vec<Box<dyn Instance>>,
    ) -> bool {
        let Some(budget) = self.budget_mb else {
            return true;
        };
        let mut used: u64 = map.values().map(in_use_mb).sum();
        let mut evictions = self.evictions.lock().unwrap_or_else(|p| p.into_inner());
        while used > budget {
            let candidates = map.iter().flat_map(|(name, p)| {
                p.idle
                    .iter()
                    .map(move |(id, i)| ((name.as_str(), *id), i.priority))
            });
            let Some(((name, id), priority)) = evictions.order.choose(candidates) else {
                return false;
            };
            let name = name.to_string();
            let Some(pool) = map.get_mut(&name) else {
                return false;
            };
            pool.warmth.remove(now, id, EvictReason::Budget);
            stop.extend(pool.idle.remove(&id).map(|i| i.instance));
            used = used.saturating_sub(pool.warmth.memory_mb());
            let why = format!(
                "an idle instance of `{name}` made room for `{for_function}` ({priority}: the lowest of the idle instances)"
            );
            tracing::info!(budget_mb = budget, "memory budget: {why}");
            evictions.last = Some(why);
        }
        true
    }

    /// The eviction priority of an instance of `pool`'s function going idle now.
    fn priority(&self, pool: &FunctionPool) -> Priority {
        let evictions = self.evictions.lock().unwrap_or_else(|p| p.into_inner());
        evictions.order.priority(
            pool.warmth.stats().arrivals,
            pool.cold_start_ms,
            pool.made_for.1,
        )
    }

    /// The node's memory: budget, use, the last eviction it forced.
    pub fn memory(&self) -> MemoryStatus {
        let in_use_mb = {
            let map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            map.values().map(in_use_mb).sum()
        };
        let last = self
            .evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone();
        MemoryStatus {
            budget_mb: self.budget_mb,
            in_use_mb,
            last_budget_eviction: last,
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

    /// The node's default keep-alive policy.
    pub fn policy(&self) -> &Arc<dyn KeepAlivePolicy> {
        &self.policy
    }

    fn now(&self) -> u64 {
        millis_since(self.epoch)
    }

    /// The policy for `spec`: its own if it names one, else the node's.
    fn policy_for(&self, spec: &FunctionSpec) -> Arc<dyn KeepAlivePolicy> {
        self.policy_named(&spec.name, spec.keep_alive.as_deref())
    }

    /// The policy a function's spec names (`keep_alive`), else the node's.
    fn policy_named(&self, function: &str, keep_alive: Option<&str>) -> Arc<dyn KeepAlivePolicy> {
        match keep_alive.map(lambent_scale::parse_policy) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::warn!(%function, error = %e, "using the node's keep-alive policy");
                self.policy.clone()
            }
            None => self.policy.clone(),
        }
    }

    /// Forgets a deleted function (after `evict`): its pool goes once nothing of it
    /// is busy or idle — a call still running keeps it, for its slot's count — and
    /// what its policy learned goes either way. A node whose functions come and go
    /// then holds nothing for the gone ones.
    pub fn forget(&self, function: &str) {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pool) = map.get_mut(function) else {
            return;
        };
        let slots_busy = pool
            .slots
            .count
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .busy;
        if slots_busy == 0
            && pool.warmth.busy() == 0
            && pool.idle.is_empty()
            && pool.warmth.idle_count() == 0
        {
            map.remove(function);
            return;
        }
        let (keep_alive, memory_mb) = pool.made_for.clone();
        let policy = self
            .policy_named(function, keep_alive.as_deref())
            .for_function(Profile { memory_mb });
        pool.warmth.unlearn(policy);
    }

    /// Runs `f` on the function's pool, made (or its policy remade) for `spec`.
    fn with_function<T>(&self, spec: &FunctionSpec, f: impl FnOnce(&mut FunctionPool) -> T) -> T {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(spec.name.clone()).or_insert_with(|| {
            let policy = self.policy_for(spec);
            FunctionPool {
                slots: Arc::new(Slots {
                    count: Mutex::new(SlotCount {
                        limit: spec.concurrency,
                        busy: 0,
                    }),
                    freed: Notify::new(),
                }),
                warmth: Warmth::new(
                    policy.for_function(Profile {
                        memory_mb: spec.memory_mb,
                    }),
                    spec.memory_mb,
                ),
                made_for: (spec.keep_alive.clone(), spec.memory_mb),
                policy_name: policy.name(),
                idle: HashMap::new(),
                template: None,
                prewarms: Vec::new(),
                cold_start_ms: ASSUMED_COLD_START_MS,
            }
        });
        // The policy is parsed and made only when the spec's policy or memory changed,
        // not on every call (this runs several times per invocation).
        if entry.made_for.0 != spec.keep_alive || entry.made_for.1 != spec.memory_mb {
            let policy = self.policy_for(spec);
            entry.warmth.set_policy(
                policy.for_function(Profile {
                    memory_mb: spec.memory_mb,
                }),
                spec.memory_mb,
            );
            entry.made_for = (spec.keep_alive.clone(), spec.memory_mb);
            entry.policy_name = policy.name();
        }
        entry.slots.set_limit(spec.concurrency);
        f(entry)
    }

    /// Waits for a concurrency slot of the function.
    pub async fn wait_slot(&self, spec: &FunctionSpec) -> Slot {
        let slots = self.with_function(spec, |p| p.slots.clone());
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
        self.with_function(spec, |p| p.slots.try_take())
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
        let now = self.now();
        let mut stop = Vec::new();
        let (start, warm) = self.with_function(spec, |pool| {
            pool.template = Some(Template {
                spec: spec.clone(),
                version,
                code_dir: code_dir.clone(),
            });
            pool.drop_unusable(now, &mut stop);
            let mut actions = Vec::new();
            // Idle instances of other versions stay: an alias may route between two.
            let idle = &pool.idle;
            let start = pool.warmth.arrive(
                now,
                |id| idle.get(&id).is_some_and(|i| i.version == version),
                &mut actions,
            );
            pool.apply(&mut actions, &mut stop);
            let warm = match start {
                Start::Warm(id) => pool.idle.remove(&id),
                Start::Cold(_) => None,
            };
            (start, warm)
        });
        let (Start::Warm(id) | Start::Cold(id)) = start;
        let busy = Busy {
            functions: Arc::downgrade(&self.functions),
            epoch: self.epoch,
            function: spec.name.clone(),
            id,
            armed: true,
        };
        if warm.is_none() {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            self.make_room(&mut map, now, &spec.name, &mut stop);
        }
        for old in stop {
            old.shutdown().await;
        }
        if let Some(idle) = warm {
            return Ok(Checkout {
                instance: idle.instance,
                version,
                cold: false,
                busy,
                _slot: slot,
            });
        }
        let clock = Instant::now();
        let started = self
            .runtime
            .start(InstanceConfig {
                spec: spec.clone(),
                version,
                code_dir,
                host: self.host.get().cloned(),
            })
            .await;
        if started.is_ok() {
            let ms = clock.elapsed().as_secs_f64() * 1000.0;
            self.with_function(spec, |pool| {
                pool.cold_start_ms = 0.7 * pool.cold_start_ms + 0.3 * ms;
            });
        }
        match started {
            Ok(instance) => Ok(Checkout {
                instance,
                version,
                cold: true,
                busy,
                _slot: slot,
            }),
            Err(e) => {
                self.finished(spec, busy.disarm(), None).await;
                Err(e)
            }
        }
    }

    /// Returns an instance after an invocation; an unusable one is shut down.
    pub async fn checkin(&self, spec: &FunctionSpec, checkout: Checkout) {
        let Checkout {
            instance,
            version,
            busy,
            ..
        } = checkout;
        let id = busy.disarm();
        let usable = instance.is_usable().then_some((version, instance));
        self.finished(spec, id, usable).await;
    }

    /// Instance `id` of the function is no longer busy; `idle` is kept if given.
    async fn finished(&self, spec: &FunctionSpec, id: u64, idle: Option<(u64, Box<dyn Instance>)>) {
        let now = self.now();
        let mut stop = Vec::new();
        self.with_function(spec, |pool| {
            let mut actions = Vec::new();
            pool.warmth.finish(now, id, idle.is_some(), &mut actions);
            if let Some((version, instance)) = idle {
                let priority = self.priority(pool);
                pool.idle.insert(
                    id,
                    Idle {
                        version,
                        instance,
                        priority,
                    },
                );
            }
            pool.apply(&mut actions, &mut stop);
        });
        for old in stop {
            old.shutdown().await;
        }
    }

    /// Drops idle instances the policy no longer keeps and starts the pre-warms it
    /// asks for; returns how many were dropped.
    pub async fn reap(&self) -> usize {
        let now = self.now();
        let mut stop = Vec::new();
        let mut prewarm: Vec<(u64, Template)> = Vec::new();
        {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            for pool in map.values_mut() {
                pool.drop_unusable(now, &mut stop);
                let mut actions = Vec::new();
                pool.warmth.advance(now, &mut actions);
                pool.apply(&mut actions, &mut stop);
                match &pool.template {
                    Some(t) => prewarm.extend(pool.prewarms.drain(..).map(|id| (id, t.clone()))),
                    None => {
                        for id in pool.prewarms.drain(..) {
                            pool.warmth.remove(now, id, EvictReason::Replaced);
                        }
                    }
                }
            }
        }
        let mut n = stop.len();
        for old in stop {
            old.shutdown().await;
        }
        for (id, t) in prewarm {
            let mut stop = Vec::new();
            let fits = {
                let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
                let fits = self.make_room(&mut map, now, &t.spec.name, &mut stop);
                if !fits && let Some(pool) = map.get_mut(&t.spec.name) {
                    pool.warmth.remove(now, id, EvictReason::Budget);
                }
                fits
            };
            n += stop.len();
            for old in stop {
                old.shutdown().await;
            }
            if fits {
                self.prewarm(id, t).await;
            }
        }
        n
    }

    /// Starts a pre-warmed instance and keeps it idle under `id`, unless the policy
    /// dropped that id while it started.
    async fn prewarm(&self, id: u64, t: Template) {
        let started = self
            .runtime
            .start(InstanceConfig {
                spec: t.spec.clone(),
                version: t.version,
                code_dir: t.code_dir.clone(),
                host: self.host.get().cloned(),
            })
            .await;
        let now = self.now();
        let surplus = {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            let pool = map.get_mut(&t.spec.name);
            match (started, pool) {
                (Ok(instance), Some(pool)) if pool.warmth.idle().any(|(i, _)| i == id) => {
                    let priority = self.priority(pool);
                    pool.idle.insert(
                        id,
                        Idle {
                            version: t.version,
                            instance,
                            priority,
                        },
                    );
                    None
                }
                (Ok(instance), _) => Some(instance),
                (Err(e), pool) => {
                    tracing::warn!(function = %t.spec.name, error = %e, "pre-warm failed");
                    if let Some(pool) = pool {
                        pool.warmth.remove(now, id, EvictReason::Unusable);
                    }
                    None
                }
            }
        };
        if let Some(instance) = surplus {
            instance.shutdown().await;
        }
    }

    /// Drops every idle instance of a function (deleted or redeployed); pre-warms
    /// wait for its next invocation.
    pub async fn evict(&self, function: &str) {
        let now = self.now();
        let idle: Vec<Idle> = {
            let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            match map.get_mut(function) {
                Some(pool) => {
                    pool.warmth.drain(now, EvictReason::Replaced);
                    pool.template = None;
                    pool.prewarms.clear();
                    pool.idle.drain().map(|(_, i)| i).collect()
                }
                None => Vec::new(),
            }
        };
        for i in idle {
            i.instance.shutdown().await;
        }
    }

    /// Stops every idle instance (the node is stopping).
    pub async fn evict_all(&self) {
        let names: Vec<String> = {
            let map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
            map.keys().cloned().collect()
        };
        for name in names {
            self.evict(&name).await;
        }
    }

    /// What each function's policy learned since this was last asked (only the
    /// functions whose policy learned something since): what the node saves.
    pub fn learned_changes(&self) -> Vec<(String, Learned)> {
        let mut map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        map.iter_mut()
            .filter_map(|(name, p)| Some((name.clone(), p.warmth.learned_changed()?)))
            .collect()
    }

    /// Hands the function's policy what it learned before (a restart); false if the
    /// policy in force now is of another kind.
    pub fn relearn(&self, spec: &FunctionSpec, learned: &Learned) -> bool {
        self.with_function(spec, |p| p.warmth.relearn(learned))
    }

    /// Idle instances per function, for status output.
    pub fn idle_counts(&self) -> Vec<(String, usize)> {
        let map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, p)| (k.clone(), p.idle.len())).collect();
        v.sort();
        v
    }

    /// Each function's pool: size, policy, schedule, counters.
    pub fn status(&self) -> Vec<PoolStatus> {
        let map = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<PoolStatus> = map
            .iter()
            .map(|(name, p)| {
                let s: &WarmthStats = p.warmth.stats();
                PoolStatus {
                    function: name.clone(),
                    policy: p.policy_name.clone(),
                    schedule: p.warmth.plan().to_string(),
                    idle: p.idle.len(),
                    busy: p.warmth.busy(),
                    invocations: s.arrivals,
                    cold_starts: s.cold_starts,
                    prewarms: s.prewarms,
                    evictions: EvictReason::ALL
                        .iter()
                        .map(|r| (r.as_str(), s.evictions(*r)))
                        .collect(),
                    idle_memory_gb_s: s.wasted_mb_ms as f64 / 1024.0 / 1000.0,
                    idle_times_learned: p.warmth.idle_times_learned(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.function.cmp(&b.function));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::Fixed;
    use lambent_core::{FunctionSpec, RuntimeKind};
    use lambent_runtime::{Instance, InstanceConfig};
    use lambent_runtime::{InvokeRequest, InvokeResult};
    use lambent_scale::{FunctionPolicy, Schedule};
    use std::sync::atomic::{AtomicU32, Ordering};

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
            keep_alive: None,
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
        let pool = Pool::new(Arc::new(NoRuntime), Arc::new(Fixed::new(1000)));
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
        let pool = Arc::new(Pool::new(Arc::new(NoRuntime), Arc::new(Fixed::new(1000))));
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

    /// A runtime whose instances answer nothing but count their starts.
    #[derive(Default)]
    struct Counting(Arc<AtomicU32>);

    struct Idle;

    #[async_trait::async_trait]
    impl Instance for Idle {
        async fn invoke(&mut self, _request: InvokeRequest) -> InvokeResult {
            unreachable!("the pool never invokes")
        }
        fn is_usable(&self) -> bool {
            true
        }
        async fn shutdown(self: Box<Self>) {}
    }

    #[async_trait::async_trait]
    impl Runtime for Counting {
        async fn start(&self, _config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Idle))
        }
    }

    /// Evict at once, pre-warm 50 ms into the idle period for a minute.
    #[derive(Debug)]
    struct PrewarmSoon;

    impl KeepAlivePolicy for PrewarmSoon {
        fn name(&self) -> String {
            "prewarm-soon".into()
        }
        fn for_function(&self, _profile: Profile) -> Box<dyn FunctionPolicy> {
            struct F;
            impl FunctionPolicy for F {
                fn observe_idle(&mut self, _idle_ms: u64) {}
                fn schedule(&mut self) -> Schedule {
                    Schedule::from_windows([(50, 60_000)])
                }
            }
            Box::new(F)
        }
    }

    /// The live pool follows the policy's schedule: the finished instance goes at
    /// once, a pre-warm is started when its window opens, and it serves the next call.
    #[tokio::test]
    async fn the_pool_evicts_and_pre_warms_on_the_policys_schedule() {
        let starts = Arc::new(AtomicU32::new(0));
        let pool = Pool::new(Arc::new(Counting(starts.clone())), Arc::new(PrewarmSoon));
        let f = spec(2);
        let slot = pool.try_slot(&f).unwrap();
        let c = pool.checkout(slot, &f, 1, PathBuf::new()).await.unwrap();
        assert!(c.cold);
        pool.checkin(&f, c).await;
        assert_eq!(pool.idle_counts(), vec![("f".into(), 0)], "evicted at once");
        // The window opens 50 ms into the idle period (a wait, not a speed claim).
        tokio::time::sleep(Duration::from_millis(120)).await;
        pool.reap().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the pre-warm started");
        assert_eq!(pool.idle_counts(), vec![("f".into(), 1)]);
        let slot = pool.try_slot(&f).unwrap();
        let c = pool.checkout(slot, &f, 1, PathBuf::new()).await.unwrap();
        assert!(!c.cold, "the pre-warmed instance served the call");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        let status = &pool.status()[0];
        assert_eq!(
            (status.invocations, status.cold_starts, status.prewarms),
            (2, 1, 1)
        );
        assert_eq!(status.evictions["expired"], 1);
        assert_eq!(status.busy, 1);
        // A deploy drops the function's idle instances and its pre-warm template.
        pool.checkin(&f, c).await;
        pool.evict("f").await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        pool.reap().await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "no pre-warm of a replaced version"
        );
    }

    /// A runtime whose starts never finish.
    struct Stuck;

    #[async_trait::async_trait]
    impl Runtime for Stuck {
        async fn start(&self, _config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
            std::future::pending().await
        }
    }

    /// A checkout that is never checked in (dropped by a panic, or a future dropped
    /// during its cold start) leaves the function busy no longer: a busy function is
    /// never pre-warmed. The pre-warm policy shows it: after each lost checkout the
    /// pre-warm comes as it would after a checkin.
    #[tokio::test]
    async fn a_checkout_never_checked_in_is_not_counted_busy_for_ever() {
        let starts = Arc::new(AtomicU32::new(0));
        let pool = Pool::new(Arc::new(Counting(starts.clone())), Arc::new(PrewarmSoon));
        let f = spec(2);
        let slot = pool.try_slot(&f).unwrap();
        let lost = pool.checkout(slot, &f, 1, PathBuf::new()).await.unwrap();
        assert_eq!(pool.status()[0].busy, 1);
        drop(lost);
        assert_eq!(pool.status()[0].busy, 0);
        assert_eq!(pool.status()[0].evictions["unusable"], 1);
        // The window opens 50 ms into the idle period (a wait, not a speed claim).
        tokio::time::sleep(Duration::from_millis(120)).await;
        pool.reap().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "the pre-warm started");

        let stuck = Pool::new(Arc::new(Stuck), Arc::new(Fixed::new(60_000)));
        let slot = stuck.try_slot(&f).unwrap();
        let starting = stuck.checkout(slot, &f, 1, PathBuf::new());
        tokio::select! {
            biased;
            _ = starting => unreachable!("a stuck start never ends"),
            _ = tokio::task::yield_now() => {}
        }
        assert_eq!(
            stuck.status()[0].busy,
            0,
            "the dropped cold start is not busy"
        );
        assert_eq!(stuck.busy("f"), 0, "and its slot is free");
    }

    /// A deleted function's pool goes once nothing of it runs; while a call holds a
    /// slot it stays (the slot's count holds), and goes with the next forget.
    #[tokio::test]
    async fn a_deleted_functions_pool_is_forgotten_once_idle() {
        let pool = Pool::new(Arc::new(Counting::default()), Arc::new(Fixed::new(60_000)));
        let f = spec(2);
        let slot = pool.try_slot(&f).unwrap();
        let c = pool.checkout(slot, &f, 1, PathBuf::new()).await.unwrap();
        pool.checkin(&f, c).await;
        let held = pool.try_slot(&f).unwrap();
        pool.evict("f").await;
        pool.forget("f");
        assert_eq!(pool.status().len(), 1, "kept while a call holds a slot");
        assert_eq!(pool.busy("f"), 1);
        drop(held);
        pool.forget("f");
        assert!(pool.status().is_empty(), "{:?}", pool.status());
    }

    fn spec_named(name: &str) -> FunctionSpec {
        FunctionSpec {
            name: name.into(),
            ..spec(10)
        }
    }

    async fn call(pool: &Pool, f: &FunctionSpec) -> bool {
        let slot = pool.try_slot(f).unwrap();
        let c = pool.checkout(slot, f, 1, PathBuf::new()).await.unwrap();
        let cold = c.cold;
        pool.checkin(f, c).await;
        cold
    }

    /// Past the memory budget a start evicts the idle instance least worth keeping
    /// (fewest calls for its cold-start cost and size), and says why.
    #[tokio::test]
    async fn the_memory_budget_evicts_the_idle_instance_least_worth_keeping() {
        let starts = Arc::new(AtomicU32::new(0));
        let pool = Pool::new(
            Arc::new(Counting(starts.clone())),
            Arc::new(Fixed::new(600_000)),
        )
        .with_memory_budget(Some(256));
        let (often, once, new) = (spec_named("often"), spec_named("once"), spec_named("new"));
        for _ in 0..3 {
            call(&pool, &often).await;
        }
        call(&pool, &once).await;
        assert_eq!(pool.memory().in_use_mb, 256);
        assert!(pool.memory().last_budget_eviction.is_none());
        // A third function's start needs 128 MB more: `once` goes, `often` stays.
        assert!(call(&pool, &new).await);
        let idle: std::collections::BTreeMap<String, usize> =
            pool.idle_counts().into_iter().collect();
        assert_eq!((idle["often"], idle["once"], idle["new"]), (1, 0, 1));
        let status = pool.status();
        let once_status = status.iter().find(|s| s.function == "once").unwrap();
        assert_eq!(once_status.evictions["memory_budget"], 1);
        let why = pool.memory().last_budget_eviction.unwrap();
        assert!(
            why.contains("`once` made room for `new`") && why.contains("1 calls"),
            "{why}"
        );
        assert!(!call(&pool, &often).await, "the frequent one stayed warm");
        // Three starts at once: the idle two make room for the first two; with
        // nothing idle left the third still goes ahead, over the budget.
        let (a, b, c) = (spec_named("a"), spec_named("b"), spec_named("c"));
        let held: Vec<Checkout> = hold_all(&pool, [&a, &b, &c]).await;
        assert_eq!(pool.memory().in_use_mb, 3 * 128);
        for (f, c) in [&a, &b, &c].into_iter().zip(held) {
            pool.checkin(f, c).await;
        }
    }

    async fn hold_all(pool: &Pool, specs: [&FunctionSpec; 3]) -> Vec<Checkout> {
        let mut held = Vec::new();
        for f in specs {
            let slot = pool.try_slot(f).unwrap();
            held.push(pool.checkout(slot, f, 1, PathBuf::new()).await.unwrap());
        }
        held
    }

    /// One implementation: the live pool, driven on tokio's paused clock, and
    /// `lambent simulate`'s replay of the same calls decide alike — the same cold
    /// starts, pre-warms and idle memory — because both run `Warmth` and the policy.
    #[tokio::test(start_paused = true)]
    async fn the_live_pool_and_the_simulator_decide_alike() {
        use lambent_scale::sim::{Arrivals, simulate_function};
        use lambent_scale::trace::TraceFunction;
        // A timer every 7 minutes, then a quiet hour, then every 3 minutes; 2 s runs.
        let per_minute: Vec<u32> = (0..300)
            .map(|m| u32::from((m < 150 && m % 7 == 0) || (m >= 210 && m % 3 == 0)))
            .collect();
        let traced = TraceFunction {
            key: "o/a/f".into(),
            trigger: "timer".into(),
            per_minute: per_minute.clone(),
            duration_ms: 2000.0,
            memory_mb: 256,
        };
        for spec_text in ["mdp:cost-ratio=10", "histogram", "fixed:5m"] {
            let policy = crate::keepalive::parse_policy(spec_text).unwrap();
            let simulated =
                simulate_function(&traced, policy.as_ref(), Arrivals::Equidistant, 1, 0);
            let pool = Pool::new(Arc::new(Counting::default()), policy);
            let f = FunctionSpec {
                memory_mb: 256,
                ..spec(1)
            };
            let start = Instant::now();
            let elapsed = || start.elapsed().as_millis() as u64;
            for (m, _) in per_minute.iter().enumerate().filter(|(_, n)| **n > 0) {
                // Equidistant: a minute's one call comes 30 s into it.
                let at = m as u64 * 60_000 + 30_000;
                while elapsed() + 500 <= at {
                    tokio::time::sleep(REAP_INTERVAL).await;
                    pool.reap().await;
                }
                tokio::time::sleep(Duration::from_millis(at - elapsed())).await;
                let slot = pool.try_slot(&f).unwrap();
                let c = pool.checkout(slot, &f, 1, PathBuf::new()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2000)).await;
                pool.checkin(&f, c).await;
            }
            // The replay runs to the trace's end (pre-warms due before it count).
            while elapsed() + 500 <= per_minute.len() as u64 * 60_000 {
                tokio::time::sleep(REAP_INTERVAL).await;
                pool.reap().await;
            }
            let live = &pool.status()[0];
            assert_eq!(
                (live.invocations, live.cold_starts, live.prewarms),
                (
                    simulated.arrivals,
                    simulated.cold_starts,
                    simulated.prewarms
                ),
                "{spec_text}: live {live:?}, simulated {simulated:?}"
            );
            assert!(simulated.prewarms > 0 || !spec_text.starts_with("mdp"));
        }
    }
}
