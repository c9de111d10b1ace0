//! The write side's file operations, in one place so tests can make them fail.
//!
//! Every write, allocation, truncation and sync the engine makes to a segment goes through these
//! functions. Built normally they are the plain system calls. With the `failpoints` feature (for
//! tests and fuzzing only) a thread can arm a fault: the n-th operation from then on fails, or
//! (a write) writes only part of its bytes and then fails, as a full disk or a dying device would.
//! The feature also remembers each file's contents at its last successful sync, so a test can cut
//! the power: put every file back to what was synced, plus any subset of what was written since.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `pwrite` of all of `bytes` at `pos`.
pub(crate) fn write_all_at(file: &File, bytes: &[u8], pos: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(torn) = armed::before_write(bytes.len()) {
        file.write_all_at(&bytes[..torn], pos)?;
        return Err(armed::injected());
    }
    file.write_all_at(bytes, pos)
}

/// `ftruncate`.
pub(crate) fn set_len(file: &File, len: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    armed::before_other()?;
    file.set_len(len)
}

/// `fallocate` of `len` bytes at `start`.
pub(crate) fn allocate(file: &File, start: u64, len: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    armed::before_other()?;
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), start, len).map_err(Into::into)
}

/// `fdatasync` of the file at `path`.
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    armed::before_other()?;
    file.sync_data()?;
    #[cfg(feature = "failpoints")]
    armed::synced(path);
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
    Ok(())
}

/// The file at `path` was just replaced atomically and durably (written to a temporary file,
/// fsynced, renamed over it, the directory fsynced): a power cut keeps what it holds now.
pub(crate) fn replaced_durably(path: &Path) {
    #[cfg(feature = "failpoints")]
    armed::synced(path);
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, disarm, fired, mark_durable, power_cut, reset};

#[cfg(feature = "failpoints")]
mod armed {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::io;
    use std::path::{Path, PathBuf};

    /// Size of the pieces in which unsynced writes survive a power cut, or not.
    const PAGE: usize = 4096;

    #[derive(Default)]
    struct Plan {
        /// Operations still to pass before the fault; `None`: no fault armed.
        countdown: Option<u32>,
        /// For a write hit by the fault: how many of its bytes reach the file first.
        tear: usize,
        fired: bool,
        /// Each file's contents at its last successful sync.
        synced: HashMap<PathBuf, Vec<u8>>,
    }

    thread_local! {
        static PLAN: RefCell<Plan> = RefCell::new(Plan::default());
    }

    pub(super) fn injected() -> io::Error {
        io::Error::other("injected fault")
    }

    /// Whether this operation is the one the armed fault hits.
    fn hit() -> bool {
        PLAN.with(|p| {
            let mut p = p.borrow_mut();
            match p.countdown {
                Some(0) => {
                    p.countdown = None;
                    p.fired = true;
                    true
                }
                Some(n) => {
                    p.countdown = Some(n - 1);
                    false
                }
                None => false,
            }
        })
    }

    /// `Some(n)`: write only `n` bytes of `len`, then fail.
    pub(super) fn before_write(len: usize) -> Option<usize> {
        hit().then(|| PLAN.with(|p| p.borrow().tear.min(len)))
    }

    pub(super) fn before_other() -> io::Result<()> {
        if hit() {
            Err(injected())
        } else {
            Ok(())
        }
    }

    pub(super) fn synced(path: &Path) {
        if let Ok(bytes) = std::fs::read(path) {
            PLAN.with(|p| p.borrow_mut().synced.insert(path.to_path_buf(), bytes));
        }
    }

    /// Makes the `after`-th write-side file operation of this thread from now on (0: the next)
    /// fail; a write it hits first writes `tear` of its bytes.
    pub fn arm(after: u32, tear: usize) {
        PLAN.with(|p| {
            let mut p = p.borrow_mut();
            p.countdown = Some(after);
            p.tear = tear;
            p.fired = false;
        });
    }

    /// Removes an armed fault that has not fired.
    pub fn disarm() {
        PLAN.with(|p| p.borrow_mut().countdown = None);
    }

