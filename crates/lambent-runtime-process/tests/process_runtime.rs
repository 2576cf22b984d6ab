//! The process runtime against real Python and Node processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use lambent_core::{FunctionSpec, RetryPolicy, RuntimeKind};
use lambent_runtime::{
    ErrorReport, Instance, InstanceConfig, InvokeOutcome, InvokeRequest, Runtime,
};
use lambent_runtime_process::ProcessRuntime;
use lambent_runtime_process::sandbox::{Isolation, Launcher};
use std::collections::BTreeMap;
use std::path::Path;

fn spec(name: &str, runtime: &str, handler: &str, timeout_s: u32) -> FunctionSpec {
    FunctionSpec {
        role: None,
        on_failure: None,
        keep_alive: None,
        name: name.into(),
        runtime: RuntimeKind::parse(runtime).unwrap(),
        handler: handler.into(),
        memory_mb: 128,
        timeout_s,
        env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        concurrency: 1,
        retry: RetryPolicy::default(),
        description: String::new(),
        grants: Vec::new(),
    }
}

/// Starts an instance of version 1 of `spec` running `code`.
async fn start(runtime: &ProcessRuntime, spec: FunctionSpec, code: &Path) -> Box<dyn Instance> {
    runtime
        .start(InstanceConfig {
            spec,
            version: 1,
            code_dir: code.to_path_buf(),
            host: None,
        })
        .await
        .unwrap()
}

fn request(payload: &str, timeout_ms: i64) -> InvokeRequest {
    InvokeRequest {
        request_id: uuid_like(),
        payload: Bytes::from(payload.to_owned()),
        deadline_ms: lambent_core::now_ms() + timeout_ms,
        trace_id: None,
        event_id: Some("ev-1".into()),
        attempt: 2,
        client_context: None,
    }
}

fn uuid_like() -> String {
    format!("req-{}", lambent_core::now_ms()) + &format!("-{}", rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Whether a tool the test needs is installed; under LAMBENT_REQUIRE_SERVICES (CI)
/// a missing one fails the test instead of skipping it.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("LAMBENT_REQUIRE_SERVICES").is_none(),
            "`{tool}` is required (LAMBENT_REQUIRE_SERVICES is set)"
        );
        eprintln!("`{tool}` is not installed: skipping");
    }
    found
}

/// A runtime whose instances run in the sandbox (the default a node uses).
fn runtime(data: &Path) -> ProcessRuntime {
    let launcher = Launcher {
        program: env!("CARGO_BIN_EXE_lambent-sandbox").into(),
        args: Vec::new(),
    };
    let runtime = ProcessRuntime::new(data, Isolation::Sandbox(launcher)).unwrap();
    assert!(
        runtime.isolation().starts_with("sandbox"),
        "{}",
        runtime.isolation()
    );
    runtime
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn python_handler_runs_warm_with_context_and_captured_output() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        r#"
import os, sys
calls = 0
def handler(event, context):
    global calls
    calls += 1
    print("got", event["n"], "attempt", context.attempt, "event", context.event_id)
    return {"n": event["n"] + 1, "calls": calls, "greeting": os.environ["GREETING"],
            "name": context.function_name, "remaining_ok": context.get_remaining_time_in_millis() > 0,
            "mem": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
            "group": context.log_group_name, "version": context.function_version,
            "site_packages": any(p.endswith("site-packages") for p in sys.path),
            "no_site": sys.flags.no_site}
"#,
    );
    let runtime = runtime(data.path());
    let mut inst = start(
        &runtime,
        spec("adder", "python3.8", "app.handler", 5),
        code.path(),
    )
    .await;
    for n in 1..=2 {
        let r = inst.invoke(request(&format!("{{\"n\": {n}}}"), 5000)).await;
        let InvokeOutcome::Success(body) = r.outcome else {
            panic!("{:?} logs={}", r.outcome, r.logs)
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["n"], n + 1);
        // Warm: the same process served both invocations.
        assert_eq!(v["calls"], n);
        assert_eq!(v["greeting"], "hi");
        assert_eq!(v["name"], "adder");
        assert_eq!(v["remaining_ok"], true);
        assert_eq!(v["group"], "/aws/lambda/adder");
        assert_eq!(v["version"], "1");
        // Started without `site` (fast), yet the host's site-packages are importable.
        assert_eq!(v["no_site"], 1);
        assert_eq!(v["site_packages"], true);
        assert!(v["arn"].as_str().unwrap().ends_with(":function:adder"));
        assert_eq!(r.logs, format!("got {n} attempt 2 event ev-1\n"));
    }
    assert!(inst.is_usable());
}

