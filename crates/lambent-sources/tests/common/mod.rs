//! A node on a real SQLite store with a manual clock and no runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use async_trait::async_trait;
use lambent_engine::keepalive::Fixed;
use lambent_engine::{Engine, EngineConfig, NodeClock};
use lambent_runtime::{Instance, InstanceConfig, Runtime, RuntimeError};
use lambent_sources::Scheduler;
use lambent_sqlite::{FsCodeStore, SqliteOptions, SqliteStore};
use lambent_store::ManualClock;
use std::sync::Arc;

struct NoRuntime;

#[async_trait]
impl Runtime for NoRuntime {
    async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
        Err(RuntimeError::NoBootstrap {
            function: config.spec.name,
        })
    }
}

pub const T0: i64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z

pub async fn node(dir: &std::path::Path, clock: &ManualClock) -> (Engine, Scheduler) {
    let sqlite = SqliteStore::open_with(
        dir,
        SqliteOptions {
            clock: Arc::new(clock.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let stores = sqlite.stores(Arc::new(FsCodeStore::open(dir.join("code")).unwrap()));
    let clock = NodeClock(Arc::new(clock.clone()));
    let engine = Engine::start(
        EngineConfig {
            clock: clock.clone(),
            ..EngineConfig::default()
        },
        stores,
        Arc::new(NoRuntime),
        Arc::new(Fixed::new(60_000)),
    )
    .await
    .unwrap();
    let scheduler = Scheduler::new(engine.clone(), clock);
    (engine, scheduler)
}

/// Runs `f` on a node of its own runtime: when it returns, the runtime and every
/// task of the node stop and the data directory is free (a restart).
pub fn on_node<T>(
    dir: &std::path::Path,
    clock: &ManualClock,
    f: impl AsyncFnOnce(Engine, Scheduler) -> T,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (engine, scheduler) = node(dir, clock).await;
        f(engine, scheduler).await
    })
}
