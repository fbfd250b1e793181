//! The state every connection shares ([`State`]), and [`build`], which makes it from the
//! configuration and the store: the guards (rate limiter, slots, breakers), the fan-out hub
//! subscribed to the store, the appender, and the connection capacity the open-file limit
//! allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::config::{Config, GuardsArg};
use super::{addresses, appender, auth, fanout, replay};
use crate::error::{Error, Result};
use crate::guards::{
    ActionLimit, BreakerConfig, Breakers, LimiterConfig, RateLimiter, Slots, SlotsConfig,
};
use crate::metrics::{Gauge, Metrics, MetricsConfig};
use crate::store::{EventStore, Subscription};
use crate::token::TokenKey;

/// Everything a request handler needs, shared by all connections.
pub(crate) struct State {
    pub(crate) store: Arc<EventStore>,
    pub(crate) config: Config,
    pub(crate) keys: Vec<TokenKey>,
    pub(crate) tokens: auth::TokenCache,
    pub(crate) hub: Arc<fanout::Hub>,
    pub(crate) limiter: RateLimiter,
    pub(crate) slots: Slots,
    pub(crate) breakers: Arc<Breakers>,
    /// The store breaker's latest status, with `--guards redis` (see `gate::BreakerView`).
    pub(crate) breaker_view: Option<Arc<super::gate::BreakerView>>,
    /// The guards' Redis handle, with `--guards redis`.
    #[cfg(feature = "redis")]
    pub(crate) shared_guards: Option<Arc<crate::guards::RedisGuards>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) appender: appender::Appender,
    /// Signed publishes seen within the skew window (see `replay.rs`).
    pub(crate) replays: Arc<replay::ReplayWindow>,
    pub(crate) read_sem: Semaphore,
    pub(crate) write_sem: Semaphore,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) connections: AtomicUsize,
    /// Open connections of the ops reserve (beyond `capacity`, /healthz and /metrics only).
    pub(crate) ops_connections: AtomicUsize,
    /// Open connections (or, behind a proxy, requests) per client address.
    pub(crate) addresses: Arc<addresses::Addresses>,
    pub(crate) waiting: AtomicUsize,
    /// Open `/v1/stream` responses (each also counts among the waiters while it waits).
    pub(crate) streams: AtomicUsize,
    pub(crate) capacity: usize,
    pub(crate) request_seq: AtomicU64,
    pub(crate) boot_id: u32,
    pub(crate) started: Instant,
}

/// Where the guards keep their state, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardsStats {
    /// `"local"` (this process) or `"redis"` (shared through the store's Redis).
    pub(crate) kind: &'static str,
    /// Shared guards only.
    pub(crate) redis: Option<SharedGuardsStats>,
}

/// The shared guards' calls to Redis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedGuardsStats {
    /// Calls that failed since start (decided locally instead, or refused for slots).
    pub(crate) errors: u64,
    /// Whether every decision tries Redis now (false while any master backs off).
    pub(crate) up: bool,
    /// Masters the decisions go to (one node, or the cluster's), and how many back off.
    pub(crate) masters: usize,
    pub(crate) masters_down: usize,
}

impl State {
    pub(crate) fn guards_stats(&self) -> GuardsStats {
        #[cfg(feature = "redis")]
        if let Some(g) = &self.shared_guards {
            let (masters_down, masters) = g.masters_backing_off();
            return GuardsStats {
                kind: "redis",
                redis: Some(SharedGuardsStats {
                    errors: g.errors(),
                    up: g.is_up(),
                    masters,
                    masters_down,
                }),
            };
        }
        GuardsStats {
            kind: "local",
            redis: None,
        }
    }
}

/// Verified tokens remembered (see `auth::TokenCache`): at most about 1.6 MiB.
const TOKEN_CACHE_CAPACITY: usize = 4096;

/// Descriptors kept back from the connection capacity: the store's files, the listener, the
/// blocking threads' SQLite connections, logs.
const FD_RESERVE: u64 = 128;

