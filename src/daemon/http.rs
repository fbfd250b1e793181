//! Routing and the endpoints: `GET /v1/poll`, `POST /v1/events`, `GET /healthz`,
//! `GET /metrics`, CORS preflights, and the demo pages.
//!
//! Every response goes through `finish`: request id, security headers, CORS, gzip. Store
//! calls go through `State::store_call` (or the appender, for publishing): the store's circuit breaker, a bounded number of
//! blocking threads, and the breaker's bookkeeping of the outcome.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::State;
use super::auth;
use super::error::ApiError;
use super::fanout::{Answer, Rendered};
use super::replay::{self, Begin};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode};
use crate::event::{Event, NewEvent, Priority, validate_data, validate_event_type};
use crate::guards::ClientMode;
use crate::metrics::{Counter, Gauge, HealthStatus, Histogram};
use crate::store::{Batch, EventStore, FetchRequest, MAX_TYPES, Order};
use crate::token::Claims;

/// The response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

const STORE_BREAKER: &str = "store";

/// Headers of a JSON response once `finish` has added its own (request id, security, CORS).
const RESPONSE_HEADERS: usize = 12;

/// `X-Request-Id`, made once: a name given as a string is parsed and checked at every insert.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");
/// `X-LMS-Mode` (the advertised polling mode when it is not `long`), made once.
const X_LMS_MODE: header::HeaderName = header::HeaderName::from_static("x-lms-mode");

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the response needs from the request, kept instead of the request itself.
struct Meta {
    started: Instant,
    rid: HeaderValue,
    origin: Option<HeaderValue>,
    gzip: bool,
    method: Method,
    path: Cow<'static, str>,
    peer: SocketAddr,
    /// The poll's verified token, once known: its user and session go to the logs.
    who: Option<Who>,
    /// Behind a proxy, this request's count against its client address's cap, held until
    /// the response is made (for a long-poll, for as long as it waits).
    address: Option<super::addresses::AddressSlot>,
}

/// A verified token's user and session binding (`sid`, a hash of the WordPress session), kept
/// inline for the logs: a waiting poll holds it for as long as it waits.
#[derive(Clone, Copy)]
struct Who {
    uid: i64,
    sid: [u8; 24],
    sid_len: u8,
}

impl Who {
    fn new(c: &Claims) -> Who {
        let mut sid = [0u8; 24];
        let n = c.sid.len().min(24);
        sid[..n].copy_from_slice(&c.sid.as_bytes()[..n]);
        Who {
            uid: c.uid,
            sid,
            sid_len: n as u8,
        }
    }

    fn sid(&self) -> &str {
        std::str::from_utf8(&self.sid[..self.sid_len as usize]).unwrap_or("")
    }
}

/// A request's path for the logs, without an allocation for the daemon's own routes.
fn path_of(p: &str) -> Cow<'static, str> {
    match p {
        "/v1/poll" => Cow::Borrowed("/v1/poll"),
        "/v1/events" => Cow::Borrowed("/v1/events"),
        "/healthz" => Cow::Borrowed("/healthz"),
        "/metrics" => Cow::Borrowed("/metrics"),
        p => Cow::Owned(p.to_owned()),
    }
}

impl Meta {
    fn new(state: &State, peer: SocketAddr, req: &Request<Incoming>) -> Meta {
        Meta {
            started: Instant::now(),
            rid: request_id(state, req.headers()),
            // Copied: a value borrowed from the request would pin hyper's read buffer for as
            // long as a poll waits.
            origin: req
                .headers()
                .get(header::ORIGIN)
                .and_then(|o| HeaderValue::from_bytes(o.as_bytes()).ok()),
            gzip: accepts_gzip(req.headers()),
            method: req.method().clone(),
            path: path_of(req.uri().path()),
            peer,
            who: None,
            address: None,
        }
    }

