//! A directory used as a bucket: each object a file under it, keys as relative paths. For tests,
//! and for tiering onto a mounted network or distributed file system.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use super::{Bucket, Transfer};
use crate::error::{Error, Result};

/// Objects as files under a root directory. A put writes a temporary file, syncs it and renames
/// it into place (then syncs the directory), so an object is whole or absent.
#[derive(Debug, Clone)]
pub struct DirBucket {
    root: PathBuf,
}

impl DirBucket {
    /// The bucket rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<DirBucket> {
        let root = root.into();
        crate::io::create_dir_all(&root)?;
        Ok(DirBucket { root })
    }

    /// The file of `key`; keys are relative paths without `.` or `..` parts.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        let plain = key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(Error::invalid(
                "object key",
                format!("{key:?} is not a relative path of plain names"),
            ));
        }
        Ok(self.root.join(relative))
    }

    /// Opens the object `key` (its file `path`) for reading.
    fn open(&self, key: &str, path: &Path) -> Result<std::fs::File> {
        std::fs::File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::ResourceNotFound {
                    kind: "object",
                    name: self.url(key),
                }
            } else {
                Error::io("download", path, e)
            }
        })
    }

    /// Writes `fill`'s bytes as the object at `path`, whole or not at all.
    fn write_object(
        path: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::io::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".put.")
            .tempfile_in(dir)
            .map_err(Error::io_at("create", dir))?;
        fill(tmp.as_file_mut())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(Error::io_at("write", path))?;
        tmp.persist(path)
            .map_err(|e| Error::io("rename into place", path, e.error))?;
        crate::io::sync_dir(dir)
    }
}

/// Most bytes one [`Bucket::get_range`] call reads (larger ranges come back short).
const MAX_RANGE: usize = 256 * 1024 * 1024;

/// Copies `input` to `out`, counting and checksumming the bytes.
fn copy_counting(input: &mut impl Read, out: &mut impl Write) -> std::io::Result<Transfer> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        len += n as u64;
    }
    Ok(Transfer {
        len,
        crc32: crc.finalize(),
    })
}

impl Bucket for DirBucket {
    fn put_file(&self, key: &str, source: &Path) -> Result<Transfer> {
        let path = self.path(key)?;
        let mut file = std::fs::File::open(source).map_err(Error::io_at("open", source))?;
        let mut sent = Transfer { len: 0, crc32: 0 };
        Self::write_object(&path, |out| {
            sent = copy_counting(&mut file, out)?;
            Ok(())
        })?;
        Ok(sent)
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        Self::write_object(&path, |out| out.write_all(bytes))
    }

    fn get_to_file(&self, key: &str, path: &Path) -> Result<Transfer> {
        let source = self.path(key)?;
        let mut input = self.open(key, &source)?;
        let mut out = std::fs::File::create(path).map_err(Error::io_at("create", path))?;
        copy_counting(&mut input, &mut out).map_err(Error::io_at("download", &source))
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        use std::os::unix::fs::FileExt;
        let source = self.path(key)?;
        let input = self.open(key, &source)?;
        let len = range.end.saturating_sub(range.start);
        let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX).min(MAX_RANGE)];
        let mut filled = 0;
        while filled < buf.len() {
            match input.read_at(&mut buf[filled..], range.start + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("download", &source, e)),
            }
        }
        buf.truncate(filled);
        Ok(bytes::Bytes::from(buf))
    }

    fn delete(&self, key: &str) -> Result<()> {
        crate::io::remove_file("delete object", &self.path(key)?).map(drop)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> std::io::Result<()> {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    walk(&entry.path(), out)?;
                } else if !entry.file_name().to_string_lossy().starts_with(".put.") {
                    out.push((entry.path(), entry.metadata()?.len()));
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        walk(&self.root, &mut files).map_err(Error::io_at("list", &self.root))?;
        let mut objects: Vec<(String, u64)> = files
            .into_iter()
            .filter_map(|(path, len)| {
                let key = path.strip_prefix(&self.root).ok()?.to_str()?.to_string();
                key.starts_with(prefix).then_some((key, len))
            })
            .collect();
        objects.sort();
        Ok(objects)
    }

    fn url(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_list_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = DirBucket::new(dir.path().join("bucket")).unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, b"segment bytes").unwrap();
        let sent = bucket.put_file("a/b/00.seg", &source).unwrap();
        assert_eq!(sent.len, 13);
        assert_eq!(sent.crc32, crc32fast::hash(b"segment bytes"));
        bucket.put_bytes("a/c.json", b"{}").unwrap();
        bucket.put_bytes("z", b"1").unwrap();
        assert_eq!(
            bucket.list("a/").unwrap(),
            vec![("a/b/00.seg".to_string(), 13), ("a/c.json".to_string(), 2)]
        );
        let copy = dir.path().join("copy");
        assert_eq!(bucket.get_to_file("a/b/00.seg", &copy).unwrap(), sent);
        assert_eq!(std::fs::read(&copy).unwrap(), b"segment bytes");
        assert_eq!(bucket.get_bytes("a/c.json").unwrap().unwrap(), b"{}");
        assert_eq!(bucket.get_bytes("a/none").unwrap(), None);
        assert!(matches!(
            bucket.get_to_file("a/none", &copy),
            Err(Error::ResourceNotFound { .. })
        ));
        bucket.delete("a/c.json").unwrap();
        bucket.delete("a/c.json").unwrap();
        assert_eq!(bucket.list("a/").unwrap().len(), 1);
    }

    #[test]
    fn keys_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = DirBucket::new(dir.path()).unwrap();
        for key in ["", "../x", "a/../../x", "/etc/passwd", "a/./b"] {
            assert!(bucket.put_bytes(key, b"x").is_err(), "{key}");
        }
    }
}
