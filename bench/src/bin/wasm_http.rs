//! The WebAssembly runtime's HTTP bars (the wasm issue), side by side in one run:
//! Lambent serving the `http_hello` wasi:http component on a route, `wasmtime serve`
//! serving the same `.wasm` with its default flags and with its pooling allocator
//! tuned, and a bare hyper server answering the same text (the floor). wrk, one
//! thread, at 1, 16 and 64 connections; then the in-process cost of the first
//! request to a just-deployed component.
//!
//! `cargo run --release -p lambent-bench --bin wasm_http` (needs `wrk`; `wasmtime`
//! on PATH or in `WASMTIME`, else its rows are skipped).

use anyhow::{Context, Result, bail};
use lambent_bench::cli;
use lambent_bench::load::{Answer, ChildGuard, Wrk, build_guests, serve_floor, start_floor, wrk};
use std::process::{Command, Stdio};
use std::time::Duration;

const BODY: &[u8] = b"Hello from wasi:http at /hello\n";

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `wasmtime serve` on the component, with extra flags; waits until it answers.
fn start_wasmtime(
    wasmtime: &str,
    wasm: &std::path::Path,
    flags: &[&str],
) -> Result<(ChildGuard, String)> {
    let port = free_port()?;
    let child = Command::new(wasmtime)
        .arg("serve")
        .args(flags)
        .arg(format!("--addr=127.0.0.1:{port}"))
        .arg(wasm)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {wasmtime} serve"))?;
    let guard = ChildGuard(child);
    let url = format!("http://127.0.0.1:{port}/hello");
    for _ in 0..200 {
        if reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success()) {
            return Ok((guard, url));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("wasmtime serve {flags:?} did not answer on {url}")
}

const GET: &str = "wrk.method = \"GET\"\n";

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("floor") {
        return tokio::runtime::Runtime::new()?.block_on(serve_floor(Answer {
            status: 200,
            content_type: "text/plain",
            body: BODY,
        }));
    }
    println!("machine: {}", lambent_bench::machine());
    let wasm = build_guests()?.join("http_hello.wasm");
    let (_floor, floor_url) = start_floor()?;
    let server = lambent_bench::start_server()?;
    let bin = lambent_bench::lambent_bin()?;
    let code = wasm.to_str().context("path")?;
    cli(
        &bin,
        &server.url,
        &[
            "deploy",
            "http-hello",
            "--runtime",
            "wasm",
            "--code",
            code,
            "--concurrency",
            "1000",
        ],
    )?;
    cli(
        &bin,
        &server.url,
        &[
            "routes",
            "add",
            "--method",
            "GET",
            "--path",
            "/hello",
            "--target",
            "http-hello",
            "--public",
        ],
    )?;
    let lambent_url = format!("{}/hello", server.routes_url);
    let body = reqwest::blocking::get(&lambent_url)?.text()?;
    anyhow::ensure!(body.as_bytes() == BODY, "lambent answered {body:?}");

    let wasmtime = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".into());
    let have_wasmtime = Command::new(&wasmtime)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut rows: Vec<(&str, Vec<Wrk>)> = Vec::new();
    let levels = [1usize, 16, 64];
    let measure =
        |url: &str| -> Result<Vec<Wrk>> { levels.iter().map(|c| wrk(url, *c, GET)).collect() };
    rows.push((
        "floor (bare hyper)",
        measure(&format!("{floor_url}/hello"))?,
    ));
    rows.push((
        "lambent route → wasi:http component",
        measure(&lambent_url)?,
    ));
    if have_wasmtime {
        // `-Scli`: a Rust `std` component imports wasi:cli/environment, which
        // `wasmtime serve` links only when asked.
        let (_w, url) = start_wasmtime(&wasmtime, &wasm, &["-Scli"])?;
        rows.push(("wasmtime serve -Scli (default flags)", measure(&url)?));
        drop(_w);
        // Lambent's own pool settings, as wasmtime serve spells them.
        let tuned = [
            "-Scli",
            "-Opooling-allocator=y",
            "-Opooling-memory-keep-resident=4194304",
            "-Opooling-table-keep-resident=65536",
            "-Opooling-decommit-batch-size=64",
            "-Opooling-pagemap-scan=auto",
            "-Omemory-init-cow=n",
        ];
        let (_w, url) = start_wasmtime(&wasmtime, &wasm, &tuned)?;
        rows.push(("wasmtime serve (pooling, tuned)", measure(&url)?));
    } else {
        println!("(no `wasmtime` on PATH or in WASMTIME: its rows are skipped)");
    }

    println!("\n| server | c1 req/s | c1 p50 | c16 req/s | c64 req/s | c64 vs floor |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let floor64 = rows[0].1[2].rps;
    for (name, r) in &rows {
        println!(
            "| {name} | {:.0} | {:.0?} | {:.0} | {:.0} | {:.2}x |",
            r[0].rps,
            r[0].p50,
            r[1].rps,
            r[2].rps,
            r[2].rps / floor64
        );
    }
    let floor = &rows[0].1;
    let lambent = &rows[1].1;
    println!(
        "\nc64: lambent {:.2}x the floor (bar >= 0.5x); c1 p50: {:.2}x the floor's (bar <= 1.3x)",
        lambent[2].rps / floor[2].rps,
        lambent[0].p50.as_secs_f64() / floor[0].p50.as_secs_f64()
    );
    if let Some((_, tuned)) = rows.iter().find(|(n, _)| n.contains("tuned")) {
        println!(
            "c64: lambent {:.2}x tuned wasmtime serve (bar >= 2.5x)",
            lambent[2].rps / tuned[2].rps
        );
    }

    // The first request to a just-deployed component, in the process: the
    // invocation's own duration (instantiation from the pool and the handler).
    let mut firsts = Vec::new();
    for i in 0..200 {
        let name = format!("cold-{i}");
        cli(
            &bin,
            &server.url,
            &["deploy", &name, "--runtime", "wasm", "--code", code],
        )?;
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/functions/{name}/invoke", server.url))
            .body("{}")
            .send()?;
        anyhow::ensure!(
            resp.status().is_success(),
            "invoke {name}: {}",
            resp.status()
        );
    }
    for i in 0..200 {
        let records: serde_json::Value =
            reqwest::blocking::get(format!("{}/v1/invocations?function=cold-{i}", server.url))?
                .json()?;
        let first = &records["invocations"][0];
        anyhow::ensure!(first["cold"] == true, "cold-{i}: {first}");
        firsts.push(Duration::from_micros(
            first["duration_us"].as_u64().context("duration")?,
        ));
    }
    firsts.sort();
    println!(
        "first request to a just-deployed component, in process: p50 {:.0?}, p99 {:.0?} (bars <= 100 µs, <= 1 ms)",
        lambent_bench::percentile(&firsts, 0.5),
        lambent_bench::percentile(&firsts, 0.99)
    );
    // The same pattern on a warm function (a CLI call, then one request): what an
    // idle node's first request costs when nothing is cold but the CPU's caches.
    for _ in 0..200 {
        cli(&bin, &server.url, &["status"])?;
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/functions/cold-0/invoke", server.url))
            .body("{}")
            .send()?;
        anyhow::ensure!(
            resp.status().is_success(),
            "invoke cold-0: {}",
            resp.status()
        );
    }
    let records: serde_json::Value = reqwest::blocking::get(format!(
        "{}/v1/invocations?function=cold-0&limit=1000",
        server.url
    ))?
    .json()?;
    let mut warm: Vec<Duration> = records["invocations"]
        .as_array()
        .context("invocations")?
        .iter()
        .filter(|r| r["cold"] == false)
        .filter_map(|r| r["duration_us"].as_u64().map(Duration::from_micros))
        .collect();
    warm.sort();
    println!(
        "a warm request after the same pause, in process: p50 {:.0?}, p99 {:.0?} ({} requests)",
        lambent_bench::percentile(&warm, 0.5),
        lambent_bench::percentile(&warm, 0.99),
        warm.len()
    );
    Ok(())
}
