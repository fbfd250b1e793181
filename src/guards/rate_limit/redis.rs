//! The limiter's Redis backend (see `guards::redis`): one script call per decision, whose raw
//! numbers become the answer through the code the shared table uses.

use super::RateLimiter;
use super::config::Action;
use super::outcome::Outcome;
use crate::guards::redis::{RedisGuards, limit};

/// The script's modes.
pub(super) const PEEK: i64 = 0;
pub(super) const CONSUME: i64 = 1;
pub(super) const RESET: i64 = 2;

/// Largest number sent to the script: Lua numbers are exact below 2^53.
const LUA_MAX: u64 = (1 << 53) - 1;

impl RateLimiter {
    /// Runs one decision (or, with [`RESET`], a reset) of `a` for `key` on Redis. `None` when
    /// Redis failed or is backing off: the caller decides on the local table.
    pub(super) fn run_on_redis(
        &self,
        r: &RedisGuards,
        a: &Action,
        key: &str,
        cost: u32,
        mode: i64,
    ) -> Option<Outcome> {
        let args = self.redis_args(r, a, cost, mode);
        let v = r
            .eval(limit(), &r.key("rl", self.tag(a, key)), &args)
            .ok()?;
        outcome(v, mode)
    }

    /// [`run_on_redis`](Self::run_on_redis), awaited.
    #[cfg(feature = "daemon")]
    pub(super) async fn run_on_redis_async(
        &self,
        r: &RedisGuards,
        a: &Action,
        key: &str,
        cost: u32,
        mode: i64,
    ) -> Option<Outcome> {
        let args = self.redis_args(r, a, cost, mode);
        let v = r
            .eval_async(limit(), &r.key("rl", self.tag(a, key)), &args)
            .await
            .ok()?;
        outcome(v, mode)
    }

    fn redis_args(&self, r: &RedisGuards, a: &Action, cost: u32, mode: i64) -> [i64; 11] {
        let l = &a.limit;
        let n = |v: u64| v.min(LUA_MAX) as i64;
        [
            r.now_arg(&*self.clock),
            cost as i64,
            mode,
            n(a.t),
            n(a.tau),
            l.penalty_permille as i64,
            l.min_allowance_permille as i64,
            n(l.recovery_ms),
            n(l.block_base_ms),
            n(l.block_max_ms),
            n(l.block_forget_ms),
        ]
    }
}

/// The script's reply as an outcome; `None` when it is not one.
fn outcome(v: Vec<i64>, mode: i64) -> Option<Outcome> {
    let v: Vec<u64> = v.into_iter().map(|x| x.max(0) as u64).collect();
    match v[..] {
        [now] if mode == RESET => Some(Outcome::read(now, 0)),
        [now, allowed, tat, retry, p_read, p_after, until, pre] => Some(Outcome {
            now,
            allowed: allowed == 1,
            tat_after: tat,
            retry_units: retry,
            penalty_read: p_read,
            penalty_after: p_after,
            block_until: until,
            pre_blocked: pre == 1,
        }),
        // Not the script's reply (cannot happen unless the script changed under us).
        _ => None,
    }
}
