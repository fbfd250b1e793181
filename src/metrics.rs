//! Host-wide metrics: counters, gauges and latency histograms that every process adds into.
//!
//! PHP workers live for one request, so their figures cannot stay in process memory: every
//! process maps `<db>-lmsrt-metrics` and adds into the same atomic words, and a snapshot (from
//! any process) reads the host-wide view. Recording is a handful of uncontended atomic adds and
//! one clock read; nothing allocates, locks or makes a system call.
//!
//! ## What is kept
//!
//! * **Counters** ([`Counter`]): cumulative totals since the file was created (Prometheus
//!   counters), plus the same counts over the recent window (about the last minute).
//! * **Gauges** ([`Gauge`]): one signed value each, set or adjusted by whoever owns it. A
//!   process killed between an increment and its decrement leaves the gauge off, so owners of
//!   long-lived gauges (the daemon) should [`Metrics::set_gauge`] absolute values.
//! * **Latency histograms** ([`Histogram`]): cumulative count and sum, and over the recent
//!   window log-linear buckets (16 per power of two, so quantiles are within 1/16 of the true
//!   value) from which p50, p95, p99 and the maximum are read.
//!
//! ## Who records
//!
//! An [`EventStore`](crate::EventStore) opened with [`Config::metrics`](crate::store::Config::metrics)
//! records its own appends, fetches and waits (counts, latencies, store faults). The daemon
//! records per HTTP request instead (and leaves that setting unset, so nothing counts twice);
//! PHP records through `LmsRealtime\Metrics` (the WordPress plugin does, per AJAX call). The
//! guards record their decisions when given a `Metrics`.
//!
//! ## The recent window
//!
//! Time is cut into 10-second epochs. The words for an epoch live in one of 8 ring slots,
//! stamped with the epoch number; the window is the current epoch and the 5 before it (50 to
//! 60 s). Each recorder also stamps and clears the *next* epoch's slot ahead of time (it holds
//! data 7 epochs old that no window reads), so the epoch change never races with recording.
//! Only after a fully idle epoch does the first recorder clear a slot lazily, which may drop
//! the few samples racing with it; a process killed while clearing leaves at most one slot's
//! worth of stale counts, which ages out of the window. That is the one multi-word update in
//! these files, and its worst case is a slightly wrong minute of statistics.
//!
//! ## Health
//!
//! [`Snapshot::health`] turns `degraded` past the plan's alert lines, over the recent window:
//! append or fetch p99 latency above 100 ms, or an error rate (failed appends, fetches and
//! waits over all of them) above 5%. Each is judged only with at least 20 samples, so one slow
//! request on an idle host does not raise the alarm. Wait and delivery latencies are reported
//! but not judged (a long-poll lasts up to 30 s by design). The reasons say which line was
//! crossed and by how much.
//!
//! It turns `unavailable` when a store call met a damaged page of the database file
//! (`corrupt_reads`) in the recent window: no retry gets a reader past it, so the operator has
//! to check and salvage the file (see the README).
//!
//! ```
//! use std::time::Duration;
//! use lms_realtime::metrics::{Counter, Histogram, Metrics, MetricsConfig};
//!
//! let m = Metrics::in_process(MetricsConfig::default());
//! m.incr(Counter::Appends);
//! m.record(Histogram::Append, Duration::from_micros(250));
//! let snap = m.snapshot();
//! assert_eq!(snap.counters["appends"].total, 1);
//! assert!(snap.to_prometheus().contains("lmsrt_appends_total 1"));
//! assert_eq!(snap.health.status, lms_realtime::metrics::HealthStatus::Ok);
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::shm::sidecar;
use crate::shm::table::Words;

/// Suffix of the shared metrics file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-metrics";

macro_rules! metric_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident = $id:literal, $label:literal, $help:literal;)* }) => {
        $(#[$doc])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $v = $id,)*
        }

        impl $name {
            /// Every value, in id order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The stable numeric id (used by the C ABI).
            pub fn id(self) -> u32 {
                self as u32
            }

            /// The value with a numeric id.
            pub fn from_id(id: u32) -> Option<$name> {
                Self::ALL.iter().copied().find(|m| m.id() == id)
            }

            /// The snake-case name used in JSON and Prometheus output.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }

            /// The value with a name.
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|m| m.name() == name)
            }

            /// A one-line description (the Prometheus `HELP`).
            pub fn help(self) -> &'static str {
                match self { $($name::$v => $help,)* }
            }
        }
    };
}

