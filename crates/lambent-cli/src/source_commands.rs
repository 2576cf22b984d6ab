//! Commands of the sources: schedules, HTTP routes, the key-value store.

use crate::client::Client;
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum SchedulesCommand {
    /// Publish an event of --type at each nominal time (to --target, and to rules).
    Add {
        name: String,
        /// Cron with optional seconds: '*/10 * * * * *', '0 9 * * MON-FRI'.
        #[arg(long, group = "when", required = true)]
        cron: Option<String>,
        /// A fixed rate: '5 minutes', '1 hour'.
        #[arg(long, group = "when")]
        rate: Option<String>,
        /// Once, at an RFC 3339 time (or a local time with --timezone).
        #[arg(long, group = "when")]
        at: Option<String>,
        /// IANA time zone of --cron and a local --at (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long = "type")]
        ty: String,
        #[arg(long)]
        target: Option<String>,
        /// The event's data: JSON text, or @FILE.
        #[arg(long)]
        data: Option<String>,
    },
    Ls,
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum RoutesCommand {
    /// Serve METHOD PATH on the data-plane listener with a function.
    Add {
        /// GET, POST, ... or ANY.
        #[arg(long)]
        method: String,
        /// `/users/{id}`, `/files/{path+}`.
        #[arg(long)]
        path: String,
        #[arg(long)]
        target: String,
        /// sync (the function answers, Lambda Function URL style) or event (202 and a
        /// durable event of --type).
        #[arg(long, default_value = "sync", value_parser = ["sync", "event"])]
        mode: String,
        #[arg(long = "type")]
        ty: Option<String>,
        /// Callable without an API token.
        #[arg(long)]
        public: bool,
    },
    Ls,
    Rm {
        #[arg(long)]
        method: String,
        #[arg(long)]
        path: String,
    },
}

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// Take events from a broker or a database.
    Add {
        name: String,
        /// nats, jetstream, mqtt or postgres.
        #[arg(long, value_parser = ["nats", "jetstream", "mqtt", "postgres"])]
        kind: String,
        /// nats://HOST:PORT, mqtt://HOST:PORT, postgres://USER@HOST:PORT/DB
        #[arg(long)]
        url: String,
        /// NATS subject (JetStream: the stream's subjects).
        #[arg(long)]
        subject: Option<String>,
        /// JetStream stream.
        #[arg(long)]
        stream: Option<String>,
        /// MQTT topic filter.
        #[arg(long)]
        topic: Option<String>,
        /// PostgreSQL table, repeatable.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// The events' type.
        #[arg(long = "type")]
        ty: Option<String>,
        #[arg(long)]
        target: Option<String>,
    },
    /// The sources and how each is doing.
    Ls,
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum KvCommand {
    Get {
        namespace: String,
        key: String,
    },
    /// Write a key (JSON, or text taken as a string); its change is an event.
    Put {
        namespace: String,
        key: String,
        value: String,
        /// Seconds to live.
        #[arg(long)]
        ttl: Option<u64>,
        /// Only if the key is at this revision (0: only if it does not exist).
        #[arg(long)]
        if_revision: Option<u64>,
    },
    Del {
        namespace: String,
        key: String,
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Keys of a namespace, optionally by prefix.
    Ls {
        namespace: String,
        prefix: Option<String>,
    },
    /// Set the event types of a namespace's changes.
    Types {
        namespace: String,
        #[arg(long, default_value = "lambent.kv.put")]
        put_type: String,
        #[arg(long, default_value = "lambent.kv.delete")]
        delete_type: String,
    },
}

/// A key in a URL path: `/` kept (keys are paths), everything else unreserved.
fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn json_arg(text: &str) -> Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        }
        None => text.to_owned(),
    };
    serde_json::from_str(&text).context("expected JSON")
}

pub async fn schedules(client: &Client, command: SchedulesCommand) -> Result<()> {
    match command {
        SchedulesCommand::Add {
            name,
            cron,
            rate,
            at,
            timezone,
            ty,
            target,
            data,
        } => {
            let data = data.map(|d| json_arg(&d)).transpose().context("--data")?;
            let body = json!({
                "name": name, "cron": cron, "rate": rate, "at": at, "timezone": timezone,
                "type": ty, "target": target, "data": data,
            });
            let body: serde_json::Map<String, Value> = body
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            client
                .json(client.request(Method::POST, "/v1/schedules").json(&body))
                .await?;
            println!("schedule {name} added");
        }
        SchedulesCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, "/v1/schedules"))
                .await?;
            for s in v["schedules"].as_array().into_iter().flatten() {
                let when = ["cron", "rate", "at"]
                    .iter()
                    .find_map(|k| s[*k].as_str().map(|w| format!("{k} {w}")))
                    .unwrap_or_default();
                println!(
                    "{:<20} {:<28} type={} target={} fired={} next={}",
                    s["name"].as_str().unwrap_or(""),
                    when,
                    s["type"].as_str().unwrap_or(""),
                    s["target"].as_str().unwrap_or("-"),
                    s["fired"],
                    s["next"].as_str().unwrap_or("-"),
                );
            }
        }
        SchedulesCommand::Rm { name } => {
            client
                .json(client.request(Method::DELETE, &format!("/v1/schedules/{name}")))
                .await?;
            println!("schedule {name} removed");
        }
    }
    Ok(())
}

