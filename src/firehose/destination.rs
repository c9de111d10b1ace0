//! Where delivered objects go: a small trait, and a local directory.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{sync_dir, write_atomically_uncached};

/// Stores delivered objects. `put` returns only once the object is durable: the delivery
/// checkpoint advances right after. Putting a key again replaces the object (a batch delivered
/// again after a crash has the same key and the same bytes).
pub trait Destination: Send + Sync {
    /// Stores `bytes` under `key` durably.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// A short description for `describe` (`file:///data/out`, `s3://bucket/...`).
    fn describe(&self) -> String;

    /// Removes what a `put` of `key` interrupted by a crash may have left beside it (a
    /// temporary file); the object itself, if any, stays. Called for a batch found pending.
    fn remove_leftovers(&self, _key: &str) -> Result<()> {
        Ok(())
    }
}

/// Objects as files under a root directory; `/` in keys makes subdirectories. Each object is
/// written to a temporary file beside its target, fsynced, renamed into place, and the directory
/// fsynced (and the directories created for it); a failed write leaves no temporary file.
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
        // Its parent exists now, so this makes `dir` alone (through the fault-injection seam).
        crate::io::create_dir_all(dir)?;
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
        write_atomically_uncached(&dir, &name, bytes)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn remove_leftovers(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        // What `write_atomically_uncached` names its temporary files.
        let prefix = format!(".{}.", name.to_string_lossy());
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(Error::io_at("list", dir))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(&prefix) && file.ends_with(".tmp") {
                let leftover = entry.path();
                crate::io::remove_file("remove", &leftover)?;
            }
        }
        Ok(())
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

    #[test]
    fn leftovers_of_an_interrupted_put_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDirectory::new(dir.path());
        d.put("p/a.gz", b"done").unwrap();
        std::fs::write(dir.path().join("p/.a.gz.x1Y2z3.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("p/.b.gz.x1Y2z3.tmp"), b"other").unwrap();
        d.remove_leftovers("p/a.gz").unwrap();
        d.remove_leftovers("q/none.gz").unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("p"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![".b.gz.x1Y2z3.tmp", "a.gz"]);
    }
}

/// Where objects go in an S3 bucket (or an S3-compatible server).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The region (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// An endpoint other than AWS's (`http://127.0.0.1:9000` for a local server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Credentials; when absent, the usual `AWS_*` environment variables are used. Stored in
    /// the delivery stream's `delivery.json` when given, so prefer the environment.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// See `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Objects in an S3 bucket, written through [`crate::log::remote::S3Bucket`] (feature `s3`).
/// A PUT that S3 answers with success is durable, so `put` returns then.
#[cfg(feature = "s3")]
pub struct S3 {
    bucket: crate::log::remote::S3Bucket,
    description: String,
}

#[cfg(feature = "s3")]
impl S3 {
    /// A destination writing into the bucket `config` names.
    pub fn new(config: &S3Config) -> Result<S3> {
        let bucket = crate::log::remote::S3Bucket::new(&crate::log::remote::S3BucketConfig {
            bucket: config.bucket.clone(),
            region: Some(config.region.clone()),
            endpoint: config.endpoint.clone(),
            access_key_id: config.access_key_id.clone(),
            secret_access_key: config.secret_access_key.clone(),
        })
        .map_err(|e| Error::invalid("S3DestinationConfiguration", e.to_string()))?;
        Ok(S3 {
            bucket,
            description: format!(
                "s3://{}{}",
                config.bucket,
                config
                    .endpoint
                    .as_ref()
                    .map_or_else(String::new, |e| format!(" at {e}"))
            ),
        })
    }
}

#[cfg(feature = "s3")]
impl Destination for S3 {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        use crate::log::remote::Bucket;
        self.bucket.put_bytes(key, bytes)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