metric_enum! {
    /// A counter. Ids are stable; new ones are added at the end.
    Counter {
        /// Append attempts (events or batches), including failed ones.
        Appends = 0, "appends", "Append attempts, including failed ones.";
        /// Appends that failed.
        AppendErrors = 1, "append_errors", "Appends that failed.";
        /// Fetch attempts, including failed ones.
        Fetches = 2, "fetches", "Fetch attempts, including failed ones.";
        /// Fetches that failed.
        FetchErrors = 3, "fetch_errors", "Fetches that failed.";
        /// Wait (long-poll) attempts, including failed ones.
        Waits = 4, "waits", "Wait (long-poll) attempts, including failed ones.";
        /// Waits that failed.
        WaitErrors = 5, "wait_errors", "Waits that failed.";
        /// Waits that ended with an empty batch on timeout.
        WaitTimeouts = 6, "wait_timeouts", "Waits that ended empty on timeout.";
        /// Events delivered to clients.
        Deliveries = 7, "deliveries", "Events delivered to clients.";
        /// Rate-limit decisions that allowed the request.
        LimiterAllowed = 8, "limiter_allowed", "Rate-limit decisions that allowed the request.";
        /// Rate-limit decisions that refused the request.
        LimiterDenied = 9, "limiter_denied", "Rate-limit decisions that refused the request.";
        /// Rate-limit decisions refused by a DDoS block.
        LimiterBlocked = 10, "limiter_blocked", "Rate-limit decisions refused by a DDoS block.";
        /// Breaker checks that let the call through (including half-open probes).
        BreakerAllowed = 11, "breaker_allowed", "Breaker checks that let the call through.";
        /// Breaker checks refused because the breaker was open.
        BreakerRejected = 12, "breaker_rejected", "Breaker checks refused (open or probes taken).";
        /// Breakers that opened (tripped or re-opened).
        BreakerOpened = 13, "breaker_opened", "Breaker transitions to open.";
        /// Connection slots acquired.
        SlotsAcquired = 14, "slots_acquired", "Connection slots acquired.";
        /// Connection slot requests refused (all slots taken).
        SlotsRejected = 15, "slots_rejected", "Connection slot requests refused.";
        /// Leases taken over from a dead or expired holder, or evicted as the oldest.
        SlotsReclaimed = 16, "slots_reclaimed", "Leases reclaimed from dead, expired or evicted holders.";
        /// Signed publishes answered as replays of an earlier one, without appending (daemon).
        PublishReplays = 17, "publish_replays", "Signed publishes answered as replays, without appending.";
        /// Connections refused at accept: over the per-address cap, or over the daemon's
        /// capacity and its ops reserve (daemon).
        ConnectionsRefused = 18, "connections_refused", "Connections refused: over the per-address cap or the capacity.";
        /// Store calls that met a damaged page of the database file (`ErrorCode::Corrupt`).
        /// Any in the recent window makes the health `unavailable`.
        CorruptReads = 19, "corrupt_reads", "Store calls that met a damaged page of the database file.";
    }
}

metric_enum! {
    /// A gauge. Ids are stable; new ones are added at the end.
    Gauge {
        /// Long-polls waiting right now.
        ActiveWaits = 0, "active_waits", "Long-polls waiting now.";
        /// Open client connections (daemon).
        Connections = 1, "connections", "Open client connections.";
    }
}

metric_enum! {
    /// A latency histogram. Ids are stable; new ones are added at the end.
    Histogram {
        /// Time to append (until committed).
        Append = 0, "append", "Time to append an event until committed.";
        /// Time to fetch a batch.
        Fetch = 1, "fetch", "Time to fetch a batch.";
        /// Time a long-poll waited.
        Wait = 2, "wait", "Time a long-poll waited.";
        /// Time from an event's append to its delivery.
        Delivery = 3, "delivery", "Time from append to delivery.";
    }
}

const MAGIC: u64 = u64::from_le_bytes(*b"LMSRMET1");
/// Room reserved in the layout, so new metrics do not change it.
const MAX_COUNTERS: usize = 64;
const MAX_GAUGES: usize = 16;
const MAX_HISTOGRAMS: usize = 8;
/// Buckets: 16 exact below 16 µs, then 16 per power of two up to 2^36 µs (about 19 hours).
const SUB: usize = 16;
const BUCKETS: usize = SUB + (36 - 4) * SUB;
const EPOCH_MS: u64 = 10_000;
/// Epochs in the window: the current one and the 5 before it.
const WINDOW_EPOCHS: u64 = 6;
const SLOTS: usize = 8;

