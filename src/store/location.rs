//! [`StoreLocation`]: where a store lives, parsed from the one string every opener takes (a
//! file path, or a Redis URL).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a store lives: a SQLite file, or a Redis server.
///
/// Parsed from a string ([`parse`](Self::parse)): `redis://[user:password@]host[:port][/db]`
/// or `rediss://…` (TLS) is Redis; any other text without a `scheme://` is a file path.
/// A Redis URL may add `?store=NAME` (letters, digits, `_`, `-`; default `lmsrt`) to keep
/// several stores apart on one server: each store's keys share one hash tag, so on a Redis
/// Cluster a store lives in one slot (see `docs/redis.md`).
///
/// ```
/// use lms_realtime::store::StoreLocation;
/// assert!(matches!(StoreLocation::parse("/var/lib/lms/events.db")?, StoreLocation::Path(_)));
/// assert!(matches!(StoreLocation::parse("redis://127.0.0.1:6379/0")?, StoreLocation::Redis(_)));
/// assert!(StoreLocation::parse("http://example.com/").is_err());
/// # Ok::<(), lms_realtime::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file.
    Path(PathBuf),
    /// A Redis URL, as given.
    Redis(String),
}

impl StoreLocation {
    /// Parses a path or a `redis://` / `rediss://` URL; [`Error::InvalidArgument`] for an
    /// empty string or another scheme.
    pub fn parse(s: &str) -> Result<StoreLocation> {
        if s.is_empty() {
            return Err(Error::InvalidArgument(
                "a store location is a file path or a redis:// URL, not empty".into(),
            ));
        }
        let lower = s.get(..9).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("redis://") || lower.starts_with("rediss://") {
            return Ok(StoreLocation::Redis(s.to_owned()));
        }
        if let Some(i) = s.find("://")
            && i > 0
            && s[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return Err(Error::InvalidArgument(format!(
                "unknown store URL scheme {:?}: expected redis://, rediss:// or a file path",
                &s[..i]
            )));
        }
        Ok(StoreLocation::Path(PathBuf::from(s)))
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = Error;
    fn from_str(s: &str) -> Result<StoreLocation> {
        StoreLocation::parse(s)
    }
}
