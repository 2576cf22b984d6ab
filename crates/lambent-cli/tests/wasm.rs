//! The WebAssembly runtime through the real binary, with guests built from source
//! (`sdk/rust`): handlers on events, a wasi:http component on a route, the limits
//! (time, memory, stack, outbound hosts) and deploy-time refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Node, event, guest, wait_for};
use serde_json::{Value, json};
use std::io::{Read, Write};

fn deploy(node: &Node, name: &str, wasm: &str, extra: &[&str]) {
    let code = guest(wasm);
    let mut args = vec![
        "deploy",
        name,
        "--runtime",
        "wasm",
        "--code",
        code.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    node.ok(&args);
}

/// Invokes synchronously; the outcome header and the body.
fn invoke(node: &Node, name: &str, payload: &Value) -> (String, Value) {
    let resp = node.invoke_raw(name, &payload.to_string());
    assert_eq!(resp.status(), 200);
    let outcome = resp
        .headers()
        .get("x-lambent-outcome")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "success".into());
    (outcome, resp.json().unwrap())
}

fn last_logs(node: &Node, function: &str) -> String {
    node.invocations(function)
        .last()
        .map(|i| i["logs"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

#[test]
fn the_hello_handler_and_the_rust_seed_listener_run_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    deploy(&node, "hello", "hello", &[]);
    let (outcome, body) = invoke(&node, "hello", &json!({"name": "Ada"}));
    assert_eq!(outcome, "success", "{body}");
    assert_eq!(body["message"], "Hello, Ada!");
    assert_eq!(body["function"], "hello");
    assert!(last_logs(&node, "hello").contains("hello handled request"));
    let function = node.get("/v1/functions/hello");
    assert_eq!(
        (
            function["runtime"].as_str(),
            function["concurrency"].as_u64()
        ),
        (Some("wasm"), Some(100))
    );
    // The CLI's invoke says the same.
    assert!(
        node.ok(&["invoke", "hello", "--data", r#"{"name": "Bo"}"#])
            .contains("Hello, Bo!")
    );

    deploy(&node, "listener", "seed_listener", &[]);
    node.ok(&[
        "rules",
        "add",
        "seed",
        "--pattern",
        r#"{"type": ["user_action", "data_update", "timer_trigger"]}"#,
        "--target",
        "listener",
    ]);
    for (i, ty) in ["user_action", "data_update", "timer_trigger"]
        .iter()
        .enumerate()
    {
        let (status, _) = node.publish(&event(&format!("e{i}"), ty, json!({"n": i})));
        assert_eq!(status, 202);
    }
    let logs = wait_for("three events handled", || {
        let done: Vec<Value> = node.invocations("listener");
        (done.len() == 3).then(|| {
            done.iter()
                .map(|i| {
                    assert_eq!(i["outcome"], "success", "{i}");
                    i["logs"].as_str().unwrap().to_owned()
                })
                .collect::<String>()
        })
    });
    for (i, ty) in ["user_action", "data_update", "timer_trigger"]
        .iter()
        .enumerate()
    {
        assert!(
            logs.contains(&format!("{ty} handled: {{\"n\":{i}}}")),
            "{logs}"
        );
    }
    let (_, body) = invoke(
        &node,
        "listener",
        &json!({"type": "data_update", "data": {}}),
    );
    assert_eq!(body["handled"], "data_update");
}

#[test]
fn a_wasi_http_component_serves_a_route_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    // Built against the plain `wasi` crate's proxy export, as for `wasmtime serve`.
    deploy(&node, "http-hello", "http_hello", &[]);
    node.ok(&[
        "routes",
        "add",
        "--method",
        "GET",
        "--path",
        "/hello/{rest+}",
        "--target",
        "http-hello",
        "--public",
    ]);
    let resp = node
        .http()
        .get(format!("{}/hello/there?x=1", node.routes_url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.text().unwrap(),
        "Hello from wasi:http at /hello/there?x=1\n"
    );
}

/// A loopback HTTP server answering `ok` to every request, and the requests' Host headers.
fn ok_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let host = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("host: ")
                        .or_else(|| l.strip_prefix("Host: "))
                })
                .unwrap_or("")
                .to_owned();
            let _ = tx.send(host);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, rx)
}

