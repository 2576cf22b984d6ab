//! Shared helpers of the benchmark programs.

use std::time::Duration;

/// The same allocator as the `lambent` binary, so in-process numbers match a node's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A one-line description of the machine, for the results.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let (compute, memory) = cpu_speed();
    format!(
        "{cpu}, {cores} cores, {mem}; one core: {compute:.0} ms of register work, {memory:.0} ns a dependent load from 64 MiB"
    )
}

/// How fast this VM is today, on one core (best of three): milliseconds for a fixed
/// register-only loop, and nanoseconds for a load that depends on the one before, at
/// random over 64 MiB (cache and TLB misses). VMs of one model name have differed by
/// 3x here, which moves every ratio whose two sides spend their time differently (the
/// floor is mostly the kernel's TCP; the node mostly its own code and memory).
pub fn cpu_speed() -> (f64, f64) {
    let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::INFINITY, f64::min);
    let compute = best(&|| {
        let start = std::time::Instant::now();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000_000u64 {
            // xorshift64: a dependent chain the compiler cannot fold away.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
        start.elapsed().as_secs_f64() * 1000.0
    });
    // One cycle through a random permutation (Sattolo's shuffle, by xorshift).
    const SLOTS: usize = 8 * 1024 * 1024;
    let mut next: Vec<usize> = (0..SLOTS).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..SLOTS).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.swap(i, (x % i as u64) as usize);
    }
    const LOADS: usize = 4_000_000;
    let memory = best(&|| {
        let start = std::time::Instant::now();
        let mut at = 0;
        for _ in 0..LOADS {
            at = next[at];
        }
        std::hint::black_box(at);
        start.elapsed().as_secs_f64() * 1e9 / LOADS as f64
    });
    (compute, memory)
}

pub mod load;

/// A release `lambent serve` on a free port and a temporary data directory.
pub struct Server {
    child: std::process::Child,
    pub url: String,
    /// The data plane (HTTP routes).
    pub routes_url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `lambent` binary (built if needed), or the one `LAMBENT_BENCH_BIN`
/// names (to compare two builds in one run).
pub fn lambent_bin() -> anyhow::Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("LAMBENT_BENCH_BIN") {
        return Ok(bin.into());
    }
    let status = std::process::Command::new("cargo")
        .args(["build", "--release", "--bin", "lambent"])
        .status()?;
    anyhow::ensure!(status.success(), "building lambent failed");
    Ok(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/lambent"))
}

/// Builds and starts a release node.
pub fn start_server() -> anyhow::Result<Server> {
    use anyhow::Context;
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(lambent_bin()?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("LAMBENT_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting lambent serve")?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let (mut line, mut routes) = (String::new(), String::new());
    stdout.read_line(&mut line)?;
    stdout.read_line(&mut routes)?;
    let url = line
        .trim()
        .trim_start_matches("lambent: control API on ")
        .to_owned();
    let routes_url = routes
        .trim()
        .trim_start_matches("lambent: HTTP routes on ")
        .to_owned();
    Ok(Server {
        child,
        url,
        routes_url,
        dir,
    })
}

/// Instances run sandboxed, as a node runs them: the benchmark program is its own
/// launcher (its `main` calls `run_if_launcher` first).
pub fn sandbox() -> lambent_runtime_process::sandbox::Isolation {
    use lambent_runtime_process::sandbox::{Isolation, Launcher};
    match Launcher::current_exe() {
        Ok(launcher) => Isolation::Sandbox(launcher),
        Err(_) => Isolation::None,
    }
}

/// An engine on a SQLite store in `data`, running process functions with `isolation`.
pub async fn engine(
    data: &std::path::Path,
    isolation: lambent_runtime_process::sandbox::Isolation,
) -> anyhow::Result<lambent_engine::Engine> {
    use std::sync::Arc;
    let sqlite = lambent_sqlite::SqliteStore::open(data)?;
    let stores = sqlite.stores(Arc::new(lambent_sqlite::FsCodeStore::open(
        data.join("code"),
    )?));
    Ok(lambent_engine::Engine::start(
        lambent_engine::EngineConfig::default(),
        stores,
        Arc::new(lambent_runtime_process::ProcessRuntime::new(
            data, isolation,
        )?),
        Arc::new(lambent_engine::keepalive::Fixed::new(600_000)),
    )
    .await?)
}

/// A zip holding one file.
pub fn zip_of(name: &str, body: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default())?;
    w.write_all(body.as_bytes())?;
    Ok(w.finish()?.into_inner())
}

/// A benchmark program's `main`: first the sandbox launcher's turn (the program is its
/// own launcher), then `run` on a multi-threaded runtime.
pub fn main_with<F>(run: impl FnOnce() -> F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    lambent_runtime_process::sandbox::run_if_launcher(std::env::args_os().skip(1));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// Runs the `lambent` CLI (`bin`) against the node at `url`; its stdout, or an error
/// with its stderr.
pub fn cli(bin: &std::path::Path, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .env("LAMBENT_URL", url)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "lambent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
