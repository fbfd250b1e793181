//! One error type for the whole crate, with stable numeric codes.
//!
//! [`ErrorCode`] is the single table of numbers shared by the C ABI (`LMSRT_STATUS_*`), the PHP
//! exceptions and the daemon's HTTP errors. Nothing outside this file picks numbers. A code, once
//! published, keeps its value; a removed one stays here as a comment.

use std::fmt;

/// Declares [`ErrorCode`] from one table: each row is a code's doc, variant, number and name.
///
/// Everything about a code comes from its row: the enum, [`ErrorCode::ALL`], [`ErrorCode::name`]
/// and [`ErrorCode::from_i32`] here, and the C ABI's `lmsrt_status` enum, which `build.rs`
/// generates from the rows of this file (cbindgen does not expand macros, so the C side cannot be
/// a macro of its own). Two rows with one number do not compile (the enum's discriminants
/// collide); `build.rs` reads the rows strictly and fails on a line it does not understand.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $value:literal => $name:literal,)*) => {
        /// Stable status codes: 0 is success, every failure is negative.
        ///
        /// The C ABI returns these from every fallible function (as `lmsrt_status`), so the values
        /// never change. A plain `repr(C)` enum (an `int`, 32 bits on every supported target),
        /// like the C enum generated from it.
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant = $value,)*
        }

        impl ErrorCode {
            /// Every code, in table order (used by the bindings to check their mappings).
            pub const ALL: [ErrorCode; [$(stringify!($variant)),*].len()] =
                [$(ErrorCode::$variant),*];

            /// A short, stable, machine-readable name (`"invalid_cursor"`), used in HTTP error
            /// bodies.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// The code for a numeric value, if it is one of the table.
            pub fn from_i32(v: i32) -> Option<ErrorCode> {
                match v {
                    $($value => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

// The one table of codes. A code, once published, keeps its number; a removed one stays here as
// a comment. The docs are also the C header's, so they name no Rust-only item.
error_codes! {
    /// Success.
    Ok = 0 => "ok",
    /// An argument is out of range or malformed (see the message).
    InvalidArgument = -1 => "invalid_argument",
    /// The event type does not match `[a-z][a-z0-9_]{0,63}`.
    InvalidEventType = -2 => "invalid_event_type",
    /// The priority is not 1-4.
    InvalidPriority = -3 => "invalid_priority",
    /// The channel id is not positive.
    InvalidChannel = -4 => "invalid_channel",
    /// The event data is not a JSON object.
    InvalidData = -5 => "invalid_data",
    /// The event data is larger than the configured cap.
    DataTooLarge = -6 => "data_too_large",
    /// The time-to-live is outside the configured bounds.
    InvalidTtl = -7 => "invalid_ttl",
    /// The cursor string cannot be parsed.
    InvalidCursor = -8 => "invalid_cursor",
    /// The store (or its handle) has been closed, or the handle was never opened.
    Closed = -9 => "closed",
    /// The database is locked by another writer for longer than allowed; retry later.
    Busy = -10 => "busy",
    /// The database failed (I/O error, full disk, corruption).
    Storage = -11 => "storage",
    /// The database file was written by a newer version of this library.
    SchemaTooNew = -12 => "schema_too_new",
    /// A file beside the database (shared memory, lock file) could not be used.
    Io = -13 => "io",
    /// A rate limit refused the request; retry after the advertised delay.
    RateLimited = -14 => "rate_limited",
    /// A circuit breaker is open; back off.
    CircuitOpen = -15 => "circuit_open",
    /// All connection slots of the key are taken.
    SlotsExhausted = -16 => "slots_exhausted",
    /// A panic was caught at the C boundary (a bug in this library).
    Panic = -17 => "panic",
    /// A required pointer argument was NULL.
    NullPointer = -18 => "null_pointer",
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = -19 => "invalid_utf8",
    /// An idempotency key was reused for a different event.
    IdempotencyConflict = -20 => "idempotency_conflict",
    /// A page of the database file is damaged (SQLite reported corruption); retrying does not
    /// help. Check and salvage the store (`lmsrt_store_check` and `lmsrt_store_salvage`, or
    /// `lms-longpolld --check`; see the README).
    Corrupt = -21 => "corrupt",
    /// An internal invariant failed (a bug in this library).
    Internal = -99 => "internal",
}

// The C ABI promises 32-bit status codes.
const _: () = assert!(std::mem::size_of::<ErrorCode>() == 4);

impl ErrorCode {
    /// The numeric value.
    pub fn as_i32(self) -> i32 {
        self as i32
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
    fn every_code_is_listed_once_and_round_trips_through_its_number() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(numbers.insert(c.as_i32()), "two codes share {}", c.as_i32());
            assert!(
                names.insert(c.name()),
                "two codes share the name {}",
                c.name()
            );
            assert!(
                c == ErrorCode::Ok || c.as_i32() < 0,
                "{c:?} is not negative"
            );
            assert_eq!(ErrorCode::from_i32(c.as_i32()), Some(c));
            // The name is the variant's, in snake case (what the C constant is built from).
            let snake: String = format!("{c:?}")
                .chars()
                .enumerate()
                .flat_map(|(i, ch)| {
                    let sep = (i > 0 && ch.is_ascii_uppercase()).then_some('_');
                    sep.into_iter()
                        .chain(std::iter::once(ch.to_ascii_lowercase()))
                })
                .collect();
            assert_eq!(c.name(), snake);
        }
        assert!(ErrorCode::ALL.contains(&ErrorCode::Internal));
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
