//! Who is asking: bearer tokens for polls, signatures for publishers, the client's IP.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;

use super::error::ApiError;
#[cfg(test)]
use crate::token::Claims;
use crate::token::{self, TokenKey};

/// Verifies the `Authorization: Bearer <token>` of a poll.
#[cfg(test)]
pub(crate) fn bearer(headers: &HeaderMap, keys: &[TokenKey], now: i64) -> Result<Claims, ApiError> {
    token::verify(keys, bearer_token(headers)?, now).map_err(ApiError::token)
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value =
        headers
            .get(hyper::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized {
                code: "token_missing",
                message: "send Authorization: Bearer <token>".into(),
            })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::token(token::TokenError::Malformed))?;
    let (scheme, t) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::token(token::TokenError::Malformed))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::token(token::TokenError::Malformed));
    }
    Ok(t.trim())
}

/// Verifies a publish request's `X-LMS-Timestamp` and `X-LMS-Signature` over `body`.
pub(crate) fn publisher(
    headers: &HeaderMap,
    body: &[u8],
    keys: &[TokenKey],
    now: i64,
    skew: u64,
) -> Result<(), ApiError> {
    let missing = || ApiError::Unauthorized {
        code: "signature_missing",
        message: "send X-LMS-Timestamp and X-LMS-Signature".into(),
    };
    let ts = headers
        .get("x-lms-timestamp")
        .ok_or_else(missing)?
        .to_str()
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ApiError::invalid("X-LMS-Timestamp is Unix seconds"))?;
    let sig = headers
        .get("x-lms-signature")
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| ApiError::token(token::TokenError::Malformed))?;
    if now.abs_diff(ts) > skew {
        return Err(ApiError::Unauthorized {
            code: "signature_expired",
            message: format!("X-LMS-Timestamp is more than {skew} s from the daemon's clock"),
        });
    }
    token::verify_publish(keys, sig, ts, body).map_err(|e| ApiError::Unauthorized {
        code: match e {
            token::TokenError::UnknownKey => "signature_unknown_key",
            token::TokenError::Malformed => "signature_malformed",
            _ => "signature_mismatch",
        },
        message: "the publish signature does not verify".into(),
    })
}

/// The client's IP: the peer's, or behind a trusted proxy `X-Real-IP` or the last
/// `X-Forwarded-For` entry (the one the proxy added).
pub(crate) fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_proxy: bool) -> IpAddr {
    if trust_proxy {
        let parse = |v: &hyper::header::HeaderValue| -> Option<IpAddr> {
            v.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
        };
        if let Some(ip) = headers.get("x-real-ip").and_then(parse) {
            return ip;
        }
        if let Some(ip) = headers.get("x-forwarded-for").and_then(parse) {
            return ip;
        }
    }
    peer.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(client_ip(&h, peer, false), peer.ip());
        assert_eq!(client_ip(&h, peer, true).to_string(), "5.6.7.8");
        h.insert("x-real-ip", "9.9.9.9".parse().unwrap());
        assert_eq!(client_ip(&h, peer, true).to_string(), "9.9.9.9");
    }

    #[test]
    fn bearer_parsing() {
        let key = TokenKey::new("k", vec![1u8; 32]).unwrap();
        let t = token::issue(&key, 3, &[1], 100, "s").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            bearer(&h, std::slice::from_ref(&key), 0)
                .unwrap_err()
                .code(),
            "token_missing"
        );
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        assert_eq!(bearer(&h, std::slice::from_ref(&key), 0).unwrap().uid, 3);
        h.insert("authorization", format!("Basic {t}").parse().unwrap());
        assert_eq!(
            bearer(&h, std::slice::from_ref(&key), 0)
                .unwrap_err()
                .code(),
            "token_malformed"
        );
    }
}
