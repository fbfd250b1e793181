//! `GET|POST /v1/lms/poll`: the long poll of the LMS chat theme ("lms-chat-system"), in the
//! theme's own contract, so that its unchanged client can wait here instead of in a PHP worker.
//!
//! The theme's client posts form fields to admin-ajax.php (`action=lms_unified_long_poll`,
//! `channel_id`, `thread_id`, `last_event_id`, optionally `event_types` and `timeout`, plus
//! nonces) and reads `{"success": true, "data": {"events": [...], "last_event_id", ...}}`. The
//! WordPress plugin's bridge script sends those same fields here with the user's token in
//! `Authorization`; this answers what the plugin would answer over admin-ajax.php: the next
//! events of the channel after `last_event_id` by id (sorted by priority inside the batch),
//! each with `event_type`, `timestamp` in milliseconds and `created_at` in ISO 8601 (the client
//! drops events whose `new Date(created_at || timestamp)` is over an hour old), held at most
//! [`MAX_HOLD`] because the theme's client gives up on a request after 7 s. Errors come in the
//! theme's shape, `{"success": false, "data": {"code", "message"}}`, with the HTTP status and
//! headers `/v1/poll` would give (the bridge falls back to admin-ajax.php on any of them).
//!
//! The checks, the wait and the fan-out are `/v1/poll`'s (`poll.rs`); only the form and the
//! body differ. The nonce fields are ignored: the token stands for the WordPress session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde::Serialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::fanout::{Format, Rendered};
use super::poll::{PollParams, admit, authorize, counted_wait, known_fields, poll_response};
use super::response::{HandlerFuture, Meta, Resp, error_response, read_body};
use super::state::State;
use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::error::ErrorCode;
use crate::event::{Event, Priority};
use crate::guards::ClientMode;
use crate::store::{Batch, FetchRequest, Order};

/// Longest hold: the theme's client abandons a request after 7 s and stops polling after five
/// abandoned in a row (the plugin holds it as long, `LEGACY_CLIENT_MAX_WAIT`).
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(5);

