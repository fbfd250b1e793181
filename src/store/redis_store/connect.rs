//! How a Redis store reaches its server: the location's URL forms (one node, a Redis Cluster's
//! seed list, TLS), the node that holds the store's slot and the redirects that move it, the
//! pooled connections, and `WAIT` for replicas after a write. The URL forms are documented on
//! [`StoreLocation`](crate::store::StoreLocation), the reasons in `docs/redis.md`.
//!
//! **Cluster.** Every key of a store shares one hash tag, so a store lives in one slot and talks
//! to one master: the one `CLUSTER SLOTS` names for that slot, asked of the seeds when the store
//! opens. Every command then goes to that node on a plain connection, as on a single Redis
//! (scripts, `MULTI` pipelines and `SUBSCRIBE` unchanged). A `MOVED` reply (the slot moved, or a
//! failover) points the store at the node it names; `ASK` (the slot is being migrated) runs the
//! one call on the node it names after `ASKING` (twice at most); `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
//! `LOADING` and `READONLY` wait a little and retry (`READONLY`: the node was demoted, so the
//! seeds are asked again), up to [`MAX_HOPS`] times (about 1.5 s), then fail with `Storage`.
//! Each of these replies means the command did not run, so retrying it is safe even for an
//! append without idempotency keys; the one exception would be a non-atomic pipeline that
//! writes (mid-migration its commands can be served or redirected one by one), and the engine
//! has none: its multi-command writes are scripts or `MULTI`. A node that cannot be reached
//! sends the next connection back to the seeds.
//!
//! Mid-migration Redis itself refuses a multi-key call (a script, a `MULTI`) on the importing
//! node unless that node holds every key it names (`TRYAGAIN`), and `ASKING` covers one command:
//! so while a store's slot is half moved, calls that name a key not yet created, or that are
//! non-atomic pipelines, are retried until the move is done or the retries run out. That is all the crate's `ClusterClient` would do for a
//! store of one slot, without its separate connection type (which has no `MULTI` and no
//! synchronous pub/sub).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::{
    Client, ClientTlsConfig, Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind,
    TlsCertificates, Value,
};

use super::RedisStore;
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
/// `wait_timeout_ms` when only `wait_replicas` is given.
const DEFAULT_WAIT: Duration = Duration::from_millis(1000);
/// Longest `wait_timeout_ms` accepted: an append blocks for up to this (0, Redis's "forever",
/// is refused, so nothing hangs).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Store name when the URL gives none.
const DEFAULT_NAME: &str = "lmsrt";

/// `WAIT` after every acknowledged write: how many replicas, for how long at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replicas {
    pub(super) count: u32,
    pub(super) timeout: Duration,
}

/// A Redis location taken apart.
#[derive(Debug)]
pub(super) struct Location {
    /// `?store=`, not yet checked (`Keys::new` does).
    pub(super) name: String,
    /// The URL without its password, for messages and `EventStore::path`.
    pub(super) shown: String,
    pub(super) replicas: Option<Replicas>,
    pub(super) endpoint: Endpoint,
}

