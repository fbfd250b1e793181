//! The limiter's unit tests: GCRA exactness, adaptation, blocks, full tables, and the shared
//! and in-process backends deciding alike.

use super::*;
use std::time::Duration;

use crate::clock::ManualClock;

const T0: i64 = 1_700_000_000_000;

fn limiter(actions: &[(&str, ActionLimit)]) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new(T0);
    let mut config = LimiterConfig {
        actions: Vec::new(),
        ..LimiterConfig::default()
    }
    .clock(Arc::new(clock.clone()));
    for (n, l) in actions {
        config = config.action(*n, *l);
    }
    (RateLimiter::in_process(config).unwrap(), clock)
}

fn allowed(l: &RateLimiter, action: &str, key: &str, n: usize) -> usize {
    (0..n)
        .filter(|_| l.check(action, key).unwrap().allowed)
        .count()
}

/// Checks `key` until a check is refused by a block, at most 1,000 times: a key that is never
/// blocked fails the test instead of looping forever.
fn until_blocked(l: &RateLimiter, action: &str, key: &str) -> Decision {
    for _ in 0..1_000 {
        let d = l.check(action, key).unwrap();
        if d.blocked {
            return d;
        }
    }
    panic!("{action} {key:?} was not blocked within 1,000 checks");
}

#[test]
fn burst_then_steady_rate() {
    let (l, clock) = limiter(&[("post", ActionLimit::per_minute(20).fixed())]);
    let first = l.check("post", "u").unwrap();
    assert_eq!(
        (first.allowed, first.limit, first.remaining),
        (true, 20, 19)
    );
    assert_eq!(first.reset_after_ms, 3_000);
    assert_eq!(allowed(&l, "post", "u", 30), 19);
    let d = l.check("post", "u").unwrap();
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_ms),
        (false, 0, 3_000)
    );
    assert_eq!(d.reset_after_ms, 60_000);
    clock.advance_ms(2_999);
    assert!(!l.check("post", "u").unwrap().allowed);
    clock.advance_ms(1);
    assert!(l.check("post", "u").unwrap().allowed);
    assert!(!l.check("post", "u").unwrap().allowed);
    // A full period of rest restores the whole burst, no more.
    clock.advance_ms(600_000);
    assert_eq!(allowed(&l, "post", "u", 100), 20);
}

#[test]
fn keys_and_actions_are_independent() {
    let (l, _) = limiter(&[
        ("post", ActionLimit::per_minute(2).fixed()),
        ("poll", ActionLimit::per_minute(3).fixed()),
    ]);
    assert_eq!(allowed(&l, "post", "a", 10), 2);
    assert_eq!(allowed(&l, "post", "b", 10), 2);
    assert_eq!(allowed(&l, "poll", "a", 10), 3);
}

#[test]
fn cost_and_peek() {
    let (l, _) = limiter(&[("x", ActionLimit::per_minute(10).fixed())]);
    let d = l.check_cost("x", "k", 4).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 6));
    let p = l.peek("x", "k").unwrap();
    assert_eq!((p.allowed, p.remaining), (true, 6));
    assert!(!l.check_cost("x", "k", 7).unwrap().allowed);
    assert!(l.check_cost("x", "k", 6).unwrap().allowed);
    assert!(!l.peek("x", "k").unwrap().allowed);
    assert!(l.check_cost("x", "k", 11).is_err());
    assert!(l.check_cost("x", "k", 0).is_err());
    assert!(l.check("nope", "k").is_err());
    assert!(l.check("x", "").is_err());
    let e = l.check("x", "k").unwrap().into_result().unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::RateLimited);
}

#[test]
fn refusals_tighten_and_time_restores() {
    // 10 per minute, each refusal costs 200 ‰, floor 500 ‰, full recovery in 100 s.
    let limit = ActionLimit::per_minute(10).adaptive(200, 500, Duration::from_secs(100));
    let (l, clock) = limiter(&[("post", limit)]);
    assert_eq!(allowed(&l, "post", "u", 10), 10);
    // Five refusals: reputation 1000 → 0.
    for expected in [800, 600, 400, 200, 0] {
        let d = l.check("post", "u").unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reputation_permille, expected);
    }
    // After a full period of rest the allowance is half the burst, at half the rate.
    clock.advance_ms(60_000);
    let d = l.peek("post", "u").unwrap();
    assert_eq!(d.reputation_permille, 600);
    assert_eq!(d.limit, 8, "factor 800 ‰ at reputation 600 ‰");
    // Recovery continues while the key behaves: after 100 s more it is whole again.
    clock.advance_ms(100_000);
    let d = l.peek("post", "u").unwrap();
    assert_eq!((d.reputation_permille, d.limit), (1000, 10));
    assert_eq!(allowed(&l, "post", "u", 20), 10);
}

