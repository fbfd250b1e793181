//! `/v1/lms/poll`, the LMS chat theme's own long poll, against a running daemon: the theme's
//! client loop (form fields in, `last_event_id` = the highest id it received) gets every event
//! of its channel exactly once, POST or GET, with filters; a waiting poll wakes on a publish;
//! the hold is the theme's (at most 5 s); refusals come in the theme's error shape.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use daemon_common::*;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

/// One theme poll: the form the theme's client sends (with its nonce fields, which the daemon
/// ignores), by POST or GET, with a bearer token (or none).
async fn theme_poll(c: &mut Client, token: Option<&str>, method: &str, form: &str) -> Reply {
    let form =
        format!("action=lms_unified_long_poll&nonce=x&nonce_action=lms_unified_longpoll&{form}");
    let b = if method == "GET" {
        Request::get(format!("/v1/lms/poll?{form}"))
    } else {
        Request::post("/v1/lms/poll").header("content-type", "application/x-www-form-urlencoded")
    };
    let mut b = b.header("host", "localhost");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = if method == "GET" {
        Bytes::new()
    } else {
        Bytes::from(form)
    };
    c.send(b.body(Full::new(body)).unwrap()).await
}

/// The theme's loop: poll, keep the highest event id, until `quiet` empty answers in a row.
/// Returns every event received, in order of receipt.
async fn theme_client(
    c: &mut Client,
    token: &str,
    method: &str,
    channel: i64,
    extra: &str,
) -> Vec<Value> {
    let mut last = 0i64;
    let mut got = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let r = theme_poll(
            c,
            Some(token),
            method,
            &format!("channel_id={channel}&thread_id=0&last_event_id={last}&timeout=1{extra}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        let events = v["data"]["events"].as_array().unwrap().clone();
        if events.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for e in &events {
            last = last.max(e["id"].as_i64().unwrap());
        }
        assert!(v["data"]["last_event_id"].as_i64().unwrap() >= last, "{v}");
        got.extend(events);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_theme_client_gets_every_event_of_its_channel_once_in_the_theme_shape() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let types = [
        "message_create",
        "reaction_update",
        "thread_create",
        "message_delete",
    ];
    let mut published = Vec::new();
    for batch in 0..6 {
        let events: Vec<Value> = (0..40)
            .map(|i| {
                let n = batch * 40 + i;
                json!({"event_type": types[n % 4], "channel_id": 7 + (n % 2) as i64, "message_id": n,
                       "thread_id": if n % 3 == 0 { Some(5) } else { None },
                       "data": {"message": format!("m{n}"), "user_name": "Taro"}})
            })
            .collect();
        let ids = d.publish(&mut c, &json!({"events": events})).await;
        published.extend(ids.into_iter().zip(batch * 40..));
    }
    let want: HashSet<i64> = published
        .iter()
        .filter(|(_, n)| n % 2 == 0)
        .map(|(id, _)| *id)
        .collect();
    let t = token(3, &[7]);
    for method in ["POST", "GET"] {
        let got = theme_client(&mut c, &t, method, 7, "").await;
        let ids: Vec<i64> = got.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(ids.len(), want.len(), "{method}: no event twice");
        assert_eq!(
            ids.iter().copied().collect::<HashSet<_>>(),
            want,
            "{method}: every event of channel 7"
        );
        for e in &got {
            assert_eq!(e["channel_id"], 7);
            assert_eq!(e["type"], e["event_type"]);
            assert!(
                e["data"]["message"].is_string() && e["data"]["user_name"] == "Taro",
                "{e}"
            );
            let ms = e["timestamp"].as_i64().unwrap();
            assert!(ms > 1_600_000_000_000, "timestamp in milliseconds: {ms}");
            let iso = e["created_at"].as_str().unwrap();
            assert!(iso.ends_with('Z') && iso.len() == 24, "{iso}");
            assert!(e["priority"].as_i64().is_some_and(|p| (1..=4).contains(&p)));
        }
    }
    // Filters: one thread, some types.
    let got = theme_client(
        &mut c,
        &t,
        "POST",
        7,
        "&event_types=message_create,thread_create",
    )
    .await;
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|e| e["event_type"] == "message_create" || e["event_type"] == "thread_create")
    );
    let mut threaded = 0;
    let mut last = 0;
    loop {
        let r = theme_poll(
            &mut c,
            Some(&t),
            "POST",
            &format!("channel_id=7&thread_id=5&last_event_id={last}&timeout=1"),
        )
        .await
        .json();
        let events = r["data"]["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            assert_eq!(e["thread_id"], 5, "{e}");
            last = last.max(e["id"].as_i64().unwrap());
            threaded += 1;
        }
    }
    assert_eq!(
        threaded,
        published
            .iter()
            .filter(|(_, n)| n % 2 == 0 && n % 3 == 0)
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_theme_poll_wakes_on_a_publish_and_an_idle_one_is_held_at_most_five_seconds() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let first = d
        .publish(
            &mut c,
            &json!({"event_type": "message_create", "channel_id": 7}),
        )
        .await[0];
    let t = token(3, &[7]);
    let addr = d.addr;
    let t2 = t.clone();
    let waiting = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        theme_poll(
            &mut c,
            Some(&t2),
            "POST",
            &format!("channel_id=7&thread_id=0&last_event_id={first}"),
        )
        .await
    });
    wait_for_waiters(d.addr, 1).await;
    let second = d
        .publish(
            &mut c,
            &json!({"event_type": "reaction_update", "channel_id": 7, "message_id": 1}),
        )
        .await[0];
    let v = waiting.await.unwrap().json();
    assert_eq!(v["data"]["events"][0]["id"], second, "{v}");
    assert_eq!(v["data"]["last_event_id"], second);

    // Nothing to deliver, no timeout field: answered empty by the 5 s hold, although the
    // daemon's --poll-timeout (10 s here) is longer. The bound is generous: the point is that
    // the theme's client (which gives up after 7 s) is answered.
    let idle = tokio::time::timeout(
        Duration::from_secs(9),
        theme_poll(
            &mut c,
            Some(&t),
            "POST",
            &format!("channel_id=7&last_event_id={second}"),
        ),
    )
    .await
    .expect("an idle theme poll is answered within the theme's hold");
    let v = idle.json();
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["events"], json!([]));
    assert_eq!(
        v["data"]["last_event_id"], second,
        "an empty answer keeps the client's position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_the_theme_error_shape_and_change_nothing() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let t = token(3, &[7]);
    let cases: Vec<(Option<&str>, &str, StatusCode, &str)> = vec![
        (
            None,
            "channel_id=7",
            StatusCode::UNAUTHORIZED,
            "token_missing",
        ),
        (Some("v1.bad"), "channel_id=7", StatusCode::UNAUTHORIZED, ""),
        (
            Some(&t),
            "channel_id=8",
            StatusCode::FORBIDDEN,
            "forbidden_channel",
        ),
        (
            Some(&t),
            "thread_id=0",
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Some(&t),
            "channel_id=7&last_event_id=-5",
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Some(&t),
            "channel_id=7&event_types=Nope",
            StatusCode::BAD_REQUEST,
            "invalid_event_type",
        ),
        (
            Some(&t),
            "channel_id=7&channel_id=7",
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
    ];
    for (tok, form, status, code) in cases {
        let r = theme_poll(&mut c, tok, "POST", form).await;
        assert_eq!(r.status, status, "{form}: {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], false, "{form}: {v}");
        assert!(v["data"]["message"].is_string(), "{form}: {v}");
        if !code.is_empty() {
            assert_eq!(v["data"]["code"], code, "{form}: {v}");
        }
    }
    // Not valid UTF-8: refused, the daemon still answers.
    let r = c
        .send(
            Request::post("/v1/lms/poll")
                .header("host", "localhost")
                .header("authorization", format!("Bearer {t}"))
                .body(Full::new(Bytes::from_static(
                    b"channel_id=7&event_types=\xff",
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["data"]["code"], "invalid_utf8");
    assert_eq!(c.get("/healthz", &[]).await.status, StatusCode::OK);
    // Only GET and POST.
    let r = c
        .send(
            Request::put("/v1/lms/poll")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        d.store
            .fetch(&lms_realtime::FetchRequest::new([7]))
            .unwrap()
            .events
            .is_empty(),
        "nothing was appended"
    );
}
