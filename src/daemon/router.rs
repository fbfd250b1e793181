//! Routing: every request enters at [`handle`] (or [`handle_ops`] on the ops reserve) and goes
//! to its endpoint module. The router sits on top of the HTTP layer: it depends on every
//! endpoint, and none depends on it.
//!
//! Routes: `GET /v1/poll` (`poll.rs`), `GET|POST /v1/lms/poll` (the LMS theme's long poll,
//! `lms.rs`), `POST /v1/events` (`publish.rs`), `GET /healthz` and
//! `GET /metrics` (`ops.rs`), CORS preflights (`response.rs`), `GET /v1/stream` (server-sent
//! events, `stream.rs`), and with `--demo` the demo pages (`demo.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::auth;
use super::error::ApiError;
use super::response::{HandlerFuture, Meta, Resp, preflight};
use super::state::State;
use super::{demo, lms, ops, poll, publish, stream};
use crate::guards::ClientMode;
use crate::metrics::Counter;

/// Entry point of every request hyper reads.
///
/// A poll's future is built by `poll::serve` (kept compact: thousands of them wait at once);
/// everything else runs in [`route`].
pub(crate) fn handle(state: Arc<State>, peer: SocketAddr, req: Request<Incoming>) -> HandlerFuture {
    let meta = match enter(&state, peer, &req) {
        Ok(meta) => meta,
        Err(refused) => return refused,
    };
    if is_poll(req.method(), req.uri().path()) {
        return serve_poll(state, meta, peer, req);
    }
    if req.uri().path() == "/v1/lms/poll" && matches!(*req.method(), Method::GET | Method::POST) {
        return lms::serve(state, meta, peer, req);
    }
    if is_stream(req.method(), req.uri().path()) {
        return stream::serve(state, meta, peer, req);
    }
    Box::pin(async move {
        let r = route(&state, peer, req).await;
        meta.respond(&state, r)
    })
}

/// Entry point of a `GET /v1/stream` read by the lean path (`lean.rs`, the connection's first
/// request, [`is_stream`]): what [`handle`] does with it, without a body type of hyper's.
pub(crate) fn handle_stream(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<()>,
) -> HandlerFuture {
    debug_assert!(is_stream(req.method(), req.uri().path()));
    match enter(&state, peer, &req) {
        Ok(meta) => stream::serve(state, meta, peer, req),
        Err(refused) => refused,
    }
}

/// Entry point of a `GET /v1/poll` read by the lean path (`lean.rs`, [`is_poll`]): what
/// [`handle`] does with it, without a body type of hyper's.
pub(crate) fn handle_poll(state: Arc<State>, peer: SocketAddr, req: Request<()>) -> HandlerFuture {
    debug_assert!(is_poll(req.method(), req.uri().path()));
    match enter(&state, peer, &req) {
        Ok(meta) => serve_poll(state, meta, peer, req),
        Err(refused) => refused,
    }
}

/// A `GET /v1/poll`: `shared.rs` with the guards in Redis (their calls awaited), else `poll.rs`.
fn serve_poll<B>(
    state: Arc<State>,
    meta: Meta,
    peer: SocketAddr,
    req: Request<B>,
) -> HandlerFuture {
    #[cfg(feature = "redis")]
    if state.shared_guards.is_some() {
        return super::shared::serve_poll(state, meta, peer, req);
    }
    poll::serve(state, meta, peer, req)
}

/// Whether a request is a `GET /v1/poll`, the route of `poll.rs`.
pub(crate) fn is_poll(method: &Method, path: &str) -> bool {
    path == "/v1/poll" && method == Method::GET
}

/// Whether a request is a `GET /v1/stream`, the route of `stream.rs`.
pub(crate) fn is_stream(method: &Method, path: &str) -> bool {
    path == "/v1/stream" && method == Method::GET
}

/// What every request goes through before its endpoint: its [`Meta`], and behind a proxy the
/// count of its client address (whose refusal is the `Err`).
fn enter<B>(state: &Arc<State>, peer: SocketAddr, req: &Request<B>) -> Result<Meta, HandlerFuture> {
    let mut meta = Meta::new(state, peer, req);
    // Behind a proxy every connection is the proxy's: the client's address, known only now,
    // is counted per request in flight. Health checks and scrapes are not counted.
    if state.config.trust_proxy && !matches!(req.uri().path(), "/healthz" | "/metrics") {
        let ip = auth::client_ip(req.headers(), peer, true);
        match state.addresses.acquire(ip) {
            Some(slot) => meta.address = Some(slot),
            None => {
                state.metrics.incr(Counter::ConnectionsRefused);
                let e = ApiError::TooMany {
                    code: "too_many_connections_from_address",
                    message: "this address has as many requests open as the daemon allows one \
                              address (--max-connections-per-ip)"
                        .into(),
                    retry_after_ms: 1000,
                };
                return Err(Box::pin(std::future::ready(meta.respond(state, Err(e)))));
            }
        }
    }
    Ok(meta)
}

/// Entry point of a connection of the ops reserve (the daemon is at its capacity): `/healthz`
/// and `/metrics` are answered as usual, anything else gets the 503 a connection over capacity
/// gets.
pub(crate) fn handle_ops(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> HandlerFuture {
    let meta = Meta::new(&state, peer, &req);
    let r = match (req.method() == Method::GET, req.uri().path()) {
        (true, "/healthz") => Ok(ops::health(&state)),
        (true, "/metrics") => Ok(ops::metrics(&state)),
        _ => Err(ApiError::Unavailable {
            code: "too_many_connections",
            message: "the daemon is at its connection capacity".into(),
            mode: ClientMode::Short,
            retry_after_ms: 1000,
        }),
    };
    Box::pin(std::future::ready(meta.respond(&state, r)))
}

async fn route(
    state: &Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let path = req.uri().path();
    let method = req.method();
    if method == Method::OPTIONS {
        return preflight(state, req.headers());
    }
    match path {
        "/v1/poll" | "/v1/stream" => Err(ApiError::MethodNotAllowed("GET")),
        "/v1/lms/poll" => Err(ApiError::MethodNotAllowed("GET, POST")),
        "/v1/events" => {
            only(method, &Method::POST, "POST")?;
            // Boxed, like every branch but the poll: a waiting poll's future is as large as
            // the largest branch, and there are thousands of them.
            Box::pin(publish::publish(state, peer, req)).await
        }
        "/healthz" => {
            only(method, &Method::GET, "GET")?;
            Ok(ops::health(state))
        }
        "/metrics" => {
            only(method, &Method::GET, "GET")?;
            Ok(ops::metrics(state))
        }
        p if state.config.demo && (p == "/" || p == "/demo" || p.starts_with("/demo/")) => {
            Box::pin(demo::route(state, req)).await
        }
        _ => Err(ApiError::NotFound),
    }
}

fn only(method: &Method, want: &Method, allow: &'static str) -> Result<(), ApiError> {
    if method == want {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(allow))
    }
}
