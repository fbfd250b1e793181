//! How a Redis store connects (feature `redis`), on servers these tests start: a 3-master Redis
//! Cluster (`redis+cluster://` seeds; the store's keys all in one slot; a slot moved under a
//! live store, through `ASK` then `MOVED`), TLS (`rediss://` with a private CA made here with
//! `openssl`, a wrong CA refused, a client certificate), and `WAIT` for replicas
//! (`wait_replicas`: acknowledged means the replica has it; a replica gone is a `Storage` error
//! by the timeout).

#![cfg(feature = "redis")]

mod redis_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lms_realtime::clock::ManualClock;
use lms_realtime::{Config, ErrorCode, EventStore, FetchRequest, NewEvent, Priority};
use redis_common::{RedisCluster, RedisServer, make_ca, make_cert};

fn ids(b: &lms_realtime::Batch) -> Vec<i64> {
    b.events.iter().map(|e| e.id).collect()
}

fn msg(channel: i64) -> NewEvent {
    NewEvent::new("message_create", channel)
}

/// The store name in a test URL (`?store=NAME`).
fn store_name(url: &str) -> String {
    url.split("store=").nth(1).unwrap().to_owned()
}

/// Waits (10 s at most) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ids a subscriber was handed.
fn subscribe(s: &EventStore) -> (Arc<Mutex<Vec<i64>>>, lms_realtime::Subscription) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    let sub = s
        .subscribe(move |b| into.lock().unwrap().extend(b.events.iter().map(|e| e.id)))
        .unwrap();
    (seen, sub)
}

/// The contract's everyday calls through two handles on `url` (two hosts): appends, a fetch, a
/// wait woken by the other handle's append, a subscriber, idempotency, a consumer cursor and a
/// purge (which touches lane keys its script is not given: on a cluster, legal only because
/// they share the slot).
fn exercise(url: &str) {
    let clock = ManualClock::new(1_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let a = EventStore::open_url(url, cfg.clone()).unwrap();
    let b = EventStore::open_url(url, cfg).unwrap();
    let (seen, _sub) = subscribe(&b);

    let first = a.append_batch(vec![msg(1), msg(2), msg(1)]).unwrap();
    assert_eq!(first, vec![1, 2, 3]);
    let got = b.fetch(&FetchRequest::new([1])).unwrap();
    assert_eq!(ids(&got), vec![1, 3]);
    assert!(!got.gap);

    let cursor = got.cursor;
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let r = b.wait(
            &FetchRequest::new([1]).cursor(cursor),
            Duration::from_secs(20),
        );
        (r.map(|x| ids(&x)), started.elapsed(), b)
    });
    std::thread::sleep(Duration::from_millis(200));
    let woke_by = a.append(msg(1)).unwrap();
    let (woken, took, b) = waiter.join().unwrap();
    assert_eq!(woken.unwrap(), vec![woke_by]);
    assert!(
        took < Duration::from_secs(10),
        "the wait was not woken by the append ({took:?})"
    );

    let k = || msg(5).idempotency_key("k-1");
    let id = a.append(k()).unwrap();
    assert_eq!(b.append(k()).unwrap(), id, "a retry returns the first id");
    let head = a.head_cursor().unwrap();
    let e = b
        .append_batch(vec![msg(6), k().data(r#"{"other":1}"#)])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::IdempotencyConflict, "{e}");
    assert_eq!(
        a.head_cursor().unwrap(),
        head,
        "nothing of the batch written"
    );

    a.commit_cursor("indexer", &head).unwrap();
    assert_eq!(b.load_cursor("indexer").unwrap(), Some(head));

    let all: Vec<i64> = (1..=id).collect();
    eventually("the subscriber got every event once, in order", || {
        *seen.lock().unwrap() == all
    });

    let short = a.append(msg(7).ttl(Duration::from_secs(1))).unwrap();
    clock.advance_ms(1_500);
    assert_eq!(a.purge_expired(usize::MAX).unwrap(), 1);
    let after = b.fetch(&FetchRequest::new([7])).unwrap();
    assert!(
        after.events.is_empty() && after.gap,
        "event {short} purged: a gap"
    );
}

// ---- Redis Cluster ----

#[test]
fn a_store_on_a_cluster_keeps_the_contract_with_all_its_keys_in_one_slot() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    exercise(&url);

    let name = store_name(&url);
    let tag_key = format!("lmsrt:{{{name}}}:meta");
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", &tag_key])
        .parse()
        .unwrap();
    let owner = cluster.owner(slot);
    let keys = cluster.nodes[owner].cli(&["--scan", "--pattern", &format!("lmsrt:{{{name}}}:*")]);
    let keys: Vec<&str> = keys.lines().collect();
    // meta, seq, lanes, exp, idem, cursors, purged and the lane streams written.
    assert!(keys.len() >= 8, "keys on the owner: {keys:?}");
    for k in &keys {
        assert_eq!(
            cluster.nodes[owner].cli(&["CLUSTER", "KEYSLOT", k]),
            slot.to_string(),
            "{k} is in another slot"
        );
    }
    assert_eq!(
        cluster.nodes[owner].cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]),
        keys.len().to_string()
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        if i != owner {
            assert_eq!(n.cli(&["DBSIZE"]), "0", "node {i} holds keys of the store");
        }
    }
}

