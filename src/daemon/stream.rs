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

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Request, Response};
use tokio::sync::mpsc::Sender;

use super::addresses::AddressSlot;
use super::error::ApiError;
use super::fanout::{Format, Rendered};
use super::poll::{PollJob, admit, authorize, counted_wait, parse_poll};
use super::response::{HandlerFuture, Meta, Resp, Streamed, X_LMS_MODE};
use super::state::{State, slot_lease};
use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::error::ErrorCode;
use crate::guards::ClientMode;
use crate::store::Batch;

/// `X-Accel-Buffering: no`: nginx passes each frame on at once instead of buffering them.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Writes a stream may have queued that the client has not read yet; past them, the stream
/// waits (and a client that stops reading is cut off by the connection's write timeout).
const QUEUED_WRITES: usize = 8;

/// Serves a `GET /v1/stream`: checked now (limits, token, query, slot), then written by a task
/// of its own for as long as the stream lasts.
pub(crate) fn serve(
    state: Arc<State>,
    mut meta: Meta,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> HandlerFuture {
    let opened = prepare(&state, &mut meta, peer, req);
    let (job, expires_s) = match opened {
        Ok(o) => o,
        Err(e) => return Box::pin(std::future::ready(meta.respond(&state, Err(e)))),
    };
    let (tx, body) = Streamed::channel(QUEUED_WRITES);
    // Behind a proxy, the client address's count is held by the stream, not by the response
    // head (which is finished at once).
    let address = meta.address.take();
    let (mode, _) = state.advertised();
    let head = meta.respond(&state, Ok(head(mode)));
    tokio::spawn(run(state, job, expires_s, tx, address));
    Box::pin(std::future::ready(
        head.map(|r| r.map(|_| Either::Right(body))),
    ))
}

/// The checks of a stream (those of a poll) and where it starts: the `Last-Event-ID` header,
/// else the `cursor` parameter, else the start, as a poll without a cursor. Returns the job and
/// the token's expiry (Unix seconds).
fn prepare(
    state: &Arc<State>,
    meta: &mut Meta,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<(PollJob, i64), ApiError> {
    let claims = authorize(state, meta, peer, req.headers())?;
    let cfg = &state.config;
    let mut params = parse_poll(
        req.uri().query(),
        cfg.poll_timeout,
        cfg.batch,
        cfg.max_batch,
        cfg.max_channels,
    )?;
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

/// Writes the stream until it ends (see the module doc). The slot, and the client address's
/// count, are held until this returns.
async fn run(
    state: Arc<State>,
    mut job: PollJob,
    expires_s: i64,
    tx: Sender<Bytes>,
    _address: Option<AddressSlot>,
) {
    let _open = OpenStream::count(&state);
    // A wait never outlasts a third of the slot's lease, so the lease is renewed in time.
    let heartbeat = Duration::from_secs(state.config.stream_heartbeat)
        .min(slot_lease(&state.config) / 3)
        .max(Duration::from_secs(1));
    let mut renewed = Instant::now();
    let mut first = Vec::new();
    retry_field(&mut first, state.advertised().1);
    first.push(b'\n');
    if tx.send(Bytes::from(first)).await.is_err() {
        return;
    }
    loop {
        let left_ms = expires_s.saturating_mul(1000) - SystemClock.now_ms();
        if left_ms <= 0 {
            break;
        }
        job.params.timeout = heartbeat.min(Duration::from_millis(left_ms as u64));
        let waited = tokio::select! {
            r = counted_wait(&state, &mut job.params, Format::Stream, render) => r,
            // The client left: the slot is given back now, not at the next write.
            _ = tx.closed() => break,
        };
        let rendered = match waited {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(error_frame(&e)).await;
                break;
            }
        };
        job.params.req.cursor = rendered.cursor;
        if tx.send(rendered.body.clone()).await.is_err() {
            break;
        }
        rendered.count_delivered(&state.metrics);
        if *state.shutdown.borrow() {
            break;
        }
        if renewed.elapsed() >= heartbeat {
            if !job.renew_slot() {
                break;
            }
            renewed = Instant::now();
        }
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
