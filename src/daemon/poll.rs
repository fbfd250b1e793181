//! `GET /v1/poll`: the query parser, the checks (cheapest first), the wait on the fan-out hub,
//! and the rendering of a batch into the response body.
//!
//! `GET /v1/stream` (server-sent events, `stream.rs`) is built from the same parts:
//! [`parse_poll`] for its query, [`authorize`] and [`admit`] for its checks and slot, and
//! [`counted_wait`] for each wait between two writes, with its own [`Format`] in the key of the
//! hub's shared rendered responses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::HeaderMap;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use serde::Serialize;

use super::auth;
use super::error::ApiError;
use super::fanout::{Answer, Format, Rendered, Style};
use super::limits::{channels_allowed, check_ip, fmt_into, itoa_buf, no_slot, user_allowed};
use super::response::{
    HandlerFuture, Meta, POLL_HEADERS, Reply, Resp, Who, X_LMS_MODE, gzip_bytes,
};
use super::state::State;
use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode};
use crate::event::Event;
use crate::guards::ClientMode;
use crate::metrics::{Counter, Gauge, Histogram};
use crate::store::{Batch, FetchRequest, MAX_TYPES, Order};
use crate::token::Claims;

/// Serves a `GET /v1/poll`: checked now (limits, token, query, slot), then only a compact job
/// is kept for the wait. Thousands of polls wait at once, and each one's future is allocated
/// for as long as it waits.
pub(crate) fn serve<B>(
    state: Arc<State>,
    mut meta: Meta,
    peer: SocketAddr,
    req: Request<B>,
) -> HandlerFuture {
    match prepare_poll(&state, &mut meta, peer, req) {
        Ok(job) => Box::pin(run_poll(Box::new(PollCtx { state, meta, job }))),
        Err(e) => Box::pin(std::future::ready(meta.respond(&state, Err(e)))),
    }
}

/// [`parse_poll`] with the daemon's limits.
pub(crate) fn parse_query(state: &State, query: Option<&str>) -> Result<PollParams, ApiError> {
    let cfg = &state.config;
    parse_poll(
        query,
        cfg.poll_timeout,
        cfg.batch,
        cfg.max_batch,
        cfg.max_channels,
    )
}

/// A parsed `GET /v1/poll`.
#[derive(Debug, PartialEq)]
pub(crate) struct PollParams {
    pub(crate) req: FetchRequest,
    pub(crate) timeout: Duration,
}

/// Parses the poll query: `channels` (required), `cursor`, `timeout` (s), `types`, `thread`,
/// `order`, `limit`. Unknown parameters (cache busters) are ignored; a known one given twice is
/// refused.
pub(crate) fn parse_poll(
    query: Option<&str>,
    max_timeout: u64,
    batch: usize,
    max_batch: usize,
    max_channels: usize,
) -> Result<PollParams, ApiError> {
    let mut channels: Option<Vec<i64>> = None;
    let mut cursor = Cursor::START;
    let mut timeout = max_timeout;
    let mut types: Vec<String> = Vec::new();
    let mut thread = None;
    let mut order = Order::Priority;
    let mut limit = batch.min(max_batch);
    const KNOWN: &[&str] = &[
        "channels", "cursor", "timeout", "types", "thread", "order", "limit",
    ];
    for (key, v) in known_fields(query.unwrap_or(""), KNOWN)? {
        match key {
            "channels" => channels = Some(parse_channels(&v, max_channels)?),
            "cursor" => {
                if !v.is_empty() {
                    cursor = Cursor::parse(&v).map_err(|e| ApiError::BadRequest {
                        code: ErrorCode::InvalidCursor.name(),
                        message: e.to_string(),
                    })?;
                }
            }
            "timeout" => {
                let t: u64 = v.parse().map_err(|_| {
                    ApiError::invalid(format!("timeout: {v:?} is not a whole number of seconds"))
                })?;
                timeout = t.min(max_timeout);
            }
            "types" => {
                types = v
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .take(MAX_TYPES + 1)
                    .map(str::to_owned)
                    .collect();
            }
            "thread" => {
                let t: i64 = v
                    .parse()
                    .ok()
                    .filter(|t| *t > 0)
                    .ok_or_else(|| ApiError::invalid("thread is a positive integer"))?;
                thread = Some(t);
            }
            "order" => {
                order = v
                    .parse()
                    .map_err(|e: Error| ApiError::invalid(e.to_string()))?;
            }
            "limit" => {
                let l: usize = v
                    .parse()
                    .ok()
                    .filter(|l| *l > 0)
                    .ok_or_else(|| ApiError::invalid("limit is a positive integer"))?;
                limit = l.min(max_batch);
            }
            _ => unreachable!(),
        }
    }
    let channels = channels.filter(|c| !c.is_empty()).ok_or_else(|| {
        ApiError::invalid("channels is required: a comma-separated list of channel ids")
    })?;
    let mut req = FetchRequest::new(channels)
        .cursor(cursor)
        .limit(limit)
        .order(order)
        .types(types);
    req.thread_id = thread;
    let req = req
        .normalized()
        .map_err(|e| ApiError::from_store(e, ClientMode::Long, 0))?;
    Ok(PollParams {
        req,
        timeout: Duration::from_secs(timeout),
    })
}

