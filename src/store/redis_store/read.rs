//! A fetch on Redis: the same selection as SQLite's (`fetch::select`), over candidates read
//! from the lane streams.
//!
//! 1. One `MULTI` (a snapshot): the epoch, the head, and per requested channel and lane the
//!    first entries after the lane's position (`XRANGE`). Each entry is a whole event (id,
//!    expiry, thread, type, payload), so filters and expiry are applied and the events taken
//!    from this one read. An arm (channel and lane) whose page ran out before it gave `n + 1`
//!    live matching ids reads on, page by page (rare: it takes a page of expired or
//!    filtered-out entries).
//! 2. Selection, exactly as SQLite's catch-up path: per lane the merged live ids, complete
//!    when every arm was read to the head, else cut at `n + 1`.
//! 3. When the cursor moves: the purge records in the ids it moved over.

use std::collections::HashMap;

use ::redis::{Connection, RedisResult};

use super::{RedisStore, decode, parse_epoch};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::fetch::{Lane, select};
use crate::store::{Batch, FetchRequest};

/// Snapshots a fetch takes at most while the epoch changes under it.
const MAX_EPOCH_RETRIES: u32 = 4;
/// Entries read per arm and page beyond the first (which is `n + 1`).
const PAGE: usize = 256;

/// One lane entry as `XRANGE` answers it: `(stream id, [field, value, …])`.
type RawEntry = (String, Vec<Vec<u8>>);

/// The snapshot's `(epoch, folded)`, head and first pages.
type Snapshot = (
    (Option<String>, Option<i64>),
    Option<i64>,
    Vec<Vec<RawEntry>>,
);

/// One lane entry: the event's id (the stream id `ID-0`), and its fields `x` (expires_at),
/// `h` (thread, empty for none), `t` (type), `d` (the event, for `decode`).
struct Entry {
    id: i64,
    expires_at: i64,
    thread: Option<i64>,
    event_type: String,
    data: Vec<u8>,
}

fn parse_entry((sid, fields): RawEntry) -> Option<Entry> {
    let number = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<i64>().ok();
    let mut e = Entry {
        id: sid.split('-').next()?.parse().ok()?,
        expires_at: 0,
        thread: None,
        event_type: String::new(),
        data: Vec::new(),
    };
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match k.as_slice() {
            b"x" => e.expires_at = number(&v)?,
            b"h" if !v.is_empty() => e.thread = Some(number(&v)?),
            b"t" => e.event_type = String::from_utf8(v).ok()?,
            b"d" => e.data = v,
            _ => {}
        }
    }
    Some(e)
}

/// What one arm read: live matching ids (ascending), and whether it reached the head.
struct Arm {
    live: Vec<i64>,
    complete: bool,
}

/// Whether an entry passes the request's thread and type filters.
fn matches(req: &FetchRequest, thread: Option<i64>, event_type: &str) -> bool {
    req.thread_id.is_none_or(|t| thread == Some(t))
        && (req.types.is_empty()
            || req
                .types
                .binary_search_by(|x| x.as_str().cmp(event_type))
                .is_ok())
}

