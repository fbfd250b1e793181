//! `--guards redis` (features `daemon` and `redis`): two daemons on one Redis, or on one Redis
//! Cluster, share a user's connection slots and poll rate, as two hosts behind a load balancer
//! would; with `--guards local` (the default) each daemon counts alone; with Redis down the
//! store breaker still opens (on the daemon's own table) and polls are refused their slot, and
//! both resume when Redis is back; a user at the slot cap re-polls at once; and `--guards
//! redis` with a SQLite `--db` is refused at start-up.
//!
//! The daemons run in this process (as in `daemon_redis.rs`), each over its own `EventStore`
//! and its own guards handle: nothing is shared between them but Redis.

#![cfg(all(feature = "daemon", feature = "redis"))]

mod daemon_common;
mod redis_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use daemon_common::*;
use hyper::StatusCode;
use lms_realtime::daemon::{self, GuardsArg, Spawned};
use lms_realtime::{EventStore, store};
use redis_common::{RedisCluster, RedisServer, RedisUrls};
use serde_json::json;

/// One daemon over its own store handle on `url`.
struct Node {
    store: Arc<EventStore>,
    /// The head when the node started: where its polls start (read once, so a poll needs no
    /// store call of the test's own while Redis is down).
    start: String,
    addr: SocketAddr,
    spawned: Option<Spawned>,
}

impl Node {
    async fn start(url: &str, guards: GuardsArg, state_dir: &std::path::Path) -> Node {
        Node::start_with(url, guards, state_dir, |_| {}).await
    }

    /// [`start`](Self::start), with `tweak` applied to the daemon's settings.
    async fn start_with(
        url: &str,
        guards: GuardsArg,
        state_dir: &std::path::Path,
        tweak: impl FnOnce(&mut daemon::Config),
    ) -> Node {
        let store = Arc::new(EventStore::open_url(url, store::Config::default()).unwrap());
        let mut cfg = daemon::Config {
            db: url.into(),
            guards,
            state_dir: Some(state_dir.to_path_buf()),
            // Eight polls per user, refilled at one a minute: nothing refills during the test.
            poll_rate: 1,
            poll_burst: 8,
            // Short open spells, so traffic resumes within the test once Redis is back.
            breaker_open_ms: 200,
            ..config()
        };
        tweak(&mut cfg);
        let spawned = daemon::spawn(store.clone(), cfg).await.unwrap();
        Node {
            start: store.head_cursor().unwrap().to_string(),
            store,
            addr: spawned.addr,
            spawned: Some(spawned),
        }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.spawned.take() {
            let _ = s.shutdown.send(());
            s.task.await.unwrap().unwrap();
        }
        self.store.close();
    }

    /// A poll by user `uid` on channel 1 from `start`, waiting up to `wait_s`.
    async fn poll(&self, uid: i64, wait_s: u64) -> Reply {
        let cursor = &self.start;
        let mut c = Client::connect(self.addr).await;
        c.poll(
            &token(uid, &[1]),
            &format!("channels=1&cursor={cursor}&timeout={wait_s}"),
        )
        .await
    }

    /// The same poll, from a task of its own (it parks).
    fn park(&self, uid: i64) -> tokio::task::JoinHandle<Reply> {
        let (addr, cursor) = (self.addr, self.start.clone());
        tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.poll(
                &token(uid, &[1]),
                &format!("channels=1&cursor={cursor}&timeout=20"),
            )
            .await
        })
    }
}

/// Two daemons on one fresh store on `server`.
async fn two_daemons(
    server: &impl RedisUrls,
    guards: GuardsArg,
    dir: &std::path::Path,
) -> (Node, Node) {
    let url = server.url();
    (
        Node::start(&url, guards, dir).await,
        Node::start(&url, guards, dir).await,
    )
}

/// Every parked poll is answered (its daemon stopped).
async fn answered_at_shutdown(parked: Vec<tokio::task::JoinHandle<Reply>>) {
    for p in parked {
        tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("a parked poll is answered at shutdown")
            .unwrap();
    }
}