/// The `channels` list: positive ids, sorted, without duplicates, at most `max` of them (the
/// rest of an overlong list is not parsed).
fn parse_channels(v: &str, max: usize) -> Result<Vec<i64>, ApiError> {
    let mut list = Vec::new();
    for c in v.split(',') {
        let c = c.trim();
        let id: i64 = c
            .parse()
            .map_err(|_| ApiError::invalid(format!("channels: {c:?} is not an integer")))?;
        if id <= 0 {
            return Err(ApiError::BadRequest {
                code: ErrorCode::InvalidChannel.name(),
                message: format!("channel {id} is not positive"),
            });
        }
        list.push(id);
        if list.len() > max {
            break;
        }
    }
    list.sort_unstable();
    list.dedup();
    if list.len() > max {
        return Err(ApiError::invalid(format!(
            "too many channels: at most {max} per poll"
        )));
    }
    Ok(list)
}

/// The fields of a query string or form body (`k=v&…`, percent-decoded) named in `known`, in
/// order. Unknown ones (cache busters, nonces) are skipped, but must be well-encoded too; a
/// known one given twice is refused.
pub(crate) fn known_fields(
    form: &str,
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for pair in form.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v)?;
        let Some(key) = known.iter().copied().find(|n| *n == k) else {
            continue;
        };
        if out.iter().any(|(n, _)| *n == key) {
            return Err(ApiError::invalid(format!("{key} is given twice")));
        }
        out.push((key, v));
    }
    Ok(out)
}

/// Decodes one query key or value (`%XX` and `+`); refuses bad escapes and non-UTF-8.
fn percent_decode(s: &str) -> Result<String, ApiError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::invalid("bad percent-encoding in the query"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest {
        code: ErrorCode::InvalidUtf8.name(),
        message: "the query is not UTF-8".into(),
    })
}

#[derive(Serialize)]
struct PollResponse<'a> {
    events: &'a [Event],
    cursor: Cursor,
    gap: bool,
    has_more: bool,
    mode: ClientMode,
    retry_ms: u64,
}

/// A slot held for the length of one poll; given back when dropped (with the guards in Redis,
/// from a task of its own: a poll answered gives it back before, awaited, in `shared.rs`).
pub(crate) struct SlotGuard(pub(crate) Arc<State>, pub(crate) crate::guards::Lease);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        #[cfg(feature = "redis")]
        if self.0.shared_guards.is_some() && self.1.token != 0 {
            return self.0.release_later(self.1);
        }
        self.0.slots.release(&self.1);
    }
}

