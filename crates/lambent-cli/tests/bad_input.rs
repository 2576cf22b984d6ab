//! Bad input gets a clear error and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use zip::write::SimpleFileOptions;

fn post(node: &Node, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let resp = node
        .http()
        .post(format!("{}{path}", node.url))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in entries {
        w.start_file(*name, SimpleFileOptions::default()).unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn invalid_events_get_400_naming_the_problem_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    node.deploy_app("f", "python3.11", code.path(), &[]);
    node.ok(&[
        "rules",
        "add",
        "all",
        "--pattern",
        r#"{"source": [{"prefix": ""}]}"#,
        "--target",
        "f",
    ]);
    let ce = "application/cloudevents+json";
    let full = json!({"specversion": "1.0", "id": "x1", "source": "/s", "type": "t"});
    for missing in ["id", "source", "type", "specversion"] {
        let mut e = full.clone();
        e.as_object_mut().unwrap().remove(missing);
        let (status, body) = post(&node, "/v1/events", ce, &e.to_string());
        assert_eq!(status, 400, "{missing}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            message(&body).contains(&format!("`{missing}`")),
            "{missing}: {body}"
        );
    }
    let mut e = full.clone();
    e["specversion"] = json!("0.3");
    let (status, body) = post(&node, "/v1/events", ce, &e.to_string());
    assert_eq!(status, 400);
    assert!(message(&body).contains("specversion `0.3`"), "{body}");
    let (status, body) = post(&node, "/v1/events", ce, r#"{"specversion": "1.0", "id": "#);
    assert_eq!(status, 400);
    assert!(message(&body).contains("invalid JSON"), "{body}");
    // A batch with one bad event is refused whole: its good event is not stored either.
    let batch = json!([full, {"specversion": "1.0", "id": "x2", "source": "/s"}]);
    let (status, body) = post(
        &node,
        "/v1/events",
        "application/cloudevents-batch+json",
        &batch.to_string(),
    );
    assert_eq!(status, 400);
    assert!(message(&body).starts_with("event 1:"), "{body}");
    // Binary mode without ce-source.
    let resp = node
        .http()
        .post(format!("{}/v1/events", node.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b1")
        .header("ce-type", "t")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(message(&resp.json().unwrap()).contains("`source`"));

    // Nothing above was stored or delivered.
    let resp = node
        .http()
        .get(format!("{}/v1/events/lookup?source=/s&id=x1", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(node.get("/v1/status")["deliveries"], json!({}));
    assert!(node.invocations("f").is_empty());

    // Bad patterns and unknown targets are refused too.
    let (status, body) = post(
        &node,
        "/v1/rules",
        "application/json",
        r#"{"name": "r", "pattern": {"type": "t"}, "targets": ["f"]}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("pattern field `type`"), "{body}");
    let (status, body) = post(
        &node,
        "/v1/rules",
        "application/json",
        r#"{"name": "r", "pattern": {"type": ["t"]}, "targets": ["ghost"]}"#,
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        message(&body).contains("function `ghost` not found"),
        "{body}"
    );
    assert_eq!(node.get("/v1/rules")["rules"].as_array().unwrap().len(), 1);
}

#[test]
fn unknown_functions_are_404() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let (status, body) = post(
        &node,
        "/v1/functions/ghost/invoke",
        "application/json",
        "{}",
    );
    assert_eq!(status, 404);
    assert_eq!(message(&body), "function `ghost` not found");
    let resp = node
        .http()
        .delete(format!("{}/v1/functions/ghost", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    let out = node.cli(&["invoke", "ghost"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("function `ghost` not found"));
}

#[test]
fn a_body_over_the_limit_is_413_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let addr = node.url.trim_start_matches("http://").to_owned();
    // Announce a gigabyte, send a few bytes: the answer must come without the rest.
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/cloudevents+json\r\nContent-Length: 1000000000\r\n\r\n{{\"specversion\""
    )
    .unwrap();
    let mut answer = [0u8; 512];
    let n = conn.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("over the limit"), "{text}");

    // A single event over the per-event limit (256 KiB) inside an acceptable body.
    let big = json!({"specversion": "1.0", "id": "big", "source": "/s", "type": "t", "data": "x".repeat(300 * 1024)});
    let (status, body) = post(
        &node,
        "/v1/events",
        "application/cloudevents+json",
        &big.to_string(),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        message(&body).contains("over the limit of 262144 bytes"),
        "{body}"
    );
}

#[test]
fn unsafe_code_packages_are_refused_and_nothing_is_written_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = Node::start(&data);
    let marker = tmp.path().join("escaped.py");
    let escapes = [
        format!("../../../{}", marker.file_name().unwrap().to_str().unwrap()),
        "../evil.py".to_string(),
        marker.to_str().unwrap().to_string(),
    ];
    let deploy = |zip: Vec<u8>| {
        use base64::Engine as _;
        let body = json!({
            "runtime": "python3.11",
            "handler": "app.handler",
            "code_zip_base64": base64::engine::general_purpose::STANDARD.encode(zip),
        });
        let resp = node
            .http()
            .put(format!("{}/v1/functions/evil", node.url))
            .json(&body)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    for name in &escapes {
        let (status, body) = deploy(zip_of(&[
            ("app.py", b"def handler(e, c): pass"),
            (name, b"pwned"),
        ]));
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            message(&body).contains("outside the function's directory"),
            "{body}"
        );
    }
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("app.py", SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"def handler(e, c): pass").unwrap();
    w.add_symlink("link.py", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    let (status, body) = deploy(w.finish().unwrap().into_inner());
    assert_eq!(status, 400);
    assert!(message(&body).contains("symbolic link"), "{body}");
    let (status, _) = deploy(b"PK not really a zip".to_vec());
    assert_eq!(status, 400);

    assert!(!marker.exists());
    assert!(!data.join("code/evil.py").exists() && !data.join("evil.py").exists());
    let resp = node
        .http()
        .get(format!("{}/v1/functions/evil", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404, "no function was created");
    // Nothing half-unpacked was kept.
    assert_eq!(
        std::fs::read_dir(data.join("code/trees")).unwrap().count(),
        0
    );
}

#[test]
fn a_bad_redeploy_leaves_the_previous_version_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 'v1'\n")]);
    node.deploy_app("f", "python3.11", code.path(), &[]);
    let out = node.cli(&["deploy", "f", "--runtime", "cobol"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported runtime `cobol`"));
    let out = node.cli(&["deploy", "f", "--timeout", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout (s) must be between 1 and 900"));
    assert_eq!(node.ok(&["invoke", "f"]).trim(), "\"v1\"");
    assert_eq!(node.get("/v1/functions/f")["version"], 1);
}

#[test]
fn a_handler_that_does_not_exist_is_an_init_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    for (name, handler, error_type) in [
        ("nofn", "app.missing", "Runtime.HandlerNotFound"),
        ("nomod", "nowhere.handler", "Runtime.ImportModuleError"),
    ] {
        node.ok(&[
            "deploy",
            name,
            "--runtime",
            "python3.11",
            "--handler",
            handler,
            "--code",
            code.path().to_str().unwrap(),
        ]);
        let resp = node.invoke_raw(name, "{}");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-lambent-outcome"], "init_error");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["errorType"], error_type, "{body}");
        let rec = node.invocations(name).pop().unwrap();
        assert_eq!(rec["outcome"], "init_error");
        assert_eq!(rec["error_type"], error_type);
    }
}

#[test]
fn a_provided_function_without_a_bootstrap_is_refused_at_deploy() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let deploy = |files: &[(&str, &str)]| {
        let code = code_dir(files);
        let args = ["deploy", "nobootstrap", "--runtime", "provided", "--code"];
        let mut args = args.map(str::to_owned).to_vec();
        args.push(code.path().to_str().unwrap().to_owned());
        node.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = deploy(&[("main.sh", "echo hi\n")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs an executable `bootstrap`"), "{err}");
    // Nothing was recorded: the function does not exist.
    assert_eq!(node.invoke_raw("nobootstrap", "{}").status(), 404);
    // A bootstrap that is not executable is refused too.
    let out = deploy(&[("bootstrap", "#!/bin/sh\n")]);
    assert!(!out.status.success());
    assert_eq!(node.invoke_raw("nobootstrap", "{}").status(), 404);
}
