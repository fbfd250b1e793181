//! Batch assembly: which events a fetch returns, the new cursor, and gap detection.
//!
//! A fetch runs in one read transaction, so it sees one snapshot. SQLite commits one writer at
//! a time and ids are assigned inside the write transaction, so every id at or below the
//! snapshot's head is committed: a lane with nothing left to deliver can move its position to
//! the head without skipping anything.
//!
//! It works in three steps:
//!
//! 1. **Candidates.** For each lane, the ids of the next live matching events after the lane's
//!    position. When the cursor is near the head (the live tail), one query reads every
//!    matching row after the lowest lane position, including expired ones (so expiry gaps
//!    are found for free). Otherwise (catch-up) each (channel, lane) is read index-only with a
//!    limit, so the work is bounded by the batch size, not by how far behind the client is.
//! 2. **Selection** in memory, by the request's order (see [`select_priority`]).
//! 3. **Rows** for the selected ids (`rows`), and the gap checks for the ranges the cursor moved
//!    over (`gaps`).

mod gaps;
mod rows;

pub(crate) use self::rows::{events_between, undeliverable_seen};

use std::collections::HashMap;
use std::rc::Rc;

use rusqlite::Connection;
use rusqlite::types::Value;

use self::gaps::{expired_gap, purged_gap};
use self::rows::{COLUMNS, drop_undeliverable, load_rows, row_to_event};
use super::conn::map_sqlite_error;
use super::{Batch, FetchRequest, Order};
use crate::cursor::Cursor;
use crate::error::Result;
use crate::event::Event;

/// The id of the newest event ever appended (0 for an empty log), purged or not.
pub(crate) fn head_id(c: &Connection) -> Result<i64> {
    let mut s = c
        .prepare_cached(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'lmsrt_events'), 0)",
        )
        .map_err(map_sqlite_error)?;
    s.query_row([], |r| r.get(0)).map_err(map_sqlite_error)
}

/// Candidate ids of one lane, ascending, all after the lane's position.
#[derive(Debug, Default, Clone)]
pub(crate) struct Lane {
    pub(crate) ids: Vec<i64>,
    /// True when `ids` holds every pending live event of the lane up to the head.
    pub(crate) complete: bool,
}

/// The per-request SQL filter pieces shared by every query of a fetch.
struct Filter {
    channels: Rc<Vec<Value>>,
    thread: Option<i64>,
    types: Option<Rc<Vec<Value>>>,
}

impl Filter {
    fn new(req: &FetchRequest) -> Filter {
        Filter {
            channels: Rc::new(req.channels.iter().map(|c| Value::Integer(*c)).collect()),
            thread: req.thread_id,
            types: (!req.types.is_empty())
                .then(|| Rc::new(req.types.iter().map(|t| Value::Text(t.clone())).collect())),
        }
    }

    /// SQL conditions for thread and type, using parameters `?8` and `?9`.
    fn extra_sql(&self) -> &'static str {
        match (self.thread.is_some(), self.types.is_some()) {
            (false, false) => "",
            (true, false) => " AND thread_id = ?8",
            (false, true) => " AND event_type IN rarray(?9)",
            (true, true) => " AND thread_id = ?8 AND event_type IN rarray(?9)",
        }
    }

    fn bind_extra(&self, s: &mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<()> {
        if let Some(t) = self.thread {
            s.raw_bind_parameter(8, t)?;
        }
        if let Some(ty) = &self.types {
            s.raw_bind_parameter(9, ty.clone())?;
        }
        Ok(())
    }
}

