//! The daemon's HTTP API against a running daemon, with a real HTTP client: the delivery
//! contract across re-polls (no loss, no duplicates, both orders, filters, polls that time out
//! and re-poll on a kept-alive connection), tokens (tampered, expired, wrong channel, rotation),
//! malformed requests, CORS, gzip, health and metrics.
//!
//! One file over 600 lines on purpose: each file under tests/ is a binary linking the whole
//! daemon, and these tests share its one contract (the HTTP API of `/v1/poll` and
//! `/v1/events`); the limits, the processes and the theme's endpoint have files of their own.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use daemon_common::*;
use hyper::StatusCode;
use lms_realtime::token;
use serde_json::json;

fn event(ty: &str, ch: i64, n: usize) -> serde_json::Value {
    json!({"event_type": ty, "channel_id": ch, "message_id": n, "data": {"n": n}})
}

/// Publishes `total` events in batches over HTTP while `clients` pollers re-poll with small
/// limits; every poller must end with exactly the events of its channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_polls_deliver_every_event_exactly_once() {
    let d = Daemon::start(config()).await;
    let start = d.store.head_cursor().unwrap().to_string();
    let types = [
        "message_create",
        "reaction_update",
        "badge_update",
        "statistics_update",
    ];
    let total = 600;
    // (channels, order, limit, timeout): polls that time out (timeout=1) and re-poll on the
    // same kept-alive connection are among them.
    let setups: Vec<(Vec<i64>, &str, usize, u64)> = vec![
        (vec![1], "priority", 7, 1),
        (vec![1, 2], "sequential", 5, 2),
        (vec![2, 3], "priority", 50, 1),
        (vec![3], "sequential", 1, 1),
    ];
    let mut pollers = Vec::new();
    for (i, (channels, order, limit, timeout)) in setups.clone().into_iter().enumerate() {
        let addr = d.addr;
        let start = start.clone();
        pollers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let t = token(100 + i as i64, &channels);
            let chs: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
            let mut cursor = start;
            let mut got: Vec<i64> = Vec::new();
            let mut empty_in_a_row = 0;
            while empty_in_a_row < 3 {
                let r = c
                    .poll(
                        &t,
                        &format!(
                            "channels={}&cursor={cursor}&order={order}&limit={limit}&timeout={timeout}",
                            chs.join(",")
                        ),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                let v = r.json();
                assert_eq!(v["gap"], false);
                assert_eq!(v["mode"], "long");
                let batch = ids(&v);
                assert!(batch.len() <= limit);
                empty_in_a_row = if batch.is_empty() { empty_in_a_row + 1 } else { 0 };
                got.extend(batch);
                cursor = v["cursor"].as_str().unwrap().to_owned();
            }
            (channels, got)
        }));
    }
    let mut publisher = d.client().await;
    let mut by_channel: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    for chunk in 0..(total / 20) {
        let events: Vec<_> = (0..20)
            .map(|k| {
                let n = chunk * 20 + k;
                event(types[n % 4], 1 + (n % 3) as i64, n)
            })
            .collect();
        let ids = d
            .publish(&mut publisher, &json!({ "events": events }))
            .await;
        for (k, id) in ids.into_iter().enumerate() {
            let n = chunk * 20 + k;
            by_channel.entry(1 + (n % 3) as i64).or_default().push(id);
        }
        if chunk % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for p in pollers {
        let (channels, got) = p.await.unwrap();
        let unique: HashSet<i64> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "duplicates for {channels:?}");
        let want: HashSet<i64> = channels
            .iter()
            .flat_map(|c| by_channel[c].iter().copied())
            .collect();
        assert_eq!(unique, want, "lost or extra events for {channels:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_poll_wakes_on_publish_and_filters_apply() {
    let d = Daemon::start(config()).await;
    let start = d.store.head_cursor().unwrap().to_string();
    let t = token(1, &[5]);
    let addr = d.addr;
    let t2 = t.clone();
    let s2 = start.clone();
    let waiting = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let began = Instant::now();
        let r = c
            .poll(
                &t2,
                &format!("channels=5&cursor={s2}&types=reaction_update&thread=9&timeout=10"),
            )
            .await;
        (r.json(), began.elapsed())
    });
    wait_for_waiters(addr, 1).await;
    let mut p = d.client().await;
    // Neither matches the filters: the poll keeps waiting.
    d.publish(
        &mut p,
        &json!({"event_type": "message_create", "channel_id": 5, "thread_id": 9}),
    )
    .await;
    let last = d
        .publish(
            &mut p,
            &json!({"event_type": "reaction_update", "channel_id": 5, "thread_id": 8}),
        )
        .await[0];
    // Both reach the fan-out while the poll still waits, before the one that matches.
    wait_for_health(
        addr,
        "the fan-out to see both events, the poll still waiting",
        |h| h["ring"]["head"].as_i64().is_some_and(|head| head >= last) && h["waiters"] == 1,
    )
    .await;
    let want = d
        .publish(&mut p, &json!({"event_type": "reaction_update", "channel_id": 5, "thread_id": 9, "data": {"r": "+1"}}))
        .await;
    let (v, took) = waiting.await.unwrap();
    assert_eq!(ids(&v), want);
    assert_eq!(v["events"][0]["data"]["r"], "+1");
    assert!(took < Duration::from_secs(5), "woken, not timed out");
    // The event shape the browser client expects.
    let e = &v["events"][0];
    for f in [
        "id",
        "event_type",
        "priority",
        "channel_id",
        "message_id",
        "thread_id",
        "user_id",
        "data",
        "timestamp",
        "expires_at",
    ] {
        assert!(e.get(f).is_some(), "missing {f}");
    }
    // A poll with timeout=0 answers at once, empty, with a cursor to resume from.
    let mut c = d.client().await;
    let began = Instant::now();
    let r = c
        .poll(
            &t,
            &format!(
                "channels=5&cursor={}&timeout=0",
                v["cursor"].as_str().unwrap()
            ),
        )
        .await;
    assert!(began.elapsed() < Duration::from_millis(500));
    assert_eq!(ids(&r.json()), Vec::<i64>::new());
    // A legacy integer cursor works too.
    let r = c
        .poll(&t, "channels=5&cursor=0&timeout=0&order=sequential")
        .await;
    assert_eq!(ids(&r.json()).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let ok = token(7, &[1, 2]);
    assert_eq!(
        c.poll(&ok, "channels=1,2&timeout=0").await.status,
        StatusCode::OK
    );

    let r = c.get("/v1/poll?channels=1&timeout=0", &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_missing")
    );

    // Tampered: the claims say channel 3 but the MAC was made for [1, 2].
    let (head, mac) = ok.rsplit_once('.').unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(b64.decode(&head[3..]).unwrap()).unwrap();
    let forged = format!(
        "v1.{}.{mac}",
        b64.encode(claims.replace("[1,2]", "[1,2,3]"))
    );
    let r = c.poll(&forged, "channels=3&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_bad_signature")
    );

    let expired = token::issue(&key(), 7, &[1], now_s() - 1, "s").unwrap();
    let r = c.poll(&expired, "channels=1&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_expired")
    );

    let r = c.poll(&ok, "channels=1,3&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden_channel")
    );

    let r = c.poll("garbage", "channels=1&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_malformed")
    );

    // Rotation: the previous key still verifies; an unknown one does not.
    let old = token::issue(&old_key(), 7, &[1], now_s() + 60, "s").unwrap();
    assert_eq!(
        c.poll(&old, "channels=1&timeout=0").await.status,
        StatusCode::OK
    );
    let stranger = lms_realtime::token::TokenKey::new("k9", vec![3u8; 32]).unwrap();
    let t = token::issue(&stranger, 7, &[1], now_s() + 60, "s").unwrap();
    let r = c.poll(&t, "channels=1&timeout=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_unknown_key")
    );

    // Publishing needs a valid signature.
    let body = br#"{"event_type":"message_create","channel_id":1}"#.to_vec();
    let r = c.post_raw("/v1/events", body.clone(), &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "signature_missing")
    );
    let ts = now_s();
    let sig = token::sign_publish(&key(), ts, b"{}");
    let r = c
        .post_raw(
            "/v1/events",
            body.clone(),
            &[
                ("x-lms-timestamp", &ts.to_string()),
                ("x-lms-signature", &sig),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "signature_mismatch")
    );
    let stale = ts - 3600;
    let sig = token::sign_publish(&key(), stale, &body);
    let r = c
        .post_raw(
            "/v1/events",
            body.clone(),
            &[
                ("x-lms-timestamp", &stale.to_string()),
                ("x-lms-signature", &sig),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "signature_expired")
    );
    let sig = token::sign_publish(&old_key(), ts, &body);
    let r = c
        .post_raw(
            "/v1/events",
            body,
            &[
                ("x-lms-timestamp", &ts.to_string()),
                ("x-lms-signature", &sig),
            ],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the previous key signs too: {}",
        r.text()
    );
    assert_eq!(
        d.store
            .fetch(&lms_realtime::FetchRequest::new([1]))
            .unwrap()
            .events
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_change_nothing() {
    let mut cfg = config();
    cfg.max_channels = 4;
    cfg.max_body_bytes = 4096;
    cfg.max_header_bytes = 4096;
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let t = token(1, &[1, 2, 3, 4, 5, 6]);
    for (q, code) in [
        ("channels=1&timeout=abc", "invalid_argument"),
        ("channels=1&timeout=-5", "invalid_argument"),
        ("channels=1&limit=0", "invalid_argument"),
        ("channels=x", "invalid_argument"),
        ("channels=0", "invalid_channel"),
        ("channels=1,2,3,4,5", "invalid_argument"),
        ("timeout=0", "invalid_argument"),
        ("channels=1&cursor=v1.nothex.1.2.3.4", "invalid_cursor"),
        (
            "channels=1&cursor=99999999999999999999999",
            "invalid_cursor",
        ),
        ("channels=1&types=Not-A-Type", "invalid_event_type"),
        ("channels=1&order=newest", "invalid_argument"),
    ] {
        let r = c.poll(&t, q).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code.to_string()),
            "{q}: {}",
            r.text()
        );
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = c.get("/nope", &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let r = c.post_raw("/v1/poll", vec![], &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET"));

    // Bodies: too large (by Content-Length and by actual size), not JSON, bad events.
    let big = vec![b'x'; 5000];
    let r = c.post_raw("/v1/events", big, &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    for (body, code) in [
        (&b"not json"[..], "invalid_argument"),
        (
            br#"{"event_type":"Bad Type","channel_id":1}"#,
            "invalid_event_type",
        ),
        (br#"{"event_type":"ok","channel_id":-1}"#, "invalid_channel"),
        (
            br#"{"event_type":"ok","channel_id":1,"data":[1]}"#,
            "invalid_data",
        ),
        (
            br#"{"event_type":"ok","channel_id":1,"ttl_ms":1}"#,
            "invalid_ttl",
        ),
    ] {
        let r = c
            .publish(&serde_json::from_slice(body).unwrap_or(json!("not json")))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code.to_string()),
            "{}",
            r.text()
        );
    }
    assert!(
        d.store
            .fetch(&lms_realtime::FetchRequest::new([1]))
            .unwrap()
            .events
            .is_empty()
    );

    // Huge headers: 431 and the connection closes.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-junk: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let out = raw(d.addr, huge.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // Garbage instead of HTTP: 400, closed.
    let out = raw(d.addr, b"HELLO THERE\r\n\r\n", Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // The daemon is still fine.
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_security_headers_gzip_health_and_metrics() {
    let mut cfg = config();
    cfg.cors_origins = vec!["https://chat.example.org".into()];
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let mut b = hyper::Request::builder()
        .method("OPTIONS")
        .uri("/v1/poll?channels=1")
        .header("host", "x")
        .header("origin", "https://chat.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization");
    let r = c
        .send(
            b.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://chat.example.org")
    );
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    b = hyper::Request::builder()
        .method("OPTIONS")
        .uri("/v1/poll")
        .header("host", "x")
        .header("origin", "https://evil.example");
    let r = c
        .send(
            b.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Its own code: the origin is refused, no channel is involved.
    assert_eq!(r.code(), "origin_not_allowed", "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());

    let t = token(3, &[1]);
    let auth = format!("Bearer {t}");
    let r = c
        .get(
            "/v1/poll?channels=1&timeout=0",
            &[
                ("authorization", &auth),
                ("origin", "https://chat.example.org"),
                ("x-request-id", "abc-123"),
            ],
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://chat.example.org")
    );
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .contains("Retry-After")
    );
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-security-policy").is_some());

    // A large batch is gzipped for a client that accepts it.
    let mut p = d.client().await;
    let events: Vec<_> = (0..40).map(|n| event("message_create", 1, n)).collect();
    d.publish(&mut p, &json!({ "events": events })).await;
    // timeout=2, not 0: a publish is acknowledged once committed, and reaches the fan-out a
    // moment later (when the store's tail reader has read it); a waiting poll is woken by it.
    let r = c
        .get(
            "/v1/poll?channels=1&timeout=2",
            &[("authorization", &auth), ("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    use std::io::Read as _;
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut text)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ids(&v).len(), 40);
    let r = c
        .get("/v1/poll?channels=1&timeout=0", &[("authorization", &auth)])
        .await;
    assert!(r.header("content-encoding").is_none());
    assert_eq!(ids(&r.json()).len(), 40);

    let r = c.get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["store"]["breaker"], "closed");
    assert_eq!(h["store"]["engine"], "sqlite");
    // The engine figures are Redis's: on SQLite the counters stay 0 and there is no latency
    // (its faults and timings are the per-operation counters and summaries).
    assert_eq!(h["store"]["errors"], 0);
    assert_eq!(h["store"]["epoch_changes"], 0);
    assert!(h["store"]["latency_us"].is_null(), "{h}");
    let r = c.get("/metrics", &[]).await;
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let m = r.text();
    for line in [
        "lmsrt_deliveries_total 80",
        "lmsrt_healthy 1",
        "lmsrt_daemon_connections ",
        "lmsrt_waits_total ",
        "lmsrt_daemon_store_info{engine=\"sqlite\"} 1",
        "lmsrt_daemon_store_errors_total 0",
        "lmsrt_daemon_store_epoch_changes_total 0",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_serves_the_page_a_session_and_a_bot() {
    let cfg = lms_realtime::daemon::Config {
        demo: true,
        token_key: None,
        token_key_previous: None,
        ..config()
    };
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let page = c.get("/demo", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains("lms-realtime-client.js"));
    let js = c.get("/demo/lms-realtime-client.js", &[]).await;
    assert!(js.text().contains("LMSUnifiedLongPoll"));
    assert_eq!(c.get("/", &[]).await.status, StatusCode::FOUND);
    let s = c.get("/demo/session", &[]).await.json();
    let t = s["token"].as_str().unwrap().to_owned();
    let cursor = s["cursor"].as_str().unwrap().to_owned();
    let r = c
        .post_raw(
            "/demo/publish",
            br#"{"channel_id":2,"text":"hello from the test","from":"  Hanako  "}"#.to_vec(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The bot posts every 3 s too: wait for the test's message among what arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cursor = cursor;
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        let v = c
            .poll(&t, &format!("channels=1,2,3&cursor={cursor}&timeout=5"))
            .await
            .json();
        seen = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["text"] == "hello from the test")
            .inspect(|e| assert_eq!(e["data"]["from"], "Hanako", "the sender's name"))
            .count()
            > 0;
        cursor = v["cursor"].as_str().unwrap().to_owned();
    }
    assert!(seen, "the demo message was delivered");
    // Without --demo there is no demo page.
    let d2 = Daemon::start(config()).await;
    let mut c2 = d2.client().await;
    assert_eq!(c2.get("/demo", &[]).await.status, StatusCode::NOT_FOUND);
}

/// With several serving shards, waiting polls land on every shard (connections are handed
/// round-robin), and one published event reaches each of them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_on_every_shard_get_the_event_exactly_once() {
    let d = Daemon::start(lms_realtime::daemon::Config {
        shards: 3,
        ..config()
    })
    .await;
    let start = d.store.head_cursor().unwrap().to_string();
    let n = 12;
    let mut pollers = Vec::new();
    for i in 0..n {
        let addr = d.addr;
        let start = start.clone();
        pollers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let t = token(500 + i, &[7]);
            let r = c
                .poll(&t, &format!("channels=7&cursor={start}&timeout=10"))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let v = r.json();
            let mut got = ids(&v);
            // Nothing more: a short re-poll from the new cursor is empty.
            let cursor = v["cursor"].as_str().unwrap().to_owned();
            let r = c
                .poll(&t, &format!("channels=7&cursor={cursor}&timeout=1"))
                .await;
            got.extend(ids(&r.json()));
            got
        }));
    }
    // Wait until every poll waits, on every shard.
    let h = wait_for_waiters(d.addr, n as u64).await;
    assert_eq!(h["shards"], 3);
    let per: Vec<u64> = h["shard_waiters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per.iter().sum::<u64>(), n as u64, "{per:?}");
    assert!(per.iter().all(|&w| w > 0), "a shard has no waiter: {per:?}");
    let mut publisher = d.client().await;
    let id = d
        .publish(
            &mut publisher,
            &json!({ "events": [event("message_create", 7, 1)] }),
        )
        .await;
    for p in pollers {
        assert_eq!(
            p.await.unwrap(),
            id,
            "each poll gets the event exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_sharing_a_large_response_each_get_it_gzipped_or_plain_as_they_asked() {
    let d = Daemon::start(config()).await;
    let mut p = d.client().await;
    let head = d.store.head_cursor().unwrap().to_string();
    // Four polls wait from the same cursor, so they share one rendered response: two accept
    // gzip, two do not.
    let mut waiting = Vec::new();
    for i in 0..4 {
        let addr = d.addr;
        let head = head.clone();
        waiting.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let auth = format!("Bearer {}", token(2000 + i, &[1]));
            let mut h = vec![("authorization", auth.as_str())];
            if i % 2 == 0 {
                h.push(("accept-encoding", "gzip"));
            }
            let r = c
                .get(&format!("/v1/poll?channels=1&cursor={head}&timeout=5"), &h)
                .await;
            (i, r)
        }));
    }
    wait_for_waiters(d.addr, 4).await;
    let events: Vec<_> = (0..40).map(|n| event("message_create", 1, n)).collect();
    d.publish(&mut p, &json!({ "events": events })).await;
    let mut bodies = Vec::new();
    for w in waiting {
        let (i, r) = w.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let text = if i % 2 == 0 {
            assert_eq!(r.header("content-encoding"), Some("gzip"));
            assert_eq!(r.header("vary"), Some("Accept-Encoding"));
            let mut text = String::new();
            use std::io::Read as _;
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_string(&mut text)
                .unwrap();
            text
        } else {
            assert!(r.header("content-encoding").is_none());
            assert!(r.header("vary").is_none());
            r.text()
        };
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ids(&v).len(), 40);
        bodies.push(text);
    }
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "one response, shared"
    );
}