#[test]
fn one_seed_that_does_not_hold_the_slot_is_enough_and_a_plain_url_is_not() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let name = store_name(&url);
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", &format!("lmsrt:{{{name}}}:x")])
        .parse()
        .unwrap();
    let other = (cluster.owner(slot) + 1) % 3;
    let port = cluster.nodes[other].port();
    let one_seed = format!("redis+cluster://127.0.0.1:{port}?store={name}");
    let s = EventStore::open_url(&one_seed, Config::default()).unwrap();
    let id = s.append(msg(1)).unwrap();
    assert_eq!(ids(&s.fetch(&FetchRequest::new([1])).unwrap()), vec![id]);
    // `redis://` to a node without the slot: its MOVED is not followed, and says so.
    let plain = format!("redis://127.0.0.1:{port}/0?store={name}");
    let e = EventStore::open_url(&plain, Config::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage);
    assert!(e.to_string().to_lowercase().contains("moved"), "{e}");
}

#[test]
fn a_live_store_follows_its_slot_to_another_master_through_ask_and_moved() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let name = store_name(&url);
    let s = EventStore::open_url(&url, Config::default()).unwrap();
    let other_host = EventStore::open_url(&url, Config::default()).unwrap();
    let (seen, _sub) = subscribe(&other_host);
    // Every key the append and the fetch of channel 1 below touch exists before the move (the
    // idempotency hash, channel 1's four lanes): mid-migration, Redis serves a multi-key call
    // on the importing node only when it holds every key (otherwise TRYAGAIN; below).
    let before = s
        .append_batch(vec![
            msg(1).idempotency_key("pre").priority(Priority::Critical),
            msg(1).priority(Priority::High),
            msg(1).priority(Priority::Normal),
            msg(1).priority(Priority::Low),
        ])
        .unwrap();

    let slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &format!("{{{name}}}")]);
    let from = cluster.owner(slot.parse().unwrap());
    let to = (from + 1) % 3;
    let (from_id, to_id) = (cluster.node_id(from), cluster.node_id(to));
    let (src, dst) = (&cluster.nodes[from], &cluster.nodes[to]);
    assert_eq!(
        dst.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
        "OK"
    );
    assert_eq!(
        src.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
        "OK"
    );
    let keys = src.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(!keys.is_empty());
    let port = dst.port().to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(&keys);
    assert_eq!(src.cli(&migrate), "OK");

    // Mid-migration: every key is on the importing node, the slot still the source's. The
    // source answers ASK; the store follows it for each call.
    let during = s.append(msg(1).priority(Priority::Critical)).unwrap();
    // A fetch mid-move is right or a Storage error (its second step, a non-atomic pipeline,
    // is half covered by ASKING; a key it names may not exist yet), never wrong, never hung.
    let mut want = before.clone();
    want.insert(1, during);
    let started = Instant::now();
    match s.fetch(&FetchRequest::new([1])) {
        Ok(b) => assert_eq!(ids(&b), want),
        Err(e) => assert_eq!(e.code(), ErrorCode::Storage, "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    for n in &cluster.nodes {
        assert_eq!(n.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]), "OK");
    }
    // Done: the source answers MOVED, and the store moves to the new master for good.
    let after = s.append(msg(2)).unwrap();
    assert_eq!(ids(&s.fetch(&FetchRequest::new([1])).unwrap()), want);
    let b = other_host.fetch(&FetchRequest::new([2])).unwrap();
    assert_eq!(ids(&b), vec![after]);
    assert_eq!(
        src.cli(&["DBSIZE"]),
        "0",
        "nothing written on the old master"
    );
    let mut all = before.clone();
    all.extend([during, after]);
    eventually("the subscriber got every event, across the move", || {
        *seen.lock().unwrap() == all
    });
}