/// Fetches one batch. `now` is the expiry reference time in ms; `window_ids` is
/// [`Config::live_tail_window`](super::Config::live_tail_window).
pub(crate) fn fetch(
    c: &Connection,
    req: &FetchRequest,
    epoch: u32,
    now: i64,
    window_ids: i64,
) -> Result<Batch> {
    // One snapshot for every query below.
    let tx = c.unchecked_transaction().map_err(map_sqlite_error)?;
    let head = head_id(&tx)?;
    let mut cursor = req.cursor;
    let mut gap = false;
    if cursor.epoch.is_some_and(|e| e != epoch) {
        // A cursor from another database file: its ids mean nothing here.
        gap = true;
        cursor = Cursor::START;
    }
    let old = cursor.lanes;
    let floor = *old.iter().min().unwrap_or(&0);
    if floor >= head {
        return Ok(Batch {
            events: Vec::new(),
            cursor: Cursor {
                epoch: Some(epoch),
                lanes: old,
            },
            gap,
            has_more: false,
        });
    }
    let filter = Filter::new(req);
    let n = req.limit;

    let mut window = None;
    let lanes: [Lane; 4] = if head - floor <= window_ids {
        let w = window_candidates(&tx, &filter, &old, now)?;
        let lanes = w.lanes.clone();
        window = Some(w);
        lanes
    } else {
        // n + 1 per arm: the first n + 1 of the merged lane are then exact, which tells
        // whether more remain after the n we may take.
        catch_up_candidates(&tx, &filter, &old, head, now, n + 1)?
    };

    let (take, new) = select(req.order, &lanes, &old, head, n);
    let has_more = (0..4).any(|l| take[l] < lanes[l].ids.len() || !lanes[l].complete);
    let mut events = match &mut window {
        Some(w) => w.take(&take),
        None => {
            let mut ids: Vec<i64> = (0..4)
                .flat_map(|l| lanes[l].ids[..take[l]].iter().copied())
                .collect();
            ids.sort_unstable();
            load_rows(&tx, &ids)?
        }
    };
    // The cursor has moved past every selected event: one that cannot be delivered is left
    // out, and the batch reports the gap, as for an event that expired.
    gap |= drop_undeliverable(&mut events);
    // Priority first, then append order; for sequential batches this is the in-batch sort.
    events.sort_by_key(|e| (e.priority, e.id));

    let moved: Vec<usize> = (0..4).filter(|l| new[*l] > old[*l]).collect();
    if !moved.is_empty() {
        gap |= match &window {
            Some(w) => w.expired_between(&old, &new),
            None => expired_gap(&tx, &filter, &old, &new, &moved, now)?,
        };
        gap = gap || purged_gap(&tx, &filter, &old, &new, &moved)?;
    }
    tx.finish().map_err(map_sqlite_error)?;
    Ok(Batch {
        events,
        cursor: Cursor {
            epoch: Some(epoch),
            lanes: new,
        },
        gap,
        has_more,
    })
}

/// Builds a batch from events held in memory (the daemon's fan-out), exactly as a fetch would.
///
/// `events` must hold, ascending by id, every event of the log with an id in
/// `(floor, head]` where `floor` is the lowest lane position of the request's cursor — at least
/// those of the requested channels; others are ignored. Returns `None` when the cursor comes
/// from another database (the caller then fetches from the store, which reports the gap).
pub(crate) fn assemble(
    req: &FetchRequest,
    events: &[Event],
    head: i64,
    epoch: u32,
    now: i64,
) -> Option<Batch> {
    let cursor = req.cursor;
    if cursor.epoch.is_some_and(|e| e != epoch) {
        return None;
    }
    let old = cursor.lanes;
    let matching = events.iter().filter(|e| {
        e.id <= head
            && req.channels.binary_search(&e.channel_id).is_ok()
            && req.thread_id.is_none_or(|t| e.thread_id == Some(t))
            && (req.types.is_empty() || req.types.binary_search(&e.event_type).is_ok())
    });
    let mut window = Window::split(matching, &old, now);
    let (take, new) = select(req.order, &window.lanes, &old, head, req.limit);
    let has_more = (0..4).any(|l| take[l] < window.lanes[l].ids.len());
    let gap = window.expired_between(&old, &new);
    let events = window.take(&take).into_iter().cloned().collect();
    Some(Batch {
        events,
        cursor: Cursor {
            epoch: Some(epoch),
            lanes: new,
        },
        gap,
        has_more,
    })
}

/// Candidates read in full: the live ones split into lanes, the expired ones remembered.
struct Window<E> {
    lanes: [Lane; 4],
    live: HashMap<i64, E>,
    expired: Vec<(usize, i64)>,
}

impl<E: std::borrow::Borrow<Event>> Window<E> {
    /// Splits `events` (ascending by id, all matching the request, none above the head) into
    /// lanes, skipping those at or below their lane's position. Every lane is complete: the
    /// caller passes everything up to the head.
    fn split(events: impl IntoIterator<Item = E>, old: &[i64; 4], now: i64) -> Window<E> {
        let mut w = Window {
            lanes: Default::default(),
            live: HashMap::new(),
            expired: Vec::new(),
        };
        for e in events {
            let (id, l, expires_at) = {
                let ev = e.borrow();
                (ev.id, ev.priority.lane(), ev.expires_at)
            };
            if id <= old[l] {
                continue;
            }
            if expires_at <= now {
                w.expired.push((l, id));
            } else {
                w.lanes[l].ids.push(id);
                w.live.insert(id, e);
            }
        }
        for lane in w.lanes.iter_mut() {
            lane.complete = true;
        }
        w
    }