#[tokio::test]
async fn function_errors_init_errors_and_timeouts_are_told_apart() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        "import time\ndef boom(e, c):\n    raise ValueError('bad input')\ndef slow(e, c):\n    print('sleeping')\n    time.sleep(30)\n",
    );
    let runtime = runtime(data.path());
    let cfg = |handler: &str, timeout| InstanceConfig {
        spec: spec("f", "python3.12", handler, timeout),
        version: 1,
        code_dir: code.path().to_path_buf(),
        host: None,
    };

    let mut inst = runtime.start(cfg("app.boom", 5)).await.unwrap();
    let r = inst.invoke(request("{}", 5000)).await;
    match &r.outcome {
        InvokeOutcome::FunctionError(e) => {
            assert_eq!(e.error_type, "ValueError");
            assert_eq!(e.message, "bad input");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.logs.contains("Traceback"), "{}", r.logs);
    let InvokeOutcome::FunctionError(ErrorReport { body, .. }) = &r.outcome else {
        unreachable!()
    };
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
    let trace = doc["stackTrace"].as_array().unwrap();
    assert!(
        trace[0].as_str().unwrap().contains("app.py"),
        "the trace starts in user code: {doc}"
    );
    assert!(!doc.to_string().contains("bootstrap.py"), "{doc}");
    assert!(inst.is_usable(), "a function error keeps the instance");

    for missing in ["app.nope", "nomodule.handler"] {
        let mut inst = runtime.start(cfg(missing, 5)).await.unwrap();
        let r = inst.invoke(request("{}", 5000)).await;
        assert!(
            matches!(r.outcome, InvokeOutcome::InitError(_)),
            "{missing}: {:?}",
            r.outcome
        );
        assert!(!inst.is_usable());
    }

    let mut inst = runtime.start(cfg("app.slow", 1)).await.unwrap();
    let r = inst.invoke(request("{}", 1000)).await;
    assert!(
        matches!(r.outcome, InvokeOutcome::Timeout { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.logs, "sleeping\n");
    assert!(!inst.is_usable());
}

#[tokio::test]
async fn a_response_over_6_mib_fails_the_invocation_instead_of_hanging() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        "def handler(e, c):\n    return 'x' * (7 * 1024 * 1024)\n",
    );
    let runtime = runtime(data.path());
    let mut inst = start(
        &runtime,
        spec("big", "python3.11", "app.handler", 30),
        code.path(),
    )
    .await;
    let r = inst.invoke(request("{}", 30_000)).await;
    match r.outcome {
        InvokeOutcome::FunctionError(ErrorReport { error_type, .. }) => {
            assert_eq!(error_type, "Function.ResponseSizeTooLarge")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn node_handler_runs() {
    if !have("node") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "index.js",
        "exports.handler = async (event, context) => { console.log('node got', event.x); return { y: event.x * 2, id: context.awsRequestId.length > 0 }; };\n",
    );
    let runtime = runtime(data.path());
    let mut inst = start(
        &runtime,
        spec("n", "nodejs20.x", "index.handler", 5),
        code.path(),
    )
    .await;
    let r = inst.invoke(request(r#"{"x": 21}"#, 5000)).await;
    let InvokeOutcome::Success(body) = r.outcome else {
        panic!("{:?} {}", r.outcome, r.logs)
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"y": 42, "id": true})
    );
    assert_eq!(r.logs, "node got 21\n");
}

#[tokio::test]
async fn provided_bootstrap_speaks_the_runtime_api_itself() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    // A `provided` runtime: any executable named bootstrap. This one is a shell script.
    let script = r#"#!/bin/sh
set -e
while true; do
  HDRS=$(mktemp)
  BODY=$(curl -sS -D "$HDRS" "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation/next")
  ID=$(grep -i '^lambda-runtime-aws-request-id:' "$HDRS" | tr -d '\r' | cut -d' ' -f2)
  echo "shell saw $BODY"
  curl -sS -X POST -d "{\"echo\": $BODY}" "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation/$ID/response" >/dev/null
done
"#;
    if !have("curl") {
        return;
    }
    write(code.path(), "bootstrap", script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        code.path().join("bootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let runtime = runtime(data.path());
    let mut inst = start(&runtime, spec("p", "provided.al2023", "", 5), code.path()).await;
    let r = inst.invoke(request(r#"{"k":1}"#, 5000)).await;
    assert_eq!(
        r.outcome,
        InvokeOutcome::Success(Bytes::from_static(br#"{"echo": {"k":1}}"#)),
        "{}",
        r.logs
    );
    assert_eq!(r.logs, "shell saw {\"k\":1}\n");
}

/// Finding 9: an error document over 6 MiB fails the invocation at once.
#[tokio::test]
async fn an_error_document_over_6_mib_fails_the_invocation_instead_of_hanging() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        "def handler(e, c):\n    raise ValueError('x' * (7 * 1024 * 1024))\n",
    );
    let runtime = runtime(data.path());
    let mut inst = start(
        &runtime,
        spec("bigerr", "python3.11", "app.handler", 60),
        code.path(),
    )
    .await;
    let r = inst.invoke(request("{}", 60_000)).await;
    match r.outcome {
        InvokeOutcome::FunctionError(ErrorReport { error_type, .. }) => {
            assert_eq!(error_type, "Function.ResponseSizeTooLarge")
        }
        other => panic!("expected a function error, got {other:?}"),
    }
}

/// Finding 8: a function that prints what it could guess of a barrier (from its log
/// stream name) cannot shift the logs of later invocations.
#[tokio::test]
async fn a_forged_log_barrier_does_not_shift_later_logs() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        r#"import os, sys
def handler(e, c):
    guesses = [os.environ['AWS_LAMBDA_LOG_STREAM_NAME'].split(']')[-1][:12],
               os.path.basename(os.environ['TMPDIR'])[:12], c.aws_request_id[:12]]
    if e.get('forge'):
        for token in guesses:
            for n in range(1, 8):
                sys.stdout.write('\x1eLAMBENT-BARRIER-%s-%d\x1e' % (token, n))
        sys.stdout.flush()
    print('call', e['n'])
    return e['n']
"#,
    );
    let runtime = runtime(data.path());
    let mut inst = start(
        &runtime,
        spec("forger", "python3.11", "app.handler", 30),
        code.path(),
    )
    .await;
    let first = inst
        .invoke(request(r#"{"n": 1, "forge": true}"#, 30_000))
        .await;
    assert!(first.logs.ends_with("call 1\n"), "{:?}", first.logs);
    for n in 2..5 {
        let r = inst
            .invoke(request(&format!(r#"{{"n": {n}}}"#), 30_000))
            .await;
        assert_eq!(r.logs, format!("call {n}\n"));
    }
}

/// Finding 19: a versioned runtime runs that version when the host has it, and says
/// which interpreter it used when it must fall back.
#[tokio::test]
async fn a_versioned_python_runtime_runs_that_version_or_says_what_it_ran() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        "import sys\ndef handler(e, c):\n    return '%d.%d' % sys.version_info[:2]\n",
    );
    let runtime = runtime(data.path());
    // Whichever Python 3 minor versions this host has (pyenv or the system's).
    let host: Vec<String> = (6..=14)
        .map(|minor| format!("3.{minor}"))
        .filter(|v| {
            std::process::Command::new(format!("python{v}"))
                .arg("-c")
                .arg("pass")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
                || glob_pyenv(v)
        })
        .collect();
    assert!(!host.is_empty(), "no Python 3 found");
    for version in &host {
        let mut inst = start(
            &runtime,
            spec("versioned", &format!("python{version}"), "app.handler", 30),
            code.path(),
        )
        .await;
        let r = inst.invoke(request("{}", 30_000)).await;
        match r.outcome {
            InvokeOutcome::Success(body) => assert_eq!(body, format!("\"{version}\"")),
            other => panic!("python{version}: {other:?}"),
        }
        assert!(!r.logs.contains("not installed"), "{}", r.logs);
    }
    let mut inst = start(
        &runtime,
        spec("future", "python3.99", "app.handler", 30),
        code.path(),
    )
    .await;
    let r = inst.invoke(request("{}", 30_000)).await;
    assert!(
        matches!(r.outcome, InvokeOutcome::Success(_)),
        "{:?}",
        r.outcome
    );
    assert!(
        r.logs
            .starts_with("lambent: python3.99 is not installed on this host; running "),
        "{}",
        r.logs
    );
}

fn glob_pyenv(version: &str) -> bool {
    let root = std::env::var("PYENV_ROOT")
        .unwrap_or_else(|_| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    std::fs::read_dir(format!("{root}/versions"))
        .map(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("{version}."))
            })
        })
        .unwrap_or(false)
}

/// Cold starts take a spare launcher (already in its cgroups) when one is ready, and
/// the spare is replaced; an instance from a spare runs like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_starts_use_spare_launchers_and_replace_them() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "app.py",
        "import os\ndef handler(event, context):\n    return {'uid': os.getuid(), 'cwd': os.getcwd()}\n",
    );
    let runtime = runtime(data.path());
    runtime.resolve_interpreters().await;
    spares_ready(&runtime, 2).await;
    let mut inst = start(
        &runtime,
        spec("spare", "python3.11", "app.handler", 5),
        code.path(),
    )
    .await;
    assert!(runtime.spare_launchers() < 2, "no spare was taken");
    let r = inst.invoke(request("{}", 5000)).await;
    assert_eq!(
        r.outcome,
        InvokeOutcome::Success(Bytes::from_static(br#"{"uid": 993, "cwd": "/var/task"}"#)),
        "{}",
        r.logs
    );
    spares_ready(&runtime, 2).await;
}

/// The handler reports how long its process has existed (from procfs, 10 ms ticks).
const PROCESS_AGE: &str = r#"import os

def handler(event, context):
    with open('/proc/self/stat') as f:
        started = int(f.read().rsplit(')', 1)[1].split()[19]) / os.sysconf('SC_CLK_TCK')
    with open('/proc/uptime') as f:
        now = float(f.read().split()[0])
    # Landlock (without a net grant, TCP connects only to the Runtime API's port)
    # answers EACCES; without it, nothing listens there: ECONNREFUSED.
    import resource, socket
    try:
        socket.create_connection(('127.0.0.1', 1), timeout=1)
        connect = 'connected'
    except OSError as e:
        connect = type(e).__name__
    return {'age': now - started, 'tz': os.environ.get('TZ'), 'cwd': os.getcwd(), 'uid': os.getuid(),
            'connect': connect, 'nofile': resource.getrlimit(resource.RLIMIT_NOFILE)[1]}
"#;

/// A cold start of a Python function takes a spare whose interpreter was started
/// ahead (the process is older than the whole cold start); one whose start-up
/// environment differs (its own `TZ`) gets a fresh interpreter, and both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cold_starts_use_an_interpreter_started_ahead_when_it_fits() {
    let (_data, code, runtime) = prestarting_runtime(PROCESS_AGE).await;
    let mut own_tz = spec("own-tz", "python3", "app.handler", 5);
    own_tz.env.insert("TZ".into(), "Europe/Paris".into());
    // The default interpreter by its versioned name (`python3.11` where `python3` is
    // 3.11): the same interpreter, so the pre-started one fits.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print('python%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .unwrap();
    let versioned = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    for (spec, ahead) in [
        (spec("prestarted", "python3", "app.handler", 5), true),
        (
            spec("prestarted-versioned", &versioned, "app.handler", 5),
            true,
        ),
        (own_tz, false),
    ] {
        let name = spec.name.clone();
        let (out, inst) = cold_start_started_ahead(&runtime, spec, code.path(), ahead).await;
        assert_eq!(out["cwd"], "/var/task", "{name}");
        assert_eq!(out["uid"], 993, "{name}");
        // The assignment's fences hold as an executed runtime's do.
        assert_eq!(out["connect"], "PermissionError", "{name}");
        assert_eq!(out["nofile"], 1024, "{name}");
        let tz = if ahead { ":UTC" } else { "Europe/Paris" };
        assert_eq!(out["tz"], tz, "{name}");
        inst.shutdown().await;
    }
}

/// The Node.js handler reports its process's age (procfs, 10 ms ticks), where it
/// runs, what it may reach and read, its limits and environment.
const NODE_PROCESS_AGE: &str = r#"const fs = require('fs');
const net = require('net');
exports.handler = async () => {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  const started = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) / 100;
  const now = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  const connect = await new Promise((resolve) => {
    const s = net.connect(1, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve('connected'); });
    s.on('error', (e) => resolve(e.code));
  });
  const limits = fs.readFileSync('/proc/self/limits', 'utf8');
  const limit = (name) => Number(limits.split('\n').find((l) => l.startsWith(name)).trim().split(/\s+/).slice(-3)[0]);
  return { age: now - started, cwd: process.cwd(), uid: process.getuid(), connect,
           nofile: limit('Max open files'), data: limit('Max data size'),
           greeting: process.env.GREETING, prestartFd: process.env.LAMBENT_PRESTART_FD || null,
           lambent: typeof require('lambent').kv.get, tmp: (fs.writeFileSync('/tmp/x', 'y'), 'written') };
};
"#;

