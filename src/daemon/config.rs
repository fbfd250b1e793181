//! The daemon's configuration: every setting is a flag and an environment variable
//! (`--listen` / `LMSRT_LISTEN`, …), with defaults that work on a fresh machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::error::{Error, Result};
use crate::store::{EventStore, StoreLocation};
use crate::token::TokenKey;

/// `lms-longpolld`: holds thousands of waiting browsers so that PHP workers never wait.
///
/// Serves `GET /v1/poll` (long-poll), `GET /v1/stream` (server-sent events), `POST /v1/events` (signed publishing), `GET /healthz` and
/// `GET /metrics` over one event store shared with PHP (a SQLite file, or Redis shared by several
/// hosts). Every flag can also be set by the
/// environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(name = "lms-longpolld", version, about, long_about)]
pub struct Config {
    /// Address to listen on. Keep it on loopback behind a reverse proxy; 0.0.0.0 only with care.
    #[arg(long, env = "LMSRT_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// The event store, shared with PHP: a SQLite file (created if missing), or a Redis URL
    /// (`redis://host:port/db?store=NAME`, `rediss://` for TLS, `redis+cluster://h1:p1,h2:p2/`
    /// for a Redis Cluster; with a build that has the `redis` feature) shared by every host's
    /// daemons and PHP.
    #[arg(long, env = "LMSRT_DB", default_value = "lms-realtime.db")]
    pub db: PathBuf,

    /// Where this host's shared files go when the store is not a file (Redis): the metrics
    /// file the host's daemons and PHP workers share (named after the store's URL). Default:
    /// the system temp dir. With a SQLite store they sit beside the database file instead.
    #[arg(long, env = "LMSRT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// What an acknowledged append survives: `process-crash` (WAL, no fsync per commit) or
    /// `power-loss` (an fsync per commit).
    #[arg(long, env = "LMSRT_DURABILITY", value_enum, default_value_t = DurabilityArg::ProcessCrash)]
    pub durability: DurabilityArg,

    /// Signing key for tokens and publisher signatures, as `<key id>:<secret>` (the secret at
    /// least 32 bytes). New tokens should be issued with this key. Required unless --demo.
    #[arg(long, env = "LMSRT_TOKEN_KEY", hide_env_values = true)]
    pub token_key: Option<String>,

    /// The previous key during a rotation (`<key id>:<secret>`): tokens and signatures made with
    /// it are still accepted until it is removed.
    #[arg(long, env = "LMSRT_TOKEN_KEY_PREVIOUS", hide_env_values = true)]
    pub token_key_previous: Option<String>,

    /// Longest a poll waits, in seconds (the plan's long-poll timeout). Also the wait of a poll
    /// that does not say.
    #[arg(long, env = "LMSRT_POLL_TIMEOUT", default_value_t = 30)]
    pub poll_timeout: u64,

    /// Seconds between heartbeats on a quiet `GET /v1/stream` (a `: hb` comment with the
    /// stream's position): often enough that proxies and browsers keep the stream open.
    #[arg(long, env = "LMSRT_STREAM_HEARTBEAT", default_value_t = 15)]
    pub stream_heartbeat: u64,

    /// Events per poll response when the poll does not say (`limit=`).
    #[arg(long, env = "LMSRT_BATCH", default_value_t = 50)]
    pub batch: usize,

    /// Most events per poll response; a larger `limit=` is capped to it.
    #[arg(long, env = "LMSRT_MAX_BATCH", default_value_t = 200)]
    pub max_batch: usize,

    /// Most channels one poll may name.
    #[arg(long, env = "LMSRT_MAX_CHANNELS", default_value_t = 50)]
    pub max_channels: usize,

    /// Concurrent long-polls per user (connection slots); the next one gets 429.
    #[arg(long, env = "LMSRT_SLOTS_PER_USER", default_value_t = 3)]
    pub slots_per_user: u32,

    /// Most open client connections; further ones get 503. Also capped by the open-file limit.
    #[arg(long, env = "LMSRT_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,

