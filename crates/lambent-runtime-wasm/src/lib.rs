//! Lambent's WebAssembly runtime: functions as components in wasmtime.
//!
//! Two worlds: `lambent:function` (an event handler, `wit/lambent-function.wit`) and
//! `wasi:http/proxy` (any component `wasmtime serve` or Spin runs). Each invocation
//! gets a fresh instance from the pool — instantiating a pre-linked component into
//! slots already mapped costs tens of microseconds, less than resetting a used
//! instance, and no state leaks from one invocation into the next. A trap therefore
//! discards only its own instance.
//!
//! Limits: the deadline by epoch interruption (a spinning guest yields every tick
//! and is stopped at its timeout), memory by the function's `--memory` (growth past
//! it traps as out of memory), the stack by wasmtime's stack limit. Capabilities,
//! deny by default: outbound HTTP per `net` grant, checked on the resolved address;
//! key-value and publishing per grant; an import without its grant is refused at
//! deploy.

mod component;
mod handler;
mod log_pipe;
mod node_engine;
pub mod outbound;
mod proxy;
mod state;

use async_trait::async_trait;
use component::{Prepared, World};
use lambent_core::FunctionSpec;
use lambent_core::grant::NetGrant;
use lambent_runtime::host::Host;
use lambent_runtime::{
    ErrorReport, Instance, InstanceConfig, InvokeOutcome, InvokeRequest, InvokeResult, Runtime,
    RuntimeError,
};
use state::State;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Why a component cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("function `{function}`: {detail}")]
    Code { function: String, detail: String },
    #[error(
        "function `{function}`: its component imports `{import}`, which needs a grant it does not hold (deploy it with --grant {grant})"
    )]
    Ungranted {
        function: String,
        import: String,
        grant: &'static str,
    },
    #[error("wasm engine: {0}")]
    Engine(String),
}

impl From<WasmError> for RuntimeError {
    fn from(e: WasmError) -> Self {
        let function = match &e {
            WasmError::Code { function, .. } | WasmError::Ungranted { function, .. } => {
                function.clone()
            }
            WasmError::Engine(_) => String::new(),
        };
        let detail = match e {
            WasmError::Code { detail, .. } => detail,
            other => other.to_string(),
        };
        RuntimeError::InvalidCode { function, detail }
    }
}

struct Shared {
    engine: Engine,
    /// Runs while guests may: held by every instantiation and invocation.
    ticker: Arc<node_engine::EpochTicker>,
    linker: Linker<State>,
    /// The pool's instance slots: an instantiation waits for one rather than fail
    /// (as a trap) when every slot is in use.
    slots: Arc<Semaphore>,
    cache_dir: PathBuf,
    /// Prepared components by file (code trees are content-addressed and read-only).
    prepared: Mutex<HashMap<PathBuf, Arc<Prepared>>>,
}

/// The wasm runtime of a node.
#[derive(Clone)]
pub struct WasmRuntime {
    shared: Arc<Shared>,
}

impl WasmRuntime {
    /// A runtime caching compiled code under `data_dir/wasm-cache`.
    pub fn new(data_dir: &Path) -> Result<Self, WasmError> {
        let instances = node_engine::pool_instances();
        let engine =
            node_engine::engine(instances).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let ticker = Arc::new(node_engine::EpochTicker::start(&engine));
        let linker =
            node_engine::linker(&engine).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                ticker,
                linker,
                slots: Arc::new(Semaphore::new(instances as usize)),
                cache_dir: data_dir.join("wasm-cache"),
                prepared: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The prepared component of a version, compiling it if this node has not yet.
    async fn prepared(
        &self,
        spec: &FunctionSpec,
        code_dir: &Path,
    ) -> Result<Arc<Prepared>, WasmError> {
        let wasm = component::find(spec, code_dir)?;
        let known = self
            .shared
            .prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&wasm)
            .cloned();
        let prepared = match known {
            Some(p) => p,
            None => {
                let shared = self.shared.clone();
                let function = spec.name.clone();
                let path = wasm.clone();
                let prepared = tokio::task::spawn_blocking(move || {
                    let compiled =
                        component::compile(&shared.engine, &shared.cache_dir, &function, &path)?;
                    component::prepare(&shared.engine, &shared.linker, &function, &compiled)
                })
                .await
                .map_err(|e| WasmError::Engine(e.to_string()))??;
                let prepared = Arc::new(prepared);
                warm_up(&self.shared, spec, &prepared).await;
                self.shared
                    .prepared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(wasm, prepared.clone());
                prepared
            }
        };
        component::check_grants(spec, &prepared.imports)?;
        Ok(prepared)
    }
}

