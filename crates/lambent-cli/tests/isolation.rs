//! The sandbox, tried as an attacker would: a probe function deployed with the plain
//! CLI and no grants attempts each escape the isolation issue lists, and gets nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

/// Tries each thing a function must not be able to do; reports what happened.
const PROBE: &str = r##"
import ctypes, errno, json, mmap, os, signal, socket, sqlite3, urllib.request

def attempt(fn):
    try:
        return "ok: %s" % (fn(),)
    except Exception as e:
        return "denied: %s: %s" % (type(e).__name__, e)

def open_db(path):
    c = sqlite3.connect("file:%s?mode=rw" % path, uri=True, timeout=1)
    c.execute("create table pwned(x)")
    c.commit()
    return "created a table"

def environ_with(secret):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if secret.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found

def syscall_refused(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    rc = getattr(libc, name)(*args)
    return "refused (%s)" % errno.errorcode.get(ctypes.get_errno(), "?") if rc != 0 else "allowed"

def handler(event, context):
    r = {}
    r["database"] = attempt(lambda: open_db(event["db"]))
    r["data_dir"] = attempt(lambda: os.listdir(event["data_dir"]))
    r["secret_in"] = environ_with(event["secret"])
    r["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    r["control_api"] = attempt(lambda: urllib.request.urlopen(event["api"] + "/v1/functions", timeout=2).status)
    r["delete_other"] = attempt(lambda: urllib.request.urlopen(
        urllib.request.Request(event["api"] + "/v1/functions/victim", method="DELETE"), timeout=2).status)
    r["write_code"] = attempt(lambda: open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "app.py"), "a").write("#"))
    r["write_root"] = attempt(lambda: open("/pwned", "w").write("x"))
    r["kill_parent"] = attempt(lambda: os.kill(os.getppid(), signal.SIGKILL))
    r["kill_node"] = attempt(lambda: os.kill(event["node_pid"], signal.SIGKILL))
    r["unshare"] = syscall_refused("unshare", 0x10000000)
    r["mount"] = syscall_refused("mount", b"none", b"/tmp", b"tmpfs", 0, None)
    r["uid"] = os.getuid()
    status = dict(l.split(":", 1) for l in open("/proc/self/status"))
    r["caps"] = [status["CapEff"].strip(), status["CapPrm"].strip(), status["CapBnd"].strip()]
    init = dict(l.split(":", 1) for l in open("/proc/1/status"))
    r["init_uid"] = init["Uid"].split()[0]
    r["init_mem"] = attempt(lambda: open("/proc/1/mem", "rb").read(1))
    r["shadow"] = attempt(lambda: open("/etc/shadow").read(1))
    r["etc"] = sorted(os.listdir("/etc"))
    with open("/tmp/scratch", "w") as f:
        f.write("mine")
    r["tmp"] = open("/tmp/scratch").read()
    r["outbound"] = attempt(lambda: socket.create_connection((event["sink_host"], event["sink_port"]), timeout=2).close())
    return r
"##;

fn node_db(node: &Node) -> String {
    node.data_dir
        .canonicalize()
        .unwrap()
        .join("lambent.db")
        .display()
        .to_string()
}

