//! The invocation log in SQLite.

use crate::{SqliteStore, sql};
use async_trait::async_trait;
use lambent_core::InvocationOutcome;
use lambent_store::{InvocationLog, InvocationQuery, InvocationRecord, Result, StoreError};
use rusqlite::params;

#[async_trait]
impl InvocationLog for SqliteStore {
    async fn record(&self, inv: InvocationRecord) -> Result<()> {
        self.record_many(vec![inv]).await
    }

    async fn record_many(&self, invocations: Vec<InvocationRecord>) -> Result<()> {
        // Records of synchronous calls are written behind already (the engine's
        // `records`): a power loss may take the last few, as a crash may.
        self.write_behind(move |conn| {
            for inv in invocations {
                insert(conn, inv)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_invocations(&self, q: InvocationQuery) -> Result<Vec<InvocationRecord>> {
        self.read(move |conn| {
            let order = if q.tail { "DESC" } else { "ASC" };
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT seq, request_id, function, version, delivery_id, event_id, attempt, started_ms, duration_us,
                            cold, outcome, error_type, error_message, logs
                     FROM invocations WHERE seq > ?1 AND (?2 IS NULL OR function = ?2)
                     ORDER BY seq {order} LIMIT ?3"
                ))
                .map_err(sql("listing invocations"))?;
            let mapped = stmt
                .query_map(params![q.after_seq, q.function, q.limit as i64], |r| {
                    let outcome: String = r.get(10)?;
                    Ok((
                        InvocationRecord {
                            seq: r.get(0)?,
                            request_id: r.get(1)?,
                            function: r.get(2)?,
                            version: r.get(3)?,
                            delivery_id: r.get(4)?,
                            event_id: r.get(5)?,
                            attempt: r.get(6)?,
                            started_ms: r.get(7)?,
                            duration_us: r.get::<_, i64>(8)? as u64,
                            cold: r.get(9)?,
                            outcome: InvocationOutcome::Success,
                            error_type: r.get(11)?,
                            error_message: r.get(12)?,
                            logs: r.get(13)?,
                        },
                        outcome,
                    ))
                })
                .map_err(sql("listing invocations"))?;
            // Rows are read one at a time and reading stops at the byte budget, so a
            // page of large logs never sits in memory whole.
            let mut rows = Vec::new();
            let mut bytes = 0;
            for row in mapped {
                let (mut rec, outcome) = row.map_err(sql("listing invocations"))?;
                rec.outcome = InvocationOutcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt {
                    what: "invocation outcome",
                    detail: outcome,
                })?;
                bytes += rec.logs.len();
                if q.max_bytes > 0 && bytes > q.max_bytes && !rows.is_empty() {
                    break;
                }
                rows.push(rec);
            }
            if q.tail {
                rows.reverse();
            }
            Ok(rows)
        })
        .await
    }

    async fn compact(&self, before_ms: lambent_core::EpochMs, max: usize) -> Result<usize> {
        self.write_behind(move |conn| {
            conn.execute(
                "DELETE FROM invocations WHERE seq IN (SELECT seq FROM invocations
                    WHERE started_ms < ?1 ORDER BY seq LIMIT ?2)",
                params![before_ms, max as i64],
            )
            .map_err(sql("compacting invocations"))
        })
        .await
    }
}

pub(crate) fn insert(conn: &rusqlite::Connection, inv: InvocationRecord) -> Result<()> {
    conn.prepare_cached(
            "INSERT INTO invocations (request_id, function, version, delivery_id, event_id, attempt, started_ms,
                    duration_us, cold, outcome, error_type, error_message, logs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT(request_id) DO NOTHING",
            )
                .and_then(|mut stmt| {
                stmt.execute(params![
                    inv.request_id,
                    inv.function,
                    inv.version,
                    inv.delivery_id,
                    inv.event_id,
                    inv.attempt,
                    inv.started_ms,
                    inv.duration_us as i64,
                    inv.cold,
                    inv.outcome.as_str(),
                    inv.error_type,
                    inv.error_message,
                    inv.logs,
                ])
            })
            .map_err(sql("recording an invocation"))?;
    Ok(())
}
