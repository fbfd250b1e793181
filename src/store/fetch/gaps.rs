//! Gap detection: whether the ranges a cursor moved over held an event the client would have
//! received that expired or was purged.

use rusqlite::{Connection, Statement};

use super::Filter;
use crate::error::Result;
use crate::store::conn::map_sqlite_error;

/// Whether an expired (not yet purged) matching event lies in a range the cursor moved over.
pub(super) fn expired_gap(
    c: &Connection,
    f: &Filter,
    old: &[i64; 4],
    new: &[i64; 4],
    moved: &[usize],
    now: i64,
) -> Result<bool> {
    // Cheap probe on the expiry index first: usually nothing at all has expired.
    let any: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM lmsrt_events WHERE expires_at <= ?1)")
        .and_then(|mut s| s.query_row([now], |r| r.get(0)))
        .map_err(map_sqlite_error)?;
    if !any {
        return Ok(false);
    }
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM lmsrt_events
         WHERE channel_id IN rarray(?1) AND priority = ?2 AND id > ?3 AND id <= ?4
           AND expires_at <= ?5{})",
        f.extra_sql()
    );
    let mut s = c.prepare_cached(&sql).map_err(map_sqlite_error)?;
    for &l in moved {
        s.raw_bind_parameter(1, f.channels.clone())
            .and_then(|_| s.raw_bind_parameter(2, l as i64 + 1))
            .and_then(|_| s.raw_bind_parameter(3, old[l]))
            .and_then(|_| s.raw_bind_parameter(4, new[l]))
            .and_then(|_| s.raw_bind_parameter(5, now))
            .and_then(|_| f.bind_extra(&mut s))
            .map_err(map_sqlite_error)?;
        if exists(&mut s)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a purged event the client would have received lies in a range the cursor moved
/// over.
///
/// Exact for everything purged since schema version 2: each purged event is recorded with its
/// channel, lane, thread and type, so a range that held only live events, or only events of
/// other threads or types, is no gap. What has no exact record (folded away far behind the
/// head, purged before the upgrade, or since by a process running version 1 code) is checked
/// as an interval: a cursor behind it may be told of a gap it was not owed, never spared one.
pub(super) fn purged_gap(
    c: &Connection,
    f: &Filter,
    old: &[i64; 4],
    new: &[i64; 4],
    moved: &[usize],
) -> Result<bool> {
    // One scan of the ids the cursor moved over, in any lane (the records are keyed by id
    // alone, which keeps purges cheap; see `schema::V2`): usually short, since purged events
    // are older than a client that keeps up, and it stops at the first record it owes.
    let lo = moved.iter().map(|l| old[*l]).min().unwrap_or(0);
    let hi = moved.iter().map(|l| new[*l]).max().unwrap_or(0);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM lmsrt_purged_events
         WHERE id > ?2 AND id <= ?3 AND channel_id IN rarray(?1)
           AND ((priority = 1 AND id > ?10 AND id <= ?11) OR (priority = 2 AND id > ?12 AND id <= ?13)
             OR (priority = 3 AND id > ?14 AND id <= ?15) OR (priority = 4 AND id > ?16 AND id <= ?17)){})",
        f.extra_sql()
    );
    let mut s = c.prepare_cached(&sql).map_err(map_sqlite_error)?;
    s.raw_bind_parameter(1, f.channels.clone())
        .and_then(|_| s.raw_bind_parameter(2, lo))
        .and_then(|_| s.raw_bind_parameter(3, hi))
        .and_then(|_| {
            (0..4).try_for_each(|l| {
                s.raw_bind_parameter(10 + 2 * l, old[l])?;
                s.raw_bind_parameter(11 + 2 * l, new[l])
            })
        })
        .and_then(|_| f.bind_extra(&mut s))
        .map_err(map_sqlite_error)?;
    if exists(&mut s)? {
        return Ok(true);
    }
    folded_gap(c, f, old, new, moved)
}

/// The answer of a bound `SELECT EXISTS (…)` statement.
fn exists(s: &mut Statement<'_>) -> Result<bool> {
    let mut q = s.raw_query();
    match q.next().map_err(map_sqlite_error)? {
        Some(r) => r.get::<_, bool>(0).map_err(map_sqlite_error),
        None => Ok(false),
    }
}

/// Whether the part of a requested (channel, lane)'s purge interval that has no exact records
/// (see `schema::V2`) meets a range the cursor moved over.
fn folded_gap(
    c: &Connection,
    f: &Filter,
    old: &[i64; 4],
    new: &[i64; 4],
    moved: &[usize],
) -> Result<bool> {
    let mut s = c
        // Channel 0 covers every channel: what a salvage lost without knowing its channel.
        .prepare_cached(
            "SELECT priority, lo, hi, exact_lo, exact_hi, folded_hi FROM lmsrt_purged
             WHERE channel_id IN rarray(?1) OR channel_id = 0",
        )
        .map_err(map_sqlite_error)?;
    s.raw_bind_parameter(1, f.channels.clone())
        .map_err(map_sqlite_error)?;
    let mut q = s.raw_query();
    while let Some(r) = q.next().map_err(map_sqlite_error)? {
        let get = |i| r.get::<_, Option<i64>>(i).map_err(map_sqlite_error);
        let (p, lo, hi) = (get(0)?.unwrap_or(0), get(1)?, get(2)?);
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        // Widened by a version 1 process since: all of it may hold unrecorded purges.
        let widened = get(3)? != Some(lo) || get(4)? != Some(hi);
        let coarse_hi = if widened { Some(hi) } else { get(5)? };
        let l = (p - 1).clamp(0, 3) as usize;
        if let Some(h) = coarse_hi
            && moved.contains(&l)
            && lo <= new[l]
            && h > old[l]
        {
            return Ok(true);
        }
    }
    Ok(false)
}
