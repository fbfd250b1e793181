//! The breakers' unit tests: the state machine, the window, backoff, probes, operator
//! switches, and the shared and in-process backends deciding alike.

use super::*;
use crate::clock::ManualClock;

const T0: i64 = 1_700_000_000_000;

fn breakers(f: impl FnOnce(&mut BreakerConfig)) -> (Breakers, ManualClock) {
    let clock = ManualClock::new(T0);
    let mut c = BreakerConfig::default().clock(Arc::new(clock.clone()));
    f(&mut c);
    (Breakers::in_process(c).unwrap(), clock)
}

#[test]
fn consecutive_failures_open_and_success_resets_the_count() {
    let (b, _) = breakers(|_| {});
    for _ in 0..4 {
        b.record_failure("db").unwrap();
    }
    assert_eq!(b.status("db").unwrap().mode, ClientMode::Medium);
    b.record_success("db").unwrap();
    let s = b.status("db").unwrap();
    assert_eq!((s.state, s.consecutive_failures), (BreakerState::Closed, 0));
    for _ in 0..4 {
        b.record_failure("db").unwrap();
    }
    assert!(b.check("db").unwrap().allowed);
    let s = b.record_failure("db").unwrap();
    assert_eq!(
        (s.state, s.allowed, s.mode),
        (BreakerState::Open, false, ClientMode::Emergency)
    );
    let e = b.check("db").unwrap().into_result("db").unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::CircuitOpen);
    // Other breakers are untouched.
    assert_eq!(b.check("other").unwrap().mode, ClientMode::Long);
}

#[test]
fn failure_ratio_over_the_window_opens() {
    let (b, _) = breakers(|c| c.failure_threshold = 100);
    // Alternate outcomes: 50% failures, never two in a row.
    for i in 0..19 {
        if i % 2 == 0 {
            b.record_failure("x").unwrap();
        } else {
            b.record_success("x").unwrap();
        }
    }
    let s = b.status("x").unwrap();
    assert_eq!((s.window_requests, s.window_failures), (19, 10));
    assert_eq!(s.state, BreakerState::Closed, "below min_requests");
    assert_eq!(b.record_failure("x").unwrap().state, BreakerState::Open);

    // 30% failures: not enough to open, but past half the ratio: medium mode.
    let (b, _) = breakers(|c| c.failure_threshold = 100);
    for i in 0..20 {
        if i % 10 < 3 {
            b.record_failure("y").unwrap();
        } else {
            b.record_success("y").unwrap();
        }
    }
    let s = b.status("y").unwrap();
    assert_eq!(
        (s.state, s.mode, s.window_failures),
        (BreakerState::Closed, ClientMode::Medium, 6)
    );
}

#[test]
fn old_outcomes_leave_the_window() {
    let (b, clock) = breakers(|c| c.failure_threshold = 100);
    for _ in 0..10 {
        b.record_failure("y").unwrap();
        b.record_success("y").unwrap();
    }
    assert_eq!(b.status("y").unwrap().window_requests, 20);
    clock.advance_ms(10_000);
    let s = b.record_failure("y").unwrap();
    assert_eq!((s.state, s.window_requests), (BreakerState::Closed, 1));
}

#[test]
fn open_period_doubles_on_each_reopen_up_to_the_cap() {
    let (b, clock) = breakers(|c| {
        c.failure_threshold = 1;
        c.open_ms = 1_000;
        c.max_open_ms = 5_000;
    });
    let s = b.record_failure("x").unwrap();
    assert_eq!((s.retry_after_ms, s.open_period_ms), (1_000, 1_000));
    let mut wait = 1_000;
    for expected in [2_000, 4_000, 5_000, 5_000] {
        clock.advance_ms(wait);
        let p = b.check("x").unwrap();
        assert!(p.allowed && p.probe);
        assert_eq!(
            (p.state, p.mode),
            (BreakerState::HalfOpen, ClientMode::Short)
        );
        let s = b.record_failure("x").unwrap();
        assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, expected));
        clock.advance_ms(expected as i64 - 1);
        assert!(!b.check("x").unwrap().allowed);
        wait = 1;
    }
    clock.advance_ms(wait);
    assert!(b.check("x").unwrap().probe);
    // A success closes and resets the backoff.
    let s = b.record_success("x").unwrap();
    assert_eq!(
        (s.state, s.mode, s.open_period_ms),
        (BreakerState::Closed, ClientMode::Long, 1_000)
    );
    let s = b.record_failure("x").unwrap();
    assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, 1_000));
}

