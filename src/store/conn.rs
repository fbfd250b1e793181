//! Connection setup, error mapping, and syncing a connection's files before a checkpoint.
//!
//! SQLite lets one writer in at a time and makes the others poll: its busy handler sleeps with
//! growing back-off (1, 2, 5, … 100 ms). Writers here queue for the cross-process writer lock
//! first (see [`super::writer_lock`]), so the SQLite write lock is always free by the time a
//! writer asks for it. The busy handler stays as a safety net for writers that do not take
//! that lock (the sqlite3 shell, a checkpoint in progress), with short sleeps instead of the
//! default back-off.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode as SqliteCode, OpenFlags};

use crate::error::{Error, Result};
/// How many commits (by all processes) between the passive checkpoints this library runs.
pub(crate) const CHECKPOINT_EVERY: u64 = 1000;

/// A WAL this many frames long (16 MiB of 4 KiB pages) starts a checkpoint whatever the commit
/// count (see `Shared::wal_grew`).
pub(crate) const CHECKPOINT_FRAMES: i64 = 4096;

/// Durability of an acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a crash of any process (WAL with `synchronous = NORMAL`): the default.
    #[default]
    ProcessCrash,
    /// Also survives power loss or an OS crash (`synchronous = FULL`: an fsync per commit).
    PowerLoss,
}

pub(crate) fn map_sqlite_error(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(SqliteCode::DatabaseBusy) | Some(SqliteCode::DatabaseLocked) => {
            Error::Busy(e.to_string())
        }
        // Told apart from other storage failures because a retry cannot help and the operator
        // must act; every occurrence is remembered so the daemon's health can say so even
        // when the failing call was a tail read that no request saw. "Not a database" stays a
        // storage error: it is what a path to some other file gets, where salvage means
        // nothing.
        Some(SqliteCode::DatabaseCorrupt) => {
            let message = e.to_string();
            CORRUPTION_SEEN.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = LAST_CORRUPTION.lock() {
                *last = Some(message.clone());
            }
            Error::Corrupt(message)
        }
        _ => Error::Storage(e.to_string()),
    }
}

/// Store calls in this process that met a damaged page (see [`map_sqlite_error`]).
static CORRUPTION_SEEN: AtomicU64 = AtomicU64::new(0);
/// SQLite's message for the latest of them.
static LAST_CORRUPTION: Mutex<Option<String>> = Mutex::new(None);

/// How many store calls of this process met a damaged page, and SQLite's latest message.
pub(crate) fn corruption_seen() -> (u64, Option<String>) {
    let last = LAST_CORRUPTION
        .lock()
        .map(|l| l.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    (CORRUPTION_SEEN.load(Ordering::Relaxed), last)
}

/// Short sleeps for a bounded time: the lock is normally free (see the module docs), so a busy
/// answer means a non-cooperating writer or a checkpoint, both brief.
fn busy_handler(attempt: i32) -> bool {
    // About 2 s in all before giving up with Error::Busy.
    if attempt >= 4000 {
        return false;
    }
    std::thread::sleep(if attempt < 20 {
        Duration::from_micros(50)
    } else {
        Duration::from_micros(500)
    });
    true
}

/// Opens a connection to `path` with this library's settings.
pub(crate) fn open_connection(path: &Path, durability: Durability) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(map_sqlite_error)?;
    conn.busy_handler(Some(busy_handler))
        .map_err(map_sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(256);
    // `rarray(?)` binds a list (channels, types, ids) as one parameter, so each query shape
    // has one SQL text and one cached statement whatever the list's length.
    rusqlite::vtab::array::load_module(&conn).map_err(map_sqlite_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map_sqlite_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "could not switch {} to WAL mode (got {mode:?}); is it on a network file system?",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::ProcessCrash => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    // Checkpoints run outside the writer lock (see EventStore::start_checkpoint), so the
    // automatic one, which would run inside a commit while other processes wait, is off.
    // A WAL that a burst made long is cut back to 128 MiB when it starts over. The writer
    // that starts it over does the cutting (10–45 ms measured for a long WAL) with every other
    // writer waiting, so the limit sits above the 64 MiB at which a checkpoint finishes the
    // WAL under the lock (`WAL_LIMIT_FRAMES`): only an exceptional burst pays for it.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 134217728;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(map_sqlite_error)?;
    Ok(conn)
}

/// Flushes the database file and the WAL of `conn` to disk through SQLite's own file handles.
///
/// A passive checkpoint syncs the database file only when it finishes with nothing left to
/// copy, which never happens while writers keep committing: every page the unlocked passes
/// copied stayed dirty until the locked pass's sync, which then took 16–30 ms with every
/// writer waiting. Syncing first, outside the lock, leaves that sync only the last pages.
/// SQLite's handles are used rather than a file opened here, because closing any other
/// descriptor of the database would drop this process's POSIX locks on it.
pub(crate) fn sync_files(conn: &Connection) -> Result<()> {
    use rusqlite::ffi;
    for op in [
        ffi::SQLITE_FCNTL_FILE_POINTER,
        ffi::SQLITE_FCNTL_JOURNAL_POINTER,
    ] {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: `conn` is open for the duration of the call; both opcodes write one
        // `sqlite3_file*` (owned by the connection, valid while it is open and unused by any
        // other thread, since `Connection` is not `Sync`) into the pointer they are given.
        let rc = unsafe {
            ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), op, (&raw mut file).cast())
        };
        if rc != ffi::SQLITE_OK {
            return Err(Error::Storage(format!("file control {op} failed ({rc})")));
        }
        // A WAL not opened yet by this connection has no methods: nothing to sync.
        // SAFETY: a non-null `file` points to the connection's live `sqlite3_file`.
        let sync = unsafe { file.as_ref() }
            .and_then(|f| unsafe { f.pMethods.as_ref() })
            .and_then(|m| m.xSync);
        if let Some(sync) = sync {
            // SAFETY: as above; xSync is the file's own method, called on its own file.
            let rc = unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) };
            if rc != ffi::SQLITE_OK {
                return Err(Error::Storage(format!(
                    "fsync before checkpoint failed ({rc})"
                )));
            }
        }
    }
    Ok(())
}
