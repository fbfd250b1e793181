//! [`StoreLocation`]: where a store lives, parsed from the one string every opener takes (a
//! file path, or a Redis URL).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The schemes of a Redis location.
const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis+cluster", "rediss+cluster"];

/// Where a store lives: a SQLite file, or a Redis server or cluster.
///
/// Parsed from a string ([`parse`](Self::parse)); any text without a `scheme://` is a file
/// path. Redis (cargo feature `redis`):
///
/// - `redis://[user:password@]host[:port][/db]`: one Redis node; `rediss://…` the same over
///   TLS (rustls; the server's certificate is checked against the system's roots, or
///   `tls_ca` below).
/// - `redis+cluster://[user:password@]host1:port1,host2:port2,…[/]`: a Redis Cluster, reached
///   through any of its seed nodes (one seed is enough; more survive a seed being down);
///   `rediss+cluster://…` over TLS. A cluster has database 0 only. A plain `redis://` URL
///   with several hosts is refused: the scheme says it is a cluster.
///
/// Query parameters, all optional, in any order:
///
/// - `store=NAME` (letters, digits, `_`, `-`; default `lmsrt`) keeps several stores apart on
///   one server. Each store's keys share one hash tag, so on a cluster a store lives in one
///   slot, on the one master that holds it (redirects followed; see `docs/redis.md`).
/// - `tls_ca=PATH`: trust this PEM CA file (a private CA) instead of the system's roots;
///   `tls_cert=PATH&tls_key=PATH`: a client certificate, for a server with
///   `tls-auth-clients yes`. `rediss` only; the files are read when the store opens;
///   `%XX`-escape `&`, `%` and spaces in a path.
/// - `wait_replicas=N` (1 to 1000) and `wait_timeout_ms=T` (1 to 60000, default 1000): every
///   append, cursor commit and `advance_ids` is acknowledged only once `N` replicas have it
///   (Redis `WAIT`); fewer within `T` is [`Error::Storage`], the write possibly lost in a
///   failover.
/// - anything else goes to the `redis` crate (e.g. `protocol=resp3`).
///
/// ```
/// use lms_realtime::store::StoreLocation;
/// assert!(matches!(StoreLocation::parse("/var/lib/lms/events.db")?, StoreLocation::Path(_)));
/// assert!(matches!(StoreLocation::parse("redis://127.0.0.1:6379/0")?, StoreLocation::Redis(_)));
/// assert!(matches!(
///     StoreLocation::parse("rediss+cluster://10.0.0.1:6379,10.0.0.2:6379/?store=site1&tls_ca=/etc/redis/ca.pem")?,
///     StoreLocation::Redis(_)
/// ));
/// assert!(StoreLocation::parse("http://example.com/").is_err());
/// # Ok::<(), lms_realtime::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file.
    Path(PathBuf),
    /// A Redis URL (any of the four schemes), as given.
    Redis(String),
}

impl StoreLocation {
    /// Parses a path or a `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://`
    /// URL; [`Error::InvalidArgument`] for an empty string or another scheme (the URL's
    /// parameters are checked when the store opens).
    pub fn parse(s: &str) -> Result<StoreLocation> {
        if s.is_empty() {
            return Err(Error::InvalidArgument(
                "a store location is a file path or a redis:// URL, not empty".into(),
            ));
        }
        if let Some(i) = s.find("://")
            && REDIS_SCHEMES.contains(&s[..i].to_ascii_lowercase().as_str())
        {
            return Ok(StoreLocation::Redis(s.to_owned()));
        }
        if let Some(i) = s.find("://")
            && i > 0
            && s[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
        {
            return Err(Error::InvalidArgument(format!(
                "unknown store URL scheme {:?}: expected redis://, rediss://, redis+cluster://, \
                 rediss+cluster:// or a file path",
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
