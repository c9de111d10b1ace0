//! Names users choose (streams, delivery streams, consumer groups, consumers): the rule they
//! follow ([`check_stream_name`], `check_resource_name`) and the file names that hold them: a
//! user's name is data, never a path or a name the store uses itself.
//!
//! A valid name is 1 to N of `[a-zA-Z0-9_.-]`, so `.`, `..` and `.creating-x` are all valid. On
//! disk a name is written as itself, except that a leading `.` is written `%2E` (`%` is not a
//! name character, so the escape cannot collide with a name). No user entry on disk then starts
//! with a `.`, and everything the store keeps beside user entries (staging directories, trash,
//! temporary files) does: the two namespaces cannot meet.
//!
//! Stores written before this rule kept a name starting with `.` unescaped, beside staging
//! directories of the same shape. `list_dir` tells them apart by the name the entry's own
//! file records (a stream's manifest, a delivery stream's `delivery.json`): see `Listed`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The escape of a leading `.` in an on-disk name.
const ESCAPED_DOT: &str = "%2E";
/// Prefix of a directory being created (renamed into place once complete).
pub(crate) const CREATING_PREFIX: &str = ".creating-";
/// Prefix of a directory being deleted (renamed out of the way first).
pub(crate) const DELETING_PREFIX: &str = ".deleting-";

/// The on-disk file or directory name of the user name `name`.
pub fn disk_name(name: &str) -> String {
    match name.strip_prefix('.') {
        Some(rest) => format!("{ESCAPED_DOT}{rest}"),
        None => name.to_string(),
    }
}

/// The user name an on-disk name holds, or `None` for an internal entry (anything starting
/// with `.`).
pub fn name_of_disk_name(disk: &str) -> Option<String> {
    if disk.starts_with('.') {
        return None;
    }
    Some(match disk.strip_prefix(ESCAPED_DOT) {
        Some(rest) => format!(".{rest}"),
        None => disk.to_string(),
    })
}

/// Where `name` is being created inside `dir`.
pub(crate) fn staging_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{CREATING_PREFIX}{}", disk_name(name)))
}

/// Where `name` goes while its files are removed (`stamp` keeps two deletions apart).
pub(crate) fn trash_path(dir: &Path, name: &str, stamp: i64) -> PathBuf {
    dir.join(format!("{DELETING_PREFIX}{}-{stamp}", disk_name(name)))
}

/// Reads the `name` field of the JSON file `file` in a directory: what an entry of
/// [`list_dir`] records as its own name (`None` if the file is missing or has no name).
pub(crate) fn recorded_name(file: &'static str) -> impl Fn(&Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    move |dir: &Path| {
        let bytes = std::fs::read(dir.join(file)).ok()?;
        serde_json::from_slice::<Named>(&bytes).ok().map(|n| n.name)
    }
}

/// An entry of a directory of user-named directories, as [`list_dir`] finds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    /// A user entry: its name and path.
    User(String, PathBuf),
    /// A staging or trash directory left by a crash: to be removed.
    Leftover(PathBuf),
}

/// Lists `dir`, a directory of user-named directories (`streams/`, `firehose/`), moving any
/// entry of an older store into its escaped name first. `recorded_name` reads the name an
/// entry's own file records (`None` if it has none): an entry starting with `.` whose recorded
/// name is its own directory name was a user's (written before names were escaped) and is
/// renamed to its escaped name; a `.creating-`/`.deleting-` entry otherwise is a leftover; any
/// other entry starting with `.`, a file, or a name that `check` refuses is not listed.
pub(crate) fn list_dir(
    dir: &Path,
    check: impl Fn(&str) -> Result<()>,
    recorded_name: impl Fn(&Path) -> Option<String>,
) -> Result<Vec<Listed>> {
    let mut listed = Vec::new();
    let mut renamed = false;
    for entry in std::fs::read_dir(dir).map_err(Error::io_at("list", dir))? {
        let entry = entry.map_err(Error::io_at("list", dir))?;
        let mut path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let disk = entry.file_name().to_string_lossy().into_owned();
        let name = match name_of_disk_name(&disk) {
            Some(name) => name,
            None if recorded_name(&path).as_deref() == Some(disk.as_str()) => {
                let escaped = dir.join(disk_name(&disk));
                crate::io::rename("rename", &path, &escaped)?;
                renamed = true;
                path = escaped;
                disk
            }
            None if disk.starts_with(CREATING_PREFIX) || disk.starts_with(DELETING_PREFIX) => {
                listed.push(Listed::Leftover(path));
                continue;
            }
            None => continue,
        };
        if check(&name).is_ok() {
            listed.push(Listed::User(name, path));
        }
    }
    if renamed {
        crate::io::sync_dir(dir)?;
    }
    Ok(listed)
}

