//! Warm Python invocation overhead and the end-to-end event rate.
//!
//! Same-run baseline: the bare runtime — a warm `ProcessInstance` driven directly
//! (the Python bootstrap's Runtime API round trip, nothing of the engine). Then the
//! engine's synchronous invoke of the same no-op handler (pool checkout, invoke,
//! check-in, durable invocation record): the difference is Lambent's own overhead
//! on top of the runtime protocol. Then events → rule → Python no-op → delivered,
//! through the real store and dispatcher.
//!
//! Run: `cargo run --release -p lambent-bench --bin invoke [http|cold|node|warm]...`
//! (the sections named, or all of them).

use anyhow::Result;
use bytes::Bytes;
use lambent_core::{CloudEvent, FunctionSpec, RetryPolicy, RuntimeKind, now_ms};
use lambent_engine::{DeployRequest, Engine, InvokeOptions, RuleRequest};
use lambent_runtime::{InstanceConfig, InvokeRequest, Runtime};
use lambent_runtime_process::ProcessRuntime;
use lambent_runtime_process::sandbox::Isolation;
use std::io::Write;
use std::time::{Duration, Instant};

const WARM_CALLS: usize = 2_000;
const E2E_EVENTS: usize = 5_000;
const NOOP: &str = "def handler(event, context):\n    return None\n";

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        lambent_bench::percentile(&samples, 0.50),
        lambent_bench::percentile(&samples, 0.99),
    )
}

fn zip_noop() -> Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("app.py", zip::write::SimpleFileOptions::default())?;
    w.write_all(NOOP.as_bytes())?;
    Ok(w.finish()?.into_inner())
}

/// The no-op function's instance configuration, its code written under `data`.
fn noop_config(data: &std::path::Path) -> Result<InstanceConfig> {
    noop_config_on(data, "python3.11", "app.py", NOOP)
}

/// The same, on `runtime` with `source` as `file` (handler `app.handler`).
fn noop_config_on(
    data: &std::path::Path,
    runtime: &str,
    file: &str,
    source: &str,
) -> Result<InstanceConfig> {
    let code = data.join("bare-code");
    std::fs::create_dir_all(&code)?;
    std::fs::write(code.join(file), source)?;
    Ok(InstanceConfig {
        spec: FunctionSpec {
            role: None,
            on_failure: None,
            keep_alive: None,
            name: "noop".into(),
            runtime: RuntimeKind::parse(runtime)?,
            handler: "app.handler".into(),
            memory_mb: 128,
            timeout_s: 10,
            env: Default::default(),
            concurrency: 1,
            retry: RetryPolicy::default(),
            description: String::new(),
            grants: Vec::new(),
        },
        version: 1,
        code_dir: code,
        host: None,
    })
}

async fn bare_instance(data: &std::path::Path) -> Result<Box<dyn lambent_runtime::Instance>> {
    let runtime = ProcessRuntime::new(&data.join("bare"), isolation())?;
    Ok(runtime.start(noop_config(data)?).await?)
}

async fn bare_call(inst: &mut Box<dyn lambent_runtime::Instance>, i: usize) -> Result<Duration> {
    let start = Instant::now();
    let r = inst
        .invoke(InvokeRequest {
            request_id: format!("r{i}"),
            payload: Bytes::from_static(b"{}"),
            deadline_ms: now_ms() + 10_000,
            trace_id: None,
            event_id: None,
            attempt: 1,
            client_context: None,
        })
        .await;
    anyhow::ensure!(
        r.outcome.kind().is_success(),
        "bare invoke failed: {:?}",
        r.outcome
    );
    Ok(start.elapsed())
}

async fn engine(data: &std::path::Path) -> Result<Engine> {
    lambent_bench::engine(data, isolation()).await
}

const COLD_STARTS: usize = 60;

