//! `lms-longpolld`, the long-poll daemon (feature `daemon`).
//!
//! [`run`] serves one [`EventStore`] over HTTP until its `shutdown` future completes, in the
//! style of mini-redis's `server::run`: the binary (`src/bin/lms-longpolld.rs`) only parses the
//! [`Config`], sets up logging, opens the store, binds the listener and passes
//! [`shutdown::signal`]. Tests call [`run`] on `127.0.0.1:0`.
//!
//! ## How a poll is served
//!
//! 1. Limits first, cheapest first: the per-IP rate limit (with the DDoS block), the token
//!    (HMAC, constant-time), the channels it allows, the per-user rate limit, then one of the
//!    user's connection slots for the length of the poll.
//! 2. The poll registers with the fan-out hub (`fanout.rs`) and builds its batch from the ring of
//!    recent events in memory, or, when the ring does not reach back to its cursor, from the
//!    store on a blocking thread (behind the store's circuit breaker).
//! 3. With nothing to deliver it sleeps until the hub notifies it (an append by any process on
//!    the host), its deadline, or shutdown; then it builds its batch again and answers.
//!
//! SQLite is never called on the async worker threads: store calls run through `spawn_blocking`,
//! at most `--store-readers` reads and `--store-writers` appends at once. No `std::sync` lock
//! is held across an `.await`.
//!
//! ## Shards
//!
//! With `--shards N` (N > 1) the runtime [`run`] is called on is shard 0, and N − 1 threads
//! each run a single-threaded runtime of their own. The acceptor (shard 0) hands connections
//! round-robin, as std sockets that each shard registers with its own reactor. The fan-out hub
//! keeps one ring and one cache of rendered responses, but the waiters per shard, each shard with
//! its own dispatcher task: one event's responses are written by every shard at once, and each
//! wake-up stays on the waiter's own runtime. Limiter, slots, token cache, connection cap,
//! metrics and shutdown are shared; background tasks (appender answers, purge) run on shard 0.
//!
//! ## Modules
//!
//! Each layer imports only from the layers below it (no loops):
//!
//! ```text
//! mod.rs (run: accept loop, shards, shutdown)   timed_io.rs
//!   lean.rs · head.rs (a connection's first bytes; a first GET /v1/stream without hyper)
//!   router.rs (routing, the proxy's per-address count)
//!     lms.rs · stream.rs · shared.rs            (endpoints built on poll.rs's parts)
//!     poll.rs · publish.rs · ops.rs · demo.rs   (the endpoints; none imports another)
//!       response.rs (Resp, JSON, errors, CORS, gzip, security headers, Meta, read_body)
//!       limits.rs (per-address rate limit)       gate.rs (impl State: store calls, breaker)
//!         state.rs (State and building it from the Config)
//!           fanout.rs (+ fanout/responses.rs) · appender · replay · auth · addresses
//!           config · error · shutdown
//! ```
//!
//! `GET /v1/stream` (`stream.rs`), `/v1/lms/poll` (`lms.rs`) and, with the guards in Redis,
//! `/v1/poll` (`shared.rs`: their calls awaited) are built from `poll.rs`'s parts. A connection
//! whose first request is a stream is served without hyper (`lean.rs`: no buffers held while
//! it idles); every other connection goes to hyper with the bytes read to tell.
//!
//! ## Shutdown
//!
//! When `shutdown` completes the listener is dropped (no new connections), every waiting poll
//! on every shard is answered at once with its current cursor (so clients resume without loss),
//! every stream ends after writing its position (a heartbeat with its `id:`), idle
//! kept-alive connections are closed, and [`run`] returns once every connection has finished
//! or `--shutdown-grace-ms` has passed.

mod addresses;
mod appender;
pub mod auth;
pub mod config;
mod demo;
pub mod error;
pub(crate) mod fanout;
mod gate;
pub(crate) mod head;
mod lean;
mod limits;
mod lms;
mod ops;
pub(crate) mod poll;
pub(crate) mod publish;
mod replay;
mod response;
mod router;
#[cfg(feature = "redis")]
mod shared;
pub mod shutdown;
mod state;
mod stream;
mod timed_io;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub use config::{Config, GuardsArg};
pub use state::raise_nofile_limit;

