//! The process runtime (an implementation of `lambent-runtime`'s traits): runs `python3.x`, `nodejs*` and `provided` functions as
//! processes speaking the AWS Lambda Runtime API, one process per instance.
//!
//! Each instance runs in a sandbox (`sandbox`: namespaces, an unprivileged id, a
//! read-only root, Landlock, seccomp, cgroups) unless the node runs with
//! `--isolation none`, and gets its own Runtime API endpoint (in its own network
//! namespace, or on a port of the host's loopback with isolation off), a scrubbed environment
//! (LAMBDA-COMPAT.md's list plus the function's own variables), its own process group
//! (killed whole on timeout or shutdown), a private `/tmp`, and its stdout/stderr
//! captured per invocation.

mod api;
mod capture;
mod host_api;
mod instance;
pub mod sandbox;

pub use api::MAX_RESPONSE_BYTES;
pub use instance::ProcessInstance;

use async_trait::async_trait;
use lambent_core::RuntimeKind;
use lambent_runtime::{Instance, InstanceConfig, Runtime, RuntimeError};
use sandbox::plan::PrestartKind;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::OnceCell;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/node/bootstrap.js");
/// The `lambent` module of each bootstrap: the node's services (key-value, publish).
const PYTHON_MODULE: &str = include_str!("../../../runtimes/python/lambent.py");
const NODE_MODULE: &str = include_str!("../../../runtimes/node/lib/lambent.js");

/// Starts runtime processes.
pub struct ProcessRuntime {
    host: sandbox::Host,
    runtime_dir: PathBuf,
    instances_dir: PathBuf,
    region: String,
    /// Resolved Python interpreters by declared runtime (`python3.12`), each once.
    pythons: std::sync::Mutex<HashMap<String, Arc<Resolved>>>,
    node: OnceCell<Result<Interpreter, String>>,
}

