//! A full disk: appends fail with `Error::DiskFull`, nothing of a failed append becomes visible or
//! survives a reopen, everything acknowledged before stays, and appends resume once there is room.
//!
//! The test mounts a 2 MiB tmpfs, so it needs root. Without the privilege it says so and skips,
//! unless `SHARDLOG_REQUIRE_MOUNT_TESTS=1` (set by CI) makes that a failure.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;
use shardlog::{Error, NewRecord, Offset, Shard, ShardOptions};

struct Tmpfs<'a>(&'a Path);

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn mount_tmpfs<'a>(at: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(Tmpfs(at));
    }
    let required = std::env::var("SHARDLOG_REQUIRE_MOUNT_TESTS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "cannot mount a tmpfs, and SHARDLOG_REQUIRE_MOUNT_TESTS=1"
    );
    eprintln!("SKIPPED: mounting a tmpfs needs root");
    None
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_loses_nothing_acknowledged() {
    let mount_point = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = mount_tmpfs(mount_point.path(), "2m") else {
        return;
    };
    // A filler file to delete later, making room again.
    let filler = mount_point.path().join("filler");
    std::fs::write(&filler, vec![1u8; 512 * 1024]).unwrap();
    let dir = mount_point.path().join("shard");
    let options = ShardOptions {
        segment_bytes: 256 * 1024,
        ..ShardOptions::default()
    };
    let shard = Shard::open(&dir, options.clone()).unwrap();

    let mut acknowledged = 0u64;
    let error = loop {
        let keys: Vec<Vec<u8>> = (acknowledged..acknowledged + 4).map(key).collect();
        let datas: Vec<Vec<u8>> = (acknowledged..acknowledged + 4)
            .map(|o| payload(o, 6000))
            .collect();
        let records: Vec<NewRecord<'_>> = (0..4)
            .map(|i| NewRecord {
                partition_key: &keys[i],
                explicit_hash_key: None,
                data: &datas[i],
            })
            .collect();
        match shard.append(&records) {
            Ok(a) => acknowledged = a.last.get() + 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 100_000, "the disk never filled up");
    };
    match &error {
        Error::DiskFull { path, .. } => assert!(
            path.starts_with(&dir),
            "the error names a file of the shard: {}",
            path.display()
        ),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(acknowledged > 0);
    assert_eq!(shard.next_offset(), Offset::new(acknowledged));
    check_records(&read_all(&shard, 0), 0, acknowledged, 6000);
    // Still full: another append fails the same way and changes nothing.
    assert!(matches!(
        shard.append(&[NewRecord {
            partition_key: b"k",
            explicit_hash_key: None,
            data: &[0u8; 100_000],
        }]),
        Err(Error::DiskFull { .. })
    ));
    assert_eq!(shard.next_offset(), Offset::new(acknowledged));

    // Room again: appends resume right after the acknowledged records.
    std::fs::remove_file(&filler).unwrap();
    append_range(&shard, acknowledged, acknowledged + 8, 4, 6000);
    drop(shard);
    let shard = Shard::open(&dir, options).unwrap();
    check_records(&read_all(&shard, 0), 0, acknowledged + 8, 6000);
}
