//! `GET /v1/stream` (server-sent events) against a running daemon: frames in order with ids
//! `/v1/poll` accepts, resuming with `Last-Event-ID` without loss or repeat, heartbeats, the
//! end of a stream at token expiry and at shutdown, the user's slots, and gap events.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use daemon_common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Longest a test waits for one frame, or for a stream to end.
const WAIT: Duration = Duration::from_secs(10);

/// One server-sent event frame, as a browser would parse it.
#[derive(Debug, Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comments: Vec<String>,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("a data field")).unwrap()
    }
}

/// An open `GET /v1/stream`, on a connection of its own (closed when dropped).
struct Stream {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Incoming>,
    buf: String,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

async fn open(addr: SocketAddr, token: &str, query: &str, last_id: Option<&str>) -> Stream {
    open_with(addr, token, query, last_id, &[]).await
}

/// [`open`] with extra request headers.
async fn open_with(
    addr: SocketAddr,
    token: &str,
    query: &str,
    last_id: Option<&str>,
    headers: &[(&str, &str)],
) -> Stream {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = Request::get(format!("/v1/stream?{query}"))
        .header("host", "localhost")
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip")
        .header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_id {
        b = b.header("last-event-id", id);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        WAIT,
        sender.send_request(b.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("the stream's head within the wait")
    .unwrap();
    let (parts, body) = resp.into_parts();
    Stream {
        status: parts.status,
        headers: parts.headers,
        body: Some(body),
        buf: String::new(),
        conn,
    }
}

impl Stream {
    /// The next frame, or `None` once the server ended the stream. Panics after [`WAIT`].
    async fn frame(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let text: String = self.buf.drain(..end + 2).collect();
                return Some(parse(&text));
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_default();
            let body = self.body.as_mut().expect("the body is read once");
            let next = tokio::time::timeout(left, body.frame())
                .await
                .unwrap_or_else(|_| panic!("no frame within {WAIT:?}; unparsed: {:?}", self.buf));
            match next {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.push_str(std::str::from_utf8(&d).unwrap());
                    }
                }
                Some(Err(e)) => panic!("the stream broke: {e}"),
                None => {
                    assert!(self.buf.is_empty(), "a partial frame: {:?}", self.buf);
                    return None;
                }
            }
        }
    }

    /// Frames until one with an event (`data`), skipping the rest; `None` if the stream ends.
    async fn event(&mut self) -> Option<Frame> {
        loop {
            let f = self.frame().await?;
            if f.data.is_some() {
                return Some(f);
            }
        }
    }

    /// Reads to the end of the stream (within [`WAIT`] per frame); returns the frames.
    async fn rest(&mut self) -> Vec<Frame> {
        let mut all = Vec::new();
        while let Some(f) = self.frame().await {
            all.push(f);
        }
        all
    }

    /// The error code of a refused stream's JSON body.
    async fn error_code(mut self) -> String {
        let body = self.body.take().expect("the body is read once");
        let bytes = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("the error body within the wait")
            .unwrap()
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        v["error"]["code"].as_str().unwrap_or("").to_owned()
    }
}

fn parse(text: &str) -> Frame {
    let mut f = Frame::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix(':') {
            f.comments.push(c.trim().to_owned());
            continue;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        let v = v.strip_prefix(' ').unwrap_or(v).to_owned();
        match k {
            "id" => f.id = Some(v),
            "event" => f.event = Some(v),
            "retry" => f.retry = Some(v.parse().unwrap()),
            "data" => {
                f.data = Some(match f.data.take() {
                    Some(d) => format!("{d}\n{v}"),
                    None => v,
                })
            }
            other => panic!("unknown field {other:?} in {text:?}"),
        }
    }
    f
}

/// A counter's value in the `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    let prefix = format!("lmsrt_{name}_total ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

fn event(channel: i64, n: i64, priority: i64) -> Value {
    json!({"event_type": "message_create", "channel_id": channel, "message_id": n,
           "priority": priority, "data": {"n": n}})
}

