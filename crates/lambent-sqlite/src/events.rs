//! The event log and its deliveries in SQLite.

use crate::{SqliteStore, corrupt, sql};
use async_trait::async_trait;
use lambent_core::{CloudEvent, DeadLetterReason};
use lambent_store::{
    DeadLetter, Delivery, Due, EventLog, Fetch, InvocationRecord, LeaseRef, NewEvent, PayloadMode,
    PublishOutcome, Redrive, Result, Settlement, StoreError, StoredEvent,
};
use rusqlite::{OptionalExtension, params};

/// The fencing rule of every report on a lease (parameters: ?1 delivery, ?2 token,
/// ?3 now): only the delivery's current, unexpired lease may settle or extend it.
macro_rules! current_lease {
    () => {
        "WHERE id = ?1 AND lease_token = ?2 AND state = 'leased' AND lease_until >= ?3"
    };
}

/// Runs a statement through the connection's statement cache (these run once per
/// delivery: re-preparing them each time is measurable).
fn exec_cached(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

// The statements that find deliveries by state. Each names its state as a literal, so
// SQLite can use that state's partial index (`schema.rs`); `plans_use_the_indexes`
// checks that they do.
/// Makes the function's leases that ran out due again (?1 function, ?2 now).
const EXPIRE_LEASES: &str =
    "UPDATE deliveries SET state = 'pending', lease_until = NULL, next_ms = ?2, interrupted = 1
    WHERE state = 'leased' AND function = ?1 AND lease_until < ?2";
/// Leases up to ?4 due deliveries of ?1 at ?2 until ?3, oldest due first.
const LEASE: &str =
    "UPDATE deliveries SET state = 'leased', attempt = attempt + 1, lease_token = lease_token + 1,
    lease_until = ?3, updated_ms = ?2
    WHERE id IN (SELECT id FROM deliveries
                 WHERE state = 'pending' AND function = ?1 AND next_ms <= ?2
                 ORDER BY next_ms, id LIMIT ?4)
    RETURNING id, lease_token, event_seq, attempt, created_ms, mode";
/// The functions with pending deliveries (`p`) and with leased ones (`l`), one index
/// seek each (a skip scan): reading every pending row to find a handful of functions
/// took ~100 ms with a million pending, once a second.
macro_rules! functions_by_state {
    () => {
        "WITH RECURSIVE
    p(name) AS (SELECT (SELECT MIN(function) FROM deliveries WHERE state = 'pending')
        UNION ALL SELECT (SELECT MIN(function) FROM deliveries WHERE state = 'pending' AND function > p.name)
        FROM p WHERE p.name IS NOT NULL),
    l(name) AS (SELECT (SELECT MIN(function) FROM deliveries WHERE state = 'leased')
        UNION ALL SELECT (SELECT MIN(function) FROM deliveries WHERE state = 'leased' AND function > l.name)
        FROM l WHERE l.name IS NOT NULL)
"
    };
}
/// Functions with deliveries due at ?1 (pending, or leased past their lease).
const DUE_FUNCTIONS: &str = concat!(
    functions_by_state!(),
    "SELECT name FROM p WHERE name IS NOT NULL
        AND EXISTS (SELECT 1 FROM deliveries WHERE state = 'pending' AND function = p.name AND next_ms <= ?1)
    UNION
    SELECT name FROM l WHERE name IS NOT NULL
        AND EXISTS (SELECT 1 FROM deliveries WHERE state = 'leased' AND function = l.name AND lease_until < ?1)"
);
/// The earliest time after ?1 something falls due.
const NEXT_DUE: &str = concat!(
    functions_by_state!(),
    "SELECT MIN(t) FROM (
        SELECT (SELECT MIN(next_ms) FROM deliveries
                WHERE state = 'pending' AND function = p.name AND next_ms > ?1) AS t
        FROM p WHERE p.name IS NOT NULL
        UNION ALL
        SELECT (SELECT MIN(lease_until) FROM deliveries
                WHERE state = 'leased' AND function = l.name AND lease_until >= ?1)
        FROM l WHERE l.name IS NOT NULL)"
);
/// The newest ?2 dead letters (of function ?1, or all).
const DEAD_LETTERS: &str = "SELECT d.id, d.function, e.id, e.source, e.type, d.attempt, d.reason, d.last_error, d.updated_ms
    FROM deliveries d JOIN events e ON e.seq = d.event_seq
    WHERE d.state = 'dead_lettered' AND (?1 IS NULL OR d.function = ?1)
    ORDER BY d.updated_ms DESC, d.id DESC LIMIT ?2";
