//! The embedded store against a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambent_core::{CloudEvent, DeadLetterReason};
use lambent_sqlite::{CheckpointLimits, SqliteOptions, SqliteStore};
use lambent_store::{
    Delivery, EventLog, Fetch, InvocationRecord, Lease, ManualClock, NewEvent, PayloadMode,
    PublishOutcome, Redrive, StoreError, Target,
};
use std::sync::Arc;

fn new_event(i: usize) -> NewEvent {
    NewEvent::new(
        CloudEvent::builder(format!("e{i}"), "/test", "t")
            .build()
            .unwrap(),
        vec![Target {
            function: "f".into(),
            mode: PayloadMode::CloudEvent,
        }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_share_transactions_and_are_acked_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let n = 512;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.publish(vec![new_event(i)]).await.unwrap() })
        })
        .collect();
    for t in tasks {
        let outcome = t.await.unwrap();
        assert!(matches!(
            outcome[0],
            PublishOutcome::Accepted { deliveries: 1, .. }
        ));
        // Acknowledged means committed: a separate connection already sees it.
        let conn = rusqlite::Connection::open(dir.path().join("lambent.db")).unwrap();
        let seq = match outcome[0] {
            PublishOutcome::Accepted { seq, .. } => seq,
            PublishOutcome::Duplicate => unreachable!(),
        };
        let found: i64 = conn
            .query_row("SELECT COUNT(*) FROM events WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(found, 1);
    }
    let commits = store.commit_stats();
    let (transactions, writes) = (commits.transactions, commits.writes);
    assert_eq!(writes, n as u64);
    assert!(
        transactions < n as u64,
        "{transactions} transactions for {n} concurrent publishes: no group commit"
    );
}

/// A publish is answered once on disk; a lease, a settle and a record only once
/// committed (a power loss undoing them runs the delivery again), and the writer puts
/// them on disk by itself soon after, or with the next publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_is_acknowledged_waits_for_the_disk() {
    use lambent_store::{InvocationLog, Settlement};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.publish(vec![new_event(1)]).await.unwrap();
    let published = store.commit_stats();
    assert_eq!((published.transactions, published.synced_commits), (1, 1));

    let leased = store.fetch("f", fetch(1)).await.unwrap().remove(0);
    store
        .settle(
            leased.lease(),
            Settlement::Ack,
            Some(invocation("r1", 0, String::new())),
        )
        .await
        .unwrap();
    store
        .record(invocation("r2", 0, String::new()))
        .await
        .unwrap();
    let settled = store.commit_stats();
    assert_eq!(
        settled.transactions,
        published.transactions + 3,
        "{settled:?}"
    );
    assert_eq!(
        settled.synced_commits, published.synced_commits,
        "{settled:?}"
    );

    // Nothing else comes: the writer syncs the WAL on its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.commit_stats().background_syncs == settled.background_syncs {
        assert!(
            std::time::Instant::now() < deadline,
            "the deferred commits were never synced"
        );
        tokio::time::sleep(lambent_sqlite::SYNC_WITHIN).await;
    }
    // A publish syncs, whatever came before it.
    store.publish(vec![new_event(2)]).await.unwrap();
    assert_eq!(
        store.commit_stats().synced_commits,
        settled.synced_commits + 1
    );
}

#[tokio::test]
async fn duplicates_are_refused_inside_a_batch_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let out = store
        .publish(vec![new_event(1), new_event(1), new_event(2)])
        .await
        .unwrap();
    assert!(matches!(out[0], PublishOutcome::Accepted { .. }));
    assert_eq!(out[1], PublishOutcome::Duplicate);
    assert!(matches!(out[2], PublishOutcome::Accepted { .. }));
    assert_eq!(
        store.publish(vec![new_event(2)]).await.unwrap()[0],
        PublishOutcome::Duplicate
    );
}

/// A store on a clock the test moves.
fn open_at(dir: &std::path::Path, clock: &ManualClock) -> SqliteStore {
    let options = SqliteOptions {
        clock: Arc::new(clock.clone()),
        ..Default::default()
    };
    SqliteStore::open_with(dir, options).unwrap()
}