#[test]
fn a_master_failover_keeps_every_append_acknowledged_with_wait_replicas() {
    let mut cluster = RedisCluster::start_with_replicas();
    let url = format!("{}&wait_replicas=1&wait_timeout_ms=2000", cluster.url());
    let name = store_name(&url).split('&').next().unwrap().to_owned();
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", &format!("{{{name}}}")])
        .parse()
        .unwrap();
    let s = EventStore::open_url(&url, Config::default()).unwrap();
    let other_host = EventStore::open_url(&url, Config::default()).unwrap();
    let (seen, _sub) = subscribe(&other_host);
    let acked: Vec<i64> = (0..20)
        .map(|i| s.append(msg(1).idempotency_key(format!("a{i}"))).unwrap())
        .collect();

    let old = cluster.owner(slot);
    cluster.nodes[old].kill();
    let started = Instant::now();
    let new = loop {
        match cluster.serving(slot) {
            Some(n) => break n,
            None => assert!(
                started.elapsed() < Duration::from_secs(30),
                "no replica took the slot over within 30 s"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(new, old);
    // The new master has no replica yet: an append is written there but not acknowledged.
    let e = s.append(msg(1).idempotency_key("after")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    // The old master comes back as the new one's replica; the same key is retried, as a
    // caller would: the first attempt's event, acknowledged now, once.
    cluster.nodes[old].run();
    let started = Instant::now();
    let after = loop {
        match s.append(msg(1).idempotency_key("after")) {
            Ok(id) => break id,
            Err(e) => assert_eq!(e.code(), ErrorCode::Storage, "{e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the append was not acknowledged within 30 s of the replica's return"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after, acked[acked.len() - 1] + 1);
    let b = other_host.fetch(&FetchRequest::new([1])).unwrap();
    let mut want = acked.clone();
    want.push(after);
    assert_eq!(
        ids(&b),
        want,
        "every acknowledged append survived the failover"
    );
    assert!(!b.gap);
    eventually(
        "the subscriber got every event, across the failover",
        || *seen.lock().unwrap() == want,
    );
}

// ---- TLS ----

#[test]
fn rediss_with_a_private_ca_works_and_a_wrong_or_missing_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_ca(d, "other-ca");
    make_cert(d, "ca", "server");
    let server = RedisServer::start_tls_in(d, false);
    let base = format!("rediss://127.0.0.1:{}/0", server.port());
    let ca = d.join("ca.pem").to_string_lossy().into_owned();

    exercise(&format!("{base}?store=tls1&tls_ca={ca}"));

    for (url, why) in [
        (
            format!(
                "{base}?store=tls2&tls_ca={}",
                d.join("other-ca.pem").display()
            ),
            "a CA that did not sign the server's certificate",
        ),
        (format!("{base}?store=tls3"), "the system's roots"),
    ] {
        let e = EventStore::open_url(&url, Config::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Storage, "{why}: {e}");
        assert!(
            e.to_string().contains("certificate"),
            "{why}: the error says why: {e}"
        );
    }
    // Plain TCP to a TLS port is no answer either (nothing hangs past the I/O timeout).
    let started = Instant::now();
    let e = EventStore::open_url(
        &format!("redis://127.0.0.1:{}/0?store=tls4", server.port()),
        Config::default(),
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_store_on_a_tls_cluster_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_cert(dir.path(), "ca", "server");
    let cluster = RedisCluster::start_tls_in(dir.path());
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    // The seeds answer CLUSTER SLOTS with their TLS ports; every node is reached over TLS.
    exercise(&url);
    // A plain-text cluster URL gets no answer from TLS-only nodes: refused, not hung.
    let plain = url.replacen("rediss+cluster://", "redis+cluster://", 1);
    let plain = plain.split("&tls_ca=").next().unwrap();
    let e = EventStore::open_url(plain, Config::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
}

#[test]
fn a_server_that_asks_for_a_client_certificate_gets_one_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_cert(d, "ca", "server");
    make_cert(d, "ca", "client");
    let server = RedisServer::start_tls_in(d, true);
    let f = |n: &str| d.join(n).to_string_lossy().into_owned();
    let base = format!(
        "rediss://127.0.0.1:{}/0?store=mtls&tls_ca={}",
        server.port(),
        f("ca.pem")
    );
    let with_cert = format!(
        "{base}&tls_cert={}&tls_key={}",
        f("client.pem"),
        f("client.key")
    );
    let s = EventStore::open_url(&with_cert, Config::default()).unwrap();
    let id = s.append(msg(1)).unwrap();
    assert_eq!(ids(&s.fetch(&FetchRequest::new([1])).unwrap()), vec![id]);
    let e = EventStore::open_url(&base, Config::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
}

// ---- WAIT ----

/// A master and one replica of it, the replica in sync.
fn master_and_replica() -> (RedisServer, RedisServer) {
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port]);
    wait_in_sync(&replica);
    (master, replica)
}

fn wait_in_sync(replica: &RedisServer) {
    eventually("the replica is in sync", || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
}

#[test]
fn wait_replicas_acknowledges_what_the_replica_has_and_fails_typed_without_it() {
    let (master, mut replica) = master_and_replica();
    let base = format!("redis://127.0.0.1:{}/0", master.port());
    // What must be acknowledged gets a timeout no busy host reaches; what must fail, a short one.
    exercise(&format!(
        "{base}?store=w0&wait_replicas=1&wait_timeout_ms=10000"
    ));
    let url = format!("{base}?store=w1&wait_replicas=1&wait_timeout_ms=300");
    let patient = EventStore::open_url(
        &format!("{base}?store=w1&wait_replicas=1&wait_timeout_ms=10000"),
        Config::default(),
    )
    .unwrap();

    let s = EventStore::open_url(&url, Config::default()).unwrap();
    let id = patient.append(msg(3)).unwrap();
    // Acknowledged: the replica has it already, not eventually.
    assert_eq!(replica.cli(&["GET", "lmsrt:{w1}:seq"]), id.to_string());
    let cursor = s.head_cursor().unwrap();

    replica.kill();
    let started = Instant::now();
    let e = s.append(msg(3).idempotency_key("after-kill")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(e.to_string().contains("may or may not survive"), "{e}");
    // Bounded by the WAIT timeout plus the I/O timeout: nothing hangs.
    assert!(took < Duration::from_millis(300 + 2_000), "took {took:?}");
    assert_eq!(
        s.commit_cursor("c", &cursor).unwrap_err().code(),
        ErrorCode::Storage
    );
    // Reads do not wait for replicas.
    let b = s.fetch(&FetchRequest::new([3])).unwrap();
    assert_eq!(b.events.len(), 2, "the unreplicated write is on the master");

    // Two replicas asked, one there: never enough.
    replica.run();
    wait_in_sync(&replica);
    let two = EventStore::open_url(
        &format!("{base}?store=w1&wait_replicas=2&wait_timeout_ms=100"),
        Config::default(),
    )
    .unwrap();
    assert_eq!(two.append(msg(3)).unwrap_err().code(), ErrorCode::Storage);
    // The retry with the same key writes nothing new and is acknowledged now that the replica
    // is back: its WAIT covers the first attempt's write.
    let again = patient
        .append(msg(3).idempotency_key("after-kill"))
        .unwrap();
    assert_eq!(again, id + 1);
    // The idempotency record (`id|fingerprint`) travels in the same script as the event.
    assert!(
        replica
            .cli(&["HGET", "lmsrt:{w1}:idem", "after-kill"])
            .starts_with(&format!("{again}|")),
        "the replica lacks the acknowledged append {again}"
    );
}

/// The store's and the guards' connections open without `CLIENT SETINFO`: a connection's
/// set-up waits for each of its replies, so against a node that stopped answering every extra
/// reply was another I/O timeout before the call itself (a guard's first call to a hung master
/// took twice its 250 ms). Redis 7.2 and later show a connection's `lib-name` in `CLIENT LIST`
/// once set; older ones refuse the command, which `INFO errorstats` counts as an `ERR`.
#[test]
fn connections_open_without_client_setinfo() {
    let redis = RedisServer::start();
    let url = redis.url();
    let store = EventStore::open_url(&url, Config::default()).unwrap();
    store.append(msg(1)).unwrap();
    let guards = Arc::new(lms_realtime::guards::RedisGuards::open(&url).unwrap());
    let slots = lms_realtime::guards::Slots::on_redis(
        guards,
        lms_realtime::guards::SlotsConfig {
            check_pid: false,
            ..Default::default()
        },
    )
    .unwrap();
    slots.acquire("u1").unwrap();
    let list = redis.cli(&["CLIENT", "LIST"]);
    // This process's connections and redis-cli's own (which names itself neither).
    assert!(list.lines().count() >= 3, "{list}");
    assert!(
        !list.contains("lib-name=redis-rs"),
        "a connection sent CLIENT SETINFO:\n{list}"
    );
    let errors = redis.cli(&["INFO", "errorstats"]);
    assert!(
        !errors.contains("errorstat_ERR:"),
        "a command was refused (CLIENT SETINFO, before Redis 7.2):\n{errors}"
    );
    store.close();
}