/// Serves one theme poll: token first (before a body is read), then the form, the channel,
/// the user's limits and slot, then the wait.
pub(crate) fn serve(
    state: Arc<State>,
    mut meta: Meta,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> HandlerFuture {
    Box::pin(async move {
        let r = answer(&state, &mut meta, peer, req).await;
        let gzip = meta.gzip;
        let resp = match r {
            Ok(rendered) => poll_response(&state, &rendered, gzip),
            Err(e) => error(&e),
        };
        meta.respond(&state, Ok(resp))
    })
}

async fn answer(
    state: &Arc<State>,
    meta: &mut Meta,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Arc<Rendered>, ApiError> {
    // With the guards in Redis the address's limit is awaited here, before the token, as in line.
    #[cfg(feature = "redis")]
    let ip = (state.shared_guards.is_some())
        .then(|| super::auth::client_ip(req.headers(), peer, state.config.trust_proxy));
    #[cfg(not(feature = "redis"))]
    let ip: Option<std::net::IpAddr> = None;
    #[cfg(feature = "redis")]
    if let Some(ip) = ip {
        Box::pin(super::shared::check_ip(state, ip)).await?;
    }
    let claims = match ip {
        Some(_) => super::poll::verify(state, meta, req.headers())?,
        None => authorize(state, meta, peer, req.headers())?,
    };
    let cfg = &state.config;
    let form = if req.method() == Method::POST {
        let (_, body) = read_body(
            req,
            cfg.max_body_bytes,
            Duration::from_secs(cfg.idle_timeout),
        )
        .await?;
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::BadRequest {
            code: ErrorCode::InvalidUtf8.name(),
            message: "the form is not UTF-8".into(),
        })?
    } else {
        req.uri().query().unwrap_or("").to_owned()
    };
    let params = parse_form(&form, cfg.poll_timeout, cfg.batch.min(cfg.max_batch))?;
    #[cfg(feature = "redis")]
    if ip.is_some() {
        let mut job = Box::pin(super::shared::admit(state, &claims, params)).await?;
        let r = Box::pin(counted_wait(state, &mut job.params, Format::Lms, render)).await;
        Box::pin(super::shared::release(job)).await;
        return r;
    }
    let mut job = admit(state, &claims, params)?;
    counted_wait(state, &mut job.params, Format::Lms, render).await
}

/// Parses the theme's form: `channel_id` (required, positive), `thread_id` (0 or empty: every
/// thread), `last_event_id` (empty: 0), `event_types` (`all`, empty, or a comma-separated list)
/// and `timeout` (seconds, caps the hold; ignored when not a whole number, as the plugin does).
/// Every other field (`action`, nonces, `connection_id`, `last_timestamp`, …) is ignored; one
/// of these given twice is refused.
pub(crate) fn parse_form(
    form: &str,
    max_timeout: u64,
    limit: usize,
) -> Result<PollParams, ApiError> {
    let mut channel = None;
    let mut thread = 0i64;
    let mut last = 0i64;
    let mut types: Vec<String> = Vec::new();
    let mut hold = MAX_HOLD.min(Duration::from_secs(max_timeout));
    let id = |k: &str, v: &str, positive: bool| -> Result<i64, ApiError> {
        match v.parse::<i64>() {
            Ok(n) if n > 0 || (!positive && n == 0) => Ok(n),
            _ if v.is_empty() && !positive => Ok(0),
            _ => Err(ApiError::invalid(format!(
                "{k} must be a {} integer, not {v:?}",
                if positive { "positive" } else { "non-negative" }
            ))),
        }
    };
    const KNOWN: &[&str] = &[
        "channel_id",
        "thread_id",
        "last_event_id",
        "event_types",
        "timeout",
    ];
    for (key, v) in known_fields(form, KNOWN)? {
        let v = v.trim();
        match key {
            "channel_id" => channel = Some(id(key, v, true)?),
            "thread_id" => thread = id(key, v, false)?,
            "last_event_id" => last = id(key, v, false)?,
            "event_types" => {
                if v != "all" {
                    types = v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .take(crate::store::MAX_TYPES + 1)
                        .map(str::to_owned)
                        .collect();
                }
            }
            "timeout" => {
                if let Ok(t) = v.parse::<u64>() {
                    hold = hold.min(Duration::from_secs(t));
                }
            }
            _ => unreachable!(),
        }
    }
    let channel = channel.ok_or_else(|| ApiError::invalid("channel_id is required"))?;
    let mut req = FetchRequest::new([channel])
        .cursor(Cursor::from_last_event_id(last))
        .limit(limit)
        .order(Order::Sequential)
        .types(types);
    req.thread_id = (thread > 0).then_some(thread);
    let req = req
        .normalized()
        .map_err(|e| ApiError::from_store(e, ClientMode::Long, 0))?;
    Ok(PollParams { req, timeout: hold })
}

/// One event as the theme's client reads it (the plugin's `format_event`).
#[derive(Serialize)]
struct LmsEvent<'a> {
    id: i64,
    #[serde(rename = "type")]
    kind: &'a str,
    event_type: &'a str,
    priority: Priority,
    message_id: Option<i64>,
    thread_id: Option<i64>,
    channel_id: i64,
    user_id: i64,
    data: &'a RawValue,
    timestamp: i64,
    created_at: String,
}

#[derive(Serialize)]
struct LmsData<'a> {
    events: Vec<LmsEvent<'a>>,
    /// Unix seconds, as the plugin's `time()`.
    timestamp: i64,
    last_event_id: i64,
    has_more: bool,
    gap: bool,
    mode: ClientMode,
    retry_ms: u64,
    /// Who answered (the plugin's answers have no such field, the theme's own say `theme`).
    system: &'static str,
}

