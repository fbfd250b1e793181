//! Shared by the daemon's integration tests: start a daemon on `127.0.0.1:0` over a temporary
//! store, and talk to it with a real HTTP/1.1 client (hyper's, one kept-alive connection per
//! [`Client`]) or a raw TCP stream.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use lms_realtime::daemon::{self, Config, Spawned};
use lms_realtime::token::{self, TokenKey};
use lms_realtime::{EventStore, store};
use serde_json::Value;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const OLD_SECRET: &str = "old-secret-0123456789abcdef-0123456789ab";

pub fn key() -> TokenKey {
    TokenKey::new("k1", SECRET.as_bytes().to_vec()).unwrap()
}

pub fn old_key() -> TokenKey {
    TokenKey::new("k0", OLD_SECRET.as_bytes().to_vec()).unwrap()
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for `uid` on `channels`, valid for 10 minutes.
pub fn token(uid: i64, channels: &[i64]) -> String {
    token::issue(&key(), uid, channels, now_s() + 600, "session").unwrap()
}

/// The test configuration: a key, short timeouts, generous limits.
pub fn config() -> Config {
    Config {
        token_key: Some(format!("k1:{SECRET}")),
        token_key_previous: Some(format!("k0:{OLD_SECRET}")),
        poll_timeout: 10,
        poll_rate: 100_000,
        poll_burst: 10_000,
        ip_rate: 1_000_000,
        ip_burst: 100_000,
        purge_interval: 0,
        ..Config::default()
    }
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub store: Arc<EventStore>,
    pub addr: SocketAddr,
    pub spawned: Option<Spawned>,
    pub config: Config,
}

impl Daemon {
    pub async fn start(config: Config) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            EventStore::open(dir.path().join("chat.db"), store::Config::default()).unwrap(),
        );
        let spawned = daemon::spawn(store.clone(), config.clone()).await.unwrap();
        Daemon {
            dir,
            store,
            addr: spawned.addr,
            spawned: Some(spawned),
            config,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Shuts the daemon down and waits for `run` to return.
    pub async fn stop(&mut self) {
        if let Some(s) = self.spawned.take() {
            let _ = s.shutdown.send(());
            s.task.await.unwrap().unwrap();
        }
    }

    /// Publishes events over `POST /v1/events` (signed); returns their ids.
    pub async fn publish(&self, client: &mut Client, body: &Value) -> Vec<i64> {
        let r = client.publish(body).await;
        assert_eq!(r.status, StatusCode::OK, "publish: {}", r.text());
        r.json()["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// One kept-alive HTTP/1.1 connection.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    pub addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { sender, addr }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(path).header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::new())).unwrap()).await
    }

    /// `GET /v1/poll?{query}` with a bearer token.
    pub async fn poll(&mut self, token: &str, query: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.get(&format!("/v1/poll?{query}"), &[("authorization", &auth)])
            .await
    }

    /// A signed `POST /v1/events`.
    pub async fn publish(&mut self, body: &Value) -> Reply {
        self.publish_bytes(serde_json::to_vec(body).unwrap()).await
    }

    /// A signed `POST /v1/events` of exactly these bytes (for bodies serde_json would not
    /// build, such as data nested hundreds of levels deep).
    pub async fn publish_bytes(&mut self, body: Vec<u8>) -> Reply {
        let ts = now_s();
        let sig = token::sign_publish(&key(), ts, &body);
        self.post_raw(
            "/v1/events",
            body,
            &[
                ("x-lms-timestamp", &ts.to_string()),
                ("x-lms-signature", &sig),
            ],
        )
        .await
    }

    pub async fn post_raw(&mut self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
    }
}

/// Ids of a poll response's events.
pub fn ids(v: &Value) -> Vec<i64> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// Sends raw bytes on a fresh connection and returns everything read until the server closes
/// it (or `wait` passes).
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Longest a test waits for the daemon to reach a state it reports on `/healthz`.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// Asks `/healthz` (over one connection of its own) until `ready` holds for its body, and
/// returns that body. Panics after [`READY_WITHIN`] with `what` and the last body seen: a
/// daemon that never gets there fails the test, it does not hang it. Tests wait on this, never
/// on a sleep: a sleep is too short on a busy machine and wasted time on a quiet one.
pub async fn wait_for_health(
    addr: SocketAddr,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + READY_WITHIN;
    let mut c = Client::connect(addr).await;
    let mut last = Value::Null;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, c.get("/healthz", &[])).await {
            Ok(r) => last = r.json(),
            Err(_) => break,
        }
        if ready(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("waited {READY_WITHIN:?} for {what}; the last /healthz said: {last}");
}

/// Waits until exactly `n` polls wait in the daemon (`waiters` in `/healthz`). A poll counts
/// from the moment it registers with the fan-out, before it reads anything: an event published
/// after this returns wakes it.
pub async fn wait_for_waiters(addr: SocketAddr, n: u64) -> Value {
    wait_for_health(addr, &format!("{n} waiting polls"), |h| h["waiters"] == n).await
}
