//! Reading event rows: the columns a fetch selects, decoding a row, and the events whose stored
//! data cannot be delivered (counted, and treated as expired).

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Row, params};

use crate::error::Result;
use crate::event::{Event, Priority, is_deliverable};
use crate::store::conn::map_sqlite_error;

/// The columns every query that reads whole events selects, in [`row_to_event`]'s order.
pub(super) const COLUMNS: &str = "id, event_type, priority, channel_id, message_id, thread_id, user_id, data, timestamp, expires_at";

/// Rows read (by any store of this process) whose data could not be delivered, and so were
/// treated as expired (see [`undeliverable`]).
static UNDELIVERABLE: AtomicU64 = AtomicU64::new(0);

/// How many stored events this process has met that could not be delivered (data that is not
/// text, not UTF-8, not a JSON object, nested too deep or holding a lone surrogate escape:
/// written by an older version, by hand, or damaged) and skipped as if expired.
pub(crate) fn undeliverable_seen() -> u64 {
    UNDELIVERABLE.load(Ordering::Relaxed)
}

/// The text of a stored column, or `None` when it is not text or not UTF-8.
fn text(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        _ => None,
    })
}

/// An event from a row of [`COLUMNS`], as stored (its data is not checked).
pub(super) fn row_to_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    let p: i64 = r.get(2)?;
    let event_type = text(r, 1)?;
    let data = text(r, 7)?;
    let mut e = Event {
        id: r.get(0)?,
        event_type: event_type.clone().unwrap_or_default(),
        // The CHECK constraint keeps stored priorities in range.
        priority: Priority::from_i64(p).unwrap_or(Priority::Normal),
        channel_id: r.get(3)?,
        message_id: r.get(4)?,
        thread_id: r.get(5)?,
        user_id: r.get(6)?,
        data: data.unwrap_or_default(),
        timestamp: r.get(8)?,
        expires_at: r.get(9)?,
    };
    if event_type.is_none() {
        // Not even its type can be read: nothing about it is deliverable.
        undeliverable(&mut e);
    }
    Ok(e)
}

/// Marks an event that cannot be delivered as expired, with `{}` as its data.
///
/// A reader that failed on such a row would fail every fetch of its channel until it expired
/// (a poison event: a PHP reader's `json_decode` throws on the whole batch, a `limit=1` reader
/// can never step past it). Treated as expired, it is never delivered, the cursor moves past
/// it, and the batch that moves past it says `gap: true`: the client resynchronises, as for
/// any event it could not receive. Its data is replaced so that nothing can try to decode it.
fn undeliverable(e: &mut Event) {
    UNDELIVERABLE.fetch_add(1, Ordering::Relaxed);
    e.expires_at = 0;
    e.data = "{}".to_owned();
}

/// [`row_to_event`], with the data checked as an append checks it: for rows that are handed
/// on as they are (the tail reader's, which the daemon keeps in memory).
fn row_to_checked_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    let mut e = row_to_event(r)?;
    if e.expires_at != 0 && !is_deliverable(&e.data) {
        undeliverable(&mut e);
    }
    Ok(e)
}

/// Drops the events of a batch that cannot be delivered (see [`undeliverable`]); returns
/// whether it dropped any. Only the events a fetch selected are checked, once each.
pub(super) fn drop_undeliverable(events: &mut Vec<Event>) -> bool {
    let before = events.len();
    events.retain_mut(|e| {
        if e.expires_at != 0 && is_deliverable(&e.data) {
            return true;
        }
        if e.expires_at != 0 {
            undeliverable(e);
        }
        false
    });
    events.len() < before
}

/// Every event with an id in `(after, upto]`, ascending, at most `limit`.
pub(crate) fn events_between(
    c: &Connection,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Event>> {
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM lmsrt_events WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
        ))
        .map_err(map_sqlite_error)?;
    s.query_map(params![after, upto, limit], row_to_checked_event)
        .map_err(map_sqlite_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_sqlite_error)
}

/// The events with these ids, in no particular order.
pub(super) fn load_rows(c: &Connection, ids: &[i64]) -> Result<Vec<Event>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut s = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM lmsrt_events WHERE id IN rarray(?1)"
        ))
        .map_err(map_sqlite_error)?;
    let v: Rc<Vec<Value>> = Rc::new(ids.iter().map(|i| Value::Integer(*i)).collect());
    let rows = s
        .query_map(params![v], row_to_event)
        .map_err(map_sqlite_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_sqlite_error)?;
    Ok(rows)
}
