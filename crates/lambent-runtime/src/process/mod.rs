//! The process runtime: runs `python3.x`, `nodejs*` and `provided` functions as
//! processes speaking the AWS Lambda Runtime API, one process per instance.
//!
//! Each instance gets its own Runtime API endpoint (a port on 127.0.0.1), a scrubbed
//! environment (LAMBDA-COMPAT.md's list plus the function's own variables), its own
//! process group (killed whole on timeout or shutdown), rlimits, a private `TMPDIR`,
//! and its stdout/stderr captured per invocation.

mod api;
mod capture;
mod instance;

pub use api::MAX_RESPONSE_BYTES;
pub use instance::ProcessInstance;

use crate::{Instance, InstanceConfig, Runtime, RuntimeError};
use async_trait::async_trait;
use lambent_core::RuntimeKind;
use std::path::{Path, PathBuf};
use tokio::sync::OnceCell;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../../runtimes/node/bootstrap.js");

/// Starts runtime processes.
pub struct ProcessRuntime {
    runtime_dir: PathBuf,
    instances_dir: PathBuf,
    region: String,
    python: OnceCell<Result<PathBuf, String>>,
    node: OnceCell<Result<PathBuf, String>>,
}

impl ProcessRuntime {
    /// Writes the bundled bootstraps under `data_dir/runtimes` and prepares instance
    /// directories under `data_dir/instances`.
    pub fn new(data_dir: &Path) -> Result<Self, RuntimeError> {
        let runtime_dir = data_dir.join("runtimes");
        let instances_dir = data_dir.join("instances");
        let files = |path: &Path, e: std::io::Error| RuntimeError::Files {
            path: path.display().to_string(),
            source: e,
        };
        for (rel, text) in [
            ("python/bootstrap.py", PYTHON_BOOTSTRAP),
            ("node/bootstrap.js", NODE_BOOTSTRAP),
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
        Ok(Self {
            runtime_dir,
            instances_dir,
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            python: OnceCell::new(),
            node: OnceCell::new(),
        })
    }

    /// The real interpreter behind `python3` (resolved once: on these machines `python3`
    /// is a pyenv shim that costs ~80 ms a start). `LAMBENT_PYTHON` overrides it.
    async fn python(&self, function: &str) -> Result<PathBuf, RuntimeError> {
        let found = self
            .python
            .get_or_init(|| {
                resolve(
                    "LAMBENT_PYTHON",
                    "python3",
                    &["-c", "import sys; print(sys.executable)"],
                )
            })
            .await;
        found.clone().map_err(|detail| RuntimeError::Interpreter {
            function: function.to_owned(),
            what: "Python 3 interpreter",
            detail,
        })
    }

    async fn node(&self, function: &str) -> Result<PathBuf, RuntimeError> {
        let found = self
            .node
            .get_or_init(|| {
                resolve(
                    "LAMBENT_NODE",
                    "node",
                    &["-e", "console.log(process.execPath)"],
                )
            })
            .await;
        found.clone().map_err(|detail| RuntimeError::Interpreter {
            function: function.to_owned(),
            what: "Node.js interpreter",
            detail,
        })
    }

    /// The program and arguments that run this function's runtime.
    async fn command_for(
        &self,
        config: &InstanceConfig,
    ) -> Result<(PathBuf, Vec<PathBuf>), RuntimeError> {
        let name = &config.spec.name;
        Ok(match &config.spec.runtime {
            RuntimeKind::Python { .. } => (
                self.python(name).await?,
                vec![self.runtime_dir.join("python/bootstrap.py")],
            ),
            RuntimeKind::Node { .. } => (
                self.node(name).await?,
                vec![self.runtime_dir.join("node/bootstrap.js")],
            ),
            RuntimeKind::Provided { .. } => {
                let bootstrap = config.code_dir.join("bootstrap");
                if !bootstrap.is_file() {
                    return Err(RuntimeError::NoBootstrap {
                        function: name.clone(),
                    });
                }
                (bootstrap, Vec::new())
            }
        })
    }
}

async fn resolve(env_var: &str, program: &str, args: &[&str]) -> Result<PathBuf, String> {
    if let Ok(explicit) = std::env::var(env_var) {
        return Ok(PathBuf::from(explicit));
    }
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running `{program}`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return Err(format!(
            "`{program}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(text))
}

#[async_trait]
impl Runtime for ProcessRuntime {
    async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
        let (program, args) = self.command_for(&config).await?;
        let instance = ProcessInstance::spawn(instance::Launch {
            config,
            program,
            args,
            runtime_dir: self.runtime_dir.clone(),
            instances_dir: self.instances_dir.clone(),
            region: self.region.clone(),
        })
        .await?;
        Ok(Box::new(instance))
    }
}