use crate::error::{Error, Result};
use crate::metrics::{Counter, Gauge};
use crate::store::EventStore;
use state::State;
use timed_io::TimedIo;

/// Scheduler ticks between two looks for I/O and timer events, for the runtimes serving
/// connections (tokio's default is 61). A fan-out wakes thousands of polls at once; with the
/// default, the runtime stopped every 61 of them to collect the re-polls that had arrived
/// meanwhile (an `epoll_wait` and a wake-up each), so that work came before the rest of the
/// responses were written. With this many ticks the woken polls all write first. The runtime
/// still looks for events whenever it runs out of ready tasks, so new requests and timers wait
/// only while that much work is ready, and at most this many task polls (for a fan-out to
/// 10,000 polls, the ~110 ms its responses take to write on this project's test machine).
/// `lms-longpolld` builds its runtime with it; an embedder calling [`run`] on a runtime of its
/// own should too (`tokio::runtime::Builder::event_interval`).
pub const RUNTIME_EVENT_INTERVAL: u32 = 16_384;

/// Serves `store` on `listener` until `shutdown` completes, then shuts down gracefully (see the
/// module docs). Errors only at start (a bad configuration, a store that cannot be subscribed).
pub async fn run(
    listener: TcpListener,
    store: Arc<EventStore>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.validate()?;
    let state::Built {
        state,
        subscription,
        shutdown: shutdown_tx,
    } = state::build(store, config)?;
    let shards = state.config.shard_count();

    let mut background = vec![tokio::spawn(state.hub.clone().dispatch_loop(0))];
    if state.config.purge_interval > 0 {
        background.push(tokio::spawn(purge_loop(state.clone())));
    }
    if state.config.demo {
        background.push(tokio::spawn(demo::bot(state.clone())));
    }

    let builder = Arc::new(http_builder(&state.config));
    let ops_builder = ops_builder(&state.config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();

    // Shards 1..N: a thread each, with its own single-threaded runtime, fed connections by this
    // acceptor round-robin (this runtime is shard 0).
    let mut feeds = Vec::new();
    let mut stopped = Vec::new();
    for i in 1..shards {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        std::thread::Builder::new()
            .name(format!("lmsrt-shard-{i}"))
            .spawn(move || shard_thread(st, i, rx, done_tx))
            .map_err(|e| Error::Internal(format!("starting shard thread {i}: {e}")))?;
        feeds.push(tx);
        stopped.push(done_rx);
    }

    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, shards, demo = state.config.demo, "lms-longpolld serving");
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_error = None::<Instant>;
    let mut next_shard = 0usize;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a transient error: back off briefly rather
                    // than spin; log at most once a second.
                    if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "accept failed");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // One address may hold at most --max-connections-per-ip; behind a proxy the peer is
        // the proxy, and the client's address is counted per request instead (`router.rs`).
        let slot = if state.config.trust_proxy {
            None
        } else {
            match state.addresses.acquire(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    state.metrics.incr(Counter::ConnectionsRefused);
                    tokio::spawn(refuse_address(tcp));
                    continue;
                }
            }
        };
        // The capacity is shared by every shard.
        let open = state.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if open > state.capacity {
            state.connections.fetch_sub(1, Ordering::Relaxed);
            // Full: health checks and scrapes still get an answer, from the ops reserve.
            let ops = state.ops_connections.fetch_add(1, Ordering::Relaxed);
            if ops < state.config.ops_reserve_connections {
                serve_ops(&state, &ops_builder, tcp, peer, slot);
            } else {
                state.ops_connections.fetch_sub(1, Ordering::Relaxed);
                state.metrics.incr(Counter::ConnectionsRefused);
                tokio::spawn(refuse(tcp));
            }
            continue;
        }
        state.metrics.set_gauge(Gauge::Connections, open as i64);
        let shard = next_shard;
        next_shard = (next_shard + 1) % shards;
        if shard == 0 {
            serve(&state, &builder, &graceful, tcp, peer, slot);
            continue;
        }
        // Handed over as a std socket: the shard registers it with its own runtime. A
        // connection that cannot be handed over is closed, and its slot freed, here.
        let handed = tcp
            .into_std()
            .ok()
            .and_then(|s| feeds[shard - 1].send((s, peer, slot)).ok());
        if handed.is_none() {
            connection_closed(&state);
        }
    }

    // Shutdown: stop accepting, answer every waiter now (on every shard), then let connections
    // finish.
    drop(listener);
    drop(feeds);
    let waiting = state.hub.waiter_count();
    tracing::info!(waiters = waiting, "shutting down: answering waiting polls");
    let _ = shutdown_tx.send(true);
    // Waiting polls do not watch the shutdown channel (see `poll::wait_for_batch`): they are
    // woken here, after the flag is set, and answer.
    state.hub.wake_all();
    for t in &background {
        t.abort();
    }
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = state.connections.load(Ordering::Relaxed),
            "connections still open after the grace period; closing them"
        );
    }
    // Each shard shuts down the same way, in parallel; wait for them (their own grace, plus
    // the time to stop their runtimes).
    for done in stopped {
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), done).await;
    }
    drop(subscription);
    state.metrics.set_gauge(Gauge::Connections, 0);
    state.metrics.set_gauge(Gauge::ActiveWaits, 0);
    tracing::info!("stopped");
    Ok(())
}

