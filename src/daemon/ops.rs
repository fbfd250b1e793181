//! `GET /healthz` and `GET /metrics`: what an orchestrator and a scraper see. Both are also
//! answered on the ops reserve when the daemon is at its connection capacity.

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::response::{Resp, json};
use super::state::State;
use crate::metrics::HealthStatus;

/// `/healthz`: 200 with the status, or 503 while shutting down, with the store's breaker open
/// or the store corrupt; the body says why, and counts connections, waiters and the ring.
pub(crate) fn health(state: &State) -> Resp {
    let mut h = state.metrics.health();
    let b = state.store_breaker();
    let shutting_down = *state.shutdown.borrow();
    let open = b.is_some_and(|b| !b.allowed);
    // Corruption met by this process (a request, or the fan-out's tail reader, which no
    // request sees) stays reported until a restart: the damaged page does not heal, and the
    // shared window of `corrupt_reads` forgets it after a minute without readers.
    let (corrupt_seen, corrupt_last) = crate::store::corruption_seen();
    if corrupt_seen > 0 {
        h.reasons.insert(
            0,
            format!(
                "the store is corrupt ({corrupt_seen} store calls of this daemon met a damaged \
                 page; latest: {}); stop the daemon, run `lms-longpolld --check` and salvage the \
                 file",
                corrupt_last.as_deref().unwrap_or("unknown")
            ),
        );
    }
    let corrupt = corrupt_seen > 0 || h.status == HealthStatus::Unavailable;
    let unavailable = shutting_down || open || corrupt;
    let status = if unavailable {
        "unavailable"
    } else {
        h.status.as_str()
    };
    let (ring_events, ring_floor, ring_head) = state.hub.ring_stats();
    let engine = state.store.engine_stats();
    let guards = state.guards_stats();
    let body = serde_json::json!({
        "status": status,
        "reasons": h.reasons,
        "corrupt": corrupt,
        "store": {
            "engine": state.store.engine_name(),
            "breaker": b.map(|b| b.state.as_str()),
            "mode": b.map_or("long", |b| b.mode.as_str()),
            "retry_ms": b.map_or(0, |b| b.retry_after_ms),
            "errors": engine.errors,
            "epoch_changes": engine.epoch_changes,
            "latency_us": engine.latency_us,
            "latency_max_us": engine.latency_max_us,
        },
        "guards": {
            "kind": guards.kind,
            "errors": guards.redis.map(|r| r.errors),
            "up": guards.redis.map(|r| r.up),
            "masters": guards.redis.map(|r| r.masters),
            "masters_down": guards.redis.map(|r| r.masters_down),
        },
        "connections": state.connections.load(Ordering::Relaxed),
        "connection_capacity": state.capacity,
        "ops_connections": state.ops_connections.load(Ordering::Relaxed),
        "waiters": state.hub.waiter_count(),
        "streams": state.streams.load(Ordering::Relaxed),
        "shards": state.hub.shard_count(),
        "shard_waiters": state.hub.shard_waiters(),
        "ring": { "events": ring_events, "floor": ring_floor, "head": ring_head },
        "shutting_down": shutting_down,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    let code = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, serde_json::to_vec(&body).unwrap_or_default())
}

/// `/metrics`: the store's metrics in Prometheus text, and this daemon's own gauges and
/// counters. The engine's latencies are left out until measured (never, on SQLite).
pub(crate) fn metrics(state: &State) -> Resp {
    let mut text = state.metrics.snapshot().to_prometheus();
    let (ring_events, _, ring_head) = state.hub.ring_stats();
    let open = state.store_breaker().is_some_and(|b| !b.allowed);
    for (name, help, value) in [
        (
            "lmsrt_daemon_connections",
            "Open client connections of this daemon.",
            state.connections.load(Ordering::Relaxed) as i64,
        ),
        (
            "lmsrt_daemon_connection_capacity",
            "Connections this daemon accepts (flag and open-file limit).",
            state.capacity as i64,
        ),
        (
            "lmsrt_daemon_waiters",
            "Long-polls waiting in this daemon.",
            state.hub.waiter_count() as i64,
        ),
        (
            "lmsrt_daemon_streams",
            "Server-sent event streams open in this daemon.",
            state.streams.load(Ordering::Relaxed) as i64,
        ),
        (
            "lmsrt_daemon_ring_events",
            "Recent events held in memory for the fan-out.",
            ring_events as i64,
        ),
        (
            "lmsrt_daemon_ring_head",
            "Newest event id the fan-out has seen.",
            ring_head,
        ),
        (
            "lmsrt_daemon_store_breaker_open",
            "1 while the store's circuit breaker refuses calls.",
            i64::from(open),
        ),
    ] {
        write_metric(&mut text, name, help, "gauge", value);
    }
    let engine = state.store.engine_stats();
    let _ = writeln!(
        text,
        "# HELP lmsrt_daemon_store_info The engine the store runs on.\n\
         # TYPE lmsrt_daemon_store_info gauge\n\
         lmsrt_daemon_store_info{{engine=\"{}\"}} 1",
        state.store.engine_name()
    );
    for (name, help, value) in [
        (
            "lmsrt_daemon_undeliverable_events_total",
            "Times a stored event whose data no reader can decode was met and skipped (rows \
             left by an older version or damage).",
            crate::store::undeliverable_events_seen(),
        ),
        (
            "lmsrt_daemon_store_errors_total",
            "Engine calls (Redis round trips) that failed with a storage error; 0 on SQLite, \
             whose faults are counted per operation.",
            engine.errors,
        ),
        (
            "lmsrt_daemon_store_epoch_changes_total",
            "New epochs the fan-out met: Redis restarted empty, was flushed or failed over \
             without the data (0 on SQLite).",
            engine.epoch_changes,
        ),
    ] {
        write_metric(&mut text, name, help, "counter", value);
    }
    if let Some(r) = state.guards_stats().redis {
        write_metric(
            &mut text,
            "lmsrt_daemon_guard_errors_total",
            "Calls of the guards shared through Redis that failed (decided on this host's \
             tables instead; slots refused).",
            "counter",
            r.errors,
        );
        write_metric(
            &mut text,
            "lmsrt_daemon_guards_up",
            "1 while the shared guards' decisions go to Redis, 0 while any master backs off.",
            "gauge",
            i64::from(r.up),
        );
        write_metric(
            &mut text,
            "lmsrt_daemon_guards_masters_down",
            "Masters of the shared guards' Redis backing off after a failure: their keys' \
             decisions are made on this host meanwhile.",
            "gauge",
            r.masters_down,
        );
    }
    for (name, help, value) in [
        (
            "lmsrt_daemon_store_latency_us",
            "Moving average of an engine round trip, in microseconds.",
            engine.latency_us,
        ),
        (
            "lmsrt_daemon_store_latency_max_us",
            "Slowest engine round trip since the store was opened, in microseconds.",
            engine.latency_max_us,
        ),
    ] {
        if let Some(value) = value {
            write_metric(&mut text, name, help, "gauge", value);
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Appends one metric, with its help and type lines, to `text`.
fn write_metric(text: &mut String, name: &str, help: &str, kind: &str, value: impl Display) {
    let _ = writeln!(
        text,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}
