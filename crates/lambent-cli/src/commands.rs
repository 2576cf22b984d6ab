//! The client commands: each turns its arguments into one or two API calls and
//! prints the answer for people.

use crate::client::Client;
use crate::{Command, DeployArgs, DlqCommand, EventsCommand, RulesCommand, TokensCommand, package};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

/// `--data` text, or the contents of @FILE.
fn data_arg(data: Option<String>) -> Result<Option<Vec<u8>>> {
    match data {
        None => Ok(None),
        Some(s) => match s.strip_prefix('@') {
            Some(file) => std::fs::read(file)
                .map(Some)
                .with_context(|| format!("cannot read {file}")),
            None => Ok(Some(s.into_bytes())),
        },
    }
}

pub async fn run(client: Client, command: Command) -> Result<()> {
    match command {
        Command::Serve(_) | Command::Up(_) | Command::Simulate(_) => {
            bail!("this command runs a node; it is not a client command")
        }
        Command::Schedules(c) => crate::source_commands::schedules(&client, c).await,
        Command::Routes(c) => crate::source_commands::routes(&client, c).await,
        Command::Kv(c) => crate::source_commands::kv(&client, c).await,
        Command::Sources(c) => crate::source_commands::sources(&client, c).await,
        Command::Deploy(args) => deploy(&client, args).await,
        Command::Invoke {
            name,
            data,
            is_async,
            log,
        } => invoke(&client, &name, data, is_async, log).await,
        Command::Events(EventsCommand::Put {
            ty,
            source,
            subject,
            data,
            id,
        }) => {
            let mut event = json!({
                "specversion": "1.0",
                "id": id.unwrap_or_else(new_id),
                "source": source,
                "type": ty,
            });
            if let Some(subject) = subject {
                event["subject"] = json!(subject);
            }
            if let Some(bytes) = data_arg(data)? {
                let value: Value = serde_json::from_slice(&bytes).context("--data must be JSON")?;
                event["datacontenttype"] = json!("application/json");
                event["data"] = value;
            }
            let rb = client
                .request(Method::POST, "/v1/events")
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string());
            let answer = client.json(rb).await?;
            for r in answer["results"].as_array().into_iter().flatten() {
                match r["status"].as_str() {
                    Some("duplicate") => println!(
                        "{} duplicate (already published; not delivered again)",
                        r["id"].as_str().unwrap_or("")
                    ),
                    _ => println!(
                        "{} accepted, {} deliveries",
                        r["id"].as_str().unwrap_or(""),
                        r["deliveries"]
                    ),
                }
            }
            Ok(())
        }
        Command::Rules(RulesCommand::Add {
            name,
            pattern,
            targets,
        }) => {
            let pattern: Value =
                serde_json::from_str(&pattern).context("--pattern must be JSON")?;
            let rb = client
                .request(Method::POST, "/v1/rules")
                .json(&json!({"name": name, "pattern": pattern, "targets": targets}));
            client.json(rb).await?;
            println!("rule {name} → {}", targets.join(", "));
            Ok(())
        }
        Command::Tokens(TokensCommand::Create { scope, name }) => {
            let rb = client
                .request(Method::POST, "/v1/tokens")
                .json(&json!({"scope": scope, "name": name}));
            let v = client.json(rb).await?;
            eprintln!(
                "token {} ({}) made; it is shown once:",
                v["id"].as_str().unwrap_or(""),
                v["scope"].as_str().unwrap_or("")
            );
            println!("{}", v["token"].as_str().unwrap_or(""));
            Ok(())
        }
        Command::Tokens(TokensCommand::Ls) => {
            let v = client
                .json(client.request(Method::GET, "/v1/tokens"))
                .await?;
            for t in v["tokens"].as_array().into_iter().flatten() {
                let state = match t["revoked_ms"].as_i64() {
                    Some(ms) => format!("revoked {}", lambent_store::ms_to_rfc3339(ms)),
                    None => "live".into(),
                };
                println!(
                    "{:<18} {:<8} {:<30} {}",
                    t["id"].as_str().unwrap_or(""),
                    t["scope"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    state
                );
            }
            Ok(())
        }
        Command::Tokens(TokensCommand::Revoke { id }) => {
            client
                .json(client.request(Method::DELETE, &format!("/v1/tokens/{id}")))
                .await?;
            println!("token {id} revoked");
            Ok(())
        }
        Command::Rules(RulesCommand::Ls) => {
            let v = client
                .json(client.request(Method::GET, "/v1/rules"))
                .await?;
            for r in v["rules"].as_array().into_iter().flatten() {
                let targets: Vec<&str> = r["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<24} {} → {}",
                    r["name"].as_str().unwrap_or(""),
                    r["pattern"],
                    targets.join(", ")
                );
            }
            Ok(())
        }
        Command::Rules(RulesCommand::Rm { name }) => {
            client
                .json(client.request(Method::DELETE, &format!("/v1/rules/{name}")))
                .await?;
            println!("rule {name} removed");
            Ok(())
        }
        Command::Ls => {
            let v = client
                .json(client.request(Method::GET, "/v1/functions"))
                .await?;
            println!(
                "{:<24} {:>7} {:<12} {:<32} {:>6} {:>7}",
                "NAME", "VERSION", "RUNTIME", "HANDLER", "MEM", "TIMEOUT"
            );
            for f in v["functions"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>7} {:<12} {:<32} {:>6} {:>6}s",
                    f["name"].as_str().unwrap_or(""),
                    f["version"].to_string(),
                    f["runtime"].as_str().unwrap_or(""),
                    f["handler"].as_str().unwrap_or(""),
                    f["memory_mb"].to_string(),
                    f["timeout_s"].to_string()
                );
            }
            Ok(())
        }
        Command::Rm { name } => {
            client
                .json(client.request(Method::DELETE, &format!("/v1/functions/{name}")))
                .await?;
            println!("function {name} removed");
            Ok(())
        }
        Command::Invocations { name, limit } => {
            let rows = invocations(&client, name.as_deref(), 0, limit, true).await?;
            println!(
                "{:<24} {:<24} {:>4} {:>7} {:>10} {:<5} {:<15} REQUEST",
                "STARTED", "FUNCTION", "VER", "ATTEMPT", "DURATION", "COLD", "OUTCOME"
            );
            for r in rows {
                println!(
                    "{:<24} {:<24} {:>4} {:>7} {:>8.1}ms {:<5} {:<15} {}",
                    r["started"].as_str().unwrap_or(""),
                    r["function"].as_str().unwrap_or(""),
                    r["version"].to_string(),
                    r["attempt"].to_string(),
                    r["duration_us"].as_f64().unwrap_or(0.0) / 1000.0,
                    r["cold"].to_string(),
                    r["outcome"].as_str().unwrap_or(""),
                    r["request_id"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Logs {
            name,
            follow,
            limit,
        } => logs(&client, &name, follow, limit).await,
        Command::Dlq(DlqCommand::Ls { name }) => {
            let path = match &name {
                Some(n) => format!("/v1/dlq?function={n}"),
                None => "/v1/dlq".into(),
            };
            let v = client.json(client.request(Method::GET, &path)).await?;
            println!(
                "{:>8} {:<20} {:<36} {:>8} {:<14} LAST ERROR",
                "ID", "FUNCTION", "EVENT", "ATTEMPTS", "LIMIT"
            );
            for d in v["dead_letters"].as_array().into_iter().flatten() {
                println!(
                    "{:>8} {:<20} {:<36} {:>8} {:<14} {}",
                    d["delivery_id"].to_string(),
                    d["function"].as_str().unwrap_or(""),
                    d["event_id"].as_str().unwrap_or(""),
                    d["attempts"].to_string(),
                    d["reason"].as_str().unwrap_or(""),
                    d["last_error"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Dlq(DlqCommand::Redrive { ids, all, function }) => {
            if ids.is_empty() && !all {
                bail!("give dead-letter ids, or --all");
            }
            let body = json!({"ids": ids, "all": all, "function": function});
            let v = client
                .json(client.request(Method::POST, "/v1/dlq/redrive").json(&body))
                .await?;
            println!("redriven: {}", v["redriven"]);
            Ok(())
        }
        Command::Status => {
            let v = client
                .json(client.request(Method::GET, "/v1/status"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
    }
}

fn new_id() -> String {
    // Time plus randomness is unique enough for CLI-published events.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

async fn deploy(client: &Client, args: DeployArgs) -> Result<()> {
    let mut body = json!({ "name": args.name });
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body[k] = v;
        }
    };
    set("runtime", args.runtime.map(Value::from));
    set("handler", args.handler.map(Value::from));
    set("memory_mb", args.memory.map(Value::from));
    set("timeout_s", args.timeout.map(Value::from));
    set("concurrency", args.concurrency.map(Value::from));
    set("max_attempts", args.max_attempts.map(Value::from));
    set("max_event_age_s", args.max_event_age.map(Value::from));
    set("retry_base_delay_ms", args.retry_delay_ms.map(Value::from));
    set("description", args.description.map(Value::from));
    set("on_failure", args.on_failure.map(Value::from));
    set("keep_alive", args.keep_alive.map(Value::from));
    if !args.grants.is_empty() || args.no_grants {
        set("grants", Some(json!(args.grants)));
    }
    if !args.env.is_empty() {
        set(
            "env",
            Some(json!(
                args.env
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
            )),
        );
    }
    if let Some(path) = &args.code {
        let zip = package::read_code(path)?;
        eprintln!("uploading {} ({} bytes zipped)", path.display(), zip.len());
        set(
            "code_zip_base64",
            Some(Value::from(
                base64::engine::general_purpose::STANDARD.encode(zip),
            )),
        );
    }
    let v = client
        .json(
            client
                .request(Method::PUT, &format!("/v1/functions/{}", args.name))
                .json(&body),
        )
        .await?;
    println!(
        "deployed {} version {} ({}, {})",
        v["name"].as_str().unwrap_or(""),
        v["version"],
        v["runtime"].as_str().unwrap_or(""),
        v["code_sha256"]
            .as_str()
            .unwrap_or("")
            .get(..12)
            .unwrap_or("")
    );
    Ok(())
}

async fn invoke(
    client: &Client,
    name: &str,
    data: Option<String>,
    is_async: bool,
    log: bool,
) -> Result<()> {
    let payload = data_arg(data)?.unwrap_or_else(|| b"{}".to_vec());
    let path = if is_async {
        format!("/v1/functions/{name}/invoke?async=true")
    } else {
        format!("/v1/functions/{name}/invoke")
    };
    let resp = client
        .send(client.request(Method::POST, &path).body(payload))
        .await?;
    if is_async {
        let v: Value = resp.json().await?;
        println!("queued: event {}", v["event_id"].as_str().unwrap_or(""));
        return Ok(());
    }
    let failed = resp.headers().contains_key("x-lambent-function-error");
    let logs = resp
        .headers()
        .get("x-lambent-log-result")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
    let body = resp.bytes().await?;
    if log && let Some(logs) = logs {
        eprint!("{}", String::from_utf8_lossy(&logs));
    }
    println!("{}", String::from_utf8_lossy(&body));
    if failed {
        bail!("the function failed");
    }
    Ok(())
}

async fn invocations(
    client: &Client,
    name: Option<&str>,
    after: i64,
    limit: usize,
    tail: bool,
) -> Result<Vec<Value>> {
    let mut path = format!("/v1/invocations?after={after}&limit={limit}&tail={tail}");
    if let Some(n) = name {
        path.push_str(&format!("&function={n}"));
    }
    let v = client.json(client.request(Method::GET, &path)).await?;
    Ok(v["invocations"].as_array().cloned().unwrap_or_default())
}

async fn logs(client: &Client, name: &str, follow: bool, limit: usize) -> Result<()> {
    let mut after = 0;
    let mut rows = invocations(client, Some(name), 0, limit, true).await?;
    loop {
        for r in &rows {
            after = after.max(r["seq"].as_i64().unwrap_or(0));
            let error = match r["error_type"].as_str() {
                Some(t) => format!(" {t}: {}", r["error_message"].as_str().unwrap_or("")),
                None => String::new(),
            };
            println!(
                "--- {} {} v{} attempt {} {}{}{}",
                r["started"].as_str().unwrap_or(""),
                r["request_id"].as_str().unwrap_or(""),
                r["version"],
                r["attempt"],
                r["outcome"].as_str().unwrap_or(""),
                if r["cold"].as_bool() == Some(true) {
                    " (cold start)"
                } else {
                    ""
                },
                error
            );
            print!("{}", r["logs"].as_str().unwrap_or(""));
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        rows = invocations(client, Some(name), after, 1000, false).await?;
    }
}
