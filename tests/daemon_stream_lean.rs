//! `GET /v1/stream` as the first request of a connection is served by the daemon's lean path
//! (`src/daemon/lean.rs`), without hyper, and so are `GET /v1/poll`s as long as a connection
//! sends nothing else (kept alive between them), and a stream after them; anything else still goes
//! to hyper. Raw TCP here, to see the bytes: the lean path writes what hyper writes (plus
//! `connection: close`), a stream on a connection kept alive by hyper is hyper's, heads that are malformed, oversized, pipelined or
//! slow get hyper's answers and limits, and a client that leaves frees its stream.

#![cfg(feature = "daemon")]

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a test waits for bytes from the daemon.
const WAIT: Duration = Duration::from_secs(10);

/// A connection read as raw bytes: a response head, then its body (chunked or by length).
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A response head: the status code and the headers (names lowercase, in order).
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        n.sort_unstable();
        n
    }
}

impl Raw {
    async fn connect(d: &Daemon) -> Raw {
        Raw {
            tcp: TcpStream::connect(d.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes; false at EOF. Panics after [`WAIT`].
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "nothing within {WAIT:?}; unread: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next `len` bytes, or the bytes up to and with `end`.
    async fn take(&mut self, until: impl Fn(&[u8]) -> Option<usize>) -> Vec<u8> {
        loop {
            if let Some(n) = until(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            assert!(
                self.fill().await,
                "EOF; unread: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    async fn line(&mut self) -> String {
        let l = self
            .take(|b| b.windows(2).position(|w| w == b"\r\n").map(|i| i + 2))
            .await;
        String::from_utf8(l[..l.len() - 2].to_vec()).unwrap()
    }

    async fn head(&mut self) -> Head {
        let status = self.line().await;
        let status = status
            .strip_prefix("HTTP/1.1 ")
            .unwrap_or_else(|| panic!("a status line: {status:?}"))[..3]
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return Head { status, headers };
            }
            let (n, v) = l.split_once(": ").expect("a header line");
            headers.push((n.to_ascii_lowercase(), v.to_owned()));
        }
    }

    /// The next chunk of a chunked body (empty: the last one).
    async fn chunk(&mut self) -> String {
        let size = usize::from_str_radix(&self.line().await, 16).expect("a chunk size");
        let data = self
            .take(|b| (b.len() >= size + 2).then_some(size + 2))
            .await;
        assert_eq!(&data[size..], b"\r\n");
        String::from_utf8(data[..size].to_vec()).unwrap()
    }

    /// A body of `content-length` bytes.
    async fn body(&mut self, head: &Head) -> String {
        let len: usize = head.get("content-length").unwrap().parse().unwrap();
        let b = self.take(|b| (b.len() >= len).then_some(len)).await;
        String::from_utf8(b).unwrap()
    }

    /// Whether the daemon closes the connection (without sending more) within [`WAIT`].
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

fn stream_head(token: &str, query: &str) -> String {
    format!(
        "GET /v1/stream?{query} HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\n\
         authorization: Bearer {token}\r\n\r\n"
    )
}

async fn publish_one(d: &Daemon, n: i64) {
    let mut c = d.client().await;
    d.publish(
        &mut c,
        &json!({"event_type": "message_create", "channel_id": 1, "message_id": n}),
    )
    .await;
}

async fn open_streams(d: &Daemon) -> u64 {
    let mut c = d.client().await;
    c.get("/healthz", &[]).await.json()["streams"]
        .as_u64()
        .unwrap()
}

/// The first stream of a fresh connection and one on a kept-alive connection (hyper's) get
/// the same head, but for `connection: close`, `date` and the request id, and the same frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_and_hyper_streams_write_the_same_head_and_frames() {
    let d = Daemon::start(config()).await;
    let mut lean = Raw::connect(&d).await;
    lean.send(stream_head(&token(1, &[1]), "channels=1").as_bytes())
        .await;
    let mut kept = Raw::connect(&d).await;
    kept.send(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let h = kept.head().await;
    assert_eq!(h.status, 200);
    kept.body(&h).await;
    kept.send(stream_head(&token(2, &[1]), "channels=1").as_bytes())
        .await;

    let lh = lean.head().await;
    let kh = kept.head().await;
    assert_eq!((lh.status, kh.status), (200, 200));
    assert_eq!(lh.get("connection"), Some("close"), "the lean path's");
    assert_eq!(kh.get("connection"), None, "hyper's");
    let mut names = kh.names();
    names.push("connection");
    names.sort_unstable();
    assert_eq!(lh.names(), names);
    for (name, value) in &kh.headers {
        if name != "date" && name != "x-request-id" {
            assert_eq!(lh.get(name), Some(value.as_str()), "{name}");
        }
    }
    assert_eq!(lh.get("transfer-encoding"), Some("chunked"));
    assert_eq!(lean.chunk().await, kept.chunk().await, "the first frame");

    wait_for_waiters(d.addr, 2).await;
    publish_one(&d, 7).await;
    let (l, k) = (lean.chunk().await, kept.chunk().await);
    assert!(l.contains("\"message_id\":7"), "{l}");
    assert_eq!(l, k);
}

/// Heads the lean path does not take get hyper's answers: malformed (400), oversized (431),
/// HTTP/1.0 (served, not chunked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_stream_heads_get_hypers_answers() {
    let mut cfg = config();
    cfg.max_header_bytes = 1024;
    let d = Daemon::start(cfg).await;

    let mut r = Raw::connect(&d).await;
    r.send(b"GET /v1/stream?channels=1 HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n")
        .await;
    assert_eq!(r.head().await.status, 400);

    let mut r = Raw::connect(&d).await;
    let big = format!(
        "GET /v1/stream?channels=1 HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(2000)
    );
    r.send(big.as_bytes()).await;
    assert_eq!(r.head().await.status, 431);

    let mut r = Raw::connect(&d).await;
    r.send(
        format!(
            "GET /v1/stream?channels=1 HTTP/1.0\r\nauthorization: Bearer {}\r\n\r\n",
            token(3, &[1])
        )
        .as_bytes(),
    )
    .await;
    let status = r.line().await;
    assert!(status.starts_with("HTTP/1.0 200") || status.starts_with("HTTP/1.1 200"));
    let mut rest = r
        .take(|b| b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4))
        .await;
    rest.make_ascii_lowercase();
    assert!(
        !String::from_utf8(rest)
            .unwrap()
            .contains("transfer-encoding")
    );
}

/// A stream head sent in pieces is read whole; one that never finishes is closed at the
/// header timeout, without an answer, as hyper closes any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_head_is_read_whole_until_the_header_timeout() {
    let mut cfg = config();
    cfg.header_timeout = 1;
    let d = Daemon::start(cfg).await;

    let head = stream_head(&token(4, &[1]), "channels=1");
    let mut r = Raw::connect(&d).await;
    for piece in head.as_bytes().chunks(head.len() / 3 + 1) {
        r.send(piece).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let h = r.head().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.get("connection"), Some("close"));
    assert!(r.chunk().await.starts_with("retry:"));

    let mut slow = Raw::connect(&d).await;
    slow.send(&head.as_bytes()[..head.len() - 2]).await;
    let began = Instant::now();
    assert!(slow.closed().await, "closed without an answer");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Nothing sent at all: closed at the header timeout too.
    let mut idle = Raw::connect(&d).await;
    let began = Instant::now();
    assert!(idle.closed().await);
    assert!(began.elapsed() < Duration::from_secs(4));
}

/// A request pipelined after a stream's head is neither lost nor read as part of the stream:
/// hyper serves the connection, and answers it once the stream ends (here at its token's
/// expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_after_a_stream_head_is_answered_after_the_stream() {
    let d = Daemon::start(config()).await;
    let t = lms_realtime::token::issue(&key(), 5, &[1], now_s() + 2, "session").unwrap();
    let mut r = Raw::connect(&d).await;
    let mut both = stream_head(&t, "channels=1");
    both.push_str("GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n");
    r.send(both.as_bytes()).await;
    let h = r.head().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.get("connection"), None, "hyper's: the connection goes on");
    while !r.chunk().await.is_empty() {}
    let h = r.head().await;
    assert_eq!(h.status, 200, "the pipelined /healthz");
    assert!(r.body(&h).await.contains("\"status\""));
}

