//! Connection slots: at most N concurrent long-polls per user, as leases across processes.
//!
//! A slot is a *lease*: the holder's pid and an expiry. It frees itself when the lease expires
//! (a holder that forgets to release, or is SIGKILLed, costs the user a slot for at most
//! `lease_ms`), and sooner when `check_pid` is on and the holder's pid no longer exists
//! (`kill(pid, 0)` answers `ESRCH`). A long-lived holder (the daemon) renews its leases.
//!
//! When all N slots of a user are held, [`Slots::acquire`] either fails with
//! [`Error::SlotsExhausted`] ([`OnFull::Reject`], the default) or takes over the lease that
//! expires first, i.e. the least recently acquired or renewed ([`OnFull::EvictOldest`]); the
//! evicted holder finds out from [`Slots::is_held`] or [`Slots::renew`] and should end its
//! long-poll.
//!
//! ## Storage and crash safety
//!
//! A user is a 128-byte record in `<db>-lmsrt-slots` (or process memory): word 0 is the user's
//! tag, words 1–15 are leases, each `pid(22) · generation(10) · expiry(32 bits, Unix seconds)`,
//! 0 when free. A lease is taken and given back by one compare-and-swap of its word, so a
//! process killed anywhere leaves every lease either held (until it expires) or free. Only
//! the first N lease words are used, so "at most N" is structural, not a count that could
//! drift. Lease expiry has one-second resolution.
//!
//! A record whose leases are all free may be handed to another user when a new user finds no
//! free record near its hash. To do that safely the taker first *locks* every lease word
//! (a lease held by pid 0 that expires in 2 s), then swaps the tag, then unlocks; an acquirer
//! re-reads the tag after taking a lease and gives it back if the record changed hands. A
//! taker killed midway leaves locks that expire by themselves within 2 s.
//!
//! Why the acquirer's re-read of the tag is enough: the taker's lock and the acquirer's lease
//! are compare-and-swaps of the *same* lease word, so one of them comes first in that word's
//! order. If the acquirer's does, the taker's lock fails and the record is not handed over. If
//! the taker's does, the acquirer can only take the word once it is free again, i.e. by reading
//! the unlock, which the taker makes after swapping the tag (release); so the acquirer's
//! re-read (acquire) sees the new tag. No step relies on a single order across different words;
//! the lease words are still accessed `SeqCst`, a margin, not a requirement. (A taker stalled
//! past its 2 s locks is the one case the re-read cannot see, and is why locks expire.)
//!
//! A full table (no free or idle record within 16 of the user's hash) *fails closed* with
//! [`Error::SlotsExhausted`]: the cap exists to bound the daemon's load, and a client refused
//! a slot falls back to short polling, which still works. The default table holds 16,384
//! users, far beyond the concurrent long-polling users one host serves.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

mod lease;
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(test)]
mod tests;

use lease::{PID_MASK, expiry_ms, is_free, is_live, next_generation, pack, pid_alive, pid_of};
use record::PROBE;

use super::stable_hash;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::metrics::{Counter, Metrics};
use crate::shm::sidecar;
use crate::shm::table::{TAG_WORD, Table, tag_of};

/// Suffix of the shared table's file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-slots";
/// Records (users) in a default table.
pub const DEFAULT_CAPACITY: usize = 16_384;
/// Most slots a key may have.
pub const MAX_SLOTS: u32 = 15;

const MAGIC: u64 = u64::from_le_bytes(*b"LMSRSLT1");
const RECORD_WORDS: usize = 16;
/// What [`Slots::acquire`] does when every slot of the key is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Fail with [`Error::SlotsExhausted`].
    Reject,
    /// Take over the lease that expires first (the least recently acquired or renewed).
    EvictOldest,
}

