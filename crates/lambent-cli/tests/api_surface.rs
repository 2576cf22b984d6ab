//! The rest of the surface on the real binary: asynchronous invokes, the CloudEvents
//! binary and batch modes, `logs --follow`, `rm`, and scale to zero.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};

fn deploy_echo(node: &Node, name: &str) -> tempfile::TempDir {
    let code = code_dir(&[(
        "app.py",
        "import json\ndef handler(event, context):\n    print('got', json.dumps(event), 'attempt', context.attempt)\n    return event\n",
    )]);
    node.deploy_app(name, "python3.13", code.path(), &[]);
    code
}

#[test]
fn async_invoke_queues_and_delivers_the_payload_as_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let _code = deploy_echo(&node, "echo");
    let out = node.ok(&["invoke", "echo", "--async", "--data", r#"{"order": 42}"#]);
    let id = out
        .trim()
        .strip_prefix("queued: event ")
        .expect("event id")
        .to_owned();
    let rec = wait_for("the queued invocation", || node.invocations("echo").pop());
    assert_eq!(rec["outcome"], "success");
    assert_eq!(rec["event_id"], id.as_str());
    // The handler got the payload itself, not a CloudEvent around it.
    assert_eq!(rec["logs"], "got {\"order\": 42} attempt 1\n");
    let resp = node
        .http()
        .post(format!("{}/v1/functions/ghost/invoke?async=true", node.url))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "unknown functions are refused before anything is queued"
    );
}

