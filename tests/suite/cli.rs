//! The `shardlog` binary, run for real on directories the engine wrote and on damaged copies.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::*;
use shardlog::ShardId;
use shardlog::{PutRecord, Store, StoreOptions, StreamConfig};

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
        // A closed shard keeps only what it holds (no preallocated space).
        text(&out.stdout).contains("clean: 3 segments (16.4 KiB) in 3 shard directories checked"),
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

const T0: i64 = 1_700_000_000_000;

/// A store whose clock stands at `T0` + 1 s per record: stream "orders" with 3 shards, 900
/// records "order {i}" under keys "k{i}", then shard 0 split.
fn store_with_history(dir: &std::path::Path) -> Store {
    let clock = std::sync::Arc::new(shardlog::ManualClock::new(T0));
    let store = Store::open(
        dir,
        StoreOptions {
            retention_interval: None,
            shard: shardlog::ShardOptions {
                segment_bytes: 4096,
                clock: clock.clone(),
                ..Default::default()
            },
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let stream = store
        .create_stream("orders", StreamConfig::provisioned(3))
        .unwrap();
    for i in 0..900 {
        stream
            .put_record(&PutRecord::new(
                &format!("k{i}"),
                format!("order {i}").as_bytes(),
            ))
            .unwrap();
        clock.advance(1000);
    }
    let split_at = u128::MAX / 6;
    stream.split_shard(ShardId(0), split_at).unwrap();
    store
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn inspect_summarizes_streams_shards_segments_and_retention_while_a_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    // The writer stays open: inspect takes no lock and changes nothing.
    let _store = store_with_history(dir.path());
    let path = dir.path().to_str().unwrap();
    let before = snapshot_dir(dir.path());
    let out = shardlog(&["inspect", "--json", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(snapshot_dir(dir.path()), before, "inspect changed a file");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &v["streams"][0];
    assert_eq!(stream["name"], "orders");
    assert_eq!(stream["retention_hours"], 24);
    let shards = stream["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 5);
    assert_eq!(shards[0]["state"], "CLOSED");
    assert_eq!(shards[3]["state"], "OPEN");
    assert_eq!(shards[3]["parents"][0], "shardId-000000000000");
    assert_eq!(v["totals"]["records"], 900);
    assert_eq!(stream["totals"]["shards"], 5);
    // Shard 0's first segment starts at its first sequence number and was the first written.
    let first = &shards[0]["segments"][0];
    assert_eq!(
        first["first"],
        shardlog::SequenceNumber::new(0, shardlog::Offset::new(0)).to_string()
    );
    assert_eq!(first["state"], "SEALED");
    assert!(first["index_entries"].as_u64().unwrap() >= 1);
    let segments: u64 = shards
        .iter()
        .map(|s| s["segments"].as_array().unwrap().len() as u64)
        .sum();
    assert!(segments > 5, "4 KiB segments roll: {segments}");
    let records: u64 = shards
        .iter()
        .flat_map(|s| s["segments"].as_array().unwrap())
        .map(|s| s["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 900);
    // The records arrived in 2023 and retention keeps them 24 h: all have expired, and the
    // next retention pass deletes every segment that holds records.
    let retention = &stream["retention"];
    let with_records = shards
        .iter()
        .flat_map(|s| s["segments"].as_array().unwrap())
        .filter(|s| s["records"].as_u64() > Some(0))
        .count();
    assert_eq!(
        retention["expired_segments"].as_u64(),
        Some(with_records as u64)
    );
    assert_eq!(retention["expired_records"], 900);
    assert!(retention["next"].is_null());

    let out = shardlog(&["inspect", path]);
    let human = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        human.contains("stream orders  PROVISIONED, retention 24 h"),
        "{human}"
    );
    assert!(human.contains("shardId-000000000000  CLOSED"), "{human}");
    assert!(human.contains("parents shardId-000000000000"), "{human}");
    assert!(
        human.contains("have expired; the next pass deletes them"),
        "{human}"
    );
    assert!(human.contains("totals: 5 shards"), "{human}");

    // A single segment file: inspect, verify.
    let seg = dir
        .path()
        .join("streams/orders/shards/shardId-000000000001/00000000000000000000.seg");
    let out = shardlog(&["inspect", "--json", seg.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shards"][0]["segments"].as_array().unwrap().len(), 1);
    assert_eq!(v["shards"][0]["shard_id"], "shardId-000000000001");
    let out = shardlog(&["verify", seg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("clean: 1 segments"),
        "{}",
        text(&out.stdout)
    );
    let out = shardlog(&["repair", seg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("repair works on whole shards"));

    // Records that arrived just now are deleted 24 h after the newest of their segment.
    let fresh = tempfile::tempdir().unwrap();
    store_with_records(fresh.path());
    let v: serde_json::Value = serde_json::from_slice(
        &shardlog(&["inspect", "--json", fresh.path().to_str().unwrap()]).stdout,
    )
    .unwrap();
    let retention = &v["streams"][0]["retention"];
    assert_eq!(retention["expired_segments"], 0);
    // The segment to go first is the one whose newest record is oldest.
    let newest = v["streams"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["segments"][0]["last_arrival"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .min()
        .unwrap();
    let at = retention["next"]["at"].as_str().unwrap();
    // 24 h later: the same time of day, the next day.
    assert_eq!(&at[11..], &newest[11..], "{at} vs {newest}");
    assert_ne!(&at[..10], &newest[..10]);
}

#[test]
fn dump_starts_at_a_sequence_number_or_a_time_and_prints_whole_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let _store = store_with_history(dir.path());
    let stream = dir.path().join("streams/orders");
    let stream = stream.to_str().unwrap();

    // Everything, as JSON lines, while the writer is open.
    let all = json_lines(&shardlog(&["dump", "--json", stream]));
    assert_eq!(all.len(), 900);
    let mut keys: Vec<&str> = all
        .iter()
        .map(|r| r["partition_key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 900);
    let r = all
        .iter()
        .find(|r| r["partition_key"] == "k42")
        .expect("k42 dumped");
    assert_eq!(r["arrival_ms"], T0 + 42_000);
    assert_eq!(r["stream"], "orders");
    assert_eq!(r["arrival"], "2023-11-14T22:14:02.000Z");
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap(),
        b"order 42"
    );

    // From a sequence number: that shard only, from that record on.
    let seq = r["sequence_number"].as_str().unwrap();
    let shard = r["shard_id"].as_str().unwrap();
    let from = json_lines(&shardlog(&["dump", "--json", "--from", seq, stream]));
    assert_eq!(from[0]["partition_key"], "k42");
    assert!(from.iter().all(|x| x["shard_id"] == shard));
    let in_shard = all.iter().filter(|x| x["shard_id"] == shard).count();
    let before = all
        .iter()
        .filter(|x| x["shard_id"] == shard && x["arrival_ms"].as_i64() < Some(T0 + 42_000))
        .count();
    assert_eq!(from.len(), in_shard - before);

    // From a time: the first record of each shard at or after it.
    let at = json_lines(&shardlog(&[
        "dump",
        "--json",
        "--at-time",
        "2023-11-14T22:27:00Z", // T0 + 820 s
        stream,
    ]));
    assert_eq!(at.len(), 80);
    assert!(at
        .iter()
        .all(|x| x["arrival_ms"].as_i64() >= Some(T0 + 820_000)));
    let ms = (T0 + 820_000).to_string();
    assert_eq!(
        json_lines(&shardlog(&["dump", "--json", "--at-time", &ms, stream])).len(),
        80
    );

    // Whole payloads in each encoding, from the text format.
    let line = |encoding: &str| {
        let out = shardlog(&[
            "dump", "--from", seq, "--limit", "1", "--data", encoding, stream,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = out.stdout;
        let fields: Vec<Vec<u8>> = stdout
            .strip_suffix(b"\n")
            .unwrap()
            .split(|&b| b == b'\t')
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(fields.len(), 6);
        assert_eq!(fields[0], seq.as_bytes());
        assert_eq!(fields[2], b"k42");
        assert_eq!(fields[4], b"8");
        fields[5].clone()
    };
    assert_eq!(line("raw"), b"order 42");
    assert_eq!(line("hex"), b"6f72646572203432");
    assert_eq!(line("base64"), b"b3JkZXIgNDI=");
}

#[test]
fn dump_of_a_segment_file_prints_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_history(dir.path()));
    let shard = dir
        .path()
        .join("streams/orders/shards/shardId-000000000001");
    let segs = segment_files(&shard);
    assert!(segs.len() >= 3);
    let out = shardlog(&["dump", "--json", segs[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["offset"].as_u64(), Some(base_of(&segs[1])));
    assert_eq!(
        lines.last().unwrap()["offset"].as_u64(),
        Some(base_of(&segs[2]) - 1)
    );
}

#[test]
fn verify_checks_each_manifest_against_its_shard_directories() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_history(dir.path()));
    let path = dir.path().to_str().unwrap();
    assert!(shardlog(&["verify", path]).status.success());
    let stray = dir
        .path()
        .join("streams/orders/shards/shardId-000000000077");
    std::fs::create_dir(&stray).unwrap();
    let out = shardlog(&["verify", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!("{}: not a shard of the manifest", stray.display())),
        "{}",
        text(&out.stdout)
    );
    std::fs::remove_dir(&stray).unwrap();

    // Shard 0 was closed at its end; a record appended behind the manifest's back shows.
    let shard0 = dir
        .path()
        .join("streams/orders/shards/shardId-000000000000");
    let shard = shardlog::Shard::open(&shard0, shardlog::ShardOptions::default()).unwrap();
    shard
        .append(&[shardlog::NewRecord {
            partition_key: b"late",
            explicit_hash_key: None,
            data: b"after the close",
        }])
        .unwrap();
    drop(shard);
    std::fs::remove_file(shard0.join("LOCK")).unwrap();
    let out = shardlog(&["verify", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("was closed at offset"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_arguments_are_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_history(dir.path()));
    let stream = dir.path().join("streams/orders");
    let not_segment = dir.path().join("streams/orders/stream.json");
    for (args, message) in [
        (
            vec!["inspect", not_segment.to_str().unwrap()],
            "not a segment file",
        ),
        (
            vec!["dump", "--from", "12", stream.to_str().unwrap()],
            "expected a 39-digit sequence number",
        ),
        (
            vec!["dump", "--at-time", "noon", stream.to_str().unwrap()],
            "expected RFC 3339",
        ),
        (
            vec!["dump", "--json", "--data", "raw", stream.to_str().unwrap()],
            "cannot be combined",
        ),
        (
            vec!["inspect", dir.path().join("streams/nope").to_str().unwrap()],
            "No such file",
        ),
    ] {
        let out = shardlog(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
