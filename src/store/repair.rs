//! Checking a store file for damage, and salvaging what is readable into a new file.
//!
//! SQLite stops a query at the first damaged page (`SQLITE_CORRUPT`), so a fetch whose range
//! crosses one fails every time and its reader is wedged. No retry helps; the operator copies
//! what can still be read into a fresh file and swaps it in while no process has the store
//! open. The copy keeps what gives the data its meaning to clients:
//!
//! * event ids and the id sequence, and the store's epoch, so cursors handed out before stay
//!   valid against the new file;
//! * consumer cursors, idempotency keys (a column of the events) and the purge records;
//! * and for every event that could not be read, a purge record covering its id, so a reader
//!   whose cursor moves over it gets `gap: true` instead of silently missing it.
//!
//! Events are read one id at a time through the table's b-tree. When the page holding the next
//! id is damaged, the walk probes ever further ids (1, 2, 4, … past the last good one) until a
//! seek lands on a readable page, then narrows down to the first readable id: everything
//! between is lost. Which events were lost, with their channel and lane, comes from the
//! `lmsrt_events_lane` index (a separate b-tree, usually intact): the purge records then cover
//! exactly the lanes that lost something. When the index is damaged too, every lane of every
//! channel gets the lost id ranges (a purge record with channel 0, which fetches treat as
//! covering all channels): more readers see a gap than strictly had to, none misses one.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

use super::schema;
use crate::error::{Error, Result};

/// Most problems [`check_file`] lists (SQLite's `integrity_check` limit).
pub const MAX_PROBLEMS: usize = 100;

/// The channel id of a purge record that covers every channel (see the module docs).
pub(crate) const ALL_CHANNELS: i64 = 0;

/// What [`check_file`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub path: String,
    /// True when SQLite's `PRAGMA integrity_check` found nothing wrong.
    pub ok: bool,
    /// What `integrity_check` reported (at most [`MAX_PROBLEMS`]), or why it could not run;
    /// empty when `ok`.
    pub problems: Vec<String>,
    /// Pages in the file (`PRAGMA page_count`), 0 when even that cannot be read.
    pub page_count: i64,
}

/// What [`salvage_file`] copied and what it could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SalvageReport {
    /// The damaged file read.
    pub source: String,
    /// The new file written.
    pub dest: String,
    /// Events copied, with their original ids.
    pub events_copied: u64,
    /// Events that could not be read. Exact when `lost_exact`; otherwise the number of ids in
    /// `lost_ranges` that could not be read (an upper bound: some may never have been used).
    pub events_lost: u64,
    /// Whether `events_lost` is exact (the index of the events could be read).
    pub lost_exact: bool,
    /// Inclusive id ranges that could not be read; each is recorded as purged, so readers
    /// whose cursors move over it get `gap: true`.
    pub lost_ranges: Vec<[i64; 2]>,
    /// Copied events that carry an idempotency key.
    pub idempotency_keys_copied: u64,
    /// Consumer cursors copied.
    pub cursors_copied: u64,
    /// False when the table of consumer cursors could not be read to the end.
    pub cursors_complete: bool,
    /// Purge records copied.
    pub purged_copied: u64,
    /// False when the purge records could not be read to the end.
    pub purged_complete: bool,
    /// The id sequence of the new file (the newest id ever assigned): new events get higher
    /// ids than any the old file gave out.
    pub sequence: i64,
    /// The store's epoch. Kept from the old file when it could be read, so old cursors stay
    /// valid; otherwise a new one, and every old cursor gets `gap: true` and starts over.
    pub epoch: u32,
    /// Whether `epoch` is the old file's.
    pub epoch_kept: bool,
    /// Whether the new file passes `PRAGMA integrity_check`.
    pub dest_ok: bool,
}

/// Opens `path` for reading without creating it. Read-write (not read-only) because a WAL-mode
/// file opened read-only needs its `-shm` file to exist already; nothing is written.
fn open_source(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = Connection::open_with_flags(path, flags).map_err(storage)?;
    c.execute_batch("PRAGMA query_only = 1").map_err(storage)?;
    Ok(c)
}

/// Errors of the check and the salvage are not counted as corruption met by a store call
/// (see `conn::map_sqlite_error`): finding damage is what the operator asked for here.
fn storage(e: rusqlite::Error) -> Error {
    Error::Storage(e.to_string())
}

