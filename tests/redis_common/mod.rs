//! Shared by the Redis engine's tests: a `redis-server` of the test's own, on a free loopback
//! port, with its files in a temporary directory, stopped when dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Append-only file with an fsync per write: a restart keeps everything.
    persistent: bool,
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart starts it empty.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    /// A server with `appendonly yes` and `appendfsync always`: a restart keeps every write.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut s = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            persistent,
        };
        s.run();
        s
    }

    /// Starts the server process (again) on the same port and directory.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: no goodbye, as a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts it again (empty unless persistent).
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// `redis://127.0.0.1:PORT/0?store=NAME` for a store name used by no other test here.
    pub fn url(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "redis://127.0.0.1:{}/0?store=t{}",
            self.port,
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends one command (inline form, no spaces inside arguments) and returns the first line
    /// of the reply, or `None` when the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{}\r\n", args.join(" ")).as_bytes())
            .ok()?;
        let mut buf = [0u8; 512];
        let mut out = Vec::new();
        while !out.ends_with(b"\r\n") {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        Some(text.lines().next().unwrap_or("").to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
