//! A file beside the database, mapped shared into this process.
//!
//! The file is created zero-filled (so all-zero must be a valid state of every layout kept in
//! one), only ever grown, and has its disk blocks reserved before it is mapped: a store to a
//! page the file system cannot back would raise SIGBUS instead of returning an error.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::MmapMut;

use crate::error::{Error, Result};

/// `<db><suffix>`: the path of a file kept beside the database.
pub(crate) fn sidecar(db_path: &Path, suffix: &str) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A fixed-size file mapped shared into this process.
#[derive(Debug)]
pub(crate) struct SharedRegion {
    map: MmapMut,
    path: PathBuf,
}

impl SharedRegion {
    /// Maps `path`, creating it (zero-filled) or growing it to `len` bytes as needed, with
    /// disk blocks reserved for all of it before it is mapped.
    ///
    /// Zero is therefore every word's initial value; layouts are designed so that all-zero is a
    /// valid state.
    ///
    /// A full disk is an error here ([`Error::Storage`]), never later: a store to a page of a
    /// sparse file that the file system cannot back raises SIGBUS, which kills the process
    /// (a daemon, or a PHP worker on its first limiter check). A file created sparse by an
    /// older version gets its blocks reserved here too.
    pub(crate) fn open(path: impl AsRef<Path>, len: usize) -> Result<SharedRegion> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        reserve(&file, path, len as u64)?;
        // SAFETY: the file is only ever accessed through atomics by cooperating processes, and
        // it is never truncated below `len` (we only grow it), so the mapping stays valid; its
        // blocks are allocated, so no store to it can fault for want of space.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| Error::io(path, e))?;
        Ok(SharedRegion {
            map,
            path: path.to_owned(),
        })
    }

    /// The file behind the mapping.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The 32-bit atomic at `offset` (4-byte aligned, inside the mapping).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.map.len(),
            "bad offset"
        );
        // SAFETY: in bounds and aligned (the mapping is page-aligned); the memory is shared and
        // only accessed atomically; the reference lives no longer than `self`, which owns the map.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU32) }
    }

    /// The 64-bit atomic at `offset` (8-byte aligned, inside the mapping).
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.map.len(),
            "bad offset"
        );
        // SAFETY: as in `atomic_u32`, with 8-byte alignment.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// The whole mapping as 64-bit atomics (`len() / 8` of them), for tables that index words
    /// directly instead of computing byte offsets.
    pub(crate) fn atomic_u64_slice(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, so 8-byte aligned; `len / 8` words lie inside it;
        // the memory is shared and only accessed atomically; the slice borrows `self`, which
        // owns the map.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.map.len() / 8)
        }
    }
}

/// Grows `file` to at least `len` bytes with every block of its first `len` allocated.
///
/// `fallocate` (mode 0) extends and allocates without touching data already there, so racing
/// openers, and processes already using the file, are safe; on a full disk it fails with
/// ENOSPC instead of leaving a hole.
#[cfg(target_os = "linux")]
fn reserve(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: a valid descriptor, opened for writing; the range starts at 0.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // A file system that cannot allocate ahead: extend it sparse, as before (the
            // SIGBUS risk on a full disk stays with such file systems).
            Some(libc::EOPNOTSUPP) => return extend(file, path, len),
            _ => return Err(Error::io(path, err)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    extend(file, path, len)
}

/// Extends `file` to `len` bytes (sparse, zero-filled) if it is shorter.
fn extend(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    let cur = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if cur < len {
        // Racing processes all extend to the same length; extension zero-fills.
        file.set_len(len).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_region_is_backed_by_disk_blocks_before_it_is_mapped() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        // A sparse file as an older version left it: reserved when opened again.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(64 * 1024)
            .unwrap();
        let len = 1 << 20;
        let r = SharedRegion::open(&path, len).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), len as u64);
        assert!(
            meta.blocks() * 512 >= len as u64,
            "{} bytes allocated of {len}",
            meta.blocks() * 512
        );
        drop(r);
    }

    #[test]
    fn two_mappings_of_one_file_share_their_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w");
        let a = SharedRegion::open(&path, 4096).unwrap();
        let b = SharedRegion::open(&path, 4096).unwrap();
        a.atomic_u32(64)
            .store(7, std::sync::atomic::Ordering::Release);
        a.atomic_u64_slice()[9].store(11, std::sync::atomic::Ordering::Release);
        assert_eq!(
            b.atomic_u32(64).load(std::sync::atomic::Ordering::Acquire),
            7
        );
        assert_eq!(
            b.atomic_u64(72).load(std::sync::atomic::Ordering::Acquire),
            11
        );
        assert_eq!(b.path(), path);
    }
}
