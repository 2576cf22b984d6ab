//! Engine invariants under races, with a fake runtime and registries that stall on
//! cue (no sleep decides an outcome).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use lambent_core::{CloudEvent, FunctionSpec};
use lambent_engine::keepalive::Fixed;
use lambent_engine::{DeployRequest, Engine, EngineConfig, RuleRequest};
use lambent_runtime::{Instance, InstanceConfig, Runtime, RuntimeError};
use lambent_sqlite::{FsCodeStore, SqliteStore};
use lambent_store::{
    DeadLetter, Delivery, Due, EventLog, Fetch, FunctionVersion, LeaseRef, NewEvent,
    PublishOutcome, Redrive, Registry, Result, Rule, Settlement, StoreError, StoredCode,
    StoredEvent, Stores,
};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A runtime that never starts anything (these tests do not invoke); it says it
/// collected one thing each time it is asked, which compaction reports.
struct NoRuntime;

#[async_trait]
impl Runtime for NoRuntime {
    async fn start(
        &self,
        config: InstanceConfig,
    ) -> std::result::Result<Box<dyn Instance>, RuntimeError> {
        Err(RuntimeError::NoBootstrap {
            function: config.spec.name,
        })
    }
    async fn collect(&self, _unused_for: Duration) -> usize {
        1
    }
}

/// The SQLite registry, whose first armed read stalls *after* reading until released.
struct GatedRegistry {
    inner: SqliteStore,
    gate_get: AtomicBool,
    gate_list: AtomicBool,
    entered: Notify,
    release: Notify,
    /// Woken (never stored) when a rule-set rebuild has read the registry.
    rebuilt: Notify,
}

#[async_trait]
impl Registry for GatedRegistry {
    async fn put_function(&self, spec: FunctionSpec, code: StoredCode) -> Result<FunctionVersion> {
        self.inner.put_function(spec, code).await
    }
    async fn get_function(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Option<FunctionVersion>> {
        let found = self.inner.get_function(name, version).await;
        if self.gate_get.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        found
    }
    async fn list_functions(&self) -> Result<Vec<FunctionVersion>> {
        self.inner.list_functions().await
    }
    async fn list_versions(&self, name: &str) -> Result<Vec<FunctionVersion>> {
        self.inner.list_versions(name).await
    }
    async fn put_alias(&self, alias: lambent_store::Alias) -> Result<()> {
        self.inner.put_alias(alias).await
    }
    async fn get_alias(&self, function: &str, name: &str) -> Result<Option<lambent_store::Alias>> {
        self.inner.get_alias(function, name).await
    }
    async fn list_aliases(&self, function: &str) -> Result<Vec<lambent_store::Alias>> {
        self.inner.list_aliases(function).await
    }
    async fn delete_alias(&self, function: &str, name: &str) -> Result<bool> {
        self.inner.delete_alias(function, name).await
    }
    async fn set_tags(
        &self,
        function: &str,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        self.inner.set_tags(function, tags).await
    }
    async fn tags(&self, function: &str) -> Result<std::collections::BTreeMap<String, String>> {
        self.inner.tags(function).await
    }
    async fn delete_function(&self, name: &str) -> Result<bool> {
        self.inner.delete_function(name).await
    }
    async fn code_in_use(&self) -> Result<std::collections::HashSet<String>> {
        self.inner.code_in_use().await
    }
    async fn put_rule(&self, rule: Rule) -> Result<()> {
        self.inner.put_rule(rule).await
    }
    async fn list_rules(&self) -> Result<Vec<Rule>> {
        let found = self.inner.list_rules().await;
        if self.gate_list.swap(false, Ordering::SeqCst) {
            // Stall until the next rebuild has read, or (when rebuilds are serialised
            // and none can start meanwhile) a while.
            self.entered.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(300), self.rebuilt.notified()).await;
        } else {
            self.rebuilt.notify_waiters();
        }
        found
    }
    async fn delete_rule(&self, name: &str) -> Result<bool> {
        self.inner.delete_rule(name).await
    }
}

