//! Canary rollout: a percentage of users plus a beta list, bucketed by a stable hash.
//!
//! A user's bucket is `stable_hash(salt, user_id) mod 10,000`; the user is in the rollout when
//! the bucket is below `percent × 100`. The bucket never changes for a given salt, so raising
//! the percentage only ever adds users and lowering it only removes them: nobody flips back and
//! forth between old and new while the rollout moves 5% → 20% → 50% → 100%. A new salt draws
//! new cohorts (for an unrelated experiment). Beta users are always in.
//!
//! This guard has no shared state: every process computes the same answer from the same
//! settings (the WordPress options `lms_longpoll_rollout` and `lms_longpoll_beta_users`).
//!
//! ```
//! use lms_realtime::guards::{Cohort, Rollout};
//! let r = Rollout::new(20, "longpoll")?.beta_users(["42"]);
//! assert_eq!(r.cohort("42"), Cohort::Beta);
//! let wider = Rollout::new(50, "longpoll")?;
//! // Everyone in at 20% is still in at 50%.
//! for id in 0..1000 {
//!     let id = id.to_string();
//!     if r.is_enabled(&id) { assert!(wider.is_enabled(&id)); }
//! }
//! # Ok::<(), lms_realtime::Error>(())
//! ```

use std::collections::HashSet;

use serde::Serialize;

use super::stable_hash;
use crate::error::{Error, Result};

/// Buckets a user can fall in: percentages have two decimals of resolution internally.
pub const BUCKETS: u32 = 10_000;

/// Which side of the rollout a user is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cohort {
    /// On the beta list: always enabled.
    Beta,
    /// Inside the percentage: enabled.
    Rollout,
    /// Outside: keeps the old behaviour.
    Control,
}

impl Cohort {
    /// Whether the new behaviour is on for this cohort.
    pub fn is_enabled(self) -> bool {
        !matches!(self, Cohort::Control)
    }

    /// `"beta"`, `"rollout"` or `"control"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Beta => "beta",
            Cohort::Rollout => "rollout",
            Cohort::Control => "control",
        }
    }
}

/// Rollout settings: a percentage, a salt and a beta list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    percent: u32,
    salt: String,
    beta: HashSet<String>,
}

impl Rollout {
    /// `percent` (0–100) of users, drawn by `salt`. More than 100 is
    /// [`Error::InvalidArgument`].
    pub fn new(percent: u32, salt: impl Into<String>) -> Result<Rollout> {
        if percent > 100 {
            return Err(Error::InvalidArgument(format!(
                "rollout percentage {percent}: expected 0..=100"
            )));
        }
        Ok(Rollout {
            percent,
            salt: salt.into(),
            beta: HashSet::new(),
        })
    }

    /// Adds users who are always enabled.
    pub fn beta_users<S: Into<String>>(mut self, users: impl IntoIterator<Item = S>) -> Rollout {
        self.beta.extend(users.into_iter().map(Into::into));
        self
    }

    /// The percentage.
    pub fn percent(&self) -> u32 {
        self.percent
    }

    /// The user's fixed bucket, 0..10,000, for this salt.
    pub fn bucket(&self, user_id: &str) -> u32 {
        (stable_hash(&[self.salt.as_bytes(), user_id.as_bytes()]) % BUCKETS as u64) as u32
    }

    /// The user's cohort.
    pub fn cohort(&self, user_id: &str) -> Cohort {
        if self.beta.contains(user_id) {
            Cohort::Beta
        } else if self.bucket(user_id) < self.percent * (BUCKETS / 100) {
            Cohort::Rollout
        } else {
            Cohort::Control
        }
    }

    /// Whether the new behaviour is on for the user.
    pub fn is_enabled(&self, user_id: &str) -> bool {
        self.cohort(user_id).is_enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_pinned() {
        // Changing the hash would reshuffle every live cohort: these values must not move.
        let r = Rollout::new(5, "lms").unwrap();
        let got: Vec<u32> = ["1", "2", "42", "user-7"]
            .iter()
            .map(|u| r.bucket(u))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 4] = [9532, 810, 3230, 6887];

    #[test]
    fn edges_and_beta() {
        let none = Rollout::new(0, "s").unwrap().beta_users(["9"]);
        let all = Rollout::new(100, "s").unwrap();
        for id in 0..2000 {
            let id = id.to_string();
            assert_eq!(none.is_enabled(&id), id == "9");
            assert!(all.is_enabled(&id));
        }
        assert_eq!(none.cohort("9"), Cohort::Beta);
        assert_eq!(all.cohort("9"), Cohort::Rollout);
        assert!(Rollout::new(101, "s").is_err());
    }

    #[test]
    fn share_is_close_to_the_percentage() {
        let r = Rollout::new(20, "canary").unwrap();
        let n = (0..20_000).filter(|i| r.is_enabled(&i.to_string())).count();
        assert!((3_600..4_400).contains(&n), "{n} of 20,000 at 20%");
    }

    #[test]
    fn salts_draw_different_cohorts() {
        let a = Rollout::new(50, "a").unwrap();
        let b = Rollout::new(50, "b").unwrap();
        let same = (0..1000)
            .filter(|i| a.is_enabled(&i.to_string()) == b.is_enabled(&i.to_string()))
            .count();
        assert!((400..600).contains(&same), "{same}");
    }

    proptest! {
        #[test]
        fn raising_the_percentage_only_adds_users(user in ".{0,24}", p in 0u32..=100, q in 0u32..=100) {
            let (lo, hi) = (p.min(q), p.max(q));
            let lo = Rollout::new(lo, "salt").unwrap();
            let hi = Rollout::new(hi, "salt").unwrap();
            prop_assert!(!lo.is_enabled(&user) || hi.is_enabled(&user));
            prop_assert_eq!(lo.bucket(&user), hi.bucket(&user));
        }
    }
}