    /// Forgets everything: the armed fault and every file's synced contents.
    pub fn reset() {
        PLAN.with(|p| *p.borrow_mut() = Plan::default());
    }

    /// Whether the last armed fault has fired.
    pub fn fired() -> bool {
        PLAN.with(|p| p.borrow().fired)
    }

    /// Takes every file in `dir` as it is now to be on disk (synced), forgetting earlier syncs
    /// of files in it.
    pub fn mark_durable(dir: &Path) -> io::Result<()> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() {
                files.push((path.clone(), std::fs::read(&path)?));
            }
        }
        PLAN.with(|p| {
            let mut p = p.borrow_mut();
            p.synced.retain(|path, _| !path.starts_with(dir));
            p.synced.extend(files);
        });
        Ok(())
    }

    /// Simulates a power cut in `dir` (no writer may have it open). Every file goes back to its
    /// contents at its last sync on this thread (or [`mark_durable`]); each 4 KiB page written
    /// since, and a changed length, survives if `coin` says so; a file never synced since it was
    /// created keeps only such pages, or (by `coin`) is gone. Then the result counts as durable.
    pub fn power_cut(dir: &Path, coin: &mut dyn FnMut() -> bool) -> io::Result<()> {
        // In name order, so a fuzz input means the same cut on every filesystem.
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            paths.push(entry?.path());
        }
        paths.sort();
        for path in paths {
            if !path.is_file() {
                continue;
            }
            let now = std::fs::read(&path)?;
            let synced = PLAN.with(|p| p.borrow().synced.get(&path).cloned());
            let base = match synced {
                Some(bytes) => bytes,
                None if !coin() => {
                    std::fs::remove_file(&path)?;
                    continue;
                }
                None => Vec::new(),
            };
            let mut after = base.clone();
            after.resize(now.len().max(base.len()), 0);
            let mut len = base.len();
            for (page, chunk) in now.chunks(PAGE).enumerate() {
                let at = page * PAGE;
                let old = base.get(at..(at + chunk.len()).min(base.len()));
                if old != Some(chunk) && coin() {
                    after[at..at + chunk.len()].copy_from_slice(chunk);
                    len = len.max(at + chunk.len());
                }
            }
            if now.len() != base.len() && coin() {
                len = now.len();
            }
            after.truncate(len);
            std::fs::write(&path, &after)?;
        }
        mark_durable(dir)
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_armed_fault_fails_the_nth_operation_and_tears_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        arm(1, 3);
        write_all_at(&file, b"abcdef", 0).unwrap();
        assert!(!fired());
        assert!(write_all_at(&file, b"uvwxyz", 0).is_err());
        assert!(fired());
        assert_eq!(std::fs::read(&path).unwrap(), b"uvwdef");
        // Disarmed once fired.
        set_len(&file, 2).unwrap();
        reset();
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_the_pages_the_coin_allows() {
        let dir = tempfile::tempdir().unwrap();
        reset();
        let synced = dir.path().join("synced");
        let mut file = File::create(&synced).unwrap();
        file.write_all(&[1u8; 8192]).unwrap();
        sync_data(&file, &synced).unwrap();
        write_all_at(&file, &[2u8; 4096], 4096).unwrap();
        write_all_at(&file, &[3u8; 100], 8192).unwrap();
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"never synced").unwrap();

        // Nothing unsynced survives: the synced contents come back, the fresh file goes.
        power_cut(dir.path(), &mut || false).unwrap();
        assert_eq!(std::fs::read(&synced).unwrap(), vec![1u8; 8192]);
        assert!(!fresh.exists());

        // Everything survives when the coin always says so.
        let file = File::options().write(true).open(&synced).unwrap();
        write_all_at(&file, &[4u8; 10], 0).unwrap();
        power_cut(dir.path(), &mut || true).unwrap();
        assert_eq!(&std::fs::read(&synced).unwrap()[..10], &[4u8; 10]);
        reset();
    }
}
