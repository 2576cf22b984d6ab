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

/// A floor's fixed answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The floor: a bare hyper server that reads each request's body and gives `answer`
/// (what any HTTP service on this machine costs before doing anything). Runs until
/// killed; prints `floor on URL` first.
pub async fn serve_floor(answer: Answer) -> Result<()> {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("floor on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        // As the node's listeners do: without it a small answer can wait on Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let _body = req.into_body().collect().await?.to_bytes();
                    let mut resp = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(answer.body),
                    ));
                    *resp.status_mut() =
                        hyper::StatusCode::from_u16(answer.status).unwrap_or_default();
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(answer.content_type),
                    );
                    Ok::<_, hyper::Error>(resp)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Starts this program again as its floor (`PROGRAM floor`, which must call
/// [`serve_floor`]); returns it and its URL.
pub fn start_floor() -> Result<(ChildGuard, String)> {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("floor")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = line.trim().trim_start_matches("floor on ").to_owned();
    Ok((ChildGuard(child), url))
}

/// Builds the Rust guests of `sdk/rust` for wasm32-wasip2; returns the directory of
/// their `.wasm` files.
pub fn build_guests() -> Result<std::path::PathBuf> {
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust");
    let status = Command::new("cargo")
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(sdk.join("Cargo.toml"))
        .status()?;
    anyhow::ensure!(status.success(), "building the guests failed");
    Ok(sdk.join("target/wasm32-wasip2/release"))
}