#[async_trait]
impl Runtime for WasmRuntime {
    async fn prepare(&self, spec: &FunctionSpec, code_dir: &Path) -> Result<(), RuntimeError> {
        self.prepared(spec, code_dir).await?;
        Ok(())
    }

    /// Forgets prepared components whose code tree is gone, then removes compiled
    /// code nothing prepared uses that was not loaded for `unused_for`.
    async fn collect(&self, unused_for: Duration) -> usize {
        let in_use: std::collections::HashSet<String> = {
            let mut prepared = self
                .shared
                .prepared
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            prepared.retain(|wasm, _| wasm.exists());
            prepared.values().map(|p| p.cache_key.clone()).collect()
        };
        let dir = self.shared.cache_dir.clone();
        tokio::task::spawn_blocking(move || component::collect_cache(&dir, &in_use, unused_for))
            .await
            .unwrap_or(0)
    }

    async fn start(&self, config: InstanceConfig) -> Result<Box<dyn Instance>, RuntimeError> {
        let prepared = self.prepared(&config.spec, &config.code_dir).await?;
        Ok(Box::new(WasmInstance {
            engine: self.shared.engine.clone(),
            ticker: self.shared.ticker.clone(),
            slots: self.shared.slots.clone(),
            prepared,
            grants: config.spec.net_grants().into(),
            spec: Arc::new(config.spec),
            version: config.version,
            host: config.host,
        }))
    }
}

/// A warm function: its pre-instantiated component. Each invocation instantiates
/// it afresh, so the instance is always usable.
struct WasmInstance {
    engine: Engine,
    ticker: Arc<node_engine::EpochTicker>,
    slots: Arc<Semaphore>,
    prepared: Arc<Prepared>,
    spec: Arc<FunctionSpec>,
    grants: Arc<[NetGrant]>,
    version: u64,
    host: Option<Host>,
}

/// Instantiates a freshly prepared component once, without calling it: the first
/// instantiation of a component in a process pays for setting up its slot and
/// image, which belongs to the deploy, not to the first request.
async fn warm_up(shared: &Shared, spec: &FunctionSpec, prepared: &Prepared) {
    // Only in a free slot: with every slot in use a deploy does not wait for one
    // (the first invocation pays for the set-up instead).
    let Ok(_slot) = shared.slots.try_acquire() else {
        return;
    };
    let _ticking = shared.ticker.busy();
    let deadline = Instant::now() + Duration::from_secs(1);
    let state = State::new(
        Arc::new(spec.clone()),
        spec.net_grants().into(),
        None,
        deadline,
    );
    let mut store = Store::new(&shared.engine, state);
    store.limiter(|state| &mut state.memory);
    // A start function that spins traps after ~1 s (no callback: the deadline traps).
    store.set_epoch_deadline(100);
    let warmed = match &prepared.world {
        World::Handler(pre) => pre.instantiate_async(&mut store).await.map(drop),
        World::Proxy(pre) => pre.instantiate_async(&mut store).await.map(drop),
    };
    if let Err(e) = warmed {
        tracing::debug!(function = %spec.name, error = %e, "wasm: warm-up instantiation failed");
    }
}