fn integrity(c: &Connection) -> Vec<String> {
    let run = || -> rusqlite::Result<Vec<String>> {
        let mut s = c.prepare(&format!("PRAGMA integrity_check({MAX_PROBLEMS})"))?;
        let rows = s.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    match run() {
        Ok(v) if v.len() == 1 && v[0] == "ok" => Vec::new(),
        Ok(v) => v,
        Err(e) => vec![format!("integrity_check could not run: {e}")],
    }
}

/// Runs SQLite's `PRAGMA integrity_check` on the store file at `path` and reports.
///
/// Reads only; safe while other processes use the store (it reads one snapshot). A damaged
/// file is a successful check with `ok: false`; an error means the file could not be opened.
pub fn check_file(path: impl AsRef<Path>) -> Result<CheckReport> {
    let path = path.as_ref();
    let c = open_source(path)?;
    let problems = integrity(&c);
    let page_count = c
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap_or(0);
    Ok(CheckReport {
        path: path.display().to_string(),
        ok: problems.is_empty(),
        problems,
        page_count,
    })
}

/// Copies every readable row of the store file at `source` into a new store file at `dest`
/// (which must not exist), keeping ids, the id sequence and the epoch, and records what could
/// not be read as purged so readers get `gap: true` for it. See the module docs.
///
/// Run it with no process using `source` (stop the daemon; PHP workers only open the store
/// per request, so take the site's writes offline), then move `dest` over `source`, removing
/// the old file's `-wal` and `-shm` beside it.
pub fn salvage_file(source: impl AsRef<Path>, dest: impl AsRef<Path>) -> Result<SalvageReport> {
    let (source, dest) = (source.as_ref(), dest.as_ref());
    if dest.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} exists; salvage writes a new file and never overwrites one",
            dest.display()
        )));
    }
    let src = open_source(source)?;
    let mut dst = Connection::open(dest).map_err(storage)?;
    dst.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(storage)?;
    let tx = dst.transaction().map_err(storage)?;
    schema::migrate(&tx)?;

    // The epoch (and any other meta) of the old file, so its cursors stay meaningful here.
    let meta = read_all(&src, "SELECT key, value FROM lmsrt_meta", 2);
    let mut epoch_kept = false;
    for row in &meta.rows {
        if matches!(&row[0], Value::Text(k) if k == "epoch") {
            epoch_kept = true;
        }
        tx.execute(
            "INSERT OR REPLACE INTO lmsrt_meta (key, value) VALUES (?1, ?2)",
            params![row[0], row[1]],
        )
        .map_err(storage)?;
    }
    let epoch = schema::read_epoch(&tx)?;

    let cursors = read_all(
        &src,
        "SELECT consumer, cursor, updated_at FROM lmsrt_cursors",
        3,
    );
    for row in &cursors.rows {
        tx.execute(
            "INSERT OR REPLACE INTO lmsrt_cursors (consumer, cursor, updated_at) VALUES (?1, ?2, ?3)",
            params![row[0], row[1], row[2]],
        )
        .map_err(storage)?;
    }
    let purged = read_all(
        &src,
        "SELECT channel_id, priority, lo, hi FROM lmsrt_purged",
        4,
    );
    for row in &purged.rows {
        tx.execute(
            "INSERT OR REPLACE INTO lmsrt_purged (channel_id, priority, lo, hi) VALUES (?1, ?2, ?3, ?4)",
            params![row[0], row[1], row[2], row[3]],
        )
        .map_err(storage)?;
    }

    let walk = copy_events(&src, &tx)?;

    // The sequence: the old file's, or (when unreadable) the highest id seen anywhere.
    let index = read_all(
        &src,
        "SELECT id, channel_id, priority FROM lmsrt_events INDEXED BY lmsrt_events_lane",
        3,
    );
    let index_max = index.rows.iter().filter_map(|r| int(&r[0])).max();
    let old_seq: Option<i64> = src
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'lmsrt_events'",
            [],
            |r| r.get(0),
        )
        .optional()
        .ok()
        .flatten();
    let sequence = [
        old_seq,
        index_max,
        walk.copied.last().copied(),
        walk.ranges.last().map(|r| r[1]),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    // A walk that ran into damage at the end only knows "everything after"; bound it by the
    // sequence so the purge record covers exactly the ids ever given out.
    let ranges: Vec<[i64; 2]> = walk
        .ranges
        .iter()
        .map(|r| [r[0], r[1].min(sequence)])
        .filter(|r| r[0] <= r[1])
        .collect();

    // Which lost ids belonged to which lane: from the index when it could be read whole.
    let lost_exact = index.complete;
    let mut spans: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    let mut events_lost = 0u64;
    if lost_exact {
        for r in &index.rows {
            let (Some(id), Some(ch), Some(pr)) = (int(&r[0]), int(&r[1]), int(&r[2])) else {
                continue;
            };
            if walk.copied.binary_search(&id).is_ok() {
                continue;
            }
            events_lost += 1;
            let s = spans.entry((ch, pr)).or_insert((id, id));
            s.0 = s.0.min(id);
            s.1 = s.1.max(id);
        }
    } else {
        for r in &ranges {
            events_lost += (r[1] - r[0] + 1) as u64;
            for pr in 1..=4 {
                let s = spans.entry((ALL_CHANNELS, pr)).or_insert((r[0], r[1]));
                s.0 = s.0.min(r[0]);
                s.1 = s.1.max(r[1]);
            }
        }
    }
    for ((ch, pr), (lo, hi)) in spans {
        // One interval per lane, as purges keep it: merged with what was purged before.
        tx.execute(
            "INSERT INTO lmsrt_purged (channel_id, priority, lo, hi) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (channel_id, priority) DO UPDATE
             SET lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)",
            params![ch, pr, lo, hi],
        )
        .map_err(storage)?;
    }
    tx.execute(
        "DELETE FROM sqlite_sequence WHERE name = 'lmsrt_events'",
        [],
    )
    .map_err(storage)?;
    tx.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('lmsrt_events', ?1)",
        [sequence],
    )
    .map_err(storage)?;
    tx.commit().map_err(storage)?;
    dst.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(storage)?;
    let dest_ok = integrity(&dst).is_empty();
    Ok(SalvageReport {
        source: source.display().to_string(),
        dest: dest.display().to_string(),
        events_copied: walk.copied.len() as u64,
        events_lost,
        lost_exact,
        lost_ranges: ranges,
        idempotency_keys_copied: walk.idempotency_keys,
        cursors_copied: cursors.rows.len() as u64,
        cursors_complete: cursors.complete,
        purged_copied: purged.rows.len() as u64,
        purged_complete: purged.complete,
        sequence,
        epoch,
        epoch_kept,
        dest_ok,
    })
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        _ => None,
    }
}