/// Cold starts: a fresh instance's first invocation, against the same-run baseline of
/// the bare interpreter starting and exiting (`python -c pass`, resolved past pyenv).
async fn cold_starts(data: &std::path::Path) -> Result<()> {
    let python = python3_path()?;
    let b50 = interpreter_start(&python, &["-c", "pass"]).await?;
    let floor50 = interpreter_start(&python, &["-S", "-c", "pass"]).await?;
    let runtime = ProcessRuntime::new(&data.join("cold"), isolation())?;
    let unsandboxed = ProcessRuntime::new(&data.join("cold-none"), Isolation::None)?;
    runtime.resolve_interpreters().await;
    unsandboxed.resolve_interpreters().await;
    let config = noop_config(&data.join("cold"))?;
    let (cold, cold_none) = alternate_cold_starts(&runtime, &unsandboxed, &config, 200).await?;
    let (n50, _) = summary(cold_none);
    let (c50, c99) = summary(cold);
    println!("baseline  python3 -c pass (interpreter start) p50 {b50:>9.1?}");
    println!("floor     python3 -S -c pass (no site)        p50 {floor50:>9.1?}");
    println!(
        "lambent   Python cold start to first answer     p50 {c50:>9.1?}  p99 {c99:>9.1?}  ({:.2}x the bare interpreter, {:.2}x the floor)",
        c50.as_secs_f64() / b50.as_secs_f64(),
        c50.as_secs_f64() / floor50.as_secs_f64()
    );
    println!(
        "          the same without the sandbox           p50 {n50:>9.1?}  (sandboxed minus unsandboxed: {:.2} ms, {:.2}x; only a sandbox's spare pre-starts the interpreter)",
        (c50.as_secs_f64() - n50.as_secs_f64()) * 1000.0,
        c50.as_secs_f64() / n50.as_secs_f64()
    );
    Ok(())
}

/// `COLD_STARTS` cold starts of `config` to its first answer on `sandboxed` and on
/// `unsandboxed`, alternating so both see the same machine conditions.
async fn alternate_cold_starts(
    sandboxed: &ProcessRuntime,
    unsandboxed: &ProcessRuntime,
    config: &InstanceConfig,
    settle_ms: u64,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut cold, mut cold_none) = (Vec::new(), Vec::new());
    for i in 0..COLD_STARTS {
        for (rt, samples) in [(sandboxed, &mut cold), (unsandboxed, &mut cold_none)] {
            // A cold start with the node's spare sandboxes ready (it keeps two, and
            // refills behind each cold start; a burst past them builds its own,
            // ~20-60 ms more, mostly cgroup moves).
            while rt.spare_launchers() < 2 && std::ptr::eq(rt, sandboxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // And their runtimes started (a spare reports ready before that).
            tokio::time::sleep(Duration::from_millis(settle_ms)).await;
            let start = Instant::now();
            let mut inst = rt.start(config.clone()).await?;
            bare_call(&mut inst, i).await?;
            samples.push(start.elapsed());
            inst.shutdown().await;
        }
    }
    Ok((cold, cold_none))
}

const NODE_NOOP: &str = "exports.handler = async () => null;\n";

/// Node.js cold starts, sandboxed (spares pre-start Node.js once a Node.js function
/// has taken one) and not, against the same run's `node -e 0`.
async fn node_cold_starts(data: &std::path::Path) -> Result<()> {
    let mut floor = Vec::new();
    for _ in 0..COLD_STARTS {
        let start = Instant::now();
        let status = tokio::process::Command::new("node")
            .args(["-e", "0"])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "node -e 0 failed");
        floor.push(start.elapsed());
    }
    let (floor50, _) = summary(floor);
    let runtime = ProcessRuntime::new(&data.join("node-cold"), isolation())?;
    let unsandboxed = ProcessRuntime::new(&data.join("node-cold-none"), Isolation::None)?;
    runtime.resolve_interpreters().await;
    unsandboxed.resolve_interpreters().await;
    let config = noop_config_on(&data.join("node-cold"), "nodejs20.x", "app.js", NODE_NOOP)?;
    // The first takes a spare pre-starting Python: its replacement pre-starts Node.js.
    let mut first = runtime.start(config.clone()).await?;
    bare_call(&mut first, 0).await?;
    first.shutdown().await;
    // Node.js takes ~60 ms to start here: its spares need longer than Python's.
    let (cold, cold_none) = alternate_cold_starts(&runtime, &unsandboxed, &config, 300).await?;
    let (n50, _) = summary(cold_none);
    let (c50, c99) = summary(cold);
    println!("floor     node -e 0                            p50 {floor50:>9.1?}");
    println!(
        "lambent   Node.js cold start to first answer    p50 {c50:>9.1?}  p99 {c99:>9.1?}  ({:.2}x the floor)",
        c50.as_secs_f64() / floor50.as_secs_f64()
    );
    println!(
        "          the same without the sandbox           p50 {n50:>9.1?}  ({:.2}x the floor; no spare, nothing started ahead)",
        n50.as_secs_f64() / floor50.as_secs_f64()
    );
    Ok(())
}