// Layout, in words.
const HEADER: usize = 8;
const COUNTERS: usize = HEADER;
const GAUGES: usize = COUNTERS + MAX_COUNTERS;
/// Per histogram: cumulative count, sum (µs), max (µs), spare.
const HIST_CUM: usize = GAUGES + MAX_GAUGES;
const HIST_CUM_WORDS: usize = 4;
const RING: usize = HIST_CUM + MAX_HISTOGRAMS * HIST_CUM_WORDS;
/// A ring slot: epoch stamp, window counters, then per histogram its max and buckets.
const SLOT_COUNTERS: usize = 1;
const SLOT_HISTS: usize = SLOT_COUNTERS + MAX_COUNTERS;
const SLOT_HIST_WORDS: usize = 1 + BUCKETS;
const SLOT_WORDS: usize = SLOT_HISTS + MAX_HISTOGRAMS * SLOT_HIST_WORDS;
const TOTAL_WORDS: usize = RING + SLOTS * SLOT_WORDS;

const _: () = assert!(Counter::ALL.len() <= MAX_COUNTERS);
const _: () = assert!(Gauge::ALL.len() <= MAX_GAUGES);
const _: () = assert!(Histogram::ALL.len() <= MAX_HISTOGRAMS);

/// The alert lines of [`Snapshot::health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Append and fetch p99 above this (ms) is degraded. Default 100.
    pub p99_ms: u64,
    /// An error rate above this (‰) is degraded. Default 50 (5%).
    pub error_rate_permille: u32,
    /// Fewest samples in the window for a line to be judged. Default 20.
    pub min_samples: u64,
}

impl Default for HealthThresholds {
    fn default() -> HealthThresholds {
        HealthThresholds {
            p99_ms: 100,
            error_rate_permille: 50,
            min_samples: 20,
        }
    }
}

/// Settings for [`Metrics::open`] and [`Metrics::in_process`].
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The source of time (for the recent window).
    pub clock: Arc<dyn Clock>,
    /// Alert lines for the health verdict.
    pub thresholds: HealthThresholds,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            clock: Arc::new(SystemClock),
            thresholds: HealthThresholds::default(),
        }
    }
}

/// Counters, gauges and histograms shared by every process on the host (or local to this one).
///
/// `Send + Sync`; every method takes `&self` and never blocks.
#[derive(Debug)]
pub struct Metrics {
    words: Words,
    clock: Arc<dyn Clock>,
    thresholds: HealthThresholds,
}

impl Metrics {
    /// Opens the metrics shared by every process using the database at `db_path`, in
    /// `<db_path>-lmsrt-metrics` (created zero-filled if missing).
    pub fn open(db_path: impl AsRef<Path>, config: MetricsConfig) -> Result<Metrics> {
        let path = sidecar(db_path.as_ref(), FILE_SUFFIX);
        Ok(Metrics {
            words: Words::open_shared(&path, MAGIC, TOTAL_WORDS)?,
            clock: config.clock,
            thresholds: config.thresholds,
        })
    }

    /// Metrics private to this process.
    pub fn in_process(config: MetricsConfig) -> Metrics {
        Metrics {
            words: Words::in_process(MAGIC, TOTAL_WORDS),
            clock: config.clock,
            thresholds: config.thresholds,
        }
    }

    /// The shared file (`None` for in-process metrics).
    pub fn path(&self) -> Option<&Path> {
        self.words.path()
    }