pub async fn routes(client: &Client, command: RoutesCommand) -> Result<()> {
    match command {
        RoutesCommand::Add {
            method,
            path,
            target,
            mode,
            ty,
            public,
        } => {
            let mut body = json!({
                "method": method, "path": path, "target": target, "mode": mode, "public": public,
            });
            if let Some(ty) = ty {
                body["type"] = json!(ty);
            }
            let v = client
                .json(client.request(Method::POST, "/v1/routes").json(&body))
                .await?;
            println!(
                "route {} {} → {}",
                v["method"].as_str().unwrap_or(""),
                path,
                target
            );
        }
        RoutesCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, "/v1/routes"))
                .await?;
            for r in v["routes"].as_array().into_iter().flatten() {
                println!(
                    "{:<7} {:<32} → {:<20} {}{}{}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or(""),
                    r["target"].as_str().unwrap_or(""),
                    r["mode"].as_str().unwrap_or(""),
                    r["type"]
                        .as_str()
                        .map(|t| format!(" type={t}"))
                        .unwrap_or_default(),
                    if r["public"] == json!(true) {
                        " public"
                    } else {
                        ""
                    },
                );
            }
        }
        RoutesCommand::Rm { method, path } => {
            client
                .json(
                    client
                        .request(Method::DELETE, "/v1/routes")
                        .query(&[("method", &method), ("path", &path)]),
                )
                .await?;
            println!("route {method} {path} removed");
        }
    }
    Ok(())
}

pub async fn kv(client: &Client, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get { namespace, key } => {
            let v = client
                .json(client.request(
                    Method::GET,
                    &format!("/v1/kv/{namespace}/{}", key_path(&key)),
                ))
                .await?;
            println!("{}", v["value"]);
        }
        KvCommand::Put {
            namespace,
            key,
            value,
            ttl,
            if_revision,
        } => {
            // JSON when it parses; otherwise the text is a string.
            let value: Value = serde_json::from_str(&value).unwrap_or(Value::String(value));
            let mut rb = client
                .request(
                    Method::PUT,
                    &format!("/v1/kv/{namespace}/{}", key_path(&key)),
                )
                .json(&value);
            if let Some(ttl) = ttl {
                rb = rb.query(&[("ttl", ttl)]);
            }
            if let Some(r) = if_revision {
                rb = rb.query(&[("if_revision", r)]);
            }
            let v = client.json(rb).await?;
            println!("{namespace}/{key} revision {}", v["revision"]);
        }
        KvCommand::Del {
            namespace,
            key,
            if_revision,
        } => {
            let mut rb = client.request(
                Method::DELETE,
                &format!("/v1/kv/{namespace}/{}", key_path(&key)),
            );
            if let Some(r) = if_revision {
                rb = rb.query(&[("if_revision", r)]);
            }
            let v = client.json(rb).await?;
            println!("{namespace}/{key} deleted (revision {})", v["revision"]);
        }
        KvCommand::Ls { namespace, prefix } => {
            let mut after: Option<String> = None;
            loop {
                let mut rb = client
                    .request(Method::GET, &format!("/v1/kv/{namespace}"))
                    .query(&[("prefix", prefix.clone().unwrap_or_default())]);
                if let Some(a) = &after {
                    rb = rb.query(&[("after", a)]);
                }
                let v = client.json(rb).await?;
                for k in v["keys"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} rev {:<6} {}",
                        k["key"].as_str().unwrap_or(""),
                        k["revision"],
                        k["value"]
                    );
                }
                match v["next_after"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
        }
        KvCommand::Types {
            namespace,
            put_type,
            delete_type,
        } => {
            let body = json!({"name": namespace, "put_type": put_type, "delete_type": delete_type});
            client
                .json(client.request(Method::POST, "/v1/namespaces").json(&body))
                .await?;
            println!("{namespace}: changes are {put_type} / {delete_type} events");
        }
    }
    Ok(())
}

pub async fn sources(client: &Client, command: SourcesCommand) -> Result<()> {
    match command {
        SourcesCommand::Add {
            name,
            kind,
            url,
            subject,
            stream,
            topic,
            tables,
            ty,
            target,
        } => {
            let mut body = json!({"name": name, "kind": kind, "url": url});
            for (key, value) in [
                ("subject", subject),
                ("stream", stream),
                ("topic", topic),
                ("type", ty),
                ("target", target),
            ] {
                if let Some(v) = value {
                    body[key] = json!(v);
                }
            }
            if !tables.is_empty() {
                body["tables"] = json!(tables);
            }
            client
                .json(client.request(Method::POST, "/v1/sources").json(&body))
                .await?;
            println!("source {name} added");
        }
        SourcesCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, "/v1/sources"))
                .await?;
            for s in v["sources"].as_array().into_iter().flatten() {
                let what = ["subject", "topic"]
                    .iter()
                    .find_map(|k| s[*k].as_str().map(str::to_owned))
                    .or_else(|| {
                        s["tables"].as_array().map(|t| {
                            t.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                    })
                    .unwrap_or_default();
                println!(
                    "{:<20} {:<10} {:<32} {:<24} {}",
                    s["name"].as_str().unwrap_or(""),
                    s["kind"].as_str().unwrap_or(""),
                    s["url"].as_str().unwrap_or(""),
                    what,
                    s["status"].as_str().unwrap_or(""),
                );
            }
        }
        SourcesCommand::Rm { name } => {
            client
                .json(client.request(Method::DELETE, &format!("/v1/sources/{name}")))
                .await?;
            println!("source {name} removed");
        }
    }
    Ok(())
}