impl WasmInstance {
    async fn run(&self, store: &mut Store<State>, request: &InvokeRequest) -> InvokeOutcome {
        match &self.prepared.world {
            World::Handler(pre) => {
                let instance = match pre.instantiate_async(&mut *store).await {
                    Ok(instance) => instance,
                    Err(e) => return classify(store, &e),
                };
                let context = handler::Context {
                    request_id: request.request_id.clone(),
                    function_name: self.spec.name.clone(),
                    function_version: self.version.to_string(),
                    memory_limit_mb: self.spec.memory_mb,
                    deadline_ms: request.deadline_ms,
                    event_id: request.event_id.clone(),
                    attempt: request.attempt,
                    trace_id: request.trace_id.clone(),
                };
                match instance
                    .lambent_function_handler()
                    .call_handle(&mut *store, &request.payload, &context)
                    .await
                {
                    Ok(Ok(result)) => InvokeOutcome::Success(result.into()),
                    Ok(Err(error)) => InvokeOutcome::FunctionError(ErrorReport::new(
                        error.error_type,
                        error.message,
                    )),
                    Err(e) => classify(store, &e),
                }
            }
            World::Proxy(pre) => match proxy::run(pre, store, &request.payload).await {
                proxy::ProxyEnd::Answer(answer) => InvokeOutcome::Success(answer),
                proxy::ProxyEnd::Refused(why) => {
                    InvokeOutcome::FunctionError(ErrorReport::new("Http.ErrorCode", why))
                }
                proxy::ProxyEnd::Failed(e) => classify(store, &e),
            },
        }
    }
}

/// What ended an invocation that failed inside wasmtime: the deadline, the memory
/// limit, the stack, an exit, or another trap — each told apart from the handler's
/// own error result.
fn classify(store: &Store<State>, error: &wasmtime::Error) -> InvokeOutcome {
    let state = store.data();
    if state.timed_out {
        return InvokeOutcome::Timeout {
            after_ms: u64::from(state.spec.timeout_s) * 1000,
        };
    }
    if let Some(asked) = state.memory.exceeded {
        return InvokeOutcome::Trap {
            error_type: "Runtime.OutOfMemory".into(),
            message: format!(
                "the function asked for {} MiB of memory; its limit is {} MiB",
                asked.div_ceil(1024 * 1024),
                state.memory.max_mb()
            ),
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeOutcome::Crash {
            detail: format!("the component exited with status {}", exit.0),
        };
    }
    // The message names the trap; the log gets the whole chain, backtrace included.
    state
        .log
        .append(format!("lambent: the invocation trapped: {error:?}\n").as_bytes());
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => InvokeOutcome::Trap {
            error_type: "Runtime.StackOverflow".into(),
            message: "the function overflowed its stack".into(),
        },
        Some(trap) => InvokeOutcome::Trap {
            error_type: "Runtime.Trap".into(),
            message: format!("wasm trap: {trap}"),
        },
        None => InvokeOutcome::Trap {
            error_type: "Runtime.Trap".into(),
            message: format!("{error:#}"),
        },
    }
}

#[async_trait]
impl Instance for WasmInstance {
    async fn invoke(&mut self, request: InvokeRequest) -> InvokeResult {
        let started = Instant::now();
        // Deadlines and yields need the epoch advancing while the guest runs.
        let _ticking = self.ticker.busy();
        let remaining = Duration::from_millis(
            request
                .deadline_ms
                .saturating_sub(lambent_core::now_ms())
                .max(0) as u64,
        );
        let deadline = started + remaining;
        let mut store = Store::new(
            &self.engine,
            State::new(
                self.spec.clone(),
                self.grants.clone(),
                self.host.clone(),
                deadline,
            ),
        );
        let log = store.data().log.clone();
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            if Instant::now() >= ctx.data().deadline {
                ctx.data_mut().timed_out = true;
                return Ok(UpdateDeadline::Interrupt);
            }
            // Let other tasks on this thread run between ticks of a busy guest.
            Ok(UpdateDeadline::Yield(1))
        });
        // The node's timer is the backstop for a guest blocked in a host call
        // (a sleep, a slow outbound request), where no epoch check runs.
        let backstop = tokio::time::Instant::from_std(deadline + node_engine::EPOCH_TICK * 2);
        // Waiting for a pool slot counts against the deadline, as the guest's run does.
        let slots = self.slots.clone();
        let run = async {
            let _slot = slots.acquire().await.ok();
            self.run(&mut store, &request).await
        };
        let outcome = match tokio::time::timeout_at(backstop, run).await {
            Ok(outcome) => outcome,
            Err(_) => InvokeOutcome::Timeout {
                after_ms: u64::from(self.spec.timeout_s) * 1000,
            },
        };
        InvokeResult {
            outcome,
            logs: log.contents(),
            duration: started.elapsed(),
        }
    }

    fn is_usable(&self) -> bool {
        true
    }

    async fn shutdown(self: Box<Self>) {}
}
