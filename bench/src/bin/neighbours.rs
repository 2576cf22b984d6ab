//! Noisy neighbours: a fork bomb, a memory bomb and a CPU hog in one sandboxed
//! function, while another function is invoked warm. The baseline is the same victim
//! measured in the same run with nothing else running; the result is the victim's
//! p50/p99 under each bomb as a ratio of that baseline, and whether the node kept
//! answering.
//!
//! Run: `cargo run --release -p lambent-bench --bin neighbours`.

use anyhow::Result;
use bytes::Bytes;
use lambent_engine::{DeployRequest, Engine, InvokeOptions};
use std::time::{Duration, Instant};

const CALLS: usize = 2_000;

const VICTIM: &str = "def handler(event, context):\n    return 1\n";

const BOMBS: &str = r#"
import os, threading, time

def handler(event, context):
    what = event["what"]
    end = time.time() + event["seconds"]
    if what == "fork":
        while time.time() < end:
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
            except OSError:
                time.sleep(0.001)
    elif what == "memory":
        hog = []
        while time.time() < end:
            hog.append(bytearray(16 << 20))
    elif what == "cpu":
        def spin():
            while time.time() < end:
                pass
        threads = [threading.Thread(target=spin) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return what
"#;

async fn victim_latency(engine: &Engine) -> Result<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        let inv = engine
            .invoke(
                "victim",
                Bytes::from_static(b"{}"),
                InvokeOptions::default(),
            )
            .await?;
        anyhow::ensure!(inv.record.outcome.is_success(), "the victim failed");
        samples.push(start.elapsed());
    }
    samples.sort();
    Ok((
        lambent_bench::percentile(&samples, 0.50),
        lambent_bench::percentile(&samples, 0.99),
    ))
}

fn main() -> Result<()> {
    lambent_bench::main_with(run)
}

async fn run() -> Result<()> {
    println!("machine: {}", lambent_bench::machine());
    let dir = tempfile::tempdir()?;
    let engine = lambent_bench::engine(dir.path(), lambent_bench::sandbox()).await?;
    for (name, code, memory) in [("victim", VICTIM, 128), ("bomber", BOMBS, 256)] {
        engine
            .deploy(DeployRequest {
                name: name.into(),
                runtime: Some("python3.11".into()),
                handler: Some("app.handler".into()),
                memory_mb: Some(memory),
                timeout_s: Some(60),
                code_zip: Some(lambent_bench::zip_of("app.py", code)?),
                ..DeployRequest::default()
            })
            .await?;
    }
    // Warm the victim, then the quiet baseline.
    victim_latency(&engine).await?;
    let (q50, q99) = victim_latency(&engine).await?;
    println!("baseline  victim warm invoke, nothing else     p50 {q50:>9.1?}  p99 {q99:>9.1?}");
    for what in ["fork", "memory", "cpu"] {
        let bomber = {
            let engine = engine.clone();
            let payload = serde_json::json!({"what": what, "seconds": 8}).to_string();
            tokio::spawn(async move {
                engine
                    .invoke("bomber", Bytes::from(payload), InvokeOptions::default())
                    .await
                    .map(|inv| inv.record.outcome)
            })
        };
        // Let the bomb go off before measuring.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (b50, b99) = victim_latency(&engine).await?;
        let outcome = bomber.await?;
        println!(
            "lambent   victim during a {what:<6} bomb          p50 {b50:>9.1?}  p99 {b99:>9.1?}  ({:.2}x / {:.2}x the quiet run; bomber: {})",
            b50.as_secs_f64() / q50.as_secs_f64(),
            b99.as_secs_f64() / q99.as_secs_f64(),
            match outcome {
                Ok(o) => format!("{o:?}"),
                Err(e) => format!("refused: {e}"),
            }
        );
    }
    Ok(())
}
