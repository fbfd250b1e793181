//! Guards shared across processes: rate limits, circuit breakers, connection slots, rollout.
//!
//! PHP-FPM runs many short-lived worker processes beside the long-poll daemon, so any guard
//! whose state must agree across them lives in a small file mapped shared next to the database
//! (never in the database itself: a decision must not compete with appends for SQLite's write
//! lock). Each guard also has an in-process backend with the same code and semantics, for the
//! daemon's hot path and for tests, and (feature `redis`) a backend in Redis shared by every
//! host of a site, one Lua script per decision (`guards::redis` says how, and how it fails).
//!
//! | guard | file beside `<db>` | what a record holds |
//! | --- | --- | --- |
//! | [`RateLimiter`] | `<db>-lmsrt-limits` | one key: GCRA arrival time, reputation, DDoS block |
//! | [`Breakers`] | `<db>-lmsrt-breakers` | one breaker: state word, failure window |
//! | [`Slots`] | `<db>-lmsrt-slots` | one user: up to 15 leases (holder pid + expiry) |
//! | [`Rollout`] | none (a pure function of its settings) | |
//!
//! ## How the shared tables stay consistent
//!
//! * Every table is a fixed-size file: a 64-byte header, then fixed-size records in an
//!   open-addressing hash table keyed by a stable 64-bit hash of the key (see
//!   [`stable_hash`]). The file starts zero-filled and all-zero is a valid, empty state, so
//!   there is no initialisation step a crash could interrupt.
//! * Records are never locked. Every field that must change together is packed into one 64-bit
//!   word and changed with a single compare-and-swap, so a process killed between any two
//!   instructions leaves every word either before or after its update, and no other process
//!   ever waits on it. Where a record has several words (a limiter key has three), the words are
//!   independent facts and any combination is a valid state; each module says why.
//! * A record is claimed by a compare-and-swap of its key tag from 0 (or from a stale key whose
//!   state has decayed to the all-zero equivalent), by the one claiming loop every table
//!   shares (`shm::table`, which also holds the table itself; each guard says what makes one
//!   of its records reusable). Words that carry state also carry a few check bits of the tag,
//!   so an update computed for the previous owner of a reused record fails its
//!   compare-and-swap instead of landing on the new owner.
//! * A table that is full (no free or stale record within a key's probe window) fails open for
//!   rate limits and breakers and closed for connection slots; each module says why.

pub mod breaker;
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod rollout;
pub mod slots;

pub use breaker::{BreakerConfig, BreakerState, BreakerStatus, Breakers, ClientMode};
pub use rate_limit::{ActionLimit, Decision, LimiterConfig, RateLimiter};
#[cfg(feature = "redis")]
pub use redis::{RedisGuards, RedisTime};
pub use rollout::{Cohort, Rollout};
pub use slots::{Lease, OnFull, Slots, SlotsConfig};

/// Largest record count a guard table accepts (the daemon sizes its tables up to it).
#[cfg(feature = "daemon")]
pub(crate) use crate::shm::table::MAX_CAPACITY;

/// A stable 64-bit hash of a sequence of byte strings: FNV-1a over the parts, each followed by
/// a 0xFF separator (a byte that never occurs in UTF-8, so `("ab","c")` and `("a","bc")`
/// differ), finished with the MurmurHash3 64-bit finaliser for well-spread low and high bits.
///
/// The result is part of the on-disk format (table positions) and of rollout cohorts, so it
/// never changes between versions; tests pin known values.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv::new();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// Incremental form of [`stable_hash`], so a common prefix (an action name) is hashed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Fnv {
        Fnv(Self::OFFSET)
    }

    /// Adds one part (and its separator).
    pub(crate) fn write(&mut self, part: &[u8]) {
        let mut h = self.0;
        for &b in part {
            h ^= b as u64;
            h = h.wrapping_mul(Self::PRIME);
        }
        h ^= 0xFF;
        self.0 = h.wrapping_mul(Self::PRIME);
    }

    /// The finished hash.
    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_pinned() {
        // These values are part of the on-disk format and of rollout cohorts: never change them.
        assert_eq!(stable_hash(&[]), fmix64(Fnv::OFFSET));
        assert_eq!(stable_hash(&[b"post", b"42"]), 0xc497_f38e_f01f_7f22);
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        let mut f = Fnv::new();
        f.write(b"post");
        f.write(b"42");
        assert_eq!(f.finish(), stable_hash(&[b"post", b"42"]));
    }
}
