//! Crashes in the middle of creating and deleting streams: a child process creates stream after
//! stream (putting a record in each) and deletes the one before, reporting each step; the parent
//! SIGKILLs it at random moments and checks that the store reopens with every acknowledged stream
//! whole, every acknowledged deletion gone, no half-made stream, and no leftover staging directory.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{crash_rng, spawn_acking_child};
use rand::Rng;
use shardlog::{PutRecord, Start, Store, StreamConfig};

const DIR_ENV: &str = "SHARDLOG_STORE_CRASH_DIR";

/// The child: for i = 0, 1, 2, …: create `s{i}` and put a record (then `ack 2i+1`), delete
/// `s{i-1}` (then `ack 2i+2`).
#[test]
#[ignore = "run by the crash test as its child process"]
fn child_creator() {
    let dir = std::env::var(DIR_ENV).expect("the parent sets the directory");
    let store = Store::open(&dir, common::durable_store_options()).expect("child open");
    let mut out = std::io::stdout();
    for i in 0u64.. {
        let stream = store
            .create_stream(&format!("s{i}"), StreamConfig::provisioned(2))
            .unwrap();
        stream
            .put_record(&PutRecord::new("k", &i.to_le_bytes()))
            .unwrap();
        writeln!(out, "ack {}", 2 * i + 1).unwrap();
        out.flush().unwrap();
        if i > 0 {
            store.delete_stream(&format!("s{}", i - 1)).unwrap();
        }
        writeln!(out, "ack {}", 2 * i + 2).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_create_and_delete_leaves_whole_streams_or_none() {
    let mut rng = crash_rng("store crash test");
    let mut steps_seen = 0;
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let envs = [(DIR_ENV, dir.path().display().to_string())];
        let (mut child, reader) = spawn_acking_child("child_creator", &envs);
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..80)));
        child.kill().unwrap();
        child.wait().unwrap();
        let Some(acked) = reader.join().unwrap() else {
            continue; // killed before the first step finished
        };
        steps_seen += acked;
        let store = Store::open(dir.path(), common::durable_store_options())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("streams"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: staging left behind: {leftovers:?}"
        );

        // The last acknowledged step: `ack 2i+1` created s{i}; `ack 2i+2` also deleted s{i-1}.
        let i = (acked - 1) / 2;
        let created = format!("s{i}");
        let listed = store.list_streams();
        assert!(
            listed.contains(&created),
            "round {round}: {created} acknowledged but missing: {listed:?}"
        );
        if acked % 2 == 0 && i > 0 {
            assert!(
                !listed.contains(&format!("s{}", i - 1)),
                "round {round}: a deleted stream came back"
            );
        }
        for name in &listed {
            let n: u64 = name[1..].parse().unwrap();
            assert!(
                n + 1 >= i && n <= i + 1,
                "round {round}: unexpected stream {name} (last step {acked})"
            );
            let stream = store.stream(name).unwrap();
            assert_eq!(
                stream.describe().open_shard_count,
                2,
                "round {round}: {name} is not whole"
            );
            // Every stream whose creation was acknowledged holds its record.
            if n <= i {
                let mut found = 0;
                for shard in stream.describe().shards {
                    let it = stream
                        .shard_iterator(shard.shard_id, Start::TrimHorizon)
                        .unwrap();
                    found += store.get_records(&it, 10).unwrap().records.len();
                }
                assert_eq!(found, 1, "round {round}: {name} lost its record");
            }
        }
    }
    assert!(steps_seen > 0, "the child never finished a step");
}
