//! Unit tests of the manifest and its topology log.

use super::*;

fn sample() -> StreamManifest {
    StreamManifest {
        format_version: MANIFEST_VERSION,
        name: "orders".into(),
        created_ms: 5,
        mode: StreamMode::Provisioned,
        retention_hours: 24,
        max_record_bytes: 1 << 20,
        throughput_limits: None,
        tiering: None,
        tags: BTreeMap::from([("team".into(), "data".into())]),
        settings: BTreeMap::new(),
        consumers: Vec::new(),
        next_shard_index: 2,
        shards: vec![
            ShardEntry {
                index: 0,
                hash_range: HashKeyRange::ALL,
                parent: None,
                adjacent_parent: None,
                created_ms: 5,
                closed: Some(Closed {
                    end_offset: 9,
                    closed_ms: 7,
                }),
            },
            ShardEntry {
                index: 1,
                hash_range: HashKeyRange::ALL,
                parent: Some(0),
                adjacent_parent: None,
                created_ms: 7,
                closed: None,
            },
        ],
        topology_changes: 0,
    }
}

/// `sample` with shard 1 split in two at `mid` (shard 1 closed at `end`).
fn split(m: &StreamManifest, mid: u128, end: u64) -> StreamManifest {
    let mut next = m.clone();
    next.shards[1].closed = Some(Closed {
        end_offset: end,
        closed_ms: 9,
    });
    for (index, range) in [
        (
            next.next_shard_index,
            HashKeyRange {
                start: 0,
                end: mid - 1,
            },
        ),
        (
            next.next_shard_index + 1,
            HashKeyRange {
                start: mid,
                end: u128::MAX,
            },
        ),
    ] {
        next.shards.push(ShardEntry {
            index,
            hash_range: range,
            parent: Some(1),
            adjacent_parent: None,
            created_ms: 9,
            closed: None,
        });
    }
    next.next_shard_index += 2;
    next
}

#[test]
fn shard_changes_go_to_the_log_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    m.write(dir.path()).unwrap();
    let snapshot = std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
    let mut next = split(&m, 1 << 100, 40);
    next.persist_change(dir.path(), &m).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap(),
        snapshot,
        "a split appends; it does not rewrite"
    );
    assert!(dir.path().join(TOPOLOGY_LOG_FILE).exists());
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), next);
    // Retention forgetting shard 0 is a removal record.
    let mut pruned = next.clone();
    pruned.shards.remove(0);
    pruned.persist_change(dir.path(), &next).unwrap();
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), pruned);
    // Anything else rewrites the manifest and removes the log.
    let mut tagged = pruned.clone();
    tagged.tags.insert("k".into(), "v".into());
    tagged.persist_change(dir.path(), &pruned).unwrap();
    assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), tagged);
}

#[test]
fn a_torn_last_record_is_ignored_and_earlier_damage_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    m.write(dir.path()).unwrap();
    let mut a = split(&m, 1 << 100, 40);
    a.persist_change(dir.path(), &m).unwrap();
    let mut b = split(&a, 1 << 50, 7);
    b.persist_change(dir.path(), &a).unwrap();
    let log = dir.path().join(TOPOLOGY_LOG_FILE);
    let bytes = std::fs::read(&log).unwrap();
    let first_line = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
    // Every cut inside the second record: the first change stands.
    for cut in first_line..bytes.len() {
        std::fs::write(&log, &bytes[..cut]).unwrap();
        assert_eq!(StreamManifest::read(dir.path()).unwrap(), a, "cut at {cut}");
    }
    // A flipped byte in the first record, with a good one after it: damage.
    let mut damaged = bytes.clone();
    damaged[20] ^= 1;
    std::fs::write(&log, &damaged).unwrap();
    assert!(matches!(
        StreamManifest::read(dir.path()),
        Err(Error::Corrupt { .. })
    ));
}

/// Found by the `store` fuzz target: after an append that failed partway (or a crash that
/// tore the last record), the next record was written after the torn bytes, read as part of
/// one torn last record, and dropped although acknowledged.
#[test]
fn a_record_appended_after_a_torn_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    m.write(dir.path()).unwrap();
    let mut a = split(&m, 1 << 100, 40);
    a.persist_change(dir.path(), &m).unwrap();
    let log = dir.path().join(TOPOLOGY_LOG_FILE);
    let good = std::fs::read(&log).unwrap();
    let mut b = a.clone();
    b.shards[2].created_ms = 11;
    for torn in [
        &b"0badc0de {\"seq\": 2, \"next_sh"[..],
        b"garbage with a newline\n",
        b"\n",
    ] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(torn);
        std::fs::write(&log, &bytes).unwrap();
        let mut next = b.clone();
        next.persist_change(dir.path(), &a).unwrap();
        assert_eq!(
            StreamManifest::read(dir.path()).unwrap(),
            next,
            "after {torn:?}"
        );
    }
}