/// Leases the one due delivery of `f` for a second and lets that lease run out.
async fn lease_until_it_runs_out(store: &SqliteStore, clock: &ManualClock) -> Delivery {
    let brief = Fetch {
        lease_ms: 1_000,
        ..fetch(1)
    };
    let leased = store.fetch("f", brief).await.unwrap().remove(0);
    clock.advance(2_000);
    leased
}

/// A successful invocation of `f` with these logs.
fn invocation(request_id: &str, started_ms: i64, logs: String) -> InvocationRecord {
    InvocationRecord {
        seq: 0,
        request_id: request_id.into(),
        function: "f".into(),
        version: 1,
        delivery_id: None,
        event_id: None,
        attempt: 1,
        started_ms,
        duration_us: 1,
        cold: false,
        outcome: lambent_core::InvocationOutcome::Success,
        error_type: None,
        error_message: None,
        logs,
    }
}

fn fetch(max: usize) -> Fetch {
    Fetch {
        max,
        lease_ms: 60_000,
        max_attempts: 3,
    }
}

#[tokio::test]
async fn leases_acks_naks_dead_letters_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .publish((0..3).map(new_event).collect())
        .await
        .unwrap();

    let leased = store.fetch("f", fetch(10)).await.unwrap();
    assert_eq!(leased.len(), 3);
    assert!(leased.iter().all(|d| d.attempt == 1));
    // Leased deliveries are not handed out twice.
    assert!(store.fetch("f", fetch(10)).await.unwrap().is_empty());

    store.ack(leased[0].lease()).await.unwrap();
    store.nak(leased[1].lease(), 0, "boom").await.unwrap();
    store
        .terminate(leased[2].lease(), DeadLetterReason::MaxAttempts, "gave up")
        .await
        .unwrap();

    let again = store.fetch("f", fetch(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (leased[1].id, 2));

    let dead = store.dead_letters(Some("f"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].reason, dead[0].last_error.as_str()),
        (DeadLetterReason::MaxAttempts, "gave up")
    );
    assert_eq!(
        store
            .redrive(Redrive::All { function: None })
            .await
            .unwrap(),
        1
    );
    let redriven = store.fetch("f", fetch(10)).await.unwrap();
    assert_eq!((redriven[0].id, redriven[0].attempt), (leased[2].id, 1));
}

/// Finding 1: a late report of an attempt whose lease ran out must not undo what a
/// later attempt settled.
#[tokio::test]
async fn a_late_nak_from_an_expired_lease_cannot_reopen_an_acked_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let store = open_at(dir.path(), &clock);
    store.publish(vec![new_event(1)]).await.unwrap();
    let first = lease_until_it_runs_out(&store, &clock).await;
    let second = store.fetch("f", fetch(1)).await.unwrap().remove(0);
    assert_eq!((second.id, second.attempt), (first.id, 2));
    store.ack(second.lease()).await.unwrap();
    let late = store.nak(first.lease(), 0, "attempt 1 failed late").await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { delivery, .. }) if delivery == first.id),
        "{late:?}"
    );
    assert!(store.fetch("f", fetch(10)).await.unwrap().is_empty());
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!(counts, vec![("delivered".to_owned(), 1)]);
}

/// Finding 2: one undecodable stored event is dead-lettered; the others still flow.
#[tokio::test]
async fn an_undecodable_event_is_dead_lettered_and_the_rest_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .publish((0..3).map(new_event).collect())
        .await
        .unwrap();
    let raw = rusqlite::Connection::open(dir.path().join("lambent.db")).unwrap();
    raw.execute("UPDATE events SET body = '{not json' WHERE id = 'e1'", [])
        .unwrap();
    let leased = store.fetch("f", fetch(10)).await.unwrap();
    let ids: Vec<&str> = leased.iter().map(|d| d.event.id()).collect();
    assert_eq!(ids, ["e0", "e2"]);
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].event_id.as_str(), dead[0].reason),
        ("e1", DeadLetterReason::Undecodable)
    );
    assert!(store.fetch("f", fetch(10)).await.unwrap().is_empty());
}