    /// Most open connections from one client address; the next is answered 429 and closed at
    /// once. Behind --trust-proxy (where every connection comes from the proxy) it counts the
    /// requests in flight per forwarded address instead, a waiting long-poll included.
    /// /healthz and /metrics are not counted.
    #[arg(long, env = "LMSRT_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: u32,

    /// Connections accepted beyond --max-connections that may only ask for /healthz or
    /// /metrics (one request each, 2 s to send it), so that health checks and scrapes are
    /// answered while the daemon is full; anything else on them gets 503.
    #[arg(long, env = "LMSRT_OPS_RESERVE_CONNECTIONS", default_value_t = 32)]
    pub ops_reserve_connections: usize,

    /// Largest request body (POST /v1/events), in bytes.
    #[arg(long, env = "LMSRT_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Largest request head (request line and headers), in bytes; larger gets 431.
    #[arg(long, env = "LMSRT_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Seconds a client has to send a request's headers; also how long an idle kept-alive
    /// connection stays open waiting for the next request.
    #[arg(long, env = "LMSRT_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,

    /// Seconds a request body may take to arrive, and a response may stay stuck unread by the
    /// client, before the connection is closed (slow clients).
    #[arg(long, env = "LMSRT_IDLE_TIMEOUT", default_value_t = 30)]
    pub idle_timeout: u64,

    /// Polls per minute per user (sustained rate of the in-memory limiter).
    #[arg(long, env = "LMSRT_POLL_RATE", default_value_t = 180)]
    pub poll_rate: u32,

    /// Polls a rested user may make at once.
    #[arg(long, env = "LMSRT_POLL_BURST", default_value_t = 30)]
    pub poll_burst: u32,

    /// Requests per minute per client IP, whatever the user; repeat offenders are blocked (the
    /// DDoS guard: 1 minute, doubling up to an hour).
    #[arg(long, env = "LMSRT_IP_RATE", default_value_t = 600)]
    pub ip_rate: u32,

    /// Requests a rested IP may make at once.
    #[arg(long, env = "LMSRT_IP_BURST", default_value_t = 100)]
    pub ip_burst: u32,

    /// Take the client IP from `X-Real-IP` / the last `X-Forwarded-For` entry (only behind a
    /// reverse proxy that sets them).
    #[arg(long, env = "LMSRT_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// Origins allowed to poll cross-origin (CORS), comma-separated, e.g.
    /// `https://chat.example.org`; `*` allows any. Empty: same-origin only.
    #[arg(long, env = "LMSRT_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Compress responses of at least this many bytes with gzip when the client accepts it
    /// (0: never).
    #[arg(long, env = "LMSRT_GZIP_MIN_BYTES", default_value_t = 1024)]
    pub gzip_min_bytes: usize,

    /// Recent events kept in memory for the fan-out; a client further behind reads the store.
    #[arg(long, env = "LMSRT_RING_EVENTS", default_value_t = 16_384)]
    pub ring_events: usize,

    /// Store reads running at once (each on a blocking thread with its own SQLite connection).
    #[arg(long, env = "LMSRT_STORE_READERS", default_value_t = 8)]
    pub store_readers: usize,

    /// Store appends running at once (concurrent appends share commits).
    #[arg(long, env = "LMSRT_STORE_WRITERS", default_value_t = 32)]
    pub store_writers: usize,

    /// Seconds between purges of expired events (0: never; PHP may purge instead).
    #[arg(long, env = "LMSRT_PURGE_INTERVAL", default_value_t = 60)]
    pub purge_interval: u64,

    /// Consecutive store failures that open the store's circuit breaker.
    #[arg(long, env = "LMSRT_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// First open period of the store's breaker, in ms (doubles on each re-open, up to 2 min).
    #[arg(long, env = "LMSRT_BREAKER_OPEN_MS", default_value_t = 5_000)]
    pub breaker_open_ms: u64,

    /// Where the guards (poll rate limits, connection slots, the store breaker) keep their
    /// state: `local` to this daemon, or `redis`, shared by every daemon on the same Redis
    /// store (needs --db to be a Redis URL: one node or a Redis Cluster), so a user's slots and
    /// rate hold across hosts.
    #[arg(long, env = "LMSRT_GUARDS", value_enum, default_value_t = GuardsArg::Local)]
    pub guards: GuardsArg,