/// Counts a waiting poll in the active-waits gauge for as long as it lives.
struct WaitGuard<'a>(&'a State);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let n = self.0.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.metrics.set_gauge(Gauge::ActiveWaits, n as i64);
    }
}

/// A poll that passed every check and holds one of the user's slots.
pub(crate) struct PollJob {
    pub(crate) params: PollParams,
    /// Held for the length of the poll; released when the job is dropped.
    pub(crate) slot: SlotGuard,
}

impl PollJob {
    /// Renews the slot's lease (a stream holds it longer than the lease); false when the slot
    /// is not this job's any more.
    pub(crate) fn renew_slot(&mut self) -> bool {
        let SlotGuard(state, lease) = &mut self.slot;
        state.slots.renew(lease)
    }
}

/// The checks of a poll, cheapest first: IP limit, token, query, channels, user limit, slot.
pub(crate) fn prepare_poll<B>(
    state: &Arc<State>,
    meta: &mut Meta,
    peer: SocketAddr,
    req: Request<B>,
) -> Result<PollJob, ApiError> {
    let claims = authorize(state, meta, peer, req.headers())?;
    let params = parse_query(state, req.uri().query())?;
    // Dropped now: its head shares hyper's read buffer, which hyper reuses while the poll waits.
    drop(req);
    admit(state, &claims, params)
}

