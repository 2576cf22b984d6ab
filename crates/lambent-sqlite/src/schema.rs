//! The database schema, applied idempotently at open.

use crate::sql;
use lambent_store::Result;
use rusqlite::Connection;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS function_versions (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size   INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS rules (
    name    TEXT PRIMARY KEY,
    pattern TEXT NOT NULL,
    targets TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    event_seq   INTEGER NOT NULL REFERENCES events(seq),
    function    TEXT NOT NULL,
    mode        INTEGER NOT NULL,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    next_ms     INTEGER NOT NULL,
    lease_until INTEGER,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    last_error  TEXT,
    reason      TEXT,
    -- Fencing token of the current (or last) lease; grows with every lease.
    lease_token INTEGER NOT NULL DEFAULT 0,
    -- 1 when the last lease ran out (or its node died) without a settle.
    interrupted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_seq);
CREATE TABLE IF NOT EXISTS invocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL UNIQUE,
    function      TEXT NOT NULL,
    version       INTEGER NOT NULL,
    delivery_id   INTEGER,
    event_id      TEXT,
    attempt       INTEGER NOT NULL,
    started_ms    INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    cold          INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    error_type    TEXT,
    error_message TEXT,
    logs          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_function ON invocations (function, seq);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_namespaces (
    name        TEXT PRIMARY KEY,
    put_type    TEXT NOT NULL,
    delete_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    name            TEXT PRIMARY KEY,
    spec            TEXT NOT NULL,
    anchor_ms       INTEGER NOT NULL,
    last_nominal_ms INTEGER,
    fired           INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS routes (
    method TEXT NOT NULL,
    path   TEXT NOT NULL,
    spec   TEXT NOT NULL,
    PRIMARY KEY (method, path)
);
CREATE TABLE IF NOT EXISTS aliases (
    function TEXT NOT NULL,
    name     TEXT NOT NULL,
    alias    TEXT NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE IF NOT EXISTS function_tags (
    function TEXT PRIMARY KEY,
    tags     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS learned (
    function   TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
"#;

/// One partial index per state a query looks for, so a delivery's row enters and
/// leaves one index at each step (pending → leased → delivered: six index writes in
/// all) instead of being rewritten in three indexes led by `state` at every step
/// (sixteen). Every query names its state as a literal, which is what lets SQLite
/// use a partial index; `plans_use_the_indexes` (tests) holds them to it. The
/// indexes of databases made before them are dropped.
const DELIVERY_INDEXES: &str = "
DROP INDEX IF EXISTS deliveries_due;
DROP INDEX IF EXISTS deliveries_dead;
DROP INDEX IF EXISTS deliveries_lease;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (function, next_ms) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (function, lease_until) WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS deliveries_delivered ON deliveries (updated_ms) WHERE state = 'delivered';
CREATE INDEX IF NOT EXISTS deliveries_dead_letters ON deliveries (function, updated_ms) WHERE state = 'dead_lettered';
CREATE INDEX IF NOT EXISTS deliveries_interrupted ON deliveries (function) WHERE state = 'pending' AND interrupted = 1;
";

/// The key that de-duplicates events: `(source, id)` unique, kept in an index led by
/// `id`. Every insert searches this index, and almost every comparison on the way is
/// decided by the id, where led by the source (one producer's events all share it) it
/// compared two strings each time: the writer's instructions per batched event fell
/// 16% (BENCHMARKS.md). A database made before it has the key as the table's
/// `UNIQUE (source, id)`, which SQLite cannot drop without rebuilding the table; it
/// keeps that one (inserts name the key's columns, which either index matches).
fn event_key(conn: &Connection) -> Result<()> {
    let old_key: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master
             WHERE type = 'index' AND tbl_name = 'events' AND name LIKE 'sqlite_autoindex_events_%'",
            [],
            |r| r.get(0),
        )
        .map_err(sql("reading the schema"))?;
    if !old_key {
        conn.execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (id, source)")
            .map_err(sql("creating the events' key"))?;
    }
    Ok(())
}

/// Columns added after the first release, for databases created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("deliveries", "lease_token", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "interrupted", "INTEGER NOT NULL DEFAULT 0"),
];

pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)
        .map_err(sql("creating the schema"))?;
    event_key(conn)?;
    for (table, column, decl) in ADDED_COLUMNS {
        let exists: bool = conn
            .query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )
            .map_err(sql("reading the schema"))?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
                .map_err(sql("migrating the schema"))?;
        }
    }
    conn.execute_batch(DELIVERY_INDEXES)
        .map_err(sql("creating the deliveries' indexes"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use lambent_store::{NewEvent, PublishOutcome};

    fn event(source: &str, id: &str) -> NewEvent {
        NewEvent {
            source: source.into(),
            id: id.into(),
            ty: "t".into(),
            encoded: format!(
                r#"{{"specversion":"1.0","id":"{id}","source":"{source}","type":"t"}}"#
            ),
            targets: Vec::new(),
        }
    }

    /// Appends the same `(source, id)` twice, and the same id from another source.
    fn outcomes(conn: &Connection) -> Vec<bool> {
        let batch = vec![event("/a", "1"), event("/a", "1"), event("/b", "1")];
        crate::events::append(conn, batch, 0)
            .unwrap()
            .into_iter()
            .map(|o| matches!(o, PublishOutcome::Accepted { .. }))
            .collect()
    }

    /// Whether looking an event up by `(source, id)`, as `get_event` does, searches
    /// index `name` (and reads no table or index whole).
    fn lookup_uses(conn: &Connection, name: &str) -> bool {
        let mut stmt = conn
            .prepare("EXPLAIN QUERY PLAN SELECT seq FROM events WHERE source = ?1 AND id = ?2")
            .unwrap();
        let mut rows = stmt.raw_query();
        let mut lines = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            lines.push(row.get::<_, String>(3).unwrap());
        }
        lines
            .iter()
            .any(|l| l.starts_with("SEARCH") && l.contains(name))
            && !lines.iter().any(|l| l.starts_with("SCAN"))
    }

    /// The columns of index `name`, in order.
    fn key_columns(conn: &Connection, name: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
            .unwrap();
        stmt.query_map([name], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_new_database_keys_events_by_id_then_source() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_connection(&dir.path().join("lambent.db")).unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        assert_eq!(key_columns(&conn, "events_key"), ["id", "source"]);
        assert!(lookup_uses(&conn, "events_key"));
        assert_eq!(outcomes(&conn), [true, false, true]);
    }

    /// A database whose events table was made with `UNIQUE (source, id)` keeps that
    /// key (it cannot be dropped), gets no second one, and still de-duplicates.
    #[test]
    fn a_database_made_before_keeps_its_key_and_still_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_connection(&dir.path().join("lambent.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE events (
                seq INTEGER PRIMARY KEY, source TEXT NOT NULL, id TEXT NOT NULL,
                type TEXT NOT NULL, body TEXT NOT NULL, received_ms INTEGER NOT NULL,
                UNIQUE (source, id))",
        )
        .unwrap();
        migrate(&conn).unwrap();
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(indexes, ["sqlite_autoindex_events_1"]);
        assert!(lookup_uses(&conn, "sqlite_autoindex_events_1"));
        assert_eq!(outcomes(&conn), [true, false, true]);
    }
}
