//! `GET /v1/stream`: server-sent events (`text/event-stream`) for the channels, filters, token
//! and order of `/v1/poll`, built from its parts (`poll.rs`): the same query, checks and slot
//! (held for the stream's life, its lease renewed), and the same waits on the fan-out hub, whose
//! shared rendered responses are keyed by format: streams at one cursor share one rendering of
//! their frames, as polls share one JSON body.
//!
//! Each event is one frame, `id:` the cursor after it and `data:` the event's JSON as a poll
//! renders it, so the browser's automatic reconnect (`Last-Event-ID`) resumes without loss or
//! repeat. A batch that reports a gap starts with an `event: gap` frame. Every write starts with
//! `retry:` (the advertised mode's `retry_ms`); a quiet stream writes a `: hb` comment with its
//! position every `--stream-heartbeat` seconds. The stream ends, after writing its position,
//! when the token expires (the client reconnects with a fresh one), on graceful shutdown, or
//! when its slot is lost; it ends with an `event: error` frame when a wait fails.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Frame;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Request, Response};

use super::addresses::AddressSlot;
use super::error::ApiError;
use super::fanout::{Format, Rendered};
use super::poll::{PollJob, admit, authorize, counted_wait, parse_query};
use super::response::{HandlerFuture, Meta, Resp, Streamed, X_LMS_MODE};
use super::state::{State, slot_lease};
use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::error::ErrorCode;
use crate::guards::ClientMode;
use crate::store::Batch;

/// `X-Accel-Buffering: no`: nginx passes each frame on at once instead of buffering them.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Serves a `GET /v1/stream`: checked now (limits, token, query, slot), then written by its
/// body ([`Stream`]), which hyper (or the lean path, `lean.rs`) polls for each frame for as
/// long as the stream lasts. The request's body is never read.
pub(crate) fn serve<B>(
    state: Arc<State>,
    mut meta: Meta,
    peer: SocketAddr,
    req: Request<B>,
) -> HandlerFuture {
    let opened = prepare(&state, &mut meta, peer, req);
    let (job, expires_s) = match opened {
        Ok(o) => o,
        Err(e) => return Box::pin(std::future::ready(meta.respond(&state, Err(e)))),
    };
    // Behind a proxy, the client address's count is held by the stream, not by the response
    // head (which is finished at once).
    let address = meta.address.take();
    let (mode, _) = state.advertised();
    let head = meta.respond(&state, Ok(head(mode)));
    let body = Streamed::new(Stream::new(state, job, expires_s, address, wait));
    Box::pin(std::future::ready(
        head.map(|r| r.map(|_| Either::Right(body))),
    ))
}

/// The checks of a stream (those of a poll) and where it starts: the `Last-Event-ID` header,
/// else the `cursor` parameter, else the start, as a poll without a cursor. Returns the job and
/// the token's expiry (Unix seconds).
fn prepare<B>(
    state: &Arc<State>,
    meta: &mut Meta,
    peer: SocketAddr,
    req: Request<B>,
) -> Result<(PollJob, i64), ApiError> {
    let claims = authorize(state, meta, peer, req.headers())?;
    let mut params = parse_query(state, req.uri().query())?;
    if let Some(c) = last_event_id(req.headers())? {
        params.req.cursor = c;
    }
    drop(req);
    let expires_s = claims.exp;
    Ok((admit(state, &claims, params)?, expires_s))
}

/// The `Last-Event-ID` header's cursor, when the browser sent one (it sends an empty one
/// before any event had an id).
fn last_event_id(headers: &HeaderMap) -> Result<Option<Cursor>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let bad = |message: String| ApiError::BadRequest {
        code: ErrorCode::InvalidCursor.name(),
        message,
    };
    let v = v
        .to_str()
        .map_err(|_| bad("Last-Event-ID is not a cursor".into()))?
        .trim();
    if v.is_empty() {
        return Ok(None);
    }
    Cursor::parse(v).map(Some).map_err(|e| bad(e.to_string()))
}

