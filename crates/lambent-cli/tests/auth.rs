//! API tokens: with auth on, every route refuses a missing, wrong or out-of-scope
//! token, and a revoked token stops working at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// The admin token a node printed at its first start (in its log).
fn admin_token(node: &Node) -> String {
    let log = std::fs::read_to_string(node.data_dir.with_extension("log")).unwrap();
    log.lines()
        .find_map(|l| l.split("admin token").nth(1)?.rsplit(": ").next())
        .map(|t| t.trim().to_owned())
        .unwrap_or_else(|| panic!("no admin token in the log:\n{log}"))
}

fn create(node: &Node, admin: &str, scope: &str) -> (String, String) {
    let v: Value = node
        .http()
        .post(format!("{}/v1/tokens", node.url))
        .bearer_auth(admin)
        .json(&json!({"scope": scope, "name": format!("{scope} token")}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// Every route of the control API, with the scope it needs.
fn routes() -> Vec<(Method, &'static str, &'static str)> {
    vec![
        (Method::GET, "/v1/functions", "read"),
        (Method::POST, "/v1/functions", "admin"),
        (Method::GET, "/v1/functions/f", "read"),
        (Method::PUT, "/v1/functions/f", "admin"),
        (Method::DELETE, "/v1/functions/f", "admin"),
        (Method::POST, "/v1/functions/f/invoke", "invoke"),
        (Method::POST, "/v1/events", "publish"),
        (Method::GET, "/v1/events/lookup?source=s&id=i", "read"),
        (Method::GET, "/v1/rules", "read"),
        (Method::POST, "/v1/rules", "admin"),
        (Method::DELETE, "/v1/rules/r", "admin"),
        (Method::GET, "/v1/invocations", "read"),
        (Method::GET, "/v1/dlq", "read"),
        (Method::POST, "/v1/dlq/redrive", "admin"),
        (Method::GET, "/v1/status", "read"),
        (Method::GET, "/v1/tokens", "admin"),
        (Method::POST, "/v1/tokens", "admin"),
        (Method::DELETE, "/v1/tokens/tok_x", "admin"),
        (Method::GET, "/v1/schedules", "read"),
        (Method::POST, "/v1/schedules", "admin"),
        (Method::DELETE, "/v1/schedules/s", "admin"),
        (Method::GET, "/v1/routes", "read"),
        (Method::POST, "/v1/routes", "admin"),
        (Method::DELETE, "/v1/routes?method=GET&path=/x", "admin"),
        (Method::GET, "/v1/sources", "read"),
        (Method::POST, "/v1/sources", "admin"),
        (Method::DELETE, "/v1/sources/s", "admin"),
        (Method::GET, "/v1/namespaces", "read"),
        (Method::POST, "/v1/namespaces", "admin"),
        (Method::GET, "/v1/kv/ns", "read"),
        (Method::GET, "/v1/kv/ns/k", "read"),
        (Method::PUT, "/v1/kv/ns/k", "publish"),
        (Method::DELETE, "/v1/kv/ns/k", "publish"),
        (Method::GET, "/v1/no-such-route", "read"),
    ]
}

#[test]
fn every_route_refuses_a_missing_wrong_or_out_of_scope_token() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("data"), &["--auth"]);
    let admin = admin_token(&node);
    let scopes = ["publish", "invoke", "read"];
    let tokens: Vec<(&str, String)> = scopes
        .iter()
        .map(|s| (*s, create(&node, &admin, s).1))
        .collect();
    let http = node.http();
    let send = |method: &Method, path: &str, token: Option<&str>| {
        let mut rb = http
            .request(method.clone(), format!("{}{path}", node.url))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().unwrap().status().as_u16()
    };
    for (method, path, needed) in routes() {
        assert_eq!(
            send(&method, path, None),
            401,
            "{method} {path} without a token"
        );
        assert_eq!(
            send(&method, path, Some("lam_wrong")),
            401,
            "{method} {path} with a wrong token"
        );
        for (scope, token) in &tokens {
            let status = send(&method, path, Some(token));
            if *scope == needed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} refused its own scope {scope}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} with scope {scope}");
            }
        }
        let status = send(&method, path, Some(&admin));
        assert!(
            status != 401 && status != 403,
            "{method} {path} refused the admin token: {status}"
        );
    }
    // Health stays public (load balancers probe it).
    assert_eq!(send(&Method::GET, "/healthz", None), 200);
    assert_eq!(node.get_with("/v1/status", &admin)["limits"]["auth"], true);
}

#[test]
fn a_revoked_token_stops_working_at_once_and_the_cli_sends_lambent_token() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("data"), &["--auth"]);
    let admin = admin_token(&node);

    // The CLI without a token is refused, with a message saying what to do.
    let out = node.cli(&["ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LAMBENT_TOKEN"));

    let cli = |token: &str, args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("LAMBENT_URL", &node.url)
            .env("LAMBENT_TOKEN", token)
            .output()
            .unwrap()
    };
    let made = cli(
        &admin,
        &["tokens", "create", "--scope", "read", "--name", "dashboard"],
    );
    assert!(made.status.success());
    let reader = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert!(reader.starts_with("lam_"));
    assert!(cli(&reader, &["ls"]).status.success());
    // Read scope cannot make tokens.
    assert!(
        !cli(&reader, &["tokens", "create", "--scope", "admin"])
            .status
            .success()
    );

    let listed = String::from_utf8_lossy(&cli(&admin, &["tokens", "ls"]).stdout).into_owned();
    let id = listed
        .lines()
        .find(|l| l.contains("dashboard"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    // Only hashes are stored: the secret is nowhere in the database.
    let db = std::fs::read(node.data_dir.join("lambent.db")).unwrap();
    assert!(!db.windows(reader.len()).any(|w| w == reader.as_bytes()));

    assert!(cli(&admin, &["tokens", "revoke", &id]).status.success());
    let after = cli(&reader, &["ls"]);
    assert!(!after.status.success(), "a revoked token still works");
    let listed = String::from_utf8_lossy(&cli(&admin, &["tokens", "ls"]).stdout).into_owned();
    assert!(listed.contains("revoked"), "{listed}");
}

#[test]
fn a_node_on_a_public_address_requires_tokens_and_the_admin_token_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let node = Node::start_with(&data, &["--listen", "0.0.0.0:0"]);
    let admin = admin_token(&node);
    let status = node
        .http()
        .get(format!("{}/v1/status", node.url))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 401);
    assert_eq!(node.get_with("/v1/status", &admin)["limits"]["auth"], true);
    drop(node);
    // A restart makes no new admin token.
    let log = data.with_extension("log");
    std::fs::write(&log, "").unwrap();
    let node = Node::start_with(&data, &["--listen", "0.0.0.0:0"]);
    assert_eq!(node.get_with("/v1/status", &admin)["limits"]["auth"], true);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("admin token"), "{log}");
}
