//! The Redis engine behind [`EventStore`](super::EventStore) (cargo feature `redis`): the log
//! in one Redis (one hash slot per store), shared by every host. Design and the reasons for it:
//! `docs/redis.md`. The public methods, and what they promise, are documented on `EventStore`;
//! this file holds the engine's state and its writes; `url` the location's forms, `connect`
//! its connections (Cluster redirects, pool, `WAIT`), `read` the fetch, `wake` the waits, `scripts` the Lua, `keys` the key
//! names.

mod connect;
mod feed;
mod keys;
mod read;
mod scripts;
mod stats;
mod url;
mod wake;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::Value;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use self::connect::{Endpoint, Pooled};
use self::keys::Keys;
use self::url::Replicas;
use super::tail::TailCallback;

/// What the shared guards (`guards::redis`) take from the engine: the location's forms, hash
/// slots and a cluster's map, and which replies are a cluster's redirects.
pub(crate) mod for_guards {
    pub(crate) use super::connect::{cluster_reply, slot_ranges};
    pub(crate) use super::url::{NodeUrl, Target, hash_slot, shared_location};
}
use super::{Batch, Config, FetchRequest, Subscription, maintenance, schema, writer};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::event::{Event, Priority};

/// Purge records kept (about 100 bytes of Redis memory each); older ones are folded into
/// one bound, which answers `gap` coarsely (see `scripts::PURGE`).
const PURGE_RECORDS: usize = 100_000;
/// Highest id a Redis store hands out: Lua numbers are doubles, exact up to 2^53.
pub(crate) const MAX_ID: i64 = (1 << 53) - 1;

/// The event log on Redis.
pub(crate) struct RedisStore {
    endpoint: Arc<Endpoint>,
    keys: Keys,
    /// `WAIT` after every acknowledged write (`?wait_replicas=`).
    replicas: Option<Replicas>,
    config: Config,
    /// The URL without its password, for [`path`](Self::path).
    shown: PathBuf,
    /// The epoch last read from Redis (shared with the tail thread's [`companion`](Self::companion)).
    epoch: Arc<AtomicU32>,
    pool: Mutex<Vec<Pooled>>,
    closed: Arc<AtomicBool>,
    wake: Arc<wake::Wake>,
    feed: Arc<feed::Feed>,
    purger: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// [`PURGE_RECORDS`], smaller in tests.
    purge_records: usize,
    /// Shared with companions, like `epoch`.
    stats: Arc<stats::Stats>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown)
            .field("epoch", &self.epoch())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// An event as stored in its lane entry's `d` field (its id is the entry's id).
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    t: &'a str,
    p: u8,
    c: i64,
    m: Option<i64>,
    th: Option<i64>,
    u: i64,
    #[serde(borrow)]
    d: &'a RawValue,
    ts: i64,
    x: i64,
}

impl RedisStore {
    /// Opens the store at `url` (`config` is checked), creating its epoch if it has none.
    pub(crate) fn open(url: &str, config: Config) -> Result<RedisStore> {
        let location = url::parse(url)?;
        let mut store = RedisStore::new(
            Arc::new(Endpoint::new(location.target)),
            Keys::new(&location.name)?,
            config,
            PathBuf::from(location.shown),
        );
        store.replicas = location.replicas;
        store.refresh_epoch()?;
        if let Some(every) = store.config.purge_interval {
            store.start_purger(every)?;
        }
        Ok(store)
    }

