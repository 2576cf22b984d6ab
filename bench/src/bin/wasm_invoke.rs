//! The wasm runtime in process, without HTTP: how long one invocation of a
//! just-started (cold) and of a warm instance takes, for the hello handler and the
//! wasi:http component (the route path's runtime share).
//!
//! `cargo run --release -p lambent-bench --bin wasm_invoke`

use anyhow::{Context, Result};
use bytes::Bytes;
use lambent_core::{FunctionSpec, RuntimeKind};
use lambent_runtime::{InstanceConfig, InvokeOutcome, InvokeRequest, Runtime};
use std::time::Instant;

fn spec(name: &str) -> Result<FunctionSpec> {
    Ok(FunctionSpec {
        name: name.into(),
        runtime: RuntimeKind::parse("wasm")?,
        handler: String::new(),
        memory_mb: 128,
        timeout_s: 10,
        env: Default::default(),
        concurrency: 100,
        retry: Default::default(),
        description: String::new(),
        grants: Vec::new(),
        role: None,
        on_failure: None,
        keep_alive: None,
    })
}

fn guest_dir(name: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(
        lambent_bench::load::build_guests()?.join(format!("{name}.wasm")),
        dir.path().join(format!("{name}.wasm")),
    )?;
    Ok(dir)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let data = tempfile::tempdir()?;
        let runtime = lambent_runtime_wasm::WasmRuntime::new(data.path())?;
        let http_event = serde_json::json!({
            "version": "2.0", "rawPath": "/hello", "rawQueryString": "",
            "headers": {"host": "localhost"},
            "requestContext": {"http": {"method": "GET"}},
        })
        .to_string();
        for (guest, payload) in [("hello", "{\"name\": \"bench\"}".to_owned()), ("http_hello", http_event)] {
            let code = guest_dir(guest)?;
            let spec = spec(guest)?;
            let started = Instant::now();
            runtime.prepare(&spec, code.path()).await?;
            let prepare = started.elapsed();
            let mut instance = runtime
                .start(InstanceConfig { spec, version: 1, code_dir: code.path().to_path_buf(), host: None })
                .await?;
            let request = |id: String| InvokeRequest {
                request_id: id,
                payload: Bytes::from(payload.clone()),
                deadline_ms: lambent_core::now_ms() + 10_000,
                trace_id: None,
                event_id: None,
                attempt: 1,
                client_context: None,
            };
            let mut times = Vec::new();
            for i in 0..5000 {
                let started = Instant::now();
                let result = instance.invoke(request(format!("r{i}"))).await;
                times.push(started.elapsed());
                anyhow::ensure!(matches!(result.outcome, InvokeOutcome::Success(_)), "{:?}", result.outcome);
            }
            let first = times[0];
            times.sort();
            println!(
                "{guest}: prepare (compile) {prepare:.1?}; first invoke {first:.1?}; p50 {:.1?}, p99 {:.1?}",
                lambent_bench::percentile(&times, 0.5),
                lambent_bench::percentile(&times, 0.99)
            );
            // The same invocation after the node sat idle (as a first request does).
            let mut paused = Vec::new();
            for i in 0..200 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let started = Instant::now();
                let result = instance.invoke(request(format!("p{i}"))).await;
                paused.push((started.elapsed(), result.duration));
                anyhow::ensure!(matches!(result.outcome, InvokeOutcome::Success(_)), "{:?}", result.outcome);
            }
            let mut outer: Vec<_> = paused.iter().map(|p| p.0).collect();
            let mut inner: Vec<_> = paused.iter().map(|p| p.1).collect();
            outer.sort();
            inner.sort();
            println!(
                "{guest}: after a 20 ms pause: p50 {:.1?} (runtime's own {:.1?}), p99 {:.1?}",
                lambent_bench::percentile(&outer, 0.5),
                lambent_bench::percentile(&inner, 0.5),
                lambent_bench::percentile(&outer, 0.99)
            );
        }
        Ok::<_, anyhow::Error>(())
    })
    .context("wasm_invoke")
}
