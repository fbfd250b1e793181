//! The delivery contract, checked against a simple in-memory model.
//!
//! Random programs interleave appends (single and batched) from several writers — separate
//! `EventStore`s on one file, as separate processes would be — with fetches by several clients
//! (random channel sets, thread and type filters, both orders, random limits), clock advances,
//! and purges. After every fetch:
//!
//! * nothing is delivered twice, and everything delivered matches the client's request and was
//!   live at fetch time;
//! * every matching event the cursor moved past was either delivered in this batch or had expired
//!   or been purged, and in the latter case the batch says `gap: true`;
//! * in-lane order holds (priority order) and batches follow each other by id (sequential);
//! * a batch is never larger than its limit, and `gap` is exactly the model's answer: true when
//!   a matching event in a lane range the cursor moved over was not delivered because it had
//!   expired or been purged, false otherwise (never a spurious resync).
//!
//! Finally every client drains, and every matching event still live has been delivered exactly
//! once.
//!
//! The same properties run on both engines: a SQLite file always, and with the `redis` feature
//! a store on a `redis-server` the test starts (see [`Engine`]).

#[cfg(feature = "redis")]
mod redis_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lms_realtime::clock::ManualClock;
use lms_realtime::{Batch, Config, Cursor, EventStore, FetchRequest, NewEvent, Order, Priority};
use proptest::prelude::*;

const TYPES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
struct Spec {
    channel: i64,
    priority: u8,
    thread: Option<i64>,
    ty: usize,
    ttl_ms: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Append { writer: usize, spec: Spec },
    AppendBatch { writer: usize, specs: Vec<Spec> },
    Fetch { client: usize, limit: usize },
    Advance(i64),
    Purge,
}

#[derive(Debug, Clone)]
struct ClientSpec {
    channels: Vec<i64>,
    thread: Option<i64>,
    types: Vec<usize>,
    order: Order,
    start_at_op: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1i64..=4,
        1u8..=4,
        prop::option::of(1i64..=2),
        0usize..3,
        1_000u64..8_000,
    )
        .prop_map(|(channel, priority, thread, ty, ttl_ms)| Spec {
            channel,
            priority,
            thread,
            ty,
            ttl_ms,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, spec()).prop_map(|(writer, spec)| Op::Append { writer, spec }),
        1 => (0usize..3, prop::collection::vec(spec(), 1..12))
            .prop_map(|(writer, specs)| Op::AppendBatch { writer, specs }),
        6 => (0usize..4, 1usize..9).prop_map(|(client, limit)| Op::Fetch { client, limit }),
        2 => (0i64..4_000).prop_map(Op::Advance),
        1 => Just(Op::Purge),
    ]
}

fn client() -> impl Strategy<Value = ClientSpec> {
    (
        prop::collection::btree_set(1i64..=4, 1..4),
        prop::option::of(1i64..=2),
        prop::collection::btree_set(0usize..3, 0..3),
        prop_oneof![Just(Order::Priority), Just(Order::Sequential)],
        0usize..40,
    )
        .prop_map(|(channels, thread, types, order, start_at_op)| ClientSpec {
            channels: channels.into_iter().collect(),
            thread,
            types: types.into_iter().collect(),
            order,
            start_at_op,
        })
}

#[derive(Debug, Clone)]
struct ModelEvent {
    id: i64,
    channel: i64,
    lane: usize,
    thread: Option<i64>,
    ty: usize,
    expires_at: i64,
    purged: bool,
}

struct Client {
    spec: ClientSpec,
    cursor: Option<Cursor>,
    /// Events with ids at or below this existed before the client started.
    start_head: i64,
    delivered: HashSet<i64>,
    last_lane_id: [i64; 4],
    last_batch_max: i64,
}

impl Client {
    fn matches(&self, e: &ModelEvent) -> bool {
        e.id > self.start_head
            && self.spec.channels.contains(&e.channel)
            && self.spec.thread.is_none_or(|t| e.thread == Some(t))
            && (self.spec.types.is_empty() || self.spec.types.contains(&e.ty))
    }

    fn request(&self, limit: usize) -> FetchRequest {
        let mut r = FetchRequest::new(self.spec.channels.iter().copied())
            .limit(limit)
            .order(self.spec.order)
            .cursor(self.cursor.unwrap_or(Cursor::START))
            .types(self.spec.types.iter().map(|t| TYPES[*t]));
        r.thread_id = self.spec.thread;
        r
    }
}