/// Finding 7: an attempt interrupted by a crash is charged; a delivery interrupted
/// `max_attempts` times is dead-lettered as `interrupted` instead of retried for ever.
#[tokio::test]
async fn attempts_interrupted_by_restarts_are_charged_and_end_in_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    SqliteStore::open(dir.path())
        .unwrap()
        .publish(vec![new_event(1)])
        .await
        .unwrap();
    for attempt in 1..=3 {
        let store = SqliteStore::open(dir.path()).unwrap();
        let leased = store.fetch("f", fetch(1)).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].attempt, attempt);
        drop(store); // the node dies mid-attempt
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.fetch("f", fetch(1)).await.unwrap().is_empty());
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].reason, dead[0].attempts),
        (DeadLetterReason::Interrupted, 3)
    );
}

/// Finding 6: one node per data directory.
#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).unwrap();
    let second = SqliteStore::open(dir.path());
    let Err(StoreError::Locked { holder, .. }) = second else {
        panic!("second open was not refused");
    };
    assert!(
        holder.contains(&format!("pid {}", std::process::id())),
        "{holder}"
    );
    drop(first);
    SqliteStore::open(dir.path()).unwrap();
}

/// Finding 14: a truncated, vanished or damaged database stops the node.
#[tokio::test]
async fn a_damaged_or_missing_database_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .publish((0..200).map(new_event).collect())
        .await
        .unwrap();
    drop(store);
    let db = dir.path().join("lambent.db");
    // Checkpoint the WAL into the file so its pages can be damaged.
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(raw);
    let pristine = std::fs::read(&db).unwrap();

    let mut damaged = pristine.clone();
    let page = 4096;
    for byte in &mut damaged[2 * page..4 * page] {
        *byte = 0xA5;
    }
    std::fs::write(&db, &damaged).unwrap();
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("damaged db opened");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("lambent.db"), "{err}");

    std::fs::write(&db, b"").unwrap();
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("empty db opened");
    assert!(err.to_string().contains("empty"), "{err}");

    std::fs::remove_file(&db).unwrap();
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("missing db opened");
    assert!(err.to_string().contains("missing"), "{err}");

    std::fs::write(&db, &pristine).unwrap();
    SqliteStore::open(dir.path()).unwrap();
}

/// A lease dropped without a settle (a cancelled or panicked attempt) is handed back
/// at once, its attempt charged.
#[tokio::test]
async fn a_lease_dropped_unsettled_is_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.publish(vec![new_event(1)]).await.unwrap();
    let log: Arc<dyn EventLog> = Arc::new(store.clone());
    let leased = store.fetch("f", fetch(1)).await.unwrap().remove(0);
    drop(Lease::new(log, leased));
    let mut again = Vec::new();
    for _ in 0..100 {
        again = store.fetch("f", fetch(1)).await.unwrap();
        if !again.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(again.len(), 1, "the dropped lease was not handed back");
    assert_eq!(again[0].attempt, 2);
}

/// Retention removes what was delivered long enough ago (and its event), never a
/// dead letter, pending work, or what it needs.
#[tokio::test]
async fn compaction_removes_only_settled_work_older_than_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000_000);
    let store = open_at(dir.path(), &clock);
    store
        .publish((0..4).map(new_event).collect())
        .await
        .unwrap();
    let leased = store.fetch("f", fetch(3)).await.unwrap();
    store.ack(leased[0].lease()).await.unwrap();
    store
        .terminate(leased[1].lease(), DeadLetterReason::MaxAttempts, "x")
        .await
        .unwrap();
    store.nak(leased[2].lease(), 0, "retry").await.unwrap();
    clock.advance(10_000);
    let cut = crate_now(&clock) - 5_000;
    // e0 delivered, e1 dead, e2 pending again, e3 never leased.
    let removed = store.compact(cut, 100).await.unwrap();
    assert_eq!(removed, 2, "the delivery of e0 and then e0 itself");
    assert!(store.get_event("/test", "e0").await.unwrap().is_none());
    for kept in ["e1", "e2", "e3"] {
        assert!(
            store.get_event("/test", kept).await.unwrap().is_some(),
            "{kept}"
        );
    }
    assert_eq!(store.dead_letters(None, 10).await.unwrap().len(), 1);
    // Outside the window, the same (source, id) is new again.
    let again = store.publish(vec![new_event(0)]).await.unwrap();
    assert!(matches!(again[0], PublishOutcome::Accepted { .. }));
    assert_eq!(
        store.publish(vec![new_event(3)]).await.unwrap()[0],
        PublishOutcome::Duplicate
    );
}