impl ProcessRuntime {
    /// Writes the bundled bootstraps under `data_dir/runtimes`, prepares instance
    /// directories under `data_dir/instances`, and checks that the host can build the
    /// sandbox `isolation` asks for (if it cannot, process functions do not start:
    /// `isolation()` says why).
    pub fn new(data_dir: &Path, isolation: sandbox::Isolation) -> Result<Self, RuntimeError> {
        let runtime_dir = data_dir.join("runtimes");
        let instances_dir = data_dir.join("instances");
        let files = |path: &Path, e: std::io::Error| RuntimeError::Files {
            path: path.display().to_string(),
            source: e,
        };
        for (rel, text) in [
            ("python/bootstrap.py", PYTHON_BOOTSTRAP),
            ("python/lambent.py", PYTHON_MODULE),
            ("node/bootstrap.js", NODE_BOOTSTRAP),
            ("node/lib/lambent.js", NODE_MODULE),
        ] {
            let path = runtime_dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| files(parent, e))?;
            }
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                std::fs::write(&path, text).map_err(|e| files(&path, e))?;
            }
        }
        // Instance scratch directories of a previous run are garbage now.
        let _ = std::fs::remove_dir_all(&instances_dir);
        std::fs::create_dir_all(&instances_dir).map_err(|e| files(&instances_dir, e))?;
        let host = sandbox::Host::check(&isolation, &instances_dir, &runtime_dir);
        Ok(Self {
            host,
            runtime_dir,
            instances_dir,
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            pythons: std::sync::Mutex::new(HashMap::new()),
            node: OnceCell::new(),
        })
    }

    /// The interpreter for a declared Python runtime and its site-packages, resolved
    /// once per version: `python3.12` runs a Python 3.12 when the host has one (on
    /// PATH, or installed by pyenv), else the host's `python3`, and the instance's log
    /// says so. `LAMBENT_PYTHON` names one interpreter for every version.
    async fn python(&self, declared: &str, function: &str) -> Result<Interpreter, RuntimeError> {
        let cell = self
            .pythons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(declared.to_owned())
            .or_default()
            .clone();
        let found = cell
            .get_or_init(|| async { resolve_python(declared).await })
            .await;
        found.clone().map_err(|detail| RuntimeError::Interpreter {
            function: function.to_owned(),
            what: "Python 3 interpreter",
            detail,
        })
    }

    async fn node(&self, function: &str) -> Result<Interpreter, RuntimeError> {
        let found = self
            .node
            .get_or_init(|| async {
                let lines = resolve(
                    "LAMBENT_NODE",
                    "node",
                    &["-e", "console.log(process.execPath)"],
                )
                .await?;
                let exe = lines.first().ok_or("no interpreter path printed")?;
                Ok(Interpreter {
                    exe: PathBuf::from(exe),
                    site_path: String::new(),
                    note: None,
                })
            })
            .await;
        found.clone().map_err(|detail| RuntimeError::Interpreter {
            function: function.to_owned(),
            what: "Node.js interpreter",
            detail,
        })
    }

    /// How instances are isolated on this node, in one line (for `lambent status`).
    pub fn isolation(&self) -> String {
        self.host.describe()
    }

    /// Sandbox launchers started ahead of need and ready now.
    pub fn spare_launchers(&self) -> usize {
        match &self.host {
            sandbox::Host::Sandbox(s) => s.spares.ready(),
            _ => 0,
        }
    }

    /// False when a sandbox was asked for and the host cannot build one (process
    /// functions then do not start).
    pub fn isolation_available(&self) -> bool {
        !matches!(self.host, sandbox::Host::Unavailable(_))
    }

    /// Resolves the interpreters now, so the first cold start does not pay for it, and
    /// has spare sandboxes pre-start the default Python and Node.js (a cold start of a
    /// function on one then skips the interpreter's start and the bootstrap's
    /// imports). Spares pre-start Python until a Node.js function takes one.
    pub async fn resolve_interpreters(&self) {
        // Each asks its interpreter for its version: both at once.
        let (python, node) = tokio::join!(self.python("python3", ""), self.node(""));
        if let sandbox::Host::Sandbox(s) = &self.host {
            let runtime_dir = Path::new(sandbox::plan::RUNTIME_ROOT);
            let mut setups = Vec::new();
            if let Ok(python) = &python {
                let command = python_command(python, None, runtime_dir);
                setups.push(prestart_setup(PrestartKind::Python, command, s));
            }
            if let Ok(node) = &node {
                let command = node_command(&node.exe, None, runtime_dir);
                setups.push(prestart_setup(PrestartKind::Node, command, s));
            }
            s.spares.set_prestarts(setups);
            s.spares.refill();
        }
    }

    /// The program, arguments and extra environment that run this function's runtime.
    /// Paths are as the process sees them: inside a sandbox, the bootstraps are under
    /// `/var/runtime` and the code under `/var/task`.
    async fn command_for(
        &self,
        config: &InstanceConfig,
        sandboxed: bool,
    ) -> Result<Command, RuntimeError> {
        let name = &config.spec.name;
        let (runtime_dir, task_root) = if sandboxed {
            (
                PathBuf::from(sandbox::plan::RUNTIME_ROOT),
                PathBuf::from(sandbox::plan::TASK_ROOT),
            )
        } else {
            (self.runtime_dir.clone(), config.code_dir.clone())
        };
        Ok(match &config.spec.runtime {
            RuntimeKind::Python { declared } => {
                let python = self.python(declared, name).await?;
                python_command(&python, config.spec.env.get("PYTHONPATH"), &runtime_dir)
            }
            RuntimeKind::Node { .. } => {
                let exe = self.node(name).await?.exe;
                node_command(&exe, config.spec.env.get("NODE_PATH"), &runtime_dir)
            }
            RuntimeKind::Provided { .. } => {
                let bootstrap = config.code_dir.join("bootstrap");
                if !bootstrap.is_file() {
                    return Err(RuntimeError::NoBootstrap {
                        function: name.clone(),
                    });
                }
                Command {
                    program: task_root.join("bootstrap"),
                    args: Vec::new(),
                    env: Vec::new(),
                    note: None,
                    binds: Vec::new(),
                }
            }
            RuntimeKind::Wasm { .. } => {
                return Err(RuntimeError::InvalidCode {
                    function: name.clone(),
                    detail: "a wasm function runs on the wasm runtime, not as a process".into(),
                });
            }
        })
    }
}