/// The first checks of any poll: the address's limit, then the token (whose user and session
/// go into `meta` for the logs).
pub(crate) fn authorize(
    state: &State,
    meta: &mut Meta,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Arc<Claims>, ApiError> {
    check_ip(state, peer, headers)?;
    verify(state, meta, headers)
}

/// The token's check (its user and session go into `meta` for the logs).
pub(crate) fn verify(
    state: &State,
    meta: &mut Meta,
    headers: &HeaderMap,
) -> Result<Arc<Claims>, ApiError> {
    let claims = state
        .tokens
        .verify(
            &state.keys,
            auth::bearer_token(headers)?,
            SystemClock.now_ms() / 1000,
        )
        .map_err(ApiError::token)?;
    meta.who = Some(Who::new(&claims));
    Ok(claims)
}

/// The last checks of a parsed poll: its channels against the token, the user's rate limit,
/// then one of the user's slots, held by the job.
pub(crate) fn admit(
    state: &Arc<State>,
    claims: &Claims,
    params: PollParams,
) -> Result<PollJob, ApiError> {
    channels_allowed(claims, &params.req.channels)?;
    let mut buf = itoa_buf();
    let user = fmt_into(&mut buf, format_args!("{}", claims.uid));
    let d = state
        .limiter
        .check("poll", user)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    user_allowed(&d)?;
    let lease = state.slots.acquire(user).map_err(no_slot)?;
    Ok(PollJob {
        params,
        slot: SlotGuard(state.clone(), lease),
    })
}

/// Everything a waiting poll keeps, in one allocation: the future itself then holds little
/// more than its timer and wake-up registrations (about 0.5 KiB instead of 1.5 KiB a poll).
struct PollCtx {
    state: Arc<State>,
    meta: Meta,
    job: PollJob,
}

async fn run_poll(mut ctx: Box<PollCtx>) -> Result<Reply, Infallible> {
    let result = {
        let PollCtx { state, job, .. } = &mut *ctx;
        counted_wait(state, &mut job.params, Format::Poll, render).await
    };
    let PollCtx { state, meta, job } = *ctx;
    drop(job);
    let r = result.map(|batch| poll_response(&state, &batch, meta.gzip));
    meta.respond(&state, r)
}

/// A body renderer: the batch, the advertised mode and `retry_ms`.
pub(crate) type Render = fn(&Batch, ClientMode, u64) -> Rendered;

/// [`wait_for_batch`], counted in the metrics (waits, active waits, wait time, timeouts, errors).
pub(crate) async fn counted_wait(
    state: &Arc<State>,
    params: &mut PollParams,
    format: Format,
    render: Render,
) -> Result<Arc<Rendered>, ApiError> {
    let started = Instant::now();
    state.metrics.incr(Counter::Waits);
    let n = state.waiting.fetch_add(1, Ordering::Relaxed) + 1;
    state.metrics.set_gauge(Gauge::ActiveWaits, n as i64);
    let result = {
        let _wait = WaitGuard(state);
        wait_for_batch(state, params, format, render).await
    };
    state.metrics.record(Histogram::Wait, started.elapsed());
    match result {
        Ok((batch, timed_out)) => {
            if timed_out {
                state.metrics.incr(Counter::WaitTimeouts);
            }
            Ok(batch)
        }
        Err(e) => {
            state.metrics.incr(Counter::WaitErrors);
            Err(e)
        }
    }
}

/// The long-poll proper. Returns the response and whether it ended empty on its deadline.
pub(crate) async fn wait_for_batch(
    state: &Arc<State>,
    params: &mut PollParams,
    format: Format,
    render: Render,
) -> Result<(Arc<Rendered>, bool), ApiError> {
    let first = state.advertised();
    // In a degraded mode a poll waits no longer than the mode's wait.
    let wait = params.timeout.min(Duration::from_millis(first.0.wait_ms()));
    // The first pass uses the status just read (each read of the breaker costs a lookup).
    let mut fresh = Some(first);
    let deadline = tokio::time::Instant::now() + wait;
    let req = &mut params.req;
    // Register before the first batch is built: see the fan-out module on lost wake-ups.
    let reg = state.hub.register(req);
    loop {
        let (mode, retry_ms) = fresh.take().unwrap_or_else(|| state.advertised());
        let style = Style {
            format,
            mode,
            retry_ms,
        };
        let answer = state
            .hub
            .respond(&state.store, req, style, |b| render(b, mode, retry_ms));
        let cursor = match answer {
            Answer::Ready(r) => return Ok((r, false)),
            Answer::Empty(c) => c,
            Answer::Miss => {
                let r = req.clone();
                // Boxed: the store call is the rare path, and its state would otherwise make
                // every waiting poll's future larger.
                let batch =
                    Box::pin(
                        state.store_call(&state.read_sem, Counter::Fetches, move |s| s.fetch(&r)),
                    )
                    .await?;
                if !batch.events.is_empty() || batch.gap || batch.has_more {
                    let (mode, retry_ms) = state.advertised();
                    return Ok((Arc::new(render(&batch, mode, retry_ms)), false));
                }
                batch.cursor
            }
        };
        if reg.rearm() {
            // Woken for an event that gives this poll nothing (the dispatcher took it out of
            // the waiter maps): registered again, so the batch is built again after that.
            continue;
        }
        reg.waiter.set_lanes(cursor.lanes());
        req.cursor = cursor;
        // Shutdown sets the flag, then wakes every registered waiter (`Hub::wake_all`): a poll
        // registered after that sees the flag here, one registered before is woken.
        if *state.shutdown.borrow() {
            return Ok((empty(state, cursor, render), false));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((empty(state, cursor, render), true));
        }
        // No branch for shutdown: every poll waiting on the shutdown channel would sit in one
        // shared waiter list, and unlinking from it (cold neighbours, under its lock) cost
        // each of a fan-out's polls about 2 % of its time before its response was written.
        tokio::select! {
            // In this order, without drawing a random one each time: a notification that
            // comes with the deadline still delivers.
            biased;
            _ = reg.waiter.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok((empty(state, cursor, render), true)),
        }
    }
}

/// The response to a poll that ends with nothing to deliver.
fn empty(state: &State, cursor: Cursor, render: Render) -> Arc<Rendered> {
    let (mode, retry_ms) = state.advertised();
    let batch = Batch {
        events: Vec::new(),
        cursor,
        gap: false,
        has_more: false,
    };
    Arc::new(render(&batch, mode, retry_ms))
}

/// The JSON body of a poll answered with `batch`.
pub(crate) fn render(batch: &Batch, mode: ClientMode, retry_ms: u64) -> Rendered {
    let body = serde_json::to_vec(&PollResponse {
        events: &batch.events,
        cursor: batch.cursor,
        gap: batch.gap,
        has_more: batch.has_more,
        mode,
        retry_ms,
    })
    .unwrap_or_default();
    Rendered::new(
        Bytes::from(body),
        batch.events.iter().map(|e| e.timestamp).collect(),
        mode,
        batch.cursor,
    )
}

/// The response to a poll; `gzip`: the client accepts gzip.
pub(crate) fn poll_response(state: &State, r: &Rendered, gzip: bool) -> Resp {
    r.count_delivered(&state.metrics);
    // A copy of the headers every poll response has: one allocation and a copy, where
    // inserting them one by one hashes and probes each (a fan-out writes 10,000 of these).
    let mut h = POLL_HEADERS.clone();
    if r.mode != ClientMode::Long {
        h.insert(X_LMS_MODE, HeaderValue::from_static(r.mode.as_str()));
    }
    let mut body = r.body.clone();
    // The same rule as `finish` (which leaves poll responses to this): compressed once per
    // rendered response, where `finish` compressed the same body again for every poll that
    // got it (a fan-out of a large batch to 10,000 browsers: 10,000 compressions).
    let min = state.config.gzip_min_bytes;
    if gzip && min > 0 && body.len() >= min {
        if let Some(gz) = r.gz.get_or_init(|| gzip_bytes(&r.body)) {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            body = gz.clone();
        }
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let mut resp = Response::new(Full::new(body));
    *resp.headers_mut() = h;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Result<PollParams, ApiError> {
        parse_poll(Some(q), 30, 50, 200, 4)
    }

    #[test]
    fn poll_query() {
        let r = p("channels=3,1,3&cursor=12&timeout=99&types=message_create&thread=5&order=sequential&limit=500&_=123")
            .unwrap();
        assert_eq!(r.req.channels, vec![1, 3]);
        assert_eq!(r.req.cursor, Cursor::from_last_event_id(12));
        assert_eq!(r.timeout, Duration::from_secs(30), "capped to the daemon's");
        assert_eq!(r.req.types, vec!["message_create".to_string()]);
        assert_eq!(r.req.thread_id, Some(5));
        assert_eq!(r.req.order, Order::Sequential);
        assert_eq!(r.req.limit, 200, "capped to --max-batch");
        let c = "v1.0000abcd.1.2.3.4";
        assert_eq!(
            p(&format!("channels=1&cursor={}", c.replace('.', "%2E")))
                .unwrap()
                .req
                .cursor
                .to_string(),
            c
        );
        for (q, code) in [
            ("", "invalid_argument"),
            ("channels=", "invalid_argument"),
            ("channels=a", "invalid_argument"),
            ("channels=0", "invalid_channel"),
            ("channels=-1", "invalid_channel"),
            ("channels=1,2,3,4,5", "invalid_argument"),
            ("channels=1&channels=2", "invalid_argument"),
            ("channels=1&cursor=v9.x", "invalid_cursor"),
            ("channels=1&timeout=-1", "invalid_argument"),
            ("channels=1&timeout=1e3", "invalid_argument"),
            ("channels=1&limit=0", "invalid_argument"),
            ("channels=1&thread=x", "invalid_argument"),
            ("channels=1&order=random", "invalid_argument"),
            ("channels=1&types=Bad", "invalid_event_type"),
            ("channels=1%ZZ", "invalid_argument"),
            ("channels=1&cursor=%FF", "invalid_utf8"),
        ] {
            let e = p(q).expect_err(q);
            assert_eq!((e.status(), e.code()), (400, code), "{q}");
        }
    }
}