fn crate_now(clock: &ManualClock) -> i64 {
    lambent_store::Clock::now_ms(clock)
}

/// Finding 12: a page of invocations stops at its byte budget (at least one record).
#[tokio::test]
async fn invocation_pages_are_bounded_in_bytes() {
    use lambent_store::{InvocationLog, InvocationQuery};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for i in 0..10 {
        store
            .record(invocation(&format!("r{i}"), i, "x".repeat(100 * 1024)))
            .await
            .unwrap();
    }
    let page = |after_seq, max_bytes, tail| InvocationQuery {
        function: Some("f".into()),
        after_seq,
        limit: 1000,
        tail,
        max_bytes,
    };
    let first = store
        .list_invocations(page(0, 250 * 1024, false))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let next = store
        .list_invocations(page(first[1].seq, 250 * 1024, false))
        .await
        .unwrap();
    assert_eq!(next[0].request_id, "r2");
    let tiny = store.list_invocations(page(0, 10, false)).await.unwrap();
    assert_eq!(tiny.len(), 1, "at least one record");
    let tail = store
        .list_invocations(page(0, 250 * 1024, true))
        .await
        .unwrap();
    let ids: Vec<&str> = tail.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["r8", "r9"]);
    assert_eq!(InvocationLog::compact(&store, 5, 100).await.unwrap(), 5);
}