pub(super) fn fetch(store: &RedisStore, req: &FetchRequest, now: i64) -> Result<Batch> {
    let keys = &store.keys;
    let per_arm = req.limit + 1;
    let arms: Vec<(i64, usize)> = req
        .channels
        .iter()
        .flat_map(|c| (0..4).map(move |l| (*c, l)))
        .collect();
    let mut cursor = req.cursor;
    // Step 1, one snapshot. A cursor of another epoch is read from the start, so the lanes
    // asked for are the cursor's only when its epoch is right (or it has none).
    let mut attempts = 0;
    let (epoch, folded, head, pages) = loop {
        // Each retry follows a change of epoch; one that keeps changing (a Redis flushed
        // again and again) is a fault, not something to spin on.
        attempts += 1;
        if attempts > MAX_EPOCH_RETRIES {
            return Err(Error::Storage(
                "the store's epoch in Redis keeps changing (flushed repeatedly?)".into(),
            ));
        }
        let known = store.epoch();
        let from = |l: usize| {
            if cursor.epoch.is_some_and(|e| e != known) {
                0
            } else {
                cursor.lanes[l]
            }
        };
        let mut p = ::redis::pipe();
        p.atomic()
            .cmd("HMGET")
            .arg(keys.meta())
            .arg("epoch")
            .arg("folded")
            .get(keys.seq());
        for (ch, l) in &arms {
            xrange_after(&mut p, &keys.lane(*ch, *l), from(*l), per_arm);
        }
        let ((epoch, folded), head, pages): Snapshot = store.with_conn(|c| {
            let v: Vec<::redis::Value> = p.query(c)?;
            let mut it = v.into_iter();
            let epoch = ::redis::from_redis_value(it.next().unwrap_or_default())?;
            let head = ::redis::from_redis_value(it.next().unwrap_or_default())?;
            let pages = it
                .map(::redis::from_redis_value)
                .collect::<std::result::Result<Vec<Vec<RawEntry>>, _>>()?;
            Ok((epoch, head, pages))
        })?;
        let epoch = match epoch {
            Some(e) => parse_epoch(&e)?,
            // Redis lost everything (or was flushed): a new epoch, then read again.
            None => {
                store.refresh_epoch()?;
                continue;
            }
        };
        store
            .epoch
            .store(epoch, std::sync::atomic::Ordering::Relaxed);
        let from_start = |e: u32| cursor.epoch.is_some_and(|c| c != e);
        if from_start(known) != from_start(epoch) {
            // The epoch changed under us, so the lanes were read from the wrong start.
            continue;
        }
        break (epoch, folded.unwrap_or(0), head.unwrap_or(0), pages);
    };
    let mut gap = false;
    if cursor.epoch.is_some_and(|e| e != epoch) {
        // A cursor from another epoch: its ids mean nothing here.
        gap = true;
        cursor = Cursor::START;
    } else if cursor.epoch.is_some() && cursor.lanes.iter().any(|p| *p > head) {
        // Past the head under this epoch: Redis lost the newest writes (a failover). Its
        // positions may name ids that will be reused, so it starts over from the head.
        gap = true;
        for p in cursor.lanes.iter_mut() {
            *p = (*p).min(head);
        }
    }
    let old = cursor.lanes;

    // Step 2: candidates per arm, then per lane.
    let mut lanes: [Lane; 4] = Default::default();
    for lane in lanes.iter_mut() {
        lane.complete = true;
    }
    let mut expired: Vec<(usize, i64)> = Vec::new();
    let mut payloads: HashMap<i64, Vec<u8>> = HashMap::new();
    for ((ch, l), page) in arms.iter().zip(pages) {
        let arm = read_arm(
            store,
            req,
            (*ch, *l),
            page,
            (old[*l], head, now),
            &mut expired,
            &mut payloads,
        )?;
        let lane = &mut lanes[*l];
        lane.ids.extend(arm.live);
        lane.complete &= arm.complete;
    }
    for lane in lanes.iter_mut() {
        lane.ids.sort_unstable();
        if !lane.complete {
            // Past the first `per_arm` ids, an incomplete arm may hold smaller ids not read.
            lane.ids.truncate(per_arm);
        }
    }
    let (take, new) = select(req.order, &lanes, &old, head, req.limit);
    let has_more = (0..4).any(|l| take[l] < lanes[l].ids.len() || !lanes[l].complete);
    let mut ids: Vec<i64> = (0..4)
        .flat_map(|l| lanes[l].ids[..take[l]].iter().copied())
        .collect();
    ids.sort_unstable();
    gap |= expired
        .iter()
        .any(|(l, id)| *id > old[*l] && *id <= new[*l]);

    // Step 3: the purge records the cursor moved over.
    let moved: Vec<usize> = (0..4).filter(|l| new[*l] > old[*l]).collect();
    let purged = read_purges(store, &old, &new, &moved)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let json = payloads.get(id).map(Vec::as_slice).unwrap_or_default();
        out.push(decode(*id, json)?);
    }
    gap |= purged.iter().any(|m| purge_record_owed(req, m, &old, &new));
    // Records folded away: a lane that moves across them may have been owed one.
    gap |= moved.iter().any(|l| old[*l] < folded);
    out.sort_by_key(|e: &Event| (e.priority, e.id));
    Ok(Batch {
        events: out,
        cursor: Cursor {
            epoch: Some(epoch),
            lanes: new,
        },
        gap,
        has_more,
    })
}

