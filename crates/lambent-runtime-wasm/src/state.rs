//! What one store holds: one instance, one invocation. WASI with no files, no
//! sockets and the function's environment; wasi:http with the function's outbound
//! policy; the memory limit; the captured log; the node's services.

use crate::log_pipe::LogPipe;
use crate::outbound::Outbound;
use lambent_core::FunctionSpec;
use lambent_core::grant::NetGrant;
use lambent_runtime::host::Host;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct State {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub outbound: Outbound,
    pub memory: MemoryLimit,
    pub log: LogPipe,
    pub spec: Arc<FunctionSpec>,
    pub host: Option<Host>,
    /// When the invocation's time is up (the node's clock, checked at every epoch).
    pub deadline: Instant,
    pub timed_out: bool,
}

impl State {
    /// `grants` are the function's `net` grants, parsed once per instance.
    pub fn new(
        spec: Arc<FunctionSpec>,
        grants: Arc<[NetGrant]>,
        host: Option<Host>,
        deadline: Instant,
    ) -> Self {
        let log = LogPipe::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(log.clone()).stderr(log.clone());
        let env: Vec<(&String, &String)> = spec.env.iter().collect();
        wasi.envs(&env);
        // Sockets stay closed (wasi:sockets denies every address by default, and
        // names are not looked up): outbound access is wasi:http, checked per request.
        wasi.allow_ip_name_lookup(false);
        let outbound = Outbound {
            grants,
            log: log.clone(),
        };
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound,
            memory: MemoryLimit::new(spec.memory_mb),
            log,
            spec,
            host,
            deadline,
            timed_out: false,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The function's `--memory` as a cap on each linear memory: growing past it traps,
/// and the trap is reported as out of memory.
pub struct MemoryLimit {
    max_bytes: usize,
    /// The size a refused growth asked for.
    pub exceeded: Option<usize>,
}

impl MemoryLimit {
    fn new(memory_mb: u32) -> Self {
        Self {
            max_bytes: memory_mb as usize * 1024 * 1024,
            exceeded: None,
        }
    }

    pub fn max_mb(&self) -> usize {
        self.max_bytes / (1024 * 1024)
    }
}

/// Tables may hold this many elements (a table bomb traps like a memory bomb).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = Some(desired);
            wasmtime::bail!(
                "memory of {desired} bytes exceeds the function's {} MiB",
                self.max_mb()
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