/// Stops both daemons; shutdown must answer every parked poll.
async fn stop_both(mut a: Node, mut b: Node, parked: Vec<tokio::task::JoinHandle<Reply>>) {
    a.stop().await;
    b.stop().await;
    answered_at_shutdown(parked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_redis_guards_share_a_users_slots_and_rate() {
    share_a_users_slots_and_rate(&RedisServer::start(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_a_clusters_guards_share_a_users_slots_and_rate() {
    share_a_users_slots_and_rate(&RedisCluster::start(), 3).await;
}

/// Two daemons with `--guards redis` on a fresh store on `server`: user 7's three slots are
/// held across both, and user 9's poll burst is counted across both. `masters`: how many the
/// guards' decisions go to.
async fn share_a_users_slots_and_rate(server: &impl RedisUrls, masters: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_daemons(server, GuardsArg::Redis, dir.path()).await;

    // User 7 holds 2 polls on A and 1 on B: the 3 slots of --slots-per-user.
    let parked = vec![a.park(7), a.park(7)];
    wait_for_waiters(a.addr, 2).await;
    let mut parked = parked;
    parked.push(b.park(7));
    wait_for_waiters(b.addr, 1).await;
    for node in [&b, &a] {
        let r = node.poll(7, 1).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
        assert_eq!(r.code(), "slots_exhausted", "{}", r.text());
    }
    let r = b.poll(8, 0).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "another user is not affected: {}",
        r.text()
    );

    // User 9's 8 polls are counted across both daemons (timeout=0: each returns at once).
    let mut ok = 0;
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.poll(9, 0).await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(r.code(), "rate_limited", "{}", r.text()),
            s => panic!("poll {i}: {s} {}", r.text()),
        }
    }
    assert_eq!(ok, 8, "the burst is shared, not 8 per daemon");
    let h = Client::connect(a.addr)
        .await
        .get("/healthz", &[])
        .await
        .json();
    assert_eq!(
        h["guards"],
        json!({"kind": "redis", "errors": 0, "up": true, "masters": masters, "masters_down": 0}),
        "{h}"
    );

    stop_both(a, b, parked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_guards_each_daemon_counts_alone() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_daemons(&server, GuardsArg::Local, dir.path()).await;
    let mut parked = vec![a.park(7), a.park(7), a.park(7)];
    wait_for_waiters(a.addr, 3).await;
    assert_eq!(
        a.poll(7, 0).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "A's own cap holds"
    );
    parked.push(b.park(7));
    wait_for_waiters(b.addr, 1).await;
    // The user now holds 4 polls: the cap is per daemon.
    let h = Client::connect(b.addr)
        .await
        .get("/healthz", &[])
        .await
        .json();
    assert_eq!(
        h["guards"],
        json!({"kind": "local", "errors": null, "up": null, "masters": null, "masters_down": null}),
        "{h}"
    );
    stop_both(a, b, parked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_breaker_still_opens_and_everything_resumes() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start(&server.url(), GuardsArg::Redis, dir.path()).await;
    let mut c = Client::connect(a.addr).await;
    // Each publish its own body: a signed body sent again is answered from the replay window.
    let msg = |n: i64| json!({"event_type": "message_create", "channel_id": 1, "data": {"n": n}});
    assert_eq!(c.publish(&msg(0)).await.status, StatusCode::OK);

    server.kill();
    let mut codes = Vec::new();
    for n in 1..=10 {
        let r = c.publish(&msg(n)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        codes.push(r.code());
    }
    assert_eq!(codes[0], "storage", "{codes:?}");
    assert!(
        codes.iter().any(|c| c == "circuit_open"),
        "the store breaker opened although its shared state is unreachable: {codes:?}"
    );
    let r = a.poll(7, 0).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(
        r.code(),
        "slots_exhausted",
        "slots fail closed: {}",
        r.text()
    );

    // The operator sees it: failed shared-guard calls in /healthz and /metrics.
    let h = c.get("/healthz", &[]).await.json();
    assert_eq!(h["guards"]["kind"], "redis", "{h}");
    assert!(h["guards"]["errors"].as_u64().unwrap() > 0, "{h}");
    assert_eq!(
        (
            &h["guards"]["up"],
            &h["guards"]["masters"],
            &h["guards"]["masters_down"]
        ),
        (&json!(false), &json!(1), &json!(1)),
        "{h}"
    );
    let m = c.get("/metrics", &[]).await.text();
    assert!(
        m.lines().any(|l| l == "lmsrt_daemon_guards_masters_down 1"),
        "{m}"
    );
    let errors = m
        .lines()
        .find_map(|l| l.strip_prefix("lmsrt_daemon_guard_errors_total "))
        .unwrap_or_else(|| panic!("no guard error counter in /metrics:\n{m}"));
    assert!(errors.parse::<u64>().unwrap() > 0, "{errors}");

    server.run();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for n in 11.. {
        let published = c.publish(&msg(n)).await.status == StatusCode::OK;
        if published && a.poll(7, 0).await.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "publishes and polls did not resume within 30 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_guards_need_a_redis_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let cfg = daemon::Config {
        db: db.clone(),
        guards: GuardsArg::Redis,
        ..config()
    };
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("--guards redis") && e.contains("redis://"),
        "{e}"
    );
    let store = Arc::new(EventStore::open(&db, store::Config::default()).unwrap());
    // The daemon refuses to start (its task ends with the error at once).
    let spawned = daemon::spawn(store, cfg).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), spawned.task)
        .await
        .expect("the daemon stops at once")
        .unwrap();
    assert!(r.unwrap_err().to_string().contains("--guards redis"));
}

/// With guards in Redis, a user whose polls hold all their slots gets the last one again with
/// each re-poll made at once: the slot of a poll that ended is free by then (a poll gives it
/// back before it is answered), and no release is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_the_slot_cap_re_polls_at_once() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(&server.url(), GuardsArg::Redis, dir.path(), |c| {
        c.poll_burst = 1000;
    })
    .await;
    let parked = vec![node.park(5), node.park(5)];
    wait_for_waiters(node.addr, 2).await;
    let mut c = Client::connect(node.addr).await;
    let query = format!("channels=1&cursor={}&timeout=0", node.start);
    for i in 0..200 {
        let r = c.poll(&token(5, &[1]), &query).await;
        assert_eq!(r.status, StatusCode::OK, "re-poll {i}: {}", r.text());
    }
    node.stop().await;
    answered_at_shutdown(parked).await;
}