/// Settings for [`Slots::open`] and [`Slots::in_process`].
#[derive(Debug, Clone)]
pub struct SlotsConfig {
    /// Concurrent leases per key (1–15). Default 3 (`lms_longpoll_max_connections`).
    pub max_per_key: u32,
    /// Lease length in ms (≥ 1,000): a holder that neither releases nor renews loses its slot
    /// after this long. Default 35,000 (a 30 s long-poll and some margin).
    pub lease_ms: u64,
    /// What happens to the N+1th request. Default [`OnFull::Reject`].
    pub on_full: OnFull,
    /// Also reclaim leases whose holder pid no longer exists. Turn it off when processes
    /// sharing the file live in different pid namespaces (containers). Default on.
    pub check_pid: bool,
    /// Records in the table (rounded up to a power of two, at least 64). Only the creator of a
    /// shared table picks it.
    pub capacity: usize,
    /// The source of time.
    pub clock: Arc<dyn Clock>,
}

impl Default for SlotsConfig {
    fn default() -> SlotsConfig {
        SlotsConfig {
            max_per_key: 3,
            lease_ms: 35_000,
            on_full: OnFull::Reject,
            check_pid: true,
            capacity: DEFAULT_CAPACITY,
            clock: Arc::new(SystemClock),
        }
    }
}

impl SlotsConfig {
    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> SlotsConfig {
        self.clock = clock;
        self
    }
}

/// A held slot. Plain data: keep it to release or renew the slot (the C ABI passes these
/// fields through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Lease {
    /// Hash of the key the slot belongs to.
    pub key_hash: u64,
    /// The record in the table.
    pub record: u32,
    /// The slot within the record (0-based).
    pub index: u32,
    /// The lease word as written: identifies this lease exactly.
    pub token: u64,
    /// When the lease expires unless renewed (ms since the Unix epoch; one-second resolution).
    pub expires_at_ms: i64,
    /// This lease took over one whose holder was dead or (with [`OnFull::EvictOldest`]) the
    /// oldest live one.
    pub reclaimed: bool,
}

/// Connection slots shared by every process on the host (or local to this one).
///
/// `Send + Sync`; no method blocks.
///
/// ```
/// use std::sync::Arc;
/// use lms_realtime::clock::ManualClock;
/// use lms_realtime::guards::{Slots, SlotsConfig};
///
/// let clock = ManualClock::new(1_700_000_000_000);
/// let slots = Slots::in_process(SlotsConfig::default().clock(Arc::new(clock.clone())))?;
/// let leases: Vec<_> = (0..3).map(|_| slots.acquire("user-7")).collect::<Result<_, _>>()?;
/// assert!(slots.acquire("user-7").is_err()); // the 4th concurrent long-poll is refused
/// assert!(slots.release(&leases[0]));
/// let again = slots.acquire("user-7")?;
/// // A lease nobody releases frees itself when it expires.
/// clock.advance_ms(35_000);
/// assert_eq!(slots.count("user-7")?, 0);
/// # let _ = again;
/// # Ok::<(), lms_realtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Slots {
    table: Table,
    config: SlotsConfig,
    pid: u64,
    metrics: Option<Arc<Metrics>>,
    /// The Redis backend, when shared through Redis (the table is then unused).
    #[cfg(feature = "redis")]
    redis: Option<Arc<crate::guards::RedisGuards>>,
}

