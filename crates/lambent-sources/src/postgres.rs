//! PostgreSQL row changes by logical decoding, without Kafka or Debezium: a
//! publication over the chosen tables and a pgoutput replication slot, read over a
//! plain connection with `pg_logical_slot_peek_binary_changes`. The slot is advanced
//! (`pg_replication_slot_advance`) only after the events of the transactions read are
//! durable, so rows changed while Lambent was down are delivered when it starts, and a
//! crash between the two re-reads transactions whose events are then de-duplicated
//! (an event's id is its transaction's commit position and its index in it).

use crate::message::Backoff;
use crate::pgoutput::{self, Decoded, Relations};
use crate::{Source, SourceContext, SourceError};
use async_trait::async_trait;
use lambent_core::CloudEvent;
use lambent_core::source::SourceSpec;
use serde_json::json;
use std::time::Duration;

/// Most changes read per pass (whole transactions are read, so a pass may go over).
const MAX_CHANGES: i32 = 1000;
/// How often an idle source looks for new changes.
const IDLE_POLL: Duration = Duration::from_millis(200);

pub struct Postgres {
    pub spec: SourceSpec,
}

/// Quotes each part of `schema.table` as an identifier (they were validated as plain).
fn quoted_table(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// A PostgreSQL error with the server's own message (tokio-postgres shows only "db error").
fn pg(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting: {}", pg(e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Creates the publication and the slot if they do not exist; refuses a server that
/// cannot decode (`wal_level` below `logical`).
async fn prepare(client: &tokio_postgres::Client, spec: &SourceSpec) -> Result<(), String> {
    let level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(pg)?
        .get(0);
    if level != "logical" {
        return Err(format!(
            "the server's wal_level is `{level}`; logical decoding needs `logical` \
             (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
        ));
    }
    let name = spec.pg_slot();
    let tables: Vec<String> = spec.tables.iter().map(|t| quoted_table(t)).collect();
    let has_publication = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(pg)?
        .is_some();
    // The publication follows the configured tables (a changed list is set again).
    let statement = if has_publication {
        format!("ALTER PUBLICATION {name} SET TABLE {}", tables.join(", "))
    } else {
        format!("CREATE PUBLICATION {name} FOR TABLE {}", tables.join(", "))
    };
    client
        .batch_execute(&statement)
        .await
        .map_err(|e| format!("publication {name}: {}", pg(e)))?;
    let has_slot = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(pg)?
        .is_some();
    if !has_slot {
        client
            .query_one(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&name],
            )
            .await
            .map_err(|e| format!("replication slot {name}: {}", pg(e)))?;
    }
    Ok(())
}

/// One pass: reads up to `MAX_CHANGES` changes, publishes their events, advances the
/// slot past them. Returns how many changes it handled.
async fn pass(
    client: &tokio_postgres::Client,
    spec: &SourceSpec,
    sink: &crate::Sink,
) -> Result<usize, String> {
    let name = spec.pg_slot();
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(
                 $1::text::name, NULL, $2, 'proto_version', '1', 'publication_names', $3::text)",
            &[&name, &MAX_CHANGES, &name],
        )
        .await
        .map_err(|e| format!("reading changes: {}", pg(e)))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut relations = Relations::new();
    let mut events = Vec::new();
    let mut last_commit: Option<String> = None;
    let mut txn: Vec<pgoutput::Change> = Vec::new();
    for row in &rows {
        let lsn: String = row.get(0);
        let data: Vec<u8> = row.get(1);
        match pgoutput::decode(&data)? {
            Decoded::Begin => txn.clear(),
            Decoded::Relation(id, relation) => {
                relations.insert(id, relation);
            }
            Decoded::Change(change) => txn.push(change),
            Decoded::Commit => {
                for (index, change) in txn.drain(..).enumerate() {
                    let Some(relation) = relations.get(&change.relation) else {
                        return Err(format!("a change to unknown relation {}", change.relation));
                    };
                    let table = format!("{}.{}", relation.schema, relation.table);
                    let data = json!({
                        "table": table,
                        "operation": change.operation,
                        "row": change.row.as_ref().map(|r| pgoutput::row_json(relation, r)),
                        "old": change.old.as_ref().map(|r| pgoutput::row_json(relation, r)),
                        "lsn": lsn,
                    });
                    let event = CloudEvent::builder(
                        format!("{lsn}/{index}"),
                        crate::message::event_source(spec),
                        spec.event_type(),
                    )
                    .attr("subject", table)
                    .json_data(data)
                    .build()
                    .map_err(|e| e.to_string())?;
                    events.push(event);
                }
                last_commit = Some(lsn);
            }
            Decoded::Other => {}
        }
    }
    let Some(commit) = last_commit else {
        return Ok(0);
    };
    let handled = events.len();
    for chunk in events.chunks(100) {
        sink.publish_to(chunk.to_vec(), spec.target.as_deref())
            .await
            .map_err(|e| format!("storing events: {e}"))?;
    }
    // Only now: the events are durable.
    client
        .query_one(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&name, &commit],
        )
        .await
        .map_err(|e| format!("advancing the slot: {}", pg(e)))?;
    Ok(handled.max(1))
}

#[async_trait]
impl Source for Postgres {
    fn name(&self) -> String {
        self.spec.name.clone()
    }

    /// Drops the slot (it would hold WAL on the server for ever) and the publication.
    async fn retire(self: Box<Self>) -> Result<(), String> {
        let client = connect(&self.spec.url).await?;
        let name = self.spec.pg_slot();
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(pg)?;
        client
            .batch_execute(&format!("DROP PUBLICATION IF EXISTS {name}"))
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let spec = self.spec;
        let mut backoff = Backoff::default();
        cx.sink.status(&spec.name, "connecting");
        loop {
            let session = async {
                let client = connect(&spec.url).await?;
                prepare(&client, &spec).await?;
                Ok::<_, String>(client)
            };
            let client = tokio::select! {
                c = session => c,
                _ = cx.shutdown.changed() => return Ok(()),
            };
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(source = %spec.name, error = %e, ?delay, "PostgreSQL not ready; retrying");
                    cx.sink.status(&spec.name, format!("reconnecting: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = cx.shutdown.changed() => return Ok(()),
                    }
                }
            };
            cx.sink.status(&spec.name, "connected");
            let sink = cx.sink.clone();
            loop {
                let handled = tokio::select! {
                    h = pass(&client, &spec, &sink) => h,
                    _ = cx.shutdown.changed() => return Ok(()),
                };
                match handled {
                    Ok(0) => {
                        backoff.reset();
                        tokio::select! {
                            _ = tokio::time::sleep(IDLE_POLL) => {}
                            _ = cx.shutdown.changed() => return Ok(()),
                        }
                    }
                    Ok(_) => backoff.reset(),
                    Err(e) => {
                        tracing::warn!(source = %spec.name, error = %e, "reading PostgreSQL changes failed; reconnecting");
                        cx.sink.status(&spec.name, format!("reconnecting: {e}"));
                        break;
                    }
                }
            }
            let delay = backoff.next();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cx.shutdown.changed() => return Ok(()),
            }
        }
    }
}
