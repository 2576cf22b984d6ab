//! A node's lifecycle through the real binary: one node per data directory, a
//! SIGTERM drains and settles running attempts, and no function process outlives a
//! kill -9 of its node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::json;
use std::process::Command;

/// Finding 6: a second node on a live data directory fails at start, naming the
/// holder, and the live node keeps working.
#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = Node::start(&data);
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 'pong'\n")]);
    node.deploy_app("ping", "python3.11", code.path(), &[]);
    assert!(node.ok(&["invoke", "ping"]).contains("pong"));

    let second = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another lambent node")
            && stderr.contains(&format!("pid {}", node.pid())),
        "{stderr}"
    );
    // The live node's instances and leases were left alone.
    assert!(node.ok(&["invoke", "ping"]).contains("pong"));
    let status = node.get("/v1/status");
    assert_eq!(status["warm_instances"]["ping"], 1, "{status}");
}

/// Finding 10: runtime processes die with their node, even by kill -9 — also one
/// busy inside a handler (an idle one would notice its Runtime API vanish).
#[test]
fn no_function_process_outlives_a_kill_9_of_its_node() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let sink = Sink::start();
    let code =
        sink.app("import time\ndef handler(e, c):\n    report('busy')\n    time.sleep(300)\n");
    // A marker in the function's environment finds its processes on the host (in a
    // sandbox, the pid it sees is its namespace's, not the host's).
    let marker = host_marker("LIFECYCLE");
    let env = sink.env();
    node.deploy_app(
        "busy",
        "python3.11",
        code.path(),
        &[
            "--timeout",
            "600",
            "--grant",
            "net",
            "--env",
            &env,
            "--env",
            &marker,
        ],
    );
    node.ok(&["invoke", "busy", "--async"]);
    wait_for("the handler to start", || {
        sink.lines().contains(&"busy".to_owned()).then_some(())
    });
    let pids = processes_with_env(&marker);
    assert!(!pids.is_empty(), "no process carries {marker}");
    assert_eq!(live(&pids), pids);
    // The node's own cgroups (pids controller), beside this test's: the next node
    // to start sweeps those of a dead one.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let pids_path = own
        .lines()
        .find_map(|l| {
            l.splitn(3, ':')
                .nth(2)
                .filter(|_| l.split(':').nth(1) == Some("pids"))
        })
        .unwrap()
        .trim_start_matches('/')
        .to_owned();
    let groups = std::path::Path::new("/sys/fs/cgroup/pids")
        .join(pids_path)
        .join("lambent")
        .join(format!("node-{}", node.pid()));
    assert!(groups.is_dir(), "no cgroups at {}", groups.display());
    let data = node.data_dir.clone();
    node.kill9();
    wait_for("the function's process to die with its node", || {
        live(&pids).is_empty().then_some(())
    });
    let _next = Node::start(&data);
    assert!(!groups.exists(), "{} outlived its node", groups.display());
}

/// SIGTERM stops intake, lets running attempts finish and settle, and exits; after a
/// restart every acknowledged event is handled, and none that finished ran twice.
#[test]
fn sigterm_drains_running_attempts_and_nothing_acknowledged_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sink = Sink::start();
    let code = sink.app("import time\n\
def handler(event, context):\n    report('start ' + event['id'])\n    time.sleep(1.5)\n    report('end ' + event['id'])\n");
    let mut node = Node::start(&data);
    let env = sink.env();
    node.deploy_app(
        "slow",
        "python3.11",
        code.path(),
        &["--concurrency", "2", "--grant", "net", "--env", &env],
    );
    node.ok(&[
        "rules",
        "add",
        "slow",
        "--pattern",
        r#"{"type": ["slow"]}"#,
        "--target",
        "slow",
    ]);
    let ids: Vec<String> = (0..6).map(|i| format!("drain-{i}")).collect();
    for id in &ids {
        let (status, _) = node.publish(&event(id, "slow", json!({})));
        assert_eq!(status, 202);
    }
    let lines = || sink.lines();
    let started_now = |l: &[String]| -> Vec<String> {
        l.iter()
            .filter_map(|x| x.strip_prefix("start ").map(str::to_owned))
            .collect()
    };
    // Both slots busy: the next attempt could only start when one of these finishes,
    // 1.5 s from now, which is after the signal.
    let running = wait_for("two attempts to start", || {
        let s = started_now(&lines());
        (s.len() >= 2).then_some(s)
    });
    let status = node.terminate();
    assert!(status.success(), "the node exited with {status}");
    let at_exit = lines();
    let started = started_now(&at_exit);
    assert_eq!(
        started, running,
        "a draining node started new attempts (from leases taken ahead)"
    );
    for id in &started {
        assert!(
            at_exit.contains(&format!("end {id}")),
            "{id} was running at SIGTERM and did not finish before exit: {at_exit:?}"
        );
    }

    let node = Node::start(&data);
    wait_for("every acknowledged event to be handled", || {
        let l = lines();
        ids.iter()
            .all(|id| l.contains(&format!("end {id}")))
            .then_some(())
    });
    let l = lines();
    for id in &started {
        let runs = l.iter().filter(|x| **x == format!("start {id}")).count();
        assert_eq!(runs, 1, "{id} finished before exit but ran again: {l:?}");
    }
    assert!(node.dead_letters("slow").is_empty());
}

/// Finding 14: a node refuses to start on an emptied database instead of starting
/// as an empty node, and says which file and how to recover.
#[test]
fn a_node_refuses_an_emptied_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = Node::start(&data);
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    node.deploy_app("kept", "python3.11", code.path(), &[]);
    drop(node);
    let db = data.join("lambent.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("lambent.db{suffix}")));
    }
    std::fs::write(&db, b"").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lambent.db") && stderr.contains("empty") && stderr.contains("backup"),
        "{stderr}"
    );
}