/// Where a run's stores live: a new SQLite file, or a new store (a name of its own) on a test
/// Redis. Either way three `EventStore`s share it, as three processes would.
#[derive(Clone, Copy)]
enum Engine<'a> {
    Sqlite,
    /// A Redis node or a Redis Cluster.
    #[cfg(feature = "redis")]
    Redis(&'a dyn redis_common::RedisUrls),
    #[cfg(not(feature = "redis"))]
    #[allow(dead_code)]
    Unused(std::marker::PhantomData<&'a ()>),
}

struct World {
    clock: ManualClock,
    stores: Vec<EventStore>,
    model: Vec<ModelEvent>,
    clients: Vec<Client>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(clients: Vec<ClientSpec>, live_tail_window: i64, engine: Engine<'_>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let cfg = Config {
            clock: Arc::new(clock.clone()),
            purge_chunk: 3,
            live_tail_window,
            ..Config::default()
        };
        let stores = match engine {
            Engine::Sqlite => (0..3)
                .map(|_| EventStore::open(dir.path().join("p.db"), cfg.clone()).unwrap())
                .collect(),
            #[cfg(feature = "redis")]
            Engine::Redis(server) => {
                let url = server.url();
                (0..3)
                    .map(|_| EventStore::open_url(&url, cfg.clone()).unwrap())
                    .collect()
            }
            #[cfg(not(feature = "redis"))]
            Engine::Unused(_) => unreachable!(),
        };
        World {
            clock,
            stores,
            model: Vec::new(),
            clients: clients
                .into_iter()
                .map(|spec| Client {
                    spec,
                    cursor: None,
                    start_head: 0,
                    delivered: HashSet::new(),
                    last_lane_id: [0; 4],
                    last_batch_max: 0,
                })
                .collect(),
            _dir: dir,
        }
    }

    fn new_event(&self, s: &Spec) -> NewEvent {
        let mut e = NewEvent::new(TYPES[s.ty], s.channel)
            .priority(Priority::from_i64(s.priority as i64).unwrap())
            .ttl(Duration::from_millis(s.ttl_ms));
        e.thread_id = s.thread;
        e
    }

    fn record(&mut self, id: i64, s: &Spec) {
        self.model.push(ModelEvent {
            id,
            channel: s.channel,
            lane: s.priority as usize - 1,
            thread: s.thread,
            ty: s.ty,
            expires_at: self.clock.now_ms_pub() + s.ttl_ms as i64,
            purged: false,
        });
    }

    fn gone(&self, e: &ModelEvent) -> bool {
        e.purged || e.expires_at <= self.clock.now_ms_pub()
    }

    fn fetch(&mut self, c: usize, limit: usize, store: usize) -> Batch {
        let req = self.clients[c].request(limit);
        let batch = self.stores[store].fetch(&req).unwrap();
        self.check(c, limit, &req, &batch);
        self.clients[c].cursor = Some(batch.cursor);
        batch
    }

    fn check(&mut self, c: usize, limit: usize, req: &FetchRequest, b: &Batch) {
        let old = req.cursor.lanes();
        let new = b.cursor.lanes();
        assert!(b.events.len() <= limit, "batch over its limit");
        for l in 0..4 {
            assert!(new[l] >= old[l], "a lane moved backwards");
        }
        let client = &self.clients[c];
        let got: HashSet<i64> = b.events.iter().map(|e| e.id).collect();
        assert_eq!(got.len(), b.events.len(), "duplicate inside a batch");
        for e in &b.events {
            let m = self
                .model
                .iter()
                .find(|m| m.id == e.id)
                .expect("delivered an event that was never appended");
            assert!(
                client.matches(m),
                "delivered an event the client did not ask for"
            );
            assert!(!self.gone(m), "delivered an expired or purged event");
            assert!(
                !client.delivered.contains(&e.id),
                "delivered twice: {}",
                e.id
            );
            assert!(
                e.id > old[m.lane] && e.id <= new[m.lane],
                "outside the cursor move"
            );
        }
        // Every matching event the cursor moved past: delivered now, or gone and reported.
        let mut lost = false;
        for m in &self.model {
            if client.matches(m) && m.id > old[m.lane] && m.id <= new[m.lane] {
                if got.contains(&m.id) {
                    continue;
                }
                assert!(
                    self.gone(m),
                    "cursor moved past live event {} without delivering it",
                    m.id
                );
                lost = true;
            }
        }
        // The gap flag is exact: true when, and only when, something the client was entitled
        // to (matching, in a lane range the cursor moved over, not delivered) is gone. A
        // spurious gap costs the client a resync from the source of truth for nothing.
        assert_eq!(
            b.gap, lost,
            "gap: {} but the model owes {}: lanes {old:?} -> {new:?}",
            b.gap, lost
        );
        // Ordering.
        let client = &mut self.clients[c];
        match client.spec.order {
            Order::Priority => {
                for e in &b.events {
                    let l = e.priority.lane();
                    assert!(e.id > client.last_lane_id[l], "in-lane order broken");
                    client.last_lane_id[l] = e.id;
                }
            }
            Order::Sequential => {
                if let Some(min) = b.events.iter().map(|e| e.id).min() {
                    assert!(min > client.last_batch_max, "sequential batches overlap");
                    client.last_batch_max = b.events.iter().map(|e| e.id).max().unwrap();
                }
            }
        }
        let keys: Vec<(Priority, i64)> = b.events.iter().map(|e| (e.priority, e.id)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "batch not sorted by priority then id");
        client.delivered.extend(got);
    }
}

