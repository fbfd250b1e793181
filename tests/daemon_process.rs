//! The daemon as a process among others: the real `lms-longpolld` binary answers its waiting
//! polls and exits promptly on SIGTERM, and an append made by a separate process through the
//! C ABI (as a PHP worker makes it) wakes a waiting poll within milliseconds.

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