    /// Turns a handler's result into the response: error bodies, logs, common headers.
    fn respond(self, state: &State, result: Result<Resp, ApiError>) -> Result<Resp, Infallible> {
        let Meta {
            started,
            rid,
            origin,
            gzip,
            method,
            path,
            peer,
            who,
            // Held (not `_`, which would drop it now) until the response is made.
            address: _address,
        } = self;
        // The token's user and session (`sid`: a hash of the WordPress session, never the
        // session itself): tells a user's browsers and logins apart in the logs.
        let (uid, sid) = who.as_ref().map_or((0, ""), |w| (w.uid, w.sid()));
        let rid_s = rid.to_str().unwrap_or("");
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                match &e {
                    ApiError::Internal(m) => {
                        tracing::error!(request_id = rid_s, %method, %path, uid, sid, error = %m, "internal error")
                    }
                    ApiError::Unavailable { .. } => {
                        tracing::warn!(request_id = rid_s, %method, %path, uid, sid, error = %e, "unavailable")
                    }
                    _ => {
                        tracing::debug!(request_id = rid_s, %method, %path, uid, sid, error = %e, "refused")
                    }
                }
                error_response(&e)
            }
        };
        let resp = finish(state, resp, &rid, origin.as_ref(), gzip);
        tracing::debug!(
            request_id = rid_s,
            %method,
            %path,
            %peer,
            uid,
            sid,
            status = resp.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request"
        );
        Ok(resp)
    }
}

/// The future of one request.
pub(crate) type HandlerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Resp, Infallible>> + Send>>;

/// Entry point of every request.
///
/// A poll is checked synchronously (limits, token, query, slot) and only a compact job is kept
/// for the wait: thousands of polls wait at once, and each one's future is allocated for as
/// long as it waits. Everything else runs in [`route`].
pub(crate) fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> HandlerFuture {
    let mut meta = Meta::new(&state, peer, &req);
    // Behind a proxy every connection is the proxy's: the client's address, known only now,
    // is counted per request in flight. Health checks and scrapes are not counted.
    if state.config.trust_proxy && !matches!(req.uri().path(), "/healthz" | "/metrics") {
        let ip = auth::client_ip(req.headers(), peer, true);
        match state.addresses.acquire(ip) {
            Some(slot) => meta.address = Some(slot),
            None => {
                state.metrics.incr(Counter::ConnectionsRefused);
                let e = ApiError::TooMany {
                    code: "too_many_connections_from_address",
                    message: "this address has as many requests open as the daemon allows one \
                              address (--max-connections-per-ip)"
                        .into(),
                    retry_after_ms: 1000,
                };
                return Box::pin(std::future::ready(meta.respond(&state, Err(e))));
            }
        }
    }
    if req.uri().path() == "/v1/poll" && req.method() == Method::GET {
        let prepared = prepare_poll(&state, &mut meta, peer, req);
        return match prepared {
            Ok(job) => Box::pin(run_poll(Box::new(PollCtx { state, meta, job }))),
            Err(e) => Box::pin(std::future::ready(meta.respond(&state, Err(e)))),
        };
    }
    Box::pin(async move {
        let r = route(&state, peer, req).await;
        meta.respond(&state, r)
    })
}

/// Entry point of a connection of the ops reserve (the daemon is at its capacity): `/healthz`
/// and `/metrics` are answered as usual, anything else gets the 503 a connection over capacity
/// gets.
pub(crate) fn handle_ops(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> HandlerFuture {
    let meta = Meta::new(&state, peer, &req);
    let r = match (req.method() == Method::GET, req.uri().path()) {
        (true, "/healthz") => Ok(health(&state)),
        (true, "/metrics") => Ok(metrics(&state)),
        _ => Err(ApiError::Unavailable {
            code: "too_many_connections",
            message: "the daemon is at its connection capacity".into(),
            mode: ClientMode::Short,
            retry_after_ms: 1000,
        }),
    };
    Box::pin(std::future::ready(meta.respond(&state, r)))
}

async fn route(
    state: &Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let path = req.uri().path();
    let method = req.method();
    if method == Method::OPTIONS {
        return preflight(state, req.headers());
    }
    match path {
        "/v1/poll" => Err(ApiError::MethodNotAllowed("GET")),
        "/v1/events" => {
            only(method, &Method::POST, "POST")?;
            // Boxed, like every branch but the poll: a waiting poll's future is as large as
            // the largest branch, and there are thousands of them.
            Box::pin(publish(state, peer, req)).await
        }
        "/healthz" => {
            only(method, &Method::GET, "GET")?;
            Ok(health(state))
        }
        "/metrics" => {
            only(method, &Method::GET, "GET")?;
            Ok(metrics(state))
        }
        p if state.config.demo && (p == "/" || p == "/demo" || p.starts_with("/demo/")) => {
            Box::pin(super::demo::route(state, req)).await
        }
        _ => Err(ApiError::NotFound),
    }
}

fn only(method: &Method, want: &Method, allow: &'static str) -> Result<(), ApiError> {
    if method == want {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(allow))
    }
}

