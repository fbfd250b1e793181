//! Who is asking: bearer tokens for polls, signatures for publishers, the client's IP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::HeaderMap;

use super::error::ApiError;
use crate::token::{self, Claims, TokenError, TokenKey};

/// Tokens already verified, by their exact bytes: a browser re-polls with the same token for
/// its whole life (minutes to hours), so its HMAC and its two JSON parses are done once, not
/// on every poll. A hit is only a token byte-for-byte identical to one whose MAC matched a key
/// of this daemon (the keys never change while it runs); its expiry is checked on every use.
/// Refused tokens are never kept, so a client cannot fill the cache without valid tokens.
///
/// The cache holds at most `capacity` tokens (about 0.4 KiB each). When it is full, further
/// tokens are verified on every poll and not kept, until the cache starts over after
/// [`TOKEN_CACHE_EPOCH`] (which also drops expired tokens). Measured (benches/README.md): with
/// 1,000 clients re-polling at saturation it saves about a tenth of the daemon's CPU; with
/// 10,000 clients the lookups cost about what they save, so memory, not hits, sets the bound.
#[derive(Debug)]
pub(crate) struct TokenCache {
    inner: Mutex<Cached>,
    capacity: usize,
}

#[derive(Debug)]
struct Cached {
    map: HashMap<Box<str>, Arc<Claims>>,
    since: Instant,
}

/// How long the cache keeps its tokens before it starts over.
pub(crate) const TOKEN_CACHE_EPOCH: Duration = Duration::from_secs(60);

impl TokenCache {
    /// A cache of at most `capacity` tokens.
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            inner: Mutex::new(Cached {
                map: HashMap::new(),
                since: Instant::now(),
            }),
            capacity: capacity.max(1),
        }
    }

    /// [`token::verify`], remembered.
    pub(crate) fn verify(
        &self,
        keys: &[TokenKey],
        token: &str,
        now: i64,
    ) -> Result<Arc<Claims>, TokenError> {
        let lock = || self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = lock().map.get(token) {
            return if c.exp <= now {
                Err(TokenError::Expired)
            } else {
                Ok(c.clone())
            };
        }
        let claims = Arc::new(token::verify(keys, token, now)?);
        let mut cached = lock();
        if cached.map.len() >= self.capacity {
            if cached.since.elapsed() < TOKEN_CACHE_EPOCH {
                return Ok(claims);
            }
            cached.map = HashMap::new();
            cached.since = Instant::now();
        }
        cached.map.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// Tokens held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

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

/// A publish request whose signature verified.
#[derive(Debug)]
pub(crate) struct SignedPublish {
    /// `X-LMS-Timestamp`, Unix seconds.
    pub(crate) timestamp: i64,
    /// The signing key's id.
    pub(crate) kid: String,
    /// The MAC bytes: with `kid`, what identifies the request for replay detection.
    pub(crate) tag: Vec<u8>,
}

/// Verifies a publish request's `X-LMS-Timestamp` and `X-LMS-Signature` over `body`.
pub(crate) fn publisher(
    headers: &HeaderMap,
    body: &[u8],
    keys: &[TokenKey],
    now: i64,
    skew: u64,
) -> Result<SignedPublish, ApiError> {
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
    })?;
    let (kid, tag) = token::publish_signature_tag(sig)
        .ok_or_else(|| ApiError::token(token::TokenError::Malformed))?;
    Ok(SignedPublish {
        timestamp: ts,
        kid: kid.to_owned(),
        tag,
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
    fn token_cache_remembers_only_valid_tokens_and_still_checks_expiry() {
        let key = TokenKey::new("k", vec![1u8; 32]).unwrap();
        let keys = std::slice::from_ref(&key);
        let cache = TokenCache::new(2);
        let t = token::issue(&key, 3, &[1], 100, "s").unwrap();
        assert_eq!(cache.verify(keys, &t, 0).unwrap().uid, 3);
        assert_eq!(cache.verify(keys, &t, 50).unwrap().uid, 3, "a hit");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.verify(keys, &t, 100).unwrap_err(),
            TokenError::Expired,
            "a cached token still expires"
        );
        // A tampered token is another byte string: verified, refused, not kept.
        let mut bad = t.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(cache.verify(keys, &bad, 0).is_err());
        assert_eq!(cache.len(), 1);
        // Full: further tokens are verified but not kept.
        for uid in 4..7 {
            let t = token::issue(&key, uid, &[1], 100, "s").unwrap();
            assert_eq!(cache.verify(keys, &t, 0).unwrap().uid, uid);
        }
        assert_eq!(cache.len(), 2);
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
