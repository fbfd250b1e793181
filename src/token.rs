//! Tokens for the long-poll daemon, and signatures for server-side publishers.
//!
//! WordPress (PHP, through the C ABI's `lmsrt_token_issue`) issues a token to a logged-in
//! browser; `lms-longpolld` verifies it on every poll. Both sides share a secret; nothing is
//! stored.
//!
//! ## Token format (version 1)
//!
//! ```text
//! v1.<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, "v1." + base64url(claims JSON)))>
//! ```
//!
//! base64url without padding. The claims are a JSON object:
//!
//! | field | meaning |
//! | --- | --- |
//! | `kid` | the key id: which secret signed it (two may be active during a rotation) |
//! | `uid` | the WordPress user id |
//! | `ch` | the channels the user may poll (ascending, at most [`MAX_TOKEN_CHANNELS`]) |
//! | `exp` | expiry, Unix seconds |
//! | `sid` | session binding: the first 16 bytes of SHA-256 of the WordPress session token, base64url; a token identifies the login session that asked for it (see below) |
//!
//! Verification recomputes the MAC with the secret named by `kid` and compares in constant time
//! before it reads the claims, then checks the expiry. Unknown fields are refused, so a token
//! cannot carry claims a verifier would ignore.
//!
//! ## What the session binding gives
//!
//! The daemon writes a poll's `uid` and `sid` into its log lines (the `request` line at `debug`,
//! refusals at `debug`, failures at `warn`/`error`), so an operator can tell a user's logins
//! apart: three tabs of one login share a `sid`, a phone and a laptop do not, and a token
//! copied to another machine shows up under the `sid` of the login that asked for it. Only the
//! hash is ever sent or logged, never the WordPress session token. The daemon's limits (rate,
//! connection slots) count per user and per IP, not per session: a user with several logins
//! shares the user's slots. A token outlives a logout until its `exp`, so keep `exp` short
//! (minutes) and issue tokens per page load.
//!
//! ## Publisher signatures
//!
//! `POST /v1/events` carries `X-LMS-Timestamp: <unix seconds>` and
//! `X-LMS-Signature: <kid>:<base64url(HMAC-SHA256(secret, "lmsrt-publish-v1." + timestamp + "." + body))>`.
//! The prefix keeps a publisher signature from ever being valid as a token MAC and vice versa;
//! the timestamp bounds replays to the daemon's allowed skew.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Most channels one token may allow.
pub const MAX_TOKEN_CHANNELS: usize = 1024;
/// Longest token accepted by [`verify`] (a hostile header is not decoded past this).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Shortest secret accepted: 32 bytes, the HMAC-SHA256 block-size guidance.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;

const PUBLISH_PREFIX: &[u8] = b"lmsrt-publish-v1.";

/// A signing key: an id (carried in tokens, so verifiers know which secret to use) and a
/// secret of at least [`MIN_SECRET_LEN`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key. The id is 1 to [`MAX_KEY_ID_LEN`] characters of `[A-Za-z0-9_-]`; the secret at
    /// least [`MIN_SECRET_LEN`] bytes.
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<TokenKey> {
        let id = id.into();
        let secret = secret.into();
        if id.is_empty()
            || id.len() > MAX_KEY_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidArgument(format!(
                "a key id is 1 to {MAX_KEY_ID_LEN} characters of [A-Za-z0-9_-]"
            )));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::InvalidArgument(format!(
                "a token secret is at least {MIN_SECRET_LEN} bytes, not {}",
                secret.len()
            )));
        }
        Ok(TokenKey { id, secret })
    }

    /// Parses `id:secret` (the daemon's `--token-key` form).
    pub fn parse(spec: &str) -> Result<TokenKey> {
        let (id, secret) = spec.split_once(':').ok_or_else(|| {
            Error::InvalidArgument("a token key is written <key id>:<secret>".into())
        })?;
        TokenKey::new(id, secret.as_bytes())
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The key id that signed it.
    pub kid: String,
    /// The user.
    pub uid: i64,
    /// Channels the user may poll, ascending.
    pub ch: Vec<i64>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Session binding (see the module docs).
    pub sid: String,
}

impl Claims {
    /// Whether the token allows polling `channel`.
    pub fn allows(&self, channel: i64) -> bool {
        self.ch.binary_search(&channel).is_ok()
    }
}

/// Why a token was refused. The daemon answers 401 to all of them; the kind goes to its logs
/// and to the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the `v1.<claims>.<mac>` shape, or not decodable.
    Malformed,
    /// Signed with a key id this verifier does not hold.
    UnknownKey,
    /// The MAC does not match (tampered, or another secret).
    BadSignature,
    /// Past its `exp`.
    Expired,
}

