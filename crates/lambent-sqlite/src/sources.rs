//! Source state in SQLite: the key-value store, schedules, routes. A write that
//! produces an event appends it (with its deliveries) in the same savepoint.

use crate::events::append;
use crate::{SqliteStore, all_rows, corrupt, sql};
use async_trait::async_trait;
use lambent_core::source::SourceSpec;
use lambent_core::{EpochMs, RouteSpec, ScheduleSpec};
use lambent_store::{
    ChangeEvent, KvChange, KvEntry, KvNamespace, KvOp, KvStore, KvWrite, KvWritten, NewEvent,
    PublishOutcome, Result, RouteStore, ScheduleRecord, ScheduleStore, SourceStore, StoreError,
};
use rusqlite::{Connection, OptionalExtension, params};

/// The next key-value revision: one counter for the whole store, never reused.
fn next_revision(conn: &Connection) -> Result<u64> {
    conn.prepare_cached(
        "INSERT INTO counters (name, value) VALUES ('kv_revision', 1)
         ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
    )
    .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
    .map(|v| v as u64)
    .map_err(sql("taking a key-value revision"))
}

fn decode_value(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt("key-value value", e))
}

fn change_event(event: &ChangeEvent, change: &KvChange) -> Result<NewEvent> {
    event(change).map_err(|detail| StoreError::Corrupt {
        what: "key-value change event",
        detail,
    })
}

/// A key's row: value, revision, expiry.
type KvRow = (String, i64, Option<i64>);

fn current(conn: &Connection, namespace: &str, key: &str) -> Result<Option<KvRow>> {
    conn.prepare_cached(
        "SELECT value, revision, expires_ms FROM kv WHERE namespace = ?1 AND key = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![namespace, key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
    })
    .map_err(sql("reading a key"))
}

/// Removes an expired key with its `expire` event.
fn expire_row(
    conn: &Connection,
    namespace: &str,
    key: &str,
    row: KvRow,
    event: &ChangeEvent,
    now: EpochMs,
) -> Result<()> {
    conn.prepare_cached("DELETE FROM kv WHERE namespace = ?1 AND key = ?2")
        .and_then(|mut s| s.execute(params![namespace, key]))
        .map_err(sql("expiring a key"))?;
    let change = KvChange {
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        operation: "expire",
        value: Some(decode_value(&row.0)?),
        revision: next_revision(conn)?,
        previous_revision: Some(row.1 as u64),
    };
    append(conn, vec![change_event(event, &change)?], now)?;
    Ok(())
}