/// Freshly deployed functions called once each, over HTTP, through a release node:
/// the cold start a user sees, against the same run's `python3 -S -c pass`.
async fn cold_over_http(data: &std::path::Path) -> Result<()> {
    let server = lambent_bench::start_server()?;
    let bin = lambent_bench::lambent_bin()?;
    let code = data.join("http-cold-code");
    std::fs::create_dir_all(&code)?;
    std::fs::write(code.join("app.py"), NOOP)?;
    let client = reqwest::Client::new();
    let python = python3_path()?;
    let (mut samples, mut floor) = (Vec::new(), Vec::new());
    for i in 0..COLD_STARTS {
        let name = format!("cold{i}");
        let code_arg = code.display().to_string();
        let url = server.url.clone();
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || {
            lambent_bench::cli(
                &bin,
                &url,
                &[
                    "deploy",
                    &name,
                    "--runtime",
                    "python3.11",
                    "--handler",
                    "app.handler",
                    "--code",
                    &code_arg,
                ],
            )
        })
        .await??;
        // As on a node between deploys: the spares taken are replaced.
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The floor, one sample beside each cold invoke, so both see the same machine:
        // which goes first after the pause alternates.
        for floor_now in [i % 2 == 0, i % 2 == 1] {
            let start = Instant::now();
            if floor_now {
                let status = tokio::process::Command::new(&python)
                    .args(["-S", "-c", "pass"])
                    .status()
                    .await?;
                anyhow::ensure!(status.success(), "python -S -c pass failed");
                floor.push(start.elapsed());
            } else {
                let answer = client
                    .post(format!("{}/v1/functions/cold{i}/invoke", server.url))
                    .body("{}")
                    .send()
                    .await?;
                let status = answer.status();
                let body = answer.bytes().await?;
                samples.push(start.elapsed());
                anyhow::ensure!(status.is_success(), "cold invoke: {status} {body:?}");
            }
        }
    }
    let (floor50, _) = summary(floor);
    let (c50, c99) = summary(samples);
    println!("floor     python3 -S -c pass (no site)        p50 {floor50:>9.1?}");
    println!(
        "lambent   cold invoke over HTTP, fresh deploy   p50 {c50:>9.1?}  p99 {c99:>9.1?}  ({:.2}x the floor; bar: 0.5x)",
        c50.as_secs_f64() / floor50.as_secs_f64()
    );
    Ok(())
}

/// The real interpreter behind `python3` (past a pyenv shim).
fn python3_path() -> Result<String> {
    Ok(String::from_utf8(
        std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()?
            .stdout,
    )?
    .trim()
    .to_owned())
}

/// p50 of starting the interpreter with `args` and waiting for it to exit.
async fn interpreter_start(python: &str, args: &[&str]) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..COLD_STARTS {
        let start = Instant::now();
        let status = tokio::process::Command::new(python)
            .args(args)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "python {args:?} failed");
        samples.push(start.elapsed());
    }
    Ok(summary(samples).0)
}

fn isolation() -> Isolation {
    lambent_bench::sandbox()
}

fn main() -> Result<()> {
    lambent_bench::main_with(run)
}