/// Publishes `n` events on channel 1 in one request, priorities mixed; returns their ids.
async fn publish_batch(d: &Daemon, c: &mut Client, from: i64, n: i64) -> Vec<i64> {
    let events: Vec<Value> = (from..from + n).map(|i| event(1, i, 1 + i % 4)).collect();
    d.publish(c, &json!({ "events": events })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_frames_whose_ids_the_poll_resumes_from() {
    let d = Daemon::start(config()).await;
    let t = token(7, &[1]);
    let mut s = open(d.addr, &t, "channels=1", None).await;
    assert_eq!(s.status, StatusCode::OK);
    for (h, v) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-store"),
        ("x-accel-buffering", "no"),
    ] {
        assert_eq!(s.headers.get(h).unwrap(), v, "{h}");
    }
    assert!(s.headers.get("content-encoding").is_none(), "never gzipped");
    let first = s.frame().await.unwrap();
    assert_eq!(first.retry, Some(0), "retry: from the advertised mode");
    wait_for_waiters(d.addr, 1).await;

    let mut p = d.client().await;
    let mut published = publish_batch(&d, &mut p, 0, 6).await;
    published.extend(publish_batch(&d, &mut p, 6, 6).await);
    let mut frames = Vec::new();
    while frames.len() < published.len() {
        frames.push(s.event().await.expect("the stream goes on"));
    }
    let got: Vec<i64> = frames
        .iter()
        .map(|f| f.json()["id"].as_i64().unwrap())
        .collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, published, "every event once");
    for f in &frames {
        assert_eq!(f.json()["channel_id"], 1);
        assert_eq!(f.event, None);
    }
    // Each id is a cursor /v1/poll takes, and it resumes exactly after that frame.
    let mut c = d.client().await;
    for (i, f) in frames.iter().enumerate() {
        let id = f.id.as_deref().expect("every event frame has an id");
        let r = c
            .poll(&t, &format!("channels=1&timeout=0&cursor={id}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let rest = ids(&r.json());
        let mut want = got[i + 1..].to_vec();
        want.sort_unstable();
        let mut rest_sorted = rest.clone();
        rest_sorted.sort_unstable();
        assert_eq!(rest_sorted, want, "after frame {i} ({id})");
    }
    // The event JSON is the poll's.
    let r = c.poll(&t, "channels=1&timeout=0").await;
    let polled: Vec<Value> = r.json()["events"].as_array().unwrap().clone();
    for f in &frames {
        let e = f.json();
        assert!(
            polled.contains(&e),
            "{e} is rendered as the poll renders it"
        );
    }
    let m = c.get("/metrics", &[]).await.text();
    assert!(counter(&m, "deliveries") >= 12, "{m}");
    assert!(counter(&m, "waits") >= 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_event_id_loses_and_repeats_nothing() {
    let d = Daemon::start(config()).await;
    let t = token(8, &[1]);
    let mut p = d.client().await;
    let mut published = Vec::new();
    let mut got = Vec::new();
    let mut last: Option<String> = None;
    for round in 0..6i64 {
        let mut s = open(d.addr, &t, "channels=1&limit=4", last.as_deref()).await;
        assert_eq!(s.status, StatusCode::OK);
        published.extend(publish_batch(&d, &mut p, round * 10, 10).await);
        // Read part of what is pending, then drop the connection mid-stream.
        let take = 3 + round as usize * 2;
        for _ in 0..take {
            let f = s.event().await.expect("the stream goes on");
            got.push(f.json()["id"].as_i64().unwrap());
            last = f.id.clone();
        }
        drop(s);
    }
    let mut s = open(d.addr, &t, "channels=1", last.as_deref()).await;
    while got.len() < published.len() {
        let f = s.event().await.expect("the stream goes on");
        got.push(f.json()["id"].as_i64().unwrap());
    }
    let unique: HashSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no repeat: {got:?}");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, published, "no loss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_gets_heartbeats_with_its_position() {
    let d = Daemon::start(lms_realtime::daemon::Config {
        stream_heartbeat: 1,
        ..config()
    })
    .await;
    let mut s = open(d.addr, &token(9, &[1]), "channels=1", None).await;
    assert_eq!(s.status, StatusCode::OK);
    let began = Instant::now();
    let mut beats = 0;
    while beats < 2 {
        let f = s.frame().await.expect("the stream goes on");
        assert!(f.data.is_none(), "no events were published: {f:?}");
        if f.comments.iter().any(|c| c == "hb") {
            assert!(f.id.is_some(), "a heartbeat carries the position");
            beats += 1;
        }
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "two 1 s heartbeats took {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires() {
    let d = Daemon::start(config()).await;
    let t = lms_realtime::token::issue(&key(), 10, &[1], now_s() + 2, "session").unwrap();
    let mut s = open(d.addr, &t, "channels=1", None).await;
    assert_eq!(s.status, StatusCode::OK);
    let began = Instant::now();
    let frames = s.rest().await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "ended {:?} after opening, the token had 2 s left",
        began.elapsed()
    );
    assert!(frames.iter().all(|f| f.data.is_none()));
    // The same token is refused now: the client has to come back with a fresh one.
    let r = open(d.addr, &t, "channels=1", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_stream_with_its_position() {
    let mut d = Daemon::start(config()).await;
    let mut p = d.client().await;
    publish_batch(&d, &mut p, 0, 3).await;
    let mut streams = Vec::new();
    for uid in 0..5 {
        let mut s = open(d.addr, &token(100 + uid, &[1]), "channels=1", None).await;
        assert_eq!(s.status, StatusCode::OK);
        let mut n = 0;
        while n < 3 {
            s.event().await.expect("the published events");
            n += 1;
        }
        streams.push(s);
    }
    wait_for_waiters(d.addr, 5).await;
    let head = d.store.head_cursor().unwrap().to_string();
    let began = Instant::now();
    let stopping = tokio::spawn(async move {
        d.stop().await;
    });
    for mut s in streams {
        let frames = s.rest().await;
        let last = frames.last().expect("a last frame before the end");
        assert_eq!(last.id.as_deref(), Some(head.as_str()), "its position");
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the daemon stops within the wait")
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "took {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_hold_the_users_slots() {
    let d = Daemon::start(config()).await;
    let t = token(11, &[1]);
    let mut open_streams = Vec::new();
    for _ in 0..d.config.slots_per_user {
        let s = open(d.addr, &t, "channels=1", None).await;
        assert_eq!(s.status, StatusCode::OK);
        open_streams.push(s);
    }
    wait_for_waiters(d.addr, d.config.slots_per_user as u64).await;
    let n = d.config.slots_per_user as u64;
    wait_for_health(d.addr, &format!("{n} open streams"), |h| h["streams"] == n).await;
    let mut c = d.client().await;
    let gauge = format!("lmsrt_daemon_streams {n}\n");
    assert!(
        c.get("/metrics", &[]).await.text().contains(&gauge),
        "no {gauge:?} in /metrics"
    );
    let refused = open(d.addr, &t, "channels=1", None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers.get("retry-after").is_some());
    assert_eq!(refused.error_code().await, "slots_exhausted");
    // A poll of the same user is refused too: they share the slots.
    let r = c.poll(&t, "channels=1&timeout=0").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // A closed stream gives its slot back at once.
    open_streams.pop();
    wait_for_waiters(d.addr, n - 1).await;
    wait_for_health(d.addr, "a stream fewer", |h| h["streams"] == n - 1).await;
    let s = open(d.addr, &t, "channels=1", None).await;
    assert_eq!(s.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_whose_events_were_purged_gets_a_gap_event() {
    let d = Daemon::start(config()).await;
    let t = token(12, &[1]);
    let mut c = d.client().await;
    let from = c.poll(&t, "channels=1&timeout=0").await.json()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut p = d.client().await;
    let short = json!({"event_type": "message_create", "channel_id": 1, "ttl_ms": 1000});
    d.publish(&mut p, &short).await;
    // The event expires on the clock: there is no registration to wait for here.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(d.store.purge_expired(100).unwrap(), 1);
    let kept = d.publish(&mut p, &event(1, 1, 1)).await;

    let mut s = open(d.addr, &t, "channels=1", Some(&from)).await;
    assert_eq!(s.status, StatusCode::OK);
    let gap = s.event().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
    assert_eq!(gap.json()["gap"], true);
    let next = s.event().await.unwrap();
    assert_eq!(
        next.json()["id"].as_i64(),
        Some(kept[0]),
        "then the live event"
    );
    // Resuming after the gap does not report it again.
    drop(s);
    let mut s = open(d.addr, &t, "channels=1", gap.id.as_deref()).await;
    let again = s.event().await.unwrap();
    assert_eq!(again.event, None, "the gap is behind the cursor: {again:?}");
    assert_eq!(again.json()["id"].as_i64(), Some(kept[0]));

    // A cursor from another store (another epoch) is a gap too.
    let foreign = "v1.deadbeef.1.1.1.1";
    let mut s = open(d.addr, &t, "channels=1", Some(foreign)).await;
    let gap = s.event().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stream_is_refused_before_it_opens() {
    let d = Daemon::start(config()).await;
    let t = token(13, &[1]);
    let r = open(d.addr, &t, "channels=2", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = open(d.addr, &t, "channels=1", Some("v9.nope")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code().await, "invalid_cursor");
    let r = open(d.addr, "not-a-token", "channels=1", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_the_wordpress_origin_passes_cors() {
    let origin = "https://chat.example.org";
    let d = Daemon::start(lms_realtime::daemon::Config {
        cors_origins: vec![origin.to_owned()],
        ..config()
    })
    .await;
    let mut c = d.client().await;
    let r = c
        .send(
            Request::builder()
                .method("OPTIONS")
                .uri("/v1/stream")
                .header("host", "localhost")
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header(
                    "access-control-request-headers",
                    "authorization, last-event-id",
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let allowed = r.header("access-control-allow-headers").unwrap();
    assert!(allowed.contains("Last-Event-ID"), "{allowed}");
    let s = open_with(
        d.addr,
        &token(14, &[1]),
        "channels=1",
        None,
        &[("origin", origin)],
    )
    .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        s.headers.get("access-control-allow-origin").unwrap(),
        origin
    );
    assert_eq!(s.headers.get("content-type").unwrap(), "text/event-stream");
}
