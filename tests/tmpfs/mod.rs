//! A small tmpfs mounted for a test, to fill a disk without filling the machine's.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes`. `None` (after saying why) only where mounting is refused for
    /// want of privilege outside CI; in CI (which runs as root) any failure fails the test.
    pub fn mount(bytes: usize) -> Option<Tmpfs> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={bytes}")).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc == 0 {
            return Some(Tmpfs { dir });
        }
        let err = std::io::Error::last_os_error();
        let refused = err.raw_os_error() == Some(libc::EPERM);
        if std::env::var_os("CI").is_some() || !refused {
            panic!("cannot mount a tmpfs for the full-disk test: {err}");
        }
        eprintln!("skipped: mounting a tmpfs needs root ({err})");
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            self.dir.path().as_os_str(),
        ))
        .unwrap();
        // SAFETY: a NUL-terminated path. Lazy, so a file still open cannot keep it mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Fills the file system under `dir` to its last page; returns the filler to delete.
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [64 * 1024, 4096, 512, 1] {
        let buf = vec![0xa5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    // A write that fails part-way may leave the file at a length it cannot back: no matter,
    // the point is that no free page is left.
    path
}