    /// Adds 1 to a counter.
    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n` to a counter. Counters saturate at `u64::MAX` rather than wrap: a counter
    /// that wrapped to a small number would read as a reset (or a huge negative rate) to
    /// every consumer, and anyone can add any `n` through the C ABI.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let w = self.words.get();
        saturating_add(&w[COUNTERS + c as usize], n);
        let slot = self.current_slot(w);
        saturating_add(&w[slot + SLOT_COUNTERS + c as usize], n);
    }

    /// Sets a gauge.
    pub fn set_gauge(&self, g: Gauge, value: i64) {
        self.words.get()[GAUGES + g as usize].store(value as u64, Ordering::Relaxed);
    }

    /// Adds `delta` (possibly negative) to a gauge, saturating at `i64::MIN` and `i64::MAX`.
    pub fn add_gauge(&self, g: Gauge, delta: i64) {
        let _ = self.words.get()[GAUGES + g as usize].fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |v| Some((v as i64).saturating_add(delta) as u64),
        );
    }

    /// Records one latency.
    #[inline]
    pub fn record(&self, h: Histogram, latency: Duration) {
        self.record_us(h, latency.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Records one latency in microseconds.
    #[inline]
    pub fn record_us(&self, h: Histogram, us: u64) {
        let w = self.words.get();
        let cum = HIST_CUM + h as usize * HIST_CUM_WORDS;
        saturating_add(&w[cum], 1);
        // The sum is what a huge latency (any `us` through the C ABI) could wrap.
        saturating_add(&w[cum + 1], us);
        let hist = self.current_slot(w) + SLOT_HISTS + h as usize * SLOT_HIST_WORDS;
        saturating_add(&w[hist + 1 + bucket_of(us)], 1);
        // The maximum changes rarely: read first so the common case writes nothing.
        if us > w[hist].load(Ordering::Relaxed) {
            w[hist].fetch_max(us, Ordering::Relaxed);
        }
        if us > w[cum + 2].load(Ordering::Relaxed) {
            w[cum + 2].fetch_max(us, Ordering::Relaxed);
        }
    }

    /// The word offset of the current epoch's ring slot, rotating the ring when needed.
    #[inline]
    fn current_slot(&self, w: &[AtomicU64]) -> usize {
        let epoch = self.epoch();
        let slot = slot_offset(epoch);
        let next = slot_offset(epoch + 1);
        if w[slot].load(Ordering::Relaxed) != epoch || w[next].load(Ordering::Relaxed) != epoch + 1
        {
            self.rotate(w, epoch);
        }
        slot
    }

    #[cold]
    fn rotate(&self, w: &[AtomicU64], epoch: u64) {
        for e in [epoch, epoch + 1] {
            let at = slot_offset(e);
            let stamp = w[at].load(Ordering::Acquire);
            // Only move a slot forward: a process whose clock lags must not wipe fresh data.
            if stamp < e
                && w[at]
                    .compare_exchange(stamp, e, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                for word in &w[at + 1..at + SLOT_WORDS] {
                    word.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    fn epoch(&self) -> u64 {
        // Epoch 0 never occurs, so a zero stamp always means "never used".
        self.clock.now_ms().max(0) as u64 / EPOCH_MS + 1
    }

    /// Reads every figure, host-wide, with the health verdict.
    pub fn snapshot(&self) -> Snapshot {
        let w = self.words.get();
        let now = self.clock.now_ms();
        let epoch = self.epoch();
        let live: Vec<usize> = (0..SLOTS)
            .map(|i| RING + i * SLOT_WORDS)
            .filter(|&at| {
                let e = w[at].load(Ordering::Acquire);
                e <= epoch && e + WINDOW_EPOCHS > epoch
            })
            .collect();
        let window_start = (epoch.saturating_sub(WINDOW_EPOCHS)) * EPOCH_MS;
        let window_ms = (now.max(0) as u64).saturating_sub(window_start);

        let mut counters = BTreeMap::new();
        for &c in Counter::ALL {
            let window = live
                .iter()
                .map(|at| w[at + SLOT_COUNTERS + c as usize].load(Ordering::Relaxed))
                .fold(0u64, u64::saturating_add);
            counters.insert(
                c.name(),
                CounterValue {
                    total: w[COUNTERS + c as usize].load(Ordering::Relaxed),
                    window,
                },
            );
        }
        let gauges = Gauge::ALL
            .iter()
            .map(|&g| {
                (
                    g.name(),
                    w[GAUGES + g as usize].load(Ordering::Relaxed) as i64,
                )
            })
            .collect();
        let mut histograms = BTreeMap::new();
        for &h in Histogram::ALL {
            let cum = HIST_CUM + h as usize * HIST_CUM_WORDS;
            let mut buckets = vec![0u64; BUCKETS];
            let mut max = 0;
            for at in &live {
                let hist = at + SLOT_HISTS + h as usize * SLOT_HIST_WORDS;
                max = max.max(w[hist].load(Ordering::Relaxed));
                for (b, sum) in buckets.iter_mut().enumerate() {
                    *sum = sum.saturating_add(w[hist + 1 + b].load(Ordering::Relaxed));
                }
            }
            histograms.insert(
                h.name(),
                HistogramValue {
                    count: w[cum].load(Ordering::Relaxed),
                    sum_us: w[cum + 1].load(Ordering::Relaxed),
                    max_us: w[cum + 2].load(Ordering::Relaxed),
                    window: LatencySummary::from_buckets(&buckets, max),
                },
            );
        }
        let mut snap = Snapshot {
            taken_at_ms: now,
            window_ms,
            counters,
            gauges,
            histograms,
            error_rate: None,
            health: Health {
                status: HealthStatus::Ok,
                reasons: Vec::new(),
            },
        };
        snap.judge(&self.thresholds);
        snap
    }

    /// The health verdict alone (see [`Snapshot::health`]).
    pub fn health(&self) -> Health {
        self.snapshot().health
    }
}

/// Adds `n` to `word`, stopping at `u64::MAX`. The common case is one `fetch_add`; only a sum
/// that wrapped is corrected, with a compare-and-swap loop that pins it at the maximum (a
/// reader may see the wrapped value for that instant; no add is lost below the maximum).
#[inline]
fn saturating_add(word: &AtomicU64, n: u64) {
    let before = word.fetch_add(n, Ordering::Relaxed);
    if before.checked_add(n).is_none() {
        saturating_fix(word);
    }
}

#[cold]
fn saturating_fix(word: &AtomicU64) {
    // Everything added since the wrap belongs above the maximum too.
    let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |_| Some(u64::MAX));
}

fn slot_offset(epoch: u64) -> usize {
    RING + (epoch % SLOTS as u64) as usize * SLOT_WORDS
}

/// The bucket of a value: exact below 16, then 16 buckets per power of two.
#[inline]
fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize;
    if e >= 36 {
        return BUCKETS - 1;
    }
    SUB + (e - 4) * SUB + ((v >> (e - 4)) as usize & (SUB - 1))
}

/// The largest value in a bucket.
fn bucket_upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = (i - SUB) / SUB + 4;
    let sub = ((i - SUB) % SUB) as u64;
    ((SUB as u64 + sub + 1) << (e - 4)) - 1
}

/// One counter in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterValue {
    /// Since the metrics file was created.
    pub total: u64,
    /// Over the recent window.
    pub window: u64,
}

/// Latency quantiles over the recent window, in µs (upper bounds of their buckets, so at most
/// 1/16 above the true value, and never above the maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Samples in the window.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    fn from_buckets(buckets: &[u64], max: u64) -> LatencySummary {
        // Saturating throughout: the words saturate at u64::MAX (see `Metrics::add`).
        let count: u64 = buckets.iter().fold(0, |a, b| a.saturating_add(*b));
        let q = |p: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            let rank = ((p * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, &n) in buckets.iter().enumerate() {
                seen = u64::saturating_add(seen, n);
                if seen >= rank {
                    return bucket_upper(i).min(max);
                }
            }
            max
        };
        LatencySummary {
            count,
            p50_us: q(0.50),
            p95_us: q(0.95),
            p99_us: q(0.99),
            max_us: max,
        }
    }
}

/// One histogram in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistogramValue {
    /// Samples since the file was created.
    pub count: u64,
    /// Sum of those samples, in µs.
    pub sum_us: u64,
    /// Largest of those samples, in µs.
    pub max_us: u64,
    /// Quantiles over the recent window.
    pub window: LatencySummary,
}

/// The health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Within every alert line.
    Ok,
    /// Past at least one alert line (see the reasons).
    Degraded,
    /// The store cannot serve: a damaged page was met in the recent window.
    Unavailable,
}

impl HealthStatus {
    /// `"ok"`, `"degraded"` or `"unavailable"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unavailable => "unavailable",
        }
    }
}