/// Poison events over HTTP: `POST /v1/events` refuses data nested deeper than 64 levels and
/// lone surrogate escapes (400 `invalid_data`, nothing appended); rows like that already in the
/// file (written behind the store's back) are stepped over by a `limit=1` poller, with
/// `gap: true`, and the next event arrives; the daemon stays healthy and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_refused_and_stepped_over() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let start = d.store.head_cursor().unwrap().to_string();
    let deep = |n: usize| format!(r#"{{"a":{}1{}}}"#, "[".repeat(n - 1), "]".repeat(n - 1));
    for data in [deep(65), deep(520), r#"{"t":"\ud800"}"#.to_owned()] {
        let body = format!(r#"{{"event_type":"message_create","channel_id":1,"data":{data}}}"#);
        let r = c.publish_bytes(body.into_bytes()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_data"),
            "{}",
            r.text()
        );
    }
    assert!(
        d.store
            .fetch(&lms_realtime::FetchRequest::new([1]))
            .unwrap()
            .events
            .is_empty(),
        "nothing refused was appended"
    );

    // Rows an older version (or damage) left behind, each followed by a good event.
    let db = rusqlite::Connection::open(d.dir.path().join("chat.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let now = now_s() * 1000;
    let mut good = Vec::new();
    for data in [
        rusqlite::types::Value::Text(deep(520)),
        rusqlite::types::Value::Text(r#"{"t":"\ud800"}"#.into()),
        rusqlite::types::Value::Blob(vec![b'{', 0xff, b'}']),
    ] {
        db.execute(
            "INSERT INTO lmsrt_events (event_type, priority, channel_id, user_id, data, timestamp, expires_at)
             VALUES ('message_create', 1, 1, 1, ?1, ?2, ?3)",
            rusqlite::params![data, now, now + 3_600_000],
        )
        .unwrap();
        good.extend(
            d.publish(&mut c, &event("message_create", 1, good.len()))
                .await,
        );
    }
    let t = token(5, &[1]);
    let mut cursor = start;
    let mut got = Vec::new();
    let mut gaps = 0;
    for _ in 0..20 {
        let r = c
            .poll(&t, &format!("channels=1&limit=1&timeout=2&cursor={cursor}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        got.extend(ids(&v));
        gaps += usize::from(v["gap"] == true);
        cursor = v["cursor"].as_str().unwrap().to_owned();
        if got.len() == good.len() {
            break;
        }
    }
    assert_eq!(got, good, "every good event, past every poison row");
    assert!(gaps >= 1, "stepping over a poison row says gap");
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
    let m = c.get("/metrics", &[]).await.text();
    let seen: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("lmsrt_daemon_undeliverable_events_total "))
        .unwrap_or_else(|| panic!("no undeliverable counter in\n{m}"))
        .parse()
        .unwrap();
    assert!(seen >= 3, "{seen}");
}

/// A signed publish sent again (the same `X-LMS-Timestamp` and `X-LMS-Signature`) answers the
/// first one's ids, 200 with the same body, and appends nothing: sent again at once, many at a
/// time on other connections, or with the timestamp spelled differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_publish_gets_the_first_ids_and_appends_nothing() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let body = serde_json::to_vec(&json!({
        "events": [event("message_create", 1, 1), event("message_create", 1, 2)]
    }))
    .unwrap();
    let ts = now_s();
    let sig = token::sign_publish(&key(), ts, &body);
    let ts_s = ts.to_string();
    let headers = [
        ("x-lms-timestamp", ts_s.as_str()),
        ("x-lms-signature", sig.as_str()),
    ];
    let first = c.post_raw("/v1/events", body.clone(), &headers).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let again = c.post_raw("/v1/events", body.clone(), &headers).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.body, first.body, "the same answer");
    // Many at once, each on its own connection.
    let mut replays = Vec::new();
    for _ in 0..8 {
        let (addr, body, ts_s, sig) = (d.addr, body.clone(), ts_s.clone(), sig.clone());
        replays.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.post_raw(
                "/v1/events",
                body,
                &[("x-lms-timestamp", &ts_s), ("x-lms-signature", &sig)],
            )
            .await
        }));
    }
    for r in replays {
        let r = r.await.unwrap();
        assert_eq!((r.status, &r.body), (StatusCode::OK, &first.body));
    }
    // The same timestamp written another way is the same signed request.
    let padded = format!("0{ts_s}");
    let r = c
        .post_raw(
            "/v1/events",
            body.clone(),
            &[("x-lms-timestamp", &padded), ("x-lms-signature", &sig)],
        )
        .await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &first.body));
    let stored = d
        .store
        .fetch(&lms_realtime::FetchRequest::new([1]))
        .unwrap();
    assert_eq!(stored.events.len(), 2, "appended once");
    // A new publish (another signature) appends as usual.
    let more = d
        .publish(&mut c, &json!({"events": [event("message_create", 1, 3)]}))
        .await;
    assert_eq!(more.len(), 1);
    let m = c.get("/metrics", &[]).await.text();
    assert!(m.contains("lmsrt_publish_replays_total 10\n"), "{m}");
}