/// Parses `url` (see [`StoreLocation`](crate::store::StoreLocation)); nothing is connected yet.
/// A malformed URL or parameter, or a certificate file that cannot be read or parsed, is
/// [`Error::InvalidArgument`].
pub(super) fn parse(url: &str) -> Result<Location> {
    let bad = |m: String| Error::InvalidArgument(format!("redis URL: {m}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("no scheme".into()))?;
    let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        other => return Err(bad(format!("unknown scheme {other:?}"))),
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let params = Params::parse(query).map_err(bad)?;
    if !tls && params.has_tls_files() {
        return Err(bad(
            "tls_ca, tls_cert and tls_key need rediss:// (or rediss+cluster://)".into(),
        ));
    }
    let certs = params.certificates().map_err(bad)?;
    let (authority, path) = before_query
        .split_once('/')
        .map_or((before_query, ""), |(a, p)| (a, p));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let node = NodeUrl {
        scheme: if tls { "rediss" } else { "redis" },
        userinfo: userinfo.to_owned(),
        query: params.rest.join("&"),
        certs,
    };
    let mode = if cluster {
        if !path.is_empty() && path != "0" {
            return Err(bad(format!(
                "a Redis Cluster has only database 0, not /{path}"
            )));
        }
        let seeds = hosts
            .split(',')
            .map(|h| seed(h).map_err(bad))
            .collect::<Result<Vec<_>>>()?;
        Mode::Cluster(Cluster {
            seeds,
            node,
            slot: hash_slot(params.name.as_bytes()),
            master: Mutex::new(None),
        })
    } else {
        if hosts.contains(',') {
            return Err(bad(
                "several hosts are a Redis Cluster's seeds: write redis+cluster://h1:p1,h2:p2"
                    .into(),
            ));
        }
        let mut plain = format!("{scheme}://{before_query}");
        if !node.query.is_empty() {
            plain = format!("{plain}?{}", node.query);
        }
        Mode::Node(node.client_for(&plain).map_err(|e| bad(e.to_string()))?)
    };
    Ok(Location {
        name: params.name,
        shown: without_password(url),
        replicas: params.replicas,
        endpoint: Endpoint {
            mode,
            generation: AtomicU64::new(0),
        },
    })
}

/// This library's query parameters; the rest is the `redis` crate's.
#[derive(Debug, Default)]
struct Params {
    name: String,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    replicas: Option<Replicas>,
    rest: Vec<String>,
}

impl Params {
    fn parse(query: &str) -> std::result::Result<Params, String> {
        let mut p = Params {
            name: DEFAULT_NAME.to_owned(),
            ..Params::default()
        };
        let mut count = None;
        let mut timeout = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "store" => p.name = v.to_owned(),
                "tls_ca" => p.ca = Some(percent_decoded(v)?),
                "tls_cert" => p.cert = Some(percent_decoded(v)?),
                "tls_key" => p.key = Some(percent_decoded(v)?),
                "wait_replicas" => count = Some(number(k, v, 1, 1_000)?),
                "wait_timeout_ms" => {
                    timeout = Some(number(k, v, 1, MAX_WAIT.as_millis() as u64)?);
                }
                _ => p.rest.push(pair.to_owned()),
            }
        }
        p.replicas = match (count, timeout) {
            (Some(n), t) => Some(Replicas {
                count: n as u32,
                timeout: t.map_or(DEFAULT_WAIT, Duration::from_millis),
            }),
            (None, Some(_)) => return Err("wait_timeout_ms needs wait_replicas".into()),
            (None, None) => None,
        };
        Ok(p)
    }

    fn has_tls_files(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The CA and client certificate files, read now: a missing file fails the open, not the
    /// first call.
    fn certificates(&self) -> std::result::Result<Option<TlsCertificates>, String> {
        if !self.has_tls_files() {
            return Ok(None);
        }
        let read = |what: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read {what} {path:?}: {e}"))
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some(ClientTlsConfig {
                client_cert: read("tls_cert", c)?,
                client_key: read("tls_key", k)?,
            }),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together".into()),
        };
        let root_cert = self
            .ca
            .as_deref()
            .map(|ca| read("tls_ca", ca))
            .transpose()?;
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

fn number(key: &str, v: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{key} must be {min} to {max}, not {v:?}"))
}

/// `%XX` escapes decoded (a path with `&`, `%` or spaces in a URL parameter).
fn percent_decoded(s: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// `host:port`, `[v6]:port` or `host` (port 6379), as `host:port`.
fn seed(h: &str) -> std::result::Result<String, String> {
    let (host, port) = match h.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad seed {h:?}"))?;
            (host, after.strip_prefix(':'))
        }
        None => match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        },
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in seed {h:?}"))?,
        None => 6379,
    };
    if host.is_empty() {
        return Err(format!("empty host in the seed list ({h:?})"));
    }
    Ok(format!("{host}:{port}"))
}