/// Node.js cold starts use a runtime started ahead once a Node.js function has
/// taken a spare (spares pre-start Python until then): the process is older than the
/// cold start, runs as the function with its environment, limits and fences (fenced
/// before it was executed), and finds the bundled module through NODE_PATH read
/// again. A function with its own NODE_OPTIONS (read as Node starts) gets a fresh one.
/// A cold start picks the spare that pre-started its runtime: the Python spare left
/// among Node.js ones serves a Python function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cold_starts_use_a_runtime_started_ahead_once_node_is_asked_for() {
    if !have("node") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(code.path(), "index.js", NODE_PROCESS_AGE);
    let runtime = runtime(data.path());
    runtime.resolve_interpreters().await;
    let mut own_options = spec("own-options", "nodejs20.x", "index.handler", 5);
    own_options
        .env
        .insert("NODE_OPTIONS".into(), "--max-old-space-size=100".into());
    for (spec, ahead) in [
        // Takes a spare pre-starting Python; its replacement pre-starts Node.js.
        (spec("first", "nodejs20.x", "index.handler", 5), false),
        (spec("second", "nodejs20.x", "index.handler", 5), true),
        (own_options, false),
    ] {
        let name = spec.name.clone();
        let (out, inst) = cold_start_started_ahead(&runtime, spec, code.path(), ahead).await;
        assert_eq!(out["cwd"], "/var/task", "{name}");
        assert_eq!(out["uid"], 993, "{name}");
        assert_eq!(out["connect"], "EACCES", "{name}: Landlock holds");
        assert_eq!(out["nofile"], 1024, "{name}");
        assert_eq!(out["data"], (128 + 1024) << 20, "{name}");
        assert_eq!(out["greeting"], "hi", "{name}");
        assert_eq!(out["prestartFd"], serde_json::Value::Null, "{name}");
        assert_eq!(out["lambent"], "function", "{name}");
        assert_eq!(out["tmp"], "written", "{name}");
        inst.shutdown().await;
    }
    // The spares now: the Python one none of the above took, and a Node.js one made
    // after the last; a Python cold start still finds its own.
    write(code.path(), "app.py", PROCESS_AGE);
    let (_, inst) = cold_start_started_ahead(
        &runtime,
        spec("python-among-node", "python3", "app.handler", 5),
        code.path(),
        true,
    )
    .await;
    inst.shutdown().await;
}

