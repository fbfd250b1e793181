//! One error type for the whole crate, with stable numeric codes.
//!
//! [`ErrorCode`] is the single table of numbers shared by the C ABI (`LMSRT_STATUS_*`), the PHP
//! exceptions and the daemon's HTTP errors. Nothing outside this file picks numbers. A code, once
//! published, keeps its value; a removed one stays here as a comment.

use std::fmt;

/// Stable status codes: 0 is success, every failure is negative.
///
/// The C ABI returns these from every fallible function, so the values never change.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// An argument is out of range or malformed (see the message).
    InvalidArgument = -1,
    /// The event type does not match `[a-z][a-z0-9_]{0,63}`.
    InvalidEventType = -2,
    /// The priority is not 1–4.
    InvalidPriority = -3,
    /// The channel id is not positive.
    InvalidChannel = -4,
    /// The event data is not a JSON object.
    InvalidData = -5,
    /// The event data is larger than the configured cap.
    DataTooLarge = -6,
    /// The time-to-live is outside the configured bounds.
    InvalidTtl = -7,
    /// The cursor string cannot be parsed.
    InvalidCursor = -8,
    /// The store (or handle) has been closed.
    Closed = -9,
    /// The database is locked by another writer for longer than allowed; retry later.
    Busy = -10,
    /// The database failed (I/O error, full disk, corruption).
    Storage = -11,
    /// The database file was written by a newer version of this library.
    SchemaTooNew = -12,
    /// A file beside the database (shared memory, lock file) could not be used.
    Io = -13,
    /// A rate limit refused the request; retry after the advertised delay.
    RateLimited = -14,
    /// A circuit breaker is open; back off.
    CircuitOpen = -15,
    /// All connection slots of the key are taken.
    SlotsExhausted = -16,
    /// A panic was caught at the C boundary (a bug in this library).
    Panic = -17,
    /// A required pointer argument was NULL.
    NullPointer = -18,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = -19,
    /// An idempotency key was reused for a different event.
    IdempotencyConflict = -20,
    /// A page of the database file is damaged (SQLite reported corruption). Retrying does not
    /// help: run `lms-longpolld --check` and salvage the store (see the README).
    Corrupt = -21,
    /// An internal invariant failed (a bug in this library).
    Internal = -99,
}