fn entry_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, i64, i64, Option<i64>)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_entry(row: (String, String, String, i64, i64, Option<i64>)) -> Result<KvEntry> {
    Ok(KvEntry {
        namespace: row.0,
        key: row.1,
        value: decode_value(&row.2)?,
        revision: row.3 as u64,
        updated_ms: row.4,
        expires_ms: row.5,
    })
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<KvEntry>> {
        let (namespace, key, now) = (namespace.to_owned(), key.to_owned(), self.now());
        self.read(move |conn| {
            conn.query_row(
                "SELECT namespace, key, value, revision, updated_ms, expires_ms FROM kv
                 WHERE namespace = ?1 AND key = ?2 AND (expires_ms IS NULL OR expires_ms > ?3)",
                params![namespace, key, now],
                entry_row,
            )
            .optional()
            .map_err(sql("reading a key"))?
            .map(decode_entry)
            .transpose()
        })
        .await
    }

    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>> {
        let (namespace, now) = (namespace.to_owned(), self.now());
        let (prefix, after) = (prefix.to_owned(), after.unwrap_or("").to_owned());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT namespace, key, value, revision, updated_ms, expires_ms FROM kv
                     WHERE namespace = ?1 AND substr(key, 1, length(?2)) = ?2 AND key > ?3
                       AND (expires_ms IS NULL OR expires_ms > ?4)
                     ORDER BY key LIMIT ?5",
                )
                .map_err(sql("listing keys"))?;
            let rows = stmt
                .query_map(
                    params![namespace, prefix, after, now, limit as i64],
                    entry_row,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("listing keys"))?;
            rows.into_iter().map(decode_entry).collect()
        })
        .await
    }

    async fn kv_write(&self, write: KvWrite, event: ChangeEvent) -> Result<KvWritten> {
        let now = self.now();
        self.write_or_refuse(move |conn| {
            let KvWrite {
                namespace,
                key,
                op,
                expect_revision,
            } = write;
            let mut found = current(conn, &namespace, &key)?;
            if let Some(row) = found.take_if(|row| row.2.is_some_and(|at| at <= now)) {
                // Its TTL ran out but the sweep has not removed it yet: it expires now,
                // so its expiry is not lost.
                expire_row(conn, &namespace, &key, row, &event, now)?;
            }
            let current_revision = found.as_ref().map(|row| row.1 as u64);
            if let Some(expected) = expect_revision
                && current_revision.unwrap_or(0) != expected
            {
                return Ok(KvWritten::Conflict {
                    current: current_revision,
                });
            }
            let revision = match (&op, &found) {
                (KvOp::Delete, None) => return Ok(KvWritten::Absent),
                _ => next_revision(conn)?,
            };
            let change = match op {
                KvOp::Put { value, ttl_ms } => {
                    let text = value.to_string();
                    conn.prepare_cached(
                        "INSERT INTO kv (namespace, key, value, revision, updated_ms, expires_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,
                           revision = excluded.revision, updated_ms = excluded.updated_ms,
                           expires_ms = excluded.expires_ms",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            namespace,
                            key,
                            text,
                            revision as i64,
                            now,
                            ttl_ms.map(|t| now.saturating_add(t))
                        ])
                    })
                    .map_err(sql("writing a key"))?;
                    KvChange {
                        namespace,
                        key,
                        operation: "put",
                        value: Some(value),
                        revision,
                        previous_revision: current_revision,
                    }
                }
                KvOp::Delete => {
                    conn.prepare_cached("DELETE FROM kv WHERE namespace = ?1 AND key = ?2")
                        .and_then(|mut s| s.execute(params![namespace, key]))
                        .map_err(sql("deleting a key"))?;
                    let old = found.map(|row| decode_value(&row.0)).transpose()?;
                    KvChange {
                        namespace,
                        key,
                        operation: "delete",
                        value: old,
                        revision,
                        previous_revision: current_revision,
                    }
                }
            };
            let outcome = append(conn, vec![change_event(&event, &change)?], now)?;
            Ok(KvWritten::Done {
                revision,
                event: outcome
                    .into_iter()
                    .next()
                    .unwrap_or(PublishOutcome::Duplicate),
            })
        })
        .await
    }

    async fn kv_expire(&self, max: usize, event: ChangeEvent) -> Result<usize> {
        let now = self.now();
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT namespace, key, value, revision, expires_ms FROM kv
                     WHERE expires_ms IS NOT NULL AND expires_ms <= ?1 ORDER BY expires_ms LIMIT ?2",
                )
                .map_err(sql("finding expired keys"))?;
            let expired = stmt
                .query_map(params![now, max as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, (r.get(2)?, r.get(3)?, r.get(4)?)))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql("finding expired keys"))?;
            for (namespace, key, row) in &expired {
                expire_row(conn, namespace, key, row.clone(), &event, now)?;
            }
            Ok(expired.len())
        })
        .await
    }

    async fn kv_next_expiry(&self) -> Result<Option<EpochMs>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT MIN(expires_ms) FROM kv WHERE expires_ms IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(sql("reading the next expiry"))
        })
        .await
    }

    async fn put_namespace(&self, namespace: KvNamespace) -> Result<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO kv_namespaces (name, put_type, delete_type) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET put_type = excluded.put_type, delete_type = excluded.delete_type",
                params![namespace.name, namespace.put_type, namespace.delete_type],
            )
            .map_err(sql("storing a namespace"))?;
            Ok(())
        })
        .await
    }

    async fn list_namespaces(&self) -> Result<Vec<KvNamespace>> {
        self.read(|conn| {
            all_rows(
                conn,
                "SELECT name, put_type, delete_type FROM kv_namespaces ORDER BY name",
                "listing namespaces",
                |r| {
                    Ok(KvNamespace {
                        name: r.get(0)?,
                        put_type: r.get(1)?,
                        delete_type: r.get(2)?,
                    })
                },
            )
        })
        .await
    }
}

/// Whether two specs fire at the same times (then a replacement keeps its position).
fn same_timer(a: &ScheduleSpec, b: &ScheduleSpec) -> bool {
    (&a.cron, &a.rate, &a.at, &a.timezone) == (&b.cron, &b.rate, &b.at, &b.timezone)
}

