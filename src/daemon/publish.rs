//! `POST /v1/events`: the signed publish. The body is parsed and checked here, before the
//! replay window (`replay.rs`) and the appender see it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::auth;
use super::error::ApiError;
use super::limits::check_ip;
use super::replay::{self, Begin};
use super::response::{Resp, json, read_body};
use super::state::State;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorCode};
use crate::event::{NewEvent, Priority, validate_data, validate_event_type};
use crate::guards::ClientMode;
use crate::metrics::{Counter, Histogram};

/// One event of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    event_type: String,
    channel_id: i64,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    message_id: Option<i64>,
    #[serde(default)]
    thread_id: Option<i64>,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    events: Vec<EventIn>,
}

impl EventIn {
    /// The event, if its type, channel and data are well-formed (the store checks them again,
    /// with its size cap on the data and its TTL bounds): a malformed body is refused here,
    /// before it takes a place in the replay window or a trip through the appender.
    fn into_new_event(self) -> Result<NewEvent, ApiError> {
        let store_err = |e| ApiError::from_store(e, ClientMode::Long, 0);
        validate_event_type(&self.event_type).map_err(store_err)?;
        if self.channel_id <= 0 {
            return Err(store_err(Error::InvalidChannel(self.channel_id)));
        }
        if let Some(d) = &self.data {
            validate_data(d.get(), usize::MAX).map_err(store_err)?;
        }
        let mut e = NewEvent::new(self.event_type, self.channel_id);
        if let Some(p) = self.priority {
            e = e.priority(
                Priority::from_i64(p).map_err(|e| ApiError::from_store(e, ClientMode::Long, 0))?,
            );
        }
        e.message_id = self.message_id;
        e.thread_id = self.thread_id;
        e.user_id = self.user_id.unwrap_or(0);
        if let Some(d) = self.data {
            e.data = d.get().to_owned();
        }
        if let Some(t) = self.ttl_ms {
            e.ttl = Some(Duration::from_millis(t));
        }
        e.idempotency_key = self.idempotency_key;
        Ok(e)
    }
}

/// Parses a publish body: one event object, or `{"events": [...]}`.
pub(crate) fn parse_events(body: &[u8]) -> Result<Vec<NewEvent>, ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadRequest {
        code: ErrorCode::InvalidArgument.name(),
        message: format!("the body is not a valid event or {{\"events\": [...]}}: {e}"),
    };
    // One event is the common body: tried first (a batch fails it at its first key).
    let events = match serde_json::from_slice::<EventIn>(body) {
        Ok(e) => vec![e],
        Err(one) => match serde_json::from_slice::<BatchIn>(body) {
            Ok(b) => b.events,
            Err(_) => return Err(bad(one)),
        },
    };
    if events.is_empty() {
        return Err(ApiError::invalid("no events"));
    }
    if events.len() > crate::store::MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "at most {} events per request",
            crate::store::MAX_BATCH
        )));
    }
    events.into_iter().map(EventIn::into_new_event).collect()
}

/// Serves a `POST /v1/events`: checks, then appends once per signature (a replay gets the
/// first request's ids).
pub(crate) async fn publish(
    state: &Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    #[cfg(feature = "redis")]
    if state.shared_guards.is_some() {
        let ip = auth::client_ip(req.headers(), peer, state.config.trust_proxy);
        Box::pin(super::shared::check_ip(state, ip)).await?;
    } else {
        check_ip(state, peer, req.headers())?;
    }
    #[cfg(not(feature = "redis"))]
    check_ip(state, peer, req.headers())?;
    let (parts, body) = read_body(
        req,
        state.config.max_body_bytes,
        Duration::from_secs(state.config.idle_timeout),
    )
    .await?;
    let now_s = SystemClock.now_ms() / 1000;
    let signed = auth::publisher(
        &parts.headers,
        &body,
        &state.keys,
        now_s,
        state.config.publish_skew,
    )?;
    let events = parse_events(&body)?;
    // The signature stays acceptable until its timestamp leaves the skew window: remembered
    // that long, a replay within it gets the first one's ids and appends nothing.
    let expires_s = signed
        .timestamp
        .saturating_add(state.config.publish_skew.min(i64::MAX as u64) as i64);
    let mut events = Some(events);
    let ids = loop {
        match state.replays.begin(
            &signed.kid,
            &signed.tag,
            expires_s,
            SystemClock.now_ms() / 1000,
        ) {
            Begin::Replay(ids) => {
                state.metrics.incr(Counter::PublishReplays);
                break ids;
            }
            Begin::Wait(rx) => {
                if let Some(ids) = replay::wait(rx).await {
                    state.metrics.incr(Counter::PublishReplays);
                    break ids;
                }
                // The first request failed and appended nothing: this one tries.
            }
            Begin::Full { retry_after_s } => {
                return Err(ApiError::Unavailable {
                    code: "replay_window_full",
                    message: "too many recent publishes to tell replays apart; retry later".into(),
                    mode: ClientMode::Long,
                    retry_after_ms: retry_after_s * 1000,
                });
            }
            Begin::First(ticket) => {
                let events = events.take().unwrap_or_default();
                // The ticket goes with the events: the appender records the outcome even if
                // this request goes away mid-append (the client hangs up), so a replay of it
                // still finds the ids instead of appending again.
                let started = Instant::now();
                let r = state.append(events, ticket).await;
                state.metrics.record(Histogram::Append, started.elapsed());
                break r?.into();
            }
        }
    };
    let mut body = Vec::with_capacity(16 + 21 * ids.len());
    body.extend_from_slice(b"{\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = write!(body, "{id}");
    }
    body.extend_from_slice(b"]}");
    Ok(json(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies() {
        let one = parse_events(br#"{"event_type":"message_create","channel_id":3,"data":{"t":1}}"#)
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].data, r#"{"t":1}"#);
        let many = parse_events(
            br#"{"events":[{"event_type":"a","channel_id":1},{"event_type":"b","channel_id":2,"priority":4,"ttl_ms":5000}]}"#,
        )
        .unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].priority, Some(Priority::Low));
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"events":[]}"#,
            br#"{"event_type":"a"}"#,
            br#"{"event_type":"a","channel_id":1,"extra":1}"#,
            br#"{"event_type":"a","channel_id":1,"priority":9}"#,
        ] {
            assert_eq!(parse_events(bad).unwrap_err().status(), 400);
        }
        // Type, channel and data are checked here, before the replay window and the appender,
        // with the codes the store gives them (a batch is refused whole).
        for (bad, code) in [
            (&br#"{"event_type":"Bad","channel_id":1}"#[..], "invalid_event_type"),
            (br#"{"event_type":"","channel_id":1}"#, "invalid_event_type"),
            (br#"{"event_type":"a","channel_id":0}"#, "invalid_channel"),
            (br#"{"event_type":"a","channel_id":-7}"#, "invalid_channel"),
            (br#"{"event_type":"a","channel_id":1,"data":[1]}"#, "invalid_data"),
            (br#"{"event_type":"a","channel_id":1,"data":"{}"}"#, "invalid_data"),
            (br#"{"event_type":"a","channel_id":1,"data":{"t":"\ud800"}}"#, "invalid_data"),
            (
                br#"{"events":[{"event_type":"a","channel_id":1},{"event_type":"a","channel_id":0}]}"#,
                "invalid_channel",
            ),
        ] {
            let e = parse_events(bad).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, code), "{}", String::from_utf8_lossy(bad));
        }
        let null_data = parse_events(br#"{"event_type":"a","channel_id":1,"data":null}"#).unwrap();
        assert_eq!(null_data[0].data, "{}");
    }
}