    /// A store on `endpoint` with no connection yet and no purger.
    fn new(endpoint: Arc<Endpoint>, keys: Keys, config: Config, shown: PathBuf) -> RedisStore {
        RedisStore {
            endpoint,
            replicas: None,
            shown,
            wake: Arc::new(wake::Wake::new(keys.wake())),
            feed: Arc::default(),
            keys,
            config,
            epoch: Arc::new(AtomicU32::new(0)),
            pool: Mutex::new(Vec::new()),
            closed: Arc::new(AtomicBool::new(false)),
            purger: Mutex::new(None),
            purge_records: PURGE_RECORDS,
            stats: Arc::default(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.shown
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A store on the same Redis, keys, settings and epoch, with connections of its own and no
    /// purger: what a background thread of this store works through.
    fn companion(&self) -> RedisStore {
        let mut s = RedisStore::new(
            self.endpoint.clone(),
            self.keys.clone(),
            Config {
                purge_interval: None,
                ..self.config.clone()
            },
            PathBuf::new(),
        );
        s.epoch = self.epoch.clone();
        s.replicas = self.replicas;
        s.stats = self.stats.clone();
        s
    }

    /// See [`EventStore::subscribe`](crate::EventStore::subscribe); the thread that feeds
    /// subscribers is in `feed`.
    pub(crate) fn subscribe(&self, f: TailCallback) -> Result<Subscription> {
        self.check_open()?;
        self.feed.subscribe(self, f)
    }

    pub(crate) fn engine_stats(&self) -> super::EngineStats {
        self.stats.snapshot()
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Reads the epoch, creating it when Redis has none (first open, or Redis lost its data).
    fn refresh_epoch(&self) -> Result<u32> {
        let meta = self.keys.meta();
        let epoch: String = self.with_conn(|c| {
            ::redis::pipe()
                .atomic()
                .cmd("HSETNX")
                .arg(&meta)
                .arg("epoch")
                .arg(schema::random_u32())
                .ignore()
                .cmd("HGET")
                .arg(&meta)
                .arg("epoch")
                .query::<(String,)>(c)
                .map(|(e,)| e)
        })?;
        let epoch = parse_epoch(&epoch)?;
        self.epoch.store(epoch, Ordering::Relaxed);
        Ok(epoch)
    }

    /// The epoch and the head, read together.
    pub(crate) fn epoch_and_head(&self) -> Result<(u32, i64)> {
        self.check_open()?;
        let (epoch, head): (Option<String>, Option<i64>) = self.with_conn(|c| {
            ::redis::pipe()
                .atomic()
                .hget(self.keys.meta(), "epoch")
                .get(self.keys.seq())
                .query(c)
        })?;
        let epoch = match epoch {
            Some(e) => {
                let e = parse_epoch(&e)?;
                self.epoch.store(e, Ordering::Relaxed);
                e
            }
            None => self.refresh_epoch()?,
        };
        Ok((epoch, head.unwrap_or(0)))
    }

    pub(crate) fn append_rows(&self, rows: Vec<writer::Row>) -> Result<Vec<i64>> {
        self.check_open()?;
        let script = scripts::append();
        let mut inv = script.prepare_invoke();
        let keyed = rows.iter().any(|r| r.event.idempotency_key.is_some());
        inv.key(self.keys.meta())
            .key(self.keys.seq())
            .key(self.keys.lanes())
            .key(self.keys.expiry())
            .key(self.keys.idem())
            .arg(schema::random_u32())
            .arg(self.keys.wake())
            .arg(if keyed { "1" } else { "0" });
        for row in &rows {
            let e = &row.event;
            let data: &RawValue = serde_json::from_str(&e.data)
                .map_err(|err| Error::Internal(format!("validated data: {err}")))?;
            let payload = serde_json::to_string(&Stored {
                t: &e.event_type,
                p: row.priority.as_u8(),
                c: e.channel_id,
                m: e.message_id,
                th: e.thread_id,
                u: e.user_id,
                d: data,
                ts: row.timestamp,
                x: row.expires_at,
            })
            .map_err(|err| Error::Internal(format!("event encoding: {err}")))?;
            inv.key(self.keys.lane(e.channel_id, row.priority.lane()))
                .arg(payload)
                .arg(e.thread_id.map(|t| t.to_string()).unwrap_or_default())
                .arg(&e.event_type)
                .arg(row.expires_at)
                .arg(e.idempotency_key.as_deref().unwrap_or(""))
                .arg(
                    e.idempotency_key
                        .as_ref()
                        .map(|_| fingerprint(row))
                        .unwrap_or_default(),
                );
        }
        // Running it twice is harmless only when every event has a key (the second run
        // finds them all and writes nothing).
        let may_repeat = rows.iter().all(|r| r.event.idempotency_key.is_some());
        let reply: Value = self.with_conn_replicated(may_repeat, |c| inv.invoke(c))?;
        match reply {
            Value::Array(ids) if ids.len() == rows.len() => ids.iter().map(as_i64).collect(),
            Value::BulkString(b) if b.starts_with(b"IDEM") => Err(Error::IdempotencyConflict(
                String::from_utf8_lossy(&b[4..]).into_owned(),
            )),
            other => Err(Error::Internal(format!(
                "unexpected reply to an append: {other:?}"
            ))),
        }
    }

    /// `req` is normalized.
    pub(crate) fn fetch(&self, req: &FetchRequest) -> Result<Batch> {
        self.check_open()?;
        read::fetch(self, req, self.config.clock.now_ms())
    }

    /// `req` is normalized.
    pub(crate) fn wait(&self, req: FetchRequest, timeout: Duration) -> Result<Batch> {
        wake::wait(self, req, Instant::now() + timeout)
    }

    /// `past` is checked against the store's range; here also against [`MAX_ID`].
    pub(crate) fn advance_ids(&self, past: i64) -> Result<i64> {
        self.check_open()?;
        if past > MAX_ID - 1 {
            return Err(Error::InvalidArgument(format!(
                "advance_ids: past must be 0 to {} on a Redis store, not {past}",
                MAX_ID - 1
            )));
        }
        let (head, _moved): (i64, i64) = self.with_conn_replicated(true, |c| {
            scripts::advance()
                .key(self.keys.seq())
                .key(self.keys.meta())
                .arg(past)
                .arg(schema::random_u32())
                .arg(self.keys.wake())
                .invoke(c)
        })?;
        Ok(head)
    }

    pub(crate) fn purge_expired(&self, max_rows: usize) -> Result<usize> {
        self.check_open()?;
        purge(self, &self.config, max_rows, &self.closed)
    }

    /// `consumer` is checked.
    pub(crate) fn commit_cursor(&self, consumer: &str, cursor: &Cursor) -> Result<()> {
        self.check_open()?;
        self.with_conn_replicated(true, |c| {
            ::redis::cmd("HSET")
                .arg(self.keys.cursors())
                .arg(consumer)
                .arg(cursor.to_string())
                .exec(c)
        })
    }

    /// `consumer` is checked.
    pub(crate) fn load_cursor(&self, consumer: &str) -> Result<Option<String>> {
        self.check_open()?;
        self.with_conn(|c| {
            ::redis::cmd("HGET")
                .arg(self.keys.cursors())
                .arg(consumer)
                .query(c)
        })
    }

    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.wake.shutdown();
        self.feed.shutdown();
        if let Some(h) = self.purger.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn start_purger(&self, every: Duration) -> Result<()> {
        let closed = self.closed.clone();
        // A store of its own: the purge runs as it does for a caller of purge_expired.
        let store = self.companion();
        let handle = std::thread::Builder::new()
            .name("lmsrt-redis-purger".into())
            .spawn(move || {
                let mut next = Instant::now() + every;
                while !closed.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now < next {
                        // Short naps so close() does not wait a whole interval.
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next = now + every;
                    let _ = purge(&store, &store.config, usize::MAX, &closed);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the purger thread: {e}")))?;
        *self.purger.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Purges expired events in chunks of [`Config::purge_chunk`] until `max_rows` are gone, none
/// is left, or `stop` is set.
fn purge(store: &RedisStore, config: &Config, max_rows: usize, stop: &AtomicBool) -> Result<usize> {
    let mut total = 0;
    while total < max_rows && !stop.load(Ordering::SeqCst) {
        let chunk = config.purge_chunk.min(max_rows - total);
        let started = Instant::now();
        let n: usize = store.with_conn(|c| {
            scripts::purge()
                .key(store.keys.expiry())
                .key(store.keys.idem())
                .key(store.keys.purged())
                .key(store.keys.meta())
                .key(store.keys.lanes())
                .arg(config.clock.now_ms())
                .arg(chunk)
                .arg(store.purge_records)
                .invoke(c)
        })?;
        total += n;
        if n < chunk {
            break;
        }
        maintenance::pause_after_chunk(started.elapsed());
    }
    Ok(total)
}

fn parse_epoch(s: &str) -> Result<u32> {
    s.parse()
        .map_err(|_| Error::Storage(format!("the store's epoch in Redis is not a number: {s:?}")))
}

fn as_i64(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Internal(format!("not an id: {b:?}"))),
        other => Err(Error::Internal(format!("not an id: {other:?}"))),
    }
}

/// Decodes an event read back from a lane entry.
fn decode(id: i64, json: &[u8]) -> Result<Event> {
    let s: Stored<'_> = serde_json::from_slice(json)
        .map_err(|e| Error::Storage(format!("event {id} in Redis is not readable: {e}")))?;
    Ok(Event {
        id,
        event_type: s.t.to_owned(),
        priority: Priority::from_i64(i64::from(s.p))?,
        channel_id: s.c,
        message_id: s.m,
        thread_id: s.th,
        user_id: s.u,
        data: s.d.get().to_owned(),
        timestamp: s.ts,
        expires_at: s.x,
    })
}

/// What two appends under one idempotency key must share to be the same event (the fields
/// SQLite compares), hashed so the key's entry stays small.
fn fingerprint(row: &writer::Row) -> String {
    use sha2::{Digest, Sha256};
    let e = &row.event;
    let mut h = Sha256::new();
    for part in [
        e.event_type.as_bytes(),
        &[row.priority.as_u8()],
        &e.channel_id.to_le_bytes(),
        &e.message_id.map_or([0xff; 9], some_bytes),
        &e.thread_id.map_or([0xff; 9], some_bytes),
        &e.user_id.to_le_bytes(),
        e.data.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn some_bytes(v: i64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[1..].copy_from_slice(&v.to_le_bytes());
    b
}

#[cfg(test)]
mod tests;