fn decode_schedule(row: (String, i64, Option<i64>, i64)) -> Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        spec: serde_json::from_str(&row.0).map_err(|e| corrupt("schedule", e))?,
        anchor_ms: row.1,
        last_nominal_ms: row.2,
        fired: row.3 as u64,
    })
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn put_schedule(&self, spec: ScheduleSpec, now_ms: EpochMs) -> Result<ScheduleRecord> {
        self.write(move |conn| {
            let old = conn
                .query_row(
                    "SELECT spec, anchor_ms, last_nominal_ms, fired FROM schedules WHERE name = ?1",
                    [&spec.name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(sql("reading a schedule"))?
                .map(decode_schedule)
                .transpose()?;
            let record = match old {
                Some(old) if same_timer(&old.spec, &spec) => ScheduleRecord { spec, ..old },
                _ => ScheduleRecord {
                    spec,
                    anchor_ms: now_ms,
                    last_nominal_ms: None,
                    fired: 0,
                },
            };
            let text = serde_json::to_string(&record.spec).map_err(|e| corrupt("schedule", e))?;
            conn.execute(
                "INSERT INTO schedules (name, spec, anchor_ms, last_nominal_ms, fired) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, anchor_ms = excluded.anchor_ms,
                   last_nominal_ms = excluded.last_nominal_ms, fired = excluded.fired",
                params![
                    record.spec.name,
                    text,
                    record.anchor_ms,
                    record.last_nominal_ms,
                    record.fired as i64
                ],
            )
            .map_err(sql("storing a schedule"))?;
            Ok(record)
        })
        .await
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.read(|conn| {
            all_rows(
                conn,
                "SELECT spec, anchor_ms, last_nominal_ms, fired FROM schedules ORDER BY name",
                "listing schedules",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .into_iter()
            .map(decode_schedule)
            .collect()
        })
        .await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM schedules WHERE name = ?1", [name])
                .map(|n| n > 0)
                .map_err(sql("deleting a schedule"))
        })
        .await
    }

    async fn fire(
        &self,
        name: &str,
        nominal_ms: EpochMs,
        event: NewEvent,
    ) -> Result<Option<PublishOutcome>> {
        let (name, now) = (name.to_owned(), self.now());
        self.write(move |conn| {
            let moved = conn
                .execute(
                    "UPDATE schedules SET last_nominal_ms = ?2, fired = fired + 1
                     WHERE name = ?1 AND (last_nominal_ms IS NULL OR last_nominal_ms < ?2)",
                    params![name, nominal_ms],
                )
                .map_err(sql("moving a schedule's position"))?;
            if moved == 0 {
                return Ok(None);
            }
            Ok(append(conn, vec![event], now)?.into_iter().next())
        })
        .await
    }
}

#[async_trait]
impl RouteStore for SqliteStore {
    async fn put_route(&self, route: RouteSpec) -> Result<()> {
        self.write(move |conn| {
            let text = serde_json::to_string(&route).map_err(|e| corrupt("route", e))?;
            conn.execute(
                "INSERT INTO routes (method, path, spec) VALUES (?1, ?2, ?3)
                 ON CONFLICT(method, path) DO UPDATE SET spec = excluded.spec",
                params![route.method, route.path, text],
            )
            .map_err(sql("storing a route"))?;
            Ok(())
        })
        .await
    }

    async fn list_routes(&self) -> Result<Vec<RouteSpec>> {
        self.read(|conn| {
            all_rows(
                conn,
                "SELECT spec FROM routes ORDER BY path, method",
                "listing routes",
                |r| r.get::<_, String>(0),
            )?
            .iter()
            .map(|text| serde_json::from_str(text).map_err(|e| corrupt("route", e)))
            .collect()
        })
        .await
    }

    async fn delete_route(&self, method: &str, path: &str) -> Result<bool> {
        let (method, path) = (method.to_owned(), path.to_owned());
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM routes WHERE method = ?1 AND path = ?2",
                params![method, path],
            )
            .map(|n| n > 0)
            .map_err(sql("deleting a route"))
        })
        .await
    }
}

#[async_trait]
impl SourceStore for SqliteStore {
    async fn put_source(&self, source: SourceSpec) -> Result<()> {
        self.write(move |conn| {
            let text = serde_json::to_string(&source).map_err(|e| corrupt("source", e))?;
            conn.execute(
                "INSERT INTO sources (name, spec) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
                params![source.name, text],
            )
            .map_err(sql("storing a source"))?;
            Ok(())
        })
        .await
    }

    async fn list_sources(&self) -> Result<Vec<SourceSpec>> {
        self.read(|conn| {
            all_rows(
                conn,
                "SELECT spec FROM sources ORDER BY name",
                "listing sources",
                |r| r.get::<_, String>(0),
            )?
            .iter()
            .map(|text| serde_json::from_str(text).map_err(|e| corrupt("source", e)))
            .collect()
        })
        .await
    }

    async fn delete_source(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM sources WHERE name = ?1", [name])
                .map(|n| n > 0)
                .map_err(sql("deleting a source"))
        })
        .await
    }
}