#[derive(Serialize)]
struct LmsBody<'a> {
    success: bool,
    data: LmsData<'a>,
}

/// The theme's body for `batch`. `last_event_id` is where the client stands after it: the
/// highest id delivered, or the position the store scanned to (never behind the request's).
fn render(batch: &Batch, mode: ClientMode, retry_ms: u64) -> Rendered {
    let empty: &RawValue = serde_json::from_str("{}").unwrap_or_else(|_| unreachable!());
    let events: Vec<LmsEvent<'_>> = batch
        .events
        .iter()
        .map(|e: &Event| LmsEvent {
            id: e.id,
            kind: &e.event_type,
            event_type: &e.event_type,
            priority: e.priority,
            message_id: e.message_id,
            thread_id: e.thread_id,
            channel_id: e.channel_id,
            user_id: e.user_id,
            // Stored data is a validated JSON object.
            data: serde_json::from_str(&e.data).unwrap_or(empty),
            timestamp: e.timestamp,
            created_at: iso8601_ms(e.timestamp),
        })
        .collect();
    let last_event_id = batch
        .events
        .iter()
        .map(|e| e.id)
        .fold(batch.cursor.min_position(), i64::max);
    let body = serde_json::to_vec(&LmsBody {
        success: true,
        data: LmsData {
            events,
            timestamp: SystemClock.now_ms().div_euclid(1000),
            last_event_id,
            has_more: batch.has_more,
            gap: batch.gap,
            mode,
            retry_ms,
            system: "daemon",
        },
    })
    .unwrap_or_default();
    Rendered::new(
        Bytes::from(body),
        batch.events.iter().map(|e| e.timestamp).collect(),
        mode,
        batch.cursor,
    )
}

/// An error in the theme's shape, with `/v1/poll`'s status and headers (`Retry-After`,
/// `X-LMS-Mode`, `Allow`).
fn error(e: &ApiError) -> Resp {
    let mut data = serde_json::json!({ "code": e.code(), "message": e.message() });
    if let Some(mode) = e.mode() {
        data["mode"] = mode.as_str().into();
    }
    if let Some(ms) = e.retry_after_ms() {
        data["retry_after"] = ms.div_ceil(1000).max(1).into();
    }
    let body = serde_json::json!({ "success": false, "data": data });
    let mut r = error_response(e);
    *r.body_mut() = Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
    r
}