/// hyper's HTTP/1 settings.
fn http_builder(config: &Config) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_timeout))
        .max_buf_size(config.max_header_bytes.max(8192) + 8192)
        .max_header_size(config.max_header_bytes)
        .keep_alive(true);
    builder
}

/// hyper's settings for a connection of the ops reserve: one request, sent within 2 s (or the
/// header timeout, if shorter), so that idle connections cannot hold the reserve.
fn ops_builder(config: &Config) -> http1::Builder {
    let mut builder = http_builder(config);
    builder
        .header_read_timeout(Duration::from_secs(config.header_timeout.min(2)))
        .keep_alive(false);
    builder
}

/// A connection counted in `state.connections` has ended.
fn connection_closed(state: &State) {
    let n = state.connections.fetch_sub(1, Ordering::Relaxed) - 1;
    state.metrics.set_gauge(Gauge::Connections, n as i64);
}

/// A connection counted in `state.connections`, with its address's slot: both given back
/// when it is dropped, however the connection ends.
struct Counted {
    state: Arc<State>,
    _slot: Option<addresses::AddressSlot>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        connection_closed(&self.state);
    }
}

/// Serves one accepted connection (already counted; `slot` is its address's, released when
/// it closes) on the current runtime: a first request that is a stream, and long-polls while
/// the connection sends nothing else, on the lean path (`lean.rs`), anything else with hyper.
/// Both are watched by `graceful`.
///
/// The first bytes are read by a task of their own, which then spawns the connection's task:
/// each task is as large as its future, so a lean stream's holds no room for hyper's
/// connection, and a long-poll's none for the reading of its first bytes.
fn serve(
    state: &Arc<State>,
    builder: &Arc<http1::Builder>,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Option<addresses::AddressSlot>,
) {
    let _ = tcp.set_nodelay(true);
    let counted = Counted {
        state: state.clone(),
        _slot: slot,
    };
    let builder = builder.clone();
    // Taken now: a connection accepted before the shutdown is one it waits for.
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        match lean::first_request(&counted.state, tcp).await {
            lean::Opened::Stream(io, req) => {
                tokio::spawn(serve_stream(watcher, io, peer, req, counted));
            }
            lean::Opened::Poll(io, req) => {
                tokio::spawn(serve_polls(builder, watcher, io, peer, req, counted));
            }
            lean::Opened::Hyper(io, left) => {
                let builder = within(builder, &counted.state.config, left);
                tokio::spawn(serve_hyper(builder, watcher, io, peer, counted));
            }
            lean::Opened::Closed => {}
        }
    });
}

