//! What every endpoint's response shares: the response type, JSON and error bodies, and
//! `finish` (request id, security headers, CORS, gzip), with [`Meta`], what a response needs
//! from its request. Also the bounded body reader, the one request-side helper the endpoints
//! (publish, the demo) share.
//!
//! The bottom of the HTTP layer: it depends on the shared state and the error type only, and
//! every endpoint module (`poll`, `stream`, `publish`, `ops`, `demo`) and the router build on
//! it. [`Streamed`] is the body of a response written chunk by chunk (`GET /v1/stream`).

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::addresses::AddressSlot;
use super::error::ApiError;
use super::state::State;
use crate::token::Claims;

/// The response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

/// The body hyper writes: a whole one, or (`GET /v1/stream`) one written chunk by chunk.
pub(crate) type Body = http_body_util::Either<Full<Bytes>, Streamed>;

/// The response hyper writes: [`Resp`] once [`Meta::respond`] has finished it, or a stream.
pub(crate) type Reply = Response<Body>;

/// A response body written chunk by chunk (`GET /v1/stream`), whatever drives it: boxed once
/// per response, so that [`Body`] names one type.
pub(crate) struct Streamed(
    std::pin::Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = Infallible> + Send>>,
);

impl Streamed {
    /// `body`, boxed.
    pub(crate) fn new(
        body: impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
    ) -> Streamed {
        Streamed(Box::pin(body))
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.as_mut().poll_frame(cx)
    }
}

/// Headers of a JSON response once `finish` has added its own (request id, security, CORS).
const RESPONSE_HEADERS: usize = 12;

/// `X-Request-Id`, made once: a name given as a string is parsed and checked at every insert.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");
/// `X-LMS-Mode` (the advertised polling mode when it is not `long`), made once.
pub(crate) const X_LMS_MODE: header::HeaderName = header::HeaderName::from_static("x-lms-mode");

/// The future of one request.
pub(crate) type HandlerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, Infallible>> + Send>>;

/// What the response needs from the request, kept instead of the request itself.
pub(crate) struct Meta {
    pub(crate) started: Instant,
    pub(crate) rid: HeaderValue,
    pub(crate) origin: Option<HeaderValue>,
    pub(crate) gzip: bool,
    pub(crate) method: Method,
    pub(crate) path: Cow<'static, str>,
    pub(crate) peer: SocketAddr,
    /// The poll's verified token, once known: its user and session go to the logs.
    pub(crate) who: Option<Who>,
    /// Behind a proxy, this request's count against its client address's cap, held until
    /// the response is made (for a long-poll, for as long as it waits).
    pub(crate) address: Option<AddressSlot>,
}

/// A verified token's user and session binding (`sid`, a hash of the WordPress session), kept
/// inline for the logs: a waiting poll holds it for as long as it waits.
#[derive(Clone, Copy)]
pub(crate) struct Who {
    uid: i64,
    sid: [u8; 24],
    sid_len: u8,
}

impl Who {
    pub(crate) fn new(c: &Claims) -> Who {
        let mut sid = [0u8; 24];
        let n = c.sid.len().min(24);
        sid[..n].copy_from_slice(&c.sid.as_bytes()[..n]);
        Who {
            uid: c.uid,
            sid,
            sid_len: n as u8,
        }
    }

    fn sid(&self) -> &str {
        std::str::from_utf8(&self.sid[..self.sid_len as usize]).unwrap_or("")
    }
}

/// A request's path for the logs, without an allocation for the daemon's own routes.
fn path_of(p: &str) -> Cow<'static, str> {
    match p {
        "/v1/poll" => Cow::Borrowed("/v1/poll"),
        "/v1/stream" => Cow::Borrowed("/v1/stream"),
        "/v1/events" => Cow::Borrowed("/v1/events"),
        "/healthz" => Cow::Borrowed("/healthz"),
        "/metrics" => Cow::Borrowed("/metrics"),
        p => Cow::Owned(p.to_owned()),
    }
}

impl Meta {
    /// What `req` (whatever its body: hyper's, or none on the lean stream path) tells the
    /// response.
    pub(crate) fn new<B>(state: &State, peer: SocketAddr, req: &Request<B>) -> Meta {
        Meta {
            started: Instant::now(),
            rid: request_id(state, req.headers()),
            // Copied: a value borrowed from the request would pin hyper's read buffer for as
            // long as a poll waits.
            origin: req
                .headers()
                .get(header::ORIGIN)
                .and_then(|o| HeaderValue::from_bytes(o.as_bytes()).ok()),
            gzip: accepts_gzip(req.headers()),
            method: req.method().clone(),
            path: path_of(req.uri().path()),
            peer,
            who: None,
            address: None,
        }
    }

    /// Turns a handler's result into the response: error bodies, logs, common headers.
    pub(crate) fn respond(
        self,
        state: &State,
        result: Result<Resp, ApiError>,
    ) -> Result<Reply, Infallible> {
        let Meta {
            started,
            rid,
            origin,
            gzip,
            method,
            path,
            peer,
            who,
            // Held (not `_`, which would drop it now) until the response is made.
            address: _address,
        } = self;
        // The token's user and session (`sid`: a hash of the WordPress session, never the
        // session itself): tells a user's browsers and logins apart in the logs.
        let (uid, sid) = who.as_ref().map_or((0, ""), |w| (w.uid, w.sid()));
        let rid_s = rid.to_str().unwrap_or("");
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                match &e {
                    ApiError::Internal(m) => {
                        tracing::error!(request_id = rid_s, %method, %path, uid, sid, error = %m, "internal error")
                    }
                    ApiError::Unavailable { .. } => {
                        tracing::warn!(request_id = rid_s, %method, %path, uid, sid, error = %e, "unavailable")
                    }
                    _ => {
                        tracing::debug!(request_id = rid_s, %method, %path, uid, sid, error = %e, "refused")
                    }
                }
                error_response(&e)
            }
        };
        let resp = finish(state, resp, &rid, origin.as_ref(), gzip);
        tracing::debug!(
            request_id = rid_s,
            %method,
            %path,
            %peer,
            uid,
            sid,
            status = resp.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request"
        );
        Ok(resp.map(Body::Left))
    }
}

