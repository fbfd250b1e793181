//! The slots' Redis backend (see `guards::redis`): a user's leases are one sorted set (token →
//! expiry), changed by one script call per operation. A lease's token is random (holders on
//! different hosts cannot share a pid space), and its `key_hash` names the set. Holders cannot
//! be probed across hosts, so `check_pid` does not apply: a lease frees itself by expiring.
//! Redis unreachable: nothing can be acquired (fails closed, as a full table does), and a lease
//! cannot be released, renewed or confirmed (it expires in Redis by itself).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Lease, OnFull, Slots};
use crate::error::{Error, Result};
use crate::guards::redis::{RedisGuards, slots};

const ACQUIRE: i64 = 1;
const RELEASE: i64 = 2;
const RENEW: i64 = 3;
const HELD: i64 = 4;
const COUNT: i64 = 5;

impl Slots {
    /// Runs one operation on the lease set of key `tag`; the reply after the time.
    fn call(&self, r: &RedisGuards, op: i64, tag: u64, token: u64) -> Result<Vec<i64>> {
        let args = self.args(r, op, token);
        let v = r.eval(slots(), &r.key("sl", tag), &args)?;
        if v.len() < 2 {
            return Err(Error::Internal(format!("slots script replied {v:?}")));
        }
        Ok(v[1..].to_vec())
    }

    fn args(&self, r: &RedisGuards, op: i64, token: u64) -> [i64; 6] {
        let c = &self.config;
        [
            r.now_arg(&*c.clock),
            op,
            token as i64,
            c.max_per_key as i64,
            c.lease_ms as i64,
            (c.on_full == OnFull::EvictOldest) as i64,
        ]
    }

    /// [`call`](Self::call), awaited.
    #[cfg(feature = "daemon")]
    async fn call_async(&self, r: &RedisGuards, op: i64, tag: u64, token: u64) -> Result<Vec<i64>> {
        let args = self.args(r, op, token);
        let v = r.eval_async(slots(), &r.key("sl", tag), &args).await?;
        if v.len() < 2 {
            return Err(Error::Internal(format!("slots script replied {v:?}")));
        }
        Ok(v[1..].to_vec())
    }

    /// [`acquire_redis`](Self::acquire_redis), awaited.
    #[cfg(feature = "daemon")]
    pub(super) async fn acquire_redis_async(&self, r: &RedisGuards, key: &str) -> Result<Lease> {
        let tag = Self::tag(key)?;
        let token = new_token();
        let reply = self.call_async(r, ACQUIRE, tag, token).await;
        self.leased(key, tag, token, reply)
    }

    /// [`release_redis`](Self::release_redis), awaited.
    #[cfg(feature = "daemon")]
    pub(super) async fn release_redis_async(&self, r: &RedisGuards, lease: &Lease) -> bool {
        lease.token != 0
            && matches!(
                self.call_async(r, RELEASE, lease.key_hash, lease.token)
                    .await
                    .as_deref(),
                Ok([1])
            )
    }

    pub(super) fn acquire_redis(&self, r: &RedisGuards, key: &str) -> Result<Lease> {
        let tag = Self::tag(key)?;
        let token = new_token();
        let reply = self.call(r, ACQUIRE, tag, token);
        self.leased(key, tag, token, reply)
    }

    fn leased(&self, key: &str, tag: u64, token: u64, reply: Result<Vec<i64>>) -> Result<Lease> {
        let exhausted = || Error::SlotsExhausted {
            key: key.to_owned(),
            max: self.config.max_per_key,
        };
        match reply.map_err(|_| exhausted())?[..] {
            [expires, evicted] if expires > 0 => Ok(Lease {
                key_hash: tag,
                record: 0,
                index: 0,
                token,
                expires_at_ms: expires,
                reclaimed: evicted == 1,
            }),
            _ => Err(exhausted()),
        }
    }

    pub(super) fn release_redis(&self, r: &RedisGuards, lease: &Lease) -> bool {
        self.flag(r, RELEASE, lease)
    }

    pub(super) fn renew_redis(&self, r: &RedisGuards, lease: &mut Lease) -> bool {
        match self.call(r, RENEW, lease.key_hash, lease.token).as_deref() {
            Ok([expires]) if *expires > 0 => {
                lease.expires_at_ms = *expires;
                true
            }
            _ => false,
        }
    }

    pub(super) fn is_held_redis(&self, r: &RedisGuards, lease: &Lease) -> bool {
        self.flag(r, HELD, lease)
    }

    pub(super) fn count_redis(&self, r: &RedisGuards, key: &str) -> Result<u32> {
        match self.call(r, COUNT, Self::tag(key)?, 0)?[..] {
            [n] => Ok(n.max(0) as u32),
            ref v => Err(Error::Internal(format!("slots script replied {v:?}"))),
        }
    }

    fn flag(&self, r: &RedisGuards, op: i64, lease: &Lease) -> bool {
        lease.token != 0
            && matches!(
                self.call(r, op, lease.key_hash, lease.token).as_deref(),
                Ok([1])
            )
    }
}

/// A lease token no other lease of any host has: 53 random bits (Lua reads numbers as doubles;
/// the script keeps tokens as text, but a margin costs nothing), never 0.
fn new_token() -> u64 {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let h = SEED
        .get_or_init(RandomState::new)
        .hash_one((n, std::process::id()));
    (h & ((1 << 53) - 1)).max(1)
}