/// The head of a stream's response.
fn head(mode: ClientMode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    if mode != ClientMode::Long {
        h.insert(X_LMS_MODE, HeaderValue::from_static(mode.as_str()));
    }
    r
}

/// What a wait gives back: the job it held, and the frames or the error.
type Waited = (PollJob, Result<Arc<Rendered>, ApiError>);

/// One wait of a stream on the fan-out hub, at most `timeout` long: the waits of a poll. It
/// owns the job while it waits, so the body holds no borrow of itself.
async fn wait(state: Arc<State>, mut job: PollJob, timeout: Duration) -> Waited {
    job.params.timeout = timeout;
    let r = counted_wait(&state, &mut job.params, Format::Stream, render).await;
    (job, r)
}

/// Where a stream is: its first write (`retry:`) still to make, writing, or ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Opening,
    Live,
    Ended,
}

/// The body of a stream, which writes it (see the module doc): each `poll_frame` runs the
/// stream's next wait, in place, and returns what it got. hyper polls the body only when it
/// can write, so a client that stops reading stops the stream's waits (and is cut off by the
/// connection's write timeout); when the client leaves, hyper drops the body, which gives the
/// slot, the client address's count and the open-streams gauge back at once.
///
/// No task and no channel of its own: the connection's task runs the waits, and the wait's
/// future lives in the body itself (`F`, the future of [`wait`]: generic because an `async
/// fn`'s future has no name), made again in the same place for each wait.
struct Stream<F> {
    /// The running wait. Pinned with the body (see `poll_frame`).
    wait: Option<F>,
    start: fn(Arc<State>, PollJob, Duration) -> F,
    run: Run,
}

/// A stream's state between writes: the fields of [`Stream`] that are not pinned.
struct Run {
    state: Arc<State>,
    /// The job between waits; a wait owns it while it runs.
    job: Option<PollJob>,
    step: Step,
    /// The token's expiry (Unix seconds): the stream ends then.
    expires_s: i64,
    /// The longest wait: `--stream-heartbeat`, and never more than a third of the slot's
    /// lease, so the lease is renewed in time.
    heartbeat: Duration,
    renewed: Instant,
    _open: OpenStream,
    /// The client address's count, held for the stream's life.
    _address: Option<AddressSlot>,
}

impl<F: Future<Output = Waited>> Stream<F> {
    fn new(
        state: Arc<State>,
        job: PollJob,
        expires_s: i64,
        address: Option<AddressSlot>,
        start: fn(Arc<State>, PollJob, Duration) -> F,
    ) -> Stream<F> {
        let heartbeat = Duration::from_secs(state.config.stream_heartbeat)
            .min(slot_lease(&state.config) / 3)
            .max(Duration::from_secs(1));
        Stream {
            wait: None,
            start,
            run: Run {
                _open: OpenStream::count(&state),
                state,
                job: Some(job),
                step: Step::Opening,
                expires_s,
                heartbeat,
                renewed: Instant::now(),
                _address: address,
            },
        }
    }
}

