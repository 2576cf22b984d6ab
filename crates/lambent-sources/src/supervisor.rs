//! Runs the configured sources: starts each, and on every change stops the ones
//! removed or changed and starts the new ones.

use crate::{Sink, Source, SourceContext};
use lambent_core::source::{SourceKind, SourceSpec};
use lambent_engine::Engine;
use std::collections::HashMap;
use tokio::sync::watch;

/// The source a spec describes.
pub fn build(spec: SourceSpec) -> Box<dyn Source> {
    match spec.kind {
        SourceKind::Nats | SourceKind::Jetstream => Box::new(crate::nats::Nats { spec }),
        SourceKind::Mqtt => Box::new(crate::mqtt::Mqtt { spec }),
        SourceKind::Postgres => Box::new(crate::postgres::Postgres { spec }),
    }
}

struct Running {
    spec: SourceSpec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Keeps the running sources equal to the configured ones until `shutdown`.
pub async fn run(engine: Engine, mut shutdown: watch::Receiver<bool>) {
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let changed = engine.sources_changed();
        tokio::pin!(changed);
        // Listen before reading, so a change made meanwhile is not missed.
        changed.as_mut().enable();
        match engine.sources().await {
            Ok(specs) => reconcile(&engine, &mut running, specs),
            Err(e) => tracing::warn!(error = %e, "reading the configured sources"),
        }
        tokio::select! {
            _ = &mut changed => {}
            // Also look again now and then (a source that failed is restarted).
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = shutdown.changed() => break,
        }
    }
    for (_, r) in running.drain() {
        let _ = r.stop.send(true);
        let _ = r.task.await;
    }
}

fn reconcile(engine: &Engine, running: &mut HashMap<String, Running>, specs: Vec<SourceSpec>) {
    let wanted: HashMap<String, SourceSpec> =
        specs.into_iter().map(|s| (s.name.clone(), s)).collect();
    running.retain(|name, r| {
        let keep = wanted.get(name) == Some(&r.spec) && !r.task.is_finished();
        if !keep {
            let _ = r.stop.send(true);
        }
        if !wanted.contains_key(name) {
            // Removed, not changed: release its upstream state once it has stopped.
            let (spec, task) = (r.spec.clone(), std::mem::replace(&mut r.task, tokio::spawn(async {})));
            tokio::spawn(async move {
                let _ = task.await;
                match build(spec.clone()).retire().await {
                    Ok(()) => tracing::info!(source = %spec.name, "source removed; its upstream state released"),
                    Err(e) => tracing::warn!(source = %spec.name, error = %e, "source removed, but its upstream state was not released"),
                }
            });
        }
        keep
    });
    for (name, spec) in wanted {
        if running.contains_key(&name) {
            continue;
        }
        let (stop, stopped) = watch::channel(false);
        let source = build(spec.clone());
        let cx = SourceContext {
            shutdown: stopped,
            sink: Sink::new(engine.clone()),
        };
        let task_engine = engine.clone();
        let task = tokio::spawn(async move {
            match source.run(cx).await {
                Ok(()) => tracing::info!(source = %name, "source stopped"),
                Err(e) => {
                    tracing::error!(source = %name, error = %e, "source failed; restarting it shortly");
                    task_engine.set_source_status(&name, format!("failed: {e}"));
                }
            }
        });
        running.insert(spec.name.clone(), Running { spec, stop, task });
    }
}