/// The rows of a small table, as far as they can be read.
struct Rows {
    rows: Vec<Vec<Value>>,
    complete: bool,
}

fn read_all(c: &Connection, sql: &str, columns: usize) -> Rows {
    let mut rows = Vec::new();
    let run = |rows: &mut Vec<Vec<Value>>| -> rusqlite::Result<()> {
        let mut s = c.prepare(sql)?;
        let mut q = s.query([])?;
        while let Some(r) = q.next()? {
            rows.push(
                (0..columns)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<rusqlite::Result<_>>()?,
            );
        }
        Ok(())
    };
    let complete = run(&mut rows).is_ok();
    Rows { rows, complete }
}

/// What the walk over the events found.
struct Walk {
    /// Ids copied, ascending.
    copied: Vec<i64>,
    /// Inclusive id ranges that could not be read, ascending.
    ranges: Vec<[i64; 2]>,
    idempotency_keys: u64,
}

const EVENT_COLUMNS: &str = "event_type, priority, channel_id, message_id, thread_id, user_id, data, timestamp, expires_at, idem_key";

/// The first id after `pos`, `None` past the last; an error when the seek meets damage.
fn next_id(src: &Connection, pos: i64) -> rusqlite::Result<Option<i64>> {
    src.prepare_cached("SELECT id FROM lmsrt_events WHERE id > ?1 ORDER BY id LIMIT 1")?
        .query_row([pos], |r| r.get(0))
        .optional()
}

/// The first readable id after a damaged stretch that starts right after `pos`: probes
/// `pos + 1, pos + 2, pos + 4, …` until a seek succeeds, then narrows down to the smallest
/// probe that does. Returns that probe's answer (`None`: nothing readable follows).
fn skip_damage(src: &Connection, pos: i64) -> Option<i64> {
    let mut bad = pos;
    let mut step: i64 = 1;
    let (mut good, mut found) = loop {
        let q = pos.checked_add(step)?;
        match next_id(src, q) {
            Ok(found) => break (q, found),
            Err(_) => {
                bad = q;
                step = step.checked_mul(2)?;
            }
        }
    };
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        match next_id(src, mid) {
            Ok(f) => {
                good = mid;
                found = f;
            }
            Err(_) => bad = mid,
        }
    }
    found
}

fn copy_events(src: &Connection, tx: &rusqlite::Transaction<'_>) -> Result<Walk> {
    let mut walk = Walk {
        copied: Vec::new(),
        ranges: Vec::new(),
        idempotency_keys: 0,
    };
    let mut read = src
        .prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM lmsrt_events WHERE id = ?1"
        ))
        .map_err(storage)?;
    let mut insert = tx
        .prepare(&format!(
            "INSERT INTO lmsrt_events (id, {EVENT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))
        .map_err(storage)?;
    let mut pos: i64 = 0;
    loop {
        let id = match next_id(src, pos) {
            Ok(Some(id)) => id,
            Ok(None) => break,
            Err(_) => match skip_damage(src, pos) {
                Some(id) => {
                    walk.ranges.push([pos + 1, id - 1]);
                    id
                }
                None => {
                    // Nothing readable after the damage: the caller bounds this by the
                    // sequence.
                    walk.ranges.push([pos + 1, i64::MAX]);
                    break;
                }
            },
        };
        let row: rusqlite::Result<Vec<Value>> =
            read.query_row([id], |r| (0..10).map(|i| r.get::<_, Value>(i)).collect());
        // A row whose own cells (or overflow pages) are damaged, or whose values break the
        // schema's checks, is lost alone.
        let copied = row.and_then(|v| {
            let keyed = !matches!(v[9], Value::Null);
            let mut p: Vec<Value> = Vec::with_capacity(11);
            p.push(Value::Integer(id));
            p.extend(v);
            insert.execute(rusqlite::params_from_iter(p)).map(|_| keyed)
        });
        match copied {
            Ok(keyed) => {
                walk.copied.push(id);
                walk.idempotency_keys += u64::from(keyed);
            }
            Err(_) => match walk.ranges.last_mut() {
                Some(r) if r[1] == id - 1 => r[1] = id,
                _ => walk.ranges.push([id, id]),
            },
        }
        pos = id;
    }
    Ok(walk)
}