    /// Whether an expired event lies in a range the cursor moved over.
    fn expired_between(&self, old: &[i64; 4], new: &[i64; 4]) -> bool {
        self.expired
            .iter()
            .any(|(l, id)| *id > old[*l] && *id <= new[*l])
    }

    /// The first `take[l]` live events of each lane.
    fn take(&mut self, take: &[usize; 4]) -> Vec<E> {
        (0..4)
            .flat_map(|l| self.lanes[l].ids[..take[l]].to_vec())
            .filter_map(|id| self.live.remove(&id))
            .collect()
    }
}

pub(crate) fn select(
    order: Order,
    lanes: &[Lane; 4],
    old: &[i64; 4],
    head: i64,
    n: usize,
) -> ([usize; 4], [i64; 4]) {
    match order {
        Order::Priority => select_priority(lanes, old, head, n),
        Order::Sequential => select_sequential(lanes, old, head, n),
    }
}

/// Live tail: every row of the requested channels after the lowest lane position, in one query.
fn window_candidates(
    c: &Connection,
    f: &Filter,
    old: &[i64; 4],
    now: i64,
) -> Result<Window<Event>> {
    let floor = *old.iter().min().unwrap_or(&0);
    let sql = format!(
        "SELECT {COLUMNS} FROM lmsrt_events
         WHERE channel_id IN rarray(?1) AND priority IN (1, 2, 3, 4) AND id > ?2{}
         ORDER BY id",
        f.extra_sql()
    );
    let mut s = c.prepare_cached(&sql).map_err(map_sqlite_error)?;
    s.raw_bind_parameter(1, f.channels.clone())
        .and_then(|_| s.raw_bind_parameter(2, floor))
        .and_then(|_| f.bind_extra(&mut s))
        .map_err(map_sqlite_error)?;
    let rows = s
        .raw_query()
        .mapped(row_to_event)
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_sqlite_error)?;
    Ok(Window::split(rows, old, now))
}

/// Catch-up: for each lane behind the head and each channel, the first `per_arm` live ids,
/// read from the index alone; merged per lane.
fn catch_up_candidates(
    c: &Connection,
    f: &Filter,
    old: &[i64; 4],
    head: i64,
    now: i64,
    per_arm: usize,
) -> Result<[Lane; 4]> {
    let sql = format!(
        "SELECT id FROM lmsrt_events
         WHERE channel_id = ?1 AND priority = ?2 AND id > ?3 AND expires_at > ?4{}
         ORDER BY id LIMIT ?5",
        f.extra_sql()
    );
    let mut s = c.prepare_cached(&sql).map_err(map_sqlite_error)?;
    let mut lanes: [Lane; 4] = Default::default();
    for (l, lane) in lanes.iter_mut().enumerate() {
        lane.complete = true;
        if old[l] >= head {
            continue;
        }
        for ch in f.channels.iter() {
            let Value::Integer(ch) = ch else { continue };
            s.raw_bind_parameter(1, *ch)
                .and_then(|_| s.raw_bind_parameter(2, l as i64 + 1))
                .and_then(|_| s.raw_bind_parameter(3, old[l]))
                .and_then(|_| s.raw_bind_parameter(4, now))
                .and_then(|_| s.raw_bind_parameter(5, per_arm as i64))
                .and_then(|_| f.bind_extra(&mut s))
                .map_err(map_sqlite_error)?;
            let mut got = 0;
            let mut q = s.raw_query();
            while let Some(r) = q.next().map_err(map_sqlite_error)? {
                lane.ids.push(r.get(0).map_err(map_sqlite_error)?);
                got += 1;
            }
            if got >= per_arm {
                lane.complete = false;
            }
        }
        lane.ids.sort_unstable();
        if !lane.complete {
            // Past the first `per_arm` ids, other arms may hold smaller ids we did not read.
            lane.ids.truncate(per_arm);
        }
    }
    Ok(lanes)
}

