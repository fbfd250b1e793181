//! The daemon as a process among others: the real `lms-longpolld` binary answers its waiting
//! polls and exits promptly on SIGTERM, an append made by a separate process through the
//! C ABI (as a PHP worker makes it) wakes a waiting poll within milliseconds, and such appends
//! mixed with the daemon's own publishes (which reach its fan-out without its tail reader)
//! are each delivered once, in order.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::*;
use hyper::StatusCode;

/// A poll of user 1 on `channel` from `head`, answered within 10 s: its JSON and when it came.
fn spawn_waiting_poll(
    addr: std::net::SocketAddr,
    channel: i64,
    head: String,
) -> tokio::task::JoinHandle<(serde_json::Value, Instant)> {
    tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let r = c
            .poll(
                &token(1, &[channel]),
                &format!("channels={channel}&cursor={head}&timeout=10"),
            )
            .await;
        (r.json(), Instant::now())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until_up(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the daemon did not start listening on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_waiters_and_exits_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lms-longpolld"))
        .env_clear()
        .env("LMSRT_LISTEN", addr.to_string())
        .env("LMSRT_DB", dir.path().join("chat.db"))
        .env("LMSRT_TOKEN_KEY", format!("k1:{SECRET}"))
        .env("LMSRT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_up(addr).await;
    let mut waiting = Vec::new();
    for i in 0..50 {
        waiting.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let r = c
                .poll(&token(i, &[1]), "channels=1&cursor=0&timeout=30")
                .await;
            (r.status, r.json())
        }));
    }
    wait_for_waiters(addr, 50).await;
    let began = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for w in waiting {
        let (status, v) = w.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(v["cursor"].as_str().unwrap().starts_with("v1."), "{v}");
    }
    let answered = began.elapsed();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = began.elapsed();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(
        answered < Duration::from_secs(1),
        "waiters answered after {answered:?}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(
        log.contains("connection_capacity"),
        "capacity is logged: {log}"
    );
    eprintln!("50 waiters answered {answered:?} after SIGTERM; exited after {exited:?}");
}

/// The directory holding the cdylib this `cargo test` built (beside the test binary).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        if dir.join("liblms_realtime.so").exists() {
            return dir;
        }
    }
    panic!("liblms_realtime.so not found beside {}", exe.display());
}

