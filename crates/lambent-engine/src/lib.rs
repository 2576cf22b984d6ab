//! Lambent's engine: the router, the dispatcher and the instance pool, composed over
//! the stores and a runtime. The control API and the CLI talk only to [`Engine`].
//!
//! An event's path: `publish` (validate, route to targets, append durably with its
//! deliveries) → the dispatcher pulls due deliveries per function under a lease →
//! `invoke_version` checks an instance out of the pool and runs it → the invocation
//! is recorded → the delivery is acked, retried later (nak with backoff), or
//! dead-lettered (terminate).

mod aliases;
mod destinations;
mod dispatcher;
mod error;
mod events;
mod function_url;
mod functions;
mod host_services;
mod invoke;
pub mod keepalive;
pub mod kv;
mod learned;
pub mod pool;
mod records;
mod retention;
pub mod router;
pub mod routes;
mod run_to_end;
pub mod schedules;
mod sources;
mod tokens;

pub use aliases::AliasRequest;
pub use error::{EngineError, Result};
pub use events::{PublishResult, RuleRequest};
pub use functions::{DeployRequest, check_tags};
pub use invoke::{IDEMPOTENCY_WINDOW, Invocation, InvokeOptions};
pub use kv::{KvRequest, KvResult};
pub use retention::Compacted;
pub use routes::{HttpRequest, HttpResponse, MatchedRoute, RouteMatch};
pub use tokens::AuthError;

use keepalive::KeepAlivePolicy;
use lambent_runtime::Runtime;
use lambent_store::{FunctionVersion, Stores};
use pool::Pool;
use router::Router;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Limits and knobs of a node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest event (its JSON form), in bytes.
    pub max_event_bytes: usize,
    /// Largest synchronous invocation payload, in bytes.
    pub max_sync_payload_bytes: usize,
    /// Extra lease time beyond a function's timeout before a delivery is handed out again.
    pub lease_grace: Duration,
    /// How long settled deliveries, their events, and invocations with their logs are
    /// kept (`None`: for ever). Dead letters and undelivered events are never removed.
    pub retention: Option<Duration>,
    /// An event's `(source, id)` is remembered at least this long: a re-publish within
    /// it is a duplicate, whatever the retention.
    pub dedup_window: Duration,
    /// How often compaction runs.
    pub compaction_interval: Duration,
    /// The wall clock of schedules and key expiry (tests inject a manual one).
    pub clock: NodeClock,
    /// The most memory the node's instances may hold, in MB (`None`: no budget).
    pub memory_budget_mb: Option<u64>,
    /// How often what the keep-alive policies learned is saved while the node runs
    /// (also at drain): a node killed outright loses at most this much learning.
    pub learned_save_interval: Duration,
}

/// The node's clock, shared.
#[derive(Clone)]
pub struct NodeClock(pub Arc<dyn lambent_store::Clock>);

impl NodeClock {
    pub fn now_ms(&self) -> lambent_core::EpochMs {
        self.0.now_ms()
    }
}

impl std::fmt::Debug for NodeClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeClock")
    }
}

impl Default for NodeClock {
    fn default() -> Self {
        Self(Arc::new(lambent_store::SystemClock))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            max_sync_payload_bytes: 6 * 1024 * 1024,
            lease_grace: Duration::from_secs(30),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            dedup_window: Duration::from_secs(24 * 3600),
            compaction_interval: Duration::from_secs(60),
            clock: NodeClock::default(),
            memory_budget_mb: None,
            learned_save_interval: learned::SAVE_INTERVAL,
        }
    }
}

