//! The long-poll clients: one kept-alive connection and one user each, counting every event
//! they receive and how late it came (the stream clients, `streams.rs`, count the same way).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lms_realtime::token::{self, TokenKey};
use serde::Deserialize;

use crate::http::{Conn, HeaderPair, request};
use crate::server::Server;
use crate::streams::stream_client;
use crate::{Args, Target, Transport, now_us, token_key};

#[derive(Deserialize)]
struct PollResp<'a> {
    events: Vec<Ev>,
    #[serde(borrow)]
    cursor: &'a str,
}

/// A daemon event, of which the generator reads only its data.
#[derive(Deserialize)]
pub(crate) struct Ev {
    pub(crate) data: Payload,
}

/// What every published event carries: its sequence number and publish time (µs).
#[derive(Deserialize)]
pub(crate) struct Payload {
    seq: u64,
    t: i64,
}

/// What one client saw.
#[derive(Default)]
pub(crate) struct Seen {
    /// Per seq of its channel (seq / channels): how many times it arrived.
    pub(crate) counts: Vec<u8>,
    /// Publish to the read of the response, per delivery.
    pub(crate) latencies_us: Vec<u32>,
    /// The same deliveries measured to their arrival at the client's socket.
    pub(crate) arrival_latencies_us: Vec<u32>,
    /// Requests: polls, or streams opened.
    pub(crate) polls: u64,
    pub(crate) errors: u64,
    /// `gap` events (streams).
    pub(crate) gaps: u64,
}

impl Seen {
    /// Counts one delivery of `e` read at `recv` that arrived at the socket at `arrived` (µs
    /// since the epoch), for a client of a run over `channels` channels.
    pub(crate) fn record(
        &mut self,
        e: &Payload,
        channels: usize,
        recv: i64,
        arrived: i64,
        shared: &Shared,
    ) {
        let slot = (e.seq / channels as u64) as usize;
        if self.counts.len() <= slot {
            self.counts.resize(slot + 1, 0);
        }
        self.counts[slot] = self.counts[slot].saturating_add(1);
        let lat = (recv - e.t).max(0);
        self.latencies_us.push(lat.min(u32::MAX as i64) as u32);
        let lat = (arrived - e.t).max(0);
        self.arrival_latencies_us
            .push(lat.min(u32::MAX as i64) as u32);
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        shared
            .last_receipt
            .fetch_max(recv as u64, Ordering::Relaxed);
        shared
            .last_arrival
            .fetch_max(arrived as u64, Ordering::Relaxed);
    }

    /// Counts an error, printing the client's first one.
    pub(crate) fn error(&mut self, i: usize, what: std::fmt::Arguments<'_>) {
        self.errors += 1;
        if self.errors <= 1 {
            eprintln!("client {i}: {what}");
        }
    }
}

/// What the clients share with the scenario that runs them.
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) stop_rx: tokio::sync::watch::Receiver<bool>,
    /// Clients that have sent their first poll, or whose first stream has opened.
    pub(crate) registered: AtomicUsize,
    pub(crate) delivered: AtomicU64,
    /// Per fanout round: the time of the latest receipt (µs).
    pub(crate) last_receipt: AtomicU64,
    /// Per fanout round: the latest arrival at a client's socket (µs).
    pub(crate) last_arrival: AtomicU64,
}

impl Shared {
    /// Fresh counters, and the sender that stops every client's pending poll (with `stop`).
    pub(crate) fn new() -> (Arc<Shared>, tokio::sync::watch::Sender<bool>) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stop_rx,
            registered: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_receipt: AtomicU64::new(0),
            last_arrival: AtomicU64::new(0),
        });
        (shared, stop_tx)
    }
}

