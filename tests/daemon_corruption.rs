//! The daemon over a store with a damaged page: a poll that crosses it answers 503 `corrupt`
//! (no hang), `/healthz` turns `unavailable` with the reason and `/metrics` counts it; then
//! the operator's commands: `lms-longpolld --check` reports the damage (exit 1) and
//! `--check --salvage` writes a file that passes the check (exit 0).

#![cfg(feature = "daemon")]

mod corrupt_common;
mod daemon_common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use corrupt_common::{EVENTS, build, damage};
use daemon_common::{Client, config, token};
use hyper::StatusCode;
use lms_realtime::{EventStore, daemon, store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_makes_polls_fail_with_corrupt_and_health_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    build(&db);
    damage(&db);
    let store = Arc::new(EventStore::open(&db, store::Config::default()).unwrap());
    let spawned = daemon::spawn(store.clone(), config()).await.unwrap();
    let mut c = Client::connect(spawned.addr).await;

    let r = c.get("/healthz", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "healthy before anyone reads the damage: {}",
        r.text()
    );

    // Follow the cursor from the start until a poll crosses the damaged page.
    let tok = token(1, &[1, 2, 3]);
    let mut cursor = "0".to_owned();
    let mut failed = None;
    for _ in 0..200 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.poll(
                &tok,
                &format!("channels=1,2,3&cursor={cursor}&timeout=0&order=sequential"),
            ),
        )
        .await
        .expect("a poll over a damaged page answers, it does not hang");
        if r.status != StatusCode::OK {
            failed = Some(r);
            break;
        }
        let next = r.json()["cursor"].as_str().unwrap().to_owned();
        assert_ne!(
            next, cursor,
            "the reader reached the head without meeting the damage"
        );
        cursor = next;
    }
    let failed = failed.expect("a poll crossed the damaged page");
    assert_eq!(
        failed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        failed.text()
    );
    assert_eq!(failed.code(), "corrupt", "{}", failed.text());

    let r = c.get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let h = r.json();
    assert_eq!(h["status"], "unavailable", "{h}");
    assert_eq!(h["corrupt"], true, "{h}");
    assert!(h["reasons"][0].as_str().unwrap().contains("corrupt"), "{h}");

    let m = c.get("/metrics", &[]).await.text();
    let line = m
        .lines()
        .find(|l| l.starts_with("lmsrt_corrupt_reads_total "))
        .unwrap_or_else(|| panic!("no corrupt_reads counter in {m}"));
    let n: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n >= 1, "{line}");

    let _ = spawned.shutdown.send(());
    spawned.task.await.unwrap().unwrap();
    store.close();
}

#[test]
fn check_reports_the_damage_and_salvage_writes_a_sound_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    build(&db);
    let bin = env!("CARGO_BIN_EXE_lms-longpolld");

    let out = Command::new(bin).arg("--check").arg(&db).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);

    damage(&db);
    let out = Command::new(bin).arg("--check").arg(&db).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(!v["problems"].as_array().unwrap().is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DAMAGED"));

    // `--check` without a value takes `--db`.
    let new = dir.path().join("salvaged.db");
    let out = Command::new(bin)
        .arg("--db")
        .arg(&db)
        .arg("--check")
        .arg("--salvage")
        .arg(&new)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["salvage"];
    assert_eq!(s["dest_ok"], true, "{v}");
    assert_eq!(s["sequence"], EVENTS, "{v}");
    let lost = s["events_lost"].as_u64().unwrap();
    assert!(lost > 0);
    assert_eq!(s["events_copied"].as_u64().unwrap() + lost, EVENTS as u64);
    assert!(stderr.contains("lost"), "{stderr}");
    let out = Command::new(bin).arg("--check").arg(&new).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}