#[test]
fn zero_reputation_halves_the_rate() {
    let limit = ActionLimit::per_minute(10).adaptive(1000, 500, Duration::from_secs(3600));
    let (l, clock) = limiter(&[("post", limit)]);
    assert_eq!(allowed(&l, "post", "u", 11), 10);
    // Reputation is now 0 (one refusal at 1000 ‰): a request costs 12 s instead of 6 s.
    clock.advance_ms(6_000);
    let d = l.check("post", "u").unwrap();
    assert!(!d.allowed);
    assert_eq!(d.limit, 5);
    clock.advance_ms(6_000);
    assert!(l.check("post", "u").unwrap().allowed);
}

#[test]
fn repeat_offenders_are_blocked_for_growing_periods() {
    let limit = ActionLimit::per_minute(5)
        .adaptive(500, 200, Duration::from_secs(600))
        .block(
            Duration::from_secs(60),
            Duration::from_secs(300),
            Duration::from_secs(3600),
        );
    let (l, clock) = limiter(&[("ip", limit)]);
    assert_eq!(allowed(&l, "ip", "10.0.0.1", 5), 5);
    // Two refusals take reputation to 0; the third starts a one-minute block.
    assert!(!l.check("ip", "10.0.0.1").unwrap().blocked);
    assert!(!l.check("ip", "10.0.0.1").unwrap().blocked);
    let d = l.check("ip", "10.0.0.1").unwrap();
    assert!(d.blocked && !d.allowed);
    assert_eq!(d.retry_after_ms, 60_000);
    // While blocked nothing passes, even after the rate would allow it.
    clock.advance_ms(59_999);
    let d = l.check("ip", "10.0.0.1").unwrap();
    assert!(d.blocked);
    assert_eq!(d.retry_after_ms, 1);
    // The block expires by itself; the key then has its (reduced) allowance.
    clock.advance_ms(1);
    assert!(l.check("ip", "10.0.0.1").unwrap().allowed);
    // Still at low reputation: the next violations re-block at once, for twice as long.
    let d = until_blocked(&l, "ip", "10.0.0.1");
    assert_eq!(d.retry_after_ms, 120_000);
    clock.advance_ms(120_000);
    let d = until_blocked(&l, "ip", "10.0.0.1");
    assert_eq!(d.retry_after_ms, 240_000);
    clock.advance_ms(240_000);
    let d = until_blocked(&l, "ip", "10.0.0.1");
    assert_eq!(d.retry_after_ms, 300_000, "capped at block_max");
    // Other keys were never affected; an administrator can unblock.
    assert!(l.check("ip", "10.0.0.2").unwrap().allowed);
    l.reset("ip", "10.0.0.1").unwrap();
    assert!(l.check("ip", "10.0.0.1").unwrap().allowed);
    assert_eq!(l.peek("ip", "10.0.0.1").unwrap().reputation_permille, 1000);
}

#[test]
fn block_repeat_count_is_forgotten() {
    let limit = ActionLimit::per_minute(1)
        .adaptive(1000, 1000, Duration::from_secs(1))
        .block(
            Duration::from_secs(10),
            Duration::from_secs(1000),
            Duration::from_secs(100),
        );
    let (l, clock) = limiter(&[("ip", limit)]);
    let strike = |l: &RateLimiter| until_blocked(l, "ip", "k").retry_after_ms;
    assert_eq!(strike(&l), 10_000);
    clock.advance_ms(10_000);
    assert_eq!(strike(&l), 20_000);
    clock.advance_ms(20_000 + 100_000);
    assert_eq!(strike(&l), 10_000, "a quiet spell resets the escalation");
}

#[test]
fn full_table_evicts_stale_keys_then_fails_open() {
    let clock = ManualClock::new(T0);
    let config = LimiterConfig {
        actions: vec![("a".into(), ActionLimit::per_minute(1).fixed())],
        capacity: 64,
        clock: Arc::new(clock.clone()),
    };
    let l = RateLimiter::in_process(config).unwrap();
    // 64 keys fill the table (each now owes a minute).
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
    let mut tracked = 0;
    for k in &keys {
        if l.check("a", k).unwrap().tracked {
            tracked += 1;
        }
    }
    assert_eq!(tracked, 64);
    let s = l.stats();
    assert_eq!((s.used, s.untracked), (64, 2000 - 64));
    // An untracked key is allowed (fail open)...
    let d = l.check("a", "new").unwrap();
    assert!(d.allowed && !d.tracked);
    // ...tracked keys stay limited...
    let tracked_key = keys
        .iter()
        .find(|k| !l.peek("a", k).unwrap().allowed)
        .unwrap();
    assert!(!l.check("a", tracked_key).unwrap().allowed);
    // ...and once the old keys are rested, new keys take their records.
    clock.advance_ms(60_000);
    let d = l.check("a", "new").unwrap();
    assert!(d.tracked);
    assert!(!l.check("a", "new").unwrap().allowed);
}