#[test]
fn binary_and_batch_modes_are_delivered_as_structured_events() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let _code = deploy_echo(&node, "echo");
    node.ok(&[
        "rules",
        "add",
        "orders",
        "--pattern",
        r#"{"type": [{"prefix": "order."}], "data": {"total": [{"numeric": [">", 100]}]}}"#,
        "--target",
        "echo",
    ]);
    let resp = node
        .http()
        .post(format!("{}/v1/events", node.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-source", "/shop")
        .header("ce-type", "order.created")
        .header(
            "ce-traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("content-type", "application/json")
        .body(r#"{"total": 250}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let batch = json!([
        {"specversion": "1.0", "id": "b-1", "source": "/shop", "type": "order.paid", "data": {"total": 150}},
        {"specversion": "1.0", "id": "b-2", "source": "/shop", "type": "order.paid", "data": {"total": 5}},
        {"specversion": "1.0", "id": "b-3", "source": "/shop", "type": "refund", "data": {"total": 500}}
    ]);
    let resp = node
        .http()
        .post(format!("{}/v1/events", node.url))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().unwrap();
    let deliveries: Vec<_> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["deliveries"].as_u64().unwrap())
        .collect();
    assert_eq!(
        deliveries,
        [1, 0, 0],
        "only the event matching the pattern is delivered"
    );

    let recs = wait_for("two deliveries", || {
        let r = node.invocations("echo");
        (r.len() == 2).then_some(r)
    });
    let bin = recs.iter().find(|r| r["event_id"] == "bin-1").unwrap();
    let logged: Value = serde_json::from_str(
        bin["logs"]
            .as_str()
            .unwrap()
            .trim()
            .strip_prefix("got ")
            .unwrap()
            .strip_suffix(" attempt 1")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(logged["type"], "order.created");
    assert_eq!(logged["data"], json!({"total": 250}));
    assert_eq!(
        logged["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(logged["datacontenttype"], "application/json");
    assert!(
        logged["time"].is_string(),
        "the node stamps a time when the producer did not"
    );
    assert!(recs.iter().any(|r| r["event_id"] == "b-1"));
}

#[test]
fn logs_follow_prints_new_invocations_as_they_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let _code = deploy_echo(&node, "echo");
    node.ok(&["invoke", "echo", "--data", r#""first""#]);
    let mut follower = std::process::Command::new(BIN)
        .args(["logs", "echo", "--follow"])
        .env("LAMBENT_URL", &node.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A broken --follow must fail the test, not hang it: stop the follower after 60 s.
    let pid = nix::unistd::Pid::from_raw(follower.id() as i32);
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut next_line = |seen: &mut Vec<String>| {
        let line = lines
            .next()
            .expect("logs --follow stopped before printing what it should")
            .unwrap();
        seen.push(line.clone());
        line
    };
    while !next_line(&mut seen).contains("got \"first\"") {}
    node.ok(&["invoke", "echo", "--data", r#""second""#]);
    while !next_line(&mut seen).contains("got \"second\"") {}
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("--- ")).count(),
        2,
        "{seen:?}"
    );
}

#[test]
fn rm_removes_a_function_and_events_for_it_are_dead_lettered_as_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let _code = deploy_echo(&node, "echo");
    node.ok(&[
        "rules",
        "add",
        "r",
        "--pattern",
        r#"{"type": ["t"]}"#,
        "--target",
        "echo",
    ]);
    assert!(node.ok(&["ls"]).contains("echo"));
    node.ok(&["rm", "echo"]);
    // The rule stays (as in EventBridge); what it routes to a missing function is
    // refused permanently and kept as a dead letter, not retried.
    node.publish(&event("orphan", "t", json!(1)));
    let dead = wait_for("a rejected dead letter", || node.dead_letters("echo").pop());
    assert_eq!(dead["reason"], "rejected");
    assert_eq!(dead["attempts"], 1);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("function `echo` does not exist")
    );
    assert!(!node.ok(&["ls"]).contains("echo"));
    let out = node.cli(&["rm", "echo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn idle_instances_are_dropped_after_the_keep_alive_and_the_next_call_is_cold() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("data"), &["--keep-alive", "3"]);
    let _code = deploy_echo(&node, "echo");
    // Two calls well inside the 3 s keep-alive: the second finds the first's instance.
    node.ok(&["invoke", "echo", "--data", "1"]);
    node.ok(&["invoke", "echo", "--data", "2"]);
    let recs = node.invocations("echo");
    assert_eq!(
        (recs[0]["cold"].clone(), recs[1]["cold"].clone()),
        (json!(true), json!(false))
    );
    // Scale to zero: the warm instance goes away once idle past the keep-alive.
    wait_for("the idle instance to be dropped", || {
        let status = node.get("/v1/status");
        (status["warm_instances"]["echo"] == 0).then_some(())
    });
    node.ok(&["invoke", "echo", "--data", "3"]);
    assert_eq!(node.invocations("echo").pop().unwrap()["cold"], true);
}

/// The node's policy and a function's own: shown in status, applied by the pool, a
/// bad one refused at deploy.
#[test]
fn keep_alive_policies_are_the_nodes_or_a_functions_own() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        &tmp.path().join("data"),
        &[
            "--keep-alive",
            "mdp:cost-ratio=5",
            "--memory-budget",
            "4096",
        ],
    );
    let status = node.get("/v1/status");
    assert_eq!(status["keep_alive"], "mdp:cost-ratio=5");
    assert_eq!(status["memory"]["budget_mb"], 4096);
    let _code = deploy_echo(&node, "echo");
    let out = node.cli(&["deploy", "echo", "--keep-alive", "lru"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown keep-alive policy \"lru\""), "{err}");
    let pool = |node: &Node| {
        let status = node.get("/v1/status");
        status["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["function"] == "echo")
            .cloned()
            .unwrap_or(Value::Null)
    };
    node.ok(&["invoke", "echo", "--data", "1"]);
    assert_eq!(pool(&node)["policy"], "mdp:cost-ratio=5");
    // No idle time seen yet: the MDP's ski rental, 5 GB-min / 0.125 GB = 40 min.
    assert_eq!(pool(&node)["schedule"], "keep 40.0 min");
    assert_eq!(node.get("/v1/status")["memory"]["in_use_mb"], 128);
    // Its own policy: kept one second, then dropped as expired.
    node.ok(&["deploy", "echo", "--keep-alive", "fixed:1s"]);
    node.ok(&["invoke", "echo", "--data", "2"]);
    let p = pool(&node);
    assert_eq!(p["policy"], "fixed:1s", "{p}");
    assert_eq!(p["schedule"], "keep 1 s", "{p}");
    wait_for("the idle instance to expire", || {
        let p = pool(&node);
        (p["idle"] == 0 && p["evictions"]["expired"] == 1).then_some(())
    });
    let p = pool(&node);
    assert_eq!(
        (p["invocations"].clone(), p["cold_starts"].clone()),
        (json!(2), json!(2)),
        "{p}"
    );
    // The same counters in the Prometheus text format.
    let metrics = node
        .http()
        .get(format!("{}/metrics", node.url))
        .send()
        .unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let metrics = metrics.text().unwrap();
    for line in [
        "lambent_pool_cold_starts_total{function=\"echo\"} 2",
        "lambent_pool_invocations_total{function=\"echo\"} 2",
        "lambent_pool_evictions_total{function=\"echo\",reason=\"expired\"} 1",
        "lambent_pool_instances{function=\"echo\",state=\"idle\"} 0",
        "lambent_memory_budget_mb 4096",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    // The store's group commit, in both: deploys and records were written, in no
    // more transactions than writes.
    let store = node.get("/v1/status")["store"].clone();
    let (transactions, writes) = (
        store["transactions"].as_u64().unwrap_or(0),
        store["writes"].as_u64().unwrap_or(0),
    );
    assert!(
        transactions > 0 && writes >= transactions && store["synced_commits"].as_u64() > Some(0),
        "{store}"
    );
    let counter = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"));
        line[name.len() + 1..].parse().unwrap()
    };
    assert!(counter("lambent_store_writes_total") >= writes, "{metrics}");
    assert!(
        counter("lambent_store_transactions_total") >= transactions,
        "{metrics}"
    );
    counter("lambent_store_synced_commits_total");
    counter("lambent_store_background_syncs_total");
    // "" returns it to the node's policy.
    node.ok(&["deploy", "echo", "--keep-alive", ""]);
    node.ok(&["invoke", "echo", "--data", "3"]);
    assert_eq!(pool(&node)["policy"], "mdp:cost-ratio=5");
}

#[test]
fn a_relative_data_dir_works() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_in(Some(tmp.path()), std::path::Path::new("relative-data"), &[]);
    let _code = deploy_echo(&node, "echo");
    assert_eq!(node.ok(&["invoke", "echo", "--data", "7"]).trim(), "7");
    assert!(tmp.path().join("relative-data/lambent.db").is_file());
}

#[test]
fn a_synchronous_call_past_the_concurrency_limit_is_throttled_with_429() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let sink = Sink::start();
    let code = sink
        .app("def handler(event, context):\n    report_and_wait('started')\n    return 'done'\n");
    let env = sink.env();
    node.deploy_app(
        "single",
        "python3.11",
        code.path(),
        &[
            "--concurrency",
            "1",
            "--timeout",
            "60",
            "--grant",
            "net",
            "--env",
            &env,
        ],
    );
    let url = node.url.clone();
    let first = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{url}/v1/functions/single/invoke"))
            .body("{}")
            .send()
            .unwrap()
            .text()
            .unwrap()
    });
    wait_for("the first call to be running", || {
        sink.lines().contains(&"started".to_owned()).then_some(())
    });
    let resp = node.invoke_raw("single", "{}");
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "throttled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrency limit of 1")
    );
    sink.release();
    assert_eq!(first.join().unwrap(), "\"done\"");
    // The throttled call was never run, so never recorded.
    assert_eq!(node.invocations("single").len(), 1);
}

/// Finding 12: a page of invocations is bounded in records and in bytes of logs, and
/// says where the next page starts.
#[test]
fn invocation_listings_are_paginated_with_bounded_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        "def handler(e, c):\n    print('y' * (300 * 1024))\n    return 1\n",
    )]);
    node.deploy_app("loud", "python3.11", code.path(), &[]);
    for _ in 0..20 {
        node.ok(&["invoke", "loud"]);
    }
    let resp = node
        .http()
        .get(format!(
            "{}/v1/invocations?function=loud&limit=10000",
            node.url
        ))
        .send()
        .unwrap();
    let body = resp.bytes().unwrap();
    assert!(
        body.len() < 5 * 1024 * 1024,
        "a page of {} bytes",
        body.len()
    );
    let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let first = page["invocations"].as_array().unwrap().len();
    assert!(first > 0 && first < 20, "{first} records in the first page");
    let after = page["next_after"].as_i64().unwrap();
    let rest = node.get(&format!(
        "/v1/invocations?function=loud&after={after}&limit=10000"
    ));
    assert_eq!(first + rest["invocations"].as_array().unwrap().len(), 20);
}