#[test]
fn a_function_with_no_grants_reaches_nothing_but_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let status = node.get("/v1/status");
    assert!(
        status["isolation"].as_str().unwrap().starts_with("sandbox"),
        "{status}"
    );
    // A victim with a secret in its environment, running (warm) while the probe looks.
    let secret = format!("s3cr3t-{}", std::process::id());
    let victim = code_dir(&[("app.py", "def handler(e, c):\n    return 'alive'\n")]);
    let env = format!("SECRET={secret}");
    node.deploy_app("victim", "python3.11", victim.path(), &["--env", &env]);
    assert_eq!(node.ok(&["invoke", "victim"]).trim(), "\"alive\"");

    let probe = code_dir(&[("app.py", PROBE)]);
    node.deploy_app("probe", "python3.11", probe.path(), &["--timeout", "30"]);
    let sink = Sink::start();
    let event = json!({
        "db": node_db(&node),
        "data_dir": node.data_dir.canonicalize().unwrap(),
        "secret": secret,
        "api": node.url,
        "node_pid": node.pid(),
        "sink_host": sink.host.to_string(),
        "sink_port": sink.port,
    });
    let resp = node.invoke_raw("probe", &event.to_string());
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().unwrap();
    let denied = |key: &str| {
        assert!(
            r[key].as_str().unwrap().starts_with("denied"),
            "{key}: {}",
            r[key]
        );
    };
    for key in [
        "database",
        "data_dir",
        "control_api",
        "delete_other",
        "write_code",
        "write_root",
        "kill_parent",
        "kill_node",
        "outbound",
        "init_mem",
        "shadow",
    ] {
        denied(key);
    }
    assert_eq!(r["secret_in"], json!([]), "another function's environment");
    // Its own PID namespace: the sandbox's init and the function, nothing else.
    assert!(
        r["pids"].as_array().unwrap().len() <= 3,
        "sees processes: {}",
        r["pids"]
    );
    assert!(r["unshare"].as_str().unwrap().starts_with("refused"));
    assert!(r["mount"].as_str().unwrap().starts_with("refused"));
    assert_ne!(r["uid"], 0);
    // No capability, not even one it could regain, and an init that is the user
    // namespace's root (an unprivileged id on the host), not the host's root.
    assert_eq!(
        r["caps"],
        json!(["0000000000000000", "0000000000000000", "0000000000000000"]),
        "{r}"
    );
    assert_eq!(r["init_uid"], "0", "{r}");
    assert_eq!(r["tmp"], "mine");
    // Of the host's /etc, only what the linker, name resolution, TLS and user lookups
    // read: no service's configuration, no credentials a host keeps there.
    let etc: Vec<&str> = r["etc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for needed in ["ld.so.cache", "passwd", "hosts"] {
        assert!(etc.contains(&needed), "{needed} missing from /etc: {etc:?}");
    }
    for hidden in [
        "shadow",
        "gshadow",
        "ssh",
        "pip.conf",
        "npmrc",
        "gitconfig",
        "postgresql",
        "mysql",
        "redis",
        "machine-id",
        "hostname",
        "fstab",
    ] {
        assert!(
            !etc.contains(&hidden),
            "{hidden} is visible in /etc: {etc:?}"
        );
    }

    // Nothing was changed: the victim still answers, the database has no new table,
    // the code tree is as deployed.
    assert_eq!(node.ok(&["invoke", "victim"]).trim(), "\"alive\"");
    let conn = rusqlite_free_table_check(&node_db(&node));
    assert!(!conn, "the probe created a table in the node's database");
    assert_eq!(node.get("/v1/status")["isolation"], status["isolation"]);
}

/// Whether the node's database has a table named `pwned` (read with the sqlite3 CLI
/// or Python, whichever is here).
fn rusqlite_free_table_check(db: &str) -> bool {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); \
             print(c.execute(\"select count(*) from sqlite_master where name='pwned'\").fetchone()[0])",
            db,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() != "0"
}

/// Reports to the sink, uses its /tmp, and tries the node's control API and the
/// host's loopback behind the NAT gateway.
const ONLINE: &str = r#"
import urllib.request

def attempt(fn):
    try:
        fn()
        return "reached"
    except Exception as e:
        return "denied: %s" % e

def handler(e, c):
    report("reached")
    open("/tmp/t", "w").write("t")
    return {
        "tmp": open("/tmp/t").read(),
        "api": attempt(lambda: urllib.request.urlopen(e["api"] + "/v1/functions", timeout=2)),
        "gateway": attempt(lambda: socket.create_connection(("10.0.2.2", e["port"]), timeout=2)),
    }
"#;

#[test]
fn a_granted_function_reaches_the_network_and_keeps_its_tmp() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let sink = Sink::start();
    let code = sink.app(ONLINE);
    let env = sink.env();
    node.deploy_app(
        "online",
        "python3.11",
        code.path(),
        &["--grant", "net", "--env", &env],
    );
    let port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    let event = json!({"api": node.url, "port": port}).to_string();
    let out: Value =
        serde_json::from_str(&node.ok(&["invoke", "online", "--data", &event])).unwrap();
    assert_eq!(out["tmp"], "t");
    // The sink reads on its own thread: the line arrives, but not necessarily yet.
    wait_for("the function's report", || {
        (sink.lines() == ["reached"]).then_some(())
    });
    // The network, not the host's loopback: the control API stays out of reach.
    assert!(out["api"].as_str().unwrap().starts_with("denied"), "{out}");
    assert!(
        out["gateway"].as_str().unwrap().starts_with("denied"),
        "{out}"
    );
    // The same code without the grant cannot connect.
    node.ok(&["deploy", "online", "--no-grants"]);
    let out = node.cli(&["invoke", "online", "--data", &event]);
    assert!(!out.status.success());
    assert_eq!(sink.lines(), vec!["reached".to_owned()]);
}