/// Priority order: each lane with pending events first gets a share of the batch
/// (`max(1, n / 8)`), so a flood in one lane cannot starve another; the rest fills from the most
/// urgent lane down. When the batch is too small for every pending lane to get a slot, the lanes
/// whose oldest pending event is oldest go first, so every lane still makes progress.
///
/// Returns how many candidates to take per lane, and the new lane positions.
pub(crate) fn select_priority(
    lanes: &[Lane; 4],
    old: &[i64; 4],
    head: i64,
    n: usize,
) -> ([usize; 4], [i64; 4]) {
    let share = (n / 8).max(1);
    let mut take = [0usize; 4];
    for l in 0..4 {
        take[l] = share.min(lanes[l].ids.len());
    }
    if take.iter().sum::<usize>() > n {
        let mut pending: Vec<usize> = (0..4).filter(|l| take[*l] > 0).collect();
        pending.sort_by_key(|l| lanes[*l].ids[0]);
        take = [0; 4];
        for l in pending.into_iter().take(n) {
            take[l] = 1;
        }
    }
    let mut remaining = n - take.iter().sum::<usize>();
    for l in 0..4 {
        let extra = remaining.min(lanes[l].ids.len() - take[l]);
        take[l] += extra;
        remaining -= extra;
    }
    (take, new_positions(lanes, old, head, &take))
}

fn new_positions(lanes: &[Lane; 4], old: &[i64; 4], head: i64, take: &[usize; 4]) -> [i64; 4] {
    let mut new = *old;
    for l in 0..4 {
        let lane = &lanes[l];
        if lane.complete && take[l] == lane.ids.len() {
            // Everything pending in this lane is delivered: all of it up to the head is done.
            new[l] = old[l].max(head);
        } else if take[l] > 0 {
            new[l] = lane.ids[take[l] - 1];
        }
    }
    new
}

/// Sequential order: the next `n` candidates by id across lanes. Every lane's position moves to
/// the last id taken (or the head, when nothing is left), since every matching event up to that
/// id has now been delivered.
pub(crate) fn select_sequential(
    lanes: &[Lane; 4],
    old: &[i64; 4],
    head: i64,
    n: usize,
) -> ([usize; 4], [i64; 4]) {
    let mut all: Vec<(i64, usize)> = (0..4)
        .flat_map(|l| lanes[l].ids.iter().map(move |id| (*id, l)))
        .collect();
    all.sort_unstable();
    let complete = lanes.iter().all(|l| l.complete);
    let mut take = [0usize; 4];
    for (_, l) in all.iter().take(n) {
        take[*l] += 1;
    }
    let mut new = *old;
    if complete && all.len() <= n {
        for p in new.iter_mut() {
            *p = (*p).max(head);
        }
    } else if let Some((last, _)) = all.get(n.min(all.len()).saturating_sub(1)) {
        for p in new.iter_mut() {
            *p = (*p).max(*last);
        }
    }
    (take, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(ids: &[i64], complete: bool) -> Lane {
        Lane {
            ids: ids.to_vec(),
            complete,
        }
    }

    #[test]
    fn priority_fills_urgent_first_but_keeps_a_share_for_others() {
        let flood: Vec<i64> = (100..200).collect();
        let lanes = [
            lane(&flood, true),
            lane(&[], true),
            lane(&[], true),
            lane(&[5, 6], true),
        ];
        let (take, new) = select_priority(&lanes, &[0; 4], 300, 16);
        // share = 2: lane 4 gets both of its events, lane 1 the remaining 14.
        assert_eq!(take, [14, 0, 0, 2]);
        assert_eq!(new, [113, 300, 300, 300]);
    }

    #[test]
    fn tiny_batches_still_move_every_lane() {
        let lanes = [
            lane(&[10, 11, 12], true),
            lane(&[], true),
            lane(&[], true),
            lane(&[3], true),
        ];
        // One slot: the lane whose oldest event is older goes first.
        let (take, new) = select_priority(&lanes, &[0; 4], 20, 1);
        assert_eq!(take, [0, 0, 0, 1]);
        assert_eq!(new, [0, 20, 20, 20]);
    }

    #[test]
    fn incomplete_lane_stops_at_the_last_taken_id() {
        let lanes = [
            lane(&[1, 2, 3], false),
            lane(&[], true),
            lane(&[], true),
            lane(&[], true),
        ];
        let (take, new) = select_priority(&lanes, &[0; 4], 99, 3);
        assert_eq!(take, [3, 0, 0, 0]);
        assert_eq!(new, [3, 99, 99, 99]);
    }

    #[test]
    fn sequential_moves_all_lanes_to_the_last_id() {
        let lanes = [
            lane(&[4, 9], true),
            lane(&[2], true),
            lane(&[], true),
            lane(&[7], true),
        ];
        let (take, new) = select_sequential(&lanes, &[1; 4], 10, 3);
        assert_eq!(take, [1, 1, 0, 1]);
        assert_eq!(new, [7; 4]);
        let (take, new) = select_sequential(&lanes, &[1; 4], 10, 10);
        assert_eq!(take, [2, 1, 0, 1]);
        assert_eq!(new, [10; 4]);
    }
}