/// `2026-12-07T01:02:03.456Z` for a time in milliseconds since the Unix epoch (UTC).
pub(crate) fn iso8601_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::super::response::body_bytes;
    use super::*;

    fn p(form: &str) -> Result<PollParams, ApiError> {
        parse_form(form, 30, 50)
    }

    #[test]
    fn the_theme_form() {
        let r = p(
            "action=lms_unified_long_poll&channel_id=7&thread_id=0&last_event_id=41\
                   &connection_id=conn_1&nonce=abc&nonce_action=lms_unified_longpoll",
        )
        .unwrap();
        assert_eq!(r.req.channels, vec![7]);
        assert_eq!(r.req.cursor, Cursor::from_last_event_id(41));
        assert_eq!(r.req.order, Order::Sequential);
        assert_eq!(r.req.thread_id, None);
        assert!(r.req.types.is_empty());
        assert_eq!(r.req.limit, 50);
        assert_eq!(r.timeout, MAX_HOLD, "held at most 5 s");

        let r = p("channel_id=7&thread_id=9&last_event_id=&event_types=message_create%2Creaction_update&timeout=2")
            .unwrap();
        assert_eq!(r.req.thread_id, Some(9));
        assert_eq!(r.req.cursor, Cursor::from_last_event_id(0));
        assert_eq!(r.req.types, vec!["message_create", "reaction_update"]);
        assert_eq!(r.timeout, Duration::from_secs(2));
        assert_eq!(
            p("channel_id=7&event_types=all").unwrap().req.types.len(),
            0
        );
        assert_eq!(p("channel_id=7&timeout=x").unwrap().timeout, MAX_HOLD);
        assert_eq!(
            parse_form("channel_id=7", 1, 50).unwrap().timeout,
            Duration::from_secs(1),
            "never longer than --poll-timeout"
        );

        for (form, code) in [
            ("", "invalid_argument"),
            ("channel_id=", "invalid_argument"),
            ("channel_id=0", "invalid_argument"),
            ("channel_id=x", "invalid_argument"),
            ("channel_id=1&last_event_id=-1", "invalid_argument"),
            ("channel_id=1&thread_id=-2", "invalid_argument"),
            ("channel_id=1&channel_id=2", "invalid_argument"),
            ("channel_id=1&event_types=Bad", "invalid_event_type"),
            ("channel_id=1%ZZ", "invalid_argument"),
        ] {
            let e = p(form).expect_err(form);
            assert_eq!(e.code(), code, "{form}: {e}");
        }
    }

    #[test]
    fn events_in_the_theme_shape() {
        let ev = Event {
            id: 42,
            event_type: "message_create".into(),
            priority: Priority::Critical,
            channel_id: 7,
            message_id: Some(5),
            thread_id: None,
            user_id: 3,
            data: r#"{"message":"hi","user_name":"Taro"}"#.into(),
            timestamp: 1_765_069_323_456,
            expires_at: i64::MAX,
        };
        let batch = Batch {
            events: vec![ev],
            cursor: Cursor::from_last_event_id(44),
            gap: false,
            has_more: true,
        };
        let r = render(&batch, ClientMode::Long, 0);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["success"], true);
        let d = &v["data"];
        assert_eq!(
            d["last_event_id"], 44,
            "the scanned position, past the last event"
        );
        assert_eq!(d["has_more"], true);
        assert_eq!(d["gap"], false);
        assert_eq!(d["system"], "daemon");
        let e = &d["events"][0];
        assert_eq!(e["id"], 42);
        assert_eq!(e["type"], "message_create");
        assert_eq!(e["event_type"], "message_create");
        assert_eq!(e["priority"], 1);
        assert_eq!(e["message_id"], 5);
        assert!(e["thread_id"].is_null());
        assert_eq!(e["data"]["user_name"], "Taro");
        assert_eq!(e["timestamp"], 1_765_069_323_456i64);
        assert_eq!(e["created_at"], "2025-12-07T01:02:03.456Z");
        assert_eq!(r.stamps, vec![1_765_069_323_456]);

        let empty = Batch {
            events: vec![],
            cursor: Cursor::from_last_event_id(9),
            gap: true,
            has_more: false,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&render(&empty, ClientMode::Medium, 250).body).unwrap();
        assert_eq!(v["data"]["events"], serde_json::json!([]));
        assert_eq!(v["data"]["last_event_id"], 9);
        assert_eq!(v["data"]["gap"], true);
        assert_eq!(v["data"]["mode"], "medium");
        assert_eq!(v["data"]["retry_ms"], 250);
    }

    #[test]
    fn iso8601() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_208_000_999, "2024-02-29T12:00:00.999Z"),
            (4_102_444_799_000, "2099-12-31T23:59:59.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(iso8601_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn errors_in_the_theme_shape() {
        let r = error(&ApiError::Forbidden(
            "the token does not allow channel 9".into(),
        ));
        assert_eq!(r.status(), 403);
        let v: serde_json::Value = serde_json::from_slice(&body_bytes(r.into_body())).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["data"]["code"], "forbidden_channel");
        let r = error(&ApiError::TooMany {
            code: "rate_limited",
            message: "slow down".into(),
            retry_after_ms: 1500,
        });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let v: serde_json::Value = serde_json::from_slice(&body_bytes(r.into_body())).unwrap();
        assert_eq!(v["data"]["retry_after"], 2);
        assert_eq!(v["data"]["message"], "slow down");
    }
}
