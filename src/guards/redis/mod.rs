//! The guards' third backend (cargo feature `redis`): state in Redis, shared by every host of a
//! site, so a user's slots and rate hold across daemons (`docs/redis.md`, "Shared guards").
//!
//! [`RedisGuards`] is the handle the three guards share: where the calls go (one node, or a
//! cluster's masters: `node`, `cluster`, each node with its connection pool and outage
//! back-off), the key prefix and the time source. Each guard keeps its decision in one Lua
//! script (`scripts`), run by `EVALSHA` (loaded on `NOSCRIPT`): one round trip and one atomic
//! step per decision, where the shared-memory tables use compare-and-swaps.
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
//! ## Redis Cluster
//!
//! Opened from a `redis+cluster://` or `rediss+cluster://` URL, the guards send each decision
//! to the master of its key's slot, asked of the seeds (`CLUSTER SLOTS`) on the first decision
//! and kept; `MOVED` and `ASK` are followed, and the script is loaded on the node that answers
//! `NOSCRIPT` (`cluster` says how and why not the `redis` crate's cluster client). A decision
//! still costs one round trip, to the one master it needs.
//!
//! ## Redis down
//!
//! A failed call marks its node down for [`BACKOFF`], doubling with each failure in a row up
//! to [`MAX_BACKOFF`]; meanwhile no call is tried there. The daemon awaits its calls on one
//! multiplexed connection per node and serving thread (`eval_async`), so a Redis that stops
//! answering (rather than refusing) holds only the requests waiting on it, each for at most
//! [`IO_TIMEOUT`]; on a cluster its calls are still made in line (the redirects and the slot
//! map have no awaited twin yet), stalling the thread for one call, then one probe per
//! back-off period. Rate limits and breakers then
//! decide on a host-local table of their own (a limit per host instead of per site; the store
//! breaker still opens on a store that fails, which on Redis is the same outage), and slots
//! fail closed as a full table does. On a cluster the back-off is per node: a master that is
//! down (or a slot no master serves) sends only the decisions on its own keys to the fallback.
//! A call takes no new step (a redirect, asking for the slot map) once [`IO_TIMEOUT`] has
//! passed since it started, and never sleeps.

mod cluster;
mod node;
mod scripts;

pub(crate) use scripts::{breaker, limit, slots};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::{Connection, RedisResult, Script};

use self::cluster::Cluster;
use self::node::{Failure, Node};
use crate::error::{Error, Result};
use crate::store::redis_for_guards::{Target, shared_location};

/// Connect, read and write timeout of a guard's call: a decision gives up on a Redis that
/// stopped answering after this (much shorter than the store's 2 s, since a guard has a
/// fallback and runs where a stall holds up other requests).
pub const IO_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after a failed call...
pub const BACKOFF: Duration = Duration::from_secs(1);
/// ...doubling on each failure in a row, up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(16);

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
    route: Route,
    prefix: String,
    shown: String,
    time: RedisTime,
    errors: AtomicU64,
}

/// Where the calls go.
enum Route {
    /// One node (`redis://`, `rediss://`).
    One(Node),
    /// A Redis Cluster (`redis+cluster://`, `rediss+cluster://`): the master of each key's slot.
    Cluster(Cluster),
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
    /// The guards of the store at `url`, the store's own URL: one node
    /// (`redis://host:port/db?store=NAME`, `rediss://…`) or a Redis Cluster's seeds
    /// (`redis+cluster://h1:p1,h2:p2/?store=NAME`, `rediss+cluster://…`), with the store's TLS
    /// parameters. Keys start `lmsrt-guard:NAME:`. Does not connect; the first decision does. A
    /// malformed URL or store name is [`Error::InvalidArgument`].
    pub fn open(url: &str) -> Result<RedisGuards> {
        let (target, name, shown) = shared_location(url)?;
        let bad = |e: ::redis::RedisError| Error::InvalidArgument(format!("redis URL: {e}"));
        let route = match target {
            Target::Node(client) => Route::One(Node::new(shown.clone(), client)),
            Target::Cluster { seeds, node, .. } => {
                Route::Cluster(Cluster::new(seeds, node).map_err(bad)?)
            }
        };
        Ok(RedisGuards {
            route,
            prefix: format!("lmsrt-guard:{name}:"),
            shown,
            time: RedisTime::Server,
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

    /// Whether a decision would try Redis now (false while backing off after a failure; on a
    /// cluster, while any master, or asking for the slot map, is backing off).
    pub fn is_up(&self) -> bool {
        match &self.route {
            Route::One(node) => node.backoff.is_up(),
            Route::Cluster(cluster) => cluster.is_up(),
        }
    }

    /// How many of the masters decisions go to are backing off, and how many there are: the one
    /// node, or the masters a cluster's slot map names (none before the first decision). On a
    /// cluster, [`is_up`](Self::is_up) is false while any is down; this says how much of the
    /// key space that is.
    pub fn masters_backing_off(&self) -> (usize, usize) {
        match &self.route {
            Route::One(node) => (usize::from(!node.backoff.is_up()), 1),
            Route::Cluster(cluster) => cluster.masters(),
        }
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
        let mut inv = script.prepare_invoke();
        inv.key(key);
        for a in args {
            inv.arg(*a);
        }
        self.answer(self.call(key, |c| inv.invoke(c)))
    }

    /// [`eval`](Self::eval), awaited on the node's multiplexed connection of the calling thread
    /// (the daemon's serving threads). On a cluster it is `eval`, in line: the redirects and
    /// the slot map have no awaited twin yet.
    #[cfg(feature = "daemon")]
    pub(crate) async fn eval_async(
        &self,
        script: &Script,
        key: &str,
        args: &[i64],
    ) -> Result<Vec<i64>> {
        let Route::One(node) = &self.route else {
            return self.eval(script, key, args);
        };
        let mut inv = script.prepare_invoke();
        inv.key(key);
        for a in args {
            inv.arg(*a);
        }
        self.answer(node.call_async(async |c| inv.invoke_async(c).await).await)
    }

    /// A call's outcome as the guards see it: a failure counted, and a storage error.
    fn answer(&self, r: std::result::Result<Vec<i64>, Failure>) -> Result<Vec<i64>> {
        match r {
            Ok(v) => Ok(v),
            Err(Failure::BackingOff) => Err(Error::Storage(
                "redis (guards): backing off after a failure".into(),
            )),
            Err(Failure::Redis(e)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(Error::Storage(format!("redis (guards): {e}")))
            }
        }
    }

    /// Runs `f` where `key` lives.
    fn call<T>(
        &self,
        key: &str,
        f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> std::result::Result<T, Failure> {
        match &self.route {
            Route::One(node) => node.call(f),
            Route::Cluster(cluster) => cluster.call(key, f),
        }
    }
}
