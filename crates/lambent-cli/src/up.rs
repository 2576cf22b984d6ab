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
    /// Also delete what the node has and the file does not name: sources, routes,
    /// schedules and rules, then functions (KV namespaces and their data stay).
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    serve: serve::ServeArgs,
}

/// What applying did, entry by entry.
#[derive(Debug, Default)]
struct Applied {
    changed: Vec<String>,
    unchanged: usize,
    removed: usize,
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

    fn removed(&mut self, what: String) {
        println!("  removed {what}");
        self.removed += 1;
    }
}

pub async fn run(server: Option<String>, args: UpArgs) -> Result<()> {
    let app = Loaded::load(&args.dir)?;
    // With --server (or LAMBENT_URL): apply to that node and return.
    if let Some(server) = server {
        return apply(&Client::new(&server), &app, args.prune).await;
    }
    serve::init_logging();
    let node = serve::start(&args.serve).await?;
    let client = Client::new(&format!("http://{}", node.control_addr));
    let applied = apply(&client, &app, args.prune).await;
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

/// Fields a listing adds to what was written (a schedule's position, a source's state).
const REPORTED: &[&str] = &["fired", "last_fired", "next", "status"];

/// Whether a listed entry is `want`: the same fields, but for reported ones and
/// fields absent from `want` that the listing shows as null.
fn same_entry(listed: &Value, want: &Value) -> bool {
    let (Some(listed), Some(want)) = (listed.as_object(), want.as_object()) else {
        return false;
    };
    want.iter().all(|(k, v)| listed.get(k) == Some(v))
        && listed
            .iter()
            .all(|(k, v)| want.contains_key(k) || v.is_null() || REPORTED.contains(&k.as_str()))
}

/// One kind of entry the manifest declares and the node lists at `path`.
struct Collection<'a> {
    client: &'a Client,
    path: &'static str,
    listing: Value,
}

impl<'a> Collection<'a> {
    async fn read(client: &'a Client, path: &'static str) -> Result<Self> {
        let listing = client.json(client.request(Method::GET, path)).await?;
        Ok(Self {
            client,
            path,
            listing,
        })
    }

    /// Posts `want` unless the node has it already; says whether it changed anything.
    async fn ensure(&self, want: &Value) -> Result<bool> {
        let key = self.path.trim_start_matches("/v1/");
        let same = self.listing[key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|listed| same_entry(listed, want));
        if !same {
            self.client
                .json(self.client.request(Method::POST, self.path).json(want))
                .await?;
        }
        Ok(!same)
    }
}

