//! The writer lock's queue: order, repair of damaged words, dead and stopped waiters, budgets.

use std::sync::Arc;

use super::*;

fn handles(n: usize) -> (tempfile::TempDir, Vec<WriterLock>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    let locks = (0..n).map(|_| WriterLock::open(&db).unwrap()).collect();
    (dir, locks)
}

/// Takes the lock through `lock` on another thread; fails the test if that hangs.
fn lock_or_fail(lock: WriterLock) -> (WriterLock, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        drop(lock.lock().unwrap());
        let took = started.elapsed();
        let _ = tx.send((lock, took));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the lock was not granted within 10 s")
}

#[test]
fn writers_get_the_lock_in_the_order_they_asked_for_it() {
    let (_dir, locks) = handles(6);
    assert_fifo(locks);
}

/// Five writers queue behind a sixth that holds the lock, which asks again at once on
/// release: the five get it in the order they asked, then the sixth.
fn assert_fifo(mut locks: Vec<WriterLock>) {
    let holder = locks.remove(0);
    let held = holder.lock().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (i, lock) in locks.into_iter().enumerate() {
        let asked = holder.next().load(Ordering::SeqCst);
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            let g = lock.lock().unwrap();
            order.lock().unwrap().push(i);
            drop(g);
        }));
        // The next writer asks only once this one has its place in the queue.
        while holder.next().load(Ordering::SeqCst) == asked {
            std::thread::yield_now();
        }
    }
    // Releasing and asking again at once, the holder is on its CPU while the waiters are
    // still being woken: with `flock` alone it would usually win the race.
    drop(held);
    let again = holder.lock().unwrap();
    order.lock().unwrap().push(99);
    drop(again);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 99]);
}

/// Opens `n` handles on a lock file whose first page was overwritten with `bytes` (the
/// rest zero) before anyone opened it.
fn handles_on_damaged_file(n: usize, bytes: &[u8]) -> (tempfile::TempDir, Vec<WriterLock>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("e.db");
    std::fs::write(sidecar(&db, "-lmsrt-writer"), bytes).unwrap();
    let locks = (0..n).map(|_| WriterLock::open(&db).unwrap()).collect();
    (dir, locks)
}

/// Deterministic garbage (xorshift), so a failure can be replayed.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A lock file whose words say `next` and `serving`, nothing else.
fn words(next: u32, serving: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[NEXT_OFFSET..NEXT_OFFSET + 4].copy_from_slice(&next.to_ne_bytes());
    b[SERVING_OFFSET..SERVING_OFFSET + 4].copy_from_slice(&serving.to_ne_bytes());
    b
}

/// Takes the lock a few times through each handle (a watchdog turns a hang into a failure),
/// then checks that the queue is fair again.
fn recovers(locks: Vec<WriterLock>) {
    let mut back = Vec::new();
    for lock in locks {
        let (lock, _) = lock_or_fail(lock);
        let (lock, _) = lock_or_fail(lock);
        back.push(lock);
    }
    let (next, serving) = (back[0].next(), back[0].serving());
    assert_eq!(next.load(Ordering::SeqCst), serving.load(Ordering::SeqCst));
    assert_fifo(back);
}

#[test]
fn a_lock_file_of_garbage_is_repaired_promptly() {
    for seed in [1, 0x9e37_79b9_7f4a_7c15, 42, 7] {
        let (_dir, locks) = handles_on_damaged_file(6, &garbage(4096, seed));
        recovers(locks);
    }
}

#[test]
fn tickets_a_million_ahead_of_the_turn_are_skipped_at_once() {
    // Without the run skip this takes ~2 ms per dead ticket: about half an hour.
    let (_dir, locks) = handles_on_damaged_file(6, &words(1_000_000, 0));
    recovers(locks);
}

