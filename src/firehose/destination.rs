//! Where delivered objects go: a small trait, and a local directory.

use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::segment::sync_dir;

/// Stores delivered objects. `put` returns only once the object is durable: the delivery
/// checkpoint advances right after. Putting a key again replaces the object (a batch delivered
/// again after a crash has the same key and the same bytes).
pub trait Destination: Send + Sync {
    /// Stores `bytes` under `key` durably.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// A short description for `describe` (`file:///data/out`, `s3://bucket/...`).
    fn describe(&self) -> String;
}

/// Objects as files under a root directory; `/` in keys makes subdirectories. Each object is
/// written to a temporary file beside its target, fsynced, renamed into place, and the directory
/// fsynced (and the directories created for it).
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    root: PathBuf,
}

impl LocalDirectory {
    /// Objects go under `root` (created if needed).
    pub fn new(root: impl Into<PathBuf>) -> LocalDirectory {
        LocalDirectory { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, refusing keys that would leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        let inside = !key.is_empty()
            && !key.ends_with('/')
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(Error::invalid(
                "key",
                format!("{key:?} is not a relative object key"),
            ));
        }
        Ok(self.root.join(relative))
    }

    /// Creates `dir` and any missing parents under the root, syncing each parent whose entries
    /// changed.
    fn create_dirs(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(Error::io("create directory", dir, e)),
        }
        match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }
}

impl Destination for LocalDirectory {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&dir)?;
        let name = path
            .file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
        let temp = dir.join(format!(".{name}.tmp"));
        let mut file = File::create(&temp).map_err(Error::io_at("create", &temp))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(Error::io_at("write object", &temp))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(Error::io_at("rename object", &path))?;
        sync_dir(&dir)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_land_under_the_root_and_replace_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDirectory::new(dir.path().join("out"));
        d.put("2023/11/14/22/a.gz", b"one").unwrap();
        d.put("2023/11/14/22/a.gz", b"two").unwrap();
        let path = dir.path().join("out/2023/11/14/22/a.gz");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("a.gz")]);
        for bad in ["", "../x", "/etc/passwd", "a/../../x", "dir/"] {
            assert!(d.put(bad, b"x").is_err(), "{bad:?}");
        }
    }
}