/// Bytes a client sends after its stream's head do not end the stream; the client closing
/// its connection does, and gives the stream's slot and count back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_stream_reads_until_its_client_leaves() {
    let d = Daemon::start(config()).await;
    let mut r = Raw::connect(&d).await;
    r.send(stream_head(&token(6, &[1]), "channels=1").as_bytes())
        .await;
    assert_eq!(r.head().await.status, 200);
    assert!(r.chunk().await.starts_with("retry:"));
    r.send(b"GET /healthz HTTP/1.1\r\n\r\nnoise").await;
    wait_for_waiters(d.addr, 1).await;
    publish_one(&d, 9).await;
    let frame = r.chunk().await;
    assert!(frame.contains("\"message_id\":9"), "{frame}");
    assert_eq!(open_streams(&d).await, 1);
    drop(r);
    wait_for_health(d.addr, "the stream to end", |h| h["streams"] == 0).await;
    wait_for_waiters(d.addr, 0).await;
}

/// Behind a proxy, a lean stream holds its client address's count (the router's own check) for
/// as long as it lasts, as a stream through hyper does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_a_lean_stream_holds_its_client_addresss_count() {
    let mut cfg = config();
    cfg.trust_proxy = true;
    cfg.max_connections_per_ip = 1;
    let d = Daemon::start(cfg).await;
    let from = |uid: i64, xff: &str| {
        let mut head = stream_head(&token(uid, &[1]), "channels=1");
        head.insert_str(head.len() - 2, &format!("x-forwarded-for: {xff}\r\n"));
        head
    };
    let mut first = Raw::connect(&d).await;
    first.send(from(20, "203.0.113.7").as_bytes()).await;
    let h = first.head().await;
    assert_eq!((h.status, h.get("connection")), (200, Some("close")));
    let mut second = Raw::connect(&d).await;
    second.send(from(21, "203.0.113.7").as_bytes()).await;
    let h = second.head().await;
    assert_eq!(h.status, 429);
    assert!(
        second
            .body(&h)
            .await
            .contains("too_many_connections_from_address")
    );
    let mut other = Raw::connect(&d).await;
    other.send(from(22, "198.51.100.9").as_bytes()).await;
    assert_eq!(other.head().await.status, 200);
    // The first stream's end gives the address's count back.
    drop(first);
    wait_for_health(d.addr, "one stream fewer", |h| h["streams"] == 1).await;
    let mut again = Raw::connect(&d).await;
    again.send(from(20, "203.0.113.7").as_bytes()).await;
    assert_eq!(again.head().await.status, 200);
}

