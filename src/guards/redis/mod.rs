//! The guards' third backend (cargo feature `redis`): state in Redis, shared by every host of a
//! site, so a user's slots and rate hold across daemons (`docs/redis.md`, "Shared guards").
//!
//! [`RedisGuards`] is the handle the three guards share: the connection pool, the key prefix,
//! the time source and the outage back-off. Each guard keeps its decision in one Lua script
//! (`scripts`), run by `EVALSHA` (loaded on `NOSCRIPT`): one round trip and one atomic step per
//! decision, where the shared-memory tables use compare-and-swaps.
//!
//! ## Keys
//!
//! `lmsrt-guard:<store name>:<rl|sl|br>:<tag, 16 hex digits>`, where the tag is the key's
//! stable hash as the shared-memory tables use it (so a [`Lease`](super::Lease) names its key
//! by its `key_hash` alone). No hash tag: every decision touches exactly one key, so in a
//! Redis Cluster each key may live in its own slot, and the guards' load spreads over the
//! shards instead of landing on the store's slot. A user's leases are one sorted set because
//! the "at most N" decision must see all of them in one atomic step.
//!
//! ## Time
//!
//! By default the scripts read Redis's own clock (`TIME`; Redis 7 replicates a script's
//! effects, so this is deterministic for replicas). Hosts' clocks drift apart: with each host's
//! time, a host 2 s behind would see leases live 2 s longer and a host ahead would refill a
//! rate early, so the "3 slots across hosts" would really be "3, give or take the skew".
//! [`RedisTime::Caller`] sends the guard's configured clock instead; tests use it to run the
//! same scenario on every backend with a manual clock.
//!
//! ## Redis down
//!
//! A failed call marks Redis down for [`BACKOFF`], doubling with each failure in a row up to
//! [`MAX_BACKOFF`]; meanwhile no call is tried. The daemon decides on its serving threads, so a
//! Redis that stops answering (rather than refusing) may stall one call for [`IO_TIMEOUT`], and
//! then only one probe per back-off period. Rate limits and breakers then decide on a host-local table of
//! their own (a limit per host instead of per site; the store breaker still opens on a store
//! that fails, which on Redis is the same outage), and slots fail closed as a full table does.

mod scripts;

pub(crate) use scripts::{breaker, limit, slots};

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, RedisError, Script};

use crate::error::{Error, Result};

/// Connect, read and write timeout of a guard's call: a decision gives up on a Redis that
/// stopped answering after this (much shorter than the store's 2 s, since a guard has a
/// fallback and runs where a stall holds up other requests).
pub const IO_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after a failed call...
pub const BACKOFF: Duration = Duration::from_secs(1);
/// ...doubling on each failure in a row, up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(16);
/// Idle connections kept.
const MAX_IDLE: usize = 16;

/// Where a guard's script takes the time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisTime {
    /// Redis's clock (`TIME`): one clock for every host. The default.
    #[default]
    Server,
    /// The guard's configured clock, sent with each call (tests, single-host set-ups).
    Caller,
}

/// A connection to the Redis the guards share, and how they name their keys there.
///
/// `Send + Sync`; share it (in an `Arc`) between a [`RateLimiter`](super::RateLimiter), a
/// [`Slots`](super::Slots) and a [`Breakers`](super::Breakers).
pub struct RedisGuards {
    client: Client,
    prefix: String,
    shown: String,
    time: RedisTime,
    pool: Mutex<Vec<Connection>>,
    origin: Instant,
    /// Ms since `origin` until which Redis is not tried (0: try).
    down_until: AtomicU64,
    /// Failed calls since the last success (the back-off's exponent).
    in_a_row: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for RedisGuards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGuards")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl RedisGuards {
    /// The guards of the store at `url` (`redis://host:port/db?store=NAME`, the store's own
    /// URL): keys start `lmsrt-guard:NAME:`. Does not connect; the first decision does.
    pub fn open(url: &str) -> Result<RedisGuards> {
        let (client, name, shown) = crate::store::redis_single_node(url)?;
        Ok(RedisGuards {
            client,
            prefix: format!("lmsrt-guard:{name}:"),
            shown,
            time: RedisTime::Server,
            pool: Mutex::new(Vec::new()),
            origin: Instant::now(),
            down_until: AtomicU64::new(0),
            in_a_row: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Sets the time source (default [`RedisTime::Server`]).
    pub fn time(mut self, time: RedisTime) -> RedisGuards {
        self.time = time;
        self
    }

    /// Calls that failed (Redis unreachable, timed out, or answered an error), since opened.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether a decision would try Redis now (false while backing off after a failure).
    pub fn is_up(&self) -> bool {
        self.elapsed_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    /// A guard key: `kind` is `rl`, `sl` or `br`.
    pub(crate) fn key(&self, kind: &str, tag: u64) -> String {
        format!("{}{kind}:{tag:016x}", self.prefix)
    }

    /// The `now` argument every script takes first: the caller's ms, or -1 for Redis's `TIME`.
    pub(crate) fn now_arg(&self, clock: &dyn crate::clock::Clock) -> i64 {
        match self.time {
            RedisTime::Server => -1,
            RedisTime::Caller => clock.now_ms().max(0),
        }
    }

    /// Runs `script` on `key` with `args`; its reply is a list of integers. Fails at once with
    /// [`Error::Storage`] while backing off.
    pub(crate) fn eval(&self, script: &Script, key: &str, args: &[i64]) -> Result<Vec<i64>> {
        if !self.is_up() {
            return Err(Error::Storage(
                "redis (guards): backing off after a failure".into(),
            ));
        }
        let mut inv = script.prepare_invoke();
        inv.key(key);
        for a in args {
            inv.arg(*a);
        }
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let r = match pooled {
            // A pooled connection may be dead since Redis restarted: one more try on a new one
            // (not after a timeout: Redis is slow, and a second wait would double the stall).
            Some(c) => match self.run_on(c, |c| inv.invoke(c)) {
                Err(e) if broken(&e) && !e.is_timeout() => self
                    .connect()
                    .and_then(|c| self.run_on(c, |c| inv.invoke(c))),
                other => other,
            },
            None => self
                .connect()
                .and_then(|c| self.run_on(c, |c| inv.invoke(c))),
        };
        match r {
            Ok(v) => {
                self.in_a_row.store(0, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let n = self.in_a_row.fetch_add(1, Ordering::Relaxed).min(16) as u32;
                let wait = BACKOFF.saturating_mul(1 << n).min(MAX_BACKOFF);
                self.down_until.store(
                    self.elapsed_ms() + wait.as_millis() as u64,
                    Ordering::Relaxed,
                );
                Err(Error::Storage(format!("redis (guards): {e}")))
            }
        }
    }

    fn connect(&self) -> std::result::Result<Connection, RedisError> {
        let c = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn run_on<T>(
        &self,
        mut conn: Connection,
        f: impl FnOnce(&mut Connection) -> std::result::Result<T, RedisError>,
    ) -> std::result::Result<T, RedisError> {
        let r = f(&mut conn);
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Err(e) if broken(e) => pool.clear(),
            _ if pool.len() < MAX_IDLE => pool.push(conn),
            _ => {}
        }
        r
    }

    fn elapsed_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }
}

/// The connection cannot be used again.
fn broken(e: &RedisError) -> bool {
    e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout()
}