/// An engine on `stores` with default limits and a one-minute keep-alive.
async fn start(stores: Stores, runtime: Arc<dyn Runtime>) -> Engine {
    Engine::start(
        EngineConfig::default(),
        stores,
        runtime,
        Arc::new(Fixed::new(60_000)),
    )
    .await
    .unwrap()
}

/// The SQLite stores in `dir`, with `events` and `invocations` replaced where given.
fn sqlite_stores(
    dir: &std::path::Path,
    sqlite: &SqliteStore,
    events: Option<Arc<dyn EventLog>>,
    invocations: Option<Arc<dyn lambent_store::InvocationLog>>,
) -> Stores {
    let all = sqlite.stores(Arc::new(FsCodeStore::open(dir.join("code")).unwrap()));
    Stores {
        events: events.unwrap_or(all.events.clone()),
        invocations: invocations.unwrap_or(all.invocations.clone()),
        ..all
    }
}

fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(body).unwrap();
    w.finish().unwrap().into_inner()
}

struct Node {
    engine: Engine,
    registry: Arc<GatedRegistry>,
    _dir: tempfile::TempDir,
}

async fn node_with(events: Option<Arc<dyn EventLog>>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let registry = Arc::new(GatedRegistry {
        inner: sqlite.clone(),
        gate_get: AtomicBool::new(false),
        gate_list: AtomicBool::new(false),
        entered: Notify::new(),
        release: Notify::new(),
        rebuilt: Notify::new(),
    });
    let stores = Stores {
        registry: registry.clone(),
        ..sqlite_stores(dir.path(), &sqlite, events, None)
    };
    let engine = start(stores, Arc::new(NoRuntime)).await;
    Node {
        engine,
        registry,
        _dir: dir,
    }
}

/// A rule sending every event of type `t` to the function `echo`.
async fn route_every_event_to_echo(engine: &Engine) {
    engine
        .put_rule(RuleRequest {
            name: "all".into(),
            pattern: serde_json::json!({"type": ["t"]}),
            targets: vec!["echo".into()],
        })
        .await
        .unwrap();
}

fn deploy(name: &str, memory_mb: u32) -> DeployRequest {
    DeployRequest {
        name: name.into(),
        runtime: Some("provided".into()),
        memory_mb: Some(memory_mb),
        code_zip: Some(zip_of("bootstrap", b"#!/bin/sh\n")),
        ..DeployRequest::default()
    }
}

/// Finding 3: a registry read that raced a deploy must not put the old version back
/// into the function cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_deploy_cannot_cache_the_old_version() {
    let node = node_with(None).await;
    node.engine.deploy(deploy("f", 128)).await.unwrap();
    // The cache is empty after a deploy: the next read goes to the registry and stalls
    // there holding version 1.
    node.registry.gate_get.store(true, Ordering::SeqCst);
    let reader = {
        let engine = node.engine.clone();
        tokio::spawn(async move { engine.function("f").await.unwrap().version })
    };
    node.registry.entered.notified().await;
    let v2 = node.engine.deploy(deploy("f", 256)).await.unwrap();
    assert_eq!(v2.version, 2);
    node.registry.release.notify_one();
    assert_eq!(reader.await.unwrap(), 1, "the racing read saw version 1");
    let now = node.engine.function("f").await.unwrap();
    assert_eq!(now.version, 2, "the node runs version 2 after its deploy");
}

/// Finding 4: two rule changes at once must both be in the router afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rule_changes_keep_every_rule() {
    let node = node_with(None).await;
    node.engine.deploy(deploy("f", 128)).await.unwrap();
    node.engine.deploy(deploy("g", 128)).await.unwrap();
    let rule = |name: &str, ty: &str, target: &str| RuleRequest {
        name: name.into(),
        pattern: serde_json::json!({"type": [ty]}),
        targets: vec![target.into()],
    };
    // Rule a's rebuild reads [a] and stalls; rule b is added meanwhile.
    node.registry.gate_list.store(true, Ordering::SeqCst);
    let a = {
        let engine = node.engine.clone();
        let r = rule("a", "ta", "f");
        tokio::spawn(async move { engine.put_rule(r).await.unwrap() })
    };
    node.registry.entered.notified().await;
    node.engine.put_rule(rule("b", "tb", "g")).await.unwrap();
    a.await.unwrap();
    for (ty, id) in [("ta", "1"), ("tb", "2")] {
        let e = CloudEvent::builder(id, "/t", ty).build().unwrap();
        let out = node.engine.publish(vec![e]).await.unwrap();
        assert!(
            matches!(
                out[0].outcome,
                PublishOutcome::Accepted { deliveries: 1, .. }
            ),
            "an event of type {ty} reached no function: {:?}",
            out[0].outcome
        );
    }
}