impl TokenError {
    /// A stable name: `token_malformed`, `token_unknown_key`, `token_bad_signature`,
    /// `token_expired`.
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "the token is malformed",
            TokenError::UnknownKey => "the token was signed with an unknown key",
            TokenError::BadSignature => "the token's signature does not match",
            TokenError::Expired => "the token has expired",
        })
    }
}

impl std::error::Error for TokenError {}

/// The `sid` claim for a session identifier: base64url of the first 16 bytes of its SHA-256.
/// The session token itself never appears in a token.
pub fn session_hash(session: &str) -> String {
    let d = Sha256::digest(session.as_bytes());
    B64.encode(&d[..16])
}

/// Issues a token for `user_id`, allowing `channels` until `expires_at` (Unix seconds), bound
/// to `session` (hashed with [`session_hash`]).
///
/// ```
/// use lms_realtime::token::{self, TokenKey};
/// let key = TokenKey::new("k1", b"0123456789abcdef0123456789abcdef".to_vec())?;
/// let t = token::issue(&key, 7, &[3, 1], 2_000_000_000, "wp-session")?;
/// let claims = token::verify(&[key], &t, 1_900_000_000).unwrap();
/// assert_eq!((claims.uid, claims.ch), (7, vec![1, 3]));
/// # Ok::<(), lms_realtime::Error>(())
/// ```
pub fn issue(
    key: &TokenKey,
    user_id: i64,
    channels: &[i64],
    expires_at: i64,
    session: &str,
) -> Result<String> {
    if channels.is_empty() || channels.len() > MAX_TOKEN_CHANNELS {
        return Err(Error::InvalidArgument(format!(
            "a token allows 1 to {MAX_TOKEN_CHANNELS} channels, not {}",
            channels.len()
        )));
    }
    if let Some(c) = channels.iter().find(|c| **c <= 0) {
        return Err(Error::InvalidChannel(*c));
    }
    if expires_at <= 0 {
        return Err(Error::InvalidArgument(
            "expires_at is a positive Unix time in seconds".into(),
        ));
    }
    let mut ch = channels.to_vec();
    ch.sort_unstable();
    ch.dedup();
    let claims = Claims {
        kid: key.id.clone(),
        uid: user_id,
        ch,
        exp: expires_at,
        sid: session_hash(session),
    };
    let json = serde_json::to_vec(&claims)
        .map_err(|e| Error::Internal(format!("serializing claims: {e}")))?;
    let mut out = String::with_capacity(4 + json.len() * 4 / 3 + 48);
    out.push_str("v1.");
    B64.encode_string(&json, &mut out);
    let mut mac = key.mac();
    mac.update(out.as_bytes());
    let tag = mac.finalize().into_bytes();
    out.push('.');
    B64.encode_string(tag, &mut out);
    Ok(out)
}

