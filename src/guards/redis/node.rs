//! One Redis node as the guards use it: its pooled connections (with the guards' short
//! timeouts) and its back-off after a failure. A single-node site has one; a cluster one per
//! node it has talked to, so a master that is down is left alone without holding up the others.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ::redis::{Client, Connection, RedisError, RedisResult};

use super::{BACKOFF, IO_TIMEOUT, MAX_BACKOFF};

/// Idle connections kept per node.
const MAX_IDLE: usize = 16;

/// Why a call was not answered.
#[derive(Debug)]
pub(super) enum Failure {
    /// Not tried: the node (or, on a cluster, the slot map) is backing off after a failure.
    BackingOff,
    /// Tried, and Redis failed (unreachable, timed out, or answered an error).
    Redis(RedisError),
}

/// A Redis node: where it is, its idle connections and its back-off.
pub(super) struct Node {
    /// `host:port`, as a cluster names it (the URL, for a single node).
    pub(super) addr: String,
    client: Client,
    pool: Mutex<Vec<Connection>>,
    /// The daemon's connections: one per serving thread (each shard's runtime runs on one),
    /// multiplexed by every call made there. Keyed by thread so that a connection's driver
    /// task runs on the runtime whose requests use it: no wake-up crosses threads.
    #[cfg(feature = "daemon")]
    aio: Mutex<Vec<(std::thread::ThreadId, ::redis::aio::MultiplexedConnection)>>,
    pub(super) backoff: Backoff,
}

impl Node {
    pub(super) fn new(addr: String, client: Client) -> Node {
        Node {
            addr,
            client,
            pool: Mutex::new(Vec::new()),
            #[cfg(feature = "daemon")]
            aio: Mutex::new(Vec::new()),
            backoff: Backoff::new(),
        }
    }

    /// Runs `f` here unless the node is backing off, and starts or ends the back-off with the
    /// outcome: the whole call of a single node.
    pub(super) fn call<T>(
        &self,
        f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, Failure> {
        if !self.backoff.is_up() {
            return Err(Failure::BackingOff);
        }
        match self.run(f) {
            Ok(v) => {
                self.backoff.succeeded();
                Ok(v)
            }
            Err(e) => {
                self.backoff.failed();
                Err(Failure::Redis(e))
            }
        }
    }

    /// Runs `f` on an idle connection (a new one when none is), back-off aside.
    pub(super) fn run<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            // A pooled connection may be dead since Redis restarted: one more try on a new one
            // (not after a timeout: Redis is slow, and a second wait would double the stall).
            Some(c) => match self.run_on(c, &mut f) {
                Err(e) if broken(&e) && !e.is_timeout() => {
                    self.connect().and_then(|c| self.run_on(c, f))
                }
                other => other,
            },
            None => self.connect().and_then(|c| self.run_on(c, f)),
        }
    }

    fn connect(&self) -> RedisResult<Connection> {
        let c = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn run_on<T>(
        &self,
        mut conn: Connection,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let r = f(&mut conn);
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            // The others most likely died with it (Redis restarted).
            Err(e) if broken(e) => pool.clear(),
            _ if pool.len() < MAX_IDLE => pool.push(conn),
            _ => {}
        }
        r
    }
}

#[cfg(feature = "daemon")]
impl Node {
    /// [`call`](Self::call) on the node's multiplexed connection, awaited: the caller's
    /// thread serves other requests meanwhile, and the calls of many requests share the
    /// connection's writes and reads.
    pub(super) async fn call_async<T>(
        &self,
        f: impl AsyncFnOnce(&mut ::redis::aio::MultiplexedConnection) -> RedisResult<T>,
    ) -> Result<T, Failure> {
        if !self.backoff.is_up() {
            return Err(Failure::BackingOff);
        }
        let r = match tokio::time::timeout(IO_TIMEOUT, self.run_async(f)).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "redis (guards): no answer in time",
            ))),
        };
        match r {
            Ok(v) => {
                self.backoff.succeeded();
                Ok(v)
            }
            Err(e) => {
                if broken(&e) {
                    let me = std::thread::current().id();
                    self.aio
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|(t, _)| *t != me);
                }
                self.backoff.failed();
                Err(Failure::Redis(e))
            }
        }
    }

    async fn run_async<T>(
        &self,
        f: impl AsyncFnOnce(&mut ::redis::aio::MultiplexedConnection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let me = std::thread::current().id();
        let held = (self.aio.lock().unwrap_or_else(|p| p.into_inner()).iter())
            .find(|(t, _)| *t == me)
            .map(|(_, c)| c.clone());
        let mut c = match held {
            Some(c) => c,
            None => {
                let config = ::redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(IO_TIMEOUT))
                    .set_response_timeout(Some(IO_TIMEOUT));
                let c = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let mut conns = self.aio.lock().unwrap_or_else(|p| p.into_inner());
                conns.retain(|(t, _)| *t != me);
                conns.push((me, c.clone()));
                c
            }
        };
        f(&mut c).await
    }
}

/// The connection cannot be used again.
fn broken(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout()
}

/// A failed call leaves Redis alone for [`BACKOFF`], doubling with each failure in a row up to
/// [`MAX_BACKOFF`].
pub(super) struct Backoff {
    origin: Instant,
    /// Ms since `origin` until which nothing is tried (0: try).
    down_until: AtomicU64,
    /// Failed calls since the last success (the back-off's exponent).
    in_a_row: AtomicU64,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff {
            origin: Instant::now(),
            down_until: AtomicU64::new(0),
            in_a_row: AtomicU64::new(0),
        }
    }

    /// Whether a call may be tried now.
    pub(super) fn is_up(&self) -> bool {
        self.elapsed_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    pub(super) fn succeeded(&self) {
        self.in_a_row.store(0, Ordering::Relaxed);
    }

    pub(super) fn failed(&self) {
        let n = self.in_a_row.fetch_add(1, Ordering::Relaxed).min(16) as u32;
        let wait = BACKOFF.saturating_mul(1 << n).min(MAX_BACKOFF);
        self.down_until.store(
            self.elapsed_ms() + wait.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }
}