/// Starts `n` clients (long-poll or stream, as `--transport` says) from `start_cursor`,
/// yielding now and then so the first ones connect while the rest are spawned.
pub(crate) async fn spawn_clients(
    n: usize,
    a: &Arc<Args>,
    addr: SocketAddr,
    start_cursor: &str,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut clients = Vec::new();
    for i in 0..n {
        let (a, cursor, shared) = (a.clone(), start_cursor.to_owned(), shared.clone());
        let addr = match a.also_url {
            Some(second) if i % 2 == 1 => second,
            _ => addr,
        };
        clients.push(match a.transport {
            Transport::Poll => tokio::spawn(client(i, a, addr, cursor, shared)),
            Transport::Stream => tokio::spawn(stream_client(i, a, addr, cursor, shared)),
        });
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    clients
}

/// Client `i`: polls its channel (`1 + i % channels`) until told to stop, counting what arrives.
async fn client(
    i: usize,
    a: Arc<Args>,
    addr: SocketAddr,
    start_cursor: String,
    shared: Arc<Shared>,
) -> Seen {
    let channel = 1 + (i % a.channels) as i64;
    let mut seen = Seen::default();
    let auth = bearer(&token_key(), i, channel, a.token_ttl);
    let Some(mut conn) = connect(addr, &shared).await else {
        return seen;
    };
    let mut cursor = start_cursor;
    let mut nchan = HeaderPair::default();
    let mut first = true;
    // The daemon's poll, around the cursor: written into one reused buffer per poll.
    let head = format!("GET /v1/poll?channels={channel}&cursor=");
    let tail = format!(
        "&timeout={}&limit={} HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\n\r\n",
        a.poll_timeout, a.limit
    );
    let mut req: Vec<u8> = Vec::with_capacity(head.len() + tail.len() + 64);
    while !shared.stop.load(Ordering::Relaxed) {
        req.clear();
        match a.target {
            Target::Daemon => {
                req.extend_from_slice(head.as_bytes());
                req.extend_from_slice(cursor.as_bytes());
                req.extend_from_slice(tail.as_bytes());
            }
            Target::Nchan => {
                let mut h: Vec<(&str, &str)> = Vec::new();
                if let Some(lm) = &nchan.last_modified {
                    h.push(("if-modified-since", lm));
                }
                if let Some(et) = &nchan.etag {
                    h.push(("if-none-match", et));
                }
                req = request("GET", &format!("/sub/{channel}"), &h, b"");
            }
        }
        if first {
            shared.registered.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let mut stop_rx = shared.stop_rx.clone();
        let r = tokio::select! {
            r = conn.send(&req) => r,
            _ = stop_rx.wait_for(|v| *v) => break,
        };
        seen.polls += 1;
        let (status, headers, body) = match r {
            Ok(x) => x,
            Err(e) => {
                seen.error(i, format_args!("{e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                match Conn::open(addr).await {
                    Ok(c) => conn = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                continue;
            }
        };
        let recv = now_us();
        let arrived = if conn.arrived_us > 0 {
            conn.arrived_us.min(recv)
        } else {
            recv
        };
        let mut events: Vec<Payload> = Vec::new();
        match a.target {
            Target::Daemon => {
                if status != 200 {
                    let body = String::from_utf8_lossy(&body);
                    seen.error(i, format_args!("HTTP {status}: {body}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                match serde_json::from_slice::<PollResp>(&body) {
                    Ok(p) => {
                        cursor.clear();
                        cursor.push_str(p.cursor);
                        events = p.events.into_iter().map(|e| e.data).collect();
                    }
                    Err(_) => seen.errors += 1,
                }
            }
            Target::Nchan => {
                // 200 with one message per response; 304 on a long-poll timeout.
                if status == 200 {
                    if let Ok(p) = serde_json::from_slice::<Payload>(&body) {
                        events.push(p);
                    } else {
                        seen.errors += 1;
                    }
                    nchan = headers;
                } else if status != 304 && status != 408 {
                    seen.errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        for e in &events {
            seen.record(e, a.channels, recv, arrived, &shared);
        }
    }
    seen
}

/// The `Authorization` value of client `i` (user `10000 + i`) for `channel`: a token that
/// expires `ttl_s` seconds from now (to the second, rounded down).
pub(crate) fn bearer(key: &TokenKey, i: usize, channel: i64, ttl_s: u64) -> String {
    let exp = (now_us() + ttl_s as i64 * 1_000_000) / 1_000_000;
    let tok = token::issue(key, 10_000 + i as i64, &[channel], exp, "loadgen").unwrap();
    format!("Bearer {tok}")
}

/// A connection to `addr`, retried every 50 ms until it opens or the run stops.
pub(crate) async fn connect(addr: SocketAddr, shared: &Shared) -> Option<Conn> {
    loop {
        match Conn::open(addr).await {
            Ok(c) => return Some(c),
            Err(_) if !shared.stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return None,
        }
    }
}

/// Waits until `n` clients have sent their first poll and, for the daemon, until it reports
/// that many parked waiters (at most 120 s), with those of `also` (a second daemon) if given.
pub(crate) async fn wait_registered(
    server: &Server,
    also: Option<SocketAddr>,
    shared: &Shared,
    n: usize,
    target: Target,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.registered.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if target == Target::Daemon {
        // The daemons report their waiters: wait until every poll is parked.
        let mut conns = Vec::new();
        for addr in std::iter::once(server.addr).chain(also) {
            conns.push(Conn::open(addr).await.expect("health connection"));
        }
        while Instant::now() < deadline {
            let mut parked = 0;
            for c in &mut conns {
                let req = request("GET", "/healthz", &[], b"");
                if let Ok((_, _, body)) = c.send(&req).await {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    parked += v["waiters"].as_u64().unwrap_or(0);
                }
            }
            if parked >= n as u64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("warning: not every client was waiting after 120 s");
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
