//! The node's one wasmtime `Engine`: the pooling allocator (a cold start is an
//! instantiation into slots already mapped), epoch interruption for deadlines, and a
//! linker holding every interface Lambent provides. Memory stays resident in the
//! pool (reset in place, dirty pages only) and what is decommitted goes in batches:
//! this VM pays dearly for the TLB shootdowns of each munmap/madvise. The
//! `LAMBENT_WASM_*` variables override the pool's settings, for measurements.

use crate::state::State;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines, and how often a
/// busy guest yields its thread to other work.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instances in flight at once across the node (each holds a pool slot); more wait
/// for a slot (`LAMBENT_WASM_INSTANCES` overrides, for tests).
pub fn pool_instances() -> u32 {
    u32::try_from(env_or("LAMBENT_WASM_INSTANCES", 1000))
        .unwrap_or(1000)
        .max(1)
}

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

fn pooling(instances: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
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
pub fn engine(instances: u32) -> wasmtime::Result<Engine> {
    let mut pooled = config();
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(instances)));
    match Engine::new(&pooled) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(error = %e, "wasm: the pooling allocator is unavailable; allocating on demand");
            Engine::new(&config())
        }
    }
}

/// Advances the engine's epoch every tick while some guest may be running, and
/// sleeps otherwise: a node with no wasm work in flight is not woken a hundred times
/// a second (each wake-up of an idle vCPU costs on a VM). Stops when dropped.
pub struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<std::thread::Thread>,
}

#[derive(Default)]
struct TickerShared {
    /// Guards alive: stores that may be running guest code.
    active: AtomicUsize,
    stopped: AtomicBool,
    /// Epochs advanced, for tests.
    ticks: AtomicU64,
}

/// Keeps the epoch advancing while it lives: held around every store's use.
pub struct EpochGuard {
    shared: Arc<TickerShared>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let shared = Arc::new(TickerShared::default());
        let weak = engine.weak();
        let state = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lambent-wasm-epoch".into())
            .spawn(move || {
                while !state.stopped.load(Ordering::Acquire) {
                    if state.active.load(Ordering::Acquire) == 0 {
                        // A guard taken after the check unparks: park returns at once.
                        std::thread::park();
                        // Tick once whatever `active` says now. Parking again at once
                        // when the invocation that woke it had already ended made a
                        // stream of short invocations wake it from park over and over
                        // (~180 context switches a second on the route at one
                        // connection, against ~100 ticking), each wake paid on a
                        // request's path. While they keep coming, each tick finds the
                        // unpark of a guard taken during it and ticks again.
                        if state.stopped.load(Ordering::Acquire) {
                            return;
                        }
                    }
                    // A tick after the guard came, not at once: a guest gets its
                    // whole first tick before it is asked to yield.
                    std::thread::sleep(EPOCH_TICK);
                    let Some(engine) = weak.upgrade() else { return };
                    engine.increment_epoch();
                    drop(engine);
                    state.ticks.fetch_add(1, Ordering::Relaxed);
                }
            });
        let thread = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::error!(error = %e, "wasm: cannot start the epoch thread; deadlines fall back to the node's timer");
                None
            }
        };
        Self { shared, thread }
    }

    /// The epoch advances until the guard is dropped.
    pub fn busy(&self) -> EpochGuard {
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = &self.thread
        {
            thread.unpark();
        }
        EpochGuard {
            shared: self.shared.clone(),
        }
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }
}

impl Drop for EpochGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ticks_reach(ticker: &EpochTicker, n: u64) -> bool {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if ticker.ticks() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The epoch advances only while a guard is held, and starts again with the next.
    #[test]
    fn the_epoch_advances_only_while_a_guest_may_run() {
        let engine = Engine::new(&config()).unwrap();
        let ticker = EpochTicker::start(&engine);
        std::thread::sleep(EPOCH_TICK * 5);
        assert_eq!(ticker.ticks(), 0, "ticking with nothing running");
        let guard = ticker.busy();
        assert!(ticks_reach(&ticker, 3), "no ticks while busy");
        drop(guard);
        // At most the tick under way when the guard went.
        std::thread::sleep(EPOCH_TICK * 3);
        let idle = ticker.ticks();
        std::thread::sleep(EPOCH_TICK * 5);
        assert_eq!(ticker.ticks(), idle, "still ticking once idle");
        let (a, b) = (ticker.busy(), ticker.busy());
        drop(a);
        assert!(
            ticks_reach(&ticker, idle + 3),
            "a second guard alone keeps it going"
        );
        drop(b);
    }
}
