//! DDL and migrations, keyed on `PRAGMA user_version`. Internal tables are prefixed `lmsrt_`.
//!
//! Index choice (measured; see `benches/README.md`): every read path — the per-lane fetch, the
//! expired-row gap probe, the tail reader's per-channel scan — seeks on `(channel_id, priority)`
//! and walks ids in order, checking `expires_at` from the index itself. With only
//! `(channel_id, id)`, a catch-up over many channels had to fetch every expired row from the
//! table to discard it (124 ms p99 with two thirds expired); carrying `expires_at` in the index
//! skips them without touching the table. `expires_at` alone serves the purge and the
//! "is anything expired at all" probe.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// The newest schema this library writes and understands.
pub const SCHEMA_VERSION: i64 = 2;

const V1: &str = "
CREATE TABLE lmsrt_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- AUTOINCREMENT: ids must never be reused, even after the newest rows are purged, or a
-- client's cursor would skip events that take an old id.
CREATE TABLE lmsrt_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type  TEXT    NOT NULL,
    priority    INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 4),
    channel_id  INTEGER NOT NULL CHECK (channel_id > 0),
    message_id  INTEGER,
    thread_id   INTEGER,
    user_id     INTEGER NOT NULL,
    data        TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    idem_key    TEXT
);
CREATE INDEX lmsrt_events_lane   ON lmsrt_events (channel_id, priority, id, expires_at);
CREATE INDEX lmsrt_events_expiry ON lmsrt_events (expires_at);
CREATE UNIQUE INDEX lmsrt_events_idem ON lmsrt_events (idem_key) WHERE idem_key IS NOT NULL;

-- What purges removed, per channel and lane, as one id interval: a fetch whose range crosses
-- it reports a gap. One row per (channel, lane), so it never grows with traffic. Version 2
-- adds exact records beside it (see V2 below).
CREATE TABLE lmsrt_purged (
    channel_id INTEGER NOT NULL,
    priority   INTEGER NOT NULL,
    lo         INTEGER NOT NULL,
    hi         INTEGER NOT NULL,
    PRIMARY KEY (channel_id, priority)
) WITHOUT ROWID;

-- Durable consumer cursors (the plan's processed_by, without a growing text column).
CREATE TABLE lmsrt_cursors (
    consumer   TEXT PRIMARY KEY,
    cursor     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 2: one record per purged event, with the columns a fetch filters on, so that `gap`
/// is exact: a range that held nothing the client would have received never reports one
/// (a single interval per lane did whenever it straddled live events). Keyed by the event's
/// id alone, with no other index: a purge appends its records near the end of one b-tree (a
/// per-lane index took random leaves, and made 500-row purge chunks 4 times slower, appends
/// waiting behind them 10 times), and a fetch scans only the id range its cursor moved over.
///
/// `lmsrt_purged` keeps its interval, still widened by every purge, for processes running
/// version 1 code that are still open (they read only it). Its new columns say which part of
/// the interval a version 2 reader must still treat as a gap: up to `folded_hi` (records
/// folded away, and everything recorded before the upgrade); all of it when `lo`/`hi` differ
/// from `exact_lo`/`exact_hi`, the bounds as version 2 code last left them, which means a
/// version 1 process purged since and recorded nothing else.
const V2: &str = "
CREATE TABLE lmsrt_purged_events (
    id         INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    priority   INTEGER NOT NULL,
    thread_id  INTEGER,
    event_type TEXT
);
ALTER TABLE lmsrt_purged ADD COLUMN exact_lo INTEGER;
ALTER TABLE lmsrt_purged ADD COLUMN exact_hi INTEGER;
ALTER TABLE lmsrt_purged ADD COLUMN folded_hi INTEGER;
UPDATE lmsrt_purged SET exact_lo = lo, exact_hi = hi, folded_hi = hi;
";

/// Brings the schema to [`SCHEMA_VERSION`] and returns the store's epoch.
///
/// Must run inside a write transaction, so that two processes creating the same file at once
/// cannot both run the DDL.
pub(crate) fn migrate(conn: &Connection) -> Result<u32> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        conn.execute_batch(V1).map_err(storage)?;
        let epoch = random_u32();
        conn.execute(
            "INSERT INTO lmsrt_meta (key, value) VALUES ('epoch', ?1)",
            [epoch.to_string()],
        )
        .map_err(storage)?;
    }
    if version < 2 {
        // What version 1 recorded stays a gap, as an interval (`folded_hi = hi`): possibly
        // spurious, never fewer. A process running version 1 code is refused by the new
        // version number on its next open; until then it keeps reading and widening the
        // intervals, which version 2 keeps current for it.
        conn.execute_batch(V2).map_err(storage)?;
    }
    // Future migrations go here: `if version < 3 { ... }`.
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(storage)?;
    }
    read_epoch(conn)
}

/// Reads the current schema version without changing anything.
pub(crate) fn version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)
}

pub(crate) fn read_epoch(conn: &Connection) -> Result<u32> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM lmsrt_meta WHERE key = 'epoch'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(storage)?;
    v.and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Storage("the store's epoch is missing or corrupt".into()))
}

pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness; mixing in the time and pid only guards
    // against a platform where it is not.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    (h.finish() >> 16) as u32
}

pub(crate) fn storage(e: rusqlite::Error) -> Error {
    super::conn::map_sqlite_error(e)
}