#[test]
fn half_open_admits_limited_probes_and_frees_lost_ones() {
    let (b, clock) = breakers(|c| {
        c.failure_threshold = 1;
        c.half_open_probes = 2;
        c.probe_timeout_ms = 4_000;
    });
    b.record_failure("x").unwrap();
    clock.advance_ms(5_000);
    let st = b.status("x").unwrap();
    assert_eq!(
        (st.state, st.allowed, st.mode),
        (BreakerState::HalfOpen, true, ClientMode::Short)
    );
    assert!(b.check("x").unwrap().probe);
    assert!(b.check("x").unwrap().probe);
    let s = b.check("x").unwrap();
    assert!(!s.allowed && !s.probe);
    assert_eq!((s.state, s.retry_after_ms), (BreakerState::HalfOpen, 4_000));
    // The probes' holders vanish: after the probe timeout new probes are admitted.
    clock.advance_ms(4_000);
    assert!(b.check("x").unwrap().probe);
    assert_eq!(b.record_success("x").unwrap().state, BreakerState::Closed);
}

#[test]
fn late_outcomes_while_open_change_nothing_and_closing_forgets_old_failures() {
    let (b, clock) = breakers(|c| c.failure_threshold = 3);
    for _ in 0..3 {
        b.record_failure("x").unwrap();
    }
    b.record_success("x").unwrap();
    b.record_failure("x").unwrap();
    let s = b.status("x").unwrap();
    assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, 5_000));
    clock.advance_ms(5_000);
    assert!(b.check("x").unwrap().probe);
    b.record_success("x").unwrap();
    // Closing forgets the failures that opened it: only the closing success is counted.
    let s = b.status("x").unwrap();
    assert_eq!((s.state, s.consecutive_failures), (BreakerState::Closed, 0));
    assert_eq!((s.window_requests, s.window_failures), (1, 0));
    b.record_failure("x").unwrap();
    assert_eq!(b.status("x").unwrap().state, BreakerState::Closed);
}

#[test]
fn clocks_near_zero_and_clocks_that_disagree_are_harmless() {
    let clock = ManualClock::new(0);
    let b = Breakers::in_process(BreakerConfig::default().clock(Arc::new(clock.clone()))).unwrap();
    // A process whose clock is far ahead writes a bucket; ours, near zero, reads it.
    clock.set_ms(65_530_000);
    b.record_failure("x").unwrap();
    clock.set_ms(3_000);
    let s = b.status("x").unwrap();
    assert_eq!(s.window_requests, 0);
    b.record_success("x").unwrap();
    assert_eq!(b.status("x").unwrap().state, BreakerState::Closed);
}

#[test]
fn operator_switches() {
    let (b, clock) = breakers(|_| {});
    let s = b.force_open("x", 60_000).unwrap();
    assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, 60_000));
    clock.advance_ms(1_000);
    assert_eq!(b.reset("x").unwrap().state, BreakerState::Closed);
    assert!(b.check("x").unwrap().allowed);
    assert!(b.check("").is_err());
}

#[test]
fn shared_file_is_seen_by_other_handles() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let clock = ManualClock::new(T0);
    let cfg = BreakerConfig::default().clock(Arc::new(clock.clone()));
    let a = Breakers::open(&db, cfg.clone()).unwrap();
    let b = Breakers::open(&db, cfg).unwrap();
    for _ in 0..5 {
        a.record_failure("store").unwrap();
    }
    assert_eq!(b.check("store").unwrap().state, BreakerState::Open);
    assert!(a.path().unwrap().ends_with("b.db-lmsrt-breakers"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// The shared and in-process backends decide alike for any sequence of checks,
    /// outcomes and clock moves.
    #[test]
    fn shared_and_in_process_backends_agree(
        ops in proptest::collection::vec((0usize..2, 0u8..3, 0i64..3_000), 1..300)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let config = BreakerConfig {
            failure_threshold: 3,
            min_requests: 5,
            open_ms: 1_000,
            max_open_ms: 8_000,
            half_open_probes: 2,
            probe_timeout_ms: 2_000,
            capacity: 64,
            ..BreakerConfig::default()
        }
        .clock(Arc::new(clock.clone()));
        let shared = Breakers::open(dir.path().join("p.db"), config.clone()).unwrap();
        let local = Breakers::in_process(config).unwrap();
        for (name, op, advance) in ops {
            clock.advance_ms(advance);
            let name = ["a", "b"][name];
            let run = |b: &Breakers| match op {
                0 => b.check(name).unwrap(),
                1 => b.record_success(name).unwrap(),
                _ => b.record_failure(name).unwrap(),
            };
            proptest::prop_assert_eq!(run(&shared), run(&local));
        }
    }
}

#[test]
fn state_word_round_trips() {
    for state in [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ] {
        let w = Word {
            state,
            exp: 31,
            n: 127,
            time: TIME_MASK,
        };
        assert_eq!(Word::decode(w.encode(0xAB), 0xAB), w);
        assert_eq!(Word::decode(w.encode(0xAB), 0xAC), Word::ZERO);
    }
}

#[test]
fn bad_configs_are_refused() {
    for f in [
        (|c: &mut BreakerConfig| c.failure_threshold = 0) as fn(&mut BreakerConfig),
        |c| c.failure_threshold = 200,
        |c| c.half_open_probes = 0,
        |c| c.max_open_ms = 1,
        |c| c.window_ms = 1,
    ] {
        let mut c = BreakerConfig::default();
        f(&mut c);
        assert!(Breakers::in_process(c).is_err());
    }
}