trait NowPub {
    fn now_ms_pub(&self) -> i64;
}
impl NowPub for ManualClock {
    fn now_ms_pub(&self) -> i64 {
        lms_realtime::clock::Clock::now_ms(self)
    }
}

fn run(clients: Vec<ClientSpec>, ops: Vec<Op>, live_tail_window: i64, engine: Engine<'_>) {
    let mut w = World::new(clients, live_tail_window, engine);
    for (i, op) in ops.into_iter().enumerate() {
        for c in 0..w.clients.len() {
            if w.clients[c].cursor.is_none() && w.clients[c].spec.start_at_op <= i {
                let head = w.stores[0].head_cursor().unwrap();
                w.clients[c].start_head = head.lanes()[0];
                w.clients[c].cursor = Some(head);
            }
        }
        match op {
            Op::Append { writer, spec } => {
                let id = w.stores[writer].append(w.new_event(&spec)).unwrap();
                w.record(id, &spec);
            }
            Op::AppendBatch { writer, specs } => {
                let evs = specs.iter().map(|s| w.new_event(s)).collect();
                let ids = w.stores[writer].append_batch(evs).unwrap();
                for (id, s) in ids.into_iter().zip(&specs) {
                    w.record(id, s);
                }
            }
            Op::Fetch { client, limit } => {
                let client = client % w.clients.len();
                if w.clients[client].cursor.is_some() {
                    w.fetch(client, limit, client % 3);
                }
            }
            Op::Advance(ms) => w.clock.advance_ms(ms),
            Op::Purge => {
                w.stores[2].purge_expired(usize::MAX).unwrap();
                let now = w.clock.now_ms_pub();
                for m in w.model.iter_mut() {
                    if m.expires_at <= now {
                        m.purged = true;
                    }
                }
            }
        }
    }
    // Drain every client and check that every live matching event arrived exactly once.
    for c in 0..w.clients.len() {
        if w.clients[c].cursor.is_none() {
            let head = w.stores[0].head_cursor().unwrap();
            w.clients[c].start_head = head.lanes()[0];
            w.clients[c].cursor = Some(head);
        }
        let mut rounds = 0;
        loop {
            let b = w.fetch(c, 7, 0);
            rounds += 1;
            assert!(rounds < 1000, "drain does not terminate");
            if b.events.is_empty() && !b.has_more {
                break;
            }
        }
        let client = &w.clients[c];
        for m in &w.model {
            if client.matches(m) && !w.gone(m) {
                assert!(
                    client.delivered.contains(&m.id),
                    "live event {} never delivered",
                    m.id
                );
            }
        }
    }
}

/// Few channels and lanes, TTLs either short or long: purges then remove some events of a
/// lane while their neighbours (in id order) stay, which is where a coarse purge record says
/// `gap` for ranges that held nothing purged.
fn lane_spec() -> impl Strategy<Value = Spec> {
    (
        1i64..=2,
        prop_oneof![3 => Just(3u8), 1 => Just(1u8)],
        prop::option::of(1i64..=2),
        0usize..3,
        prop_oneof![Just(1_000u64), Just(2_500), Just(60_000)],
    )
        .prop_map(|(channel, priority, thread, ty, ttl_ms)| Spec {
            channel,
            priority,
            thread,
            ty,
            ttl_ms,
        })
}

fn lane_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, lane_spec()).prop_map(|(writer, spec)| Op::Append { writer, spec }),
        1 => (0usize..3, prop::collection::vec(lane_spec(), 1..8))
            .prop_map(|(writer, specs)| Op::AppendBatch { writer, specs }),
        6 => (0usize..4, 1usize..4).prop_map(|(client, limit)| Op::Fetch { client, limit }),
        2 => (0i64..2_000).prop_map(Op::Advance),
        2 => Just(Op::Purge),
    ]
}