/// Deletes up to ?2 deliveries delivered before ?1.
const COMPACT_DELIVERED: &str = "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries
    WHERE state = 'delivered' AND updated_ms < ?1 LIMIT ?2)";
/// Deliveries per state, each counted on its state's partial index (states with none left out).
const COUNTS: &str = "SELECT * FROM (
    SELECT 'dead_lettered' AS s, COUNT(*) AS n FROM deliveries WHERE state = 'dead_lettered'
    UNION ALL SELECT 'delivered', COUNT(*) FROM deliveries WHERE state = 'delivered'
    UNION ALL SELECT 'leased', COUNT(*) FROM deliveries WHERE state = 'leased'
    UNION ALL SELECT 'pending', COUNT(*) FROM deliveries WHERE state = 'pending')
    WHERE n > 0 ORDER BY s";

/// Most characters of an error message kept on a delivery.
const MAX_ERROR_CHARS: usize = 4096;

fn clip(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

/// Appends events with their deliveries inside the caller's write (de-duplicated on
/// `(source, id)`): every write that publishes goes through here.
pub(crate) fn append(
    conn: &rusqlite::Connection,
    batch: Vec<NewEvent>,
    now: i64,
) -> Result<Vec<PublishOutcome>> {
    let mut insert_event = conn
        .prepare_cached(
            "INSERT INTO events (source, id, type, body, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id, source) DO NOTHING",
        )
        .map_err(sql("preparing an event insert"))?;
    let mut insert_delivery = conn
        .prepare_cached(
            "INSERT INTO deliveries (event_seq, function, mode, state, next_ms, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4)",
        )
        .map_err(sql("preparing a delivery insert"))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for item in batch {
        let inserted = insert_event
            .execute(params![item.source, item.id, item.ty, item.encoded, now])
            .map_err(sql("appending an event"))?;
        if inserted == 0 {
            outcomes.push(PublishOutcome::Duplicate);
            continue;
        }
        let seq = conn.last_insert_rowid();
        for target in &item.targets {
            insert_delivery
                .execute(params![seq, target.function, target.mode.as_i64(), now])
                .map_err(sql("creating a delivery"))?;
        }
        outcomes.push(PublishOutcome::Accepted {
            seq,
            deliveries: item.targets.len(),
        });
    }
    Ok(outcomes)
}

/// Dead-letters the delivery of `lease` if the lease is still current; the rows changed.
fn dead_letter(
    conn: &rusqlite::Connection,
    lease: LeaseRef,
    now: i64,
    error: &str,
    reason: DeadLetterReason,
) -> Result<usize> {
    exec_cached(
        conn,
        concat!(
            "UPDATE deliveries SET state = 'dead_lettered', lease_until = NULL, updated_ms = ?3,
                last_error = ?4, reason = ?5 ",
            current_lease!()
        ),
        params![
            lease.delivery,
            lease.token,
            now,
            clip(error),
            reason.as_str()
        ],
    )
    .map_err(sql("dead-lettering a delivery"))
}

impl SqliteStore {
    /// Runs a settle of `lease`; no row changed means the lease was lost (what else
    /// the write did, such as recording the attempt, stays).
    async fn settle_with<F>(&self, lease: LeaseRef, update: F) -> Result<()>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<usize> + Send + 'static,
    {
        // A settle, extend or release a power loss undoes is a delivery run again,
        // and the attempt's slot is free already: nobody waits for this commit.
        match self.write_behind(update).await? {
            0 => Err(StoreError::LeaseLost {
                delivery: lease.delivery,
                token: lease.token,
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<PublishOutcome>> {
        let now = self.now();
        self.write_or_refuse(move |conn| append(conn, batch, now))
            .await
    }

    async fn fetch(&self, function: &str, fetch: Fetch) -> Result<Vec<Delivery>> {
        let function = function.to_owned();
        let now = self.now();
        // A lease a power loss undoes was never charged: its attempt runs again.
        self.write_deferred(move |conn| {
            // A lease that ran out belongs to an attempt that never reported: make it
            // due again; the attempt stays charged.
            conn.prepare_cached(
                EXPIRE_LEASES,
            )
            .and_then(|mut stmt| stmt.execute(params![function, now]))
            .map_err(sql("expiring leases"))?;
            // Leased as often as allowed without a settle: the event may be what kills
            // the node; stop trying. (Only interrupted deliveries can get here: a failed
            // attempt at the limit is dead-lettered by its settle. The partial index
            // keeps this off the pending backlog.)
            conn.prepare_cached(
                "UPDATE deliveries INDEXED BY deliveries_interrupted SET state = 'dead_lettered', updated_ms = ?2, reason = 'interrupted',
                    last_error = COALESCE(last_error || ' ', '') ||
                        '(attempt ' || attempt || ' of ' || ?3 || ' was interrupted before it reported)'
                 WHERE state = 'pending' AND function = ?1 AND interrupted = 1 AND attempt >= ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![function, now, fetch.max_attempts]))
            .map_err(sql("dead-lettering interrupted deliveries"))?;
            let mut stmt = conn
                .prepare_cached(
                    LEASE,
                )
                .map_err(sql("leasing deliveries"))?;
            let leased = stmt
                .query_map(params![function, now, now + fetch.lease_ms, fetch.max as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, u32>(3)?, r.get::<_, i64>(4)?, r.get::<_, i64>(5)?))
                })
                .map_err(sql("leasing deliveries"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql("leasing deliveries"))?;
            let mut body_stmt = conn
                .prepare_cached("SELECT body FROM events WHERE seq = ?1")
                .map_err(sql("reading an event"))?;
            let mut out = Vec::with_capacity(leased.len());
            for (id, token, seq, attempt, created_ms, mode) in leased {
                let body: Option<String> = body_stmt
                    .query_row([seq], |r| r.get(0))
                    .optional()
                    .map_err(sql("reading an event"))?;
                let decoded = body
                    .ok_or_else(|| format!("event {seq} is missing"))
                    .and_then(|body| {
                        let event = CloudEvent::parse(body.as_bytes()).map_err(|e| format!("event {seq}: {e}"))?;
                        Ok((event, body))
                    });
                match decoded {
                    Ok((event, encoded)) => out.push(Delivery {
                        id,
                        token,
                        function: function.clone(),
                        attempt,
                        created_ms,
                        mode: PayloadMode::from_i64(mode),
                        event,
                        encoded,
                    }),
                    Err(detail) => {
                        // One damaged row must not stop every other delivery of the function.
                        tracing::error!(delivery = id, %detail, "undecodable event dead-lettered");
                        conn.execute(
                            "UPDATE deliveries SET state = 'dead_lettered', lease_until = NULL, updated_ms = ?2,
                                reason = 'undecodable', last_error = ?3 WHERE id = ?1",
                            params![id, now, clip(&format!("the stored event cannot be decoded: {detail}"))],
                        )
                        .map_err(sql("dead-lettering an undecodable delivery"))?;
                    }
                }
            }
            out.sort_by_key(|d| d.id);
            Ok(out)
        })
        .await
    }

    async fn due(&self) -> Result<Due> {
        let now = self.now();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(DUE_FUNCTIONS)
                .map_err(sql("finding due deliveries"))?;
            let functions = stmt
                .query_map([now], |r| r.get(0))
                .map_err(sql("finding due deliveries"))?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(sql("finding due deliveries"))?;
            // Cached: preparing these recursive queries is ~300k instructions.
            let next_ms: Option<i64> = conn
                .prepare_cached(NEXT_DUE)
                .and_then(|mut stmt| stmt.query_row([now], |r| r.get(0)))
                .map_err(sql("finding the next due time"))?;
            Ok(Due { functions, next_ms })
        })
        .await
    }

    async fn settle(
        &self,
        lease: LeaseRef,
        settlement: Settlement,
        record: Option<InvocationRecord>,
    ) -> Result<()> {
        let now = self.now();
        self.settle_with(lease, move |conn| {
            if let Some(record) = record {
                crate::invocations::insert(conn, record)?;
            }
            let (delivery, token) = (lease.delivery, lease.token);
            match settlement {
                Settlement::Ack => exec_cached(
                        conn,
                        concat!("UPDATE deliveries SET state = 'delivered', lease_until = NULL, updated_ms = ?3, last_error = NULL ", current_lease!()),
                        params![delivery, token, now],
                    )
                    .map_err(sql("acknowledging a delivery")),
                Settlement::Nak { delay_ms, error } => exec_cached(
                        conn,
                        concat!("UPDATE deliveries SET state = 'pending', lease_until = NULL, next_ms = ?4, updated_ms = ?3,
                            last_error = ?5, interrupted = 0 ", current_lease!()),
                        params![delivery, token, now, now + delay_ms.max(0), clip(&error)],
                    )
                    .map_err(sql("scheduling a retry")),
                Settlement::Terminate { reason, error } => dead_letter(conn, lease, now, &error, reason),
                Settlement::Forward { reason, error, forward } => {
                    let settled = dead_letter(conn, lease, now, &error, reason)?;
                    if settled == 1 {
                        append(conn, vec![*forward], now)?;
                    }
                    Ok(settled)
                }
            }
        })
        .await
    }

    async fn extend(&self, lease: LeaseRef, lease_ms: i64) -> Result<()> {
        let now = self.now();
        self.settle_with(lease, move |conn| {
            exec_cached(
                conn,
                concat!(
                    "UPDATE deliveries SET lease_until = ?4, updated_ms = ?3 ",
                    current_lease!()
                ),
                params![lease.delivery, lease.token, now, now + lease_ms],
            )
            .map_err(sql("extending a lease"))
        })
        .await
    }

    async fn release(&self, lease: LeaseRef) -> Result<()> {
        let now = self.now();
        self.settle_with(lease, move |conn| {
            exec_cached(
                        conn,
                        concat!("UPDATE deliveries SET state = 'pending', lease_until = NULL, next_ms = ?3, updated_ms = ?3,
                    attempt = MAX(attempt - 1, 0) ", current_lease!()),
                params![lease.delivery, lease.token, now],
            )
            .map_err(sql("releasing a lease"))
        })
        .await
    }

    async fn dead_letters(&self, function: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let function = function.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(DEAD_LETTERS)
                .map_err(sql("listing dead letters"))?;
            let rows = stmt
                .query_map(params![function, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, i64>(8)?,
                    ))
                })
                .map_err(sql("listing dead letters"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql("listing dead letters"))?;
            rows.into_iter()
                .map(
                    |(
                        delivery_id,
                        function,
                        event_id,
                        event_source,
                        event_type,
                        attempts,
                        reason,
                        last_error,
                        dead_ms,
                    )| {
                        Ok(DeadLetter {
                            delivery_id,
                            function,
                            event_id,
                            event_source,
                            event_type,
                            attempts,
                            reason: reason
                                .as_deref()
                                .and_then(DeadLetterReason::parse)
                                .ok_or_else(|| {
                                    corrupt("dead-letter reason", format!("{reason:?}"))
                                })?,
                            last_error: last_error.unwrap_or_default(),
                            dead_ms,
                        })
                    },
                )
                .collect()
        })
        .await
    }

    async fn redrive(&self, which: Redrive) -> Result<usize> {
        let now = self.now();
        self.write(move |conn| {
            // A redriven delivery starts over: fresh attempts, and its age counts from now.
            const RESET: &str = "UPDATE deliveries SET state = 'pending', attempt = 0, next_ms = ?1, created_ms = ?1,
                                 updated_ms = ?1, reason = NULL, lease_until = NULL, interrupted = 0";
            let n = match which {
                Redrive::Ids(ids) => {
                    let mut stmt = conn
                        .prepare_cached(&format!("{RESET} WHERE id = ?2 AND state = 'dead_lettered'"))
                        .map_err(sql("redriving"))?;
                    let mut n = 0;
                    for id in ids {
                        n += stmt.execute(params![now, id]).map_err(sql("redriving"))?;
                    }
                    n
                }
                Redrive::All { function } => conn
                    .execute(
                        &format!("{RESET} WHERE state = 'dead_lettered' AND (?2 IS NULL OR function = ?2)"),
                        params![now, function],
                    )
                    .map_err(sql("redriving"))?,
            };
            Ok(n)
        })
        .await
    }

    async fn get_event(&self, source: &str, id: &str) -> Result<Option<StoredEvent>> {
        let (source, id) = (source.to_owned(), id.to_owned());
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT seq, received_ms, body FROM events WHERE source = ?1 AND id = ?2",
                    params![source, id],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(sql("reading an event"))?;
            row.map(|(seq, received_ms, body)| {
                Ok(StoredEvent {
                    seq,
                    received_ms,
                    event: serde_json::from_str(&body).map_err(|e| corrupt("event", e))?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn compact(&self, before_ms: lambent_core::EpochMs, max: usize) -> Result<usize> {
        self.write_behind(move |conn| {
            let deliveries = conn
                .execute(COMPACT_DELIVERED, params![before_ms, max as i64])
                .map_err(sql("compacting deliveries"))?;
            let events = conn
                .execute(
                    "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e
                        WHERE e.received_ms < ?1
                          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
                        ORDER BY e.seq LIMIT ?2)",
                    params![before_ms, max as i64],
                )
                .map_err(sql("compacting events"))?;
            Ok(deliveries + events)
        })
        .await
    }

    fn health(&self) -> std::result::Result<(), String> {
        self.failure().map_or(Ok(()), Err)
    }

    fn write_stats(&self) -> Option<lambent_store::WriteStats> {
        Some(self.commit_stats())
    }

    async fn delivery_counts(&self) -> Result<Vec<(String, u64)>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(COUNTS)
                .map_err(sql("counting deliveries"))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql("counting deliveries"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql("counting deliveries"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The query plan's lines that touch `deliveries`.
    fn plan(conn: &rusqlite::Connection, statement: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
            .unwrap();
        // The parameters stay unbound (NULL): a plan does not depend on them.
        let mut rows = stmt.raw_query();
        let mut lines = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            let line: String = row.get(3).unwrap();
            if line.contains("deliveries") || line.contains(" d ") {
                lines.push(line);
            }
        }
        lines
    }

    /// Every statement that looks for deliveries by state finds them through that
    /// state's partial index, never by reading the whole table: a query that stops
    /// naming its state as a literal (or an index dropped) would scan. The due scans
    /// (once a second) seek, never read a state's index whole.
    #[test]
    fn plans_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_connection(&dir.path().join("lambent.db")).unwrap();
        crate::schema::migrate(&conn).unwrap();
        // (name, statement, an index it must use, whether it may read an index whole)
        for (name, statement, index, scans) in [
            ("lease", LEASE, "deliveries_pending", false),
            ("expire", EXPIRE_LEASES, "deliveries_leased", false),
            ("due functions", DUE_FUNCTIONS, "deliveries_pending", false),
            ("due functions", DUE_FUNCTIONS, "deliveries_leased", false),
            ("next due", NEXT_DUE, "deliveries_pending", false),
            ("next due", NEXT_DUE, "deliveries_leased", false),
            (
                "dead letters",
                DEAD_LETTERS,
                "deliveries_dead_letters",
                true,
            ),
            (
                "compaction",
                COMPACT_DELIVERED,
                "deliveries_delivered",
                false,
            ),
            ("counts", COUNTS, "deliveries_delivered", true),
            ("counts", COUNTS, "deliveries_pending", true),
        ] {
            let lines = plan(&conn, statement);
            assert!(
                lines.iter().any(|l| l.contains(index)),
                "{name}: not on {index}: {lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .all(|l| !l.starts_with("SCAN") || (scans && l.contains("INDEX"))),
                "{name} reads a whole table or index: {lines:?}"
            );
        }
    }
}