#[test]
fn a_change_that_changes_nothing_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    m.write(dir.path()).unwrap();
    let mut same = m.clone();
    same.persist_change(dir.path(), &m).unwrap();
    assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
}

#[test]
fn the_log_is_folded_into_the_manifest_once_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample();
    m.write(dir.path()).unwrap();
    let mut folded = false;
    for i in 0..2_000u64 {
        let mut next = m.clone();
        next.shards[1].created_ms = i as i64; // any change of a shard entry
        next.persist_change(dir.path(), &m).unwrap();
        m = next;
        let log = std::fs::metadata(dir.path().join(TOPOLOGY_LOG_FILE)).map_or(0, |f| f.len());
        assert!(log <= LOG_FOLD_MIN_BYTES + 1024, "{log} bytes of log");
        folded |= log == 0;
    }
    assert!(folded, "the log was folded at least once");
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), m);
}

#[test]
fn a_version_1_manifest_is_read_and_rewritten_before_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let m = StreamManifest {
        format_version: 1,
        ..sample()
    };
    m.write(dir.path()).unwrap();
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), m);
    let mut next = StreamManifest {
        format_version: MANIFEST_VERSION,
        ..split(&m, 1 << 100, 40)
    };
    next.persist_change(dir.path(), &m).unwrap();
    assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
    assert_eq!(
        StreamManifest::read(dir.path()).unwrap().format_version,
        MANIFEST_VERSION
    );
}

#[test]
fn a_version_2_log_is_replayed_then_folded_by_the_first_change() {
    let dir = tempfile::tempdir().unwrap();
    let m = StreamManifest {
        format_version: 2,
        ..sample()
    };
    m.write(dir.path()).unwrap();
    let a = split(&m, 1 << 100, 40);
    let change = m.change_to(&a).unwrap();
    assert_eq!(change.seq, None);
    append_log(&dir.path().join(TOPOLOGY_LOG_FILE), &change).unwrap();
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), a);
    let mut b = StreamManifest {
        format_version: MANIFEST_VERSION,
        ..a.clone()
    };
    b.shards[2].created_ms = 11;
    b.persist_change(dir.path(), &a).unwrap();
    assert!(!dir.path().join(TOPOLOGY_LOG_FILE).exists());
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), b);
}

/// Found by the `store` fuzz target: a crash after a fold wrote the manifest but before it
/// removed the log left records that, replayed over the newer manifest, set an older
/// `next_shard_index` and reopened closed shards.
#[test]
fn a_log_a_fold_left_behind_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    m.write(dir.path()).unwrap();
    let mut a = split(&m, 1 << 100, 40);
    a.persist_change(dir.path(), &m).unwrap();
    let log = dir.path().join(TOPOLOGY_LOG_FILE);
    let stale = std::fs::read(&log).unwrap();
    // A change that is not only shards rewrites the manifest (and removes the log)...
    let mut b = a.clone();
    b.shards[2].closed = Some(Closed {
        end_offset: 5,
        closed_ms: 12,
    });
    b.shards[3].hash_range.start = b.shards[2].hash_range.start;
    b.tags.insert("k".into(), "v".into());
    b.persist_change(dir.path(), &a).unwrap();
    assert!(!log.exists());
    // ... which a crash kept from happening.
    std::fs::write(&log, &stale).unwrap();
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), b);
    // Later records are numbered past it, and apply.
    let mut c = b.clone();
    c.shards[3].created_ms = 13;
    c.persist_change(dir.path(), &b).unwrap();
    assert_eq!(c.topology_changes, 2);
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), c);
}

#[test]
fn round_trips_and_keeps_128_bit_keys_exact() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample();
    m.write(dir.path()).unwrap();
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), m);
    let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
    assert!(
        text.contains("\"340282366920938463463374607431768211455\""),
        "{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn a_topology_the_code_cannot_route_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut gap = sample();
    gap.shards[1].hash_range.start = 1;
    let mut none_open = sample();
    none_open.shards[1].closed = Some(Closed {
        end_offset: 0,
        closed_ms: 0,
    });
    let mut overlap = sample();
    overlap.shards[0].closed = None;
    let mut index_too_high = sample();
    index_too_high.next_shard_index = 1;
    for bad in [gap, none_open, overlap, index_too_high] {
        bad.write(dir.path()).unwrap();
        assert!(
            matches!(StreamManifest::read(dir.path()), Err(Error::Corrupt { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn damage_and_other_versions_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), b"{\"format_version\": 1, ").unwrap();
    assert!(matches!(
        StreamManifest::read(dir.path()),
        Err(Error::Corrupt { .. })
    ));
    let mut m = sample();
    m.format_version = MANIFEST_VERSION + 1;
    m.write(dir.path()).unwrap();
    assert!(matches!(
        StreamManifest::read(dir.path()),
        Err(Error::UnsupportedVersion { found, .. }) if found == MANIFEST_VERSION + 1
    ));
}
