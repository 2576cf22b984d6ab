//! The delivery contract's performance bars, each a ratio to a floor measured in the
//! same run: a bare hyper server that reads each request body and answers 202 (what
//! any HTTP service on this machine costs before doing anything). wrk, one thread.
//!
//! `cargo run --release -p lambent-bench --bin contract` (needs `wrk`; starts the
//! release `lambent serve` and, as a child process, the floor). `contract e2e` runs
//! only the last bar (events → delivered), on a fresh node.

use anyhow::{Context, Result};
use lambent_bench::cli;
use lambent_bench::load::{Answer, serve_floor, start_floor, wrk};
use std::time::{Duration, Instant};

fn post(body_lua: &str, content_type: &str) -> String {
    format!(
        r#"
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
request = function()
  counter = counter + 1
  local body = {body_lua}
  return wrk.format(nil, nil, nil, body)
end
"#
    )
}

const EVENT_LUA: &str = r#"string.format('{"specversion":"1.0","id":"w-%d-%d","source":"/bench","type":"bench.event","data":{"n":%d,"user":"alice","action":"login"}}', os.time(), counter, counter)"#;

fn batch_lua(ty: &str) -> String {
    format!(
        r#"(function()
    local parts = {{}}
    for i = 1, 100 do
      parts[i] = string.format('{{"specversion":"1.0","id":"b-%d-%d-%d","source":"/bench","type":"{ty}","data":{{"n":%d}}}}', os.time(), counter, i, i)
    end
    return "[" .. table.concat(parts, ",") .. "]"
  end)()"#
    )
}

/// Deliveries delivered so far, asked over the caller's one connection.
fn delivered(client: &reqwest::blocking::Client, url: &str) -> Result<u64> {
    let v: serde_json::Value = client.get(format!("{url}/v1/status")).send()?.json()?;
    Ok(v["deliveries"]["delivered"].as_u64().unwrap_or(0))
}

/// When the newest invocations of `function` finished (ms since the epoch), by the
/// node's own records.
fn last_finish_ms(client: &reqwest::blocking::Client, url: &str, function: &str) -> Result<f64> {
    let v: serde_json::Value = client
        .get(format!(
            "{url}/v1/invocations?function={function}&tail=true&limit=50"
        ))
        .send()?
        .json()?;
    v["invocations"]
        .as_array()
        .context("invocations")?
        .iter()
        .filter_map(|r| Some(r["started_ms"].as_f64()? + r["duration_us"].as_f64()? / 1000.0))
        .reduce(f64::max)
        .context("no invocations")
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("floor") {
        return tokio::runtime::Runtime::new()?.block_on(serve_floor(Answer {
            status: 202,
            content_type: "application/json",
            body: b"{}",
        }));
    }
    println!("machine: {}", lambent_bench::machine());
    if std::env::args().nth(1).as_deref() == Some("e2e") {
        return end_to_end_alone();
    }
    let (_floor, floor_url) = start_floor()?;
    let server = lambent_bench::start_server()?;
    let bin = lambent_bench::lambent_bin()?;
    let url = server.url.clone();

    // 1. Single events at 64 connections.
    let event = post(EVENT_LUA, "application/cloudevents+json");
    let f64c = wrk(&floor_url, 64, &event)?;
    let l64c = wrk(&format!("{url}/v1/events"), 64, &event)?;
    println!(
        "single-event ingest, 64 conns : floor {:>8.0} req/s, lambent {:>8.0} events/s = {:.2}x (bar >= 0.75x)",
        f64c.rps,
        l64c.rps,
        l64c.rps / f64c.rps
    );
    // 2. Batches of 100.
    let batch = post(
        &batch_lua("bench.event"),
        "application/cloudevents-batch+json",
    );
    let lb = wrk(&format!("{url}/v1/events"), 64, &batch)?;
    println!(
        "batch ingest (100/request)    : floor {:>8.0} req/s, lambent {:>8.0} events/s = {:.2}x (bar >= 5x)",
        f64c.rps,
        lb.rps * 100.0,
        lb.rps * 100.0 / f64c.rps
    );

    // 3. Warm synchronous Python invoke at 1 connection.
    let code = noop_code()?;
    let code_dir = code.path().to_str().context("path")?;
    deploy_noop(&bin, &url, code_dir)?;
    let small = post("'{}'", "application/json");
    let f1 = wrk(&floor_url, 1, &small)?;
    let inv1 = wrk(&format!("{url}/v1/functions/noop/invoke"), 1, &small)?;
    println!(
        "warm sync invoke p50, 1 conn  : floor {:>8.0?}, lambent {:>8.0?} = {:.2}x (bar <= 3x)",
        f1.p50,
        inv1.p50,
        inv1.p50.as_secs_f64() / f1.p50.as_secs_f64()
    );

    // 4. Events -> Python no-op -> delivered, against sync invokes at the same
    // concurrency: on this node (which ingested the rows above first), then on a
    // fresh one.
    let (sync, e2e) = end_to_end(&bin, &url, &small)?;
    println!(
        "events -> no-op -> delivered  : sync invoke {sync:>8.0}/s at concurrency 2, events {e2e:>8.0}/s = {:.2}x (bar >= 0.9x)",
        e2e / sync
    );
    let fresh = lambent_bench::start_server()?;
    deploy_noop(&bin, &fresh.url, code_dir)?;
    let (sync, e2e) = end_to_end(&bin, &fresh.url, &small)?;
    println!(
        "  the same on a fresh node     : sync invoke {sync:>8.0}/s at concurrency 2, events {e2e:>8.0}/s = {:.2}x",
        e2e / sync
    );
    Ok(())
}

