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
    received_ms INTEGER NOT NULL,
    UNIQUE (source, id)
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

/// Columns added after the first release, for databases created before them.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("deliveries", "lease_token", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "interrupted", "INTEGER NOT NULL DEFAULT 0"),
];

pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)
        .map_err(sql("creating the schema"))?;
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
