//! Delivery guarantees on the real binary: retries with backoff, dead letters and
//! redrive, de-duplication on (source, id), timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::json;
use std::io::Write;

#[test]
fn a_handler_failing_twice_then_succeeding_runs_three_times() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    print('attempt', context.attempt)\n    if context.attempt < 3:\n        raise RuntimeError('not yet')\n    return 'ok'\n",
    )]);
    node.deploy_app(
        "flaky",
        "python3.12",
        code.path(),
        &["--max-attempts", "3", "--retry-delay-ms", "50"],
    );
    node.ok(&[
        "rules",
        "add",
        "r",
        "--pattern",
        r#"{"type": ["job"]}"#,
        "--target",
        "flaky",
    ]);
    let (status, _) = node.publish(&event("job-1", "job", json!({})));
    assert_eq!(status, 202);
    let inv = wait_for("a successful attempt", || {
        let inv = node.invocations("flaky");
        inv.iter().any(|r| r["outcome"] == "success").then_some(inv)
    });
    let attempts: Vec<_> = inv
        .iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "function_error".into()),
            (2, "function_error".into()),
            (3, "success".to_string())
        ]
    );
    assert!(inv.iter().all(|r| r["event_id"] == "job-1"));
    assert_eq!(inv[0]["error_message"], "not yet");
    assert!(node.dead_letters("flaky").is_empty());
    assert_eq!(
        node.get("/v1/status")["deliveries"],
        json!({"delivered": 1})
    );
}

#[test]
fn an_always_failing_handler_is_dead_lettered_and_redrive_after_a_fix_delivers_it() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        "import os\ndef handler(event, context):\n    if os.environ.get('FIXED') != '1':\n        raise ValueError('broken for ' + event['id'])\n    print('fixed handled', event['id'])\n",
    )]);
    node.deploy_app(
        "broken",
        "python3.12",
        code.path(),
        &["--max-attempts", "2", "--retry-delay-ms", "20"],
    );
    node.ok(&[
        "rules",
        "add",
        "r",
        "--pattern",
        r#"{"source": [{"prefix": "/tests"}]}"#,
        "--target",
        "broken",
    ]);
    node.publish(&event("doomed", "anything", json!(1)));
    let dead = wait_for("a dead letter", || {
        let d = node.dead_letters("broken");
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event_id"], "doomed");
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["reason"], "max_attempts");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("ValueError: broken for doomed"),
        "{}",
        dead[0]
    );
    assert_eq!(
        node.invocations("broken").len(),
        2,
        "exactly max_attempts attempts"
    );
    let listed = node.ok(&["dlq", "ls", "broken"]);
    assert!(
        listed.contains("doomed") && listed.contains("max_attempts"),
        "{listed}"
    );

    // Fix the function (a new version), then redrive the dead letter by id.
    node.deploy_app("broken", "python3.12", code.path(), &["--env", "FIXED=1"]);
    let id = dead[0]["delivery_id"].to_string();
    assert!(node.ok(&["dlq", "redrive", &id]).contains("redriven: 1"));
    let ok = wait_for("the redriven delivery to succeed", || {
        node.invocations("broken")
            .into_iter()
            .find(|r| r["outcome"] == "success")
    });
    assert_eq!(ok["version"], 2);
    assert_eq!(ok["attempt"], 1, "a redrive starts with fresh attempts");
    assert_eq!(ok["logs"], "fixed handled doomed\n");
    assert!(node.dead_letters("broken").is_empty());
}

#[test]
fn the_same_source_and_id_is_delivered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    print(event['id'])\n",
    )]);
    node.deploy_app("once", "python3.12", code.path(), &[]);
    node.ok(&[
        "rules",
        "add",
        "r",
        "--pattern",
        r#"{"type": ["t"]}"#,
        "--target",
        "once",
    ]);
    let (s1, a1) = node.publish(&event("same", "t", json!({"n": 1})));
    let (s2, a2) = node.publish(&event("same", "t", json!({"n": 2})));
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(a1["results"][0]["status"], "accepted");
    assert_eq!(a2["results"][0]["status"], "duplicate");
    // The same id from another source is another event.
    let mut other = event("same", "t", json!({"n": 3}));
    other["source"] = json!("/elsewhere");
    assert_eq!(node.publish(&other).1["results"][0]["status"], "accepted");
    // The CLI says so too.
    let out = node.ok(&[
        "events", "put", "--type", "t", "--source", "/tests", "--id", "same",
    ]);
    assert!(out.contains("duplicate"), "{out}");

    wait_for("both distinct events handled", || {
        (node.get("/v1/status")["deliveries"]["delivered"] == 2).then_some(())
    });
    let inv = node.invocations("once");
    assert_eq!(inv.len(), 2, "{inv:?}");
    // The stored event is the first one published.
    let stored = node.get("/v1/events/lookup?source=/tests&id=same");
    assert_eq!(stored["event"]["data"], json!({"n": 1}));
}

