//! The write side's file operations, in one place so tests can make them fail.
//!
//! Every write, allocation, truncation, sync, rename and directory sync the store makes goes
//! through these functions (segments directly; small files through `src/io.rs`). Built normally
//! they are the plain system calls. With the `failpoints` feature (for tests and fuzzing only) a
//! fault can be armed for a directory: the n-th operation on a file under it from then on, from
//! any thread (the Firehose worker, the retention thread, a group-commit sync leader), fails,
//! or (a write) writes only part of its bytes and then fails, as a full disk or a dying device
//! would. The feature also remembers each file's contents at its last successful sync, so a test
//! can cut the power: put every file back to what was synced, plus any subset of what was
//! written since.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `pwrite` of all of `bytes` at `pos` into `file`, which is at `path`.
pub(crate) fn write_all_at(file: &File, path: &Path, bytes: &[u8], pos: u64) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    if let Some(torn) = armed::before_write(path, bytes.len()) {
        file.write_all_at(&bytes[..torn], pos)?;
        return Err(armed::injected());
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
    file.write_all_at(bytes, pos)
}

/// `ftruncate`.
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    before_other(path)?;
    file.set_len(len)
}

/// `fallocate` of `len` bytes at `start`.
pub(crate) fn allocate(file: &File, path: &Path, start: u64, len: u64) -> io::Result<()> {
    before_other(path)?;
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), start, len).map_err(Into::into)
}

/// `fdatasync` of the file at `path`.
pub(crate) fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    before_other(path)?;
    file.sync_data()?;
    #[cfg(feature = "failpoints")]
    armed::synced(path);
    Ok(())
}

/// `rename` of a file or a directory: `from` replaces `to`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    before_other(to)?;
    std::fs::rename(from, to)?;
    #[cfg(feature = "failpoints")]
    armed::renamed(from, to);
    Ok(())
}

/// `mkdir -p`.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    before_other(dir)?;
    std::fs::create_dir_all(dir)
}

/// `unlink` of the file at `path`.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    before_other(path)?;
    std::fs::remove_file(path)?;
    #[cfg(feature = "failpoints")]
    armed::removed(path);
    Ok(())
}

/// Removes `dir` and everything under it one entry at a time, so that a fault (like a crash)
/// can stop it halfway.
pub(crate) fn remove_dir_all(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_dir_all(&path)?;
        } else {
            remove_file(&path)?;
        }
    }
    before_other(dir)?;
    std::fs::remove_dir(dir)
}

/// `fsync` of the directory `dir`, making its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    before_other(dir)?;
    File::open(dir)?.sync_all()
}

/// The file at `path` was just replaced atomically and durably (written to a temporary file,
/// fsynced, renamed over it, the directory fsynced): a power cut keeps what it holds now.
pub(crate) fn replaced_durably(path: &Path) {
    #[cfg(feature = "failpoints")]
    armed::synced(path);
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
}