/// Serves a connection's long-polls on the lean path (`lean::serve_polls`), then, in a task of
/// its own, a stream or hyper's requests after them: this task, a waiting poll's, holds no
/// room for their state. Watched by the graceful shutdown.
///
/// Not an `async fn`: one would keep its arguments twice (as given, and moved into its body),
/// and `io` is held for as long as the connection's polls wait.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn serve_polls(
    builder: Arc<http1::Builder>,
    watcher: hyper_util::server::graceful::Watcher,
    mut io: TimedIo,
    peer: SocketAddr,
    req: Box<hyper::Request<()>>,
    counted: Counted,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        match lean::serve_polls(&counted.state, &mut io, &peer, req).await {
            lean::AfterPolls::Stream(req) => {
                tokio::spawn(serve_stream(watcher, io, peer, req, counted));
            }
            lean::AfterPolls::Hyper => {
                tokio::spawn(serve_hyper(builder, watcher, io, peer, counted));
            }
            lean::AfterPolls::Closed => {}
        }
    }
}

/// Serves a stream on the lean path, watched by the graceful shutdown.
async fn serve_stream(
    watcher: hyper_util::server::graceful::Watcher,
    io: TimedIo,
    peer: SocketAddr,
    req: Box<hyper::Request<()>>,
    counted: Counted,
) {
    lean::serve(counted.state.clone(), io, peer, req).await;
    // Held until now: the graceful shutdown waits for the stream's connection.
    drop((watcher, counted));
}

/// hyper's settings for a connection whose first bytes took a while: its header timeout is
/// what is left of the one the first bytes were read under, so that a head sent slowly gets
/// one header timeout in all, not one before the lean path tells and another in hyper. A head
/// that began within the first second (any client but a slow one) keeps the whole timeout, and
/// so do the later requests of its connection.
fn within(builder: Arc<http1::Builder>, config: &Config, left: Duration) -> Arc<http1::Builder> {
    let full = Duration::from_secs(config.header_timeout);
    if left + Duration::from_secs(1) >= full {
        return builder;
    }
    let mut slow = (*builder).clone();
    slow.header_read_timeout(left.max(Duration::from_millis(100)));
    Arc::new(slow)
}

/// Serves a connection with hyper, watched by the graceful shutdown.
async fn serve_hyper(
    builder: Arc<http1::Builder>,
    watcher: hyper_util::server::graceful::Watcher,
    io: TimedIo,
    peer: SocketAddr,
    counted: Counted,
) {
    let st = counted.state.clone();
    let svc = service_fn(move |req| router::handle(st.clone(), peer, req));
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc));
    drop(builder);
    if let Err(e) = conn.await {
        tracing::trace!(%peer, error = %e, "connection ended with an error");
    }
    drop(counted);
}

/// Serves a connection of the ops reserve (counted in `ops_connections`): `/healthz` and
/// `/metrics` only, one request. Not watched by the graceful shutdown: it ends after its one
/// request or its 2 s header timeout anyway.
fn serve_ops(
    state: &Arc<State>,
    builder: &http1::Builder,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Option<addresses::AddressSlot>,
) {
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(TimedIo::new(tcp, Duration::from_secs(2)));
    let st = state.clone();
    let svc = service_fn(move |req| router::handle_ops(st.clone(), peer, req));
    let conn = builder.serve_connection(io, svc);
    let st = state.clone();
    tokio::spawn(async move {
        let _ = conn.await;
        drop(slot);
        st.ops_connections.fetch_sub(1, Ordering::Relaxed);
    });
}

/// A connection handed to a shard: the socket, the peer, and its address's slot.
type Handed = (
    std::net::TcpStream,
    SocketAddr,
    Option<addresses::AddressSlot>,
);

