//! Load from wrk (one thread), and child processes killed when dropped.

use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::Duration;

const SECONDS: u64 = 10;

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What wrk measured.
#[derive(Debug, Clone, Copy)]
pub struct Wrk {
    pub rps: f64,
    pub p50: Duration,
}

fn parse_latency(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else {
        return None;
    };
    num.parse::<f64>()
        .ok()
        .map(|v| Duration::from_secs_f64(v * scale))
}

/// wrk with one thread and `connections` connections for 10 s, running `script`.
pub fn wrk(url: &str, connections: usize, script: &str) -> Result<Wrk> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("script.lua");
    std::fs::write(&path, script)?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{SECONDS}s"),
            "--latency",
            "-s",
        ])
        .arg(&path)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors against {url}:\n{text}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no rate in wrk output:\n{text}"))?;
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .and_then(parse_latency)
        .with_context(|| format!("no p50 in wrk output:\n{text}"))?;
    Ok(Wrk { rps, p50 })
}
