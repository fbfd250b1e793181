//! The cache of rendered poll responses: when one event wakes 10,000 waiters of a channel,
//! they all hold the same cursor, and the batch is assembled and serialized once for all of
//! them. A response is shared only at one ring head and while fresh (see [`RESPONSE_TTL`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::event::Event;
use crate::guards::ClientMode;
use crate::metrics::{Counter, Histogram, Metrics};
use crate::store::{FetchRequest, Order};

/// A poll response, rendered once and shared by every waiter that would get the same one.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// The JSON body.
    pub(crate) body: Bytes,
    /// The delivered events' append times (ms), for the delivery-latency metric.
    pub(crate) stamps: Vec<i64>,
    /// The mode advertised in the body.
    pub(crate) mode: ClientMode,
    /// Where the reader stands after this response: what a stream waits from next.
    pub(crate) cursor: Cursor,
    /// The body gzipped, made by the first poll that gets this response and accepts gzip (when
    /// the body is large enough to be compressed), then shared like the body; `None` inside if
    /// compressing failed.
    pub(crate) gz: std::sync::OnceLock<Option<Bytes>>,
}

impl Rendered {
    /// A rendered response, not compressed yet.
    pub(crate) fn new(body: Bytes, stamps: Vec<i64>, mode: ClientMode, cursor: Cursor) -> Rendered {
        Rendered {
            body,
            stamps,
            mode,
            cursor,
            gz: std::sync::OnceLock::new(),
        }
    }

    /// Counts this response's events as delivered now (the deliveries counter and the
    /// delivery latency), once per client it is written to.
    pub(crate) fn count_delivered(&self, metrics: &Metrics) {
        if !self.stamps.is_empty() {
            let now = SystemClock.now_ms();
            metrics.add(Counter::Deliveries, self.stamps.len() as u64);
            for t in &self.stamps {
                metrics.record_us(Histogram::Delivery, (now - t).max(0) as u64 * 1000);
            }
        }
    }
}

/// The body a response is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    /// `GET /v1/poll`'s `{"events", "cursor", "gap", ...}`.
    Poll,
    /// `/v1/lms/poll`'s answer in the LMS chat theme's own shape (`{"success", "data"}`).
    Lms,
    /// `/v1/stream`'s server-sent events: one `id:`/`data:` frame per event.
    Stream,
}

/// Everything a response depends on besides its batch: its format and the advertised mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Style {
    /// The body's format.
    pub(crate) format: Format,
    /// The mode advertised.
    pub(crate) mode: ClientMode,
    /// The `retry_ms` advertised.
    pub(crate) retry_ms: u64,
}

/// What makes two polls' responses identical at one head: the request (with its cursor) and
/// the style (format and advertised mode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    channels: Vec<i64>,
    thread: Option<i64>,
    types: Vec<String>,
    cursor: Cursor,
    limit: usize,
    sequential: bool,
    style: Style,
}

impl Key {
    fn new(req: &FetchRequest, style: Style) -> Key {
        Key {
            channels: req.channels.clone(),
            thread: req.thread_id,
            types: req.types.clone(),
            cursor: req.cursor,
            limit: req.limit,
            sequential: req.order == Order::Sequential,
            style,
        }
    }

    /// Whether this is the key of `req` (without building that key).
    fn is(&self, req: &FetchRequest, style: Style) -> bool {
        self.cursor == req.cursor
            && self.channels == req.channels
            && self.thread == req.thread_id
            && self.types == req.types
            && self.limit == req.limit
            && self.sequential == (req.order == Order::Sequential)
            && self.style == style
    }

    /// The hash of the key of `req`: what the cache is indexed by.
    fn hash_of(req: &FetchRequest, style: Style) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        req.channels.hash(&mut h);
        req.thread_id.hash(&mut h);
        req.types.hash(&mut h);
        req.cursor.hash(&mut h);
        req.limit.hash(&mut h);
        (req.order == Order::Sequential).hash(&mut h);
        style.hash(&mut h);
        h.finish()
    }
}

/// Responses rendered at one head. When one event wakes 10,000 waiters of a channel, they all
/// hold the same cursor: the batch is assembled and serialized once, not 10,000 times.
#[derive(Debug, Default)]
pub(super) struct Responses {
    head: i64,
    made: Option<Instant>,
    /// By [`Key::hash_of`]; a lookup compares the keys of its bucket, so it allocates nothing.
    map: HashMap<u64, Vec<(Key, Arc<Rendered>)>>,
    len: usize,
    /// The response stored last, checked before the map: a fan-out's polls all ask for the
    /// one the first of them stored, and are answered without hashing their request.
    last: Option<(Key, Arc<Rendered>)>,
}

/// Longest a rendered response is reused: expiry is judged when a batch is assembled, so a
/// response is only shared while it is fresh (and never one holding an event close to expiry).
pub(super) const RESPONSE_TTL: Duration = Duration::from_millis(200);
/// Most distinct responses kept per head.
const RESPONSES_MAX: usize = 4096;

impl Responses {
    /// The response stored for `req` at `head`, if still fresh; otherwise the hash to store one
    /// under with [`Responses::put`].
    pub(super) fn get(
        &self,
        head: i64,
        req: &FetchRequest,
        style: Style,
    ) -> Result<Arc<Rendered>, u64> {
        let fresh = self.head == head && self.made.is_some_and(|m| m.elapsed() < RESPONSE_TTL);
        if fresh
            && let Some((k, hit)) = &self.last
            && k.is(req, style)
        {
            return Ok(hit.clone());
        }
        let hash = Key::hash_of(req, style);
        if fresh
            && let Some((_, hit)) = self
                .map
                .get(&hash)
                .and_then(|b| b.iter().find(|(k, _)| k.is(req, style)))
        {
            return Ok(hit.clone());
        }
        Err(hash)
    }

    /// Stores `rendered` for `req` at `head` (under `hash`, from [`Responses::get`]); a newer
    /// head or a stale cache starts it afresh.
    pub(super) fn put(
        &mut self,
        head: i64,
        hash: u64,
        req: &FetchRequest,
        style: Style,
        rendered: &Arc<Rendered>,
    ) {
        if self.head < head || self.made.is_none_or(|m| m.elapsed() >= RESPONSE_TTL) {
            self.map.clear();
            self.len = 0;
            self.last = None;
            self.head = head;
            self.made = Some(Instant::now());
        }
        if self.head == head && self.len < RESPONSES_MAX {
            let bucket = self.map.entry(hash).or_default();
            if !bucket.iter().any(|(k, _)| k.is(req, style)) {
                let key = Key::new(req, style);
                bucket.push((key.clone(), rendered.clone()));
                self.len += 1;
                self.last = Some((key, rendered.clone()));
            }
        }
    }
}

/// Whether a response delivering `events` may be shared: expiry is judged when a batch is
/// assembled, so none of them may expire while the response could still be reused.
pub(super) fn shareable(events: &[Event]) -> bool {
    let now_ms = SystemClock.now_ms();
    events
        .iter()
        .all(|e| e.expires_at > now_ms + 2 * RESPONSE_TTL.as_millis() as i64)
}
