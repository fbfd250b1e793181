//! Connection setup, error mapping and the cross-process writer lock.
//!
//! SQLite lets one writer in at a time and makes the others poll: its busy handler sleeps with
//! growing back-off (1, 2, 5, … 100 ms), so under contention from several processes an append
//! can stall for a second while the lock sat free most of that time. Writers here first take an
//! exclusive `flock` on a lock file beside the database. The kernel queues `flock` waiters and
//! wakes them when the holder releases (or dies: the lock goes with the file descriptor), so the
//! SQLite write lock is always free by the time a writer asks for it and nobody sleeps blind.
//! The busy handler stays as a safety net for writers that do not take the lock (the sqlite3
//! shell, a checkpoint in progress), with short sleeps instead of the default back-off.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode as SqliteCode, OpenFlags};

use crate::error::{Error, Result};

/// How many commits (by all processes) between the passive checkpoints this library runs.
pub(crate) const CHECKPOINT_EVERY: u64 = 1000;

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
        _ => Error::Storage(e.to_string()),
    }
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
    // Checkpoints run outside the writer lock (see EventStore::maybe_checkpoint), so the
    // automatic one, which would run inside a commit while other processes wait, is off.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(map_sqlite_error)?;
    Ok(conn)
}

/// The exclusive writer lock shared by every process that opens the database.
#[derive(Debug)]
pub(crate) struct WriterLock {
    file: File,
    path: PathBuf,
}

impl WriterLock {
    pub(crate) fn open(db_path: &Path) -> Result<WriterLock> {
        let mut p = db_path.as_os_str().to_owned();
        p.push("-lmsrt-writer");
        let path = PathBuf::from(p);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(WriterLock { file, path })
    }

    /// Blocks until this process holds the lock. Released when the guard drops.
    pub(crate) fn lock(&self) -> Result<WriterLockGuard<'_>> {
        flock(&self.file, &self.path, true)?;
        Ok(WriterLockGuard(self))
    }
}

pub(crate) struct WriterLockGuard<'a>(&'a WriterLock);

impl Drop for WriterLockGuard<'_> {
    fn drop(&mut self) {
        let _ = flock(&self.0.file, &self.0.path, false);
    }
}

#[cfg(unix)]
fn flock(file: &File, path: &Path, exclusive: bool) -> Result<()> {
    use std::os::fd::AsRawFd;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_UN
    };
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(path, err));
        }
    }
}

#[cfg(not(unix))]
fn flock(_file: &File, _path: &Path, _exclusive: bool) -> Result<()> {
    // Without flock, SQLite's own locking (with the busy handler above) still serializes writers.
    Ok(())
}