fn lane_client() -> impl Strategy<Value = ClientSpec> {
    (
        prop_oneof![Just(vec![1i64]), Just(vec![2]), Just(vec![1, 2])],
        prop::option::weighted(0.25, 1i64..=2),
        prop_oneof![3 => Just(vec![]), 1 => Just(vec![0usize]), 1 => Just(vec![1, 2])],
        prop_oneof![Just(Order::Priority), Just(Order::Sequential)],
        0usize..20,
    )
        .prop_map(|(channels, thread, types, order, start_at_op)| ClientSpec {
            channels,
            thread,
            types,
            order,
            start_at_op,
        })
}

const CASES: u32 = 96;

fn lane_program() -> impl Strategy<Value = (Vec<ClientSpec>, Vec<Op>, i64)> {
    (
        prop::collection::vec(lane_client(), 1..=4),
        prop::collection::vec(lane_op(), 1..120),
        prop_oneof![Just(0i64), Just(8), Just(256)],
    )
}

fn program() -> impl Strategy<Value = (Vec<ClientSpec>, Vec<Op>, i64)> {
    (
        prop::collection::vec(client(), 1..=4),
        prop::collection::vec(op(), 1..120),
        // 0 forces SQLite's catch-up path on every fetch; 8 mixes both; 256 is the default.
        prop_oneof![Just(0i64), Just(8), Just(256)],
    )
}

/// The properties on Redis: one `redis-server` for all cases (each case a store of its own),
/// so the runner is driven by hand rather than by `proptest!`, which could not stop it.
#[cfg(feature = "redis")]
fn run_on_redis(program: impl Strategy<Value = (Vec<ClientSpec>, Vec<Op>, i64)>) {
    run_on(&redis_common::RedisServer::start(), program);
}

