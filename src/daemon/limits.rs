//! The per-address rate limit both endpoints open with, and the allocation-free formatting of
//! the limiter's and the slot table's keys.

use std::io::Write as _;
use std::net::SocketAddr;

use hyper::header::HeaderMap;

use super::auth;
use super::error::ApiError;
use super::state::State;
use crate::error::{Error, ErrorCode};
use crate::token::Claims;

/// The per-address limit (with its DDoS block): the first check of a poll or a publish.
pub(crate) fn check_ip(
    state: &State,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let ip = auth::client_ip(headers, peer, state.config.trust_proxy);
    let mut buf = itoa_buf();
    let d = state
        .limiter
        .check("ip", fmt_into(&mut buf, format_args!("{ip}")))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    address_allowed(&d)
}

/// A request refused by its address's limit.
pub(crate) fn address_allowed(d: &crate::guards::Decision) -> Result<(), ApiError> {
    if d.allowed {
        Ok(())
    } else {
        Err(ApiError::TooMany {
            code: ErrorCode::RateLimited.name(),
            message: if d.blocked {
                "too many requests from this address: blocked for a while".into()
            } else {
                "too many requests from this address".into()
            },
            retry_after_ms: d.retry_after_ms.max(1),
        })
    }
}

/// A poll refused by the user's rate limit.
pub(crate) fn user_allowed(d: &crate::guards::Decision) -> Result<(), ApiError> {
    if d.allowed {
        return Ok(());
    }
    Err(ApiError::TooMany {
        code: ErrorCode::RateLimited.name(),
        message: "too many polls for this user".into(),
        retry_after_ms: d.retry_after_ms.max(1),
    })
}

/// A poll refused a slot.
pub(crate) fn no_slot(e: Error) -> ApiError {
    ApiError::TooMany {
        code: ErrorCode::SlotsExhausted.name(),
        message: e.to_string(),
        retry_after_ms: 1000,
    }
}

/// A poll refused a channel its token does not allow.
pub(crate) fn channels_allowed(claims: &Claims, channels: &[i64]) -> Result<(), ApiError> {
    match channels.iter().find(|c| !claims.allows(**c)) {
        Some(c) => Err(ApiError::Forbidden(format!(
            "the token does not allow channel {c}"
        ))),
        None => Ok(()),
    }
}

/// A stack buffer for [`fmt_into`]: room for an IPv6 address or an i64.
pub(crate) fn itoa_buf() -> [u8; 64] {
    [0u8; 64]
}

/// Formats into `buf` without allocating; a key for the limiter or the slots.
pub(crate) fn fmt_into<'a>(buf: &'a mut [u8; 64], args: std::fmt::Arguments<'_>) -> &'a str {
    let mut w = &mut buf[..];
    let _ = w.write_fmt(args);
    let len = 64 - w.len();
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}