/// Checks a stream name against Kinesis's rule: 1 to 128 of `[a-zA-Z0-9_.-]`.
pub fn check_stream_name(name: &str) -> Result<()> {
    check_resource_name("StreamName", name, 128)
}

/// Checks an AWS-style resource name: 1 to `max_len` of `[a-zA-Z0-9_.-]`; `field` names the
/// argument in the error.
pub(crate) fn check_resource_name(field: &'static str, name: &str, max_len: usize) -> Result<()> {
    if is_resource_name(name, max_len) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{name:?} must be 1 to {max_len} characters of [a-zA-Z0-9_.-]"),
        ))
    }
}

/// Whether `name` is 1 to `max_len` of `[a-zA-Z0-9_.-]`, the rule of AWS resource names (and
/// of bucket names here).
pub(crate) fn is_resource_name(name: &str, max_len: usize) -> bool {
    (1..=max_len).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_valid_name_round_trips_and_never_looks_internal() {
        for name in [
            ".",
            "..",
            "...",
            ".creating-a",
            ".deleting-a-1",
            ".hidden",
            "%2E",
            "a",
            "a.b",
            "-",
            "_",
        ] {
            let disk = disk_name(name);
            assert!(!disk.starts_with('.'), "{name} -> {disk}");
            assert_ne!(disk, ".");
            assert_ne!(disk, "..");
            if name.starts_with('%') {
                continue; // not a valid name ('%' is not a name character)
            }
            assert_eq!(name_of_disk_name(&disk).as_deref(), Some(name), "{disk}");
        }
        assert_eq!(name_of_disk_name(".creating-x"), None);
        assert_eq!(disk_name("plain-name"), "plain-name");
    }

    #[test]
    fn a_staging_path_never_equals_a_user_path() {
        let dir = Path::new("/d");
        for name in ["a", ".creating-a", ".", ".."] {
            let staging = staging_path(dir, name);
            let trash = trash_path(dir, name, 7);
            for other in ["a", ".creating-a", ".creating-%2Ecreating-a", ".", ".."] {
                assert_ne!(staging, dir.join(disk_name(other)));
                assert_ne!(trash, dir.join(disk_name(other)));
            }
        }
    }

    #[test]
    fn listing_adopts_an_older_dotted_user_entry_and_drops_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let record = |path: &Path| std::fs::read_to_string(path.join("name")).ok();
        for (disk, recorded) in [
            (".hidden", ".hidden"),         // an older store's user stream
            (".creating-x", "x"),           // staging of x
            (".creating-y", ".creating-y"), // a user stream named .creating-y
            ("plain", "plain"),
            (".other", "something"),
        ] {
            std::fs::create_dir(dir.path().join(disk)).unwrap();
            std::fs::write(dir.path().join(disk).join("name"), recorded).unwrap();
        }
        let mut listed = list_dir(dir.path(), |_| Ok(()), record).unwrap();
        listed.sort_by_key(|l| format!("{l:?}"));
        let users: Vec<_> = listed
            .iter()
            .filter_map(|l| match l {
                Listed::User(name, path) => Some((name.clone(), path.clone())),
                Listed::Leftover(_) => None,
            })
            .collect();
        assert_eq!(
            users,
            vec![
                (".creating-y".to_string(), dir.path().join("%2Ecreating-y")),
                (".hidden".to_string(), dir.path().join("%2Ehidden")),
                ("plain".to_string(), dir.path().join("plain")),
            ]
        );
        assert!(listed.contains(&Listed::Leftover(dir.path().join(".creating-x"))));
        assert!(
            dir.path().join(".other").exists(),
            "unknown entries are left alone"
        );
    }
}