// -- poll ---------------------------------------------------------------------------------------

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
    let mut seen: Vec<&'static str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v)?;
        let key: &'static str = match k.as_str() {
            "channels" => "channels",
            "cursor" => "cursor",
            "timeout" => "timeout",
            "types" => "types",
            "thread" => "thread",
            "order" => "order",
            "limit" => "limit",
            _ => continue,
        };
        if seen.contains(&key) {
            return Err(ApiError::invalid(format!("{key} is given twice")));
        }
        seen.push(key);
        match key {
            "channels" => {
                let mut list = Vec::new();
                for c in v.split(',') {
                    let c = c.trim();
                    let id: i64 = c.parse().map_err(|_| {
                        ApiError::invalid(format!("channels: {c:?} is not an integer"))
                    })?;
                    if id <= 0 {
                        return Err(ApiError::BadRequest {
                            code: ErrorCode::InvalidChannel.name(),
                            message: format!("channel {id} is not positive"),
                        });
                    }
                    list.push(id);
                    if list.len() > max_channels {
                        break;
                    }
                }
                list.sort_unstable();
                list.dedup();
                if list.len() > max_channels {
                    return Err(ApiError::invalid(format!(
                        "too many channels: at most {max_channels} per poll"
                    )));
                }
                channels = Some(list);
            }
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

/// A slot held for the length of one poll.
pub(crate) struct SlotGuard(Arc<State>, crate::guards::Lease);

impl Drop for SlotGuard {
    fn drop(&mut self) {
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

fn check_ip(state: &State, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let ip = auth::client_ip(headers, peer, state.config.trust_proxy);
    let mut buf = itoa_buf();
    let d = state
        .limiter
        .check("ip", fmt_into(&mut buf, format_args!("{ip}")))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if d.allowed {
        Ok(())
    } else {
        Err(ApiError::TooMany {
            code: ErrorCode::RateLimited.name(),
            message: if d.blocked {
                "too many requests from this address: blocked for a while".into()
            } else {
                "too many requests from this address".into()
            },
            retry_after_ms: d.retry_after_ms.max(1),
        })
    }
}

/// A stack buffer for [`fmt_into`]: room for an IPv6 address or an i64.
fn itoa_buf() -> [u8; 64] {
    [0u8; 64]
}

/// Formats into `buf` without allocating; a key for the limiter or the slots.
fn fmt_into<'a>(buf: &'a mut [u8; 64], args: std::fmt::Arguments<'_>) -> &'a str {
    let mut w = &mut buf[..];
    let _ = w.write_fmt(args);
    let len = 64 - w.len();
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// A poll that passed every check and holds one of the user's slots.
pub(crate) struct PollJob {
    params: PollParams,
    /// Held for the length of the poll; released when the job is dropped.
    _slot: SlotGuard,
}

/// The checks of a poll, cheapest first: IP limit, token, query, channels, user limit, slot.
fn prepare_poll(
    state: &Arc<State>,
    meta: &mut Meta,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<PollJob, ApiError> {
    check_ip(state, peer, req.headers())?;
    let claims = state
        .tokens
        .verify(
            &state.keys,
            auth::bearer_token(req.headers())?,
            now_ms() / 1000,
        )
        .map_err(ApiError::token)?;
    meta.who = Some(Who::new(&claims));
    let cfg = &state.config;
    let params = parse_poll(
        req.uri().query(),
        cfg.poll_timeout,
        cfg.batch,
        cfg.max_batch,
        cfg.max_channels,
    )?;
    // The request (its head shares hyper's read buffer) is not needed any more: dropping it
    // now lets hyper reuse that buffer while the poll waits.
    drop(req);
    if let Some(c) = params.req.channels.iter().find(|c| !claims.allows(**c)) {
        return Err(ApiError::Forbidden(format!(
            "the token does not allow channel {c}"
        )));
    }
    let mut buf = itoa_buf();
    let user = fmt_into(&mut buf, format_args!("{}", claims.uid));
    let d = state
        .limiter
        .check("poll", user)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !d.allowed {
        return Err(ApiError::TooMany {
            code: ErrorCode::RateLimited.name(),
            message: "too many polls for this user".into(),
            retry_after_ms: d.retry_after_ms.max(1),
        });
    }
    let lease = state.slots.acquire(user).map_err(|e| ApiError::TooMany {
        code: ErrorCode::SlotsExhausted.name(),
        message: e.to_string(),
        retry_after_ms: 1000,
    })?;
    Ok(PollJob {
        params,
        _slot: SlotGuard(state.clone(), lease),
    })
}

/// Everything a waiting poll keeps, in one allocation: the future itself then holds little
/// more than its timer and wake-up registrations (about 0.5 KiB instead of 1.5 KiB a poll).
struct PollCtx {
    state: Arc<State>,
    meta: Meta,
    job: PollJob,
}

async fn run_poll(mut ctx: Box<PollCtx>) -> Result<Resp, Infallible> {
    let started = Instant::now();
    let result = {
        let PollCtx { state, job, .. } = &mut *ctx;
        state.metrics.incr(Counter::Waits);
        let n = state.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        state.metrics.set_gauge(Gauge::ActiveWaits, n as i64);
        let _wait = WaitGuard(state);
        wait_for_batch(state, &mut job.params).await
    };
    let PollCtx { state, meta, job } = *ctx;
    drop(job);
    state.metrics.record(Histogram::Wait, started.elapsed());
    let r = match result {
        Ok((batch, timed_out)) => {
            if timed_out {
                state.metrics.incr(Counter::WaitTimeouts);
            }
            Ok(poll_response(&state, &batch, meta.gzip))
        }
        Err(e) => {
            state.metrics.incr(Counter::WaitErrors);
            Err(e)
        }
    };
    meta.respond(&state, r)
}

/// The mode and `retry_ms` to advertise now.
fn advertised(state: &State) -> (ClientMode, u64) {
    let status = state.breakers.status(STORE_BREAKER).ok();
    let mode = status.map_or(ClientMode::Long, |s| s.mode);
    let retry_ms = if *state.shutdown.borrow() {
        1000
    } else {
        status.map_or(0, |s| s.retry_after_ms)
    };
    (mode, retry_ms)
}

/// The long-poll proper. Returns the response and whether it ended empty on its deadline.
async fn wait_for_batch(
    state: &Arc<State>,
    params: &mut PollParams,
) -> Result<(Arc<Rendered>, bool), ApiError> {
    let first = advertised(state);
    // In a degraded mode a poll waits no longer than the mode's wait.
    let wait = params.timeout.min(Duration::from_millis(first.0.wait_ms()));
    // The first pass uses the status just read (each read of the breaker costs a lookup).
    let mut fresh = Some(first);
    let deadline = tokio::time::Instant::now() + wait;
    let req = &mut params.req;
    // Register before the first batch is built: see the fan-out module on lost wake-ups.
    let reg = state.hub.register(req);
    loop {
        let (mode, retry_ms) = fresh.take().unwrap_or_else(|| advertised(state));
        let answer = state.hub.respond(&state.store, req, mode, retry_ms, |b| {
            render(b, mode, retry_ms)
        });
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
                    let (mode, retry_ms) = advertised(state);
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
            return Ok((empty(state, cursor), false));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((empty(state, cursor), true));
        }
        // No branch for shutdown: every poll waiting on the shutdown channel would sit in one
        // shared waiter list, and unlinking from it (cold neighbours, under its lock) cost
        // each of a fan-out's polls about 2 % of its time before its response was written.
        tokio::select! {
            // In this order, without drawing a random one each time: a notification that
            // comes with the deadline still delivers.
            biased;
            _ = reg.waiter.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok((empty(state, cursor), true)),
        }
    }
}

/// The response to a poll that ends with nothing to deliver.
fn empty(state: &State, cursor: Cursor) -> Arc<Rendered> {
    let (mode, retry_ms) = advertised(state);
    let batch = Batch {
        events: Vec::new(),
        cursor,
        gap: false,
        has_more: false,
    };
    Arc::new(render(&batch, mode, retry_ms))
}

fn render(batch: &Batch, mode: ClientMode, retry_ms: u64) -> Rendered {
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
    )
}

/// The response to a poll; `gzip`: the client accepts gzip.
fn poll_response(state: &State, r: &Rendered, gzip: bool) -> Resp {
    if !r.stamps.is_empty() {
        let now = now_ms();
        state
            .metrics
            .add(Counter::Deliveries, r.stamps.len() as u64);
        for t in &r.stamps {
            state
                .metrics
                .record_us(Histogram::Delivery, (now - t).max(0) as u64 * 1000);
        }
    }
    // A copy of the headers every poll response has: one allocation and a copy, where
    // inserting them one by one hashes and probes each (a fan-out writes 10,000 of these).
    let mut h = state.poll_headers.clone();
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

// -- publish ------------------------------------------------------------------------------------

/// One event of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    event_type: String,
    channel_id: i64,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    message_id: Option<i64>,
    #[serde(default)]
    thread_id: Option<i64>,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    events: Vec<EventIn>,
}

impl EventIn {
    /// The event, if its type, channel and data are well-formed (the store checks them again,
    /// with its size cap on the data and its TTL bounds): a malformed body is refused here,
    /// before it takes a place in the replay window or a trip through the appender.
    fn into_new_event(self) -> Result<NewEvent, ApiError> {
        let store_err = |e| ApiError::from_store(e, ClientMode::Long, 0);
        validate_event_type(&self.event_type).map_err(store_err)?;
        if self.channel_id <= 0 {
            return Err(store_err(Error::InvalidChannel(self.channel_id)));
        }
        if let Some(d) = &self.data {
            validate_data(d.get(), usize::MAX).map_err(store_err)?;
        }
        let mut e = NewEvent::new(self.event_type, self.channel_id);
        if let Some(p) = self.priority {
            e = e.priority(
                Priority::from_i64(p).map_err(|e| ApiError::from_store(e, ClientMode::Long, 0))?,
            );
        }
        e.message_id = self.message_id;
        e.thread_id = self.thread_id;
        e.user_id = self.user_id.unwrap_or(0);
        if let Some(d) = self.data {
            e.data = d.get().to_owned();
        }
        if let Some(t) = self.ttl_ms {
            e.ttl = Some(Duration::from_millis(t));
        }
        e.idempotency_key = self.idempotency_key;
        Ok(e)
    }
}

/// Parses a publish body: one event object, or `{"events": [...]}`.
pub(crate) fn parse_events(body: &[u8]) -> Result<Vec<NewEvent>, ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadRequest {
        code: ErrorCode::InvalidArgument.name(),
        message: format!("the body is not a valid event or {{\"events\": [...]}}: {e}"),
    };
    // One event is the common body: tried first (a batch fails it at its first key).
    let events = match serde_json::from_slice::<EventIn>(body) {
        Ok(e) => vec![e],
        Err(one) => match serde_json::from_slice::<BatchIn>(body) {
            Ok(b) => b.events,
            Err(_) => return Err(bad(one)),
        },
    };
    if events.is_empty() {
        return Err(ApiError::invalid("no events"));
    }
    if events.len() > crate::store::MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "at most {} events per request",
            crate::store::MAX_BATCH
        )));
    }
    events.into_iter().map(EventIn::into_new_event).collect()
}

