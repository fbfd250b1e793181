//! The size of a waiting long-poll's task: thousands of them wait at once, each allocated as
//! large as its future's largest state.

use std::sync::atomic::Ordering;

use super::*;
use crate::token::{self, TokenKey};

const KEY: &str = "k1:0123456789abcdef0123456789abcdef";

/// The task a connection's lean long-polls run in (`daemon::serve_polls`) is smaller than the
/// reading of a next head and than a lean stream: it boxes the one and hands the other to a
/// task of its own. When it awaited both inline, the polls' future alone was 1,936 bytes (a
/// debug build); the task's whole future is now 424 (416 in a release build, which with tokio's
/// task header and trailer fills a 512-byte allocation; `benches/journal/
/// 2026-12-07-idle-poll-memory.md`).
#[tokio::test]
async fn a_waiting_polls_task_holds_no_room_for_a_next_head_or_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        crate::store::EventStore::open(dir.path().join("e.db"), Default::default()).unwrap(),
    );
    let config = super::super::Config {
        token_key: Some(KEY.into()),
        ..Default::default()
    };
    let state = super::super::state::build(store, config).unwrap().state;
    let tok = token::issue(&TokenKey::parse(KEY).unwrap(), 7, &[1], 4_000_000_000, "t").unwrap();
    let req = |path: &str| {
        Box::new(
            Request::builder()
                .uri(path)
                .header("authorization", format!("Bearer {tok}"))
                .body(())
                .unwrap(),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let _other = TcpStream::connect(addr).await.unwrap();
    let (tcp, peer) = listener.accept().await.unwrap();
    let (tcp2, _) = listener.accept().await.unwrap();

    let head = std::mem::size_of_val(&next_request(&state, &tcp2, Vec::new()));
    let stream = std::mem::size_of_val(&serve(
        state.clone(),
        TimedIo::new(tcp2, Duration::from_secs(1)),
        peer,
        req("/v1/stream?channels=1"),
    ));
    let mut io = TimedIo::new(tcp, Duration::from_secs(1));
    let mut early = Vec::new();
    let wait = std::mem::size_of_val(&wait_poll(
        &state,
        &mut io,
        &peer,
        req("/v1/poll?channels=1"),
        &mut early,
    ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Counted as `daemon::run` counts an accepted connection (given back when dropped).
    state.connections.fetch_add(1, Ordering::Relaxed);
    let counted = super::super::Counted {
        state: state.clone(),
        _slot: None,
    };
    let task = std::mem::size_of_val(&super::super::serve_polls(
        Arc::new(hyper::server::conn::http1::Builder::new()),
        graceful.watcher(),
        io,
        peer,
        req("/v1/poll?channels=1"),
        counted,
    ));
    eprintln!(
        "futures, bytes: a connection's polls {task} (a poll's wait {wait}), \
         reading a next head {head}, a lean stream {stream}"
    );
    assert!(
        task < head && task < stream,
        "a waiting poll's task ({task} bytes) holds room for a next head ({head}) or a stream \
         ({stream})"
    );
}
