//! The `shardlog` binary, run for real on directories the engine wrote and on damaged copies.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::*;
use shardlog::{PutRecord, Store, StoreOptions, StreamConfig};

fn shardlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .output()
        .expect("run shardlog")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn store_with_records(dir: &std::path::Path) {
    let store = Store::open(
        dir,
        StoreOptions {
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(3))
        .unwrap();
    for i in 0..300 {
        stream
            .put_record(&PutRecord::new(
                &format!("k{i}"),
                format!("order {i}").as_bytes(),
            ))
            .unwrap();
    }
}

#[test]
fn verify_is_clean_on_what_the_engine_wrote_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    store_with_records(dir.path());
    let before = snapshot_dir(dir.path());
    let out = shardlog(&["verify", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(snapshot_dir(dir.path()), before, "verify changed a file");
    assert!(
        text(&out.stdout).contains("clean: 3 segments (192.0 KiB) in 3 shard directories checked"),
        "{}",
        text(&out.stdout)
    );
    // A shard directory and a stream directory are accepted too.
    let stream = dir.path().join("streams/orders");
    assert!(shardlog(&["verify", stream.to_str().unwrap()])
        .status
        .success());
    let shard = stream.join("shards/shardId-000000000000");
    assert!(shardlog(&["verify", shard.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn verify_reports_damage_with_file_and_position_and_exits_1() {
    let (dir, _clock) = written(1, 16 * 1024, 1000, 10, 200);
    let segs = segment_files(dir.path());
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[5000] ^= 0x20;
    std::fs::write(&segs[1], &bytes).unwrap();
    std::fs::remove_file(&segs[3]).unwrap();
    let out = shardlog(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let flip = format!("{} at byte ", segs[1].display());
    assert!(stdout.contains(&flip), "{stdout}");
    assert!(
        stdout.contains("next segment starts at"),
        "the deleted segment: {stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().contains("problems"),
        "{stdout}"
    );
}

#[test]
fn verify_reports_a_damaged_manifest() {
    let dir = tempfile::tempdir().unwrap();
    store_with_records(dir.path());
    std::fs::write(dir.path().join("streams/orders/stream.json"), b"{ nope").unwrap();
    let out = shardlog(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("stream.json"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn dump_prints_records_from_an_offset() {
    let (dir, _clock) = written(1_700_000_000_000, 16 * 1024, 500, 10, 50);
    let path = dir.path().to_str().unwrap();
    let out = shardlog(&["dump", path, "--from", "100", "--limit", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields[0], "100");
    assert_eq!(fields[1], "2023-11-14T22:13:20.000Z");
    assert_eq!(fields[2], String::from_utf8(key(100)).unwrap());
    assert_eq!(fields[4], payload(100, 50).len().to_string());
}

#[test]
fn dump_into_a_closed_pipe_exits_quietly() {
    let (dir, _clock) = written(1, 1 << 20, 20_000, 500, 50);
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["dump", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("0\t"));
    // The reader is gone now, like `shardlog dump ... | head -1`.
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_path_that_is_not_shardlog_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let out = shardlog(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("not a shardlog"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
    let missing = dir.path().join("missing");
    let out = shardlog(&["dump", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
