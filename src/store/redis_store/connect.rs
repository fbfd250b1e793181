//! How a Redis store reaches its server: the node that holds the store's slot and the
//! redirects that move it, the pooled connections, and `WAIT` for replicas after a write. The
//! location's forms are parsed in `url`; the reasons are in `docs/redis.md`.
//!
//! **Cluster.** Every key of a store shares one hash tag, so a store lives in one slot and talks
//! to one master: the one `CLUSTER SLOTS` names for that slot, asked of the seeds on the first
//! connection. Every command then goes to that node on a plain connection, as on a single Redis
//! (scripts, `MULTI` pipelines and `SUBSCRIBE` unchanged). That is what the crate's
//! `ClusterClient` would do for a store of one slot, without its separate connection type
//! (no `MULTI`, no synchronous pub/sub).
//!
//! A `MOVED` reply (the slot moved, or a failover) points the store at the node it names; `ASK`
//! (the slot is being migrated) runs the call on the node it names after `ASKING` (twice at
//! most); `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING` and `READONLY` wait a little and
//! retry (`READONLY`: the node was demoted, so the seeds are asked again); after [`MAX_HOPS`]
//! (about 1.5 s) the call fails with `Storage`. Each of these replies means the command did not
//! run, so retrying is safe even for an append without idempotency keys. The one exception
//! would be a non-atomic pipeline that writes (mid-migration its commands can be served or
//! redirected one by one); the engine has none: its multi-command writes are scripts or
//! `MULTI`. A node that cannot be reached sends the next connection back to the seeds.
//!
//! Mid-migration, Redis refuses a multi-key call (a script, a `MULTI`) on the importing node
//! unless that node holds every key it names (`TRYAGAIN`), and `ASKING` covers one command: so
//! while a store's slot is half moved, calls that name a key not created yet, or that are
//! non-atomic pipelines, are retried until the move is done or the retries run out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

use super::RedisStore;
use super::url::{NodeUrl, Replicas, Target};
use crate::error::{Error, Result};

/// Connect, read and write timeout of every Redis call: a Redis that stopped answering fails
/// the call with [`Error::Storage`] after this (a refused connection fails at once).
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per store.
const MAX_IDLE: usize = 16;
/// Redirects and retries one call follows before it fails with the last reply.
const MAX_HOPS: u32 = 6;
/// First pause before retrying after `TRYAGAIN` and the like (doubled each time: 1.5 s in all).
const FIRST_PAUSE: Duration = Duration::from_millis(25);
/// Where a store's commands go.
#[derive(Debug)]
pub(super) struct Endpoint {
    mode: Mode,
    /// Moves whenever the node the store is on changes: connections to an older node are not
    /// pooled again.
    generation: AtomicU64,
}

#[derive(Debug)]
enum Mode {
    Node(Client),
    Cluster(Cluster),
}

#[derive(Debug)]
struct Cluster {
    /// `host:port`.
    seeds: Vec<String>,
    node: NodeUrl,
    /// The store's slot (of its hash tag, the store name).
    slot: u16,
    /// The master believed to hold the slot (`host:port` and its client); `None` until the
    /// seeds are asked, and after `READONLY`.
    master: Mutex<Option<(String, Client)>>,
}

/// What to do after a cluster reply that says the command did not run.
#[derive(Debug)]
enum Hop {
    /// The master moved (the endpoint points at the new one): run again.
    Moved,
    /// Run once on this node after `ASKING`.
    Ask(String),
    /// Pause, then run again.
    Again,
}

