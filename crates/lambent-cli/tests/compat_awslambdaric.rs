//! Compatibility with a Runtime API client nobody here wrote: AWS's own Python
//! runtime interface client, `awslambdaric`, run as a `provided` bootstrap.
//! `scripts/test` installs it into `.venv` and sets LAMBENT_COMPAT_PYTHON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use serde_json::{Value, json};

fn compat_python() -> Option<String> {
    match std::env::var("LAMBENT_COMPAT_PYTHON") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var_os("LAMBENT_REQUIRE_SERVICES").is_none(),
                "LAMBENT_COMPAT_PYTHON (a Python with awslambdaric) is required: run ./scripts/test"
            );
            eprintln!("LAMBENT_COMPAT_PYTHON not set (run ./scripts/test): skipping");
            None
        }
    }
}

/// The venv's Python version (`3.11`) and its site-packages directory.
fn venv_site(python: &str) -> (String, std::path::PathBuf) {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import os, sys, awslambdaric; print('%d.%d' % sys.version_info[:2]); print(os.path.dirname(os.path.dirname(awslambdaric.__file__)))",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_owned(),
        lines.next().unwrap().into(),
    )
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().flatten() {
            if entry.file_name() != "__pycache__" {
                copy_tree(&entry.path(), &to.join(entry.file_name()));
            }
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn awslambdaric_serves_invocations_errors_init_errors_and_events() {
    let Some(python) = compat_python() else {
        return;
    };
    ric_round(&python, &[]);
}

/// Without a sandbox the Runtime API sits on a port of the host's loopback; AWS's
/// client must work there too (it takes no path in `AWS_LAMBDA_RUNTIME_API`: a secret
/// path there broke its init-error report).
#[test]
fn awslambdaric_works_on_an_unsandboxed_node_too() {
    let Some(python) = compat_python() else {
        return;
    };
    ric_round(&python, &["--isolation", "none"]);
}

fn ric_round(python: &str, flags: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("data"), flags);
    // Packaged as on Lambda: the client and its dependencies ship in the code (the
    // sandbox shows a function the system's directories, not this checkout's venv),
    // run by the system interpreter of the same version.
    let (version, site) = venv_site(python);
    let bootstrap = format!(
        "#!/bin/sh\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT\"\nexec python{version} -m awslambdaric \"$HANDLER_SPEC\"\n"
    );
    let code = code_dir(&[
        ("bootstrap", bootstrap.as_str()),
        (
            "app.py",
            "def handler(event, context):\n    print('ric got', event)\n    return {'echo': event, 'request_id': context.aws_request_id, 'name': context.function_name,\n            'remaining_ok': context.get_remaining_time_in_millis() > 0, 'mem': context.memory_limit_in_mb}\n\ndef fail(event, context):\n    raise KeyError('missing thing')\n",
        ),
    ]);
    for entry in std::fs::read_dir(&site).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = [
            "awslambdaric",
            "simplejson",
            "snapshot_restore_py",
            "runtime_client",
        ];
        if wanted.iter().any(|w| name.starts_with(w)) && !name.ends_with(".dist-info") {
            copy_tree(&entry.path(), &code.path().join(&name));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        code.path().join("bootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for (name, handler) in [
        ("ric", "app.handler"),
        ("ricfail", "app.fail"),
        ("ricbad", "nomodule.handler"),
    ] {
        let spec = format!("HANDLER_SPEC={handler}");
        node.ok(&[
            "deploy",
            name,
            "--runtime",
            "provided.al2023",
            "--code",
            code.path().to_str().unwrap(),
            "--env",
            &spec,
            "--timeout",
            "10",
            "--max-attempts",
            "1",
        ]);
    }

    let resp = node.invoke_raw("ric", r#"{"hello": "ric"}"#);
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-lambent-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().unwrap();
    assert_eq!(body["echo"], json!({"hello": "ric"}));
    assert_eq!(body["request_id"], request_id.as_str());
    assert_eq!(body["name"], "ric");
    assert_eq!(body["remaining_ok"], true);
    assert_eq!(body["mem"], "128");
    let rec = node.invocations("ric").pop().unwrap();
    assert!(
        rec["logs"]
            .as_str()
            .unwrap()
            .contains("ric got {'hello': 'ric'}"),
        "{rec}"
    );

    // awslambdaric posts errors without the error-type header: the type comes from the body.
    let resp = node.invoke_raw("ricfail", "{}");
    assert_eq!(resp.headers()["x-lambent-function-error"], "Unhandled");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["errorType"], "KeyError", "{body}");
    assert_eq!(
        node.invocations("ricfail").pop().unwrap()["outcome"],
        "function_error"
    );

    let resp = node.invoke_raw("ricbad", "{}");
    assert_eq!(resp.headers()["x-lambent-outcome"], "init_error");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["errorType"], "Runtime.ImportModuleError", "{body}");

    // And as an event listener: the CloudEvent arrives as the event.
    node.ok(&[
        "rules",
        "add",
        "r",
        "--pattern",
        r#"{"type": ["ric.test"]}"#,
        "--target",
        "ric",
    ]);
    node.publish(&event("ric-1", "ric.test", json!({"k": 1})));
    let rec = wait_for("the event delivery", || {
        node.invocations("ric")
            .into_iter()
            .find(|r| r["event_id"] == "ric-1")
    });
    assert_eq!(rec["outcome"], "success");
    assert!(
        rec["logs"].as_str().unwrap().contains("'type': 'ric.test'"),
        "{rec}"
    );
}
