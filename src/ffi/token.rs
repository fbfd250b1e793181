//! Tokens for the long-poll daemon: `lmsrt_token_issue`.
//!
//! Independent of any store: WordPress issues a token for the logged-in user with the secret it
//! shares with `lms-longpolld` (see the crate's `token` module for the format).

use std::ffi::c_char;

use super::args::{MAX_SHORT_BYTES, out_arg, str_arg, too_long};
use super::buf::lmsrt_buf;
use super::panic::ffi_boundary;
use super::status::{FfiError, lmsrt_status};
use crate::token::{self, MAX_TOKEN_CHANNELS, TokenKey};

/// Longest secret accepted.
const MAX_SECRET_BYTES: usize = 4096;
/// Longest channel list document accepted.
const MAX_CHANNELS_BYTES: usize = 64 * 1024;

/// Issues a token for the daemon and writes it to `*out_token` (a string; free it with
/// `lmsrt_buf_free`).
///
/// * `key_id` (`key_id_len` bytes): the id of the signing key, 1 to 32 characters of
///   `[A-Za-z0-9_-]`; the daemon's `--token-key` is `<key id>:<secret>`.
/// * `secret` (`secret_len` bytes, at least 32): the shared secret.
/// * `user_id`: the user the token is for.
/// * `channels_json` (`channels_json_len` bytes): a JSON array of the channel ids (> 0) the
///   user may poll, e.g. `[1,7]`; 1 to 1024 of them.
/// * `expires_at`: expiry, Unix seconds (keep tokens short-lived: minutes).
/// * `session` (`session_len` bytes): the login session the token is bound to (WordPress's
///   session token); only its SHA-256 prefix goes into the token.
///
/// Format: `v1.<base64url(claims JSON)>.<base64url(HMAC-SHA256)>`, claims `kid`, `uid`, `ch`,
/// `exp`, `sid`. Needs no store; thread-safe.
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (bad key id, short secret,
/// malformed channel list, non-positive expiry), `INVALID_CHANNEL`.
///
/// # Safety
///
/// Each string pointer must be valid for reads of its length; `out_token` valid for a write of
/// one `lmsrt_buf`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lmsrt_token_issue(
    key_id: *const c_char,
    key_id_len: usize,
    secret: *const c_char,
    secret_len: usize,
    user_id: i64,
    channels_json: *const c_char,
    channels_json_len: usize,
    expires_at: i64,
    session: *const c_char,
    session_len: usize,
    out_token: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_token, "out_token")?;
        // SAFETY: the caller guarantees each pointer is readable for its length.
        let key_id = unsafe {
            str_arg(key_id, key_id_len, MAX_SHORT_BYTES, "key_id", too_long("key_id", MAX_SHORT_BYTES))
        }?;
        // SAFETY: as above.
        let secret = unsafe {
            str_arg(secret, secret_len, MAX_SECRET_BYTES, "secret", too_long("secret", MAX_SECRET_BYTES))
        }?;
        // SAFETY: as above.
        let channels = unsafe {
            str_arg(
                channels_json,
                channels_json_len,
                MAX_CHANNELS_BYTES,
                "channels_json",
                too_long("channels_json", MAX_CHANNELS_BYTES),
            )
        }?;
        // SAFETY: as above.
        let session = unsafe {
            str_arg(session, session_len, MAX_SECRET_BYTES, "session", too_long("session", MAX_SECRET_BYTES))
        }?;
        let channels: Vec<i64> = serde_json::from_str(channels).map_err(|e| {
            FfiError::invalid(format!("channels_json is not a JSON array of integers: {e}"))
        })?;
        if channels.len() > MAX_TOKEN_CHANNELS {
            return Err(FfiError::invalid(format!(
                "at most {MAX_TOKEN_CHANNELS} channels per token"
            )));
        }
        let key = TokenKey::new(key_id, secret.as_bytes())?;
        let t = token::issue(&key, user_id, &channels, expires_at, session)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(lmsrt_buf::from_vec(t.into_bytes())) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::status::lmsrt_status;

    fn issue(secret: &str, channels: &str) -> (lmsrt_status, Option<String>) {
        let mut buf = lmsrt_buf::EMPTY;
        let (k, s) = ("k1", "sess");
        // SAFETY: every pointer and length comes from a live `&str`; `buf` is writable.
        let st = unsafe {
            lmsrt_token_issue(
                k.as_ptr().cast(),
                k.len(),
                secret.as_ptr().cast(),
                secret.len(),
                7,
                channels.as_ptr().cast(),
                channels.len(),
                2_000_000_000,
                s.as_ptr().cast(),
                s.len(),
                &mut buf,
            )
        };
        let text = (!buf.ptr.is_null()).then(|| {
            // SAFETY: a filled buffer holds `len` bytes of UTF-8.
            let b = unsafe { std::slice::from_raw_parts(buf.ptr.cast::<u8>(), buf.len) };
            String::from_utf8(b.to_vec()).unwrap()
        });
        // SAFETY: `buf` is empty or filled by the call above.
        unsafe { crate::ffi::buf::lmsrt_buf_free(&mut buf) };
        (st, text)
    }

    #[test]
    fn tokens_issued_through_the_abi_verify_in_rust() {
        let secret = "0123456789abcdef0123456789abcdef";
        let (st, t) = issue(secret, "[3,1]");
        assert_eq!(st, lmsrt_status::Ok);
        let key = TokenKey::new("k1", secret.as_bytes()).unwrap();
        let c = token::verify(&[key], &t.unwrap(), 1_900_000_000).unwrap();
        assert_eq!(
            (c.uid, c.ch, c.sid),
            (7, vec![1, 3], token::session_hash("sess"))
        );
        let (st, t) = issue("short", "[1]");
        assert_eq!((st, t), (lmsrt_status::InvalidArgument, None));
        let (st, _) = issue(secret, "[1, \"x\"]");
        assert_eq!(st, lmsrt_status::InvalidArgument);
    }
}