/// Whether the host is within its alert lines, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// One sentence per alert line crossed (empty when ok).
    pub reasons: Vec<String>,
}

/// Every figure at one moment, host-wide. Serialises to the JSON of [`Snapshot::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// When it was taken (ms since the Unix epoch).
    pub taken_at_ms: i64,
    /// Length of the recent window the `window` figures cover, in ms (50–60 s).
    pub window_ms: u64,
    /// Counters by name.
    pub counters: BTreeMap<&'static str, CounterValue>,
    /// Gauges by name.
    pub gauges: BTreeMap<&'static str, i64>,
    /// Latency histograms by name.
    pub histograms: BTreeMap<&'static str, HistogramValue>,
    /// Failed appends, fetches and waits over all of them in the window (0–1), if any ran.
    pub error_rate: Option<f64>,
    /// The verdict.
    pub health: Health,
}

impl Snapshot {
    fn judge(&mut self, t: &HealthThresholds) {
        let win = |c: Counter| self.counters[c.name()].window;
        // u128: the counters saturate at u64::MAX, and their sums and products must not wrap.
        let sum = |cs: [Counter; 3]| cs.iter().map(|c| u128::from(win(*c))).sum::<u128>();
        let ops = sum([Counter::Appends, Counter::Fetches, Counter::Waits]);
        let errors = sum([
            Counter::AppendErrors,
            Counter::FetchErrors,
            Counter::WaitErrors,
        ]);
        let secs = self.window_ms / 1000;
        let mut reasons = Vec::new();
        let corrupt = win(Counter::CorruptReads);
        if corrupt > 0 {
            // First, and above every latency line: readers cannot get past a damaged page,
            // and only the operator can fix it.
            reasons.push(format!(
                "the store is corrupt: {corrupt} store calls met a damaged page in the last \
                 {secs} s; run `lms-longpolld --check` and salvage the file"
            ));
        }
        if ops > 0 {
            let rate = errors as f64 / ops as f64;
            self.error_rate = Some(rate);
            if ops >= u128::from(t.min_samples)
                && errors * 1000 > ops * u128::from(t.error_rate_permille)
            {
                reasons.push(format!(
                    "error rate {:.1}% is above {:.1}% ({errors} of {ops} appends, fetches and \
                     waits failed in the last {secs} s)",
                    rate * 100.0,
                    t.error_rate_permille as f64 / 10.0,
                ));
            }
        }
        for h in [Histogram::Append, Histogram::Fetch] {
            let s = self.histograms[h.name()].window;
            if s.count >= t.min_samples && u128::from(s.p99_us) > u128::from(t.p99_ms) * 1000 {
                reasons.push(format!(
                    "{} p99 latency {:.1} ms is above {} ms ({} samples in the last {secs} s)",
                    h.name(),
                    s.p99_us as f64 / 1000.0,
                    t.p99_ms,
                    s.count,
                ));
            }
        }
        self.health = Health {
            status: if corrupt > 0 {
                HealthStatus::Unavailable
            } else if reasons.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            reasons,
        };
    }

