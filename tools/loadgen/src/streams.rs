//! The stream clients (`--transport stream`): one server-sent event stream at a time per
//! client and user, read as a browser's `EventSource` would, and resumed with `Last-Event-ID`
//! whenever the server ends it (the daemon at the token's expiry, Nchan at its
//! `nchan_subscriber_timeout`) or, with `--stream-max-age`, the client drops it. Each delivery is counted as the long-poll clients count theirs
//! (`client.rs`): loss, duplicates and lateness come out of the same report.
//!
//! A stream that ends is reopened after the server's `retry:` (the daemon says 0 while
//! healthy); when the server gave none (Nchan) it is reopened at once, where a browser would
//! wait its default of a few seconds: the figures are the server's, not the browser's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::chunked::Dechunker;
use crate::client::{Ev, Payload, Seen, Shared, bearer, connect};
use crate::http::{Conn, Framing, request};
use crate::sse::{Frame, SseParser};
use crate::{Args, Target, now_us, token_key};

/// How one stream's response ended.
enum Ended {
    /// Its body ended and the connection may carry the next request (chunked, or sized).
    Reusable,
    /// The server closed the connection (Nchan's EventSource ends its body so).
    Closed,
}

/// Client `i`: streams its channel (`1 + i % channels`) until told to stop, counting what
/// arrives.
pub(crate) async fn stream_client(
    i: usize,
    a: Arc<Args>,
    addr: SocketAddr,
    start_cursor: String,
    shared: Arc<Shared>,
) -> Seen {
    let channel = 1 + (i % a.channels) as i64;
    let key = token_key();
    let mut seen = Seen::default();
    let mut parser = SseParser::default();
    let mut stop_rx = shared.stop_rx.clone();
    let mut conn: Option<Conn> = None;
    let mut first = true;
    let max_age = Duration::from_secs_f64(a.stream_max_age);
    while !shared.stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(addr, &shared).await {
                Some(c) => conn.insert(c),
                None => break,
            },
        };
        let req = stream_request(&a, &key, i, channel, &start_cursor, &parser.last_id);
        let opened = tokio::select! {
            r = c.send_head(&req) => r,
            _ = stop_rx.wait_for(|v| *v) => break,
        };
        seen.polls += 1;
        let framing = match opened {
            Ok((200, framing)) => framing,
            Ok((status, _)) => {
                seen.error(i, format_args!("HTTP {status} opening a stream"));
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                seen.error(i, format_args!("opening a stream: {e}"));
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if first {
            shared.registered.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        parser.restart();
        let dropped = tokio::time::sleep(max_age);
        let ended = tokio::select! {
            r = read_stream(i, c, framing, &mut parser, &mut seen, &a, &shared) => r,
            _ = stop_rx.wait_for(|v| *v) => break,
            // Dropped by the client (--stream-max-age): what it had not parsed yet is sent
            // again on the resumed stream.
            _ = dropped, if !max_age.is_zero() => Ok(Ended::Closed),
        };
        match ended {
            Ok(Ended::Reusable) => {}
            Ok(Ended::Closed) => conn = None,
            Err(e) => {
                seen.error(i, format_args!("reading a stream: {e}"));
                conn = None;
            }
        }
        if let Some(ms) = parser.retry_ms.filter(|ms| *ms > 0) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    seen
}

/// The request that opens (or resumes, after `last_id`) client `i`'s stream of `channel`.
fn stream_request(
    a: &Args,
    key: &lms_realtime::token::TokenKey,
    i: usize,
    channel: i64,
    start_cursor: &str,
    last_id: &str,
) -> Vec<u8> {
    let mut headers = vec![("accept", "text/event-stream")];
    if !last_id.is_empty() {
        headers.push(("last-event-id", last_id));
    }
    match a.target {
        Target::Daemon => {
            // A fresh token per stream: with a short --token-ttl the last one has expired.
            let auth = bearer(key, i, channel, a.token_ttl);
            headers.push(("authorization", &auth));
            let mut path = format!("/v1/stream?channels={channel}&limit={}", a.limit);
            if !start_cursor.is_empty() {
                // Where the run starts; Last-Event-ID, once there is one, takes precedence.
                path.push_str("&cursor=");
                path.push_str(start_cursor);
            }
            request("GET", &path, &headers, b"")
        }
        Target::Nchan => request("GET", &format!("/sub/{channel}"), &headers, b""),
    }
}

/// Reads one stream's body until it ends, counting each event it carries.
async fn read_stream(
    i: usize,
    conn: &mut Conn,
    framing: Framing,
    parser: &mut SseParser,
    seen: &mut Seen,
    a: &Args,
    shared: &Shared,
) -> std::io::Result<Ended> {
    let mut dechunk = Dechunker::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => usize::MAX,
    };
    let mut plain = Vec::new();
    let mut frames = Vec::new();
    loop {
        if left == 0 {
            return Ok(Ended::Reusable);
        }
        let bytes = conn.read_body().await?;
        if bytes.is_empty() {
            return Ok(Ended::Closed);
        }
        let recv = now_us();
        let arrived = if conn.arrived_us > 0 {
            conn.arrived_us.min(recv)
        } else {
            recv
        };
        let body: &[u8] = match framing {
            Framing::Chunked => {
                plain.clear();
                dechunk.feed(&bytes, &mut plain)?;
                &plain
            }
            Framing::Length(_) => {
                let n = left.min(bytes.len());
                left -= n;
                &bytes[..n]
            }
            Framing::UntilClose => &bytes,
        };
        parser.feed(body, &mut frames);
        for f in frames.drain(..) {
            delivered(i, &f, seen, a, shared, recv, arrived);
        }
        if dechunk.done() {
            return Ok(Ended::Reusable);
        }
    }
}

/// Counts what one dispatched event says: a delivery, a gap, or an error.
fn delivered(
    i: usize,
    f: &Frame,
    seen: &mut Seen,
    a: &Args,
    shared: &Shared,
    recv: i64,
    arrived: i64,
) {
    match f.event.as_str() {
        "message" => {
            let payload = match a.target {
                Target::Daemon => serde_json::from_str::<Ev>(&f.data).map(|e| e.data),
                Target::Nchan => serde_json::from_str::<Payload>(&f.data),
            };
            match payload {
                Ok(p) => seen.record(&p, a.channels, recv, arrived, shared),
                Err(e) => seen.error(i, format_args!("an event that is not ours: {e}")),
            }
        }
        "gap" => seen.gaps += 1,
        other => seen.error(i, format_args!("event {other}: {}", f.data)),
    }
}
