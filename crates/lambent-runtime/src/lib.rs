//! How function code runs. One trait per extension point: a [`Runtime`] starts
//! [`Instance`]s of a function version; an instance serves one invocation at a time.
//! The process runtime (AWS Lambda Runtime API) is `lambent-runtime-process`; the
//! wasm runtime (wasmtime components) is `lambent-runtime-wasm`. A node holds one of
//! each in a [`Runtimes`] registry keyed by the runtime's family.

pub mod host;
mod registry;

pub use registry::Runtimes;

use async_trait::async_trait;
use bytes::Bytes;
use lambent_core::{FunctionSpec, InvocationOutcome};
use std::path::{Path, PathBuf};

/// A failure to start an instance (not the function's fault).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("function `{function}`: cannot find the {what} to run it: {detail}")]
    Interpreter {
        function: String,
        what: &'static str,
        detail: String,
    },
    #[error(
        "function `{function}`: runtime `provided` needs an executable `bootstrap` at the top of the code"
    )]
    NoBootstrap { function: String },
    #[error("function `{function}`: cannot start its runtime process: {source}")]
    Spawn {
        function: String,
        #[source]
        source: std::io::Error,
    },
    #[error("function `{function}`: cannot isolate its process: {detail}")]
    Isolation { function: String, detail: String },
    #[error("cannot prepare runtime files in {path}: {source}")]
    Files {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The code cannot run on this runtime (refused at deploy; the previous version
    /// keeps serving).
    #[error("function `{function}`: {detail}")]
    InvalidCode { function: String, detail: String },
    #[error("function `{function}`: no runtime of family `{family}` on this node")]
    NoRuntime {
        function: String,
        family: &'static str,
    },
}

/// What an instance runs: one version of one function.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub spec: FunctionSpec,
    pub version: u64,
    /// The unpacked code (read-only, shared by instances of the same package).
    pub code_dir: PathBuf,
    /// The node's services the function may call (key-value, publish), if any.
    pub host: Option<host::Host>,
}

/// One invocation handed to an instance.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub request_id: String,
    pub payload: Bytes,
    /// Absolute deadline, epoch milliseconds.
    pub deadline_ms: i64,
    pub trace_id: Option<String>,
    pub event_id: Option<String>,
    pub attempt: u32,
    pub client_context: Option<String>,
}

/// An error a function or its runtime reported: Lambda's error document and the
/// two fields records and dead letters keep from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReport {
    pub error_type: String,
    pub message: String,
    /// The error document (`{"errorType", "errorMessage", ...}`) as the caller gets it.
    pub body: Bytes,
}

impl ErrorReport {
    /// A report raised by Lambent itself, with a minimal error document.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        let (error_type, message) = (error_type.into(), message.into());
        let body =
            serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string();
        Self {
            error_type,
            message,
            body: Bytes::from(body),
        }
    }
}

/// How an invocation ended, as the runtime saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeOutcome {
    /// The handler's result.
    Success(Bytes),
    /// The handler raised or returned an error.
    FunctionError(ErrorReport),
    /// The function could not initialise.
    InitError(ErrorReport),
    /// The deadline passed and the instance was killed; `after_ms` is the function's
    /// timeout (what Lambda's message states, not how long the kill took).
    Timeout { after_ms: u64 },
    /// The instance died mid-invocation (exit or signal).
    Crash { detail: String },
    /// A WebAssembly trap ended the invocation and discarded its instance:
    /// `Runtime.OutOfMemory`, `Runtime.StackOverflow` or `Runtime.Trap`. Recorded as
    /// a crash, never as the handler's own error.
    Trap { error_type: String, message: String },
}

impl InvokeOutcome {
    pub fn kind(&self) -> InvocationOutcome {
        match self {
            Self::Success(_) => InvocationOutcome::Success,
            Self::FunctionError(_) => InvocationOutcome::FunctionError,
            Self::InitError(_) => InvocationOutcome::InitError,
            Self::Timeout { .. } => InvocationOutcome::Timeout,
            Self::Crash { .. } | Self::Trap { .. } => InvocationOutcome::Crash,
        }
    }

    /// The error type and message, for records and dead letters.
    pub fn error(&self) -> Option<(String, String)> {
        match self {
            Self::Success(_) => None,
            Self::FunctionError(e) | Self::InitError(e) => {
                Some((e.error_type.clone(), e.message.clone()))
            }
            Self::Timeout { after_ms } => Some((
                "Sandbox.Timedout".into(),
                format!(
                    "Task timed out after {:.2} seconds",
                    *after_ms as f64 / 1000.0
                ),
            )),
            Self::Crash { detail } => Some(("Runtime.ExitError".into(), detail.clone())),
            Self::Trap {
                error_type,
                message,
            } => Some((error_type.clone(), message.clone())),
        }
    }
}

/// The result of one invocation: its outcome, the output captured meanwhile, and how
/// long it ran (from the request being handed over to its answer or its kill — not
/// the start of a cold instance, nor collecting its output).
#[derive(Debug, Clone)]
pub struct InvokeResult {
    pub outcome: InvokeOutcome,
    pub logs: String,
    pub duration: std::time::Duration,
}

/// Starts instances of functions.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Checks (and may compile) a version's code at deploy time, before it is
    /// recorded: code this runtime cannot run is refused with the reason, and the
    /// previous version keeps serving.
    async fn prepare(&self, spec: &FunctionSpec, code_dir: &Path) -> Result<(), RuntimeError> {
        let _ = (spec, code_dir);
        Ok(())
    }

    async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError>;

    /// Removes what the runtime keeps for code that was not used for `unused_for`
    /// (compiled code on disk, preparations of deleted code); how many it removed.
    async fn collect(&self, unused_for: std::time::Duration) -> usize {
        let _ = unused_for;
        0
    }
}

/// A warm copy of a function. Serves one invocation at a time.
#[async_trait]
pub trait Instance: Send {
    async fn invoke(&mut self, request: InvokeRequest) -> InvokeResult;
    /// False once the instance cannot serve another invocation (it died, timed out,
    /// or failed to initialise): the pool drops it.
    fn is_usable(&self) -> bool;
    /// Stops the instance and frees what it holds.
    async fn shutdown(self: Box<Self>);
}