type Feed = tokio::sync::mpsc::UnboundedReceiver<Handed>;

/// The thread of shard `shard` (1 or more): its own single-threaded runtime serving the
/// connections the acceptor hands it, with its own fan-out dispatcher for its waiters.
fn shard_thread(
    state: Arc<State>,
    shard: usize,
    feed: Feed,
    done: tokio::sync::oneshot::Sender<()>,
) {
    fanout::set_current_shard(shard);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(RUNTIME_EVENT_INTERVAL)
        .max_blocking_threads(state.config.store_readers + state.config.store_writers + 8)
        .build();
    match rt {
        Ok(rt) => {
            rt.block_on(shard_serve(state.clone(), shard, feed));
            rt.shutdown_timeout(Duration::from_millis(200));
        }
        Err(e) => {
            // Its connections are refused by closing them; the other shards go on.
            tracing::error!(shard, error = %e, "cannot start a shard's runtime");
            let mut feed = feed;
            while feed.blocking_recv().is_some() {
                connection_closed(&state);
            }
        }
    }
    let _ = done.send(());
}

async fn shard_serve(state: Arc<State>, shard: usize, mut feed: Feed) {
    let builder = Arc::new(http_builder(&state.config));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let dispatch = tokio::spawn(state.hub.clone().dispatch_loop(shard));
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            c = feed.recv() => match c {
                Some((std, peer, slot)) => match TcpStream::from_std(std) {
                    Ok(tcp) => serve(&state, &builder, &graceful, tcp, peer, slot),
                    Err(_) => connection_closed(&state),
                },
                None => break,
            },
        }
    }
    // Connections handed over but not yet served are closed.
    feed.close();
    while feed.try_recv().is_ok() {
        connection_closed(&state);
    }
    dispatch.abort();
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

/// Answers a connection over its address's cap with a 429 and closes it.
async fn refuse_address(tcp: TcpStream) {
    let body = br#"{"error":{"code":"too_many_connections_from_address","message":"this address has as many connections open as the daemon allows one address (--max-connections-per-ip)"},"retry_ms":1000}"#;
    refuse_with(tcp, "429 Too Many Requests", "", body).await;
}

/// Answers a connection over capacity with a 503 and closes it.
async fn refuse(tcp: TcpStream) {
    let body = br#"{"error":{"code":"too_many_connections","message":"the daemon is at its connection capacity","mode":"short"},"mode":"short","retry_ms":1000}"#;
    refuse_with(
        tcp,
        "503 Service Unavailable",
        "x-lms-mode: short\r\n",
        body,
    )
    .await;
}

/// Writes a JSON refusal (`status`, then `extra` header lines) on a connection hyper never
/// sees, and closes it; gives up after a second (a client that does not read).
async fn refuse_with(mut tcp: TcpStream, status: &str, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         {extra}connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        tcp.shutdown().await
    })
    .await;
}

async fn purge_loop(state: Arc<State>) {
    let every = Duration::from_secs(state.config.purge_interval);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let r = state
            .store_call(&state.write_sem, Counter::Appends, |s| {
                s.purge_expired(100_000)
            })
            .await;
        match r {
            Ok(n) if n > 0 => tracing::info!(purged = n, "purged expired events"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
    }
}

/// The address a [`run`] started by [`spawn`] listens on, and its handles.
#[derive(Debug)]
pub struct Spawned {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Completes the shutdown future: the daemon shuts down gracefully.
    pub shutdown: tokio::sync::oneshot::Sender<()>,
    /// The daemon's task; resolves when [`run`] returns.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Binds `127.0.0.1:0` and runs the daemon on the current runtime (for tests and the load
/// generator).
pub async fn spawn(store: Arc<EventStore>, config: Config) -> Result<Spawned> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("127.0.0.1:0", e))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, store, config, async move {
        let _ = rx.await;
    }));
    Ok(Spawned {
        addr,
        shutdown: tx,
        task,
    })
}