/// An event log whose writes fail (a full disk) and that always has work due (or,
/// with `panic_on_due`, whose scan panics: a bug in the dispatcher's path).
#[derive(Default)]
struct FailingLog {
    fetches: AtomicUsize,
    reached: Notify,
    panic_on_due: bool,
}

const FETCHES: usize = 30;

#[async_trait]
impl EventLog for FailingLog {
    async fn publish(&self, _: Vec<NewEvent>) -> Result<Vec<PublishOutcome>> {
        Err(StoreError::NotCommitted("disk full".into()))
    }
    async fn fetch(&self, _: &str, _: Fetch) -> Result<Vec<Delivery>> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) + 1 == FETCHES {
            self.reached.notify_one();
        }
        Err(StoreError::NotCommitted("disk full".into()))
    }
    async fn due(&self) -> Result<Due> {
        assert!(!self.panic_on_due, "a bug in the dispatcher's scan");
        Ok(Due {
            functions: vec!["f".into()],
            next_ms: None,
        })
    }
    async fn settle(
        &self,
        _: LeaseRef,
        _: Settlement,
        _: Option<lambent_store::InvocationRecord>,
    ) -> Result<()> {
        Ok(())
    }
    async fn extend(&self, _: LeaseRef, _: i64) -> Result<()> {
        Ok(())
    }
    async fn release(&self, _: LeaseRef) -> Result<()> {
        Ok(())
    }
    async fn dead_letters(&self, _: Option<&str>, _: usize) -> Result<Vec<DeadLetter>> {
        Ok(Vec::new())
    }
    async fn redrive(&self, _: Redrive) -> Result<usize> {
        Ok(0)
    }
    async fn get_event(&self, _: &str, _: &str) -> Result<Option<StoredEvent>> {
        Ok(None)
    }
    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }
    async fn compact(&self, _: i64, _: usize) -> Result<usize> {
        Ok(0)
    }
}

/// Finding 16: while the store fails, the dispatcher backs off instead of spinning.
#[tokio::test(start_paused = true)]
async fn a_failing_store_is_retried_with_backoff_not_in_a_loop() {
    let log = Arc::new(FailingLog::default());
    let node = node_with(Some(log.clone())).await;
    let start = tokio::time::Instant::now();
    log.reached.notified().await;
    let took = start.elapsed();
    // Backoff doubles from 50 ms to 5 s: 30 failed fetches take well over a minute
    // of (virtual) time; a loop takes none.
    assert!(
        took >= Duration::from_secs(60),
        "{FETCHES} fetches in {took:?}"
    );
    drop(node);
}