fn poll_head(token: &str, query: &str, extra: &str) -> String {
    format!(
        "GET /v1/poll?{query} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n{extra}\r\n"
    )
}

/// Long-polls are lean too, on a connection kept alive: poll after poll on one connection,
/// each answered with a length and no `connection: close`; a later request that is not a poll
/// goes to hyper with its bytes, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_are_lean_and_kept_alive_until_another_request_goes_to_hyper() {
    let d = Daemon::start(config()).await;
    let mut c = d.client().await;
    let ids = d
        .publish(
            &mut c,
            &json!({"event_type": "message_create", "channel_id": 1}),
        )
        .await;
    let t = token(6, &[1]);
    let mut r = Raw::connect(&d).await;
    r.send(poll_head(&t, "channels=1&timeout=0", "").as_bytes())
        .await;
    let h = r.head().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.get("connection"), None, "kept alive");
    let first: serde_json::Value = serde_json::from_str(&r.body(&h).await).unwrap();
    assert_eq!(first["events"][0]["id"], ids[0]);
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    // The next poll on the same connection waits, and is answered by a publish.
    r.send(poll_head(&t, &format!("channels=1&timeout=20&cursor={cursor}"), "").as_bytes())
        .await;
    wait_for_waiters(d.addr, 1).await;
    // Another body: the same one again within the second would be a replay of the first.
    let ids = d
        .publish(
            &mut c,
            &json!({"event_type": "message_create", "channel_id": 1, "message_id": 2}),
        )
        .await;
    let h = r.head().await;
    assert_eq!(h.status, 200);
    let second: serde_json::Value = serde_json::from_str(&r.body(&h).await).unwrap();
    assert_eq!(
        second["events"][0]["id"], ids[0],
        "no loss, no repeat: {second} after {first}"
    );
    // Then something else on the same connection: hyper's.
    r.send(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let h = r.head().await;
    assert_eq!(h.status, 200);
    assert!(r.body(&h).await.contains("\"status\""));
}