async fn run() -> Result<()> {
    println!("machine: {}", lambent_bench::machine());
    let dir = tempfile::tempdir()?;
    // Sections may be named (`invoke warm`, `invoke cold node`); none means all.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let runs = |section: &str| only.is_empty() || only.iter().any(|s| s == section);
    if runs("http") {
        cold_over_http(dir.path()).await?;
    }
    if runs("cold") {
        cold_starts(dir.path()).await?;
    }
    if runs("node") {
        node_cold_starts(dir.path()).await?;
    }
    if !runs("warm") {
        return Ok(());
    }
    let mut bare = bare_instance(dir.path()).await?;
    let engine = engine(&dir.path().join("node")).await?;
    engine
        .deploy(DeployRequest {
            name: "noop".into(),
            runtime: Some("python3.11".into()),
            handler: Some("app.handler".into()),
            concurrency: Some(2),
            code_zip: Some(zip_noop()?),
            ..DeployRequest::default()
        })
        .await?;
    // Alternate the two so both see the same machine conditions.
    let (mut bare_samples, mut engine_samples) = (Vec::new(), Vec::new());
    for i in 0..WARM_CALLS + 50 {
        let b = bare_call(&mut bare, i).await?;
        let start = Instant::now();
        let inv = engine
            .invoke("noop", Bytes::from_static(b"{}"), InvokeOptions::default())
            .await?;
        anyhow::ensure!(inv.record.outcome.is_success(), "invoke failed");
        if i >= 50 {
            bare_samples.push(b);
            engine_samples.push(start.elapsed());
        }
    }
    let (bare50, bare99) = summary(bare_samples);
    let (e50, e99) = summary(engine_samples);
    println!("baseline  bare runtime round trip (warm)   p50 {bare50:>9.1?}  p99 {bare99:>9.1?}");
    println!("lambent   engine sync invoke (warm)        p50 {e50:>9.1?}  p99 {e99:>9.1?}");
    println!(
        "          => Lambent's own overhead at p50: {:.1?} ({:.2}x the bare round trip)",
        e50.saturating_sub(bare50),
        e50.as_secs_f64() / bare50.as_secs_f64()
    );
    drop(bare);

    engine
        .put_rule(RuleRequest {
            name: "bench".into(),
            pattern: serde_json::json!({"type": ["bench.e2e"]}),
            targets: vec!["noop".into()],
        })
        .await?;
    let start = Instant::now();
    for chunk in (0..E2E_EVENTS).collect::<Vec<_>>().chunks(100) {
        let events = chunk
            .iter()
            .map(|i| CloudEvent::builder(format!("e2e-{i}"), "/bench", "bench.e2e").build())
            .collect::<Result<Vec<_>, _>>()?;
        engine.publish(events).await?;
    }
    loop {
        let counts = engine.stores().events.delivery_counts().await?;
        let delivered = counts
            .iter()
            .find(|(s, _)| s == "delivered")
            .map_or(0, |(_, n)| *n);
        if delivered as usize >= E2E_EVENTS {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "end-to-end run did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rate = E2E_EVENTS as f64 / start.elapsed().as_secs_f64();
    let records = engine
        .invocations(lambent_store::InvocationQuery {
            function: Some("noop".into()),
            after_seq: 0,
            limit: 100_000,
            tail: false,
            max_bytes: 0,
        })
        .await?;
    let mut durations: Vec<Duration> = records
        .iter()
        .filter(|r| r.delivery_id.is_some())
        .map(|r| Duration::from_micros(r.duration_us))
        .collect();
    durations.sort();
    println!(
        "          invocation time inside the pool during that run: p50 {:.1?} p99 {:.1?}",
        lambent_bench::percentile(&durations, 0.5),
        lambent_bench::percentile(&durations, 0.99)
    );
    let bare_rate = 2.0 / bare50.as_secs_f64();
    println!(
        "lambent   end-to-end event -> python no-op -> delivered (concurrency 2): {rate:.0} events/s ({:.2}x the bare runtime's {bare_rate:.0}/s at 2 instances)",
        rate / bare_rate
    );
    Ok(())
}