#[test]
fn a_turn_far_ahead_of_the_tickets_is_brought_back() {
    // Every fresh ticket is behind the turn, so without the repair each writer would take
    // and drop a million tickets, or two billion for a turn 2^31 - 1 ahead.
    for (next, serving) in [(0, 1_000_000), (5, 5u32.wrapping_add(u32::MAX / 2))] {
        let (_dir, locks) = handles_on_damaged_file(6, &words(next, serving));
        recovers(locks);
    }
}

#[test]
fn a_dead_run_before_a_live_waiter_is_skipped_up_to_it() {
    let (_dir, locks) = handles(3);
    let [live, b, c] = <[WriterLock; 3]>::try_from(locks).unwrap();
    // A thousand dead tickets, then a live waiter, then b.
    let dead = live.next().fetch_add(1000, Ordering::SeqCst);
    let waiting = live.next().fetch_add(1, Ordering::SeqCst);
    set_ticket_mark(&live.file, waiting, true);
    let skipped = Arc::new(Mutex::new(None));
    let seen = skipped.clone();
    let watcher = std::thread::spawn(move || {
        // The turn jumps from the dead run straight to the live waiter.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let s = c.serving().load(Ordering::SeqCst);
            if s != dead {
                *seen.lock().unwrap() = Some(s);
                return;
            }
            std::thread::yield_now();
        }
    });
    let (_b, _) = lock_or_fail(b);
    watcher.join().unwrap();
    assert_eq!(*skipped.lock().unwrap(), Some(waiting));
    set_ticket_mark(&live.file, waiting, false);
}

#[test]
fn a_lock_held_outside_the_queue_answers_busy_in_bounded_time() {
    let (_dir, locks) = handles(2);
    let [outsider, mut b] = <[WriterLock; 2]>::try_from(locks).unwrap();
    // A process that takes the `flock` without a ticket and keeps it (an older version,
    // or one stopped while holding it).
    assert!(try_flock(&outsider.file, &outsider.path).unwrap());
    b.wait_max = Duration::from_millis(300);
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(b.lock().map(drop));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the wait for a held lock was not bounded");
    assert!(matches!(got, Err(Error::Busy(_))), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Released, the next writer gets it.
    flock(&outsider.file, &outsider.path, false).unwrap();
    lock_or_fail(outsider);
}

#[test]
fn a_ticket_whose_writer_died_before_its_turn_is_skipped() {
    let (_dir, locks) = handles(2);
    // A writer killed while it waited leaves its ticket and loses its mark (the kernel
    // drops it with the process).
    let dead = locks[0].next().fetch_add(1, Ordering::SeqCst);
    let [_, b] = <[WriterLock; 2]>::try_from(locks).unwrap();
    let (b, _) = lock_or_fail(b);
    let now = b.serving().load(Ordering::SeqCst);
    assert_eq!(
        now,
        dead.wrapping_add(2),
        "the dead ticket was skipped and b's turn passed"
    );
}

#[test]
fn a_writer_that_died_holding_the_lock_does_not_hold_up_the_next() {
    let (_dir, locks) = handles(2);
    let [a, b] = <[WriterLock; 2]>::try_from(locks).unwrap();
    // Killed while holding it: the kernel drops the `flock` with the descriptor, and the
    // turn is never passed on.
    std::mem::forget(a.lock().unwrap());
    drop(a);
    lock_or_fail(b);
}

#[test]
fn a_live_writer_that_does_not_take_its_turn_is_waited_for_then_skipped() {
    let (_dir, locks) = handles(2);
    let [stopped, b] = <[WriterLock; 2]>::try_from(locks).unwrap();
    // A stopped process: its ticket is served and marked alive, and it never takes the lock.
    let ticket = stopped.next().fetch_add(1, Ordering::SeqCst);
    set_ticket_mark(&stopped.file, ticket, true);
    let (_b, waited) = lock_or_fail(b);
    assert!(
        waited >= HANDOFF_WAIT_LIVE,
        "a live writer's turn was skipped after {waited:?}"
    );
    // When it resumes, its turn is gone: it queues again.
    assert_eq!(
        stopped
            .wait_turn(ticket, &mut false, Instant::now() + LOCK_WAIT_MAX)
            .unwrap(),
        Turn::Skipped
    );
    set_ticket_mark(&stopped.file, ticket, false);
    lock_or_fail(stopped);
}

#[test]
fn a_waiter_is_marked_alive_until_it_holds_the_lock() {
    let (_dir, locks) = handles(2);
    let [a, b] = <[WriterLock; 2]>::try_from(locks).unwrap();
    let held = a.lock().unwrap();
    let waiter_ticket = a.next().load(Ordering::SeqCst);
    assert!(!ticket_alive(&a.file, waiter_ticket));
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let g = b.lock().unwrap();
        got_tx.send(()).unwrap();
        rx.recv().unwrap(); // hold until told
        drop(g);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ticket_alive(&a.file, waiter_ticket) {
        assert!(
            Instant::now() < deadline,
            "a blocked waiter never marked its ticket"
        );
        std::thread::yield_now();
    }
    drop(held);
    got_rx.recv().unwrap();
    assert!(!ticket_alive(&a.file, waiter_ticket));
    tx.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn tickets_wrap_around() {
    let (_dir, locks) = handles(2);
    locks[0].next().store(u32::MAX - 3, Ordering::SeqCst);
    locks[0].serving().store(u32::MAX - 3, Ordering::SeqCst);
    let taken = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = locks
        .into_iter()
        .map(|lock| {
            let taken = taken.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _g = lock.lock().unwrap();
                    taken.fetch_add(1, Ordering::SeqCst);
                }
                lock
            })
        })
        .collect();
    let locks: Vec<WriterLock> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(taken.load(Ordering::SeqCst), 100);
    let (next, serving) = (locks[0].next(), locks[0].serving());
    assert_eq!(next.load(Ordering::SeqCst), serving.load(Ordering::SeqCst));
    assert_eq!(
        serving.load(Ordering::SeqCst),
        (u32::MAX - 3).wrapping_add(100)
    );
}