impl Run {
    /// The stream's next write, `None` once it has ended. `wait` is the body's running wait,
    /// pinned with it, and `start` makes the next one.
    fn next<F: Future<Output = Waited>>(
        &mut self,
        start: fn(Arc<State>, PollJob, Duration) -> F,
        mut wait: Pin<&mut Option<F>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Bytes>> {
        match self.step {
            Step::Ended => return Poll::Ready(None),
            Step::Opening => {
                self.step = Step::Live;
                let mut first = Vec::with_capacity(16);
                retry_field(&mut first, self.state.advertised().1);
                first.push(b'\n');
                return Poll::Ready(Some(Bytes::from(first)));
            }
            Step::Live => {}
        }
        if wait.is_none() {
            let left_ms = self.expires_s.saturating_mul(1000) - SystemClock.now_ms();
            let Some(job) = self.job.take().filter(|_| left_ms > 0) else {
                return self.end(None);
            };
            let timeout = self.heartbeat.min(Duration::from_millis(left_ms as u64));
            wait.set(Some(start(Arc::clone(&self.state), job, timeout)));
        }
        let Some(running) = wait.as_mut().as_pin_mut() else {
            return self.end(None);
        };
        let (mut job, waited) = std::task::ready!(running.poll(cx));
        // Dropped in place now: a finished future must not be polled again.
        wait.set(None);
        let rendered = match waited {
            Ok(r) => r,
            Err(e) => return self.end(Some(error_frame(&e))),
        };
        job.params.req.cursor = rendered.cursor;
        rendered.count_delivered(&self.state.metrics);
        let body = rendered.body.clone();
        if *self.state.shutdown.borrow() {
            return self.end(Some(body));
        }
        if self.renewed.elapsed() >= self.heartbeat {
            if !job.renew_slot() {
                return self.end(Some(body));
            }
            self.renewed = Instant::now();
        }
        self.job = Some(job);
        Poll::Ready(Some(body))
    }

    /// Ends the stream after `last` (if any) is written; the slot is given back now.
    fn end(&mut self, last: Option<Bytes>) -> Poll<Option<Bytes>> {
        self.step = Step::Ended;
        self.job = None;
        Poll::Ready(last)
    }
}

impl<F: Future<Output = Waited>> hyper::body::Body for Stream<F> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // SAFETY: `wait` is the only field that is pinned with the body (structural pinning):
        // it is reached only through the `Pin` made here, which `next` uses to replace it
        // with `Pin::set` (dropping the old future in place) and to poll it, never to move it;
        // `Stream` has no `Drop` of its own that could move it, and no `Unpin` impl (an
        // `async fn`'s future is not `Unpin`, so neither is the body). The other fields are
        // not pinned and may be moved freely.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let wait = unsafe { Pin::new_unchecked(&mut this.wait) };
        this.run
            .next(this.start, wait, cx)
            .map(|frame| frame.map(|b| Ok(Frame::data(b))))
    }
}

/// One open stream in `State::streams` (the `/healthz` and `/metrics` gauge) until dropped,
/// however the stream ends.
struct OpenStream(Arc<State>);

impl OpenStream {
    fn count(state: &Arc<State>) -> OpenStream {
        state.streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(state))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The frame that ends a stream whose wait failed: the error body a poll would get.
fn error_frame(e: &ApiError) -> Bytes {
    let mut out = Vec::new();
    if let Some(ms) = e.retry_after_ms() {
        retry_field(&mut out, ms);
    }
    out.extend_from_slice(b"event: error\n");
    data_field(&mut out, &e.body());
    out.push(b'\n');
    Bytes::from(out)
}

/// `retry: <ms>`: how long the browser waits before it reconnects.
fn retry_field(out: &mut Vec<u8>, retry_ms: u64) {
    let _ = writeln!(out, "retry: {retry_ms}");
}

/// `data:` lines carrying `json`: a line break in it (whitespace between JSON tokens; those in
/// strings are escaped) starts another `data:` line, which the browser joins back with `\n`.
fn data_field(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"data: ");
    let mut rest = json;
    while let Some(i) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"\ndata: ");
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    out.extend_from_slice(rest);
    out.push(b'\n');
}

