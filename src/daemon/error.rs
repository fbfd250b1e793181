//! The daemon's HTTP errors: one enum, one mapping to status codes and JSON bodies.
//!
//! Bodies are `{"error": {"code": "…", "message": "…"}}`; codes reuse the core's
//! [`ErrorCode`] names where one applies (`invalid_cursor`, `rate_limited`, …) and add the
//! HTTP-only ones below. A 503 also carries the client mode hint (`"mode"` in the error object
//! and an `X-LMS-Mode` header) and `Retry-After`; a 429 carries `Retry-After`. Internal errors
//! are logged with the request id and never echoed.

use crate::error::{Error, ErrorCode};
use crate::guards::ClientMode;
use crate::token::TokenError;

/// An error answered to a client.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a malformed or out-of-range request (the core's codes where they apply).
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// 401: no token, or a token that does not verify.
    Unauthorized {
        /// `token_missing` or a [`TokenError::code`].
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// 403: the token does not allow a requested channel (`forbidden_channel`).
    Forbidden(String),
    /// 403: a CORS preflight from an origin not in `--cors-origins` (`origin_not_allowed`).
    OriginNotAllowed(String),
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed(&'static str),
    /// 408: the request body did not arrive in time.
    Timeout,
    /// 409: an idempotency key reused for another event.
    Conflict(String),
    /// 413: the body is larger than allowed.
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: a rate limit or the connection slots.
    TooMany {
        /// `rate_limited` or `slots_exhausted`.
        code: &'static str,
        /// Human-readable detail.
        message: String,
        /// Milliseconds until a retry can succeed.
        retry_after_ms: u64,
    },
    /// 503: the store (or the daemon) cannot serve now; back off in the given mode.
    Unavailable {
        /// `circuit_open`, `busy`, `storage`, `shutting_down`, `too_many_connections`…
        code: &'static str,
        /// Human-readable detail (never internals).
        message: String,
        /// The polling mode clients should fall back to.
        mode: ClientMode,
        /// Milliseconds until a retry may succeed.
        retry_after_ms: u64,
    },
    /// 500: a bug; the message is logged, not sent.
    Internal(String),
}

impl ApiError {
    /// A 400 with the core's `invalid_argument` code.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code: ErrorCode::InvalidArgument.name(),
            message: message.into(),
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::Unauthorized { .. } => 401,
            ApiError::Forbidden(_) | ApiError::OriginNotAllowed(_) => 403,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Timeout => 408,
            ApiError::Conflict(_) => 409,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::TooMany { .. } => 429,
            ApiError::Unavailable { .. } => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// The stable code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::TooMany { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::Forbidden(_) => "forbidden_channel",
            ApiError::OriginNotAllowed(_) => "origin_not_allowed",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Timeout => "request_timeout",
            ApiError::Conflict(_) => ErrorCode::IdempotencyConflict.name(),
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Internal(_) => ErrorCode::Internal.name(),
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest { message, .. }
            | ApiError::Unauthorized { message, .. }
            | ApiError::TooMany { message, .. }
            | ApiError::Unavailable { message, .. }
            | ApiError::Forbidden(message)
            | ApiError::OriginNotAllowed(message)
            | ApiError::Conflict(message)
            | ApiError::PayloadTooLarge(message) => message.clone(),
            ApiError::NotFound => "no such endpoint".into(),
            ApiError::MethodNotAllowed(allow) => format!("method not allowed (allowed: {allow})"),
            ApiError::Timeout => "the request was not received in time".into(),
            ApiError::UnsupportedMediaType => "the body must be JSON".into(),
            ApiError::Internal(_) => "internal error".into(),
        }
    }

    /// `Retry-After` in milliseconds, for 429 and 503.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::TooMany { retry_after_ms, .. }
            | ApiError::Unavailable { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// The mode hint of a 503.
    pub fn mode(&self) -> Option<ClientMode> {
        match self {
            ApiError::Unavailable { mode, .. } => Some(*mode),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let mut err = serde_json::json!({"code": self.code(), "message": self.message()});
        if let Some(mode) = self.mode() {
            err["mode"] = mode.as_str().into();
        }
        let mut body = serde_json::json!({ "error": err });
        if let Some(ms) = self.retry_after_ms() {
            body["retry_ms"] = ms.into();
        }
        if let Some(mode) = self.mode() {
            body["mode"] = mode.as_str().into();
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// A store error, with the mode to advertise when the store is at fault.
    pub fn from_store(e: Error, mode: ClientMode, retry_after_ms: u64) -> ApiError {
        let code = e.code();
        match code {
            ErrorCode::InvalidArgument
            | ErrorCode::InvalidEventType
            | ErrorCode::InvalidPriority
            | ErrorCode::InvalidChannel
            | ErrorCode::InvalidData
            | ErrorCode::InvalidTtl
            | ErrorCode::InvalidCursor
            | ErrorCode::InvalidUtf8 => ApiError::BadRequest {
                code: code.name(),
                message: e.to_string(),
            },
            ErrorCode::DataTooLarge => ApiError::PayloadTooLarge(e.to_string()),
            ErrorCode::IdempotencyConflict => ApiError::Conflict(e.to_string()),
            ErrorCode::RateLimited => ApiError::TooMany {
                code: code.name(),
                message: e.to_string(),
                retry_after_ms: match e {
                    Error::RateLimited { retry_after_ms } => retry_after_ms,
                    _ => 1000,
                },
            },
            ErrorCode::SlotsExhausted => ApiError::TooMany {
                code: code.name(),
                message: e.to_string(),
                retry_after_ms,
            },
            ErrorCode::CircuitOpen
            | ErrorCode::Busy
            | ErrorCode::Storage
            | ErrorCode::Corrupt
            | ErrorCode::Io => ApiError::Unavailable {
                code: code.name(),
                message: "the event store is unavailable; back off and retry".into(),
                mode,
                retry_after_ms,
            },
            ErrorCode::Closed => ApiError::Unavailable {
                code: "shutting_down",
                message: "the daemon is shutting down".into(),
                mode,
                retry_after_ms,
            },
            _ => ApiError::Internal(e.to_string()),
        }
    }

    /// A token that did not verify.
    pub fn token(e: TokenError) -> ApiError {
        ApiError::Unauthorized {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Internal(m) => write!(f, "{}: {m}", self.code()),
            _ => write!(f, "{}: {}", self.code(), self.message()),
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        let m = ClientMode::Emergency;
        let s = |e| ApiError::from_store(e, m, 1000).status();
        assert_eq!(s(Error::InvalidCursor("x".into())), 400);
        assert_eq!(s(Error::DataTooLarge { size: 2, max: 1 }), 413);
        assert_eq!(s(Error::Storage("disk".into())), 503);
        assert_eq!(s(Error::Busy("lock".into())), 503);
        assert_eq!(s(Error::RateLimited { retry_after_ms: 5 }), 429);
        assert_eq!(s(Error::Internal("bug".into())), 500);
        let e = ApiError::from_store(Error::Storage("/secret/path: disk I/O".into()), m, 1000);
        let body = String::from_utf8(e.body()).unwrap();
        assert!(!body.contains("secret"), "internals are not echoed: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "storage");
        assert_eq!(v["error"]["mode"], "emergency");
        assert_eq!(v["mode"], "emergency");
        let i = ApiError::Internal("stack".into());
        assert!(!String::from_utf8(i.body()).unwrap().contains("stack"));
    }
}