/// Reads a request body of at most `max` bytes within `timeout`.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<(hyper::http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is {len} bytes, over the limit of {max}"
        )));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| ApiError::Timeout)?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge(format!("the body is over the limit of {max} bytes"))
            } else {
                ApiError::invalid(format!("reading the body: {e}"))
            }
        })?;
    Ok((parts, collected.to_bytes()))
}

async fn publish(
    state: &Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    check_ip(state, peer, req.headers())?;
    let (parts, body) = read_body(
        req,
        state.config.max_body_bytes,
        Duration::from_secs(state.config.idle_timeout),
    )
    .await?;
    let now_s = now_ms() / 1000;
    let signed = auth::publisher(
        &parts.headers,
        &body,
        &state.keys,
        now_s,
        state.config.publish_skew,
    )?;
    let events = parse_events(&body)?;
    // The signature stays acceptable until its timestamp leaves the skew window: remembered
    // that long, a replay within it gets the first one's ids and appends nothing.
    let expires_s = signed
        .timestamp
        .saturating_add(state.config.publish_skew.min(i64::MAX as u64) as i64);
    let mut events = Some(events);
    let ids = loop {
        match state
            .replays
            .begin(&signed.kid, &signed.tag, expires_s, now_ms() / 1000)
        {
            Begin::Replay(ids) => {
                state.metrics.incr(Counter::PublishReplays);
                break ids;
            }
            Begin::Wait(rx) => {
                if let Some(ids) = replay::wait(rx).await {
                    state.metrics.incr(Counter::PublishReplays);
                    break ids;
                }
                // The first request failed and appended nothing: this one tries.
            }
            Begin::Full { retry_after_s } => {
                return Err(ApiError::Unavailable {
                    code: "replay_window_full",
                    message: "too many recent publishes to tell replays apart; retry later".into(),
                    mode: ClientMode::Long,
                    retry_after_ms: retry_after_s * 1000,
                });
            }
            Begin::First(ticket) => {
                let events = events.take().unwrap_or_default();
                // On a task of its own: if this request goes away mid-append (the client
                // hangs up), the outcome is still recorded, and a replay of it still finds
                // the ids instead of appending again.
                let st = state.clone();
                let task = tokio::spawn(async move {
                    let started = Instant::now();
                    let r = st.append(events).await;
                    st.metrics.record(Histogram::Append, started.elapsed());
                    ticket.finish(r.as_deref().ok());
                    r
                });
                break task
                    .await
                    .map_err(|e| ApiError::Internal(format!("publish task: {e}")))??
                    .into();
            }
        }
    };
    let mut body = Vec::with_capacity(16 + 21 * ids.len());
    body.extend_from_slice(b"{\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = write!(body, "{id}");
    }
    body.extend_from_slice(b"]}");
    Ok(json(StatusCode::OK, body))
}

