//! The daemon's protections against a running daemon: connection slots per user, rate limits
//! with `Retry-After`, the total connection cap, slow clients (header timeout), the store's
//! circuit breaker (a locked store answers 503 with a mode hint and recovers by itself), and
//! graceful shutdown answering every waiter at once with its cursor.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::*;
use hyper::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_concurrent_poll_of_a_user_is_refused() {
    let d = Daemon::start(config()).await;
    let t = token(42, &[1]);
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let addr = d.addr;
        let t = t.clone();
        waiting.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.poll(&t, "channels=1&cursor=999999&timeout=3").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut c = d.client().await;
    let r = c.poll(&t, "channels=1&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "slots_exhausted")
    );
    assert!(r.header("retry-after").is_some());
    // Another user is not affected.
    assert_eq!(
        c.poll(&token(43, &[1]), "channels=1&timeout=0")
            .await
            .status,
        StatusCode::OK
    );
    for w in waiting {
        assert_eq!(w.await.unwrap().status, StatusCode::OK);
    }
    // Slots come back when the polls end.
    assert_eq!(
        c.poll(&t, "channels=1&timeout=0").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let mut cfg = config();
    cfg.poll_rate = 60;
    cfg.poll_burst = 3;
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let t = token(9, &[1]);
    for _ in 0..3 {
        assert_eq!(
            c.poll(&t, "channels=1&timeout=0").await.status,
            StatusCode::OK
        );
    }
    let r = c.poll(&t, "channels=1&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    assert!(r.json()["retry_ms"].as_u64().unwrap() > 0);

    // Per IP, with the DDoS block: one address hammering with bad tokens gets blocked.
    let mut cfg = config();
    cfg.ip_rate = 60;
    cfg.ip_burst = 5;
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(c.poll("bad", "channels=1&timeout=0").await.status);
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS);
    let r = c.poll(&token(1, &[1]), "channels=1&timeout=0").await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even a good token, from a blocked IP"
    );
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        secs >= 30,
        "blocked for a while, not one emission interval: {secs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503() {
    let mut cfg = config();
    cfg.max_connections = 3;
    let d = Daemon::start(cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = d.client().await;
        assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
        held.push(c);
    }
    let out = raw(
        d.addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("too_many_connections"));
    assert!(out.to_ascii_lowercase().contains("retry-after: 1"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = d.client().await;
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.header_timeout = 1;
    cfg.idle_timeout = 1;
    let d = Daemon::start(cfg).await;
    // Headers that never finish (slowloris): closed after the header timeout.
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let began = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // An idle kept-alive connection is closed too.
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let began = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert!(began.elapsed() < Duration::from_secs(4));
    // A body that never arrives: 408.
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// A real store failure, not an injected one: another connection to the same SQLite file (as
/// the sqlite3 shell or a stuck migration would) holds the write lock with `BEGIN EXCLUSIVE`.
/// It does not take the library's writer lock, so each append waits out SQLite's busy handler
/// (about 2 s) and fails with `busy`; the breaker opens, clients are told to back off, and
/// once the lock is released the daemon recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_opens_the_breaker_and_recovers() {
    let mut cfg = config();
    cfg.breaker_failures = 2;
    cfg.breaker_open_ms = 400;
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let t = token(5, &[1]);
    let ev = json!({"event_type": "message_create", "channel_id": 1});
    d.publish(&mut c, &ev).await;

    let locker = rusqlite::Connection::open(d.dir.path().join("chat.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let began = Instant::now();
    let r = c.publish(&ev).await;
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "the append waited for the lock ({:?})",
        began.elapsed()
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    assert!(r.header("x-lms-mode").is_some(), "a mode hint");
    assert!(!r.text().contains("locked"), "internals are not echoed");
    let r = c.publish(&ev).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Open now: refused at once without touching the store, emergency mode, Retry-After.
    let began = Instant::now();
    let r = c.publish(&ev).await;
    assert!(began.elapsed() < Duration::from_millis(300));
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "circuit_open")
    );
    assert_eq!(r.header("x-lms-mode"), Some("emergency"));
    assert_eq!(r.json()["error"]["mode"], "emergency");
    assert_eq!(r.header("retry-after"), Some("1"));
    // A poll that needs the store (a cursor from another database: the fan-out's memory
    // cannot serve it) is refused the same way.
    let foreign = "channels=1&timeout=0&cursor=v1.00000001.0.0.0.0";
    let r = c.poll(&t, foreign).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["mode"], "emergency");
    let h = c.get("/healthz", &[]).await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.json()["store"]["breaker"], "open");

    // The lock is released: after the open period a probe goes through and closes it.
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.poll(&t, foreign).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        ids(&r.json()).len(),
        1,
        "nothing acknowledged was lost, nothing refused was stored"
    );
    assert_eq!(r.json()["gap"], true, "another database's cursor is a gap");
    assert_eq!(r.json()["mode"], "long");
    d.publish(&mut c, &ev).await;
    assert_eq!(
        c.get("/healthz", &[]).await.json()["store"]["breaker"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_waiter_at_once_with_its_cursor() {
    let mut d = Daemon::start(config()).await;
    let mut p = d.client().await;
    d.publish(
        &mut p,
        &json!({"event_type": "message_create", "channel_id": 1}),
    )
    .await;
    let head = d.store.head_cursor().unwrap().to_string();
    let mut waiting = Vec::new();
    for i in 0..60 {
        let addr = d.addr;
        let head = head.clone();
        waiting.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let r = c
                .poll(
                    &token(1000 + i, &[1]),
                    &format!("channels=1&cursor={head}&timeout=10"),
                )
                .await;
            (r.status, r.json(), Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let began = Instant::now();
    d.stop().await;
    let stopped = began.elapsed();
    assert!(
        stopped < Duration::from_secs(2),
        "run returned after {stopped:?}"
    );
    for w in waiting {
        let (status, v, at) = w.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(at.duration_since(began) < Duration::from_secs(1));
        assert_eq!(
            v["cursor"].as_str().unwrap(),
            head,
            "the cursor to resume from"
        );
        assert!(ids(&v).is_empty());
    }
    // Nothing accepts connections any more.
    assert!(tokio::net::TcpStream::connect(d.addr).await.is_err());
}