/// A running node's engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: EngineConfig,
    pub stores: Stores,
    pub pool: Pool,
    pub router: Router,
    /// Wakes the dispatcher: new deliveries, redrives, finished attempts.
    pub wake: Notify,
    /// Functions with a running pump (one per function), each with whether work
    /// was hinted while it ran (then it is started again when it ends).
    pub pumps: Mutex<HashMap<String, bool>>,
    /// Functions that got new due work (a publish, an async invoke, a deploy): the
    /// dispatcher starts their pumps without scanning the store.
    pub hints: Mutex<HashSet<String>>,
    /// When the dispatcher next scans the store for due work it was not told about
    /// (retries coming due, leases of a dead attempt running out), epoch ms.
    pub scan_at: std::sync::atomic::AtomicI64,
    /// The newest version of each function read so far; deploy and delete keep it
    /// current, so the hot path does not read the registry per attempt.
    pub latest: Mutex<FunctionCache>,
    /// Rule changes one at a time: each rebuilds the router from the registry, and two
    /// interleaved rebuilds could install the older rule set last.
    pub rules_lock: tokio::sync::Mutex<()>,
    /// Set once the node is stopping: no new attempts start.
    pub draining: std::sync::atomic::AtomicBool,
    /// Delivery attempts running now, and a wake-up for when one ends.
    pub attempts: std::sync::atomic::AtomicUsize,
    pub attempt_done: Notify,
    /// Writes synchronous invocations' records behind their answers.
    pub records: records::RecordWriter,
    /// Live tokens recently checked, by hash.
    pub tokens: Mutex<tokens::TokenCache>,
    /// The node's long-running tasks, watched by `health`.
    pub tasks: Mutex<Vec<(String, tokio::task::JoinHandle<()>)>>,
    /// Event types of key-value namespaces that have their own.
    pub kv_namespaces: Mutex<HashMap<String, lambent_store::KvNamespace>>,
    /// Wakes the scheduler when a schedule is added, changed or removed.
    pub schedules_changed: Notify,
    /// The HTTP routes, compiled; replaced whole on every change.
    pub route_table: std::sync::RwLock<Arc<Vec<routes::CompiledRoute>>>,
    pub routes_lock: tokio::sync::Mutex<()>,
    /// Synchronous calls by their clients' idempotency keys.
    pub idempotent: Mutex<invoke::Idempotent>,
    /// Wakes the source supervisor when a source is added, changed or removed.
    pub sources_changed: Notify,
    /// What each event source says of itself (connected, reconnecting: why).
    pub sources: Mutex<std::collections::BTreeMap<String, String>>,
}

/// The function cache. Its generation grows with every deploy and delete; a registry
/// read is cached only if no change happened while it was in flight, so a read that
/// raced a deploy can never put the version it saw back.
#[derive(Default)]
pub(crate) struct FunctionCache {
    generation: u64,
    entries: HashMap<String, FunctionVersion>,
}

impl Inner {
    /// The newest version of a function (`$LATEST`), from the cache or the registry.
    pub async fn latest_function(&self, name: &str) -> Result<Option<FunctionVersion>> {
        let generation = {
            let cache = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = cache.entries.get(name) {
                return Ok(Some(f.clone()));
            }
            cache.generation
        };
        let found = self.stores.registry.get_function(name, None).await?;
        if let Some(f) = &found {
            let mut cache = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            if cache.generation == generation {
                cache.entries.insert(name.to_owned(), f.clone());
            }
        }
        Ok(found)
    }

    /// Routes an event like any other and adds `direct` (a schedule's or a route's own
    /// target) unless a rule already sends it there.
    pub(crate) fn route_with(
        &self,
        event: &lambent_core::CloudEvent,
        direct: Option<&str>,
    ) -> Vec<lambent_store::Target> {
        let mut targets = self.router.route(event);
        if let Some(function) = direct
            && !targets.iter().any(|t| t.function == function)
        {
            targets.push(lambent_store::Target {
                function: function.to_owned(),
                mode: lambent_store::PayloadMode::CloudEvent,
            });
        }
        targets
    }

    /// `function` has new due work: have the dispatcher start its pump.
    pub fn hint(&self, function: &str) {
        self.hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(function.to_owned());
        self.wake.notify_one();
    }