async fn apply(client: &Client, app: &Loaded, prune: bool) -> Result<()> {
    let m = &app.manifest;
    let mut applied = Applied::default();
    println!("applying {}", app.path.display());

    let namespaces = Collection::read(client, "/v1/namespaces").await?;
    for (name, entry) in &m.kv {
        let e = entry.get_ref();
        let want = json!({"name": name, "put_type": e.put_type, "delete_type": e.delete_type});
        let changed = namespaces
            .ensure(&want)
            .await
            .map_err(|e| app.error_at(entry.span(), &format!("kv.{name}"), e))?;
        applied.note(format!("kv namespace {name}"), changed);
    }

    // A function's on-failure destination must exist first.
    let mut functions: Vec<_> = m.functions.iter().collect();
    functions.sort_by_key(|(_, entry)| entry.get_ref().on_failure.is_some());
    for (name, entry) in functions {
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
        // An unchanged deploy returns the version it already had.
        let changed = before.is_none_or(|b| b["version"] != after["version"]);
        applied.note(
            format!("function {name} version {}", after["version"]),
            changed,
        );
    }

    let rules = Collection::read(client, "/v1/rules").await?;
    for (name, entry) in &m.rules {
        let want = json!({
            "name": name,
            "pattern": serde_json::to_value(&entry.get_ref().pattern)?,
            "targets": entry.get_ref().targets,
        });
        let changed = rules
            .ensure(&want)
            .await
            .map_err(|e| app.error_at(entry.span(), &format!("rules.{name}"), e))?;
        applied.note(format!("rule {name}"), changed);
    }

    let schedules = Collection::read(client, "/v1/schedules").await?;
    for (name, entry) in &m.schedules {
        let want = json!(app.schedule(name, entry.get_ref())?);
        let changed = schedules
            .ensure(&want)
            .await
            .map_err(|e| app.error_at(entry.span(), &format!("schedules.{name}"), e))?;
        applied.note(format!("schedule {name}"), changed);
    }

    let routes = Collection::read(client, "/v1/routes").await?;
    for (i, entry) in m.routes.iter().enumerate() {
        let (spec, _) = entry.get_ref().clone().validate()?;
        let changed = routes
            .ensure(&json!(spec))
            .await
            .map_err(|e| app.error_at(entry.span(), &format!("routes[{i}]"), e))?;
        applied.note(format!("route {}", spec.key()), changed);
    }

    let sources = Collection::read(client, "/v1/sources").await?;
    for (name, entry) in &m.sources {
        let changed = sources
            .ensure(&json!(entry.get_ref().spec(name)))
            .await
            .map_err(|e| app.error_at(entry.span(), &format!("sources.{name}"), e))?;
        applied.note(format!("source {name}"), changed);
    }

    if prune {
        remove_the_rest(client, app, &mut applied).await?;
    }
    println!(
        "applied: {} changed, {} unchanged{}",
        applied.changed.len(),
        applied.unchanged,
        if prune {
            format!(", {} removed", applied.removed)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Deletes each entry listed at `/v1/{collection}` (by name) that `named` does not
/// hold, noting it as a removed `kind`.
async fn remove_unnamed(
    client: &Client,
    applied: &mut Applied,
    collection: &str,
    kind: &str,
    named: impl Fn(&str) -> bool,
) -> Result<()> {
    let listing = client
        .json(client.request(Method::GET, &format!("/v1/{collection}")))
        .await?;
    let names = listing[collection]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str());
    for name in names.filter(|name| !named(name)) {
        client
            .send(client.request(Method::DELETE, &format!("/v1/{collection}/{name}")))
            .await?;
        applied.removed(format!("{kind} {name}"));
    }
    Ok(())
}

/// Deletes what the node has and the manifest does not name: what points at
/// functions first (sources, routes, schedules, rules), then the functions.
async fn remove_the_rest(client: &Client, app: &Loaded, applied: &mut Applied) -> Result<()> {
    let m = &app.manifest;
    remove_unnamed(client, applied, "sources", "source", |n| {
        m.sources.contains_key(n)
    })
    .await?;
    let wanted: Vec<(String, String)> = m
        .routes
        .iter()
        .map(|entry| {
            let (spec, _) = entry.get_ref().clone().validate()?;
            Ok((spec.method, spec.path))
        })
        .collect::<Result<_>>()?;
    let routes = client
        .json(client.request(Method::GET, "/v1/routes"))
        .await?;
    for route in routes["routes"].as_array().into_iter().flatten() {
        let (Some(method), Some(path)) = (route["method"].as_str(), route["path"].as_str()) else {
            continue;
        };
        if !wanted.iter().any(|(m, p)| m == method && p == path) {
            client
                .send(
                    client
                        .request(Method::DELETE, "/v1/routes")
                        .query(&[("method", method), ("path", path)]),
                )
                .await?;
            applied.removed(format!("route {method} {path}"));
        }
    }
    remove_unnamed(client, applied, "schedules", "schedule", |n| {
        m.schedules.contains_key(n)
    })
    .await?;
    remove_unnamed(client, applied, "rules", "rule", |n| {
        m.rules.contains_key(n)
    })
    .await?;
    remove_unnamed(client, applied, "functions", "function", |n| {
        m.functions.contains_key(n)
    })
    .await
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
        "on_failure": f.on_failure.clone().unwrap_or_default(),
        "keep_alive": f.keep_alive.clone().unwrap_or_default(),
        "code_zip_base64": base64::engine::general_purpose::STANDARD.encode(zip),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_entry_matches_what_was_written_but_not_a_changed_one() {
        let want = json!({"name": "tick", "cron": "* * * * * *", "type": "t"});
        let listed = json!({"name": "tick", "cron": "* * * * * *", "type": "t",
            "fired": 3, "last_fired": "2026-01-01T00:00:00Z", "next": null, "target": null});
        assert!(same_entry(&listed, &want));
        let changed = json!({"name": "tick", "cron": "*/5 * * * * *", "type": "t"});
        assert!(!same_entry(&listed, &changed));
        // A field the node has that the file no longer names is a change.
        let extra = json!({"name": "tick", "cron": "* * * * * *", "type": "t", "target": "f"});
        assert!(!same_entry(&extra, &want));
    }
}