/// Verifies `token` against `keys` (the one named by its `kid`) at time `now` (Unix seconds).
pub fn verify(keys: &[TokenKey], token: &str, now: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let rest = token.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
    let (claims_b64, mac_b64) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let json = B64.decode(claims_b64).map_err(|_| TokenError::Malformed)?;
    let tag = B64.decode(mac_b64).map_err(|_| TokenError::Malformed)?;
    // The key id is needed to pick the secret before the MAC can be checked; it is read with a
    // minimal parse and the claims are trusted only after the MAC matches.
    #[derive(Deserialize)]
    struct KidOnly<'a> {
        #[serde(borrow)]
        kid: std::borrow::Cow<'a, str>,
    }
    let kid: KidOnly<'_> = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == kid.kid)
        .ok_or(TokenError::UnknownKey)?;
    let mut mac = key.mac();
    mac.update(&token.as_bytes()[..3 + claims_b64.len()]);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.ch.windows(2).any(|w| w[0] >= w[1]) || claims.ch.len() > MAX_TOKEN_CHANNELS {
        return Err(TokenError::Malformed);
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// The `X-LMS-Signature` value for a publish request: `<kid>:<base64url(mac)>`.
pub fn sign_publish(key: &TokenKey, timestamp: i64, body: &[u8]) -> String {
    let mut mac = key.mac();
    publish_input(&mut mac, timestamp, body);
    format!("{}:{}", key.id, B64.encode(mac.finalize().into_bytes()))
}

/// Checks a publish request's `X-LMS-Signature` against `keys`, in constant time. The caller
/// checks the timestamp's freshness.
pub fn verify_publish(
    keys: &[TokenKey],
    signature: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<(), TokenError> {
    let (kid, mac_b64) = signature.split_once(':').ok_or(TokenError::Malformed)?;
    let tag = B64.decode(mac_b64).map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == kid)
        .ok_or(TokenError::UnknownKey)?;
    let mut mac = key.mac();
    publish_input(&mut mac, timestamp, body);
    mac.verify_slice(&tag).map_err(|_| TokenError::BadSignature)
}

/// The key id and MAC bytes of a publish signature (`<key id>:<base64url MAC>`), or `None` when
/// it is not of that shape. What identifies a signed request for replay detection: the text
/// of one signature can be spelled several ways (base64 trailing bits), its bytes cannot.
pub fn publish_signature_tag(signature: &str) -> Option<(&str, Vec<u8>)> {
    let (kid, mac_b64) = signature.split_once(':')?;
    Some((kid, B64.decode(mac_b64).ok()?))
}

fn publish_input(mac: &mut HmacSha256, timestamp: i64, body: &[u8]) {
    mac.update(PUBLISH_PREFIX);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(id: &str) -> TokenKey {
        TokenKey::new(
            id,
            format!("{id}-secret-0123456789abcdef0123456789").into_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_rotation() {
        let (old, new) = (key("k1"), key("k2"));
        let t_old = issue(&old, 5, &[9, 2, 2], 1000, "s").unwrap();
        let t_new = issue(&new, 6, &[1], 1000, "s").unwrap();
        let both = [new.clone(), old.clone()];
        assert_eq!(verify(&both, &t_old, 999).unwrap().ch, vec![2, 9]);
        assert_eq!(verify(&both, &t_new, 999).unwrap().uid, 6);
        // After the rotation ends, the old key's tokens are refused.
        assert_eq!(
            verify(std::slice::from_ref(&new), &t_old, 999),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(verify(&both, &t_new, 1000), Err(TokenError::Expired));
        assert_eq!(
            verify(&both, &t_new, 0).unwrap().sid,
            session_hash("s"),
            "the session is bound by its hash"
        );
    }

    #[test]
    fn tampering_is_detected() {
        let k = key("k1");
        let t = issue(&k, 5, &[1], 1000, "s").unwrap();
        let (head, mac) = t.rsplit_once('.').unwrap();
        let claims = B64.decode(&head[3..]).unwrap();
        let forged = String::from_utf8(claims)
            .unwrap()
            .replace("[1]", "[1,2]")
            .replace("\"uid\":5", "\"uid\":6");
        let forged = format!("v1.{}.{mac}", B64.encode(forged));
        assert_eq!(
            verify(std::slice::from_ref(&k), &forged, 0),
            Err(TokenError::BadSignature)
        );
        // Another secret under the same key id.
        let other = TokenKey::new("k1", vec![7u8; 32]).unwrap();
        assert_eq!(verify(&[other], &t, 0), Err(TokenError::BadSignature));
        for bad in ["", "v1", "v1.", "v1.a.b", "v2.x.y", &"v1.".repeat(10_000)] {
            assert!(verify(std::slice::from_ref(&k), bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn issue_checks_its_arguments() {
        let k = key("k1");
        assert!(issue(&k, 1, &[], 10, "s").is_err());
        assert!(issue(&k, 1, &[0], 10, "s").is_err());
        assert!(issue(&k, 1, &[1], 0, "s").is_err());
        assert!(TokenKey::new("", vec![0; 32]).is_err());
        assert!(TokenKey::new("a b", vec![0; 32]).is_err());
        assert!(TokenKey::new("k", vec![0; 31]).is_err());
        assert!(TokenKey::parse("k1:short").is_err());
        assert_eq!(
            TokenKey::parse("k9:0123456789abcdef0123456789abcdef")
                .unwrap()
                .id(),
            "k9"
        );
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn publish_signatures() {
        let k = key("k1");
        let sig = sign_publish(&k, 100, b"{}");
        assert!(verify_publish(std::slice::from_ref(&k), &sig, 100, b"{}").is_ok());
        assert_eq!(
            verify_publish(std::slice::from_ref(&k), &sig, 101, b"{}"),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_publish(std::slice::from_ref(&k), &sig, 100, b"{ }"),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_publish(&[key("k2")], &sig, 100, b"{}"),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn publish_signature_vector() {
        // Pinned, and checked against PHP's hash_hmac in php-ext/tests/Unit/TokenTest.php.
        let k = TokenKey::new("k1", b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        assert_eq!(
            sign_publish(&k, 1_700_000_000, br#"{"a":1}"#),
            "k1:E9Nw3qXs7TUhXbRMmcNTa1aZotTRGCTUf0bkh_s8HUg"
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(s in "\\PC{0,300}") {
            let _ = verify(&[key("k1")], &s, 0);
            let _ = verify_publish(&[key("k1")], &s, 0, b"");
        }
    }
}