/// The properties on the stores of `server` (a Redis node or a cluster).
#[cfg(feature = "redis")]
fn run_on(
    server: &dyn redis_common::RedisUrls,
    program: impl Strategy<Value = (Vec<ClientSpec>, Vec<Op>, i64)>,
) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    });
    let result = runner.run(&program, |(clients, ops, window)| {
        run(clients, ops, window, Engine::Redis(server));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[cfg(feature = "redis")]
#[test]
fn gap_is_exact_after_purges_on_redis() {
    run_on_redis(lane_program());
}

#[cfg(feature = "redis")]
#[test]
fn delivery_contract_holds_on_redis() {
    run_on_redis(program());
}

/// The same on a 3-master Redis Cluster (`redis+cluster://`, every case a store of its own, so
/// the stores' slots spread over the masters).
#[cfg(feature = "redis")]
#[test]
fn delivery_contract_holds_on_a_redis_cluster() {
    let cluster = redis_common::RedisCluster::start();
    run_on(&cluster, program());
    run_on(&cluster, lane_program());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Purges interleaved with fetches, mixed TTLs in one lane: `gap` is the model's answer.
    #[test]
    fn gap_is_exact_after_purges((clients, ops, window) in lane_program()) {
        run(clients, ops, window, Engine::Sqlite);
    }

    #[test]
    fn delivery_contract_holds((clients, ops, window) in program()) {
        run(clients, ops, window, Engine::Sqlite);
    }
}

/// A flood in the critical lane does not starve the low lane: with a limit of 8, the single
/// low-priority event arrives in the first batch.
#[test]
fn flood_does_not_starve_other_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let s = EventStore::open(dir.path().join("f.db"), Config::default()).unwrap();
    let start = s.head_cursor().unwrap();
    let low = s
        .append(NewEvent::new("statistics_update", 1).priority(Priority::Low))
        .unwrap();
    let flood: Vec<NewEvent> = (0..500)
        .map(|_| NewEvent::new("message_create", 1))
        .collect();
    s.append_batch(flood).unwrap();
    let b = s
        .fetch(&FetchRequest::new([1]).cursor(start).limit(8))
        .unwrap();
    assert!(b.events.iter().any(|e| e.id == low));
    assert_eq!(b.events.len(), 8);
    assert_eq!(b.events[0].priority, Priority::Critical);
    assert!(b.has_more);
}

/// The catch-up path (cursor far behind the head) and the live-tail path give the same batches.
#[test]
fn catch_up_and_live_tail_agree() {
    let dir = tempfile::tempdir().unwrap();
    let s = EventStore::open(dir.path().join("c.db"), Config::default()).unwrap();
    let mut specs = Vec::new();
    for i in 0..3000i64 {
        let p = Priority::from_i64(1 + (i * 7 % 4)).unwrap();
        specs.push(NewEvent::new("x", 1 + i % 5).priority(p));
    }
    s.append_batch(specs).unwrap();
    for order in [Order::Priority, Order::Sequential] {
        let mut cur = Cursor::START;
        let mut seen = HashSet::new();
        loop {
            let b = s
                .fetch(&FetchRequest::new([2, 4]).cursor(cur).limit(37).order(order))
                .unwrap();
            assert!(!b.gap);
            for e in &b.events {
                assert!(seen.insert(e.id));
                assert!(e.channel_id == 2 || e.channel_id == 4);
            }
            cur = b.cursor;
            if b.events.is_empty() {
                break;
            }
        }
        assert_eq!(seen.len(), 1200, "{order:?}");
    }
}

/// `assemble` over the events a tail subscription handed over gives exactly the batch `fetch`
/// gives, for random requests, cursors and limits (the daemon serves waiters this way).
#[test]
fn assemble_from_subscription_equals_fetch() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let store = EventStore::open(dir.path().join("a.db"), cfg.clone()).unwrap();
    let other_process = EventStore::open(dir.path().join("a.db"), cfg).unwrap();
    let seen: Arc<Mutex<(Vec<lms_realtime::Event>, i64)>> = Arc::default();
    let sink = seen.clone();
    let sub = store
        .subscribe(move |b| {
            let mut s = sink.lock().unwrap();
            s.0.extend(b.events.iter().cloned());
            s.1 = b.head;
        })
        .unwrap();
    assert_eq!(sub.start(), 0);
    let mut rng = proptest::test_runner::TestRng::deterministic_rng(
        proptest::test_runner::RngAlgorithm::ChaCha,
    );
    use rand_like::Below;
    let mut heads = vec![0i64];
    for round in 0..40 {
        let n = 1 + rng.below(20);
        let batch: Vec<NewEvent> = (0..n)
            .map(|_| {
                let mut e = NewEvent::new(TYPES[rng.below(3) as usize], 1 + rng.below(4) as i64)
                    .priority(Priority::from_i64(1 + rng.below(4) as i64).unwrap())
                    .ttl(Duration::from_millis(1_000 + rng.below(9_000)));
                if rng.below(2) == 0 {
                    e.thread_id = Some(1 + rng.below(2) as i64);
                }
                e
            })
            .collect();
        let writer = if round % 2 == 0 {
            &store
        } else {
            &other_process
        };
        writer.append_batch(batch).unwrap();
        clock.advance_ms(rng.below(1_500) as i64);
        heads.push(store.head_cursor().unwrap().lanes()[0]);
    }
    let head = *heads.last().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().1 < head {
        assert!(std::time::Instant::now() < deadline, "subscription stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (events, sub_head) = seen.lock().unwrap().clone();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=head).collect::<Vec<_>>(),
        "each event handed over once, in order"
    );
    for _ in 0..500 {
        let from = heads[rng.below(heads.len() as u64) as usize];
        let channels: Vec<i64> = (1..=4).filter(|_| rng.below(2) == 0).collect();
        let mut req = FetchRequest::new(if channels.is_empty() {
            vec![2]
        } else {
            channels
        })
        .cursor(Cursor::from_last_event_id(from))
        .limit(1 + rng.below(12) as usize)
        .order(if rng.below(2) == 0 {
            Order::Priority
        } else {
            Order::Sequential
        });
        if rng.below(3) == 0 {
            req.thread_id = Some(1 + rng.below(2) as i64);
        }
        if rng.below(3) == 0 {
            req.types = vec![TYPES[rng.below(3) as usize].to_owned()];
        }
        // Follow the request for a few batches, as a waiter would.
        for _ in 0..3 {
            let fetched = store.fetch(&req).unwrap();
            let assembled = store.assemble(&req, &events, sub_head).unwrap().unwrap();
            assert_eq!(assembled, fetched, "{req:?}");
            req.cursor = fetched.cursor;
        }
    }
}

/// A tiny deterministic random helper over proptest's RNG.
mod rand_like {
    pub trait Below {
        fn below(&mut self, n: u64) -> u64;
    }
    impl Below for proptest::test_runner::TestRng {
        fn below(&mut self, n: u64) -> u64 {
            use proptest::prelude::Rng as _;
            self.next_u64() % n
        }
    }
}
