//! The node's one wasmtime `Engine`: the pooling allocator (a cold start is an
//! instantiation into slots already mapped), epoch interruption for deadlines, and a
//! linker holding every interface Lambent provides. Memory stays resident in the
//! pool (reset in place, dirty pages only) and what is decommitted goes in batches:
//! this VM pays dearly for the TLB shootdowns of each munmap/madvise. The
//! `LAMBENT_WASM_*` variables override the pool's settings, for measurements.

use crate::state::State;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines, and how often a
/// busy guest yields its thread to other work.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instances in flight at once across the node (each holds a pool slot).
const POOL_INSTANCES: u32 = 1000;

fn config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // A guest's stack: deep recursion traps here, well inside the fiber's stack.
    config.max_wasm_stack(1024 * 1024);
    config.async_stack_size(2 * 1024 * 1024);
    // No copy-on-write memory images: each first write to an image page was a
    // write-protect fault and a TLB shootdown to the other core; copying the data
    // segments at instantiation costs less here.
    config.memory_init_cow(env_or("LAMBENT_WASM_COW", 0) == 1);
    config
}

/// A tuning knob from the environment (for measurements), else its default.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES)
        // A function's --memory caps each memory below this (StoreLimits).
        .max_memory_size(4 << 30)
        // Memory stays resident: a reused slot's first 4 MiB are reset in place, and
        // with PAGEMAP_SCAN (Linux 6.7+) only the pages the last instance dirtied are
        // (without it, the whole prefix is memset, so a smaller one would be better).
        // Measured here: ~18 µs an invocation, against ~24 µs decommitting
        // everything (each touched page faulted in again) and ~45 µs memsetting 1 MiB.
        // Slots are decommitted 64 at a time, so the TLB shootdowns come in batches.
        .linear_memory_keep_resident(env_or("LAMBENT_WASM_KEEP_RESIDENT", 4 << 20))
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(env_or("LAMBENT_WASM_STACK_RESIDENT", 64 << 10))
        .decommit_batch_size(env_or("LAMBENT_WASM_DECOMMIT_BATCH", 64))
        .pagemap_scan(match env_or("LAMBENT_WASM_PAGEMAP", 1) {
            0 => wasmtime::Enabled::No,
            _ => wasmtime::Enabled::Auto,
        });
    pool
}

/// The engine, with the pooling allocator where the host can map the pool (falling
/// back to allocation on demand, which still works, more slowly).
pub fn engine() -> wasmtime::Result<Engine> {
    let mut pooled = config();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(error = %e, "wasm: the pooling allocator is unavailable; allocating on demand");
            Engine::new(&config())
        }
    }
}

/// Advances the engine's epoch every tick for as long as the engine lives.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("lambent-wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "wasm: cannot start the epoch thread; deadlines fall back to the node's timer");
    }
}

/// Everything a component may import: WASI 0.2, wasi:http, and lambent:function.
/// Which of them a function may use is decided at deploy by its grants.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::handler::Function::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
    Ok(linker)
}
