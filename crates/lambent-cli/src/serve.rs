//! `lambent serve`: a node on one SQLite file.

use anyhow::{Context, Result, bail};
use clap::Args;
use lambent_engine::keepalive::Fixed;
use lambent_engine::{Engine, EngineConfig};
use lambent_runtime::process::ProcessRuntime;
use lambent_store::{CodeStore, SqliteStore, Stores};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Where the database, code and runtime files live.
    #[arg(long, env = "LAMBENT_DATA_DIR", default_value = "lambent-data")]
    data_dir: PathBuf,
    /// Control API address (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// How long an idle instance stays warm (seconds) before it is dropped.
    #[arg(long, default_value_t = 600)]
    keep_alive: u64,
    /// Largest event accepted, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_event_bytes: usize,
    /// On SIGTERM or Ctrl-C: how long running attempts may take to finish (seconds).
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        // Tokens (DESIGN §8) are not implemented yet; refuse rather than expose the API.
        bail!(
            "refusing to listen on {}: without API tokens the control API may only listen on loopback",
            args.listen
        );
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LAMBENT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Absolute, because runtime processes run with their code directory as cwd.
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let data = &args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving the data directory {}", args.data_dir.display()))?;
    let sqlite = SqliteStore::open(data)
        .with_context(|| format!("opening the store in {}", data.display()))?;
    let stores = Stores {
        registry: Arc::new(sqlite.clone()),
        events: Arc::new(sqlite.clone()),
        invocations: Arc::new(sqlite),
        code: Arc::new(CodeStore::open(data.join("code"))?),
    };
    let runtime = Arc::new(ProcessRuntime::new(data)?);
    let resolving = runtime.clone();
    tokio::spawn(async move { resolving.resolve_interpreters().await });
    let config = EngineConfig {
        max_event_bytes: args.max_event_bytes,
        ..EngineConfig::default()
    };
    let policy = Arc::new(Fixed(Duration::from_secs(args.keep_alive)));
    let engine = Engine::start(config, stores, runtime, policy).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The first line on stdout is the address: scripts and tests read it.
    println!("lambent: control API on http://{addr}");
    tracing::info!(%addr, data_dir = %data.display(), "node started");
    // On a stop signal: the listener stops taking connections (requests in flight
    // finish) while the engine stops starting attempts and lets running ones settle.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let server = {
        let stopping = stopping.clone();
        axum::serve(listener, lambent_api::router(engine.clone()))
            .with_graceful_shutdown(async move { stopping.notified().await })
    };
    let server = tokio::spawn(async move { server.await });
    shutdown().await;
    tracing::info!("stopping: no new work; draining running attempts");
    stopping.notify_one();
    let unfinished = engine.drain(Duration::from_secs(args.shutdown_grace)).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "attempts still running after the grace period; they run again after restart"
        );
    }
    // Requests still open after the grace (a long synchronous invoke) are cut.
    match tokio::time::timeout(Duration::from_secs(args.shutdown_grace), server).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("requests still open after the grace period were cut"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
