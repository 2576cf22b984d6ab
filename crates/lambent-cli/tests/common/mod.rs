//! Test glue: start the real `lambent` binary on a free port with a temporary data
//! directory, drive it with the CLI and plain HTTP, and wait for outcomes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lambent");

/// A running node. Killed (SIGKILL) when dropped.
pub struct Node {
    pub url: String,
    /// The data plane (HTTP routes).
    pub routes_url: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl Node {
    pub fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[])
    }

    /// Starts a node with extra `serve` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Node {
        Self::start_in(None, data_dir, flags)
    }

    /// Starts a node from a working directory (to test relative paths).
    pub fn start_in(cwd: Option<&Path>, data_dir: &Path, flags: &[&str]) -> Node {
        Self::start_wrapped(&[], cwd, data_dir, flags)
    }

    /// Starts a node under a wrapper command (e.g. `prlimit --nofile=...`).
    pub fn start_wrapped(
        wrapper: &[&str],
        cwd: Option<&Path>,
        data_dir: &Path,
        flags: &[&str],
    ) -> Node {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                cwd.unwrap_or(Path::new(""))
                    .join(data_dir.with_extension("log")),
            )
            .unwrap();
        let mut command = match wrapper {
            [] => Command::new(BIN),
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
        };
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        command.arg("serve");
        if !flags.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !flags.contains(&"--http-listen") {
            command.args(["--http-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(flags)
            .env("LAMBENT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start lambent serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let log_path = cwd
            .unwrap_or(Path::new(""))
            .join(data_dir.with_extension("log"));
        let mut read = |prefix: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| {
                    // Say why the node did not start: the end of its log.
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let tail: String = log
                        .chars()
                        .rev()
                        .take(4000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    panic!("unexpected line from serve: {line:?}; its log ends:\n{tail}")
                })
                .to_owned()
        };
        let url = read("lambent: control API on ");
        let routes_url = read("lambent: HTTP routes on ");
        Node {
            url,
            routes_url,
            data_dir: data_dir.to_path_buf(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the node to exit by itself.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    /// kill -9: no shutdown, no flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("LAMBENT_URL", &self.url)
            .output()
            .expect("run lambent")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "lambent {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// Deploys `app.handler` from `code` on a Python runtime, with extra deploy flags.
    pub fn deploy_app(&self, name: &str, runtime: &str, code: &Path, extra: &[&str]) {
        let mut args = vec![
            "deploy",
            name,
            "--runtime",
            runtime,
            "--handler",
            "app.handler",
            "--code",
            code.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// `POST /v1/functions/NAME/invoke` with a raw body; the response as it came.
    pub fn invoke_raw(&self, name: &str, body: &str) -> reqwest::blocking::Response {
        self.http()
            .post(format!("{}/v1/functions/{name}/invoke", self.url))
            .body(body.to_owned())
            .send()
            .unwrap()
    }

    /// GET with an API token.
    pub fn get_with(&self, path: &str, token: &str) -> Value {
        self.http()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        self.http()
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn invocations(&self, function: &str) -> Vec<Value> {
        self.get(&format!("/v1/invocations?function={function}&limit=10000"))["invocations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn dead_letters(&self, function: &str) -> Vec<Value> {
        self.get(&format!("/v1/dlq?function={function}"))["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Publishes one structured event; returns the HTTP status and the answer.
    pub fn publish(&self, event: &Value) -> (u16, Value) {
        let resp = self
            .http()
            .post(format!("{}/v1/events", self.url))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a condition that the system must reach; fails with `what` if it does not
/// within a generous bound (a hang is a failure, not a slow pass).
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a function's code files into a fresh directory.
pub fn code_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    dir
}

pub fn event(id: &str, ty: &str, data: Value) -> Value {
    serde_json::json!({"specversion": "1.0", "id": id, "source": "/tests", "type": ty, "data": data})
}

/// The repository root (for examples/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Where sandboxed test functions report to: a TCP server in the test process that
/// collects the lines functions send. Functions deployed with `--grant net` reach the
/// host's network but not its loopback, so it listens on the host's own address;
/// without the grant they reach nothing. A function may also wait on its connection
/// until the test calls `release`.
pub struct Sink {
    pub host: std::net::IpAddr,
    pub port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

/// Python for a handler module: `report(line)` sends one line to the sink and returns
/// once the sink has recorded it; `report_and_wait(line)` then also blocks until the
/// test releases it.
pub const SINK_PY: &str = "import os, socket\n\
def _sink():\n    host, port = os.environ['SINK'].rsplit(':', 1)\n    return socket.create_connection((host, int(port)))\n\
def report(line):\n    s = _sink()\n    s.sendall((line + '\\n').encode())\n    s.recv(1)\n    s.close()\n\
def report_and_wait(line):\n    s = _sink()\n    s.sendall((line + '\\n').encode())\n    s.recv(1)\n    s.recv(1)\n    s.close()\n";

impl Sink {
    pub fn start() -> Sink {
        let host = host_address();
        let listener = std::net::TcpListener::bind((host, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (l, o) = (lines.clone(), open.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                o.lock().unwrap().push(stream.try_clone().unwrap());
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut ack = stream.try_clone().unwrap();
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        l.lock().unwrap().push(line);
                        // Recorded: `report` returns only now.
                        let _ = ack.write_all(b"k");
                    }
                });
            }
        });
        Sink {
            host,
            port,
            lines,
            open,
        }
    }

    /// A code directory whose `app.py` is `SINK_PY` followed by `handler_module`.
    pub fn app(&self, handler_module: &str) -> tempfile::TempDir {
        code_dir(&[("app.py", &format!("{SINK_PY}{handler_module}"))])
    }

    /// `--env SINK=HOST:PORT` for `deploy` (with `--grant net`, which lets it connect).
    pub fn env(&self) -> String {
        format!("SINK={}:{}", self.host, self.port)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lets every function waiting in `report_and_wait` go on.
    pub fn release(&self) {
        for mut stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.write_all(b"x");
        }
    }
}

/// This machine's address on its network (not loopback): what a function granted
/// `net` can reach. Learned from the route a UDP socket would take (nothing is sent).
pub fn host_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.255:9")
        .or_else(|_| socket.connect("10.255.255.255:9"))
        .expect("this machine has no network address besides loopback");
    socket.local_addr().unwrap().ip()
}

/// Host pids of the processes whose environment holds `entry` (`NAME=value`).
/// An environment entry (`NAME=this test's pid`) that finds a function's processes on
/// the host through `processes_with_env`. /proc/PID/environ shows the environment a
/// process was executed with: an interpreter a spare started ahead of need is given
/// its function's environment later, so it would not show there. The `PYTHON` prefix
/// makes the function's start-up environment differ from the pre-started one's, so its
/// instances execute the runtime with the marker.
pub fn host_marker(name: &str) -> String {
    format!("PYTHON_LAMBENT_TEST_{name}={}", std::process::id())
}

pub fn processes_with_env(entry: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|v| v == entry.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// The pids of `pids` that are alive (a zombie waiting for its reaper is dead).
pub fn live(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        })
        .collect()
}

/// A Rust guest component from `sdk/rust` (`hello`, `seed_listener`, `http_hello`,
/// `counter`, `limits`), built from source for wasm32-wasip2 the first time a test
/// asks (cargo makes later builds no-ops).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let sdk = repo_root().join("sdk/rust");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(sdk.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(sdk.join("target"))
            // The host build's flags (coverage, sanitizers) are not the guests'.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run cargo to build the guests");
        assert!(
            out.status.success(),
            "building the guests failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sdk.join("target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.is_file(), "no guest {}", path.display());
    path
}