/// Compiles `tests/c/publisher.c` against the checked-in header and the cdylib.
pub fn compile_publisher(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11",
            "-D_POSIX_C_SOURCE=200809L",
            "-O1",
            "-Wall",
            "-Werror",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/publisher.c"))
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-llms_realtime", "-lpthread"])
        .status()
        .unwrap();
    assert!(status.success(), "compiling tests/c/publisher.c failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_through_the_c_abi_in_another_process_wakes_a_waiting_poll() {
    let d = Daemon::start(config()).await;
    let exe = d.dir.path().join("publisher");
    compile_publisher(&exe);
    let head = d.store.head_cursor().unwrap().to_string();
    let addr = d.addr;
    let waiting = spawn_waiting_poll(addr, 1, head);
    wait_for_waiters(addr, 1).await;
    let db = d.dir.path().join("chat.db");
    let began = Instant::now();
    let out = Command::new(&exe)
        .arg(&db)
        .args(["1", "1", "0"])
        .output()
        .unwrap();
    let appended = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (v, woke) = waiting.await.unwrap();
    assert_eq!(ids(&v).len(), 1, "{v}");
    assert_eq!(v["events"][0]["data"]["seq"], 0);
    // The poll answered within a moment of the other process's append (which includes that
    // process's start-up and opening the store).
    let lag = woke.saturating_duration_since(appended);
    assert!(
        lag < Duration::from_millis(500),
        "woken {lag:?} after the append returned"
    );
    eprintln!(
        "publisher process ran {:?}; poll answered {:?} after it exited",
        appended - began,
        lag
    );
}

/// Walks channel 1 from the start with waiting polls until `want` events came; returns their
/// ids and data, in the order delivered.
async fn walk(addr: std::net::SocketAddr, want: usize) -> Vec<(i64, serde_json::Value)> {
    let mut c = Client::connect(addr).await;
    let tok = token(7, &[1]);
    let mut cursor = String::new();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < want {
        assert!(
            Instant::now() < deadline,
            "a walker received {} of {want} events within 30 s",
            seen.len()
        );
        let q = if cursor.is_empty() {
            "channels=1&timeout=5&limit=50".to_string()
        } else {
            format!("channels=1&timeout=5&limit=50&cursor={cursor}")
        };
        let v = c.poll(&tok, &q).await.json();
        assert_eq!(v["gap"], false, "no gap on a walk from the start: {v}");
        for e in v["events"].as_array().unwrap() {
            seen.push((e["id"].as_i64().unwrap(), e["data"].clone()));
        }
        cursor = v["cursor"].as_str().unwrap().to_owned();
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_mixed_with_another_processs_appends_are_each_delivered_once_in_order() {
    const HTTP: usize = 300;
    const OTHER: usize = 300;
    let d = Daemon::start(config()).await;
    let exe = d.dir.path().join("publisher");
    compile_publisher(&exe);
    let addr = d.addr;
    let walkers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(walk(addr, HTTP + OTHER)))
        .collect();
    wait_for_waiters(addr, 3).await;
    // The other process appends to channel 1 as fast as it can while two connections publish.
    let db = d.dir.path().join("chat.db");
    let other = std::thread::spawn(move || {
        Command::new(&exe)
            .arg(&db)
            .args(["1", &OTHER.to_string(), "0"])
            .output()
            .unwrap()
    });
    let mut publishers = Vec::new();
    for p in 0..2 {
        publishers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut ids = Vec::new();
            for j in (p..HTTP).step_by(2) {
                let body = serde_json::json!({
                    "event_type": "message_create", "channel_id": 1, "data": {"h": j}
                });
                let r = c.publish(&body).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                ids.push(r.json()["ids"][0].as_i64().unwrap());
            }
            ids
        }));
    }
    let mut published = std::collections::BTreeSet::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    let out = other.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for w in walkers {
        let seen = w.await.unwrap();
        assert_eq!(seen.len(), HTTP + OTHER, "nothing more than was appended");
        assert!(
            seen.windows(2).all(|p| p[0].0 < p[1].0),
            "ids strictly ascending: no duplicate, no reordering"
        );
        let from_http: std::collections::BTreeSet<i64> = seen
            .iter()
            .filter(|(_, data)| data.get("h").is_some())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(from_http, published, "every publish, with its id");
        let mut seqs: Vec<i64> = seen
            .iter()
            .filter_map(|(_, data)| data.get("seq").and_then(|s| s.as_i64()))
            .collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..OTHER as i64).collect::<Vec<_>>(),
            "every append of the other process, once"
        );
    }
}

/// Whether `php` with the FFI extension is on the PATH (php-ext/run-tests.sh installs it; a
/// bare `cargo test` on a machine without it skips the PHP test below).
fn php_with_ffi() -> bool {
    Command::new("php").arg("-m").output().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "FFI")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_from_a_php_process_wakes_a_waiting_poll() {
    if !php_with_ffi() {
        assert!(
            std::env::var_os("LMSRT_REQUIRE_PHP").is_none(),
            "LMSRT_REQUIRE_PHP is set but there is no php with FFI on the PATH"
        );
        eprintln!("skipped: no php with FFI on the PATH (php-ext/run-tests.sh installs it)");
        return;
    }
    let d = Daemon::start(config()).await;
    let head = d.store.head_cursor().unwrap().to_string();
    let addr = d.addr;
    let waiting = spawn_waiting_poll(addr, 4, head);
    wait_for_waiters(addr, 1).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("php")
        .args(["-d", "ffi.enable=1"])
        .arg(root.join("php-ext/tests/fixtures/publisher.php"))
        .arg(d.dir.path().join("chat.db"))
        .args(["4", "from a PHP worker"])
        .env("LMSRT_LIBRARY", library_dir().join("liblms_realtime.so"))
        .output()
        .unwrap();
    let appended = Instant::now();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let (v, woke) = waiting.await.unwrap();
    assert_eq!(ids(&v), vec![id]);
    assert_eq!(v["events"][0]["data"]["from"], "php");
    let lag = woke.saturating_duration_since(appended);
    assert!(
        lag < Duration::from_millis(500),
        "woken {lag:?} after PHP returned"
    );
    eprintln!("poll answered {lag:?} after the PHP process exited");
}
