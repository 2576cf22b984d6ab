//! Noisy neighbours: a fork bomb, a memory bomb and a CPU hog in one sandboxed
//! function, while another function is invoked warm. The baseline is the same victim
//! measured in the same run with nothing else running. This VM's own noise is as large
//! as the effect looked for (a quiet run's p99 moves 2-4x between runs), so the run
//! alternates: `ROUNDS` rounds, each a quiet phase then one phase per bomb. The result
//! is each bomb's pooled p50/p99 as a ratio of the pooled quiet run's, beside the
//! spread of the quiet rounds' own p99 (the normal range), and whether the node kept
//! answering.
//!
//! Run: `cargo run --release -p lambent-bench --bin neighbours`.

use anyhow::Result;
use bytes::Bytes;
use lambent_engine::{DeployRequest, Engine, InvokeOptions};
use std::time::{Duration, Instant};

/// Victim calls a phase.
const CALLS: usize = 1_000;
const ROUNDS: usize = 5;
const BOMBS_RUN: [&str; 3] = ["fork", "memory", "cpu"];

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

/// `CALLS` warm invocations of the victim, their latencies.
async fn victim_latency(engine: &Engine) -> Result<Vec<Duration>> {
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
    Ok(samples)
}

/// p50 and p99 of samples.
fn p50_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (
        lambent_bench::percentile(&samples, 0.50),
        lambent_bench::percentile(&samples, 0.99),
    )
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
    // Warm the victim.
    victim_latency(&engine).await?;
    let mut quiet = Vec::new();
    let mut quiet_p99s = Vec::new();
    let mut under: Vec<(Vec<Duration>, Vec<String>)> = vec![Default::default(); BOMBS_RUN.len()];
    for round in 1..=ROUNDS {
        let samples = victim_latency(&engine).await?;
        let (q50, q99) = p50_p99(samples.clone());
        println!("round {round}: quiet p50 {q50:>9.1?}  p99 {q99:>9.1?}");
        quiet_p99s.push(q99);
        quiet.extend(samples);
        for (i, what) in BOMBS_RUN.into_iter().enumerate() {
            let bomber = {
                let engine = engine.clone();
                let payload = serde_json::json!({"what": what, "seconds": 6}).to_string();
                tokio::spawn(async move {
                    engine
                        .invoke("bomber", Bytes::from(payload), InvokeOptions::default())
                        .await
                        .map(|inv| inv.record.outcome)
                })
            };
            // Let the bomb go off before measuring.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let samples = victim_latency(&engine).await?;
            let outcome = bomber.await?;
            let (b50, b99) = p50_p99(samples.clone());
            println!("round {round}: {what:<6} p50 {b50:>9.1?}  p99 {b99:>9.1?}");
            under[i].0.extend(samples);
            under[i].1.push(match outcome {
                Ok(o) => format!("{o:?}"),
                Err(e) => format!("refused: {e}"),
            });
        }
    }
    let (q50, q99) = p50_p99(quiet);
    quiet_p99s.sort();
    let (lo, hi) = (quiet_p99s[0], quiet_p99s[quiet_p99s.len() - 1]);
    println!(
        "quiet     victim warm invoke, nothing else     p50 {q50:>9.1?}  p99 {q99:>9.1?}  (rounds' p99 {lo:.1?}..{hi:.1?}: {:.2}x..{:.2}x)",
        lo.as_secs_f64() / q99.as_secs_f64(),
        hi.as_secs_f64() / q99.as_secs_f64(),
    );
    for (what, (samples, mut outcomes)) in BOMBS_RUN.into_iter().zip(under) {
        let (b50, b99) = p50_p99(samples);
        outcomes.dedup();
        println!(
            "lambent   victim during a {what:<6} bomb          p50 {b50:>9.1?}  p99 {b99:>9.1?}  ({:.2}x / {:.2}x the quiet run; bomber: {})",
            b50.as_secs_f64() / q50.as_secs_f64(),
            b99.as_secs_f64() / q99.as_secs_f64(),
            outcomes.join(", ")
        );
    }
    Ok(())
}