/// The replay window is bounded: full of live entries, it refuses new publishes with 503
/// `replay_window_full` and a Retry-After rather than forget one (whose replay would then
/// append again); what it holds still answers as replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_window_refuses_rather_than_forgets() {
    let mut cfg = config();
    cfg.publish_replay_capacity = 2;
    let d = Daemon::start(cfg).await;
    let mut c = d.client().await;
    let signed = |n: usize| {
        let body = serde_json::to_vec(&event("message_create", 1, n)).unwrap();
        let ts = now_s();
        let sig = token::sign_publish(&key(), ts, &body);
        (body, ts.to_string(), sig)
    };
    let mut answers = Vec::new();
    let mut requests = Vec::new();
    for n in 0..2 {
        let (body, ts, sig) = signed(n);
        let r = c
            .post_raw(
                "/v1/events",
                body.clone(),
                &[("x-lms-timestamp", &ts), ("x-lms-signature", &sig)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        answers.push(r.body);
        requests.push((body, ts, sig));
    }
    let (body, ts, sig) = signed(2);
    let r = c
        .post_raw(
            "/v1/events",
            body,
            &[("x-lms-timestamp", &ts), ("x-lms-signature", &sig)],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "replay_window_full"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    for ((body, ts, sig), answer) in requests.into_iter().zip(answers) {
        let r = c
            .post_raw(
                "/v1/events",
                body,
                &[("x-lms-timestamp", &ts), ("x-lms-signature", &sig)],
            )
            .await;
        assert_eq!((r.status, r.body), (StatusCode::OK, answer));
    }
    let stored = d
        .store
        .fetch(&lms_realtime::FetchRequest::new([1]))
        .unwrap();
    assert_eq!(
        stored.events.len(),
        2,
        "the refused publish appended nothing"
    );
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
}