// -- health and metrics -------------------------------------------------------------------------

fn health(state: &State) -> Resp {
    let mut h = state.metrics.health();
    let b = state.breakers.status(STORE_BREAKER).ok();
    let shutting_down = *state.shutdown.borrow();
    let open = b.is_some_and(|b| !b.allowed);
    // Corruption met by this process (a request, or the fan-out's tail reader, which no
    // request sees) stays reported until a restart: the damaged page does not heal, and the
    // shared window of `corrupt_reads` forgets it after a minute without readers.
    let (corrupt_seen, corrupt_last) = crate::store::corruption_seen();
    if corrupt_seen > 0 {
        h.reasons.insert(
            0,
            format!(
                "the store is corrupt ({corrupt_seen} store calls of this daemon met a damaged \
                 page; latest: {}); stop the daemon, run `lms-longpolld --check` and salvage the \
                 file",
                corrupt_last.as_deref().unwrap_or("unknown")
            ),
        );
    }
    let corrupt = corrupt_seen > 0 || h.status == HealthStatus::Unavailable;
    let unavailable = shutting_down || open || corrupt;
    let status = if unavailable {
        "unavailable"
    } else {
        h.status.as_str()
    };
    let (ring_events, ring_floor, ring_head) = state.hub.ring_stats();
    let body = serde_json::json!({
        "status": status,
        "reasons": h.reasons,
        "corrupt": corrupt,
        "store": {
            "breaker": b.map(|b| b.state.as_str()),
            "mode": b.map_or("long", |b| b.mode.as_str()),
            "retry_ms": b.map_or(0, |b| b.retry_after_ms),
        },
        "connections": state.connections.load(Ordering::Relaxed),
        "connection_capacity": state.capacity,
        "ops_connections": state.ops_connections.load(Ordering::Relaxed),
        "waiters": state.hub.waiter_count(),
        "shards": state.hub.shard_count(),
        "shard_waiters": state.hub.shard_waiters(),
        "ring": { "events": ring_events, "floor": ring_floor, "head": ring_head },
        "shutting_down": shutting_down,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    let code = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, serde_json::to_vec(&body).unwrap_or_default())
}

fn metrics(state: &State) -> Resp {
    use std::fmt::Write as _;
    let mut text = state.metrics.snapshot().to_prometheus();
    let (ring_events, _, ring_head) = state.hub.ring_stats();
    let open = state
        .breakers
        .status(STORE_BREAKER)
        .is_ok_and(|b| !b.allowed);
    for (name, help, value) in [
        (
            "lmsrt_daemon_connections",
            "Open client connections of this daemon.",
            state.connections.load(Ordering::Relaxed) as i64,
        ),
        (
            "lmsrt_daemon_connection_capacity",
            "Connections this daemon accepts (flag and open-file limit).",
            state.capacity as i64,
        ),
        (
            "lmsrt_daemon_waiters",
            "Long-polls waiting in this daemon.",
            state.hub.waiter_count() as i64,
        ),
        (
            "lmsrt_daemon_ring_events",
            "Recent events held in memory for the fan-out.",
            ring_events as i64,
        ),
        (
            "lmsrt_daemon_ring_head",
            "Newest event id the fan-out has seen.",
            ring_head,
        ),
        (
            "lmsrt_daemon_store_breaker_open",
            "1 while the store's circuit breaker refuses calls.",
            i64::from(open),
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} gauge");
        let _ = writeln!(text, "{name} {value}");
    }
    let name = "lmsrt_daemon_undeliverable_events_total";
    let _ = writeln!(
        text,
        "# HELP {name} Times a stored event whose data no reader can decode was met and skipped \
         (rows left by an older version or damage)."
    );
    let _ = writeln!(text, "# TYPE {name} counter");
    let _ = writeln!(text, "{name} {}", crate::store::undeliverable_events_seen());
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

// -- store calls --------------------------------------------------------------------------------

impl State {
    /// Appends through the appender thread (commits shared with concurrent requests), behind
    /// the store's circuit breaker.
    pub(crate) async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<i64>, ApiError> {
        let status = self
            .breakers
            .check(STORE_BREAKER)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !status.allowed {
            return Err(ApiError::Unavailable {
                code: ErrorCode::CircuitOpen.name(),
                message: "the event store is failing; back off and retry".into(),
                mode: status.mode,
                retry_after_ms: status.retry_after_ms.max(1),
            });
        }
        self.metrics.incr(Counter::Appends);
        let r = self.appender.append(events).await;
        self.outcome(r, Counter::Appends)
    }

    /// Books a store call's outcome with the breaker and the metrics, and maps its error.
    fn outcome<T>(&self, r: crate::Result<T>, counter: Counter) -> Result<T, ApiError> {
        match r {
            Ok(v) => {
                let _ = self.breakers.record_success(STORE_BREAKER);
                Ok(v)
            }
            Err(e) => {
                let fault = e.is_fault();
                let after = if fault {
                    self.metrics.incr(match counter {
                        Counter::Appends => Counter::AppendErrors,
                        _ => Counter::FetchErrors,
                    });
                    if e.code() == ErrorCode::Corrupt {
                        self.metrics.incr(Counter::CorruptReads);
                    }
                    tracing::warn!(error = %e, "store call failed");
                    self.breakers.record_failure(STORE_BREAKER).ok()
                } else {
                    // The store answered (the request was bad): that is not a store failure.
                    self.breakers.record_success(STORE_BREAKER).ok()
                };
                let mode = after.map_or(ClientMode::Medium, |s| s.mode.max(ClientMode::Medium));
                let retry = after.map_or(1000, |s| s.retry_after_ms.max(1000));
                Err(ApiError::from_store(e, mode, retry))
            }
        }
    }

    /// Runs `f` on a blocking thread (at most as many at once as `sem` allows), behind the
    /// store's circuit breaker, counting the call in `counter` (and its `_errors` twin).
    pub(crate) async fn store_call<T: Send + 'static>(
        &self,
        sem: &Semaphore,
        counter: Counter,
        f: impl FnOnce(&EventStore) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let status = self
            .breakers
            .check(STORE_BREAKER)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !status.allowed {
            return Err(ApiError::Unavailable {
                code: ErrorCode::CircuitOpen.name(),
                message: "the event store is failing; back off and retry".into(),
                mode: status.mode,
                retry_after_ms: status.retry_after_ms.max(1),
            });
        }
        self.metrics.incr(counter);
        let _permit = sem
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("semaphore closed".into()))?;
        let store = self.store.clone();
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::Internal(format!("store task: {e}")))?;
        if counter == Counter::Fetches {
            self.metrics.record(Histogram::Fetch, started.elapsed());
        }
        self.outcome(r, counter)
    }
}

