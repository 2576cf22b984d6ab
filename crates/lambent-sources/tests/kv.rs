//! The key-value store: every write is a change event in the same write; CAS; TTL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{T0, node};
use lambent_engine::{EngineError, KvRequest};
use lambent_store::{KvNamespace, ManualClock};
use serde_json::json;
use std::time::Duration;

fn put(ns: &str, key: &str, value: serde_json::Value) -> KvRequest {
    KvRequest {
        namespace: ns.into(),
        key: key.into(),
        value: Some(value),
        ttl: None,
        expect_revision: None,
    }
}

#[tokio::test]
async fn every_write_is_an_event_with_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (engine, _) = node(dir.path(), &clock).await;
    engine
        .put_kv_namespace(KvNamespace {
            name: "profiles".into(),
            put_type: "data_update".into(),
            delete_type: "data_delete".into(),
        })
        .await
        .unwrap();
    let first = engine
        .kv_write(put("profiles", "u/1", json!({"name": "Ada"})))
        .await
        .unwrap();
    let second = engine
        .kv_write(put("profiles", "u/1", json!({"name": "Ada L."})))
        .await
        .unwrap();
    assert!(second.revision > first.revision);
    let got = engine.kv_get("profiles", "u/1").await.unwrap();
    assert_eq!(got.value, json!({"name": "Ada L."}));
    assert_eq!(got.revision, second.revision);

    let event = engine
        .event(&second.event_source, &second.event_id)
        .await
        .unwrap()
        .event;
    assert_eq!(event["type"], "data_update");
    assert_eq!(event["subject"], "u/1");
    assert_eq!(event["data"]["operation"], "put");
    assert_eq!(event["data"]["value"], json!({"name": "Ada L."}));
    assert_eq!(event["data"]["revision"], second.revision);
    assert_eq!(event["data"]["previous_revision"], first.revision);

    let deleted = engine
        .kv_write(KvRequest {
            value: None,
            ..put("profiles", "u/1", json!(null))
        })
        .await
        .unwrap();
    let event = engine
        .event(&deleted.event_source, &deleted.event_id)
        .await
        .unwrap()
        .event;
    assert_eq!(event["type"], "data_delete");
    assert_eq!(event["data"]["value"], json!({"name": "Ada L."}));
    assert!(matches!(
        engine.kv_get("profiles", "u/1").await,
        Err(EngineError::NotFound { .. })
    ));
    // Deleting what is not there changes nothing and makes no event.
    assert!(matches!(
        engine
            .kv_write(KvRequest {
                value: None,
                ..put("profiles", "u/1", json!(null))
            })
            .await,
        Err(EngineError::NotFound { .. })
    ));
    // Other namespaces use the default types.
    let other = engine.kv_write(put("cache", "k", json!(1))).await.unwrap();
    let event = engine
        .event(&other.event_source, &other.event_id)
        .await
        .unwrap()
        .event;
    assert_eq!(event["type"], "lambent.kv.put");
}

#[tokio::test]
async fn a_compare_and_swap_on_a_stale_revision_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (engine, _) = node(dir.path(), &clock).await;
    let created = engine
        .kv_write(KvRequest {
            expect_revision: Some(0),
            ..put("ns", "counter", json!(1))
        })
        .await
        .unwrap();
    // Create-only again: the key exists now.
    let again = engine
        .kv_write(KvRequest {
            expect_revision: Some(0),
            ..put("ns", "counter", json!(100))
        })
        .await;
    assert!(matches!(again, Err(EngineError::Conflict(_))), "{again:?}");
    let swapped = engine
        .kv_write(KvRequest {
            expect_revision: Some(created.revision),
            ..put("ns", "counter", json!(2))
        })
        .await
        .unwrap();
    let stale = engine
        .kv_write(KvRequest {
            expect_revision: Some(created.revision),
            ..put("ns", "counter", json!(3))
        })
        .await;
    let Err(EngineError::Conflict(message)) = stale else {
        panic!("{stale:?}");
    };
    assert!(message.contains(&swapped.revision.to_string()), "{message}");
    let now = engine.kv_get("ns", "counter").await.unwrap();
    assert_eq!((now.value, now.revision), (json!(2), swapped.revision));
    // A delete and re-create does not bring an old revision back.
    engine
        .kv_write(KvRequest {
            value: None,
            ..put("ns", "counter", json!(null))
        })
        .await
        .unwrap();
    let recreated = engine
        .kv_write(put("ns", "counter", json!(9)))
        .await
        .unwrap();
    assert!(recreated.revision > swapped.revision);
}

#[tokio::test]
async fn keys_expire_with_an_event_and_list_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (engine, _) = node(dir.path(), &clock).await;
    for key in ["a/1", "a/2", "b/1"] {
        engine.kv_write(put("ns", key, json!(key))).await.unwrap();
    }
    let keys: Vec<String> = engine
        .kv_list("ns", "a/", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    let session = engine
        .kv_write(KvRequest {
            ttl: Some(Duration::from_secs(60)),
            ..put("ns", "session", json!("s"))
        })
        .await
        .unwrap();
    assert!(engine.kv_get("ns", "session").await.is_ok());
    clock.advance(60_000);
    assert!(
        engine.kv_get("ns", "session").await.is_err(),
        "expired keys are gone at once"
    );
    assert_eq!(engine.kv_list("ns", "s", None, 10).await.unwrap().len(), 0);
    // The sweep publishes the expiry as a delete-type event.
    let mut expired = None;
    for _ in 0..50 {
        let revision = session.revision + 1;
        if let Ok(e) = engine.event("lambent/kv/ns", &revision.to_string()).await {
            expired = Some(e.event);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired = expired.expect("the expiry's event");
    assert_eq!(expired["type"], "lambent.kv.delete");
    assert_eq!(expired["data"]["operation"], "expire");
    assert_eq!(expired["data"]["value"], "s");
}

#[tokio::test]
async fn bad_keys_and_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (engine, _) = node(dir.path(), &clock).await;
    for (ns, key) in [("bad/ns", "k"), ("ns", ""), ("ns", "a\nb")] {
        let r = engine.kv_write(put(ns, key, json!(1))).await;
        assert!(
            matches!(r, Err(EngineError::Invalid(_))),
            "{ns} {key:?}: {r:?}"
        );
    }
    let big = json!("x".repeat(200 * 1024));
    assert!(matches!(
        engine.kv_write(put("ns", "big", big)).await,
        Err(EngineError::Invalid(_))
    ));
    assert!(engine.kv_list("ns", "", None, 10).await.unwrap().is_empty());
}
