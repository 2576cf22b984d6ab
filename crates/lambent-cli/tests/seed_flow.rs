//! The founding document's flow, end to end on the real binary: define events,
//! register listeners, handle events — with the document's own Python handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[test]
fn seed_listener_handles_each_event_type_in_its_own_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = repo_root().join("examples/seed-listener");
    // The seed's own create_function parameters: python3.8, module.function handler.
    node.ok(&[
        "deploy",
        "event_listener",
        "--runtime",
        "python3.8",
        "--handler",
        "event_listener.event_listener",
        "--code",
        code.to_str().unwrap(),
        "--description",
        "An event listener function.",
    ]);
    for ty in ["user_action", "data_update", "timer_trigger"] {
        let pattern = format!(r#"{{"type": ["{ty}"]}}"#);
        node.ok(&[
            "rules",
            "add",
            ty,
            "--pattern",
            &pattern,
            "--target",
            "event_listener",
        ]);
    }
    let rules = node.ok(&["rules", "ls"]);
    assert_eq!(rules.lines().count(), 3, "{rules}");

    let published = [
        (
            "user_action",
            r#"{"user": "alice", "action": "login"}"#,
            "user_action handled: {'user': 'alice', 'action': 'login'}",
        ),
        (
            "data_update",
            r#"{"table": "orders", "row": 7}"#,
            "data_update handled: {'table': 'orders', 'row': 7}",
        ),
        (
            "timer_trigger",
            r#"{"schedule": "hourly"}"#,
            "timer_trigger handled: {'schedule': 'hourly'}",
        ),
    ];
    let mut ids = Vec::new();
    for (ty, data, _) in published {
        let id = format!("seed-{ty}");
        let out = node.ok(&["events", "put", "--type", ty, "--data", data, "--id", &id]);
        assert!(out.contains("accepted, 1 deliveries"), "{out}");
        ids.push(id);
    }

    let records = wait_for("three successful invocations", || {
        let inv = node.invocations("event_listener");
        (inv.iter().filter(|r| r["outcome"] == "success").count() == 3).then_some(inv)
    });
    // Each event was handled by its own branch, and only that one.
    for ((_, _, expected), id) in published.iter().zip(&ids) {
        let rec = records
            .iter()
            .find(|r| r["event_id"] == id.as_str())
            .expect("invocation per event");
        assert_eq!(rec["logs"].as_str().unwrap().trim_end(), *expected);
        assert_eq!(rec["attempt"], 1);
    }
    // And `lambent logs` shows it to a person.
    let logs = node.ok(&["logs", "event_listener"]);
    for (_, _, expected) in published {
        assert!(logs.contains(expected), "{logs}");
    }
    assert_eq!(logs.matches("success").count(), 3, "{logs}");

    // A direct synchronous invoke gets the payload as sent.
    let out = node.ok(&[
        "invoke",
        "event_listener",
        "--data",
        r#"{"type": "user_action", "data": "direct"}"#,
    ]);
    assert_eq!(out.trim(), "null");
    let last = node.invocations("event_listener").pop().unwrap();
    assert_eq!(last["logs"], "user_action handled: direct\n");
    assert_eq!(last["cold"], false, "the warm instance was reused");
}