/// Tries to connect to each `[host, port]` of the event; says which it reached.
const CONNECTS: &str = r#"
import socket

def handler(event, context):
    out = []
    for host, port in event["targets"]:
        try:
            socket.create_connection((host, port), timeout=2).close()
            out.append("reached")
        except OSError as e:
            out.append("denied: %s" % e)
    return out
"#;

/// Grants by address: a function reaches the destinations it names and nothing else;
/// a service on the node's loopback is reachable only when granted by its port (at the
/// NAT's gateway, 10.0.2.2), and the control API stays out of reach.
#[test]
fn grants_by_address_reach_only_what_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let (a, b) = (Sink::start(), Sink::start());
    // A service bound to the host's loopback only (as a local database would be).
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local_port = local.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in local.incoming() {});
    let api_port: u16 = node.url.rsplit(':').next().unwrap().parse().unwrap();
    let code = code_dir(&[("app.py", CONNECTS)]);
    let grant_a = format!("net:{}:{}", a.host, a.port);
    let grant_local = format!("net:127.0.0.1:{local_port}");
    node.deploy_app(
        "narrow",
        "python3.11",
        code.path(),
        &["--grant", &grant_a, "--grant", &grant_local],
    );
    node.deploy_app("wide", "python3.11", code.path(), &["--grant", "net"]);
    let targets = json!({"targets": [
        [a.host.to_string(), a.port],
        [b.host.to_string(), b.port],
        ["10.0.2.2", local_port],
        ["10.0.2.2", api_port],
    ]})
    .to_string();
    let narrow: Value =
        serde_json::from_str(&node.ok(&["invoke", "narrow", "--data", &targets])).unwrap();
    let wide: Value =
        serde_json::from_str(&node.ok(&["invoke", "wide", "--data", &targets])).unwrap();
    let reached = |v: &Value| -> Vec<bool> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap() == "reached")
            .collect()
    };
    // narrow: A and its loopback service; not B, not the control API.
    assert_eq!(reached(&narrow), [true, false, true, false], "{narrow}");
    // wide: the network (A and B), never the host's loopback.
    assert_eq!(reached(&wide), [true, true, false, false], "{wide}");
    // A bad grant is refused at deploy, naming what is accepted; a wildcard, which
    // only a wasm function's per-request check can honour, too.
    let out = node.cli(&["deploy", "wide", "--grant", "net:a..b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("net:HOST:PORT"));
    let out = node.cli(&["deploy", "wide", "--grant", "net:*.example.com"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not wildcards"));
    assert_eq!(node.get("/v1/functions/wide")["version"], 1);
}

/// Limits hold for every way of taking a resource.
#[test]
fn memory_processes_and_shm_are_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[(
        "app.py",
        r#"
import mmap, os, time

def fill(path, mib):
    written = 0
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(b"x" * (1 << 20))
                f.flush()
                written += 1
    except OSError as e:
        return {"written_mib": written, "error": str(e)}
    return {"written_mib": written}

def handler(event, context):
    what = event["what"]
    if what == "shared_mmap":
        m = mmap.mmap(-1, 1 << 30, flags=mmap.MAP_SHARED)
        for i in range(0, 1 << 30, 4096):
            m[i] = 1
        return "held 1 GiB"
    if what == "shm":
        return fill("/dev/shm/big", 512)
    if what == "tmp":
        return fill("/tmp/fill", 1024)
    if what == "forks":
        children = []
        try:
            for _ in range(10000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError:
            pass
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        return {"forked": len(children)}
"#,
    )]);
    node.deploy_app(
        "greedy",
        "python3.11",
        code.path(),
        &["--timeout", "60", "--memory", "128", "--max-attempts", "1"],
    );
    // Forking a thousand Pythons takes memory too: give that one room, so the process
    // limit is what stops it.
    node.deploy_app(
        "forker",
        "python3.11",
        code.path(),
        &["--timeout", "60", "--memory", "2048", "--max-attempts", "1"],
    );
    let call = |what: &str| {
        let name = if what == "forks" { "forker" } else { "greedy" };
        node.invoke_raw(name, &json!({ "what": what }).to_string())
    };

    let resp = call("shared_mmap");
    assert_eq!(
        resp.headers()["x-lambent-outcome"],
        "crash",
        "a 1 GiB shared mapping ran"
    );
    let body: Value = resp.json().unwrap();
    assert!(
        body.to_string().contains("out of memory"),
        "not reported as out of memory: {body}"
    );

    let shm: Value = call("shm").json().unwrap();
    assert!(
        shm["written_mib"].as_u64().unwrap() < 128,
        "/dev/shm took {shm}"
    );

    // /tmp is its own size-capped filesystem, charged to the instance's memory: a
    // gigabyte does not fit, and the data directory's disk never sees it.
    let before = dir_bytes(&node.data_dir);
    let resp = call("tmp");
    let outcome = resp.headers()["x-lambent-outcome"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.text().unwrap();
    if outcome == "success" {
        let tmp: Value = serde_json::from_str(&body).unwrap();
        assert!(
            tmp["written_mib"].as_u64().unwrap() < 1024,
            "/tmp took {tmp}"
        );
    } else {
        assert!(body.contains("out of memory"), "{outcome}: {body}");
    }
    assert!(
        dir_bytes(&node.data_dir) < before + (64 << 20),
        "the data directory grew"
    );

    let forks: Value = call("forks").json().unwrap();
    let n = forks["forked"]
        .as_u64()
        .unwrap_or_else(|| panic!("{forks}"));
    assert!((10..1024).contains(&n), "forked {n} processes");
}

/// Bytes of the regular files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// The Runtime API endpoints live in the instances' own network namespaces: on the
/// host, the node listens on its control API and nothing else.
#[test]
fn instance_endpoints_are_not_on_the_host_network() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    for name in ["one", "two"] {
        node.deploy_app(name, "python3.11", code.path(), &[]);
        assert_eq!(node.ok(&["invoke", name]).trim(), "1");
    }
    // Sockets the node holds, by inode; listeners of the host's network, by inode.
    let held: std::collections::HashSet<String> =
        std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')
                    .map(str::to_owned)
            })
            .collect();
    let mut listening: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // State 0A is LISTEN; column 9 is the inode; column 1 ends with the port.
            if cols.get(3) != Some(&"0A") || !held.contains(*cols.get(9)?) {
                return None;
            }
            u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()
        })
        .collect();
    listening.sort_unstable();
    let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut expected = vec![port(&node.url), port(&node.routes_url)];
    expected.sort_unstable();
    assert_eq!(
        listening, expected,
        "the node listens on the host network beyond its control API and its routes"
    );
}

