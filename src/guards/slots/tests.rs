//! The slots' unit tests: the cap, release, expiry and renewal, eviction, dead holders, and
//! records handed between keys.

use super::*;
use crate::clock::ManualClock;

const T0: i64 = 1_700_000_000_000;

fn slots(f: impl FnOnce(&mut SlotsConfig)) -> (Slots, ManualClock) {
    let clock = ManualClock::new(T0);
    let mut c = SlotsConfig::default().clock(Arc::new(clock.clone()));
    f(&mut c);
    (Slots::in_process(c).unwrap(), clock)
}

#[test]
fn at_most_n_per_key_and_release_frees() {
    let (s, _) = slots(|_| {});
    let a: Vec<Lease> = (0..3).map(|_| s.acquire("u").unwrap()).collect();
    let e = s.acquire("u").unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::SlotsExhausted);
    assert_eq!(s.count("u").unwrap(), 3);
    assert!(s.acquire("v").is_ok(), "keys are independent");
    assert!(s.release(&a[1]));
    assert!(!s.release(&a[1]), "a second release is a no-op");
    assert!(!s.is_held(&a[1]));
    assert!(s.is_held(&a[0]));
    let b = s.acquire("u").unwrap();
    assert_eq!(b.index, a[1].index);
    assert!(!b.reclaimed);
    assert!(s.acquire("").is_err());
}

#[test]
fn forgotten_leases_expire_and_renewal_keeps_them() {
    let (s, clock) = slots(|c| c.max_per_key = 2);
    let mut kept = s.acquire("u").unwrap();
    let _forgotten = s.acquire("u").unwrap();
    assert_eq!(kept.expires_at_ms, T0 + 35_000);
    clock.advance_ms(20_000);
    assert!(s.renew(&mut kept));
    assert_eq!(kept.expires_at_ms, T0 + 55_000);
    clock.advance_ms(15_000);
    assert_eq!(s.count("u").unwrap(), 1, "the forgotten lease expired");
    let again = s.acquire("u").unwrap();
    assert!(!again.reclaimed);
    assert!(s.acquire("u").is_err());
    clock.advance_ms(20_000);
    assert!(!s.is_held(&kept));
    assert!(!s.renew(&mut kept), "an expired lease cannot be renewed");
}

#[test]
fn evict_oldest_takes_over_the_least_recent_lease() {
    let (s, clock) = slots(|c| c.on_full = OnFull::EvictOldest);
    let first = s.acquire("u").unwrap();
    clock.advance_ms(1_000);
    let mut second = s.acquire("u").unwrap();
    clock.advance_ms(1_000);
    let _third = s.acquire("u").unwrap();
    clock.advance_ms(1_000);
    assert!(s.renew(&mut second));
    let fourth = s.acquire("u").unwrap();
    assert!(fourth.reclaimed);
    assert_eq!(fourth.index, first.index);
    assert!(!s.is_held(&first), "the evicted holder can tell");
    assert!(!s.release(&first));
    assert_eq!(s.count("u").unwrap(), 3);
}

#[test]
fn leases_of_dead_processes_are_reclaimed() {
    let (s, _) = slots(|c| c.max_per_key = 1);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id() as u64;
    child.wait().unwrap();
    // Plant a live lease held by the (reaped) child.
    let held = s.acquire("u").unwrap();
    let word = &s.table.record(held.record as usize)[1 + held.index as usize];
    let planted = pack(dead, 0, held.token & 0xFFFF_FFFF);
    word.store(planted, Ordering::SeqCst);
    let l = s.acquire("u").unwrap();
    assert!(l.reclaimed);
    // Without the pid check, the lease holds until it expires.
    let (s2, _) = slots(|c| {
        c.max_per_key = 1;
        c.check_pid = false;
    });
    let held = s2.acquire("u").unwrap();
    s2.table.record(held.record as usize)[1 + held.index as usize].store(planted, Ordering::SeqCst);
    assert!(s2.acquire("u").is_err());
}

#[test]
fn idle_records_are_handed_to_new_keys_and_a_full_table_fails_closed() {
    let (s, clock) = slots(|c| {
        c.capacity = 64;
        c.max_per_key = 1;
    });
    let held: Vec<Lease> = (0..500)
        .filter_map(|i| s.acquire(&format!("k{i}")).ok())
        .collect();
    assert_eq!(held.len(), 64, "every record holds one key");
    let e = s.acquire("newcomer").unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::SlotsExhausted);
    // Once the leases are given back, records go to new keys.
    for l in &held {
        assert!(s.release(l));
    }
    let l = s.acquire("newcomer").unwrap();
    assert!(s.acquire("newcomer").is_err(), "max 1");
    assert!(s.release(&l));
    // Expired leases count as free too.
    let held: Vec<Lease> = (0..500)
        .filter_map(|i| s.acquire(&format!("j{i}")).ok())
        .collect();
    assert_eq!(held.len(), 64);
    clock.advance_ms(35_000);
    assert!(s.acquire("late").is_ok());
}

#[test]
fn threads_never_exceed_the_cap() {
    let (s, _) = slots(|_| {});
    let s = Arc::new(s);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut max_seen = 0;
                for _ in 0..2000 {
                    if let Ok(l) = s.acquire("hot") {
                        max_seen = max_seen.max(s.count("hot").unwrap());
                        assert!(s.release(&l));
                    }
                }
                max_seen
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() <= 3);
    }
    assert_eq!(s.count("hot").unwrap(), 0);
}

#[test]
fn bad_configs_are_refused() {
    assert!(
        Slots::in_process(SlotsConfig {
            max_per_key: 0,
            ..SlotsConfig::default()
        })
        .is_err()
    );
    assert!(
        Slots::in_process(SlotsConfig {
            max_per_key: 16,
            ..SlotsConfig::default()
        })
        .is_err()
    );
    assert!(
        Slots::in_process(SlotsConfig {
            lease_ms: 10,
            ..SlotsConfig::default()
        })
        .is_err()
    );
}