/// `contract e2e`: only the last bar, on a fresh node (a quicker A/B of delivery).
fn end_to_end_alone() -> Result<()> {
    let code = noop_code()?;
    let code_dir = code.path().to_str().context("path")?;
    let server = lambent_bench::start_server()?;
    let bin = lambent_bench::lambent_bin()?;
    deploy_noop(&bin, &server.url, code_dir)?;
    let small = post("'{}'", "application/json");
    let (sync, e2e) = end_to_end(&bin, &server.url, &small)?;
    println!(
        "events -> no-op -> delivered  : sync invoke {sync:>8.0}/s at concurrency 2, events {e2e:>8.0}/s = {:.2}x (bar >= 0.9x)",
        e2e / sync
    );
    Ok(())
}

/// A directory holding the Python no-op's code.
fn noop_code() -> Result<tempfile::TempDir> {
    let code = tempfile::tempdir()?;
    std::fs::write(
        code.path().join("app.py"),
        "def handler(event, context):\n    return None\n",
    )?;
    Ok(code)
}

/// Deploys the Python no-op (`noop`, concurrency 2) and warms it.
fn deploy_noop(bin: &std::path::Path, url: &str, code_dir: &str) -> Result<()> {
    cli(
        bin,
        url,
        &[
            "deploy",
            "noop",
            "--runtime",
            "python3.11",
            "--handler",
            "app.handler",
            "--code",
            code_dir,
            "--concurrency",
            "2",
        ],
    )?;
    cli(bin, url, &["invoke", "noop"])?;
    Ok(())
}

/// The no-op's synchronous rate at 2 connections, then the rate at which 20,000
/// published events (batches of 100) are delivered to it, publishing included.
fn end_to_end(bin: &std::path::Path, url: &str, small: &str) -> Result<(f64, f64)> {
    let inv2 = wrk(&format!("{url}/v1/functions/noop/invoke"), 2, small)?;
    cli(
        bin,
        url,
        &[
            "rules",
            "add",
            "e2e",
            "--pattern",
            r#"{"type": ["e2e"]}"#,
            "--target",
            "noop",
        ],
    )?;
    let client = reqwest::blocking::Client::new();
    let before = delivered(&client, url)?;
    const E2E: u64 = 20_000;
    let start = Instant::now();
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64()
        * 1000.0;
    for b in 0..E2E / 100 {
        let items: Vec<serde_json::Value> = (0..100)
            .map(|i| serde_json::json!({"specversion": "1.0", "id": format!("e2e-{b}-{i}"), "source": "/bench", "type": "e2e", "data": {}}))
            .collect();
        let resp = client
            .post(format!("{url}/v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::Value::Array(items).to_string())
            .send()?;
        anyhow::ensure!(resp.status() == 202, "publish: {}", resp.status());
    }
    // Polled seldom, over one connection: each look costs the node a count of its
    // delivered rows and took CPU from the deliveries it measures (it was a `curl`
    // process every 20 ms). The end is the node's record of the last run.
    while delivered(&client, url)? < before + E2E {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "e2e did not finish"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let secs = (last_finish_ms(&client, url, "noop")? - start_ms) / 1000.0;
    Ok((inv2.rps, E2E as f64 / secs))
}