    /// The snapshot as a JSON object (for the WordPress admin page and `/healthz`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a snapshot always serialises")
    }

    /// The snapshot in the Prometheus text exposition format (version 0.0.4): counters as
    /// `lmsrt_<name>_total`, gauges as `lmsrt_<name>`, histograms as summaries
    /// `lmsrt_<name>_latency_seconds` with window quantiles and cumulative sum and count, plus
    /// `lmsrt_healthy` (1 or 0).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for &c in Counter::ALL {
            let n = c.name();
            let _ = writeln!(out, "# HELP lmsrt_{n}_total {}", c.help());
            let _ = writeln!(out, "# TYPE lmsrt_{n}_total counter");
            let _ = writeln!(out, "lmsrt_{n}_total {}", self.counters[n].total);
        }
        for &g in Gauge::ALL {
            let n = g.name();
            let _ = writeln!(out, "# HELP lmsrt_{n} {}", g.help());
            let _ = writeln!(out, "# TYPE lmsrt_{n} gauge");
            let _ = writeln!(out, "lmsrt_{n} {}", self.gauges[n]);
        }
        let secs = |us: u64| us as f64 / 1e6;
        for &h in Histogram::ALL {
            let n = h.name();
            let v = &self.histograms[n];
            let _ = writeln!(
                out,
                "# HELP lmsrt_{n}_latency_seconds {} Quantiles over the last minute.",
                h.help()
            );
            let _ = writeln!(out, "# TYPE lmsrt_{n}_latency_seconds summary");
            for (q, us) in [
                ("0.5", v.window.p50_us),
                ("0.95", v.window.p95_us),
                ("0.99", v.window.p99_us),
            ] {
                if v.window.count == 0 {
                    let _ = writeln!(out, "lmsrt_{n}_latency_seconds{{quantile=\"{q}\"}} NaN");
                } else {
                    let _ = writeln!(
                        out,
                        "lmsrt_{n}_latency_seconds{{quantile=\"{q}\"}} {}",
                        secs(us)
                    );
                }
            }
            let _ = writeln!(out, "lmsrt_{n}_latency_seconds_sum {}", secs(v.sum_us));
            let _ = writeln!(out, "lmsrt_{n}_latency_seconds_count {}", v.count);
            let _ = writeln!(
                out,
                "# HELP lmsrt_{n}_latency_max_seconds Largest {n} latency over the last minute."
            );
            let _ = writeln!(out, "# TYPE lmsrt_{n}_latency_max_seconds gauge");
            let _ = writeln!(
                out,
                "lmsrt_{n}_latency_max_seconds {}",
                secs(v.window.max_us)
            );
        }
        let _ = writeln!(
            out,
            "# HELP lmsrt_healthy 1 when within every alert line, 0 when degraded."
        );
        let _ = writeln!(out, "# TYPE lmsrt_healthy gauge");
        let _ = writeln!(
            out,
            "lmsrt_healthy {}",
            u8::from(self.health.status == HealthStatus::Ok)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_latency_sums_saturate_instead_of_wrapping() {
        let m = Metrics::in_process(MetricsConfig::default());
        m.add(Counter::Deliveries, u64::MAX - 1);
        m.add(Counter::Deliveries, 5);
        m.add(Counter::Deliveries, u64::MAX);
        m.incr(Counter::Appends);
        m.add(Counter::Appends, u64::MAX);
        m.add(Counter::AppendErrors, u64::MAX);
        m.record_us(Histogram::Append, u64::MAX);
        m.record_us(Histogram::Append, u64::MAX);
        m.add_gauge(Gauge::Connections, i64::MAX);
        m.add_gauge(Gauge::Connections, i64::MAX);
        m.add_gauge(Gauge::ActiveWaits, i64::MIN);
        m.add_gauge(Gauge::ActiveWaits, -1);
        // Before: the counters wrapped to small numbers (2, 3), the sum to u64::MAX - 1, the
        // gauge to -2; and a debug build panicked summing the window.
        let s = m.snapshot();
        assert_eq!(s.counters["deliveries"].total, u64::MAX);
        assert_eq!(s.counters["deliveries"].window, u64::MAX);
        assert_eq!(s.counters["appends"].total, u64::MAX);
        let h = &s.histograms["append"];
        assert_eq!((h.count, h.sum_us, h.max_us), (2, u64::MAX, u64::MAX));
        assert_eq!(s.gauges["connections"], i64::MAX);
        assert_eq!(s.gauges["active_waits"], i64::MIN);
        // Everything failed: the verdict says so rather than overflowing.
        assert_eq!(s.health.status, HealthStatus::Degraded);
        assert!(
            s.to_prometheus()
                .contains("lmsrt_deliveries_total 18446744073709551615\n")
        );
    }
    use crate::clock::ManualClock;

    const T0: i64 = 1_700_000_000_000;

    fn metrics() -> (Metrics, ManualClock) {
        let clock = ManualClock::new(T0);
        let m = Metrics::in_process(MetricsConfig {
            clock: Arc::new(clock.clone()),
            ..MetricsConfig::default()
        });
        (m, clock)
    }

    #[test]
    fn buckets_are_log_linear_and_tight() {
        for v in (0..5000u64).chain([1 << 20, (1 << 36) - 1, u64::MAX / 3]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS);
            if v < 1 << 36 {
                assert!(bucket_upper(b) >= v, "{v}");
                assert!(b == 0 || bucket_upper(b - 1) < v, "{v}");
                assert!(bucket_upper(b) - v <= v / 16, "{v} within 1/16");
            }
        }
        for i in 1..BUCKETS {
            assert!(bucket_upper(i) > bucket_upper(i - 1));
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let (m, _) = metrics();
        // 1..=1000 ms, one sample each.
        for ms in 1..=1000u64 {
            m.record(Histogram::Fetch, Duration::from_millis(ms));
        }
        let s = m.snapshot().histograms["fetch"];
        assert_eq!(s.count, 1000);
        assert_eq!(s.sum_us, 500_500_000);
        assert_eq!(s.max_us, 1_000_000);
        let w = s.window;
        assert_eq!((w.count, w.max_us), (1000, 1_000_000));
        for (got, want) in [
            (w.p50_us, 500_000),
            (w.p95_us, 950_000),
            (w.p99_us, 990_000),
        ] {
            assert!(got >= want && got <= want + want / 16, "{got} vs {want}");
        }
    }

    #[test]
    fn window_forgets_old_samples_but_totals_do_not() {
        let (m, clock) = metrics();
        m.add(Counter::Appends, 5);
        m.record_us(Histogram::Append, 200_000);
        clock.advance_ms(30_000);
        m.incr(Counter::Appends);
        let s = m.snapshot();
        assert_eq!(
            s.counters["appends"],
            CounterValue {
                total: 6,
                window: 6
            }
        );
        assert_eq!(s.histograms["append"].window.count, 1);
        // A minute later only the second append is in the window...
        clock.advance_ms(35_000);
        let s = m.snapshot();
        assert_eq!(
            s.counters["appends"],
            CounterValue {
                total: 6,
                window: 1
            }
        );
        assert_eq!(s.histograms["append"].window.count, 0);
        assert_eq!(s.histograms["append"].count, 1);
        assert!((50_000..60_000).contains(&s.window_ms));
        // ...and after a long idle spell (the ring wrapped), none, and new data is clean.
        clock.advance_ms(3_600_000);
        m.incr(Counter::Fetches);
        let s = m.snapshot();
        assert_eq!(s.counters["appends"].window, 0);
        assert_eq!(s.counters["fetches"].window, 1);
        assert_eq!(s.counters["appends"].total, 6);
    }

    #[test]
    fn gauges_set_and_add() {
        let (m, _) = metrics();
        m.set_gauge(Gauge::Connections, 10);
        m.add_gauge(Gauge::Connections, -3);
        m.add_gauge(Gauge::ActiveWaits, 2);
        let s = m.snapshot();
        assert_eq!(s.gauges["connections"], 7);
        assert_eq!(s.gauges["active_waits"], 2);
    }

    #[test]
    fn health_turns_degraded_past_the_alert_lines_and_says_why() {
        let (m, clock) = metrics();
        // Healthy traffic: 100 fast appends, 2 errors (2%).
        for _ in 0..100 {
            m.incr(Counter::Appends);
            m.record(Histogram::Append, Duration::from_millis(3));
        }
        m.add(Counter::AppendErrors, 2);
        let h = m.health();
        assert_eq!(h.status, HealthStatus::Ok, "{:?}", h.reasons);
        assert_eq!(m.snapshot().error_rate, Some(0.02));
        // Errors past 5%.
        m.add(Counter::AppendErrors, 5);
        let h = m.health();
        assert_eq!(h.status, HealthStatus::Degraded);
        assert_eq!(h.reasons.len(), 1);
        assert!(
            h.reasons[0].starts_with("error rate 7.0% is above 5.0%"),
            "{}",
            h.reasons[0]
        );
        // Once the window has moved on, healthy again.
        clock.advance_ms(61_000);
        assert_eq!(m.health().status, HealthStatus::Ok);
        // Slow fetches: p99 above 100 ms.
        for i in 0..100 {
            m.incr(Counter::Fetches);
            let ms = if i < 97 { 5 } else { 250 };
            m.record(Histogram::Fetch, Duration::from_millis(ms));
        }
        let h = m.health();
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(
            h.reasons[0].starts_with("fetch p99 latency 25"),
            "{}",
            h.reasons[0]
        );
        // Waits are long by design and are not judged.
        clock.advance_ms(61_000);
        for _ in 0..100 {
            m.incr(Counter::Waits);
            m.record(Histogram::Wait, Duration::from_secs(30));
        }
        assert_eq!(m.health().status, HealthStatus::Ok);
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        let (m, _) = metrics();
        m.incr(Counter::Appends);
        m.incr(Counter::AppendErrors);
        m.record(Histogram::Append, Duration::from_secs(2));
        let s = m.snapshot();
        assert_eq!(s.error_rate, Some(1.0));
        assert_eq!(s.health.status, HealthStatus::Ok);
    }

    #[test]
    fn json_and_prometheus_render_everything() {
        let (m, _) = metrics();
        m.incr(Counter::LimiterDenied);
        m.record_us(Histogram::Delivery, 1500);
        let s = m.snapshot();
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["counters"]["limiter_denied"]["total"], 1);
        assert_eq!(v["histograms"]["delivery"]["window"]["p99_us"], 1500);
        assert_eq!(v["health"]["status"], "ok");
        let text = s.to_prometheus();
        assert!(
            text.contains(
                "# TYPE lmsrt_limiter_denied_total counter\nlmsrt_limiter_denied_total 1\n"
            )
        );
        assert!(text.contains("lmsrt_delivery_latency_seconds{quantile=\"0.99\"} 0.0015\n"));
        assert!(text.contains("lmsrt_append_latency_seconds{quantile=\"0.5\"} NaN\n"));
        assert!(text.contains("lmsrt_delivery_latency_seconds_count 1\n"));
        assert!(text.ends_with("lmsrt_healthy 1\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split([' ', '{']).next().unwrap();
            let family = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
        for c in Counter::ALL {
            assert_eq!(Counter::from_name(c.name()), Some(*c));
            assert_eq!(Counter::from_id(c.id()), Some(*c));
        }
    }

    #[test]
    fn shared_files_add_up_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let a = Metrics::open(&db, MetricsConfig::default()).unwrap();
        let b = Metrics::open(&db, MetricsConfig::default()).unwrap();
        a.incr(Counter::Deliveries);
        b.add(Counter::Deliveries, 2);
        b.record_us(Histogram::Wait, 10);
        let s = a.snapshot();
        assert_eq!(s.counters["deliveries"].total, 3);
        assert_eq!(s.histograms["wait"].window.count, 1);
        assert!(a.path().unwrap().ends_with("m.db-lmsrt-metrics"));
    }
}