impl Endpoint {
    /// The endpoint of a parsed location; nothing is connected yet.
    pub(super) fn new(target: Target) -> Endpoint {
        let mode = match target {
            Target::Node(client) => Mode::Node(client),
            Target::Cluster { seeds, node, slot } => Mode::Cluster(Cluster {
                seeds,
                node,
                slot,
                master: Mutex::new(None),
            }),
        };
        Endpoint {
            mode,
            generation: AtomicU64::new(0),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A connection to the node the store is on, and the generation it belongs to.
    pub(super) fn connect(&self) -> RedisResult<(u64, Connection)> {
        let cl = match &self.mode {
            Mode::Node(client) => return Ok((self.generation(), connect(client)?)),
            Mode::Cluster(cl) => cl,
        };
        if let Some((generation, client)) = self.master(cl) {
            match connect(&client) {
                Ok(c) => return Ok((generation, c)),
                // A node that cannot be reached may have failed over: ask the seeds.
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() => {}
                Err(e) => return Err(e),
            }
        }
        let (generation, client) = self.resolve(cl)?;
        Ok((generation, connect(&client)?))
    }

    fn master(&self, cl: &Cluster) -> Option<(u64, Client)> {
        let m = cl.master.lock().unwrap_or_else(|p| p.into_inner());
        m.as_ref().map(|(_, c)| (self.generation(), c.clone()))
    }

    /// Points the store at `addr` (`None`: ask the seeds on the next connect).
    fn set_master(&self, cl: &Cluster, addr: Option<&str>) -> RedisResult<(u64, Option<Client>)> {
        let client = addr.map(|a| cl.node.client(a)).transpose()?;
        let mut m = cl.master.lock().unwrap_or_else(|p| p.into_inner());
        *m = addr.zip(client.clone()).map(|(a, c)| (a.to_owned(), c));
        Ok((self.generation.fetch_add(1, Ordering::SeqCst) + 1, client))
    }

    /// Asks the seeds (then the last known master) which master holds the slot.
    fn resolve(&self, cl: &Cluster) -> RedisResult<(u64, Client)> {
        let known = cl
            .master
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(a, _)| a.clone());
        let mut last = None;
        for addr in cl.seeds.iter().chain(known.as_ref()) {
            match slot_master(cl, addr) {
                Ok(master) => {
                    let (generation, client) = self.set_master(cl, Some(&master))?;
                    if let Some(client) = client {
                        return Ok((generation, client));
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((ErrorKind::ClusterConnectionNotFound, "no seed answered"))
        }))
    }

    /// A connection to `addr` that has sent `ASKING`: the next command may touch the slot
    /// being imported there.
    fn asking(&self, addr: &str) -> RedisResult<Connection> {
        let Mode::Cluster(cl) = &self.mode else {
            return Err(RedisError::from((
                ErrorKind::Client,
                "ASK from a single node",
            )));
        };
        let mut c = connect(&cl.node.client(addr)?)?;
        ::redis::cmd("ASKING").exec(&mut c)?;
        Ok(c)
    }

    /// What to do after `e`, when it is a cluster reply saying the command did not run (only
    /// on a cluster location: a single node's `MOVED` is a misconfiguration, told as it is).
    fn hop(&self, e: &RedisError) -> Option<Hop> {
        let Mode::Cluster(cl) = &self.mode else {
            return None;
        };
        let (kind, detail) = cluster_reply(e)?;
        let target = || {
            detail
                .as_deref()?
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        };
        match kind {
            ServerErrorKind::Moved => {
                self.set_master(cl, Some(&target()?)).ok()?;
                Some(Hop::Moved)
            }
            ServerErrorKind::Ask => Some(Hop::Ask(target()?)),
            ServerErrorKind::ReadOnly => {
                self.set_master(cl, None).ok()?;
                Some(Hop::Again)
            }
            _ => Some(Hop::Again),
        }
    }
}

/// The kind and detail of a cluster reply that means "not run here, not now" in `e`, or in the
/// replies inside a failed pipeline or `MULTI` (`EXECABORT` after a queued command was
/// redirected).
///
/// An `EXEC` answered with an error instead of the replies (the `TRYAGAIN` of a transaction
/// whose keys are half migrated) reaches us as the crate's "Invalid response when parsing
/// multi response", the server's reply dropped: it is taken as `TRYAGAIN`, which is safe, as
/// nothing of a transaction runs when `EXEC` fails.
pub(crate) fn cluster_reply(e: &RedisError) -> Option<(ServerErrorKind, Option<String>)> {
    if e.kind() == ErrorKind::UnexpectedReturnType && e.to_string().contains("multi response") {
        return Some((ServerErrorKind::TryAgain, None));
    }
    let retryable = |k: ServerErrorKind| {
        matches!(
            k,
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly
        )
    };
    e.clone().into_server_errors()?.iter().find_map(|(_, s)| {
        let k = s.kind()?;
        retryable(k).then(|| (k, s.details().map(str::to_owned)))
    })
}

/// The master of the cluster's slot as `addr` sees it (`CLUSTER SLOTS`).
fn slot_master(cl: &Cluster, addr: &str) -> RedisResult<String> {
    let mut c = connect(&cl.node.client(addr)?)?;
    slot_ranges(&mut c, addr)?
        .into_iter()
        .find(|(start, end, _)| (*start..=*end).contains(&cl.slot))
        .map(|(_, _, master)| master)
        .ok_or_else(|| {
            RedisError::from((
                ErrorKind::ClusterConnectionNotFound,
                "no master serves the store's slot",
                format!("slot {} (asked {addr})", cl.slot),
            ))
        })
}

/// The slot ranges of a cluster and each one's master (`host:port`), as the node `asked` (on
/// connection `c`) sees them: `CLUSTER SLOTS`.
pub(crate) fn slot_ranges(c: &mut Connection, asked: &str) -> RedisResult<Vec<(u16, u16, String)>> {
    let ranges: Vec<Value> = ::redis::cmd("CLUSTER").arg("SLOTS").query(c)?;
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let slot = |v: Option<&Value>| v.and_then(int).and_then(|i| u16::try_from(i).ok());
    let mut out = Vec::with_capacity(ranges.len());
    for range in &ranges {
        let Value::Array(r) = range else { continue };
        let (Some(start), Some(end)) = (slot(r.first()), slot(r.get(1))) else {
            continue;
        };
        if let Some(Value::Array(node)) = r.get(2)
            && let (Some(Value::BulkString(host)), Some(port)) =
                (node.first(), node.get(1).and_then(int))
        {
            let host = String::from_utf8_lossy(host);
            // "" or "?": the node does not know its own address; it is the one asked.
            let host = if host.is_empty() || host == "?" {
                asked.rsplit_once(':').map_or(asked, |(h, _)| h).to_owned()
            } else {
                host.into_owned()
            };
            out.push((start, end, format!("{host}:{port}")));
        }
    }
    Ok(out)
}

fn connect(client: &Client) -> RedisResult<Connection> {
    let c = client.get_connection_with_timeout(IO_TIMEOUT)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(c)
}

/// Every Redis failure is a storage fault: the daemon answers 503 and the client retries.
fn storage(e: ::redis::RedisError) -> Error {
    Error::Storage(format!("redis: {e}"))
}

/// A connection and the [`Endpoint`] generation it was made in.
pub(super) type Pooled = (u64, Connection);

impl RedisStore {
    /// Runs `f` on a pooled connection (a new one when none is idle). A connection that failed
    /// is dropped, with every idle one: they are most likely all dead (Redis restarted), and
    /// the next call connects anew, so a Redis that comes back is used without reopening.
    /// Cluster redirects are followed (see the module's docs). When a pooled connection turns
    /// out dead (the first call after Redis restarted), `f` runs again once on a new
    /// connection: for calls that may run twice (reads, and writes whose repetition changes
    /// nothing; see [`with_conn_replicated`](Self::with_conn_replicated) for the others).
    pub(super) fn with_conn<T>(
        &self,
        f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        self.call(true, f)
    }

    /// A write acknowledged to the caller: `f`, as [`with_conn`](Self::with_conn) does when
    /// `may_repeat`; otherwise a pooled connection that fails fails the call (an append without
    /// idempotency keys may have run before Redis died). Then, when the location
    /// asks for replicas, `WAIT` for them on the same connection. Fewer replicas than asked
    /// within the timeout is [`Error::Storage`]: the write is on the master and may or may not
    /// survive a failover.
    pub(super) fn with_conn_replicated<T>(
        &self,
        may_repeat: bool,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let Some(want) = self.replicas else {
            return self.call(may_repeat, f);
        };
        let seq = self.keys.seq();
        let (value, acked) = self.call(may_repeat, |c| {
            let value = f(c)?;
            Ok((value, replicas_acked(c, &seq, want)?))
        })?;
        if acked < i64::from(want.count) {
            self.stats.error();
            return Err(Error::Storage(format!(
                "redis: the write is on the master but only {acked} of {} replicas acknowledged \
                 it within {} ms (WAIT): it may or may not survive a failover; retry with the \
                 same idempotency keys",
                want.count,
                want.timeout.as_millis()
            )));
        }
        Ok(value)
    }

    fn call<T>(
        &self,
        retry_dead: bool,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut hops = 0;
        let mut pause = FIRST_PAUSE;
        let mut ask: Option<String> = None;
        let mut asked = 0;
        loop {
            let r = match ask.take() {
                Some(addr) => self
                    .endpoint
                    .asking(&addr)
                    .and_then(|mut c| self.timed(|| f(&mut c))),
                None => self.attempt(retry_dead, &mut f),
            };
            let e = match r {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match self.endpoint.hop(&e) {
                Some(hop) if hops < MAX_HOPS => {
                    hops += 1;
                    match hop {
                        Hop::Moved => {}
                        // Followed twice (the first may only load a script there: the
                        // crate's EVALSHA after NOSCRIPT goes without ASKING); a call that
                        // still fails there (a non-atomic pipeline: ASKING covers its first
                        // command only) waits for the migration to end instead.
                        Hop::Ask(addr) if asked < 2 => {
                            asked += 1;
                            ask = Some(addr);
                        }
                        Hop::Ask(_) | Hop::Again => {
                            std::thread::sleep(pause);
                            pause *= 2;
                        }
                    }
                }
                _ => return Err(self.failed(e)),
            }
        }
    }

    /// One try of [`call`](Self::call), on the node the endpoint points at.
    fn attempt<T>(
        &self,
        retry_dead: bool,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let Some(conn) = self.pooled() else {
            return self.run_on(self.endpoint.connect()?, f).map_err(|(e, _)| e);
        };
        match self.run_on(conn, &mut f) {
            // Not counted: the retry on a new connection is what the caller gets.
            Err((_, true)) if retry_dead => {
                self.run_on(self.endpoint.connect()?, f).map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// An idle connection to the node the store is on now.
    fn pooled(&self) -> Option<Pooled> {
        let now = self.endpoint.generation();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.retain(|(g, _)| *g == now);
        pool.pop()
    }

    /// A call's final failure: counted, and told as [`Error::Storage`].
    fn failed(&self, e: ::redis::RedisError) -> Error {
        self.stats.error();
        storage(e)
    }

    /// Runs `f`, counting its round trip when it succeeds.
    fn timed<T>(&self, f: impl FnOnce() -> RedisResult<T>) -> RedisResult<T> {
        let started = Instant::now();
        let r = f();
        if r.is_ok() {
            self.stats.round_trip(started.elapsed());
        }
        r
    }

    /// Runs `f` on `conn` and pools `conn` again unless it failed or the store moved to
    /// another node meanwhile; the error says whether the connection is broken.
    fn run_on<T>(
        &self,
        (generation, mut conn): Pooled,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> std::result::Result<T, (::redis::RedisError, bool)> {
        let r = self.timed(|| f(&mut conn));
        let broken = match &r {
            Ok(_) => false,
            Err(e) => e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout(),
        };
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if broken {
            pool.clear();
        } else if pool.len() < MAX_IDLE
            && !self.is_closed()
            && generation == self.endpoint.generation()
        {
            pool.push((generation, conn));
        }
        r.map_err(|e| (e, broken))
    }
}

/// `WAIT` for `want` replicas after the writes made on `c`, and how many acknowledged.
///
/// `WAIT` waits for the offset of this connection's last propagated write. An append whose
/// events were all found by their idempotency keys writes nothing, and a retry after a failed
/// `WAIT` is exactly that: so first `INCRBY seq 0`, a write that changes nothing but is
/// propagated, and moves the connection's offset to the master's now (past the first attempt's
/// write, whichever connection made it). A redirect or failure of this part is not retried as
/// if nothing ran: the write before it did.
fn replicas_acked(c: &mut Connection, seq: &str, want: Replicas) -> RedisResult<i64> {
    c.set_read_timeout(Some(IO_TIMEOUT + want.timeout))?;
    let r = ::redis::pipe()
        .cmd("INCRBY")
        .arg(seq)
        .arg(0)
        .ignore()
        .cmd("WAIT")
        .arg(want.count)
        .arg(want.timeout.as_millis() as u64)
        .query::<(i64,)>(c)
        .map(|(n,)| n);
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    r.map_err(|e| match cluster_reply(&e) {
        Some(_) => RedisError::from((
            ErrorKind::Client,
            "the write ran, then WAIT was redirected",
            e.to_string(),
        )),
        None => e,
    })
}
