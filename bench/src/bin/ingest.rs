//! Durable ingest throughput.
//!
//! Baseline (same run, same disk): one SQLite transaction with fsync per event, the
//! way a store without group commit appends. Then Lambent's store with 1 and 64
//! concurrent publishers, and the real `lambent serve` over HTTP with 1 and 64
//! concurrent publishers (structured mode) and with batches.
//!
//! Run: `cargo run --release -p lambent-bench --bin ingest` (builds and starts the
//! release binary itself).

use anyhow::Result;
use lambent_core::CloudEvent;
use lambent_sqlite::SqliteStore;
use lambent_store::{EventLog, NewEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const STORE_EVENTS: usize = 20_000;
const HTTP_EVENTS: usize = 40_000;

fn event(i: usize, tag: &str) -> CloudEvent {
    CloudEvent::builder(format!("{tag}-{i}"), "/bench", "bench.event")
        .json_data(serde_json::json!({"n": i, "user": "alice", "action": "login"}))
        .build()
        .unwrap_or_else(|e| panic!("bench event: {e}"))
}

fn baseline_one_commit_per_event(n: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("base.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE events (seq INTEGER PRIMARY KEY, source TEXT, id TEXT, body TEXT, UNIQUE(source, id));",
    )?;
    let start = Instant::now();
    for i in 0..n {
        let e = event(i, "base");
        conn.execute(
            "INSERT INTO events (source, id, body) VALUES (?1, ?2, ?3)",
            (e.source(), e.id(), e.to_json_string()),
        )?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn store_publish(concurrency: usize, n: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path())?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, lambent_store::StoreError>(());
                    }
                    store
                        .publish(vec![NewEvent::new(event(i, "store"), Vec::new())])
                        .await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let commits = store.commit_stats();
    let (tx, writes) = (commits.transactions, commits.writes);
    eprintln!("  store x{concurrency}: {writes} writes in {tx} transactions");
    Ok(rate)
}

async fn http_publish(
    url: &str,
    concurrency: usize,
    n: usize,
    batch: usize,
    tag: &str,
) -> Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, url, tag) =
                (client.clone(), next.clone(), url.to_owned(), tag.to_owned());
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let last = (first + batch).min(n);
                    let (ct, body) = if batch == 1 {
                        (
                            "application/cloudevents+json",
                            event(first, &tag).to_json_string(),
                        )
                    } else {
                        let items: Vec<_> =
                            (first..last).map(|i| event(i, &tag).into_json()).collect();
                        (
                            "application/cloudevents-batch+json",
                            serde_json::Value::Array(items).to_string(),
                        )
                    };
                    let resp = client
                        .post(format!("{url}/v1/events"))
                        .header("content-type", ct)
                        .body(body)
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status() == 202, "publish answered {}", resp.status());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

const WRK_SCRIPT: &str = r#"
local counter = 0
local tid = 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents+json"
request = function()
  counter = counter + 1
  local body = string.format('{"specversion":"1.0","id":"wrk-%d-%d","source":"/bench","type":"bench.event","datacontenttype":"application/json","data":{"n":%d,"user":"alice","action":"login"}}', tid, counter, counter)
  return wrk.format(nil, nil, nil, body)
end
"#;

/// HTTP ingest driven by wrk (a C load generator: less of the 2 cores goes to the
/// client than with reqwest). Every request carries a fresh event id.
fn wrk_publish(url: &str, connections: usize, seconds: u64) -> Result<Option<f64>> {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("post.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let out = std::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "-s",
        ])
        .arg(&script)
        .arg(format!("{url}/v1/events"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok()))
}

#[tokio::main]
async fn main() -> Result<()> {
    println!("machine: {}", lambent_bench::machine());
    let base = baseline_one_commit_per_event(2_000)?;
    println!("baseline  sqlite, 1 commit+fsync per event      : {base:>9.0} events/s (1.00x)");
    for c in [1, 64] {
        let r = store_publish(c, STORE_EVENTS).await?;
        println!(
            "lambent   store publish, {c:>2} publishers          : {r:>9.0} events/s ({:.2}x)",
            r / base
        );
    }
    let server = lambent_bench::start_server()?;
    for c in [1, 64] {
        let n = if c == 1 { HTTP_EVENTS / 4 } else { HTTP_EVENTS };
        let r = http_publish(&server.url, c, n, 1, &format!("http{c}")).await?;
        println!(
            "lambent   HTTP structured, {c:>2} publishers        : {r:>9.0} events/s ({:.2}x)",
            r / base
        );
    }
    let r = http_publish(&server.url, 8, HTTP_EVENTS * 2, 100, "batch").await?;
    println!(
        "lambent   HTTP batches of 100, 8 publishers     : {r:>9.0} events/s ({:.2}x)",
        r / base
    );
    for c in [1, 64] {
        match wrk_publish(&server.url, c, 10)? {
            Some(r) => println!(
                "lambent   HTTP structured, {c:>2} wrk connections   : {r:>9.0} events/s ({:.2}x)",
                r / base
            ),
            None => {
                println!("(wrk not installed: `apt-get install wrk` for the load-generator rows)")
            }
        }
    }
    Ok(())
}
