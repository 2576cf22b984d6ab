//! The control API's listener under a flood of idle connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;

/// Finding 20: with the node's open-file limit at most 1024, 1,100 connections that never
/// finish their headers must not stop `/healthz`, publish or invoke: idle ones are
/// closed after the header-read timeout and the connection cap keeps descriptors free.
#[test]
fn idle_connections_cannot_starve_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_wrapped(
        // A soft limit of 512 (as some service managers set), a hard one of 1024:
        // the node raises its own limit to the hard one.
        &["prlimit", "--nofile=512:1024"],
        None,
        &tmp.path().join("data"),
        &["--header-read-timeout", "2"],
    );
    let status = node.get("/v1/status");
    assert_eq!(status["limits"]["open_files"], 1024, "{status}");
    let cap = status["limits"]["max_connections"].as_u64().unwrap();
    assert!(cap < 1024, "{status}");

    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        // The kernel completes the handshake for connections in the backlog too.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        idle.push(s);
    }
    let health = node
        .http()
        .get(format!("{}/healthz", node.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let (code, _) = node.publish(&event("after-flood", "t", serde_json::json!({})));
    assert_eq!(code, 202);
    drop(idle);
}
