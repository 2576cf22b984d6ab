//! `lambent`: run a node, and drive one through its control API.

mod client;
mod commands;
mod manifest;
mod package;
mod serve;
mod simulate;
mod source_commands;
mod up;

use clap::{Args, Parser, Subcommand};

/// mimalloc: the ingest path allocates per request, and glibc's malloc showed up as
/// ~15% of a node's CPU under load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "lambent",
    version,
    about = "Self-hosted event-driven serverless functions"
)]
struct Cli {
    /// Control API of the node to talk to.
    /// [default: http://127.0.0.1:9000]
    #[arg(long, global = true, env = "LAMBENT_URL")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the control API, the HTTP routes, the dispatcher, the sources.
    Serve(serve::ServeArgs),
    /// Run an app: start a node, apply DIR/lambent.toml (only what differs), serve.
    Up(up::UpArgs),
    /// Create a function or deploy a new version of it.
    Deploy(DeployArgs),
    /// Call a function (synchronously unless --async).
    Invoke {
        name: String,
        /// The payload: JSON text, or @FILE.
        #[arg(long)]
        data: Option<String>,
        /// Queue the call (retried and dead-lettered like an event) instead of waiting.
        #[arg(long = "async")]
        is_async: bool,
        /// Print the invocation's captured output to stderr.
        #[arg(long)]
        log: bool,
    },
    /// Publish events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Listener registrations: event pattern → functions.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Timer events: cron, rate, or one time.
    #[command(subcommand)]
    Schedules(source_commands::SchedulesCommand),
    /// HTTP routes on the data-plane listener.
    #[command(subcommand)]
    Routes(source_commands::RoutesCommand),
    /// Broker and database sources: NATS, JetStream, MQTT, PostgreSQL.
    #[command(subcommand)]
    Sources(source_commands::SourcesCommand),
    /// The built-in key-value store (its writes are data-change events).
    #[command(subcommand)]
    Kv(source_commands::KvCommand),
    /// API tokens (admin scope needed).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// List functions.
    Ls,
    /// Delete a function.
    Rm { name: String },
    /// Recent invocations, of one function or all.
    Invocations {
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A function's captured output, invocation by invocation.
    Logs {
        name: String,
        /// Keep printing new invocations as they finish.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Dead letters: list and redrive.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Delivery counts and warm instances of the node.
    Status,
    /// Replay an invocation trace through keep-alive policies (no node needed).
    Simulate(simulate::SimulateArgs),
}

#[derive(Args)]
struct DeployArgs {
    name: String,
    /// python3.x, nodejs*, provided (required on create).
    #[arg(long)]
    runtime: Option<String>,
    /// A directory (zipped for upload) or a .zip file.
    #[arg(long)]
    code: Option<PathBuf>,
    /// module.function
    #[arg(long)]
    handler: Option<String>,
    #[arg(long)]
    memory: Option<u32>,
    /// Seconds.
    #[arg(long)]
    timeout: Option<u32>,
    /// KEY=VALUE, repeatable.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[arg(long)]
    concurrency: Option<u32>,
    /// Attempts per delivery, the first included.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Seconds after which an undelivered event is dead-lettered.
    #[arg(long)]
    max_event_age: Option<u64>,
    /// Base of the exponential retry backoff, in milliseconds.
    #[arg(long)]
    retry_delay_ms: Option<u64>,
    #[arg(long)]
    description: Option<String>,
    /// A capability beyond the sandbox's defaults, repeatable: `net`, `net:HOST[:PORT]`
    /// (outbound network), `kv:NAMESPACE` (the key-value store), `publish:TYPE` (events).
    #[arg(long = "grant")]
    grants: Vec<String>,
    /// Remove every grant.
    #[arg(long, conflicts_with = "grants")]
    no_grants: bool,
    /// A function that gets the failure record of each asynchronous event this one
    /// gives up on ("" removes it).
    #[arg(long)]
    on_failure: Option<String>,
    /// This function's keep-alive policy instead of the node's: `fixed:10m`,
    /// `histogram`, `mdp`, `mdp:cost-ratio=R` ("" returns to the node's).
    #[arg(long)]
    keep_alive: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Publish one event (acknowledged once it is durable).
    Put {
        #[arg(long = "type")]
        ty: String,
        #[arg(long, default_value = "lambent/cli")]
        source: String,
        #[arg(long)]
        subject: Option<String>,
        /// JSON text, or @FILE.
        #[arg(long)]
        data: Option<String>,
        /// Event id (default: a fresh UUID). Re-using one is de-duplicated.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Register a listener: events matching PATTERN go to every --target.
    Add {
        name: String,
        /// An EventBridge-style pattern, e.g. '{"type": ["user_action"]}'.
        #[arg(long)]
        pattern: String,
        #[arg(long = "target", required = true, num_args = 1..)]
        targets: Vec<String>,
    },
    Ls,
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Make a token; it is printed once and only its hash is kept.
    Create {
        /// admin, publish (events), invoke (functions) or read (everything readable).
        #[arg(long)]
        scope: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    Ls,
    /// Revoke a token by id (`tok_...`): it stops working at once.
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    Ls {
        name: Option<String>,
    },
    /// Deliver dead letters again with fresh attempts.
    Redrive {
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// With --all: only this function's.
        #[arg(long)]
        function: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    // The sandbox launcher is this binary re-executed: it must run before any thread
    // (tokio's) exists.
    lambent_runtime_process::sandbox::run_if_launcher(std::env::args_os().skip(1));
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    // clap does not always carry a global argument's environment value up from a
    // subcommand with arguments of its own: read it here.
    cli.server = cli
        .server
        .or_else(|| std::env::var("LAMBENT_URL").ok().filter(|s| !s.is_empty()));
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Up(args) => up::run(cli.server, args).await,
        Command::Simulate(args) => tokio::task::spawn_blocking(move || simulate::run(args))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the simulation failed: {e}"))),
        other => {
            let server = cli.server.as_deref().unwrap_or("http://127.0.0.1:9000");
            commands::run(client::Client::new(server), other).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