    /// Seconds a publisher signature's timestamp may differ from the daemon's clock.
    #[arg(long, env = "LMSRT_PUBLISH_SKEW", default_value_t = 300)]
    pub publish_skew: u64,

    /// Signed publishes remembered to answer a replay (the same `X-LMS-Timestamp` and
    /// `X-LMS-Signature` again) with the first one's ids instead of appending again. Each is
    /// kept until its timestamp leaves the --publish-skew window (about 100 bytes each; a batch
    /// whose ids are not consecutive counts once per run). When the window is full of live
    /// entries, further publishes get 503 `replay_window_full` until the oldest expires.
    #[arg(long, env = "LMSRT_PUBLISH_REPLAY_CAPACITY", default_value_t = 100_000)]
    pub publish_replay_capacity: usize,

    /// Milliseconds graceful shutdown waits for connections to finish after every waiter has
    /// been answered.
    #[arg(long, env = "LMSRT_SHUTDOWN_GRACE_MS", default_value_t = 1_500)]
    pub shutdown_grace_ms: u64,

    /// Threads serving HTTP. 1 (the default) runs a single-threaded runtime, nginx-style: on the
    /// small hosts this serves, it needs noticeably less CPU per request than a work-stealing one
    /// (benches/README.md). More than 1 runs a multi-threaded runtime with that many workers;
    /// 0 one per core. SQLite always runs on threads of its own.
    #[arg(long, env = "LMSRT_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Serving shards: each a thread with its own single-threaded runtime, its own share of the
    /// connections (handed round-robin by the acceptor) and its own dispatch of the fan-out, so
    /// one event's responses to many waiters are written on several cores at once (nginx-style
    /// workers). 0: one per core. The limits, slots, connection cap and metrics are shared.
    /// 1 (the default) measured best on a 2-core host shared with the load generator
    /// (benches/README.md); more pays off only with cores to spare beside the clients.
    #[arg(long, env = "LMSRT_SHARDS", default_value_t = 1)]
    pub shards: usize,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `lms_realtime=debug`.
    #[arg(long, env = "LMSRT_LOG", default_value = "info")]
    pub log: String,

    /// Demo mode: serve a page at /demo that shows events live through the browser client,
    /// with a bot posting every few seconds. Never in production: it hands out tokens.
    #[arg(long, env = "LMSRT_DEMO")]
    pub demo: bool,

    /// Check the store instead of serving: `--check <db>` (or `--check` with `--db`) runs
    /// SQLite's integrity check, prints a JSON report and exits 0 when the file is intact, 1
    /// when it is damaged. Safe while the daemon runs elsewhere on the file. A SQLite file
    /// only: a Redis URL is refused (exit 2); Redis has its own tools (`redis-check-aof`).
    #[arg(long, value_name = "DB", num_args = 0..=1)]
    pub check: Option<Option<PathBuf>>,

    /// With `--check`: copy every readable row into this new file (ids, the id sequence,
    /// cursors, idempotency keys and purge records kept; lost ids recorded so readers get a
    /// gap), print what was copied and lost, and exit. Stop the daemon first; then swap the
    /// new file in for the old one (see the README).
    #[arg(long, value_name = "NEW_FILE", requires = "check")]
    pub salvage: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config::parse_from(["lms-longpolld"])
    }
}

impl Config {
    /// Where `--db` points: a file or a Redis URL.
    pub fn store_location(&self) -> Result<StoreLocation> {
        let s = self.db.to_str().ok_or_else(|| {
            Error::InvalidArgument("--db is not UTF-8 text (a path or a redis:// URL)".into())
        })?;
        StoreLocation::parse(s)
    }