/// Retention: code that no version references any more is removed; code in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_removes_unreferenced_code_only() {
    let node = node_with(None).await;
    let gone = node.engine.deploy(deploy("f", 128)).await.unwrap();
    let mut other = deploy("g", 128);
    other.code_zip = Some(zip_of("bootstrap", b"#!/bin/sh\necho g\n"));
    let kept = node.engine.deploy(other).await.unwrap();
    node.engine.delete_function("f").await.unwrap();
    let code = node.engine.stores().code.clone();
    assert!(code.tree(&gone.code_sha256).is_dir());
    let done = node
        .engine
        .compact(lambent_core::now_ms(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(done.code_packages, 1);
    assert_eq!(done.compiled_code, 1, "the runtimes were asked to collect");
    assert!(!code.tree(&gone.code_sha256).exists());
    assert!(code.tree(&kept.code_sha256).is_dir());
}

/// A runtime whose instances answer every invocation with its payload, counting them;
/// with a gate, each invocation first says it began (`entered`) and waits for a
/// permit of `open`.
#[derive(Clone, Default)]
struct EchoRuntime {
    invoked: Arc<AtomicUsize>,
    gate: Option<Gate>,
}

#[derive(Clone)]
struct Gate {
    entered: Arc<Notify>,
    open: Arc<tokio::sync::Semaphore>,
}

struct EchoInstance(EchoRuntime);

#[async_trait]
impl Instance for EchoInstance {
    async fn invoke(
        &mut self,
        request: lambent_runtime::InvokeRequest,
    ) -> lambent_runtime::InvokeResult {
        self.0.invoked.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.0.gate {
            gate.entered.notify_one();
            let _pass = gate.open.acquire().await;
        }
        lambent_runtime::InvokeResult {
            outcome: lambent_runtime::InvokeOutcome::Success(request.payload),
            logs: String::new(),
            duration: Duration::ZERO,
        }
    }
    fn is_usable(&self) -> bool {
        true
    }
    async fn shutdown(self: Box<Self>) {}
}

#[async_trait]
impl Runtime for EchoRuntime {
    async fn start(
        &self,
        _: InstanceConfig,
    ) -> std::result::Result<Box<dyn Instance>, RuntimeError> {
        Ok(Box::new(EchoInstance(self.clone())))
    }
}

/// An invocation log whose writes wait until released.
struct StalledInvocations {
    inner: SqliteStore,
    open: tokio::sync::Semaphore,
}

#[async_trait]
impl lambent_store::InvocationLog for StalledInvocations {
    async fn record(&self, r: lambent_store::InvocationRecord) -> Result<()> {
        let _pass = self.open.acquire().await;
        self.inner.record(r).await
    }
    async fn list_invocations(
        &self,
        q: lambent_store::InvocationQuery,
    ) -> Result<Vec<lambent_store::InvocationRecord>> {
        self.inner.list_invocations(q).await
    }
    async fn compact(&self, before: i64, max: usize) -> Result<usize> {
        lambent_store::InvocationLog::compact(&self.inner, before, max).await
    }
}

/// The invocation records of `function` (the listing flushes records written behind).
async fn records_of(engine: &Engine, function: &str) -> Vec<lambent_store::InvocationRecord> {
    engine
        .invocations(lambent_store::InvocationQuery {
            function: Some(function.into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Finding 13: a synchronous invoke answers without waiting for its record's write;
/// the record lands once the store takes it, and a listing reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_invoke_does_not_wait_for_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let invocations = Arc::new(StalledInvocations {
        inner: sqlite.clone(),
        open: tokio::sync::Semaphore::new(0),
    });
    let stores = sqlite_stores(dir.path(), &sqlite, None, Some(invocations.clone()));
    let engine = start(stores, Arc::new(EchoRuntime::default())).await;
    engine.deploy(deploy("echo", 128)).await.unwrap();
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        engine.invoke("echo", bytes::Bytes::from_static(b"42"), Default::default()),
    )
    .await
    .expect("the invoke waited for its record's write")
    .unwrap();
    assert_eq!(answered.payload, bytes::Bytes::from_static(b"42"));
    invocations.open.add_permits(1000);
    let listed = records_of(&engine, "echo").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request_id, answered.record.request_id);
}

/// The SQLite event log, counting what passes through it: global scans, fetches,
/// deliveries leased and settled. The fetch numbered `stall_fetch` (from 0) waits
/// until `open` has permits, noting first how many leased deliveries had not
/// started (`invoked` counts the starts).
struct WatchedLog {
    inner: SqliteStore,
    scans: AtomicUsize,
    fetches: AtomicUsize,
    leased: AtomicUsize,
    settled: AtomicUsize,
    stall_fetch: usize,
    invoked: Arc<AtomicUsize>,
    queued_at_stall: std::sync::Mutex<Option<usize>>,
    open: tokio::sync::Semaphore,
}

