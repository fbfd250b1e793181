//! The breakers' Redis backend (see `guards::redis`): one script call per check or outcome,
//! whose raw state word and window become the answer through the code the shared table uses.
//! Without the `redis` feature, or for breakers not on Redis, [`Breakers::remote`] answers
//! `None` and the table decides.

use super::{BreakerStatus, Breakers};

/// A breaker operation, as the script numbers them.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) enum Op {
    Check,
    Status,
    Success,
    Failure,
    Reset,
    /// For this many ms.
    ForceOpen(u64),
}

impl Op {
    /// A call's outcome.
    pub(super) fn outcome(failed: bool) -> Op {
        if failed { Op::Failure } else { Op::Success }
    }
}

impl Breakers {
    /// [`check`](Self::check), awaited when the breakers are in Redis.
    #[cfg(all(feature = "redis", feature = "daemon"))]
    pub(crate) async fn check_async(&self, name: &str) -> crate::Result<BreakerStatus> {
        let s = match self.redis.as_deref() {
            Some(r) => on_redis::run_async(self, r, name, Op::Check).await,
            None => None,
        };
        self.checked(name, s)
    }

    /// [`record_success`](Self::record_success) or [`record_failure`](Self::record_failure),
    /// awaited when the breakers are in Redis.
    #[cfg(all(feature = "redis", feature = "daemon"))]
    pub(crate) async fn record_async(
        &self,
        name: &str,
        failed: bool,
    ) -> crate::Result<BreakerStatus> {
        let s = match self.redis.as_deref() {
            Some(r) => on_redis::run_async(self, r, name, Op::outcome(failed)).await,
            None => None,
        };
        self.recorded(name, failed, s)
    }

    /// [`status`](Self::status), awaited when the breakers are in Redis.
    #[cfg(all(feature = "redis", feature = "daemon"))]
    pub(crate) async fn status_async(&self, name: &str) -> crate::Result<BreakerStatus> {
        if let Some(r) = self.redis.as_deref()
            && let Some(s) = on_redis::run_async(self, r, name, Op::Status).await
        {
            return Ok(s);
        }
        // Redis failed (and now backs off): this host's table decides, as `status` would.
        self.with_record(name, |rec, tag, now| self.check_in(rec, tag, now, false))
    }

    /// The answer from Redis; `None` when the breakers are not on Redis, the name is empty
    /// (the table's path reports that), or Redis failed (the local table decides).
    pub(super) fn remote(&self, name: &str, op: Op) -> Option<BreakerStatus> {
        #[cfg(not(feature = "redis"))]
        {
            let _ = (name, op);
            None
        }
        #[cfg(feature = "redis")]
        {
            on_redis::run(self, self.redis.as_deref()?, name, op)
        }
    }
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::{BreakerStatus, Breakers, Op};
    use crate::guards::breaker::BreakerState;
    use crate::guards::breaker::record::Word;
    use crate::guards::redis::{RedisGuards, breaker};
    use crate::guards::stable_hash;
    use crate::metrics::Counter;
    use crate::shm::table::tag_of;

    pub(super) fn run(b: &Breakers, r: &RedisGuards, name: &str, op: Op) -> Option<BreakerStatus> {
        if name.is_empty() {
            return None;
        }
        let (key, args) = call(b, r, name, op);
        let v = r.eval(breaker(), &key, &args).ok()?;
        status(b, v)
    }

    /// [`run`], awaited.
    #[cfg(feature = "daemon")]
    pub(super) async fn run_async(
        b: &Breakers,
        r: &RedisGuards,
        name: &str,
        op: Op,
    ) -> Option<BreakerStatus> {
        if name.is_empty() {
            return None;
        }
        let (key, args) = call(b, r, name, op);
        let v = r.eval_async(breaker(), &key, &args).await.ok()?;
        status(b, v)
    }

    /// The key and the arguments of `op` on breaker `name`.
    fn call(b: &Breakers, r: &RedisGuards, name: &str, op: Op) -> (String, [i64; 11]) {
        let c = &b.config;
        let (code, force_ms) = match op {
            Op::Check => (1, 0),
            Op::Status => (2, 0),
            Op::Success => (3, 0),
            Op::Failure => (4, 0),
            Op::Reset => (5, 0),
            Op::ForceOpen(ms) => (6, ms as i64),
        };
        let args = [
            r.now_arg(&*c.clock),
            code,
            b.bucket_ms as i64,
            c.failure_threshold as i64,
            c.failure_ratio_permille as i64,
            c.min_requests as i64,
            c.open_ms as i64,
            c.max_open_ms as i64,
            c.half_open_probes as i64,
            c.probe_timeout_ms as i64,
            force_ms,
        ];
        let key = r.key("br", tag_of(stable_hash(&[name.as_bytes()])));
        (key, args)
    }

    /// The script's reply as a status; `None` when it is not one.
    fn status(b: &Breakers, v: Vec<i64>) -> Option<BreakerStatus> {
        let v: Vec<u64> = v.into_iter().map(|x| x.max(0) as u64).collect();
        let [now, state, exp, n, time, requests, failures, probe, opened] = v[..] else {
            return None;
        };
        let w = Word {
            state: match state {
                1 => BreakerState::Open,
                2 => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            },
            exp,
            n,
            time,
        };
        let mut s = b.status_of(&w, now, requests, failures);
        s.probe = probe == 1;
        if opened == 1
            && let Some(m) = &b.metrics
        {
            m.incr(Counter::BreakerOpened);
        }
        Some(s)
    }
}