#[test]
fn each_limit_ends_in_its_documented_outcome_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let (port, hosts) = ok_server();
    let grant = format!("net:127.0.0.1:{port}");
    deploy(
        &node,
        "limits",
        "limits",
        &["--timeout", "3", "--memory", "128", "--grant", &grant],
    );
    deploy(&node, "hello", "hello", &[]);

    // An infinite loop is stopped at its timeout; another function runs meanwhile.
    let looping = {
        let url = node.url.clone();
        std::thread::spawn(move || {
            let resp = reqwest::blocking::Client::new()
                .post(format!("{url}/v1/functions/limits/invoke"))
                .body(r#"{"do": "loop"}"#)
                .send()
                .unwrap();
            let outcome = resp.headers()["x-lambent-outcome"]
                .to_str()
                .unwrap()
                .to_owned();
            (outcome, resp.json::<Value>().unwrap())
        })
    };
    wait_for("the loop running", || {
        node.get("/v1/status")
            .to_string()
            .contains("limits")
            .then_some(())
    });
    let (outcome, body) = invoke(&node, "hello", &json!({"name": "meanwhile"}));
    assert_eq!(
        (outcome.as_str(), &body["message"]),
        ("success", &json!("Hello, meanwhile!"))
    );
    assert!(
        !looping.is_finished(),
        "hello was answered while the loop ran"
    );
    let (outcome, body) = looping.join().unwrap();
    assert_eq!(outcome, "timeout", "{body}");
    assert_eq!(body["errorType"], "Sandbox.Timedout");

    // A memory bomb traps as out of memory; deep recursion as a stack overflow; a
    // panic as a trap, with its message in the log. None is the handler's error.
    for (what, error_type) in [
        ("oom", "Runtime.OutOfMemory"),
        ("recurse", "Runtime.StackOverflow"),
        ("panic", "Runtime.Trap"),
    ] {
        let (outcome, body) = invoke(&node, "limits", &json!({"do": what}));
        assert_eq!(outcome, "crash", "{what}: {body}");
        assert_eq!(body["errorType"], error_type, "{what}: {body}");
    }
    assert!(last_logs(&node, "limits").contains("asked to panic"));
    let (_, body) = invoke(&node, "limits", &json!({"do": "oom"}));
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("its limit is 128 MiB"),
        "{body}"
    );

    // Outbound HTTP: the granted address answers, with the request's own Host.
    let (outcome, body) = invoke(
        &node,
        "limits",
        &json!({"do": "fetch", "url": format!("http://127.0.0.1:{port}/x")}),
    );
    assert_eq!(outcome, "success", "{body}");
    assert_eq!(
        (body["status"].as_u64(), body["body"].as_str()),
        (Some(200), Some("ok"))
    );
    assert_eq!(body["host_header_refused"], true);
    assert_eq!(hosts.recv().unwrap(), format!("127.0.0.1:{port}"));
    // Anything else is denied: an unlisted host, another loopback port, the
    // metadata address.
    for url in [
        "http://example.com/".to_owned(),
        format!("http://127.0.0.1:{}/", port + 1),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let (outcome, body) = invoke(&node, "limits", &json!({"do": "fetch", "url": url}));
        assert_eq!(outcome, "success", "{body}");
        assert_eq!(
            body["error"], "ErrorCode::HttpRequestDenied",
            "{url}: {body}"
        );
        assert!(last_logs(&node, "limits").contains("denied"), "{url}");
    }
    assert!(
        hosts.try_recv().is_err(),
        "a denied request reached the server"
    );

    // The node still serves.
    let (outcome, _) = invoke(&node, "hello", &json!({}));
    assert_eq!(outcome, "success");
}