impl WatchedLog {
    fn new(inner: SqliteStore) -> Self {
        Self {
            inner,
            scans: AtomicUsize::new(0),
            fetches: AtomicUsize::new(0),
            leased: AtomicUsize::new(0),
            settled: AtomicUsize::new(0),
            stall_fetch: usize::MAX,
            invoked: Arc::default(),
            queued_at_stall: std::sync::Mutex::new(None),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait]
impl EventLog for WatchedLog {
    async fn publish(&self, b: Vec<NewEvent>) -> Result<Vec<PublishOutcome>> {
        self.inner.publish(b).await
    }
    async fn fetch(&self, f: &str, x: Fetch) -> Result<Vec<Delivery>> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) == self.stall_fetch {
            let queued = self.leased.load(Ordering::SeqCst) - self.invoked.load(Ordering::SeqCst);
            *self.queued_at_stall.lock().unwrap() = Some(queued);
            let _pass = self.open.acquire().await;
        }
        let batch = self.inner.fetch(f, x).await?;
        self.leased.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(batch)
    }
    async fn due(&self) -> Result<Due> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.due().await
    }
    async fn settle(
        &self,
        l: LeaseRef,
        s: Settlement,
        r: Option<lambent_store::InvocationRecord>,
    ) -> Result<()> {
        let done = self.inner.settle(l, s, r).await;
        self.settled.fetch_add(1, Ordering::SeqCst);
        done
    }
    async fn extend(&self, l: LeaseRef, ms: i64) -> Result<()> {
        self.inner.extend(l, ms).await
    }
    async fn release(&self, l: LeaseRef) -> Result<()> {
        self.inner.release(l).await
    }
    async fn dead_letters(&self, f: Option<&str>, n: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(f, n).await
    }
    async fn redrive(&self, w: Redrive) -> Result<usize> {
        self.inner.redrive(w).await
    }
    async fn get_event(&self, s: &str, i: &str) -> Result<Option<StoredEvent>> {
        self.inner.get_event(s, i).await
    }
    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>> {
        self.inner.delivery_counts().await
    }
    async fn compact(&self, b: i64, n: usize) -> Result<usize> {
        EventLog::compact(&self.inner, b, n).await
    }
}

/// Dispatch is driven by what publishes tell it, not by a scan of the store per
/// wake-up: 200 events published one by one cost a handful of scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_does_not_scan_the_store_per_publish() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let log = Arc::new(WatchedLog::new(sqlite.clone()));
    let stores = sqlite_stores(dir.path(), &sqlite, Some(log.clone()), None);
    let engine = start(stores, Arc::new(EchoRuntime::default())).await;
    engine.deploy(deploy("echo", 128)).await.unwrap();
    route_every_event_to_echo(&engine).await;
    let before = log.scans.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    const EVENTS: usize = 200;
    for i in 0..EVENTS {
        let e = CloudEvent::builder(format!("e{i}"), "/t", "t")
            .build()
            .unwrap();
        engine.publish(vec![e]).await.unwrap();
    }
    loop {
        let counts = sqlite.delivery_counts().await.unwrap();
        if counts == vec![("delivered".to_owned(), EVENTS as u64)] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // At most one periodic scan a second while this ran; never one per publish.
    let scans = log.scans.load(Ordering::SeqCst) - before;
    let allowed = 5 + started.elapsed().as_secs() as usize * 2;
    assert!(scans <= allowed, "{scans} scans for {EVENTS} publishes");
}