#[test]
fn threads_share_one_budget_exactly() {
    let (l, _) = limiter(&[("post", ActionLimit::per_minute(1000))]);
    let l = Arc::new(l);
    let total: usize = (0..4)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || allowed(&l, "post", "hot", 2000))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(total, 1000);
}

#[test]
fn shared_tables_agree_between_handles() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let clock = ManualClock::new(T0);
    let config = LimiterConfig::default().clock(Arc::new(clock.clone()));
    let a = RateLimiter::open(&db, config.clone()).unwrap();
    let b = RateLimiter::open(&db, config).unwrap();
    assert_eq!(allowed(&a, "post", "u", 15), 15);
    assert_eq!(allowed(&b, "post", "u", 15), 5);
    assert!(a.path().unwrap().ends_with("x.db-lmsrt-limits"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// A fixed limit never allows more than `burst + elapsed × rate / period` requests, and
    /// a refusal's retry hint is exact to the millisecond.
    #[test]
    fn fixed_limits_are_exact(
        gaps in proptest::collection::vec(0i64..10_000, 1..400),
        rate in 1u32..50,
        burst in 1u32..20,
    ) {
        let (l, clock) = limiter(&[("a", ActionLimit::per_minute(rate).burst(burst).fixed())]);
        let t_ms = 60_000.0 / rate as f64;
        let mut allowed = 0u64;
        let mut elapsed = 0i64;
        for gap in gaps {
            clock.advance_ms(gap);
            elapsed += gap;
            let d = l.check("a", "k").unwrap();
            if d.allowed {
                allowed += 1;
            }
            let bound = burst as f64 + elapsed as f64 / t_ms;
            proptest::prop_assert!(allowed as f64 <= bound + 1e-9, "{} > {}", allowed, bound);
            // A retry at the hint succeeds, a millisecond earlier it would not (peeks).
            if !d.allowed {
                let r = d.retry_after_ms as i64;
                proptest::prop_assert!(r > 0);
                clock.advance_ms(r - 1);
                proptest::prop_assert!(!l.peek("a", "k").unwrap().allowed);
                clock.advance_ms(1);
                proptest::prop_assert!(l.peek("a", "k").unwrap().allowed);
                clock.advance_ms(-r);
            }
        }
    }

    /// The shared and in-process backends run the same code: any sequence of checks and
    /// clock moves gets identical decisions from both.
    #[test]
    fn shared_and_in_process_backends_decide_alike(
        ops in proptest::collection::vec((0usize..3, 0usize..4, 0i64..4_000), 1..300)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let tiny = ActionLimit::per_minute(3)
            .adaptive(300, 200, Duration::from_secs(30))
            .block(Duration::from_secs(1), Duration::from_secs(8), Duration::from_secs(60));
        let config = LimiterConfig {
            capacity: 64,
            ..LimiterConfig::default()
        }
        .action("tiny", tiny)
        .clock(Arc::new(clock.clone()));
        let shared = RateLimiter::open(dir.path().join("p.db"), config.clone()).unwrap();
        let local = RateLimiter::in_process(config).unwrap();
        for (action, key, advance) in ops {
            clock.advance_ms(advance);
            let (a, k) = (["post", "ip", "tiny"][action], format!("k{key}"));
            proptest::prop_assert_eq!(shared.check(a, &k).unwrap(), local.check(a, &k).unwrap());
        }
    }
}

#[test]
fn invalid_limits_are_refused() {
    for bad in [
        ActionLimit::per_minute(0),
        ActionLimit::per_minute(10).burst(0),
        ActionLimit::per_minute(10).adaptive(10, 0, Duration::from_secs(1)),
        ActionLimit::per_minute(10).adaptive(1001, 10, Duration::from_secs(1)),
        ActionLimit::per_minute(10).fixed().block(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
        ),
    ] {
        let config = LimiterConfig::default().action("x", bad);
        assert!(RateLimiter::in_process(config).is_err(), "{bad:?}");
    }
    let config = LimiterConfig::default().action("", ActionLimit::per_minute(1));
    assert!(RateLimiter::in_process(config).is_err());
    let huge = ActionLimit::new(1, Duration::from_secs(300 * 86_400)).burst(1_000_000);
    assert!(RateLimiter::in_process(LimiterConfig::default().action("x", huge)).is_err());
}