#[test]
fn deploy_refuses_ungranted_imports_and_broken_code_and_the_previous_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let counter = guest("counter");
    let counter = counter.to_str().unwrap();

    // The counter imports key-value and events: refused without their grants, naming
    // the import.
    let out = node.cli(&["deploy", "counter", "--runtime", "wasm", "--code", counter]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lambent:function/kv") && err.contains("--grant kv:"),
        "{err}"
    );
    let out = node.cli(&[
        "deploy",
        "limits",
        "--runtime",
        "wasm",
        "--code",
        guest("limits").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wasi:http/outgoing-handler"),
        "{err}"
    );

    node.ok(&[
        "deploy",
        "counter",
        "--runtime",
        "wasm",
        "--code",
        counter,
        "--grant",
        "kv:tally",
        "--grant",
        "publish:counted",
        "--env",
        "NAMESPACE=tally",
    ]);
    // What it publishes reaches a listener.
    deploy(&node, "hello", "hello", &[]);
    node.ok(&[
        "rules",
        "add",
        "counted",
        "--pattern",
        r#"{"type": ["counted"]}"#,
        "--target",
        "hello",
    ]);
    for expected in 1..=2 {
        let (outcome, body) = invoke(
            &node,
            "counter",
            &json!({"key": "hits", "publish": "counted"}),
        );
        assert_eq!(outcome, "success", "{body}");
        assert_eq!(body["count"], expected);
    }
    assert!(last_logs(&node, "counter").contains("[INFO] hits is now 2"));
    // The namespace came from its configuration (`NAMESPACE`).
    assert!(node.ok(&["kv", "get", "tally", "hits"]).contains('2'));
    wait_for("both published events handled by hello", || {
        (node.invocations("hello").len() == 2).then_some(())
    });
    // A handler's error result is a function error, not a crash.
    let (outcome, body) = invoke(&node, "counter", &json!({"key": "other", "fail": true}));
    assert_eq!(
        (outcome.as_str(), body["errorType"].as_str()),
        ("function_error", Some("CounterError"))
    );
    // Publishing a type it was not granted is refused inside the function.
    let (outcome, body) = invoke(
        &node,
        "counter",
        &json!({"key": "x", "publish": "other_type"}),
    );
    assert_eq!(
        (outcome.as_str(), body["errorType"].as_str()),
        ("function_error", Some("Publish.Denied")),
        "{body}"
    );
    // A delete through the SDK removes the key.
    assert!(node.ok(&["kv", "get", "tally", "x"]).contains('1'));
    let (outcome, body) = invoke(&node, "counter", &json!({"key": "x", "reset": true}));
    assert_eq!((outcome.as_str(), &body["count"]), ("success", &json!(0)));
    assert!(!node.cli(&["kv", "get", "tally", "x"]).status.success());

    // A truncated component and a core module are refused; version 1 keeps serving.
    let bytes = std::fs::read(counter).unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let out = node.cli(&["deploy", "counter", "--code", broken.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a valid component"),
        "{err}"
    );
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = node.cli(&["deploy", "counter", "--code", core.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("core module"),
        "{err}"
    );
    let (_, body) = invoke(&node, "counter", &json!({"key": "hits"}));
    assert_eq!(body["count"], 3);
    assert_eq!(node.get("/v1/functions/counter")["version"], 1);

    // Compiled code is cached on disk; a damaged cache file is compiled again, not
    // trusted, after a restart.
    let cache = node.data_dir.join("wasm-cache");
    let cached: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    // The counter's, hello's, and the refused `limits` one (compiled before its
    // grants were checked).
    assert_eq!(cached.len(), 3, "{cached:?}");
    for file in &cached {
        std::fs::write(file, b"not compiled code").unwrap();
    }
    let mut node = node;
    node.terminate();
    let node = Node::start(&node.data_dir);
    let (outcome, body) = invoke(&node, "counter", &json!({"key": "hits"}));
    assert_eq!(
        (outcome.as_str(), &body["count"]),
        ("success", &json!(4)),
        "{body}"
    );
    let recompiled = cached
        .iter()
        .filter(|f| std::fs::read(f).unwrap().len() > 1000)
        .count();
    assert_eq!(
        recompiled, 1,
        "the counter's code compiled and cached again"
    );
}

/// A loopback HTTP server that holds every request until the test releases them,
/// then answers them all and every later one: the most held at once is the most
/// invocations the node ran at once.
type Held = std::sync::Arc<(std::sync::Mutex<Holding>, std::sync::Condvar)>;

fn holding_server() -> (u16, Held) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state: Held = Default::default();
    let shared = state.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let state = shared.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let (lock, changed) = &*state;
                let mut h = lock.lock().unwrap();
                h.waiting += 1;
                h.most = h.most.max(h.waiting);
                while !h.released {
                    h = changed.wait(h).unwrap();
                }
                h.waiting -= 1;
                h.answered += 1;
                drop(h);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    (port, state)
}

#[derive(Default)]
struct Holding {
    waiting: usize,
    most: usize,
    answered: usize,
    released: bool,
}

/// More invocations in flight than the wasm pool has instance slots wait for a slot
/// (as a Spin or Lambda caller's request would queue) instead of failing as traps.
/// The node runs with two slots; four calls block in outbound HTTP until released,
/// so two run and two wait. A deploy meanwhile does not wait for a slot.
#[test]
fn invocations_past_the_pools_slots_wait_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_wrapped(
        &["env", "LAMBENT_WASM_INSTANCES=2"],
        None,
        &dir.path().join("data"),
        &[],
    );
    let (port, server) = holding_server();
    let grant = format!("net:127.0.0.1:{port}");
    deploy(
        &node,
        "limits",
        "limits",
        &["--timeout", "60", "--concurrency", "4", "--grant", &grant],
    );
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = node.url.clone();
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::new()
                    .post(format!("{url}/v1/functions/limits/invoke"))
                    .body(
                        json!({"do": "fetch", "url": format!("http://127.0.0.1:{port}/")})
                            .to_string(),
                    )
                    .send()
                    .unwrap();
                let outcome = resp
                    .headers()
                    .get("x-lambent-outcome")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_else(|| "success".into());
                (outcome, resp.json::<Value>().unwrap())
            })
        })
        .collect();
    wait_for("two calls held in the server", || {
        (server.0.lock().unwrap().waiting == 2).then_some(())
    });
    deploy(&node, "hello", "hello", &[]);
    {
        let mut h = server.0.lock().unwrap();
        assert_eq!(h.waiting, 2, "only two run at once");
        h.released = true;
        server.1.notify_all();
    }
    for call in calls {
        let (outcome, body) = call.join().unwrap();
        assert_eq!(
            (outcome.as_str(), body["body"].as_str()),
            ("success", Some("ok")),
            "{body}"
        );
    }
    let h = server.0.lock().unwrap();
    assert_eq!((h.answered, h.most), (4, 2));
}