/// Once the spares have settled, cold-starts `spec` (its handler answers its process's
/// `age` in seconds) and invokes it once; checks that its process was started ahead
/// of the cold start, or not, as `ahead` says. Returns the answer and the instance.
async fn cold_start_started_ahead(
    runtime: &ProcessRuntime,
    spec: FunctionSpec,
    code: &Path,
    ahead: bool,
) -> (serde_json::Value, Box<dyn Instance>) {
    spares_settled(runtime).await;
    let asked = std::time::Instant::now();
    let name = spec.name.clone();
    let mut inst = start(runtime, spec, code).await;
    let r = inst.invoke(request("{}", 5000)).await;
    let took = asked.elapsed().as_secs_f64();
    let InvokeOutcome::Success(body) = &r.outcome else {
        panic!("{name}: {:?}\n{}", r.outcome, r.logs);
    };
    let out: serde_json::Value = serde_json::from_slice(body).unwrap();
    let age = out["age"].as_f64().unwrap();
    // Ticks are 10 ms; a spare's process is at least the 300 ms slept older.
    assert_eq!(
        age > took + 0.15,
        ahead,
        "{name}: process age {age} s, cold start {took} s"
    );
    (out, inst)
}

/// Starts a daemon (double fork + setsid) named by `event["name"]` (its `comm`, which
/// the host sees), sleeping ten minutes.
const PRESTART_DAEMON: &str = r#"import ctypes, os, time