/// Starts a daemon (double fork + setsid) that would sleep for ten minutes.
const DAEMON: &str = r#"
import os, time
def handler(event, context):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(600)
        os._exit(0)
    os.wait()
    return "detached"
"#;

/// Deploys `spawner` and calls it once: its instance leaves a daemon running. Returns
/// the environment entry that finds both processes on the host.
fn start_daemon(node: &Node, marker_name: &str) -> String {
    let marker = host_marker(marker_name);
    let code = code_dir(&[("app.py", DAEMON)]);
    node.deploy_app("spawner", "python3.11", code.path(), &["--env", &marker]);
    assert_eq!(node.ok(&["invoke", "spawner"]).trim(), "\"detached\"");
    let pids = live(&processes_with_env(&marker));
    assert!(pids.len() >= 2, "the function and its daemon: {pids:?}");
    marker
}

/// A detached daemon (double fork + setsid) dies with its instance when the function
/// is removed.
#[test]
fn a_detached_daemon_dies_with_its_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let marker = start_daemon(&node, "DAEMON_MARKER");
    node.ok(&["rm", "spawner"]);
    wait_for("every process of the removed function to die", || {
        live(&processes_with_env(&marker)).is_empty().then_some(())
    });
}

/// A detached daemon also dies when its instance is dropped for being idle.
#[test]
fn a_detached_daemon_dies_when_its_instance_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("data"), &["--keep-alive", "1"]);
    let marker = start_daemon(&node, "EXPIRY_MARKER");
    wait_for("the idle instance and its daemon to be gone", || {
        live(&processes_with_env(&marker)).is_empty().then_some(())
    });
}

