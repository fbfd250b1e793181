//! Demo mode (`--demo`): a page at `/demo` that shows events arriving live through the browser
//! client (`bindings/client/lms-realtime-client.js`, served as is), a form that posts through
//! the daemon, and a bot that posts every few seconds. Off by default: `/demo/session` hands a
//! token to anyone who asks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::error::ApiError;
use super::response::{Resp, json, read_body};
use super::state::{State, random_bytes};
use crate::clock::{Clock, SystemClock};
use crate::event::NewEvent;
use crate::metrics::Counter;

const PAGE: &str = include_str!("demo/index.html");
const APP: &str = include_str!("demo/app.js");
const CLIENT: &str = include_str!("../../bindings/client/lms-realtime-client.js");
/// Channels of the demo page.
const CHANNELS: [i64; 3] = [1, 2, 3];

fn asset(body: &'static str, content_type: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) async fn route(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let get = req.method() == Method::GET;
    match (req.uri().path(), get) {
        ("/", true) => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/demo"));
            Ok(r)
        }
        ("/demo", true) => Ok(asset(PAGE, "text/html; charset=utf-8")),
        ("/demo/app.js", true) => Ok(asset(APP, "application/javascript; charset=utf-8")),
        ("/demo/lms-realtime-client.js", true) => {
            Ok(asset(CLIENT, "application/javascript; charset=utf-8"))
        }
        ("/demo/session", true) => session(state).await,
        ("/demo/publish", false) if req.method() == Method::POST => publish(state, req).await,
        ("/demo/publish", _) => Err(ApiError::MethodNotAllowed("POST")),
        (_, false) => Err(ApiError::MethodNotAllowed("GET")),
        _ => Err(ApiError::NotFound),
    }
}

/// A token for a random demo user on the demo channels, and the head cursor to start from.
async fn session(state: &Arc<State>) -> Result<Resp, ApiError> {
    let user = 1000 + i64::from(random_bytes(2)[0]);
    let exp = SystemClock.now_ms() / 1000 + 600;
    let token = crate::token::issue(&state.keys[0], user, &CHANNELS, exp, "demo-session")
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let cursor = state
        .store_call(&state.read_sem, Counter::Fetches, |s| s.head_cursor())
        .await?;
    let body = serde_json::json!({
        "token": token,
        "expires_at": exp,
        "user_id": user,
        "channels": CHANNELS,
        "cursor": cursor,
    });
    Ok(json(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
struct Post {
    channel_id: i64,
    text: String,
    #[serde(default)]
    user_id: i64,
    /// The name the posting tab goes by (the page picks one per tab).
    #[serde(default)]
    from: String,
}

async fn publish(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (_, body) = read_body(req, 4096, Duration::from_secs(5)).await?;
    let post: Post = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("expected {{channel_id, text}}: {e}")))?;
    if !CHANNELS.contains(&post.channel_id) {
        return Err(ApiError::Forbidden("demo channels are 1, 2 and 3".into()));
    }
    let text: String = post.text.chars().take(500).collect();
    let from: String = post.from.trim().chars().take(40).collect();
    let from = if from.is_empty() {
        "guest".to_owned()
    } else {
        from
    };
    let data = serde_json::json!({ "text": text, "from": from }).to_string();
    let ev = NewEvent::new("message_create", post.channel_id)
        .user_id(post.user_id)
        .data(data);
    let ids = state
        .store_call(&state.write_sem, Counter::Appends, move |s| s.append(ev))
        .await?;
    Ok(json(
        StatusCode::OK,
        serde_json::to_vec(&serde_json::json!({ "ids": [ids] })).unwrap_or_default(),
    ))
}

/// Posts a message every 3 s and a reaction every 7 s, so the page shows something at once.
pub(crate) async fn bot(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let channel = CHANNELS[(n % 3) as usize];
        let msg = NewEvent::new("message_create", channel)
            .user_id(1)
            .message_id(n as i64)
            .data(
                serde_json::json!({ "text": format!("bot message #{n}"), "from": "bot" })
                    .to_string(),
            );
        let mut batch = vec![msg];
        if n.is_multiple_of(2) {
            batch.push(
                NewEvent::new("reaction_update", channel)
                    .user_id(2)
                    .message_id(n as i64 - 1)
                    .data(r#"{"reaction":"👍","from":"bot"}"#),
            );
        }
        let r = state
            .store_call(&state.write_sem, Counter::Appends, move |s| {
                s.append_batch(batch)
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "demo bot could not post");
        }
    }
}