// -- responses ----------------------------------------------------------------------------------

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().reserve(RESPONSE_HEADERS);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error_response(e: &ApiError) -> Resp {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json(status, e.body());
    let h = r.headers_mut();
    if let Some(ms) = e.retry_after_ms() {
        // Whole seconds, rounded up: a client must not come back before the limit allows it.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    if let Some(mode) = e.mode() {
        h.insert(X_LMS_MODE, HeaderValue::from_static(mode.as_str()));
    }
    if let ApiError::MethodNotAllowed(allow) = e {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

fn preflight(state: &State, headers: &HeaderMap) -> Result<Resp, ApiError> {
    let origin = headers.get(header::ORIGIN);
    if origin.is_none_or(|o| !origin_allowed(state, o)) {
        return Err(ApiError::OriginNotAllowed(
            "this origin may not call the daemon (see --cors-origins)".into(),
        ));
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, X-Request-Id, X-LMS-Timestamp, X-LMS-Signature",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Ok(r)
}

fn origin_allowed(state: &State, origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else {
        return false;
    };
    state
        .config
        .cors_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn request_id(state: &State, headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && (1..=64).contains(&v.len())
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
    {
        return v;
    }
    let n = state.request_seq.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    let mut w = &mut buf[..];
    let _ = write!(w, "{:08x}-{n:x}", state.boot_id);
    let len = 32 - w.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
}

/// `bytes` gzipped (fast), or `None` if compressing failed.
fn gzip_bytes(bytes: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes)
        .and_then(|_| enc.finish())
        .ok()
        .map(Bytes::from)
}

/// The security headers of every response (those the response has not set itself).
fn security_headers(h: &mut HeaderMap, is_html: bool) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if is_html {
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
            } else {
                "default-src 'none'; frame-ancestors 'none'"
            }),
        );
    }
}