/// Reads one arm's live matching ids after `from`, up to the head: the first page is given,
/// later ones are read while the arm has fewer than `limit + 1` and its last page was full.
/// Expired matching entries go to `expired`, the live ones' events to `payloads`.
fn read_arm(
    store: &RedisStore,
    req: &FetchRequest,
    (ch, l): (i64, usize),
    first: Vec<RawEntry>,
    (from, head, now): (i64, i64, i64),
    expired: &mut Vec<(usize, i64)>,
    payloads: &mut HashMap<i64, Vec<u8>>,
) -> Result<Arm> {
    let per_arm = req.limit + 1;
    let mut arm = Arm {
        live: Vec::new(),
        complete: false,
    };
    let mut page = first;
    let mut page_size = per_arm;
    loop {
        let mut last = from;
        let read = page.len();
        for raw in page {
            let Some(e) = parse_entry(raw) else { continue };
            last = e.id;
            if e.id > head {
                // Appended after the snapshot: the next fetch sees it.
                arm.complete = true;
                return Ok(arm);
            }
            if !matches(req, e.thread, &e.event_type) {
                continue;
            }
            if e.expires_at <= now {
                expired.push((l, e.id));
            } else {
                arm.live.push(e.id);
                payloads.insert(e.id, e.data);
            }
        }
        if read < page_size || last >= head {
            arm.complete = true;
            return Ok(arm);
        }
        if arm.live.len() >= per_arm {
            return Ok(arm);
        }
        page_size = PAGE;
        let key = store.keys.lane(ch, l);
        page = store.with_conn(|c| next_page(c, &key, last))?;
    }
}

/// Adds to `p` the read of up to `n` entries of the lane stream `key` after id `after`.
fn xrange_after(p: &mut ::redis::Pipeline, key: &str, after: i64, n: usize) {
    p.cmd("XRANGE")
        .arg(key)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(n);
}

fn next_page(c: &mut Connection, key: &str, after: i64) -> RedisResult<Vec<RawEntry>> {
    let mut p = ::redis::pipe();
    xrange_after(&mut p, key, after, PAGE);
    let (page,): (Vec<RawEntry>,) = p.query(c)?;
    Ok(page)
}

/// The purge records in the ids the moved lanes moved over.
fn read_purges(
    store: &RedisStore,
    old: &[i64; 4],
    new: &[i64; 4],
    moved: &[usize],
) -> Result<Vec<String>> {
    if moved.is_empty() {
        return Ok(Vec::new());
    }
    let lo = moved.iter().map(|l| old[*l]).min().unwrap_or(0);
    let hi = moved.iter().map(|l| new[*l]).max().unwrap_or(0);
    store.with_conn(|c| {
        ::redis::cmd("ZRANGE")
            .arg(store.keys.purged())
            .arg(format!("({lo}"))
            .arg(hi)
            .arg("BYSCORE")
            .query(c)
    })
}

/// Whether a purge record (`id|channel|lane|thread|type`) is one the reader was owed: of its
/// channels, lane and filters, in the range its cursor moved over.
fn purge_record_owed(req: &FetchRequest, m: &str, old: &[i64; 4], new: &[i64; 4]) -> bool {
    let mut p = m.splitn(5, '|');
    let (Some(id), Some(ch), Some(l), Some(th), Some(ty)) =
        (p.next(), p.next(), p.next(), p.next(), p.next())
    else {
        return false;
    };
    let (Ok(id), Ok(ch), Ok(l)) = (id.parse::<i64>(), ch.parse::<i64>(), l.parse::<usize>()) else {
        return false;
    };
    let thread = if th.is_empty() { None } else { th.parse().ok() };
    l < 4
        && req.channels.binary_search(&ch).is_ok()
        && id > old[l]
        && id <= new[l]
        && matches(req, thread, ty)
}