/// Raises this process's open-file soft limit to its hard limit; returns `(soft, hard)` after.
/// Each connection costs one descriptor, so this is what lets one daemon hold 10,000 polls.
pub fn raise_nofile_limit() -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        (r.rlim_cur, r.rlim_max)
    }
}

/// This process's open-file soft limit (1024 if it cannot be read).
fn nofile_soft_limit() -> u64 {
    // SAFETY: as above.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur
    }
}

/// A random-enough 32-bit number (request-id prefix, demo key) without a dependency.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed.rotate_left(i as u32 * 7) >> 3) as u8;
        }
    }
    buf
}

/// A built [`State`], with what `run` keeps apart from it.
pub(crate) struct Built {
    /// The shared state.
    pub(crate) state: Arc<State>,
    /// The hub's subscription to the store: the fan-out lasts as long as it is held.
    pub(crate) subscription: Subscription,
    /// Sets the shutdown flag every request sees in `state.shutdown`.
    pub(crate) shutdown: watch::Sender<bool>,
}

/// Builds the shared state from a validated `config`. Errors when a guard or the appender
/// cannot be made or the store cannot be subscribed.
pub(crate) fn build(store: Arc<EventStore>, config: Config) -> Result<Built> {
    let mut keys = config.token_keys()?;
    if keys.is_empty() {
        // --demo without a key: a fresh random one, so demo tokens work and nothing else does.
        let secret: String = random_bytes(32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        keys.push(TokenKey::new("demo", secret.into_bytes())?);
    }
    let metrics = Arc::new(
        Metrics::open(config.local_files_base(&store), MetricsConfig::default())
            .unwrap_or_else(|_| Metrics::in_process(MetricsConfig::default())),
    );
    let fd_soft = nofile_soft_limit();
    let capacity = config
        .max_connections
        .min(fd_soft.saturating_sub(FD_RESERVE).max(1) as usize);
    let Guards {
        limiter,
        slots,
        breakers,
        #[cfg(feature = "redis")]
            shared: shared_guards,
    } = guards(&config, capacity)?;
    let (limiter, slots, breakers) = (
        limiter.with_metrics(metrics.clone()),
        slots.with_metrics(metrics.clone()),
        breakers.with_metrics(metrics.clone()),
    );

    let shards = config.shard_count();
    let hub = Arc::new(fanout::Hub::with_shards(config.ring_events, shards));
    let subscription = {
        let hub = hub.clone();
        store.subscribe(move |b| hub.on_tail(b))?
    };
    hub.start_at(subscription.start());

    tracing::info!(
        open_file_limit = fd_soft,
        connection_capacity = capacity,
        max_connections_flag = config.max_connections,
        "connection capacity"
    );
    if capacity < config.max_connections {
        tracing::warn!(
            "the open-file limit ({fd_soft}) caps connections at {capacity}, below \
             --max-connections {}; raise LimitNOFILE (systemd) or `ulimit -Hn`",
            config.max_connections
        );
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let appender = appender::Appender::start(store.clone())?;
    let state = Arc::new(State {
        appender,
        replays: Arc::new(replay::ReplayWindow::new(config.publish_replay_capacity)),
        read_sem: Semaphore::new(config.store_readers),
        write_sem: Semaphore::new(config.store_writers),
        store,
        keys,
        tokens: auth::TokenCache::new(TOKEN_CACHE_CAPACITY),
        hub,
        limiter,
        slots,
        breaker_view: (config.guards == GuardsArg::Redis).then(Default::default),
        breakers: Arc::new(breakers),
        #[cfg(feature = "redis")]
        shared_guards,
        metrics,
        shutdown: shutdown_rx,
        connections: AtomicUsize::new(0),
        ops_connections: AtomicUsize::new(0),
        addresses: Arc::new(addresses::Addresses::new(config.max_connections_per_ip)),
        waiting: AtomicUsize::new(0),
        streams: AtomicUsize::new(0),
        capacity,
        request_seq: AtomicU64::new(0),
        boot_id: u32::from_le_bytes(random_bytes(4).try_into().unwrap_or([0; 4])),
        started: Instant::now(),
        config,
    });
    state.metrics.set_gauge(Gauge::Connections, 0);
    state.metrics.set_gauge(Gauge::ActiveWaits, 0);
    Ok(Built {
        state,
        subscription,
        shutdown: shutdown_tx,
    })
}

/// How long a user's slot is leased. A poll holds its slot for at most its wait plus a slow
/// response; the lease outlives that, and a poll releases it as soon as it ends. A stream holds
/// its slot longer and renews the lease well within this.
/// The three guards, as `--guards` says.
struct Guards {
    limiter: RateLimiter,
    slots: Slots,
    breakers: Breakers,
    /// Their Redis handle, with `--guards redis` (for `/healthz` and `/metrics`).
    #[cfg(feature = "redis")]
    shared: Option<Arc<crate::guards::RedisGuards>>,
}

/// Builds the guards: in this process (`--guards local`), or shared through the store's Redis
/// (`--guards redis`, checked by `Config::validate` to come with a Redis `--db`).
fn guards(config: &Config, capacity: usize) -> Result<Guards> {
    let limits = LimiterConfig {
        actions: vec![
            (
                "poll".into(),
                ActionLimit::per_minute(config.poll_rate).burst(config.poll_burst),
            ),
            (
                "ip".into(),
                ActionLimit::per_minute(config.ip_rate)
                    .burst(config.ip_burst)
                    .block(
                        Duration::from_secs(60),
                        Duration::from_secs(3600),
                        Duration::from_secs(86_400),
                    ),
            ),
        ],
        ..LimiterConfig::default()
    };
    // The slot table fails closed when a user finds no free record near its hash: keep it at
    // most two-thirds full even when every connection is a different user.
    let slot_records = capacity
        .saturating_add(capacity / 2)
        .clamp(16_384, crate::guards::MAX_CAPACITY);
    let slots = SlotsConfig {
        capacity: slot_records,
        max_per_key: config.slots_per_user,
        lease_ms: slot_lease(config).as_millis() as u64,
        check_pid: false,
        ..SlotsConfig::default()
    };
    let breakers = BreakerConfig {
        failure_threshold: config.breaker_failures.clamp(1, 127),
        open_ms: config.breaker_open_ms.max(1),
        max_open_ms: config.breaker_open_ms.max(1).max(120_000),
        ..BreakerConfig::default()
    };
    match config.guards {
        GuardsArg::Local => Ok(Guards {
            limiter: RateLimiter::in_process(limits)?,
            slots: Slots::in_process(slots)?,
            breakers: Breakers::in_process(breakers)?,
            #[cfg(feature = "redis")]
            shared: None,
        }),
        #[cfg(feature = "redis")]
        GuardsArg::Redis => {
            let crate::store::StoreLocation::Redis(url) = config.store_location()? else {
                return Err(Error::InvalidArgument(
                    "--guards redis needs --db to be a Redis URL".into(),
                ));
            };
            let shared = Arc::new(crate::guards::RedisGuards::open(&url)?);
            tracing::info!(store = %config.db.display(), "guards shared through Redis");
            Ok(Guards {
                limiter: RateLimiter::on_redis(shared.clone(), limits)?,
                slots: Slots::on_redis(shared.clone(), slots)?,
                breakers: Breakers::on_redis(shared.clone(), breakers)?,
                shared: Some(shared),
            })
        }
        #[cfg(not(feature = "redis"))]
        GuardsArg::Redis => Err(Error::InvalidArgument(
            "--guards redis: this build has no Redis support (cargo feature `redis`)".into(),
        )),
    }
}

pub(crate) fn slot_lease(config: &Config) -> Duration {
    Duration::from_secs(config.poll_timeout + config.idle_timeout + 5)
}