/// The headers every poll response starts with (built once, in `State::poll_headers`): its
/// content type and the security headers `finish` would add, with a placeholder request id
/// that `finish` replaces (so the copy has room for it).
pub(crate) fn poll_headers() -> HeaderMap {
    let mut h = HeaderMap::with_capacity(RESPONSE_HEADERS);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_REQUEST_ID, HeaderValue::from_static("-"));
    security_headers(&mut h, false);
    h
}

/// Adds the request id, security headers and CORS, and compresses when it pays.
fn finish(
    state: &State,
    mut r: Resp,
    rid: &HeaderValue,
    origin: Option<&HeaderValue>,
    gzip: bool,
) -> Resp {
    let is_html = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let compressible = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/json")
            || v.starts_with(b"text/")
            || v.starts_with(b"application/javascript")
    });
    // A poll response (it starts from `poll_headers`, which has the security headers) was
    // compressed, or not, by `poll_response` already.
    let poll = r.headers().contains_key(header::X_CONTENT_TYPE_OPTIONS);
    if gzip
        && !poll
        && compressible
        && state.config.gzip_min_bytes > 0
        && r.body().size_hint_exact() >= state.config.gzip_min_bytes as u64
    {
        let (mut parts, body) = r.into_parts();
        let bytes = body_bytes(body);
        let body = match gzip_bytes(&bytes) {
            Some(gz) => {
                parts
                    .headers
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gz
            }
            None => bytes,
        };
        parts
            .headers
            .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        r = Response::from_parts(parts, Full::new(body));
    }
    let h = r.headers_mut();
    h.insert(X_REQUEST_ID, rid.clone());
    if !poll {
        security_headers(h, is_html);
    }
    if let Some(o) = origin
        && origin_allowed(state, o)
    {
        let wildcard = state.config.cors_origins.iter().any(|a| a == "*");
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            if wildcard {
                HeaderValue::from_static("*")
            } else {
                o.clone()
            },
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, X-LMS-Mode, X-Request-Id"),
        );
    }
    r
}

