//! `lambent serve`: a node on one SQLite file.

use anyhow::{Context, Result};
use clap::Args;
use lambent_engine::keepalive::{KeepAlivePolicy, parse_policy};
use lambent_engine::{Engine, EngineConfig};
use lambent_runtime::Runtimes;
use lambent_runtime_process::ProcessRuntime;
use lambent_runtime_process::sandbox::{Isolation, Launcher};
use lambent_runtime_wasm::WasmRuntime;
use lambent_sqlite::{FsCodeStore, SqliteStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Where the database, code and runtime files live.
    #[arg(long, env = "LAMBENT_DATA_DIR", default_value = "lambent-data")]
    pub data_dir: PathBuf,
    /// Control API address (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Data-plane address: the HTTP routes (port 0 picks a free port; printed second).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Keep-alive policy: when idle instances are dropped and pre-warmed. `fixed:10m`
    /// (or plain seconds), `histogram`, `mdp`, `mdp:cost-ratio=R`; a function may
    /// name its own at deploy.
    #[arg(long, default_value = "fixed:10m", value_parser = parse_keep_alive)]
    keep_alive: Arc<dyn KeepAlivePolicy>,
    /// The most memory (MB, by the functions' `--memory`) the node's instances may
    /// hold: starting one past it evicts idle instances, those least worth keeping
    /// first (Greedy-Dual: calls × cold-start time / memory, aged). Default: none.
    #[arg(long)]
    memory_budget: Option<u64>,
    /// Largest event accepted, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_event_bytes: usize,
    /// Most connections the control API holds open at once (also bounded by the
    /// open-file limit).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a client may take to send a request's headers; keep-alive connections
    /// idle this long are closed too.
    #[arg(long, default_value_t = 10)]
    header_read_timeout: u64,
    /// How long delivered events, settled deliveries and invocations with their logs
    /// are kept: `30m`, `12h`, `7d`, or `forever`. Dead letters and undelivered events
    /// are kept until redriven or delivered.
    #[arg(long, default_value = "7d", value_parser = parse_retention)]
    retention: Retention,
    /// How long an event's (source, id) is remembered for de-duplication, at least
    /// (`24h`); events are kept at least this long whatever the retention.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    dedup_window: Duration,
    /// On SIGTERM or Ctrl-C: how long running attempts may take to finish (seconds).
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace: u64,
    /// How process functions are isolated: `sandbox` (namespaces, an unprivileged id,
    /// a read-only root, Landlock, seccomp, cgroups) or `none` (they run as the
    /// node's user, with access to everything it has).
    #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "none"])]
    isolation: String,
    /// Require an API token on every request (but /healthz), also on loopback. A
    /// non-loopback --listen always requires one.
    #[arg(long)]
    auth: bool,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    init_logging();
    let node = start(&args).await?;
    shutdown().await;
    node.stop(Duration::from_secs(args.shutdown_grace)).await
}