/// Runs work under `budget` that reports when it starts and then waits up to `patience` to
/// hear that another writer took the lock (another thread tries once the work started).
/// Returns whether the work heard it, and whether it finished with the lock held.
fn other_writer_during_locked_work(budget: Duration, patience: Duration) -> (bool, bool) {
    let (_dir, locks) = handles(2);
    let [a, b] = <[WriterLock; 2]>::try_from(locks).unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (took_tx, took_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            started_rx.recv().unwrap();
            let _g = b.lock().unwrap();
            let _ = took_tx.send(());
        });
        a.run_locked(Some(budget), move || {
            started_tx.send(()).unwrap();
            took_rx.recv_timeout(patience).is_ok()
        })
        .unwrap()
    })
}

#[test]
fn work_that_outlasts_its_budget_goes_on_without_the_lock() {
    // The work cannot finish (for a minute) until another writer has had the lock, so it
    // hears of it only if the lock was let go at the budget.
    let (heard, in_time) =
        other_writer_during_locked_work(Duration::from_millis(10), Duration::from_secs(60));
    assert!(heard, "the lock was held past the budget");
    assert!(!in_time);
}

#[test]
fn work_within_its_budget_holds_the_lock_throughout() {
    let (heard, in_time) =
        other_writer_during_locked_work(Duration::from_secs(60), Duration::from_millis(300));
    assert!(
        !heard,
        "another writer took the lock while the work held it"
    );
    assert!(in_time);
}

#[test]
fn work_runs_once_and_returns_its_value_when_the_lock_is_held_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let lock = WriterLock::open(&dir.path().join("e.db")).unwrap();
    let runs = std::sync::atomic::AtomicU32::new(0);
    for budget in [None, Some(Duration::from_secs(60))] {
        let (v, in_time) = lock
            .run_locked(budget, || {
                runs.fetch_add(1, Ordering::SeqCst);
                42
            })
            .unwrap();
        assert_eq!((v, in_time), (42, true));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
