//! The embedded store against a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lambent_core::{CloudEvent, DeadLetterReason};
use lambent_store::{
    EventLog, NewEvent, PayloadMode, PublishOutcome, Redrive, SqliteStore, Target,
};

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
    let (transactions, writes) = store.commit_stats();
    assert_eq!(writes, n as u64);
    assert!(
        transactions < n as u64,
        "{transactions} transactions for {n} concurrent publishes: no group commit"
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

#[tokio::test]
async fn leases_acks_naks_dead_letters_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .publish((0..3).map(new_event).collect())
        .await
        .unwrap();

    let leased = store.pull("f", 10, 60_000).await.unwrap();
    assert_eq!(leased.len(), 3);
    assert!(leased.iter().all(|d| d.attempt == 1));
    // Leased deliveries are not handed out twice.
    assert!(store.pull("f", 10, 60_000).await.unwrap().is_empty());

    store.ack(leased[0].id).await.unwrap();
    store.nak(leased[1].id, 0, "boom").await.unwrap();
    store
        .terminate(leased[2].id, DeadLetterReason::MaxAttempts, "gave up")
        .await
        .unwrap();

    let again = store.pull("f", 10, 60_000).await.unwrap();
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
    let redriven = store.pull("f", 10, 60_000).await.unwrap();
    assert_eq!((redriven[0].id, redriven[0].attempt), (leased[2].id, 1));

    // A lease that ran out makes the delivery due again.
    let expired = store.pull("f", 10, -1).await.unwrap();
    assert!(expired.is_empty(), "the earlier leases are still held");
    store.release_all_leases().await.unwrap();
    let released = store.pull("f", 10, 60_000).await.unwrap();
    assert_eq!(
        released.len(),
        2,
        "both held leases were released at restart"
    );
    assert_eq!(
        released[0].attempt, 2,
        "the interrupted attempt was not charged"
    );
}
