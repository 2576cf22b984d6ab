//! `GET /metrics`: the node's pools, memory and deliveries in the Prometheus text
//! format (OpenMetrics 1.0), built at each scrape from what the engine already counts;
//! nothing is kept here between scrapes.

use lambent_engine::pool::{MemoryStatus, PoolStatus};
use lambent_store::WriteStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// The exposition of one scrape.
pub fn render(
    pools: &[PoolStatus],
    memory: &MemoryStatus,
    deliveries: &[(String, u64)],
    writes: Option<WriteStats>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("lambent");
    let instances = Family::<Labels, Gauge>::default();
    let invocations = Family::<Labels, Counter>::default();
    let cold_starts = Family::<Labels, Counter>::default();
    let prewarms = Family::<Labels, Counter>::default();
    let evictions = Family::<Labels, Counter>::default();
    let idle_memory = Family::<Labels, Counter<f64, AtomicU64>>::default();
    for p in pools {
        let f = p.function.as_str();
        let idle = i64::try_from(p.idle).unwrap_or(i64::MAX);
        instances
            .get_or_create(&labels(&[("function", f), ("state", "idle")]))
            .set(idle);
        instances
            .get_or_create(&labels(&[("function", f), ("state", "busy")]))
            .set(i64::from(p.busy));
        invocations
            .get_or_create(&labels(&[("function", f)]))
            .inc_by(p.invocations);
        cold_starts
            .get_or_create(&labels(&[("function", f)]))
            .inc_by(p.cold_starts);
        prewarms
            .get_or_create(&labels(&[("function", f)]))
            .inc_by(p.prewarms);
        for (reason, n) in &p.evictions {
            evictions
                .get_or_create(&labels(&[("function", f), ("reason", reason)]))
                .inc_by(*n);
        }
        idle_memory
            .get_or_create(&labels(&[("function", f)]))
            .inc_by(p.idle_memory_gb_s);
    }
    registry.register(
        "pool_instances",
        "Instances of each function, idle (warm) or busy",
        instances,
    );
    registry.register(
        "pool_invocations",
        "Invocations that went through the pool",
        invocations,
    );
    registry.register(
        "pool_cold_starts",
        "Invocations that had to start an instance",
        cold_starts,
    );
    registry.register(
        "pool_prewarms",
        "Instances started ahead of need by the keep-alive policy",
        prewarms,
    );
    registry.register(
        "pool_evictions",
        "Idle instances dropped, by reason (expired, replaced, unusable, memory_budget)",
        evictions,
    );
    registry.register(
        "pool_idle_memory_gb_seconds",
        "Memory held by idle warm instances",
        idle_memory,
    );
    let in_use = Gauge::<i64>::default();
    in_use.set(i64::try_from(memory.in_use_mb).unwrap_or(i64::MAX));
    registry.register(
        "memory_in_use_mb",
        "Memory of the node's instances, busy and idle, by their functions' --memory",
        in_use,
    );
    if let Some(budget) = memory.budget_mb {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(budget).unwrap_or(i64::MAX));
        registry.register("memory_budget_mb", "The node's --memory-budget", g);
    }
    let by_state = Family::<Labels, Gauge>::default();
    for (state, n) in deliveries {
        by_state
            .get_or_create(&labels(&[("state", state)]))
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    registry.register("deliveries", "Deliveries by state", by_state);
    if let Some(w) = writes {
        for (name, help, n) in [
            (
                "store_transactions",
                "Transactions the store's writer committed",
                w.transactions,
            ),
            (
                "store_writes",
                "Writes those transactions carried (group commit)",
                w.writes,
            ),
            (
                "store_synced_commits",
                "Commits that waited for the disk",
                w.synced_commits,
            ),
            (
                "store_background_syncs",
                "Syncs of the log for commits that did not wait for the disk",
                w.background_syncs,
            ),
        ] {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            registry.register(name, help, c);
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
