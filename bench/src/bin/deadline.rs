//! Finding 15: deadlines under CPU pressure. Many functions kept busy on 2 cores,
//! with CPU hogs beside them; every invocation's record is checked against its
//! function's timeout: no success may be recorded past the deadline, and how late
//! a timeout is reported is measured (the node's clock decides, not the instance's
//! cooperation).
//!
//! `cargo run --release -p lambent-bench --bin deadline`

use anyhow::{Result, bail};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FUNCTIONS: usize = 40;
const TIMEOUT_S: u64 = 2;
const HOGS: usize = 4;
const RUN: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    println!("machine: {}", lambent_bench::machine());
    let server = lambent_bench::start_server()?;
    let bin = lambent_bench::lambent_bin()?;
    let code = tempfile::tempdir()?;
    // Sleeps up to 2.4 s (past the 2 s timeout about a sixth of the time), then burns a
    // little CPU.
    std::fs::write(
        code.path().join("app.py"),
        "import random, time\ndef handler(e, c):\n    time.sleep(random.random() * 2.4)\n    n = 0\n    for i in range(20000):\n        n += i\n    return n\n",
    )?;
    let code_dir = code.path().to_string_lossy().into_owned();
    for i in 0..FUNCTIONS {
        let name = format!("f{i}");
        let out = Command::new(&bin)
            .args([
                "deploy",
                &name,
                "--runtime",
                "python3.11",
                "--handler",
                "app.handler",
            ])
            .args([
                "--code",
                &code_dir,
                "--timeout",
                &TIMEOUT_S.to_string(),
                "--concurrency",
                "4",
            ])
            .env("LAMBENT_URL", &server.url)
            .output()?;
        if !out.status.success() {
            bail!("deploy: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let mut hogs: Vec<std::process::Child> = (0..HOGS)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdout(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let start = Instant::now();
    let workers: Vec<_> = (0..FUNCTIONS * 2)
        .map(|w| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap_or_default();
                let mut n = 0;
                while start.elapsed() < RUN {
                    let f = (w + n) % FUNCTIONS;
                    let _ = client
                        .post(format!("{url}/v1/functions/f{f}/invoke"))
                        .body("{}")
                        .send();
                    n += 1;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    for h in &mut hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    let (mut total, mut late_successes, mut timeouts) = (0, 0, 0);
    let mut worst_timeout = Duration::ZERO;
    let mut worst_success = Duration::ZERO;
    let client = reqwest::blocking::Client::new();
    for i in 0..FUNCTIONS {
        let mut after = 0;
        loop {
            let page: serde_json::Value = client
                .get(format!(
                    "{}/v1/invocations?function=f{i}&after={after}&limit=1000",
                    server.url
                ))
                .send()?
                .json()?;
            let rows = page["invocations"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                after = r["seq"].as_i64().unwrap_or(after);
                total += 1;
                let took = Duration::from_micros(r["duration_us"].as_u64().unwrap_or(0));
                match r["outcome"].as_str() {
                    Some("success") => {
                        worst_success = worst_success.max(took);
                        // The recorded duration is the invocation proper (not a cold
                        // start's init, not log collection), as on Lambda.
                        if took > Duration::from_secs(TIMEOUT_S) {
                            late_successes += 1;
                        }
                    }
                    Some("timeout") => {
                        timeouts += 1;
                        worst_timeout = worst_timeout.max(took);
                    }
                    _ => {}
                }
            }
        }
    }
    println!(
        "{total} invocations of {FUNCTIONS} functions ({TIMEOUT_S} s timeout) beside {HOGS} CPU hogs for {RUN:?}"
    );
    println!("successes recorded past the timeout: {late_successes} (must be 0)");
    println!(
        "timeouts: {timeouts}, latest reported after {worst_timeout:?} = {:.2}x the timeout",
        worst_timeout.as_secs_f64() / TIMEOUT_S as f64
    );
    println!("slowest success: {worst_success:?}");
    Ok(())
}
