//! Event sources through the real binary: the key-value store, HTTP routes (sync and
//! event mode, public or not), schedules, and `lambent up` with its manifest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BIN, Node, code_dir, repo_root, wait_for};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// A handler that prints the event it got (one JSON line) and answers what the
/// event's `answer` field says, or a default answer.
const ECHO: &str = "import json\n\
def handler(event, context):\n    print('EVENT ' + json.dumps(event))\n    \
if isinstance(event, dict) and 'rawPath' in event:\n        \
return {'statusCode': 201, 'headers': {'X-Seen': event['rawPath']}, 'cookies': ['a=1', 'b=2; Path=/'], 'body': json.dumps({'id': event.get('pathParameters', {}).get('id'), 'q': event.get('queryStringParameters'), 'body': event.get('body')})}\n    \
return {'ok': True}\n";

/// The events a function printed, in the order its invocations ran.
fn seen(node: &Node, function: &str) -> Vec<Value> {
    node.invocations(function)
        .iter()
        .flat_map(|i| {
            i["logs"]
                .as_str()
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.strip_prefix("EVENT "))
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn echo(node: &Node) -> tempfile::TempDir {
    let code = code_dir(&[("app.py", ECHO)]);
    node.deploy_app("echo", "python3", code.path(), &[]);
    code
}

#[test]
fn a_kv_put_is_a_data_change_event_and_a_stale_cas_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let _code = echo(&node);
    node.ok(&["kv", "types", "profiles", "--put-type", "data_update"]);
    node.ok(&[
        "rules",
        "add",
        "changes",
        "--pattern",
        r#"{"type": ["data_update"]}"#,
        "--target",
        "echo",
    ]);
    let put = node.ok(&["kv", "put", "profiles", "users/ada", r#"{"name": "Ada"}"#]);
    let revision: u64 = put.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let events = wait_for("the change event handled", || {
        let s = seen(&node, "echo");
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(events[0]["type"], "data_update");
    assert_eq!(events[0]["subject"], "users/ada");
    assert_eq!(events[0]["data"]["operation"], "put");
    assert_eq!(events[0]["data"]["value"], json!({"name": "Ada"}));
    assert_eq!(events[0]["data"]["revision"], revision);

    // Compare-and-swap: the current revision wins, a stale one is refused.
    node.ok(&[
        "kv",
        "put",
        "profiles",
        "users/ada",
        r#"{"name": "Ada L."}"#,
        "--if-revision",
        &revision.to_string(),
    ]);
    let stale = node.cli(&[
        "kv",
        "put",
        "profiles",
        "users/ada",
        r#"{"name": "Eve"}"#,
        "--if-revision",
        &revision.to_string(),
    ]);
    assert!(!stale.status.success());
    let message = String::from_utf8_lossy(&stale.stderr);
    assert!(
        message.contains("409") && message.contains("not"),
        "{message}"
    );
    assert_eq!(
        node.ok(&["kv", "get", "profiles", "users/ada"]).trim(),
        r#"{"name":"Ada L."}"#
    );
    let listed = node.ok(&["kv", "ls", "profiles", "users/"]);
    assert!(listed.contains("users/ada"), "{listed}");
    // Two changes, two events; the refused one made none.
    wait_for("both changes handled", || {
        (seen(&node, "echo").len() == 2).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(seen(&node, "echo").len(), 2);

    // A delete is an event too (of the namespace's delete type), and the key is gone.
    let deleted = node.ok(&["kv", "del", "profiles", "users/ada"]);
    let revision = deleted
        .trim()
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let event = node.get(&format!(
        "/v1/events/lookup?source=lambent/kv/profiles&id={revision}"
    ));
    assert_eq!(event["event"]["type"], "lambent.kv.delete", "{event}");
    assert_eq!(event["event"]["data"]["value"], json!({"name": "Ada L."}));
    assert!(
        !node
            .cli(&["kv", "get", "profiles", "users/ada"])
            .status
            .success()
    );
}

#[test]
fn a_kill_9_right_after_a_kv_write_loses_neither_the_write_nor_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = Node::start(&data);
    let _code = echo(&node);
    node.ok(&[
        "rules",
        "add",
        "changes",
        "--pattern",
        r#"{"source": [{"prefix": "lambent/kv/"}]}"#,
        "--target",
        "echo",
    ]);
    // The function's first cold start takes longer than the kill: the write is
    // acknowledged, its delivery not yet run.
    for i in 0..20 {
        node.ok(&["kv", "put", "orders", &format!("o/{i}"), &i.to_string()]);
    }
    node.kill9();
    let node = Node::start(&data);
    let events = wait_for("every change handled after the restart", || {
        let s = seen(&node, "echo");
        (s.len() >= 20).then_some(s)
    });
    let mut keys: Vec<String> = events
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20, "each write's event arrived: {keys:?}");
    for i in 0..20 {
        assert_eq!(
            node.ok(&["kv", "get", "orders", &format!("o/{i}")]).trim(),
            i.to_string()
        );
    }
}

#[test]
fn routes_answer_with_the_function_or_store_the_request_as_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let _code = echo(&node);
    node.ok(&[
        "routes",
        "add",
        "--method",
        "POST",
        "--path",
        "/users/{id}",
        "--target",
        "echo",
        "--public",
    ]);
    node.ok(&[
        "routes",
        "add",
        "--method",
        "POST",
        "--path",
        "/actions",
        "--target",
        "echo",
        "--mode",
        "event",
        "--type",
        "user_action",
        "--public",
    ]);
    node.ok(&[
        "routes", "add", "--method", "GET", "--path", "/private", "--target", "echo",
    ]);
    let http = node.http();

    let resp = http
        .post(format!("{}/users/42?x=1", node.routes_url))
        .header("content-type", "application/json")
        .body(r#"{"hello": "world"}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-seen"], "/users/42");
    let cookies: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2; Path=/"]);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["id"], "42");
    assert_eq!(body["q"], json!({"x": "1"}));
    assert_eq!(body["body"], r#"{"hello": "world"}"#);

    let resp = http
        .post(format!("{}/actions", node.routes_url))
        .header("content-type", "application/json")
        .body(r#"{"user": "alice", "action": "login"}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = wait_for("the request handled as an event", || {
        seen(&node, "echo")
            .into_iter()
            .find(|e| e["id"] == id.as_str())
    });
    assert_eq!(event["type"], "user_action");
    assert_eq!(event["data"], json!({"user": "alice", "action": "login"}));

    // Not declared public: a token is needed, and an invoke-scoped one works.
    let refused = http
        .get(format!("{}/private", node.routes_url))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let token = node
        .ok(&["tokens", "create", "--scope", "invoke"])
        .trim()
        .to_owned();
    let read_only = node
        .ok(&["tokens", "create", "--scope", "read"])
        .trim()
        .to_owned();
    let forbidden = http
        .get(format!("{}/private", node.routes_url))
        .bearer_auth(&read_only)
        .send()
        .unwrap();
    assert_eq!(forbidden.status().as_u16(), 403);
    let allowed = http
        .get(format!("{}/private", node.routes_url))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 201);

    assert_eq!(
        http.get(format!("{}/nothing", node.routes_url))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        http.delete(format!("{}/actions", node.routes_url))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        405
    );
    let bad = node.cli(&[
        "routes", "add", "--method", "GET", "--path", "/x", "--target", "nobody",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nobody"));
}

#[test]
fn a_schedule_fires_its_event_at_its_nominal_times() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let _code = echo(&node);
    node.ok(&[
        "schedules",
        "add",
        "every-second",
        "--cron",
        "* * * * * *",
        "--type",
        "timer_trigger",
        "--target",
        "echo",
        "--data",
        r#"{"job": "tick"}"#,
    ]);
    let events = wait_for("two firings handled", || {
        let s = seen(&node, "echo");
        (s.len() >= 2).then_some(s)
    });
    for e in &events {
        assert_eq!(e["type"], "timer_trigger");
        assert_eq!(e["data"], json!({"job": "tick"}));
        let id = e["id"].as_str().unwrap();
        assert!(id.starts_with("schedule/every-second/"), "{id}");
        // The id is the nominal time, a whole second.
        assert!(id.ends_with(".000Z"), "{id}");
        assert_eq!(
            e["time"].as_str().unwrap(),
            &id["schedule/every-second/".len()..]
        );
    }
    let listed = node.ok(&["schedules", "ls"]);
    assert!(listed.contains("every-second"), "{listed}");
    node.ok(&["schedules", "rm", "every-second"]);
    let bad = node.cli(&[
        "schedules",
        "add",
        "x",
        "--rate",
        "5 fortnights",
        "--type",
        "t",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid rate"));
}

/// Starts `lambent up DIR` on free ports; returns the process and its two URLs.
fn up(
    dir: &std::path::Path,
    data: &std::path::Path,
) -> (std::process::Child, String, String, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["up"])
        .arg(dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("LAMBENT_URL")
        .env("LAMBENT_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "up exited: {lines:?}"
        );
        let serving = line.starts_with("lambent: serving");
        lines.push(line.trim().to_owned());
        if serving {
            break;
        }
    }
    let url = lines[0]
        .strip_prefix("lambent: control API on ")
        .unwrap()
        .to_owned();
    let routes = lines[1]
        .strip_prefix("lambent: HTTP routes on ")
        .unwrap()
        .to_owned();
    (child, url, routes, lines)
}

#[test]
fn the_seed_app_runs_with_lambent_up_and_a_second_up_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = repo_root().join("examples/seed-listener");
    let (mut child, url, routes, lines) = up(&app, &data);
    assert!(
        lines.iter().any(|l| l.contains("5 changed, 0 unchanged")),
        "{lines:?}"
    );
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("LAMBENT_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The three kinds of event of the founding document.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{routes}/actions"))
        .header("content-type", "application/json")
        .body(r#"{"user": "alice", "action": "login"}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    cli(&["kv", "put", "profiles", "alice", r#"{"plan": "pro"}"#]);
    wait_for("user_action, data_update and timer_trigger handled", || {
        let logs = cli(&["logs", "event_listener", "--limit", "100"]);
        (logs.contains("user_action handled: {'user': 'alice', 'action': 'login'}")
            && logs.contains("data_update handled: {'namespace': 'profiles', 'key': 'alice'")
            && logs.contains("timer_trigger handled: {'schedule': 'every 15 seconds'}"))
        .then_some(())
    });
    // Applying the same app again (to the running node) changes nothing.
    let again = cli(&["up", app.to_str().unwrap()]);
    assert!(again.contains("0 changed, 5 unchanged"), "{again}");
    let functions = cli(&["ls"]);
    assert!(functions.contains("event_listener"), "{functions}");
    // What the file does not name stays, unless `--prune` says to remove it: a
    // function deployed by hand and the rule pointing at it.
    let stray = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    cli(&[
        "deploy",
        "stray",
        "--runtime",
        "python3.11",
        "--handler",
        "app.handler",
        "--code",
        stray.path().to_str().unwrap(),
    ]);
    cli(&[
        "rules",
        "add",
        "stray-rule",
        "--pattern",
        r#"{"type": ["stray"]}"#,
        "--target",
        "stray",
    ]);
    cli(&[
        "routes", "add", "--method", "GET", "--path", "/stray", "--target", "stray",
    ]);
    cli(&[
        "schedules",
        "add",
        "stray-tick",
        "--rate",
        "1 hour",
        "--type",
        "stray",
    ]);
    let kept = cli(&["up", app.to_str().unwrap()]);
    assert!(kept.contains("0 changed, 5 unchanged"), "{kept}");
    assert!(cli(&["ls"]).contains("stray"));
    let pruned = cli(&["up", "--prune", app.to_str().unwrap()]);
    assert!(
        pruned.contains("removed rule stray-rule")
            && pruned.contains("removed function stray")
            && pruned.contains("removed route GET /stray")
            && pruned.contains("removed schedule stray-tick")
            && pruned.contains("0 changed, 5 unchanged, 4 removed"),
        "{pruned}"
    );
    let functions = cli(&["ls"]);
    assert!(
        !functions.contains("stray") && functions.contains("event_listener"),
        "{functions}"
    );
    let again = cli(&["up", "--prune", app.to_str().unwrap()]);
    assert!(
        again.contains("0 changed, 5 unchanged, 0 removed"),
        "{again}"
    );
    let _ = child.kill();
    let _ = child.wait();
    // And from a restart of the embedded node: still nothing to change.
    let (mut child, _, _, lines) = up(&app, &data);
    assert!(
        lines.iter().any(|l| l.contains("0 changed, 5 unchanged")),
        "{lines:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_broken_manifest_names_the_file_the_line_and_the_key() {
    let app = code_dir(&[
        ("app.py", ECHO),
        (
            "lambent.toml",
            "[functions.echo]\ncode = \".\"\nruntime = \"python3\"\nhandler = \"app.handler\"\n\n[schedules.tick]\ncron = \"* * * * * *\"\ntype = \"t\"\ntarget = \"echo\"\nevery = \"day\"\n",
        ),
    ]);
    let out = Command::new(BIN)
        .args(["up"])
        .arg(app.path())
        .args(["--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lambent.toml"), "{err}");
    assert!(err.contains("line 10"), "{err}");
    assert!(err.contains("every"), "{err}");
    assert!(err.contains("expected one of"), "{err}");
}

/// A handler using the bundled `lambent` module: it reports what each call did.
const USES_LAMBENT: &str = "import lambent\n\
def handler(event, context):\n    out = {}\n    \
try:\n        rev = lambent.kv.put('profiles', 'ada', {'plan': 'pro'})\n        \
out['put'] = rev\n        out['get'] = lambent.kv.get('profiles', 'ada')\n        \
out['cas'] = lambent.kv.cas('profiles', 'ada', {'plan': 'team'}, rev)\n        \
try:\n            lambent.kv.cas('profiles', 'ada', {'plan': 'stale'}, rev)\n            out['stale'] = 'written'\n        \
except lambent.Conflict:\n            out['stale'] = 'conflict'\n        \
out['listed'] = [e['key'] for e in lambent.kv.list('profiles')]\n        \
out['published'] = lambent.events.publish('order_placed', {'order': 7})\n    \
except lambent.Forbidden as e:\n        out['forbidden'] = str(e)\n    \
try:\n        lambent.kv.get('secrets', 'root')\n        out['other_ns'] = 'read'\n    \
except lambent.Forbidden:\n        out['other_ns'] = 'forbidden'\n    \
try:\n        lambent.events.publish('admin_action', {})\n        out['other_type'] = 'published'\n    \
except lambent.Forbidden:\n        out['other_type'] = 'forbidden'\n    \
return out\n";

#[test]
fn functions_reach_the_kv_store_and_publish_only_as_their_grants_allow() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let code = code_dir(&[("app.py", USES_LAMBENT)]);
    node.deploy_app(
        "granted",
        "python3",
        code.path(),
        &["--grant", "kv:profiles", "--grant", "publish:order_placed"],
    );
    node.deploy_app("ungranted", "python3", code.path(), &[]);
    let _echo = echo(&node);
    node.ok(&[
        "rules",
        "add",
        "orders",
        "--pattern",
        r#"{"type": ["order_placed"]}"#,
        "--target",
        "echo",
    ]);

    let out: Value = serde_json::from_str(&node.ok(&["invoke", "granted"])).unwrap();
    assert_eq!(out["get"], json!({"plan": "pro"}), "{out}");
    assert!(
        out["cas"].as_u64().unwrap() > out["put"].as_u64().unwrap(),
        "{out}"
    );
    assert_eq!(out["stale"], "conflict", "{out}");
    assert_eq!(out["listed"], json!(["ada"]), "{out}");
    assert_eq!(out["other_ns"], "forbidden", "{out}");
    assert_eq!(out["other_type"], "forbidden", "{out}");
    // The write is the store's like any other, and so is the event.
    assert_eq!(
        node.ok(&["kv", "get", "profiles", "ada"]).trim(),
        r#"{"plan":"team"}"#
    );
    let published = out["published"].as_str().unwrap().to_owned();
    let event = wait_for("the published event handled", || {
        seen(&node, "echo")
            .into_iter()
            .find(|e| e["id"] == published.as_str())
    });
    assert_eq!(event["source"], "lambent/functions/granted");
    assert_eq!(event["data"], json!({"order": 7}));

    // Without grants: nothing.
    let out: Value = serde_json::from_str(&node.ok(&["invoke", "ungranted"])).unwrap();
    let refused = out["forbidden"].as_str().unwrap_or_default();
    assert!(refused.contains("kv:profiles"), "{out}");
    assert_eq!(out["other_type"], "forbidden", "{out}");
}

#[test]
fn node_functions_use_the_lambent_module_too() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"));
    let code = code_dir(&[(
        "app.js",
        "const lambent = require('lambent');\n\
         exports.handler = async () => {\n\
           const rev = await lambent.kv.put('counters', 'hits', 1);\n\
           const value = await lambent.kv.get('counters', 'hits');\n\
           let stale;\n\
           try { await lambent.kv.cas('counters', 'hits', 3, rev - 1); stale = 'written'; }\n\
           catch (e) { stale = e.code; }\n\
           let denied;\n\
           try { await lambent.events.publish('x', {}); denied = 'published'; }\n\
           catch (e) { denied = e.code; }\n\
           return { rev, value, stale, denied };\n\
         };\n",
    )]);
    node.ok(&[
        "deploy",
        "counter",
        "--runtime",
        "nodejs20.x",
        "--handler",
        "app.handler",
        "--code",
        code.path().to_str().unwrap(),
        "--grant",
        "kv:counters",
    ]);
    let out: Value = serde_json::from_str(&node.ok(&["invoke", "counter"])).unwrap();
    assert_eq!(out["value"], 1, "{out}");
    assert_eq!(out["stale"], "conflict", "{out}");
    assert_eq!(out["denied"], "forbidden", "{out}");
}