    /// The name this host's shared files for `store` are made from (the metrics file is
    /// `<name>-lmsrt-metrics`): the database file itself for SQLite, as PHP uses; for a store
    /// that is not a file, `redis-<its URL, made a file name>` in `--state-dir` (default: the
    /// temp dir), so the daemons and PHP workers of one host on one store share it.
    pub fn local_files_base(&self, store: &EventStore) -> PathBuf {
        if store.engine_name() == "sqlite" {
            return store.path().to_path_buf();
        }
        let url = store.path().to_string_lossy();
        let name: String = url
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.state_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("redis-{name}"))
    }

    /// The file `--check` examines: its argument, or `--db` when it has none.
    pub fn check_path(&self) -> Option<&std::path::Path> {
        self.check
            .as_ref()
            .map(|p| p.as_deref().unwrap_or(self.db.as_path()))
    }

    /// The token keys: the current one first, then the previous one.
    pub fn token_keys(&self) -> Result<Vec<TokenKey>> {
        let mut keys = Vec::new();
        for spec in [&self.token_key, &self.token_key_previous]
            .into_iter()
            .flatten()
        {
            keys.push(TokenKey::parse(spec)?);
        }
        if keys.len() == 2 && keys[0].id() == keys[1].id() {
            return Err(Error::InvalidArgument(
                "the current and previous token keys need different key ids".into(),
            ));
        }
        Ok(keys)
    }

    /// The number of serving shards (`--shards`, 0 resolved to the number of cores).
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, 64)
    }

    /// Checks the settings that clap cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        if self.poll_timeout > 3600 {
            return bad("--poll-timeout is at most 3600 s");
        }
        if self.stream_heartbeat == 0 || self.stream_heartbeat > 3600 {
            return bad("--stream-heartbeat is 1 to 3600 s");
        }
        if self.batch == 0 || self.max_batch == 0 || self.max_batch > crate::store::MAX_LIMIT {
            return bad("--batch and --max-batch are 1 to 1000");
        }
        if self.max_channels == 0 || self.max_channels > crate::store::MAX_CHANNELS {
            return bad("--max-channels is 1 to 1024");
        }
        if self.slots_per_user == 0 || self.slots_per_user > crate::guards::slots::MAX_SLOTS {
            return bad("--slots-per-user is 1 to 15");
        }
        if self.poll_rate == 0 || self.poll_burst == 0 || self.ip_rate == 0 || self.ip_burst == 0 {
            return bad("rates and bursts must be positive");
        }
        if self.store_readers == 0 || self.store_writers == 0 || self.max_connections == 0 {
            return bad("--store-readers, --store-writers and --max-connections must be positive");
        }
        if self.max_connections_per_ip == 0 {
            return bad("--max-connections-per-ip must be positive");
        }
        if self.guards == GuardsArg::Redis
            && !matches!(self.store_location(), Ok(StoreLocation::Redis(_)))
        {
            return bad(
                "--guards redis keeps the guards in the store's Redis: it needs --db to be a \
                 redis:// or rediss:// URL, or a cluster's (redis+cluster://, rediss+cluster://); \
                 with a SQLite store, use --guards local",
            );
        }
        if self.publish_replay_capacity == 0 {
            return bad("--publish-replay-capacity must be positive");
        }
        if self.header_timeout == 0 || self.idle_timeout == 0 {
            return bad("timeouts must be positive");
        }
        if !self.demo && self.token_key.is_none() {
            return bad(
                "set --token-key (LMSRT_TOKEN_KEY) to <key id>:<secret of 32+ bytes>, \
                 or run with --demo to try it out",
            );
        }
        self.token_keys().map(|_| ())
    }
}

/// `--guards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuardsArg {
    /// In this daemon's memory: limits and slots per daemon (the default; enough for one host).
    Local,
    /// In the Redis of the store (`--db redis://…`, or a cluster's `redis+cluster://…`):
    /// shared by every daemon on it.
    Redis,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// Survives a crash of any process (the store's default).
    ProcessCrash,
    /// Also survives power loss or an OS crash.
    PowerLoss,
}

impl From<DurabilityArg> for crate::store::Durability {
    fn from(d: DurabilityArg) -> crate::store::Durability {
        match d {
            DurabilityArg::ProcessCrash => crate::store::Durability::ProcessCrash,
            DurabilityArg::PowerLoss => crate::store::Durability::PowerLoss,
        }
    }
}
