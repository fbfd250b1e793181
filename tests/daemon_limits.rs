//! The daemon's protections against a running daemon: connection slots per user, rate limits
//! with `Retry-After`, the total connection cap (with the reserve that keeps `/healthz` and
//! `/metrics` answering), the per-address connection cap, slow clients (header timeout), the store's
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
    wait_for_waiters(d.addr, 3).await;
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
async fn connections_over_the_cap_get_503_but_health_and_metrics_still_answer() {
    let mut cfg = config();
    cfg.max_connections = 3;
    cfg.ops_reserve_connections = 1;
    let d = Daemon::start(cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = d.client().await;
        assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
        held.push(c);
    }
    // Full: anything but /healthz and /metrics gets the 503, on a connection of the reserve.
    let out = raw(
        d.addr,
        b"GET /v1/poll?channels=1 HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("too_many_connections"));
    assert!(out.to_ascii_lowercase().contains("retry-after: 1"));
    // Health checks and scrapes are answered all the same (before: 503 too). Each takes the
    // one reserve connection, which the server frees once it has seen the previous one close:
    // a refusal for that reason is retried (bounded).
    for path in ["/healthz", "/metrics"] {
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        until_answer("HTTP/1.1 200", path, || {
            raw(d.addr, req.as_bytes(), Duration::from_secs(3))
        })
        .await;
    }
    // With the reserve held too (an idle connection), the next is refused at once.
    let idle = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = raw(
        d.addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    drop(idle);
    drop(held);
    // Once the server has seen them close, a request that only the capacity serves (not the
    // ops reserve) is served again: a 404, not the 503.
    until_answer("HTTP/1.1 404", "capacity freed", || {
        raw(
            d.addr,
            b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(3),
        )
    })
    .await;
    let mut c = d.client().await;
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
}

/// Sends `request()` until its answer starts with `want` (every 20 ms, for at most 5 s), for a
/// state the server reaches soon after on its own (a closed connection freed) and that no
/// request can ask about first; panics with `what` and the last answer.
async fn until_answer<F, Fut>(want: &str, what: &str, request: F) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = request().await;
        if out.starts_with(want) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: still {out:?} after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP connection to `addr` from the loopback address `src` (127.0.0.x all reach the host).
async fn connect_from(src: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(addr).await.unwrap()
}

/// Sends a `Connection: close` GET on a fresh connection from `src`; returns the response
/// (everything until the server closes) and how long it took.
async fn get_from(src: &str, addr: std::net::SocketAddr, path: &str) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut s = connect_from(src, addr).await;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

/// One address cannot take every connection: past --max-connections-per-ip its next
/// connection is answered 429 and closed at once, while another address is still served, and
/// /healthz and /metrics answer even when the total is exhausted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let mut cfg = config();
    cfg.max_connections = 6;
    cfg.max_connections_per_ip = 3;
    cfg.ops_reserve_connections = 2;
    let d = Daemon::start(cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", d.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (out, took) = get_from("127.0.0.1", d.addr, "/healthz").await;
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    assert!(out.contains("too_many_connections_from_address"), "{out}");
    assert!(
        took < Duration::from_secs(2),
        "refused quickly, not reaped: {took:?}"
    );
    // Another address is served.
    let (out, _) = get_from("127.0.0.2", d.addr, "/healthz").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Exhaust the total from a second address: 3 + 3 = 6.
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", d.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (out, _) = get_from("127.0.0.3", d.addr, "/v1/poll?channels=1").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("too_many_connections"), "{out}");
    let (out, took) = get_from("127.0.0.3", d.addr, "/healthz").await;
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "/healthz while full: {out}"
    );
    assert!(out.contains("\"connections\":6"), "{out}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (out, _) = get_from("127.0.0.3", d.addr, "/metrics").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("lmsrt_connections_refused_total 1\n"), "{out}");
    // Closed connections free their address's count.
    drop(held);
    until_answer("HTTP/1.1 200", "the address's count freed", || async {
        get_from("127.0.0.1", d.addr, "/healthz").await.0
    })
    .await;
}

/// Behind --trust-proxy every connection is the proxy's: the cap applies to the requests in
/// flight of each forwarded address (a waiting long-poll counts), not to the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_cap_counts_requests_per_forwarded_address() {
    let mut cfg = config();
    cfg.trust_proxy = true;
    cfg.max_connections_per_ip = 2;
    let d = Daemon::start(cfg).await;
    let poll = |uid: i64, xff: &'static str| {
        let addr = d.addr;
        async move {
            let mut c = Client::connect(addr).await;
            let auth = format!("Bearer {}", token(uid, &[1]));
            c.get(
                "/v1/poll?channels=1&timeout=3",
                &[("authorization", &auth), ("x-forwarded-for", xff)],
            )
            .await
        }
    };
    let waiting: Vec<_> = (0..2)
        .map(|i| tokio::spawn(poll(10 + i, "203.0.113.7")))
        .collect();
    wait_for_waiters(d.addr, 2).await;
    let started = Instant::now();
    let r = poll(20, "203.0.113.7").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.code(), "too_many_connections_from_address");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Another forwarded address, over the same proxy, is served; so is /healthz.
    let mut c = d.client().await;
    let auth = format!("Bearer {}", token(30, &[1]));
    let r = c
        .get(
            "/v1/poll?channels=1&timeout=0",
            &[("authorization", &auth), ("x-forwarded-for", "203.0.113.8")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = c
        .get("/healthz", &[("x-forwarded-for", "203.0.113.7")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for w in waiting {
        assert_eq!(w.await.unwrap().status, StatusCode::OK);
    }
    // Answered, they no longer count.
    let r = tokio::time::timeout(Duration::from_secs(1), async {
        let mut c = d.client().await;
        let auth = format!("Bearer {}", token(21, &[1]));
        c.get(
            "/v1/poll?channels=1&timeout=0",
            &[("authorization", &auth), ("x-forwarded-for", "203.0.113.7")],
        )
        .await
    })
    .await
    .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
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

/// A head sent slowly gets one header timeout in all: the time its first bytes took before the
/// lean path could tell it was not a stream counts against hyper's header timeout too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_gets_one_header_timeout_in_all() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.header_timeout = 4;
    let d = Daemon::start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let connected = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Not a stream, but never finished: hyper gets the connection with 1 s left.
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let took = connected.elapsed();
    assert!(buf.is_empty(), "closed without an answer");
    // 4 s after the connect (8 s if hyper started its own timeout when it got the bytes).
    assert!(
        took >= Duration::from_millis(3800) && took < Duration::from_secs(6),
        "{took:?}"
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
    // Each publish its own body: the same signed body twice in one second is one publish (the
    // second is answered as a replay, without touching the store).
    let ev = |n: i64| json!({"event_type": "message_create", "channel_id": 1, "message_id": n});
    d.publish(&mut c, &ev(1)).await;

    let locker = rusqlite::Connection::open(d.dir.path().join("chat.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let began = Instant::now();
    let r = c.publish(&ev(2)).await;
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
    let r = c.publish(&ev(3)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Open now: refused at once without touching the store, emergency mode, Retry-After.
    let began = Instant::now();
    let r = c.publish(&ev(4)).await;
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
    d.publish(&mut c, &ev(5)).await;
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
    wait_for_waiters(d.addr, 60).await;
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