/// The frames of `batch`: `retry:`, a `gap` event when the batch reports one, then each event
/// with the cursor after it as its `id`; a batch without events is a heartbeat with the
/// stream's position.
///
/// The cursor after an event: in each priority lane, the batch's final position once the lane
/// has no events left in the batch, else the last id delivered in it, else (none delivered yet)
/// just below its first event in the batch. The events of a lane in a batch are the lane's next
/// matching ones, so resuming from that cursor gets exactly the batch's remaining events first.
pub(crate) fn render(batch: &Batch, mode: ClientMode, retry_ms: u64) -> Rendered {
    let end = batch.cursor;
    let mut out = Vec::with_capacity(64 + batch.events.len() * 256);
    retry_field(&mut out, retry_ms);
    let mut left = [0usize; 4];
    let mut lanes = end.lanes;
    for e in batch.events.iter().rev() {
        let l = e.priority.lane();
        left[l] += 1;
        lanes[l] = e.id - 1;
    }
    let at = |lanes: [i64; 4]| Cursor {
        epoch: end.epoch,
        lanes,
    };
    if batch.gap {
        let _ = writeln!(out, "event: gap\nid: {}", at(lanes));
        let data = serde_json::json!({ "gap": true, "cursor": at(lanes), "mode": mode });
        data_field(&mut out, data.to_string().as_bytes());
        out.push(b'\n');
    }
    for e in &batch.events {
        let l = e.priority.lane();
        left[l] -= 1;
        lanes[l] = if left[l] == 0 { end.lanes[l] } else { e.id };
        let _ = writeln!(out, "id: {}", at(lanes));
        data_field(&mut out, &serde_json::to_vec(e).unwrap_or_default());
        out.push(b'\n');
    }
    if batch.events.is_empty() && !batch.gap {
        let _ = write!(out, ": hb\nid: {end}\n\n");
    }
    Rendered::new(
        Bytes::from(out),
        batch.events.iter().map(|e| e.timestamp).collect(),
        mode,
        end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Priority};

    fn ev(id: i64, priority: Priority, data: &str) -> Event {
        Event {
            id,
            event_type: "message_create".into(),
            priority,
            channel_id: 1,
            message_id: None,
            thread_id: None,
            user_id: 0,
            data: data.into(),
            timestamp: 0,
            expires_at: i64::MAX,
        }
    }

    fn fields(body: &[u8], name: &str) -> Vec<String> {
        let prefix = format!("{name}: ");
        std::str::from_utf8(body)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    #[test]
    fn each_frame_id_is_the_cursor_after_its_event() {
        // Priority order: the critical lane's 7 and 9, then the normal lane's 5 and 8; the
        // store scanned every lane to 12.
        let end = Cursor {
            epoch: Some(0xabcd),
            lanes: [12; 4],
        };
        let batch = Batch {
            events: vec![
                ev(7, Priority::Critical, "{}"),
                ev(9, Priority::Critical, "{}"),
                ev(5, Priority::Normal, "{}"),
                ev(8, Priority::Normal, "{}"),
            ],
            cursor: end,
            gap: true,
            has_more: false,
        };
        let r = render(&batch, ClientMode::Long, 0);
        assert_eq!(r.cursor, end);
        assert_eq!(fields(&r.body, "retry"), ["0"]);
        assert_eq!(fields(&r.body, "event"), ["gap"]);
        assert_eq!(
            fields(&r.body, "id"),
            [
                // Before any event: each lane with events just below its first one.
                "v1.0000abcd.6.12.4.12",
                "v1.0000abcd.7.12.4.12",
                "v1.0000abcd.12.12.4.12",
                "v1.0000abcd.12.12.5.12",
                "v1.0000abcd.12.12.12.12",
            ]
        );
        let empty = Batch {
            events: vec![],
            cursor: end,
            gap: false,
            has_more: false,
        };
        let r = render(&empty, ClientMode::Short, 5000);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            "retry: 5000\n: hb\nid: v1.0000abcd.12.12.12.12\n\n"
        );
    }

    #[test]
    fn line_breaks_in_the_json_continue_the_data_field() {
        let mut out = Vec::new();
        data_field(&mut out, b"{\n \"a\": 1,\r\n \"b\": 2\r}");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\ndata:  \"a\": 1,\ndata:  \"b\": 2\ndata: }\n"
        );
        let batch = Batch {
            events: vec![ev(3, Priority::High, "{\"x\":\n1}")],
            cursor: Cursor::from_last_event_id(3),
            gap: false,
            has_more: false,
        };
        let r = render(&batch, ClientMode::Long, 0);
        let data = fields(&r.body, "data").join("\n");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["data"]["x"], 1);
    }
}