trait SizeHint {
    fn size_hint_exact(&self) -> u64;
}

impl SizeHint for Full<Bytes> {
    fn size_hint_exact(&self) -> u64 {
        hyper::body::Body::size_hint(self).exact().unwrap_or(0)
    }
}

fn body_bytes(body: Full<Bytes>) -> Bytes {
    // A `Full` body yields its one frame at once, without waiting.
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match hyper::body::Body::poll_frame(body.as_mut(), &mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
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

    #[test]
    fn publish_bodies() {
        let one = parse_events(br#"{"event_type":"message_create","channel_id":3,"data":{"t":1}}"#)
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].data, r#"{"t":1}"#);
        let many = parse_events(
            br#"{"events":[{"event_type":"a","channel_id":1},{"event_type":"b","channel_id":2,"priority":4,"ttl_ms":5000}]}"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].priority, Some(Priority::Low));
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"events":[]}"#,
            br#"{"event_type":"a"}"#,
            br#"{"event_type":"a","channel_id":1,"extra":1}"#,
            br#"{"event_type":"a","channel_id":1,"priority":9}"#,
        ] {
            assert_eq!(parse_events(bad).unwrap_err().status(), 400);
        }
        // Type, channel and data are checked here, before the replay window and the appender,
        // with the codes the store gives them (a batch is refused whole).
        for (bad, code) in [
            (&br#"{"event_type":"Bad","channel_id":1}"#[..], "invalid_event_type"),
            (br#"{"event_type":"","channel_id":1}"#, "invalid_event_type"),
            (br#"{"event_type":"a","channel_id":0}"#, "invalid_channel"),
            (br#"{"event_type":"a","channel_id":-7}"#, "invalid_channel"),
            (br#"{"event_type":"a","channel_id":1,"data":[1]}"#, "invalid_data"),
            (br#"{"event_type":"a","channel_id":1,"data":"{}"}"#, "invalid_data"),
            (br#"{"event_type":"a","channel_id":1,"data":{"t":"\ud800"}}"#, "invalid_data"),
            (
                br#"{"events":[{"event_type":"a","channel_id":1},{"event_type":"a","channel_id":0}]}"#,
                "invalid_channel",
            ),
        ] {
            let e = parse_events(bad).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, code), "{}", String::from_utf8_lossy(bad));
        }
        let null_data = parse_events(br#"{"event_type":"a","channel_id":1,"data":null}"#).unwrap();
        assert_eq!(null_data[0].data, "{}");
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "br, gzip;q=0.8".parse().unwrap());
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(!accepts_gzip(&h));
    }
}
