//! Waits: wake-ups on append, timeouts, close, and waking only the waiters an append matches.

use super::*;

#[test]
fn wait_returns_at_once_when_pending_and_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("w.db"), Config::default()).unwrap());
    s.append(ev("a", 1)).unwrap();
    let b = s
        .wait(&FetchRequest::new([1]), Duration::from_secs(30))
        .unwrap();
    assert_eq!(b.events.len(), 1);
    let cur = b.cursor;
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        s2.wait(&FetchRequest::new([1]).cursor(cur), Duration::from_secs(30))
    });
    std::thread::sleep(Duration::from_millis(50));
    s.append(ev("b", 2)).unwrap(); // another channel: must not end the wait
    let id = s.append(ev("c", 1)).unwrap();
    let b = t.join().unwrap().unwrap();
    assert_eq!(b.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn wait_times_out_with_an_empty_batch_and_a_valid_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = EventStore::open(dir.path().join("w.db"), Config::default()).unwrap();
    s.append(ev("a", 2)).unwrap();
    let b = s
        .wait(&FetchRequest::new([1]), Duration::from_millis(30))
        .unwrap();
    assert!(b.events.is_empty() && !b.gap);
    assert_eq!(b.cursor.lanes(), [1; 4]);
}

#[test]
fn close_wakes_waiters_and_refuses_later_calls() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("c.db"), Config::default()).unwrap());
    let s2 = s.clone();
    let t = std::thread::spawn(move || s2.wait(&FetchRequest::new([1]), Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(50));
    s.close();
    assert_eq!(t.join().unwrap().unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(s.append(ev("a", 1)).unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(
        s.fetch(&FetchRequest::new([1])).unwrap_err().code(),
        ErrorCode::Closed
    );
    s.close(); // idempotent
}

/// Waiters are woken only by events they match: an append to one channel ends exactly the
/// waits on that channel, not the other hundreds.
#[test]
fn only_matching_waiters_wake() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("many.db"), Config::default()).unwrap());
    let head = s.head_cursor().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiters: Vec<_> = (1..=300i64)
        .map(|ch| {
            let s = s.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let r = s.wait(
                    &FetchRequest::new([ch]).cursor(head),
                    Duration::from_secs(60),
                );
                tx.send((ch, r.map(|b| b.events.len()))).unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    s.append(ev("message_create", 77)).unwrap();
    let (ch, n) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((ch, n.unwrap()), (77, 1));
    // Nobody else returned.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    s.close();
    let mut rest = 0;
    while let Ok((_, r)) = rx.recv_timeout(Duration::from_secs(30)) {
        assert_eq!(r.unwrap_err().code(), ErrorCode::Closed);
        rest += 1;
        if rest == 299 {
            break;
        }
    }
    assert_eq!(rest, 299);
    for w in waiters {
        w.join().unwrap();
    }
}
