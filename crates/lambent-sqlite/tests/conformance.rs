//! The delivery contract's conformance suite against the SQLite store (a real file,
//! reopened on "restart").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambent_sqlite::{CheckpointLimits, SqliteOptions, SqliteStore};
use lambent_store::conformance::{self, Harness};
use lambent_store::{EventLog, ManualClock};
use std::sync::Arc;

struct Sqlite {
    dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl Harness for Sqlite {
    async fn open(&mut self, clock: ManualClock) -> Arc<dyn EventLog> {
        let options = SqliteOptions {
            clock: Arc::new(clock),
            // Tiny limits: the suite's writes also run across background checkpoints
            // and the writer's restarts of the log.
            checkpoints: CheckpointLimits {
                background: 4,
                restart: 16,
            },
        };
        Arc::new(SqliteStore::open_with(self.dir.path(), options).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_the_delivery_contract() {
    // Seeds are fixed so a failure names a reproducible run; raise the count locally
    // with LAMBENT_CONFORMANCE_RUNS to search wider.
    let runs: u64 = std::env::var("LAMBENT_CONFORMANCE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for seed in 0..runs {
        let mut harness = Sqlite {
            dir: tempfile::tempdir().unwrap(),
        };
        if let Err(failure) = conformance::run(&mut harness, seed, 150).await {
            panic!("{failure}");
        }
    }
}

#[tokio::test]
async fn sqlite_store_keeps_the_token_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    if let Err(failure) = conformance::tokens(&store).await {
        panic!("{failure}");
    }
}