/// What spares pre-start for `kind`: the runtime's command as a sandbox runs it, with
/// only the start-up environment, and its installation's directories the system's do
/// not cover (bound by the spare's prelude).
fn prestart_setup(
    kind: PrestartKind,
    command: Command,
    sandbox: &sandbox::Sandbox,
) -> sandbox::spare::PrestartSetup {
    let system = sandbox.spares.system_dirs();
    sandbox::spare::PrestartSetup {
        binds: command
            .binds
            .iter()
            .filter(|dir| !system.iter().any(|d| dir.starts_with(d)))
            .cloned()
            .collect(),
        prestart: sandbox::plan::Prestart {
            kind,
            program: command.program.display().to_string(),
            args: command
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: instance::STARTUP_ENV
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .chain(command.env)
                .filter(|(k, _)| kind.read_at_start(k))
                .collect(),
        },
    }
}

/// How a Node.js instance is started: `require('lambent')` finds the bundled module
/// after the function's own (`own_path`).
fn node_command(exe: &Path, own_path: Option<&String>, runtime_dir: &Path) -> Command {
    let lib = runtime_dir.join("node/lib").display().to_string();
    let node_path = match own_path {
        Some(own) => format!("{own}:{lib}"),
        None => lib,
    };
    Command {
        binds: sandbox::install_prefix(exe).into_iter().collect(),
        program: exe.to_path_buf(),
        args: vec![runtime_dir.join("node/bootstrap.js").into()],
        env: vec![("NODE_PATH".into(), node_path)],
        note: None,
    }
}

/// How a Python instance is started: `-S` skips site's .pth processing (~35 ms a
/// start here); the host's site-packages stay importable through PYTHONPATH, after
/// the function's own (`own_path`).
fn python_command(python: &Interpreter, own_path: Option<&String>, runtime_dir: &Path) -> Command {
    let path = match own_path {
        Some(own) if !python.site_path.is_empty() => format!("{own}:{}", python.site_path),
        Some(own) => own.clone(),
        None => python.site_path.clone(),
    };
    let mut binds: Vec<PathBuf> = sandbox::install_prefix(&python.exe).into_iter().collect();
    binds.extend(
        python
            .site_path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    );
    Command {
        program: python.exe.clone(),
        args: vec!["-S".into(), runtime_dir.join("python/bootstrap.py").into()],
        env: vec![
            ("PYTHONPATH".into(), path),
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ],
        note: python.note.clone(),
        binds,
    }
}

/// Prints the interpreter's path, its site-packages directories and its version.
const PYTHON_PROBE: &str = "import os, site, sys\nprint(sys.executable)\n\
print(os.pathsep.join(p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)))\n\
print('%d.%d.%d' % sys.version_info[:3])";

/// An interpreter resolved once (or why it could not be).
type Resolved = OnceCell<Result<Interpreter, String>>;

/// A resolved interpreter.
#[derive(Debug, Clone)]
struct Interpreter {
    exe: PathBuf,
    /// Directories to put on PYTHONPATH (Python only).
    site_path: String,
    /// What the instance's log should say about the choice (a fallback).
    note: Option<String>,
}

/// Finds the interpreter for `declared` (`python3` or `python3.X`); see `python`.
async fn resolve_python(declared: &str) -> Result<Interpreter, String> {
    let probe = |lines: Vec<String>| -> Result<(Interpreter, String), String> {
        let exe = lines.first().ok_or("no interpreter path printed")?;
        // `python3` and `python3.11` name one interpreter: one path, so a spare's
        // pre-started interpreter fits either.
        let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| PathBuf::from(exe));
        Ok((
            Interpreter {
                exe,
                site_path: lines.get(1).cloned().unwrap_or_default(),
                note: None,
            },
            lines.get(2).cloned().unwrap_or_default(),
        ))
    };
    let args = ["-c", PYTHON_PROBE];
    if std::env::var_os("LAMBENT_PYTHON").is_some() || declared == "python3" {
        return probe(resolve("LAMBENT_PYTHON", "python3", &args).await?).map(|(i, _)| i);
    }
    let wanted = declared.trim_start_matches("python");
    for candidate in python_candidates(declared) {
        if let Ok(lines) = run_probe(&candidate, &args).await
            && let Ok((found, version)) = probe(lines)
            && (version == wanted || version.starts_with(&format!("{wanted}.")))
        {
            return Ok(found);
        }
    }
    let (mut fallback, version) = probe(resolve("LAMBENT_PYTHON", "python3", &args).await?)?;
    let note = format!(
        "lambent: {declared} is not installed on this host; running {} (Python {version}) instead",
        fallback.exe.display()
    );
    tracing::warn!("{note}");
    fallback.note = Some(note);
    Ok(fallback)
}