def handler(event, context):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, event["name"].encode(), 0, 0, 0)
            time.sleep(600)
        os._exit(0)
    os.wait()
    return "detached"
"#;

/// Live host processes whose name is `comm`, with whether each was started as a
/// pre-started interpreter (its executed environment names the assignment socket).
fn named(comm: &str) -> Vec<(u32, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z');
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim() == comm && !zombie {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let prestarted = env
                .split(|&b| b == 0)
                .any(|v| v.starts_with(b"LAMBENT_PRESTART_FD="));
            found.push((pid, prestarted));
        }
    }
    found
}

/// A daemon started by a function on a pre-started interpreter is still the
/// instance's: it dies when the instance is shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_of_a_pre_started_instance_dies_with_it() {
    let (_data, code, runtime) = prestarting_runtime(PRESTART_DAEMON).await;
    spares_settled(&runtime).await;
    let comm = format!("lbd{}", std::process::id());
    let mut inst = start(
        &runtime,
        spec("daemon", "python3", "app.handler", 5),
        code.path(),
    )
    .await;
    let payload = serde_json::json!({ "name": comm }).to_string();
    let r = inst.invoke(request(&payload, 5000)).await;
    assert_eq!(
        r.outcome,
        InvokeOutcome::Success(Bytes::from_static(br#""detached""#)),
        "{}",
        r.logs
    );
    // The handler returns once the intermediate child exits; the daemon names itself
    // just after, on its own time.
    let mut daemons = named(&comm);
    for _ in 0..500 {
        if !daemons.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        daemons = named(&comm);
    }
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    assert!(
        daemons[0].1,
        "the daemon descends from a pre-started interpreter"
    );
    inst.shutdown().await;
    for _ in 0..500 {
        if named(&comm).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the daemon outlived its instance: {:?}", named(&comm));
}

/// A sandboxed runtime whose spares pre-start Python, and code holding `app` as
/// `app.py` (the directories live as long as the returned handles).
async fn prestarting_runtime(app: &str) -> (tempfile::TempDir, tempfile::TempDir, ProcessRuntime) {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(code.path(), "app.py", app);
    let runtime = runtime(data.path());
    runtime.resolve_interpreters().await;
    (data, code, runtime)
}

/// Both spares ready, and then older by 300 ms: their interpreters have started (a
/// spare is ready before that), and a process of theirs is older than anything begun
/// after this returns by at least that much.
async fn spares_settled(runtime: &ProcessRuntime) {
    spares_ready(runtime, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

async fn spares_ready(runtime: &ProcessRuntime, n: usize) {
    for _ in 0..1000 {
        if runtime.spare_launchers() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("spares never became ready: {}", runtime.spare_launchers());
}

/// A host that cannot build the sandbox: process functions do not start (the error
/// says how to run without one), and the runtime says so.
#[tokio::test]
async fn without_a_working_sandbox_process_functions_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    write(code.path(), "app.py", "def handler(e, c):\n    return 1\n");
    let broken = Launcher {
        program: "/bin/false".into(),
        args: Vec::new(),
    };
    let runtime = ProcessRuntime::new(data.path(), Isolation::Sandbox(broken)).unwrap();
    assert!(!runtime.isolation_available());
    assert!(
        runtime.isolation().starts_with("unavailable"),
        "{}",
        runtime.isolation()
    );
    let refused = runtime
        .start(InstanceConfig {
            spec: spec("nosandbox", "python3.11", "app.handler", 5),
            version: 1,
            code_dir: code.path().to_path_buf(),
            host: None,
        })
        .await;
    let Err(e) = refused else {
        panic!("an unsandboxed instance started");
    };
    assert!(e.to_string().contains("--isolation none"), "{e}");
}