/// An instance runs under cgroup limits that follow its memory: memory + 64 MiB, 1,024
/// processes, CPU in proportion (one core at 1,769 MB, at least half a core, at most
/// the node's cores).
#[test]
fn an_instance_runs_under_limits_that_follow_its_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    for (name, memory_mb) in [("small", 128u64), ("large", 3538)] {
        let marker = host_marker(&format!("LIMITS_{name}"));
        let memory = memory_mb.to_string();
        node.deploy_app(
            name,
            "python3.11",
            code.path(),
            &["--memory", &memory, "--env", &marker],
        );
        assert_eq!(node.ok(&["invoke", name]).trim(), "1");
        // The warm instance's process, and its groups as the host names them.
        let pid = live(&processes_with_env(&marker))[0];
        let read = |controller: &str, file: &str| -> u64 {
            cgroup_file(pid, controller, file).parse().unwrap()
        };
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (memory_mb + 64) << 20
        );
        assert_eq!(read("pids", "pids.max"), 1024);
        let quota = (memory_mb * 100_000 / 1769).clamp(50_000, cores * 100_000);
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), quota, "{name}");
    }
}

/// Spins four processes for `event["seconds"]`: far more CPU than a quota of half a
/// core.
const HOG: &str = r#"
import os, time

def handler(event, context):
    end = time.time() + event["seconds"]
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            while time.time() < end:
                pass
            os._exit(0)
        children.append(pid)
    while time.time() < end:
        pass
    for pid in children:
        os.waitpid(pid, 0)
    return "spun"
"#;

/// A cgroup v1 control file of a process's group in `controller`.
fn cgroup_file(pid: u32, controller: &str, file: &str) -> String {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = groups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            names.split(',').any(|n| n == controller).then_some(path)
        })
        .unwrap();
    let file = format!("/sys/fs/cgroup/{controller}{path}/{file}");
    std::fs::read_to_string(&file).unwrap().trim().to_owned()
}

/// A function that uses its whole CPU quota runs in the idle class while it does, so
/// the node and other functions come first; it is restored once it stops.
#[test]
fn a_cpu_hog_is_demoted_while_it_hogs() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(&tmp.path().join("data"));
    let marker = host_marker("HOG_MARKER");
    let code = code_dir(&[("app.py", HOG)]);
    node.deploy_app(
        "hog",
        "python3.11",
        code.path(),
        &["--env", &marker, "--timeout", "30"],
    );
    // A short call first, so the instance is warm.
    assert_eq!(
        node.ok(&["invoke", "hog", "--data", r#"{"seconds": 0}"#])
            .trim(),
        "\"spun\""
    );
    let pid = live(&processes_with_env(&marker))[0];
    // The kernel has `cpu.idle` (5.15 and later); without it the weight drops instead.
    let (file, normal, demoted) = if std::path::Path::new("/sys/fs/cgroup/cpu/cpu.idle").exists() {
        ("cpu.idle", "0", "1")
    } else {
        ("cpu.shares", "1024", "2")
    };
    wait_for("a warm, quiet instance in the normal class", || {
        (cgroup_file(pid, "cpu", file) == normal).then_some(())
    });
    std::thread::scope(|s| {
        let spin = s.spawn(|| node.ok(&["invoke", "hog", "--data", r#"{"seconds": 4}"#]));
        wait_for("the hog to be demoted", || {
            (cgroup_file(pid, "cpu", file) == demoted).then_some(())
        });
        assert_eq!(spin.join().unwrap().trim(), "\"spun\"");
    });
    wait_for("the hog to be restored once it stops", || {
        (cgroup_file(pid, "cpu", file) == normal).then_some(())
    });
}

/// With isolation off, the node says so in its status.
#[test]
fn isolation_none_is_stated() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start_with(&tmp.path().join("data"), &["--isolation", "none"]);
    let status = node.get("/v1/status");
    assert!(
        status["isolation"].as_str().unwrap().starts_with("none"),
        "{status}"
    );
    let code = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    node.deploy_app("plain", "python3.11", code.path(), &[]);
    assert_eq!(node.ok(&["invoke", "plain"]).trim(), "1");
}