/// Finding 11: a dead dispatcher makes the node unhealthy, naming what stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dispatcher_makes_the_node_unhealthy() {
    let log = Arc::new(FailingLog {
        panic_on_due: true,
        ..FailingLog::default()
    });
    let node = node_with(Some(log)).await;
    let unhealthy = async {
        loop {
            match node.engine.health() {
                Err(why) => return why,
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    let why = tokio::time::timeout(Duration::from_secs(30), unhealthy)
        .await
        .expect("the node still said it was healthy");
    assert_eq!(why, "the dispatcher task stopped");
}

/// A pump leases its next deliveries while those it holds are still running, beside
/// them: a slot that frees up during the lease's commit (an fsync) starts the next
/// delivery at once instead of waiting for it. The refill begins with several leased
/// deliveries still queued, and all of them are delivered while it stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pump_refills_its_leases_beside_the_running_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let runtime = EchoRuntime::default();
    // The third fetch: the pump's first lease, its first refill, then this one.
    let log = Arc::new(WatchedLog {
        stall_fetch: 2,
        invoked: runtime.invoked.clone(),
        ..WatchedLog::new(sqlite.clone())
    });
    let stores = sqlite_stores(dir.path(), &sqlite, Some(log.clone()), None);
    let engine = start(stores, Arc::new(runtime)).await;
    engine
        .deploy(DeployRequest {
            concurrency: Some(1),
            ..deploy("echo", 128)
        })
        .await
        .unwrap();
    route_every_event_to_echo(&engine).await;
    const EVENTS: usize = 40;
    let events = (0..EVENTS)
        .map(|i| {
            CloudEvent::builder(format!("e{i}"), "/t", "t")
                .build()
                .unwrap()
        })
        .collect();
    engine.publish(events).await.unwrap();
    let waited = std::time::Instant::now();
    let until = |what: &str, done: &dyn Fn() -> bool| {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "waited for {what}"
        );
        !done()
    };
    while until("the second refill", &|| {
        log.fetches.load(Ordering::SeqCst) >= 3
    }) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Everything leased so far is delivered though the refill has not returned.
    while until("the leased deliveries", &|| {
        log.settled.load(Ordering::SeqCst) == log.leased.load(Ordering::SeqCst)
    }) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued = log.queued_at_stall.lock().unwrap().unwrap();
    assert!(
        queued >= 4,
        "the refill began with {queued} leased deliveries not started: it waited for the queue to run dry"
    );
    log.open.add_permits(1000);
    loop {
        let counts = sqlite.delivery_counts().await.unwrap();
        if counts == vec![("delivered".to_owned(), EVENTS as u64)] {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "{counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine whose function `slow` answers its payload once the gate opens; the
/// runtime's count of invocations begun.
struct GatedNode {
    engine: Engine,
    gate: Gate,
    invoked: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn gated_node() -> GatedNode {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let gate = Gate {
        entered: Arc::new(Notify::new()),
        open: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let runtime = EchoRuntime {
        gate: Some(gate.clone()),
        ..EchoRuntime::default()
    };
    let invoked = runtime.invoked.clone();
    let engine = start(
        sqlite_stores(dir.path(), &sqlite, None, None),
        Arc::new(runtime),
    )
    .await;
    engine.deploy(deploy("slow", 128)).await.unwrap();
    GatedNode {
        engine,
        gate,
        invoked,
        _dir: dir,
    }
}

/// A synchronous invoke whose caller goes away (an HTTP client that disconnects, whose
/// handler future is dropped) still runs to its end, as Lambda runs it: its record is
/// written and its instance goes back to the pool, not counted busy for ever (which
/// kept the function from being pre-warmed until the node restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoke_whose_caller_went_away_still_finishes() {
    // Held whole: its directory must outlive the engine (a `..` in a pattern drops
    // the fields it skips at once, and the temporary directory with them).
    let node = gated_node().await;
    let (engine, gate) = (&node.engine, &node.gate);
    let caller = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .invoke("slow", bytes::Bytes::from_static(b"7"), Default::default())
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), gate.entered.notified())
        .await
        .expect("the call never reached its instance");
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    gate.open.add_permits(1000);
    let listed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let listed = records_of(engine, "slow").await;
            if !listed.is_empty() {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the abandoned invocation was never recorded");
    assert_eq!(listed[0].outcome, lambent_core::InvocationOutcome::Success);
    let pool = engine
        .pool_status()
        .into_iter()
        .find(|p| p.function == "slow")
        .unwrap();
    assert_eq!(
        (pool.busy, pool.idle),
        (0, 1),
        "the instance went back idle"
    );
    // And it serves the next call warm.
    let next = engine
        .invoke("slow", bytes::Bytes::from_static(b"8"), Default::default())
        .await
        .unwrap();
    assert!(!next.record.cold);
}

/// The idle times learned for `function`, as the pool reports them (0 without a pool).
fn learned_of(engine: &Engine, function: &str) -> u64 {
    engine
        .pool_status()
        .into_iter()
        .find(|p| p.function == function)
        .map_or(0, |p| p.idle_times_learned)
}

/// What the keep-alive policy learned of a function is saved when the node drains
/// and handed back to the function's policy by a node that starts on the same store,
/// before any call; a deleted function's is forgotten. (Both engines share one
/// SQLite store: the directory's lock lets only one open it in a process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_policies_learned_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let stores = sqlite_stores(dir.path(), &sqlite, None, None);
    let node = |stores: Stores| async {
        Engine::start(
            EngineConfig::default(),
            stores,
            Arc::new(EchoRuntime::default()),
            lambent_engine::keepalive::parse_policy("mdp").unwrap(),
        )
        .await
        .unwrap()
    };
    let first = node(stores.clone()).await;
    for name in ["kept", "deleted"] {
        first.deploy(deploy(name, 128)).await.unwrap();
        for _ in 0..5 {
            first
                .invoke(name, bytes::Bytes::from_static(b"1"), Default::default())
                .await
                .unwrap();
        }
    }
    assert_eq!(
        learned_of(&first, "kept"),
        4,
        "one idle time between each two calls"
    );
    first.drain(Duration::from_secs(5)).await;
    first.delete_function("deleted").await.unwrap();
    assert_eq!(learned_of(&first, "deleted"), 0);
    let saved = stores.learned.list_learned().await.unwrap();
    assert_eq!(
        saved.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );

    let second = node(stores.clone()).await;
    assert_eq!(learned_of(&second, "kept"), 4, "taken up before any call");
    second.deploy(deploy("deleted", 128)).await.unwrap();
    second
        .invoke(
            "deleted",
            bytes::Bytes::from_static(b"1"),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        learned_of(&second, "deleted"),
        0,
        "made again, it learns afresh"
    );
}

/// While the node runs, the reaper saves what the policies learned at its interval
/// (what a node killed outright, with no drain, keeps), and only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_policies_learned_is_saved_while_the_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let stores = sqlite_stores(dir.path(), &sqlite, None, None);
    let node = Engine::start(
        EngineConfig {
            learned_save_interval: Duration::from_millis(50),
            ..EngineConfig::default()
        },
        stores.clone(),
        Arc::new(EchoRuntime::default()),
        lambent_engine::keepalive::parse_policy("mdp").unwrap(),
    )
    .await
    .unwrap();
    node.deploy(deploy("f", 128)).await.unwrap();
    for _ in 0..3 {
        node.invoke("f", bytes::Bytes::from_static(b"1"), Default::default())
            .await
            .unwrap();
    }
    // No drain: only the reaper can have saved it. Bounded: the reaper runs twice a
    // second; a save that never comes fails here instead of hanging.
    // (A save between the calls may hold one idle time; a later one holds both.)
    let idle_times_saved = || async {
        let saved = stores.learned.list_learned().await.unwrap();
        assert!(saved.iter().all(|(f, _)| f == "f"), "{saved:?}");
        saved.first().map_or(0, |(_, text)| {
            serde_json::from_str::<lambent_scale::Learned>(text)
                .unwrap()
                .idle
                .seen()
        })
    };
    let both = async {
        while idle_times_saved().await < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .expect("the reaper never saved what the policy learned");
    node.drain(Duration::from_secs(5)).await;
}

/// A call repeated with the idempotency key of a call whose caller went away (an SDK
/// that timed out and retries with the same `amz-sdk-invocation-id`) gets that call's
/// result: the function runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_key_of_an_abandoned_call_joins_it() {
    let node = gated_node().await;
    let (engine, gate, invoked) = (&node.engine, &node.gate, &node.invoked);
    // A call with the SDK's invocation id, in a task of its own (the caller).
    let call = || {
        let engine = engine.clone();
        let options = lambent_engine::InvokeOptions {
            idempotency_key: Some("sdk-call-1".into()),
            ..Default::default()
        };
        tokio::spawn(async move {
            engine
                .invoke("slow", bytes::Bytes::from_static(b"7"), options)
                .await
        })
    };
    let first = call();
    tokio::time::timeout(Duration::from_secs(30), gate.entered.notified())
        .await
        .expect("the call never reached its instance");
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let retry = call();
    gate.open.add_permits(1000);
    let answer = tokio::time::timeout(Duration::from_secs(30), retry)
        .await
        .expect("the retry got no answer")
        .unwrap()
        .unwrap();
    assert_eq!(answer.payload, bytes::Bytes::from_static(b"7"));
    assert_eq!(invoked.load(Ordering::SeqCst), 1, "the function ran once");
}