/// With guards in Redis, a Redis that stops answering holds up only the requests waiting on
/// it: the serving thread (one, as each shard's is in production) answers the others
/// meanwhile, and the waiting poll is answered once the guards' I/O timeout has passed (its
/// slot refused, as a full table would). With the calls made in line, the thread waited with
/// the poll and `/healthz` was answered after it.
#[test]
fn a_redis_that_stops_answering_holds_up_only_the_requests_waiting_on_it() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (url, state_dir) = (server.url(), dir.path().to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut node = Node::start(&url, GuardsArg::Redis, &state_dir).await;
            tx.send((node.addr, node.start.clone())).unwrap();
            let _ = stop_rx.await;
            node.stop().await;
        });
    });
    let (addr, start) = rx.recv().unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        let query = format!("channels=1&cursor={start}&timeout=0");
        // The guards' connection is open and every script loaded.
        let mut c = Client::connect(addr).await;
        assert_eq!(c.poll(&token(1, &[1]), &query).await.status, StatusCode::OK);

        server.pause();
        let hung = tokio::spawn(async move {
            let r = Client::connect(addr)
                .await
                .poll(&token(2, &[1]), &query)
                .await;
            (r, std::time::Instant::now())
        });
        // Let the poll reach its first guard call.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut h = Client::connect(addr).await;
        let health = h.get("/healthz", &[]).await;
        let health_at = std::time::Instant::now();
        let (poll, poll_at) = hung.await.unwrap();
        server.resume();
        assert!(
            health_at < poll_at,
            "/healthz waited for the poll's guard call: {}",
            health.text()
        );
        assert_eq!(
            poll.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            poll.text()
        );
        assert_eq!(poll.code(), "slots_exhausted", "{}", poll.text());
    });
    stop_tx.send(()).unwrap();
    serving.join().unwrap();
}

/// A poll whose client goes away while it waits gives its slot back (from a task of its own,
/// with the guards in Redis): the user's next poll gets it long before the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_whose_client_left_gives_its_slot_back() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(&server.url(), GuardsArg::Redis, dir.path(), |c| {
        c.poll_burst = 1000;
        // A lease of more than a minute: far beyond the wait below.
        c.poll_timeout = 60;
    })
    .await;
    let mut parked = vec![node.park(7), node.park(7), node.park(7)];
    wait_for_waiters(node.addr, 3).await;
    let r = node.poll(7, 0).await;
    assert_eq!(r.code(), "slots_exhausted", "{}", r.text());
    // One client hangs up (its task, and with it the connection, dropped).
    let left = parked.pop().unwrap();
    left.abort();
    let _ = left.await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = node.poll(7, 0).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.code(), "slots_exhausted", "{}", r.text());
        assert!(
            std::time::Instant::now() < deadline,
            "the slot of the poll whose client left was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await;
    answered_at_shutdown(parked).await;
}

/// With the guards in Redis the address's limit still comes first: requests with a bad token
/// count against it, so a flood of them is refused before any token is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_limit_comes_before_the_token() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_with(&server.url(), GuardsArg::Redis, dir.path(), |c| {
        c.ip_burst = 3;
        c.ip_rate = 1;
    })
    .await;
    let mut c = Client::connect(node.addr).await;
    let query = format!("channels=1&cursor={}&timeout=0", node.start);
    let codes: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(c.poll("not-a-token", &query).await.code());
        }
        v
    };
    assert_eq!(&codes[..3], ["token_malformed"; 3], "{codes:?}");
    assert_eq!(&codes[3..], ["rate_limited"; 2], "{codes:?}");
    node.stop().await;
}