/// A running node: its engine, listeners and sources.
pub struct RunningNode {
    pub control_addr: SocketAddr,
    pub http_addr: SocketAddr,
    engine: Engine,
    /// Set once: listeners and sources stop taking work.
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Stops intake (listeners and sources), drains running attempts for `grace`.
    pub async fn stop(self, grace: Duration) -> Result<()> {
        tracing::info!("stopping: no new work; draining running attempts");
        let _ = self.stop.send(true);
        let unfinished = self.engine.drain(grace).await;
        if unfinished > 0 {
            tracing::warn!(
                unfinished,
                "attempts still running after the grace period; they run again after restart"
            );
        }
        // Requests still open after the grace (a long synchronous invoke) are cut.
        let servers = futures::future::join_all(self.servers);
        if tokio::time::timeout(grace, servers).await.is_err() {
            tracing::warn!("requests still open after the grace period were cut");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAMBENT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Opens the store, starts the engine, the listeners and the sources.
pub async fn start(args: &ServeArgs) -> Result<RunningNode> {
    // Tokens are required on any listener other programs on the network can reach.
    let auth = args.auth || !args.listen.ip().is_loopback();
    // Absolute, because runtime processes run with their code directory as cwd.
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let data = &args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving the data directory {}", args.data_dir.display()))?;
    let sqlite = SqliteStore::open(data)
        .with_context(|| format!("opening the store in {}", data.display()))?;
    let stores = sqlite.stores(Arc::new(FsCodeStore::open(data.join("code"))?));
    let isolation = match args.isolation.as_str() {
        "none" => Isolation::None,
        _ => Isolation::Sandbox(
            Launcher::current_exe().context("finding this program to run the sandbox launcher")?,
        ),
    };
    // The wasm engine first, before anything forks: making it opens wasmtime's
    // process-wide pagemap, whose fork handler (`pthread_atfork`) waits for that
    // opening to finish. A fork from another thread during it (the process runtime
    // resolves interpreters and starts spare sandboxes in the background) left a
    // child stuck before exec for good, holding the node's descriptors — the data
    // directory's lock among them, so a restarted node could not start.
    let wasm = WasmRuntime::new(data).context("starting the WebAssembly runtime")?;
    let runtime = Arc::new(ProcessRuntime::new(data, isolation)?);
    let isolation = runtime.isolation();
    match runtime.isolation_available() {
        true => tracing::info!(isolation = %isolation, "process isolation"),
        false => tracing::error!(isolation = %isolation, "process isolation"),
    }
    let resolving = runtime.clone();
    tokio::spawn(async move { resolving.resolve_interpreters().await });
    let runtimes = Arc::new(
        Runtimes::new()
            .with("process", runtime)
            .with("wasm", Arc::new(wasm)),
    );
    let config = EngineConfig {
        max_event_bytes: args.max_event_bytes,
        retention: args.retention.0,
        dedup_window: args.dedup_window,
        memory_budget_mb: args.memory_budget,
        ..EngineConfig::default()
    };
    let engine = Engine::start(config, stores, runtimes, args.keep_alive.clone()).await?;
    let open_files = raise_open_file_limit();
    // Leave descriptors for instances (pipes, sockets) and the database.
    let max_connections = args
        .max_connections
        .min((open_files.saturating_sub(512) / 2).max(64) as usize);
    let limits = lambent_http::Limits {
        max_connections,
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
    };
    if let Some(token) = engine.first_admin_token().await? {
        // Shown once: only its hash is stored. `lambent tokens create` makes more.
        eprintln!(
            "lambent: admin token (shown once; export LAMBENT_TOKEN={token} to use it): {token}"
        );
    }
    let node = lambent_api::NodeLimits {
        auth,
        isolation,
        open_files,
        max_connections,
        header_read_timeout_ms: limits.header_read_timeout.as_millis() as u64,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let http_listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--http-listen)", args.http_listen))?;
    let addr = listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    // The first lines on stdout are the addresses: scripts and tests read them.
    println!("lambent: control API on http://{addr}");
    println!("lambent: HTTP routes on http://{http_addr}");
    tracing::info!(%addr, %http_addr, data_dir = %data.display(), open_files, max_connections, auth, "node started");
    // On a stop signal: the listeners stop taking connections (requests in flight
    // finish) while the engine stops starting attempts and lets running ones settle.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (listener, app) in [
        (listener, lambent_api::router(engine.clone(), node)),
        (
            http_listener,
            lambent_api::dataplane::router(engine.clone()),
        ),
    ] {
        let mut stopping = stopping.clone();
        servers.push(tokio::spawn(async move {
            lambent_http::serve(listener, app, limits, async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            })
            .await
        }));
    }
    lambent_sources::spawn(
        Box::new(lambent_sources::Scheduler::new(
            engine.clone(),
            engine.config().clock.clone(),
        )),
        &engine,
        stopping.clone(),
    );
    // The configured broker and database sources, kept running as configured.
    engine.supervise(
        "source supervisor",
        tokio::spawn(lambent_sources::supervisor::run(engine.clone(), stopping)),
    );
    Ok(RunningNode {
        control_addr: addr,
        http_addr,
        engine,
        stop,
        servers,
    })
}

/// `90s`, `30m`, `12h`, `7d`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// A retention period, or none (`forever`).
#[derive(Debug, Clone, Copy)]
struct Retention(Option<Duration>);

fn parse_retention(s: &str) -> Result<Retention, String> {
    if s == "forever" {
        return Ok(Retention(None));
    }
    parse_duration(s).map(|d| Retention(Some(d)))
}

/// Raises the soft open-file limit to the hard one (service managers often start
/// processes at 1024); returns the limit in force.
fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

pub async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn parse_keep_alive(s: &str) -> Result<Arc<dyn KeepAlivePolicy>, String> {
    parse_policy(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_and_windows_parse_with_units_or_forever() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("d").is_err());
        assert!(matches!(parse_retention("forever"), Ok(Retention(None))));
        assert!(matches!(parse_retention("1h"), Ok(Retention(Some(d))) if d.as_secs() == 3600));
    }
}