/// An attempt's settle and its record are one write; a lost lease keeps the record
/// (the attempt ran) but changes nothing of the delivery.
#[tokio::test]
async fn a_settle_and_its_record_are_one_write() {
    use lambent_store::{InvocationLog, InvocationQuery, Settlement};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let store = open_at(dir.path(), &clock);
    store.publish(vec![new_event(1)]).await.unwrap();
    let first = lease_until_it_runs_out(&store, &clock).await;
    let late = store
        .settle(
            first.lease(),
            Settlement::Ack,
            Some(invocation("late", 0, String::new())),
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    let second = store.fetch("f", fetch(1)).await.unwrap().remove(0);
    store
        .settle(
            second.lease(),
            Settlement::Ack,
            Some(invocation("second", 0, String::new())),
        )
        .await
        .unwrap();
    let recorded: Vec<String> = store
        .list_invocations(InvocationQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(recorded, ["late", "second"]);
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        vec![("delivered".to_owned(), 1)]
    );
}

/// What the policies learned is replaced per function, survives reopening the
/// database, and is forgotten per function.
#[tokio::test]
async fn what_the_policies_learned_is_kept_per_function_across_a_reopen() {
    use lambent_store::{LearnedStore, Registry};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    {
        let store = open_at(dir.path(), &clock);
        for name in ["a", "b", "c"] {
            store.put_function(spec(name), code()).await.unwrap();
        }
        store
            .put_learned(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
            .await
            .unwrap();
        store
            .put_learned(vec![("a".into(), "3".into())])
            .await
            .unwrap();
    }
    let store = open_at(dir.path(), &clock);
    assert_eq!(
        store.list_learned().await.unwrap(),
        vec![("a".into(), "3".into()), ("b".into(), "2".into())]
    );
    assert!(store.delete_learned("a").await.unwrap());
    assert!(!store.delete_learned("a").await.unwrap());
    assert_eq!(
        store.list_learned().await.unwrap(),
        vec![("b".to_owned(), "2".to_owned())]
    );
    // Once a function is deleted (the engine forgets its entry after), a save that
    // raced the delete (it read the pool before) does not write the entry back; nor
    // one for a function never made.
    store
        .put_learned(vec![("c".into(), "3".into())])
        .await
        .unwrap();
    assert!(store.delete_function("c").await.unwrap());
    assert!(store.delete_learned("c").await.unwrap());
    store
        .put_learned(vec![("c".into(), "4".into()), ("never".into(), "5".into())])
        .await
        .unwrap();
    assert_eq!(
        store.list_learned().await.unwrap(),
        vec![("b".to_owned(), "2".to_owned())]
    );
}

fn spec(name: &str) -> lambent_core::FunctionSpec {
    lambent_core::FunctionSpec {
        role: None,
        on_failure: None,
        keep_alive: None,
        name: name.into(),
        runtime: lambent_core::RuntimeKind::parse("python3.11").unwrap(),
        handler: "app.handler".into(),
        memory_mb: 128,
        timeout_s: 3,
        env: Default::default(),
        concurrency: 1,
        retry: Default::default(),
        description: String::new(),
        grants: Vec::new(),
    }
}

fn code() -> lambent_store::StoredCode {
    lambent_store::StoredCode {
        sha256: "00".repeat(32),
        size: 1,
    }
}

/// Publishes `batches` batches of ten ~2 KiB events (about five WAL pages a commit).
async fn publish_filler(store: &SqliteStore, batches: usize) {
    let filler = "x".repeat(2048);
    for b in 0..batches {
        let batch = (0..10)
            .map(|i| {
                NewEvent::new(
                    CloudEvent::builder(format!("c{b}-{i}"), "/test", "t")
                        .json_data(serde_json::json!({ "filler": filler }))
                        .build()
                        .unwrap(),
                    vec![],
                )
            })
            .collect();
        store.publish(batch).await.unwrap();
    }
}

fn file_len(dir: &std::path::Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).map_or(0, |m| m.len())
}

fn open_with_limits(dir: &std::path::Path, background: u32, restart: u32) -> SqliteStore {
    let options = SqliteOptions {
        checkpoints: CheckpointLimits {
            background,
            restart,
        },
        ..Default::default()
    };
    SqliteStore::open_with(dir, options).unwrap()
}

/// With the checkpointer never woken, the writer alone bounds the log: past its
/// limit it checkpoints after its commit and the next write starts the log over, so
/// the WAL never holds more than the limit and one commit (it is reused from its
/// start, never shrunk: its length is the most it ever held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_starts_the_log_over_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let restart = 64;
    let store = open_with_limits(dir.path(), u32::MAX, restart);
    publish_filler(&store, 400).await;
    let (background, by_writer) = store.checkpoint_counts();
    assert_eq!(background, 0);
    assert!(by_writer > 0, "the writer never started the log over");
    let page = 4096 + 24;
    let wal = file_len(dir.path(), "lambent.db-wal");
    let most = u64::from(restart + 32) * page;
    assert!(
        wal <= most,
        "the WAL is {wal} bytes, past {most}: it was not started over"
    );
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.get_event("/test", "c399-9").await.unwrap().is_some());
}

/// Below the writer's limit, the log is copied back into the database by the
/// checkpointer thread, never by the writer; nothing is lost across a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_run_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_limits(dir.path(), 8, u32::MAX);
    let db_before = file_len(dir.path(), "lambent.db");
    publish_filler(&store, 200).await;
    // The checkpointer runs on its own thread: wait (bounded) for its first pass.
    let ran = async {
        while store.checkpoint_counts().0 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), ran)
        .await
        .expect("the checkpointer never ran");
    assert_eq!(store.checkpoint_counts().1, 0, "the writer checkpointed");
    // Only a checkpoint writes to the database file in WAL mode.
    assert!(file_len(dir.path(), "lambent.db") > db_before);
    let conn = rusqlite::Connection::open(dir.path().join("lambent.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2000);
    drop(conn);
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.get_event("/test", "c199-9").await.unwrap().is_some());
}