    /// Have the dispatcher scan the store for due work no later than `at_ms`.
    pub fn scan_by(&self, at_ms: i64) {
        self.scan_at
            .fetch_min(at_ms, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Called after the registry changed a function (deploy, delete).
    pub fn forget_function(&self, name: &str) {
        let mut cache = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        cache.generation += 1;
        cache.entries.remove(name);
    }
}

impl Engine {
    /// Builds the engine, recovers leases left by a previous process, loads the rules,
    /// and starts the dispatcher and the pool's reaper.
    pub async fn start(
        config: EngineConfig,
        stores: Stores,
        runtime: Arc<dyn Runtime>,
        policy: Arc<dyn KeepAlivePolicy>,
    ) -> Result<Self> {
        let (records, record_writer) = records::RecordWriter::start(stores.invocations.clone());
        let budget = config.memory_budget_mb;
        let engine = Self {
            inner: Arc::new(Inner {
                config,
                stores,
                pool: Pool::new(runtime, policy).with_memory_budget(budget),
                router: Router::default(),
                wake: Notify::new(),
                pumps: Mutex::new(HashMap::new()),
                hints: Mutex::new(HashSet::new()),
                scan_at: std::sync::atomic::AtomicI64::new(0),
                latest: Mutex::new(FunctionCache::default()),
                rules_lock: tokio::sync::Mutex::new(()),
                draining: std::sync::atomic::AtomicBool::new(false),
                attempts: std::sync::atomic::AtomicUsize::new(0),
                attempt_done: Notify::new(),
                records,
                tasks: Mutex::new(Vec::new()),
                tokens: Mutex::new(tokens::TokenCache::default()),
                kv_namespaces: Mutex::new(HashMap::new()),
                schedules_changed: Notify::new(),
                route_table: std::sync::RwLock::new(Arc::new(Vec::new())),
                routes_lock: tokio::sync::Mutex::new(()),
                idempotent: Mutex::new(invoke::Idempotent::default()),
                sources_changed: Notify::new(),
                sources: Mutex::new(std::collections::BTreeMap::new()),
            }),
        };
        engine
            .inner
            .pool
            .set_host(lambent_runtime::host::Host(Arc::new(
                host_services::EngineHost(Arc::downgrade(&engine.inner)),
            )));
        engine.reload_rules().await?;
        engine.reload_routes().await?;
        engine.load_kv_namespaces().await?;
        engine.restore_learned().await?;
        let dispatcher = tokio::spawn(dispatcher::run(engine.inner.clone()));
        let reaper = Arc::downgrade(&engine.inner);
        let reaper = tokio::spawn(async move {
            let mut saved = tokio::time::Instant::now();
            loop {
                let Some(inner) = reaper.upgrade() else {
                    return;
                };
                inner.pool.reap().await;
                if saved.elapsed() >= inner.config.learned_save_interval {
                    inner.save_learned().await;
                    saved = tokio::time::Instant::now();
                }
                drop(inner);
                tokio::time::sleep(pool::REAP_INTERVAL).await;
            }
        });
        let compactor = tokio::spawn(retention::run(Arc::downgrade(&engine.inner)));
        let expiry = tokio::spawn(kv::run_expiry(Arc::downgrade(&engine.inner)));
        *engine.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()) = vec![
            ("dispatcher".into(), dispatcher),
            ("instance reaper".into(), reaper),
            ("compaction".into(), compactor),
            ("record writer".into(), record_writer),
            ("key expiry".into(), expiry),
        ];
        Ok(engine)
    }

    /// Stops starting delivery attempts (leases taken ahead are handed back
    /// uncharged), waits up to `grace` for the running ones to finish and settle,
    /// then stops idle instances. Returns how many attempts were still running.
    pub async fn drain(&self, grace: Duration) -> usize {
        use std::sync::atomic::Ordering;
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.wake.notify_waiters();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let done = self.inner.attempt_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.inner.attempts.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                break;
            }
        }
        self.inner.pool.evict_all().await;
        self.inner.records.flush().await;
        self.inner.save_learned().await;
        self.inner.attempts.load(Ordering::SeqCst)
    }

    /// Waits until the records of synchronous invocations answered so far are written.
    pub async fn flush_records(&self) {
        self.inner.records.flush().await;
    }

    /// Whether the node can do its work: its store takes writes and its background
    /// tasks run. The error says what stopped.
    pub fn health(&self) -> std::result::Result<(), String> {
        self.inner.stores.events.health()?;
        let tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (name, task) in tasks.iter() {
            if task.is_finished() {
                return Err(format!("the {name} task stopped"));
            }
        }
        Ok(())
    }

    /// Watches a long-running task of the node (an event source): `health` fails
    /// once it stops.
    pub fn supervise(&self, name: impl Into<String>, task: tokio::task::JoinHandle<()>) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.into(), task));
    }

    /// Records what an event source says of itself, for `status`.
    pub fn set_source_status(&self, source: &str, status: impl Into<String>) {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source.to_owned(), status.into());
    }

    pub fn source_statuses(&self) -> std::collections::BTreeMap<String, String> {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Idle (warm) instances per function.
    pub fn warm_instances(&self) -> Vec<(String, usize)> {
        self.inner.pool.idle_counts()
    }

    pub fn keep_alive_policy(&self) -> String {
        self.inner.pool.policy().name()
    }

    /// Each function's instance pool: size, keep-alive schedule, cold starts,
    /// pre-warms, evictions by reason.
    pub fn pool_status(&self) -> Vec<pool::PoolStatus> {
        self.inner.pool.status()
    }

    /// Deliveries by state (pending, leased, delivered, dead).
    pub async fn delivery_counts(&self) -> Result<Vec<(String, u64)>> {
        Ok(self.inner.stores.events.delivery_counts().await?)
    }

    /// How the event log grouped its writes into commits, where it does.
    pub fn write_stats(&self) -> Option<lambent_store::WriteStats> {
        self.inner.stores.events.write_stats()
    }

    /// The instances' memory against the node's budget.
    pub fn memory_status(&self) -> pool::MemoryStatus {
        self.inner.pool.memory()
    }
}