/// A client that leaves while its poll waits frees its slot at once (a user's next poll is
/// admitted), and a request it pipelines behind its poll is answered after the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_poll_frees_its_slot_when_the_client_leaves_and_keeps_pipelined_bytes() {
    let mut cfg = config();
    cfg.slots_per_user = 1;
    let d = Daemon::start(cfg).await;
    let t = token(8, &[1]);
    let mut gone = Raw::connect(&d).await;
    gone.send(poll_head(&t, "channels=1&timeout=20", "").as_bytes())
        .await;
    wait_for_waiters(d.addr, 1).await;
    drop(gone);
    // The one slot is free again once the daemon sees the close.
    let began = Instant::now();
    let mut c = d.client().await;
    loop {
        let r = c.poll(&t, "channels=1&timeout=0").await;
        if r.status == hyper::StatusCode::OK {
            break;
        }
        assert_eq!(r.code(), "slots_exhausted", "{}", r.text());
        assert!(began.elapsed() < WAIT, "the slot was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A /healthz sent behind a waiting poll is answered once the poll is.
    let mut r = Raw::connect(&d).await;
    r.send(poll_head(&t, "channels=1&timeout=1", "").as_bytes())
        .await;
    wait_for_waiters(d.addr, 1).await;
    r.send(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let h = r.head().await;
    assert_eq!(h.status, 200, "the poll, at its timeout");
    assert!(r.body(&h).await.contains("\"events\":[]"));
    let h = r.head().await;
    assert_eq!(h.status, 200, "the pipelined /healthz");
    assert!(r.body(&h).await.contains("\"status\""));
}

/// A poll that asks to close the connection, or an HTTP/1.0 one, is hyper's as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_closes_its_connection_is_hypers() {
    let d = Daemon::start(config()).await;
    let t = token(9, &[1]);
    let mut r = Raw::connect(&d).await;
    r.send(poll_head(&t, "channels=1&timeout=0", "connection: close\r\n").as_bytes())
        .await;
    let h = r.head().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.get("connection"), Some("close"));
    r.body(&h).await;
    assert!(r.closed().await);
    let one_o = raw(
        d.addr,
        format!("GET /v1/poll?channels=1&timeout=0 HTTP/1.0\r\nauthorization: Bearer {t}\r\n\r\n")
            .as_bytes(),
        WAIT,
    )
    .await;
    assert!(one_o.starts_with("HTTP/1.0 200"), "{one_o}");
}

/// A stream after polls on one kept-alive connection is lean too (in a task of its own, not
/// the polls'): `connection: close`, its frames, and its slot and count given back when the
/// client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_after_polls_on_one_connection_is_lean() {
    let d = Daemon::start(config()).await;
    let t = token(10, &[1]);
    let mut r = Raw::connect(&d).await;
    for _ in 0..2 {
        r.send(poll_head(&t, "channels=1&timeout=0", "").as_bytes())
            .await;
        let h = r.head().await;
        assert_eq!(h.status, 200);
        assert_eq!(h.get("connection"), None, "kept alive");
        assert!(r.body(&h).await.contains("\"events\":[]"));
    }
    r.send(stream_head(&t, "channels=1").as_bytes()).await;
    let h = r.head().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.get("connection"), Some("close"), "the lean path's");
    assert_eq!(h.get("transfer-encoding"), Some("chunked"));
    assert!(r.chunk().await.starts_with("retry:"));
    wait_for_waiters(d.addr, 1).await;
    publish_one(&d, 11).await;
    let frame = r.chunk().await;
    assert!(frame.contains("\"message_id\":11"), "{frame}");
    assert_eq!(open_streams(&d).await, 1);
    drop(r);
    wait_for_health(d.addr, "the stream to end", |h| h["streams"] == 0).await;
    wait_for_waiters(d.addr, 0).await;
}