impl Slots {
    /// Opens the slots shared by every process using the database at `db_path`, in
    /// `<db_path>-lmsrt-slots` (created zero-filled if missing).
    pub fn open(db_path: impl AsRef<Path>, config: SlotsConfig) -> Result<Slots> {
        Self::validate(&config)?;
        let path = sidecar(db_path.as_ref(), FILE_SUFFIX);
        let table = Table::open_shared(&path, MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, config))
    }

    /// Slots private to this process, with the same semantics.
    pub fn in_process(config: SlotsConfig) -> Result<Slots> {
        Self::validate(&config)?;
        let table = Table::in_process(MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, config))
    }

    /// Slots shared through Redis by every host of a site (see `guards::redis`): a user's
    /// leases are one sorted set, each operation one script call. Leases free themselves by
    /// expiring (`check_pid` does not apply across hosts); while Redis is unreachable nothing
    /// can be acquired, as with a full table.
    #[cfg(feature = "redis")]
    pub fn on_redis(guards: Arc<crate::guards::RedisGuards>, config: SlotsConfig) -> Result<Slots> {
        Self::validate(&config)?;
        // The smallest table: it is never used.
        let table = Table::in_process(MAGIC, RECORD_WORDS, 64)?;
        let mut s = Self::new(table, config);
        s.redis = Some(guards);
        Ok(s)
    }

    fn validate(config: &SlotsConfig) -> Result<()> {
        if !(1..=MAX_SLOTS).contains(&config.max_per_key) {
            return Err(Error::InvalidArgument(format!(
                "max_per_key {}: expected 1..={MAX_SLOTS}",
                config.max_per_key
            )));
        }
        if !(1_000..=86_400_000).contains(&config.lease_ms) {
            return Err(Error::InvalidArgument(format!(
                "lease_ms {}: expected 1000..=86400000",
                config.lease_ms
            )));
        }
        Ok(())
    }

    fn new(table: Table, config: SlotsConfig) -> Slots {
        Slots {
            table,
            config,
            pid: std::process::id() as u64 & PID_MASK,
            metrics: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Counts acquisitions into `metrics` (`slots_acquired`, `slots_rejected`,
    /// `slots_reclaimed`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Slots {
        self.metrics = Some(metrics);
        self
    }

    /// The shared table's file (`None` for in-process slots).
    pub fn path(&self) -> Option<&Path> {
        self.table.path()
    }

    /// Takes one of `key`'s slots for this process, for `lease_ms`.
    ///
    /// Fails with [`Error::SlotsExhausted`] when all `max_per_key` are held (with
    /// [`OnFull::Reject`]) or when the table has no room for a new key.
    pub fn acquire(&self, key: &str) -> Result<Lease> {
        let r = self.acquire_inner(key);
        self.counted(r)
    }

    /// [`acquire`](Self::acquire), awaited when the slots are in Redis.
    #[cfg(all(feature = "redis", feature = "daemon"))]
    pub(crate) async fn acquire_async(&self, key: &str) -> Result<Lease> {
        let r = match &self.redis {
            Some(r) => self.acquire_redis_async(r, key).await,
            None => self.acquire_inner(key),
        };
        self.counted(r)
    }

    /// Counts an acquisition's outcome in the metrics.
    fn counted(&self, r: Result<Lease>) -> Result<Lease> {
        if let Some(m) = &self.metrics {
            match &r {
                Ok(l) => {
                    m.incr(Counter::SlotsAcquired);
                    if l.reclaimed {
                        m.incr(Counter::SlotsReclaimed);
                    }
                }
                Err(_) => m.incr(Counter::SlotsRejected),
            }
        }
        r
    }

    /// [`release`](Self::release), awaited when the slots are in Redis.
    #[cfg(all(feature = "redis", feature = "daemon"))]
    pub(crate) async fn release_async(&self, lease: &Lease) -> bool {
        match &self.redis {
            Some(r) => self.release_redis_async(r, lease).await,
            None => self.release(lease),
        }
    }

    fn acquire_inner(&self, key: &str) -> Result<Lease> {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return self.acquire_redis(r, key);
        }
        let tag = Self::tag(key)?;
        let n = self.config.max_per_key as usize;
        // Retries only follow lost races (another process took the word first) or words
        // locked for a moment by a record hand-over.
        for attempt in 0..64 {
            let now = self.now();
            let Some(idx) = self.find_or_claim(tag, now) else {
                break;
            };
            let rec = self.table.record(idx);
            let mut pick = None;
            let mut oldest: Option<(usize, u64)> = None;
            let mut locked = false;
            for (i, word) in rec[1..=n].iter().enumerate() {
                let w = word.load(Ordering::SeqCst);
                if is_free(w, now) {
                    pick = Some((i, w, false));
                    break;
                }
                if pid_of(w) == 0 {
                    locked = true;
                } else if oldest.is_none_or(|(_, o)| expiry_ms(w) < expiry_ms(o)) {
                    oldest = Some((i, w));
                }
            }
            if pick.is_none() && self.config.check_pid {
                pick = rec[1..=n].iter().enumerate().find_map(|(i, word)| {
                    let w = word.load(Ordering::SeqCst);
                    let pid = pid_of(w);
                    (pid != 0 && pid != self.pid && !pid_alive(pid)).then_some((i, w, true))
                });
            }
            if pick.is_none() && self.config.on_full == OnFull::EvictOldest {
                pick = oldest.map(|(i, w)| (i, w, true));
            }
            let Some((i, old, reclaimed)) = pick else {
                if locked && attempt < 63 {
                    std::thread::yield_now();
                    continue;
                }
                break;
            };
            let expires_s = (now + self.config.lease_ms).div_ceil(1000);
            let token = pack(self.pid, next_generation(), expires_s);
            if rec[1 + i]
                .compare_exchange(old, token, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            // The record may have been handed to another key between our look-up and our
            // compare-and-swap; if so the lease is not ours to keep (see the module docs).
            if rec[TAG_WORD].load(Ordering::SeqCst) != tag {
                let _ = rec[1 + i].compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst);
                continue;
            }
            return Ok(Lease {
                key_hash: tag,
                record: (idx & (self.table.capacity() - 1)) as u32,
                index: i as u32,
                token,
                expires_at_ms: (expires_s * 1000) as i64,
                reclaimed,
            });
        }
        Err(Error::SlotsExhausted {
            key: key.to_owned(),
            max: self.config.max_per_key,
        })
    }

    /// Gives a slot back. Returns whether the lease was still held (false if it had expired and
    /// been reused, or was evicted).
    pub fn release(&self, lease: &Lease) -> bool {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return self.release_redis(r, lease);
        }
        let Some(word) = self.word(lease) else {
            return false;
        };
        word.compare_exchange(lease.token, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Extends a held lease by `lease_ms` from now, updating `lease`. Returns false (and leaves
    /// `lease` unchanged) if the lease was lost: expired and reused, or evicted.
    pub fn renew(&self, lease: &mut Lease) -> bool {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return self.renew_redis(r, lease);
        }
        let Some(word) = self.word(lease) else {
            return false;
        };
        let now = self.now();
        if !is_live(lease.token, now) {
            return false;
        }
        let expires_s = (now + self.config.lease_ms).div_ceil(1000);
        let token = pack(pid_of(lease.token), next_generation(), expires_s);
        if word
            .compare_exchange(lease.token, token, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        lease.token = token;
        lease.expires_at_ms = (expires_s * 1000) as i64;
        true
    }

    /// Whether the lease is still held (not released, expired or evicted).
    pub fn is_held(&self, lease: &Lease) -> bool {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return self.is_held_redis(r, lease);
        }
        self.word(lease).is_some_and(|w| {
            w.load(Ordering::SeqCst) == lease.token && is_live(lease.token, self.now())
        })
    }

    /// Leases of `key` held now (by any process).
    pub fn count(&self, key: &str) -> Result<u32> {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return self.count_redis(r, key);
        }
        let tag = Self::tag(key)?;
        let now = self.now();
        let Some(idx) = self.table.find(tag, PROBE.window) else {
            return Ok(0);
        };
        Ok(self.table.record(idx)[1..=self.config.max_per_key as usize]
            .iter()
            .filter(|w| {
                let w = w.load(Ordering::SeqCst);
                pid_of(w) != 0 && is_live(w, now)
            })
            .count() as u32)
    }

    fn tag(key: &str) -> Result<u64> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("slot key is empty".into()));
        }
        Ok(tag_of(stable_hash(&[key.as_bytes()])))
    }

    fn now(&self) -> u64 {
        self.config.clock.now_ms().max(0) as u64
    }

    /// The word a lease lives in, if the lease could be one of this table's.
    fn word(&self, lease: &Lease) -> Option<&AtomicU64> {
        let idx = lease.record as usize;
        if idx >= self.table.capacity() || lease.index >= MAX_SLOTS || lease.token == 0 {
            return None;
        }
        Some(&self.table.record(idx)[1 + lease.index as usize])
    }
}