/// Where a `python3.X` may be: on PATH, in pyenv's versions, in the usual prefixes.
fn python_candidates(declared: &str) -> Vec<String> {
    let mut out = vec![declared.to_owned()];
    let version = declared.trim_start_matches("python");
    let pyenv = std::env::var("PYENV_ROOT").ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|home| format!("{home}/.pyenv"))
    });
    if let Some(root) = pyenv
        && let Ok(entries) = std::fs::read_dir(format!("{root}/versions"))
    {
        let mut found: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name == version || name.starts_with(&format!("{version}.")))
            .map(|name| format!("{root}/versions/{name}/bin/{declared}"))
            .collect();
        found.sort();
        found.reverse(); // the newest patch release first
        out.extend(found);
    }
    out.push(format!("/usr/local/bin/{declared}"));
    out.push(format!("/usr/bin/{declared}"));
    out
}

/// How to start one runtime process.
pub(crate) struct Command {
    pub program: PathBuf,
    pub args: Vec<std::ffi::OsString>,
    pub env: Vec<(String, String)>,
    /// A line for the instance's log (e.g. that the runtime fell back to another
    /// interpreter version).
    pub note: Option<String>,
    /// Host directories the process needs inside a sandbox (the interpreter's
    /// installation and its site-packages), bound read-only at the same path.
    pub binds: Vec<PathBuf>,
}

/// Runs `program` (or the one `env_var` names) and returns its output lines.
async fn resolve(env_var: &str, program: &str, args: &[&str]) -> Result<Vec<String>, String> {
    let program = std::env::var(env_var).unwrap_or_else(|_| program.to_owned());
    run_probe(&program, args).await
}

/// Runs `program` and returns its output lines.
async fn run_probe(program: &str, args: &[&str]) -> Result<Vec<String>, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running `{program}`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.trim().is_empty() {
        return Err(format!(
            "`{program}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text.lines().map(str::to_owned).collect())
}

#[async_trait]
impl Runtime for ProcessRuntime {
    /// A `provided` package must hold an executable `bootstrap` at its top: refused
    /// at deploy otherwise (interpreted runtimes report a missing handler when they
    /// start, as Lambda does).
    async fn prepare(
        &self,
        spec: &lambent_core::FunctionSpec,
        code_dir: &std::path::Path,
    ) -> Result<(), RuntimeError> {
        use std::os::unix::fs::PermissionsExt;
        let wildcard = spec.net_grants().into_iter().find_map(|g| match g {
            lambent_core::grant::NetGrant::To {
                host: lambent_core::grant::Host::Wildcard(domain),
                ..
            } => Some(domain),
            _ => None,
        });
        if let Some(domain) = wildcard {
            return Err(RuntimeError::InvalidCode {
                function: spec.name.clone(),
                detail: format!(
                    "grant `net:*.{domain}`: a process function's egress is filtered by address, so it takes hosts and addresses, not wildcards (those are for wasm functions)"
                ),
            });
        }
        if let RuntimeKind::Provided { .. } = spec.runtime {
            let executable = std::fs::metadata(code_dir.join("bootstrap"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !executable {
                return Err(RuntimeError::NoBootstrap {
                    function: spec.name.clone(),
                });
            }
        }
        Ok(())
    }

    async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
        let sandbox = match &self.host {
            sandbox::Host::Off => None,
            sandbox::Host::Unavailable(why) => {
                return Err(RuntimeError::Isolation {
                    function: config.spec.name.clone(),
                    detail: format!(
                        "{why} (run the node with --isolation none to allow unsandboxed processes)"
                    ),
                });
            }
            sandbox::Host::Sandbox(s) => Some(instance::Sandboxed {
                spares: s.spares.clone(),
            }),
        };
        let command = self.command_for(&config, sandbox.is_some()).await?;
        let instance = ProcessInstance::spawn(instance::Launch {
            config,
            command,
            runtime_dir: self.runtime_dir.clone(),
            instances_dir: self.instances_dir.clone(),
            region: self.region.clone(),
            sandbox,
        })
        .await?;
        Ok(Box::new(instance))
    }
}