/// Reads a request body of at most `max` bytes within `timeout`.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> Result<(hyper::http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is {len} bytes, over the limit of {max}"
        )));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| ApiError::Timeout)?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge(format!("the body is over the limit of {max} bytes"))
            } else {
                ApiError::invalid(format!("reading the body: {e}"))
            }
        })?;
    Ok((parts, collected.to_bytes()))
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().reserve(RESPONSE_HEADERS);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error_response(e: &ApiError) -> Resp {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json(status, e.body());
    let h = r.headers_mut();
    if let Some(ms) = e.retry_after_ms() {
        // Whole seconds, rounded up: a client must not come back before the limit allows it.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(ms.div_ceil(1000).max(1)),
        );
    }
    if let Some(mode) = e.mode() {
        h.insert(X_LMS_MODE, HeaderValue::from_static(mode.as_str()));
    }
    if let ApiError::MethodNotAllowed(allow) = e {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

pub(crate) fn preflight(state: &State, headers: &HeaderMap) -> Result<Resp, ApiError> {
    let origin = headers.get(header::ORIGIN);
    if origin.is_none_or(|o| !origin_allowed(state, o)) {
        return Err(ApiError::OriginNotAllowed(
            "this origin may not call the daemon (see --cors-origins)".into(),
        ));
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, Last-Event-ID, X-Request-Id, X-LMS-Timestamp, \
             X-LMS-Signature",
        ),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Ok(r)
}

fn origin_allowed(state: &State, origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else {
        return false;
    };
    state
        .config
        .cors_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn request_id(state: &State, headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && (1..=64).contains(&v.len())
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
    {
        return v;
    }
    let n = state.request_seq.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    let mut w = &mut buf[..];
    let _ = write!(w, "{:08x}-{n:x}", state.boot_id);
    let len = 32 - w.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
}

/// `bytes` gzipped (fast), or `None` if compressing failed.
pub(crate) fn gzip_bytes(bytes: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes)
        .and_then(|_| enc.finish())
        .ok()
        .map(Bytes::from)
}

/// The security headers of every response (those the response has not set itself).
fn security_headers(h: &mut HeaderMap, is_html: bool) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if is_html {
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
            } else {
                "default-src 'none'; frame-ancestors 'none'"
            }),
        );
    }
}

/// The headers every poll response starts with, built once: its content type and the
/// security headers `finish` would add, with a placeholder request id that `finish` replaces
/// (so the copy has room for it). A poll response starts from a copy (see `poll_response`).
pub(crate) static POLL_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
    let mut h = HeaderMap::with_capacity(RESPONSE_HEADERS);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_REQUEST_ID, HeaderValue::from_static("-"));
    security_headers(&mut h, false);
    h
});

/// Adds the request id, security headers and CORS, and compresses when it pays.
fn finish(
    state: &State,
    mut r: Resp,
    rid: &HeaderValue,
    origin: Option<&HeaderValue>,
    gzip: bool,
) -> Resp {
    let is_html = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let compressible = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/json")
            || v.starts_with(b"text/")
            || v.starts_with(b"application/javascript")
    });
    // A poll response (it starts from `POLL_HEADERS`, which has the security headers) was
    // compressed, or not, by `poll_response` already.
    let poll = r.headers().contains_key(header::X_CONTENT_TYPE_OPTIONS);
    if gzip
        && !poll
        && compressible
        && state.config.gzip_min_bytes > 0
        && r.body().size_hint_exact() >= state.config.gzip_min_bytes as u64
    {
        let (mut parts, body) = r.into_parts();
        let bytes = body_bytes(body);
        let body = match gzip_bytes(&bytes) {
            Some(gz) => {
                parts
                    .headers
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gz
            }
            None => bytes,
        };
        parts
            .headers
            .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        r = Response::from_parts(parts, Full::new(body));
    }
    let h = r.headers_mut();
    h.insert(X_REQUEST_ID, rid.clone());
    if !poll {
        security_headers(h, is_html);
    }
    if let Some(o) = origin
        && origin_allowed(state, o)
    {
        let wildcard = state.config.cors_origins.iter().any(|a| a == "*");
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            if wildcard {
                HeaderValue::from_static("*")
            } else {
                o.clone()
            },
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, X-LMS-Mode, X-Request-Id"),
        );
    }
    r
}

trait SizeHint {
    fn size_hint_exact(&self) -> u64;
}

impl SizeHint for Full<Bytes> {
    fn size_hint_exact(&self) -> u64 {
        hyper::body::Body::size_hint(self).exact().unwrap_or(0)
    }
}

pub(crate) fn body_bytes(body: Full<Bytes>) -> Bytes {
    // A `Full` body yields its one frame at once, without waiting.
    let mut body = std::pin::pin!(body);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match hyper::body::Body::poll_frame(body.as_mut(), &mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "br, gzip;q=0.8".parse().unwrap());
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(!accepts_gzip(&h));
    }
}