/// The URL with any `user:password@` taken out, for messages and `EventStore::path`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The Redis Cluster hash slot of a key: CRC16 (XMODEM) of its hash tag (the text between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub(super) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let inner = &key[open + 1..];
        let close = inner.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &inner[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// How to reach any node of the deployment: scheme, credentials, the crate's parameters and
/// the TLS certificates.
#[derive(Debug)]
struct NodeUrl {
    scheme: &'static str,
    userinfo: String,
    query: String,
    certs: Option<TlsCertificates>,
}

impl NodeUrl {
    /// A client for `addr` (`host:port`, as `CLUSTER SLOTS` and `MOVED` give it).
    fn client(&self, addr: &str) -> RedisResult<Client> {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let mut url = format!("{}://{}{host}:{port}/0", self.scheme, self.userinfo);
        if !self.query.is_empty() {
            url = format!("{url}?{}", self.query);
        }
        self.client_for(&url)
    }

    fn client_for(&self, url: &str) -> RedisResult<Client> {
        match &self.certs {
            Some(c) => Client::build_with_tls(url, c.clone()),
            None => Client::open(url),
        }
    }
}

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
    /// One node (`redis://`, `rediss://`).
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
fn cluster_reply(e: &RedisError) -> Option<(ServerErrorKind, Option<String>)> {
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
    let ranges: Vec<Value> = ::redis::cmd("CLUSTER").arg("SLOTS").query(&mut c)?;
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    for range in &ranges {
        let Value::Array(r) = range else { continue };
        let (Some(start), Some(end)) = (r.first().and_then(int), r.get(1).and_then(int)) else {
            continue;
        };
        if !(start..=end).contains(&i64::from(cl.slot)) {
            continue;
        }
        if let Some(Value::Array(node)) = r.get(2)
            && let (Some(Value::BulkString(host)), Some(port)) =
                (node.first(), node.get(1).and_then(int))
        {
            let host = String::from_utf8_lossy(host);
            // "" or "?": the node does not know its own address; it is the one asked.
            let host = if host.is_empty() || host == "?" {
                addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_owned()
            } else {
                host.into_owned()
            };
            return Ok(format!("{host}:{port}"));
        }
    }
    Err(RedisError::from((
        ErrorKind::ClusterConnectionNotFound,
        "no master serves the store's slot",
        format!("slot {} (asked {addr})", cl.slot),
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_name_password_and_our_parameters_are_taken_out_of_the_url() {
        let l = parse("redis://u:secret@h:1/0?store=site-2&protocol=resp3").unwrap();
        assert_eq!(l.name, "site-2");
        assert_eq!(l.shown, "redis://h:1/0?store=site-2&protocol=resp3");
        assert!(l.replicas.is_none());
        let l = parse("redis://h:1?wait_replicas=2&wait_timeout_ms=250").unwrap();
        assert_eq!(l.name, "lmsrt");
        assert_eq!(
            l.replicas,
            Some(Replicas {
                count: 2,
                timeout: Duration::from_millis(250)
            })
        );
        let l = parse("redis://h:1?wait_replicas=1").unwrap();
        assert_eq!(l.replicas.unwrap().timeout, DEFAULT_WAIT);
        assert_eq!(without_password("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for url in [
            "redis://h:1?wait_timeout_ms=10",
            "redis://h:1?wait_replicas=0",
            "redis://h:1?wait_replicas=1&wait_timeout_ms=0",
            "redis://h:1?wait_replicas=1&wait_timeout_ms=60001",
            "redis://h:1?tls_ca=/etc/ca.pem",
            "rediss://h:1?tls_cert=/a.pem",
            "rediss://h:1?tls_ca=/nonexistent/ca.pem",
            "redis://h1:1,h2:2",
            "redis+cluster://h1:1,h2:x",
            "redis+cluster://h1:1/3",
            "redis+cluster://h1:1,,h2:2",
            "rediss://h:1?tls_ca=%zz",
            "memcached://h:1",
        ] {
            let e = parse(url).expect_err(url);
            assert!(matches!(e, Error::InvalidArgument(_)), "{url}: {e:?}");
        }
    }

    #[test]
    fn cluster_seeds_are_parsed_with_default_ports_and_v6() {
        let l = parse("redis+cluster://u:p@h1:7000,[::1]:7001,h3/?store=x&protocol=resp2").unwrap();
        let Mode::Cluster(cl) = &l.endpoint.mode else {
            panic!("not a cluster")
        };
        assert_eq!(cl.seeds, ["h1:7000", "::1:7001", "h3:6379"]);
        assert_eq!(cl.node.userinfo, "u:p@");
        assert_eq!(cl.node.query, "protocol=resp2");
        assert_eq!(cl.slot, hash_slot(b"lmsrt:{x}:meta"));
        assert_eq!(
            l.shown,
            "redis+cluster://h1:7000,[::1]:7001,h3/?store=x&protocol=resp2"
        );
        assert_eq!(percent_decoded("/a%20b%26c").unwrap(), "/a b&c");
    }

    #[test]
    fn hash_slots_are_redis_clusters() {
        // Values from `CLUSTER KEYSLOT` (Redis 7.0).
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"123456789"), 12739);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
        assert_ne!(hash_slot(b"foo{}{bar}"), hash_slot(b"bar"));
        assert_eq!(hash_slot(b"lmsrt:{t1}:ev"), hash_slot(b"t1"));
    }
}