#[test]
fn a_handler_past_its_timeout_is_killed_and_reported_as_timed_out() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        "import time\ndef handler(event, context):\n    if event.get('sleep'):\n        print('going to sleep')\n        time.sleep(60)\n    return 'awake'\n",
    )]);
    // A marker in the function's environment finds its processes on the host.
    let marker = host_marker("SLEEPY");
    node.deploy_app(
        "sleepy",
        "python3.12",
        code.path(),
        &["--timeout", "1", "--env", &marker],
    );
    let resp = node.invoke_raw("sleepy", r#"{"sleep": true}"#);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-lambent-function-error"], "Unhandled");
    assert_eq!(resp.headers()["x-lambent-outcome"], "timeout");
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Task timed out after 1.0"),
        "{body}"
    );
    let rec = node.invocations("sleepy").pop().unwrap();
    assert_eq!(rec["outcome"], "timeout");
    assert_eq!(rec["logs"], "going to sleep\n");
    // The killed instance is gone: the next call gets a fresh one and works.
    let out = node.ok(&["invoke", "sleepy", "--data", "{}"]);
    assert_eq!(out.trim(), "\"awake\"");
    let rec = node.invocations("sleepy").pop().unwrap();
    assert_eq!(rec["cold"], true);
    // And no process of the killed instance is left sleeping.
    let running = wait_for("the killed instance's process to be gone", || {
        let live = live(&processes_with_env(&marker));
        (live.len() <= 1).then_some(live)
    });
    assert_eq!(running.len(), 1, "only the fresh instance runs");
}

#[test]
fn a_delivery_whose_next_retry_would_pass_max_event_age_is_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    raise RuntimeError('down')\n",
    )]);
    // The first retry waits at least 1 s (half of the 2 s base, plus jitter), which
    // is past the 1 s age limit once the first attempt took any time at all.
    node.deploy_app(
        "aging",
        "python3.12",
        code.path(),
        &[
            "--max-attempts",
            "5",
            "--max-event-age",
            "1",
            "--retry-delay-ms",
            "2000",
        ],
    );
    node.ok(&[
        "rules",
        "add",
        "r",
        "--pattern",
        r#"{"type": ["t"]}"#,
        "--target",
        "aging",
    ]);
    node.publish(&event("old", "t", json!({})));
    let dead = wait_for("a dead letter", || node.dead_letters("aging").pop());
    assert_eq!(dead["reason"], "max_event_age");
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("max_event_age of 1 s"),
        "{dead}"
    );
    assert_eq!(node.invocations("aging").len(), 1);
}

/// A synchronous invoke whose HTTP client disconnects while the function runs is not
/// cut short (hyper drops the handler's future when its connection closes): the
/// function finishes, its invocation is recorded as a success, and the instance is
/// back in the pool, not counted busy.
#[test]
fn a_synchronous_invoke_outlives_its_disconnected_client() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let sink = Sink::start();
    let code = sink.app(
        "def handler(event, context):\n    report_and_wait('started')\n    report('finished')\n    return {'ok': True}\n",
    );
    let env = sink.env();
    node.deploy_app(
        "held",
        "python3.11",
        code.path(),
        &["--grant", "net", "--env", &env],
    );
    let mut client = std::net::TcpStream::connect(node.url.trim_start_matches("http://")).unwrap();
    client
        .write_all(
            b"POST /v1/functions/held/invoke HTTP/1.1\r\nhost: lambent\r\ncontent-length: 2\r\n\r\n{}",
        )
        .unwrap();
    wait_for("the function to start", || {
        sink.lines().contains(&"started".to_owned()).then_some(())
    });
    drop(client);
    // The node drops the request when it reads the connection's end: the function
    // goes on only after that. (Were it released first, it would finish with or
    // without the node's care; this pause cannot make the test fail, only miss.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    sink.release();
    let record = wait_for("the invocation's record", || {
        node.invocations("held").first().cloned()
    });
    assert_eq!(record["outcome"], "success", "{record}");
    assert!(sink.lines().contains(&"finished".to_owned()));
    let pool = node.get("/v1/status")["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["function"] == "held")
        .cloned()
        .unwrap();
    assert_eq!(
        (pool["busy"].as_u64(), pool["idle"].as_u64()),
        (Some(0), Some(1)),
        "{pool}"
    );
}
