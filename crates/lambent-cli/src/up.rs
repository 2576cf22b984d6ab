//! `lambent up [DIR]`: apply `DIR/lambent.toml` to a node: an embedded one, which it
//! then serves, or the one `--server` (or `LAMBENT_URL`) names. Only differences are applied: a second `up` of
//! the same app changes nothing.

use crate::client::Client;
use crate::manifest::{FunctionEntry, Loaded};
use crate::{package, serve};
use anyhow::{Context, Result};
use base64::Engine as _;
use clap::Args;
use lambent_core::function::{DEFAULT_CONCURRENCY, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct UpArgs {
    /// The app's directory (holding lambent.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
    #[command(flatten)]
    serve: serve::ServeArgs,
}

/// What applying did, entry by entry.
#[derive(Debug, Default)]
struct Applied {
    changed: Vec<String>,
    unchanged: usize,
}

impl Applied {
    fn note(&mut self, what: String, changed: bool) {
        if changed {
            println!("  {what}");
            self.changed.push(what);
        } else {
            self.unchanged += 1;
        }
    }
}

pub async fn run(server: Option<String>, args: UpArgs) -> Result<()> {
    let app = Loaded::load(&args.dir)?;
    // With --server (or LAMBENT_URL): apply to that node and return.
    if let Some(server) = server {
        return apply(&Client::new(&server), &app).await;
    }
    serve::init_logging();
    let node = serve::start(&args.serve).await?;
    let client = Client::new(&format!("http://{}", node.control_addr));
    let applied = apply(&client, &app).await;
    if let Err(e) = applied {
        node.stop(Duration::from_secs(1)).await?;
        return Err(e);
    }
    println!(
        "lambent: serving {} (routes on http://{}); Ctrl-C stops",
        app.path.display(),
        node.http_addr
    );
    serve::shutdown().await;
    node.stop(Duration::from_secs(args.serve.shutdown_grace))
        .await
}

async fn apply(client: &Client, app: &Loaded) -> Result<()> {
    let m = &app.manifest;
    let mut applied = Applied::default();
    println!("applying {}", app.path.display());

    let namespaces = client
        .json(client.request(Method::GET, "/v1/namespaces"))
        .await?;
    for (name, entry) in &m.kv {
        let want = json!({"name": name, "put_type": entry.get_ref().put_type, "delete_type": entry.get_ref().delete_type});
        let same = namespaces["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| *n == want);
        if !same {
            client
                .json(client.request(Method::POST, "/v1/namespaces").json(&want))
                .await
                .map_err(|e| app.error_at(entry.span(), &format!("kv.{name}"), e))?;
        }
        applied.note(format!("kv namespace {name}"), !same);
    }

    for (name, entry) in &m.functions {
        let section = format!("functions.{name}");
        let before = client
            .send(client.request(Method::GET, &format!("/v1/functions/{name}")))
            .await
            .ok();
        let before = match before {
            Some(r) => r.json::<Value>().await.ok(),
            None => None,
        };
        let body = deploy_body(app, name, entry.get_ref())
            .map_err(|e| app.error_at(entry.span(), &section, e))?;
        let after = client
            .json(
                client
                    .request(Method::PUT, &format!("/v1/functions/{name}"))
                    .json(&body),
            )
            .await
            .map_err(|e| app.error_at(entry.span(), &section, e))?;
        let changed = before.is_none_or(|b| b["version"] != after["version"]);
        applied.note(
            format!("function {name} version {}", after["version"]),
            changed,
        );
    }

    let rules = client
        .json(client.request(Method::GET, "/v1/rules"))
        .await?;
    for (name, entry) in &m.rules {
        let want = json!({
            "name": name,
            "pattern": serde_json::to_value(&entry.get_ref().pattern)?,
            "targets": entry.get_ref().targets,
        });
        let same = rules["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| *r == want);
        if !same {
            client
                .json(client.request(Method::POST, "/v1/rules").json(&want))
                .await
                .map_err(|e| app.error_at(entry.span(), &format!("rules.{name}"), e))?;
        }
        applied.note(format!("rule {name}"), !same);
    }

    let schedules = client
        .json(client.request(Method::GET, "/v1/schedules"))
        .await?;
    for (name, entry) in &m.schedules {
        let want = json!(app.schedule(name, entry.get_ref())?);
        let same = schedules["schedules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                want.as_object()
                    .into_iter()
                    .flatten()
                    .all(|(k, v)| s.get(k) == Some(v))
                    && ["cron", "rate", "at", "timezone", "target", "data"]
                        .iter()
                        .all(|k| s.get(*k).is_none_or(Value::is_null) == want.get(*k).is_none())
            });
        if !same {
            client
                .json(client.request(Method::POST, "/v1/schedules").json(&want))
                .await
                .map_err(|e| app.error_at(entry.span(), &format!("schedules.{name}"), e))?;
        }
        applied.note(format!("schedule {name}"), !same);
    }

    let routes = client
        .json(client.request(Method::GET, "/v1/routes"))
        .await?;
    for (i, entry) in m.routes.iter().enumerate() {
        let (spec, _) = entry.get_ref().clone().validate()?;
        let want = json!(spec);
        let same = routes["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| *r == want);
        if !same {
            client
                .json(client.request(Method::POST, "/v1/routes").json(&want))
                .await
                .map_err(|e| app.error_at(entry.span(), &format!("routes[{i}]"), e))?;
        }
        applied.note(format!("route {}", spec.key()), !same);
    }

    let sources = client
        .json(client.request(Method::GET, "/v1/sources"))
        .await?;
    for (name, entry) in &m.sources {
        let want = json!(entry.get_ref().spec(name));
        let same = sources["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                let mut s = s.clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("status");
                }
                s == want
            });
        if !same {
            client
                .json(client.request(Method::POST, "/v1/sources").json(&want))
                .await
                .map_err(|e| app.error_at(entry.span(), &format!("sources.{name}"), e))?;
        }
        applied.note(format!("source {name}"), !same);
    }

    println!(
        "applied: {} changed, {} unchanged",
        applied.changed.len(),
        applied.unchanged
    );
    Ok(())
}

/// The whole configuration of a function: what the file leaves out is the default,
/// so removing a line from the file resets it.
fn deploy_body(app: &Loaded, name: &str, f: &FunctionEntry) -> Result<Value> {
    let code = app.dir.join(&f.code);
    let zip = package::read_code(&code).with_context(|| format!("code: {}", code.display()))?;
    let retry = lambent_core::RetryPolicy::default();
    Ok(json!({
        "name": name,
        "runtime": f.runtime,
        "handler": f.handler,
        "memory_mb": f.memory.unwrap_or(DEFAULT_MEMORY_MB),
        "timeout_s": f.timeout.unwrap_or(DEFAULT_TIMEOUT_S),
        "concurrency": f.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        "env": f.env,
        "grants": f.grants,
        "description": f.description,
        "max_attempts": f.max_attempts.unwrap_or(retry.max_attempts),
        "max_event_age_s": f.max_event_age.unwrap_or(retry.max_event_age_s),
        "retry_base_delay_ms": f.retry_delay_ms.unwrap_or(retry.base_delay_ms),
        "code_zip_base64": base64::engine::general_purpose::STANDARD.encode(zip),
    }))
}
