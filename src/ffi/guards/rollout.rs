//! The rollout's C class: `lmsrt_rollout_cohort` (stateless, no handle) and the cohort it
//! writes, `lmsrt_cohort`.

use std::ffi::c_char;

use serde::Deserialize;

use crate::ffi::args::{MAX_REQUEST_BYTES, name_arg, opt_str_arg, too_long};
use crate::ffi::call::{Out, with_outs};
use crate::ffi::status::{FfiError, lmsrt_status};
use crate::guards::{Cohort, Rollout};

/// Which side of a rollout a user is on: what `lmsrt_rollout_cohort` writes to `*out_cohort`
/// (an `int32_t`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lmsrt_cohort {
    /// Outside the percentage: keeps the old behaviour.
    Control = 0,
    /// Inside the percentage: the new behaviour is on.
    Rollout = 1,
    /// On the beta list: the new behaviour is always on.
    Beta = 2,
}

/// A beta user id: a string, or an integer (WordPress user ids) taken as its decimal text.
#[derive(Deserialize)]
#[serde(untagged)]
enum BetaUser {
    Text(String),
    Int(i64),
}

/// Which rollout cohort `user` falls in, with no state and no handle: every process computes
/// the same answer from the same settings.
///
/// `percent` is 0 to 100. `salt` (at most 1024 bytes) draws the cohorts: a user's bucket is a
/// stable hash of the salt and the user id modulo 10000, and the user is in the rollout when
/// the bucket is below `percent * 100`, so raising the percentage only ever adds users.
/// `beta_users` (`beta_len` bytes, at most 1 MiB) is NULL (with length 0), empty, or a JSON
/// array of user ids (strings, or integers taken as their decimal text) who are always in
/// (`LMSRT_COHORT_BETA`).
/// `user` (at most 1024 bytes) is the user id.
///
/// On success `*out_cohort` receives an `lmsrt_cohort` value and `*out_bucket` the user's
/// bucket (0 to 9999, whatever the cohort).
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (percent over 100, malformed
/// beta list, string too long). Thread-safe.
///
/// # Safety
///
/// `salt` and `user` valid for reads of their lengths; `beta_users`, when not NULL, for reads
/// of `beta_len` bytes; `out_cohort` and `out_bucket` valid for one write each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_rollout_cohort(
    percent: u32,
    salt: *const c_char,
    salt_len: usize,
    beta_users: *const c_char,
    beta_len: usize,
    user: *const c_char,
    user_len: usize,
    out_cohort: *mut i32,
    out_bucket: *mut u32,
) -> lmsrt_status {
    let outs = (
        Out::new(out_cohort, "out_cohort"),
        Out::new(out_bucket, "out_bucket"),
    );
    let body = || {
        // SAFETY: the caller guarantees the lengths (`beta_users` may be NULL).
        let (salt, beta, user) = unsafe {
            (
                name_arg(salt, salt_len, "salt")?,
                opt_str_arg(
                    beta_users,
                    beta_len,
                    MAX_REQUEST_BYTES,
                    "beta_users",
                    too_long("beta_users", MAX_REQUEST_BYTES),
                )?,
                name_arg(user, user_len, "user")?,
            )
        };
        let mut rollout = Rollout::new(percent, salt)?;
        if let Some(text) = beta.filter(|t| !t.trim().is_empty()) {
            let list: Vec<BetaUser> = serde_json::from_str(text).map_err(|e| {
                FfiError::invalid(format!(
                    "beta_users: expected a JSON array of user ids: {e}"
                ))
            })?;
            rollout = rollout.beta_users(list.into_iter().map(|u| match u {
                BetaUser::Text(s) => s,
                BetaUser::Int(i) => i.to_string(),
            }));
        }
        let cohort = match rollout.cohort(user) {
            Cohort::Control => lmsrt_cohort::Control,
            Cohort::Rollout => lmsrt_cohort::Rollout,
            Cohort::Beta => lmsrt_cohort::Beta,
        };
        Ok((cohort as i32, rollout.bucket(user)))
    };
    // SAFETY: the caller guarantees `out_cohort` and `out_bucket` writable.
    unsafe { with_outs(outs, body) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::guards::tests::s;

    #[test]
    fn rollout_matches_the_rust_buckets() {
        let mut cohort = -1;
        let mut bucket = 0;
        for (user, want) in [("1", 9532), ("2", 810), ("42", 3230), ("user-7", 6887)] {
            // SAFETY: live strings and out-pointers.
            let st = unsafe {
                lmsrt_rollout_cohort(
                    5,
                    s("lms").0,
                    s("lms").1,
                    std::ptr::null(),
                    0,
                    s(user).0,
                    s(user).1,
                    &mut cohort,
                    &mut bucket,
                )
            };
            assert_eq!(st, lmsrt_status::Ok);
            assert_eq!(bucket, want);
            assert_eq!(cohort, lmsrt_cohort::Control as i32);
        }
        let beta = r#"["x", 42]"#;
        // SAFETY: as above.
        let st = unsafe {
            lmsrt_rollout_cohort(
                0,
                s("lms").0,
                s("lms").1,
                s(beta).0,
                s(beta).1,
                s("42").0,
                s("42").1,
                &mut cohort,
                &mut bucket,
            )
        };
        assert_eq!(st, lmsrt_status::Ok);
        assert_eq!((cohort, bucket), (lmsrt_cohort::Beta as i32, 3230));
    }
}