impl ErrorCode {
    /// Every code, in table order (used by the bindings to check their mappings).
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::Ok,
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidEventType,
        ErrorCode::InvalidPriority,
        ErrorCode::InvalidChannel,
        ErrorCode::InvalidData,
        ErrorCode::DataTooLarge,
        ErrorCode::InvalidTtl,
        ErrorCode::InvalidCursor,
        ErrorCode::Closed,
        ErrorCode::Busy,
        ErrorCode::Storage,
        ErrorCode::SchemaTooNew,
        ErrorCode::Io,
        ErrorCode::RateLimited,
        ErrorCode::CircuitOpen,
        ErrorCode::SlotsExhausted,
        ErrorCode::Panic,
        ErrorCode::NullPointer,
        ErrorCode::InvalidUtf8,
        ErrorCode::IdempotencyConflict,
        ErrorCode::Corrupt,
    ];

    /// The numeric value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// A short, stable, machine-readable name (`"invalid_cursor"`), used in HTTP error bodies.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidEventType => "invalid_event_type",
            ErrorCode::InvalidPriority => "invalid_priority",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::InvalidData => "invalid_data",
            ErrorCode::DataTooLarge => "data_too_large",
            ErrorCode::InvalidTtl => "invalid_ttl",
            ErrorCode::InvalidCursor => "invalid_cursor",
            ErrorCode::Closed => "closed",
            ErrorCode::Busy => "busy",
            ErrorCode::Storage => "storage",
            ErrorCode::SchemaTooNew => "schema_too_new",
            ErrorCode::Io => "io",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::CircuitOpen => "circuit_open",
            ErrorCode::SlotsExhausted => "slots_exhausted",
            ErrorCode::Panic => "panic",
            ErrorCode::NullPointer => "null_pointer",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::Corrupt => "corrupt",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code for a numeric value, if it is one of the table.
    pub fn from_i32(v: i32) -> Option<ErrorCode> {
        if v == ErrorCode::Internal as i32 {
            return Some(ErrorCode::Internal);
        }
        ErrorCode::ALL.iter().copied().find(|c| *c as i32 == v)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every failure of this crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The event type does not match `[a-z][a-z0-9_]{0,63}`.
    #[error("invalid event type {0:?}: expected [a-z][a-z0-9_]{{0,63}}")]
    InvalidEventType(String),
    /// The priority is not 1–4.
    #[error("invalid priority {0}: expected 1 (critical) to 4 (low)")]
    InvalidPriority(i64),
    /// The channel id is not positive.
    #[error("invalid channel id {0}: expected a positive integer")]
    InvalidChannel(i64),
    /// The event data is not a JSON object.
    #[error("invalid event data: {0}")]
    InvalidData(String),
    /// The event data is larger than the cap.
    #[error("event data is {size} bytes, over the cap of {max} bytes")]
    DataTooLarge {
        /// Size of the data given.
        size: usize,
        /// The configured cap.
        max: usize,
    },
    /// The time-to-live is outside the configured bounds.
    #[error("invalid ttl {ttl_ms} ms: expected {min_ms}..={max_ms} ms")]
    InvalidTtl {
        /// The TTL given.
        ttl_ms: i64,
        /// Lower bound.
        min_ms: i64,
        /// Upper bound.
        max_ms: i64,
    },
    /// The cursor string cannot be parsed.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// The database stayed locked by another writer for too long.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The file was written by a newer schema than this library knows.
    #[error(
        "database schema version {found} is newer than the newest this library supports ({supported})"
    )]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this library knows.
        supported: i64,
    },
    /// A file beside the database could not be used.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A rate limit refused the request.
    #[error("rate limited: retry after {retry_after_ms} ms")]
    RateLimited {
        /// How long to wait before retrying.
        retry_after_ms: u64,
    },
    /// A circuit breaker is open.
    #[error("circuit {name:?} is open: retry after {retry_after_ms} ms")]
    CircuitOpen {
        /// Breaker name.
        name: String,
        /// How long until the breaker admits a probe.
        retry_after_ms: u64,
    },
    /// All connection slots of the key are taken.
    #[error("all {max} connection slots of {key:?} are taken")]
    SlotsExhausted {
        /// Key (user) whose slots are full.
        key: String,
        /// Slots per key.
        max: u32,
    },
    /// An idempotency key was reused for a different event.
    #[error("idempotency key {0:?} was already used for a different event")]
    IdempotencyConflict(String),
    /// A page of the database file is damaged. Kept apart from [`Error::Storage`] because
    /// retrying cannot fix it: the operator has to check and salvage the file.
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    /// An internal invariant failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::InvalidEventType(_) => ErrorCode::InvalidEventType,
            Error::InvalidPriority(_) => ErrorCode::InvalidPriority,
            Error::InvalidChannel(_) => ErrorCode::InvalidChannel,
            Error::InvalidData(_) => ErrorCode::InvalidData,
            Error::DataTooLarge { .. } => ErrorCode::DataTooLarge,
            Error::InvalidTtl { .. } => ErrorCode::InvalidTtl,
            Error::InvalidCursor(_) => ErrorCode::InvalidCursor,
            Error::Closed => ErrorCode::Closed,
            Error::Busy(_) => ErrorCode::Busy,
            Error::Storage(_) => ErrorCode::Storage,
            Error::SchemaTooNew { .. } => ErrorCode::SchemaTooNew,
            Error::Io { .. } => ErrorCode::Io,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::CircuitOpen { .. } => ErrorCode::CircuitOpen,
            Error::SlotsExhausted { .. } => ErrorCode::SlotsExhausted,
            Error::IdempotencyConflict(_) => ErrorCode::IdempotencyConflict,
            Error::Corrupt(_) => ErrorCode::Corrupt,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether this is a fault of the store or the host (busy, storage, corrupt, I/O, internal) rather
    /// than a refusal of bad input or a guard's decision: what breakers and error rates count.
    pub fn is_fault(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::Busy
                | ErrorCode::Storage
                | ErrorCode::Corrupt
                | ErrorCode::Io
                | ErrorCode::Internal
        )
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        // A full disk (or quota) is the storage failure the C header documents as STORAGE,
        // wherever it strikes, so callers back off and retry rather than treat the file as
        // unusable.
        #[cfg(unix)]
        let full = matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        #[cfg(not(unix))]
        let full = source.kind() == std::io::ErrorKind::StorageFull;
        if full {
            return Error::Storage(format!(
                "no space left for {}: {source}",
                path.as_ref().display()
            ));
        }
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL.iter().chain([ErrorCode::Internal].iter()) {
            assert!(seen.insert(c.as_i32()), "duplicate code {c:?}");
            assert!(seen.len() == 1 || c.as_i32() < 0);
            assert_eq!(ErrorCode::from_i32(c.as_i32()), Some(*c));
        }
        assert_eq!(ErrorCode::from_i32(-1000), None);
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(Error::InvalidPriority(9).code(), ErrorCode::InvalidPriority);
        assert_eq!(Error::Closed.code().name(), "closed");
        let e = Error::DataTooLarge { size: 10, max: 5 };
        assert_eq!(e.code(), ErrorCode::DataTooLarge);
        assert!(e.to_string().contains("10 bytes"));
    }
}