/// Fails if an armed fault hits this (non-write) operation on `path`.
fn before_other(path: &Path) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    armed::before_other(path)?;
    #[cfg(not(feature = "failpoints"))]
    let _ = path;
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, disarm, fired, mark_durable, power_cut, reset};

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::BTreeMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard};

    /// Size of the pieces in which unsynced writes survive a power cut, or not.
    const PAGE: usize = 4096;

    /// A fault armed for the files under `scope`.
    struct Fault {
        scope: PathBuf,
        /// Operations still to pass before the fault; `None`: fired or disarmed.
        countdown: Option<u32>,
        /// For a write hit by the fault: how many of its bytes reach the file first.
        tear: usize,
        fired: bool,
    }

    struct Plan {
        /// At most one per scope; scopes of concurrent tests are their own temporary directories.
        faults: Vec<Fault>,
        /// Each file's contents at its last successful sync.
        synced: BTreeMap<PathBuf, Vec<u8>>,
    }

    static PLAN: Mutex<Plan> = Mutex::new(Plan {
        faults: Vec::new(),
        synced: BTreeMap::new(),
    });

    fn plan() -> MutexGuard<'static, Plan> {
        // A test that panicked while holding it left nothing half-changed that matters here.
        PLAN.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn injected() -> io::Error {
        io::Error::other("injected fault")
    }

    /// The tear of the armed fault this operation on `path` is the one to hit, if any.
    fn hit(path: &Path) -> Option<usize> {
        let mut plan = plan();
        let fault = plan
            .faults
            .iter_mut()
            .find(|f| f.countdown.is_some() && path.starts_with(&f.scope))?;
        match fault.countdown {
            Some(0) => {
                fault.countdown = None;
                fault.fired = true;
                Some(fault.tear)
            }
            Some(n) => {
                fault.countdown = Some(n - 1);
                None
            }
            None => None,
        }
    }

    /// `Some(n)`: write only `n` bytes of `len`, then fail.
    pub(super) fn before_write(path: &Path, len: usize) -> Option<usize> {
        hit(path).map(|tear| tear.min(len))
    }

    pub(super) fn before_other(path: &Path) -> io::Result<()> {
        match hit(path) {
            Some(_) => Err(injected()),
            None => Ok(()),
        }
    }

    /// The file or directory at `from` is now at `to`. The model keeps directory changes
    /// (renames, removals) in order across a power cut, as ext4's journal does; what was synced
    /// under the old names is what the new names fall back to, and whatever `to` was is gone.
    pub(super) fn renamed(from: &Path, to: &Path) {
        let mut plan = plan();
        plan.synced.retain(|path, _| !path.starts_with(to));
        let moved: Vec<PathBuf> = plan
            .synced
            .keys()
            .filter(|path| path.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            if let (Some(bytes), Ok(rest)) = (plan.synced.remove(&old), old.strip_prefix(from)) {
                plan.synced.insert(to.join(rest), bytes);
            }
        }
    }

    /// The file at `path` was removed.
    pub(super) fn removed(path: &Path) {
        plan().synced.remove(path);
    }

    pub(super) fn synced(path: &Path) {
        if let Ok(bytes) = std::fs::read(path) {
            plan().synced.insert(path.to_path_buf(), bytes);
        }
    }

    /// Makes the `after`-th file operation under `scope` from now on (0: the next), from any
    /// thread, fail; a write it hits first writes `tear` of its bytes. Replaces a fault armed
    /// for the same scope.
    pub fn arm(scope: &Path, after: u32, tear: usize) {
        let mut plan = plan();
        plan.faults.retain(|f| f.scope != scope);
        plan.faults.push(Fault {
            scope: scope.to_path_buf(),
            countdown: Some(after),
            tear,
            fired: false,
        });
    }

    /// Removes the fault armed for `scope` if it has not fired.
    pub fn disarm(scope: &Path) {
        for fault in plan().faults.iter_mut().filter(|f| f.scope == scope) {
            fault.countdown = None;
        }
    }

    /// Forgets everything about `scope`: its fault and the synced contents of files under it.
    pub fn reset(scope: &Path) {
        let mut plan = plan();
        plan.faults.retain(|f| f.scope != scope);
        plan.synced.retain(|path, _| !path.starts_with(scope));
    }

    /// Whether the fault last armed for `scope` has fired.
    pub fn fired(scope: &Path) -> bool {
        plan().faults.iter().any(|f| f.scope == scope && f.fired)
    }

    /// The files under `dir`, at any depth, in name order (so a fuzz input means the same cut on
    /// every filesystem).
    fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            paths.push(entry?.path());
        }
        paths.sort();
        for path in paths {
            if path.is_dir() {
                files_under(&path, out)?;
            } else if path.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }

    /// Takes every file under `dir` (at any depth) as it is now to be on disk (synced),
    /// forgetting earlier syncs of files under it.
    pub fn mark_durable(dir: &Path) -> io::Result<()> {
        let mut paths = Vec::new();
        files_under(dir, &mut paths)?;
        let mut files = Vec::new();
        for path in paths {
            let bytes = std::fs::read(&path)?;
            files.push((path, bytes));
        }
        let mut plan = plan();
        plan.synced.retain(|path, _| !path.starts_with(dir));
        plan.synced.extend(files);
        Ok(())
    }

    /// Simulates a power cut of the files under `dir`, at any depth (no writer may have them
    /// open). Every file goes back to its contents at its last sync (or [`mark_durable`]); each
    /// 4 KiB page written since, and a changed length, survives if `coin` says so; a file never
    /// synced since it was created keeps only such pages, or (by `coin`) is gone. Directories and
    /// their entries stay as they are (see `renamed`). Then the result counts as durable.
    pub fn power_cut(dir: &Path, coin: &mut dyn FnMut() -> bool) -> io::Result<()> {
        let mut paths = Vec::new();
        files_under(dir, &mut paths)?;
        for path in paths {
            let now = std::fs::read(&path)?;
            let synced = plan().synced.get(&path).cloned();
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
        arm(dir.path(), 1, 3);
        write_all_at(&file, &path, b"abcdef", 0).unwrap();
        assert!(!fired(dir.path()));
        // Operations elsewhere do not count.
        let other = tempfile::tempdir().unwrap();
        let elsewhere = other.path().join("g");
        write_all_at(&File::create(&elsewhere).unwrap(), &elsewhere, b"x", 0).unwrap();
        // Operations from other threads do.
        let (file, at) = (&file, path.as_path());
        let torn = std::thread::scope(|s| {
            s.spawn(|| write_all_at(file, at, b"uvwxyz", 0))
                .join()
                .unwrap()
        });
        assert!(torn.is_err());
        assert!(fired(dir.path()));
        assert_eq!(std::fs::read(&path).unwrap(), b"uvwdef");
        // Disarmed once fired.
        set_len(file, &path, 2).unwrap();
        reset(dir.path());
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced_and_the_pages_the_coin_allows() {
        let dir = tempfile::tempdir().unwrap();
        let synced = dir.path().join("synced");
        let mut file = File::create(&synced).unwrap();
        file.write_all(&[1u8; 8192]).unwrap();
        sync_data(&file, &synced).unwrap();
        write_all_at(&file, &synced, &[2u8; 4096], 4096).unwrap();
        write_all_at(&file, &synced, &[3u8; 100], 8192).unwrap();
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"never synced").unwrap();

        // Nothing unsynced survives: the synced contents come back, the fresh file goes.
        power_cut(dir.path(), &mut || false).unwrap();
        assert_eq!(std::fs::read(&synced).unwrap(), vec![1u8; 8192]);
        assert!(!fresh.exists());

        // Everything survives when the coin always says so.
        let file = File::options().write(true).open(&synced).unwrap();
        write_all_at(&file, &synced, &[4u8; 10], 0).unwrap();
        power_cut(dir.path(), &mut || true).unwrap();
        assert_eq!(&std::fs::read(&synced).unwrap()[..10], &[4u8; 10]);
        reset(dir.path());
    }

    #[test]
    fn a_power_cut_reaches_every_depth_and_follows_renamed_directories() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        create_dir_all(&staging.join("inner")).unwrap();
        let path = staging.join("inner/f");
        let file = File::create(&path).unwrap();
        write_all_at(&file, &path, b"synced", 0).unwrap();
        sync_data(&file, &path).unwrap();
        write_all_at(&file, &path, b"SYNCED but not this", 0).unwrap();
        drop(file);
        let fresh = staging.join("fresh");
        std::fs::write(&fresh, b"never synced").unwrap();
        let final_dir = dir.path().join("final");
        rename(&staging, &final_dir).unwrap();

        power_cut(dir.path(), &mut || false).unwrap();
        assert_eq!(std::fs::read(final_dir.join("inner/f")).unwrap(), b"synced");
        assert!(!final_dir.join("fresh").exists());

        // A removal stopped by a fault leaves the rest; the next one finishes it.
        std::fs::write(final_dir.join("g"), b"x").unwrap();
        arm(dir.path(), 1, 0);
        assert!(remove_dir_all(&final_dir).is_err());
        assert!(final_dir.exists());
        remove_dir_all(&final_dir).unwrap();
        assert!(!final_dir.exists());
        reset(dir.path());
    }
}
